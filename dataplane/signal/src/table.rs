//! The mesh table: routes, services (their versions, endpoints and resilience state), canary
//! splits and policies, compiled from one control-daemon config version.
//!
//! The lane holds the current table behind an [`ArcSwap`](arc_swap::ArcSwap); every request
//! loads it once and uses that version to the end, so a change never affects a request in
//! flight and never touches an open connection. A new table takes over the endpoint, breaker
//! and retry-budget state of the old one for everything that still exists (same service,
//! version and address), so a config change does not forget which endpoints are ejected or
//! how loaded they are.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use popmesh_ctrl_api::pb::{self, PolicyAction};
use popmesh_ctrl_api::spiffe::SourcePattern;
use popmesh_ctrl_api::validate::{self, ValidationError};
use popmesh_ctrl_api::SpiffeId;

use crate::resilience::{Balancer, Breaker, Endpoint, Limits, OutlierPolicy, RetryBudget};

/// Everything the lane routes by, at one config version.
#[derive(Debug, Default)]
pub struct MeshTable {
    /// Config version this table was built from.
    pub version: u64,
    routes: Vec<Route>,
    services: HashMap<String, Arc<Service>>,
    /// Policies by destination service.
    policies: HashMap<String, Vec<Policy>>,
    /// The breaker that counts connections to each endpoint (`host:port`). An endpoint in
    /// several services counts against the first of them by name.
    endpoint_breakers: HashMap<String, Arc<Breaker>>,
}

/// One route, compiled.
#[derive(Debug)]
pub struct Route {
    /// Route name (a metrics label).
    pub name: String,
    host: Option<String>,
    path_prefix: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The service it sends to.
    pub service: Arc<Service>,
    /// A version pin (None: the canary split).
    pub pin_version: Option<String>,
    /// Timeout for the response head.
    pub timeout: Duration,
}

/// One service with its versions and its shared resilience state.
#[derive(Debug)]
pub struct Service {
    /// The service as the daemon sent it.
    pub spec: pb::Service,
    /// Its canary split, if any.
    pub canary: Option<pb::Canary>,
    /// One balancer per version.
    pub groups: HashMap<String, Arc<Balancer>>,
    /// Limits towards the service (shared by every signaling core).
    pub breaker: Arc<Breaker>,
    /// Retry budget of the service.
    pub retry_budget: Arc<RetryBudget>,
    /// Timeout of a request (response head) when the route sets none.
    pub timeout: Duration,
    /// Retry policy, compiled.
    pub retry: RetryRules,
}

/// When and how often a request may be retried.
#[derive(Debug, Clone, Default)]
pub struct RetryRules {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Timeout of each try (None: the route timeout covers all tries).
    pub per_try_timeout: Option<Duration>,
    /// Retry on any 5xx.
    pub on_5xx: bool,
    /// Retry on 502, 503, 504.
    pub on_gateway_error: bool,
    /// Retry when the connection was reset before a response.
    pub on_reset: bool,
    /// Retry when no connection could be made.
    pub on_connect_failure: bool,
    /// gRPC statuses (numeric codes) that are retried.
    pub grpc_codes: Vec<u32>,
}

#[derive(Debug)]
struct Policy {
    name: String,
    sources: Vec<SourcePattern>,
    methods: Vec<String>,
    paths: Vec<String>,
    allow: bool,
}

/// An authorization verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the named policy.
    Allow(String),
    /// Denied, with the reason told to the caller.
    Deny(String),
}

impl MeshTable {
    /// Compiles one config version, taking over the state of `previous` where the same
    /// endpoints still exist.
    ///
    /// # Errors
    /// Every resource that does not validate, as `(kind, name, error)`; nothing is built then.
    pub fn compile(
        version: u64,
        services: &[pb::Service],
        routes: &[pb::Route],
        canaries: &[pb::Canary],
        policies: &[pb::Policy],
        previous: Option<&MeshTable>,
    ) -> Result<MeshTable, Vec<(&'static str, String, ValidationError)>> {
        let mut errors = Vec::new();
        let catalog = Catalog(services);
        let mut compiled = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            if let Err(e) = validate::service(&format!("services[{i}]"), s) {
                errors.push(("service", s.name.clone(), e));
                continue;
            }
            let canary = canaries.iter().find(|c| c.service == s.name).cloned();
            let prev = previous.and_then(|p| p.services.get(&s.name));
            compiled.insert(s.name.clone(), Arc::new(Service::build(s, canary, prev)));
        }
        for (i, c) in canaries.iter().enumerate() {
            if let Err(e) = validate::canary(&format!("canaries[{i}]"), c, &catalog) {
                errors.push(("canary", c.service.clone(), e));
            }
        }
        let mut table_routes = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            if let Err(e) = validate::route(&format!("routes[{i}]"), r, &catalog) {
                errors.push(("route", r.name.clone(), e));
                continue;
            }
            let Some(service) = compiled.get(&r.service) else {
                continue; // its service was refused above
            };
            match Route::build(r, service.clone()) {
                Ok(route) => table_routes.push(route),
                Err(e) => errors.push(("route", r.name.clone(), e)),
            }
        }
        let mut table_policies: HashMap<String, Vec<Policy>> = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            if let Err(e) = validate::policy(&format!("policies[{i}]"), p, &catalog) {
                errors.push(("policy", p.name.clone(), e));
                continue;
            }
            let sources = p
                .sources
                .iter()
                .filter_map(|s| SourcePattern::parse(s).ok())
                .collect();
            table_policies
                .entry(p.destination.clone())
                .or_default()
                .push(Policy {
                    name: p.name.clone(),
                    sources,
                    methods: p.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                    paths: p.paths.clone(),
                    allow: p.action() == PolicyAction::Allow,
                });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Most specific first: an exact host before "*", then the longer path prefix, then more
        // header matches; ties keep the daemon's (name) order.
        table_routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
                .then(b.headers.len().cmp(&a.headers.len()))
        });
        let mut names: Vec<&String> = compiled.keys().collect();
        names.sort();
        let mut endpoint_breakers = HashMap::new();
        for name in names {
            let s = &compiled[name];
            for b in s.groups.values() {
                for e in b.endpoints() {
                    endpoint_breakers
                        .entry(e.addr().to_owned())
                        .or_insert_with(|| s.breaker.clone());
                }
            }
        }
        Ok(MeshTable {
            version,
            routes: table_routes,
            services: compiled,
            policies: table_policies,
            endpoint_breakers,
        })
    }

    /// The first route matching the request.
    pub fn route(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(host, path, headers))
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// The breaker that counts upstream connections to `endpoint` (`host:port`).
    pub fn endpoint_breaker(&self, endpoint: &str) -> Option<&Arc<Breaker>> {
        self.endpoint_breakers.get(endpoint)
    }

    /// Every service.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Whether `source` may call `method path` on `service`: a matching deny policy wins,
    /// then a matching allow policy; with neither the call is denied (default deny).
    pub fn authorize(
        &self,
        source: Option<&SpiffeId>,
        service: &str,
        method: &str,
        path: &str,
    ) -> Decision {
        let Some(source) = source else {
            return Decision::Deny(format!(
                "caller has no identity; {service} only takes authorized callers"
            ));
        };
        let policies = self.policies.get(service).map(Vec::as_slice).unwrap_or(&[]);
        let matching = || policies.iter().filter(|p| p.matches(source, method, path));
        if let Some(p) = matching().find(|p| !p.allow) {
            return Decision::Deny(format!(
                "policy {} denies {source} calling {method} {path} on {service}",
                p.name
            ));
        }
        match matching().find(|p| p.allow) {
            Some(p) => Decision::Allow(p.name.clone()),
            None => Decision::Deny(format!(
                "no policy allows {source} to call {method} {path} on {service}"
            )),
        }
    }
}

impl Policy {
    fn matches(&self, source: &SpiffeId, method: &str, path: &str) -> bool {
        self.sources.iter().any(|s| s.matches(source))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str())))
    }
}

impl Route {
    fn build(r: &pb::Route, service: Arc<Service>) -> Result<Route, ValidationError> {
        let mut headers = Vec::new();
        for (i, h) in r.headers.iter().enumerate() {
            let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                ValidationError::new(
                    format!("route.headers[{i}].name"),
                    format!("{:?} is not a header name", h.name),
                )
            })?;
            let value = http::HeaderValue::from_str(&h.value).map_err(|_| {
                ValidationError::new(
                    format!("route.headers[{i}].value"),
                    format!("{:?} is not a header value", h.value),
                )
            })?;
            headers.push((name, value));
        }
        let timeout = if r.timeout_ms == 0 {
            service.timeout
        } else {
            Duration::from_millis(u64::from(r.timeout_ms))
        };
        Ok(Route {
            name: r.name.clone(),
            host: (r.host != "*").then(|| r.host.to_ascii_lowercase()),
            path_prefix: r.path_prefix.clone(),
            headers,
            service,
            pin_version: (!r.pin_version.is_empty()).then(|| r.pin_version.clone()),
            timeout,
        })
    }

    fn matches(&self, host: &str, path: &str, headers: &HeaderMap) -> bool {
        if let Some(h) = &self.host {
            if !h.eq_ignore_ascii_case(host) {
                return false;
            }
        }
        path.starts_with(self.path_prefix.as_str())
            && self
                .headers
                .iter()
                .all(|(n, v)| headers.get_all(n).iter().any(|x| x == v))
    }
}

impl Service {
    fn build(s: &pb::Service, canary: Option<pb::Canary>, prev: Option<&Arc<Service>>) -> Service {
        let outlier = s.outlier.unwrap_or_default();
        let policy = OutlierPolicy {
            consecutive_errors: outlier.consecutive_errors,
            base_ejection: Duration::from_millis(u64::from(if outlier.base_ejection_ms == 0 {
                30_000
            } else {
                outlier.base_ejection_ms
            })),
            max_ejection_percent: if outlier.max_ejection_percent == 0 {
                100
            } else {
                outlier.max_ejection_percent
            },
            ..OutlierPolicy::default()
        };
        let mut groups = HashMap::new();
        for g in &s.groups {
            let old = prev.and_then(|p| p.groups.get(&g.version));
            let endpoints = g
                .endpoints
                .iter()
                .map(|addr| {
                    old.and_then(|b| b.endpoints().iter().find(|e| e.addr() == addr))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Endpoint::new(addr.clone(), policy)))
                })
                .collect();
            groups.insert(
                g.version.clone(),
                Arc::new(Balancer::new(endpoints, policy.max_ejection_percent)),
            );
        }
        let cb = s.circuit_breaker.unwrap_or_default();
        let limits = Limits {
            max_connections: cb.max_connections,
            max_pending_requests: cb.max_pending_requests,
            max_requests: cb.max_requests,
            max_retries: cb.max_retries,
        };
        let breaker = match prev {
            Some(p) => {
                p.breaker.set_limits(limits);
                p.breaker.clone()
            }
            None => Arc::new(Breaker::new(limits)),
        };
        let retry_budget = prev.map_or_else(
            || Arc::new(RetryBudget::new(Duration::from_secs(10), 10, 0.2)),
            |p| p.retry_budget.clone(),
        );
        let timeout_ms = if s.timeout_ms == 0 {
            validate::DEFAULT_TIMEOUT_MS
        } else {
            s.timeout_ms
        };
        Service {
            spec: s.clone(),
            canary,
            groups,
            breaker,
            retry_budget,
            timeout: Duration::from_millis(u64::from(timeout_ms)),
            retry: RetryRules::from(s.retry.as_ref()),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The version a request gets: `pin` (a route's pin), else the tester's override header,
    /// else the canary split by the sticky key, else the default version.
    pub fn place(&self, pin: Option<&str>, headers: &HeaderMap, fallback_key: u64) -> &str {
        if let Some(pin) = pin {
            if let Some((v, _)) = self.groups.get_key_value(pin) {
                return v;
            }
        }
        let Some(canary) = &self.canary else {
            return &self.spec.default_version;
        };
        let override_version = (!canary.override_header.is_empty())
            .then(|| headers.get(canary.override_header.as_str()))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let key = sticky_key(canary, headers);
        let fallback;
        let key = match key {
            Some(k) => k,
            None => {
                fallback = format!("{fallback_key:016x}");
                fallback.as_str()
            }
        };
        popmesh_ctrl_api::canary::place(&self.spec, Some(canary), key, override_version)
    }
}

/// The sticky key of a request: the canary's header, or its cookie.
fn sticky_key<'h>(canary: &pb::Canary, headers: &'h HeaderMap) -> Option<&'h str> {
    if !canary.sticky_cookie.is_empty() {
        for h in headers.get_all(http::header::COOKIE) {
            let Ok(s) = h.to_str() else { continue };
            for pair in s.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    if k == canary.sticky_cookie {
                        return Some(v);
                    }
                }
            }
        }
    }
    if !canary.sticky_header.is_empty() {
        return headers
            .get(canary.sticky_header.as_str())
            .and_then(|v| v.to_str().ok());
    }
    None
}

impl From<Option<&pb::RetryPolicy>> for RetryRules {
    fn from(p: Option<&pb::RetryPolicy>) -> Self {
        let Some(p) = p else {
            return RetryRules::default();
        };
        let mut r = RetryRules {
            attempts: p.attempts,
            per_try_timeout: (p.per_try_timeout_ms > 0)
                .then(|| Duration::from_millis(u64::from(p.per_try_timeout_ms))),
            ..RetryRules::default()
        };
        for on in &p.retry_on {
            match on.as_str() {
                "5xx" => r.on_5xx = true,
                "gateway-error" => r.on_gateway_error = true,
                "reset" => r.on_reset = true,
                "connect-failure" => r.on_connect_failure = true,
                "cancelled" => r.grpc_codes.push(1),
                "deadline-exceeded" => r.grpc_codes.push(4),
                "resource-exhausted" => r.grpc_codes.push(8),
                "unavailable" => r.grpc_codes.push(14),
                _ => {}
            }
        }
        r
    }
}

impl RetryRules {
    /// Whether a response with `status` (and gRPC status `grpc`, when the response head has
    /// one) may be retried.
    pub fn retry_status(&self, status: u16, grpc: Option<u32>) -> bool {
        (self.on_5xx && status >= 500)
            || (self.on_gateway_error && matches!(status, 502..=504))
            || grpc.is_some_and(|c| self.grpc_codes.contains(&c))
    }
}

struct Catalog<'a>(&'a [pb::Service]);

impl validate::Catalog for Catalog<'_> {
    fn service(&self, name: &str) -> Option<&pb::Service> {
        self.0.iter().find(|s| s.name == name)
    }
}
