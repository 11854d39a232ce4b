//! The gRPC services (one struct, [`Api`], implements all of them over the shared [`Core`]).
//! Every handler first checks the caller's role (see [`crate::auth`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use popmesh_ctrl_api::pb::*;
use popmesh_ctrl_api::{validate, Role, SpiffeId};
use tonic::{Request, Response, Status, Streaming};

use crate::auth;
use crate::core::{Core, WriteError};
use crate::state::{ChangeError, Plan, State};
use crate::watch;

/// Largest page of ListSessions.
const MAX_PAGE: usize = 10_000;
const DEFAULT_PAGE: usize = 1_000;

/// Implements every service of `popmesh.ctrl.v1`.
#[derive(Debug, Clone)]
pub struct Api {
    core: Arc<Core>,
}

/// gRPC status for a refused or failed write.
pub fn status_of(e: WriteError) -> Status {
    match e {
        WriteError::Change(ChangeError::Invalid(v)) => Status::invalid_argument(v.to_string()),
        WriteError::Change(ChangeError::NotFound(m)) => Status::not_found(m),
        WriteError::Change(ChangeError::Exists(m)) => Status::already_exists(m),
        WriteError::Change(ChangeError::InUse(m)) => Status::failed_precondition(m),
        WriteError::Store(e) => {
            tracing::error!(error = %e, "commit failed");
            Status::unavailable(format!("the change was not stored: {e}"))
        }
    }
}

fn required<T>(field: &str, v: Option<T>) -> Result<T, Status> {
    v.ok_or_else(|| Status::invalid_argument(format!("{field}: required")))
}

impl Api {
    /// Handlers over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Api { core }
    }

    fn td(&self) -> &str {
        self.core.ca().trust_domain()
    }

    fn operator<T>(&self, req: &Request<T>) -> Result<SpiffeId, Status> {
        auth::operator(req, self.td())
    }

    /// Runs a write on a blocking thread (it waits for fsync).
    async fn write(
        &self,
        prepare: impl FnOnce(&State) -> Result<Plan, ChangeError> + Send + 'static,
    ) -> Result<u64, Status> {
        let core = Arc::clone(&self.core);
        tokio::task::spawn_blocking(move || core.write(prepare))
            .await
            .map_err(|e| Status::internal(format!("write task failed: {e}")))?
            .map_err(status_of)
    }

    async fn reply(
        &self,
        prepare: impl FnOnce(&State) -> Result<Plan, ChangeError> + Send + 'static,
    ) -> Result<Response<WriteReply>, Status> {
        let version = self.write(prepare).await?;
        Ok(Response::new(WriteReply { version }))
    }
}

#[tonic::async_trait]
impl session_service_server::SessionService for Api {
    async fn create_session(
        &self,
        req: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionReply>, Status> {
        let who = self.operator(&req)?;
        let s = required("session", req.into_inner().session)?;
        let name = s.name.clone();
        let version = self.write(move |st| st.prepare_session(s, true)).await?;
        tracing::info!(%who, session = %name, version, "session created");
        let session = self.core.state().sessions.get(&name).cloned();
        Ok(Response::new(CreateSessionReply { version, session }))
    }

    async fn update_session(
        &self,
        req: Request<UpdateSessionRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let s = required("session", req.into_inner().session)?;
        self.reply(move |st| st.prepare_session(s, false)).await
    }

    async fn remove_session(
        &self,
        req: Request<RemoveSessionRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let name = req.into_inner().name;
        self.reply(move |st| st.prepare_remove_session(&name)).await
    }

    async fn batch_sessions(
        &self,
        req: Request<BatchSessionsRequest>,
    ) -> Result<Response<BatchSessionsReply>, Status> {
        let who = self.operator(&req)?;
        let b = req.into_inner();
        let (upserted, removed) = (b.upserts.len(), b.removes.len());
        let version = self
            .write(move |st| st.prepare_batch(b.upserts, b.removes))
            .await?;
        tracing::info!(%who, upserted, removed, version, "session batch applied");
        Ok(Response::new(BatchSessionsReply {
            version,
            upserted: u32::try_from(upserted).unwrap_or(u32::MAX),
            removed: u32::try_from(removed).unwrap_or(u32::MAX),
        }))
    }

    async fn get_session(
        &self,
        req: Request<GetSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        self.operator(&req)?;
        let name = req.into_inner().name;
        self.core
            .state()
            .sessions
            .get(&name)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no session {name:?}")))
    }

    async fn list_sessions(
        &self,
        req: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsReply>, Status> {
        self.operator(&req)?;
        let r = req.into_inner();
        let page = match r.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let st = self.core.state();
        let start = if r.page_token.is_empty() {
            std::ops::Bound::Unbounded
        } else {
            std::ops::Bound::Excluded(r.page_token.clone())
        };
        let matches = |s: &Session| {
            let l = s.labels.clone().unwrap_or_default();
            (r.appliance.is_empty() || s.appliance == r.appliance)
                && (r.room.is_empty() || l.room == r.room)
                && (r.service.is_empty() || l.service == r.service)
        };
        let mut sessions = Vec::new();
        let mut next_page_token = String::new();
        for (_, s) in st.sessions.range((start, std::ops::Bound::Unbounded)) {
            if !matches(s) {
                continue;
            }
            if sessions.len() == page {
                next_page_token = sessions
                    .last()
                    .map(|l: &Session| l.name.clone())
                    .unwrap_or_default();
                break;
            }
            sessions.push(s.clone());
        }
        Ok(Response::new(ListSessionsReply {
            sessions,
            next_page_token,
            version: st.version,
        }))
    }

    async fn get_session_stats(
        &self,
        req: Request<GetSessionStatsRequest>,
    ) -> Result<Response<GetSessionStatsReply>, Status> {
        self.operator(&req)?;
        let name = req.into_inner().name;
        if !self.core.state().sessions.contains_key(&name) {
            return Err(Status::not_found(format!("no session {name:?}")));
        }
        Ok(Response::new(match self.core.stats(&name) {
            Some(r) => GetSessionStatsReply {
                stats: Some(r.stats),
                appliance: r.appliance,
                reported_at_unix_ms: r.at_ms,
            },
            None => GetSessionStatsReply {
                stats: None,
                appliance: String::new(),
                reported_at_unix_ms: 0,
            },
        }))
    }
}

#[tonic::async_trait]
impl mesh_service_server::MeshService for Api {
    async fn put_service(
        &self,
        req: Request<PutServiceRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let s = required("service", req.into_inner().service)?;
        self.reply(move |st| st.prepare_service(s)).await
    }

    async fn remove_service(
        &self,
        req: Request<RemoveServiceRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let name = req.into_inner().name;
        self.reply(move |st| st.prepare_remove_service(&name)).await
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesReply>, Status> {
        self.operator(&req)?;
        let st = self.core.state();
        Ok(Response::new(ListServicesReply {
            services: st.services.values().cloned().collect(),
            version: st.version,
        }))
    }

    async fn put_route(
        &self,
        req: Request<PutRouteRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let r = required("route", req.into_inner().route)?;
        self.reply(move |st| st.prepare_route(r)).await
    }

    async fn remove_route(
        &self,
        req: Request<RemoveRouteRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let name = req.into_inner().name;
        self.reply(move |st| st.prepare_remove_route(&name)).await
    }

    async fn list_routes(
        &self,
        req: Request<ListRoutesRequest>,
    ) -> Result<Response<ListRoutesReply>, Status> {
        self.operator(&req)?;
        let st = self.core.state();
        Ok(Response::new(ListRoutesReply {
            routes: st.routes.values().cloned().collect(),
            version: st.version,
        }))
    }
}

#[tonic::async_trait]
impl canary_service_server::CanaryService for Api {
    async fn set_canary(
        &self,
        req: Request<SetCanaryRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        let who = self.operator(&req)?;
        let c = required("canary", req.into_inner().canary)?;
        let service = c.service.clone();
        let r = self.reply(move |st| st.prepare_canary(c)).await?;
        tracing::info!(%who, %service, version = r.get_ref().version, "canary split set");
        Ok(r)
    }

    async fn get_canary(&self, req: Request<GetCanaryRequest>) -> Result<Response<Canary>, Status> {
        self.operator(&req)?;
        let service = req.into_inner().service;
        self.core
            .state()
            .canaries
            .get(&service)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("service {service:?} has no canary split")))
    }

    async fn list_canaries(
        &self,
        req: Request<ListCanariesRequest>,
    ) -> Result<Response<ListCanariesReply>, Status> {
        self.operator(&req)?;
        let st = self.core.state();
        Ok(Response::new(ListCanariesReply {
            canaries: st.canaries.values().cloned().collect(),
            version: st.version,
        }))
    }

    async fn promote(&self, req: Request<PromoteRequest>) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let r = req.into_inner();
        self.reply(move |st| st.prepare_promote(&r.service, &r.version))
            .await
    }

    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let service = req.into_inner().service;
        self.reply(move |st| st.prepare_rollback(&service)).await
    }

    async fn place(&self, req: Request<PlaceRequest>) -> Result<Response<PlaceReply>, Status> {
        self.operator(&req)?;
        let r = req.into_inner();
        let version = self
            .core
            .state()
            .place("service", &r.service, &r.key, &r.override_version)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(PlaceReply { version }))
    }
}

#[tonic::async_trait]
impl identity_service_server::IdentityService for Api {
    async fn issue_svid(
        &self,
        req: Request<IssueSvidRequest>,
    ) -> Result<Response<IssueSvidReply>, Status> {
        let who = auth::peer(&req, self.td())?;
        let r = req.into_inner();
        let (kind, ttl) =
            validate::svid_request("svid", r.kind, &r.namespace, &r.name, r.ttl_seconds)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match who.role() {
            Role::Operator => {}
            // Rotation: an appliance renews its own identity, for a key it keeps (a CSR).
            Role::Appliance
                if kind == IdentityKind::Appliance
                    && r.name == who.name()
                    && !r.csr_pem.is_empty() => {}
            Role::Appliance => {
                return Err(Status::permission_denied(format!(
                    "{who} may only renew its own identity (kind APPLIANCE, name {:?}) with a CSR",
                    who.name()
                )))
            }
            Role::Service => {
                return Err(Status::permission_denied(format!(
                    "{who} is not an operator identity; only operators issue SVIDs"
                )))
            }
        }
        let td = self.td();
        let id = match kind {
            IdentityKind::Operator => SpiffeId::operator(td, &r.name),
            IdentityKind::Appliance => SpiffeId::appliance(td, &r.name),
            _ => SpiffeId::new(td, &r.namespace, &r.name),
        }
        .map_err(|e| Status::invalid_argument(format!("svid: {e}")))?;
        let csr = (!r.csr_pem.is_empty()).then_some(r.csr_pem);
        let core = Arc::clone(&self.core);
        let issued = tokio::task::spawn_blocking(move || {
            core.ca().issue(
                &id,
                Duration::from_secs(u64::from(ttl)),
                csr.as_deref(),
                SystemTime::now(),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("signing task failed: {e}")))?
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(%who, id = %issued.id, ttl_s = ttl, "SVID issued");
        Ok(Response::new(IssueSvidReply {
            spiffe_id: issued.id.to_string(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem.unwrap_or_default(),
            chain_pem: issued.chain_pem,
            not_after_unix: issued.not_after_unix,
        }))
    }

    async fn get_trust_bundle(
        &self,
        req: Request<GetTrustBundleRequest>,
    ) -> Result<Response<TrustBundle>, Status> {
        // Any identity of the trust domain may read the bundle (services rotate with it).
        auth::peer(&req, self.td())?;
        Ok(Response::new(self.core.trust_bundle().clone()))
    }
}

#[tonic::async_trait]
impl policy_service_server::PolicyService for Api {
    async fn put_policy(
        &self,
        req: Request<PutPolicyRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let p = required("policy", req.into_inner().policy)?;
        self.reply(move |st| st.prepare_policy(p)).await
    }

    async fn remove_policy(
        &self,
        req: Request<RemovePolicyRequest>,
    ) -> Result<Response<WriteReply>, Status> {
        self.operator(&req)?;
        let name = req.into_inner().name;
        self.reply(move |st| st.prepare_remove_policy(&name)).await
    }

    async fn list_policies(
        &self,
        req: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesReply>, Status> {
        self.operator(&req)?;
        let st = self.core.state();
        Ok(Response::new(ListPoliciesReply {
            policies: st.policies.values().cloned().collect(),
            version: st.version,
        }))
    }
}

#[tonic::async_trait]
impl appliance_service_server::ApplianceService for Api {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let id = auth::appliance(&req, self.td())?;
        let r = req.into_inner();
        if r.name != id.name() {
            return Err(Status::permission_denied(format!(
                "name: {id} may register only as {:?}, not {:?}",
                id.name(),
                r.name
            )));
        }
        for (i, p) in r.media_ports.iter().enumerate() {
            validate::port_name(&format!("media_ports[{i}]"), p)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let core = Arc::clone(&self.core);
        let name = r.name.clone();
        let version = tokio::task::spawn_blocking(move || core.register(r))
            .await
            .map_err(|e| Status::internal(format!("register task failed: {e}")))?
            .map_err(|e| Status::unavailable(format!("registration was not stored: {e}")))?;
        tracing::info!(appliance = %name, version, "appliance registered");
        Ok(Response::new(RegisterReply { version }))
    }

    type WatchStream = watch::UpdateStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = auth::appliance(&req, self.td())?;
        if !self.core.state().appliances.contains_key(id.name()) {
            return Err(Status::failed_precondition(format!(
                "appliance {:?} is not registered; call Register first",
                id.name()
            )));
        }
        Ok(Response::new(watch::start(
            Arc::clone(&self.core),
            id.name().to_string(),
            req.into_inner(),
        )))
    }

    async fn list_appliances(
        &self,
        req: Request<ListAppliancesRequest>,
    ) -> Result<Response<ListAppliancesReply>, Status> {
        self.operator(&req)?;
        let names: Vec<String> = self.core.state().appliances.keys().cloned().collect();
        let appliances = names
            .iter()
            .filter_map(|n| self.core.appliance_status(n, false))
            .collect();
        Ok(Response::new(ListAppliancesReply {
            appliances,
            version: self.core.state().version,
        }))
    }

    async fn get_appliance_status(
        &self,
        req: Request<GetApplianceStatusRequest>,
    ) -> Result<Response<ApplianceStatus>, Status> {
        self.operator(&req)?;
        let r = req.into_inner();
        self.core
            .appliance_status(&r.name, r.resources)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no appliance {:?} is registered", r.name)))
    }
}
