//! Thin, safe wrappers over the system calls the binaries share: the
//! monotonic clock, process CPU time, batched receive (`recvmmsg`) and
//! batched send (`sendmmsg`) through nix's safe API.
//!
//! Two properties of nix 0.29 shape this module:
//! - `recvmmsg` headers must have room for the peer address
//!   ([`RecvHeaders`] uses `SockaddrStorage`): with `()` the kernel sets
//!   `msg_namelen` on the first call and every later call on the same
//!   headers fails with EFAULT (nix-rust/nix#2506).
//! - The number of messages `sendmmsg` sent is only available by iterating
//!   its results, which reads the headers' address slots. Those slots are
//!   never written on the send path, so iterating is only sound when the
//!   address type has no bytes: [`SendHeaders`] uses `()`, which in turn
//!   needs a *connected* socket per destination (no per-message address).

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::errno::Errno;
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::socket::{
    bind, getsockopt, recvmmsg, send, sendmmsg, setsockopt, socket, sockopt, AddressFamily,
    ControlMessage, MsgFlags, MultiHeaders, SockFlag, SockType, SockaddrStorage,
};
use nix::sys::time::TimeValLike;
use nix::time::{clock_gettime, ClockId};

/// Largest batch any binary passes to `recvmmsg` / `sendmmsg`.
pub const MAX_BATCH: usize = 64;

/// CLOCK_MONOTONIC in ns, the clock of probe send times.
pub fn monotonic_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC exists on every Linux kernel and the argument is valid");
    // Monotonic time is non-negative and far from 584 years.
    u64::try_from(now.num_nanoseconds()).unwrap_or(0)
}

/// User and system CPU time of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTime {
    /// User-mode CPU ns.
    pub user_ns: u64,
    /// Kernel-mode CPU ns.
    pub system_ns: u64,
}

impl CpuTime {
    /// `getrusage(RUSAGE_SELF)`.
    ///
    /// # Errors
    /// The errno of `getrusage` (not expected with these arguments).
    pub fn of_process() -> nix::Result<Self> {
        let usage = getrusage(UsageWho::RUSAGE_SELF)?;
        let ns = |tv: nix::sys::time::TimeVal| u64::try_from(tv.num_nanoseconds()).unwrap_or(0);
        Ok(Self {
            user_ns: ns(usage.user_time()),
            system_ns: ns(usage.system_time()),
        })
    }

    /// CPU used between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            system_ns: self.system_ns.saturating_sub(earlier.system_ns),
        }
    }

    /// User plus system ns.
    pub fn total_ns(&self) -> u64 {
        self.user_ns + self.system_ns
    }
}

/// Preallocated `recvmmsg` headers for up to [`MAX_BATCH`] datagrams.
#[derive(Debug)]
pub struct RecvHeaders(MultiHeaders<SockaddrStorage>);

impl Default for RecvHeaders {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvHeaders {
    /// Allocates headers (no control-message space).
    pub fn new() -> Self {
        Self(MultiHeaders::preallocate(MAX_BATCH, None))
    }
}

/// Preallocated `sendmmsg` headers for up to [`MAX_BATCH`] datagrams on a
/// connected socket.
#[derive(Debug)]
pub struct SendHeaders(MultiHeaders<()>);

impl Default for SendHeaders {
    fn default() -> Self {
        Self::new()
    }
}

impl SendHeaders {
    /// Allocates headers (no control-message space).
    pub fn new() -> Self {
        Self(MultiHeaders::preallocate(MAX_BATCH, None))
    }
}

/// [`MAX_BATCH`] receive slots in one allocation.
#[derive(Debug, Clone)]
pub struct RecvBuffers {
    data: Vec<u8>,
    slot_len: usize,
}

impl RecvBuffers {
    /// `MAX_BATCH` slots of `slot_len` bytes (at least 1); a longer datagram
    /// is truncated to `slot_len` and flagged.
    pub fn new(slot_len: usize) -> Self {
        let slot_len = slot_len.max(1);
        Self {
            data: vec![0; slot_len * MAX_BATCH],
            slot_len,
        }
    }

    /// The first `len` bytes of slot `slot` (empty if out of range).
    pub fn slot(&self, slot: usize, len: usize) -> &[u8] {
        let start = slot.saturating_mul(self.slot_len);
        let len = len.min(self.slot_len);
        self.data
            .get(start..start.saturating_add(len))
            .unwrap_or_default()
    }
}

/// One `recvmmsg` of up to `batch` (at most [`MAX_BATCH`]) datagrams into
/// `buffers`; calls `on_datagram(slot, bytes, truncated)` for each one, in
/// order, and returns how many arrived.
///
/// With a blocking socket pass `MSG_WAITFORONE` (otherwise the call waits for
/// a whole batch); with a non-blocking one `MSG_DONTWAIT`.
///
/// # Errors
/// The errno of `recvmmsg`, EAGAIN / EWOULDBLOCK when nothing arrived in time.
pub fn recv_batch<F>(
    fd: RawFd,
    headers: &mut RecvHeaders,
    buffers: &mut RecvBuffers,
    batch: usize,
    flags: MsgFlags,
    mut on_datagram: F,
) -> nix::Result<usize>
where
    F: FnMut(usize, &[u8], bool),
{
    let mut slots = buffers.data.chunks_exact_mut(buffers.slot_len);
    // Built per call because nix ties the slices' borrow to the results'
    // lifetime; it is an array on the stack, not an allocation.
    let mut iovs: [[IoSliceMut<'_>; 1]; MAX_BATCH] =
        std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
    let results = recvmmsg(
        fd,
        &mut headers.0,
        iovs.iter_mut().take(batch.clamp(1, MAX_BATCH)),
        flags,
        None,
    )?;
    let mut count = 0;
    for msg in results {
        let bytes = msg.iovs().next().unwrap_or_default();
        on_datagram(count, bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
        count += 1;
    }
    Ok(count)
}

/// A UDP socket bound to `local`, with SO_REUSEADDR when `reuse_addr` so
/// that several sockets connected to different peers can share one source
/// address and port.
///
/// # Errors
/// The errno of `socket`, `setsockopt` or `bind`.
pub fn bind_udp(local: SocketAddr, reuse_addr: bool) -> nix::Result<UdpSocket> {
    let family = match local {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if reuse_addr {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
    Ok(UdpSocket::from(fd))
}

/// Asks for a `bytes` receive buffer, beyond `net.core.rmem_max` when the
/// process may (SO_RCVBUFFORCE needs CAP_NET_ADMIN), and returns the size
/// the kernel reports afterwards (it doubles the request for bookkeeping).
///
/// # Errors
/// The errno of `getsockopt`; a refused request just leaves the size as is.
pub fn grow_receive_buffer<F: AsFd>(fd: &F, bytes: usize) -> nix::Result<usize> {
    if setsockopt(fd, sockopt::RcvBufForce, &bytes).is_err() {
        // Unprivileged: capped at rmem_max, which is still better than the default.
        let _ = setsockopt(fd, sockopt::RcvBuf, &bytes);
    }
    getsockopt(fd, sockopt::RcvBuf)
}

/// What [`send_batch`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendOutcome {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Bytes of those datagrams.
    pub bytes: u64,
    /// Datagrams dropped because a send failed.
    pub failed: u64,
    /// The last errno seen, if any.
    pub last_error: Option<Errno>,
}

/// Sends every datagram in `packets` on the connected socket `fd`: plain
/// `send` for one datagram, `sendmmsg` in chunks of [`MAX_BATCH`] otherwise.
/// A datagram whose send fails (e.g. ECONNREFUSED after an ICMP port
/// unreachable) is counted in `failed` and skipped, so this always finishes.
pub fn send_batch(
    fd: RawFd,
    headers: &mut SendHeaders,
    packets: &[[IoSlice<'_>; 1]],
) -> SendOutcome {
    let mut outcome = SendOutcome::default();
    if let [[single]] = packets {
        let result = loop {
            match send(fd, single, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        match result {
            Ok(n) => {
                outcome.sent += 1;
                outcome.bytes += n as u64;
            }
            Err(e) => {
                outcome.failed += 1;
                outcome.last_error = Some(e);
            }
        }
        return outcome;
    }
    let no_addresses = [None::<()>; MAX_BATCH];
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let mut rest = packets;
    while !rest.is_empty() {
        let n = rest.len().min(MAX_BATCH);
        let chunk = rest.get(..n).unwrap_or_default();
        let addresses = no_addresses.get(..n).unwrap_or_default();
        let advanced = match sendmmsg(
            fd,
            &mut headers.0,
            chunk,
            addresses,
            no_cmsgs,
            MsgFlags::empty(),
        ) {
            // Sound to iterate: the address type is `()` (see module docs).
            Ok(results) => match results.count() {
                0 => {
                    outcome.failed += 1;
                    1
                }
                k => {
                    // sendmmsg sends a prefix of the chunk.
                    outcome.sent += k as u64;
                    outcome.bytes += chunk
                        .iter()
                        .take(k)
                        .map(|[iov]| iov.len() as u64)
                        .sum::<u64>();
                    k
                }
            },
            Err(Errno::EINTR) => 0,
            Err(e) => {
                // The first datagram of the chunk failed; skip it.
                outcome.failed += 1;
                outcome.last_error = Some(e);
                1
            }
        };
        rest = rest.get(advanced..).unwrap_or_default();
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        rx.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set timeout");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        tx.connect(rx.local_addr().expect("local addr"))
            .expect("connect");
        (rx, tx)
    }

    #[test]
    fn batches_round_trip_over_loopback() {
        let (rx, tx) = pair();
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let iovs: Vec<[IoSlice<'_>; 1]> = payloads.iter().map(|p| [IoSlice::new(p)]).collect();
        let mut send_headers = SendHeaders::new();
        let out = send_batch(tx.as_raw_fd(), &mut send_headers, &iovs);
        assert_eq!(
            out,
            SendOutcome {
                sent: 100,
                bytes: 5050,
                failed: 0,
                last_error: None
            }
        );

        let mut headers = RecvHeaders::new();
        let mut buffers = RecvBuffers::new(64);
        let mut got = Vec::new();
        while got.len() < 100 {
            let n = recv_batch(
                rx.as_raw_fd(),
                &mut headers,
                &mut buffers,
                32,
                MsgFlags::MSG_WAITFORONE,
                |_, b, t| got.push((b.to_vec(), t)),
            )
            .expect("datagrams are queued");
            assert!((1..=32).contains(&n));
        }
        for (i, (bytes, truncated)) in got.iter().enumerate() {
            let want = &payloads[i];
            assert_eq!(*truncated, want.len() > 64, "datagram {i}");
            assert_eq!(bytes[..], want[..want.len().min(64)], "datagram {i}");
        }
        // Nothing left: a non-blocking receive reports EAGAIN.
        let err = recv_batch(
            rx.as_raw_fd(),
            &mut headers,
            &mut buffers,
            32,
            MsgFlags::MSG_DONTWAIT,
            |_, _, _| {},
        );
        assert_eq!(err, Err(Errno::EAGAIN));
    }

    #[test]
    fn single_datagram_and_failures_are_counted() {
        let (rx, tx) = pair();
        let mut headers = SendHeaders::new();
        let one = [[IoSlice::new(b"x")]];
        assert_eq!(send_batch(tx.as_raw_fd(), &mut headers, &one).sent, 1);
        // Close the receiver: the ICMP port unreachable makes a later send fail.
        drop(rx);
        let mut failed = 0;
        for _ in 0..20 {
            failed += send_batch(tx.as_raw_fd(), &mut headers, &one).failed;
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(failed >= 1, "ECONNREFUSED must be counted, not ignored");
    }

    #[test]
    fn cpu_time_moves_forward() {
        let before = CpuTime::of_process().expect("getrusage");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = CpuTime::of_process().expect("getrusage").since(&before);
        assert!(used.total_ns() > 0);
        assert!(monotonic_ns() > 0);
    }
}
