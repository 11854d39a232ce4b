//! Sans-IO stall detection on one receiver's packet arrival times.
//!
//! A viewer's player stalls when no media reaches it for longer than its jitter buffer can
//! cover. [`StallDetector`] is fed every arrival time of one receiver (in any order the sink sees
//! them, which is non-decreasing) and records each gap between consecutive arrivals that is
//! longer than its threshold as one [`Stall`]: it starts at the last arrival before the gap and
//! lasts the whole gap. Silence before the first or after the last packet is not a gap here; the
//! capacity harness, which knows when the sender ran, adds it (`popmesh_capacity::stall`).
//!
//! Memory is bounded: the count and the total stalled time are exact, the list of events keeps
//! the first [`MAX_STALL_EVENTS`].

use serde::{Deserialize, Serialize};

/// Stall events kept per receiver; further stalls are only counted.
pub const MAX_STALL_EVENTS: usize = 10_000;

/// One gap above the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    /// Arrival time (ns, the sink's clock) of the last packet before the gap.
    pub start_ns: u64,
    /// Length of the gap in ns.
    pub duration_ns: u64,
}

impl Stall {
    /// Time the stall ended (the next packet arrived, or the window closed).
    pub fn end_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.duration_ns)
    }
}

/// Streaming stall detector of one receiver.
#[derive(Debug, Clone)]
pub struct StallDetector {
    threshold_ns: u64,
    first_arrival_ns: Option<u64>,
    last_arrival_ns: u64,
    packets: u64,
    count: u64,
    stalled_ns: u64,
    events: Vec<Stall>,
}

impl StallDetector {
    /// A detector for gaps strictly longer than `threshold_ns` (at least 1 ns).
    pub fn new(threshold_ns: u64) -> Self {
        Self {
            threshold_ns: threshold_ns.max(1),
            first_arrival_ns: None,
            last_arrival_ns: 0,
            packets: 0,
            count: 0,
            stalled_ns: 0,
            events: Vec::new(),
        }
    }

    /// The gap length above which a stall is counted, in ns.
    pub fn threshold_ns(&self) -> u64 {
        self.threshold_ns
    }

    fn push(&mut self, start_ns: u64, duration_ns: u64) {
        self.count += 1;
        self.stalled_ns = self.stalled_ns.saturating_add(duration_ns);
        if self.events.len() < MAX_STALL_EVENTS {
            self.events.push(Stall {
                start_ns,
                duration_ns,
            });
        }
    }

    /// Feeds one arrival. An arrival earlier than the previous one (a clock that went back) is
    /// counted as a packet but opens no gap.
    pub fn observe(&mut self, arrival_ns: u64) {
        self.packets += 1;
        if self.first_arrival_ns.is_none() {
            self.first_arrival_ns = Some(arrival_ns);
            self.last_arrival_ns = arrival_ns;
            return;
        }
        let gap_ns = arrival_ns.saturating_sub(self.last_arrival_ns);
        if gap_ns > self.threshold_ns {
            self.push(self.last_arrival_ns, gap_ns);
        }
        self.last_arrival_ns = self.last_arrival_ns.max(arrival_ns);
    }

    /// Packets observed.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// First arrival, `None` before any packet.
    pub fn first_arrival_ns(&self) -> Option<u64> {
        self.first_arrival_ns
    }

    /// Last arrival, `None` before any packet.
    pub fn last_arrival_ns(&self) -> Option<u64> {
        self.first_arrival_ns.map(|_| self.last_arrival_ns)
    }

    /// Stalls between packets so far (exact, even past [`MAX_STALL_EVENTS`]).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Total length of those stalls in ns.
    pub fn stalled_ns(&self) -> u64 {
        self.stalled_ns
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> &[Stall] {
        &self.events
    }

    /// Everything recorded so far, for a report.
    pub fn record(&self) -> StallRecord {
        StallRecord {
            threshold_ns: self.threshold_ns,
            packets: self.packets,
            first_arrival_ns: self.first_arrival_ns,
            last_arrival_ns: self.last_arrival_ns(),
            count: self.count,
            stalled_ns: self.stalled_ns,
            events_dropped: self.count.saturating_sub(self.events.len() as u64),
            events: self.events.clone(),
        }
    }
}

/// What a [`StallDetector`] saw, as the sink writes it into its JSON (times are the sink's
/// CLOCK_MONOTONIC ns). Stalls at the edges of a measurement window are not in it: whoever knows
/// the window adds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallRecord {
    /// Gap threshold in ns.
    pub threshold_ns: u64,
    /// Packets received.
    pub packets: u64,
    /// First arrival, `null` without packets.
    pub first_arrival_ns: Option<u64>,
    /// Last arrival, `null` without packets.
    pub last_arrival_ns: Option<u64>,
    /// Gaps above the threshold between packets.
    pub count: u64,
    /// Their total length in ns.
    pub stalled_ns: u64,
    /// Gaps not kept as events (beyond [`MAX_STALL_EVENTS`]).
    pub events_dropped: u64,
    /// The kept gaps, in time order.
    pub events: Vec<Stall>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn steady_arrivals_never_stall() {
        let mut d = StallDetector::new(100 * MS);
        for i in 0..1000 {
            d.observe(i * 20 * MS);
        }
        assert_eq!(d.count(), 0);
        let r = d.record();
        assert_eq!((r.count, r.stalled_ns, r.packets), (0, 0, 1000));
        assert_eq!(r.first_arrival_ns, Some(0));
        assert_eq!(r.last_arrival_ns, Some(999 * 20 * MS));
    }

    #[test]
    fn each_long_gap_is_one_stall_with_its_start_and_length() {
        let mut d = StallDetector::new(100 * MS);
        for t in [0, 20, 40, 300, 320, 320, 900] {
            d.observe(t * MS);
        }
        assert_eq!(
            d.events(),
            [
                Stall {
                    start_ns: 40 * MS,
                    duration_ns: 260 * MS
                },
                Stall {
                    start_ns: 320 * MS,
                    duration_ns: 580 * MS
                }
            ]
        );
        assert_eq!(d.stalled_ns(), 840 * MS);
        // Exactly the threshold is not a stall.
        let mut d = StallDetector::new(100 * MS);
        d.observe(0);
        d.observe(100 * MS);
        assert_eq!(d.count(), 0);
    }

    #[test]
    fn events_are_capped_but_counts_stay_exact() {
        let mut d = StallDetector::new(1);
        for i in 0..(MAX_STALL_EVENTS as u64 + 5) {
            d.observe(i * 10);
        }
        assert_eq!(d.count(), MAX_STALL_EVENTS as u64 + 4);
        assert_eq!(d.events().len(), MAX_STALL_EVENTS);
        assert_eq!(d.record().events_dropped, 4);
    }

    #[test]
    fn a_clock_going_back_opens_no_gap() {
        let mut d = StallDetector::new(10);
        d.observe(1_000);
        d.observe(500);
        d.observe(1_005);
        assert_eq!(d.count(), 0);
        assert_eq!(d.last_arrival_ns(), Some(1_005));
    }
}
