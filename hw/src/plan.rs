//! The layout planner: for chosen ports and a number of signaling CPUs, which CPU does what,
//! rendered as a config fragment, a kernel command line and an IRQ affinity script, each choice
//! with its reason.
//!
//! The rules, in order:
//! 1. All ports must be on one NUMA node: every media worker polls one queue of *every* port,
//!    so a single appliance cannot be local to NICs on two nodes. Ports on two nodes are
//!    refused with the advice to run one appliance per node.
//! 2. Housekeeping gets the physical core of CPU 0 (the kernel keeps some work there whatever
//!    one asks) and every CPU no other lane takes.
//! 3. Signaling gets whole physical cores, from the other NUMA nodes first (the NIC's node is
//!    worth most to media), else the highest-numbered cores of the NIC's node. A partly used core
//!    is given whole to signaling so housekeeping never shares a core with it.
//! 4. Media gets one CPU per remaining physical core of the NIC's node, at most as many as the
//!    smallest queue count of the ports (when sysfs shows it) and 128; the SMT siblings of media
//!    CPUs stay idle and isolated.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cpuset::CpuSet;
use crate::topology::{Nic, Topology};

/// What to plan for.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// Ports, each a kernel interface name or a PCI address.
    pub ports: Vec<String>,
    /// CPUs to reserve for the signaling lane (0 is allowed).
    pub signaling_cpus: usize,
    /// DPDK packet memory to reserve hugepages for, MiB (`media.dpdk.memory_mb`).
    pub memory_mb: u32,
}

/// Why no layout could be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No `--port` given.
    #[error("no port given: name at least one NIC by interface or PCI address")]
    NoPorts,
    /// A port names no NIC of this machine.
    #[error(
        "port {key:?} is neither an interface nor a PCI network device here (have: {available})"
    )]
    UnknownPort {
        /// As given.
        key: String,
        /// The NICs there are.
        available: String,
    },
    /// The ports are on different NUMA nodes.
    #[error(
        "the ports are on different NUMA nodes ({detail}); every media worker polls every port, \
         so one appliance cannot be local to all of them: run one appliance per node (its own \
         config, media.dpdk.file_prefix and admin.listen) and plan each node's ports separately"
    )]
    PortsOnSeveralNodes {
        /// `eth0 on node 0, eth2 on node 1`.
        detail: String,
    },
    /// Not enough physical cores for housekeeping, signaling and at least one media worker.
    #[error(
        "not enough CPUs: node {node} has {local} physical core(s) besides housekeeping's, and \
         signaling needs {signaling_cores} core(s) that cannot all come from other nodes; at \
         least one must be left for a media worker: ask for fewer signaling CPUs"
    )]
    NotEnoughCores {
        /// The NIC's node.
        node: u32,
        /// Physical cores on it besides the housekeeping core.
        local: usize,
        /// Physical cores signaling would need from it.
        signaling_cores: usize,
    },
}

/// A port of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedPort {
    /// As asked for.
    pub key: String,
    /// Interface name, if the kernel has one.
    pub iface: Option<String>,
    /// PCI address.
    pub pci: Option<String>,
    /// NUMA node (assumed 0 where unknown; see the reasons).
    pub node: u32,
    /// Queue pairs the kernel shows, if it drives the NIC.
    pub queues: Option<u32>,
}

/// Moving one NIC interrupt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IrqMove {
    /// IRQ number.
    pub irq: u32,
    /// `/proc/interrupts` name.
    pub name: String,
    /// The NIC (label).
    pub nic: String,
    /// New `smp_affinity_list`.
    pub to: CpuSet,
}

/// A proposed layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The ports.
    pub ports: Vec<PlannedPort>,
    /// Their NUMA node.
    pub node: u32,
    /// NUMA nodes of the machine.
    pub nodes: usize,
    /// Media worker CPUs (`media.cores`), one per physical core.
    pub media: Vec<usize>,
    /// SMT siblings of media CPUs, left idle and isolated.
    pub idle_siblings: Vec<usize>,
    /// Signaling CPUs (`signaling.cores`).
    pub signaling: Vec<usize>,
    /// Housekeeping CPUs (`housekeeping.cores`); CPU 0 first.
    pub housekeeping: Vec<usize>,
    /// EAL main thread (`media.dpdk.main_core`).
    pub main_core: usize,
    /// Hugepage size in KiB.
    pub hugepage_kb: u64,
    /// Hugepages to reserve on `node`.
    pub hugepages: u64,
    /// `media.dpdk.memory_mb`.
    pub memory_mb: u32,
    /// NIC interrupts to move off the polling CPUs.
    pub irqs: Vec<IrqMove>,
    /// Every choice with its reason, in the order made.
    pub reasons: Vec<String>,
}

/// Proposes a layout for `request` on `topo`.
///
/// # Errors
/// [`PlanError`] when a port is unknown, the ports span NUMA nodes, or there are too few cores.
pub fn plan(topo: &Topology, request: &PlanRequest) -> Result<Plan, PlanError> {
    if request.ports.is_empty() {
        return Err(PlanError::NoPorts);
    }
    let mut reasons = Vec::new();
    let single_node = topo.node_count() <= 1;
    let mut ports = Vec::new();
    let mut nics: Vec<&Nic> = Vec::new();
    for key in &request.ports {
        let nic =
            topo.nic(key)
                .filter(|n| n.pci.is_some())
                .ok_or_else(|| PlanError::UnknownPort {
                    key: key.clone(),
                    available: topo
                        .nics
                        .iter()
                        .filter(|n| n.pci.is_some())
                        .map(Nic::label)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let node = match nic.numa_node {
            Some(n) => n,
            None => {
                let first = topo.nodes.first().map_or(0, |n| n.id);
                reasons.push(if single_node {
                    format!(
                        "{}: no NUMA node reported; the machine has one node, {first}",
                        nic.label()
                    )
                } else {
                    format!(
                        "{}: no NUMA node reported on a multi-node machine; ASSUMED node {first} \
                         - check the slot's socket before using this plan",
                        nic.label()
                    )
                });
                first
            }
        };
        if !nic.binding.dpdk_usable() {
            reasons.push(format!(
                "{}: bound to {} (kernel): for the DPDK backend bind it first \
                 (dpdk-devbind.py -b vfio-pci {}), or keep it and use backend = \"uring\" with \
                 media.ports bound to its address (then ignore [media.dpdk])",
                nic.label(),
                nic.driver.as_deref().unwrap_or("no driver"),
                nic.pci.as_deref().unwrap_or("?")
            ));
        }
        ports.push(PlannedPort {
            key: key.clone(),
            iface: nic.name.clone(),
            pci: nic.pci.clone(),
            node,
            queues: nic.queue_pairs(),
        });
        nics.push(nic);
    }
    let node = ports[0].node;
    if ports.iter().any(|p| p.node != node) {
        return Err(PlanError::PortsOnSeveralNodes {
            detail: ports
                .iter()
                .map(|p| format!("{} on node {}", p.key, p.node))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    reasons.push(format!(
        "ports {} are on NUMA node {node}: media workers go there",
        ports
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let cores = topo.physical_cores();
    let core_node = |core: &CpuSet| {
        core.first()
            .and_then(|c| topo.node_of_cpu(c))
            .unwrap_or(node)
    };
    let hk_cpu = if topo.online.contains(0) {
        0
    } else {
        topo.online.first().unwrap_or(0)
    };
    let hk_core = cores
        .iter()
        .find(|c| c.contains(hk_cpu))
        .cloned()
        .unwrap_or_else(|| std::iter::once(hk_cpu).collect());
    reasons.push(format!(
        "housekeeping: CPU {hk_cpu} and its physical core ({hk_core}): the kernel keeps timers, \
         unbound work and boot-time IRQs there whatever isolation says"
    ));
    let mut local: Vec<CpuSet> = Vec::new();
    let mut far: Vec<CpuSet> = Vec::new();
    for core in cores.iter().filter(|c| c.intersection(&hk_core).is_empty()) {
        if core_node(core) == node {
            local.push(core.clone());
        } else {
            far.push(core.clone());
        }
    }

    // Signaling: whole physical cores, far nodes first, then the top of the NIC's node.
    let mut signaling = CpuSet::new();
    let mut signaling_local = 0;
    while signaling.len() < request.signaling_cpus {
        if let Some(core) = (!far.is_empty()).then(|| far.remove(0)) {
            signaling = signaling.union(&core);
        } else if local.len() > 1 {
            signaling_local += 1;
            signaling = signaling.union(&local.pop().expect("len > 1"));
        } else {
            let threads = hk_core.len().max(1);
            return Err(PlanError::NotEnoughCores {
                node,
                local: local.len() + signaling_local,
                signaling_cores: signaling_local
                    + (request.signaling_cpus - signaling.len()).div_ceil(threads),
            });
        }
    }
    if request.signaling_cpus > 0 {
        let extra = signaling.len() - request.signaling_cpus;
        let source = if signaling_local == 0 {
            format!("other NUMA nodes than {node}, keeping node {node} for media")
        } else if signaling_local * hk_core.len().max(1) >= signaling.len() {
            format!("node {node}'s highest cores (no other node has free cores)")
        } else {
            "other nodes first, then node {node}'s highest cores"
                .replace("{node}", &node.to_string())
        };
        reasons.push(format!(
            "signaling: CPUs {signaling} from {source}; whole physical cores so no housekeeping \
             or media thread shares one{}",
            if extra > 0 {
                format!(
                    " ({} asked, {extra} sibling(s) more to fill the cores)",
                    request.signaling_cpus
                )
            } else {
                String::new()
            }
        ));
    }
    if local.is_empty() {
        return Err(PlanError::NotEnoughCores {
            node,
            local: signaling_local,
            signaling_cores: signaling_local,
        });
    }

    // Media: one CPU per local physical core, capped by queues.
    let queue_cap = ports.iter().filter_map(|p| p.queues).min();
    let cap = queue_cap
        .map_or(128, |q| (q as usize).clamp(1, 128))
        .min(128);
    let mut media = Vec::new();
    let mut idle = CpuSet::new();
    let mut spare = CpuSet::new();
    for core in &local {
        let first = core.first().expect("physical cores are not empty");
        if media.len() < cap {
            media.push(first);
            idle = idle.union(&core.difference(&std::iter::once(first).collect()));
        } else {
            spare = spare.union(core);
        }
    }
    let media_set: CpuSet = media.iter().copied().collect();
    reasons.push(format!(
        "media: CPUs {media_set}, the first thread of each free physical core of node {node}{}",
        match queue_cap {
            Some(q) if !spare.is_empty() => format!(
                "; capped at {q}, the smallest queue count of the ports (each worker owns one \
                 queue of every port); spare CPUs {spare} go to housekeeping"
            ),
            Some(q) => format!(" ({} workers, the ports have {q} queues)", media.len()),
            None =>
                " (the ports' queue counts are not in sysfs; check the device maximum)".to_string(),
        }
    ));
    if !idle.is_empty() {
        reasons.push(format!(
            "idle: SMT siblings {idle} of the media CPUs stay empty and isolated: a thread there \
             would take the core's execution units from the poller"
        ));
    }
    let taken = media_set.union(&idle).union(&signaling);
    let housekeeping: Vec<usize> = topo.online.difference(&taken).iter().collect();
    reasons.push(format!(
        "housekeeping: CPUs {}: everything else (OS, NIC interrupts, admin server, EAL main \
         thread on CPU {hk_cpu})",
        housekeeping.iter().copied().collect::<CpuSet>()
    ));

    // Hugepages: 1 GiB pages where the CPU and kernel offer them (fewer TLB misses).
    let offers_1g = topo
        .nodes
        .iter()
        .any(|n| n.hugepages.iter().any(|p| p.size_kb == 1_048_576));
    let hugepage_kb: u64 = if offers_1g { 1_048_576 } else { 2048 };
    let hugepages = (u64::from(request.memory_mb) * 1024).div_ceil(hugepage_kb);
    reasons.push(format!(
        "hugepages: {hugepages} x {} on node {node} for media.dpdk.memory_mb = {} ({}; only the \
         DPDK backend uses them)",
        size_text(hugepage_kb),
        request.memory_mb,
        if offers_1g {
            "1G pages: the packet pool fits few TLB entries"
        } else {
            "2M pages: this kernel/CPU shows no 1G pool"
        }
    ));

    // IRQs: every NIC's interrupts onto housekeeping CPUs, node-local ones first.
    let hk_set: CpuSet = housekeeping.iter().copied().collect();
    let mut irqs = Vec::new();
    for nic in topo
        .nics
        .iter()
        .filter(|n| n.pci.is_some() && !n.irqs.is_empty())
    {
        let local_hk = nic
            .numa_node
            .and_then(|n| topo.nodes.iter().find(|x| x.id == n))
            .map(|n| n.cpus.intersection(&hk_set))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| hk_set.clone());
        let targets: Vec<usize> = local_hk.iter().collect();
        for irq in &nic.irqs {
            let to: CpuSet = match irq.queue {
                // Spread queue interrupts one CPU each, so no housekeeping CPU takes them all.
                Some(q) => std::iter::once(targets[q as usize % targets.len()]).collect(),
                None => local_hk.clone(),
            };
            irqs.push(IrqMove {
                irq: irq.number,
                name: irq.name.clone().unwrap_or_default(),
                nic: nic.label(),
                to,
            });
        }
    }
    if !irqs.is_empty() {
        reasons.push(
            "irqs: every NIC interrupt onto housekeeping CPUs (of the NIC's node where it has \
             some), queue interrupts spread one CPU each; none on media or signaling CPUs"
                .to_string(),
        );
    }

    Ok(Plan {
        ports,
        node,
        nodes: topo.node_count(),
        media,
        idle_siblings: idle.iter().collect(),
        signaling: signaling.iter().collect(),
        housekeeping,
        main_core: hk_cpu,
        hugepage_kb,
        hugepages,
        memory_mb: request.memory_mb,
        irqs,
        reasons,
    })
}

fn size_text(kb: u64) -> String {
    if kb >= 1_048_576 {
        format!("{}G", kb / 1_048_576)
    } else {
        format!("{}M", kb / 1024)
    }
}

fn list(cpus: &[usize]) -> String {
    let items: Vec<String> = cpus.iter().map(usize::to_string).collect();
    format!("[{}]", items.join(", "))
}

impl Plan {
    /// CPUs to isolate: media CPUs and their idle siblings.
    pub fn isolated(&self) -> CpuSet {
        self.media
            .iter()
            .chain(&self.idle_siblings)
            .copied()
            .collect()
    }

    /// The appliance config fragment (TOML): `media.cores`, `[media.dpdk]` main core, memory
    /// and PCI allow-list, `[signaling]` and `[housekeeping]`. Merge it into the config; the
    /// ports' `[[media.ports]]` entries (addresses, gateway) are the operator's.
    pub fn config_fragment(&self) -> String {
        let mut s = String::new();
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| match (&p.iface, &p.pci) {
                (Some(i), Some(pci)) => format!("{i} ({pci})"),
                (None, Some(pci)) => pci.clone(),
                (Some(i), None) => i.clone(),
                (None, None) => p.key.clone(),
            })
            .collect();
        let _ = writeln!(
            s,
            "# popmesh hw plan for {} on NUMA node {}",
            ports.join(", "),
            self.node
        );
        let _ = writeln!(s, "[media]");
        let _ = writeln!(
            s,
            "cores = {}   # one per physical core on node {}, siblings left idle",
            list(&self.media),
            self.node
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "[media.dpdk]                  # used with backend = \"dpdk\""
        );
        let _ = writeln!(
            s,
            "main_core = {}                 # housekeeping core",
            self.main_core
        );
        let _ = writeln!(
            s,
            "memory_mb = {}              # {} x {} hugepages on node {}",
            self.memory_mb,
            self.hugepages,
            size_text(self.hugepage_kb),
            self.node
        );
        let pci: Vec<String> = self
            .ports
            .iter()
            .filter_map(|p| p.pci.as_ref().map(|a| format!("{a:?}")))
            .collect();
        let _ = writeln!(
            s,
            "pci_allow = [{}]   # each is a port's `device`",
            pci.join(", ")
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "[signaling]");
        let _ = writeln!(
            s,
            "cores = {}   # whole physical cores, apart from media and housekeeping",
            list(&self.signaling)
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "[housekeeping]");
        let _ = writeln!(
            s,
            "cores = {}   # OS, NIC interrupts, admin server",
            list(&self.housekeeping)
        );
        s
    }

    /// The `hugepages=` value: `N` on a single-node machine, `node:N` (pages on the NICs'
    /// node only) when there are several.
    fn hugepages_param(&self) -> String {
        if self.nodes > 1 {
            format!("{}:{}", self.node, self.hugepages)
        } else {
            self.hugepages.to_string()
        }
    }

    /// Kernel command line parameters to add (one line).
    pub fn kernel_cmdline(&self) -> String {
        let iso = self.isolated();
        let hk: CpuSet = self.housekeeping.iter().copied().collect();
        let size = size_text(self.hugepage_kb);
        format!(
            "isolcpus=managed_irq,domain,{iso} nohz_full={iso} rcu_nocbs={iso} irqaffinity={hk} \
             default_hugepagesz={size} hugepagesz={size} hugepages={}",
            self.hugepages_param()
        )
    }

    /// Why each kernel parameter, as `# ` comment lines.
    pub fn kernel_cmdline_reasons(&self) -> String {
        let iso = self.isolated();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# isolcpus={iso}: no ordinary task is scheduled on the media CPUs and their siblings;"
        );
        let _ = writeln!(s, "#   managed_irq keeps driver-managed queue IRQs off them, domain removes them from load balancing");
        let _ = writeln!(
            s,
            "# nohz_full={iso}: no timer tick while the one poller runs"
        );
        let _ = writeln!(
            s,
            "# rcu_nocbs={iso}: RCU callbacks run on housekeeping CPUs instead"
        );
        let _ = writeln!(
            s,
            "# irqaffinity=...: default affinity of new IRQs is housekeeping"
        );
        let _ = writeln!(
            s,
            "# hugepages={}: {} x {} for the DPDK packet pool on the NICs' node {}{}",
            self.hugepages_param(),
            self.hugepages,
            size_text(self.hugepage_kb),
            self.node,
            if self.nodes > 1 {
                " (node:count form; a kernel without it takes hugepages=N and spreads them \
                 over all nodes: then reserve per node via sysfs)"
            } else {
                ""
            }
        );
        s
    }

    /// A POSIX shell script moving the NICs' interrupts to housekeeping CPUs.
    pub fn irq_script(&self) -> String {
        let hk: CpuSet = self.housekeeping.iter().copied().collect();
        let polling = self
            .isolated()
            .union(&self.signaling.iter().copied().collect());
        let mut s = String::new();
        let _ = writeln!(s, "#!/bin/sh");
        let _ = writeln!(s, "# popmesh hw plan: NIC interrupts onto housekeeping CPUs {hk}, off media/signaling CPUs {polling}.");
        let _ = writeln!(
            s,
            "# Run as root after every boot (interrupts are re-created when a driver reloads)."
        );
        let _ = writeln!(s, "# irqbalance would move them back: stop it, or set IRQBALANCE_BANNED_CPULIST={polling}.");
        let _ = writeln!(s, "set -eu");
        if self.irqs.is_empty() {
            let _ = writeln!(
                s,
                "# no NIC interrupts found (NICs bound to vfio-pci poll without them)"
            );
        }
        for m in &self.irqs {
            let _ = writeln!(
                s,
                "echo {} > /proc/irq/{}/smp_affinity_list   # {} {}",
                m.to, m.irq, m.nic, m.name
            );
        }
        s
    }

    /// Everything for a person: reasons, fragment, command line, script.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "== layout (why each choice)");
        for r in &self.reasons {
            let _ = writeln!(s, "- {r}");
        }
        let _ = writeln!(s, "\n== config fragment (merge into the appliance config)");
        s.push_str(&self.config_fragment());
        let _ = writeln!(s, "\n== kernel command line (add, then reboot)");
        s.push_str(&self.kernel_cmdline_reasons());
        let _ = writeln!(s, "{}", self.kernel_cmdline());
        let _ = writeln!(s, "\n== IRQ affinity script");
        s.push_str(&self.irq_script());
        s
    }
}
