//! `popmesh service put|remove|list` and `popmesh route put|remove|list`: what the signaling
//! lane routes to.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use popmesh_ctrl_api::pb::{
    CircuitBreaker, EndpointGroup, HeaderMatch, HealthCheck, ListRoutesRequest,
    ListServicesRequest, OutlierDetection, PutRouteRequest, PutServiceRequest, RemoveRouteRequest,
    RemoveServiceRequest, RetryPolicy, Route, Service,
};
use popmesh_ctrl_api::validate;
use serde_json::json;

use crate::ctrl::{self, cell, format_ms, invalid, parse_duration_ms, print_json, ConnArgs, Table};
use crate::session::written;

#[derive(Debug, Args)]
pub struct ServiceFlags {
    /// Service name, [a-z0-9-]{1,63}.
    #[arg(long)]
    name: String,
    /// An endpoint group: VERSION=HOST:PORT[,HOST:PORT...]. Repeat for each version.
    #[arg(long = "group", value_name = "VERSION=HOST:PORT,..", required = true)]
    groups: Vec<String>,
    /// Version that gets all traffic without a canary split (default: the first --group).
    #[arg(long, value_name = "VERSION")]
    default_version: Option<String>,
    /// Request timeout, ms (0: 15000).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    timeout_ms: u32,
    /// Retries after the first attempt (0..=10).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Per-try timeout, ms (0: the request timeout).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    per_try_timeout_ms: u32,
    /// Retry on this condition (5xx, gateway-error, reset, connect-failure, unavailable, ...).
    #[arg(long = "retry-on", value_name = "COND")]
    retry_on: Vec<String>,
    /// Circuit breaker: most connections per appliance (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_connections: u32,
    /// Circuit breaker: most concurrent requests per appliance (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_requests: u32,
    /// Outlier detection: eject an endpoint after N consecutive errors (0: off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    eject_after_errors: u32,
    /// Reach the endpoints in cleartext instead of mutual TLS (local services on loopback only).
    #[arg(long)]
    plaintext: bool,
    /// Active health checks every DURATION (500ms..=1h, e.g. 5s; default: none).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    health_interval: Option<u32>,
    /// Health check "GET PATH" must answer 2xx (default: a TCP connect, and TLS handshake
    /// unless --plaintext). Needs --health-interval.
    #[arg(long, value_name = "PATH")]
    health_path: Option<String>,
    /// A health check fails after DURATION (default: 1s; at most --health-interval). Needs
    /// --health-interval.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    health_timeout: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create or replace a service with its endpoint groups per version.
    Put(ServiceFlags),
    /// Remove a service (refused while a route, canary, policy or session uses it).
    Remove {
        /// Service name.
        name: String,
    },
    /// List services.
    List,
}

#[derive(Debug, Args)]
pub struct RouteFlags {
    /// Route name, [a-z0-9-]{1,63}.
    #[arg(long)]
    name: String,
    /// Host (authority without port) or "*".
    #[arg(long, default_value = "*")]
    host: String,
    /// Path prefix, starting with "/".
    #[arg(long, value_name = "PREFIX", default_value = "/")]
    path_prefix: String,
    /// A header that must match exactly: NAME=VALUE (lower-case name). Repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Destination service.
    #[arg(long)]
    service: String,
    /// Pin to one version of the service (default: the service's canary split).
    #[arg(long, value_name = "VERSION")]
    pin_version: Option<String>,
    /// Overrides the service's timeout, ms (0: the service's).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    timeout_ms: u32,
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Create or replace a route to a service.
    Put(RouteFlags),
    /// Remove a route.
    Remove {
        /// Route name.
        name: String,
    },
    /// List routes.
    List,
}

fn group(s: &str) -> anyhow::Result<EndpointGroup> {
    let (version, endpoints) = s.split_once('=').ok_or_else(|| {
        ctrl::Exit::refused(format!(
            "--group {s:?}: expected VERSION=HOST:PORT[,HOST:PORT]"
        ))
    })?;
    Ok(EndpointGroup {
        version: version.to_string(),
        endpoints: endpoints
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

fn service_of(f: ServiceFlags) -> anyhow::Result<Service> {
    let groups = f
        .groups
        .iter()
        .map(|g| group(g))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let default_version = f
        .default_version
        .or_else(|| groups.first().map(|g| g.version.clone()))
        .unwrap_or_default();
    // Only sent when asked for; a path or timeout without an interval is refused by validation
    // rather than dropped.
    let health_check =
        (f.health_interval.is_some() || f.health_path.is_some() || f.health_timeout.is_some())
            .then(|| HealthCheck {
                interval_ms: f.health_interval.unwrap_or(0),
                path: f.health_path.unwrap_or_default(),
                timeout_ms: f.health_timeout.unwrap_or(0),
                ..Default::default()
            });
    Ok(Service {
        name: f.name,
        groups,
        default_version,
        timeout_ms: f.timeout_ms,
        retry: Some(RetryPolicy {
            attempts: f.retries,
            per_try_timeout_ms: f.per_try_timeout_ms,
            retry_on: f.retry_on,
        }),
        circuit_breaker: Some(CircuitBreaker {
            max_connections: f.max_connections,
            max_requests: f.max_requests,
            ..Default::default()
        }),
        outlier: (f.eject_after_errors > 0).then_some(OutlierDetection {
            consecutive_errors: f.eject_after_errors,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 50,
        }),
        version: 0,
        plaintext: f.plaintext,
        health_check,
    })
}

/// `connect every 5s, timeout 1s` / `GET /healthz every 5s, timeout 1s` / `-` (no checks).
fn health_cell(h: Option<&HealthCheck>) -> String {
    let Some(h) = h.filter(|h| h.interval_ms != 0) else {
        return "-".into();
    };
    let check = if h.path.is_empty() {
        "connect".to_string()
    } else {
        format!("GET {}", h.path)
    };
    let timeout = if h.timeout_ms == 0 {
        validate::DEFAULT_HEALTH_TIMEOUT_MS
    } else {
        h.timeout_ms
    };
    format!(
        "{check} every {}, timeout {}",
        format_ms(h.interval_ms),
        format_ms(timeout)
    )
}

pub fn run_service(conn: &ConnArgs, json: bool, cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServiceCommand::Put(f) => {
            let s = service_of(f)?;
            if !conn.no_local_checks {
                validate::service("service", &s).map_err(|e| invalid(&e))?;
            }
            let name = s.name.clone();
            let c = conn.connect()?;
            let r = c.call(|ch| async move {
                ctrl::mesh(ch)
                    .put_service(PutServiceRequest { service: Some(s) })
                    .await
            })?;
            written(json, &format!("put service {name}"), r.version)?;
        }
        ServiceCommand::Remove { name } => {
            let c = conn.connect()?;
            let n = name.clone();
            let r = c.call(|ch| async move {
                ctrl::mesh(ch)
                    .remove_service(RemoveServiceRequest { name: n })
                    .await
            })?;
            written(json, &format!("removed service {name}"), r.version)?;
        }
        ServiceCommand::List => {
            let c = conn.connect()?;
            let r =
                c.call(
                    |ch| async move { ctrl::mesh(ch).list_services(ListServicesRequest {}).await },
                )?;
            if json {
                let services: Vec<_> = r
                    .services
                    .iter()
                    .map(|s| {
                        json!({
                            "name": s.name,
                            "groups": s.groups.iter().map(|g| json!({
                                "version": g.version, "endpoints": g.endpoints,
                            })).collect::<Vec<_>>(),
                            "default_version": s.default_version,
                            "timeout_ms": s.timeout_ms,
                            "retry_attempts": s.retry.as_ref().map_or(0, |r| r.attempts),
                            "plaintext": s.plaintext,
                            "health_check": s.health_check.as_ref().map(|h| json!({
                                "interval_ms": h.interval_ms,
                                "path": h.path,
                                "timeout_ms": h.timeout_ms,
                                "unhealthy_threshold": h.unhealthy_threshold,
                                "healthy_threshold": h.healthy_threshold,
                            })),
                            "config_version": s.version,
                        })
                    })
                    .collect();
                print_json(&json!({ "version": r.version, "services": services }))?;
            } else {
                let mut t = Table::new(&[
                    "NAME",
                    "DEFAULT",
                    "VERSIONS",
                    "TIMEOUT",
                    "RETRIES",
                    "TRANSPORT",
                    "HEALTH",
                ]);
                for s in &r.services {
                    let groups: Vec<String> = s
                        .groups
                        .iter()
                        .map(|g| format!("{}={}", g.version, g.endpoints.join(",")))
                        .collect();
                    t.row(vec![
                        s.name.clone(),
                        s.default_version.clone(),
                        groups.join(" "),
                        if s.timeout_ms == 0 {
                            format!("{} ms", validate::DEFAULT_TIMEOUT_MS)
                        } else {
                            format!("{} ms", s.timeout_ms)
                        },
                        s.retry.as_ref().map_or(0, |r| r.attempts).to_string(),
                        if s.plaintext { "plaintext" } else { "mtls" }.to_string(),
                        health_cell(s.health_check.as_ref()),
                    ]);
                }
                t.print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_route(conn: &ConnArgs, json: bool, cmd: RouteCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RouteCommand::Put(f) => {
            let headers = f
                .headers
                .iter()
                .map(|h| {
                    h.split_once('=')
                        .map(|(n, v)| HeaderMatch {
                            name: n.to_string(),
                            value: v.to_string(),
                        })
                        .ok_or_else(|| {
                            ctrl::Exit::refused(format!("--header {h:?}: expected NAME=VALUE"))
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let route = Route {
                name: f.name,
                host: f.host,
                path_prefix: f.path_prefix,
                headers,
                service: f.service,
                pin_version: f.pin_version.unwrap_or_default(),
                timeout_ms: f.timeout_ms,
                version: 0,
            };
            let c = conn.connect()?;
            if c.local_checks() {
                validate::route("route", &route, &c.catalog()?).map_err(|e| invalid(&e))?;
            }
            let name = route.name.clone();
            let r = c.call(|ch| async move {
                ctrl::mesh(ch)
                    .put_route(PutRouteRequest { route: Some(route) })
                    .await
            })?;
            written(json, &format!("put route {name}"), r.version)?;
        }
        RouteCommand::Remove { name } => {
            let c = conn.connect()?;
            let n = name.clone();
            let r = c.call(|ch| async move {
                ctrl::mesh(ch)
                    .remove_route(RemoveRouteRequest { name: n })
                    .await
            })?;
            written(json, &format!("removed route {name}"), r.version)?;
        }
        RouteCommand::List => {
            let c = conn.connect()?;
            let r =
                c.call(|ch| async move { ctrl::mesh(ch).list_routes(ListRoutesRequest {}).await })?;
            let headers = |r: &Route| {
                r.headers
                    .iter()
                    .map(|h| format!("{}={}", h.name, h.value))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            if json {
                let routes: Vec<_> = r
                    .routes
                    .iter()
                    .map(|x| {
                        json!({
                            "name": x.name, "host": x.host, "path_prefix": x.path_prefix,
                            "headers": x.headers.iter().map(|h| json!({"name": h.name, "value": h.value})).collect::<Vec<_>>(),
                            "service": x.service, "pin_version": x.pin_version,
                            "timeout_ms": x.timeout_ms, "config_version": x.version,
                        })
                    })
                    .collect();
                print_json(&json!({ "version": r.version, "routes": routes }))?;
            } else {
                let mut t = Table::new(&["NAME", "HOST", "PATH", "HEADERS", "SERVICE", "PIN"]);
                for x in &r.routes {
                    t.row(vec![
                        x.name.clone(),
                        x.host.clone(),
                        x.path_prefix.clone(),
                        cell(&headers(x)),
                        x.service.clone(),
                        cell(&x.pin_version),
                    ]);
                }
                t.print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
