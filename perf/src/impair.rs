//! The impairment relay's logic (`popmesh-impair`): a schedule of time windows of added delay,
//! jitter and random loss, and the sans-IO [`Impairer`] that decides, per datagram, whether to
//! forward it now, hold it until a release time, or drop it.
//!
//! The kernels popmesh's labs run on often lack `sch_netem`, so the harness puts this relay
//! between the publishers and the appliance's ingress instead. Semantics follow netem: each
//! packet's delay is `delay_ms` plus a uniform draw in `[-jitter_ms, +jitter_ms]` (clamped at 0),
//! drawn independently, so jitter reorders packets; loss drops each packet with
//! `loss_percent` / 100 probability. Randomness comes from a seeded [`SplitMix64`], so a run is
//! reproducible. A packet belongs to the window in force when it *arrives*; a packet held when
//! its window ends is still released at its own time.
//!
//! Schedule text, one window per line (or `;` between windows on a command line), `#` comments:
//!
//! ```text
//! # from..to (seconds after the epoch)  impairments
//! 5..10   delay_ms=50 jitter_ms=20
//! 12..15  loss_percent=2.5
//! 20..21.5 delay_ms=30 loss_percent=1
//! ```
//!
//! Windows are in ascending order and do not overlap; each has at least one impairment.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use serde::Serialize;

/// Longest schedule.
pub const MAX_WINDOWS: usize = 1024;
/// Latest window end, seconds (a day: every run is bounded).
pub const MAX_SCHEDULE_S: f64 = 86_400.0;
/// Largest `delay_ms` and `jitter_ms`.
pub const MAX_DELAY_MS: u32 = 60_000;

/// One window of impairments.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    /// Start, seconds after the epoch.
    pub from_s: f64,
    /// End (exclusive), seconds after the epoch.
    pub to_s: f64,
    /// Added delay, ms.
    pub delay_ms: u32,
    /// Uniform variation of the delay, ± ms.
    pub jitter_ms: u32,
    /// Share of packets dropped, percent in `[0, 100]`.
    pub loss_percent: f64,
}

impl Window {
    fn start_ns(self) -> i64 {
        (self.from_s * 1e9) as i64
    }

    fn end_ns(self) -> i64 {
        (self.to_s * 1e9) as i64
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.from_s, self.to_s)?;
        if self.delay_ms > 0 {
            write!(f, " delay_ms={}", self.delay_ms)?;
        }
        if self.jitter_ms > 0 {
            write!(f, " jitter_ms={}", self.jitter_ms)?;
        }
        if self.loss_percent > 0.0 {
            write!(f, " loss_percent={}", self.loss_percent)?;
        }
        Ok(())
    }
}

/// A parsed schedule: windows in ascending, non-overlapping order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Schedule {
    /// The windows.
    pub windows: Vec<Window>,
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule window {window} (`{text}`): {rule}")]
pub struct ScheduleError {
    /// 1-based number of the window (the line, in a file without comments or blank lines, is
    /// named in `text`).
    pub window: usize,
    /// The window's text as written.
    pub text: String,
    /// What is wrong and how to write it instead.
    pub rule: String,
}

impl Schedule {
    /// Parses schedule text (see the module docs). Never panics, whatever the text.
    ///
    /// # Errors
    /// The first window that breaks a rule, with the rule.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let mut windows: Vec<Window> = Vec::new();
        let entries = text
            .lines()
            .flat_map(|l| l.split(';'))
            .map(|e| e.split('#').next().unwrap_or_default().trim())
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let err = |rule: String| ScheduleError {
                window: i + 1,
                text: entry.chars().take(120).collect(),
                rule,
            };
            if i >= MAX_WINDOWS {
                return Err(err(format!("a schedule has at most {MAX_WINDOWS} windows")));
            }
            let w = parse_window(entry).map_err(err)?;
            if let Some(prev) = windows.last() {
                if w.from_s < prev.to_s {
                    return Err(err(format!(
                        "starts at {} s, before the previous window ({prev}) ends; windows must be in ascending order and must not overlap",
                        w.from_s
                    )));
                }
            }
            windows.push(w);
        }
        Ok(Self { windows })
    }

    /// Index of the window in force `t_ns` after the epoch, if any.
    pub fn window_at(&self, t_ns: i64) -> Option<usize> {
        // Windows are sorted and disjoint: the last one starting at or before t.
        let i = self.windows.partition_point(|w| w.start_ns() <= t_ns);
        let i = i.checked_sub(1)?;
        let w = self.windows.get(i)?;
        (t_ns < w.end_ns()).then_some(i)
    }
}

fn parse_window(entry: &str) -> Result<Window, String> {
    let mut words = entry.split_whitespace();
    let span = words.next().unwrap_or_default();
    let (from, to) = span.split_once("..").ok_or_else(|| {
        format!("`{span}` is not a time span; write FROM..TO in seconds, e.g. `5..10`")
    })?;
    let secs = |what: &str, t: &str| -> Result<f64, String> {
        let v: f64 = t
            .parse()
            .map_err(|_| format!("{what} `{t}` is not a number of seconds"))?;
        if !v.is_finite() || !(0.0..=MAX_SCHEDULE_S).contains(&v) {
            return Err(format!(
                "{what} {t} must be in [0, {MAX_SCHEDULE_S}] seconds"
            ));
        }
        Ok(v)
    };
    let from_s = secs("start", from)?;
    let to_s = secs("end", to)?;
    if to_s <= from_s {
        return Err(format!("ends at {to_s} s, not after its start {from_s} s"));
    }
    let mut w = Window {
        from_s,
        to_s,
        delay_ms: 0,
        jitter_ms: 0,
        loss_percent: 0.0,
    };
    let mut seen: Vec<&str> = Vec::new();
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| {
            format!("`{word}` is not KEY=VALUE (keys: delay_ms, jitter_ms, loss_percent)")
        })?;
        if seen.contains(&key) {
            return Err(format!("{key} is given twice"));
        }
        let ms = |v: &str| -> Result<u32, String> {
            let n: u32 = v
                .parse()
                .map_err(|_| format!("{key}={v}: not a whole number of milliseconds"))?;
            if n > MAX_DELAY_MS {
                return Err(format!("{key}={v}: at most {MAX_DELAY_MS} ms"));
            }
            Ok(n)
        };
        match key {
            "delay_ms" => w.delay_ms = ms(value)?,
            "jitter_ms" => w.jitter_ms = ms(value)?,
            "loss_percent" => {
                let p: f64 = value
                    .parse()
                    .map_err(|_| format!("loss_percent={value}: not a number"))?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(format!("loss_percent={value}: must be in (0, 100]"));
                }
                w.loss_percent = p;
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` (keys: delay_ms, jitter_ms, loss_percent)"
                ))
            }
        }
        seen.push(key);
    }
    if w.delay_ms == 0 && w.jitter_ms == 0 && w.loss_percent == 0.0 {
        return Err(
            "has no impairment; give delay_ms, jitter_ms or loss_percent (non-zero)".to_string(),
        );
    }
    Ok(w)
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to decide loss and delay
/// draws; seeded, so a run replays exactly.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n]`.
    pub fn below_inclusive(&mut self, n: u64) -> u64 {
        // Modulo bias is below 2^-40 for the spans used here (at most 1.2e11 ns).
        self.next_u64() % n.saturating_add(1).max(1)
    }
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it now.
    Forward,
    /// Hold it until this time (ns after the epoch).
    Hold {
        /// Release time, ns after the epoch.
        release_ns: i64,
    },
    /// Drop it (random loss).
    Drop,
}

/// Counters of one window (or of the time outside every window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WindowCounts {
    /// Datagrams that arrived.
    pub received: u64,
    /// Datagrams sent on (now or after their delay).
    pub forwarded: u64,
    /// Datagrams dropped by the loss draw.
    pub dropped: u64,
    /// Datagrams held for a delay above 0.
    pub delayed: u64,
    /// Datagrams dropped because the hold queue was full.
    pub queue_full: u64,
    /// Datagrams whose send failed (nothing listening yet, for example).
    pub send_errors: u64,
}

/// The per-datagram decisions over a schedule, with counters per window.
#[derive(Debug, Clone)]
pub struct Impairer {
    schedule: Schedule,
    rng: SplitMix64,
    counts: Vec<WindowCounts>,
    outside: WindowCounts,
}

impl Impairer {
    /// An impairer over `schedule`, its draws seeded with `seed`.
    pub fn new(schedule: Schedule, seed: u64) -> Self {
        Self {
            counts: vec![WindowCounts::default(); schedule.windows.len()],
            schedule,
            rng: SplitMix64::new(seed),
            outside: WindowCounts::default(),
        }
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Decides the fate of a datagram arriving `now_ns` after the epoch (negative: before it).
    /// Returns the decision and the window it is counted in (`None`: outside every window).
    pub fn handle_datagram(&mut self, now_ns: i64) -> (Decision, Option<usize>) {
        let window = self.schedule.window_at(now_ns);
        let w = window.and_then(|i| self.schedule.windows.get(i)).copied();
        let counts = self.counts_mut(window);
        counts.received += 1;
        let Some(w) = w else {
            return (Decision::Forward, None);
        };
        if w.loss_percent > 0.0 && self.rng.next_f64() * 100.0 < w.loss_percent {
            self.counts_mut(window).dropped += 1;
            return (Decision::Drop, window);
        }
        let delay_ns = i64::from(w.delay_ms) * 1_000_000;
        let jitter_ns = i64::from(w.jitter_ms) * 1_000_000;
        let offset = if jitter_ns > 0 {
            // Uniform in [-jitter, +jitter].
            self.rng.below_inclusive(2 * jitter_ns as u64) as i64 - jitter_ns
        } else {
            0
        };
        let total = (delay_ns + offset).max(0);
        if total == 0 {
            return (Decision::Forward, window);
        }
        self.counts_mut(window).delayed += 1;
        (
            Decision::Hold {
                release_ns: now_ns.saturating_add(total),
            },
            window,
        )
    }

    /// Counts a datagram of `window` as forwarded (`sent`) or failed.
    pub fn record_send(&mut self, window: Option<usize>, sent: bool) {
        let c = self.counts_mut(window);
        if sent {
            c.forwarded += 1;
        } else {
            c.send_errors += 1;
        }
    }

    /// Counts a datagram of `window` dropped because the hold queue was full.
    pub fn record_queue_full(&mut self, window: Option<usize>) {
        self.counts_mut(window).queue_full += 1;
    }

    /// Counters per window, in schedule order.
    pub fn counts(&self) -> &[WindowCounts] {
        &self.counts
    }

    /// Counters of the time outside every window.
    pub fn outside(&self) -> WindowCounts {
        self.outside
    }

    fn counts_mut(&mut self, window: Option<usize>) -> &mut WindowCounts {
        match window.and_then(|i| self.counts.get_mut(i)) {
            Some(c) => c,
            None => &mut self.outside,
        }
    }
}

/// Held datagrams, released in order of their release time (ties in arrival order). Buffers are
/// recycled, so a steady stream allocates nothing once the queue has grown to its working size.
#[derive(Debug)]
pub struct HoldQueue {
    heap: BinaryHeap<Reverse<(i64, u64, usize)>>,
    slots: Vec<Held>,
    free: Vec<usize>,
    seq: u64,
    limit: usize,
}

#[derive(Debug, Default)]
struct Held {
    bytes: Vec<u8>,
    route: usize,
    window: Option<usize>,
}

impl HoldQueue {
    /// An empty queue holding at most `limit` datagrams.
    pub fn new(limit: usize) -> Self {
        Self {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
            limit,
        }
    }

    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Holds a copy of `bytes` for `route` until `release_ns`. Returns `false` (and holds
    /// nothing) when the queue is full.
    pub fn push(
        &mut self,
        release_ns: i64,
        route: usize,
        window: Option<usize>,
        bytes: &[u8],
    ) -> bool {
        if self.heap.len() >= self.limit {
            return false;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Held::default());
                self.slots.len() - 1
            }
        };
        let Some(held) = self.slots.get_mut(slot) else {
            return false;
        };
        held.bytes.clear();
        held.bytes.extend_from_slice(bytes);
        held.route = route;
        held.window = window;
        self.heap.push(Reverse((release_ns, self.seq, slot)));
        self.seq += 1;
        true
    }

    /// Release time of the next datagram, if any.
    pub fn next_release_ns(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Releases the next datagram if it is due at `now_ns`: calls `send(route, window, bytes)`
    /// and returns `true`; `false` when nothing is due.
    pub fn release_due(
        &mut self,
        now_ns: i64,
        mut send: impl FnMut(usize, Option<usize>, &[u8]),
    ) -> bool {
        match self.heap.peek() {
            Some(Reverse((t, _, _))) if *t <= now_ns => {}
            _ => return false,
        }
        let Some(Reverse((_, _, slot))) = self.heap.pop() else {
            return false;
        };
        if let Some(held) = self.slots.get(slot) {
            send(held.route, held.window, &held.bytes);
        }
        self.free.push(slot);
        true
    }
}

/// `popmesh-impair` result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImpairReport {
    /// Always `"impair"`.
    pub tool: &'static str,
    /// CLOCK_MONOTONIC ns the schedule's times are relative to.
    pub epoch_monotonic_ns: u64,
    /// Seed of the loss and delay draws.
    pub seed: u64,
    /// `listen -> to` of every route.
    pub routes: Vec<String>,
    /// Seconds the relay ran.
    pub duration_s: f64,
    /// The schedule with each window's counters.
    pub windows: Vec<WindowReport>,
    /// Counters of the time outside every window.
    pub outside: WindowCounts,
    /// Datagrams still held when the relay stopped (never sent).
    pub held_at_exit: u64,
    /// Datagrams larger than the receive slot, dropped.
    pub truncated: u64,
}

/// One window and its counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowReport {
    /// The window.
    #[serde(flatten)]
    pub window: Window,
    /// Its counters.
    #[serde(flatten)]
    pub counts: WindowCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_parses_lines_and_semicolons() {
        let s = Schedule::parse(
            "# comment\n5..10 delay_ms=50 jitter_ms=20\n\n12..15 loss_percent=2.5 # tail\n20..21.5 delay_ms=30 loss_percent=1",
        )
        .expect("parses");
        assert_eq!(s.windows.len(), 3);
        assert_eq!((s.windows[0].delay_ms, s.windows[0].jitter_ms), (50, 20));
        assert_eq!(s.windows[1].loss_percent, 2.5);
        assert_eq!(s.windows[2].to_s, 21.5);
        let again = Schedule::parse("5..10 delay_ms=50 jitter_ms=20; 12..15 loss_percent=2.5")
            .expect("parses");
        assert_eq!(again.windows[..], s.windows[..2]);
        assert_eq!(Schedule::parse("").expect("empty").windows, []);
    }

    #[test]
    fn bad_windows_say_which_and_why() {
        for (text, window, needle) in [
            ("5-10 delay_ms=5", 1, "FROM..TO"),
            ("5..x delay_ms=5", 1, "not a number"),
            ("10..5 delay_ms=5", 1, "not after its start"),
            ("1..2 delay_ms=5\n0..3 loss_percent=1", 2, "overlap"),
            ("1..2 delay_ms=abc", 1, "whole number"),
            ("1..2 delay_ms=70000", 1, "at most"),
            ("1..2 loss_percent=0", 1, "(0, 100]"),
            ("1..2 loss_percent=NaN", 1, "(0, 100]"),
            ("1..2 rate=5", 1, "unknown key"),
            ("1..2", 1, "no impairment"),
            ("1..2 delay_ms=1 delay_ms=2", 1, "twice"),
            ("1..2 delay_ms", 1, "KEY=VALUE"),
            ("1..1e9 delay_ms=1", 1, "86400"),
        ] {
            let e = Schedule::parse(text).expect_err(text);
            assert_eq!(e.window, window, "{text}: {e}");
            assert!(e.rule.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn windows_are_found_by_time() {
        let s = Schedule::parse("1..2 delay_ms=1; 2..3 loss_percent=1; 5..6 jitter_ms=3")
            .expect("parses");
        let at = |t: f64| s.window_at((t * 1e9) as i64);
        assert_eq!(at(-1.0), None);
        assert_eq!(at(0.5), None);
        assert_eq!(at(1.0), Some(0));
        assert_eq!(at(1.999), Some(0));
        assert_eq!(at(2.0), Some(1));
        assert_eq!(at(4.0), None);
        assert_eq!(at(5.5), Some(2));
        assert_eq!(at(6.0), None);
    }

    #[test]
    fn loss_drops_about_its_share_reproducibly() {
        let s = Schedule::parse("0..100 loss_percent=10").expect("parses");
        let run = |seed| {
            let mut imp = Impairer::new(s.clone(), seed);
            (0..100_000)
                .filter(|i| imp.handle_datagram(i * 1000).0 == Decision::Drop)
                .count()
        };
        let dropped = run(7);
        assert!((9_000..11_000).contains(&dropped), "{dropped}");
        assert_eq!(run(7), dropped, "same seed, same drops");
        let mut imp = Impairer::new(s, 7);
        imp.handle_datagram(-5);
        imp.handle_datagram(200 * 1_000_000_000);
        assert_eq!(imp.outside().received, 2);
        assert_eq!(imp.counts()[0].received, 0);
    }

    #[test]
    fn jitter_stays_in_bounds_and_reorders() {
        let s = Schedule::parse("0..10 delay_ms=50 jitter_ms=20").expect("parses");
        let mut imp = Impairer::new(s, 1);
        let mut q = HoldQueue::new(1_000_000);
        let mut releases = Vec::new();
        for i in 0..10_000i64 {
            let now = i * 100_000; // 10 kpps
            match imp.handle_datagram(now) {
                (Decision::Hold { release_ns }, w) => {
                    let d = release_ns - now;
                    assert!((30_000_000..=70_000_000).contains(&d), "{d}");
                    assert!(q.push(release_ns, 0, w, &i.to_be_bytes()));
                    releases.push(release_ns);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(imp.counts()[0].delayed, 10_000);
        // Released in release order, which is not arrival order.
        let mut order = Vec::new();
        while q.release_due(i64::MAX, |_, _, b| {
            order.push(i64::from_be_bytes(b.try_into().expect("8 bytes")))
        }) {}
        assert_eq!(order.len(), 10_000);
        assert!(order.windows(2).any(|w| w[1] < w[0]), "no reordering");
        let mut sorted = releases.clone();
        sorted.sort_unstable();
        let released: Vec<i64> = order.iter().map(|&i| releases[i as usize]).collect();
        assert_eq!(released, sorted);
    }

    #[test]
    fn the_hold_queue_is_bounded_and_releases_only_what_is_due() {
        let mut q = HoldQueue::new(2);
        assert!(q.push(10, 0, None, b"a"));
        assert!(q.push(5, 1, Some(0), b"b"));
        assert!(!q.push(1, 0, None, b"c"), "full");
        assert_eq!(q.next_release_ns(), Some(5));
        let mut got = Vec::new();
        assert!(!q.release_due(4, |_, _, _| {}));
        assert!(q.release_due(5, |r, w, b| got.push((r, w, b.to_vec()))));
        assert_eq!(got, [(1, Some(0), b"b".to_vec())]);
        assert!(q.push(7, 0, None, b"d"), "a slot was freed");
        assert_eq!(q.len(), 2);
    }
}
