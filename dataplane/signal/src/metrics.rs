//! The lane's series in `/metrics` (`popmesh_signal_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a proxied request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Listener name.
    pub listener: String,
    /// Route name ("" when none matched).
    pub route: String,
    /// Destination service.
    pub service: String,
    /// Version of the service the request went to.
    pub version: String,
    /// Caller's SPIFFE ID ("" without one).
    pub source: String,
    /// `1xx` .. `5xx`.
    pub class: &'static str,
}

/// Labels of a latency sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// Route name.
    pub route: String,
    /// Destination service.
    pub service: String,
    /// Version.
    pub version: String,
}

/// Source and destination of a denied call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenyLabels {
    /// Caller's SPIFFE ID ("" without one).
    pub source: String,
    /// Service it tried to call.
    pub destination: String,
}

/// A service and an endpoint of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Service.
    pub service: String,
    /// Version.
    pub version: String,
    /// `host:port`.
    pub endpoint: String,
}

/// A service and the limit it hit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverflowLabels {
    /// Service.
    pub service: String,
    /// `connections`, `pending_requests`, `requests`, `retries`.
    pub limit: &'static str,
}

/// A service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Service.
    pub service: String,
}

/// A listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: String,
}

/// One active health check's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthCheckLabels {
    /// Service.
    pub service: String,
    /// Version.
    pub version: String,
    /// `host:port`.
    pub endpoint: String,
    /// `pass` or `fail`.
    pub result: &'static str,
}

/// A refused TLS handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// Listener name.
    pub listener: String,
    /// `no_certificate`, `expired`, `unknown_issuer`, `bad_identity`, `timeout`, `other`.
    pub reason: &'static str,
}

/// Every series of the lane; cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Requests by outcome class.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the response head, seconds.
    pub latency: Family<LatencyLabels, Histogram>,
    /// Calls refused by policy.
    pub denied: Family<DenyLabels, Counter>,
    /// Outlier ejections.
    pub ejections: Family<EndpointLabels, Counter>,
    /// Active health checks run, by result.
    pub health_checks: Family<HealthCheckLabels, Counter>,
    /// 1 while the active health checks say an endpoint is healthy, else 0.
    pub endpoint_healthy: Family<EndpointLabels, Gauge>,
    /// Requests answered 503 because a circuit-breaker limit was reached.
    pub overflows: Family<OverflowLabels, Counter>,
    /// Retries sent.
    pub retries: Family<ServiceLabels, Counter>,
    /// Open downstream connections.
    pub connections: Family<ListenerLabels, Gauge>,
    /// Downstream connections accepted.
    pub accepted: Family<ListenerLabels, Counter>,
    /// Open upgraded (WebSocket) and TCP pass-through streams.
    pub streams: Family<ListenerLabels, Gauge>,
    /// TLS handshakes refused.
    pub handshake_failures: Family<HandshakeLabels, Counter>,
    /// Config version of the mesh table in use.
    pub table_version: Gauge,
    /// Identity rotations applied (SVID or trust bundle).
    pub rotations: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            // 50 us .. ~26 s
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
            }),
            denied: Family::default(),
            ejections: Family::default(),
            health_checks: Family::default(),
            endpoint_healthy: Family::default(),
            overflows: Family::default(),
            retries: Family::default(),
            connections: Family::default(),
            accepted: Family::default(),
            streams: Family::default(),
            handshake_failures: Family::default(),
            table_version: Gauge::default(),
            rotations: Counter::default(),
        }
    }
}

impl Metrics {
    /// Registers every series in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let m = self.clone();
        registry.register(
            "popmesh_signal_requests",
            "Requests proxied by the signaling lane, by listener, route, service, version, caller identity and status class.",
            m.requests,
        );
        registry.register(
            "popmesh_signal_request_duration_seconds",
            "Time from the request to the upstream's response head, through the lane.",
            m.latency,
        );
        registry.register(
            "popmesh_signal_denied",
            "Calls refused by authorization policy (403 / PERMISSION_DENIED), by caller and destination.",
            m.denied,
        );
        registry.register(
            "popmesh_signal_ejections",
            "Times an endpoint was ejected by outlier detection.",
            m.ejections,
        );
        registry.register(
            "popmesh_signal_health_checks",
            "Active health checks of service endpoints, by result (pass, fail).",
            m.health_checks,
        );
        registry.register(
            "popmesh_signal_endpoint_healthy",
            "1 while an endpoint passes its active health checks (0: out of rotation); only endpoints with checks on.",
            m.endpoint_healthy,
        );
        registry.register(
            "popmesh_signal_overflows",
            "Requests answered 503 at once because a circuit-breaker limit of the service was reached.",
            m.overflows,
        );
        registry.register(
            "popmesh_signal_retries",
            "Retries sent (within the retry policy and budget).",
            m.retries,
        );
        registry.register(
            "popmesh_signal_connections",
            "Open downstream connections per listener.",
            m.connections,
        );
        registry.register(
            "popmesh_signal_connections_accepted",
            "Downstream connections accepted per listener.",
            m.accepted,
        );
        registry.register(
            "popmesh_signal_streams",
            "Open WebSocket (upgraded) and TCP pass-through streams per listener.",
            m.streams,
        );
        registry.register(
            "popmesh_signal_handshake_failures",
            "Downstream TLS handshakes refused, by reason (no_certificate, expired, unknown_issuer, bad_identity, timeout, other).",
            m.handshake_failures,
        );
        registry.register(
            "popmesh_signal_config_version",
            "Control-daemon config version of the mesh table in use.",
            m.table_version,
        );
        registry.register(
            "popmesh_signal_identity_rotations",
            "SVID or trust-bundle changes applied without a restart.",
            m.rotations,
        );
    }
}
