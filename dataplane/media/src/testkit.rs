//! Packet builders for tests, benches and lab tools: valid RTP datagrams and Ethernet frames
//! carrying them, emitted through the `popmesh-wire` representations so every checksum is right.
//!
//! Not used on the packet path; these allocate freely.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::flow::Target;

use popmesh_wire::{ethernet, ipv4, ipv6, rtp, udp};

/// An RTP v2 packet: payload type 96, timestamp `seq * 3000` (30 fps at 90 kHz), and
/// `payload_len` bytes of a pattern derived from `seq`.
pub fn rtp_packet(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let repr = rtp::Repr {
        payload_type: 96,
        marker: false,
        sequence_number: seq,
        timestamp: u32::from(seq).wrapping_mul(3000),
        ssrc,
        csrcs: Vec::new(),
        extension: None,
        padding: 0,
    };
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| (usize::from(seq) + i) as u8)
        .collect();
    let mut buf = vec![0u8; repr.buffer_len() + payload_len];
    let mut p = rtp::Packet::new_unchecked(&mut buf[..]);
    // The buffer is sized by buffer_len, the payload type is below 128: emit cannot fail.
    let _ = repr.emit(&mut p, &payload);
    buf
}

/// Subscriber `k` of the benches' and examples' flows: `192.168.k.hi.k.lo:7000+k` on port 0,
/// with a MAC of its own.
pub fn subscriber(k: u16) -> Target {
    Target {
        port: 0,
        addr: SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(192, 168, (k >> 8) as u8, k as u8),
            7000 + k,
        )),
        mac: Some([2, 0, 0, 0, 0, k as u8]),
    }
}

/// Source and destination MACs used by [`udp_frame`].
pub const FRAME_SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// See [`FRAME_SRC_MAC`].
pub const FRAME_DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// An Ethernet frame carrying `payload` in UDP from `src` to `dst` (both IPv4 or both IPv6),
/// TTL/hop limit 64, valid IP and UDP checksums, optionally 802.1Q tagged with `vlan`.
///
/// # Panics
/// If `src` and `dst` are of different families or the payload does not fit one packet.
pub fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8], vlan: Option<u16>) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + 40 + 8 + payload.len());
    f.extend_from_slice(&FRAME_DST_MAC);
    f.extend_from_slice(&FRAME_SRC_MAC);
    if let Some(id) = vlan {
        f.extend_from_slice(&ethernet::ethertype::VLAN.to_be_bytes());
        f.extend_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    let u = udp::Repr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let udp_len = 8 + payload.len();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
            let l3 = f.len();
            f.resize(l3 + 20 + udp_len, 0);
            let ip = ipv4::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: ipv4::PROTO_UDP,
                payload_len: udp_len as u16,
                ttl: 64,
                dscp_ecn: 0,
            };
            ip.emit(&mut ipv4::Packet::new_unchecked(&mut f[l3..]))
                .expect("IPv4 header fits");
            u.emit_v4(
                &mut udp::Packet::new_unchecked(&mut f[l3 + 20..]),
                payload,
                s,
                d,
            )
            .expect("UDP fits");
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&ethernet::ethertype::IPV6.to_be_bytes());
            let l3 = f.len();
            f.resize(l3 + 40 + udp_len, 0);
            let ip = ipv6::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: ipv6::PROTO_UDP,
                payload_len: udp_len as u16,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            };
            ip.emit(&mut ipv6::Packet::new_unchecked(&mut f[l3..]))
                .expect("IPv6 header fits");
            u.emit_v6(
                &mut udp::Packet::new_unchecked(&mut f[l3 + 40..]),
                payload,
                s,
                d,
            )
            .expect("UDP fits");
        }
        _ => panic!("udp_frame: {src} and {dst} are of different families"),
    }
    f
}
