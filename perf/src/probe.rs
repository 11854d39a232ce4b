//! The probe datagram: a 12-byte RTP v2 header followed by a 24-byte probe.
//!
//! ```text
//!  0               1               2               3
//!  |V=2|P|X| CC=0 |M|   PT=96     |        RTP sequence (u16)     |
//!  |                    RTP timestamp, 90 kHz (u32)                |
//!  |                          SSRC (u32)                           |
//!  |                 probe magic 0x504d5052 "PMPR"                 |
//!  |                    stream index (u32)                         |
//!  |          send time, CLOCK_MONOTONIC ns (u64)                  |
//!  |          per-stream probe sequence (u64)                      |
//!  |   padding up to the requested packet size (zeros) ...
//! ```
//!
//! All fields are big-endian (network order). The sink reads every field at
//! a fixed offset, so a relay may rewrite SSRC, sequence and timestamp but
//! must not insert CSRCs or header extensions in front of the probe.

use thiserror::Error;

/// Length of the fixed RTP header this crate emits (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Length of the probe that follows the RTP header.
pub const PROBE_LEN: usize = 24;
/// Smallest datagram that carries a whole probe.
pub const MIN_PACKET_LEN: usize = RTP_HEADER_LEN + PROBE_LEN;
/// Magic at the start of the RTP payload: ASCII "PMPR".
pub const PROBE_MAGIC: u32 = 0x504d_5052;
/// RTP payload type used for probes (first dynamic type).
pub const PROBE_PAYLOAD_TYPE: u8 = 96;
/// SSRC of stream 0; stream `i` uses `SSRC_BASE + i` so streams are distinct.
pub const SSRC_BASE: u32 = 0x504d_0000;
/// RTP clock rate of the probe timestamps (the video clock).
pub const RTP_CLOCK_HZ: u64 = 90_000;

/// Byte ranges of the probe datagram.
mod field {
    use core::ops::Range;

    pub const VERSION_FLAGS: usize = 0;
    pub const MARKER_PT: usize = 1;
    pub const RTP_SEQ: Range<usize> = 2..4;
    pub const RTP_TIMESTAMP: Range<usize> = 4..8;
    pub const SSRC: Range<usize> = 8..12;
    pub const MAGIC: Range<usize> = 12..16;
    pub const STREAM: Range<usize> = 16..20;
    pub const SEND_TIME: Range<usize> = 20..28;
    pub const PROBE_SEQ: Range<usize> = 28..36;
}

/// Why a datagram is not a probe; the sink counts all of these as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProbeError {
    /// The datagram is shorter than [`MIN_PACKET_LEN`].
    #[error("datagram of {len} bytes is shorter than a probe ({MIN_PACKET_LEN} bytes)")]
    Truncated {
        /// Length of the datagram.
        len: usize,
    },
    /// The two top bits of the first byte are not RTP version 2.
    #[error("RTP version {version}, expected 2")]
    BadVersion {
        /// Version found.
        version: u8,
    },
    /// The payload does not start with [`PROBE_MAGIC`].
    #[error("payload magic {magic:#010x}, expected {PROBE_MAGIC:#010x}")]
    BadMagic {
        /// Magic found.
        magic: u32,
    },
}

/// Read-only or read-write view of a probe datagram.
#[derive(Debug, Clone)]
pub struct ProbePacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// Copies `N` bytes at `range`; callers only pass ranges that `check_len`
/// (or the emit length check) proved in bounds, the fallback keeps it panic-free.
fn array_at<const N: usize>(bytes: &[u8], range: core::ops::Range<usize>) -> [u8; N] {
    bytes
        .get(range)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

impl<T: AsRef<[u8]>> ProbePacket<T> {
    /// Wraps a buffer without checking it; accessors then return zeros for
    /// fields beyond the end instead of panicking.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps untrusted bytes after [`check`](Self::check).
    ///
    /// # Errors
    /// See [`ProbeError`].
    pub fn new_checked(buffer: T) -> Result<Self, ProbeError> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Checks length, RTP version and probe magic.
    ///
    /// # Errors
    /// See [`ProbeError`].
    pub fn check(&self) -> Result<(), ProbeError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_PACKET_LEN {
            return Err(ProbeError::Truncated { len });
        }
        let version = self.version();
        if version != 2 {
            return Err(ProbeError::BadVersion { version });
        }
        let magic = self.magic();
        if magic != PROBE_MAGIC {
            return Err(ProbeError::BadMagic { magic });
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    /// RTP version (top two bits of byte 0).
    pub fn version(&self) -> u8 {
        self.byte(field::VERSION_FLAGS) >> 6
    }

    /// RTP payload type (low seven bits of byte 1).
    pub fn payload_type(&self) -> u8 {
        self.byte(field::MARKER_PT) & 0x7f
    }

    /// RTP sequence number.
    pub fn rtp_seq(&self) -> u16 {
        u16::from_be_bytes(array_at(self.buffer.as_ref(), field::RTP_SEQ))
    }

    /// RTP timestamp (90 kHz).
    pub fn rtp_timestamp(&self) -> u32 {
        u32::from_be_bytes(array_at(self.buffer.as_ref(), field::RTP_TIMESTAMP))
    }

    /// RTP SSRC.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes(array_at(self.buffer.as_ref(), field::SSRC))
    }

    /// Probe magic.
    pub fn magic(&self) -> u32 {
        u32::from_be_bytes(array_at(self.buffer.as_ref(), field::MAGIC))
    }

    /// Index of the sender's stream.
    pub fn stream_index(&self) -> u32 {
        u32::from_be_bytes(array_at(self.buffer.as_ref(), field::STREAM))
    }

    /// Sender's CLOCK_MONOTONIC time in ns when it built the packet.
    pub fn send_time_ns(&self) -> u64 {
        u64::from_be_bytes(array_at(self.buffer.as_ref(), field::SEND_TIME))
    }

    /// Per-stream probe sequence (does not wrap, unlike the RTP one).
    pub fn probe_seq(&self) -> u64 {
        u64::from_be_bytes(array_at(self.buffer.as_ref(), field::PROBE_SEQ))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ProbePacket<T> {
    fn put(&mut self, range: core::ops::Range<usize>, bytes: &[u8]) {
        if let Some(dst) = self.buffer.as_mut().get_mut(range) {
            dst.copy_from_slice(bytes);
        }
    }

    /// Rewrites the per-packet fields (sequence numbers, timestamps) in
    /// place; the sender uses this to reuse a buffer whose constant fields
    /// were written once by [`ProbeRepr::emit`].
    pub fn set_per_packet(
        &mut self,
        rtp_seq: u16,
        rtp_timestamp: u32,
        send_time_ns: u64,
        probe_seq: u64,
    ) {
        self.put(field::RTP_SEQ, &rtp_seq.to_be_bytes());
        self.put(field::RTP_TIMESTAMP, &rtp_timestamp.to_be_bytes());
        self.put(field::SEND_TIME, &send_time_ns.to_be_bytes());
        self.put(field::PROBE_SEQ, &probe_seq.to_be_bytes());
    }
}

/// Parsed contents of a probe datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRepr {
    /// RTP sequence number.
    pub rtp_seq: u16,
    /// RTP timestamp at [`RTP_CLOCK_HZ`].
    pub rtp_timestamp: u32,
    /// RTP SSRC.
    pub ssrc: u32,
    /// Sender stream index.
    pub stream_index: u32,
    /// Sender CLOCK_MONOTONIC ns.
    pub send_time_ns: u64,
    /// Per-stream probe sequence.
    pub probe_seq: u64,
}

/// Why a probe could not be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EmitError {
    /// The output buffer is shorter than [`MIN_PACKET_LEN`].
    #[error("buffer of {len} bytes cannot hold a probe ({MIN_PACKET_LEN} bytes)")]
    BufferTooShort {
        /// Length of the buffer.
        len: usize,
    },
}

impl ProbeRepr {
    /// Parses a datagram.
    ///
    /// # Errors
    /// See [`ProbeError`].
    pub fn parse<T: AsRef<[u8]>>(packet: &ProbePacket<T>) -> Result<Self, ProbeError> {
        packet.check()?;
        Ok(Self {
            rtp_seq: packet.rtp_seq(),
            rtp_timestamp: packet.rtp_timestamp(),
            ssrc: packet.ssrc(),
            stream_index: packet.stream_index(),
            send_time_ns: packet.send_time_ns(),
            probe_seq: packet.probe_seq(),
        })
    }

    /// Writes the header and probe into the first [`MIN_PACKET_LEN`] bytes of
    /// `buffer`; the bytes after them (padding up to the packet size) are
    /// left as they are, so a sender zeroes its buffers once, not per packet.
    ///
    /// # Errors
    /// [`EmitError::BufferTooShort`] if `buffer` is shorter than [`MIN_PACKET_LEN`].
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), EmitError> {
        if buffer.len() < MIN_PACKET_LEN {
            return Err(EmitError::BufferTooShort { len: buffer.len() });
        }
        let mut packet = ProbePacket::new_unchecked(buffer);
        // V=2, no padding, no extension, no CSRC; marker clear.
        packet.put(field::VERSION_FLAGS..field::VERSION_FLAGS + 1, &[0x80]);
        packet.put(
            field::MARKER_PT..field::MARKER_PT + 1,
            &[PROBE_PAYLOAD_TYPE],
        );
        packet.put(field::SSRC, &self.ssrc.to_be_bytes());
        packet.put(field::MAGIC, &PROBE_MAGIC.to_be_bytes());
        packet.put(field::STREAM, &self.stream_index.to_be_bytes());
        packet.set_per_packet(
            self.rtp_seq,
            self.rtp_timestamp,
            self.send_time_ns,
            self.probe_seq,
        );
        Ok(())
    }
}

/// RTP timestamp (90 kHz, wrapping) for `elapsed_ns` since the stream's origin.
pub fn rtp_timestamp_at(elapsed_ns: u64) -> u32 {
    // u128 so that no run length can overflow the multiplication.
    let ticks = u128::from(elapsed_ns) * u128::from(RTP_CLOCK_HZ) / 1_000_000_000;
    // Truncation is the RTP wrap-around.
    ticks as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: [u8; 40] = [
        0x80, 96, 0x12, 0x34, // V=2, PT 96, seq 0x1234
        0x00, 0x01, 0x5f, 0x90, // ts 90000
        0x50, 0x4d, 0x00, 0x03, // ssrc
        0x50, 0x4d, 0x50, 0x52, // magic
        0x00, 0x00, 0x00, 0x03, // stream 3
        0, 0, 0, 0, 0x3b, 0x9a, 0xca, 0x00, // 1e9 ns
        0, 0, 0, 0, 0, 0, 0, 42, // probe seq 42
        0, 0, 0, 0, // padding
    ];

    fn fixture_repr() -> ProbeRepr {
        ProbeRepr {
            rtp_seq: 0x1234,
            rtp_timestamp: 90_000,
            ssrc: SSRC_BASE + 3,
            stream_index: 3,
            send_time_ns: 1_000_000_000,
            probe_seq: 42,
        }
    }

    #[test]
    fn parses_fixture() {
        let packet = ProbePacket::new_checked(&FIXTURE[..]).expect("fixture is a probe");
        assert_eq!(packet.version(), 2);
        assert_eq!(packet.payload_type(), 96);
        assert_eq!(ProbeRepr::parse(&packet), Ok(fixture_repr()));
    }

    #[test]
    fn emits_fixture_bytes() {
        let mut buf = [0u8; 40];
        fixture_repr().emit(&mut buf).expect("40 bytes fit");
        assert_eq!(buf, FIXTURE);
        // Padding is not the emitter's business.
        let mut buf = [0xffu8; 40];
        fixture_repr().emit(&mut buf).expect("40 bytes fit");
        assert_eq!(buf[..MIN_PACKET_LEN], FIXTURE[..MIN_PACKET_LEN]);
        assert_eq!(buf[MIN_PACKET_LEN..], [0xff; 4]);
    }

    #[test]
    fn set_per_packet_changes_only_per_packet_fields() {
        let mut buf = FIXTURE;
        let mut packet = ProbePacket::new_unchecked(&mut buf[..]);
        packet.set_per_packet(7, 8, 9, 10);
        let repr = ProbeRepr::parse(&packet).expect("still a probe");
        assert_eq!(
            repr,
            ProbeRepr {
                rtp_seq: 7,
                rtp_timestamp: 8,
                send_time_ns: 9,
                probe_seq: 10,
                ..fixture_repr()
            }
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(
            ProbePacket::new_checked(&FIXTURE[..35]).err(),
            Some(ProbeError::Truncated { len: 35 })
        );
        assert_eq!(
            ProbePacket::new_checked(&[][..]).err(),
            Some(ProbeError::Truncated { len: 0 })
        );
        let mut v1 = FIXTURE;
        v1[0] = 0x40;
        assert_eq!(
            ProbePacket::new_checked(&v1[..]).err(),
            Some(ProbeError::BadVersion { version: 1 })
        );
        let mut bad_magic = FIXTURE;
        bad_magic[15] = 0;
        assert_eq!(
            ProbePacket::new_checked(&bad_magic[..]).err(),
            Some(ProbeError::BadMagic { magic: 0x504d_5000 })
        );
        // Unchecked accessors on a short buffer read zeros instead of panicking.
        let short = ProbePacket::new_unchecked(&FIXTURE[..5]);
        assert_eq!(short.probe_seq(), 0);
        assert_eq!(short.rtp_seq(), 0x1234);
    }

    #[test]
    fn emit_rejects_short_buffer() {
        let mut buf = [0u8; MIN_PACKET_LEN - 1];
        assert_eq!(
            fixture_repr().emit(&mut buf),
            Err(EmitError::BufferTooShort {
                len: MIN_PACKET_LEN - 1
            })
        );
    }

    #[test]
    fn rtp_timestamp_runs_at_90khz_and_wraps() {
        assert_eq!(rtp_timestamp_at(0), 0);
        assert_eq!(rtp_timestamp_at(1_000_000_000), 90_000);
        assert_eq!(rtp_timestamp_at(20_000_000), 1_800);
        // 2^32 ticks at 90 kHz is ~13.25 h: one tick past wraps to 0..
        let wrap_ns = (1u128 << 32) * 1_000_000_000 / 90_000 + 1;
        assert!(rtp_timestamp_at(wrap_ns as u64 + 20_000) < 10);
    }
}
