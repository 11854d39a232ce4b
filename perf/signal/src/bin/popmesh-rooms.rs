//! `popmesh-rooms`: the room service and the user simulator of the capacity harness's
//! control-plane scenario (the article's "100,000 users entering live rooms at once").
//!
//! - `serve`: the room service behind the mesh. Mutual TLS with an SVID and trust bundle from
//!   PEM files, HTTP/1.1 and HTTP/2 (ALPN). `POST <join-path>` (query or form body names
//!   `user` and `room`) answers `{"room", "user", "members", "caller"}`, `caller` being the
//!   identity the signaling lane passes in `x-popmesh-peer-identity` (empty when called
//!   directly). `GET <ws-path>` upgrades to a WebSocket that echoes and stays open. Prints
//!   `listening <addr>` once bound; stops on SIGTERM. SIGUSR1 toggles a failing mode in which
//!   every join is answered 503 (the stability scenario's fail-upstream fault).
//! - `users`: N simulated users against one address (the lane or the service). Each opens a
//!   new TCP connection from its own loopback source address (127.0.0.2..=254), does the TLS
//!   handshake with the user SVID, joins its room, upgrades the same connection to a WebSocket
//!   and holds it open until the phase ends. Arrivals are open loop (`--rate`, `--ramp`),
//!   bounded by `--duration`; each user by `--timeout`. Join latency (from the scheduled
//!   arrival to the join's answer, so a saturated target shows up instead of slowing the
//!   arrivals) and the join request alone go to HdrHistogram interval logs and a JSON summary
//!   (`popmesh_signal_bench::rooms::UsersSummary`).
//!
//! Both run one single-threaded tokio runtime, pinned with `--core`.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use popmesh_perf::hlog::IntervalLog;
use popmesh_perf::stats::new_latency_histogram;
use popmesh_perf::sys::monotonic_ns;
use popmesh_signal::tls::{Identity, TlsState, TrustBundle, ALPN_H2, ALPN_HTTP11};
use popmesh_signal_bench::rooms::{
    arrival_s, parse_join, room_of, source_ip, user_name, Failure, LatencySummary, UsersSummary,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Room service and user simulator for the control-plane capacity scenario"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The room service (mTLS, HTTP/1.1 and HTTP/2, join + WebSocket).
    Serve(ServeArgs),
    /// N simulated users: connect, TLS, join, WebSocket held open.
    Users(UsersArgs),
}

#[derive(Args, Debug)]
struct TlsArgs {
    /// SVID certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Trust bundle (PEM) of the trust domain.
    #[arg(long)]
    ca: PathBuf,
    /// Trust domain of the SVIDs.
    #[arg(long)]
    trust_domain: String,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Path of the join call.
    #[arg(long, default_value = "/rooms/join")]
    join_path: String,
    /// Path of the WebSocket.
    #[arg(long, default_value = "/rooms/ws")]
    ws_path: String,
    /// CPU to pin the runtime to.
    #[arg(long)]
    core: Option<usize>,
    /// Seconds after which the service stops by itself (a bound for runs that lose their
    /// harness).
    #[arg(long, default_value_t = 3600.0)]
    max_runtime: f64,
    /// TLS 1.3 session tickets sent after each full handshake, so that callers (the lane's
    /// upstream pools) can resume; most services send 2 by default. 0 forces a full handshake
    /// on every connection.
    #[arg(long, default_value_t = 2)]
    session_tickets: usize,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args, Debug)]
struct UsersArgs {
    /// Where the users connect (the signaling lane's listener or the service).
    #[arg(long)]
    target: SocketAddr,
    /// Users.
    #[arg(long)]
    users: u64,
    /// Rooms they spread over (round robin).
    #[arg(long, default_value_t = 1000)]
    rooms: u64,
    /// Arrivals per second once ramped up.
    #[arg(long)]
    rate: f64,
    /// Seconds the arrival rate takes to grow from 0 to --rate.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// Seconds after the ramp during which users may still arrive; later ones are not started.
    #[arg(long)]
    duration: f64,
    /// Seconds every WebSocket is held open after the last user arrived and joined (or timed
    /// out).
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Seconds a user may take to connect, handshake, join and upgrade.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Path of the join call.
    #[arg(long, default_value = "/rooms/join")]
    join_path: String,
    /// Path of the WebSocket.
    #[arg(long, default_value = "/rooms/ws")]
    ws_path: String,
    /// CPU to pin the runtime to.
    #[arg(long)]
    core: Option<usize>,
    /// Connect from 127.0.0.1's kernel-chosen address instead of spreading users over
    /// 127.0.0.2..=254.
    #[arg(long)]
    no_source_spread: bool,
    /// Write the JSON summary here.
    #[arg(long)]
    json: PathBuf,
    /// Interval log (HdrHistogram V2, ns) of connect + handshake + join.
    #[arg(long)]
    hlog: Option<PathBuf>,
    /// Interval log of the join request alone.
    #[arg(long)]
    hlog_request: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Users(a) => users(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popmesh-rooms: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_tls(a: &TlsArgs) -> anyhow::Result<Arc<TlsState>> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("read {}", p.display()));
    let identity = Identity::from_pem(&read(&a.cert)?, &read(&a.key)?)
        .with_context(|| format!("SVID {} / {}", a.cert.display(), a.key.display()))?;
    let bundle = TrustBundle::from_pem(&a.trust_domain, &read(&a.ca)?)
        .with_context(|| format!("trust bundle {}", a.ca.display()))?;
    Ok(TlsState::new(identity, bundle)?)
}

fn pin(core: Option<usize>) -> anyhow::Result<()> {
    if let Some(c) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            bail!("cannot pin to CPU {c}: is it in this process's CPU set (taskset -p $$)?");
        }
    }
    Ok(())
}

/// Raises RLIMIT_NOFILE's soft limit to `want` (and the hard limit too when allowed, i.e. as
/// root); returns the soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    let to = want.min(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, to, hard).is_ok() {
        to
    } else {
        soft
    }
}

// ---- serve ----------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RoomState {
    members: Mutex<HashMap<String, u64>>,
    joins: AtomicU64,
    /// Answer joins 503 (toggled by SIGUSR1).
    failing: std::sync::atomic::AtomicBool,
    open_ws: AtomicU64,
    peak_ws: AtomicU64,
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    pin(a.core)?;
    let nofile = raise_nofile(1 << 20);
    let tls = load_tls(&a.tls)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = match a.listen {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket
            .bind(a.listen)
            .with_context(|| format!("bind {}", a.listen))?;
        // Arrivals come in bursts; a short backlog would refuse them.
        let listener = socket.listen(8192)?;
        let addr = listener.local_addr()?;
        println!("listening {addr} (nofile {nofile})");
        let mut config = (*tls.server_config(&[ALPN_H2, ALPN_HTTP11])).clone();
        config.send_tls13_tickets = a.session_tickets;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let state = Arc::new(RoomState::default());
        let paths = Arc::new((a.join_path, a.ws_path));
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        let limit = tokio::time::sleep(Duration::from_secs_f64(a.max_runtime.max(1.0)));
        tokio::pin!(limit);
        let mut accept_errors = 0u64;
        loop {
            tokio::select! {
                                _ = term.recv() => break,
                _ = usr1.recv() => {
                    let failing = !state.failing.fetch_xor(true, Ordering::Relaxed);
                    eprintln!("popmesh-rooms serve: SIGUSR1: joins now answer {}", if failing { "503" } else { "normally" });
                }
                () = &mut limit => {
                    eprintln!("popmesh-rooms serve: --max-runtime reached, stopping");
                    break;
                }
                accepted = listener.accept() => {
                    let (tcp, _) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            accept_errors += 1;
                            if accept_errors == 1 {
                                eprintln!("popmesh-rooms serve: accept: {e} ({})", Failure::of_io(&e).hint());
                            }
                            // EMFILE: wait for connections to close instead of spinning.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let state = state.clone();
                    let paths = paths.clone();
                    tokio::spawn(async move {
                        let Ok(s) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let svc = hyper::service::service_fn(move |req| {
                            handle(req, state.clone(), paths.clone())
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(s), svc)
                            .await;
                    });
                }
            }
        }
        eprintln!(
            "popmesh-rooms serve: stopped; joins {} rooms {} websockets open {} peak {} accept errors {accept_errors}",
            state.joins.load(Ordering::Relaxed),
            state.members.lock().map(|m| m.len()).unwrap_or(0),
            state.open_ws.load(Ordering::Relaxed),
            state.peak_ws.load(Ordering::Relaxed),
        );
        anyhow::Ok(())
    })
}

fn json_response(status: http::StatusCode, body: serde_json::Value) -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(
    mut req: http::Request<hyper::body::Incoming>,
    state: Arc<RoomState>,
    paths: Arc<(String, String)>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    let (join_path, ws_path) = (&paths.0, &paths.1);
    let path = req.uri().path().to_string();
    if path == *ws_path && popmesh_signal_bench::ws::is_upgrade(&req) {
        let st = state.clone();
        return Ok(popmesh_signal_bench::ws::accept(
            &mut req,
            move |mut ws| async move {
                let open = st.open_ws.fetch_add(1, Ordering::Relaxed) + 1;
                st.peak_ws.fetch_max(open, Ordering::Relaxed);
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
                st.open_ws.fetch_sub(1, Ordering::Relaxed);
            },
        ));
    }
    if path == *join_path && state.failing.load(Ordering::Relaxed) {
        return Ok(json_response(
            http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "failing on purpose (SIGUSR1 toggles it)" }),
        ));
    }
    if path != *join_path {
        return Ok(json_response(
            http::StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no such path {path}; POST {join_path} or GET {ws_path} (WebSocket)") }),
        ));
    }
    if req.method() != http::Method::POST {
        return Ok(json_response(
            http::StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "a join is a POST" }),
        ));
    }
    let caller = req
        .headers()
        .get("x-popmesh-peer-identity")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let query = req.uri().query().map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let join = match parse_join(query.as_deref(), &body) {
        Ok(j) => j,
        Err(e) => {
            return Ok(json_response(
                http::StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": e }),
            ))
        }
    };
    let members = {
        let mut m = state.members.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(join.room.clone()).or_insert(0);
        *n += 1;
        *n
    };
    state.joins.fetch_add(1, Ordering::Relaxed);
    Ok(json_response(
        http::StatusCode::OK,
        serde_json::json!({
            "room": join.room,
            "user": join.user,
            "members": members,
            "caller": caller,
        }),
    ))
}

// ---- users ----------------------------------------------------------------------------------

type UserSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

struct UsersConfig {
    target: SocketAddr,
    rooms: u64,
    join_path: String,
    ws_path: String,
    spread: bool,
    connector: tokio_rustls::TlsConnector,
    timeout: Duration,
}

#[derive(Default)]
struct Tally {
    attempted: u64,
    joined: u64,
    websockets_opened: u64,
    open: u64,
    in_flight: u64,
    failed: BTreeMap<Failure, u64>,
    total: Option<Histogram<u64>>,
    request: Option<Histogram<u64>>,
    total_log: Option<IntervalLog>,
    request_log: Option<IntervalLog>,
}

impl Tally {
    fn fail(&mut self, f: Failure, user: u64, detail: &str) {
        let n = self.failed.entry(f).or_insert(0);
        *n += 1;
        if *n == 1 {
            eprintln!(
                "popmesh-rooms users: user {user}: {}: {detail} ({})",
                f.name(),
                f.hint()
            );
        }
    }
}

fn users(a: UsersArgs) -> anyhow::Result<()> {
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        bail!(
            "--rate {}: must be a positive number of users per second",
            a.rate
        );
    }
    if !(a.duration > 0.0 && a.duration.is_finite() && a.ramp >= 0.0 && a.ramp.is_finite()) {
        bail!("--duration must be > 0 and --ramp >= 0 seconds");
    }
    pin(a.core)?;
    // One descriptor per user plus a margin for the runtime, the logs and TLS.
    let want = a.users + 256;
    let nofile = raise_nofile(want);
    if nofile < want {
        eprintln!(
            "popmesh-rooms users: warning: RLIMIT_NOFILE is {nofile}, {} users need about {want}; \
             users past the limit fail as fd_limit (raise it with ulimit -n or run as root)",
            a.users
        );
    }
    let tls = load_tls(&a.tls)?;
    let mut client = (*tls.client_config(&[ALPN_HTTP11])).clone();
    // Every simulated user is a new device: no TLS session to resume.
    client.resumption = tokio_rustls::rustls::client::Resumption::disabled();
    let comment = |what: &str| {
        format!("popmesh-rooms users: {what} in ns from each user's scheduled arrival, one interval per second, target {}", a.target)
    };
    let tally = Rc::new(RefCell::new(Tally {
        total: Some(new_latency_histogram()),
        request: Some(new_latency_histogram()),
        total_log: a
            .hlog
            .as_ref()
            .map(|p| IntervalLog::create(p, &comment("connect + TLS handshake + join")))
            .transpose()?,
        request_log: a
            .hlog_request
            .as_ref()
            .map(|p| IntervalLog::create(p, &comment("join request alone")))
            .transpose()?,
        ..Tally::default()
    }));
    let cfg = Rc::new(UsersConfig {
        target: a.target,
        rooms: a.rooms,
        join_path: a.join_path.clone(),
        ws_path: a.ws_path.clone(),
        spread: !a.no_source_spread && a.target.ip().is_loopback() && a.target.is_ipv4(),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        timeout: Duration::from_secs_f64(a.timeout.max(0.001)),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run_users(a, nofile, cfg, tally))
}

async fn run_users(
    a: UsersArgs,
    nofile: u64,
    cfg: Rc<UsersConfig>,
    tally: Rc<RefCell<Tally>>,
) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let start_mono = monotonic_ns();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let open_over_time = Rc::new(RefCell::new(Vec::<[f64; 2]>::new()));
    // Once a second: roll the interval logs, sample the open WebSockets, say where we are.
    let ticker = {
        let tally = tally.clone();
        let series = open_over_time.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let t = start.elapsed();
                let mut g = tally.borrow_mut();
                let elapsed_ns = t.as_nanos() as u64;
                let mut err = None;
                if let Some(l) = g.total_log.as_mut() {
                    err = l.roll(elapsed_ns).err();
                }
                if let Some(l) = g.request_log.as_mut() {
                    err = err.or(l.roll(elapsed_ns).err());
                }
                if let Some(e) = err {
                    eprintln!("popmesh-rooms users: interval log: {e:#}");
                }
                series.borrow_mut().push([t.as_secs_f64(), g.open as f64]);
                let failed: u64 = g.failed.values().sum();
                eprintln!(
                    "t={:.0}s started={} joined={} open={} in_flight={} failed={failed}",
                    t.as_secs_f64(),
                    g.attempted,
                    g.joined,
                    g.open,
                    g.in_flight
                );
            }
        })
    };
    let last_arrival = a.ramp + a.duration;
    let mut not_started = 0;
    let mut handles = Vec::new();
    for i in 0..a.users {
        let due_s = arrival_s(i, a.rate, a.ramp);
        if due_s > last_arrival {
            not_started = a.users - i;
            eprintln!(
                "popmesh-rooms users: {not_started} users not started: at {} users/s with a {} s ramp they would arrive after --ramp + --duration = {last_arrival} s",
                a.rate, a.ramp
            );
            break;
        }
        let due = start + Duration::from_secs_f64(due_s);
        // tokio's timers have millisecond resolution, so arrivals leave up to 1 ms late, in
        // clumps per tick; each user's latency counts from `due`, so that lateness is charged
        // against the system (conservative), not hidden. (popmesh-signal-bench, which measures
        // CPU per request, paces from a thread of its own instead.)
        tokio::time::sleep_until(due).await;
        {
            let mut g = tally.borrow_mut();
            g.attempted += 1;
            g.in_flight += 1;
        }
        handles.push(tokio::task::spawn_local(user(
            i,
            due.into_std(),
            cfg.clone(),
            tally.clone(),
            stop_rx.clone(),
        )));
    }
    let arrivals_s = start.elapsed().as_secs_f64();
    // Every user is joined, failed or timed out within --timeout of its arrival.
    let settle = tokio::time::Instant::now() + cfg.timeout + Duration::from_secs(1);
    while tally.borrow().in_flight > 0 && tokio::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(a.hold.max(0.0))).await;
    let open_at_end = tally.borrow().open;
    let elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    ticker.abort();
    let mut g = tally.borrow_mut();
    let elapsed_ns = elapsed.as_nanos() as u64;
    if let Some(l) = g.total_log.as_mut() {
        l.close(elapsed_ns)?;
    }
    if let Some(l) = g.request_log.as_mut() {
        l.close(elapsed_ns)?;
    }
    let summary = UsersSummary {
        users: a.users,
        attempted: g.attempted,
        joined: g.joined,
        websockets_opened: g.websockets_opened,
        open_at_end,
        failed: g
            .failed
            .iter()
            .map(|(f, n)| (f.name().to_string(), *n))
            .collect(),
        not_started,
        start_monotonic_ns: start_mono,
        arrivals_s,
        elapsed_s: elapsed.as_secs_f64(),
        join_total: g.total.as_ref().and_then(LatencySummary::of),
        join_request: g.request.as_ref().and_then(LatencySummary::of),
        open_over_time: open_over_time.borrow().clone(),
        nofile_limit: nofile,
    };
    drop(g);
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(&a.json, text + "\n").with_context(|| format!("write {}", a.json.display()))?;
    eprintln!(
        "popmesh-rooms users: {} attempted, {} joined, {} open at the end, failed {:?}; join P99 {} us",
        summary.attempted,
        summary.joined,
        summary.open_at_end,
        summary.failed,
        summary.join_total.map_or(f64::NAN, |l| l.p99_us)
    );
    // Closing tens of thousands of sockets is the kernel's work; do not wait for the tasks.
    drop(handles);
    Ok(())
}

async fn user(
    i: u64,
    due: Instant,
    cfg: Rc<UsersConfig>,
    tally: Rc<RefCell<Tally>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let outcome = tokio::time::timeout(cfg.timeout, join(i, due, &cfg, &tally)).await;
    let ws = {
        let mut g = tally.borrow_mut();
        g.in_flight -= 1;
        match outcome {
            Err(_) => {
                g.fail(Failure::Timeout, i, "no answer in time");
                return;
            }
            Ok(Err((f, detail))) => {
                g.fail(f, i, &detail);
                return;
            }
            Ok(Ok(ws)) => {
                g.websockets_opened += 1;
                g.open += 1;
                ws
            }
        }
    };
    let mut ws = ws;
    let closed_early = tokio::select! {
        _ = stop.changed() => false,
        m = ws.next() => !matches!(m, Some(Ok(_))) || !*stop.borrow(),
    };
    let mut g = tally.borrow_mut();
    g.open -= 1;
    if closed_early {
        g.fail(
            Failure::ClosedEarly,
            i,
            "the WebSocket closed before the phase ended",
        );
    }
}

/// Connect, TLS, join, WebSocket upgrade. Records the join's latencies when it succeeds.
async fn join(
    i: u64,
    due: Instant,
    cfg: &UsersConfig,
    tally: &Rc<RefCell<Tally>>,
) -> Result<UserSocket, (Failure, String)> {
    let io = |f: Failure| move |e: std::io::Error| (f, e.to_string());
    let socket =
        tokio::net::TcpSocket::new_v4().map_err(|e| (Failure::of_io(&e), e.to_string()))?;
    if cfg.spread {
        let from = SocketAddr::new(IpAddr::V4(source_ip(i)), 0);
        socket
            .bind(from)
            .map_err(|e| (Failure::of_io(&e), format!("bind {from}: {e}")))?;
    }
    let tcp = socket
        .connect(cfg.target)
        .await
        .map_err(|e| (Failure::of_io(&e), format!("connect {}: {e}", cfg.target)))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::IpAddress(cfg.target.ip().into());
    let mut s = cfg
        .connector
        .connect(name, tcp)
        .await
        .map_err(io(Failure::Tls))?;
    let (user, room) = (user_name(i), room_of(i, cfg.rooms));
    let request_start = Instant::now();
    s.write_all(
        format!(
            "POST {}?user={user}&room={room} HTTP/1.1\r\nhost: rooms\r\ncontent-length: 0\r\n\r\n",
            cfg.join_path
        )
        .as_bytes(),
    )
    .await
    .map_err(io(Failure::JoinIo))?;
    let (status, body) = read_response(&mut s).await.map_err(io(Failure::JoinIo))?;
    let request_ns = request_start.elapsed().as_nanos() as u64;
    let total_ns = due.elapsed().as_nanos() as u64;
    if status != 200 || !body.contains(&format!("\"room\":\"{room}\"")) {
        return Err((
            Failure::JoinStatus,
            format!("join answered {status}: {}", body.trim()),
        ));
    }
    {
        let mut g = tally.borrow_mut();
        g.joined += 1;
        if let Some(h) = g.total.as_mut() {
            h.saturating_record(total_ns.max(1));
        }
        if let Some(h) = g.request.as_mut() {
            h.saturating_record(request_ns.max(1));
        }
        if let Some(l) = g.total_log.as_mut() {
            l.record(total_ns);
        }
        if let Some(l) = g.request_log.as_mut() {
            l.record(request_ns);
        }
    }
    let url = format!("ws://rooms{}?user={user}&room={room}", cfg.ws_path);
    // Small buffers: tens of thousands of simulated users must fit beside the appliance.
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        s,
        Some(popmesh_signal_bench::ws::small_config()),
    )
    .await
    .map_err(|e| (Failure::WebSocket, e.to_string()))?;
    // One round trip proves the socket is open end to end (through the lane's splice too).
    ws.send(Message::text("hello"))
        .await
        .map_err(|e| (Failure::WebSocket, e.to_string()))?;
    match ws.next().await {
        Some(Ok(_)) => Ok(ws),
        other => Err((
            Failure::WebSocket,
            format!("no echo on the WebSocket: {other:?}"),
        )),
    }
}

/// Reads one HTTP/1.1 response with a `content-length` body: (status, body). Reads no byte
/// past the body, so the connection can be upgraded next.
async fn read_response<S: AsyncReadExt + Unpin>(s: &mut S) -> std::io::Result<(u16, String)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 16 << 10 {
            return Err(bad("response head over 16 KiB"));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed before the response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Small answers only: read until the last chunk, then strip the chunk framing.
        while !buf[head_end..].ends_with(b"0\r\n\r\n") {
            if buf.len() > head_end + (1 << 20) {
                return Err(bad("chunked response body over 1 MiB"));
            }
            let n = s.read(&mut chunk[..1]).await?;
            if n == 0 {
                return Err(bad("connection closed inside the chunked body"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let raw = String::from_utf8_lossy(&buf[head_end..]).to_string();
        let mut body = String::new();
        let mut rest = raw.as_str();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 || after.len() < size {
                break;
            }
            body.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        return Ok((status, body));
    }
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("response without content-length"))?;
    if length > 1 << 20 {
        return Err(bad("response body over 1 MiB"));
    }
    while buf.len() < head_end + length {
        let n = s
            .read(&mut chunk[..(head_end + length - buf.len()).min(512)])
            .await?;
        if n == 0 {
            return Err(bad("connection closed inside the response body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    Ok((status, body))
}
