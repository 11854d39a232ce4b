//! The sink survives garbage and counts it as malformed.

use std::net::UdpSocket;
use std::time::Duration;

use popmesh_perf::probe::{ProbeRepr, MIN_PACKET_LEN, SSRC_BASE};

use crate::util::{read_json, scratch, spawn_listening, wait, RTP};

#[test]
fn garbage_is_counted_as_malformed_and_probes_still_count() {
    let json = scratch("sink-garbage");
    let args = [
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "10",
        "--expect",
        "7",
        "--json",
    ];
    let mut sink = spawn_listening(
        RTP,
        &[&args[..], &[json.to_str().expect("utf-8 path")]].concat(),
        1,
    );

    let mut bad_magic = vec![0u8; 64];
    let mut probe = vec![0u8; 100];
    let mut repr = ProbeRepr {
        rtp_seq: 0,
        rtp_timestamp: 0,
        ssrc: SSRC_BASE,
        stream_index: 0,
        send_time_ns: 0,
        probe_seq: 0,
    };
    repr.emit(&mut bad_magic).expect("fits");
    bad_magic[12] = b'X';
    let noise: Vec<u8> = (0..1_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let garbage: [&[u8]; 5] = [
        &[],
        &[0x80],
        &[0xff; MIN_PACKET_LEN - 1],
        &bad_magic,
        &noise,
    ];

    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.addrs[0]).expect("connect");
    for datagram in garbage {
        tx.send(datagram).expect("send garbage");
    }
    for seq in 0..2 {
        repr.probe_seq = seq;
        repr.emit(&mut probe).expect("fits");
        tx.send(&probe).expect("send probe");
    }

    let status = wait(&mut sink.child, Duration::from_secs(15), "sink");
    assert!(status.success(), "sink failed: {status}");
    let l = &read_json(&json)["listeners"][0];
    assert_eq!(l["packets"], 7, "{l:#}");
    assert_eq!(l["malformed"], 5, "{l:#}");
    assert_eq!(l["probes"], 2, "{l:#}");
    assert_eq!(l["loss"], 0, "{l:#}");
}

#[test]
fn stalls_per_second_counts_and_the_latency_log_are_reported_on_request() {
    let json = scratch("sink-stalls");
    let hlog = scratch("sink-stalls-hlog");
    let args = [
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "10",
        "--expect",
        "6",
        "--stall-gap",
        "0.2",
        "--per-second",
        "--hlog",
        hlog.to_str().expect("utf-8 path"),
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    let mut sink = spawn_listening(RTP, &args, 1);
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.addrs[0]).expect("connect");
    let mut probe = vec![0u8; 100];
    // Two packets, a 400 ms silence (one stall), then four more close together.
    for seq in 0..6u64 {
        if seq == 2 {
            std::thread::sleep(Duration::from_millis(400));
        }
        ProbeRepr {
            rtp_seq: seq as u16,
            rtp_timestamp: 0,
            ssrc: SSRC_BASE,
            stream_index: 0,
            send_time_ns: popmesh_perf::sys::monotonic_ns(),
            probe_seq: seq,
        }
        .emit(&mut probe)
        .expect("fits");
        tx.send(&probe).expect("send probe");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = wait(&mut sink.child, Duration::from_secs(15), "sink");
    assert!(status.success(), "sink failed: {status}");
    let report = read_json(&json);
    let stalls = &report["listeners"][0]["stalls"];
    assert_eq!(stalls["count"], 1, "{stalls:#}");
    assert_eq!(stalls["packets"], 6, "{stalls:#}");
    let gap = stalls["events"][0]["duration_ns"]
        .as_u64()
        .expect("duration");
    assert!(gap >= 400_000_000, "gap {gap} ns");
    let per_second: u64 = report["per_second_packets"]
        .as_array()
        .expect("per-second series")
        .iter()
        .map(|n| n.as_u64().expect("count"))
        .sum();
    assert_eq!(per_second, 6);
    assert!(report["start_monotonic_ns"].as_u64().is_some());
    let log = std::fs::read_to_string(&hlog).expect("hlog written");
    assert!(log.contains("#[StartTime:"), "{log}");
    // One interval line per histogram: start,length,max,base64 payload.
    assert!(
        log.lines()
            .any(|l| l.split(',').count() == 4 && !l.starts_with('#')),
        "{log}"
    );
}

#[test]
fn without_the_flags_the_json_has_no_stall_or_series_fields() {
    let json = scratch("sink-plain");
    let args = [
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "0.3",
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    let mut sink = spawn_listening(RTP, &args, 1);
    assert!(wait(&mut sink.child, Duration::from_secs(10), "sink").success());
    let report = read_json(&json);
    assert!(report.get("per_second_packets").is_none());
    assert!(report["listeners"][0].get("stalls").is_none());
}

#[test]
fn two_senders_with_distinct_stream_bases_are_distinct_streams() {
    let json = scratch("sink-stream-base");
    let args = [
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "10",
        "--expect",
        "40",
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    let mut sink = spawn_listening(RTP, &args, 1);
    let to = sink.addrs[0].to_string();
    for base in ["0", "1"] {
        let out = std::process::Command::new(RTP)
            .args([
                "send",
                "--to",
                &to,
                "--rate",
                "1000",
                "--size",
                "100",
                "--streams",
                "1",
            ])
            .args(["--count", "20", "--duration", "2", "--stream-base", base])
            .output()
            .expect("run sender");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(wait(&mut sink.child, Duration::from_secs(15), "sink").success());
    let l = &read_json(&json)["listeners"][0];
    // Same base twice would be one stream with 20 duplicates.
    assert_eq!(
        (l["streams"].as_u64(), l["duplicates"].as_u64()),
        (Some(2), Some(0)),
        "{l:#}"
    );
    assert_eq!(l["loss"], 0, "{l:#}");
}
