//! Integration tests of popmesh-capacity: the scenario parser, verdicts, stall windows, report
//! comparison, the control-plane driver's pure parts, the stability scenario's parts that need no
//! lab, and short end-to-end runs of the data-plane, control-plane and stability scenarios against
//! the real binaries.

mod compare;
mod controlplane;
mod e2e;
mod e2e_control;
mod scenario;
mod stability;
mod stall;
mod verdicts;
