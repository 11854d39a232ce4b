//! Who is calling: the SPIFFE ID in the URI SAN of the client certificate (the TLS handshake
//! already verified it against the trust bundle), and what its role allows.

use popmesh_ctrl_api::{Role, SpiffeId};
use tonic::{Request, Status};

use crate::ca::spiffe_id_of;

/// The caller's identity.
///
/// # Errors
/// `Unauthenticated` without a client certificate or with one that has no valid SPIFFE ID;
/// `PermissionDenied` for another trust domain.
pub fn peer<T>(req: &Request<T>, trust_domain: &str) -> Result<SpiffeId, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let id = spiffe_id_of(leaf).map_err(Status::unauthenticated)?;
    if id.trust_domain() != trust_domain {
        return Err(Status::permission_denied(format!(
            "{id} is not of trust domain {trust_domain:?}"
        )));
    }
    Ok(id)
}

/// The caller, who must be an operator.
///
/// # Errors
/// As [`peer`]; `PermissionDenied` for any other role.
pub fn operator<T>(req: &Request<T>, trust_domain: &str) -> Result<SpiffeId, Status> {
    let id = peer(req, trust_domain)?;
    match id.role() {
        Role::Operator => Ok(id),
        _ => Err(Status::permission_denied(format!(
            "{id} is not an operator identity (spiffe://{trust_domain}/ns/operators/sa/<name>); \
             only operators may read or change configuration"
        ))),
    }
}

/// The caller, who must be an appliance; gives its name.
///
/// # Errors
/// As [`peer`]; `PermissionDenied` for any other role.
pub fn appliance<T>(req: &Request<T>, trust_domain: &str) -> Result<SpiffeId, Status> {
    let id = peer(req, trust_domain)?;
    match id.role() {
        Role::Appliance => Ok(id),
        _ => Err(Status::permission_denied(format!(
            "{id} is not an appliance identity (spiffe://{trust_domain}/ns/appliances/sa/<name>)"
        ))),
    }
}
