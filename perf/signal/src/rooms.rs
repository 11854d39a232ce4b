//! The sans-IO parts of `popmesh-rooms`: when each simulated user arrives, which source address
//! it connects from, how a join names its user and room, why a user failed, and the JSON
//! summary `popmesh-rooms users` writes (read by the capacity harness).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Loopback source addresses users are spread over (127.0.0.2 ..= 127.0.0.254), so tens of
/// thousands of connections to one address do not run out of ephemeral ports (about 28,000
/// per source address with the default `ip_local_port_range`).
pub const SOURCE_IPS: u64 = 253;

/// The source address of user `i`.
pub fn source_ip(i: u64) -> Ipv4Addr {
    // 2 + (i mod 253) is in 2..=254: never the network or broadcast byte, never 127.0.0.1
    // (where the services listen).
    Ipv4Addr::new(127, 0, 0, (2 + i % SOURCE_IPS) as u8)
}

/// Seconds after the start at which user `i` (0-based) arrives: the arrival rate grows linearly
/// from 0 to `rate` users/s over `ramp_s`, then stays at `rate` (open loop: arrivals never wait
/// for earlier users). `rate` must be > 0; a `ramp_s` of 0 (or below) starts at full rate.
pub fn arrival_s(i: u64, rate: f64, ramp_s: f64) -> f64 {
    let i = i as f64;
    if ramp_s <= 0.0 {
        return i / rate;
    }
    // Users arrived by time t <= ramp: rate t^2 / (2 ramp); by the end of the ramp rate*ramp/2.
    let during_ramp = rate * ramp_s / 2.0;
    if i < during_ramp {
        (2.0 * ramp_s * i / rate).sqrt()
    } else {
        ramp_s + (i - during_ramp) / rate
    }
}

/// User name of user `i`.
pub fn user_name(i: u64) -> String {
    format!("u{i}")
}

/// The room user `i` enters among `rooms` (round robin).
pub fn room_of(i: u64, rooms: u64) -> String {
    format!("r{}", i % rooms.max(1))
}

/// What a join names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinParams {
    /// The user entering.
    pub user: String,
    /// The room entered.
    pub room: String,
}

/// Reads `user` and `room` from a join's query string, else from its
/// `application/x-www-form-urlencoded` body (`user=u1&room=r7`). Values are taken as written
/// (user and room names are `[A-Za-z0-9_-]`, 1..=64 bytes).
///
/// # Errors
/// Names the missing or malformed field.
pub fn parse_join(query: Option<&str>, body: &[u8]) -> Result<JoinParams, String> {
    let body = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let find = |key: &str| -> Option<&str> {
        [query.unwrap_or(""), body.trim()]
            .into_iter()
            .find_map(|text| {
                text.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v)
            })
    };
    let field = |key: &str| -> Result<String, String> {
        let v = find(key).ok_or_else(|| format!("{key} is missing (query or form body)"))?;
        if v.is_empty()
            || v.len() > 64
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("{key} {v:?} must be 1..=64 bytes of [A-Za-z0-9_-]"));
        }
        Ok(v.to_string())
    };
    Ok(JoinParams {
        user: field("user")?,
        room: field("room")?,
    })
}

/// Why a user did not end up joined with its WebSocket open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// TCP connect failed for another reason.
    Connect,
    /// The target refused the connection (nothing listening, or its backlog overflowed).
    Refused,
    /// This process ran out of file descriptors (EMFILE/ENFILE).
    FdLimit,
    /// No local port was left for the source address (EADDRNOTAVAIL/EADDRINUSE).
    SourcePorts,
    /// The TLS handshake failed.
    Tls,
    /// The join request or its answer broke off.
    JoinIo,
    /// The join was answered, but not with 200 and the room.
    JoinStatus,
    /// The WebSocket upgrade failed.
    WebSocket,
    /// The user was not joined within the timeout.
    Timeout,
    /// The WebSocket closed before the phase ended.
    ClosedEarly,
}

impl Failure {
    /// Every reason, in report order.
    pub const ALL: [Failure; 10] = [
        Self::Connect,
        Self::Refused,
        Self::FdLimit,
        Self::SourcePorts,
        Self::Tls,
        Self::JoinIo,
        Self::JoinStatus,
        Self::WebSocket,
        Self::Timeout,
        Self::ClosedEarly,
    ];

    /// The name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Refused => "refused",
            Self::FdLimit => "fd_limit",
            Self::SourcePorts => "source_ports",
            Self::Tls => "tls",
            Self::JoinIo => "join_io",
            Self::JoinStatus => "join_status",
            Self::WebSocket => "websocket",
            Self::Timeout => "timeout",
            Self::ClosedEarly => "closed_early",
        }
    }

    /// What to do about it, for the first occurrence's message.
    pub fn hint(self) -> &'static str {
        match self {
            Self::FdLimit => {
                "the file-descriptor limit is reached: raise it (ulimit -n, or run as root so \
                 popmesh-rooms can raise RLIMIT_NOFILE itself) or run fewer users"
            }
            Self::SourcePorts => {
                "no local port left: spread over more source addresses or widen \
                 net.ipv4.ip_local_port_range"
            }
            Self::Refused => {
                "nothing accepted the connection: is the target up, and is its listen backlog \
                 (net.core.somaxconn) large enough for the arrival rate?"
            }
            Self::Timeout => "not joined within --timeout: the target or this CPU is saturated",
            Self::Tls => "check the SVID, key and trust bundle files and the policy",
            _ => "see the message",
        }
    }

    /// Sorts a connect/bind error.
    pub fn of_io(e: &std::io::Error) -> Failure {
        // EMFILE 24, ENFILE 23, EADDRNOTAVAIL 99, EADDRINUSE 98 on Linux.
        match e.raw_os_error() {
            Some(23 | 24) => Self::FdLimit,
            Some(98 | 99) => Self::SourcePorts,
            _ if e.kind() == std::io::ErrorKind::ConnectionRefused => Self::Refused,
            _ => Self::Connect,
        }
    }
}

/// Latency percentiles of one histogram, µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub samples: u64,
    /// P50.
    pub p50_us: f64,
    /// P99.
    pub p99_us: f64,
    /// P99.9.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl LatencySummary {
    /// Of a histogram of ns values; `None` when it is empty.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Some(Self {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// The JSON `popmesh-rooms users --json` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsersSummary {
    /// Users asked for.
    pub users: u64,
    /// Users that started (arrived before the phase ended).
    pub attempted: u64,
    /// Users whose join was answered 200 with their room.
    pub joined: u64,
    /// Users whose WebSocket upgrade succeeded.
    pub websockets_opened: u64,
    /// WebSockets still open when the phase ended.
    pub open_at_end: u64,
    /// Failed users by [`Failure::name`].
    pub failed: BTreeMap<String, u64>,
    /// Users that never started because the phase's duration was over.
    pub not_started: u64,
    /// CLOCK_MONOTONIC ns at the start (the harness's clock too).
    pub start_monotonic_ns: u64,
    /// Seconds from the start until every user had arrived.
    pub arrivals_s: f64,
    /// Seconds from the start until the summary was written.
    pub elapsed_s: f64,
    /// Connect + TLS handshake + join answered, from the user's scheduled arrival.
    pub join_total: Option<LatencySummary>,
    /// The join request alone (written to answer read).
    pub join_request: Option<LatencySummary>,
    /// `[seconds since start, WebSockets open]`, once a second.
    pub open_over_time: Vec<[f64; 2]>,
    /// RLIMIT_NOFILE this process ran with.
    pub nofile_limit: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_ramp_then_hold_the_rate() {
        assert_eq!(arrival_s(0, 100.0, 0.0), 0.0);
        assert!((arrival_s(100, 100.0, 0.0) - 1.0).abs() < 1e-9);
        // 100/s with a 2 s ramp: 100 users arrive during the ramp, the 100th at 2 s.
        assert!((arrival_s(100, 100.0, 2.0) - 2.0).abs() < 1e-9);
        assert!((arrival_s(25, 100.0, 2.0) - 1.0).abs() < 1e-9);
        assert!((arrival_s(200, 100.0, 2.0) - 3.0).abs() < 1e-9);
        let mut last = -1.0;
        for i in 0..1000 {
            let t = arrival_s(i, 100.0, 2.0);
            assert!(t >= last, "not monotonic at {i}");
            last = t;
        }
    }

    #[test]
    fn sources_stay_in_the_spread() {
        assert_eq!(source_ip(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_ip(252), Ipv4Addr::new(127, 0, 0, 254));
        assert_eq!(source_ip(253), Ipv4Addr::new(127, 0, 0, 2));
    }

    #[test]
    fn joins_name_user_and_room_in_query_or_body() {
        let want = JoinParams {
            user: "u1".into(),
            room: "r7".into(),
        };
        assert_eq!(parse_join(Some("user=u1&room=r7"), b""), Ok(want.clone()));
        assert_eq!(parse_join(None, b"room=r7&user=u1\n"), Ok(want.clone()));
        assert_eq!(parse_join(Some("user=u1"), b"room=r7"), Ok(want));
        assert!(parse_join(Some("user=u1"), b"")
            .unwrap_err()
            .contains("room"));
        assert!(parse_join(Some("user=a%20b&room=r"), b"")
            .unwrap_err()
            .contains("user"));
    }

    #[test]
    fn io_errors_sort_into_reasons() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(Failure::of_io(&e(24)), Failure::FdLimit);
        assert_eq!(Failure::of_io(&e(99)), Failure::SourcePorts);
        assert_eq!(Failure::of_io(&e(111)), Failure::Refused);
        assert_eq!(Failure::of_io(&e(113)), Failure::Connect);
    }
}
