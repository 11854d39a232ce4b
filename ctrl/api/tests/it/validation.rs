//! The messages operators see.

use std::collections::HashMap;

use popmesh_ctrl_api::pb::{
    Canary, Endpoint, EndpointGroup, HeaderMatch, Labels, Policy, PolicyAction, RetryPolicy, Route,
    Service, Session, Subscriber, VersionWeight,
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
