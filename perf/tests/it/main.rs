//! End-to-end tests of the built binaries on loopback.

mod impair;
mod pipeline;
mod sink;
mod usage;
mod util;
