//! Identity: the article's access rule, refused handshakes, identity passed on, rotation.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use popmesh_signal::tls::TlsState;

use crate::harness::*;

struct Setup {
    pki: Pki,
    lane: popmesh_signal::Lane,
    addr: std::net::SocketAddr,
}

/// user may call payment; danmaku may call only itself.
async fn setup() -> Setup {
    let pki = Pki::new(TD);
    let payment_tls = pki.tls("payment", "payment");
    let pay = http_upstream(payment_tls, "payment-v1", Arc::default()).await;
    let mesh = Mesh {
        services: vec![service("payment", &[("v1", &[pay])])],
        routes: vec![route("payment", "/pay", "payment")],
        policies: vec![allow(
            "user-pays",
            "spiffe://pop.test/ns/user/sa/*",
            "payment",
        )],
        ..Mesh::default()
    };
    let lane = inbound_lane(&pki, &mesh);
    let addr = lane.bound[0];
    Setup { pki, lane, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_may_pay_danmaku_is_refused_and_both_show_in_metrics() {
    let s = setup().await;
    let user = client(&s.pki.tls("user", "user"), false);
    let (status, h, body) = get(&user, s.addr, "/pay/order/1", &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "payment-v1");
    assert_eq!(
        h["x-seen-identity"], "spiffe://pop.test/ns/user/sa/user",
        "the service learns who called"
    );

    let danmaku = client(&s.pki.tls("danmaku", "danmaku"), false);
    let (status, h, body) = get(&danmaku, s.addr, "/pay/order/1", &[]).await.unwrap();
    assert_eq!(status, 403);
    assert!(
        body.contains("no policy allows spiffe://pop.test/ns/danmaku/sa/danmaku"),
        "{body}"
    );
    assert!(h.contains_key("x-popmesh-reason"));

    let m = metrics_text(&s.lane);
    assert_eq!(
        sample(
            &m,
            &[
                "popmesh_signal_denied_total",
                "source=\"spiffe://pop.test/ns/danmaku/sa/danmaku\"",
                "destination=\"payment\""
            ]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &[
                "popmesh_signal_requests_total",
                "source=\"spiffe://pop.test/ns/user/sa/user\"",
                "class=\"2xx\""
            ]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_identity_header_is_replaced() {
    let s = setup().await;
    let user = client(&s.pki.tls("user", "user"), true);
    let (status, h, _) = get(
        &user,
        s.addr,
        "/pay",
        &[(
            "x-popmesh-peer-identity",
            "spiffe://pop.test/ns/admin/sa/root",
        )],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(h["x-seen-identity"], "spiffe://pop.test/ns/user/sa/user");
    assert_eq!(h["x-seen-version"], "HTTP/2.0", "HTTP/2 end to end");
}

/// A raw TLS client so the handshake result itself is visible.
async fn handshake(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3: the server's verdict on the client certificate arrives after the client's
    // handshake completes; a request shows it.
    tls.write_all(b"GET /pay HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tls.read(&mut buf).await {
        Ok(0) => Err("closed".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_svid_never_complete_a_handshake() {
    let s = setup().await;
    let user = s.pki.tls("user", "user");

    // No certificate at all.
    let no_cert = {
        let verifier_source = user.client_config(&[]);
        let mut c = (*verifier_source).clone();
        c.client_auth_cert_resolver = Arc::new(NoCert);
        Arc::new(c)
    };
    let e = handshake(s.addr, no_cert).await.unwrap_err();
    assert!(
        e.contains("CertificateRequired") || e.contains("certificate"),
        "{e}"
    );

    // Expired.
    let past = SystemTime::now() - Duration::from_secs(7200);
    let expired = s
        .pki
        .svid_at("user", "user", past, Duration::from_secs(600));
    let expired = TlsState::new(expired, s.pki.bundle()).unwrap();
    assert!(handshake(s.addr, expired.client_config(&[])).await.is_err());

    // Another trust domain (its own CA). The client trusts the lane, so only the lane can
    // refuse: it presents its evil.test SVID through the user's config.
    let other = Pki::new("evil.test");
    let other_tls = other.tls("user", "user");
    let evil = {
        let mut c = (*user.client_config(&[])).clone();
        c.client_auth_cert_resolver = other_tls
            .client_config(&[])
            .client_auth_cert_resolver
            .clone();
        Arc::new(c)
    };
    assert!(handshake(s.addr, evil).await.is_err());

    // The good one completes.
    handshake(s.addr, user.client_config(&[])).await.unwrap();

    // Each refusal is counted by the lane's connection task right after it sends its alert.
    let started = std::time::Instant::now();
    let reasons = ["no_certificate", "expired", "unknown_issuer"];
    loop {
        let m = metrics_text(&s.lane);
        let counts: Vec<_> = reasons
            .iter()
            .map(|r| {
                sample(
                    &m,
                    &[
                        "popmesh_signal_handshake_failures_total",
                        &format!("reason=\"{r}\""),
                    ],
                )
            })
            .collect();
        if counts.iter().all(|c| *c == Some(1.0)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{reasons:?} counted {counts:?}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_svid_is_served_to_new_handshakes_and_old_connections_stay() {
    let s = setup().await;
    let user = client(&s.pki.tls("user", "user"), false);
    assert_eq!(get(&user, s.addr, "/pay", &[]).await.unwrap().0, 200);
    let before = s.lane.shared().tls.identity().not_after_unix();
    // A new SVID for the same identity, valid longer.
    let new = s.pki.svid_at(
        "appliances",
        "pop-1",
        SystemTime::now(),
        Duration::from_secs(7200),
    );
    s.lane.shared().tls.set_identity(new).unwrap();
    assert!(s.lane.shared().tls.identity().not_after_unix() > before);
    // The pooled connection keeps working, and a fresh client handshakes with the new SVID.
    assert_eq!(get(&user, s.addr, "/pay", &[]).await.unwrap().0, 200);
    let fresh = client(&s.pki.tls("user", "user"), false);
    assert_eq!(get(&fresh, s.addr, "/pay", &[]).await.unwrap().0, 200);
}

/// One in-memory handshake of `client` with `server`, including the tickets the server sends
/// after it; how the client's side of it went.
fn memory_handshake(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
) -> rustls::HandshakeKind {
    let name = rustls_pki_types::ServerName::try_from("payment.internal").unwrap();
    let mut c = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
    /// Moves what `from` has to send into `to`; whether there was anything.
    fn pump<A, B>(
        from: &mut rustls::ConnectionCommon<A>,
        to: &mut rustls::ConnectionCommon<B>,
    ) -> bool {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets().unwrap();
        }
        !buf.is_empty()
    }
    for _ in 0..16 {
        let moved = pump(&mut c, &mut s) | pump(&mut s, &mut c);
        if !moved && !c.is_handshaking() && !s.is_handshaking() {
            // Resumed or not, the client knows whom it talks to.
            assert!(c.peer_certificates().is_some_and(|p| !p.is_empty()));
            return c.handshake_kind().unwrap();
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn upstream_sessions_resume_until_a_rotation_or_their_age_limit() {
    use rustls::HandshakeKind::{Full, Resumed};
    let pki = Pki::new("pop.test");
    let lane = pki.tls("mesh", "lane");
    let payment = pki.tls("pay", "payment");
    let mut server = (*payment.server_config(&[])).clone();
    server.send_tls13_tickets = 2;
    let server = Arc::new(server);

    let client = lane.resuming_client_config(&[], Duration::from_secs(600));
    let kinds: Vec<_> = (0..4).map(|_| memory_handshake(&client, &server)).collect();
    assert_eq!(kinds, [Full, Resumed, Resumed, Resumed]);

    // A new trust bundle (even with the same roots) or a renewed SVID forgets every session:
    // the next handshake verifies the server again.
    lane.set_trust_bundle(pki.bundle()).unwrap();
    assert_eq!(memory_handshake(&client, &server), Full);
    assert_eq!(memory_handshake(&client, &server), Resumed);
    lane.set_identity(pki.svid("mesh", "lane")).unwrap();
    assert_eq!(memory_handshake(&client, &server), Full);
    assert_eq!(memory_handshake(&client, &server), Resumed);

    // Sessions older than the limit are not offered.
    let short = lane.resuming_client_config(&[], Duration::from_millis(1));
    assert_eq!(memory_handshake(&short, &server), Full);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(memory_handshake(&short, &server), Full);

    // Zero disables resumption; so does a server that sends no tickets.
    let never = lane.resuming_client_config(&[], Duration::ZERO);
    assert_eq!(memory_handshake(&never, &server), Full);
    assert_eq!(memory_handshake(&never, &server), Full);
    let no_tickets = payment.server_config(&[]);
    assert_eq!(memory_handshake(&client, &no_tickets), Full);
    assert_eq!(memory_handshake(&client, &no_tickets), Full);
}
