//! popmesh media lane: the part of the appliance that moves RTP/RTCP without a proxy.
//!
//! Packets arrive in bursts from a [`Backend`] (io_uring sockets, DPDK ports, in-memory rings),
//! pass through one [`Pipeline`] (classify, flow lookup, source latch, RTP accounting, relay or
//! replicate) and leave through the same backend. The [`FlowTable`] is written by one control
//! thread and read lock-free by every worker.
//!
//! Invariants: nothing in this crate allocates, locks or reads a clock per packet; bad input
//! becomes a [`DropReason`] counter, never a panic or an error value.
#![forbid(unsafe_code)]

pub mod backend;
pub mod drop;
pub mod flow;
pub mod mem;
pub mod pipeline;
mod rewrite;
pub mod rtp_stats;
pub mod stats;
pub mod testkit;
pub mod worker;

pub use backend::{
    Backend, BackendCounters, Burst, CounterDesc, Framing, IdleWait, PacketBuf, Pkt, PortId, Tx,
    TxOutcome,
};
pub use drop::DropReason;
pub use flow::{Flow, FlowKey, FlowReader, FlowReaderFactory, FlowSpec, FlowTable, Target};
pub use pipeline::{Egress, Pipeline, PipelineConfig};
pub use stats::{BurstCounts, WorkerStats};
