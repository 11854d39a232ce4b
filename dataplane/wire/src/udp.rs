//! UDP datagrams (RFC 768) with checksum-preserving rewrites for NAT-style relaying.
//!
//! Checksum rule used by every incremental update here: a stored checksum of 0 means "no
//! checksum" (legal only over IPv4) and is left at 0; an updated checksum that computes to 0 is
//! stored as 0xFFFF, exactly as a full computation would transmit it. A UDP-over-IPv6 datagram
//! with checksum 0 is invalid anyway (RFC 8200) and fails [`Packet::verify_checksum_v6`], so
//! leaving it alone is harmless.

use core::borrow::Borrow;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{read_u16, write_u16};
use crate::checksum;
use crate::{Error, Result};

/// UDP header length.
pub const HEADER_LEN: usize = 8;
/// IP protocol number of UDP, for pseudo-headers.
const PROTO_UDP: u8 = 17;

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const LENGTH: usize = 4;
    pub(super) const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram.
///
/// Bytes after the length field's end (IP-level padding) are ignored by every accessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks.
    ///
    /// # Panics
    /// Fixed-field accessors panic if the buffer is shorter than 8 bytes; use
    /// [`new_checked`](Self::new_checked) for untrusted bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    ///
    /// # Errors
    /// As [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks `8 <= length field <= buffer len`, which makes every accessor panic-free.
    ///
    /// # Errors
    /// - [`Error::Truncated`] if the buffer is shorter than 8 bytes or the length field.
    /// - [`Error::Malformed`] if the length field is below 8.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::Malformed("UDP length below 8"));
        }
        if field_len > len {
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

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.data(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.data(), field::DST_PORT)
    }

    /// Length field: header plus payload, in bytes.
    #[allow(clippy::len_without_is_empty)] // a UDP datagram is never empty (>= 8 bytes)
    pub fn len(&self) -> u16 {
        read_u16(self.data(), field::LENGTH)
    }

    /// Checksum field (0 = none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        read_u16(self.data(), field::CHECKSUM)
    }

    /// Payload bytes (`8..len`); empty if the length field is inconsistent with the buffer.
    pub fn payload(&self) -> &[u8] {
        self.data()
            .get(HEADER_LEN..usize::from(self.len()))
            .unwrap_or_default()
    }

    /// The datagram as covered by the checksum (`0..len`), if it fits the buffer.
    fn datagram(&self) -> Option<&[u8]> {
        self.data().get(..usize::from(self.len()))
    }

    /// True if the checksum is absent (0) or verifies against the IPv4 pseudo-header.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        self.datagram().is_some_and(|d| {
            let pseudo = checksum::pseudo_header_v4(src, dst, PROTO_UDP, self.len());
            checksum::fold(pseudo + checksum::sum(d)) == 0xffff
        })
    }

    /// True if the checksum verifies against the IPv6 pseudo-header. A zero checksum is
    /// invalid over IPv6. Accepts addresses or references to them.
    pub fn verify_checksum_v6(
        &self,
        src: impl Borrow<Ipv6Addr>,
        dst: impl Borrow<Ipv6Addr>,
    ) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        self.datagram().is_some_and(|d| {
            let pseudo = checksum::pseudo_header_v6(
                src.borrow(),
                dst.borrow(),
                PROTO_UDP,
                u32::from(self.len()),
            );
            checksum::fold(pseudo + checksum::sum(d)) == 0xffff
        })
    }
}

/// Applies the "0 = none stays 0, computed 0 becomes 0xFFFF" rule to an incremental update.
fn patched(current: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    if current == 0 {
        return 0;
    }
    match update(current) {
        0 => 0xffff,
        sum => sum,
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the source port, updating the checksum incrementally (see the module docs for the
    /// zero rule).
    pub fn set_src_port(&mut self, port: u16) {
        let old = self.src_port();
        let sum = patched(self.checksum(), |c| checksum::update16(c, old, port));
        write_u16(self.data_mut(), field::SRC_PORT, port);
        self.set_checksum(sum);
    }

    /// Sets the destination port, updating the checksum incrementally (see the module docs for
    /// the zero rule).
    pub fn set_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        let sum = patched(self.checksum(), |c| checksum::update16(c, old, port));
        write_u16(self.data_mut(), field::DST_PORT, port);
        self.set_checksum(sum);
    }

    /// Updates the checksum for an IPv4 pseudo-header address change (the caller rewrites the
    /// IP header itself). Call once per changed address. A zero checksum stays zero.
    pub fn update_checksum_for_addr_v4(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let sum = patched(self.checksum(), |c| {
            checksum::update32(c, u32::from(old), u32::from(new))
        });
        self.set_checksum(sum);
    }

    /// Updates the checksum for an IPv6 pseudo-header address change (the caller rewrites the
    /// IP header itself). Call once per changed address. Accepts addresses or references.
    pub fn update_checksum_for_addr_v6(
        &mut self,
        old: impl Borrow<Ipv6Addr>,
        new: impl Borrow<Ipv6Addr>,
    ) {
        let (old, new) = (old.borrow().octets(), new.borrow().octets());
        let sum = patched(self.checksum(), |c| checksum::update_bytes(c, &old, &new));
        self.set_checksum(sum);
    }

    /// Sets the length field verbatim. A value beyond the buffer makes
    /// [`payload`](Self::payload) empty rather than panic.
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.data_mut(), field::LENGTH, value);
    }

    /// Sets the checksum field verbatim.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.data_mut(), field::CHECKSUM, value);
    }

    /// Computes the checksum over the IPv4 pseudo-header and the datagram (`0..len`); a computed
    /// 0 is sent as 0xFFFF. Leaves 0 ("none") if the length field does not fit the buffer.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v4(src, dst, PROTO_UDP, self.len());
        let sum = self
            .datagram()
            .map_or(0, |d| non_zero(!checksum::fold(pseudo + checksum::sum(d))));
        self.set_checksum(sum);
    }

    /// Computes the checksum over the IPv6 pseudo-header and the datagram (`0..len`); a computed
    /// 0 is sent as 0xFFFF. Leaves 0 (invalid) if the length field does not fit the buffer.
    /// Accepts addresses or references.
    pub fn fill_checksum_v6(&mut self, src: impl Borrow<Ipv6Addr>, dst: impl Borrow<Ipv6Addr>) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v6(
            src.borrow(),
            dst.borrow(),
            PROTO_UDP,
            u32::from(self.len()),
        );
        let sum = self
            .datagram()
            .map_or(0, |d| non_zero(!checksum::fold(pseudo + checksum::sum(d))));
        self.set_checksum(sum);
    }

    /// Mutable payload bytes (`8..len`); empty if the length field is inconsistent with the
    /// buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        self.data_mut().get_mut(HEADER_LEN..end).unwrap_or_default()
    }
}

/// RFC 768: a computed checksum of 0 is transmitted as all ones.
fn non_zero(sum: u16) -> u16 {
    if sum == 0 {
        0xffff
    } else {
        sum
    }
}

/// The ports of a UDP header; the length and checksum are derived when emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl Repr {
    /// Reads the ports of a packet.
    ///
    /// # Errors
    /// Whatever [`Packet::new_checked`] would reject (so an unchecked packet is safe here).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// Bytes needed for a datagram with `payload_len` bytes of payload.
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    /// Writes the header for a `payload_len`-byte payload with checksum 0 (fill it afterwards,
    /// or leave it 0 over IPv4). Returns the datagram length.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer cannot hold the datagram; [`Error::Malformed`] if
    /// the datagram would exceed 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        payload_len: usize,
    ) -> Result<usize> {
        let total = self.buffer_len(payload_len);
        let len = u16::try_from(total).map_err(|_| Error::Malformed("UDP length above 65535"))?;
        if packet.data().len() < total {
            return Err(Error::Truncated);
        }
        let data = packet.data_mut();
        write_u16(data, field::SRC_PORT, self.src_port);
        write_u16(data, field::DST_PORT, self.dst_port);
        write_u16(data, field::LENGTH, len);
        write_u16(data, field::CHECKSUM, 0);
        Ok(total)
    }

    /// Writes a complete datagram (header, `payload`, IPv4 checksum). Returns its length.
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub fn emit_v4<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        payload: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize> {
        let total = self.emit(packet, payload.len())?;
        packet.payload_mut().copy_from_slice(payload);
        packet.fill_checksum_v4(src, dst);
        Ok(total)
    }

    /// Writes a complete datagram (header, `payload`, IPv6 checksum). Returns its length.
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub fn emit_v6<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        payload: &[u8],
        src: impl Borrow<Ipv6Addr>,
        dst: impl Borrow<Ipv6Addr>,
    ) -> Result<usize> {
        let total = self.emit(packet, payload.len())?;
        packet.payload_mut().copy_from_slice(payload);
        packet.fill_checksum_v6(src, dst);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const V4_DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);

    /// UDP 40000 -> 5004 carrying RTP, checksum 0x456a for V4_SRC -> V4_DST.
    const V4_DATAGRAM: [u8; 32] = [
        0x9c, 0x40, 0x13, 0x8c, 0x00, 0x20, 0x45, 0x6a, 0x80, 0xe0, 0x12, 0x34, 0x00, 0xab, 0xcd,
        0xef, 0xde, 0xad, 0xbe, 0xef, 0x7c, 0x85, 0x88, 0x84, 0x00, 0x33, 0xff, 0xc1, 0x2a, 0x5e,
        0x10, 0x07,
    ];

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().expect("address literal")
    }

    /// UDP 5004 -> 6000 from the IPv6 fixture, checksum 0xebc6.
    const V6_DATAGRAM: [u8; 24] = [
        0x13, 0x8c, 0x17, 0x70, 0x00, 0x18, 0xeb, 0xc6, 0x80, 0x6f, 0x00, 0x01, 0x00, 0x00, 0x03,
        0xe8, 0x11, 0x22, 0x33, 0x44, 0x61, 0x62, 0x63, 0x64,
    ];

    #[test]
    fn deconstruct_v4() {
        let p = Packet::new_checked(&V4_DATAGRAM[..]).expect("fixture is valid");
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 5004);
        assert_eq!(p.len(), 32);
        assert_eq!(p.checksum(), 0x456a);
        assert_eq!(p.payload(), &V4_DATAGRAM[8..]);
        assert!(p.verify_checksum_v4(V4_SRC, V4_DST));
        assert!(!p.verify_checksum_v4(Ipv4Addr::new(192, 168, 1, 11), V4_DST));
    }

    #[test]
    fn deconstruct_v6() {
        let p = Packet::new_checked(&V6_DATAGRAM[..]).expect("fixture is valid");
        assert!(p.verify_checksum_v6(v6("2001:db8::1"), v6("2001:db8:0:1::2")));
        assert!(!p.verify_checksum_v6(v6("2001:db8::1"), v6("2001:db8:0:1::3")));
    }

    #[test]
    fn length_checks() {
        assert_eq!(
            Packet::new_checked(&V4_DATAGRAM[..7]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&V4_DATAGRAM[..31]).err(),
            Some(Error::Truncated)
        );
        let mut short = V4_DATAGRAM;
        short[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&short[..]).err(),
            Some(Error::Malformed("UDP length below 8"))
        );
        let mut trailing = [0u8; 40];
        trailing[..32].copy_from_slice(&V4_DATAGRAM);
        let p = Packet::new_checked(&trailing[..]).expect("trailing bytes are allowed");
        assert_eq!(p.payload().len(), 24);
        assert!(p.verify_checksum_v4(V4_SRC, V4_DST));
    }

    #[test]
    fn nat_rewrite_v4() {
        let mut bytes = V4_DATAGRAM;
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        let new_src = Ipv4Addr::new(203, 0, 113, 7);
        p.set_src_port(62000);
        p.set_dst_port(5006);
        p.update_checksum_for_addr_v4(V4_SRC, new_src);
        assert!(p.verify_checksum_v4(new_src, V4_DST));
        let incremental = p.checksum();
        p.fill_checksum_v4(new_src, V4_DST);
        assert_eq!(p.checksum(), incremental);
    }

    #[test]
    fn zero_checksum_stays_zero_over_v4() {
        let mut bytes = V4_DATAGRAM;
        bytes[6..8].copy_from_slice(&[0, 0]);
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        p.set_dst_port(1);
        p.update_checksum_for_addr_v4(V4_SRC, V4_DST);
        assert_eq!(p.checksum(), 0);
        assert!(p.verify_checksum_v4(V4_SRC, V4_DST));
    }

    #[test]
    fn nat_rewrite_v6() {
        let mut bytes = V6_DATAGRAM;
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        let (src, dst, new_dst) = (v6("2001:db8::1"), v6("2001:db8:0:1::2"), v6("fd00::42"));
        p.update_checksum_for_addr_v6(dst, new_dst);
        p.set_src_port(7000);
        assert!(p.verify_checksum_v6(src, new_dst));
        let incremental = p.checksum();
        p.fill_checksum_v6(src, new_dst);
        assert_eq!(p.checksum(), incremental);
    }

    /// The IPv6 helpers take `impl Borrow<Ipv6Addr>` so callers holding references (as
    /// `checksum::pseudo_header_v6` wants) need not copy; this must keep compiling.
    #[test]
    #[allow(clippy::needless_borrows_for_generic_args)]
    fn v6_helpers_accept_references() {
        let mut bytes = V6_DATAGRAM;
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        let (src, dst) = (v6("2001:db8::1"), v6("2001:db8:0:1::2"));
        assert!(p.verify_checksum_v6(&src, &dst));
        p.update_checksum_for_addr_v6(&src, &dst);
        assert!(p.verify_checksum_v6(&dst, &dst));
        p.fill_checksum_v6(&src, &src);
        assert!(p.verify_checksum_v6(src, src));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Pick the payload word so the datagram plus pseudo-header sums to 0xffff, making the
        // computed checksum 0.
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut bytes = [0u8; 10];
        let repr = Repr {
            src_port: 1,
            dst_port: 2,
        };
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), 2)
            .expect("fits");
        let partial = checksum::fold(
            checksum::pseudo_header_v4(src, dst, PROTO_UDP, 10) + checksum::sum(&bytes),
        );
        bytes[8..10].copy_from_slice(&(!partial).to_be_bytes());
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        p.fill_checksum_v4(src, dst);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum_v4(src, dst));
    }

    #[test]
    fn repr_emit_matches_fixture() {
        let p = Packet::new_checked(&V4_DATAGRAM[..]).expect("valid");
        let repr = Repr::parse(&p).expect("valid");
        assert_eq!(
            repr,
            Repr {
                src_port: 40000,
                dst_port: 5004
            }
        );
        let mut out = [0u8; 32];
        let n = repr
            .emit_v4(
                &mut Packet::new_unchecked(&mut out[..]),
                p.payload(),
                V4_SRC,
                V4_DST,
            )
            .expect("fits");
        assert_eq!(n, 32);
        assert_eq!(out, V4_DATAGRAM);
        let mut small = [0u8; 31];
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut small[..]), 24),
            Err(Error::Truncated)
        );
    }
}
