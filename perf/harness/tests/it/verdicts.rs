//! Threshold verdicts: pass, fail, missing, and the overall rule.

use std::collections::BTreeMap;

use popmesh_capacity::metrics::Better;
use popmesh_capacity::report::{evaluate, overall, Metric, Overall, Status};
use popmesh_capacity::scenario::{Bound, Threshold, ThresholdSource};

fn threshold(metric: &str, bound: Bound) -> Threshold {
    Threshold {
        metric: metric.into(),
        bound,
        source: ThresholdSource::Ours,
        description: String::new(),
    }
}

fn metrics(values: &[(&str, f64)]) -> BTreeMap<String, Metric> {
    values
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                Metric {
                    value: *v,
                    unit: "us".into(),
                    better: Better::Lower,
                },
            )
        })
        .collect()
}

#[test]
fn max_and_min_bounds_are_inclusive() {
    let t = [
        threshold("a", Bound::Max(10.0)),
        threshold("a", Bound::Max(9.99)),
        threshold("b", Bound::Min(5.0)),
        threshold("b", Bound::Min(5.01)),
    ];
    let v = evaluate(&t, &metrics(&[("a", 10.0), ("b", 5.0)]));
    let statuses: Vec<Status> = v.iter().map(|v| v.status).collect();
    assert_eq!(
        statuses,
        [Status::Pass, Status::Fail, Status::Pass, Status::Fail]
    );
    assert_eq!(v[0].measured, Some(10.0));
    assert_eq!(v[0].unit.as_deref(), Some("us"));
    assert_eq!(overall(&v), Overall::Fail);
}

#[test]
fn an_unmeasured_metric_is_missing_and_fails_the_run() {
    let t = [
        threshold("a", Bound::Max(1.0)),
        threshold("gone", Bound::Max(1.0)),
    ];
    let v = evaluate(&t, &metrics(&[("a", 0.5)]));
    assert_eq!(v[0].status, Status::Pass);
    assert_eq!(v[1].status, Status::Missing);
    assert_eq!(v[1].measured, None);
    assert_eq!(overall(&v), Overall::Fail);
    // A NaN that slipped into a report is not a measurement.
    let v = evaluate(&t[..1], &metrics(&[("a", f64::NAN)]));
    assert_eq!(v[0].status, Status::Missing);
}

#[test]
fn overall_passes_only_when_every_threshold_passes() {
    let t = [
        threshold("a", Bound::Max(1.0)),
        threshold("b", Bound::Min(1.0)),
    ];
    let v = evaluate(&t, &metrics(&[("a", 1.0), ("b", 2.0)]));
    assert_eq!(overall(&v), Overall::Pass);
    assert_eq!(overall(&[]), Overall::Pass);
}
