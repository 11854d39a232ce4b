//! Sans-IO token-bucket pacer for the sender.
//!
//! Tokens accrue at `rate_pps` on the caller's monotonic clock. The pacer
//! hands out sends of at most `batch` packets and, when it is short of
//! tokens, the time to wait for the next send. It waits for a *minimum send*
//! of several packets at high rates so the sender wakes at most about
//! [`MAX_WAKEUPS_PER_S`] times a second (or once per full batch, if a batch
//! is smaller than `rate / MAX_WAKEUPS_PER_S`) instead of once per packet, and for
//! one packet at low rates so low-rate traffic is not bursty. The bucket
//! holds up to [`CATCH_UP_NS`] worth of tokens (at least one batch) so a
//! late wake-up (timer slack) is caught up instead of lowering the rate.

/// Upper bound the pacer aims for on sender wake-ups per second.
pub const MAX_WAKEUPS_PER_S: u64 = 10_000;
/// Time's worth of tokens the bucket can hold for catching up. 2 ms lost
/// 3-25 % of the rate on a loaded 2-core host (wake-ups delayed by the
/// scheduler for longer than that); 10 ms holds the rate within 0.1 %.
pub const CATCH_UP_NS: u64 = 10_000_000;

const NS_PER_S: u128 = 1_000_000_000;

/// What the sender should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Send this many packets now (at least 1); the tokens are spent.
    Send(u64),
    /// Nothing may be sent before this CLOCK_MONOTONIC time in ns.
    WaitUntil(u64),
}

/// Token bucket; see the module documentation.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_pps: u64,
    batch: u64,
    min_send: u64,
    /// Tokens times 1e9, so refills at any rate are exact integers.
    credit: u128,
    capacity: u128,
    last_ns: u64,
}

impl Pacer {
    /// A pacer at `rate_pps` (0 = unlimited) handing out at most `batch`
    /// packets per send (0 is taken as 1), starting at `now_ns` with enough
    /// tokens for one send.
    pub fn new(rate_pps: u64, batch: u64, now_ns: u64) -> Self {
        let batch = batch.max(1);
        let min_send = (rate_pps / MAX_WAKEUPS_PER_S).clamp(1, batch);
        let catch_up = u128::from(rate_pps) * u128::from(CATCH_UP_NS) / NS_PER_S;
        let capacity = catch_up.max(u128::from(batch)) * NS_PER_S;
        Self {
            rate_pps,
            batch,
            min_send,
            credit: u128::from(min_send) * NS_PER_S,
            capacity,
            last_ns: now_ns,
        }
    }

    /// Packets the pacer waits for before waking the sender (1 at low rates).
    pub fn min_send(&self) -> u64 {
        self.min_send
    }

    /// Refills from the time elapsed since the last call and says whether to
    /// send (at most `want` packets) or wait. `want == 0` always waits a
    /// nominal interval. A clock that goes backwards adds no tokens.
    pub fn poll(&mut self, now_ns: u64, want: u64) -> Pace {
        if self.rate_pps == 0 {
            return if want == 0 {
                Pace::WaitUntil(now_ns)
            } else {
                Pace::Send(want.min(self.batch))
            };
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let rate = u128::from(self.rate_pps);
        self.credit = (self.credit + u128::from(elapsed) * rate).min(self.capacity);

        let tokens = self.credit / NS_PER_S;
        let needed = self.min_send.min(want).max(1);
        if want > 0 && tokens >= u128::from(needed) {
            // `tokens` is at most capacity / 1e9, far below u64::MAX.
            let n = u64::try_from(tokens)
                .unwrap_or(u64::MAX)
                .min(self.batch)
                .min(want);
            self.credit -= u128::from(n) * NS_PER_S;
            return Pace::Send(n);
        }
        let missing =
            u128::from(needed) * NS_PER_S - self.credit.min(u128::from(needed) * NS_PER_S);
        let wait_ns = missing.div_ceil(rate);
        Pace::WaitUntil(now_ns.saturating_add(u64::try_from(wait_ns).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a pacer on a virtual clock that wakes `oversleep_ns` late every
    /// time; returns (packets sent by `end_ns`, wake-ups, largest send).
    fn simulate(rate: u64, batch: u64, oversleep_ns: u64, end_ns: u64) -> (u64, u64, u64) {
        let mut now = 1_000;
        let mut pacer = Pacer::new(rate, batch, now);
        let (mut sent, mut wakeups, mut largest) = (0, 0, 0);
        while now < end_ns {
            match pacer.poll(now, u64::MAX) {
                Pace::Send(n) => {
                    assert!(n >= 1 && n <= batch);
                    sent += n;
                    largest = largest.max(n);
                    // The token bucket bound: never ahead of rate * t + capacity.
                    let allowed = u128::from(rate) * u128::from(now - 1_000) / NS_PER_S
                        + (u128::from(rate) * u128::from(CATCH_UP_NS) / NS_PER_S)
                            .max(u128::from(batch))
                        + 1;
                    assert!(
                        u128::from(sent) <= allowed,
                        "sent {sent} > allowed {allowed} at {now}"
                    );
                }
                Pace::WaitUntil(t) => {
                    assert!(t > now, "wait must move time forward");
                    now = t + oversleep_ns;
                    wakeups += 1;
                }
            }
        }
        (sent, wakeups, largest)
    }

    #[test]
    fn low_rate_sends_single_packets_on_time() {
        let (sent, wakeups, largest) = simulate(2_000, 32, 0, 1_000_000_000);
        assert!((1_999..=2_001).contains(&sent), "{sent}");
        assert!(
            wakeups + 1 >= sent,
            "one wake-up per packet at 2 kpps: {wakeups}"
        );
        assert_eq!(largest, 1);
    }

    #[test]
    fn high_rate_batches_and_bounds_wakeups() {
        let (sent, wakeups, largest) = simulate(500_000, 64, 0, 1_000_000_000);
        assert!((499_000..=500_100).contains(&sent), "{sent}");
        assert!(wakeups <= MAX_WAKEUPS_PER_S + 10, "{wakeups} wake-ups");
        assert_eq!(largest, 50, "waits for rate / MAX_WAKEUPS_PER_S packets");
        // A smaller batch caps the minimum send: one wake-up per full batch.
        let (sent, wakeups, largest) = simulate(1_000_000, 32, 0, 1_000_000_000);
        assert!((999_000..=1_000_100).contains(&sent), "{sent}");
        assert!(wakeups <= 1_000_000 / 32 + 10, "{wakeups} wake-ups");
        assert_eq!(largest, 32);
    }

    #[test]
    fn timer_slack_does_not_lower_the_rate() {
        // 60 us late on every wake-up, as a default-slack nanosleep is.
        let (sent, _, _) = simulate(100_000, 32, 60_000, 1_000_000_000);
        assert!((99_000..=100_100).contains(&sent), "{sent}");
        let (sent, _, _) = simulate(5_000, 1, 60_000, 1_000_000_000);
        assert!((4_990..=5_001).contains(&sent), "{sent}");
    }

    #[test]
    fn unlimited_rate_always_sends_a_batch() {
        let mut pacer = Pacer::new(0, 16, 0);
        assert_eq!(pacer.poll(0, u64::MAX), Pace::Send(16));
        assert_eq!(pacer.poll(0, 5), Pace::Send(5));
        assert_eq!(pacer.poll(0, 0), Pace::WaitUntil(0));
    }

    #[test]
    fn never_hands_out_more_than_wanted() {
        let mut pacer = Pacer::new(1_000, 8, 0);
        assert_eq!(pacer.poll(1_000_000_000, 3), Pace::Send(3));
        // 1 s of tokens is capped at CATCH_UP_NS worth: 10 at 1 kpps.
        assert_eq!(pacer.poll(1_000_000_000, 100), Pace::Send(7));
        assert_eq!(
            pacer.poll(1_000_000_000, 100),
            Pace::WaitUntil(1_001_000_000)
        );
    }

    #[test]
    fn clock_going_backwards_adds_nothing() {
        let mut pacer = Pacer::new(1_000, 1, 10_000_000);
        assert_eq!(pacer.poll(10_000_000, 1), Pace::Send(1));
        assert_eq!(pacer.poll(5_000_000, 1), Pace::WaitUntil(6_000_000));
        assert_eq!(pacer.poll(10_500_000, 1), Pace::WaitUntil(11_000_000));
        assert_eq!(pacer.poll(11_000_000, 1), Pace::Send(1));
    }
}
