//! Measures the memory a flow costs: resident set size before and after installing N flows
//! (both left-right copies of the index, the flows, their targets), for relay and for fan-out;
//! and how fast the control thread installs and removes flows in batches of 100k (no reader
//! is active here, so this is the writer's own cost).
//!
//! `cargo run --release -p popmesh-media --example flow_memory -- [flows] [subscribers]`
//! (defaults: 1,000,000 flows, 1 subscriber).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use popmesh_media::flow::{FlowKey, FlowSpec, FlowTable, Target};

/// The allocator `popmesh-dataplane` runs with: what a flow costs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u32 = args
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let subscribers: u16 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1);
    let before = rss_bytes();
    let mut t = FlowTable::new(flows as usize);
    let sized = rss_bytes();
    let started = std::time::Instant::now();
    for i in 0..flows {
        if i % 100_000 == 0 && i > 0 {
            t.publish();
        }
        let dst = SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 5004);
        t.upsert(FlowSpec {
            name: "room".into(),
            key: FlowKey::new(0, SocketAddr::V4(dst)),
            source: None,
            clock_rate: 90_000,
            targets: (0..subscribers)
                .map(|k| Target {
                    port: 0,
                    addr: SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::new(192, 168, 0, 1),
                        7000 + k,
                    )),
                    mac: None,
                })
                .collect(),
        })
        .expect("install");
    }
    // Two publishes: both left-right copies hold every flow.
    t.publish();
    let install_s = started.elapsed().as_secs_f64();
    t.publish();
    let after = rss_bytes();
    let per_flow = (after - before) as f64 / f64::from(flows);
    println!(
        "flows {flows}, subscribers per flow {subscribers}: index (both copies, presized) {:.1} MiB, \
         total {:.1} MiB, {per_flow:.0} bytes per flow",
        (sized - before) as f64 / 1048576.0,
        (after - before) as f64 / 1048576.0,
    );
    println!(
        "installs: {:.0} flows/s (batches of 100k, each published)",
        f64::from(flows) / install_s
    );
    let started = std::time::Instant::now();
    for i in 0..flows {
        if i % 100_000 == 0 && i > 0 {
            t.publish();
        }
        let dst = SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 5004);
        t.remove(FlowKey::new(0, SocketAddr::V4(dst)));
    }
    t.publish();
    println!(
        "removals: {:.0} flows/s (batches of 100k, each published)",
        f64::from(flows) / started.elapsed().as_secs_f64()
    );
    println!(
        "size_of::<Flow>() = {} bytes, size_of::<Target>() = {} bytes",
        std::mem::size_of::<popmesh_media::Flow>(),
        std::mem::size_of::<Target>()
    );
}
