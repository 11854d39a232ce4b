//! Send path: relay, fan-out, GSO, validation, exceptions.

use std::net::SocketAddr;

use popmesh_media::backend::{Backend, Tx};
use popmesh_uring::UringParams;

use crate::util::{self, burst, open, params, peer, pump, recv, settle};

#[test]
fn relays_a_datagram_to_one_destination() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let (client, sink) = (peer(), peer());
    client
        .send_to(&util::payload(7, 1200), local)
        .expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    burst.tx.push(Tx {
        pkt: 0,
        port: 0,
        dst: sink.local_addr().expect("addr"),
    });
    let out = b.tx_burst(&mut burst);
    assert_eq!((out.sent, out.failed, out.exceptions), (1, 0, 0));
    assert!(burst.pkts.is_empty() && burst.tx.is_empty());
    let (data, from) = recv(&sink);
    assert_eq!(data, util::payload(7, 1200));
    assert_eq!(from, local, "sent from the worker's socket");
    settle(&mut b);
    assert_eq!(
        b.buffers_in_use(),
        0,
        "buffer returned after the send completed"
    );
    let s = b.stats();
    assert_eq!((s.tx_sqes, s.tx_datagrams, s.tx_errors), (1, 1, 0));
}

#[test]
fn pipeline_can_rewrite_the_payload_in_place() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let (client, sink) = (peer(), peer());
    client.send_to(b"ssrc=1111", local).expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    burst.pkts[0].buf.as_mut()[5..].copy_from_slice(b"2222");
    burst.tx.push(Tx {
        pkt: 0,
        port: 0,
        dst: sink.local_addr().expect("addr"),
    });
    b.tx_burst(&mut burst);
    assert_eq!(recv(&sink).0, b"ssrc=2222");
}

#[test]
fn fans_out_one_buffer_to_three_sockets() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let client = peer();
    let sinks = [peer(), peer(), peer()];
    client.send_to(&util::payload(3, 900), local).expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    for s in &sinks {
        burst.tx.push(Tx {
            pkt: 0,
            port: 0,
            dst: s.local_addr().expect("addr"),
        });
    }
    let out = b.tx_burst(&mut burst);
    assert_eq!(out.sent, 3);
    for s in &sinks {
        let (data, from) = recv(s);
        assert_eq!(data, util::payload(3, 900));
        assert_eq!(from, local);
    }
    settle(&mut b);
    assert_eq!(
        b.buffers_in_use(),
        0,
        "the shared buffer came back once, after all sends"
    );
    let s = b.stats();
    assert_eq!(
        (s.tx_sqes, s.tx_gso_batches),
        (3, 0),
        "three destinations, three sendmsg"
    );
}

fn relay_mixed_sizes(gso: bool) -> (Vec<Vec<u8>>, popmesh_uring::UringStats) {
    let p = UringParams { gso, ..params() };
    let mut b = open(&p, &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let (client, sink) = (peer(), peer());
    let sizes = [1000, 1000, 1000, 1000, 1000, 300];
    for (i, len) in sizes.iter().enumerate() {
        client
            .send_to(&util::payload(i as u8 * 40, *len), local)
            .expect("send");
    }
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, sizes.len()), sizes.len());
    let dst = sink.local_addr().expect("addr");
    for pkt in 0..sizes.len() as u16 {
        burst.tx.push(Tx { pkt, port: 0, dst });
    }
    let out = b.tx_burst(&mut burst);
    assert_eq!(out.sent as usize, sizes.len());
    let got: Vec<Vec<u8>> = sizes.iter().map(|_| recv(&sink).0).collect();
    let expected: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, len)| util::payload(i as u8 * 40, *len))
        .collect();
    assert_eq!(got, expected, "separate, intact datagrams in order");
    settle(&mut b);
    assert_eq!(b.buffers_in_use(), 0);
    (got, b.stats())
}

#[test]
fn gso_batch_arrives_as_separate_datagrams_of_the_right_sizes() {
    let (_, s) = relay_mixed_sizes(true);
    assert_eq!(
        (
            s.tx_sqes,
            s.tx_gso_batches,
            s.tx_datagrams,
            s.tx_errors,
            s.gso_disabled
        ),
        (1, 1, 6, 0, 0),
        "six datagrams in one sendmsg: {s:?}"
    );
}

#[test]
fn without_gso_every_datagram_is_its_own_sendmsg() {
    let (_, s) = relay_mixed_sizes(false);
    assert_eq!((s.tx_sqes, s.tx_gso_batches, s.tx_datagrams), (6, 0, 6));
}

#[test]
fn a_burst_is_one_submit() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let client = peer();
    let sinks: Vec<_> = (0..8).map(|_| peer()).collect();
    client.send_to(b"fan", local).expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    for s in &sinks {
        burst.tx.push(Tx {
            pkt: 0,
            port: 0,
            dst: s.local_addr().expect("addr"),
        });
    }
    let before = b.stats().submit_calls;
    assert_eq!(b.tx_burst(&mut burst).sent, 8);
    assert_eq!(
        b.stats().submit_calls - before,
        1,
        "8 sendmsg, one io_uring_enter"
    );
    for s in &sinks {
        assert_eq!(recv(s).0, b"fan");
    }
}

#[test]
fn more_sends_than_slots_still_go_out() {
    // 64 send slots, 200 destinations: the burst must wait for slots, not fail or spin.
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let client = peer();
    let sink = peer();
    let dst = sink.local_addr().expect("addr");
    client.send_to(b"many", local).expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    // Alternate two ports' worth of destinations so nothing coalesces.
    let other_sink = peer();
    let other: SocketAddr = other_sink.local_addr().expect("addr");
    for i in 0..200 {
        burst.tx.push(Tx {
            pkt: 0,
            port: 0,
            dst: if i % 2 == 0 { dst } else { other },
        });
    }
    let out = b.tx_burst(&mut burst);
    assert_eq!((out.sent, out.failed), (200, 0));
    for _ in 0..100 {
        assert_eq!(recv(&sink).0, b"many");
    }
    settle(&mut b);
    assert_eq!(b.buffers_in_use(), 0);
}

#[test]
fn impossible_sends_fail_without_touching_the_kernel() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let sink = peer();
    peer().send_to(b"bad", local).expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 1), 1);
    let dst = sink.local_addr().expect("addr");
    burst.tx.push(Tx {
        pkt: 5,
        port: 0,
        dst,
    }); // no such packet
    burst.tx.push(Tx {
        pkt: 0,
        port: 9,
        dst,
    }); // no such socket
    burst.tx.push(Tx {
        pkt: 0,
        port: 0,
        dst: "[::1]:9".parse().expect("addr"), // v6 destination from a v4 socket
    });
    burst.tx.push(Tx {
        pkt: 0,
        port: 0,
        dst: "127.0.0.1:0".parse().expect("addr"), // port 0
    });
    let out = b.tx_burst(&mut burst);
    assert_eq!((out.sent, out.failed), (0, 4));
    assert!(burst.pkts.is_empty());
    assert_eq!(b.buffers_in_use(), 0);
    assert_eq!(b.stats().tx_sqes, 0);
}

#[test]
fn exceptions_are_counted_and_dropped() {
    let mut b = open(&params(), &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let client = peer();
    client.send_to(b"a", local).expect("send");
    client.send_to(b"b", local).expect("send");
    let mut burst = burst();
    assert_eq!(pump(&mut b, &mut burst, 2), 2);
    burst.exceptions.extend([0, 1]);
    let out = b.tx_burst(&mut burst);
    assert_eq!((out.sent, out.failed, out.exceptions), (0, 0, 2));
    assert!(burst.pkts.is_empty() && burst.exceptions.is_empty());
    assert_eq!(b.stats().exceptions_dropped, 2);
    assert_eq!(b.buffers_in_use(), 0);
}
