//! The effective configuration served at `/config`: the file format with defaults filled in.

use std::net::SocketAddr;

use popmesh_config::{Config, SubscriberConfig};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const DOC: &str = r#"
[media]
media_port_range = "40000-49999"

[media.idle]
max_wait = "0.25ms"

[[media.ports]]
name = "lab"
bind = "127.0.0.1:40000"
count = 2

[[media.ports]]
name = "out"
bind = "[::]:50000"

[[sessions]]
name = "room"
ingress = "127.0.0.1:40001"
source = "127.0.0.1:6000"
subscribers = ["127.0.0.1:41000", { addr = "[2001:db8::1]:41001", egress = "out" }]
"#;

fn parsed() -> Config {
    Config::from_toml(DOC).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn json_shows_the_file_format_with_defaults_and_unit_durations() {
    let json = serde_json::to_value(parsed()).expect("serializable");
    assert_eq!(json["admin"]["listen"], "127.0.0.1:9100");
    assert_eq!(json["log"]["format"], "text");
    assert_eq!(json["media"]["backend"], "uring");
    assert_eq!(json["media"]["media_port_range"], "40000-49999");
    assert_eq!(json["media"]["idle"]["max_wait"], "250us");
    assert_eq!(json["media"]["uring"]["buffers"], 4096);
    assert_eq!(json["media"]["ports"][1]["bind"], "[::]:50000");
    let session = &json["sessions"][0];
    assert_eq!(session["clock_rate"], 90000);
    assert_eq!(session["source"], "127.0.0.1:6000");
    assert_eq!(session["subscribers"][0], "127.0.0.1:41000");
    assert_eq!(
        session["subscribers"][1],
        serde_json::json!({ "addr": "[2001:db8::1]:41001", "egress": "out" })
    );
    assert!(session.get("ingress_port").is_none(), "{session}");
}

#[test]
fn json_served_at_config_loads_back_as_toml() {
    let config = parsed();
    let json = serde_json::to_value(&config).expect("serializable");
    let text = toml::to_string(&json).expect("JSON of a config is TOML-compatible");
    assert_eq!(
        Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
        config
    );
}

#[test]
fn to_toml_round_trips_and_omits_absent_options() {
    let config = parsed();
    let text = config.to_toml().expect("writable");
    assert!(text.contains("max_wait = \"250us\""), "{text}");
    assert_eq!(
        Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
        config
    );

    let mut plain = config.clone();
    plain.media.media_port_range = None;
    plain.sessions[0].source = None;
    let text = plain.to_toml().expect("writable");
    assert!(!text.contains("media_port_range"), "{text}");
    assert!(!text.contains("source"), "{text}");
    assert_eq!(
        Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
        plain
    );
}

#[test]
fn standalone_sessions_show_resolved_port_ids() {
    let config = parsed();
    let json = serde_json::to_value(&config.sessions[0]).expect("serializable");
    assert_eq!(json["ingress_port"], 1);
    assert_eq!(json["subscribers"][1]["egress_port"], 2);
}

#[test]
fn hand_built_configs_the_format_cannot_express_are_refused() {
    let mut config = parsed();
    // PortId 1 is the second port of "lab": it has no name of its own.
    config.sessions[0].ingress = addr("127.0.0.1:40000");
    config.sessions[0].ingress_port = 0;
    config.sessions[0].subscribers[0].egress_port = 0;
    config.sessions[0].subscribers.push(SubscriberConfig {
        addr: addr("127.0.0.1:42000"),
        egress_port: 1,
    });
    let error = config.to_toml().expect_err("unnamed egress");
    assert!(
        error
            .to_string()
            .contains("sessions[0].subscribers[2].egress_port: PortId 1"),
        "{error}"
    );
    assert!(serde_json::to_string(&config).is_err());

    let mut config = parsed();
    config.sessions[0].ingress_port = 0;
    let error = config.to_toml().expect_err("stale ingress_port");
    assert!(
        error
            .to_string()
            .contains("sessions[0].ingress_port: PortId 0"),
        "{error}"
    );
}

#[test]
fn signaling_listeners_are_served_in_the_file_format() {
    let doc = r#"
[[media.ports]]
name = "lab"
bind = "127.0.0.1:40000"

[signaling]
drain_timeout = "1500ms"

[[signaling.listeners]]
name = "raw"
bind = "[::]:9000"
direction = "inbound"
protocol = "tcp"
service = "chat"

[[signaling.listeners]]
name = "local"
bind = "127.0.0.1:15001"
direction = "outbound"
identity = "spiffe://pop.test/ns/danmaku/sa/web"
idle_timeout = "90m"

[control]
endpoint = "127.0.0.1:7443"
appliance = "pop-1"
cert = "c.pem"
key = "k.pem"
ca = "ca.pem"
state_dir = "/tmp"
"#;
    let config = Config::from_toml(doc).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_value(&config).expect("serializable");
    let s = &json["signaling"];
    assert_eq!(s["drain_timeout"], "1500ms");
    assert_eq!(s["access_log"], true);
    assert_eq!(s["header_identity"], "x-popmesh-peer-identity");
    assert_eq!(s["max_request_body_retry"], 65536);
    assert_eq!(s["upstream_resumption"], "10m");
    assert_eq!(
        s["listeners"][0],
        serde_json::json!({
            "name": "raw", "bind": "[::]:9000", "direction": "inbound", "protocol": "tcp",
            "service": "chat", "idle_timeout": "1h", "max_connections": 100000,
        })
    );
    assert_eq!(
        s["listeners"][1],
        serde_json::json!({
            "name": "local", "bind": "127.0.0.1:15001", "direction": "outbound",
            "protocol": "http", "identity": "spiffe://pop.test/ns/danmaku/sa/web",
            "idle_timeout": "90m", "max_connections": 100000,
        })
    );
    let text = config.to_toml().expect("writable");
    assert!(text.contains("[[signaling.listeners]]"), "{text}");
    assert_eq!(
        Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
        config
    );
}
