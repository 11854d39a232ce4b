//! Runs the real `popmesh-ctrld` binary (bootstrap, serve) in a temporary state directory and
//! connects to it with real mutual TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use popmesh_ctrl_api::pb::{
    appliance_service_client::ApplianceServiceClient, canary_service_client::CanaryServiceClient,
    identity_service_client::IdentityServiceClient, mesh_service_client::MeshServiceClient,
    session_service_client::SessionServiceClient, Endpoint, IdentityKind, IssueSvidRequest, Labels,
    Session, Subscriber,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const TD: &str = "pop.test";
const BIN: &str = env!("CARGO_BIN_EXE_popmesh-ctrld");
const MAX_MSG: usize = 256 << 20;

/// A certificate and key (PEM).
#[derive(Clone, Debug)]
pub struct Creds {
    pub cert: String,
    pub key: String,
}

/// A running daemon.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub ca: String,
    pub operator: Creds,
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

impl Daemon {
    /// Bootstraps a fresh state directory and starts `serve`.
    pub fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
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
            .unwrap();
        assert!(
            out.status.success(),
            "bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let op = dir.path().join("state/operator");
        let ca = read(&op.join("ca.pem"));
        let operator = Creds {
            cert: read(&op.join("alice.pem")),
            key: read(&op.join("alice-key.pem")),
        };
        let mut d = Daemon {
            dir,
            child: None,
            grpc: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            ca,
            operator,
        };
        d.spawn();
        d
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn spawn(&mut self) {
        // A fresh port each start: a restarted daemon is found by its new listening line.
        let listen = "127.0.0.1:0";
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                listen,
                "--metrics-listen",
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(self.state_dir())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[ctrld] {line}");
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("popmesh-ctrld did not print its listening line");
        let rest = line.strip_prefix("listening grpc=").expect(&line);
        let (grpc, metrics) = rest.split_once(" metrics=").unwrap();
        self.grpc = grpc.parse().unwrap();
        self.metrics = metrics.parse().unwrap();
        self.child = Some(child);
    }

    /// `kill -9`, then wait for the process to be gone.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("not running");
        let status = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert!(!exit.success(), "killed daemon exited cleanly?");
    }

    /// Resident memory of the daemon process, KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("not running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// SIGTERM; the exit status, waiting at most `timeout`.
    pub fn sigterm(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("not running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    pub async fn channel(&self, creds: Option<&Creds>) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name("localhost");
        if let Some(c) = creds {
            tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
        }
        Channel::from_shared(format!("https://localhost:{}", self.grpc.port()))
            .unwrap()
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    pub async fn op_channel(&self) -> Channel {
        self.channel(Some(&self.operator))
            .await
            .expect("operator connect")
    }

    pub async fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.op_channel().await)
            .max_decoding_message_size(MAX_MSG)
            .max_encoding_message_size(MAX_MSG)
    }

    pub async fn mesh(&self) -> MeshServiceClient<Channel> {
        MeshServiceClient::new(self.op_channel().await)
    }

    pub async fn canary(&self) -> CanaryServiceClient<Channel> {
        CanaryServiceClient::new(self.op_channel().await)
    }

    pub async fn appliances(&self) -> ApplianceServiceClient<Channel> {
        ApplianceServiceClient::new(self.op_channel().await)
    }

    /// Issues an identity through the API (as the operator).
    pub async fn issue(&self, kind: IdentityKind, namespace: &str, name: &str) -> Creds {
        let r = IdentityServiceClient::new(self.op_channel().await)
            .issue_svid(IssueSvidRequest {
                kind: kind as i32,
                namespace: namespace.into(),
                name: name.into(),
                ttl_seconds: 3600,
                csr_pem: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        Creds {
            cert: r.cert_pem + &r.chain_pem,
            key: r.key_pem,
        }
    }

    /// GET /metrics.
    pub fn scrape(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn ep(address: &str, port: u32) -> Option<Endpoint> {
    Some(Endpoint {
        address: address.into(),
        port,
    })
}

/// A valid session on appliance `pop-1` with `n` subscribers.
pub fn session(name: &str, ingress_port: u32, n: usize) -> Session {
    Session {
        name: name.into(),
        appliance: "pop-1".into(),
        ingress: ep("10.0.0.1", ingress_port),
        source: None,
        clock_rate: 0,
        subscribers: (0..n)
            .map(|i| Subscriber {
                endpoint: ep(&format!("10.1.{}.{}", i / 250, i % 250 + 1), 41000),
                egress_port: String::new(),
            })
            .collect(),
        labels: Some(Labels {
            room: "room-1".into(),
            ..Default::default()
        }),
        version: 0,
    }
}
