//! `popmesh-signal-bench`: the signaling lane against calling the service directly, side by
//! side in one run, with mutual TLS on both legs (SVIDs from popmesh-ctrld's CA).
//!
//! - The lane runs on its own pinned runtime (`--lane-core`); the load generator and the
//!   upstream service share the other CPU (`--load-core`).
//! - Open-loop load at a fixed rate (`--rate`), over `--connections` HTTP/2 connections, paced
//!   by a thread that sends each request at its due time (to within tens of microseconds; the
//!   report prints how late it was); each latency counts from the request's due time, so a
//!   stall shows up instead of slowing the load down (no coordinated omission).
//! - Each round runs three phases: direct to the service, through a *null hop* (a TCP relay on
//!   the lane's CPU that only copies bytes: what one more hop costs on this machine, with none
//!   of the lane's work), and through the lane. The report gives medians over rounds of each
//!   phase's P50 and P99, and the null hop's and the lane's CPU per 1,000 requests/s.
//! - CPU: the lane thread's (and the null hop thread's) on-CPU time
//!   (`/proc/self/task/<tid>/schedstat`) during its phases, per 1,000 requests/s.
//! - Memory per idle WebSocket: two child processes each open `--websockets` sockets (one
//!   directly, one through the lane) and report their RSS growth; the difference per socket is
//!   what the lane holds (both of its TLS legs and the copy task).
//!
//! - `--lane-only`: background signaling load for other benchmarks (`perf/media_under_signal.py`
//!   runs it next to the media lane). No direct phases and no WebSocket figure: after the
//!   warm-up it prints `lane-only: load starts` on stderr, runs `--rounds` lane phases of
//!   `--duration` seconds, and reports the requests completed, errors, completed requests/s, the
//!   P50/P99 and the lane thread's CPU share.
//!
//! Every phase is bounded by `--duration`; nothing outlives the process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use popmesh_ctrl_api::{pb, SpiffeId};
use popmesh_ctrld::ca::Ca;
use popmesh_signal::tls::{Identity, TlsState, TrustBundle, ALPN_H2, ALPN_HTTP11};
use popmesh_signal::{Direction, Lane, LaneSpec, ListenerSpec, MeshTable, Metrics, Protocol};

/// The allocator `popmesh-dataplane` runs the lane with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Signaling lane vs direct: added latency, lane CPU per 1,000 requests/s, memory per idle WebSocket"
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Requests per second, fixed (open loop).
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Rounds; each runs a direct, a null-hop and a lane phase.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// HTTP/2 connections the load is spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Idle WebSockets for the memory figure (0: skip).
    #[arg(long, default_value_t = 2000)]
    websockets: usize,
    /// CPU the lane is pinned to.
    #[arg(long, default_value_t = 1)]
    lane_core: usize,
    /// CPU of the load generator and the upstream service.
    #[arg(long, default_value_t = 0)]
    load_core: usize,
    /// Print the JSON summary only.
    #[arg(long)]
    json: bool,
    /// Lane phases only (a signaling load for other benchmarks): no direct phases, no
    /// WebSocket figure (`--websockets` is not used).
    #[arg(long)]
    lane_only: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// (internal) Open N idle WebSockets directly or through the lane; print the RSS growth.
    Ws {
        #[arg(long)]
        via_lane: bool,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        lane_core: usize,
    },
}

struct Pki {
    ca: Ca,
    roots: String,
}

impl Pki {
    fn new() -> anyhow::Result<Pki> {
        let record = Ca::generate_root("bench.test", SystemTime::now())?;
        let roots = record.roots_pem.clone();
        Ok(Pki {
            ca: Ca::load(record)?,
            roots,
        })
    }

    fn tls(&self, ns: &str, name: &str) -> anyhow::Result<Arc<TlsState>> {
        let id = SpiffeId::new("bench.test", ns, name)?;
        let issued = self
            .ca
            .issue(&id, Duration::from_secs(3600), None, SystemTime::now())?;
        let chain = format!("{}{}", issued.cert_pem, issued.chain_pem);
        let identity = Identity::from_pem(
            chain.as_bytes(),
            issued.key_pem.unwrap_or_default().as_bytes(),
        )?;
        Ok(TlsState::new(
            identity,
            TrustBundle::from_pem("bench.test", self.roots.as_bytes())?,
        )?)
    }
}

/// The service: answers every request with 64 bytes over mTLS, HTTP/1.1 or HTTP/2; echoes
/// WebSocket messages on `/ws`.
async fn upstream(tls: Arc<TlsState>) -> anyhow::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(&[ALPN_H2, ALPN_HTTP11]));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        if req.uri().path() == "/ws" {
                            let mut req = req;
                            return Ok::<_, Infallible>(popmesh_signal_bench::ws::accept(
                                &mut req,
                                |mut ws| async move {
                                    while let Some(Ok(m)) = ws.next().await {
                                        if m.is_close() || ws.send(m).await.is_err() {
                                            break;
                                        }
                                    }
                                },
                            ));
                        }
                        Ok(http::Response::new(Full::new(Bytes::from_static(
                            &[b'x'; 64],
                        ))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn start_lane(pki: &Pki, up: SocketAddr, core: usize) -> anyhow::Result<Lane> {
    let mut service = pb::Service {
        name: "payment".into(),
        groups: vec![pb::EndpointGroup {
            version: "v1".into(),
            endpoints: vec![up.to_string()],
        }],
        default_version: "v1".into(),
        ..Default::default()
    };
    service.timeout_ms = 5000;
    let table = MeshTable::compile(
        1,
        &[service],
        &[pb::Route {
            name: "all".into(),
            host: "*".into(),
            path_prefix: "/".into(),
            service: "payment".into(),
            ..Default::default()
        }],
        &[],
        &[pb::Policy {
            name: "users".into(),
            sources: vec!["spiffe://bench.test/ns/user/sa/*".into()],
            destination: "payment".into(),
            action: pb::PolicyAction::Allow as i32,
            ..Default::default()
        }],
        None,
    )
    .map_err(|e| anyhow::anyhow!("mesh: {e:?}"))?;
    let spec = LaneSpec {
        cores: vec![core],
        avoid_cores: Vec::new(),
        listeners: vec![ListenerSpec {
            name: "inbound".into(),
            bind: "127.0.0.1:0".parse()?,
            direction: Direction::Inbound,
            protocol: Protocol::Http,
            service: None,
            identity: None,
            idle_timeout: Duration::from_secs(3600),
            max_connections: 1_000_000,
        }],
        drain_timeout: Duration::from_secs(1),
        access_log: false,
        identity_header: http::HeaderName::from_static("x-popmesh-peer-identity"),
        max_retry_body: 64 << 10,
        upstream_resumption: std::time::Duration::from_secs(600),
    };
    Lane::start(
        spec,
        pki.tls("appliances", "bench")?,
        table,
        Metrics::default(),
    )
}

/// The null hop: a TCP relay on the lane's CPU that copies bytes both ways and nothing else
/// (the client's TLS runs through it end to end to the service). Calling the service through
/// it pays what any proxy on another CPU pays (two more TCP legs, a cross-CPU wake-up each way,
/// two sends and two receives per request) and none of the lane's own work, so it shows how
/// much of the lane's added latency and CPU is this machine's cost of an extra hop.
struct NullHop {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

/// The null hop's thread name, for its CPU time.
const HOP_THREAD: &str = "null-hop";

impl NullHop {
    fn start(up: SocketAddr, core: usize) -> anyhow::Result<NullHop> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(HOP_THREAD.into())
            .spawn(move || {
                pin(core);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("null hop runtime");
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => break,
                            Ok((mut down, _)) = l.accept() => {
                                tokio::spawn(async move {
                                    let _ = down.set_nodelay(true);
                                    let Ok(mut upc) = tokio::net::TcpStream::connect(up).await
                                    else {
                                        return;
                                    };
                                    let _ = upc.set_nodelay(true);
                                    let _ = tokio::io::copy_bidirectional(&mut down, &mut upc).await;
                                });
                            }
                        }
                    }
                });
            })?;
        Ok(NullHop { addr, stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

type H2Client = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn h2_client(tls: &Arc<TlsState>) -> H2Client {
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls.client_config(&[])).clone())
        .https_only()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(conn)
}

/// One open-loop phase: `rate` requests/s for `duration` to `target`.
///
/// A pacer thread on the load CPU sends each request at its due time: tokio's timers have
/// millisecond resolution, so pacing with `sleep_until` would send requests in clumps at each
/// tick, up to 1 ms late, and both the latencies and the lane's work per request would measure
/// the clumping. The pacer sleeps with a 1 us timer slack and hands each request to the
/// runtime; each latency counts from the request's due time, so the pacer's own lateness
/// (returned as the third histogram) is in both phases alike.
async fn phase(
    clients: &[H2Client],
    target: SocketAddr,
    rate: u32,
    duration: Duration,
) -> (Histogram<u64>, u64, Histogram<u64>) {
    let total = u64::from(rate) * duration.as_secs();
    let gap = Duration::from_secs(1) / rate;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let handle = tokio::runtime::Handle::current();
    let clients = clients.to_vec();
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            // Inherits the main thread's CPU affinity (the load CPU).
            let _ = nix::sys::prctl::set_timerslack(1_000);
            let mut late = Histogram::<u64>::new(3).expect("sigfig 3");
            let start = Instant::now() + Duration::from_millis(50);
            for i in 0..total {
                let due = start + gap * i as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let _ = late.record((due.elapsed().as_micros() as u64).max(1));
                let c = clients[i as usize % clients.len()].clone();
                let tx = tx.clone();
                handle.spawn(async move {
                    let req = http::Request::get(format!("https://{target}/join"))
                        .body(Full::new(Bytes::new()))
                        .expect("static request");
                    let ok =
                        match tokio::time::timeout(Duration::from_secs(5), c.request(req)).await {
                            Ok(Ok(r)) if r.status() == 200 => r.into_body().collect().await.is_ok(),
                            _ => false,
                        };
                    let _ = tx.send(ok.then(|| due.elapsed().as_micros() as u64));
                });
            }
            late
        })
        .expect("spawn the pacer thread");
    let mut h = Histogram::<u64>::new(3).expect("sigfig 3");
    let mut errors = 0;
    while let Some(r) = rx.recv().await {
        match r {
            Some(us) => h.record(us.max(1)).expect("in range"),
            None => errors += 1,
        }
    }
    let late = pacer.join().expect("pacer thread");
    (h, errors, late)
}

/// [`phase`], and the share of a CPU the thread named `thread` spent over it.
async fn phase_on(
    clients: &[H2Client],
    target: SocketAddr,
    rate: u32,
    duration: Duration,
    thread: &str,
) -> (Histogram<u64>, u64, Histogram<u64>, f64) {
    let c0 = thread_cpu_ns(thread).unwrap_or(0);
    let t0 = Instant::now();
    let (h, e, late) = phase(clients, target, rate, duration).await;
    let spent = thread_cpu_ns(thread).unwrap_or(0).saturating_sub(c0) as f64;
    (h, e, late, spent / 1e9 / t0.elapsed().as_secs_f64())
}

/// On-CPU nanoseconds of this process's thread named `name`.
fn thread_cpu_ns(name: &str) -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let p = e.ok()?.path();
        if std::fs::read_to_string(p.join("comm")).ok()?.trim() == name {
            let s = std::fs::read_to_string(p.join("schedstat")).ok()?;
            return s.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 4096
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn pin(core: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("warning: could not pin to CPU {core}");
    }
}

fn ws_child(via_lane: bool, n: usize, lane_core: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pki = Pki::new()?;
    rt.block_on(async {
        let up = upstream(pki.tls("payment", "payment")?).await?;
        let lane = if via_lane {
            Some(start_lane(&pki, up, lane_core)?)
        } else {
            None
        };
        let target = lane.as_ref().map_or(up, |l| l.bound[0]);
        let user = pki.tls("user", "user")?;
        let connector = tokio_rustls::TlsConnector::from(user.client_config(&[ALPN_HTTP11]));
        // Warm the allocator with one socket, then measure N.
        let mut sockets = Vec::with_capacity(n + 1);
        let open = |connector: tokio_rustls::TlsConnector| async move {
            let tcp = tokio::net::TcpStream::connect(target).await?;
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
            let s = connector.connect(name, tcp).await?;
            let (mut ws, _) = tokio_tungstenite::client_async_with_config(
                format!("wss://{target}/ws"),
                s,
                Some(popmesh_signal_bench::ws::small_config()),
            )
            .await?;
            ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
                .await?;
            ws.next().await.context("closed")??;
            anyhow::Ok(ws)
        };
        sockets.push(open(connector.clone()).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_bytes();
        for _ in 0..n {
            sockets.push(open(connector.clone()).await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_bytes();
        println!(
            "{}",
            serde_json::json!({ "rss_delta": after.saturating_sub(before), "n": n })
        );
        drop(sockets);
        if let Some(l) = lane {
            l.stop();
        }
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Ws {
        via_lane,
        n,
        lane_core,
    }) = args.cmd
    {
        return ws_child(via_lane, n, lane_core);
    }
    pin(args.load_core);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pki = Pki::new()?;
    // Thread names are at most 15 bytes in /proc (the lane names its threads `signal-<cpu>`).
    let lane_thread = format!("signal-{}", args.lane_core);
    let summary = rt.block_on(async {
        let up = upstream(pki.tls("payment", "payment")?).await?;
        let lane = start_lane(&pki, up, args.lane_core)?;
        let user = pki.tls("user", "user")?;
        let clients: Vec<H2Client> = (0..args.connections).map(|_| h2_client(&user)).collect();
        let hop = if args.lane_only {
            None
        } else {
            Some(NullHop::start(up, args.lane_core)?)
        };
        // Warm every path (connections, TLS sessions, pools).
        if let Some(hop) = &hop {
            let _ = phase(&clients, up, 200, Duration::from_secs(1)).await;
            let _ = phase(&clients, hop.addr, 200, Duration::from_secs(1)).await;
        }
        let _ = phase(&clients, lane.bound[0], 200, Duration::from_secs(1)).await;
        if args.lane_only {
            // The caller starts its own measurement on this line.
            eprintln!("lane-only: load starts");
        }
        let dur = Duration::from_secs(args.duration);
        let (mut d50, mut d99, mut l50, mut l99, mut cpu) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut h50, mut h99, mut hop_cpu) = (vec![], vec![], vec![]);
        let (mut lane_share, mut lane_ok, mut lane_rps) = (vec![], 0u64, vec![]);
        let mut errors = 0;
        // The pacer's lateness (send time minus due time), P99 per phase: part of every
        // latency here, in every phase alike.
        let mut pacer99 = vec![];
        let per_krps = |share: f64| share * 100.0 / (f64::from(args.rate) / 1000.0);
        for round in 0..args.rounds {
            let mut line = String::new();
            if let Some(hop) = &hop {
                let (h, e, late) = phase(&clients, up, args.rate, dur).await;
                errors += e;
                pacer99.push(late.value_at_quantile(0.99) as f64);
                d50.push(h.value_at_quantile(0.5) as f64);
                d99.push(h.value_at_quantile(0.99) as f64);
                let (hh, e, late, share) =
                    phase_on(&clients, hop.addr, args.rate, dur, HOP_THREAD).await;
                errors += e;
                pacer99.push(late.value_at_quantile(0.99) as f64);
                h50.push(hh.value_at_quantile(0.5) as f64);
                h99.push(hh.value_at_quantile(0.99) as f64);
                hop_cpu.push(per_krps(share));
                line = format!(
                    "direct P50 {} us P99 {} us | null hop P50 {} us P99 {} us, CPU {:.2}% | ",
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99),
                    hh.value_at_quantile(0.5),
                    hh.value_at_quantile(0.99),
                    share * 100.0
                );
            }
            let (h2, e, late, share) =
                phase_on(&clients, lane.bound[0], args.rate, dur, &lane_thread).await;
            pacer99.push(late.value_at_quantile(0.99) as f64);
            errors += e;
            l50.push(h2.value_at_quantile(0.5) as f64);
            l99.push(h2.value_at_quantile(0.99) as f64);
            cpu.push(per_krps(share));
            lane_share.push(share * 100.0);
            lane_ok += h2.len();
            lane_rps.push(h2.len() as f64 / dur.as_secs_f64());
            if !args.json {
                eprintln!(
                    "round {round}: {line}lane P50 {} us P99 {} us, CPU {:.2}% ({} requests)",
                    h2.value_at_quantile(0.5),
                    h2.value_at_quantile(0.99),
                    share * 100.0,
                    h2.len(),
                );
            }
        }
        if let Some(hop) = hop {
            hop.stop();
        }
        lane.stop();
        if args.lane_only {
            let (ml50, ml99) = (median(l50), median(l99));
            return anyhow::Ok(serde_json::json!({
                "mode": "lane-only",
                "rate": args.rate,
                "duration_s": args.duration,
                "rounds": args.rounds,
                "connections": args.connections,
                "lane_core": args.lane_core,
                "load_core": args.load_core,
                "requests_ok": lane_ok,
                "errors": errors,
                "completed_rps": median(lane_rps),
                "lane_p50_us": ml50,
                "lane_p99_us": ml99,
                "lane_cpu_percent": median(lane_share),
                "lane_cpu_percent_per_1000_rps": median(cpu),
                "pacer_late_p99_us": median(pacer99),
            }));
        }
        let (md50, md99, ml50, ml99) = (median(d50), median(d99), median(l50), median(l99));
        let (mh50, mh99) = (median(h50), median(h99));
        anyhow::Ok(serde_json::json!({
            "null_hop_p50_us": mh50,
            "null_hop_p99_us": mh99,
            "null_hop_added_p50_us": mh50 - md50,
            "null_hop_added_p99_us": mh99 - md99,
            "null_hop_cpu_percent_per_1000_rps": median(hop_cpu),
            "rate": args.rate,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "errors": errors,
            "direct_p50_us": md50,
            "direct_p99_us": md99,
            "lane_p50_us": ml50,
            "lane_p99_us": ml99,
            "added_p50_us": ml50 - md50,
            "added_p99_us": ml99 - md99,
            "lane_cpu_percent_per_1000_rps": median(cpu),
            "pacer_late_p99_us": median(pacer99),
        }))
    })?;
    let mut summary = summary;
    if args.websockets > 0 && !args.lane_only {
        let exe = std::env::current_exe()?;
        let run = |via_lane: bool| -> anyhow::Result<u64> {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args([
                "ws",
                "--n",
                &args.websockets.to_string(),
                "--lane-core",
                &args.lane_core.to_string(),
            ]);
            if via_lane {
                cmd.arg("--via-lane");
            }
            let out = cmd.output()?;
            anyhow::ensure!(
                out.status.success(),
                "ws child: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            v["rss_delta"].as_u64().context("rss_delta")
        };
        let direct = run(false)?;
        let lane = run(true)?;
        let per = (lane as f64 - direct as f64) / args.websockets as f64;
        summary["websockets"] = serde_json::json!(args.websockets);
        summary["ws_rss_direct_bytes"] = serde_json::json!(direct);
        summary["ws_rss_lane_bytes"] = serde_json::json!(lane);
        summary["lane_bytes_per_idle_websocket"] = serde_json::json!(per);
    }
    if !args.json && !args.lane_only {
        eprintln!(
            "added latency at {} req/s: P50 {:+} us, P99 {:+} us (medians of {} rounds); lane CPU {:.2}% of a core per 1,000 req/s",
            args.rate,
            summary["added_p50_us"],
            summary["added_p99_us"],
            args.rounds,
            summary["lane_cpu_percent_per_1000_rps"].as_f64().unwrap_or(f64::NAN)
        );
        eprintln!(
            "null hop (a byte-copying TCP relay on the lane's CPU): added P50 {:+} us, P99 {:+} us; CPU {:.2}% of a core per 1,000 req/s",
            summary["null_hop_added_p50_us"],
            summary["null_hop_added_p99_us"],
            summary["null_hop_cpu_percent_per_1000_rps"].as_f64().unwrap_or(f64::NAN)
        );
        eprintln!(
            "load generator: requests sent at most {} us after their due time (P99, median of phases)",
            summary["pacer_late_p99_us"]
        );
        if let Some(per) = summary["lane_bytes_per_idle_websocket"].as_f64() {
            eprintln!(
                "memory per idle WebSocket through the lane: {:.0} bytes ({:.1} KiB)",
                per,
                per / 1024.0
            );
        }
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
