//! The media flow table.
//!
//! Workers read it without locks; one control thread writes it. The index (key to flow) is a
//! [`left_right`] pair of hash maps: workers read the published copy while the writer applies a
//! batch to the other one, then swaps. A publish waits only for workers to finish the burst they
//! are in (they enter the table once per burst), so writers never stall a worker and a batch
//! becomes visible atomically. Flows themselves are shared by both copies through `Arc`, so the
//! index costs two small entries per flow and the flow state (counters, latch, RTP statistics)
//! exists once.
//!
//! Per-flow counters and RTP state are single-writer atomics: every accepted packet of a flow
//! comes from its one latched source, and RSS or SO_REUSEPORT hash that 5-tuple to one queue,
//! so one worker writes them. Drops for a wrong source may come from any worker and use
//! `fetch_add`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use left_right::{Absorb, ReadGuard, ReadHandle, ReadHandleFactory, WriteHandle};

use crate::backend::PortId;
use crate::rtp_stats::{SeqState, SsrcCell};

/// SSRCs tracked per flow (audio and video bundled on one port is the common maximum).
pub const SSRC_SLOTS: usize = 2;

/// Targets touched per load in [`Flow::touch_targets`]: one per 64-byte line.
const TARGETS_PER_LINE: usize = 64 / std::mem::size_of::<Target>();

/// Most subscribers one flow may replicate to.
pub const MAX_SUBSCRIBERS: usize = 4096;

/// Where a publisher's packets enter: ingress port (socket or NIC port) and destination.
///
/// Compact on purpose (20 bytes): the index holds two copies of every key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    ip: [u8; 16],
    port: PortId,
    udp_port: u16,
}

impl std::hash::Hash for FlowKey {
    /// Two words instead of one write per field: hashing is on every packet's path. Ports go
    /// into bits that are constant in IPv4-mapped addresses, so IPv4 keys never collide.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = self.ip;
        let hi = u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
        let lo = u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
        state.write_u64(hi);
        state.write_u64(lo ^ (u64::from(self.port) << 48 | u64::from(self.udp_port) << 32));
    }
}

impl FlowKey {
    /// Key for packets arriving on `port` addressed to `dst`.
    #[inline]
    pub fn new(port: PortId, dst: SocketAddr) -> Self {
        let ip = match dst.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        FlowKey {
            ip,
            port,
            udp_port: dst.port(),
        }
    }

    /// The ingress port.
    pub fn port(&self) -> PortId {
        self.port
    }

    /// The destination address the publisher sends to.
    pub fn dst(&self) -> SocketAddr {
        let v6 = std::net::Ipv6Addr::from(self.ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, self.udp_port)
    }
}

/// One destination of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Egress port.
    pub port: PortId,
    /// Subscriber address.
    pub addr: SocketAddr,
    /// Next-hop MAC for L2 backends (`None`: the egress port's default gateway MAC).
    pub mac: Option<[u8; 6]>,
}

/// What a control plane asks for: a flow to install or replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// Session name, for operators (`/flows`, logs).
    pub name: Arc<str>,
    /// Ingress port and address.
    pub key: FlowKey,
    /// The only accepted sender; `None` latches the first sender seen.
    pub source: Option<SocketAddr>,
    /// RTP clock rate for jitter, in Hz.
    pub clock_rate: u32,
    /// One target relays; more replicate. At most [`MAX_SUBSCRIBERS`].
    pub targets: Vec<Target>,
}

/// Per-flow counters.
#[derive(Debug, Default)]
pub struct FlowCounters {
    /// Packets accepted and forwarded.
    pub packets: AtomicU64,
    /// Bytes of accepted packets (UDP payload).
    pub bytes: AtomicU64,
    /// Packets dropped for this flow (wrong source, not media, bad RTP, ...).
    pub drops: AtomicU64,
    /// Monotonic time of the last accepted packet, ns (0 = never).
    pub last_seen_ns: AtomicU64,
    /// RTCP packets accepted.
    pub rtcp: AtomicU64,
    /// RTP packets from SSRCs beyond [`SSRC_SLOTS`] (forwarded, not tracked).
    pub untracked_ssrc: AtomicU64,
}

/// An installed flow: its spec plus live state.
///
/// `repr(C, align(64))` puts what every packet touches in four whole cache lines ahead of the
/// cold spec: counters and the clock rate (line 0), the first SSRC (line 1), the first target
/// and the latch (lines 2-3). All four hang off the one pointer the index returns, so the
/// pipeline's touch pass misses on them in parallel; a relay (one target) never follows
/// `spec.targets` to a second allocation, which used to add a dependent miss per packet.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Flow {
    /// Traffic counters.
    pub counters: FlowCounters,
    /// Copy of `spec.clock_rate`, kept hot.
    clock_rate: u32,
    /// `spec.targets.len()`, kept hot (at most [`MAX_SUBSCRIBERS`]).
    fanout: u32,
    /// Unique for the life of the table; a replaced flow gets a new id and fresh state.
    pub id: u64,
    ssrcs: [SsrcCell; SSRC_SLOTS],
    /// Copy of `spec.targets[0]`: what a relay needs, without a second allocation.
    first: Target,
    latched: OnceLock<SocketAddr>,
    /// What was asked for.
    pub spec: FlowSpec,
}

impl Flow {
    fn new(id: u64, spec: FlowSpec) -> Self {
        let latched = OnceLock::new();
        if let Some(src) = spec.source {
            let _ = latched.set(src);
        }
        // FlowTable::upsert refuses empty target lists; the placeholder is never returned by
        // `targets()` because `fanout` is then 0.
        let first = spec.targets.first().copied().unwrap_or(Target {
            port: 0,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            mac: None,
        });
        Flow {
            counters: FlowCounters::default(),
            clock_rate: spec.clock_rate,
            fanout: spec.targets.len() as u32,
            id,
            ssrcs: Default::default(),
            first,
            latched,
            spec,
        }
    }

    /// Loads one word from each hot cache line of the flow, so that a burst's misses overlap
    /// instead of stalling one packet at a time (stable Rust has no prefetch without `unsafe`;
    /// independent loads give the same memory-level parallelism). For a fan-out this also
    /// reads the `spec.targets` header, which [`Flow::touch_targets`] then follows.
    // ~4 loads/pkt at burst 32; saves ~60 ns/pkt at 1M flows vs. following spec.targets.
    #[inline]
    pub fn touch(&self) -> u64 {
        let mut t = self.counters.packets.load(Relaxed)
            ^ self.ssrcs[0].touch()
            ^ u64::from(self.first.port)
            ^ u64::from(self.latched.get().map_or(0, SocketAddr::port));
        if self.fanout > 1 {
            t ^= self.spec.targets.len() as u64;
        }
        t
    }

    /// Second touch level for fan-outs: one load per cache line of the target list (a
    /// [`Target`] is 44 bytes, so one per target is at most twice what is needed and cheap).
    /// Call after [`Flow::touch`] has run for the whole burst, so these misses overlap too.
    #[inline]
    pub fn touch_targets(&self) -> u64 {
        if self.fanout <= 1 {
            return 0;
        }
        self.spec
            .targets
            .iter()
            .step_by(TARGETS_PER_LINE)
            .fold(0, |t, x| t ^ u64::from(x.port))
    }

    /// The RTP clock rate (`spec.clock_rate`), from the hot lines.
    #[inline]
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Accepts `src` if it is the programmed or first-learned sender. The first packet of an
    /// unprogrammed flow latches its sender; after that one atomic load decides.
    #[inline]
    pub fn accepts(&self, src: SocketAddr) -> bool {
        match self.latched.get() {
            Some(s) => *s == src,
            None => *self.latched.get_or_init(|| src) == src,
        }
    }

    /// The sender this flow accepts, once known.
    pub fn source(&self) -> Option<SocketAddr> {
        self.latched.get().copied()
    }

    /// The subscribers.
    #[inline]
    pub fn targets(&self) -> &[Target] {
        if self.fanout == 1 {
            std::slice::from_ref(&self.first)
        } else {
            &self.spec.targets
        }
    }

    /// Accounts an RTP packet in its SSRC's statistics; `arrival` is in RTP clock units.
    #[inline]
    pub fn account_rtp(&self, ssrc: u32, seq: u16, rtp_ts: u32, arrival: u32) {
        for cell in &self.ssrcs {
            match cell.ssrc() {
                Some(s) if s == ssrc => {
                    let mut st = cell.load().unwrap_or_else(|| SeqState::new(ssrc, seq));
                    st.update(seq, rtp_ts, arrival);
                    cell.store(&st);
                    return;
                }
                Some(_) => continue,
                None => {
                    let mut st = SeqState::new(ssrc, seq);
                    st.update(seq, rtp_ts, arrival);
                    cell.store(&st);
                    return;
                }
            }
        }
        bump(&self.counters.untracked_ssrc);
    }

    /// Snapshots of the tracked SSRCs.
    pub fn ssrc_stats(&self) -> impl Iterator<Item = SeqState> + '_ {
        self.ssrcs.iter().filter_map(SsrcCell::load)
    }
}

/// Single-writer increment: a load and a store, no locked instruction.
#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

/// Single-writer add.
#[inline]
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

type Hasher = foldhash::fast::RandomState;

/// The index both left-right copies hold.
#[derive(Clone, Debug)]
pub struct FlowIndex {
    map: HashMap<FlowKey, Arc<Flow>, Hasher>,
}

impl FlowIndex {
    fn with_capacity(n: usize) -> Self {
        FlowIndex {
            map: HashMap::with_capacity_and_hasher(n, Hasher::default()),
        }
    }

    /// The flow for `key`.
    #[inline]
    pub fn get(&self, key: &FlowKey) -> Option<&Arc<Flow>> {
        self.map.get(key)
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no flows.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All flows, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Flow>> {
        self.map.values()
    }
}

/// One change to the table.
#[derive(Debug)]
pub enum FlowOp {
    /// Install or replace the flow at its key.
    Upsert(Arc<Flow>),
    /// Remove the flow at this key, if any.
    Remove(FlowKey),
}

impl Absorb<FlowOp> for FlowIndex {
    fn absorb_first(&mut self, op: &mut FlowOp, _: &Self) {
        match op {
            FlowOp::Upsert(f) => {
                self.map.insert(f.spec.key, Arc::clone(f));
            }
            FlowOp::Remove(k) => {
                self.map.remove(k);
            }
        }
    }

    fn sync_with(&mut self, first: &Self) {
        self.map.clone_from(&first.map);
    }
}

/// Why a flow change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowError {
    /// The table already holds `max_flows` flows.
    #[error("flow table full ({max} flows); raise media.max_flows")]
    Full {
        /// The configured capacity.
        max: usize,
    },
    /// A flow needs at least one and at most [`MAX_SUBSCRIBERS`] targets.
    #[error("flow {name:?} has {count} subscribers; allowed 1..={MAX_SUBSCRIBERS}")]
    Subscribers {
        /// Session name.
        name: String,
        /// How many were given.
        count: usize,
    },
}

/// The writer side: owned by one control thread.
#[derive(Debug)]
pub struct FlowTable {
    w: WriteHandle<FlowIndex, FlowOp>,
    max_flows: usize,
    next_id: u64,
    /// Flow count including unpublished changes.
    pending_len: usize,
    /// Keys present including unpublished changes (so `Full` and counts are exact).
    keys: std::collections::HashSet<FlowKey, Hasher>,
}

impl FlowTable {
    /// An empty table for up to `max_flows` flows. Both index copies are sized up front so
    /// installs never rehash under load.
    pub fn new(max_flows: usize) -> Self {
        let (w, _r) = left_right::new_from_empty(FlowIndex::with_capacity(max_flows));
        FlowTable {
            w,
            max_flows,
            next_id: 1,
            pending_len: 0,
            keys: std::collections::HashSet::with_capacity_and_hasher(max_flows, Hasher::default()),
        }
    }

    /// A handle factory workers use to get their own reader.
    pub fn reader(&self) -> FlowReaderFactory {
        FlowReaderFactory(self.w.factory())
    }

    /// Stages an install or replacement; visible to workers after [`FlowTable::publish`].
    /// A replaced flow starts with fresh counters and latch.
    ///
    /// # Errors
    /// [`FlowError::Full`] when the table is at capacity, [`FlowError::Subscribers`] for an
    /// empty or oversized target list.
    pub fn upsert(&mut self, spec: FlowSpec) -> Result<u64, FlowError> {
        if spec.targets.is_empty() || spec.targets.len() > MAX_SUBSCRIBERS {
            return Err(FlowError::Subscribers {
                name: spec.name.to_string(),
                count: spec.targets.len(),
            });
        }
        if !self.keys.contains(&spec.key) {
            if self.pending_len >= self.max_flows {
                return Err(FlowError::Full {
                    max: self.max_flows,
                });
            }
            self.keys.insert(spec.key);
            self.pending_len += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.w.append(FlowOp::Upsert(Arc::new(Flow::new(id, spec))));
        Ok(id)
    }

    /// Stages a removal; returns whether the key was present.
    pub fn remove(&mut self, key: FlowKey) -> bool {
        if self.keys.remove(&key) {
            self.pending_len -= 1;
            self.w.append(FlowOp::Remove(key));
            true
        } else {
            false
        }
    }

    /// Makes every staged change visible to workers at once. Waits only for workers to finish
    /// their current burst.
    pub fn publish(&mut self) {
        self.w.publish();
    }

    /// Flows including staged changes.
    pub fn len(&self) -> usize {
        self.pending_len
    }

    /// Whether the table (including staged changes) is empty.
    pub fn is_empty(&self) -> bool {
        self.pending_len == 0
    }

    /// Capacity.
    pub fn max_flows(&self) -> usize {
        self.max_flows
    }
}

/// Creates [`FlowReader`]s; `Send + Sync`, so it can be handed to every worker thread.
#[derive(Clone, Debug)]
pub struct FlowReaderFactory(ReadHandleFactory<FlowIndex>);

impl FlowReaderFactory {
    /// A reader for the calling thread.
    pub fn reader(&self) -> FlowReader {
        FlowReader(self.0.handle())
    }
}

/// A worker's (or the admin server's) read handle. Not `Sync`: one per thread.
#[derive(Debug)]
pub struct FlowReader(ReadHandle<FlowIndex>);

impl FlowReader {
    /// Enters the published index for the duration of the guard (one burst). `None` once the
    /// table's writer is gone (the appliance is shutting down).
    #[inline]
    pub fn enter(&self) -> Option<ReadGuard<'_, FlowIndex>> {
        self.0.enter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16, n: usize) -> FlowSpec {
        FlowSpec {
            name: "t".into(),
            key: FlowKey::new(0, SocketAddr::from(([127, 0, 0, 1], port))),
            source: None,
            clock_rate: 90_000,
            targets: (0..n)
                .map(|i| Target {
                    port: 0,
                    addr: SocketAddr::from(([127, 0, 0, 1], 41_000 + i as u16)),
                    mac: None,
                })
                .collect(),
        }
    }

    #[test]
    fn key_round_trips_v4_and_v6() {
        for a in ["127.0.0.1:40000", "[2001:db8::1]:5004"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(FlowKey::new(3, a).dst(), a);
            assert_eq!(FlowKey::new(3, a).port(), 3);
        }
        assert_eq!(std::mem::size_of::<FlowKey>(), 20);
    }

    #[test]
    fn changes_are_invisible_until_published() {
        let mut t = FlowTable::new(8);
        let r = t.reader().reader();
        t.upsert(spec(40_000, 1)).unwrap();
        assert_eq!(r.enter().unwrap().len(), 0);
        t.publish();
        assert_eq!(r.enter().unwrap().len(), 1);
        assert!(t.remove(spec(40_000, 1).key));
        assert!(!t.remove(spec(40_000, 1).key));
        t.publish();
        assert_eq!(r.enter().unwrap().len(), 0);
        // Both copies converge after another publish.
        t.publish();
        assert_eq!(r.enter().unwrap().len(), 0);
    }

    #[test]
    fn capacity_and_subscriber_limits() {
        let mut t = FlowTable::new(1);
        t.upsert(spec(1, 1)).unwrap();
        // Replacing an existing key does not need room.
        t.upsert(spec(1, 2)).unwrap();
        assert_eq!(t.upsert(spec(2, 1)), Err(FlowError::Full { max: 1 }));
        assert!(matches!(
            t.upsert(spec(1, 0)),
            Err(FlowError::Subscribers { count: 0, .. })
        ));
        assert!(t.upsert(spec(1, MAX_SUBSCRIBERS)).is_ok());
    }

    #[test]
    fn latching_accepts_only_the_first_sender() {
        let f = Flow::new(1, spec(1, 1));
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert!(f.accepts(a));
        assert!(!f.accepts(b));
        assert!(f.accepts(a));
        let mut s = spec(1, 1);
        s.source = Some(b);
        let f = Flow::new(2, s);
        assert!(!f.accepts(a));
        assert!(f.accepts(b));
    }

    #[test]
    fn hot_copies_match_the_spec() {
        for n in [1, 2, 8] {
            let f = Flow::new(1, spec(1, n));
            assert_eq!(f.targets(), &f.spec.targets[..]);
            assert_eq!(f.clock_rate(), f.spec.clock_rate);
        }
        // The hot lines start on a cache-line boundary (the layout comment relies on it).
        assert_eq!(std::mem::align_of::<Flow>(), 64);
    }

    #[test]
    fn third_ssrc_is_counted_untracked() {
        let f = Flow::new(1, spec(1, 1));
        for ssrc in 1..=3 {
            f.account_rtp(ssrc, 1, 0, 0);
        }
        assert_eq!(f.ssrc_stats().count(), 2);
        assert_eq!(f.counters.untracked_ssrc.load(Relaxed), 1);
    }

    #[test]
    fn readers_on_other_threads_see_published_batches_whole() {
        let mut t = FlowTable::new(10_000);
        let factory = t.reader();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let h = std::thread::spawn(move || {
            let r = factory.reader();
            let mut seen = 0;
            while !s2.load(Relaxed) {
                let g = r.enter().unwrap();
                // Batches are 100 flows; a reader never sees half of one.
                assert_eq!(g.len() % 100, 0);
                seen = seen.max(g.len());
            }
            seen
        });
        for b in 0..50u16 {
            for i in 0..100u16 {
                t.upsert(spec(b * 100 + i, 1)).unwrap();
            }
            t.publish();
        }
        stop.store(true, Relaxed);
        assert!(h.join().unwrap() <= 5_000);
    }
}
