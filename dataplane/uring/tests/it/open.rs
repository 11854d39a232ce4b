//! Opening: SO_REUSEPORT sharing between workers, and errors a user can act on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use popmesh_media::backend::Backend;
use popmesh_uring::{OpenError, UringBackend, UringParams};

use crate::util::{self, burst, open, params, peer};

#[test]
fn two_backends_share_an_address_and_the_kernel_splits_flows() {
    let mut a = open(&params(), &["127.0.0.1:0"]);
    let addr = a.local_addr(0).expect("port");
    let mut b = UringBackend::open(&params(), &[addr]).expect("second socket on the same address");
    assert_eq!(b.local_addr(0), Some(addr));
    // 32 distinct 4-tuples: the chance that all hash to one socket is 2^-31.
    let clients: Vec<_> = (0..32).map(|_| peer()).collect();
    for c in &clients {
        c.send_to(b"flow", addr).expect("send");
    }
    let (mut got_a, mut got_b) = (0, 0);
    let mut burst = burst();
    let start = Instant::now();
    while got_a + got_b < clients.len() && start.elapsed() < util::DEADLINE {
        got_a += a.rx_burst(&mut burst, 64);
        a.tx_burst(&mut burst);
        got_b += b.rx_burst(&mut burst, 64);
        b.tx_burst(&mut burst);
        a.idle_wait(crate::util::wait(Duration::from_millis(1)));
    }
    assert_eq!(got_a + got_b, clients.len());
    assert!(got_a > 0 && got_b > 0, "split {got_a}/{got_b}");
}

#[test]
fn address_held_without_reuseport_names_address_and_fix() {
    let holder = peer();
    let addr = holder.local_addr().expect("addr");
    let err = UringBackend::open(&params(), &[addr]).expect_err("port is taken");
    assert!(matches!(err, OpenError::AddrInUse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("SO_REUSEPORT"),
        "{msg}"
    );
}

#[test]
fn address_not_on_this_host_is_reported() {
    let addr: SocketAddr = "192.0.2.1:5004".parse().expect("TEST-NET-1");
    let err = UringBackend::open(&params(), &[addr]).expect_err("not a local address");
    assert!(matches!(err, OpenError::AddrNotAvailable { .. }), "{err:?}");
}

#[test]
fn bad_params_and_empty_port_list_are_rejected() {
    let p = UringParams {
        buffers: 100,
        ..params()
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    assert!(matches!(
        UringBackend::open(&p, &[addr]),
        Err(OpenError::InvalidParams {
            field: "buffers",
            ..
        })
    ));
    assert!(matches!(
        UringBackend::open(&params(), &[]),
        Err(OpenError::PortCount { count: 0 })
    ));
}

#[test]
fn default_params_open() {
    let b = UringBackend::open(
        &UringParams::default(),
        &["127.0.0.1:0".parse().expect("addr")],
    )
    .expect("default params on this kernel");
    assert_eq!(b.buffers_in_use(), 0);
}
