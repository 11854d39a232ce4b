//! A real worker thread on the in-memory backend while another thread churns the flow table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use popmesh_media::flow::FlowTable;
use popmesh_media::mem::mem_backend;
use popmesh_media::testkit::rtp_packet;
use popmesh_media::worker::{run, Exit, IdlePolicy};
use popmesh_media::{DropReason, Framing, Pipeline, PipelineConfig, Pkt, WorkerStats};

use crate::support::*;

#[test]
fn churning_other_flows_never_drops_packets_of_a_stable_flow() {
    const PACKETS: u16 = 20_000;
    let mut t = FlowTable::new(200_000);
    t.upsert(spec(
        0,
        "127.0.0.1:40000",
        Some("10.0.0.1:5000"),
        &["127.0.0.1:41000"],
    ))
    .expect("install");
    t.publish();
    let (mut backend, handle) = mem_backend(Framing::Datagram, 65_536);
    let stats = Arc::new(WorkerStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let factory = t.reader();
    let worker = {
        let stats = Arc::clone(&stats);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let reader = factory.reader();
            let mut p = Pipeline::new(PipelineConfig::datagram());
            let start = Instant::now();
            let clock = move || start.elapsed().as_nanos() as u64;
            let idle = IdlePolicy {
                spin_polls: 64,
                max_wait: Duration::from_micros(50),
                coalesce: Duration::ZERO,
            };
            run(
                &mut backend,
                &reader,
                &mut p,
                &stats,
                &Default::default(),
                &stop,
                idle,
                32,
                &clock,
            )
        })
    };

    // Churn: batches of 10k installs and removals of other flows, published as they come.
    let churn = std::thread::spawn(move || {
        let mut installed = 0u32;
        for round in 0..10u32 {
            for i in 0..10_000u32 {
                let port = 1 + (i % 60_000) as u16;
                let ip = format!(
                    "10.{}.{}.{}:{}",
                    round,
                    i >> 8 & 255,
                    i & 255,
                    6000 + (i % 1000)
                );
                t.upsert(spec(port, &ip, None, &["127.0.0.1:42000"]))
                    .expect("churn install");
                installed += 1;
            }
            t.publish();
            if round % 2 == 1 {
                for i in 0..10_000u32 {
                    let port = 1 + (i % 60_000) as u16;
                    let ip = format!(
                        "10.{}.{}.{}:{}",
                        round,
                        i >> 8 & 255,
                        i & 255,
                        6000 + (i % 1000)
                    );
                    t.remove(popmesh_media::FlowKey::new(port, addr(&ip)));
                }
                t.publish();
            }
        }
        (t, installed)
    });

    let mut sent = 0u16;
    let mut received = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (sent < PACKETS || received < usize::from(PACKETS)) && Instant::now() < deadline {
        if sent < PACKETS {
            let p = Pkt::datagram(
                rtp_packet(sent, 1, 50),
                0,
                addr("10.0.0.1:5000"),
                addr("127.0.0.1:40000"),
            );
            if handle.inject(p).is_ok() {
                sent += 1;
            }
        }
        while let Some(s) = handle.take_sent() {
            assert_eq!(s.dst, addr("127.0.0.1:41000"));
            received += 1;
        }
    }
    let (t, installed) = churn.join().expect("churn thread");
    stop.store(true, Ordering::Release);
    assert_eq!(worker.join().expect("worker"), Exit::Stopped);
    assert_eq!(installed, 100_000);
    assert_eq!(t.len(), 1 + 50_000);
    assert_eq!(
        received,
        usize::from(PACKETS),
        "stable flow lost packets during churn"
    );
    assert_eq!(stats.drops(DropReason::NoFlow), 0);
}
