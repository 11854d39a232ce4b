//! `popmesh-perf compare A.json B.json`: which metrics got worse from run A to run B.
//!
//! For every metric in both reports the relative change `(b - a) / |a|` is judged by the
//! metric's own direction: latency, CPU, loss and stalls are worse when higher, throughput when
//! lower. A change worse than the tolerance is a regression. Informational metrics are shown,
//! never flagged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::metrics::Better;
use crate::report::Metric;

/// How one metric moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Within the tolerance.
    Same,
    /// Better beyond the tolerance.
    Improved,
    /// Worse beyond the tolerance.
    Regressed,
    /// The metric has no better direction.
    Info,
}

/// One metric in both reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Metric name.
    pub metric: String,
    /// Unit (from B).
    pub unit: String,
    /// Value in A.
    pub a: f64,
    /// Value in B.
    pub b: f64,
    /// `(b - a) / |a|`; `null` when a is 0 and b is not (an infinite change).
    pub relative: Option<f64>,
    /// Verdict.
    pub change: Change,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Tolerance as a fraction (0.1 = 10%).
    pub tolerance: f64,
    /// Metrics in both, by name.
    pub rows: Vec<Row>,
    /// Metrics only in A.
    pub only_a: Vec<String>,
    /// Metrics only in B.
    pub only_b: Vec<String>,
}

impl Comparison {
    /// Whether any metric regressed.
    pub fn has_regression(&self) -> bool {
        self.rows.iter().any(|r| r.change == Change::Regressed)
    }
}

/// Parses a tolerance, `10%` or `10` (a bare number is percent too, so `0.5` is 0.5%), and
/// returns it as a fraction (0.1 for 10%).
///
/// # Errors
/// A message for clap when the text is not a percentage in 0..=1000.
pub fn parse_tolerance(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim();
    let pct: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage such as 10%"))?;
    if !pct.is_finite() || !(0.0..=1000.0).contains(&pct) {
        return Err(format!(
            "`{text}`: the tolerance must be between 0% and 1000%"
        ));
    }
    Ok(pct / 100.0)
}

/// Compares the metrics of two reports.
pub fn compare(
    a: &BTreeMap<String, Metric>,
    b: &BTreeMap<String, Metric>,
    tolerance: f64,
) -> Comparison {
    let mut rows = Vec::new();
    for (name, ma) in a {
        let Some(mb) = b.get(name) else { continue };
        let (va, vb) = (ma.value, mb.value);
        let relative = if va == vb {
            Some(0.0)
        } else if va == 0.0 {
            None
        } else {
            Some((vb - va) / va.abs())
        };
        let change = match mb.better {
            Better::Neither => Change::Info,
            better => {
                // Positive = worse.
                let worse = match (relative, better) {
                    (Some(r), Better::Lower) => r,
                    (Some(r), _) => -r,
                    (None, Better::Lower) => {
                        if vb > va {
                            f64::INFINITY
                        } else {
                            f64::NEG_INFINITY
                        }
                    }
                    (None, _) => {
                        if vb < va {
                            f64::INFINITY
                        } else {
                            f64::NEG_INFINITY
                        }
                    }
                };
                if worse.is_nan() {
                    Change::Same
                } else if worse > tolerance {
                    Change::Regressed
                } else if worse < -tolerance {
                    Change::Improved
                } else {
                    Change::Same
                }
            }
        };
        rows.push(Row {
            metric: name.clone(),
            unit: mb.unit.clone(),
            a: va,
            b: vb,
            relative,
            change,
        });
    }
    Comparison {
        tolerance,
        rows,
        only_a: a.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
        only_b: b.keys().filter(|k| !a.contains_key(*k)).cloned().collect(),
    }
}

fn num(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The comparison as an aligned text table.
pub fn table(c: &Comparison) -> String {
    let mut out = String::new();
    let width = c
        .rows
        .iter()
        .map(|r| r.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:width$}  {:>14}  {:>14}  {:>9}  {:<10}  unit",
        "metric", "A", "B", "change", "verdict"
    );
    for r in &c.rows {
        let rel = r
            .relative
            .map_or("inf".to_string(), |x| format!("{:+.1}%", x * 100.0));
        let verdict = match r.change {
            Change::Same => "same",
            Change::Improved => "better",
            Change::Regressed => "REGRESSED",
            Change::Info => "info",
        };
        let _ = writeln!(
            out,
            "{:width$}  {:>14}  {:>14}  {:>9}  {:<10}  {}",
            r.metric,
            num(r.a),
            num(r.b),
            rel,
            verdict,
            r.unit
        );
    }
    if !c.only_a.is_empty() {
        let _ = writeln!(out, "only in A: {}", c.only_a.join(", "));
    }
    if !c.only_b.is_empty() {
        let _ = writeln!(out, "only in B: {}", c.only_b.join(", "));
    }
    let regressions = c
        .rows
        .iter()
        .filter(|r| r.change == Change::Regressed)
        .count();
    let _ = writeln!(
        out,
        "{} metric(s) compared, {} regression(s) beyond {:.1}%",
        c.rows.len(),
        regressions,
        c.tolerance * 100.0
    );
    out
}
