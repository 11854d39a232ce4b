//! `popmesh-ctrld`: the popmesh control daemon (see the library docs and `ctrl/README.md`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use popmesh_ctrld::{bootstrap, serve, BootstrapOptions, ServeOptions};

/// popmesh control daemon: programs media flow tables, canary splits, mTLS identities and
/// authorization policies on popmesh appliances, with durable state (redb) and a mutual-TLS
/// gRPC API (package popmesh.ctrl.v1).
///
/// First run `bootstrap` once to create the state directory, its certificate authority and a
/// first operator identity; then `serve`.
#[derive(Debug, Parser)]
#[command(name = "popmesh-ctrld", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the state directory, its CA and a first operator identity (cert and key PEM).
    ///
    /// Without --ca-cert a new self-signed root CA is generated (10 years). With --ca-cert and
    /// --ca-key an existing intermediate CA is imported; --ca-roots then names the root(s)
    /// peers should trust (default: the intermediate itself). Refuses to run on a directory
    /// that already has a CA.
    Bootstrap {
        /// State directory (created with mode 0700; holds ctrld.redb and ca.pem).
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// SPIFFE trust domain, e.g. pop.example.net ([a-z0-9.-_]).
        #[arg(long, value_name = "TD")]
        trust_domain: String,
        /// Name of the first operator: spiffe://<TD>/ns/operators/sa/<NAME>.
        #[arg(long, value_name = "NAME", default_value = "admin")]
        operator: String,
        /// Where to write <NAME>.pem, <NAME>-key.pem and ca.pem [default: <DIR>/operator].
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Lifetime of the operator certificate, in hours.
        #[arg(long, value_name = "HOURS", default_value_t = 24 * 30)]
        operator_ttl_hours: u64,
        /// Import this intermediate CA certificate (PEM) instead of generating a root.
        #[arg(long, value_name = "PEM", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// Private key (PEM, PKCS#8) of --ca-cert.
        #[arg(long, value_name = "PEM", requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Root certificate(s) above --ca-cert that peers trust (PEM).
        #[arg(long, value_name = "PEM", requires = "ca_cert")]
        ca_roots: Option<PathBuf>,
    },
    /// Serve the gRPC API (mTLS, client certificates required) until SIGINT or SIGTERM.
    Serve {
        /// State directory made by `bootstrap`.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// gRPC listen address (port 0: any free port; the bound address is logged).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// Prometheus metrics listen address (plain HTTP, GET /metrics).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9200")]
        metrics_listen: SocketAddr,
        /// Disable the metrics listener.
        #[arg(long)]
        no_metrics: bool,
        /// DNS name put in the server certificate (repeatable); clients must dial one of these
        /// or an IP of --listen.
        #[arg(long = "server-name", value_name = "NAME", default_value = "localhost")]
        server_names: Vec<String>,
        /// Tokio worker threads.
        #[arg(long, value_name = "N", default_value_t = 2)]
        threads: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popmesh-ctrld: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bootstrap {
            state_dir,
            trust_domain,
            operator,
            out_dir,
            operator_ttl_hours,
            ca_cert,
            ca_key,
            ca_roots,
        } => {
            let import = match (ca_cert, ca_key) {
                (Some(c), Some(k)) => Some((c, k, ca_roots)),
                _ => None,
            };
            let files = bootstrap(
                &BootstrapOptions {
                    state_dir,
                    trust_domain,
                    operator,
                    out_dir,
                    operator_ttl: Duration::from_secs(operator_ttl_hours.saturating_mul(3600)),
                    import,
                },
                SystemTime::now(),
            )?;
            println!("operator identity: {}", files.operator);
            println!("certificate:       {}", files.cert.display());
            println!("private key:       {}", files.key.display());
            println!("trust bundle:      {}", files.ca.display());
            Ok(())
        }
        Command::Serve {
            state_dir,
            listen,
            metrics_listen,
            no_metrics,
            server_names,
            threads,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .thread_name("ctrld")
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?;
            rt.block_on(serve(
                ServeOptions {
                    state_dir,
                    listen,
                    metrics_listen: (!no_metrics).then_some(metrics_listen),
                    server_names,
                },
                |b| {
                    let metrics = b.metrics.map_or("off".to_string(), |m| m.to_string());
                    tracing::info!(grpc = %b.grpc, %metrics, "listening");
                    // Machine-readable line for scripts and tests.
                    println!("listening grpc={} metrics={metrics}", b.grpc);
                },
                shutdown_signal(),
            ))
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, still stop on Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
