//! Properties: the parser never panics, and every configuration it accepts (or that is valid by
//! construction) serializes to a file that loads back to the same value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use popmesh_config::{
    AdminConfig, BackendKind, Config, ControlConfig, Direction, IdleConfig, ListenerConfig,
    LogConfig, LogFormat, MediaConfig, PortConfig, Protocol, SessionConfig, SignalingConfig,
    SubscriberConfig, UringConfig,
};
use popmesh_ctrl_api::SpiffeId;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The config written as TOML and as `/config` JSON both load back to `config`.
fn assert_round_trips(config: &Config) -> Result<(), TestCaseError> {
    let text = config
        .to_toml()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    match Config::from_toml(&text) {
        Ok(reparsed) => prop_assert_eq!(&reparsed, config, "TOML:\n{}", text),
        Err(e) => return Err(TestCaseError::fail(format!("{e}\n--- written ---\n{text}"))),
    }
    let json = serde_json::to_value(config).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let from_json = toml::to_string(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match Config::from_toml(&from_json) {
        Ok(reparsed) => prop_assert_eq!(&reparsed, config, "from JSON:\n{}", from_json),
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "{e}\n--- from JSON ---\n{from_json}"
            )))
        }
    }
    Ok(())
}

// --- TOML-ish documents ---------------------------------------------------------------------

const HEADERS: &[&str] = &[
    "[admin]",
    "[log]",
    "[media]",
    "[media.idle]",
    "[media.uring]",
    "[[media.ports]]",
    "[[sessions]]",
    "[[sessions.subscribers]]",
    "[media.ports]",
    "[sessions]",
    "[signaling]",
    "[[signaling.listeners]]",
    "[signaling.listeners]",
    "[control]",
    "[other]",
];

const KEYS: &[&str] = &[
    "listen",
    "level",
    "format",
    "backend",
    "cores",
    "burst",
    "max_flows",
    "clock_rate",
    "media_port_range",
    "spin_polls",
    "max_wait",
    "ring_entries",
    "buffers",
    "buffer_size",
    "gso",
    "rcvbuf_bytes",
    "sndbuf_bytes",
    "name",
    "bind",
    "count",
    "ingress",
    "source",
    "subscribers",
    "addr",
    "egress",
    "drain_timeout",
    "access_log",
    "header_identity",
    "max_request_body_retry",
    "upstream_resumption",
    "listeners",
    "direction",
    "protocol",
    "service",
    "identity",
    "idle_timeout",
    "max_connections",
    "unknown",
];

const STRINGS: &[&str] = &[
    "127.0.0.1:40000",
    "127.0.0.1:40001",
    "127.0.0.1:41000",
    "0.0.0.0:40000",
    "[::1]:40000",
    "[::]:40000",
    "[::1]:41000",
    "127.0.0.1:0",
    "127.0.0.1:99999",
    "200us",
    "1s",
    "0.5ms",
    "0ns",
    "2s",
    "text",
    "json",
    "uring",
    "mem",
    "info",
    "",
    " ",
    "lab",
    "a",
    "Lab",
    "40000-49999",
    "9-1",
    "ünïcödé",
    "\u{0}",
    "inbound",
    "outbound",
    "http",
    "tcp",
    "chat",
    "spiffe://pop.test/ns/danmaku/sa/web",
    "spiffe://pop.test/ns/operators/sa/alice",
    "x-popmesh-peer-identity",
    "Host",
    "127.0.0.1:9100",
    "0.0.0.0:8443",
    "10m",
    "1h",
    "7d",
    "8d",
];

/// Integers at or next to the edges of the schema's ranges.
const EDGE_INTS: &[i64] = &[
    -1,
    0,
    1,
    2,
    7,
    8,
    15,
    16,
    32,
    100,
    127,
    128,
    129,
    256,
    257,
    511,
    512,
    1000,
    1023,
    1024,
    4095,
    4096,
    4097,
    32768,
    32769,
    65535,
    65536,
    65537,
    90000,
    1_000_000,
    1_000_001,
    16_777_216,
    16_777_217,
    1_073_741_824,
    1_073_741_825,
];

/// `s` as a TOML basic string literal, escaped by toml itself.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        prop::sample::select(EDGE_INTS).prop_map(|v| v.to_string()),
        (-2i64..70_000).prop_map(|v| v.to_string()),
        prop::sample::select(STRINGS).prop_map(toml_string),
        "\\PC{0,12}".prop_map(|s| toml_string(&s)),
        // Rust's escapes are not all TOML's (`\u{0}`): exercises the string grammar.
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1.5".to_string()),
        Just("1979-05-27".to_string()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..3).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(HEADERS).prop_map(str::to_string),
        4 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\PC{0,20}",
    ]
}

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(line(), 0..24).prop_map(|lines| lines.join("\n"))
}

/// A valid document, one line of which is replaced by an arbitrary line: most mutations reach
/// the typed conversion instead of stopping at the TOML grammar.
const VALID_LINES: &[&str] = &[
    "[admin]",
    "listen = \"127.0.0.1:9100\"",
    "[log]",
    "level = \"info\"",
    "format = \"text\"",
    "[media]",
    "backend = \"mem\"",
    "cores = [1, 2]",
    "burst = 32",
    "max_flows = 1024",
    "clock_rate = 90000",
    "media_port_range = \"40000-49999\"",
    "[media.idle]",
    "spin_polls = 256",
    "max_wait = \"200us\"",
    "[media.uring]",
    "ring_entries = 1024",
    "buffers = 4096",
    "[[media.ports]]",
    "name = \"lab\"",
    "bind = \"127.0.0.1:40000\"",
    "count = 4",
    "[[media.ports]]",
    "name = \"v6\"",
    "bind = \"[::]:40000\"",
    "[[sessions]]",
    "name = \"one\"",
    "ingress = \"127.0.0.1:40001\"",
    "source = \"127.0.0.1:5000\"",
    "subscribers = [\"127.0.0.1:41000\", { addr = \"[::1]:41000\", egress = \"v6\" }]",
    "[[sessions]]",
    "name = \"two\"",
    "ingress = \"[::1]:40000\"",
    "clock_rate = 48000",
    "subscribers = [\"[::1]:41001\"]",
];

/// A second base: a control-managed appliance with signaling listeners (which need `[control]`,
/// which refuses file sessions).
const VALID_MESH_LINES: &[&str] = &[
    "[[media.ports]]",
    "name = \"lab\"",
    "bind = \"127.0.0.1:40000\"",
    "[signaling]",
    "cores = [0]",
    "drain_timeout = \"5s\"",
    "access_log = true",
    "header_identity = \"x-popmesh-peer-identity\"",
    "max_request_body_retry = 65536",
    "upstream_resumption = \"10m\"",
    "[[signaling.listeners]]",
    "name = \"inbound\"",
    "bind = \"0.0.0.0:8443\"",
    "direction = \"inbound\"",
    "protocol = \"http\"",
    "idle_timeout = \"1h\"",
    "max_connections = 100000",
    "[[signaling.listeners]]",
    "name = \"local\"",
    "bind = \"127.0.0.1:15001\"",
    "direction = \"outbound\"",
    "protocol = \"tcp\"",
    "service = \"chat\"",
    "identity = \"spiffe://pop.test/ns/danmaku/sa/web\"",
    "[control]",
    "endpoint = \"https://127.0.0.1:7443\"",
    "appliance = \"pop-1\"",
    "cert = \"/etc/popmesh/pop-1.pem\"",
    "key = \"/etc/popmesh/pop-1-key.pem\"",
    "ca = \"/etc/popmesh/ca.pem\"",
    "state_dir = \"/var/lib/popmesh\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Keep the key of the line (if it has one), write another value.
    Value(String),
    /// Replace the whole line.
    Line(String),
    /// Drop the line.
    Delete,
}

fn mutation() -> impl Strategy<Value = (usize, Mutation)> {
    let kind = prop_oneof![
        6 => scalar().prop_map(Mutation::Value),
        2 => value().prop_map(Mutation::Value),
        1 => line().prop_map(Mutation::Line),
        1 => Just(Mutation::Delete),
    ];
    (0..VALID_LINES.len().max(VALID_MESH_LINES.len()), kind)
}

fn mutated_document() -> impl Strategy<Value = String> {
    let base = prop::sample::select(&[VALID_LINES, VALID_MESH_LINES][..]);
    (base, prop::collection::vec(mutation(), 1..=2)).prop_map(|(base, mutations)| {
        let mut lines: Vec<Option<String>> = base.iter().map(|l| Some(l.to_string())).collect();
        for (at, mutation) in mutations {
            let Some(slot) = lines.get_mut(at) else {
                continue;
            };
            *slot = match (mutation, slot.as_deref()) {
                (Mutation::Value(value), Some(line)) => match line.split_once(" = ") {
                    Some((key, _)) => Some(format!("{key} = {value}")),
                    None => Some(line.to_string()),
                },
                (Mutation::Value(_), None) => None,
                (Mutation::Line(line), _) => Some(line),
                (Mutation::Delete, _) => None,
            };
        }
        lines.into_iter().flatten().collect::<Vec<_>>().join("\n")
    })
}

#[test]
fn the_mutation_base_is_valid() {
    let config = Config::from_toml(&VALID_LINES.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.sessions.len(), 2);
    assert_eq!(config.sessions[0].subscribers[1].egress_port, 4);
    let mesh = Config::from_toml(&VALID_MESH_LINES.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mesh.signaling.listeners.len(), 2);
}

// --- Valid-by-construction configurations ---------------------------------------------------

#[derive(Debug, Clone)]
struct PortSeed {
    v6: bool,
    wildcard: bool,
    start: u16,
    count: u16,
    name: String,
}

#[derive(Debug, Clone)]
struct SessionSeed {
    name: String,
    pick: usize,
    source: Option<(u32, u16)>,
    clock_rate: u32,
    subscribers: Vec<(usize, u32, u16)>,
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
    ]
}

fn port_seed() -> impl Strategy<Value = PortSeed> {
    (
        any::<bool>(),
        prop::bool::weighted(0.2),
        0u16..1000,
        1u16..=16,
        "[a-z0-9_-]{0,20}",
    )
        .prop_map(|(v6, wildcard, start, count, name)| PortSeed {
            v6,
            wildcard,
            start,
            count,
            name,
        })
}

fn session_seed() -> impl Strategy<Value = SessionSeed> {
    (
        "\\PC{0,30}",
        any::<usize>(),
        prop::option::of((any::<u32>(), any::<u16>())),
        1u32..=1_000_000,
        prop::collection::vec((any::<usize>(), any::<u32>(), any::<u16>()), 1..6),
    )
        .prop_map(
            |(name, pick, source, clock_rate, subscribers)| SessionSeed {
                name,
                pick,
                source,
                clock_rate,
                subscribers,
            },
        )
}

/// An IP of the given family that no port binds and no ingress uses.
fn remote_ip(v6: bool, bits: u32) -> IpAddr {
    if v6 {
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            1,
            0,
            0,
            0,
            (bits >> 16) as u16,
            (bits as u16).max(1),
        )
        .into()
    } else {
        Ipv4Addr::new(192, 0, (bits >> 8) as u8, (bits as u8).max(1)).into()
    }
}

/// Everything a generated configuration is built from.
#[derive(Debug, Clone)]
struct ConfigSeed {
    admin: SocketAddr,
    level: String,
    json: bool,
    mem: bool,
    cores: Vec<usize>,
    /// Candidate lane CPUs: those not already taken go alternately to signaling and housekeeping.
    lanes: Vec<usize>,
    numbers: (u16, u32, u32, u32, u64),
    media_port_range: Option<(u16, u16)>,
    uring: (u32, u32, u32, bool, usize, usize),
    port_seeds: Vec<PortSeed>,
    session_seeds: Vec<SessionSeed>,
    signaling: SignalingSeed,
}

#[derive(Debug, Clone)]
struct ListenerSeed {
    outbound: bool,
    /// 0: IPv4 wildcard, 1: IPv6 wildcard, 2: a concrete IPv4, 3: a concrete IPv6 (outbound:
    /// loopback of the family).
    ip: u8,
    /// `Some`: a tcp listener to this service.
    service: Option<String>,
    identity: (String, String),
    idle_secs: u64,
    max_connections: u32,
}

#[derive(Debug, Clone)]
struct SignalingSeed {
    drain_ms: u64,
    access_log: bool,
    header: String,
    max_body: u32,
    resumption_s: u64,
    /// Non-empty: the config is control-managed (listeners need `[control]`), with no sessions.
    listeners: Vec<ListenerSeed>,
}

fn listener_seed() -> impl Strategy<Value = ListenerSeed> {
    (
        any::<bool>(),
        0u8..4,
        prop::option::of("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"),
        ("[a-z0-9._-]{1,20}", "[a-z0-9._-]{1,20}"),
        1u64..=7 * 86_400,
        1u32..=1_000_000,
    )
        .prop_map(
            |(outbound, ip, service, identity, idle_secs, max_connections)| ListenerSeed {
                outbound,
                ip,
                service,
                identity,
                idle_secs,
                max_connections,
            },
        )
}

fn signaling_seed() -> impl Strategy<Value = SignalingSeed> {
    (
        0u64..=600_000,
        any::<bool>(),
        "x-[a-z0-9!#$%&'*+.^_`|~-]{0,30}",
        0u32..=16 * 1024 * 1024,
        0u64..=86_400,
        prop::collection::vec(listener_seed(), 0..=4),
    )
        .prop_map(
            |(drain_ms, access_log, header, max_body, resumption_s, listeners)| SignalingSeed {
                drain_ms,
                access_log,
                header,
                max_body,
                resumption_s,
                listeners,
            },
        )
}

fn build_listeners(seeds: Vec<ListenerSeed>, admin: SocketAddr) -> Vec<ListenerConfig> {
    seeds
        .into_iter()
        .enumerate()
        .map(|(i, seed)| {
            // One port per listener, never the admin server's.
            let mut port = 20_000 + i as u16;
            if port == admin.port() {
                port += 100;
            }
            let ip: IpAddr = match (seed.outbound, seed.ip) {
                (true, 0 | 2) => Ipv4Addr::LOCALHOST.into(),
                (true, _) => Ipv6Addr::LOCALHOST.into(),
                (false, 0) => Ipv4Addr::UNSPECIFIED.into(),
                (false, 1) => Ipv6Addr::UNSPECIFIED.into(),
                (false, 2) => Ipv4Addr::new(10, 0, 0, 1).into(),
                (false, _) => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
            };
            let (namespace, name) = &seed.identity;
            let namespace = match namespace.as_str() {
                "." | ".." | "operators" | "appliances" => "svc",
                ns => ns,
            };
            let name = if name == "." || name == ".." {
                "x"
            } else {
                name
            };
            ListenerConfig {
                name: format!("l{i}"),
                bind: SocketAddr::new(ip, port),
                direction: if seed.outbound {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                },
                protocol: if seed.service.is_some() {
                    Protocol::Tcp
                } else {
                    Protocol::Http
                },
                service: seed.service,
                identity: seed.outbound.then(|| {
                    SpiffeId::new("pop.test", namespace, name).expect("generated from the rules")
                }),
                idle_timeout: Duration::from_secs(seed.idle_secs),
                max_connections: seed.max_connections,
            }
        })
        .collect()
}

fn control_config() -> ControlConfig {
    ControlConfig {
        endpoint: "https://127.0.0.1:7443".to_string(),
        server_name: "127.0.0.1".to_string(),
        appliance: "pop-1".to_string(),
        cert: "/etc/popmesh/pop-1.pem".into(),
        key: "/etc/popmesh/pop-1-key.pem".into(),
        ca: "/etc/popmesh/ca.pem".into(),
        state_dir: "/var/lib/popmesh".into(),
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(30),
        stats_interval: Duration::from_secs(10),
    }
}

fn build_config(seed: ConfigSeed) -> Config {
    let ConfigSeed {
        admin,
        level,
        json,
        mem,
        mut cores,
        lanes,
        numbers,
        media_port_range,
        uring,
        port_seeds,
        session_seeds,
        signaling: signaling_seed,
    } = seed;
    let mut seen_cores = std::collections::HashSet::new();
    cores.retain(|c| seen_cores.insert(*c));
    let (mut signaling, mut housekeeping) = (Vec::new(), Vec::new());
    for cpu in lanes {
        if seen_cores.insert(cpu) {
            if signaling.len() <= housekeeping.len() {
                signaling.push(cpu);
            } else {
                housekeeping.push(cpu);
            }
        }
    }
    let (burst, max_flows, clock_rate, spin_polls, max_wait_nanos) = numbers;

    // Disjoint port windows keep even wildcard binds from overlapping.
    let ports: Vec<PortConfig> = port_seeds
        .iter()
        .enumerate()
        .map(|(i, seed)| {
            let ip: IpAddr = match (seed.v6, seed.wildcard) {
                (false, true) => Ipv4Addr::UNSPECIFIED.into(),
                (true, true) => Ipv6Addr::UNSPECIFIED.into(),
                (false, false) => Ipv4Addr::new(10, 0, 0, i as u8 + 1).into(),
                (true, false) => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16 + 1).into(),
            };
            PortConfig {
                name: format!("{}{i}", seed.name),
                bind: SocketAddr::new(ip, 1000 + 5000 * i as u16 + seed.start),
                count: seed.count,
                l2: None,
            }
        })
        .collect();
    // Every address a publisher can send to, with its PortId; wildcard ports get a concrete IP.
    let mut ingress_candidates: Vec<(SocketAddr, u16, usize)> = Vec::new();
    let mut first_id = 0u16;
    for (index, port) in ports.iter().enumerate() {
        let ip = match port.bind.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::new(10, 1, 1, 1).into(),
            IpAddr::V6(ip) if ip.is_unspecified() => {
                Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 1).into()
            }
            ip => ip,
        };
        for offset in 0..port.count {
            ingress_candidates.push((
                SocketAddr::new(ip, port.bind.port() + offset),
                first_id + offset,
                index,
            ));
        }
        first_id += port.count;
    }
    let first_ids: Vec<u16> = ports
        .iter()
        .scan(0u16, |next, p| {
            let first = *next;
            *next += p.count;
            Some(first)
        })
        .collect();

    let mut sessions = Vec::new();
    for (i, seed) in session_seeds.into_iter().enumerate() {
        if ingress_candidates.is_empty() {
            break;
        }
        let (ingress, ingress_port, ingress_index) =
            ingress_candidates.remove(seed.pick % ingress_candidates.len());
        let v6 = ingress.is_ipv6();
        let source = seed
            .source
            .map(|(bits, port)| SocketAddr::new(remote_ip(v6, bits), port.max(1)));
        let mut subscribers: Vec<SubscriberConfig> = Vec::new();
        for (egress_pick, bits, port) in seed.subscribers {
            // 0: leave from the ingress port (default); k: leave from port k-1.
            let (egress_port, egress_index) = match egress_pick % (ports.len() + 1) {
                0 => (ingress_port, ingress_index),
                k => (first_ids[k - 1], k - 1),
            };
            let addr = SocketAddr::new(
                remote_ip(ports[egress_index].bind.is_ipv6(), bits),
                port.max(1),
            );
            if subscribers.iter().all(|s| s.addr != addr) {
                subscribers.push(SubscriberConfig { addr, egress_port });
            }
        }
        let mut name: String = seed.name.chars().take(60).collect();
        name.push_str(&format!("#{i}"));
        sessions.push(SessionConfig {
            name,
            ingress,
            ingress_port,
            source,
            clock_rate: seed.clock_rate,
            subscribers,
        });
    }

    let listeners = build_listeners(signaling_seed.listeners, admin);
    let control = (!listeners.is_empty()).then(control_config);
    if control.is_some() {
        sessions.clear();
    }
    Config {
        admin: AdminConfig { listen: admin },
        log: LogConfig {
            level,
            format: if json {
                LogFormat::Json
            } else {
                LogFormat::Text
            },
        },
        media: MediaConfig {
            backend: if mem {
                BackendKind::Mem
            } else {
                BackendKind::Uring
            },
            cores,
            burst,
            max_flows,
            clock_rate,
            media_port_range: media_port_range.map(|(a, b)| a.min(b)..=a.max(b)),
            idle: IdleConfig {
                spin_polls,
                max_wait: Duration::from_nanos(max_wait_nanos),
                coalesce: Duration::ZERO,
            },
            uring: UringConfig {
                ring_entries: uring.0,
                buffers: uring.1 as u16,
                buffer_size: uring.2,
                gso: uring.3,
                rcvbuf_bytes: uring.4,
                sndbuf_bytes: uring.5,
            },
            dpdk: popmesh_config::DpdkConfig::default(),
            ports,
        },
        signaling: SignalingConfig {
            cores: signaling,
            drain_timeout: Duration::from_millis(signaling_seed.drain_ms),
            access_log: signaling_seed.access_log,
            header_identity: signaling_seed.header,
            max_request_body_retry: signaling_seed.max_body,
            upstream_resumption: Duration::from_secs(signaling_seed.resumption_s),
            listeners,
        },
        housekeeping: popmesh_config::CoreLaneConfig {
            cores: housekeeping,
        },
        sessions,
        control,
    }
}

prop_compose! {
    fn valid_config()(
        admin in socket_addr(),
        level in "\\PC{0,16}[a-z=,]\\PC{0,16}",
        json in any::<bool>(),
        mem in any::<bool>(),
        cores in prop::collection::vec(0usize..1024, 1..=8),
        lanes in prop::collection::vec(0usize..1024, 0..=6),
        numbers in (1u16..=256, 1u32..=16_777_216, 1u32..=1_000_000, 0u32..=1_000_000, 1u64..=1_000_000_000),
        media_port_range in prop::option::of((1u16..=u16::MAX, 1u16..=u16::MAX)),
        uring in (
            (3u32..=15).prop_map(|s| 1u32 << s),
            (4u32..=15).prop_map(|s| 1u32 << s),
            512u32..=65536,
            any::<bool>(),
            4096usize..=1 << 30,
            4096usize..=1 << 30,
        ),
        port_seeds in prop::collection::vec(port_seed(), 1..=6),
        session_seeds in prop::collection::vec(session_seed(), 0..=5),
        signaling in signaling_seed(),
    ) -> Config {
        build_config(ConfigSeed {
            admin,
            level,
            json,
            mem,
            cores,
            lanes,
            numbers,
            media_port_range,
            uring,
            port_seeds,
            session_seeds,
            signaling,
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Config::from_toml(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn toml_ish_documents_never_panic_and_accepted_ones_round_trip(doc in document()) {
        if let Ok(config) = Config::from_toml(&doc) {
            assert_round_trips(&config)?;
        }
    }

    #[test]
    fn mutated_valid_documents_never_panic_and_accepted_ones_round_trip(doc in mutated_document()) {
        match Config::from_toml(&doc) {
            Ok(config) => assert_round_trips(&config)?,
            // Every rule violation names a path and a value.
            Err(popmesh_config::ConfigError::Invalid { path, value, rule }) => {
                prop_assert!(!path.is_empty() && !value.is_empty() && !rule.is_empty());
            }
            Err(_) => {}
        }
    }

    #[test]
    fn valid_configs_round_trip_through_toml_and_json(config in valid_config()) {
        assert_round_trips(&config)?;
    }
}
