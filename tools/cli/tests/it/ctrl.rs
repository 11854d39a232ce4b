//! The control commands against a real popmesh-ctrld over real mutual TLS.

use std::time::Duration;

use popmesh_ctrl_api::pb::{
    appliance_service_client::ApplianceServiceClient, watch_request, Nack, RegisterRequest,
    ResourceError, SessionStats, StatsReport, WatchRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::daemon::Daemon;

fn mixer(d: &Daemon) {
    d.popmesh(&[
        "service",
        "put",
        "--name",
        "mixer",
        "--group",
        "v1=10.2.0.1:8443",
        "--group",
        "v2=10.2.0.2:8443",
    ])
    .ok();
}

const CREATE: &[&str] = &[
    "session",
    "create",
    "--name",
    "room-1-cam",
    "--appliance",
    "pop-1",
    "--ingress",
    "192.0.2.1:40000",
    "--subscriber",
    "198.51.100.7:41000",
    "--subscriber",
    "198.51.100.8:41000@edge",
    "--room",
    "room-1",
    "--user",
    "u42",
    "--service",
    "mixer",
];

#[test]
fn session_created_then_listed_as_table_and_json() {
    let d = Daemon::start();
    mixer(&d);
    let out = d.popmesh(CREATE);
    assert!(
        out.ok()
            .starts_with("created session room-1-cam, service mixer version v1"),
        "{}",
        out.stdout
    );
    let list = d.popmesh(&["session", "list"]);
    let lines: Vec<&str> = list.ok().lines().collect();
    assert!(
        lines[0].starts_with("NAME        APPLIANCE  INGRESS "),
        "{}",
        list.stdout
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            "room-1-cam",
            "pop-1",
            "192.0.2.1:40000",
            "-",
            "2",
            "room-1",
            "u42",
            "mixer",
            "v1"
        ],
        "{}",
        list.stdout
    );
    let v = d.popmesh(&["session", "list", "--json"]).json();
    assert_eq!(v["sessions"][0]["name"], "room-1-cam");
    assert_eq!(
        v["sessions"][0]["subscribers"][1],
        "198.51.100.8:41000@edge"
    );
    assert_eq!(v["sessions"][0]["labels"]["version"], "v1");
    // Filters go to the daemon.
    let other = d
        .popmesh(&["session", "list", "--json", "--room", "room-2"])
        .json();
    assert_eq!(other["sessions"].as_array().map(Vec::len), Some(0));
    let get = d.popmesh(&["session", "get", "room-1-cam"]);
    assert!(
        get.ok().contains("  198.51.100.8:41000@edge"),
        "{}",
        get.stdout
    );
    let mut update: Vec<&str> = CREATE.to_vec();
    update[1] = "update";
    update.extend_from_slice(&["--subscriber", "198.51.100.9:41000", "--version", "v2"]);
    assert!(d
        .popmesh(&update)
        .ok()
        .starts_with("updated session room-1-cam"));
    let v = d.popmesh(&["session", "list", "--json"]).json();
    assert_eq!(
        v["sessions"][0]["subscribers"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(v["sessions"][0]["labels"]["version"], "v2");
    assert!(d
        .popmesh(&["session", "stats", "room-1-cam"])
        .ok()
        .contains("no stats reported yet"));
    // The list's JSON feeds a batch back (same shape in and out).
    let batch = d.dir.path().join("again.json");
    let mut s = v["sessions"][0].clone();
    s["name"] = "room-1-cam-b".into();
    s["ingress"] = "192.0.2.1:40010".into();
    std::fs::write(&batch, serde_json::json!([s]).to_string()).unwrap();
    assert!(d
        .popmesh(&["session", "batch", "--file", batch.to_str().unwrap()])
        .ok()
        .contains("1 upserted, 0 removed"));
    d.popmesh(&["session", "remove", "room-1-cam"]).ok();
    let v = d.popmesh(&["session", "list", "--json"]).json();
    assert_eq!(v["sessions"][0]["name"], "room-1-cam-b");
    d.popmesh(&["session", "remove", "room-1-cam"])
        .fails(1, "not found: no session \"room-1-cam\"");
}

#[test]
fn invalid_changes_are_refused_by_name_and_change_nothing() {
    let d = Daemon::start();
    mixer(&d);
    d.popmesh(CREATE).ok();
    let before = d.popmesh(&["session", "list", "--json"]).json();

    let canary = [
        "canary", "set", "mixer", "--weight", "v1=99", "--weight", "v2=2",
    ];
    let bad_addr = [
        "session",
        "create",
        "--name",
        "x",
        "--appliance",
        "pop-1",
        "--ingress",
        "192.0.2.1:40001",
        "--subscriber",
        "198.51.100.7:41000",
        "--subscriber",
        "1.2.3:41000",
    ];
    let big = d.dir.path().join("big.json");
    let subs: Vec<String> = (0..4097)
        .map(|i| format!("10.1.{}.{}:41000", i / 250, i % 250 + 1))
        .collect();
    std::fs::write(
        &big,
        serde_json::json!({"upserts": [{
            "name": "big", "appliance": "pop-1", "ingress": "192.0.2.1:40002", "subscribers": subs,
        }]})
        .to_string(),
    )
    .unwrap();
    let batch = ["session", "batch", "--file", big.to_str().unwrap()];
    let cases: [(&[&str], &str); 3] = [
        (&canary, "canary.weights: weights sum to 101, must be 100"),
        (
            &bad_addr,
            "session.subscribers[1].address: \"1.2.3\" is not an IP address",
        ),
        (
            &batch,
            "batch.upserts[0].subscribers: 4097 subscribers, at most 4096 per session",
        ),
    ];
    for (args, message) in cases {
        // Checked locally first...
        let local = d.popmesh(args);
        local.fails(
            1,
            &format!("popmesh: invalid: {message} (checked before sending)"),
        );
        // ...and the daemon, asked directly, says the same.
        let mut direct = vec!["--no-local-checks"];
        direct.extend_from_slice(args);
        let remote = d.popmesh(&direct);
        remote.fails(1, &format!("popmesh: invalid: {message}\n"));
        assert!(
            !remote.stderr.contains("checked before sending"),
            "{}",
            remote.stderr
        );
    }
    // Only the daemon knows the services.
    let mut unknown: Vec<&str> = CREATE.to_vec();
    unknown[3] = "other";
    unknown[7] = "192.0.2.1:40003";
    *unknown.last_mut().unwrap() = "transcoder";
    d.popmesh(&unknown).fails(
        1,
        "invalid: session.labels.service: unknown service \"transcoder\"",
    );
    // Not a port at all, and bad usage.
    let mut noport = bad_addr.to_vec();
    noport[11] = "198.51.100.9:http";
    d.popmesh(&noport).fails(
        1,
        "session.subscribers[1].endpoint.port: \"http\" is not a UDP port",
    );
    d.popmesh(&["session", "create", "--name", "y"])
        .fails(2, "required arguments were not provided");

    let after = d.popmesh(&["session", "list", "--json"]).json();
    assert_eq!(before, after, "a refused change changed something");
    assert_eq!(
        d.popmesh(&["canary", "list", "--json"]).json()["canaries"],
        serde_json::json!([])
    );
}

#[test]
fn issued_operator_identity_works_and_appliance_identity_cannot_change_config() {
    let d = Daemon::start();
    let out = d.dir.path().join("ids");
    let out_s = out.to_str().unwrap();
    let issued = d.popmesh(&[
        "identity", "issue", "--kind", "operator", "--name", "bob", "--ttl", "2h", "--out", out_s,
    ]);
    assert!(
        issued
            .ok()
            .contains("spiffe://pop.test/ns/operators/sa/bob"),
        "{}",
        issued.stdout
    );
    let (cert, key) = (out.join("bob.pem"), out.join("bob-key.pem"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
    mixer(&d);
    d.popmesh_as(&cert, &key, CREATE).ok();
    let v = d
        .popmesh_as(&cert, &key, &["session", "list", "--json"])
        .json();
    assert_eq!(v["sessions"][0]["name"], "room-1-cam");
    // Issuing over existing files needs --force.
    d.popmesh(&[
        "identity", "issue", "--kind", "operator", "--name", "bob", "--out", out_s,
    ])
    .fails(1, "exists; pass --force");
    // The trust bundle written next to them is the daemon's.
    let bundle = d.popmesh(&["identity", "bundle"]);
    assert_eq!(
        bundle.ok(),
        std::fs::read_to_string(out.join("ca.pem")).unwrap()
    );

    d.popmesh(&[
        "identity",
        "issue",
        "--kind",
        "appliance",
        "--name",
        "pop-1",
        "--out",
        out_s,
    ])
    .ok();
    let (acert, akey) = (out.join("pop-1.pem"), out.join("pop-1-key.pem"));
    let refused = d.popmesh_as(&acert, &akey, &["session", "remove", "room-1-cam"]);
    refused.fails(1, "popmesh: permission denied: spiffe://pop.test/ns/appliances/sa/pop-1 is not an operator identity");
    assert!(
        refused.stderr.contains("need an operator identity"),
        "{}",
        refused.stderr
    );
    d.popmesh_as(
        &acert,
        &akey,
        &["canary", "set", "mixer", "--weight", "v1=100"],
    )
    .fails(1, "permission denied");
    assert_eq!(d.popmesh(&["session", "list", "--json"]).json(), v);
    // A local check of a bad request comes before any connection.
    d.popmesh(&[
        "identity", "issue", "--kind", "service", "--name", "x", "--ttl", "30s", "--out", out_s,
    ])
    .fails(1, "svid.namespace");
}

#[test]
fn identity_from_a_csr_keeps_the_key_local() {
    let d = Daemon::start();
    let dir = d.dir.path().join("svc");
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let (csr_path, key_path) = (dir.join("sig.csr"), dir.join("my-key.pem"));
    std::fs::write(&csr_path, csr).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let out = d.popmesh(&[
        "identity",
        "issue",
        "--kind",
        "service",
        "--ns",
        "edge",
        "--name",
        "sig",
        "--csr",
        csr_path.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--json",
    ]);
    let v = out.json();
    assert_eq!(v["spiffe_id"], "spiffe://pop.test/ns/edge/sa/sig");
    assert!(v["key"].is_null(), "{v}");
    assert!(
        !dir.join("sig-key.pem").exists(),
        "a key was written for a CSR"
    );
    // The certificate works with the local key: a mesh service may read the trust bundle...
    let cert = dir.join("sig.pem");
    d.popmesh_as(&cert, &key_path, &["identity", "bundle"]).ok();
    // ...and nothing else.
    d.popmesh_as(&cert, &key_path, &["session", "list"]).fails(
        1,
        "permission denied: spiffe://pop.test/ns/edge/sa/sig is not an operator",
    );
}

#[test]
fn client_without_a_valid_certificate_gets_a_connection_error() {
    let d = Daemon::start();
    let foreign = Daemon::start();
    let op = foreign.operator_dir();
    let r = d.popmesh_as(
        &op.join("alice.pem"),
        &op.join("alice-key.pem"),
        &["session", "list"],
    );
    r.fails(
        3,
        &format!(
            "popmesh: cannot talk to popmesh-ctrld at {} (server name \"127.0.0.1\"): the daemon ",
            d.grpc
        ),
    );
    assert!(
        r.stderr.contains("refus") && r.stderr.contains("this client's certificate; "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("check: the address") && r.stderr.contains("--cert, --key"),
        "{}",
        r.stderr
    );
    let missing = d.dir.path().join("nope.pem");
    d.popmesh_as(&missing, &missing, &["session", "list"])
        .fails(3, "cannot read the client certificate");
    // A certificate that is not one (no PEM certificate in the file).
    let junk = d.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    d.popmesh_as(&junk, &junk, &["session", "list"])
        .fails(3, "cannot talk to popmesh-ctrld");
    // Nothing listening.
    let op = d.operator_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popmesh"))
        .args(["--ctrld", "127.0.0.1:1", "--ca"])
        .arg(op.join("ca.pem"))
        .arg("--cert")
        .arg(op.join("alice.pem"))
        .arg("--key")
        .arg(op.join("alice-key.pem"))
        .args(["appliance", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nothing answers at that address; transport error: tcp connect error"),
        "{stderr}"
    );
    // The daemon still serves a good client.
    d.popmesh(&["session", "list"]).ok();
}

/// What keeps an appliance's watch stream open.
type Agent = (
    ApplianceServiceClient<Channel>,
    tokio::sync::mpsc::Sender<WatchRequest>,
    tonic::Streaming<popmesh_ctrl_api::pb::ConfigUpdate>,
);

/// An appliance agent stand-in: registers, takes the snapshot and NACKs it; the stream stays
/// open while the returned value lives.
async fn register_and_nack(d: &Daemon, cert: &std::path::Path, key: &std::path::Path) -> Agent {
    let ca = std::fs::read_to_string(d.operator_dir().join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(
            std::fs::read_to_string(cert).unwrap(),
            std::fs::read_to_string(key).unwrap(),
        ))
        .domain_name("127.0.0.1");
    let ch = Channel::from_shared(format!("https://{}", d.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut a = ApplianceServiceClient::new(ch);
    a.register(RegisterRequest {
        name: "pop-1".into(),
        software_version: "popmesh-dataplane test".into(),
        media_ports: vec!["edge".into()],
    })
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut inbound = a
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let update = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("snapshot within 10 s")
        .unwrap()
        .expect("a snapshot");
    tx.send(WatchRequest {
        body: Some(watch_request::Body::Nack(Nack {
            version: update.version,
            nonce: update.nonce,
            reason: "flow table full".into(),
            errors: vec![ResourceError {
                kind: "session".into(),
                name: "room-1-cam".into(),
                reason: "no free flow slot".into(),
            }],
        })),
    })
    .await
    .unwrap();
    tx.send(WatchRequest {
        body: Some(watch_request::Body::Stats(StatsReport {
            sessions: vec![SessionStats {
                name: "room-1-cam".into(),
                packets: 1234,
                bytes: 1_480_800,
                drops: 2,
                lost: 5,
                jitter_us: 870,
            }],
        })),
    })
    .await
    .unwrap();
    (a, tx, inbound)
}

#[test]
fn appliance_status_for_unknown_and_registered_appliances() {
    let d = Daemon::start();
    d.popmesh(&["appliance", "status", "pop-9"])
        .fails(1, "not found: no appliance \"pop-9\" is registered");
    assert!(d.popmesh(&["appliance", "list"]).ok().contains("(none)"));

    mixer(&d);
    d.popmesh(CREATE).ok();
    let out = d.dir.path().join("ids");
    d.popmesh(&[
        "identity",
        "issue",
        "--kind",
        "appliance",
        "--name",
        "pop-1",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    // A worker thread keeps driving the agent's connection while the CLI runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let agent = rt.block_on(register_and_nack(
        &d,
        &out.join("pop-1.pem"),
        &out.join("pop-1-key.pem"),
    ));
    let status = until(
        &d,
        &["appliance", "status", "pop-1", "--resources"],
        "rejected",
    );
    let text = status.as_str();
    for part in [
        "identity:   spiffe://pop.test/ns/appliances/sa/pop-1",
        "software:   popmesh-dataplane test",
        "state:      rejected",
        "connection: connected",
        "last NACK:  version ",
        ": flow table full",
        "  session room-1-cam: no free flow slot",
        "resources not synced:",
        "session  room-1-cam  ",
    ] {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
    let stats = until(&d, &["session", "stats", "room-1-cam"], "1234");
    let row: Vec<&str> = stats
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..8],
        [
            "room-1-cam",
            "pop-1",
            "1234",
            "1480800",
            "2",
            "5",
            "870",
            "us"
        ],
        "{stats}"
    );
    let v = d.popmesh(&["appliance", "list", "--json"]).json();
    assert_eq!(v["appliances"][0]["name"], "pop-1");
    assert_eq!(v["appliances"][0]["state"], "rejected");
    assert_eq!(v["appliances"][0]["last_nack"]["reason"], "flow table full");
    let table = d.popmesh(&["appliance", "list"]);
    let row = table.ok().lines().nth(1).unwrap_or_default().to_string();
    assert!(
        row.starts_with("pop-1") && row.contains("rejected") && row.contains("flow table full"),
        "{}",
        table.stdout
    );
    // The agent goes away: the status says since when.
    drop(agent);
    drop(rt);
    until(
        &d,
        &["appliance", "status", "pop-1"],
        "connection: disconnected ",
    );
}

/// Runs `popmesh ARGS` until its output contains `needle` (10 s at most); gives that output.
fn until(d: &Daemon, args: &[&str], needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = d.popmesh(args).ok().to_string();
        if last.contains(needle) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "`popmesh {}` never showed {needle:?}; last:\n{last}",
        args.join(" ")
    );
}

#[test]
fn canary_promote_rollback_and_place() {
    let d = Daemon::start();
    mixer(&d);
    d.popmesh(&[
        "canary",
        "set",
        "mixer",
        "--weight",
        "v1=99",
        "--weight",
        "v2=1",
        "--sticky-header",
        "x-user-id",
        "--override-header",
        "x-canary-version",
    ])
    .ok();
    let list = d.popmesh(&["canary", "list"]);
    assert!(
        list.ok()
            .contains("mixer    v1=99 v2=1  header x-user-id  x-canary-version"),
        "{}",
        list.stdout
    );
    let first = d
        .popmesh(&["canary", "place", "mixer", "u42", "--json"])
        .json();
    let again = d
        .popmesh(&["canary", "place", "mixer", "u42", "--json"])
        .json();
    assert_eq!(first["version"], again["version"], "placement is sticky");
    let forced = d.popmesh(&["canary", "place", "mixer", "u42", "--override", "v2"]);
    assert!(forced.ok().contains("on v2"), "{}", forced.stdout);
    d.popmesh(&["canary", "promote", "mixer", "v2"]).ok();
    let v = d.popmesh(&["canary", "get", "mixer", "--json"]).json();
    assert_eq!(
        v["weights"],
        serde_json::json!([{"version": "v2", "weight": 100}])
    );
    d.popmesh(&["canary", "rollback", "mixer"]).ok();
    d.popmesh(&["canary", "promote", "mixer", "v9"])
        .fails(1, "v9");
    // A service in use by the canary cannot go.
    d.popmesh(&["service", "remove", "mixer"])
        .fails(1, "refused: ");
    assert!(d.popmesh(&["service", "list"]).ok().contains("mixer"));
}

#[test]
fn routes_and_policies_put_list_remove() {
    let d = Daemon::start();
    mixer(&d);
    d.popmesh(&[
        "route",
        "put",
        "--name",
        "mix",
        "--host",
        "sig.example.net",
        "--path-prefix",
        "/mix",
        "--header",
        "x-tenant=a",
        "--service",
        "mixer",
    ])
    .ok();
    d.popmesh(&["route", "put", "--name", "bad", "--service", "nope"])
        .fails(1, "route.service: unknown service \"nope\"");
    let routes = d.popmesh(&["route", "list", "--json"]).json();
    assert_eq!(routes["routes"].as_array().map(Vec::len), Some(1));
    assert_eq!(routes["routes"][0]["headers"][0]["name"], "x-tenant");
    d.popmesh(&[
        "policy",
        "put",
        "--name",
        "ops-mix",
        "--source",
        "spiffe://pop.test/ns/edge/sa/*",
        "--destination",
        "mixer",
        "--method",
        "POST",
        "--action",
        "allow",
    ])
    .ok();
    d.popmesh(&[
        "policy",
        "put",
        "--name",
        "bad",
        "--source",
        "spiffe://pop.test/x",
        "--destination",
        "mixer",
        "--action",
        "deny",
    ])
    .fails(1, "policy.sources[0]");
    let pols = d.popmesh(&["policy", "list"]);
    assert!(
        pols.ok().contains("ops-mix  allow   mixer"),
        "{}",
        pols.stdout
    );
    d.popmesh(&["policy", "remove", "ops-mix"]).ok();
    d.popmesh(&["route", "remove", "mix"]).ok();
    d.popmesh(&["service", "remove", "mixer"]).ok();
    assert!(d.popmesh(&["service", "list"]).ok().contains("(none)"));
}

#[test]
fn service_transport_and_health_checks_put_and_list() {
    let d = Daemon::start();
    d.popmesh(&[
        "service",
        "put",
        "--name",
        "chat",
        "--group",
        "v1=127.0.0.1:9001,localhost:9002",
        "--plaintext",
        "--health-interval",
        "5s",
        "--health-path",
        "/healthz",
        "--health-timeout",
        "1500ms",
    ])
    .ok();
    mixer(&d);
    let list = d.popmesh(&["service", "list"]);
    let out = list.ok();
    assert!(out.contains("TRANSPORT  HEALTH"), "{out}");
    assert!(
        out.contains("plaintext  GET /healthz every 5s, timeout 1500ms"),
        "{out}"
    );
    assert!(out.contains("mtls       -"), "{out}");
    let json = d.popmesh(&["service", "list", "--json"]).json();
    let chat = &json["services"][0];
    assert_eq!(chat["name"], "chat");
    assert_eq!(chat["plaintext"], true);
    assert_eq!(
        chat["health_check"],
        serde_json::json!({
            "interval_ms": 5000, "path": "/healthz", "timeout_ms": 1500,
            "unhealthy_threshold": 0, "healthy_threshold": 0,
        })
    );
    assert_eq!(json["services"][1]["plaintext"], false);
    assert_eq!(json["services"][1]["health_check"], serde_json::Value::Null);

    // Refused before sending: cleartext to a remote endpoint, a path without an interval, a
    // timeout longer than the interval, a duration without a unit.
    let put = |extra: &[&str]| {
        let mut args = vec![
            "service",
            "put",
            "--name",
            "bad",
            "--group",
            "v1=127.0.0.1:1",
        ];
        args.extend_from_slice(extra);
        d.popmesh(&args)
    };
    put(&["--plaintext", "--group", "v2=10.0.0.1:80"]).fails(
        1,
        "service.groups[1].endpoints[0]: \"10.0.0.1:80\" is not on loopback",
    );
    put(&["--health-path", "/healthz"])
        .fails(1, "service.health_check.path: is set but interval_ms is 0");
    put(&["--health-interval", "1s", "--health-timeout", "2s"]).fails(
        1,
        "service.health_check.timeout_ms: 2000 ms is longer than interval_ms (1000 ms)",
    );
    put(&["--health-interval", "5"]).fails(2, "has no unit");
    assert_eq!(
        d.popmesh(&["service", "list", "--json"]).json()["services"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}
