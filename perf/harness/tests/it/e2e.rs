//! One short data-plane run and two short stability runs in local-lab mode against the real
//! binaries: popmesh-dataplane relays, popmesh-rtp sends and receives, popmesh-impair impairs,
//! and the harness writes its report files.
//!
//! The binaries are taken from this test's own target directory (where `cargo nextest run
//! --workspace` puts them); when they are missing the test builds them with cargo first. No
//! assertion is about speed: only that every phase ran and its figures are in the report.

use std::path::{Path, PathBuf};
use std::process::Command;

use popmesh_capacity::hlog::LatencyLog;
use popmesh_capacity::report::Report;

const BIN: &str = env!("CARGO_BIN_EXE_popmesh-perf");

/// A finished `popmesh-perf run`: its exit status, progress stream, output and report directory.
pub(crate) struct Run {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stderr: String,
    pub(crate) stdout: String,
    pub(crate) out: PathBuf,
    _dir: tempfile::TempDir,
}

/// Runs the scenario text `toml` (saved as `file`) against a local lab of this target
/// directory's binaries. `None`, after saying so, on a machine with fewer than 2 CPUs (`why`
/// names what the two are for).
pub(crate) fn run_scenario(file: &str, toml: &str, why: &str) -> Option<Run> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        println!("skipped: needs 2 CPUs ({why}), this machine has {cpus}");
        return None;
    }
    ensure_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join(file);
    std::fs::write(&scenario, toml).expect("write scenario");
    let out = dir.path().join("out");
    let run = Command::new(BIN)
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .arg("--bin-dir")
        .arg(bin_dir())
        .output()
        .expect("run popmesh-perf");
    Some(Run {
        status: run.status,
        stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&run.stdout).into_owned(),
        out,
        _dir: dir,
    })
}

fn bin_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// Makes sure the binaries the scenarios start exist next to popmesh-perf.
fn ensure_binaries() {
    let dir = bin_dir();
    if [
        "popmesh-dataplane",
        "popmesh-rtp",
        "popmesh-impair",
        "popmesh-ctrld",
        "popmesh-rooms",
    ]
    .iter()
    .all(|b| dir.join(b).is_file())
    {
        return;
    }
    let cargo = std::env::var("CARGO")
        .unwrap_or_else(|_| option_env!("CARGO").unwrap_or("cargo").to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args([
            "build",
            "-p",
            "popmesh-dataplane",
            "-p",
            "popmesh-perf",
            "-p",
            "popmesh-ctrld",
            "-p",
            "popmesh-signal-bench",
            "--bins",
        ]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(
        status.success(),
        "building popmesh-dataplane and popmesh-perf failed"
    );
    assert!(
        dir.join("popmesh-dataplane").is_file(),
        "cargo built popmesh-dataplane elsewhere than {}",
        dir.display()
    );
}

const SCENARIO: &str = r#"
[scenario]
name = "e2e"
kind = "data-plane"
description = "a two-second smoke run"
[target]
mode = "local-lab"
[target.local_lab]
base_port = 53000
[load]
rate = 2000
ramp = 0
duration = 1
concurrency = 1
[load.data_plane]
publishers = 1
viewers_per_publisher = 2
peak_duration = 0.5
step_duration = 0.5
flows_steps = [50]
active_flows = 8
fanout_steps = [3]
fanout_pps = 200
[[threshold]]
metric = "lane_loss_ratio"
max = 0.5
source = "ours"
description = "most media arrives"
[[threshold]]
metric = "fanout[3].delivered_pps"
min = 1
source = "ours"
"#;

#[test]
fn a_short_data_plane_run_writes_its_report() {
    let Some(run) = run_scenario("e2e.toml", SCENARIO, "media core 1, load core 0") else {
        return;
    };
    let (stderr, out) = (&run.stderr, &run.out);
    let stdout = &run.stdout;
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "popmesh-perf run failed ({:?}):\n{stderr}\n{stdout}",
        run.status
    );
    // The progress stream says what it does.
    assert!(stderr.contains("phase lane"), "{stderr}");

    let report = Report::from_file(&out.join("report.json")).expect("report.json parses");
    for phase in [
        "lane",
        "direct",
        "fixed-rate",
        "peak",
        "flows-50",
        "fanout-3",
    ] {
        assert!(
            report.phases.iter().any(|p| p.name == phase),
            "phase {phase} missing: {:?}",
            report.phases
        );
    }
    for metric in [
        "lane_latency_p99_us",
        "direct_latency_p99_us",
        "added_latency_p99_us",
        "lane_loss_ratio",
        "lane_stall_rate_per_viewer_min",
        "peak_cpu_ns_per_packet",
        "flows[50].pps",
        "fanout[3].delivered_pps",
    ] {
        assert!(
            report.metrics.contains_key(metric),
            "{metric} not measured: {:?}",
            report.metrics.keys()
        );
    }
    assert_eq!(report.verdicts.len(), 2);
    assert!(
        report.series.iter().any(|s| s.name.starts_with("cpu.core")),
        "no CPU series"
    );
    assert!(
        report.series.iter().any(|s| s.name == "pps.lane.viewers"),
        "no viewer pps series"
    );
    assert_eq!(report.stalls.len(), 2, "lane and direct stall timelines");
    assert!(report
        .environment
        .scenario_toml
        .contains("[load.data_plane]"));
    assert!(report
        .environment
        .appliance_config_toml
        .as_deref()
        .is_some_and(|c| c.contains("[[sessions]]")));

    // The latency logs read back and hold the lane's packets.
    let lane = LatencyLog::read(&out.join("lane-sink-latency.hlog")).expect("lane hlog");
    assert!(!lane.total.is_empty(), "empty lane latency log");
    assert!(out.join("direct-sink-latency.hlog").is_file());
    assert!(report
        .latency_cdfs
        .iter()
        .any(|c| c.name == "lane" && !c.points.is_empty()));

    // The page is self-contained: inline SVG, no script, nothing fetched.
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(
        html.contains("<svg") && html.contains("Thresholds"),
        "no plots"
    );
    for forbidden in ["<script", "src=", "href=\"http", "@import"] {
        assert!(
            !html.contains(forbidden),
            "report.html contains {forbidden}"
        );
    }
}

const STABILITY: &str = r#"
[scenario]
name = "e2e-stability"
kind = "stability"
[target]
mode = "local-lab"
[target.local_lab]
base_port = 54000
[load]
duration = 10
[load.stability]
publishers = 1
viewers_per_publisher = 2
[[load.stability.faults]]
kind = "jitter"
at = 2.5
duration = 1
delay_ms = 30
jitter_ms = 10
[[load.stability.faults]]
kind = "loss"
at = 4
duration = 1
loss_percent = 20
[[load.stability.faults]]
kind = "restart-appliance"
at = 5.5
duration = 1
[[threshold]]
metric = "fault[2].recovery_ms"
max = 5000
source = "ours"
"#;

#[test]
fn a_short_stability_run_reports_every_fault() {
    let Some(run) = run_scenario("stability.toml", STABILITY, "media core 1, load core 0") else {
        return;
    };
    let (stderr, out) = (&run.stderr, &run.out);
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "popmesh-perf run failed ({:?}):\n{stderr}",
        run.status
    );
    assert!(stderr.contains("fault[2]: SIGTERM"), "{stderr}");
    let report = Report::from_file(&out.join("report.json")).expect("report.json parses");
    assert_eq!(report.faults.len(), 3, "{:?}", report.faults);
    for metric in [
        "fault[0].recovery_ms",
        "fault[0].relay_delayed",
        "fault[1].relay_dropped",
        "fault[1].loss_ratio",
        "fault[2].restart_ms",
        "fault[2].lost_packets",
        "fault[2].recovery_ms",
        "stalls_total",
        "baseline_loss_ratio",
    ] {
        assert!(
            report.metrics.contains_key(metric),
            "{metric} not measured: {:?}\n{:?}",
            report.metrics.keys(),
            report.notes
        );
    }
    let m = |k: &str| report.metrics[k].value;
    // The relay dropped about 20% of one second of ~600 pps.
    assert!(
        m("fault[1].relay_dropped") > 30.0,
        "{}",
        m("fault[1].relay_dropped")
    );
    assert!(
        m("fault[1].loss_ratio") > 0.02,
        "{}",
        m("fault[1].loss_ratio")
    );
    // A second without the appliance loses media and stalls every viewer.
    assert!(
        m("fault[2].lost_packets") > 300.0,
        "{}",
        m("fault[2].lost_packets")
    );
    assert!(m("fault[2].stalls") >= 2.0, "{}", m("fault[2].stalls"));
    assert!(report
        .series
        .iter()
        .any(|s| s.name == "pps.stability.viewers" && !s.points.is_empty()));
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("<h2>Faults</h2>") && html.contains("restart-appliance"));
}

const CONTROL_FAULTS: &str = r#"
[scenario]
name = "e2e-control-faults"
kind = "stability"
[target]
mode = "local-lab"
[target.local_lab]
base_port = 55000
[load]
duration = 23
[load.stability]
publishers = 1
viewers_per_publisher = 2
[[load.stability.faults]]
kind = "restart-ctrld"
at = 2.5
duration = 1
[[load.stability.faults]]
kind = "flow-churn"
at = 5
duration = 2
rate = 100
[[load.stability.faults]]
kind = "kill-upstream"
at = 7.5
duration = 1.5
rate = 40
[[load.stability.faults]]
kind = "fail-upstream"
at = 16.5
duration = 2
rate = 40
[[threshold]]
metric = "fault[0].acked_lost"
max = 0
source = "ours"
"#;

#[test]
fn control_daemon_kill_session_churn_and_dead_or_failing_upstreams_are_survived() {
    let Some(run) = run_scenario(
        "control-faults.toml",
        CONTROL_FAULTS,
        "media core 1, load core 0",
    ) else {
        return;
    };
    let (stderr, out) = (&run.stderr, &run.out);
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "popmesh-perf run failed ({:?}):\n{stderr}",
        run.status
    );
    assert!(stderr.contains("SIGKILL to popmesh-ctrld"), "{stderr}");
    let report = Report::from_file(&out.join("report.json")).expect("report.json parses");
    let m = |k: &str| {
        report
            .metrics
            .get(k)
            .unwrap_or_else(|| {
                panic!(
                    "{k} not measured: {:?}\n{:?}",
                    report.metrics.keys(),
                    report.notes
                )
            })
            .value
    };
    assert_eq!(m("fault[0].acked_lost"), 0.0, "{:?}", report.notes);
    assert!(m("fault[0].resync_ms") > 0.0);
    // The appliance forwards while the daemon is dead, and next to churned sessions.
    assert!(
        m("fault[0].loss_ratio") < 0.01,
        "{}",
        m("fault[0].loss_ratio")
    );
    assert!(
        m("fault[1].sessions_churned") >= 150.0,
        "{}",
        m("fault[1].sessions_churned")
    );
    assert!(
        m("fault[1].loss_ratio") < 0.01,
        "{}",
        m("fault[1].loss_ratio")
    );
    assert!(m("fault[1].churn_ack_ms") >= 0.0);
    assert_eq!(
        m("fault[1].churn_rejected"),
        0.0,
        "a churn version was refused: {:?}",
        report.notes
    );
    // One of two endpoints dies: the lane ejects it or its health checks take it out, the
    // requests keep succeeding or fail briefly, and it is readmitted after its restart. Dead
    // for 1.5 s it can be ejected twice (1 s, then 2 s: the ejection time doubles), so on a
    // loaded machine readmission may take a little over 2 s after the restart; the next fault
    // starts 7.5 s after this one ends so the two never overlap.
    let recovery = m("fault[2].signal_recovery_ms");
    assert!(
        recovery < 6000.0,
        "recovery {recovery} ms: {:?}",
        report.notes
    );
    assert!(
        m("fault[2].error_ratio") < 0.5,
        "{}",
        m("fault[2].error_ratio")
    );
    assert!(m("fault[2].ejections") >= 0.0 && m("breaker_trips") >= 0.0);
    assert!(
        m("fault[2].loss_ratio") < 0.01,
        "media is not signaling: {}",
        m("fault[2].loss_ratio")
    );
    assert!(report
        .series
        .iter()
        .any(|s| s.name == "rps.signal.ok" && !s.points.is_empty()));
    // An endpoint answering 503: traffic keeps flowing through the healthy endpoint (most
    // joins succeed), and the harness measures ejections and health-check removal. Whether
    // outlier detection or a health check takes it out of rotation depends on timing:
    // power-of-two-choices already steers away after the first errors, so on a loaded machine
    // it may never see 3 in a row. That an ejection happens after exactly the configured
    // failures is tested in popmesh-signal.
    assert!(m("fault[3].ejections") >= 0.0 && m("fault[3].health_check_removed") >= 0.0);
    assert!(
        m("fault[3].error_ratio") < 0.5,
        "{}",
        m("fault[3].error_ratio")
    );
}

/// A popmesh-dataplane this test starts itself and then treats as somebody else's appliance:
/// killed when dropped.
struct ForeignAppliance(std::process::Child);

impl Drop for ForeignAppliance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_data_plane_run_against_a_remote_appliance_measures_the_lane_only() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        println!("skipped: needs 2 CPUs (media core 1, load core 0), this machine has {cpus}");
        return;
    }
    ensure_binaries();
    // The "remote" appliance: one publisher's audio and video sessions, two viewers each.
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free admin port");
    let viewers = ["127.0.0.1:57100", "127.0.0.1:57101"];
    let subs = viewers.map(|v| format!("\"{v}\"")).join(", ");
    let config = format!(
        "[admin]\nlisten = \"{admin}\"\n[log]\nlevel = \"warn\"\n\
         [media]\nbackend = \"uring\"\ncores = [1]\n[housekeeping]\ncores = [0]\n\
         [[media.ports]]\nname = \"remote\"\nbind = \"127.0.0.1:57000\"\ncount = 2\n\
         [[sessions]]\nname = \"pub0-audio\"\ningress = \"127.0.0.1:57000\"\nsubscribers = [{subs}]\n\
         [[sessions]]\nname = \"pub0-video\"\ningress = \"127.0.0.1:57001\"\nsubscribers = [{subs}]\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("remote-appliance.toml");
    std::fs::write(&config_path, config).expect("write config");
    let _appliance = ForeignAppliance(
        Command::new(bin_dir().join("popmesh-dataplane"))
            .arg("--config")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start popmesh-dataplane"),
    );
    let ready = |a: std::net::SocketAddr| {
        ureq::get(&format!("http://{a}/readyz"))
            .timeout(std::time::Duration::from_secs(1))
            .call()
            .is_ok()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready(admin) {
        assert!(
            std::time::Instant::now() < deadline,
            "the appliance was not ready within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let scenario = format!(
        r#"
[scenario]
name = "e2e-remote"
kind = "data-plane"
[target]
mode = "remote"
[target.remote]
admin = "{admin}"
ingress = ["127.0.0.1:57000", "127.0.0.1:57001"]
viewers = ["{}", "{}"]
[load]
ramp = 0
duration = 2
[load.data_plane]
publishers = 1
viewers_per_publisher = 2
peak_duration = 0.5
flows_steps = [50]
fanout_steps = [3]
[[threshold]]
metric = "lane_loss_ratio"
max = 0.5
source = "ours"
"#,
        viewers[0], viewers[1]
    );
    let Some(run) = run_scenario("remote.toml", &scenario, "media core 1, load core 0") else {
        return;
    };
    let (stderr, out) = (&run.stderr, &run.out);
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "popmesh-perf run failed ({:?}):\n{stderr}\n{}",
        run.status,
        run.stdout
    );
    let report = Report::from_file(&out.join("report.json")).expect("report.json parses");
    let phases: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(phases, ["lane"], "{:?}", report.notes);
    assert_eq!(report.environment.backend, "remote");
    let m = |k: &str| {
        report
            .metrics
            .get(k)
            .unwrap_or_else(|| panic!("{k} not measured: {:?}", report.metrics.keys()))
            .value
    };
    // Both streams reached both viewers through the appliance.
    assert!(m("lane_loss_ratio") < 0.5, "{}", m("lane_loss_ratio"));
    assert!(m("lane_latency_p50_us") > 0.0);
    assert!(m("lane_delivered_pps") > 0.0);
    // The appliance's own counters were sampled through its admin server; its CPU was not
    // (it is not this harness's process).
    assert!(report
        .series
        .iter()
        .any(|s| s.name == "pps.lane.appliance_tx" && s.points.iter().any(|p| p[1] > 0.0)));
    assert!(!report.metrics.contains_key("lane_media_cpu_percent"));
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("pps.lane.appliance_tx") && html.contains("remote mode ran"));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("remote mode ran the lane phase only")
                && n.contains("direct")
                && n.contains("flows and fan-out")),
        "{:?}",
        report.notes
    );
}
