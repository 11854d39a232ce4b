//! The signaling lane: the mesh half of the appliance. Signaling, API and business calls
//! (HTTP/1.1, HTTP/2, gRPC, WebSocket, plain TCP) pass through an L7 proxy that runs on CPUs
//! reserved apart from the media workers, so media never waits on it.
//!
//! - [`tls`]: mutual TLS with SPIFFE X.509-SVIDs on both legs; SVID and trust bundle rotate in
//!   place.
//! - [`table`]: routes, services, canary splits and authorization policies compiled from one
//!   control-daemon config version; swapped atomically, never touching open connections.
//! - [`resilience`]: power-of-two-choices balancing over peak-EWMA latency, outlier ejection,
//!   circuit-breaker limits and a retry budget; [`health`] runs the active health checks.
//! - [`lane`]: the pinned single-threaded runtimes, one per signaling CPU, with `SO_REUSEPORT`
//!   listeners; [`proxy`] is what each of them runs.
//! - [`metrics`] (`popmesh_signal_*`), [`trace`] (W3C `traceparent`); `splice` copies
//!   upgraded and pass-through streams both ways without a buffer per idle stream.
#![forbid(unsafe_code)]

mod connect;
pub mod health;
pub mod lane;
pub mod metrics;
pub mod proxy;
pub mod resilience;
mod splice;
pub mod table;
pub mod tls;
pub mod tls_stream;
pub mod trace;

pub use lane::{Direction, Lane, LaneSpec, ListenerSpec, Protocol};
pub use metrics::Metrics;
pub use table::MeshTable;
pub use tls::{Identity, TlsState, TrustBundle};
