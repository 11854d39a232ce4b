//! A real `popmesh-ctrld` (bootstrap, serve on 127.0.0.1 port 0) for the control-command
//! tests, and a runner of the real `popmesh` binary pointed at it with the bootstrap operator.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const TD: &str = "pop.test";
const POPMESH: &str = env!("CARGO_BIN_EXE_popmesh");

/// `target/<profile>/popmesh-ctrld`, next to this test binary's `deps/` directory. Cargo gives
/// `CARGO_BIN_EXE_*` only for the package's own binaries, so the daemon must be built first.
fn ctrld_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join("popmesh-ctrld");
    assert!(
        bin.exists(),
        "{} not found: build the daemon first with `cargo build -p popmesh-ctrld` (same \
         profile as the tests{})",
        bin.display(),
        if profile_dir.ends_with("release") {
            ", --release"
        } else {
            ""
        }
    );
    bin
}

/// One command's result.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn of(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and gives stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts the exit status and that stderr contains `needle`.
    #[track_caller]
    pub fn fails(&self, code: i32, needle: &str) {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// A running daemon in a temporary state directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Child,
    pub grpc: String,
}

impl Daemon {
    pub fn start() -> Daemon {
        let bin = ctrld_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(&bin)
            .args([
                "bootstrap",
                "--trust-domain",
                TD,
                "--operator",
                "alice",
                "--state-dir",
            ])
            .arg(dir.path().join("state"))
            .output()
            .expect("run popmesh-ctrld bootstrap");
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new(&bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run popmesh-ctrld serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("popmesh-ctrld did not print its listening line");
        let grpc = line
            .strip_prefix("listening grpc=")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_string();
        Daemon { dir, child, grpc }
    }

    /// Where bootstrap put the operator's files.
    pub fn operator_dir(&self) -> PathBuf {
        self.dir.path().join("state/operator")
    }

    /// `popmesh ARGS` as the bootstrap operator (through the environment, as an operator would
    /// set it up).
    pub fn popmesh(&self, args: &[&str]) -> Run {
        let op = self.operator_dir();
        self.popmesh_as(&op.join("alice.pem"), &op.join("alice-key.pem"), args)
    }

    /// `popmesh ARGS` with another identity (`--cert`, `--key` flags over the environment).
    pub fn popmesh_as(&self, cert: &Path, key: &Path, args: &[&str]) -> Run {
        let op = self.operator_dir();
        let out = Command::new(POPMESH)
            .args(args)
            .env("POPMESH_CTRLD", &self.grpc)
            .env("POPMESH_CA", op.join("ca.pem"))
            .env("POPMESH_CERT", op.join("alice.pem"))
            .env("POPMESH_KEY", op.join("alice-key.pem"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .expect("run popmesh");
        Run::of(out)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
