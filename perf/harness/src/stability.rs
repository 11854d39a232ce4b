//! The stability scenario in local-lab mode: a steady media load through the appliance while
//! faults are injected, and how the viewers fare: media lost during each fault, stalls, and the
//! recovery time until they receive the nominal rate again.
//!
//! Path: `popmesh-rtp send` (one audio and one video sender per publisher) -> `popmesh-impair`
//! (one route per session, schedule built from the jitter and loss faults) -> `popmesh-dataplane`
//! (the lane's ingress ports, one worker on `media_core`) -> `popmesh-rtp sink` (every viewer
//! socket; stalls, latency, packets per `interval_ms`). Load generators, relay and sink run on
//! `load_core`.
//!
//! Time 0 of the faults is the moment the senders start (`T0`); the relay's schedule is given
//! relative to the same CLOCK_MONOTONIC instant. Faults:
//! - `jitter`, `loss`: windows of the relay's schedule (no harness action);
//! - `restart-appliance`: SIGTERM at `at`, down for `duration`, then started again from the same
//!   config; the fault ends when the new process is started, so its recovery time includes the
//!   appliance's start-up.
//!
//! Figures come from the sink's interval counts against the nominal rate (publishers x viewers
//! x (audio + video) pps), see [`Timeline`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use popmesh_ctrl_api::pb::{self, session_service_client::SessionServiceClient};

use crate::controlplane::TRUST_DOMAIN;
use crate::dataplane::{
    free_admin, http_get, loopback, read_json, Lab, SendJson, SendSpec, SinkJson, SinkSpec,
    MAX_TIMELINE_EVENTS,
};
use crate::lab::{wait_for_line, Ctrld, Svid, SvidKind, APPLIANCE};
use crate::metrics;
use crate::report::{FaultWindow, StallTimeline};
use crate::run::{ChildGuard, RunContext, ScenarioDriver};
use crate::scenario::{Fault, FaultKind, Scenario, StabilityLoad, Target};
use crate::stall::{self, StallRecord, Window};

/// Port offsets within the lab's range: ingress at 0.., relay at this, viewers at 800...
const OFFSET_RELAY: u16 = 400;
const OFFSET_VIEWERS: u16 = 800;
/// The flow-churn port (one wildcard-bound socket) and its unused subscriber.
const OFFSET_CHURN: u16 = 700;
/// Intervals in a row at the nominal rate that count as recovered.
pub const SUSTAIN_INTERVALS: usize = 3;
/// Lead time between starting the relay and T0, so every component is up before traffic.
const LEAD: Duration = Duration::from_millis(300);
/// The first second of the load is not baseline (senders and sink settle).
const BASELINE_SKIP_S: f64 = 1.0;

/// The stability driver.
#[derive(Debug, Clone, Copy)]
pub struct StabilityDriver;

impl ScenarioDriver for StabilityDriver {
    fn estimated_s(&self, scenario: &Scenario) -> f64 {
        scenario.load.duration_s + 6.0
    }

    fn backend(&self, scenario: &Scenario) -> String {
        match scenario.target {
            Target::LocalLab(_) => "uring".to_string(),
            Target::Remote(_) => "remote".to_string(),
        }
    }

    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()> {
        let (lab, _cpus) = crate::run::local_lab(&ctx.scenario, "the stability driver runs only in local-lab mode (it restarts components and relays the media itself)")?;
        let load = ctx
            .scenario
            .stability()
            .cloned()
            .ok_or_else(|| anyhow!("not a stability scenario"))?;

        if ctx.scenario.load.ramp_s > 0.0 {
            ctx.note("stability: load.ramp is not used; every publisher starts at T0 so the baseline before the first fault is steady");
        }
        let impair = ctx.binary("popmesh-impair")?;
        let lab = Lab::new(ctx, lab)?;
        Run::new(&lab, impair, load).go(ctx)
    }
}

/// Packets per interval at the viewers, and the questions asked of them.
///
/// Times are seconds on any one clock; `origin_s` is the start of interval 0.
#[derive(Debug, Clone, Copy)]
pub struct Timeline<'a> {
    /// Packets received in each interval.
    pub counts: &'a [u64],
    /// Start of interval 0.
    pub origin_s: f64,
    /// Interval width, seconds (> 0).
    pub interval_s: f64,
}

impl Timeline<'_> {
    /// Packets received in `[from_s, to_s)`, intervals that straddle an edge counted pro rata.
    pub fn received_between(&self, from_s: f64, to_s: f64) -> f64 {
        let valid = to_s > from_s && self.interval_s > 0.0;
        if !valid {
            return 0.0;
        }
        let mut total = 0.0;
        for (i, &n) in self.counts.iter().enumerate() {
            let start = self.origin_s + i as f64 * self.interval_s;
            let end = start + self.interval_s;
            let overlap = (end.min(to_s) - start.max(from_s)).max(0.0);
            total += n as f64 * overlap / self.interval_s;
        }
        total
    }

    /// Time from `end_s` (a fault's end) until the viewers are back: the start of the first run
    /// of `sustain` intervals in a row, each with at least `threshold` packets, that begins in
    /// the interval holding `end_s` or later and ends by `limit_s` (the end of the load).
    /// 0 when the interval holding `end_s` already starts such a run; `None` if no run is found.
    pub fn recovery_s(
        &self,
        end_s: f64,
        threshold: f64,
        sustain: usize,
        limit_s: f64,
    ) -> Option<f64> {
        let valid = self.interval_s > 0.0 && end_s.is_finite();
        if !valid {
            return None;
        }
        let sustain = sustain.max(1);
        let first = ((end_s - self.origin_s) / self.interval_s).floor().max(0.0) as usize;
        let mut run = 0usize;
        for i in first..self.counts.len() {
            let start = self.origin_s + i as f64 * self.interval_s;
            if start + self.interval_s > limit_s + 1e-9 {
                break;
            }
            if self.counts.get(i).is_some_and(|&n| n as f64 >= threshold) {
                run += 1;
                if run == sustain {
                    let run_start = self.origin_s + (i + 1 - sustain) as f64 * self.interval_s;
                    return Some((run_start - end_s).max(0.0));
                }
            } else {
                run = 0;
            }
        }
        None
    }

    /// Start of the interval holding `t_s` (its left edge when `t_s` is one).
    pub fn floor_s(&self, t_s: f64) -> f64 {
        self.origin_s + ((t_s - self.origin_s) / self.interval_s).floor() * self.interval_s
    }

    /// End of the interval holding `t_s` (`t_s` itself when it is an edge).
    pub fn ceil_s(&self, t_s: f64) -> f64 {
        self.origin_s + ((t_s - self.origin_s) / self.interval_s).ceil() * self.interval_s
    }

    /// Median packets per interval over the intervals that lie wholly inside `[from_s, to_s)`.
    pub fn median_between(&self, from_s: f64, to_s: f64) -> Option<f64> {
        let mut inside: Vec<u64> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let start = self.origin_s + *i as f64 * self.interval_s;
                start >= from_s - 1e-9 && start + self.interval_s <= to_s + 1e-9
            })
            .map(|(_, &n)| n)
            .collect();
        if inside.is_empty() {
            return None;
        }
        inside.sort_unstable();
        let mid = inside.len() / 2;
        Some(if inside.len() % 2 == 1 {
            inside[mid] as f64
        } else {
            (inside[mid - 1] + inside[mid]) as f64 / 2.0
        })
    }
}

/// Stalls of a timeline that overlap `[from_s, to_s]` (run seconds): (count, stalled seconds).
pub fn stalls_between(t: &StallTimeline, from_s: f64, to_s: f64) -> (u64, f64) {
    t.events
        .iter()
        .filter(|e| e.start_s <= to_s && e.start_s + e.duration_s >= from_s)
        .fold((0, 0.0), |(n, s), e| (n + 1, s + e.duration_s))
}

/// The relay's JSON, the parts the harness reads.
#[derive(Debug, Deserialize)]
struct ImpairJson {
    windows: Vec<ImpairWindow>,
}

#[derive(Debug, Deserialize)]
struct ImpairWindow {
    dropped: u64,
    delayed: u64,
    queue_full: u64,
}

/// What happened to one fault, in run seconds.
#[derive(Debug, Clone)]
struct Injected {
    start_s: f64,
    end_s: f64,
    restart_ms: Option<f64>,
    /// Index of its window in the relay's schedule.
    relay_window: Option<usize>,
    /// restart-ctrld: acknowledged session versions missing afterwards, and the time from the
    /// restart until the appliance acknowledged again.
    acked_lost: Option<u64>,
    resync_ms: Option<f64>,
    /// flow-churn: sessions created, and the time from the last batch until it was ACKed.
    churned: Option<u64>,
    churn_ack_ms: Option<f64>,
    /// flow-churn: config versions the appliance refused (NACKed) during the fault.
    churn_rejected: Option<f64>,
}

/// One stability run.
struct Run<'a> {
    lab: &'a Lab,
    impair: PathBuf,
    load: StabilityLoad,
    config: String,
    viewers: Vec<SocketAddr>,
}

impl<'a> Run<'a> {
    fn new(lab: &'a Lab, impair: PathBuf, load: StabilityLoad) -> Self {
        let p = load.publishers;
        let v = load.viewers_per_publisher;
        let viewers = (0..p * v)
            .map(|i| loopback(lab.port(OFFSET_VIEWERS) + i as u16))
            .collect();
        Self {
            lab,
            impair,
            load,
            config: String::new(),
            viewers,
        }
    }

    fn ingress(&self, session: u32) -> SocketAddr {
        loopback(self.lab.port(session as u16))
    }

    fn relay_port(&self, session: u32) -> SocketAddr {
        loopback(self.lab.port(OFFSET_RELAY + session as u16))
    }

    /// The media sessions as the daemon takes them.
    fn media_sessions(&self) -> Vec<pb::Session> {
        let v = self.load.viewers_per_publisher;
        let mut out = Vec::new();
        for pub_i in 0..self.load.publishers {
            let subscribers: Vec<pb::Subscriber> = (0..v)
                .map(|k| pb::Subscriber {
                    endpoint: Some(endpoint(self.viewers[(pub_i * v + k) as usize])),
                    egress_port: String::new(),
                })
                .collect();
            for (media, video) in [("audio", 0), ("video", 1)] {
                out.push(pb::Session {
                    name: format!("pub{pub_i}-{media}"),
                    appliance: APPLIANCE.to_string(),
                    ingress: Some(endpoint(self.ingress(2 * pub_i + video))),
                    subscribers: subscribers.clone(),
                    ..Default::default()
                });
            }
        }
        out
    }

    fn write_config(&mut self, control: Option<&Control>) -> anyhow::Result<()> {
        let p = self.load.publishers;
        let v = self.load.viewers_per_publisher;
        let admin = free_admin()?;
        // Room for the media sessions and for what a churn step holds at once (its new sessions
        // and, until the step applies, the previous step's): a version over media.max_flows is
        // refused as a whole.
        let churn_peak = self
            .load
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::FlowChurn)
            .filter_map(|f| f.rate)
            .map(|r| 2 * u64::from(r))
            .max()
            .unwrap_or(0);
        let mut config = self
            .lab
            .config_head(admin, u64::from(2 * p) + 16 + churn_peak, false);
        let _ = write!(
            config,
            "[[media.ports]]\nname = \"lane\"\nbind = \"{}\"\ncount = {}\n\n",
            self.ingress(0),
            2 * p
        );
        if let Some(c) = control {
            if let Some(sig) = &c.signal {
                // The signaling lane takes load_core, which the housekeeping threads may then
                // not share.
                config = config.replace(
                    &format!("[housekeeping]\ncores = [{}]\n", self.lab.lab.load_core),
                    "",
                );
                config.push_str(&sig.config_tail());
            }
            // Sessions come from the daemon; a config with both is refused.
            config.push_str(&c.config_tail(&self.lab.configs.join("agent-state")));
            self.config = config;
            return Ok(());
        }
        for pub_i in 0..p {
            let subs: Vec<String> = (0..v)
                .map(|k| format!("\"{}\"", self.viewers[(pub_i * v + k) as usize]))
                .collect();
            for (media, video) in [("audio", 0), ("video", 1)] {
                let _ = write!(
                    config,
                    "[[sessions]]\nname = \"pub{pub_i}-{media}\"\ningress = \"{}\"\nsubscribers = [{}]\n\n",
                    self.ingress(2 * pub_i + video),
                    subs.join(", ")
                );
            }
        }
        self.config = config;
        Ok(())
    }

    /// The relay's schedule: one window per jitter or loss fault; returns it and the window
    /// index of each fault.
    fn schedule(&self) -> (String, Vec<Option<usize>>) {
        let mut text = String::from("# Generated by popmesh-perf: the jitter and loss faults.\n");
        let mut index = Vec::new();
        let mut n = 0;
        for f in &self.load.faults {
            let span = format!("{}..{}", f.at_s, f.at_s + f.duration_s);
            let line = match f.kind {
                FaultKind::Jitter => Some(format!(
                    "{span} delay_ms={} jitter_ms={}",
                    f.delay_ms.unwrap_or(0),
                    f.jitter_ms.unwrap_or(0)
                )),
                FaultKind::Loss => Some(format!(
                    "{span} loss_percent={}",
                    f.loss_percent.unwrap_or(0.0)
                )),
                _ => None,
            };
            match line {
                // A jitter fault of 0 ms delay and 0 ms jitter impairs nothing; the relay would
                // refuse the window.
                Some(l) if !l.ends_with("delay_ms=0 jitter_ms=0") => {
                    let _ = writeln!(text, "{l}");
                    index.push(Some(n));
                    n += 1;
                }
                _ => index.push(None),
            }
        }
        (text, index)
    }

    fn go(mut self, ctx: &mut RunContext) -> anyhow::Result<()> {
        let p = self.load.publishers;
        let duration = ctx.scenario.load.duration_s;
        self.lab
            .check_free(self.viewers.iter().map(SocketAddr::port))?;
        self.lab.check_free(
            (0..2 * p).flat_map(|i| [self.ingress(i).port(), self.relay_port(i).port()]),
        )?;
        let mut control = if needs_ctrld(&self.load) {
            self.lab
                .check_free([self.lab.port(OFFSET_CHURN), self.lab.port(OFFSET_CHURN + 1)])?;
            let signaling = self.load.faults.iter().any(|f| is_upstream(f.kind));
            Some(Control::start(ctx, self.lab, signaling)?)
        } else {
            None
        };
        self.write_config(control.as_ref())?;
        ctx.appliance_config_toml = Some(self.config.clone());
        let phase = ctx.begin_phase(
            "stability",
            &format!(
                "{p} publisher(s) x {} viewers through popmesh-impair and the media lane for {duration} s, {} fault(s)",
                self.load.viewers_per_publisher,
                self.load.faults.len()
            ),
        );
        let mut appliance = Some(self.lab.start_appliance(
            ctx,
            "stability",
            &self.config,
            Duration::from_secs(60),
        )?);
        if let (Some(c), Some(a)) = (&control, &appliance) {
            until_connected(ctx, a.admin, Duration::from_secs(30))?;
            let version = c.batch(self.media_sessions(), Vec::new())?;
            let took = c
                .ctrld
                .until_acked(ctx, APPLIANCE, version, Duration::from_secs(30))?;
            ctx.say(&format!(
                "popmesh-perf: {} media sessions from popmesh-ctrld acknowledged in {:.0} ms",
                2 * p,
                took.as_secs_f64() * 1000.0
            ));
            if let Some(sig) = &c.signal {
                let version = sig.program(&c.ctrld)?;
                c.ctrld
                    .until_acked(ctx, APPLIANCE, version, Duration::from_secs(30))?;
                ctx.note(format!(
                    "signaling: service rooms on {} and {} (one retry on connect-failure/reset/gateway-error, for idempotent requests only: joins are POSTs and are not retried; outlier detection after 3 consecutive errors, 1 s base ejection; health checks every 500 ms; circuit breaker 100000 requests, every held WebSocket counting as one), route /rooms, policy ns/user -> rooms; the faults kill {}",
                    sig.endpoints[0], sig.endpoints[1], sig.endpoints[1]
                ));
            }
        }
        let tail = 4.0;
        let sink_spec = SinkSpec {
            name: "stability-sink".into(),
            listen: self.viewers.clone(),
            duration_s: duration + tail + 2.0,
            stall_gap_ms: Some(self.load.stall_gap_ms),
            hlog: true,
            interval_ms: Some(self.load.interval_ms),
            // A restart silences every viewer on purpose.
            idle_exit: false,
        };
        let (mut sink, sink_json, hlog_path) = self.lab.spawn_sink(ctx, &sink_spec)?;

        let (schedule, relay_index) = self.schedule();
        let schedule_path = self.lab.configs.join("impair-schedule.txt");
        std::fs::write(&schedule_path, &schedule)
            .with_context(|| format!("write {}", schedule_path.display()))?;
        let t0_ns = popmesh_perf::sys::monotonic_ns() + LEAD.as_nanos() as u64;
        let relay_json = self.lab.raw.join("impair.json");
        let mut cmd = Command::new(&self.impair);
        for s in 0..2 * p {
            cmd.arg("--route")
                .arg(format!("{}={}", self.relay_port(s), self.ingress(s)));
        }
        cmd.arg("--schedule")
            .arg(&schedule_path)
            .args(["--epoch-monotonic-ns", &t0_ns.to_string()])
            .args(["--duration", &format!("{:.3}", duration + tail)])
            .args(["--seed", &self.load.seed.to_string()])
            .arg("--json")
            .arg(&relay_json);
        let mut relay = ctx.spawn("impair", cmd, Some(self.lab.lab.load_core))?;
        wait_listening(ctx, &mut relay, (2 * p) as usize)?;
        let now = popmesh_perf::sys::monotonic_ns();
        std::thread::sleep(Duration::from_nanos(t0_ns.saturating_sub(now)));
        let t0_s = ctx.mono_to_s(t0_ns);

        let mut senders = Vec::new();
        for pub_i in 0..p {
            for (media, mix, video) in [
                ("audio", self.load.audio, 0u32),
                ("video", self.load.video, 1),
            ] {
                if mix.pps == 0 {
                    continue;
                }
                let spec = SendSpec {
                    name: format!("stability-pub{pub_i}-{media}"),
                    to: vec![self.relay_port(2 * pub_i + video)],
                    rate: u64::from(mix.pps),
                    size: mix.size,
                    streams: 1,
                    stream_base: 1 - video,
                    duration_s: duration,
                };
                senders.push(self.lab.spawn_send(ctx, &spec)?);
            }
        }

        if let Some(sig) = control.as_mut().and_then(|c| c.signal.as_mut()) {
            let rate = self
                .load
                .faults
                .iter()
                .find(|f| is_upstream(f.kind))
                .and_then(|f| f.rate)
                .unwrap_or(crate::scenario::DEFAULT_JOIN_RATE);
            sig.start_users(ctx, &self.lab.raw, rate, duration)?;
        }
        // Fault events in time order: (seconds after T0, fault, begins?).
        let mut events: Vec<(f64, usize, bool)> = Vec::new();
        for (i, f) in self.load.faults.iter().enumerate() {
            events.push((f.at_s, i, true));
            events.push((f.at_s + f.duration_s, i, false));
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
        let mut injected: Vec<Injected> = self
            .load
            .faults
            .iter()
            .zip(&relay_index)
            .map(|(f, &w)| Injected {
                start_s: t0_s + f.at_s,
                end_s: t0_s + f.at_s + f.duration_s,
                restart_ms: None,
                relay_window: w,
                acked_lost: None,
                resync_ms: None,
                churned: None,
                churn_ack_ms: None,
                churn_rejected: None,
            })
            .collect();
        let mut rx_series = Vec::new();
        let mut tx_series = Vec::new();
        let mut last: Option<crate::dataplane::Reading> = None;
        let mut restarts = 0u32;
        let until = |ctx: &RunContext, at: f64| (t0_s + at - ctx.elapsed_s()).max(0.0);
        let mut churn: Option<Churn> = None;
        let mut rejected_before: Option<f64> = None;
        let mut acked_before = AckedBefore::default();
        for &(at, i, begins) in
            events
                .iter()
                .chain(std::iter::once(&(duration + 0.3, usize::MAX, false)))
        {
            loop {
                let left = until(ctx, at);
                // While sessions churn, the wait is cut into 100 ms steps, one batch after each; with
                // a signaling load, one sample of the lane's counters after each.
                let signaling = control.as_ref().is_some_and(|c| c.signal.is_some());
                let wait = if churn.is_some() || signaling {
                    left.min(0.1)
                } else {
                    left
                };
                {
                    let a = appliance.as_ref();
                    let mut watched: Vec<&mut ChildGuard> = vec![&mut relay, &mut sink];
                    ctx.hold(
                        "stability",
                        Duration::from_secs_f64(wait),
                        &mut watched,
                        |c| {
                            let Some(a) = a else {
                                return "appliance down".to_string();
                            };
                            a.meter().sample_rates(
                                &mut last,
                                c.elapsed_s(),
                                &mut rx_series,
                                &mut tx_series,
                            )
                        },
                    )?;
                }
                if let (Some(c), Some(state)) = (&control, churn.as_mut()) {
                    c.churn_tick(state)
                        .with_context(|| format!("fault[{}] (flow-churn)", state.fault))?;
                }
                let admin = appliance.as_ref().map(|a| a.admin);
                if let Some(sig) = control.as_mut().and_then(|c| c.signal.as_mut()) {
                    sig.sample(ctx, admin);
                }
                if until(ctx, at) <= 0.0 {
                    break;
                }
            }
            let Some(fault) = self.load.faults.get(i) else {
                continue;
            };
            if begins {
                ctx.say(&format!(
                    "popmesh-perf: fault[{i}] begins: {}",
                    describe(fault)
                ));
            }
            if let Some(c) = control.as_mut() {
                match (fault.kind, begins) {
                    (FaultKind::RestartCtrld, true) => {
                        acked_before = c.acked_before()?;
                        ctx.say(&format!(
                            "popmesh-perf: fault[{i}]: SIGKILL to popmesh-ctrld ({} sessions acknowledged at version {})",
                            acked_before.sessions.len(),
                            acked_before.acked_version
                        ));
                        if let Some(slot) = injected.get_mut(i) {
                            slot.start_s = ctx.elapsed_s();
                        }
                        c.kill9()?;
                    }
                    (FaultKind::RestartCtrld, false) => {
                        ctx.say(&format!(
                            "popmesh-perf: fault[{i}]: starting popmesh-ctrld again"
                        ));
                        let started = Instant::now();
                        if let Some(slot) = injected.get_mut(i) {
                            slot.end_s = ctx.elapsed_s();
                        }
                        c.respawn(ctx)?;
                        c.until_resynced(ctx, acked_before.acked_version, Duration::from_secs(30))?;
                        let resync_ms = started.elapsed().as_secs_f64() * 1000.0;
                        let lost = self.acked_lost(ctx, c, &acked_before, appliance.as_ref())?;
                        if let Some(slot) = injected.get_mut(i) {
                            slot.resync_ms = Some(resync_ms);
                            slot.acked_lost = Some(lost);
                        }
                    }
                    (FaultKind::KillUpstream, true) => {
                        if let Some(sig) = c.signal.as_mut() {
                            ctx.say(&format!(
                                "popmesh-perf: fault[{i}]: SIGKILL to the room-service endpoint {}",
                                sig.endpoints[1]
                            ));
                            if let Some(slot) = injected.get_mut(i) {
                                slot.start_s = ctx.elapsed_s();
                            }
                            sig.kill_endpoint()?;
                        }
                    }
                    (FaultKind::KillUpstream, false) => {
                        if let Some(sig) = c.signal.as_mut() {
                            ctx.say(&format!(
                                "popmesh-perf: fault[{i}]: starting the endpoint {} again",
                                sig.endpoints[1]
                            ));
                            if let Some(slot) = injected.get_mut(i) {
                                slot.end_s = ctx.elapsed_s();
                            }
                            sig.restart_endpoint(ctx)?;
                        }
                    }
                    (FaultKind::FailUpstream, _) => {
                        if let Some(sig) = c.signal.as_mut() {
                            ctx.say(&format!(
                                "popmesh-perf: fault[{i}]: the endpoint {} {}",
                                sig.endpoints[1],
                                if begins {
                                    "starts answering 503"
                                } else {
                                    "answers normally again"
                                }
                            ));
                            if let Some(slot) = injected.get_mut(i) {
                                if begins {
                                    slot.start_s = ctx.elapsed_s();
                                } else {
                                    slot.end_s = ctx.elapsed_s();
                                }
                            }
                            sig.toggle_failing()?;
                        }
                    }
                    (FaultKind::FlowChurn, true) => {
                        rejected_before = appliance.as_ref().map(agent_rejected);
                        churn = Some(Churn {
                            fault: i,
                            rate: fault.rate.unwrap_or(crate::scenario::DEFAULT_CHURN_RATE),
                            started: Instant::now(),
                            created: 0,
                            next: 0,
                            live: Vec::new(),
                            last_version: 0,
                        });
                    }
                    (FaultKind::FlowChurn, false) => {
                        if let Some(mut state) = churn.take() {
                            // The last churned sessions go too; then wait for the ACK.
                            // Timed from the request, so the daemon's durable commit counts.
                            let sent = Instant::now();
                            let removes = std::mem::take(&mut state.live);
                            if !removes.is_empty() {
                                state.last_version = c.batch(Vec::new(), removes)?;
                            }
                            c.ctrld.until_acked(
                                ctx,
                                APPLIANCE,
                                state.last_version,
                                Duration::from_secs(30),
                            )?;
                            if let Some(slot) = injected.get_mut(i) {
                                slot.churn_rejected = rejected_before
                                    .zip(appliance.as_ref().map(agent_rejected))
                                    .map(|(b, a)| (a - b).max(0.0));
                                slot.churned = Some(state.created);
                                slot.churn_ack_ms = Some(sent.elapsed().as_secs_f64() * 1000.0);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if fault.kind != FaultKind::RestartAppliance {
                continue;
            }
            if begins {
                ctx.say(&format!(
                    "popmesh-perf: fault[{i}]: SIGTERM to popmesh-dataplane"
                ));
                if let Some(slot) = injected.get_mut(i) {
                    slot.start_s = ctx.elapsed_s();
                }
                if let Some(a) = appliance.take() {
                    a.stop();
                }
                ctx.watch_threads(None);
                last = None;
            } else {
                restarts += 1;
                ctx.say(&format!(
                    "popmesh-perf: fault[{i}]: starting popmesh-dataplane again"
                ));
                let started = ctx.elapsed_s();
                if let Some(slot) = injected.get_mut(i) {
                    slot.end_s = started;
                }
                let a = self.lab.start_appliance(
                    ctx,
                    &format!("stability-restart{restarts}"),
                    &self.config,
                    Duration::from_secs(60),
                )?;
                if let Some(slot) = injected.get_mut(i) {
                    slot.restart_ms = Some(a.startup_s * 1000.0);
                }
                appliance = Some(a);
            }
        }
        let mut sent_by_publisher = vec![0u64; p as usize];
        for (k, (mut child, json)) in senders.into_iter().enumerate() {
            let status = child.wait_for(Duration::from_secs(15))?;
            if !status.success() {
                bail!(
                    "{} failed ({status}); see {}/logs/{}.log",
                    child.name,
                    ctx.out_dir().display(),
                    child.name
                );
            }
            // Two senders per publisher unless a stream is off; names carry the publisher.
            let pub_i = child
                .name
                .strip_prefix("stability-pub")
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(k / 2);
            if let Some(slot) = sent_by_publisher.get_mut(pub_i) {
                *slot += read_json::<SendJson>(&json)?.packets;
            }
        }
        relay.wait_for(Duration::from_secs_f64(tail + 10.0))?;
        sink.wait_for(Duration::from_secs_f64(tail + 15.0))?;
        if let Some((mut users, json)) = control
            .as_mut()
            .and_then(|c| c.signal.as_mut())
            .and_then(|s| s.users.take())
        {
            match users.wait_for(Duration::from_secs(20)) {
                Ok(st) if st.success() => {
                    if let Ok(summary) = read_json::<serde_json::Value>(&json) {
                        ctx.note(users_note(&summary));
                    }
                }
                Ok(st) => ctx.note(format!(
                    "popmesh-rooms users exited with {st}; see {}/logs/stability-users.log",
                    ctx.out_dir().display()
                )),
                Err(e) => ctx.note(format!("{e:#}")),
            }
        }
        if let Some(a) = appliance.take() {
            if let Some(rss) = crate::cpu::rss_mib(a.child.pid()) {
                tracing::debug!(rss_mib = rss, "appliance memory at the end");
            }
            a.stop();
        }
        ctx.watch_threads(None);
        ctx.series("pps.stability.appliance_rx", "pps", rx_series);
        ctx.series("pps.stability.appliance_tx", "pps", tx_series);
        let sink_report: SinkJson = read_json(&sink_json)?;
        let relay_report: ImpairJson = read_json(&relay_json)?;
        let sent: u64 = sent_by_publisher
            .iter()
            .map(|s| s * u64::from(self.load.viewers_per_publisher))
            .sum();
        self.analyse(
            ctx,
            &sink_report,
            &relay_report,
            &injected,
            t0_ns,
            t0_s,
            sent,
        )?;
        if let Some(sig) = control.as_ref().and_then(|c| c.signal.as_ref()) {
            self.signal_metrics(ctx, sig, &injected, t0_s + duration);
        }
        if let Some(path) = hlog_path {
            add_cdf(ctx, &path, ctx.mono_to_s(sink_report.start_monotonic_ns))?;
        }
        ctx.end_phase(phase);
        Ok(())
    }

    /// The signaling figures of a run with a kill-upstream fault: per fault the error ratio,
    /// ejections, breaker trips and the lane's recovery; the request timeline.
    fn signal_metrics(
        &self,
        ctx: &mut RunContext,
        sig: &Signal,
        injected: &[Injected],
        load_end_s: f64,
    ) {
        let rates = |pick: fn(&LaneSample) -> f64| -> Vec<[f64; 2]> {
            sig.samples
                .windows(2)
                .filter_map(|w| {
                    let dt = w[1].0 - w[0].0;
                    (dt > 0.0).then(|| [w[1].0, (pick(&w[1].1) - pick(&w[0].1)).max(0.0) / dt])
                })
                .collect()
        };
        ctx.series("rps.signal.ok", "req/s", rates(|s| s.ok));
        ctx.series("rps.signal.errors", "req/s", rates(|s| s.errors));
        if let (Some((_, first)), Some((_, last))) = (sig.samples.first(), sig.samples.last()) {
            let total = (last.ok - first.ok) + (last.errors - first.errors);
            if total > 0.0 {
                ctx.metric("error_ratio", (last.errors - first.errors) / total);
            }
            ctx.metric("breaker_trips", last.overflows - first.overflows);
        }
        let mut worst = ctx.metrics.get("max_recovery_ms").map(|m| m.value);
        for (i, (fault, inj)) in self.load.faults.iter().zip(injected).enumerate() {
            if !is_upstream(fault.kind) {
                continue;
            }
            let key = |m: &str| metrics::step_name("fault", i as u64, m);
            let recovery = signal_recovery_s(&sig.samples, inj.end_s, SUSTAIN_INTERVALS);
            let until = recovery.map_or(load_end_s, |r| inj.end_s + r + 0.1);
            if let Some(d) = sig.delta(inj.start_s, until) {
                let total = d.ok + d.errors;
                if total > 0.0 {
                    ctx.metric(&key("error_ratio"), d.errors / total);
                }
                ctx.metric(&key("ejections"), d.ejections);
                ctx.metric(&key("breaker_trips"), d.overflows);
            }
            let removed = sig
                .samples
                .iter()
                .filter(|(t, _)| (inj.start_s..=until).contains(t))
                .any(|(_, s)| s.faulted_healthy == Some(false));
            ctx.metric(&key("health_check_removed"), f64::from(u8::from(removed)));
            match recovery {
                Some(r) => {
                    ctx.metric(&key("signal_recovery_ms"), r * 1000.0);
                    worst = worst.map(|w| w.max(r * 1000.0));
                }
                None => {
                    worst = None;
                    ctx.note(format!(
                        "fault[{i}] ({}): requests through the lane did not all succeed again, with the endpoint readmitted, before the load ended; no signal_recovery_ms",
                        kind_name(fault.kind)
                    ));
                }
            }
        }
        match worst {
            Some(w) => ctx.metric("max_recovery_ms", w),
            None => {
                ctx.metrics.remove("max_recovery_ms");
            }
        }
    }

    /// Acknowledged session versions that the restarted daemon or the appliance no longer has
    /// (each one named in a note).
    fn acked_lost(
        &self,
        ctx: &mut RunContext,
        c: &Control,
        before: &AckedBefore,
        appliance: Option<&crate::dataplane::Appliance>,
    ) -> anyhow::Result<u64> {
        let daemon = c.sessions()?;
        let flows = match appliance {
            Some(a) => Some(appliance_flows(a.admin)?),
            None => None,
        };
        let mut lost = Vec::new();
        for (name, version) in &before.sessions {
            match daemon.get(name) {
                Some(v) if v >= version => {}
                Some(v) => lost.push(format!("{name}: daemon has version {v}, was {version}")),
                None => lost.push(format!("{name} (version {version}): gone from the daemon")),
            }
            if flows.as_ref().is_some_and(|f| !f.contains(name)) {
                lost.push(format!("{name}: not on the appliance's /flows"));
            }
        }
        if !lost.is_empty() {
            ctx.note(format!(
                "restart-ctrld lost acknowledged configuration: {}",
                lost.join("; ")
            ));
        }
        Ok(lost.len() as u64)
    }

    #[allow(clippy::too_many_arguments)]
    fn analyse(
        &self,
        ctx: &mut RunContext,
        sink: &SinkJson,
        relay: &ImpairJson,
        injected: &[Injected],
        t0_ns: u64,
        t0_s: f64,
        sent: u64,
    ) -> anyhow::Result<()> {
        let duration = ctx.scenario.load.duration_s;
        let load_end_s = t0_s + duration;
        let intervals = sink.interval_packets.as_ref().ok_or_else(|| {
            anyhow!("the sink wrote no interval_packets; is popmesh-rtp older than popmesh-perf? rebuild both")
        })?;
        let interval_s = f64::from(intervals.interval_ms) / 1000.0;
        let timeline = Timeline {
            counts: &intervals.counts,
            origin_s: ctx.mono_to_s(sink.start_monotonic_ns),
            interval_s,
        };
        let nominal_pps = self.load.nominal_pps();
        let nominal = nominal_pps * interval_s;
        ctx.series(
            "pps.stability.viewers",
            "pps",
            intervals
                .counts
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    [
                        timeline.origin_s + (i as f64 + 0.5) * interval_s,
                        n as f64 / interval_s,
                    ]
                })
                .collect(),
        );
        ctx.series(
            "loss_ratio.stability.viewers",
            "ratio",
            intervals
                .counts
                .iter()
                .enumerate()
                .map(|(i, &n)| (i, timeline.origin_s + i as f64 * interval_s, n))
                .filter(|(_, start, _)| *start >= t0_s && *start + interval_s <= load_end_s)
                .map(|(_, start, n)| {
                    [
                        start + interval_s / 2.0,
                        (1.0 - n as f64 / nominal).max(0.0),
                    ]
                })
                .collect(),
        );

        // Baseline: whole intervals from 1 s after T0 to the first fault (the interval the fault
        // starts in already shows it).
        let baseline_end = timeline.floor_s(injected.first().map_or(load_end_s, |f| f.start_s));
        let baseline_start = timeline.ceil_s(t0_s + BASELINE_SKIP_S);
        let mut reference = nominal;
        if baseline_end - baseline_start >= 1.0 {
            let got = timeline.received_between(baseline_start, baseline_end);
            let span = baseline_end - baseline_start;
            ctx.metric("delivered_pps", got / span);
            ctx.metric(
                "baseline_loss_ratio",
                (1.0 - got / (nominal_pps * span)).max(0.0),
            );
            if let Some(median) = timeline.median_between(baseline_start, baseline_end) {
                if median < nominal * self.load.recovered_percent / 100.0 {
                    ctx.note(format!(
                        "stability: before the first fault the viewers got a median {median:.0} packets per {} ms, below {:.0}% of the nominal {nominal:.0}; recovery is judged against that median instead (the load generators share CPU {})",
                        intervals.interval_ms,
                        self.load.recovered_percent,
                        self.lab.lab.load_core
                    ));
                    reference = median;
                }
            }
        } else {
            ctx.note("stability: less than 1 s before the first fault; no baseline figures (start the first fault later)");
        }
        let threshold = reference * self.load.recovered_percent / 100.0;

        // Stalls over the load.
        let window = Window {
            start_ns: t0_ns,
            end_ns: t0_ns + (duration * 1e9) as u64,
        };
        let viewers: Vec<(StallRecord, Window)> = sink
            .listeners
            .iter()
            .filter_map(|l| l.stalls.clone().map(|s| (s, window)))
            .collect();
        let stalls = stall::timeline(
            "stability",
            &viewers,
            f64::from(self.load.stall_gap_ms),
            ctx.origin_mono_ns(),
            MAX_TIMELINE_EVENTS,
        );
        ctx.metric("stalls_total", stalls.stalls as f64);
        ctx.metric("stall_rate_per_viewer_min", stalls.rate_per_viewer_min());
        let received = sink.total.probes.saturating_sub(sink.total.duplicates);
        if sent > 0 {
            ctx.metric(
                "loss_ratio",
                sent.saturating_sub(received) as f64 / sent as f64,
            );
        }

        let mut max_recovery: Option<f64> = Some(0.0);
        for (i, (fault, inj)) in self.load.faults.iter().zip(injected).enumerate() {
            let key = |m: &str| metrics::step_name("fault", i as u64, m);
            ctx.faults.push(FaultWindow {
                name: format!("fault[{i}]"),
                kind: kind_name(fault.kind).to_string(),
                start_s: inj.start_s,
                end_s: inj.end_s,
            });
            let recovery = timeline.recovery_s(inj.end_s, threshold, SUSTAIN_INTERVALS, load_end_s);
            let settle_s =
                f64::from(fault.delay_ms.unwrap_or(0) + fault.jitter_ms.unwrap_or(0)) / 1000.0;
            let span_end = match recovery {
                Some(r) => (inj.end_s + settle_s.max(r) + interval_s).min(load_end_s),
                None => load_end_s,
            };
            match recovery {
                Some(r) => {
                    ctx.metric(&key("recovery_ms"), r * 1000.0);
                    if let Some(m) = max_recovery.as_mut() {
                        *m = m.max(r * 1000.0);
                    }
                }
                None => {
                    max_recovery = None;
                    ctx.note(format!(
                        "fault[{i}] ({}): the viewers did not get back to {:.0}% of the nominal rate for {SUSTAIN_INTERVALS} intervals in a row before the load ended ({:.1} s after the fault); no recovery_ms",
                        kind_name(fault.kind),
                        self.load.recovered_percent,
                        load_end_s - inj.end_s
                    ));
                }
            }
            // Whole intervals: the one a fault starts in is part fault, part not, and received
            // and expected grow alike over the part that is not.
            let span_start = timeline.floor_s(inj.start_s).max(t0_s);
            let span_end = timeline.ceil_s(span_end).min(load_end_s);
            let expected = nominal_pps * (span_end - span_start);
            if expected > 0.0 {
                let got = timeline.received_between(span_start, span_end);
                let lost = (expected - got).max(0.0);
                ctx.metric(&key("lost_packets"), lost.round());
                ctx.metric(&key("loss_ratio"), lost / expected);
            }
            let (n, s) = stalls_between(&stalls, inj.start_s, span_end);
            ctx.metric(&key("stalls"), n as f64);
            ctx.metric(&key("stalled_s"), s);
            if let Some(w) = inj.relay_window.and_then(|w| relay.windows.get(w)) {
                ctx.metric(&key("relay_dropped"), (w.dropped + w.queue_full) as f64);
                ctx.metric(&key("relay_delayed"), w.delayed as f64);
            }
            if let Some(ms) = inj.restart_ms {
                ctx.metric(&key("restart_ms"), ms);
            }
            if let Some(n) = inj.acked_lost {
                ctx.metric(&key("acked_lost"), n as f64);
            }
            if let Some(ms) = inj.resync_ms {
                ctx.metric(&key("resync_ms"), ms);
            }
            if let Some(n) = inj.churned {
                ctx.metric(&key("sessions_churned"), n as f64);
            }
            if let Some(ms) = inj.churn_ack_ms {
                ctx.metric(&key("churn_ack_ms"), ms);
            }
            if let Some(n) = inj.churn_rejected {
                ctx.metric(&key("churn_rejected"), n);
            }
        }
        if let Some(m) = max_recovery.filter(|_| !self.load.faults.is_empty()) {
            ctx.metric("max_recovery_ms", m);
        }
        ctx.stalls.push(stalls);
        Ok(())
    }
}

/// One line on the join load: users joined of attempted, and why the others did not (a
/// restart-appliance fault restarts the signaling lane too: its WebSockets close and arrivals
/// are refused while it is down).
fn users_note(summary: &serde_json::Value) -> String {
    let n = |k: &str| {
        summary
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let failed = summary
        .get("failed")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().filter(|&v| v > 0).map(|v| format!("{k} {v}")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!(
        "signaling load: {} of {} users joined through the lane; not joined or cut off: {} (a restart-appliance fault restarts the signaling lane with it: its WebSockets close and arrivals are refused while it is down)",
        n("joined"),
        n("attempted"),
        if failed.is_empty() { "none".to_string() } else { failed }
    )
}

/// Whether a fault acts on the room service behind the signaling lane.
pub fn is_upstream(kind: FaultKind) -> bool {
    matches!(kind, FaultKind::KillUpstream | FaultKind::FailUpstream)
}

/// The name of a fault kind as written in scenarios.
pub fn kind_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Jitter => "jitter",
        FaultKind::Loss => "loss",
        FaultKind::KillUpstream => "kill-upstream",
        FaultKind::FailUpstream => "fail-upstream",
        FaultKind::RestartAppliance => "restart-appliance",
        FaultKind::RestartCtrld => "restart-ctrld",
        FaultKind::FlowChurn => "flow-churn",
    }
}

/// Waits until a spawned relay printed its `listening` lines.
fn wait_listening(ctx: &RunContext, child: &mut ChildGuard, n: usize) -> anyhow::Result<()> {
    let log = ctx
        .out_dir()
        .join("logs")
        .join(format!("{}.log", child.name));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("listening ").count() >= n {
            return Ok(());
        }
        if let Some(status) = child.try_wait() {
            bail!("{} exited at start ({status}): {}", child.name, text.trim());
        }
        if Instant::now() > deadline {
            bail!("{} did not bind its {n} sockets within 10 s", child.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn add_cdf(ctx: &mut RunContext, path: &Path, offset_s: f64) -> anyhow::Result<()> {
    let log = crate::hlog::LatencyLog::read(path)?;
    ctx.series("latency_p99.stability", "us", log.p99_series(offset_s));
    let rel = path
        .strip_prefix(ctx.out_dir())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string());
    ctx.cdfs.push(crate::report::Cdf {
        name: "stability".to_string(),
        samples: log.total.len(),
        points: crate::hlog::cdf_points(&log.total, 200),
        hlog: Some(rel),
    });
    Ok(())
}

/// A fault's one-line description.
pub fn describe(f: &Fault) -> String {
    let mut s = format!(
        "{} at {} s for {} s",
        kind_name(f.kind),
        f.at_s,
        f.duration_s
    );
    if let Some(d) = f.delay_ms {
        let _ = write!(s, ", delay {d} ms");
    }
    if let Some(j) = f.jitter_ms {
        let _ = write!(s, " +- {j} ms");
    }
    if let Some(l) = f.loss_percent {
        let _ = write!(s, ", loss {l}%");
    }
    if let Some(r) = f.rate {
        let _ = write!(s, ", {r} sessions/s");
    }
    s
}

// ---- control-plane faults --------------------------------------------------------------------

/// Whether a scenario's faults need popmesh-ctrld in the lab.
pub fn needs_ctrld(load: &StabilityLoad) -> bool {
    load.faults.iter().any(|f| {
        matches!(
            f.kind,
            FaultKind::RestartCtrld
                | FaultKind::FlowChurn
                | FaultKind::KillUpstream
                | FaultKind::FailUpstream
        )
    })
}

/// popmesh-ctrld in a stability lab: the media sessions come from it, and its faults act on it.
struct Control {
    ctrld: Ctrld,
    bin: PathBuf,
    svid: Svid,
    load_core: usize,
    restarts: u32,
    /// The wildcard-bound port churned sessions listen on (one loopback IP each).
    churn_port: u16,
    /// Where churned sessions would send (nothing listens; nothing is sent to them).
    churn_sub: SocketAddr,
    /// With a kill-upstream fault: the room service and its load.
    signal: Option<Signal>,
}

/// What the daemon and the appliance had acknowledged when the daemon was killed.
#[derive(Debug, Clone, Default)]
struct AckedBefore {
    acked_version: u64,
    /// Session name -> version, every session at or below the acknowledged version.
    sessions: std::collections::BTreeMap<String, u64>,
}

/// A flow-churn fault in progress.
#[derive(Debug)]
struct Churn {
    fault: usize,
    rate: u32,
    started: Instant,
    created: u64,
    next: u64,
    live: Vec<String>,
    last_version: u64,
}

impl Control {
    fn start(ctx: &RunContext, lab: &Lab, signaling: bool) -> anyhow::Result<Self> {
        let dir = ctx.out_dir().join("ctrl");
        let ctrld = Ctrld::start(ctx, &dir, TRUST_DOMAIN, Some(lab.lab.load_core))?;
        let svid = ctrld.issue_svid(SvidKind::Appliance, "", APPLIANCE, &dir.join("appliance"))?;
        let signal = if signaling {
            Some(Signal::start(ctx, &ctrld, lab.lab.load_core)?)
        } else {
            None
        };
        Ok(Self {
            signal,
            bin: ctx.binary("popmesh-ctrld")?,
            ctrld,
            svid,
            load_core: lab.lab.load_core,
            restarts: 0,
            churn_port: lab.port(OFFSET_CHURN),
            churn_sub: loopback(lab.port(OFFSET_CHURN + 1)),
        })
    }

    /// The appliance config's `[control]` table and the churn port.
    fn config_tail(&self, state: &Path) -> String {
        format!(
            "[[media.ports]]\nname = \"churn\"\nbind = \"0.0.0.0:{churn}\"\n\n\
             [control]\nendpoint = \"https://127.0.0.1:{grpc}\"\nserver_name = \"localhost\"\n\
             appliance = \"{APPLIANCE}\"\ncert = \"{cert}\"\nkey = \"{key}\"\nca = \"{ca}\"\n\
             state_dir = \"{state}\"\nbackoff_min = \"50ms\"\nbackoff_max = \"400ms\"\n\
             stats_interval = \"1s\"\n",
            churn = self.churn_port,
            grpc = self.ctrld.grpc.port(),
            cert = self.svid.cert.display(),
            key = self.svid.key.display(),
            ca = self.svid.ca.display(),
            state = state.display(),
        )
    }

    fn batch(&self, upserts: Vec<pb::Session>, removes: Vec<String>) -> anyhow::Result<u64> {
        let (n_up, n_rm) = (upserts.len(), removes.len());
        Ok(self
            .ctrld
            .block_on(
                SessionServiceClient::new(self.ctrld.channel())
                    .batch_sessions(pb::BatchSessionsRequest { upserts, removes }),
            )
            .map_err(|s| anyhow!("BatchSessions ({n_up} upserts, {n_rm} removes): {s}"))?
            .into_inner()
            .version)
    }

    fn sessions(&self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let mut out = std::collections::BTreeMap::new();
        let mut token = String::new();
        // Bounded: at most 1000 pages of 10000.
        for _ in 0..1000 {
            let reply = self
                .ctrld
                .block_on(
                    SessionServiceClient::new(self.ctrld.channel()).list_sessions(
                        pb::ListSessionsRequest {
                            appliance: APPLIANCE.to_string(),
                            page_size: 10_000,
                            page_token: token.clone(),
                            ..Default::default()
                        },
                    ),
                )
                .map_err(|s| anyhow!("ListSessions: {s}"))?
                .into_inner();
            for s in reply.sessions {
                out.insert(s.name, s.version);
            }
            if reply.next_page_token.is_empty() {
                return Ok(out);
            }
            token = reply.next_page_token;
        }
        bail!("ListSessions did not end after 1000 pages")
    }

    fn acked_before(&self) -> anyhow::Result<AckedBefore> {
        let acked_version = self.ctrld.appliance_status(APPLIANCE)?.acked_version;
        let sessions = self
            .sessions()?
            .into_iter()
            .filter(|(_, v)| *v <= acked_version)
            .collect();
        Ok(AckedBefore {
            acked_version,
            sessions,
        })
    }

    fn kill9(&mut self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.ctrld.child.pid()).context("popmesh-ctrld's pid")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .context("SIGKILL popmesh-ctrld")?;
        self.ctrld
            .child
            .wait_for(Duration::from_secs(5))
            .context("popmesh-ctrld after SIGKILL")?;
        Ok(())
    }

    /// `serve` again on the same state directory and ports; returns when it listens.
    fn respawn(&mut self, ctx: &RunContext) -> anyhow::Result<()> {
        self.restarts += 1;
        let name = format!("ctrld-restart{}", self.restarts);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .args(["--listen", &self.ctrld.grpc.to_string()])
            .args(["--metrics-listen", &self.ctrld.metrics.to_string()])
            .arg("--state-dir")
            .arg(&self.ctrld.state_dir)
            .env("RUST_LOG", "warn");
        let mut child = ctx.spawn(&name, cmd, Some(self.load_core))?;
        let log = ctx.out_dir().join("logs").join(format!("{name}.log"));
        wait_for_line(
            ctx,
            &mut child,
            &log,
            "listening grpc=",
            Duration::from_secs(30),
        )?;
        self.ctrld.child = child;
        Ok(())
    }

    /// Waits until the appliance is connected to the (restarted) daemon again and has
    /// acknowledged at least `version`: the daemon may remember the old acknowledgement, so
    /// `acked_version` alone would say "done" before the agent is back.
    fn until_resynced(
        &self,
        ctx: &RunContext,
        version: u64,
        within: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let status = self.ctrld.appliance_status(APPLIANCE);
            if let Ok(s) = &status {
                if s.connected && s.acked_version >= version {
                    return Ok(());
                }
            }
            if ctx.interrupted() {
                bail!("interrupted while waiting for the appliance to reconnect to popmesh-ctrld");
            }
            if started.elapsed() > within {
                bail!(
                    "the appliance did not reconnect to the restarted popmesh-ctrld and acknowledge version {version} within {:.0} s; last status: {status:?}",
                    within.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn churn_session(&self, k: u64) -> pb::Session {
        let ingress = crate::dataplane::flow_ingress(k, self.churn_port);
        pb::Session {
            name: format!("churn-{k}"),
            appliance: APPLIANCE.to_string(),
            ingress: Some(endpoint(ingress)),
            subscribers: vec![pb::Subscriber {
                endpoint: Some(endpoint(self.churn_sub)),
                egress_port: String::new(),
            }],
            ..Default::default()
        }
    }

    /// One churn step: creates the sessions due by now and removes the previous step's.
    fn churn_tick(&self, c: &mut Churn) -> anyhow::Result<()> {
        let due = (c.started.elapsed().as_secs_f64() * f64::from(c.rate)) as u64;
        if due <= c.created {
            return Ok(());
        }
        let upserts: Vec<pb::Session> = (c.next..c.next + (due - c.created))
            .map(|k| self.churn_session(k))
            .collect();
        let names: Vec<String> = upserts.iter().map(|s| s.name.clone()).collect();
        let removes = std::mem::replace(&mut c.live, names);
        c.next += due - c.created;
        c.created = due;
        c.last_version = self.batch(upserts, removes)?;
        Ok(())
    }
}

fn endpoint(a: SocketAddr) -> pb::Endpoint {
    pb::Endpoint {
        address: a.ip().to_string(),
        port: u32::from(a.port()),
    }
}

/// Config versions the appliance's agent refused so far (`popmesh_agent_rejected`).
fn agent_rejected(a: &crate::dataplane::Appliance) -> f64 {
    http_get(a.admin, "/metrics")
        .map(|t| crate::dataplane::metric_sum(&t, "popmesh_agent_rejected_total"))
        .unwrap_or(0.0)
}

/// Sessions the appliance shows on `/flows` (names).
fn appliance_flows(admin: SocketAddr) -> anyhow::Result<std::collections::BTreeSet<String>> {
    #[derive(Deserialize)]
    struct Flows {
        flows: Vec<FlowName>,
    }
    #[derive(Deserialize)]
    struct FlowName {
        session: String,
    }
    let text = http_get(admin, "/flows?limit=1000000")?;
    let flows: Flows = serde_json::from_str(&text).context("parse the appliance's /flows")?;
    Ok(flows.flows.into_iter().map(|f| f.session).collect())
}

/// Waits until the appliance's agent is connected to the daemon.
fn until_connected(ctx: &RunContext, admin: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(text) = http_get(admin, "/metrics") {
            if crate::dataplane::metric_sum(&text, "popmesh_agent_connected") >= 1.0 {
                return Ok(());
            }
        }
        if ctx.interrupted() {
            bail!("interrupted while waiting for the appliance's agent");
        }
        if started.elapsed() > within {
            bail!(
                "the appliance's agent did not connect to popmesh-ctrld within {:.0} s; see {}/logs/",
                within.as_secs_f64(),
                ctx.out_dir().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- signaling faults ------------------------------------------------------------------------

/// The signaling part of a stability lab: two room-service endpoints behind the appliance's
/// inbound listener, a steady join load, and the lane's counters sampled every 100 ms.
struct Signal {
    rooms_bin: PathBuf,
    rooms_svid: Svid,
    user_svid: Svid,
    /// The service's two endpoints; the faults act on the second.
    endpoints: [SocketAddr; 2],
    servers: [Option<ChildGuard>; 2],
    inbound: SocketAddr,
    load_core: usize,
    restarts: u32,
    users: Option<(ChildGuard, PathBuf)>,
    /// (run seconds, lane counters).
    samples: Vec<(f64, LaneSample)>,
}

/// The lane's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LaneSample {
    /// Requests answered 2xx.
    pub ok: f64,
    /// Requests answered 4xx or 5xx.
    pub errors: f64,
    /// Outlier ejections.
    pub ejections: f64,
    /// Requests refused by a circuit-breaker limit.
    pub overflows: f64,
    /// Whether the faulted endpoint passes its health checks (`None`: no such series yet).
    pub faulted_healthy: Option<bool>,
}

impl LaneSample {
    /// Reads the lane's series from `/metrics` text; `faulted` is the endpoint the faults act on.
    pub fn parse(text: &str, faulted: &str) -> Self {
        let mut s = Self::default();
        let needle = format!("endpoint=\"{faulted}\"");
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            if series.starts_with("popmesh_signal_requests_total{")
                || series.starts_with("popmesh_signal_requests{")
            {
                if series.contains("class=\"2xx\"") {
                    s.ok += v;
                } else if series.contains("class=\"4xx\"") || series.contains("class=\"5xx\"") {
                    s.errors += v;
                }
            } else if series.starts_with("popmesh_signal_ejections")
                && !series.starts_with("popmesh_signal_ejections_created")
            {
                s.ejections += v;
            } else if series.starts_with("popmesh_signal_overflows")
                && !series.starts_with("popmesh_signal_overflows_created")
            {
                s.overflows += v;
            } else if series.starts_with("popmesh_signal_endpoint_healthy{")
                && series.contains(&needle)
            {
                s.faulted_healthy = Some(v >= 1.0);
            }
        }
        s
    }
}

/// Time from `end_s` until the lane is back for a faulted endpoint: the first sample at or after
/// `end_s` from which no request fails for `sustain` samples in a row and the endpoint passes its
/// health checks again (when the lane reports them); `None` if that never happens.
pub fn signal_recovery_s(samples: &[(f64, LaneSample)], end_s: f64, sustain: usize) -> Option<f64> {
    let sustain = sustain.max(1);
    let after: Vec<&(f64, LaneSample)> = samples.iter().filter(|(t, _)| *t >= end_s).collect();
    for (k, (t, s)) in after.iter().enumerate() {
        if s.faulted_healthy == Some(false) {
            continue;
        }
        let window = after.get(k..k + sustain + 1)?;
        let clean = window.windows(2).all(|w| w[1].1.errors <= w[0].1.errors);
        let healthy = window.iter().all(|(_, s)| s.faulted_healthy != Some(false));
        if clean && healthy {
            return Some((t - end_s).max(0.0));
        }
    }
    None
}

impl Signal {
    fn start(ctx: &RunContext, ctrld: &Ctrld, load_core: usize) -> anyhow::Result<Self> {
        let ids = ctx.out_dir().join("ctrl").join("identities");
        let rooms_svid = ctrld.issue_svid(SvidKind::Service, "rooms", "rooms", &ids)?;
        let user_svid = ctrld.issue_svid(SvidKind::Service, "user", "viewer", &ids)?;
        let mut s = Self {
            rooms_bin: ctx.binary("popmesh-rooms")?,
            rooms_svid,
            user_svid,
            endpoints: [crate::lab::free_tcp()?, crate::lab::free_tcp()?],
            servers: [None, None],
            inbound: crate::lab::free_tcp()?,
            load_core,
            restarts: 0,
            users: None,
            samples: Vec::new(),
        };
        for k in 0..2 {
            s.spawn_server(ctx, k, &format!("rooms-{k}"))?;
        }
        Ok(s)
    }

    fn tls(&self, cmd: &mut Command, svid: &Svid) {
        cmd.arg("--cert")
            .arg(&svid.cert)
            .arg("--key")
            .arg(&svid.key)
            .arg("--ca")
            .arg(&svid.ca)
            .args(["--trust-domain", TRUST_DOMAIN]);
    }

    fn spawn_server(&mut self, ctx: &RunContext, k: usize, name: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.rooms_bin);
        cmd.arg("serve")
            .args(["--listen", &self.endpoints[k].to_string()])
            .args(["--core", &self.load_core.to_string()])
            .args(["--max-runtime", "3700"]);
        self.tls(&mut cmd, &self.rooms_svid);
        let mut child = ctx.spawn(name, cmd, Some(self.load_core))?;
        let log = ctx.out_dir().join("logs").join(format!("{name}.log"));
        wait_for_line(ctx, &mut child, &log, "listening ", Duration::from_secs(20))?;
        self.servers[k] = Some(child);
        Ok(())
    }

    /// The appliance config's signaling part. The lane takes `load_core`; the appliance's
    /// housekeeping threads then may not (the two lanes share no CPU), so the caller drops the
    /// `[housekeeping]` table.
    fn config_tail(&self) -> String {
        format!(
            "[signaling]\ncores = [{core}]\naccess_log = false\n\n\
             [[signaling.listeners]]\nname = \"inbound\"\nbind = \"{inbound}\"\ndirection = \"inbound\"\nmax_connections = 100000\n\n",
            core = self.load_core,
            inbound = self.inbound
        )
    }

    /// The operator's mesh: service `rooms` on both endpoints with outlier detection, health
    /// checks and a circuit breaker; route `/rooms`; users may call it. Returns the version.
    fn program(&self, ctrld: &Ctrld) -> anyhow::Result<u64> {
        ctrld.put_service(pb::Service {
            name: "rooms".into(),
            groups: vec![pb::EndpointGroup {
                version: "v1".into(),
                endpoints: self.endpoints.iter().map(ToString::to_string).collect(),
            }],
            default_version: "v1".into(),
            timeout_ms: 5_000,
            // An idempotent request that meets a dead endpoint is tried once more elsewhere (a
            // join is a POST: the lane does not retry it, outlier ejection has to do).
            retry: Some(pb::RetryPolicy {
                attempts: 1,
                per_try_timeout_ms: 0,
                retry_on: vec![
                    "connect-failure".into(),
                    "reset".into(),
                    "gateway-error".into(),
                ],
            }),
            outlier: Some(pb::OutlierDetection {
                consecutive_errors: 3,
                interval_ms: 500,
                base_ejection_ms: 1_000,
                max_ejection_percent: 50,
            }),
            health_check: Some(pb::HealthCheck {
                interval_ms: 500,
                path: String::new(),
                timeout_ms: 400,
                unhealthy_threshold: 2,
                healthy_threshold: 1,
            }),
            circuit_breaker: Some(pb::CircuitBreaker {
                // Every user holds its WebSocket, an open request, until the load ends: the
                // limits sit well above the users of a run so a trip means something.
                max_connections: 100_000,
                max_pending_requests: 10_000,
                max_requests: 100_000,
                max_retries: 100,
            }),
            ..Default::default()
        })?;
        ctrld.put_route(pb::Route {
            name: "rooms".into(),
            host: "*".into(),
            path_prefix: "/rooms".into(),
            service: "rooms".into(),
            ..Default::default()
        })?;
        ctrld.put_policy(pb::Policy {
            name: "users-enter-rooms".into(),
            sources: vec![format!("spiffe://{TRUST_DOMAIN}/ns/user/sa/*")],
            destination: "rooms".into(),
            action: pb::PolicyAction::Allow as i32,
            ..Default::default()
        })
    }

    /// Starts the join load: `rate` users per second for `duration_s`, each joining once through
    /// the lane (and holding its WebSocket).
    fn start_users(
        &mut self,
        ctx: &RunContext,
        raw: &Path,
        rate: u32,
        duration_s: f64,
    ) -> anyhow::Result<()> {
        let json = raw.join("stability-users.json");
        let users = (f64::from(rate) * duration_s).ceil().max(1.0) as u64;
        let mut cmd = Command::new(&self.rooms_bin);
        cmd.arg("users")
            .args(["--target", &self.inbound.to_string()])
            .args(["--users", &users.to_string()])
            .args(["--rooms", "100"])
            .args(["--rate", &rate.to_string()])
            .args(["--duration", &format!("{duration_s:.3}")])
            .args(["--hold", "1"])
            .args(["--timeout", "5"])
            .args(["--core", &self.load_core.to_string()])
            .arg("--json")
            .arg(&json);
        self.tls(&mut cmd, &self.user_svid);
        let child = ctx.spawn("stability-users", cmd, Some(self.load_core))?;
        self.users = Some((child, json));
        Ok(())
    }

    fn sample(&mut self, ctx: &RunContext, admin: Option<SocketAddr>) {
        let Some(admin) = admin else {
            return;
        };
        if let Ok(text) = http_get(admin, "/metrics") {
            let s = LaneSample::parse(&text, &self.endpoints[1].to_string());
            self.samples.push((ctx.elapsed_s(), s));
        }
    }

    fn kill_endpoint(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.servers[1].take() {
            let pid = i32::try_from(child.pid()).context("popmesh-rooms' pid")?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .context("SIGKILL the room-service endpoint")?;
            child.wait_for(Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// SIGUSR1 to the faulted endpoint: popmesh-rooms toggles answering joins 503.
    fn toggle_failing(&mut self) -> anyhow::Result<()> {
        let child = self.servers[1]
            .as_ref()
            .ok_or_else(|| anyhow!("the faulted room-service endpoint is not running"))?;
        let pid = i32::try_from(child.pid()).context("popmesh-rooms' pid")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .context("SIGUSR1 to the room-service endpoint")
    }

    fn restart_endpoint(&mut self, ctx: &RunContext) -> anyhow::Result<()> {
        self.restarts += 1;
        let name = format!("rooms-1-restart{}", self.restarts);
        self.spawn_server(ctx, 1, &name)
    }

    /// The lane's counters between two run times (the last sample at or before each).
    fn delta(&self, from_s: f64, to_s: f64) -> Option<LaneSample> {
        let at = |t: f64| {
            self.samples
                .iter()
                .rev()
                .find(|(st, _)| *st <= t)
                .or(self.samples.first())
                .map(|(_, s)| *s)
        };
        let (a, b) = (at(from_s)?, at(to_s)?);
        Some(LaneSample {
            ok: b.ok - a.ok,
            errors: b.errors - a.errors,
            ejections: b.ejections - a.ejections,
            overflows: b.overflows - a.overflows,
            faulted_healthy: b.faulted_healthy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(counts: &[u64]) -> Timeline<'_> {
        Timeline {
            counts,
            origin_s: 10.0,
            interval_s: 0.1,
        }
    }

    #[test]
    fn recovery_counts_from_the_fault_end_to_a_sustained_run() {
        // 30 per interval nominal; silent from 11.0 to 11.5, a lone good interval at 11.6.
        let mut c = vec![30u64; 40];
        for n in &mut c[10..15] {
            *n = 0;
        }
        c[15] = 10;
        c[17] = 5;
        let t = tl(&c);
        // Fault ended at 11.2: first sustained run starts at 11.8 (interval 18).
        let r = t.recovery_s(11.2, 28.5, 3, 14.0).expect("recovers");
        assert!((r - 0.6).abs() < 1e-9, "{r}");
        // Already at the nominal rate: 0.
        assert_eq!(t.recovery_s(12.5, 28.5, 3, 14.0), Some(0.0));
        // The load ends before a run of three fits.
        assert_eq!(t.recovery_s(11.2, 28.5, 3, 11.95), None);
        // A fault that ended before the data starts recovers when the data does.
        assert_eq!(t.recovery_s(5.0, 28.5, 3, 14.0), Some(5.0));
    }

    #[test]
    fn received_between_prorates_edge_intervals() {
        let c = [10u64, 20, 30];
        let t = tl(&c);
        assert!((t.received_between(10.0, 10.3) - 60.0).abs() < 1e-9);
        assert!((t.received_between(10.05, 10.15) - 15.0).abs() < 1e-9);
        assert_eq!(t.received_between(11.0, 12.0), 0.0);
        assert_eq!(t.received_between(10.2, 10.1), 0.0);
        assert_eq!(t.median_between(10.0, 10.3), Some(20.0));
        assert_eq!(t.median_between(10.0, 10.2), Some(15.0));
        assert_eq!(t.median_between(20.0, 30.0), None);
    }

    #[test]
    fn relay_faults_become_schedule_windows() {
        let text = "[scenario]\nname = \"s\"\nkind = \"stability\"\n[target]\nmode = \"local-lab\"\n[load]\nduration = 20\n\
            [[load.stability.faults]]\nkind = \"jitter\"\nat = 2\nduration = 2\ndelay_ms = 40\njitter_ms = 10\n\
            [[load.stability.faults]]\nkind = \"restart-appliance\"\nat = 5\nduration = 1\n\
            [[load.stability.faults]]\nkind = \"loss\"\nat = 8\nduration = 1.5\nloss_percent = 5\n";
        let s = Scenario::from_toml(text).expect("parses");
        let load = s.stability().cloned().expect("stability");
        let lab = crate::scenario::LocalLab::default();
        let fake = Lab::for_tests(lab);
        let run = Run::new(&fake, PathBuf::new(), load);
        let (schedule, index) = run.schedule();
        assert_eq!(index, [Some(0), None, Some(1)]);
        let parsed = popmesh_perf::impair::Schedule::parse(&schedule).expect("relay accepts it");
        assert_eq!(parsed.windows.len(), 2);
        assert_eq!(
            (parsed.windows[0].from_s, parsed.windows[0].to_s),
            (2.0, 4.0)
        );
        assert_eq!(parsed.windows[1].loss_percent, 5.0);
        assert_eq!(
            describe(&s.stability().expect("s").faults[0]),
            "jitter at 2 s for 2 s, delay 40 ms +- 10 ms"
        );
    }

    #[test]
    fn lane_samples_add_up_the_lanes_series() {
        let text = "# HELP popmesh_signal_requests x\n\
            popmesh_signal_requests_total{listener=\"inbound\",class=\"2xx\"} 10\n\
            popmesh_signal_requests_total{listener=\"inbound\",class=\"5xx\"} 2\n\
            popmesh_signal_requests_total{listener=\"inbound\",class=\"4xx\"} 1\n\
            popmesh_signal_requests_total{listener=\"inbound\",class=\"1xx\"} 7\n\
            popmesh_signal_ejections_total{service=\"rooms\",endpoint=\"127.0.0.1:2\"} 1\n\
            popmesh_signal_overflows_total{service=\"rooms\",limit=\"requests\"} 4\n\
            popmesh_signal_endpoint_healthy{service=\"rooms\",version=\"v1\",endpoint=\"127.0.0.1:1\"} 1\n\
            popmesh_signal_endpoint_healthy{service=\"rooms\",version=\"v1\",endpoint=\"127.0.0.1:2\"} 0\n";
        let s = LaneSample::parse(text, "127.0.0.1:2");
        assert_eq!(
            (s.ok, s.errors, s.ejections, s.overflows),
            (10.0, 3.0, 1.0, 4.0)
        );
        assert_eq!(s.faulted_healthy, Some(false));
        assert_eq!(LaneSample::parse(text, "127.0.0.1:9").faulted_healthy, None);
    }

    #[test]
    fn signal_recovery_waits_for_no_errors_and_readmission() {
        let s = |t: f64, errors: f64, healthy: Option<bool>| {
            (
                t,
                LaneSample {
                    ok: t * 10.0,
                    errors,
                    faulted_healthy: healthy,
                    ..LaneSample::default()
                },
            )
        };
        let samples = vec![
            s(1.0, 0.0, Some(true)),
            s(2.0, 5.0, Some(false)),
            s(2.1, 8.0, Some(false)),
            s(2.2, 8.0, Some(false)),
            s(2.3, 9.0, Some(true)),
            s(2.4, 9.0, Some(true)),
            s(2.5, 9.0, Some(true)),
            s(2.6, 9.0, Some(true)),
            s(2.7, 9.0, Some(true)),
        ];
        // The endpoint came back at 2.05: readmitted by 2.3, no error after 2.3.
        let r = signal_recovery_s(&samples, 2.05, 3).expect("recovers");
        assert!((r - 0.25).abs() < 1e-9, "{r}");
        // Not enough samples after the end to see three clean steps.
        assert_eq!(signal_recovery_s(&samples, 2.55, 3), None);
        // Without health-check series, errors alone decide.
        let plain: Vec<_> = samples
            .iter()
            .map(|(t, x)| {
                (
                    *t,
                    LaneSample {
                        faulted_healthy: None,
                        ..*x
                    },
                )
            })
            .collect();
        let r = signal_recovery_s(&plain, 2.0, 2).expect("recovers");
        assert!((r - 0.3).abs() < 1e-9, "{r}");
    }
}
