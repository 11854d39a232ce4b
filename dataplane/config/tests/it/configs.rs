//! Every file in the repository's `configs/` folder loads; `lab.toml` is the documented lab.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use popmesh_config::{
    AdminConfig, BackendKind, Config, CoreLaneConfig, IdleConfig, LogConfig, LogFormat,
    MediaConfig, PortConfig, SessionConfig, SignalingConfig, SubscriberConfig, UringConfig,
};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn load(name: &str) -> Config {
    let path = configs_dir().join(name);
    Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_config_file_loads_and_round_trips() {
    let dir = configs_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "lab.toml") && names.iter().any(|n| n == "minimal.toml"),
        "expected lab.toml and minimal.toml in {}, found {names:?}",
        dir.display()
    );
    for path in &files {
        let config = Config::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = config
            .to_toml()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reparsed = Config::from_toml(&text).unwrap_or_else(|e| {
            panic!(
                "{}: effective config does not load: {e}\n{text}",
                path.display()
            )
        });
        assert_eq!(reparsed, config, "{}", path.display());
    }
}

#[test]
fn lab_toml_is_the_lab_session() {
    let expected = Config {
        admin: AdminConfig {
            listen: addr("127.0.0.1:9100"),
        },
        log: LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        },
        media: MediaConfig {
            backend: BackendKind::Uring,
            cores: vec![1],
            burst: 32,
            max_flows: 65536,
            clock_rate: 90_000,
            media_port_range: None,
            idle: IdleConfig {
                spin_polls: 256,
                max_wait: Duration::from_micros(200),
                coalesce: Duration::ZERO,
            },
            uring: UringConfig {
                ring_entries: 1024,
                buffers: 4096,
                buffer_size: 2048,
                gso: true,
                rcvbuf_bytes: 4_194_304,
                sndbuf_bytes: 4_194_304,
            },
            dpdk: popmesh_config::DpdkConfig::default(),
            ports: vec![PortConfig {
                name: "lab".to_string(),
                bind: addr("127.0.0.1:40000"),
                count: 1,
                l2: None,
            }],
        },
        signaling: SignalingConfig::default(),
        housekeeping: CoreLaneConfig { cores: vec![0] },
        sessions: vec![SessionConfig {
            name: "lab-room-1".to_string(),
            ingress: addr("127.0.0.1:40000"),
            ingress_port: 0,
            source: None,
            clock_rate: 90_000,
            subscribers: ["127.0.0.1:41000", "127.0.0.1:41001", "127.0.0.1:41002"]
                .into_iter()
                .map(|s| SubscriberConfig {
                    addr: addr(s),
                    egress_port: 0,
                })
                .collect(),
        }],
        control: None,
    };
    let lab = load("lab.toml");
    assert_eq!(lab, expected);
    assert_eq!(lab.port_addrs(), vec![addr("127.0.0.1:40000")]);
}

#[test]
fn minimal_toml_is_one_port_with_defaults() {
    let minimal = load("minimal.toml");
    assert_eq!(minimal.admin, AdminConfig::default());
    assert_eq!(minimal.log, LogConfig::default());
    assert_eq!(minimal.media.idle, IdleConfig::default());
    assert_eq!(minimal.media.uring, UringConfig::default());
    assert_eq!(minimal.media.backend, BackendKind::Uring);
    assert_eq!(minimal.media.cores, vec![1]);
    assert_eq!(minimal.port_addrs(), vec![addr("127.0.0.1:40000")]);
    assert!(minimal.sessions.is_empty());

    // Smallest: without any of its settings the file no longer loads.
    let text = std::fs::read_to_string(configs_dir().join("minimal.toml")).expect("readable");
    let settings: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(settings.len(), 3, "{settings:?}");
    for skipped in 0..settings.len() {
        let reduced: Vec<&str> = settings
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skipped)
            .map(|(_, l)| *l)
            .collect();
        assert!(
            Config::from_toml(&reduced.join("\n")).is_err(),
            "still valid without {:?}",
            settings[skipped]
        );
    }
}

#[test]
fn dpdk_veth_toml_is_the_namespace_lab() {
    let config = load("dpdk-veth.toml");
    assert_eq!(config.media.backend, BackendKind::Dpdk);
    assert_eq!(config.media.dpdk.main_core, 0);
    assert_eq!(config.media.cores, vec![1]);
    let devices: Vec<&str> = config
        .media
        .ports
        .iter()
        .map(|p| {
            p.l2.as_ref()
                .expect("dpdk ports have l2 settings")
                .device
                .as_str()
        })
        .collect();
    assert_eq!(devices, ["net_af_xdp0", "net_af_xdp1"]);
    let session = &config.sessions[0];
    assert_eq!(session.ingress_port, 0);
    assert!(session.subscribers.iter().all(|s| s.egress_port == 1));
}
