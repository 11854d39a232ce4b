//! The popmesh capacity harness: runs a load-test scenario against popmesh and reports what it
//! measured against the scenario's thresholds.
//!
//! A scenario ([`scenario`]) says what to run (data plane, control plane, stability), against
//! what (a local lab the harness starts itself, or a remote appliance), how hard and for how
//! long, and which figures must hold. A driver per kind ([`run::ScenarioDriver`]; the data plane
//! is [`dataplane`], the control plane [`controlplane`] on the lab of [`lab`], stability under
//! injected faults [`stability`]) runs the phases inside a shared [`run::RunContext`] (children that die
//! with the run, CPU sampling, the progress line, the output directory) and fills a
//! [`report::Report`]: `report.json`, a self-contained `report.html` ([`html`]) and one
//! HdrHistogram interval log per latency series ([`hlog`]). [`compare`] flags regressions
//! between two reports.
//!
//! Invariants: every run is bounded (scenario durations are capped, every child has a timeout
//! and is killed when the run ends, also on Ctrl-C); thresholds and comparisons only use metric
//! names from [`metrics`]; the parsers never panic on any input (property tests and the
//! `scenario_toml` fuzz target).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compare;
pub mod controlplane;
pub mod cpu;
pub mod dataplane;
pub mod env;
pub mod hlog;
pub mod html;
pub mod lab;
pub mod metrics;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stability;
pub mod stall;

pub use compare::{compare, Comparison};
pub use report::{Overall, Report, Status, Verdict};
pub use run::{run_scenario, RunContext, RunOptions, ScenarioDriver};
pub use scenario::{Scenario, ScenarioError, ScenarioKind};
