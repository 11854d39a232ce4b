//! Reading a [`Topology`] from a sysfs/procfs tree rooted anywhere (`/` for the live machine, a
//! fixture directory in tests). Only plain file reads, directory listings and symlink lookups.
//!
//! The files read are exactly the ones `tools/hw-capture.sh` copies; keep the two in step.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::cmdline::KernelCmdline;
use crate::cpuset::CpuSet;
use crate::error::ReadError;
use crate::topology::{
    normalize_pci, Binding, Cpu, HugepagePool, Ipv4Route, Ipv6Assignment, Irq, Isolation, Nic,
    NumaNode, Topology,
};

struct Root<'a> {
    root: &'a Path,
    notes: Vec<String>,
}

impl Root<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The file's text, `None` if it does not exist or the kernel refuses to produce a value
    /// (`speed` of a link that is down answers EINVAL).
    fn text(&self, rel: &str) -> Result<Option<String>, ReadError> {
        let path = self.path(rel);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(source) => Err(ReadError::Io { path, source }),
        }
    }

    fn parse<T>(
        &self,
        rel: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ReadError> {
        let Some(text) = self.text(rel)? else {
            return Ok(None);
        };
        let value = text.trim();
        parse(value).map(Some).ok_or_else(|| ReadError::Parse {
            path: self.path(rel),
            value: value.to_string(),
            reason: expected.to_string(),
        })
    }

    fn number<T: std::str::FromStr>(&self, rel: &str) -> Result<Option<T>, ReadError> {
        self.parse(rel, "is not a number", |v| v.parse().ok())
    }

    fn cpulist(&self, rel: &str) -> Result<Option<CpuSet>, ReadError> {
        let Some(text) = self.text(rel)? else {
            return Ok(None);
        };
        CpuSet::parse(&text)
            .map(Some)
            .map_err(|e| ReadError::Parse {
                path: self.path(rel),
                value: text.trim().to_string(),
                reason: format!("is not a CPU list ({})", e.reason),
            })
    }

    /// Entry names of a directory, sorted; empty if it does not exist.
    fn list(&self, rel: &str) -> Result<Vec<String>, ReadError> {
        let path = self.path(rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if is_absent(&e) => return Ok(Vec::new()),
            Err(source) => return Err(ReadError::Io { path, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ReadError::Io {
                path: path.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The last component of a symlink's target (`driver` -> `ice`).
    fn link_name(&self, rel: &str) -> Result<Option<String>, ReadError> {
        let path = self.path(rel);
        match std::fs::read_link(&path) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if is_absent(&e) => Ok(None),
            Err(source) => Err(ReadError::Io { path, source }),
        }
    }

    /// Resolves `rel` through symlinks; `None` if it does not exist.
    fn resolve(&self, rel: &str) -> Result<Option<PathBuf>, ReadError> {
        let path = self.path(rel);
        match std::fs::canonicalize(&path) {
            Ok(p) => Ok(Some(p)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(source) => Err(ReadError::Io { path, source }),
        }
    }
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::InvalidInput | io::ErrorKind::NotADirectory
    ) || matches!(
        e.raw_os_error(),
        Some(19 /* ENODEV */ | 95 /* EOPNOTSUPP */ | 22 /* EINVAL */)
    )
}

fn numbered(names: &[String], prefix: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = names
        .iter()
        .filter_map(|n| {
            let digits = n.strip_prefix(prefix)?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok().map(|id| (id, n.clone())))
                .flatten()
        })
        .collect();
    out.sort();
    out
}

const CPU_DIR: &str = "sys/devices/system/cpu";
const NODE_DIR: &str = "sys/devices/system/node";
const PCI_DIR: &str = "sys/bus/pci/devices";
const NET_DIR: &str = "sys/class/net";

impl Topology {
    /// Reads the machine under `root` (`/` for this machine).
    ///
    /// Missing files are not errors: a VM or container lacks many (no NUMA directory, no
    /// `speed`, NUMA node `-1`). The value is then unknown (`None`, empty) and, where it matters
    /// for the checks, [`Topology::notes`] says what was missing.
    ///
    /// # Errors
    /// [`ReadError::Parse`] naming the file and the bad value when a file holds something the
    /// kernel would not write; [`ReadError::Io`] when an existing file cannot be read.
    pub fn read(root: &Path) -> Result<Topology, ReadError> {
        let mut r = Root {
            root,
            notes: Vec::new(),
        };
        let cmdline = KernelCmdline::parse(&r.text("proc/cmdline")?.unwrap_or_default());
        let (cpus, online) = read_cpus(&mut r)?;
        let possible: CpuSet = cpus.iter().map(|c| c.id).collect();
        let iso = cmdline.isolation(&possible).map_err(|e| ReadError::Parse {
            path: r.path("proc/cmdline"),
            value: format!("{}={}", e.key, e.value),
            reason: format!("is not a CPU list ({})", e.source.reason),
        })?;
        let isolation = Isolation {
            isolcpus: iso.isolcpus,
            isolcpus_flags: iso.isolcpus_flags,
            nohz_full: iso.nohz_full,
            rcu_nocbs: iso.rcu_nocbs,
            sysfs_isolated: r.cpulist(&format!("{CPU_DIR}/isolated"))?,
        };
        let default_hugepage_kb = read_meminfo(&r, "proc/meminfo")?
            .get("Hugepagesize")
            .copied();
        let nodes = read_nodes(&mut r, &cpus, &online)?;
        let mut cpus = cpus;
        for cpu in &mut cpus {
            cpu.node = nodes.iter().find(|n| n.cpus.contains(cpu.id)).map(|n| n.id);
        }
        let nics = read_nics(&mut r)?;
        let ipv4_routes = read_routes(&r)?;
        let ipv6_addrs = read_if_inet6(&r)?;
        Ok(Topology {
            cpus,
            online,
            isolation,
            nodes,
            default_hugepage_kb,
            nics,
            ipv4_routes,
            ipv6_addrs,
            cmdline,
            notes: r.notes,
        })
    }
}

fn read_cpus(r: &mut Root<'_>) -> Result<(Vec<Cpu>, CpuSet), ReadError> {
    let ids = numbered(&r.list(CPU_DIR)?, "cpu");
    if ids.is_empty() {
        r.notes.push(format!(
            "{CPU_DIR}: no cpuN directories; no CPU can be checked (is this a sysfs root?)"
        ));
    }
    let online = match r.cpulist(&format!("{CPU_DIR}/online"))? {
        Some(set) => set,
        None => {
            r.notes.push(format!(
                "{CPU_DIR}/online missing: every listed CPU is taken to be online"
            ));
            ids.iter().map(|(id, _)| *id as usize).collect()
        }
    };
    let mut cpus = Vec::with_capacity(ids.len());
    for (id, name) in ids {
        let id = id as usize;
        let base = format!("{CPU_DIR}/{name}/topology");
        let siblings = match r.cpulist(&format!("{base}/thread_siblings_list"))? {
            Some(s) => s,
            None => r
                .cpulist(&format!("{base}/core_cpus_list"))?
                .unwrap_or_default(),
        };
        cpus.push(Cpu {
            id,
            online: online.contains(id),
            package: r.number(&format!("{base}/physical_package_id"))?,
            core_id: r.number(&format!("{base}/core_id"))?,
            siblings,
            node: None,
        });
    }
    Ok((cpus, online))
}

/// `Key: 123 kB` lines (also `Node 0 Key: 123 kB`), values in KiB or plain counts.
fn read_meminfo(r: &Root<'_>, rel: &str) -> Result<BTreeMap<String, u64>, ReadError> {
    let mut out = BTreeMap::new();
    let Some(text) = r.text(rel)? else {
        return Ok(out);
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.split_whitespace().last().unwrap_or_default();
        let number = value.split_whitespace().next().unwrap_or_default();
        let parsed = number.parse().map_err(|_| ReadError::Parse {
            path: r.path(rel),
            value: line.trim().to_string(),
            reason: "is not a `Key: number [kB]` line".to_string(),
        })?;
        out.insert(key.to_string(), parsed);
    }
    Ok(out)
}

fn read_hugepages(r: &Root<'_>, dir: &str) -> Result<Vec<HugepagePool>, ReadError> {
    let mut pools = Vec::new();
    for name in r.list(dir)? {
        let Some(size) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
        else {
            continue;
        };
        let size_kb = size.parse().map_err(|_| ReadError::Parse {
            path: r.path(&format!("{dir}/{name}")),
            value: name.clone(),
            reason: "is not hugepages-<size>kB".to_string(),
        })?;
        pools.push(HugepagePool {
            size_kb,
            total: r
                .number(&format!("{dir}/{name}/nr_hugepages"))?
                .unwrap_or(0),
            free: r
                .number(&format!("{dir}/{name}/free_hugepages"))?
                .unwrap_or(0),
        });
    }
    pools.sort_by_key(|p| p.size_kb);
    Ok(pools)
}

fn read_nodes(r: &mut Root<'_>, cpus: &[Cpu], online: &CpuSet) -> Result<Vec<NumaNode>, ReadError> {
    let ids = numbered(&r.list(NODE_DIR)?, "node");
    let mut nodes = Vec::with_capacity(ids.len());
    for (id, name) in &ids {
        let base = format!("{NODE_DIR}/{name}");
        let meminfo = read_meminfo(r, &format!("{base}/meminfo"))?;
        nodes.push(NumaNode {
            id: *id,
            cpus: r.cpulist(&format!("{base}/cpulist"))?.unwrap_or_default(),
            mem_total_kb: meminfo.get("MemTotal").copied(),
            mem_free_kb: meminfo.get("MemFree").copied(),
            hugepages: read_hugepages(r, &format!("{base}/hugepages"))?,
        });
    }
    if nodes.is_empty() {
        r.notes.push(format!(
            "{NODE_DIR} missing (kernel without NUMA): one node 0 with every CPU is assumed, \
             hugepages from /sys/kernel/mm/hugepages"
        ));
        let meminfo = read_meminfo(r, "proc/meminfo")?;
        let all: CpuSet = cpus.iter().map(|c| c.id).collect();
        nodes.push(NumaNode {
            id: 0,
            cpus: if all.is_empty() { online.clone() } else { all },
            mem_total_kb: meminfo.get("MemTotal").copied(),
            mem_free_kb: meminfo.get("MemFree").copied(),
            hugepages: read_hugepages(r, "sys/kernel/mm/hugepages")?,
        });
    }
    Ok(nodes)
}

/// `/proc/interrupts`: IRQ number -> action name (the last column).
fn read_interrupts(r: &Root<'_>) -> Result<BTreeMap<u32, String>, ReadError> {
    let mut out = BTreeMap::new();
    let Some(text) = r.text("proc/interrupts")? else {
        return Ok(out);
    };
    let mut lines = text.lines();
    let cpu_columns = lines.next().map_or(0, |h| h.split_whitespace().count());
    for line in lines {
        let Some((number, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(number) = number.trim().parse::<u32>() else {
            // NMI, LOC, ... are per-CPU counters, not device IRQs.
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // counts per CPU, chip, [hwirq-type], name; a name needs more than the counts.
        if fields.len() > cpu_columns + 1 {
            if let Some(name) = fields.last() {
                out.insert(number, (*name).to_string());
            }
        }
    }
    Ok(out)
}

/// The queue an IRQ serves, from its action name: `ice-ens1f0-TxRx-3` -> 3,
/// `mlx5_comp7@pci:0000:3b:00.0` -> 7, `virtio2-input.0` -> 0; `None` for `virtio2-config`,
/// `i40e-0000:3b:00.0:misc`, `mlx5_async0`.
pub fn queue_of_irq_name(name: &str) -> Option<u32> {
    let base = name.split('@').next().unwrap_or(name).to_ascii_lowercase();
    if ["config", "misc", "async", "ctrl", "event"]
        .iter()
        .any(|w| base.contains(w))
    {
        return None;
    }
    if !["rx", "tx", "input", "output", "comp", "fp", "queue"]
        .iter()
        .any(|w| base.contains(w))
    {
        return None;
    }
    let digits: String = base
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

fn read_nics(r: &mut Root<'_>) -> Result<Vec<Nic>, ReadError> {
    let interrupts = read_interrupts(r)?;
    if interrupts.is_empty() {
        r.notes
            .push("proc/interrupts missing or empty: NIC IRQs are not known".to_string());
    }
    // Interface -> PCI address, from where each interface's device link points.
    let mut iface_pci: BTreeMap<String, Option<String>> = BTreeMap::new();
    for iface in r.list(NET_DIR)? {
        let pci = match r.resolve(&format!("{NET_DIR}/{iface}/device"))? {
            Some(path) => path
                .components()
                .rev()
                .find_map(|c| normalize_pci(&c.as_os_str().to_string_lossy())),
            None => None,
        };
        iface_pci.insert(iface, pci);
    }
    let mut nics = Vec::new();
    for addr in r.list(PCI_DIR)? {
        let base = format!("{PCI_DIR}/{addr}");
        let class: Option<u32> =
            r.parse(&format!("{base}/class"), "is not a hex PCI class", |v| {
                u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()
            })?;
        // 0x02xxxx: network controller.
        if class.map(|c| c >> 16) != Some(0x02) {
            continue;
        }
        let driver = r.link_name(&format!("{base}/driver"))?;
        let numa: Option<i64> = r.number(&format!("{base}/numa_node"))?;
        let hex_id = |rel: &str| -> Result<Option<String>, ReadError> {
            Ok(r.text(rel)?
                .map(|t| t.trim().trim_start_matches("0x").to_string()))
        };
        let pci_id = match (
            hex_id(&format!("{base}/vendor"))?,
            hex_id(&format!("{base}/device"))?,
        ) {
            (Some(v), Some(d)) => Some(format!("{v}:{d}")),
            _ => None,
        };
        let mut msi: Vec<u32> = Vec::new();
        for name in r.list(&format!("{base}/msi_irqs"))? {
            if let Ok(n) = name.parse() {
                msi.push(n);
            }
        }
        let ifaces: Vec<String> = iface_pci
            .iter()
            .filter(|(_, p)| p.as_deref() == Some(addr.as_str()))
            .map(|(i, _)| i.clone())
            .collect();
        if ifaces.is_empty() {
            let nic = Nic {
                name: None,
                pci: Some(addr.clone()),
                pci_id: pci_id.clone(),
                binding: Binding::of_driver(driver.as_deref()),
                driver: driver.clone(),
                numa_node: numa.and_then(|n| u32::try_from(n).ok()),
                local_cpus: r.cpulist(&format!("{base}/local_cpulist"))?,
                mac: None,
                speed_mbps: None,
                mtu: None,
                operstate: None,
                rx_queues: None,
                tx_queues: None,
                irqs: irqs_of(r, &interrupts, &msi, &[&addr])?,
            };
            nics.push(nic);
        }
        for iface in ifaces {
            let mut nic = read_iface(r, &iface)?;
            nic.pci = Some(addr.clone());
            nic.pci_id = pci_id.clone();
            nic.binding = Binding::of_driver(driver.as_deref());
            nic.driver = driver.clone();
            nic.numa_node = numa.and_then(|n| u32::try_from(n).ok());
            nic.local_cpus = r.cpulist(&format!("{base}/local_cpulist"))?;
            nic.irqs = irqs_of(r, &interrupts, &msi, &[&addr, &iface])?;
            nics.push(nic);
        }
    }
    for (iface, pci) in &iface_pci {
        if pci.is_none() {
            nics.push(read_iface(r, iface)?);
        }
    }
    Ok(nics)
}

fn read_iface(r: &Root<'_>, iface: &str) -> Result<Nic, ReadError> {
    let base = format!("{NET_DIR}/{iface}");
    let queues = r.list(&format!("{base}/queues"))?;
    let count = |prefix: &str| -> Option<u32> {
        let n = numbered(&queues, prefix).len();
        (!queues.is_empty()).then_some(n as u32)
    };
    let speed: Option<i64> = r.number(&format!("{base}/speed"))?;
    Ok(Nic {
        name: Some(iface.to_string()),
        pci: None,
        pci_id: None,
        driver: None,
        binding: Binding::Virtual,
        numa_node: None,
        local_cpus: None,
        mac: r
            .text(&format!("{base}/address"))?
            .map(|t| t.trim().to_string()),
        speed_mbps: speed.and_then(|s| u32::try_from(s).ok()),
        mtu: r.number(&format!("{base}/mtu"))?,
        operstate: r
            .text(&format!("{base}/operstate"))?
            .map(|t| t.trim().to_string()),
        rx_queues: count("rx-"),
        tx_queues: count("tx-"),
        irqs: Vec::new(),
    })
}

/// The IRQs of a device: its MSI vectors, plus any `/proc/interrupts` action naming its PCI
/// address or interface (drivers with legacy interrupts, or sysfs without `msi_irqs`).
fn irqs_of(
    r: &Root<'_>,
    interrupts: &BTreeMap<u32, String>,
    msi: &[u32],
    names: &[&str],
) -> Result<Vec<Irq>, ReadError> {
    let mut numbers: Vec<u32> = msi.to_vec();
    for (number, action) in interrupts {
        let named = names.iter().any(|n| {
            action.contains(&format!("{n}-"))
                || action.ends_with(&format!("@pci:{n}"))
                || action.contains(&format!("{n}:"))
        });
        if named && !numbers.contains(number) {
            numbers.push(*number);
        }
    }
    numbers.sort_unstable();
    let mut irqs = Vec::with_capacity(numbers.len());
    for number in numbers {
        let name = interrupts.get(&number).cloned();
        irqs.push(Irq {
            number,
            queue: name.as_deref().and_then(queue_of_irq_name),
            name,
            affinity: r.cpulist(&format!("proc/irq/{number}/smp_affinity_list"))?,
            effective: r.cpulist(&format!("proc/irq/{number}/effective_affinity_list"))?,
        });
    }
    Ok(irqs)
}

fn read_routes(r: &Root<'_>) -> Result<Vec<Ipv4Route>, ReadError> {
    let rel = "proc/net/route";
    let Some(text) = r.text(rel)? else {
        return Ok(Vec::new());
    };
    let mut routes = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let bad = || ReadError::Parse {
            path: r.path(rel),
            value: line.trim().to_string(),
            reason: "is not a route line (Iface Destination Gateway Flags ... Mask, hex)"
                .to_string(),
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).map_err(|_| bad());
        let (dest, gateway, mask) = (hex(f[1])?, hex(f[2])?, hex(f[7])?);
        if gateway != 0 {
            continue;
        }
        // The kernel prints each address's bytes (network order) read as a little-endian u32.
        let dest = Ipv4Addr::from(dest.to_le_bytes());
        let prefix_len = u32::from_be_bytes(mask.to_le_bytes()).leading_ones() as u8;
        routes.push(Ipv4Route {
            iface: f[0].to_string(),
            dest,
            prefix_len,
        });
    }
    Ok(routes)
}

fn read_if_inet6(r: &Root<'_>) -> Result<Vec<Ipv6Assignment>, ReadError> {
    let rel = "proc/net/if_inet6";
    let Some(text) = r.text(rel)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let addr = u128::from_str_radix(f[0], 16)
            .map(Ipv6Addr::from)
            .map_err(|_| ReadError::Parse {
                path: r.path(rel),
                value: line.trim().to_string(),
                reason: "does not start with a 32-digit hex IPv6 address".to_string(),
            })?;
        out.push(Ipv6Assignment {
            iface: f[5].to_string(),
            addr,
        });
    }
    Ok(out)
}
