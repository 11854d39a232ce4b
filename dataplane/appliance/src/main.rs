//! `popmesh-dataplane`: the appliance daemon.
//!
//! Start-up order matters to operators: the config is parsed and checked against the machine
//! first (exit status 64 on any problem, before a socket is bound, EAL started or a thread
//! started; the layout checks are `popmesh hw check`'s, and their warnings are logged), then
//! the flow table is filled, the pinned media workers open their backends, and only then does
//! the admin server report ready. SIGTERM or SIGINT stops the workers and exits 0.
#![forbid(unsafe_code)]

mod admin;
mod agent;
mod metrics;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use popmesh_config::{BackendKind, Config, LogFormat};
use popmesh_hw::{Finding, Severity, Topology};
use popmesh_media::flow::{FlowKey, FlowSpec, FlowTable, Target};

/// mimalloc instead of glibc's malloc: flows (64-byte aligned, one allocation each) come from
/// size-class pages, packed densely, where glibc's aligned allocations scatter them; with a
/// million flows that is about a quarter less time per packet (ARCHITECTURE.md, "Library
/// choices").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration the daemon refuses (EX_USAGE in sysexits.h).
const EXIT_BAD_CONFIG: u8 = 64;

/// Test override of the sysfs/procfs root the layout checks read (default `/`), so that the
/// integration tests can start the real binary against a captured two-socket machine.
const HW_ROOT_ENV: &str = "POPMESH_HW_ROOT";

/// popmesh media dataplane: pinned poll-mode workers relaying and replicating RTP/RTCP.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Appliance configuration (TOML). See configs/lab.toml for a commented example.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,

    /// Parse and check the configuration, print the effective config as JSON, and exit.
    #[arg(long)]
    check: bool,
}

/// Monotonic clock shared by workers and the admin server: nanoseconds since start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the clock started.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (cfg, findings) = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("popmesh-dataplane: bad configuration: {e:#}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check {
        for finding in &findings {
            eprintln!("{finding}");
        }
        match serde_json::to_string_pretty(&cfg) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("popmesh-dataplane: cannot print config: {e}"),
        }
        return ExitCode::SUCCESS;
    }
    init_tracing(&cfg);
    log_findings(&findings);
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("popmesh-dataplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the file and checks it against this machine. Binds nothing. Returns the layout
/// findings that are not errors (warnings and notes), for logging once tracing is up.
fn load(args: &Args) -> anyhow::Result<(Config, Vec<Finding>)> {
    let cfg = Config::from_file(&args.config)?;
    let findings = check_layout(&cfg)?;
    let online: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    for (i, core) in cfg.media.cores.iter().enumerate() {
        if !online.contains(core) {
            anyhow::bail!(
                "media.cores[{i}]: {core}: CPU {core} is not available to this process \
                 (available: {online:?}); pick cores from that list"
            );
        }
    }
    if cfg.media.backend == BackendKind::Dpdk && !popmesh_media_dpdk::AVAILABLE {
        anyhow::bail!(
            "media.backend: \"dpdk\": this build of popmesh-dataplane has no DPDK backend \
             (DPDK was not found when it was compiled); install dpdk-dev and libdpdk-dev \
             (22.11 or newer) and rebuild, or use \"uring\""
        );
    }
    if let Some(c) = &cfg.control {
        for (what, path) in [("cert", &c.cert), ("key", &c.key), ("ca", &c.ca)] {
            std::fs::read(path).with_context(|| {
                format!("control.{what}: {:?}: cannot read the file", path.display())
            })?;
        }
    }
    tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .map_err(|e| anyhow::anyhow!("log.level: {:?}: {e}", cfg.log.level))?;
    Ok((cfg, findings))
}

/// The `popmesh hw check` checks on this machine (or on `POPMESH_HW_ROOT`): any error refuses
/// the config, listing every error with why and how to fix it.
fn check_layout(cfg: &Config) -> anyhow::Result<Vec<Finding>> {
    let root = std::env::var_os(HW_ROOT_ENV).map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let topo = match Topology::read(&root) {
        Ok(topo) => topo,
        // A sysfs this daemon cannot make sense of should not stop a POP: say so and go on.
        Err(e) => return Ok(vec![popmesh_hw::unreadable(&e)]),
    };
    let (errors, rest): (Vec<Finding>, Vec<Finding>) = popmesh_hw::check(&topo, cfg)
        .into_iter()
        .partition(|f| f.severity == Severity::Error);
    if !errors.is_empty() {
        let listed: Vec<String> = errors.iter().map(|f| f.to_string()).collect();
        anyhow::bail!(
            "the layout does not fit this machine ({} error(s); `popmesh hw check --config FILE` \
             shows every finding, `popmesh hw plan` proposes a layout):\n{}",
            errors.len(),
            listed.join("\n")
        );
    }
    Ok(rest)
}

fn log_findings(findings: &[Finding]) {
    for f in findings {
        match f.severity {
            Severity::Note => {
                tracing::info!(check = f.check.name(), why = %f.why, "{}", f.what)
            }
            _ => tracing::warn!(check = f.check.name(), why = %f.why, fix = %f.fix, "{}", f.what),
        }
    }
}

fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The flow specs of the sessions declared in the config.
fn session_flows(cfg: &Config) -> Vec<FlowSpec> {
    cfg.sessions
        .iter()
        .map(|s| FlowSpec {
            name: s.name.as_str().into(),
            key: FlowKey::new(s.ingress_port, s.ingress),
            source: s.source,
            clock_rate: s.clock_rate,
            targets: s
                .subscribers
                .iter()
                .map(|t| Target {
                    port: t.egress_port,
                    addr: t.addr,
                    mac: None,
                })
                .collect(),
        })
        .collect()
}

fn run(cfg: Config) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    tracing::info!(config = %serde_json::to_string(&*cfg).unwrap_or_default(), "effective configuration");
    let clock = Clock::start();

    let mut table = FlowTable::new(cfg.media.max_flows as usize);
    for spec in session_flows(&cfg) {
        let name = spec.name.clone();
        table
            .upsert(spec)
            .with_context(|| format!("installing session {name:?}"))?;
    }
    table.publish();
    let flows = table.reader();

    // The signaling lane, on its own CPUs, before the workers so a listener clash fails fast.
    let signal_metrics = popmesh_signal::Metrics::default();
    let lane = start_lane(&cfg, signal_metrics.clone())?;

    // With [control] the agent owns the writer: it installs the saved state now, before the
    // workers start, and the daemon's versions later (config sessions are refused with it).
    let agent_metrics = agent::AgentMetrics::default();
    let (mut static_table, agent) = match &cfg.control {
        None => {
            tracing::info!(
                flows = table.len(),
                "flow table ready (sessions from the config file)"
            );
            (Some(table), None)
        }
        Some(control) => {
            std::fs::create_dir_all(&control.state_dir).with_context(|| {
                format!(
                    "control.state_dir: cannot create {}",
                    control.state_dir.display()
                )
            })?;
            let mut agent = agent::Agent::new(Arc::clone(&cfg), table, agent_metrics.clone())
                .context("[control] vanished")?;
            if let Some(lane) = &lane {
                agent = agent.with_lane(Arc::clone(lane.shared()));
            }
            agent.restore();
            tracing::info!(
                flows = agent.sessions(),
                endpoint = %control.endpoint,
                appliance = %control.appliance,
                "flow table ready (sessions from the control daemon)"
            );
            (None, Some(agent))
        }
    };

    // Bind the admin listener before starting workers so a port clash fails fast.
    let admin_listener = std::net::TcpListener::bind(cfg.admin.listen)
        .with_context(|| format!("admin.listen: cannot bind {}", cfg.admin.listen))?;
    admin_listener.set_nonblocking(true)?;

    let mut plan = match cfg.media.backend {
        BackendKind::Mem => workers::BackendPlan::Mem,
        BackendKind::Uring => workers::BackendPlan::Uring,
        BackendKind::Dpdk => dpdk_plan(&cfg)?,
    };
    let mut workers = workers::Workers::start(&cfg, flows.clone(), clock, &mut plan)?;
    tracing::info!(
        workers = workers.info.len(),
        cores = ?cfg.media.cores,
        ports = ?cfg.port_addrs(),
        "media workers running"
    );

    let collector = metrics::MediaCollector {
        workers: workers.info.clone(),
        flows: flows.clone(),
        max_flows: u64::from(cfg.media.max_flows),
        clock,
        #[cfg(popmesh_dpdk)]
        dpdk: match &plan {
            workers::BackendPlan::Dpdk(env) => Some(env.port_set()),
            _ => None,
        },
    };
    let mut registry = metrics::registry(collector);
    if cfg.control.is_some() {
        agent_metrics.register(&mut registry);
    }
    if lane.is_some() {
        signal_metrics.register(&mut registry);
    }
    let state = admin::Admin {
        config: Arc::clone(&cfg),
        registry: Arc::new(registry),
        workers: workers.info.clone(),
        flows,
        clock,
    };
    let agent = agent.map(agent::Agent::spawn).transpose()?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the admin runtime")?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(admin_listener)?;
        tracing::info!(listen = %cfg.admin.listen, "admin server listening");
        axum::serve(listener, admin::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    if let Some(t) = agent.and_then(agent::AgentHandle::stop) {
        static_table = Some(t);
    }
    if let Some(lane) = lane {
        tracing::info!("stopping the signaling lane");
        lane.stop();
    }
    tracing::info!("stopping media workers");
    workers.stop();
    for w in &workers.info {
        tracing::info!(
            worker = w.index,
            core = w.core,
            rx = w
                .stats
                .rx_packets
                .load(std::sync::atomic::Ordering::Relaxed),
            tx = w
                .stats
                .tx_packets
                .load(std::sync::atomic::Ordering::Relaxed),
            "final counters"
        );
    }
    // Ports and EAL go only after every worker is gone (without DPDK the plan owns nothing).
    #[allow(clippy::drop_non_drop)]
    drop(plan);
    // The table outlives the workers: dropping the writer first would end their loops early.
    drop(static_table);
    served.context("admin server")?;
    Ok(())
}

/// How often the signaling lane checks `control.cert`/`control.key` for a renewed SVID.
const SVID_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the signaling lane when `[[signaling.listeners]]` are configured: the appliance SVID
/// (`control.cert`, `control.key`) and trust bundle (`control.ca`) until the daemon sends its
/// own, and an empty mesh until the agent installs the saved or the daemon's.
fn start_lane(
    cfg: &Config,
    metrics: popmesh_signal::Metrics,
) -> anyhow::Result<Option<popmesh_signal::Lane>> {
    use popmesh_config::{Direction, Protocol};
    let sig = &cfg.signaling;
    if sig.listeners.is_empty() {
        return Ok(None);
    }
    let control = cfg
        .control
        .as_ref()
        .context("signaling.listeners need [control] (checked by the config loader)")?;
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("control.{what}: cannot read {}", p.display()))
    };
    let identity = popmesh_signal::Identity::from_pem(
        &read("cert", &control.cert)?,
        &read("key", &control.key)?,
    )
    .with_context(|| format!("control.cert {}", control.cert.display()))?;
    let bundle = popmesh_signal::TrustBundle::from_pem(
        identity.spiffe_id().trust_domain(),
        &read("ca", &control.ca)?,
    )
    .with_context(|| format!("control.ca {}", control.ca.display()))?;
    let tls = popmesh_signal::TlsState::new(identity, bundle)?;
    let spec = popmesh_signal::LaneSpec {
        cores: sig.cores.clone(),
        avoid_cores: cfg.media.cores.clone(),
        listeners: sig
            .listeners
            .iter()
            .map(|l| popmesh_signal::ListenerSpec {
                name: l.name.clone(),
                bind: l.bind,
                direction: match l.direction {
                    Direction::Inbound => popmesh_signal::Direction::Inbound,
                    Direction::Outbound => popmesh_signal::Direction::Outbound,
                },
                protocol: match l.protocol {
                    Protocol::Http => popmesh_signal::Protocol::Http,
                    Protocol::Tcp => popmesh_signal::Protocol::Tcp,
                },
                service: l.service.clone(),
                identity: l.identity.clone(),
                idle_timeout: l.idle_timeout,
                max_connections: l.max_connections,
            })
            .collect(),
        drain_timeout: sig.drain_timeout,
        access_log: sig.access_log,
        identity_header: sig
            .header_identity
            .parse()
            .context("signaling.header_identity (checked by the config loader)")?,
        max_retry_body: sig.max_request_body_retry as usize,
        upstream_resumption: sig.upstream_resumption,
    };
    let mut lane =
        popmesh_signal::Lane::start(spec, tls, popmesh_signal::MeshTable::default(), metrics)?;
    // Renewed SVIDs (written over control.cert/key) are picked up without a restart.
    lane.watch_identity(control.cert.clone(), control.key.clone(), SVID_RECHECK)?;
    for (l, addr) in sig.listeners.iter().zip(&lane.bound) {
        tracing::info!(listener = %l.name, %addr, cores = ?sig.cores, "signaling listener bound");
    }
    Ok(Some(lane))
}

/// EAL, the packet pool, the ports and their exception TAPs, before any worker starts.
#[cfg(popmesh_dpdk)]
fn dpdk_plan(cfg: &Config) -> anyhow::Result<workers::BackendPlan> {
    let env = popmesh_media_dpdk::DpdkEnv::start(cfg).context("setting up DPDK")?;
    Ok(workers::BackendPlan::Dpdk(env))
}

#[cfg(not(popmesh_dpdk))]
fn dpdk_plan(_cfg: &Config) -> anyhow::Result<workers::BackendPlan> {
    // `load` refuses `backend = "dpdk"` in builds without DPDK.
    anyhow::bail!("this build of popmesh-dataplane has no DPDK backend")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
