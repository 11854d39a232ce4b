//! Counters of one backend instance.

/// Monotonic counters since [`UringBackend::open`](crate::UringBackend::open). Plain integers:
/// the owning worker copies them into its shared counters on its own schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringStats {
    /// Datagrams handed to the pipeline.
    pub rx_datagrams: u64,
    /// Datagrams dropped because they did not fit a receive buffer (`MSG_TRUNC`).
    pub rx_truncated: u64,
    /// Times a socket's multishot receive stopped because every buffer was held by the pipeline
    /// or in-flight sends (`ENOBUFS`). The datagrams stay queued in the socket meanwhile; those
    /// that overflow it show up in `rx_socket_drops`.
    pub rx_nobufs: u64,
    /// Datagrams the kernel dropped because a socket's receive queue was full (`SO_RXQ_OVFL`).
    /// Learned from the next datagram that arrives on that socket.
    pub rx_socket_drops: u64,
    /// Receive completions that failed for another reason, or that the kernel reported in a
    /// form we could not parse.
    pub rx_errors: u64,
    /// Multishot receives re-armed after the kernel ended them.
    pub rearms: u64,
    /// `sendmsg` submissions (one per datagram, or one per GSO batch).
    pub tx_sqes: u64,
    /// Datagrams submitted for sending.
    pub tx_datagrams: u64,
    /// `sendmsg` submissions that carried more than one datagram via `UDP_SEGMENT`.
    pub tx_gso_batches: u64,
    /// Datagrams whose send failed in the kernel (reported by a completion after `tx_burst`
    /// returned). Failures known at submission are in `TxOutcome::failed` instead.
    pub tx_errors: u64,
    /// Times GSO was switched off for a socket because the kernel rejected a batch (`EIO`,
    /// `EINVAL`: no checksum offload on old kernels, or a segment above the path MTU).
    pub gso_disabled: u64,
    /// Packets the pipeline marked for the exception path; a socket backend drops them because
    /// the kernel already handled everything it would have punted.
    pub exceptions_dropped: u64,
    /// `io_uring_enter` calls (submissions and waits).
    pub submit_calls: u64,
    /// `io_uring_enter` calls that failed with something other than `EINTR`/`EBUSY`/`EAGAIN`.
    pub submit_errors: u64,
}
