//! [`DpdkBackend`]: one media worker's queues on every DPDK port, and the TAP exception path.
//!
//! Each worker owns queue `w` of every media port and of every exception TAP. A turn is:
//!
//! 1. receive up to a burst from the worker's queue of each port in turn (round robin, so one
//!    busy port cannot starve another) and hand the frames to the pipeline;
//! 2. the pipeline rewrites them in place and, for fan-out, asks for per-subscriber copies
//!    ([`Frame`]'s `duplicate_headers`): a fresh header mbuf chained to an indirect mbuf that
//!    shares the payload when every port can send multi-segment packets, a full copy otherwise;
//! 3. transmit, grouped per egress port; frames the PMD does not take are freed and counted;
//!    exceptions (ARP, ICMP, non-media UDP) go to the TAP of the port they came in on, so the
//!    kernel answers them as the appliance's own address;
//! 4. every [`TAP_POLL_INTERVAL`] turns (and whenever the worker goes idle) frames the kernel
//!    wrote to the TAPs (ARP replies, pings, ND) are sent out of their port unchanged.

use popmesh_dpdk::{Mbuf, RxQueue, ThreadRegistration, TxQueue};
use popmesh_media::backend::{
    Backend, Burst, CounterDesc, Framing, IdleWait, PacketBuf, Pkt, PortId, TxOutcome,
};

/// Worker turns between two polls of the exception TAPs (a power of two). A TAP receive is a `read` system
/// call, so it is not done on every turn; 64 turns is well under a millisecond under load.
pub const TAP_POLL_INTERVAL: u32 = 64;

/// [`DpdkBackend::tx_burst`]: a buffer nobody sends (a drop), freed.
const DEST_FREE: PortId = PortId::MAX;
/// [`DpdkBackend::tx_burst`]: a buffer for the exception TAP of its ingress port.
const DEST_TAP: PortId = PortId::MAX - 1;

/// A frame in an mbuf, as the pipeline sees it.
///
/// `as_ref`/`as_mut` expose the first segment; received frames are always one segment (the
/// pool's data room holds a full frame), and fan-out copies keep every header in the first.
#[derive(Debug)]
pub struct Frame {
    mbuf: Mbuf,
    /// Fan-out copies may chain a header mbuf to the shared payload.
    chain: bool,
}

impl Frame {
    /// The mbuf, for transmit.
    pub fn into_mbuf(self) -> Mbuf {
        self.mbuf
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        self.mbuf.as_ref()
    }
}

impl AsMut<[u8]> for Frame {
    fn as_mut(&mut self) -> &mut [u8] {
        self.mbuf.as_mut()
    }
}

impl PacketBuf for Frame {
    fn duplicate_headers(&mut self, header_len: usize) -> Option<Self> {
        let mbuf = if self.chain && header_len < self.mbuf.data_len() {
            self.mbuf.header_copy_chained_own_pool(header_len)?
        } else {
            self.mbuf.copy_own_pool()?
        };
        Some(Frame {
            mbuf,
            chain: self.chain,
        })
    }
}

/// The queues one worker owns, built by [`crate::DpdkEnv`] on the main thread and moved to
/// the worker, which turns them into a [`DpdkBackend`].
#[derive(Debug)]
pub struct WorkerQueues {
    /// Receive queue on each media port, indexed by [`PortId`].
    pub(crate) rx: Vec<RxQueue>,
    /// Transmit queue on each media port, indexed by [`PortId`].
    pub(crate) tx: Vec<TxQueue>,
    /// Exception TAP queues of each media port (empty when `exception_tap` is off).
    pub(crate) tap_rx: Vec<RxQueue>,
    pub(crate) tap_tx: Vec<TxQueue>,
    /// Whether fan-out copies may be chained mbufs (every port sends multi-segment packets).
    pub(crate) chain: bool,
}

/// Counters of one worker's backend, exported as `popmesh_dpdk_*_total`.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    rx_polls: u64,
    tx_full: u64,
    exceptions_to_kernel: u64,
    exceptions_dropped: u64,
    kernel_to_wire: u64,
    kernel_to_wire_dropped: u64,
}

const COUNTERS: &[CounterDesc] = &[
    CounterDesc {
        name: "popmesh_dpdk_rx_polls",
        help: "Receive polls of this worker's DPDK queues (one per port per turn).",
    },
    CounterDesc {
        name: "popmesh_dpdk_tx_full",
        help: "Frames the PMD refused because the transmit ring was full; grows when a port \
               cannot keep up (raise media.dpdk.tx_desc or spread subscribers over ports).",
    },
    CounterDesc {
        name: "popmesh_dpdk_exceptions_to_kernel",
        help: "Non-media frames (ARP, ICMP, other UDP) handed to the port's exception TAP.",
    },
    CounterDesc {
        name: "popmesh_dpdk_exceptions_dropped",
        help: "Non-media frames dropped: no exception TAP (media.dpdk.exception_tap = false) or \
               its queue was full.",
    },
    CounterDesc {
        name: "popmesh_dpdk_kernel_to_wire",
        help: "Frames the kernel sent through an exception TAP (ARP replies, pings) put on the \
               wire.",
    },
    CounterDesc {
        name: "popmesh_dpdk_kernel_to_wire_dropped",
        help: "Frames from an exception TAP the port's transmit ring refused.",
    },
];

/// One media worker's DPDK backend. Created on the worker thread (it registers the thread
/// with EAL for mempool caches) and used only there.
#[derive(Debug)]
pub struct DpdkBackend {
    q: WorkerQueues,
    /// Next port to receive from first.
    next_rx: usize,
    turns: u32,
    /// Receive scratch, reused every turn.
    rx_scratch: Vec<Mbuf>,
    /// Transmit lists per egress port and per exception TAP, reused every turn.
    tx_out: Vec<Vec<Mbuf>>,
    tap_out: Vec<Vec<Mbuf>>,
    /// Per buffer of the burst: its egress port, [`DEST_TAP`] or [`DEST_FREE`].
    dest: Vec<PortId>,
    counters: Counters,
    // Last: the thread leaves EAL only after every queue and mbuf above is gone.
    _eal_thread: ThreadRegistration,
}

impl DpdkBackend {
    /// A backend over `queues`; `registration` is this (worker) thread's EAL registration.
    pub fn new(queues: WorkerQueues, registration: ThreadRegistration, burst: usize) -> Self {
        let ports = queues.tx.len();
        let taps = queues.tap_tx.len();
        DpdkBackend {
            next_rx: 0,
            turns: 0,
            rx_scratch: Vec::with_capacity(burst),
            tx_out: (0..ports).map(|_| Vec::with_capacity(burst * 8)).collect(),
            tap_out: (0..taps).map(|_| Vec::with_capacity(burst)).collect(),
            dest: Vec::with_capacity(burst * 8),
            counters: Counters::default(),
            q: queues,
            _eal_thread: registration,
        }
    }

    /// Sends what the kernel wrote to each TAP out of its port.
    fn poll_taps(&mut self) {
        let max = self.rx_scratch.capacity().max(1);
        for (port, tap) in self.q.tap_rx.iter_mut().enumerate() {
            self.rx_scratch.clear();
            if tap.rx_burst(&mut self.rx_scratch, max) == 0 {
                continue;
            }
            let n = self.rx_scratch.len() as u64;
            let Some(txq) = self.q.tx.get_mut(port) else {
                self.counters.kernel_to_wire_dropped += n;
                self.rx_scratch.clear();
                continue;
            };
            let sent = txq.tx_burst(&mut self.rx_scratch) as u64;
            self.counters.kernel_to_wire += sent;
            self.counters.kernel_to_wire_dropped += n - sent;
        }
    }
}

impl Backend for DpdkBackend {
    type Buf = Frame;

    fn framing(&self) -> Framing {
        Framing::Ethernet
    }

    fn rx_burst(&mut self, burst: &mut Burst<Frame>, max: usize) -> usize {
        self.turns = self.turns.wrapping_add(1);
        if self.turns & (TAP_POLL_INTERVAL - 1) == 0 {
            self.poll_taps();
        }
        let ports = self.q.rx.len();
        let mut got = 0;
        for k in 0..ports {
            if got >= max {
                break;
            }
            let port = (self.next_rx + k) % ports;
            self.counters.rx_polls += 1;
            self.rx_scratch.clear();
            let n = self.q.rx[port].rx_burst(&mut self.rx_scratch, max - got);
            got += n;
            let chain = self.q.chain;
            // PortIds are the index in media.ports, which has at most u16::MAX entries.
            let id = port as PortId;
            burst.pkts.extend(
                self.rx_scratch
                    .drain(..)
                    .map(|mbuf| Pkt::frame(Frame { mbuf, chain }, id)),
            );
        }
        self.next_rx = (self.next_rx + 1) % ports.max(1);
        got
    }

    fn tx_burst(&mut self, burst: &mut Burst<Frame>) -> TxOutcome {
        let mut out = TxOutcome::default();
        // Where each buffer goes, decided first so that the buffers themselves are moved once,
        // straight into their port's list (a frame is sent at most once on L2: fan-out copies
        // are frames of their own). Buffers with no destination (drops) are freed.
        self.dest.clear();
        self.dest.resize(burst.pkts.len(), DEST_FREE);
        for t in &burst.tx {
            match self.dest.get_mut(usize::from(t.pkt)) {
                Some(d) if *d == DEST_FREE && usize::from(t.port) < self.tx_out.len() => {
                    *d = t.port
                }
                _ => out.failed += 1,
            }
        }
        for &i in &burst.exceptions {
            if let Some(d) = self.dest.get_mut(usize::from(i)) {
                if *d == DEST_FREE {
                    *d = DEST_TAP;
                    out.exceptions += 1;
                }
            }
        }
        for (p, &d) in burst.pkts.drain(..).zip(&self.dest) {
            let mbuf = p.buf.into_mbuf();
            if d == DEST_TAP {
                // An exception goes back to the TAP of the port it came in on.
                match self.tap_out.get_mut(usize::from(p.port)) {
                    Some(list) => list.push(mbuf),
                    None => self.counters.exceptions_dropped += 1,
                }
            } else if let Some(list) = self.tx_out.get_mut(usize::from(d)) {
                list.push(mbuf);
            }
            // DEST_FREE: dropped, freed here.
        }
        for (list, txq) in self.tx_out.iter_mut().zip(self.q.tx.iter_mut()) {
            if list.is_empty() {
                continue;
            }
            let n = list.len() as u32;
            let sent = txq.tx_burst(list) as u32;
            out.sent += sent;
            out.failed += n - sent;
            self.counters.tx_full += u64::from(n - sent);
        }
        for (list, tap) in self.tap_out.iter_mut().zip(self.q.tap_tx.iter_mut()) {
            if list.is_empty() {
                continue;
            }
            let n = list.len() as u64;
            let sent = tap.tx_burst(list) as u64;
            self.counters.exceptions_to_kernel += sent;
            self.counters.exceptions_dropped += n - sent;
        }
        burst.clear();
        out
    }

    fn counter_descs(&self) -> &'static [CounterDesc] {
        COUNTERS
    }

    fn read_counters(&self, out: &mut [u64]) {
        let c = self.counters;
        let values = [
            c.rx_polls,
            c.tx_full,
            c.exceptions_to_kernel,
            c.exceptions_dropped,
            c.kernel_to_wire,
            c.kernel_to_wire_dropped,
        ];
        for (o, v) in out.iter_mut().zip(values) {
            *o = v;
        }
    }

    /// Poll-mode ports cannot wake a thread, so an idle worker serves the TAPs and then sleeps
    /// for `wait.timeout` (`media.idle.max_wait`). Set `media.idle.spin_polls` high for a pure
    /// busy-polling worker.
    fn idle_wait(&mut self, wait: IdleWait) {
        self.poll_taps();
        std::thread::sleep(wait.timeout);
    }
}
