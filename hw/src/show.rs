//! The topology as a tree for people (`popmesh hw show`): NUMA nodes, their cores and CPUs,
//! hugepages, and the NICs under the node they are attached to.

use std::fmt::Write as _;

use crate::cpuset::CpuSet;
use crate::topology::{Binding, Nic, Topology};

fn or_dash(set: &CpuSet) -> String {
    if set.is_empty() {
        "-".to_string()
    } else {
        set.to_string()
    }
}

fn binding_text(b: Binding) -> &'static str {
    match b {
        Binding::Kernel => "kernel driver",
        Binding::DpdkBifurcated => "kernel driver, DPDK-usable (bifurcated)",
        Binding::DpdkReady => "DPDK-usable",
        Binding::Unbound => "no driver",
        Binding::Virtual => "virtual",
    }
}

fn nic_lines(s: &mut String, nic: &Nic, indent: &str) {
    let _ = writeln!(
        s,
        "{indent}{} driver {} [{}]{}",
        nic.label(),
        nic.driver.as_deref().unwrap_or("-"),
        binding_text(nic.binding),
        nic.pci_id
            .as_deref()
            .map(|i| format!(" id {i}"))
            .unwrap_or_default()
    );
    if nic.name.is_some() {
        let _ = writeln!(
            s,
            "{indent}  mac {} mtu {} speed {} state {} queues rx {} tx {} (sysfs; `ethtool -l` for channels)",
            nic.mac.as_deref().unwrap_or("-"),
            nic.mtu.map_or("-".to_string(), |m| m.to_string()),
            nic.speed_mbps.map_or("-".to_string(), |m| format!("{m}Mb/s")),
            nic.operstate.as_deref().unwrap_or("-"),
            nic.rx_queues.map_or("-".to_string(), |q| q.to_string()),
            nic.tx_queues.map_or("-".to_string(), |q| q.to_string()),
        );
    } else if nic.pci.is_some() {
        let _ = writeln!(s, "{indent}  no kernel interface (queues: ask DPDK)");
    }
    if let Some(local) = &nic.local_cpus {
        let _ = writeln!(s, "{indent}  local CPUs {local}");
    }
    for irq in &nic.irqs {
        let _ = writeln!(
            s,
            "{indent}  irq {} {}{} -> CPUs {}{}",
            irq.number,
            irq.name.as_deref().unwrap_or("?"),
            irq.queue
                .map(|q| format!(" (queue {q})"))
                .unwrap_or_default(),
            irq.affinity.as_ref().map_or("?".to_string(), or_dash),
            irq.effective
                .as_ref()
                .map(|e| format!(" (now {})", or_dash(e)))
                .unwrap_or_default()
        );
    }
}

/// The tree text, ending with a newline.
pub fn render_tree(topo: &Topology) -> String {
    let mut s = String::new();
    let cores = topo.physical_cores();
    let packages: CpuSet = topo
        .cpus
        .iter()
        .filter_map(|c| c.package.map(|p| p as usize))
        .collect();
    let smt = cores.iter().any(|c| c.len() > 1);
    let _ = writeln!(
        s,
        "machine: {} package(s), {} NUMA node(s), {} CPUs online ({}), {} physical cores, SMT {}",
        packages.len().max(1),
        topo.node_count(),
        topo.online.len(),
        or_dash(&topo.online),
        cores.len(),
        if smt { "on" } else { "off" }
    );
    let iso = &topo.isolation;
    let _ = writeln!(
        s,
        "isolation: isolcpus {}{} nohz_full {} rcu_nocbs {} (sysfs isolated {})",
        or_dash(&iso.isolcpus),
        if iso.isolcpus_flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", iso.isolcpus_flags.join(","))
        },
        or_dash(&iso.nohz_full),
        or_dash(&iso.rcu_nocbs),
        iso.sysfs_isolated.as_ref().map_or("?".to_string(), or_dash)
    );
    let single = topo.node_count() <= 1;
    for node in &topo.nodes {
        let _ = writeln!(
            s,
            "node {}: CPUs {}, memory {} MiB ({} MiB free)",
            node.id,
            or_dash(&node.cpus),
            node.mem_total_kb
                .map_or("?".to_string(), |k| (k / 1024).to_string()),
            node.mem_free_kb
                .map_or("?".to_string(), |k| (k / 1024).to_string()),
        );
        let pools: Vec<String> = node
            .hugepages
            .iter()
            .map(|p| format!("{}kB x {} ({} free)", p.size_kb, p.total, p.free))
            .collect();
        let _ = writeln!(
            s,
            "  hugepages: {}",
            if pools.is_empty() {
                "none".to_string()
            } else {
                pools.join(", ")
            }
        );
        for core in cores
            .iter()
            .filter(|c| c.first().and_then(|f| topo.node_of_cpu(f)) == Some(node.id))
        {
            let first = core.first().and_then(|f| topo.cpu(f));
            let marks: Vec<String> = core
                .iter()
                .map(|c| {
                    let mut flags = Vec::new();
                    if iso.is_isolated(c) {
                        flags.push("isolated");
                    }
                    if iso.nohz_full.contains(c) {
                        flags.push("nohz_full");
                    }
                    if flags.is_empty() {
                        format!("CPU {c}")
                    } else {
                        format!("CPU {c} ({})", flags.join(","))
                    }
                })
                .collect();
            let _ = writeln!(
                s,
                "  core {} (package {}): {}",
                first
                    .and_then(|c| c.core_id)
                    .map_or("?".to_string(), |c| c.to_string()),
                first
                    .and_then(|c| c.package)
                    .map_or("?".to_string(), |p| p.to_string()),
                marks.join(", ")
            );
        }
        let here: Vec<&Nic> = topo
            .nics
            .iter()
            .filter(|n| {
                n.pci.is_some()
                    && (n.numa_node == Some(node.id) || (single && n.numa_node.is_none()))
            })
            .collect();
        for nic in here {
            let _ = write!(s, "  NIC ");
            let mut body = String::new();
            nic_lines(&mut body, nic, "    ");
            s.push_str(body.trim_start());
            if nic.numa_node.is_none() {
                let _ = writeln!(s, "    (numa_node not reported; the machine has one node)");
            }
        }
    }
    let offline: CpuSet = topo
        .cpus
        .iter()
        .filter(|c| !c.online)
        .map(|c| c.id)
        .collect();
    if !offline.is_empty() {
        let _ = writeln!(s, "offline CPUs: {offline}");
    }
    if !single {
        for nic in topo
            .nics
            .iter()
            .filter(|n| n.pci.is_some() && n.numa_node.is_none())
        {
            let _ = writeln!(s, "NIC without a NUMA node (numa_node -1):");
            nic_lines(&mut s, nic, "  ");
        }
    }
    let virtual_ifaces: Vec<&str> = topo
        .nics
        .iter()
        .filter(|n| n.pci.is_none())
        .filter_map(|n| n.name.as_deref())
        .collect();
    if !virtual_ifaces.is_empty() {
        let _ = writeln!(
            s,
            "virtual interfaces (no NUMA node): {}",
            virtual_ifaces.join(", ")
        );
    }
    for note in &topo.notes {
        let _ = writeln!(s, "note: {note}");
    }
    s
}
