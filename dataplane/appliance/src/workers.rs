//! Media worker threads: one per configured core, pinned, each owning its backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};
use popmesh_config::Config;
use popmesh_media::flow::FlowReaderFactory;
use popmesh_media::mem::{mem_backend, MemHandle};
use popmesh_media::worker::{self, Exit, IdlePolicy};
use popmesh_media::{Backend, BackendCounters, Framing, Pipeline, PipelineConfig, WorkerStats};
use popmesh_uring::{UringBackend, UringParams};

use crate::Clock;

/// Worker lifecycle, readable by the admin server.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Thread started, backend not open yet.
    Starting = 0,
    /// Polling.
    Running = 1,
    /// Returned from its loop (stop requested or failure).
    Exited = 2,
}

/// What the rest of the appliance knows about one worker.
#[derive(Debug)]
pub struct WorkerInfo {
    /// Index in `media.cores`.
    pub index: usize,
    /// CPU the worker is pinned to.
    pub core: usize,
    /// Its counters.
    pub stats: WorkerStats,
    /// Its backend's own counters.
    pub backend: BackendCounters,
    state: AtomicU8,
}

impl WorkerInfo {
    /// Current lifecycle state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Starting,
            1 => State::Running,
            _ => State::Exited,
        }
    }

    fn set(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
}

/// Running workers.
#[derive(Debug)]
pub struct Workers {
    /// Shared per-worker info, in core order.
    pub info: Vec<Arc<WorkerInfo>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// In-memory handles when `media.backend = "mem"` (kept so the rings stay open).
    pub mem: Vec<MemHandle>,
}

/// How a worker thread opens its backend once it is pinned: everything it needs, moved in.
pub enum BackendPlan {
    /// In-memory rings (tests).
    Mem,
    /// io_uring sockets on every configured address.
    Uring,
    /// DPDK queues prepared by [`popmesh_media_dpdk::DpdkEnv`].
    #[cfg(popmesh_dpdk)]
    Dpdk(popmesh_media_dpdk::DpdkEnv),
}

impl std::fmt::Debug for BackendPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendPlan::Mem => "Mem",
            BackendPlan::Uring => "Uring",
            #[cfg(popmesh_dpdk)]
            BackendPlan::Dpdk(_) => "Dpdk",
        })
    }
}

/// What each spawned worker shares with the others.
struct Shared {
    flows: FlowReaderFactory,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    idle: IdlePolicy,
    burst: usize,
    clock: Clock,
}

impl Workers {
    /// Starts one pinned worker per configured core and waits until every backend is open.
    ///
    /// # Errors
    /// The first backend that fails to open (socket bind, io_uring setup, EAL registration);
    /// workers already started are stopped before returning.
    pub fn start(
        cfg: &Config,
        flows: FlowReaderFactory,
        clock: Clock,
        plan: &mut BackendPlan,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<SocketAddr> = cfg.port_addrs();
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let mut workers = Workers {
            info: Vec::new(),
            handles: Vec::new(),
            stop: Arc::clone(&stop),
            mem: Vec::new(),
        };
        let media = &cfg.media;
        for (index, &core) in media.cores.iter().enumerate() {
            let info = Arc::new(WorkerInfo {
                index,
                core,
                stats: WorkerStats::default(),
                backend: BackendCounters::default(),
                state: AtomicU8::new(State::Starting as u8),
            });
            workers.info.push(Arc::clone(&info));
            let shared = Shared {
                flows: flows.clone(),
                stop: Arc::clone(&stop),
                ready: ready_tx.clone(),
                idle: IdlePolicy {
                    spin_polls: media.idle.spin_polls,
                    max_wait: media.idle.max_wait,
                    coalesce: media.idle.coalesce,
                },
                burst: usize::from(media.burst),
                clock,
            };
            let handle = match plan {
                BackendPlan::Mem => {
                    let (b, h) = mem_backend(Framing::Datagram, 4096);
                    workers.mem.push(h);
                    spawn(info, shared, PipelineConfig::datagram(), move || Ok(b))
                }
                BackendPlan::Uring => {
                    let params = UringParams {
                        ring_entries: media.uring.ring_entries,
                        buffers: media.uring.buffers,
                        buffer_size: media.uring.buffer_size,
                        gso: media.uring.gso,
                        rcvbuf_bytes: media.uring.rcvbuf_bytes,
                        sndbuf_bytes: media.uring.sndbuf_bytes,
                    };
                    let addrs = addrs.clone();
                    spawn(info, shared, PipelineConfig::datagram(), move || {
                        UringBackend::open(&params, &addrs).map_err(|e| e.to_string())
                    })
                }
                #[cfg(popmesh_dpdk)]
                BackendPlan::Dpdk(env) => {
                    let queues = env
                        .take_worker(index)
                        .ok_or_else(|| anyhow!("no DPDK queues prepared for worker {index}"))?;
                    let eal = env.eal();
                    let burst = usize::from(media.burst);
                    spawn(info, shared, env.pipeline_config(), move || {
                        let reg = popmesh_media_dpdk::DpdkEnv::register_thread(&eal)
                            .map_err(|e| format!("{e:#}"))?;
                        Ok(popmesh_media_dpdk::DpdkBackend::new(queues, reg, burst))
                    })
                }
            }
            .with_context(|| format!("spawning media worker {index}"))?;
            workers.handles.push(handle);
        }
        drop(ready_tx);
        for _ in 0..workers.info.len() {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((index, Err(e))) => {
                    workers.stop();
                    return Err(anyhow!(
                        "media worker {index} (core {}) failed to start: {e}",
                        cfg.media.cores.get(index).copied().unwrap_or_default()
                    ));
                }
                Err(_) => {
                    workers.stop();
                    return Err(anyhow!("a media worker exited during start-up"));
                }
            }
        }
        Ok(workers)
    }

    /// Raises the stop flag and joins every worker.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Spawns worker `info.index`: pins it, opens its backend with `open` on the pinned thread
/// (so per-thread state such as an io_uring or an EAL lcore belongs to it), reports readiness
/// and runs the loop until stopped.
fn spawn<B, F>(
    info: Arc<WorkerInfo>,
    shared: Shared,
    pipeline: PipelineConfig,
    open: F,
) -> std::io::Result<JoinHandle<()>>
where
    B: Backend,
    F: FnOnce() -> Result<B, String> + Send + 'static,
{
    let index = info.index;
    let core = info.core;
    std::thread::Builder::new()
        .name(format!("media-{index}"))
        .spawn(move || {
            let Shared {
                flows,
                stop,
                ready,
                idle,
                burst,
                clock,
            } = shared;
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                let _ = ready.send((index, Err(format!("cannot pin to CPU {core}"))));
                info.set(State::Exited);
                return;
            }
            let mut backend = match open() {
                Ok(b) => b,
                Err(e) => {
                    let _ = ready.send((index, Err(e)));
                    info.set(State::Exited);
                    return;
                }
            };
            let reader = flows.reader();
            let mut pipeline = Pipeline::new(pipeline);
            let _ = ready.send((index, Ok(())));
            info.set(State::Running);
            let now = move || clock.now_ns();
            let exit = loop_on(
                &mut backend,
                &reader,
                &mut pipeline,
                &info,
                &stop,
                idle,
                burst,
                &now,
            );
            info.set(State::Exited);
            tracing::info!(worker = index, core, ?exit, "media worker stopped");
        })
}

#[allow(clippy::too_many_arguments)]
fn loop_on<B: Backend>(
    backend: &mut B,
    reader: &popmesh_media::FlowReader,
    pipeline: &mut Pipeline,
    info: &WorkerInfo,
    stop: &AtomicBool,
    idle: IdlePolicy,
    burst: usize,
    clock: &dyn Fn() -> u64,
) -> Exit {
    worker::run(
        backend,
        reader,
        pipeline,
        &info.stats,
        &info.backend,
        stop,
        idle,
        burst,
        clock,
    )
}
