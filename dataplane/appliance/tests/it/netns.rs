//! Network-namespace labs: an appliance namespace joined to a publisher and a viewer namespace
//! by veth pairs, built with iproute2 and removed on drop.
//!
//! ```text
//!   <tag>p (pub)                 <tag>a (appliance)                  <tag>v (view)
//!   <tag>p0 10.201.1.2/24 ==veth== <tag>ap  [DPDK] <tag>av ==veth== <tag>v0 10.201.2.2/24
//!                                  pm0-pub 10.201.1.1 (TAP)
//!                                  pm1-view 10.201.2.1 (TAP)
//! ```
//!
//! The appliance's veth ends carry no address: the daemon drives them with DPDK (net_af_xdp or
//! net_af_packet) and gives its own exception TAPs the addresses. An nftables ingress rule
//! drops everything the kernel itself would see on those ends, so the kernel cannot answer ARP
//! or ping there (AF_PACKET sockets still get every frame; they tap in before the hook), and
//! every answer must come through the appliance's exception path.

#![cfg_attr(not(popmesh_dpdk), allow(dead_code))]

use std::fs::File;
use std::process::Command;

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates stay in
/// that namespace after it returns.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("namespace thread")
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// MAC of the viewer's veth: the appliance's `gateway_mac` on the view port.
pub const VIEW_MAC: &str = "02:00:00:00:02:02";
pub const APPLIANCE_PUB: &str = "10.201.1.1";
pub const PUBLISHER: &str = "10.201.1.2";
pub const APPLIANCE_VIEW: &str = "10.201.2.1";
pub const VIEWER: &str = "10.201.2.2";

/// The three namespaces and two veth pairs; deleted on drop.
pub struct Lab {
    pub app: String,
    pub publ: String,
    pub view: String,
    /// Appliance ends of the veth pairs, in the appliance namespace.
    pub app_pub_if: String,
    pub app_view_if: String,
}

impl Lab {
    /// Builds the lab; `tag` (a few letters) keeps names of concurrent labs apart.
    pub fn create(tag: &str) -> Lab {
        let lab = Lab {
            app: format!("{tag}a"),
            publ: format!("{tag}p"),
            view: format!("{tag}v"),
            app_pub_if: format!("{tag}ap"),
            app_view_if: format!("{tag}av"),
        };
        // Leftovers of a crashed run would make `ip netns add` fail.
        lab.remove();
        for ns in [&lab.app, &lab.publ, &lab.view] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let pub0 = format!("{tag}p0");
        let view0 = format!("{tag}v0");
        ip(&[
            "-n",
            &lab.app,
            "link",
            "add",
            &lab.app_pub_if,
            "type",
            "veth",
            "peer",
            "name",
            &pub0,
            "netns",
            &lab.publ,
        ]);
        ip(&[
            "-n",
            &lab.app,
            "link",
            "add",
            &lab.app_view_if,
            "type",
            "veth",
            "peer",
            "name",
            &view0,
            "netns",
            &lab.view,
        ]);
        ip(&["-n", &lab.view, "link", "set", &view0, "address", VIEW_MAC]);
        for (ns, dev, addr) in [(&lab.publ, &pub0, PUBLISHER), (&lab.view, &view0, VIEWER)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            // A veth leaves the UDP checksum to "hardware" that does not exist (only the
            // pseudo-header sum is in the packet), which is fine between kernels but not for a
            // DPDK reader that updates checksums incrementally, as on a real wire. Make the
            // senders compute full checksums, like a real NIC's peer would have.
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "ethtool",
                    "-K",
                    dev,
                    "tx-checksumming",
                    "off",
                ],
            );
        }
        for dev in [&lab.app_pub_if, &lab.app_view_if] {
            // No IPv6 link-local chatter from the kernel on the DPDK-driven ends.
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &lab.app,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
                ],
            );
            ip(&["-n", &lab.app, "link", "set", dev, "up"]);
        }
        let rules = format!(
            "table netdev popmesh_lab {{\n\
               chain pub {{ type filter hook ingress device {} priority 0; policy drop; }}\n\
               chain view {{ type filter hook ingress device {} priority 0; policy drop; }}\n\
             }}\n",
            lab.app_pub_if, lab.app_view_if
        );
        let rules_file = std::env::temp_dir().join(format!("popmesh-lab-{tag}.nft"));
        std::fs::write(&rules_file, rules).expect("write nft rules");
        run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.app,
                "nft",
                "-f",
                rules_file.to_str().expect("utf-8 temp path"),
            ],
        );
        lab
    }

    fn remove(&self) {
        for ns in [&self.app, &self.publ, &self.view] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Whether this process may build namespaces (root). CI runs as root and sets
/// `POPMESH_LAB_REQUIRED=1`, so there a missing privilege fails instead of skipping.
pub fn can_run_labs(test: &str) -> bool {
    // Effective uid is the second field of the `Uid:` line.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var("POPMESH_LAB_REQUIRED").as_deref() != Ok("1"),
            "{test}: needs root for network namespaces, and POPMESH_LAB_REQUIRED=1"
        );
        eprintln!("{test}: skipped, needs root (network namespaces, DPDK)");
    }
    root
}
