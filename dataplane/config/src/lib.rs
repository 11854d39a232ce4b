//! Typed configuration of the `popmesh-dataplane` appliance, parsed from TOML.
//!
//! The file is parsed, not merely validated: serde reads it into private `Raw*` structs that
//! reject unknown keys, and `TryFrom` turns those into the typed [`Config`], enforcing every rule
//! below. A broken rule is reported with its path, the value and the rule, for example
//! `sessions[0].subscribers[2]: "127.0.0.1:99999" is not a valid socket address (ip:port)`.
//! The crate does no I/O except [`Config::from_file`], and no logging.
//!
//! # The file
//!
//! Every key has the default shown here except `media.ports` (at least one entry is required),
//! the keys of `[[sessions]]` not marked optional, and `name`, `bind` and `direction` of
//! `[[signaling.listeners]]`. The smallest valid file is therefore:
//!
//! ```toml
//! [[media.ports]]
//! name = "a"
//! bind = "127.0.0.1:40000"
//! ```
//!
//! A complete file with every key:
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:9100"        # admin HTTP server (/metrics, /healthz, /readyz, /config, /flows)
//!                                  # port 0 picks a free port
//!
//! [log]
//! level = "info"                   # tracing filter directive, non-empty
//! format = "text"                  # "text" | "json"
//!
//! [media]
//! backend = "uring"                # "uring" (io_uring UDP sockets) | "dpdk" (DPDK poll-mode ports)
//!                                  # | "mem" (in-memory rings, tests/benches only)
//! cores = [1]                      # one pinned poll-mode worker per listed CPU id; unique; 1..=128 entries, ids < 1024
//! burst = 32                       # packets per receive burst, 1..=256
//! max_flows = 65536                # flow table capacity, 1..=16_777_216
//! clock_rate = 90000               # default RTP clock rate in Hz for jitter, 1..=1_000_000 (sessions may override)
//! media_port_range = "40000-49999" # optional, no default; UDP ports considered media on L2
//!                                  # backends (no-flow drop vs exception path)
//!
//! [media.idle]
//! spin_polls = 256                 # empty polls before a worker backs off, 0..=1_000_000
//! max_wait = "200us"               # longest an idle worker waits for traffic; a number with a
//!                                  # unit (ns, us, ms, s, m, h, d; "0.5ms" works); 0 < d <= 1s
//! coalesce = "0us"                 # after a wake-up, wait up to this long for a fuller burst
//!                                  # (fewer wake-ups, bigger GSO batches); 0..=1ms, adds latency
//!
//! [media.uring]
//! ring_entries = 1024              # power of two, 8..=32768
//! buffers = 4096                   # provided receive buffers per worker, power of two, 16..=32768
//! buffer_size = 2048               # bytes, 512..=65536
//! gso = true                       # UDP generic segmentation offload for fan-out
//! rcvbuf_bytes = 4194304           # SO_RCVBUF, 4096..=1073741824
//! sndbuf_bytes = 4194304           # SO_SNDBUF, 4096..=1073741824
//!
//! [media.dpdk]                     # used only with backend = "dpdk"
//! main_core = 0                    # EAL main thread (admin, control); never one of media.cores
//! hugepages = true                 # false: EAL --no-huge (ordinary pages; labs and CI)
//! memory_mb = 1024                 # EAL -m, 64..=1048576
//! file_prefix = "popmesh"          # EAL --file-prefix, [A-Za-z0-9_-]{1,32}
//! vdevs = []                       # EAL --vdev each, e.g. "net_af_xdp0,iface=eth1"
//! pci_allow = []                   # EAL -a each ("0000:03:00.0"); empty: --no-pci
//! eal_args = []                    # appended verbatim
//! rx_desc = 1024                   # per queue, power of two, 64..=16384
//! tx_desc = 1024                   # per queue, power of two, 64..=16384
//! mbufs = 0                        # packet pool size; 0: DpdkConfig::pool_size's rule
//! mbuf_cache = 256                 # per-worker mempool cache, 0..=512
//! exception_tap = true             # a kernel TAP per port for ARP, ICMP and other non-media
//!
//! [[media.ports]]                  # ingress/egress points; PortIds are assigned in list order
//! name = "lab"                     # unique, [a-z0-9_-]{1,32}
//! bind = "127.0.0.1:40000"         # socket address, port != 0; 0.0.0.0 / [::] accept any local IP
//! count = 1                        # consecutive UDP ports starting at bind's port (1..=4096);
//!                                  # each is its own PortId, in order
//!
//! [[media.ports]]
//! name = "uplink"
//! bind = "127.0.0.1:40100"
//!
//! # With backend = "dpdk" a port is one DPDK device with its own IP, count = 1, and these keys
//! # (refused with other backends):
//! # device = "net_af_xdp0"         # PCI address or vdev name (required)
//! # gateway_mac = "02:00:00:00:00:01"  # next hop for everything the port sends (required)
//! # mtu = 1500                     # largest IP packet sent, 68..=9216
//! # prefix_len = 24                # of the address on the exception TAP (64 for IPv6)
//!
//! [signaling]                      # the signaling lane (popmesh-signal, an mTLS L7 proxy)
//! cores = []                       # CPUs reserved for it (and the control daemon); the media
//!                                  # workers run nothing there. Unique ids < 1024, at most 128,
//!                                  # never one of media.cores. Used by the layout checks
//!                                  # (`popmesh hw check`, and at start-up) and the planner
//!                                  # (`popmesh hw plan`)
//! drain_timeout = "5s"             # on SIGTERM: stop accepting, let requests finish up to
//!                                  # this long; 0s..=10m
//! access_log = true                # one JSON line per proxied request (tracing target
//!                                  # "popmesh::access")
//! header_identity = "x-popmesh-peer-identity"  # header carrying the caller's SPIFFE ID to
//!                                  # services; lower-case token characters, 1..=128, not one
//!                                  # the proxy manages (host, connection, content-length, ...)
//! max_request_body_retry = 65536   # bodies up to this many bytes are buffered so idempotent
//!                                  # requests can be retried; 0..=16777216 (16 MiB)
//! upstream_resumption = "10m"      # resume upstream TLS sessions (where the service offers
//!                                  # tickets) up to this long after the full handshake that
//!                                  # verified it, never across an SVID or bundle rotation;
//!                                  # 0s..=24h, 0s: always a full handshake
//!
//! [[signaling.listeners]]          # sockets of the lane; there may be none. Any listener
//!                                  # needs [control] (see below)
//! name = "inbound"                 # unique, [a-z0-9_-]{1,32}
//! bind = "0.0.0.0:8443"            # TCP socket address, port != 0
//! direction = "inbound"            # "inbound": callers must present an SVID (mutual TLS)
//!                                  # | "outbound": cleartext from local callers on this host
//!                                  # (bind must then be a loopback address)
//! protocol = "http"                # "http" (HTTP/1.1, HTTP/2 via ALPN or h2c prior knowledge,
//!                                  # gRPC, WebSocket) | "tcp" (pass-through to `service`)
//! service = ""                     # required for protocol = "tcp": a control-API service name
//!                                  # ([a-z0-9-]{1,63}); refused for "http"
//! identity = ""                    # outbound only, and required there: the SPIFFE ID
//!                                  # (spiffe://<td>/ns/<ns>/sa/<name>, not ns/operators or
//!                                  # ns/appliances) local callers are authorized as
//! idle_timeout = "1h"              # close a connection idle this long; 1s..=7d. WebSockets
//!                                  # count as active while either side sends
//! max_connections = 100000         # per listener, 1..=1000000
//!
//! [[signaling.listeners]]
//! name = "local"
//! bind = "127.0.0.1:15001"
//! direction = "outbound"
//! identity = "spiffe://pop1.example.net/ns/danmaku/sa/web"
//!
//! [housekeeping]                   # CPUs left to the OS, NIC interrupts, the admin server and
//! cores = []                       # EAL's main thread; same rules, and none of signaling.cores.
//!                                  # Empty: the checks treat media.dpdk.main_core (dpdk) as the
//!                                  # only housekeeping CPU
//!
//! [[sessions]]                     # static media sessions; there may be none
//! name = "lab-room-1"              # unique, 1..=64 characters
//! ingress = "127.0.0.1:40000"      # where the publisher sends; unique; opened by media.ports
//! source = "127.0.0.1:50000"       # optional: the only accepted sender; without it the first
//!                                  # sender is latched
//! clock_rate = 90000               # optional, defaults to media.clock_rate
//! subscribers = [                  # 1..=4096 unique destinations
//!     "127.0.0.1:41000",           # leaves from the ingress port
//!     "127.0.0.1:41001",
//!     { addr = "127.0.0.1:41002", egress = "uplink" },  # leaves from the named port's first PortId
//! ]
//!
//! [control]                        # optional: take sessions from the control daemon
//! endpoint = "https://127.0.0.1:7443"  # popmesh-ctrld's gRPC address; "host:port" works too;
//!                                  # https only (mutual TLS)
//! server_name = "ctrld.pop1.example.net"  # optional: name the daemon's certificate must carry;
//!                                  # defaults to the endpoint's host
//! appliance = "pop-1"              # this appliance's name, [a-z0-9.-_]{1,63}: its SPIFFE ID is
//!                                  # spiffe://<td>/ns/appliances/sa/pop-1
//! cert = "/etc/popmesh/pop-1.pem"  # the appliance SVID (PEM, chain appended)
//! key = "/etc/popmesh/pop-1-key.pem"   # its private key (PEM)
//! ca = "/etc/popmesh/ca.pem"       # trust bundle that verifies the daemon
//! state_dir = "/var/lib/popmesh"   # last accepted config (control-state.pb), used at start-up
//! backoff_min = "200ms"            # reconnect back-off: first delay, 0 < d <= 1h
//! backoff_max = "30s"              # longest delay (doubling with jitter), backoff_min..=1h
//! stats_interval = "10s"           # per-session stats reports to the daemon, 1s..=1h
//! ```
//!
//! With `[control]`, `[[sessions]]` must be empty: the agent owns the flow table and installs
//! exactly what the daemon (or, at start-up, the saved state) says. Without `[control]`,
//! `signaling.listeners` must be empty: the signaling lane takes its SVID from `control.cert`
//! and `control.key` and its routes, policies and trust bundle from the control daemon. Paths are not opened here;
//! the binary reads them at start-up and refuses to start when it cannot.
//!
//! # Rules beyond the ranges above
//!
//! - `media.ports`: names unique; address ranges do not overlap (same IP, or either bound to the
//!   unspecified address of the same family, with a shared UDP port) and end at or below port
//!   65535; the total number of PortIds fits a `u16` (at most 65535).
//! - `media.cores`: no CPU id twice; with `dpdk`, `media.dpdk.main_core` is not among them.
//! - `signaling.cores`, `housekeeping.cores`: no CPU id twice, none of `media.cores`, and the
//!   two lanes share no CPU. Whether the CPUs exist, are isolated or share a physical core is a
//!   property of the machine, checked by `popmesh-hw`, not here.
//! - `signaling.listeners`: only with `[control]`; names unique; binds do not overlap each other
//!   or `admin.listen` (same IP, or either bound to the unspecified address of the same family,
//!   on the same TCP port; an admin port 0 conflicts with nothing). `service` is set exactly for
//!   `protocol = "tcp"`; `identity` is set exactly for `direction = "outbound"`, parses as a
//!   SPIFFE ID (`popmesh_ctrl_api::SpiffeId`) outside the `operators` and `appliances`
//!   namespaces, and such a listener binds a loopback address (it vouches for every caller).
//! - `dpdk` ports: `device` unique; the IP is concrete and owned by one port (sessions may use
//!   any UDP port of it); relayed packets leave from `bind`.
//! - `sessions`: names unique; `ingress` unique and inside a port range, either on exactly the
//!   same IP or on a port bound to the unspecified address of the same family.
//! - `source` has the family of the ingress port; each subscriber has the family of the port it
//!   leaves from. Both must be concrete: no unspecified IP, no port 0.
//! - `egress` names an existing port; a subscriber is never the session's own ingress (a loop),
//!   and never listed twice.
//!
//! # Effective configuration
//!
//! [`Config`] serializes back to the file format with every default written out (durations in
//! their largest exact unit, `"200us"`, `"1h"`; empty `service` and `identity` left out); [`Config::to_toml`] gives the TOML text and the admin server can serve the same
//! shape as JSON. Either loads back to an equal `Config`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use popmesh_config::Config;
//!
//! let config = Config::from_toml(
//!     r#"
//!     [[media.ports]]
//!     name = "lab"
//!     bind = "127.0.0.1:40000"
//!     count = 2
//!
//!     [[sessions]]
//!     name = "lab-room-1"
//!     ingress = "127.0.0.1:40001"
//!     subscribers = ["127.0.0.1:41000", { addr = "127.0.0.1:41001", egress = "lab" }]
//!     "#,
//! )?;
//! assert_eq!(config.port_addrs().len(), 2);
//! let session = &config.sessions[0];
//! assert_eq!(session.ingress_port, 1);
//! assert_eq!(session.subscribers[0].egress_port, 1); // default: the ingress PortId
//! assert_eq!(session.subscribers[1].egress_port, 0); // named: the port's first PortId
//! assert_eq!(Config::from_toml(&config.to_toml()?)?, config);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod duration;
mod error;
mod raw;

pub use config::{
    format_mac, parse_mac, AdminConfig, BackendKind, Config, ControlConfig, CoreLaneConfig,
    Direction, DpdkConfig, IdleConfig, L2PortConfig, ListenerConfig, LogConfig, LogFormat,
    MediaConfig, PortConfig, Protocol, SessionConfig, SignalingConfig, SubscriberConfig,
    UringConfig,
};
pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ToTomlError};
