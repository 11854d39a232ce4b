//! The appliance agent: takes the media sessions of this appliance from the control daemon
//! (`popmesh-ctrld`) and owns the flow table's writer while `[control]` is set.
//!
//! It runs on a thread of its own (`popmesh-agent`, a single-threaded tokio runtime, never a
//! media core) so that applying a large version does not stall the admin server. One session
//! with the daemon: mutual TLS with the appliance's SVID, `Register`, `Watch`; then for each
//! `ConfigUpdate` the [`apply::Applier`] checks the whole version and applies it with one
//! publish or not at all, and the agent answers `Ack` or `Nack` (with a reason per session),
//! then saves the accepted configuration ([`store`], in the background, coalescing versions
//! that arrive while a write runs) for starts without the daemon. Stats of
//! every installed session go back every `control.stats_interval`.
//!
//! When the stream breaks the flows stay as they are and the agent reconnects with
//! exponential back-off and jitter ([`Backoff`]); a failure is logged when it first happens
//! or changes, not at every attempt.

pub mod apply;
pub mod store;

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use popmesh_config::{Config, ControlConfig};
use popmesh_ctrl_api::pb::{
    appliance_service_client::ApplianceServiceClient, watch_request, Ack, ConfigUpdate, Nack,
    RegisterRequest, SessionStats, StatsReport, WatchRequest,
};
use popmesh_media::flow::{FlowReaderFactory, FlowTable};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use apply::{Applied, Applier, Rejection};

/// The daemon sends snapshots of up to 256 MiB.
const MAX_MESSAGE_BYTES: usize = 256 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a changed config is written when writes cannot keep up with versions.
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// The agent's series in `/metrics`.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    connected: Gauge,
    version: Gauge<i64, AtomicI64>,
    sessions: Gauge,
    applied: Counter<u64, AtomicU64>,
    rejected: Counter<u64, AtomicU64>,
    apply_seconds: Histogram,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            connected: Gauge::default(),
            version: Gauge::default(),
            sessions: Gauge::default(),
            applied: Counter::default(),
            rejected: Counter::default(),
            // 100 us .. 26 s
            apply_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
        }
    }
}

impl AgentMetrics {
    /// Registers the series (shared with the agent through clones) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "popmesh_agent_connected",
            "1 while the watch stream to the control daemon is open, else 0.",
            m.connected.clone(),
        );
        registry.register(
            "popmesh_agent_config_version",
            "Config version last applied (from the daemon or the saved state).",
            m.version.clone(),
        );
        registry.register(
            "popmesh_agent_sessions",
            "Sessions installed by the agent.",
            m.sessions.clone(),
        );
        registry.register(
            "popmesh_agent_applied",
            "Config versions applied and acknowledged.",
            m.applied.clone(),
        );
        registry.register(
            "popmesh_agent_rejected",
            "Config versions refused (NACKed); nothing of them was applied.",
            m.rejected.clone(),
        );
        registry.register(
            "popmesh_agent_apply_seconds",
            "Time to check and apply one config version (up to the flow table publish).",
            m.apply_seconds.clone(),
        );
    }
}

/// Exponential back-off with jitter: the n-th delay after a failure is drawn from
/// `[d/2, d]` with `d = min(max, min * 2^n)`, never below `min`. Seeded, so tests are exact.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// Delays between `min` and `max`; `seed` drives the jitter.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(31);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.min.saturating_mul(1u32 << exp).min(self.max);
        // xorshift64*: jitter only, no need for more.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos() as u64;
        let jitter = if span == 0 { 0 } else { r % (span + 1) };
        (half + Duration::from_nanos(jitter)).max(self.min)
    }

    /// After a successful connection: start again at `min`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The running agent thread.
#[derive(Debug)]
pub struct AgentHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<FlowTable>>,
}

impl AgentHandle {
    /// Stops the agent and hands the flow table back (the caller drops it after the workers).
    pub fn stop(mut self) -> Option<FlowTable> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take()?.join() {
            Ok(table) => Some(table),
            Err(_) => {
                tracing::error!("the agent thread panicked");
                None
            }
        }
    }
}

/// The agent before it starts: owns the table and what is installed.
#[derive(Debug)]
pub struct Agent {
    control: ControlConfig,
    config: Arc<Config>,
    table: FlowTable,
    applier: Applier,
    flows: FlowReaderFactory,
    metrics: AgentMetrics,
    /// An accepted version is not on disk yet.
    unsaved: bool,
    /// The state file write in progress.
    saving: Option<tokio::task::JoinHandle<()>>,
}

impl Agent {
    /// An agent for `config.control` (which must be set) writing `table`.
    pub fn new(config: Arc<Config>, table: FlowTable, metrics: AgentMetrics) -> Option<Self> {
        let control = config.control.clone()?;
        let applier = Applier::new(Arc::clone(&config), &control.appliance);
        let flows = table.reader();
        Some(Agent {
            control,
            config,
            table,
            applier,
            flows,
            metrics,
            unsaved: false,
            saving: None,
        })
    }

    /// Sends the mesh of every accepted snapshot to the signaling lane. Call before
    /// [`Agent::restore`] so the saved mesh reaches the lane too.
    pub fn with_lane(mut self, lane: Arc<popmesh_signal::lane::Shared>) -> Self {
        self.applier = self.applier.with_lane(lane);
        self
    }

    /// Starts writing the accepted config to `control.state_dir` if it changed and no write is
    /// running. The agent never waits for the disk (a 100k-session file takes a while to
    /// fsync): the file trails the applied version by at most one write plus [`SAVE_EVERY`],
    /// and is written after the ACK. A crash in between restarts from the previous state,
    /// which the daemon's next snapshot corrects. A failed write is logged and retried with
    /// the next accepted version.
    fn save_in_background(&mut self) {
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) || !self.unsaved {
            return;
        }
        self.unsaved = false;
        let dir = self.control.state_dir.clone();
        let saved = self.applier.saved();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = store::save(&dir, &saved.update()) {
                tracing::error!(
                    version = saved.version,
                    "cannot save the accepted config (a start without the daemon would use an \
                     older one): {e:#}"
                );
            }
        }));
    }

    /// Waits for the running write, then writes what is still unsaved (on a broken stream and
    /// at shutdown).
    async fn flush_state(&mut self) {
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
        self.save_in_background();
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
    }

    /// Installs the saved state of `control.state_dir`, if there is one that fits this
    /// appliance's config; the daemon's first snapshot then only changes what differs. Called
    /// before the workers start. A state that cannot be read or applied is logged and skipped
    /// (the daemon will send the current one), never fatal.
    pub fn restore(&mut self) {
        let dir = self.control.state_dir.clone();
        match store::load(&dir) {
            Ok(None) => tracing::info!(
                state_dir = %dir.display(),
                "no saved control state; starting without sessions until the control daemon \
                 sends them"
            ),
            Ok(Some(update)) => match self.applier.apply(&mut self.table, &update) {
                Ok(a) => {
                    self.record(&a);
                    tracing::info!(
                        version = a.version,
                        sessions = a.sessions,
                        state = %store::path(&dir).display(),
                        "installed the saved control state"
                    );
                }
                Err(r) => tracing::error!(
                    version = update.version,
                    state = %store::path(&dir).display(),
                    "saved control state does not fit this config, starting without sessions: {}",
                    r.reason
                ),
            },
            Err(e) => tracing::error!("ignoring the saved control state: {e:#}"),
        }
    }

    /// Sessions installed.
    pub fn sessions(&self) -> usize {
        self.applier.len()
    }

    /// Starts the agent thread.
    pub fn spawn(self) -> anyhow::Result<AgentHandle> {
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("popmesh-agent".into())
            .spawn(move || self.run(stop_rx))
            .context("starting the agent thread")?;
        Ok(AgentHandle {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn run(mut self, mut stop: oneshot::Receiver<()>) -> FlowTable {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(
                    "cannot start the agent runtime, the control daemon will not be reached: {e}"
                );
                return self.table;
            }
        };
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write(self.control.appliance.as_bytes());
            h.finish()
        };
        let mut backoff = Backoff::new(self.control.backoff_min, self.control.backoff_max, seed);
        rt.block_on(async {
            let mut last_failure: Option<String> = None;
            let mut attempts: u64 = 0;
            loop {
                attempts += 1;
                let outcome = tokio::select! {
                    _ = &mut stop => break,
                    r = self.session(&mut backoff, &mut last_failure, attempts) => r,
                };
                self.metrics.connected.set(0);
                self.flush_state().await;
                match outcome {
                    Ok(()) => {
                        tracing::warn!(
                            endpoint = %self.control.endpoint,
                            "control daemon ended the watch stream; keeping the installed \
                             flows and reconnecting"
                        );
                        last_failure = None;
                        attempts = 0;
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        if last_failure.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(
                                endpoint = %self.control.endpoint,
                                version = self.applier.version(),
                                sessions = self.applier.len(),
                                "control daemon unreachable, keeping the installed flows and \
                                 retrying with back-off (logged again when this changes): {msg}"
                            );
                            last_failure = Some(msg);
                        }
                    }
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = &mut stop => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            self.flush_state().await;
        });
        self.table
    }

    /// One connection: register, watch, apply until the stream breaks.
    async fn session(
        &mut self,
        backoff: &mut Backoff,
        last_failure: &mut Option<String>,
        attempts: u64,
    ) -> anyhow::Result<()> {
        let channel = connect(&self.control).await?;
        let mut client = ApplianceServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        client
            .register(RegisterRequest {
                name: self.control.appliance.clone(),
                software_version: env!("CARGO_PKG_VERSION").to_string(),
                media_ports: self
                    .config
                    .media
                    .ports
                    .iter()
                    .map(|p| p.name.clone())
                    .collect(),
            })
            .await
            .map_err(status_error)
            .context("Register")?;
        let (tx, rx) = mpsc::channel::<WatchRequest>(16);
        let mut inbound = client
            .watch(ReceiverStream::new(rx))
            .await
            .map_err(status_error)
            .context("Watch")?
            .into_inner();
        self.metrics.connected.set(1);
        backoff.reset();
        if last_failure.take().is_some() {
            tracing::info!(
                endpoint = %self.control.endpoint,
                attempts,
                "reconnected to the control daemon"
            );
        } else {
            tracing::info!(endpoint = %self.control.endpoint, "connected to the control daemon");
        }
        let mut stats = tokio::time::interval(self.control.stats_interval);
        stats.tick().await;
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    let Some(update) = msg.map_err(status_error).context("watch stream")? else {
                        return Ok(());
                    };
                    let (reply, accepted) = self.handle(&update);
                    tx.send(reply).await.context("watch stream closed")?;
                    if accepted {
                        self.unsaved = true;
                        self.save_in_background();
                    }
                }
                _ = save.tick() => self.save_in_background(),
                _ = stats.tick() => {
                    tx.send(self.stats()).await.context("watch stream closed")?;
                }
            }
        }
    }

    /// Applies one update; the reply to send and whether it was accepted.
    fn handle(&mut self, update: &ConfigUpdate) -> (WatchRequest, bool) {
        let started = Instant::now();
        let result = self.applier.apply(&mut self.table, update);
        let took = started.elapsed();
        self.metrics.apply_seconds.observe(took.as_secs_f64());
        match result {
            Ok(a) => {
                self.record(&a);
                self.metrics.applied.inc();
                tracing::info!(
                    version = a.version,
                    upserted = a.upserted,
                    removed = a.removed,
                    unchanged = a.unchanged,
                    sessions = a.sessions,
                    apply_ms = took.as_secs_f64() * 1e3,
                    "applied config version"
                );
                let ack = Ack {
                    version: update.version,
                    nonce: update.nonce.clone(),
                };
                (
                    WatchRequest {
                        body: Some(watch_request::Body::Ack(ack)),
                    },
                    true,
                )
            }
            Err(Rejection { reason, errors }) => {
                self.metrics.rejected.inc();
                tracing::warn!(
                    version = update.version,
                    kept_version = self.applier.version(),
                    "refused config version: {reason}"
                );
                let nack = Nack {
                    version: update.version,
                    nonce: update.nonce.clone(),
                    reason,
                    errors,
                };
                (
                    WatchRequest {
                        body: Some(watch_request::Body::Nack(nack)),
                    },
                    false,
                )
            }
        }
    }

    fn record(&self, a: &Applied) {
        self.metrics.version.set(a.version as i64);
        self.metrics.sessions.set(a.sessions as i64);
    }

    /// Per-session stats of every installed flow.
    fn stats(&self) -> WatchRequest {
        let reader = self.flows.reader();
        let sessions = match reader.enter() {
            Some(index) => index
                .iter()
                .map(|f| {
                    let relaxed = std::sync::atomic::Ordering::Relaxed;
                    let rate = u64::from(f.clock_rate().max(1));
                    let (lost, jitter_us) = f.ssrc_stats().fold((0i64, 0u64), |(l, j), s| {
                        (
                            l + s.lost(),
                            j.max(u64::from(s.jitter()) * 1_000_000 / rate),
                        )
                    });
                    SessionStats {
                        name: f.spec.name.to_string(),
                        packets: f.counters.packets.load(relaxed),
                        bytes: f.counters.bytes.load(relaxed),
                        drops: f.tallies.drops.load(relaxed),
                        lost,
                        jitter_us,
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        WatchRequest {
            body: Some(watch_request::Body::Stats(StatsReport { sessions })),
        }
    }
}

/// A mutual-TLS channel to the daemon with the appliance's SVID (files read at every attempt,
/// so a renewed SVID is picked up on the next connection).
async fn connect(c: &ControlConfig) -> anyhow::Result<Channel> {
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read_to_string(p)
            .with_context(|| format!("control.{what}: cannot read {}", p.display()))
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca", &c.ca)?))
        .identity(Identity::from_pem(
            read("cert", &c.cert)?,
            read("key", &c.key)?,
        ))
        .domain_name(c.server_name.clone());
    Channel::from_shared(c.endpoint.clone())
        .with_context(|| format!("control.endpoint: {:?}", c.endpoint))?
        .tls_config(tls)
        .context("TLS settings (control.cert, control.key, control.ca)")?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
        .with_context(|| format!("cannot connect to {}", c.endpoint))
}

/// A transport error with its sources on one line (tonic's own text is just "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use popmesh_ctrl_api::pb::{config_update, ConfigSnapshot, Endpoint, Session, Subscriber};

    fn config(state_dir: &std::path::Path) -> Arc<Config> {
        let text = format!(
            "[[media.ports]]\nname = \"lab\"\nbind = \"127.0.0.1:40000\"\ncount = 2\n\
             [control]\nendpoint = \"127.0.0.1:9\"\nappliance = \"pop-1\"\ncert = \"c\"\n\
             key = \"k\"\nca = \"a\"\nstate_dir = {:?}\n",
            state_dir.display().to_string()
        );
        Arc::new(Config::from_toml(&text).expect("test config"))
    }

    fn session(name: &str, port: u32) -> Session {
        let ep = |port| {
            Some(Endpoint {
                address: "127.0.0.1".into(),
                port,
            })
        };
        Session {
            name: name.into(),
            appliance: "pop-1".into(),
            ingress: ep(port),
            subscribers: vec![Subscriber {
                endpoint: ep(41000),
                egress_port: String::new(),
            }],
            ..Default::default()
        }
    }

    fn installed(agent: &Agent) -> Vec<String> {
        let reader = agent.flows.reader();
        let index = reader.enter().expect("table alive");
        let mut names: Vec<String> = index.iter().map(|f| f.spec.name.to_string()).collect();
        names.sort();
        names
    }

    /// A start without the daemon: the saved state is installed (and published) before the
    /// workers start; a state that no longer fits the config is skipped, not fatal.
    #[test]
    fn restore_installs_the_saved_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        let snapshot = |sessions| ConfigUpdate {
            version: 9,
            nonce: String::new(),
            body: Some(config_update::Body::Snapshot(ConfigSnapshot {
                sessions,
                ..Default::default()
            })),
        };
        store::save(
            dir.path(),
            &snapshot(vec![session("a", 40000), session("b", 40001)]),
        )
        .expect("save");
        let table = FlowTable::new(16);
        let metrics = AgentMetrics::default();
        let mut agent = Agent::new(Arc::clone(&cfg), table, metrics.clone()).expect("[control]");
        agent.restore();
        assert_eq!(installed(&agent), vec!["a", "b"]);
        assert_eq!(agent.applier.version(), 9);
        assert_eq!(metrics.version.get(), 9);

        // A saved session on a port this config no longer has: nothing of it is installed.
        store::save(dir.path(), &snapshot(vec![session("c", 40005)])).expect("save");
        let mut agent =
            Agent::new(cfg, FlowTable::new(16), AgentMetrics::default()).expect("[control]");
        agent.restore();
        assert!(installed(&agent).is_empty());
        assert_eq!(agent.applier.version(), 0);
    }

    #[test]
    fn backoff_doubles_with_jitter_within_bounds_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut b = Backoff::new(min, max, 42);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let ceiling = (min * (1u32 << n.min(20))).min(max);
            assert!(
                *d >= min && *d <= ceiling,
                "delay {n}: {d:?} not in {min:?}..={ceiling:?}"
            );
            assert!(
                *d >= ceiling / 2,
                "delay {n}: {d:?} below half of {ceiling:?}"
            );
        }
        assert!(delays[11] >= max / 2, "reaches the cap: {delays:?}");
        let distinct: std::collections::HashSet<_> = delays[5..].iter().collect();
        assert!(distinct.len() > 1, "jittered: {delays:?}");
        b.reset();
        assert!(b.next_delay() <= min, "back at min after a reset");
    }
}
