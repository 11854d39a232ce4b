//! The signaling lane of the real `popmesh-dataplane` under the real `popmesh-ctrld`: SVIDs
//! issued by the daemon, the mesh (service, route, policy) set by an operator and pushed to
//! the appliance, the article's access rule end to end.

use std::net::SocketAddr;
use std::sync::Arc;

use popmesh_ctrl_api::pb::{
    identity_service_client::IdentityServiceClient, mesh_service_client::MeshServiceClient,
    policy_service_client::PolicyServiceClient, EndpointGroup, IdentityKind, IssueSvidRequest,
    Policy, PolicyAction, PutPolicyRequest, PutRouteRequest, PutServiceRequest, Route, Service,
};
use popmesh_signal::tls::{Identity, TlsState, TrustBundle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{dataplane_config, until_metric, Ctrld};
use crate::harness::{self, free_tcp, free_udp, metric};

/// An SVID of `spiffe://pop.test/ns/<ns>/sa/<name>` from the daemon, as a TLS state.
async fn svid(ctrld: &Ctrld, ns: &str, name: &str) -> Arc<TlsState> {
    let r = IdentityServiceClient::new(ctrld.op().await)
        .issue_svid(IssueSvidRequest {
            kind: IdentityKind::Service as i32,
            namespace: ns.into(),
            name: name.into(),
            ttl_seconds: 3600,
            csr_pem: String::new(),
        })
        .await
        .expect("IssueSvid")
        .into_inner();
    let id = Identity::from_pem((r.cert_pem + &r.chain_pem).as_bytes(), r.key_pem.as_bytes())
        .expect("daemon SVID");
    TlsState::new(
        id,
        TrustBundle::from_pem("pop.test", ctrld.ca.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A one-request-per-connection HTTP/1.1 service over mTLS that answers with the caller
/// identity the lane passed on.
async fn payment(tls: Arc<TlsState>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(&[]));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let head = read_head(&mut s).await;
                let who = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-popmesh-peer-identity: "))
                    .unwrap_or("")
                    .to_owned();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{who}",
                    who.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// With no `signaling.cores` the lane's threads are not pinned, but they may never run on a
/// media CPU: each one's allowed CPUs (`/proc/PID/task/TID/status`) must leave `media` out,
/// whenever the machine has another CPU to give them.
fn lane_threads_keep_off_the_media_cpu(pid: u32, media: usize) {
    let allowed = |status: &str| -> Vec<usize> {
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default()
            .trim();
        list.split(',')
            .filter(|r| !r.is_empty())
            .flat_map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()
            })
            .collect()
    };
    let own = allowed(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    if own.iter().all(|&c| c == media) {
        eprintln!("skipped: the daemon may use only the media CPU {media}");
        return;
    }
    let mut seen = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !comm.starts_with("signal-") {
            continue;
        }
        let cpus = allowed(&std::fs::read_to_string(dir.join("status")).unwrap());
        assert!(
            !cpus.contains(&media),
            "{comm} may run on media CPU {media}: {cpus:?}"
        );
        seen.push(comm.to_string());
    }
    seen.sort();
    assert_eq!(seen, ["signal-0", "signal-health", "signal-svid"]);
}

async fn read_head<S: AsyncReadExt + Unpin>(s: &mut S) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 16 << 10 {
        match s.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// `GET path` through the lane as `tls`'s identity: status line and body.
async fn call(lane: SocketAddr, tls: &Arc<TlsState>, path: &str) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(lane).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls.client_config(&[]))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: pop\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    let status = out.lines().next().unwrap_or("").to_owned();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok(format!("{status} | {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_takes_svids_and_mesh_from_the_daemon_and_applies_the_access_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctrld = Ctrld::start(dir.path());
    ctrld.issue_appliance(dir.path()).await;
    let pay = payment(svid(&ctrld, "payment", "payment").await).await;

    let admin = free_tcp();
    let inbound = free_tcp();
    let config = dataplane_config(dir.path(), &ctrld, admin, &[("a", free_udp())], 64);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[signaling.listeners]]\nname = \"inbound\"\nbind = \"{inbound}\"\ndirection = \"inbound\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let dp = harness::Daemon::start(&config, admin);
    until_metric(&dp, "popmesh_agent_connected", 1.0);
    lane_threads_keep_off_the_media_cpu(dp.child.id(), super::worker_core());

    // The operator's mesh: payment behind /pay, callable by the user namespace only.
    let op = ctrld.op().await;
    MeshServiceClient::new(op.clone())
        .put_service(PutServiceRequest {
            service: Some(Service {
                name: "payment".into(),
                groups: vec![EndpointGroup {
                    version: "v1".into(),
                    endpoints: vec![pay.to_string()],
                }],
                default_version: "v1".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("PutService");
    MeshServiceClient::new(op.clone())
        .put_route(PutRouteRequest {
            route: Some(Route {
                name: "pay".into(),
                host: "*".into(),
                path_prefix: "/pay".into(),
                service: "payment".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("PutRoute");
    let v = PolicyServiceClient::new(op)
        .put_policy(PutPolicyRequest {
            policy: Some(Policy {
                name: "user-pays".into(),
                sources: vec!["spiffe://pop.test/ns/user/sa/*".into()],
                destination: "payment".into(),
                action: PolicyAction::Allow as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("PutPolicy")
        .into_inner()
        .version;
    ctrld.until_acked(v).await;

    let user = svid(&ctrld, "user", "user").await;
    let danmaku = svid(&ctrld, "danmaku", "danmaku").await;
    let ok = call(inbound, &user, "/pay/order").await.unwrap();
    assert_eq!(ok, "HTTP/1.1 200 OK | spiffe://pop.test/ns/user/sa/user");
    let denied = call(inbound, &danmaku, "/pay/order").await.unwrap();
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");

    // A client without a certificate never gets an answer.
    let no_cert = {
        let mut c = (*user.client_config(&[])).clone();
        c.client_auth_cert_resolver = Arc::new(NoCert);
        Arc::new(c)
    };
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let refused = match tokio_rustls::TlsConnector::from(no_cert)
        .connect(name, tcp)
        .await
    {
        Err(_) => true,
        Ok(mut s) => {
            let _ = s.write_all(b"GET /pay HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut b = [0u8; 16];
            !matches!(s.read(&mut b).await, Ok(n) if n > 0)
        }
    };
    assert!(refused);

    let m = dp.get("/metrics");
    let get = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels);
    assert_eq!(
        get(
            "popmesh_signal_denied_total",
            &[
                ("source", "spiffe://pop.test/ns/danmaku/sa/danmaku"),
                ("destination", "payment")
            ]
        ),
        Some(1.0),
        "{m}"
    );
    // The refusal is counted right after the lane sends its alert: wait for it.
    let started = std::time::Instant::now();
    while metric(
        &dp.get("/metrics"),
        "popmesh_signal_handshake_failures_total",
        &[("reason", "no_certificate")],
    ) != Some(1.0)
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no_certificate refusal not counted: {}",
            dp.get("/metrics")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        get("popmesh_signal_config_version", &[]),
        Some(v as f64),
        "{m}"
    );

    // A renewed appliance SVID written over the files is picked up without a restart, and an
    // open connection stays open through it.
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut open = tokio_rustls::TlsConnector::from(user.client_config(&[]))
        .connect(name, tcp)
        .await
        .unwrap();
    let rotations = |dp: &harness::Daemon| {
        metric(
            &dp.get("/metrics"),
            "popmesh_signal_identity_rotations_total",
            &[],
        )
        .unwrap_or(0.0)
    };
    let before = rotations(&dp);
    ctrld.issue_appliance(dir.path()).await;
    let started = std::time::Instant::now();
    while rotations(&dp) <= before {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "renewed SVID not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    open.write_all(b"GET /pay/after HTTP/1.1\r\nhost: pop\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    open.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let again = call(inbound, &user, "/pay/order").await.unwrap();
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    assert!(dp.terminate().success());
}

#[derive(Debug)]
struct NoCert;

impl rustls::client::ResolvesClientCert for NoCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
    fn has_certs(&self) -> bool {
        false
    }
}
