//! `compare`: direction-aware regressions, tolerance, table and exit status.

use std::collections::BTreeMap;
use std::process::Command;

use popmesh_capacity::compare::{compare, parse_tolerance, table, Change};
use popmesh_capacity::metrics::Better;
use popmesh_capacity::report::{Environment, Metric, Overall, Report, ScenarioInfo};

fn m(value: f64, better: Better) -> Metric {
    Metric {
        value,
        unit: "x".into(),
        better,
    }
}

fn map(items: &[(&str, f64, Better)]) -> BTreeMap<String, Metric> {
    items
        .iter()
        .map(|(n, v, b)| (n.to_string(), m(*v, *b)))
        .collect()
}

#[test]
fn direction_decides_what_is_worse() {
    let a = map(&[
        ("lat", 100.0, Better::Lower),
        ("pps", 100.0, Better::Higher),
        ("cpu", 100.0, Better::Lower),
        ("tput", 100.0, Better::Higher),
        ("info", 100.0, Better::Neither),
        ("only_a", 1.0, Better::Lower),
    ]);
    let b = map(&[
        ("lat", 115.0, Better::Lower),   // +15%: worse
        ("pps", 85.0, Better::Higher),   // -15%: worse
        ("cpu", 80.0, Better::Lower),    // -20%: better
        ("tput", 105.0, Better::Higher), // +5%: within
        ("info", 500.0, Better::Neither),
        ("only_b", 1.0, Better::Lower),
    ]);
    let c = compare(&a, &b, 0.10);
    let by: BTreeMap<&str, Change> = c
        .rows
        .iter()
        .map(|r| (r.metric.as_str(), r.change))
        .collect();
    assert_eq!(by["lat"], Change::Regressed);
    assert_eq!(by["pps"], Change::Regressed);
    assert_eq!(by["cpu"], Change::Improved);
    assert_eq!(by["tput"], Change::Same);
    assert_eq!(by["info"], Change::Info);
    assert!(c.has_regression());
    assert_eq!(c.only_a, ["only_a"]);
    assert_eq!(c.only_b, ["only_b"]);
    let text = table(&c);
    assert!(
        text.contains("REGRESSED") && text.contains("2 regression(s)"),
        "{text}"
    );
    // A wider tolerance forgives them.
    assert!(!compare(&a, &b, 0.2).has_regression());
}

#[test]
fn from_zero_any_rise_of_a_lower_is_better_metric_regresses() {
    let a = map(&[("stalls", 0.0, Better::Lower), ("loss", 0.0, Better::Lower)]);
    let b = map(&[("stalls", 0.5, Better::Lower), ("loss", 0.0, Better::Lower)]);
    let c = compare(&a, &b, 0.1);
    assert_eq!(c.rows[0].relative, Some(0.0)); // loss, sorted by name
    assert_eq!(c.rows[1].relative, None);
    assert_eq!(c.rows[1].change, Change::Regressed);
}

#[test]
fn tolerances_parse_as_percent() {
    assert_eq!(parse_tolerance("10%"), Ok(0.1));
    assert_eq!(parse_tolerance("2.5"), Ok(0.025));
    assert_eq!(parse_tolerance(" 0 % "), Ok(0.0));
    for bad in ["", "x%", "-1%", "nan", "5000%"] {
        assert!(parse_tolerance(bad).is_err(), "{bad}");
    }
}

fn report(metrics: BTreeMap<String, Metric>) -> Report {
    Report {
        scenario: ScenarioInfo {
            name: "t".into(),
            kind: "data-plane".into(),
            description: String::new(),
        },
        environment: Environment::default(),
        phases: vec![],
        series: vec![],
        latency_cdfs: vec![],
        stalls: vec![],
        faults: vec![],
        metrics,
        verdicts: vec![],
        overall: Overall::Pass,
        notes: vec![],
    }
}

#[test]
fn the_command_exits_1_on_a_regression_and_prints_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, r: &Report| {
        let p = dir.path().join(name);
        std::fs::write(&p, serde_json::to_string(r).expect("json")).expect("write");
        p
    };
    let a = write(
        "a.json",
        &report(map(&[("lane_latency_p99_us", 100.0, Better::Lower)])),
    );
    let b = write(
        "b.json",
        &report(map(&[("lane_latency_p99_us", 120.0, Better::Lower)])),
    );
    let bin = env!("CARGO_BIN_EXE_popmesh-perf");
    let out = Command::new(bin)
        .arg("compare")
        .arg(&a)
        .arg(&b)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("REGRESSED"));
    let out = Command::new(bin)
        .args(["compare", "--tolerance", "25%", "--json"])
        .arg(&a)
        .arg(&b)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(v["rows"][0]["change"], "same");
    let out = Command::new(bin)
        .arg("compare")
        .arg(&a)
        .arg(dir.path().join("nope.json"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.json"));
}

#[test]
fn render_writes_the_page_again_from_the_json_with_every_cdf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = report(map(&[("loss_ratio", 0.01, Better::Lower)]));
    r.scenario.kind = "stability".into();
    r.latency_cdfs.push(popmesh_capacity::report::Cdf {
        name: "stability".into(),
        samples: 3,
        points: vec![[10.0, 0.1], [20.0, 0.5], [40.0, 1.0]],
        hlog: None,
    });
    let json = dir.path().join("report.json");
    std::fs::write(&json, serde_json::to_string(&r).expect("json")).expect("write");
    let bin = env!("CARGO_BIN_EXE_popmesh-perf");
    let out = Command::new(bin)
        .arg("render")
        .arg(&json)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).expect("report.html");
    // The stability run's one CDF is drawn (a legend entry), and a run without media says so.
    assert!(html.contains("faults included") && html.contains(">stability</text>"));
    assert!(html.contains("No media in this run"));
    // A file that is not a report is a usage error naming it.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{}").expect("write");
    let out = Command::new(bin)
        .arg("render")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
}
