//! The report of a run (`report.json`) and its threshold verdicts.
//!
//! Times in series are seconds since the run started; every metric carries its unit and which
//! direction is better, so `popmesh-perf compare` needs nothing but two reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::Better;
use crate::scenario::{Bound, Threshold, ThresholdSource};

/// Name, kind and description of the scenario that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// `scenario.name`.
    pub name: String,
    /// `scenario.kind`.
    pub kind: String,
    /// `scenario.description`.
    pub description: String,
}

/// Where the run happened.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Environment {
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: usize,
    /// `uname -r`.
    pub kernel_release: String,
    /// Host name.
    pub hostname: String,
    /// Media backend of the appliance (`uring`, `dpdk`, or `remote`).
    pub backend: String,
    /// The effective scenario, every default written out.
    pub scenario_toml: String,
    /// The appliance config the harness generated for the main phase (local lab only).
    pub appliance_config_toml: Option<String>,
    /// popmesh-perf version.
    pub harness_version: String,
    /// Start of the run, RFC 3339 UTC.
    pub started_at: String,
    /// Start of the run, seconds since the Unix epoch.
    pub started_unix_s: f64,
}

/// One phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Short name (`lane`, `direct`, `peak`, `flows-1000`, ...).
    pub name: String,
    /// What it does.
    pub description: String,
    /// Start, seconds since the run started.
    pub start_s: f64,
    /// Length in seconds.
    pub duration_s: f64,
}

/// A time series: `(t_s, value)` points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// `pps.lane.viewers`, `cpu.core1`, `cpu.thread.media-0`, ...
    pub name: String,
    /// Unit of the values.
    pub unit: String,
    /// Points, t in seconds since the run started.
    pub points: Vec<[f64; 2]>,
}

/// A latency distribution: `(latency_us, fraction of samples at or below)` points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cdf {
    /// `lane`, `direct`, `fanout-100`, ...
    pub name: String,
    /// Samples behind it.
    pub samples: u64,
    /// Points in ascending latency.
    pub points: Vec<[f64; 2]>,
    /// The interval log it came from, relative to the output directory.
    pub hlog: Option<String>,
}

/// One stall of one viewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallEvent {
    /// Viewer index within the phase.
    pub viewer: u32,
    /// Start, seconds since the run started.
    pub start_s: f64,
    /// Length in seconds.
    pub duration_s: f64,
}

/// The stalls of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallTimeline {
    /// Phase name.
    pub phase: String,
    /// Viewers in the phase.
    pub viewers: u32,
    /// Gap threshold, ms.
    pub threshold_ms: f64,
    /// Viewer-minutes observed.
    pub viewer_minutes: f64,
    /// Stalls counted (events may be fewer, see `events_dropped`).
    pub stalls: u64,
    /// Total stalled seconds.
    pub stalled_s: f64,
    /// Stalls not listed.
    pub events_dropped: u64,
    /// The events.
    pub events: Vec<StallEvent>,
}

/// When an injected fault was in force (stability runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// `fault[N]`, the prefix of its metrics.
    pub name: String,
    /// Its kind as written in the scenario (`jitter`, `restart-appliance`, ...).
    pub kind: String,
    /// Start, seconds since the run started.
    pub start_s: f64,
    /// End, seconds since the run started.
    pub end_s: f64,
}

/// A measured value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
}

/// Outcome of one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured and within the bound.
    Pass,
    /// Measured and outside the bound.
    Fail,
    /// Not measured in this run.
    Missing,
}

/// A threshold with its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Metric name.
    pub metric: String,
    /// `"max"` or `"min"`.
    pub bound: String,
    /// The bound's value.
    pub limit: f64,
    /// Whose expectation.
    pub source: ThresholdSource,
    /// What it means.
    pub description: String,
    /// What was measured, `null` if nothing was.
    pub measured: Option<f64>,
    /// Unit of `measured`.
    pub unit: Option<String>,
    /// Outcome.
    pub status: Status,
}

/// Overall outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    /// Every threshold passed.
    Pass,
    /// At least one failed or was not measured.
    Fail,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What ran.
    pub scenario: ScenarioInfo,
    /// Where.
    pub environment: Environment,
    /// Phases in run order.
    pub phases: Vec<Phase>,
    /// Time series.
    pub series: Vec<Series>,
    /// Latency distributions.
    pub latency_cdfs: Vec<Cdf>,
    /// Stalls per phase.
    pub stalls: Vec<StallTimeline>,
    /// Injected faults (stability runs; absent in older reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultWindow>,
    /// Metrics by name.
    pub metrics: BTreeMap<String, Metric>,
    /// Threshold outcomes in scenario order.
    pub verdicts: Vec<Verdict>,
    /// Pass only if every threshold passed.
    pub overall: Overall,
    /// What the harness changed or could not do (scaled-down steps, caps, skipped phases).
    pub notes: Vec<String>,
}

/// Judges every threshold against the metrics, in threshold order.
pub fn evaluate(thresholds: &[Threshold], metrics: &BTreeMap<String, Metric>) -> Vec<Verdict> {
    thresholds
        .iter()
        .map(|t| {
            let (bound, limit) = match t.bound {
                Bound::Max(v) => ("max", v),
                Bound::Min(v) => ("min", v),
            };
            let found = metrics.get(&t.metric).filter(|m| m.value.is_finite());
            let status = match found {
                None => Status::Missing,
                Some(m) if t.bound.holds(m.value) => Status::Pass,
                Some(_) => Status::Fail,
            };
            Verdict {
                metric: t.metric.clone(),
                bound: bound.to_string(),
                limit,
                source: t.source,
                description: t.description.clone(),
                measured: found.map(|m| m.value),
                unit: found.map(|m| m.unit.clone()),
                status,
            }
        })
        .collect()
}

/// Pass only if every verdict passed (no thresholds: pass).
pub fn overall(verdicts: &[Verdict]) -> Overall {
    if verdicts.iter().all(|v| v.status == Status::Pass) {
        Overall::Pass
    } else {
        Overall::Fail
    }
}

impl Report {
    /// Reads a `report.json`.
    ///
    /// # Errors
    /// When the file cannot be read or is not a report.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a popmesh-perf report", path.display()))
    }
}
