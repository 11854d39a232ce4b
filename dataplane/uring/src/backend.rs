//! [`UringBackend`]: sockets, the receive queue, the send planner and the counters, on top of
//! the memory-owning [`Ring`].

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use popmesh_media::backend::{
    Backend, Burst, CounterDesc, Framing, IdleWait, Pkt, PortId, Tx, TxOutcome,
};
use popmesh_media::DropReason;
use socket2::{Domain, Protocol, Socket, Type};

use crate::addr;
use crate::buf_ring::{self, Event, PushError, Ring, RingConfig, RingError, SharedBuf, UringBuf};
use crate::error::OpenError;
use crate::params::UringParams;
use crate::plan;
use crate::stats::UringStats;

/// How often one `tx_burst` may wait (1 ms each) for send slots to free up before it gives up
/// on the rest of the burst. Bounds the call even if the kernel stops completing sends.
const MAX_TX_STALLS: u32 = 4;
const TX_STALL_WAIT: Duration = Duration::from_millis(1);

/// One socket.
#[derive(Debug)]
struct Port {
    socket: Socket,
    /// Bound address (with the real port when 0 was asked for).
    local: SocketAddr,
    /// Bound to 0.0.0.0 / ::, so `dst` comes from the packet-info control message.
    wildcard: bool,
    /// Still allowed to coalesce sends (the kernel may refuse GSO; then we stop trying).
    gso: bool,
    /// Last `SO_RXQ_OVFL` value seen, to turn the cumulative counter into deltas.
    drops_seen: u32,
}

/// An io_uring UDP backend for one worker: one ring, one socket per configured address.
///
/// Created on, and used only by, the worker thread that owns it. See the crate documentation
/// for the buffer lifecycle and syscall budget. It is deliberately `!Send`, because the kernel
/// only accepts submissions from the thread that created a single-issuer ring:
///
/// ```compile_fail,E0277
/// fn needs_send<T: Send>() {}
/// needs_send::<popmesh_uring::UringBackend>();
/// ```
#[derive(Debug)]
pub struct UringBackend {
    // Dropped first: cancels and drains everything the kernel still does with our memory.
    ring: Ring,
    ports: Box<[Port]>,
    /// Parsed datagrams reaped but not yet handed out. Each holds a distinct buffer, so it
    /// never grows past `params.buffers` (its preallocated capacity).
    pending: VecDeque<Pkt<UringBuf>>,
    /// Per-burst shared handles of `burst.pkts`, reused every turn.
    scratch: Vec<SharedBuf>,
    gso: bool,
    stats: UringStats,
    /// `(rx_truncated, rx_socket_drops)` already reported through `take_rx_drops`.
    reported_drops: (u64, u64),
}

fn socket_error(addr: SocketAddr, option: &'static str) -> impl FnOnce(io::Error) -> OpenError {
    move |source| OpenError::SocketOption {
        addr,
        option,
        source,
    }
}

/// Sets a buffer size, first with the `*FORCE` variant that ignores `net.core.{r,w}mem_max`
/// (needs CAP_NET_ADMIN), then with the capped one.
fn set_buffer(socket: &Socket, force: i32, plain: i32, bytes: usize) -> io::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    // The kernel doubles the value for bookkeeping; it takes an int.
    let value = i32::try_from(bytes).unwrap_or(i32::MAX);
    buf_ring::set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, force, value)
        .or_else(|_| buf_ring::set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, plain, value))
}

fn open_socket(addr: SocketAddr, params: &UringParams) -> Result<Port, OpenError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|source| OpenError::Socket { addr, source })?;
    // Non-blocking: io_uring polls the socket itself; nothing may ever block the worker.
    socket
        .set_nonblocking(true)
        .map_err(socket_error(addr, "O_NONBLOCK"))?;
    socket
        .set_reuse_address(true)
        .map_err(socket_error(addr, "SO_REUSEADDR"))?;
    // Every worker binds its own socket to the same address; the kernel hashes the 4-tuple
    // to pick one, so a flow always lands on the same worker.
    socket
        .set_reuse_port(true)
        .map_err(socket_error(addr, "SO_REUSEPORT"))?;
    set_buffer(
        &socket,
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        params.rcvbuf_bytes,
    )
    .map_err(socket_error(addr, "SO_RCVBUF"))?;
    set_buffer(
        &socket,
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
        params.sndbuf_bytes,
    )
    .map_err(socket_error(addr, "SO_SNDBUF"))?;
    let fd = socket.as_raw_fd();
    if addr.is_ipv6() {
        // [::] means IPv6 only; list 0.0.0.0 separately for IPv4, so `src` is never a mapped
        // address and the family of a socket tells how to reach a destination.
        socket
            .set_only_v6(true)
            .map_err(socket_error(addr, "IPV6_V6ONLY"))?;
    }
    let wildcard = addr.ip().is_unspecified();
    if wildcard {
        let (level, name, option) = match addr {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO, "IP_PKTINFO"),
            SocketAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVPKTINFO,
                "IPV6_RECVPKTINFO",
            ),
        };
        buf_ring::set_int_option(fd, level, name, 1).map_err(socket_error(addr, option))?;
    }
    // Drop counter on every datagram after the first drop: how we learn that the socket queue
    // overflowed while the pipeline held every buffer.
    buf_ring::set_int_option(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
        .map_err(socket_error(addr, "SO_RXQ_OVFL"))?;
    socket
        .bind(&addr.into())
        .map_err(|source| OpenError::bind(addr, source))?;
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    Ok(Port {
        socket,
        local,
        wildcard,
        gso: params.gso,
        drops_seen: 0,
    })
}

impl UringBackend {
    /// Opens one UDP socket per address (index = [`PortId`]) and one io_uring with a shared
    /// provided-buffer ring, and starts receiving on every socket.
    ///
    /// Sockets get `SO_REUSEADDR` + `SO_REUSEPORT` so each worker opens its own on the same
    /// address. On an unspecified address (`0.0.0.0`, `::`) the destination of each datagram is
    /// taken from `IP_PKTINFO` / `IPV6_RECVPKTINFO`; otherwise it is the bound address. IPv6
    /// sockets are v6-only.
    ///
    /// Must be called on the thread that will use the backend: the ring is created
    /// single-issuer.
    ///
    /// # Errors
    ///
    /// [`OpenError`] for out-of-range parameters, a socket that cannot be created, configured
    /// or bound (naming the address, with a fix for `EADDRINUSE`, `EACCES`, `EADDRNOTAVAIL`), or
    /// io_uring setup / buffer registration failures (with a hint such as raising
    /// `RLIMIT_MEMLOCK` on `ENOMEM`).
    pub fn open(params: &UringParams, ports: &[SocketAddr]) -> Result<UringBackend, OpenError> {
        params.check()?;
        if ports.is_empty() || ports.len() > usize::from(PortId::MAX) + 1 {
            return Err(OpenError::PortCount { count: ports.len() });
        }
        let ports = ports
            .iter()
            .map(|&addr| open_socket(addr, params))
            .collect::<Result<Box<[Port]>, _>>()?;
        let fds: Vec<_> = ports
            .iter()
            .map(|p| (p.socket.as_raw_fd(), addr::sockaddr_len(&p.local)))
            .collect();
        let cfg = RingConfig {
            sq_entries: params.ring_entries,
            buffers: params.buffers,
            buffer_size: params.buffer_size,
        };
        let ring = Ring::new(cfg, &fds).map_err(|e| match e {
            RingError::Setup(source) => OpenError::Ring {
                entries: params.ring_entries,
                source,
            },
            RingError::Memory(bytes, source) => OpenError::BufferMemory { bytes, source },
            RingError::Register(source) => OpenError::BufferRing {
                buffers: params.buffers,
                source,
            },
        })?;
        Ok(UringBackend {
            ring,
            ports,
            pending: VecDeque::with_capacity(usize::from(params.buffers)),
            scratch: Vec::new(),
            gso: params.gso,
            stats: UringStats::default(),
            reported_drops: (0, 0),
        })
    }

    /// Counters since open.
    pub fn stats(&self) -> UringStats {
        UringStats {
            submit_calls: self.ring.submit_calls(),
            ..self.stats
        }
    }

    /// Address socket `port` is bound to (with the kernel-chosen port when 0 was configured).
    pub fn local_addr(&self, port: PortId) -> Option<SocketAddr> {
        self.ports.get(usize::from(port)).map(|p| p.local)
    }

    /// Receive buffers currently held outside the kernel: by the pipeline, in the not yet
    /// delivered queue, or by sends that have not completed. A value stuck near
    /// `params.buffers` means receive is starved.
    pub fn buffers_in_use(&self) -> u32 {
        self.ring.buffers_in_use()
    }

    /// Moves every completion into counters, the pending queue or freed send slots.
    fn reap(&mut self) {
        let UringBackend {
            ring,
            ports,
            pending,
            stats,
            ..
        } = self;
        ring.reap(|event| match event {
            Event::Datagram {
                port,
                src,
                control,
                buf,
            } => {
                let Some(p) = ports.get_mut(port) else {
                    stats.rx_errors += 1;
                    return;
                };
                if let Some(drops) = control.socket_drops {
                    stats.rx_socket_drops += u64::from(drops.wrapping_sub(p.drops_seen));
                    p.drops_seen = drops;
                }
                let dst = match control.local_ip {
                    Some(ip) if p.wildcard => with_scope(ip, p.local.port(), control.ifindex),
                    _ => p.local,
                };
                stats.rx_datagrams += 1;
                pending.push_back(Pkt::datagram(buf, port as PortId, src, dst));
            }
            Event::Truncated => stats.rx_truncated += 1,
            Event::RecvFailed { errno } if errno == libc::ENOBUFS => stats.rx_nobufs += 1,
            Event::RecvFailed { errno } if errno == libc::ECANCELED => {}
            Event::RecvFailed { .. } | Event::Malformed => stats.rx_errors += 1,
            Event::Sent {
                port,
                segments,
                gso,
                result,
            } => {
                if result < 0 {
                    stats.tx_errors += segments as u64;
                    let errno = -result;
                    if gso && (errno == libc::EIO || errno == libc::EINVAL) {
                        if let Some(p) = ports.get_mut(usize::from(port)).filter(|p| p.gso) {
                            p.gso = false;
                            stats.gso_disabled += 1;
                        }
                    }
                }
            }
        });
    }

    /// Re-arms stopped receives, lets the kernel run (at most one syscall) and reaps.
    fn poll_kernel(&mut self) {
        self.stats.rearms += self.ring.rearm();
        if self.ring.poll().is_err() {
            self.stats.submit_errors += 1;
        }
        self.reap();
    }

    /// Queues one `sendmsg` for the first `n` transmissions of `tx`, waiting briefly for a
    /// free slot if needed. Returns how many datagrams were queued (0 or `n`).
    fn queue_send(&mut self, tx: &[Tx], n: usize, stalls: &mut u32) -> usize {
        let Some(first) = tx.first() else {
            return 0;
        };
        let port = usize::from(first.port);
        let gso_size = if n > 1 {
            self.scratch
                .get(usize::from(first.pkt))
                .and_then(|b| u16::try_from(b.len()).ok())
        } else {
            None
        };
        loop {
            let bufs = tx
                .iter()
                .take(n)
                .filter_map(|t| self.scratch.get(usize::from(t.pkt)));
            match self.ring.push_send(port, &first.dst, bufs, gso_size) {
                Ok(queued) => {
                    self.stats.tx_sqes += 1;
                    self.stats.tx_datagrams += queued as u64;
                    self.stats.tx_gso_batches += u64::from(queued > 1);
                    return queued;
                }
                Err(PushError::NoSlot | PushError::QueueFull) if *stalls < MAX_TX_STALLS => {
                    *stalls += 1;
                    if self.ring.wait(TX_STALL_WAIT, 1, Duration::ZERO).is_err() {
                        self.stats.submit_errors += 1;
                    }
                    self.reap();
                }
                Err(_) => return 0,
            }
        }
    }
}

/// Destination address of a datagram received on a wildcard socket. Link-local IPv6 needs the
/// interface as scope to be usable as a source later.
fn with_scope(ip: IpAddr, port: u16, ifindex: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, ifindex))
        }
        ip => SocketAddr::new(ip, port),
    }
}

/// Whether `dst` can be reached from a socket bound to `local`.
fn reachable(local: &SocketAddr, dst: &SocketAddr) -> bool {
    local.is_ipv4() == dst.is_ipv4() && dst.port() != 0 && !dst.ip().is_unspecified()
}

/// What `read_counters` exports, in order.
static COUNTERS: [CounterDesc; 10] = [
    CounterDesc {
        name: "popmesh_uring_rx_nobufs",
        help: "Times receive stopped because every buffer was in use (raise media.uring.buffers if it keeps growing).",
    },
    CounterDesc {
        name: "popmesh_uring_rx_rearms",
        help: "Multishot receives re-armed after the kernel ended them.",
    },
    CounterDesc {
        name: "popmesh_uring_rx_errors",
        help: "Receive completions that failed or could not be parsed.",
    },
    CounterDesc {
        name: "popmesh_uring_tx_sqes",
        help: "sendmsg submissions (one per datagram or per GSO batch).",
    },
    CounterDesc {
        name: "popmesh_uring_tx_gso_batches",
        help: "sendmsg submissions carrying several datagrams with UDP GSO.",
    },
    CounterDesc {
        name: "popmesh_uring_tx_errors",
        help: "Datagrams whose send failed in the kernel after submission.",
    },
    CounterDesc {
        name: "popmesh_uring_gso_disabled",
        help: "Times GSO was switched off on a socket because the kernel rejected a batch.",
    },
    CounterDesc {
        name: "popmesh_uring_enter_calls",
        help: "io_uring_enter system calls (submissions and waits).",
    },
    CounterDesc {
        name: "popmesh_uring_enter_errors",
        help: "io_uring_enter calls that failed with an unexpected error.",
    },
    CounterDesc {
        name: "popmesh_uring_buffers_in_use",
        help: "Receive buffers held outside the kernel right now (pipeline, queue, in-flight sends).",
    },
];

impl Backend for UringBackend {
    type Buf = UringBuf;

    fn framing(&self) -> Framing {
        Framing::Datagram
    }

    /// Hands out datagrams already reaped; if fewer than `max` are waiting, re-arms stopped
    /// receives, enters the kernel once (only if there is something to submit or the kernel
    /// flagged completions) and reaps again.
    fn rx_burst(&mut self, burst: &mut Burst<UringBuf>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        if self.pending.len() < max {
            self.poll_kernel();
        }
        let n = max.min(self.pending.len());
        burst.pkts.extend(self.pending.drain(..n));
        n
    }

    /// Queues every send of the burst (coalescing runs to one destination with GSO), submits
    /// them with one `io_uring_enter`, and releases every buffer of the burst: buffers that were
    /// sent go back to the kernel when their last send completes, the others at once.
    ///
    /// `TxOutcome::exceptions` counts the packets marked for the exception path; a socket
    /// backend drops them (the kernel already processed what it would punt), see
    /// `UringStats::exceptions_dropped`.
    // Worker CPU on loopback, bursts of 32 x 1200 B relayed 1:1: ~2.0 us/pkt with GSO,
    // ~2.6 us/pkt without; 200 B to 4 subscribers: ~1.1 vs ~2.8 us per datagram sent. Most of
    // it is the kernel's loopback delivery (cargo run --release --example relay_loopback).
    fn tx_burst(&mut self, burst: &mut Burst<UringBuf>) -> TxOutcome {
        let mut out = TxOutcome {
            exceptions: u32::try_from(burst.exceptions.len()).unwrap_or(u32::MAX),
            ..TxOutcome::default()
        };
        self.stats.exceptions_dropped += burst.exceptions.len() as u64;
        if burst.tx.is_empty() {
            burst.clear();
            return out;
        }
        // Group sends by destination so GSO can carry a whole burst's packets for one
        // subscriber in one sendmsg (a fan-out burst arrives packet-major). Ties break on the
        // packet index, so each destination still gets its packets in arrival order.
        if self.gso && burst.tx.len() > 1 {
            let key = |t: &Tx| (t.port, t.dst, t.pkt);
            if !burst.tx.is_sorted_by_key(key) {
                burst.tx.sort_unstable_by_key(key);
            }
        }
        self.scratch.clear();
        self.scratch
            .extend(burst.pkts.drain(..).map(|p| p.buf.into_shared()));
        let mut stalls = 0;
        let mut rest = burst.tx.as_slice();
        while let Some(first) = rest.first() {
            let valid = self
                .ports
                .get(usize::from(first.port))
                .is_some_and(|p| reachable(&p.local, &first.dst))
                && usize::from(first.pkt) < self.scratch.len();
            let n = if valid {
                let gso = self.gso
                    && self
                        .ports
                        .get(usize::from(first.port))
                        .is_some_and(|p| p.gso);
                let scratch = &self.scratch;
                let n = plan::run_len(rest, gso, |pkt| {
                    scratch.get(usize::from(pkt)).map(SharedBuf::len)
                })
                .max(1);
                let queued = self.queue_send(rest, n, &mut stalls);
                out.sent += queued as u32;
                out.failed += (n - queued.min(n)) as u32;
                n
            } else {
                out.failed += 1;
                1
            };
            rest = rest.get(n..).unwrap_or_default();
        }
        if self.ring.submit().is_err() {
            self.stats.submit_errors += 1;
        }
        // UDP sends usually complete during the submit: free their slots and buffers now.
        self.reap();
        self.scratch.clear();
        burst.clear();
        out
    }

    fn counter_descs(&self) -> &'static [CounterDesc] {
        &COUNTERS
    }

    fn read_counters(&self, out: &mut [u64]) {
        let s = self.stats();
        let values = [
            s.rx_nobufs,
            s.rearms,
            s.rx_errors,
            s.tx_sqes,
            s.tx_gso_batches,
            s.tx_errors,
            s.gso_disabled,
            s.submit_calls,
            s.submit_errors,
            u64::from(self.buffers_in_use()),
        ];
        for (o, v) in out.iter_mut().zip(values) {
            *o = v;
        }
    }

    /// Datagrams larger than a receive buffer are `TooBig`; datagrams the kernel dropped
    /// because the socket queue was full (`SO_RXQ_OVFL`) are `RxOverflow`.
    fn take_rx_drops(&mut self, drops: &mut [u64; DropReason::COUNT]) {
        let (t, o) = self.reported_drops;
        drops[DropReason::TooBig.index()] += self.stats.rx_truncated - t;
        drops[DropReason::RxOverflow.index()] += self.stats.rx_socket_drops - o;
        self.reported_drops = (self.stats.rx_truncated, self.stats.rx_socket_drops);
    }

    /// Sleeps in `io_uring_enter` until a completion (typically the next datagram) or
    /// `timeout`. Returns at once if datagrams are already waiting.
    fn idle_wait(&mut self, wait: IdleWait) {
        if !self.pending.is_empty() {
            return;
        }
        self.stats.rearms += self.ring.rearm();
        if self
            .ring
            .wait(wait.timeout, wait.burst, wait.coalesce)
            .is_err()
        {
            self.stats.submit_errors += 1;
        }
        self.reap();
    }
}
