//! Properties of validation, SPIFFE IDs and canary placement.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use popmesh_ctrl_api::pb::{Canary, Endpoint, EndpointGroup, Service, Subscriber, VersionWeight};
use popmesh_ctrl_api::spiffe::SpiffeId;
use popmesh_ctrl_api::{place, validate};
use proptest::prelude::*;

use crate::validation::good_session;

fn seg() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,63}".prop_filter("dot segments", |s| s != "." && s != "..")
}

proptest! {
    /// Every valid ID prints and parses back to itself.
    #[test]
    fn spiffe_round_trip(td in "[a-z0-9.-]{1,40}", ns in seg(), name in seg()) {
        let id = SpiffeId::new(&td, &ns, &name).unwrap();
        prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
    }

    /// Arbitrary strings never panic, and anything accepted prints back to the same string.
    #[test]
    fn spiffe_parse_is_total(s in "\\PC{0,80}|spiffe://[a-z./]{0,40}") {
        if let Ok(id) = SpiffeId::parse(&s) {
            prop_assert_eq!(id.to_string(), s);
        }
    }

    /// A session of valid subscribers is accepted and parses to exactly those addresses.
    #[test]
    fn valid_sessions_parse_to_their_addresses(
        subs in proptest::collection::btree_set((1u8..=254, 1u8..=254, 1u16..), 1..64),
    ) {
        let mut s = good_session();
        s.subscribers = subs
            .iter()
            .map(|(a, b, p)| Subscriber {
                endpoint: Some(Endpoint { address: format!("10.{a}.{b}.1"), port: u32::from(*p) }),
                egress_port: String::new(),
            })
            .collect();
        let spec = validate::session_spec("session", &s).unwrap();
        let want: Vec<SocketAddr> = subs
            .iter()
            .map(|(a, b, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, *a, *b, 1)), *p))
            .collect();
        let got: Vec<SocketAddr> = spec.subscribers.iter().map(|(a, _)| *a).collect();
        prop_assert_eq!(got, want);
    }

    /// A non-IP address anywhere in the subscriber list is refused naming its index.
    #[test]
    fn bad_subscriber_address_is_named(n in 1usize..50, bad in 0usize..50, addr in "[a-z0-9.:]{0,12}") {
        prop_assume!(addr.parse::<IpAddr>().is_err());
        let bad = bad % n;
        let mut s = good_session();
        s.subscribers = (0..n)
            .map(|i| Subscriber {
                endpoint: Some(Endpoint {
                    address: if i == bad { addr.clone() } else { "10.0.0.9".into() },
                    port: 1000 + i as u32,
                }),
                egress_port: String::new(),
            })
            .collect();
        let e = validate::session_spec("session", &s).unwrap_err();
        prop_assert_eq!(e.field, format!("session.subscribers[{bad}].address"));
    }

    /// A split is accepted exactly when its weights sum to 100, and then every key lands on a
    /// version with weight (or the default).
    #[test]
    fn canary_weights_sum_to_100(w1 in 0u32..=120, w2 in 0u32..=120, key in "\\PC{0,20}") {
        let svc = Service {
            name: "s".into(),
            groups: ["v1", "v2"].iter().map(|v| EndpointGroup {
                version: (*v).into(), endpoints: vec!["h:1".into()] }).collect(),
            default_version: "v1".into(),
            ..Default::default()
        };
        let cat = HashMap::from([("s".to_string(), svc.clone())]);
        let c = Canary {
            service: "s".into(),
            weights: vec![
                VersionWeight { version: "v1".into(), weight: w1 },
                VersionWeight { version: "v2".into(), weight: w2 },
            ],
            ..Default::default()
        };
        let r = validate::canary("canary", &c, &cat);
        if w1 + w2 == 100 {
            prop_assert!(r.is_ok());
            let v = place(&svc, Some(&c), &key, "");
            prop_assert!((v == "v1" && w1 > 0) || (v == "v2" && w2 > 0), "{} with {}/{}", v, w1, w2);
        } else {
            let e = r.unwrap_err().to_string();
            prop_assert!(
                e == format!("canary.weights: weights sum to {}, must be 100", w1 + w2)
                    || e.starts_with("canary.weights[") && e.contains("at most 100"),
                "{}", e
            );
        }
    }
}
