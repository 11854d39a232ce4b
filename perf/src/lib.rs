//! RTP traffic generator, sink and reference relay for measuring popmesh.
//!
//! The binaries `popmesh-rtp` (`send`, `sink`), `popmesh-plain-relay` and `popmesh-impair` are
//! thin drivers; everything that decides something lives here and is tested
//! without sockets:
//! - [`probe`]: the probe datagram (RTP v2 header + 24-byte probe) view and repr.
//! - [`stats`]: loss, reorder, duplicates, RFC 3550 jitter and latency
//!   percentiles of what a sink received.
//! - [`pacing`]: the sender's token bucket.
//! - [`impair`]: the impairment relay's schedule (delay, jitter, loss windows) and decisions.
//! - [`stall`]: per-receiver stall detection (gaps between arrivals above a threshold).
//! - [`args`]: command-line value parsers and the loopback-only guard.
//! - [`report`]: the JSON documents the binaries write.
//! - [`hlog`]: the latency interval logs (`.hlog`) the sink and the room users write.
//! - [`sys`]: safe wrappers over the clock, `getrusage`, `recvmmsg` and
//!   `sendmmsg` (nix) shared by the binaries.
//!
//! Every run is bounded: each binary requires a duration and stops by itself.

#![forbid(unsafe_code)]

pub mod args;
pub mod hlog;
pub mod impair;
pub mod pacing;
pub mod probe;
pub mod report;
pub mod stall;
pub mod stats;
pub mod sys;

pub use pacing::{Pace, Pacer};
pub use probe::{ProbeError, ProbePacket, ProbeRepr};
pub use report::{ListenerReport, RelayReport, SendReport, SinkReport};
pub use stall::{Stall, StallDetector, StallRecord};
pub use stats::{ListenerStats, TrafficSummary, Verdict};
