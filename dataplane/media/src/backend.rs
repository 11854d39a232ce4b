//! The contract between the pipeline and whatever moves packets (in-memory rings, io_uring
//! sockets, later DPDK ports).
//!
//! A worker owns one backend and one [`Burst`]. Each turn of its loop is:
//!
//! 1. [`Backend::rx_burst`] appends received packets to `burst.pkts`;
//! 2. the pipeline classifies them and fills `burst.tx` and `burst.exceptions` (it may append
//!    per-subscriber copies to `burst.pkts` for fan-out on L2 backends, see
//!    [`PacketBuf::duplicate_headers`]);
//! 3. [`Backend::tx_burst`] sends `burst.tx`, hands `burst.exceptions` to the exception path and
//!    takes back every buffer in `burst.pkts`, leaving the burst empty for the next turn.
//!
//! Socket backends ([`Framing::Datagram`]) carry the UDP payload in the buffer and the addresses
//! as metadata; the kernel builds the headers on send, so the pipeline never touches the bytes and
//! a fan-out sends one buffer to many addresses. L2 backends ([`Framing::Ethernet`]) carry whole
//! frames; the pipeline rewrites headers in place and, for fan-out, asks for copies whose headers
//! are private and whose payload may be shared with the original.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use crate::drop::DropReason;

/// Index of an ingress or egress point: a socket for socket backends, a (port, queue) for L2
/// backends. Assigned by the appliance from the order of `media.ports` in the config.
pub type PortId = u16;

/// How a backend presents packets to the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The buffer is a UDP payload; `src`/`dst` come from the socket layer.
    Datagram,
    /// The buffer is an Ethernet frame (optionally 802.1Q tagged).
    Ethernet,
}

/// A packet buffer owned by a backend's pool.
pub trait PacketBuf: AsRef<[u8]> + AsMut<[u8]> + Sized {
    /// A copy for one more fan-out subscriber on L2 backends, with a private copy of the first
    /// `header_len` bytes (Ethernet, IP and UDP headers) and the rest possibly shared, or `None`
    /// when the pool is exhausted (the pipeline then counts a `no_buffer` drop for that
    /// subscriber). Socket backends never get asked.
    ///
    /// Contract, so that a backend can chain a small header buffer to the original's payload
    /// (a DPDK indirect mbuf) instead of copying the frame:
    /// - the copy's `as_ref`/`as_mut` expose at least its first `header_len` bytes, equal to the
    ///   original's first `header_len` bytes at the time of the call, and writable without
    ///   affecting the original; the payload behind them is sent with the copy but need not be
    ///   visible through `as_ref`/`as_mut`;
    /// - afterwards the original is only guaranteed to expose and allow writes to its first
    ///   `header_len` bytes (its `as_ref`/`as_mut` may return just that prefix), so a caller
    ///   reads whatever it needs from the payload before the first call, and never writes past
    ///   `header_len` in either buffer (the payload may be shared).
    ///
    /// `header_len` never exceeds the buffer's length. The pipeline makes the copies first and
    /// rewrites the original last.
    fn duplicate_headers(&mut self, header_len: usize) -> Option<Self>;
}

impl PacketBuf for Vec<u8> {
    /// A full copy: the simplest way to meet the contract.
    fn duplicate_headers(&mut self, _header_len: usize) -> Option<Self> {
        Some(self.clone())
    }
}

/// Unspecified address used before classification fills in the real one.
pub const UNSPECIFIED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// One packet in a burst.
#[derive(Debug)]
pub struct Pkt<B> {
    /// The bytes: UDP payload ([`Framing::Datagram`]) or Ethernet frame ([`Framing::Ethernet`]).
    pub buf: B,
    /// Where it came in.
    pub port: PortId,
    /// Sender address. Set by socket backends on receive; filled in by the pipeline on L2.
    pub src: SocketAddr,
    /// Destination address. Set by socket backends on receive; filled in by the pipeline on L2.
    pub dst: SocketAddr,
}

impl<B> Pkt<B> {
    /// A received datagram with its addresses (socket backends).
    pub fn datagram(buf: B, port: PortId, src: SocketAddr, dst: SocketAddr) -> Self {
        Pkt {
            buf,
            port,
            src,
            dst,
        }
    }

    /// A received frame (L2 backends); the pipeline fills in the addresses.
    pub fn frame(buf: B, port: PortId) -> Self {
        Pkt {
            buf,
            port,
            src: UNSPECIFIED,
            dst: UNSPECIFIED,
        }
    }
}

/// One transmission decided by the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx {
    /// Index into `Burst::pkts` of the buffer to send. Several `Tx` may share one index on
    /// socket backends (fan-out without copies).
    pub pkt: u16,
    /// Egress socket or (port, queue).
    pub port: PortId,
    /// Destination. For L2 backends the frame is already rewritten; this is informational.
    pub dst: SocketAddr,
}

/// The per-turn working set of a worker. Allocated once, reused every turn; never shrinks.
#[derive(Debug)]
pub struct Burst<B> {
    /// Received packets, then any duplicates the pipeline made for L2 fan-out.
    pub pkts: Vec<Pkt<B>>,
    /// What to send, in order.
    pub tx: Vec<Tx>,
    /// Indices into `pkts` of packets for the exception path (ARP, ICMP, non-media UDP).
    pub exceptions: Vec<u16>,
}

impl<B> Burst<B> {
    /// An empty burst with room for `rx_burst` received packets and `tx_capacity` sends.
    pub fn with_capacity(rx_burst: usize, tx_capacity: usize) -> Self {
        Burst {
            pkts: Vec::with_capacity(rx_burst),
            tx: Vec::with_capacity(tx_capacity),
            exceptions: Vec::with_capacity(rx_burst),
        }
    }

    /// Forgets the decisions of the last turn (buffers must already have been taken back).
    pub fn clear(&mut self) {
        self.pkts.clear();
        self.tx.clear();
        self.exceptions.clear();
    }
}

/// Names a backend-specific counter for the metrics exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterDesc {
    /// Metric name without the `_total` suffix, e.g. `popmesh_uring_rx_nobufs`.
    pub name: &'static str,
    /// One line for operators: what it counts and what to do when it grows.
    pub help: &'static str,
}

/// Most backend-specific counters a backend may export.
pub const MAX_BACKEND_COUNTERS: usize = 24;

/// Backend-specific counters of one worker: published by the worker every few thousand polls
/// and when it goes idle, read by the metrics exporter.
#[derive(Debug, Default)]
pub struct BackendCounters {
    descs: OnceLock<&'static [CounterDesc]>,
    values: [AtomicU64; MAX_BACKEND_COUNTERS],
}

impl BackendCounters {
    /// Copies the backend's current counters in (worker thread only).
    pub fn publish<B: Backend + ?Sized>(&self, backend: &B) {
        let descs = *self.descs.get_or_init(|| backend.counter_descs());
        let mut now = [0u64; MAX_BACKEND_COUNTERS];
        let n = descs.len().min(MAX_BACKEND_COUNTERS);
        backend.read_counters(&mut now[..n]);
        for (cell, v) in self.values.iter().zip(&now[..n]) {
            cell.store(*v, Relaxed);
        }
    }

    /// `(description, value)` of every counter published so far.
    pub fn snapshot(&self) -> impl Iterator<Item = (CounterDesc, u64)> + '_ {
        let descs: &'static [CounterDesc] = self.descs.get().copied().unwrap_or(&[]);
        descs
            .iter()
            .zip(self.values.iter())
            .map(|(d, v)| (*d, v.load(Relaxed)))
    }
}

/// How an idle worker waits for traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleWait {
    /// Longest wait.
    pub timeout: Duration,
    /// Packets that make a full burst: the wait ends as soon as this many are waiting.
    pub burst: usize,
    /// Interrupt moderation: once the first packet is in, wait up to this long for a full burst
    /// before waking (zero wakes on the first packet). Trades at most this much latency for
    /// fewer wake-ups and bigger batches under light load.
    pub coalesce: Duration,
}

/// What a [`Backend::tx_burst`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Transmissions accepted by the kernel or the device.
    pub sent: u32,
    /// Transmissions that failed (queue full, socket error); the worker counts them as
    /// `tx_failed` drops.
    pub failed: u32,
    /// Packets handed to the exception path.
    pub exceptions: u32,
}

/// Moves packets for one worker. Implementations are owned by exactly one worker thread.
pub trait Backend {
    /// The buffer type carried through the pipeline.
    type Buf: PacketBuf;

    /// How buffers are framed; constant for the life of the backend.
    fn framing(&self) -> Framing;

    /// Appends up to `max` received packets to `burst.pkts` and returns how many. Never blocks.
    fn rx_burst(&mut self, burst: &mut Burst<Self::Buf>, max: usize) -> usize;

    /// Sends `burst.tx`, hands `burst.exceptions` to the exception path and takes back every
    /// buffer in `burst.pkts`. On return `burst.pkts` is empty.
    fn tx_burst(&mut self, burst: &mut Burst<Self::Buf>) -> TxOutcome;

    /// Adds to `drops` the packets this backend dropped since the last call before the pipeline
    /// could see them (a datagram larger than a receive buffer is `TooBig`, a frame the NIC
    /// truncated is `Truncated`). The worker calls this after every poll.
    fn take_rx_drops(&mut self, drops: &mut [u64; DropReason::COUNT]) {
        let _ = drops;
    }

    /// Descriptions of the backend-specific counters [`Backend::read_counters`] fills, in order
    /// (at most [`MAX_BACKEND_COUNTERS`]).
    fn counter_descs(&self) -> &'static [CounterDesc] {
        &[]
    }

    /// Writes the current value of each counter of [`Backend::counter_descs`] into `out`.
    fn read_counters(&self, out: &mut [u64]) {
        let _ = out;
    }

    /// Called after enough empty polls: block until traffic arrives or `wait.timeout` passes.
    /// Backends that cannot wait for traffic simply sleep; backends that can should honour
    /// `wait.coalesce` (see [`IdleWait`]).
    fn idle_wait(&mut self, wait: IdleWait);
}
