//! Admin HTTP server: `/metrics`, `/healthz`, `/readyz`, `/config`, `/flows`.
//!
//! Runs on the housekeeping thread's single-threaded tokio runtime, never on a media core.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use popmesh_config::Config;
use popmesh_media::flow::FlowReaderFactory;

use crate::workers::{State as WorkerState, WorkerInfo};
use crate::Clock;

/// Shared state of the admin handlers.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Effective configuration, served at `/config`.
    pub config: Arc<Config>,
    /// Metrics registry, encoded at `/metrics`.
    pub registry: Arc<Registry>,
    /// Workers, for health and readiness.
    pub workers: Vec<Arc<WorkerInfo>>,
    /// Flow table access for `/flows`.
    pub flows: FlowReaderFactory,
    /// Clock shared with the workers.
    pub clock: Clock,
}

/// The router.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/config", get(config))
        .route("/flows", get(flows))
        .with_state(admin)
}

async fn metrics(State(a): State<Admin>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &a.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}

/// Live: every worker thread is still in its loop.
async fn healthz(State(a): State<Admin>) -> Response {
    let dead: Vec<String> = a
        .workers
        .iter()
        .filter(|w| w.state() == WorkerState::Exited)
        .map(|w| format!("worker {} (core {}) exited", w.index, w.core))
        .collect();
    if dead.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, dead.join("\n") + "\n").into_response()
    }
}

/// Ready: every worker has opened its backend and is polling.
async fn readyz(State(a): State<Admin>) -> Response {
    let waiting: Vec<String> = a
        .workers
        .iter()
        .filter(|w| w.state() != WorkerState::Running)
        .map(|w| format!("worker {} (core {}): {:?}", w.index, w.core, w.state()))
        .collect();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, waiting.join("\n") + "\n").into_response()
    }
}

async fn config(State(a): State<Admin>) -> Json<Config> {
    Json(Config::clone(&a.config))
}

#[derive(Debug, Deserialize)]
struct FlowQuery {
    /// Only this session.
    session: Option<String>,
    /// At most this many flows (default 1000).
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct SsrcView {
    ssrc: u32,
    expected: u64,
    received: u64,
    lost: i64,
    out_of_order: u64,
    jitter_ms: f64,
}

#[derive(Debug, Serialize)]
struct FlowView {
    id: u64,
    session: String,
    ingress_port: u16,
    ingress: String,
    source: Option<String>,
    source_programmed: bool,
    subscribers: Vec<String>,
    packets: u64,
    bytes: u64,
    drops: u64,
    rtcp: u64,
    idle_ms: Option<u64>,
    ssrcs: Vec<SsrcView>,
}

#[derive(Debug, Serialize)]
struct FlowsView {
    total: usize,
    shown: usize,
    flows: Vec<FlowView>,
}

async fn flows(State(a): State<Admin>, Query(q): Query<FlowQuery>) -> Response {
    let reader = a.flows.reader();
    let Some(table) = reader.enter() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "flow table closed\n").into_response();
    };
    let now = a.clock.now_ns();
    let limit = q.limit.unwrap_or(1000);
    let mut list: Vec<_> = table
        .iter()
        .filter(|f| q.session.as_deref().is_none_or(|s| *f.spec.name == *s))
        .collect();
    list.sort_by(|x, y| x.spec.name.cmp(&y.spec.name).then(x.id.cmp(&y.id)));
    let total = list.len();
    let flows: Vec<FlowView> = list
        .into_iter()
        .take(limit)
        .map(|f| {
            let seen = f.counters.last_seen_ns.load(Relaxed);
            let rate = f64::from(f.spec.clock_rate.max(1));
            FlowView {
                id: f.id,
                session: f.spec.name.to_string(),
                ingress_port: f.spec.key.port(),
                ingress: f.spec.key.dst().to_string(),
                source: f.source().map(|s| s.to_string()),
                source_programmed: f.spec.source.is_some(),
                subscribers: f.targets().iter().map(|t| t.addr.to_string()).collect(),
                packets: f.counters.packets.load(Relaxed),
                bytes: f.counters.bytes.load(Relaxed),
                drops: f.tallies.drops.load(Relaxed),
                rtcp: f.tallies.rtcp.load(Relaxed),
                idle_ms: (seen != 0).then(|| now.saturating_sub(seen) / 1_000_000),
                ssrcs: f
                    .ssrc_stats()
                    .map(|s| SsrcView {
                        ssrc: s.ssrc,
                        expected: s.expected(),
                        received: s.received,
                        lost: s.lost(),
                        out_of_order: s.out_of_order,
                        jitter_ms: f64::from(s.jitter()) * 1000.0 / rate,
                    })
                    .collect(),
            }
        })
        .collect();
    Json(FlowsView {
        total,
        shown: flows.len(),
        flows,
    })
    .into_response()
}
