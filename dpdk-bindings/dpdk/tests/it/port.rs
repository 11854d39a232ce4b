use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use popmesh_dpdk::{Error, Mbuf, Mempool, Port, PortConfig};

use crate::common::{bytes_of, frame, init_eal, mbuf_with, pool};

/// Receives until `want` packets arrived or the ring stays empty.
fn rx_all(rx: &mut popmesh_dpdk::RxQueue, want: usize) -> Vec<Mbuf> {
    let mut out = Vec::with_capacity(want);
    for _ in 0..100 {
        if out.len() >= want {
            break;
        }
        let missing = want - out.len();
        if rx.rx_burst(&mut out, missing) == 0 {
            std::thread::yield_now();
        }
    }
    out
}

fn frames(pool: &Mempool, count: usize, len: usize) -> Vec<Mbuf> {
    (0..count)
        .map(|i| mbuf_with(pool, &frame(len, i as u8)))
        .collect()
}

#[test]
fn net_ring_loops_tx_back_to_rx_with_payload_intact() {
    let eal = init_eal(&["--vdev=net_ring0"]);
    let pool = pool(&eal, "ring", 511);
    let port = Port::by_name(&eal, "net_ring0").expect("vdev probed");
    let info = port.info().expect("info");
    assert_eq!(info.driver_name, "net_ring");
    assert_eq!(info.name, "net_ring0");
    assert!(info.multi_seg_tx, "net_ring passes chained mbufs through");
    assert_eq!(info.max_rx_queues, 16);

    let config = PortConfig {
        multi_seg_tx: true,
        ..PortConfig::default()
    };
    let (mut rxs, mut txs) = port.configure(&config, &pool).expect("configure");
    assert_eq!((rxs.len(), txs.len()), (1, 1));
    assert!(!port.link().up, "down before start");
    port.start().expect("start");
    assert!(port.is_started());
    let link = port.link();
    assert!(link.up);
    assert_eq!(link.speed_mbps, 10_000);
    let err = port
        .set_mac_addr([0x02, 0, 0, 0, 0, 0x42])
        .expect_err("net_ring has no MAC setter");
    assert!(err.to_string().contains("not supported"), "{err}");

    let mut burst = frames(&pool, 32, 60);
    let sent = txs[0].tx_burst(&mut burst);
    assert_eq!(sent, 32);
    assert!(burst.is_empty());
    assert_eq!(pool.in_use(), 32, "sent mbufs sit in the ring, not freed");

    let received = rx_all(&mut rxs[0], 32);
    assert_eq!(received.len(), 32);
    for (i, m) in received.iter().enumerate() {
        assert_eq!(
            bytes_of(m),
            frame(60, i as u8),
            "packet {i} in order and intact"
        );
        assert_eq!(m.writable_len(), 60, "received mbufs are exclusively ours");
    }
    drop(received);

    // A chained packet survives the loop as a chain.
    let mut chained = mbuf_with(&pool, b"head-");
    chained.chain(mbuf_with(&pool, b"tail")).expect("chain");
    let mut one = vec![chained];
    assert_eq!(txs[0].tx_burst(&mut one), 1);
    let back = rx_all(&mut rxs[0], 1);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].nb_segs(), 2);
    assert_eq!(bytes_of(&back[0]), b"head-tail");
    drop(back);

    let stats = port.stats();
    assert_eq!((stats.opackets, stats.ipackets), (33, 33));
    assert_eq!(stats.oerrors, 0);

    drop((rxs, txs, port));
    assert_eq!(pool.in_use(), 0, "closing the port returned every mbuf");
}

#[test]
fn each_ring_queue_loops_to_itself() {
    let eal = init_eal(&["--vdev=net_ring0"]);
    let pool = pool(&eal, "queues", 511);
    let port = Port::by_name(&eal, "net_ring0").expect("vdev");
    let config = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..PortConfig::default()
    };
    let (mut rxs, mut txs) = port.configure(&config, &pool).expect("configure");
    assert_eq!(rxs[1].queue_id(), 1);
    assert_eq!(txs[1].port_id(), port.id());
    port.start().expect("start");

    let mut burst = frames(&pool, 5, 64);
    assert_eq!(txs[1].tx_burst(&mut burst), 5);
    let mut out = Vec::new();
    assert_eq!(rxs[0].rx_burst(&mut out, 32), 0, "queue 0 got nothing");
    assert_eq!(rx_all(&mut rxs[1], 5).len(), 5);
    drop(txs.remove(0));
}

#[test]
fn tx_on_a_stopped_port_frees_the_whole_burst() {
    let eal = init_eal(&["--vdev=net_ring0"]);
    let pool = pool(&eal, "stopped", 255);
    let port = Port::by_name(&eal, "net_ring0").expect("vdev");
    let (mut rxs, mut txs) = port
        .configure(&PortConfig::default(), &pool)
        .expect("configure");

    let mut burst = frames(&pool, 10, 64);
    assert_eq!(txs[0].tx_burst(&mut burst), 0, "not started yet");
    assert!(burst.is_empty());
    assert_eq!(pool.in_use(), 0, "unsent mbufs were freed");

    port.start().expect("start");
    port.stop().expect("stop");
    assert!(!port.is_started());
    let mut burst = frames(&pool, 10, 64);
    assert_eq!(txs[0].tx_burst_keep_unsent(&mut burst), 0);
    assert_eq!(burst.len(), 10, "keep_unsent hands the packets back");
    assert_eq!(txs[0].tx_burst(&mut burst), 0);
    assert_eq!(pool.in_use(), 0);
    let mut out = Vec::new();
    assert_eq!(
        rxs[0].rx_burst(&mut out, 32),
        0,
        "a stopped port receives nothing"
    );
}

#[test]
fn a_full_ring_frees_or_returns_the_unsent_tail() {
    let eal = init_eal(&["--vdev=net_ring0"]);
    let pool = pool(&eal, "full", 2047);
    let port = Port::by_name(&eal, "net_ring0").expect("vdev");
    let (mut rxs, mut txs) = port
        .configure(&PortConfig::default(), &pool)
        .expect("configure");
    port.start().expect("start");

    // net_ring's rings hold 1023 packets.
    let mut burst = frames(&pool, 1100, 60);
    let sent = txs[0].tx_burst(&mut burst);
    assert_eq!(sent, 1023, "the ring takes 1023");
    assert!(burst.is_empty());
    assert_eq!(pool.in_use(), 1023, "the 77 unsent were freed");

    let mut retry = frames(&pool, 5, 60);
    assert_eq!(txs[0].tx_burst_keep_unsent(&mut retry), 0, "still full");
    assert_eq!(retry.len(), 5);
    assert_eq!(bytes_of(&retry[0]), frame(60, 0), "order kept");

    let drained = rx_all(&mut rxs[0], 1023);
    assert_eq!(drained.len(), 1023);
    assert_eq!(bytes_of(&drained[1022]), frame(60, 1022u32 as u8));
    drop(drained);
    assert_eq!(txs[0].tx_burst_keep_unsent(&mut retry), 5, "room again");
    assert!(retry.is_empty());
    assert_eq!(rx_all(&mut rxs[0], 5).len(), 5);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn missing_port_name_says_how_to_add_it() {
    let eal = init_eal(&["--vdev=net_ring0"]);
    let err = Port::by_name(&eal, "net_af_xdp0").expect_err("no such port");
    assert!(matches!(err, Error::NoSuchPort { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("no DPDK port named `net_af_xdp0`"),
        "{message}"
    );
    assert!(message.contains("--vdev"), "{message}");
    assert!(message.contains("allow-list"), "{message}");
    assert!(
        message.contains("[net_ring0]"),
        "lists what exists: {message}"
    );
}

#[test]
fn configuration_errors_name_the_limit() {
    let eal = init_eal(&["--vdev=net_ring0", "--vdev=net_null0"]);
    let pool = pool(&eal, "cfg", 511);
    let ring = Port::by_name(&eal, "net_ring0").expect("vdev");

    let too_many = PortConfig {
        rx_queues: 17,
        ..PortConfig::default()
    };
    let err = ring
        .configure(&too_many, &pool)
        .expect_err("net_ring has 16 queues");
    assert!(
        matches!(err, Error::TooManyQueues { max_rx: 16, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("at most 16 RX"), "{err}");

    let none = PortConfig {
        rx_queues: 0,
        tx_queues: 0,
        ..PortConfig::default()
    };
    assert!(matches!(
        ring.configure(&none, &pool),
        Err(Error::InvalidPortConfig { .. })
    ));

    let mtu = PortConfig {
        mtu: Some(20),
        ..PortConfig::default()
    };
    let err = ring
        .configure(&mtu, &pool)
        .expect_err("below the minimum MTU");
    assert!(
        matches!(err, Error::MtuOutOfRange { min: 46, .. }),
        "{err:?}"
    );

    assert!(matches!(ring.start(), Err(Error::NotConfigured { .. })));

    let clone_pool = Mempool::new(&eal, "cfg-clones", 63, 0, 0, None).expect("pool");
    let err = ring
        .configure(&PortConfig::default(), &clone_pool)
        .expect_err("no data room");
    assert!(err.to_string().contains("DEFAULT_DATA_ROOM"), "{err}");

    let null = Port::by_name(&eal, "net_null0").expect("vdev");
    let multi = PortConfig {
        multi_seg_tx: true,
        ..PortConfig::default()
    };
    let err = null
        .configure(&multi, &pool)
        .expect_err("net_null has no MULTI_SEGS");
    assert!(err.to_string().contains("multi_seg_tx: false"), "{err}");

    let err = Port::by_name(&eal, "net_ring0").expect_err("already open");
    assert!(matches!(err, Error::PortInUse { .. }), "{err:?}");

    let (rxs, txs) = ring
        .configure(&PortConfig::default(), &pool)
        .expect("configure");
    let err = ring
        .configure(&PortConfig::default(), &pool)
        .expect_err("queues alive");
    assert!(matches!(err, Error::QueuesInUse { live: 2, .. }), "{err:?}");
    drop((rxs, txs));
    let (_rxs, _txs) = ring
        .configure(&PortConfig::default(), &pool)
        .expect("reconfigure after drop");
}

#[test]
fn net_null_rss_receive_and_xstats() {
    let eal = init_eal(&["--vdev=net_null0", "--vdev=net_ring0"]);
    let names = Port::names(&eal);
    assert_eq!(names, ["net_null0", "net_ring0"]);
    let pool = pool(&eal, "null", 1023);
    let mut ports = Port::all(&eal);
    assert_eq!(ports.len(), 2);
    assert!(Port::all(&eal).is_empty(), "both are open already");
    let null = ports.remove(0);
    let info = null.info().expect("info");
    assert_ne!(info.rss_hash_types, 0, "net_null emulates RSS");

    let config = PortConfig {
        rx_queues: 2,
        tx_queues: 1,
        rss: true,
        promiscuous: true,
        ..PortConfig::default()
    };
    let (mut rxs, mut txs) = null.configure(&config, &pool).expect("configure");
    null.start().expect("start");
    let mut out = Vec::new();
    // net_null makes up 64-byte packets from the RX pool on every burst.
    assert_eq!(rxs[1].rx_burst(&mut out, 32), 32);
    assert!(out.iter().all(|m| m.len() == 64 && m.writable_len() == 64));
    assert_eq!(pool.in_use(), 32);
    assert_eq!(txs[0].tx_burst(&mut out), 32, "net_null swallows TX");
    assert_eq!(pool.in_use(), 0, "and frees what it sent");

    let mac = [0x02, 0, 0, 0, 0, 0x42];
    null.set_mac_addr(mac).expect("net_null takes a MAC");
    assert_eq!(null.mac_addr(), mac);
    let err = null
        .set_mac_addr([0x01, 0, 0x5e, 0, 0, 1])
        .expect_err("multicast");
    assert!(matches!(err, Error::PortOp { .. }), "{err:?}");

    let stats = null.stats();
    assert_eq!((stats.ipackets, stats.opackets), (32, 32));
    let xstats = null.xstats();
    assert!(
        xstats.contains(&("rx_good_packets".to_owned(), 32)),
        "{xstats:?}"
    );
    assert!(
        xstats.contains(&("tx_good_packets".to_owned(), 32)),
        "{xstats:?}"
    );
}

#[test]
fn stop_and_start_wait_for_bursts_on_other_threads() {
    let eal = init_eal(&["--vdev=net_ring0"]);
    let pool = pool(&eal, "race", 2047);
    let port = Port::by_name(&eal, "net_ring0").expect("vdev");
    let (mut rxs, mut txs) = port
        .configure(&PortConfig::default(), &pool)
        .expect("configure");
    port.start().expect("start");
    let (mut rx, mut tx) = (rxs.remove(0), txs.remove(0));

    let done = Arc::new(AtomicBool::new(false));
    let bursts = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (pool, done, bursts) = (pool.clone(), done.clone(), bursts.clone());
        std::thread::spawn(move || {
            let _lcore = eal.register_thread().expect("lcore");
            let (mut sent, mut received) = (0usize, 0usize);
            let mut out = Vec::with_capacity(32);
            while !done.load(Ordering::Relaxed) {
                let mut burst: Vec<Mbuf> = (0..8).filter_map(|_| pool.alloc()).collect();
                sent += tx.tx_burst(&mut burst);
                received += rx.rx_burst(&mut out, 32);
                out.clear();
                bursts.fetch_add(1, Ordering::Relaxed);
            }
            (sent, received, tx, rx)
        })
    };
    // Flip the port while the worker is bursting: every flip must wait out a running burst.
    for _ in 0..200 {
        let before = bursts.load(Ordering::Relaxed);
        while bursts.load(Ordering::Relaxed) < before + 2 {
            std::thread::yield_now();
        }
        port.stop().expect("stop");
        port.start().expect("start");
    }
    done.store(true, Ordering::Relaxed);
    let (sent, received, _tx, mut rx) = worker.join().expect("worker ran");
    let rest = rx_all(&mut rx, sent - received).len();
    assert_eq!(
        received + rest,
        sent,
        "every accepted packet comes back exactly once"
    );
    assert!(sent > 0);
    drop(rx);
    assert_eq!(pool.in_use(), 0);
}
