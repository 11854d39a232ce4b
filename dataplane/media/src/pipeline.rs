//! The burst pipeline: classify, look up, check the source, account, act.
//!
//! One pipeline serves every backend. Socket backends ([`Framing::Datagram`]) hand over UDP
//! payloads with addresses as metadata: the pipeline only decides where each goes, and a fan-out
//! is one buffer sent to many addresses. L2 backends ([`Framing::Ethernet`]) hand over frames:
//! the pipeline parses Ethernet/802.1Q, IPv4 or IPv6 and UDP itself, punts what is not media to
//! the exception queue, and rewrites MACs, addresses, ports and TTL in place with one RFC 1624
//! delta per checksum (`rewrite.rs`). Each extra subscriber gets a copy whose headers are private
//! and whose payload may be shared with the original ([`PacketBuf::duplicate_headers`]): the
//! payload is read (RTP accounting) before the first copy, and nothing past the UDP header is
//! written in any of them.
//!
//! Work on a chunk of up to 32 packets goes in passes, so that with a flow table far larger
//! than the caches the cache misses of a whole burst overlap: build every key; hash them; load
//! every key's index line; probe; load every found flow's hot lines (and, second level, fan-out
//! target lists); then act on each packet, by now from the cache. Stable Rust has no prefetch
//! without `unsafe`, so the load passes are plain loads kept short enough (a few instructions
//! each) that a whole burst's worth fits in the CPU's reorder window.
//!
//! Nothing here allocates, locks, logs or reads a clock: time is the `now_ns` argument.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering::Relaxed;

use popmesh_wire::{demux, ethernet, ipv4, ipv6, rtcp, rtp, udp};

use crate::backend::{Burst, Framing, PacketBuf, Pkt, Tx};
use crate::drop::DropReason;
use crate::flow::{add, bump, Flow, FlowIndex, FlowKey, FlowRef, Target};
use crate::rewrite::{EgressPlan, Layout, Plan};
use crate::stats::BurstCounts;

/// What an L2 backend's egress port needs for rewriting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    /// The appliance's address and UDP port on this port: the source of relayed packets.
    pub addr: SocketAddr,
    /// The port's own MAC.
    pub mac: [u8; 6],
    /// Next hop used when a target has no MAC of its own.
    pub gateway_mac: [u8; 6],
    /// Largest IP packet (L3 MTU) the port sends.
    pub mtu: u16,
}

/// How the pipeline is set up for one worker.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// How the worker's backend frames packets.
    pub framing: Framing,
    /// Per egress [`PortId`](crate::PortId): rewrite data (L2 only; may be empty for socket backends).
    pub egress: Vec<Egress>,
    /// UDP destination ports treated as media on L2 backends: a packet to one of them without a
    /// flow is a `no_flow` drop, other UDP goes to the exception path (the kernel).
    pub media_ports: RangeInclusive<u16>,
}

impl PipelineConfig {
    /// A socket-backend pipeline.
    pub fn datagram() -> Self {
        PipelineConfig {
            framing: Framing::Datagram,
            egress: Vec::new(),
            media_ports: 0..=u16::MAX,
        }
    }
}

/// Per-worker pipeline state.
#[derive(Debug)]
pub struct Pipeline {
    cfg: PipelineConfig,
    /// `cfg.egress` prepared for rewriting (source address words summed once).
    egress: Vec<EgressPlan>,
    counts: BurstCounts,
    /// Sink for `FlowIndex::touch` loads.
    touched: u64,
}

/// Packets handled per pass; bursts larger than this are processed in chunks.
const CHUNK: usize = 32;

impl Pipeline {
    /// A pipeline with the given setup.
    pub fn new(cfg: PipelineConfig) -> Self {
        Pipeline {
            egress: cfg.egress.iter().map(EgressPlan::new).collect(),
            cfg,
            counts: BurstCounts::default(),
            touched: 0,
        }
    }

    /// The setup.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Processes every packet in `burst.pkts`, filling `burst.tx` and `burst.exceptions`, and
    /// returns this burst's counts (reset on every call). Dropped packets stay in `burst.pkts`
    /// with no `Tx`; the backend reclaims them.
    // ns/pkt at burst 32, 1k / 1M flows (benches/pipeline.rs, 2-vCPU EPYC VM, mimalloc):
    // datagram relay ~26 / ~59, fan-out 8 ~41 / ~97; ethernet relay ~58 / ~96, fan-out 8
    // ~350 / ~406 (full-frame pool copies).
    pub fn process<B: PacketBuf>(
        &mut self,
        now_ns: u64,
        flows: &FlowIndex,
        burst: &mut Burst<B>,
    ) -> &BurstCounts {
        self.counts = BurstCounts::default();
        let n = burst.pkts.len();
        let mut start = 0;
        while start < n {
            let end = n.min(start + CHUNK);
            match self.cfg.framing {
                Framing::Datagram => self.datagram_chunk(now_ns, flows, burst, start, end),
                Framing::Ethernet => self.frame_chunk(now_ns, flows, burst, start, end),
            }
            start = end;
        }
        &self.counts
    }

    /// Socket framing, in passes over the chunk: build every key, look them all up
    /// ([`FlowIndex::get_many`]: hash and load every index line, then probe), load every
    /// flow's hot lines, then act. Each pass's loads are independent across packets, so with a
    /// table far larger than the caches the misses of a whole burst overlap instead of queueing.
    // ~26 ns/pkt at burst 32 (relay, 1k flows), ~59 (relay, 1M), ~97 (fan-out 8, 1M).
    fn datagram_chunk<B: PacketBuf>(
        &mut self,
        now_ns: u64,
        flows: &FlowIndex,
        burst: &mut Burst<B>,
        start: usize,
        end: usize,
    ) {
        let n = end - start;
        let mut keys: [Option<FlowKey>; CHUNK] = [None; CHUNK];
        for (k, p) in keys.iter_mut().zip(&burst.pkts[start..end]) {
            *k = Some(FlowKey::new(p.port, p.dst));
        }
        let mut found: [Option<FlowRef<'_>>; CHUNK] = [None; CHUNK];
        flows.get_many(&keys[..n], &mut found[..n]);
        self.touch(&found[..n]);
        for (k, flow) in found[..n].iter().enumerate() {
            self.datagram(now_ns, *flow, burst, start + k);
        }
    }

    /// Pulls each found flow's hot cache line in (see [`FlowIndex::touch`]).
    #[inline]
    fn touch(&mut self, found: &[Option<FlowRef<'_>>]) {
        // Stored so the loads are not optimised away.
        self.touched = self.touched.wrapping_add(FlowIndex::touch(found));
    }

    #[inline]
    fn datagram<B: PacketBuf>(
        &mut self,
        now_ns: u64,
        found: Option<FlowRef<'_>>,
        burst: &mut Burst<B>,
        i: usize,
    ) {
        let pkt = &burst.pkts[i];
        let payload = pkt.buf.as_ref();
        self.counts.rx += 1;
        self.counts.rx_bytes += payload.len() as u64;
        if payload.is_empty() {
            return self.counts.drop(DropReason::Truncated);
        }
        let Some(found) = found else {
            return self.counts.drop(DropReason::NoFlow);
        };
        if let Err(r) = self.admit(now_ns, found.flow, pkt.src, payload) {
            return self.counts.drop(r);
        }
        let idx = i as u16;
        let tx = |t: Target| Tx {
            pkt: idx,
            port: t.port,
            dst: t.addr,
        };
        burst.tx.reserve(found.fanout());
        found.for_each_target(|t| burst.tx.push(tx(t)));
        self.counts.tx += found.fanout() as u64;
    }

    /// Source latch, media check and accounting shared by both framings.
    #[inline(always)]
    fn admit(
        &mut self,
        now_ns: u64,
        flow: &Flow,
        src: SocketAddr,
        payload: &[u8],
    ) -> Result<(), DropReason> {
        if !flow.accepts(src) {
            flow.tallies.drops.fetch_add(1, Relaxed);
            return Err(DropReason::SourceMismatch);
        }
        let r = match demux::classify(payload) {
            demux::MediaKind::Rtp => match rtp::Packet::new_checked(payload) {
                Ok(p) => {
                    flow.account_rtp(p.ssrc(), p.sequence_number(), p.timestamp(), now_ns);
                    self.counts.rtp += 1;
                    Ok(())
                }
                Err(_) => Err(DropReason::BadRtp),
            },
            demux::MediaKind::Rtcp => match rtcp::Packet::new_checked(payload) {
                Ok(_) => {
                    bump(&flow.tallies.rtcp);
                    self.counts.rtcp += 1;
                    Ok(())
                }
                Err(_) => Err(DropReason::BadRtp),
            },
            _ => Err(DropReason::NotMedia),
        };
        match r {
            Ok(()) => {
                bump(&flow.counters.packets);
                add(&flow.counters.bytes, payload.len() as u64);
                flow.counters.last_seen_ns.store(now_ns, Relaxed);
                Ok(())
            }
            Err(e) => {
                flow.tallies.drops.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// L2 framing, in passes like [`Pipeline::datagram_chunk`]: parse every frame (punting and
    /// dropping as it goes), look the media ones up, load their flows' hot lines, then act.
    // ~58 ns/pkt at burst 32 (relay, 1k flows), ~96 (relay, 1M), ~406 (fan-out 8, 1M): ~40 ns
    // per extra subscriber, including the bench pool's full-frame copy.
    fn frame_chunk<B: PacketBuf>(
        &mut self,
        now_ns: u64,
        flows: &FlowIndex,
        burst: &mut Burst<B>,
        start: usize,
        end: usize,
    ) {
        let n = end - start;
        let mut layouts: [Option<Layout>; CHUNK] = [None; CHUNK];
        let mut keys: [Option<FlowKey>; CHUNK] = [None; CHUNK];
        for ((layout, key), i) in layouts.iter_mut().zip(&mut keys).zip(start..end) {
            let pkt = &mut burst.pkts[i];
            self.counts.rx += 1;
            self.counts.rx_bytes += pkt.buf.as_ref().len() as u64;
            match classify_frame(pkt) {
                Ok(Some((l, k))) => {
                    *layout = Some(l);
                    *key = Some(k);
                }
                Ok(None) => {
                    self.counts.exceptions += 1;
                    burst.exceptions.push(i as u16);
                }
                Err(r) => self.counts.drop(r),
            }
        }
        let mut found: [Option<FlowRef<'_>>; CHUNK] = [None; CHUNK];
        flows.get_many(&keys[..n], &mut found[..n]);
        self.touch(&found[..n]);
        for ((layout, flow), i) in layouts[..n].iter().zip(&found[..n]).zip(start..end) {
            if let Some(layout) = layout {
                self.frame(now_ns, *flow, *layout, burst, i);
            }
        }
    }

    #[inline]
    fn frame<B: PacketBuf>(
        &mut self,
        now_ns: u64,
        found: Option<FlowRef<'_>>,
        layout: Layout,
        burst: &mut Burst<B>,
        i: usize,
    ) {
        let pkt = &burst.pkts[i];
        let Some(found) = found else {
            if self.cfg.media_ports.contains(&pkt.dst.port()) {
                return self.counts.drop(DropReason::NoFlow);
            }
            self.counts.exceptions += 1;
            burst.exceptions.push(i as u16);
            return;
        };
        let frame = pkt.buf.as_ref();
        let (src, hdr_len) = (pkt.src, layout.header_len());
        // classify_frame checked l4 + 8 <= l3 + l3_len <= frame.len(). The payload is read here,
        // before any copy: afterwards only the headers are guaranteed visible.
        let l3_end = usize::from(layout.l3) + usize::from(layout.l3_len);
        let payload = frame.get(hdr_len..l3_end).unwrap_or_default();
        let flow = found.flow;
        if let Err(r) = self.admit(now_ns, flow, src, payload) {
            return self.counts.drop(r);
        }
        if layout.hop_limit <= 1 {
            flow.tallies.drops.fetch_add(1, Relaxed);
            return self.counts.drop(DropReason::TtlExpired);
        }
        let Some(plan) = frame.get(..hdr_len).and_then(|h| Plan::new(h, layout)) else {
            return self.counts.drop(DropReason::Truncated);
        };
        let mut targets = found.targets();
        let first = targets.next();
        // Copies first: the original is rewritten in place for the first target, and a copy
        // holds a private copy of the headers as received.
        for t in targets {
            let t = &t;
            let eg = match self.check(&plan, t) {
                Ok(eg) => eg,
                Err(r) => {
                    self.counts.drop(r);
                    continue;
                }
            };
            let Some(mut buf) = burst.pkts[i].buf.duplicate_headers(hdr_len) else {
                self.counts.drop(DropReason::NoBuffer);
                continue;
            };
            let r = plan.apply(buf.as_mut(), eg, t);
            let idx = burst.pkts.len() as u16;
            // Dropped copies still go back to the backend with the burst.
            burst.pkts.push(Pkt {
                buf,
                port: t.port,
                src,
                dst: t.addr,
            });
            match r {
                Ok(()) => {
                    burst.tx.push(Tx {
                        pkt: idx,
                        port: t.port,
                        dst: t.addr,
                    });
                    self.counts.tx += 1;
                }
                Err(r) => self.counts.drop(r),
            }
        }
        if let Some(t) = &first {
            let r = self
                .check(&plan, t)
                .and_then(|eg| plan.apply(burst.pkts[i].buf.as_mut(), eg, t));
            match r {
                Ok(()) => {
                    burst.tx.push(Tx {
                        pkt: i as u16,
                        port: t.port,
                        dst: t.addr,
                    });
                    self.counts.tx += 1;
                }
                Err(r) => self.counts.drop(r),
            }
        }
    }

    /// The egress plan for `t`, if the frame may leave through it at all (checked before a
    /// copy is made, so a refused subscriber costs no buffer).
    #[inline]
    fn check(&self, plan: &Plan, t: &Target) -> Result<&EgressPlan, DropReason> {
        let eg = self
            .egress
            .get(usize::from(t.port))
            .ok_or(DropReason::TxFailed)?;
        plan.check(eg, t)?;
        Ok(eg)
    }
}

/// Parses Ethernet, IP and UDP headers: a UDP datagram's layout and flow key, with its
/// addresses written to `pkt.src` and `pkt.dst`, or `None` for the exception path.
///
/// The key is built from the parsed values, not read back from `pkt.dst`: reading a just
/// written `SocketAddr` with one wide load defeats store forwarding (~10 ns a packet).
#[inline]
fn classify_frame<B: PacketBuf>(pkt: &mut Pkt<B>) -> Result<Option<(Layout, FlowKey)>, DropReason> {
    let frame = pkt.buf.as_ref();
    // A `match`, not `map_err(..)?`: the conversion compiled to narrow stores read back wide.
    let l2 = match ethernet::parse_l2(frame) {
        Ok(l2) => l2,
        Err(_) => return Err(DropReason::Truncated),
    };
    let l3 = l2.l3_offset;
    let rest = frame.get(l3..).ok_or(DropReason::Truncated)?;
    let (layout, src, dst) = match l2.ethertype {
        ethernet::ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(rest).map_err(wire_drop)?;
            if ip.next_header() != ipv4::PROTO_UDP {
                return Ok(None);
            }
            if ip.is_fragment() {
                return Err(DropReason::Fragment);
            }
            let l3_len = usize::from(ip.total_len());
            let l4 = l3 + ip.header_len();
            let u = udp::Packet::new_checked(rest.get(l4 - l3..l3_len).unwrap_or_default())
                .map_err(wire_drop)?;
            if l4 + usize::from(u.len()) != l3 + l3_len {
                return Err(DropReason::Malformed);
            }
            (
                (l4, l3_len, ip.ttl(), true),
                SocketAddr::new(IpAddr::V4(ip.src_addr()), u.src_port()),
                SocketAddr::new(IpAddr::V4(ip.dst_addr()), u.dst_port()),
            )
        }
        ethernet::ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(rest).map_err(wire_drop)?;
            let (proto, off) = ip.upper_layer().map_err(wire_drop)?;
            if proto == ipv6::PROTO_FRAGMENT {
                return Err(DropReason::Fragment);
            }
            if proto != ipv4::PROTO_UDP {
                return Ok(None);
            }
            let l3_len = 40 + usize::from(ip.payload_len());
            let l4 = l3 + off;
            let u = udp::Packet::new_checked(rest.get(off..l3_len).ok_or(DropReason::Truncated)?)
                .map_err(wire_drop)?;
            if l4 + usize::from(u.len()) != l3 + l3_len {
                return Err(DropReason::Malformed);
            }
            (
                (l4, l3_len, ip.hop_limit(), false),
                SocketAddr::new(IpAddr::V6(ip.src_addr()), u.src_port()),
                SocketAddr::new(IpAddr::V6(ip.dst_addr()), u.dst_port()),
            )
        }
        _ => return Ok(None),
    };
    let (l4, l3_len, hop_limit, v4) = layout;
    // Offsets fit 16 bits: an IP packet is at most 64 KiB and its frame starts with at most
    // 22 bytes of Ethernet and VLAN headers; anything else is not a frame we can send.
    let (Ok(l3), Ok(l4), Ok(l3_len)) =
        (u16::try_from(l3), u16::try_from(l4), u16::try_from(l3_len))
    else {
        return Err(DropReason::Malformed);
    };
    let key = FlowKey::new(pkt.port, dst);
    pkt.src = src;
    pkt.dst = dst;
    Ok(Some((
        Layout {
            l3,
            l4,
            l3_len,
            hop_limit,
            v4,
        },
        key,
    )))
}

fn wire_drop(e: popmesh_wire::Error) -> DropReason {
    match e {
        popmesh_wire::Error::Truncated => DropReason::Truncated,
        popmesh_wire::Error::Malformed(_) => DropReason::Malformed,
    }
}
