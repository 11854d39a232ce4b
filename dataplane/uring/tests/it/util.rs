//! Shared helpers: small backends, std peers and a bounded receive pump.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use popmesh_media::backend::{Backend, Burst};
use popmesh_uring::{UringBackend, UringBuf, UringParams};

/// How long any test waits for traffic before failing.
pub const DEADLINE: Duration = Duration::from_secs(3);

/// Small rings so tests also exercise the limits.
pub fn params() -> UringParams {
    UringParams {
        ring_entries: 64,
        buffers: 64,
        buffer_size: 2048,
        gso: true,
        rcvbuf_bytes: 1 << 20,
        sndbuf_bytes: 1 << 20,
    }
}

pub fn open(params: &UringParams, addrs: &[&str]) -> UringBackend {
    let addrs: Vec<SocketAddr> = addrs
        .iter()
        .map(|a| a.parse().expect("test address"))
        .collect();
    UringBackend::open(params, &addrs).expect("open backend on loopback")
}

/// A std UDP socket on 127.0.0.1 with a receive timeout.
pub fn peer() -> UdpSocket {
    peer_on("127.0.0.1:0")
}

pub fn peer_on(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).expect("bind std peer");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s
}

pub fn burst() -> Burst<UringBuf> {
    Burst::with_capacity(64, 256)
}

/// Receives until `burst.pkts` holds `want` packets or the deadline passes; returns the count.
pub fn pump(b: &mut UringBackend, burst: &mut Burst<UringBuf>, want: usize) -> usize {
    let start = Instant::now();
    while burst.pkts.len() < want && start.elapsed() < DEADLINE {
        let missing = want - burst.pkts.len();
        if b.rx_burst(burst, missing) == 0 {
            b.idle_wait(crate::util::wait(Duration::from_millis(20)));
        }
    }
    burst.pkts.len()
}

/// Receives (releasing every buffer at once) until nothing arrived for `quiet`; returns the
/// payloads in arrival order.
pub fn drain(b: &mut UringBackend, quiet: Duration) -> Vec<Vec<u8>> {
    let mut burst = burst();
    let mut got = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if b.rx_burst(&mut burst, 64) > 0 {
            got.extend(burst.pkts.iter().map(|p| p.buf.as_ref().to_vec()));
            b.tx_burst(&mut burst);
            last = Instant::now();
        } else {
            b.idle_wait(crate::util::wait(Duration::from_millis(10)));
        }
    }
    got
}

/// Runs the backend until every buffer is back in the kernel's ring (sends completed).
pub fn settle(b: &mut UringBackend) {
    let start = Instant::now();
    while b.buffers_in_use() > 0 && start.elapsed() < DEADLINE {
        b.idle_wait(crate::util::wait(Duration::from_millis(5)));
    }
}

/// Reads one datagram; returns payload and sender.
pub fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = s.recv_from(&mut buf).expect("datagram before the deadline");
    buf.truncate(n);
    (buf, from)
}

/// A payload whose every byte identifies it.
pub fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

/// An idle wait of `timeout` that wakes on the first datagram.
pub fn wait(timeout: std::time::Duration) -> popmesh_media::IdleWait {
    popmesh_media::IdleWait {
        timeout,
        burst: 32,
        coalesce: std::time::Duration::ZERO,
    }
}
