//! `popmesh hw show|check|plan`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use popmesh_config::Config;
use popmesh_hw::{Finding, PlanRequest, Severity, Topology};
use serde::Serialize;

/// `hw check` found errors (the appliance would refuse this config at start-up).
pub const EXIT_ERRORS: u8 = 2;
// A failed command (unreadable config or sysfs, impossible plan) exits 1, as every
// failure of `popmesh` that is not a usage or connection error (see `main`).

#[derive(Debug, Args)]
pub struct RootArg {
    /// Read sysfs/procfs below DIR instead of `/`: a tree captured with tools/hw-capture.sh
    /// (a fixture or someone's bug report).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum HwCommand {
    /// Show CPUs, NUMA nodes, SMT siblings, hugepages, NICs and their IRQs as a tree.
    ///
    /// Packages, NUMA nodes with their cores, SMT siblings and hugepages, the NICs under the
    /// node they hang off (driver, DPDK-usable or not, queues, IRQs and
    /// their affinity), and the isolation the kernel command line asks for.
    Show {
        #[command(flatten)]
        root: RootArg,
    },
    /// Check an appliance config against this machine (exit 2 on errors).
    ///
    /// Each finding says what is wrong, what it costs and how to fix it. These are the checks
    /// popmesh-dataplane runs at start-up.
    ///
    /// Exit status: 0 no errors (warnings and notes are printed but do not fail), 2 errors
    /// (popmesh-dataplane would refuse to start with this config), 1 the config or sysfs could
    /// not be read. Errors: a configured CPU missing or offline, a media worker on another
    /// NUMA node than a port's NIC, too few hugepages on the NIC's node (DPDK). Warnings: SMT
    /// siblings shared by media workers or with signaling/housekeeping, media CPUs not isolated,
    /// more workers than queues, NIC IRQs allowed on polling CPUs, DPDK port on a kernel-bound NIC.
    Check {
        /// Appliance configuration (TOML), as given to popmesh-dataplane --config.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        root: RootArg,
    },
    /// Propose a layout for the given ports: config fragment, kernel command line, IRQ script.
    ///
    /// Media cores NUMA-local to the NICs, one per
    /// physical core with SMT siblings left idle, signaling and housekeeping on cores of their
    /// own, CPU 0 for housekeeping. Prints the reasons, a config fragment, the kernel command
    /// line (isolcpus, nohz_full, rcu_nocbs, hugepages) and an IRQ affinity script.
    ///
    /// Exit status: 0 planned, 1 no plan (unknown port, ports on different NUMA nodes, too few
    /// cores; the message says which).
    Plan {
        /// A NIC to carry media: interface name (eth2) or PCI address (0000:3b:00.0). Repeat for
        /// several ports.
        #[arg(long = "port", value_name = "NAME_OR_PCI", required = true)]
        ports: Vec<String>,
        /// CPUs to reserve for the signaling lane (the control daemon); 0 for none.
        #[arg(long, value_name = "N")]
        signaling_cores: usize,
        /// Packet memory in MiB to size hugepages for (media.dpdk.memory_mb).
        #[arg(long, value_name = "MIB", default_value_t = 1024)]
        memory_mb: u32,
        #[command(flatten)]
        root: RootArg,
    },
}

fn read(root: &RootArg) -> anyhow::Result<Topology> {
    Topology::read(&root.root).with_context(|| {
        format!(
            "reading the machine's topology under {}",
            root.root.display()
        )
    })
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("writing JSON")?
    );
    Ok(())
}

#[derive(Serialize)]
struct CheckOutput<'a> {
    errors: usize,
    warnings: usize,
    findings: &'a [Finding],
}

/// `json` is the global `--json`: the full topology, the findings or the plan as JSON.
pub fn run(json: bool, cmd: HwCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HwCommand::Show { root } => {
            let topo = read(&root)?;
            if json {
                print_json(&topo)?;
            } else {
                print!("{}", popmesh_hw::render_tree(&topo));
            }
            Ok(ExitCode::SUCCESS)
        }
        HwCommand::Check { config, root } => {
            let cfg = Config::from_file(&config)
                .with_context(|| format!("loading {}", config.display()))?;
            let topo = read(&root)?;
            let findings = popmesh_hw::check(&topo, &cfg);
            let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
            let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
            if json {
                print_json(&CheckOutput {
                    errors,
                    warnings,
                    findings: &findings,
                })?;
            } else {
                for f in &findings {
                    println!("{f}");
                }
                println!(
                    "{}: {errors} error(s), {warnings} warning(s){}",
                    config.display(),
                    if errors > 0 {
                        "; popmesh-dataplane would refuse to start"
                    } else {
                        ""
                    }
                );
            }
            Ok(if errors > 0 {
                ExitCode::from(EXIT_ERRORS)
            } else {
                ExitCode::SUCCESS
            })
        }
        HwCommand::Plan {
            ports,
            signaling_cores,
            memory_mb,
            root,
        } => {
            let topo = read(&root)?;
            let plan = popmesh_hw::plan(
                &topo,
                &PlanRequest {
                    ports,
                    signaling_cpus: signaling_cores,
                    memory_mb,
                },
            )?;
            if json {
                print_json(&plan)?;
            } else {
                print!("{}", plan.render());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
