//! The metrics each scenario kind reports: names, units and which direction is better.
//!
//! Thresholds and comparisons only use these names, so a typo in a scenario is an error that
//! lists the valid names, never a threshold that silently reports "missing". Scaling steps are
//! families: `flows[100000].cpu_ns_per_packet` is valid when 100000 is one of the scenario's
//! `flows_steps`; faults of a stability scenario too: `fault[1].recovery_ms` needs two faults.

use serde::{Deserialize, Serialize};

use crate::scenario::{KindLoad, Load, ScenarioKind};

/// Which way a metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Lower is better (latency, CPU, loss, stalls).
    Lower,
    /// Higher is better (throughput).
    Higher,
    /// Informational (counts, settings).
    Neither,
}

/// A metric's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Name in reports and thresholds (for families: the part after `family[N].`).
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Better direction.
    pub better: Better,
    /// What it is.
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    unit: &'static str,
    better: Better,
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        unit,
        better,
        help,
    }
}

use Better::{Higher, Lower, Neither};

/// Data-plane metrics with fixed names.
pub const DATA_PLANE: &[MetricDef] = &[
    m(
        "lane_latency_p50_us",
        "us",
        Lower,
        "end-to-end one-way latency through the media lane, P50",
    ),
    m(
        "lane_latency_p99_us",
        "us",
        Lower,
        "end-to-end one-way latency through the media lane, P99",
    ),
    m(
        "lane_latency_p999_us",
        "us",
        Lower,
        "end-to-end one-way latency through the media lane, P99.9",
    ),
    m(
        "direct_latency_p50_us",
        "us",
        Lower,
        "the same traffic sender to sink without the appliance, P50",
    ),
    m(
        "direct_latency_p99_us",
        "us",
        Lower,
        "the same traffic sender to sink without the appliance, P99",
    ),
    m(
        "direct_latency_p999_us",
        "us",
        Lower,
        "the same traffic sender to sink without the appliance, P99.9",
    ),
    m(
        "added_latency_p50_us",
        "us",
        Lower,
        "lane minus direct, P50",
    ),
    m(
        "added_latency_p99_us",
        "us",
        Lower,
        "lane minus direct, P99",
    ),
    m(
        "added_latency_p999_us",
        "us",
        Lower,
        "lane minus direct, P99.9",
    ),
    m(
        "lane_loss_ratio",
        "ratio",
        Lower,
        "probes lost through the lane / expected",
    ),
    m(
        "direct_loss_ratio",
        "ratio",
        Lower,
        "probes lost direct / expected",
    ),
    m(
        "lane_jitter_us",
        "us",
        Lower,
        "RFC 3550 jitter at the viewers, mean over streams, lane",
    ),
    m(
        "direct_jitter_us",
        "us",
        Lower,
        "RFC 3550 jitter at the viewers, direct",
    ),
    m(
        "lane_stall_rate_per_viewer_min",
        "stalls/viewer-min",
        Lower,
        "gaps above stall_gap_ms per viewer-minute, lane",
    ),
    m(
        "direct_stall_rate_per_viewer_min",
        "stalls/viewer-min",
        Lower,
        "the same, direct",
    ),
    m(
        "added_stall_rate_per_viewer_min",
        "stalls/viewer-min",
        Lower,
        "lane minus direct stall rate",
    ),
    m(
        "lane_stalled_s",
        "s",
        Lower,
        "total stalled time over all viewers, lane",
    ),
    m(
        "direct_stalled_s",
        "s",
        Lower,
        "total stalled time over all viewers, direct",
    ),
    m(
        "lane_delivered_pps",
        "pps",
        Higher,
        "packets per second the viewers received, lane",
    ),
    m(
        "lane_media_cpu_percent",
        "percent",
        Lower,
        "CPU of the media worker thread during the lane phase (100 = one core)",
    ),
    m(
        "lane_rss_mib",
        "MiB",
        Lower,
        "resident memory of the appliance after the lane phase",
    ),
    m(
        "fixed_rate_cpu_ns_per_packet",
        "ns/pkt",
        Lower,
        "media worker CPU per received packet at load.rate",
    ),
    m(
        "peak_pps_per_media_core",
        "pps",
        Higher,
        "packets per second one media core relays unpaced",
    ),
    m(
        "peak_cpu_ns_per_packet",
        "ns/pkt",
        Lower,
        "media worker CPU per received packet, unpaced",
    ),
    m(
        "peak_loss_ratio",
        "ratio",
        Lower,
        "share of sent packets not relayed in the unpaced phase",
    ),
];

/// Metrics of each flows step: `flows[N].<name>`.
pub const FLOWS_STEP: &[MetricDef] = &[
    m(
        "installed",
        "flows",
        Neither,
        "sessions in the appliance's config for this step",
    ),
    m("startup_s", "s", Lower, "seconds from start until /readyz"),
    m(
        "rss_mib",
        "MiB",
        Lower,
        "resident memory of the appliance with N sessions",
    ),
    m(
        "pps",
        "pps",
        Higher,
        "packets per second relayed at the step's unpaced load",
    ),
    m(
        "cpu_ns_per_packet",
        "ns/pkt",
        Lower,
        "media worker CPU per received packet",
    ),
];

/// Metrics of each fan-out step: `fanout[N].<name>`.
pub const FANOUT_STEP: &[MetricDef] = &[
    m(
        "delivered_pps",
        "pps",
        Higher,
        "packets per second the N viewers received in total",
    ),
    m(
        "cpu_ns_per_packet_out",
        "ns/pkt",
        Lower,
        "media worker CPU per sent copy",
    ),
    m(
        "cpu_percent",
        "percent",
        Lower,
        "media worker CPU (100 = one core)",
    ),
    m(
        "latency_p99_us",
        "us",
        Lower,
        "one-way latency P99 at the viewers",
    ),
    m("loss_ratio", "ratio", Lower, "copies lost / expected"),
];

/// Control-plane metrics: users entering rooms through the signaling lane vs direct.
pub const CONTROL_PLANE: &[MetricDef] = &[
    m(
        "lane_join_p50_us",
        "us",
        Lower,
        "join latency through the signaling lane (connect + TLS + join, from the scheduled arrival), P50",
    ),
    m(
        "lane_join_p99_us",
        "us",
        Lower,
        "join latency through the signaling lane, P99",
    ),
    m(
        "lane_join_p999_us",
        "us",
        Lower,
        "join latency through the signaling lane, P99.9",
    ),
    m(
        "direct_join_p50_us",
        "us",
        Lower,
        "join latency straight to the room service, P50",
    ),
    m(
        "direct_join_p99_us",
        "us",
        Lower,
        "join latency straight to the room service, P99",
    ),
    m(
        "direct_join_p999_us",
        "us",
        Lower,
        "join latency straight to the room service, P99.9",
    ),
    m("added_join_p50_us", "us", Lower, "lane minus direct join latency, P50"),
    m("added_join_p99_us", "us", Lower, "lane minus direct join latency, P99"),
    m(
        "added_join_p999_us",
        "us",
        Lower,
        "lane minus direct join latency, P99.9",
    ),
    m(
        "lane_join_request_p99_us",
        "us",
        Lower,
        "the join request alone (connection already open) through the lane, P99",
    ),
    m(
        "direct_join_request_p99_us",
        "us",
        Lower,
        "the join request alone straight to the room service, P99",
    ),
    m(
        "added_join_request_p99_us",
        "us",
        Lower,
        "lane minus direct join request, P99",
    ),
    m(
        "lane_joined_ratio",
        "ratio",
        Higher,
        "users in their room through the lane (join answered 200, WebSocket opened) / users",
    ),
    m(
        "direct_joined_ratio",
        "ratio",
        Higher,
        "users in their room straight to the room service / users",
    ),
    m(
        "lane_joins_per_s",
        "joins/s",
        Higher,
        "joins completed per second of arrivals, lane",
    ),
    m(
        "direct_joins_per_s",
        "joins/s",
        Higher,
        "joins completed per second of arrivals, direct",
    ),
    m(
        "signaling_cpu_percent",
        "percent",
        Lower,
        "CPU of the signaling lane's threads (signal-*) during the lane phase (100 = one core)",
    ),
    m(
        "signaling_cpu_us_per_join",
        "us/join",
        Lower,
        "signaling lane CPU per joined user (both TLS handshakes, the join, the WebSocket set-up)",
    ),
    m(
        "lane_memory_per_connection_kib",
        "KiB",
        Lower,
        "appliance RSS growth during the lane phase / WebSockets open through it at the end",
    ),
    m(
        "lane_rss_mib",
        "MiB",
        Lower,
        "peak resident memory of the appliance during the lane phase",
    ),
    m(
        "open_websockets",
        "websockets",
        Higher,
        "WebSockets open through the lane when the lane phase ended",
    ),
    m(
        "users",
        "users",
        Neither,
        "users per phase (after the small-machine rules)",
    ),
];

/// Stability metrics over the whole run.
pub const STABILITY: &[MetricDef] = &[
    m(
        "max_recovery_ms",
        "ms",
        Lower,
        "longest time over all faults from a fault's end until viewers receive the nominal rate again (kill-upstream: until the signaling lane recovered)",
    ),
    m(
        "stalls_total",
        "count",
        Lower,
        "viewer stalls over the whole run (every fault included)",
    ),
    m(
        "stall_rate_per_viewer_min",
        "stalls/viewer-min",
        Lower,
        "viewer stalls per viewer-minute over the whole run",
    ),
    m(
        "loss_ratio",
        "ratio",
        Lower,
        "media packets the viewers did not receive / expected, whole run",
    ),
    m(
        "baseline_loss_ratio",
        "ratio",
        Lower,
        "the same before the first fault (the lab's own loss, for reference)",
    ),
    m(
        "delivered_pps",
        "pps",
        Higher,
        "packets per second all viewers received before the first fault",
    ),
    m(
        "breaker_trips",
        "count",
        Neither,
        "requests refused by a circuit-breaker limit of the signaling lane over the run (popmesh_signal_overflows; runs with a kill-upstream fault)",
    ),
    m(
        "error_ratio",
        "ratio",
        Lower,
        "requests through the signaling lane answered 4xx/5xx / requests over the run (runs with a kill-upstream fault)",
    ),
];

/// Metrics of each injected fault: `fault[N].<name>`, N its index in `load.stability.faults`.
pub const FAULT_STEP: &[MetricDef] = &[
    m(
        "loss_ratio",
        "ratio",
        Lower,
        "media lost from the fault's start until it ended and the delayed packets were due (restart-appliance: until media flowed again) / expected",
    ),
    m(
        "lost_packets",
        "packets",
        Lower,
        "the same as a count of packets over all viewers",
    ),
    m(
        "recovery_ms",
        "ms",
        Lower,
        "from the fault's end until the viewers receive the nominal rate again (load.stability.recovered_percent, three intervals in a row); resolution interval_ms",
    ),
    m(
        "stalls",
        "count",
        Lower,
        "viewer stalls that overlap the fault or its recovery",
    ),
    m(
        "stalled_s",
        "s",
        Lower,
        "stalled time of those stalls over all viewers",
    ),
    m(
        "relay_dropped",
        "packets",
        Neither,
        "packets the impairment relay dropped in the fault's window (jitter, loss)",
    ),
    m(
        "relay_delayed",
        "packets",
        Neither,
        "packets the impairment relay held for a delay in the fault's window",
    ),
    m(
        "restart_ms",
        "ms",
        Lower,
        "restart-appliance: from starting popmesh-dataplane again until /readyz answers",
    ),
    m(
        "acked_lost",
        "count",
        Lower,
        "restart-ctrld: session versions the appliance had acknowledged before the kill that the restarted daemon (ListSessions) or the appliance (/flows) no longer has",
    ),
    m(
        "resync_ms",
        "ms",
        Lower,
        "restart-ctrld: from starting popmesh-ctrld again until the appliance acknowledged at least the version it had before",
    ),
    m(
        "sessions_churned",
        "sessions",
        Neither,
        "flow-churn: sessions created (and removed again) through popmesh-ctrld during the fault",
    ),
    m(
        "churn_ack_ms",
        "ms",
        Lower,
        "flow-churn: from sending the last batch (removing the last churned sessions) until the appliance acknowledged it",
    ),
    m(
        "churn_rejected",
        "count",
        Lower,
        "flow-churn: config versions the appliance refused (NACKed, nothing applied) during the fault (popmesh_agent_rejected)",
    ),
    m(
        "error_ratio",
        "ratio",
        Lower,
        "kill-upstream, fail-upstream: requests through the signaling lane answered 4xx/5xx / requests, from the kill until the lane recovered",
    ),
    m(
        "ejections",
        "count",
        Neither,
        "kill-upstream, fail-upstream: outlier ejections by the lane over the same span (popmesh_signal_ejections)",
    ),
    m(
        "breaker_trips",
        "count",
        Neither,
        "kill-upstream, fail-upstream: requests refused by a circuit-breaker limit over the same span (popmesh_signal_overflows)",
    ),
    m(
        "health_check_removed",
        "bool",
        Neither,
        "kill-upstream, fail-upstream: 1 if the lane's active health checks took the faulted endpoint out of rotation over the same span (popmesh_signal_endpoint_healthy 0), else 0",
    ),
    m(
        "signal_recovery_ms",
        "ms",
        Lower,
        "kill-upstream, fail-upstream: from the endpoint's restart (or its last 503) until every request succeeds again (three 100 ms samples without an error) and the lane's health checks readmit it",
    ),
];

/// The fixed-name metrics of a kind.
pub fn catalog(kind: ScenarioKind) -> &'static [MetricDef] {
    match kind {
        ScenarioKind::DataPlane => DATA_PLANE,
        ScenarioKind::ControlPlane => CONTROL_PLANE,
        ScenarioKind::Stability => STABILITY,
    }
}

/// The step families of a kind: (family, its metrics).
pub fn families(kind: ScenarioKind) -> &'static [(&'static str, &'static [MetricDef])] {
    match kind {
        ScenarioKind::DataPlane => &[("flows", FLOWS_STEP), ("fanout", FANOUT_STEP)],
        ScenarioKind::Stability => &[("fault", FAULT_STEP)],
        ScenarioKind::ControlPlane => &[],
    }
}

/// `family[step].name`.
pub fn step_name(family: &str, step: u64, name: &str) -> String {
    format!("{family}[{step}].{name}")
}

/// Looks a reported name up: its definition, if it is one of the kind's.
pub fn lookup(kind: ScenarioKind, name: &str) -> Option<MetricDef> {
    if let Some(def) = catalog(kind).iter().find(|d| d.name == name) {
        return Some(*def);
    }
    let (family, rest) = name.split_once('[')?;
    let (_, metric) = rest.split_once("].")?;
    families(kind)
        .iter()
        .find(|(f, _)| *f == family)
        .and_then(|(_, defs)| defs.iter().find(|d| d.name == metric).copied())
}

/// Every valid name for a kind and load, steps expanded (for error messages and `metrics`).
pub fn valid_names(kind: ScenarioKind, load: Option<&Load>) -> Vec<String> {
    let mut names: Vec<String> = catalog(kind).iter().map(|d| d.name.to_string()).collect();
    for (family, defs) in families(kind) {
        let steps: Vec<u64> = match load.map(|l| &l.kind) {
            Some(KindLoad::DataPlane(d)) if *family == "flows" => d.flows_steps.clone(),
            Some(KindLoad::DataPlane(d)) if *family == "fanout" => {
                d.fanout_steps.iter().map(|&s| u64::from(s)).collect()
            }
            Some(KindLoad::Stability(s)) if *family == "fault" => {
                (0..s.faults.len() as u64).collect()
            }
            _ => Vec::new(),
        };
        for def in defs.iter() {
            if steps.is_empty() {
                names.push(format!("{family}[N].{}", def.name));
            }
            for step in &steps {
                names.push(step_name(family, *step, def.name));
            }
        }
    }
    names
}

/// Checks a threshold's metric name against a kind and its load.
///
/// # Errors
/// The rule it breaks, listing the valid names.
pub fn check_name(kind: ScenarioKind, name: &str, load: &Load) -> Result<(), String> {
    let valid = valid_names(kind, Some(load));
    if valid.iter().any(|v| v == name) {
        return Ok(());
    }
    let hint = if lookup(kind, name).is_some() {
        "names a step that is not in the scenario's steps"
    } else {
        "is not a metric of this scenario kind"
    };
    Err(format!("{hint}; valid: {}", valid.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_kind() {
        for kind in ScenarioKind::ALL {
            let mut names: Vec<&str> = catalog(kind).iter().map(|d| d.name).collect();
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(n, names.len(), "{kind}");
        }
    }

    #[test]
    fn lookup_finds_fixed_names_and_families() {
        let k = ScenarioKind::DataPlane;
        assert_eq!(lookup(k, "lane_latency_p99_us").map(|d| d.unit), Some("us"));
        assert_eq!(
            lookup(k, "flows[1000].pps").map(|d| d.better),
            Some(Better::Higher)
        );
        assert_eq!(lookup(k, "flows[1000].nope"), None);
        assert_eq!(lookup(k, "signaling_cpu_percent"), None);
        assert!(lookup(ScenarioKind::ControlPlane, "added_join_p99_us").is_some());
    }
}
