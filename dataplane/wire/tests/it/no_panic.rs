//! Arbitrary bytes through every view: no panics, and whatever `new_checked` accepts satisfies
//! the length invariants the accessors rely on. Besides fully random bytes, each view gets
//! "nearly valid" inputs (version and length fields forced into range) so the checks past the
//! first one are reached too.

use std::net::{Ipv4Addr, Ipv6Addr};

use popmesh_wire::{classify, ethernet, ipv4, ipv6, parse_l2, rtcp, rtp, udp, MediaKind};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Patches `bytes[at]` with `f(old)` if it exists.
fn patch(bytes: &mut [u8], at: usize, f: impl FnOnce(u8) -> u8) {
    if let Some(b) = bytes.get_mut(at) {
        *b = f(*b);
    }
}

fn patch_u16(bytes: &mut [u8], at: usize, value: u16) {
    if let Some(slot) = bytes.get_mut(at..at + 2) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

fn exercise_ipv4(data: &[u8]) -> Result<(), TestCaseError> {
    let Ok(p) = ipv4::Packet::new_checked(data) else {
        return Ok(());
    };
    prop_assert_eq!(p.version(), 4);
    prop_assert!(p.header_len() >= 20);
    prop_assert_eq!(p.options().len(), p.header_len() - 20);
    prop_assert_eq!(
        p.payload().len(),
        usize::from(p.total_len()) - p.header_len()
    );
    let _ = (
        p.dscp_ecn(),
        p.ident(),
        p.dont_frag(),
        p.more_frags(),
        p.frag_offset(),
    );
    let _ = (p.is_fragment(), p.ttl(), p.next_header(), p.checksum());
    let _ = (
        p.src_addr(),
        p.dst_addr(),
        p.verify_checksum(),
        ipv4::Repr::parse(&p),
    );

    let mut copy = data.to_vec();
    let mut q = ipv4::Packet::new_checked(&mut copy[..]).expect("same bytes");
    let valid_before = q.verify_checksum();
    q.set_ttl(q.ttl().wrapping_sub(1));
    q.set_src_addr(Ipv4Addr::new(203, 0, 113, 1));
    q.set_dst_addr(Ipv4Addr::new(198, 51, 100, 2));
    prop_assert_eq!(q.verify_checksum(), valid_before);
    q.fill_checksum();
    prop_assert!(q.verify_checksum());
    let _ = q.payload_mut();
    Ok(())
}

fn exercise_ipv6(data: &[u8]) -> Result<(), TestCaseError> {
    let Ok(p) = ipv6::Packet::new_checked(data) else {
        return Ok(());
    };
    let end = 40 + usize::from(p.payload_len());
    prop_assert_eq!(p.payload().len(), end - 40);
    let _ = (
        p.traffic_class(),
        p.flow_label(),
        p.next_header(),
        p.hop_limit(),
    );
    let _ = (p.src_addr(), p.dst_addr(), ipv6::Repr::parse(&p));
    match p.upper_layer() {
        Ok((proto, offset)) => {
            prop_assert!((40..=end).contains(&offset));
            let (proto2, upper) = p.upper_layer_payload().expect("same walk succeeds");
            prop_assert_eq!(proto, proto2);
            prop_assert_eq!(upper.len(), end - offset);
            if proto == ipv6::PROTO_UDP {
                exercise_udp(upper, None, Some((p.src_addr(), p.dst_addr())))?;
            }
        }
        Err(e) => prop_assert!(p.upper_layer_payload() == Err(e)),
    }
    let mut copy = data.to_vec();
    let mut q = ipv6::Packet::new_checked(&mut copy[..]).expect("same bytes");
    q.set_hop_limit(1);
    q.set_src_addr(Ipv6Addr::LOCALHOST);
    q.set_dst_addr(Ipv6Addr::UNSPECIFIED);
    prop_assert_eq!(q.payload_mut().len(), end - 40);
    Ok(())
}

fn exercise_udp(
    data: &[u8],
    v4: Option<(Ipv4Addr, Ipv4Addr)>,
    v6: Option<(Ipv6Addr, Ipv6Addr)>,
) -> Result<(), TestCaseError> {
    let Ok(p) = udp::Packet::new_checked(data) else {
        return Ok(());
    };
    prop_assert_eq!(p.payload().len(), usize::from(p.len()) - 8);
    let _ = (
        p.src_port(),
        p.dst_port(),
        p.checksum(),
        udp::Repr::parse(&p),
    );
    let (s4, d4) = v4.unwrap_or((Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST));
    let (s6, d6) = v6.unwrap_or((Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED));
    let (ok4, ok6) = (p.verify_checksum_v4(s4, d4), p.verify_checksum_v6(s6, d6));
    exercise_media(p.payload())?;

    let mut copy = data.to_vec();
    let mut q = udp::Packet::new_checked(&mut copy[..]).expect("same bytes");
    let n4 = Ipv4Addr::new(100, 64, 0, 1);
    let n6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7);
    q.set_src_port(q.src_port().wrapping_add(1));
    q.set_dst_port(q.dst_port() ^ 0x5555);
    q.update_checksum_for_addr_v4(s4, n4);
    prop_assert_eq!(q.verify_checksum_v4(n4, d4), ok4);
    let mut copy6 = data.to_vec();
    let mut q6 = udp::Packet::new_checked(&mut copy6[..]).expect("same bytes");
    q6.set_dst_port(443);
    q6.update_checksum_for_addr_v6(d6, n6);
    prop_assert_eq!(q6.verify_checksum_v6(s6, n6), ok6);
    q6.fill_checksum_v6(s6, n6);
    prop_assert!(q6.verify_checksum_v6(s6, n6));
    Ok(())
}

fn exercise_rtp(data: &[u8]) -> Result<(), TestCaseError> {
    let Ok(p) = rtp::Packet::new_checked(data) else {
        return Ok(());
    };
    prop_assert_eq!(
        p.header_len() + p.payload().len() + p.padding_len(),
        data.len()
    );
    prop_assert_eq!(p.csrcs().count(), usize::from(p.csrc_count()));
    for i in 0..16 {
        prop_assert_eq!(p.csrc(i).is_some(), i < usize::from(p.csrc_count()));
    }
    prop_assert_eq!(p.extension_header().is_some(), p.extension());
    let _ = (
        p.marker(),
        p.payload_type(),
        p.sequence_number(),
        p.timestamp(),
        p.ssrc(),
    );
    let repr = rtp::Repr::parse(&p).expect("checked packets parse");
    let mut out = vec![0u8; repr.buffer_len() + p.payload().len()];
    let n = repr
        .emit(&mut rtp::Packet::new_unchecked(&mut out[..]), p.payload())
        .expect("exact buffer");
    // Only padding contents may differ (emit zeroes them).
    prop_assert_eq!(&out[..p.header_len()], &data[..p.header_len()]);
    prop_assert_eq!(n, data.len());

    let mut copy = data.to_vec();
    let mut q = rtp::Packet::new_checked(&mut copy[..]).expect("same bytes");
    q.set_sequence_number(1);
    q.set_timestamp(2);
    q.set_ssrc(3);
    q.set_marker(!p.marker());
    q.set_payload_type(0xff);
    prop_assert_eq!(q.payload_mut().len(), p.payload().len());
    Ok(())
}

fn exercise_rtcp(data: &[u8]) -> Result<(), TestCaseError> {
    let mut consumed = 0;
    for packet in rtcp::compound(data) {
        let Ok(p) = packet else { break };
        consumed += p.total_len();
        prop_assert_eq!(p.version(), 2);
        prop_assert!(p.body().len() + 4 + p.padding_len() == p.total_len());
        let _ = (
            p.count(),
            p.packet_type(),
            p.length_words(),
            p.sender_ssrc(),
            p.kind(),
        );
        let _ = (p.sender_info(), p.ntp_timestamp(), p.rtp_timestamp());
        let _ = (p.packet_count(), p.octet_count(), p.media_ssrc());
        if let Ok(blocks) = p.report_blocks() {
            prop_assert_eq!(blocks.count(), usize::from(p.count()));
        }
        if let Ok(items) = p.nack_items() {
            for (pid, blp) in items {
                prop_assert_eq!(
                    rtcp::lost_packets(pid, blp).count(),
                    1 + blp.count_ones() as usize
                );
            }
        }
    }
    prop_assert!(consumed <= data.len());
    let mut copy = data.to_vec();
    if let Ok(mut p) = rtcp::Packet::new_checked(&mut copy[..]) {
        let _ = p.set_sender_ssrc(1);
        let _ = p.set_media_ssrc(2);
    }
    Ok(())
}

fn exercise_media(payload: &[u8]) -> Result<(), TestCaseError> {
    match classify(payload) {
        MediaKind::Rtp => exercise_rtp(payload),
        MediaKind::Rtcp => exercise_rtcp(payload),
        _ => Ok(()),
    }
}

fn exercise_frame(frame: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(f) = ethernet::Frame::new_checked(frame) {
        let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload());
    }
    let Ok(l2) = parse_l2(frame) else {
        return Ok(());
    };
    prop_assert!(l2.l3_offset <= frame.len());
    let l3 = &frame[l2.l3_offset..];
    match l2.ethertype {
        ethernet::ethertype::IPV4 => {
            exercise_ipv4(l3)?;
            if let Ok(ip) = ipv4::Packet::new_checked(l3) {
                if ip.next_header() == ipv4::PROTO_UDP && !ip.is_fragment() {
                    exercise_udp(ip.payload(), Some((ip.src_addr(), ip.dst_addr())), None)?;
                }
            }
        }
        ethernet::ethertype::IPV6 => exercise_ipv6(l3)?,
        _ => {}
    }
    Ok(())
}

/// Ethernet (optionally VLAN-tagged) + IPv4/IPv6 + UDP + RTP/RTCP with the length, version
/// and protocol fields forced to plausible values, to reach the deep checks.
fn nearly_valid_frame() -> impl Strategy<Value = Vec<u8>> {
    (bytes(400), 0usize..3, any::<bool>(), 0u8..4).prop_map(|(mut v, tags, v6, media)| {
        v.resize(v.len().max(14 + 4 * tags + 60), 0);
        let mut at = 12;
        for _ in 0..tags {
            patch_u16(&mut v, at, ethernet::ethertype::VLAN);
            at += 4;
        }
        let l3 = at + 2;
        let rest = v.len() - l3;
        let udp = if v6 {
            patch_u16(&mut v, at, ethernet::ethertype::IPV6);
            patch(&mut v, l3, |b| 0x60 | (b & 0x0f));
            patch_u16(&mut v, l3 + 4, (rest - 40) as u16);
            patch(&mut v, l3 + 6, |b| {
                [17, 0, 60, 43, 44, 51][usize::from(b % 6)]
            });
            l3 + 40
        } else {
            patch_u16(&mut v, at, ethernet::ethertype::IPV4);
            patch(&mut v, l3, |_| 0x45);
            patch_u16(&mut v, l3 + 2, rest as u16);
            patch_u16(&mut v, l3 + 6, 0);
            patch(&mut v, l3 + 9, |_| 17);
            l3 + 20
        };
        let udp_len = v.len() - udp;
        patch_u16(&mut v, udp + 4, udp_len as u16);
        let first = udp + 8;
        match media {
            0 => patch(&mut v, first, |b| 0x80 | (b & 0x3f)),
            1 => {
                patch(&mut v, first, |b| 0x80 | (b & 0x3f));
                patch(&mut v, first + 1, |b| 200 + b % 7);
            }
            _ => {}
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_frames_never_panic(data in bytes(300)) {
        exercise_frame(&data)?;
    }

    #[test]
    fn nearly_valid_frames_never_panic(data in nearly_valid_frame()) {
        exercise_frame(&data)?;
    }

    #[test]
    fn random_ipv4_never_panics(mut data in bytes(120)) {
        patch(&mut data, 0, |b| 0x40 | (b & 0x0f));
        let len = data.len() as u16;
        patch_u16(&mut data, 2, len.saturating_sub(len % 7));
        exercise_ipv4(&data)?;
    }

    #[test]
    fn random_ipv6_walk_never_panics(mut data in bytes(200), nh in prop::sample::select(vec![0u8, 43, 44, 50, 51, 59, 60, 17])) {
        patch(&mut data, 0, |b| 0x60 | (b & 0x0f));
        let payload_len = data.len().saturating_sub(40) as u16;
        patch_u16(&mut data, 4, payload_len);
        patch(&mut data, 6, |_| nh);
        // Make most extension headers point at other extension headers.
        for at in (40..data.len()).step_by(8) {
            patch(&mut data, at, |b| [0, 43, 44, 51, 60, 17, b][usize::from(b % 7)]);
        }
        exercise_ipv6(&data)?;
    }

    #[test]
    fn random_udp_never_panics(mut data in bytes(100)) {
        let len = data.len() as u16;
        patch_u16(&mut data, 4, len.saturating_sub(len % 5));
        exercise_udp(&data, None, None)?;
    }

    #[test]
    fn random_rtp_never_panics(mut data in bytes(100), small in any::<bool>()) {
        patch(&mut data, 0, |b| 0x80 | (b & 0x3f));
        if small {
            // Few CSRCs and a short extension so the padding check is reached too.
            patch(&mut data, 0, |b| b & 0xf3);
            let cc = usize::from(data.first().map_or(0, |b| b & 0x03));
            let ext_words = data.get(12 + 4 * cc + 2).map_or(0, |b| u16::from(b % 4));
            patch_u16(&mut data, 12 + 4 * cc + 2, ext_words);
        }
        exercise_rtp(&data)?;
    }

    #[test]
    fn random_rtcp_never_panics(mut data in bytes(120), split in 0usize..120) {
        // Two packets whose length fields roughly tile the buffer.
        let len = data.len();
        let second = (split.min(len) / 4) * 4;
        // Report counts 0..=3 so that SR/RR blocks fit more often than not.
        patch(&mut data, 0, |b| 0x80 | (b & 0x23));
        patch(&mut data, 1, |b| 200 + b % 7);
        patch_u16(&mut data, 2, (second / 4).saturating_sub(1) as u16);
        patch(&mut data, second, |b| 0x80 | (b & 0x3f));
        patch(&mut data, second + 1, |b| 200 + b % 7);
        patch_u16(&mut data, second + 2, ((len - second) / 4).saturating_sub(1) as u16);
        exercise_rtcp(&data)?;
    }
}
