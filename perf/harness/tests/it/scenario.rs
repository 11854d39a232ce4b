//! Scenario files: every example loads, bad values name path, value and rule, the parser never
//! panics, and a serialized scenario reads back equal.

use std::path::Path;

use popmesh_capacity::metrics;
use popmesh_capacity::scenario::{
    Bound, KindLoad, Scenario, ScenarioError, ScenarioKind, Target, ThresholdSource,
};
use proptest::prelude::*;

const MINIMAL: &str = r#"
[scenario]
name = "t"
kind = "data-plane"
[target]
mode = "local-lab"
"#;

fn invalid(text: &str) -> (String, String, String) {
    match Scenario::from_toml(text) {
        Err(ScenarioError::Invalid { path, value, rule }) => (path, value, rule),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn every_example_in_configs_perf_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/perf");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/perf exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s =
                Scenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                Scenario::from_toml(&s.to_toml()).expect("round trip"),
                s,
                "{}",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 1, "no scenarios in {}", dir.display());
}

#[test]
fn the_data_plane_example_says_what_the_article_expects() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/perf/data-plane.toml");
    let s = Scenario::from_file(&path).expect("loads");
    assert_eq!(s.kind, ScenarioKind::DataPlane);
    let d = s.data_plane().expect("data-plane load");
    assert_eq!((d.audio.pps, d.audio.size, d.video.size), (50, 160, 1200));
    assert_eq!(d.flows_steps, [1_000, 100_000, 1_000_000]);
    assert_eq!(d.fanout_steps, [1, 10, 100, 1_000]);
    assert!(s
        .thresholds
        .iter()
        .any(|t| t.metric == "added_stall_rate_per_viewer_min" && t.bound == Bound::Max(0.0)));
}

#[test]
fn the_control_plane_example_says_what_the_article_expects() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/perf/control-plane.toml");
    let s = Scenario::from_file(&path).expect("loads");
    assert_eq!(s.kind, ScenarioKind::ControlPlane);
    let c = s.control_plane().expect("control-plane load");
    assert_eq!((c.users, c.path.as_str()), (100_000, "/rooms/join"));
    // The article's row: added latency < 5 ms, proxy CPU < 15%.
    for (metric, bound) in [
        ("added_join_p99_us", Bound::Max(5000.0)),
        ("signaling_cpu_percent", Bound::Max(15.0)),
    ] {
        assert!(
            s.thresholds.iter().any(|t| t.metric == metric
                && t.bound == bound
                && t.source == ThresholdSource::Article),
            "{metric} {bound}"
        );
    }
    // Every threshold names a metric of the kind (the parser refuses others; the catalog
    // lookup here catches a catalog that lost one).
    for t in &s.thresholds {
        assert!(
            metrics::lookup(ScenarioKind::ControlPlane, &t.metric).is_some(),
            "{}",
            t.metric
        );
    }
}

#[test]
fn defaults_fill_a_minimal_file() {
    let s = Scenario::from_toml(MINIMAL).expect("minimal file");
    assert!(matches!(s.target, Target::LocalLab(ref l) if l.media_core == 1 && l.load_core == 0));
    assert_eq!(s.load.duration_s, 10.0);
    assert!(matches!(s.load.kind, KindLoad::DataPlane(_)));
    assert!(s.thresholds.is_empty());
}

#[test]
fn durations_are_bounded() {
    let (path, value, rule) = invalid(&format!("{MINIMAL}[load]\nduration = 7200\n"));
    assert_eq!((path.as_str(), value.as_str()), ("load.duration", "7200"));
    assert!(rule.contains("3600"), "{rule}");
    let (path, _, _) = invalid(&format!("{MINIMAL}[load]\nduration = 0\n"));
    assert_eq!(path, "load.duration");
    let (path, _, _) = invalid(&format!("{MINIMAL}[load]\nramp = -1\n"));
    assert_eq!(path, "load.ramp");
}

#[test]
fn unknown_keys_are_syntax_errors_with_the_key() {
    match Scenario::from_toml(&format!("{MINIMAL}[load]\ndurration = 5\n")) {
        Err(ScenarioError::Syntax(msg)) => assert!(msg.contains("durration"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_metrics_list_the_valid_ones() {
    let text =
        format!("{MINIMAL}[[threshold]]\nmetric = \"lane_p99\"\nmax = 1\nsource = \"ours\"\n");
    let (path, value, rule) = invalid(&text);
    assert_eq!(
        (path.as_str(), value.as_str()),
        ("threshold[0].metric", "\"lane_p99\"")
    );
    assert!(rule.contains("lane_latency_p99_us"), "{rule}");
    assert!(rule.contains("flows[100000].cpu_ns_per_packet"), "{rule}");
    // A family metric of a step that is not in the scenario.
    let text = format!(
        "{MINIMAL}[load.data_plane]\nflows_steps = [10]\n[[threshold]]\nmetric = \"flows[20].pps\"\nmin = 1\nsource = \"ours\"\n"
    );
    let (_, _, rule) = invalid(&text);
    assert!(
        rule.contains("not in the scenario's steps") && rule.contains("flows[10].pps"),
        "{rule}"
    );
    // A metric of another kind.
    let text = format!(
        "{MINIMAL}[[threshold]]\nmetric = \"signaling_cpu_percent\"\nmax = 15\nsource = \"article\"\n"
    );
    assert_eq!(invalid(&text).0, "threshold[0].metric");
}

#[test]
fn thresholds_need_exactly_one_finite_bound() {
    let both = format!("{MINIMAL}[[threshold]]\nmetric = \"lane_loss_ratio\"\nmax = 1\nmin = 0\nsource = \"ours\"\n");
    assert_eq!(invalid(&both).0, "threshold[0].max");
    let none = format!("{MINIMAL}[[threshold]]\nmetric = \"lane_loss_ratio\"\nsource = \"ours\"\n");
    assert_eq!(invalid(&none).0, "threshold[0].max");
    let nan = format!(
        "{MINIMAL}[[threshold]]\nmetric = \"lane_loss_ratio\"\nmax = nan\nsource = \"ours\"\n"
    );
    assert_eq!(invalid(&nan).0, "threshold[0].max");
}

#[test]
fn kind_tables_must_match_the_kind() {
    let (path, _, rule) = invalid(&format!("{MINIMAL}[load.control_plane]\nusers = 10\n"));
    assert_eq!(path, "load.control_plane");
    assert!(rule.contains("data-plane"), "{rule}");
}

#[test]
fn data_plane_rules() {
    let cases = [
        (
            "[load.data_plane]\nflows_steps = [1000, 10]\n",
            "load.data_plane.flows_steps[1]",
        ),
        (
            "[load.data_plane]\nfanout_steps = [5000]\n",
            "load.data_plane.fanout_steps[0]",
        ),
        (
            "[load.data_plane]\npublishers = 100\nviewers_per_publisher = 100\n",
            "load.data_plane.viewers_per_publisher",
        ),
        (
            "[load.data_plane]\nvideo = { pps = 100, size = 20 }\n",
            "load.data_plane.video.size",
        ),
        (
            "[load.data_plane]\naudio = { pps = 0, size = 100 }\nvideo = { pps = 0, size = 100 }\n",
            "load.data_plane.video.pps",
        ),
        (
            "[load.data_plane]\nstall_gap_ms = 10\n",
            "load.data_plane.stall_gap_ms",
        ),
        (
            "[load.data_plane]\nactive_flows = 5000\n",
            "load.data_plane.active_flows",
        ),
    ];
    for (table, want) in cases {
        let (path, _, rule) = invalid(&format!("{MINIMAL}{table}"));
        assert_eq!(path, want, "{table}: {rule}");
    }
}

#[test]
fn lab_cores_must_differ_and_remote_needs_its_addresses() {
    let text = "[scenario]\nname = \"t\"\nkind = \"data-plane\"\n[target]\nmode = \"local-lab\"\n[target.local_lab]\nmedia_core = 0\nload_core = 0\n";
    assert_eq!(invalid(text).0, "target.local_lab.load_core");
    let remote = "[scenario]\nname = \"t\"\nkind = \"data-plane\"\n[target]\nmode = \"remote\"\n[target.remote]\ningress = [\"192.0.2.1:40000\"]\n[load.data_plane]\npublishers = 2\n";
    let (path, value, _) = invalid(remote);
    assert_eq!(
        (path.as_str(), value.as_str()),
        ("target.remote.ingress", "1 entries")
    );
    // One ingress per publisher and stream: audio then video, publisher by publisher.
    let two = "[scenario]\nname = \"t\"\nkind = \"data-plane\"\n[target]\nmode = \"remote\"\n[target.remote]\ningress = [\"192.0.2.1:40000\", \"192.0.2.1:40001\", \"192.0.2.1:40002\", \"192.0.2.1:40003\"]\nviewers = [\"127.0.0.1:41000\", \"127.0.0.1:41001\"]\n[load.data_plane]\npublishers = 2\nviewers_per_publisher = 1\n";
    let s = Scenario::from_toml(two).expect("two streams per publisher");
    let dp = s.data_plane().expect("data plane");
    assert_eq!(dp.streams_per_publisher(), 2);
    assert_eq!(
        [false, true, false, true]
            .iter()
            .zip([0, 0, 1, 1])
            .map(|(&video, p)| dp.remote_ingress_index(p, video))
            .collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let video_only = two.replace(
        "viewers_per_publisher = 1\n",
        "viewers_per_publisher = 1\naudio = { pps = 0, size = 160 }\n",
    );
    assert_eq!(
        invalid(&video_only).1,
        "4 entries",
        "with audio off each publisher has one stream"
    );
    let s =
        Scenario::from_toml(&video_only.replace(", \"192.0.2.1:40002\", \"192.0.2.1:40003\"", ""))
            .expect("one stream per publisher");
    let dp = s.data_plane().expect("data plane");
    assert_eq!(
        (
            dp.remote_ingress_index(0, true),
            dp.remote_ingress_index(1, true)
        ),
        (0, 1)
    );
    let bad_addr = "[scenario]\nname = \"t\"\nkind = \"control-plane\"\n[target]\nmode = \"remote\"\n[target.remote]\nsignaling = \"nowhere\"\n";
    assert_eq!(invalid(bad_addr).0, "target.remote.signaling");
}

#[test]
fn other_kinds_parse_their_tables() {
    let text = r#"
[scenario]
name = "stab"
kind = "stability"
[target]
mode = "local-lab"
[load]
duration = 30
[[load.stability.faults]]
kind = "jitter"
at = 5
duration = 5
delay_ms = 50
jitter_ms = 20
[[load.stability.faults]]
kind = "loss"
at = 12
duration = 3
loss_percent = 2.5
[[threshold]]
metric = "max_recovery_ms"
max = 3
source = "article"
"#;
    let s = Scenario::from_toml(text).expect("stability parses");
    assert_eq!(Scenario::from_toml(&s.to_toml()).expect("round trip"), s);
    assert_eq!(
        invalid(&text.replace("at = 12", "at = 40")).0,
        "load.stability.faults[1].at"
    );
    let wrong = text.replace("loss_percent = 2.5", "loss_percent = 2.5\ndelay_ms = 3");
    assert_eq!(invalid(&wrong).0, "load.stability.faults[1].delay_ms");
    let cp = "[scenario]\nname = \"cp\"\nkind = \"control-plane\"\n[target]\nmode = \"local-lab\"\n[load.control_plane]\nusers = 100\nrooms = 200\n";
    assert_eq!(invalid(cp).0, "load.control_plane.rooms");
}

/// A valid data-plane scenario with arbitrary values.
fn arb_scenario() -> impl Strategy<Value = String> {
    (
        "[a-z0-9_-]{1,20}",
        (1u64..100_000, 0.0f64..600.0, 0.001f64..3600.0, 1u64..=64),
        (1u64..=16, 1u64..=16),
        (0u64..1000, 36u64..9216, 1u64..1000, 36u64..9216),
        proptest::collection::btree_set(1u64..16_777_216, 0..5),
        proptest::collection::btree_set(1u64..4096, 0..5),
        (any::<bool>(), -1e9f64..1e9, "[ -~]{0,40}"),
    )
        .prop_map(|(name, (rate, ramp, duration, conc), (pubs, viewers), (apps, asize, vpps, vsize), flows, fanout, (is_max, bound, desc))| {
            let flows: Vec<u64> = flows.into_iter().collect();
            let fanout: Vec<u64> = fanout.into_iter().collect();
            let metric = flows.first().map_or("lane_loss_ratio".to_string(), |f| format!("flows[{f}].pps"));
            format!(
                "[scenario]\nname = {name:?}\nkind = \"data-plane\"\ndescription = {desc:?}\n[target]\nmode = \"local-lab\"\n\
                 [load]\nrate = {rate}\nramp = {ramp:?}\nduration = {duration:?}\nconcurrency = {conc}\n\
                 [load.data_plane]\npublishers = {pubs}\nviewers_per_publisher = {viewers}\n\
                 audio = {{ pps = {apps}, size = {asize} }}\nvideo = {{ pps = {vpps}, size = {vsize} }}\nstall_gap_ms = 1001\n\
                 flows_steps = {flows:?}\nfanout_steps = {fanout:?}\n\
                 [[threshold]]\nmetric = {metric:?}\n{} = {bound:?}\nsource = \"ours\"\n",
                if is_max { "max" } else { "min" }
            )
        })
}

proptest! {
    #[test]
    fn the_parser_never_panics(text in "\\PC{0,400}") {
        let _ = Scenario::from_toml(&text);
    }

    #[test]
    fn mangled_valid_files_never_panic(text in arb_scenario(), cut in 0usize..2000, junk in "[\\[\\]=\"a-z0-9 .\n-]{0,12}") {
        let mut t = text;
        let at = cut.min(t.len());
        if t.is_char_boundary(at) {
            t.insert_str(at, &junk);
        }
        let _ = Scenario::from_toml(&t);
    }

    #[test]
    fn serialized_scenarios_round_trip(text in arb_scenario()) {
        let s = Scenario::from_toml(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let again = Scenario::from_toml(&s.to_toml()).map_err(|e| TestCaseError::fail(format!("{e}\n{}", s.to_toml())))?;
        prop_assert_eq!(again, s);
    }
}
