//! The one shared helper: run the built binaries, learn the addresses they
//! bound, wait for them with a time limit, read their JSON.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const RTP: &str = env!("CARGO_BIN_EXE_popmesh-rtp");
pub const RELAY: &str = env!("CARGO_BIN_EXE_popmesh-plain-relay");
pub const IMPAIR: &str = env!("CARGO_BIN_EXE_popmesh-impair");

/// A file in cargo's per-test scratch directory, unique per test name.
pub fn scratch(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A spawned binary that printed `listening ADDR` for each socket it bound.
pub struct Listening {
    pub child: Child,
    pub addrs: Vec<SocketAddr>,
}

/// Spawns `bin args` and reads its stdout until `sockets` addresses were
/// announced; the rest of its stdout is discarded.
pub fn spawn_listening(bin: &str, args: &[&str], sockets: usize) -> Listening {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = Vec::new();
    while addrs.len() < sockets {
        let line = match lines.next() {
            Some(Ok(line)) => line,
            other => panic!("{bin} {args:?} ended before announcing its sockets: {other:?}"),
        };
        if let Some(addr) = line.strip_prefix("listening ") {
            addrs.push(
                addr.parse()
                    .unwrap_or_else(|e| panic!("bad address in `{line}`: {e}")),
            );
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Listening { child, addrs }
}

/// Waits for `child` at most `limit`; kills it and panics past that.
pub fn wait(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not stop by itself within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses a JSON summary a binary wrote.
pub fn read_json(path: &PathBuf) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}\n{text}", path.display()))
}
