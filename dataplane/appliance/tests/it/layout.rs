//! The start-up layout check (`popmesh hw check`'s checks) on a captured two-socket machine
//! (`POPMESH_HW_ROOT`): errors refuse the config with exit 64 before anything is bound.

use std::process::Command;

use crate::harness::*;

fn two_socket_root() -> std::path::PathBuf {
    repo_root().join("hw/tests/fixtures/two-socket")
}

fn run_on_two_socket(name: &str, text: &str) -> (Option<i32>, String) {
    let path = write_config(name, text);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("POPMESH_HW_ROOT", two_socket_root())
        .output()
        .expect("run popmesh-dataplane");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_worker_on_the_far_numa_node_of_its_port_is_refused_naming_core_port_and_nodes() {
    // 198.51.100.0/24 is on ens1f0, NUMA node 0; CPU 9 is on node 1.
    let port = free_udp().port();
    let (code, stderr) = run_on_two_socket(
        "far-numa.toml",
        &format!(
            "[media]\ncores = [9]\n[[media.ports]]\nname = \"edge\"\nbind = \"198.51.100.1:{port}\"\n"
        ),
    );
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(
        stderr.contains(
            "media.cores[0]: CPU 9 is on NUMA node 1 but port \"edge\" (NIC ens1f0 \
             (0000:3b:00.0)) is on NUMA node 0"
        ),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("fix: use CPUs of node 0 (0-7,16-23)"),
        "stderr: {stderr}"
    );
}

#[test]
fn every_layout_error_is_listed_and_warnings_alone_do_not_refuse() {
    // Two errors at once: a far-node worker and a CPU the machine does not have.
    let (code, stderr) = run_on_two_socket(
        "two-errors.toml",
        "[media]\ncores = [9, 40]\n[[media.ports]]\nname = \"edge\"\nbind = \"198.51.100.1:40000\"\n",
    );
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(stderr.contains("(2 error(s);"), "stderr: {stderr}");
    assert!(
        stderr.contains("media.cores[1]: CPU 40 does not exist"),
        "stderr: {stderr}"
    );
    // Node-local worker but not isolated, IRQs on it: warnings only. The layout check passes,
    // so the daemon goes on to the next check, this VM's own CPUs (which lack CPU 3).
    let (code, stderr) = run_on_two_socket(
        "warn-only.toml",
        "[media]\ncores = [3]\n[[media.ports]]\nname = \"edge\"\nbind = \"198.51.100.1:40000\"\n",
    );
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(!stderr.contains("layout does not fit"), "stderr: {stderr}");
    assert!(
        stderr.contains("CPU 3 is not available to this process"),
        "stderr: {stderr}"
    );
}

#[test]
fn warnings_do_not_refuse_and_check_mode_prints_them() {
    // The captured VM: CPU 1 is not isolated and eth0's IRQs may land on it.
    let path = crate::harness::write_config(
        "vm-warnings.toml",
        "[media]\ncores = [1]\n[[media.ports]]\nname = \"lab\"\nbind = \"127.0.0.1:40000\"\n",
    );
    let out = Command::new(BIN)
        .args(["--check", "--config"])
        .arg(&path)
        .env(
            "POPMESH_HW_ROOT",
            repo_root().join("hw/tests/fixtures/vm-2core"),
        )
        .output()
        .expect("run popmesh-dataplane --check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("warning[not-isolated]: media.cores[0]: CPU 1"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("warning[irq-on-polling-core]"),
        "stderr: {stderr}"
    );
    let effective: serde_json::Value = serde_json::from_slice(&out.stdout).expect("config JSON");
    assert_eq!(effective["media"]["cores"][0], 1);
}
