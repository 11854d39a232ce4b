//! Drives the real `popmesh-dataplane` binary over loopback.

mod dpdk_lab;
mod harness;
mod lab;
mod netns;
mod rejects;
