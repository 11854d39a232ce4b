//! `popmesh-ctrld`, the popmesh control daemon.
//!
//! It owns the desired configuration of every appliance (media sessions, signaling services and
//! routes, canary splits, authorization policies) and the SPIFFE certificate authority, serves
//! the `popmesh.ctrl.v1` gRPC API over mutual TLS, and pushes versioned configuration to
//! appliances over watch streams that they ACK or NACK.
//!
//! Invariants:
//! - A write is answered only after its redb transaction committed durably; the global config
//!   version goes up by one per committed change; a refused change changes nothing.
//! - Only operator identities read or change configuration; appliance identities register,
//!   watch their own configuration and report status (see [`auth`]).
//!
//! Layout: [`store`] (redb) <- [`state`] (in-memory config, validation, change plans) <-
//! [`core`] (write path, change feed, appliance status) <- [`api`] and [`watch`] (gRPC) <-
//! [`server`] (listeners, TLS, bootstrap). [`ca`] issues certificates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod ca;
pub mod core;
pub mod metrics;
pub mod server;
pub mod state;
pub mod store;
pub mod watch;

pub use server::{bootstrap, serve, BootstrapOptions, Bound, ServeOptions};
