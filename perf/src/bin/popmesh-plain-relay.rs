//! `popmesh-plain-relay`: the reference UDP fan-out relay popmesh's media lane
//! is measured against. Plain kernel sockets, no io_uring: one blocking
//! socket receives a batch with `recvmmsg`, then every datagram is sent to
//! every destination with one `sendmmsg` per destination, repeat.

#![forbid(unsafe_code)]

use std::io::{IoSlice, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use popmesh_perf::args::{check_target, parse_secs};
use popmesh_perf::report::RelayReport;
use popmesh_perf::sys::{
    bind_udp, grow_receive_buffer, recv_batch, send_batch, CpuTime, RecvBuffers, RecvHeaders,
    SendHeaders, MAX_BATCH,
};

/// Exit status for unusable arguments (sysexits EX_USAGE), before any socket.
const EXIT_USAGE: u8 = 64;
/// Receive slot: a jumbo frame. Not a power of two, so the slots of a batch
/// do not all map to the same cache sets.
const SLOT_LEN: usize = 9_216;
/// Receive buffer the relay asks for.
const RCVBUF_BYTES: usize = 8 << 20;
/// SO_RCVTIMEO: how late the relay may notice its deadline when idle.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
#[command(
    name = "popmesh-plain-relay",
    version,
    about = "Reference plain-kernel UDP fan-out relay (recvmmsg + sendmmsg), bounded in time",
    long_about = "Reference plain-kernel UDP fan-out relay, the baseline popmesh's media lane is \
        compared against. One blocking UDP socket receives up to --batch datagrams with recvmmsg; \
        each datagram is then sent to every --to address (one connected socket and one sendmmsg \
        per destination). It pins itself to --core, stops after --duration, and reports packets \
        in/out and the CPU time (getrusage) per relayed packet. Prints `listening ADDR` once \
        bound. Destinations must be loopback unless --allow-remote is given. Argument errors \
        exit with status 64."
)]
struct Cli {
    /// Address to receive on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Destination (repeatable); every datagram goes to every --to.
    #[arg(long = "to", value_name = "ADDR", required = true)]
    to: Vec<SocketAddr>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Duration,
    /// Largest number of datagrams per recvmmsg (1..=64).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=MAX_BATCH as i64))]
    batch: u16,
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            // Nothing sensible to do if the terminal is gone.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Err(e) = validate(&cli) {
        eprintln!("popmesh-plain-relay: {e:#}");
        return ExitCode::from(EXIT_USAGE);
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popmesh-plain-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Finds `--core` among the cores this process may run on.
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

fn validate(cli: &Cli) -> anyhow::Result<()> {
    for (i, addr) in cli.to.iter().enumerate() {
        check_target(*addr, cli.allow_remote).with_context(|| format!("--to[{i}]"))?;
    }
    if let Some(core) = cli.core {
        core_id(core)?;
    }
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if let Some(core) = cli.core {
        if !core_affinity::set_for_current(core_id(core)?) {
            bail!("--core {core}: sched_setaffinity failed");
        }
    }
    let socket = UdpSocket::bind(cli.listen).with_context(|| format!("bind {}", cli.listen))?;
    // SO_RCVTIMEO, so a blocking recvmmsg returns EAGAIN and the deadline is noticed.
    socket
        .set_read_timeout(Some(RECV_TIMEOUT))
        .context("SO_RCVTIMEO")?;
    let rcvbuf_bytes = grow_receive_buffer(&socket, RCVBUF_BYTES).context("SO_RCVBUF")?;
    let listen = socket.local_addr().context("local address")?;

    let mut destinations = Vec::with_capacity(cli.to.len());
    for to in &cli.to {
        let local = match to {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let out = bind_udp(local, false).with_context(|| format!("bind {local}"))?;
        // A connected socket per destination: the kernel caches the route, and
        // nix's sendmmsg results can only be counted soundly without addresses
        // (see popmesh_perf::sys).
        out.connect(to)
            .with_context(|| format!("connect to {to}"))?;
        destinations.push(out);
    }
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {listen}").context("stdout")?;
        stdout.flush().context("stdout")?;
    }

    let batch = usize::from(cli.batch);
    let mut recv_headers = RecvHeaders::new();
    let mut send_headers = SendHeaders::new();
    let mut buffers = RecvBuffers::new(SLOT_LEN);
    // Length of each received slot; 0 marks a truncated datagram to drop.
    let mut lens = [0usize; MAX_BATCH];
    let (mut packets_in, mut bytes_in, mut truncated, mut recv_batches) = (0u64, 0u64, 0u64, 0u64);
    let (mut packets_out, mut bytes_out, mut send_errors) = (0u64, 0u64, 0u64);

    let cpu_start = CpuTime::of_process().context("getrusage")?;
    let start = Instant::now();
    let deadline = start + cli.duration;
    // Hot loop: no allocation, one recvmmsg and one sendmmsg per destination per batch.
    while Instant::now() < deadline {
        let received = recv_batch(
            socket.as_raw_fd(),
            &mut recv_headers,
            &mut buffers,
            batch,
            MsgFlags::MSG_WAITFORONE,
            |slot, datagram, was_truncated| {
                if let Some(len) = lens.get_mut(slot) {
                    *len = if was_truncated { 0 } else { datagram.len() };
                }
                bytes_in += datagram.len() as u64;
                truncated += u64::from(was_truncated);
            },
        );
        let n = match received {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => return Err(e).context("recvmmsg"),
        };
        packets_in += n as u64;
        recv_batches += 1;

        let mut forward = 0;
        let mut iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|_| [IoSlice::new(&[])]);
        for (slot, &len) in lens.iter().enumerate().take(n) {
            if len == 0 {
                continue;
            }
            if let Some(iov) = iovs.get_mut(forward) {
                *iov = [IoSlice::new(buffers.slot(slot, len))];
                forward += 1;
            }
        }
        let batch_iovs = iovs.get(..forward).unwrap_or_default();
        if batch_iovs.is_empty() {
            continue;
        }
        for out in &destinations {
            let outcome = send_batch(out.as_raw_fd(), &mut send_headers, batch_iovs);
            packets_out += outcome.sent;
            bytes_out += outcome.bytes;
            send_errors += outcome.failed;
        }
    }
    let elapsed = start.elapsed();
    let cpu = CpuTime::of_process()
        .context("getrusage")?
        .since(&cpu_start);

    let per = |packets: u64| (packets > 0).then(|| cpu.total_ns() as f64 / packets as f64);
    let report = RelayReport {
        tool: "plain-relay",
        listen: listen.to_string(),
        to: cli.to.iter().map(ToString::to_string).collect(),
        batch,
        core: cli.core,
        rcvbuf_bytes,
        duration_s: elapsed.as_secs_f64(),
        packets_in,
        bytes_in,
        truncated,
        packets_out,
        bytes_out,
        send_errors,
        recv_batches,
        mean_batch: if recv_batches > 0 {
            packets_in as f64 / recv_batches as f64
        } else {
            0.0
        },
        cpu_user_s: cpu.user_ns as f64 / 1e9,
        cpu_sys_s: cpu.system_ns as f64 / 1e9,
        cpu_s: cpu.total_ns() as f64 / 1e9,
        cpu_ns_per_packet: per(packets_in),
        cpu_ns_per_packet_out: per(packets_out),
    };
    println!(
        "relayed {} packets in ({} bytes, mean batch {:.1}) -> {} packets out to {} destination(s), {} send errors, {} truncated; {:.3} s CPU ({:.3} user + {:.3} sys) in {:.3} s{}",
        report.packets_in,
        report.bytes_in,
        report.mean_batch,
        report.packets_out,
        report.to.len(),
        report.send_errors,
        report.truncated,
        report.cpu_s,
        report.cpu_user_s,
        report.cpu_sys_s,
        report.duration_s,
        report.cpu_ns_per_packet.map_or(String::new(), |ns| format!(", {ns:.0} ns CPU per relayed packet")),
    );
    if let Some(path) = &cli.json {
        let mut text = serde_json::to_string_pretty(&report).context("serialize summary")?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
