//! Canary placement: which version of a service a sticky key (a user id) gets.
//!
//! Deterministic and sticky: the key is hashed (FNV-1a, then the splitmix64 finalizer, no
//! per-process seed) into one of [`BUCKETS`] buckets; each percent of weight owns 100 buckets.
//! Versions other than the service's default own the lowest buckets, in name order; the default
//! version owns the rest. So while the weights stay the same a key always gets the same version,
//! and when a canary grows (1% -> 5% -> 100%) every key already on the canary stays there.

use crate::pb::{Canary, Service};

/// Buckets a key hashes into: one per basis point.
pub const BUCKETS: u64 = 10_000;

/// The bucket of `key` for `service`, in `0..BUCKETS`.
///
/// The service name is part of the hash so that the same users are not the canary population
/// of every service.
pub fn bucket(service: &str, key: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for b in service.bytes().chain([0xff]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // splitmix64 finalizer: FNV alone leaves low bits correlated for similar keys.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h % BUCKETS
}

/// The version `key` gets.
///
/// `override_version` (a tester's header) wins when it names a version of the service. Without a
/// canary (or with an empty split) every key gets the service's default version. `canary` is
/// assumed valid (see [`crate::validate::canary`]): weights sum to 100.
pub fn place<'a>(
    service: &'a Service,
    canary: Option<&'a Canary>,
    key: &str,
    override_version: &str,
) -> &'a str {
    if !override_version.is_empty() {
        if let Some(g) = service
            .groups
            .iter()
            .find(|g| g.version == override_version)
        {
            return &g.version;
        }
    }
    let Some(canary) = canary.filter(|c| !c.weights.is_empty()) else {
        return &service.default_version;
    };
    let b = bucket(&service.name, key);
    let mut others: Vec<_> = canary
        .weights
        .iter()
        .filter(|w| w.version != service.default_version && w.weight > 0)
        .collect();
    others.sort_by(|a, b| a.version.cmp(&b.version));
    let mut upto = 0u64;
    for w in &others {
        upto += u64::from(w.weight) * (BUCKETS / 100);
        if b < upto {
            return &w.version;
        }
    }
    // The default version owns the remaining buckets. If it has weight 0 the others cover
    // every bucket (weights sum to 100), so this is reached only for a default with weight.
    &service.default_version
}
