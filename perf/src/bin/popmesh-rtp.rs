//! `popmesh-rtp`: bounded RTP probe sender and sink for capacity tests.

#![forbid(unsafe_code)]

use std::io::{IoSlice, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::MsgFlags;
use popmesh_perf::args::{check_target, parse_secs};
use popmesh_perf::hlog::IntervalLog;
use popmesh_perf::probe::{rtp_timestamp_at, ProbeRepr, MIN_PACKET_LEN, SSRC_BASE};
use popmesh_perf::report::{IntervalPackets, ListenerReport, SendReport, SinkReport};
use popmesh_perf::stall::StallDetector;
use popmesh_perf::stats::{ListenerStats, TrafficSummary, MAX_STREAMS};
use popmesh_perf::sys::{
    bind_udp, grow_receive_buffer, monotonic_ns, recv_batch, send_batch, RecvBuffers, RecvHeaders,
    SendHeaders, MAX_BATCH,
};
use popmesh_perf::{Pace, Pacer};
use serde::Serialize;

/// Exit status for unusable arguments (sysexits EX_USAGE), before any socket.
const EXIT_USAGE: u8 = 64;
/// Largest `--size`: a jumbo frame's worth, what the plain relay forwards.
const MAX_SIZE: u16 = 9_216;
/// Waits shorter than this spin instead of sleeping: a sleep overshoots by
/// about the timer slack (~50 us), which would only make the burst larger.
const SPIN_BELOW_NS: u64 = 20_000;
/// Receive slot of the sink: any UDP datagram fits, so byte counts are exact.
const SINK_SLOT_LEN: usize = 65_536;
/// Receive buffer the sink asks for, so a burst is not dropped before it reads.
const SINK_RCVBUF_BYTES: usize = 8 << 20;
/// Longest single poll, so the stop conditions are checked this often.
const POLL_SLICE_NS: u64 = 100_000_000;
/// Batches drained from one socket before the next socket gets its turn.
const DRAIN_BATCHES: usize = 16;

#[derive(Debug, Parser)]
#[command(
    name = "popmesh-rtp",
    version,
    about = "Bounded RTP probe traffic for popmesh capacity tests",
    long_about = "Bounded RTP probe traffic for popmesh capacity tests.\n\n\
        `send` emits RTP v2 packets (PT 96, 90 kHz timestamps) whose payload starts with a \
        24-byte probe (magic \"PMPR\", stream index, CLOCK_MONOTONIC send time, per-stream \
        sequence). `sink` receives them and reports loss, reordering, duplicates, one-way \
        latency percentiles and RFC 3550 jitter. Both stop by themselves; destinations must be \
        loopback unless --allow-remote is given. Argument errors exit with status 64."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send paced RTP probe packets to one or more addresses.
    Send(SendArgs),
    /// Receive probe packets on one or more addresses and report statistics.
    Sink(SinkArgs),
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Destination (repeatable). Stream i is sent to the (i mod N)-th --to.
    #[arg(long = "to", value_name = "ADDR", required = true)]
    to: Vec<SocketAddr>,
    /// Total packets per second over all streams and destinations; 0 sends as fast as possible.
    #[arg(long, value_name = "PPS")]
    rate: u64,
    /// RTP packet size (UDP payload) in bytes, 12-byte header and 24-byte probe included: 36..=9216.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(MIN_PACKET_LEN as i64..=MAX_SIZE as i64))]
    size: u16,
    /// Number of streams (distinct SSRCs), sent round robin: 1..=4096 and at least the number of --to.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_STREAMS as i64))]
    streams: u32,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Duration,
    /// Stop after this many packets (whichever of --count and --duration comes first).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// First stream index: stream i carries index BASE+i and SSRC 0x504d0000+BASE+i, so two
    /// senders feeding one receiver (audio and video of one publisher) stay distinct streams.
    #[arg(long, value_name = "BASE", default_value_t = 0)]
    stream_base: u32,
    /// Local address to send from (SO_REUSEADDR, shared by the per-destination sockets, and by
    /// other senders given the same --bind, e.g. the audio and video of one publisher).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Largest number of packets per sendmmsg (1..=64); 1 uses plain send.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=MAX_BATCH as i64))]
    batch: u16,
    /// Allow non-loopback destinations (addresses inside a test network namespace).
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Debug, Args)]
struct SinkArgs {
    /// Address to receive on (repeatable); port 0 picks a free port. Each bound
    /// address is printed as a `listening ADDR` line before traffic is accepted.
    #[arg(long = "listen", value_name = "ADDR", required = true)]
    listen: Vec<SocketAddr>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Duration,
    /// Stop early once every listen address received at least N packets.
    #[arg(long, value_name = "N")]
    expect: Option<u64>,
    /// Stop after this many seconds without a packet, once at least one arrived.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    idle_exit: Option<Duration>,
    /// Write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Count a gap longer than this between two packets of one listen address as a stall, and
    /// report each listener's stalls (start, length; CLOCK_MONOTONIC ns) in the JSON.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    stall_gap: Option<Duration>,
    /// Write the one-way latency of all listeners as an HdrHistogram interval log (V2, one
    /// interval per second, values in ns) to this file.
    #[arg(long, value_name = "FILE")]
    hlog: Option<PathBuf>,
    /// Add the packets received in each second of the run (all listeners) to the JSON.
    #[arg(long)]
    per_second: bool,
    /// Add the packets received in each interval of this many ms (all listeners) to the JSON as
    /// `interval_packets`, for a finer timeline than --per-second (recovery times), 10..=1000.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(10..=1000))]
    interval_ms: Option<u32>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            // Nothing sensible to do if the terminal is gone.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Send(args) => match validate_send(&args) {
            Ok(()) => run_send(&args),
            Err(e) => return usage_error(&e),
        },
        Command::Sink(args) => run_sink(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popmesh-rtp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(e: &anyhow::Error) -> ExitCode {
    eprintln!("popmesh-rtp: {e:#}");
    ExitCode::from(EXIT_USAGE)
}

fn validate_send(args: &SendArgs) -> anyhow::Result<()> {
    for (i, addr) in args.to.iter().enumerate() {
        check_target(*addr, args.allow_remote).with_context(|| format!("--to[{i}]"))?;
    }
    if args.stream_base.checked_add(args.streams).is_none() {
        bail!(
            "--stream-base {}: with --streams {} the stream indexes pass 2^32",
            args.stream_base,
            args.streams
        );
    }
    if (args.streams as usize) < args.to.len() {
        bail!(
            "--streams {}: fewer streams than --to addresses ({}); every destination needs a stream",
            args.streams,
            args.to.len()
        );
    }
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("serialize summary")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// One destination: its connected socket and a batch of packet buffers.
struct Destination {
    socket: UdpSocket,
    slots: Vec<Vec<u8>>,
    used: usize,
}

fn run_send(args: &SendArgs) -> anyhow::Result<()> {
    let size = usize::from(args.size);
    let batch = usize::from(args.batch);
    let mut destinations = Vec::with_capacity(args.to.len());
    for to in &args.to {
        let local = args.bind.unwrap_or(match to {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        });
        let socket =
            bind_udp(local, args.bind.is_some()).with_context(|| format!("bind {local}"))?;
        // Connected: no per-packet address, and nix's sendmmsg results can be
        // counted soundly (see popmesh_perf::sys).
        socket
            .connect(to)
            .with_context(|| format!("connect to {to}"))?;
        destinations.push(Destination {
            socket,
            slots: vec![vec![0u8; size]; batch],
            used: 0,
        });
    }

    let streams = args.streams as usize;
    let mut rtp_seq = vec![0u16; streams];
    let mut probe_seq = vec![0u64; streams];
    let mut next_stream = 0usize;
    let mut headers = SendHeaders::new();
    let (mut packets, mut bytes, mut send_errors, mut attempted) = (0u64, 0u64, 0u64, 0u64);
    let mut last_error = None;

    let start_ns = monotonic_ns();
    let deadline_ns =
        start_ns.saturating_add(u64::try_from(args.duration.as_nanos()).unwrap_or(u64::MAX));
    let mut pacer = Pacer::new(args.rate, batch as u64, start_ns);
    let stop_reason = loop {
        let now = monotonic_ns();
        if now >= deadline_ns {
            break "duration";
        }
        let remaining = args.count.map_or(u64::MAX, |c| c.saturating_sub(attempted));
        if remaining == 0 {
            break "count";
        }
        let n = match pacer.poll(now, remaining) {
            Pace::Send(n) => n,
            Pace::WaitUntil(t) => {
                let wait_ns = t.min(deadline_ns).saturating_sub(now);
                if wait_ns >= SPIN_BELOW_NS {
                    std::thread::sleep(Duration::from_nanos(wait_ns));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
        };

        for _ in 0..n {
            let stream = next_stream;
            next_stream = (next_stream + 1) % streams;
            let dest_count = destinations.len();
            let (Some(dest), Some(seq), Some(pseq)) = (
                destinations.get_mut(stream % dest_count),
                rtp_seq.get_mut(stream),
                probe_seq.get_mut(stream),
            ) else {
                continue;
            };
            let Some(slot) = dest.slots.get_mut(dest.used) else {
                continue;
            };
            let send_ns = monotonic_ns();
            let repr = ProbeRepr {
                rtp_seq: *seq,
                rtp_timestamp: rtp_timestamp_at(send_ns.saturating_sub(start_ns)),
                ssrc: SSRC_BASE.wrapping_add(args.stream_base.wrapping_add(stream as u32)),
                stream_index: args.stream_base.wrapping_add(stream as u32),
                send_time_ns: send_ns,
                probe_seq: *pseq,
            };
            repr.emit(slot)
                .context("packet buffer is at least --size >= MIN_PACKET_LEN bytes")?;
            *seq = seq.wrapping_add(1);
            *pseq += 1;
            dest.used += 1;
            attempted += 1;
        }
        for dest in &mut destinations {
            if dest.used == 0 {
                continue;
            }
            let iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|i| {
                [IoSlice::new(dest.slots.get(i).map_or(&[][..], |s| &s[..]))]
            });
            let outcome = send_batch(
                dest.socket.as_raw_fd(),
                &mut headers,
                iovs.get(..dest.used).unwrap_or_default(),
            );
            packets += outcome.sent;
            bytes += outcome.bytes;
            send_errors += outcome.failed;
            last_error = outcome.last_error.or(last_error);
            dest.used = 0;
        }
    };
    let elapsed_ns = monotonic_ns()
        .saturating_sub(start_ns)
        .min(deadline_ns - start_ns);

    let report = SendReport {
        tool: "send",
        to: args.to.iter().map(ToString::to_string).collect(),
        rate_pps: args.rate,
        size,
        streams: args.streams,
        batch,
        count_limit: args.count,
        packets,
        bytes,
        send_errors,
        duration_s: secs(elapsed_ns),
        achieved_pps: if elapsed_ns > 0 {
            packets as f64 / secs(elapsed_ns)
        } else {
            0.0
        },
        stop_reason,
    };
    println!(
        "sent {} packets ({} bytes, {} streams) to {} destination(s) in {:.3} s: {:.1} pps (target {}), {} send errors{} [{}]",
        report.packets,
        report.bytes,
        report.streams,
        report.to.len(),
        report.duration_s,
        report.achieved_pps,
        if args.rate == 0 { "unlimited".to_string() } else { args.rate.to_string() },
        report.send_errors,
        last_error.map_or(String::new(), |e| format!(" (last: {e})")),
        stop_reason,
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn run_sink(args: &SinkArgs) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(args.listen.len());
    let mut bound = Vec::with_capacity(args.listen.len());
    let mut rcvbuf_bytes = usize::MAX;
    for addr in &args.listen {
        let socket = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
        socket.set_nonblocking(true).context("set non-blocking")?;
        let rcvbuf = grow_receive_buffer(&socket, SINK_RCVBUF_BYTES).context("SO_RCVBUF")?;
        rcvbuf_bytes = rcvbuf_bytes.min(rcvbuf);
        bound.push(socket.local_addr().context("local address")?);
        sockets.push(socket);
    }
    {
        let mut out = std::io::stdout().lock();
        for addr in &bound {
            writeln!(out, "listening {addr}").context("stdout")?;
        }
        out.flush().context("stdout")?;
    }

    let mut stats: Vec<ListenerStats> = sockets.iter().map(|_| ListenerStats::new()).collect();
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let mut stalls: Option<Vec<StallDetector>> = args.stall_gap.map(|gap| {
        sockets
            .iter()
            .map(|_| StallDetector::new(nanos(gap)))
            .collect()
    });
    let mut per_second: Vec<u64> = Vec::new();
    let mut per_interval: Vec<u64> = Vec::new();
    let interval_ns = args.interval_ms.map(|ms| u64::from(ms) * 1_000_000);
    let mut hlog = match &args.hlog {
        Some(path) => Some(IntervalLog::create(
            path,
            "popmesh-rtp sink: one-way latency of probes in ns, one interval per second",
        )?),
        None => None,
    };
    let mut headers = RecvHeaders::new();
    let mut buffers = RecvBuffers::new(SINK_SLOT_LEN);
    let mut poll_fds: Vec<PollFd<'_>> = sockets
        .iter()
        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    let idle_ns = args.idle_exit.map(nanos);

    let start_ns = monotonic_ns();
    let deadline_ns = start_ns.saturating_add(nanos(args.duration));
    let stop_reason = loop {
        let now = monotonic_ns();
        if let Some(log) = &mut hlog {
            log.roll(now.saturating_sub(start_ns))?;
        }
        if now >= deadline_ns {
            break "duration";
        }
        let last_arrival = stats
            .iter()
            .filter_map(ListenerStats::last_arrival_ns)
            .max();
        let mut slice_ns = (deadline_ns - now).min(POLL_SLICE_NS);
        if let (Some(idle), Some(last)) = (idle_ns, last_arrival) {
            let quiet = now.saturating_sub(last);
            if quiet >= idle {
                break "idle";
            }
            slice_ns = slice_ns.min(idle - quiet);
        }
        let timeout_ms = u16::try_from(slice_ns.div_ceil(1_000_000)).unwrap_or(u16::MAX);
        match poll(&mut poll_fds, PollTimeout::from(timeout_ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        for (index, (socket, listener)) in sockets.iter().zip(stats.iter_mut()).enumerate() {
            let mut detector = stalls.as_mut().and_then(|d| d.get_mut(index));
            for _ in 0..DRAIN_BATCHES {
                // One arrival time per batch: they all came out of the queue together.
                let mut arrival_ns = None;
                let received = recv_batch(
                    socket.as_raw_fd(),
                    &mut headers,
                    &mut buffers,
                    MAX_BATCH,
                    MsgFlags::MSG_DONTWAIT,
                    |_, datagram, _| {
                        let at = *arrival_ns.get_or_insert_with(monotonic_ns);
                        let (_, latency_ns) = listener.handle_datagram_timed(at, datagram);
                        if let Some(d) = detector.as_deref_mut() {
                            d.observe(at);
                        }
                        if let (Some(log), Some(ns)) = (hlog.as_mut(), latency_ns) {
                            log.record(ns);
                        }
                        if let Some(width) = interval_ns {
                            let i = usize::try_from(at.saturating_sub(start_ns) / width)
                                .unwrap_or(usize::MAX);
                            // Bounded by --duration: a day at 10 ms is 8.64M buckets at most.
                            if i < 8_640_001 {
                                if per_interval.len() <= i {
                                    per_interval.resize(i + 1, 0);
                                }
                                if let Some(n) = per_interval.get_mut(i) {
                                    *n += 1;
                                }
                            }
                        }
                        if args.per_second {
                            let second =
                                usize::try_from(at.saturating_sub(start_ns) / 1_000_000_000)
                                    .unwrap_or(usize::MAX);
                            // Bounded by --duration (at most a day of seconds).
                            if second < 86_401 {
                                if per_second.len() <= second {
                                    per_second.resize(second + 1, 0);
                                }
                                if let Some(n) = per_second.get_mut(second) {
                                    *n += 1;
                                }
                            }
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
        if let Some(expect) = args.expect {
            if stats.iter().all(|l| l.packets() >= expect) {
                break "expect";
            }
        }
    };
    let elapsed_ns = monotonic_ns().saturating_sub(start_ns);
    if let Some(log) = &mut hlog {
        log.close(elapsed_ns)?;
    }

    let report = SinkReport {
        tool: "sink",
        duration_s: secs(elapsed_ns),
        start_monotonic_ns: start_ns,
        stop_reason,
        rcvbuf_bytes,
        listeners: bound
            .iter()
            .zip(&stats)
            .enumerate()
            .map(|(i, (addr, l))| ListenerReport {
                listen: addr.to_string(),
                stats: l.summary(),
                stalls: stalls
                    .as_ref()
                    .and_then(|d| d.get(i))
                    .map(StallDetector::record),
            })
            .collect(),
        total: TrafficSummary::from_listeners(&stats),
        per_second_packets: args.per_second.then_some(per_second),
        interval_packets: args.interval_ms.map(|interval_ms| IntervalPackets {
            interval_ms,
            counts: per_interval,
        }),
    };
    for l in &report.listeners {
        print_summary(&l.listen, &l.stats);
    }
    if report.listeners.len() > 1 {
        print_summary("total", &report.total);
    }
    println!(
        "sink ran {:.3} s, stopped by {}",
        report.duration_s, report.stop_reason
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn print_summary(name: &str, s: &TrafficSummary) {
    let latency = s.latency_us.map_or("latency n/a".to_string(), |l| {
        format!(
            "latency us p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        )
    });
    let jitter = s.jitter_us.map_or("n/a".to_string(), |j| format!("{j:.1}"));
    println!(
        "{name}: {} packets, {} bytes, {:.1} pps, loss {} ({:.3}%), reordered {}, duplicates {}, malformed {}, {latency}, jitter us {jitter}",
        s.packets,
        s.bytes,
        s.pps,
        s.loss,
        s.loss_ratio * 100.0,
        s.reordered,
        s.duplicates,
        s.malformed,
    );
}
