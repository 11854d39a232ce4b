//! One upstream endpoint: peak-EWMA latency, in-flight count, outlier ejection and active health.
//!
//! Everything here is shared by the per-CPU runtimes, so the hot path (`start`, `finish`, `cost`,
//! `is_ejected`) only touches atomics. The ejection bookkeeping (how often the endpoint was
//! ejected before, when it was readmitted) sits behind a `Mutex` that is only taken when an
//! endpoint is ejected or readmitted early by a health check.
//!
//! Time is always an argument. Instants are stored as offsets from the first instant an endpoint
//! is handed (its epoch); an instant earlier than that epoch counts as the epoch itself.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Latency assumed for an endpoint that has no sample yet (and the value an idle endpoint's
/// estimate relaxes back to). Deliberately optimistic, so that a new or long-idle endpoint is
/// tried: its first real response replaces the prior (a sample above the estimate always does).
pub const DEFAULT_RTT_PRIOR: Duration = Duration::from_millis(1);

/// Decay time constant of the latency estimate: a sample that is this old weighs `1/e` (~37 %)
/// of a fresh one, and an idle endpoint has moved ~63 % of the way back to the prior.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

const EWMA_DECAY_MS: f64 = 10_000.0;

/// How an upstream request ended, as far as load balancing and outlier detection care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A response that is not a server error (1xx to 4xx, and 5xx other than 502/503/504
    /// are [`Outcome::Failure5xx`]).
    Success,
    /// The upstream answered 500 or another 5xx that is not a gateway error.
    Failure5xx,
    /// The upstream answered 502, 503 or 504.
    GatewayError,
    /// No TCP/TLS connection could be established.
    ConnectFailure,
    /// The connection or stream was reset before a complete response.
    Reset,
    /// The request timed out waiting for the upstream.
    Timeout,
    /// The downstream went away or the proxy gave up for its own reasons; says nothing about
    /// the upstream. No latency sample, no outlier effect.
    Cancelled,
}

impl Outcome {
    /// True for the outcomes that count towards outlier ejection: 5xx, gateway error, connect
    /// failure, reset and timeout.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Success | Outcome::Cancelled)
    }
}

/// Outlier detection settings for the endpoints of one service (Envoy's consecutive-errors
/// detector with growing ejection time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Eject after this many failures in a row (see [`Outcome::is_failure`]); a success resets
    /// the count. `0` turns ejection off (failures are still counted for the admin view).
    pub consecutive_errors: u32,
    /// Length of the first ejection. The n-th ejection in a row lasts
    /// `base_ejection * 2^(n-1)`; each `base_ejection` spent admitted afterwards forgives one
    /// earlier ejection.
    pub base_ejection: Duration,
    /// Cap on the length of one ejection, however often the endpoint was ejected.
    pub max_ejection: Duration,
    /// At most this percentage of a service's endpoints are kept out of rotation; see
    /// [`crate::resilience::Balancer`], which applies it (pass this field to
    /// `Balancer::new`). Carried here so one config struct holds the whole policy.
    pub max_ejection_percent: u32,
}

impl Default for OutlierPolicy {
    /// Envoy's defaults: 5 consecutive errors, 30 s base ejection, 300 s cap, 10 %.
    fn default() -> Self {
        OutlierPolicy {
            consecutive_errors: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// An ejection that just happened, returned by [`InFlight::finish`] so the proxy can count and
/// log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// The endpoint is back in rotation at this instant (unless a health check readmits it
    /// earlier).
    pub until: Instant,
    /// How long this ejection lasts (`base_ejection * 2^k`, capped at `max_ejection`).
    pub duration: Duration,
}

/// Point-in-time view of an endpoint for `/metrics` and the admin endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSnapshot {
    /// `host:port` of the endpoint.
    pub addr: String,
    /// Requests started and not yet finished or dropped.
    pub in_flight: u32,
    /// Latency estimate in milliseconds used for balancing right now (the prior if no sample).
    pub ewma_ms: f64,
    /// False while `ewma_ms` is only the prior (no response seen yet).
    pub sampled: bool,
    /// Currently ejected by outlier detection.
    pub ejected: bool,
    /// Time left in the current ejection, if ejected.
    pub ejected_for: Option<Duration>,
    /// Ejections since the endpoint was created.
    pub ejections: u64,
    /// Last verdict of the active health checker (true until it says otherwise).
    pub healthy: bool,
    /// Failures in a row so far (reset by a success and by an ejection).
    pub consecutive_failures: u32,
}

#[derive(Debug, Default)]
struct EjectionBook {
    /// Ejections not yet forgiven; the next ejection lasts `base * 2^times_ejected`.
    times_ejected: u32,
    /// Nanoseconds since epoch at which the endpoint was (or will be) readmitted last.
    readmitted_at_ns: Option<u64>,
}

/// One upstream `host:port` of one service version. Share it as `Arc<Endpoint>`.
#[derive(Debug)]
pub struct Endpoint {
    addr: String,
    policy: OutlierPolicy,
    rtt_prior_ms: f32,
    epoch: OnceLock<Instant>,
    in_flight: AtomicU32,
    /// High 32 bits: estimate in ms as `f32` bits (negative = no sample); low 32 bits: time of
    /// the last sample in ms since epoch (wrapping; see `latency_ms`).
    ewma: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Nanoseconds since epoch until which the endpoint is ejected; 0 = not ejected.
    ejected_until_ns: AtomicU64,
    healthy: AtomicBool,
    ejections: AtomicU64,
    book: Mutex<EjectionBook>,
}

fn pack(est_ms: f32, stamp_ms: u32) -> u64 {
    (u64::from(est_ms.to_bits()) << 32) | u64::from(stamp_ms)
}

fn unpack(v: u64) -> (f32, u32) {
    (f32::from_bits((v >> 32) as u32), v as u32)
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Endpoint {
    /// A new endpoint: healthy, not ejected, no latency sample (cost uses
    /// [`DEFAULT_RTT_PRIOR`]).
    pub fn new(addr: String, outlier: OutlierPolicy) -> Endpoint {
        Endpoint::with_rtt_prior(addr, outlier, DEFAULT_RTT_PRIOR)
    }

    /// Like [`Endpoint::new`] with another latency prior, for services whose normal latency is
    /// far from [`DEFAULT_RTT_PRIOR`].
    pub fn with_rtt_prior(addr: String, outlier: OutlierPolicy, rtt_prior: Duration) -> Endpoint {
        Endpoint {
            addr,
            policy: outlier,
            rtt_prior_ms: (rtt_prior.as_secs_f64() * 1000.0) as f32,
            epoch: OnceLock::new(),
            in_flight: AtomicU32::new(0),
            ewma: AtomicU64::new(pack(-1.0, 0)),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ns: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            ejections: AtomicU64::new(0),
            book: Mutex::new(EjectionBook::default()),
        }
    }

    /// The `host:port` this endpoint was created with.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The outlier policy this endpoint was created with.
    pub fn outlier_policy(&self) -> &OutlierPolicy {
        &self.policy
    }

    fn ns(&self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_init(|| now);
        duration_ns(now.saturating_duration_since(epoch))
    }

    fn ms32(&self, now: Instant) -> u32 {
        (self.ns(now) / 1_000_000) as u32
    }

    /// Begin a request to this endpoint: counts it in flight until the guard is finished or
    /// dropped.
    pub fn start(self: &Arc<Self>, now: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: Arc::clone(self),
            start: now,
        }
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Latency estimate in ms at `now` and whether it comes from samples.
    ///
    /// Between samples the estimate relaxes toward the prior with time constant [`EWMA_DECAY`],
    /// so an endpoint that was slow once and then got no traffic is tried again after a while.
    /// The sample clock is stored with 1 ms resolution and wraps after ~49 days without any
    /// sample; an endpoint idle that long may look like it had a sample recently.
    fn latency_ms(&self, now: Instant) -> (f64, bool) {
        let (est, stamp) = unpack(self.ewma.load(Ordering::Relaxed));
        let prior = f64::from(self.rtt_prior_ms);
        if est < 0.0 {
            return (prior, false);
        }
        let idle_ms = f64::from(self.ms32(now).wrapping_sub(stamp));
        let w = (-idle_ms / EWMA_DECAY_MS).exp();
        (prior + (f64::from(est) - prior) * w, true)
    }

    /// Balancing cost at `now`: latency estimate in ms times `(in_flight + 1)`. Lower is better;
    /// an endpoint twice as slow with half the outstanding requests costs about the same.
    pub fn cost(&self, now: Instant) -> f64 {
        let (lat, _) = self.latency_ms(now);
        lat * f64::from(self.in_flight() + 1)
    }

    fn record_latency(&self, now: Instant, sample: Duration, failure: bool) {
        let r = (sample.as_secs_f64() * 1000.0) as f32;
        let t = self.ms32(now);
        let mut cur = self.ewma.load(Ordering::Relaxed);
        loop {
            let (est, stamp) = unpack(cur);
            let next = if est < 0.0 {
                // A fast failure (connection refused) must not make the endpoint look fast.
                if failure {
                    r.max(self.rtt_prior_ms)
                } else {
                    r
                }
            } else if r > est {
                r
            } else if failure {
                est
            } else {
                let dt = f64::from(t.wrapping_sub(stamp));
                let w = (-dt / EWMA_DECAY_MS).exp();
                (f64::from(est) * w + f64::from(r) * (1.0 - w)) as f32
            };
            match self.ewma.compare_exchange_weak(
                cur,
                pack(next, t),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// True while outlier detection keeps this endpoint out of rotation.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until_ns.load(Ordering::Acquire) > self.ns(now)
    }

    /// True if the balancer may pick this endpoint: healthy and not ejected.
    pub fn is_available(&self, now: Instant) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    /// Last verdict of the active health checker (true until it says otherwise).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Ejections since the endpoint was created.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Verdict of the active health checker. An unhealthy endpoint is not picked (outside
    /// panic mode). A passing check on an ejected endpoint readmits it at once (Envoy's
    /// `successful_active_health_check_uneject_host`), resets its failure count, and starts
    /// the forgiveness clock for earlier ejections at `now`.
    pub fn set_health(&self, healthy: bool, now: Instant) {
        self.healthy.store(healthy, Ordering::Relaxed);
        if healthy && self.is_ejected(now) {
            let now_ns = self.ns(now);
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            self.ejected_until_ns.store(0, Ordering::Release);
            self.consecutive_failures.store(0, Ordering::Relaxed);
            book.readmitted_at_ns = Some(now_ns);
        }
    }

    /// Feed one outcome to the outlier detector. Outcomes arriving while the endpoint is
    /// ejected are ignored: they come from requests started before the ejection.
    fn record_outcome(&self, now: Instant, outcome: Outcome) -> Option<Ejection> {
        if outcome == Outcome::Cancelled || self.is_ejected(now) {
            return None;
        }
        if !outcome.is_failure() {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return None;
        }
        let count = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = self.policy.consecutive_errors;
        if threshold == 0 || count != threshold {
            return None;
        }
        Some(self.eject(now))
    }

    fn eject(&self, now: Instant) -> Ejection {
        let now_ns = self.ns(now);
        let base_ns = duration_ns(self.policy.base_ejection);
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(back) = book.readmitted_at_ns {
            // One earlier ejection is forgiven per whole `base_ejection` spent admitted.
            if let Some(forgiven) = now_ns.saturating_sub(back).checked_div(base_ns) {
                let forgiven = u32::try_from(forgiven).unwrap_or(u32::MAX);
                book.times_ejected = book.times_ejected.saturating_sub(forgiven);
            }
        }
        let factor = 1u32.checked_shl(book.times_ejected).unwrap_or(u32::MAX);
        let duration = self
            .policy
            .base_ejection
            .saturating_mul(factor)
            .min(self.policy.max_ejection);
        book.times_ejected = book.times_ejected.saturating_add(1);
        let until_ns = now_ns.saturating_add(duration_ns(duration));
        book.readmitted_at_ns = Some(until_ns);
        self.ejected_until_ns.store(until_ns, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        Ejection {
            until: now + duration,
            duration,
        }
    }

    /// Point-in-time view for `/metrics` and the admin endpoint.
    pub fn snapshot(&self, now: Instant) -> EndpointSnapshot {
        let (ewma_ms, sampled) = self.latency_ms(now);
        let until = self.ejected_until_ns.load(Ordering::Acquire);
        let now_ns = self.ns(now);
        let ejected_for = (until > now_ns).then(|| Duration::from_nanos(until - now_ns));
        EndpointSnapshot {
            addr: self.addr.clone(),
            in_flight: self.in_flight(),
            ewma_ms,
            sampled,
            ejected: ejected_for.is_some(),
            ejected_for,
            ejections: self.ejections(),
            healthy: self.is_healthy(),
            consecutive_failures: self.consecutive_failures(),
        }
    }

    /// Instant until which the endpoint is ejected, if it is at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let until = self.ejected_until_ns.load(Ordering::Acquire);
        if until <= self.ns(now) {
            return None;
        }
        // `ns` above has set the epoch.
        self.epoch.get().map(|e| *e + Duration::from_nanos(until))
    }
}

/// A request in flight to one endpoint (RAII). Call [`InFlight::finish`] with the outcome;
/// dropping it unfinished counts as [`Outcome::Cancelled`]. Holds an `Arc<Endpoint>`, so it can
/// move into a spawned task.
#[derive(Debug)]
#[must_use = "dropping the guard at once ends the request as cancelled"]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    start: Instant,
}

impl InFlight {
    /// The endpoint this request went to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// When the request started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// End the request at `now` with `outcome`: records `now - start` into the latency estimate
    /// (failures only ever raise it and keep it from relaxing toward the prior, so fast or
    /// repeated failures cannot attract traffic; `Cancelled` records nothing), feeds the outlier detector, and returns the ejection this outcome
    /// caused, if any.
    pub fn finish(self, now: Instant, outcome: Outcome) -> Option<Ejection> {
        if outcome == Outcome::Cancelled {
            return None;
        }
        let ep = &self.endpoint;
        ep.record_latency(
            now,
            now.saturating_duration_since(self.start),
            outcome.is_failure(),
        );
        ep.record_outcome(now, outcome)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(n: u32, base_s: u64, max_s: u64) -> OutlierPolicy {
        OutlierPolicy {
            consecutive_errors: n,
            base_ejection: Duration::from_secs(base_s),
            max_ejection: Duration::from_secs(max_s),
            max_ejection_percent: 100,
        }
    }

    fn ep(p: OutlierPolicy) -> Arc<Endpoint> {
        Arc::new(Endpoint::new("10.0.0.1:80".into(), p))
    }

    fn fail_n(e: &Arc<Endpoint>, now: Instant, n: u32) -> Option<Ejection> {
        let mut last = None;
        for _ in 0..n {
            last = e.start(now).finish(now, Outcome::Failure5xx);
        }
        last
    }

    #[test]
    fn ejects_after_n_failures_not_before() {
        let t0 = Instant::now();
        let e = ep(policy(3, 10, 300));
        assert!(fail_n(&e, t0, 2).is_none());
        assert!(!e.is_ejected(t0));
        let ej = fail_n(&e, t0, 1).expect("third failure ejects");
        assert_eq!(ej.duration, Duration::from_secs(10));
        assert_eq!(ej.until, t0 + Duration::from_secs(10));
        assert!(e.is_ejected(t0 + Duration::from_millis(9_999)));
        assert!(!e.is_ejected(t0 + Duration::from_secs(10)), "readmitted");
        assert_eq!(e.ejections(), 1);
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let e = ep(policy(3, 10, 300));
        fail_n(&e, t0, 2);
        assert!(e.start(t0).finish(t0, Outcome::Success).is_none());
        assert!(fail_n(&e, t0, 2).is_none());
        assert!(!e.is_ejected(t0));
        assert_eq!(e.consecutive_failures(), 2);
    }

    #[test]
    fn cancelled_has_no_effect() {
        let t0 = Instant::now();
        let e = ep(policy(1, 10, 300));
        let g = e.start(t0);
        assert_eq!(e.in_flight(), 1);
        drop(g);
        assert_eq!(e.in_flight(), 0);
        assert!(e
            .start(t0)
            .finish(t0 + Duration::from_secs(5), Outcome::Cancelled)
            .is_none());
        assert!(!e.is_ejected(t0));
        assert!(!e.snapshot(t0).sampled);
    }

    #[test]
    fn ejection_grows_doubling_and_is_capped() {
        let t0 = Instant::now();
        let e = ep(policy(1, 10, 35));
        let mut t = t0;
        let mut got = Vec::new();
        for _ in 0..4 {
            let ej = fail_n(&e, t, 1).expect("ejects");
            got.push(ej.duration.as_secs());
            t = ej.until; // fail again right at readmission
        }
        assert_eq!(got, vec![10, 20, 35, 35]);
    }

    #[test]
    fn ejection_count_is_forgiven_while_admitted() {
        let t0 = Instant::now();
        let e = ep(policy(1, 10, 300));
        let ej1 = fail_n(&e, t0, 1).unwrap(); // 10 s, times=1
        let ej2 = fail_n(&e, ej1.until, 1).unwrap(); // 20 s, times=2
        assert_eq!(ej2.duration.as_secs(), 20);
        // 10 s admitted forgives one: next is 20 s again, not 40 s.
        let t = ej2.until + Duration::from_secs(10);
        let ej3 = fail_n(&e, t, 1).unwrap();
        assert_eq!(ej3.duration.as_secs(), 20);
        // 9.999 s admitted forgives nothing: 40 s.
        let t = ej3.until + Duration::from_millis(9_999);
        assert_eq!(fail_n(&e, t, 1).unwrap().duration.as_secs(), 40);
    }

    #[test]
    fn failures_while_ejected_are_ignored() {
        let t0 = Instant::now();
        let e = ep(policy(2, 10, 300));
        let stragglers: Vec<_> = (0..5).map(|_| e.start(t0)).collect();
        fail_n(&e, t0, 2).unwrap();
        for g in stragglers {
            assert!(g
                .finish(t0 + Duration::from_secs(1), Outcome::Reset)
                .is_none());
        }
        let back = t0 + Duration::from_secs(10);
        assert!(!e.is_ejected(back));
        assert_eq!(e.consecutive_failures(), 0);
        assert_eq!(e.ejections(), 1);
    }

    #[test]
    fn zero_threshold_never_ejects() {
        let t0 = Instant::now();
        let e = ep(policy(0, 10, 300));
        assert!(fail_n(&e, t0, 100).is_none());
        assert!(!e.is_ejected(t0));
    }

    #[test]
    fn passing_health_check_readmits_early() {
        let t0 = Instant::now();
        let e = ep(policy(1, 10, 300));
        fail_n(&e, t0, 1).unwrap();
        let t1 = t0 + Duration::from_secs(3);
        e.set_health(false, t1);
        assert!(e.is_ejected(t1) && !e.is_healthy());
        e.set_health(true, t1);
        assert!(e.is_available(t1));
        assert_eq!(e.ejected_until(t1), None);
        // forgiveness counts from the early readmission: 10 s later one ejection is forgiven.
        let ej = fail_n(&e, t1 + Duration::from_secs(10), 1).unwrap();
        assert_eq!(ej.duration.as_secs(), 10);
    }

    #[test]
    fn unhealthy_is_not_available() {
        let t0 = Instant::now();
        let e = ep(OutlierPolicy::default());
        e.set_health(false, t0);
        assert!(!e.is_available(t0));
        assert!(!e.is_ejected(t0));
    }

    #[test]
    fn latency_prior_peak_and_decay() {
        let t0 = Instant::now();
        let e = ep(OutlierPolicy::default());
        assert_eq!(e.cost(t0), 1.0);
        let g = e.start(t0);
        assert_eq!(e.cost(t0), 2.0, "in-flight doubles the cost");
        g.finish(t0 + Duration::from_millis(50), Outcome::Success);
        let t1 = t0 + Duration::from_millis(50);
        assert!((e.cost(t1) - 50.0).abs() < 1e-3);
        // a 10 s sample is above the estimate: it replaces it (peak)
        e.start(t1)
            .finish(t1 + Duration::from_secs(10), Outcome::Success);
        let t2 = t1 + Duration::from_secs(10);
        assert!((e.cost(t2) - 10_000.0).abs() < 1e-2, "{}", e.cost(t2));
        // a 20 ms sample ~one time constant later is blended with weight 1 - exp(-dt/10 s)
        e.start(t2 + Duration::from_secs(10))
            .finish(t2 + Duration::from_millis(10_020), Outcome::Success);
        let t3 = t2 + Duration::from_millis(10_020);
        let w = (-10_020.0f64 / 10_000.0).exp();
        let want = 10_000.0 * w + 20.0 * (1.0 - w);
        assert!((e.cost(t3) - want).abs() < 0.05, "{} vs {want}", e.cost(t3));
        // idle: relaxes toward the 1 ms prior
        let idle = e.snapshot(t3 + Duration::from_secs(200)).ewma_ms;
        assert!(idle < 1.001 && idle > 1.0, "{idle}");
        let half = e.snapshot(t3 + Duration::from_secs(10)).ewma_ms;
        assert!(
            (half - (1.0 + (want - 1.0) * (-1.0f64).exp())).abs() < 0.05,
            "{half}"
        );
    }

    #[test]
    fn fast_failures_do_not_lower_latency() {
        let t0 = Instant::now();
        let e = ep(policy(0, 10, 300));
        e.start(t0)
            .finish(t0 + Duration::from_millis(40), Outcome::Success);
        let t1 = t0 + Duration::from_millis(40);
        for i in 0..10 {
            let t = t1 + Duration::from_secs(i);
            e.start(t).finish(t, Outcome::ConnectFailure);
        }
        // failures keep the estimate fresh: a failing endpoint does not relax toward the prior
        let t = t1 + Duration::from_secs(9);
        let snap = e.snapshot(t);
        assert!((snap.ewma_ms - 40.0).abs() < 1e-3, "{snap:?}");
        assert_eq!(snap.consecutive_failures, 10);
    }

    /// Model of the ejection rules, in whole seconds.
    #[derive(Default)]
    struct Model {
        consecutive: u32,
        until: Option<u64>,
        times: u32,
        back: Option<u64>,
        ejections: u64,
    }

    impl Model {
        fn step(&mut self, t: u64, fail: bool, n: u32, base: u64, max: u64) -> Option<u64> {
            if self.until.is_some_and(|u| u > t) {
                return None;
            }
            if !fail {
                self.consecutive = 0;
                return None;
            }
            self.consecutive += 1;
            if self.consecutive != n {
                return None;
            }
            if let Some(b) = self.back {
                self.times = self.times.saturating_sub(((t - b) / base) as u32);
            }
            let d = (base << self.times.min(20)).min(max);
            self.times += 1;
            self.until = Some(t + d);
            self.back = Some(t + d);
            self.consecutive = 0;
            self.ejections += 1;
            Some(d)
        }
    }

    proptest! {
        #[test]
        fn ejection_matches_model(
            n in 1u32..5,
            base in 1u64..20,
            max in 1u64..200,
            steps in proptest::collection::vec((0u64..15, any::<bool>()), 1..200),
        ) {
            let t0 = Instant::now();
            let e = ep(policy(n, base, max));
            let mut m = Model::default();
            let mut t = 0;
            for (dt, fail) in steps {
                t += dt;
                let now = t0 + Duration::from_secs(t);
                let outcome = if fail { Outcome::Timeout } else { Outcome::Success };
                let got = e.start(now).finish(now, outcome).map(|ej| ej.duration.as_secs());
                let want = m.step(t, fail, n, base, max);
                prop_assert_eq!(got, want, "at t={}", t);
                prop_assert_eq!(e.is_ejected(now), m.until.is_some_and(|u| u > t));
                prop_assert_eq!(e.ejections(), m.ejections);
                prop_assert_eq!(e.consecutive_failures(), m.consecutive);
            }
        }
    }
}
