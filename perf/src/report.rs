//! The JSON documents the binaries write with `--json FILE` (serde field
//! names are the JSON keys). Times are seconds as floats unless the name
//! says otherwise.

use serde::Serialize;

use crate::stall::StallRecord;
use crate::stats::TrafficSummary;

/// `popmesh-rtp send` result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendReport {
    /// Always `"send"`.
    pub tool: &'static str,
    /// Destinations; stream `i` went to `to[i % to.len()]`.
    pub to: Vec<String>,
    /// Requested total rate, 0 = as fast as possible.
    pub rate_pps: u64,
    /// RTP packet size (UDP payload) in bytes.
    pub size: usize,
    /// Number of streams (SSRCs).
    pub streams: u32,
    /// Largest `sendmmsg` batch.
    pub batch: usize,
    /// `--count` if given.
    pub count_limit: Option<u64>,
    /// Datagrams the kernel accepted.
    pub packets: u64,
    /// Bytes of those datagrams.
    pub bytes: u64,
    /// Datagrams whose send failed (not in `packets`).
    pub send_errors: u64,
    /// Seconds from the first to the last send.
    pub duration_s: f64,
    /// `packets / duration_s` (0 for fewer than two packets).
    pub achieved_pps: f64,
    /// Why the run ended: `"count"` or `"duration"`.
    pub stop_reason: &'static str,
}

/// One listen address of a sink; the [`TrafficSummary`] fields are inlined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerReport {
    /// The bound address (with the real port if 0 was requested).
    pub listen: String,
    /// Receive statistics.
    #[serde(flatten)]
    pub stats: TrafficSummary,
    /// Gaps above `--stall-gap` between this listener's packets; absent without the flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalls: Option<StallRecord>,
}

/// `popmesh-rtp sink` result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkReport {
    /// Always `"sink"`.
    pub tool: &'static str,
    /// Seconds the sink ran.
    pub duration_s: f64,
    /// CLOCK_MONOTONIC ns when the sink started receiving (the origin of `per_second_packets`
    /// and of the latency interval log).
    pub start_monotonic_ns: u64,
    /// `"duration"`, `"expect"` (every listener got `--expect` packets) or
    /// `"idle"` (`--idle-exit` seconds without a packet).
    pub stop_reason: &'static str,
    /// Effective SO_RCVBUF of the listen sockets in bytes.
    pub rcvbuf_bytes: usize,
    /// Per listen address, in `--listen` order.
    pub listeners: Vec<ListenerReport>,
    /// All listeners added together.
    pub total: TrafficSummary,
    /// Packets received in each second since `start_monotonic_ns` (all listeners); only with
    /// `--per-second`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second_packets: Option<Vec<u64>>,
    /// Packets received in each `--interval-ms` interval since `start_monotonic_ns` (all
    /// listeners); only with `--interval-ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_packets: Option<IntervalPackets>,
}

/// Packets per fixed interval of a sink run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntervalPackets {
    /// Interval width, ms.
    pub interval_ms: u32,
    /// Packets received in interval i (from `start_monotonic_ns + i * interval_ms`).
    pub counts: Vec<u64>,
}

/// `popmesh-plain-relay` result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayReport {
    /// Always `"plain-relay"`.
    pub tool: &'static str,
    /// Bound listen address.
    pub listen: String,
    /// Fan-out destinations.
    pub to: Vec<String>,
    /// Largest `recvmmsg` batch.
    pub batch: usize,
    /// Core the relay pinned itself to, if `--core` was given.
    pub core: Option<usize>,
    /// Effective SO_RCVBUF of the listen socket in bytes.
    pub rcvbuf_bytes: usize,
    /// Seconds the relay ran (its `--duration`, give or take one receive timeout).
    pub duration_s: f64,
    /// Datagrams received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams larger than the receive slot, dropped.
    pub truncated: u64,
    /// Datagrams sent, over all destinations (`packets_in * to.len()` when
    /// nothing failed).
    pub packets_out: u64,
    /// Bytes sent, over all destinations.
    pub bytes_out: u64,
    /// Datagrams whose send failed.
    pub send_errors: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub recv_batches: u64,
    /// `packets_in / recv_batches`.
    pub mean_batch: f64,
    /// User CPU seconds of the process during the run.
    pub cpu_user_s: f64,
    /// System CPU seconds of the process during the run.
    pub cpu_sys_s: f64,
    /// `cpu_user_s + cpu_sys_s`.
    pub cpu_s: f64,
    /// CPU ns per received (and relayed) datagram; `null` with none.
    pub cpu_ns_per_packet: Option<f64>,
    /// CPU ns per sent datagram; `null` with none.
    pub cpu_ns_per_packet_out: Option<f64>,
}
