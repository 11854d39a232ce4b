//! Starting the daemon, talking to its admin server, building RTP.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_popmesh-dataplane");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running daemon, killed on drop if the test did not stop it.
pub struct Daemon {
    pub child: Child,
    pub admin: SocketAddr,
    /// Network namespace the daemon (and so its admin server) runs in.
    pub netns: Option<String>,
}

impl Daemon {
    pub fn start(config: &Path, admin: SocketAddr) -> Daemon {
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn popmesh-dataplane");
        let mut d = Daemon {
            child,
            admin,
            netns: None,
        };
        d.wait_ready(Duration::from_secs(20));
        d
    }

    /// Starts the daemon inside network namespace `netns` (`ip netns exec` execs it, so the
    /// child's pid is the daemon's).
    #[cfg_attr(not(popmesh_dpdk), allow(dead_code))]
    pub fn start_in(netns: &str, config: &Path, admin: SocketAddr) -> Daemon {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, BIN, "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn popmesh-dataplane in a namespace");
        let mut d = Daemon {
            child,
            admin,
            netns: Some(netns.to_string()),
        };
        d.wait_ready(Duration::from_secs(30));
        d
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("popmesh-dataplane exited during start-up: {status}");
            }
            if let Ok((200, _)) = self.try_get("/readyz") {
                return;
            }
            assert!(Instant::now() < deadline, "daemon not ready in {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn try_get(&self, path: &str) -> Result<(u16, String), String> {
        let url = format!("http://{}{}", self.admin, path);
        match &self.netns {
            Some(ns) => crate::netns::in_netns(ns, move || http_get(&url)),
            None => http_get(&url),
        }
    }

    pub fn get(&self, path: &str) -> String {
        let (code, body) = self.try_get(path).expect("admin request");
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(url: &str) -> Result<(u16, String), String> {
    match ureq::get(url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => {
            let code = r.status();
            Ok((code, r.into_string().map_err(|e| e.to_string())?))
        }
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

/// A free loopback TCP port for an admin server.
pub fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A free loopback UDP port.
pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
}

/// Writes `text` to a temp file and returns its path.
pub fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("popmesh-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create config");
    f.write_all(text.as_bytes()).expect("write config");
    p
}

/// An RTP v2 packet: PT 96, `seq`, timestamp seq*3000, `ssrc`, payload carrying `seq` and filler.
pub fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload_len);
    p.extend_from_slice(&[0x80, 96]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..payload_len {
        p.push((usize::from(seq) + i) as u8);
    }
    p
}

/// The value of the metric line that starts with `prefix` (name plus labels).
pub fn metric(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

/// Sum of every series of `name` matching `labels`.
pub fn metric_sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// Receives datagrams on `sock` until `n` arrived or `quiet` passes with nothing.
pub fn collect(sock: &UdpSocket, n: usize, quiet: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(quiet)).expect("timeout");
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 65536];
    while out.len() < n {
        match sock.recv(&mut buf) {
            Ok(len) => out.push(buf[..len].to_vec()),
            Err(_) => break,
        }
    }
    out
}

/// Binds a receiver with room in its socket buffer for a whole test stream, so a receiving
/// thread descheduled for a few milliseconds on a busy 2-core machine loses nothing to a full
/// buffer. Root may exceed `net.core.rmem_max` (`SO_RCVBUFFORCE`); anyone else gets the most
/// `SO_RCVBUF` allows.
pub fn roomy_udp(addr: impl std::net::ToSocketAddrs) -> UdpSocket {
    use nix::sys::socket::{setsockopt, sockopt};
    let sock = UdpSocket::bind(addr).expect("bind receiver (is the port free?)");
    const ROOM: usize = 16 << 20;
    if setsockopt(&sock, sockopt::RcvBufForce, &ROOM).is_err() {
        setsockopt(&sock, sockopt::RcvBuf, &ROOM).expect("SO_RCVBUF");
    }
    sock
}
