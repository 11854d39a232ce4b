//! The planner's choices on the fixtures: NUMA-local media, one per physical core, signaling
//! and housekeeping apart, and outputs that the checks accept.

use popmesh_hw::{check, plan, CheckId, CpuSet, Plan, PlanError, PlanRequest, Severity, Topology};

use crate::fixtures::{config, edge, two_socket, vm};

fn request(ports: &[&str], signaling: usize) -> PlanRequest {
    PlanRequest {
        ports: ports.iter().map(|p| p.to_string()).collect(),
        signaling_cpus: signaling,
        memory_mb: 1024,
    }
}

fn set(ids: &[usize]) -> CpuSet {
    ids.iter().copied().collect()
}

/// The properties every plan must have, whatever the machine.
fn assert_sound(t: &Topology, p: &Plan) {
    let media = set(&p.media);
    let signaling = set(&p.signaling);
    let housekeeping = set(&p.housekeeping);
    for &cpu in &p.media {
        assert_eq!(
            t.node_of_cpu(cpu),
            Some(p.node),
            "media CPU {cpu} off the NIC's node"
        );
        let siblings = &t.cpu(cpu).expect("cpu").siblings;
        assert_eq!(
            siblings.intersection(&media),
            set(&[cpu]),
            "media CPU {cpu} shares its core"
        );
        assert!(
            siblings.intersection(&signaling).is_empty(),
            "media {cpu} shares with signaling"
        );
        assert!(
            siblings.intersection(&housekeeping).is_empty(),
            "media {cpu} shares with housekeeping"
        );
    }
    for cpu in signaling.iter() {
        let siblings = &t.cpu(cpu).expect("cpu").siblings;
        assert!(
            siblings.intersection(&housekeeping).is_empty(),
            "signaling {cpu} shares with housekeeping"
        );
    }
    assert!(
        housekeeping.contains(0) && p.main_core == 0,
        "CPU 0 is housekeeping"
    );
    let all = media
        .union(&signaling)
        .union(&housekeeping)
        .union(&set(&p.idle_siblings));
    assert_eq!(all, t.online, "every online CPU has exactly one role");
    assert_eq!(
        media.len() + signaling.len() + housekeeping.len() + p.idle_siblings.len(),
        t.online.len()
    );
    for m in &p.irqs {
        assert!(
            m.to.intersection(&media.union(&signaling)).is_empty(),
            "IRQ {} onto a lane",
            m.irq
        );
        assert!(!m.to.is_empty());
    }
}

#[test]
fn two_socket_node0_nic_keeps_media_on_node0_and_signaling_on_node1() {
    let t = two_socket();
    let p = plan(&t, &request(&["ens1f0"], 2)).expect("plan");
    assert_sound(&t, &p);
    assert_eq!(p.node, 0);
    assert_eq!(
        p.media,
        vec![1, 2, 3, 4, 5, 6, 7],
        "one per physical core of node 0 except CPU 0's"
    );
    assert_eq!(p.idle_siblings, vec![17, 18, 19, 20, 21, 22, 23]);
    assert_eq!(p.signaling, vec![8, 24], "a whole core of the other node");
    assert_eq!(
        (p.hugepage_kb, p.hugepages),
        (1_048_576, 1),
        "1G pages offered"
    );
    assert!(p
        .kernel_cmdline()
        .contains("isolcpus=managed_irq,domain,1-7,17-23 nohz_full=1-7,17-23"));
    assert!(
        p.kernel_cmdline().ends_with("hugepagesz=1G hugepages=0:1"),
        "{}",
        p.kernel_cmdline()
    );
    // ice interrupts go to node 0's housekeeping CPUs only, queue IRQs one CPU each.
    let ice: Vec<_> = p
        .irqs
        .iter()
        .filter(|m| m.nic.starts_with("ens1f0"))
        .collect();
    assert_eq!(ice.len(), 9);
    assert!(
        ice.iter().all(|m| m.to.iter().all(|c| c == 0 || c == 16)),
        "{ice:?}"
    );
    let script = p.irq_script();
    assert!(script.contains("echo 0,16 > /proc/irq/99/smp_affinity_list   # ens1f0 (0000:3b:00.0) ice-0000:3b:00.0:misc"), "{script}");
    assert!(
        script.contains("echo 0 > /proc/irq/100/smp_affinity_list"),
        "{script}"
    );
    assert!(
        script.contains("echo 16 > /proc/irq/101/smp_affinity_list"),
        "{script}"
    );
}

#[test]
fn two_socket_node1_nic_takes_node1_cores_capped_by_queues() {
    let t = two_socket();
    let p = plan(&t, &request(&["0000:af:00.0"], 2)).expect("plan");
    assert_sound(&t, &p);
    assert_eq!(p.node, 1);
    assert_eq!(
        p.media,
        vec![8, 9, 10, 11, 12, 13, 14, 15],
        "8 cores, 8 queues"
    );
    assert_eq!(p.signaling, vec![1, 17], "from node 0, not the NIC's node");
    let with_cap = plan(&t, &request(&["ens2f0"], 0)).expect("plan");
    assert_eq!(with_cap.media.len(), 8);
}

#[test]
fn ports_on_two_nodes_are_refused_with_the_way_out() {
    let err = plan(&two_socket(), &request(&["ens1f0", "ens2f0"], 1)).expect_err("two nodes");
    assert!(matches!(err, PlanError::PortsOnSeveralNodes { .. }));
    let text = err.to_string();
    assert!(
        text.contains("ens1f0 on node 0, ens2f0 on node 1")
            && text.contains("one appliance per node"),
        "{text}"
    );
}

#[test]
fn a_vfio_port_without_queue_count_is_uncapped_and_pci_allowed() {
    let t = two_socket();
    let p = plan(&t, &request(&["3b:00.1"], 0)).expect("plan");
    assert_sound(&t, &p);
    assert_eq!(p.media, vec![1, 2, 3, 4, 5, 6, 7]);
    assert!(p
        .config_fragment()
        .contains("pci_allow = [\"0000:3b:00.1\"]"));
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("queue counts are not in sysfs")),
        "{:?}",
        p.reasons
    );
}

#[test]
fn edge_box_fills_signaling_cores_whole_and_caps_media_at_four_queues() {
    let t = edge();
    let p = plan(&t, &request(&["enp1s0"], 1)).expect("plan");
    assert_sound(&t, &p);
    assert_eq!(p.media, vec![1, 2, 3, 4]);
    assert_eq!(p.signaling, vec![7, 15], "the highest core, both threads");
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("1 asked, 1 sibling(s) more")),
        "{:?}",
        p.reasons
    );
    assert_eq!(
        p.housekeeping,
        vec![0, 5, 6, 8, 13, 14],
        "CPU 0's core and the spare cores"
    );
    assert_eq!(
        (p.hugepage_kb, p.hugepages),
        (2048, 512),
        "no 1G pool on this CPU"
    );
    assert!(
        p.kernel_cmdline().ends_with("hugepagesz=2M hugepages=512"),
        "{}",
        p.kernel_cmdline()
    );
}

#[test]
fn the_vm_plans_one_worker_and_has_no_room_for_signaling() {
    let t = vm();
    let p = plan(&t, &request(&["eth0"], 0)).expect("plan");
    assert_sound(&t, &p);
    assert_eq!(
        (p.media.clone(), p.housekeeping.clone()),
        (vec![1], vec![0])
    );
    let err = plan(&t, &request(&["eth0"], 1)).expect_err("2 CPUs: housekeeping, media");
    assert!(matches!(err, PlanError::NotEnoughCores { .. }), "{err}");
    let unknown = plan(&t, &request(&["eth9"], 0)).expect_err("no such NIC");
    assert!(
        unknown.to_string().contains("\"eth9\"")
            && unknown.to_string().contains("eth0 (0000:00:03.0)")
    );
}

#[test]
fn the_config_fragment_parses_and_passes_the_checks_it_was_planned_for() {
    let t = two_socket();
    let p = plan(&t, &request(&["3b:00.1"], 2)).expect("plan");
    let text = p
        .config_fragment()
        .replace("[media]\n", "[media]\nbackend = \"dpdk\"\n")
        + "\n[[media.ports]]\nname = \"edge\"\nbind = \"198.51.100.1:40000\"\n\
           device = \"0000:3b:00.1\"\ngateway_mac = \"02:00:00:00:00:01\"\n";
    let cfg = config(&text);
    assert_eq!(cfg.media.cores, p.media);
    assert_eq!(cfg.signaling.cores, p.signaling);
    assert_eq!(cfg.housekeeping.cores, p.housekeeping);
    let findings = check(&t, &cfg);
    assert!(
        findings.iter().all(|f| f.severity != Severity::Error),
        "{findings:#?}"
    );
    for id in [
        CheckId::SmtSharedMedia,
        CheckId::SmtSharedLane,
        CheckId::FarNumaNode,
        CheckId::Hugepages,
    ] {
        assert!(
            findings.iter().all(|f| f.check != id),
            "{id:?}: {findings:#?}"
        );
    }
    // The fixture isolates 2-7,18-23; the plan also wants 1 and 17: the check says so until the
    // new command line is booted.
    let iso: Vec<_> = findings
        .iter()
        .filter(|f| f.check == CheckId::NotIsolated)
        .collect();
    assert_eq!(iso.len(), 1, "{iso:#?}");
    assert!(iso[0].what.contains("CPU 1 "), "{}", iso[0].what);
}
