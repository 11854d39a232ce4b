//! sender -> plain relay -> two sinks, on loopback ephemeral ports.

use std::process::Command;
use std::time::Duration;

use crate::util::{read_json, scratch, spawn_listening, wait, RELAY, RTP};

const PACKETS: u64 = 3_000;

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not an integer in {v:#}"))
}

#[test]
fn relay_fans_out_every_packet_to_both_sinks() {
    let sink_json = [scratch("pipeline-sink-a"), scratch("pipeline-sink-b")];
    let mut sinks: Vec<_> = sink_json
        .iter()
        .map(|json| {
            let json = json.to_str().expect("utf-8 path");
            let args = [
                "sink",
                "--listen",
                "127.0.0.1:0",
                "--duration",
                "10",
                "--expect",
                "3000",
                "--idle-exit",
                "2",
                "--json",
                json,
            ];
            spawn_listening(RTP, &args, 1)
        })
        .collect();

    let relay_json = scratch("pipeline-relay");
    let (a, b) = (sinks[0].addrs[0].to_string(), sinks[1].addrs[0].to_string());
    let relay_args = [
        "--listen",
        "127.0.0.1:0",
        "--to",
        &a,
        "--to",
        &b,
        "--duration",
        "3.5",
        "--json",
        relay_json.to_str().expect("utf-8 path"),
    ];
    let mut relay = spawn_listening(RELAY, &relay_args, 1);

    let send_json = scratch("pipeline-send");
    let sender = Command::new(RTP)
        .args([
            "send",
            "--to",
            &relay.addrs[0].to_string(),
            "--rate",
            "2000",
            "--size",
            "200",
        ])
        .args([
            "--streams",
            "4",
            "--duration",
            "3",
            "--count",
            "3000",
            "--batch",
            "8",
        ])
        .args(["--json", send_json.to_str().expect("utf-8 path")])
        .output()
        .expect("run sender");
    assert!(
        sender.status.success(),
        "sender failed: {}\n{}",
        sender.status,
        String::from_utf8_lossy(&sender.stderr)
    );

    for (sink, json) in sinks.iter_mut().zip(&sink_json) {
        let status = wait(&mut sink.child, Duration::from_secs(15), "sink");
        assert!(status.success(), "sink failed: {status}");
        let report = read_json(json);
        assert_eq!(report["tool"], "sink");
        assert_eq!(report["stop_reason"], "expect", "{report:#}");
        let l = &report["listeners"][0];
        assert_eq!(l["listen"], sink.addrs[0].to_string());
        assert_eq!(u(l, "packets"), PACKETS, "{l:#}");
        assert_eq!(u(l, "probes"), PACKETS, "{l:#}");
        assert_eq!(u(l, "bytes"), PACKETS * 200, "{l:#}");
        assert_eq!(u(l, "streams"), 4, "{l:#}");
        assert_eq!(u(l, "expected"), PACKETS, "{l:#}");
        assert_eq!(
            (u(l, "loss"), u(l, "malformed"), u(l, "duplicates")),
            (0, 0, 0),
            "{l:#}"
        );
        assert_eq!(u(l, "latency_negative"), 0, "{l:#}");
        // 3000 packets at 2000 pps: about 1.5 s between the first and the last.
        let pps = l["pps"].as_f64().expect("pps");
        assert!((1_500.0..2_600.0).contains(&pps), "{l:#}");
        let lat = &l["latency_us"];
        assert_eq!(u(lat, "samples"), PACKETS, "{lat:#}");
        let p: Vec<f64> = ["min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
            .iter()
            .map(|k| {
                lat[*k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{k} missing in {lat:#}"))
            })
            .collect();
        assert!(p[0] > 0.0, "{lat:#}");
        assert!(
            p.windows(2).all(|w| w[0] <= w[1] * 1.001),
            "percentiles out of order: {lat:#}"
        );
        assert!(l["jitter_us"].as_f64().is_some_and(|j| j >= 0.0), "{l:#}");
        assert_eq!(report["total"]["packets"], l["packets"]);
    }

    let status = wait(&mut relay.child, Duration::from_secs(10), "relay");
    assert!(status.success(), "relay failed: {status}");
    let r = read_json(&relay_json);
    assert_eq!(r["tool"], "plain-relay");
    assert_eq!(
        (u(&r, "packets_in"), u(&r, "packets_out")),
        (PACKETS, 2 * PACKETS),
        "{r:#}"
    );
    assert_eq!((u(&r, "send_errors"), u(&r, "truncated")), (0, 0), "{r:#}");
    assert_eq!(u(&r, "bytes_out"), 2 * PACKETS * 200, "{r:#}");
    assert!(
        r["cpu_ns_per_packet"].as_f64().is_some_and(|ns| ns > 0.0),
        "{r:#}"
    );
    let duration = r["duration_s"].as_f64().expect("duration_s");
    assert!(
        (3.4..4.5).contains(&duration),
        "relay must stop on time: {r:#}"
    );

    let s = read_json(&send_json);
    assert_eq!(s["tool"], "send");
    assert_eq!(
        (u(&s, "packets"), u(&s, "send_errors")),
        (PACKETS, 0),
        "{s:#}"
    );
    assert_eq!(s["stop_reason"], "count");
    let achieved = s["achieved_pps"].as_f64().expect("achieved_pps");
    assert!((1_800.0..2_200.0).contains(&achieved), "pacing off: {s:#}");
}
