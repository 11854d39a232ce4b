//! The daemon's shared core: the in-memory [`State`], the [`Store`] it is committed to, the CA,
//! the change feed watch streams subscribe to, appliance runtime status and session stats.
//!
//! Writes are serialised by one lock: prepare (validate against the state, under a read lock so
//! readers go on), commit to redb (durable), apply to the state (a short write lock), publish the
//! change. A write is acknowledged to the client only after all four, so a reader that saw the
//! reply sees the change, and a crash after the reply cannot lose it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Instant, SystemTime};

use popmesh_ctrl_api::pb;
use tokio::sync::broadcast;

use crate::ca::Ca;
use crate::metrics::Metrics;
use crate::state::{Change, ChangeError, Plan, State};
use crate::store::{Kind, Store, StoreError, Write};

/// Changes kept for slow watch streams; one that falls further behind gets a snapshot.
const CHANGE_FEED_DEPTH: usize = 1024;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Refused by validation or because of other resources; nothing changed.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The store failed to commit; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the daemon knows of a connected (or once connected) appliance beyond its registration.
#[derive(Debug, Default, Clone)]
pub struct ApplianceRuntime {
    /// Open watch streams.
    pub streams: u32,
    /// Unix ms of the last disconnect (or of daemon start for registered appliances); 0 while
    /// connected.
    pub disconnected_since_ms: u64,
    /// Last version sent.
    pub sent_version: u64,
    /// Last version acknowledged.
    pub acked_version: u64,
    /// The last NACK since the last ACK.
    pub last_nack: Option<pb::Nack>,
}

/// Last stats reported for one session.
#[derive(Debug, Clone)]
pub struct ReportedStats {
    /// Reporting appliance.
    pub appliance: String,
    /// The numbers.
    pub stats: pb::SessionStats,
    /// Unix ms.
    pub at_ms: u64,
}

/// Shared by every RPC handler and watch stream.
#[derive(Debug)]
pub struct Core {
    state: RwLock<State>,
    store: Store,
    ca: Ca,
    trust_bundle: pb::TrustBundle,
    write_lock: Mutex<()>,
    changes: broadcast::Sender<Arc<Change>>,
    appliances: Mutex<HashMap<String, ApplianceRuntime>>,
    stats: Mutex<HashMap<String, ReportedStats>>,
    /// Set once the daemon stops: watch streams end so the server can drain.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Exported metrics.
    pub metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take the daemon down with it: the data under these locks
    // is replaced whole, never left half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unix time in ms.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Core {
    /// Loads the state from `store` and the CA from it.
    ///
    /// # Errors
    /// When the store cannot be read or holds no CA.
    pub fn load(store: Store, now: SystemTime) -> anyhow::Result<Self> {
        let ca = Ca::load(store.ca()?)?;
        let state = State::from_loaded(store.load()?);
        let rec = ca.record();
        let trust_bundle = pb::TrustBundle {
            trust_domain: rec.trust_domain.clone(),
            roots_pem: rec.roots_pem.clone(),
            intermediate: rec.intermediate,
        };
        let metrics = Metrics::new();
        metrics.config_version.set(state.version);
        metrics
            .sessions
            .set(i64::try_from(state.sessions.len()).unwrap_or(i64::MAX));
        let since = unix_ms(now);
        let appliances = state
            .appliances
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    ApplianceRuntime {
                        disconnected_since_ms: since,
                        ..Default::default()
                    },
                )
            })
            .collect();
        Ok(Core {
            state: RwLock::new(state),
            store,
            ca,
            trust_bundle,
            write_lock: Mutex::new(()),
            changes: broadcast::channel(CHANGE_FEED_DEPTH).0,
            appliances: Mutex::new(appliances),
            stats: Mutex::new(HashMap::new()),
            stopping: tokio::sync::watch::channel(false).0,
            metrics,
        })
    }

    /// A read view of the configuration.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The trust bundle.
    pub fn trust_bundle(&self) -> &pb::TrustBundle {
        &self.trust_bundle
    }

    /// Tells every watch stream to end (the daemon is stopping).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves to `true` once [`Core::stop`] was called.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Subscribes to committed changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Prepares, commits (durably), applies and publishes one change; returns its version.
    /// Blocking (fsync): call from a blocking thread.
    ///
    /// # Errors
    /// The preparation's refusal, or a store failure; either way nothing changed.
    pub fn write(
        &self,
        prepare: impl FnOnce(&State) -> Result<Plan, ChangeError>,
    ) -> Result<u64, WriteError> {
        let _serial = lock(&self.write_lock);
        let plan = prepare(&self.state())?;
        let version = plan.version;
        self.store.commit(Some(version), &plan.write())?;
        let committed_at = Instant::now();
        let change = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let change = state.apply(plan, committed_at);
            self.metrics
                .sessions
                .set(i64::try_from(state.sessions.len()).unwrap_or(i64::MAX));
            change
        };
        self.metrics.config_version.set(version);
        self.metrics.writes.inc();
        // No receivers is fine: no appliance is watching.
        let _ = self.changes.send(Arc::new(change));
        Ok(version)
    }

    /// Stores an appliance registration (not a config change: the version stays).
    ///
    /// # Errors
    /// A store failure.
    pub fn register(&self, reg: pb::RegisterRequest) -> Result<u64, StoreError> {
        let _serial = lock(&self.write_lock);
        let mut w = Write::default();
        w.put(Kind::Appliance, &reg.name, &reg);
        self.store.commit(None, &w)?;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        lock(&self.appliances).entry(reg.name.clone()).or_default();
        state.appliances.insert(reg.name.clone(), reg);
        Ok(state.version)
    }

    /// Runs `f` on an appliance's runtime status.
    pub fn with_runtime<R>(&self, name: &str, f: impl FnOnce(&mut ApplianceRuntime) -> R) -> R {
        f(lock(&self.appliances).entry(name.to_string()).or_default())
    }

    /// A copy of an appliance's runtime status.
    pub fn runtime(&self, name: &str) -> Option<ApplianceRuntime> {
        lock(&self.appliances).get(name).cloned()
    }

    /// Records stats reported by `appliance`.
    pub fn report_stats(&self, appliance: &str, report: pb::StatsReport, now: SystemTime) {
        let at_ms = unix_ms(now);
        let mut stats = lock(&self.stats);
        for s in report.sessions {
            stats.insert(
                s.name.clone(),
                ReportedStats {
                    appliance: appliance.to_string(),
                    stats: s,
                    at_ms,
                },
            );
        }
    }

    /// Last stats of a session.
    pub fn stats(&self, session: &str) -> Option<ReportedStats> {
        lock(&self.stats).get(session).cloned()
    }

    /// Status of one appliance; with `resources`, every resource of it that is not synced.
    pub fn appliance_status(&self, name: &str, resources: bool) -> Option<pb::ApplianceStatus> {
        let state = self.state();
        let reg = state.appliances.get(name)?;
        let rt = self.runtime(name).unwrap_or_default();
        let desired = state.desired_version(name);
        let rejected = rt
            .last_nack
            .as_ref()
            .is_some_and(|n| n.version > rt.acked_version);
        let sync = if rt.streams == 0 {
            pb::SyncState::Disconnected
        } else if rejected {
            pb::SyncState::Rejected
        } else if rt.acked_version >= desired {
            pb::SyncState::Synced
        } else {
            pb::SyncState::Pending
        };
        let mut status = pb::ApplianceStatus {
            name: name.to_string(),
            spiffe_id: popmesh_ctrl_api::SpiffeId::appliance(self.ca.trust_domain(), name)
                .map(|i| i.to_string())
                .unwrap_or_default(),
            software_version: reg.software_version.clone(),
            state: sync as i32,
            connected: rt.streams > 0,
            disconnected_since_unix_ms: if rt.streams > 0 {
                0
            } else {
                rt.disconnected_since_ms
            },
            sent_version: rt.sent_version,
            acked_version: rt.acked_version,
            last_nack: rt.last_nack.clone(),
            resources: Vec::new(),
        };
        if resources {
            let nack_errors: HashMap<(&str, &str), &str> = rt
                .last_nack
                .iter()
                .filter(|_| rejected)
                .flat_map(|n| n.errors.iter())
                .map(|e| ((e.kind.as_str(), e.name.as_str()), e.reason.as_str()))
                .collect();
            let mut push = |kind: &str, name: &str, version: u64| {
                let (state, reason) = if let Some(reason) = nack_errors.get(&(kind, name)) {
                    (pb::SyncState::Rejected, (*reason).to_string())
                } else if rt.streams == 0 && version > rt.acked_version {
                    (pb::SyncState::Disconnected, String::new())
                } else if version > rt.acked_version {
                    (pb::SyncState::Pending, String::new())
                } else {
                    return;
                };
                status.resources.push(pb::ResourceStatus {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    version,
                    state: state as i32,
                    reason,
                });
            };
            for s in state.sessions_of(name) {
                push("session", &s.name, s.version);
            }
            for s in state.services.values() {
                push("service", &s.name, s.version);
            }
            for r in state.routes.values() {
                push("route", &r.name, r.version);
            }
            for c in state.canaries.values() {
                push("canary", &c.service, c.version);
            }
            for p in state.policies.values() {
                push("policy", &p.name, p.version);
            }
        }
        Some(status)
    }
}
