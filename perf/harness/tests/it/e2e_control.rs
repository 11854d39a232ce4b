//! One short control-plane run in local-lab mode against the real binaries: popmesh-ctrld
//! issues the SVIDs and holds the mesh, popmesh-dataplane's signaling lane proxies, and
//! popmesh-rooms serves the rooms and simulates the users.
//!
//! The lab is run by `e2e.rs`'s `run_scenario` (binaries from this test's own target
//! directory, built with cargo when one is missing). No assertion is about speed: that the lab
//! came up, every user joined through the lane and directly, and the figures are in the report.

use popmesh_capacity::hlog::LatencyLog;
use popmesh_capacity::report::Report;

use crate::e2e::run_scenario;

const SCENARIO: &str = r#"
[scenario]
name = "e2e-control"
kind = "control-plane"
description = "200 users, two-second phases"
[target]
mode = "local-lab"
[load]
rate = 100
ramp = 0
duration = 2
[load.control_plane]
users = 200
rooms = 20
[[threshold]]
metric = "lane_joined_ratio"
min = 1
source = "ours"
description = "every user joins through the lane"
[[threshold]]
metric = "added_join_p99_us"
max = 1e12
source = "ours"
description = "measured at all"
"#;

#[test]
fn a_short_control_plane_run_joins_every_user_both_ways() {
    let Some(run) = run_scenario("e2e-control.toml", SCENARIO, "lane core 1, load core 0") else {
        return;
    };
    let (stderr, out) = (&run.stderr, &run.out);
    let stdout = &run.stdout;
    let report = Report::from_file(&out.join("report.json"));
    assert!(
        run.status.success(),
        "popmesh-perf run failed ({:?}):\n{stderr}\n{stdout}\nnotes: {:?}",
        run.status,
        report.as_ref().map(|r| &r.notes)
    );
    assert!(stderr.contains("phase lane"), "{stderr}");
    let report = report.expect("report.json parses");
    for phase in ["lab", "warm-up", "direct", "lane"] {
        assert!(
            report.phases.iter().any(|p| p.name == phase),
            "phase {phase} missing: {:?}",
            report.phases
        );
    }
    for metric in [
        "lane_join_p50_us",
        "lane_join_p99_us",
        "lane_join_p999_us",
        "direct_join_p99_us",
        "added_join_p99_us",
        "lane_join_request_p99_us",
        "signaling_cpu_percent",
        "lane_memory_per_connection_kib",
    ] {
        assert!(
            report.metrics.contains_key(metric),
            "{metric} not measured: {:?}",
            report.metrics.keys()
        );
    }
    let value = |m: &str| report.metrics.get(m).map(|m| m.value);
    assert_eq!(value("lane_joined_ratio"), Some(1.0), "{:?}", report.notes);
    assert_eq!(
        value("direct_joined_ratio"),
        Some(1.0),
        "{:?}",
        report.notes
    );
    assert_eq!(value("open_websockets"), Some(200.0), "{:?}", report.notes);
    assert!(
        report
            .series
            .iter()
            .any(|s| s.name == "users.lane.open_websockets" && !s.points.is_empty()),
        "no open-WebSockets series"
    );
    assert!(
        report
            .series
            .iter()
            .any(|s| s.name.starts_with("cpu.thread.signal-")),
        "the lane's thread was not sampled: {:?}",
        report.series.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(report
        .environment
        .appliance_config_toml
        .as_deref()
        .is_some_and(|c| c.contains("[[signaling.listeners]]") && c.contains("[control]")));
    let lane = LatencyLog::read(&out.join("lane-join.hlog")).expect("lane hlog");
    assert_eq!(lane.total.len(), 200, "one join per user in the lane log");
    assert!(report
        .latency_cdfs
        .iter()
        .any(|c| c.name == "direct" && c.samples == 200));
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("Join latency CDF"), "no join CDF in the page");
}
