//! SPIFFE IDs of the form popmesh issues and accepts: `spiffe://<trust-domain>/ns/<ns>/sa/<name>`.
//!
//! The parser sees untrusted input (URI SANs of peer certificates, policy sources), so it is
//! strict and total: it never panics, and every refusal says which part is wrong.

use std::fmt;

/// Namespace of operator identities.
pub const OPERATOR_NAMESPACE: &str = "operators";
/// Namespace of appliance identities.
pub const APPLIANCE_NAMESPACE: &str = "appliances";
/// Longest SPIFFE ID accepted, in bytes (the SPIFFE spec's limit).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Longest namespace or service-account name, in bytes.
pub const MAX_SEGMENT_LEN: usize = 63;

/// A parsed `spiffe://<trust-domain>/ns/<ns>/sa/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    name: String,
}

/// What the holder of an identity may do with the control daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `ns/operators`: may read and change configuration.
    Operator,
    /// `ns/appliances`: may register, watch its own config and report status.
    Appliance,
    /// Any other namespace: a mesh service; may only read the trust bundle.
    Service,
}

/// Why a string is not a popmesh SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// Longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("is {0} bytes long, at most {MAX_SPIFFE_ID_LEN}")]
    TooLong(usize),
    /// Does not start with `spiffe://`.
    #[error("does not start with \"spiffe://\"")]
    Scheme,
    /// The trust domain is empty, too long or has a character outside `[a-z0-9.-_]`.
    #[error("trust domain {0:?} must be 1..=255 characters of [a-z0-9.-_]")]
    TrustDomain(String),
    /// The path is not `/ns/<ns>/sa/<name>`.
    #[error("path {0:?} is not /ns/<namespace>/sa/<name>")]
    Path(String),
    /// A namespace or name is empty, too long or has a character outside `[a-z0-9.-_]`.
    #[error("{what} {value:?} must be 1..=63 characters of [a-z0-9.-_]")]
    Segment {
        /// "namespace" or "name".
        what: &'static str,
        /// The segment as written.
        value: String,
    },
}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'_')
}

/// Checks a trust domain (`[a-z0-9.-_]{1,255}`).
///
/// # Errors
/// [`SpiffeIdError::TrustDomain`] when it breaks the rule.
pub fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() || td.len() > MAX_TRUST_DOMAIN_LEN || !td.bytes().all(is_id_char) {
        return Err(SpiffeIdError::TrustDomain(td.to_string()));
    }
    Ok(())
}

/// Checks a namespace or service-account name (`[a-z0-9.-_]{1,63}`, not `.` or `..`).
///
/// # Errors
/// [`SpiffeIdError::Segment`] when it breaks the rule.
pub fn check_segment(what: &'static str, value: &str) -> Result<(), SpiffeIdError> {
    if value.is_empty()
        || value.len() > MAX_SEGMENT_LEN
        || value == "."
        || value == ".."
        || !value.bytes().all(is_id_char)
    {
        return Err(SpiffeIdError::Segment {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

impl SpiffeId {
    /// Builds an ID from its parts.
    ///
    /// # Errors
    /// When a part breaks its rule (see [`check_trust_domain`], [`check_segment`]).
    pub fn new(trust_domain: &str, namespace: &str, name: &str) -> Result<Self, SpiffeIdError> {
        check_trust_domain(trust_domain)?;
        check_segment("namespace", namespace)?;
        check_segment("name", name)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// An operator identity: `ns/operators/sa/<name>`.
    ///
    /// # Errors
    /// When a part breaks its rule.
    pub fn operator(trust_domain: &str, name: &str) -> Result<Self, SpiffeIdError> {
        Self::new(trust_domain, OPERATOR_NAMESPACE, name)
    }

    /// An appliance identity: `ns/appliances/sa/<name>`.
    ///
    /// # Errors
    /// When a part breaks its rule.
    pub fn appliance(trust_domain: &str, name: &str) -> Result<Self, SpiffeIdError> {
        Self::new(trust_domain, APPLIANCE_NAMESPACE, name)
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<name>`; no query, fragment, port, user info, empty
    /// or dot segments, upper case or percent-encoding.
    ///
    /// # Errors
    /// The first rule the string breaks.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong(s.len()));
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(td)?;
        let mut parts = path.split('/');
        let (Some(""), Some("ns"), Some(ns), Some("sa"), Some(name), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SpiffeIdError::Path(path.to_string()));
        };
        Self::new(td, ns, name)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace (`ns/<ns>`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service-account name (`sa/<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this identity may do, by namespace.
    pub fn role(&self) -> Role {
        match self.namespace.as_str() {
            OPERATOR_NAMESPACE => Role::Operator,
            APPLIANCE_NAMESPACE => Role::Appliance,
            _ => Role::Service,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.name
        )
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A policy source: an exact SPIFFE ID, or `spiffe://<td>/ns/<ns>/sa/*` for a whole namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourcePattern {
    /// One identity.
    Exact(SpiffeId),
    /// Every identity of a namespace of a trust domain.
    Namespace {
        /// Trust domain.
        trust_domain: String,
        /// Namespace.
        namespace: String,
    },
}

impl SourcePattern {
    /// Parses an exact ID or a `.../sa/*` wildcard.
    ///
    /// # Errors
    /// As [`SpiffeId::parse`].
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if let Some(prefix) = s.strip_suffix("/sa/*") {
            // Validate the rest with a placeholder name.
            let id = SpiffeId::parse(&format!("{prefix}/sa/x"))?;
            return Ok(SourcePattern::Namespace {
                trust_domain: id.trust_domain,
                namespace: id.namespace,
            });
        }
        SpiffeId::parse(s).map(SourcePattern::Exact)
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            SourcePattern::Exact(e) => e == id,
            SourcePattern::Namespace {
                trust_domain,
                namespace,
            } => id.trust_domain == *trust_domain && id.namespace == *namespace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id = SpiffeId::parse("spiffe://pop.example/ns/operators/sa/alice").unwrap();
        assert_eq!(id.trust_domain(), "pop.example");
        assert_eq!(id.role(), Role::Operator);
        assert_eq!(id.to_string(), "spiffe://pop.example/ns/operators/sa/alice");
        let a = SpiffeId::parse("spiffe://td/ns/appliances/sa/pop-1").unwrap();
        assert_eq!(a.role(), Role::Appliance);
        let s = SpiffeId::parse("spiffe://td/ns/default/sa/user").unwrap();
        assert_eq!(s.role(), Role::Service);
    }

    #[test]
    fn refuses_by_part() {
        let err = |s: &str| SpiffeId::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("https://td/ns/a/sa/b"),
            "does not start with \"spiffe://\""
        );
        assert!(err("spiffe://TD/ns/a/sa/b").starts_with("trust domain \"TD\""));
        assert!(err("spiffe://td:443/ns/a/sa/b").starts_with("trust domain \"td:443\""));
        assert!(err("spiffe://td/ns/a/sa/b/c").starts_with("path \"/ns/a/sa/b/c\""));
        assert!(err("spiffe://td/ns/a/sa/").starts_with("name \"\""));
        assert!(err("spiffe://td/ns/../sa/b").starts_with("namespace \"..\""));
        assert!(err("spiffe://td").starts_with("path \"\""));
        assert!(err("spiffe://td/ns/a/sa/b?x=1").starts_with("name \"b?x=1\""));
    }

    #[test]
    fn namespace_pattern() {
        let p = SourcePattern::parse("spiffe://td/ns/danmaku/sa/*").unwrap();
        assert!(p.matches(&SpiffeId::parse("spiffe://td/ns/danmaku/sa/any").unwrap()));
        assert!(!p.matches(&SpiffeId::parse("spiffe://td/ns/user/sa/any").unwrap()));
        assert!(!p.matches(&SpiffeId::parse("spiffe://other/ns/danmaku/sa/any").unwrap()));
    }
}
