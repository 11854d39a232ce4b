//! Sans-IO receive statistics: the sink hands every datagram and its arrival
//! time to [`ListenerStats::handle_datagram`] and asks for a [`TrafficSummary`]
//! at the end.
//!
//! Definitions (per stream, a stream being one `(SSRC, stream index)` pair):
//! - `expected = max_seq - min_seq + 1` over probe sequences seen, so loss
//!   before the first or after the last received packet is not visible.
//! - A packet whose probe sequence was already seen is a *duplicate*; it does
//!   not count as received for loss, nor as reordered, nor for jitter.
//! - A non-duplicate packet whose sequence is lower than the highest seen is
//!   *reordered*. Duplicates are detected within [`DUP_WINDOW`] sequences
//!   below the highest; an older packet is counted as reordered and unique.
//! - `loss = expected - unique received`, floored at 0.
//! - Jitter is RFC 3550 section 6.4.1 (`J += (|D| - J) / 16`) in 90 kHz ticks,
//!   computed in arrival order from the RTP timestamp and the arrival time,
//!   reported in microseconds.
//! - Latency is `arrival - send time` in ns of the shared CLOCK_MONOTONIC, so
//!   it is only meaningful when sender and sink run on the same host.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::probe::{ProbeError, ProbePacket, ProbeRepr, RTP_CLOCK_HZ};

/// How many sequences below the highest one are remembered for duplicate
/// detection (a bitmap of this many bits per stream).
pub const DUP_WINDOW: u64 = 16_384;
/// Streams tracked per listener; probes of further streams are counted as
/// `untracked` so a flood of forged stream ids cannot exhaust memory.
pub const MAX_STREAMS: usize = 4_096;
/// Highest latency the histogram resolves; larger values are clamped.
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;
/// Significant decimal digits of the latency histogram (0.1 % resolution).
const LATENCY_SIGFIG: u8 = 3;

const WINDOW_WORDS: usize = (DUP_WINDOW / 64) as usize;

/// What the statistics made of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a probe.
    Malformed(ProbeError),
    /// A probe with a sequence above every one seen before on its stream.
    InOrder,
    /// A first copy of a probe below the highest sequence seen.
    Reordered,
    /// A probe sequence seen before on its stream.
    Duplicate,
    /// A probe of a stream beyond [`MAX_STREAMS`]; only counted.
    Untracked,
}

/// Bitmap of the [`DUP_WINDOW`] sequences at and below the highest one.
#[derive(Debug, Clone)]
struct SeqWindow {
    words: Box<[u64; WINDOW_WORDS]>,
}

impl SeqWindow {
    fn new() -> Self {
        Self {
            words: Box::new([0; WINDOW_WORDS]),
        }
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % DUP_WINDOW;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    /// Sets `seq`'s bit and returns whether it was set before.
    fn test_and_set(&mut self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        match self.words.get_mut(word) {
            Some(w) => {
                let was = *w & mask != 0;
                *w |= mask;
                was
            }
            None => false,
        }
    }

    /// Forgets the sequences `(old_highest, new_highest]` before they are
    /// reused by the ring.
    fn advance(&mut self, old_highest: u64, new_highest: u64) {
        if new_highest - old_highest >= DUP_WINDOW {
            self.words.fill(0);
            return;
        }
        for seq in old_highest + 1..=new_highest {
            let (word, mask) = Self::slot(seq);
            if let Some(w) = self.words.get_mut(word) {
                *w &= !mask;
            }
        }
    }
}

/// RFC 3550 interarrival jitter estimator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jitter {
    last: Option<(u64, u32)>,
    jitter_ticks: f64,
    samples: u64,
}

impl Jitter {
    /// Feeds one packet: arrival time in ns and its RTP timestamp.
    pub fn observe(&mut self, arrival_ns: u64, rtp_timestamp: u32) {
        if let Some((last_arrival_ns, last_ts)) = self.last {
            // Differences, not absolute transit times, so neither the ns clock
            // origin nor the 32-bit RTP wrap matters. i128 keeps an arrival
            // earlier than the previous one (a clock going backwards) exact.
            let arrival_delta_ns = i128::from(arrival_ns) - i128::from(last_arrival_ns);
            let arrival_delta_ticks = arrival_delta_ns as f64 * RTP_CLOCK_HZ as f64 / 1e9;
            // Reinterpreting the wrapped difference as signed is the RTP
            // serial-number comparison.
            let ts_delta_ticks = f64::from(rtp_timestamp.wrapping_sub(last_ts) as i32);
            let d = arrival_delta_ticks - ts_delta_ticks;
            self.jitter_ticks += (d.abs() - self.jitter_ticks) / 16.0;
            self.samples += 1;
        }
        self.last = Some((arrival_ns, rtp_timestamp));
    }

    /// Current estimate in microseconds, `None` before the second packet.
    pub fn jitter_us(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.jitter_ticks * 1e6 / RTP_CLOCK_HZ as f64)
    }
}

/// Sequence and jitter state of one stream.
#[derive(Debug, Clone)]
pub struct StreamTracker {
    min_seq: u64,
    highest_seq: u64,
    received: u64,
    duplicates: u64,
    reordered: u64,
    window: SeqWindow,
    jitter: Jitter,
}

impl StreamTracker {
    /// Starts a stream at its first packet.
    pub fn new(arrival_ns: u64, probe: &ProbeRepr) -> Self {
        let mut window = SeqWindow::new();
        window.test_and_set(probe.probe_seq);
        let mut jitter = Jitter::default();
        jitter.observe(arrival_ns, probe.rtp_timestamp);
        Self {
            min_seq: probe.probe_seq,
            highest_seq: probe.probe_seq,
            received: 1,
            duplicates: 0,
            reordered: 0,
            window,
            jitter,
        }
    }

    /// Feeds a further packet of this stream.
    pub fn observe(&mut self, arrival_ns: u64, probe: &ProbeRepr) -> Verdict {
        let seq = probe.probe_seq;
        self.received += 1;
        let verdict = if seq > self.highest_seq {
            self.window.advance(self.highest_seq, seq);
            self.window.test_and_set(seq);
            self.highest_seq = seq;
            Verdict::InOrder
        } else if self.highest_seq - seq >= DUP_WINDOW {
            // Too old to tell; counting it as a late first copy is the
            // smaller error at any sane reorder depth.
            self.reordered += 1;
            Verdict::Reordered
        } else if self.window.test_and_set(seq) {
            self.duplicates += 1;
            Verdict::Duplicate
        } else {
            self.reordered += 1;
            Verdict::Reordered
        };
        self.min_seq = self.min_seq.min(seq);
        if verdict != Verdict::Duplicate {
            self.jitter.observe(arrival_ns, probe.rtp_timestamp);
        }
        verdict
    }

    /// Sequences between the lowest and highest seen, inclusive.
    pub fn expected(&self) -> u64 {
        (self.highest_seq - self.min_seq).saturating_add(1)
    }

    /// Packets received, duplicates excluded.
    pub fn unique(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Expected packets that did not arrive.
    pub fn loss(&self) -> u64 {
        self.expected().saturating_sub(self.unique())
    }

    /// Packets seen more than once.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// First copies that arrived after a higher sequence.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// RFC 3550 jitter in microseconds, `None` before the second packet.
    pub fn jitter_us(&self) -> Option<f64> {
        self.jitter.jitter_us()
    }
}

/// Latency histogram in ns with the bounds every summary shares.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIG)
        .expect("constant histogram bounds are valid (low >= 1, high >= 2 * low, sigfig <= 5)")
}

/// Everything received on one listen address.
#[derive(Debug, Clone)]
pub struct ListenerStats {
    packets: u64,
    bytes: u64,
    malformed: u64,
    probes: u64,
    untracked: u64,
    latency_negative: u64,
    latency_min_ns: u64,
    latency_max_ns: u64,
    first_arrival_ns: Option<u64>,
    last_arrival_ns: u64,
    streams: HashMap<(u32, u32), StreamTracker>,
    latency_ns: Histogram<u64>,
}

impl Default for ListenerStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ListenerStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self {
            packets: 0,
            bytes: 0,
            malformed: 0,
            probes: 0,
            untracked: 0,
            latency_negative: 0,
            latency_min_ns: u64::MAX,
            latency_max_ns: 0,
            first_arrival_ns: None,
            last_arrival_ns: 0,
            streams: HashMap::new(),
            latency_ns: new_latency_histogram(),
        }
    }

    /// Accounts one datagram that arrived at `arrival_ns` (CLOCK_MONOTONIC).
    /// Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, arrival_ns: u64, datagram: &[u8]) -> Verdict {
        self.handle_datagram_timed(arrival_ns, datagram).0
    }

    /// [`handle_datagram`](Self::handle_datagram) that also returns the probe's one-way
    /// latency in ns (`None` for malformed datagrams and send times after the arrival), so a
    /// caller can keep further histograms (per interval, say) without parsing twice.
    pub fn handle_datagram_timed(
        &mut self,
        arrival_ns: u64,
        datagram: &[u8],
    ) -> (Verdict, Option<u64>) {
        self.packets += 1;
        self.bytes += datagram.len() as u64;
        self.first_arrival_ns = Some(
            self.first_arrival_ns
                .map_or(arrival_ns, |f| f.min(arrival_ns)),
        );
        self.last_arrival_ns = self.last_arrival_ns.max(arrival_ns);

        let probe = match ProbeRepr::parse(&ProbePacket::new_unchecked(datagram)) {
            Ok(probe) => probe,
            Err(error) => {
                self.malformed += 1;
                return (Verdict::Malformed(error), None);
            }
        };
        self.probes += 1;

        let key = (probe.ssrc, probe.stream_index);
        let verdict = if let Some(stream) = self.streams.get_mut(&key) {
            stream.observe(arrival_ns, &probe)
        } else if self.streams.len() < MAX_STREAMS {
            self.streams
                .insert(key, StreamTracker::new(arrival_ns, &probe));
            Verdict::InOrder
        } else {
            self.untracked += 1;
            Verdict::Untracked
        };

        let latency = arrival_ns.checked_sub(probe.send_time_ns);
        match latency {
            Some(latency_ns) => {
                self.latency_ns.saturating_record(latency_ns.max(1));
                self.latency_min_ns = self.latency_min_ns.min(latency_ns);
                self.latency_max_ns = self.latency_max_ns.max(latency_ns);
            }
            None => self.latency_negative += 1,
        }
        (verdict, latency)
    }

    /// Datagrams received so far (probes and malformed).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Arrival time of the last datagram, `None` before the first.
    pub fn last_arrival_ns(&self) -> Option<u64> {
        self.first_arrival_ns.map(|_| self.last_arrival_ns)
    }

    /// Summary of this listener.
    pub fn summary(&self) -> TrafficSummary {
        TrafficSummary::from_listeners(std::slice::from_ref(self))
    }
}

/// Latency percentiles in microseconds (histogram resolution 0.1 %;
/// `min_us` and `max_us` are exact).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Probes with a usable send time.
    pub samples: u64,
    /// Smallest latency.
    pub min_us: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest latency.
    pub max_us: f64,
}

fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

impl LatencySummary {
    fn from_histogram(hist: &Histogram<u64>, min_ns: u64, max_ns: u64) -> Option<Self> {
        if hist.is_empty() {
            return None;
        }
        Some(Self {
            samples: hist.len(),
            min_us: ns_to_us(min_ns),
            mean_us: hist.mean() / 1_000.0,
            p50_us: ns_to_us(hist.value_at_quantile(0.50)),
            p90_us: ns_to_us(hist.value_at_quantile(0.90)),
            p99_us: ns_to_us(hist.value_at_quantile(0.99)),
            p999_us: ns_to_us(hist.value_at_quantile(0.999)),
            max_us: ns_to_us(max_ns),
        })
    }
}

/// Receive statistics of one listener or of several added together. This is
/// the JSON object the sink writes per listener and in total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficSummary {
    /// Datagrams received, malformed ones included.
    pub packets: u64,
    /// UDP payload bytes of those datagrams.
    pub bytes: u64,
    /// Datagrams that were not probes (short, not RTP v2, wrong magic).
    pub malformed: u64,
    /// Probe datagrams, duplicates included.
    pub probes: u64,
    /// Probes of streams beyond the per-listener stream limit (not in loss).
    pub untracked: u64,
    /// Distinct streams seen (per listener, summed for the total).
    pub streams: u64,
    /// Sum over streams of `max_seq - min_seq + 1`.
    pub expected: u64,
    /// Expected probes that never arrived.
    pub loss: u64,
    /// `loss / expected`, 0 when nothing was expected.
    pub loss_ratio: f64,
    /// Probes received more than once.
    pub duplicates: u64,
    /// First copies that arrived after a higher sequence of their stream.
    pub reordered: u64,
    /// Seconds from the first to the last datagram.
    pub active_s: f64,
    /// `(packets - 1) / active_s`; 0 with fewer than two packets.
    pub pps: f64,
    /// One-way latency; `null` when no probe had a usable send time.
    pub latency_us: Option<LatencySummary>,
    /// Probes whose send time was after their arrival (other clock, garbage).
    pub latency_negative: u64,
    /// Mean over streams of the RFC 3550 jitter; `null` without a stream of
    /// at least two packets.
    pub jitter_us: Option<f64>,
    /// Largest per-stream RFC 3550 jitter; `null` as above.
    pub jitter_max_us: Option<f64>,
}

impl TrafficSummary {
    /// Adds up several listeners: counts are summed, latency histograms
    /// merged, jitter averaged over all their streams, rate taken over the
    /// earliest first and the latest last arrival.
    pub fn from_listeners(listeners: &[ListenerStats]) -> Self {
        let mut latency = new_latency_histogram();
        let mut s = Self {
            packets: 0,
            bytes: 0,
            malformed: 0,
            probes: 0,
            untracked: 0,
            streams: 0,
            expected: 0,
            loss: 0,
            loss_ratio: 0.0,
            duplicates: 0,
            reordered: 0,
            active_s: 0.0,
            pps: 0.0,
            latency_us: None,
            latency_negative: 0,
            jitter_us: None,
            jitter_max_us: None,
        };
        let mut first_ns = u64::MAX;
        let mut last_ns = 0u64;
        let mut latency_min_ns = u64::MAX;
        let mut latency_max_ns = 0u64;
        let mut jitter_sum = 0.0;
        let mut jitter_streams = 0u64;
        let mut jitter_max: Option<f64> = None;
        for l in listeners {
            s.packets += l.packets;
            s.bytes += l.bytes;
            s.malformed += l.malformed;
            s.probes += l.probes;
            s.untracked += l.untracked;
            s.latency_negative += l.latency_negative;
            if let Some(first) = l.first_arrival_ns {
                first_ns = first_ns.min(first);
                last_ns = last_ns.max(l.last_arrival_ns);
            }
            latency_min_ns = latency_min_ns.min(l.latency_min_ns);
            latency_max_ns = latency_max_ns.max(l.latency_max_ns);
            latency.add(&l.latency_ns).expect(
                "histograms share bounds and hold only clamped values, so adding cannot overflow",
            );
            for stream in l.streams.values() {
                s.streams += 1;
                s.expected = s.expected.saturating_add(stream.expected());
                s.loss = s.loss.saturating_add(stream.loss());
                s.duplicates += stream.duplicates();
                s.reordered += stream.reordered();
                if let Some(j) = stream.jitter_us() {
                    jitter_sum += j;
                    jitter_streams += 1;
                    jitter_max = Some(jitter_max.map_or(j, |m: f64| m.max(j)));
                }
            }
        }
        if s.expected > 0 {
            s.loss_ratio = s.loss as f64 / s.expected as f64;
        }
        if first_ns < last_ns {
            s.active_s = (last_ns - first_ns) as f64 / 1e9;
            s.pps = (s.packets - 1) as f64 / s.active_s;
        }
        s.latency_us = LatencySummary::from_histogram(&latency, latency_min_ns, latency_max_ns);
        if jitter_streams > 0 {
            s.jitter_us = Some(jitter_sum / jitter_streams as f64);
            s.jitter_max_us = jitter_max;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{rtp_timestamp_at, MIN_PACKET_LEN, SSRC_BASE};

    const MS: u64 = 1_000_000;

    /// A probe of `stream` with probe sequence `seq`, sent at `send_ns` with
    /// the matching 90 kHz timestamp.
    fn probe(stream: u32, seq: u64, send_ns: u64) -> Vec<u8> {
        let mut buf = vec![0u8; MIN_PACKET_LEN + 4];
        ProbeRepr {
            rtp_seq: seq as u16,
            rtp_timestamp: rtp_timestamp_at(send_ns),
            ssrc: SSRC_BASE + stream,
            stream_index: stream,
            send_time_ns: send_ns,
            probe_seq: seq,
        }
        .emit(&mut buf)
        .expect("buffer fits a probe");
        buf
    }

    /// Feeds sequences sent every 20 ms and received `latency` later.
    fn feed(stats: &mut ListenerStats, stream: u32, seqs: &[u64], latency_ns: u64) -> Vec<Verdict> {
        seqs.iter()
            .map(|&seq| {
                let send = 1_000 * MS + seq * 20 * MS;
                stats.handle_datagram(send + latency_ns, &probe(stream, seq, send))
            })
            .collect()
    }

    #[test]
    fn clean_stream_has_no_loss_and_no_jitter() {
        let mut stats = ListenerStats::new();
        let seqs: Vec<u64> = (0..100).collect();
        let verdicts = feed(&mut stats, 0, &seqs, 300_000);
        assert!(verdicts.iter().all(|v| *v == Verdict::InOrder));
        let s = stats.summary();
        assert_eq!(
            (s.packets, s.probes, s.streams, s.expected, s.loss),
            (100, 100, 1, 100, 0)
        );
        assert_eq!((s.duplicates, s.reordered, s.malformed), (0, 0, 0));
        assert_eq!(s.bytes, 100 * (MIN_PACKET_LEN as u64 + 4));
        // 99 intervals of 20 ms.
        assert!((s.active_s - 1.98).abs() < 1e-9);
        assert!((s.pps - 50.0).abs() < 1e-9);
        assert!(s.jitter_us.expect("two or more packets") < 0.5);
        let lat = s.latency_us.expect("latency recorded");
        assert_eq!(lat.samples, 100);
        assert!((lat.p50_us - 300.0).abs() < 0.5);
        assert_eq!(lat.min_us, 300.0);
        assert_eq!(lat.max_us, 300.0);
    }

    #[test]
    fn gaps_are_loss_and_late_packets_are_reordered() {
        let mut stats = ListenerStats::new();
        // 4 and 7 lost, 2 arrives after 3, 9 arrives after 10.
        let verdicts = feed(&mut stats, 1, &[0, 1, 3, 2, 5, 6, 8, 10, 9], MS);
        assert_eq!(verdicts[3], Verdict::Reordered);
        assert_eq!(verdicts[8], Verdict::Reordered);
        let s = stats.summary();
        assert_eq!(
            (s.expected, s.loss, s.reordered, s.duplicates),
            (11, 2, 2, 0)
        );
        assert!((s.loss_ratio - 2.0 / 11.0).abs() < 1e-12);
    }

    #[test]
    fn duplicates_are_not_received_twice_nor_reordered() {
        let mut stats = ListenerStats::new();
        let verdicts = feed(&mut stats, 0, &[0, 1, 1, 2, 0, 3, 3], MS);
        assert_eq!(
            verdicts,
            [
                Verdict::InOrder,
                Verdict::InOrder,
                Verdict::Duplicate,
                Verdict::InOrder,
                Verdict::Duplicate,
                Verdict::InOrder,
                Verdict::Duplicate
            ]
        );
        let s = stats.summary();
        assert_eq!(
            (s.probes, s.expected, s.loss, s.duplicates, s.reordered),
            (7, 4, 0, 3, 0)
        );
    }

    #[test]
    fn duplicate_window_slides_and_forgets_reused_slots() {
        let mut stats = ListenerStats::new();
        // DUP_WINDOW apart: same ring slot, must not be taken for a duplicate.
        let v = feed(&mut stats, 0, &[5, 5 + DUP_WINDOW, 5 + DUP_WINDOW + 1], MS);
        assert_eq!(v, [Verdict::InOrder; 3]);
        // 6 is now older than the window: counted as a late first copy.
        assert_eq!(feed(&mut stats, 0, &[6, 6], MS), [Verdict::Reordered; 2]);
        // Within the window, a gap filler is reordered once, then a duplicate.
        assert_eq!(feed(&mut stats, 0, &[DUP_WINDOW], MS), [Verdict::Reordered]);
        assert_eq!(feed(&mut stats, 0, &[DUP_WINDOW], MS), [Verdict::Duplicate]);
    }

    #[test]
    fn streams_are_accounted_separately() {
        let mut stats = ListenerStats::new();
        feed(&mut stats, 0, &[0, 1, 2, 3], MS);
        feed(&mut stats, 1, &[10, 12], MS);
        let s = stats.summary();
        assert_eq!((s.streams, s.expected, s.loss), (2, 7, 1));
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut j = Jitter::default();
        assert_eq!(j.jitter_us(), None);
        // Packets every 20 ms (1800 ticks); the second arrives 1 ms late:
        // |D| = 90 ticks, J = 90/16 ticks.
        j.observe(0, 0);
        j.observe(21 * MS, 1_800);
        let expected_ticks = 90.0 / 16.0;
        let got = j.jitter_us().expect("two packets");
        assert!((got - expected_ticks / 0.09).abs() < 1e-9, "{got}");
        // Back on schedule at 40 ms: D = -1 ms again, J += (90 - J)/16.
        j.observe(40 * MS, 3_600);
        let expected_ticks = expected_ticks + (90.0 - expected_ticks) / 16.0;
        let got = j.jitter_us().expect("three packets");
        assert!((got - expected_ticks / 0.09).abs() < 1e-9, "{got}");
    }

    #[test]
    fn jitter_converges_to_alternating_delay_and_survives_rtp_wrap() {
        let mut j = Jitter::default();
        let start_ts = u32::MAX - 10_000;
        // Every other packet 2 ms late: |D| is 2 ms for every packet after
        // the first, so J converges to 2 ms = 2000 us.
        for i in 0..500u64 {
            let late = if i % 2 == 1 { 2 * MS } else { 0 };
            let ts = start_ts.wrapping_add((i * 1_800) as u32);
            j.observe(i * 20 * MS + late, ts);
        }
        let got = j.jitter_us().expect("many packets");
        assert!((got - 2_000.0).abs() < 1.0, "{got}");
    }

    #[test]
    fn latency_percentiles_come_from_the_distribution() {
        let mut stats = ListenerStats::new();
        // 1000 probes with latencies 1..=1000 us.
        for seq in 0..1000u64 {
            let send = 10 * MS + seq * MS;
            stats.handle_datagram(send + (seq + 1) * 1_000, &probe(0, seq, send));
        }
        let lat = stats.summary().latency_us.expect("recorded");
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.01;
        assert!(close(lat.p50_us, 500.0), "{lat:?}");
        assert!(close(lat.p90_us, 900.0), "{lat:?}");
        assert!(close(lat.p99_us, 990.0), "{lat:?}");
        assert!(close(lat.p999_us, 999.0), "{lat:?}");
        assert_eq!((lat.min_us, lat.max_us), (1.0, 1000.0));
        assert!(close(lat.mean_us, 500.5), "{lat:?}");
    }

    #[test]
    fn send_time_in_the_future_is_not_a_latency() {
        let mut stats = ListenerStats::new();
        stats.handle_datagram(5 * MS, &probe(0, 0, 6 * MS));
        let s = stats.summary();
        assert_eq!(s.latency_negative, 1);
        assert_eq!(s.latency_us, None);
        assert_eq!(s.probes, 1);
    }

    #[test]
    fn garbage_is_malformed_and_never_panics() {
        let mut stats = ListenerStats::new();
        let mut bad_magic = probe(0, 0, MS);
        bad_magic[12] ^= 0xff;
        let mut not_v2 = probe(0, 1, MS);
        not_v2[0] = 0;
        let inputs: [&[u8]; 5] = [&[], &[0x80], &[0xff; 35], &bad_magic, &not_v2];
        for input in inputs {
            assert!(matches!(
                stats.handle_datagram(2 * MS, input),
                Verdict::Malformed(_)
            ));
        }
        // Adversarial but well-formed extremes.
        let mut extreme = probe(0, u64::MAX, u64::MAX);
        stats.handle_datagram(0, &extreme);
        extreme = probe(0, 0, 0);
        stats.handle_datagram(u64::MAX, &extreme);
        let s = stats.summary();
        assert_eq!((s.packets, s.malformed, s.probes), (7, 5, 2));
        assert_eq!(s.expected, u64::MAX);
        assert_eq!(s.latency_negative, 1);
    }

    #[test]
    fn forged_stream_flood_is_capped() {
        let mut stats = ListenerStats::new();
        for stream in 0..(MAX_STREAMS as u32 + 10) {
            stats.handle_datagram(2 * MS, &probe(stream, 0, MS));
        }
        let s = stats.summary();
        assert_eq!(s.streams, MAX_STREAMS as u64);
        assert_eq!(s.untracked, 10);
    }

    #[test]
    fn totals_add_up_listeners() {
        let mut a = ListenerStats::new();
        let mut b = ListenerStats::new();
        feed(&mut a, 0, &[0, 1, 2, 3], 100_000);
        feed(&mut b, 0, &[0, 2, 3], 900_000);
        b.handle_datagram(0, b"garbage");
        let t = TrafficSummary::from_listeners(&[a, b]);
        assert_eq!(
            (
                t.packets,
                t.probes,
                t.malformed,
                t.streams,
                t.expected,
                t.loss
            ),
            (8, 7, 1, 2, 8, 1)
        );
        let lat = t.latency_us.expect("recorded");
        assert_eq!(lat.samples, 7);
        assert_eq!((lat.min_us, lat.max_us), (100.0, 900.0));
        assert!(TrafficSummary::from_listeners(&[]).latency_us.is_none());
    }
}
