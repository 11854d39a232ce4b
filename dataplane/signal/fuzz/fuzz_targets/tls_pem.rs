//! SVID, key and trust-bundle files the appliance reads: arbitrary bytes give an error, never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_signal::{Identity, TrustBundle};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(split);
    let _ = Identity::from_pem(a, b);
    let _ = TrustBundle::from_pem("pop.test", data);
});
