//! Per-SSRC receive statistics (RFC 3550 appendix A.1 and A.8).
//!
//! The algorithm is a plain value ([`SeqState`]) so it is tested without threads; the flow
//! table stores it in [`SsrcCell`], a set of atomics written by the one worker that receives the
//! flow (RSS or SO_REUSEPORT keep a latched 5-tuple on one queue) and read by the admin thread.
//! Relaxed loads and stores compile to plain moves, so accounting costs no locked instruction.
//! A reader may see fields from two consecutive packets; statistics tolerate that.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// A jump larger than this (forwards) is a restart or a misbehaving sender.
const MAX_DROPOUT: u16 = 3000;
/// How far back a packet may be and still count as reordered rather than a restart.
const MAX_MISORDER: u16 = 100;
const SEQ_MOD: u32 = 1 << 16;

/// Sequence and jitter state of one SSRC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqState {
    /// The SSRC this state belongs to.
    pub ssrc: u32,
    /// First sequence number of the current run.
    pub base_seq: u16,
    /// Highest sequence number seen.
    pub max_seq: u16,
    /// Wrap count times 2^16.
    pub cycles: u32,
    /// Sequence number that would confirm a restart after a large jump (2^16 + 1 = none).
    pub bad_seq: u32,
    /// Packets received in the current run (duplicates included, as RFC 3550 counts them).
    pub received: u64,
    /// Packets that arrived after a higher sequence number.
    pub out_of_order: u64,
    /// Relative transit time of the previous packet, in RTP timestamp units.
    pub last_transit: u32,
    /// Interarrival jitter times 16, in RTP timestamp units (RFC 3550 A.8).
    pub jitter_q4: u32,
    /// Whether `last_transit` holds a value.
    pub has_transit: bool,
}

impl SeqState {
    /// State for a new SSRC whose first packet carries `seq`.
    pub fn new(ssrc: u32, seq: u16) -> Self {
        let mut s = SeqState {
            ssrc,
            ..SeqState::default()
        };
        s.restart(seq);
        s
    }

    fn restart(&mut self, seq: u16) {
        self.base_seq = seq;
        self.max_seq = seq;
        self.bad_seq = SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.out_of_order = 0;
    }

    /// Accounts one packet: `seq` and `rtp_ts` from its header, `arrival` in the same clock
    /// units as the RTP timestamp.
    pub fn update(&mut self, seq: u16, rtp_ts: u32, arrival: u32) {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
            // A big jump: believe it only if the next packet follows it.
            if u32::from(seq) == self.bad_seq {
                self.restart(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
                return;
            }
        } else {
            self.out_of_order += 1;
        }
        self.received += 1;

        let transit = arrival.wrapping_sub(rtp_ts);
        if self.has_transit {
            self.jitter_q4 = jitter_step(self.jitter_q4, self.last_transit, transit);
        }
        self.last_transit = transit;
        self.has_transit = true;
    }

    /// Highest sequence number with wrap count.
    pub fn extended_max(&self) -> u64 {
        u64::from(self.cycles) + u64::from(self.max_seq)
    }

    /// Packets expected in the current run.
    pub fn expected(&self) -> u64 {
        self.extended_max() + 1 - u64::from(self.base_seq)
    }

    /// Packets lost in the current run; negative when duplicates outnumber losses.
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }
}

/// RFC 3550 A.8: `J += (|D| - J) / 16`, kept scaled by 16 to stay in integers. Wrapping, so
/// that timestamps chosen to make it overflow cannot panic a debug build.
#[inline]
fn jitter_step(jitter_q4: u32, last_transit: u32, transit: u32) -> u32 {
    let d = (transit.wrapping_sub(last_transit) as i32).unsigned_abs();
    jitter_q4
        .wrapping_add(d)
        .wrapping_sub(jitter_q4.wrapping_add(8) >> 4)
}

/// [`SsrcCell::flags`] bit: the cell tracks an SSRC.
const IN_USE: u32 = 1;
/// [`SsrcCell::flags`] bit: `last_transit` holds a value.
const HAS_TRANSIT: u32 = 2;
/// [`SsrcCell::flags`] bit, kept by every store: the flow owning this (first) cell also tracks
/// a second SSRC, so its pipeline touch pass loads that cell's line too.
const SECOND: u32 = 4;

/// [`SeqState`] in atomics, written by one worker and read by anyone.
///
/// `repr(C)` with what an in-order packet touches first: `ids`, `received`, `timing`, `flags`
/// and `clock_rate` are the first 32 bytes, so a flow can place them in its hot cache line and
/// leave `wrap` and `out_of_order` (wraps, jumps and late packets only) in the next one.
#[derive(Debug, Default)]
#[repr(C)]
pub struct SsrcCell {
    /// ssrc << 32 | base_seq << 16 | max_seq
    ids: AtomicU64,
    received: AtomicU64,
    /// last_transit << 32 | jitter_q4
    timing: AtomicU64,
    /// bit 0: in use, bit 1: has_transit, bit 2: the flow tracks a second SSRC
    flags: AtomicU32,
    /// RTP clock rate in Hz for jitter (fixed when the cell is made).
    clock_rate: u32,
    /// cycles << 32 | bad_seq
    wrap: AtomicU64,
    out_of_order: AtomicU64,
}

/// Bytes at the start of [`SsrcCell`] that the in-order path reads and writes.
pub(crate) const SSRC_HOT_BYTES: usize = 32;
const _: () = assert!(std::mem::offset_of!(SsrcCell, wrap) == SSRC_HOT_BYTES);
const _: () = assert!(std::mem::size_of::<SsrcCell>() == 48);

impl SsrcCell {
    /// An empty cell for a stream with this RTP clock rate (Hz).
    pub fn new(clock_rate: u32) -> Self {
        SsrcCell {
            clock_rate,
            ..SsrcCell::default()
        }
    }

    /// The RTP clock rate the cell converts arrival times with.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Marks (on the first cell of a flow) that the flow tracks a second SSRC; see
    /// [`SsrcCell::has_second`]. Only the owning worker calls this.
    pub(crate) fn mark_second(&self) {
        let f = self.flags.load(Relaxed);
        self.flags.store(f | SECOND, Relaxed);
    }

    /// Whether the cell tracks an SSRC.
    #[inline]
    pub(crate) fn in_use(&self) -> bool {
        self.flags.load(Relaxed) & IN_USE != 0
    }

    /// Whether [`SsrcCell::mark_second`] was called.
    #[inline]
    pub(crate) fn has_second(&self) -> bool {
        self.flags.load(Relaxed) & SECOND != 0
    }

    /// The stored state, or `None` if the cell was never used.
    pub fn load(&self) -> Option<SeqState> {
        let flags = self.flags.load(Relaxed);
        if flags & IN_USE == 0 {
            return None;
        }
        let ids = self.ids.load(Relaxed);
        let wrap = self.wrap.load(Relaxed);
        let timing = self.timing.load(Relaxed);
        Some(SeqState {
            ssrc: (ids >> 32) as u32,
            base_seq: (ids >> 16) as u16,
            max_seq: ids as u16,
            cycles: (wrap >> 32) as u32,
            bad_seq: wrap as u32,
            received: self.received.load(Relaxed),
            out_of_order: self.out_of_order.load(Relaxed),
            last_transit: (timing >> 32) as u32,
            jitter_q4: timing as u32,
            has_transit: flags & HAS_TRANSIT != 0,
        })
    }

    /// One load from the cell's hot part (see `Flow::touch`).
    #[inline]
    pub fn touch(&self) -> u64 {
        u64::from(self.flags.load(Relaxed))
    }

    /// The SSRC held by this cell, if any (one load on the hot path).
    pub fn ssrc(&self) -> Option<u32> {
        if self.flags.load(Relaxed) & IN_USE == 0 {
            None
        } else {
            Some((self.ids.load(Relaxed) >> 32) as u32)
        }
    }

    /// Accounts one packet (see [`SeqState::update`]) if this cell tracks `ssrc`, or takes the
    /// cell for `ssrc` if it is unused; `false`, changing nothing, if it tracks another SSRC.
    /// Only the worker that owns the flow calls this.
    // The in-order case (no wrap, no jump) changes three words and is done on them directly:
    // about a third of the instructions of loading, updating and storing a whole SeqState.
    #[inline]
    pub fn account(&self, ssrc: u32, seq: u16, rtp_ts: u32, arrival: u32) -> bool {
        let flags = self.flags.load(Relaxed);
        let ids = self.ids.load(Relaxed);
        if flags & IN_USE != 0 && (ids >> 32) as u32 != ssrc {
            return false;
        }
        let max_seq = ids as u16;
        if flags & (IN_USE | HAS_TRANSIT) == IN_USE | HAS_TRANSIT
            && seq.wrapping_sub(max_seq) < MAX_DROPOUT
            && seq >= max_seq
        {
            // Exactly what SeqState::update does on this path.
            self.ids.store(ids & !0xffff | u64::from(seq), Relaxed);
            let received = self.received.load(Relaxed);
            self.received.store(received.wrapping_add(1), Relaxed);
            let timing = self.timing.load(Relaxed);
            let transit = arrival.wrapping_sub(rtp_ts);
            let jitter = jitter_step(timing as u32, (timing >> 32) as u32, transit);
            self.timing
                .store(u64::from(transit) << 32 | u64::from(jitter), Relaxed);
            return true;
        }
        self.account_slow(ssrc, seq, rtp_ts, arrival)
    }

    /// [`SsrcCell::account`] through a whole [`SeqState`]: first packet, wraps, jumps, late
    /// packets.
    #[inline(never)]
    fn account_slow(&self, ssrc: u32, seq: u16, rtp_ts: u32, arrival: u32) -> bool {
        let mut s = match self.load() {
            Some(s) if s.ssrc == ssrc => s,
            Some(_) => return false,
            None => SeqState::new(ssrc, seq),
        };
        s.update(seq, rtp_ts, arrival);
        self.store(&s);
        true
    }

    /// Stores `s`; only the worker that owns the flow calls this.
    pub fn store(&self, s: &SeqState) {
        self.ids.store(
            u64::from(s.ssrc) << 32 | u64::from(s.base_seq) << 16 | u64::from(s.max_seq),
            Relaxed,
        );
        self.wrap
            .store(u64::from(s.cycles) << 32 | u64::from(s.bad_seq), Relaxed);
        self.received.store(s.received, Relaxed);
        self.out_of_order.store(s.out_of_order, Relaxed);
        self.timing.store(
            u64::from(s.last_transit) << 32 | u64::from(s.jitter_q4),
            Relaxed,
        );
        let transit = if s.has_transit { HAS_TRANSIT } else { 0 };
        let keep = self.flags.load(Relaxed) & SECOND;
        self.flags.store(IN_USE | transit | keep, Relaxed);
    }
}

/// Converts a monotonic time in nanoseconds into RTP clock units at `clock_rate` Hz, modulo
/// 2^32 as RTP timestamps are. Exact while `now_ns * clock_rate` fits 64 bits after dividing
/// by 1,000: about 6 years of worker uptime at 90 kHz.
#[inline]
pub fn to_rtp_units(now_ns: u64, clock_rate: u32) -> u32 {
    ((now_ns / 1_000).wrapping_mul(u64::from(clock_rate)) / 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(seqs: &[u16]) -> SeqState {
        let mut s = SeqState::new(7, seqs[0]);
        for &q in seqs {
            s.update(q, 0, 0);
        }
        s
    }

    #[test]
    fn in_order_has_no_loss() {
        let seqs: Vec<u16> = (100..200).collect();
        let s = feed(&seqs);
        assert_eq!(s.expected(), 100);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.out_of_order, 0);
    }

    #[test]
    fn gaps_count_as_lost_and_late_packets_as_out_of_order() {
        let s = feed(&[1, 2, 4, 5, 3, 8]);
        assert_eq!(s.expected(), 8);
        assert_eq!(s.received, 6);
        assert_eq!(s.lost(), 2); // 6 and 7
        assert_eq!(s.out_of_order, 1); // 3
    }

    #[test]
    fn wraps_around_sequence_space() {
        let seqs: Vec<u16> = (65530..=65535).chain(0..10).collect();
        let s = feed(&seqs);
        assert_eq!(s.cycles, SEQ_MOD);
        assert_eq!(s.expected(), 16);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn a_confirmed_big_jump_restarts_the_run() {
        let s = feed(&[10, 11, 30000, 30001, 30002]);
        assert_eq!(s.base_seq, 30001);
        assert_eq!(s.expected(), 2);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn jitter_is_zero_for_perfect_pacing_and_grows_with_variation() {
        let mut s = SeqState::new(1, 0);
        for i in 0..100u32 {
            s.update(i as u16, i * 3000, 5000 + i * 3000);
        }
        assert_eq!(s.jitter(), 0);
        let mut s = SeqState::new(1, 0);
        for i in 0..1000u32 {
            let wobble = if i % 2 == 0 { 0 } else { 900 };
            s.update(i as u16, i * 3000, 5000 + i * 3000 + wobble);
        }
        // |D| is 900 on every packet, so J converges to 900.
        assert!((880..=900).contains(&s.jitter()), "jitter {}", s.jitter());
    }

    #[test]
    fn rtp_units_at_90khz() {
        assert_eq!(to_rtp_units(1_000_000_000, 90_000), 90_000);
        assert_eq!(to_rtp_units(20_000_000, 48_000), 960);
    }

    proptest! {
        #[test]
        fn cell_round_trips(ssrc: u32, base: u16, max: u16, cycles: u32, bad in 0u32..=65537,
                            received: u64, ooo: u64, transit: u32, jitter: u32, has: bool) {
            let s = SeqState { ssrc, base_seq: base, max_seq: max, cycles, bad_seq: bad,
                received, out_of_order: ooo, last_transit: transit, jitter_q4: jitter,
                has_transit: has };
            let c = SsrcCell::default();
            prop_assert_eq!(c.load(), None);
            c.store(&s);
            prop_assert_eq!(c.load(), Some(s));
            prop_assert_eq!(c.ssrc(), Some(ssrc));
        }

        /// The cell's fast path and slow path together behave exactly like loading, updating and
        /// storing a SeqState, on runs mixing in-order packets, gaps, late packets, duplicates,
        /// wraps, big jumps and foreign SSRCs.
        #[test]
        fn cell_account_matches_seq_state(
            start: u16,
            steps in proptest::collection::vec(
                (prop_oneof![
                    8 => Just(1u16), 2 => 0u16..5, 1 => Just(0u16), 1 => 60_000u16..,
                    1 => 2_000u16..4_000, 1 => any::<u16>(),
                ], 0u32..4, any::<u32>(), any::<u32>()),
                1..300),
        ) {
            let cell = SsrcCell::default();
            let mut model: Option<SeqState> = None;
            let mut seq = start;
            for (delta, which, ts, arrival) in steps {
                seq = seq.wrapping_add(delta);
                // SSRC 7 most of the time, sometimes another one.
                let ssrc = if which == 0 { 9 } else { 7 };
                let took = cell.account(ssrc, seq, ts, arrival);
                let expect = match &mut model {
                    Some(m) if m.ssrc != ssrc => false,
                    Some(m) => { m.update(seq, ts, arrival); true }
                    None => {
                        let mut m = SeqState::new(ssrc, seq);
                        m.update(seq, ts, arrival);
                        model = Some(m);
                        true
                    }
                };
                prop_assert_eq!(took, expect);
                prop_assert_eq!(cell.load(), model);
            }
        }

        #[test]
        fn loss_matches_dropped_packets(drop_mask in proptest::collection::vec(any::<bool>(), 2..2000)) {
            // Packet 0 and the last packet always arrive, so expected covers the whole run.
            let n = drop_mask.len();
            let mut s = SeqState::new(1, 5);
            let mut sent_lost = 0i64;
            for (i, &d) in drop_mask.iter().enumerate() {
                if d && i != 0 && i != n - 1 { sent_lost += 1; continue; }
                s.update((5 + i) as u16, 0, 0);
            }
            prop_assert_eq!(s.expected(), n as u64);
            prop_assert_eq!(s.lost(), sent_lost);
        }
    }
}
