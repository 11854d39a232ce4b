//! What the machine looks like: the types [`Topology::read`](crate::Topology::read) fills.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::cmdline::KernelCmdline;
use crate::cpuset::CpuSet;

/// Everything popmesh needs to know about CPUs, memory and NICs to place its lanes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// Every CPU the kernel knows (`/sys/devices/system/cpu/cpuN`), by id.
    pub cpus: Vec<Cpu>,
    /// `/sys/devices/system/cpu/online`.
    pub online: CpuSet,
    /// What isolates CPUs from the scheduler, ticks and RCU.
    pub isolation: Isolation,
    /// NUMA nodes by id; one synthesized node 0 when the kernel shows none.
    pub nodes: Vec<NumaNode>,
    /// Default hugepage size in KiB (`Hugepagesize` of `/proc/meminfo`).
    pub default_hugepage_kb: Option<u64>,
    /// Network devices: PCI network controllers (with or without a kernel interface) and
    /// virtual interfaces (loopback, bridges, TAPs), PCI ones first by address.
    pub nics: Vec<Nic>,
    /// IPv4 routes of `/proc/net/route` without a gateway (connected subnets), to map a bind
    /// address to its interface.
    pub ipv4_routes: Vec<Ipv4Route>,
    /// IPv6 addresses of `/proc/net/if_inet6`.
    pub ipv6_addrs: Vec<Ipv6Assignment>,
    /// The kernel command line.
    pub cmdline: KernelCmdline,
    /// Files that were missing and what that means (a VM or container lacks many).
    pub notes: Vec<String>,
}

/// One logical CPU (a hardware thread).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// Kernel CPU id.
    pub id: usize,
    /// Whether it is online.
    pub online: bool,
    /// Socket (`physical_package_id`); `None` when offline or not reported.
    pub package: Option<u32>,
    /// Core id within the package (`core_id`); threads with the same package and core id share
    /// one physical core.
    pub core_id: Option<u32>,
    /// Hardware threads of the same physical core, itself included (`thread_siblings_list`).
    pub siblings: CpuSet,
    /// NUMA node, from the node's `cpulist`.
    pub node: Option<u32>,
}

/// CPU isolation in effect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Isolation {
    /// `isolcpus=` of the command line.
    pub isolcpus: CpuSet,
    /// Flags of `isolcpus=` (`managed_irq`, `domain`, `nohz`).
    pub isolcpus_flags: Vec<String>,
    /// `nohz_full=` of the command line.
    pub nohz_full: CpuSet,
    /// `rcu_nocbs=` of the command line.
    pub rcu_nocbs: CpuSet,
    /// `/sys/devices/system/cpu/isolated`: what the scheduler actually isolates.
    pub sysfs_isolated: Option<CpuSet>,
}

impl Isolation {
    /// Whether the scheduler keeps ordinary tasks off `cpu` (either source counts).
    pub fn is_isolated(&self, cpu: usize) -> bool {
        self.isolcpus.contains(cpu)
            || self
                .sysfs_isolated
                .as_ref()
                .is_some_and(|s| s.contains(cpu))
    }
}

/// One NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NumaNode {
    /// Node id.
    pub id: u32,
    /// Its CPUs.
    pub cpus: CpuSet,
    /// `MemTotal` in KiB.
    pub mem_total_kb: Option<u64>,
    /// `MemFree` in KiB.
    pub mem_free_kb: Option<u64>,
    /// Hugepage pools, by page size.
    pub hugepages: Vec<HugepagePool>,
}

impl NumaNode {
    /// Bytes of hugepage memory reserved on the node, all sizes.
    pub fn hugepage_bytes(&self) -> u64 {
        self.hugepages
            .iter()
            .map(|p| p.size_kb.saturating_mul(1024).saturating_mul(p.total))
            .sum()
    }
}

/// Hugepages of one size on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HugepagePool {
    /// Page size in KiB (2048, 1048576).
    pub size_kb: u64,
    /// `nr_hugepages`: reserved.
    pub total: u64,
    /// `free_hugepages`: reserved and not in use.
    pub free: u64,
}

/// Who drives a network device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Binding {
    /// A kernel network driver (`ixgbe`, `ice`, `virtio-pci`): the kernel owns it and it has an
    /// interface. DPDK cannot take it, except bifurcated drivers (see `DpdkBifurcated`).
    Kernel,
    /// A kernel driver DPDK drives alongside the kernel (`mlx5_core`, `mlx4_core`).
    DpdkBifurcated,
    /// A userspace I/O driver DPDK can use (`vfio-pci`, `uio_pci_generic`, `igb_uio`).
    DpdkReady,
    /// A PCI device without a driver: bind one before use.
    Unbound,
    /// Not a PCI device: loopback, bridge, TAP, veth, bond, VLAN.
    Virtual,
}

/// Kernel drivers that hand a PCI device to userspace (DPDK's `dpdk-devbind.py` targets).
pub const DPDK_USERSPACE_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];
/// Kernel drivers DPDK's bifurcated PMDs work with while the kernel keeps the interface.
pub const DPDK_BIFURCATED_DRIVERS: [&str; 2] = ["mlx5_core", "mlx4_core"];

impl Binding {
    /// The binding that `driver` (a PCI driver name, or none) means.
    pub fn of_driver(driver: Option<&str>) -> Binding {
        match driver {
            None => Binding::Unbound,
            Some(d) if DPDK_USERSPACE_DRIVERS.contains(&d) => Binding::DpdkReady,
            Some(d) if DPDK_BIFURCATED_DRIVERS.contains(&d) => Binding::DpdkBifurcated,
            Some(_) => Binding::Kernel,
        }
    }

    /// Whether a DPDK PCI port can use the device as bound now.
    pub fn dpdk_usable(self) -> bool {
        matches!(self, Binding::DpdkReady | Binding::DpdkBifurcated)
    }
}

/// A network device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// Kernel interface name; `None` for a PCI NIC bound to a userspace driver (it has none).
    pub name: Option<String>,
    /// PCI address (`0000:3b:00.0`); `None` for virtual interfaces.
    pub pci: Option<String>,
    /// PCI vendor:device ids (`8086:159b`).
    pub pci_id: Option<String>,
    /// PCI driver (`ice`, `vfio-pci`) or, for a virtual interface, none.
    pub driver: Option<String>,
    /// What the driver means for DPDK.
    pub binding: Binding,
    /// NUMA node of the PCI device; `None` when the firmware reports `-1` or no file exists.
    pub numa_node: Option<u32>,
    /// CPUs local to the device (`local_cpulist`).
    pub local_cpus: Option<CpuSet>,
    /// MAC address of the interface.
    pub mac: Option<String>,
    /// Link speed in Mb/s; `None` when the link is down or the driver does not say.
    pub speed_mbps: Option<u32>,
    /// Interface MTU.
    pub mtu: Option<u32>,
    /// `operstate` (`up`, `down`, `unknown`).
    pub operstate: Option<String>,
    /// Receive queues (`queues/rx-N`) the kernel has set up now. sysfs has no ethtool channel
    /// counts: whether they are "combined" channels and the device maximum are only known
    /// from `ethtool -l` (netlink), which this crate does not use. `None` without an interface.
    pub rx_queues: Option<u32>,
    /// Transmit queues (`queues/tx-N`); as for `rx_queues`.
    pub tx_queues: Option<u32>,
    /// The device's interrupts.
    pub irqs: Vec<Irq>,
}

impl Nic {
    /// Interface name, else PCI address.
    pub fn label(&self) -> String {
        match (&self.name, &self.pci) {
            (Some(name), Some(pci)) => format!("{name} ({pci})"),
            (Some(name), None) => name.clone(),
            (None, Some(pci)) => pci.clone(),
            (None, None) => "(unnamed)".to_string(),
        }
    }

    /// Queues a worker can own: the smaller of rx and tx, when known.
    pub fn queue_pairs(&self) -> Option<u32> {
        match (self.rx_queues, self.tx_queues) {
            (Some(rx), Some(tx)) => Some(rx.min(tx)),
            (one, other) => one.or(other),
        }
    }
}

/// One interrupt of a NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Irq {
    /// IRQ number (`/proc/irq/N`).
    pub number: u32,
    /// Action name from `/proc/interrupts` (`ice-ens1f0-TxRx-3`, `virtio2-input.0`).
    pub name: Option<String>,
    /// Queue index parsed from the name, for queue interrupts; `None` for config/misc ones.
    pub queue: Option<u32>,
    /// `smp_affinity_list`: CPUs the IRQ may be delivered to.
    pub affinity: Option<CpuSet>,
    /// `effective_affinity_list`: where the kernel delivers it now, where reported.
    pub effective: Option<CpuSet>,
}

/// A connected IPv4 subnet and its interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ipv4Route {
    /// Interface.
    pub iface: String,
    /// Network address.
    pub dest: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// An IPv6 address on an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ipv6Assignment {
    /// Interface.
    pub iface: String,
    /// Address.
    pub addr: Ipv6Addr,
}

impl Topology {
    /// The CPU with id `cpu`.
    pub fn cpu(&self, cpu: usize) -> Option<&Cpu> {
        self.cpus.iter().find(|c| c.id == cpu)
    }

    /// The NUMA node of `cpu`.
    pub fn node_of_cpu(&self, cpu: usize) -> Option<u32> {
        self.cpu(cpu).and_then(|c| c.node)
    }

    /// The NIC with interface name or PCI address `key` (short `3b:00.0` PCI form accepted).
    pub fn nic(&self, key: &str) -> Option<&Nic> {
        let pci = normalize_pci(key);
        self.nics.iter().find(|n| {
            n.name.as_deref() == Some(key) || (pci.is_some() && n.pci.as_deref() == pci.as_deref())
        })
    }

    /// The interface that carries `ip`: an interface with that IPv6 address, or the most specific
    /// connected IPv4 subnet containing it. `None` for addresses on no listed subnet (loopback,
    /// anycast addresses on `lo`, or routes the kernel keeps only in its local table).
    pub fn iface_of_ip(&self, ip: std::net::IpAddr) -> Option<&str> {
        match ip {
            std::net::IpAddr::V6(v6) => self
                .ipv6_addrs
                .iter()
                .find(|a| a.addr == v6)
                .map(|a| a.iface.as_str()),
            std::net::IpAddr::V4(v4) => self
                .ipv4_routes
                .iter()
                .filter(|r| {
                    let mask = if r.prefix_len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(r.prefix_len))
                    };
                    u32::from(v4) & mask == u32::from(r.dest) & mask
                })
                .max_by_key(|r| r.prefix_len)
                .map(|r| r.iface.as_str()),
        }
    }

    /// Physical cores: the sibling sets of online CPUs, each once, ordered by lowest CPU id.
    pub fn physical_cores(&self) -> Vec<CpuSet> {
        let mut cores: Vec<CpuSet> = Vec::new();
        for cpu in self.cpus.iter().filter(|c| c.online) {
            let siblings = if cpu.siblings.is_empty() {
                std::iter::once(cpu.id).collect()
            } else {
                cpu.siblings.intersection(&self.online)
            };
            if !cores.iter().any(|c| c.contains(cpu.id)) {
                cores.push(siblings);
            }
        }
        cores.sort_by_key(|c| c.first());
        cores
    }

    /// Number of NUMA nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

/// `dddd:bb:dd.f` from `bb:dd.f` or `dddd:bb:dd.f` (lowercase); `None` if not a PCI address.
pub fn normalize_pci(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let (rest, function) = lower.rsplit_once('.')?;
    if !(function.len() == 1 && function.bytes().all(|b| (b'0'..=b'7').contains(&b))) {
        return None;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    match parts.as_slice() {
        [domain, bus, dev] if hex(domain, 4) && hex(bus, 2) && hex(dev, 2) => Some(lower),
        [bus, dev] if hex(bus, 2) && hex(dev, 2) => Some(format!("0000:{lower}")),
        _ => None,
    }
}
