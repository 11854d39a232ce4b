//! Every check, pinned on the fixtures: the finding it raises, its severity, and the names it
//! must mention.

use popmesh_hw::{check, CheckId, Severity};

use crate::fixtures::{config, dpdk, edge, errors, of, two_socket, uring, vm};

const NODE0_PORT: &str = "0000:3b:00.1"; // vfio-pci, node 0
const NODE1_PORT: &str = "0000:af:00.0"; // mlx5_core, node 1

#[test]
fn a_worker_on_the_far_node_of_its_port_is_an_error_naming_core_port_and_nodes() {
    let t = two_socket();
    let findings = check(&t, &dpdk("[3, 9]", "", NODE0_PORT, ""));
    let far = of(&findings, CheckId::FarNumaNode);
    assert_eq!(far.len(), 1, "{findings:#?}");
    assert_eq!(far[0].severity, Severity::Error);
    assert_eq!(
        far[0].what,
        "media.cores[1]: CPU 9 is on NUMA node 1 but port \"edge\" (NIC 0000:3b:00.1) is on NUMA node 0"
    );
    assert!(
        far[0].fix.contains("0-7,16-23"),
        "fix names the local CPUs: {}",
        far[0].fix
    );
    // Same worker, port on its own node: fine.
    let local = check(&t, &dpdk("[9]", "", NODE1_PORT, ""));
    assert!(of(&local, CheckId::FarNumaNode).is_empty(), "{local:#?}");
}

#[test]
fn uring_ports_map_to_a_nic_by_their_address() {
    let t = two_socket();
    // 192.0.2.0/24 is on ens2f0 (node 1).
    let findings = check(&t, &uring("[3]", "192.0.2.10:40000", ""));
    let far = of(&findings, CheckId::FarNumaNode);
    assert_eq!(far.len(), 1, "{findings:#?}");
    assert!(
        far[0]
            .what
            .contains("(NIC ens2f0 (0000:af:00.0)) is on NUMA node 1"),
        "{}",
        far[0].what
    );
    // IPv6 address of ens1f0 (node 0): local.
    let v6 = check(&t, &uring("[3]", "[2001:db8:0:1::10]:40000", ""));
    assert!(
        of(&v6, CheckId::FarNumaNode).is_empty() && errors(&v6).is_empty(),
        "{v6:#?}"
    );
    // The unspecified address is on every interface: skipped with a note, not guessed.
    let any = check(&t, &uring("[9]", "0.0.0.0:40000", ""));
    let notes = of(&any, CheckId::PortWithoutNic);
    assert_eq!((notes.len(), notes[0].severity), (1, Severity::Note));
    assert!(
        notes[0].what.contains("every interface"),
        "{}",
        notes[0].what
    );
    assert!(errors(&any).is_empty(), "{any:#?}");
}

#[test]
fn a_nic_without_numa_node_on_a_multi_node_machine_is_a_warning() {
    let mut t = two_socket();
    let index = t
        .nics
        .iter()
        .position(|n| n.pci.as_deref() == Some(NODE0_PORT))
        .expect("nic");
    t.nics[index].numa_node = None;
    let findings = check(&t, &dpdk("[9]", "", NODE0_PORT, ""));
    let unknown = of(&findings, CheckId::UnknownNumaNode);
    assert_eq!((unknown.len(), unknown[0].severity), (1, Severity::Warning));
    assert!(of(&findings, CheckId::FarNumaNode).is_empty());
    // One node: -1 means nothing (the edge box reports it).
    let edge_findings = check(&edge(), &uring("[1]", "203.0.113.5:40000", ""));
    assert!(
        of(&edge_findings, CheckId::UnknownNumaNode).is_empty(),
        "{edge_findings:#?}"
    );
}

#[test]
fn media_workers_on_smt_siblings_of_each_other_or_of_a_lane_are_warnings() {
    let t = two_socket();
    let findings = check(&t, &dpdk("[2, 18]", "", NODE0_PORT, ""));
    let smt = of(&findings, CheckId::SmtSharedMedia);
    assert_eq!((smt.len(), smt[0].severity), (1, Severity::Warning));
    assert!(
        smt[0]
            .what
            .contains("media.cores[0] = 2 and media.cores[1] = 18"),
        "{}",
        smt[0].what
    );
    let lanes = check(
        &t,
        &dpdk(
            "[3, 4]",
            "",
            NODE0_PORT,
            "[signaling]\ncores = [19]\n[housekeeping]\ncores = [20]",
        ),
    );
    let shared = of(&lanes, CheckId::SmtSharedLane);
    assert_eq!(shared.len(), 2, "{lanes:#?}");
    assert!(
        shared[0].what.contains("signaling.cores[0]"),
        "{}",
        shared[0].what
    );
    assert!(
        shared[1].what.contains("housekeeping CPU 20"),
        "{}",
        shared[1].what
    );
    // The DPDK main core is housekeeping even when [housekeeping] is empty: CPU 16 is CPU 0's
    // sibling.
    let main = check(&t, &dpdk("[16]", "", NODE0_PORT, ""));
    assert_eq!(of(&main, CheckId::SmtSharedLane).len(), 1, "{main:#?}");
    assert!(of(
        &check(&t, &dpdk("[2, 3]", "", NODE0_PORT, "")),
        CheckId::SmtSharedMedia
    )
    .is_empty());
}

#[test]
fn media_cpus_outside_isolcpus_nohz_full_rcu_nocbs_are_warnings_naming_what_is_missing() {
    let t = two_socket();
    let findings = check(&t, &dpdk("[1, 2]", "", NODE0_PORT, ""));
    let iso = of(&findings, CheckId::NotIsolated);
    assert_eq!(
        iso.len(),
        1,
        "CPU 2 is isolated, CPU 1 is not: {findings:#?}"
    );
    assert_eq!(iso[0].severity, Severity::Warning);
    assert_eq!(
        iso[0].what,
        "media.cores[0]: CPU 1 is not in isolcpus, nohz_full, rcu_nocbs of the kernel command line"
    );
}

#[test]
fn more_workers_than_queues_is_a_warning() {
    let t = edge();
    let findings = check(&t, &uring("[1, 2, 3, 4, 5]", "203.0.113.5:40000", ""));
    let q = of(&findings, CheckId::TooFewQueues);
    assert_eq!(
        (q.len(), q[0].severity),
        (1, Severity::Warning),
        "{findings:#?}"
    );
    assert!(
        q[0].what.contains("5 media workers") && q[0].what.contains("4 rx / 4 tx"),
        "{}",
        q[0].what
    );
    assert!(
        q[0].fix.contains("ethtool -L enp1s0 combined 5"),
        "{}",
        q[0].fix
    );
    let four = check(&t, &uring("[1, 2, 3, 4]", "203.0.113.5:40000", ""));
    assert!(of(&four, CheckId::TooFewQueues).is_empty());
}

#[test]
fn too_few_hugepages_on_the_nic_node_is_an_error_for_dpdk_only() {
    let t = two_socket();
    // Node 1 has none.
    let findings = check(&t, &dpdk("[9]", "", NODE1_PORT, ""));
    let huge = of(&findings, CheckId::Hugepages);
    assert_eq!(
        (huge.len(), huge[0].severity),
        (1, Severity::Error),
        "{findings:#?}"
    );
    assert!(
        huge[0].what.starts_with("NUMA node 1 has 0 MiB"),
        "{}",
        huge[0].what
    );
    assert!(huge[0].fix.contains("node1/hugepages"), "{}", huge[0].fix);
    // Node 0 has 4 x 1G: 4096 MiB fits, 4097 does not.
    assert!(of(
        &check(&t, &dpdk("[3]", "memory_mb = 4096", NODE0_PORT, "")),
        CheckId::Hugepages
    )
    .is_empty());
    assert_eq!(
        of(
            &check(&t, &dpdk("[3]", "memory_mb = 4097", NODE0_PORT, "")),
            CheckId::Hugepages
        )
        .len(),
        1
    );
    // Ordinary pages, or another backend: no hugepages needed.
    assert!(of(
        &check(&t, &dpdk("[9]", "hugepages = false", NODE1_PORT, "")),
        CheckId::Hugepages
    )
    .is_empty());
    assert!(of(
        &check(&t, &uring("[9]", "192.0.2.10:40000", "")),
        CheckId::Hugepages
    )
    .is_empty());
}

#[test]
fn nic_irqs_allowed_on_polling_cpus_are_warnings_naming_the_irqs() {
    let t = two_socket();
    let findings = check(&t, &dpdk("[2, 3]", "", NODE0_PORT, ""));
    let irq = of(&findings, CheckId::IrqOnPollingCore);
    // ice: queues 2 and 3 plus misc; mlx5: only its async IRQ, allowed on every CPU.
    assert_eq!(irq.len(), 2, "{findings:#?}");
    assert!(
        irq[1].what.contains("199 (mlx5_async0@pci:0000:af:00.0)") && !irq[1].what.contains("202")
    );
    assert_eq!(irq[0].severity, Severity::Warning);
    assert!(
        irq[0].what.contains("99 (ice-0000:3b:00.0:misc)")
            && irq[0].what.contains("102 (ice-ens1f0-TxRx-2)")
            && irq[0].what.contains("103 (ice-ens1f0-TxRx-3)")
            && !irq[0].what.contains("104"),
        "{}",
        irq[0].what
    );
    assert!(
        irq[0].fix.contains("IRQBALANCE_BANNED_CPULIST=2-3"),
        "{}",
        irq[0].fix
    );
}

#[test]
fn missing_and_offline_cpus_are_errors_for_every_lane() {
    let mut t = two_socket();
    t.cpus[5].online = false;
    t.online = t.online.difference(&std::iter::once(5).collect());
    let findings = check(
        &t,
        &dpdk(
            "[3, 40]",
            "",
            NODE0_PORT,
            "[signaling]\ncores = [5]\n[housekeeping]\ncores = [33]",
        ),
    );
    let missing = of(&findings, CheckId::MissingCpu);
    let whats: Vec<&str> = missing.iter().map(|f| f.what.as_str()).collect();
    assert_eq!(missing.len(), 3, "{whats:#?}");
    assert!(
        whats[0].starts_with("media.cores[1]: CPU 40 does not exist"),
        "{}",
        whats[0]
    );
    assert!(
        whats[1].starts_with("signaling.cores[0]: CPU 5 is offline"),
        "{}",
        whats[1]
    );
    assert!(
        whats[2].starts_with("housekeeping.cores[0]: CPU 33 does not exist"),
        "{}",
        whats[2]
    );
    assert!(missing.iter().all(|f| f.severity == Severity::Error));
}

#[test]
fn a_dpdk_port_on_a_kernel_owned_nic_is_a_warning_but_bifurcated_mlx5_is_fine() {
    let t = two_socket();
    let kernel = check(&t, &dpdk("[3]", "", "0000:3b:00.0", ""));
    let bound = of(&kernel, CheckId::KernelBound);
    assert_eq!((bound.len(), bound[0].severity), (1, Severity::Warning));
    assert!(
        bound[0].what.contains("bound to ice") && bound[0].fix.contains("vfio-pci 0000:3b:00.0")
    );
    assert!(of(
        &check(&t, &dpdk("[9]", "", NODE1_PORT, "")),
        CheckId::KernelBound
    )
    .is_empty());
    assert!(of(
        &check(&t, &dpdk("[3]", "", NODE0_PORT, "")),
        CheckId::KernelBound
    )
    .is_empty());
}

#[test]
fn a_good_layout_has_no_errors_and_findings_come_errors_first() {
    let t = two_socket();
    let good = check(
        &t,
        &dpdk(
            "[4, 5]",
            "",
            NODE0_PORT,
            "[signaling]\ncores = [9, 25]\n[housekeeping]\ncores = [0, 16]",
        ),
    );
    assert!(errors(&good).is_empty(), "{good:#?}");
    // Only IRQs remain: ice queues 4 and 5 (put there by irqbalance) and the misc/async IRQs
    // of both NICs, allowed on every CPU.
    let kinds: Vec<CheckId> = good.iter().map(|f| f.check).collect();
    assert_eq!(
        kinds,
        vec![CheckId::IrqOnPollingCore, CheckId::IrqOnPollingCore]
    );
    let mixed = check(&t, &dpdk("[1, 9]", "", NODE1_PORT, ""));
    let severities: Vec<Severity> = mixed.iter().map(|f| f.severity).collect();
    let mut sorted = severities.clone();
    sorted.sort();
    assert_eq!(severities, sorted);
    assert_eq!(severities.first(), Some(&Severity::Error));
}

#[test]
fn every_shipped_config_passes_on_this_vm_without_errors() {
    let t = vm();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let cfg = popmesh_config::Config::from_file(&path).expect("config loads");
        let findings = check(&t, &cfg);
        assert!(
            errors(&findings).is_empty(),
            "{}: {findings:#?}",
            path.display()
        );
        seen += 1;
    }
    assert!(
        seen >= 3,
        "configs/ has the lab, minimal and dpdk-veth files"
    );
    // lab.toml: CPU 1 is not isolated, and eth0's IRQs may land on it; loopback has no NIC.
    let lab = check(
        &t,
        &config(&std::fs::read_to_string(dir.join("lab.toml")).expect("lab")),
    );
    let kinds: Vec<CheckId> = lab.iter().map(|f| f.check).collect();
    assert_eq!(
        kinds,
        vec![
            CheckId::NotIsolated,
            CheckId::IrqOnPollingCore,
            CheckId::PortWithoutNic
        ]
    );
}
