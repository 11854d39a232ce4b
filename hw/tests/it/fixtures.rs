//! Loading the fixture trees and configs.

use std::path::PathBuf;

use popmesh_config::Config;
use popmesh_hw::{CheckId, Finding, Severity, Topology};

pub fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// This project's 2-CPU VM, captured with tools/hw-capture.sh.
pub fn vm() -> Topology {
    load("vm-2core")
}

/// 2 sockets x 8 cores x 2 threads; ice NIC + vfio-bound port on node 0, mlx5 on node 1.
pub fn two_socket() -> Topology {
    load("two-socket")
}

/// 1 socket x 8 cores x 2 threads; one 4-queue ixgbe NIC reporting numa_node -1.
pub fn edge() -> Topology {
    load("edge-1s")
}

pub fn load(name: &str) -> Topology {
    Topology::read(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn config(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n--- config ---\n{text}"))
}

/// A DPDK config with `[media] cores`, extra `[media]`/`[media.dpdk]` lines and one port on
/// `device`.
pub fn dpdk(cores: &str, dpdk_extra: &str, device: &str, lanes: &str) -> Config {
    config(&format!(
        "[media]\nbackend = \"dpdk\"\ncores = {cores}\n[media.dpdk]\nmain_core = 0\n{dpdk_extra}\n\
         {lanes}\n[[media.ports]]\nname = \"edge\"\nbind = \"198.51.100.1:40000\"\n\
         device = \"{device}\"\ngateway_mac = \"02:00:00:00:00:01\"\n"
    ))
}

/// A uring config with `cores` and one port bound to `bind`.
pub fn uring(cores: &str, bind: &str, lanes: &str) -> Config {
    config(&format!(
        "[media]\ncores = {cores}\n{lanes}\n[[media.ports]]\nname = \"edge\"\nbind = \"{bind}\"\n"
    ))
}

pub fn of(findings: &[Finding], check: CheckId) -> Vec<&Finding> {
    findings.iter().filter(|f| f.check == check).collect()
}

pub fn errors(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect()
}
