//! Incremental checksum updates (RFC 1624) always equal a full recomputation.

use std::net::{Ipv4Addr, Ipv6Addr};

use popmesh_wire::{checksum, ipv4, udp};
use proptest::prelude::*;

/// Even-length data of 2..=128 bytes.
fn words() -> impl Strategy<Value = Vec<u8>> {
    (1usize..=64).prop_flat_map(|n| prop::collection::vec(any::<u8>(), n * 2))
}

fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// The one divergence between the two forms is representational: an all-zero buffer has the
/// full checksum 0xFFFF, and RFC 1624 equation 3 yields the equivalent 0x0000 for it. No real
/// header is all zero (IPv4 has its version, the UDP pseudo-header its protocol number).
fn all_zero(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn update16_equals_recompute(mut data in words(), index in any::<prop::sample::Index>(), new in any::<u16>()) {
        let at = index.index(data.len() / 2) * 2;
        let before = checksum::data(&data);
        let old = read_u16(&data, at);
        data[at..at + 2].copy_from_slice(&new.to_be_bytes());
        prop_assume!(!all_zero(&data));
        prop_assert_eq!(checksum::update16(before, old, new), checksum::data(&data));
    }

    #[test]
    fn update32_equals_recompute(mut data in words(), index in any::<prop::sample::Index>(), new in any::<u32>()) {
        prop_assume!(data.len() >= 4);
        let at = index.index(data.len() / 2 - 1) * 2;
        let before = checksum::data(&data);
        let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        data[at..at + 4].copy_from_slice(&new.to_be_bytes());
        prop_assume!(!all_zero(&data));
        prop_assert_eq!(checksum::update32(before, old, new), checksum::data(&data));
    }

    #[test]
    fn update_bytes_equals_recompute(
        mut data in words(),
        index in any::<prop::sample::Index>(),
        new in prop::collection::vec(any::<u8>(), 16),
    ) {
        prop_assume!(data.len() >= 16);
        let at = index.index(data.len() / 2 - 7) * 2;
        let before = checksum::data(&data);
        let old = data[at..at + 16].to_vec();
        data[at..at + 16].copy_from_slice(&new);
        prop_assume!(!all_zero(&data));
        prop_assert_eq!(checksum::update_bytes(before, &old, &new), checksum::data(&data));
    }

    #[test]
    fn sum_is_order_independent_over_words(a in words(), b in words()) {
        // Splitting at an even offset and adding the partial sums equals summing the whole.
        let whole = [a.clone(), b.clone()].concat();
        prop_assert_eq!(
            checksum::fold(checksum::sum(&a) + checksum::sum(&b)),
            checksum::fold(checksum::sum(&whole))
        );
    }

    #[test]
    fn ipv4_setters_equal_recompute(
        header in prop::collection::vec(any::<u8>(), 20),
        ops in prop::collection::vec((0u8..3, any::<u32>()), 1..6),
    ) {
        let mut bytes = header;
        bytes[0] = 0x45;
        bytes[2..4].copy_from_slice(&20u16.to_be_bytes());
        let mut p = ipv4::Packet::new_checked(&mut bytes[..]).expect("valid header");
        p.fill_checksum();
        for (op, value) in ops {
            match op {
                0 => p.set_src_addr(Ipv4Addr::from(value)),
                1 => p.set_dst_addr(Ipv4Addr::from(value)),
                _ => p.set_ttl(value as u8),
            }
            prop_assert!(p.verify_checksum());
            let incremental = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(incremental, p.checksum());
        }
    }

    #[test]
    fn udp_v4_rewrites_equal_recompute(
        payload in prop::collection::vec(any::<u8>(), 0..64),
        ports in (any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>()),
        addrs in (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
    ) {
        let (src, dst) = (Ipv4Addr::from(addrs.0), Ipv4Addr::from(addrs.1));
        let (new_src, new_dst) = (Ipv4Addr::from(addrs.2), Ipv4Addr::from(addrs.3));
        let repr = udp::Repr { src_port: ports.0, dst_port: ports.1 };
        let mut buf = vec![0u8; repr.buffer_len(payload.len())];
        let mut p = udp::Packet::new_unchecked(&mut buf[..]);
        repr.emit_v4(&mut p, &payload, src, dst).expect("exact buffer");

        p.set_src_port(ports.2);
        p.set_dst_port(ports.3);
        p.update_checksum_for_addr_v4(src, new_src);
        p.update_checksum_for_addr_v4(dst, new_dst);
        prop_assert!(p.verify_checksum_v4(new_src, new_dst));
        let incremental = p.checksum();
        p.fill_checksum_v4(new_src, new_dst);
        prop_assert_eq!(incremental, p.checksum());

        // "No checksum" stays "no checksum".
        p.set_checksum(0);
        p.set_src_port(ports.0);
        p.update_checksum_for_addr_v4(new_src, src);
        prop_assert_eq!(p.checksum(), 0);
    }

    #[test]
    fn udp_v6_rewrites_equal_recompute(
        payload in prop::collection::vec(any::<u8>(), 0..64),
        ports in (any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>()),
        addrs in (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>()),
    ) {
        let (src, dst) = (Ipv6Addr::from(addrs.0), Ipv6Addr::from(addrs.1));
        let (new_src, new_dst) = (Ipv6Addr::from(addrs.2), Ipv6Addr::from(addrs.3));
        let repr = udp::Repr { src_port: ports.0, dst_port: ports.1 };
        let mut buf = vec![0u8; repr.buffer_len(payload.len())];
        let mut p = udp::Packet::new_unchecked(&mut buf[..]);
        repr.emit_v6(&mut p, &payload, src, dst).expect("exact buffer");

        p.set_src_port(ports.2);
        p.update_checksum_for_addr_v6(src, new_src);
        p.update_checksum_for_addr_v6(dst, new_dst);
        p.set_dst_port(ports.3);
        prop_assert!(p.verify_checksum_v6(new_src, new_dst));
        let incremental = p.checksum();
        p.fill_checksum_v6(new_src, new_dst);
        prop_assert_eq!(incremental, p.checksum());
    }
}

/// The zero edge case of the UDP rule, found by construction rather than by chance: a
/// datagram whose checksum computes to 0 (stored as 0xFFFF) must stay in step with a full
/// recomputation through a port rewrite in both directions.
#[test]
fn udp_ffff_checksum_survives_rewrites() {
    let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let repr = udp::Repr {
        src_port: 1,
        dst_port: 2,
    };
    let mut buf = [0u8; 10];
    repr.emit(&mut udp::Packet::new_unchecked(&mut buf[..]), 2)
        .expect("fits");
    let partial =
        checksum::fold(checksum::pseudo_header_v4(src, dst, 17, 10) + checksum::sum(&buf));
    buf[8..10].copy_from_slice(&(!partial).to_be_bytes());
    let mut p = udp::Packet::new_checked(&mut buf[..]).expect("valid");
    p.fill_checksum_v4(src, dst);
    assert_eq!(p.checksum(), 0xffff);
    for port in [1u16, 0xffff, 0, 1] {
        p.set_src_port(port);
        let incremental = p.checksum();
        p.fill_checksum_v4(src, dst);
        assert_eq!(incremental, p.checksum(), "port {port}");
    }
}
