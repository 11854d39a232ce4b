//! Bad configs and bad datagrams: clear errors and counted drops, never a crash.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

fn check_exit(text: &str, expect_in_stderr: &str) {
    let path = write_config("bad.toml", text);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert!(
        stderr.contains(expect_in_stderr),
        "stderr {stderr:?} should mention {expect_in_stderr:?}"
    );
}

#[test]
fn bad_configs_exit_64_naming_the_problem() {
    check_exit("[media\n", "line");
    check_exit(
        "[[media.ports]]\nname = \"a\"\nbind = \"127.0.0.1:99999\"\n",
        "media.ports[0].bind",
    );
    check_exit(
        "[media]\ncores = [4096]\n[[media.ports]]\nname = \"a\"\nbind = \"127.0.0.1:40000\"\n",
        "media.cores[0]",
    );
    check_exit(
        "[[media.ports]]\nname = \"a\"\nbind = \"127.0.0.1:40000\"\nbogus = 1\n",
        "bogus",
    );
    let missing = Command::new(BIN)
        .args(["--config", "/nonexistent/popmesh.toml"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/popmesh.toml"));
}

#[test]
fn garbage_truncated_and_oversized_datagrams_are_counted_drops() {
    let admin = free_tcp();
    let ingress = free_udp();
    let sub = UdpSocket::bind("127.0.0.1:0").expect("sub");
    let cfg = format!(
        r#"
[admin]
listen = "{admin}"
[media]
cores = [0]
[media.uring]
buffer_size = 2048
[[media.ports]]
name = "p"
bind = "{ingress}"
[[sessions]]
name = "s"
ingress = "{ingress}"
subscribers = ["{sub}"]
"#,
        sub = sub.local_addr().expect("addr")
    );
    let daemon = Daemon::start(&write_config("garbage.toml", &cfg), admin);
    let tx = UdpSocket::bind("127.0.0.1:0").expect("tx");
    tx.connect(ingress).expect("connect");
    // Latch the session to this sender with one good packet.
    tx.send(&rtp(1, 7, 100)).expect("send");
    assert_eq!(collect(&sub, 1, Duration::from_secs(3)).len(), 1);

    tx.send(&[]).expect("empty");
    tx.send(&[0x00, 0x01, 0x00, 0x00]).expect("stun-like");
    tx.send(&[0x80, 0x60, 0x00]).expect("short rtp");
    tx.send(&[
        0x90, 0x60, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0xbe, 0xde, 0x00, 0xff,
    ])
    .expect("rtp with an extension longer than the packet");
    tx.send(&vec![0x80; 9000]).expect("oversized");
    // Still relaying afterwards.
    tx.send(&rtp(2, 7, 100)).expect("send");
    let got = collect(&sub, 2, Duration::from_secs(3));
    assert_eq!(got, vec![rtp(2, 7, 100)], "only the good packet is relayed");

    let deadline = Instant::now() + Duration::from_secs(5);
    let expect = [
        ("truncated", 1.0),
        ("not_media", 1.0),
        ("bad_rtp", 2.0),
        ("too_big", 1.0),
    ];
    loop {
        let m = daemon.get("/metrics");
        let all_ok = expect
            .iter()
            .all(|(r, n)| metric_sum(&m, "popmesh_media_drops_total", &[("reason", r)]) == *n);
        if all_ok {
            break;
        }
        assert!(Instant::now() < deadline, "drop counters wrong:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.terminate().success());
}
