//! The media flow table.
//!
//! Workers read it without locks; one control thread writes it. The index (key to flow) is a
//! [`left_right`] pair of [`FlowIndex`]es: workers read the published copy while the writer
//! applies a batch to the other one, then swaps. A publish waits only for workers to finish the
//! burst they are in (they enter the table once per burst), so writers never stall a worker and
//! a batch becomes visible atomically. Flows themselves are shared by both copies through `Arc`,
//! so the index costs two small slots per flow and the flow state (counters, latch, RTP
//! statistics) exists once.
//!
//! [`FlowIndex`] is an open-addressing table built for a burst of lookups into a table far
//! larger than the caches: a power-of-two array of 64-byte buckets, each one cache line holding
//! two full keys and their `Arc<Flow>`s, sized to at least twice `max_flows` slots (load factor
//! at most 1/2). A key hashes to a bucket and probes linearly from its first slot, so the common
//! lookup is one cache-line load with no dependent second miss, and a burst's loads are issued
//! in a pass of their own ([`FlowIndex::get_many`]) so they overlap. Removal shifts the rest of
//! the cluster back (Knuth's algorithm R for linear probing): no tombstones, so lookups of
//! absent keys stay short however much the table churns.
//!
//! Per-flow counters and RTP state are single-writer atomics: every accepted packet of a flow
//! comes from its one latched source, and RSS or SO_REUSEPORT hash that 5-tuple to one queue,
//! so one worker writes them. Drops for a wrong source may come from any worker and use
//! `fetch_add`.
//!
//! Memory (`cargo run --release -p popmesh-media --example flow_memory -- 1000000 1`, and `-- 1000000
//! 8`): about 760 bytes per relay flow and 1,130 with 8 subscribers, as with the `HashMap`
//! index before. The index is 64 bytes per two slots, 2 slots per flow, in two copies: about 128
//! bytes per flow, all of it allocated and touched when the table is built (130 MiB for
//! `max_flows` = 1M); the rest is the `Arc<Flow>` (448 bytes: a 64-byte line of reference
//! counts, then the 384-byte `Flow`), its target list and name, and the writer's key set.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use left_right::{Absorb, ReadGuard, ReadHandle, ReadHandleFactory, WriteHandle};

use crate::backend::PortId;
use crate::rtp_stats::{SeqState, SsrcCell};

/// SSRCs tracked per flow (audio and video bundled on one port is the common maximum).
pub const SSRC_SLOTS: usize = 2;

// `Flow` holds the slots as two named fields so the first one can sit in the hot lines.
const _: () = assert!(SSRC_SLOTS == 2);

/// Targets touched per load in [`Flow::touch_more`]: one per 64-byte line.
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
    /// Two words instead of one write per field; ports go into bits that are constant in
    /// IPv4-mapped addresses, so distinct IPv4 keys hash distinct words.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [hi, lo] = self.words();
        state.write_u64(hi);
        state.write_u64(lo);
    }
}

impl FlowKey {
    /// The key as two words of hash input. Ports go into bits that are constant in IPv4-mapped
    /// addresses, so distinct IPv4 keys give distinct words (IPv6 keys may collide; the index
    /// compares whole keys).
    #[inline]
    fn words(&self) -> [u64; 2] {
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = self.ip;
        let hi = u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
        let lo = u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
        [
            hi,
            lo ^ (u64::from(self.port) << 48 | u64::from(self.udp_port) << 32),
        ]
    }

    /// Key for packets arriving on `port` addressed to `dst`.
    #[inline]
    pub fn new(port: PortId, dst: SocketAddr) -> Self {
        let ip = match dst {
            // ::ffff:a.b.c.d, built as one integer (this runs for every packet).
            SocketAddr::V4(a) => (0xffff_u128 << 32 | u128::from(a.ip().to_bits())).to_be_bytes(),
            SocketAddr::V6(a) => a.ip().octets(),
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
/// `repr(C, align(64))` puts everything a relayed packet touches in the first three whole
/// cache lines, ahead of the cold spec: the counters and the first SSRC's state (lines 0-1),
/// the first target (lines 1-2), the source latch, clock rate, fan-out and whether a second
/// SSRC is tracked (line 2). All three hang off the one pointer the index returns, so the
/// pipeline's touch pass misses on them in parallel; a relay (one target) never follows
/// `spec.targets` to a second allocation. A second SSRC (audio and video bundled on one port)
/// lives in line 3, which is loaded only for flows that have one.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Flow {
    /// Traffic counters.
    pub counters: FlowCounters,
    ssrc0: SsrcCell,
    /// Copy of `spec.targets[0]`: what a relay needs, without a second allocation.
    first: Target,
    latched: OnceLock<SocketAddr>,
    /// Copy of `spec.clock_rate`, kept hot.
    clock_rate: u32,
    /// `spec.targets.len()`, kept hot (at most [`MAX_SUBSCRIBERS`]).
    fanout: u32,
    /// `1 << 32 | ssrc` once `ssrc1` tracks an SSRC, else 0: lets packets of a third SSRC be
    /// counted untracked, and [`Flow::touch_more`] skip line 3, without loading `ssrc1`.
    ssrc1_tag: AtomicU64,
    /// Unique for the life of the table; a replaced flow gets a new id and fresh state.
    pub id: u64,
    ssrc1: SsrcCell,
    /// What was asked for.
    pub spec: FlowSpec,
}

/// Bytes of [`Flow`] a relayed packet touches (see [`Flow::touch`]).
const HOT_BYTES: usize = 3 * 64;
const _: () = assert!(std::mem::offset_of!(Flow, ssrc1_tag) + 8 <= HOT_BYTES);
const _: () = assert!(std::mem::offset_of!(Flow, ssrc1) >= HOT_BYTES);
const _: () = assert!(std::mem::offset_of!(Flow, ssrc1) + 48 <= HOT_BYTES + 64);

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
            ssrc0: SsrcCell::default(),
            first,
            latched,
            clock_rate: spec.clock_rate,
            fanout: spec.targets.len() as u32,
            ssrc1_tag: AtomicU64::new(0),
            id,
            ssrc1: SsrcCell::default(),
            spec,
        }
    }

    /// Loads one word from each of the three hot cache lines of the flow, so that a burst's
    /// misses overlap instead of stalling one packet at a time (stable Rust has no prefetch
    /// without `unsafe`; independent loads give the same memory-level parallelism). For a
    /// fan-out, also the `spec.targets` header, whose address needs no load. Nothing else, so
    /// that a pass over a whole burst fits in the reorder window.
    #[inline]
    pub fn touch(&self) -> u64 {
        let t =
            self.counters.packets.load(Relaxed) ^ self.ssrc0.touch() ^ self.ssrc1_tag.load(Relaxed);
        // The branch waits for line 2, but is predicted (flows of a burst are alike), so the
        // loads behind it are issued at once.
        if self.fanout > 1 {
            t ^ self.spec.targets.len() as u64
        } else {
            t
        }
    }

    /// Second touch level, after [`Flow::touch`] ran for the whole burst (it reads the lines
    /// that one loaded): the second SSRC's line if the flow has one, and for a fan-out one load
    /// per target (a [`Target`] is 44 bytes, so that covers every line of the list).
    #[inline]
    pub fn touch_more(&self) -> u64 {
        let mut t = 0;
        if self.ssrc1_tag.load(Relaxed) != 0 {
            t ^= self.ssrc1.touch();
        }
        if self.fanout > 1 {
            t ^= self
                .spec
                .targets
                .iter()
                .step_by(TARGETS_PER_LINE)
                .fold(0, |t, x| t ^ u64::from(x.port));
        }
        t
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
    #[inline(always)]
    pub fn account_rtp(&self, ssrc: u32, seq: u16, rtp_ts: u32, arrival: u32) {
        // Cells fill in order, so the first one is the common case and the second is only
        // looked at for a second SSRC.
        if self.ssrc0.account(ssrc, seq, rtp_ts, arrival) {
            return;
        }
        let tag = 1 << 32 | u64::from(ssrc);
        match self.ssrc1_tag.load(Relaxed) {
            0 => {
                self.ssrc1.account(ssrc, seq, rtp_ts, arrival);
                self.ssrc1_tag.store(tag, Relaxed);
            }
            t if t == tag => {
                self.ssrc1.account(ssrc, seq, rtp_ts, arrival);
            }
            _ => bump(&self.counters.untracked_ssrc),
        }
    }

    /// Snapshots of the tracked SSRCs.
    pub fn ssrc_stats(&self) -> impl Iterator<Item = SeqState> + '_ {
        [&self.ssrc0, &self.ssrc1]
            .into_iter()
            .filter_map(SsrcCell::load)
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

/// Slots per [`Bucket`].
const LANES: usize = 2;

/// One cache line of the index: two keys and their flows. A slot is empty when its flow is
/// `None` (its key is then meaningless).
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Bucket {
    keys: [FlowKey; LANES],
    flows: [Option<Arc<Flow>>; LANES],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    const EMPTY: Bucket = Bucket {
        keys: [FlowKey {
            ip: [0; 16],
            port: 0,
            udp_port: 0,
        }; LANES],
        flows: [None, None],
    };

    /// One load from the bucket's line (see [`FlowIndex::get_many`]).
    #[inline]
    fn touch(&self) -> u64 {
        u64::from(self.keys[0].udp_port)
    }
}

/// The index both left-right copies hold: open addressing with linear probing over slots,
/// two slots per cache-line bucket (see the module docs).
///
/// Invariants: the slot count is a power of two and at least 4; a key's home is the first slot
/// of its hash bucket and every slot from its home to where it sits is occupied (so a probe
/// stops at the first empty slot); `len` counts occupied slots.
#[derive(Clone, Debug)]
pub struct FlowIndex {
    buckets: Box<[Bucket]>,
    /// `64 - log2(buckets.len())`: the hash's top bits pick the bucket.
    shift: u32,
    /// Per-table hash keys, shared by both copies (cloned), so lookup and insert agree.
    seeds: [u64; 2],
    len: usize,
}

/// Keys a burst resolves per pass of [`FlowIndex::get_many`].
const BATCH: usize = 32;

impl FlowIndex {
    /// An index with room for `max_flows` flows at load factor 1/2 or less.
    fn with_capacity(max_flows: usize) -> Self {
        let slots = max_flows
            .saturating_mul(2)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1));
        let std_keys = std::collections::hash_map::RandomState::new();
        Self::with_slots(
            slots,
            [std_keys.hash_one(0x5eed_u64), std_keys.hash_one(0xf10e_u64)],
        )
    }

    /// An index of `slots` slots (rounded up to a power of two, at least 4) with fixed hash
    /// keys. It holds at most `slots` flows; the table keeps it at half that.
    fn with_slots(slots: usize, seeds: [u64; 2]) -> Self {
        let buckets = (slots.max(2 * LANES) / LANES)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1));
        FlowIndex {
            buckets: vec![Bucket::EMPTY; buckets].into_boxed_slice(),
            shift: 64 - buckets.trailing_zeros(),
            seeds,
            len: 0,
        }
    }

    /// The bucket `key` hashes to: one folded 64x64->128 multiply of the key words with the
    /// table's keys, then Fibonacci hashing, whose top bits are the best mixed.
    #[inline]
    fn home(&self, key: &FlowKey) -> usize {
        let [hi, lo] = key.words();
        let m = u128::from(hi ^ self.seeds[0]) * u128::from(lo ^ self.seeds[1]);
        let h = (m as u64) ^ ((m >> 64) as u64);
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    fn slot_mask(&self) -> usize {
        self.buckets.len() * LANES - 1
    }

    fn slot(&self, s: usize) -> (&FlowKey, &Option<Arc<Flow>>) {
        let b = &self.buckets[s / LANES];
        (&b.keys[s % LANES], &b.flows[s % LANES])
    }

    /// Probes from the first slot of bucket `home`; stops at the key or the first empty slot.
    /// The home bucket is checked inline: at load 1/2 it settles about 7 lookups in 8.
    #[inline]
    fn find_from(&self, home: usize, key: &FlowKey) -> Option<&Arc<Flow>> {
        let b = self.buckets.get(home)?;
        for (k, f) in b.keys.iter().zip(&b.flows) {
            match f {
                None => return None,
                Some(f) if k == key => return Some(f),
                Some(_) => {}
            }
        }
        self.probe((home + 1) & (self.buckets.len() - 1), key)
    }

    /// [`FlowIndex::find_from`] from bucket `start` on, past a full home bucket.
    #[inline(never)]
    fn probe(&self, start: usize, key: &FlowKey) -> Option<&Arc<Flow>> {
        let mask = self.buckets.len() - 1;
        let mut b = start;
        // Bounded so that even a completely full index (never built by FlowTable) terminates.
        for _ in 0..self.buckets.len() {
            let bucket = self.buckets.get(b)?;
            for (k, f) in bucket.keys.iter().zip(&bucket.flows) {
                match f {
                    None => return None,
                    Some(f) if k == key => return Some(f),
                    Some(_) => {}
                }
            }
            b = (b + 1) & mask;
        }
        None
    }

    /// The flow for `key`.
    #[inline]
    pub fn get(&self, key: &FlowKey) -> Option<&Arc<Flow>> {
        self.find_from(self.home(key), key)
    }

    /// Looks up a burst: `out[i]` becomes the flow for `keys[i]` (`None` for no key or no
    /// flow). Works in passes over up to 32 keys: hash every key, load every home bucket's line
    /// (independent loads, so their misses overlap), then probe, now from the cache. Extra
    /// elements of the longer slice are left alone.
    // 1 line per key (2 for about 1 key in 8), overlapped: ~10-14 ns/key at 1M flows on the
    // 2-vCPU EPYC VM, where one random line costs ~100 ns alone (benches/pipeline.rs).
    #[inline]
    pub fn get_many<'a>(&'a self, keys: &[Option<FlowKey>], out: &mut [Option<&'a Flow>]) {
        let mut sink = 0u64;
        for (keys, out) in keys.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            // Hashing is a pass of its own, so that the load pass is a few instructions per key:
            // all of a burst's loads then fit in the reorder window and miss in parallel.
            let mut homes = [usize::MAX; BATCH];
            for (h, k) in homes.iter_mut().zip(keys) {
                if let Some(k) = k {
                    *h = self.home(k);
                }
            }
            for h in &homes[..keys.len()] {
                sink ^= self.buckets.get(*h).map_or(0, Bucket::touch);
            }
            for ((o, h), k) in out.iter_mut().zip(&homes).zip(keys) {
                *o = match k {
                    Some(k) => self.find_from(*h, k).map(|f| &**f),
                    None => None,
                };
            }
        }
        // Keeps the touch loads from being optimised away.
        std::hint::black_box(sink);
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no flows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All flows, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Flow>> {
        self.buckets.iter().flat_map(|b| b.flows.iter().flatten())
    }

    /// Installs `flow` at its key, replacing any flow there. Returns `false`, changing
    /// nothing, only if the key is new and every slot is taken, which [`FlowTable`]'s capacity
    /// check rules out.
    fn upsert(&mut self, flow: Arc<Flow>) -> bool {
        let key = flow.spec.key;
        let mask = self.slot_mask();
        let mut s = self.home(&key) * LANES;
        for _ in 0..=mask {
            let b = &mut self.buckets[s / LANES];
            let lane = s % LANES;
            match &b.flows[lane] {
                Some(_) if b.keys[lane] != key => s = (s + 1) & mask,
                Some(_) => {
                    b.flows[lane] = Some(flow);
                    return true;
                }
                None => {
                    b.keys[lane] = key;
                    b.flows[lane] = Some(flow);
                    self.len += 1;
                    return true;
                }
            }
        }
        false
    }

    /// Removes the flow at `key`, then closes the gap by shifting back every later member of
    /// the cluster that may legally sit there (its home is not after the gap), so probes never
    /// need tombstones.
    fn remove(&mut self, key: &FlowKey) -> Option<Arc<Flow>> {
        let mask = self.slot_mask();
        let mut hole = self.home(key) * LANES;
        let mut found = false;
        for _ in 0..=mask {
            match self.slot(hole) {
                (_, None) => return None,
                (k, Some(_)) if k == key => {
                    found = true;
                    break;
                }
                _ => hole = (hole + 1) & mask,
            }
        }
        if !found {
            return None;
        }
        let removed = self.buckets[hole / LANES].flows[hole % LANES].take();
        self.len -= 1;
        let mut j = hole;
        for _ in 0..mask {
            j = (j + 1) & mask;
            let (k, f) = self.slot(j);
            if f.is_none() {
                break;
            }
            let home = self.home(k) * LANES;
            // Distance from its home to where it sits, against the distance from the hole:
            // it may move back into the hole when the hole is not before its home.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                let k = *k;
                let f = self.buckets[j / LANES].flows[j % LANES].take();
                let h = &mut self.buckets[hole / LANES];
                h.keys[hole % LANES] = k;
                h.flows[hole % LANES] = f;
                hole = j;
            }
        }
        removed
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
                let installed = self.upsert(Arc::clone(f));
                // FlowTable admits a new key only while fewer than max_flows are staged, and the
                // index has at least twice that many slots.
                debug_assert!(
                    installed,
                    "flow index full despite the table's capacity check"
                );
            }
            FlowOp::Remove(k) => {
                self.remove(k);
            }
        }
    }

    fn sync_with(&mut self, first: &Self) {
        self.buckets.clone_from(&first.buckets);
        self.shift = first.shift;
        self.seeds = first.seeds;
        self.len = first.len;
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
    use proptest::prelude::*;
    use std::collections::HashMap;

    impl FlowIndex {
        /// Checks the invariants the probes rely on (see the type's docs).
        fn assert_invariants(&self) {
            let mask = self.slot_mask();
            let mut occupied = 0;
            for s in 0..=mask {
                let (k, f) = self.slot(s);
                let Some(f) = f else { continue };
                occupied += 1;
                assert_eq!(f.spec.key, *k, "slot {s} holds a flow under another key");
                let home = self.home(k) * LANES;
                let mut p = home;
                while p != s {
                    assert!(
                        self.slot(p).1.is_some(),
                        "hole at {p} between home {home} and {s}"
                    );
                    p = (p + 1) & mask;
                }
            }
            assert_eq!(occupied, self.len);
        }
    }

    fn flow(key: FlowKey, id: u64) -> Arc<Flow> {
        Arc::new(Flow::new(id, FlowSpec { key, ..spec(0, 1) }))
    }

    /// Keys from a small universe, so that a small index sees collisions, long clusters and
    /// clusters that wrap around its end; IPv4 and IPv6, on two ingress ports.
    fn key(n: u8) -> FlowKey {
        let addr = if n & 1 == 0 {
            SocketAddr::from(([10, 0, 0, n], 5004))
        } else {
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)], 5004))
        };
        FlowKey::new(u16::from(n % 3 == 1), addr)
    }

    #[derive(Clone, Debug)]
    enum Op {
        Upsert(u8),
        Remove(u8),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                3 => (0u8..24).prop_map(Op::Upsert),
                2 => (0u8..24).prop_map(Op::Remove),
            ],
            0..200,
        )
    }

    proptest! {
        /// Random installs, replacements and removals against a `HashMap`, in indexes of 4 to 32
        /// slots (so up to completely full ones), under random hash keys: every lookup, the
        /// length and the iteration agree with the model, and the probe invariants hold after
        /// every operation.
        #[test]
        fn index_matches_a_hash_map(ops in ops(), slots_log2 in 2u32..6, seeds: [u64; 2]) {
            let slots = 1usize << slots_log2;
            let mut index = FlowIndex::with_slots(slots, seeds);
            let mut model: HashMap<FlowKey, u64> = HashMap::new();
            for (id, op) in (1u64..).zip(ops) {
                match op {
                    Op::Upsert(n) => {
                        let k = key(n);
                        let fits = model.contains_key(&k) || model.len() < slots;
                        prop_assert_eq!(index.upsert(flow(k, id)), fits);
                        if fits {
                            model.insert(k, id);
                        }
                    }
                    Op::Remove(n) => {
                        let k = key(n);
                        prop_assert_eq!(index.remove(&k).map(|f| f.id), model.remove(&k));
                    }
                }
                index.assert_invariants();
                prop_assert_eq!(index.len(), model.len());
                for n in 0..24 {
                    let k = key(n);
                    prop_assert_eq!(index.get(&k).map(|f| f.id), model.get(&k).copied());
                }
                let mut seen: Vec<(FlowKey, u64)> =
                    index.iter().map(|f| (f.spec.key, f.id)).collect();
                let mut want: Vec<(FlowKey, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                seen.sort();
                want.sort();
                prop_assert_eq!(seen, want);
            }
            // The burst lookup agrees with single lookups, for present, absent and missing keys.
            let keys: Vec<Option<FlowKey>> =
                (0..40u8).map(|n| (n % 5 != 0).then(|| key(n % 30))).collect();
            let mut out = vec![None; keys.len()];
            index.get_many(&keys, &mut out);
            for (k, o) in keys.iter().zip(&out) {
                let single = k.and_then(|k| index.get(&k)).map(|f| f.id);
                prop_assert_eq!(o.map(|f| f.id), single);
            }
        }
    }

    #[test]
    fn a_full_index_refuses_new_keys_and_still_answers() {
        let mut index = FlowIndex::with_slots(4, [1, 2]);
        for n in 0..4 {
            assert!(index.upsert(flow(key(n), u64::from(n))));
        }
        assert!(!index.upsert(flow(key(9), 9)));
        assert_eq!(index.len(), 4);
        // Absent keys probe every slot and come back empty; replacing still works when full.
        assert!(index.get(&key(9)).is_none());
        assert!(index.upsert(flow(key(2), 22)));
        assert_eq!(index.get(&key(2)).map(|f| f.id), Some(22));
        assert_eq!(index.remove(&key(9)).map(|f| f.id), None);
        assert_eq!(index.remove(&key(0)).map(|f| f.id), Some(0));
        index.assert_invariants();
        assert!(index.upsert(flow(key(9), 9)));
        index.assert_invariants();
    }

    #[test]
    fn index_is_sized_for_load_one_half() {
        for (max, slots) in [(0, 4), (1, 4), (3, 8), (1000, 2048), (1024, 2048)] {
            let index = FlowIndex::with_capacity(max);
            assert_eq!(index.slot_mask() + 1, slots, "max_flows {max}");
        }
    }

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
