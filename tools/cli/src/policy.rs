//! `popmesh policy put|remove|list`: who (SPIFFE identity) may call which service.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use popmesh_ctrl_api::pb::{
    ListPoliciesRequest, Policy, PolicyAction, PutPolicyRequest, RemovePolicyRequest,
};
use popmesh_ctrl_api::validate;
use serde_json::json;

use crate::ctrl::{self, invalid, print_json, ConnArgs, Table};
use crate::session::written;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or replace an authorization policy.
    Put {
        /// Policy name, [a-z0-9-]{1,63}.
        #[arg(long)]
        name: String,
        /// Caller identity: spiffe://<td>/ns/<ns>/sa/<name>, or .../sa/* for a namespace.
        /// Repeatable.
        #[arg(long = "source", value_name = "SPIFFE_ID", required = true)]
        sources: Vec<String>,
        /// Destination service.
        #[arg(long, value_name = "SERVICE")]
        destination: String,
        /// HTTP method (GET, POST, ...); repeatable; none: any.
        #[arg(long = "method", value_name = "METHOD")]
        methods: Vec<String>,
        /// Path prefix starting with "/"; repeatable; none: any.
        #[arg(long = "path", value_name = "PREFIX")]
        paths: Vec<String>,
        #[arg(long, value_enum)]
        action: Action,
    },
    /// Remove a policy.
    Remove {
        /// Policy name.
        name: String,
    },
    /// List policies.
    List,
}

fn action_name(a: i32) -> &'static str {
    match PolicyAction::try_from(a) {
        Ok(PolicyAction::Allow) => "allow",
        Ok(PolicyAction::Deny) => "deny",
        _ => "unspecified",
    }
}

pub fn run(conn: &ConnArgs, json: bool, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Put {
            name,
            sources,
            destination,
            methods,
            paths,
            action,
        } => {
            let policy = Policy {
                name,
                sources,
                destination,
                methods,
                paths,
                action: match action {
                    Action::Allow => PolicyAction::Allow,
                    Action::Deny => PolicyAction::Deny,
                } as i32,
                version: 0,
            };
            let c = conn.connect()?;
            if c.local_checks() {
                validate::policy("policy", &policy, &c.catalog()?).map_err(|e| invalid(&e))?;
            }
            let what = format!("put policy {}", policy.name);
            let r = c.call(|ch| async move {
                ctrl::policies(ch)
                    .put_policy(PutPolicyRequest {
                        policy: Some(policy),
                    })
                    .await
            })?;
            written(json, &what, r.version)?;
        }
        PolicyCommand::Remove { name } => {
            let c = conn.connect()?;
            let what = format!("removed policy {name}");
            let r = c.call(|ch| async move {
                ctrl::policies(ch)
                    .remove_policy(RemovePolicyRequest { name })
                    .await
            })?;
            written(json, &what, r.version)?;
        }
        PolicyCommand::List => {
            let c = conn.connect()?;
            let r = c.call(|ch| async move {
                ctrl::policies(ch)
                    .list_policies(ListPoliciesRequest {})
                    .await
            })?;
            let any = |v: &[String]| {
                if v.is_empty() {
                    "any".to_string()
                } else {
                    v.join(",")
                }
            };
            if json {
                let ps: Vec<_> = r
                    .policies
                    .iter()
                    .map(|p| {
                        json!({
                            "name": p.name, "sources": p.sources, "destination": p.destination,
                            "methods": p.methods, "paths": p.paths,
                            "action": action_name(p.action), "config_version": p.version,
                        })
                    })
                    .collect();
                print_json(&json!({ "version": r.version, "policies": ps }))?;
            } else {
                let mut t = Table::new(&[
                    "NAME",
                    "ACTION",
                    "DESTINATION",
                    "SOURCES",
                    "METHODS",
                    "PATHS",
                ]);
                for p in &r.policies {
                    t.row(vec![
                        p.name.clone(),
                        action_name(p.action).into(),
                        p.destination.clone(),
                        p.sources.join(","),
                        any(&p.methods),
                        any(&p.paths),
                    ]);
                }
                t.print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
