//! What every scenario driver shares: the [`RunContext`] (output directory, child processes that
//! die with the run, CPU sampling, the progress line, Ctrl-C, the report being built) and the
//! [`ScenarioDriver`] trait the kinds implement.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::cpu::{CpuSampler, CpuSeries};
use crate::metrics::{self, Better};
use crate::report::{
    self, Cdf, Environment, FaultWindow, Metric, Phase, Report, ScenarioInfo, Series, StallTimeline,
};
use crate::scenario::{LocalLab, Scenario, ScenarioKind, Target};

/// A scenario kind's driver.
pub trait ScenarioDriver {
    /// Seconds the whole run is expected to take (for the progress line).
    fn estimated_s(&self, scenario: &Scenario) -> f64;
    /// Backend name for the report's environment.
    fn backend(&self, scenario: &Scenario) -> String;
    /// Runs every phase, filling the context's report parts.
    ///
    /// # Errors
    /// When a component cannot start, fails, or the run is interrupted.
    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()>;
}

/// The driver of a kind.
///
/// # Errors
/// Never today (every kind has a driver); kept for kinds to come.
pub fn driver_for(kind: ScenarioKind) -> anyhow::Result<Box<dyn ScenarioDriver>> {
    match kind {
        ScenarioKind::DataPlane => Ok(Box::new(crate::dataplane::DataPlaneDriver)),
        ScenarioKind::Stability => Ok(Box::new(crate::stability::StabilityDriver)),
        ScenarioKind::ControlPlane => Ok(Box::new(crate::controlplane::ControlPlaneDriver)),
    }
}

/// The local lab a driver runs against, after checking that both of its CPUs exist here; with
/// the number of CPUs. `remote` says why the driver cannot run against a remote target yet.
///
/// # Errors
/// A remote target, or a lab CPU this machine does not have.
pub(crate) fn local_lab(scenario: &Scenario, remote: &str) -> anyhow::Result<(LocalLab, usize)> {
    let lab = match &scenario.target {
        Target::LocalLab(lab) => lab.clone(),
        Target::Remote(_) => bail!("target.mode = \"remote\" parses, but {remote}"),
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    for (key, core) in [("media_core", lab.media_core), ("load_core", lab.load_core)] {
        if core >= cpus {
            bail!(
                "target.local_lab.{key} = {core}, but this machine has CPUs 0..={}",
                cpus - 1
            );
        }
    }
    Ok((lab, cpus))
}

/// Options of a run that are not part of the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output directory (created).
    pub out_dir: PathBuf,
    /// Directory of the binaries.
    pub bin_dir: PathBuf,
    /// No progress line.
    pub quiet: bool,
    /// Run every step as written, even on a small machine.
    pub full_scale: bool,
}

/// A child process that is killed when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it has exited (and how), without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits at most `limit` for it to exit by itself; kills it past that.
    ///
    /// # Errors
    /// When it had to be killed.
    pub fn wait_for(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "{} did not exit within {:.1} s and was killed",
                    self.name,
                    limit.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then up to `grace` to exit, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let pid = i32::try_from(self.pid()).ok()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.wait_for(grace).ok()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            tracing::debug!(child = %self.name, pid = c.id(), "stopping");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The progress line: one per second on stderr unless quiet.
#[derive(Debug)]
pub struct Progress {
    quiet: bool,
    origin: Instant,
    estimated_s: f64,
}

impl Progress {
    /// Formats one line (without writing it).
    pub fn line(
        &self,
        phase: &str,
        phase_elapsed_s: f64,
        phase_total_s: f64,
        live: &str,
    ) -> String {
        format!(
            "popmesh-perf [{:>4.0}/{:.0} s] {phase} {:>3.0}/{:.0} s: {live}",
            self.origin.elapsed().as_secs_f64(),
            self.estimated_s,
            phase_elapsed_s,
            phase_total_s,
        )
    }

    /// Writes a line unless quiet.
    pub fn say(&self, text: &str) {
        if !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }
}

/// Everything a driver needs and fills.
#[derive(Debug)]
pub struct RunContext {
    /// The scenario being run (possibly scaled down; see `notes`).
    pub scenario: Scenario,
    /// Options of the run.
    pub options: RunOptions,
    /// Notes for the report.
    pub notes: Vec<String>,
    /// Phases so far.
    pub phases: Vec<Phase>,
    /// Series so far.
    pub series: Vec<Series>,
    /// Latency CDFs so far.
    pub cdfs: Vec<Cdf>,
    /// Stall timelines so far.
    pub stalls: Vec<StallTimeline>,
    /// Injected fault windows so far.
    pub faults: Vec<FaultWindow>,
    /// Metrics so far.
    pub metrics: BTreeMap<String, Metric>,
    /// The generated appliance config of the main phase.
    pub appliance_config_toml: Option<String>,
    origin: Instant,
    origin_mono_ns: u64,
    cpu: Option<CpuSampler>,
    progress: Progress,
    interrupted: Arc<AtomicBool>,
}

impl RunContext {
    /// A context whose clock starts now.
    pub fn new(
        scenario: Scenario,
        options: RunOptions,
        estimated_s: f64,
        interrupted: Arc<AtomicBool>,
    ) -> Self {
        let origin = Instant::now();
        Self {
            scenario,
            progress: Progress {
                quiet: options.quiet,
                origin,
                estimated_s,
            },
            options,
            notes: Vec::new(),
            phases: Vec::new(),
            series: Vec::new(),
            cdfs: Vec::new(),
            stalls: Vec::new(),
            faults: Vec::new(),
            metrics: BTreeMap::new(),
            appliance_config_toml: None,
            origin,
            origin_mono_ns: popmesh_perf::sys::monotonic_ns(),
            cpu: Some(CpuSampler::start(origin, Duration::from_secs(1))),
            interrupted,
        }
    }

    /// Seconds since the run started.
    pub fn elapsed_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// CLOCK_MONOTONIC ns when the run started (the sinks' clock).
    pub fn origin_mono_ns(&self) -> u64 {
        self.origin_mono_ns
    }

    /// Converts a CLOCK_MONOTONIC ns time to seconds since the run started.
    pub fn mono_to_s(&self, ns: u64) -> f64 {
        (ns as f64 - self.origin_mono_ns as f64) / 1e9
    }

    /// The output directory.
    pub fn out_dir(&self) -> &Path {
        &self.options.out_dir
    }

    /// A binary from the binary directory.
    ///
    /// # Errors
    /// When it is not there, naming the build command.
    pub fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.options.bin_dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(anyhow!(
                "{} not found; build it with `cargo build --release -p popmesh-dataplane -p popmesh-perf -p popmesh-ctrld -p popmesh-signal-bench` or pass --bin-dir",
                path.display()
            ))
        }
    }

    /// Adds a note for the report (and says it on the progress stream).
    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.progress.say(&format!("popmesh-perf: note: {text}"));
        self.notes.push(text);
    }

    /// Says something on the progress stream (unless quiet).
    pub fn say(&self, text: &str) {
        self.progress.say(text);
    }

    /// Records a metric; unit and direction come from the kind's catalog.
    pub fn metric(&mut self, name: &str, value: f64) {
        let def = metrics::lookup(self.scenario.kind, name);
        debug_assert!(def.is_some(), "metric {name} is not in the catalog");
        if !value.is_finite() {
            return;
        }
        self.metrics.insert(
            name.to_string(),
            Metric {
                value,
                unit: def.map_or("", |d| d.unit).to_string(),
                better: def.map_or(Better::Neither, |d| d.better),
            },
        );
    }

    /// Adds a series.
    pub fn series(&mut self, name: impl Into<String>, unit: &str, points: Vec<[f64; 2]>) {
        self.series.push(Series {
            name: name.into(),
            unit: unit.to_string(),
            points,
        });
    }

    /// Starts watching the threads of `pid` in the CPU sampler (`None`: stop).
    pub fn watch_threads(&self, pid: Option<u32>) {
        if let Some(c) = &self.cpu {
            c.watch(pid);
        }
    }

    /// Whether Ctrl-C or SIGTERM arrived.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Spawns a child that dies with the run, on CPU `cpu` if given (its affinity is inherited
    /// from this thread, which holds that CPU set only around the fork). stdout/stderr go to
    /// `<out>/logs/<name>.log`.
    ///
    /// # Errors
    /// When it cannot be spawned or pinned.
    pub fn spawn(
        &self,
        name: &str,
        command: Command,
        cpu: Option<usize>,
    ) -> anyhow::Result<ChildGuard> {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let Some(cpu) = cpu else {
            return self.spawn_inherit(name, command);
        };
        let me = Pid::from_raw(0);
        let original = sched_getaffinity(me).context("read this thread's CPU set")?;
        let mut only = CpuSet::new();
        only.set(cpu)
            .with_context(|| format!("CPU {cpu} is out of range"))?;
        sched_setaffinity(me, &only)
            .with_context(|| format!("pin to CPU {cpu} (is it in this process's CPU set?)"))?;
        let spawned = self.spawn_inherit(name, command);
        sched_setaffinity(me, &original).context("restore this thread's CPU set")?;
        spawned
    }

    fn spawn_inherit(&self, name: &str, mut command: Command) -> anyhow::Result<ChildGuard> {
        let logs = self.out_dir().join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let log2 = log.try_clone().context("duplicate log file")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = command
            .spawn()
            .with_context(|| format!("start {name} ({:?})", command.get_program()))?;
        tracing::debug!(
            child = name,
            pid = child.id(),
            program = ?command.get_program(),
            args = ?command.get_args().collect::<Vec<_>>(),
            "spawned"
        );
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
        })
    }

    /// Lets `total` pass, printing the progress line once per second with `live()`'s figures,
    /// and failing early if the run is interrupted or one of `watched` exits.
    ///
    /// # Errors
    /// On Ctrl-C/SIGTERM, or when a watched child exits before the time is up.
    pub fn hold(
        &self,
        phase: &str,
        total: Duration,
        watched: &mut [&mut ChildGuard],
        mut live: impl FnMut(&Self) -> String,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut next_line = start + Duration::from_secs(1);
        loop {
            if self.interrupted() {
                bail!("interrupted during phase {phase}; children stopped");
            }
            for child in watched.iter_mut() {
                if let Some(status) = child.try_wait() {
                    bail!(
                        "{} exited early during phase {phase} ({status}); see {}/logs/{}.log",
                        child.name,
                        self.out_dir().display(),
                        child.name
                    );
                }
            }
            let now = Instant::now();
            if now >= start + total {
                return Ok(());
            }
            if now >= next_line {
                next_line += Duration::from_secs(1);
                let figures = live(self);
                let cpu = self.cpu_figures();
                let line = self.progress.line(
                    phase,
                    now.duration_since(start).as_secs_f64(),
                    total.as_secs_f64(),
                    &format!(
                        "{figures}{}{cpu}",
                        if figures.is_empty() { "" } else { ", " }
                    ),
                );
                self.progress.say(&line);
            }
            std::thread::sleep(
                Duration::from_millis(50).min((start + total).saturating_duration_since(now)),
            );
        }
    }

    fn cpu_figures(&self) -> String {
        let latest = self
            .cpu
            .as_ref()
            .map(CpuSampler::latest)
            .unwrap_or_default();
        latest
            .iter()
            .map(|(core, pct)| format!("cpu{core} {pct:.0}%"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Opens a phase now; [`RunContext::end_phase`] closes it.
    pub fn begin_phase(&self, name: &str, description: &str) -> Phase {
        self.progress
            .say(&format!("popmesh-perf: phase {name}: {description}"));
        Phase {
            name: name.to_string(),
            description: description.to_string(),
            start_s: self.elapsed_s(),
            duration_s: 0.0,
        }
    }

    /// Closes a phase.
    pub fn end_phase(&mut self, mut phase: Phase) {
        phase.duration_s = self.elapsed_s() - phase.start_s;
        self.phases.push(phase);
    }

    fn take_cpu(&mut self) -> CpuSeries {
        self.cpu.take().map(CpuSampler::stop).unwrap_or_default()
    }

    /// Stops sampling and assembles the report (thresholds judged).
    pub fn into_report(mut self, mut environment: Environment) -> Report {
        let cpu = self.take_cpu();
        for (core, points) in cpu.cores {
            self.series.push(Series {
                name: format!("cpu.core{core}"),
                unit: "percent".into(),
                points,
            });
        }
        for (thread, points) in cpu.threads {
            self.series.push(Series {
                name: format!("cpu.thread.{thread}"),
                unit: "percent".into(),
                points,
            });
        }
        environment.appliance_config_toml = self.appliance_config_toml.take();
        let verdicts = report::evaluate(&self.scenario.thresholds, &self.metrics);
        let overall = report::overall(&verdicts);
        Report {
            scenario: ScenarioInfo {
                name: self.scenario.name.clone(),
                kind: self.scenario.kind.name().to_string(),
                description: self.scenario.description.clone(),
            },
            environment,
            phases: self.phases,
            series: self.series,
            latency_cdfs: self.cdfs,
            stalls: self.stalls,
            faults: self.faults,
            metrics: self.metrics,
            verdicts,
            overall,
            notes: self.notes,
        }
    }
}

/// Runs a scenario end to end and writes `report.json`, `report.html` (and the drivers' files)
/// into the output directory. A failed phase still writes a report of what was measured, with
/// the error as a note, and then returns the error.
///
/// # Errors
/// When the output directory cannot be written, the kind has no driver, or the run fails.
pub fn run_scenario(
    scenario: Scenario,
    options: RunOptions,
    interrupted: Arc<AtomicBool>,
) -> anyhow::Result<Report> {
    let driver = driver_for(scenario.kind)?;
    std::fs::create_dir_all(&options.out_dir)
        .with_context(|| format!("create output directory {}", options.out_dir.display()))?;
    let environment = crate::env::collect(&driver.backend(&scenario), scenario.to_toml());
    let estimated = driver.estimated_s(&scenario);
    let out_dir = options.out_dir.clone();
    let mut ctx = RunContext::new(scenario, options, estimated, interrupted);
    let outcome = driver.run(&mut ctx);
    if let Err(e) = &outcome {
        ctx.notes.push(format!("run failed: {e:#}"));
    }
    let report = ctx.into_report(environment);
    write_outputs(&report, &out_dir)?;
    outcome.map(|()| report)
}

/// Writes `report.json` and `report.html`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_outputs(report: &Report, out_dir: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("serialize report")?;
    let path = out_dir.join("report.json");
    std::fs::write(&path, json + "\n").with_context(|| format!("write {}", path.display()))?;
    let path = out_dir.join("report.html");
    std::fs::write(&path, crate::html::render(report))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
