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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{EndpointGroup, VersionWeight};

    fn service() -> Service {
        Service {
            name: "encoder".into(),
            groups: ["v1", "v2"]
                .iter()
                .map(|v| EndpointGroup {
                    version: (*v).into(),
                    endpoints: vec!["10.0.0.1:80".into()],
                })
                .collect(),
            default_version: "v1".into(),
            ..Default::default()
        }
    }

    fn split(v2: u32) -> Canary {
        Canary {
            service: "encoder".into(),
            weights: vec![
                VersionWeight {
                    version: "v1".into(),
                    weight: 100 - v2,
                },
                VersionWeight {
                    version: "v2".into(),
                    weight: v2,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn growing_canary_keeps_its_users() {
        let s = service();
        let (c1, c5) = (split(1), split(5));
        for i in 0..20_000 {
            let key = format!("user-{i}");
            if place(&s, Some(&c1), &key, "") == "v2" {
                assert_eq!(place(&s, Some(&c5), &key, ""), "v2", "{key}");
            }
        }
    }

    #[test]
    fn override_and_defaults() {
        let s = service();
        assert_eq!(place(&s, None, "u", ""), "v1");
        assert_eq!(place(&s, Some(&split(0)), "u", "v2"), "v2");
        assert_eq!(place(&s, Some(&split(0)), "u", "v9"), "v1");
        assert_eq!(place(&s, Some(&split(100)), "u", ""), "v2");
    }
}
