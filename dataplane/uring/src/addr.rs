//! Byte-level codecs for the kernel's socket address and control-message layouts.
//!
//! The kernel hands us `sockaddr_in{,6}` and `cmsghdr` records inside ring buffers, and reads the
//! same records from our send slots. Parsing and emitting them as bytes (instead of casting
//! pointers to libc structs) keeps this code safe and panic-free on whatever the buffer holds.
//! Layouts are the Linux/glibc ones: `cmsg_len` is a `size_t`, fields are in host byte order
//! except ports and addresses.

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Bytes of a `sockaddr_in`.
pub(crate) const SOCKADDR_V4_LEN: u32 = size_of::<libc::sockaddr_in>() as u32;
/// Bytes of a `sockaddr_in6`, the largest address we send to or receive from.
pub(crate) const SOCKADDR_V6_LEN: u32 = size_of::<libc::sockaddr_in6>() as u32;
/// Room for an encoded address.
pub(crate) const SOCKADDR_MAX: usize = SOCKADDR_V6_LEN as usize;

/// `CMSG_ALIGN`: control messages are padded to the size of `size_t`.
const fn cmsg_align(len: usize) -> usize {
    let a = size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

/// `CMSG_ALIGN(sizeof(struct cmsghdr))`: where the data of a control message starts.
const CMSG_HDR: usize = cmsg_align(size_of::<libc::cmsghdr>());
const CMSG_LEVEL_AT: usize = offset_of!(libc::cmsghdr, cmsg_level);
const CMSG_TYPE_AT: usize = offset_of!(libc::cmsghdr, cmsg_type);

/// `CMSG_SPACE(len)`.
const fn cmsg_space(len: usize) -> usize {
    CMSG_HDR + cmsg_align(len)
}

/// Control bytes reserved per received datagram: a v6 packet-info record (the larger of the two
/// families) plus an `SO_RXQ_OVFL` drop counter.
pub(crate) const RECV_CONTROL_LEN: usize =
    cmsg_space(size_of::<libc::in6_pktinfo>()) + cmsg_space(size_of::<u32>());

/// Control bytes of one `UDP_SEGMENT` record (a `u16` segment size).
pub(crate) const GSO_CMSG_SPACE: usize = cmsg_space(size_of::<u16>());

/// Length of the `sockaddr` that encodes `addr`.
pub(crate) fn sockaddr_len(addr: &SocketAddr) -> u32 {
    match addr {
        SocketAddr::V4(_) => SOCKADDR_V4_LEN,
        SocketAddr::V6(_) => SOCKADDR_V6_LEN,
    }
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Writes `addr` as a `sockaddr_in` / `sockaddr_in6` and returns its length.
///
/// Mirrors what std does: port and address in network order, `sin6_flowinfo` and
/// `sin6_scope_id` copied as host-order integers.
pub(crate) fn encode_sockaddr(addr: &SocketAddr, out: &mut [u8; SOCKADDR_MAX]) -> u32 {
    out.fill(0);
    match addr {
        SocketAddr::V4(a) => {
            put(out, 0, &(libc::AF_INET as u16).to_ne_bytes());
            put(out, 2, &a.port().to_be_bytes());
            put(out, 4, &a.ip().octets());
            SOCKADDR_V4_LEN
        }
        SocketAddr::V6(a) => {
            put(out, 0, &(libc::AF_INET6 as u16).to_ne_bytes());
            put(out, 2, &a.port().to_be_bytes());
            put(out, 4, &a.flowinfo().to_ne_bytes());
            put(out, 8, &a.ip().octets());
            put(out, 24, &a.scope_id().to_ne_bytes());
            SOCKADDR_V6_LEN
        }
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Reads a `sockaddr_in` / `sockaddr_in6`; `None` for another family or a short record.
pub(crate) fn parse_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(array(bytes, 0)?));
    let port = u16::from_be_bytes(array(bytes, 2)?);
    if family == libc::AF_INET {
        let ip = Ipv4Addr::from(array::<4>(bytes, 4)?);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    } else if family == libc::AF_INET6 {
        let flowinfo = u32::from_ne_bytes(array(bytes, 4)?);
        let ip = Ipv6Addr::from(array::<16>(bytes, 8)?);
        let scope_id = u32::from_ne_bytes(array(bytes, 24)?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            ip, port, flowinfo, scope_id,
        )))
    } else {
        None
    }
}

/// What the control messages of one received datagram told us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecvControl {
    /// Destination address of the datagram (`IP_PKTINFO` / `IPV6_PKTINFO`).
    pub local_ip: Option<IpAddr>,
    /// Interface the datagram arrived on, from the same record (scope of link-local v6).
    pub ifindex: u32,
    /// Cumulative count of datagrams the socket dropped for lack of queue space
    /// (`SO_RXQ_OVFL`; the kernel only attaches it once the count is non-zero).
    pub socket_drops: Option<u32>,
}

/// Walks the control messages the kernel attached to a datagram. Unknown or short records are
/// skipped; a malformed chain ends the walk.
pub(crate) fn parse_control(bytes: &[u8]) -> RecvControl {
    let mut out = RecvControl::default();
    let mut at = 0usize;
    while let Some(len) = array::<{ size_of::<usize>() }>(bytes, at).map(usize::from_ne_bytes) {
        let (Some(level), Some(kind)) = (
            array(bytes, at + CMSG_LEVEL_AT).map(i32::from_ne_bytes),
            array(bytes, at + CMSG_TYPE_AT).map(i32::from_ne_bytes),
        ) else {
            break;
        };
        let Some(end) = at
            .checked_add(len)
            .filter(|&e| len >= CMSG_HDR && e <= bytes.len())
        else {
            break;
        };
        let data = bytes.get(at + CMSG_HDR..end).unwrap_or_default();
        match (level, kind) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
                if let (Some(ifindex), Some(ip)) = (array::<4>(data, 0), array::<4>(data, 8)) {
                    out.ifindex = u32::from_ne_bytes(ifindex);
                    out.local_ip = Some(IpAddr::V4(Ipv4Addr::from(ip)));
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // struct in6_pktinfo { in6_addr ipi6_addr; unsigned int ipi6_ifindex; }
                if let (Some(ip), Some(ifindex)) = (array::<16>(data, 0), array::<4>(data, 16)) {
                    out.ifindex = u32::from_ne_bytes(ifindex);
                    out.local_ip = Some(IpAddr::V6(Ipv6Addr::from(ip)));
                }
            }
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                out.socket_drops = array::<4>(data, 0).map(u32::from_ne_bytes);
            }
            _ => {}
        }
        at = cmsg_align(end);
    }
    out
}

/// Writes a `UDP_SEGMENT` control message carrying `segment_size` and returns its length.
pub(crate) fn encode_udp_segment(out: &mut [u8; GSO_CMSG_SPACE], segment_size: u16) -> usize {
    out.fill(0);
    let cmsg_len = CMSG_HDR + size_of::<u16>();
    put(out, 0, &cmsg_len.to_ne_bytes());
    put(out, CMSG_LEVEL_AT, &libc::SOL_UDP.to_ne_bytes());
    put(out, CMSG_TYPE_AT, &libc::UDP_SEGMENT.to_ne_bytes());
    put(out, CMSG_HDR, &segment_size.to_ne_bytes());
    GSO_CMSG_SPACE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; cmsg_space(data.len())];
        put(&mut v, 0, &(CMSG_HDR + data.len()).to_ne_bytes());
        put(&mut v, CMSG_LEVEL_AT, &level.to_ne_bytes());
        put(&mut v, CMSG_TYPE_AT, &kind.to_ne_bytes());
        put(&mut v, CMSG_HDR, data);
        v
    }

    #[test]
    fn sockaddr_round_trips_both_families() {
        let addrs: [SocketAddr; 2] = [
            "192.0.2.7:5004".parse().expect("literal"),
            SocketAddr::V6(SocketAddrV6::new(
                "2001:db8::1".parse().expect("literal"),
                6000,
                0x12345,
                3,
            )),
        ];
        for addr in addrs {
            let mut buf = [0u8; SOCKADDR_MAX];
            let len = encode_sockaddr(&addr, &mut buf);
            assert_eq!(len, sockaddr_len(&addr));
            assert_eq!(parse_sockaddr(&buf[..len as usize]), Some(addr));
        }
    }

    #[test]
    fn sockaddr_matches_libc_layout() {
        let mut buf = [0u8; SOCKADDR_MAX];
        encode_sockaddr(&"10.1.2.3:4660".parse().expect("literal"), &mut buf);
        assert_eq!(&buf[2..4], &[0x12, 0x34], "port is big-endian");
        assert_eq!(&buf[4..8], &[10, 1, 2, 3]);
        assert_eq!(
            offset_of!(libc::sockaddr_in6, sin6_addr),
            8,
            "layout the codec assumes"
        );
        assert_eq!(offset_of!(libc::sockaddr_in6, sin6_scope_id), 24);
    }

    #[test]
    fn short_or_foreign_sockaddr_is_rejected() {
        assert_eq!(parse_sockaddr(&[]), None);
        let mut buf = [0u8; SOCKADDR_MAX];
        encode_sockaddr(&"[::1]:9".parse().expect("literal"), &mut buf);
        assert_eq!(parse_sockaddr(&buf[..20]), None);
        buf[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse_sockaddr(&buf), None);
    }

    #[test]
    fn control_yields_pktinfo_and_drop_counter() {
        let mut v4 = [0u8; 12];
        v4[0..4].copy_from_slice(&7u32.to_ne_bytes());
        v4[8..12].copy_from_slice(&[127, 0, 0, 9]);
        let mut bytes = cmsg(libc::IPPROTO_IP, libc::IP_PKTINFO, &v4);
        bytes.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &42u32.to_ne_bytes(),
        ));
        let c = parse_control(&bytes);
        assert_eq!(c.local_ip, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))));
        assert_eq!(c.ifindex, 7);
        assert_eq!(c.socket_drops, Some(42));
        assert!(bytes.len() <= RECV_CONTROL_LEN + 8);

        let mut v6 = [0u8; 20];
        v6[0..16].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let c = parse_control(&cmsg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &v6));
        assert_eq!(c.local_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn malformed_control_never_panics() {
        let good = cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &1u32.to_ne_bytes());
        for cut in 0..good.len() {
            let _ = parse_control(&good[..cut]);
        }
        // A cmsg_len pointing past the end, and one shorter than its own header.
        let mut bad = good.clone();
        bad[..size_of::<usize>()].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(parse_control(&bad), RecvControl::default());
        bad[..size_of::<usize>()].copy_from_slice(&1usize.to_ne_bytes());
        assert_eq!(parse_control(&bad), RecvControl::default());
    }

    #[test]
    fn udp_segment_cmsg_parses_as_one_record() {
        let mut out = [0u8; GSO_CMSG_SPACE];
        let len = encode_udp_segment(&mut out, 1200);
        assert_eq!(len, GSO_CMSG_SPACE);
        assert_eq!(
            usize::from_ne_bytes(out[..size_of::<usize>()].try_into().expect("width")),
            CMSG_HDR + 2
        );
        assert_eq!(u16::from_ne_bytes([out[CMSG_HDR], out[CMSG_HDR + 1]]), 1200);
    }
}
