//! W3C Trace Context (`traceparent`): parse what callers send, and make the child context the
//! lane forwards, so each proxied request is one span of the caller's trace.
//!
//! Format (version 00): `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`, lower case,
//! ids not all zero. Later versions may append fields after another `-`; they are read as 00.
//! A malformed header is ignored (a new trace starts), never an error for the request.

use std::fmt;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace (16 bytes, not all zero).
    pub trace_id: u128,
    /// The span that sent this request (8 bytes, not all zero).
    pub parent_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Why a `traceparent` was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Not the `vv-trace-parent-flags` shape, or a field of the wrong length.
    #[error("not of the form 00-<32 hex>-<16 hex>-<2 hex>")]
    Shape,
    /// A field that is not lower-case hex.
    #[error("not lower-case hex")]
    Hex,
    /// Version `ff`, which the spec forbids.
    #[error("version ff is invalid")]
    Version,
    /// An all-zero trace or parent id.
    #[error("all-zero id")]
    ZeroId,
}

fn hex(s: &str) -> Result<u128, TraceParentError> {
    if s.is_empty() || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(TraceParentError::Hex);
    }
    u128::from_str_radix(s, 16).map_err(|_| TraceParentError::Hex)
}

impl TraceParent {
    /// Parses a header value.
    ///
    /// # Errors
    /// Any deviation from the format above.
    pub fn parse(value: &str) -> Result<TraceParent, TraceParentError> {
        let mut fields = value.splitn(5, '-');
        let (Some(v), Some(t), Some(p), Some(f)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(TraceParentError::Shape);
        };
        let rest = fields.next();
        if v.len() != 2 || t.len() != 32 || p.len() != 16 || f.len() != 2 {
            return Err(TraceParentError::Shape);
        }
        let version = hex(v)?;
        if version == 0xff {
            return Err(TraceParentError::Version);
        }
        // Version 00 has exactly four fields.
        if version == 0 && rest.is_some() {
            return Err(TraceParentError::Shape);
        }
        let trace_id = hex(t)?;
        let parent_id = hex(p)? as u64;
        let flags = hex(f)? as u8;
        if trace_id == 0 || parent_id == 0 {
            return Err(TraceParentError::ZeroId);
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new root context (sampled) with random ids from `rand`.
    pub fn root(mut rand: impl FnMut() -> u64) -> TraceParent {
        let hi = u128::from(rand());
        let lo = u128::from(rand());
        TraceParent {
            trace_id: ((hi << 64) | lo).max(1),
            parent_id: rand().max(1),
            flags: 1,
        }
    }

    /// The context for the next hop: same trace and flags, `span_id` (not zero) as parent.
    pub fn child(self, span_id: u64) -> TraceParent {
        TraceParent {
            parent_id: span_id.max(1),
            ..self
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_spec_example() {
        let t =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(t.flags, 1);
        assert_eq!(
            t.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad:?} was accepted");
        }
        // A later version may carry more fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_ok()
        );
    }

    #[test]
    fn child_keeps_trace_and_flags() {
        let t =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let c = t.child(0x1234);
        assert_eq!((c.trace_id, c.flags, c.parent_id), (t.trace_id, 0, 0x1234));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(trace in 1u128.., parent in 1u64.., flags: u8) {
            let t = TraceParent { trace_id: trace, parent_id: parent, flags };
            prop_assert_eq!(TraceParent::parse(&t.to_string()), Ok(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = TraceParent::parse(&s);
        }

        #[test]
        fn near_misses_never_panic(s in "[0-9a-fA-F-]{50,60}") {
            if let Ok(t) = TraceParent::parse(&s) {
                prop_assert!(t.trace_id != 0 && t.parent_id != 0);
            }
        }
    }
}
