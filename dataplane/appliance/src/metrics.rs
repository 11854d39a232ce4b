//! Prometheus exposition of the media lane, read at scrape time from the workers' counters and
//! the flow table (nothing on the packet path knows about Prometheus).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use popmesh_media::flow::FlowReaderFactory;
use popmesh_media::DropReason;

use crate::workers::{State, WorkerInfo};
use crate::Clock;

/// Per-session series are exported for at most this many flows; beyond it only totals are,
/// so a POP with a million flows does not melt its Prometheus.
pub const FLOW_SERIES_LIMIT: usize = 1_000;

/// Reads everything at scrape time.
#[derive(Debug)]
pub struct MediaCollector {
    /// Workers in core order.
    pub workers: Vec<Arc<WorkerInfo>>,
    /// Flow table access.
    pub flows: FlowReaderFactory,
    /// Configured capacity.
    pub max_flows: u64,
    /// Clock shared with the workers (ns since start).
    pub clock: Clock,
    /// DPDK ports, TAPs and packet pool, with `media.backend = "dpdk"`.
    #[cfg(popmesh_dpdk)]
    pub dpdk: Option<Arc<popmesh_media_dpdk::PortSet>>,
}

/// Device counters of DPDK ports and their exception TAPs, and the packet pool.
#[cfg(popmesh_dpdk)]
fn encode_dpdk(
    enc: &mut DescriptorEncoder<'_>,
    set: &popmesh_media_dpdk::PortSet,
) -> Result<(), std::fmt::Error> {
    use popmesh_dpdk::PortStats;
    let ports = set.ports();
    let label = |i: usize, kind: &'static str| -> Labels {
        let p = &ports[i];
        vec![
            ("port", p.name.clone()),
            ("device", p.device.clone()),
            ("kind", kind.to_string()),
        ]
    };
    let mut rows: Vec<(Labels, PortStats)> = Vec::new();
    rows.extend(
        set.port_stats()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (label(i, "media"), s)),
    );
    rows.extend(
        set.tap_stats()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (label(i, "exception_tap"), s)),
    );
    type Field = fn(&PortStats) -> u64;
    let fields: [(&str, &str, Field); 8] = [
        (
            "popmesh_dpdk_port_rx_packets",
            "Packets the device received.",
            |s| s.ipackets,
        ),
        (
            "popmesh_dpdk_port_tx_packets",
            "Packets the device sent.",
            |s| s.opackets,
        ),
        (
            "popmesh_dpdk_port_rx_bytes",
            "Bytes the device received.",
            |s| s.ibytes,
        ),
        (
            "popmesh_dpdk_port_tx_bytes",
            "Bytes the device sent.",
            |s| s.obytes,
        ),
        (
            "popmesh_dpdk_port_rx_missed",
            "Packets the device dropped because its receive ring was full (imissed): the \
             workers do not keep up; add media cores or raise media.dpdk.rx_desc.",
            |s| s.imissed,
        ),
        (
            "popmesh_dpdk_port_rx_nombuf",
            "Receive failures for want of a free mbuf: the packet pool is too small \
             (media.dpdk.mbufs) or mbufs leak.",
            |s| s.rx_nombuf,
        ),
        (
            "popmesh_dpdk_port_rx_errors",
            "Erroneous packets received (ierrors).",
            |s| s.ierrors,
        ),
        (
            "popmesh_dpdk_port_tx_errors",
            "Failed transmissions (oerrors).",
            |s| s.oerrors,
        ),
    ];
    for (name, help, f) in fields {
        counter(enc, name, help, rows.iter().map(|(l, s)| (l.clone(), f(s))))?;
    }
    let (capacity, in_use) = set.pool_usage();
    gauge(
        enc,
        "popmesh_dpdk_pool_mbufs",
        "Mbufs of the packet pool, by state (capacity from media.dpdk.mbufs or its sizing rule).",
        [
            (vec![("state", "capacity".to_string())], f64::from(capacity)),
            (vec![("state", "in_use".to_string())], f64::from(in_use)),
        ],
    )
}

type Labels = Vec<(&'static str, String)>;

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for MediaCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let w = |i: &WorkerInfo| -> Labels {
            vec![
                ("worker", i.index.to_string()),
                ("core", i.core.to_string()),
            ]
        };
        type Field = fn(&popmesh_media::WorkerStats) -> &std::sync::atomic::AtomicU64;
        let per_worker: [(&str, &str, Field); 9] = [
            (
                "popmesh_media_rx_packets",
                "Packets received by the worker.",
                |s| &s.rx_packets,
            ),
            (
                "popmesh_media_rx_bytes",
                "Bytes received by the worker.",
                |s| &s.rx_bytes,
            ),
            (
                "popmesh_media_tx_packets",
                "Packets handed to the backend for transmission (one per subscriber).",
                |s| &s.tx_packets,
            ),
            ("popmesh_media_rtp_packets", "RTP packets accepted.", |s| {
                &s.rtp_packets
            }),
            (
                "popmesh_media_rtcp_packets",
                "RTCP packets accepted.",
                |s| &s.rtcp_packets,
            ),
            (
                "popmesh_media_exception_packets",
                "Packets punted to the exception path (ARP, ICMP, non-media UDP).",
                |s| &s.exception_packets,
            ),
            ("popmesh_media_polls", "Backend polls.", |s| &s.polls),
            (
                "popmesh_media_empty_polls",
                "Backend polls that returned nothing.",
                |s| &s.empty_polls,
            ),
            (
                "popmesh_media_idle_waits",
                "Times an idle worker waited for traffic instead of spinning.",
                |s| &s.idle_waits,
            ),
        ];
        for (name, help, f) in per_worker {
            counter(
                &mut enc,
                name,
                help,
                self.workers
                    .iter()
                    .map(|i| (w(i), f(&i.stats).load(Relaxed))),
            )?;
        }
        counter(
            &mut enc,
            "popmesh_media_drops",
            "Packets dropped, by worker and reason.",
            self.workers.iter().flat_map(|i| {
                DropReason::ALL.iter().map(move |r| {
                    let mut l = w(i);
                    l.push(("reason", r.name().to_string()));
                    (l, i.stats.drops(*r))
                })
            }),
        )?;
        // Backend-specific counters, by name (every worker has the same backend).
        let descs: Vec<_> = self
            .workers
            .first()
            .map(|i| i.backend.snapshot().map(|(d, _)| d).collect())
            .unwrap_or_default();
        for d in descs {
            let series = self.workers.iter().filter_map(|i| {
                i.backend
                    .snapshot()
                    .find(|(x, _)| x.name == d.name)
                    .map(|(_, v)| (w(i), v))
            });
            if d.name.ends_with("_in_use") {
                gauge(&mut enc, d.name, d.help, series.map(|(l, v)| (l, v as f64)))?;
            } else {
                counter(&mut enc, d.name, d.help, series)?;
            }
        }
        gauge(
            &mut enc,
            "popmesh_media_worker_up",
            "1 while the worker is polling.",
            self.workers
                .iter()
                .map(|i| (w(i), f64::from(u8::from(i.state() == State::Running)))),
        )?;

        #[cfg(popmesh_dpdk)]
        if let Some(set) = &self.dpdk {
            encode_dpdk(&mut enc, set)?;
        }

        let reader = self.flows.reader();
        let Some(table) = reader.enter() else {
            return Ok(());
        };
        gauge(
            &mut enc,
            "popmesh_media_flows",
            "Media flows installed.",
            [(Labels::new(), table.len() as f64)],
        )?;
        gauge(
            &mut enc,
            "popmesh_media_flows_max",
            "Flow table capacity (media.max_flows).",
            [(Labels::new(), self.max_flows as f64)],
        )?;

        // Totals over all flows, then per-session series for the first FLOW_SERIES_LIMIT.
        let (mut expected, mut lost, mut ooo) = (0u64, 0i64, 0u64);
        for f in table.iter() {
            for s in f.ssrc_stats() {
                expected += s.expected();
                lost += s.lost();
                ooo += s.out_of_order;
            }
        }
        gauge(
            &mut enc,
            "popmesh_media_rtp_expected_packets",
            "RTP packets expected from sequence numbers, all installed flows.",
            [(Labels::new(), expected as f64)],
        )?;
        gauge(
            &mut enc,
            "popmesh_media_rtp_lost_packets",
            "RTP packets lost before reaching the appliance, all flows (negative with duplicates).",
            [(Labels::new(), lost as f64)],
        )?;
        gauge(
            &mut enc,
            "popmesh_media_rtp_out_of_order_packets",
            "RTP packets that arrived after a higher sequence number, all installed flows.",
            [(Labels::new(), ooo as f64)],
        )?;

        let mut flows: Vec<_> = table.iter().collect();
        flows.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        flows.truncate(FLOW_SERIES_LIMIT);
        let sl = |f: &popmesh_media::Flow| -> Labels { vec![("session", f.spec.name.to_string())] };
        counter(
            &mut enc,
            "popmesh_media_flow_packets",
            "Packets accepted per session.",
            flows
                .iter()
                .map(|f| (sl(f), f.counters.packets.load(Relaxed))),
        )?;
        counter(
            &mut enc,
            "popmesh_media_flow_bytes",
            "Payload bytes accepted per session.",
            flows
                .iter()
                .map(|f| (sl(f), f.counters.bytes.load(Relaxed))),
        )?;
        counter(
            &mut enc,
            "popmesh_media_flow_drops",
            "Packets dropped per session (wrong source, not media, bad RTP, TTL).",
            flows.iter().map(|f| (sl(f), f.tallies.drops.load(Relaxed))),
        )?;
        let now = self.clock.now_ns();
        gauge(
            &mut enc,
            "popmesh_media_flow_idle_seconds",
            "Seconds since the session's last accepted packet (-1 = never).",
            flows.iter().map(|f| {
                let seen = f.counters.last_seen_ns.load(Relaxed);
                let v = if seen == 0 {
                    -1.0
                } else {
                    now.saturating_sub(seen) as f64 / 1e9
                };
                (sl(f), v)
            }),
        )?;
        let ssrc_series = |f: &popmesh_media::Flow| {
            let name = f.spec.name.to_string();
            let rate = f64::from(f.spec.clock_rate.max(1));
            f.ssrc_stats()
                .map(move |s| {
                    (
                        vec![
                            ("session", name.clone()),
                            ("ssrc", format!("{:#010x}", s.ssrc)),
                        ],
                        s,
                        rate,
                    )
                })
                .collect::<Vec<_>>()
        };
        let all: Vec<_> = flows.iter().flat_map(|f| ssrc_series(f)).collect();
        counter(
            &mut enc,
            "popmesh_media_flow_rtp_expected_packets",
            "RTP packets expected per session and SSRC.",
            all.iter().map(|(l, s, _)| (l.clone(), s.expected())),
        )?;
        gauge(
            &mut enc,
            "popmesh_media_flow_rtp_lost_packets",
            "RTP packets lost per session and SSRC (RFC 3550 cumulative lost).",
            all.iter().map(|(l, s, _)| (l.clone(), s.lost() as f64)),
        )?;
        gauge(
            &mut enc,
            "popmesh_media_flow_rtp_jitter_seconds",
            "RTP interarrival jitter per session and SSRC (RFC 3550).",
            all.iter()
                .map(|(l, s, rate)| (l.clone(), f64::from(s.jitter()) / rate)),
        )?;
        Ok(())
    }
}

/// A registry holding the media collector.
pub fn registry(c: MediaCollector) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(c));
    r
}
