//! The control-plane lab the harness starts by itself: `popmesh-ctrld` (bootstrapped with an
//! operator), the operator's gRPC client (mutual TLS), SVIDs issued by the daemon, and a
//! `popmesh-dataplane` with `[control]` and signaling listeners whose mesh (services, routes,
//! policies) the operator programs and the appliance acknowledges.
//!
//! Every process is a [`ChildGuard`] spawned through the [`RunContext`], so it logs to
//! `<out>/logs/<name>.log` and dies with the run. The gRPC calls run on a private
//! single-threaded tokio runtime; every call and every wait is bounded.
//!
//! ```text
//! let ctrld = Ctrld::start(ctx, &dir, "pop.test", Some(load_core))?;
//! let svc = ctrld.issue_svid(SvidKind::Service, "rooms", "rooms", &dir)?;
//! let appliance = ctrld.start_appliance(ctx, &ApplianceSpec::new(media, lane)?, &dir)?;
//! let v = ctrld.put_service(service)?; ...; ctrld.until_acked(APPLIANCE, v, 30 s)?;
//! ```
//! (the control-plane driver, [`crate::controlplane`], is the worked example).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use popmesh_ctrl_api::pb::{
    self, appliance_service_client::ApplianceServiceClient,
    identity_service_client::IdentityServiceClient, mesh_service_client::MeshServiceClient,
    policy_service_client::PolicyServiceClient,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::dataplane::{http_get, metric_sum};
use crate::run::{ChildGuard, RunContext};

/// Name of the appliance the lab starts (its SPIFFE ID is `.../ns/appliances/sa/pop-1`).
pub const APPLIANCE: &str = "pop-1";
/// Operator the daemon is bootstrapped with.
pub const OPERATOR: &str = "alice";
/// Longest a gRPC call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A free loopback TCP port (the kernel's pick, released for the child to bind a moment later).
///
/// # Errors
/// When no port can be had.
pub fn free_tcp() -> anyhow::Result<SocketAddr> {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("find a free loopback TCP port")
}

/// A free loopback UDP port.
///
/// # Errors
/// When no port can be had.
pub fn free_udp() -> anyhow::Result<SocketAddr> {
    UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .context("find a free loopback UDP port")
}

/// Raises this process's RLIMIT_NOFILE soft limit to at least `want` when it can (the hard
/// limit too as root, up to `fs.nr_open`); children inherit it. Returns the soft limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let target = want.min(nr_open.max(hard));
    if target > hard && setrlimit(Resource::RLIMIT_NOFILE, target, target).is_ok() {
        return target;
    }
    let to = want.min(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, to, hard).is_ok() {
        to
    } else {
        soft
    }
}

/// Which kind of SVID to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvidKind {
    /// A service or user workload: `spiffe://<td>/ns/<namespace>/sa/<name>`.
    Service,
    /// An appliance: `spiffe://<td>/ns/appliances/sa/<name>`.
    Appliance,
}

/// An SVID written to PEM files.
#[derive(Debug, Clone)]
pub struct Svid {
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// Certificate followed by its issuer chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// The trust bundle (the daemon's root).
    pub ca: PathBuf,
}

/// A running `popmesh-ctrld` and the operator's client to it.
#[derive(Debug)]
pub struct Ctrld {
    /// The daemon.
    pub child: ChildGuard,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its Prometheus address.
    pub metrics: SocketAddr,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// The trust domain it was bootstrapped with.
    pub trust_domain: String,
    /// The trust bundle, PEM.
    pub ca_pem: String,
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

impl Ctrld {
    /// Bootstraps a state directory under `dir` (`bootstrap --trust-domain .. --operator alice`),
    /// starts `serve` on free loopback ports (pinned to `cpu`), waits for its `listening` line
    /// and connects as the operator.
    ///
    /// # Errors
    /// When the binary is missing, bootstrap fails, the daemon does not listen within 30 s or
    /// refuses the operator.
    pub fn start(
        ctx: &RunContext,
        dir: &Path,
        trust_domain: &str,
        cpu: Option<usize>,
    ) -> anyhow::Result<Self> {
        let bin = ctx.binary("popmesh-ctrld")?;
        let state_dir = dir.join("ctrld");
        if state_dir.exists() {
            std::fs::remove_dir_all(&state_dir)
                .with_context(|| format!("remove old {}", state_dir.display()))?;
        }
        let out = Command::new(&bin)
            .args([
                "bootstrap",
                "--trust-domain",
                trust_domain,
                "--operator",
                OPERATOR,
            ])
            .arg("--state-dir")
            .arg(&state_dir)
            .output()
            .with_context(|| format!("run {} bootstrap", bin.display()))?;
        if !out.status.success() {
            bail!(
                "popmesh-ctrld bootstrap failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let read = |p: &str| {
            let path = state_dir.join(p);
            std::fs::read_to_string(&path)
                .with_context(|| format!("read {} (written by bootstrap)", path.display()))
        };
        let ca_pem = read("operator/ca.pem")?;
        let op_cert = read(&format!("operator/{OPERATOR}.pem"))?;
        let op_key = read(&format!("operator/{OPERATOR}-key.pem"))?;
        let (grpc, metrics) = (free_tcp()?, free_tcp()?);
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .args(["--listen", &grpc.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .arg("--state-dir")
            .arg(&state_dir)
            .env("RUST_LOG", "warn");
        let mut child = ctx.spawn("ctrld", cmd, cpu)?;
        let log = ctx.out_dir().join("logs").join("ctrld.log");
        wait_for_line(
            ctx,
            &mut child,
            &log,
            "listening grpc=",
            Duration::from_secs(30),
        )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the gRPC client's runtime")?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .identity(Identity::from_pem(&op_cert, &op_key))
            .domain_name("localhost");
        let endpoint = Channel::from_shared(format!("https://127.0.0.1:{}", grpc.port()))
            .context("popmesh-ctrld's gRPC URI")?
            .tls_config(tls)
            .context("the operator's TLS config")?
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(10));
        let channel = rt.block_on(endpoint.connect()).with_context(|| {
            format!("connect to popmesh-ctrld at {grpc} as operator {OPERATOR}")
        })?;
        Ok(Self {
            child,
            grpc,
            metrics,
            state_dir,
            trust_domain: trust_domain.to_string(),
            ca_pem,
            rt,
            channel,
        })
    }

    /// Issues an SVID (the daemon generates the key) and writes `<name>.pem`, `<name>-key.pem`
    /// and `ca.pem` into `out`.
    ///
    /// # Errors
    /// When the daemon refuses or the files cannot be written.
    pub fn issue_svid(
        &self,
        kind: SvidKind,
        namespace: &str,
        name: &str,
        out: &Path,
    ) -> anyhow::Result<Svid> {
        let kind_pb = match kind {
            SvidKind::Service => pb::IdentityKind::Service,
            SvidKind::Appliance => pb::IdentityKind::Appliance,
        };
        let reply = self
            .rt
            .block_on(IdentityServiceClient::new(self.channel.clone()).issue_svid(
                pb::IssueSvidRequest {
                    kind: kind_pb as i32,
                    namespace: if kind == SvidKind::Service {
                        namespace.to_string()
                    } else {
                        String::new()
                    },
                    name: name.to_string(),
                    ttl_seconds: 24 * 3600,
                    csr_pem: String::new(),
                },
            ))
            .map_err(|s| anyhow!("IssueSvid {namespace}/{name}: {s}"))?
            .into_inner();
        std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
        let svid = Svid {
            spiffe_id: reply.spiffe_id,
            cert: out.join(format!("{name}.pem")),
            key: out.join(format!("{name}-key.pem")),
            ca: out.join("ca.pem"),
        };
        for (path, text) in [
            (&svid.cert, reply.cert_pem + &reply.chain_pem),
            (&svid.key, reply.key_pem),
            (&svid.ca, self.ca_pem.clone()),
        ] {
            std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(svid)
    }

    /// `MeshService.PutService`; returns the new config version.
    ///
    /// # Errors
    /// When the daemon refuses it (the status names the field).
    pub fn put_service(&self, service: pb::Service) -> anyhow::Result<u64> {
        let name = service.name.clone();
        Ok(self
            .rt
            .block_on(MeshServiceClient::new(self.channel.clone()).put_service(
                pb::PutServiceRequest {
                    service: Some(service),
                },
            ))
            .map_err(|s| anyhow!("PutService {name}: {s}"))?
            .into_inner()
            .version)
    }

    /// `MeshService.PutRoute`; returns the new config version.
    ///
    /// # Errors
    /// When the daemon refuses it.
    pub fn put_route(&self, route: pb::Route) -> anyhow::Result<u64> {
        let name = route.name.clone();
        Ok(self
            .rt
            .block_on(
                MeshServiceClient::new(self.channel.clone())
                    .put_route(pb::PutRouteRequest { route: Some(route) }),
            )
            .map_err(|s| anyhow!("PutRoute {name}: {s}"))?
            .into_inner()
            .version)
    }

    /// `PolicyService.PutPolicy`; returns the new config version.
    ///
    /// # Errors
    /// When the daemon refuses it.
    pub fn put_policy(&self, policy: pb::Policy) -> anyhow::Result<u64> {
        let name = policy.name.clone();
        Ok(self
            .rt
            .block_on(PolicyServiceClient::new(self.channel.clone()).put_policy(
                pb::PutPolicyRequest {
                    policy: Some(policy),
                },
            ))
            .map_err(|s| anyhow!("PutPolicy {name}: {s}"))?
            .into_inner()
            .version)
    }

    /// The daemon's view of an appliance.
    ///
    /// # Errors
    /// When the call fails (an unknown appliance is NOT_FOUND).
    pub fn appliance_status(&self, appliance: &str) -> anyhow::Result<pb::ApplianceStatus> {
        Ok(self
            .rt
            .block_on(
                ApplianceServiceClient::new(self.channel.clone()).get_appliance_status(
                    pb::GetApplianceStatusRequest {
                        name: appliance.to_string(),
                        resources: false,
                    },
                ),
            )
            .map_err(|s| anyhow!("GetApplianceStatus {appliance}: {s}"))?
            .into_inner())
    }

    /// Polls until `appliance` acknowledged `version` (or a later one); returns how long that
    /// took.
    ///
    /// # Errors
    /// When it does not within `within` (naming the last status and any NACK), or on Ctrl-C.
    pub fn until_acked(
        &self,
        ctx: &RunContext,
        appliance: &str,
        version: u64,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let status = self.appliance_status(appliance);
            if let Ok(s) = &status {
                if s.acked_version >= version {
                    return Ok(started.elapsed());
                }
            }
            if ctx.interrupted() {
                bail!("interrupted while waiting for {appliance} to acknowledge version {version}");
            }
            if started.elapsed() > within {
                bail!(
                    "{appliance} did not acknowledge config version {version} within {:.0} s; last status: {status:?}; see {}/logs/",
                    within.as_secs_f64(),
                    ctx.out_dir().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Issues the appliance SVID, writes the appliance config (`<dir>/dataplane.toml`), starts
    /// `popmesh-dataplane` (its non-lane threads on `spec.media_core`) and waits until its agent
    /// is connected to the daemon.
    ///
    /// # Errors
    /// When the SVID cannot be issued, the appliance exits or is not connected within 60 s.
    pub fn start_appliance(
        &self,
        ctx: &RunContext,
        spec: &ApplianceSpec,
        dir: &Path,
    ) -> anyhow::Result<SignalingAppliance> {
        let ids = dir.join("appliance");
        let svid = self.issue_svid(SvidKind::Appliance, "", APPLIANCE, &ids)?;
        let config = appliance_config(spec, self.grpc, &svid, &ids.join("agent-state"));
        let path = dir.join("dataplane.toml");
        std::fs::write(&path, &config).with_context(|| format!("write {}", path.display()))?;
        let mut cmd = Command::new(ctx.binary("popmesh-dataplane")?);
        cmd.arg("--config").arg(&path);
        let started = Instant::now();
        // The lane pins its own thread to spec.signaling_core; everything else stays here.
        let mut child = ctx.spawn("dataplane", cmd, Some(spec.media_core))?;
        loop {
            if let Some(status) = child.try_wait() {
                bail!(
                    "popmesh-dataplane exited during start-up ({status}); see {}/logs/dataplane.log and {}",
                    ctx.out_dir().display(),
                    path.display()
                );
            }
            if let Ok(text) = http_get(spec.admin, "/metrics") {
                if metric_sum(&text, "popmesh_agent_connected") >= 1.0 {
                    break;
                }
            }
            if ctx.interrupted() {
                bail!("interrupted while popmesh-dataplane started");
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "popmesh-dataplane's agent did not connect to popmesh-ctrld within 60 s; see {}/logs/dataplane.log",
                    ctx.out_dir().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(SignalingAppliance {
            child,
            admin: spec.admin,
            inbound: spec.inbound,
            config_toml: config,
            startup_s: started.elapsed().as_secs_f64(),
        })
    }
}

/// Where the lab's appliance runs and listens.
#[derive(Debug, Clone)]
pub struct ApplianceSpec {
    /// CPU of the (idle) media worker and of the appliance's other threads.
    pub media_core: usize,
    /// CPU of the signaling lane (`[signaling] cores`), its thread is `signal-<core>`.
    pub signaling_core: usize,
    /// The inbound (mutual TLS) signaling listener.
    pub inbound: SocketAddr,
    /// The admin server.
    pub admin: SocketAddr,
    /// The one (unused) media port the config needs.
    pub media_port: SocketAddr,
}

impl ApplianceSpec {
    /// A spec on free loopback ports.
    ///
    /// # Errors
    /// When no free port can be had.
    pub fn new(media_core: usize, signaling_core: usize) -> anyhow::Result<Self> {
        Ok(Self {
            media_core,
            signaling_core,
            inbound: free_tcp()?,
            admin: free_tcp()?,
            media_port: free_udp()?,
        })
    }
}

/// The appliance config of the lab: one idle media worker, the signaling lane on its own CPU
/// with one inbound listener, `[control]` pointing at the daemon.
pub fn appliance_config(
    spec: &ApplianceSpec,
    grpc: SocketAddr,
    svid: &Svid,
    state: &Path,
) -> String {
    format!(
        r#"# Generated by popmesh-perf: the control-plane lab's appliance.
[admin]
listen = "{admin}"

[log]
level = "warn"

[media]
backend = "uring"
cores = [{media}]
max_flows = 64

[media.idle]
# No media in this scenario: the worker waits in the kernel instead of spinning.
spin_polls = 0
max_wait = "1ms"

[[media.ports]]
name = "unused"
bind = "{media_port}"

[signaling]
cores = [{lane}]
# The run measures the proxy, not access-log I/O.
access_log = false

[[signaling.listeners]]
name = "inbound"
bind = "{inbound}"
direction = "inbound"
max_connections = 1000000

[control]
endpoint = "https://127.0.0.1:{grpc_port}"
server_name = "localhost"
appliance = "{APPLIANCE}"
cert = "{cert}"
key = "{key}"
ca = "{ca}"
state_dir = "{state}"
backoff_min = "50ms"
backoff_max = "400ms"
stats_interval = "1s"
"#,
        admin = spec.admin,
        media = spec.media_core,
        media_port = spec.media_port,
        lane = spec.signaling_core,
        inbound = spec.inbound,
        grpc_port = grpc.port(),
        cert = svid.cert.display(),
        key = svid.key.display(),
        ca = svid.ca.display(),
        state = state.display(),
    )
}

/// A running appliance with a signaling lane.
#[derive(Debug)]
pub struct SignalingAppliance {
    /// The process.
    pub child: ChildGuard,
    /// Its admin server.
    pub admin: SocketAddr,
    /// Its inbound signaling listener.
    pub inbound: SocketAddr,
    /// The config it runs with.
    pub config_toml: String,
    /// Seconds from spawn until its agent was connected.
    pub startup_s: f64,
}

impl SignalingAppliance {
    /// On-CPU ns of the signaling lane's threads (`signal-*`), summed.
    pub fn lane_cpu_ns(&self) -> u64 {
        crate::cpu::thread_cpu_ns(self.child.pid())
            .iter()
            .filter(|(name, _)| name.starts_with("signal-"))
            .map(|(_, ns)| *ns)
            .sum()
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.pid())).ok()?;
        crate::cpu::parse_vm_rss_kib(&text)
    }

    /// Its `/metrics` text.
    ///
    /// # Errors
    /// When the admin server does not answer.
    pub fn metrics_text(&self) -> anyhow::Result<String> {
        http_get(self.admin, "/metrics")
    }
}

/// Waits until the log of a child has a line containing `needle`.
///
/// # Errors
/// When the child exits first, `within` passes, or the run is interrupted.
pub fn wait_for_line(
    ctx: &RunContext,
    child: &mut ChildGuard,
    log: &Path,
    needle: &str,
    within: Duration,
) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Ok(line.to_string());
        }
        if let Some(status) = child.try_wait() {
            bail!("{} exited at start ({status}): {}", child.name, text.trim());
        }
        if ctx.interrupted() {
            bail!("interrupted while {} started", child.name);
        }
        if started.elapsed() > within {
            bail!(
                "{} printed no {needle:?} line within {:.0} s; see {}",
                child.name,
                within.as_secs_f64(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Access for drivers that make their own calls (the stability driver's session batches, and
/// its restart of the daemon on the same state and ports).
impl Ctrld {
    /// The operator's channel (it reconnects by itself after the daemon restarts).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Runs a gRPC future on the client's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
