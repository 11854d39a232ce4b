use std::ffi::CString;

use popmesh_dpdk::{sys, Error, Mempool, DEFAULT_DATA_ROOM, MAX_NAME_LEN};

use crate::common::{init_eal, pool};

fn pool_exists(name: &str) -> bool {
    let name = CString::new(name).expect("no NUL");
    // SAFETY: EAL is initialised by the caller; the name is NUL-terminated.
    !unsafe { sys::rte_mempool_lookup(name.as_ptr()) }.is_null()
}

#[test]
fn alloc_and_free_track_in_use() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "counts", 63);
    assert_eq!(pool.capacity(), 63);
    assert_eq!(pool.name(), "counts");
    let taken: Vec<_> = (0..10).map(|_| pool.alloc().expect("free mbuf")).collect();
    assert_eq!(pool.in_use(), 10);
    assert_eq!(pool.available(), 53);
    let fresh = &taken[0];
    assert_eq!(fresh.len(), 0);
    assert_eq!(fresh.nb_segs(), 1);
    assert_eq!(fresh.headroom(), usize::from(popmesh_dpdk::HEADROOM));
    assert_eq!(
        fresh.tailroom(),
        usize::from(DEFAULT_DATA_ROOM - popmesh_dpdk::HEADROOM)
    );
    drop(taken);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn alloc_bulk_is_all_or_nothing() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "bulk", 127);
    let mut out = Vec::new();
    assert!(!pool.alloc_bulk(&mut out, 128), "more than the pool holds");
    assert!(out.is_empty());
    assert_eq!(pool.in_use(), 0, "a failed bulk alloc returns what it took");
    assert!(pool.alloc_bulk(&mut out, 100), "spans two internal chunks");
    assert_eq!(out.len(), 100);
    assert!(!pool.alloc_bulk(&mut out, 28));
    assert_eq!(out.len(), 100, "failure leaves earlier contents alone");
    assert!(pool.alloc_bulk(&mut out, 27));
    assert!(pool.alloc().is_none(), "pool exhausted");
    out.clear();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn invalid_pools_are_explained() {
    let eal = init_eal(&[]);
    for (name, rule) in [
        ("", "empty"),
        ("a-name-longer-than-25-bytes", "25 bytes"),
        ("nul\0", "NUL"),
    ] {
        let err = Mempool::new(&eal, name, 63, 0, DEFAULT_DATA_ROOM, None).expect_err(name);
        assert!(matches!(err, Error::MempoolName { .. }), "{err:?}");
        assert!(err.to_string().contains(rule), "{err}");
    }
    assert_eq!(MAX_NAME_LEN, 25);

    let _first = pool(&eal, "dup", 63);
    let err = Mempool::new(&eal, "dup", 63, 0, DEFAULT_DATA_ROOM, None).expect_err("name taken");
    assert!(err.to_string().contains("unique name"), "{err}");

    let err = Mempool::new(&eal, "bigcache", 63, 600, DEFAULT_DATA_ROOM, None).expect_err("cache");
    let Error::MempoolCreate { errno, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(errno, libc::EINVAL);
    assert!(err.to_string().contains("at most 512"), "{err}");

    let err = Mempool::new(&eal, "huge", 1 << 24, 0, DEFAULT_DATA_ROOM, None).expect_err("128 MB");
    assert!(
        err.to_string().contains("nr_hugepages"),
        "out of memory names the fix: {err}"
    );
}

#[test]
fn last_handle_frees_the_pool_only_when_every_mbuf_is_back() {
    let eal = init_eal(&[]);
    let clean = pool(&eal, "clean", 63);
    let clone = clean.clone();
    drop(clean);
    assert!(pool_exists("clean"), "a clone still holds it");
    drop(clone);
    assert!(
        !pool_exists("clean"),
        "last handle with nothing outstanding frees it"
    );

    let leaky = pool(&eal, "leaky", 63);
    let mut outstanding = leaky.alloc().expect("free mbuf");
    drop(leaky);
    assert!(
        pool_exists("leaky"),
        "freeing under a live mbuf would be use-after-free"
    );
    // The mbuf stays usable and can still be returned.
    outstanding
        .append(4)
        .expect("tailroom")
        .copy_from_slice(b"late");
    assert_eq!(outstanding.as_ref(), b"late");
    drop(outstanding);
}
