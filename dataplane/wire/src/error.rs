//! The single error type of every parser in this crate.

/// Why a packet view or a typed read rejected its bytes.
///
/// Kept `Copy` and allocation-free so the per-packet path can map it to a drop counter
/// without cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer ends before a header, a length field or a count says it should.
    #[error("truncated packet")]
    Truncated,
    /// The bytes are present but violate the protocol; the string names the rule.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

/// `core::result::Result` with this crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_problem() {
        assert_eq!(Error::Truncated.to_string(), "truncated packet");
        assert_eq!(
            Error::Malformed("version").to_string(),
            "malformed packet: version"
        );
    }
}
