//! popmesh media lane.
#![forbid(unsafe_code)]

pub mod backend;
