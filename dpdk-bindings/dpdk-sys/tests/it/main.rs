//! Integration tests of the raw bindings: the library links, EAL starts and the PMD plugins load.
//!
//! Each test initialises EAL at most once: DPDK allows one `rte_eal_init` per process, and
//! `cargo nextest` runs every test in its own process.

#![allow(unsafe_code)]

#[cfg(popmesh_dpdk)]
mod eal;

#[cfg(not(popmesh_dpdk))]
#[test]
fn dpdk_absent() {
    const { assert!(!popmesh_dpdk_sys::AVAILABLE) };
    eprintln!(
        "skipped: needs DPDK >= 22.11 (apt-get install dpdk-dev libdpdk-dev); built without it"
    );
}
