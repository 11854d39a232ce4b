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

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering::Relaxed;

use popmesh_wire::{demux, ethernet, ipv4, ipv6, rtcp, rtp, udp};

use crate::backend::{Burst, Framing, PacketBuf, Pkt, Tx};
use crate::drop::DropReason;
use crate::flow::{add, bump, Flow, FlowIndex, FlowKey, FlowRef, Target};
use crate::rewrite::{EgressPlan, Layout, Plan, PLAIN_V4_LEN};
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
    // Costs per packet (benches/pipeline.rs) and instructions per packet
    // (perf/pipeline_instructions.py): ARCHITECTURE.md, "The pipeline".
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
    // Relay: ~26 ns/pkt at 1k flows, 59-69 at 1M (two VMs); ~360 instructions/packet.
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
    // Relay: ~47 ns/pkt at 1k flows, ~107 at 1M (Xeon VM); ~728 instructions/packet. Fan-out 8
    // pays ~40 ns per extra subscriber, including the bench pool's full-frame copy.
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
        if let Some(t) = found.relay_target() {
            // A relay: no copies, the frame itself goes to its one subscriber.
            return self.send_in_place(&plan, &t, burst, i);
        }
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
            self.send_in_place(&plan, t, burst, i);
        }
    }

    /// Rewrites packet `i` itself for `t` and queues it (the first or only subscriber).
    #[inline(always)]
    fn send_in_place<B: PacketBuf>(
        &mut self,
        plan: &Plan,
        t: &Target,
        burst: &mut Burst<B>,
        i: usize,
    ) {
        let r = self
            .check(plan, t)
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
    if let Some((layout, (src_ip, src_port), (dst_ip, dst_port))) = plain_v4(frame) {
        // Built from the integers straight into the packet: a SocketAddr assembled on the
        // stack from narrow stores and copied out wide stalls on store forwarding (~14% of a
        // DPDK worker's time when this returned SocketAddrV4s).
        pkt.src = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from_bits(src_ip), src_port));
        pkt.dst = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from_bits(dst_ip), dst_port));
        return Ok(Some((layout, FlowKey::v4(pkt.port, dst_ip, dst_port))));
    }
    let Some((layout, src, dst)) = parse_frame(frame)? else {
        return Ok(None);
    };
    let key = FlowKey::new(pkt.port, dst);
    pkt.src = src;
    pkt.dst = dst;
    Ok(Some((layout, key)))
}

/// An IPv4 address (its bits) and a UDP port, as [`plain_v4`] reads them.
type V4Addr = (u32, u16);

/// The frame nearly every media packet is, checked with a handful of loads from one fixed-size
/// view: untagged Ethernet, IPv4 with a 20-byte header, UDP, not a fragment, and IP and UDP
/// lengths that agree with each other and fit the frame. Anything else is `None` and goes
/// through [`parse_frame`], which also says what is wrong with it.
///
/// Where this returns `Some`, [`parse_frame`] returns the same layout and addresses (a
/// property test holds the two to it): this only skips the general parser's VLAN loop, option
/// and extension-header handling and per-layer length checks.
#[inline(always)]
fn plain_v4(frame: &[u8]) -> Option<(Layout, V4Addr, V4Addr)> {
    let h: &[u8; PLAIN_V4_LEN] = frame.get(..PLAIN_V4_LEN)?.try_into().ok()?;
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    // EtherType IPv4; version 4, IHL 5; protocol UDP; no MF flag and fragment offset 0.
    if be16(12) != ethernet::ethertype::IPV4
        || h[14] != 0x45
        || h[23] != ipv4::PROTO_UDP
        || be16(20) & 0x3fff != 0
    {
        return None;
    }
    let l3_len = be16(16);
    // IP total length covers the header and a whole UDP header and lies within the frame; the
    // UDP length is exactly the rest of the IP packet.
    if l3_len < 28 || usize::from(l3_len) + 14 > frame.len() || be16(38) != l3_len - 20 {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let src = (be32(26), be16(34));
    let dst = (be32(30), be16(36));
    let layout = Layout {
        l3: 14,
        l4: 34,
        l3_len,
        hop_limit: h[22],
        v4: true,
    };
    Some((layout, src, dst))
}

/// The general parse behind [`classify_frame`]: VLAN tags, IPv4 options, IPv6 extension
/// headers; the layout and the source and destination addresses of a UDP datagram, `None`
/// for the exception path, or why the frame is dropped.
fn parse_frame(frame: &[u8]) -> Result<Option<(Layout, SocketAddr, SocketAddr)>, DropReason> {
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
    let layout = Layout {
        l3,
        l4,
        l3_len,
        hop_limit,
        v4,
    };
    Ok(Some((layout, src, dst)))
}

fn wire_drop(e: popmesh_wire::Error) -> DropReason {
    match e {
        popmesh_wire::Error::Truncated => DropReason::Truncated,
        popmesh_wire::Error::Malformed(_) => DropReason::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::udp_frame;
    use proptest::prelude::*;

    /// A valid plain IPv4 frame (a UDP datagram of `payload_len` bytes) with `edits` applied:
    /// each sets one byte of the first 64, so lengths, flags, IHL, EtherType and protocol all
    /// get their turn at being wrong, then the frame is cut to `keep` bytes at most.
    fn edited_frame(payload_len: usize, edits: &[(usize, u8)], keep: usize) -> Vec<u8> {
        let src = SocketAddr::from(([172, 16, 0, 1], 6000));
        let dst = SocketAddr::from(([10, 0, 0, 1], 5004));
        let mut f = udp_frame(src, dst, &vec![0x80; payload_len], None);
        for &(at, v) in edits {
            if let Some(b) = f.get_mut(at % 64) {
                *b = v;
            }
        }
        f.truncate(keep);
        f
    }

    /// What [`plain_v4`] returns, in [`parse_frame`]'s terms.
    fn fast(frame: &[u8]) -> Option<(Layout, SocketAddr, SocketAddr)> {
        plain_v4(frame).map(|(l, (si, sp), (di, dp))| {
            (
                l,
                SocketAddr::from((Ipv4Addr::from_bits(si), sp)),
                SocketAddr::from((Ipv4Addr::from_bits(di), dp)),
            )
        })
    }

    proptest! {
        /// The fixed-offset parse never disagrees with the general one: where it answers, the
        /// general parse gives the same layout and addresses.
        #[test]
        fn plain_v4_agrees_with_the_general_parse(
            payload_len in 0usize..64,
            edits in proptest::collection::vec((0usize..64, any::<u8>()), 0..4),
            keep in 0usize..160,
        ) {
            let frame = edited_frame(payload_len, &edits, keep);
            if let Some(f) = fast(&frame) {
                prop_assert_eq!(parse_frame(&frame), Ok(Some(f)));
            }
        }

        /// Arbitrary bytes: same property, and never a panic.
        #[test]
        fn plain_v4_agrees_on_arbitrary_bytes(frame in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Some(f) = fast(&frame) {
                prop_assert_eq!(parse_frame(&frame), Ok(Some(f)));
            }
        }
    }

    /// The frames the appliance sees most take the fixed-offset path, and classification puts
    /// the same key and addresses on the packet as the general parse would.
    #[test]
    fn a_plain_frame_takes_the_fast_path_with_the_same_result() {
        let frame = edited_frame(160, &[], usize::MAX);
        assert!(plain_v4(&frame).is_some());
        let Ok(Some((layout, src, dst))) = parse_frame(&frame) else {
            panic!("general parse failed");
        };
        let mut pkt = Pkt::frame(frame, 3);
        let (l, key) = classify_frame(&mut pkt)
            .expect("classified")
            .expect("media");
        assert_eq!((l, pkt.src, pkt.dst), (layout, src, dst));
        assert_eq!(key, FlowKey::new(3, dst));
        assert!(layout.is_plain_v4());
    }

    /// Tagged frames, IPv4 options and fragments are left to the general parse.
    #[test]
    fn unusual_frames_take_the_general_path() {
        let src = SocketAddr::from(([172, 16, 0, 1], 6000));
        let dst = SocketAddr::from(([10, 0, 0, 1], 5004));
        let tagged = udp_frame(src, dst, &[0x80; 40], Some(7));
        assert!(plain_v4(&tagged).is_none());
        assert!(matches!(parse_frame(&tagged), Ok(Some(_))));
        // More fragments flag set.
        let mut frag = udp_frame(src, dst, &[0x80; 40], None);
        frag[20] |= 0x20;
        assert!(plain_v4(&frag).is_none());
        assert_eq!(parse_frame(&frag), Err(DropReason::Fragment));
        // A UDP length shorter than the rest of the IP packet.
        let mut bad = udp_frame(src, dst, &[0x80; 40], None);
        bad[39] -= 8;
        assert!(plain_v4(&bad).is_none());
        assert_eq!(parse_frame(&bad), Err(DropReason::Malformed));
    }
}
