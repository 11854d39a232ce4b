//! Outlier ejection and readmission, retries to a healthy endpoint, and fast 503s over the
//! circuit-breaker limit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use popmesh_ctrl_api::pb;
use popmesh_signal::{Direction, Protocol};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_ejected_traffic_moves_and_it_returns_after_recovery() {
    let pki = Pki::new(TD);
    let tls = pki.tls("room", "room");
    let bad_b = Arc::new(Behavior::default());
    // "good" answers in 20 ms, "bad" at once: the balancer prefers "bad" (lower latency) as
    // long as it is in, so what reaches the caller shows exactly when it is ejected.
    let good_b = Arc::new(Behavior::default());
    good_b.delay_ms.store(20, Ordering::Relaxed);
    let good = http_upstream(tls.clone(), "good", good_b).await;
    let bad = http_upstream(tls, "bad", bad_b.clone()).await;
    let mut svc = service("room", &[("v1", &[good, bad])]);
    svc.outlier = Some(pb::OutlierDetection {
        consecutive_errors: 3,
        interval_ms: 1000,
        base_ejection_ms: 3000,
        max_ejection_percent: 50,
    });
    let mesh = Mesh {
        services: vec![svc],
        routes: vec![route("room", "/", "room")],
        policies: vec![allow("u", "spiffe://pop.test/ns/user/sa/*", "room")],
        ..Mesh::default()
    };
    let lane = lane(
        pki.tls("appliances", "pop-1"),
        &mesh,
        vec![listener("inbound", Direction::Inbound, Protocol::Http)],
    );
    let addr = lane.bound[0];
    let c = client(&pki.tls("user", "user"), false);

    bad_b.fail.store(true, Ordering::Relaxed);
    // Until "bad" has failed 3 times in a row some requests see its 500s; then none do.
    let mut fails = 0;
    for _ in 0..40 {
        let (s, _, _) = get(&c, addr, "/", &[]).await.unwrap();
        if s == 500 {
            fails += 1;
        }
    }
    assert_eq!(
        fails, 3,
        "exactly the 3 failures that eject it reach the caller"
    );
    let m = metrics_text(&lane);
    assert_eq!(
        sample(
            &m,
            &[
                "popmesh_signal_ejections_total",
                &format!("endpoint=\"{bad}\"")
            ]
        ),
        Some(1.0),
        "{m}"
    );
    let hits_while_out = bad_b.hits.load(Ordering::Relaxed);
    // It recovers; after the 3 s ejection it gets traffic again.
    bad_b.fail.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    for _ in 0..50 {
        assert_eq!(get(&c, addr, "/", &[]).await.unwrap().0, 200);
    }
    assert!(
        bad_b.hits.load(Ordering::Relaxed) > hits_while_out,
        "readmitted after recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_request_is_retried_on_another_endpoint() {
    let pki = Pki::new(TD);
    let tls = pki.tls("room", "room");
    let bad_b = Arc::new(Behavior::default());
    bad_b.fail.store(true, Ordering::Relaxed);
    let good = http_upstream(tls.clone(), "good", Arc::default()).await;
    let bad = http_upstream(tls, "bad", bad_b.clone()).await;
    let mut svc = service("room", &[("v1", &[good, bad])]);
    svc.retry = Some(pb::RetryPolicy {
        attempts: 2,
        per_try_timeout_ms: 0,
        retry_on: vec!["5xx".into()],
    });
    let mesh = Mesh {
        services: vec![svc],
        routes: vec![route("room", "/", "room")],
        policies: vec![allow("u", "spiffe://pop.test/ns/user/sa/*", "room")],
        ..Mesh::default()
    };
    let lane = lane(
        pki.tls("appliances", "pop-1"),
        &mesh,
        vec![listener("inbound", Direction::Inbound, Protocol::Http)],
    );
    let c = client(&pki.tls("user", "user"), false);
    for _ in 0..50 {
        let (s, _, body) = get(&c, lane.bound[0], "/", &[]).await.unwrap();
        assert_eq!((s, body.as_str()), (200, "good"));
    }
    assert!(bad_b.hits.load(Ordering::Relaxed) > 0, "bad was tried");
    let m = metrics_text(&lane);
    assert!(
        sample(&m, &["popmesh_signal_retries_total"]).unwrap() >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_request_limit_gets_503_without_waiting() {
    let pki = Pki::new(TD);
    let slow = Arc::new(Behavior::default());
    slow.delay_ms.store(3000, Ordering::Relaxed);
    let up = http_upstream(pki.tls("room", "room"), "slow", slow).await;
    let mut svc = service("room", &[("v1", &[up])]);
    svc.circuit_breaker = Some(pb::CircuitBreaker {
        max_requests: 2,
        ..Default::default()
    });
    let mesh = Mesh {
        services: vec![svc],
        routes: vec![route("room", "/", "room")],
        policies: vec![allow("u", "spiffe://pop.test/ns/user/sa/*", "room")],
        ..Mesh::default()
    };
    let lane = lane(
        pki.tls("appliances", "pop-1"),
        &mesh,
        vec![listener("inbound", Direction::Inbound, Protocol::Http)],
    );
    let addr = lane.bound[0];
    let c = client(&pki.tls("user", "user"), true);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { get(&c, addr, "/", &[]).await })
        })
        .collect();
    // Both are in flight once the service's breaker counts them.
    let breaker = lane.table().service("room").unwrap().breaker.clone();
    let started = Instant::now();
    while breaker.counts().requests < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "requests never reached the lane"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    let (s, h, body) = get(&c, addr, "/", &[]).await.unwrap();
    let waited = t.elapsed();
    assert_eq!(s, 503, "{body}");
    assert_eq!(h["x-popmesh-overloaded"], "true");
    // Answered by the lane, not after the upstream's 3 s.
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().0, 200);
    }
    let m = metrics_text(&lane);
    assert_eq!(
        sample(
            &m,
            &["popmesh_signal_overflows_total", "limit=\"requests\""]
        ),
        Some(1.0),
        "{m}"
    );
}
