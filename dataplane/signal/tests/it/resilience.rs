//! Outlier ejection and readmission, retries to a healthy endpoint, and fast 503s over the
//! circuit-breaker limit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use popmesh_ctrl_api::pb;

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
    let lane = room_lane(&pki, svc);
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
    let lane = room_lane(&pki, svc);
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
    let lane = room_lane(&pki, svc);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_take_an_endpoint_out_and_passing_ones_bring_it_back() {
    let pki = Pki::new(TD);
    let tls = pki.tls("room", "room");
    // "a" is slower, so the balancer prefers "b" whenever "b" is in rotation.
    let a_b = Arc::new(Behavior::default());
    a_b.delay_ms.store(20, Ordering::Relaxed);
    let b_b = Arc::new(Behavior::default());
    let a = http_upstream(tls.clone(), "a", a_b).await;
    let b = http_upstream(tls, "b", b_b.clone()).await;
    let mut svc = service("room", &[("v1", &[a, b])]);
    svc.health_check = Some(pb::HealthCheck {
        interval_ms: 500,
        path: "/healthz".into(),
        timeout_ms: 400,
        unhealthy_threshold: 2,
        healthy_threshold: 1,
    });
    let lane = room_lane(&pki, svc);
    let c = client(&pki.tls("user", "user"), false);
    let lane_ref = &lane;
    let wait_for = |want: f64| async move {
        let started = Instant::now();
        loop {
            let m = metrics_text(lane_ref);
            let now = sample(
                &m,
                &[
                    "popmesh_signal_endpoint_healthy",
                    &format!("endpoint=\"{b}\""),
                ],
            );
            if now == Some(want) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "endpoint never became {want}: {m}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for(1.0).await;
    b_b.unhealthy.store(true, Ordering::Relaxed);
    wait_for(0.0).await;
    let before = b_b.hits.load(Ordering::Relaxed);
    for _ in 0..20 {
        let (s, _, body) = get(&c, lane.bound[0], "/", &[]).await.unwrap();
        assert_eq!((s, body.as_str()), (200, "a"));
    }
    assert_eq!(
        b_b.hits.load(Ordering::Relaxed),
        before,
        "no traffic while unhealthy"
    );
    b_b.unhealthy.store(false, Ordering::Relaxed);
    wait_for(1.0).await;
    for _ in 0..20 {
        assert_eq!(get(&c, lane.bound[0], "/", &[]).await.unwrap().0, 200);
    }
    assert!(
        b_b.hits.load(Ordering::Relaxed) > before,
        "back in rotation"
    );
    assert!(b_b.health_hits.load(Ordering::Relaxed) >= 3);
    let m = metrics_text(&lane);
    assert!(
        sample(
            &m,
            &["popmesh_signal_health_checks_total", "result=\"fail\""]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_gets_503_without_waiting() {
    let pki = Pki::new(TD);
    let slow = Arc::new(Behavior::default());
    slow.delay_ms.store(3000, Ordering::Relaxed);
    let up = http_upstream(pki.tls("room", "room"), "slow", slow).await;
    let mut svc = service("room", &[("v1", &[up])]);
    svc.circuit_breaker = Some(pb::CircuitBreaker {
        max_connections: 1,
        ..Default::default()
    });
    let lane = room_lane(&pki, svc);
    let addr = lane.bound[0];
    // HTTP/1.1: a busy connection cannot take a second request, so it needs a new one.
    let c = client(&pki.tls("user", "user"), false);
    let held = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "/", &[]).await })
    };
    let breaker = lane.table().service("room").unwrap().breaker.clone();
    let started = Instant::now();
    while breaker.counts().connections < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first request never opened its connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c2 = client(&pki.tls("user", "user"), false);
    let t = Instant::now();
    let (s, h, body) = get(&c2, addr, "/", &[]).await.unwrap();
    let waited = t.elapsed();
    assert_eq!(s, 503, "{body}");
    assert_eq!(h["x-popmesh-overloaded"], "true");
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
    assert_eq!(held.await.unwrap().unwrap().0, 200);
    let m = metrics_text(&lane);
    assert_eq!(
        sample(
            &m,
            &["popmesh_signal_overflows_total", "limit=\"connections\""]
        ),
        Some(1.0),
        "{m}"
    );
}
