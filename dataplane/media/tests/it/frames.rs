//! L2 framing: parse, rewrite in place, duplicate for fan-out, punt the rest.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use popmesh_media::flow::{FlowKey, FlowSpec, Target};
use popmesh_media::testkit::{rtp_packet, udp_frame};
use popmesh_media::{
    Burst, BurstCounts, DropReason, Egress, Framing, PacketBuf, Pipeline, PipelineConfig, Pkt,
};
use popmesh_wire::{ethernet, ipv4, ipv6, parse_l2, udp};
use proptest::prelude::*;

use crate::support::*;

const GW: [u8; 6] = [2, 0, 0, 0, 0, 0xff];
const OWN: [u8; 6] = [2, 0, 0, 0, 0, 0xee];

fn pipeline() -> Pipeline {
    Pipeline::new(PipelineConfig {
        framing: Framing::Ethernet,
        egress: vec![
            Egress {
                addr: addr("192.0.2.1:40000"),
                mac: OWN,
                gateway_mac: GW,
                mtu: 1500,
            },
            Egress {
                addr: addr("[2001:db8::1]:40000"),
                mac: OWN,
                gateway_mac: GW,
                mtu: 1280,
            },
        ],
        media_ports: 40000..=49999,
    })
}

fn run(specs: Vec<FlowSpec>, frames: Vec<Vec<u8>>) -> (Burst<Vec<u8>>, BurstCounts) {
    let t = table(specs);
    let reader = t.reader().reader();
    let mut p = pipeline();
    let mut b = Burst::with_capacity(32, 256);
    b.pkts.extend(frames.into_iter().map(|f| Pkt::frame(f, 0)));
    let g = reader.enter().expect("table");
    let c = p.process(5_000_000, &g, &mut b).clone();
    drop(g);
    (b, c)
}

/// Parses a rewritten frame and checks every checksum; returns (src, dst, ttl, dst mac).
fn inspect(frame: &[u8]) -> (SocketAddr, SocketAddr, u8, [u8; 6]) {
    let l2 = parse_l2(frame).expect("l2");
    let eth = ethernet::Frame::new_checked(frame).expect("eth");
    assert_eq!(eth.src_addr().0, OWN);
    let l3 = &frame[l2.l3_offset..];
    if l2.ethertype == ethernet::ethertype::IPV4 {
        let ip = ipv4::Packet::new_checked(l3).expect("ipv4");
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        let u = udp::Packet::new_checked(ip.payload()).expect("udp");
        assert!(
            u.verify_checksum_v4(ip.src_addr(), ip.dst_addr()),
            "UDP checksum"
        );
        (
            SocketAddr::new(IpAddr::V4(ip.src_addr()), u.src_port()),
            SocketAddr::new(IpAddr::V4(ip.dst_addr()), u.dst_port()),
            ip.ttl(),
            eth.dst_addr().0,
        )
    } else {
        let ip = ipv6::Packet::new_checked(l3).expect("ipv6");
        let (_, off) = ip.upper_layer().expect("upper");
        let u = udp::Packet::new_checked(&l3[off..]).expect("udp");
        assert!(
            u.verify_checksum_v6(ip.src_addr(), ip.dst_addr()),
            "UDP checksum"
        );
        (
            SocketAddr::new(IpAddr::V6(ip.src_addr()), u.src_port()),
            SocketAddr::new(IpAddr::V6(ip.dst_addr()), u.dst_port()),
            ip.hop_limit(),
            eth.dst_addr().0,
        )
    }
}

const PUB: &str = "198.51.100.7:5000";
const ING: &str = "192.0.2.1:40000";

#[test]
fn relay_rewrites_addresses_ports_macs_and_ttl_with_valid_checksums() {
    for vlan in [None, Some(42)] {
        let rtp = rtp_packet(7, 1, 200);
        let f = udp_frame(addr(PUB), addr(ING), &rtp, vlan);
        let mut s = spec(0, ING, None, &["203.0.113.9:6000"]);
        s.targets[0].mac = Some([2, 0, 0, 0, 0, 9]);
        let (b, c) = run(vec![s], vec![f]);
        assert_eq!(c.total_drops(), 0);
        assert_eq!(b.tx.len(), 1);
        let out = &b.pkts[usize::from(b.tx[0].pkt)].buf;
        let (src, dst, ttl, mac) = inspect(out);
        assert_eq!(
            (src, dst, ttl, mac),
            (
                addr("192.0.2.1:40000"),
                addr("203.0.113.9:6000"),
                63,
                [2, 0, 0, 0, 0, 9]
            )
        );
        assert!(out.ends_with(&rtp), "payload intact");
        assert_eq!(parse_l2(out).expect("l2").vlan, vlan);
    }
}

#[test]
fn ipv6_relay_keeps_the_udp_checksum_valid() {
    let rtp = rtp_packet(7, 1, 200);
    let f = udp_frame(
        addr("[2001:db8::7]:5000"),
        addr("[2001:db8::1]:40000"),
        &rtp,
        None,
    );
    let mut s = spec(0, "[2001:db8::1]:40000", None, &["[2001:db8::99]:6000"]);
    s.targets[0].port = 1;
    let (b, c) = run(vec![s], vec![f]);
    assert_eq!(c.total_drops(), 0, "{c:?}");
    let (src, dst, hops, mac) = inspect(&b.pkts[usize::from(b.tx[0].pkt)].buf);
    assert_eq!(
        (src, dst, hops, mac),
        (
            addr("[2001:db8::1]:40000"),
            addr("[2001:db8::99]:6000"),
            63,
            GW
        )
    );
}

#[test]
fn fan_out_makes_one_correct_frame_per_subscriber() {
    let rtp = rtp_packet(9, 1, 300);
    let subs = ["203.0.113.1:6000", "203.0.113.2:6001", "203.0.113.3:6002"];
    let (b, c) = run(
        vec![spec(0, ING, None, &subs)],
        vec![udp_frame(addr(PUB), addr(ING), &rtp, None)],
    );
    assert_eq!(c.total_drops(), 0);
    assert_eq!(c.tx, 3);
    let mut dsts: Vec<SocketAddr> =
        b.tx.iter()
            .map(|t| {
                let buf = &b.pkts[usize::from(t.pkt)].buf;
                assert!(buf.ends_with(&rtp));
                let (_, dst, _, _) = inspect(buf);
                assert_eq!(dst, t.dst);
                dst
            })
            .collect();
    dsts.sort();
    assert_eq!(dsts, subs.iter().map(|s| addr(s)).collect::<Vec<_>>());
}

/// A buffer that keeps the `duplicate_headers` contract and nothing more, like a DPDK header
/// mbuf chained to a shared payload: after the first call the original and every copy expose
/// only their first `header_len` bytes, and the payload behind them is shared and immutable.
/// A pipeline that read the payload after copying, or wrote past the headers, could not.
#[derive(Debug)]
struct Chained {
    head: Vec<u8>,
    tail: Rc<Vec<u8>>,
}

impl Chained {
    fn new(frame: Vec<u8>) -> Self {
        Chained {
            head: frame,
            tail: Rc::new(Vec::new()),
        }
    }

    /// The frame as it goes on the wire: headers, then the (shared) payload.
    fn wire(&self) -> Vec<u8> {
        [&self.head[..], &self.tail[..]].concat()
    }
}

impl AsRef<[u8]> for Chained {
    fn as_ref(&self) -> &[u8] {
        &self.head
    }
}

impl AsMut<[u8]> for Chained {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.head
    }
}

impl PacketBuf for Chained {
    fn duplicate_headers(&mut self, header_len: usize) -> Option<Self> {
        if self.tail.is_empty() {
            self.tail = Rc::new(self.head.split_off(header_len));
        }
        assert_eq!(
            self.head.len(),
            header_len,
            "header length changed between copies"
        );
        Some(Chained {
            head: self.head.clone(),
            tail: Rc::clone(&self.tail),
        })
    }
}

#[test]
fn fan_out_copies_only_headers_and_shares_the_payload() {
    let subs = ["203.0.113.1:6000", "203.0.113.2:6001", "203.0.113.3:6002"];
    let subs6 = ["[2001:db8::a]:6000", "[2001:db8::b]:6001"];
    for (from, to, subs, vlan) in [
        (PUB, ING, &subs[..], None),
        (PUB, ING, &subs[..], Some(7)),
        (
            "[2001:db8::7]:5000",
            "[2001:db8::1]:40000",
            &subs6[..],
            None,
        ),
    ] {
        let rtp = rtp_packet(11, 1, 300);
        let frame = udp_frame(addr(from), addr(to), &rtp, vlan);
        let mut s = spec(0, to, None, subs);
        for t in &mut s.targets {
            t.port = u16::from(t.addr.is_ipv6());
        }
        let t = table(vec![s]);
        let reader = t.reader().reader();
        let mut p = pipeline();
        let mut b: Burst<Chained> = Burst::with_capacity(32, 256);
        b.pkts.push(Pkt::frame(Chained::new(frame.clone()), 0));
        let g = reader.enter().expect("table");
        let c = p.process(5_000_000, &g, &mut b).clone();
        drop(g);
        assert_eq!(
            (c.total_drops(), c.rtp, c.tx),
            (0, 1, subs.len() as u64),
            "{c:?}"
        );
        let header_len = frame.len() - rtp.len();
        let mut dsts = Vec::new();
        for tx in &b.tx {
            let buf = &b.pkts[usize::from(tx.pkt)].buf;
            assert_eq!(buf.head.len(), header_len, "only headers are private");
            assert!(Rc::ptr_eq(&buf.tail, &b.pkts[0].buf.tail), "payload shared");
            let wire = buf.wire();
            assert!(wire.ends_with(&rtp), "payload intact");
            let (_, dst, ttl, _) = inspect(&wire);
            assert_eq!((dst, ttl), (tx.dst, 63));
            dsts.push(dst);
        }
        dsts.sort();
        assert_eq!(dsts, subs.iter().map(|s| addr(s)).collect::<Vec<_>>());
    }
}

#[test]
fn non_media_goes_to_the_exception_path_and_bad_frames_are_dropped() {
    let flows = vec![spec(0, ING, None, &["203.0.113.1:6000"])];
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let dns = udp_frame(addr(PUB), addr("192.0.2.1:53"), b"query", None);
    let no_flow = udp_frame(
        addr(PUB),
        addr("192.0.2.1:40002"),
        &rtp_packet(1, 1, 10),
        None,
    );
    let mut icmp = udp_frame(addr(PUB), addr(ING), &[0; 8], None);
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut icmp[14..]);
        ip.set_next_header(ipv4::PROTO_ICMP);
        ip.fill_checksum();
    }
    let mut ttl1 = udp_frame(addr(PUB), addr(ING), &rtp_packet(1, 1, 10), None);
    ipv4::Packet::new_unchecked(&mut ttl1[14..]).set_ttl(1);
    let mut big = udp_frame(addr(PUB), addr(ING), &rtp_packet(2, 1, 1600), None);
    big.truncate(big.len()); // 1600-byte payload: over the 1500-byte MTU of egress 0
    let truncated = udp_frame(addr(PUB), addr(ING), &rtp_packet(3, 1, 10), None)[..30].to_vec();
    let (b, c) = run(flows, vec![arp, dns, no_flow, icmp, ttl1, big, truncated]);
    let mut exceptions = b.exceptions.clone();
    exceptions.sort_unstable();
    assert_eq!(exceptions, vec![0, 1, 3]);
    assert_eq!(c.exceptions, 3);
    assert_eq!(c.drops[DropReason::NoFlow.index()], 1);
    assert_eq!(c.drops[DropReason::TtlExpired.index()], 1);
    assert_eq!(c.drops[DropReason::TooBig.index()], 1);
    assert_eq!(c.drops[DropReason::Truncated.index()], 1);
    assert!(b.tx.is_empty());
}

#[test]
fn family_mismatch_between_packet_and_target_is_dropped() {
    let s = FlowSpec {
        targets: vec![Target {
            port: 0,
            addr: addr("[2001:db8::9]:6000"),
            mac: None,
        }],
        ..spec(0, ING, None, &["203.0.113.1:6000"])
    };
    let _ = FlowKey::new(0, addr(ING));
    let (_, c) = run(
        vec![s],
        vec![udp_frame(addr(PUB), addr(ING), &rtp_packet(1, 1, 10), None)],
    );
    assert_eq!(c.drops[DropReason::FamilyMismatch.index()], 1);
}

proptest! {
    /// Arbitrary frames never panic; each is forwarded, punted or counted.
    #[test]
    fn arbitrary_frames_are_accounted(frames in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..120), 1..32)) {
        let n = frames.len() as u64;
        let (b, c) = run(vec![spec(0, ING, None, &["203.0.113.1:6000"])], frames);
        prop_assert_eq!(b.tx.len() as u64 + c.total_drops() + c.exceptions, n);
    }

    /// Valid frames with random addresses and payloads come out with valid checksums.
    #[test]
    fn rewritten_frames_always_verify(src in any::<[u8; 4]>(), sport in 1u16.., payload in proptest::collection::vec(any::<u8>(), 12..400), seq: u16) {
        let mut rtp = rtp_packet(seq, 5, 0);
        rtp.extend_from_slice(&payload);
        let from = SocketAddr::from((src, sport));
        let (b, c) = run(vec![spec(0, ING, None, &["203.0.113.1:6000", "203.0.113.2:6000"])],
            vec![udp_frame(from, addr(ING), &rtp, None)]);
        prop_assert_eq!(c.total_drops(), 0);
        for t in &b.tx {
            let (s, d, ttl, _) = inspect(&b.pkts[usize::from(t.pkt)].buf);
            prop_assert_eq!(s, addr("192.0.2.1:40000"));
            prop_assert_eq!(d, t.dst);
            prop_assert_eq!(ttl, 63);
        }
    }
}
