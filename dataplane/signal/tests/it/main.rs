//! The signaling lane with real clients and servers: mTLS on both legs with SVIDs from
//! popmesh-ctrld's CA, HTTP/1.1, HTTP/2, gRPC streaming, WebSockets, TCP pass-through,
//! authorization, canaries and resilience.

mod harness;
mod mtls;
mod resilience;
mod routing;
mod streams;
