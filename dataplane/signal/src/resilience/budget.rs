//! Retry budget (linkerd2 / Finagle): retries may add at most a fixed ratio of the original
//! traffic on top of a small fixed reserve, so a struggling service is not hit by a retry storm.
//!
//! Within any window of `ttl`, the number of retries allowed is
//! `min_retries_per_sec * ttl_secs + retry_ratio * deposits`, where deposits are the original
//! requests made in that window.
//!
//! Precision: time is cut into whole seconds (counted from the first instant the budget sees).
//! A deposit or withdrawal counts while it is less than `ttl_secs` slots old, so it lives between
//! `ttl - 1 s` and `ttl`. The ratio is applied in units of 1/1,000,000. Each second has one slot
//! for deposits and one for withdrawals, each a single atomic (second stamp + count), so the
//! budget is lock-free; a withdrawal increments first and checks after (undoing if over), so
//! concurrent retries can be refused spuriously at the edge but never exceed the budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest supported `ttl`; longer values are clamped to this.
pub const MAX_TTL: Duration = Duration::from_secs(300);

/// Largest accepted `retry_ratio` (1000 retries per request); larger values are clamped.
pub const MAX_RETRY_RATIO: f32 = 1000.0;

/// A per-second counter: high 32 bits = second index + 1 (0 = empty), low 32 bits = count.
#[derive(Debug, Default)]
struct Slot(AtomicU64);

impl Slot {
    fn add(&self, stamp: u32) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = if (cur >> 32) as u32 == stamp {
                cur.saturating_add(1)
                    .min((u64::from(stamp) << 32) | u64::from(u32::MAX))
            } else {
                (u64::from(stamp) << 32) | 1
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    fn undo(&self, stamp: u32) {
        let mut cur = self.0.load(Ordering::Relaxed);
        // If the slot has moved on to a later second, our increment is gone already.
        while (cur >> 32) as u32 == stamp && cur as u32 > 0 {
            match self
                .0
                .compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Count if the slot belongs to a second in `(stamp - window, stamp]`.
    fn count_since(&self, stamp: u32, window: u32) -> u64 {
        let v = self.0.load(Ordering::Acquire);
        let s = (v >> 32) as u32;
        if s != 0 && s <= stamp && stamp - s < window {
            v & 0xFFFF_FFFF
        } else {
            0
        }
    }
}

/// Retry budget of one service, shared by all CPUs.
#[derive(Debug)]
pub struct RetryBudget {
    ttl_secs: u32,
    reserve: u64,
    ratio_ppm: u64,
    epoch: OnceLock<Instant>,
    deposits: Box<[Slot]>,
    withdrawals: Box<[Slot]>,
}

impl Default for RetryBudget {
    /// linkerd2's defaults: 10 s window, 10 retries/s reserve, 20 % of requests.
    fn default() -> Self {
        RetryBudget::new(Duration::from_secs(10), 10, 0.2)
    }
}

impl RetryBudget {
    /// A budget allowing `min_retries_per_sec * ttl_secs + retry_ratio * requests` retries per
    /// window of `ttl`. `ttl` is rounded up to whole seconds, at least 1 s, at most
    /// [`MAX_TTL`]; `retry_ratio` is clamped to `0..=MAX_RETRY_RATIO` (NaN counts as 0).
    pub fn new(ttl: Duration, min_retries_per_sec: u32, retry_ratio: f32) -> RetryBudget {
        let ttl = ttl.min(MAX_TTL);
        let mut ttl_secs = ttl.as_secs() as u32;
        if ttl.subsec_nanos() > 0 || ttl_secs == 0 {
            ttl_secs += 1;
        }
        let ratio = if retry_ratio.is_nan() {
            0.0
        } else {
            retry_ratio.clamp(0.0, MAX_RETRY_RATIO)
        };
        let slots = || (0..ttl_secs).map(|_| Slot::default()).collect::<Box<[_]>>();
        RetryBudget {
            ttl_secs,
            reserve: u64::from(min_retries_per_sec) * u64::from(ttl_secs),
            ratio_ppm: (f64::from(ratio) * 1e6).round() as u64,
            epoch: OnceLock::new(),
            deposits: slots(),
            withdrawals: slots(),
        }
    }

    /// Window length in whole seconds.
    pub fn ttl_secs(&self) -> u32 {
        self.ttl_secs
    }

    fn stamp(&self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_init(|| now);
        let secs = now.saturating_duration_since(epoch).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX - 1) + 1
    }

    fn slot<'a>(&self, slots: &'a [Slot], stamp: u32) -> &'a Slot {
        &slots[(stamp % self.ttl_secs) as usize]
    }

    fn sum(&self, slots: &[Slot], stamp: u32) -> u64 {
        slots
            .iter()
            .map(|s| s.count_since(stamp, self.ttl_secs))
            .sum()
    }

    /// Record one original (non-retry) request at `now`.
    pub fn deposit(&self, now: Instant) {
        let stamp = self.stamp(now);
        self.slot(&self.deposits, stamp).add(stamp);
    }

    /// Retries allowed in the window ending at `now` (used or not).
    pub fn allowed(&self, now: Instant) -> u64 {
        let stamp = self.stamp(now);
        self.allowed_at(stamp)
    }

    fn allowed_at(&self, stamp: u32) -> u64 {
        let deposits = self.sum(&self.deposits, stamp);
        let from_ratio = u128::from(deposits) * u128::from(self.ratio_ppm) / 1_000_000;
        self.reserve
            .saturating_add(u64::try_from(from_ratio).unwrap_or(u64::MAX))
    }

    /// Retries made in the window ending at `now`.
    pub fn withdrawn(&self, now: Instant) -> u64 {
        let stamp = self.stamp(now);
        self.sum(&self.withdrawals, stamp)
    }

    /// Ask to make one retry at `now`. True if the budget allows it (and it is counted);
    /// false means do not retry, return the failure.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let stamp = self.stamp(now);
        let slot = self.slot(&self.withdrawals, stamp);
        slot.add(stamp);
        if self.sum(&self.withdrawals, stamp) > self.allowed_at(stamp) {
            slot.undo(stamp);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn drain(b: &RetryBudget, now: Instant) -> u64 {
        let mut n = 0;
        while b.try_withdraw(now) {
            n += 1;
            assert!(n < 1_000_000, "budget never runs out");
        }
        n
    }

    #[test]
    fn reserve_plus_ratio_then_refuses() {
        let t0 = Instant::now();
        let b = RetryBudget::default();
        for _ in 0..100 {
            b.deposit(t0);
        }
        // 10/s * 10 s + 0.2 * 100
        assert_eq!(b.allowed(t0), 120);
        assert_eq!(drain(&b, t0), 120);
        assert!(!b.try_withdraw(t0 + Duration::from_millis(500)));
        b.deposit(t0);
        b.deposit(t0);
        b.deposit(t0);
        b.deposit(t0);
        b.deposit(t0);
        assert!(b.try_withdraw(t0), "5 more requests earn one retry");
        assert!(!b.try_withdraw(t0));
    }

    #[test]
    fn refills_after_ttl() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.5);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert_eq!(drain(&b, t0), 15);
        let t = t0 + Duration::from_millis(9_999);
        assert!(!b.try_withdraw(t), "still inside the window");
        // at 10 s the slot of second 0 has expired: deposits and withdrawals are gone
        let t = t0 + Duration::from_secs(10);
        assert_eq!(b.withdrawn(t), 0);
        assert_eq!(b.allowed(t), 10);
        assert_eq!(drain(&b, t), 10);
    }

    #[test]
    fn window_slides_per_second() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(3), 0, 1.0);
        for s in 0..3 {
            b.deposit(t0 + Duration::from_secs(s));
        }
        assert_eq!(b.allowed(t0 + Duration::from_secs(2)), 3);
        assert_eq!(b.allowed(t0 + Duration::from_secs(3)), 2);
        assert_eq!(b.allowed(t0 + Duration::from_secs(5)), 0);
    }

    #[test]
    fn ratio_is_exact_for_decimal_values() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(1), 0, 0.7);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert_eq!(b.allowed(t0), 7);
    }

    #[test]
    fn ttl_rounds_up_and_clamps() {
        assert_eq!(RetryBudget::new(Duration::ZERO, 1, 0.1).ttl_secs(), 1);
        assert_eq!(
            RetryBudget::new(Duration::from_millis(2_500), 1, 0.1).ttl_secs(),
            3
        );
        assert_eq!(
            RetryBudget::new(Duration::from_secs(9_999), 1, 0.1).ttl_secs(),
            300
        );
        let b = RetryBudget::new(Duration::from_secs(1), 0, f32::NAN);
        b.deposit(Instant::now());
        assert_eq!(b.allowed(Instant::now()), 0);
    }

    #[test]
    fn concurrent_withdrawals_never_exceed() {
        let t0 = Instant::now();
        let b = Arc::new(RetryBudget::new(Duration::from_secs(10), 5, 0.0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || (0..1_000).filter(|_| b.try_withdraw(t0)).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(total <= 50, "{total}");
        assert_eq!(b.withdrawn(t0), total as u64);
        // one thread at a time afterwards gets exactly what is left
        assert_eq!(drain(&b, t0) as usize, 50 - total);
    }

    proptest! {
        #[test]
        fn matches_sliding_window_model(
            ttl in 1u64..6,
            min in 0u32..4,
            ratio_pct in 0u32..200,
            ops in proptest::collection::vec((0u64..1_500, any::<bool>()), 1..300),
        ) {
            let t0 = Instant::now();
            let ratio = ratio_pct as f32 / 100.0;
            let b = RetryBudget::new(Duration::from_secs(ttl), min, ratio);
            b.allowed(t0); // pins the budget's second boundaries to t0, like the model
            let ratio_ppm = (f64::from(ratio) * 1e6).round() as u64;
            let mut deps: Vec<u64> = Vec::new();
            let mut wds: Vec<u64> = Vec::new();
            let mut t_ms = 0u64;
            for (dt, is_retry) in ops {
                t_ms += dt;
                let now = t0 + Duration::from_millis(t_ms);
                let sec = t_ms / 1000;
                let live = |v: &Vec<u64>| v.iter().filter(|&&s| sec - s < ttl).count() as u64;
                if is_retry {
                    let allowed = u64::from(min) * ttl + live(&deps) * ratio_ppm / 1_000_000;
                    let want = live(&wds) < allowed;
                    prop_assert_eq!(b.try_withdraw(now), want);
                    if want {
                        wds.push(sec);
                    }
                } else {
                    b.deposit(now);
                    deps.push(sec);
                }
            }
        }
    }
}
