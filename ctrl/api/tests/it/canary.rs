use popmesh_ctrl_api::pb::{Canary, EndpointGroup, Service, VersionWeight};
use popmesh_ctrl_api::place;

fn service() -> Service {
    Service {
        name: "encoder".into(),
        groups: ["v1", "v2"]
            .iter()
            .map(|v| EndpointGroup {
                version: (*v).into(),
                endpoints: vec!["10.0.0.1:80".into()],
            })
            .collect(),
        default_version: "v1".into(),
        ..Default::default()
    }
}

fn split(v2: u32) -> Canary {
    Canary {
        service: "encoder".into(),
        weights: vec![
            VersionWeight {
                version: "v1".into(),
                weight: 100 - v2,
            },
            VersionWeight {
                version: "v2".into(),
                weight: v2,
            },
        ],
        ..Default::default()
    }
}

#[test]
fn one_percent_of_100k_users_within_0_2_points_and_sticky() {
    let s = service();
    for (pct, keys) in [(1u32, "user-"), (1, "u"), (10, "user-"), (50, "viewer:")] {
        let c = split(pct);
        let n = 100_000;
        let on = (0..n)
            .filter(|i| place(&s, Some(&c), &format!("{keys}{i}"), "") == "v2")
            .count();
        let share = on as f64 * 100.0 / n as f64;
        // The goal for 1% is 0.2 points (about 6 standard deviations of a fair coin over
        // 100k keys); wider splits get 4 standard deviations (0.38 points at 10%).
        let p = f64::from(pct) / 100.0;
        let sd_points = (p * (1.0 - p) / n as f64).sqrt() * 100.0;
        let tolerance = if pct == 1 { 0.2 } else { 4.0 * sd_points };
        assert!(
            (share - f64::from(pct)).abs() <= tolerance,
            "{pct}% split with keys {keys:?}: {share}% (tolerance {tolerance:.3} points)"
        );
        // Sticky: the same key always gets the same version.
        for i in (0..n).step_by(997) {
            let key = format!("{keys}{i}");
            let first = place(&s, Some(&c), &key, "");
            for _ in 0..3 {
                assert_eq!(place(&s, Some(&c), &key, ""), first);
            }
        }
    }
}

#[test]
fn other_services_get_other_canary_populations() {
    let a = service();
    let mut b = service();
    b.name = "danmaku".into();
    let (ca, mut cb) = (split(10), split(10));
    cb.service = "danmaku".into();
    let both = (0..10_000)
        .map(|i| format!("user-{i}"))
        .filter(|k| place(&a, Some(&ca), k, "") == "v2" && place(&b, Some(&cb), k, "") == "v2")
        .count();
    // Independent 10% populations overlap in about 1% of users, not 10%.
    assert!(both < 250, "{both} users are canaries of both services");
}

#[test]
fn growing_canary_keeps_its_users() {
    let s = service();
    let (c1, c5) = (split(1), split(5));
    for i in 0..20_000 {
        let key = format!("user-{i}");
        if place(&s, Some(&c1), &key, "") == "v2" {
            assert_eq!(place(&s, Some(&c5), &key, ""), "v2", "{key}");
        }
    }
}

#[test]
fn override_and_defaults() {
    let s = service();
    assert_eq!(place(&s, None, "u", ""), "v1");
    assert_eq!(place(&s, Some(&split(0)), "u", "v2"), "v2");
    assert_eq!(place(&s, Some(&split(0)), "u", "v9"), "v1");
    assert_eq!(place(&s, Some(&split(100)), "u", ""), "v2");
}
