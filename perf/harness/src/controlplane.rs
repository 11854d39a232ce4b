//! The control-plane scenario in local-lab mode: many users entering live rooms at once, each
//! over a new mutual-TLS connection, through popmesh's signaling lane vs straight to the room
//! service (the article's "100,000 users entering live rooms at once", signaling API P99 and
//! proxy CPU).
//!
//! The lab ([`crate::lab`]): `popmesh-ctrld` issues every SVID (appliance, the `rooms`
//! service, the users) and holds the mesh the operator programs: service `rooms` (one endpoint
//! group), a route for the join path's first segment, and a policy that allows
//! `spiffe://<td>/ns/user/sa/*` to call it; the appliance acknowledges that version before any
//! load. `popmesh-rooms serve` is the room service, `popmesh-rooms users` the load.
//!
//! CPUs: the signaling lane (thread `signal-<core>`) alone on `target.local_lab.media_core`
//! (for this kind: the lane's core); the users, the room service, the daemon and the
//! appliance's other threads on `load_core`.
//!
//! Phases, each with every user's WebSocket still open at its end:
//! - `warm-up`: a few users through the lane, so a broken mesh fails in seconds with the
//!   reason (a policy that denies shows up as `join_status`), not after the whole run.
//! - `direct`: the users to the room service.
//! - `lane`: the same users through the appliance's inbound listener.
//!
//! Join latency counts from each user's scheduled arrival (open loop) to the join's answer:
//! TCP connect, TLS handshake and the join request; the lane adds its own handshake with the
//! service and the proxying. Lane CPU is the on-CPU time of the `signal-*` threads during the
//! lane phase; memory per connection is the appliance's RSS growth over the WebSockets open at
//! the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use popmesh_ctrl_api::pb;
use serde::Deserialize;

use crate::hlog::{self, LatencyLog};
use crate::lab::{self, ApplianceSpec, Ctrld, SignalingAppliance, Svid, SvidKind, APPLIANCE};
use crate::report::Cdf;
use crate::run::{ChildGuard, RunContext, ScenarioDriver};
use crate::scenario::{ControlPlaneLoad, Scenario, Target};

/// Users per phase on a machine with fewer than [`crate::dataplane::SMALL_MACHINE_CPUS`] CPUs
/// (unless `--full-scale`): every user's TLS handshake, join and WebSocket share one load CPU
/// with the room service.
pub const SMALL_MACHINE_USERS: u64 = 10_000;
/// Arrival rate cap (users/s) on a small machine: above it the one load CPU, not the lane,
/// would set the latency.
pub const SMALL_MACHINE_RATE: u64 = 300;
/// Memory budget per user across the users, the lane and the service (KiB), for the
/// scale-down rule (measured: about 40 KiB in the users process, 30 in the lane, 20 in the
/// service; doubled for headroom).
pub const KIB_PER_USER_BUDGET: u64 = 192;
/// Trust domain of the lab.
pub const TRUST_DOMAIN: &str = "pop.test";
/// Seconds every WebSocket stays open after the last user joined.
const HOLD_S: f64 = 3.0;
/// Seconds a user may take to be joined.
const USER_TIMEOUT_S: f64 = 10.0;
/// Users of the warm-up phase.
const WARMUP_USERS: u64 = 20;
/// Points kept per CDF.
const CDF_POINTS: usize = 200;

/// The control-plane driver.
#[derive(Debug, Clone, Copy)]
pub struct ControlPlaneDriver;

/// The summary `popmesh-rooms users --json` writes (the fields the harness reads; the writer
/// is `popmesh_signal_bench::rooms::UsersSummary`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UsersSummary {
    /// Users asked for.
    pub users: u64,
    /// Users that started.
    pub attempted: u64,
    /// Users whose join was answered 200 with their room.
    pub joined: u64,
    /// WebSocket upgrades that succeeded.
    pub websockets_opened: u64,
    /// WebSockets open when the phase ended.
    pub open_at_end: u64,
    /// Failed users by reason.
    pub failed: BTreeMap<String, u64>,
    /// Users that never started (the phase's duration was over).
    pub not_started: u64,
    /// CLOCK_MONOTONIC ns at the start.
    pub start_monotonic_ns: u64,
    /// Seconds until every user had arrived.
    pub arrivals_s: f64,
    /// Seconds until the summary was written.
    pub elapsed_s: f64,
    /// Connect + handshake + join, µs percentiles.
    pub join_total: Option<JoinLatency>,
    /// The join request alone.
    pub join_request: Option<JoinLatency>,
    /// `[s since start, open WebSockets]`.
    #[serde(default)]
    pub open_over_time: Vec<[f64; 2]>,
    /// RLIMIT_NOFILE of the users process.
    #[serde(default)]
    pub nofile_limit: u64,
}

/// Percentiles in µs.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct JoinLatency {
    /// Samples.
    pub samples: u64,
    /// P50.
    pub p50_us: f64,
    /// P99.
    pub p99_us: f64,
    /// P99.9.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl UsersSummary {
    /// Parses the JSON text.
    ///
    /// # Errors
    /// When it is not a users summary, or its counts contradict each other.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Self = serde_json::from_str(text).context("not a popmesh-rooms users summary")?;
        if s.joined > s.attempted || s.attempted + s.not_started > s.users {
            bail!(
                "inconsistent users summary: {} users, {} attempted, {} not started, {} joined",
                s.users,
                s.attempted,
                s.not_started,
                s.joined
            );
        }
        Ok(s)
    }

    /// Failures as `reason=count, ...` (empty: none).
    pub fn failures(&self) -> String {
        self.failed
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Users in their room (join answered and WebSocket opened) / asked for. A user whose
    /// join was answered but whose WebSocket timed out did not make it into the room.
    pub fn joined_ratio(&self) -> f64 {
        if self.users == 0 {
            return f64::NAN;
        }
        self.joined.min(self.websockets_opened) as f64 / self.users as f64
    }
}

/// The load actually run after the small-machine rules.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveLoad {
    /// Users per phase.
    pub users: u64,
    /// Rooms.
    pub rooms: u64,
    /// Arrivals per second.
    pub rate: u64,
}

/// What the machine offers, for [`scale`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// `MemAvailable`, KiB.
    pub mem_available_kib: u64,
    /// RLIMIT_NOFILE in force for the children.
    pub nofile: u64,
}

/// The small-machine rules: users and rate as configured unless `full_scale` is off and the
/// machine has fewer than 4 CPUs, too little memory or too few file descriptors (the appliance
/// holds two per user through the lane). Returns the load and one note per change.
pub fn scale(
    load: &ControlPlaneLoad,
    rate: u64,
    machine: Machine,
    full_scale: bool,
) -> (EffectiveLoad, Vec<String>) {
    let mut notes = Vec::new();
    let mut users = load.users;
    let mut why = Vec::new();
    let fit_fds = machine.nofile.saturating_sub(1024) / 2;
    let fit_mem = machine.mem_available_kib / 2 / KIB_PER_USER_BUDGET;
    if !full_scale {
        if machine.cpus < crate::dataplane::SMALL_MACHINE_CPUS && users > SMALL_MACHINE_USERS {
            users = SMALL_MACHINE_USERS;
            why.push(format!("a {}-CPU machine", machine.cpus));
        }
        if users > fit_mem {
            users = fit_mem.max(1);
            why.push(format!(
                "{} MiB available memory at ~{KIB_PER_USER_BUDGET} KiB per user",
                machine.mem_available_kib / 1024
            ));
        }
        if users > fit_fds {
            users = fit_fds.max(1);
            why.push(format!(
                "RLIMIT_NOFILE {} that this process could not raise (the appliance holds 2 descriptors per user; raise the hard limit with ulimit -Hn or run with CAP_SYS_RESOURCE)",
                machine.nofile
            ));
        }
    } else if users > fit_fds {
        notes.push(format!(
            "--full-scale with RLIMIT_NOFILE {}: the appliance can hold about {fit_fds} users; the rest will fail (raise ulimit -n)",
            machine.nofile
        ));
    }
    if users < load.users {
        notes.push(format!(
            "scaled down: {} users per phase ran as {users} ({}); run with --full-scale on a POP-sized machine for all of them",
            load.users,
            why.join(", ")
        ));
    }
    let mut eff_rate = rate.max(1);
    if !full_scale
        && machine.cpus < crate::dataplane::SMALL_MACHINE_CPUS
        && eff_rate > SMALL_MACHINE_RATE
    {
        notes.push(format!(
            "scaled down: arrivals at {eff_rate} users/s ran at {SMALL_MACHINE_RATE} users/s (one load CPU does every user's TLS handshake and the room service's; above this it, not the lane, sets the latency)"
        ));
        eff_rate = SMALL_MACHINE_RATE;
    }
    (
        EffectiveLoad {
            users,
            rooms: load.rooms.min(users).max(1),
            rate: eff_rate,
        },
        notes,
    )
}

fn read_proc_stat() -> BTreeMap<usize, crate::cpu::CoreTimes> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| crate::cpu::parse_proc_stat(&t))
        .unwrap_or_default()
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|r| r.split_ascii_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Seconds a phase of `users` takes at `rate` with `ramp_s`, bounded by the duration.
fn arrivals_s(users: u64, rate: u64, ramp_s: f64, duration_s: f64) -> f64 {
    let rate = rate.max(1) as f64;
    let during_ramp = rate * ramp_s / 2.0;
    let t = if (users as f64) <= during_ramp {
        (2.0 * ramp_s * users as f64 / rate).sqrt()
    } else {
        ramp_s + (users as f64 - during_ramp) / rate
    };
    t.min(ramp_s + duration_s)
}

impl ScenarioDriver for ControlPlaneDriver {
    fn estimated_s(&self, scenario: &Scenario) -> f64 {
        let Some(c) = scenario.control_plane() else {
            return 0.0;
        };
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let machine = Machine {
            cpus,
            mem_available_kib: mem_available_kib(),
            nofile: u64::MAX,
        };
        let (eff, _) = scale(c, scenario.load.rate, machine, false);
        let phase = arrivals_s(
            eff.users,
            eff.rate,
            scenario.load.ramp_s,
            scenario.load.duration_s,
        ) + HOLD_S
            + 4.0;
        10.0 + 4.0 + 2.0 * phase
    }

    fn backend(&self, scenario: &Scenario) -> String {
        match scenario.target {
            Target::LocalLab(_) => "signaling".to_string(),
            Target::Remote(_) => "remote".to_string(),
        }
    }

    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()> {
        let (lab_target, cpus) = crate::run::local_lab(
            &ctx.scenario,
            "the control-plane driver runs only in local-lab mode so far",
        )?;
        let (lane_core, load_core) = (lab_target.media_core, lab_target.load_core);
        let load = ctx
            .scenario
            .control_plane()
            .cloned()
            .ok_or_else(|| anyhow!("not a control-plane scenario"))?;
        // Children inherit the limit: the appliance needs two descriptors per user.
        let nofile = lab::raise_nofile(2 * load.users + 8192);
        let machine = Machine {
            cpus,
            mem_available_kib: mem_available_kib(),
            nofile,
        };
        let (eff, notes) = scale(
            &load,
            ctx.scenario.load.rate,
            machine,
            ctx.options.full_scale,
        );
        for n in notes {
            ctx.note(n);
        }
        let ramp = ctx.scenario.load.ramp_s;
        let duration = ctx.scenario.load.duration_s;
        let needed = arrivals_s(eff.users, eff.rate, ramp, f64::INFINITY);
        if needed > ramp + duration {
            ctx.note(format!(
                "{} users at {} users/s need {needed:.0} s of arrivals, but load.ramp + load.duration is {:.0} s: the rest are not started and count as not joined (raise load.duration or load.rate)",
                eff.users,
                eff.rate,
                ramp + duration
            ));
        }
        ctx.metric("users", eff.users as f64);
        ctx.note(format!(
            "signaling lane alone on CPU {lane_core}; users, room service, popmesh-ctrld and the appliance's other threads on CPU {load_core}"
        ));

        let mut lab = Lab::start(ctx, lane_core, load_core, &load.path)?;
        let phase_load = PhaseLoad {
            users: WARMUP_USERS.min(eff.users),
            rooms: eff.rooms,
            rate: 50,
            ramp_s: 0.0,
            duration_s: 10.0,
            hold_s: 0.0,
        };
        let phase = ctx.begin_phase("warm-up", "a few users through the lane: the mesh works");
        let warm = lab.users(ctx, "warm-up", lab.appliance.inbound, &phase_load, None)?;
        ctx.end_phase(phase);
        if warm.joined < phase_load.users {
            bail!(
                "warm-up: only {} of {} users joined through the lane ({}); see {}/logs/warm-up-users.log and {}/logs/dataplane.log",
                warm.joined,
                phase_load.users,
                warm.failures(),
                ctx.out_dir().display(),
                ctx.out_dir().display()
            );
        }

        let phase_load = PhaseLoad {
            users: eff.users,
            rooms: eff.rooms,
            rate: eff.rate,
            ramp_s: ramp,
            duration_s: duration,
            hold_s: HOLD_S,
        };
        for lane in [false, true] {
            let name = if lane { "lane" } else { "direct" };
            let phase = ctx.begin_phase(
                name,
                if lane {
                    "users -> popmesh signaling lane (mTLS, policy) -> room service"
                } else {
                    "the same users straight to the room service (mTLS, no appliance)"
                },
            );
            let target = if lane {
                lab.appliance.inbound
            } else {
                lab.rooms_addr
            };
            let before = (lab.appliance.lane_cpu_ns(), lab.appliance.rss_kib());
            let stat_before = read_proc_stat();
            let mut watch = lane.then(ApplianceWatch::default);
            let summary = lab.users(ctx, name, target, &phase_load, watch.as_mut())?;
            let cpu_ns = lab.appliance.lane_cpu_ns().saturating_sub(before.0);
            let lane_core_busy = crate::cpu::core_busy_percent(&stat_before, &read_proc_stat())
                .get(&lane_core)
                .copied();
            self.phase_metrics(ctx, name, &summary)?;
            let wall_s = watch.as_ref().map_or(0.0, |w| w.wall_s);
            let lane_percent = if wall_s > 0.0 {
                100.0 * cpu_ns as f64 / (wall_s * 1e9)
            } else {
                0.0
            };
            // The lane's CPU should be the lane's alone; say so when something else ran there.
            if let Some(busy) = lane_core_busy {
                let foreign = (busy - lane_percent).max(0.0);
                if foreign > 10.0 {
                    ctx.note(format!(
                        "{name}: CPU {lane_core} (the lane's) was {busy:.0}% busy, {foreign:.0} points of it not the lane: other processes ran there, so these figures were measured under CPU contention"
                    ));
                }
            }
            if let Some(w) = watch {
                if w.wall_s > 0.0 {
                    ctx.metric("signaling_cpu_percent", lane_percent);
                }
                if summary.joined > 0 {
                    ctx.metric(
                        "signaling_cpu_us_per_join",
                        cpu_ns as f64 / 1e3 / summary.joined as f64,
                    );
                }
                if let (Some(b), Some(peak)) = (before.1, w.peak_rss_kib) {
                    ctx.metric("lane_rss_mib", peak as f64 / 1024.0);
                    if summary.open_at_end > 0 {
                        ctx.metric(
                            "lane_memory_per_connection_kib",
                            peak.saturating_sub(b) as f64 / summary.open_at_end as f64,
                        );
                    }
                }
                ctx.series("rss.lane.appliance", "MiB", w.rss_mib);
                ctx.metric("open_websockets", summary.open_at_end as f64);
            }
            ctx.end_phase(phase);
        }
        for suffix in ["p50_us", "p99_us", "p999_us", "request_p99_us"] {
            let (l, d) = (
                format!("lane_join_{suffix}"),
                format!("direct_join_{suffix}"),
            );
            if let (Some(a), Some(b)) = (ctx.metrics.get(&l), ctx.metrics.get(&d)) {
                let diff = a.value - b.value;
                ctx.metric(&format!("added_join_{suffix}"), diff);
            }
        }
        lab.stop();
        Ok(())
    }
}

impl ControlPlaneDriver {
    fn phase_metrics(
        &self,
        ctx: &mut RunContext,
        name: &str,
        s: &UsersSummary,
    ) -> anyhow::Result<()> {
        if let Some(l) = s.join_total {
            ctx.metric(&format!("{name}_join_p50_us"), l.p50_us);
            ctx.metric(&format!("{name}_join_p99_us"), l.p99_us);
            ctx.metric(&format!("{name}_join_p999_us"), l.p999_us);
        }
        if let Some(l) = s.join_request {
            ctx.metric(&format!("{name}_join_request_p99_us"), l.p99_us);
        }
        ctx.metric(&format!("{name}_joined_ratio"), s.joined_ratio());
        if s.arrivals_s > 0.0 {
            ctx.metric(
                &format!("{name}_joins_per_s"),
                s.joined as f64 / s.arrivals_s,
            );
        }
        let failures = s.failures();
        if !failures.is_empty() || s.not_started > 0 {
            ctx.note(format!(
                "{name}: {} of {} users joined, {} WebSockets open at the end; failed: {}; not started: {}",
                s.joined,
                s.users,
                s.open_at_end,
                if failures.is_empty() { "none".to_string() } else { failures },
                s.not_started
            ));
        }
        let offset = ctx.mono_to_s(s.start_monotonic_ns);
        ctx.series(
            format!("users.{name}.open_websockets"),
            "websockets",
            s.open_over_time
                .iter()
                .map(|[t, n]| [t + offset, *n])
                .collect(),
        );
        for (cdf, file) in [
            (name.to_string(), format!("{name}-join.hlog")),
            (
                format!("{name}-request"),
                format!("{name}-join-request.hlog"),
            ),
        ] {
            let path = ctx.out_dir().join(&file);
            let log = LatencyLog::read(&path)?;
            ctx.series(format!("latency_p99.{cdf}"), "us", log.p99_series(offset));
            ctx.cdfs.push(Cdf {
                name: cdf,
                samples: log.total.len(),
                points: hlog::cdf_points(&log.total, CDF_POINTS),
                hlog: Some(file),
            });
        }
        Ok(())
    }
}

/// One phase's load for `popmesh-rooms users`.
#[derive(Debug, Clone, Copy)]
struct PhaseLoad {
    users: u64,
    rooms: u64,
    rate: u64,
    ramp_s: f64,
    duration_s: f64,
    hold_s: f64,
}

/// What the harness watches of the appliance while a lane phase runs.
#[derive(Debug, Default)]
struct ApplianceWatch {
    wall_s: f64,
    peak_rss_kib: Option<u64>,
    rss_mib: Vec<[f64; 2]>,
}

/// The running lab of this scenario.
#[derive(Debug)]
struct Lab {
    ctrld: Ctrld,
    appliance: SignalingAppliance,
    rooms: ChildGuard,
    rooms_addr: SocketAddr,
    user_svid: Svid,
    rooms_bin: PathBuf,
    join_path: String,
    load_core: usize,
    raw: PathBuf,
}

impl Lab {
    fn start(
        ctx: &mut RunContext,
        lane_core: usize,
        load_core: usize,
        join_path: &str,
    ) -> anyhow::Result<Self> {
        let phase = ctx.begin_phase(
            "lab",
            "popmesh-ctrld, SVIDs, room service, appliance, mesh programmed and acknowledged",
        );
        let rooms_bin = ctx.binary("popmesh-rooms")?;
        let dir = ctx.out_dir().join("lab");
        let raw = ctx.out_dir().join("raw");
        for d in [&dir, &raw] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let ctrld = Ctrld::start(ctx, &dir, TRUST_DOMAIN, Some(load_core))?;
        let ids = dir.join("identities");
        let rooms_svid = ctrld.issue_svid(SvidKind::Service, "rooms", "rooms", &ids)?;
        let user_svid = ctrld.issue_svid(SvidKind::Service, "user", "viewer", &ids)?;
        let rooms_addr = lab::free_tcp()?;
        let mut cmd = Command::new(&rooms_bin);
        cmd.arg("serve")
            .args(["--listen", &rooms_addr.to_string()])
            .args(["--join-path", join_path])
            .args(["--ws-path", &ws_path(join_path)])
            .args(["--core", &load_core.to_string()])
            .args(["--max-runtime", "7300"]);
        tls_args(&mut cmd, &rooms_svid);
        let mut rooms = ctx.spawn("rooms-serve", cmd, Some(load_core))?;
        let log = ctx.out_dir().join("logs").join("rooms-serve.log");
        lab::wait_for_line(ctx, &mut rooms, &log, "listening ", Duration::from_secs(20))?;

        let spec = ApplianceSpec::new(load_core, lane_core)?;
        let appliance = ctrld.start_appliance(ctx, &spec, &dir)?;
        ctx.appliance_config_toml = Some(appliance.config_toml.clone());
        ctx.watch_threads(Some(appliance.child.pid()));

        // The operator's mesh: the room service behind the join path's first segment,
        // callable by the user namespace only.
        let prefix = route_prefix(join_path);
        let written = Instant::now();
        ctrld.put_service(pb::Service {
            name: "rooms".into(),
            groups: vec![pb::EndpointGroup {
                version: "v1".into(),
                endpoints: vec![rooms_addr.to_string()],
            }],
            default_version: "v1".into(),
            timeout_ms: 15_000,
            ..Default::default()
        })?;
        ctrld.put_route(pb::Route {
            name: "rooms".into(),
            host: "*".into(),
            path_prefix: prefix.clone(),
            service: "rooms".into(),
            ..Default::default()
        })?;
        let version = ctrld.put_policy(pb::Policy {
            name: "users-enter-rooms".into(),
            sources: vec![format!("spiffe://{TRUST_DOMAIN}/ns/user/sa/*")],
            destination: "rooms".into(),
            action: pb::PolicyAction::Allow as i32,
            ..Default::default()
        })?;
        let acked = ctrld.until_acked(ctx, APPLIANCE, version, Duration::from_secs(30))?;
        ctx.note(format!(
            "mesh (service rooms -> {rooms_addr}, route {prefix}, policy ns/user -> rooms) is config version {version}, acknowledged by {APPLIANCE} {:.0} ms after the first write ({:.0} ms after the last)",
            written.elapsed().as_secs_f64() * 1e3,
            acked.as_secs_f64() * 1e3
        ));
        ctx.end_phase(phase);
        Ok(Self {
            ctrld,
            appliance,
            rooms,
            rooms_addr,
            user_svid,
            rooms_bin,
            join_path: join_path.to_string(),
            load_core,
            raw,
        })
    }

    /// Runs `popmesh-rooms users` against `target` until it exits; returns its summary.
    fn users(
        &mut self,
        ctx: &RunContext,
        name: &str,
        target: SocketAddr,
        load: &PhaseLoad,
        mut watch: Option<&mut ApplianceWatch>,
    ) -> anyhow::Result<UsersSummary> {
        let json = self.raw.join(format!("{name}-users.json"));
        let mut cmd = Command::new(&self.rooms_bin);
        cmd.arg("users")
            .args(["--target", &target.to_string()])
            .args(["--users", &load.users.to_string()])
            .args(["--rooms", &load.rooms.to_string()])
            .args(["--rate", &load.rate.to_string()])
            .args(["--ramp", &format!("{:.3}", load.ramp_s)])
            .args(["--duration", &format!("{:.3}", load.duration_s)])
            .args(["--hold", &format!("{:.3}", load.hold_s)])
            .args(["--timeout", &format!("{USER_TIMEOUT_S}")])
            .args(["--join-path", &self.join_path])
            .args(["--ws-path", &ws_path(&self.join_path)])
            .args(["--core", &self.load_core.to_string()])
            .arg("--json")
            .arg(&json)
            .arg("--hlog")
            .arg(ctx.out_dir().join(format!("{name}-join.hlog")))
            .arg("--hlog-request")
            .arg(ctx.out_dir().join(format!("{name}-join-request.hlog")));
        tls_args(&mut cmd, &self.user_svid);
        let expected = arrivals_s(load.users, load.rate, load.ramp_s, load.duration_s)
            + USER_TIMEOUT_S
            + load.hold_s;
        let limit = Duration::from_secs_f64(expected + 60.0);
        let started = Instant::now();
        let mut child = ctx.spawn(&format!("{name}-users"), cmd, Some(self.load_core))?;
        let log = ctx.out_dir().join("logs").join(format!("{name}-users.log"));
        let mut next_line = started + Duration::from_secs(1);
        let mut next_sample = started;
        let status = loop {
            if let Some(status) = child.try_wait() {
                break status;
            }
            if ctx.interrupted() {
                bail!("interrupted during phase {name}; children stopped");
            }
            for c in [&mut self.appliance.child, &mut self.rooms] {
                if let Some(st) = c.try_wait() {
                    bail!(
                        "{} exited during phase {name} ({st}); see {}/logs/{}.log",
                        c.name,
                        ctx.out_dir().display(),
                        c.name
                    );
                }
            }
            let now = Instant::now();
            if now >= next_sample {
                next_sample = now + Duration::from_millis(250);
                if let Some(w) = watch.as_deref_mut() {
                    if let Some(kib) = self.appliance.rss_kib() {
                        w.peak_rss_kib = Some(w.peak_rss_kib.map_or(kib, |p| p.max(kib)));
                        w.rss_mib.push([ctx.elapsed_s(), kib as f64 / 1024.0]);
                    }
                }
            }
            if now >= next_line {
                next_line += Duration::from_secs(1);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let last = text
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("t="))
                    .unwrap_or("");
                ctx.say(&format!(
                    "popmesh-perf [{:>4.0} s] {name} {:>3.0}/{:.0} s: {last}",
                    ctx.elapsed_s(),
                    started.elapsed().as_secs_f64(),
                    expected
                ));
            }
            if started.elapsed() > limit {
                bail!(
                    "{name}: popmesh-rooms users did not finish within {:.0} s and was killed; see {}",
                    limit.as_secs_f64(),
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(w) = watch {
            w.wall_s = started.elapsed().as_secs_f64();
        }
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            bail!(
                "{name}: popmesh-rooms users failed ({status}): {}; see {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                log.display()
            );
        }
        let text =
            std::fs::read_to_string(&json).with_context(|| format!("read {}", json.display()))?;
        UsersSummary::parse(&text).with_context(|| format!("parse {}", json.display()))
    }

    fn stop(mut self) {
        let _ = self.appliance.child.terminate(Duration::from_secs(10));
        let _ = self.rooms.terminate(Duration::from_secs(5));
        let _ = self.ctrld.child.terminate(Duration::from_secs(5));
    }
}

fn tls_args(cmd: &mut Command, svid: &Svid) {
    cmd.arg("--cert")
        .arg(&svid.cert)
        .arg("--key")
        .arg(&svid.key)
        .arg("--ca")
        .arg(&svid.ca)
        .args(["--trust-domain", TRUST_DOMAIN]);
}

/// The route prefix of a join path: its first segment (`/rooms/join` -> `/rooms`), so the
/// WebSocket next to it takes the same route.
pub fn route_prefix(join_path: &str) -> String {
    let rest = join_path.trim_start_matches('/');
    match rest.split_once('/') {
        Some((first, _)) if !first.is_empty() => format!("/{first}"),
        _ => join_path.to_string(),
    }
}

/// The WebSocket path next to a join path (`/rooms/join` -> `/rooms/ws`).
pub fn ws_path(join_path: &str) -> String {
    let prefix = route_prefix(join_path);
    if prefix == join_path {
        format!("{join_path}-ws")
    } else {
        format!("{prefix}/ws")
    }
}
