//! The configuration held in memory, and every change to it as a two-step operation:
//! `prepare_*` validates against the current state and returns a [`Plan`] (nothing changed
//! yet); the caller commits the plan to the store and only then [`State::apply`]s it. So an
//! invalid change changes nothing, and a change that failed to commit is never visible.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use popmesh_ctrl_api::validate::{self, Catalog, ValidationError};
use popmesh_ctrl_api::{canary, pb};

use crate::store::{Kind, Loaded, Write};

/// Why a change was refused (mapped to gRPC codes by the API layer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// A field breaks a rule (`InvalidArgument`).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The resource to update or remove does not exist (`NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// The resource to create exists (`AlreadyExists`).
    #[error("{0}")]
    Exists(String),
    /// Other resources depend on it (`FailedPrecondition`).
    #[error("{0}")]
    InUse(String),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ChangeError {
    ChangeError::Invalid(ValidationError::new(field, reason))
}

/// A resource record to store.
#[derive(Debug, Clone)]
pub enum Record {
    /// A media session.
    Session(pb::Session),
    /// A service.
    Service(pb::Service),
    /// A route.
    Route(pb::Route),
    /// A canary split.
    Canary(pb::Canary),
    /// A policy.
    Policy(pb::Policy),
}

/// A validated change, not applied yet.
#[derive(Debug, Default)]
pub struct Plan {
    /// The version the change gets.
    pub version: u64,
    /// Records to create or replace.
    pub puts: Vec<Record>,
    /// Records to remove.
    pub deletes: Vec<(Kind, String)>,
}

impl Plan {
    fn new(state: &State) -> Self {
        Plan {
            version: state.version + 1,
            ..Plan::default()
        }
    }

    /// The store transaction for this plan.
    pub fn write(&self) -> Write {
        let mut w = Write::default();
        for r in &self.puts {
            match r {
                Record::Session(s) => w.put(Kind::Session, &s.name, s),
                Record::Service(s) => w.put(Kind::Service, &s.name, s),
                Record::Route(r) => w.put(Kind::Route, &r.name, r),
                Record::Canary(c) => w.put(Kind::Canary, &c.service, c),
                Record::Policy(p) => w.put(Kind::Policy, &p.name, p),
            }
        }
        for (k, n) in &self.deletes {
            w.delete(*k, n);
        }
        w
    }
}

/// A session change as pushed to watch streams.
#[derive(Debug, Clone)]
pub enum SessionOp {
    /// Install or replace.
    Upsert(Arc<pb::Session>),
    /// Remove by name.
    Remove(String),
}

/// What one committed change did, for watch streams.
#[derive(Debug)]
pub struct Change {
    /// The new config version.
    pub version: u64,
    /// Session changes per appliance.
    pub sessions: HashMap<String, Vec<SessionOp>>,
    /// Whether services, routes, canaries or policies changed (every appliance gets a
    /// snapshot).
    pub mesh: bool,
    /// When the commit finished (push latency is measured from here to the ACK).
    pub committed_at: std::time::Instant,
}

/// The whole configuration.
#[derive(Debug, Default)]
pub struct State {
    /// Global config version.
    pub version: u64,
    /// Sessions by name.
    pub sessions: BTreeMap<String, pb::Session>,
    /// Services by name.
    pub services: BTreeMap<String, pb::Service>,
    /// Routes by name.
    pub routes: BTreeMap<String, pb::Route>,
    /// Canary splits by service.
    pub canaries: BTreeMap<String, pb::Canary>,
    /// Policies by name.
    pub policies: BTreeMap<String, pb::Policy>,
    /// Registered appliances by name.
    pub appliances: BTreeMap<String, pb::RegisterRequest>,
    /// Version of the last change to services, routes, canaries or policies.
    pub mesh_version: u64,
    /// (appliance, ingress) -> session.
    ingress: HashMap<(String, SocketAddr), String>,
    /// appliance -> its sessions.
    by_appliance: HashMap<String, BTreeSet<String>>,
    /// appliance -> version of the last change to its sessions.
    appliance_version: HashMap<String, u64>,
}

impl Catalog for State {
    fn service(&self, name: &str) -> Option<&pb::Service> {
        self.services.get(name)
    }
}

fn ingress_of(s: &pb::Session) -> Option<SocketAddr> {
    let ep = s.ingress.as_ref()?;
    Some(SocketAddr::new(
        ep.address.parse().ok()?,
        u16::try_from(ep.port).ok()?,
    ))
}

impl State {
    /// Builds the state from what the store holds.
    pub fn from_loaded(l: Loaded) -> Self {
        let mut s = State {
            version: l.version,
            ..State::default()
        };
        for x in l.services {
            s.mesh_version = s.mesh_version.max(x.version);
            s.services.insert(x.name.clone(), x);
        }
        for x in l.routes {
            s.mesh_version = s.mesh_version.max(x.version);
            s.routes.insert(x.name.clone(), x);
        }
        for x in l.canaries {
            s.mesh_version = s.mesh_version.max(x.version);
            s.canaries.insert(x.service.clone(), x);
        }
        for x in l.policies {
            s.mesh_version = s.mesh_version.max(x.version);
            s.policies.insert(x.name.clone(), x);
        }
        for a in l.appliances {
            s.appliances.insert(a.name.clone(), a);
        }
        for x in l.sessions {
            s.index_session(&x);
            s.sessions.insert(x.name.clone(), x);
        }
        s
    }

    fn index_session(&mut self, x: &pb::Session) {
        if let Some(ing) = ingress_of(x) {
            self.ingress
                .insert((x.appliance.clone(), ing), x.name.clone());
        }
        self.by_appliance
            .entry(x.appliance.clone())
            .or_default()
            .insert(x.name.clone());
        let v = self
            .appliance_version
            .entry(x.appliance.clone())
            .or_default();
        *v = (*v).max(x.version);
    }

    fn unindex_session(&mut self, x: &pb::Session, version: u64) {
        if let Some(ing) = ingress_of(x) {
            let key = (x.appliance.clone(), ing);
            if self.ingress.get(&key) == Some(&x.name) {
                self.ingress.remove(&key);
            }
        }
        if let Some(set) = self.by_appliance.get_mut(&x.appliance) {
            set.remove(&x.name);
        }
        self.appliance_version.insert(x.appliance.clone(), version);
    }

    /// The version an appliance must acknowledge to be in sync: the last change to its
    /// sessions or to the mesh resources.
    pub fn desired_version(&self, appliance: &str) -> u64 {
        self.appliance_version
            .get(appliance)
            .copied()
            .unwrap_or(0)
            .max(self.mesh_version)
    }

    /// Sessions of one appliance, by name.
    pub fn sessions_of(&self, appliance: &str) -> impl Iterator<Item = &pb::Session> {
        self.by_appliance
            .get(appliance)
            .into_iter()
            .flatten()
            .filter_map(|n| self.sessions.get(n))
    }

    /// Everything one appliance needs.
    pub fn snapshot(&self, appliance: &str, trust_bundle: &pb::TrustBundle) -> pb::ConfigSnapshot {
        pb::ConfigSnapshot {
            sessions: self.sessions_of(appliance).cloned().collect(),
            services: self.services.values().cloned().collect(),
            routes: self.routes.values().cloned().collect(),
            canaries: self.canaries.values().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
            trust_bundle: Some(trust_bundle.clone()),
        }
    }

    /// The version `key` gets of `service` now.
    ///
    /// # Errors
    /// `field` names an unknown service.
    pub fn place(
        &self,
        field: &str,
        service: &str,
        key: &str,
        override_version: &str,
    ) -> Result<String, ChangeError> {
        let svc = self
            .services
            .get(service)
            .ok_or_else(|| invalid(field, format!("unknown service {service:?}")))?;
        Ok(canary::place(svc, self.canaries.get(service), key, override_version).to_string())
    }

    /// Validates a session and fills in its canary placement and version.
    fn checked_session(
        &self,
        field: &str,
        mut s: pb::Session,
        version: u64,
    ) -> Result<(pb::Session, SocketAddr), ChangeError> {
        let spec = validate::session(field, &s, self)?;
        let labels = s.labels.get_or_insert_with(Default::default);
        if !labels.service.is_empty() && labels.version.is_empty() {
            // Sticky across updates: a session keeps the version it was placed on.
            let previous = self
                .sessions
                .get(&s.name)
                .and_then(|old| old.labels.as_ref());
            labels.version = match previous {
                Some(p) if p.service == labels.service && !p.version.is_empty() => {
                    p.version.clone()
                }
                _ => {
                    let key = if labels.user.is_empty() {
                        s.name.as_str()
                    } else {
                        labels.user.as_str()
                    };
                    let svc = &self.services[&labels.service];
                    canary::place(svc, self.canaries.get(&labels.service), key, "").to_string()
                }
            };
        }
        s.version = version;
        Ok((s, spec.ingress))
    }

    fn check_ingress_free(
        &self,
        field: &str,
        s: &pb::Session,
        ingress: SocketAddr,
        replaced: &dyn Fn(&str) -> bool,
    ) -> Result<(), ChangeError> {
        match self.ingress.get(&(s.appliance.clone(), ingress)) {
            Some(owner) if owner != &s.name && !replaced(owner) => Err(invalid(
                format!("{field}.ingress"),
                format!(
                    "{ingress} is already the ingress of session {owner:?} on appliance {:?}",
                    s.appliance
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Creates (`create`) or replaces (`!create`) one session.
    ///
    /// # Errors
    /// Invalid fields; `Exists` on create of an existing name; `NotFound` on update of a
    /// missing one.
    pub fn prepare_session(&self, s: pb::Session, create: bool) -> Result<Plan, ChangeError> {
        let mut plan = Plan::new(self);
        let exists = self.sessions.contains_key(&s.name);
        if create && exists {
            return Err(ChangeError::Exists(format!(
                "session {:?} exists; use UpdateSession to replace it",
                s.name
            )));
        }
        if !create && !exists {
            return Err(ChangeError::NotFound(format!("no session {:?}", s.name)));
        }
        let (s, ingress) = self.checked_session("session", s, plan.version)?;
        self.check_ingress_free("session", &s, ingress, &|_| false)?;
        plan.puts.push(Record::Session(s));
        Ok(plan)
    }

    /// Removes one session.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn prepare_remove_session(&self, name: &str) -> Result<Plan, ChangeError> {
        if !self.sessions.contains_key(name) {
            return Err(ChangeError::NotFound(format!("no session {name:?}")));
        }
        let mut plan = Plan::new(self);
        plan.deletes.push((Kind::Session, name.to_string()));
        Ok(plan)
    }

    /// Upserts and removes many sessions as one change.
    ///
    /// # Errors
    /// The first invalid entry, named by its index (`batch.upserts[7].ingress.address`).
    pub fn prepare_batch(
        &self,
        upserts: Vec<pb::Session>,
        removes: Vec<String>,
    ) -> Result<Plan, ChangeError> {
        let mut plan = Plan::new(self);
        if upserts.is_empty() && removes.is_empty() {
            return Err(invalid("batch", "no upserts and no removes"));
        }
        let mut removed = HashSet::with_capacity(removes.len());
        for (i, name) in removes.iter().enumerate() {
            if !self.sessions.contains_key(name) {
                return Err(invalid(
                    format!("batch.removes[{i}]"),
                    format!("no session {name:?}"),
                ));
            }
            if !removed.insert(name.as_str()) {
                return Err(invalid(
                    format!("batch.removes[{i}]"),
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        let names: HashSet<String> = upserts.iter().map(|s| s.name.clone()).collect();
        let replaced = |owner: &str| names.contains(owner) || removed.contains(owner);
        let mut seen_names: HashMap<&str, usize> = HashMap::with_capacity(upserts.len());
        let mut claimed: HashMap<(&str, SocketAddr), usize> = HashMap::with_capacity(upserts.len());
        let mut checked = Vec::with_capacity(upserts.len());
        for (i, s) in upserts.iter().enumerate() {
            if let Some(j) = seen_names.insert(s.name.as_str(), i) {
                return Err(invalid(
                    format!("batch.upserts[{i}].name"),
                    format!("{:?} is also batch.upserts[{j}]", s.name),
                ));
            }
            if removed.contains(s.name.as_str()) {
                return Err(invalid(
                    format!("batch.upserts[{i}].name"),
                    format!("{:?} is also removed in the same batch", s.name),
                ));
            }
        }
        for (i, s) in upserts.into_iter().enumerate() {
            let field = format!("batch.upserts[{i}]");
            let (s, ingress) = self.checked_session(&field, s, plan.version)?;
            self.check_ingress_free(&field, &s, ingress, &replaced)?;
            checked.push((s, ingress));
        }
        for (i, (s, ingress)) in checked.iter().enumerate() {
            if let Some(j) = claimed.insert((s.appliance.as_str(), *ingress), i) {
                return Err(invalid(
                    format!("batch.upserts[{i}].ingress"),
                    format!(
                        "{ingress} is also the ingress of batch.upserts[{j}] on appliance {:?}",
                        s.appliance
                    ),
                ));
            }
        }
        plan.puts = checked
            .into_iter()
            .map(|(s, _)| Record::Session(s))
            .collect();
        plan.deletes = removes.into_iter().map(|n| (Kind::Session, n)).collect();
        Ok(plan)
    }

    /// Sessions, routes, canaries and policies that use `version` of `service` (to refuse
    /// removing it).
    fn version_users(&self, service: &str, version: &str) -> Option<String> {
        if let Some(c) = self.canaries.get(service) {
            if c.weights
                .iter()
                .any(|w| w.version == version && w.weight > 0)
            {
                return Some(format!("the canary split of {service:?}"));
            }
        }
        if let Some(r) = self
            .routes
            .values()
            .find(|r| r.service == service && r.pin_version == version)
        {
            return Some(format!("route {:?}", r.name));
        }
        self.sessions
            .values()
            .find(|s| {
                s.labels
                    .as_ref()
                    .is_some_and(|l| l.service == service && l.version == version)
            })
            .map(|s| format!("session {:?}", s.name))
    }

    /// Creates or replaces a service.
    ///
    /// # Errors
    /// Invalid fields; a version still used elsewhere being dropped.
    pub fn prepare_service(&self, mut s: pb::Service) -> Result<Plan, ChangeError> {
        validate::service("service", &s)?;
        if let Some(old) = self.services.get(&s.name) {
            for g in &old.groups {
                if s.groups.iter().all(|n| n.version != g.version) {
                    if let Some(user) = self.version_users(&s.name, &g.version) {
                        return Err(ChangeError::InUse(format!(
                            "service.groups: version {:?} of {:?} is still used by {user}",
                            g.version, s.name
                        )));
                    }
                }
            }
        }
        let mut plan = Plan::new(self);
        s.version = plan.version;
        // A canary weight on a version no longer listed would fail validation later.
        if let Some(c) = self.canaries.get(&s.name) {
            if let Err(e) = validate::canary("canary", c, &SingleService(&s)) {
                return Err(ChangeError::InUse(format!(
                    "service: the canary split of {:?} would become invalid ({e})",
                    s.name
                )));
            }
        }
        plan.puts.push(Record::Service(s));
        Ok(plan)
    }

    /// Removes a service.
    ///
    /// # Errors
    /// `NotFound`; `InUse` while a route, canary, policy or session refers to it.
    pub fn prepare_remove_service(&self, name: &str) -> Result<Plan, ChangeError> {
        if !self.services.contains_key(name) {
            return Err(ChangeError::NotFound(format!("no service {name:?}")));
        }
        let user = self
            .routes
            .values()
            .find(|r| r.service == name)
            .map(|r| format!("route {:?}", r.name))
            .or_else(|| {
                self.canaries
                    .get(name)
                    .map(|_| "its canary split".to_string())
            })
            .or_else(|| {
                self.policies
                    .values()
                    .find(|p| p.destination == name)
                    .map(|p| format!("policy {:?}", p.name))
            })
            .or_else(|| {
                self.sessions
                    .values()
                    .find(|s| s.labels.as_ref().is_some_and(|l| l.service == name))
                    .map(|s| format!("session {:?}", s.name))
            });
        if let Some(user) = user {
            return Err(ChangeError::InUse(format!(
                "service {name:?} is still used by {user}"
            )));
        }
        let mut plan = Plan::new(self);
        plan.deletes.push((Kind::Service, name.to_string()));
        Ok(plan)
    }

    /// Creates or replaces a route.
    ///
    /// # Errors
    /// Invalid fields.
    pub fn prepare_route(&self, mut r: pb::Route) -> Result<Plan, ChangeError> {
        validate::route("route", &r, self)?;
        let mut plan = Plan::new(self);
        r.version = plan.version;
        plan.puts.push(Record::Route(r));
        Ok(plan)
    }

    /// Removes a route.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn prepare_remove_route(&self, name: &str) -> Result<Plan, ChangeError> {
        if !self.routes.contains_key(name) {
            return Err(ChangeError::NotFound(format!("no route {name:?}")));
        }
        let mut plan = Plan::new(self);
        plan.deletes.push((Kind::Route, name.to_string()));
        Ok(plan)
    }

    /// Sets a canary split.
    ///
    /// # Errors
    /// Invalid fields (weights not summing to 100, unknown service or version, ...).
    pub fn prepare_canary(&self, mut c: pb::Canary) -> Result<Plan, ChangeError> {
        validate::canary("canary", &c, self)?;
        let mut plan = Plan::new(self);
        c.version = plan.version;
        plan.puts.push(Record::Canary(c));
        Ok(plan)
    }

    /// Makes `version` the default of `service` with 100% of its split.
    ///
    /// # Errors
    /// Unknown service or version.
    pub fn prepare_promote(&self, service: &str, version: &str) -> Result<Plan, ChangeError> {
        let mut svc = self
            .services
            .get(service)
            .cloned()
            .ok_or_else(|| invalid("service", format!("unknown service {service:?}")))?;
        if svc.groups.iter().all(|g| g.version != version) {
            return Err(invalid(
                "version",
                format!("service {service:?} has no version {version:?}"),
            ));
        }
        let mut plan = Plan::new(self);
        svc.default_version = version.to_string();
        svc.version = plan.version;
        if let Some(c) = self.canaries.get(service) {
            let mut c = c.clone();
            c.weights = vec![pb::VersionWeight {
                version: version.to_string(),
                weight: 100,
            }];
            c.version = plan.version;
            plan.puts.push(Record::Canary(c));
        }
        plan.puts.push(Record::Service(svc));
        Ok(plan)
    }

    /// Gives the default version of `service` 100% of its split again.
    ///
    /// # Errors
    /// Unknown service; `NotFound` without a canary split.
    pub fn prepare_rollback(&self, service: &str) -> Result<Plan, ChangeError> {
        let svc = self
            .services
            .get(service)
            .ok_or_else(|| invalid("service", format!("unknown service {service:?}")))?;
        let mut c = self.canaries.get(service).cloned().ok_or_else(|| {
            ChangeError::NotFound(format!("service {service:?} has no canary split"))
        })?;
        let mut plan = Plan::new(self);
        c.weights = vec![pb::VersionWeight {
            version: svc.default_version.clone(),
            weight: 100,
        }];
        c.version = plan.version;
        plan.puts.push(Record::Canary(c));
        Ok(plan)
    }

    /// Creates or replaces a policy.
    ///
    /// # Errors
    /// Invalid fields.
    pub fn prepare_policy(&self, mut p: pb::Policy) -> Result<Plan, ChangeError> {
        validate::policy("policy", &p, self)?;
        let mut plan = Plan::new(self);
        p.version = plan.version;
        plan.puts.push(Record::Policy(p));
        Ok(plan)
    }

    /// Removes a policy.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn prepare_remove_policy(&self, name: &str) -> Result<Plan, ChangeError> {
        if !self.policies.contains_key(name) {
            return Err(ChangeError::NotFound(format!("no policy {name:?}")));
        }
        let mut plan = Plan::new(self);
        plan.deletes.push((Kind::Policy, name.to_string()));
        Ok(plan)
    }

    /// Applies a committed plan; returns what changed for watch streams.
    pub fn apply(&mut self, plan: Plan, committed_at: std::time::Instant) -> Change {
        let version = plan.version;
        let mut change = Change {
            version,
            sessions: HashMap::new(),
            mesh: false,
            committed_at,
        };
        for (kind, name) in plan.deletes {
            match kind {
                Kind::Session => {
                    if let Some(old) = self.sessions.remove(&name) {
                        self.unindex_session(&old, version);
                        change
                            .sessions
                            .entry(old.appliance.clone())
                            .or_default()
                            .push(SessionOp::Remove(name));
                    }
                }
                Kind::Service => change.mesh |= self.services.remove(&name).is_some(),
                Kind::Route => change.mesh |= self.routes.remove(&name).is_some(),
                Kind::Canary => change.mesh |= self.canaries.remove(&name).is_some(),
                Kind::Policy => change.mesh |= self.policies.remove(&name).is_some(),
                Kind::Appliance => {}
            }
        }
        for r in plan.puts {
            match r {
                Record::Session(s) => {
                    if let Some(old) = self.sessions.remove(&s.name) {
                        self.unindex_session(&old, version);
                        if old.appliance != s.appliance {
                            change
                                .sessions
                                .entry(old.appliance.clone())
                                .or_default()
                                .push(SessionOp::Remove(old.name.clone()));
                        }
                    }
                    self.index_session(&s);
                    let s = Arc::new(s);
                    change
                        .sessions
                        .entry(s.appliance.clone())
                        .or_default()
                        .push(SessionOp::Upsert(Arc::clone(&s)));
                    self.sessions
                        .insert(s.name.clone(), Arc::unwrap_or_clone(s));
                }
                Record::Service(s) => {
                    change.mesh = true;
                    self.services.insert(s.name.clone(), s);
                }
                Record::Route(r) => {
                    change.mesh = true;
                    self.routes.insert(r.name.clone(), r);
                }
                Record::Canary(c) => {
                    change.mesh = true;
                    self.canaries.insert(c.service.clone(), c);
                }
                Record::Policy(p) => {
                    change.mesh = true;
                    self.policies.insert(p.name.clone(), p);
                }
            }
        }
        if change.mesh {
            self.mesh_version = version;
        }
        self.version = version;
        change
    }
}

/// A catalog of one service (to re-check a canary against a service being replaced).
struct SingleService<'a>(&'a pb::Service);

impl Catalog for SingleService<'_> {
    fn service(&self, name: &str) -> Option<&pb::Service> {
        (self.0.name == name).then_some(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ep(a: &str, p: u32) -> Option<pb::Endpoint> {
        Some(pb::Endpoint {
            address: a.into(),
            port: p,
        })
    }

    fn session(name: &str, port: u32) -> pb::Session {
        pb::Session {
            name: name.into(),
            appliance: "pop-1".into(),
            ingress: ep("10.0.0.1", port),
            subscribers: vec![pb::Subscriber {
                endpoint: ep("10.0.0.2", 5000),
                egress_port: String::new(),
            }],
            ..Default::default()
        }
    }

    fn service() -> pb::Service {
        pb::Service {
            name: "encoder".into(),
            groups: ["v1", "v2"]
                .iter()
                .map(|v| pb::EndpointGroup {
                    version: (*v).into(),
                    endpoints: vec!["10.9.0.1:80".into()],
                })
                .collect(),
            default_version: "v1".into(),
            ..Default::default()
        }
    }

    fn commit(st: &mut State, prepare: impl FnOnce(&State) -> Result<Plan, ChangeError>) -> Change {
        let plan = prepare(st).unwrap();
        st.apply(plan, Instant::now())
    }

    #[test]
    fn batch_may_move_ingresses_between_sessions() {
        let mut st = State::default();
        commit(&mut st, |s| {
            s.prepare_batch(vec![session("a", 1000), session("b", 1001)], vec![])
        });
        // a takes b's ingress while b moves to a new one: valid as a whole.
        let ch = commit(&mut st, |s| {
            s.prepare_batch(vec![session("a", 1001), session("b", 1002)], vec![])
        });
        assert_eq!(ch.version, 2);
        assert_eq!(ch.sessions["pop-1"].len(), 2);
        // c cannot take a's ingress unless a goes away in the same batch.
        let e = st
            .prepare_batch(vec![session("c", 1001)], vec![])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("already the ingress of session \"a\""),
            "{e}"
        );
        commit(&mut st, |s| {
            s.prepare_batch(vec![session("c", 1001)], vec!["a".into()])
        });
        assert_eq!(st.sessions_of("pop-1").count(), 2);
        // Another appliance may use the same address.
        let mut other = session("d", 1001);
        other.appliance = "pop-2".into();
        commit(&mut st, |s| s.prepare_session(other, true));
    }

    #[test]
    fn services_in_use_cannot_lose_versions_or_go_away() {
        let mut st = State::default();
        commit(&mut st, |s| s.prepare_service(service()));
        let mut s = session("a", 1000);
        s.labels = Some(pb::Labels {
            service: "encoder".into(),
            version: "v2".into(),
            ..Default::default()
        });
        commit(&mut st, |st| st.prepare_session(s, true));
        let mut fewer = service();
        fewer.groups.truncate(1);
        let e = st.prepare_service(fewer).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service.groups: version \"v2\" of \"encoder\" is still used by session \"a\""
        );
        let e = st.prepare_remove_service("encoder").unwrap_err();
        assert!(matches!(e, ChangeError::InUse(_)), "{e:?}");
        commit(&mut st, |s| s.prepare_remove_session("a"));
        commit(&mut st, |s| s.prepare_remove_service("encoder"));
        assert!(st.services.is_empty());
    }

    #[test]
    fn promote_and_rollback() {
        let mut st = State::default();
        commit(&mut st, |s| s.prepare_service(service()));
        let e = st.prepare_rollback("encoder").unwrap_err();
        assert!(matches!(e, ChangeError::NotFound(_)));
        let canary = pb::Canary {
            service: "encoder".into(),
            weights: vec![
                pb::VersionWeight {
                    version: "v1".into(),
                    weight: 90,
                },
                pb::VersionWeight {
                    version: "v2".into(),
                    weight: 10,
                },
            ],
            ..Default::default()
        };
        commit(&mut st, |s| s.prepare_canary(canary));
        let ch = commit(&mut st, |s| s.prepare_rollback("encoder"));
        assert!(ch.mesh);
        assert_eq!(
            st.canaries["encoder"].weights,
            vec![pb::VersionWeight {
                version: "v1".into(),
                weight: 100
            }]
        );
        commit(&mut st, |s| s.prepare_promote("encoder", "v2"));
        assert_eq!(st.services["encoder"].default_version, "v2");
        assert_eq!(
            st.canaries["encoder"].weights,
            vec![pb::VersionWeight {
                version: "v2".into(),
                weight: 100
            }]
        );
        assert_eq!(st.mesh_version, st.version);
        assert!(st.prepare_promote("encoder", "v3").is_err());
    }
}
