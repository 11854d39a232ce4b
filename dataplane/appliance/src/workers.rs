//! Media worker threads: one per configured core, pinned, each owning its backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};
use popmesh_config::{BackendKind, Config};
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

impl Workers {
    /// Starts one pinned worker per configured core and waits until every backend is open.
    ///
    /// # Errors
    /// The first backend that fails to open (socket bind, io_uring setup); workers already
    /// started are stopped before returning.
    pub fn start(cfg: &Config, flows: FlowReaderFactory, clock: Clock) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<SocketAddr> = cfg.port_addrs();
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let mut workers = Workers {
            info: Vec::new(),
            handles: Vec::new(),
            stop: Arc::clone(&stop),
            mem: Vec::new(),
        };
        for (index, &core) in cfg.media.cores.iter().enumerate() {
            let info = Arc::new(WorkerInfo {
                index,
                core,
                stats: WorkerStats::default(),
                backend: BackendCounters::default(),
                state: AtomicU8::new(State::Starting as u8),
            });
            workers.info.push(Arc::clone(&info));
            let media = cfg.media.clone();
            let flows = flows.clone();
            let stop = Arc::clone(&stop);
            let ready = ready_tx.clone();
            let addrs = addrs.clone();
            let mem = match media.backend {
                BackendKind::Mem => Some(mem_backend(Framing::Datagram, 4096)),
                BackendKind::Uring | BackendKind::Dpdk => None,
            };
            let mem_backend = mem.map(|(b, h)| {
                workers.mem.push(h);
                b
            });
            let handle = std::thread::Builder::new()
                .name(format!("media-{index}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        let _ = ready.send((index, Err(format!("cannot pin to CPU {core}"))));
                        info.set(State::Exited);
                        return;
                    }
                    let reader = flows.reader();
                    let idle = IdlePolicy {
                        spin_polls: media.idle.spin_polls,
                        max_wait: media.idle.max_wait,
                        coalesce: media.idle.coalesce,
                    };
                    let burst = usize::from(media.burst);
                    let clock = move || clock.now_ns();
                    let mut pipeline = Pipeline::new(PipelineConfig::datagram());
                    let exit = match mem_backend {
                        Some(mut b) => {
                            let _ = ready.send((index, Ok(())));
                            info.set(State::Running);
                            loop_on(
                                &mut b,
                                &reader,
                                &mut pipeline,
                                &info,
                                &stop,
                                idle,
                                burst,
                                &clock,
                            )
                        }
                        None => {
                            let params = UringParams {
                                ring_entries: media.uring.ring_entries,
                                buffers: media.uring.buffers,
                                buffer_size: media.uring.buffer_size,
                                gso: media.uring.gso,
                                rcvbuf_bytes: media.uring.rcvbuf_bytes,
                                sndbuf_bytes: media.uring.sndbuf_bytes,
                            };
                            match UringBackend::open(&params, &addrs) {
                                Ok(mut b) => {
                                    let _ = ready.send((index, Ok(())));
                                    info.set(State::Running);
                                    loop_on(
                                        &mut b,
                                        &reader,
                                        &mut pipeline,
                                        &info,
                                        &stop,
                                        idle,
                                        burst,
                                        &clock,
                                    )
                                }
                                Err(e) => {
                                    let _ = ready.send((index, Err(e.to_string())));
                                    info.set(State::Exited);
                                    return;
                                }
                            }
                        }
                    };
                    info.set(State::Exited);
                    tracing::info!(worker = index, core, ?exit, "media worker stopped");
                })
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
