//! The popmesh control-plane API: protobuf package `popmesh.ctrl.v1` (prost messages, tonic
//! clients and servers in [`pb`]) and the pure-Rust rules every party applies to it.
//!
//! - [`validate`]: one function per resource; an error names the field and the rule
//!   (`canary.weights: weights sum to 101, must be 100`). The daemon runs them on every change,
//!   the CLI may run them before sending, the appliance agent before applying.
//! - [`spiffe`]: the SPIFFE ID form popmesh uses (`spiffe://<td>/ns/<ns>/sa/<name>`) and the role
//!   its namespace grants (operators change config, appliances watch theirs).
//! - [`canary`]: deterministic, sticky placement of a key (user id) on a service version.
//!
//! No I/O, no clock, no randomness.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod canary;
pub mod spiffe;
pub mod validate;

/// Generated protobuf messages and gRPC services of `popmesh.ctrl.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod pb {
    tonic::include_proto!("popmesh.ctrl.v1");

    /// Encoded `FileDescriptorSet` of the API, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/ctrl_v1_descriptor.bin"));
}

pub use canary::place;
pub use spiffe::{Role, SpiffeId, SpiffeIdError};
pub use validate::{Catalog, SessionSpec, ValidationError};
