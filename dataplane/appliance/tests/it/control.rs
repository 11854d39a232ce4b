//! The dataplane under the real control daemon: `popmesh-ctrld` (bootstrap, serve, mutual TLS)
//! and `popmesh-dataplane` with `[control]` (uring backend, loopback, one worker).
//!
//! `popmesh-ctrld` is another package's binary, so `CARGO_BIN_EXE_` does not name it; it is
//! looked up next to this test binary (`target/<profile>/popmesh-ctrld`) and built with the
//! same cargo and profile when it is not there yet.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use popmesh_ctrl_api::pb::{
    appliance_service_client::ApplianceServiceClient,
    identity_service_client::IdentityServiceClient, session_service_client::SessionServiceClient,
    BatchSessionsRequest, CreateSessionRequest, Endpoint, GetApplianceStatusRequest,
    GetSessionStatsRequest, IdentityKind, IssueSvidRequest, RemoveSessionRequest, Session,
    Subscriber, SyncState,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::harness::{self, collect, free_tcp, free_udp, metric, roomy_udp, rtp};

mod signaling;

const APPLIANCE: &str = "pop-1";

/// `target/<profile>/popmesh-ctrld`, built on demand.
fn ctrld_bin() -> PathBuf {
    workspace_bin("popmesh-ctrld", "popmesh-ctrld")
}

/// `target/<profile>/<bin>` of another workspace package, built on demand.
fn workspace_bin(package: &str, bin_name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/it-<hash> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps");
    let bin = profile_dir.join(bin_name);
    if bin.exists() {
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    eprintln!("building {package} ({})", bin.display());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", package, "-j", "1"])
        .current_dir(harness::repo_root());
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build");
    assert!(
        st.success() && bin.exists(),
        "{bin_name} is not built at {}: run `cargo build -p {package}` (same profile) first",
        bin.display()
    );
    bin
}

/// The control daemon on a fixed port (so a restart is found at the same address).
struct Ctrld {
    bin: PathBuf,
    state: PathBuf,
    grpc: SocketAddr,
    metrics: SocketAddr,
    child: Option<Child>,
    ca: String,
    operator: (String, String),
}

impl Ctrld {
    fn start(dir: &Path) -> Ctrld {
        let bin = ctrld_bin();
        let state = dir.join("ctrld");
        let out = Command::new(&bin)
            .args([
                "bootstrap",
                "--trust-domain",
                "pop.test",
                "--operator",
                "alice",
            ])
            .arg("--state-dir")
            .arg(&state)
            .output()
            .expect("run popmesh-ctrld bootstrap");
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |p: &str| std::fs::read_to_string(state.join(p)).expect("bootstrap output");
        let mut c = Ctrld {
            ca: read("operator/ca.pem"),
            operator: (read("operator/alice.pem"), read("operator/alice-key.pem")),
            bin,
            state,
            grpc: free_tcp(),
            metrics: free_tcp(),
            child: None,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--listen")
            .arg(self.grpc.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .arg("--state-dir")
            .arg(&self.state)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn popmesh-ctrld serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("popmesh-ctrld printed no listening line");
        assert!(line.starts_with("listening grpc="), "{line}");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let st = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let _ = child.wait();
    }

    /// The daemon's own commit-to-ACK push latency so far: (sum in seconds, count).
    fn push_latency(&self) -> (f64, f64) {
        let url = format!("http://{}/metrics", self.metrics);
        let text = ureq::get(&url)
            .call()
            .expect("scrape popmesh-ctrld")
            .into_string()
            .expect("metrics text");
        let get = |name: &str| metric(&text, name, &[]).unwrap_or(f64::NAN);
        (
            get("popmesh_ctrld_push_latency_seconds_sum"),
            get("popmesh_ctrld_push_latency_seconds_count"),
        )
    }

    async fn channel(&self, cert: &str, key: &str) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name("localhost");
        Channel::from_shared(format!("https://127.0.0.1:{}", self.grpc.port()))
            .expect("uri")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect to popmesh-ctrld")
    }

    /// `popmesh session create ... --json` as the operator; returns the new config version.
    fn cli_create(&self, name: &str, ingress: SocketAddr, subs: &[SocketAddr], dir: &Path) -> u64 {
        let ids = dir.join("cli-operator");
        std::fs::create_dir_all(&ids).expect("cli identity dir");
        std::fs::write(ids.join("op.pem"), &self.operator.0).expect("write cert");
        std::fs::write(ids.join("op-key.pem"), &self.operator.1).expect("write key");
        std::fs::write(ids.join("ca.pem"), &self.ca).expect("write ca");
        let mut cmd = Command::new(workspace_bin("popmesh-cli", "popmesh"));
        cmd.arg("--json")
            .args(["--ctrld", &format!("127.0.0.1:{}", self.grpc.port())])
            .args(["--server-name", "localhost"])
            .arg("--cert")
            .arg(ids.join("op.pem"))
            .arg("--key")
            .arg(ids.join("op-key.pem"))
            .arg("--ca")
            .arg(ids.join("ca.pem"))
            .args([
                "session",
                "create",
                "--name",
                name,
                "--appliance",
                APPLIANCE,
            ])
            .args(["--ingress", &ingress.to_string()]);
        for s in subs {
            cmd.args(["--subscriber", &s.to_string()]);
        }
        let out = cmd.output().expect("run popmesh session create");
        assert!(
            out.status.success(),
            "popmesh session create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("popmesh --json prints JSON");
        v["version"].as_u64().expect("version in the CLI's JSON")
    }

    async fn op(&self) -> Channel {
        self.channel(&self.operator.0, &self.operator.1).await
    }

    async fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.op().await)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// An appliance SVID written to `dir` as `pop-1.pem`, `pop-1-key.pem`, `ca.pem`.
    async fn issue_appliance(&self, dir: &Path) {
        let r = IdentityServiceClient::new(self.op().await)
            .issue_svid(IssueSvidRequest {
                kind: IdentityKind::Appliance as i32,
                namespace: String::new(),
                name: APPLIANCE.into(),
                ttl_seconds: 3600,
                csr_pem: String::new(),
            })
            .await
            .expect("IssueSvid")
            .into_inner();
        std::fs::write(dir.join("pop-1.pem"), r.cert_pem + &r.chain_pem).expect("write cert");
        std::fs::write(dir.join("pop-1-key.pem"), r.key_pem).expect("write key");
        std::fs::write(dir.join("ca.pem"), &self.ca).expect("write ca");
    }

    /// Waits until the appliance acknowledged `version` (or a later one); returns how long
    /// after the call that took.
    async fn until_acked(&self, version: u64) -> Duration {
        let started = Instant::now();
        let mut c = ApplianceServiceClient::new(self.op().await);
        loop {
            let s = c
                .get_appliance_status(GetApplianceStatusRequest {
                    name: APPLIANCE.into(),
                    resources: false,
                })
                .await
                .expect("GetApplianceStatus")
                .into_inner();
            if s.acked_version >= version {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "appliance never acknowledged version {version}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Ctrld {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ep(a: SocketAddr) -> Option<Endpoint> {
    Some(Endpoint {
        address: a.ip().to_string(),
        port: u32::from(a.port()),
    })
}

fn session(name: &str, ingress: SocketAddr, subs: &[SocketAddr]) -> Session {
    Session {
        name: name.into(),
        appliance: APPLIANCE.into(),
        ingress: ep(ingress),
        subscribers: subs
            .iter()
            .map(|s| Subscriber {
                endpoint: ep(*s),
                egress_port: String::new(),
            })
            .collect(),
        ..Default::default()
    }
}

/// The dataplane config: media ports `a` and `b` (one socket each, `any` on 0.0.0.0 when
/// `wildcard` is set), one worker, `[control]` pointing at `ctrld`.
fn dataplane_config(
    dir: &Path,
    ctrld: &Ctrld,
    admin: SocketAddr,
    ports: &[(&str, SocketAddr)],
    max_flows: u32,
) -> PathBuf {
    let mut text = format!(
        r#"
[admin]
listen = "{admin}"
[log]
level = "info"
[media]
backend = "uring"
cores = [{core}]
max_flows = {max_flows}
"#,
        core = worker_core(),
    );
    for (name, bind) in ports {
        text.push_str(&format!(
            "[[media.ports]]\nname = \"{name}\"\nbind = \"{bind}\"\n"
        ));
    }
    text.push_str(&format!(
        r#"
[control]
endpoint = "https://127.0.0.1:{port}"
server_name = "localhost"
appliance = "{APPLIANCE}"
cert = "{d}/pop-1.pem"
key = "{d}/pop-1-key.pem"
ca = "{d}/ca.pem"
state_dir = "{d}/agent-state"
backoff_min = "50ms"
backoff_max = "400ms"
stats_interval = "1s"
"#,
        port = ctrld.grpc.port(),
        d = dir.display(),
    ));
    let p = dir.join("dataplane.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

/// A CPU this process may run on, other than CPU 0 when there is a choice.
fn worker_core() -> usize {
    let allowed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "0".into());
    let first: Vec<usize> = allowed
        .split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (usize, usize) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
            a..=b
        })
        .collect();
    first
        .iter()
        .copied()
        .find(|&c| c != 0)
        .unwrap_or(first.first().copied().unwrap_or(0))
}

/// A publisher for one ingress: keeps one socket (flows latch their first sender) and its
/// sequence numbers.
struct Publisher {
    sock: UdpSocket,
    seq: u16,
    ssrc: u32,
}

impl Publisher {
    fn new(to: SocketAddr, ssrc: u32) -> Publisher {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("publisher");
        sock.connect(to).expect("connect");
        Publisher { sock, seq: 0, ssrc }
    }

    /// Sends `n` packets; returns how many each subscriber received.
    fn round(&mut self, subs: &[UdpSocket], n: usize) -> Vec<usize> {
        std::thread::scope(|s| {
            let rx: Vec<_> = subs
                .iter()
                .map(|sub| s.spawn(move || collect(sub, n, Duration::from_millis(700)).len()))
                .collect();
            std::thread::sleep(Duration::from_millis(20));
            for i in 0..n {
                self.sock
                    .send(&rtp(self.seq, self.ssrc, 100))
                    .expect("send");
                self.seq = self.seq.wrapping_add(1);
                if i % 20 == 19 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            rx.into_iter()
                .map(|h| h.join().expect("receiver"))
                .collect()
        })
    }
}

fn subscribers(n: usize) -> Vec<UdpSocket> {
    (0..n).map(|_| roomy_udp("127.0.0.1:0")).collect()
}

fn addrs(socks: &[UdpSocket]) -> Vec<SocketAddr> {
    socks
        .iter()
        .map(|s| s.local_addr().expect("addr"))
        .collect()
}

/// Polls the dataplane's `/metrics` until `name` has `value`.
fn until_metric(dp: &harness::Daemon, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = dp.get("/metrics");
        if metric(&m, name, &[]) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {value}:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_the_daemon_forward_survive_its_death_and_resync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctrld = Ctrld::start(dir.path());
    ctrld.issue_appliance(dir.path()).await;
    let (port_a, port_b) = (free_udp(), free_udp());
    let admin = free_tcp();
    let config = dataplane_config(
        dir.path(),
        &ctrld,
        admin,
        &[("a", port_a), ("b", port_b)],
        1024,
    );
    let dp = harness::Daemon::start(&config, admin);
    until_metric(&dp, "popmesh_agent_connected", 1.0);

    // A session created by the operator carries RTP once the appliance acknowledged it.
    let subs_a = subscribers(2);
    let mut ops = ctrld.sessions().await;
    let reply = ops
        .create_session(CreateSessionRequest {
            session: Some(session("room-1", port_a, &addrs(&subs_a))),
        })
        .await
        .expect("CreateSession")
        .into_inner();
    let took = ctrld.until_acked(reply.version).await;
    let (sum, count) = ctrld.push_latency();
    eprintln!(
        "write acknowledged by the daemon -> appliance ACK seen by the operator: {:.1} ms; \
         daemon's commit -> ACK (popmesh_ctrld_push_latency_seconds): {:.1} ms mean over {count} \
         pushes",
        took.as_secs_f64() * 1e3,
        sum / count * 1e3
    );
    let mut pub_a = Publisher::new(port_a, 0xa);
    assert_eq!(pub_a.round(&subs_a, 200), vec![200, 200], "room-1 forwards");

    // A session whose ingress is not a port of this appliance is NACKed with the reason,
    // nothing of its version applies, and room-1 keeps forwarding.
    let bad_ingress: SocketAddr = "10.0.0.9:40000".parse().expect("addr");
    let bad = ops
        .create_session(CreateSessionRequest {
            session: Some(session("bad", bad_ingress, &addrs(&subs_a))),
        })
        .await
        .expect("the daemon accepts it: it is valid, only not for this appliance")
        .into_inner();
    let mut appliances = ApplianceServiceClient::new(ctrld.op().await);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = appliances
            .get_appliance_status(GetApplianceStatusRequest {
                name: APPLIANCE.into(),
                resources: true,
            })
            .await
            .expect("GetApplianceStatus")
            .into_inner();
        if s.last_nack
            .as_ref()
            .is_some_and(|n| n.version >= bad.version)
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no NACK recorded: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let nack = status.last_nack.clone().expect("nack");
    assert!(
        nack.reason
            .contains("ingress 10.0.0.9:40000 is not a media port of this appliance"),
        "{nack:?}"
    );
    let rejected = status
        .resources
        .iter()
        .find(|r| r.name == "bad")
        .unwrap_or_else(|| panic!("bad not among the resources: {status:?}"));
    assert_eq!(rejected.state, SyncState::Rejected as i32, "{status:?}");
    assert!(
        rejected
            .reason
            .contains("is not a media port of this appliance"),
        "{rejected:?}"
    );
    let m = dp.get("/metrics");
    assert!(
        metric(&m, "popmesh_agent_rejected_total", &[]) >= Some(1.0),
        "{m}"
    );
    assert_eq!(
        pub_a.round(&subs_a, 200),
        vec![200, 200],
        "room-1 still forwards"
    );
    let removed = ops
        .remove_session(RemoveSessionRequest { name: "bad".into() })
        .await
        .expect("RemoveSession")
        .into_inner();
    ctrld.until_acked(removed.version).await;

    // Stats reach the daemon.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = ops
            .get_session_stats(GetSessionStatsRequest {
                name: "room-1".into(),
            })
            .await
            .expect("GetSessionStats")
            .into_inner();
        if st.stats.as_ref().is_some_and(|s| s.packets >= 400) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stats of room-1 reported: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 the daemon: the dataplane keeps forwarding.
    ctrld.kill9();
    until_metric(&dp, "popmesh_agent_connected", 0.0);
    assert_eq!(
        pub_a.round(&subs_a, 200),
        vec![200, 200],
        "forwards without the daemon"
    );

    // Restarted on the same state and port, the agent reconnects and re-syncs: a session
    // created after the restart forwards too.
    ctrld.spawn();
    until_metric(&dp, "popmesh_agent_connected", 1.0);
    // This session is added the way an operator does it: with the `popmesh` CLI.
    let subs_b = subscribers(1);
    let version = ctrld.cli_create("room-2", port_b, &addrs(&subs_b), dir.path());
    ctrld.until_acked(version).await;
    let mut pub_b = Publisher::new(port_b, 0xb);
    assert_eq!(pub_b.round(&subs_b, 200), vec![200], "room-2 forwards");
    assert_eq!(
        pub_a.round(&subs_a, 200),
        vec![200, 200],
        "room-1 still forwards"
    );

    // Restart the dataplane with the daemon down: it starts from the saved state.
    let st = dp.terminate();
    assert!(st.success(), "dataplane exit: {st}");
    ctrld.kill9();
    let dp = harness::Daemon::start(&config, admin);
    let m = dp.get("/metrics");
    assert_eq!(metric(&m, "popmesh_agent_connected", &[]), Some(0.0), "{m}");
    assert_eq!(metric(&m, "popmesh_agent_sessions", &[]), Some(2.0), "{m}");
    let mut pub_a = Publisher::new(port_a, 0xa2);
    assert_eq!(
        pub_a.round(&subs_a, 200),
        vec![200, 200],
        "room-1 forwards from the saved state"
    );
    let mut pub_b = Publisher::new(port_b, 0xb2);
    assert_eq!(
        pub_b.round(&subs_b, 200),
        vec![200],
        "room-2 forwards from the saved state"
    );
}

/// Apply rate and daemon-ack-to-appliance-ack latency for one batch of 100,000 sessions
/// (printed; run with `--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_100k_sessions_applied_and_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctrld = Ctrld::start(dir.path());
    ctrld.issue_appliance(dir.path()).await;
    let any: SocketAddr = format!("0.0.0.0:{}", free_udp().port())
        .parse()
        .expect("addr");
    let admin = free_tcp();
    let config = dataplane_config(dir.path(), &ctrld, admin, &[("any", any)], 131_072);
    let dp = harness::Daemon::start(&config, admin);
    until_metric(&dp, "popmesh_agent_connected", 1.0);

    let n = 100_000usize;
    let subs: Vec<SocketAddr> = vec!["192.0.2.1:41000".parse().expect("addr")];
    let upserts: Vec<Session> = (0..n)
        .map(|i| {
            let ingress: SocketAddr = format!(
                "10.{}.{}.{}:{}",
                i >> 16,
                (i >> 8) & 255,
                i & 255,
                any.port()
            )
            .parse()
            .expect("addr");
            session(&format!("s{i}"), ingress, &subs)
        })
        .collect();
    let mut ops = ctrld.sessions().await;
    let sent = Instant::now();
    let reply = ops
        .batch_sessions(BatchSessionsRequest {
            upserts,
            removes: Vec::new(),
        })
        .await
        .expect("BatchSessions")
        .into_inner();
    let write = sent.elapsed();
    let (sum0, count0) = ctrld.push_latency();
    let ack = ctrld.until_acked(reply.version).await;
    let (sum1, count1) = ctrld.push_latency();
    let m = dp.get("/metrics");
    assert_eq!(
        metric(&m, "popmesh_agent_sessions", &[]),
        Some(n as f64),
        "{m}"
    );
    let apply_sum = metric(&m, "popmesh_agent_apply_seconds_sum", &[]).unwrap_or(f64::NAN);
    eprintln!(
        "batch of {n}: daemon write {:.0} ms; daemon reply -> appliance ACK seen {:.0} ms \
         ({:.0} sessions/s end to end); daemon commit -> ACK {:.0} ms ({} push); agent apply \
         time (all versions) {:.0} ms ({} build)",
        write.as_secs_f64() * 1e3,
        ack.as_secs_f64() * 1e3,
        n as f64 / ack.as_secs_f64(),
        (sum1 - sum0) * 1e3,
        count1 - count0,
        apply_sum * 1e3,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );

    // Then single writes on top of the 100k flows: daemon reply -> ACK seen by polling
    // GetApplianceStatus (an upper bound: it includes one status round trip and <= 2 ms of
    // polling). The ACK is sent after publish(), so workers use the flow from then on.
    let mut single: Vec<Duration> = Vec::new();
    for i in 0..200usize {
        let ingress: SocketAddr = format!("10.200.{}.{}:{}", i >> 8, i & 255, any.port())
            .parse()
            .expect("addr");
        let reply = ops
            .create_session(CreateSessionRequest {
                session: Some(session(&format!("single-{i}"), ingress, &subs)),
            })
            .await
            .expect("CreateSession")
            .into_inner();
        single.push(ctrld.until_acked(reply.version).await);
    }
    single.sort();
    let m = dp.get("/metrics");
    assert_eq!(
        metric(&m, "popmesh_agent_sessions", &[]),
        Some((n + 200) as f64),
        "{m}"
    );
    eprintln!(
        "single writes over {n} flows: daemon reply -> appliance ACK seen P50 {:.1} ms, P99 \
         {:.1} ms, max {:.1} ms (200 writes)",
        single[100].as_secs_f64() * 1e3,
        single[197].as_secs_f64() * 1e3,
        single[199].as_secs_f64() * 1e3
    );
}

/// An SVID file that cannot be read refuses the config (exit 64) before anything is bound;
/// `[control]` together with `[[sessions]]` too.
#[test]
fn unreadable_svid_and_file_sessions_with_control_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!(
        "[media]\ncores = [{}]\n[[media.ports]]\nname = \"a\"\nbind = \"127.0.0.1:40000\"\n\
         [control]\nendpoint = \"127.0.0.1:7443\"\nappliance = \"pop-1\"\n\
         cert = \"{d}/missing.pem\"\nkey = \"{d}/missing-key.pem\"\nca = \"{d}/ca.pem\"\n\
         state_dir = \"{d}/state\"\n",
        worker_core(),
        d = dir.path().display()
    );
    let run = |text: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).expect("write");
        let out = Command::new(harness::BIN)
            .arg("--config")
            .arg(&p)
            .output()
            .expect("run popmesh-dataplane");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&base);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("control.cert") && err.contains("missing.pem"),
        "{err}"
    );
    let with_sessions = format!(
        "{base}[[sessions]]\nname = \"s\"\ningress = \"127.0.0.1:40000\"\n\
         subscribers = [\"127.0.0.1:41000\"]\n"
    );
    let (code, err) = run(&with_sessions);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("sessions: 1 entries must be empty when [control] is set"),
        "{err}"
    );
}
