use std::ffi::{c_char, c_int, CStr, CString};

use popmesh_dpdk_sys as sys;

/// EAL's runtime directory for this process (`--file-prefix`), which EAL leaves behind.
fn runtime_dir() -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("popmesh-test-{}", std::process::id());
    // /proc/self is owned by the process's effective uid.
    let root = std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0);
    let base = if root {
        std::path::PathBuf::from("/var/run/dpdk")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR").map_or_else(
            || std::path::PathBuf::from("/tmp/dpdk"),
            |dir| std::path::PathBuf::from(dir).join("dpdk"),
        )
    };
    base.join(prefix)
}

/// Cleans EAL up and removes its runtime directory; the test's last step.
fn eal_cleanup() {
    // SAFETY: EAL is initialised and the test no longer uses anything DPDK-owned.
    assert_eq!(unsafe { sys::rte_eal_cleanup() }, 0);
    // Best effort: nothing to remove is fine.
    let _ = std::fs::remove_dir_all(runtime_dir());
}

/// Starts EAL with `--no-huge`, no PCI probing (the machine's own NICs are never touched) and a
/// per-process file prefix, plus `extra` arguments.
fn eal_init(extra: &[&str]) {
    let prefix = format!("--file-prefix=popmesh-test-{}", std::process::id());
    let mut args: Vec<CString> = [
        "popmesh-dpdk-sys-test",
        "--no-huge",
        "-m",
        "128",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-l",
        "0",
        "--log-level=lib.eal:warning",
        prefix.as_str(),
    ]
    .iter()
    .chain(extra)
    .map(|arg| CString::new(*arg).expect("test arguments have no NUL"))
    .collect();
    // EAL may keep pointers into argv for the life of the process: leak the strings.
    let mut argv: Vec<*mut c_char> = args.iter_mut().map(|arg| arg.as_ptr().cast_mut()).collect();
    std::mem::forget(args);
    let argc = c_int::try_from(argv.len()).expect("few arguments");
    // SAFETY: argv holds argc valid NUL-terminated strings that live for the rest of the process;
    // this is the only rte_eal_init call in this test process.
    let parsed = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
    std::mem::forget(argv);
    if parsed < 0 {
        // SAFETY: reads the calling thread's rte_errno and DPDK's static message table.
        let reason = unsafe { CStr::from_ptr(sys::rte_strerror(sys::popmesh_rte_errno())) };
        panic!("rte_eal_init failed: {}", reason.to_string_lossy());
    }
}

#[test]
fn vdev_plugins_load_and_create_ports() {
    eal_init(&["--vdev=net_null0"]);
    // SAFETY: EAL is initialised; these only read ethdev's port table.
    let ports = unsafe { sys::rte_eth_dev_count_avail() };
    assert_eq!(
        ports, 1,
        "net_null0 should be the only port: the net_null PMD plugin did not load"
    );

    let name = CString::new("net_null0").expect("no NUL");
    let mut port_id = u16::MAX;
    // SAFETY: name is NUL-terminated, port_id is a valid out pointer.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut port_id) };
    assert_eq!(rc, 0);
    assert_eq!(port_id, 0);

    // SAFETY: the calling thread is EAL's main lcore, so it has lcore id 0.
    assert_eq!(unsafe { sys::popmesh_lcore_id() }, 0);
    // SAFETY: rte_version returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(sys::rte_version()) };
    assert!(
        version.to_string_lossy().starts_with("DPDK "),
        "{version:?}"
    );

    eal_cleanup();
}

#[test]
fn shim_mbuf_roundtrip() {
    eal_init(&[]);
    let name = CString::new("shim-pool").expect("no NUL");
    // SAFETY: EAL is initialised; the name is NUL-terminated.
    let pool = unsafe {
        sys::rte_pktmbuf_pool_create(name.as_ptr(), 63, 0, 0, 2048 + 128, sys::SOCKET_ID_ANY)
    };
    assert!(!pool.is_null(), "pool creation failed");
    // SAFETY: pool is a live pktmbuf pool.
    let m = unsafe { sys::popmesh_pktmbuf_alloc(pool) };
    assert!(!m.is_null());
    // SAFETY: m is a fresh mbuf we own; every call respects its headroom/tailroom.
    unsafe {
        assert_eq!(sys::popmesh_pktmbuf_data_len(m), 0);
        assert_eq!(sys::popmesh_pktmbuf_headroom(m), 128);
        assert_eq!(sys::popmesh_pktmbuf_tailroom(m), 2048);
        assert_eq!(sys::popmesh_mbuf_is_exclusive(m), 1);
        let tail = sys::popmesh_pktmbuf_append(m, 10);
        assert!(!tail.is_null());
        assert_eq!(sys::popmesh_pktmbuf_pkt_len(m), 10);
        let head = sys::popmesh_pktmbuf_prepend(m, 4);
        assert_eq!(head.cast::<u8>(), sys::popmesh_pktmbuf_mtod(m).cast::<u8>());
        assert_eq!(sys::popmesh_pktmbuf_data_len(m), 14);
        assert!(
            sys::popmesh_pktmbuf_prepend(m, 1000).is_null(),
            "headroom is only 124 now"
        );
        assert_eq!(sys::rte_mempool_in_use_count(pool), 1);
        sys::popmesh_pktmbuf_free(m);
        assert_eq!(sys::rte_mempool_in_use_count(pool), 0);
        sys::rte_mempool_free(pool);
    }
    eal_cleanup();
}
