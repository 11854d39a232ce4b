//! The file as written: serde structs that only check the shape of the document.
//!
//! Every key is known (`deny_unknown_fields`: a typo is an error, not a silently ignored
//! setting). Addresses, enums and durations stay strings and numbers stay `i64` (TOML's integer
//! type) so that the conversion in [`crate::config`] can report an out-of-range or unparsable
//! value with its path and the rule it breaks, instead of serde's generic type error.
//!
//! Defaults live in [`crate::config::defaults`] and are rendered here in the file's own syntax,
//! so that a key left out behaves exactly like the documented value written out.

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config::defaults;
use crate::duration::format_duration;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub media: RawMedia,
    #[serde(default)]
    pub signaling: RawSignaling,
    #[serde(default)]
    pub housekeeping: RawCoreLane,
    #[serde(default)]
    pub sessions: Vec<RawSession>,
    #[serde(default)]
    pub control: Option<RawControl>,
}

/// `[control]`: the control daemon this appliance takes its sessions from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    pub endpoint: String,
    #[serde(default)]
    pub server_name: Option<String>,
    pub appliance: String,
    pub cert: String,
    pub key: String,
    pub ca: String,
    pub state_dir: String,
    #[serde(default = "default_backoff_min")]
    pub backoff_min: String,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: String,
    #[serde(default = "default_stats_interval")]
    pub stats_interval: String,
}

fn default_backoff_min() -> String {
    format_duration(defaults::BACKOFF_MIN)
}

fn default_backoff_max() -> String {
    format_duration(defaults::BACKOFF_MAX)
}

fn default_stats_interval() -> String {
    format_duration(defaults::STATS_INTERVAL)
}

/// `[signaling]`: the signaling lane's CPUs, proxy settings and listeners.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSignaling {
    pub cores: Vec<i64>,
    pub drain_timeout: String,
    pub access_log: bool,
    pub header_identity: String,
    pub max_request_body_retry: i64,
    pub upstream_resumption: String,
    pub listeners: Vec<RawListener>,
}

impl Default for RawSignaling {
    fn default() -> Self {
        RawSignaling {
            cores: Vec::new(),
            drain_timeout: format_duration(defaults::DRAIN_TIMEOUT),
            access_log: defaults::ACCESS_LOG,
            header_identity: defaults::HEADER_IDENTITY.to_string(),
            max_request_body_retry: defaults::MAX_REQUEST_BODY_RETRY,
            upstream_resumption: format_duration(defaults::UPSTREAM_RESUMPTION),
            listeners: Vec::new(),
        }
    }
}

/// One `[[signaling.listeners]]` entry. `name`, `bind` and `direction` have no default:
/// whether callers must present an SVID is never left to a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub bind: String,
    pub direction: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub identity: String,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: i64,
}

fn default_protocol() -> String {
    defaults::LISTENER_PROTOCOL.to_string()
}

fn default_idle_timeout() -> String {
    format_duration(defaults::IDLE_TIMEOUT)
}

fn default_max_connections() -> i64 {
    defaults::MAX_CONNECTIONS
}

/// `[housekeeping]`: a set of reserved CPUs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCoreLane {
    pub cores: Vec<i64>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: defaults::ADMIN_LISTEN.to_string(),
        }
    }
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: defaults::LOG_LEVEL.to_string(),
            format: defaults::LOG_FORMAT.to_string(),
        }
    }
}

/// `[media]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMedia {
    pub backend: String,
    pub cores: Vec<i64>,
    pub burst: i64,
    pub max_flows: i64,
    pub clock_rate: i64,
    pub media_port_range: Option<String>,
    pub idle: RawIdle,
    pub uring: RawUring,
    pub dpdk: RawDpdk,
    pub ports: Vec<RawPort>,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            backend: defaults::BACKEND.to_string(),
            cores: defaults::CORES.to_vec(),
            burst: defaults::BURST,
            max_flows: defaults::MAX_FLOWS,
            clock_rate: defaults::CLOCK_RATE,
            media_port_range: None,
            idle: RawIdle::default(),
            uring: RawUring::default(),
            dpdk: RawDpdk::default(),
            ports: Vec::new(),
        }
    }
}

/// `[media.idle]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdle {
    pub spin_polls: i64,
    pub max_wait: String,
    pub coalesce: String,
}

impl Default for RawIdle {
    fn default() -> Self {
        RawIdle {
            spin_polls: defaults::SPIN_POLLS,
            max_wait: format_duration(defaults::MAX_WAIT),
            coalesce: "0us".to_string(),
        }
    }
}

/// `[media.uring]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUring {
    pub ring_entries: i64,
    pub buffers: i64,
    pub buffer_size: i64,
    pub gso: bool,
    pub rcvbuf_bytes: i64,
    pub sndbuf_bytes: i64,
}

impl Default for RawUring {
    fn default() -> Self {
        RawUring {
            ring_entries: defaults::RING_ENTRIES,
            buffers: defaults::BUFFERS,
            buffer_size: defaults::BUFFER_SIZE,
            gso: defaults::GSO,
            rcvbuf_bytes: defaults::SOCKET_BUF_BYTES,
            sndbuf_bytes: defaults::SOCKET_BUF_BYTES,
        }
    }
}

/// `[media.dpdk]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDpdk {
    pub main_core: i64,
    pub hugepages: bool,
    pub memory_mb: i64,
    pub file_prefix: String,
    pub vdevs: Vec<String>,
    pub pci_allow: Vec<String>,
    pub eal_args: Vec<String>,
    pub rx_desc: i64,
    pub tx_desc: i64,
    pub mbufs: i64,
    pub mbuf_cache: i64,
    pub exception_tap: bool,
}

impl Default for RawDpdk {
    fn default() -> Self {
        RawDpdk {
            main_core: defaults::DPDK_MAIN_CORE,
            hugepages: true,
            memory_mb: defaults::DPDK_MEMORY_MB,
            file_prefix: defaults::DPDK_FILE_PREFIX.to_string(),
            vdevs: Vec::new(),
            pci_allow: Vec::new(),
            eal_args: Vec::new(),
            rx_desc: defaults::DPDK_DESC,
            tx_desc: defaults::DPDK_DESC,
            mbufs: 0,
            mbuf_cache: defaults::DPDK_MBUF_CACHE,
            exception_tap: true,
        }
    }
}

/// One `[[media.ports]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub name: String,
    pub bind: String,
    #[serde(default = "default_port_count")]
    pub count: i64,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub gateway_mac: Option<String>,
    #[serde(default)]
    pub mtu: Option<i64>,
    #[serde(default)]
    pub prefix_len: Option<i64>,
}

fn default_port_count() -> i64 {
    1
}

/// One `[[sessions]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub name: String,
    pub ingress: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub clock_rate: Option<i64>,
    pub subscribers: Vec<RawSubscriber>,
}

/// One entry of `subscribers`: `"ip:port"` or `{ addr = "ip:port", egress = "port-name" }`.
#[derive(Debug)]
pub enum RawSubscriber {
    Plain(String),
    Routed(RawRoutedSubscriber),
}

/// The table form of a subscriber.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutedSubscriber {
    pub addr: String,
    #[serde(default)]
    pub egress: Option<String>,
}

// Hand-written rather than `#[serde(untagged)]`: untagged enums swallow the inner error and report
// "data did not match any variant", which would hide a typo such as `{ adr = ".." }`.
impl<'de> Deserialize<'de> for RawSubscriber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SubscriberVisitor;

        impl<'de> Visitor<'de> for SubscriberVisitor {
            type Value = RawSubscriber;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a socket address string or a table { addr, egress }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawSubscriber::Plain(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawRoutedSubscriber::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawSubscriber::Routed)
            }
        }

        deserializer.deserialize_any(SubscriberVisitor)
    }
}
