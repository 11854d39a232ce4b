//! Drives the real `popmesh` binary: `hw` on the fixtures of `hw/tests/fixtures/` and on this
//! machine; the control commands (`ctrl`) against a real popmesh-ctrld (`daemon`), which must be
//! built first: `cargo build -p popmesh-ctrld`.

mod ctrl;
mod daemon;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_popmesh");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("hw/tests/fixtures").join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run popmesh")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("popmesh-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn write_config(name: &str, body: &str) -> PathBuf {
    let dir = temp(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("popmesh.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

#[test]
fn show_puts_each_nic_under_its_numa_node() {
    let root = fixture("two-socket");
    let out = run(&["hw", "show", "--root", root.to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let node1 = stdout.find("node 1:").expect("node 1 section");
    let ice = stdout.find("NIC ens1f0").expect("ice NIC");
    let mlx = stdout.find("NIC ens2f0").expect("mlx5 NIC");
    assert!(
        ice < node1 && mlx > node1,
        "ice under node 0, mlx5 under node 1:\n{stdout}"
    );
    assert!(
        stdout.contains("core 3 (package 0): CPU 3 (isolated,nohz_full), CPU 19"),
        "{stdout}"
    );
    assert!(
        stdout.contains("NIC 0000:3b:00.1 driver vfio-pci [DPDK-usable]"),
        "{stdout}"
    );

    let json = run(&[
        "hw",
        "show",
        "--json",
        "--root",
        root.to_str().expect("utf-8"),
    ]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(value["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(value["nics"][0]["binding"], "kernel");
}

#[test]
fn check_exits_2_on_errors_and_0_on_warnings() {
    let root = fixture("two-socket");
    let root = root.to_str().expect("utf-8");
    let far = write_config(
        "far",
        "[media]\ncores = [9]\n[[media.ports]]\nname = \"edge\"\nbind = \"198.51.100.1:40000\"\n",
    );
    let out = run(&[
        "hw",
        "check",
        "--config",
        far.to_str().expect("utf-8"),
        "--root",
        root,
    ]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("error[far-numa-node]: media.cores[0]: CPU 9 is on NUMA node 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 error(s)") && stdout.contains("would refuse to start"),
        "{stdout}"
    );

    let local = write_config(
        "local",
        "[media]\ncores = [1]\n[[media.ports]]\nname = \"edge\"\nbind = \"198.51.100.1:40000\"\n",
    );
    let out = run(&[
        "hw",
        "check",
        "--json",
        "--config",
        local.to_str().expect("utf-8"),
        "--root",
        root,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["errors"], 0);
    assert!(value["warnings"].as_u64().is_some_and(|w| w > 0), "{value}");
    assert_eq!(value["findings"][0]["check"], "not-isolated");

    let missing = run(&["hw", "check", "--config", "/nonexistent/popmesh.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).1.contains("/nonexistent/popmesh.toml"));
}

#[test]
fn plan_prints_fragment_cmdline_and_script_or_says_why_not() {
    let root = fixture("two-socket");
    let root = root.to_str().expect("utf-8");
    let out = run(&[
        "hw",
        "plan",
        "--port",
        "ens1f0",
        "--signaling-cores",
        "2",
        "--root",
        root,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for part in [
        "cores = [1, 2, 3, 4, 5, 6, 7]",
        "[signaling]\ncores = [8, 24]",
        "isolcpus=managed_irq,domain,1-7,17-23",
        "echo 0 > /proc/irq/100/smp_affinity_list",
        "- media: CPUs 1-7",
    ] {
        assert!(stdout.contains(part), "missing {part:?} in:\n{stdout}");
    }
    let out = run(&[
        "hw",
        "plan",
        "--port",
        "ens1f0",
        "--port",
        "ens2f0",
        "--signaling-cores",
        "1",
        "--root",
        root,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("one appliance per node"),
        "{}",
        text(&out).1
    );
}

#[test]
fn hw_commands_run_on_this_machine() {
    let show = run(&["hw", "show"]);
    assert!(show.status.success(), "{}", text(&show).1);
    assert!(text(&show).0.starts_with("machine: "), "{}", text(&show).0);
    let lab = repo().join("configs/lab.toml");
    let check = run(&["hw", "check", "--config", lab.to_str().expect("utf-8")]);
    assert_ne!(
        check.status.code(),
        Some(1),
        "check must run here: {}",
        text(&check).1
    );
}

#[test]
fn completions_and_help_are_there_for_operators() {
    let bash = run(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = text(&bash).0;
    assert!(script.contains("popmesh") && script.contains("signaling-cores"));
    for word in [
        "session",
        "canary",
        "identity",
        "appliance",
        "--ctrld",
        "--sticky-header",
    ] {
        assert!(script.contains(word), "bash completions lack {word:?}");
    }
    let top = run(&["--help"]);
    assert!(
        text(&top).0.contains("3 cannot reach popmesh-ctrld"),
        "{}",
        text(&top).0
    );
    let help = run(&["hw", "check", "--help"]);
    let (stdout, _) = text(&help);
    assert!(
        stdout.contains("Exit status: 0 no errors") && stdout.contains("2 errors"),
        "{stdout}"
    );
}

#[test]
fn hw_capture_copies_a_machine_that_reads_back_the_same() {
    for name in ["two-socket", "edge-1s", "vm-2core"] {
        let src = fixture(name);
        let out_dir = temp(&format!("capture-{name}"));
        let status = Command::new("bash")
            .arg(repo().join("tools/hw-capture.sh"))
            .arg(&out_dir)
            .env(
                "HW_CAPTURE_SRC",
                std::fs::canonicalize(&src).expect("fixture"),
            )
            .status()
            .expect("run hw-capture.sh");
        assert!(status.success(), "{name}");
        let original = run(&[
            "hw",
            "show",
            "--json",
            "--root",
            src.to_str().expect("utf-8"),
        ]);
        let copy = run(&[
            "hw",
            "show",
            "--json",
            "--root",
            out_dir.to_str().expect("utf-8"),
        ]);
        assert!(original.status.success() && copy.status.success());
        assert_eq!(
            text(&original).0,
            text(&copy).0,
            "{name}: capture differs from its source"
        );
        std::fs::remove_dir_all(&out_dir).expect("cleanup");
    }
}
