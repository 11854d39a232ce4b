//! `popmesh canary set|get|list|promote|rollback|place`.

use std::process::ExitCode;

use clap::Subcommand;
use popmesh_ctrl_api::pb::{
    Canary, GetCanaryRequest, ListCanariesRequest, PlaceRequest, PromoteRequest, RollbackRequest,
    SetCanaryRequest, VersionWeight,
};
use popmesh_ctrl_api::validate;
use serde_json::json;

use crate::ctrl::{self, cell, invalid, print_json, ConnArgs, Exit, Table};
use crate::session::written;

#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Split a service's traffic and new media sessions between versions (weights sum to 100).
    ///
    /// Example: `popmesh canary set mixer --weight v1=99 --weight v2=1 --sticky-header
    /// x-user-id --override-header x-canary-version`.
    Set {
        /// Service to split.
        service: String,
        /// VERSION=PERCENT; repeat for each version. The percentages must sum to 100.
        #[arg(long = "weight", value_name = "VERSION=PERCENT", required = true)]
        weights: Vec<String>,
        /// Header whose value keeps a user on one version (e.g. x-user-id).
        #[arg(long, value_name = "HEADER", conflicts_with = "sticky_cookie")]
        sticky_header: Option<String>,
        /// Cookie whose value keeps a user on one version.
        #[arg(long, value_name = "COOKIE")]
        sticky_cookie: Option<String>,
        /// Header testers set to force a version (e.g. x-canary-version).
        #[arg(long, value_name = "HEADER")]
        override_header: Option<String>,
    },
    /// Show a service's split.
    Get {
        /// Service name.
        service: String,
    },
    /// List all splits.
    List,
    /// Make VERSION the service's default with 100%.
    Promote {
        /// Service name.
        service: String,
        /// Version to promote.
        #[arg(value_name = "VERSION")]
        to_version: String,
    },
    /// Give the service's default version 100% again.
    Rollback {
        /// Service name.
        service: String,
    },
    /// Which version a key (user id) gets now: the same function places new media sessions.
    Place {
        /// Service name.
        service: String,
        /// Sticky key (user id).
        #[arg(value_name = "KEY")]
        user_key: String,
        /// A tester's override version.
        #[arg(long = "override", value_name = "VERSION")]
        override_version: Option<String>,
    },
}

fn weight(s: &str) -> anyhow::Result<VersionWeight> {
    let bad = || {
        Exit::refused(format!(
            "--weight {s:?}: expected VERSION=PERCENT, e.g. v2=1"
        ))
    };
    let (version, w) = s.split_once('=').ok_or_else(bad)?;
    Ok(VersionWeight {
        version: version.to_string(),
        weight: w.trim_end_matches('%').parse().map_err(|_| bad())?,
    })
}

fn weights(c: &Canary) -> String {
    c.weights
        .iter()
        .map(|w| format!("{}={}", w.version, w.weight))
        .collect::<Vec<_>>()
        .join(" ")
}

fn canary_json(c: &Canary) -> serde_json::Value {
    json!({
        "service": c.service,
        "weights": c.weights.iter().map(|w| json!({"version": w.version, "weight": w.weight})).collect::<Vec<_>>(),
        "sticky_header": c.sticky_header,
        "sticky_cookie": c.sticky_cookie,
        "override_header": c.override_header,
        "config_version": c.version,
    })
}

fn table(cs: &[Canary]) -> Table {
    let mut t = Table::new(&["SERVICE", "WEIGHTS", "STICKY", "OVERRIDE"]);
    for c in cs {
        let sticky = if !c.sticky_cookie.is_empty() {
            format!("cookie {}", c.sticky_cookie)
        } else if !c.sticky_header.is_empty() {
            format!("header {}", c.sticky_header)
        } else {
            String::new()
        };
        t.row(vec![
            c.service.clone(),
            weights(c),
            cell(&sticky),
            cell(&c.override_header),
        ]);
    }
    t
}

pub fn run(conn: &ConnArgs, json: bool, cmd: CanaryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CanaryCommand::Set {
            service,
            weights: ws,
            sticky_header,
            sticky_cookie,
            override_header,
        } => {
            let canary = Canary {
                service,
                weights: ws
                    .iter()
                    .map(|w| weight(w))
                    .collect::<anyhow::Result<_>>()?,
                sticky_header: sticky_header.unwrap_or_default(),
                sticky_cookie: sticky_cookie.unwrap_or_default(),
                override_header: override_header.unwrap_or_default(),
                version: 0,
            };
            let c = conn.connect()?;
            if c.local_checks() {
                validate::canary("canary", &canary, &c.catalog()?).map_err(|e| invalid(&e))?;
            }
            let what = format!("canary {}: {}", canary.service, weights(&canary));
            let r = c.call(|ch| async move {
                ctrl::canaries(ch)
                    .set_canary(SetCanaryRequest {
                        canary: Some(canary),
                    })
                    .await
            })?;
            written(json, &what, r.version)?;
        }
        CanaryCommand::Get { service } => {
            let c = conn.connect()?;
            let can = c.call(|ch| async move {
                ctrl::canaries(ch)
                    .get_canary(GetCanaryRequest { service })
                    .await
            })?;
            if json {
                print_json(&canary_json(&can))?;
            } else {
                table(&[can]).print();
            }
        }
        CanaryCommand::List => {
            let c = conn.connect()?;
            let r = c.call(|ch| async move {
                ctrl::canaries(ch)
                    .list_canaries(ListCanariesRequest {})
                    .await
            })?;
            if json {
                let cs: Vec<_> = r.canaries.iter().map(canary_json).collect();
                print_json(&json!({ "version": r.version, "canaries": cs }))?;
            } else {
                table(&r.canaries).print();
            }
        }
        CanaryCommand::Promote {
            service,
            to_version: version,
        } => {
            let c = conn.connect()?;
            let what = format!("promoted {service} {version} to 100% and default");
            let r = c.call(|ch| async move {
                ctrl::canaries(ch)
                    .promote(PromoteRequest { service, version })
                    .await
            })?;
            written(json, &what, r.version)?;
        }
        CanaryCommand::Rollback { service } => {
            let c = conn.connect()?;
            let what = format!("rolled back {service}: its default version has 100%");
            let r = c.call(|ch| async move {
                ctrl::canaries(ch)
                    .rollback(RollbackRequest { service })
                    .await
            })?;
            written(json, &what, r.version)?;
        }
        CanaryCommand::Place {
            service,
            user_key: key,
            override_version,
        } => {
            let c = conn.connect()?;
            let (s, k) = (service.clone(), key.clone());
            let r = c.call(|ch| async move {
                ctrl::canaries(ch)
                    .place(PlaceRequest {
                        service: s,
                        key: k,
                        override_version: override_version.unwrap_or_default(),
                    })
                    .await
            })?;
            if json {
                print_json(&json!({ "service": service, "key": key, "version": r.version }))?;
            } else {
                println!("{service} places {key:?} on {}", r.version);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
