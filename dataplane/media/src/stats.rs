//! Per-worker counters, written by their worker and read by the metrics exporter.
//!
//! The pipeline counts into a plain [`BurstCounts`] while it runs and flushes it into the
//! shared [`WorkerStats`] once per burst, so the per-packet cost is an add into a local array.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::drop::DropReason;
use crate::flow::add;

/// Counts gathered during one burst.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BurstCounts {
    /// Packets received.
    pub rx: u64,
    /// Bytes received (buffer lengths).
    pub rx_bytes: u64,
    /// RTP packets accepted.
    pub rtp: u64,
    /// RTCP packets accepted.
    pub rtcp: u64,
    /// Transmissions queued (one per subscriber).
    pub tx: u64,
    /// Packets sent to the exception path.
    pub exceptions: u64,
    /// Drops by reason.
    pub drops: [u64; DropReason::COUNT],
}

impl BurstCounts {
    /// Counts one drop.
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    /// Total drops of every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Shared counters of one worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Packets received.
    pub rx_packets: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// RTP packets accepted.
    pub rtp_packets: AtomicU64,
    /// RTCP packets accepted.
    pub rtcp_packets: AtomicU64,
    /// Datagrams or frames handed to the backend for transmission.
    pub tx_packets: AtomicU64,
    /// Packets handed to the exception path.
    pub exception_packets: AtomicU64,
    /// Drops by [`DropReason`] index.
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Loop iterations that polled the backend.
    pub polls: AtomicU64,
    /// Polls that returned no packet.
    pub empty_polls: AtomicU64,
    /// Times the worker backed off and waited for traffic.
    pub idle_waits: AtomicU64,
    /// Flow table publishes observed (changes of the flow count).
    pub bursts: AtomicU64,
}

impl WorkerStats {
    /// Adds a burst's counts. Only the owning worker calls this.
    pub fn flush(&self, c: &BurstCounts) {
        add(&self.rx_packets, c.rx);
        add(&self.rx_bytes, c.rx_bytes);
        add(&self.rtp_packets, c.rtp);
        add(&self.rtcp_packets, c.rtcp);
        add(&self.tx_packets, c.tx);
        add(&self.exception_packets, c.exceptions);
        for (a, &n) in self.drops.iter().zip(c.drops.iter()) {
            if n != 0 {
                add(a, n);
            }
        }
        add(&self.bursts, 1);
    }

    /// Current drops for `r`.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r.index()].load(Relaxed)
    }
}
