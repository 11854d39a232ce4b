//! Why [`UringBackend::open`](crate::UringBackend::open) failed.

use std::io;
use std::net::SocketAddr;

/// Failure to open a backend. Each variant names what it was doing and, for the common causes,
/// how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A parameter is out of range.
    #[error("uring params: {field} = {value} {rule}")]
    InvalidParams {
        /// Field of [`UringParams`](crate::UringParams).
        field: &'static str,
        /// The rejected value.
        value: u64,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// No address was given, or more than a `PortId` can index.
    #[error("uring backend needs 1..=65536 addresses, got {count}")]
    PortCount {
        /// Number of addresses passed.
        count: usize,
    },
    /// The UDP socket could not be created (for example `EAFNOSUPPORT` when IPv6 is disabled).
    #[error("{addr}: cannot create UDP socket: {source}")]
    Socket {
        /// Address the socket was for.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// A socket option could not be set.
    #[error("{addr}: cannot set {option}: {source}")]
    SocketOption {
        /// Address the socket was for.
        addr: SocketAddr,
        /// The option, e.g. `SO_REUSEPORT`.
        option: &'static str,
        /// OS error.
        source: io::Error,
    },
    /// `EADDRINUSE`: another socket holds the address without `SO_REUSEPORT`, or belongs to a
    /// different user.
    #[error(
        "{addr}: address in use ({source}); another process holds this UDP port without \
         SO_REUSEPORT or as another user: stop it or configure a different port"
    )]
    AddrInUse {
        /// Address that could not be bound.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// `EACCES`: a port below 1024 without the privilege to bind it.
    #[error(
        "{addr}: permission denied ({source}); ports below 1024 need CAP_NET_BIND_SERVICE \
         (e.g. AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit) or a lower \
         net.ipv4.ip_unprivileged_port_start"
    )]
    PermissionDenied {
        /// Address that could not be bound.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// `EADDRNOTAVAIL`: the IP is not configured on any interface of this host.
    #[error(
        "{addr}: address not available ({source}); the IP is not assigned to an interface \
         here: fix media.ports or bind 0.0.0.0 / ::"
    )]
    AddrNotAvailable {
        /// Address that could not be bound.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// Any other bind failure.
    #[error("{addr}: cannot bind: {source}")]
    Bind {
        /// Address that could not be bound.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// `io_uring_setup` failed.
    #[error("io_uring setup with {entries} entries failed: {source}{}", ring_hint(.source))]
    Ring {
        /// Requested submission queue size.
        entries: u32,
        /// OS error.
        source: io::Error,
    },
    /// The receive buffer memory could not be allocated.
    #[error("cannot map {bytes} bytes of receive buffers: {source}{}", ring_hint(.source))]
    BufferMemory {
        /// Size of the mapping.
        bytes: usize,
        /// OS error.
        source: io::Error,
    },
    /// Registering the provided-buffer ring (`IORING_REGISTER_PBUF_RING`) failed.
    #[error("cannot register {buffers} provided buffers: {source}{}", ring_hint(.source))]
    BufferRing {
        /// Number of buffers.
        buffers: u16,
        /// OS error.
        source: io::Error,
    },
}

/// How to fix the usual io_uring setup failures.
fn ring_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOMEM) => {
            "; raise RLIMIT_MEMLOCK (ulimit -l, LimitMEMLOCK=infinity in the systemd unit) \
             or lower ring_entries/buffers"
        }
        Some(libc::EPERM) => {
            "; io_uring is disabled for this process (sysctl kernel.io_uring_disabled, \
             a seccomp profile or a container runtime)"
        }
        Some(libc::ENOSYS) => "; this kernel has no io_uring (needs Linux 6.0 or later)",
        Some(libc::EINVAL) => "; this kernel lacks a needed io_uring feature (needs Linux 6.0+)",
        _ => "",
    }
}

impl OpenError {
    /// Classifies a `bind(2)` failure.
    pub(crate) fn bind(addr: SocketAddr, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EADDRINUSE) => OpenError::AddrInUse { addr, source },
            Some(libc::EACCES) => OpenError::PermissionDenied { addr, source },
            Some(libc::EADDRNOTAVAIL) => OpenError::AddrNotAvailable { addr, source },
            _ => OpenError::Bind { addr, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_address_and_the_fix() {
        let addr: SocketAddr = "0.0.0.0:443".parse().expect("literal");
        let e = OpenError::bind(addr, io::Error::from_raw_os_error(libc::EACCES));
        let msg = e.to_string();
        assert!(
            msg.contains("0.0.0.0:443") && msg.contains("CAP_NET_BIND_SERVICE"),
            "{msg}"
        );
        let e = OpenError::bind(addr, io::Error::from_raw_os_error(libc::EADDRINUSE));
        assert!(matches!(e, OpenError::AddrInUse { .. }));
        let e = OpenError::Ring {
            entries: 1024,
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        };
        assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}");
    }
}
