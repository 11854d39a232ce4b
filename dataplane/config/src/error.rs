//! Errors of loading and writing a configuration.

use std::io;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
///
/// Messages are meant for operators: [`ConfigError::Invalid`] reads like
/// `sessions[0].subscribers[2]: "127.0.0.1:99999" is not a valid socket address (ip:port)`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8). Only
    /// [`Config::from_file`](crate::Config::from_file) returns it; the reason is the
    /// [`source`](std::error::Error::source), so print the error chain (`{:#}` with `anyhow`).
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The text is not TOML, or does not have the shape of the schema: an unknown key (typos are
    /// rejected, not ignored), a value of the wrong type, or a missing required key. Holds toml's
    /// message, which names the line and column and quotes the offending line.
    #[error("invalid config: {0}")]
    Syntax(String),
    /// The text has the right shape but a value breaks a rule: out of range, unparsable address,
    /// duplicate name, overlapping ports, unknown egress port, routing loop, ...
    #[error("{path}: {value} {rule}")]
    Invalid {
        /// Where, in the file's own terms: `media.ports[1].bind`, `sessions[0].subscribers[2]`.
        path: String,
        /// The offending value as written in TOML (strings quoted), or a short description of it
        /// (`"[]"`, `"129 entries"`) for whole lists.
        value: String,
        /// The rule it breaks, phrased to follow the value: `must be in 1..=256`.
        rule: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub(crate) fn invalid(
        path: impl Into<String>,
        value: impl Into<String>,
        rule: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            value: value.into(),
            rule: rule.into(),
        }
    }
}

/// Why [`Config::to_toml`](crate::Config::to_toml) could not write a configuration.
///
/// Only a hand-built [`Config`](crate::Config) can trigger it: one whose values the file format
/// cannot express, such as a subscriber whose egress PortId is neither its session's ingress port
/// nor the first PortId of a named port. Every parsed configuration can be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write config as TOML: {0}")]
pub struct ToTomlError(pub(crate) String);
