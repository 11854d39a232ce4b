//! More traffic than receive buffers: ENOBUFS, socket-queue drops, and recovery.

use std::time::Duration;

use popmesh_media::backend::Backend;
use popmesh_uring::UringParams;

use crate::util::{self, burst, open, peer, pump};

#[test]
fn flood_beyond_the_buffer_ring_is_counted_and_receive_recovers() {
    let p = UringParams {
        buffers: 8,
        // Room for a few dozen small datagrams: enough backlog to show receive resuming, small
        // enough that 200 overflow it.
        rcvbuf_bytes: 32 << 10,
        ..util::params()
    };
    let mut b = open(&p, &["127.0.0.1:0"]);
    let local = b.local_addr(0).expect("port");
    let client = peer();
    const SENT: usize = 200;
    for i in 0..SENT {
        client
            .send_to(&(i as u32).to_be_bytes(), local)
            .expect("send");
    }
    // Hold every buffer, as a stalled pipeline would.
    let mut held = burst();
    assert_eq!(pump(&mut b, &mut held, 8), 8);
    let mut extra = burst();
    b.idle_wait(crate::util::wait(Duration::from_millis(50)));
    assert_eq!(
        b.rx_burst(&mut extra, 64),
        0,
        "no buffer left to receive into"
    );
    let stalled = b.stats();
    assert!(stalled.rx_nobufs >= 1, "ENOBUFS counted: {stalled:?}");
    assert_eq!(b.buffers_in_use(), 8);

    // Release: receive resumes with what the socket queued meanwhile.
    let mut seqs: Vec<u32> = held
        .pkts
        .iter()
        .map(|p| u32::from_be_bytes(p.buf.as_ref().try_into().expect("4 bytes")))
        .collect();
    b.tx_burst(&mut held);
    seqs.extend(
        util::drain(&mut b, Duration::from_millis(200))
            .iter()
            .map(|d| u32::from_be_bytes(d.as_slice().try_into().expect("4 bytes"))),
    );
    assert!(
        seqs.len() >= 24,
        "the backlog queued during the stall was received after the release: {}",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert!(
        seqs.len() < SENT,
        "the tiny socket queue must have overflowed"
    );

    // One more datagram carries the socket's cumulative drop count.
    client.send_to(b"marker", local).expect("send");
    let mut last = burst();
    assert_eq!(pump(&mut b, &mut last, 1), 1);
    assert_eq!(
        last.pkts[0].buf.as_ref(),
        b"marker",
        "receive works after the flood"
    );
    let s = b.stats();
    assert_eq!(
        s.rx_socket_drops as usize + seqs.len(),
        SENT,
        "every datagram was either received or counted as dropped: {s:?}"
    );
    assert!(s.rearms >= 1, "receive was re-armed: {s:?}");
    println!("flood: received {} of {SENT}, {s:?}", seqs.len());
}
