//! The media flow table.
//!
//! Workers read it without locks; one control thread writes it. The index (key to flow) is a
//! [`left_right`] pair of [`FlowIndex`]es: workers read the published copy while the writer
//! applies a batch to the other one, then swaps. A publish waits only for workers to finish the
//! burst they are in (they enter the table once per burst), so writers never stall a worker and
//! a batch becomes visible atomically. Flows themselves are shared by both copies through `Arc`,
//! so the flow state (counters, latch, RTP statistics) exists once.
//!
//! The layout is built so that a relayed packet costs two cache lines at 1M flows, one in the
//! index and one in its flow, fetched in two passes over the burst so their misses overlap:
//!
//! - [`FlowIndex`] is open addressing with linear probing over 32-byte slots, two per 64-byte
//!   bucket (one cache line), at load factor 1/2 or less. A slot holds the key as one word (an
//!   IPv4 key is exact in 64 bits; other keys are a seeded 63-bit tag, confirmed against the
//!   flow's full key), the `Arc<Flow>`, and the first target in a compact IPv4 form with the
//!   flow's fan-out: everything a relay needs to decide where a packet goes. A lookup is one line
//!   for about 7 keys in 8; removal shifts the rest of the cluster back (Knuth's algorithm R), so
//!   there are no tombstones and churn never lengthens probes.
//! - [`Flow`]'s first cache line holds what every accepted packet writes: the source latch (one
//!   word for IPv4 senders), packets, bytes, last seen, and the first SSRC's in-order RTP state
//!   with its clock rate. The second line holds the rare counters, the RTP wrap state and the
//!   pointer to a long fan-out list; a fan-out to at most 8 keeps its compact targets (four per
//!   cache line) in lines 2-3, loaded in the same pass as line 0.
//!
//! Per-flow counters and RTP state are single-writer atomics: every accepted packet of a flow
//! comes from its one latched source, and RSS or SO_REUSEPORT hash that 5-tuple to one queue,
//! so one worker writes them. Drops for a wrong source may come from any worker and use
//! `fetch_add`; the first latch is a compare-and-swap.
//!
//! Memory (`cargo run --release -p popmesh-media --example flow_memory -- 1000000 1`, and `-- 1000000
//! 8`): see `ARCHITECTURE.md`. The index is 32 bytes per slot, 2 slots per flow, in two copies:
//! 128 bytes per flow, all of it allocated and touched when the table is built; the rest is the
//! `Arc<Flow>` (a 64-byte line of reference counts, then the `Flow`), its target lists and name,
//! and the writer's key set.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use left_right::{Absorb, ReadGuard, ReadHandle, ReadHandleFactory, WriteHandle};

use crate::backend::PortId;
use crate::rtp_stats::{to_rtp_units, SeqState, SsrcCell, SSRC_HOT_BYTES};

/// SSRCs tracked per flow (audio and video bundled on one port is the common maximum).
pub const SSRC_SLOTS: usize = 2;

// `Flow` holds the slots as two named fields so the first one can sit in the hot line.
const _: () = assert!(SSRC_SLOTS == 2);

/// Most subscribers one flow may replicate to.
pub const MAX_SUBSCRIBERS: usize = 4096;

/// Where a publisher's packets enter: ingress port (socket or NIC port) and destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    ip: [u8; 16],
    port: PortId,
    udp_port: u16,
}

impl FlowKey {
    /// Key for packets arriving on `port` addressed to `dst`.
    #[inline]
    pub fn new(port: PortId, dst: SocketAddr) -> Self {
        match dst {
            SocketAddr::V4(a) => FlowKey::v4(port, a.ip().to_bits(), a.port()),
            SocketAddr::V6(a) => FlowKey {
                ip: a.ip().octets(),
                port,
                udp_port: a.port(),
            },
        }
    }

    /// Key for packets arriving on `port` addressed to IPv4 `ip` (address bits) and `udp_port`:
    /// what [`FlowKey::new`] builds for that `SocketAddr`, from the integers.
    #[inline]
    pub fn v4(port: PortId, ip: u32, udp_port: u16) -> Self {
        FlowKey {
            // ::ffff:a.b.c.d, built as one integer (this runs for every packet).
            ip: (0xffff_u128 << 32 | u128::from(ip)).to_be_bytes(),
            port,
            udp_port,
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

    /// The key as one exact word when it is an IPv4 destination on a port below 2^15:
    /// `port << 48 | udp_port << 32 | address`, top bit clear.
    #[inline]
    fn exact_word(&self) -> Option<u64> {
        let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, b0, b1, b2, b3] = self.ip;
        let mapped =
            u128::from_be_bytes([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, 0, 0, 0, 0])
                == 0xffff_u128 << 32;
        (mapped && self.port < 0x8000).then(|| {
            u64::from(self.port) << 48
                | u64::from(self.udp_port) << 32
                | u64::from(u32::from_be_bytes([b0, b1, b2, b3]))
        })
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

/// Per-flow counters every accepted packet writes (in the flow's hot line).
#[derive(Debug, Default)]
pub struct FlowCounters {
    /// Packets accepted and forwarded.
    pub packets: AtomicU64,
    /// Bytes of accepted packets (UDP payload).
    pub bytes: AtomicU64,
    /// Monotonic time of the last accepted packet, ns (0 = never).
    pub last_seen_ns: AtomicU64,
}

/// Per-flow counters of less common outcomes (in the flow's second line).
#[derive(Debug, Default)]
pub struct FlowTallies {
    /// Packets dropped for this flow (wrong source, not media, bad RTP, ...).
    pub drops: AtomicU64,
    /// RTCP packets accepted.
    pub rtcp: AtomicU64,
    /// RTP packets from SSRCs beyond [`SSRC_SLOTS`] (forwarded, not tracked).
    pub untracked_ssrc: AtomicU64,
}

/// A target in 16 bytes: IPv4 address and UDP port, egress port, next-hop MAC, and (in an index
/// slot) the flow's fan-out. Targets with an IPv6 address have no compact form; a flow with one
/// is marked [`Hop::FULL`] and its packets take targets from `spec.targets`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct Hop {
    ip: [u8; 4],
    udp_port: u16,
    port: PortId,
    mac: [u8; 6],
    /// Bits 0-12: fan-out (index slots only); [`Hop::HAS_MAC`]; [`Hop::FULL`].
    meta: u16,
}

const _: () = assert!(std::mem::size_of::<Hop>() == 16);
const _: () = assert!(MAX_SUBSCRIBERS <= Hop::FANOUT as usize);

impl Hop {
    const FANOUT: u16 = 0x1fff;
    const HAS_MAC: u16 = 1 << 13;
    /// Some target is IPv6: use `spec.targets`.
    const FULL: u16 = 1 << 14;

    fn of(t: &Target) -> Option<Hop> {
        let SocketAddr::V4(a) = t.addr else {
            return None;
        };
        Some(Hop {
            ip: a.ip().octets(),
            udp_port: a.port(),
            port: t.port,
            mac: t.mac.unwrap_or_default(),
            meta: if t.mac.is_some() { Hop::HAS_MAC } else { 0 },
        })
    }

    #[inline]
    fn target(&self) -> Target {
        Target {
            port: self.port,
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(self.ip), self.udp_port)),
            mac: (self.meta & Hop::HAS_MAC != 0).then_some(self.mac),
        }
    }

    #[inline]
    fn fanout(&self) -> usize {
        usize::from(self.meta & Hop::FANOUT)
    }
}

/// Four compact fan-out targets: one cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct TargetLine([Hop; 4]);

/// Latch word tags: the top two bits. The rest of an IPv4 latch is `address << 16 | port`.
const LATCH_V4: u64 = 1 << 62;
/// An IPv6 (or IPv4-mapped) sender, compared against [`Flow::latched_full`].
const LATCH_FULL: u64 = 2 << 62;

#[inline]
fn latch_v4(a: &SocketAddrV4) -> u64 {
    LATCH_V4 | u64::from(a.ip().to_bits()) << 16 | u64::from(a.port())
}

/// An installed flow: its spec plus live state.
///
/// `repr(C, align(64))`: line 0 is everything an accepted in-order RTP packet reads and writes
/// (latch, counters, the first SSRC's hot state and clock rate); line 1 the rarer counters, the
/// first SSRC's wrap state and a long fan-out list; lines 2-3 the targets of a fan-out to at
/// most 8; then the second SSRC and the cold spec.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Flow {
    /// 0, or the accepted sender: [`LATCH_V4`] with address and port, or [`LATCH_FULL`].
    latch: AtomicU64,
    /// Traffic counters.
    pub counters: FlowCounters,
    ssrc0: SsrcCell,
    /// Drops, RTCP and untracked-SSRC counters.
    pub tallies: FlowTallies,
    /// `1 << 32 | ssrc` once `ssrc1` tracks an SSRC, else 0: lets packets of a third SSRC be
    /// counted untracked without loading `ssrc1`.
    ssrc1_tag: AtomicU64,
    /// Compact targets of a fan-out to more than [`INLINE_TARGETS`] (else empty).
    fan: Box<[TargetLine]>,
    /// Compact targets of a fan-out to at most [`INLINE_TARGETS`]: lines 2-3, addressed from
    /// the flow pointer alone, so they load in the same pass as line 0.
    fan_inline: [TargetLine; INLINE_LINES],
    ssrc1: SsrcCell,
    /// Unique for the life of the table; a replaced flow gets a new id and fresh state.
    pub id: u64,
    /// The sender when the latch is [`LATCH_FULL`].
    latched_full: OnceLock<SocketAddr>,
    /// What the index slot holds for this flow (first target and fan-out).
    hop: Hop,
    /// What was asked for.
    pub spec: FlowSpec,
}

const _: () = assert!(std::mem::offset_of!(Flow, ssrc0) + SSRC_HOT_BYTES == 64);
const _: () = assert!(std::mem::offset_of!(Flow, fan) + 16 <= 128);
const _: () = assert!(std::mem::offset_of!(Flow, fan_inline) == 128);

/// Lines of fan-out targets kept inside [`Flow`].
const INLINE_LINES: usize = 2;
/// Largest fan-out whose targets live inside [`Flow`].
const INLINE_TARGETS: usize = 4 * INLINE_LINES;

impl Flow {
    fn new(id: u64, spec: FlowSpec) -> Self {
        let compact: Option<Vec<Hop>> = spec.targets.iter().map(Hop::of).collect();
        // FlowTable::upsert keeps fan-outs within MAX_SUBSCRIBERS, so the count fits.
        let fanout = spec.targets.len().min(MAX_SUBSCRIBERS) as u16;
        let mut fan_inline = [TargetLine::default(); INLINE_LINES];
        let (hop, fan) = match compact {
            Some(hops) => {
                let mut hop = hops.first().copied().unwrap_or_default();
                hop.meta |= fanout;
                let lines = hops.chunks(4).map(|c| {
                    let mut line = TargetLine::default();
                    line.0[..c.len()].copy_from_slice(c);
                    line
                });
                let fan = if hops.len() > INLINE_TARGETS {
                    lines.collect()
                } else {
                    if hops.len() > 1 {
                        for (slot, line) in fan_inline.iter_mut().zip(lines) {
                            *slot = line;
                        }
                    }
                    Box::default()
                };
                (hop, fan)
            }
            None => (
                Hop {
                    meta: fanout | Hop::FULL,
                    ..Hop::default()
                },
                Box::default(),
            ),
        };
        let latched_full = OnceLock::new();
        let latch = match spec.source {
            None => 0,
            Some(SocketAddr::V4(a)) => latch_v4(&a),
            Some(src) => {
                let _ = latched_full.set(src);
                LATCH_FULL
            }
        };
        Flow {
            latch: AtomicU64::new(latch),
            counters: FlowCounters::default(),
            ssrc0: SsrcCell::new(spec.clock_rate),
            tallies: FlowTallies::default(),
            ssrc1_tag: AtomicU64::new(0),
            fan,
            fan_inline,
            ssrc1: SsrcCell::new(spec.clock_rate),
            id,
            latched_full,
            hop,
            spec,
        }
    }

    /// One load from the flow's hot line, so that a burst's misses overlap instead of stalling
    /// one packet at a time (stable Rust has no prefetch without `unsafe`; independent loads
    /// give the same memory-level parallelism); for a fan-out (known from the index slot) also
    /// its inline target lines, or line 1, which points to a longer list.
    #[inline]
    fn touch(&self, fanout: usize) -> u64 {
        let t = self.latch.load(Relaxed) ^ self.ssrc0.touch();
        if fanout <= 1 {
            t
        } else if fanout <= INLINE_TARGETS {
            self.fan_lines(fanout)
                .iter()
                .fold(t, |t, l| t ^ u64::from(l.0[0].port))
        } else {
            t ^ self.fan.len() as u64
        }
    }

    /// Second touch level, after [`Flow::touch`] ran for the whole burst: the second SSRC's
    /// line if the flow has one, line 1 for a flow's first RTP packet (which writes the whole
    /// first cell), and one load per line of a long fan-out list.
    #[inline]
    fn touch_more(&self, fanout: usize) -> u64 {
        let mut t = 0;
        if self.ssrc0.has_second() {
            t ^= self.ssrc1.touch();
        }
        if fanout > INLINE_TARGETS {
            t ^= self.fan.iter().fold(0, |t, l| t ^ u64::from(l.0[0].port));
        } else if !self.ssrc0.in_use() {
            t ^= self.ssrc1_tag.load(Relaxed);
        }
        t
    }

    /// The compact target lines of a fan-out to `fanout` (more than one) subscribers.
    #[inline]
    fn fan_lines(&self, fanout: usize) -> &[TargetLine] {
        if fanout <= INLINE_TARGETS {
            &self.fan_inline[..fanout.div_ceil(4).min(INLINE_LINES)]
        } else {
            &self.fan
        }
    }

    /// The RTP clock rate (`spec.clock_rate`).
    #[inline]
    pub fn clock_rate(&self) -> u32 {
        self.ssrc0.clock_rate()
    }

    /// Accepts `src` if it is the programmed or first-learned sender. The first packet of an
    /// unprogrammed flow latches its sender; after that one load and compare decide for IPv4.
    #[inline]
    pub fn accepts(&self, src: SocketAddr) -> bool {
        let w = self.latch.load(Relaxed);
        match src {
            SocketAddr::V4(a) if w == latch_v4(&a) => true,
            _ if w == 0 => self.latch_first(src),
            SocketAddr::V6(_) if w == LATCH_FULL => self.latched_full.get() == Some(&src),
            _ => false,
        }
    }

    /// The first packet's sender becomes the flow's. Workers may race here (a second sender on
    /// another queue); the compare-and-swap lets exactly one win.
    #[cold]
    fn latch_first(&self, src: SocketAddr) -> bool {
        let want = match src {
            SocketAddr::V4(a) => latch_v4(&a),
            SocketAddr::V6(_) => {
                // Whoever sets the full address first is the only one that may tag it.
                if *self.latched_full.get_or_init(|| src) != src {
                    return false;
                }
                LATCH_FULL
            }
        };
        match self.latch.compare_exchange(0, want, Relaxed, Relaxed) {
            Ok(_) => true,
            Err(now) => {
                now == want && (want != LATCH_FULL || self.latched_full.get() == Some(&src))
            }
        }
    }

    /// The sender this flow accepts, once known.
    pub fn source(&self) -> Option<SocketAddr> {
        let w = self.latch.load(Relaxed);
        if w & LATCH_V4 != 0 {
            let ip = Ipv4Addr::from_bits((w >> 16) as u32);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, w as u16)))
        } else if w == LATCH_FULL {
            self.latched_full.get().copied()
        } else {
            None
        }
    }

    /// The subscribers.
    pub fn targets(&self) -> &[Target] {
        &self.spec.targets
    }

    /// Accounts an RTP packet received at `now_ns` in its SSRC's statistics.
    #[inline(always)]
    pub fn account_rtp(&self, ssrc: u32, seq: u16, rtp_ts: u32, now_ns: u64) {
        // Cells fill in order, so the first one is the common case and the second is only
        // looked at for a second SSRC.
        let arrival = to_rtp_units(now_ns, self.ssrc0.clock_rate());
        if self.ssrc0.account(ssrc, seq, rtp_ts, arrival) {
            return;
        }
        self.account_second(ssrc, seq, rtp_ts, arrival);
    }

    #[inline(never)]
    fn account_second(&self, ssrc: u32, seq: u16, rtp_ts: u32, arrival: u32) {
        let tag = 1 << 32 | u64::from(ssrc);
        match self.ssrc1_tag.load(Relaxed) {
            0 => {
                self.ssrc1.account(ssrc, seq, rtp_ts, arrival);
                self.ssrc1_tag.store(tag, Relaxed);
                self.ssrc0.mark_second();
            }
            t if t == tag => {
                self.ssrc1.account(ssrc, seq, rtp_ts, arrival);
            }
            _ => bump(&self.tallies.untracked_ssrc),
        }
    }

    /// Snapshots of the tracked SSRCs.
    pub fn ssrc_stats(&self) -> impl Iterator<Item = SeqState> + '_ {
        [&self.ssrc0, &self.ssrc1]
            .into_iter()
            .filter_map(SsrcCell::load)
    }
}

/// A flow found by [`FlowIndex::get_many`], with the index slot's copy of its first target and
/// fan-out, so a relay needs nothing more than the flow's hot line.
#[derive(Clone, Copy, Debug)]
pub struct FlowRef<'a> {
    /// The flow.
    pub flow: &'a Flow,
    hop: Hop,
}

impl<'a> FlowRef<'a> {
    /// Number of subscribers.
    #[inline]
    pub fn fanout(&self) -> usize {
        self.hop.fanout()
    }

    /// Calls `f` with every subscriber, in order: the loop the pipeline runs (a tight loop
    /// over the compact lines for a fan-out).
    #[inline]
    pub fn for_each_target(&self, mut f: impl FnMut(Target)) {
        let n = self.hop.fanout();
        if self.hop.meta & Hop::FULL != 0 {
            self.flow.spec.targets.iter().for_each(|t| f(*t));
        } else if n == 1 {
            f(self.hop.target());
        } else {
            for h in self.flow.fan_lines(n).iter().flat_map(|l| &l.0).take(n) {
                f(h.target());
            }
        }
    }

    /// The one subscriber of a relay (a flow with exactly one IPv4 subscriber), straight from
    /// the index slot's compact copy; `None` for fan-outs and IPv6 targets.
    #[inline]
    pub fn relay_target(&self) -> Option<Target> {
        (self.hop.meta & (Hop::FULL | Hop::FANOUT) == 1).then(|| self.hop.target())
    }

    /// The subscribers, built from the compact forms (or from `spec.targets` for flows with an
    /// IPv6 target).
    #[inline]
    pub fn targets(&self) -> Targets<'a> {
        let n = self.hop.fanout();
        let inner = if self.hop.meta & Hop::FULL != 0 {
            TargetsInner::Full(self.flow.spec.targets.iter())
        } else if n <= 1 {
            TargetsInner::One((n == 1).then(|| self.hop.target()))
        } else {
            TargetsInner::Lines {
                lines: self.flow.fan_lines(n),
                at: 0,
                n,
            }
        };
        Targets(inner)
    }
}

/// Iterator over a flow's subscribers (see [`FlowRef::targets`]).
#[derive(Clone, Debug)]
pub struct Targets<'a>(TargetsInner<'a>);

#[derive(Clone, Debug)]
enum TargetsInner<'a> {
    One(Option<Target>),
    Lines {
        lines: &'a [TargetLine],
        at: usize,
        n: usize,
    },
    Full(std::slice::Iter<'a, Target>),
}

impl Iterator for Targets<'_> {
    type Item = Target;

    #[inline]
    fn next(&mut self) -> Option<Target> {
        match &mut self.0 {
            TargetsInner::One(t) => t.take(),
            TargetsInner::Lines { lines, at, n } => {
                if *at >= *n {
                    return None;
                }
                let hop = lines.get(*at / 4)?.0[*at % 4];
                *at += 1;
                Some(hop.target())
            }
            TargetsInner::Full(it) => it.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            TargetsInner::One(t) => usize::from(t.is_some()),
            TargetsInner::Lines { at, n, .. } => n.saturating_sub(*at),
            TargetsInner::Full(it) => it.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Targets<'_> {}

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

/// Top bit of a key word: the word is a tag, not the key itself (see [`FlowKey::exact_word`]).
const TAGGED: u64 = 1 << 63;

/// One index slot: the key word, the flow, and its first target with the fan-out. Empty when
/// `flow` is `None` (the rest is then meaningless).
#[derive(Clone, Debug)]
#[repr(C)]
struct Slot {
    word: u64,
    flow: Option<Arc<Flow>>,
    hop: Hop,
}

/// One cache line of the index: two slots.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Bucket([Slot; LANES]);

const _: () = assert!(std::mem::size_of::<Slot>() == 32);
const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    const EMPTY: Bucket = Bucket(
        [const {
            Slot {
                word: 0,
                flow: None,
                hop: Hop {
                    ip: [0; 4],
                    udp_port: 0,
                    port: 0,
                    mac: [0; 6],
                    meta: 0,
                },
            }
        }; LANES],
    );

    /// One load from the bucket's line (see [`FlowIndex::get_many`]).
    #[inline]
    fn touch(&self) -> u64 {
        self.0[0].word
    }
}

/// The index both left-right copies hold: open addressing with linear probing over slots,
/// two slots per cache-line bucket (see the module docs).
///
/// Invariants: the slot count is a power of two and at least 4; a key's home is the first slot
/// of the bucket its word hashes to and every slot from its home to where it sits is occupied
/// (so a probe stops at the first empty slot); `len` counts occupied slots; an occupied slot's
/// word is its flow's key word.
#[derive(Clone, Debug)]
pub struct FlowIndex {
    buckets: Box<[Bucket]>,
    /// `64 - log2(buckets.len())`: the hash's top bits pick the bucket.
    shift: u32,
    /// Per-table hash keys, shared by both copies (cloned), so lookup and insert agree.
    seeds: [u64; 2],
    /// Bits of a tag that are kept: all 63 in use; tests keep a few so that tags collide.
    tag_mask: u64,
    len: usize,
}

/// Keys a burst resolves per pass of [`FlowIndex::get_many`].
const BATCH: usize = 32;

/// What a key's home bucket says (see [`FlowIndex::find_home`]).
enum Home<'a> {
    Found(&'a Slot),
    Absent,
    Full,
}

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

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
            tag_mask: !TAGGED,
            len: 0,
        }
    }

    /// The key as the index stores it: exact for IPv4 keys, else a seeded 63-bit tag with the
    /// top bit set (equal tags are told apart by the flows' full keys).
    #[inline]
    fn word(&self, key: &FlowKey) -> u64 {
        if let Some(w) = key.exact_word() {
            return w;
        }
        let [a, b] = [&key.ip[..8], &key.ip[8..]]
            .map(|h| u64::from_ne_bytes(h.try_into().unwrap_or_default()));
        let tail = u64::from(key.port) << 16 | u64::from(key.udp_port);
        let h = folded_multiply(a ^ self.seeds[0], b ^ self.seeds[1] ^ tail.rotate_left(32));
        TAGGED | (folded_multiply(h, 0x9e37_79b9_7f4a_7c15 ^ tail) >> 1) & self.tag_mask
    }

    /// The bucket a key word hashes to: one folded 64x64->128 multiply of the word and its
    /// halves swapped, each mixed with a table key (as foldhash does), then Fibonacci hashing,
    /// whose top bits are the best mixed.
    #[inline]
    fn home(&self, word: u64) -> usize {
        let h = folded_multiply(word ^ self.seeds[0], word.rotate_left(32) ^ self.seeds[1]);
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    fn slot_mask(&self) -> usize {
        self.buckets.len() * LANES - 1
    }

    fn slot(&self, s: usize) -> &Slot {
        &self.buckets[s / LANES].0[s % LANES]
    }

    fn slot_mut(&mut self, s: usize) -> &mut Slot {
        &mut self.buckets[s / LANES].0[s % LANES]
    }

    /// Whether occupied `slot` holds `key` (of word `word`).
    #[inline]
    fn holds(slot: &Slot, f: &Flow, word: u64, key: &FlowKey) -> bool {
        slot.word == word && (word & TAGGED == 0 || f.spec.key == *key)
    }

    /// Probes from the first slot of bucket `home`; stops at the key or the first empty slot.
    /// The home bucket is checked inline: at load 1/2 it settles about 7 lookups in 8.
    #[inline]
    fn find_from(&self, home: usize, word: u64, key: &FlowKey) -> Option<&Slot> {
        match self.find_home(home, word, key) {
            Home::Found(s) => Some(s),
            Home::Absent => None,
            Home::Full => self.probe((home + 1) & (self.buckets.len() - 1), word, key),
        }
    }

    /// The home bucket's answer for a key: found, certainly absent (an empty slot), or full of
    /// other keys, so the probe goes on at the next bucket.
    #[inline]
    fn find_home(&self, home: usize, word: u64, key: &FlowKey) -> Home<'_> {
        let Some(b) = self.buckets.get(home) else {
            return Home::Absent;
        };
        for s in &b.0 {
            match &s.flow {
                None => return Home::Absent,
                Some(f) if Self::holds(s, f, word, key) => return Home::Found(s),
                Some(_) => {}
            }
        }
        Home::Full
    }

    #[inline]
    fn flow_ref(s: &Slot) -> Option<FlowRef<'_>> {
        Some(FlowRef {
            flow: s.flow.as_deref()?,
            hop: s.hop,
        })
    }

    /// [`FlowIndex::find_from`] from bucket `start` on, past a full home bucket.
    #[inline(never)]
    fn probe(&self, start: usize, word: u64, key: &FlowKey) -> Option<&Slot> {
        let mask = self.buckets.len() - 1;
        let mut b = start;
        // Bounded so that even a completely full index (never built by FlowTable) terminates.
        for _ in 0..self.buckets.len() {
            let bucket = self.buckets.get(b)?;
            for s in &bucket.0 {
                match &s.flow {
                    None => return None,
                    Some(f) if Self::holds(s, f, word, key) => return Some(s),
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
        let word = self.word(key);
        self.find_from(self.home(word), word, key)?.flow.as_ref()
    }

    /// Looks up a burst: `out[i]` becomes the flow for `keys[i]` (`None` for no key or no
    /// flow). Works in passes over up to 32 keys: hash every key, load every home bucket's line
    /// (independent loads, so their misses overlap), then check each home bucket, now from the
    /// cache; keys whose home bucket is full of others get their next bucket loaded in one more
    /// such pass before they probe on. Extra elements of the longer slice are left alone.
    // 1 line per key (2 for about 1 key in 8), overlapped (benches/pipeline.rs).
    #[inline]
    pub fn get_many<'a>(&'a self, keys: &[Option<FlowKey>], out: &mut [Option<FlowRef<'a>>]) {
        let mut sink = 0u64;
        for (keys, out) in keys.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            // Hashing is a pass of its own, so that the load pass is a few instructions per key:
            // all of a burst's loads then fit in the reorder window and miss in parallel.
            let mut words = [0u64; BATCH];
            let mut homes = [usize::MAX; BATCH];
            for ((w, h), k) in words.iter_mut().zip(&mut homes).zip(keys) {
                if let Some(k) = k {
                    *w = self.word(k);
                    *h = self.home(*w);
                }
            }
            for h in &homes[..keys.len()] {
                sink ^= self.buckets.get(*h).map_or(0, Bucket::touch);
            }
            // Keys whose home bucket is full of other keys (about 1 in 8 at load 1/2) go on
            // to the next buckets; those are loaded in a pass of their own too, so that the
            // burst's overflow misses overlap instead of each stalling its lookup in turn.
            let mut overflow = [0u8; BATCH];
            let mut spilled = 0;
            for (i, ((o, h), (w, k))) in out
                .iter_mut()
                .zip(&homes)
                .zip(words.iter().zip(keys))
                .enumerate()
            {
                *o = None;
                let Some(k) = k else { continue };
                match self.find_home(*h, *w, k) {
                    Home::Found(s) => *o = Self::flow_ref(s),
                    Home::Absent => {}
                    Home::Full => {
                        // i < BATCH = 32.
                        overflow[spilled] = i as u8;
                        spilled += 1;
                    }
                }
            }
            let mask = self.buckets.len() - 1;
            for &i in &overflow[..spilled] {
                let next = (homes[usize::from(i)] + 1) & mask;
                sink ^= self.buckets.get(next).map_or(0, Bucket::touch);
            }
            for &i in &overflow[..spilled] {
                let i = usize::from(i);
                if let (Some(Some(k)), Some(o)) = (keys.get(i), out.get_mut(i)) {
                    *o = self
                        .probe((homes[i] + 1) & mask, words[i], k)
                        .and_then(Self::flow_ref);
                }
            }
        }
        // Keeps the touch loads from being optimised away.
        std::hint::black_box(sink);
    }

    /// Loads every found flow's hot line (and a fan-out's list pointer), then, in a second pass,
    /// what fan-outs and flows with a second SSRC need, so that acting on the burst runs from
    /// the cache.
    #[inline]
    pub fn touch(found: &[Option<FlowRef<'_>>]) -> u64 {
        let mut t = 0u64;
        for f in found.iter().flatten() {
            t ^= f.flow.touch(f.fanout());
        }
        for f in found.iter().flatten() {
            t ^= f.flow.touch_more(f.fanout());
        }
        t
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
        self.buckets
            .iter()
            .flat_map(|b| b.0.iter().filter_map(|s| s.flow.as_ref()))
    }

    /// Installs `flow` at its key, replacing any flow there. Returns `false`, changing
    /// nothing, only if the key is new and every slot is taken, which [`FlowTable`]'s capacity
    /// check rules out.
    fn upsert(&mut self, flow: Arc<Flow>) -> bool {
        let key = flow.spec.key;
        let word = self.word(&key);
        let mask = self.slot_mask();
        let mut s = self.home(word) * LANES;
        for _ in 0..=mask {
            let slot = self.slot_mut(s);
            match &slot.flow {
                Some(f) if !Self::holds(slot, f, word, &key) => s = (s + 1) & mask,
                Some(_) => {
                    slot.hop = flow.hop;
                    slot.flow = Some(flow);
                    return true;
                }
                None => {
                    *slot = Slot {
                        word,
                        hop: flow.hop,
                        flow: Some(flow),
                    };
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
        let word = self.word(key);
        let mask = self.slot_mask();
        let mut hole = self.home(word) * LANES;
        let mut found = false;
        for _ in 0..=mask {
            let s = self.slot(hole);
            match &s.flow {
                None => return None,
                Some(f) if Self::holds(s, f, word, key) => {
                    found = true;
                    break;
                }
                Some(_) => hole = (hole + 1) & mask,
            }
        }
        if !found {
            return None;
        }
        let removed = self.slot_mut(hole).flow.take();
        self.len -= 1;
        let mut j = hole;
        for _ in 0..mask {
            j = (j + 1) & mask;
            let s = self.slot(j);
            if s.flow.is_none() {
                break;
            }
            let home = self.home(s.word) * LANES;
            // Distance from its home to where it sits, against the distance from the hole:
            // it may move back into the hole when the hole is not before its home.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                let moved = Slot {
                    word: s.word,
                    hop: s.hop,
                    flow: self.slot_mut(j).flow.take(),
                };
                *self.slot_mut(hole) = moved;
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
        self.tag_mask = first.tag_mask;
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
                let slot = self.slot(s);
                let Some(f) = &slot.flow else { continue };
                occupied += 1;
                assert_eq!(
                    self.word(&f.spec.key),
                    slot.word,
                    "slot {s} holds a flow under another key"
                );
                assert_eq!(f.hop, slot.hop, "slot {s} has a stale target");
                let home = self.home(slot.word) * LANES;
                let mut p = home;
                while p != s {
                    assert!(
                        self.slot(p).flow.is_some(),
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
        fn index_matches_a_hash_map(ops in ops(), slots_log2 in 2u32..6, seeds: [u64; 2],
                                    tag_bits in prop_oneof![Just(1u32), Just(2), Just(63)]) {
            let slots = 1usize << slots_log2;
            let mut index = FlowIndex::with_slots(slots, seeds);
            // One or two tag bits make most IPv6 keys share a tag (and a home): lookups must
            // then tell them apart by the full key.
            index.tag_mask = !TAGGED & ((1u64 << tag_bits) - 1);
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
                prop_assert_eq!(o.map(|f| f.flow.id), single);
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

    fn arb_target() -> impl Strategy<Value = Target> {
        (
            any::<u16>(),
            prop_oneof![
                4 => any::<[u8; 4]>().prop_map(IpAddr::from),
                1 => any::<[u8; 16]>().prop_map(IpAddr::from),
            ],
            any::<u16>(),
            proptest::option::of(any::<[u8; 6]>()),
        )
            .prop_map(|(port, ip, udp, mac)| Target {
                port,
                addr: SocketAddr::new(ip, udp),
                mac,
            })
    }

    proptest! {
        /// Whatever the targets (IPv4 in compact form, IPv6 from the spec, with and without
        /// MACs, relay or fan-out), the lookup hands the pipeline exactly the spec's list.
        #[test]
        fn found_targets_are_the_specs(targets in proptest::collection::vec(arb_target(), 1..20)) {
            let mut index = FlowIndex::with_slots(8, [3, 4]);
            let s = FlowSpec { targets: targets.clone(), ..spec(9, 1) };
            prop_assert!(index.upsert(Arc::new(Flow::new(1, s.clone()))));
            let mut out = [None];
            index.get_many(&[Some(s.key)], &mut out);
            let found = out[0].expect("installed flow is found");
            prop_assert_eq!(found.fanout(), targets.len());
            prop_assert_eq!(found.targets().len(), targets.len());
            prop_assert_eq!(found.targets().collect::<Vec<_>>(), targets);
        }
    }

    #[test]
    fn hot_state_is_where_the_layout_says() {
        let f = Flow::new(1, spec(1, 1));
        assert_eq!(f.clock_rate(), f.spec.clock_rate);
        // The hot line starts on a cache-line boundary (the layout comment relies on it).
        assert_eq!(std::mem::align_of::<Flow>(), 64);
        assert_eq!(std::mem::offset_of!(Flow, latch), 0);
    }

    #[test]
    fn latching_ipv6_and_mixed_senders() {
        let a6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let b6: SocketAddr = "[2001:db8::2]:5000".parse().unwrap();
        let a4: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let f = Flow::new(1, spec(1, 1));
        assert_eq!(f.source(), None);
        assert!(f.accepts(a6));
        assert!(f.accepts(a6));
        assert!(!f.accepts(b6));
        assert!(!f.accepts(a4));
        assert_eq!(f.source(), Some(a6));
        let f = Flow::new(2, spec(1, 1));
        assert!(f.accepts(a4));
        assert!(!f.accepts(a6));
        assert_eq!(f.source(), Some(a4));
        let f = Flow::new(
            3,
            FlowSpec {
                source: Some(b6),
                ..spec(1, 1)
            },
        );
        assert!(!f.accepts(a6));
        assert!(f.accepts(b6));
        assert_eq!(f.source(), Some(b6));
    }

    #[test]
    fn a_race_for_the_latch_has_one_winner() {
        for round in 0..200u16 {
            let f = Arc::new(Flow::new(1, spec(1, 1)));
            let senders: Vec<SocketAddr> = vec![
                SocketAddr::from(([10, 0, 0, 1], round)),
                SocketAddr::from(([10, 0, 0, 2], round)),
                SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], round)),
                SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2], round)),
            ];
            let handles: Vec<_> = senders
                .iter()
                .map(|&s| {
                    let f = Arc::clone(&f);
                    std::thread::spawn(move || f.accepts(s))
                })
                .collect();
            let won: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(
                won.iter().filter(|w| **w).count(),
                1,
                "round {round}: {won:?}"
            );
            let winner = senders[won.iter().position(|w| *w).unwrap()];
            assert_eq!(f.source(), Some(winner));
            for s in &senders {
                assert_eq!(f.accepts(*s), *s == winner);
            }
        }
    }

    #[test]
    fn third_ssrc_is_counted_untracked() {
        let f = Flow::new(1, spec(1, 1));
        for ssrc in 1..=3 {
            f.account_rtp(ssrc, 1, 0, 0);
        }
        assert_eq!(f.ssrc_stats().count(), 2);
        assert_eq!(f.tallies.untracked_ssrc.load(Relaxed), 1);
        // The first cell tells the touch pass that a second one is in use.
        assert!(f.ssrc0.has_second());
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
