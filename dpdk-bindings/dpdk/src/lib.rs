//! Safe layer over DPDK for popmesh's poll-mode media workers: EAL lifetime, packet-buffer
//! pools, ports with per-worker RX/TX queue handles, and owned mbufs whose bytes can be viewed
//! with the same `AsRef<[u8]>`/`AsMut<[u8]>` packet views the rest of popmesh uses.
//!
//! Ownership invariants:
//! - [`Eal`] is initialised once per process and cleaned up after the last handle; every pool,
//!   port, queue and thread registration holds one.
//! - A [`Port`] holds its RX [`Mempool`]; queues hold their port. Mbufs hold nothing, so a pool
//!   must outlive its mbufs (see [`Mempool`]).
//! - [`Mbuf`] is a unique owner; after [`TxQueue::tx_burst`] the PMD owns what it accepted and
//!   the unsent tail is freed. Shared payloads (clones) are read-only; see the write-limit rule
//!   on [`Mbuf`].
//!
//! Without DPDK at build time (`DEP_DPDK_HAVE=0`, e.g. `POPMESH_NO_DPDK=1`), only
//! [`AVAILABLE`] (`false`) exists. This crate and `popmesh-dpdk-sys` are the only ones allowed
//! `unsafe`; every block says why it is sound.

#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

/// Whether this build has the DPDK backend (DPDK was found when building popmesh-dpdk-sys).
pub const AVAILABLE: bool = cfg!(popmesh_dpdk);

#[cfg(popmesh_dpdk)]
mod eal;
#[cfg(popmesh_dpdk)]
mod error;
#[cfg(popmesh_dpdk)]
mod mbuf;
#[cfg(popmesh_dpdk)]
mod mempool;
#[cfg(popmesh_dpdk)]
mod port;

#[cfg(popmesh_dpdk)]
pub use eal::{Eal, ThreadRegistration};
#[cfg(popmesh_dpdk)]
pub use error::Error;
#[cfg(popmesh_dpdk)]
pub use mbuf::{Mbuf, Segments};
#[cfg(popmesh_dpdk)]
pub use mempool::{Mempool, DEFAULT_DATA_ROOM, HEADROOM, MAX_CACHE_SIZE, MAX_NAME_LEN};
/// The raw bindings, for what the safe layer does not cover.
#[cfg(popmesh_dpdk)]
pub use popmesh_dpdk_sys as sys;
#[cfg(popmesh_dpdk)]
pub use port::{Link, Port, PortConfig, PortInfo, PortStats, RxQueue, TxQueue, RSS_IP_UDP};
