//! popmesh media workers on DPDK ports.
//!
//! [`DpdkEnv::start`] turns `media.backend = "dpdk"` into a running DPDK environment: EAL (from
//! `[media.dpdk]`, see [`eal_args()`]), one packet pool sized by
//! [`DpdkConfig::pool_size`](popmesh_config::DpdkConfig::pool_size), every `media.ports` device
//! configured with one receive and one transmit queue per media worker, and per port an
//! exception TAP: a kernel interface with the port's MAC and address, so ARP, ping and any
//! non-media traffic are answered by the kernel as if the port were its own.
//!
//! Each media worker takes its [`WorkerQueues`] to its pinned core, registers the thread with
//! EAL and runs the shared pipeline over a [`DpdkBackend`]: frames are rewritten in place in
//! their mbufs, and fan-out copies are a header mbuf chained to the shared payload when the
//! ports can send chained mbufs.
//!
//! Without DPDK on the build machine (see `dpdk-bindings/README.md`) only [`eal_args()`] and
//! [`AVAILABLE`] exist, and the appliance refuses `backend = "dpdk"` with a clear message.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(popmesh_dpdk)]
mod backend;
pub mod eal_args;
#[cfg(popmesh_dpdk)]
mod error;
#[cfg(popmesh_dpdk)]
mod setup;

#[cfg(popmesh_dpdk)]
pub use backend::{DpdkBackend, Frame, WorkerQueues, TAP_POLL_INTERVAL};
pub use eal_args::{eal_args, tap_names, TapNames};
#[cfg(popmesh_dpdk)]
pub use error::SetupError;
#[cfg(popmesh_dpdk)]
pub use setup::{DpdkEnv, PortInfo, PortSet};

/// Whether this build has the DPDK backend (DPDK was found when it was compiled).
pub const AVAILABLE: bool = cfg!(popmesh_dpdk);
