//! Integration tests of `popmesh-wire`: property tests over whole packet views.
//!
//! - `roundtrip`: every `Repr` survives emit -> parse.
//! - `no_panic`: arbitrary (and nearly-valid) bytes never panic any view or accessor, and the
//!   invariants `new_checked` promises hold for whatever it accepts.
//! - `checksum`: every incremental checksum update equals a full recomputation.

mod checksum;
mod no_panic;
mod roundtrip;
