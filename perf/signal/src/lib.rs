//! Shared pieces of the signaling benchmarks: `popmesh-signal-bench` (the lane against calling
//! the service directly) and `popmesh-rooms` (the room service and user simulator of the
//! capacity harness's control-plane scenario).
//!
//! - [`ws`]: the server side of a WebSocket upgrade over hyper.
//! - [`rooms`]: the sans-IO parts of `popmesh-rooms`: the open-loop arrival schedule, source
//!   addresses, join requests, failure reasons and the JSON summary the harness reads.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod rooms;
pub mod ws;
