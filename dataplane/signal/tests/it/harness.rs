//! Real servers, clients and PKI for the lane's tests: SVIDs from popmesh-ctrld's CA, hyper
//! HTTP/1.1 and HTTP/2 upstreams with mutual TLS, WebSocket upstreams, and clients that present
//! an SVID.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use popmesh_ctrl_api::pb;
use popmesh_ctrl_api::SpiffeId;
use popmesh_ctrld::ca::Ca;
use popmesh_signal::tls::{Identity, TlsState, TrustBundle, ALPN_H2, ALPN_HTTP11};
use popmesh_signal::{Direction, Lane, LaneSpec, ListenerSpec, MeshTable, Metrics, Protocol};
use tokio::net::TcpListener;

pub const TD: &str = "pop.test";

/// A CA of trust domain `td`, as popmesh-ctrld runs it.
pub struct Pki {
    pub ca: Ca,
    pub roots_pem: String,
    pub td: String,
}

impl Pki {
    pub fn new(td: &str) -> Pki {
        let record = Ca::generate_root(td, SystemTime::now()).unwrap();
        let roots_pem = record.roots_pem.clone();
        Pki {
            ca: Ca::load(record).unwrap(),
            roots_pem,
            td: td.into(),
        }
    }

    /// An SVID of `spiffe://<td>/ns/<ns>/sa/<name>`, valid `ttl` from `now`.
    pub fn svid_at(&self, ns: &str, name: &str, now: SystemTime, ttl: Duration) -> Identity {
        let id = SpiffeId::new(&self.td, ns, name).unwrap();
        let issued = self.ca.issue(&id, ttl, None, now).unwrap();
        let chain = format!("{}{}", issued.cert_pem, issued.chain_pem);
        Identity::from_pem(chain.as_bytes(), issued.key_pem.unwrap().as_bytes()).unwrap()
    }

    pub fn svid(&self, ns: &str, name: &str) -> Identity {
        self.svid_at(ns, name, SystemTime::now(), Duration::from_secs(3600))
    }

    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::from_pem(&self.td, self.roots_pem.as_bytes()).unwrap()
    }

    pub fn tls(&self, ns: &str, name: &str) -> Arc<TlsState> {
        TlsState::new(self.svid(ns, name), self.bundle()).unwrap()
    }
}

/// How a test upstream answers.
#[derive(Default)]
pub struct Behavior {
    /// Answer 500.
    pub fail: AtomicBool,
    /// Wait this long before answering, ms.
    pub delay_ms: AtomicU64,
    /// Requests seen (health checks not counted).
    pub hits: AtomicU64,
    /// `GET /healthz` answers 503.
    pub unhealthy: AtomicBool,
    /// Health checks seen (`/healthz`).
    pub health_hits: AtomicU64,
}

/// An HTTP/1.1 + HTTP/2 upstream with mTLS (it requires an SVID of the trust domain: the
/// lane's). `/healthz` answers 200 or 503 (`Behavior::unhealthy`); everything else answers `<name>` with headers `x-upstream`, `x-seen-identity`,
/// `x-seen-traceparent`, `x-seen-version`.
pub async fn http_upstream(
    tls: Arc<TlsState>,
    name: &'static str,
    behavior: Arc<Behavior>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(&[ALPN_H2, ALPN_HTTP11]));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let behavior = behavior.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let behavior = behavior.clone();
                    async move {
                        if req.uri().path() == "/healthz" {
                            behavior.health_hits.fetch_add(1, Ordering::Relaxed);
                            let sick = behavior.unhealthy.load(Ordering::Relaxed);
                            let resp = Response::builder()
                                .status(if sick { 503 } else { 200 })
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            return Ok::<_, Infallible>(resp);
                        }
                        behavior.hits.fetch_add(1, Ordering::Relaxed);
                        let delay = behavior.delay_ms.load(Ordering::Relaxed);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .map(|v| v.to_str().unwrap_or("").to_owned())
                                .unwrap_or_default()
                        };
                        let status = if behavior.fail.load(Ordering::Relaxed) {
                            500
                        } else {
                            200
                        };
                        let version = format!("{:?}", req.version());
                        let resp = Response::builder()
                            .status(status)
                            .header("x-upstream", name)
                            .header("x-seen-identity", h("x-popmesh-peer-identity"))
                            .header("x-seen-traceparent", h("traceparent"))
                            .header("x-seen-version", version)
                            .body(Full::new(Bytes::from(name)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A WebSocket echo upstream with mTLS.
pub async fn ws_upstream(tls: Arc<TlsState>) -> SocketAddr {
    ws_upstream_recording(tls, 0).await.0
}

/// Handshake kinds an upstream saw, in accept order.
pub type Handshakes = Arc<std::sync::Mutex<Vec<rustls::HandshakeKind>>>;

/// A WebSocket echo upstream with mTLS that sends `tickets` TLS 1.3 session tickets after
/// each full handshake, and records whether each handshake was full or resumed.
pub async fn ws_upstream_recording(tls: Arc<TlsState>, tickets: usize) -> (SocketAddr, Handshakes) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = (*tls.server_config(&[ALPN_HTTP11])).clone();
    config.send_tls13_tickets = tickets;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let seen = Handshakes::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(kind) = tls.get_ref().1.handshake_kind() {
                    record.lock().unwrap().push(kind);
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

pub type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// An HTTP client that presents `tls`'s SVID; HTTP/2 only when `h2`.
pub fn client(tls: &Arc<TlsState>, h2: bool) -> HttpClient {
    let cfg = (*tls.client_config(&[])).clone();
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only();
    let conn = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(conn)
}

/// GET `path` on `addr` with extra headers; status, headers and body.
pub async fn get(
    c: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::HeaderMap, String), String> {
    let mut b = Request::get(format!("https://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

pub fn service(name: &str, groups: &[(&str, &[SocketAddr])]) -> pb::Service {
    pb::Service {
        name: name.into(),
        groups: groups
            .iter()
            .map(|(v, eps)| pb::EndpointGroup {
                version: (*v).into(),
                endpoints: eps.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        default_version: groups[0].0.into(),
        ..Default::default()
    }
}

pub fn route(name: &str, prefix: &str, service: &str) -> pb::Route {
    pb::Route {
        name: name.into(),
        host: "*".into(),
        path_prefix: prefix.into(),
        service: service.into(),
        ..Default::default()
    }
}

pub fn allow(name: &str, source: &str, destination: &str) -> pb::Policy {
    pb::Policy {
        name: name.into(),
        sources: vec![source.into()],
        destination: destination.into(),
        action: pb::PolicyAction::Allow as i32,
        ..Default::default()
    }
}

/// The mesh a test runs with.
#[derive(Default, Clone)]
pub struct Mesh {
    pub services: Vec<pb::Service>,
    pub routes: Vec<pb::Route>,
    pub canaries: Vec<pb::Canary>,
    pub policies: Vec<pb::Policy>,
}

impl Mesh {
    pub fn compile(&self, version: u64, prev: Option<&MeshTable>) -> MeshTable {
        MeshTable::compile(
            version,
            &self.services,
            &self.routes,
            &self.canaries,
            &self.policies,
            prev,
        )
        .unwrap_or_else(|e| panic!("mesh does not compile: {e:?}"))
    }
}

pub fn listener(name: &str, direction: Direction, protocol: Protocol) -> ListenerSpec {
    ListenerSpec {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        direction,
        protocol,
        service: None,
        identity: None,
        idle_timeout: Duration::from_secs(3600),
        max_connections: 100_000,
    }
}

/// A lane on one unpinned core with `listeners`.
pub fn lane(tls: Arc<TlsState>, mesh: &Mesh, listeners: Vec<ListenerSpec>) -> Lane {
    let spec = LaneSpec {
        cores: vec![],
        avoid_cores: vec![],
        listeners,
        drain_timeout: Duration::from_secs(1),
        access_log: false,
        identity_header: http::HeaderName::from_static("x-popmesh-peer-identity"),
        max_retry_body: 64 << 10,
        upstream_resumption: Duration::from_secs(600),
    };
    Lane::start(spec, tls, mesh.compile(1, None), Metrics::default()).unwrap()
}

/// The lane's metrics as Prometheus text.
pub fn metrics_text(lane: &Lane) -> String {
    let mut reg = prometheus_client::registry::Registry::default();
    lane.shared().metrics.register(&mut reg);
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
    s
}

/// The value of the sample whose line contains every one of `parts`.
pub fn sample(text: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A lane with the appliance SVID `pop-1` and one inbound HTTP listener, serving `mesh`.
pub fn inbound_lane(pki: &Pki, mesh: &Mesh) -> Lane {
    lane(
        pki.tls("appliances", "pop-1"),
        mesh,
        vec![listener("inbound", Direction::Inbound, Protocol::Http)],
    )
}

/// [`inbound_lane`] for the one service `svc` (named "room"), routed at "/", which users
/// (`spiffe://pop.test/ns/user/sa/*`) may call.
pub fn room_lane(pki: &Pki, svc: pb::Service) -> Lane {
    let mesh = Mesh {
        services: vec![svc],
        routes: vec![route("room", "/", "room")],
        policies: vec![allow("u", "spiffe://pop.test/ns/user/sa/*", "room")],
        ..Mesh::default()
    };
    inbound_lane(pki, &mesh)
}
