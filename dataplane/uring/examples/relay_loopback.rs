//! Measures the worker side of a relay on loopback: CPU time per received packet and
//! `io_uring_enter` calls per burst, with and without GSO.
//!
//! Each round preloads `--packets` datagrams into the backend's socket, then relays them as a
//! worker would: bursts of 32, every packet to each of `--fanout` sink sockets, transmissions
//! ordered by destination so runs to one subscriber can coalesce. Worker CPU time comes from
//! `/proc/thread-self/schedstat` and includes the kernel's loopback delivery to the sinks.
//!
//! ```text
//! cargo run --release -p popmesh-uring --example relay_loopback -- [--gso on|off] \
//!     [--packets 4000] [--size 200] [--fanout 4] [--rounds 10]
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use popmesh_media::backend::{Backend, Burst, Tx};
use popmesh_uring::{UringBackend, UringParams};
use socket2::{Domain, Socket, Type};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// Thread CPU time in ns (first field of schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn big_socket(addr: &str) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
    let _ = s.set_recv_buffer_size(64 << 20);
    s.bind(&addr.parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    s.into()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gso = !args.windows(2).any(|w| w[0] == "--gso" && w[1] == "off");
    let packets = arg(&args, "--packets", 4000);
    let size = arg(&args, "--size", 200);
    let fanout = arg(&args, "--fanout", 4);
    let rounds = arg(&args, "--rounds", 10);

    let params = UringParams {
        gso,
        buffers: 8192,
        rcvbuf_bytes: 64 << 20,
        sndbuf_bytes: 64 << 20,
        ..UringParams::default()
    };
    let mut backend =
        UringBackend::open(&params, &["127.0.0.1:0".parse().expect("addr")]).expect("open backend");
    let local = backend.local_addr(0).expect("port 0");

    let sinks: Vec<UdpSocket> = (0..fanout).map(|_| big_socket("127.0.0.1:0")).collect();
    let dsts: Vec<SocketAddr> = sinks
        .iter()
        .map(|s| s.local_addr().expect("addr"))
        .collect();
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = sinks
        .into_iter()
        .map(|s| {
            let (delivered, stop) = (Arc::clone(&delivered), Arc::clone(&stop));
            thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("timeout");
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if s.recv(&mut buf).is_ok() {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let sender = big_socket("127.0.0.1:0");
    let payload = vec![0x5au8; size];
    let mut burst = Burst::with_capacity(32, 32 * fanout);
    let (mut cpu_ns, mut relayed, mut bursts) = (0u64, 0u64, 0u64);
    let start_stats = backend.stats();
    for _ in 0..rounds {
        for _ in 0..packets {
            sender.send_to(&payload, local).expect("send");
        }
        let t0 = thread_cpu_ns();
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < packets && Instant::now() < deadline {
            let n = backend.rx_burst(&mut burst, 32);
            if n == 0 {
                backend.idle_wait(popmesh_media::IdleWait {
                    timeout: Duration::from_millis(1),
                    burst: 32,
                    coalesce: Duration::ZERO,
                });
                continue;
            }
            for dst in &dsts {
                for pkt in 0..n as u16 {
                    burst.tx.push(Tx {
                        pkt,
                        port: 0,
                        dst: *dst,
                    });
                }
            }
            backend.tx_burst(&mut burst);
            got += n;
            bursts += 1;
        }
        cpu_ns += thread_cpu_ns() - t0;
        relayed += got as u64;
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.join();
    }
    let s = backend.stats();
    let calls = s.submit_calls - start_stats.submit_calls;
    println!(
        "gso={} size={size} fanout={fanout}: relayed {relayed} packets in {bursts} bursts, \
         delivered {}/{} datagrams",
        if gso { "on" } else { "off" },
        delivered.load(Ordering::Relaxed),
        relayed * fanout as u64
    );
    println!(
        "worker cpu {:.0} ns/packet received ({:.0} ns/datagram sent), \
         {:.2} io_uring_enter/burst, {} sendmsg SQEs ({} GSO batches), tx_errors {}, \
         rx_nobufs {}, socket drops {}",
        cpu_ns as f64 / relayed.max(1) as f64,
        cpu_ns as f64 / (relayed.max(1) * fanout as u64) as f64,
        calls as f64 / bursts.max(1) as f64,
        s.tx_sqes,
        s.tx_gso_batches,
        s.tx_errors,
        s.rx_nobufs,
        s.rx_socket_drops
    );
}
