//! Long-lived streams: WebSockets through 50 config changes and an SVID rotation, gRPC
//! server streaming with trailers, TCP pass-through.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use popmesh_signal::tls::{TlsState, ALPN_H2, ALPN_HTTP11};
use popmesh_signal::{Direction, Protocol};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

async fn ws_connect(
    addr: std::net::SocketAddr,
    tls: &Arc<TlsState>,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.client_config(&[ALPN_HTTP11]))
        .connect(name, tcp)
        .await
        .unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(format!("wss://{addr}/ws/room"), stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_resume_upstream_tls_sessions_and_a_rotation_forgets_them() {
    let pki = Pki::new(TD);
    let (ws_up, handshakes) = ws_upstream_recording(pki.tls("danmaku", "danmaku"), 2).await;
    let mesh = Mesh {
        services: vec![service("chat", &[("v1", &[ws_up])])],
        routes: vec![route("chat", "/ws", "chat")],
        policies: vec![allow("chat", "spiffe://pop.test/ns/user/sa/*", "chat")],
        ..Mesh::default()
    };
    let lane = inbound_lane(&pki, &mesh);
    let user = pki.tls("user", "user");
    // Every WebSocket takes an upstream connection of its own; one at a time, so each finds
    // the tickets of the one before.
    let mut open = Vec::new();
    for k in 0..6 {
        if k == 4 {
            lane.shared()
                .tls
                .set_identity(pki.svid("appliances", "pop-1"))
                .unwrap();
        }
        let mut ws = ws_connect(lane.bound[0], &user).await;
        ws.send(Message::text("hi")).await.unwrap();
        assert!(ws.next().await.unwrap().is_ok());
        open.push(ws);
    }
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(
        *handshakes.lock().unwrap(),
        [Full, Resumed, Resumed, Resumed, Full, Resumed],
        "the first upstream handshake is full, the next resume; a new SVID starts over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_websockets_survive_50_config_changes_and_an_svid_rotation() {
    let pki = Pki::new(TD);
    let ws_up = ws_upstream(pki.tls("danmaku", "danmaku")).await;
    let http_up = http_upstream(pki.tls("danmaku", "danmaku"), "v1", Arc::default()).await;
    let mut mesh = Mesh {
        services: vec![
            service("chat", &[("v1", &[ws_up])]),
            service("api", &[("v1", &[http_up])]),
        ],
        routes: vec![route("chat", "/ws", "chat"), route("api", "/api", "api")],
        policies: vec![
            allow("chat", "spiffe://pop.test/ns/user/sa/*", "chat"),
            allow("api", "spiffe://pop.test/ns/user/sa/*", "api"),
        ],
        ..Mesh::default()
    };
    let lane = inbound_lane(&pki, &mesh);
    let addr = lane.bound[0];
    let user = pki.tls("user", "user");

    const N: usize = 1000;
    let mut sockets = Vec::with_capacity(N);
    for _ in 0..N / 50 {
        sockets
            .extend(futures_util::future::join_all((0..50).map(|_| ws_connect(addr, &user))).await);
    }
    // The lane counts a stream once both sides finished upgrading, just after the client saw
    // its 101: wait for the last ones.
    let started = std::time::Instant::now();
    loop {
        let m = metrics_text(&lane);
        let open = sample(&m, &["popmesh_signal_streams", "listener=\"inbound\""]);
        if open == Some(N as f64) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{open:?} streams: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 50 changes: routes, policies, endpoint list, timeouts; then a new SVID for the lane.
    let table = lane.table();
    let mut prev = table;
    for v in 0..50u64 {
        mesh.services[1].timeout_ms = 1000 + v as u32;
        mesh.routes[1].path_prefix = format!("/api{}", v % 3);
        mesh.policies[1].name = format!("api-{v}");
        let t = mesh.compile(2 + v, Some(&prev));
        lane.set_table(t);
        prev = lane.table();
        // Every socket still echoes after each tenth change.
        if v % 10 == 9 {
            for (i, ws) in sockets.iter_mut().enumerate().step_by(97) {
                let msg = format!("hello {v} {i}");
                ws.send(Message::text(msg.clone())).await.unwrap();
                let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .expect("echo")
                    .expect("open")
                    .expect("no error");
                assert_eq!(echo.into_text().unwrap().as_str(), msg);
            }
        }
    }
    let rotated = pki.svid("appliances", "pop-1");
    lane.shared().tls.set_identity(rotated).unwrap();

    // Zero disconnects: every one of the 1,000 answers.
    for (i, ws) in sockets.iter_mut().enumerate() {
        let msg = format!("after rotation {i}");
        ws.send(Message::text(msg.clone())).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap_or_else(|_| panic!("socket {i} did not answer"))
            .unwrap_or_else(|| panic!("socket {i} was closed"))
            .unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), msg);
    }
    // New sockets and requests follow the new config and handshake with the new SVID.
    let mut fresh = ws_connect(addr, &user).await;
    fresh.send(Message::text("new")).await.unwrap();
    assert_eq!(
        fresh
            .next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "new"
    );
    let c = client(&user, false);
    assert_eq!(get(&c, addr, "/api1/x", &[]).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pass_through_is_authorized_by_identity() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new(TD);
    // A TLS echo server as the upstream.
    let up_tls = pki.tls("rtmp", "rtmp");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(up_tls.server_config(&[]));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    let mesh = Mesh {
        services: vec![service("ingest", &[("v1", &[up])])],
        policies: vec![allow("ingest", "spiffe://pop.test/ns/user/sa/*", "ingest")],
        ..Mesh::default()
    };
    let mut l = listener("tcp", Direction::Inbound, Protocol::Tcp);
    l.service = Some("ingest".into());
    let lane = lane(pki.tls("appliances", "pop-1"), &mesh, vec![l]);
    let addr = lane.bound[0];

    let connect = |tls: Arc<TlsState>| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(tls.client_config(&[]))
            .connect(name, tcp)
            .await
            .unwrap()
    };
    let mut s = connect(pki.tls("user", "user")).await;
    s.write_all(b"\x03rtmp-ish bytes").await.unwrap();
    let mut buf = [0u8; 15];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\x03rtmp-ish bytes");

    let mut s = connect(pki.tls("danmaku", "danmaku")).await;
    let _ = s.write_all(b"hello").await;
    let mut buf = [0u8; 5];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "a caller without a policy is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_server_streaming_keeps_messages_and_trailers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let pki = Pki::new(TD);
    // tonic's health service as the upstream, over mTLS with HTTP/2.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("room", tonic_health::ServingStatus::Serving)
        .await;
    let up_tls = pki.tls("room", "room");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(up_tls.server_config(&[ALPN_H2]));
    let routes = tonic::service::Routes::new(health);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let routes = routes.clone();
            tokio::spawn(async move {
                if let Ok(s) = acceptor.accept(tcp).await {
                    let svc = hyper_util::service::TowerToHyperService::new(routes);
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                }
            });
        }
    });
    let mesh = Mesh {
        services: vec![service("health", &[("v1", &[up])])],
        routes: vec![route("grpc", "/grpc.health.v1.Health/", "health")],
        policies: vec![allow("h", "spiffe://pop.test/ns/user/sa/*", "health")],
        ..Mesh::default()
    };
    let lane = inbound_lane(&pki, &mesh);
    let addr = lane.bound[0];
    let user = pki.tls("user", "user");
    let channel = tonic::transport::Endpoint::from_static("http://lane")
        .connect_with_connector(tower_service_fn(move |_| {
            let user = user.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let s = tokio_rustls::TlsConnector::from(user.client_config(&[ALPN_H2]))
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    // Unary with a status in the trailers.
    let err = client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // Server streaming: each status change arrives through the lane.
    let mut stream = client
        .watch(HealthCheckRequest {
            service: "room".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    reporter
        .set_service_status("room", tonic_health::ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.status(), ServingStatus::NotServing);
    // A caller without a policy gets PERMISSION_DENIED, not a transport error.
    let danmaku = pki.tls("danmaku", "danmaku");
    let channel = tonic::transport::Endpoint::from_static("http://lane")
        .connect_with_connector(tower_service_fn(move |_| {
            let danmaku = danmaku.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let s = tokio_rustls::TlsConnector::from(danmaku.client_config(&[ALPN_H2]))
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap();
    let err = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "room".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

/// A `tower::Service<Uri>` from a closure (tonic's custom connector).
fn tower_service_fn<F, Fut>(f: F) -> ServiceFn<F>
where
    F: FnMut(http::Uri) -> Fut,
{
    ServiceFn(f)
}

#[derive(Clone)]
struct ServiceFn<F>(F);

impl<F, Fut, T> tower_service::Service<http::Uri> for ServiceFn<F>
where
    F: FnMut(http::Uri) -> Fut,
    Fut: std::future::Future<Output = Result<T, std::io::Error>>,
{
    type Response = T;
    type Error = std::io::Error;
    type Future = Fut;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Fut {
        (self.0)(uri)
    }
}
