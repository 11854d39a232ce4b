use popmesh_dpdk::{Eal, Error};

use crate::common::{eal_args, init_eal, pool};

#[test]
fn second_init_is_refused() {
    let eal = init_eal(&[]);
    let err = Eal::init(eal_args(&[])).expect_err("EAL initialises once per process");
    assert!(matches!(err, Error::AlreadyInitialised), "{err:?}");
    assert!(err.to_string().contains("once per process"), "{err}");
    drop(eal);
}

#[test]
fn failed_init_says_it_cannot_be_retried() {
    let err = Eal::init(eal_args(&["--definitely-not-an-eal-option"])).expect_err("bad option");
    let Error::EalInit { errno, .. } = &err else {
        panic!("unexpected {err:?}")
    };
    assert_ne!(*errno, 0);
    let message = err.to_string();
    assert!(message.contains("rte_eal_init failed"), "{message}");
    assert!(message.contains("cannot be initialised again"), "{message}");
    let again = Eal::init(eal_args(&[])).expect_err("no second attempt");
    assert!(matches!(again, Error::AlreadyInitialised), "{again:?}");
}

#[test]
fn nul_in_argument_is_rejected_before_eal_runs() {
    let err = Eal::init(["--no-huge", "bad\0arg"]).expect_err("NUL cannot reach C");
    assert!(matches!(err, Error::NulInArgument { .. }), "{err:?}");
    // EAL was not touched, so a correct init still works.
    let _eal = init_eal(&[]);
}

#[test]
fn version_and_topology() {
    assert!(Eal::version().starts_with("DPDK "), "{}", Eal::version());
    let eal = init_eal(&["--vdev=net_ring0"]);
    assert!(eal.socket_count() >= 1);
    assert!(
        eal.socket_id_of_port(0).is_some(),
        "net_ring0 is created on the caller's socket"
    );
    assert_eq!(eal.socket_id_of_port(31), None, "no such port");
}

#[test]
fn registered_threads_get_distinct_lcores() {
    let eal = init_eal(&[]);
    let main = eal.register_thread().expect("main lcore");
    assert_eq!(main.lcore_id(), 0, "EAL's main thread keeps lcore 0");
    assert!(!main.is_owner(), "EAL owns the main lcore registration");

    let pool = pool(&eal, "reg", 255);
    let (tx, rx) = std::sync::mpsc::channel();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (eal, pool, tx, barrier) = (eal.clone(), pool.clone(), tx.clone(), barrier.clone());
            std::thread::spawn(move || {
                let registration = eal.register_thread().expect("a free lcore id");
                assert!(registration.is_owner());
                let nested = eal.register_thread().expect("already registered");
                assert!(!nested.is_owner());
                assert_eq!(nested.lcore_id(), registration.lcore_id());
                // Allocation and free through this lcore's cache.
                let mbufs: Vec<_> = (0..32).map(|_| pool.alloc().expect("free mbuf")).collect();
                drop(mbufs);
                tx.send(registration.lcore_id()).expect("receiver alive");
                // Both threads hold their registration at the same time.
                barrier.wait();
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker ran");
    }
    drop(tx);
    let mut ids: Vec<u32> = rx.iter().collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 2);
    assert_ne!(
        ids[0], ids[1],
        "concurrent registrations share lcore {}",
        ids[0]
    );
    assert!(ids.iter().all(|&id| id != 0 && id < 128), "{ids:?}");
    assert_eq!(
        pool.in_use(),
        0,
        "mbufs freed on registered threads are back"
    );
}
