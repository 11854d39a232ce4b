//! Feeds one input through the whole receive path the media pipeline runs:
//! `parse_l2` -> IPv4/IPv6 (incl. the extension-header walk) -> UDP -> `demux::classify` ->
//! RTP / RTCP compound, calling every accessor, then runs the rewrite setters on a copy and
//! checks that the incremental checksum updates agree with a full recomputation.
//!
//! The same bytes are also tried as a bare IPv4/IPv6 packet, UDP datagram and media payload,
//! so inputs do not need a valid Ethernet header to reach the inner parsers.

#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use popmesh_wire::{checksum, classify, ethernet, ipv4, ipv6, parse_l2, rtcp, rtp, udp, MediaKind};

fuzz_target!(|data: &[u8]| {
    frame(data);
    ip(data);
    datagram(data, None, None);
    media(data);
});

fn frame(data: &[u8]) {
    if let Ok(f) = ethernet::Frame::new_checked(data) {
        let _ = (
            f.dst_addr().to_string(),
            f.src_addr(),
            f.ethertype(),
            f.payload().len(),
        );
        let mut copy = data.to_vec();
        let mut g = ethernet::Frame::new_unchecked(&mut copy[..]);
        g.set_dst_addr(f.src_addr());
        g.set_src_addr(f.dst_addr());
        assert_eq!(g.src_addr(), f.dst_addr());
    }
    let Ok(l2) = parse_l2(data) else { return };
    let Some(l3) = data.get(l2.l3_offset..) else {
        panic!("parse_l2 returned an offset past the frame");
    };
    match l2.ethertype {
        ethernet::ethertype::IPV4 => v4(l3),
        ethernet::ethertype::IPV6 => v6(l3),
        _ => {}
    }
}

fn ip(data: &[u8]) {
    match data.first().map(|b| b >> 4) {
        Some(4) => v4(data),
        Some(6) => v6(data),
        _ => {}
    }
}

fn v4(data: &[u8]) {
    let Ok(p) = ipv4::Packet::new_checked(data) else {
        return;
    };
    assert!(p.header_len() >= ipv4::MIN_HEADER_LEN);
    assert_eq!(
        p.payload().len(),
        usize::from(p.total_len()) - p.header_len()
    );
    let _ = (
        p.version(),
        p.dscp_ecn(),
        p.ident(),
        p.dont_frag(),
        p.more_frags(),
    );
    let _ = (
        p.frag_offset(),
        p.is_fragment(),
        p.ttl(),
        p.checksum(),
        p.options().len(),
    );
    let _ = ipv4::Repr::parse(&p);
    let valid = p.verify_checksum();

    // Rewrite path: the incremental update must keep a valid checksum valid (and an invalid
    // one invalid), and when it started valid it must equal a full recomputation.
    let mut copy = data.to_vec();
    let mut q = ipv4::Packet::new_unchecked(&mut copy[..]);
    q.set_ttl(p.ttl().wrapping_sub(1));
    q.set_src_addr(Ipv4Addr::new(203, 0, 113, 9));
    q.set_dst_addr(p.src_addr());
    q.set_dscp_ecn(0x2e << 2);
    assert_eq!(q.verify_checksum(), valid);
    if valid {
        let incremental = q.checksum();
        q.fill_checksum();
        assert_eq!(incremental, q.checksum());
    }

    if p.next_header() == ipv4::PROTO_UDP && !p.is_fragment() {
        datagram(p.payload(), Some((p.src_addr(), p.dst_addr())), None);
    }
}

fn v6(data: &[u8]) {
    let Ok(p) = ipv6::Packet::new_checked(data) else {
        return;
    };
    let end = ipv6::HEADER_LEN + usize::from(p.payload_len());
    assert_eq!(p.payload().len(), usize::from(p.payload_len()));
    let _ = (
        p.traffic_class(),
        p.flow_label(),
        p.next_header(),
        p.hop_limit(),
    );
    let _ = ipv6::Repr::parse(&p);
    let mut copy = data.to_vec();
    let mut q = ipv6::Packet::new_unchecked(&mut copy[..]);
    q.set_hop_limit(p.hop_limit().wrapping_sub(1));
    q.set_src_addr(p.dst_addr());
    q.set_dst_addr(p.src_addr());
    assert_eq!(q.src_addr(), p.dst_addr());

    let Ok((proto, offset)) = p.upper_layer() else {
        return;
    };
    assert!((ipv6::HEADER_LEN..=end).contains(&offset));
    let Ok((_, upper)) = p.upper_layer_payload() else {
        panic!("upper_layer succeeded but upper_layer_payload failed");
    };
    assert_eq!(upper.len(), end - offset);
    if proto == ipv6::PROTO_UDP {
        datagram(upper, None, Some((p.src_addr(), p.dst_addr())));
    }
}

fn datagram(data: &[u8], v4: Option<(Ipv4Addr, Ipv4Addr)>, v6: Option<(Ipv6Addr, Ipv6Addr)>) {
    let Ok(p) = udp::Packet::new_checked(data) else {
        return;
    };
    assert_eq!(p.payload().len(), usize::from(p.len()) - udp::HEADER_LEN);
    let _ = (
        p.src_port(),
        p.dst_port(),
        p.checksum(),
        udp::Repr::parse(&p),
    );
    let (s4, d4) = v4.unwrap_or((Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST));
    let (s6, d6) = v6.unwrap_or((Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED));
    let valid4 = p.verify_checksum_v4(s4, d4);
    let valid6 = p.verify_checksum_v6(s6, d6);

    let new4 = Ipv4Addr::new(100, 64, 1, 2);
    let mut copy = data.to_vec();
    let mut q = udp::Packet::new_unchecked(&mut copy[..]);
    q.set_src_port(p.src_port().wrapping_add(7));
    q.set_dst_port(p.dst_port() ^ 0xff00);
    q.update_checksum_for_addr_v4(d4, new4);
    assert_eq!(q.verify_checksum_v4(s4, new4), valid4);
    if valid4 && p.checksum() != 0 {
        let incremental = q.checksum();
        q.fill_checksum_v4(s4, new4);
        assert_eq!(incremental, q.checksum());
    }

    let new6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x42);
    let mut copy = data.to_vec();
    let mut q = udp::Packet::new_unchecked(&mut copy[..]);
    q.set_dst_port(p.dst_port().wrapping_sub(1));
    q.update_checksum_for_addr_v6(s6, new6);
    assert_eq!(q.verify_checksum_v6(new6, d6), valid6);
    if valid6 {
        let incremental = q.checksum();
        q.fill_checksum_v6(new6, d6);
        assert_eq!(incremental, q.checksum());
    }

    media(p.payload());
}

fn media(payload: &[u8]) {
    match classify(payload) {
        MediaKind::Rtp => rtp_packet(payload),
        MediaKind::Rtcp => rtcp_compound(payload),
        MediaKind::Stun | MediaKind::Dtls | MediaKind::Other => {}
    }
}

fn rtp_packet(data: &[u8]) {
    let Ok(p) = rtp::Packet::new_checked(data) else {
        return;
    };
    assert_eq!(
        p.header_len() + p.payload().len() + p.padding_len(),
        data.len()
    );
    assert_eq!(p.csrcs().count(), usize::from(p.csrc_count()));
    for i in 0..=rtp::MAX_CSRCS {
        assert_eq!(p.csrc(i).is_some(), i < usize::from(p.csrc_count()));
    }
    let _ = (
        p.version(),
        p.padding(),
        p.extension(),
        p.marker(),
        p.payload_type(),
    );
    let _ = (
        p.sequence_number(),
        p.timestamp(),
        p.ssrc(),
        p.extension_header(),
    );

    let Ok(repr) = rtp::Repr::parse(&p) else {
        panic!("a checked RTP packet must parse");
    };
    let mut out = vec![0u8; repr.buffer_len() + p.payload().len()];
    let Ok(n) = repr.emit(&mut rtp::Packet::new_unchecked(&mut out[..]), p.payload()) else {
        panic!("emit into an exact buffer must succeed");
    };
    assert_eq!(n, data.len());
    assert_eq!(&out[..p.header_len()], &data[..p.header_len()]);

    let mut copy = data.to_vec();
    let mut q = rtp::Packet::new_unchecked(&mut copy[..]);
    q.set_sequence_number(p.sequence_number().wrapping_add(1));
    q.set_timestamp(p.timestamp().wrapping_add(3000));
    q.set_ssrc(!p.ssrc());
    q.set_marker(!p.marker());
    q.set_payload_type(p.payload_type() ^ 0x01);
    assert_eq!(q.payload(), p.payload());
}

fn rtcp_compound(data: &[u8]) {
    let mut consumed = 0;
    for packet in rtcp::compound(data) {
        let Ok(p) = packet else { break };
        consumed += p.total_len();
        assert_eq!(p.body().len() + 4 + p.padding_len(), p.total_len());
        let _ = (
            p.version(),
            p.padding(),
            p.count(),
            p.packet_type(),
            p.length_words(),
        );
        let _ = (p.sender_ssrc(), p.kind(), p.sender_info(), p.media_ssrc());
        let _ = (
            p.ntp_timestamp(),
            p.rtp_timestamp(),
            p.packet_count(),
            p.octet_count(),
        );
        if let Ok(blocks) = p.report_blocks() {
            assert_eq!(blocks.count(), usize::from(p.count()));
        }
        if let Ok(items) = p.nack_items() {
            for (pid, blp) in items {
                let lost = rtcp::lost_packets(pid, blp).count();
                assert_eq!(lost, 1 + blp.count_ones() as usize);
            }
        }
        let mut copy = p.into_inner().to_vec();
        let mut q = rtcp::Packet::new_unchecked(&mut copy[..]);
        let _ = q.set_sender_ssrc(1);
        let _ = q.set_media_ssrc(2);
    }
    assert!(consumed <= data.len());
    // Also exercise the checksum helpers on arbitrary lengths.
    let _ = checksum::fold(checksum::sum(data));
}
