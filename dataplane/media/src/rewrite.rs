//! Header rewriting for L2 relaying: MACs, addresses, UDP ports and TTL/hop limit, with one
//! RFC 1624 delta per checksum instead of one incremental update per field.
//!
//! A frame's old header words are summed once per packet ([`Plan::new`]); each target then adds
//! only its new words ([`Plan::apply`]): the egress port's source address and port (summed once
//! when the pipeline is built, [`EgressPlan`]) and the target's destination. Every byte written
//! lies in the Ethernet, IP and UDP headers (`..l4 + 8`), which is all a fan-out copy is
//! guaranteed to hold privately ([`crate::PacketBuf::duplicate_headers`]); the payload is never
//! read here and the UDP checksum is never recomputed over it.
//!
//! Why raw field offsets here and not `popmesh_wire` setters: the IPv4 and UDP setters keep their
//! checksum valid after every single write (seven folds per frame), which is exactly the cost
//! this module removes. The offsets are the fixed ones of RFC 791, RFC 8200 and RFC 768.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use crate::drop::DropReason;
use crate::flow::Target;
use crate::pipeline::Egress;

/// Field offsets, from the start of each header.
mod field {
    pub(super) const ETH_DST: usize = 0;
    pub(super) const ETH_SRC: usize = 6;
    pub(super) const V4_TTL: usize = 8;
    pub(super) const V4_CHECKSUM: usize = 10;
    pub(super) const V4_SRC: usize = 12;
    pub(super) const V4_DST: usize = 16;
    pub(super) const V6_HOP_LIMIT: usize = 7;
    pub(super) const V6_SRC: usize = 8;
    pub(super) const V6_DST: usize = 24;
    pub(super) const UDP_SRC_PORT: usize = 0;
    pub(super) const UDP_DST_PORT: usize = 2;
    pub(super) const UDP_CHECKSUM: usize = 6;
}

/// Folds the carries of a sum back into 16 bits (end-around carry). Two rounds are exact for
/// any `u32`: the first leaves at most `0x1fffe`, the second at most `0xffff`. Same result as
/// `popmesh_wire::checksum::fold`, without its loop.
#[inline]
fn fold(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Plain sum of the big-endian 16-bit words of a fixed-size field (unrolled by the compiler).
#[inline]
fn sum<const N: usize>(bytes: &[u8; N]) -> u32 {
    bytes
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum()
}

/// The one's complement negation of a sum's contribution: adding it removes the words.
#[inline]
fn neg(s: u32) -> u32 {
    u32::from(!fold(s))
}

/// `!fold(total)`: a checksum from `!old_checksum` plus every removed and added word (RFC 1624
/// equation 3, generalised to many words).
#[inline]
fn finish(total: u32) -> u16 {
    !fold(total)
}

/// A fixed-size field of `bytes` at `at`, if it fits.
#[inline]
fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<&[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// A fixed-size mutable field of `bytes` at `at`, if it fits.
#[inline]
fn array_mut<const N: usize>(bytes: &mut [u8], at: usize) -> Option<&mut [u8; N]> {
    bytes.get_mut(at..at.checked_add(N)?)?.try_into().ok()
}

/// An address as header bytes plus the sum of its 16-bit words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Addr {
    V4([u8; 4], u32),
    V6([u8; 16], u32),
}

impl Addr {
    #[inline]
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => {
                let o = a.octets();
                Addr::V4(o, sum(&o))
            }
            IpAddr::V6(a) => {
                let o = a.octets();
                Addr::V6(o, sum(&o))
            }
        }
    }

    #[inline]
    fn of_socket(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => {
                let o = a.ip().octets();
                Addr::V4(o, sum(&o))
            }
            SocketAddr::V6(a) => {
                let o = a.ip().octets();
                Addr::V6(o, sum(&o))
            }
        }
    }
}

/// What rewriting needs of one egress port, prepared when the pipeline is built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EgressPlan {
    mac: [u8; 6],
    gateway_mac: [u8; 6],
    mtu: usize,
    src: Addr,
    src_port: u16,
}

impl EgressPlan {
    pub(crate) fn new(eg: &Egress) -> Self {
        EgressPlan {
            mac: eg.mac,
            gateway_mac: eg.gateway_mac,
            mtu: usize::from(eg.mtu),
            src: Addr::of(eg.addr.ip()),
            src_port: eg.addr.port(),
        }
    }
}

/// Where a classified frame's headers are and what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Offset of the IP header.
    pub(crate) l3: u16,
    /// Offset of the UDP header.
    pub(crate) l4: u16,
    /// IP total length (v4) or header + payload length (v6): the L3 size on the wire.
    pub(crate) l3_len: u16,
    /// TTL or hop limit as received.
    pub(crate) hop_limit: u8,
    pub(crate) v4: bool,
}

/// Header bytes of the plain IPv4 frame: untagged Ethernet (14), IPv4 without options (20),
/// UDP (8).
pub(crate) const PLAIN_V4_LEN: usize = 14 + 20 + 8;

impl Layout {
    /// Untagged Ethernet and IPv4 without options: nearly every media frame. Planning and
    /// rewriting take a fixed-offset path for it.
    #[inline]
    pub(crate) fn is_plain_v4(&self) -> bool {
        self.v4 && self.l3 == 14 && self.l4 == 34
    }

    /// Bytes of Ethernet, IP and UDP header: everything rewriting touches.
    #[inline]
    pub(crate) fn header_len(&self) -> usize {
        usize::from(self.l4) + 8
    }
}

/// One frame's rewrite, shared by all of its copies: the old header words already negated and
/// summed, so each target adds only its own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    layout: Layout,
    /// `!ip_checksum`, minus the old addresses and TTL word, plus the new TTL word (IPv4).
    ip_base: u32,
    /// `!udp_checksum`, minus the old pseudo-header addresses and both old ports.
    udp_base: u32,
    /// The UDP checksum is 0: "none" over IPv4 (invalid over IPv6); it stays 0.
    udp_none: bool,
    /// The TTL or hop limit to write.
    hop_limit: u8,
}

/// Reads a big-endian word of a fixed-size header.
#[inline]
fn word<const N: usize>(h: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([h[at], h[at + 1]])
}

impl Plan {
    /// Sums the old words of `hdr`, the frame's first [`Layout::header_len`] bytes as received.
    /// `None` if `hdr` is shorter than the layout says (the classifier guarantees it is not)
    /// or the hop limit is already 0.
    #[inline(always)]
    pub(crate) fn new(hdr: &[u8], layout: Layout) -> Option<Plan> {
        if layout.is_plain_v4() {
            let h: &[u8; PLAIN_V4_LEN] = hdr.get(..PLAIN_V4_LEN)?.try_into().ok()?;
            return Plan::new_plain_v4(h, layout);
        }
        Plan::new_general(hdr, layout)
    }

    /// [`Plan::new`] for [`Layout::is_plain_v4`] frames, through one fixed-size view: the same
    /// sums as [`Plan::new_general`] with every offset a constant.
    #[inline(always)]
    fn new_plain_v4(h: &[u8; PLAIN_V4_LEN], layout: Layout) -> Option<Plan> {
        const IP: usize = 14;
        const UDP: usize = 34;
        let hop_limit = layout.hop_limit.checked_sub(1)?;
        let w = |at: usize| u32::from(u16::from_be_bytes([h[at], h[at + 1]]));
        let udp_csum = w(UDP + field::UDP_CHECKSUM);
        let ports = w(UDP + field::UDP_SRC_PORT) + w(UDP + field::UDP_DST_PORT);
        let addrs = w(IP + field::V4_SRC)
            + w(IP + field::V4_SRC + 2)
            + w(IP + field::V4_DST)
            + w(IP + field::V4_DST + 2);
        let new_ttl_word = u32::from(u16::from_be_bytes([hop_limit, h[IP + field::V4_TTL + 1]]));
        let ip_base = (!w(IP + field::V4_CHECKSUM) & 0xffff)
            + neg(addrs + w(IP + field::V4_TTL))
            + new_ttl_word;
        Some(Plan {
            layout,
            ip_base,
            udp_base: (!udp_csum & 0xffff) + neg(addrs + ports),
            udp_none: udp_csum == 0,
            hop_limit,
        })
    }

    /// [`Plan::new`] for any layout.
    #[inline(always)]
    fn new_general(hdr: &[u8], layout: Layout) -> Option<Plan> {
        let l3 = usize::from(layout.l3);
        let hop_limit = layout.hop_limit.checked_sub(1)?;
        let udp: &[u8; 8] = array(hdr, usize::from(layout.l4))?;
        let udp_csum = word(udp, field::UDP_CHECKSUM);
        let ports = sum(array::<4>(udp, field::UDP_SRC_PORT)?);
        let (addrs, ip_base) = if layout.v4 {
            let ip: &[u8; 20] = array(hdr, l3)?;
            let addrs = sum(array::<8>(ip, field::V4_SRC)?);
            let ttl_word = word(ip, field::V4_TTL);
            let new_ttl_word = u16::from_be_bytes([hop_limit, ip[field::V4_TTL + 1]]);
            let base = u32::from(!word(ip, field::V4_CHECKSUM))
                + neg(addrs + u32::from(ttl_word))
                + u32::from(new_ttl_word);
            (addrs, base)
        } else {
            (sum(array::<32>(hdr, l3 + field::V6_SRC)?), 0)
        };
        Some(Plan {
            layout,
            ip_base,
            udp_base: u32::from(!udp_csum) + neg(addrs + ports),
            udp_none: udp_csum == 0,
            hop_limit,
        })
    }

    /// Whether the frame may leave through `eg` for `t` at all; cheap, so the pipeline asks
    /// before it spends a buffer on a copy.
    ///
    /// # Errors
    /// [`DropReason::TooBig`] over the egress MTU, [`DropReason::FamilyMismatch`] when the
    /// frame, the egress address and the target are not all IPv4 or all IPv6.
    #[inline]
    pub(crate) fn check(&self, eg: &EgressPlan, t: &Target) -> Result<(), DropReason> {
        if usize::from(self.layout.l3_len) > eg.mtu {
            return Err(DropReason::TooBig);
        }
        match (self.layout.v4, eg.src, t.addr) {
            (true, Addr::V4(..), SocketAddr::V4(_)) | (false, Addr::V6(..), SocketAddr::V6(_)) => {
                Ok(())
            }
            _ => Err(DropReason::FamilyMismatch),
        }
    }

    /// Rewrites `hdr` (at least the frame's first [`Layout::header_len`] bytes, holding the
    /// headers as received) for target `t` leaving through `eg`. Call [`Plan::check`] first:
    /// this does not check the MTU.
    ///
    /// # Errors
    /// [`DropReason::FamilyMismatch`] as in [`Plan::check`], and [`DropReason::NoBuffer`] if
    /// `hdr` is shorter than the headers (a backend that broke the `duplicate_headers`
    /// contract). Nothing is written on error.
    #[inline(always)]
    pub(crate) fn apply(
        &self,
        hdr: &mut [u8],
        eg: &EgressPlan,
        t: &Target,
    ) -> Result<(), DropReason> {
        if let (true, Addr::V4(src, s), SocketAddr::V4(dst)) =
            (self.layout.is_plain_v4(), &eg.src, &t.addr)
        {
            let h: &mut [u8; PLAIN_V4_LEN] = hdr
                .get_mut(..PLAIN_V4_LEN)
                .and_then(|h| h.try_into().ok())
                .ok_or(DropReason::NoBuffer)?;
            self.apply_plain_v4(h, eg, (src, *s), dst, t.mac.unwrap_or(eg.gateway_mac));
            return Ok(());
        }
        self.apply_general(hdr, eg, t)
    }

    /// [`Plan::apply`] to a [`Layout::is_plain_v4`] frame from an IPv4 egress to an IPv4
    /// target: the same bytes as [`Plan::apply_general`], written through one fixed-size view.
    #[inline(always)]
    fn apply_plain_v4(
        &self,
        h: &mut [u8; PLAIN_V4_LEN],
        eg: &EgressPlan,
        (src, s): (&[u8; 4], u32),
        dst: &SocketAddrV4,
        mac: [u8; 6],
    ) {
        const IP: usize = 14;
        const UDP: usize = 34;
        let d_octets = dst.ip().octets();
        let d = sum(&d_octets);
        h[field::ETH_DST..field::ETH_DST + 6].copy_from_slice(&mac);
        h[field::ETH_SRC..field::ETH_SRC + 6].copy_from_slice(&eg.mac);
        h[IP + field::V4_TTL] = self.hop_limit;
        h[IP + field::V4_SRC..IP + field::V4_SRC + 4].copy_from_slice(src);
        h[IP + field::V4_DST..IP + field::V4_DST + 4].copy_from_slice(&d_octets);
        let ip_csum = finish(self.ip_base + s + d);
        h[IP + field::V4_CHECKSUM..IP + field::V4_CHECKSUM + 2]
            .copy_from_slice(&ip_csum.to_be_bytes());
        let dst_port = dst.port();
        h[UDP + field::UDP_SRC_PORT..UDP + field::UDP_SRC_PORT + 2]
            .copy_from_slice(&eg.src_port.to_be_bytes());
        h[UDP + field::UDP_DST_PORT..UDP + field::UDP_DST_PORT + 2]
            .copy_from_slice(&dst_port.to_be_bytes());
        if !self.udp_none {
            let csum = match finish(
                self.udp_base + s + d + u32::from(eg.src_port) + u32::from(dst_port),
            ) {
                // RFC 768: a computed 0 is sent as all ones.
                0 => 0xffff,
                c => c,
            };
            h[UDP + field::UDP_CHECKSUM..UDP + field::UDP_CHECKSUM + 2]
                .copy_from_slice(&csum.to_be_bytes());
        }
    }

    /// [`Plan::apply`] for any layout and family (errors as there). Out of line, so that the
    /// plain IPv4 path inlines into the pipeline without it.
    #[inline(never)]
    pub(crate) fn apply_general(
        &self,
        hdr: &mut [u8],
        eg: &EgressPlan,
        t: &Target,
    ) -> Result<(), DropReason> {
        let hdr = hdr
            .get_mut(..self.layout.header_len())
            .ok_or(DropReason::NoBuffer)?;
        // Disjoint views of the three headers; the classifier put l3 >= 14 and l4 >= l3 + 20.
        let (front, udp) = hdr
            .split_at_mut_checked(usize::from(self.layout.l4))
            .ok_or(DropReason::NoBuffer)?;
        let (eth, ip) = front
            .split_at_mut_checked(usize::from(self.layout.l3))
            .ok_or(DropReason::NoBuffer)?;
        let (Some(eth), Some(udp)) = (array_mut::<12>(eth, 0), array_mut::<8>(udp, 0)) else {
            return Err(DropReason::NoBuffer);
        };
        let dst_port = t.addr.port();
        let addr_sum = match (self.layout.v4, &eg.src, Addr::of_socket(&t.addr)) {
            (true, Addr::V4(src, s), Addr::V4(dst, d)) => {
                let ip: &mut [u8; 20] = array_mut(ip, 0).ok_or(DropReason::NoBuffer)?;
                ip[field::V4_SRC..field::V4_SRC + 4].copy_from_slice(src);
                ip[field::V4_DST..field::V4_DST + 4].copy_from_slice(&dst);
                ip[field::V4_TTL] = self.hop_limit;
                let csum = finish(self.ip_base + s + d);
                ip[field::V4_CHECKSUM..field::V4_CHECKSUM + 2].copy_from_slice(&csum.to_be_bytes());
                s + d
            }
            (false, Addr::V6(src, s), Addr::V6(dst, d)) => {
                let ip: &mut [u8; 40] = array_mut(ip, 0).ok_or(DropReason::NoBuffer)?;
                ip[field::V6_SRC..field::V6_SRC + 16].copy_from_slice(src);
                ip[field::V6_DST..field::V6_DST + 16].copy_from_slice(&dst);
                ip[field::V6_HOP_LIMIT] = self.hop_limit;
                s + d
            }
            _ => return Err(DropReason::FamilyMismatch),
        };
        eth[field::ETH_DST..field::ETH_DST + 6].copy_from_slice(&t.mac.unwrap_or(eg.gateway_mac));
        eth[field::ETH_SRC..field::ETH_SRC + 6].copy_from_slice(&eg.mac);
        udp[field::UDP_SRC_PORT..field::UDP_SRC_PORT + 2]
            .copy_from_slice(&eg.src_port.to_be_bytes());
        udp[field::UDP_DST_PORT..field::UDP_DST_PORT + 2].copy_from_slice(&dst_port.to_be_bytes());
        if !self.udp_none {
            let csum = match finish(
                self.udp_base + addr_sum + u32::from(eg.src_port) + u32::from(dst_port),
            ) {
                // RFC 768: a computed 0 is sent as all ones.
                0 => 0xffff,
                c => c,
            };
            udp[field::UDP_CHECKSUM..field::UDP_CHECKSUM + 2].copy_from_slice(&csum.to_be_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::udp_frame;
    use popmesh_wire::{ethernet, ipv4, ipv6, udp};
    use proptest::prelude::*;

    /// Classifies a test frame the way the pipeline does (no VLAN, no extension headers).
    fn layout(frame: &[u8]) -> Layout {
        let l2 = ethernet::parse_l2(frame).expect("l2");
        let l3 = l2.l3_offset;
        if l2.ethertype == ethernet::ethertype::IPV4 {
            let ip = ipv4::Packet::new_checked(&frame[l3..]).expect("v4");
            Layout {
                l3: l3 as u16,
                l4: (l3 + ip.header_len()) as u16,
                l3_len: ip.total_len(),
                hop_limit: ip.ttl(),
                v4: true,
            }
        } else {
            let ip = ipv6::Packet::new_checked(&frame[l3..]).expect("v6");
            Layout {
                l3: l3 as u16,
                l4: (l3 + 40) as u16,
                l3_len: 40 + ip.payload_len(),
                hop_limit: ip.hop_limit(),
                v4: false,
            }
        }
    }

    /// The checksums a full recomputation over the rewritten frame gives.
    fn recomputed(frame: &[u8], l: Layout) -> (Option<u16>, u16) {
        let mut f = frame.to_vec();
        let l3 = usize::from(l.l3);
        let l4 = usize::from(l.l4);
        let end = l3 + usize::from(l.l3_len);
        if l.v4 {
            let mut ip = ipv4::Packet::new_unchecked(&mut f[l3..end]);
            ip.fill_checksum();
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            let ip_sum = ip.checksum();
            let mut u = udp::Packet::new_unchecked(&mut f[l4..end]);
            u.fill_checksum_v4(s, d);
            (Some(ip_sum), u.checksum())
        } else {
            let ip = ipv6::Packet::new_unchecked(&f[l3..end]);
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            let mut u = udp::Packet::new_unchecked(&mut f[l4..end]);
            u.fill_checksum_v6(s, d);
            (None, u.checksum())
        }
    }

    fn stored(frame: &[u8], l: Layout) -> (Option<u16>, u16) {
        let l3 = usize::from(l.l3);
        let l4 = usize::from(l.l4);
        let read = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
        let ip = l.v4.then(|| read(l3 + field::V4_CHECKSUM));
        (ip, read(l4 + field::UDP_CHECKSUM))
    }

    fn egress(addr: SocketAddr) -> Egress {
        Egress {
            addr,
            mac: [2, 0, 0, 0, 0, 0xee],
            gateway_mac: [2, 0, 0, 0, 0, 0xff],
            mtu: 9000,
        }
    }

    fn target(addr: SocketAddr) -> Target {
        Target {
            port: 0,
            addr,
            mac: Some([2, 0, 0, 0, 0, 9]),
        }
    }

    /// Rewrites `frame` touching only its header bytes and returns the result.
    fn rewritten(frame: &[u8], eg: &Egress, t: &Target) -> Result<Vec<u8>, DropReason> {
        let l = layout(frame);
        let plan = Plan::new(&frame[..l.header_len()], l).ok_or(DropReason::TtlExpired)?;
        let mut hdr = frame[..l.header_len()].to_vec();
        plan.apply(&mut hdr, &EgressPlan::new(eg), t)?;
        let mut out = hdr;
        out.extend_from_slice(&frame[l.header_len()..]);
        Ok(out)
    }

    fn v4() -> impl Strategy<Value = SocketAddr> {
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::from((a, p)))
    }

    fn v6() -> impl Strategy<Value = SocketAddr> {
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::from((a, p)))
    }

    proptest! {
        /// The single delta gives exactly what a full recomputation gives, for both checksums,
        /// whatever the addresses, ports, TTL and payload (so also the 0 -> 0xFFFF case).
        #[test]
        fn single_delta_equals_full_recompute_v4(
            src in v4(), dst in v4(), eg in v4(), to in v4(), ttl in 2u8..,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut f = udp_frame(src, dst, &payload, None);
            let l = layout(&f);
            ipv4::Packet::new_unchecked(&mut f[usize::from(l.l3)..]).set_ttl(ttl);
            let out = rewritten(&f, &egress(eg), &target(to)).expect("rewrite");
            let l = layout(&out);
            prop_assert_eq!(stored(&out, l), recomputed(&out, l));
            prop_assert_eq!(l.hop_limit, ttl - 1);
            let ip = ipv4::Packet::new_checked(&out[usize::from(l.l3)..]).expect("v4");
            prop_assert_eq!((ip.src_addr(), ip.dst_addr()), match (eg.ip(), to.ip()) {
                (IpAddr::V4(a), IpAddr::V4(b)) => (a, b),
                _ => unreachable!(),
            });
            prop_assert_eq!(&out[usize::from(l.l4) + 8..], &payload[..]);
        }

        #[test]
        fn single_delta_equals_full_recompute_v6(
            src in v6(), dst in v6(), eg in v6(), to in v6(), hops in 2u8..,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut f = udp_frame(src, dst, &payload, None);
            let l = layout(&f);
            ipv6::Packet::new_unchecked(&mut f[usize::from(l.l3)..]).set_hop_limit(hops);
            let out = rewritten(&f, &egress(eg), &target(to)).expect("rewrite");
            let l = layout(&out);
            prop_assert_eq!(stored(&out, l), recomputed(&out, l));
            prop_assert_eq!(l.hop_limit, hops - 1);
            let ip = ipv6::Packet::new_checked(&out[usize::from(l.l3)..]).expect("v6");
            prop_assert_eq!(
                (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr())),
                (eg.ip(), to.ip())
            );
        }

        /// Arbitrary (possibly invalid) checksums are carried forward exactly as if every field
        /// had been updated one at a time with the wire crate's setters.
        #[test]
        fn single_delta_equals_stepwise_updates(
            src in v4(), dst in v4(), eg in v4(), to in v4(), ip_csum: u16, udp_csum in 1u16..,
        ) {
            let mut f = udp_frame(src, dst, b"payload", None);
            let l = layout(&f);
            let (l3, l4) = (usize::from(l.l3), usize::from(l.l4));
            ipv4::Packet::new_unchecked(&mut f[l3..]).set_checksum(ip_csum);
            udp::Packet::new_unchecked(&mut f[l4..]).set_checksum(udp_csum);
            let out = rewritten(&f, &egress(eg), &target(to)).expect("rewrite");

            let mut step = f.clone();
            let (IpAddr::V4(new_src), IpAddr::V4(new_dst)) = (eg.ip(), to.ip()) else { unreachable!() };
            let mut ip = ipv4::Packet::new_unchecked(&mut step[l3..]);
            let (old_src, old_dst) = (ip.src_addr(), ip.dst_addr());
            ip.set_src_addr(new_src);
            ip.set_dst_addr(new_dst);
            ip.set_ttl(63);
            let mut u = udp::Packet::new_unchecked(&mut step[l4..]);
            u.update_checksum_for_addr_v4(old_src, new_src);
            u.update_checksum_for_addr_v4(old_dst, new_dst);
            u.set_src_port(eg.port());
            u.set_dst_port(to.port());
            prop_assert_eq!(stored(&out, l), stored(&step, l));
        }
    }

    proptest! {
        /// The fixed-offset plan and rewrite of plain IPv4 frames give exactly what the general
        /// ones give, whatever the header bytes hold (checksums, TTL, addresses, ports), the
        /// target and its MAC.
        #[test]
        fn plain_v4_path_equals_the_general_one(
            header in proptest::collection::vec(any::<u8>(), PLAIN_V4_LEN),
            hop_limit in 1u8..=255,
            l3_len in 28u16..1500,
            eg_addr in v4(),
            t_addr in v4(),
            mac in proptest::option::of(any::<[u8; 6]>()),
        ) {
            let layout = Layout { l3: 14, l4: 34, l3_len, hop_limit, v4: true };
            prop_assert!(layout.is_plain_v4());
            let Some(plan) = Plan::new(&header, layout) else {
                return Err(TestCaseError::fail("no plan for a hop limit above 0"));
            };
            prop_assert_eq!(Some(plan), Plan::new_general(&header, layout));
            let eg = EgressPlan::new(&egress(eg_addr));
            let t = Target { port: 0, addr: t_addr, mac };
            let (mut fast, mut general) = (header.clone(), header.clone());
            prop_assert_eq!(plan.apply(&mut fast, &eg, &t), Ok(()));
            prop_assert_eq!(plan.apply_general(&mut general, &eg, &t), Ok(()));
            prop_assert_eq!(fast, general);
        }
    }

    proptest! {
        #[test]
        fn two_round_fold_matches_the_wire_crate(s: u32) {
            prop_assert_eq!(fold(s), popmesh_wire::checksum::fold(s));
        }
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        let mut f = udp_frame(
            "198.51.100.7:5000".parse().unwrap(),
            "192.0.2.1:40000".parse().unwrap(),
            b"x",
            None,
        );
        let l = layout(&f);
        udp::Packet::new_unchecked(&mut f[usize::from(l.l4)..]).set_checksum(0);
        let out = rewritten(
            &f,
            &egress("192.0.2.1:40000".parse().unwrap()),
            &target("203.0.113.9:6000".parse().unwrap()),
        )
        .expect("rewrite");
        assert_eq!(stored(&out, l).1, 0);
        assert_eq!(stored(&out, l).0, recomputed(&out, l).0);
    }

    #[test]
    fn mismatches_and_short_headers_write_nothing() {
        let f = udp_frame(
            "198.51.100.7:5000".parse().unwrap(),
            "192.0.2.1:40000".parse().unwrap(),
            b"x",
            None,
        );
        let l = layout(&f);
        let plan = Plan::new(&f[..l.header_len()], l).expect("plan");
        let v4 = EgressPlan::new(&egress("192.0.2.1:40000".parse().unwrap()));
        let v6 = EgressPlan::new(&egress("[2001:db8::1]:40000".parse().unwrap()));
        let mut hdr = f[..l.header_len()].to_vec();
        let t4 = target("203.0.113.9:6000".parse().unwrap());
        let t6 = target("[2001:db8::9]:6000".parse().unwrap());
        assert_eq!(plan.check(&v6, &t4), Err(DropReason::FamilyMismatch));
        assert_eq!(plan.check(&v4, &t6), Err(DropReason::FamilyMismatch));
        assert_eq!(plan.check(&v4, &t4), Ok(()));
        let small = EgressPlan::new(&Egress {
            mtu: l.l3_len - 1,
            ..egress("192.0.2.1:40000".parse().unwrap())
        });
        assert_eq!(plan.check(&small, &t4), Err(DropReason::TooBig));
        assert_eq!(
            plan.apply(&mut hdr, &v6, &t4),
            Err(DropReason::FamilyMismatch)
        );
        assert_eq!(
            plan.apply(&mut hdr, &v4, &t6),
            Err(DropReason::FamilyMismatch)
        );
        let mut short = hdr[..l.header_len() - 1].to_vec();
        assert_eq!(plan.apply(&mut short, &v4, &t4), Err(DropReason::NoBuffer));
        assert_eq!(hdr, f[..l.header_len()]);
        // Hop limit 1 cannot be forwarded.
        let mut ttl1 = f.clone();
        ipv4::Packet::new_unchecked(&mut ttl1[usize::from(l.l3)..]).set_ttl(0);
        let l0 = layout(&ttl1);
        assert!(Plan::new(&ttl1[..l0.header_len()], l0).is_none());
    }
}
