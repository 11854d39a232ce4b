//! One signaling core: accept, terminate mTLS, serve HTTP/1.1 and HTTP/2, route, authorize,
//! place on a version, balance, and forward with timeouts, retries and circuit breaking.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use popmesh_ctrl_api::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::connect::{overflow_of, CountingConnector, UpstreamConnector};
use crate::lane::{self, Direction, Protocol, Shared};
use crate::metrics::{
    DenyLabels, EndpointLabels, HandshakeLabels, LatencyLabels, ListenerLabels, OverflowLabels,
    RequestLabels, ServiceLabels,
};
use crate::resilience::{Balancer, Outcome, Overflow};
use crate::table::{Decision, MeshTable, Service};
use crate::tls::{self, ALPN_H2, ALPN_HTTP11};
use crate::tls_stream;
use crate::trace::TraceParent;

/// Errors of bodies and upstream calls.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type the lane sends both ways.
pub type Body = BoxBody<Bytes, BoxError>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type UpstreamClient = Client<UpstreamConnector, Body>;

/// Per-core upstream pools: HTTP/1.1 and HTTP/2 clients. The lane keeps the caller's HTTP
/// version upstream (gRPC needs HTTP/2, WebSocket upgrades HTTP/1.1).
struct Upstreams {
    h1: UpstreamClient,
    h2: UpstreamClient,
}

impl Upstreams {
    fn new(shared: &Arc<Shared>) -> Upstreams {
        let connector = |h2: bool| {
            let alpn: &[u8] = if h2 { ALPN_H2 } else { ALPN_HTTP11 };
            let tls = shared
                .tls
                .resuming_client_config(&[alpn], shared.spec.upstream_resumption);
            UpstreamConnector::new(CountingConnector::new(shared.clone()), tls)
        };
        let client = |h2: bool| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .http2_only(h2)
                .build(connector(h2))
        };
        Upstreams {
            h1: client(false),
            h2: client(true),
        }
    }
}

/// Runs one core until `stop` turns true, then drains.
pub(crate) async fn run_core(
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    mut stop: watch::Receiver<bool>,
) {
    let upstreams = Arc::new(Upstreams::new(&shared));
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let mut accept_tasks = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let listener = match TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "signaling listener could not join the runtime");
                continue;
            }
        };
        accept_tasks.push(tokio::spawn(accept_loop(
            shared.clone(),
            upstreams.clone(),
            graceful.clone(),
            i,
            listener,
        )));
    }
    let anchor = tokio::spawn(timer_anchor());
    let _ = stop.wait_for(|s| *s).await;
    anchor.abort();
    for t in &accept_tasks {
        t.abort();
    }
    for t in accept_tasks {
        let _ = t.await;
    }
    let drain = shared.spec.drain_timeout;
    let graceful = Arc::try_unwrap(graceful).ok();
    if let Some(g) = graceful {
        if tokio::time::timeout(drain, g.shutdown()).await.is_err() {
            tracing::warn!(
                ?drain,
                "signaling connections still open after the drain timeout"
            );
        }
    }
}

/// How far ahead [`timer_anchor`] keeps a timer: shorter than any sensible route timeout.
const TIMER_ANCHOR: Duration = Duration::from_millis(250);

/// Keeps one timer pending on this core at all times, at most [`TIMER_ANCHOR`] ahead.
///
/// Tokio's timer wakes its own I/O driver (an eventfd write, then one more `epoll_wait`
/// return) whenever a timer is registered with an earlier deadline than the one the driver
/// last parked for, and "no timer at all" counts as later than any. Between requests a
/// signaling core often has no timer, so every request's timeout cost two extra system calls
/// and a wake-up (tokio-rs/tokio#5207). With this timer pending the driver always parks for a
/// deadline nearer than a new request's, and timeouts are registered silently; the price is
/// four wake-ups a second on an idle core.
async fn timer_anchor() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    upstreams: Arc<Upstreams>,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    i: usize,
    listener: TcpListener,
) {
    let spec = shared.spec.listeners[i].clone();
    let labels = ListenerLabels {
        listener: spec.name.clone(),
    };
    let alpn: &[&[u8]] = match spec.protocol {
        Protocol::Http => &[ALPN_H2, ALPN_HTTP11],
        Protocol::Tcp => &[],
    };
    let server_config = shared.tls.server_config(alpn);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: back off a little instead of spinning.
                tracing::warn!(listener = %spec.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !lane::admit(&shared, i) {
            tracing::debug!(listener = %spec.name, %peer, "connection limit reached; closed");
            continue;
        }
        let _ = tcp.set_nodelay(true);
        shared.metrics.accepted.get_or_create(&labels).inc();
        let shared = shared.clone();
        let upstreams = upstreams.clone();
        let server_config = server_config.clone();
        let labels = labels.clone();
        // hyper's graceful shutdown needs the connection future; watching happens inside.
        let graceful = graceful.clone();
        tokio::spawn(async move {
            let gauge = shared.metrics.connections.get_or_create(&labels).clone();
            gauge.inc();
            let conn = ConnInfo {
                listener: i,
                peer,
                identity: None,
                series: SeriesCache::default(),
            };
            match shared.spec.listeners[i].direction {
                Direction::Inbound => {
                    match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        tls_stream::accept(server_config, tcp),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => {
                            let identity = tls::peer_identity(stream.conn());
                            let conn = ConnInfo { identity, ..conn };
                            serve(shared.clone(), upstreams, &graceful, conn, stream).await;
                        }
                        Ok(Err(e)) => {
                            let reason = handshake_reason(&e);
                            tracing::debug!(listener = %labels.listener, %peer, error = %e, reason, "TLS handshake refused");
                            shared
                                .metrics
                                .handshake_failures
                                .get_or_create(&HandshakeLabels {
                                    listener: labels.listener.clone(),
                                    reason,
                                })
                                .inc();
                        }
                        Err(_) => {
                            shared
                                .metrics
                                .handshake_failures
                                .get_or_create(&HandshakeLabels {
                                    listener: labels.listener.clone(),
                                    reason: "timeout",
                                })
                                .inc();
                        }
                    }
                }
                Direction::Outbound => {
                    let identity = shared.spec.listeners[i].identity.clone();
                    let conn = ConnInfo { identity, ..conn };
                    serve(shared.clone(), upstreams, &graceful, conn, tcp).await;
                }
            }
            gauge.dec();
            lane::release(&shared, i);
        });
    }
}

fn handshake_reason(e: &std::io::Error) -> &'static str {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return "other";
    };
    match inner {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(c) => match c {
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                "expired"
            }
            rustls::CertificateError::UnknownIssuer => "unknown_issuer",
            rustls::CertificateError::Other(_) => "bad_identity",
            _ => "other",
        },
        _ => "other",
    }
}

/// Who is on the other end of a downstream connection.
#[derive(Debug)]
struct ConnInfo {
    listener: usize,
    peer: SocketAddr,
    /// The caller's identity: its SVID (inbound) or the listener's (outbound).
    identity: Option<SpiffeId>,
    /// The request series its last request counted in.
    series: SeriesCache,
}

/// The request counter and latency histogram of a connection's last request. A connection's
/// requests mostly share route, version and status class, so [`finish`] then neither builds
/// the label strings nor hashes them into the families.
#[derive(Debug, Default)]
struct SeriesCache(std::sync::Mutex<Option<CachedSeries>>);

#[derive(Debug)]
struct CachedSeries {
    route: String,
    service: String,
    version: String,
    class: &'static str,
    requests: prometheus_client::metrics::counter::Counter,
    latency: Option<prometheus_client::metrics::histogram::Histogram>,
}

async fn serve<IO>(
    shared: Arc<Shared>,
    upstreams: Arc<Upstreams>,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    conn: ConnInfo,
    io: IO,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listener = &shared.spec.listeners[conn.listener];
    if listener.protocol == Protocol::Tcp {
        let stream_labels = ListenerLabels {
            listener: listener.name.clone(),
        };
        let g = shared.metrics.streams.get_or_create(&stream_labels).clone();
        g.inc();
        passthrough(&shared, &conn, io).await;
        g.dec();
        return;
    }
    let conn = Arc::new(conn);
    let svc = {
        let shared = shared.clone();
        hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            let upstreams = upstreams.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(handle(shared, upstreams, conn, req).await) }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(listener.idle_timeout.min(Duration::from_secs(30)));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(1024);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let connection = graceful.watch(connection.into_owned());
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// The request's routing host: the URI authority (HTTP/2) or the Host header, without port.
fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| match h.rsplit_once(':') {
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                        host.to_owned()
                    }
                    _ => h.to_owned(),
                })
        })
        .unwrap_or_default();
    raw.to_ascii_lowercase()
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// An answer made by the lane itself: an HTTP status, or for gRPC a trailers-only response with
/// the gRPC status, so gRPC clients see `PERMISSION_DENIED` rather than a transport error.
fn local_reply(grpc: bool, status: StatusCode, grpc_code: u32, reason: &str) -> Response<Body> {
    let mut b = Response::builder().header("x-popmesh-reason", sanitize(reason));
    if grpc {
        b = b
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", grpc_code.to_string())
            .header("grpc-message", sanitize(reason));
        return b.body(empty()).expect("static headers are valid");
    }
    b.status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(Bytes::from(format!("{reason}\n"))))
        .expect("static headers are valid")
}

fn sanitize(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("error"))
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded; `te: trailers` is kept for gRPC.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Headers named by Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        if keep_upgrade && (*n == "upgrade" || *n == "connection") {
            continue;
        }
        h.remove(*n);
    }
    if let Some(te) = h.get(header::TE) {
        if te
            .to_str()
            .is_ok_and(|v| v.eq_ignore_ascii_case("trailers"))
        {
            return;
        }
        h.remove(header::TE);
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

struct Ctx<'a> {
    shared: &'a Shared,
    conn: &'a ConnInfo,
    started: Instant,
    method: Method,
    path: String,
    grpc: bool,
    trace: TraceParent,
    span_id: u64,
    /// The `traceparent` sent on: this request's span under the caller's trace.
    traceparent: Option<HeaderValue>,
}

async fn handle(
    shared: Arc<Shared>,
    upstreams: Arc<Upstreams>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let table = shared.table.load_full();
    let span_id = fastrand::u64(1..);
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceParent::parse(v).ok())
        .unwrap_or_else(|| TraceParent::root(|| fastrand::u64(..)));
    // Unique per request: sent never-indexed so it does not churn either leg's HPACK table.
    let traceparent = HeaderValue::from_str(&trace.child(span_id).to_string())
        .ok()
        .map(|mut v| {
            v.set_sensitive(true);
            v
        });
    let ctx = Ctx {
        shared: &shared,
        conn: &conn,
        started,
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        grpc: is_grpc(req.headers()),
        trace,
        span_id,
        traceparent,
    };
    let span = tracing::debug_span!(
        "proxy",
        trace_id = %format_args!("{:032x}", trace.trace_id),
        span_id = %format_args!("{span_id:016x}"),
        parent_id = %format_args!("{:016x}", trace.parent_id),
    );
    let _enter = span.enter();
    let host = request_host(&req);
    let Some(route) = table.route(&host, &ctx.path, req.headers()) else {
        return finish(
            &ctx,
            None,
            "",
            local_reply(
                ctx.grpc,
                StatusCode::NOT_FOUND,
                12,
                &format!("no route for host {host:?} path {:?}", ctx.path),
            ),
        );
    };
    let service = route.service.clone();
    let source = conn.identity.as_ref();
    if let Decision::Deny(reason) =
        table.authorize(source, service.name(), ctx.method.as_str(), &ctx.path)
    {
        shared
            .metrics
            .denied
            .get_or_create(&DenyLabels {
                source: source.map(ToString::to_string).unwrap_or_default(),
                destination: service.name().to_owned(),
            })
            .inc();
        tracing::debug!(%reason, "denied");
        return finish(
            &ctx,
            Some((&route.name, &service)),
            "",
            local_reply(ctx.grpc, StatusCode::FORBIDDEN, 7, &reason),
        );
    }
    let version = service
        .place(
            route.pin_version.as_deref(),
            req.headers(),
            fastrand::u64(..),
        )
        .to_owned();
    let Some(group) = service.groups.get(&version).cloned() else {
        return finish(
            &ctx,
            Some((&route.name, &service)),
            &version,
            local_reply(
                ctx.grpc,
                StatusCode::SERVICE_UNAVAILABLE,
                14,
                &format!("service {} has no version {version}", service.name()),
            ),
        );
    };
    let permit = match service.breaker.try_request() {
        Ok(p) => p,
        Err(o) => return overflow(&ctx, &route.name, &service, &version, o),
    };
    service.retry_budget.deposit(started);

    let upgrade = is_upgrade(&req);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let id_header = &shared.spec.identity_header;
    parts.headers.remove(id_header);
    if let Some(id) = source {
        if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
            parts.headers.insert(id_header.clone(), v);
        }
    }
    if let Some(v) = &ctx.traceparent {
        parts.headers.insert("traceparent", v.clone());
    }
    if let Some(fwd) = forwarded_for(&parts.headers, conn.peer) {
        parts.headers.insert("x-forwarded-for", fwd);
    }

    // Bodies of idempotent requests are kept for retries when small enough.
    let retries = service.retry.attempts;
    let replayable = retries > 0 && idempotent(&parts.method) && !upgrade;
    let mut body = Some(body);
    let buffered: Option<Bytes> = if replayable
        && body.as_ref().is_some_and(|b| {
            b.size_hint()
                .upper()
                .is_some_and(|u| u <= shared.spec.max_retry_body as u64)
        }) {
        match Limited::new(body.take().expect("present"), shared.spec.max_retry_body)
            .collect()
            .await
        {
            Ok(c) => Some(c.to_bytes()),
            Err(e) => {
                return finish(
                    &ctx,
                    Some((&route.name, &service)),
                    &version,
                    local_reply(
                        ctx.grpc,
                        StatusCode::BAD_REQUEST,
                        13,
                        &format!("request body: {e}"),
                    ),
                );
            }
        }
    } else {
        None
    };

    let client = if parts.version == Version::HTTP_2 {
        &upstreams.h2
    } else {
        &upstreams.h1
    };
    let scheme = if service.spec.plaintext {
        "http"
    } else {
        "https"
    };
    let timeout = route.timeout;
    let per_try = service.retry.per_try_timeout.unwrap_or(timeout);
    let deadline = started + timeout;
    let mut tried: Option<String> = None;
    let mut attempt = 0u32;
    let mut _retry_permit = None;
    loop {
        let now = Instant::now();
        let endpoint = match &tried {
            None => group.pick(now, fastrand::u64(..)),
            Some(prev) => group.pick_excluding(now, fastrand::u64(..), prev),
        };
        let Some(endpoint) = endpoint.cloned() else {
            return finish(
                &ctx,
                Some((&route.name, &service)),
                &version,
                local_reply(
                    ctx.grpc,
                    StatusCode::SERVICE_UNAVAILABLE,
                    14,
                    &format!(
                        "service {} version {version} has no endpoints",
                        service.name()
                    ),
                ),
            );
        };
        let uri = match Uri::builder()
            .scheme(scheme)
            .authority(endpoint.addr())
            .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
            .build()
        {
            Ok(u) => u,
            Err(e) => {
                return finish(
                    &ctx,
                    Some((&route.name, &service)),
                    &version,
                    local_reply(
                        ctx.grpc,
                        StatusCode::BAD_GATEWAY,
                        13,
                        &format!("endpoint {}: {e}", endpoint.addr()),
                    ),
                );
            }
        };
        let mut up = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .version(if client_is_h2(parts.version) {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            });
        if let Some(h) = up.headers_mut() {
            *h = parts.headers.clone();
            if parts.version == Version::HTTP_2 {
                // :authority (the endpoint) comes from the URI.
                h.remove(header::HOST);
            }
        }
        let up_body = match (&buffered, body.take()) {
            (Some(b), _) => full(b.clone()),
            (None, Some(b)) => b.map_err(Into::into).boxed(),
            (None, None) => empty(),
        };
        let up = up.body(up_body).expect("request parts are valid");

        let pending = match service.breaker.try_pending() {
            Ok(p) => p,
            Err(o) => return overflow(&ctx, &route.name, &service, &version, o),
        };
        let inflight = endpoint.start(Instant::now());
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout(per_try.min(remaining), client.request(up)).await;
        drop(pending);
        if let Ok(Err(e)) = &result {
            if let Some(o) = overflow_of(e) {
                // Refused by the connection limit before anything was sent: not the endpoint's
                // fault, and answered at once.
                inflight.finish(Instant::now(), Outcome::Cancelled);
                return overflow(&ctx, &route.name, &service, &version, o);
            }
        }
        let now = Instant::now();
        let (outcome, response) = match result {
            Err(_) => (Outcome::Timeout, None),
            Ok(Err(e)) => {
                tracing::debug!(endpoint = endpoint.addr(), error = %e, "upstream request failed");
                let outcome = if e.is_connect() {
                    Outcome::ConnectFailure
                } else {
                    Outcome::Reset
                };
                (outcome, Some(Err(e)))
            }
            Ok(Ok(r)) => {
                let s = r.status().as_u16();
                let outcome = match s {
                    502..=504 => Outcome::GatewayError,
                    500..=599 => Outcome::Failure5xx,
                    _ => Outcome::Success,
                };
                (outcome, Some(Ok(r)))
            }
        };
        if let Some(ej) = inflight.finish(now, outcome) {
            shared
                .metrics
                .ejections
                .get_or_create(&EndpointLabels {
                    service: service.name().to_owned(),
                    version: version.clone(),
                    endpoint: endpoint.addr().to_owned(),
                })
                .inc();
            tracing::warn!(
                service = service.name(),
                version = %version,
                endpoint = endpoint.addr(),
                ejected_for = ?ej.duration,
                "endpoint ejected by outlier detection"
            );
        }
        let retry_wanted = match (&response, outcome) {
            (_, Outcome::Timeout) => service.retry.on_5xx || service.retry.on_gateway_error,
            (Some(Err(_)), Outcome::ConnectFailure) => service.retry.on_connect_failure,
            (Some(Err(_)), _) => service.retry.on_reset,
            (Some(Ok(r)), _) => service.retry.retry_status(
                r.status().as_u16(),
                r.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            ),
            (None, _) => false,
        };
        let can_retry = retry_wanted && attempt < retries && buffered.is_some() && now < deadline;
        if can_retry && service.retry_budget.try_withdraw(now) {
            match service.breaker.try_retry() {
                Ok(p) => {
                    _retry_permit = Some(p);
                    attempt += 1;
                    tried = Some(endpoint.addr().to_owned());
                    shared
                        .metrics
                        .retries
                        .get_or_create(&ServiceLabels {
                            service: service.name().to_owned(),
                        })
                        .inc();
                    continue;
                }
                Err(o) => {
                    tracing::debug!(limit = o.as_str(), "retry not sent: breaker limit");
                }
            }
        }
        let mut resp = match response {
            None => {
                return finish(
                    &ctx,
                    Some((&route.name, &service)),
                    &version,
                    local_reply(
                        ctx.grpc,
                        StatusCode::GATEWAY_TIMEOUT,
                        4,
                        &format!(
                            "{} did not answer within {:?}",
                            service.name(),
                            per_try.min(timeout)
                        ),
                    ),
                )
            }
            Some(Err(e)) => {
                let reason = if e.is_connect() {
                    format!("cannot connect to {} ({})", endpoint.addr(), service.name())
                } else {
                    format!("{} ({}) failed: {e}", endpoint.addr(), service.name())
                };
                return finish(
                    &ctx,
                    Some((&route.name, &service)),
                    &version,
                    local_reply(ctx.grpc, StatusCode::BAD_GATEWAY, 14, &reason),
                );
            }
            Some(Ok(r)) => r,
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(down) = downstream_upgrade {
                let up = hyper::upgrade::on(&mut resp);
                let shared2 = Arc::clone(&shared);
                let listener = shared.spec.listeners[conn.listener].name.clone();
                tokio::spawn(async move {
                    let labels = ListenerLabels { listener };
                    let g = shared2.metrics.streams.get_or_create(&labels).clone();
                    match tokio::join!(down, up) {
                        (Ok(d), Ok(u)) => {
                            g.inc();
                            let mut d = TokioIo::new(d);
                            let mut u = TokioIo::new(u);
                            let _ = crate::splice::copy_both(&mut d, &mut u).await;
                            g.dec();
                        }
                        (d, u) => {
                            tracing::debug!(
                                downstream = ?d.err(),
                                upstream = ?u.err(),
                                "upgrade did not complete"
                            );
                        }
                    }
                    drop(permit);
                });
                let (mut rp, _) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers, true);
                return finish(
                    &ctx,
                    Some((&route.name, &service)),
                    &version,
                    Response::from_parts(rp, empty()),
                );
            }
        }
        let (mut rp, rb) = resp.into_parts();
        strip_hop_by_hop(&mut rp.headers, false);
        let body = Guarded {
            inner: rb,
            _permit: permit,
        }
        .boxed();
        return finish(
            &ctx,
            Some((&route.name, &service)),
            &version,
            Response::from_parts(rp, body),
        );
    }
}

fn client_is_h2(v: Version) -> bool {
    v == Version::HTTP_2
}

fn forwarded_for(h: &HeaderMap, peer: SocketAddr) -> Option<HeaderValue> {
    let ip = peer.ip().to_string();
    let v = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    HeaderValue::from_str(&v).ok()
}

fn overflow(
    ctx: &Ctx<'_>,
    route: &str,
    service: &Arc<Service>,
    version: &str,
    o: Overflow,
) -> Response<Body> {
    ctx.shared
        .metrics
        .overflows
        .get_or_create(&OverflowLabels {
            service: service.name().to_owned(),
            limit: o.as_str(),
        })
        .inc();
    let mut r = local_reply(
        ctx.grpc,
        StatusCode::SERVICE_UNAVAILABLE,
        14,
        &format!("{}: {o}", service.name()),
    );
    r.headers_mut()
        .insert("x-popmesh-overloaded", HeaderValue::from_static("true"));
    finish(ctx, Some((route, service)), version, r)
}

/// Counts and logs the response head.
fn finish(
    ctx: &Ctx<'_>,
    target: Option<(&str, &Arc<Service>)>,
    version: &str,
    mut resp: Response<Body>,
) -> Response<Body> {
    let elapsed = ctx.started.elapsed();
    let (route, service) = target.map_or(("", ""), |(r, s)| (r, s.name()));
    let listener = &ctx.shared.spec.listeners[ctx.conn.listener].name;
    let source = || {
        ctx.conn
            .identity
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    let class = status_class(resp.status());
    {
        let m = &ctx.shared.metrics;
        let mut cache = ctx
            .conn
            .series
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hit = cache.as_ref().is_some_and(|c| {
            c.class == class && c.route == route && c.service == service && c.version == version
        });
        if !hit {
            let requests = m
                .requests
                .get_or_create(&RequestLabels {
                    listener: listener.clone(),
                    route: route.to_owned(),
                    service: service.to_owned(),
                    version: version.to_owned(),
                    source: source(),
                    class,
                })
                .clone();
            let latency = (!service.is_empty()).then(|| {
                m.latency
                    .get_or_create(&LatencyLabels {
                        route: route.to_owned(),
                        service: service.to_owned(),
                        version: version.to_owned(),
                    })
                    .clone()
            });
            *cache = Some(CachedSeries {
                route: route.to_owned(),
                service: service.to_owned(),
                version: version.to_owned(),
                class,
                requests,
                latency,
            });
        }
        if let Some(c) = cache.as_ref() {
            c.requests.inc();
            if let Some(h) = &c.latency {
                h.observe(elapsed.as_secs_f64());
            }
        }
    }
    if ctx.shared.spec.access_log {
        let source = source();
        tracing::info!(
            target: "popmesh::access",
            listener = %listener,
            peer = %ctx.conn.peer,
            source = %source,
            method = %ctx.method,
            path = %ctx.path,
            route,
            service,
            version,
            status = resp.status().as_u16(),
            grpc = ctx.grpc,
            duration_us = elapsed.as_micros() as u64,
            trace_id = %format_args!("{:032x}", ctx.trace.trace_id),
            span_id = %format_args!("{:016x}", ctx.span_id),
        );
    }
    if let Some(v) = &ctx.traceparent {
        resp.headers_mut().insert("traceparent", v.clone());
    }
    resp
}

/// A response body that holds the service's request permit until it ends, so `max_requests`
/// counts streaming calls for as long as they stream.
struct Guarded<B> {
    inner: B,
    _permit: crate::resilience::RequestPermit,
}

impl<B> http_body::Body for Guarded<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// TCP pass-through: authorize the caller for the listener's service, then copy bytes to an
/// endpoint of its default version (mTLS unless the service is plaintext).
async fn passthrough<IO>(shared: &Arc<Shared>, conn: &ConnInfo, mut io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let table: Arc<MeshTable> = shared.table.load_full();
    let listener = &shared.spec.listeners[conn.listener];
    let Some(service) = listener
        .service
        .as_deref()
        .and_then(|s| table.service(s))
        .cloned()
    else {
        tracing::warn!(listener = %listener.name, "TCP listener's service is not in the mesh config; closed");
        return;
    };
    if let Decision::Deny(reason) = table.authorize(conn.identity.as_ref(), service.name(), "", "")
    {
        shared
            .metrics
            .denied
            .get_or_create(&DenyLabels {
                source: conn
                    .identity
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                destination: service.name().to_owned(),
            })
            .inc();
        tracing::debug!(%reason, "TCP connection denied");
        return;
    }
    let Some(group): Option<&Arc<Balancer>> = service.groups.get(&service.spec.default_version)
    else {
        return;
    };
    let Ok(_permit) = service.breaker.try_request() else {
        return;
    };
    let Some(endpoint) = group.pick(Instant::now(), fastrand::u64(..)).cloned() else {
        return;
    };
    let inflight = endpoint.start(Instant::now());
    let tcp = match tokio::time::timeout(service.timeout, TcpStream::connect(endpoint.addr())).await
    {
        Ok(Ok(t)) => t,
        _ => {
            inflight.finish(Instant::now(), Outcome::ConnectFailure);
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    if service.spec.plaintext {
        inflight.finish(Instant::now(), Outcome::Success);
        let mut tcp = tcp;
        let _ = crate::splice::copy_both(&mut io, &mut tcp).await;
        return;
    }
    let name = rustls_pki_types::ServerName::try_from(
        endpoint
            .addr()
            .rsplit_once(':')
            .map_or(endpoint.addr(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_owned(),
    );
    let Ok(name) = name else {
        inflight.finish(Instant::now(), Outcome::ConnectFailure);
        return;
    };
    match tls_stream::connect(shared.tls.client_config(&[]), name, tcp).await {
        Ok(mut up) => {
            inflight.finish(Instant::now(), Outcome::Success);
            let _ = crate::splice::copy_both(&mut io, &mut up).await;
        }
        Err(e) => {
            tracing::debug!(endpoint = endpoint.addr(), error = %e, "upstream TLS failed");
            inflight.finish(Instant::now(), Outcome::ConnectFailure);
        }
    }
}
