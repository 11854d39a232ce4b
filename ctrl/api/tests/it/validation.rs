//! The messages operators see.

use std::collections::HashMap;

use popmesh_ctrl_api::pb::{
    Canary, Endpoint, EndpointGroup, HeaderMatch, HealthCheck, Labels, OutlierDetection, Policy,
    PolicyAction, RetryPolicy, Route, Service, Session, Subscriber, VersionWeight,
};
use popmesh_ctrl_api::validate;

fn ep(a: &str, p: u32) -> Option<Endpoint> {
    Some(Endpoint {
        address: a.into(),
        port: p,
    })
}

pub fn good_session() -> Session {
    Session {
        name: "room-1".into(),
        appliance: "pop-1".into(),
        ingress: ep("192.0.2.1", 40000),
        source: None,
        clock_rate: 90000,
        subscribers: vec![Subscriber {
            endpoint: ep("198.51.100.1", 41000),
            egress_port: String::new(),
        }],
        labels: None,
        version: 0,
    }
}

fn catalog() -> HashMap<String, Service> {
    let s = Service {
        name: "encoder".into(),
        groups: ["v1", "v2"]
            .iter()
            .map(|v| EndpointGroup {
                version: (*v).into(),
                endpoints: vec!["enc.internal:443".into()],
            })
            .collect(),
        default_version: "v1".into(),
        ..Default::default()
    };
    HashMap::from([("encoder".to_string(), s)])
}

fn session_err(f: impl FnOnce(&mut Session)) -> String {
    let mut s = good_session();
    f(&mut s);
    validate::session("session", &s, &catalog())
        .unwrap_err()
        .to_string()
}

#[test]
fn session_errors_name_the_field() {
    assert!(validate::session("session", &good_session(), &catalog()).is_ok());
    assert_eq!(
        session_err(|s| s.ingress = ep("1.2.3", 40000)),
        "session.ingress.address: \"1.2.3\" is not an IP address"
    );
    assert_eq!(
        session_err(|s| s.ingress = ep("0.0.0.0", 40000)),
        "session.ingress.address: 0.0.0.0 is not a unicast host address"
    );
    assert_eq!(
        session_err(|s| s.ingress = ep("192.0.2.1", 70000)),
        "session.ingress.port: 70000 is not a UDP port (1..=65535)"
    );
    assert_eq!(
        session_err(|s| s.ingress = None),
        "session.ingress: required"
    );
    assert_eq!(
        session_err(|s| s.source = ep("2001:db8::1", 5000)),
        "session.source.address: 2001:db8::1 is not of the ingress address family (192.0.2.1:40000)"
    );
    assert_eq!(
        session_err(|s| s.subscribers.clear()),
        "session.subscribers: at least one subscriber is required"
    );
    assert_eq!(
        session_err(|s| {
            let sub = s.subscribers[0].clone();
            s.subscribers.push(sub);
        }),
        "session.subscribers[1]: 198.51.100.1:41000 is listed twice (also subscribers[0])"
    );
    assert_eq!(
        session_err(|s| s.subscribers[0].endpoint = ep("192.0.2.1", 40000)),
        "session.subscribers[0]: 192.0.2.1:40000 is the session's ingress (a loop)"
    );
    assert_eq!(
        session_err(|s| s.subscribers[0].egress_port = "Uplink!".into()),
        "session.subscribers[0].egress_port: \"Uplink!\" must be 1..=32 characters of [a-z0-9_-]"
    );
    assert_eq!(
        session_err(|s| s.name = String::new()),
        "session.name: \"\" must be 1..=64 characters of [A-Za-z0-9._:-]"
    );
    assert_eq!(
        session_err(|s| s.clock_rate = 2_000_000),
        "session.clock_rate: 2000000 Hz, at most 1000000 (0: the appliance's default)"
    );
    assert_eq!(
        session_err(|s| s.labels = Some(Labels {
            service: "encoder".into(),
            version: "v3".into(),
            ..Default::default()
        })),
        "session.labels.version: service \"encoder\" has no version \"v3\" (it has v1, v2)"
    );
    assert_eq!(
        session_err(|s| s.labels = Some(Labels {
            service: "nope".into(),
            ..Default::default()
        })),
        "session.labels.service: unknown service \"nope\""
    );
    assert_eq!(
        session_err(|s| {
            s.subscribers = (0..4097u32)
                .map(|i| Subscriber {
                    endpoint: ep("198.51.100.1", 1 + i),
                    egress_port: String::new(),
                })
                .collect()
        }),
        "session.subscribers: 4097 subscribers, at most 4096 per session"
    );
}

#[test]
fn mesh_errors_name_the_field() {
    let cat = catalog();
    let mut s = cat["encoder"].clone();
    s.retry = Some(RetryPolicy {
        attempts: 3,
        per_try_timeout_ms: 0,
        retry_on: vec!["5xx".into(), "teapot".into()],
    });
    assert_eq!(
        validate::service("service", &s).unwrap_err().to_string(),
        "service.retry.retry_on[1]: unknown condition \"teapot\" (known: 5xx, gateway-error, reset, connect-failure, unavailable, cancelled, deadline-exceeded, resource-exhausted)"
    );
    s.retry = None;
    s.default_version = "v9".into();
    assert_eq!(
        validate::service("service", &s).unwrap_err().to_string(),
        "service.default_version: service \"encoder\" has no version \"v9\" (it has v1, v2)"
    );
    s.default_version = "v1".into();
    s.groups[1].endpoints.push("bad host:1".into());
    assert_eq!(
        validate::service("service", &s).unwrap_err().to_string(),
        "service.groups[1].endpoints[1]: \"bad host:1\": \"bad host\" is not an IP address or DNS name"
    );

    let r = Route {
        name: "api".into(),
        host: "live.example.com".into(),
        path_prefix: "api".into(),
        headers: vec![HeaderMatch {
            name: "x-env".into(),
            value: "canary".into(),
        }],
        service: "encoder".into(),
        ..Default::default()
    };
    assert_eq!(
        validate::route("route", &r, &cat).unwrap_err().to_string(),
        "route.path_prefix: \"api\" does not start with \"/\""
    );

    let c = Canary {
        service: "encoder".into(),
        weights: vec![
            VersionWeight {
                version: "v1".into(),
                weight: 60,
            },
            VersionWeight {
                version: "v1".into(),
                weight: 40,
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        validate::canary("canary", &c, &cat)
            .unwrap_err()
            .to_string(),
        "canary.weights[1].version: \"v1\" is listed twice"
    );

    let p = Policy {
        name: "danmaku-no-payment".into(),
        sources: vec![
            "spiffe://pop.test/ns/danmaku/sa/*".into(),
            "spiffe://pop.test/user".into(),
        ],
        destination: "encoder".into(),
        methods: vec!["POST".into()],
        paths: vec!["/pay".into()],
        action: PolicyAction::Deny as i32,
        version: 0,
    };
    assert_eq!(
        validate::policy("policy", &p, &cat).unwrap_err().to_string(),
        "policy.sources[1]: \"spiffe://pop.test/user\": path \"/user\" is not /ns/<namespace>/sa/<name>"
    );
}

fn service_err(f: impl FnOnce(&mut Service)) -> String {
    let mut s = catalog()["encoder"].clone();
    f(&mut s);
    validate::service("service", &s).unwrap_err().to_string()
}

fn service_ok(f: impl FnOnce(&mut Service)) {
    let mut s = catalog()["encoder"].clone();
    f(&mut s);
    if let Err(e) = validate::service("service", &s) {
        panic!("{e}");
    }
}

fn health(f: impl FnOnce(&mut HealthCheck)) -> impl FnOnce(&mut Service) {
    let mut h = HealthCheck {
        interval_ms: 5000,
        ..Default::default()
    };
    f(&mut h);
    move |s: &mut Service| s.health_check = Some(h)
}

#[test]
fn health_checks_name_the_field() {
    service_ok(health(|_| {}));
    service_ok(|s| s.health_check = Some(HealthCheck::default()));
    service_ok(health(|h| {
        h.interval_ms = 500;
        h.timeout_ms = 500;
        h.path = "/healthz?full=1".into();
        h.unhealthy_threshold = 100;
        h.healthy_threshold = 100;
    }));
    service_ok(health(|h| h.interval_ms = 3_600_000));
    assert_eq!(
        service_err(health(|h| h.interval_ms = 499)),
        "service.health_check.interval_ms: 499 ms, must be 0 (off) or 500..=3600000"
    );
    assert_eq!(
        service_err(health(|h| h.interval_ms = 3_600_001)),
        "service.health_check.interval_ms: 3600001 ms, must be 0 (off) or 500..=3600000"
    );
    assert_eq!(
        service_err(health(|h| h.timeout_ms = 5001)),
        "service.health_check.timeout_ms: 5001 ms is longer than interval_ms (5000 ms); a check \
         must end before the next"
    );
    assert_eq!(
        service_err(health(|h| h.interval_ms = 800)),
        "service.health_check.timeout_ms: 0 (the default, 1000 ms) is longer than interval_ms \
         (800 ms); a check must end before the next"
    );
    for bad in [
        "healthz",
        "/health z",
        "/h\u{7f}",
        "/ü",
        &format!("/{}", "a".repeat(1024)),
    ] {
        let e = service_err(health(|h| h.path = bad.to_string()));
        assert!(
            e.starts_with(&format!(
                "service.health_check.path: {bad:?} must start with \"/\""
            )),
            "{e}"
        );
    }
    assert_eq!(
        service_err(health(|h| h.unhealthy_threshold = 101)),
        "service.health_check.unhealthy_threshold: 101, at most 100"
    );
    assert_eq!(
        service_err(health(|h| h.healthy_threshold = 101)),
        "service.health_check.healthy_threshold: 101, at most 100"
    );
    // Settings without an interval would do nothing.
    assert!(service_err(health(|h| {
        h.interval_ms = 0;
        h.path = "/healthz".into();
    }))
    .starts_with("service.health_check.path: is set but interval_ms is 0"));
    assert!(service_err(health(|h| {
        h.interval_ms = 0;
        h.timeout_ms = 100;
    }))
    .starts_with("service.health_check.timeout_ms: is set but interval_ms is 0"));
}

#[test]
fn plaintext_services_are_local_only() {
    let local = |s: &mut Service| {
        s.plaintext = true;
        for g in &mut s.groups {
            g.endpoints = vec![
                "127.0.0.1:8080".into(),
                "127.3.0.1:8080".into(),
                "[::1]:8080".into(),
                "localhost:8080".into(),
            ];
        }
    };
    service_ok(local);
    assert_eq!(
        service_err(|s| s.plaintext = true),
        "service.groups[0].endpoints[0]: \"enc.internal:443\" is not on loopback; a plaintext \
         service is reached in cleartext, so its endpoints must be local (127.0.0.0/8, [::1] or \
         localhost)"
    );
    for remote in [
        "10.0.0.1:80",
        "[2001:db8::1]:80",
        "localhost.evil.example:80",
    ] {
        let e = service_err(|s| {
            local(s);
            s.groups[1].endpoints.push(remote.into());
        });
        assert!(
            e.starts_with(&format!(
                "service.groups[1].endpoints[4]: {remote:?} is not on loopback"
            )),
            "{e}"
        );
    }
    // Mutual TLS (the default) may reach anything.
    service_ok(|s| s.groups[0].endpoints.push("10.0.0.1:80".into()));
}

#[test]
fn outlier_detection_is_off_or_sane() {
    let on = |f: fn(&mut OutlierDetection)| {
        let mut o = OutlierDetection {
            consecutive_errors: 5,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 50,
        };
        f(&mut o);
        move |s: &mut Service| s.outlier = Some(o)
    };
    service_ok(on(|_| {}));
    service_ok(|s| s.outlier = Some(OutlierDetection::default()));
    service_ok(on(|o| {
        o.consecutive_errors = 1000;
        o.interval_ms = 100;
        o.base_ejection_ms = 3_600_000;
        o.max_ejection_percent = 100;
    }));
    assert_eq!(
        service_err(on(|o| o.max_ejection_percent = 101)),
        "service.outlier.max_ejection_percent: 101, at most 100"
    );
    assert_eq!(
        service_err(on(|o| o.max_ejection_percent = 0)),
        "service.outlier.max_ejection_percent: must be 1..=100 when consecutive_errors is set \
         (0 would never eject)"
    );
    assert_eq!(
        service_err(on(|o| o.interval_ms = 0)),
        "service.outlier.interval_ms: must be > 0 when consecutive_errors is set"
    );
    assert_eq!(
        service_err(on(|o| o.base_ejection_ms = 0)),
        "service.outlier.base_ejection_ms: must be > 0 when consecutive_errors is set"
    );
    assert_eq!(
        service_err(on(|o| o.interval_ms = 99)),
        "service.outlier.interval_ms: 99 ms, must be 100..=3600000 when consecutive_errors is set"
    );
    assert_eq!(
        service_err(on(|o| o.base_ejection_ms = 3_600_001)),
        "service.outlier.base_ejection_ms: 3600001 ms, must be 100..=3600000 when \
         consecutive_errors is set"
    );
    assert_eq!(
        service_err(on(|o| o.consecutive_errors = 1001)),
        "service.outlier.consecutive_errors: 1001, at most 1000"
    );
}

#[test]
fn svid_requests() {
    use popmesh_ctrl_api::pb::IdentityKind;
    let k = |k: IdentityKind| k as i32;
    assert_eq!(
        validate::svid_request("svid", k(IdentityKind::Service), "user", "api", 0),
        Ok((IdentityKind::Service, validate::DEFAULT_SVID_TTL_S))
    );
    let e = |kind, ns: &str, name: &str, ttl| {
        validate::svid_request("svid", kind, ns, name, ttl)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        e(0, "", "x", 0),
        "svid.kind: must be SERVICE, APPLIANCE or OPERATOR"
    );
    assert_eq!(
        e(k(IdentityKind::Service), "operators", "x", 0),
        "svid.namespace: \"operators\" is reserved; use kind OPERATOR or APPLIANCE"
    );
    assert_eq!(
        e(k(IdentityKind::Appliance), "default", "pop-1", 0),
        "svid.namespace: only service identities take a namespace"
    );
    assert_eq!(
        e(k(IdentityKind::Operator), "", "alice", 30),
        "svid.ttl_seconds: 30 s, must be 60..=7776000 (0: 24 hours)"
    );
    assert_eq!(
        e(k(IdentityKind::Operator), "", "Alice", 3600),
        "svid.name: name \"Alice\" must be 1..=63 characters of [a-z0-9.-_]"
    );
}
