//! Fast-path costs on `net_ring` (a software ring, so this is our overhead plus DPDK's, no NIC):
//! a TX + RX round trip of a 32-packet burst (alloc_bulk, tx_burst, rx_burst, free), and one
//! fan-out copy with `Mbuf::header_copy_chained`.
//!
//! `cargo bench -p popmesh-dpdk --bench burst`; ns/packet = time per burst / 32. EAL starts once
//! for the whole bench process (`--no-huge`, no PCI).

#[cfg(popmesh_dpdk)]
mod dpdk {
    use std::hint::black_box;

    use criterion::{Criterion, Throughput};
    use popmesh_dpdk::{Eal, Mempool, Port, PortConfig, DEFAULT_DATA_ROOM};

    const BURST: usize = 32;

    pub fn benches(c: &mut Criterion) {
        let prefix = format!("--file-prefix=popmesh-bench-{}", std::process::id());
        let eal = Eal::init([
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--no-shconf",
            "--no-telemetry",
            "-l",
            "0",
            "--vdev=net_ring0",
            prefix.as_str(),
        ])
        .unwrap_or_else(|err| panic!("{err}"));
        let pool = Mempool::new(&eal, "bench", 4095, 256, DEFAULT_DATA_ROOM, None).expect("pool");
        let headers = Mempool::new(&eal, "bench-hdr", 1023, 64, 256, None).expect("pool");
        let clones = Mempool::new(&eal, "bench-clone", 1023, 64, 0, None).expect("pool");
        let port = Port::by_name(&eal, "net_ring0").expect("net_ring0");
        let (mut rxs, mut txs) = port
            .configure(&PortConfig::default(), &pool)
            .expect("configure");
        port.start().expect("start");
        let (rx, tx) = (&mut rxs[0], &mut txs[0]);

        let mut group = c.benchmark_group("net_ring");
        group.throughput(Throughput::Elements(BURST as u64));
        let mut burst = Vec::with_capacity(BURST);
        let mut received = Vec::with_capacity(BURST);
        group.bench_function("alloc_tx_rx_free_burst32", |b| {
            b.iter(|| {
                assert!(pool.alloc_bulk(&mut burst, BURST));
                black_box(tx.tx_burst(&mut burst));
                black_box(rx.rx_burst(&mut received, BURST));
                received.clear();
            });
        });
        group.finish();

        let mut original = pool.alloc().expect("mbuf");
        original.append(1200).expect("tailroom").fill(0x5a);
        c.bench_function("header_copy_chained_42_of_1200", |b| {
            b.iter(|| black_box(original.header_copy_chained(42, &headers, &clones)));
        });
        drop(original);
        drop((rxs, txs, port, pool, headers, clones, eal));
        // EAL leaves its runtime directory behind even after cleanup.
        let _ = std::fs::remove_dir_all(format!(
            "/var/run/dpdk/popmesh-bench-{}",
            std::process::id()
        ));
    }
}

#[cfg(popmesh_dpdk)]
criterion::criterion_group!(benches, dpdk::benches);
#[cfg(popmesh_dpdk)]
criterion::criterion_main!(benches);

#[cfg(not(popmesh_dpdk))]
fn main() {
    eprintln!(
        "skipped: needs DPDK >= 22.11 (apt-get install dpdk-dev libdpdk-dev); built without it"
    );
}
