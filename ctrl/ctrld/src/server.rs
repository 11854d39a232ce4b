//! `bootstrap` and `serve`: what the binary's subcommands do, as library functions so tests can
//! run them in-process too.

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use popmesh_ctrl_api::pb::{
    appliance_service_server::ApplianceServiceServer, canary_service_server::CanaryServiceServer,
    identity_service_server::IdentityServiceServer, mesh_service_server::MeshServiceServer,
    policy_service_server::PolicyServiceServer, session_service_server::SessionServiceServer,
    FILE_DESCRIPTOR_SET,
};
use popmesh_ctrl_api::SpiffeId;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::api::Api;
use crate::ca::{Ca, CTRLD_NAME, CTRLD_NAMESPACE};
use crate::core::Core;
use crate::store::{Store, StoreError};

/// File name of the store inside the state directory.
pub const STORE_FILE: &str = "ctrld.redb";
/// Largest gRPC message accepted or sent (a batch of 50k sessions with a few subscribers each
/// is ~10 MiB; snapshots of 1M sessions ~100 MiB).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Lifetime of the daemon's own server certificate (re-issued at every start).
const SERVER_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What `bootstrap` does.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// State directory (created if missing).
    pub state_dir: PathBuf,
    /// Trust domain.
    pub trust_domain: String,
    /// Name of the first operator identity.
    pub operator: String,
    /// Where the operator's files go (default `<state-dir>/operator`).
    pub out_dir: Option<PathBuf>,
    /// Lifetime of the operator certificate.
    pub operator_ttl: Duration,
    /// Imported intermediate: certificate, key and (optional) roots PEM files.
    pub import: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
}

/// Files `bootstrap` wrote.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    /// The operator's SPIFFE ID.
    pub operator: SpiffeId,
    /// Certificate (with chain) PEM.
    pub cert: PathBuf,
    /// Private key PEM (mode 0600).
    pub key: PathBuf,
    /// Trust bundle PEM.
    pub ca: PathBuf,
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(())
}

fn open_store(state_dir: &Path) -> anyhow::Result<Store> {
    let path = state_dir.join(STORE_FILE);
    let existed = path.exists();
    Store::open(&path).with_context(|| {
        if existed {
            format!(
                "cannot open the store {} (is another popmesh-ctrld using this state directory?)",
                path.display()
            )
        } else {
            format!("cannot create the store {}", path.display())
        }
    })
}

/// Creates the CA (generated root or imported intermediate) in a new state directory and
/// issues the first operator identity.
///
/// # Errors
/// When the directory already has a CA, a file cannot be read or written, or an input is
/// invalid.
pub fn bootstrap(o: &BootstrapOptions, now: SystemTime) -> anyhow::Result<Bootstrapped> {
    let operator = SpiffeId::operator(&o.trust_domain, &o.operator)
        .context("--trust-domain / --operator do not make a valid SPIFFE ID")?;
    fs::create_dir_all(&o.state_dir)
        .with_context(|| format!("cannot create {}", o.state_dir.display()))?;
    fs::set_permissions(&o.state_dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", o.state_dir.display()))?;
    let store = open_store(&o.state_dir)?;
    match store.ca() {
        Ok(ca) => bail!(
            "{} is already bootstrapped (trust domain {:?}); refusing to replace its CA",
            o.state_dir.display(),
            ca.trust_domain
        ),
        Err(StoreError::NoCa) => {}
        Err(e) => return Err(e.into()),
    }
    let record = match &o.import {
        None => Ca::generate_root(&o.trust_domain, now)?,
        Some((cert, key, roots)) => {
            let read = |p: &PathBuf| {
                fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let roots = roots.as_ref().map(read).transpose()?;
            Ca::import(&o.trust_domain, &read(cert)?, &read(key)?, roots.as_deref())?
        }
    };
    let ca = Ca::load(record.clone())?;
    let issued = ca.issue(&operator, o.operator_ttl, None, now)?;
    store.put_ca(&record).context("cannot store the CA")?;
    let out = o
        .out_dir
        .clone()
        .unwrap_or_else(|| o.state_dir.join("operator"));
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let files = Bootstrapped {
        operator,
        cert: out.join(format!("{}.pem", o.operator)),
        key: out.join(format!("{}-key.pem", o.operator)),
        ca: out.join("ca.pem"),
    };
    write_file(
        &files.cert,
        &format!("{}{}", issued.cert_pem, issued.chain_pem),
        0o644,
    )?;
    write_file(
        &files.key,
        issued.key_pem.as_deref().unwrap_or_default(),
        0o600,
    )?;
    write_file(&files.ca, &record.roots_pem, 0o644)?;
    write_file(&o.state_dir.join("ca.pem"), &record.roots_pem, 0o644)?;
    Ok(files)
}

/// What `serve` does.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// State directory made by `bootstrap`.
    pub state_dir: PathBuf,
    /// gRPC (mTLS) listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address (plain HTTP); `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// DNS names for the server certificate (clients verify the name they dial).
    pub server_names: Vec<String>,
}

/// A running daemon's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// gRPC.
    pub grpc: SocketAddr,
    /// Metrics HTTP, if enabled.
    pub metrics: Option<SocketAddr>,
}

/// Opens the store, binds the listeners and serves until `shutdown` completes. `on_bound` is
/// called once both listeners are bound (the binary logs the addresses).
///
/// # Errors
/// When the state directory is not bootstrapped, a listener cannot be bound, or the server
/// fails.
pub async fn serve(
    o: ServeOptions,
    on_bound: impl FnOnce(Bound),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let path = o.state_dir.join(STORE_FILE);
    if !path.exists() {
        bail!(
            "no store at {}: run `popmesh-ctrld bootstrap --state-dir {} --trust-domain <TD>` first",
            path.display(),
            o.state_dir.display()
        );
    }
    let store = open_store(&o.state_dir)?;
    let core = Arc::new(Core::load(store, now).with_context(|| {
        format!(
            "cannot load {} (run `popmesh-ctrld bootstrap --state-dir {}` first?)",
            o.state_dir.join(STORE_FILE).display(),
            o.state_dir.display()
        )
    })?);
    {
        let st = core.state();
        tracing::info!(
            version = st.version,
            sessions = st.sessions.len(),
            services = st.services.len(),
            appliances = st.appliances.len(),
            trust_domain = core.ca().trust_domain(),
            "state loaded"
        );
    }

    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("cannot bind the gRPC listener to {}", o.listen))?;
    let grpc = listener.local_addr()?;
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    if !grpc.ip().is_unspecified() && !ips.contains(&grpc.ip()) {
        ips.push(grpc.ip());
    }
    let id = SpiffeId::new(core.ca().trust_domain(), CTRLD_NAMESPACE, CTRLD_NAME)?;
    let server_cert =
        core.ca()
            .issue_with_names(&id, SERVER_CERT_TTL, None, &o.server_names, &ips, now)?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            format!("{}{}", server_cert.cert_pem, server_cert.chain_pem),
            server_cert.key_pem.unwrap_or_default(),
        ))
        .client_ca_root(Certificate::from_pem(&core.trust_bundle().roots_pem))
        .client_auth_optional(false)
        .timeout(Duration::from_secs(10));

    let metrics = match o.metrics_listen {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the metrics listener to {addr}"))?;
            let bound = l.local_addr()?;
            let core = Arc::clone(&core);
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let core = Arc::clone(&core);
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            core.metrics.encode(),
                        )
                    }
                }),
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!(error = %e, "metrics server failed");
                }
            });
            Some(bound)
        }
    };

    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<SessionServiceServer<Api>>().await;
    health.set_serving::<MeshServiceServer<Api>>().await;
    health.set_serving::<CanaryServiceServer<Api>>().await;
    health.set_serving::<IdentityServiceServer<Api>>().await;
    health.set_serving::<PolicyServiceServer<Api>>().await;
    health.set_serving::<ApplianceServiceServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;

    let api = Api::new(Arc::clone(&core));
    macro_rules! svc {
        ($s:ident) => {
            $s::new(api.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        };
    }
    on_bound(Bound { grpc, metrics });
    let stop_core = Arc::clone(&core);
    Server::builder()
        .tls_config(tls)
        .context("invalid TLS configuration")?
        .add_service(health_svc)
        .add_service(reflection)
        .add_service(svc!(SessionServiceServer))
        .add_service(svc!(MeshServiceServer))
        .add_service(svc!(CanaryServiceServer))
        .add_service(svc!(IdentityServiceServer))
        .add_service(svc!(PolicyServiceServer))
        .add_service(svc!(ApplianceServiceServer))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                // Watch streams never end on their own; the server drains only once they do.
                stop_core.stop();
            },
        )
        .await
        .context("gRPC server failed")?;
    Ok(())
}
