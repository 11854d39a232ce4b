//! Talking to `popmesh-ctrld`: the connection options every control subcommand shares, the
//! mTLS channel, the mapping of gRPC refusals to one clear line and an exit status, and the
//! small table printer.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use popmesh_ctrl_api::pb::{
    appliance_service_client::ApplianceServiceClient, canary_service_client::CanaryServiceClient,
    identity_service_client::IdentityServiceClient, mesh_service_client::MeshServiceClient,
    policy_service_client::PolicyServiceClient, session_service_client::SessionServiceClient,
    ListServicesRequest, Service,
};
use popmesh_ctrl_api::ValidationError;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

/// The change was refused (by the shared validation rules before sending, or by the daemon:
/// invalid, not found, already exists, still in use, permission denied).
pub const EXIT_REFUSED: u8 = 1;
// 2 is clap's status for bad usage (and `hw check`'s for errors found).
/// popmesh-ctrld could not be reached or the TLS handshake failed (address, certificate, key,
/// trust bundle, server name).
pub const EXIT_CONNECT: u8 = 3;

/// Largest message the daemon sends (big session lists, batches).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How to reach popmesh-ctrld and with which identity; shared by every control subcommand.
#[derive(Clone, Debug, Args)]
pub struct ConnArgs {
    /// Address of popmesh-ctrld's gRPC listener (`popmesh-ctrld serve --listen`).
    #[arg(
        long,
        global = true,
        env = "POPMESH_CTRLD",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7443",
        help_heading = "Control daemon"
    )]
    pub ctrld: String,
    /// DNS name (or IP) to verify in the daemon's certificate [default: the host of --ctrld].
    #[arg(
        long,
        global = true,
        env = "POPMESH_SERVER_NAME",
        value_name = "NAME",
        help_heading = "Control daemon"
    )]
    pub server_name: Option<String>,
    /// Client certificate (PEM, with its chain): an identity issued by the daemon's CA
    /// [default: ~/.config/popmesh/operator.pem].
    #[arg(
        long,
        global = true,
        env = "POPMESH_CERT",
        value_name = "PEM",
        help_heading = "Control daemon"
    )]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM) [default: ~/.config/popmesh/operator-key.pem].
    #[arg(
        long,
        global = true,
        env = "POPMESH_KEY",
        value_name = "PEM",
        help_heading = "Control daemon"
    )]
    pub key: Option<PathBuf>,
    /// Trust bundle to verify the daemon with (its ca.pem) [default: ~/.config/popmesh/ca.pem].
    #[arg(
        long,
        global = true,
        env = "POPMESH_CA",
        value_name = "PEM",
        help_heading = "Control daemon"
    )]
    pub ca: Option<PathBuf>,
    /// Send changes without checking them locally first (the daemon applies the same rules).
    #[arg(long, global = true, help_heading = "Control daemon")]
    pub no_local_checks: bool,
}

/// An error that ends the command with a given exit status.
#[derive(Debug)]
pub struct Exit {
    /// Exit status ([`EXIT_REFUSED`], [`EXIT_CONNECT`], ...).
    pub code: u8,
    message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

impl Exit {
    /// A refusal (exit 1).
    pub fn refused(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: EXIT_REFUSED,
            message: message.into(),
        }
        .into()
    }

    fn connect(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: EXIT_CONNECT,
            message: message.into(),
        }
        .into()
    }
}

/// A change refused by the shared validation rules before it was sent.
pub fn invalid(e: &ValidationError) -> anyhow::Error {
    Exit::refused(format!("invalid: {e} (checked before sending)"))
}

fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("popmesh");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".config/popmesh"),
        None => PathBuf::from(".config/popmesh"),
    }
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// What the user gave to reach the daemon, for error messages.
#[derive(Debug)]
struct Target {
    ctrld: String,
    server_name: String,
    cert: PathBuf,
    ca: PathBuf,
}

/// The likely cause of a transport failure, from rustls/hyper's wording.
fn likely_cause(detail: &str) -> &'static str {
    if detail.contains("tcp connect error") || detail.contains("timed out") {
        "nothing answers at that address; "
    } else if detail.contains("invalid peer certificate") {
        "the daemon's certificate was not accepted (trust bundle or server name); "
    } else if detail.contains("received fatal alert") || detail.contains("no certificates") {
        "the daemon refused this client's certificate; "
    } else if detail.contains("connection closed")
        || detail.contains("broken pipe")
        || detail.contains("connection reset")
    {
        // TLS 1.3: the server checks the client certificate after the client is done with the
        // handshake, so a refusal shows up as a closed connection on the first call, or, when
        // the client is already writing that call, as a broken pipe or a reset.
        "the daemon closed the connection, most likely refusing this client's certificate; "
    } else {
        ""
    }
}

impl Target {
    fn unreachable(&self, detail: &str) -> anyhow::Error {
        Exit::connect(format!(
            "cannot talk to popmesh-ctrld at {} (server name {:?}): {}{detail}\n  \
             check: the address (--ctrld, POPMESH_CTRLD) and that `popmesh-ctrld serve` runs \
             there; the trust bundle {} is the daemon's ca.pem (--ca); the server name is one \
             of the daemon's --server-name values or its listen IP (--server-name); {} and its \
             key are an identity issued by this daemon's CA and not expired (--cert, --key)",
            self.ctrld,
            self.server_name,
            likely_cause(detail),
            self.ca.display(),
            self.cert.display(),
        ))
    }
}

/// A connection to the daemon with the identity of [`ConnArgs`], and the runtime it lives on.
#[derive(Debug)]
pub struct Ctrl {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    target: Target,
    local_checks: bool,
}

impl ConnArgs {
    fn paths(&self) -> (PathBuf, PathBuf, PathBuf) {
        let dir = config_dir();
        (
            self.cert
                .clone()
                .unwrap_or_else(|| dir.join("operator.pem")),
            self.key
                .clone()
                .unwrap_or_else(|| dir.join("operator-key.pem")),
            self.ca.clone().unwrap_or_else(|| dir.join("ca.pem")),
        )
    }

    fn host(&self) -> &str {
        let a = self.ctrld.as_str();
        if let Some(rest) = a.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    }

    /// Connects (TCP and mutual TLS) to the daemon.
    ///
    /// # Errors
    /// [`EXIT_CONNECT`] when a file cannot be read, or the daemon cannot be reached or
    /// refuses the handshake; the message says what to check.
    pub fn connect(&self) -> anyhow::Result<Ctrl> {
        let (cert, key, ca) = self.paths();
        let read = |p: &Path, what: &str, flag: &str| {
            std::fs::read_to_string(p).map_err(|e| {
                Exit::connect(format!(
                    "cannot read the {what} {}: {e} (set {flag})",
                    p.display()
                ))
            })
        };
        let cert_pem = read(&cert, "client certificate", "--cert or POPMESH_CERT")?;
        let key_pem = read(&key, "client key", "--key or POPMESH_KEY")?;
        let ca_pem = read(&ca, "trust bundle", "--ca or POPMESH_CA")?;
        let server_name = self
            .server_name
            .clone()
            .unwrap_or_else(|| self.host().to_string());
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(cert_pem, key_pem))
            .domain_name(server_name.clone());
        let target = Target {
            ctrld: self.ctrld.clone(),
            server_name,
            cert,
            ca,
        };
        let endpoint = Channel::from_shared(format!("https://{}", self.ctrld))
            .map_err(|e| Exit::connect(format!("--ctrld {:?} is not HOST:PORT: {e}", self.ctrld)))?
            .tls_config(tls)
            .map_err(|e| target.unreachable(&source_chain(&e)))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        // The channel's worker task lives on this runtime, so it is kept for every call.
        let rt = runtime()?;
        let channel = rt
            .block_on(endpoint.connect())
            .map_err(|e| target.unreachable(&source_chain(&e)))?;
        Ok(Ctrl {
            rt,
            channel,
            target,
            local_checks: !self.no_local_checks,
        })
    }
}

/// A single-threaded runtime for one command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

impl Ctrl {
    /// Turns a refusal of the daemon into one line and an exit status; the daemon's message
    /// (which names the field) is kept verbatim.
    pub fn status(&self, s: &tonic::Status) -> anyhow::Error {
        let msg = s.message();
        match s.code() {
            Code::InvalidArgument => Exit::refused(format!("invalid: {msg}")),
            Code::NotFound => Exit::refused(format!("not found: {msg}")),
            Code::AlreadyExists => Exit::refused(format!("already exists: {msg}")),
            Code::FailedPrecondition => Exit::refused(format!("refused: {msg}")),
            Code::PermissionDenied => Exit::refused(format!(
                "permission denied: {msg}\n  the identity in {} may not do this; config changes \
                 need an operator identity (popmesh identity issue --kind operator)",
                self.target.cert.display()
            )),
            Code::Unauthenticated => self
                .target
                .unreachable(&format!("not authenticated: {msg}")),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                let detail = std::error::Error::source(s)
                    .map(source_chain)
                    .unwrap_or_default();
                // tonic repeats its message in the source chain.
                let text = if detail.is_empty() {
                    msg.to_string()
                } else if detail.starts_with(msg) {
                    detail
                } else {
                    format!("{msg}: {detail}")
                };
                self.target.unreachable(&text)
            }
            code => Exit::refused(format!("popmesh-ctrld answered {code:?}: {msg}")),
        }
    }

    /// Runs one call on a fresh single-threaded runtime, mapping a refusal with [`Self::status`].
    pub fn call<T, F>(&self, f: impl FnOnce(Channel) -> F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt
            .block_on(f(self.channel.clone()))
            .map(tonic::Response::into_inner)
            .map_err(|s| self.status(&s))
    }

    /// Whether the user asked to skip local checks.
    pub fn local_checks(&self) -> bool {
        self.local_checks
    }

    /// The services the daemon knows, for local checks of resources that refer to them.
    pub fn catalog(&self) -> anyhow::Result<std::collections::BTreeMap<String, Service>> {
        let r = self.call(|ch| async move {
            MeshServiceClient::new(ch)
                .list_services(ListServicesRequest {})
                .await
        })?;
        Ok(r.services
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect())
    }
}

/// Client constructors with the daemon's message size limits.
pub fn sessions(ch: Channel) -> SessionServiceClient<Channel> {
    SessionServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
/// See [`sessions`].
pub fn mesh(ch: Channel) -> MeshServiceClient<Channel> {
    MeshServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES)
}
/// See [`sessions`].
pub fn canaries(ch: Channel) -> CanaryServiceClient<Channel> {
    CanaryServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES)
}
/// See [`sessions`].
pub fn identities(ch: Channel) -> IdentityServiceClient<Channel> {
    IdentityServiceClient::new(ch)
}
/// See [`sessions`].
pub fn policies(ch: Channel) -> PolicyServiceClient<Channel> {
    PolicyServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES)
}
/// See [`sessions`].
pub fn appliances(ch: Channel) -> ApplianceServiceClient<Channel> {
    ApplianceServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("writing JSON")?
    );
    Ok(())
}

/// Aligned columns; an empty table prints its header and `(none)`.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns separated by two spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, (c, w)) in cells.zip(&widths).enumerate() {
                if i + 1 == widths.len() {
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&mut self.header.iter().copied());
        for r in &self.rows {
            out += &line(&mut r.iter().map(String::as_str));
        }
        if self.rows.is_empty() {
            out += "(none)\n";
        }
        out
    }

    /// Prints [`Self::render`].
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `-` for an empty cell.
pub fn cell(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// Parses a duration with a unit: `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
///
/// # Errors
/// When the number or unit is not understood.
pub fn parse_duration_s(s: &str) -> Result<u32, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 24h or 7d"))?;
    u32::try_from(n * mult).map_err(|_| format!("{s:?} is too long"))
}

/// Parses a duration with a unit into whole milliseconds: `500ms`, `5s`, `1m`, `1.5s` (the
/// appliance config's syntax; a bare number is refused, it could mean ms or s).
///
/// # Errors
/// When the text is not a duration, is finer than 1 ms, or is longer than `u32::MAX` ms.
pub fn parse_duration_ms(s: &str) -> Result<u32, String> {
    let d = popmesh_config::parse_duration(s).map_err(|rule| format!("{s:?} {rule}"))?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{s:?} is finer than 1ms"));
    }
    u32::try_from(d.as_millis()).map_err(|_| format!("{s:?} is too long"))
}

/// Milliseconds as `5s` when whole seconds, else `1500ms`.
// `%` instead of `is_multiple_of`, which needs Rust 1.87; the workspace declares 1.85.
#[allow(clippy::manual_is_multiple_of)]
pub fn format_ms(ms: u32) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Formats Unix milliseconds as seconds ago (`-` for 0).
pub fn ago_ms(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    format!("{}s ago", now.saturating_sub(unix_ms) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["NAME", "X"]);
        t.row(vec!["a-long-name".into(), "1".into()]);
        t.row(vec!["b".into(), "22".into()]);
        assert_eq!(
            t.render(),
            "NAME         X\na-long-name  1\nb            22\n"
        );
        assert_eq!(Table::new(&["A", "B"]).render(), "A  B\n(none)\n");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration_s("24h"), Ok(86_400));
        assert_eq!(parse_duration_s("90s"), Ok(90));
        assert_eq!(parse_duration_s("120"), Ok(120));
        assert_eq!(parse_duration_s("7d"), Ok(604_800));
        assert!(parse_duration_s("1w").is_err());
        assert!(parse_duration_s("h").is_err());
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("500").is_err_and(|e| e.contains("has no unit")));
        assert!(parse_duration_ms("1500us").is_err_and(|e| e.contains("finer than 1ms")));
        assert!(parse_duration_ms("50d").is_err_and(|e| e.contains("too long")));
        assert_eq!(format_ms(5000), "5s");
        assert_eq!(format_ms(1500), "1500ms");
    }
}
