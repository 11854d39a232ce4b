//! The crate's error type and the DPDK error text behind it.

use std::ffi::CStr;

use popmesh_dpdk_sys as sys;

/// Reserving hugepage-backed memory failed; the same advice applies to EAL and mempools.
const HUGEPAGE_HINT: &str = "reserve hugepages (echo N > /proc/sys/vm/nr_hugepages and mount \
                             hugetlbfs) or use --no-huge with a larger -m <MB>";

/// Everything that can go wrong in this crate. Each variant says when it fires; each message
/// includes DPDK's own error text where there is one and what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`Eal::init`](crate::Eal::init) ran before in this process, whether it succeeded,
    /// failed or was cleaned up since: DPDK supports one `rte_eal_init` per process.
    #[error(
        "DPDK's EAL was already initialised in this process; rte_eal_init runs once per process \
         (even after a failed attempt or rte_eal_cleanup): share the existing Eal handle, or \
         restart the process to change EAL arguments"
    )]
    AlreadyInitialised,

    /// An EAL argument holds a NUL byte and cannot be passed to C. EAL was not touched, so
    /// `Eal::init` may be called again.
    #[error("EAL argument {arg:?} contains a NUL byte")]
    NulInArgument {
        /// The offending argument.
        arg: String,
    },

    /// `rte_eal_init` failed. DPDK cannot retry initialisation in the same process.
    #[error(
        "rte_eal_init failed: {reason} (rte_errno {errno}); {hint}. EAL cannot be initialised \
         again in this process: fix the arguments or the host and restart"
    )]
    EalInit {
        /// `rte_errno` after the failure.
        errno: i32,
        /// DPDK's text for `errno`.
        reason: String,
        /// What to change.
        hint: &'static str,
    },

    /// `rte_thread_register` could not give the calling thread an lcore id.
    #[error("registering this thread with EAL failed: {reason} (rte_errno {errno}); {hint}")]
    ThreadRegister {
        /// `rte_errno` after the failure.
        errno: i32,
        /// DPDK's text for `errno`.
        reason: String,
        /// What to change.
        hint: &'static str,
    },

    /// The mempool name is empty, too long for DPDK or holds a NUL byte.
    #[error("invalid mempool name {name:?}: {why}")]
    MempoolName {
        /// The name given.
        name: String,
        /// Which rule it broke.
        why: &'static str,
    },

    /// `rte_pktmbuf_pool_create` failed.
    #[error(
        "creating mempool `{name}` ({n_mbufs} mbufs, cache {cache_size}, data room {data_room} \
         bytes) failed: {reason} (rte_errno {errno}); {hint}"
    )]
    MempoolCreate {
        /// The pool's name.
        name: String,
        /// Requested number of mbufs.
        n_mbufs: u32,
        /// Requested per-lcore cache size.
        cache_size: u32,
        /// Requested data room per mbuf (headroom included).
        data_room: u16,
        /// `rte_errno` after the failure.
        errno: i32,
        /// DPDK's text for `errno`.
        reason: String,
        /// What to change.
        hint: &'static str,
    },

    /// No ethdev port has that name.
    #[error(
        "no DPDK port named `{name}`: add it with --vdev (e.g. --vdev=net_af_xdp0,iface=eth1) \
         or check the PCI allow-list (-a <pci address>) in the EAL arguments; ports present: \
         [{available}]"
    )]
    NoSuchPort {
        /// The name asked for.
        name: String,
        /// Comma-separated names of the ports that do exist.
        available: String,
    },

    /// Another [`Port`](crate::Port) handle in this process already owns the port.
    #[error("port `{name}` is already open through another Port handle in this process; share that handle")]
    PortInUse {
        /// The port's name.
        name: String,
    },

    /// `configure` asked for more queues than the device has.
    #[error(
        "port `{port}` ({driver}) supports at most {max_rx} RX and {max_tx} TX queues, but \
         {rx} RX and {tx} TX were requested; lower rx_queues/tx_queues"
    )]
    TooManyQueues {
        /// The port's name.
        port: String,
        /// The port's driver.
        driver: String,
        /// Requested RX queues.
        rx: u16,
        /// Requested TX queues.
        tx: u16,
        /// Device maximum of RX queues.
        max_rx: u16,
        /// Device maximum of TX queues.
        max_tx: u16,
    },

    /// `configure` asked for an MTU outside the device's limits.
    #[error("port `{port}`: MTU {mtu} is outside the device's range {min}..={max}")]
    MtuOutOfRange {
        /// The port's name.
        port: String,
        /// Requested MTU.
        mtu: u16,
        /// Device minimum.
        min: u16,
        /// Device maximum.
        max: u16,
    },

    /// `configure` asked for multi-segment TX on a device that cannot do it.
    #[error(
        "port `{port}` ({driver}) cannot transmit multi-segment mbufs (no \
         RTE_ETH_TX_OFFLOAD_MULTI_SEGS); set multi_seg_tx: false and send single-segment \
         copies (Mbuf::copy_from) instead of Mbuf::header_copy_chained on this port"
    )]
    MultiSegTxUnsupported {
        /// The port's name.
        port: String,
        /// The port's driver.
        driver: String,
    },

    /// A configuration value is unusable for a reason named in `what`.
    #[error("port `{port}`: {what}")]
    InvalidPortConfig {
        /// The port's name.
        port: String,
        /// What is wrong and what to do.
        what: String,
    },

    /// The operation needs the port configured first.
    #[error("port `{port}` is not configured: call Port::configure before {op}")]
    NotConfigured {
        /// The port's name.
        port: String,
        /// The operation attempted.
        op: &'static str,
    },

    /// The operation would pull the queues out from under their owners.
    #[error(
        "port `{port}` still has {live} RxQueue/TxQueue handle(s) alive; drop them (stop the \
         workers that own them) before {op}"
    )]
    QueuesInUse {
        /// The port's name.
        port: String,
        /// How many queue handles are still alive.
        live: usize,
        /// The operation attempted.
        op: &'static str,
    },

    /// A DPDK ethdev call failed.
    #[error("port `{port}`: {op} failed: {reason} (errno {errno})")]
    PortOp {
        /// The port's name.
        port: String,
        /// The DPDK function that failed.
        op: &'static str,
        /// The (positive) errno it returned.
        errno: i32,
        /// DPDK's text for `errno`.
        reason: String,
    },
}

/// The calling thread's `rte_errno`.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int; valid on any thread, EAL initialised or not.
    unsafe { sys::popmesh_rte_errno() }
}

/// DPDK's text for an errno value (covers both libc and DPDK's own `E_RTE_*` codes).
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a NUL-terminated string that stays valid at least until the
    // next rte_strerror call on this thread; it is copied out before returning.
    unsafe { CStr::from_ptr(sys::rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

/// What to change when `rte_eal_init` fails with `errno`.
pub(crate) fn eal_init_hint(errno: i32) -> &'static str {
    match errno {
        libc::ENOMEM => HUGEPAGE_HINT,
        libc::EACCES => {
            "permission denied: run as root (or with CAP_SYS_ADMIN and CAP_IPC_LOCK) or use \
             --no-huge"
        }
        libc::EINVAL => {
            "an EAL argument is invalid (the EAL log line above names it; `dpdk-testpmd --help` \
             lists the options)"
        }
        libc::ENODEV => {
            "a bus or device could not be set up; check --vdev/-a arguments and hugepage mounts"
        }
        libc::ENOEXEC => {
            "a driver plugin failed to load; check -d paths and the DPDK driver directory"
        }
        _ => "the EAL log lines above say which step failed",
    }
}

/// What to change when `rte_pktmbuf_pool_create` fails with `errno`.
pub(crate) fn mempool_hint(errno: i32) -> &'static str {
    match errno {
        libc::ENOMEM => HUGEPAGE_HINT,
        libc::EEXIST => "a mempool with this name already exists; pick a unique name",
        libc::EINVAL => {
            "cache_size must be at most 512 (RTE_MEMPOOL_CACHE_MAX_SIZE) and at most n_mbufs / 1.5"
        }
        libc::ENOSPC => "DPDK ran out of memzone slots (RTE_MAX_MEMZONE); create fewer pools",
        _ => "see the EAL log lines above",
    }
}

/// What to change when `rte_thread_register` fails with `errno`.
pub(crate) fn thread_register_hint(errno: i32) -> &'static str {
    match errno {
        libc::ENOMEM => {
            "every lcore id (RTE_MAX_LCORE) is taken by EAL cores or registered threads; drop \
             idle ThreadRegistration guards or give EAL fewer cores with -l"
        }
        libc::EINVAL => {
            "multi-process mode is active (a secondary process may attach); start EAL with \
             --no-shconf or --in-memory to register non-EAL threads"
        }
        _ => "see the EAL log lines above",
    }
}
