//! One test per rule: a document that breaks it, and the path, value and rule reported.

use std::net::SocketAddr;
use std::time::Duration;

use popmesh_config::{BackendKind, Config, ConfigError, LogFormat};

/// A port entry most documents below build on: PortIds 0..=3 on 127.0.0.1:40000..=40003.
const PORT: &str = r#"
[[media.ports]]
name = "lab"
bind = "127.0.0.1:40000"
count = 4
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn ok(doc: &str) -> Config {
    Config::from_toml(doc).unwrap_or_else(|e| panic!("expected Ok, got: {e}\n--- doc ---\n{doc}"))
}

fn invalid(doc: &str) -> (String, String, String) {
    match Config::from_toml(doc) {
        Err(ConfigError::Invalid { path, value, rule }) => (path, value, rule),
        Err(other) => panic!("expected Invalid, got: {other}\n--- doc ---\n{doc}"),
        Ok(config) => panic!("expected Invalid, got Ok({config:?})\n--- doc ---\n{doc}"),
    }
}

/// Asserts the reported path and value exactly and the rule by its opening words.
#[track_caller]
fn assert_invalid(doc: &str, path: &str, value: &str, rule_start: &str) {
    let (got_path, got_value, got_rule) = invalid(doc);
    assert_eq!(
        (got_path.as_str(), got_value.as_str()),
        (path, value),
        "rule: {got_rule}"
    );
    assert!(
        got_rule.starts_with(rule_start),
        "rule {got_rule:?} should start with {rule_start:?}"
    );
}

fn syntax(doc: &str) -> String {
    match Config::from_toml(doc) {
        Err(ConfigError::Syntax(message)) => message,
        Err(other) => panic!("expected Syntax, got: {other}"),
        Ok(config) => panic!("expected Syntax, got Ok({config:?})"),
    }
}

/// `[media]` with one extra setting, plus the standard port.
fn media(setting: &str) -> String {
    format!("[media]\n{setting}\n{PORT}")
}

/// One session on the standard port with the given extra lines (which must set subscribers).
fn session(lines: &str) -> String {
    format!("{PORT}\n[[sessions]]\nname = \"s\"\ningress = \"127.0.0.1:40000\"\n{lines}\n")
}

// --- Shape of the document -----------------------------------------------------------------

#[test]
fn unknown_keys_are_rejected_with_line_and_column() {
    let message = syntax(&format!("{PORT}\n[media]\nburts = 32\n"));
    assert!(message.contains("line 8, column 1"), "{message}");
    assert!(message.contains("burts = 32"), "{message}");
    assert!(message.contains("unknown field `burts`"), "{message}");

    let message = syntax(&format!("colour = 1\n{PORT}"));
    assert!(message.contains("unknown field `colour`"), "{message}");
    let message = syntax(&format!("{PORT}\n[media.uring]\nsqpoll = true\n"));
    assert!(message.contains("unknown field `sqpoll`"), "{message}");
    let message = syntax(&session(r#"subscribers = [{ adr = "127.0.0.1:41000" }]"#));
    assert!(message.contains("unknown field `adr`"), "{message}");
}

#[test]
fn wrong_types_and_missing_required_keys_are_syntax_errors() {
    let message = syntax(&media("burst = \"32\""));
    assert!(message.contains("line 2, column 9"), "{message}");
    assert!(message.contains("expected i64"), "{message}");
    let message = syntax(&media("max_wait = 200"));
    assert!(message.contains("unknown field `max_wait`"), "{message}");
    let message = syntax(&format!("{PORT}\n[media.idle]\nmax_wait = 200\n"));
    assert!(message.contains("expected a string"), "{message}");
    let message = syntax(&format!("{PORT}\n[[sessions]]\nname = \"s\"\n"));
    assert!(message.contains("missing field `ingress`"), "{message}");
    let message = syntax("[[media.ports]]\nbind = \"127.0.0.1:40000\"\n");
    assert!(message.contains("missing field `name`"), "{message}");
    let message = syntax(&session("subscribers = [41000]"));
    assert!(
        message.contains("a socket address string or a table"),
        "{message}"
    );
    let message = syntax("[media\n");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn an_empty_file_lacks_ports() {
    let expected =
        "media.ports: [] must list at least one port ([[media.ports]] with name and bind)";
    for doc in ["", "[admin]\n", "[media]\nports = []\n"] {
        let error = Config::from_toml(doc).expect_err("no ports");
        assert_eq!(error.to_string(), expected);
    }
}

// --- admin and log --------------------------------------------------------------------------

#[test]
fn admin_listen_is_a_socket_address_and_may_use_port_zero() {
    assert_invalid(
        &format!("[admin]\nlisten = \"localhost:9100\"\n{PORT}"),
        "admin.listen",
        "\"localhost:9100\"",
        "is not a valid socket address (ip:port)",
    );
    let config = ok(&format!("[admin]\nlisten = \"[::1]:0\"\n{PORT}"));
    assert_eq!(config.admin.listen, addr("[::1]:0"));
}

#[test]
fn log_level_is_not_blank_and_format_is_text_or_json() {
    assert_invalid(
        &format!("[log]\nlevel = \"  \"\n{PORT}"),
        "log.level",
        "\"  \"",
        "must be a non-empty tracing filter directive",
    );
    let error = Config::from_toml(&format!("[log]\nformat = \"xml\"\n{PORT}")).expect_err("xml");
    assert_eq!(
        error.to_string(),
        "log.format: \"xml\" must be \"text\" or \"json\""
    );
    let config = ok(&format!(
        "[log]\nlevel = \"popmesh=debug,warn\"\nformat = \"json\"\n{PORT}"
    ));
    assert_eq!(config.log.level, "popmesh=debug,warn");
    assert_eq!(config.log.format, LogFormat::Json);
}

// --- media ----------------------------------------------------------------------------------

#[test]
fn backend_is_uring_dpdk_or_mem() {
    assert_eq!(
        ok(&media("backend = \"mem\"")).media.backend,
        BackendKind::Mem
    );
    assert_invalid(
        &media("backend = \"xdp\""),
        "media.backend",
        "\"xdp\"",
        "must be \"uring\", \"dpdk\" or \"mem\"",
    );
}

// --- dpdk -----------------------------------------------------------------------------------

/// A dpdk document: `[media]` + `[media.dpdk]` extras and one L2 port with `port_extra` lines.
fn dpdk(dpdk_extra: &str, port_extra: &str) -> String {
    format!(
        "[media]\nbackend = \"dpdk\"\ncores = [1]\n[media.dpdk]\nvdevs = [\"net_ring0\"]\n{dpdk_extra}\n\
         [[media.ports]]\nname = \"pub\"\nbind = \"10.0.1.1:40000\"\n{port_extra}\n"
    )
}

const L2: &str = "device = \"net_ring0\"\ngateway_mac = \"02:00:00:00:00:02\"";

#[test]
fn dpdk_ports_need_device_and_gateway_and_own_their_ip() {
    let config = ok(&format!(
        "{}\n[[sessions]]\nname = \"s\"\ningress = \"10.0.1.1:45000\"\nsubscribers = [\"10.0.2.2:5000\"]\n",
        dpdk("", L2)
    ));
    let l2 = config.media.ports[0]
        .l2
        .as_ref()
        .expect("dpdk port has l2 settings");
    assert_eq!(l2.device, "net_ring0");
    assert_eq!(l2.gateway_mac, [2, 0, 0, 0, 0, 2]);
    assert_eq!((l2.mtu, l2.prefix_len), (1500, 24));
    // Any UDP port of the port's IP is an ingress.
    assert_eq!(config.sessions[0].ingress_port, 0);
    assert_eq!(
        Config::from_toml(&config.to_toml().expect("to_toml")).expect("reload"),
        config
    );

    assert_invalid(
        &dpdk("", "gateway_mac = \"02:00:00:00:00:02\""),
        "media.ports[0].device",
        "(missing)",
        "is required with media.backend = \"dpdk\"",
    );
    assert_invalid(
        &dpdk("", "device = \"net_ring0\""),
        "media.ports[0].gateway_mac",
        "(missing)",
        "is required",
    );
    assert_invalid(
        &dpdk(
            "",
            "device = \"net_ring0\"\ngateway_mac = \"02:00:00:00:00\"",
        ),
        "media.ports[0].gateway_mac",
        "\"02:00:00:00:00\"",
        "is not a MAC address",
    );
    assert_invalid(
        &dpdk(
            "",
            "device = \"net_ring0,x=1\"\ngateway_mac = \"02:00:00:00:00:02\"",
        ),
        "media.ports[0].device",
        "\"net_ring0,x=1\"",
        "must be a bare device name",
    );
    assert_invalid(
        &dpdk("", &format!("{L2}\ncount = 2")),
        "media.ports[0].count",
        "2",
        "must be 1 with media.backend = \"dpdk\"",
    );
    assert_invalid(
        &dpdk("", &format!("{L2}\nmtu = 20000")),
        "media.ports[0].mtu",
        "20000",
        "must be in 68..=9216",
    );
    assert_invalid(
        &format!("{}\n[[media.ports]]\nname = \"b\"\nbind = \"10.0.1.1:1\"\ndevice = \"net_ring1\"\ngateway_mac = \"02:00:00:00:00:02\"\n", dpdk("", L2)),
        "media.ports[1].bind",
        "\"10.0.1.1:1\"",
        "overlaps media.ports[0]",
    );
    assert_invalid(
        &format!(
            "{}\n[[media.ports]]\nname = \"b\"\nbind = \"10.0.2.1:1\"\n{L2}\n",
            dpdk("", L2)
        ),
        "media.ports[1].device",
        "\"net_ring0\"",
        "is already the device of media.ports[0]",
    );
    assert_invalid(
        &format!("[[media.ports]]\nname = \"a\"\nbind = \"127.0.0.1:4000\"\n{L2}"),
        "media.ports[0].device",
        "(set)",
        "is only used with media.backend = \"dpdk\"",
    );
}

#[test]
fn dpdk_environment_rules() {
    let config = ok(&dpdk(
        "hugepages = false\nmemory_mb = 256\npci_allow = [\"0000:03:00.0\"]\nmbufs = 4095",
        L2,
    ));
    let d = &config.media.dpdk;
    assert!(!d.hugepages);
    assert_eq!((d.memory_mb, d.mbufs), (256, 4095));
    assert_eq!(d.pool_size(2, 2, 32), 4095, "an explicit mbufs wins");
    assert_invalid(
        &dpdk("main_core = 1", L2),
        "media.dpdk.main_core",
        "1",
        "is also media.cores[0]",
    );
    assert_invalid(
        &dpdk("rx_desc = 1000", L2),
        "media.dpdk.rx_desc",
        "1000",
        "must be a power of two",
    );
    assert_invalid(
        &dpdk("pci_allow = [\"03:00\"]", L2),
        "media.dpdk.pci_allow[0]",
        "\"03:00\"",
        "is not a PCI address",
    );
    assert_invalid(
        &dpdk("file_prefix = \"a b\"", L2),
        "media.dpdk.file_prefix",
        "\"a b\"",
        "must be 1..=32 characters",
    );
    assert_invalid(
        &dpdk("mbufs = 10", L2),
        "media.dpdk.mbufs",
        "10",
        "must be 0 (sized by rule)",
    );
}

#[test]
fn dpdk_pool_size_follows_the_stated_rule() {
    let d = popmesh_config::DpdkConfig::default();
    // 2 ports x 2 workers x (1024 + 2 x 1024) + 2 x (256 + 4 x 32) + 1024 = 14080 -> 16383.
    assert_eq!(d.pool_size(2, 2, 32), 16_383);
    // 1 x 1 x 3072 + 384 + 1024 = 4480 -> 8191.
    assert_eq!(d.pool_size(1, 1, 32), 8191);
}

#[test]
fn cores_are_unique_cpu_ids_with_1_to_128_entries() {
    assert_eq!(ok(&media("cores = [0, 3, 2]")).media.cores, vec![0, 3, 2]);
    assert_invalid(
        &media("cores = []"),
        "media.cores",
        "[]",
        "must list 1..=128 CPU ids",
    );
    let many: Vec<String> = (0..129).map(|i| i.to_string()).collect();
    assert_invalid(
        &media(&format!("cores = [{}]", many.join(", "))),
        "media.cores",
        "129 entries",
        "must list 1..=128 CPU ids",
    );
    assert_invalid(
        &media("cores = [1, -1]"),
        "media.cores[1]",
        "-1",
        "is not a CPU id (0..=1023)",
    );
    assert_invalid(
        &media("cores = [1024]"),
        "media.cores[0]",
        "1024",
        "is not a CPU id",
    );
    let error = Config::from_toml(&media("cores = [1, 2, 1]")).expect_err("duplicate core");
    assert_eq!(
        error.to_string(),
        "media.cores[2]: 1 is listed twice (also media.cores[0]); one worker per CPU"
    );
}

#[test]
fn signaling_and_housekeeping_cores_are_unique_and_apart_from_media_and_each_other() {
    let doc = format!(
        "[media]\ncores = [2, 3]\n[signaling]\ncores = [1, 5]\n[housekeeping]\ncores = [0]\n{PORT}"
    );
    let config = ok(&doc);
    assert_eq!(config.signaling.cores, vec![1, 5]);
    assert_eq!(config.housekeeping.cores, vec![0]);
    assert!(
        ok(PORT).signaling.cores.is_empty(),
        "default: no lane declared"
    );
    assert!(ok(PORT).housekeeping.cores.is_empty());

    let lanes = |signaling: &str, housekeeping: &str| {
        format!(
            "[media]\ncores = [2, 3]\n[signaling]\ncores = {signaling}\n\
             [housekeeping]\ncores = {housekeeping}\n{PORT}"
        )
    };
    assert_invalid(
        &lanes("[1, 3]", "[]"),
        "signaling.cores[1]",
        "3",
        "is also media.cores[1]; a polling media worker",
    );
    assert_invalid(
        &lanes("[1]", "[0, 2]"),
        "housekeeping.cores[1]",
        "2",
        "is also media.cores[0]",
    );
    assert_invalid(
        &lanes("[1]", "[0, 1]"),
        "housekeeping.cores[1]",
        "1",
        "is also signaling.cores[0]; keep housekeeping",
    );
    assert_invalid(
        &lanes("[1, 1]", "[]"),
        "signaling.cores[1]",
        "1",
        "is listed twice (also signaling.cores[0])",
    );
    assert_invalid(
        &lanes("[1024]", "[]"),
        "signaling.cores[0]",
        "1024",
        "is not a CPU id (0..=1023)",
    );
    assert_invalid(
        &lanes("[]", "[-1]"),
        "housekeeping.cores[0]",
        "-1",
        "is not a CPU id",
    );
    let many: Vec<String> = (4..133).map(|i| i.to_string()).collect();
    assert_invalid(
        &lanes(&format!("[{}]", many.join(", ")), "[]"),
        "signaling.cores",
        "129 entries",
        "must list at most 128 CPU ids",
    );
    let typo = syntax(&format!("[signaling]\ncpus = [1]\n{PORT}"));
    assert!(typo.contains("cpus"), "{typo}");
}

#[test]
fn numeric_media_ranges() {
    let cases: [(&str, &str, &str, &str); 8] = [
        ("burst = 0", "media.burst", "0", "must be in 1..=256"),
        ("burst = 257", "media.burst", "257", "must be in 1..=256"),
        (
            "max_flows = 0",
            "media.max_flows",
            "0",
            "must be in 1..=16777216",
        ),
        (
            "max_flows = 16777217",
            "media.max_flows",
            "16777217",
            "must be in 1..=16777216",
        ),
        (
            "clock_rate = 0",
            "media.clock_rate",
            "0",
            "must be in 1..=1000000",
        ),
        (
            "clock_rate = 1000001",
            "media.clock_rate",
            "1000001",
            "must be in 1..=1000000",
        ),
        (
            "burst = -9223372036854775808",
            "media.burst",
            "-9223372036854775808",
            "must be in",
        ),
        (
            "max_flows = 9223372036854775807",
            "media.max_flows",
            "9223372036854775807",
            "must be in",
        ),
    ];
    for (setting, path, value, rule) in cases {
        assert_invalid(&media(setting), path, value, rule);
    }
    let config = ok(&media(
        "burst = 256\nmax_flows = 16777216\nclock_rate = 48000",
    ));
    assert_eq!(
        (
            config.media.burst,
            config.media.max_flows,
            config.media.clock_rate
        ),
        (256, 16_777_216, 48_000)
    );
}

#[test]
fn media_port_range_is_first_dash_last() {
    assert_eq!(ok(PORT).media.media_port_range, None);
    assert_eq!(
        ok(&media("media_port_range = \"40000-49999\""))
            .media
            .media_port_range,
        Some(40000..=49999)
    );
    for bad in ["49999-40000", "0-10", "40000", "40000-70000", "a-b", ""] {
        assert_invalid(
            &media(&format!("media_port_range = {bad:?}")),
            "media.media_port_range",
            &format!("{bad:?}"),
            "is not a UDP port range \"first-last\" with 1 <= first <= last <= 65535",
        );
    }
}

#[test]
fn idle_spin_polls_and_max_wait() {
    let idle = |settings: &str| format!("{PORT}\n[media.idle]\n{settings}\n");
    assert_invalid(
        &idle("spin_polls = -1"),
        "media.idle.spin_polls",
        "-1",
        "must be in 0..=1000000",
    );
    assert_invalid(
        &idle("spin_polls = 1000001"),
        "media.idle.spin_polls",
        "1000001",
        "must be in 0..=1000000",
    );
    let error = Config::from_toml(&idle("max_wait = \"200\"")).expect_err("no unit");
    assert_eq!(
        error.to_string(),
        "media.idle.max_wait: \"200\" has no unit; expected a number with a unit (ns, us, ms, s, m, h, d), e.g. \"200us\""
    );
    for bad in ["0us", "0s", "1001ms", "2s"] {
        assert_invalid(
            &idle(&format!("max_wait = {bad:?}")),
            "media.idle.max_wait",
            &format!("{bad:?}"),
            "must be more than 0 and at most 1s",
        );
    }
    assert_invalid(
        &idle("max_wait = \"5 min\""),
        "media.idle.max_wait",
        "\"5 min\"",
        "has unknown unit",
    );
    assert_invalid(
        &idle("coalesce = \"2ms\""),
        "media.idle.coalesce",
        "\"2ms\"",
        "must be at most 1ms (it adds up to this much latency)",
    );
    assert_eq!(
        ok(&idle("coalesce = \"50us\"")).media.idle.coalesce,
        Duration::from_micros(50)
    );
    let config = ok(&idle("spin_polls = 0\nmax_wait = \"1s\""));
    assert_eq!(config.media.idle.spin_polls, 0);
    assert_eq!(config.media.idle.max_wait, Duration::from_secs(1));
    assert_eq!(
        ok(&idle("max_wait = \"0.5ms\"")).media.idle.max_wait,
        Duration::from_micros(500)
    );
    assert_eq!(
        ok(&idle("max_wait = \"1ns\"")).media.idle.max_wait,
        Duration::from_nanos(1)
    );
}

#[test]
fn uring_sizes() {
    let uring = |setting: &str| format!("{PORT}\n[media.uring]\n{setting}\n");
    let cases: [(&str, &str, &str, &str); 11] = [
        (
            "ring_entries = 4",
            "media.uring.ring_entries",
            "4",
            "must be in 8..=32768",
        ),
        (
            "ring_entries = 65536",
            "media.uring.ring_entries",
            "65536",
            "must be in 8..=32768",
        ),
        (
            "ring_entries = 1000",
            "media.uring.ring_entries",
            "1000",
            "must be a power of two in 8..=32768",
        ),
        (
            "buffers = 8",
            "media.uring.buffers",
            "8",
            "must be in 16..=32768",
        ),
        (
            "buffers = 65536",
            "media.uring.buffers",
            "65536",
            "must be in 16..=32768",
        ),
        (
            "buffers = 100",
            "media.uring.buffers",
            "100",
            "must be a power of two in 16..=32768",
        ),
        (
            "buffer_size = 511",
            "media.uring.buffer_size",
            "511",
            "must be in 512..=65536",
        ),
        (
            "buffer_size = 65537",
            "media.uring.buffer_size",
            "65537",
            "must be in 512..=65536",
        ),
        (
            "rcvbuf_bytes = 0",
            "media.uring.rcvbuf_bytes",
            "0",
            "must be in 4096..=1073741824",
        ),
        (
            "sndbuf_bytes = 1073741825",
            "media.uring.sndbuf_bytes",
            "1073741825",
            "must be in 4096..=1073741824",
        ),
        (
            "sndbuf_bytes = -4096",
            "media.uring.sndbuf_bytes",
            "-4096",
            "must be in 4096..=1073741824",
        ),
    ];
    for (setting, path, value, rule) in cases {
        assert_invalid(&uring(setting), path, value, rule);
    }
    let config = ok(&uring(
        "ring_entries = 32768\nbuffers = 32768\nbuffer_size = 9000\ngso = false\nrcvbuf_bytes = 4096\nsndbuf_bytes = 1073741824",
    ));
    let u = &config.media.uring;
    assert_eq!(
        (
            u.ring_entries,
            u.buffers,
            u.buffer_size,
            u.gso,
            u.rcvbuf_bytes,
            u.sndbuf_bytes
        ),
        (32768, 32768, 9000, false, 4096, 1 << 30)
    );
}

// --- media.ports ----------------------------------------------------------------------------

fn ports(entries: &[(&str, &str, u32)]) -> String {
    entries
        .iter()
        .map(|(name, bind, count)| {
            format!("[[media.ports]]\nname = {name:?}\nbind = {bind:?}\ncount = {count}\n")
        })
        .collect()
}

#[test]
fn port_names_are_short_lowercase_and_unique() {
    for bad in ["", "Lab", "a b", "lab.1", "é", &"x".repeat(33)] {
        assert_invalid(
            &ports(&[(bad, "127.0.0.1:40000", 1)]),
            "media.ports[0].name",
            &format!("{bad:?}"),
            "is not a valid port name ([a-z0-9_-]{1,32})",
        );
    }
    ok(&ports(&[
        (&"x".repeat(32), "127.0.0.1:40000", 1),
        ("a_0-9", "127.0.0.1:40001", 1),
    ]));
    assert_invalid(
        &ports(&[
            ("a", "127.0.0.1:40000", 1),
            ("b", "127.0.0.1:40001", 1),
            ("a", "127.0.0.1:40002", 1),
        ]),
        "media.ports[2].name",
        "\"a\"",
        "is already the name of media.ports[0]",
    );
}

#[test]
fn port_bind_is_an_address_with_a_port() {
    assert_invalid(
        &ports(&[("a", "127.0.0.1", 1)]),
        "media.ports[0].bind",
        "\"127.0.0.1\"",
        "is not a valid socket address (ip:port)",
    );
    assert_invalid(
        &ports(&[("a", "127.0.0.1:0", 1)]),
        "media.ports[0].bind",
        "\"127.0.0.1:0\"",
        "has port 0",
    );
}

#[test]
fn port_count_is_1_to_4096_and_stays_below_65536() {
    assert_invalid(
        &ports(&[("a", "127.0.0.1:40000", 0)]),
        "media.ports[0].count",
        "0",
        "must be in 1..=4096",
    );
    assert_invalid(
        &ports(&[("a", "127.0.0.1:40000", 4097)]),
        "media.ports[0].count",
        "4097",
        "must be in 1..=4096",
    );
    let error = Config::from_toml(&ports(&[("a", "127.0.0.1:65534", 3)])).expect_err("past 65535");
    assert_eq!(
        error.to_string(),
        "media.ports[0].count: 3 runs past UDP port 65535 from 127.0.0.1:65534 (at most 2 here)"
    );
    let config = ok(&ports(&[("a", "127.0.0.1:65534", 2)]));
    assert_eq!(
        config.port_addrs(),
        vec![addr("127.0.0.1:65534"), addr("127.0.0.1:65535")]
    );
}

#[test]
fn the_number_of_port_ids_fits_u16() {
    // 16 ranges of 4096 ports on distinct IPs would need 65536 PortIds.
    let binds: Vec<String> = (0..16).map(|i| format!("10.0.0.{i}:1000")).collect();
    let names: Vec<String> = (0..16).map(|i| format!("p{i}")).collect();
    let mut entries: Vec<(&str, &str, u32)> = names
        .iter()
        .zip(&binds)
        .map(|(n, b)| (n.as_str(), b.as_str(), 4096))
        .collect();
    assert_invalid(
        &ports(&entries),
        "media.ports[15].count",
        "4096",
        "brings the number of PortIds to 65536, more than the 65535",
    );
    if let Some(last) = entries.last_mut() {
        last.2 = 4095;
    }
    let config = ok(&ports(&entries));
    assert_eq!(config.port_addrs().len(), 65535);
    assert_eq!(config.port_id(addr("10.0.0.15:5094")), Some(65534));
    assert_eq!(config.port_id(addr("10.0.0.15:5095")), None);
}

#[test]
fn port_ranges_do_not_overlap() {
    let error = Config::from_toml(&ports(&[
        ("a", "127.0.0.1:40000", 4),
        ("b", "127.0.0.1:40003", 2),
    ]))
    .expect_err("overlap");
    assert_eq!(
        error.to_string(),
        "media.ports[1].bind: \"127.0.0.1:40003\" overlaps media.ports[0] \"a\" (127.0.0.1:40000-40003); every address may be opened once"
    );
    // A wildcard bind claims the port on every address of its family.
    assert_invalid(
        &ports(&[("a", "127.0.0.1:40000", 1), ("b", "0.0.0.0:39999", 2)]),
        "media.ports[1].bind",
        "\"0.0.0.0:39999\"",
        "overlaps media.ports[0] \"a\" (127.0.0.1:40000)",
    );
    assert_invalid(
        &ports(&[("a", "[::]:40000", 1), ("b", "[::1]:40000", 1)]),
        "media.ports[1].bind",
        "\"[::1]:40000\"",
        "overlaps media.ports[0] \"a\" ([::]:40000)",
    );
    // Adjacent ranges, other IPs and the other family are fine.
    let config = ok(&ports(&[
        ("a", "127.0.0.1:40000", 4),
        ("b", "127.0.0.1:40004", 1),
        ("c", "127.0.0.2:40000", 4),
        ("d", "[::]:40000", 4),
    ]));
    assert_eq!(config.port_addrs().len(), 13);
}

#[test]
fn port_lookups() {
    let config = ok(&ports(&[
        ("a", "127.0.0.1:40000", 2),
        ("any", "0.0.0.0:50000", 3),
        ("v6", "[::1]:40000", 1),
    ]));
    assert_eq!(
        config.port_addrs(),
        vec![
            addr("127.0.0.1:40000"),
            addr("127.0.0.1:40001"),
            addr("0.0.0.0:50000"),
            addr("0.0.0.0:50001"),
            addr("0.0.0.0:50002"),
            addr("[::1]:40000"),
        ]
    );
    assert_eq!(config.port_id(addr("127.0.0.1:40001")), Some(1));
    assert_eq!(config.port_id(addr("127.0.0.2:40001")), None);
    assert_eq!(config.port_id(addr("192.0.2.7:50002")), Some(4));
    assert_eq!(config.port_id(addr("[::1]:50002")), None);
    assert_eq!(config.port_id(addr("[::1]:40000")), Some(5));
    let (first, port) = config.port_by_name("any").expect("port any");
    assert_eq!((first, port.count), (2, 3));
    assert!(config.port_by_name("missing").is_none());
}

// --- sessions -------------------------------------------------------------------------------

const SUBS: &str = r#"subscribers = ["127.0.0.1:41000"]"#;

#[test]
fn session_names_are_1_to_64_chars_and_unique() {
    let named = |name: &str| {
        format!("{PORT}\n[[sessions]]\nname = {name:?}\ningress = \"127.0.0.1:40000\"\n{SUBS}\n")
    };
    for bad in ["".to_string(), " ".to_string(), "x".repeat(65)] {
        assert_invalid(
            &named(&bad),
            "sessions[0].name",
            &format!("{bad:?}"),
            "must be 1..=64 characters",
        );
    }
    assert_eq!(
        ok(&named(&"é".repeat(64))).sessions[0].name.chars().count(),
        64
    );
    let doc = format!(
        "{}\n[[sessions]]\nname = \"s\"\ningress = \"127.0.0.1:40001\"\n{SUBS}\n",
        session(SUBS)
    );
    assert_invalid(
        &doc,
        "sessions[1].name",
        "\"s\"",
        "is already the name of sessions[0]",
    );
}

#[test]
fn session_ingress_must_be_opened_by_a_port_and_unique() {
    let at = |ingress: &str| {
        format!("{PORT}\n[[sessions]]\nname = \"s\"\ningress = {ingress:?}\n{SUBS}\n")
    };
    assert_invalid(
        &at("127.0.0.1"),
        "sessions[0].ingress",
        "\"127.0.0.1\"",
        "is not a valid socket address",
    );
    for outside in [
        "127.0.0.1:40004",
        "127.0.0.1:39999",
        "127.0.0.2:40000",
        "0.0.0.0:40000",
        "[::1]:40000",
    ] {
        assert_invalid(
            &at(outside),
            "sessions[0].ingress",
            &format!("{outside:?}"),
            "is not opened by any of media.ports",
        );
    }
    let config = ok(&at("127.0.0.1:40003"));
    assert_eq!(config.sessions[0].ingress_port, 3);

    let doc = format!(
        "{}\n[[sessions]]\nname = \"t\"\ningress = \"127.0.0.1:40000\"\n{SUBS}\n",
        session(SUBS)
    );
    assert_invalid(
        &doc,
        "sessions[1].ingress",
        "\"127.0.0.1:40000\"",
        "is already the ingress of sessions[0] \"s\"",
    );
}

#[test]
fn session_ingress_may_use_a_wildcard_port_of_the_same_family() {
    let doc = |ingress: &str, subscriber: &str| {
        format!(
            "{}\n[[sessions]]\nname = \"s\"\ningress = {ingress:?}\nsubscribers = [{subscriber:?}]\n",
            ports(&[("lo", "127.0.0.1:30000", 1), ("any4", "0.0.0.0:40000", 2), ("any6", "[::]:40000", 2)])
        )
    };
    let config = ok(&doc("192.0.2.1:40001", "192.0.2.9:5000"));
    assert_eq!(config.sessions[0].ingress_port, 2);
    let config = ok(&doc("[2001:db8::1]:40000", "[2001:db8::9]:5000"));
    assert_eq!(config.sessions[0].ingress_port, 3);
    assert_invalid(
        &doc("192.0.2.1:30000", "192.0.2.9:5000"),
        "sessions[0].ingress",
        "\"192.0.2.1:30000\"",
        "is not opened by any of media.ports",
    );
}

#[test]
fn session_source_is_concrete_and_of_the_ingress_family() {
    let config = ok(&session(&format!("source = \"127.0.0.1:50000\"\n{SUBS}")));
    assert_eq!(config.sessions[0].source, Some(addr("127.0.0.1:50000")));
    assert_eq!(ok(&session(SUBS)).sessions[0].source, None);
    assert_invalid(
        &session(&format!("source = \"127.0.0.1:99999\"\n{SUBS}")),
        "sessions[0].source",
        "\"127.0.0.1:99999\"",
        "is not a valid socket address",
    );
    for bad in ["0.0.0.0:5000", "127.0.0.1:0"] {
        assert_invalid(
            &session(&format!("source = {bad:?}\n{SUBS}")),
            "sessions[0].source",
            &format!("{bad:?}"),
            "is not a concrete sender address",
        );
    }
    let error = Config::from_toml(&session(&format!("source = \"[::1]:50000\"\n{SUBS}")))
        .expect_err("family");
    assert_eq!(
        error.to_string(),
        "sessions[0].source: \"[::1]:50000\" is IPv6 but arrives on port \"lab\", which is bound to IPv4 address 127.0.0.1:40000"
    );
}

#[test]
fn session_clock_rate_overrides_the_media_default() {
    let doc = format!(
        "[media]\nclock_rate = 8000\n{}",
        session(&format!("clock_rate = 48000\n{SUBS}"))
    );
    assert_eq!(ok(&doc).sessions[0].clock_rate, 48_000);
    let doc = format!("[media]\nclock_rate = 8000\n{}", session(SUBS));
    assert_eq!(ok(&doc).sessions[0].clock_rate, 8_000);
    assert_invalid(
        &session(&format!("clock_rate = 0\n{SUBS}")),
        "sessions[0].clock_rate",
        "0",
        "must be in 1..=1000000",
    );
}

#[test]
fn subscribers_number_1_to_4096() {
    assert_invalid(
        &session("subscribers = []"),
        "sessions[0].subscribers",
        "[]",
        "must list 1..=4096 subscribers",
    );
    let many: Vec<String> = (0..4097)
        .map(|i| format!("\"10.0.{}.{}:5000\"", i / 256, i % 256))
        .collect();
    assert_invalid(
        &session(&format!("subscribers = [{}]", many.join(","))),
        "sessions[0].subscribers",
        "4097 entries",
        "must list 1..=4096 subscribers",
    );
    let config = ok(&session(&format!(
        "subscribers = [{}]",
        many[..4096].join(",")
    )));
    assert_eq!(config.sessions[0].subscribers.len(), 4096);
}

#[test]
fn subscriber_addresses_are_valid_socket_addresses() {
    let doc = session(r#"subscribers = ["127.0.0.1:41000", "127.0.0.1:41001", "127.0.0.1:99999"]"#);
    let error = Config::from_toml(&doc).expect_err("bad port");
    assert_eq!(
        error.to_string(),
        "sessions[0].subscribers[2]: \"127.0.0.1:99999\" is not a valid socket address (ip:port)"
    );
    assert_invalid(
        &session(r#"subscribers = [{ addr = "nowhere", egress = "lab" }]"#),
        "sessions[0].subscribers[0].addr",
        "\"nowhere\"",
        "is not a valid socket address (ip:port)",
    );
    for bad in ["0.0.0.0:41000", "127.0.0.1:0", "[::]:41000"] {
        assert_invalid(
            &session(&format!("subscribers = [{bad:?}]")),
            "sessions[0].subscribers[0]",
            &format!("{bad:?}"),
            "is not a concrete destination",
        );
    }
}

#[test]
fn subscriber_egress_names_an_existing_port() {
    let doc = format!(
        "{PORT}{}\n[[sessions]]\nname = \"s\"\ningress = \"127.0.0.1:40002\"\nsubscribers = [\"127.0.0.1:41000\", {{ addr = \"127.0.0.1:41001\", egress = \"out\" }}, {{ addr = \"127.0.0.1:41002\" }}]\n",
        ports(&[("out", "127.0.0.1:50000", 8)])
    );
    let config = ok(&doc);
    let egress: Vec<u16> = config.sessions[0]
        .subscribers
        .iter()
        .map(|s| s.egress_port)
        .collect();
    // Default is the ingress PortId (2 = 127.0.0.1:40002); a named port means its first PortId.
    assert_eq!(egress, vec![2, 4, 2]);

    let error = Config::from_toml(&session(
        r#"subscribers = [{ addr = "127.0.0.1:41000", egress = "wan" }]"#,
    ))
    .expect_err("unknown egress");
    assert_eq!(
        error.to_string(),
        "sessions[0].subscribers[0].egress: \"wan\" is not the name of any of media.ports"
    );
}

#[test]
fn subscribers_have_the_family_of_their_egress_port() {
    let doc = |subscribers: &str| {
        format!(
            "{PORT}{}\n[[sessions]]\nname = \"s\"\ningress = \"127.0.0.1:40000\"\nsubscribers = {subscribers}\n",
            ports(&[("v6", "[::1]:40000", 1)])
        )
    };
    let config = ok(&doc(
        r#"["127.0.0.1:41000", { addr = "[::1]:41000", egress = "v6" }]"#,
    ));
    assert_eq!(config.sessions[0].subscribers[1].egress_port, 4);
    assert_invalid(
        &doc(r#"["[::1]:41000"]"#),
        "sessions[0].subscribers[0]",
        "\"[::1]:41000\"",
        "is IPv6 but leaves from port \"lab\", which is bound to IPv4 address 127.0.0.1:40000",
    );
    assert_invalid(
        &doc(r#"[{ addr = "127.0.0.1:41000", egress = "v6" }]"#),
        "sessions[0].subscribers[0].addr",
        "\"127.0.0.1:41000\"",
        "is IPv4 but leaves from port \"v6\", which is bound to IPv6 address [::1]:40000",
    );
}

#[test]
fn a_subscriber_is_never_the_own_ingress_nor_listed_twice() {
    let error = Config::from_toml(&session(
        r#"subscribers = ["127.0.0.1:41000", "127.0.0.1:40000"]"#,
    ))
    .expect_err("loop");
    assert_eq!(
        error.to_string(),
        "sessions[0].subscribers[1]: \"127.0.0.1:40000\" is the session's own ingress; relaying to it would loop"
    );
    assert_invalid(
        &session(
            r#"subscribers = ["127.0.0.1:41000", { addr = "127.0.0.1:41000", egress = "lab" }]"#,
        ),
        "sessions[0].subscribers[1].addr",
        "\"127.0.0.1:41000\"",
        "is already sessions[0].subscribers[0]",
    );
}

#[test]
fn sessions_may_be_empty_and_errors_come_in_file_order() {
    assert!(ok(PORT).sessions.is_empty());
    // Both the media section and the session are wrong; the earlier one is reported.
    let doc = format!("[media]\nburst = 0\n{}", session(r#"subscribers = []"#));
    assert_eq!(invalid(&doc).0, "media.burst");
}

#[test]
fn from_file_reports_the_path_of_a_missing_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-config.toml");
    match Config::from_file(&path) {
        Err(error @ ConfigError::Io { .. }) => {
            assert_eq!(
                error.to_string(),
                format!("cannot read config file {}", path.display())
            );
            let source = std::error::Error::source(&error).expect("io error as source");
            assert!(source.to_string().contains("No such file"), "{source}");
        }
        other => panic!("expected Io error, got {other:?}"),
    }
}

// --- [control] ------------------------------------------------------------------------------

/// The standard port and a `[control]` section with `extra` lines replacing defaults.
fn control(lines: &[&str]) -> String {
    let mut keys: Vec<(String, String)> = [
        ("endpoint", "\"https://127.0.0.1:7443\""),
        ("appliance", "\"pop-1\""),
        ("cert", "\"/etc/popmesh/pop-1.pem\""),
        ("key", "\"/etc/popmesh/pop-1-key.pem\""),
        ("ca", "\"/etc/popmesh/ca.pem\""),
        ("state_dir", "\"/var/lib/popmesh\""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for line in lines {
        let (k, v) = line.split_once(" = ").expect("key = value");
        keys.retain(|(key, _)| key != k);
        keys.push((k.to_string(), v.to_string()));
    }
    let body: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{PORT}\n[control]\n{}\n", body.join("\n"))
}

#[test]
fn control_defaults_and_endpoint_forms() {
    assert_eq!(
        ok(PORT).control,
        None,
        "no [control]: sessions from the file"
    );
    let c = ok(&control(&[])).control.expect("control set");
    assert_eq!(c.endpoint, "https://127.0.0.1:7443");
    assert_eq!(c.server_name, "127.0.0.1");
    assert_eq!(c.appliance, "pop-1");
    assert_eq!(c.state_dir, std::path::PathBuf::from("/var/lib/popmesh"));
    assert_eq!(c.backoff_min, Duration::from_millis(200));
    assert_eq!(c.backoff_max, Duration::from_secs(30));
    assert_eq!(c.stats_interval, Duration::from_secs(10));

    let c = ok(&control(&[
        "endpoint = \"ctrld.pop1.example.net:7443\"",
        "backoff_min = \"1s\"",
        "backoff_max = \"1s\"",
    ]))
    .control
    .expect("control set");
    assert_eq!(c.endpoint, "https://ctrld.pop1.example.net:7443");
    assert_eq!(c.server_name, "ctrld.pop1.example.net");
    let c = ok(&control(&[
        "endpoint = \"https://[::1]:7443\"",
        "server_name = \"localhost\"",
    ]))
    .control
    .expect("control set");
    assert_eq!(c.endpoint, "https://[::1]:7443");
    assert_eq!(c.server_name, "localhost");

    // The effective config (with [control]) loads back to the same value.
    let parsed = ok(&control(&["stats_interval = \"2s\""]));
    let text = parsed.to_toml().expect("writable");
    assert_eq!(Config::from_toml(&text).expect("reloads"), parsed);
}

#[test]
fn control_endpoint_must_be_https_host_port() {
    let doc = control(&["endpoint = \"http://127.0.0.1:7443\""]);
    assert_invalid(
        &doc,
        "control.endpoint",
        "\"http://127.0.0.1:7443\"",
        "must use https://",
    );
    for bad in [
        "127.0.0.1",
        "https://127.0.0.1:0",
        "host name:7443",
        "[::1:7443",
        "",
    ] {
        let doc = control(&[&format!("endpoint = {bad:?}")]);
        assert_invalid(
            &doc,
            "control.endpoint",
            &format!("{bad:?}"),
            "must be \"https://host:port\"",
        );
    }
}

#[test]
fn control_names_paths_and_durations_are_checked() {
    assert_invalid(
        &control(&["appliance = \"Pop 1\""]),
        "control.appliance",
        "\"Pop 1\"",
        "must be 1..=63 characters of [a-z0-9.-_]",
    );
    assert_invalid(
        &control(&["server_name = \"\""]),
        "control.server_name",
        "\"\"",
        "must be a DNS name",
    );
    assert_invalid(
        &control(&["key = \" \""]),
        "control.key",
        "\" \"",
        "must be a file system path",
    );
    assert_invalid(
        &control(&["backoff_min = \"0s\""]),
        "control.backoff_min",
        "\"0s\"",
        "must be more than 0",
    );
    assert_invalid(
        &control(&["backoff_min = \"5\""]),
        "control.backoff_min",
        "\"5\"",
        "has no unit",
    );
    assert_invalid(
        &control(&["backoff_min = \"2s\"", "backoff_max = \"1s\""]),
        "control.backoff_max",
        "\"1s\"",
        "must be at least control.backoff_min (2s)",
    );
    assert_invalid(
        &control(&["backoff_max = \"2h\""]),
        "control.backoff_max",
        "\"2h\"",
        "must be at least control.backoff_min (200ms) and at most 1h",
    );
    assert_eq!(
        ok(&control(&["backoff_max = \"1h\""]))
            .control
            .map(|c| c.backoff_max),
        Some(Duration::from_secs(3600))
    );
    assert_invalid(
        &control(&["backoff_max = \"2w\""]),
        "control.backoff_max",
        "\"2w\"",
        "has unknown unit",
    );
    assert_invalid(
        &control(&["backoff_max = \"3601s\""]),
        "control.backoff_max",
        "\"3601s\"",
        "must be at least",
    );
    assert_invalid(
        &control(&["stats_interval = \"500ms\""]),
        "control.stats_interval",
        "\"500ms\"",
        "must be in 1s..=1h",
    );
    assert!(syntax(&control(&["endpont = \"x:1\""])).contains("endpont"));
}

#[test]
fn control_refuses_file_sessions_too() {
    let doc = format!(
        "{}\n[[sessions]]\nname = \"s\"\ningress = \"127.0.0.1:40000\"\nsubscribers = [\"127.0.0.1:41000\"]\n",
        control(&[])
    );
    assert_invalid(
        &doc,
        "sessions",
        "1 entries",
        "must be empty when [control] is set",
    );
}

// --- [signaling] settings and listeners ----------------------------------------------------

const SVC_ID: &str = "\"spiffe://pop.test/ns/danmaku/sa/web\"";

/// `[control]`, `[signaling]` with `settings`, and one `[[signaling.listeners]]` per entry
/// (each a list of `key = value` lines).
fn signaling(settings: &[&str], listeners: &[&[&str]]) -> String {
    let mut doc = format!("{}\n[signaling]\n{}\n", control(&[]), settings.join("\n"));
    for lines in listeners {
        doc.push_str(&format!(
            "\n[[signaling.listeners]]\n{}\n",
            lines.join("\n")
        ));
    }
    doc
}

const INBOUND: &[&str] = &[
    "name = \"inbound\"",
    "bind = \"0.0.0.0:8443\"",
    "direction = \"inbound\"",
];

const OUTBOUND: &[&str] = &[
    "name = \"local\"",
    "bind = \"127.0.0.1:15001\"",
    "direction = \"outbound\"",
    "identity = \"spiffe://pop.test/ns/danmaku/sa/web\"",
];

/// `base` with the lines of `extra` replacing the keys they set.
fn with(base: &[&str], extra: &[&str]) -> Vec<String> {
    let key = |l: &str| l.split_once(" = ").map(|(k, _)| k.to_string());
    let mut lines: Vec<String> = base
        .iter()
        .filter(|l| extra.iter().all(|e| key(e) != key(l)))
        .map(|l| l.to_string())
        .collect();
    lines.extend(extra.iter().map(|l| l.to_string()));
    lines
}

fn listener_doc(base: &[&str], extra: &[&str]) -> String {
    let lines = with(base, extra);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    signaling(&[], &[&refs])
}

#[test]
fn signaling_defaults_without_the_section() {
    let config = ok(PORT);
    let s = &config.signaling;
    assert_eq!(s, &popmesh_config::SignalingConfig::default());
    assert!(s.cores.is_empty() && s.listeners.is_empty());
    assert_eq!(s.drain_timeout, Duration::from_secs(5));
    assert!(s.access_log);
    assert_eq!(s.header_identity, "x-popmesh-peer-identity");
    assert_eq!(s.max_request_body_retry, 65_536);
    assert_eq!(s.upstream_resumption, Duration::from_secs(600));
    // Only cores, as before the lane had listeners.
    assert_eq!(
        ok(&format!("[signaling]\ncores = [0]\n{PORT}"))
            .signaling
            .cores,
        vec![0]
    );
}

#[test]
fn signaling_listeners_parse_with_their_defaults() {
    use popmesh_config::{Direction, Protocol};
    let tcp: &[&str] = &[
        "name = \"raw_1\"",
        "bind = \"[::]:9000\"",
        "direction = \"inbound\"",
        "protocol = \"tcp\"",
        "service = \"chat-relay\"",
        "idle_timeout = \"7d\"",
        "max_connections = 1000000",
    ];
    let config = ok(&signaling(
        &[
            "cores = [0]",
            "drain_timeout = \"10m\"",
            "access_log = false",
            "header_identity = \"x-caller\"",
            "max_request_body_retry = 16777216",
            "upstream_resumption = \"24h\"",
        ],
        &[INBOUND, OUTBOUND, tcp],
    ));
    let s = &config.signaling;
    assert_eq!(s.drain_timeout, Duration::from_secs(600));
    assert!(!s.access_log);
    assert_eq!(s.header_identity, "x-caller");
    assert_eq!(s.max_request_body_retry, 16 * 1024 * 1024);
    assert_eq!(s.upstream_resumption, Duration::from_secs(86_400));
    let [inbound, local, raw] = s.listeners.as_slice() else {
        panic!("three listeners: {:?}", s.listeners);
    };
    assert_eq!(inbound.name, "inbound");
    assert_eq!(inbound.bind, addr("0.0.0.0:8443"));
    assert_eq!(inbound.direction, Direction::Inbound);
    assert_eq!(inbound.protocol, Protocol::Http);
    assert_eq!((&inbound.service, &inbound.identity), (&None, &None));
    assert_eq!(inbound.idle_timeout, Duration::from_secs(3600));
    assert_eq!(inbound.max_connections, 100_000);
    assert_eq!(local.direction, Direction::Outbound);
    assert_eq!(
        local.identity.as_ref().map(ToString::to_string).as_deref(),
        Some("spiffe://pop.test/ns/danmaku/sa/web")
    );
    assert_eq!(raw.protocol, Protocol::Tcp);
    assert_eq!(raw.service.as_deref(), Some("chat-relay"));
    assert_eq!(raw.idle_timeout, Duration::from_secs(7 * 86_400));
    assert_eq!(config.listener("local"), Some(local));
    assert_eq!(config.listener("nope"), None);
    // Empty `service` and `identity` are the documented defaults written out.
    ok(&listener_doc(
        INBOUND,
        &["service = \"\"", "identity = \"\""],
    ));
}

#[test]
fn signaling_listeners_need_control() {
    let doc = format!("{PORT}\n[[signaling.listeners]]\n{}\n", INBOUND.join("\n"));
    let (path, value, rule) = invalid(&doc);
    assert_eq!(
        (path.as_str(), value.as_str()),
        ("signaling.listeners", "1 entries")
    );
    assert!(rule.starts_with("need [control]"), "{rule}");
    assert!(
        rule.contains("control.cert") && rule.contains("trust bundle"),
        "{rule}"
    );
    // The rest of the section works without [control].
    ok(&format!(
        "{PORT}\n[signaling]\ncores = [0]\ndrain_timeout = \"0s\"\n"
    ));
}

#[test]
fn signaling_settings_ranges() {
    assert_invalid(
        &signaling(&["drain_timeout = \"11m\""], &[]),
        "signaling.drain_timeout",
        "\"11m\"",
        "must be in 0s..=10m",
    );
    assert_invalid(
        &signaling(&["drain_timeout = \"5\""], &[]),
        "signaling.drain_timeout",
        "\"5\"",
        "has no unit",
    );
    ok(&signaling(&["drain_timeout = \"0s\""], &[]));
    assert_invalid(
        &signaling(&["upstream_resumption = \"25h\""], &[]),
        "signaling.upstream_resumption",
        "\"25h\"",
        "must be in 0s..=24h",
    );
    assert_invalid(
        &signaling(&["upstream_resumption = \"ten\""], &[]),
        "signaling.upstream_resumption",
        "\"ten\"",
        "has no number before the unit",
    );
    let off = ok(&signaling(&["upstream_resumption = \"0s\""], &[]));
    assert_eq!(off.signaling.upstream_resumption, Duration::ZERO);
    assert_invalid(
        &signaling(&["max_request_body_retry = 16777217"], &[]),
        "signaling.max_request_body_retry",
        "16777217",
        "must be in 0..=16777216",
    );
    assert_invalid(
        &signaling(&["max_request_body_retry = -1"], &[]),
        "signaling.max_request_body_retry",
        "-1",
        "must be in 0..=16777216",
    );
    ok(&signaling(&["max_request_body_retry = 0"], &[]));
    let typo = syntax(&signaling(&["acces_log = true"], &[]));
    assert!(typo.contains("unknown field `acces_log`"), "{typo}");
}

#[test]
fn signaling_header_identity_is_a_lower_case_token_of_its_own() {
    for bad in ["X-Peer", "", "x peer", "x-peer:", "x_ü", "x\t"] {
        assert_invalid(
            &signaling(&[&format!("header_identity = {bad:?}")], &[]),
            "signaling.header_identity",
            &format!("{bad:?}"),
            "must be a lower-case header name",
        );
    }
    assert_invalid(
        &signaling(&[&format!("header_identity = {:?}", "x".repeat(129))], &[]),
        "signaling.header_identity",
        &format!("{:?}", "x".repeat(129)),
        "must be a lower-case header name",
    );
    for reserved in ["host", "content-length", "authorization", "x-forwarded-for"] {
        assert_invalid(
            &signaling(&[&format!("header_identity = {reserved:?}")], &[]),
            "signaling.header_identity",
            &format!("{reserved:?}"),
            "is a header the proxy or HTTP itself manages",
        );
    }
    ok(&signaling(&["header_identity = \"x-spiffe_id.v1~\""], &[]));
}

#[test]
fn signaling_listener_names_are_short_lowercase_and_unique() {
    assert_invalid(
        &listener_doc(INBOUND, &["name = \"In\""]),
        "signaling.listeners[0].name",
        "\"In\"",
        "is not a valid listener name ([a-z0-9_-]{1,32})",
    );
    assert_invalid(
        &listener_doc(INBOUND, &[&format!("name = {:?}", "a".repeat(33))]),
        "signaling.listeners[0].name",
        &format!("{:?}", "a".repeat(33)),
        "is not a valid listener name",
    );
    let second = with(OUTBOUND, &["name = \"inbound\""]);
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    assert_invalid(
        &signaling(&[], &[INBOUND, &second]),
        "signaling.listeners[1].name",
        "\"inbound\"",
        "is already the name of signaling.listeners[0]",
    );
    let missing = syntax(&signaling(&[], &[&INBOUND[1..]]));
    assert!(missing.contains("missing field `name`"), "{missing}");
    let missing = syntax(&signaling(&[], &[&INBOUND[..2]]));
    assert!(missing.contains("missing field `direction`"), "{missing}");
}

#[test]
fn signaling_listener_binds_are_tcp_addresses_that_do_not_overlap() {
    assert_invalid(
        &listener_doc(INBOUND, &["bind = \"0.0.0.0\""]),
        "signaling.listeners[0].bind",
        "\"0.0.0.0\"",
        "is not a valid socket address",
    );
    assert_invalid(
        &listener_doc(INBOUND, &["bind = \"0.0.0.0:0\""]),
        "signaling.listeners[0].bind",
        "\"0.0.0.0:0\"",
        "has port 0",
    );
    let pair = |a: &str, b: &str| {
        signaling(
            &[],
            &[
                &[
                    "name = \"a\"",
                    &format!("bind = {a:?}"),
                    "direction = \"inbound\"",
                ],
                &[
                    "name = \"b\"",
                    &format!("bind = {b:?}"),
                    "direction = \"inbound\"",
                ],
            ],
        )
    };
    let (path, value, rule) = invalid(&pair("10.0.0.1:8443", "0.0.0.0:8443"));
    assert_eq!(
        format!("{path}: {value} {rule}"),
        "signaling.listeners[1].bind: \"0.0.0.0:8443\" overlaps signaling.listeners[0] \"a\" \
         (10.0.0.1:8443); every address may be opened once"
    );
    assert_invalid(
        &pair("0.0.0.0:8443", "127.0.0.1:8443"),
        "signaling.listeners[1].bind",
        "\"127.0.0.1:8443\"",
        "overlaps signaling.listeners[0] \"a\"",
    );
    assert_invalid(
        &pair("[::1]:8443", "[::1]:8443"),
        "signaling.listeners[1].bind",
        "\"[::1]:8443\"",
        "overlaps signaling.listeners[0]",
    );
    // Other IP, other port or other family: separate sockets.
    ok(&pair("10.0.0.1:8443", "10.0.0.2:8443"));
    ok(&pair("0.0.0.0:8443", "0.0.0.0:8444"));
    ok(&pair("0.0.0.0:8443", "[::]:8443"));
    // A UDP media port on the same number is no conflict.
    ok(&listener_doc(INBOUND, &["bind = \"127.0.0.1:40000\""]));
}

#[test]
fn signaling_listeners_keep_off_the_admin_listener() {
    assert_invalid(
        &listener_doc(INBOUND, &["bind = \"127.0.0.1:9100\""]),
        "signaling.listeners[0].bind",
        "\"127.0.0.1:9100\"",
        "overlaps admin.listen (127.0.0.1:9100)",
    );
    assert_invalid(
        &listener_doc(INBOUND, &["bind = \"0.0.0.0:9100\""]),
        "signaling.listeners[0].bind",
        "\"0.0.0.0:9100\"",
        "overlaps admin.listen",
    );
    ok(&listener_doc(INBOUND, &["bind = \"10.0.0.1:9101\""]));
    // An ephemeral admin port cannot be known here.
    let doc = listener_doc(INBOUND, &[])
        .replace(PORT, &format!("[admin]\nlisten = \"0.0.0.0:0\"\n{PORT}"));
    ok(&doc);
}

#[test]
fn signaling_listener_direction_and_protocol_are_known_words() {
    assert_invalid(
        &listener_doc(INBOUND, &["direction = \"in\""]),
        "signaling.listeners[0].direction",
        "\"in\"",
        "must be \"inbound\"",
    );
    assert_invalid(
        &listener_doc(INBOUND, &["protocol = \"grpc\""]),
        "signaling.listeners[0].protocol",
        "\"grpc\"",
        "must be \"http\"",
    );
}

#[test]
fn signaling_listener_service_is_for_tcp_only_and_required_there() {
    assert_invalid(
        &listener_doc(INBOUND, &["protocol = \"tcp\""]),
        "signaling.listeners[0].service",
        "(missing)",
        "is required with protocol = \"tcp\"",
    );
    assert_invalid(
        &listener_doc(INBOUND, &["service = \"chat\""]),
        "signaling.listeners[0].service",
        "\"chat\"",
        "is only used with protocol = \"tcp\"",
    );
    for bad in ["Chat", "-chat", "chat_relay", &"c".repeat(64)] {
        assert_invalid(
            &listener_doc(
                INBOUND,
                &["protocol = \"tcp\"", &format!("service = {bad:?}")],
            ),
            "signaling.listeners[0].service",
            &format!("{bad:?}"),
            "is not a service name",
        );
    }
    ok(&listener_doc(
        OUTBOUND,
        &["protocol = \"tcp\"", "service = \"chat\""],
    ));
}

#[test]
fn signaling_listener_identity_is_for_outbound_only_and_required_there() {
    assert_invalid(
        &listener_doc(INBOUND, &[&format!("identity = {SVC_ID}")]),
        "signaling.listeners[0].identity",
        SVC_ID,
        "is only used with direction = \"outbound\"",
    );
    assert_invalid(
        &listener_doc(&OUTBOUND[..3], &[]),
        "signaling.listeners[0].identity",
        "(missing)",
        "is required with direction = \"outbound\"",
    );
    let (path, value, rule) = invalid(&listener_doc(
        OUTBOUND,
        &["identity = \"spiffe://pop.test/danmaku/web\""],
    ));
    assert_eq!(
        format!("{path}: {value} {rule}"),
        "signaling.listeners[0].identity: \"spiffe://pop.test/danmaku/web\" is not a SPIFFE ID \
         spiffe://<td>/ns/<ns>/sa/<name>: path \"/danmaku/web\" is not /ns/<namespace>/sa/<name>"
    );
    for bad in [
        "https://pop.test/ns/a/sa/b",
        "spiffe://Pop.test/ns/a/sa/b",
        "spiffe://pop.test/ns/a/sa/*",
        "spiffe://pop.test/ns/a/sa/b?x",
    ] {
        assert_invalid(
            &listener_doc(OUTBOUND, &[&format!("identity = {bad:?}")]),
            "signaling.listeners[0].identity",
            &format!("{bad:?}"),
            "is not a SPIFFE ID",
        );
    }
    for reserved in ["operators", "appliances"] {
        let id = format!("spiffe://pop.test/ns/{reserved}/sa/x");
        assert_invalid(
            &listener_doc(OUTBOUND, &[&format!("identity = {id:?}")]),
            "signaling.listeners[0].identity",
            &format!("{id:?}"),
            &format!("is in the reserved namespace {reserved:?}"),
        );
    }
}

#[test]
fn signaling_outbound_listeners_bind_loopback_only() {
    for bad in ["0.0.0.0:15001", "10.0.0.1:15001", "[::]:15001"] {
        assert_invalid(
            &listener_doc(OUTBOUND, &[&format!("bind = {bad:?}")]),
            "signaling.listeners[0].bind",
            &format!("{bad:?}"),
            "must be a loopback address",
        );
    }
    ok(&listener_doc(OUTBOUND, &["bind = \"127.0.0.2:15001\""]));
    ok(&listener_doc(OUTBOUND, &["bind = \"[::1]:15001\""]));
}

#[test]
fn signaling_listener_idle_timeout_and_max_connections() {
    for (value, rule) in [
        ("\"999ms\"", "must be in 1s..=7d"),
        ("\"8d\"", "must be in 1s..=7d"),
        ("\"1w\"", "has unknown unit"),
    ] {
        assert_invalid(
            &listener_doc(INBOUND, &[&format!("idle_timeout = {value}")]),
            "signaling.listeners[0].idle_timeout",
            value,
            rule,
        );
    }
    ok(&listener_doc(INBOUND, &["idle_timeout = \"1s\""]));
    for value in ["0", "1000001", "-5"] {
        assert_invalid(
            &listener_doc(INBOUND, &[&format!("max_connections = {value}")]),
            "signaling.listeners[0].max_connections",
            value,
            "must be in 1..=1000000",
        );
    }
    let typo = syntax(&listener_doc(INBOUND, &["max_conns = 5"]));
    assert!(typo.contains("unknown field `max_conns`"), "{typo}");
}
