//! Scenario files: what to run, against what, how hard, and which figures must hold.
//!
//! A scenario is TOML (examples in `configs/perf/`). It is parsed, not merely validated: serde
//! reads the private `Raw*` structs, which reject unknown keys, and [`Scenario::from_toml`] turns
//! them into the typed [`Scenario`], enforcing every rule below. A broken rule names the path,
//! the value and the rule: `load.duration: 7200 must be in (0, 3600] seconds`.
//!
//! ```toml
//! [scenario]
//! name = "data-plane"              # [a-z0-9_-]{1,64}; names the output directory
//! kind = "data-plane"              # "data-plane" | "control-plane" | "stability"
//! description = "media bypassing the proxy"   # optional, free text
//!
//! [target]
//! mode = "local-lab"               # "local-lab": the harness starts the components itself
//!                                  # "remote": an appliance somebody else runs
//! [target.local_lab]               # only with mode = "local-lab"; every key optional
//! bin_dir = "target/release"       # where popmesh-dataplane and popmesh-rtp are; default: the
//!                                  # directory of popmesh-perf itself, else target/release
//! media_core = 1                   # CPU of the appliance's one media worker (control plane:
//!                                  # of its signaling lane)
//! load_core = 0                    # CPU of every load generator and sink
//! base_port = 46000                # first UDP port the lab uses (1024..=60000); it takes
//!                                  # ports up to base_port + 5000 and asks the kernel for
//!                                  # a free admin port
//! [target.remote]                  # only with mode = "remote"
//! admin = "192.0.2.1:9100"         # optional: the appliance's admin server (/metrics)
//! ingress = ["192.0.2.1:40000", "192.0.2.1:40001"]  # data plane: one per publisher and
//!                                  # stream (audio, video: each a session of its own, as RTP
//!                                  # without bundling does), publisher 0's first, 1..=4096
//! viewers = ["192.0.2.9:41000"]    # data plane: local addresses the appliance sends to
//! signaling = "192.0.2.1:8443"     # control plane: the signaling lane's listener (optional)
//!
//! [load]
//! rate = 20000                     # the kind's steady-state rate (data plane: packets/s of
//!                                  # the fixed-rate CPU phase; control plane: users arriving
//!                                  # per second, each a new connection and one join)
//! ramp = 2                         # seconds to reach it (data plane: publishers start spread
//!                                  # over this), 0..=600
//! duration = 10                    # seconds of each measured phase, (0, 3600]
//! concurrency = 1                  # parallel load generators (data plane: senders in the
//!                                  # unpaced peak phase), 1..=64
//!
//! [load.data_plane]                # only with kind = "data-plane"; every key optional
//! publishers = 2                   # 1..=256
//! viewers_per_publisher = 5        # 1..=4096 (publishers x viewers <= 4096)
//! audio = { pps = 50, size = 160 } # per publisher; pps 0 turns the stream off
//! video = { pps = 250, size = 1200 }
//! stall_gap_ms = 200               # a viewer gap longer than this is a stall, 1..=60000
//! peak_duration = 3                # seconds of the unpaced phase, 0 skips it, <= 3600
//! step_duration = 3                # seconds of each scaling step, (0, 3600]
//! flows_steps = [1000, 100000, 1000000]   # sessions installed per step, ascending, 1..=16777216
//! active_flows = 256               # sessions that carry traffic in a flows step, 1..=1024
//! fanout_steps = [1, 10, 100, 1000]       # viewers of one publisher per step, 1..=4096
//! fanout_pps = 200                 # packets/s of the fan-out publisher
//!
//! [load.control_plane]             # only with kind = "control-plane"
//! users = 100000                   # users entering live rooms per phase, 1..=10000000 (a
//!                                  # machine with < 4 CPUs runs 10000 unless --full-scale)
//! rooms = 1000                     # 1..=users
//! path = "/rooms/join"             # request path of a join, starts with '/'
//!
//! [load.stability]                 # only with kind = "stability"; every key optional
//! publishers = 2                   # steady media load during the faults, 1..=64
//! viewers_per_publisher = 5        # 1..=64
//! audio = { pps = 50, size = 160 } # per publisher, as in [load.data_plane]
//! video = { pps = 250, size = 1200 }
//! stall_gap_ms = 200               # a viewer gap longer than this is a stall, 1..=60000
//! interval_ms = 100                # timeline resolution of recovery times, 10..=1000
//! recovered_percent = 95           # recovered: viewers get >= this share of the nominal
//!                                  # rate for 3 intervals in a row, (0, 100]
//! seed = 1                         # seed of the impairment relay's loss and jitter draws
//! [[load.stability.faults]]        # in time order, one at a time (no overlap)
//! kind = "jitter"                  # "jitter" | "loss" | "restart-appliance" | "restart-ctrld"
//!                                  # | "flow-churn" | "kill-upstream" | "fail-upstream"
//! at = 5                           # seconds into the load, < load.duration
//! duration = 5                     # seconds, > 0; the fault ends before load.duration
//!                                  # (restart-appliance, restart-ctrld: how long it stays down)
//! delay_ms = 50                    # jitter only, 0..=60000
//! jitter_ms = 20                   # jitter only, 0..=60000 (delay +- uniform jitter)
//! loss_percent = 2.0               # loss only, (0, 100]
//! rate = 200                       # flow-churn: sessions created and removed through
//!                                  # popmesh-ctrld per second, 1..=100000 (default 200);
//!                                  # kill-upstream: users joining a room per second through the
//!                                  # signaling lane (default 50); one of two room-service
//!                                  # endpoints is killed for `duration`, then started again
//!                                  # (fail-upstream: answers 503 for `duration`)
//!
//! [[threshold]]                    # zero or more
//! metric = "added_latency_p99_us"  # a metric of this kind (`popmesh-perf metrics` lists them)
//! max = 1000                       # exactly one of max / min
//! source = "ours"                  # "article" (the article's expectation) | "ours"
//! description = "the lane adds at most 1 ms at P99"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metrics;

/// Longest measured phase a scenario may ask for.
pub const MAX_DURATION_S: f64 = 3600.0;
/// Longest ramp.
pub const MAX_RAMP_S: f64 = 600.0;
/// Most parallel load generators.
pub const MAX_CONCURRENCY: u32 = 64;
/// Most viewers of one run (sink sockets).
pub const MAX_VIEWERS: u32 = 4096;
/// Largest flows step (the appliance's `media.max_flows` limit).
pub const MAX_FLOWS: u64 = 16_777_216;
/// Most sessions carrying traffic in a flows step (one sender socket each).
pub const MAX_ACTIVE_FLOWS: u32 = 1024;

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {}", path.display())]
    Io {
        /// The file asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Not TOML, or not the schema's shape (unknown key, wrong type, missing key); toml's message
    /// names the line and column.
    #[error("invalid scenario: {0}")]
    Syntax(String),
    /// A value breaks a rule.
    #[error("{path}: {value} {rule}")]
    Invalid {
        /// Where: `load.duration`, `threshold[2].metric`.
        path: String,
        /// The value as written (strings quoted).
        value: String,
        /// The rule, phrased to follow the value.
        rule: String,
    },
}

fn invalid(
    path: impl Into<String>,
    value: impl fmt::Display,
    rule: impl Into<String>,
) -> ScenarioError {
    ScenarioError::Invalid {
        path: path.into(),
        value: value.to_string(),
        rule: rule.into(),
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// What a scenario measures; each kind has its own driver, load table and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Media through the lane vs direct, peak rate per core, scaling with flows and fan-out.
    DataPlane,
    /// Signaling P99 and proxy CPU while many users join rooms.
    ControlPlane,
    /// Recovery from injected jitter and faults.
    Stability,
}

impl ScenarioKind {
    /// Every kind, in documentation order.
    pub const ALL: [ScenarioKind; 3] = [Self::DataPlane, Self::ControlPlane, Self::Stability];

    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::DataPlane => "data-plane",
            Self::ControlPlane => "control-plane",
            Self::Stability => "stability",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::DataPlane => "data_plane",
            Self::ControlPlane => "control_plane",
            Self::Stability => "stability",
        }
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the figures come from: the article's expectation or our own target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdSource {
    /// The article's load-test plan ("added latency < 5 ms", "same as without the mesh").
    Article,
    /// popmesh's own target.
    Ours,
}

/// The bound of a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// The metric must be at most this.
    Max(f64),
    /// The metric must be at least this.
    Min(f64),
}

impl Bound {
    /// Whether `value` satisfies the bound (NaN never does).
    pub fn holds(&self, value: f64) -> bool {
        match *self {
            Bound::Max(max) => value <= max,
            Bound::Min(min) => value >= min,
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Max(v) => write!(f, "<= {v}"),
            Bound::Min(v) => write!(f, ">= {v}"),
        }
    }
}

/// One figure that must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// A metric name of the scenario's kind ([`metrics::catalog`]).
    pub metric: String,
    /// Its bound.
    pub bound: Bound,
    /// Whose expectation it is.
    pub source: ThresholdSource,
    /// What it means, for the report.
    pub description: String,
}

/// Lab run on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLab {
    /// Directory of the binaries; `None`: next to popmesh-perf, else `target/release`.
    pub bin_dir: Option<PathBuf>,
    /// CPU of the appliance's media worker.
    pub media_core: usize,
    /// CPU of the load generators and sinks.
    pub load_core: usize,
    /// First UDP port the lab uses.
    pub base_port: u16,
}

impl Default for LocalLab {
    fn default() -> Self {
        Self {
            bin_dir: None,
            media_core: 1,
            load_core: 0,
            base_port: 46_000,
        }
    }
}

/// UDP ports a local lab may use above its base port.
pub const LAB_PORT_SPAN: u16 = 5_000;

/// An appliance run by somebody else.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Remote {
    /// Its admin server.
    pub admin: Option<SocketAddr>,
    /// Data plane: one ingress per publisher and stream (audio, video), publisher by publisher.
    pub ingress: Vec<SocketAddr>,
    /// Data plane: the local addresses it sends to.
    pub viewers: Vec<SocketAddr>,
    /// Control plane: the signaling listener.
    pub signaling: Option<SocketAddr>,
}

/// What the harness runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The harness starts the components from `bin_dir`.
    LocalLab(LocalLab),
    /// Addresses of a running appliance.
    Remote(Remote),
}

/// One media stream of a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMix {
    /// Packets per second; 0 turns the stream off.
    pub pps: u32,
    /// RTP packet size (UDP payload) in bytes, 36..=9216.
    pub size: u16,
}

/// Load of a data-plane scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlaneLoad {
    /// Publishers (sessions) in the lane and direct phases.
    pub publishers: u32,
    /// Viewers of each publisher.
    pub viewers_per_publisher: u32,
    /// Audio stream of each publisher.
    pub audio: StreamMix,
    /// Video stream of each publisher.
    pub video: StreamMix,
    /// Gap above which a viewer counts a stall, ms.
    pub stall_gap_ms: u32,
    /// Seconds of the unpaced phase; 0 skips it. Kept in ms to stay exact.
    pub peak_duration_ms: u32,
    /// Seconds of each scaling step, in ms.
    pub step_duration_ms: u32,
    /// Sessions installed per flows step.
    pub flows_steps: Vec<u64>,
    /// Sessions carrying traffic in a flows step.
    pub active_flows: u32,
    /// Viewers of the one publisher per fan-out step.
    pub fanout_steps: Vec<u32>,
    /// Packets per second of the fan-out publisher.
    pub fanout_pps: u32,
}

impl DataPlaneLoad {
    /// Streams each publisher sends: audio and video, less any with `pps = 0`.
    pub fn streams_per_publisher(&self) -> u32 {
        u32::from(self.audio.pps > 0) + u32::from(self.video.pps > 0)
    }

    /// Index in a remote target's `ingress` list of publisher `publisher`'s audio or video
    /// stream (see [`Remote::ingress`]).
    pub fn remote_ingress_index(&self, publisher: u32, video: bool) -> usize {
        let within = u32::from(video && self.audio.pps > 0);
        (publisher * self.streams_per_publisher() + within) as usize
    }
}

impl Default for DataPlaneLoad {
    fn default() -> Self {
        Self {
            publishers: 2,
            viewers_per_publisher: 5,
            audio: StreamMix { pps: 50, size: 160 },
            video: StreamMix {
                pps: 250,
                size: 1200,
            },
            stall_gap_ms: 200,
            peak_duration_ms: 3_000,
            step_duration_ms: 3_000,
            flows_steps: vec![1_000, 100_000, 1_000_000],
            active_flows: 256,
            fanout_steps: vec![1, 10, 100, 1_000],
            fanout_pps: 200,
        }
    }
}

/// Load of a control-plane scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneLoad {
    /// Users entering live rooms.
    pub users: u64,
    /// Rooms they enter.
    pub rooms: u64,
    /// Request path of a join.
    pub path: String,
}

impl Default for ControlPlaneLoad {
    fn default() -> Self {
        Self {
            users: 100_000,
            rooms: 1_000,
            path: "/rooms/join".to_string(),
        }
    }
}

/// Kind of an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Added delay with jitter on the path.
    Jitter,
    /// Random packet loss.
    Loss,
    /// An upstream service endpoint is killed (and started again after the fault).
    KillUpstream,
    /// An upstream service endpoint answers every join 503 for the fault's duration.
    FailUpstream,
    /// The appliance restarts.
    RestartAppliance,
    /// The control daemon is killed (SIGKILL) and started again on the same state.
    RestartCtrld,
    /// Sessions are created and removed through the daemon while media flows.
    FlowChurn,
}

/// One injected fault (parsed now; its driver comes later).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What is injected.
    pub kind: FaultKind,
    /// Seconds into the run.
    pub at_s: f64,
    /// How long, seconds.
    pub duration_s: f64,
    /// Jitter: added delay, ms.
    pub delay_ms: Option<u32>,
    /// Jitter: its variation, ms.
    pub jitter_ms: Option<u32>,
    /// Loss: percent of packets.
    pub loss_percent: Option<f64>,
    /// Flow churn: sessions created (and as many removed) per second; kill-upstream: users
    /// joining rooms per second through the signaling lane (the steady request load).
    pub rate: Option<u32>,
}

/// Load of a stability scenario: a steady media load and the faults injected into it.
#[derive(Debug, Clone, PartialEq)]
pub struct StabilityLoad {
    /// Publishers (two sessions each: audio and video).
    pub publishers: u32,
    /// Viewers of each publisher.
    pub viewers_per_publisher: u32,
    /// Audio stream of each publisher.
    pub audio: StreamMix,
    /// Video stream of each publisher.
    pub video: StreamMix,
    /// Gap above which a viewer counts a stall, ms.
    pub stall_gap_ms: u32,
    /// Width of the viewers' timeline buckets, ms (the resolution of recovery times).
    pub interval_ms: u32,
    /// Share of the nominal rate, percent, that counts as recovered.
    pub recovered_percent: f64,
    /// Seed of the impairment relay.
    pub seed: u64,
    /// Faults in time order, not overlapping.
    pub faults: Vec<Fault>,
}

impl Default for StabilityLoad {
    fn default() -> Self {
        Self {
            publishers: 2,
            viewers_per_publisher: 5,
            audio: StreamMix { pps: 50, size: 160 },
            video: StreamMix {
                pps: 250,
                size: 1200,
            },
            stall_gap_ms: 200,
            interval_ms: 100,
            recovered_percent: 95.0,
            seed: 1,
            faults: Vec::new(),
        }
    }
}

impl StabilityLoad {
    /// Packets per second all viewers together receive when nothing is wrong.
    pub fn nominal_pps(&self) -> f64 {
        f64::from(self.publishers)
            * f64::from(self.viewers_per_publisher)
            * f64::from(self.audio.pps + self.video.pps)
    }
}

/// The kind-specific part of the load.
#[derive(Debug, Clone, PartialEq)]
pub enum KindLoad {
    /// `[load.data_plane]`.
    DataPlane(DataPlaneLoad),
    /// `[load.control_plane]`.
    ControlPlane(ControlPlaneLoad),
    /// `[load.stability]`.
    Stability(StabilityLoad),
}

/// How hard and how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// The kind's steady-state rate.
    pub rate: u64,
    /// Seconds to reach it.
    pub ramp_s: f64,
    /// Seconds of each measured phase.
    pub duration_s: f64,
    /// Parallel load generators.
    pub concurrency: u32,
    /// The kind's own table.
    pub kind: KindLoad,
}

/// A parsed, checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name, `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// What it measures.
    pub kind: ScenarioKind,
    /// Free text.
    pub description: String,
    /// What it runs against.
    pub target: Target,
    /// How hard.
    pub load: Load,
    /// Figures that must hold.
    pub thresholds: Vec<Threshold>,
}

// ---- raw shape -------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    scenario: RawHeader,
    target: RawTarget,
    #[serde(default)]
    load: RawLoad,
    #[serde(default, rename = "threshold", skip_serializing_if = "Vec::is_empty")]
    thresholds: Vec<RawThreshold>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    kind: Option<ScenarioKind>,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawMode {
    LocalLab,
    Remote,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    mode: Option<RawMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_lab: Option<RawLocalLab>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<RawRemote>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalLab {
    #[serde(skip_serializing_if = "Option::is_none")]
    bin_dir: Option<PathBuf>,
    media_core: Option<u64>,
    load_core: Option<u64>,
    base_port: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<String>,
    #[serde(default)]
    ingress: Vec<String>,
    #[serde(default)]
    viewers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signaling: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    rate: Option<u64>,
    ramp: Option<f64>,
    duration: Option<f64>,
    concurrency: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_plane: Option<RawDataPlane>,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<RawControlPlane>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stability: Option<RawStability>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataPlane {
    publishers: Option<u64>,
    viewers_per_publisher: Option<u64>,
    audio: Option<RawStream>,
    video: Option<RawStream>,
    stall_gap_ms: Option<u64>,
    peak_duration: Option<f64>,
    step_duration: Option<f64>,
    flows_steps: Option<Vec<u64>>,
    active_flows: Option<u64>,
    fanout_steps: Option<Vec<u64>>,
    fanout_pps: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    pps: u64,
    size: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlPlane {
    users: Option<u64>,
    rooms: Option<u64>,
    path: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStability {
    publishers: Option<u64>,
    viewers_per_publisher: Option<u64>,
    audio: Option<RawStream>,
    video: Option<RawStream>,
    stall_gap_ms: Option<u64>,
    interval_ms: Option<u64>,
    recovered_percent: Option<f64>,
    seed: Option<u64>,
    #[serde(default)]
    faults: Vec<RawFault>,
}

/// Sessions per second of a flow-churn fault without `rate`.
pub const DEFAULT_CHURN_RATE: u32 = 200;
/// Users joining a room per second through the signaling lane during a kill-upstream fault
/// without `rate`.
pub const DEFAULT_JOIN_RATE: u32 = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: FaultKind,
    at: f64,
    duration: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jitter_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    metric: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    source: ThresholdSource,
    #[serde(default)]
    description: String,
}

// ---- checks ----------------------------------------------------------------------------------

fn in_range(path: &str, value: u64, lo: u64, hi: u64) -> Result<u64, ScenarioError> {
    if (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(path, value, format!("must be in {lo}..={hi}")))
    }
}

fn seconds(path: &str, value: f64, allow_zero: bool, max: f64) -> Result<f64, ScenarioError> {
    let low_ok = if allow_zero {
        value >= 0.0
    } else {
        value > 0.0
    };
    if value.is_finite() && low_ok && value <= max {
        Ok(value)
    } else {
        let open = if allow_zero { "[0" } else { "(0" };
        Err(invalid(
            path,
            value,
            format!("must be in {open}, {max}] seconds"),
        ))
    }
}

fn secs_to_ms(path: &str, value: f64, allow_zero: bool) -> Result<u32, ScenarioError> {
    let s = seconds(path, value, allow_zero, MAX_DURATION_S)?;
    let ms = (s * 1000.0).round();
    if !allow_zero && ms < 1.0 {
        return Err(invalid(path, value, "must be at least 0.001 seconds"));
    }
    // At most 3.6e6: fits.
    Ok(ms as u32)
}

fn addr(path: &str, text: &str) -> Result<SocketAddr, ScenarioError> {
    let a: SocketAddr = text
        .parse()
        .map_err(|_| invalid(path, quoted(text), "is not a socket address (ip:port)"))?;
    if a.port() == 0 {
        return Err(invalid(path, quoted(text), "needs a port other than 0"));
    }
    Ok(a)
}

fn name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Scenario {
    /// Reads and parses a scenario file.
    ///
    /// # Errors
    /// [`ScenarioError::Io`] when the file cannot be read, else as [`Scenario::from_toml`].
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses scenario TOML. Never panics, whatever the text.
    ///
    /// # Errors
    /// [`ScenarioError::Syntax`] for text that is not TOML of the schema's shape,
    /// [`ScenarioError::Invalid`] for a value that breaks a rule.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| ScenarioError::Syntax(e.to_string()))?;
        Self::try_from_raw(raw)
    }

    /// The scenario as TOML with every default written out; [`Scenario::from_toml`] reads it back
    /// to an equal scenario.
    pub fn to_toml(&self) -> String {
        // Every raw field is a TOML-representable value (no NaN: the checks refuse it).
        toml::to_string(&self.to_raw())
            .unwrap_or_else(|e| format!("# cannot write scenario: {e}\n"))
    }

    /// The stability load, if this is a stability scenario.
    pub fn stability(&self) -> Option<&StabilityLoad> {
        match &self.load.kind {
            KindLoad::Stability(s) => Some(s),
            _ => None,
        }
    }

    /// The control-plane load, if this is a control-plane scenario.
    pub fn control_plane(&self) -> Option<&ControlPlaneLoad> {
        match &self.load.kind {
            KindLoad::ControlPlane(c) => Some(c),
            _ => None,
        }
    }

    /// The data-plane load, if this is a data-plane scenario.
    pub fn data_plane(&self) -> Option<&DataPlaneLoad> {
        match &self.load.kind {
            KindLoad::DataPlane(d) => Some(d),
            _ => None,
        }
    }

    fn try_from_raw(raw: RawFile) -> Result<Self, ScenarioError> {
        let name = raw.scenario.name;
        if !name_ok(&name) {
            return Err(invalid(
                "scenario.name",
                quoted(&name),
                "must be 1..=64 characters of a-z, 0-9, '-' and '_'",
            ));
        }
        let kind = raw.scenario.kind.ok_or_else(|| {
            invalid(
                "scenario.kind",
                "(missing)",
                "must be one of \"data-plane\", \"control-plane\", \"stability\"",
            )
        })?;
        if raw.scenario.description.len() > 4096 {
            return Err(invalid(
                "scenario.description",
                format!("{} bytes", raw.scenario.description.len()),
                "must be at most 4096 bytes",
            ));
        }
        let target = Self::target_from_raw(raw.target)?;
        let load = Self::load_from_raw(kind, raw.load)?;
        if let (Target::Remote(remote), KindLoad::DataPlane(dp)) = (&target, &load.kind) {
            let streams = dp.streams_per_publisher();
            if remote.ingress.len() != (dp.publishers * streams) as usize {
                return Err(invalid(
                    "target.remote.ingress",
                    format!("{} entries", remote.ingress.len()),
                    format!(
                        "must list one ingress per publisher and stream, each publisher's audio then video (load.data_plane.publishers = {} x {streams} streams with pps > 0 = {})",
                        dp.publishers,
                        dp.publishers * streams
                    ),
                ));
            }
            let viewers = dp.publishers * dp.viewers_per_publisher;
            if remote.viewers.len() != viewers as usize {
                return Err(invalid(
                    "target.remote.viewers",
                    format!("{} entries", remote.viewers.len()),
                    format!("must list publishers x viewers_per_publisher = {viewers} addresses"),
                ));
            }
        }
        let mut thresholds = Vec::with_capacity(raw.thresholds.len());
        for (i, t) in raw.thresholds.into_iter().enumerate() {
            thresholds.push(Self::threshold_from_raw(i, t, kind, &load)?);
        }
        Ok(Self {
            name,
            kind,
            description: raw.scenario.description,
            target,
            load,
            thresholds,
        })
    }

    fn target_from_raw(raw: RawTarget) -> Result<Target, ScenarioError> {
        let mode = raw.mode.ok_or_else(|| {
            invalid(
                "target.mode",
                "(missing)",
                "must be \"local-lab\" or \"remote\"",
            )
        })?;
        match mode {
            RawMode::LocalLab => {
                if raw.remote.is_some() {
                    return Err(invalid(
                        "target.remote",
                        "(present)",
                        "is only allowed with target.mode = \"remote\"",
                    ));
                }
                let lab = raw.local_lab.unwrap_or_default();
                let d = LocalLab::default();
                let media_core = in_range(
                    "target.local_lab.media_core",
                    lab.media_core.unwrap_or(d.media_core as u64),
                    0,
                    1023,
                )? as usize;
                let load_core = in_range(
                    "target.local_lab.load_core",
                    lab.load_core.unwrap_or(d.load_core as u64),
                    0,
                    1023,
                )? as usize;
                if media_core == load_core {
                    return Err(invalid(
                        "target.local_lab.load_core",
                        load_core,
                        format!("must differ from media_core ({media_core}): the load would steal the relay's CPU"),
                    ));
                }
                let base_port = in_range(
                    "target.local_lab.base_port",
                    lab.base_port.unwrap_or(u64::from(d.base_port)),
                    1024,
                    60_000,
                )? as u16;
                Ok(Target::LocalLab(LocalLab {
                    bin_dir: lab.bin_dir,
                    media_core,
                    load_core,
                    base_port,
                }))
            }
            RawMode::Remote => {
                if raw.local_lab.is_some() {
                    return Err(invalid(
                        "target.local_lab",
                        "(present)",
                        "is only allowed with target.mode = \"local-lab\"",
                    ));
                }
                let r = raw.remote.ok_or_else(|| {
                    invalid(
                        "target.remote",
                        "(missing)",
                        "is required with target.mode = \"remote\"",
                    )
                })?;
                let admin = r
                    .admin
                    .as_deref()
                    .map(|a| addr("target.remote.admin", a))
                    .transpose()?;
                let signaling = r
                    .signaling
                    .as_deref()
                    .map(|a| addr("target.remote.signaling", a))
                    .transpose()?;
                let list = |key: &str, v: &[String]| -> Result<Vec<SocketAddr>, ScenarioError> {
                    if v.len() > MAX_VIEWERS as usize {
                        return Err(invalid(
                            format!("target.remote.{key}"),
                            format!("{} entries", v.len()),
                            format!("must have at most {MAX_VIEWERS}"),
                        ));
                    }
                    v.iter()
                        .enumerate()
                        .map(|(i, a)| addr(&format!("target.remote.{key}[{i}]"), a))
                        .collect()
                };
                Ok(Target::Remote(Remote {
                    admin,
                    ingress: list("ingress", &r.ingress)?,
                    viewers: list("viewers", &r.viewers)?,
                    signaling,
                }))
            }
        }
    }

    fn load_from_raw(kind: ScenarioKind, raw: RawLoad) -> Result<Load, ScenarioError> {
        let rate = in_range("load.rate", raw.rate.unwrap_or(20_000), 1, 100_000_000)?;
        let ramp_s = seconds("load.ramp", raw.ramp.unwrap_or(0.0), true, MAX_RAMP_S)?;
        let duration_s = seconds(
            "load.duration",
            raw.duration.unwrap_or(10.0),
            false,
            MAX_DURATION_S,
        )?;
        let concurrency = in_range(
            "load.concurrency",
            raw.concurrency.unwrap_or(1),
            1,
            u64::from(MAX_CONCURRENCY),
        )? as u32;
        let present = [
            (ScenarioKind::DataPlane, raw.data_plane.is_some()),
            (ScenarioKind::ControlPlane, raw.control_plane.is_some()),
            (ScenarioKind::Stability, raw.stability.is_some()),
        ];
        for (other, is_present) in present {
            if is_present && other != kind {
                return Err(invalid(
                    format!("load.{}", other.table()),
                    "(present)",
                    format!("belongs to kind \"{other}\", but scenario.kind is \"{kind}\""),
                ));
            }
        }
        let kind_load = match kind {
            ScenarioKind::DataPlane => KindLoad::DataPlane(Self::data_plane_from_raw(
                raw.data_plane.unwrap_or_default(),
            )?),
            ScenarioKind::ControlPlane => {
                let r = raw.control_plane.unwrap_or_default();
                let d = ControlPlaneLoad::default();
                let users = in_range(
                    "load.control_plane.users",
                    r.users.unwrap_or(d.users),
                    1,
                    10_000_000,
                )?;
                let rooms = in_range(
                    "load.control_plane.rooms",
                    r.rooms.unwrap_or(d.rooms),
                    1,
                    users,
                )?;
                let path = r.path.unwrap_or(d.path);
                if !path.starts_with('/')
                    || path.len() > 1024
                    || path.chars().any(char::is_whitespace)
                {
                    return Err(invalid(
                        "load.control_plane.path",
                        quoted(&path),
                        "must start with '/', have no whitespace and be at most 1024 bytes",
                    ));
                }
                KindLoad::ControlPlane(ControlPlaneLoad { users, rooms, path })
            }
            ScenarioKind::Stability => {
                let r = raw.stability.unwrap_or_default();
                let d = StabilityLoad::default();
                let publishers = in_range(
                    "load.stability.publishers",
                    r.publishers.unwrap_or(u64::from(d.publishers)),
                    1,
                    64,
                )? as u32;
                let viewers_per_publisher = in_range(
                    "load.stability.viewers_per_publisher",
                    r.viewers_per_publisher
                        .unwrap_or(u64::from(d.viewers_per_publisher)),
                    1,
                    64,
                )? as u32;
                let audio = stream("load.stability.audio", r.audio, d.audio)?;
                let video = stream("load.stability.video", r.video, d.video)?;
                if audio.pps == 0 && video.pps == 0 {
                    return Err(invalid(
                        "load.stability.video.pps",
                        0,
                        "and audio.pps are both 0: the publishers would send nothing",
                    ));
                }
                let stall_gap_ms = in_range(
                    "load.stability.stall_gap_ms",
                    r.stall_gap_ms.unwrap_or(u64::from(d.stall_gap_ms)),
                    1,
                    60_000,
                )? as u32;
                let interval_ms = in_range(
                    "load.stability.interval_ms",
                    r.interval_ms.unwrap_or(u64::from(d.interval_ms)),
                    10,
                    1000,
                )? as u32;
                let recovered_percent = r.recovered_percent.unwrap_or(d.recovered_percent);
                if !(recovered_percent > 0.0 && recovered_percent <= 100.0) {
                    return Err(invalid(
                        "load.stability.recovered_percent",
                        recovered_percent,
                        "must be in (0, 100]",
                    ));
                }
                // TOML integers are signed 64-bit: keep the seed writable.
                let seed = in_range(
                    "load.stability.seed",
                    r.seed.unwrap_or(d.seed),
                    0,
                    i64::MAX as u64,
                )?;
                let mut faults: Vec<Fault> = Vec::with_capacity(r.faults.len());
                if r.faults.len() > 64 {
                    return Err(invalid(
                        "load.stability.faults",
                        format!("{} entries", r.faults.len()),
                        "must have at most 64 faults",
                    ));
                }
                for (i, f) in r.faults.into_iter().enumerate() {
                    let p = |k: &str| format!("load.stability.faults[{i}].{k}");
                    let at_s = seconds(&p("at"), f.at, true, MAX_DURATION_S)?;
                    if at_s >= duration_s {
                        return Err(invalid(
                            p("at"),
                            f.at,
                            format!(
                                "must be before the end of the run (load.duration = {duration_s})"
                            ),
                        ));
                    }
                    let fault_duration =
                        seconds(&p("duration"), f.duration, false, MAX_DURATION_S)?;
                    if at_s + fault_duration >= duration_s {
                        return Err(invalid(
                            p("duration"),
                            f.duration,
                            format!(
                                "makes the fault end at {} s, not before the end of the load (load.duration = {duration_s}): leave time to observe the recovery",
                                at_s + fault_duration
                            ),
                        ));
                    }
                    if let Some(prev) = faults.last() {
                        let prev_end = prev.at_s + prev.duration_s;
                        if at_s < prev_end {
                            return Err(invalid(
                                p("at"),
                                f.at,
                                format!("is before the previous fault ends ({prev_end} s): faults come one at a time, in time order, so each recovery is its own"),
                            ));
                        }
                    }
                    let jitter = f.kind == FaultKind::Jitter;
                    let loss = f.kind == FaultKind::Loss;
                    let churn = f.kind == FaultKind::FlowChurn;
                    let upstream =
                        matches!(f.kind, FaultKind::KillUpstream | FaultKind::FailUpstream);
                    for (key, given, allowed) in [
                        ("delay_ms", f.delay_ms.is_some(), jitter),
                        ("jitter_ms", f.jitter_ms.is_some(), jitter),
                        ("loss_percent", f.loss_percent.is_some(), loss),
                        ("rate", f.rate.is_some(), churn || upstream),
                    ] {
                        if given && !allowed {
                            return Err(invalid(
                                p(key),
                                "(present)",
                                format!("does not apply to a {:?} fault", f.kind),
                            ));
                        }
                    }
                    let ms = |k: &str, v: Option<u64>| -> Result<Option<u32>, ScenarioError> {
                        v.map(|v| in_range(&p(k), v, 0, 60_000).map(|v| v as u32))
                            .transpose()
                    };
                    let loss_percent = match f.loss_percent {
                        Some(l) if !(l > 0.0 && l <= 100.0) => {
                            return Err(invalid(p("loss_percent"), l, "must be in (0, 100]"))
                        }
                        other => other,
                    };
                    if loss && loss_percent.is_none() {
                        return Err(invalid(
                            p("loss_percent"),
                            "(missing)",
                            "is required for a loss fault",
                        ));
                    }
                    if jitter && f.delay_ms.is_none() {
                        return Err(invalid(
                            p("delay_ms"),
                            "(missing)",
                            "is required for a jitter fault",
                        ));
                    }
                    let rate = f
                        .rate
                        .map(|r| in_range(&p("rate"), r, 1, 100_000).map(|r| r as u32))
                        .transpose()?
                        .or(churn.then_some(DEFAULT_CHURN_RATE))
                        .or(upstream.then_some(DEFAULT_JOIN_RATE));
                    faults.push(Fault {
                        rate,
                        kind: f.kind,
                        at_s,
                        duration_s: fault_duration,
                        delay_ms: ms("delay_ms", f.delay_ms)?,
                        jitter_ms: ms("jitter_ms", f.jitter_ms)?,
                        loss_percent,
                    });
                }
                if faults.windows(2).any(|w| w[1].at_s < w[0].at_s) {
                    return Err(invalid(
                        "load.stability.faults",
                        format!("{} entries", faults.len()),
                        "must be in time order (ascending `at`)",
                    ));
                }
                KindLoad::Stability(StabilityLoad {
                    publishers,
                    viewers_per_publisher,
                    audio,
                    video,
                    stall_gap_ms,
                    interval_ms,
                    recovered_percent,
                    seed,
                    faults,
                })
            }
        };
        Ok(Load {
            rate,
            ramp_s,
            duration_s,
            concurrency,
            kind: kind_load,
        })
    }

    fn data_plane_from_raw(r: RawDataPlane) -> Result<DataPlaneLoad, ScenarioError> {
        let d = DataPlaneLoad::default();
        let publishers = in_range(
            "load.data_plane.publishers",
            r.publishers.unwrap_or(u64::from(d.publishers)),
            1,
            256,
        )? as u32;
        let viewers_per_publisher = in_range(
            "load.data_plane.viewers_per_publisher",
            r.viewers_per_publisher
                .unwrap_or(u64::from(d.viewers_per_publisher)),
            1,
            u64::from(MAX_VIEWERS),
        )? as u32;
        if publishers * viewers_per_publisher > MAX_VIEWERS {
            return Err(invalid(
                "load.data_plane.viewers_per_publisher",
                viewers_per_publisher,
                format!(
                    "times publishers ({publishers}) must be at most {MAX_VIEWERS} viewers (one sink socket each)"
                ),
            ));
        }
        let audio = stream("load.data_plane.audio", r.audio, d.audio)?;
        let video = stream("load.data_plane.video", r.video, d.video)?;
        if audio.pps == 0 && video.pps == 0 {
            return Err(invalid(
                "load.data_plane.video.pps",
                0,
                "and audio.pps are both 0: the publishers would send nothing",
            ));
        }
        let stall_gap_ms = in_range(
            "load.data_plane.stall_gap_ms",
            r.stall_gap_ms.unwrap_or(u64::from(d.stall_gap_ms)),
            1,
            60_000,
        )? as u32;
        let slowest_gap_ms = [audio.pps, video.pps]
            .into_iter()
            .filter(|&p| p > 0)
            .map(|p| 1000.0 / f64::from(p))
            .fold(0.0f64, f64::max);
        if f64::from(stall_gap_ms) <= slowest_gap_ms {
            return Err(invalid(
                "load.data_plane.stall_gap_ms",
                stall_gap_ms,
                format!("must be longer than the gap between two packets of the slowest stream ({slowest_gap_ms:.1} ms), or every packet would be a stall"),
            ));
        }
        let peak_duration_ms = secs_to_ms(
            "load.data_plane.peak_duration",
            r.peak_duration
                .unwrap_or(f64::from(d.peak_duration_ms) / 1000.0),
            true,
        )?;
        let step_duration_ms = secs_to_ms(
            "load.data_plane.step_duration",
            r.step_duration
                .unwrap_or(f64::from(d.step_duration_ms) / 1000.0),
            false,
        )?;
        let flows_steps = r.flows_steps.unwrap_or(d.flows_steps);
        steps_ok("load.data_plane.flows_steps", &flows_steps, MAX_FLOWS)?;
        let active_flows = in_range(
            "load.data_plane.active_flows",
            r.active_flows.unwrap_or(u64::from(d.active_flows)),
            1,
            u64::from(MAX_ACTIVE_FLOWS),
        )? as u32;
        let fanout_raw = r
            .fanout_steps
            .unwrap_or_else(|| d.fanout_steps.iter().map(|&s| u64::from(s)).collect());
        steps_ok(
            "load.data_plane.fanout_steps",
            &fanout_raw,
            u64::from(MAX_VIEWERS),
        )?;
        let fanout_steps = fanout_raw.into_iter().map(|s| s as u32).collect();
        let fanout_pps = in_range(
            "load.data_plane.fanout_pps",
            r.fanout_pps.unwrap_or(u64::from(d.fanout_pps)),
            1,
            100_000,
        )? as u32;
        Ok(DataPlaneLoad {
            publishers,
            viewers_per_publisher,
            audio,
            video,
            stall_gap_ms,
            peak_duration_ms,
            step_duration_ms,
            flows_steps,
            active_flows,
            fanout_steps,
            fanout_pps,
        })
    }

    fn threshold_from_raw(
        i: usize,
        t: RawThreshold,
        kind: ScenarioKind,
        load: &Load,
    ) -> Result<Threshold, ScenarioError> {
        let path = |k: &str| format!("threshold[{i}].{k}");
        metrics::check_name(kind, &t.metric, load)
            .map_err(|rule| invalid(path("metric"), quoted(&t.metric), rule))?;
        let bound = match (t.max, t.min) {
            (Some(max), None) => Bound::Max(max),
            (None, Some(min)) => Bound::Min(min),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    path("max"),
                    "and min",
                    "are both set; give exactly one",
                ))
            }
            (None, None) => return Err(invalid(path("max"), "(missing)", "or min is required")),
        };
        let value = match bound {
            Bound::Max(v) | Bound::Min(v) => v,
        };
        if !value.is_finite() {
            return Err(invalid(
                path(if t.max.is_some() { "max" } else { "min" }),
                value,
                "must be a finite number",
            ));
        }
        if t.description.len() > 1024 {
            return Err(invalid(
                path("description"),
                format!("{} bytes", t.description.len()),
                "must be at most 1024 bytes",
            ));
        }
        Ok(Threshold {
            metric: t.metric,
            bound,
            source: t.source,
            description: t.description,
        })
    }

    fn to_raw(&self) -> RawFile {
        let target = match &self.target {
            Target::LocalLab(l) => RawTarget {
                mode: Some(RawMode::LocalLab),
                local_lab: Some(RawLocalLab {
                    bin_dir: l.bin_dir.clone(),
                    media_core: Some(l.media_core as u64),
                    load_core: Some(l.load_core as u64),
                    base_port: Some(u64::from(l.base_port)),
                }),
                remote: None,
            },
            Target::Remote(r) => RawTarget {
                mode: Some(RawMode::Remote),
                local_lab: None,
                remote: Some(RawRemote {
                    admin: r.admin.map(|a| a.to_string()),
                    ingress: r.ingress.iter().map(ToString::to_string).collect(),
                    viewers: r.viewers.iter().map(ToString::to_string).collect(),
                    signaling: r.signaling.map(|a| a.to_string()),
                }),
            },
        };
        let mut load = RawLoad {
            rate: Some(self.load.rate),
            ramp: Some(self.load.ramp_s),
            duration: Some(self.load.duration_s),
            concurrency: Some(u64::from(self.load.concurrency)),
            ..RawLoad::default()
        };
        match &self.load.kind {
            KindLoad::DataPlane(d) => {
                let stream = |s: StreamMix| RawStream {
                    pps: u64::from(s.pps),
                    size: u64::from(s.size),
                };
                load.data_plane = Some(RawDataPlane {
                    publishers: Some(u64::from(d.publishers)),
                    viewers_per_publisher: Some(u64::from(d.viewers_per_publisher)),
                    audio: Some(stream(d.audio)),
                    video: Some(stream(d.video)),
                    stall_gap_ms: Some(u64::from(d.stall_gap_ms)),
                    peak_duration: Some(f64::from(d.peak_duration_ms) / 1000.0),
                    step_duration: Some(f64::from(d.step_duration_ms) / 1000.0),
                    flows_steps: Some(d.flows_steps.clone()),
                    active_flows: Some(u64::from(d.active_flows)),
                    fanout_steps: Some(d.fanout_steps.iter().map(|&s| u64::from(s)).collect()),
                    fanout_pps: Some(u64::from(d.fanout_pps)),
                });
            }
            KindLoad::ControlPlane(c) => {
                load.control_plane = Some(RawControlPlane {
                    users: Some(c.users),
                    rooms: Some(c.rooms),
                    path: Some(c.path.clone()),
                });
            }
            KindLoad::Stability(s) => {
                let stream = |m: StreamMix| RawStream {
                    pps: u64::from(m.pps),
                    size: u64::from(m.size),
                };
                load.stability = Some(RawStability {
                    publishers: Some(u64::from(s.publishers)),
                    viewers_per_publisher: Some(u64::from(s.viewers_per_publisher)),
                    audio: Some(stream(s.audio)),
                    video: Some(stream(s.video)),
                    stall_gap_ms: Some(u64::from(s.stall_gap_ms)),
                    interval_ms: Some(u64::from(s.interval_ms)),
                    recovered_percent: Some(s.recovered_percent),
                    seed: Some(s.seed),
                    faults: s
                        .faults
                        .iter()
                        .map(|f| RawFault {
                            kind: f.kind,
                            at: f.at_s,
                            duration: f.duration_s,
                            delay_ms: f.delay_ms.map(u64::from),
                            jitter_ms: f.jitter_ms.map(u64::from),
                            loss_percent: f.loss_percent,
                            rate: f.rate.map(u64::from),
                        })
                        .collect(),
                });
            }
        }
        RawFile {
            scenario: RawHeader {
                name: self.name.clone(),
                kind: Some(self.kind),
                description: self.description.clone(),
            },
            target,
            load,
            thresholds: self
                .thresholds
                .iter()
                .map(|t| RawThreshold {
                    metric: t.metric.clone(),
                    max: match t.bound {
                        Bound::Max(v) => Some(v),
                        Bound::Min(_) => None,
                    },
                    min: match t.bound {
                        Bound::Min(v) => Some(v),
                        Bound::Max(_) => None,
                    },
                    source: t.source,
                    description: t.description.clone(),
                })
                .collect(),
        }
    }
}

fn stream(
    path: &str,
    s: Option<RawStream>,
    default: StreamMix,
) -> Result<StreamMix, ScenarioError> {
    let s = s.unwrap_or(RawStream {
        pps: u64::from(default.pps),
        size: u64::from(default.size),
    });
    Ok(StreamMix {
        pps: in_range(&format!("{path}.pps"), s.pps, 0, 100_000)? as u32,
        size: in_range(&format!("{path}.size"), s.size, 36, 9216)? as u16,
    })
}

fn steps_ok(path: &str, steps: &[u64], max: u64) -> Result<(), ScenarioError> {
    if steps.len() > 16 {
        return Err(invalid(
            path,
            format!("{} entries", steps.len()),
            "must have at most 16 steps",
        ));
    }
    for (i, &s) in steps.iter().enumerate() {
        in_range(&format!("{path}[{i}]"), s, 1, max)?;
        if i > 0 && steps.get(i - 1).is_some_and(|&prev| prev >= s) {
            return Err(invalid(
                format!("{path}[{i}]"),
                s,
                "must be larger than the step before it (ascending, no repeats)",
            ));
        }
    }
    Ok(())
}
