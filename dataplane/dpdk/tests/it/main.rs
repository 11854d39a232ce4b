//! The DPDK backend end to end on a `net_pcap` port: frames read from a capture go through
//! `DpdkEnv`, `DpdkBackend` and the shared pipeline, and the rewritten frames the port
//! transmits are read back from the output capture and checked byte by byte.
//!
//! EAL initialises once per process, so each test initialises it once and the tests rely on
//! nextest running every test in a process of its own (the README's test command does).
#![cfg(popmesh_dpdk)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use popmesh_config::Config;
use popmesh_media::flow::{FlowKey, FlowSpec, FlowTable, Target};
use popmesh_media::testkit::{rtp_packet, udp_frame};
use popmesh_media::{Backend, Burst, Pipeline};
use popmesh_media_dpdk::{DpdkBackend, DpdkEnv};
use popmesh_wire::{ethernet, ipv4, udp};

const GATEWAY: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const RELAYED: u16 = 200;
const FANNED: u16 = 50;
const FANOUT: usize = 4;

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for f in frames {
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).expect("write input pcap");
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("read output pcap");
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
        frames.push(data[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    frames
}

/// A dpdk config with workers on `cores` and one `net_pcap0` port with `pcap_args`, on
/// ordinary pages and without an exception TAP (no root-only kernel set-up).
fn pcap_config(cores: &str, pcap_args: &str) -> Config {
    Config::from_toml(&format!(
        r#"
        [media]
        backend = "dpdk"
        cores = {cores}
        [media.dpdk]
        main_core = 0
        hugepages = false
        memory_mb = 256
        file_prefix = "popmesh-dpdk-it-{pid}"
        vdevs = ["net_pcap0,{pcap_args}"]
        exception_tap = false
        eal_args = ["--no-shconf", "--no-telemetry"]
        [[media.ports]]
        name = "p0"
        bind = "10.0.0.1:40000"
        device = "net_pcap0"
        gateway_mac = "02:00:00:00:00:fe"
        "#,
        pid = std::process::id(),
    ))
    .expect("test config")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn pcap_port_relays_and_fans_out_with_rewritten_headers() {
    let dir = std::env::temp_dir().join(format!("popmesh-dpdk-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (input, output) = (dir.join("in.pcap"), dir.join("out.pcap"));

    let publisher = addr("10.0.0.2:6000");
    let mut frames = Vec::new();
    for seq in 0..RELAYED {
        frames.push(udp_frame(
            publisher,
            addr("10.0.0.1:40000"),
            &rtp_packet(seq, 0x1111, 160),
            None,
        ));
    }
    for seq in 0..FANNED {
        frames.push(udp_frame(
            publisher,
            addr("10.0.0.1:40002"),
            &rtp_packet(seq, 0x2222, 1000),
            None,
        ));
    }
    // Not media: an ARP request (exception path; no TAP here, so dropped and counted) and a
    // truncated frame (dropped by the pipeline).
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    frames.push(arp);
    frames.push(vec![0x02; 10]);
    write_pcap(&input, &frames);

    let cfg = pcap_config(
        "[1]",
        &format!("rx_pcap={},tx_pcap={}", input.display(), output.display()),
    );

    let mut env = DpdkEnv::start(&cfg).expect("DPDK environment on net_pcap");
    let port_mac = env.ports()[0].mac;
    let chained = env.ports()[0].multi_seg_tx;
    let queues = env.take_worker(0).expect("worker 0 queues");
    let eal = env.eal();
    let pipeline_cfg = env.pipeline_config();

    let mut table = FlowTable::new(16);
    table
        .upsert(FlowSpec {
            name: "relay".into(),
            key: FlowKey::new(0, addr("10.0.0.1:40000")),
            source: Some(publisher),
            clock_rate: 90_000,
            targets: vec![Target {
                port: 0,
                addr: addr("10.0.9.1:5000"),
                mac: None,
            }],
        })
        .expect("relay flow");
    table
        .upsert(FlowSpec {
            name: "fanout".into(),
            key: FlowKey::new(0, addr("10.0.0.1:40002")),
            source: None,
            clock_rate: 90_000,
            targets: (0..FANOUT)
                .map(|k| Target {
                    port: 0,
                    addr: SocketAddr::new(Ipv4Addr::new(10, 0, 9, 10 + k as u8).into(), 6000),
                    mac: None,
                })
                .collect(),
        })
        .expect("fan-out flow");
    table.publish();
    let readers = table.reader();

    let stop = Arc::new(AtomicBool::new(false));
    let expected_rx = frames.len() as u64;
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let reg = DpdkEnv::register_thread(&eal).expect("register worker thread");
            let mut backend = DpdkBackend::new(queues, reg, 32);
            let reader = readers.reader();
            let mut pipeline = Pipeline::new(pipeline_cfg);
            let mut burst = Burst::with_capacity(32, 256);
            let (mut rx, mut tx, mut exceptions, mut drops) = (0u64, 0u64, 0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(10);
            while rx < expected_rx && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if backend.rx_burst(&mut burst, 32) == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                let guard = reader.enter().expect("table open");
                let counts = pipeline.process(1, &guard, &mut burst);
                rx += counts.rx;
                drops += counts.drops.iter().sum::<u64>();
                drop(guard);
                let out = backend.tx_burst(&mut burst);
                tx += u64::from(out.sent);
                exceptions += u64::from(out.exceptions);
            }
            (rx, tx, exceptions, drops)
        })
    };
    let (rx, tx, exceptions, drops) = worker.join().expect("worker thread");
    stop.store(true, Ordering::Relaxed);
    assert_eq!(rx, expected_rx, "every input frame received once");
    assert_eq!(tx, u64::from(RELAYED) + u64::from(FANNED) * FANOUT as u64);
    assert_eq!(
        (exceptions, drops),
        (1, 1),
        "ARP to the exception path, runt dropped"
    );
    let (_, in_use) = env.pool_usage();
    // Closing the port flushes the output capture.
    drop(table);
    drop(env);
    assert_eq!(in_use, 0, "every mbuf is back in the pool after the run");

    let sent = read_pcap(&output);
    assert_eq!(sent.len() as u64, tx);
    let mut per_target = std::collections::HashMap::<Ipv4Addr, u16>::new();
    for f in &sent {
        let eth = ethernet::Frame::new_checked(&f[..]).expect("ethernet");
        assert_eq!(eth.dst_addr().0, GATEWAY);
        assert_eq!(eth.src_addr().0, port_mac);
        let ip = ipv4::Packet::new_checked(&f[14..]).expect("ipv4");
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        assert_eq!(ip.ttl(), 63);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        let u = udp::Packet::new_checked(&f[14 + ip.header_len()..]).expect("udp");
        assert!(
            u.verify_checksum_v4(ip.src_addr(), ip.dst_addr()),
            "UDP checksum"
        );
        assert_eq!(u.src_port(), 40000);
        let payload = &f[14 + ip.header_len() + 8..];
        let seq = u16::from_be_bytes([payload[2], payload[3]]);
        let (ssrc, len) = if ip.dst_addr() == Ipv4Addr::new(10, 0, 9, 1) {
            assert_eq!(u.dst_port(), 5000);
            (0x1111, 160)
        } else {
            assert_eq!(u.dst_port(), 6000);
            (0x2222, 1000)
        };
        assert_eq!(payload, &rtp_packet(seq, ssrc, len)[..], "payload intact");
        *per_target.entry(ip.dst_addr()).or_default() += 1;
    }
    assert_eq!(per_target[&Ipv4Addr::new(10, 0, 9, 1)], RELAYED);
    for k in 0..FANOUT {
        assert_eq!(per_target[&Ipv4Addr::new(10, 0, 9, 10 + k as u8)], FANNED);
    }
    eprintln!(
        "fan-out copies were {}",
        if chained {
            "chained header mbufs"
        } else {
            "full copies"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn more_workers_than_device_queues_is_refused_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("popmesh-dpdk-q-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("in.pcap");
    write_pcap(&input, &[]);
    // net_pcap offers one queue pair per capture file: one here, for two workers.
    let cfg = pcap_config("[1, 2]", &format!("rx_pcap={}", input.display()));
    let err = DpdkEnv::start(&cfg).expect_err("two workers on a one-queue port");
    let text = err.to_string();
    assert!(
        text.starts_with("media.ports[0].device: port \"net_pcap0\" (net_pcap) offers 1 queue pair(s) but media.cores starts 2 workers"),
        "{text}"
    );
    assert!(text.contains("use at most 1 media cores"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
