//! Argument parsing and checks shared by the binaries (clap value parsers
//! and the destination guard).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

/// Parses a positive, finite number of seconds such as `2` or `0.5`.
///
/// # Errors
/// A message for clap when the text is not such a number or is above a day.
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("`{text}`: seconds must be greater than 0"));
    }
    // Every run must stop by itself within a bounded time.
    if secs > 86_400.0 {
        return Err(format!("`{text}`: at most 86400 seconds (one day)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Why a destination address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TargetError {
    /// The address is not loopback and remote targets were not allowed.
    #[error("{addr}: not a loopback address; pass --allow-remote for an address inside a test network namespace")]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// Port 0 cannot receive.
    #[error("{addr}: port 0 is not a destination")]
    PortZero {
        /// The refused address.
        addr: SocketAddr,
    },
}

/// Whether `ip` is loopback, IPv4-mapped IPv6 loopback included.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Traffic goes to loopback unless the operator says otherwise, so a typo
/// cannot aim a flood at a real network.
///
/// # Errors
/// See [`TargetError`].
pub fn check_target(addr: SocketAddr, allow_remote: bool) -> Result<(), TargetError> {
    if addr.port() == 0 {
        return Err(TargetError::PortZero { addr });
    }
    if !allow_remote && !is_loopback(addr.ip()) {
        return Err(TargetError::NotLoopback { addr });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_and_reject_nonsense() {
        assert_eq!(parse_secs("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "NaN", "inf", "abc", "", "100000"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_targets_by_default() {
        let ok: [SocketAddr; 3] =
            ["127.0.0.1:5000", "127.3.4.5:1", "[::1]:5000"].map(|a| a.parse().expect("addr"));
        for addr in ok {
            assert_eq!(check_target(addr, false), Ok(()));
        }
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().expect("addr");
        assert_eq!(check_target(mapped, false), Ok(()));
        let remote: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
        assert_eq!(
            check_target(remote, false),
            Err(TargetError::NotLoopback { addr: remote })
        );
        assert_eq!(check_target(remote, true), Ok(()));
        let zero: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        assert_eq!(
            check_target(zero, true),
            Err(TargetError::PortZero { addr: zero })
        );
    }
}
