//! Resilience building blocks, sans-IO: time comes in as an argument, so every rule is tested
//! exactly.
//!
//! A request through the lane: the service's [`Breaker`] grants a [`RequestPermit`] (or the
//! caller gets 503 at once); the version's [`Balancer`] picks an [`Endpoint`] by power of two
//! choices over peak-EWMA latency; [`Endpoint::start`] counts it in flight and
//! [`InFlight::finish`] records latency and outcome, which drives outlier ejection; a failed
//! idempotent request may be retried on another endpoint when the [`RetryBudget`] and the
//! breaker's retry limit allow.
//!
//! Everything is `Send + Sync` (atomics; a small mutex only for ejection bookkeeping, taken
//! on failures and state changes, not on every success), shared by all signaling cores.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency assumed for an endpoint without samples, so new endpoints get tried.
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// Decay time constant of the latency EWMA.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// How a request to an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// 500, 501, 505..
    Failure5xx,
    /// 502, 503, 504.
    GatewayError,
    /// No connection could be made.
    ConnectFailure,
    /// The connection broke before a response.
    Reset,
    /// No response head within the timeout.
    Timeout,
    /// The caller went away; says nothing about the endpoint.
    Cancelled,
}

impl Outcome {
    /// Whether it counts against the endpoint.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Success | Outcome::Cancelled)
    }
}

/// Outlier detection of one service.
#[derive(Debug, Clone)]
pub struct OutlierPolicy {
    /// Consecutive failures that eject an endpoint; 0: never ejected.
    pub consecutive_errors: u32,
    /// First ejection time; the n-th ejection in a row lasts `base_ejection * 2^(n-1)`.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// At most this percentage of a version's endpoints are left out of balancing.
    pub max_ejection_percent: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_errors: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 100,
        }
    }
}

/// An ejection that just happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Back in balancing from then.
    pub until: Instant,
    /// How long.
    pub duration: Duration,
}

#[derive(Debug, Default)]
struct EjectState {
    until: Option<Instant>,
    /// Ejections in a row (decays while healthy): drives the growing ejection time.
    streak: u32,
    /// When `streak` last changed, for its decay.
    since: Option<Instant>,
}

/// One upstream `host:port` of one service version.
#[derive(Debug)]
pub struct Endpoint {
    addr: String,
    policy: OutlierPolicy,
    /// Time origin of the atomics below.
    epoch: Instant,
    in_flight: AtomicU32,
    /// Peak-EWMA latency, ns (0: no sample yet).
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, ns since `epoch`.
    stamp_ns: AtomicU64,
    consecutive: AtomicU32,
    ejected: AtomicBool,
    ejections: AtomicU64,
    healthy: AtomicBool,
    eject: Mutex<EjectState>,
}

impl Endpoint {
    /// A new endpoint, healthy, without samples.
    pub fn new(addr: String, policy: OutlierPolicy) -> Endpoint {
        Endpoint {
            addr,
            policy,
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(0),
            stamp_ns: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            ejections: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            eject: Mutex::new(EjectState::default()),
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Counts a request in flight until the guard is finished or dropped.
    pub fn start(self: &Arc<Self>, now: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            endpoint: Some(self.clone()),
            started: now,
        }
    }

    /// Load estimate: EWMA latency times (requests in flight + 1), in ns.
    pub fn cost(&self, now: Instant) -> f64 {
        (self.latency_ns(now) as f64) * f64::from(self.in_flight.load(Ordering::Acquire) + 1)
    }

    /// The EWMA latency decayed to `now` (towards nothing: an idle endpoint looks faster as
    /// time passes, so it is tried again).
    fn latency_ns(&self, now: Instant) -> u64 {
        let ewma = self.ewma_ns.load(Ordering::Acquire);
        if ewma == 0 {
            return DEFAULT_RTT.as_nanos() as u64;
        }
        let age = self
            .ns(now)
            .saturating_sub(self.stamp_ns.load(Ordering::Acquire));
        let w = (-(age as f64) / EWMA_DECAY.as_nanos() as f64).exp();
        ((ewma as f64) * w).max(1.0) as u64
    }

    fn observe(&self, now: Instant, rtt: Duration) {
        let rtt = (rtt.as_nanos() as u64).max(1);
        let current = self.latency_ns(now);
        let prev_raw = self.ewma_ns.load(Ordering::Acquire);
        let next = if prev_raw == 0 || rtt > current {
            // Peak sensitive: a slow sample counts at once.
            rtt
        } else {
            let age = self
                .ns(now)
                .saturating_sub(self.stamp_ns.load(Ordering::Acquire));
            let w = (-(age as f64) / EWMA_DECAY.as_nanos() as f64).exp();
            ((current as f64) * w + (rtt as f64) * (1.0 - w)).max(1.0) as u64
        };
        self.ewma_ns.store(next, Ordering::Release);
        self.stamp_ns.store(self.ns(now), Ordering::Release);
    }

    fn record(&self, now: Instant, outcome: Outcome) -> Option<Ejection> {
        if outcome == Outcome::Cancelled {
            return None;
        }
        if !outcome.is_failure() {
            self.consecutive.store(0, Ordering::Release);
            return None;
        }
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        let limit = self.policy.consecutive_errors;
        if limit == 0 || n < limit {
            return None;
        }
        let mut st = self.eject.lock().unwrap_or_else(|p| p.into_inner());
        if st.until.is_some_and(|u| u > now) {
            return None; // already out
        }
        self.decay_streak(&mut st, now);
        let factor = 1u32.checked_shl(st.streak).unwrap_or(u32::MAX);
        let duration = self
            .policy
            .base_ejection
            .saturating_mul(factor)
            .min(self.policy.max_ejection);
        let until = now + duration;
        st.until = Some(until);
        st.streak = st.streak.saturating_add(1);
        st.since = Some(until);
        self.consecutive.store(0, Ordering::Release);
        self.ejected.store(true, Ordering::Release);
        self.ejections.fetch_add(1, Ordering::AcqRel);
        Some(Ejection { until, duration })
    }

    /// The streak drops by one per `base_ejection` spent back in balancing.
    fn decay_streak(&self, st: &mut EjectState, now: Instant) {
        if let Some(since) = st.since {
            let healthy_for = now.saturating_duration_since(since);
            let base = self.policy.base_ejection.max(Duration::from_millis(1));
            let steps = (healthy_for.as_nanos() / base.as_nanos()) as u32;
            if steps > 0 {
                st.streak = st.streak.saturating_sub(steps);
                st.since = Some(now);
            }
        }
    }

    /// Whether outlier detection has it out of balancing at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        if !self.ejected.load(Ordering::Acquire) {
            return false;
        }
        let mut st = self.eject.lock().unwrap_or_else(|p| p.into_inner());
        match st.until {
            Some(u) if u > now => true,
            _ => {
                st.until = None;
                self.ejected.store(false, Ordering::Release);
                false
            }
        }
    }

    /// From an active health checker: an unhealthy endpoint is not picked; a passed check
    /// readmits an ejected endpoint at once.
    pub fn set_health(&self, healthy: bool, now: Instant) {
        self.healthy.store(healthy, Ordering::Release);
        if healthy && self.ejected.load(Ordering::Acquire) {
            let mut st = self.eject.lock().unwrap_or_else(|p| p.into_inner());
            st.until = None;
            st.since = Some(now);
            self.consecutive.store(0, Ordering::Release);
            self.ejected.store(false, Ordering::Release);
        }
    }

    /// Healthy by the active checks (true without checks).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn available(&self, now: Instant) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    /// Times it was ejected.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Acquire)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// A request in flight to an endpoint.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Option<Arc<Endpoint>>,
    started: Instant,
}

impl InFlight {
    /// Records how the request ended; returns the ejection it caused, if any.
    pub fn finish(mut self, now: Instant, outcome: Outcome) -> Option<Ejection> {
        let e = self.endpoint.take()?;
        e.in_flight.fetch_sub(1, Ordering::AcqRel);
        if outcome != Outcome::Cancelled {
            e.observe(now, now.saturating_duration_since(self.started));
        }
        e.record(now, outcome)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(e) = self.endpoint.take() {
            e.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Power-of-two-choices over the endpoints of one version.
#[derive(Debug)]
pub struct Balancer {
    endpoints: Vec<Arc<Endpoint>>,
    max_ejection_percent: u32,
}

impl Balancer {
    /// Balances over `endpoints`; at most `max_ejection_percent` of them are left out.
    pub fn new(endpoints: Vec<Arc<Endpoint>>, max_ejection_percent: u32) -> Balancer {
        Balancer {
            endpoints,
            max_ejection_percent: max_ejection_percent.min(100),
        }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Picks the cheaper of two random available endpoints (`rand` supplies the randomness).
    ///
    /// When more endpoints are out (ejected or unhealthy) than `max_ejection_percent` allows
    /// (rounded down, at least one may always be out when there are two or more), the pick is
    /// among all of them ("panic mode", as in Envoy): better a maybe-bad endpoint than none.
    /// `None` only without endpoints.
    pub fn pick(&self, now: Instant, rand: u64) -> Option<&Arc<Endpoint>> {
        self.pick_excluding(now, rand, "")
    }

    /// [`Balancer::pick`] that avoids `exclude` (the endpoint that just failed) unless it is
    /// the only choice.
    pub fn pick_excluding(&self, now: Instant, rand: u64, exclude: &str) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let available: Vec<&Arc<Endpoint>> =
            self.endpoints.iter().filter(|e| e.available(now)).collect();
        let out = n - available.len();
        let allowed = ((n as u64 * u64::from(self.max_ejection_percent)) / 100)
            .max(u64::from(n > 1 && self.max_ejection_percent > 0)) as usize;
        let pool: Vec<&Arc<Endpoint>> = if out > allowed || available.is_empty() {
            self.endpoints.iter().collect()
        } else {
            available
        };
        let preferred: Vec<&Arc<Endpoint>> =
            pool.iter().copied().filter(|e| e.addr != exclude).collect();
        let pool = if preferred.is_empty() {
            pool
        } else {
            preferred
        };
        let m = pool.len();
        if m == 1 {
            return Some(pool[0]);
        }
        let a = (rand % m as u64) as usize;
        let mut b = ((rand >> 32) % (m as u64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let (ea, eb) = (pool[a], pool[b]);
        Some(if eb.cost(now) < ea.cost(now) { eb } else { ea })
    }
}

/// Circuit-breaker limits towards one service; 0: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Upstream connections.
    pub max_connections: u32,
    /// Requests waiting for the upstream's response head.
    pub max_pending_requests: u32,
    /// Requests (and upgraded streams) in progress.
    pub max_requests: u32,
    /// Retries in progress.
    pub max_retries: u32,
}

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `max_connections`.
    Connections,
    /// `max_pending_requests`.
    PendingRequests,
    /// `max_requests`.
    Requests,
    /// `max_retries`.
    Retries,
}

impl Overflow {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Connections => "connections",
            Overflow::PendingRequests => "pending_requests",
            Overflow::Requests => "requests",
            Overflow::Retries => "retries",
        }
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Overflow::Connections => "upstream connections",
            Overflow::PendingRequests => "pending requests",
            Overflow::Requests => "active requests",
            Overflow::Retries => "retries in progress",
        };
        write!(
            f,
            "circuit breaker open: the service is at its limit of {what}"
        )
    }
}

/// The counters of a service's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    limits: [AtomicU32; 4],
    counts: [AtomicU32; 4],
}

const CONN: usize = 0;
const PENDING: usize = 1;
const REQ: usize = 2;
const RETRY: usize = 3;

/// A granted slot; released on drop.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    slot: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.breaker.counts[self.slot].fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request slot.
pub type RequestPermit = Permit;
/// A pending-request slot.
pub type PendingPermit = Permit;
/// A retry slot.
pub type RetryPermit = Permit;
/// A connection slot.
pub type ConnectionPermit = Permit;

/// Counts in use: connections, pending, requests, retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerCounts {
    /// Upstream connections.
    pub connections: u32,
    /// Pending requests.
    pub pending_requests: u32,
    /// Active requests.
    pub requests: u32,
    /// Retries in progress.
    pub retries: u32,
}

impl Breaker {
    /// A breaker with `limits`, nothing in use.
    pub fn new(limits: Limits) -> Breaker {
        let b = Breaker {
            limits: Default::default(),
            counts: Default::default(),
        };
        b.set_limits(limits);
        b
    }

    /// New limits; what is in use stays (and is not cut short).
    pub fn set_limits(&self, l: Limits) {
        for (i, v) in [
            l.max_connections,
            l.max_pending_requests,
            l.max_requests,
            l.max_retries,
        ]
        .into_iter()
        .enumerate()
        {
            self.limits[i].store(v, Ordering::Release);
        }
    }

    fn acquire(self: &Arc<Self>, slot: usize, o: Overflow) -> Result<Permit, Overflow> {
        let limit = self.limits[slot].load(Ordering::Acquire);
        self.counts[slot]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            })
            .map_err(|_| o)?;
        Ok(Permit {
            breaker: self.clone(),
            slot,
        })
    }

    /// A request slot, or [`Overflow::Requests`].
    pub fn try_request(self: &Arc<Self>) -> Result<RequestPermit, Overflow> {
        self.acquire(REQ, Overflow::Requests)
    }

    /// A pending slot, or [`Overflow::PendingRequests`].
    pub fn try_pending(self: &Arc<Self>) -> Result<PendingPermit, Overflow> {
        self.acquire(PENDING, Overflow::PendingRequests)
    }

    /// A retry slot, or [`Overflow::Retries`].
    pub fn try_retry(self: &Arc<Self>) -> Result<RetryPermit, Overflow> {
        self.acquire(RETRY, Overflow::Retries)
    }

    /// A connection slot, or [`Overflow::Connections`].
    pub fn try_connection(self: &Arc<Self>) -> Result<ConnectionPermit, Overflow> {
        self.acquire(CONN, Overflow::Connections)
    }

    /// What is in use.
    pub fn counts(&self) -> BreakerCounts {
        let c = |i: usize| self.counts[i].load(Ordering::Acquire);
        BreakerCounts {
            connections: c(CONN),
            pending_requests: c(PENDING),
            requests: c(REQ),
            retries: c(RETRY),
        }
    }
}

/// Retries allowed: `min_per_sec * ttl` plus `ratio` of the requests of the last `ttl`, kept
/// in one-second slots (so the window is `ttl` rounded to whole seconds).
#[derive(Debug)]
pub struct RetryBudget {
    epoch: Instant,
    min_per_sec: u32,
    ratio: f32,
    /// Per slot: (second it counts, deposits, withdrawals).
    slots: Vec<(AtomicU64, AtomicU64, AtomicU64)>,
}

impl RetryBudget {
    /// A budget over `ttl` (at least 1 s) with `min_per_sec` free retries per second and
    /// `ratio` retries per request.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f32) -> RetryBudget {
        let n = ttl.as_secs().max(1) as usize;
        RetryBudget {
            epoch: Instant::now(),
            min_per_sec,
            ratio,
            slots: (0..n)
                .map(|_| {
                    (
                        AtomicU64::new(u64::MAX),
                        AtomicU64::new(0),
                        AtomicU64::new(0),
                    )
                })
                .collect(),
        }
    }

    fn slot(&self, now: Instant) -> &(AtomicU64, AtomicU64, AtomicU64) {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        let s = &self.slots[(sec % self.slots.len() as u64) as usize];
        let seen = s.0.load(Ordering::Acquire);
        if seen != sec
            && s.0
                .compare_exchange(seen, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            s.1.store(0, Ordering::Release);
            s.2.store(0, Ordering::Release);
        }
        s
    }

    fn window(&self, now: Instant) -> (u64, u64) {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        let n = self.slots.len() as u64;
        let mut dep = 0;
        let mut wd = 0;
        for s in &self.slots {
            let at = s.0.load(Ordering::Acquire);
            if at != u64::MAX && at <= sec && sec - at < n {
                dep += s.1.load(Ordering::Acquire);
                wd += s.2.load(Ordering::Acquire);
            }
        }
        (dep, wd)
    }

    /// Counts an original request.
    pub fn deposit(&self, now: Instant) {
        self.slot(now).1.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let (dep, wd) = self.window(now);
        let allowed = u64::from(self.min_per_sec) * self.slots.len() as u64
            + (dep as f64 * f64::from(self.ratio)) as u64;
        if wd >= allowed {
            return false;
        }
        self.slot(now).2.fetch_add(1, Ordering::AcqRel);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep(errors: u32) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(
            "10.0.0.1:80".into(),
            OutlierPolicy {
                consecutive_errors: errors,
                base_ejection: Duration::from_secs(10),
                max_ejection: Duration::from_secs(35),
                max_ejection_percent: 100,
            },
        ))
    }

    fn fail(e: &Arc<Endpoint>, t: Instant) -> Option<Ejection> {
        e.start(t).finish(t, Outcome::Failure5xx)
    }

    #[test]
    fn ejects_after_consecutive_failures_growing_and_capped() {
        let t0 = Instant::now();
        let e = ep(3);
        assert!(fail(&e, t0).is_none());
        assert!(fail(&e, t0).is_none());
        let ej = fail(&e, t0).expect("third failure ejects");
        assert_eq!(ej.duration, Duration::from_secs(10));
        assert!(e.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!e.is_ejected(t0 + Duration::from_secs(10)), "readmitted");
        // Fails again at once: twice as long, then capped at 35 s.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..2 {
            fail(&e, t1);
        }
        assert_eq!(fail(&e, t1).unwrap().duration, Duration::from_secs(20));
        let t2 = t1 + Duration::from_secs(20);
        for _ in 0..2 {
            fail(&e, t2);
        }
        assert_eq!(fail(&e, t2).unwrap().duration, Duration::from_secs(35));
        assert_eq!(e.ejections(), 3);
    }

    #[test]
    fn a_success_resets_the_count_and_cancel_is_neutral() {
        let t = Instant::now();
        let e = ep(2);
        fail(&e, t);
        e.start(t).finish(t, Outcome::Success);
        assert!(fail(&e, t).is_none());
        e.start(t).finish(t, Outcome::Cancelled);
        assert!(fail(&e, t).is_some(), "cancel did not reset");
    }

    #[test]
    fn streak_decays_while_healthy() {
        let t0 = Instant::now();
        let e = ep(1);
        assert_eq!(fail(&e, t0).unwrap().duration, Duration::from_secs(10));
        // Back at t0+10, healthy for 20 s (two base periods): the streak is gone.
        let t = t0 + Duration::from_secs(30);
        assert_eq!(fail(&e, t).unwrap().duration, Duration::from_secs(10));
    }

    #[test]
    fn health_check_pass_readmits_early_and_unhealthy_is_not_picked() {
        let t = Instant::now();
        let a = ep(1);
        let b = Arc::new(Endpoint::new("b:1".into(), OutlierPolicy::default()));
        fail(&a, t);
        assert!(a.is_ejected(t));
        a.set_health(true, t);
        assert!(!a.is_ejected(t));
        b.set_health(false, t);
        let bal = Balancer::new(vec![a.clone(), b], 50);
        for r in 0..100u64 {
            assert_eq!(
                bal.pick(t, r.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                    .unwrap()
                    .addr(),
                a.addr()
            );
        }
    }

    #[test]
    fn p2c_prefers_the_faster_endpoint() {
        let t = Instant::now();
        let fast = Arc::new(Endpoint::new("fast:1".into(), OutlierPolicy::default()));
        let slow = Arc::new(Endpoint::new("slow:1".into(), OutlierPolicy::default()));
        fast.start(t)
            .finish(t + Duration::from_millis(1), Outcome::Success);
        slow.start(t)
            .finish(t + Duration::from_millis(10), Outcome::Success);
        let third = Arc::new(Endpoint::new("mid:1".into(), OutlierPolicy::default()));
        third
            .start(t)
            .finish(t + Duration::from_millis(2), Outcome::Success);
        let bal = Balancer::new(vec![fast, slow, third], 100);
        let mut slow_picks = 0;
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if bal.pick(t, x).unwrap().addr() == "slow:1" {
                slow_picks += 1;
            }
        }
        // P2C never picks the most expensive of three when it compares it with another.
        assert_eq!(slow_picks, 0);
    }

    #[test]
    fn max_ejection_percent_enters_panic_mode() {
        let t = Instant::now();
        let eps: Vec<_> = (0..4)
            .map(|i| {
                Arc::new(Endpoint::new(
                    format!("e{i}:1"),
                    OutlierPolicy {
                        consecutive_errors: 1,
                        ..OutlierPolicy::default()
                    },
                ))
            })
            .collect();
        let bal = Balancer::new(eps.clone(), 50);
        fail(&eps[0], t);
        fail(&eps[1], t);
        // 2 of 4 out = 50%: allowed, never picked.
        for r in 0..200u64 {
            let p = bal.pick(t, r * 0x9e37_79b9).unwrap().addr().to_owned();
            assert!(p == "e2:1" || p == "e3:1", "{p}");
        }
        fail(&eps[2], t);
        // 3 of 4 out: over the limit, all are candidates again.
        let mut seen = std::collections::HashSet::new();
        for r in 0..2000u64 {
            seen.insert(
                bal.pick(t, r.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                    .unwrap()
                    .addr()
                    .to_owned(),
            );
        }
        assert!(seen.len() >= 3, "{seen:?}");
    }

    #[test]
    fn pick_excluding_avoids_the_failed_endpoint() {
        let t = Instant::now();
        let a = Arc::new(Endpoint::new("a:1".into(), OutlierPolicy::default()));
        let b = Arc::new(Endpoint::new("b:1".into(), OutlierPolicy::default()));
        let bal = Balancer::new(vec![a.clone(), b], 100);
        for r in 0..100 {
            assert_eq!(bal.pick_excluding(t, r, "a:1").unwrap().addr(), "b:1");
        }
        let only = Balancer::new(vec![a], 100);
        assert_eq!(only.pick_excluding(t, 7, "a:1").unwrap().addr(), "a:1");
        assert!(Balancer::new(vec![], 100).pick(t, 1).is_none());
    }

    #[test]
    fn breaker_limits_and_releases() {
        let b = Arc::new(Breaker::new(Limits {
            max_requests: 2,
            ..Limits::default()
        }));
        let p1 = b.try_request().unwrap();
        let _p2 = b.try_request().unwrap();
        assert_eq!(b.try_request().unwrap_err(), Overflow::Requests);
        drop(p1);
        let _p3 = b.try_request().unwrap();
        assert_eq!(b.counts().requests, 2);
        // Unlimited pending.
        let ps: Vec<_> = (0..1000).map(|_| b.try_pending().unwrap()).collect();
        assert_eq!(b.counts().pending_requests, 1000);
        drop(ps);
        assert_eq!(b.counts().pending_requests, 0);
    }

    #[test]
    fn breaker_holds_under_threads() {
        let b = Arc::new(Breaker::new(Limits {
            max_requests: 8,
            ..Limits::default()
        }));
        let peak = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                let peak = peak.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Ok(p) = b.try_request() {
                            peak.fetch_max(b.counts().requests, Ordering::AcqRel);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 8);
        assert_eq!(b.counts().requests, 0);
    }

    #[test]
    fn budget_allows_min_plus_ratio_then_refills() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.2);
        for _ in 0..100 {
            budget.deposit(t0);
        }
        // 1/s * 10 s + 20% of 100 = 30.
        let granted = (0..100).filter(|_| budget.try_withdraw(t0)).count();
        assert_eq!(granted, 30);
        // Ten seconds later the old slot has left the window: only the minimum again.
        let later = t0 + Duration::from_secs(11);
        let granted = (0..100).filter(|_| budget.try_withdraw(later)).count();
        assert!((10..=30).contains(&granted), "{granted}");
        let much_later = t0 + Duration::from_secs(40);
        let granted = (0..100).filter(|_| budget.try_withdraw(much_later)).count();
        assert_eq!(granted, 10);
    }

    proptest! {
        #[test]
        fn ejection_matches_a_simple_model(outcomes in proptest::collection::vec(0u8..3, 1..200)) {
            let t = Instant::now();
            let e = ep(3);
            let mut run = 0u32;
            let mut ejected = false;
            for o in outcomes {
                let outcome = match o { 0 => Outcome::Success, 1 => Outcome::GatewayError, _ => Outcome::Cancelled };
                let ej = e.start(t).finish(t, outcome);
                if ejected {
                    // While out (same instant) nothing ejects again.
                    prop_assert!(ej.is_none());
                    continue;
                }
                match outcome {
                    Outcome::Success => run = 0,
                    Outcome::GatewayError => run += 1,
                    _ => {}
                }
                prop_assert_eq!(ej.is_some(), run == 3);
                if run == 3 { ejected = true; }
            }
            prop_assert_eq!(e.is_ejected(t), ejected);
            prop_assert_eq!(e.in_flight(), 0);
        }

        #[test]
        fn breaker_counts_never_exceed_limits(limit in 1u32..10, ops in proptest::collection::vec(any::<bool>(), 1..200)) {
            let b = Arc::new(Breaker::new(Limits { max_retries: limit, ..Limits::default() }));
            let mut held = Vec::new();
            for take in ops {
                if take {
                    match b.try_retry() {
                        Ok(p) => held.push(p),
                        Err(_) => prop_assert_eq!(held.len() as u32, limit),
                    }
                } else {
                    held.pop();
                }
                prop_assert!(b.counts().retries <= limit);
                prop_assert_eq!(b.counts().retries, held.len() as u32);
            }
            drop(held);
            prop_assert_eq!(b.counts().retries, 0);
        }
    }
}
