//! Layout checks: an appliance config against the machine it runs on.
//!
//! Severity policy (the appliance refuses to start on any error; `popmesh hw check` exits 2):
//! - **error**: the layout cannot work or silently costs a large share of capacity on every
//!   packet: a configured CPU that does not exist or is offline, a media worker on a different
//!   NUMA node from a port's NIC, too few hugepages on the node the packet pool belongs on.
//! - **warning**: costs capacity or latency but an operator may choose it knowingly (small edge
//!   boxes, labs): media workers sharing a physical core (SMT siblings) with each other or with
//!   the signaling/housekeeping lanes, media CPUs not isolated, more workers than NIC queues,
//!   NIC interrupts allowed on polling CPUs, a DPDK port on a kernel-owned NIC, an unknown NUMA
//!   node on a multi-node machine.
//! - **note**: a check that could not run, and why (a port on loopback has no NIC). Never
//!   changes the outcome.

use std::fmt;

use popmesh_config::{BackendKind, Config};
use serde::Serialize;

use crate::cpuset::CpuSet;
use crate::topology::{normalize_pci, Nic, Topology};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Refused by the appliance at start-up.
    Error,
    /// Logged at start-up; the layout works but leaves capacity or latency on the table.
    Warning,
    /// A check that was skipped, with the reason.
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        })
    }
}

/// Which check produced a finding; stable names for scripts (`--json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    /// A configured CPU that does not exist or is offline.
    MissingCpu,
    /// A media worker on another NUMA node than a port's NIC.
    FarNumaNode,
    /// The NIC's NUMA node is not reported on a multi-node machine.
    UnknownNumaNode,
    /// Two media workers on one physical core.
    SmtSharedMedia,
    /// A media worker on the physical core of a signaling or housekeeping CPU.
    SmtSharedLane,
    /// A media CPU without `isolcpus`/`nohz_full`/`rcu_nocbs`.
    NotIsolated,
    /// More media workers than NIC queues.
    TooFewQueues,
    /// Too few hugepages on the NUMA node of the packet pool.
    Hugepages,
    /// A NIC interrupt may be delivered to a polling CPU.
    IrqOnPollingCore,
    /// A DPDK port on a NIC bound to a kernel driver DPDK cannot share.
    KernelBound,
    /// A port whose NIC could not be determined.
    PortWithoutNic,
    /// The topology could not be read at all, so nothing was checked.
    Unreadable,
}

/// One problem with a layout: what, why it costs, how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// Which check.
    pub check: CheckId,
    /// What is wrong, naming config keys, CPUs, ports and nodes.
    pub what: String,
    /// Why it costs (capacity, latency, failure).
    pub why: String,
    /// What to change.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]: {}\n  why: {}\n  fix: {}",
            self.severity,
            self.check.name(),
            self.what,
            self.why,
            self.fix
        )
    }
}

impl CheckId {
    /// The stable kebab-case name, as in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            CheckId::MissingCpu => "missing-cpu",
            CheckId::FarNumaNode => "far-numa-node",
            CheckId::UnknownNumaNode => "unknown-numa-node",
            CheckId::SmtSharedMedia => "smt-shared-media",
            CheckId::SmtSharedLane => "smt-shared-lane",
            CheckId::NotIsolated => "not-isolated",
            CheckId::TooFewQueues => "too-few-queues",
            CheckId::Hugepages => "hugepages",
            CheckId::IrqOnPollingCore => "irq-on-polling-core",
            CheckId::KernelBound => "kernel-bound",
            CheckId::PortWithoutNic => "port-without-nic",
            CheckId::Unreadable => "unreadable",
        }
    }
}

/// Where a `media.ports` entry's packets enter the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PortNic {
    /// Index into [`Topology::nics`], and how it was found.
    Nic {
        /// Index into `Topology::nics`.
        index: usize,
        /// `"PCI device 0000:3b:00.0"`, `"vdev iface=eth1"`, `"bind 10.0.0.1 on eth1"`.
        via: String,
    },
    /// No NIC, and why (loopback, unspecified bind, a virtual device).
    None(String),
}

/// Maps each `media.ports` entry to its NIC, in config order.
///
/// - `dpdk` with a PCI `device`: that PCI device.
/// - `dpdk` with a vdev `device`: the interface in the vdev's `iface=` argument
///   (`net_af_xdp`, `net_af_packet`, `net_pcap`); other vdevs (`net_tap`, `net_null`) have none.
/// - `uring`: the interface carrying the bind address: an IPv6 address on it, or the most
///   specific connected IPv4 subnet (`/proc/net/route`). An unspecified bind (`0.0.0.0`) takes
///   every interface and a loopback or `lo`-held (anycast) address arrives on whichever uplink
///   routing picks, so neither maps to a NIC; their NUMA checks are skipped with a note.
/// - `mem`: no NIC.
pub fn port_nics(topo: &Topology, cfg: &Config) -> Vec<PortNic> {
    cfg.media
        .ports
        .iter()
        .map(|port| {
            if cfg.media.backend == BackendKind::Mem {
                return PortNic::None("backend \"mem\" has no NIC".to_string());
            }
            if let Some(l2) = &port.l2 {
                if let Some(pci) = normalize_pci(&l2.device) {
                    return match topo
                        .nics
                        .iter()
                        .position(|n| n.pci.as_deref() == Some(&pci))
                    {
                        Some(index) => PortNic::Nic {
                            index,
                            via: format!("PCI device {pci}"),
                        },
                        None => PortNic::None(format!(
                            "PCI device {pci} is not a network device on this machine"
                        )),
                    };
                }
                let vdev = cfg
                    .media
                    .dpdk
                    .vdevs
                    .iter()
                    .find(|v| v.split(',').next() == Some(l2.device.as_str()));
                let iface = vdev.and_then(|v| {
                    v.split(',')
                        .skip(1)
                        .find_map(|arg| arg.strip_prefix("iface="))
                });
                return match iface {
                    Some(iface) => match topo
                        .nics
                        .iter()
                        .position(|n| n.name.as_deref() == Some(iface))
                    {
                        Some(index) => PortNic::Nic {
                            index,
                            via: format!("vdev {} iface={iface}", l2.device),
                        },
                        None => PortNic::None(format!(
                            "vdev {} names interface {iface}, which does not exist",
                            l2.device
                        )),
                    },
                    None => PortNic::None(format!(
                        "vdev {} is not attached to a kernel interface",
                        l2.device
                    )),
                };
            }
            let ip = port.bind.ip();
            if ip.is_unspecified() {
                return PortNic::None(format!("bind {ip} accepts packets from every interface"));
            }
            if ip.is_loopback() {
                return PortNic::None(format!("bind {ip} is loopback"));
            }
            match topo.iface_of_ip(ip) {
                Some(iface) => match topo
                    .nics
                    .iter()
                    .position(|n| n.name.as_deref() == Some(iface))
                {
                    Some(index) => PortNic::Nic {
                        index,
                        via: format!("bind {ip} on {iface}"),
                    },
                    None => PortNic::None(format!("bind {ip} is on {iface}, not in sysfs")),
                },
                None => PortNic::None(format!(
                    "bind {ip} is on no connected subnet or interface address (anycast on lo?)"
                )),
            }
        })
        .collect()
}

/// The warning to log when [`Topology::read`] failed and no check could run.
pub fn unreadable(error: &crate::ReadError) -> Finding {
    Finding {
        severity: Severity::Warning,
        check: CheckId::Unreadable,
        what: format!("layout checks skipped: {error}"),
        why: "NUMA, SMT, isolation, hugepage and IRQ problems go unnoticed".to_string(),
        fix: "run `popmesh hw show` to see what cannot be read, and report it with the output \
              of tools/hw-capture.sh"
            .to_string(),
    }
}

/// The housekeeping CPUs the checks protect: `housekeeping.cores`, plus `media.dpdk.main_core`
/// with the DPDK backend (EAL's main thread runs the admin server and control).
pub fn housekeeping_cpus(cfg: &Config) -> CpuSet {
    let mut set: CpuSet = cfg.housekeeping.cores.iter().copied().collect();
    if cfg.media.backend == BackendKind::Dpdk {
        set.insert(cfg.media.dpdk.main_core);
    }
    set
}

/// Checks `cfg` against `topo`. Findings come errors first, then warnings, then notes; within
/// a severity in the order of the checks listed in the [module documentation](self).
pub fn check(topo: &Topology, cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let media: Vec<usize> = cfg.media.cores.clone();
    let nics = port_nics(topo, cfg);
    check_missing(topo, cfg, &mut out);
    check_numa(topo, cfg, &nics, &mut out);
    check_hugepages(topo, cfg, &nics, &mut out);
    check_smt(topo, cfg, &mut out);
    check_isolation(topo, &media, &mut out);
    check_queues(topo, cfg, &nics, &mut out);
    check_irqs(topo, &media, &mut out);
    check_binding(topo, cfg, &nics, &mut out);
    out.sort_by_key(|f| f.severity);
    out
}

fn nic_at<'t>(topo: &'t Topology, port: &PortNic) -> Option<&'t Nic> {
    match port {
        PortNic::Nic { index, .. } => topo.nics.get(*index),
        PortNic::None(_) => None,
    }
}

fn check_missing(topo: &Topology, cfg: &Config, out: &mut Vec<Finding>) {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for (i, &c) in cfg.media.cores.iter().enumerate() {
        keys.push((format!("media.cores[{i}]"), c));
    }
    for (i, &c) in cfg.signaling.cores.iter().enumerate() {
        keys.push((format!("signaling.cores[{i}]"), c));
    }
    for (i, &c) in cfg.housekeeping.cores.iter().enumerate() {
        keys.push((format!("housekeeping.cores[{i}]"), c));
    }
    if cfg.media.backend == BackendKind::Dpdk {
        keys.push(("media.dpdk.main_core".to_string(), cfg.media.dpdk.main_core));
    }
    for (key, cpu) in keys {
        let state = match topo.cpu(cpu) {
            None => "does not exist",
            Some(c) if !c.online => "is offline",
            Some(_) => continue,
        };
        out.push(Finding {
            severity: Severity::Error,
            check: CheckId::MissingCpu,
            what: format!(
                "{key}: CPU {cpu} {state} on this machine (online: {})",
                topo.online
            ),
            why: "a thread cannot be pinned to it; the appliance would fail to start its workers"
                .to_string(),
            fix: format!(
                "pick a CPU from {} (`popmesh hw show` lists them)",
                topo.online
            ),
        });
    }
}

fn check_numa(topo: &Topology, cfg: &Config, nics: &[PortNic], out: &mut Vec<Finding>) {
    for (port, resolved) in cfg.media.ports.iter().zip(nics) {
        let nic = match resolved {
            PortNic::Nic { index, .. } => &topo.nics[*index],
            PortNic::None(reason) => {
                out.push(Finding {
                    severity: Severity::Note,
                    check: CheckId::PortWithoutNic,
                    what: format!(
                        "port {:?}: {reason}; NUMA, queue and IRQ checks skipped for it",
                        port.name
                    ),
                    why: "without a NIC there is no NUMA node to be local to".to_string(),
                    fix: "nothing, unless the port should be on a physical NIC".to_string(),
                });
                continue;
            }
        };
        let Some(nic_node) = nic.numa_node else {
            if topo.node_count() > 1 {
                out.push(Finding {
                    severity: Severity::Warning,
                    check: CheckId::UnknownNumaNode,
                    what: format!(
                        "port {:?}: NIC {} reports no NUMA node (numa_node = -1) on a machine \
                         with {} nodes",
                        port.name,
                        nic.label(),
                        topo.node_count()
                    ),
                    why: "the workers may be on the far node and nothing can tell".to_string(),
                    fix: "enable NUMA/SRAT reporting in the BIOS (\"NUMA nodes per socket\", \
                          ACPI SRAT), or check the slot's socket in the board manual"
                        .to_string(),
                });
            }
            continue;
        };
        for (i, &core) in cfg.media.cores.iter().enumerate() {
            let Some(core_node) = topo.node_of_cpu(core) else {
                continue;
            };
            if core_node == nic_node {
                continue;
            }
            let local = topo
                .nodes
                .iter()
                .find(|n| n.id == nic_node)
                .map(|n| n.cpus.to_string())
                .unwrap_or_default();
            out.push(Finding {
                severity: Severity::Error,
                check: CheckId::FarNumaNode,
                what: format!(
                    "media.cores[{i}]: CPU {core} is on NUMA node {core_node} but port {:?} \
                     (NIC {}) is on NUMA node {nic_node}",
                    port.name,
                    nic.label()
                ),
                why: "every packet crosses the socket interconnect twice (DMA into far memory, \
                      then the poll); expect roughly half the packet rate and more jitter"
                    .to_string(),
                fix: format!(
                    "use CPUs of node {nic_node} ({local}) for media.cores, or move the NIC to a \
                     slot of node {core_node}; `popmesh hw plan` proposes a layout"
                ),
            });
        }
    }
}

fn check_hugepages(topo: &Topology, cfg: &Config, nics: &[PortNic], out: &mut Vec<Finding>) {
    if cfg.media.backend != BackendKind::Dpdk || !cfg.media.dpdk.hugepages {
        return;
    }
    // The packet pool belongs on the NICs' node(s); without NIC nodes, on the workers' nodes.
    let mut nodes: Vec<u32> = nics
        .iter()
        .filter_map(|p| nic_at(topo, p).and_then(|n| n.numa_node))
        .collect();
    if nodes.is_empty() {
        nodes = cfg
            .media
            .cores
            .iter()
            .filter_map(|&c| topo.node_of_cpu(c))
            .collect();
    }
    if nodes.is_empty() && topo.node_count() == 1 {
        nodes.push(topo.nodes[0].id);
    }
    nodes.sort_unstable();
    nodes.dedup();
    let need = u64::from(cfg.media.dpdk.memory_mb) * 1024 * 1024;
    for id in nodes {
        let Some(node) = topo.nodes.iter().find(|n| n.id == id) else {
            continue;
        };
        let have = node.hugepage_bytes();
        if have >= need {
            continue;
        }
        let size_kb = topo.default_hugepage_kb.unwrap_or(2048).max(1);
        let pages = need.div_ceil(size_kb * 1024);
        out.push(Finding {
            severity: Severity::Error,
            check: CheckId::Hugepages,
            what: format!(
                "NUMA node {id} has {} MiB of hugepages reserved; media.dpdk.memory_mb = {} \
                 needs {} MiB there",
                have / (1024 * 1024),
                cfg.media.dpdk.memory_mb,
                cfg.media.dpdk.memory_mb
            ),
            why: "EAL cannot reserve the packet memory (start-up fails), or takes it from the far \
                  node and every packet pays the interconnect"
                .to_string(),
            fix: format!(
                "reserve them: echo {pages} > /sys/devices/system/node/node{id}/hugepages/\
                 hugepages-{size_kb}kB/nr_hugepages (or tools/hugepages.sh; at boot: \
                 hugepagesz={}K hugepages={id}:{pages}), or lower media.dpdk.memory_mb, or set \
                 media.dpdk.hugepages = false for a lab",
                size_kb
            ),
        });
    }
}

fn check_smt(topo: &Topology, cfg: &Config, out: &mut Vec<Finding>) {
    let media = &cfg.media.cores;
    let housekeeping = housekeeping_cpus(cfg);
    let siblings_of = |cpu: usize| {
        topo.cpu(cpu)
            .map(|c| c.siblings.clone())
            .unwrap_or_default()
    };
    for (i, &a) in media.iter().enumerate() {
        let sib = siblings_of(a);
        for (j, &b) in media.iter().enumerate().skip(i + 1) {
            if sib.contains(b) {
                out.push(Finding {
                    severity: Severity::Warning,
                    check: CheckId::SmtSharedMedia,
                    what: format!(
                        "media.cores[{i}] = {a} and media.cores[{j}] = {b} are SMT siblings \
                         (one physical core: {sib})"
                    ),
                    why: "two pollers share one core's execution units and caches; together \
                          they forward little more than one alone"
                        .to_string(),
                    fix: "give each media worker its own physical core and leave its sibling \
                          idle (isolated)"
                        .to_string(),
                });
            }
        }
        let lanes = cfg
            .signaling
            .cores
            .iter()
            .enumerate()
            .map(|(k, &c)| (format!("signaling.cores[{k}]"), c))
            .chain(
                housekeeping
                    .iter()
                    .map(|c| (format!("housekeeping CPU {c}"), c)),
            );
        for (key, c) in lanes {
            if c != a && sib.contains(c) {
                out.push(Finding {
                    severity: Severity::Warning,
                    check: CheckId::SmtSharedLane,
                    what: format!(
                        "media.cores[{i}] = {a} shares a physical core ({sib}) with {key}"
                    ),
                    why: "the spinning poller slows the other lane's thread on the same core, \
                          and a busy lane there adds jitter to the media path"
                        .to_string(),
                    fix: "put media workers and the other lanes on different physical cores \
                          (`popmesh hw plan`)"
                        .to_string(),
                });
            }
        }
    }
}

fn check_isolation(topo: &Topology, media: &[usize], out: &mut Vec<Finding>) {
    let iso = &topo.isolation;
    for (i, &cpu) in media.iter().enumerate() {
        if topo.cpu(cpu).is_none() {
            continue;
        }
        let mut missing = Vec::new();
        if !iso.is_isolated(cpu) {
            missing.push("isolcpus");
        }
        if !iso.nohz_full.contains(cpu) {
            missing.push("nohz_full");
        }
        if !iso.rcu_nocbs.contains(cpu) {
            missing.push("rcu_nocbs");
        }
        if missing.is_empty() {
            continue;
        }
        out.push(Finding {
            severity: Severity::Warning,
            check: CheckId::NotIsolated,
            what: format!(
                "media.cores[{i}]: CPU {cpu} is not in {} of the kernel command line",
                missing.join(", ")
            ),
            why: "the scheduler, the timer tick and RCU callbacks interrupt the poller: \
                  latency spikes of tens of microseconds and lost packets under load"
                .to_string(),
            fix: format!(
                "boot with isolcpus=managed_irq,domain,{cpu} nohz_full={cpu} rcu_nocbs={cpu} \
                 (all media CPUs; `popmesh hw plan` prints the line)"
            ),
        });
    }
}

fn check_queues(topo: &Topology, cfg: &Config, nics: &[PortNic], out: &mut Vec<Finding>) {
    let workers = cfg.media.cores.len() as u32;
    for (port, resolved) in cfg.media.ports.iter().zip(nics) {
        let Some(nic) = nic_at(topo, resolved) else {
            continue;
        };
        let Some(queues) = nic.queue_pairs() else {
            continue;
        };
        if workers <= queues {
            continue;
        }
        let iface = nic.name.as_deref().unwrap_or("IFACE");
        out.push(Finding {
            severity: Severity::Warning,
            check: CheckId::TooFewQueues,
            what: format!(
                "{workers} media workers but port {:?} (NIC {}) has {} rx / {} tx queues set up",
                port.name,
                nic.label(),
                nic.rx_queues.unwrap_or(0),
                nic.tx_queues.unwrap_or(0)
            ),
            why: "each worker owns one queue of every port; workers beyond the queue count get \
                  no traffic of their own (DPDK set-up fails if the device has fewer queues)"
                .to_string(),
            fix: format!(
                "raise the channel count (ethtool -L {iface} combined {workers}; sysfs shows only \
                 the queues set up now, `ethtool -l {iface}` the maximum) or list fewer \
                 media.cores"
            ),
        });
    }
}

fn check_irqs(topo: &Topology, media: &[usize], out: &mut Vec<Finding>) {
    let polling: CpuSet = media.iter().copied().collect();
    for nic in topo.nics.iter().filter(|n| n.pci.is_some()) {
        let mut hits: Vec<String> = Vec::new();
        let mut cpus = CpuSet::new();
        for irq in &nic.irqs {
            let Some(affinity) = &irq.affinity else {
                continue;
            };
            let on = affinity.intersection(&polling);
            if on.is_empty() {
                continue;
            }
            cpus = cpus.union(&on);
            hits.push(format!(
                "{} ({})",
                irq.number,
                irq.name.as_deref().unwrap_or("?")
            ));
        }
        if hits.is_empty() {
            continue;
        }
        let allowed = topo.online.difference(&polling);
        out.push(Finding {
            severity: Severity::Warning,
            check: CheckId::IrqOnPollingCore,
            what: format!(
                "NIC {}: IRQ {} may be delivered to polling CPU {cpus}",
                nic.label(),
                hits.join(", ")
            ),
            why: "an interrupt on a polling core stops the poller for its handler and softirq: \
                  microseconds of jitter per interrupt, and drops at high rates"
                .to_string(),
            fix: format!(
                "echo {allowed} > /proc/irq/N/smp_affinity_list for each (`popmesh hw plan` \
                 writes the script), and keep irqbalance off these CPUs \
                 (IRQBALANCE_BANNED_CPULIST={polling})"
            ),
        });
    }
}

fn check_binding(topo: &Topology, cfg: &Config, nics: &[PortNic], out: &mut Vec<Finding>) {
    if cfg.media.backend != BackendKind::Dpdk {
        return;
    }
    for (port, resolved) in cfg.media.ports.iter().zip(nics) {
        let via_pci = port
            .l2
            .as_ref()
            .is_some_and(|l2| normalize_pci(&l2.device).is_some());
        let Some(nic) = nic_at(topo, resolved) else {
            continue;
        };
        if !via_pci || nic.binding.dpdk_usable() {
            continue;
        }
        let pci = nic.pci.as_deref().unwrap_or("?");
        out.push(Finding {
            severity: Severity::Warning,
            check: CheckId::KernelBound,
            what: format!(
                "port {:?}: PCI device {pci} is bound to {}, which DPDK cannot drive",
                port.name,
                nic.driver.as_deref().unwrap_or("no driver")
            ),
            why: "EAL will not find the port and start-up fails".to_string(),
            fix: format!(
                "bind it to vfio-pci: dpdk-devbind.py -b vfio-pci {pci} (the kernel interface \
                 goes away), or use an af_xdp vdev on the kernel interface"
            ),
        });
    }
}
