//! The lab config from the README: one publisher fanned out to three subscribers.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::*;

const PACKETS: u16 = 10_000;
const PAYLOAD: usize = 160;

#[test]
fn lab_config_fans_out_and_refuses_a_second_source() {
    let subs: Vec<UdpSocket> = (41000..=41002)
        .map(|p| roomy_udp(("127.0.0.1", p)))
        .collect();
    let daemon = Daemon::start(
        &repo_root().join("configs/lab.toml"),
        "127.0.0.1:9100".parse().expect("addr"),
    );

    let receivers: Vec<_> = subs
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || collect(&s, usize::from(PACKETS), Duration::from_secs(3)))
        })
        .collect();

    let publisher = UdpSocket::bind("127.0.0.1:0").expect("publisher");
    publisher.connect("127.0.0.1:40000").expect("connect");
    for seq in 0..PACKETS {
        publisher
            .send(&rtp(seq, 0x1234_5678, PAYLOAD))
            .expect("send");
        // Paced (about 25k packets/s) so loopback socket buffers never overflow.
        if seq % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    for (i, r) in receivers.into_iter().enumerate() {
        let got = r.join().expect("receiver");
        assert_eq!(
            got.len(),
            usize::from(PACKETS),
            "subscriber {i} got {} packets",
            got.len()
        );
        let mut seen = vec![false; usize::from(PACKETS)];
        for p in &got {
            let seq = u16::from_be_bytes([p[2], p[3]]);
            assert_eq!(
                p,
                &rtp(seq, 0x1234_5678, PAYLOAD),
                "subscriber {i}: payload changed"
            );
            seen[usize::from(seq)] = true;
        }
        assert!(
            seen.iter().all(|&s| s),
            "subscriber {i} missed sequence numbers"
        );
    }

    // A second sender to the latched session is dropped and counted.
    let intruder = UdpSocket::bind("127.0.0.1:0").expect("intruder");
    for seq in 0..100 {
        intruder
            .send_to(&rtp(seq, 0xdead_beef, PAYLOAD), "127.0.0.1:40000")
            .expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let m = daemon.get("/metrics");
        let dropped = metric_sum(
            &m,
            "popmesh_media_drops_total",
            &[("reason", "source_mismatch")],
        );
        if dropped >= 100.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        metric_sum(
            &metrics,
            "popmesh_media_drops_total",
            &[("reason", "source_mismatch")]
        ),
        100.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "popmesh_media_rx_packets_total", &[]),
        f64::from(PACKETS) + 100.0
    );
    assert_eq!(
        metric_sum(&metrics, "popmesh_media_tx_packets_total", &[]),
        3.0 * f64::from(PACKETS)
    );
    assert_eq!(
        metric(
            &metrics,
            "popmesh_media_flow_packets_total",
            &[("session", "lab-room-1")]
        ),
        Some(f64::from(PACKETS))
    );
    assert_eq!(
        metric(
            &metrics,
            "popmesh_media_flow_drops_total",
            &[("session", "lab-room-1")]
        ),
        Some(100.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "popmesh_media_flow_rtp_lost_packets",
            &[("session", "lab-room-1")]
        ),
        Some(0.0)
    );
    assert_eq!(metric(&metrics, "popmesh_media_flows", &[]), Some(1.0));
    // The io_uring backend's own counters are exported too: 30,000 datagrams left in at most
    // that many sendmsg submissions (fewer when GSO batched them).
    let sqes = metric_sum(&metrics, "popmesh_uring_tx_sqes_total", &[]);
    assert!(
        (1.0..=3.0 * f64::from(PACKETS)).contains(&sqes),
        "tx sqes {sqes}"
    );

    let flows: serde_json::Value = serde_json::from_str(&daemon.get("/flows")).expect("flows json");
    let f = &flows["flows"][0];
    assert_eq!(f["session"], "lab-room-1");
    assert_eq!(f["packets"], u64::from(PACKETS));
    assert_eq!(f["drops"], 100);
    assert_eq!(f["ssrcs"][0]["expected"], u64::from(PACKETS));
    let cfg: serde_json::Value = serde_json::from_str(&daemon.get("/config")).expect("config json");
    assert_eq!(cfg["admin"]["listen"], "127.0.0.1:9100");
    assert_eq!(daemon.get("/healthz").trim(), "ok");

    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}");
}
