//! Drives the real `popmesh-dataplane` binary over loopback.

mod harness;
mod lab;
mod rejects;
