//! A fixed workload for counting the instructions `Pipeline::process` spends per packet, which
//! unlike time is repeatable on a noisy VM: `perf/pipeline_instructions.py` runs this under
//! `valgrind --tool=callgrind` twice, with and without the `process` calls, and divides the
//! difference by the packets.
//!
//! Bursts of 32 packets spread round-robin over all flows (1,024 by default, so the table is
//! cache-resident and the count is the pipeline's own work), each flow's packets carrying
//! consecutive RTP sequence numbers. Building a burst is the same in both runs.
//!
//! `cargo run --release -p popmesh-media --example pipeline_instructions --
//!  ethernet|datagram SUBSCRIBERS BURSTS FLOWS [skip]`

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use popmesh_media::flow::{FlowKey, FlowSpec, FlowTable};
use popmesh_media::testkit::{rtp_packet, subscriber, udp_frame};
use popmesh_media::{Burst, Egress, Framing, PacketBuf, Pipeline, PipelineConfig, Pkt};

const BURST: u32 = 32;

fn flow_dst(i: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
        5004,
    ))
}

fn flow_src(i: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8),
        6000,
    ))
}

/// Writes the RTP sequence number and timestamp (30 fps at 90 kHz) at `rtp`.
fn stamp(packet: &mut [u8], rtp: usize, seq: u16) {
    if let Some(h) = packet.get_mut(rtp + 2..rtp + 8) {
        h[..2].copy_from_slice(&seq.to_be_bytes());
        h[2..].copy_from_slice(&u32::from(seq).wrapping_mul(3000).to_be_bytes());
    }
}

/// A frame's buffer: a plain `Vec`, copied whole for fan-out (as a backend without chained
/// buffers does).
#[derive(Debug)]
struct Buf(Vec<u8>);

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Buf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl PacketBuf for Buf {
    fn duplicate_headers(&mut self, _header_len: usize) -> Option<Self> {
        Some(Buf(self.0.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u32| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let ethernet = args.first().map(String::as_str) != Some("datagram");
    let subscribers = arg(1, 1) as u16;
    let bursts = arg(2, 20_000);
    let flows = arg(3, 1024).max(1);
    let skip = args.get(4).map(String::as_str) == Some("skip");

    let mut table = FlowTable::new(flows as usize);
    for i in 0..flows {
        let targets = (0..subscribers).map(subscriber).collect();
        let spec = FlowSpec {
            name: "instructions".into(),
            key: FlowKey::new(0, flow_dst(i)),
            source: Some(flow_src(i)),
            clock_rate: 90_000,
            targets,
        };
        if let Err(e) = table.upsert(spec) {
            eprintln!("pipeline_instructions: installing flow {i}: {e}");
            std::process::exit(1);
        }
    }
    table.publish();
    let reader = table.reader().reader();
    let mut pipeline = Pipeline::new(PipelineConfig {
        framing: if ethernet {
            Framing::Ethernet
        } else {
            Framing::Datagram
        },
        egress: vec![Egress {
            addr: SocketAddr::from(([192, 0, 2, 1], 40000)),
            mac: [2, 0, 0, 0, 0, 0xee],
            gateway_mac: [2, 0, 0, 0, 0, 0xff],
            mtu: 1500,
        }],
        media_ports: 5000..=5999,
    });
    // One template per flow; each packet is a copy with its sequence number stamped in.
    let rtp_at = if ethernet { 14 + 20 + 8 } else { 0 };
    let templates: Vec<Vec<u8>> = (0..flows)
        .map(|i| {
            let rtp = rtp_packet(0, 0x1000 + i, 188);
            if ethernet {
                udp_frame(flow_src(i), flow_dst(i), &rtp, None)
            } else {
                rtp
            }
        })
        .collect();
    let mut burst: Burst<Buf> = Burst::with_capacity(BURST as usize, 512);
    let mut sent = 0u64;
    for b in 0..bursts {
        for k in 0..BURST {
            let n = b * BURST + k;
            let flow = n % flows;
            let mut bytes = templates[flow as usize].clone();
            stamp(&mut bytes, rtp_at, (n / flows) as u16);
            burst.pkts.push(if ethernet {
                Pkt::frame(Buf(bytes), 0)
            } else {
                Pkt::datagram(Buf(bytes), 0, flow_src(flow), flow_dst(flow))
            });
        }
        if !skip {
            let Some(guard) = reader.enter() else {
                eprintln!("pipeline_instructions: the flow table is gone");
                std::process::exit(1);
            };
            sent += pipeline
                .process(u64::from(b) * 1_000, &guard, &mut burst)
                .tx;
        }
        burst.clear();
    }
    println!(
        "packets {} sent {sent}",
        u64::from(bursts) * u64::from(BURST)
    );
}
