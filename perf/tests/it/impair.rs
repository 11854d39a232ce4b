//! sender -> impairment relay -> sink: the relay drops about its loss share inside its window,
//! delays by about its delay, and its counters add up; the schedule parser never panics and
//! reads back what it writes.

use std::process::Command;
use std::time::Duration;

use popmesh_perf::impair::{Schedule, Window};
use proptest::prelude::*;

use crate::util::{read_json, scratch, spawn_listening, wait, IMPAIR, RTP};

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not an integer in {v:#}"))
}

#[test]
fn the_relay_drops_and_delays_inside_its_windows_only() {
    let sink_json = scratch("impair-sink");
    let mut sink = spawn_listening(
        RTP,
        &[
            "sink",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "10",
            "--idle-exit",
            "1",
            "--interval-ms",
            "100",
            "--json",
            sink_json.to_str().expect("utf-8 path"),
        ],
        1,
    );
    let relay_json = scratch("impair-relay");
    let route = format!("127.0.0.1:0={}", sink.addrs[0]);
    let mut relay = spawn_listening(
        IMPAIR,
        &[
            "--route",
            &route,
            "--window",
            "0.5..1.5 loss_percent=20",
            "--window",
            "1.5..2.5 delay_ms=40 jitter_ms=10",
            "--duration",
            "3.5",
            "--seed",
            "9",
            "--json",
            relay_json.to_str().expect("utf-8 path"),
        ],
        1,
    );
    let sent = Command::new(RTP)
        .args(["send", "--to", &relay.addrs[0].to_string()])
        .args(["--rate", "1000", "--size", "200", "--streams", "1"])
        .args(["--duration", "3"])
        .status()
        .expect("run sender");
    assert!(sent.success());
    assert!(wait(&mut relay.child, Duration::from_secs(10), "relay").success());
    assert!(wait(&mut sink.child, Duration::from_secs(15), "sink").success());
    let r = read_json(&relay_json);
    let loss = &r["windows"][0];
    let delay = &r["windows"][1];
    let received = u(loss, "received");
    assert!((900..=1100).contains(&received), "{loss:#}");
    let dropped = u(loss, "dropped");
    let share = dropped as f64 / received as f64;
    assert!(
        (0.12..0.28).contains(&share),
        "dropped {share} of the loss window: {loss:#}"
    );
    assert_eq!(u(loss, "forwarded") + dropped, received, "{loss:#}");
    assert_eq!(u(delay, "delayed"), u(delay, "received"), "{delay:#}");
    assert_eq!(u(&r["outside"], "dropped"), 0);
    let s = read_json(&sink_json);
    let forwarded: u64 = [&r["windows"][0], &r["windows"][1], &r["outside"]]
        .iter()
        .map(|w| u(w, "forwarded"))
        .sum();
    assert_eq!(
        u(&s["total"], "probes"),
        forwarded,
        "the sink got what the relay sent"
    );
    let counts = s["interval_packets"]["counts"]
        .as_array()
        .expect("intervals");
    assert!(counts.len() >= 25, "{counts:?}");
    // Latency: 40 +- 10 ms inside the delay window shows up in the P99.
    let p99 = s["total"]["latency_us"]["p99_us"].as_f64().expect("p99");
    assert!(
        p99 > 25_000.0,
        "P99 {p99} us: the delay window did not delay"
    );
}

#[test]
fn bad_schedules_exit_64_naming_the_window() {
    let out = Command::new(IMPAIR)
        .args(["--route", "127.0.0.1:0=127.0.0.1:9", "--duration", "1"])
        .args(["--window", "1..2 delay_ms=5; 1.5..3 loss_percent=1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("window 2") && err.contains("overlap"), "{err}");
    let out = Command::new(IMPAIR)
        .args(["--route", "127.0.0.1:0=10.0.0.1:9", "--duration", "1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

fn arb_window() -> impl Strategy<Value = (u32, u32, u32, u32, Option<u32>)> {
    // (gap ms, length ms, delay, jitter, loss in 0.1 %)
    (
        0u32..10_000,
        1u32..10_000,
        0u32..=60_000,
        0u32..=60_000,
        proptest::option::of(1u32..=1000),
    )
}

proptest! {
    #[test]
    fn any_text_parses_or_fails_without_panicking(text in "[ -~\n;.=]{0,200}") {
        let _ = Schedule::parse(&text);
    }

    #[test]
    fn a_written_schedule_reads_back_equal(spec in proptest::collection::vec(arb_window(), 0..20)) {
        let mut t_ms = 0u64;
        let mut windows = Vec::new();
        for (gap, len, delay, jitter, loss) in spec {
            let from = t_ms + u64::from(gap);
            let to = from + u64::from(len);
            t_ms = to;
            let w = Window {
                from_s: from as f64 / 1000.0,
                to_s: to as f64 / 1000.0,
                delay_ms: delay,
                jitter_ms: jitter,
                loss_percent: loss.map_or(0.0, |l| f64::from(l) / 10.0),
            };
            if w.delay_ms == 0 && w.jitter_ms == 0 && w.loss_percent == 0.0 {
                continue;
            }
            windows.push(w);
        }
        let text: Vec<String> = windows.iter().map(ToString::to_string).collect();
        let parsed = Schedule::parse(&text.join("\n")).expect("a written schedule parses");
        prop_assert_eq!(parsed.windows, windows);
    }

    #[test]
    fn window_lookup_matches_a_linear_scan(t_ms in -1000i64..200_000) {
        let s = Schedule::parse("1..2 delay_ms=1; 2..3 loss_percent=1; 5..6 jitter_ms=3; 100..150 delay_ms=9")
            .expect("parses");
        let t = t_ms * 1_000_000;
        let linear = s.windows.iter().position(|w| {
            t >= (w.from_s * 1e9) as i64 && t < (w.to_s * 1e9) as i64
        });
        prop_assert_eq!(s.window_at(t), linear);
    }
}
