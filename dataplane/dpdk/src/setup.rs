//! [`DpdkEnv`]: EAL, the packet pool, media ports and their exception TAPs, set up once on the
//! main thread before any worker starts, with errors that say how to fix the machine or the
//! config.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;

use popmesh_config::{format_mac, Config};
use popmesh_dpdk::{Eal, Mempool, Port, PortConfig as DevConfig, PortStats, ThreadRegistration};
use popmesh_media::pipeline::{Egress, PipelineConfig};
use popmesh_media::Framing;

use crate::backend::WorkerQueues;
use crate::eal_args::{eal_args, tap_names};
use crate::error::SetupError;

/// Packet pool name (DPDK names are process-wide).
const POOL_NAME: &str = "popmesh_pkts";
/// `RTE_PKTMBUF_HEADROOM`: room in front of a frame for prepending headers.
const HEADROOM: u32 = 128;
/// Ethernet header, two VLAN tags and the FCS around the largest IP packet.
const L2_OVERHEAD: u32 = 14 + 2 * 4 + 4;
/// Descriptors per exception TAP queue: the kernel's ARP, ICMP and ND trickle.
const TAP_DESC: u16 = 256;

/// A media port as set up: what workers, the pipeline and the metrics need to know.
#[derive(Debug)]
pub struct PortInfo {
    /// `media.ports[i].name`.
    pub name: String,
    /// DPDK device name.
    pub device: String,
    /// DPDK driver (`net_af_xdp`, `net_ice`, ...).
    pub driver: String,
    /// The port's MAC: the source of everything it sends, and the exception TAP's MAC.
    pub mac: [u8; 6],
    /// Whether the PMD sends chained (multi-segment) mbufs.
    pub multi_seg_tx: bool,
    /// The kernel interface of its exception TAP, if any.
    pub tap_iface: Option<String>,
}

/// Everything DPDK on this appliance: created once, kept until the workers are gone.
#[derive(Debug)]
pub struct DpdkEnv {
    // Field order is drop order: queues and ports before the pool, everything before EAL.
    workers: Vec<Option<WorkerQueues>>,
    set: Arc<PortSet>,
    egress: Vec<Egress>,
    media_ports: std::ops::RangeInclusive<u16>,
    eal: Eal,
}

/// The ports, their TAPs and the packet pool, shareable with the metrics exporter (device
/// counters may be read from any thread while the workers own the queues).
#[derive(Debug)]
pub struct PortSet {
    ports: Vec<Port>,
    taps: Vec<Port>,
    infos: Vec<PortInfo>,
    pool: Mempool,
    pool_size: u32,
}

impl PortSet {
    /// The media ports as set up, in PortId order.
    pub fn ports(&self) -> &[PortInfo] {
        &self.infos
    }

    /// Device counters of every media port, in PortId order.
    pub fn port_stats(&self) -> Vec<PortStats> {
        self.ports.iter().map(Port::stats).collect()
    }

    /// Device counters of every exception TAP, in PortId order.
    pub fn tap_stats(&self) -> Vec<PortStats> {
        self.taps.iter().map(Port::stats).collect()
    }

    /// Mbufs in the packet pool (configured or from the sizing rule) and how many are in use.
    pub fn pool_usage(&self) -> (u32, u32) {
        (self.pool_size, self.pool.in_use())
    }
}

/// Size of a packet buffer for ports whose largest IP packet is `mtu`: a whole frame fits one
/// segment, at least DPDK's default 2048 bytes, plus headroom.
fn data_room(mtu: u16) -> u16 {
    let frame = (u32::from(mtu) + L2_OVERHEAD)
        .max(2048)
        .next_multiple_of(64);
    u16::try_from(frame + HEADROOM).unwrap_or(u16::MAX)
}

impl DpdkEnv {
    /// Initialises EAL from `cfg.media.dpdk`, creates the packet pool, and configures and
    /// starts every media port (one receive and one transmit queue per media worker) and its
    /// exception TAP, which gets the port's MAC and address in the kernel.
    ///
    /// # Errors
    /// [`SetupError`] names the config key to change or the machine setting to fix.
    pub fn start(cfg: &Config) -> Result<DpdkEnv, SetupError> {
        let d = &cfg.media.dpdk;
        let workers = cfg.media.cores.len();
        let args = eal_args(cfg);
        tracing::info!(args = ?args, "starting DPDK EAL");
        let eal = Eal::init(&args).map_err(|source| SetupError::Eal {
            args: args.join(" "),
            hugepages: d.hugepages,
            source: Box::new(source),
        })?;
        tracing::info!(version = %Eal::version(), "DPDK EAL ready");

        let queue_ports = cfg.media.ports.len() * if d.exception_tap { 2 } else { 1 };
        let pool_size = d.pool_size(queue_ports, workers, cfg.media.burst);
        let max_mtu = cfg
            .media
            .ports
            .iter()
            .filter_map(|p| p.l2.as_ref().map(|l2| l2.mtu))
            .max()
            .unwrap_or(1500);
        let pool = Mempool::new(
            &eal,
            POOL_NAME,
            pool_size,
            u32::from(d.mbuf_cache),
            data_room(max_mtu),
            None,
        )
        .map_err(|source| SetupError::Pool {
            mbufs: pool_size,
            memory_mb: d.memory_mb,
            source: Box::new(source),
        })?;

        let mut ports = Vec::with_capacity(cfg.media.ports.len());
        let mut infos = Vec::with_capacity(cfg.media.ports.len());
        let mut egress = Vec::with_capacity(cfg.media.ports.len());
        let mut port_queues = Vec::with_capacity(cfg.media.ports.len());
        for (index, pc) in cfg.media.ports.iter().enumerate() {
            let l2 = pc.l2.as_ref().ok_or_else(|| SetupError::NotL2 {
                port: pc.name.clone(),
            })?;
            let path = format!("media.ports[{index}].device");
            let port = Port::by_name(&eal, &l2.device).map_err(|_| SetupError::NoSuchPort {
                path: path.clone(),
                device: l2.device.clone(),
                available: Port::all(&eal)
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect(),
            })?;
            let info = port.info().map_err(|source| SetupError::Port {
                path: path.clone(),
                device: l2.device.clone(),
                source: Box::new(source),
            })?;
            let queues_max = usize::from(info.max_rx_queues.min(info.max_tx_queues));
            if queues_max < workers {
                return Err(SetupError::TooFewQueues {
                    path,
                    device: l2.device.clone(),
                    driver: info.driver_name.clone(),
                    max: queues_max,
                    workers,
                });
            }
            let (rx, tx) = port
                .configure(
                    &DevConfig {
                        rx_queues: workers as u16,
                        tx_queues: workers as u16,
                        rx_desc: d.rx_desc,
                        tx_desc: d.tx_desc,
                        rss: workers > 1,
                        // Left at the device default (1500 on Ethernet) unless the port is
                        // configured for something else, e.g. jumbo frames; a PMD that cannot
                        // change it then fails set-up with DPDK's reason.
                        mtu: (l2.mtu != 1500).then_some(l2.mtu),
                        promiscuous: false,
                        multi_seg_tx: info.multi_seg_tx,
                    },
                    &pool,
                )
                .map_err(|source| SetupError::Port {
                    path: path.clone(),
                    device: l2.device.clone(),
                    source: Box::new(source),
                })?;
            port.start().map_err(|source| SetupError::Port {
                path: path.clone(),
                device: l2.device.clone(),
                source: Box::new(source),
            })?;
            let mac = port.mac_addr();
            let link = port.link();
            tracing::info!(
                port = %pc.name,
                device = %l2.device,
                driver = %info.driver_name,
                mac = %format_mac(&mac),
                link_up = link.up,
                speed_mbps = link.speed_mbps,
                multi_seg_tx = info.multi_seg_tx,
                queues = workers,
                "media port started"
            );
            egress.push(Egress {
                addr: pc.bind,
                mac,
                gateway_mac: l2.gateway_mac,
                mtu: l2.mtu,
            });
            infos.push(PortInfo {
                name: pc.name.clone(),
                device: l2.device.clone(),
                driver: info.driver_name.clone(),
                mac,
                multi_seg_tx: info.multi_seg_tx,
                tap_iface: None,
            });
            port_queues.push((rx, tx));
            ports.push(port);
        }

        let mut taps = Vec::new();
        let mut tap_queues = Vec::new();
        if d.exception_tap {
            for (index, pc) in cfg.media.ports.iter().enumerate() {
                let names = tap_names(index, &pc.name);
                let tap_err = |source: popmesh_dpdk::Error| SetupError::Tap {
                    iface: names.iface.clone(),
                    source: Box::new(source),
                };
                let tap = Port::by_name(&eal, &names.device).map_err(tap_err)?;
                let (rx, tx) = tap
                    .configure(
                        &DevConfig {
                            rx_queues: workers as u16,
                            tx_queues: workers as u16,
                            rx_desc: TAP_DESC,
                            tx_desc: TAP_DESC,
                            rss: false,
                            mtu: None,
                            promiscuous: false,
                            multi_seg_tx: false,
                        },
                        &pool,
                    )
                    .map_err(tap_err)?;
                tap.set_mac_addr(infos[index].mac).map_err(tap_err)?;
                tap.start().map_err(tap_err)?;
                let l2 = pc.l2.as_ref().ok_or_else(|| SetupError::NotL2 {
                    port: pc.name.clone(),
                })?;
                configure_kernel_iface(&names.iface, pc.bind, l2.prefix_len, l2.mtu)?;
                tracing::info!(
                    port = %pc.name,
                    iface = %names.iface,
                    addr = %pc.bind.ip(),
                    "exception TAP up: ARP, ICMP and non-media traffic go to the kernel"
                );
                infos[index].tap_iface = Some(names.iface);
                tap_queues.push((rx, tx));
                taps.push(tap);
            }
        }

        let chain = infos.iter().all(|i| i.multi_seg_tx);
        let mut workers_q: Vec<WorkerQueues> = (0..workers)
            .map(|_| WorkerQueues {
                rx: Vec::new(),
                tx: Vec::new(),
                tap_rx: Vec::new(),
                tap_tx: Vec::new(),
                chain,
            })
            .collect();
        for (rx, tx) in port_queues {
            for ((w, r), t) in workers_q.iter_mut().zip(rx).zip(tx) {
                w.rx.push(r);
                w.tx.push(t);
            }
        }
        for (rx, tx) in tap_queues {
            for ((w, r), t) in workers_q.iter_mut().zip(rx).zip(tx) {
                w.tap_rx.push(r);
                w.tap_tx.push(t);
            }
        }
        Ok(DpdkEnv {
            workers: workers_q.into_iter().map(Some).collect(),
            set: Arc::new(PortSet {
                ports,
                taps,
                infos,
                pool,
                pool_size,
            }),
            egress,
            media_ports: cfg
                .media
                .media_port_range
                .clone()
                // No range configured: no UDP port is media without a flow (an empty range).
                .unwrap_or(std::ops::RangeInclusive::new(1, 0)),
            eal,
        })
    }

    /// Worker `index`'s queues; each can be taken once.
    pub fn take_worker(&mut self, index: usize) -> Option<WorkerQueues> {
        self.workers.get_mut(index).and_then(Option::take)
    }

    /// A handle a worker thread uses to register itself with EAL (see
    /// [`Eal::register_thread`]).
    pub fn eal(&self) -> Eal {
        self.eal.clone()
    }

    /// Registers the calling thread with EAL.
    ///
    /// # Errors
    /// When EAL has no free lcore slot left.
    pub fn register_thread(eal: &Eal) -> Result<ThreadRegistration, SetupError> {
        eal.register_thread()
            .map_err(|source| SetupError::ThreadRegister {
                source: Box::new(source),
            })
    }

    /// The pipeline setup for the workers: Ethernet framing with each port's rewrite data.
    pub fn pipeline_config(&self) -> PipelineConfig {
        PipelineConfig {
            framing: Framing::Ethernet,
            egress: self.egress.clone(),
            media_ports: self.media_ports.clone(),
        }
    }

    /// The ports as set up, in PortId order.
    pub fn ports(&self) -> &[PortInfo] {
        self.set.ports()
    }

    /// Mbufs in the packet pool and how many are in use.
    pub fn pool_usage(&self) -> (u32, u32) {
        self.set.pool_usage()
    }

    /// The ports, TAPs and pool, for the metrics exporter.
    pub fn port_set(&self) -> Arc<PortSet> {
        Arc::clone(&self.set)
    }
}

/// Gives the TAP the port's address, MTU and brings it up, with iproute2 (`ip`), which every
/// appliance has; the commands are logged so an operator can repeat them by hand.
fn configure_kernel_iface(
    iface: &str,
    addr: SocketAddr,
    prefix_len: u8,
    mtu: u16,
) -> Result<(), SetupError> {
    let cidr = format!("{}/{prefix_len}", addr.ip());
    let family = match addr.ip() {
        IpAddr::V4(_) => "-4",
        IpAddr::V6(_) => "-6",
    };
    let mtu = mtu.to_string();
    let commands: [Vec<&str>; 2] = [
        vec![family, "addr", "replace", &cidr, "dev", iface],
        vec!["link", "set", "dev", iface, "mtu", &mtu, "up"],
    ];
    for args in commands {
        tracing::debug!(cmd = %format!("ip {}", args.join(" ")), "configuring exception TAP");
        let out = Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| SetupError::Iproute {
                cmd: format!("ip {}", args.join(" ")),
                detail: format!("cannot run `ip` ({e}); install iproute2"),
            })?;
        if !out.status.success() {
            return Err(SetupError::Iproute {
                cmd: format!("ip {}", args.join(" ")),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_room_holds_a_whole_frame_plus_headroom() {
        assert_eq!(data_room(1500), 2048 + 128);
        assert_eq!(data_room(9000), 9088 + 128);
        assert!(u32::from(data_room(9216)) >= 9216 + L2_OVERHEAD + HEADROOM);
    }
}
