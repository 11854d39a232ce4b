//! The DPDK lab: a publisher in one namespace reaches three viewers in another through the
//! appliance, which drives its veth ends with DPDK (`net_af_xdp`, then `net_af_packet`). ARP
//! and ping to the appliance's address are answered by its kernel through the exception TAP.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::netns::{self, in_netns, Lab};

const PACKETS: u16 = 10_000;
const PAYLOAD: usize = 1_000;
const SSRC: u32 = 0x0bad_cafe;
const VIEW_PORTS: [u16; 3] = [5000, 5001, 5002];

/// `configs/dpdk-veth.toml`, the example operators read, adapted to this lab: its names are
/// those of the `pmx` lab with net_af_xdp; other labs swap in their tag, driver and prefix.
fn config(tag: &str, driver: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("configs/dpdk-veth.toml"))
        .expect("read configs/dpdk-veth.toml");
    text.replace("net_af_xdp", driver)
        .replace("iface=pmx", &format!("iface={tag}"))
        .replace(
            "file_prefix = \"popmesh\"",
            &format!("file_prefix = \"popmesh-lab-{tag}\""),
        )
}

fn ping(ns: &str, addr: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", addr,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run_lab(driver: &str, tag: &str) {
    if !netns::can_run_labs(driver) {
        return;
    }
    let lab = Lab::create(tag);
    let path = write_config(&format!("dpdk-lab-{driver}.toml"), &config(tag, driver));
    let daemon = Daemon::start_in(&lab.app, &path, "127.0.0.1:9100".parse().expect("addr"));

    // The exception path: ARP and ICMP echo answered by the appliance's kernel through its TAP.
    assert!(
        ping(&lab.publ, netns::APPLIANCE_PUB),
        "ping from the publisher namespace to the appliance failed"
    );
    assert!(
        ping(&lab.view, netns::APPLIANCE_VIEW),
        "ping from the viewer namespace to the appliance failed"
    );

    let viewers: Vec<UdpSocket> = VIEW_PORTS
        .iter()
        .map(|&p| {
            in_netns(&lab.view, move || {
                let s = UdpSocket::bind((netns::VIEWER, p)).expect("bind viewer");
                // Room for the whole stream, so a viewer thread descheduled for a while on a
                // 2-core machine loses nothing (root may exceed net.core.rmem_max).
                nix::sys::socket::setsockopt(
                    &s,
                    nix::sys::socket::sockopt::RcvBufForce,
                    &(16 << 20),
                )
                .expect("SO_RCVBUFFORCE");
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                s
            })
        })
        .collect();
    let receivers: Vec<_> = viewers
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || collect(&s, usize::from(PACKETS), Duration::from_secs(5)))
        })
        .collect();
    let publisher = in_netns(&lab.publ, || {
        let s = UdpSocket::bind((netns::PUBLISHER, 0)).expect("bind publisher");
        s.connect((netns::APPLIANCE_PUB, 40000)).expect("connect");
        s
    });
    let started = Instant::now();
    for seq in 0..PACKETS {
        publisher.send(&rtp(seq, SSRC, PAYLOAD)).expect("send RTP");
        // Paced at about 25k packets/s: the viewers' sockets, not the appliance, are the
        // bottleneck on a 2-core machine.
        if seq % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    eprintln!(
        "{driver}: sent {PACKETS} packets in {:?}",
        started.elapsed()
    );

    let results: Vec<Vec<Vec<u8>>> = receivers
        .into_iter()
        .map(|r| r.join().expect("viewer"))
        .collect();
    let metrics = daemon.get("/metrics");
    if std::env::var_os("POPMESH_LAB_DEBUG").is_some() {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.view, "nstat", "-az"])
            .output()
            .expect("nstat");
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        let out = Command::new("ip")
            .args(["-n", &lab.view, "-s", "link"])
            .output()
            .expect("ip link");
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
    for (i, got) in results.iter().enumerate() {
        assert_eq!(
            got.len(),
            usize::from(PACKETS),
            "{driver}: viewer {i} got {} of {PACKETS} packets; appliance counters:\n{}",
            got.len(),
            metrics
                .lines()
                .filter(|l| !l.starts_with('#')
                    && (l.contains("drop") || l.contains("_tx") || l.contains("_rx")))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for p in got {
            let seq = u16::from_be_bytes([p[2], p[3]]);
            assert_eq!(
                p,
                &rtp(seq, SSRC, PAYLOAD),
                "{driver}: viewer {i}: payload changed"
            );
        }
    }

    let tx = metric_sum(&metrics, "popmesh_media_tx_packets_total", &[]);
    assert!(
        tx >= f64::from(PACKETS) * 3.0,
        "{driver}: popmesh_media_tx_packets_total = {tx}"
    );
    let wire_tx = metric_sum(
        &metrics,
        "popmesh_dpdk_port_tx_packets_total",
        &[("port", "view"), ("kind", "media")],
    );
    assert!(
        wire_tx >= f64::from(PACKETS) * 3.0,
        "{driver}: view port device tx counter = {wire_tx}"
    );
    let to_kernel = metric_sum(&metrics, "popmesh_dpdk_exceptions_to_kernel_total", &[]);
    let to_wire = metric_sum(&metrics, "popmesh_dpdk_kernel_to_wire_total", &[]);
    assert!(
        to_kernel >= 4.0 && to_wire >= 4.0,
        "{driver}: exception path counters: to kernel {to_kernel}, to wire {to_wire}"
    );
    let status = daemon.terminate();
    assert!(status.success(), "{driver}: daemon exit status {status}");
}

#[test]
fn af_xdp_lab_relays_fans_out_and_answers_arp_and_ping() {
    run_lab("net_af_xdp", "pmx");
}

#[test]
fn af_packet_lab_relays_fans_out_and_answers_arp_and_ping() {
    run_lab("net_af_packet", "pmk");
}

/// Runs the daemon on a DPDK config expected to fail set-up; returns (exit code, stderr).
fn failing_start(name: &str, dpdk: &str, device: &str) -> (Option<i32>, String) {
    let path = write_config(
        name,
        &format!(
            r#"
[admin]
listen = "127.0.0.1:0"
[media]
backend = "dpdk"
cores = [1]
[media.dpdk]
main_core = 0
file_prefix = "popmesh-reject-{pid}"
{dpdk}
[[media.ports]]
name = "p0"
bind = "10.203.0.1:40000"
device = "{device}"
gateway_mac = "02:00:00:00:00:fe"
"#,
            pid = std::process::id()
        ),
    );
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run popmesh-dataplane");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dpdk_setup_errors_say_how_to_fix_them() {
    if !netns::can_run_labs("dpdk_setup_errors") {
        return;
    }
    // A device that is not among the probed ports: named, with what DPDK has instead.
    let (code, stderr) = failing_start(
        "dpdk-absent.toml",
        "hugepages = false\nmemory_mb = 128\nvdevs = [\"net_null0\"]\nexception_tap = false",
        "net_null9",
    );
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(
            "media.ports[0].device: no DPDK port named \"net_null9\" (DPDK has: net_null0)"
        ) && stderr.contains("media.dpdk.vdevs"),
        "stderr: {stderr}"
    );
    // More packet memory than the reserved hugepages hold: the start-up layout check refuses it
    // (exit 64) before EAL starts, and the hint says how to get them.
    let (code, stderr) = failing_start(
        "dpdk-hugepages.toml",
        "hugepages = true\nmemory_mb = 1000000\nvdevs = [\"net_null0\"]\nexception_tap = false",
        "net_null0",
    );
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(
        stderr.contains("error[hugepages]")
            && stderr.contains("media.dpdk.memory_mb = 1000000")
            && stderr.contains("tools/hugepages.sh"),
        "stderr: {stderr}"
    );
}
