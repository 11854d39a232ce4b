//! Integration tests of `popmesh-config` through its public API, as the appliance uses it.

mod configs;
mod props;
mod rules;
mod serialize;
