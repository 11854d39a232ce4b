//! Drives the real `popmesh-dataplane` binary over loopback, and through network namespaces
//! with DPDK.

// The DPDK labs exist only in builds with DPDK (see dpdk-bindings/README.md).
mod control;
#[cfg(popmesh_dpdk)]
mod dpdk_lab;
mod harness;
mod lab;
mod layout;
mod netns;
mod rejects;
