//! Turning a `ConfigUpdate` from the control daemon into flow-table changes, all or nothing.
//!
//! No I/O and no clock: [`Applier::apply`] checks every session of the version against this
//! appliance's media ports and the table's capacity first and touches the [`FlowTable`] only
//! when all of it fits. Then it stages removals before upserts (so an ingress may move from one
//! session to another inside one version) and publishes once, so workers see the whole version
//! at once. Sessions whose flow is unchanged are not re-installed: their counters, latch and RTP
//! state carry on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use popmesh_config::Config;
use popmesh_ctrl_api::pb::{config_update, ConfigSnapshot, ConfigUpdate, ResourceError, Session};
use popmesh_ctrl_api::validate;
use popmesh_media::flow::{FlowKey, FlowSpec, FlowTable, Target};

/// Most per-resource errors one NACK carries; the reason line says how many there were.
const MAX_NACK_ERRORS: usize = 100;

/// Why a version was refused (sent as a NACK). Nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// One line for operators.
    pub reason: String,
    /// Per resource, at most [`MAX_NACK_ERRORS`].
    pub errors: Vec<ResourceError>,
}

/// What an applied version changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The version now installed.
    pub version: u64,
    /// Flows installed or replaced.
    pub upserted: usize,
    /// Flows removed.
    pub removed: usize,
    /// Sessions of the version whose flow was already installed as asked.
    pub unchanged: usize,
    /// Sessions installed after the version.
    pub sessions: usize,
}

/// An accepted configuration taken for the state file.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Its version.
    pub version: u64,
    mesh: ConfigSnapshot,
    sessions: Vec<Arc<Session>>,
}

impl Saved {
    /// The snapshot update (deep copies the sessions: call it off the agent thread).
    pub fn update(&self) -> ConfigUpdate {
        let mut snapshot = self.mesh.clone();
        snapshot.sessions = self.sessions.iter().map(|s| Session::clone(s)).collect();
        ConfigUpdate {
            version: self.version,
            nonce: String::new(),
            body: Some(config_update::Body::Snapshot(snapshot)),
        }
    }
}

/// The agent's view of what is installed: the accepted sessions (proto, for the state file)
/// and their flows (for the diff against the next version).
#[derive(Debug)]
pub struct Applier {
    config: Arc<Config>,
    appliance: String,
    version: u64,
    /// `Arc`: the state writer takes a copy of the list without deep-cloning 100k sessions
    /// on the agent thread.
    sessions: BTreeMap<String, Arc<Session>>,
    flows: HashMap<String, FlowSpec>,
    by_key: HashMap<FlowKey, String>,
    /// Per PortId: whether it is an IPv4 port.
    port_v4: Vec<bool>,
    /// Services, routes, canaries, policies and trust bundle of the last snapshot (sessions
    /// empty), kept for the state file.
    mesh: ConfigSnapshot,
    /// The signaling lane, when it runs: every snapshot's mesh goes to it.
    lane: Option<Arc<popmesh_signal::lane::Shared>>,
}

impl Applier {
    /// Nothing installed yet, version 0. `config` gives the media ports, the default clock rate
    /// and `media.max_flows`; `appliance` is this appliance's registered name.
    pub fn new(config: Arc<Config>, appliance: &str) -> Self {
        Applier {
            config: Arc::clone(&config),
            appliance: appliance.to_string(),
            version: 0,
            sessions: BTreeMap::new(),
            flows: HashMap::new(),
            by_key: HashMap::new(),
            port_v4: config
                .port_addrs()
                .iter()
                .map(SocketAddr::is_ipv4)
                .collect(),
            mesh: ConfigSnapshot::default(),
            lane: None,
        }
    }

    /// Sends the mesh of every accepted snapshot to `lane` (checked with the rest of the
    /// version: a mesh the lane cannot compile NACKs the whole version).
    pub fn with_lane(mut self, lane: Arc<popmesh_signal::lane::Shared>) -> Self {
        self.lane = Some(lane);
        self
    }

    /// The version last applied (0: none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Sessions installed.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// The whole accepted configuration, cheap to take (shared sessions); [`Saved::update`]
    /// builds the snapshot update the state file holds.
    pub fn saved(&self) -> Saved {
        Saved {
            version: self.version,
            mesh: self.mesh.clone(),
            sessions: self.sessions.values().cloned().collect(),
        }
    }

    /// The whole accepted configuration as a snapshot update (what the state file holds).
    #[cfg(test)]
    pub fn snapshot(&self) -> ConfigUpdate {
        self.saved().update()
    }

    /// Applies `update` to `table` (one publish) or refuses it whole.
    ///
    /// # Errors
    /// A [`Rejection`] naming every session that does not fit this appliance (ingress not one
    /// of its media ports, unknown egress port, address family of a port, invalid fields, an
    /// ingress used twice), a table over `media.max_flows`, a delta whose base is not the
    /// version last applied, or an update without a body. The table is then untouched.
    pub fn apply(
        &mut self,
        table: &mut FlowTable,
        update: &ConfigUpdate,
    ) -> Result<Applied, Rejection> {
        let (upserts, removes, full): (&[Session], Vec<&str>, bool) = match &update.body {
            Some(config_update::Body::Snapshot(s)) => {
                let keep: HashSet<&str> = s.sessions.iter().map(|s| s.name.as_str()).collect();
                let gone = self
                    .flows
                    .keys()
                    .map(String::as_str)
                    .filter(|n| !keep.contains(n))
                    .collect();
                (&s.sessions, gone, true)
            }
            Some(config_update::Body::Delta(d)) => {
                if d.base_version != self.version {
                    return Err(Rejection {
                        reason: format!(
                            "base version mismatch: delta from version {} but version {} is \
                             applied",
                            d.base_version, self.version
                        ),
                        errors: Vec::new(),
                    });
                }
                (
                    &d.upserts,
                    d.removes.iter().map(String::as_str).collect(),
                    false,
                )
            }
            None => {
                return Err(Rejection {
                    reason: "update has neither a snapshot nor a delta".to_string(),
                    errors: Vec::new(),
                })
            }
        };
        let removes: HashSet<&str> = removes.into_iter().collect();

        // 0. The mesh (snapshots only carry it), compiled for the signaling lane.
        let mesh = match (&self.lane, &update.body) {
            (Some(lane), Some(config_update::Body::Snapshot(s))) => {
                Some(compile_mesh(lane, update.version, s)?)
            }
            _ => None,
        };

        // 1. Convert and check every session before touching anything.
        let mut errors: Vec<ResourceError> = Vec::new();
        let mut error_count = 0usize;
        let mut fail = |name: &str, reason: String| {
            error_count += 1;
            if errors.len() < MAX_NACK_ERRORS {
                errors.push(ResourceError {
                    kind: "session".to_string(),
                    name: name.to_string(),
                    reason,
                });
            }
        };
        let mut specs: Vec<(&Session, FlowSpec)> = Vec::with_capacity(upserts.len());
        let mut seen_names: HashSet<&str> = HashSet::with_capacity(upserts.len());
        for s in upserts {
            // A delta removes after it upserts: a name in both ends up removed.
            if removes.contains(s.name.as_str()) {
                continue;
            }
            if !seen_names.insert(&s.name) {
                fail(&s.name, "listed twice in one version".to_string());
                continue;
            }
            match self.flow_spec(s) {
                Ok(spec) => specs.push((s, spec)),
                Err(reason) => fail(&s.name, reason),
            }
        }

        // 2. Whole-version rules: every ingress owned once, the table large enough.
        let mut new_keys: HashMap<FlowKey, &str> = HashMap::with_capacity(specs.len());
        for (s, spec) in &specs {
            if let Some(other) = new_keys.insert(spec.key, &s.name) {
                fail(
                    &s.name,
                    format!(
                        "ingress {} is also the ingress of session {other:?}",
                        spec.key.dst()
                    ),
                );
                continue;
            }
            if let Some(owner) = self.by_key.get(&spec.key) {
                let owner_leaves =
                    removes.contains(owner.as_str()) || seen_names.contains(owner.as_str()) || full;
                if owner != &s.name && !owner_leaves {
                    fail(
                        &s.name,
                        format!(
                            "ingress {} is already the ingress of session {owner:?}",
                            spec.key.dst()
                        ),
                    );
                }
            }
        }
        let removed_names: Vec<String> = removes
            .iter()
            .filter(|n| self.flows.contains_key(**n))
            .map(|n| n.to_string())
            .collect();
        let added = specs
            .iter()
            .filter(|(s, _)| !self.flows.contains_key(&s.name))
            .count();
        let final_len = self.flows.len() - removed_names.len() + added;
        let max_flows = table.max_flows();
        if error_count == 0 && final_len > max_flows {
            return Err(Rejection {
                reason: format!(
                    "version {} needs {final_len} flows but the flow table holds at most \
                     {max_flows} (media.max_flows); nothing applied",
                    update.version
                ),
                errors: Vec::new(),
            });
        }
        if error_count > 0 {
            let first = errors
                .first()
                .map(|e| format!("session {:?}: {}", e.name, e.reason))
                .unwrap_or_default();
            let more = if error_count > 1 {
                format!(" (and {} more)", error_count - 1)
            } else {
                String::new()
            };
            return Err(Rejection {
                reason: format!(
                    "version {} not applied, {error_count} session(s) do not fit appliance \
                     {:?}: {first}{more}",
                    update.version, self.appliance
                ),
                errors,
            });
        }

        // 3. Stage: removals (of removed sessions and of moved ingresses) first, then upserts.
        let mut removed = 0;
        for name in &removed_names {
            if let Some(old) = self.flows.get(name) {
                table.remove(old.key);
                removed += 1;
            }
        }
        let mut changed: Vec<(&Session, FlowSpec)> = Vec::with_capacity(specs.len());
        let mut unchanged = 0;
        for (s, spec) in specs {
            match self.flows.get(&s.name) {
                Some(old) if *old == spec => unchanged += 1,
                Some(old) => {
                    if old.key != spec.key {
                        table.remove(old.key);
                    }
                    changed.push((s, spec));
                }
                None => changed.push((s, spec)),
            }
        }
        let upserted = changed.len();
        for (_, spec) in &changed {
            // Cannot fail: targets are 1..=MAX_SUBSCRIBERS (validated) and the final count
            // fits max_flows (checked above), which are FlowTable::upsert's only refusals.
            if let Err(e) = table.upsert(spec.clone()) {
                tracing::error!(session = %spec.name, "flow table refused a checked flow: {e}");
            }
        }
        table.publish();

        // 4. Record what is installed now.
        for name in &removed_names {
            if let Some(old) = self.flows.remove(name) {
                self.by_key.remove(&old.key);
            }
            self.sessions.remove(name);
        }
        for (s, spec) in changed {
            if let Some(old) = self.flows.get(&s.name) {
                if self.by_key.get(&old.key) == Some(&s.name) {
                    self.by_key.remove(&old.key);
                }
            }
            self.by_key.insert(spec.key, s.name.clone());
            self.flows.insert(s.name.clone(), spec);
            self.sessions.insert(s.name.clone(), Arc::new(s.clone()));
        }
        if let (Some(lane), Some((table, bundle))) = (&self.lane, mesh) {
            lane.set_table(table);
            if let Some(bundle) = bundle.filter(|b| *b != *lane.tls.trust_bundle()) {
                match lane.tls.set_trust_bundle(bundle) {
                    Ok(()) => {
                        lane.metrics.rotations.inc();
                        tracing::info!("signaling lane: new trust bundle installed");
                    }
                    Err(e) => tracing::warn!(error = %e, "trust bundle not installed"),
                }
            }
        }
        if let Some(config_update::Body::Snapshot(snap)) = &update.body {
            self.mesh = ConfigSnapshot {
                sessions: Vec::new(),
                ..snap.clone()
            };
        }
        self.version = update.version;
        Ok(Applied {
            version: update.version,
            upserted,
            removed,
            unchanged,
            sessions: self.flows.len(),
        })
    }

    /// The flow of one session on this appliance, or why it cannot have one.
    fn flow_spec(&self, s: &Session) -> Result<FlowSpec, String> {
        let spec = validate::session_spec("session", s).map_err(|e| e.to_string())?;
        if s.appliance != self.appliance {
            return Err(format!(
                "is for appliance {:?}, this is {:?}",
                s.appliance, self.appliance
            ));
        }
        let cfg = &self.config;
        let ingress_port = cfg.port_id(spec.ingress).ok_or_else(|| {
            format!(
                "ingress {} is not a media port of this appliance (media.ports: {})",
                spec.ingress,
                self.describe_ports()
            )
        })?;
        let ingress_family = self.port_family(ingress_port);
        let mut targets = Vec::with_capacity(spec.subscribers.len());
        for (i, (addr, egress)) in spec.subscribers.iter().enumerate() {
            let port = match egress {
                None => ingress_port,
                Some(name) => {
                    cfg.port_by_name(name)
                        .ok_or_else(|| {
                            format!(
                                "subscribers[{i}].egress_port {name:?} is not a media port of \
                                 this appliance (media.ports: {})",
                                self.describe_ports()
                            )
                        })?
                        .0
                }
            };
            let v4 = if egress.is_none() {
                ingress_family
            } else {
                self.port_family(port)
            };
            if addr.is_ipv4() != v4 {
                return Err(format!(
                    "subscribers[{i}] {addr} is not of the address family of the port it leaves \
                     from"
                ));
            }
            targets.push(Target {
                port,
                addr: *addr,
                mac: None,
            });
        }
        if let Some(src) = spec.source {
            if src.is_ipv4() != ingress_family {
                return Err(format!(
                    "source {src} is not of the ingress port's address family"
                ));
            }
        }
        Ok(FlowSpec {
            name: Arc::from(spec.name.as_str()),
            key: FlowKey::new(ingress_port, spec.ingress),
            source: spec.source,
            clock_rate: spec
                .clock_rate
                .map_or(cfg.media.clock_rate, std::num::NonZeroU32::get),
            targets,
        })
    }

    /// Whether PortId `id` is an IPv4 port.
    fn port_family(&self, id: u16) -> bool {
        self.port_v4.get(usize::from(id)).copied().unwrap_or(true)
    }

    fn describe_ports(&self) -> String {
        let list: Vec<String> = self
            .config
            .media
            .ports
            .iter()
            .map(|p| {
                if p.count > 1 {
                    format!("{} {}+{}", p.name, p.bind, p.count)
                } else {
                    format!("{} {}", p.name, p.bind)
                }
            })
            .collect();
        list.join(", ")
    }
}

/// Compiles a snapshot's services, routes, canaries and policies (and its trust bundle) for
/// the signaling lane, taking over the endpoint state of the table in use.
fn compile_mesh(
    lane: &popmesh_signal::lane::Shared,
    version: u64,
    s: &ConfigSnapshot,
) -> Result<
    (
        popmesh_signal::MeshTable,
        Option<popmesh_signal::TrustBundle>,
    ),
    Rejection,
> {
    let current = lane.table.load();
    let table = popmesh_signal::MeshTable::compile(
        version,
        &s.services,
        &s.routes,
        &s.canaries,
        &s.policies,
        Some(&current),
    )
    .map_err(|errors| Rejection {
        reason: format!(
            "{} mesh resource(s) cannot be applied by the signaling lane, first: {} {}: {}",
            errors.len(),
            errors[0].0,
            errors[0].1,
            errors[0].2
        ),
        errors: errors
            .into_iter()
            .take(MAX_NACK_ERRORS)
            .map(|(kind, name, e)| ResourceError {
                kind: kind.to_string(),
                name,
                reason: e.to_string(),
            })
            .collect(),
    })?;
    let bundle = match &s.trust_bundle {
        Some(b) if !b.roots_pem.is_empty() => Some(
            popmesh_signal::TrustBundle::from_pem(&b.trust_domain, b.roots_pem.as_bytes())
                .map_err(|e| Rejection {
                    reason: format!("trust bundle: {e}"),
                    errors: vec![ResourceError {
                        kind: "trust_bundle".to_string(),
                        name: b.trust_domain.clone(),
                        reason: e.to_string(),
                    }],
                })?,
        ),
        _ => None,
    };
    Ok((table, bundle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use popmesh_ctrl_api::pb::{ConfigDelta, Endpoint, Subscriber};

    fn config() -> Arc<Config> {
        Arc::new(
            Config::from_toml(
                r#"
                [media]
                max_flows = 4
                [[media.ports]]
                name = "lab"
                bind = "127.0.0.1:40000"
                count = 4
                [[media.ports]]
                name = "up"
                bind = "127.0.0.2:40100"
                "#,
            )
            .expect("test config"),
        )
    }

    fn ep(s: &str) -> Option<Endpoint> {
        let a: SocketAddr = s.parse().expect("test address");
        Some(Endpoint {
            address: a.ip().to_string(),
            port: u32::from(a.port()),
        })
    }

    fn session(name: &str, ingress: &str, subs: &[&str]) -> Session {
        Session {
            name: name.into(),
            appliance: "pop-1".into(),
            ingress: ep(ingress),
            subscribers: subs
                .iter()
                .map(|s| Subscriber {
                    endpoint: ep(s),
                    egress_port: String::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn snapshot(version: u64, sessions: Vec<Session>) -> ConfigUpdate {
        ConfigUpdate {
            version,
            nonce: format!("n{version}"),
            body: Some(config_update::Body::Snapshot(ConfigSnapshot {
                sessions,
                ..Default::default()
            })),
        }
    }

    fn delta(version: u64, base: u64, upserts: Vec<Session>, removes: &[&str]) -> ConfigUpdate {
        ConfigUpdate {
            version,
            nonce: format!("n{version}"),
            body: Some(config_update::Body::Delta(ConfigDelta {
                base_version: base,
                upserts,
                removes: removes.iter().map(|s| s.to_string()).collect(),
            })),
        }
    }

    /// Name and first target of every published flow, sorted.
    fn published(table: &FlowTable) -> Vec<(String, SocketAddr, u64)> {
        let reader = table.reader().reader();
        let guard = reader.enter().expect("table alive");
        let mut out: Vec<_> = guard
            .iter()
            .map(|f| (f.spec.name.to_string(), f.spec.targets[0].addr, f.id))
            .collect();
        out.sort();
        out
    }

    fn setup() -> (Applier, FlowTable) {
        let cfg = config();
        let table = FlowTable::new(cfg.media.max_flows as usize);
        (Applier::new(cfg, "pop-1"), table)
    }

    #[test]
    fn snapshot_then_delta_keeps_untouched_flows() {
        let (mut a, mut t) = setup();
        let r = a.apply(
            &mut t,
            &snapshot(
                3,
                vec![
                    session("a", "127.0.0.1:40000", &["127.0.0.1:41000"]),
                    session("b", "127.0.0.1:40001", &["127.0.0.1:41001"]),
                ],
            ),
        );
        assert_eq!(r.map(|r| (r.upserted, r.sessions)), Ok((2, 2)));
        let before = published(&t);
        assert_eq!(before.len(), 2);

        let r = a
            .apply(
                &mut t,
                &delta(
                    5,
                    3,
                    vec![session("c", "127.0.0.1:40002", &["127.0.0.1:41002"])],
                    &["b"],
                ),
            )
            .expect("delta applies");
        assert_eq!((r.upserted, r.removed, r.sessions), (1, 1, 2));
        let after = published(&t);
        assert_eq!(after[0], before[0], "flow a kept its id (and state)");
        assert_eq!(after[1].0, "c");
        assert_eq!(a.version(), 5);

        // The same snapshot again changes nothing.
        let snap = a.snapshot();
        let r = a.apply(&mut t, &snap).expect("own snapshot applies");
        assert_eq!((r.upserted, r.removed, r.unchanged), (0, 0, 2));
        assert_eq!(published(&t), after);
    }

    #[test]
    fn a_version_with_one_bad_session_applies_nothing() {
        let (mut a, mut t) = setup();
        a.apply(
            &mut t,
            &snapshot(
                1,
                vec![session("a", "127.0.0.1:40000", &["127.0.0.1:41000"])],
            ),
        )
        .expect("applies");
        let before = published(&t);
        let mut bad_egress = session("e", "127.0.0.1:40002", &["127.0.0.1:41000"]);
        bad_egress.subscribers[0].egress_port = "nope".into();
        let rej = a
            .apply(
                &mut t,
                &delta(
                    2,
                    1,
                    vec![
                        session("ok", "127.0.0.1:40001", &["127.0.0.1:41001"]),
                        session("x", "10.0.0.9:40000", &["127.0.0.1:41001"]),
                        bad_egress,
                        session("dup", "127.0.0.1:40000", &["127.0.0.1:41003"]),
                    ],
                    &[],
                ),
            )
            .expect_err("refused");
        let errs: Vec<(&str, &str)> = rej
            .errors
            .iter()
            .map(|e| (e.name.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0].0, "x");
        assert!(
            errs[0]
                .1
                .starts_with("ingress 10.0.0.9:40000 is not a media port of this appliance"),
            "{errs:?}"
        );
        assert!(errs[1].1.contains("egress_port \"nope\""), "{errs:?}");
        assert_eq!(errs[2].0, "dup");
        assert!(errs[2].1.contains("already the ingress of session \"a\""));
        assert!(
            rej.reason.contains("3 session(s)") && rej.reason.contains("session \"x\""),
            "{}",
            rej.reason
        );
        assert_eq!(published(&t), before, "nothing of the version applied");
        assert_eq!(a.version(), 1);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn base_mismatch_capacity_and_moves() {
        let (mut a, mut t) = setup();
        a.apply(
            &mut t,
            &snapshot(
                1,
                vec![session("a", "127.0.0.1:40000", &["127.0.0.1:41000"])],
            ),
        )
        .expect("applies");
        let rej = a
            .apply(&mut t, &delta(3, 2, Vec::new(), &["a"]))
            .expect_err("wrong base");
        assert!(
            rej.reason.starts_with("base version mismatch"),
            "{}",
            rej.reason
        );

        // Five flows do not fit max_flows = 4.
        let five: Vec<Session> = (0..4)
            .map(|i| {
                session(
                    &format!("s{i}"),
                    &format!("127.0.0.1:4000{i}"),
                    &["127.0.0.1:41000"],
                )
            })
            .chain([session("up", "127.0.0.2:40100", &["127.0.0.2:41000"])])
            .collect();
        let rej = a.apply(&mut t, &snapshot(4, five)).expect_err("too many");
        assert!(rej.reason.contains("media.max_flows"), "{}", rej.reason);
        assert_eq!(published(&t).len(), 1);

        // In one snapshot the ingress of "a" moves to "b" and "a" moves elsewhere.
        let r = a
            .apply(
                &mut t,
                &snapshot(
                    5,
                    vec![
                        session("a", "127.0.0.1:40001", &["127.0.0.1:41000"]),
                        session("b", "127.0.0.1:40000", &["127.0.0.1:41005"]),
                    ],
                ),
            )
            .expect("move applies");
        assert_eq!(r.sessions, 2);
        let flows = published(&t);
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[1].1, "127.0.0.1:41005".parse().expect("addr"));
    }

    /// Apply rate of one snapshot of 100,000 sessions (printed; run with `--nocapture`).
    #[test]
    fn apply_rate_of_a_100k_snapshot() {
        let cfg = Arc::new(
            Config::from_toml(
                "[media]\nmax_flows = 131072\n[[media.ports]]\nname = \"any\"\nbind = \"0.0.0.0:40000\"\n",
            )
            .expect("config"),
        );
        let mut t = FlowTable::new(cfg.media.max_flows as usize);
        let mut a = Applier::new(cfg, "pop-1");
        let n = 100_000usize;
        let sessions: Vec<Session> = (0..n)
            .map(|i| {
                session(
                    &format!("s{i}"),
                    &format!("10.{}.{}.{}:40000", i >> 16, (i >> 8) & 255, i & 255),
                    &["192.0.2.1:41000", "192.0.2.2:41000"],
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let r = a.apply(&mut t, &snapshot(1, sessions)).expect("applies");
        let took = started.elapsed();
        assert_eq!((r.upserted, r.sessions), (n, n));
        assert_eq!(published(&t).len(), n);
        println!(
            "agent apply: {n} sessions in {:.1} ms = {:.0} sessions/s ({} build)",
            took.as_secs_f64() * 1e3,
            n as f64 / took.as_secs_f64(),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
}
