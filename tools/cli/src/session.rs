//! `popmesh session create|update|remove|get|list|stats|batch`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use popmesh_ctrl_api::pb::{
    BatchSessionsRequest, CreateSessionRequest, Endpoint, GetSessionRequest,
    GetSessionStatsRequest, Labels, ListSessionsRequest, RemoveSessionRequest, Session, Subscriber,
    UpdateSessionRequest,
};
use popmesh_ctrl_api::validate::{self, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ctrl::{self, cell, invalid, print_json, ConnArgs, Table};

/// What a session is made of, as flags (create and update take the same).
#[derive(Debug, Args)]
pub struct SessionFlags {
    /// Session name, 1..=64 characters of [A-Za-z0-9._:-].
    #[arg(long)]
    name: String,
    /// Appliance (its registered name) that carries the session.
    #[arg(long, value_name = "NAME")]
    appliance: String,
    /// Where the publisher sends (one of the appliance's media addresses).
    #[arg(long, value_name = "ADDR:PORT")]
    ingress: String,
    /// The only accepted sender (default: the appliance latches the first one).
    #[arg(long, value_name = "ADDR:PORT")]
    source: Option<String>,
    /// A destination; `@PORT_NAME` sends it from that appliance media port. Repeat, 1..=4096.
    #[arg(
        long = "subscriber",
        value_name = "ADDR:PORT[@EGRESS]",
        required = true
    )]
    subscribers: Vec<String>,
    /// RTP clock rate in Hz for jitter (default: the appliance's).
    #[arg(long, value_name = "HZ", default_value_t = 0)]
    clock_rate: u32,
    /// Room label.
    #[arg(long)]
    room: Option<String>,
    /// User label (the sticky key of canary placement).
    #[arg(long)]
    user: Option<String>,
    /// Service label: without --version the daemon places the session with its canary split.
    #[arg(long)]
    service: Option<String>,
    /// Version of --service (pins the session; skips canary placement).
    #[arg(long)]
    version: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create a media session (refused if the name exists).
    #[command(disable_version_flag = true)]
    Create(SessionFlags),
    /// Replace a session entirely (same name); give every flag again.
    #[command(disable_version_flag = true)]
    Update(SessionFlags),
    /// Remove a session.
    Remove {
        /// Session name.
        name: String,
    },
    /// Show one session with its subscribers.
    Get {
        /// Session name.
        name: String,
    },
    /// List sessions (all pages), optionally only of one appliance, room or service.
    List {
        #[arg(long, value_name = "NAME")]
        appliance: Option<String>,
        #[arg(long)]
        room: Option<String>,
        #[arg(long)]
        service: Option<String>,
    },
    /// Live stats of a session as last reported by its appliance (packets, loss, jitter).
    Stats {
        /// Session name.
        name: String,
    },
    /// Create/replace and remove many sessions in one all-or-nothing change.
    ///
    /// The file is JSON: `{"upserts": [SESSION, ...], "removes": ["name", ...]}`, just
    /// `[SESSION, ...]`, or the output of `popmesh session list --json` (all upserts). SESSION
    /// is what `session list --json` prints (`config_version` is ignored):
    /// `{"name": "cam-1", "appliance": "pop-1", "ingress": "192.0.2.1:40000",
    /// "source": "203.0.113.9:5004", "subscribers": ["198.51.100.7:41000@edge"],
    /// "labels": {"room": "r1", "user": "u1", "service": "mixer", "version": ""}}`.
    Batch {
        /// JSON file, `-` for standard input.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

/// A session as JSON, in and out (`session list --json`, `session batch --file`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDoc {
    name: String,
    appliance: String,
    ingress: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default)]
    clock_rate: u32,
    subscribers: Vec<String>,
    #[serde(default)]
    labels: LabelsDoc,
    /// Config version of the last change (output only; ignored on input).
    #[serde(default)]
    config_version: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsDoc {
    #[serde(default)]
    room: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchDoc {
    #[serde(default)]
    upserts: Vec<SessionDoc>,
    #[serde(default)]
    removes: Vec<String>,
}

/// What `session list --json` prints; taken as a batch of upserts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListDoc {
    sessions: Vec<SessionDoc>,
    /// The config version the list was taken at (not needed to apply it).
    #[serde(default, rename = "version")]
    _version: u64,
}

/// Parses a batch file: `{"upserts": [..], "removes": [..]}`, a bare `[SESSION, ..]`, or the
/// output of `session list --json`. A misspelt key is an error, never an empty batch.
fn parse_batch(text: &str) -> Result<BatchDoc, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    if v.is_array() {
        return Ok(BatchDoc {
            upserts: serde_json::from_value(v)?,
            removes: Vec::new(),
        });
    }
    if v.get("sessions").is_some() {
        let l: ListDoc = serde_json::from_value(v)?;
        return Ok(BatchDoc {
            upserts: l.sessions,
            removes: Vec::new(),
        });
    }
    serde_json::from_value(v)
}

/// Parses `ADDR:PORT` (`[V6]:PORT` for IPv6) into an [`Endpoint`]; the address is kept as
/// written so the shared rules judge it (and name the field).
///
/// # Errors
/// When there is no port or the port is not a number.
pub fn endpoint(field: &str, s: &str) -> Result<Endpoint, ValidationError> {
    let split = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once("]:")
    } else {
        s.rsplit_once(':')
    };
    let Some((address, port)) = split else {
        return Err(ValidationError::new(
            field,
            format!("{s:?} is not ADDR:PORT ([ADDR]:PORT for IPv6)"),
        ));
    };
    let port = port.parse::<u32>().map_err(|_| {
        ValidationError::new(
            format!("{field}.port"),
            format!("{port:?} is not a UDP port (1..=65535)"),
        )
    })?;
    Ok(Endpoint {
        address: address.to_string(),
        port,
    })
}

fn show_endpoint(e: Option<&Endpoint>) -> String {
    match e {
        None => String::new(),
        Some(e) if e.address.contains(':') => format!("[{}]:{}", e.address, e.port),
        Some(e) => format!("{}:{}", e.address, e.port),
    }
}

fn subscriber(field: &str, s: &str) -> Result<Subscriber, ValidationError> {
    let (addr, egress) = match s.rsplit_once('@') {
        Some((a, e)) => (a, e.to_string()),
        None => (s, String::new()),
    };
    Ok(Subscriber {
        endpoint: Some(endpoint(&format!("{field}.endpoint"), addr)?),
        egress_port: egress,
    })
}

impl SessionDoc {
    fn into_pb(self, field: &str) -> Result<Session, ValidationError> {
        let subscribers = self
            .subscribers
            .iter()
            .enumerate()
            .map(|(i, s)| subscriber(&format!("{field}.subscribers[{i}]"), s))
            .collect::<Result<_, _>>()?;
        Ok(Session {
            ingress: Some(endpoint(&format!("{field}.ingress"), &self.ingress)?),
            source: self
                .source
                .as_deref()
                .map(|s| endpoint(&format!("{field}.source"), s))
                .transpose()?,
            name: self.name,
            appliance: self.appliance,
            clock_rate: self.clock_rate,
            subscribers,
            labels: Some(Labels {
                room: self.labels.room,
                user: self.labels.user,
                service: self.labels.service,
                version: self.labels.version,
            }),
            version: 0,
        })
    }

    fn from_pb(s: &Session) -> Self {
        let l = s.labels.clone().unwrap_or_default();
        SessionDoc {
            name: s.name.clone(),
            appliance: s.appliance.clone(),
            ingress: show_endpoint(s.ingress.as_ref()),
            source: s.source.as_ref().map(|e| show_endpoint(Some(e))),
            clock_rate: s.clock_rate,
            subscribers: s
                .subscribers
                .iter()
                .map(|sub| {
                    let ep = show_endpoint(sub.endpoint.as_ref());
                    if sub.egress_port.is_empty() {
                        ep
                    } else {
                        format!("{ep}@{}", sub.egress_port)
                    }
                })
                .collect(),
            labels: LabelsDoc {
                room: l.room,
                user: l.user,
                service: l.service,
                version: l.version,
            },
            config_version: s.version,
        }
    }
}

impl SessionFlags {
    fn into_doc(self) -> SessionDoc {
        SessionDoc {
            name: self.name,
            appliance: self.appliance,
            ingress: self.ingress,
            source: self.source,
            clock_rate: self.clock_rate,
            subscribers: self.subscribers,
            labels: LabelsDoc {
                room: self.room.unwrap_or_default(),
                user: self.user.unwrap_or_default(),
                service: self.service.unwrap_or_default(),
                version: self.version.unwrap_or_default(),
            },
            config_version: 0,
        }
    }
}

/// Builds the session and runs the shared rules (unless `--no-local-checks`) before any
/// connection is made, so a typo is refused at once.
fn checked(conn: &ConnArgs, doc: SessionDoc, field: &str) -> anyhow::Result<Session> {
    let s = doc.into_pb(field).map_err(|e| invalid(&e))?;
    if !conn.no_local_checks {
        validate::session_spec(field, &s).map_err(|e| invalid(&e))?;
    }
    Ok(s)
}

fn placement(s: &Session) -> String {
    let l = s.labels.clone().unwrap_or_default();
    if l.service.is_empty() {
        String::new()
    } else {
        format!(", service {} version {}", l.service, cell(&l.version))
    }
}

pub fn run(conn: &ConnArgs, json: bool, cmd: SessionCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionCommand::Create(flags) => {
            let s = checked(conn, flags.into_doc(), "session")?;
            let c = conn.connect()?;
            let r = c.call(|ch| async move {
                ctrl::sessions(ch)
                    .create_session(CreateSessionRequest { session: Some(s) })
                    .await
            })?;
            let stored = r.session.unwrap_or_default();
            if json {
                print_json(&json!({
                    "version": r.version,
                    "session": SessionDoc::from_pb(&stored),
                }))?;
            } else {
                println!(
                    "created session {}{} (config version {})",
                    stored.name,
                    placement(&stored),
                    r.version
                );
            }
        }
        SessionCommand::Update(flags) => {
            let s = checked(conn, flags.into_doc(), "session")?;
            let name = s.name.clone();
            let c = conn.connect()?;
            let r = c.call(|ch| async move {
                ctrl::sessions(ch)
                    .update_session(UpdateSessionRequest { session: Some(s) })
                    .await
            })?;
            written(json, &format!("updated session {name}"), r.version)?;
        }
        SessionCommand::Remove { name } => {
            let c = conn.connect()?;
            let n = name.clone();
            let r = c.call(|ch| async move {
                ctrl::sessions(ch)
                    .remove_session(RemoveSessionRequest { name: n })
                    .await
            })?;
            written(json, &format!("removed session {name}"), r.version)?;
        }
        SessionCommand::Get { name } => {
            let c = conn.connect()?;
            let s = c.call(|ch| async move {
                ctrl::sessions(ch)
                    .get_session(GetSessionRequest { name })
                    .await
            })?;
            let doc = SessionDoc::from_pb(&s);
            if json {
                print_json(&serde_json::to_value(&doc)?)?;
            } else {
                println!("session:     {}", doc.name);
                println!("appliance:   {}", doc.appliance);
                println!("ingress:     {}", doc.ingress);
                println!(
                    "source:      {}",
                    doc.source.as_deref().unwrap_or("any (latched)")
                );
                println!(
                    "clock rate:  {}",
                    if doc.clock_rate == 0 {
                        "appliance default".to_string()
                    } else {
                        format!("{} Hz", doc.clock_rate)
                    }
                );
                println!(
                    "labels:      room={} user={} service={} version={}",
                    cell(&doc.labels.room),
                    cell(&doc.labels.user),
                    cell(&doc.labels.service),
                    cell(&doc.labels.version)
                );
                println!("changed at:  config version {}", doc.config_version);
                println!("subscribers: {}", doc.subscribers.len());
                for sub in &doc.subscribers {
                    println!("  {sub}");
                }
            }
        }
        SessionCommand::List {
            appliance,
            room,
            service,
        } => {
            let c = conn.connect()?;
            let mut sessions = Vec::new();
            let mut token = String::new();
            let version = loop {
                let req = ListSessionsRequest {
                    appliance: appliance.clone().unwrap_or_default(),
                    room: room.clone().unwrap_or_default(),
                    service: service.clone().unwrap_or_default(),
                    page_size: 10_000,
                    page_token: std::mem::take(&mut token),
                };
                let r = c.call(|ch| async move { ctrl::sessions(ch).list_sessions(req).await })?;
                sessions.extend(r.sessions);
                if r.next_page_token.is_empty() {
                    break r.version;
                }
                token = r.next_page_token;
            };
            let docs: Vec<SessionDoc> = sessions.iter().map(SessionDoc::from_pb).collect();
            if json {
                print_json(&json!({ "version": version, "sessions": docs }))?;
            } else {
                let mut t = Table::new(&[
                    "NAME",
                    "APPLIANCE",
                    "INGRESS",
                    "SOURCE",
                    "SUBSCRIBERS",
                    "ROOM",
                    "USER",
                    "SERVICE",
                    "VERSION",
                ]);
                for d in &docs {
                    t.row(vec![
                        d.name.clone(),
                        d.appliance.clone(),
                        d.ingress.clone(),
                        cell(d.source.as_deref().unwrap_or("")),
                        d.subscribers.len().to_string(),
                        cell(&d.labels.room),
                        cell(&d.labels.user),
                        cell(&d.labels.service),
                        cell(&d.labels.version),
                    ]);
                }
                t.print();
                println!("{} session(s) at config version {version}", docs.len());
            }
        }
        SessionCommand::Stats { name } => {
            let c = conn.connect()?;
            let n = name.clone();
            let r = c.call(|ch| async move {
                ctrl::sessions(ch)
                    .get_session_stats(GetSessionStatsRequest { name: n })
                    .await
            })?;
            let mut st = r.stats.unwrap_or_default();
            if st.name.is_empty() {
                st.name = name;
            }
            if json {
                print_json(&json!({
                    "name": st.name, "appliance": r.appliance,
                    "reported_at_unix_ms": r.reported_at_unix_ms,
                    "packets": st.packets, "bytes": st.bytes, "drops": st.drops,
                    "lost": st.lost, "jitter_us": st.jitter_us,
                }))?;
            } else if r.reported_at_unix_ms == 0 {
                println!(
                    "session {} on {}: no stats reported yet",
                    st.name, r.appliance
                );
            } else {
                let mut t = Table::new(&[
                    "SESSION",
                    "APPLIANCE",
                    "PACKETS",
                    "BYTES",
                    "DROPS",
                    "LOST",
                    "JITTER",
                    "REPORTED",
                ]);
                t.row(vec![
                    st.name,
                    r.appliance,
                    st.packets.to_string(),
                    st.bytes.to_string(),
                    st.drops.to_string(),
                    st.lost.to_string(),
                    format!("{} us", st.jitter_us),
                    ctrl::ago_ms(r.reported_at_unix_ms),
                ]);
                t.print();
            }
        }
        SessionCommand::Batch { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let doc = parse_batch(&text).map_err(|e| {
                ctrl::Exit::refused(format!(
                    "{}: not a session batch ({e}); see `popmesh session batch --help`",
                    file.display()
                ))
            })?;
            let BatchDoc { upserts, removes } = doc;
            let upserts = upserts
                .into_iter()
                .enumerate()
                .map(|(i, d)| checked(conn, d, &format!("batch.upserts[{i}]")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let c = conn.connect()?;
            let r = c.call(|ch| async move {
                ctrl::sessions(ch)
                    .batch_sessions(BatchSessionsRequest { upserts, removes })
                    .await
            })?;
            if json {
                print_json(&json!({
                    "version": r.version, "upserted": r.upserted, "removed": r.removed,
                }))?;
            } else {
                println!(
                    "batch applied: {} upserted, {} removed (config version {})",
                    r.upserted, r.removed, r.version
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the answer of a write.
pub fn written(json: bool, what: &str, version: u64) -> anyhow::Result<()> {
    if json {
        print_json(&json!({ "version": version }))
    } else {
        println!("{what} (config version {version})");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_address_for_the_shared_rules() {
        let e = endpoint("f", "[2001:db8::1]:5004").unwrap();
        assert_eq!((e.address.as_str(), e.port), ("2001:db8::1", 5004));
        let e = endpoint("f", "1.2.3:41000").unwrap();
        assert_eq!(e.address, "1.2.3");
        assert_eq!(
            endpoint("f", "1.2.3.4").unwrap_err().to_string(),
            "f: \"1.2.3.4\" is not ADDR:PORT ([ADDR]:PORT for IPv6)"
        );
        assert_eq!(
            endpoint("f", "1.2.3.4:x").unwrap_err().to_string(),
            "f.port: \"x\" is not a UDP port (1..=65535)"
        );
        let s = subscriber("s", "198.51.100.7:41000@edge").unwrap();
        assert_eq!(s.egress_port, "edge");
    }

    #[test]
    fn json_round_trips() {
        let doc: SessionDoc = serde_json::from_str(
            r#"{"name":"a","appliance":"pop-1","ingress":"10.0.0.1:4000",
                "subscribers":["10.0.0.2:5000@edge","[2001:db8::2]:5000"]}"#,
        )
        .unwrap();
        let pb = doc.into_pb("session").unwrap();
        let back = SessionDoc::from_pb(&pb);
        assert_eq!(
            back.subscribers,
            ["10.0.0.2:5000@edge", "[2001:db8::2]:5000"]
        );
        assert!(serde_json::from_str::<SessionDoc>(r#"{"name":"a","nope":1}"#).is_err());
    }

    #[test]
    fn batch_files_take_three_shapes_and_no_typos() {
        let s = r#"{"name":"a","appliance":"pop-1","ingress":"10.0.0.1:4000","subscribers":["10.0.0.2:5000"]}"#;
        assert_eq!(parse_batch(&format!("[{s}]")).unwrap().upserts.len(), 1);
        let listed = parse_batch(&format!(r#"{{"version": 3, "sessions": [{s}]}}"#)).unwrap();
        assert_eq!(listed.upserts.len(), 1);
        let full = parse_batch(&format!(r#"{{"upserts": [{s}], "removes": ["b"]}}"#)).unwrap();
        assert_eq!((full.upserts.len(), full.removes.len()), (1, 1));
        let typo = parse_batch(&format!(r#"{{"upsert": [{s}]}}"#)).unwrap_err();
        assert!(
            typo.to_string().contains("unknown field `upsert`"),
            "{typo}"
        );
    }
}
