//! The lane's threads: one single-threaded tokio runtime per reserved signaling CPU, pinned,
//! each with its own socket per listener (`SO_REUSEPORT`, so the kernel spreads connections
//! over the CPUs), its own upstream connection pools, and nothing shared on the request path
//! but the mesh table, the TLS state and the services' atomics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use http::HeaderName;
use popmesh_ctrl_api::SpiffeId;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::proxy;
use crate::table::MeshTable;
use crate::tls::TlsState;

/// Who connects to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Callers from other hosts: mutual TLS, their SVID is their identity.
    Inbound,
    /// Local services on this host: cleartext, authorized as the listener's identity.
    Outbound,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, HTTP/2 (ALPN or prior knowledge), gRPC, WebSocket upgrades.
    Http,
    /// Bytes, passed through to one service.
    Tcp,
}

/// One listener of the lane.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Name (a metrics label).
    pub name: String,
    /// Address every signaling core binds (with `SO_REUSEPORT`).
    pub bind: SocketAddr,
    /// Inbound (mTLS) or outbound (cleartext, local).
    pub direction: Direction,
    /// HTTP or TCP pass-through.
    pub protocol: Protocol,
    /// The service of a TCP listener.
    pub service: Option<String>,
    /// Identity of local callers (outbound listeners).
    pub identity: Option<SpiffeId>,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
    /// Open connections at most, over all cores; more are closed at accept.
    pub max_connections: u32,
}

/// The lane's configuration.
#[derive(Debug, Clone)]
pub struct LaneSpec {
    /// CPUs to pin one runtime each to; empty: one runtime, not pinned but kept off
    /// `avoid_cores`.
    pub cores: Vec<usize>,
    /// CPUs no lane thread may run on: the media workers'. A thread that is not pinned to a
    /// signaling CPU (the runtime when `cores` is empty, the health checker then too, and the
    /// SVID watcher always) runs on the CPUs it inherited minus these.
    pub avoid_cores: Vec<usize>,
    /// Listeners.
    pub listeners: Vec<ListenerSpec>,
    /// On stop, how long open requests may take to finish.
    pub drain_timeout: Duration,
    /// One JSON line per request on target `popmesh::access`.
    pub access_log: bool,
    /// Header that carries the caller's SPIFFE ID to services (callers' own copies are removed).
    pub identity_header: HeaderName,
    /// Request bodies up to this size are buffered so idempotent requests can be retried.
    pub max_retry_body: usize,
    /// Upstream TLS sessions are resumed within this long of their full handshake (zero: every
    /// upstream connection makes a full handshake). See [`crate::tls::TlsState::resuming_client_config`].
    pub upstream_resumption: Duration,
}

/// What every core shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub spec: LaneSpec,
    /// SVID and trust bundle.
    pub tls: Arc<TlsState>,
    /// The mesh table in use.
    pub table: ArcSwap<MeshTable>,
    /// Series.
    pub metrics: Metrics,
    /// Open connections per listener (index as in `spec.listeners`).
    pub open: Vec<AtomicU32>,
}

impl Shared {
    /// Installs a new mesh table: new requests follow it, open connections stay.
    pub fn set_table(&self, table: MeshTable) {
        self.metrics.table_version.set(table.version as i64);
        self.table.store(Arc::new(table));
    }
}

/// A running lane.
#[derive(Debug)]
pub struct Lane {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    /// The address each listener is bound to (port 0 in the spec resolved).
    pub bound: Vec<SocketAddr>,
}

impl Lane {
    /// Binds every listener on every core and starts the runtimes.
    ///
    /// # Errors
    /// A listener that cannot be bound (address in use, no permission) or a thread that cannot
    /// be started; nothing keeps running then.
    pub fn start(
        spec: LaneSpec,
        tls: Arc<TlsState>,
        table: MeshTable,
        metrics: Metrics,
    ) -> anyhow::Result<Lane> {
        let spec_cores_first = spec.cores.first().copied();
        let cores: Vec<Option<usize>> = if spec.cores.is_empty() {
            vec![None]
        } else {
            spec.cores.iter().copied().map(Some).collect()
        };
        // Bind here, before any thread starts, so a bad address fails start-up. A listener with
        // port 0 gets its port from the first core's socket; the others bind that port.
        let mut sockets: Vec<Vec<std::net::TcpListener>> =
            cores.iter().map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        for l in &spec.listeners {
            let mut addr = l.bind;
            for per_core in &mut sockets {
                let s = bind_reuseport(addr)
                    .with_context(|| format!("signaling listener {}: binding {addr}", l.name))?;
                addr = s.local_addr()?;
                per_core.push(s);
            }
            bound.push(addr);
        }
        metrics.table_version.set(table.version as i64);
        let shared = Arc::new(Shared {
            open: spec.listeners.iter().map(|_| AtomicU32::new(0)).collect(),
            spec,
            tls,
            table: ArcSwap::from_pointee(table),
            metrics,
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut threads = Vec::new();
        for (i, (core, listeners)) in cores.into_iter().zip(sockets).enumerate() {
            let shared = shared.clone();
            let stop_rx = stop_rx.clone();
            let name = match core {
                Some(c) => format!("signal-{c}"),
                None => format!("signal-{i}"),
            };
            let t = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    match core {
                        Some(c) => {
                            if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                                tracing::warn!(cpu = c, "could not pin the signaling runtime");
                            }
                        }
                        None => keep_off(&shared.spec.avoid_cores),
                    }
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "signaling runtime did not start");
                            return;
                        }
                    };
                    rt.block_on(proxy::run_core(shared, listeners, stop_rx));
                })
                .context("starting a signaling thread")?;
            threads.push(t);
        }
        // Active health checks: their own small runtime on the first signaling CPU, so a
        // slow check never sits in a request's way and never runs on a media core.
        let health_core = spec_cores_first;
        let t = {
            let shared = shared.clone();
            let stop_rx = stop_rx.clone();
            std::thread::Builder::new()
                .name("signal-health".into())
                .spawn(move || {
                    match health_core {
                        Some(c) => {
                            if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                                tracing::warn!(cpu = c, "could not pin the health checker");
                            }
                        }
                        None => keep_off(&shared.spec.avoid_cores),
                    }
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(crate::health::run(shared, stop_rx)),
                        Err(e) => tracing::error!(error = %e, "health-check runtime did not start"),
                    }
                })
                .context("starting the health checker")?
        };
        threads.push(t);
        Ok(Lane {
            shared,
            stop,
            threads,
            bound,
        })
    }

    /// Installs a new mesh table: new requests follow it, open connections stay.
    pub fn set_table(&self, table: MeshTable) {
        self.shared.set_table(table);
    }

    /// The table in use.
    pub fn table(&self) -> Arc<MeshTable> {
        self.shared.table.load_full()
    }

    /// What the cores share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the SVID (`cert`, `key`, PEM) every `every` and installs it when a file
    /// changed, without a restart: new handshakes present it, open connections stay. A file
    /// that does not parse (half-written, wrong key) is logged and the current SVID kept; the
    /// next change is tried again. Stops with the lane.
    pub fn watch_identity(
        &mut self,
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        every: Duration,
    ) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        let stop = self.stop.subscribe();
        let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut last = (stamp(&cert), stamp(&key));
        let t = std::thread::Builder::new()
            .name("signal-svid".into())
            .spawn(move || {
                keep_off(&shared.spec.avoid_cores);
                let step = Duration::from_millis(100).min(every);
                let mut waited = Duration::ZERO;
                while !*stop.borrow() {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < every {
                        continue;
                    }
                    waited = Duration::ZERO;
                    let now = (stamp(&cert), stamp(&key));
                    if now == last {
                        continue;
                    }
                    let loaded = std::fs::read(&cert)
                        .and_then(|c| std::fs::read(&key).map(|k| (c, k)))
                        .map_err(anyhow::Error::from)
                        .and_then(|(c, k)| Ok(crate::tls::Identity::from_pem(&c, &k)?))
                        .and_then(|id| Ok(shared.tls.set_identity(id)?));
                    match loaded {
                        Ok(()) => {
                            last = now;
                            shared.metrics.rotations.inc();
                            let id = shared.tls.identity();
                            tracing::info!(
                                spiffe_id = %id.spiffe_id(),
                                not_after_unix = id.not_after_unix(),
                                "signaling lane: new SVID installed"
                            );
                        }
                        Err(e) => tracing::warn!(
                            cert = %cert.display(),
                            error = %e,
                            "signaling lane: SVID files changed but cannot be used; keeping the current SVID"
                        ),
                    }
                }
            })
            .context("starting the SVID watcher")?;
        self.threads.push(t);
        Ok(())
    }

    /// Stops accepting, lets open requests finish for up to the drain timeout, and joins the
    /// threads.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Narrows this thread's CPUs to those it inherited minus `avoid` (the media workers'); if
/// that would leave none, the thread keeps what it had and says so.
fn keep_off(avoid: &[usize]) {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    if avoid.is_empty() {
        return;
    }
    let me = Pid::from_raw(0);
    let Ok(mut set) = sched_getaffinity(me) else {
        return;
    };
    for &c in avoid {
        let _ = set.unset(c);
    }
    if !(0..CpuSet::count()).any(|c| set.is_set(c).unwrap_or(false)) {
        tracing::warn!(
            media_cpus = ?avoid,
            "every CPU this signaling thread may use is a media CPU: it keeps them; set \
             signaling.cores to CPUs apart from media.cores"
        );
        return;
    }
    if let Err(e) = sched_setaffinity(me, &set) {
        tracing::warn!(error = %e, "could not keep a signaling thread off the media CPUs");
    }
}

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Counts one open connection of listener `i`, refusing beyond its limit.
pub(crate) fn admit(shared: &Shared, i: usize) -> bool {
    let limit = shared.spec.listeners[i].max_connections;
    shared.open[i]
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// Releases what [`admit`] counted.
pub(crate) fn release(shared: &Shared, i: usize) {
    shared.open[i].fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::keep_off;
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;

    fn cpus() -> Vec<usize> {
        let set = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
        (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect()
    }

    #[test]
    fn keep_off_leaves_every_other_cpu() {
        let before = cpus();
        let Some(&last) = before.last().filter(|_| before.len() > 1) else {
            eprintln!("skipped: this process may use one CPU only ({before:?})");
            return;
        };
        // A thread of its own: affinity is per thread.
        let after = std::thread::spawn(move || {
            keep_off(&[last]);
            cpus()
        })
        .join()
        .expect("thread");
        assert_eq!(after, before[..before.len() - 1]);
    }

    #[test]
    fn keep_off_never_leaves_a_thread_without_cpus() {
        let before = cpus();
        let after = std::thread::spawn(move || {
            keep_off(&before);
            cpus()
        })
        .join()
        .expect("thread");
        assert_eq!(after, cpus());
    }
}
