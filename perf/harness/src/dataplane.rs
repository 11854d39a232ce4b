//! The data-plane scenario in local-lab mode: media through popmesh's lane vs the same traffic
//! direct, then the capacity of one media core, scaling with flows and with fan-out.
//!
//! Every phase starts its own `popmesh-dataplane` (io_uring backend, one worker pinned to
//! `media_core`, admin on a free loopback port) from a generated config, and runs
//! `popmesh-rtp` senders and sinks pinned to `load_core`. Phases:
//!
//! - `lane`: every publisher sends an audio and a video stream (two sessions, as RTP without
//!   bundling does) through the appliance to its viewers; the sink measures latency, loss,
//!   jitter and stalls per viewer.
//! - `direct`: the same streams from the same senders straight to the viewers' sockets.
//! - `fixed-rate` and `peak`: one session at `load.rate`, then `load.concurrency` unpaced
//!   senders: media-worker CPU per packet and packets per CPU-second of one core.
//! - `flows-N`: N sessions installed, traffic spread over `active_flows` of them, unpaced.
//! - `fanout-N`: one publisher, N viewers, at `fanout_pps`.
//!
//! Media-worker CPU comes from its thread's `schedstat`; relayed packets from the appliance's
//! own counters (`/metrics`). In the CPU phases the worker waits in the kernel as soon as its
//! queue is empty (`spin_polls = 0`), so CPU time measures work, not spinning; the lane phase
//! keeps the production idle settings because they shape latency.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use crate::hlog::{self, LatencyLog};
use crate::metrics;
use crate::report::Cdf;
use crate::run::{ChildGuard, RunContext, ScenarioDriver};
use crate::scenario::{DataPlaneLoad, LocalLab, Remote, Scenario, Target};
use crate::stall::{self, StallRecord, Window};

/// Flows steps above this are capped on machines with fewer than [`SMALL_MACHINE_CPUS`] CPUs
/// (unless `--full-scale`): the appliance reads its sessions from a TOML file, about 90 bytes
/// each, and start-up parses and installs them all.
pub const SMALL_MACHINE_FLOWS_CAP: u64 = 100_000;
/// Below this many CPUs the harness scales down and says so in the report.
pub const SMALL_MACHINE_CPUS: usize = 4;
/// On a small machine a fan-out step's copies per second are capped here: the sink shares its
/// CPU with the sender, so beyond this the loss would be the sink's, not the appliance's.
pub const SMALL_MACHINE_COPIES_PPS: u64 = 100_000;
/// Stall events kept in the report per phase.
pub(crate) const MAX_TIMELINE_EVENTS: usize = 2_000;
/// Points kept per CDF.
const CDF_POINTS: usize = 200;

/// Port offsets within the lab's range.
const OFFSET_PEAK: u16 = 600;
const OFFSET_VIEWERS: u16 = 800;

/// The data-plane driver.
#[derive(Debug, Clone, Copy)]
pub struct DataPlaneDriver;

impl ScenarioDriver for DataPlaneDriver {
    fn estimated_s(&self, scenario: &Scenario) -> f64 {
        let Some(d) = scenario.data_plane() else {
            return 0.0;
        };
        let step = f64::from(d.step_duration_ms) / 1000.0;
        let phase = scenario.load.ramp_s + scenario.load.duration_s + 3.0;
        if matches!(scenario.target, Target::Remote(_)) {
            return phase;
        }
        let steps = (d.flows_steps.len() + d.fanout_steps.len()) as f64 * (step + 3.0);
        let peak = f64::from(d.peak_duration_ms) / 1000.0;
        2.0 * phase + if peak > 0.0 { step + peak + 4.0 } else { 0.0 } + steps
    }

    fn backend(&self, scenario: &Scenario) -> String {
        match scenario.target {
            Target::LocalLab(_) => "uring".to_string(),
            Target::Remote(_) => "remote".to_string(),
        }
    }

    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()> {
        let mut load = ctx
            .scenario
            .data_plane()
            .cloned()
            .ok_or_else(|| anyhow!("not a data-plane scenario"))?;
        if let Target::Remote(remote) = &ctx.scenario.target {
            let remote = remote.clone();
            return remote_run(ctx, &load, &remote);
        }
        let (lab, _cpus) = crate::run::local_lab(&ctx.scenario, "unreachable: remote handled")?;
        scale_down(ctx, &mut load);
        let lab = Lab::new(ctx, lab)?;
        lab.lane_and_direct(ctx, &load, None)?;
        if load.peak_duration_ms > 0 {
            lab.fixed_and_peak(ctx, &load)?;
        }
        for &n in &load.flows_steps {
            lab.flows_step(ctx, &load, n)?;
        }
        for &n in &load.fanout_steps {
            lab.fanout_step(ctx, &load, n)?;
        }
        Ok(())
    }
}

/// Fails with a clear message when a viewer address cannot be bound here: in use, or not an
/// address of this host.
fn check_bindable(addrs: &[SocketAddr]) -> anyhow::Result<()> {
    for addr in addrs {
        if let Err(e) = UdpSocket::bind(addr) {
            bail!("cannot listen for viewers on {addr}: {e} (it must be a free UDP port on an address of this host)");
        }
    }
    Ok(())
}

/// A data-plane run against an appliance somebody else runs (`target.mode = "remote"`): only the
/// `lane` phase. Its sessions must already send each `target.remote.ingress[i]` to viewers
/// `i * viewers_per_publisher ..` of `target.remote.viewers`, which are addresses of this host.
/// The other phases need what only a local lab has (a direct path comparable to the
/// appliance's, the media worker's CPU time, sessions installed per step), so they are skipped
/// with a note each. With `target.remote.admin` the appliance's counters are sampled too.
fn remote_run(ctx: &mut RunContext, load: &DataPlaneLoad, remote: &Remote) -> anyhow::Result<()> {
    let lab = Lab::new(ctx, LocalLab::default())?.unpinned();
    ctx.note(format!(
        "remote appliance: publishers send to {} and viewers listen on {} (its sessions must map one to the other); load generators are not pinned",
        list(&remote.ingress),
        list(&remote.viewers)
    ));
    let mut skipped = vec!["direct (added latency needs a direct path comparable to the appliance's; the lane figures include the network to it)"];
    if load.peak_duration_ms > 0 {
        skipped.push("fixed-rate and peak (they read the media worker's CPU time)");
    }
    if !load.flows_steps.is_empty() || !load.fanout_steps.is_empty() {
        skipped.push("flows and fan-out steps (they install sessions on the appliance)");
    }
    ctx.note(format!(
        "remote mode ran the lane phase only; skipped: {}",
        skipped.join("; ")
    ));
    if remote.admin.is_none() {
        ctx.note("no target.remote.admin: the appliance's own counters were not sampled");
    }
    lab.lane_and_direct(ctx, load, Some(remote))
}

fn list(addrs: &[SocketAddr]) -> String {
    const SHOWN: usize = 4;
    let mut out: Vec<String> = addrs.iter().take(SHOWN).map(ToString::to_string).collect();
    if addrs.len() > SHOWN {
        out.push(format!("... ({} in all)", addrs.len()));
    }
    out.join(", ")
}

/// Applies the small-machine rules, with a note for each change.
fn scale_down(ctx: &mut RunContext, load: &mut DataPlaneLoad) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if ctx.options.full_scale || cpus >= SMALL_MACHINE_CPUS {
        return;
    }
    let before = load.flows_steps.clone();
    let mut capped: Vec<u64> = before
        .iter()
        .map(|&n| n.min(SMALL_MACHINE_FLOWS_CAP))
        .collect();
    capped.dedup();
    if capped != before {
        ctx.note(format!(
            "scaled down for a {cpus}-CPU machine: flows steps {before:?} ran as {capped:?} (the appliance loads sessions from a generated TOML file of ~90 bytes each; run with --full-scale on a POP-sized machine for 1M)"
        ));
        load.flows_steps = capped;
    }
    // Fan-out copies per second are capped per step inside fanout_step (noted there).
}

/// Ports, binaries and config writing of one lab.
#[derive(Debug)]
pub(crate) struct Lab {
    pub(crate) lab: LocalLab,
    dataplane: PathBuf,
    rtp: PathBuf,
    pub(crate) configs: PathBuf,
    pub(crate) raw: PathBuf,
    /// CPU the load generators and sinks are pinned to (`None` against a remote appliance).
    load_cpu: Option<usize>,
}

/// One running appliance.
#[derive(Debug)]
pub(crate) struct Appliance {
    pub(crate) child: ChildGuard,
    pub(crate) admin: SocketAddr,
    pub(crate) startup_s: f64,
}

/// Totals of the appliance's counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) rx: f64,
    pub(crate) tx: f64,
    pub(crate) drops: f64,
}

/// A point-in-time reading of the appliance: counters and its media worker's CPU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    pub(crate) at: Instant,
    pub(crate) counters: Counters,
    pub(crate) worker_cpu_ns: u64,
}

/// Reads an appliance's admin server and, when it runs here, its media worker's CPU time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter {
    admin: SocketAddr,
    /// The appliance's process, when the lab started it.
    pid: Option<u32>,
}

impl Appliance {
    pub(crate) fn meter(&self) -> Meter {
        Meter {
            admin: self.admin,
            pid: Some(self.child.pid()),
        }
    }

    pub(crate) fn stop(mut self) {
        if self.child.terminate(Duration::from_secs(10)).is_none() {
            // Killed by terminate's fallback; nothing else to do.
        }
    }
}

impl Meter {
    fn counters(&self) -> anyhow::Result<Counters> {
        let text = http_get(self.admin, "/metrics")?;
        Ok(Counters {
            rx: metric_sum(&text, "popmesh_media_rx_packets_total"),
            tx: metric_sum(&text, "popmesh_media_tx_packets_total"),
            drops: metric_sum(&text, "popmesh_media_drops_total"),
        })
    }

    /// Drop counters by reason (summed over workers).
    fn drop_reasons(&self) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
        Ok(drops_by_reason(&http_get(self.admin, "/metrics")?))
    }

    pub(crate) fn read(&self) -> anyhow::Result<Reading> {
        Ok(Reading {
            at: Instant::now(),
            counters: self.counters()?,
            worker_cpu_ns: self.pid.map_or(0, |pid| {
                crate::cpu::thread_cpu_ns(pid)
                    .get("media-0")
                    .copied()
                    .unwrap_or(0)
            }),
        })
    }

    /// Reads the counters and, against the `last` reading, appends the packets/s received and
    /// sent since then at `t` to `rx` and `tx`; returns the progress line.
    pub(crate) fn sample_rates(
        &self,
        last: &mut Option<Reading>,
        t: f64,
        rx: &mut Vec<[f64; 2]>,
        tx: &mut Vec<[f64; 2]>,
    ) -> String {
        match self.read() {
            Ok(r) => {
                let mut line = String::new();
                if let Some(prev) = *last {
                    let dt = r.at.duration_since(prev.at).as_secs_f64().max(1e-3);
                    let rx_pps = (r.counters.rx - prev.counters.rx) / dt;
                    let tx_pps = (r.counters.tx - prev.counters.tx) / dt;
                    rx.push([t, rx_pps]);
                    tx.push([t, tx_pps]);
                    line = format!("appliance rx {rx_pps:.0} pps, tx {tx_pps:.0} pps");
                }
                *last = Some(r);
                line
            }
            Err(e) => format!("appliance metrics unavailable: {e}"),
        }
    }
}

/// `popmesh_media_drops_total` by its `reason` label, summed over the other labels.
pub fn drops_by_reason(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("popmesh_media_drops_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(reason) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("reason=\""))
            .and_then(|r| r.strip_suffix('"'))
        else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(reason.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

/// Sum of every sample of a counter in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let url = format!("http://{addr}{path}");
    match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => r.into_string().with_context(|| format!("read {url}")),
        Err(ureq::Error::Status(code, r)) => {
            bail!(
                "GET {url}: {code} {}",
                r.into_string().unwrap_or_default().trim()
            )
        }
        Err(e) => Err(anyhow!("GET {url}: {e}")),
    }
}

/// The sink's JSON, the parts the harness reads.
#[derive(Debug, Deserialize)]
pub(crate) struct SinkJson {
    pub(crate) start_monotonic_ns: u64,
    pub(crate) listeners: Vec<SinkListener>,
    pub(crate) total: SinkTotal,
    per_second_packets: Option<Vec<u64>>,
    /// With `--interval-ms`.
    #[serde(default)]
    pub(crate) interval_packets: Option<SinkIntervals>,
}

/// The sink's `interval_packets`.
#[derive(Debug, Deserialize)]
pub(crate) struct SinkIntervals {
    pub(crate) interval_ms: u32,
    pub(crate) counts: Vec<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SinkListener {
    pub(crate) stalls: Option<StallRecord>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SinkTotal {
    pub(crate) probes: u64,
    pub(crate) duplicates: u64,
    jitter_us: Option<f64>,
    latency_us: Option<SinkLatency>,
}

#[derive(Debug, Deserialize)]
struct SinkLatency {
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SendJson {
    pub(crate) packets: u64,
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// The ingress address of flow `i` of a flows step: one wildcard-bound port, one loopback IP
/// per session (127.16.0.0 upwards), so a million sessions need one socket, not a million.
pub fn flow_ingress(i: u64, port: u16) -> SocketAddr {
    // 127.a.b.c with a = 16 + bits 16..24 (mod 256), b and c the low bytes: distinct for every
    // index below 2^24 (the largest flows step), never 127.0.0.x for steps below 15.7M.
    let a = (16 + ((i >> 16) & 0xff)) as u8;
    let b = ((i >> 8) & 0xff) as u8;
    let c = (i & 0xff) as u8;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, a, b, c), port))
}

/// What a sender sends.
#[derive(Debug, Clone)]
pub(crate) struct SendSpec {
    pub(crate) name: String,
    pub(crate) to: Vec<SocketAddr>,
    pub(crate) rate: u64,
    pub(crate) size: u16,
    pub(crate) streams: u32,
    pub(crate) stream_base: u32,
    pub(crate) duration_s: f64,
}

/// A sink over some listen ports.
#[derive(Debug, Clone)]
pub(crate) struct SinkSpec {
    pub(crate) name: String,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) duration_s: f64,
    pub(crate) stall_gap_ms: Option<u32>,
    pub(crate) hlog: bool,
    /// `--interval-ms`: a timeline finer than per second.
    pub(crate) interval_ms: Option<u32>,
    /// Stop after 2 s without packets (off when the run silences viewers on purpose).
    pub(crate) idle_exit: bool,
}

impl Lab {
    pub(crate) fn new(ctx: &RunContext, lab: LocalLab) -> anyhow::Result<Self> {
        let configs = ctx.out_dir().join("configs");
        let raw = ctx.out_dir().join("raw");
        for dir in [&configs, &raw] {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        Ok(Self {
            dataplane: ctx.binary("popmesh-dataplane")?,
            rtp: ctx.binary("popmesh-rtp")?,
            load_cpu: Some(lab.load_core),
            lab,
            configs,
            raw,
        })
    }

    /// The same lab with its load generators and sinks left to the scheduler.
    fn unpinned(self) -> Self {
        Self {
            load_cpu: None,
            ..self
        }
    }

    /// A lab that is never started (unit tests of drivers' pure parts).
    #[cfg(test)]
    pub(crate) fn for_tests(lab: LocalLab) -> Self {
        Self {
            lab,
            dataplane: PathBuf::new(),
            rtp: PathBuf::new(),
            configs: PathBuf::new(),
            raw: PathBuf::new(),
            load_cpu: Some(0),
        }
    }

    pub(crate) fn port(&self, offset: u16) -> u16 {
        self.lab.base_port + offset
    }

    /// Fails with a clear message when a UDP port the phase needs is taken.
    ///
    /// (Viewer addresses, which a remote scenario names itself, go through [`check_bindable`].)
    pub(crate) fn check_free(&self, ports: impl IntoIterator<Item = u16>) -> anyhow::Result<()> {
        for port in ports {
            if UdpSocket::bind(loopback(port)).is_err() {
                bail!(
                    "UDP port 127.0.0.1:{port} is in use; pick another target.local_lab.base_port (now {})",
                    self.lab.base_port
                );
            }
        }
        Ok(())
    }

    pub(crate) fn config_head(&self, admin: SocketAddr, max_flows: u64, cpu_phase: bool) -> String {
        let idle = if cpu_phase {
            "# CPU phases: wait in the kernel as soon as the queue is empty, so CPU time is work.\n\
             spin_polls = 0\nmax_wait = \"1ms\"\n"
        } else {
            "# The production idle settings (configs/lab.toml): they shape latency.\n\
             spin_polls = 256\nmax_wait = \"200us\"\n"
        };
        format!(
            "# Generated by popmesh-perf for one phase of a capacity run.\n\
             [admin]\nlisten = \"{admin}\"\n\n[log]\nlevel = \"warn\"\n\n\
             [media]\nbackend = \"uring\"\ncores = [{media}]\nmax_flows = {max_flows}\n\n\
             [media.idle]\n{idle}\n[housekeeping]\ncores = [{load}]\n\n",
            media = self.lab.media_core,
            load = self.lab.load_core,
        )
    }

    pub(crate) fn start_appliance(
        &self,
        ctx: &RunContext,
        name: &str,
        config: &str,
        ready_within: Duration,
    ) -> anyhow::Result<Appliance> {
        let path = self.configs.join(format!("{name}.toml"));
        std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
        let mut cmd = Command::new(&self.dataplane);
        cmd.arg("--config").arg(&path);
        let started = Instant::now();
        // Not pinned: the media worker pins itself to media_core; the rest may run anywhere.
        let child = ctx.spawn(&format!("dataplane-{name}"), cmd, None)?;
        let mut appliance = Appliance {
            child,
            admin: admin_from_config(config)?,
            startup_s: 0.0,
        };
        loop {
            if let Some(status) = appliance.child.try_wait() {
                bail!(
                    "popmesh-dataplane exited during start-up ({status}); see {}/logs/dataplane-{name}.log and {}",
                    ctx.out_dir().display(),
                    path.display()
                );
            }
            if http_get(appliance.admin, "/readyz").is_ok() {
                break;
            }
            if ctx.interrupted() {
                bail!("interrupted while popmesh-dataplane started");
            }
            if started.elapsed() > ready_within {
                bail!(
                    "popmesh-dataplane was not ready within {:.0} s; see {}/logs/dataplane-{name}.log",
                    ready_within.as_secs_f64(),
                    ctx.out_dir().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        appliance.startup_s = started.elapsed().as_secs_f64();
        ctx.watch_threads(Some(appliance.child.pid()));
        Ok(appliance)
    }

    pub(crate) fn spawn_send(
        &self,
        ctx: &RunContext,
        s: &SendSpec,
    ) -> anyhow::Result<(ChildGuard, PathBuf)> {
        let json = self.raw.join(format!("{}.json", s.name));
        let mut cmd = Command::new(&self.rtp);
        cmd.arg("send");
        for to in &s.to {
            cmd.arg("--to").arg(to.to_string());
        }
        cmd.args(["--rate", &s.rate.to_string()])
            .args(["--size", &s.size.to_string()])
            .args(["--streams", &s.streams.to_string()])
            .args(["--stream-base", &s.stream_base.to_string()])
            .args(["--duration", &format!("{:.3}", s.duration_s)])
            .arg("--json")
            .arg(&json);
        Ok((ctx.spawn(&s.name, cmd, self.load_cpu)?, json))
    }

    pub(crate) fn spawn_sink(
        &self,
        ctx: &RunContext,
        s: &SinkSpec,
    ) -> anyhow::Result<(ChildGuard, PathBuf, Option<PathBuf>)> {
        let json = self.raw.join(format!("{}.json", s.name));
        let hlog = s
            .hlog
            .then(|| ctx.out_dir().join(format!("{}-latency.hlog", s.name)));
        let mut cmd = Command::new(&self.rtp);
        cmd.arg("sink");
        for l in &s.listen {
            cmd.arg("--listen").arg(l.to_string());
        }
        cmd.args(["--duration", &format!("{:.3}", s.duration_s)])
            .arg("--per-second")
            .arg("--json")
            .arg(&json);
        if s.idle_exit {
            cmd.args(["--idle-exit", "2"]);
        }
        if let Some(ms) = s.interval_ms {
            cmd.args(["--interval-ms", &ms.to_string()]);
        }
        if let Some(gap) = s.stall_gap_ms {
            cmd.args(["--stall-gap", &format!("{:.3}", f64::from(gap) / 1000.0)]);
        }
        if let Some(h) = &hlog {
            cmd.arg("--hlog").arg(h);
        }
        let child = ctx.spawn(&s.name, cmd, self.load_cpu)?;
        // The sink prints its `listening` lines once bound; give it a moment (it binds before
        // anything is sent, and senders start after this).
        let log = ctx.out_dir().join("logs").join(format!("{}.log", s.name));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut child = child;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.matches("listening ").count() >= s.listen.len() {
                break;
            }
            if let Some(status) = child.try_wait() {
                bail!(
                    "sink {} exited at start ({status}): {}",
                    s.name,
                    text.trim()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "sink {} did not bind its {} sockets within 10 s",
                    s.name,
                    s.listen.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((child, json, hlog))
    }

    // ---- lane and direct ---------------------------------------------------------------------

    /// The `lane` phase and, against a local lab, the `direct` one. With `remote`, the lane is
    /// that appliance: nothing is started, publisher `i` sends both its streams to
    /// `remote.ingress[i]` and the viewers listen on `remote.viewers`.
    fn lane_and_direct(
        &self,
        ctx: &mut RunContext,
        load: &DataPlaneLoad,
        remote: Option<&Remote>,
    ) -> anyhow::Result<()> {
        let p = load.publishers;
        let v = load.viewers_per_publisher;
        let viewers: Vec<SocketAddr> = match remote {
            Some(r) => r.viewers.clone(),
            None => (0..p * v)
                .map(|i| loopback(self.port(OFFSET_VIEWERS) + i as u16))
                .collect(),
        };
        let ingress = |pub_i: u32, video: bool| match remote {
            // The scenario parser checked one ingress per publisher and stream.
            Some(r) => r.ingress[load.remote_ingress_index(pub_i, video)],
            None => loopback(self.port((2 * pub_i + u32::from(video)) as u16)),
        };
        if remote.is_some() {
            check_bindable(&viewers)?;
        } else {
            self.check_free(viewers.iter().map(SocketAddr::port))?;
            self.check_free((0..2 * p).map(|i| self.port(i as u16)))?;
        }

        let config = if remote.is_none() {
            let admin = free_admin()?;
            let mut config = self.config_head(admin, u64::from(2 * p) + 16, false);
            let _ = write!(
                config,
                "[[media.ports]]\nname = \"lane\"\nbind = \"{}\"\ncount = {}\n\n",
                ingress(0, false),
                2 * p
            );
            for pub_i in 0..p {
                let subs: Vec<String> = (0..v)
                    .map(|k| format!("\"{}\"", viewers[(pub_i * v + k) as usize]))
                    .collect();
                for (media, video) in [("audio", false), ("video", true)] {
                    let _ = write!(
                        config,
                        "[[sessions]]\nname = \"pub{pub_i}-{media}\"\ningress = \"{}\"\nsubscribers = [{}]\n\n",
                        ingress(pub_i, video),
                        subs.join(", ")
                    );
                }
            }
            ctx.appliance_config_toml = Some(config.clone());
            config
        } else {
            String::new()
        };

        let duration = ctx.scenario.load.duration_s;
        let ramp = ctx.scenario.load.ramp_s;
        let phases: &[bool] = if remote.is_some() {
            &[true]
        } else {
            &[true, false]
        };
        for &lane in phases {
            let phase_name = if lane { "lane" } else { "direct" };
            let phase = ctx.begin_phase(
                phase_name,
                if lane {
                    "publishers -> popmesh media lane -> viewers"
                } else {
                    "the same senders straight to the viewers (no appliance)"
                },
            );
            let appliance = if lane && remote.is_none() {
                Some(self.start_appliance(ctx, "lane", &config, Duration::from_secs(60))?)
            } else {
                None
            };
            let meter = match (&appliance, remote) {
                (Some(a), _) => Some(a.meter()),
                (None, Some(r)) if lane => r.admin.map(|admin| Meter { admin, pid: None }),
                _ => None,
            };
            let sink_spec = SinkSpec {
                name: format!("{phase_name}-sink"),
                listen: viewers.clone(),
                duration_s: ramp + duration + 15.0,
                stall_gap_ms: Some(load.stall_gap_ms),
                hlog: true,
                interval_ms: None,
                idle_exit: true,
            };
            let (mut sink, sink_json, hlog_path) = self.spawn_sink(ctx, &sink_spec)?;
            let before = meter.as_ref().map(Meter::read).transpose()?;
            let mut senders = Vec::new();
            let mut windows = Vec::new();
            for pub_i in 0..p {
                if pub_i > 0 && ramp > 0.0 {
                    ctx.hold(
                        phase_name,
                        Duration::from_secs_f64(ramp / f64::from(p)),
                        &mut [],
                        |_| "ramping up publishers".into(),
                    )?;
                }
                let start_ns = popmesh_perf::sys::monotonic_ns();
                let own_viewers: Vec<SocketAddr> =
                    viewers[(pub_i * v) as usize..((pub_i + 1) * v) as usize].to_vec();
                for (media, mix, video) in
                    [("audio", load.audio, false), ("video", load.video, true)]
                {
                    if mix.pps == 0 {
                        continue;
                    }
                    // Lane: one stream to the session, replicated by the appliance. Direct: one
                    // stream per viewer at the same per-viewer rate. Audio and video carry
                    // distinct stream indexes at every viewer.
                    let (to, streams, rate, base) = if lane {
                        (
                            vec![ingress(pub_i, video)],
                            1,
                            u64::from(mix.pps),
                            u32::from(!video),
                        )
                    } else {
                        (
                            own_viewers.clone(),
                            v,
                            u64::from(mix.pps) * u64::from(v),
                            if video { 0 } else { v },
                        )
                    };
                    let spec = SendSpec {
                        name: format!("{phase_name}-pub{pub_i}-{media}"),
                        to,
                        rate,
                        size: mix.size,
                        streams,
                        stream_base: base,
                        duration_s: duration,
                    };
                    senders.push(self.spawn_send(ctx, &spec)?);
                }
                let window = Window {
                    start_ns,
                    end_ns: start_ns + (duration * 1e9) as u64,
                };
                windows.extend(std::iter::repeat_n(window, v as usize));
            }
            // Hold for the senders, sampling the appliance's counters once a second.
            let mut relay_rx = Vec::new();
            let mut relay_tx = Vec::new();
            let mut last = before;
            ctx.hold(
                phase_name,
                Duration::from_secs_f64(duration + 0.3),
                &mut [],
                |c| match &meter {
                    Some(m) => {
                        m.sample_rates(&mut last, c.elapsed_s(), &mut relay_rx, &mut relay_tx)
                    }
                    None if lane => format!("{} senders to the remote appliance", senders.len()),
                    None => format!("{} senders direct", senders.len()),
                },
            )?;
            let mut sent_total = 0u64;
            for (mut child, json) in senders {
                let status = child.wait_for(Duration::from_secs(15))?;
                if !status.success() {
                    bail!(
                        "{} failed ({status}); see {}/logs/{}.log",
                        child.name,
                        ctx.out_dir().display(),
                        child.name
                    );
                }
                sent_total += read_json::<SendJson>(&json)?.packets;
            }
            let after = meter.as_ref().map(Meter::read).transpose()?;
            sink.wait_for(Duration::from_secs_f64(ramp + duration + 20.0))?;
            let sink_report: SinkJson = read_json(&sink_json)?;
            if let Some(a) = &appliance {
                if let Some(rss) = crate::cpu::rss_mib(a.child.pid()) {
                    ctx.metric("lane_rss_mib", rss);
                }
            }
            if let (Some(b), Some(a)) = (before, after) {
                let wall = a.at.duration_since(b.at).as_secs_f64();
                if wall > 0.0 && meter.is_some_and(|m| m.pid.is_some()) {
                    ctx.metric(
                        "lane_media_cpu_percent",
                        100.0 * (a.worker_cpu_ns - b.worker_cpu_ns) as f64 / (wall * 1e9),
                    );
                }
                ctx.series(format!("pps.{phase_name}.appliance_rx"), "pps", relay_rx);
                ctx.series(format!("pps.{phase_name}.appliance_tx"), "pps", relay_tx);
                if a.counters.drops > b.counters.drops {
                    ctx.note(format!(
                        "{phase_name}: the appliance dropped {:.0} packets (popmesh_media_drops_total)",
                        a.counters.drops - b.counters.drops
                    ));
                }
            }
            if let Some(a) = appliance {
                a.stop();
                ctx.watch_threads(None);
            }
            // In the lane each sent packet reaches v viewers; direct, each reaches one.
            let expected = if lane {
                sent_total * u64::from(v)
            } else {
                sent_total
            };
            self.traffic_metrics(
                ctx,
                phase_name,
                &sink_report,
                expected,
                windows,
                load,
                duration,
                hlog_path,
            )?;
            ctx.end_phase(phase);
        }
        // Lane minus direct.
        for (lane, direct, added) in [
            (
                "lane_latency_p50_us",
                "direct_latency_p50_us",
                "added_latency_p50_us",
            ),
            (
                "lane_latency_p99_us",
                "direct_latency_p99_us",
                "added_latency_p99_us",
            ),
            (
                "lane_latency_p999_us",
                "direct_latency_p999_us",
                "added_latency_p999_us",
            ),
            (
                "lane_stall_rate_per_viewer_min",
                "direct_stall_rate_per_viewer_min",
                "added_stall_rate_per_viewer_min",
            ),
        ] {
            if let (Some(a), Some(b)) = (ctx.metrics.get(lane), ctx.metrics.get(direct)) {
                let diff = a.value - b.value;
                ctx.metric(added, diff);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn traffic_metrics(
        &self,
        ctx: &mut RunContext,
        phase: &str,
        sink: &SinkJson,
        expected: u64,
        windows: Vec<Window>,
        load: &DataPlaneLoad,
        duration_s: f64,
        hlog_path: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        let received = sink.total.probes.saturating_sub(sink.total.duplicates);
        if expected > 0 {
            ctx.metric(
                &format!("{phase}_loss_ratio"),
                expected.saturating_sub(received) as f64 / expected as f64,
            );
        }
        if let Some(l) = &sink.total.latency_us {
            ctx.metric(&format!("{phase}_latency_p50_us"), l.p50_us);
            ctx.metric(&format!("{phase}_latency_p99_us"), l.p99_us);
            ctx.metric(&format!("{phase}_latency_p999_us"), l.p999_us);
        }
        if let Some(j) = sink.total.jitter_us {
            ctx.metric(&format!("{phase}_jitter_us"), j);
        }
        if phase == "lane" && duration_s > 0.0 {
            ctx.metric("lane_delivered_pps", received as f64 / duration_s);
        }
        if let Some(per_second) = &sink.per_second_packets {
            let offset = ctx.mono_to_s(sink.start_monotonic_ns);
            let points = per_second
                .iter()
                .enumerate()
                .map(|(i, n)| [offset + i as f64 + 0.5, *n as f64])
                .collect();
            ctx.series(format!("pps.{phase}.viewers"), "pps", points);
        }
        let viewers: Vec<(StallRecord, Window)> = sink
            .listeners
            .iter()
            .zip(windows)
            .filter_map(|(l, w)| l.stalls.clone().map(|s| (s, w)))
            .collect();
        let timeline = stall::timeline(
            phase,
            &viewers,
            f64::from(load.stall_gap_ms),
            ctx.origin_mono_ns(),
            MAX_TIMELINE_EVENTS,
        );
        ctx.metric(
            &format!("{phase}_stall_rate_per_viewer_min"),
            timeline.rate_per_viewer_min(),
        );
        ctx.metric(&format!("{phase}_stalled_s"), timeline.stalled_s);
        ctx.stalls.push(timeline);
        if let Some(path) = hlog_path {
            self.add_cdf(ctx, phase, &path, ctx.mono_to_s(sink.start_monotonic_ns))?;
        }
        Ok(())
    }

    fn add_cdf(
        &self,
        ctx: &mut RunContext,
        name: &str,
        path: &Path,
        offset_s: f64,
    ) -> anyhow::Result<()> {
        let log = LatencyLog::read(path)?;
        ctx.series(
            format!("latency_p99.{name}"),
            "us",
            log.p99_series(offset_s),
        );
        let rel = path
            .strip_prefix(ctx.out_dir())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string());
        ctx.cdfs.push(Cdf {
            name: name.to_string(),
            samples: log.total.len(),
            points: hlog::cdf_points(&log.total, CDF_POINTS),
            hlog: Some(rel),
        });
        Ok(())
    }

    // ---- one media core ----------------------------------------------------------------------

    fn fixed_and_peak(&self, ctx: &mut RunContext, load: &DataPlaneLoad) -> anyhow::Result<()> {
        let c = ctx.scenario.load.concurrency;
        let sink_port = self.port(OFFSET_VIEWERS);
        let ingress = |i: u32| loopback(self.port(OFFSET_PEAK + i as u16));
        // Sessions 0..c for the unpaced senders, session c for the fixed-rate one: a session
        // latches its first sender, so a later sender from another port would only be dropped.
        self.check_free(
            (0..=c)
                .map(|i| self.port(OFFSET_PEAK + i as u16))
                .chain([sink_port]),
        )?;
        let admin = free_admin()?;
        let mut config = self.config_head(admin, u64::from(c) + 16, true);
        let _ = write!(
            config,
            "[[media.ports]]\nname = \"peak\"\nbind = \"{}\"\ncount = {}\n\n",
            ingress(0),
            c + 1
        );
        for i in 0..=c {
            let _ = write!(
                config,
                "[[sessions]]\nname = \"peak-{i}\"\ningress = \"{}\"\nsubscribers = [\"{}\"]\n\n",
                ingress(i),
                loopback(sink_port)
            );
        }
        let appliance = self.start_appliance(ctx, "peak", &config, Duration::from_secs(60))?;
        let step = f64::from(load.step_duration_ms) / 1000.0;
        let peak = f64::from(load.peak_duration_ms) / 1000.0;
        let size = load.video.size;
        let sink = SinkSpec {
            name: "peak-sink".into(),
            listen: vec![loopback(sink_port)],
            duration_s: step + peak + 20.0,
            stall_gap_ms: None,
            hlog: false,
            interval_ms: None,
            idle_exit: true,
        };
        let (mut sink_child, _sink_json, _) = self.spawn_sink(ctx, &sink)?;

        // Fixed rate.
        let phase = ctx.begin_phase(
            "fixed-rate",
            &format!(
                "one session at load.rate = {} pps, {size}-byte packets",
                ctx.scenario.load.rate
            ),
        );
        let m = self.measure(
            ctx,
            &appliance,
            "fixed-rate",
            step,
            &[SendSpec {
                name: "fixed-rate-send".into(),
                to: vec![ingress(c)],
                rate: ctx.scenario.load.rate,
                size,
                streams: 1,
                stream_base: 0,
                duration_s: step,
            }],
        )?;
        if m.rx > 0.0 {
            ctx.metric("fixed_rate_cpu_ns_per_packet", m.cpu_ns / m.rx);
        }
        if let Some(n) = m.drop_note("fixed-rate") {
            ctx.note(n);
        }
        ctx.end_phase(phase);

        // Unpaced.
        let phase = ctx.begin_phase(
            "peak",
            &format!("{c} unpaced sender(s), one session each, {size}-byte packets"),
        );
        let specs: Vec<SendSpec> = (0..c)
            .map(|i| SendSpec {
                name: format!("peak-send-{i}"),
                to: vec![ingress(i)],
                rate: 0,
                size,
                streams: 1,
                stream_base: 0,
                duration_s: peak,
            })
            .collect();
        let m = self.measure(ctx, &appliance, "peak", peak, &specs)?;
        if let Some(n) = m.drop_note("peak") {
            ctx.note(n);
        }
        // Fan-out 1: every relayed packet is one transmitted copy; dropped packets are not
        // capacity.
        if m.tx > 0.0 && m.cpu_ns > 0.0 {
            ctx.metric("peak_cpu_ns_per_packet", m.cpu_ns / m.tx);
            ctx.metric("peak_pps_per_media_core", m.tx / (m.cpu_ns / 1e9));
            let busy = 100.0 * m.cpu_ns / (m.wall_s * 1e9);
            if busy < 90.0 {
                ctx.note(format!(
                    "peak: the media worker was busy {busy:.0}% of the time at {:.0} pps offered; the load generators (sharing CPU {}) could not saturate it, so peak_pps_per_media_core is packets per CPU-second of the worker, not an observed rate",
                    m.sent / m.wall_s,
                    self.lab.load_core
                ));
            }
        }
        if m.sent > 0.0 {
            ctx.metric("peak_loss_ratio", (m.sent - m.tx).max(0.0) / m.sent);
        }
        ctx.end_phase(phase);
        appliance.stop();
        ctx.watch_threads(None);
        let _ = sink_child.wait_for(Duration::from_secs(10));
        Ok(())
    }

    /// Runs senders against a running appliance and measures its counters and worker CPU.
    fn measure(
        &self,
        ctx: &RunContext,
        appliance: &Appliance,
        phase: &str,
        duration_s: f64,
        specs: &[SendSpec],
    ) -> anyhow::Result<Measured> {
        let appliance = appliance.meter();
        let before = appliance.read()?;
        let reasons_before = appliance.drop_reasons()?;
        let mut senders = Vec::new();
        for s in specs {
            senders.push(self.spawn_send(ctx, s)?);
        }
        let mut last = before;
        ctx.hold(
            phase,
            Duration::from_secs_f64(duration_s + 0.3),
            &mut [],
            |_| match appliance.read() {
                Ok(r) => {
                    let dt = r.at.duration_since(last.at).as_secs_f64().max(1e-3);
                    let line = format!(
                        "appliance rx {:.0} pps, tx {:.0} pps",
                        (r.counters.rx - last.counters.rx) / dt,
                        (r.counters.tx - last.counters.tx) / dt
                    );
                    last = r;
                    line
                }
                Err(e) => format!("appliance metrics unavailable: {e}"),
            },
        )?;
        let mut sent = 0u64;
        for (mut child, json) in senders {
            let status = child.wait_for(Duration::from_secs(15))?;
            if !status.success() {
                bail!(
                    "{} failed ({status}); see {}/logs/{}.log",
                    child.name,
                    ctx.out_dir().display(),
                    child.name
                );
            }
            sent += read_json::<SendJson>(&json)?.packets;
        }
        // Let the worker drain what is queued.
        std::thread::sleep(Duration::from_millis(200));
        let after = appliance.read()?;
        let reasons_after = appliance.drop_reasons()?;
        let drop_reasons = reasons_after
            .iter()
            .filter_map(|(reason, n)| {
                let d = n - reasons_before.get(reason).copied().unwrap_or(0.0);
                (d > 0.0).then(|| format!("{reason} {d:.0}"))
            })
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Measured {
            drop_reasons,
            rx: after.counters.rx - before.counters.rx,
            tx: after.counters.tx - before.counters.tx,
            cpu_ns: after.worker_cpu_ns.saturating_sub(before.worker_cpu_ns) as f64,
            drops: after.counters.drops - before.counters.drops,
            wall_s: after.at.duration_since(before.at).as_secs_f64(),
            sent: sent as f64,
        })
    }

    // ---- scaling -----------------------------------------------------------------------------

    fn flows_step(&self, ctx: &mut RunContext, load: &DataPlaneLoad, n: u64) -> anyhow::Result<()> {
        let name = format!("flows-{n}");
        let active = u64::from(load.active_flows).min(n);
        let phase = ctx.begin_phase(
            &name,
            &format!("{n} sessions installed, unpaced traffic spread over {active} of them"),
        );
        let port = self.port(OFFSET_PEAK + 100);
        let sink_port = self.port(OFFSET_VIEWERS);
        self.check_free([port, sink_port])?;
        let admin = free_admin()?;
        let mut config = self.config_head(admin, n + 16, true);
        // A wildcard-bound port takes every loopback IP; each session is one IP (see flow_ingress).
        let _ = write!(
            config,
            "[[media.ports]]\nname = \"flows\"\nbind = \"0.0.0.0:{port}\"\n\n"
        );
        let sub = loopback(sink_port);
        config.reserve(usize::try_from(n).unwrap_or(0).saturating_mul(96));
        for i in 0..n {
            let _ = write!(
                config,
                "[[sessions]]\nname = \"f{i}\"\ningress = \"{}\"\nsubscribers = [\"{sub}\"]\n",
                flow_ingress(i, port)
            );
        }
        let config_len = config.len();
        let ready_within = Duration::from_secs(60 + n / 2_000);
        let appliance = self.start_appliance(ctx, &name, &config, ready_within)?;
        drop(config);
        if config_len > 4 << 20 {
            // Keep the output directory small; the generator is deterministic.
            let _ = std::fs::remove_file(self.configs.join(format!("{name}.toml")));
        }
        let key = |m: &str| metrics::step_name("flows", n, m);
        ctx.metric(&key("installed"), n as f64);
        ctx.metric(&key("startup_s"), appliance.startup_s);
        if let Some(rss) = crate::cpu::rss_mib(appliance.child.pid()) {
            ctx.metric(&key("rss_mib"), rss);
        }
        let step = f64::from(load.step_duration_ms) / 1000.0;
        let sink = SinkSpec {
            name: format!("{name}-sink"),
            listen: vec![sub],
            duration_s: step + 20.0,
            stall_gap_ms: None,
            hlog: false,
            interval_ms: None,
            idle_exit: true,
        };
        let (mut sink_child, _, _) = self.spawn_sink(ctx, &sink)?;
        // Active sessions spread evenly over the table's insertion order.
        let to: Vec<SocketAddr> = (0..active)
            .map(|k| flow_ingress(k * n / active, port))
            .collect();
        let m = self.measure(
            ctx,
            &appliance,
            &name,
            step,
            &[SendSpec {
                name: format!("{name}-send"),
                streams: to.len() as u32,
                to,
                rate: 0,
                size: load.video.size,
                stream_base: 0,
                duration_s: step,
            }],
        )?;
        if let Some(note) = m.drop_note(&name) {
            ctx.note(note);
        }
        // One subscriber per session: relayed packets are transmitted copies.
        if m.wall_s > 0.0 {
            ctx.metric(&key("pps"), m.tx / m.wall_s);
        }
        if m.tx > 0.0 {
            ctx.metric(&key("cpu_ns_per_packet"), m.cpu_ns / m.tx);
        }
        appliance.stop();
        ctx.watch_threads(None);
        let _ = sink_child.wait_for(Duration::from_secs(10));
        ctx.end_phase(phase);
        Ok(())
    }

    fn fanout_step(
        &self,
        ctx: &mut RunContext,
        load: &DataPlaneLoad,
        n: u32,
    ) -> anyhow::Result<()> {
        let name = format!("fanout-{n}");
        let mut pps = u64::from(load.fanout_pps);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if !ctx.options.full_scale
            && cpus < SMALL_MACHINE_CPUS
            && pps * u64::from(n) > SMALL_MACHINE_COPIES_PPS
        {
            let capped = (SMALL_MACHINE_COPIES_PPS / u64::from(n)).max(1);
            ctx.note(format!(
                "scaled down for a {cpus}-CPU machine: fanout[{n}] sent {capped} pps instead of {pps} (at most {SMALL_MACHINE_COPIES_PPS} copies/s: the sink shares a CPU with the sender)"
            ));
            pps = capped;
        }
        let phase = ctx.begin_phase(
            &name,
            &format!(
                "one publisher, {n} viewers, {pps} pps of {}-byte packets",
                load.video.size
            ),
        );
        let ingress = loopback(self.port(OFFSET_PEAK + 150));
        let viewers: Vec<SocketAddr> = (0..n)
            .map(|i| loopback(self.port(OFFSET_VIEWERS) + i as u16))
            .collect();
        self.check_free(viewers.iter().map(SocketAddr::port).chain([ingress.port()]))?;
        let admin = free_admin()?;
        let mut config = self.config_head(admin, 16, true);
        let subs: Vec<String> = viewers.iter().map(|a| format!("\"{a}\"")).collect();
        let _ = write!(
            config,
            "[[media.ports]]\nname = \"fanout\"\nbind = \"{ingress}\"\n\n[[sessions]]\nname = \"fanout\"\ningress = \"{ingress}\"\nsubscribers = [{}]\n",
            subs.join(", ")
        );
        let appliance = self.start_appliance(ctx, &name, &config, Duration::from_secs(60))?;
        let step = f64::from(load.step_duration_ms) / 1000.0;
        let sink = SinkSpec {
            name: format!("{name}-sink"),
            listen: viewers,
            duration_s: step + 20.0,
            stall_gap_ms: None,
            hlog: true,
            interval_ms: None,
            idle_exit: true,
        };
        let (mut sink_child, sink_json, hlog_path) = self.spawn_sink(ctx, &sink)?;
        let m = self.measure(
            ctx,
            &appliance,
            &name,
            step,
            &[SendSpec {
                name: format!("{name}-send"),
                to: vec![ingress],
                rate: pps,
                size: load.video.size,
                streams: 1,
                stream_base: 0,
                duration_s: step,
            }],
        )?;
        appliance.stop();
        ctx.watch_threads(None);
        sink_child.wait_for(Duration::from_secs(30))?;
        let report: SinkJson = read_json(&sink_json)?;
        if let Some(note) = m.drop_note(&name) {
            ctx.note(note);
        }
        if n >= 100 {
            ctx.note(format!(
                "{name}: latency is measured by one sink serving {n} sockets on CPU {} (one poll and recvmmsg per socket per wake-up), so its queueing is part of the figure",
                self.lab.load_core
            ));
        }
        let key = |m: &str| metrics::step_name("fanout", u64::from(n), m);
        let received = report.total.probes.saturating_sub(report.total.duplicates) as f64;
        if m.wall_s > 0.0 {
            ctx.metric(&key("delivered_pps"), received / step);
            ctx.metric(&key("cpu_percent"), 100.0 * m.cpu_ns / (m.wall_s * 1e9));
        }
        if m.tx > 0.0 {
            ctx.metric(&key("cpu_ns_per_packet_out"), m.cpu_ns / m.tx);
        }
        let expected = m.sent * f64::from(n);
        if expected > 0.0 {
            ctx.metric(
                &key("loss_ratio"),
                (expected - received).max(0.0) / expected,
            );
        }
        if let Some(l) = &report.total.latency_us {
            ctx.metric(&key("latency_p99_us"), l.p99_us);
        }
        if let Some(path) = hlog_path {
            self.add_cdf(ctx, &name, &path, ctx.mono_to_s(report.start_monotonic_ns))?;
        }
        ctx.end_phase(phase);
        Ok(())
    }
}

/// Counter and CPU deltas over a measurement.
#[derive(Debug, Clone)]
struct Measured {
    /// `reason count` of each drop reason that grew.
    drop_reasons: String,
    rx: f64,
    tx: f64,
    cpu_ns: f64,
    wall_s: f64,
    sent: f64,
    drops: f64,
}

impl Measured {
    /// A note when the appliance dropped a noticeable share of what it received.
    fn drop_note(&self, phase: &str) -> Option<String> {
        (self.rx > 0.0 && self.drops > self.rx * 0.001).then(|| {
            format!(
                "{phase}: the appliance dropped {:.0} of {:.0} received packets (popmesh_media_drops_total by reason: {})",
                self.drops, self.rx, self.drop_reasons
            )
        })
    }
}

pub(crate) fn free_admin() -> anyhow::Result<SocketAddr> {
    // The kernel picks a free port; it is released for the appliance to bind a moment later.
    TcpListener::bind(loopback(0))
        .and_then(|l| l.local_addr())
        .context("find a free loopback TCP port for the admin server")
}

fn admin_from_config(config: &str) -> anyhow::Result<SocketAddr> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("generated config has no admin.listen"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_addresses_are_distinct_loopback_ips() {
        let mut seen = std::collections::HashSet::new();
        for i in (0..2_000_000u64).step_by(997) {
            let a = flow_ingress(i, 46_700);
            assert!(a.ip().is_loopback(), "{a}");
            assert!(seen.insert(a), "{a} twice");
        }
        assert_eq!(flow_ingress(0, 1).to_string(), "127.16.0.0:1");
        assert_eq!(flow_ingress(65_536 + 258, 1).to_string(), "127.17.1.2:1");
    }

    #[test]
    fn counters_add_up_over_labels() {
        let text = "# HELP x\npopmesh_media_rx_packets_total{worker=\"0\",core=\"1\"} 10\n\
            popmesh_media_rx_packets_total{worker=\"1\",core=\"2\"} 5\n\
            popmesh_media_rx_packets_total_other 99\npopmesh_media_tx_packets_total 7\n";
        assert_eq!(metric_sum(text, "popmesh_media_rx_packets_total"), 15.0);
        assert_eq!(metric_sum(text, "popmesh_media_tx_packets_total"), 7.0);
        assert_eq!(metric_sum(text, "nope"), 0.0);
        let drops = "popmesh_media_drops_total{worker=\"0\",core=\"1\",reason=\"tx_failed\"} 3\n\
            popmesh_media_drops_total{worker=\"1\",core=\"2\",reason=\"tx_failed\"} 4\n\
            popmesh_media_drops_total{worker=\"0\",core=\"1\",reason=\"no_flow\"} 0\n";
        let by = drops_by_reason(drops);
        assert_eq!(by.get("tx_failed"), Some(&7.0));
        assert_eq!(by.get("no_flow"), Some(&0.0));
    }
}
