//! `popmesh appliance list|status`: sync state of each appliance and why it rejected what.

use std::process::ExitCode;

use clap::Subcommand;
use popmesh_ctrl_api::pb::{
    ApplianceStatus, GetApplianceStatusRequest, ListAppliancesRequest, SyncState,
};
use serde_json::json;

use crate::ctrl::{self, ago_ms, cell, print_json, ConnArgs, Table};

#[derive(Debug, Subcommand)]
pub enum ApplianceCommand {
    /// Every registered appliance: connected, synced/pending/rejected, versions, last NACK.
    List,
    /// One appliance's status; with --resources every resource not synced and why.
    Status {
        /// Appliance name.
        name: String,
        /// Also list each resource (session, service, ...) that is pending or rejected.
        #[arg(long)]
        resources: bool,
    },
}

fn state(s: i32) -> &'static str {
    match SyncState::try_from(s) {
        Ok(SyncState::Synced) => "synced",
        Ok(SyncState::Pending) => "pending",
        Ok(SyncState::Rejected) => "rejected",
        Ok(SyncState::Disconnected) => "disconnected",
        _ => "unknown",
    }
}

fn status_json(a: &ApplianceStatus) -> serde_json::Value {
    json!({
        "name": a.name,
        "spiffe_id": a.spiffe_id,
        "software_version": a.software_version,
        "state": state(a.state),
        "connected": a.connected,
        "disconnected_since_unix_ms": a.disconnected_since_unix_ms,
        "sent_version": a.sent_version,
        "acked_version": a.acked_version,
        "last_nack": a.last_nack.as_ref().map(|n| json!({
            "version": n.version, "reason": n.reason,
            "errors": n.errors.iter().map(|e| json!({"kind": e.kind, "name": e.name, "reason": e.reason})).collect::<Vec<_>>(),
        })),
        "resources": a.resources.iter().map(|r| json!({
            "kind": r.kind, "name": r.name, "version": r.version,
            "state": state(r.state), "reason": r.reason,
        })).collect::<Vec<_>>(),
    })
}

fn connection(a: &ApplianceStatus) -> String {
    if a.connected {
        "connected".into()
    } else if a.disconnected_since_unix_ms == 0 {
        "never connected".into()
    } else {
        format!("disconnected {}", ago_ms(a.disconnected_since_unix_ms))
    }
}

pub fn run(conn: &ConnArgs, json: bool, cmd: ApplianceCommand) -> anyhow::Result<ExitCode> {
    let c = conn.connect()?;
    match cmd {
        ApplianceCommand::List => {
            let r = c.call(|ch| async move {
                ctrl::appliances(ch)
                    .list_appliances(ListAppliancesRequest {})
                    .await
            })?;
            if json {
                let all: Vec<_> = r.appliances.iter().map(status_json).collect();
                print_json(&json!({ "version": r.version, "appliances": all }))?;
            } else {
                let mut t = Table::new(&[
                    "NAME",
                    "STATE",
                    "CONNECTION",
                    "SENT",
                    "ACKED",
                    "SOFTWARE",
                    "LAST NACK",
                ]);
                for a in &r.appliances {
                    t.row(vec![
                        a.name.clone(),
                        state(a.state).into(),
                        connection(a),
                        a.sent_version.to_string(),
                        a.acked_version.to_string(),
                        cell(&a.software_version),
                        cell(a.last_nack.as_ref().map_or("", |n| n.reason.as_str())),
                    ]);
                }
                t.print();
                println!("config version {}", r.version);
            }
        }
        ApplianceCommand::Status { name, resources } => {
            let a = c.call(|ch| async move {
                ctrl::appliances(ch)
                    .get_appliance_status(GetApplianceStatusRequest { name, resources })
                    .await
            })?;
            if json {
                print_json(&status_json(&a))?;
            } else {
                println!("appliance:  {}", a.name);
                println!("identity:   {}", cell(&a.spiffe_id));
                println!("software:   {}", cell(&a.software_version));
                println!("state:      {}", state(a.state));
                println!("connection: {}", connection(&a));
                println!(
                    "versions:   sent {}, acknowledged {}",
                    a.sent_version, a.acked_version
                );
                if let Some(n) = &a.last_nack {
                    println!("last NACK:  version {}: {}", n.version, n.reason);
                    for e in &n.errors {
                        println!("  {} {}: {}", e.kind, e.name, e.reason);
                    }
                }
                if resources {
                    let mut t = Table::new(&["KIND", "NAME", "VERSION", "STATE", "REASON"]);
                    for r in &a.resources {
                        t.row(vec![
                            r.kind.clone(),
                            r.name.clone(),
                            r.version.to_string(),
                            state(r.state).into(),
                            cell(&r.reason),
                        ]);
                    }
                    println!("resources not synced:");
                    t.print();
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
