//! `popmesh-impair`: a bounded UDP relay that adds delay, jitter and loss on a schedule, for
//! stability tests on kernels without `sch_netem`. The decisions live in
//! [`popmesh_perf::impair`]; this driver only moves datagrams and keeps time.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::MsgFlags;
use popmesh_perf::args::{check_target, parse_secs};
use popmesh_perf::impair::{Decision, HoldQueue, ImpairReport, Impairer, Schedule, WindowReport};
use popmesh_perf::sys::{
    bind_udp, grow_receive_buffer, monotonic_ns, recv_batch, RecvBuffers, RecvHeaders, MAX_BATCH,
};

/// Exit status for unusable arguments (sysexits EX_USAGE), before any socket.
const EXIT_USAGE: u8 = 64;
/// Receive slot: a jumbo frame.
const SLOT_LEN: usize = 9_216;
/// Receive buffer asked for on each listen socket.
const RCVBUF_BYTES: usize = 8 << 20;
/// Longest single poll, so the deadline is noticed.
const POLL_SLICE_NS: i64 = 100_000_000;
/// Batches drained from one socket before the next one gets its turn.
const DRAIN_BATCHES: usize = 16;

#[derive(Debug, Parser)]
#[command(
    name = "popmesh-impair",
    version,
    about = "Bounded UDP relay that adds delay, jitter and loss on a schedule",
    long_about = "Bounded UDP relay that adds delay, jitter and random loss on a schedule, for \
        stability tests on kernels without sch_netem. Each --route LISTEN=TO receives on LISTEN \
        and sends to TO from one connected socket (so a receiver that latches its sender sees \
        one source per route). A schedule window `FROM..TO delay_ms=D jitter_ms=J \
        loss_percent=P` (seconds after --epoch-monotonic-ns, else after start) holds each \
        datagram D +- uniform(J) ms (jitter reorders, as netem does) and drops P% of them \
        (seeded, reproducible). Prints `listening ADDR` per route once bound, stops after \
        --duration and writes per-window counters as JSON. Argument errors exit with status 64."
)]
struct Cli {
    /// `LISTEN=TO` (repeatable): receive on LISTEN, forward to TO.
    #[arg(long = "route", value_name = "LISTEN=TO", required = true, value_parser = parse_route)]
    routes: Vec<(SocketAddr, SocketAddr)>,
    /// Schedule windows inline, `;`-separated (repeatable), e.g. `5..10 delay_ms=50 jitter_ms=20`.
    #[arg(long = "window", value_name = "SPEC")]
    windows: Vec<String>,
    /// Schedule file: one window per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    schedule: Option<PathBuf>,
    /// CLOCK_MONOTONIC ns that schedule time 0 refers to (default: the relay's start), so the
    /// harness can line the windows up with its own fault times.
    #[arg(long, value_name = "NS")]
    epoch_monotonic_ns: Option<u64>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Duration,
    /// Seed of the loss and jitter draws.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Most datagrams held at once; beyond, arrivals are dropped and counted as queue_full.
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    queue_limit: u32,
    /// Pin the relay thread to this CPU core.
    #[arg(long, value_name = "N")]
    core: Option<usize>,
    /// Write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Allow non-loopback destinations (addresses inside a test network namespace).
    #[arg(long)]
    allow_remote: bool,
}

fn parse_route(text: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (listen, to) = text.split_once('=').ok_or_else(|| {
        format!("`{text}` is not LISTEN=TO, e.g. 127.0.0.1:47000=127.0.0.1:46000")
    })?;
    let addr = |what: &str, a: &str| -> Result<SocketAddr, String> {
        a.trim()
            .parse()
            .map_err(|_| format!("{what} `{a}` is not a socket address (ip:port)"))
    };
    Ok((addr("listen", listen)?, addr("destination", to)?))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let schedule = match validate(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("popmesh-impair: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&cli, schedule) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popmesh-impair: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn core_id(core: usize) -> anyhow::Result<core_affinity::CoreId> {
    let cores = core_affinity::get_core_ids().context("cannot read this process's CPU affinity")?;
    match cores.iter().find(|c| c.id == core) {
        Some(c) => Ok(*c),
        None => bail!(
            "--core {core}: not among the cores this process may use ({:?})",
            cores.iter().map(|c| c.id).collect::<Vec<_>>()
        ),
    }
}

fn validate(cli: &Cli) -> anyhow::Result<Schedule> {
    for (i, (_, to)) in cli.routes.iter().enumerate() {
        check_target(*to, cli.allow_remote).with_context(|| format!("--route[{i}]"))?;
    }
    if let Some(core) = cli.core {
        core_id(core)?;
    }
    let mut text = cli.windows.join(";");
    if let Some(path) = &cli.schedule {
        let file = std::fs::read_to_string(path)
            .with_context(|| format!("read --schedule {}", path.display()))?;
        text.push('\n');
        text.push_str(&file);
    }
    Schedule::parse(&text).context("--window / --schedule")
}

fn run(cli: &Cli, schedule: Schedule) -> anyhow::Result<()> {
    if let Some(core) = cli.core {
        if !core_affinity::set_for_current(core_id(core)?) {
            bail!("--core {core}: sched_setaffinity failed");
        }
    }
    let mut listeners = Vec::with_capacity(cli.routes.len());
    let mut outs = Vec::with_capacity(cli.routes.len());
    let mut bound = Vec::with_capacity(cli.routes.len());
    for (listen, to) in &cli.routes {
        let socket = UdpSocket::bind(listen).with_context(|| format!("bind {listen}"))?;
        socket.set_nonblocking(true).context("O_NONBLOCK")?;
        grow_receive_buffer(&socket, RCVBUF_BYTES).context("SO_RCVBUF")?;
        bound.push(socket.local_addr().context("local address")?);
        listeners.push(socket);
        let local = match to {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let out = bind_udp(local, false).with_context(|| format!("bind {local}"))?;
        out.connect(to)
            .with_context(|| format!("connect to {to}"))?;
        // A destination that is down (appliance restarting) answers ICMP port unreachable; the
        // next send then fails with ECONNREFUSED and is counted, never fatal.
        outs.push(out);
    }
    {
        let mut stdout = std::io::stdout().lock();
        for addr in &bound {
            writeln!(stdout, "listening {addr}").context("stdout")?;
        }
        stdout.flush().context("stdout")?;
    }

    let start_ns = monotonic_ns();
    let epoch_ns = cli.epoch_monotonic_ns.unwrap_or(start_ns);
    let rel = |now: u64| now as i64 - epoch_ns as i64;
    let deadline_ns =
        start_ns.saturating_add(u64::try_from(cli.duration.as_nanos()).unwrap_or(u64::MAX));
    let mut impairer = Impairer::new(schedule, cli.seed);
    let mut queue = HoldQueue::new(cli.queue_limit as usize);
    let mut headers = RecvHeaders::new();
    let mut buffers = RecvBuffers::new(SLOT_LEN);
    let mut truncated = 0u64;
    let mut poll_fds: Vec<PollFd<'_>> = listeners
        .iter()
        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    // ~1-3 k pps in the harness: one send per datagram is far below a core's budget.
    let send = |outs: &[UdpSocket], route: usize, bytes: &[u8]| -> bool {
        outs.get(route).is_some_and(|o| o.send(bytes).is_ok())
    };
    loop {
        let now = monotonic_ns();
        if now >= deadline_ns {
            break;
        }
        while queue.release_due(rel(now), |route, window, bytes| {
            let ok = send(&outs, route, bytes);
            impairer.record_send(window, ok);
        }) {}
        let until_deadline = (deadline_ns - now) as i64;
        let until_release = queue
            .next_release_ns()
            .map_or(i64::MAX, |t| (t - rel(now)).max(0));
        let wait_ns = until_deadline.min(until_release).min(POLL_SLICE_NS);
        let wait_ms = wait_ns / 1_000_000;
        if wait_ms == 0 && wait_ns > 0 {
            // poll has ms granularity; a sub-ms wait for a release is a short sleep instead
            // (nanosleep overshoots by ~50 us, well inside a ms of jitter).
            let ready = poll(&mut poll_fds, PollTimeout::ZERO).unwrap_or(0);
            if ready == 0 {
                std::thread::sleep(Duration::from_nanos(wait_ns as u64));
                continue;
            }
        } else {
            let timeout = PollTimeout::from(u16::try_from(wait_ms).unwrap_or(u16::MAX));
            match poll(&mut poll_fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
        }
        for (route, socket) in listeners.iter().enumerate() {
            for _ in 0..DRAIN_BATCHES {
                let received = recv_batch(
                    socket.as_raw_fd(),
                    &mut headers,
                    &mut buffers,
                    MAX_BATCH,
                    MsgFlags::MSG_DONTWAIT,
                    |_, datagram, was_truncated| {
                        if was_truncated {
                            truncated += 1;
                            return;
                        }
                        let at = rel(monotonic_ns());
                        match impairer.handle_datagram(at) {
                            (Decision::Forward, w) => {
                                let ok = send(&outs, route, datagram);
                                impairer.record_send(w, ok);
                            }
                            (Decision::Hold { release_ns }, w) => {
                                if !queue.push(release_ns, route, w, datagram) {
                                    impairer.record_queue_full(w);
                                }
                            }
                            (Decision::Drop, _) => {}
                        }
                    },
                );
                match received {
                    Ok(n) if n == MAX_BATCH => continue,
                    Ok(_) | Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("recvmmsg"),
                }
            }
        }
    }
    let report = ImpairReport {
        tool: "impair",
        epoch_monotonic_ns: epoch_ns,
        seed: cli.seed,
        routes: cli
            .routes
            .iter()
            .zip(&bound)
            .map(|((_, to), l)| format!("{l} -> {to}"))
            .collect(),
        duration_s: (monotonic_ns() - start_ns) as f64 / 1e9,
        windows: impairer
            .schedule()
            .windows
            .iter()
            .zip(impairer.counts())
            .map(|(w, c)| WindowReport {
                window: *w,
                counts: *c,
            })
            .collect(),
        outside: impairer.outside(),
        held_at_exit: queue.len() as u64,
        truncated,
    };
    for w in &report.windows {
        println!(
            "window {}: received {}, forwarded {}, dropped {}, delayed {}, queue full {}, send errors {}",
            w.window,
            w.counts.received,
            w.counts.forwarded,
            w.counts.dropped,
            w.counts.delayed,
            w.counts.queue_full,
            w.counts.send_errors
        );
    }
    let o = report.outside;
    println!(
        "outside windows: received {}, forwarded {}, send errors {}; {} held at exit",
        o.received, o.forwarded, o.send_errors, report.held_at_exit
    );
    if let Some(path) = &cli.json {
        let mut text = serde_json::to_string_pretty(&report).context("serialize summary")?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
