//! The signaling lane: an L7 proxy for signaling, API and business calls on CPUs reserved apart
//! from the media workers.
#![forbid(unsafe_code)]

pub mod tls;
