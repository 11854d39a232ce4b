//! `popmesh`: the operator's command line.
//!
//! `main` only parses and dispatches: each subcommand group is a module with its own clap
//! `Args`/`Subcommand` types and a `run` function returning the process exit status, so further
//! groups (session, route, canary, identity, policy, appliance) slot in as one module, one enum
//! variant and one match arm each.
#![forbid(unsafe_code)]

mod hw;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Operate a popmesh edge appliance: see and check the machine's CPU/NIC layout, plan one.
///
/// Exit status: 0 success, 1 the command failed (unreadable file, impossible plan), 2 errors
/// found by `popmesh hw check` (or bad arguments).
#[derive(Debug, Parser)]
#[command(name = "popmesh", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Machine layout: CPUs, NUMA nodes, hugepages, NICs and IRQs; check a config; plan one.
    #[command(subcommand)]
    Hw(hw::HwCommand),
    /// Print a shell completion script, e.g. `popmesh completions bash > /etc/bash_completion.d/popmesh`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hw(cmd) => hw::run(cmd),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "popmesh",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("popmesh: {e:#}");
            ExitCode::from(hw::EXIT_FAILED)
        }
    }
}
