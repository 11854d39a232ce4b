//! Typed reasons for dropping a packet. Drops are counters, never errors or log lines.

/// Why the pipeline or a worker dropped a packet.
///
/// The discriminant indexes the per-worker counter array, so the order is part of the
/// metrics contract only through [`DropReason::name`]; new reasons go at the end.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the headers it claims to carry (or an empty datagram).
    Truncated = 0,
    /// Not IPv4/IPv6 carrying UDP where media was expected (L2 backends).
    NotIpUdp,
    /// A header field is invalid (bad version, lengths that do not add up, bad extension chain).
    Malformed,
    /// No media session listens on this ingress address and port.
    NoFlow,
    /// The flow is latched to another sender; the appliance is not an open relay.
    SourceMismatch,
    /// IPv4 TTL or IPv6 hop limit would reach zero.
    TtlExpired,
    /// Larger than the egress can carry.
    TooBig,
    /// The payload on a media port is neither RTP nor RTCP (STUN, DTLS, garbage).
    NotMedia,
    /// Looked like RTP/RTCP but the header does not parse.
    BadRtp,
    /// The pool had no buffer for a fan-out copy.
    NoBuffer,
    /// The backend could not transmit (queue full, socket error).
    TxFailed,
    /// An IP fragment on a media path (RTP is never fragmented by well-behaved senders).
    Fragment,
    /// The target's address family differs from the packet's (no v4/v6 translation).
    FamilyMismatch,
    /// The receive queue overflowed before the worker read it (kernel socket buffer or NIC
    /// descriptor ring full): the worker is too slow or was not scheduled.
    RxOverflow,
}

impl DropReason {
    /// Number of reasons; sizes counter arrays.
    pub const COUNT: usize = 14;

    /// Every reason, in discriminant order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::NotIpUdp,
        DropReason::Malformed,
        DropReason::NoFlow,
        DropReason::SourceMismatch,
        DropReason::TtlExpired,
        DropReason::TooBig,
        DropReason::NotMedia,
        DropReason::BadRtp,
        DropReason::NoBuffer,
        DropReason::TxFailed,
        DropReason::Fragment,
        DropReason::FamilyMismatch,
        DropReason::RxOverflow,
    ];

    /// The stable metric label value (`reason="source_mismatch"`).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::NotIpUdp => "not_ip_udp",
            DropReason::Malformed => "malformed",
            DropReason::NoFlow => "no_flow",
            DropReason::SourceMismatch => "source_mismatch",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::TooBig => "too_big",
            DropReason::NotMedia => "not_media",
            DropReason::BadRtp => "bad_rtp",
            DropReason::NoBuffer => "no_buffer",
            DropReason::TxFailed => "tx_failed",
            DropReason::Fragment => "fragment",
            DropReason::FamilyMismatch => "family_mismatch",
            DropReason::RxOverflow => "rx_overflow",
        }
    }

    /// Index into counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(names.insert(r.name()), "duplicate name {}", r.name());
        }
    }
}
