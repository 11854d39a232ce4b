//! Receive path: payloads, addresses, truncation, idle behaviour.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use popmesh_media::backend::{Backend, Burst};
use popmesh_uring::{UringBackend, UringParams};

use crate::util::{self, burst, open, params, peer, pump};

#[test]
fn datagrams_arrive_with_payload_source_and_destination() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port 0");
    let client = peer();
    for tag in 1..=3u8 {
        client
            .send_to(&util::payload(tag, 100 * usize::from(tag)), local)
            .expect("send");
    }
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 3), 3);
    for (i, pkt) in burst.pkts.iter().enumerate() {
        let tag = i as u8 + 1;
        assert_eq!(pkt.buf.as_ref(), util::payload(tag, 100 * usize::from(tag)));
        assert_eq!(pkt.src, client.local_addr().expect("addr"));
        assert_eq!(pkt.dst, local);
        assert_eq!(pkt.port, 0);
    }
    assert_eq!(
        b.buffers_in_use(),
        3,
        "the pipeline holds three ring buffers"
    );
    b.tx_burst(&mut burst);
    assert!(burst.pkts.is_empty());
    assert_eq!(
        b.buffers_in_use(),
        0,
        "unsent buffers go straight back to the kernel"
    );
    let s = b.stats();
    assert_eq!(s.rx_datagrams, 3);
    assert_eq!(
        (s.rearms, s.rx_nobufs, s.rx_errors),
        (0, 0, 0),
        "one multishot receive served every datagram"
    );
}

#[test]
fn wildcard_socket_reports_the_address_each_datagram_was_sent_to() {
    let mut b = open(&params(), &["0.0.0.0:0"]);
    let port = b.local_addr(0).expect("port").port();
    let client = peer();
    // All of 127.0.0.0/8 is local on Linux, so these are two distinct destination addresses.
    let targets: [SocketAddr; 2] = [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from(([127, 0, 0, 2], port)),
    ];
    for t in targets {
        client.send_to(b"x", t).expect("send");
    }
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 2), 2);
    let dsts: Vec<SocketAddr> = burst.pkts.iter().map(|p| p.dst).collect();
    assert_eq!(dsts, targets);
}

#[test]
fn wildcard_ipv6_socket_reports_the_destination() {
    let Ok(client) = std::net::UdpSocket::bind("[::1]:0") else {
        println!("skipped: needs IPv6 loopback (::1)");
        return;
    };
    let mut b = open(&params(), &["[::]:0"]);
    let port = b.local_addr(0).expect("port").port();
    let target: SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    client.send_to(b"six", target).expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    let pkt = &burst.pkts[0];
    assert_eq!(pkt.dst, target);
    assert_eq!(pkt.src, client.local_addr().expect("addr"));
    assert_eq!(pkt.buf.as_ref(), b"six");
}

#[test]
fn each_socket_reports_its_own_port_id() {
    let mut b = open(&params(), &["127.0.0.1:0", "127.0.0.1:0"]);
    let client = peer();
    client
        .send_to(b"one", b.local_addr(1).expect("port 1"))
        .expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    assert_eq!(burst.pkts[0].port, 1);
    assert_eq!(burst.pkts[0].dst, b.local_addr(1).expect("port 1"));
}

#[test]
fn oversized_datagram_is_counted_and_dropped() {
    let p = UringParams {
        buffer_size: 256,
        ..params()
    };
    let mut b = open(&p, &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let client = peer();
    // max_payload() is the guaranteed size for both families; IPv4 fits a little more, so
    // overshoot by more than the 12-byte difference in address size.
    client
        .send_to(&util::payload(1, p.max_payload() + 64), local)
        .expect("send");
    client
        .send_to(&util::payload(2, p.max_payload()), local)
        .expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    assert_eq!(
        burst.pkts[0].buf.as_ref(),
        util::payload(2, p.max_payload())
    );
    assert_eq!(b.stats().rx_truncated, 1);
}

#[test]
fn rx_burst_respects_max() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let client = peer();
    for i in 0..10u8 {
        client.send_to(&[i], local).expect("send");
    }
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 10), 10);
    b.tx_burst(&mut burst);
    for i in 0..10u8 {
        client.send_to(&[i], local).expect("send");
    }
    thread::sleep(Duration::from_millis(50));
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 10 && start.elapsed() < util::DEADLINE {
        let n = b.rx_burst(&mut burst, 4);
        assert!(n <= 4, "rx_burst returned {n} > max");
        assert_eq!(burst.pkts.len(), n);
        got.extend(burst.pkts.iter().map(|p| p.buf.as_ref()[0]));
        b.tx_burst(&mut burst);
        if n == 0 {
            b.idle_wait(crate::util::wait(Duration::from_millis(20)));
        }
    }
    assert_eq!(got, (0..10).collect::<Vec<u8>>(), "in order, none lost");
}

#[test]
fn idle_wait_sleeps_until_timeout_without_traffic() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let start = Instant::now();
    b.idle_wait(crate::util::wait(Duration::from_millis(150)));
    assert!(
        start.elapsed() >= Duration::from_millis(140),
        "returned after {:?}",
        start.elapsed()
    );
}

#[test]
fn idle_wait_wakes_on_the_first_datagram() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        peer().send_to(b"wake", local).expect("send");
    });
    let start = Instant::now();
    b.idle_wait(crate::util::wait(Duration::from_secs(10)));
    let waited = start.elapsed();
    sender.join().expect("sender thread");
    assert!(
        waited < Duration::from_secs(5),
        "slept {waited:?} despite traffic"
    );
    let mut burst: Burst<_> = burst();
    assert_eq!(b.rx_burst(&mut burst, 8), 1);
    assert_eq!(burst.pkts[0].buf.as_ref(), b"wake");
}

#[test]
fn idle_polling_costs_no_syscalls() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let mut burst = burst();
    b.rx_burst(&mut burst, 32);
    let before = b.stats().submit_calls;
    for _ in 0..1000 {
        assert_eq!(b.rx_burst(&mut burst, 32), 0);
        b.tx_burst(&mut burst);
    }
    let calls = b.stats().submit_calls - before;
    assert!(
        calls <= 1,
        "{calls} io_uring_enter calls for 1000 idle turns"
    );
}

#[test]
fn buffers_outlive_the_backend() {
    let mut b: UringBackend = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    peer().send_to(b"still here", local).expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    drop(b);
    let pkt = burst.pkts.pop().expect("one packet");
    assert_eq!(pkt.buf.as_ref(), b"still here");
}

#[test]
fn coalescing_waits_for_a_fuller_burst_but_not_past_its_window() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let addr = b.local_addr(0).expect("port");
    peer().send_to(b"first", addr).expect("send");
    let start = Instant::now();
    b.idle_wait(popmesh_media::IdleWait {
        timeout: Duration::from_secs(5),
        burst: 32,
        coalesce: Duration::from_millis(30),
    });
    let waited = start.elapsed();
    // One datagram is not a burst: the wait lasts about the window, far less than the timeout.
    assert!(waited >= Duration::from_millis(20), "woke after {waited:?}");
    assert!(waited < Duration::from_secs(4), "woke after {waited:?}");
    let mut burst = burst();
    assert_eq!(b.rx_burst(&mut burst, 32), 1);
    b.tx_burst(&mut burst);
}
