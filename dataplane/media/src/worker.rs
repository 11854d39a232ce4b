//! The poll-mode worker loop, generic over the backend.
//!
//! The caller (the appliance) creates the thread, pins it, builds the backend on it and hands
//! over a clock; this loop only moves bursts: receive, process under one flow-table read guard,
//! transmit, and back off when idle.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::backend::{Backend, BackendCounters, Burst, IdleWait};
use crate::drop::DropReason;
use crate::flow::{add, FlowReader};
use crate::pipeline::Pipeline;
use crate::stats::WorkerStats;

/// When an idle worker stops spinning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Empty polls before waiting; 0 waits right away.
    pub spin_polls: u32,
    /// Longest single wait for traffic.
    pub max_wait: Duration,
    /// After a wake-up, wait up to this long for a fuller burst (0: no moderation).
    pub coalesce: Duration,
}

/// Why a worker loop returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The stop flag was raised.
    Stopped,
    /// The flow table's writer is gone.
    TableClosed,
}

/// Runs until `stop` is raised. `rx_burst` is the most packets taken per poll; `tx_hint` sizes
/// the transmit list (bursts times typical fan-out) so it rarely grows.
#[allow(clippy::too_many_arguments)]
pub fn run<B: Backend>(
    backend: &mut B,
    flows: &FlowReader,
    pipeline: &mut Pipeline,
    stats: &WorkerStats,
    backend_counters: &BackendCounters,
    stop: &AtomicBool,
    idle: IdlePolicy,
    rx_burst: usize,
    clock_ns: &dyn Fn() -> u64,
) -> Exit {
    let mut burst: Burst<B::Buf> = Burst::with_capacity(rx_burst, rx_burst * 8);
    let mut empty: u32 = 0;
    let mut polls: u32 = 0;
    backend_counters.publish(backend);
    loop {
        if stop.load(Relaxed) {
            backend_counters.publish(backend);
            return Exit::Stopped;
        }
        polls = polls.wrapping_add(1);
        if polls & 4095 == 0 {
            backend_counters.publish(backend);
        }
        add(&stats.polls, 1);
        let n = backend.rx_burst(&mut burst, rx_burst);
        let mut rx_drops = [0u64; DropReason::COUNT];
        backend.take_rx_drops(&mut rx_drops);
        for (c, d) in stats.drops.iter().zip(rx_drops) {
            if d != 0 {
                add(c, d);
            }
        }
        if n == 0 {
            add(&stats.empty_polls, 1);
            empty = empty.saturating_add(1);
            if empty > idle.spin_polls {
                add(&stats.idle_waits, 1);
                backend_counters.publish(backend);
                backend.idle_wait(IdleWait {
                    timeout: idle.max_wait,
                    burst: rx_burst,
                    coalesce: idle.coalesce,
                });
            }
            continue;
        }
        empty = 0;
        let now = clock_ns();
        {
            let Some(table) = flows.enter() else {
                backend.tx_burst(&mut burst);
                return Exit::TableClosed;
            };
            let counts = pipeline.process(now, &table, &mut burst);
            stats.flush(counts);
        }
        let out = backend.tx_burst(&mut burst);
        if out.failed > 0 {
            add(
                &stats.drops[DropReason::TxFailed.index()],
                u64::from(out.failed),
            );
        }
    }
}
