//! Typed configuration values and their conversion from the raw file structs.
//!
//! Conversion stops at the first broken rule, checked in file order (admin, log, media,
//! signaling, housekeeping, then sessions in order, then control), so the operator fixes errors
//! top to bottom. Rules that tie two sections together are checked once both are converted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use popmesh_ctrl_api::spiffe::Role;
use popmesh_ctrl_api::SpiffeId;
use serde::ser::Error as _;
use serde::{Serialize, Serializer};

use crate::duration::{self, parse_duration};
use crate::error::{ConfigError, ToTomlError};
use crate::raw::{
    RawAdmin, RawConfig, RawControl, RawDpdk, RawIdle, RawListener, RawLog, RawMedia, RawPort,
    RawSession, RawSignaling, RawSubscriber, RawUring,
};

/// Documented default values; the raw structs render them in the file's syntax.
pub(crate) mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    pub const ADMIN_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100));
    pub const LOG_LEVEL: &str = "info";
    pub const LOG_FORMAT: &str = "text";
    pub const BACKEND: &str = "uring";
    pub const CORES: [i64; 1] = [1];
    pub const BURST: i64 = 32;
    pub const MAX_FLOWS: i64 = 65_536;
    pub const CLOCK_RATE: i64 = 90_000;
    pub const SPIN_POLLS: i64 = 256;
    pub const MAX_WAIT: Duration = Duration::from_micros(200);
    pub const RING_ENTRIES: i64 = 1024;
    pub const BUFFERS: i64 = 4096;
    pub const BUFFER_SIZE: i64 = 2048;
    pub const GSO: bool = true;
    pub const SOCKET_BUF_BYTES: i64 = 4 * 1024 * 1024;
    pub const DPDK_MAIN_CORE: i64 = 0;
    pub const DPDK_MEMORY_MB: i64 = 1024;
    pub const DPDK_FILE_PREFIX: &str = "popmesh";
    pub const DPDK_DESC: i64 = 1024;
    pub const DPDK_MBUF_CACHE: i64 = 256;
    pub const MTU: i64 = 1500;
    pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    pub const STATS_INTERVAL: Duration = Duration::from_secs(10);
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
    pub const ACCESS_LOG: bool = true;
    pub const HEADER_IDENTITY: &str = "x-popmesh-peer-identity";
    pub const MAX_REQUEST_BODY_RETRY: i64 = 65_536;
    /// `signaling.upstream_resumption`.
    pub const UPSTREAM_RESUMPTION: Duration = Duration::from_secs(600);
    pub const LISTENER_PROTOCOL: &str = "http";
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    pub const MAX_CONNECTIONS: i64 = 100_000;
}

// Limits of the schema, named once so the checks and their messages cannot disagree.
const MAX_CORES: usize = 128;
/// `CPU_SETSIZE`: the largest CPU id `sched_setaffinity` with a `cpu_set_t` can pin to, plus one.
const CPU_SETSIZE: i64 = 1024;
const BURST_RANGE: RangeInclusive<i64> = 1..=256;
const MAX_FLOWS_RANGE: RangeInclusive<i64> = 1..=16_777_216;
const CLOCK_RATE_RANGE: RangeInclusive<i64> = 1..=1_000_000;
const SPIN_POLLS_RANGE: RangeInclusive<i64> = 0..=1_000_000;
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(1);
const COALESCE_LIMIT: Duration = Duration::from_millis(1);
const RING_ENTRIES_RANGE: RangeInclusive<i64> = 8..=32_768;
const BUFFERS_RANGE: RangeInclusive<i64> = 16..=32_768;
const BUFFER_SIZE_RANGE: RangeInclusive<i64> = 512..=65_536;
/// The kernel stores socket buffer sizes as `int` and doubles the requested value, so anything
/// above 1 GiB could overflow; below 4 KiB it raises the value to its own minimum anyway, and the
/// effective config would misstate the size.
const SOCKET_BUF_RANGE: RangeInclusive<i64> = 4096..=1_073_741_824;
const PORT_COUNT_RANGE: RangeInclusive<i64> = 1..=4096;
/// PortIds are `u16`; their number must fit one too.
const MAX_PORT_IDS: u32 = u16::MAX as u32;
const PORT_NAME_MAX_LEN: usize = 32;
const SESSION_NAME_MAX_CHARS: usize = 64;
const MAX_SUBSCRIBERS: usize = 4096;
const DPDK_MEMORY_RANGE: RangeInclusive<i64> = 64..=1_048_576;
const DPDK_DESC_RANGE: RangeInclusive<i64> = 64..=16_384;
const DPDK_MBUFS_RANGE: RangeInclusive<i64> = 1024..=16_777_216;
/// `RTE_MEMPOOL_CACHE_MAX_SIZE`.
const DPDK_MBUF_CACHE_RANGE: RangeInclusive<i64> = 0..=512;
const DPDK_FILE_PREFIX_MAX_LEN: usize = 32;
/// IPv4's minimum MTU up to jumbo frames.
const MTU_RANGE: RangeInclusive<i64> = 68..=9216;
/// Longest reconnect back-off: beyond an hour an appliance would look dead to operators.
const BACKOFF_LIMIT: Duration = Duration::from_secs(3600);
/// Stats reports between 1 s (the daemon stores each) and an hour.
const STATS_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
/// Appliance names are the last segment of a SPIFFE ID.
const APPLIANCE_NAME_MAX_LEN: usize = 63;
/// Longest graceful drain on SIGTERM; beyond it an orchestrator's own kill timeout wins anyway.
const DRAIN_TIMEOUT_LIMIT: Duration = Duration::from_secs(600);
const UPSTREAM_RESUMPTION_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Request bodies buffered for retries: memory per in-flight request, so bounded at 16 MiB.
const MAX_REQUEST_BODY_RETRY_RANGE: RangeInclusive<i64> = 0..=16 * 1024 * 1024;
const HEADER_NAME_MAX_LEN: usize = 128;
/// Headers the proxy itself writes or that describe the connection, never a place for the
/// caller's identity.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "authorization",
    "proxy-authorization",
    "cookie",
    "forwarded",
    "x-forwarded-for",
];
const IDLE_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(7 * 86_400);
const MAX_CONNECTIONS_RANGE: RangeInclusive<i64> = 1..=1_000_000;

/// The whole appliance configuration.
///
/// Build it with [`Config::from_toml`] or [`Config::from_file`]; both enforce every rule of the
/// schema (see the [crate documentation](crate)). The fields are public for reading; a value built
/// or changed by hand is not re-validated.
///
/// Serializing a `Config` (for the admin server's `/config`) writes the file format with every
/// default filled in, so the output (as TOML via [`Config::to_toml`], or the same shape as JSON)
/// loads back to an equal `Config`. Sessions are written with egress port *names*, not the resolved
/// PortIds, because the file format has no place for PortIds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[admin]`: the admin HTTP server.
    pub admin: AdminConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[media]`: the media workers and their ports.
    pub media: MediaConfig,
    /// `[signaling]`: CPUs reserved for the signaling lane, its proxy settings and listeners.
    pub signaling: SignalingConfig,
    /// `[housekeeping]`: CPUs reserved for the OS, IRQs and the appliance's own control threads.
    pub housekeeping: CoreLaneConfig,
    /// `[[sessions]]`: static media sessions, in file order. May be empty; always empty with
    /// `[control]` (the control daemon then owns the flow table).
    pub sessions: Vec<SessionConfig>,
    /// `[control]`: the control daemon that programs this appliance; `None`: sessions come
    /// from `[[sessions]]` only.
    pub control: Option<ControlConfig>,
}

/// `[control]`: how the appliance agent reaches the control daemon (`popmesh-ctrld`) and where
/// it keeps the last configuration it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlConfig {
    /// gRPC endpoint, always `https://host:port` (the file may leave out `https://`).
    pub endpoint: String,
    /// DNS name (or IP) the daemon's certificate must carry; the endpoint's host by default.
    pub server_name: String,
    /// This appliance's registered name: the `<name>` of its SPIFFE ID
    /// `spiffe://<td>/ns/appliances/sa/<name>`.
    pub appliance: String,
    /// The appliance's SVID (PEM certificate, chain appended).
    pub cert: PathBuf,
    /// The SVID's private key (PEM).
    pub key: PathBuf,
    /// The trust bundle the daemon's certificate is verified against (PEM).
    pub ca: PathBuf,
    /// Directory of the last accepted configuration (`control-state.pb`).
    pub state_dir: PathBuf,
    /// First reconnect delay after a failure; doubles per failure up to `backoff_max`.
    #[serde(serialize_with = "duration::serialize")]
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    #[serde(serialize_with = "duration::serialize")]
    pub backoff_max: Duration,
    /// How often per-session stats are reported to the daemon.
    #[serde(serialize_with = "duration::serialize")]
    pub stats_interval: Duration,
}

/// `[signaling]`: the signaling lane (`popmesh-signal`, an mTLS L7 proxy): its CPUs, how it
/// drains, logs and retries, and the sockets it listens on.
///
/// The lane takes its SVID from `control.cert`/`control.key` and its routes, policies and trust
/// bundle from the control daemon, so `listeners` is empty unless [`Config::control`] is set.
/// [`SignalingConfig::default`] is the section left out: no CPUs, no listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignalingConfig {
    /// CPU ids reserved for the lane, with the rules of [`CoreLaneConfig::cores`]: unique, each
    /// below 1024, at most 128, never one of `media.cores` nor of `housekeeping.cores`.
    pub cores: Vec<usize>,
    /// On SIGTERM the lane stops accepting and lets requests in flight finish for up to this
    /// long, 0..=10m (0: close at once).
    #[serde(serialize_with = "duration::serialize")]
    pub drain_timeout: Duration,
    /// Write one JSON line per proxied request with the `tracing` target `popmesh::access`.
    pub access_log: bool,
    /// Header that carries the caller's SPIFFE ID (`spiffe://td/ns/x/sa/y`) to services:
    /// lower-case HTTP token characters, 1..=128 bytes, not a header the proxy manages
    /// (`host`, `connection`, `content-length`, ...). The lane removes it from what callers
    /// send and sets it itself.
    pub header_identity: String,
    /// Request bodies up to this many bytes are buffered so that idempotent requests can be
    /// retried; larger bodies stream and are not retried once sent. 0..=16 MiB (0: no retries
    /// of requests with a body).
    pub max_request_body_retry: u32,
    /// Upstream TLS sessions are resumed (an abbreviated handshake, where the service offers
    /// tickets) within this long of the full handshake that verified the service, and never
    /// across a rotation of the lane's SVID or trust bundle. 0s..=24h (0s: every upstream
    /// connection makes a full handshake).
    #[serde(serialize_with = "duration::serialize")]
    pub upstream_resumption: Duration,
    /// `[[signaling.listeners]]`, in file order; names unique, binds not overlapping.
    pub listeners: Vec<ListenerConfig>,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            cores: Vec::new(),
            drain_timeout: defaults::DRAIN_TIMEOUT,
            access_log: defaults::ACCESS_LOG,
            header_identity: defaults::HEADER_IDENTITY.to_string(),
            max_request_body_retry: defaults::MAX_REQUEST_BODY_RETRY as u32,
            upstream_resumption: defaults::UPSTREAM_RESUMPTION,
            listeners: Vec::new(),
        }
    }
}

/// One `[[signaling.listeners]]` entry: a TCP socket of the signaling lane.
///
/// Invariants of a parsed entry: `service` is `Some` exactly when `protocol` is
/// [`Protocol::Tcp`]; `identity` is `Some` exactly when `direction` is [`Direction::Outbound`],
/// and outbound listeners bind a loopback address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerConfig {
    /// Unique among listeners, `[a-z0-9_-]{1,32}`; names the listener in logs and metrics.
    pub name: String,
    /// TCP address, port not 0. Never overlaps another listener or `admin.listen` (the same IP,
    /// or either one the unspecified address of the same family, on the same port).
    pub bind: SocketAddr,
    /// Who connects and how they authenticate.
    pub direction: Direction,
    /// What the listener speaks.
    pub protocol: Protocol,
    /// The control-API service (`[a-z0-9-]{1,63}`) a `tcp` listener passes connections to;
    /// `None` for `http`, which routes each request by the daemon's routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Outbound only: the identity local callers are authorized as (and that
    /// `header_identity` carries), a service identity (not in the `operators` or `appliances`
    /// namespace). `None` on inbound listeners, whose callers present their own SVID.
    #[serde(
        serialize_with = "serialize_identity",
        skip_serializing_if = "Option::is_none"
    )]
    pub identity: Option<SpiffeId>,
    /// A connection idle this long is closed, 1s..=7d. A WebSocket counts as active while
    /// either side sends.
    #[serde(serialize_with = "duration::serialize")]
    pub idle_timeout: Duration,
    /// Most open connections on this listener, 1..=1_000_000; more wait in the accept backlog.
    pub max_connections: u32,
}

/// `signaling.listeners[].direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// `"inbound"`: callers from the network; they must present an SVID the trust bundle
    /// verifies (mutual TLS), and policies authorize them by its SPIFFE ID.
    Inbound,
    /// `"outbound"`: cleartext from local callers on this host (loopback only), authorized as
    /// the listener's `identity`; the lane adds mutual TLS towards the services.
    Outbound,
}

/// `signaling.listeners[].protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `"http"`: HTTP/1.1 and HTTP/2 (by ALPN, or h2c with prior knowledge), including gRPC and
    /// WebSocket upgrades; each request is routed by the control daemon's routes.
    Http,
    /// `"tcp"`: opaque byte streams passed through to the listener's `service`.
    Tcp,
}

fn serialize_identity<S: Serializer>(id: &Option<SpiffeId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

/// `[housekeeping]`: CPUs reserved for the OS, IRQs and the admin server, apart from
/// `media.cores` and `signaling.cores`.
///
/// The dataplane starts no thread on them; they tell the layout checks (`popmesh hw check`,
/// and the same checks at start-up) and the planner which CPUs must stay free of polling
/// workers and of each other. Empty (the default) declares nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CoreLaneConfig {
    /// CPU ids, unique, each below 1024 (`CPU_SETSIZE`), at most 128; never one of
    /// `media.cores`, and the two lanes share none.
    pub cores: Vec<usize>,
}

/// `[admin]`: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`, `/config`, `/flows`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminConfig {
    /// Address to listen on. Port 0 (an ephemeral port) is allowed, which tests use.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: defaults::ADMIN_LISTEN,
        }
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    /// A `tracing` filter directive such as `info` or `popmesh=debug,warn`. Only checked to be
    /// non-blank here; the binary that installs the filter reports a malformed directive.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: defaults::LOG_LEVEL.to_string(),
            format: LogFormat::Text,
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`"text"`).
    Text,
    /// One JSON object per line (`"json"`), for log shippers.
    Json,
}

/// `[media]`: the media workers and their ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaConfig {
    /// Which packet I/O backend the workers use.
    pub backend: BackendKind,
    /// CPU ids, one pinned poll-mode worker each, in worker order. Unique, 1..=128 entries, each
    /// below 1024 (`CPU_SETSIZE`). Whether the CPU exists is checked by the binary.
    pub cores: Vec<usize>,
    /// Packets per receive burst, 1..=256.
    pub burst: u16,
    /// Flow table capacity, 1..=16_777_216.
    pub max_flows: u32,
    /// Default RTP clock rate in Hz for jitter, 1..=1_000_000; a session may override it.
    pub clock_rate: u32,
    /// UDP ports that count as media on L2 backends: a packet to one of them without a flow is
    /// dropped, anything else goes to the exception path. `None`: no port is media by default.
    #[serde(
        serialize_with = "serialize_port_range",
        skip_serializing_if = "Option::is_none"
    )]
    pub media_port_range: Option<RangeInclusive<u16>>,
    /// `[media.idle]`: how idle workers back off.
    pub idle: IdleConfig,
    /// `[media.uring]`: io_uring backend tuning (ignored by other backends).
    pub uring: UringConfig,
    /// `[media.dpdk]`: DPDK environment and port tuning (ignored by other backends).
    pub dpdk: DpdkConfig,
    /// `[[media.ports]]`: ingress/egress points. PortIds are assigned in this order, `count` ids
    /// per entry; see [`Config::port_addrs`].
    pub ports: Vec<PortConfig>,
}

/// `media.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// io_uring UDP sockets (`"uring"`).
    Uring,
    /// In-memory rings (`"mem"`), for tests and benches only.
    Mem,
    /// DPDK poll-mode drivers on NIC ports or virtual devices (`"dpdk"`).
    Dpdk,
}

/// `[media.idle]`: how an idle worker backs off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdleConfig {
    /// Empty polls before the worker starts waiting, 0..=1_000_000.
    pub spin_polls: u32,
    /// Longest a waiting worker sleeps before polling again, in (0, 1s]. Bounds the extra latency
    /// the first packet after a quiet period sees.
    #[serde(serialize_with = "duration::serialize")]
    pub max_wait: Duration,
    /// Interrupt-moderation window, in [0, 1ms]: a waiting worker woken by a first packet
    /// waits up to this long for a fuller burst, trading at most this much added latency for
    /// fewer wake-ups and larger (GSO) batches under light load. 0 disables it.
    #[serde(serialize_with = "duration::serialize")]
    pub coalesce: Duration,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            spin_polls: 256,
            max_wait: defaults::MAX_WAIT,
            coalesce: Duration::ZERO,
        }
    }
}

/// `[media.uring]`: io_uring backend tuning, per worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UringConfig {
    /// Submission queue entries; a power of two in 8..=32768.
    pub ring_entries: u32,
    /// Provided receive buffers; a power of two in 16..=32768 (the buffer ring's limit).
    pub buffers: u16,
    /// Bytes per receive buffer, 512..=65536.
    pub buffer_size: u32,
    /// Send fan-out with UDP generic segmentation offload where possible.
    pub gso: bool,
    /// `SO_RCVBUF` in bytes, 4096..=1 GiB.
    pub rcvbuf_bytes: usize,
    /// `SO_SNDBUF` in bytes, 4096..=1 GiB.
    pub sndbuf_bytes: usize,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            ring_entries: 1024,
            buffers: 4096,
            buffer_size: 2048,
            gso: true,
            rcvbuf_bytes: 4 * 1024 * 1024,
            sndbuf_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `[media.dpdk]`: the DPDK environment (EAL) and per-port queue sizing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DpdkConfig {
    /// CPU the EAL main thread (housekeeping: admin server, control) is pinned to; never one of
    /// `media.cores`.
    pub main_core: usize,
    /// Back packet memory with hugepages (`true`) or ordinary pages (`false`, EAL `--no-huge`:
    /// slower, for labs and CI).
    pub hugepages: bool,
    /// Packet memory EAL may use, in MiB (EAL `-m`), 64..=1048576.
    pub memory_mb: u32,
    /// EAL `--file-prefix`: separates the runtime files of several DPDK processes on one host.
    pub file_prefix: String,
    /// Virtual devices (EAL `--vdev`), e.g. `"net_af_xdp0,iface=eth1"`.
    pub vdevs: Vec<String>,
    /// PCI devices DPDK may take (EAL `-a`). Empty: no PCI device is probed (`--no-pci`), so a
    /// kernel-owned NIC is never touched by accident.
    pub pci_allow: Vec<String>,
    /// Further EAL arguments, appended verbatim after the ones popmesh builds.
    pub eal_args: Vec<String>,
    /// Receive descriptors per queue; a power of two in 64..=16384.
    pub rx_desc: u16,
    /// Transmit descriptors per queue; a power of two in 64..=16384.
    pub tx_desc: u16,
    /// Mbufs in the packet pool; `0` sizes it with [`DpdkConfig::pool_size`].
    pub mbufs: u32,
    /// Per-worker mempool cache, 0..=512 mbufs.
    pub mbuf_cache: u16,
    /// Give each port a kernel TAP interface carrying the port's address and MAC, so that ARP,
    /// ICMP and other non-media traffic reach the kernel and its answers leave through the port.
    pub exception_tap: bool,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig {
            main_core: 0,
            hugepages: true,
            memory_mb: 1024,
            file_prefix: defaults::DPDK_FILE_PREFIX.to_string(),
            vdevs: Vec::new(),
            pci_allow: Vec::new(),
            eal_args: Vec::new(),
            rx_desc: 1024,
            tx_desc: 1024,
            mbufs: 0,
            mbuf_cache: 256,
            exception_tap: true,
        }
    }
}

impl DpdkConfig {
    /// Mbufs the packet pool needs, from the stated rule: every descriptor of every queue may
    /// hold one (`ports x workers x (rx_desc + 2 x tx_desc)`, two per transmit slot because a
    /// fan-out copy is a header mbuf chained to an indirect one), plus each worker's cache and
    /// four bursts in flight, plus 1024 for the exception path; rounded up to a power of two
    /// minus one (the size DPDK's ring-backed pools use best). `mbufs` overrides it when set.
    pub fn pool_size(&self, ports: usize, workers: usize, burst: u16) -> u32 {
        if self.mbufs != 0 {
            return self.mbufs;
        }
        let per_queue = u64::from(self.rx_desc) + 2 * u64::from(self.tx_desc);
        let per_worker = u64::from(self.mbuf_cache) + 4 * u64::from(burst);
        let need =
            (ports as u64) * (workers as u64) * per_queue + workers as u64 * per_worker + 1024;
        let rounded = need.saturating_add(1).next_power_of_two() - 1;
        u32::try_from(rounded).unwrap_or(u32::MAX)
    }
}

/// One `[[media.ports]]` entry.
///
/// For socket backends: `count` consecutive UDP ports starting at `bind`, each its own PortId.
/// For `dpdk`: one NIC port or virtual device (`device`) whose appliance address is `bind`'s IP;
/// publishers may send to any UDP port of that IP, and relayed packets leave from `bind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortConfig {
    /// Unique name, `[a-z0-9_-]{1,32}`; subscribers name their egress port with it.
    pub name: String,
    /// Address of the first socket; its port is not 0. The unspecified address (`0.0.0.0`,
    /// `[::]`) accepts traffic to any local address of that family (socket backends only).
    pub bind: SocketAddr,
    /// Number of consecutive ports, 1..=4096, ending at or below 65535 (1 for `dpdk`).
    pub count: u16,
    /// L2 settings, present exactly when `media.backend = "dpdk"`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub l2: Option<L2PortConfig>,
}

/// The settings of a port driven by an L2 backend (`dpdk`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L2PortConfig {
    /// DPDK device name: a PCI address from `media.dpdk.pci_allow` (`"0000:03:00.0"`) or the
    /// name of a `media.dpdk.vdevs` entry (`"net_af_xdp0"`).
    pub device: String,
    /// Next-hop MAC for everything sent from this port: the router, or the one on-link peer.
    #[serde(serialize_with = "serialize_mac")]
    pub gateway_mac: [u8; 6],
    /// Largest IP packet the port sends, 68..=9216.
    pub mtu: u16,
    /// Prefix length of the port's address on the exception TAP interface.
    pub prefix_len: u8,
}

/// Formats a MAC as `02:00:00:00:00:01`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parses `02:00:00:00:00:01` (or with `-` separators).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn serialize_mac<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_mac(mac))
}

/// One `[[sessions]]` entry: a publisher relayed to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionConfig {
    /// Unique name, 1..=64 characters.
    pub name: String,
    /// Where the publisher sends; unique among sessions and opened by one of `media.ports`.
    pub ingress: SocketAddr,
    /// The PortId `ingress` arrives on.
    pub ingress_port: u16,
    /// The only accepted sender, or `None` to latch the first sender.
    pub source: Option<SocketAddr>,
    /// RTP clock rate in Hz: the session's own, or `media.clock_rate`.
    pub clock_rate: u32,
    /// Where packets are replicated to, 1..=4096 unique addresses.
    pub subscribers: Vec<SubscriberConfig>,
}

/// One subscriber of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberConfig {
    /// Destination address; same family as the egress port, never the session's own ingress.
    pub addr: SocketAddr,
    /// The PortId packets leave from: the first PortId of the named `egress` port, or the
    /// session's ingress port when none is named.
    pub egress_port: u16,
}

impl Config {
    /// Parses and validates a configuration from TOML text.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Syntax`] when the text is not TOML or does not fit the schema (unknown key,
    /// wrong type, missing required key); [`ConfigError::Invalid`] for the first value that breaks
    /// a rule, in file order.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax(e.to_string().trim_end().to_string()))?;
        Config::try_from(raw)
    }

    /// Reads `path` and parses it with [`Config::from_toml`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`] when the file cannot be read or is not UTF-8, otherwise as
    /// [`Config::from_toml`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Writes the configuration as a TOML file that [`Config::from_toml`] reads back to an equal
    /// `Config`, with every default written out.
    ///
    /// # Errors
    ///
    /// [`ToTomlError`] when a hand-built configuration holds something the file format cannot
    /// express: a subscriber whose egress PortId is neither its session's ingress port nor the
    /// first PortId of a port, an `ingress_port` that does not match `ingress`, or a number
    /// beyond TOML's `i64`. Never for a parsed configuration.
    pub fn to_toml(&self) -> Result<String, ToTomlError> {
        toml::to_string(self).map_err(|e| ToTomlError(e.to_string()))
    }

    /// The address of every PortId, in PortId order: each `media.ports` entry contributes `count`
    /// consecutive ports of its bind address.
    ///
    /// A hand-built entry whose range runs past port 65535 contributes only the ports that exist,
    /// which shifts the PortIds after it; parsed configurations never have one.
    pub fn port_addrs(&self) -> Vec<SocketAddr> {
        self.media
            .ports
            .iter()
            .flat_map(|p| {
                (0..p.count).map_while(move |offset| {
                    let port = p.bind.port().checked_add(offset)?;
                    Some(SocketAddr::new(p.bind.ip(), port))
                })
            })
            .collect()
    }

    /// The PortId that receives traffic sent to `addr`: the port range with exactly that IP, or
    /// failing that one bound to the unspecified address of the same family.
    pub fn port_id(&self, addr: SocketAddr) -> Option<u16> {
        lookup_port_id(&self.media.ports, addr)
    }

    /// The first PortId and the entry of the port named `name`.
    pub fn port_by_name(&self, name: &str) -> Option<(u16, &PortConfig)> {
        with_first_ids(&self.media.ports)
            .find(|(_, p)| p.name == name)
            .and_then(|(first, p)| Some((u16::try_from(first).ok()?, p)))
    }

    /// The signaling listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.signaling.listeners.iter().find(|l| l.name == name)
    }
}

/// Each port with its first PortId (as `u32`, so hand-built configs cannot overflow it).
fn with_first_ids(ports: &[PortConfig]) -> impl Iterator<Item = (u32, &PortConfig)> {
    ports.iter().scan(0u32, |next, p| {
        let first = *next;
        *next = next.saturating_add(u32::from(p.count));
        Some((first, p))
    })
}

/// Whether `port`'s range contains `addr`'s port (IPs not compared).
fn range_contains(port: &PortConfig, addr: SocketAddr) -> Option<u32> {
    if port.l2.is_some() {
        // An L2 port receives every UDP port of its address.
        return Some(0);
    }
    let offset = addr.port().checked_sub(port.bind.port())?;
    (offset < port.count).then_some(u32::from(offset))
}

fn lookup_port_id(ports: &[PortConfig], addr: SocketAddr) -> Option<u16> {
    let find = |matches_ip: &dyn Fn(IpAddr) -> bool| {
        with_first_ids(ports).find_map(|(first, p)| {
            if !matches_ip(p.bind.ip()) {
                return None;
            }
            let offset = range_contains(p, addr)?;
            u16::try_from(first.checked_add(offset)?).ok()
        })
    };
    find(&|ip| ip == addr.ip())
        .or_else(|| find(&|ip| ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4()))
}

/// The port entry that PortId `id` belongs to.
fn port_of_id(ports: &[PortConfig], id: u16) -> Option<&PortConfig> {
    with_first_ids(ports)
        .find(|(first, p)| u32::from(id) >= *first && u32::from(id) - *first < u32::from(p.count))
        .map(|(_, p)| p)
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// A string value as TOML would show it, for error messages.
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// `first-last` description of a port entry's addresses, e.g. `127.0.0.1:40000-40003`.
fn describe_range(p: &PortConfig) -> String {
    let last = u32::from(p.bind.port()) + u32::from(p.count.max(1)) - 1;
    if p.count <= 1 {
        p.bind.to_string()
    } else {
        format!("{}-{last}", p.bind)
    }
}

fn parse_addr(path: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::invalid(path, quoted(s), "is not a valid socket address (ip:port)")
    })
}

/// Checks `value` against `range` and converts it to the target integer type.
fn int_in<T: TryFrom<i64>>(
    path: &str,
    value: i64,
    range: RangeInclusive<i64>,
) -> Result<T, ConfigError> {
    let out_of_range = || {
        ConfigError::invalid(
            path,
            value.to_string(),
            format!("must be in {}..={}", range.start(), range.end()),
        )
    };
    if !range.contains(&value) {
        return Err(out_of_range());
    }
    T::try_from(value).map_err(|_| out_of_range())
}

/// Parses the duration `text` at `path` and checks it against `range` (`rule` says the range
/// in the operator's units, e.g. "must be in 0s..=10m").
fn duration_in(
    path: &str,
    text: &str,
    range: RangeInclusive<Duration>,
    rule: &str,
) -> Result<Duration, ConfigError> {
    let d = parse_duration(text).map_err(|why| ConfigError::invalid(path, quoted(text), why))?;
    if !range.contains(&d) {
        return Err(ConfigError::invalid(path, quoted(text), rule));
    }
    Ok(d)
}

/// Like [`int_in`], and the value must also be a power of two.
fn power_of_two_in<T: TryFrom<i64>>(
    path: &str,
    value: i64,
    range: RangeInclusive<i64>,
) -> Result<T, ConfigError> {
    let converted = int_in(path, value, range.clone())?;
    if value.count_ones() != 1 {
        return Err(ConfigError::invalid(
            path,
            value.to_string(),
            format!(
                "must be a power of two in {}..={}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(converted)
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let admin = AdminConfig::try_from(raw.admin)?;
        let log = LogConfig::try_from(raw.log)?;
        let media = MediaConfig::try_from(raw.media)?;
        let signaling = convert_signaling(raw.signaling, &media, admin.listen)?;
        let housekeeping = CoreLaneConfig {
            cores: convert_lane(
                "housekeeping",
                &raw.housekeeping.cores,
                &media,
                Some(&signaling.cores),
            )?,
        };
        let mut sessions: Vec<SessionConfig> = Vec::with_capacity(raw.sessions.len());
        for (index, raw_session) in raw.sessions.into_iter().enumerate() {
            let session = convert_session(index, raw_session, &media, &sessions)?;
            sessions.push(session);
        }
        let control = raw.control.map(ControlConfig::try_from).transpose()?;
        if control.is_some() && !sessions.is_empty() {
            return Err(ConfigError::invalid(
                "sessions",
                format!("{} entries", sessions.len()),
                "must be empty when [control] is set: the control daemon owns the flow table; \
                 create these sessions there (popmesh session create) or remove [control]",
            ));
        }
        if control.is_none() && !signaling.listeners.is_empty() {
            return Err(ConfigError::invalid(
                "signaling.listeners",
                format!("{} entries", signaling.listeners.len()),
                "need [control]: the signaling lane takes its SVID from control.cert and \
                 control.key and its routes, policies and trust bundle from the control daemon; \
                 add [control] or remove the listeners",
            ));
        }
        Ok(Config {
            admin,
            log,
            media,
            signaling,
            housekeeping,
            sessions,
            control,
        })
    }
}

impl TryFrom<RawControl> for ControlConfig {
    type Error = ConfigError;

    fn try_from(raw: RawControl) -> Result<Self, ConfigError> {
        let (endpoint, host) = parse_endpoint(&raw.endpoint)?;
        let server_name = match raw.server_name {
            None => host,
            Some(name) => {
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':'));
                if !ok {
                    return Err(ConfigError::invalid(
                        "control.server_name",
                        quoted(&name),
                        "must be a DNS name or IP address the daemon's certificate carries",
                    ));
                }
                name
            }
        };
        let name_ok = !raw.appliance.is_empty()
            && raw.appliance.len() <= APPLIANCE_NAME_MAX_LEN
            && raw.appliance.bytes().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'_')
            });
        if !name_ok {
            return Err(ConfigError::invalid(
                "control.appliance",
                quoted(&raw.appliance),
                format!(
                    "must be 1..={APPLIANCE_NAME_MAX_LEN} characters of [a-z0-9.-_] (the name in \
                     the appliance's SPIFFE ID)"
                ),
            ));
        }
        let path = |key: &str, value: &str| -> Result<PathBuf, ConfigError> {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("control.{key}"),
                    quoted(value),
                    "must be a file system path",
                ));
            }
            Ok(PathBuf::from(value))
        };
        let cert = path("cert", &raw.cert)?;
        let key = path("key", &raw.key)?;
        let ca = path("ca", &raw.ca)?;
        let state_dir = path("state_dir", &raw.state_dir)?;
        let duration = |key: &str, text: &str| -> Result<Duration, ConfigError> {
            let path = format!("control.{key}");
            parse_duration(text).map_err(|rule| ConfigError::invalid(path, quoted(text), rule))
        };
        let backoff_min = duration("backoff_min", &raw.backoff_min)?;
        if backoff_min.is_zero() || backoff_min > BACKOFF_LIMIT {
            return Err(ConfigError::invalid(
                "control.backoff_min",
                quoted(&raw.backoff_min),
                "must be more than 0 and at most 1h",
            ));
        }
        let backoff_max = duration("backoff_max", &raw.backoff_max)?;
        if backoff_max < backoff_min || backoff_max > BACKOFF_LIMIT {
            return Err(ConfigError::invalid(
                "control.backoff_max",
                quoted(&raw.backoff_max),
                format!(
                    "must be at least control.backoff_min ({}) and at most 1h",
                    duration::format_duration(backoff_min)
                ),
            ));
        }
        let stats_interval = duration("stats_interval", &raw.stats_interval)?;
        if !STATS_INTERVAL_RANGE.contains(&stats_interval) {
            return Err(ConfigError::invalid(
                "control.stats_interval",
                quoted(&raw.stats_interval),
                "must be in 1s..=1h",
            ));
        }
        Ok(ControlConfig {
            endpoint,
            server_name,
            appliance: raw.appliance,
            cert,
            key,
            ca,
            state_dir,
            backoff_min,
            backoff_max,
            stats_interval,
        })
    }
}

/// `https://host:port` or `host:port` to the `https://host:port` form and the host (without
/// IPv6 brackets).
fn parse_endpoint(text: &str) -> Result<(String, String), ConfigError> {
    let bad = |rule: &str| ConfigError::invalid("control.endpoint", quoted(text), rule);
    if text.starts_with("http://") {
        return Err(bad(
            "must use https:// (the control daemon only speaks mutual TLS)",
        ));
    }
    let rest = text.strip_prefix("https://").unwrap_or(text);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let rule = "must be \"https://host:port\" or \"host:port\" (host a DNS name or IP address, \
                port 1..=65535)";
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad(rule))?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host_ok = if host.starts_with('[') {
        bare.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !bare.is_empty()
            && bare
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
    };
    if !port_ok || !host_ok {
        return Err(bad(rule));
    }
    Ok((format!("https://{host}:{port}"), bare.to_string()))
}

impl TryFrom<RawAdmin> for AdminConfig {
    type Error = ConfigError;

    fn try_from(raw: RawAdmin) -> Result<Self, ConfigError> {
        Ok(AdminConfig {
            listen: parse_addr("admin.listen", &raw.listen)?,
        })
    }
}

impl TryFrom<RawLog> for LogConfig {
    type Error = ConfigError;

    fn try_from(raw: RawLog) -> Result<Self, ConfigError> {
        if raw.level.trim().is_empty() {
            return Err(ConfigError::invalid(
                "log.level",
                quoted(&raw.level),
                "must be a non-empty tracing filter directive such as \"info\"",
            ));
        }
        let format = match raw.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::invalid(
                    "log.format",
                    quoted(&raw.format),
                    "must be \"text\" or \"json\"",
                ))
            }
        };
        Ok(LogConfig {
            level: raw.level,
            format,
        })
    }
}

impl TryFrom<RawMedia> for MediaConfig {
    type Error = ConfigError;

    fn try_from(raw: RawMedia) -> Result<Self, ConfigError> {
        let backend = match raw.backend.as_str() {
            "uring" => BackendKind::Uring,
            "mem" => BackendKind::Mem,
            "dpdk" => BackendKind::Dpdk,
            _ => {
                return Err(ConfigError::invalid(
                    "media.backend",
                    quoted(&raw.backend),
                    "must be \"uring\", \"dpdk\" or \"mem\"",
                ))
            }
        };
        let cores = convert_cores(&raw.cores)?;
        let burst = int_in("media.burst", raw.burst, BURST_RANGE)?;
        let max_flows = int_in("media.max_flows", raw.max_flows, MAX_FLOWS_RANGE)?;
        let clock_rate = int_in("media.clock_rate", raw.clock_rate, CLOCK_RATE_RANGE)?;
        let media_port_range = raw
            .media_port_range
            .as_deref()
            .map(|s| {
                parse_port_range(s).ok_or_else(|| {
                    ConfigError::invalid(
                        "media.media_port_range",
                        quoted(s),
                        "is not a UDP port range \"first-last\" with 1 <= first <= last <= 65535",
                    )
                })
            })
            .transpose()?;
        let idle = IdleConfig::try_from(raw.idle)?;
        let uring = UringConfig::try_from(raw.uring)?;
        let dpdk = DpdkConfig::try_from(raw.dpdk)?;
        if backend == BackendKind::Dpdk {
            if let Some(index) = cores.iter().position(|&c| c == dpdk.main_core) {
                return Err(ConfigError::invalid(
                    "media.dpdk.main_core",
                    dpdk.main_core.to_string(),
                    format!(
                        "is also media.cores[{index}]; the EAL main thread (admin, control) \
                         needs a core of its own, apart from the polling workers"
                    ),
                ));
            }
        }
        let ports = convert_ports(raw.ports, backend)?;
        Ok(MediaConfig {
            backend,
            cores,
            burst,
            max_flows,
            clock_rate,
            media_port_range,
            idle,
            uring,
            dpdk,
            ports,
        })
    }
}

fn convert_cores(raw: &[i64]) -> Result<Vec<usize>, ConfigError> {
    if raw.is_empty() || raw.len() > MAX_CORES {
        let value = if raw.is_empty() {
            "[]".to_string()
        } else {
            format!("{} entries", raw.len())
        };
        return Err(ConfigError::invalid(
            "media.cores",
            value,
            format!("must list 1..={MAX_CORES} CPU ids"),
        ));
    }
    let mut seen: HashMap<usize, usize> = HashMap::with_capacity(raw.len());
    let mut cores = Vec::with_capacity(raw.len());
    for (index, &value) in raw.iter().enumerate() {
        let path = format!("media.cores[{index}]");
        let core: usize = usize::try_from(value)
            .ok()
            .filter(|_| value < CPU_SETSIZE)
            .ok_or_else(|| {
                ConfigError::invalid(
                    &path,
                    value.to_string(),
                    format!("is not a CPU id (0..={})", CPU_SETSIZE - 1),
                )
            })?;
        if let Some(first) = seen.insert(core, index) {
            return Err(ConfigError::invalid(
                path,
                value.to_string(),
                format!("is listed twice (also media.cores[{first}]); one worker per CPU"),
            ));
        }
        cores.push(core);
    }
    Ok(cores)
}

/// `[signaling]` / `[housekeeping]` `cores`: CPU ids apart from the media workers and, for the
/// housekeeping lane, from the signaling lane. A media worker spins at 100% on its CPU, so a
/// lane sharing it would only run when the worker yields.
fn convert_lane(
    lane: &str,
    raw: &[i64],
    media: &MediaConfig,
    signaling: Option<&[usize]>,
) -> Result<Vec<usize>, ConfigError> {
    if raw.len() > MAX_CORES {
        return Err(ConfigError::invalid(
            format!("{lane}.cores"),
            format!("{} entries", raw.len()),
            format!("must list at most {MAX_CORES} CPU ids"),
        ));
    }
    let mut cores: Vec<usize> = Vec::with_capacity(raw.len());
    for (index, &value) in raw.iter().enumerate() {
        let path = format!("{lane}.cores[{index}]");
        let core = usize::try_from(value)
            .ok()
            .filter(|_| value < CPU_SETSIZE)
            .ok_or_else(|| {
                ConfigError::invalid(
                    &path,
                    value.to_string(),
                    format!("is not a CPU id (0..={})", CPU_SETSIZE - 1),
                )
            })?;
        if let Some(first) = cores.iter().position(|&c| c == core) {
            return Err(ConfigError::invalid(
                path,
                value.to_string(),
                format!("is listed twice (also {lane}.cores[{first}])"),
            ));
        }
        if let Some(worker) = media.cores.iter().position(|&c| c == core) {
            return Err(ConfigError::invalid(
                path,
                value.to_string(),
                format!(
                    "is also media.cores[{worker}]; a polling media worker keeps its CPU 100% \
                     busy, so the {lane} lane needs CPUs of its own"
                ),
            ));
        }
        if let Some(other) = signaling.and_then(|s| s.iter().position(|&c| c == core)) {
            return Err(ConfigError::invalid(
                path,
                value.to_string(),
                format!(
                    "is also signaling.cores[{other}]; keep housekeeping (OS, IRQs, admin) off \
                     the signaling lane so a burst of interrupts cannot delay signaling"
                ),
            ));
        }
        cores.push(core);
    }
    Ok(cores)
}

/// `[signaling]`: the lane's CPUs (as [`convert_lane`]), settings and listeners. Whether
/// listeners have the `[control]` they need is checked once `[control]` is converted.
fn convert_signaling(
    raw: RawSignaling,
    media: &MediaConfig,
    admin: SocketAddr,
) -> Result<SignalingConfig, ConfigError> {
    let cores = convert_lane("signaling", &raw.cores, media, None)?;
    let drain_timeout = duration_in(
        "signaling.drain_timeout",
        &raw.drain_timeout,
        Duration::ZERO..=DRAIN_TIMEOUT_LIMIT,
        "must be in 0s..=10m",
    )?;
    check_header_identity(&raw.header_identity)?;
    let max_request_body_retry = int_in(
        "signaling.max_request_body_retry",
        raw.max_request_body_retry,
        MAX_REQUEST_BODY_RETRY_RANGE,
    )?;
    let upstream_resumption = duration_in(
        "signaling.upstream_resumption",
        &raw.upstream_resumption,
        Duration::ZERO..=UPSTREAM_RESUMPTION_LIMIT,
        "must be in 0s..=24h",
    )?;
    let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(raw.listeners.len());
    for (index, raw_listener) in raw.listeners.into_iter().enumerate() {
        let listener = convert_listener(index, raw_listener, &listeners, admin)?;
        listeners.push(listener);
    }
    Ok(SignalingConfig {
        cores,
        drain_timeout,
        access_log: raw.access_log,
        header_identity: raw.header_identity,
        max_request_body_retry,
        upstream_resumption,
        listeners,
    })
}

/// An HTTP field name (RFC 9110 token) in lower case, as HTTP/2 requires on the wire.
fn check_header_identity(name: &str) -> Result<(), ConfigError> {
    let path = "signaling.header_identity";
    let token_ok = (1..=HEADER_NAME_MAX_LEN).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        });
    if !token_ok {
        return Err(ConfigError::invalid(
            path,
            quoted(name),
            format!(
                "must be a lower-case header name, 1..={HEADER_NAME_MAX_LEN} characters of \
                 [a-z0-9] and !#$%&'*+-.^_`|~"
            ),
        ));
    }
    if RESERVED_HEADERS.contains(&name) {
        return Err(ConfigError::invalid(
            path,
            quoted(name),
            "is a header the proxy or HTTP itself manages; pick a header of its own such as \
             \"x-popmesh-peer-identity\"",
        ));
    }
    Ok(())
}

/// Whether two TCP binds conflict: same port, same family, and the same IP or either one
/// unspecified (the media ports' rule with a count of one).
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn convert_listener(
    index: usize,
    raw: RawListener,
    earlier: &[ListenerConfig],
    admin: SocketAddr,
) -> Result<ListenerConfig, ConfigError> {
    let base = format!("signaling.listeners[{index}]");
    if !is_valid_port_name(&raw.name) {
        return Err(ConfigError::invalid(
            format!("{base}.name"),
            quoted(&raw.name),
            "is not a valid listener name ([a-z0-9_-]{1,32})",
        ));
    }
    if let Some(other) = earlier.iter().position(|l| l.name == raw.name) {
        return Err(ConfigError::invalid(
            format!("{base}.name"),
            quoted(&raw.name),
            format!("is already the name of signaling.listeners[{other}]"),
        ));
    }

    let bind_path = format!("{base}.bind");
    let bind = parse_addr(&bind_path, &raw.bind)?;
    if bind.port() == 0 {
        return Err(ConfigError::invalid(
            bind_path,
            quoted(&raw.bind),
            "has port 0; a listener needs a fixed port that callers can connect to",
        ));
    }
    if let Some((other, existing)) = earlier
        .iter()
        .enumerate()
        .find(|(_, l)| binds_overlap(l.bind, bind))
    {
        return Err(ConfigError::invalid(
            bind_path,
            quoted(&raw.bind),
            format!(
                "overlaps signaling.listeners[{other}] {:?} ({}); every address may be opened \
                 once",
                existing.name, existing.bind
            ),
        ));
    }
    if admin.port() != 0 && binds_overlap(admin, bind) {
        return Err(ConfigError::invalid(
            bind_path,
            quoted(&raw.bind),
            format!("overlaps admin.listen ({admin}); the admin server needs its own socket"),
        ));
    }

    let direction = match raw.direction.as_str() {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        _ => {
            return Err(ConfigError::invalid(
                format!("{base}.direction"),
                quoted(&raw.direction),
                "must be \"inbound\" (callers present an SVID, mutual TLS) or \"outbound\" \
                 (cleartext from local callers on this host)",
            ))
        }
    };
    if direction == Direction::Outbound && !bind.ip().is_loopback() {
        return Err(ConfigError::invalid(
            bind_path,
            quoted(&raw.bind),
            "must be a loopback address (127.0.0.0/8 or [::1]) with direction = \"outbound\": \
             the listener takes cleartext and vouches for every caller as its identity, so only \
             callers on this host may reach it",
        ));
    }

    let protocol =
        match raw.protocol.as_str() {
            "http" => Protocol::Http,
            "tcp" => Protocol::Tcp,
            _ => return Err(ConfigError::invalid(
                format!("{base}.protocol"),
                quoted(&raw.protocol),
                "must be \"http\" (HTTP/1.1, HTTP/2, gRPC, WebSocket) or \"tcp\" (pass-through \
                 to `service`)",
            )),
        };
    let service_path = format!("{base}.service");
    let service = match (protocol, raw.service.is_empty()) {
        (Protocol::Http, true) => None,
        (Protocol::Http, false) => {
            return Err(ConfigError::invalid(
                service_path,
                quoted(&raw.service),
                "is only used with protocol = \"tcp\"; http listeners route each request by \
                 the control daemon's routes",
            ))
        }
        (Protocol::Tcp, true) => {
            return Err(ConfigError::invalid(
                service_path,
                "(missing)",
                "is required with protocol = \"tcp\": the control-API service the connections \
                 pass through to",
            ))
        }
        (Protocol::Tcp, false) => {
            if popmesh_ctrl_api::validate::resource_name("", &raw.service).is_err() {
                return Err(ConfigError::invalid(
                    service_path,
                    quoted(&raw.service),
                    "is not a service name (1..=63 characters of [a-z0-9-], not starting or \
                     ending with '-')",
                ));
            }
            Some(raw.service)
        }
    };

    let identity_path = format!("{base}.identity");
    let identity =
        match (direction, raw.identity.is_empty()) {
            (Direction::Inbound, true) => None,
            (Direction::Inbound, false) => return Err(ConfigError::invalid(
                identity_path,
                quoted(&raw.identity),
                "is only used with direction = \"outbound\"; inbound callers are identified by \
                 the SVID they present",
            )),
            (Direction::Outbound, true) => {
                return Err(ConfigError::invalid(
                    identity_path,
                    "(missing)",
                    "is required with direction = \"outbound\": the SPIFFE ID \
                 (spiffe://<td>/ns/<ns>/sa/<name>) local callers are authorized as",
                ))
            }
            (Direction::Outbound, false) => {
                let id = SpiffeId::parse(&raw.identity).map_err(|e| {
                    ConfigError::invalid(
                        &identity_path,
                        quoted(&raw.identity),
                        format!("is not a SPIFFE ID spiffe://<td>/ns/<ns>/sa/<name>: {e}"),
                    )
                })?;
                if id.role() != Role::Service {
                    return Err(ConfigError::invalid(
                        identity_path,
                        quoted(&raw.identity),
                        format!(
                            "is in the reserved namespace {:?}; local callers are authorized as a \
                         service identity, never as an operator or appliance",
                            id.namespace()
                        ),
                    ));
                }
                Some(id)
            }
        };

    let idle_timeout = duration_in(
        &format!("{base}.idle_timeout"),
        &raw.idle_timeout,
        IDLE_TIMEOUT_RANGE,
        "must be in 1s..=7d",
    )?;
    let max_connections = int_in(
        &format!("{base}.max_connections"),
        raw.max_connections,
        MAX_CONNECTIONS_RANGE,
    )?;

    Ok(ListenerConfig {
        name: raw.name,
        bind,
        direction,
        protocol,
        service,
        identity,
        idle_timeout,
        max_connections,
    })
}

fn parse_port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let (first, last) = s.split_once('-')?;
    let first: u16 = first.trim().parse().ok()?;
    let last: u16 = last.trim().parse().ok()?;
    (first >= 1 && first <= last).then_some(first..=last)
}

fn serialize_port_range<S: Serializer>(
    range: &Option<RangeInclusive<u16>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match range {
        Some(range) => s.serialize_str(&format!("{}-{}", range.start(), range.end())),
        None => s.serialize_none(),
    }
}

impl TryFrom<RawIdle> for IdleConfig {
    type Error = ConfigError;

    fn try_from(raw: RawIdle) -> Result<Self, ConfigError> {
        let spin_polls = int_in("media.idle.spin_polls", raw.spin_polls, SPIN_POLLS_RANGE)?;
        let path = "media.idle.max_wait";
        let max_wait = parse_duration(&raw.max_wait)
            .map_err(|rule| ConfigError::invalid(path, quoted(&raw.max_wait), rule))?;
        if max_wait.is_zero() || max_wait > MAX_WAIT_LIMIT {
            return Err(ConfigError::invalid(
                path,
                quoted(&raw.max_wait),
                "must be more than 0 and at most 1s",
            ));
        }
        let coalesce = duration_in(
            "media.idle.coalesce",
            &raw.coalesce,
            Duration::ZERO..=COALESCE_LIMIT,
            "must be at most 1ms (it adds up to this much latency)",
        )?;
        Ok(IdleConfig {
            spin_polls,
            max_wait,
            coalesce,
        })
    }
}

impl TryFrom<RawUring> for UringConfig {
    type Error = ConfigError;

    fn try_from(raw: RawUring) -> Result<Self, ConfigError> {
        Ok(UringConfig {
            ring_entries: power_of_two_in(
                "media.uring.ring_entries",
                raw.ring_entries,
                RING_ENTRIES_RANGE,
            )?,
            buffers: power_of_two_in("media.uring.buffers", raw.buffers, BUFFERS_RANGE)?,
            buffer_size: int_in(
                "media.uring.buffer_size",
                raw.buffer_size,
                BUFFER_SIZE_RANGE,
            )?,
            gso: raw.gso,
            rcvbuf_bytes: int_in(
                "media.uring.rcvbuf_bytes",
                raw.rcvbuf_bytes,
                SOCKET_BUF_RANGE,
            )?,
            sndbuf_bytes: int_in(
                "media.uring.sndbuf_bytes",
                raw.sndbuf_bytes,
                SOCKET_BUF_RANGE,
            )?,
        })
    }
}

impl TryFrom<RawDpdk> for DpdkConfig {
    type Error = ConfigError;

    fn try_from(raw: RawDpdk) -> Result<Self, ConfigError> {
        let main_core = usize::try_from(raw.main_core)
            .ok()
            .filter(|_| raw.main_core < CPU_SETSIZE)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "media.dpdk.main_core",
                    raw.main_core.to_string(),
                    format!("is not a CPU id (0..={})", CPU_SETSIZE - 1),
                )
            })?;
        let memory_mb = int_in("media.dpdk.memory_mb", raw.memory_mb, DPDK_MEMORY_RANGE)?;
        let prefix_ok = (1..=DPDK_FILE_PREFIX_MAX_LEN).contains(&raw.file_prefix.len())
            && raw
                .file_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !prefix_ok {
            return Err(ConfigError::invalid(
                "media.dpdk.file_prefix",
                quoted(&raw.file_prefix),
                "must be 1..=32 characters of [A-Za-z0-9_-]",
            ));
        }
        for (index, vdev) in raw.vdevs.iter().enumerate() {
            let name = vdev.split(',').next().unwrap_or_default();
            if name.is_empty() || vdev.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    format!("media.dpdk.vdevs[{index}]"),
                    quoted(vdev),
                    "must be a device name with optional ,key=value arguments and no spaces, \
                     e.g. \"net_af_xdp0,iface=eth1\"",
                ));
            }
        }
        for (index, pci) in raw.pci_allow.iter().enumerate() {
            if !is_pci_address(pci) {
                return Err(ConfigError::invalid(
                    format!("media.dpdk.pci_allow[{index}]"),
                    quoted(pci),
                    "is not a PCI address (domain:bus:device.function, e.g. \"0000:03:00.0\")",
                ));
            }
        }
        for (index, arg) in raw.eal_args.iter().enumerate() {
            if arg.is_empty() {
                return Err(ConfigError::invalid(
                    format!("media.dpdk.eal_args[{index}]"),
                    "\"\"",
                    "is empty; leave it out",
                ));
            }
        }
        let rx_desc = power_of_two_in("media.dpdk.rx_desc", raw.rx_desc, DPDK_DESC_RANGE)?;
        let tx_desc = power_of_two_in("media.dpdk.tx_desc", raw.tx_desc, DPDK_DESC_RANGE)?;
        let mbufs = if raw.mbufs == 0 {
            0
        } else {
            int_in("media.dpdk.mbufs", raw.mbufs, DPDK_MBUFS_RANGE).map_err(|_| {
                ConfigError::invalid(
                    "media.dpdk.mbufs",
                    raw.mbufs.to_string(),
                    format!(
                        "must be 0 (sized by rule) or in {}..={}",
                        DPDK_MBUFS_RANGE.start(),
                        DPDK_MBUFS_RANGE.end()
                    ),
                )
            })?
        };
        let mbuf_cache = int_in(
            "media.dpdk.mbuf_cache",
            raw.mbuf_cache,
            DPDK_MBUF_CACHE_RANGE,
        )?;
        Ok(DpdkConfig {
            main_core,
            hugepages: raw.hugepages,
            memory_mb,
            file_prefix: raw.file_prefix,
            vdevs: raw.vdevs,
            pci_allow: raw.pci_allow,
            eal_args: raw.eal_args,
            rx_desc,
            tx_desc,
            mbufs,
            mbuf_cache,
            exception_tap: raw.exception_tap,
        })
    }
}

/// `dddd:bb:dd.f` or the short `bb:dd.f`, hexadecimal.
fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let Some((rest, function)) = s.rsplit_once('.') else {
        return false;
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let ids_ok = match parts.as_slice() {
        [domain, bus, dev] => hex(domain, 4) && hex(bus, 2) && hex(dev, 2),
        [bus, dev] => hex(bus, 2) && hex(dev, 2),
        _ => false,
    };
    ids_ok && function.len() == 1 && function.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

fn is_valid_port_name(name: &str) -> bool {
    (1..=PORT_NAME_MAX_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether two port entries claim a common address: same family, same IP or either one
/// unspecified (a wildcard bind conflicts with every address of its family), and intersecting
/// port ranges.
fn ports_overlap(a: &PortConfig, b: &PortConfig) -> bool {
    let (a_ip, b_ip) = (a.bind.ip(), b.bind.ip());
    if a_ip.is_ipv4() != b_ip.is_ipv4() {
        return false;
    }
    if a_ip != b_ip && !a_ip.is_unspecified() && !b_ip.is_unspecified() {
        return false;
    }
    if a.l2.is_some() || b.l2.is_some() {
        // An L2 port owns its whole IP: publishers may use any UDP port of it.
        return true;
    }
    let a_first = u32::from(a.bind.port());
    let b_first = u32::from(b.bind.port());
    a_first < b_first + u32::from(b.count) && b_first < a_first + u32::from(a.count)
}

fn convert_ports(raw: Vec<RawPort>, backend: BackendKind) -> Result<Vec<PortConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::invalid(
            "media.ports",
            "[]",
            "must list at least one port ([[media.ports]] with name and bind)",
        ));
    }
    let mut ports: Vec<PortConfig> = Vec::with_capacity(raw.len());
    let mut total_ids: u32 = 0;
    for (index, raw_port) in raw.into_iter().enumerate() {
        let base = format!("media.ports[{index}]");
        if !is_valid_port_name(&raw_port.name) {
            return Err(ConfigError::invalid(
                format!("{base}.name"),
                quoted(&raw_port.name),
                "is not a valid port name ([a-z0-9_-]{1,32})",
            ));
        }
        if let Some(other) = ports.iter().position(|p| p.name == raw_port.name) {
            return Err(ConfigError::invalid(
                format!("{base}.name"),
                quoted(&raw_port.name),
                format!("is already the name of media.ports[{other}]"),
            ));
        }
        let bind_path = format!("{base}.bind");
        let bind = parse_addr(&bind_path, &raw_port.bind)?;
        if bind.port() == 0 {
            return Err(ConfigError::invalid(
                bind_path,
                quoted(&raw_port.bind),
                "has port 0; a media port needs a fixed port that publishers can send to",
            ));
        }
        let count_path = format!("{base}.count");
        let count: u16 = int_in(&count_path, raw_port.count, PORT_COUNT_RANGE)?;
        let last = u32::from(bind.port()) + u32::from(count) - 1;
        if last > u32::from(u16::MAX) {
            return Err(ConfigError::invalid(
                count_path,
                count.to_string(),
                format!(
                    "runs past UDP port 65535 from {bind} (at most {} here)",
                    u32::from(u16::MAX) - u32::from(bind.port()) + 1
                ),
            ));
        }
        total_ids += u32::from(count);
        if total_ids > MAX_PORT_IDS {
            return Err(ConfigError::invalid(
                count_path,
                count.to_string(),
                format!(
                    "brings the number of PortIds to {total_ids}, more than the {MAX_PORT_IDS} a u16 PortId can count"
                ),
            ));
        }
        let l2 = convert_l2(&base, &raw_port, bind, count, backend)?;
        if let Some(l2) = &l2 {
            let same_device =
                |p: &&PortConfig| p.l2.as_ref().is_some_and(|e| e.device == l2.device);
            if let Some((other, existing)) = ports.iter().enumerate().find(|(_, p)| same_device(p))
            {
                return Err(ConfigError::invalid(
                    format!("{base}.device"),
                    quoted(&l2.device),
                    format!(
                        "is already the device of media.ports[{other}] {:?}",
                        existing.name
                    ),
                ));
            }
        }
        let port = PortConfig {
            name: raw_port.name,
            bind,
            count,
            l2,
        };
        if let Some((other, existing)) = ports
            .iter()
            .enumerate()
            .find(|(_, existing)| ports_overlap(existing, &port))
        {
            return Err(ConfigError::invalid(
                bind_path,
                quoted(&raw_port.bind),
                format!(
                    "overlaps media.ports[{other}] {:?} ({}); every address may be opened once",
                    existing.name,
                    describe_range(existing)
                ),
            ));
        }
        ports.push(port);
    }
    Ok(ports)
}

/// The L2 keys of a port: required with `dpdk`, refused otherwise.
fn convert_l2(
    base: &str,
    raw: &RawPort,
    bind: SocketAddr,
    count: u16,
    backend: BackendKind,
) -> Result<Option<L2PortConfig>, ConfigError> {
    if backend != BackendKind::Dpdk {
        let stray = [
            ("device", raw.device.is_some()),
            ("gateway_mac", raw.gateway_mac.is_some()),
            ("mtu", raw.mtu.is_some()),
            ("prefix_len", raw.prefix_len.is_some()),
        ];
        if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(ConfigError::invalid(
                format!("{base}.{key}"),
                "(set)",
                "is only used with media.backend = \"dpdk\"; remove it",
            ));
        }
        return Ok(None);
    }
    let device = raw.device.clone().ok_or_else(|| {
        ConfigError::invalid(
            format!("{base}.device"),
            "(missing)",
            "is required with media.backend = \"dpdk\": the DPDK device name, a PCI address \
             (\"0000:03:00.0\") or a vdev name (\"net_af_xdp0\")",
        )
    })?;
    if device.is_empty() || device.contains(',') || device.chars().any(char::is_whitespace) {
        return Err(ConfigError::invalid(
            format!("{base}.device"),
            quoted(&device),
            "must be a bare device name without arguments (put vdev arguments in \
             media.dpdk.vdevs)",
        ));
    }
    if count != 1 {
        return Err(ConfigError::invalid(
            format!("{base}.count"),
            count.to_string(),
            "must be 1 with media.backend = \"dpdk\" (an L2 port owns every UDP port of its IP)",
        ));
    }
    if bind.ip().is_unspecified() {
        return Err(ConfigError::invalid(
            format!("{base}.bind"),
            quoted(&bind.to_string()),
            "must be the port's own address with media.backend = \"dpdk\" (not unspecified)",
        ));
    }
    let mac_path = format!("{base}.gateway_mac");
    let gateway_mac = match &raw.gateway_mac {
        None => {
            return Err(ConfigError::invalid(
                mac_path,
                "(missing)",
                "is required with media.backend = \"dpdk\": the next hop's MAC \
                 (e.g. \"02:00:00:00:00:01\")",
            ))
        }
        Some(text) => parse_mac(text).ok_or_else(|| {
            ConfigError::invalid(
                &mac_path,
                quoted(text),
                "is not a MAC address (aa:bb:cc:dd:ee:ff)",
            )
        })?,
    };
    let mtu = int_in(
        &format!("{base}.mtu"),
        raw.mtu.unwrap_or(defaults::MTU),
        MTU_RANGE,
    )?;
    let max_prefix: i64 = if bind.is_ipv4() { 32 } else { 128 };
    let prefix_len = int_in(
        &format!("{base}.prefix_len"),
        raw.prefix_len
            .unwrap_or(if bind.is_ipv4() { 24 } else { 64 }),
        1..=max_prefix,
    )?;
    Ok(Some(L2PortConfig {
        device,
        gateway_mac,
        mtu,
        prefix_len,
    }))
}

fn convert_session(
    index: usize,
    raw: RawSession,
    media: &MediaConfig,
    earlier: &[SessionConfig],
) -> Result<SessionConfig, ConfigError> {
    let base = format!("sessions[{index}]");
    let ports = &media.ports;

    let name_chars = raw.name.chars().count();
    if raw.name.trim().is_empty() || name_chars > SESSION_NAME_MAX_CHARS {
        return Err(ConfigError::invalid(
            format!("{base}.name"),
            quoted(&raw.name),
            format!("must be 1..={SESSION_NAME_MAX_CHARS} characters, not all whitespace"),
        ));
    }
    if let Some(other) = earlier.iter().position(|s| s.name == raw.name) {
        return Err(ConfigError::invalid(
            format!("{base}.name"),
            quoted(&raw.name),
            format!("is already the name of sessions[{other}]"),
        ));
    }

    let ingress_path = format!("{base}.ingress");
    let ingress = parse_addr(&ingress_path, &raw.ingress)?;
    let ingress_port = lookup_port_id(ports, ingress).ok_or_else(|| {
        ConfigError::invalid(
            &ingress_path,
            quoted(&raw.ingress),
            "is not opened by any of media.ports (needs a port range on that IP, or on the \
             unspecified address of its family; with dpdk, a port with that IP)",
        )
    })?;
    if let Some((other, existing)) = earlier
        .iter()
        .enumerate()
        .find(|(_, s)| s.ingress == ingress)
    {
        return Err(ConfigError::invalid(
            ingress_path,
            quoted(&raw.ingress),
            format!(
                "is already the ingress of sessions[{other}] {:?}",
                existing.name
            ),
        ));
    }
    let ingress_entry = port_of_id(ports, ingress_port)
        .expect("lookup_port_id returns PortIds of existing entries");

    let source = match &raw.source {
        None => None,
        Some(text) => {
            let path = format!("{base}.source");
            let source = parse_addr(&path, text)?;
            if source.ip().is_unspecified() || source.port() == 0 {
                return Err(ConfigError::invalid(
                    path,
                    quoted(text),
                    "is not a concrete sender address (unspecified IP or port 0); leave \
                     `source` out to accept the first sender",
                ));
            }
            check_family(&path, text, source, ingress_entry, "arrives on")?;
            Some(source)
        }
    };

    let clock_rate = match raw.clock_rate {
        Some(rate) => int_in(&format!("{base}.clock_rate"), rate, CLOCK_RATE_RANGE)?,
        None => media.clock_rate,
    };

    let subscribers_path = format!("{base}.subscribers");
    if raw.subscribers.is_empty() || raw.subscribers.len() > MAX_SUBSCRIBERS {
        let value = if raw.subscribers.is_empty() {
            "[]".to_string()
        } else {
            format!("{} entries", raw.subscribers.len())
        };
        return Err(ConfigError::invalid(
            subscribers_path,
            value,
            format!("must list 1..={MAX_SUBSCRIBERS} subscribers"),
        ));
    }
    let mut subscribers: Vec<SubscriberConfig> = Vec::with_capacity(raw.subscribers.len());
    let mut seen: HashMap<SocketAddr, usize> = HashMap::with_capacity(raw.subscribers.len());
    for (sub_index, raw_sub) in raw.subscribers.iter().enumerate() {
        let sub_base = format!("{subscribers_path}[{sub_index}]");
        let (addr_path, addr_text, egress) = match raw_sub {
            RawSubscriber::Plain(text) => (sub_base.clone(), text, None),
            RawSubscriber::Routed(routed) => (
                format!("{sub_base}.addr"),
                &routed.addr,
                routed.egress.as_deref(),
            ),
        };
        let addr = parse_addr(&addr_path, addr_text)?;
        let (egress_port, egress_entry) = match egress {
            None => (ingress_port, ingress_entry),
            Some(name) => {
                let (first, entry) = with_first_ids(ports)
                    .find(|(_, p)| p.name == name)
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            format!("{sub_base}.egress"),
                            quoted(name),
                            "is not the name of any of media.ports",
                        )
                    })?;
                let first = u16::try_from(first)
                    .expect("PortIds of parsed ports fit u16 (checked in convert_ports)");
                (first, entry)
            }
        };
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(ConfigError::invalid(
                addr_path,
                quoted(addr_text),
                "is not a concrete destination (unspecified IP or port 0)",
            ));
        }
        check_family(&addr_path, addr_text, addr, egress_entry, "leaves from")?;
        if addr == ingress {
            return Err(ConfigError::invalid(
                addr_path,
                quoted(addr_text),
                "is the session's own ingress; relaying to it would loop",
            ));
        }
        if let Some(first) = seen.insert(addr, sub_index) {
            return Err(ConfigError::invalid(
                addr_path,
                quoted(addr_text),
                format!("is already {subscribers_path}[{first}]"),
            ));
        }
        subscribers.push(SubscriberConfig { addr, egress_port });
    }

    Ok(SessionConfig {
        name: raw.name,
        ingress,
        ingress_port,
        source,
        clock_rate,
        subscribers,
    })
}

/// Rejects an address whose family differs from the port it travels through: a socket of one
/// family cannot send to or receive from the other.
fn check_family(
    path: &str,
    text: &str,
    addr: SocketAddr,
    port: &PortConfig,
    relation: &str,
) -> Result<(), ConfigError> {
    if addr.is_ipv4() == port.bind.is_ipv4() {
        return Ok(());
    }
    Err(ConfigError::invalid(
        path,
        quoted(text),
        format!(
            "is {} but {relation} port {:?}, which is bound to {} address {}",
            family(addr.ip()),
            port.name,
            family(port.bind.ip()),
            port.bind
        ),
    ))
}

// --- Serialization in the file format -------------------------------------------------------

/// The file form of a [`Config`]: sessions name their egress ports instead of holding PortIds.
#[derive(Serialize)]
struct FileView<'a> {
    admin: &'a AdminConfig,
    log: &'a LogConfig,
    media: &'a MediaConfig,
    signaling: &'a SignalingConfig,
    housekeeping: &'a CoreLaneConfig,
    sessions: Vec<SessionView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    control: Option<&'a ControlConfig>,
}

#[derive(Serialize)]
struct SessionView<'a> {
    name: &'a str,
    ingress: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SocketAddr>,
    clock_rate: u32,
    subscribers: Vec<SubscriberView<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum SubscriberView<'a> {
    /// Leaves from the ingress port, the default.
    Plain(SocketAddr),
    /// Leaves from the named port.
    Routed { addr: SocketAddr, egress: &'a str },
}

impl<'a> FileView<'a> {
    fn new(config: &'a Config) -> Result<Self, String> {
        let ports = &config.media.ports;
        let mut sessions = Vec::with_capacity(config.sessions.len());
        for (index, session) in config.sessions.iter().enumerate() {
            if lookup_port_id(ports, session.ingress) != Some(session.ingress_port) {
                return Err(format!(
                    "sessions[{index}].ingress_port: PortId {} is not the port of ingress {}",
                    session.ingress_port, session.ingress
                ));
            }
            let mut subscribers = Vec::with_capacity(session.subscribers.len());
            for (sub_index, sub) in session.subscribers.iter().enumerate() {
                if sub.egress_port == session.ingress_port {
                    subscribers.push(SubscriberView::Plain(sub.addr));
                    continue;
                }
                let (_, port) = with_first_ids(ports)
                    .find(|(first, _)| *first == u32::from(sub.egress_port))
                    .ok_or_else(|| {
                        format!(
                            "sessions[{index}].subscribers[{sub_index}].egress_port: PortId {} \
                             is neither the ingress port nor the first PortId of a port, so \
                             it has no name",
                            sub.egress_port
                        )
                    })?;
                subscribers.push(SubscriberView::Routed {
                    addr: sub.addr,
                    egress: &port.name,
                });
            }
            sessions.push(SessionView {
                name: &session.name,
                ingress: session.ingress,
                source: session.source,
                clock_rate: session.clock_rate,
                subscribers,
            });
        }
        Ok(FileView {
            admin: &config.admin,
            log: &config.log,
            media: &config.media,
            signaling: &config.signaling,
            housekeeping: &config.housekeeping,
            sessions,
            control: config.control.as_ref(),
        })
    }
}

impl Serialize for Config {
    /// Writes the file format (see [`Config`]); fails like [`Config::to_toml`] on a hand-built
    /// configuration the format cannot express.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        FileView::new(self)
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, bind: &str, count: u16) -> PortConfig {
        PortConfig {
            name: name.to_string(),
            bind: bind.parse().expect("test address"),
            count,
            l2: None,
        }
    }

    #[test]
    fn typed_defaults_match_the_file_defaults() {
        let parsed = Config::from_toml("[[media.ports]]\nname = \"a\"\nbind = \"127.0.0.1:40000\"")
            .expect("minimal config parses");
        assert_eq!(parsed.admin, AdminConfig::default());
        assert_eq!(parsed.log, LogConfig::default());
        assert_eq!(parsed.media.idle, IdleConfig::default());
        assert_eq!(parsed.media.uring, UringConfig::default());
    }

    #[test]
    fn overlap_needs_same_family_matching_ip_and_shared_ports() {
        let a = port("a", "127.0.0.1:40000", 4);
        assert!(ports_overlap(&a, &port("b", "127.0.0.1:40003", 1)));
        assert!(!ports_overlap(&a, &port("b", "127.0.0.1:40004", 1)));
        assert!(ports_overlap(&a, &port("b", "127.0.0.1:39999", 2)));
        assert!(!ports_overlap(&a, &port("b", "127.0.0.1:39990", 10)));
        assert!(!ports_overlap(&a, &port("b", "127.0.0.2:40000", 4)));
        assert!(ports_overlap(&a, &port("b", "0.0.0.0:40001", 1)));
        assert!(!ports_overlap(&a, &port("b", "[::]:40001", 1)));
        assert!(!ports_overlap(&a, &port("b", "[::1]:40000", 4)));
    }

    #[test]
    fn lookup_prefers_exact_ip_over_wildcard_and_handles_bad_hand_built_ranges() {
        let ports = vec![
            port("any", "0.0.0.0:5000", 2),
            port("lo", "127.0.0.1:5000", 2),
            port("edge", "127.0.0.1:65535", 3),
        ];
        let id = |s: &str| lookup_port_id(&ports, s.parse().expect("test address"));
        assert_eq!(id("127.0.0.1:5001"), Some(3));
        assert_eq!(id("10.0.0.1:5001"), Some(1));
        assert_eq!(id("127.0.0.1:65535"), Some(4));
        assert_eq!(id("[::1]:5000"), None);
        assert_eq!(port_of_id(&ports, 4).map(|p| p.name.as_str()), Some("edge"));
        assert_eq!(port_of_id(&ports, 7), None);
    }

    #[test]
    fn port_range_text() {
        assert_eq!(parse_port_range("40000-49999"), Some(40000..=49999));
        assert_eq!(parse_port_range(" 5 - 5 "), Some(5..=5));
        assert_eq!(parse_port_range("0-10"), None);
        assert_eq!(parse_port_range("10-9"), None);
        assert_eq!(parse_port_range("10"), None);
        assert_eq!(parse_port_range("1-65536"), None);
    }
}
