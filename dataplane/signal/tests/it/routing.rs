//! Canary splits: a 1% split over 100,000 requests, stickiness, the tester override; config
//! changes while connections stay open.

use std::sync::Arc;

use popmesh_ctrl_api::pb;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_split_over_100k_requests_is_sticky_and_overridable() {
    let pki = Pki::new(TD);
    let v1 = http_upstream(pki.tls("room", "room"), "v1", Arc::default()).await;
    let v2 = http_upstream(pki.tls("room", "room"), "v2", Arc::default()).await;
    let mesh = Mesh {
        services: vec![service("room", &[("v1", &[v1]), ("v2", &[v2])])],
        routes: vec![route("room", "/", "room")],
        canaries: vec![pb::Canary {
            service: "room".into(),
            weights: vec![
                pb::VersionWeight {
                    version: "v1".into(),
                    weight: 99,
                },
                pb::VersionWeight {
                    version: "v2".into(),
                    weight: 1,
                },
            ],
            sticky_header: "x-user-id".into(),
            override_header: "x-canary-version".into(),
            ..Default::default()
        }],
        policies: vec![allow("users", "spiffe://pop.test/ns/user/sa/*", "room")],
    };
    let lane = inbound_lane(&pki, &mesh);
    let addr = lane.bound[0];
    let c = client(&pki.tls("user", "user"), true);

    const N: usize = 100_000;
    const CONCURRENCY: usize = 64;
    let counts: Vec<(usize, usize)> = futures_util::future::join_all((0..CONCURRENCY).map(|w| {
        let c = c.clone();
        async move {
            let mut on_v2 = 0;
            let mut errors = 0;
            for i in (w..N).step_by(CONCURRENCY) {
                let user = format!("user-{i}");
                match get(&c, addr, "/join", &[("x-user-id", &user)]).await {
                    Ok((200, _, body)) if body == "v2" => on_v2 += 1,
                    Ok((200, _, _)) => {}
                    _ => errors += 1,
                }
            }
            (on_v2, errors)
        }
    }))
    .await;
    let on_v2: usize = counts.iter().map(|c| c.0).sum();
    let errors: usize = counts.iter().map(|c| c.1).sum();
    assert_eq!(errors, 0);
    let share = on_v2 as f64 * 100.0 / N as f64;
    assert!(
        (share - 1.0).abs() <= 0.2,
        "{share:.3}% of 100,000 requests went to the canary"
    );

    // The same user always lands on the same version.
    for i in [3, 77, 1234] {
        let user = format!("user-{i}");
        let first = get(&c, addr, "/join", &[("x-user-id", &user)])
            .await
            .unwrap()
            .2;
        for _ in 0..20 {
            assert_eq!(
                get(&c, addr, "/join", &[("x-user-id", &user)])
                    .await
                    .unwrap()
                    .2,
                first
            );
        }
    }
    // Testers force a version.
    for v in ["v1", "v2"] {
        let (_, _, body) = get(
            &c,
            addr,
            "/join",
            &[("x-user-id", "user-3"), ("x-canary-version", v)],
        )
        .await
        .unwrap();
        assert_eq!(body, v);
    }
    let m = metrics_text(&lane);
    let v2_count = sample(
        &m,
        &[
            "popmesh_signal_requests_total",
            "version=\"v2\"",
            "class=\"2xx\"",
        ],
    )
    .unwrap();
    assert!(v2_count >= on_v2 as f64, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404_and_header_matches_route() {
    let pki = Pki::new(TD);
    let a = http_upstream(pki.tls("a", "a"), "a", Arc::default()).await;
    let b = http_upstream(pki.tls("b", "b"), "b", Arc::default()).await;
    let mut beta = route("beta", "/api", "b");
    beta.headers = vec![pb::HeaderMatch {
        name: "x-beta".into(),
        value: "1".into(),
    }];
    let mesh = Mesh {
        services: vec![service("a", &[("v1", &[a])]), service("b", &[("v1", &[b])])],
        routes: vec![route("api", "/api", "a"), beta],
        policies: vec![
            allow("a", "spiffe://pop.test/ns/user/sa/*", "a"),
            allow("b", "spiffe://pop.test/ns/user/sa/*", "b"),
        ],
        ..Mesh::default()
    };
    let lane = inbound_lane(&pki, &mesh);
    let c = client(&pki.tls("user", "user"), false);
    let addr = lane.bound[0];
    assert_eq!(get(&c, addr, "/api/x", &[]).await.unwrap().2, "a");
    assert_eq!(
        get(&c, addr, "/api/x", &[("x-beta", "1")]).await.unwrap().2,
        "b"
    );
    let (status, _, body) = get(&c, addr, "/other", &[]).await.unwrap();
    assert_eq!(status, 404, "{body}");
}
