//! The EAL command line popmesh builds from `[media.dpdk]`, and the names of the exception TAP
//! devices. Pure functions, compiled with or without DPDK so they are always tested.

use popmesh_config::{Config, DpdkConfig};

/// `argv[0]` EAL sees; it shows up in DPDK's own log lines.
const PROGRAM: &str = "popmesh-dataplane";
/// Longest Linux interface name (`IFNAMSIZ` - 1).
const IFNAME_MAX: usize = 15;

/// The exception TAP of one port: a DPDK `net_tap` device and the kernel interface behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapNames {
    /// DPDK device name (`net_tap_popmesh0`); the `net_tap` prefix selects the driver.
    pub device: String,
    /// Kernel interface name (`pm0-pub`): `pm`, the port index and the port name, cut to 15
    /// bytes. The index keeps names unique even when long port names share a prefix.
    pub iface: String,
}

/// The TAP names of port `index` named `name`.
pub fn tap_names(index: usize, name: &str) -> TapNames {
    let mut iface = format!("pm{index}-{name}");
    // Port names are ASCII ([a-z0-9_-]), so any byte index is a char boundary.
    iface.truncate(IFNAME_MAX);
    TapNames {
        device: format!("net_tap_popmesh{index}"),
        iface,
    }
}

/// The EAL arguments for `cfg`, in order: program name, main lcore, memory, file prefix, PCI
/// policy, the configured vdevs, one TAP vdev per port when `exception_tap` is on, then
/// `eal_args` verbatim (so an operator can override anything popmesh chose).
///
/// Media workers are not EAL lcores: they are popmesh's own pinned threads, registered with
/// EAL (`rte_thread_register`) so mempool caches work. So `-l` names only the main core.
pub fn eal_args(cfg: &Config) -> Vec<String> {
    let d: &DpdkConfig = &cfg.media.dpdk;
    let mut args = vec![
        PROGRAM.to_string(),
        "-l".to_string(),
        d.main_core.to_string(),
        "--file-prefix".to_string(),
        d.file_prefix.clone(),
        "-m".to_string(),
        d.memory_mb.to_string(),
    ];
    if !d.hugepages {
        args.push("--no-huge".to_string());
    }
    if d.pci_allow.is_empty() {
        // Never probe PCI unless asked: a kernel-owned NIC (the host's own uplink) must not be
        // touched by accident.
        args.push("--no-pci".to_string());
    } else {
        for pci in &d.pci_allow {
            args.push("-a".to_string());
            args.push(pci.clone());
        }
    }
    for vdev in &d.vdevs {
        args.push("--vdev".to_string());
        args.push(vdev.clone());
    }
    if d.exception_tap {
        for (index, port) in cfg.media.ports.iter().enumerate() {
            let tap = tap_names(index, &port.name);
            args.push("--vdev".to_string());
            args.push(format!("{},iface={}", tap.device, tap.iface));
        }
    }
    args.extend(d.eal_args.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_dpdk: &str) -> Config {
        Config::from_toml(&format!(
            r#"
            [media]
            backend = "dpdk"
            cores = [1]
            [media.dpdk]
            main_core = 0
            vdevs = ["net_af_xdp0,iface=veth-pub"]
            {extra_dpdk}
            [[media.ports]]
            name = "a-very-long-port-name"
            bind = "10.0.1.1:40000"
            device = "net_af_xdp0"
            gateway_mac = "02:00:00:00:00:02"
            "#
        ))
        .expect("test config")
    }

    #[test]
    fn default_args_pin_main_core_skip_pci_and_add_taps() {
        let args = eal_args(&config(""));
        assert_eq!(
            args,
            [
                "popmesh-dataplane",
                "-l",
                "0",
                "--file-prefix",
                "popmesh",
                "-m",
                "1024",
                "--no-pci",
                "--vdev",
                "net_af_xdp0,iface=veth-pub",
                "--vdev",
                "net_tap_popmesh0,iface=pm0-a-very-long",
            ]
        );
    }

    #[test]
    fn pci_allow_list_no_huge_no_tap_and_extra_args_last() {
        let args = eal_args(&config(
            "hugepages = false\npci_allow = [\"0000:03:00.0\"]\nexception_tap = false\n\
             eal_args = [\"--log-level\", \"pmd.net.af_xdp:debug\"]",
        ));
        assert!(args.contains(&"--no-huge".to_string()));
        assert!(!args.contains(&"--no-pci".to_string()));
        let a = args.iter().position(|s| s == "-a").expect("-a");
        assert_eq!(args[a + 1], "0000:03:00.0");
        assert!(!args.iter().any(|s| s.starts_with("net_tap")));
        assert_eq!(
            &args[args.len() - 2..],
            ["--log-level", "pmd.net.af_xdp:debug"]
        );
    }

    #[test]
    fn tap_names_fit_ifnamsiz_and_stay_unique() {
        let a = tap_names(1, "abcdefghijklmnopqrstuvwxyz");
        let b = tap_names(2, "abcdefghijklmnopqrstuvwxyz");
        assert_eq!(a.iface.len(), 15);
        assert_ne!(a.iface, b.iface);
        assert_eq!(tap_names(0, "pub").iface, "pm0-pub");
    }
}
