use std::net::{Ipv4Addr, Ipv6Addr};

use popmesh_wire::{ipv4, ipv6, rtp, udp};
use proptest::prelude::*;

fn rtp_repr() -> impl Strategy<Value = rtp::Repr> {
    (
        (
            0u8..128,
            any::<bool>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
        ),
        prop::collection::vec(any::<u32>(), 0..=15),
        prop::option::of((
            any::<u16>(),
            (0usize..8).prop_flat_map(|words| prop::collection::vec(any::<u8>(), words * 4)),
        )),
        any::<u8>(),
    )
        .prop_map(
            |(
                (payload_type, marker, sequence_number, timestamp, ssrc),
                csrcs,
                extension,
                padding,
            )| {
                rtp::Repr {
                    payload_type,
                    marker,
                    sequence_number,
                    timestamp,
                    ssrc,
                    csrcs,
                    extension,
                    padding,
                }
            },
        )
}

proptest! {
    #[test]
    fn rtp_repr_round_trips(
        repr in rtp_repr(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        slack in 0usize..16,
    ) {
        let mut buf = vec![0xa5u8; repr.buffer_len() + payload.len() + slack];
        let n = repr
            .emit(&mut rtp::Packet::new_unchecked(&mut buf[..]), &payload)
            .expect("buffer is large enough");
        prop_assert_eq!(n, repr.buffer_len() + payload.len());
        let packet = rtp::Packet::new_checked(&buf[..n]).expect("emitted packet is valid");
        prop_assert_eq!(packet.payload(), &payload[..]);
        prop_assert_eq!(packet.header_len(), repr.header_len());
        prop_assert_eq!(rtp::Repr::parse(&packet).expect("valid"), repr);
    }

    #[test]
    fn udp_repr_round_trips_v4(
        src_port in any::<u16>(),
        dst_port in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
        src in any::<u32>().prop_map(Ipv4Addr::from),
        dst in any::<u32>().prop_map(Ipv4Addr::from),
    ) {
        let repr = udp::Repr { src_port, dst_port };
        let mut buf = vec![0u8; repr.buffer_len(payload.len())];
        repr.emit_v4(&mut udp::Packet::new_unchecked(&mut buf[..]), &payload, src, dst)
            .expect("buffer is exact");
        let packet = udp::Packet::new_checked(&buf[..]).expect("emitted datagram is valid");
        prop_assert_eq!(udp::Repr::parse(&packet).expect("valid"), repr);
        prop_assert_eq!(packet.payload(), &payload[..]);
        prop_assert_ne!(packet.checksum(), 0);
        prop_assert!(packet.verify_checksum_v4(src, dst));
    }

    #[test]
    fn udp_repr_round_trips_v6(
        src_port in any::<u16>(),
        dst_port in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
        src in any::<u128>().prop_map(Ipv6Addr::from),
        dst in any::<u128>().prop_map(Ipv6Addr::from),
    ) {
        let repr = udp::Repr { src_port, dst_port };
        let mut buf = vec![0u8; repr.buffer_len(payload.len())];
        repr.emit_v6(&mut udp::Packet::new_unchecked(&mut buf[..]), &payload, src, dst)
            .expect("buffer is exact");
        let packet = udp::Packet::new_checked(&buf[..]).expect("emitted datagram is valid");
        prop_assert_eq!(udp::Repr::parse(&packet).expect("valid"), repr);
        prop_assert_eq!(packet.payload(), &payload[..]);
        prop_assert!(packet.verify_checksum_v6(src, dst));
    }

    #[test]
    fn ipv4_repr_round_trips(
        src in any::<u32>().prop_map(Ipv4Addr::from),
        dst in any::<u32>().prop_map(Ipv4Addr::from),
        next_header in any::<u8>(),
        payload_len in 0u16..600,
        ttl in any::<u8>(),
        dscp_ecn in any::<u8>(),
    ) {
        let repr = ipv4::Repr { src_addr: src, dst_addr: dst, next_header, payload_len, ttl, dscp_ecn };
        let mut buf = vec![0u8; repr.buffer_len() + usize::from(payload_len)];
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..])).expect("fits");
        let packet = ipv4::Packet::new_checked(&buf[..]).expect("emitted header is valid");
        prop_assert!(packet.verify_checksum());
        prop_assert_eq!(ipv4::Repr::parse(&packet).expect("valid"), repr);
    }

    #[test]
    fn ipv6_repr_round_trips(
        src in any::<u128>().prop_map(Ipv6Addr::from),
        dst in any::<u128>().prop_map(Ipv6Addr::from),
        next_header in any::<u8>(),
        payload_len in 0u16..600,
        hop_limit in any::<u8>(),
        traffic_class in any::<u8>(),
        flow_label in 0u32..(1 << 20),
    ) {
        let repr = ipv6::Repr { src_addr: src, dst_addr: dst, next_header, payload_len, hop_limit, traffic_class, flow_label };
        let mut buf = vec![0u8; repr.buffer_len() + usize::from(payload_len)];
        repr.emit(&mut ipv6::Packet::new_unchecked(&mut buf[..])).expect("fits");
        let packet = ipv6::Packet::new_checked(&buf[..]).expect("emitted header is valid");
        prop_assert_eq!(ipv6::Repr::parse(&packet).expect("valid"), repr);
    }
}
