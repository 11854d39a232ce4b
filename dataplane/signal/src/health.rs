//! Active health checks of the services' endpoints (the daemon's `Service.health_check`).
//!
//! One checker per endpoint that has checks on, on the lane's `signal-health` thread (pinned to
//! the first signaling CPU, so it never runs on a media core). A check is a TCP connect plus,
//! unless the service is `plaintext`, a mutual-TLS handshake with the lane's SVID; with a
//! `path`, also `GET <path>` (HTTP/2 when the endpoint's TLS picks `h2`, else HTTP/1.1) that
//! must answer 2xx, all within the timeout. `unhealthy_threshold` failures in a row take an
//! endpoint out of rotation ([`Endpoint::set_health`]); `healthy_threshold` passes in a row put
//! it back, readmitting it early if outlier detection had ejected it. Endpoints start healthy:
//! a new service takes traffic at once and the first checks correct that within an interval.
//!
//! The checker set follows the mesh table: when a table is installed, checkers of endpoints
//! that are gone or whose check changed stop, and new ones start. An endpoint whose checks are
//! turned off is marked healthy again (nothing would ever readmit it otherwise).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use popmesh_ctrl_api::{pb, validate};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::lane::Shared;
use crate::metrics::{EndpointLabels, HealthCheckLabels};
use crate::resilience::Endpoint;
use crate::table::MeshTable;
use crate::tls::{ALPN_H2, ALPN_HTTP11};

/// How often the checker thread looks for a new mesh table.
const TABLE_POLL: Duration = Duration::from_millis(200);

/// A health check as the lane runs it (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// `GET` this path and want 2xx; `None`: connecting (and the TLS handshake) is the check.
    pub path: Option<String>,
    /// Failures in a row that mark an endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Passes in a row that mark it healthy again.
    pub healthy_threshold: u32,
    /// Cleartext endpoints (no TLS).
    pub plaintext: bool,
}

impl CheckSpec {
    /// The checks of `service`, or `None` when it has none (`interval_ms` 0 or no message).
    pub fn of(service: &pb::Service) -> Option<CheckSpec> {
        let h = service.health_check.as_ref()?;
        if h.interval_ms == 0 {
            return None;
        }
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        Some(CheckSpec {
            interval: Duration::from_millis(u64::from(h.interval_ms)),
            timeout: Duration::from_millis(u64::from(or(
                h.timeout_ms,
                validate::DEFAULT_HEALTH_TIMEOUT_MS,
            ))),
            path: (!h.path.is_empty()).then(|| h.path.clone()),
            unhealthy_threshold: or(h.unhealthy_threshold, validate::DEFAULT_UNHEALTHY_THRESHOLD),
            healthy_threshold: or(h.healthy_threshold, validate::DEFAULT_HEALTHY_THRESHOLD),
            plaintext: service.plaintext,
        })
    }
}

/// Runs on the `signal-health` thread until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut running: HashMap<usize, Running> = HashMap::new();
    let mut seen: Option<Arc<MeshTable>> = None;
    loop {
        let table = shared.table.load_full();
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &table)) {
            reconcile(&shared, &table, &mut running);
            seen = Some(table);
        }
        tokio::select! {
            _ = tokio::time::sleep(TABLE_POLL) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, r) in running.drain() {
        r.task.abort();
    }
}

struct Running {
    spec: CheckSpec,
    endpoint: Arc<Endpoint>,
    task: tokio::task::JoinHandle<()>,
}

/// Checkers are keyed by the endpoint's allocation: a new table reuses the `Arc` of an
/// endpoint that is still there, so its checker (and its verdict) carries over.
fn key(e: &Arc<Endpoint>) -> usize {
    Arc::as_ptr(e) as usize
}

/// One entry per endpoint with checks on in `table`.
fn wanted(table: &MeshTable) -> Vec<(Arc<Endpoint>, EndpointLabels, CheckSpec)> {
    let mut out = Vec::new();
    for service in table.services() {
        let Some(spec) = CheckSpec::of(&service.spec) else {
            continue;
        };
        for (version, balancer) in &service.groups {
            for e in balancer.endpoints() {
                let labels = EndpointLabels {
                    service: service.name().to_owned(),
                    version: version.clone(),
                    endpoint: e.addr().to_owned(),
                };
                out.push((e.clone(), labels, spec.clone()));
            }
        }
    }
    out
}

fn reconcile(shared: &Arc<Shared>, table: &MeshTable, running: &mut HashMap<usize, Running>) {
    let wanted = wanted(table);
    let keep: HashMap<usize, &CheckSpec> = wanted.iter().map(|(e, _, s)| (key(e), s)).collect();
    running.retain(|ptr, r| {
        let same = keep.get(ptr).is_some_and(|s| **s == r.spec);
        if !same {
            r.task.abort();
            if !keep.contains_key(ptr) {
                // Checks off (or the endpoint left the table): nothing would readmit it.
                r.endpoint.set_health(true, Instant::now());
            }
        }
        same
    });
    for (endpoint, labels, spec) in wanted {
        let ptr = key(&endpoint);
        if running.contains_key(&ptr) {
            continue;
        }
        let task = tokio::spawn(check_loop(
            shared.clone(),
            endpoint.clone(),
            labels,
            spec.clone(),
        ));
        running.insert(
            ptr,
            Running {
                spec,
                endpoint,
                task,
            },
        );
    }
}

/// The verdict state of one endpoint's checker: consecutive results against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdicts {
    healthy: bool,
    passes: u32,
    failures: u32,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            healthy: true,
            passes: 0,
            failures: 0,
        }
    }
}

impl Verdicts {
    /// Current verdict.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Feeds one check result; returns the new verdict if it changed.
    pub fn record(&mut self, passed: bool, spec: &CheckSpec) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.healthy && self.passes >= spec.healthy_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= spec.unhealthy_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

async fn check_loop(
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    labels: EndpointLabels,
    spec: CheckSpec,
) {
    let mut verdicts = Verdicts::default();
    if !endpoint.is_healthy() {
        // Taken over from a checker whose spec changed: keep its verdict.
        verdicts.healthy = false;
    }
    let gauge = shared
        .metrics
        .endpoint_healthy
        .get_or_create(&labels)
        .clone();
    gauge.set(i64::from(verdicts.healthy));
    // Spread the first checks of many endpoints over one interval.
    let first = spec.interval.mul_f64(fastrand::f64());
    let mut next = tokio::time::Instant::now() + first;
    loop {
        tokio::time::sleep_until(next).await;
        next += spec.interval;
        let result = match tokio::time::timeout(spec.timeout, check(&shared, &labels, &spec)).await
        {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", spec.timeout)),
        };
        let passed = result.is_ok();
        shared
            .metrics
            .health_checks
            .get_or_create(&HealthCheckLabels {
                service: labels.service.clone(),
                version: labels.version.clone(),
                endpoint: labels.endpoint.clone(),
                result: if passed { "pass" } else { "fail" },
            })
            .inc();
        if let Err(reason) = &result {
            tracing::debug!(endpoint = %labels.endpoint, service = %labels.service, %reason, "health check failed");
        }
        if let Some(healthy) = verdicts.record(passed, &spec) {
            endpoint.set_health(healthy, Instant::now());
            gauge.set(i64::from(healthy));
            if healthy {
                tracing::info!(
                    service = %labels.service,
                    version = %labels.version,
                    endpoint = %labels.endpoint,
                    passes = spec.healthy_threshold,
                    "endpoint healthy again: back in rotation"
                );
            } else {
                tracing::warn!(
                    service = %labels.service,
                    version = %labels.version,
                    endpoint = %labels.endpoint,
                    failures = spec.unhealthy_threshold,
                    reason = %result.err().unwrap_or_default(),
                    "endpoint failed its health checks: out of rotation"
                );
            }
        }
    }
}

/// One check; `Err` says why it failed.
async fn check(shared: &Shared, labels: &EndpointLabels, spec: &CheckSpec) -> Result<(), String> {
    let addr = labels.endpoint.as_str();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if spec.plaintext {
        return match &spec.path {
            None => Ok(()),
            Some(path) => http_get(tcp, addr, path, false).await,
        };
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("server name: {e}"))?;
    let config = shared.tls.client_config(&[ALPN_H2, ALPN_HTTP11]);
    let tls = crate::tls_stream::connect(config, name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    match &spec.path {
        None => Ok(()),
        Some(path) => {
            let h2 = tls.conn().alpn_protocol() == Some(ALPN_H2);
            http_get(tls, addr, path, h2).await
        }
    }
}

async fn http_get<IO>(io: IO, authority: &str, path: &str, h2: bool) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let uri: Uri = format!("http://{authority}{path}")
        .parse()
        .map_err(|e| format!("health-check URI: {e}"))?;
    let mut req = Request::get(uri)
        .header(http::header::USER_AGENT, "popmesh-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let io = TokioIo::new(io);
    let status = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2: {e}"))?;
        tokio::spawn(conn);
        *req.uri_mut() = format!("https://{authority}{path}")
            .parse()
            .map_err(|e| format!("health-check URI: {e}"))?;
        send.send_request(req).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1: {e}"))?;
        tokio::spawn(conn);
        if let Ok(v) = http::HeaderValue::from_str(authority) {
            req.headers_mut().insert(http::header::HOST, v);
        }
        *req.uri_mut() = path
            .parse()
            .map_err(|e| format!("health-check path: {e}"))?;
        send.send_request(req).await
    }
    .map_err(|e| format!("GET {path}: {e}"))?;
    let code = status.status();
    // Read the (small) body so the server sees a complete exchange.
    let _ = status.into_body().collect().await;
    if code.is_success() {
        Ok(())
    } else {
        Err(format!("GET {path} answered {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(unhealthy: u32, healthy: u32) -> CheckSpec {
        CheckSpec {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            path: None,
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
            plaintext: true,
        }
    }

    #[test]
    fn thresholds_need_results_in_a_row() {
        let s = spec(3, 2);
        let mut v = Verdicts::default();
        assert_eq!(v.record(false, &s), None);
        assert_eq!(v.record(false, &s), None);
        // A pass resets the failure run.
        assert_eq!(v.record(true, &s), None);
        assert_eq!(v.record(false, &s), None);
        assert_eq!(v.record(false, &s), None);
        assert_eq!(v.record(false, &s), Some(false));
        assert!(!v.healthy());
        // Further failures change nothing.
        assert_eq!(v.record(false, &s), None);
        assert_eq!(v.record(true, &s), None);
        assert_eq!(v.record(false, &s), None);
        assert_eq!(v.record(true, &s), None);
        assert_eq!(v.record(true, &s), Some(true));
        assert!(v.healthy());
    }

    #[test]
    fn defaults_fill_zero_fields() {
        let svc = pb::Service {
            health_check: Some(pb::HealthCheck {
                interval_ms: 500,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = CheckSpec::of(&svc).expect("checks on");
        assert_eq!(s.timeout, Duration::from_millis(1000));
        assert_eq!(s.unhealthy_threshold, 2);
        assert_eq!(s.healthy_threshold, 1);
        assert_eq!(s.path, None);
        let off = pb::Service {
            health_check: Some(pb::HealthCheck::default()),
            ..Default::default()
        };
        assert_eq!(CheckSpec::of(&off), None);
    }

    proptest::proptest! {
        /// The verdict flips exactly when the run of equal results reaches its threshold.
        #[test]
        fn verdict_follows_runs(results in proptest::collection::vec(proptest::bool::ANY, 0..200),
                                unhealthy in 1u32..5, healthy in 1u32..5) {
            let s = spec(unhealthy, healthy);
            let mut v = Verdicts::default();
            let mut model = true;
            let mut run = 0u32;
            let mut last: Option<bool> = None;
            for r in results {
                run = if last == Some(r) { run + 1 } else { 1 };
                last = Some(r);
                let changed = v.record(r, &s);
                let flips = if r { !model && run >= healthy } else { model && run >= unhealthy };
                if flips {
                    model = r;
                }
                proptest::prop_assert_eq!(changed, flips.then_some(r));
                proptest::prop_assert_eq!(v.healthy(), model);
            }
        }
    }
}
