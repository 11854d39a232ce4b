//! Pipeline cost per packet at burst 32, for relay and fan-out to 8, with 1k, 100k and 1M
//! installed flows and packets spread uniformly over all flows (the cache-hostile case a busy
//! POP sees). Two framings: socket backends (decide only) and L2 frames (parse, rewrite,
//! incremental checksums, and for fan-out a pooled copy per extra subscriber).
//!
//! Every flow receives its own SSRC with consecutive sequence numbers, as from a real publisher.
//! The flow order is a uniform random sequence at least as long as the table (2^20 positions
//! for 1M flows), so nearly every installed flow is visited in each pass and the working set is
//! the whole table, not a cache-sized subset of it.
//!
//! Only `Pipeline::process` (and entering the table, once per burst as workers do) is timed:
//! building each burst (copying the packets in, stamping sequence numbers) is untimed setup, as
//! reception is not the pipeline's work. Bursts are built just before the timed batch, so their
//! bytes are as warm as a just-received burst.
//!
//! `taskset -c 1 cargo bench -p popmesh-media --bench pipeline`, with the dataplane's allocator
//! (mimalloc, whose arenas get transparent huge pages even where THP is `madvise` only);
//! criterion reports time per burst and, through `Throughput::Elements(32)`, packets per second;
//! ns/packet = time / 32.

use std::cell::{Cell, OnceCell, RefCell};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use popmesh_media::flow::{FlowKey, FlowReader, FlowSpec, FlowTable};
use popmesh_media::testkit::{rtp_packet, subscriber, udp_frame};
use popmesh_media::{Burst, Egress, Framing, PacketBuf, Pipeline, PipelineConfig, Pkt};
/// The allocator `popmesh-dataplane` runs with, so that flows sit in the heap as they do there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BURST: usize = 32;
/// Fewest flow positions prepared per case; bursts are drawn from them in order.
const MIN_POSITIONS: usize = BURST * 2048;
/// Buffers in the L2 cases' pool.
const POOL_BUFFERS: usize = 1 << 17;
/// Bursts prepared per timed batch. Fixed and small so that (a) the L2 pool never runs dry,
/// which with criterion's growing `SmallInput` batches made copies allocate and page-fault
/// inside the measurement, and (b) packets are as warm as a just-received burst.
const BATCH: u64 = 16;
/// Offset of the RTP header in the L2 cases' frames (untagged Ethernet, IPv4 without options,
/// UDP).
const RTP_IN_FRAME: usize = 14 + 20 + 8;

fn flow_dst(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
        5004,
    )
}

fn flow_src(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8),
        6000,
    )
}

fn table(flows: u32, fanout: u16) -> FlowTable {
    let mut t = FlowTable::new(flows as usize);
    for i in 0..flows {
        t.upsert(FlowSpec {
            name: "bench".into(),
            key: FlowKey::new(0, SocketAddr::V4(flow_dst(i))),
            source: Some(SocketAddr::V4(flow_src(i))),
            clock_rate: 90_000,
            targets: (0..fanout).map(subscriber).collect(),
        })
        .expect("install");
    }
    t.publish();
    t
}

/// A buffer from a fixed pool, like an mbuf: `duplicate_headers` takes a free buffer and copies
/// the whole frame (what the DPDK backend does when ports cannot send chained mbufs; the
/// chained header copy is cheaper).
struct PoolBuf {
    bytes: Vec<u8>,
    pool: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsMut<[u8]> for PoolBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl PacketBuf for PoolBuf {
    fn duplicate_headers(&mut self, _header_len: usize) -> Option<Self> {
        // Grows only while criterion's first batches fill up; then steady state, no allocation.
        let mut b = self
            .pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(2048));
        b.clear();
        b.extend_from_slice(&self.bytes);
        Some(PoolBuf {
            bytes: b,
            pool: Rc::clone(&self.pool),
        })
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let b = std::mem::take(&mut self.bytes);
        self.pool.borrow_mut().push(b);
    }
}

/// Uniform pseudo-random flow indices (xorshift; fixed seed so runs compare), at least as many
/// as there are flows.
fn flow_order(flows: u32) -> Vec<u32> {
    let positions = MIN_POSITIONS.max((flows as usize).next_power_of_two());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..positions)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(flows)) as u32
        })
        .collect()
}

/// Everything one (flows, fan-out) case needs, built only if criterion selects the case.
struct Case {
    _table: FlowTable,
    reader: FlowReader,
    order: Vec<u32>,
    /// Per position of `order`: how many earlier positions address the same flow, and how many
    /// positions do in all. A packet at position `p` of pass `n` over `order` carries sequence
    /// number `n * count + earlier`, so every flow sees consecutive sequence numbers, as from a
    /// real publisher (random ones would measure RFC 3550's restart path instead).
    seq: Vec<(u16, u16)>,
    /// Running position in `order`, shared by every bench of the case so that each flow's
    /// sequence numbers keep counting up from one bench to the next.
    at: Cell<usize>,
}

/// See [`Case::seq`].
fn seq_plan(order: &[u32]) -> Vec<(u16, u16)> {
    let mut seen = std::collections::HashMap::<u32, u16>::new();
    let earlier: Vec<u16> = order
        .iter()
        .map(|i| {
            let n = seen.entry(*i).or_insert(0);
            *n += 1;
            *n - 1
        })
        .collect();
    order
        .iter()
        .zip(earlier)
        .map(|(i, e)| (e, seen[i]))
        .collect()
}

impl Case {
    /// The RTP sequence number of the packet at running position `at` (not reduced mod the order length).
    fn seq(&self, at: usize) -> u16 {
        let positions = self.order.len();
        let (earlier, count) = self.seq[at % positions];
        ((at / positions) as u16)
            .wrapping_mul(count)
            .wrapping_add(earlier)
    }
}

/// Writes sequence number, timestamp (30 fps at 90 kHz) and SSRC into an RTP header.
fn stamp(rtp: &mut [u8], seq: u16, ssrc: u32) {
    if let Some(h) = rtp.get_mut(2..12) {
        h[..2].copy_from_slice(&seq.to_be_bytes());
        h[2..6].copy_from_slice(&u32::from(seq).wrapping_mul(3000).to_be_bytes());
        h[6..].copy_from_slice(&ssrc.to_be_bytes());
    }
}

impl Case {
    fn new(flows: u32, fanout: u16) -> Case {
        let t = table(flows, fanout);
        let reader = t.reader().reader();
        let order = flow_order(flows);
        let case = Case {
            _table: t,
            reader,
            seq: seq_plan(&order),
            order,
            at: Cell::new(0),
        };
        // One untimed pass, so that every flow has seen its publisher's first packet (which
        // takes RFC 3550's start-up path) before anything is measured, as on a POP in steady
        // state.
        let mut p = Pipeline::new(PipelineConfig::datagram());
        while case.at.get() < case.order.len() {
            let mut burst = case.datagram_burst(fanout);
            let g = case.reader.enter().expect("table");
            black_box(p.process(0, &g, &mut burst));
        }
        case
    }

    /// The next burst of datagrams: the flows' own SSRCs and next sequence numbers.
    fn datagram_burst(&self, fanout: u16) -> Burst<Vec<u8>> {
        let at = self.at.get();
        let mut burst = Burst::with_capacity(BURST, BURST * usize::from(fanout));
        for k in 0..BURST {
            let i = self.order[(at + k) % self.order.len()];
            let mut buf = rtp_packet(0, 0, 160);
            stamp(&mut buf, self.seq(at + k), i);
            burst.pkts.push(Pkt::datagram(
                buf,
                0,
                SocketAddr::V4(flow_src(i)),
                SocketAddr::V4(flow_dst(i)),
            ));
        }
        self.at.set(at + BURST);
        burst
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    for &flows in &[1_000u32, 100_000, 1_000_000] {
        for &fanout in &[1u16, 8] {
            let case: OnceCell<Case> = OnceCell::new();
            let name = format!("{flows}flows/fanout{fanout}");

            // Socket framing: payload plus addresses; the pipeline only decides.
            g.bench_function(BenchmarkId::new("datagram", &name), |b| {
                let case = case.get_or_init(|| Case::new(flows, fanout));
                let mut p = Pipeline::new(PipelineConfig::datagram());
                let mut now = 0u64;
                b.iter_batched_ref(
                    || case.datagram_burst(fanout),
                    |burst| {
                        now += 20_000;
                        let g = case.reader.enter().expect("table");
                        black_box(p.process(now, &g, burst));
                    },
                    BatchSize::NumIterations(BATCH),
                )
            });

            // L2 framing: whole frames rewritten in place, pooled copies for fan-out.
            g.bench_function(BenchmarkId::new("ethernet", &name), |b| {
                let case = case.get_or_init(|| Case::new(flows, fanout));
                // Big enough that criterion's batches never empty it: a DPDK pool is sized so.
                let pool = Rc::new(RefCell::new(
                    (0..POOL_BUFFERS)
                        // Touched now, so no page fault lands inside a measurement.
                        .map(|_| {
                            let mut v = vec![0u8; 2048];
                            v.clear();
                            v
                        })
                        .collect::<Vec<_>>(),
                ));
                let mut p = Pipeline::new(PipelineConfig {
                    framing: Framing::Ethernet,
                    egress: vec![Egress {
                        addr: "192.0.2.1:40000".parse().expect("addr"),
                        mac: [2, 0, 0, 0, 0, 0xee],
                        gateway_mac: [2, 0, 0, 0, 0, 0xff],
                        mtu: 1500,
                    }],
                    media_ports: 5000..=5999,
                });
                let mut now = 0u64;
                b.iter_batched_ref(
                    || {
                        let at = case.at.get();
                        let mut burst: Burst<PoolBuf> =
                            Burst::with_capacity(BURST * usize::from(fanout), BURST * 8);
                        for k in 0..BURST {
                            let mut bytes = pool
                                .borrow_mut()
                                .pop()
                                .unwrap_or_else(|| Vec::with_capacity(2048));
                            bytes.clear();
                            let i = case.order[(at + k) % case.order.len()];
                            bytes.extend_from_slice(&udp_frame(
                                SocketAddr::V4(flow_src(i)),
                                SocketAddr::V4(flow_dst(i)),
                                &rtp_packet(0, i, 160),
                                None,
                            ));
                            // Untimed setup: the flow's next sequence number. The UDP checksum
                            // goes stale; nothing here verifies it.
                            stamp(
                                bytes.get_mut(RTP_IN_FRAME..).unwrap_or_default(),
                                case.seq(at + k),
                                i,
                            );
                            burst.pkts.push(Pkt::frame(
                                PoolBuf {
                                    bytes,
                                    pool: Rc::clone(&pool),
                                },
                                0,
                            ));
                        }
                        case.at.set(at + BURST);
                        burst
                    },
                    |burst| {
                        now += 20_000;
                        let g = case.reader.enter().expect("table");
                        black_box(p.process(now, &g, burst));
                    },
                    BatchSize::NumIterations(BATCH),
                )
            });
        }
    }
    g.finish();
}

/// The memory floor of a relay at 1M flows on this machine: the same access pattern as the
/// pipeline's lookup without any of its work. Per packet, one random 64-byte line of an
/// index-sized array, then (a second pass, dependent on the first) one random line of a
/// flow-table-sized array, in passes over bursts of 32 exactly like `FlowIndex::get_many` and
/// `FlowIndex::touch`. What the pipeline costs above this is its own work; what this costs is
/// the memory system's (caches, TLB and, in a VM, nested paging).
fn memory_floor(c: &mut Criterion) {
    /// One cache line; atomics so that the dirty variant can write it through a shared
    /// reference (a relaxed load is a plain load).
    #[repr(align(64))]
    struct Line([AtomicU64; 8]);
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
    let mut g = c.benchmark_group("memory_floor");
    g.throughput(Throughput::Elements(BURST as u64));
    let flows = 1usize << 20;
    // As FlowTable::new(1M) allocates: 2^21 slots of 32 bytes, and one 384-byte flow per flow.
    let index_lines = (flows * 2 * 32) / 64;
    let flow_lines = flows * 6;
    let state: OnceCell<(Vec<Line>, Vec<Line>)> = OnceCell::new();
    let tables = || {
        state.get_or_init(|| {
            // Each index line names a random flow line, as a slot names its flow.
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let index = (0..index_lines)
                .map(|_| {
                    let f = (xorshift(&mut x) % flow_lines as u64) / 6 * 6;
                    Line(std::array::from_fn(|_| AtomicU64::new(f)))
                })
                .collect();
            let table = (0..flow_lines)
                .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(1))))
                .collect();
            (index, table)
        })
    };
    // One burst's lookups: a pass over random index lines, then the flow lines they name.
    let lookup = |x: &mut u64, index: &[Line]| {
        let mut homes = [0usize; BURST];
        for h in &mut homes {
            *h = (xorshift(x) % index_lines as u64) as usize;
        }
        let mut found = [0usize; BURST];
        for (f, h) in found.iter_mut().zip(&homes) {
            *f = index[*h].0[0].load(Relaxed) as usize;
        }
        found
    };
    for dirty in [false, true] {
        // The dirty variant also writes each packet's flow line, as the pipeline's counters
        // do: what the write-back of a flow table far larger than the caches adds.
        let name = if dirty {
            "two_dependent_lines_dirty/1000000flows"
        } else {
            "two_dependent_lines/1000000flows"
        };
        g.bench_function(name, |b| {
            let (index, table) = tables();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            b.iter(|| {
                let found = lookup(&mut x, index);
                let mut sink = 0u64;
                for f in &found {
                    sink ^= table[*f].0[0].load(Relaxed);
                }
                if dirty {
                    for f in &found {
                        let c = &table[*f].0[1];
                        c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
                    }
                }
                black_box(sink)
            })
        });
    }
    g.finish();
    drop(state);
}

criterion_group!(benches, bench, memory_floor);
criterion_main!(benches);
