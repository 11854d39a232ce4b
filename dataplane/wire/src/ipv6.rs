//! IPv6 headers (RFC 8200) and a bounded walk over extension headers.

use core::borrow::Borrow;
use core::net::Ipv6Addr;

use crate::bytes::{read_u16, read_u32, write_u16, write_u32};
use crate::{Error, Result};

/// Next-header value of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// Next-header value of UDP.
pub const PROTO_UDP: u8 = 17;
/// Hop-by-Hop Options extension header.
pub const PROTO_HOP_BY_HOP: u8 = 0;
/// Routing extension header.
pub const PROTO_ROUTING: u8 = 43;
/// Fragment extension header.
pub const PROTO_FRAGMENT: u8 = 44;
/// Encapsulating Security Payload (opaque; the walk stops there).
pub const PROTO_ESP: u8 = 50;
/// Authentication Header.
pub const PROTO_AH: u8 = 51;
/// No Next Header.
pub const PROTO_NO_NEXT_HEADER: u8 = 59;
/// Destination Options extension header.
pub const PROTO_DST_OPTS: u8 = 60;

/// Fixed header length.
pub const HEADER_LEN: usize = 40;
/// [`Packet::upper_layer`] gives up after this many extension headers; real traffic uses two
/// or three, and a bound keeps the per-packet cost constant on hostile input.
pub const MAX_EXTENSION_HEADERS: usize = 8;

const FRAGMENT_HEADER_LEN: usize = 8;

mod field {
    use crate::bytes::Field;

    pub(super) const VER_TC_FLOW: usize = 0;
    pub(super) const PAYLOAD_LEN: usize = 4;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Field = 8..24;
    pub(super) const DST_ADDR: Field = 24..40;
}

/// A view of an IPv6 packet.
///
/// Bytes after `40 + payload_len` (L2 padding) are ignored by every accessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks.
    ///
    /// # Panics
    /// Fixed-field accessors panic if the buffer is shorter than 40 bytes; use
    /// [`new_checked`](Self::new_checked) for untrusted bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len) and a version check.
    ///
    /// # Errors
    /// - [`Error::Truncated`] if the buffer is shorter than 40 bytes plus the payload length.
    /// - [`Error::Malformed`] if the version is not 6.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed("IPv6 version"));
        }
        Ok(packet)
    }

    /// Checks `40 + payload_len <= buffer len`, which makes every accessor panic-free.
    ///
    /// # Errors
    /// [`Error::Truncated`] otherwise.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn data(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version field (6 for a packet that passed `new_checked`).
    pub fn version(&self) -> u8 {
        self.data()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (read_u32(self.data(), field::VER_TC_FLOW) >> 20) as u8
    }

    /// 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        read_u32(self.data(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length: bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.data(), field::PAYLOAD_LEN)
    }

    /// Next header of the fixed header (may be an extension header; see
    /// [`upper_layer`](Self::upper_layer)).
    pub fn next_header(&self) -> u8 {
        self.data()[field::NXT_HDR]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.data()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.data()[field::SRC_ADDR])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.data()[field::DST_ADDR])
    }

    /// Bytes after the fixed header up to the payload length (extension headers included).
    pub fn payload(&self) -> &[u8] {
        self.data()
            .get(HEADER_LEN..HEADER_LEN + usize::from(self.payload_len()))
            .unwrap_or_default()
    }

    /// Walks the extension headers (Hop-by-Hop 0, Routing 43, Fragment 44, Destination
    /// Options 60, AH 51) with bounds checks and at most [`MAX_EXTENSION_HEADERS`] of them.
    ///
    /// Returns `(protocol, offset)`: the first next-header value that is not one of those
    /// extension headers, and the offset of that header from the start of the IPv6 header
    /// (`offset <= 40 + payload_len`). ESP (50), No Next Header (59) and unknown values are
    /// returned as-is.
    ///
    /// Fragments: an atomic fragment header (offset 0, M clear, RFC 6946) is skipped like any
    /// other extension header. A real fragment (nonzero offset or M set) is *returned*, as
    /// `(PROTO_FRAGMENT, offset of the fragment header)`, rather than reported as an error:
    /// it is valid IPv6, the upper-layer header is missing or its payload incomplete, and the
    /// caller decides (count and drop, or punt for reassembly).
    ///
    /// # Errors
    /// - [`Error::Truncated`] if an extension header runs past the payload length.
    /// - [`Error::Malformed`] if Hop-by-Hop is not the first header, or the chain is longer than
    ///   [`MAX_EXTENSION_HEADERS`].
    pub fn upper_layer(&self) -> Result<(u8, usize)> {
        self.check_len()?;
        let data = self.data();
        let end = HEADER_LEN + usize::from(self.payload_len());
        let mut next = self.next_header();
        let mut offset = HEADER_LEN;
        for index in 0..=MAX_EXTENSION_HEADERS {
            let len = match next {
                PROTO_HOP_BY_HOP | PROTO_ROUTING | PROTO_DST_OPTS | PROTO_AH | PROTO_FRAGMENT
                    if index == MAX_EXTENSION_HEADERS =>
                {
                    return Err(Error::Malformed("too many IPv6 extension headers"));
                }
                PROTO_HOP_BY_HOP if index != 0 => {
                    return Err(Error::Malformed("IPv6 hop-by-hop header not first"));
                }
                PROTO_HOP_BY_HOP | PROTO_ROUTING | PROTO_DST_OPTS => {
                    // Hdr Ext Len counts 8-octet units, not including the first 8 octets.
                    (usize::from(ext_byte(data, offset + 1, end)?) + 1) * 8
                }
                PROTO_AH => {
                    // RFC 4302: Payload Len counts 4-octet units, minus 2.
                    (usize::from(ext_byte(data, offset + 1, end)?) + 2) * 4
                }
                PROTO_FRAGMENT => {
                    let frag = ext_u16(data, offset + 2, end)?;
                    if frag & 0xfff9 != 0 {
                        // Offset (upper 13 bits) nonzero or M (bit 0) set.
                        ext_u16(data, offset + FRAGMENT_HEADER_LEN - 2, end)?;
                        return Ok((PROTO_FRAGMENT, offset));
                    }
                    FRAGMENT_HEADER_LEN
                }
                _ => return Ok((next, offset)),
            };
            let header_end = offset + len;
            if header_end > end {
                return Err(Error::Truncated);
            }
            next = data[offset];
            offset = header_end;
        }
        // The loop returns on its last iteration at the latest; kept for the type checker.
        Err(Error::Malformed("too many IPv6 extension headers"))
    }

    /// The upper-layer protocol and its bytes (header and payload, up to the payload length),
    /// as located by [`upper_layer`](Self::upper_layer).
    ///
    /// # Errors
    /// As [`upper_layer`](Self::upper_layer).
    pub fn upper_layer_payload(&self) -> Result<(u8, &[u8])> {
        let (proto, offset) = self.upper_layer()?;
        let end = HEADER_LEN + usize::from(self.payload_len());
        let bytes = self.data().get(offset..end).ok_or(Error::Truncated)?;
        Ok((proto, bytes))
    }
}

/// A byte of an extension header, which must lie before `end` (the payload length).
fn ext_byte(data: &[u8], at: usize, end: usize) -> Result<u8> {
    if at >= end {
        return Err(Error::Truncated);
    }
    data.get(at).copied().ok_or(Error::Truncated)
}

fn ext_u16(data: &[u8], at: usize, end: usize) -> Result<u16> {
    if at + 2 > end {
        return Err(Error::Truncated);
    }
    crate::bytes::get_u16(data, at).ok_or(Error::Truncated)
}

fn addr(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(bytes);
    Ipv6Addr::from(octets)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the hop limit (IPv6 has no header checksum to update).
    pub fn set_hop_limit(&mut self, value: u8) {
        self.data_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address. Accepts an `Ipv6Addr` or a reference to one. Upper-layer
    /// checksums cover it through the pseudo-header: see
    /// [`udp::Packet::update_checksum_for_addr_v6`](crate::udp::Packet::update_checksum_for_addr_v6).
    pub fn set_src_addr(&mut self, addr: impl Borrow<Ipv6Addr>) {
        self.data_mut()[field::SRC_ADDR].copy_from_slice(&addr.borrow().octets());
    }

    /// Sets the destination address. Accepts an `Ipv6Addr` or a reference to one; see
    /// [`set_src_addr`](Self::set_src_addr) about upper-layer checksums.
    pub fn set_dst_addr(&mut self, addr: impl Borrow<Ipv6Addr>) {
        self.data_mut()[field::DST_ADDR].copy_from_slice(&addr.borrow().octets());
    }

    /// Writes version 6, the traffic class and the flow label (masked to 20 bits).
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        write_u32(self.data_mut(), field::VER_TC_FLOW, word);
    }

    /// Sets the payload length. A value beyond the buffer makes
    /// [`payload`](Self::payload) empty rather than panic.
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(self.data_mut(), field::PAYLOAD_LEN, value);
    }

    /// Sets the next-header field of the fixed header.
    pub fn set_next_header(&mut self, value: u8) {
        self.data_mut()[field::NXT_HDR] = value;
    }

    /// Mutable bytes after the fixed header up to the payload length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.data_mut().get_mut(HEADER_LEN..end).unwrap_or_default()
    }
}

/// A fixed IPv6 header (no extension headers) as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header of the fixed header.
    pub next_header: u8,
    /// Payload length in bytes.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// Reads the fixed header.
    ///
    /// # Errors
    /// Whatever [`Packet::new_checked`] would reject.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed("IPv6 version"));
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len(),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Header length emitted by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 40-byte fixed header into the front of the packet's buffer.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than 40 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        if packet.data().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        packet.set_version_class_flow(self.traffic_class, self.flow_label);
        packet.set_payload_len(self.payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv6 2001:db8::1 -> 2001:db8:0:1::2, TC 0x2e, flow 0x12345, Hop-by-Hop (PadN) ->
    /// Destination Options (PadN) -> UDP 5004 -> 6000 (valid checksum) carrying RTP.
    pub(crate) const PACKET: [u8; 80] = [
        0x62, 0xe1, 0x23, 0x45, 0x00, 0x28, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, // fixed header
        0x3c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, // hop-by-hop, next = dst opts
        0x11, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, // dst opts, next = UDP
        0x13, 0x8c, 0x17, 0x70, 0x00, 0x18, 0xeb, 0xc6, // UDP
        0x80, 0x6f, 0x00, 0x01, 0x00, 0x00, 0x03, 0xe8, 0x11, 0x22, 0x33, 0x44, 0x61, 0x62, 0x63,
        0x64,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).expect("fixture is valid");
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x2e);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 40);
        assert_eq!(p.next_header(), PROTO_HOP_BY_HOP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(
            p.src_addr(),
            "2001:db8::1".parse::<Ipv6Addr>().expect("literal")
        );
        assert_eq!(
            p.dst_addr(),
            "2001:db8:0:1::2".parse::<Ipv6Addr>().expect("literal")
        );
        assert_eq!(p.upper_layer(), Ok((PROTO_UDP, 56)));
        let (proto, udp) = p.upper_layer_payload().expect("valid chain");
        assert_eq!(proto, PROTO_UDP);
        assert_eq!(udp, &PACKET[56..]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            Packet::new_checked(&PACKET[..39]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&PACKET[..79]).err(),
            Some(Error::Truncated)
        );
        let mut v4 = PACKET;
        v4[0] = 0x42;
        assert_eq!(
            Packet::new_checked(&v4[..]).err(),
            Some(Error::Malformed("IPv6 version"))
        );
    }

    #[test]
    fn extension_header_past_payload_is_truncated() {
        let mut bytes = PACKET;
        bytes[41] = 5; // hop-by-hop claims 48 bytes
        let p = Packet::new_checked(&bytes[..]).expect("fixed header is fine");
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
        let mut cut = PACKET;
        cut[4..6].copy_from_slice(&4u16.to_be_bytes()); // payload ends inside hop-by-hop
        let p = Packet::new_checked(&cut[..]).expect("fixed header is fine");
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
    }

    #[test]
    fn hop_by_hop_must_be_first() {
        let mut bytes = PACKET;
        bytes[6] = PROTO_DST_OPTS;
        bytes[40] = PROTO_HOP_BY_HOP;
        let p = Packet::new_checked(&bytes[..]).expect("fixed header is fine");
        assert_eq!(
            p.upper_layer(),
            Err(Error::Malformed("IPv6 hop-by-hop header not first"))
        );
    }

    #[test]
    fn chain_length_is_bounded() {
        let mut bytes = [0u8; 40 + 8 * 9 + 8];
        bytes[0] = 0x60;
        bytes[4..6].copy_from_slice(&(8 * 9 + 8u16).to_be_bytes());
        bytes[6] = PROTO_DST_OPTS;
        for i in 0..9 {
            bytes[40 + 8 * i] = PROTO_DST_OPTS;
        }
        let p = Packet::new_checked(&bytes[..]).expect("fixed header is fine");
        assert_eq!(
            p.upper_layer(),
            Err(Error::Malformed("too many IPv6 extension headers"))
        );
        // Exactly eight extension headers is still fine.
        bytes[40 + 8 * 7] = PROTO_UDP;
        let p = Packet::new_checked(&bytes[..]).expect("fixed header is fine");
        assert_eq!(p.upper_layer(), Ok((PROTO_UDP, 40 + 64)));
    }

    #[test]
    fn fragments_and_opaque_headers() {
        let mut bytes = [0u8; 40 + 8 + 12 + 8];
        bytes[0] = 0x60;
        bytes[4..6].copy_from_slice(&28u16.to_be_bytes());
        bytes[6] = PROTO_FRAGMENT;
        bytes[40] = PROTO_AH;
        // Atomic fragment (offset 0, M clear): skipped.
        bytes[48] = PROTO_UDP;
        bytes[49] = 1; // AH of (1 + 2) * 4 = 12 bytes
        let p = Packet::new_checked(&bytes[..]).expect("fixed header is fine");
        assert_eq!(p.upper_layer(), Ok((PROTO_UDP, 60)));
        // First fragment (M set): returned to the caller.
        bytes[43] = 0x01;
        let p = Packet::new_checked(&bytes[..]).expect("fixed header is fine");
        assert_eq!(p.upper_layer(), Ok((PROTO_FRAGMENT, 40)));
        // Later fragment (offset 185 * 8).
        bytes[42..44].copy_from_slice(&(185u16 << 3).to_be_bytes());
        let p = Packet::new_checked(&bytes[..]).expect("fixed header is fine");
        assert_eq!(p.upper_layer(), Ok((PROTO_FRAGMENT, 40)));
        // ESP is opaque.
        bytes[6] = PROTO_ESP;
        let p = Packet::new_checked(&bytes[..]).expect("fixed header is fine");
        assert_eq!(p.upper_layer(), Ok((PROTO_ESP, 40)));
    }

    #[test]
    fn setters_and_repr() {
        let mut bytes = PACKET;
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        let new_src: Ipv6Addr = "2001:db8:ffff::9".parse().expect("literal");
        p.set_src_addr(new_src);
        p.set_dst_addr(new_src);
        p.set_hop_limit(1);
        assert_eq!(p.src_addr(), new_src);
        assert_eq!(p.dst_addr(), new_src);
        assert_eq!(p.hop_limit(), 1);

        let repr = Repr::parse(&Packet::new_unchecked(&PACKET[..])).expect("valid");
        let mut out = [0u8; 80];
        out[40..].copy_from_slice(&PACKET[40..]);
        repr.emit(&mut Packet::new_unchecked(&mut out[..]))
            .expect("fits");
        assert_eq!(out, PACKET);
    }
}
