//! Why the DPDK environment could not be set up, in terms an operator can act on.

use popmesh_dpdk::Error as DpdkError;

/// A failure of [`crate::DpdkEnv::start`] or of a worker's registration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// EAL refused to start.
    #[error(
        "DPDK EAL failed to start with `{args}`{}",
        if *hugepages {
            " (for hugepages run tools/hugepages.sh, or set media.dpdk.hugepages = false)"
        } else {
            ""
        }
    )]
    Eal {
        /// The EAL command line.
        args: String,
        /// Whether hugepages were asked for.
        hugepages: bool,
        /// What DPDK said.
        source: Box<DpdkError>,
    },
    /// The packet pool could not be created.
    #[error(
        "cannot create the packet pool of {mbufs} mbufs: raise media.dpdk.memory_mb \
         (now {memory_mb} MiB) or reserve more hugepages, or lower media.dpdk.mbufs / the \
         descriptor counts"
    )]
    Pool {
        /// Pool size asked for.
        mbufs: u32,
        /// `media.dpdk.memory_mb`.
        memory_mb: u32,
        /// What DPDK said.
        source: Box<DpdkError>,
    },
    /// A media port has no L2 settings (only possible in a hand-built config).
    #[error("media port {port:?} has no device settings; media.backend = \"dpdk\" needs them")]
    NotL2 {
        /// Port name.
        port: String,
    },
    /// No DPDK port has the configured device name.
    #[error(
        "{path}: no DPDK port named {device:?} (DPDK has: {}); add it to media.dpdk.vdevs \
         (e.g. \"net_af_xdp0,iface=eth1\") or media.dpdk.pci_allow, and check the NIC is bound \
         to a DPDK-capable driver (dpdk-devbind.py --status)",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    NoSuchPort {
        /// Config path of the device key.
        path: String,
        /// The configured device name.
        device: String,
        /// Names of the ports DPDK did probe.
        available: Vec<String>,
    },
    /// A port offers fewer queues than there are media workers.
    #[error(
        "{path}: port {device:?} ({driver}) offers {max} queue pair(s) but media.cores starts \
         {workers} workers, each needing its own queue; use at most {max} media cores, or give \
         the device more queues (for net_af_xdp: ethtool -L <iface> combined N and the \
         queue_count devarg)"
    )]
    TooFewQueues {
        /// Config path of the device key.
        path: String,
        /// Device name.
        device: String,
        /// Its driver.
        driver: String,
        /// Queue pairs it offers.
        max: usize,
        /// Media workers configured.
        workers: usize,
    },
    /// Configuring or starting a port failed.
    #[error("{path}: cannot set up port {device:?}")]
    Port {
        /// Config path of the device key.
        path: String,
        /// Device name.
        device: String,
        /// What DPDK said.
        source: Box<DpdkError>,
    },
    /// The exception TAP device could not be set up.
    #[error(
        "cannot set up exception TAP {iface:?} (set media.dpdk.exception_tap = false to run \
         without one; ARP and ping to the appliance then get no answer)"
    )]
    Tap {
        /// Kernel interface name.
        iface: String,
        /// What DPDK said.
        source: Box<DpdkError>,
    },
    /// Configuring the TAP's kernel interface failed.
    #[error("`{cmd}` failed: {detail}")]
    Iproute {
        /// The command.
        cmd: String,
        /// Its error output.
        detail: String,
    },
    /// A worker thread could not register with EAL.
    #[error("cannot register a media worker thread with DPDK EAL")]
    ThreadRegister {
        /// What DPDK said.
        source: Box<DpdkError>,
    },
}
