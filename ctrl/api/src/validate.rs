//! Validation of every resource the control daemon accepts, shared by the daemon (which refuses
//! an invalid change with `InvalidArgument`), the CLI (which can check before sending) and the
//! appliance agent (which checks what it is asked to apply).
//!
//! Each function takes the field path of the value (`"session"`, `"batch.upserts[7]"`) so the
//! error names exactly what is wrong: `session.subscribers[3].address: "1.2.3" is not an IP
//! address`. Checks that need other resources (a session's service, a route's service) ask a
//! [`Catalog`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use crate::pb::{
    Canary, Endpoint, HealthCheck, IdentityKind, OutlierDetection, Policy, PolicyAction, Route,
    Service, Session,
};
use crate::spiffe::{self, SourcePattern};

/// Most subscribers of one session; the same as `popmesh_media::flow::MAX_SUBSCRIBERS` (the
/// agent's flow table refuses more).
pub const MAX_SUBSCRIBERS: usize = 4096;
/// Longest session name, in characters.
pub const MAX_SESSION_NAME_LEN: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_LEN: usize = 128;
/// Largest RTP clock rate, Hz.
pub const MAX_CLOCK_RATE: u32 = 1_000_000;
/// Largest request timeout, ms.
pub const MAX_TIMEOUT_MS: u32 = 600_000;
/// Timeout of a service whose `timeout_ms` is 0.
pub const DEFAULT_TIMEOUT_MS: u32 = 15_000;
/// Most retries of a retry policy.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Shortest SVID lifetime, s.
pub const MIN_SVID_TTL_S: u32 = 60;
/// Longest SVID lifetime, s (90 days).
pub const MAX_SVID_TTL_S: u32 = 90 * 24 * 3600;
/// SVID lifetime when the request says 0, s (24 hours).
pub const DEFAULT_SVID_TTL_S: u32 = 24 * 3600;
/// Health-check intervals (when checks are on), ms: from twice a second to hourly.
pub const HEALTH_INTERVAL_MS: std::ops::RangeInclusive<u32> = 500..=3_600_000;
/// Health-check timeout when `timeout_ms` is 0, ms.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u32 = 1000;
/// Failed checks that mark an endpoint unhealthy when `unhealthy_threshold` is 0.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
/// Passed checks that mark an endpoint healthy again when `healthy_threshold` is 0.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
/// Largest health-check threshold.
pub const MAX_HEALTH_THRESHOLD: u32 = 100;
/// Longest health-check path, bytes.
pub const MAX_HEALTH_PATH_LEN: usize = 1024;
/// Outlier-detection review interval and base ejection time (when detection is on), ms: a
/// tenth of a second keeps the lane from busy-looping, an hour keeps an ejection from being
/// permanent by accident.
pub const OUTLIER_MS: std::ops::RangeInclusive<u32> = 100..=3_600_000;
/// Most consecutive errors before an ejection.
pub const MAX_OUTLIER_ERRORS: u32 = 1000;

/// Conditions a retry policy may name.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "unavailable",
    "cancelled",
    "deadline-exceeded",
    "resource-exhausted",
];

/// HTTP methods a policy may name.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// A refused value: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// Path of the field, e.g. `session.subscribers[3].address`.
    pub field: String,
    /// What rule it breaks, with the value.
    pub reason: String,
}

impl ValidationError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

type Result<T, E = ValidationError> = std::result::Result<T, E>;

fn err<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T> {
    Err(ValidationError::new(field, reason))
}

/// The services other resources may refer to.
pub trait Catalog {
    /// The service named `name`, if there is one.
    fn service(&self, name: &str) -> Option<&Service>;
}

impl Catalog for HashMap<String, Service> {
    fn service(&self, name: &str) -> Option<&Service> {
        self.get(name)
    }
}

impl Catalog for BTreeMap<String, Service> {
    fn service(&self, name: &str) -> Option<&Service> {
        self.get(name)
    }
}

fn known_service<'a>(cat: &'a dyn Catalog, field: &str, name: &str) -> Result<&'a Service> {
    if name.is_empty() {
        return err(field, "required");
    }
    cat.service(name)
        .ok_or_else(|| ValidationError::new(field, format!("unknown service {name:?}")))
}

fn has_version(service: &Service, field: &str, version: &str) -> Result<()> {
    if service.groups.iter().any(|g| g.version == version) {
        return Ok(());
    }
    let have: Vec<_> = service.groups.iter().map(|g| g.version.as_str()).collect();
    err(
        field,
        format!(
            "service {:?} has no version {version:?} (it has {})",
            service.name,
            have.join(", ")
        ),
    )
}

/// `[a-z0-9-]{1,63}`, not starting or ending with `-`: names of services, routes, policies.
///
/// # Errors
/// When `name` breaks the rule.
pub fn resource_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        err(
            field,
            format!(
                "{name:?} must be 1..=63 characters of [a-z0-9-], not starting or ending with '-'"
            ),
        )
    }
}

/// An appliance name: what its SPIFFE ID has after `sa/` (`[a-z0-9.-_]{1,63}`).
///
/// # Errors
/// When `name` breaks the rule.
pub fn appliance_name(field: &str, name: &str) -> Result<()> {
    spiffe::check_segment("name", name).map_err(|_| {
        ValidationError::new(
            field,
            format!("{name:?} must be 1..=63 characters of [a-z0-9.-_]"),
        )
    })
}

/// A media port name as in the appliance config (`[a-z0-9_-]{1,32}`).
///
/// # Errors
/// When `name` breaks the rule.
pub fn port_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if ok {
        Ok(())
    } else {
        err(
            field,
            format!("{name:?} must be 1..=32 characters of [a-z0-9_-]"),
        )
    }
}

/// Parses an [`Endpoint`] into a concrete socket address (no unspecified or multicast IP,
/// port 1..=65535).
///
/// # Errors
/// `<field>.address` or `<field>.port` when that part is wrong.
pub fn endpoint(field: &str, ep: &Endpoint) -> Result<SocketAddr> {
    endpoint_parts(ep)
        .map_err(|(part, reason)| ValidationError::new(format!("{field}.{part}"), reason))
}

/// [`endpoint`] without building the field path unless it fails (hot in batches).
fn endpoint_parts(ep: &Endpoint) -> Result<SocketAddr, (&'static str, String)> {
    let ip: IpAddr = ep
        .address
        .parse()
        .map_err(|_| ("address", format!("{:?} is not an IP address", ep.address)))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(("address", format!("{ip} is not a unicast host address")));
    }
    let port = u16::try_from(ep.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ("port", format!("{} is not a UDP port (1..=65535)", ep.port)))?;
    Ok(SocketAddr::new(ip, port))
}

fn required<'a, T>(field: &str, v: &'a Option<T>) -> Result<&'a T> {
    v.as_ref()
        .ok_or_else(|| ValidationError::new(field, "required"))
}

/// A session parsed into what an appliance installs (the agent maps this onto a
/// `popmesh_media::flow::FlowSpec`: `ingress` to a `FlowKey` by its media ports, each
/// subscriber to a `Target`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// Session name.
    pub name: String,
    /// Where the publisher sends.
    pub ingress: SocketAddr,
    /// The only accepted sender (`None`: latch the first).
    pub source: Option<SocketAddr>,
    /// RTP clock rate (`None`: the appliance's default).
    pub clock_rate: Option<NonZeroU32>,
    /// Destinations, each with the media port name it leaves from (`None`: the ingress port).
    pub subscribers: Vec<(SocketAddr, Option<String>)>,
}

/// Checks a session on its own (everything but its labels' service): name, appliance, ingress,
/// source, clock rate, 1..=[`MAX_SUBSCRIBERS`] unique subscribers that are not the ingress.
///
/// # Errors
/// The first rule broken, with its field under `field`.
pub fn session_spec(field: &str, s: &Session) -> Result<SessionSpec> {
    let name_ok = !s.name.is_empty()
        && s.name.chars().count() <= MAX_SESSION_NAME_LEN
        && s.name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
    if !name_ok {
        return err(
            format!("{field}.name"),
            format!("{:?} must be 1..=64 characters of [A-Za-z0-9._:-]", s.name),
        );
    }
    appliance_name(&format!("{field}.appliance"), &s.appliance)?;
    let ingress_field = format!("{field}.ingress");
    let ingress = endpoint(&ingress_field, required(&ingress_field, &s.ingress)?)?;
    let source = match &s.source {
        None => None,
        Some(ep) => {
            let src = endpoint(&format!("{field}.source"), ep)?;
            if src.is_ipv4() != ingress.is_ipv4() {
                return err(
                    format!("{field}.source.address"),
                    format!(
                        "{} is not of the ingress address family ({ingress})",
                        src.ip()
                    ),
                );
            }
            Some(src)
        }
    };
    if s.clock_rate > MAX_CLOCK_RATE {
        return err(
            format!("{field}.clock_rate"),
            format!(
                "{} Hz, at most {MAX_CLOCK_RATE} (0: the appliance's default)",
                s.clock_rate
            ),
        );
    }
    if s.subscribers.is_empty() {
        return err(
            format!("{field}.subscribers"),
            "at least one subscriber is required",
        );
    }
    if s.subscribers.len() > MAX_SUBSCRIBERS {
        return err(
            format!("{field}.subscribers"),
            format!(
                "{} subscribers, at most {MAX_SUBSCRIBERS} per session",
                s.subscribers.len()
            ),
        );
    }
    let mut seen: HashMap<SocketAddr, usize> = HashMap::with_capacity(s.subscribers.len());
    let mut subscribers = Vec::with_capacity(s.subscribers.len());
    for (i, sub) in s.subscribers.iter().enumerate() {
        // Field paths are built only on failure: batches check millions of subscribers.
        let f = || format!("{field}.subscribers[{i}]");
        let Some(ep) = &sub.endpoint else {
            return err(format!("{}.endpoint", f()), "required");
        };
        let addr = endpoint_parts(ep)
            .map_err(|(part, reason)| ValidationError::new(format!("{}.{part}", f()), reason))?;
        if addr == ingress {
            return err(f(), format!("{addr} is the session's ingress (a loop)"));
        }
        if let Some(first) = seen.insert(addr, i) {
            return err(
                f(),
                format!("{addr} is listed twice (also subscribers[{first}])"),
            );
        }
        let egress = if sub.egress_port.is_empty() {
            None
        } else {
            port_name(&format!("{}.egress_port", f()), &sub.egress_port)?;
            Some(sub.egress_port.clone())
        };
        subscribers.push((addr, egress));
    }
    Ok(SessionSpec {
        name: s.name.clone(),
        ingress,
        source,
        clock_rate: NonZeroU32::new(s.clock_rate),
        subscribers,
    })
}

/// Checks a session, including its labels against `catalog`: a `labels.service` must exist and
/// a `labels.version` must be one of its versions.
///
/// # Errors
/// The first rule broken, with its field under `field`.
pub fn session(field: &str, s: &Session, catalog: &dyn Catalog) -> Result<SessionSpec> {
    let spec = session_spec(field, s)?;
    let labels = s.labels.clone().unwrap_or_default();
    for (name, v) in [("room", &labels.room), ("user", &labels.user)] {
        if v.len() > MAX_LABEL_LEN {
            return err(
                format!("{field}.labels.{name}"),
                format!("{} bytes, at most {MAX_LABEL_LEN}", v.len()),
            );
        }
    }
    if !labels.service.is_empty() {
        let svc = known_service(catalog, &format!("{field}.labels.service"), &labels.service)?;
        if !labels.version.is_empty() {
            has_version(svc, &format!("{field}.labels.version"), &labels.version)?;
        }
    } else if !labels.version.is_empty() {
        return err(
            format!("{field}.labels.version"),
            "a version needs labels.service",
        );
    }
    Ok(spec)
}

fn header_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        err(
            field,
            format!("{name:?} is not a lower-case header name ([a-z0-9_-]{{1,128}})"),
        )
    }
}

fn host_port(field: &str, s: &str) -> Result<()> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return err(field, format!("{s:?}: port 0"));
        }
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return err(field, format!("{s:?} is not host:port"));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if !host_ok {
        return err(
            field,
            format!("{s:?}: {host:?} is not an IP address or DNS name"),
        );
    }
    if !port_ok {
        return err(field, format!("{s:?}: {port:?} is not a port (1..=65535)"));
    }
    Ok(())
}

fn timeout(field: &str, ms: u32) -> Result<()> {
    if ms > MAX_TIMEOUT_MS {
        return err(field, format!("{ms} ms, at most {MAX_TIMEOUT_MS}"));
    }
    Ok(())
}

/// Whether a `host:port` endpoint is on this host: a loopback IP literal or `localhost`.
fn is_loopback_endpoint(s: &str) -> bool {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return sa.ip().is_loopback();
    }
    s.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// Checks active health-check settings (see the proto's `HealthCheck`).
///
/// # Errors
/// The first rule broken, with its field under `field` (`service.health_check`).
pub fn health_check(field: &str, h: &HealthCheck) -> Result<()> {
    if h.interval_ms == 0 {
        // Settings without an interval would be silently ignored: refuse them instead.
        let stray = [
            ("path", !h.path.is_empty()),
            ("timeout_ms", h.timeout_ms != 0),
            ("unhealthy_threshold", h.unhealthy_threshold != 0),
            ("healthy_threshold", h.healthy_threshold != 0),
        ];
        if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
            return err(
                format!("{field}.{name}"),
                "is set but interval_ms is 0 (no active health checks); set interval_ms \
                 (500..=3600000) or leave it out",
            );
        }
        return Ok(());
    }
    if !HEALTH_INTERVAL_MS.contains(&h.interval_ms) {
        return err(
            format!("{field}.interval_ms"),
            format!(
                "{} ms, must be 0 (off) or {}..={}",
                h.interval_ms,
                HEALTH_INTERVAL_MS.start(),
                HEALTH_INTERVAL_MS.end()
            ),
        );
    }
    if !h.path.is_empty() {
        let ok = h.path.starts_with('/')
            && h.path.len() <= MAX_HEALTH_PATH_LEN
            && h.path.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return err(
                format!("{field}.path"),
                format!(
                    "{:?} must start with \"/\" and be at most {MAX_HEALTH_PATH_LEN} bytes of \
                     visible ASCII without spaces (empty: a connect check)",
                    h.path
                ),
            );
        }
    }
    let timeout = if h.timeout_ms == 0 {
        DEFAULT_HEALTH_TIMEOUT_MS
    } else {
        h.timeout_ms
    };
    if timeout > h.interval_ms {
        let which = if h.timeout_ms == 0 {
            format!("0 (the default, {DEFAULT_HEALTH_TIMEOUT_MS} ms)")
        } else {
            format!("{timeout} ms")
        };
        return err(
            format!("{field}.timeout_ms"),
            format!(
                "{which} is longer than interval_ms ({} ms); a check must end before the next",
                h.interval_ms
            ),
        );
    }
    for (name, v) in [
        ("unhealthy_threshold", h.unhealthy_threshold),
        ("healthy_threshold", h.healthy_threshold),
    ] {
        if v > MAX_HEALTH_THRESHOLD {
            return err(
                format!("{field}.{name}"),
                format!("{v}, at most {MAX_HEALTH_THRESHOLD}"),
            );
        }
    }
    Ok(())
}

/// Checks outlier detection: off (`consecutive_errors` 0, other fields at most sane), or
/// 1..=1000 errors with an interval and base ejection of 100..=3600000 ms and 1..=100 percent.
///
/// # Errors
/// The first rule broken, with its field under `field` (`service.outlier`).
pub fn outlier_detection(field: &str, o: &OutlierDetection) -> Result<()> {
    if o.max_ejection_percent > 100 {
        return err(
            format!("{field}.max_ejection_percent"),
            format!("{}, at most 100", o.max_ejection_percent),
        );
    }
    if o.consecutive_errors == 0 {
        return Ok(());
    }
    if o.consecutive_errors > MAX_OUTLIER_ERRORS {
        return err(
            format!("{field}.consecutive_errors"),
            format!("{}, at most {MAX_OUTLIER_ERRORS}", o.consecutive_errors),
        );
    }
    for (name, v) in [
        ("interval_ms", o.interval_ms),
        ("base_ejection_ms", o.base_ejection_ms),
    ] {
        if v == 0 {
            return err(
                format!("{field}.{name}"),
                "must be > 0 when consecutive_errors is set",
            );
        }
        if !OUTLIER_MS.contains(&v) {
            return err(
                format!("{field}.{name}"),
                format!(
                    "{v} ms, must be {}..={} when consecutive_errors is set",
                    OUTLIER_MS.start(),
                    OUTLIER_MS.end()
                ),
            );
        }
    }
    if o.max_ejection_percent == 0 {
        return err(
            format!("{field}.max_ejection_percent"),
            "must be 1..=100 when consecutive_errors is set (0 would never eject)",
        );
    }
    Ok(())
}

/// Checks a signaling service: name, unique versions each with endpoints, the default version,
/// timeout, retry, circuit breaker, outlier and health-check settings, and that a `plaintext`
/// service has only loopback endpoints.
///
/// # Errors
/// The first rule broken, with its field under `field`.
pub fn service(field: &str, s: &Service) -> Result<()> {
    resource_name(&format!("{field}.name"), &s.name)?;
    if s.groups.is_empty() {
        return err(
            format!("{field}.groups"),
            "at least one endpoint group (version) is required",
        );
    }
    let mut versions = HashSet::new();
    for (i, g) in s.groups.iter().enumerate() {
        let f = format!("{field}.groups[{i}]");
        let ok = !g.version.is_empty()
            && g.version.len() <= 32
            && g.version.bytes().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            });
        if !ok {
            return err(
                format!("{f}.version"),
                format!("{:?} must be 1..=32 characters of [a-z0-9._-]", g.version),
            );
        }
        if !versions.insert(g.version.as_str()) {
            return err(
                format!("{f}.version"),
                format!("{:?} is listed twice", g.version),
            );
        }
        if g.endpoints.is_empty() {
            return err(
                format!("{f}.endpoints"),
                "at least one endpoint is required",
            );
        }
        for (j, e) in g.endpoints.iter().enumerate() {
            host_port(&format!("{f}.endpoints[{j}]"), e)?;
            if s.plaintext && !is_loopback_endpoint(e) {
                return err(
                    format!("{f}.endpoints[{j}]"),
                    format!(
                        "{e:?} is not on loopback; a plaintext service is reached in cleartext, \
                         so its endpoints must be local (127.0.0.0/8, [::1] or localhost)"
                    ),
                );
            }
        }
    }
    if s.default_version.is_empty() {
        return err(format!("{field}.default_version"), "required");
    }
    has_version(s, &format!("{field}.default_version"), &s.default_version)?;
    timeout(&format!("{field}.timeout_ms"), s.timeout_ms)?;
    let effective_timeout = if s.timeout_ms == 0 {
        DEFAULT_TIMEOUT_MS
    } else {
        s.timeout_ms
    };
    if let Some(r) = &s.retry {
        if r.attempts > MAX_RETRY_ATTEMPTS {
            return err(
                format!("{field}.retry.attempts"),
                format!("{}, at most {MAX_RETRY_ATTEMPTS}", r.attempts),
            );
        }
        if r.per_try_timeout_ms > effective_timeout {
            return err(
                format!("{field}.retry.per_try_timeout_ms"),
                format!(
                    "{} ms is longer than the service timeout ({effective_timeout} ms)",
                    r.per_try_timeout_ms
                ),
            );
        }
        for (i, c) in r.retry_on.iter().enumerate() {
            if !RETRY_ON.contains(&c.as_str()) {
                return err(
                    format!("{field}.retry.retry_on[{i}]"),
                    format!("unknown condition {c:?} (known: {})", RETRY_ON.join(", ")),
                );
            }
        }
    }
    if let Some(o) = &s.outlier {
        outlier_detection(&format!("{field}.outlier"), o)?;
    }
    if let Some(h) = &s.health_check {
        health_check(&format!("{field}.health_check"), h)?;
    }
    Ok(())
}

/// Checks a route: name, host, path prefix, header matches, its service and pinned version.
///
/// # Errors
/// The first rule broken, with its field under `field`.
pub fn route(field: &str, r: &Route, catalog: &dyn Catalog) -> Result<()> {
    resource_name(&format!("{field}.name"), &r.name)?;
    let host_ok = r.host == "*"
        || (!r.host.is_empty()
            && r.host.len() <= 253
            && r.host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            }));
    if !host_ok {
        return err(
            format!("{field}.host"),
            format!("{:?} is not a host name or \"*\"", r.host),
        );
    }
    if !r.path_prefix.starts_with('/') {
        return err(
            format!("{field}.path_prefix"),
            format!("{:?} does not start with \"/\"", r.path_prefix),
        );
    }
    for (i, h) in r.headers.iter().enumerate() {
        header_name(&format!("{field}.headers[{i}].name"), &h.name)?;
    }
    let svc = known_service(catalog, &format!("{field}.service"), &r.service)?;
    if !r.pin_version.is_empty() {
        has_version(svc, &format!("{field}.pin_version"), &r.pin_version)?;
    }
    timeout(&format!("{field}.timeout_ms"), r.timeout_ms)
}

/// Checks a canary split: its service exists, every weight names one of its versions once,
/// weights sum to 100, header names are valid, at most one sticky key.
///
/// # Errors
/// The first rule broken, with its field under `field`.
pub fn canary(field: &str, c: &Canary, catalog: &dyn Catalog) -> Result<()> {
    let svc = known_service(catalog, &format!("{field}.service"), &c.service)?;
    if c.weights.is_empty() {
        return err(
            format!("{field}.weights"),
            "at least one version weight is required",
        );
    }
    let mut seen = HashSet::new();
    let mut sum = 0u64;
    for (i, w) in c.weights.iter().enumerate() {
        let f = format!("{field}.weights[{i}]");
        has_version(svc, &format!("{f}.version"), &w.version)?;
        if !seen.insert(w.version.as_str()) {
            return err(
                format!("{f}.version"),
                format!("{:?} is listed twice", w.version),
            );
        }
        if w.weight > 100 {
            return err(format!("{f}.weight"), format!("{}, at most 100", w.weight));
        }
        sum += u64::from(w.weight);
    }
    if sum != 100 {
        return err(
            format!("{field}.weights"),
            format!("weights sum to {sum}, must be 100"),
        );
    }
    if !c.sticky_header.is_empty() && !c.sticky_cookie.is_empty() {
        return err(
            format!("{field}.sticky_cookie"),
            "set either sticky_header or sticky_cookie, not both",
        );
    }
    if !c.sticky_header.is_empty() {
        header_name(&format!("{field}.sticky_header"), &c.sticky_header)?;
    }
    if !c.sticky_cookie.is_empty() {
        let ok = c.sticky_cookie.len() <= 128
            && c.sticky_cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return err(
                format!("{field}.sticky_cookie"),
                format!(
                    "{:?} is not a cookie name ([A-Za-z0-9._-]{{1,128}})",
                    c.sticky_cookie
                ),
            );
        }
    }
    if !c.override_header.is_empty() {
        header_name(&format!("{field}.override_header"), &c.override_header)?;
    }
    Ok(())
}

/// Checks an authorization policy: name, SPIFFE sources, destination service, methods, paths,
/// action.
///
/// # Errors
/// The first rule broken, with its field under `field`.
pub fn policy(field: &str, p: &Policy, catalog: &dyn Catalog) -> Result<()> {
    resource_name(&format!("{field}.name"), &p.name)?;
    if p.sources.is_empty() {
        return err(
            format!("{field}.sources"),
            "at least one source identity is required",
        );
    }
    for (i, s) in p.sources.iter().enumerate() {
        SourcePattern::parse(s).map_err(|e| {
            ValidationError::new(format!("{field}.sources[{i}]"), format!("{s:?}: {e}"))
        })?;
    }
    known_service(catalog, &format!("{field}.destination"), &p.destination)?;
    for (i, m) in p.methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            return err(
                format!("{field}.methods[{i}]"),
                format!(
                    "{m:?} is not an HTTP method (one of {})",
                    METHODS.join(", ")
                ),
            );
        }
    }
    for (i, path) in p.paths.iter().enumerate() {
        if !path.starts_with('/') {
            return err(
                format!("{field}.paths[{i}]"),
                format!("{path:?} does not start with \"/\""),
            );
        }
    }
    match PolicyAction::try_from(p.action) {
        Ok(PolicyAction::Allow | PolicyAction::Deny) => Ok(()),
        _ => err(format!("{field}.action"), "must be ALLOW or DENY"),
    }
}

/// Checks an SVID request's kind, namespace, name and lifetime; gives the effective TTL in s.
///
/// # Errors
/// The first rule broken, with its field under `field`.
pub fn svid_request(
    field: &str,
    kind: i32,
    namespace: &str,
    name: &str,
    ttl_seconds: u32,
) -> Result<(IdentityKind, u32)> {
    let kind = match IdentityKind::try_from(kind) {
        Ok(k @ (IdentityKind::Service | IdentityKind::Appliance | IdentityKind::Operator)) => k,
        _ => {
            return err(
                format!("{field}.kind"),
                "must be SERVICE, APPLIANCE or OPERATOR",
            )
        }
    };
    if kind == IdentityKind::Service {
        spiffe::check_segment("namespace", namespace)
            .map_err(|e| ValidationError::new(format!("{field}.namespace"), e.to_string()))?;
        if matches!(
            namespace,
            spiffe::OPERATOR_NAMESPACE | spiffe::APPLIANCE_NAMESPACE
        ) {
            return err(
                format!("{field}.namespace"),
                format!("{namespace:?} is reserved; use kind OPERATOR or APPLIANCE"),
            );
        }
    } else if !namespace.is_empty() {
        return err(
            format!("{field}.namespace"),
            "only service identities take a namespace",
        );
    }
    spiffe::check_segment("name", name)
        .map_err(|e| ValidationError::new(format!("{field}.name"), e.to_string()))?;
    let ttl = if ttl_seconds == 0 {
        DEFAULT_SVID_TTL_S
    } else {
        ttl_seconds
    };
    if !(MIN_SVID_TTL_S..=MAX_SVID_TTL_S).contains(&ttl) {
        return err(
            format!("{field}.ttl_seconds"),
            format!("{ttl} s, must be {MIN_SVID_TTL_S}..={MAX_SVID_TTL_S} (0: 24 hours)"),
        );
    }
    Ok((kind, ttl))
}
