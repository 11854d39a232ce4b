//! Ethernet II frames, 802.1Q / 802.1ad VLAN tags and the L2 summary the classifier needs.

use core::fmt;
use core::str::FromStr;

use crate::bytes::{read_u16, write_u16, Field};
use crate::{Error, Result};

/// A 48-bit IEEE MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// True for the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True when the I/G bit is set (multicast, including broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True when the I/G bit is clear.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// True when the U/L bit marks a locally administered address.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The text given to [`EthernetAddress::from_str`] is not six `:`-separated hex octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid Ethernet address, expected six hex octets like 02:00:5e:10:00:01")]
pub struct AddrParseError;

impl FromStr for EthernetAddress {
    type Err = AddrParseError;

    /// Parses `aa:bb:cc:dd:ee:ff` (either case; `-` is accepted as the separator too, as long
    /// as one separator is used throughout).
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for slot in &mut out {
            let part = parts.next().ok_or(AddrParseError)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(AddrParseError);
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| AddrParseError)?;
        }
        if parts.next().is_some() {
            return Err(AddrParseError);
        }
        Ok(Self(out))
    }
}

/// Well-known EtherType values.
pub mod ethertype {
    /// Internet Protocol version 4.
    pub const IPV4: u16 = 0x0800;
    /// Internet Protocol version 6.
    pub const IPV6: u16 = 0x86DD;
    /// Address Resolution Protocol.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88A8;
}

mod field {
    use super::Field;

    pub(super) const DESTINATION: Field = 0..6;
    pub(super) const SOURCE: Field = 6..12;
    pub(super) const ETHERTYPE: usize = 12;
    pub(super) const PAYLOAD: usize = 14;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Length of one 802.1Q / 802.1ad tag (TPID is the outer EtherType, then TCI, then the inner
/// EtherType).
pub const VLAN_TAG_LEN: usize = 4;
/// Tags beyond this depth are rejected by [`parse_l2`].
pub const MAX_VLAN_TAGS: usize = 2;

/// A view of an Ethernet II frame (without FCS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buffer` without checks.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than [`HEADER_LEN`]; use
    /// [`new_checked`](Self::new_checked) for untrusted bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than the 14-byte header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the fixed header fits, which makes every accessor panic-free.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than the 14-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress(addr(&self.buffer.as_ref()[field::DESTINATION]))
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress(addr(&self.buffer.as_ref()[field::SOURCE]))
    }

    /// The outer EtherType (a VLAN TPID for tagged frames; see [`parse_l2`]).
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the 14-byte header (VLAN tags included, if any).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the outer EtherType.
    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }

    /// Mutable view of everything after the 14-byte header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

fn addr(bytes: &[u8]) -> [u8; 6] {
    let mut out = [0u8; 6];
    out.copy_from_slice(bytes);
    out
}

/// Parsed L2 summary: innermost EtherType after up to two VLAN tags, the outermost VLAN id, and
/// where the L3 header starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L2Info {
    /// EtherType of the L3 payload (after all VLAN tags). Values below 0x0600 are 802.3 length
    /// fields and are reported as-is; the caller treats them as "not IP".
    pub ethertype: u16,
    /// VLAN id (12 bits) of the outermost tag, if the frame is tagged.
    pub vlan: Option<u16>,
    /// Offset of the L3 header from the start of the frame.
    pub l3_offset: usize,
}

fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ethertype::VLAN || ethertype == ethertype::QINQ
}

/// Parses the Ethernet header and up to [`MAX_VLAN_TAGS`] 802.1Q / 802.1ad tags.
///
/// # Errors
/// - [`Error::Truncated`] if the frame ends inside the header or a tag.
/// - [`Error::Malformed`] if more than two VLAN tags are stacked.
pub fn parse_l2(frame: &[u8]) -> Result<L2Info> {
    let mut ethertype = get_u16_or_truncated(frame, field::ETHERTYPE)?;
    let mut offset = HEADER_LEN;
    let mut vlan = None;
    let mut tags = 0;
    while is_vlan_tpid(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Err(Error::Malformed("more than two VLAN tags"));
        }
        // The tag sits where the L3 header would start: TCI, then the next EtherType.
        let tci = get_u16_or_truncated(frame, offset)?;
        ethertype = get_u16_or_truncated(frame, offset + 2)?;
        if vlan.is_none() {
            vlan = Some(tci & 0x0fff);
        }
        offset += VLAN_TAG_LEN;
        tags += 1;
    }
    Ok(L2Info {
        ethertype,
        vlan,
        l3_offset: offset,
    })
}

fn get_u16_or_truncated(data: &[u8], at: usize) -> Result<u16> {
    crate::bytes::get_u16(data, at).ok_or(Error::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 802.1Q frame, VID 100 PCP 1, carrying the start of an IPv4 header.
    const TAGGED: [u8; 38] = [
        0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb, // dst (IPv4 multicast MAC)
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x81, 0x00, 0x20, 0x64, // TPID 802.1Q, TCI PCP 1 VID 100
        0x08, 0x00, // inner EtherType IPv4
        0x45, 0x00, 0x00, 0x14, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x01,
        0x0a, 0xe0, 0x00, 0x00, 0xfb,
    ];

    #[test]
    fn tagged_frame() {
        let frame = Frame::new_checked(&TAGGED[..]).expect("fixture is a valid frame");
        assert_eq!(frame.dst_addr().to_string(), "01:00:5e:00:00:fb");
        assert!(frame.dst_addr().is_multicast());
        assert_eq!(
            frame.src_addr(),
            EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        );
        assert_eq!(frame.ethertype(), ethertype::VLAN);
        let l2 = parse_l2(&TAGGED).expect("fixture parses");
        assert_eq!(
            l2,
            L2Info {
                ethertype: ethertype::IPV4,
                vlan: Some(100),
                l3_offset: 18
            }
        );
        assert_eq!(TAGGED[l2.l3_offset] >> 4, 4);
    }

    #[test]
    fn untagged_and_qinq() {
        let mut untagged = [0u8; 14];
        untagged[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
        assert_eq!(
            parse_l2(&untagged),
            Ok(L2Info {
                ethertype: ethertype::IPV6,
                vlan: None,
                l3_offset: 14
            })
        );

        let mut qinq = [0u8; 22];
        qinq[12..14].copy_from_slice(&ethertype::QINQ.to_be_bytes());
        qinq[14..16].copy_from_slice(&0x0123u16.to_be_bytes()); // outer VID 0x123
        qinq[16..18].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        qinq[18..20].copy_from_slice(&0xe00au16.to_be_bytes()); // inner VID 10
        qinq[20..22].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        assert_eq!(
            parse_l2(&qinq),
            Ok(L2Info {
                ethertype: ethertype::IPV4,
                vlan: Some(0x123),
                l3_offset: 22
            })
        );
    }

    #[test]
    fn rejects_short_and_over_tagged() {
        assert_eq!(parse_l2(&TAGGED[..13]), Err(Error::Truncated));
        assert_eq!(parse_l2(&TAGGED[..17]), Err(Error::Truncated));
        assert_eq!(
            Frame::new_checked(&TAGGED[..13]).err(),
            Some(Error::Truncated)
        );
        let mut triple = [0u8; 30];
        for tag in 0..3 {
            let at = 12 + tag * 4;
            triple[at..at + 2].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        }
        assert_eq!(
            parse_l2(&triple),
            Err(Error::Malformed("more than two VLAN tags"))
        );
    }

    #[test]
    fn setters_and_address_text() {
        let mut bytes = TAGGED;
        let mut frame = Frame::new_checked(&mut bytes[..]).expect("valid");
        let a: EthernetAddress = "02:00:5E:10:00:01".parse().expect("valid text");
        frame.set_dst_addr(a);
        frame.set_src_addr(EthernetAddress::BROADCAST);
        assert_eq!(frame.dst_addr(), a);
        assert!(frame.src_addr().is_broadcast());
        assert!(a.is_local() && a.is_unicast());
        assert_eq!("02-00-5e-10-00-01".parse::<EthernetAddress>(), Ok(a));
        for bad in [
            "",
            "02:00:5e:10:00",
            "02:00:5e:10:00:01:02",
            "2:00:5e:10:00:01",
            "zz:00:5e:10:00:01",
            "02:00-5e:10:00:01",
        ] {
            assert_eq!(bad.parse::<EthernetAddress>(), Err(AddrParseError), "{bad}");
        }
    }
}
