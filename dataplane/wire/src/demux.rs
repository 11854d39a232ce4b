//! Demultiplexing of a UDP payload on a shared media port (RFC 5761 RTP/RTCP mux, RFC 7983
//! first-byte ranges for STUN and DTLS).
//!
//! Classification looks at the first two bytes only; the caller then validates with the
//! matching packet view (`rtp::Packet::new_checked`, `rtcp::compound`), so a 1-byte "RTP"
//! payload is classified `Rtp` here and rejected there.

/// Which protocol a UDP payload on a media port belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// RTP media (first byte 128..=191, second byte outside the RTCP range).
    Rtp,
    /// RTCP (first byte 128..=191, second byte 192..=223).
    Rtcp,
    /// STUN (first byte 0..=3).
    Stun,
    /// DTLS (first byte 20..=63).
    Dtls,
    /// Anything else (ZRTP, TURN channel data, empty payloads, garbage).
    Other,
}

/// Classifies a UDP payload by its first bytes.
///
/// RFC 5761 section 4: with the marker bit folded in, RTCP packet types 192..=223 cannot be
/// confused with RTP payload types as long as RTP avoids 64..=95, so byte 1 in 192..=223 means
/// RTCP (SR 200 ..= PSFB 206 and the rest of the reserved range).
pub fn classify(payload: &[u8]) -> MediaKind {
    match payload {
        [] => MediaKind::Other,
        [0..=3, ..] => MediaKind::Stun,
        [20..=63, ..] => MediaKind::Dtls,
        [128..=191, 192..=223, ..] => MediaKind::Rtcp,
        [128..=191, ..] => MediaKind::Rtp,
        _ => MediaKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(classify(&[]), MediaKind::Other);
        // STUN binding request.
        assert_eq!(classify(&[0x00, 0x01, 0x00, 0x00]), MediaKind::Stun);
        assert_eq!(classify(&[3]), MediaKind::Stun);
        assert_eq!(classify(&[4]), MediaKind::Other);
        // ZRTP 16..=19.
        assert_eq!(classify(&[16, 0]), MediaKind::Other);
        // DTLS handshake and application data.
        assert_eq!(classify(&[22, 0xfe, 0xfd]), MediaKind::Dtls);
        assert_eq!(classify(&[23]), MediaKind::Dtls);
        assert_eq!(classify(&[20]), MediaKind::Dtls);
        assert_eq!(classify(&[63]), MediaKind::Dtls);
        assert_eq!(classify(&[64]), MediaKind::Other);
        // TURN channel data 64..=79.
        assert_eq!(classify(&[0x40, 0x00]), MediaKind::Other);
        // RTP PT 96 with and without marker, PT 0.
        assert_eq!(classify(&[0x80, 0xe0]), MediaKind::Rtp);
        assert_eq!(classify(&[0x80, 0x60]), MediaKind::Rtp);
        assert_eq!(classify(&[0x80, 0x00]), MediaKind::Rtp);
        assert_eq!(classify(&[0x90]), MediaKind::Rtp);
        // RTCP SR, RR, RTPFB, PSFB and the range edges.
        for pt in [200, 201, 205, 206, 192, 223] {
            assert_eq!(classify(&[0x81, pt]), MediaKind::Rtcp, "{pt}");
        }
        assert_eq!(classify(&[0x81, 191]), MediaKind::Rtp);
        assert_eq!(classify(&[0x81, 224]), MediaKind::Rtp);
        // Version 3 and 1 are not RTP.
        assert_eq!(classify(&[0xc0, 0x60]), MediaKind::Other);
        assert_eq!(classify(&[0x40, 0xc8]), MediaKind::Other);
    }
}
