//! RTCP packets (RFC 3550 section 6) and the feedback messages a relay acts on (RFC 4585:
//! generic NACK, PLI), plus an iterator over compound datagrams.
//!
//! The typed reads return `Result`: a well-formed header does not imply a well-formed body, and
//! a relay must be able to skip a bad report without panicking.

use crate::bytes::{get_u16, get_u32, read_u16, write_u32};
use crate::{Error, Result};

/// Sender report.
pub const SR: u8 = 200;
/// Receiver report.
pub const RR: u8 = 201;
/// Source description.
pub const SDES: u8 = 202;
/// Goodbye.
pub const BYE: u8 = 203;
/// Application-defined.
pub const APP: u8 = 204;
/// Transport-layer feedback (RFC 4585).
pub const RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585).
pub const PSFB: u8 = 206;

/// RTPFB FMT of a generic NACK.
pub const FMT_GENERIC_NACK: u8 = 1;
/// PSFB FMT of a picture loss indication.
pub const FMT_PLI: u8 = 1;

/// Common header length (V/P/count, type, length).
pub const HEADER_LEN: usize = 4;
/// Length of one SR/RR report block.
pub const REPORT_BLOCK_LEN: usize = 24;

mod field {
    pub(super) const FLAGS: usize = 0;
    pub(super) const PACKET_TYPE: usize = 1;
    pub(super) const LENGTH: usize = 2;
    pub(super) const SENDER_SSRC: usize = 4;
    /// Feedback messages: the media source the feedback is about.
    pub(super) const MEDIA_SSRC: usize = 8;
    /// Feedback control information of RTPFB/PSFB.
    pub(super) const FCI: usize = 12;
    /// SR sender info.
    pub(super) const NTP: usize = 8;
    pub(super) const RTP_TS: usize = 16;
    pub(super) const PACKET_COUNT: usize = 20;
    pub(super) const OCTET_COUNT: usize = 24;
    pub(super) const SR_BLOCKS: usize = 28;
    pub(super) const RR_BLOCKS: usize = 8;
}

const FLAG_PADDING: u8 = 0x20;
const MASK_COUNT: u8 = 0x1f;

/// A view of ONE RTCP packet: the first `total_len()` bytes of the buffer. Bytes after it (the
/// rest of a compound datagram) are ignored; iterate those with [`compound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// What a relay needs to know about an RTCP packet to route it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// SR (200).
    SenderReport,
    /// RR (201).
    ReceiverReport,
    /// RTPFB (205) with FMT 1.
    GenericNack,
    /// PSFB (206) with FMT 1.
    Pli,
    /// Anything else, by packet type (FMT of other feedback messages is in
    /// [`Packet::count`]).
    Other(u8),
}

/// The sender-info section of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds in the upper 32 bits).
    pub ntp_timestamp: u64,
    /// RTP timestamp corresponding to the NTP timestamp.
    pub rtp_timestamp: u32,
    /// Sender's packet count.
    pub packet_count: u32,
    /// Sender's payload octet count.
    pub octet_count: u32,
}

/// One reception report block of an SR or RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportBlock {
    /// Source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost (24-bit signed; negative with duplicates).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub ext_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR).
    pub lsr: u32,
    /// Delay since the last SR, in 1/65536 seconds (DLSR).
    pub dlsr: u32,
}

impl ReportBlock {
    /// Decodes a 24-byte block; `None` if `bytes` is shorter.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let loss = get_u32(bytes, 4)?;
        // Sign-extend the 24-bit count: move it to the top, then shift back arithmetically.
        let cumulative_lost = ((loss << 8) as i32) >> 8;
        Some(Self {
            ssrc: get_u32(bytes, 0)?,
            fraction_lost: (loss >> 24) as u8,
            cumulative_lost,
            ext_highest_seq: get_u32(bytes, 8)?,
            jitter: get_u32(bytes, 12)?,
            lsr: get_u32(bytes, 16)?,
            dlsr: get_u32(bytes, 20)?,
        })
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks.
    ///
    /// # Panics
    /// Fixed-field accessors panic if the buffer is shorter than 4 bytes; use
    /// [`new_checked`](Self::new_checked) for untrusted bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len) and a version check.
    ///
    /// # Errors
    /// As [`check_len`](Self::check_len), plus [`Error::Malformed`] if the version is not 2.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        if packet.version() != 2 {
            return Err(Error::Malformed("RTCP version"));
        }
        Ok(packet)
    }

    /// Checks that the length field fits the buffer, that types which must carry SSRCs are
    /// long enough for them, and that padding is sane. Makes every accessor panic-free.
    ///
    /// # Errors
    /// - [`Error::Truncated`] if the buffer is shorter than 4 bytes or the length field says.
    /// - [`Error::Malformed`] if an SR/RR/APP/feedback packet is too short for its SSRCs (8
    ///   bytes; 12 for APP and feedback), or P is set with a pad count of 0 or one that reaches
    ///   into the header.
    pub fn check_len(&self) -> Result<()> {
        let data = self.data();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let total = self.total_len();
        if total > data.len() {
            return Err(Error::Truncated);
        }
        let min = match self.packet_type() {
            SR | RR => 8,
            APP | RTPFB | PSFB => 12,
            _ => HEADER_LEN,
        };
        if total < min {
            return Err(Error::Malformed("RTCP packet too short for its type"));
        }
        if self.padding() {
            // total >= 4, so the last byte exists.
            let pad = usize::from(data[total - 1]);
            if pad == 0 {
                return Err(Error::Malformed("RTCP padding count 0"));
            }
            if HEADER_LEN + pad > total {
                return Err(Error::Malformed("RTCP padding longer than packet"));
            }
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

    /// The packet without its padding; empty if inconsistent with an unchecked buffer.
    fn content(&self) -> &[u8] {
        let end = self.total_len().saturating_sub(self.padding_len());
        self.data().get(..end).unwrap_or_default()
    }

    /// Version (2 for a packet that passed `new_checked`).
    pub fn version(&self) -> u8 {
        self.data()[field::FLAGS] >> 6
    }

    /// Padding (P) flag.
    pub fn padding(&self) -> bool {
        self.data()[field::FLAGS] & FLAG_PADDING != 0
    }

    /// The 5-bit count field: report count (SR/RR), source count (SDES/BYE) or FMT
    /// (feedback).
    pub fn count(&self) -> u8 {
        self.data()[field::FLAGS] & MASK_COUNT
    }

    /// Packet type (e.g. [`SR`]).
    pub fn packet_type(&self) -> u8 {
        self.data()[field::PACKET_TYPE]
    }

    /// Raw length field: the packet length in 32-bit words minus one.
    pub fn length_words(&self) -> u16 {
        read_u16(self.data(), field::LENGTH)
    }

    /// Packet length in bytes, header and padding included.
    pub fn total_len(&self) -> usize {
        (usize::from(self.length_words()) + 1) * 4
    }

    /// Padding bytes at the end (including the count byte); 0 if P is clear.
    pub fn padding_len(&self) -> usize {
        if !self.padding() {
            return 0;
        }
        self.total_len()
            .checked_sub(1)
            .and_then(|last| self.data().get(last))
            .map_or(0, |&pad| usize::from(pad))
    }

    /// The SSRC after the common header: packet sender for SR/RR/APP/feedback, first source
    /// for SDES/BYE. `None` for an SDES/BYE packet with no sources (4 bytes long).
    pub fn sender_ssrc(&self) -> Option<u32> {
        get_u32(self.content(), field::SENDER_SSRC)
    }

    /// Everything after the 4-byte common header up to the padding (sender SSRC included).
    pub fn body(&self) -> &[u8] {
        self.content().get(HEADER_LEN..).unwrap_or_default()
    }

    /// Classifies the packet by type and, for feedback, FMT.
    pub fn kind(&self) -> Kind {
        match (self.packet_type(), self.count()) {
            (SR, _) => Kind::SenderReport,
            (RR, _) => Kind::ReceiverReport,
            (RTPFB, FMT_GENERIC_NACK) => Kind::GenericNack,
            (PSFB, FMT_PLI) => Kind::Pli,
            (other, _) => Kind::Other(other),
        }
    }

    /// The sender-info section of an SR.
    ///
    /// # Errors
    /// [`Error::Malformed`] if this is not an SR; [`Error::Truncated`] if the packet ends
    /// inside the sender info.
    pub fn sender_info(&self) -> Result<SenderInfo> {
        if self.packet_type() != SR {
            return Err(Error::Malformed("not an RTCP sender report"));
        }
        let c = self.content();
        let read = |at| get_u32(c, at).ok_or(Error::Truncated);
        Ok(SenderInfo {
            ntp_timestamp: (u64::from(read(field::NTP)?) << 32) | u64::from(read(field::NTP + 4)?),
            rtp_timestamp: read(field::RTP_TS)?,
            packet_count: read(field::PACKET_COUNT)?,
            octet_count: read(field::OCTET_COUNT)?,
        })
    }

    /// SR NTP timestamp; see [`sender_info`](Self::sender_info).
    ///
    /// # Errors
    /// As [`sender_info`](Self::sender_info).
    pub fn ntp_timestamp(&self) -> Result<u64> {
        self.sender_info().map(|s| s.ntp_timestamp)
    }

    /// SR RTP timestamp; see [`sender_info`](Self::sender_info).
    ///
    /// # Errors
    /// As [`sender_info`](Self::sender_info).
    pub fn rtp_timestamp(&self) -> Result<u32> {
        self.sender_info().map(|s| s.rtp_timestamp)
    }

    /// SR sender packet count; see [`sender_info`](Self::sender_info).
    ///
    /// # Errors
    /// As [`sender_info`](Self::sender_info).
    pub fn packet_count(&self) -> Result<u32> {
        self.sender_info().map(|s| s.packet_count)
    }

    /// SR sender octet count; see [`sender_info`](Self::sender_info).
    ///
    /// # Errors
    /// As [`sender_info`](Self::sender_info).
    pub fn octet_count(&self) -> Result<u32> {
        self.sender_info().map(|s| s.octet_count)
    }

    /// The report blocks of an SR or RR: exactly `count()` of them. Profile-specific
    /// extension bytes after the blocks are allowed and ignored.
    ///
    /// # Errors
    /// [`Error::Malformed`] if this is not an SR/RR, or `count()` blocks do not fit the packet.
    pub fn report_blocks(&self) -> Result<ReportBlocks<'_>> {
        let start = match self.packet_type() {
            SR => field::SR_BLOCKS,
            RR => field::RR_BLOCKS,
            _ => return Err(Error::Malformed("not an RTCP sender or receiver report")),
        };
        let end = start + usize::from(self.count()) * REPORT_BLOCK_LEN;
        let blocks = self
            .content()
            .get(start..end)
            .ok_or(Error::Malformed("RTCP report count exceeds length"))?;
        Ok(ReportBlocks {
            blocks: blocks.chunks_exact(REPORT_BLOCK_LEN),
        })
    }

    /// The media source SSRC of a feedback message (RTPFB or PSFB, e.g. NACK or PLI).
    ///
    /// # Errors
    /// [`Error::Malformed`] if this is not a feedback message; [`Error::Truncated`] if
    /// padding left no room for it.
    pub fn media_ssrc(&self) -> Result<u32> {
        if !matches!(self.packet_type(), RTPFB | PSFB) {
            return Err(Error::Malformed("not an RTCP feedback message"));
        }
        get_u32(self.content(), field::MEDIA_SSRC).ok_or(Error::Truncated)
    }

    /// The `(pid, blp)` items of a generic NACK; expand one with [`lost_packets`].
    ///
    /// # Errors
    /// [`Error::Malformed`] if this is not a generic NACK or its FCI is empty or not a
    /// multiple of 4 bytes.
    pub fn nack_items(&self) -> Result<NackItems<'_>> {
        if self.kind() != Kind::GenericNack {
            return Err(Error::Malformed("not an RTCP generic NACK"));
        }
        let fci = self.content().get(field::FCI..).unwrap_or_default();
        if fci.is_empty() || fci.len() % 4 != 0 {
            return Err(Error::Malformed("RTCP NACK FCI length"));
        }
        Ok(NackItems {
            items: fci.chunks_exact(4),
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Rewrites the SSRC after the common header (see [`sender_ssrc`](Packet::sender_ssrc)).
    ///
    /// # Errors
    /// [`Error::Truncated`] if the packet has no such field.
    pub fn set_sender_ssrc(&mut self, ssrc: u32) -> Result<()> {
        if self.content().len() < field::SENDER_SSRC + 4 {
            return Err(Error::Truncated);
        }
        write_u32(self.buffer.as_mut(), field::SENDER_SSRC, ssrc);
        Ok(())
    }

    /// Rewrites the media source SSRC of a feedback message (a relay maps a subscriber's view
    /// of the SSRC back to the publisher's).
    ///
    /// # Errors
    /// As [`media_ssrc`](Packet::media_ssrc).
    pub fn set_media_ssrc(&mut self, ssrc: u32) -> Result<()> {
        self.media_ssrc()?;
        write_u32(self.buffer.as_mut(), field::MEDIA_SSRC, ssrc);
        Ok(())
    }
}

/// Iterator over the report blocks of an SR/RR (see [`Packet::report_blocks`]).
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    blocks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        self.blocks.next().and_then(ReportBlock::parse)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.blocks.size_hint()
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// Iterator over the `(pid, blp)` items of a generic NACK (see [`Packet::nack_items`]).
#[derive(Debug, Clone)]
pub struct NackItems<'a> {
    items: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for NackItems<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        let item = self.items.next()?;
        Some((get_u16(item, 0)?, get_u16(item, 2)?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

impl ExactSizeIterator for NackItems<'_> {}

/// Sequence numbers one NACK item reports lost: `pid`, then `pid + i + 1` for each set bit `i`
/// of `blp` (wrapping at 65535).
pub fn lost_packets(pid: u16, blp: u16) -> impl Iterator<Item = u16> {
    core::iter::once(pid).chain(
        (0..16u16)
            .filter(move |bit| blp & (1 << bit) != 0)
            .map(move |bit| pid.wrapping_add(bit + 1)),
    )
}

/// Iterator over the packets of a compound RTCP datagram (see [`compound`]).
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Iterates the packets of a compound RTCP datagram. Yields `Err` once for the first packet
/// that does not parse and then stops, because the length of anything after a bad header is
/// unknown. RFC 5506 reduced-size RTCP (a lone feedback packet) is accepted; the rule that
/// a compound starts with SR/RR is left to the caller.
pub fn compound(data: &[u8]) -> Compound<'_> {
    Compound {
        rest: data,
        failed: false,
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<Packet<&'a [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = get_u16(self.rest, field::LENGTH)
            .map(|words| (usize::from(words) + 1) * 4)
            .filter(|&total| total <= self.rest.len())
            .ok_or(Error::Truncated)
            .and_then(|total| {
                let (head, tail) = self.rest.split_at(total);
                let packet = Packet::new_checked(head)?;
                self.rest = tail;
                Ok(packet)
            });
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SR from SSRC 0x1a2b3c4d with one report block about 0xdeadbeef.
    const SENDER_REPORT: [u8; 52] = [
        0x81, 0xc8, 0x00, 0x0c, 0x1a, 0x2b, 0x3c, 0x4d, // header, sender SSRC
        0xe8, 0x4a, 0x2f, 0x1c, 0x80, 0x00, 0x00, 0x00, // NTP timestamp
        0x00, 0x0f, 0x42, 0x40, // RTP timestamp
        0x00, 0x00, 0x03, 0xe8, // packet count 1000
        0x00, 0x0c, 0x35, 0x00, // octet count 800000
        0xde, 0xad, 0xbe, 0xef, // report block: SSRC
        0x19, 0x00, 0x00, 0x2a, // fraction lost 25/256, cumulative 42
        0x00, 0x01, 0x12, 0x34, // extended highest sequence
        0x00, 0x00, 0x00, 0x5a, // jitter
        0x2f, 0x1c, 0x80, 0x00, // LSR
        0x00, 0x01, 0x00, 0x00, // DLSR 1 s
    ];

    /// RR (one block) + SDES with a CNAME, as a browser sends them.
    const RR_SDES: [u8; 60] = [
        0x81, 0xc9, 0x00, 0x07, 0x55, 0x66, 0x77, 0x88, // RR header, sender SSRC
        0x1a, 0x2b, 0x3c, 0x4d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xab, 0xcd, 0x00, 0x00, 0x00,
        0x10, 0x2f, 0x1c, 0x80, 0x00, 0x00, 0x00, 0x80, 0x00, // report block
        0x81, 0xca, 0x00, 0x06, 0x55, 0x66, 0x77, 0x88, // SDES header, chunk SSRC
        0x01, 0x10, b'u', b's', b'e', b'r', b'@', b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.',
        b'c', b'o', b'm', 0x00, 0x00, // CNAME item, end of list
    ];

    /// Generic NACK from 0x55667788 about 0xdeadbeef: pid 0x1234, blp 0b101.
    const NACK: [u8; 16] = [
        0x81, 0xcd, 0x00, 0x03, 0x55, 0x66, 0x77, 0x88, 0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x00,
        0x05,
    ];

    /// PLI from 0x55667788 about 0xdeadbeef.
    const PLI: [u8; 12] = [
        0x81, 0xce, 0x00, 0x02, 0x55, 0x66, 0x77, 0x88, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn sender_report() {
        let p = Packet::new_checked(&SENDER_REPORT[..]).expect("fixture is valid");
        assert_eq!(p.version(), 2);
        assert!(!p.padding());
        assert_eq!(p.count(), 1);
        assert_eq!(p.packet_type(), SR);
        assert_eq!(p.length_words(), 12);
        assert_eq!(p.total_len(), 52);
        assert_eq!(p.kind(), Kind::SenderReport);
        assert_eq!(p.sender_ssrc(), Some(0x1a2b_3c4d));
        assert_eq!(p.body(), &SENDER_REPORT[4..]);
        assert_eq!(p.ntp_timestamp(), Ok(0xe84a_2f1c_8000_0000));
        assert_eq!(p.rtp_timestamp(), Ok(1_000_000));
        assert_eq!(p.packet_count(), Ok(1000));
        assert_eq!(p.octet_count(), Ok(800_000));
        let blocks: Vec<_> = p.report_blocks().expect("one block").collect();
        assert_eq!(
            blocks,
            vec![ReportBlock {
                ssrc: 0xdead_beef,
                fraction_lost: 25,
                cumulative_lost: 42,
                ext_highest_seq: 0x0001_1234,
                jitter: 90,
                lsr: 0x2f1c_8000,
                dlsr: 65536,
            }]
        );
        assert!(p.media_ssrc().is_err());
        assert!(p.nack_items().is_err());
    }

    #[test]
    fn negative_cumulative_loss() {
        let mut bytes = SENDER_REPORT;
        bytes[33..36].copy_from_slice(&[0xff, 0xff, 0xfe]);
        let p = Packet::new_checked(&bytes[..]).expect("valid");
        let block = p.report_blocks().expect("valid").next().expect("one block");
        assert_eq!(block.cumulative_lost, -2);
        assert_eq!(block.fraction_lost, 25);
    }

    #[test]
    fn report_count_beyond_length_is_malformed() {
        let mut bytes = SENDER_REPORT;
        bytes[0] = 0x82;
        let p = Packet::new_checked(&bytes[..]).expect("header is valid");
        assert_eq!(
            p.report_blocks().err(),
            Some(Error::Malformed("RTCP report count exceeds length"))
        );
        // A truncated sender info.
        let mut short = [0u8; 20];
        short.copy_from_slice(&SENDER_REPORT[..20]);
        short[0] = 0x80;
        short[2..4].copy_from_slice(&4u16.to_be_bytes());
        let p = Packet::new_checked(&short[..]).expect("header is valid");
        assert_eq!(p.sender_info(), Err(Error::Truncated));
    }

    #[test]
    fn compound_rr_sdes() {
        let packets: Vec<_> = compound(&RR_SDES).collect();
        assert_eq!(packets.len(), 2);
        let rr = packets[0].as_ref().expect("RR parses");
        assert_eq!(rr.kind(), Kind::ReceiverReport);
        assert_eq!(rr.sender_ssrc(), Some(0x5566_7788));
        assert!(rr.sender_info().is_err());
        let block = rr
            .report_blocks()
            .expect("valid")
            .next()
            .expect("one block");
        assert_eq!(block.ssrc, 0x1a2b_3c4d);
        assert_eq!(block.ext_highest_seq, 0xabcd);
        let sdes = packets[1].as_ref().expect("SDES parses");
        assert_eq!(sdes.kind(), Kind::Other(SDES));
        assert_eq!(sdes.count(), 1);
        assert_eq!(sdes.total_len(), 28);
        assert_eq!(sdes.sender_ssrc(), Some(0x5566_7788));
        assert_eq!(&sdes.body()[6..22], b"user@example.com");
    }

    #[test]
    fn compound_stops_after_first_error() {
        let mut bytes = RR_SDES;
        bytes[34..36].copy_from_slice(&0x00ffu16.to_be_bytes()); // SDES claims 1024 bytes
        let results: Vec<_> = compound(&bytes).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().err(), Some(&Error::Truncated));

        let mut bad_version = RR_SDES;
        bad_version[0] = 0x41;
        let results: Vec<_> = compound(&bad_version).collect();
        assert_eq!(results, vec![Err(Error::Malformed("RTCP version"))]);
        assert_eq!(compound(&[]).count(), 0);
        assert_eq!(
            compound(&[0x80, 0xc9]).collect::<Vec<_>>(),
            vec![Err(Error::Truncated)]
        );
    }

    #[test]
    fn generic_nack() {
        let p = Packet::new_checked(&NACK[..]).expect("fixture is valid");
        assert_eq!(p.kind(), Kind::GenericNack);
        assert_eq!(p.sender_ssrc(), Some(0x5566_7788));
        assert_eq!(p.media_ssrc(), Ok(0xdead_beef));
        let items: Vec<_> = p.nack_items().expect("one item").collect();
        assert_eq!(items, vec![(0x1234, 0x0005)]);
        let lost: Vec<_> = lost_packets(0x1234, 0x0005).collect();
        assert_eq!(lost, vec![0x1234, 0x1235, 0x1237]);
        let wrapped: Vec<_> = lost_packets(0xffff, 0x8000).collect();
        assert_eq!(wrapped, vec![0xffff, 15]);
        // A NACK without FCI is malformed.
        let mut empty = [0u8; 12];
        empty.copy_from_slice(&NACK[..12]);
        empty[3] = 2;
        let p = Packet::new_checked(&empty[..]).expect("header is valid");
        assert_eq!(
            p.nack_items().err(),
            Some(Error::Malformed("RTCP NACK FCI length"))
        );
    }

    #[test]
    fn pli_and_rewrite() {
        let mut bytes = PLI;
        let mut p = Packet::new_checked(&mut bytes[..]).expect("fixture is valid");
        assert_eq!(p.kind(), Kind::Pli);
        assert_eq!(p.media_ssrc(), Ok(0xdead_beef));
        p.set_media_ssrc(0x0102_0304).expect("feedback message");
        p.set_sender_ssrc(7).expect("has a sender");
        assert_eq!(p.media_ssrc(), Ok(0x0102_0304));
        assert_eq!(p.sender_ssrc(), Some(7));
        // PSFB with another FMT (REMB is 15) is not a PLI.
        let mut remb = PLI;
        remb[0] = 0x8f;
        let p = Packet::new_checked(&remb[..]).expect("valid");
        assert_eq!(p.kind(), Kind::Other(PSFB));
    }

    #[test]
    fn header_checks() {
        assert_eq!(Packet::new_checked(&PLI[..3]).err(), Some(Error::Truncated));
        assert_eq!(
            Packet::new_checked(&PLI[..11]).err(),
            Some(Error::Truncated)
        );
        let mut short_fb = PLI;
        short_fb[3] = 1; // 8 bytes: no room for the media SSRC
        assert_eq!(
            Packet::new_checked(&short_fb[..]).err(),
            Some(Error::Malformed("RTCP packet too short for its type"))
        );
        let bye = [0x80, BYE, 0x00, 0x00];
        let p = Packet::new_checked(&bye[..]).expect("empty BYE is legal");
        assert_eq!(p.sender_ssrc(), None);
        assert!(p.body().is_empty());
        // Padding: 4 bytes of padding on an SDES.
        let padded = [0xa0, SDES, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04];
        let p = Packet::new_checked(&padded[..]).expect("valid padding");
        assert_eq!(p.padding_len(), 4);
        assert!(p.body().is_empty());
        let zero_pad = [0xa0, SDES, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(
            Packet::new_checked(&zero_pad[..]).err(),
            Some(Error::Malformed("RTCP padding count 0"))
        );
        let big_pad = [0xa0, SDES, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05];
        assert_eq!(
            Packet::new_checked(&big_pad[..]).err(),
            Some(Error::Malformed("RTCP padding longer than packet"))
        );
    }
}
