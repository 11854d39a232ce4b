//! Shared test setup: EAL arguments that never touch real hardware, pools and frames.

use std::path::PathBuf;
use std::sync::OnceLock;

use popmesh_dpdk::{Eal, Mbuf, Mempool, DEFAULT_DATA_ROOM};

/// EAL's runtime directory for this process's file prefix, removed at exit.
static RUNTIME_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_runtime_dir() {
    if let Some(dir) = RUNTIME_DIR.get() {
        // Best effort: a missing directory (EAL never got that far) is fine.
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// EAL leaves `<runtime dir>/dpdk/<file prefix>` behind even after `rte_eal_cleanup`; with one
/// process per test that would be a directory per test run. Remove ours when the process exits.
fn remove_runtime_dir_at_exit(prefix: &str) {
    // SAFETY: geteuid has no preconditions.
    let base = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/run/dpdk")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR").map_or_else(
            || PathBuf::from("/tmp/dpdk"),
            |dir| PathBuf::from(dir).join("dpdk"),
        )
    };
    if RUNTIME_DIR.set(base.join(prefix)).is_ok() {
        // SAFETY: registers a plain function that only touches a static set before it.
        unsafe { libc::atexit(remove_runtime_dir) };
    }
}

/// EAL arguments for a test process: no hugepages, no PCI probing (the machine's own NIC stays
/// with the kernel), no shared config or telemetry socket, a file prefix unique to this
/// process, one lcore, plus `extra` (typically `--vdev=...`).
pub fn eal_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--no-huge",
        "-m",
        "128",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-l",
        "0",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let prefix = format!("popmesh-test-{}", std::process::id());
    remove_runtime_dir_at_exit(&prefix);
    args.push(format!("--file-prefix={prefix}"));
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

/// Initialises EAL for this test process with [`eal_args`].
pub fn init_eal(extra: &[&str]) -> Eal {
    Eal::init(eal_args(extra)).unwrap_or_else(|err| {
        panic!("{err}\n(run the DPDK tests with `cargo nextest run`, one process per test)")
    })
}

/// A pool of `n` standard mbufs.
pub fn pool(eal: &Eal, name: &str, n: u32) -> Mempool {
    Mempool::new(eal, name, n, 0, DEFAULT_DATA_ROOM, None)
        .unwrap_or_else(|err| panic!("creating pool {name}: {err}"))
}

/// `len` bytes that differ per `seed` and per position.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A one-segment mbuf holding `bytes`.
pub fn mbuf_with(pool: &Mempool, bytes: &[u8]) -> Mbuf {
    let mut mbuf = pool.alloc().expect("pool has a free mbuf");
    mbuf.append(bytes.len())
        .expect("bytes fit the tailroom")
        .copy_from_slice(bytes);
    mbuf
}

/// The whole packet's bytes, all segments.
pub fn bytes_of(mbuf: &Mbuf) -> Vec<u8> {
    let mut out = Vec::new();
    mbuf.copy_to_vec(&mut out);
    out
}
