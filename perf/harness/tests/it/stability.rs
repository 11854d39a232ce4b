//! The stability scenario's parts that need no lab: its keys and fault rules, the recovery-time
//! and loss computations over a viewer timeline, and the example in configs/perf.

use std::path::Path;

use popmesh_capacity::scenario::{FaultKind, Scenario, ScenarioError};
use popmesh_capacity::stability::{Timeline, SUSTAIN_INTERVALS};
use proptest::prelude::*;

const HEAD: &str = "[scenario]\nname = \"s\"\nkind = \"stability\"\n[target]\nmode = \"local-lab\"\n[load]\nduration = 20\n";

fn invalid(text: &str) -> (String, String, String) {
    match Scenario::from_toml(text) {
        Err(ScenarioError::Invalid { path, value, rule }) => (path, value, rule),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn the_stability_table_has_defaults_and_checks_its_keys() {
    let s = Scenario::from_toml(HEAD).expect("no [load.stability] at all");
    let l = s.stability().expect("stability load");
    assert_eq!((l.publishers, l.viewers_per_publisher), (2, 5));
    assert_eq!((l.interval_ms, l.recovered_percent), (100, 95.0));
    assert_eq!(l.nominal_pps(), 2.0 * 5.0 * 300.0);
    for (key, bad, path) in [
        ("publishers", "0", "load.stability.publishers"),
        (
            "viewers_per_publisher",
            "65",
            "load.stability.viewers_per_publisher",
        ),
        ("interval_ms", "5", "load.stability.interval_ms"),
        ("recovered_percent", "0", "load.stability.recovered_percent"),
        (
            "recovered_percent",
            "101",
            "load.stability.recovered_percent",
        ),
        ("stall_gap_ms", "0", "load.stability.stall_gap_ms"),
        (
            "video",
            "{ pps = 10, size = 20 }",
            "load.stability.video.size",
        ),
    ] {
        let text = format!("{HEAD}[load.stability]\n{key} = {bad}\n");
        assert_eq!(invalid(&text).0, path, "{key} = {bad}");
    }
    let silent = format!(
        "{HEAD}[load.stability]\naudio = {{ pps = 0, size = 100 }}\nvideo = {{ pps = 0, size = 100 }}\n"
    );
    assert_eq!(invalid(&silent).0, "load.stability.video.pps");
    let typo = format!("{HEAD}[load.stability]\npublisher = 3\n");
    assert!(matches!(
        Scenario::from_toml(&typo),
        Err(ScenarioError::Syntax(m)) if m.contains("publisher")
    ));
}

#[test]
fn faults_come_one_at_a_time_and_end_before_the_load() {
    let fault = |at: &str, duration: &str| {
        format!("[[load.stability.faults]]\nkind = \"restart-appliance\"\nat = {at}\nduration = {duration}\n")
    };
    let ok = format!("{HEAD}{}{}", fault("2", "3"), fault("5", "1"));
    let s = Scenario::from_toml(&ok).expect("back to back is fine");
    assert_eq!(
        s.stability().expect("s").faults[1].kind,
        FaultKind::RestartAppliance
    );
    let (path, value, rule) = invalid(&format!("{HEAD}{}{}", fault("2", "3"), fault("4", "1")));
    assert_eq!(
        (path.as_str(), value.as_str()),
        ("load.stability.faults[1].at", "4")
    );
    assert!(rule.contains("previous fault ends (5 s)"), "{rule}");
    let (path, _, rule) = invalid(&format!("{HEAD}{}", fault("15", "5")));
    assert_eq!(path, "load.stability.faults[0].duration");
    assert!(rule.contains("recovery"), "{rule}");
    let (path, _, _) = invalid(&format!(
        "{HEAD}[[load.stability.faults]]\nkind = \"jitter\"\nat = 1\nduration = 1\n"
    ));
    assert_eq!(path, "load.stability.faults[0].delay_ms");
    let thr = format!(
        "{HEAD}{}[[threshold]]\nmetric = \"fault[1].recovery_ms\"\nmax = 1\nsource = \"ours\"\n",
        fault("2", "3")
    );
    let (path, _, rule) = invalid(&thr);
    assert_eq!(path, "threshold[0].metric");
    assert!(rule.contains("fault[0].recovery_ms"), "{rule}");
}

#[test]
fn the_stability_example_sets_the_articles_expectation() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/perf/stability.toml");
    let s = Scenario::from_file(&path).expect("loads");
    let l = s.stability().expect("stability");
    let kinds: Vec<FaultKind> = l.faults.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&FaultKind::Jitter) && kinds.contains(&FaultKind::Loss));
    assert!(kinds.contains(&FaultKind::RestartAppliance));
    assert!(kinds.contains(&FaultKind::RestartCtrld) && kinds.contains(&FaultKind::FlowChurn));
    assert!(s.thresholds.iter().any(|t| t.metric == "max_recovery_ms"
        && t.source == popmesh_capacity::scenario::ThresholdSource::Article));
}

#[test]
fn recovery_of_a_silence_is_where_the_rate_comes_back() {
    // 0.1 s intervals from t = 0, 30 packets nominal, silent 2.0..3.3, the fault ended at 2.5.
    let mut c = vec![30u64; 60];
    for n in &mut c[20..33] {
        *n = 0;
    }
    let t = Timeline {
        counts: &c,
        origin_s: 0.0,
        interval_s: 0.1,
    };
    let r = t
        .recovery_s(2.5, 28.0, SUSTAIN_INTERVALS, 6.0)
        .expect("recovers");
    assert!((r - 0.8).abs() < 1e-9, "{r}");
    let lost = 30.0 * 60.0 - t.received_between(0.0, 6.0);
    assert!((lost - 13.0 * 30.0).abs() < 1e-9, "{lost}");
}

proptest! {
    /// A timeline at the nominal rate with one silent stretch: recovery is the time from the
    /// fault's end to the end of the silence (0 if the silence ended first), to within one
    /// interval, and the loss is the silence.
    #[test]
    fn recovery_matches_the_silence(
        len in 20usize..400,
        gap_start in 0usize..200,
        gap_len in 0usize..100,
        end_offset in 0.0f64..1.0,
        nominal in 1u64..500,
        interval_ms in 10u32..1000,
    ) {
        let w = f64::from(interval_ms) / 1000.0;
        let gap_start = gap_start.min(len);
        let gap_end = (gap_start + gap_len).min(len);
        let mut counts = vec![nominal; len];
        for n in &mut counts[gap_start..gap_end] {
            *n = 0;
        }
        let t = Timeline { counts: &counts, origin_s: 1.5, interval_s: w };
        // The fault ends somewhere inside the silence (or where it would be).
        let end_s = 1.5 + (gap_start as f64 + end_offset * gap_len as f64) * w;
        let limit = 1.5 + len as f64 * w;
        let threshold = nominal as f64 * 0.95;
        match t.recovery_s(end_s, threshold, SUSTAIN_INTERVALS, limit) {
            Some(r) => {
                let back = 1.5 + gap_end as f64 * w;
                let expect = (back - end_s).max(0.0);
                prop_assert!(r >= 0.0);
                prop_assert!((r - expect).abs() <= w + 1e-9, "r {} expected {}", r, expect);
                prop_assert!(gap_end + SUSTAIN_INTERVALS <= len);
            }
            None => prop_assert!(gap_end + SUSTAIN_INTERVALS > len),
        }
        let got = t.received_between(1.5, limit);
        let lost = nominal as f64 * len as f64 - got;
        prop_assert!((lost - nominal as f64 * (gap_end - gap_start) as f64).abs() < 1e-6 * (1.0 + lost.abs()));
    }

    /// Recovery never comes back negative or past the limit, whatever the counts.
    #[test]
    fn recovery_is_bounded(
        counts in proptest::collection::vec(0u64..100, 0..200),
        end_s in -5.0f64..30.0,
        threshold in 0.0f64..120.0,
    ) {
        let t = Timeline { counts: &counts, origin_s: 0.0, interval_s: 0.1 };
        let limit = counts.len() as f64 * 0.1;
        if let Some(r) = t.recovery_s(end_s, threshold, SUSTAIN_INTERVALS, limit) {
            prop_assert!(r >= 0.0);
            prop_assert!(end_s + r <= limit + 1e-9);
        }
    }
}

#[test]
fn control_plane_fault_kinds_parse_with_their_keys() {
    let text = format!(
        "{HEAD}[[load.stability.faults]]\nkind = \"restart-ctrld\"\nat = 2\nduration = 2\n\
         [[load.stability.faults]]\nkind = \"flow-churn\"\nat = 5\nduration = 3\nrate = 500\n\
         [[load.stability.faults]]\nkind = \"flow-churn\"\nat = 9\nduration = 1\n"
    );
    let s = Scenario::from_toml(&text).expect("parses");
    assert_eq!(Scenario::from_toml(&s.to_toml()).expect("round trip"), s);
    let f = &s.stability().expect("s").faults;
    assert_eq!(f[0].kind, FaultKind::RestartCtrld);
    assert_eq!((f[1].kind, f[1].rate), (FaultKind::FlowChurn, Some(500)));
    assert_eq!(
        f[2].rate,
        Some(popmesh_capacity::scenario::DEFAULT_CHURN_RATE),
        "the default rate is written out"
    );
    let (path, _, rule) = invalid(&text.replace("rate = 500", "rate = 0"));
    assert_eq!(path, "load.stability.faults[1].rate");
    assert!(rule.contains("1..=100000"), "{rule}");
    let (path, _, rule) = invalid(&format!(
        "{HEAD}[[load.stability.faults]]\nkind = \"restart-ctrld\"\nat = 2\nduration = 2\nrate = 5\n"
    ));
    assert_eq!(path, "load.stability.faults[0].rate");
    assert!(rule.contains("does not apply"), "{rule}");
}
