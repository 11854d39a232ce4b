//! `popmesh identity issue|bundle`: SPIFFE X.509 SVIDs from the daemon's CA.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use popmesh_ctrl_api::pb::{GetTrustBundleRequest, IdentityKind, IssueSvidRequest};
use popmesh_ctrl_api::validate;
use serde_json::json;

use crate::ctrl::{self, invalid, parse_duration_s, print_json, ConnArgs, Exit};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    /// spiffe://<td>/ns/<NS>/sa/<NAME>: a mesh service (reads the trust bundle only).
    Service,
    /// spiffe://<td>/ns/appliances/sa/<NAME>: an appliance agent.
    Appliance,
    /// spiffe://<td>/ns/operators/sa/<NAME>: may read and change configuration.
    Operator,
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Issue an SVID; writes DIR/<NAME>.pem (certificate and chain), DIR/<NAME>-key.pem (mode
    /// 0600) and DIR/ca.pem (trust bundle, always refreshed).
    ///
    /// Without --csr the daemon generates the key (it is not stored there). With --csr the key
    /// stays with you and only the certificate is written. The files then work as
    /// `--cert DIR/<NAME>.pem --key DIR/<NAME>-key.pem --ca DIR/ca.pem`.
    Issue {
        #[arg(long, value_enum)]
        kind: Kind,
        /// Service-account name, [a-z0-9.-_]{1,63}.
        #[arg(long)]
        name: String,
        /// Namespace (service identities only).
        #[arg(long = "ns", value_name = "NS")]
        namespace: Option<String>,
        /// Lifetime: 60s..90d, e.g. 24h, 7d.
        #[arg(long = "ttl", value_name = "DURATION", default_value = "24h", value_parser = parse_duration_s)]
        ttl_s: u32,
        /// Directory to write the files to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// PKCS#10 certificate request (PEM) whose key the SVID certifies.
        #[arg(long, value_name = "PEM")]
        csr: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print the trust bundle (root certificates, PEM), or write it with --out.
    Bundle {
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn write(path: &Path, body: &str, secret: bool, force: bool) -> anyhow::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Exit::refused(format!(
                "{} exists; pass --force to overwrite it",
                path.display()
            ))
        } else {
            anyhow::Error::new(e).context(format!("creating {}", path.display()))
        }
    })?;
    f.write_all(body.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn run(conn: &ConnArgs, json: bool, cmd: IdentityCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        IdentityCommand::Issue {
            kind,
            name,
            namespace,
            ttl_s: ttl,
            out,
            csr,
            force,
        } => {
            let kind = match kind {
                Kind::Service => IdentityKind::Service,
                Kind::Appliance => IdentityKind::Appliance,
                Kind::Operator => IdentityKind::Operator,
            };
            let namespace = namespace.unwrap_or_default();
            if !conn.no_local_checks {
                validate::svid_request("svid", kind as i32, &namespace, &name, ttl)
                    .map_err(|e| invalid(&e))?;
            }
            let csr_pem = match &csr {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("reading the CSR {}", p.display()))?,
                None => String::new(),
            };
            let c = conn.connect()?;
            let n = name.clone();
            let r = c.call(|ch| async move {
                ctrl::identities(ch)
                    .issue_svid(IssueSvidRequest {
                        kind: kind as i32,
                        namespace,
                        name: n,
                        ttl_seconds: ttl,
                        csr_pem,
                    })
                    .await
            })?;
            let bundle = c.call(|ch| async move {
                ctrl::identities(ch)
                    .get_trust_bundle(GetTrustBundleRequest {})
                    .await
            })?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let cert = out.join(format!("{name}.pem"));
            let key = out.join(format!("{name}-key.pem"));
            let ca = out.join("ca.pem");
            write(&cert, &(r.cert_pem + &r.chain_pem), false, force)?;
            if !r.key_pem.is_empty() {
                write(&key, &r.key_pem, true, force)?;
            }
            // The bundle is public and the same for every identity of the daemon: kept current.
            std::fs::write(&ca, &bundle.roots_pem)
                .with_context(|| format!("writing {}", ca.display()))?;
            let key_written = !r.key_pem.is_empty();
            if json {
                print_json(&json!({
                    "spiffe_id": r.spiffe_id,
                    "not_after_unix": r.not_after_unix,
                    "cert": cert,
                    "key": key_written.then_some(&key),
                    "ca": ca,
                }))?;
            } else {
                println!("identity:     {}", r.spiffe_id);
                println!("expires:      unix {} (in {ttl} s)", r.not_after_unix);
                println!("certificate:  {}", cert.display());
                if key_written {
                    println!("private key:  {}", key.display());
                } else {
                    println!("private key:  yours (from --csr)");
                }
                println!("trust bundle: {}", ca.display());
            }
        }
        IdentityCommand::Bundle { out } => {
            let c = conn.connect()?;
            let b = c.call(|ch| async move {
                ctrl::identities(ch)
                    .get_trust_bundle(GetTrustBundleRequest {})
                    .await
            })?;
            if let Some(path) = &out {
                std::fs::write(path, &b.roots_pem)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                print_json(&json!({
                    "trust_domain": b.trust_domain,
                    "intermediate": b.intermediate,
                    "roots_pem": b.roots_pem,
                }))?;
            } else if let Some(path) = out {
                println!(
                    "trust bundle of {} ({}) written to {}",
                    b.trust_domain,
                    if b.intermediate {
                        "imported intermediate CA"
                    } else {
                        "generated root CA"
                    },
                    path.display()
                );
            } else {
                print!("{}", b.roots_pem);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
