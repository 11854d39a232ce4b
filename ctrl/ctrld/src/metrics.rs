//! Prometheus metrics of the daemon, served as text on `GET /metrics` of the metrics listener.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    /// `popmesh_ctrld_config_version`.
    pub config_version: Gauge<u64, AtomicU64>,
    /// `popmesh_ctrld_connected_appliances`: appliances with an open watch stream.
    pub connected_appliances: Gauge,
    /// `popmesh_ctrld_push_latency_seconds`: commit of a version to its ACK by an appliance.
    pub push_latency: Histogram,
    /// `popmesh_ctrld_nacks_total`.
    pub nacks: Counter,
    /// `popmesh_ctrld_config_writes_total`: committed changes.
    pub writes: Counter,
    /// `popmesh_ctrld_sessions`: media sessions stored.
    pub sessions: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("popmesh_ctrld");
        let config_version = Gauge::<u64, AtomicU64>::default();
        let connected_appliances = Gauge::default();
        // 100 us .. ~13 s
        let push_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let nacks = Counter::default();
        let writes = Counter::default();
        let sessions = Gauge::default();
        registry.register(
            "config_version",
            "Global config version (bumped by every committed change)",
            config_version.clone(),
        );
        registry.register(
            "connected_appliances",
            "Appliances with an open watch stream",
            connected_appliances.clone(),
        );
        registry.register(
            "push_latency_seconds",
            "From the commit of a config version to its ACK by an appliance",
            push_latency.clone(),
        );
        registry.register(
            "nacks",
            "Config versions refused by appliances",
            nacks.clone(),
        );
        registry.register("config_writes", "Committed config changes", writes.clone());
        registry.register("sessions", "Media sessions stored", sessions.clone());
        Metrics {
            config_version,
            connected_appliances,
            push_latency,
            nacks,
            writes,
            sessions,
            registry,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
