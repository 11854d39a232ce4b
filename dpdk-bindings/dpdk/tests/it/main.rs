//! Integration tests of the safe DPDK layer on virtual devices (`net_ring`, `net_null`), with
//! `--no-huge` memory and no PCI probing.
//!
//! DPDK allows one EAL initialisation per process, so every test function initialises EAL at
//! most once and the suite is meant for `cargo nextest`, which runs each test in its own
//! process. Under plain `cargo test` (one process), run one test at a time by name.

// A few tests reach into the raw bindings (mempool lookup, Mbuf::from_raw round trip).
#![allow(unsafe_code)]

#[cfg(popmesh_dpdk)]
mod common;
#[cfg(popmesh_dpdk)]
mod eal;
#[cfg(popmesh_dpdk)]
mod mbuf;
#[cfg(popmesh_dpdk)]
mod mbuf_props;
#[cfg(popmesh_dpdk)]
mod mempool;
#[cfg(popmesh_dpdk)]
mod port;

#[cfg(not(popmesh_dpdk))]
#[test]
fn dpdk_absent() {
    const { assert!(!popmesh_dpdk::AVAILABLE) };
    eprintln!(
        "skipped: needs DPDK >= 22.11 (apt-get install dpdk-dev libdpdk-dev); built without it"
    );
}
