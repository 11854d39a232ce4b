//! RTP data packets (RFC 3550 section 5.1), with header extensions (RFC 8285 framing is left
//! to the caller: the extension is exposed as profile word plus raw data).

use crate::bytes::{get_u16, read_u16, read_u32, write_u16, write_u32};
use crate::{Error, Result};

/// Fixed header length (no CSRCs, no extension).
pub const MIN_HEADER_LEN: usize = 12;
/// Largest CSRC count the 4-bit CC field can express.
pub const MAX_CSRCS: usize = 15;

mod field {
    pub(super) const FLAGS: usize = 0;
    pub(super) const MARKER_PT: usize = 1;
    pub(super) const SEQUENCE: usize = 2;
    pub(super) const TIMESTAMP: usize = 4;
    pub(super) const SSRC: usize = 8;
    pub(super) const CSRCS: usize = 12;
}

const FLAG_PADDING: u8 = 0x20;
const FLAG_EXTENSION: u8 = 0x10;
const MASK_CC: u8 = 0x0f;
const FLAG_MARKER: u8 = 0x80;
const MASK_PT: u8 = 0x7f;

/// A view of one RTP packet; the buffer length is the packet length (RTP has no length field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks.
    ///
    /// # Panics
    /// Fixed-field accessors panic if the buffer is shorter than 12 bytes; use
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
            return Err(Error::Malformed("RTP version"));
        }
        Ok(packet)
    }

    /// Checks that the CSRC list, the extension and the padding fit, which makes every
    /// accessor panic-free.
    ///
    /// # Errors
    /// - [`Error::Truncated`] if the buffer ends inside the fixed header, the CSRC list or the
    ///   extension.
    /// - [`Error::Malformed`] if P is set and the pad count (last byte) is 0 or reaches into
    ///   the header.
    pub fn check_len(&self) -> Result<()> {
        let data = self.data();
        let len = data.len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let csrc_end = self.csrc_end();
        if csrc_end > len {
            return Err(Error::Truncated);
        }
        if self.extension() {
            let words = get_u16(data, csrc_end + 2).ok_or(Error::Truncated)?;
            if csrc_end + 4 + usize::from(words) * 4 > len {
                return Err(Error::Truncated);
            }
        }
        if self.padding() {
            // len >= 12, so the last byte exists.
            let pad = usize::from(data[len - 1]);
            if pad == 0 {
                return Err(Error::Malformed("RTP padding count 0"));
            }
            if self.header_len() + pad > len {
                return Err(Error::Malformed("RTP padding longer than payload"));
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

    fn csrc_end(&self) -> usize {
        field::CSRCS + 4 * usize::from(self.csrc_count())
    }

    /// Version (2 for a packet that passed `new_checked`).
    pub fn version(&self) -> u8 {
        self.data()[field::FLAGS] >> 6
    }

    /// Padding (P) flag.
    pub fn padding(&self) -> bool {
        self.data()[field::FLAGS] & FLAG_PADDING != 0
    }

    /// Extension (X) flag.
    pub fn extension(&self) -> bool {
        self.data()[field::FLAGS] & FLAG_EXTENSION != 0
    }

    /// CSRC count (CC).
    pub fn csrc_count(&self) -> u8 {
        self.data()[field::FLAGS] & MASK_CC
    }

    /// Marker (M) bit.
    pub fn marker(&self) -> bool {
        self.data()[field::MARKER_PT] & FLAG_MARKER != 0
    }

    /// Payload type (7 bits).
    pub fn payload_type(&self) -> u8 {
        self.data()[field::MARKER_PT] & MASK_PT
    }

    /// Sequence number.
    pub fn sequence_number(&self) -> u16 {
        read_u16(self.data(), field::SEQUENCE)
    }

    /// Media timestamp.
    pub fn timestamp(&self) -> u32 {
        read_u32(self.data(), field::TIMESTAMP)
    }

    /// Synchronization source.
    pub fn ssrc(&self) -> u32 {
        read_u32(self.data(), field::SSRC)
    }

    /// The `index`-th contributing source, `None` if `index >= csrc_count()` (or the list does
    /// not fit an unchecked buffer).
    pub fn csrc(&self, index: usize) -> Option<u32> {
        if index >= usize::from(self.csrc_count()) {
            return None;
        }
        crate::bytes::get_u32(self.data(), field::CSRCS + 4 * index)
    }

    /// Iterator over the contributing sources.
    pub fn csrcs(&self) -> Csrcs<'_> {
        let list = self
            .data()
            .get(field::CSRCS..self.csrc_end())
            .unwrap_or_default();
        Csrcs {
            words: list.chunks_exact(4),
        }
    }

    /// The header extension as `(profile-defined 16 bits, data)`, where data excludes the
    /// 4-byte extension header; `None` if X is clear.
    pub fn extension_header(&self) -> Option<(u16, &[u8])> {
        if !self.extension() {
            return None;
        }
        let start = self.csrc_end();
        let profile = get_u16(self.data(), start)?;
        let words = get_u16(self.data(), start + 2)?;
        let body = self
            .data()
            .get(start + 4..start + 4 + usize::from(words) * 4)?;
        Some((profile, body))
    }

    /// Header length in bytes: fixed part, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        let csrc_end = self.csrc_end();
        if !self.extension() {
            return csrc_end;
        }
        let words = get_u16(self.data(), csrc_end + 2).unwrap_or(0);
        csrc_end + 4 + usize::from(words) * 4
    }

    /// Number of padding bytes at the end (including the count byte); 0 if P is clear.
    pub fn padding_len(&self) -> usize {
        if !self.padding() {
            return 0;
        }
        self.data().last().map_or(0, |&pad| usize::from(pad))
    }

    /// Payload bytes, without header and padding; empty if the header is inconsistent with an
    /// unchecked buffer.
    pub fn payload(&self) -> &[u8] {
        let end = self.data().len().saturating_sub(self.padding_len());
        self.data().get(self.header_len()..end).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, value: u16) {
        write_u16(self.data_mut(), field::SEQUENCE, value);
    }

    /// Sets the media timestamp.
    pub fn set_timestamp(&mut self, value: u32) {
        write_u32(self.data_mut(), field::TIMESTAMP, value);
    }

    /// Sets the synchronization source.
    pub fn set_ssrc(&mut self, value: u32) {
        write_u32(self.data_mut(), field::SSRC, value);
    }

    /// Sets the marker bit.
    pub fn set_marker(&mut self, marker: bool) {
        let byte = &mut self.data_mut()[field::MARKER_PT];
        *byte = (*byte & MASK_PT) | if marker { FLAG_MARKER } else { 0 };
    }

    /// Sets the payload type; only the low 7 bits are used.
    pub fn set_payload_type(&mut self, value: u8) {
        let byte = &mut self.data_mut()[field::MARKER_PT];
        *byte = (*byte & FLAG_MARKER) | (value & MASK_PT);
    }

    /// Mutable payload bytes, without header and padding.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = self.data().len().saturating_sub(self.padding_len());
        self.data_mut().get_mut(start..end).unwrap_or_default()
    }
}

/// Iterator over the CSRC list of an RTP packet.
#[derive(Debug, Clone)]
pub struct Csrcs<'a> {
    words: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for Csrcs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.words.next().and_then(|w| crate::bytes::get_u32(w, 0))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.words.size_hint()
    }
}

impl ExactSizeIterator for Csrcs<'_> {}

/// An RTP header as owned values (allocates for CSRCs and extension data; not for the
/// per-packet path, which uses [`Packet`] setters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Repr {
    /// Payload type (0..=127).
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub sequence_number: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Contributing sources (at most [`MAX_CSRCS`]).
    pub csrcs: Vec<u32>,
    /// Header extension: profile word and data (a multiple of 4 bytes).
    pub extension: Option<(u16, Vec<u8>)>,
    /// Padding bytes after the payload including the count byte; 0 means P clear.
    pub padding: u8,
}

impl Repr {
    /// Reads a packet.
    ///
    /// # Errors
    /// Whatever [`Packet::new_checked`] would reject (so an unchecked packet is safe here).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 2 {
            return Err(Error::Malformed("RTP version"));
        }
        Ok(Self {
            payload_type: packet.payload_type(),
            marker: packet.marker(),
            sequence_number: packet.sequence_number(),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
            csrcs: packet.csrcs().collect(),
            extension: packet
                .extension_header()
                .map(|(profile, data)| (profile, data.to_vec())),
            // check_len bounds the pad count by the last byte, so it fits u8.
            padding: u8::try_from(packet.padding_len()).unwrap_or(u8::MAX),
        })
    }

    /// Header length this representation emits (fixed part, CSRCs, extension).
    pub fn header_len(&self) -> usize {
        let ext = self
            .extension
            .as_ref()
            .map_or(0, |(_, data)| 4 + data.len());
        MIN_HEADER_LEN + 4 * self.csrcs.len() + ext
    }

    /// Bytes needed besides the payload: header plus padding. A packet with payload `p` is
    /// `buffer_len() + p.len()` bytes long.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + usize::from(self.padding)
    }

    /// Writes header, `payload` and padding into the front of the packet's buffer and returns
    /// the packet length. Because RTP has no length field, the packet is exactly the first
    /// `returned` bytes; re-wrap that prefix to read it back.
    ///
    /// # Errors
    /// - [`Error::Truncated`] if the buffer is shorter than `buffer_len() + payload.len()`.
    /// - [`Error::Malformed`] if the payload type exceeds 127, there are more than 15 CSRCs, or
    ///   the extension data is not a multiple of 4 bytes or longer than 65535 words.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        payload: &[u8],
    ) -> Result<usize> {
        if self.payload_type > MASK_PT {
            return Err(Error::Malformed("RTP payload type above 127"));
        }
        let cc = u8::try_from(self.csrcs.len())
            .ok()
            .filter(|&cc| usize::from(cc) <= MAX_CSRCS)
            .ok_or(Error::Malformed("more than 15 RTP CSRCs"))?;
        let ext_words = match &self.extension {
            Some((_, data)) if data.len() % 4 != 0 => {
                return Err(Error::Malformed("RTP extension not a multiple of 4 bytes"));
            }
            Some((_, data)) => Some(
                u16::try_from(data.len() / 4)
                    .map_err(|_| Error::Malformed("RTP extension longer than 65535 words"))?,
            ),
            None => None,
        };
        let header_len = self.header_len();
        let total = self.buffer_len() + payload.len();
        let data = packet.data_mut();
        let out = data.get_mut(..total).ok_or(Error::Truncated)?;

        let mut flags = 0x80 | cc;
        if self.padding > 0 {
            flags |= FLAG_PADDING;
        }
        if ext_words.is_some() {
            flags |= FLAG_EXTENSION;
        }
        out[field::FLAGS] = flags;
        out[field::MARKER_PT] = self.payload_type | if self.marker { FLAG_MARKER } else { 0 };
        write_u16(out, field::SEQUENCE, self.sequence_number);
        write_u32(out, field::TIMESTAMP, self.timestamp);
        write_u32(out, field::SSRC, self.ssrc);
        let mut at = field::CSRCS;
        for &csrc in &self.csrcs {
            write_u32(out, at, csrc);
            at += 4;
        }
        if let (Some((profile, ext)), Some(words)) = (&self.extension, ext_words) {
            write_u16(out, at, *profile);
            write_u16(out, at + 2, words);
            out[at + 4..at + 4 + ext.len()].copy_from_slice(ext);
        }
        out[header_len..header_len + payload.len()].copy_from_slice(payload);
        let pad = &mut out[header_len + payload.len()..];
        pad.fill(0);
        if let Some(last) = pad.last_mut() {
            *last = self.padding;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the IPv4 fixture: V2, PT 96 with marker, seq 0x1234, ts 0xabcdef, SSRC 0xdeadbeef,
    /// 12 bytes of H.264 payload.
    const SIMPLE: [u8; 24] = [
        0x80, 0xe0, 0x12, 0x34, 0x00, 0xab, 0xcd, 0xef, 0xde, 0xad, 0xbe, 0xef, 0x7c, 0x85, 0x88,
        0x84, 0x00, 0x33, 0xff, 0xc1, 0x2a, 0x5e, 0x10, 0x07,
    ];

    /// P, X and one CSRC; one-byte header extension (0xBEDE) with one element; 4-byte payload;
    /// 3 bytes of padding.
    const FULL: [u8; 31] = [
        0xb1, 0xef, 0x01, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // fixed
        0x99, 0xaa, 0xbb, 0xcc, // CSRC
        0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00, // extension
        0x01, 0x02, 0x03, 0x04, // payload
        0x00, 0x00, 0x03, // padding
    ];

    #[test]
    fn deconstruct_simple() {
        let p = Packet::new_checked(&SIMPLE[..]).expect("fixture is valid");
        assert_eq!(p.version(), 2);
        assert!(!p.padding() && !p.extension());
        assert_eq!(p.csrc_count(), 0);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0x00ab_cdef);
        assert_eq!(p.ssrc(), 0xdead_beef);
        assert_eq!(p.csrc(0), None);
        assert_eq!(p.csrcs().count(), 0);
        assert_eq!(p.extension_header(), None);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.padding_len(), 0);
        assert_eq!(p.payload(), &SIMPLE[12..]);
    }

    #[test]
    fn deconstruct_full() {
        let p = Packet::new_checked(&FULL[..]).expect("fixture is valid");
        assert!(p.padding() && p.extension());
        assert_eq!(p.payload_type(), 111);
        assert_eq!(p.csrc(0), Some(0x99aa_bbcc));
        assert_eq!(p.csrc(1), None);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![0x99aa_bbcc]);
        assert_eq!(
            p.extension_header(),
            Some((0xbede, &[0x10, 0xaa, 0x00, 0x00][..]))
        );
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.padding_len(), 3);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(
            Packet::new_checked(&SIMPLE[..11]).err(),
            Some(Error::Truncated)
        );
        let mut v1 = SIMPLE;
        v1[0] = 0x40;
        assert_eq!(
            Packet::new_checked(&v1[..]).err(),
            Some(Error::Malformed("RTP version"))
        );
        // CSRC list past the end.
        let mut cc = SIMPLE;
        cc[0] = 0x84;
        assert_eq!(Packet::new_checked(&cc[..]).err(), Some(Error::Truncated));
        // Extension past the end.
        assert_eq!(
            Packet::new_checked(&FULL[..20]).err(),
            Some(Error::Truncated)
        );
        let mut long_ext = FULL;
        long_ext[19] = 3;
        assert_eq!(
            Packet::new_checked(&long_ext[..]).err(),
            Some(Error::Truncated)
        );
        // Pad count 0, and pad count into the header.
        let mut pad0 = FULL;
        pad0[30] = 0;
        assert_eq!(
            Packet::new_checked(&pad0[..]).err(),
            Some(Error::Malformed("RTP padding count 0"))
        );
        let mut pad_big = FULL;
        pad_big[30] = 8;
        assert_eq!(
            Packet::new_checked(&pad_big[..]).err(),
            Some(Error::Malformed("RTP padding longer than payload"))
        );
        pad_big[30] = 7; // exactly payload + padding: empty payload is fine
        let p = Packet::new_checked(&pad_big[..]).expect("empty payload");
        assert!(p.payload().is_empty());
    }

    #[test]
    fn setters() {
        let mut bytes = SIMPLE;
        let mut p = Packet::new_checked(&mut bytes[..]).expect("valid");
        p.set_sequence_number(7);
        p.set_timestamp(90_000);
        p.set_ssrc(42);
        p.set_marker(false);
        p.set_payload_type(0xff);
        assert_eq!(p.sequence_number(), 7);
        assert_eq!(p.timestamp(), 90_000);
        assert_eq!(p.ssrc(), 42);
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 0x7f);
        p.set_marker(true);
        p.set_payload_type(96);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.payload(), &SIMPLE[12..]);
    }

    #[test]
    fn repr_round_trips_fixture() {
        let p = Packet::new_checked(&FULL[..]).expect("valid");
        let repr = Repr::parse(&p).expect("valid");
        assert_eq!(repr.csrcs, vec![0x99aa_bbcc]);
        assert_eq!(repr.extension, Some((0xbede, vec![0x10, 0xaa, 0, 0])));
        assert_eq!(repr.padding, 3);
        assert_eq!(repr.buffer_len() + p.payload().len(), FULL.len());
        let mut out = [0xffu8; 40];
        let n = repr
            .emit(&mut Packet::new_unchecked(&mut out[..]), p.payload())
            .expect("fits");
        assert_eq!(&out[..n], &FULL[..]);
    }

    #[test]
    fn repr_emit_rejects_bad_values() {
        let mut buf = [0u8; 64];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        let bad_pt = Repr {
            payload_type: 128,
            ..Repr::default()
        };
        assert!(matches!(bad_pt.emit(&mut p, &[]), Err(Error::Malformed(_))));
        let many = Repr {
            csrcs: vec![0; 16],
            ..Repr::default()
        };
        assert!(matches!(many.emit(&mut p, &[]), Err(Error::Malformed(_))));
        let odd_ext = Repr {
            extension: Some((1, vec![0; 3])),
            ..Repr::default()
        };
        assert!(matches!(
            odd_ext.emit(&mut p, &[]),
            Err(Error::Malformed(_))
        ));
        let ok = Repr::default();
        assert_eq!(ok.emit(&mut p, &[0; 53]), Err(Error::Truncated));
        assert_eq!(ok.emit(&mut p, &[0; 52]), Ok(64));
    }
}
