//! `popmesh`: the operator's command line.
//!
//! `main` only parses and dispatches: each subcommand group is a module with its own clap
//! `Args`/`Subcommand` types and a `run` function returning the process exit status. The
//! control-plane groups (session, route, service, canary, identity, policy, appliance) talk to
//! popmesh-ctrld through [`ctrl`] (mTLS channel, refusal-to-exit-status mapping, tables).
#![forbid(unsafe_code)]

mod appliance;
mod canary;
mod ctrl;
mod hw;
mod identity;
mod mesh;
mod policy;
mod session;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Operate popmesh: media sessions, signaling routes and services, canary splits, identities,
/// policies and appliances of the control daemon (popmesh-ctrld); the machine's CPU/NIC layout.
///
/// Control commands connect to popmesh-ctrld over mutual TLS with an identity the daemon's CA
/// issued (the first operator's comes from `popmesh-ctrld bootstrap`). Set POPMESH_CTRLD,
/// POPMESH_CERT, POPMESH_KEY and POPMESH_CA once, or put operator.pem, operator-key.pem and
/// ca.pem in ~/.config/popmesh/. Tables by default; --json for scripts. Changes are checked
/// with the same rules as the daemon's before they are sent.
///
/// Exit status: 0 success; 1 refused (invalid change, not found, already exists, in use,
/// permission denied; the message names the field) or the command failed; 2 bad usage, or
/// errors found by `popmesh hw check`; 3 cannot reach popmesh-ctrld or the TLS handshake failed
/// (check the address, certificate and key, trust bundle and server name).
#[derive(Debug, Parser)]
#[command(name = "popmesh", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    conn: ctrl::ConnArgs,
    /// Print JSON instead of tables and text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Media sessions: a publisher's ingress, its subscribers and labels.
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// Signaling routes (host, path prefix, headers) to services.
    #[command(subcommand)]
    Route(mesh::RouteCommand),
    /// Signaling services: endpoint groups per version, timeouts, retries, circuit breaking.
    #[command(subcommand)]
    Service(mesh::ServiceCommand),
    /// Canary splits between service versions (also places new media sessions), promote and
    /// roll back.
    #[command(subcommand)]
    Canary(canary::CanaryCommand),
    /// SPIFFE identities (X.509 SVIDs) for services, appliances and operators; trust bundle.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Authorization policies: source identities to destination service, allow or deny.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Appliances: sync status and the reasons they rejected config.
    #[command(subcommand)]
    Appliance(appliance::ApplianceCommand),
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
    let (conn, json) = (&cli.conn, cli.json);
    let result = match cli.command {
        Command::Session(cmd) => session::run(conn, json, cmd),
        Command::Route(cmd) => mesh::run_route(conn, json, cmd),
        Command::Service(cmd) => mesh::run_service(conn, json, cmd),
        Command::Canary(cmd) => canary::run(conn, json, cmd),
        Command::Identity(cmd) => identity::run(conn, json, cmd),
        Command::Policy(cmd) => policy::run(conn, json, cmd),
        Command::Appliance(cmd) => appliance::run(conn, json, cmd),
        Command::Hw(cmd) => hw::run(json, cmd),
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
            let code = e
                .downcast_ref::<ctrl::Exit>()
                .map_or(ctrl::EXIT_REFUSED, |x| x.code);
            eprintln!("popmesh: {e:#}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
