//! `popmesh-perf`: the capacity harness's command line.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use popmesh_capacity::compare::{self, parse_tolerance};
use popmesh_capacity::metrics;
use popmesh_capacity::report::{Overall, Report, Status};
use popmesh_capacity::run::{run_scenario, RunOptions};
use popmesh_capacity::scenario::{Scenario, ScenarioKind, Target};

/// Bad usage or a bad scenario (sysexits EX_USAGE): nothing was started.
const EXIT_USAGE: u8 = 64;
/// A threshold failed or was not measured (run), or a metric regressed (compare).
const EXIT_FAILED: u8 = 1;
/// The run itself failed (a component did not start, was interrupted, ...).
const EXIT_RUN_ERROR: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "popmesh-perf",
    version,
    about = "Capacity harness for popmesh: run a load-test scenario, judge it against thresholds, compare runs",
    long_about = "Capacity harness for popmesh.\n\n\
        `run` executes a scenario file (examples: configs/perf/*.toml) and writes report.json, a \
        self-contained report.html and HdrHistogram interval logs (.hlog) into the output \
        directory. In local-lab mode it starts popmesh-dataplane and popmesh-rtp itself from \
        target/release. `check` parses a scenario and prints it with every default. `compare` \
        flags regressions between two report.json files. `render` writes report.html again \
        from a report.json. `metrics` lists the metric names \
        thresholds may use.\n\n\
        Exit status: 0 pass; 1 a threshold failed or was not measured (run) or a metric \
        regressed (compare); 3 the run failed; 64 bad usage or scenario. \
        POPMESH_PERF_LOG=debug logs every child started and stopped."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a scenario and write its report.
    Run(RunArgs),
    /// Parse a scenario and print it with every default written out.
    Check {
        /// Scenario file (TOML).
        scenario: PathBuf,
    },
    /// Compare two reports and flag regressions (exit 1 if any).
    Compare(CompareArgs),
    /// Write report.html again from a report.json (e.g. with a newer harness's plots).
    Render {
        /// The report.json.
        report: PathBuf,
        /// Where to write the page; default: report.html next to the JSON.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the metric names a scenario kind reports (for thresholds).
    Metrics {
        /// Kind: data-plane, control-plane or stability; default: all.
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// Output directory; default perf/out/<scenario>-<UTC timestamp>.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Directory of popmesh-dataplane and popmesh-rtp (overrides target.local_lab.bin_dir);
    /// default: the directory of this binary if they are there, else target/release.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Run every step as written even on a small machine (by default a machine with fewer than
    /// 4 CPUs runs scaled-down steps, listed in the report's notes).
    #[arg(long)]
    full_scale: bool,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// The baseline report.json.
    a: PathBuf,
    /// The new report.json.
    b: PathBuf,
    /// A change worse than this is a regression, e.g. 10% or 2.5.
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = parse_tolerance)]
    tolerance: f64,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Debug logs (children spawned and stopped, ...) with POPMESH_PERF_LOG=debug; the progress
    // line and the summary are not logs and always go out.
    let filter = tracing_subscriber::EnvFilter::try_from_env("POPMESH_PERF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Cmd::Run(args) => run(&args),
        Cmd::Check { scenario } => match Scenario::from_file(&scenario) {
            Ok(s) => {
                print!("{}", s.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => usage(&format!("{}: {e}", scenario.display())),
        },
        Cmd::Compare(args) => compare_cmd(&args),
        Cmd::Render { report, out } => render_cmd(&report, out),
        Cmd::Metrics { kind } => metrics_cmd(kind.as_deref()),
    }
}

fn render_cmd(report: &Path, out: Option<PathBuf>) -> ExitCode {
    let parsed = match Report::from_file(report) {
        Ok(r) => r,
        Err(e) => return usage(&format!("{}: {e:#}", report.display())),
    };
    let out = out.unwrap_or_else(|| report.with_file_name("report.html"));
    match std::fs::write(&out, popmesh_capacity::html::render(&parsed)) {
        Ok(()) => {
            println!("{}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("popmesh-perf: write {}: {e}", out.display());
            ExitCode::from(EXIT_RUN_ERROR)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("popmesh-perf: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Where the binaries are: the flag, the scenario, next to this binary, target/release.
fn bin_dir(args: &RunArgs, scenario: &Scenario) -> PathBuf {
    if let Some(d) = &args.bin_dir {
        return d.clone();
    }
    if let Target::LocalLab(lab) = &scenario.target {
        if let Some(d) = &lab.bin_dir {
            return d.clone();
        }
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if dir.join("popmesh-dataplane").is_file() && dir.join("popmesh-rtp").is_file() {
            return dir;
        }
    }
    PathBuf::from("target/release")
}

fn run(args: &RunArgs) -> ExitCode {
    let scenario = match Scenario::from_file(&args.scenario) {
        Ok(s) => s,
        Err(e) => return usage(&format!("{}: {e}", args.scenario.display())),
    };
    let out_dir = args.out.clone().unwrap_or_else(|| {
        let stamp = popmesh_capacity::env::rfc3339_utc(popmesh_capacity::env::unix_now_s() as u64)
            .replace([':', '-'], "");
        PathBuf::from("perf/out").join(format!("{}-{stamp}", scenario.name))
    });
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("popmesh-perf: cannot handle signal {signal}: {e}");
        }
    }
    let options = RunOptions {
        bin_dir: bin_dir(args, &scenario),
        out_dir: out_dir.clone(),
        quiet: args.quiet,
        full_scale: args.full_scale,
    };
    match run_scenario(scenario, options, interrupted) {
        Ok(report) => {
            print_summary(&report, &out_dir);
            match report.overall {
                Overall::Pass => ExitCode::SUCCESS,
                Overall::Fail => ExitCode::from(EXIT_FAILED),
            }
        }
        Err(e) => {
            eprintln!("popmesh-perf: run failed: {e:#}");
            if out_dir.join("report.json").is_file() {
                eprintln!(
                    "popmesh-perf: the partial report is in {}",
                    out_dir.display()
                );
            }
            ExitCode::from(EXIT_RUN_ERROR)
        }
    }
}

fn print_summary(report: &Report, out_dir: &Path) {
    for v in &report.verdicts {
        let word = match v.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Missing => "MISSING",
        };
        let measured = v.measured.map_or("not measured".to_string(), |m| {
            format!("{m:.3} {}", v.unit.as_deref().unwrap_or(""))
        });
        println!(
            "{word:7} {} {} {} (measured {measured}) [{:?}]",
            v.metric, v.bound, v.limit, v.source
        );
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    println!(
        "{}: {} metric(s), {} threshold(s); report: {}",
        match report.overall {
            Overall::Pass => "PASS",
            Overall::Fail => "FAIL",
        },
        report.metrics.len(),
        report.verdicts.len(),
        out_dir.join("report.html").display()
    );
}

fn compare_cmd(args: &CompareArgs) -> ExitCode {
    let load = |p: &Path| Report::from_file(p);
    let (a, b) = match (load(&args.a), load(&args.b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return usage(&format!("{e:#}")),
    };
    if a.scenario.kind != b.scenario.kind {
        eprintln!(
            "popmesh-perf: warning: comparing a {} report with a {} report",
            a.scenario.kind, b.scenario.kind
        );
    }
    let c = compare::compare(&a.metrics, &b.metrics, args.tolerance);
    if args.json {
        match serde_json::to_string_pretty(&c).context("serialize comparison") {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("popmesh-perf: {e:#}");
                return ExitCode::from(EXIT_RUN_ERROR);
            }
        }
    } else {
        print!("{}", compare::table(&c));
    }
    if c.has_regression() {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn metrics_cmd(kind: Option<&str>) -> ExitCode {
    let kinds: Vec<ScenarioKind> = match kind {
        None => ScenarioKind::ALL.to_vec(),
        Some(k) => match ScenarioKind::ALL.iter().find(|x| x.name() == k) {
            Some(x) => vec![*x],
            None => {
                return usage(&format!(
                    "--kind {k:?}: must be one of data-plane, control-plane, stability"
                ))
            }
        },
    };
    for k in kinds {
        println!("{k}:");
        for d in metrics::catalog(k) {
            println!(
                "  {:36} {:18} {:?} is better; {}",
                d.name, d.unit, d.better, d.help
            );
        }
        for (family, defs) in metrics::families(k) {
            let n = if *family == "fault" {
                "N: the fault's index in load.stability.faults, from 0".to_string()
            } else {
                format!("N: a step of {family}_steps")
            };
            for d in defs.iter() {
                let name = format!("{family}[N].{}", d.name);
                println!(
                    "  {name:36} {:18} {:?} is better; {} ({n})",
                    d.unit, d.better, d.help
                );
            }
        }
    }
    ExitCode::SUCCESS
}
