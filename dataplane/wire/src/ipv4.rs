//! IPv4 headers (RFC 791), with header-checksum-preserving setters for the rewrite path.

use core::net::Ipv4Addr;

use crate::bytes::{read_u16, read_u32, write_u16, write_u32};
use crate::checksum;
use crate::{Error, Result};

/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: usize = 2;
    pub(super) const IDENT: usize = 4;
    pub(super) const FLG_OFF: usize = 6;
    /// TTL and protocol share one checksummed 16-bit word.
    pub(super) const TTL_PROTO: usize = 8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: usize = 10;
    pub(super) const SRC_ADDR: usize = 12;
    pub(super) const DST_ADDR: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
///
/// Bytes after `total_len` (Ethernet minimum-size padding) are ignored by every accessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks.
    ///
    /// # Panics
    /// Fixed-field accessors panic if the buffer is shorter than 20 bytes; use
    /// [`new_checked`](Self::new_checked) for untrusted bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len) and a version check.
    ///
    /// # Errors
    /// - [`Error::Truncated`] if the buffer is shorter than the header or the total length.
    /// - [`Error::Malformed`] if the version is not 4, IHL < 5, or total length < header length.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::Malformed("IPv4 version"));
        }
        Ok(packet)
    }

    /// Checks the length fields against each other and the buffer, which makes every accessor
    /// panic-free: `20 <= header_len <= total_len <= buffer len`.
    ///
    /// # Errors
    /// As [`new_checked`](Self::new_checked), without the version check.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed("IPv4 header length below 20"));
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed("IPv4 total length below header length"));
        }
        if total_len > len {
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

    /// Version field (4 for a packet that passed `new_checked`).
    pub fn version(&self) -> u8 {
        self.data()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.data()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP (upper 6 bits) and ECN (lower 2 bits) byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.data()[field::DSCP_ECN]
    }

    /// Total length field: header plus payload, in bytes.
    pub fn total_len(&self) -> u16 {
        read_u16(self.data(), field::LENGTH)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        read_u16(self.data(), field::IDENT)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.data(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        read_u16(self.data(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.data(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// True for any fragment (MF set or a nonzero offset): the UDP header is missing or the
    /// payload is incomplete, so the fast path must not treat it as a datagram.
    pub fn is_fragment(&self) -> bool {
        read_u16(self.data(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live (the IPv4 hop limit).
    pub fn ttl(&self) -> u8 {
        self.data()[field::TTL]
    }

    /// Protocol field (e.g. [`PROTO_UDP`]).
    pub fn next_header(&self) -> u8 {
        self.data()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.data(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.data(), field::SRC_ADDR))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.data(), field::DST_ADDR))
    }

    /// Options bytes (`20..header_len`); empty if the header is inconsistent with the buffer.
    pub fn options(&self) -> &[u8] {
        self.data()
            .get(MIN_HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// Payload bytes (`header_len..total_len`); L2 padding after `total_len` is excluded.
    /// Empty if the length fields are inconsistent with the buffer (only possible after
    /// `new_unchecked` or a raw length setter).
    pub fn payload(&self) -> &[u8] {
        self.data()
            .get(self.header_len()..usize::from(self.total_len()))
            .unwrap_or_default()
    }

    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        match self.data().get(..self.header_len()) {
            Some(header) => checksum::data(header) == 0,
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Replaces the 16-bit header word at `at` and patches the checksum (RFC 1624).
    fn rewrite_word(&mut self, at: usize, new: u16) {
        let old = read_u16(self.data(), at);
        let sum = checksum::update16(self.checksum(), old, new);
        write_u16(self.data_mut(), at, new);
        self.set_checksum(sum);
    }

    /// Sets the source address, updating the header checksum incrementally.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.rewrite_addr(field::SRC_ADDR, addr);
    }

    /// Sets the destination address, updating the header checksum incrementally.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.rewrite_addr(field::DST_ADDR, addr);
    }

    fn rewrite_addr(&mut self, at: usize, addr: Ipv4Addr) {
        let old = read_u32(self.data(), at);
        let new = u32::from(addr);
        let sum = checksum::update32(self.checksum(), old, new);
        write_u32(self.data_mut(), at, new);
        self.set_checksum(sum);
    }

    /// Sets the TTL, updating the header checksum incrementally.
    pub fn set_ttl(&mut self, ttl: u8) {
        let word = u16::from_be_bytes([ttl, self.next_header()]);
        self.rewrite_word(field::TTL_PROTO, word);
    }

    /// Sets the protocol field, updating the header checksum incrementally.
    pub fn set_next_header(&mut self, proto: u8) {
        let word = u16::from_be_bytes([self.ttl(), proto]);
        self.rewrite_word(field::TTL_PROTO, word);
    }

    /// Sets the DSCP/ECN byte, updating the header checksum incrementally.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        let word = u16::from_be_bytes([self.data()[field::VER_IHL], value]);
        self.rewrite_word(field::VER_IHL, word);
    }

    /// Sets the identification field, updating the header checksum incrementally.
    pub fn set_ident(&mut self, value: u16) {
        self.rewrite_word(field::IDENT, value);
    }

    /// Sets the total length field, updating the header checksum incrementally.
    ///
    /// A value beyond the buffer makes [`payload`](Self::payload) empty rather than panic;
    /// callers writing a new header set it to the real length.
    pub fn set_total_len(&mut self, value: u16) {
        self.rewrite_word(field::LENGTH, value);
    }

    /// Sets flags (DF, MF) and the fragment offset in bytes (rounded down to 8), updating the
    /// header checksum incrementally.
    pub fn set_fragmentation(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut word = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            word |= FLAG_DF;
        }
        if more_frags {
            word |= FLAG_MF;
        }
        self.rewrite_word(field::FLG_OFF, word);
    }

    /// Writes the version (4) and header length in bytes (a multiple of 4, 20..=60), without
    /// touching the checksum: this is a header-construction step, follow it with
    /// [`fill_checksum`](Self::fill_checksum).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        let ihl = (header_len / 4).min(15) as u8;
        self.data_mut()[field::VER_IHL] = 0x40 | ihl;
    }

    /// Sets the checksum field verbatim.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.data_mut(), field::CHECKSUM, value);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = self.data().get(..header_len).map_or(0, checksum::data);
        self.set_checksum(sum);
    }

    /// Mutable payload bytes (`header_len..total_len`); empty if the length fields are
    /// inconsistent with the buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        self.data_mut().get_mut(range).unwrap_or_default()
    }
}

/// A 20-byte IPv4 header (no options) as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub next_header: u8,
    /// Payload length in bytes.
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// DSCP/ECN byte.
    pub dscp_ecn: u8,
}

impl Repr {
    /// Reads the header of a packet. Identification, flags and options are not represented.
    ///
    /// # Errors
    /// Whatever [`Packet::new_checked`] would reject, plus [`Error::Malformed`] for a fragment
    /// or a wrong header checksum.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::Malformed("IPv4 version"));
        }
        if packet.is_fragment() {
            return Err(Error::Malformed("fragmented"));
        }
        if !packet.verify_checksum() {
            return Err(Error::Malformed("IPv4 header checksum"));
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.total_len() - packet.header_len() as u16,
            ttl: packet.ttl(),
            dscp_ecn: packet.dscp_ecn(),
        })
    }

    /// Header length emitted by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes a 20-byte header (DF set, ident 0) with a valid checksum into the front of the
    /// packet's buffer; the payload is left for the caller.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than the header;
    /// [`Error::Malformed`] if header plus payload exceeds 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        if packet.data().len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let total = u16::try_from(MIN_HEADER_LEN + usize::from(self.payload_len))
            .map_err(|_| Error::Malformed("IPv4 total length above 65535"))?;
        let data = packet.data_mut();
        data[field::VER_IHL] = 0x45;
        data[field::DSCP_ECN] = self.dscp_ecn;
        write_u16(data, field::LENGTH, total);
        write_u16(data, field::IDENT, 0);
        write_u16(data, field::FLG_OFF, FLAG_DF);
        data[field::TTL] = self.ttl;
        data[field::PROTOCOL] = self.next_header;
        write_u32(data, field::SRC_ADDR, u32::from(self.src_addr));
        write_u32(data, field::DST_ADDR, u32::from(self.dst_addr));
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4 (DSCP EF, DF) / UDP 40000 -> 5004 / RTP PT 96, both checksums valid.
    pub(crate) const PACKET: [u8; 52] = [
        0x45, 0xb8, 0x00, 0x34, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x51, 0xf5, 0xc0, 0xa8, 0x01,
        0x0a, 0x0a, 0x00, 0x00, 0x14, 0x9c, 0x40, 0x13, 0x8c, 0x00, 0x20, 0x45, 0x6a, 0x80, 0xe0,
        0x12, 0x34, 0x00, 0xab, 0xcd, 0xef, 0xde, 0xad, 0xbe, 0xef, 0x7c, 0x85, 0x88, 0x84, 0x00,
        0x33, 0xff, 0xc1, 0x2a, 0x5e, 0x10, 0x07,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).expect("fixture is valid");
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0xb8);
        assert_eq!(p.total_len(), 52);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.next_header(), PROTO_UDP);
        assert_eq!(p.checksum(), 0x51f5);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 20));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &PACKET[20..]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn l2_padding_is_ignored() {
        let mut padded = [0u8; 64];
        padded[..52].copy_from_slice(&PACKET);
        let p = Packet::new_checked(&padded[..]).expect("padding is allowed");
        assert_eq!(p.payload().len(), 32);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            Packet::new_checked(&PACKET[..19]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&PACKET[..51]).err(),
            Some(Error::Truncated)
        );
        let mut v6 = PACKET;
        v6[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&v6[..]).err(),
            Some(Error::Malformed("IPv4 version"))
        );
        let mut short_ihl = PACKET;
        short_ihl[0] = 0x44;
        assert!(matches!(
            Packet::new_checked(&short_ihl[..]),
            Err(Error::Malformed(_))
        ));
        let mut small_total = PACKET;
        small_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(
            Packet::new_checked(&small_total[..]),
            Err(Error::Malformed(_))
        ));
        let mut ihl_past_total = PACKET;
        ihl_past_total[0] = 0x4f; // 60-byte header in a 52-byte packet
        assert!(Packet::new_checked(&ihl_past_total[..]).is_err());
    }

    #[test]
    fn options_are_exposed() {
        let mut bytes = [0u8; 28];
        bytes[0] = 0x46;
        bytes[2..4].copy_from_slice(&28u16.to_be_bytes());
        bytes[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]); // Router Alert
        bytes[24..28].copy_from_slice(b"data");
        let p = Packet::new_checked(&bytes[..]).expect("valid with options");
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload(), b"data");
    }

    #[test]
    fn rewrites_keep_checksum_valid() {
        let mut bytes = PACKET;
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        p.set_src_addr(Ipv4Addr::new(203, 0, 113, 7));
        p.set_dst_addr(Ipv4Addr::new(198, 51, 100, 250));
        p.set_ttl(p.ttl() - 1);
        assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), incremental);
        assert_eq!(p.src_addr(), Ipv4Addr::new(203, 0, 113, 7));
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.next_header(), PROTO_UDP);
    }

    #[test]
    fn fragments_are_detected() {
        let mut bytes = PACKET;
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        p.set_fragmentation(false, true, 0);
        assert!(p.is_fragment() && p.more_frags());
        p.set_fragmentation(false, false, 1480);
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p), Err(Error::Malformed("fragmented")));
    }

    #[test]
    fn repr_round_trip() {
        let p = Packet::new_checked(&PACKET[..]).expect("valid");
        let repr = Repr::parse(&p).expect("valid");
        assert_eq!(repr.payload_len, 32);
        let mut out = [0u8; 52];
        let mut q = Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut q).expect("fits");
        q.payload_mut().copy_from_slice(p.payload());
        let q = Packet::new_checked(&out[..]).expect("emitted header is valid");
        assert!(q.verify_checksum());
        assert_eq!(Repr::parse(&q), Ok(repr));
    }
}
