//! Power-of-two-choices balancing over peak-EWMA cost, with Envoy-style panic mode.
//!
//! A pick walks the endpoint list twice (count, then select) and allocates nothing; endpoint
//! lists of one service version are short (tens), so that is cheaper than keeping an index.

use std::sync::Arc;
use std::time::Instant;

use super::endpoint::Endpoint;

/// The endpoints of one service version and the rule for how many may be out of rotation.
#[derive(Debug)]
pub struct Balancer {
    endpoints: Vec<Arc<Endpoint>>,
    max_ejection_percent: u32,
}

impl Balancer {
    /// A balancer over `endpoints`.
    ///
    /// `max_ejection_percent` sets how many endpoints may be out of rotation (ejected or failing
    /// their health check) before the balancer stops honouring that:
    /// `allowed = max(1, floor(len * max_ejection_percent / 100))` — like Envoy, at least one
    /// endpoint may always be out, whatever the percentage. Values above 100 act as 100. To
    /// turn ejection off, set `OutlierPolicy::consecutive_errors` to 0 instead.
    pub fn new(endpoints: Vec<Arc<Endpoint>>, max_ejection_percent: u32) -> Balancer {
        Balancer {
            endpoints,
            max_ejection_percent: max_ejection_percent.min(100),
        }
    }

    /// All endpoints, in rotation or not.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// How many endpoints may be out of rotation before panic mode (see [`Balancer::new`]).
    pub fn allowed_unavailable(&self) -> usize {
        let n = self.endpoints.len();
        (n * self.max_ejection_percent as usize / 100).max(1)
    }

    /// True if at `now` more endpoints are out of rotation than allowed, or none is left; the
    /// balancer then picks among all endpoints (panic mode), because sending traffic to
    /// possibly bad endpoints beats failing every request. Export it as a gauge.
    pub fn is_panic(&self, now: Instant) -> bool {
        let unavailable = self
            .endpoints
            .iter()
            .filter(|e| !e.is_available(now))
            .count();
        unavailable > self.allowed_unavailable() || unavailable == self.endpoints.len()
    }

    /// Pick an endpoint for a new request: two distinct endpoints chosen at random (from
    /// `rand`, any random `u64`) among those in rotation, the one with the lower
    /// [`Endpoint::cost`] wins (ties go to the first). In panic mode (see
    /// [`Balancer::is_panic`]) all endpoints are candidates. `None` only if the balancer is
    /// empty.
    pub fn pick(&self, now: Instant, rand: u64) -> Option<&Arc<Endpoint>> {
        self.choose(now, rand, None)
    }

    /// Like [`Balancer::pick`] but avoids the endpoint with address `exclude` (the one a retry
    /// just failed on). Falls back to it only if no other candidate exists.
    pub fn pick_excluding(&self, now: Instant, rand: u64, exclude: &str) -> Option<&Arc<Endpoint>> {
        self.choose(now, rand, Some(exclude))
    }

    fn choose(&self, now: Instant, rand: u64, exclude: Option<&str>) -> Option<&Arc<Endpoint>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let panic = self.is_panic(now);
        let candidate =
            |e: &Arc<Endpoint>| (panic || e.is_available(now)) && exclude != Some(e.addr());
        let count = self.endpoints.iter().filter(|e| candidate(e)).count();
        if count == 0 {
            // Only the excluded endpoint is left (or availability changed under us).
            return match exclude {
                Some(_) => self.choose(now, rand, None),
                None => self.endpoints.first(),
            };
        }
        let nth = |k: usize| self.endpoints.iter().filter(|e| candidate(e)).nth(k);
        let first = pick_index(rand as u32, count);
        let a = nth(first);
        if count == 1 {
            return a.or_else(|| self.endpoints.first());
        }
        let offset = 1 + pick_index((rand >> 32) as u32, count - 1);
        let b = nth((first + offset) % count);
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.cost(now) < a.cost(now) { b } else { a }),
            (a, b) => a.or(b).or_else(|| self.endpoints.first()),
        }
    }
}

/// Maps 32 random bits onto `0..n` (multiply-shift, no modulo bias worth mentioning).
fn pick_index(bits: u32, n: usize) -> usize {
    ((u64::from(bits) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::endpoint::{Outcome, OutlierPolicy};
    use proptest::prelude::*;
    use std::time::Duration;

    struct SplitMix(u64);
    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    fn eps(n: usize) -> Vec<Arc<Endpoint>> {
        let p = OutlierPolicy {
            consecutive_errors: 1,
            ..OutlierPolicy::default()
        };
        (0..n)
            .map(|i| Arc::new(Endpoint::new(format!("10.0.0.{i}:80"), p)))
            .collect()
    }

    fn set_latency(e: &Arc<Endpoint>, t0: Instant, ms: u64) {
        e.start(t0)
            .finish(t0 + Duration::from_millis(ms), Outcome::Success);
    }

    fn eject(e: &Arc<Endpoint>, now: Instant) {
        assert!(e.start(now).finish(now, Outcome::Reset).is_some());
    }

    #[test]
    fn empty_balancer_picks_nothing() {
        let b = Balancer::new(Vec::new(), 10);
        assert!(b.pick(Instant::now(), 7).is_none());
        assert!(b.pick_excluding(Instant::now(), 7, "x").is_none());
    }

    #[test]
    fn two_choices_prefer_lower_cost() {
        let t0 = Instant::now();
        let e = eps(2);
        set_latency(&e[0], t0, 10);
        set_latency(&e[1], t0, 2);
        let b = Balancer::new(e, 50);
        let now = t0 + Duration::from_millis(10);
        let mut r = SplitMix(1);
        for _ in 0..100 {
            assert_eq!(b.pick(now, r.next()).unwrap().addr(), "10.0.0.1:80");
        }
    }

    #[test]
    fn slow_endpoint_gets_well_under_fair_share() {
        let t0 = Instant::now();
        let e = eps(5);
        for (i, ep) in e.iter().enumerate() {
            set_latency(ep, t0, if i == 0 { 10 } else { 1 });
        }
        let now = t0 + Duration::from_millis(10);
        let b = Balancer::new(e, 10);
        let mut r = SplitMix(42);
        let mut held = Vec::new();
        let mut counts = [0usize; 5];
        for _ in 0..10_000 {
            let ep = b.pick(now, r.next()).unwrap();
            let i = b
                .endpoints()
                .iter()
                .position(|x| Arc::ptr_eq(x, ep))
                .unwrap();
            counts[i] += 1;
            held.push(ep.start(now)); // keep in flight: cost grows with load
        }
        // fair share is 2,000; equilibrium for 10x latency is ~250
        assert!(
            counts[0] > 0,
            "slow endpoint still gets some load: {counts:?}"
        );
        assert!(counts[0] < 600, "slow endpoint under its share: {counts:?}");
        for &c in &counts[1..] {
            assert!(
                (2_100..2_800).contains(&c),
                "fast ones spread evenly: {counts:?}"
            );
        }
    }

    #[test]
    fn new_endpoint_is_tried() {
        let t0 = Instant::now();
        let e = eps(2);
        set_latency(&e[0], t0, 20);
        let b = Balancer::new(e, 50);
        let now = t0 + Duration::from_millis(20);
        assert_eq!(b.pick(now, 3).unwrap().addr(), "10.0.0.1:80");
    }

    #[test]
    fn ejected_and_unhealthy_are_skipped() {
        let t0 = Instant::now();
        let e = eps(10);
        eject(&e[3], t0);
        e[4].set_health(false, t0);
        let b = Balancer::new(e, 20); // allowed = 2
        let mut r = SplitMix(5);
        for _ in 0..1_000 {
            let a = b.pick(t0, r.next()).unwrap().addr();
            assert!(a != "10.0.0.3:80" && a != "10.0.0.4:80", "{a}");
        }
        assert!(!b.is_panic(t0));
    }

    #[test]
    fn panic_mode_when_too_many_are_out() {
        let t0 = Instant::now();
        let e = eps(10);
        for ep in &e[..2] {
            eject(ep, t0);
        }
        let b = Balancer::new(e, 10); // allowed = 1, two out: panic
        assert!(b.is_panic(t0));
        let mut r = SplitMix(9);
        let mut saw_ejected = false;
        for _ in 0..1_000 {
            let a = b.pick(t0, r.next()).unwrap().addr();
            saw_ejected |= a == "10.0.0.0:80" || a == "10.0.0.1:80";
        }
        assert!(saw_ejected, "panic mode picks among all endpoints");
    }

    #[test]
    fn at_least_one_may_be_ejected() {
        let t0 = Instant::now();
        let e = eps(3);
        eject(&e[0], t0);
        let b = Balancer::new(e, 0);
        assert_eq!(b.allowed_unavailable(), 1);
        let mut r = SplitMix(11);
        for _ in 0..300 {
            assert_ne!(b.pick(t0, r.next()).unwrap().addr(), "10.0.0.0:80");
        }
    }

    #[test]
    fn single_ejected_endpoint_is_still_picked() {
        let t0 = Instant::now();
        let e = eps(1);
        eject(&e[0], t0);
        let b = Balancer::new(e, 100);
        assert_eq!(b.pick(t0, 0).unwrap().addr(), "10.0.0.0:80");
    }

    #[test]
    fn pick_excluding_prefers_another_endpoint() {
        let t0 = Instant::now();
        let e = eps(3);
        set_latency(&e[1], t0, 100);
        set_latency(&e[2], t0, 100);
        let b = Balancer::new(e, 10);
        let now = t0 + Duration::from_millis(100);
        let mut r = SplitMix(3);
        for _ in 0..300 {
            assert_ne!(
                b.pick_excluding(now, r.next(), "10.0.0.0:80")
                    .unwrap()
                    .addr(),
                "10.0.0.0:80"
            );
        }
        // only one endpoint in rotation: falls back to it
        let e = eps(2);
        eject(&e[1], t0);
        let b = Balancer::new(e, 50);
        assert_eq!(
            b.pick_excluding(t0, 1, "10.0.0.0:80").unwrap().addr(),
            "10.0.0.0:80"
        );
        let b = Balancer::new(eps(1), 50);
        assert_eq!(
            b.pick_excluding(t0, 1, "10.0.0.0:80").unwrap().addr(),
            "10.0.0.0:80"
        );
    }

    proptest! {
        #[test]
        fn never_picks_out_of_rotation_within_allowance(
            n in 1usize..30,
            pct in 0u32..=100,
            out in proptest::collection::vec(0u8..3, 30),
            rands in proptest::collection::vec(any::<u64>(), 1..50),
        ) {
            let t0 = Instant::now();
            let e = eps(n);
            for (ep, &o) in e.iter().zip(&out) {
                match o {
                    1 => eject(ep, t0),
                    2 => ep.set_health(false, t0),
                    _ => {}
                }
            }
            let b = Balancer::new(e, pct);
            let unavailable = b.endpoints().iter().filter(|x| !x.is_available(t0)).count();
            let within = unavailable <= b.allowed_unavailable() && unavailable < n;
            prop_assert_eq!(b.is_panic(t0), !within);
            for r in rands {
                let ep = b.pick(t0, r).expect("non-empty");
                if within {
                    prop_assert!(ep.is_available(t0));
                }
            }
        }

        #[test]
        fn two_choices_never_pick_the_most_expensive(
            lat in proptest::collection::vec(1u64..1_000, 2..20),
            rands in proptest::collection::vec(any::<u64>(), 1..50),
        ) {
            let t0 = Instant::now();
            let e = eps(lat.len());
            for (ep, &ms) in e.iter().zip(&lat) {
                set_latency(ep, t0, ms);
            }
            let now = t0 + Duration::from_secs(1);
            let b = Balancer::new(e, 10);
            let worst = b.endpoints().iter().map(|x| x.cost(now)).fold(0.0, f64::max);
            let ties = b.endpoints().iter().filter(|x| x.cost(now) == worst).count();
            for r in rands {
                let c = b.pick(now, r).unwrap().cost(now);
                if ties == 1 {
                    prop_assert!(c < worst);
                }
            }
        }
    }
}
