//! What `Topology::read` finds in each fixture.

use popmesh_hw::{Binding, CpuSet, ReadError, Topology};

use crate::fixtures::{dir, edge, two_socket, vm};

fn set(text: &str) -> CpuSet {
    CpuSet::parse(text).expect("test cpulist")
}

#[test]
fn the_vm_capture_has_two_cpus_one_node_and_a_virtio_nic() {
    let t = vm();
    assert_eq!(t.online, set("0-1"));
    assert_eq!(t.nodes.len(), 1);
    assert_eq!(t.physical_cores(), vec![set("0"), set("1")], "no SMT");
    assert_eq!(t.node_of_cpu(1), Some(0));
    let eth0 = t.nic("eth0").expect("eth0");
    assert_eq!(
        eth0.pci.as_deref(),
        Some("0000:00:03.0"),
        "found through virtio2's parent"
    );
    assert_eq!(eth0.driver.as_deref(), Some("virtio-pci"));
    assert_eq!(eth0.binding, Binding::Kernel);
    assert_eq!(eth0.numa_node, None, "the VM reports -1");
    assert_eq!((eth0.rx_queues, eth0.tx_queues), (Some(1), Some(1)));
    assert_eq!(eth0.speed_mbps, None, "virtio reports speed -1");
    let queue_irqs: Vec<(u32, Option<u32>)> =
        eth0.irqs.iter().map(|i| (i.number, i.queue)).collect();
    assert_eq!(queue_irqs, vec![(37, None), (38, Some(0)), (39, Some(0))]);
    assert!(eth0.irqs.iter().all(|i| i.affinity == Some(set("0-1"))));
    assert!(t.isolation.isolcpus.is_empty() && t.isolation.nohz_full.is_empty());
    assert_eq!(t.nic("lo").map(|n| n.binding), Some(Binding::Virtual));
    let huge2m = t.nodes[0]
        .hugepages
        .iter()
        .find(|p| p.size_kb == 2048)
        .expect("2M pool");
    assert_eq!(huge2m.total, 512);
    assert_eq!(t.default_hugepage_kb, Some(2048));
    assert_eq!(
        t.iface_of_ip("192.0.2.7".parse().expect("ip")),
        Some("eth0")
    );
}

#[test]
fn the_two_socket_server_has_smt_siblings_nodes_and_three_nics() {
    let t = two_socket();
    assert_eq!(t.online.len(), 32);
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.cpu(3).map(|c| c.siblings.clone()), Some(set("3,19")));
    assert_eq!(t.cpu(24).and_then(|c| c.package), Some(1));
    assert_eq!(t.node_of_cpu(24), Some(1));
    assert_eq!(t.physical_cores().len(), 16);
    assert_eq!(t.isolation.isolcpus, set("2-7,18-23"));
    assert_eq!(t.isolation.isolcpus_flags, vec!["managed_irq", "domain"]);
    assert_eq!(t.isolation.sysfs_isolated, Some(set("2-7,18-23")));
    let ice = t.nic("ens1f0").expect("ice");
    assert_eq!(
        (ice.numa_node, ice.speed_mbps, ice.rx_queues),
        (Some(0), Some(25_000), Some(8))
    );
    assert_eq!(ice.irqs.len(), 9);
    assert_eq!(
        ice.irqs.iter().filter(|i| i.queue.is_some()).count(),
        8,
        "misc is no queue"
    );
    let vfio = t
        .nic("3b:00.1")
        .expect("short PCI form finds the vfio port");
    assert_eq!(
        (vfio.name.as_deref(), vfio.binding),
        (None, Binding::DpdkReady)
    );
    assert_eq!(vfio.rx_queues, None, "no interface, so no queue count");
    let mlx = t.nic("0000:af:00.0").expect("mlx5");
    assert_eq!(
        (mlx.binding, mlx.numa_node, mlx.mtu),
        (Binding::DpdkBifurcated, Some(1), Some(9000))
    );
    assert_eq!(
        mlx.irqs
            .iter()
            .find(|i| i.queue == Some(3))
            .map(|i| i.number),
        Some(203)
    );
    assert_eq!(t.nodes[0].hugepage_bytes(), 4 << 30);
    assert_eq!(t.nodes[1].hugepage_bytes(), 0);
    assert_eq!(
        t.iface_of_ip("192.0.2.10".parse().expect("ip")),
        Some("ens2f0")
    );
    assert_eq!(
        t.iface_of_ip("2001:db8:0:1::10".parse().expect("ip")),
        Some("ens1f0")
    );
    assert_eq!(t.iface_of_ip("10.9.9.9".parse().expect("ip")), None);
}

#[test]
fn the_edge_box_has_one_node_and_a_four_queue_nic_without_numa_node() {
    let t = edge();
    assert_eq!((t.online.len(), t.nodes.len()), (16, 1));
    assert_eq!(t.cpu(0).map(|c| c.siblings.clone()), Some(set("0,8")));
    let nic = t.nic("enp1s0").expect("ixgbe");
    assert_eq!((nic.numa_node, nic.queue_pairs()), (None, Some(4)));
    assert_eq!(
        nic.irqs.iter().filter_map(|i| i.queue).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert!(
        t.nodes[0].hugepages.iter().all(|p| p.size_kb == 2048),
        "no 1G pool"
    );
}

#[test]
fn an_empty_root_reads_as_unknowns_with_notes_not_errors() {
    let empty = std::env::temp_dir().join(format!("popmesh-hw-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let t = Topology::read(&empty).expect("missing files are not errors");
    assert!(t.cpus.is_empty() && t.nics.is_empty());
    assert!(
        t.notes.iter().any(|n| n.contains("no cpuN directories")),
        "{:?}",
        t.notes
    );
    assert!(
        t.notes.iter().any(|n| n.contains("kernel without NUMA")),
        "{:?}",
        t.notes
    );
    std::fs::remove_dir_all(&empty).expect("cleanup");
}

#[test]
fn a_corrupt_file_is_an_error_naming_the_file_and_the_value() {
    let root = std::env::temp_dir().join(format!("popmesh-hw-bad-{}", std::process::id()));
    let cpu = root.join("sys/devices/system/cpu");
    std::fs::create_dir_all(cpu.join("cpu0/topology")).expect("dirs");
    std::fs::write(cpu.join("online"), "0-x\n").expect("write");
    match Topology::read(&root) {
        Err(ReadError::Parse {
            path,
            value,
            reason,
        }) => {
            assert!(
                path.ends_with("sys/devices/system/cpu/online"),
                "{}",
                path.display()
            );
            assert_eq!(value, "0-x");
            assert!(reason.contains("not a CPU list"), "{reason}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    std::fs::write(cpu.join("online"), "0\n").expect("write");
    std::fs::write(cpu.join("cpu0/topology/core_id"), "zero\n").expect("write");
    let err = Topology::read(&root).expect_err("bad core_id");
    assert!(
        err.to_string()
            .contains("core_id: \"zero\" is not a number"),
        "{err}"
    );
    std::fs::create_dir_all(root.join("proc")).expect("dirs");
    std::fs::write(cpu.join("cpu0/topology/core_id"), "0\n").expect("write");
    std::fs::write(root.join("proc/cmdline"), "quiet nohz_full=1-\n").expect("write");
    let err = Topology::read(&root).expect_err("bad cmdline list");
    assert!(err.to_string().contains("nohz_full=1-"), "{err}");
    std::fs::remove_dir_all(&root).expect("cleanup");
    assert!(dir("vm-2core").join("proc/cmdline").is_file());
}
