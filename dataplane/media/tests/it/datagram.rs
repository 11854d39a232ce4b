//! Socket framing: payload plus addresses.

use popmesh_media::testkit::rtp_packet;
use popmesh_media::{Burst, DropReason, Pipeline, PipelineConfig, Pkt, Tx};
use proptest::prelude::*;

use crate::support::*;

fn run(
    t: &popmesh_media::FlowTable,
    pkts: Vec<Pkt<Vec<u8>>>,
) -> (Burst<Vec<u8>>, popmesh_media::BurstCounts) {
    let reader = t.reader().reader();
    let mut p = Pipeline::new(PipelineConfig::datagram());
    let mut b = Burst::with_capacity(32, 256);
    b.pkts.extend(pkts);
    let g = reader.enter().expect("table");
    let c = p.process(1_000_000, &g, &mut b).clone();
    drop(g);
    (b, c)
}

const PUB: &str = "10.0.0.1:5000";
const ING: &str = "127.0.0.1:40000";

#[test]
fn relay_and_fan_out_send_one_buffer_to_every_subscriber() {
    let t = table(vec![
        spec(
            0,
            ING,
            None,
            &["127.0.0.1:41000", "127.0.0.1:41001", "127.0.0.1:41002"],
        ),
        spec(1, "127.0.0.1:40002", None, &["[::1]:6000"]),
    ]);
    let (b, c) = run(
        &t,
        vec![
            Pkt::datagram(rtp_packet(1, 9, 100), 0, addr(PUB), addr(ING)),
            Pkt::datagram(rtp_packet(1, 9, 100), 1, addr(PUB), addr("127.0.0.1:40002")),
        ],
    );
    assert_eq!(c.total_drops(), 0);
    assert_eq!(c.rtp, 2);
    assert_eq!(
        b.tx,
        vec![
            Tx {
                pkt: 0,
                port: 0,
                dst: addr("127.0.0.1:41000")
            },
            Tx {
                pkt: 0,
                port: 0,
                dst: addr("127.0.0.1:41001")
            },
            Tx {
                pkt: 0,
                port: 0,
                dst: addr("127.0.0.1:41002")
            },
            Tx {
                pkt: 1,
                port: 0,
                dst: addr("[::1]:6000")
            },
        ]
    );
}

#[test]
fn the_first_sender_is_latched_and_others_are_dropped() {
    let t = table(vec![spec(0, ING, None, &["127.0.0.1:41000"])]);
    let (b, c) = run(
        &t,
        vec![
            Pkt::datagram(rtp_packet(1, 9, 10), 0, addr(PUB), addr(ING)),
            Pkt::datagram(rtp_packet(2, 9, 10), 0, addr("10.0.0.2:5000"), addr(ING)),
            Pkt::datagram(rtp_packet(3, 9, 10), 0, addr("10.0.0.1:5001"), addr(ING)),
            Pkt::datagram(rtp_packet(4, 9, 10), 0, addr(PUB), addr(ING)),
        ],
    );
    assert_eq!(c.drops[DropReason::SourceMismatch.index()], 2);
    assert_eq!(b.tx.iter().map(|t| t.pkt).collect::<Vec<_>>(), vec![0, 3]);
    let reader = t.reader().reader();
    let g = reader.enter().expect("table");
    let f = g.iter().next().expect("flow");
    assert_eq!(f.source(), Some(addr(PUB)));
    assert_eq!(
        f.tallies.drops.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let s: Vec<_> = f.ssrc_stats().collect();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].expected(), s[0].lost()), (4, 2));
}

#[test]
fn a_programmed_source_rejects_everyone_else_even_first() {
    let t = table(vec![spec(0, ING, Some(PUB), &["127.0.0.1:41000"])]);
    let (b, c) = run(
        &t,
        vec![
            Pkt::datagram(rtp_packet(1, 9, 10), 0, addr("10.9.9.9:1"), addr(ING)),
            Pkt::datagram(rtp_packet(2, 9, 10), 0, addr(PUB), addr(ING)),
        ],
    );
    assert_eq!(c.drops[DropReason::SourceMismatch.index()], 1);
    assert_eq!(b.tx.len(), 1);
}

#[test]
fn bad_datagrams_are_typed_drops() {
    let t = table(vec![spec(0, ING, None, &["127.0.0.1:41000"])]);
    let (b, c) = run(
        &t,
        vec![
            Pkt::datagram(rtp_packet(1, 9, 10), 0, addr(PUB), addr(ING)),
            Pkt::datagram(vec![], 0, addr(PUB), addr(ING)),
            Pkt::datagram(vec![0, 1, 0, 0], 0, addr(PUB), addr(ING)),
            Pkt::datagram(vec![0x80, 0x60, 0], 0, addr(PUB), addr(ING)),
            Pkt::datagram(rtp_packet(1, 9, 10), 0, addr(PUB), addr("127.0.0.1:40001")),
            // RTCP receiver report, valid: forwarded.
            Pkt::datagram(vec![0x80, 201, 0, 1, 0, 0, 0, 9], 0, addr(PUB), addr(ING)),
        ],
    );
    assert_eq!(c.drops[DropReason::Truncated.index()], 1);
    assert_eq!(c.drops[DropReason::NotMedia.index()], 1);
    assert_eq!(c.drops[DropReason::BadRtp.index()], 1);
    assert_eq!(c.drops[DropReason::NoFlow.index()], 1);
    assert_eq!(c.rtcp, 1);
    assert_eq!(b.tx.iter().map(|t| t.pkt).collect::<Vec<_>>(), vec![0, 5]);
}

proptest! {
    /// Whatever arrives, every packet is either forwarded or counted as a drop, never both,
    /// never neither, and nothing panics.
    #[test]
    fn every_datagram_is_forwarded_or_counted(payloads in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..64), 1..32)) {
        let t = table(vec![spec(0, ING, None, &["127.0.0.1:41000"])]);
        let pkts = payloads.into_iter().map(|p| Pkt::datagram(p, 0, addr(PUB), addr(ING))).collect::<Vec<_>>();
        let n = pkts.len() as u64;
        let (b, c) = run(&t, pkts);
        prop_assert_eq!(b.tx.len() as u64 + c.total_drops(), n);
        prop_assert_eq!(c.rx, n);
    }
}
