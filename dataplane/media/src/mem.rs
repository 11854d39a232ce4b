//! In-memory backend: bounded lock-free rings between a worker and a test or bench.
//!
//! The worker side is [`MemBackend`]; the other side is a cloneable [`MemHandle`] that injects
//! packets and collects what was sent and what went to the exception path. Rings are bounded:
//! a full ring drops (and counts) rather than blocking the worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::backend::{Backend, Burst, Framing, IdleWait, Pkt, PortId, TxOutcome};

/// A packet the worker transmitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Egress port.
    pub port: PortId,
    /// Destination (for L2 frames: the rewritten destination).
    pub dst: SocketAddr,
    /// Payload (datagram framing) or frame (Ethernet framing).
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct Rings {
    rx: ArrayQueue<Pkt<Vec<u8>>>,
    tx: ArrayQueue<Sent>,
    exceptions: ArrayQueue<Pkt<Vec<u8>>>,
}

/// The worker's side.
#[derive(Debug)]
pub struct MemBackend {
    framing: Framing,
    rings: Arc<Rings>,
}

/// The test's side.
#[derive(Clone, Debug)]
pub struct MemHandle {
    rings: Arc<Rings>,
}

/// Creates a backend and its handle with rings of `capacity` packets each.
pub fn mem_backend(framing: Framing, capacity: usize) -> (MemBackend, MemHandle) {
    let rings = Arc::new(Rings {
        rx: ArrayQueue::new(capacity),
        tx: ArrayQueue::new(capacity),
        exceptions: ArrayQueue::new(capacity),
    });
    (
        MemBackend {
            framing,
            rings: Arc::clone(&rings),
        },
        MemHandle { rings },
    )
}

impl MemHandle {
    /// Queues a received packet; gives it back if the ring is full.
    ///
    /// # Errors
    /// Returns the packet when the receive ring is full.
    pub fn inject(&self, pkt: Pkt<Vec<u8>>) -> Result<(), Pkt<Vec<u8>>> {
        self.rings.rx.push(pkt)
    }

    /// Takes the next transmitted packet.
    pub fn take_sent(&self) -> Option<Sent> {
        self.rings.tx.pop()
    }

    /// Takes the next packet punted to the exception path.
    pub fn take_exception(&self) -> Option<Pkt<Vec<u8>>> {
        self.rings.exceptions.pop()
    }

    /// Packets waiting to be received by the worker.
    pub fn pending_rx(&self) -> usize {
        self.rings.rx.len()
    }
}

impl Backend for MemBackend {
    type Buf = Vec<u8>;

    fn framing(&self) -> Framing {
        self.framing
    }

    fn rx_burst(&mut self, burst: &mut Burst<Vec<u8>>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.rings.rx.pop() {
                Some(p) => {
                    burst.pkts.push(p);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    fn tx_burst(&mut self, burst: &mut Burst<Vec<u8>>) -> TxOutcome {
        let mut out = TxOutcome::default();
        for tx in &burst.tx {
            let Some(p) = burst.pkts.get(usize::from(tx.pkt)) else {
                out.failed += 1;
                continue;
            };
            let sent = Sent {
                port: tx.port,
                dst: tx.dst,
                bytes: p.buf.clone(),
            };
            if self.rings.tx.push(sent).is_ok() {
                out.sent += 1;
            } else {
                out.failed += 1;
            }
        }
        // Exceptions are moved out; indices are taken in descending order so that
        // swap_remove never disturbs one still to be taken.
        burst.exceptions.sort_unstable_by(|a, b| b.cmp(a));
        for &i in &burst.exceptions {
            let i = usize::from(i);
            if i < burst.pkts.len() {
                let p = burst.pkts.swap_remove(i);
                if self.rings.exceptions.push(p).is_ok() {
                    out.exceptions += 1;
                }
            }
        }
        burst.clear();
        out
    }

    fn idle_wait(&mut self, wait: IdleWait) {
        if self.rings.rx.is_empty() {
            std::thread::sleep(wait.timeout.min(Duration::from_micros(100)));
        }
    }
}
