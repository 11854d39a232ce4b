//! Machine topology for laying out popmesh's lanes, read from a sysfs/procfs tree, and the
//! checks and planner built on it (`popmesh hw show|check|plan`, and the appliance's start-up
//! check).
//!
//! Invariants:
//! - Everything is read below a root directory given by the caller ([`Topology::read`]), `/` for
//!   the live machine or a captured fixture (`tools/hw-capture.sh`). Nothing else is touched:
//!   no ioctl, netlink or `/dev`, so no root privileges are needed and tests run on fixtures.
//! - A missing file is an unknown value and, where it matters, a [note](Topology::notes); only
//!   a file with content the kernel would not write is an error, naming the file and value.
//! - [`check()`] and [`plan()`] are pure functions of a [`Topology`] (and a config or request).
//!
//! Not in sysfs, so not here: ethtool channel counts and maxima (only the queues set up now,
//! `queues/rx-N`), the device's RSS setup, and DPDK's view of a port.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod check;
mod cmdline;
mod cpuset;
mod error;
mod plan;
mod read;
mod show;
mod topology;

pub use check::{
    check, housekeeping_cpus, port_nics, unreadable, CheckId, Finding, PortNic, Severity,
};
pub use cmdline::{CmdlineError, CmdlineIsolation, KernelCmdline, Param};
pub use cpuset::{CpuListError, CpuSet, MAX_CPU_ID};
pub use error::ReadError;
pub use plan::{plan, IrqMove, Plan, PlanError, PlanRequest, PlannedPort};
pub use read::queue_of_irq_name;
pub use show::render_tree;
pub use topology::{
    normalize_pci, Binding, Cpu, HugepagePool, Ipv4Route, Ipv6Assignment, Irq, Isolation, Nic,
    NumaNode, Topology, DPDK_BIFURCATED_DRIVERS, DPDK_USERSPACE_DRIVERS,
};
