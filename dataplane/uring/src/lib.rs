//! io_uring UDP socket backend for the popmesh media workers.
//!
//! [`UringBackend`] implements [`popmesh_media::backend::Backend`] with
//! [`Framing::Datagram`](popmesh_media::backend::Framing::Datagram): a packet's buffer is the
//! UDP payload, `src`/`dst` are metadata, and the kernel builds the headers on send.
//!
//! # Threading and ownership
//!
//! One backend = one worker = one io_uring, created on and used only by the worker's pinned
//! thread. The ring is set up `SINGLE_ISSUER | DEFER_TASKRUN`, and the backend is `!Send`, so
//! the compiler holds us to that. No locks, no atomics except the provided-buffer ring tail.
//! Each worker opens its own socket per configured address with `SO_REUSEPORT`; the kernel
//! hashes each 4-tuple to one of them, so a flow stays on one worker.
//!
//! # Buffer lifecycle (zero copy)
//!
//! All sockets of a worker receive through one multishot `recvmsg` each into one ring-mapped
//! provided-buffer ring (`IORING_REGISTER_PBUF_RING`). A [`UringBuf`] *is* the ring buffer the
//! kernel wrote the datagram into; no copy is made. Its lifecycle:
//!
//! 1. kernel owns it (published in the buffer ring);
//! 2. a receive completion names it; the backend claims it and parses the
//!    `io_uring_recvmsg_out` header, sender address and control messages in place;
//! 3. `rx_burst` hands it to the pipeline, which may read and rewrite the payload;
//! 4. `tx_burst` turns it into a read-only shared handle held by every `sendmsg` that uses it
//!    (fan-out sends one buffer to many destinations);
//! 5. when the last handle is dropped (no send used it, or the last send completed) it is
//!    published in the buffer ring again.
//!
//! Why zero copy is sound: every buffer has exactly one owner, the kernel or the application,
//! tracked per buffer id; only the single exclusive handle can write it; and the memory is
//! reference-counted so it outlives every handle and every in-flight operation. The details
//! and the only `unsafe` code are in the `buf_ring` module. The price: buffers held by the
//! pipeline or by slow sends are not available to receive. When the kernel finds the buffer
//! ring empty it ends the multishot receive with `ENOBUFS` (counted in
//! [`UringStats::rx_nobufs`]); datagrams wait in the socket queue meanwhile, and the receive is
//! re-armed as soon as buffers come back. Queue overflow drops are counted from `SO_RXQ_OVFL`
//! ([`UringStats::rx_socket_drops`]). Datagrams larger than a buffer are counted and dropped.
//!
//! # Syscalls per burst
//!
//! * `rx_burst`: 0 or 1 `io_uring_enter`, however many datagrams arrived. With deferred task
//!   work the kernel flags pending receive work in the shared SQ flags; a poll with nothing to
//!   submit and nothing flagged costs no syscall, otherwise one enter receives everything
//!   pending (up to the free buffers) in one batch.
//! * `tx_burst`: 1 `io_uring_enter` for the whole burst: all `sendmsg` SQEs are queued first
//!   (runs of sends to one destination coalesced with `UDP_SEGMENT`, up to 64 datagrams per
//!   SQE), then submitted together. More only if the SQ (`ring_entries`) fills up mid-burst.
//!   That enter also runs any flagged receive work, so under load the next `rx_burst` usually
//!   finds its datagrams already reaped: the `relay_loopback` example measures 1.01 enters per
//!   relayed burst.
//! * `idle_wait`: 1 blocking `io_uring_enter` with a timeout; wakes on the first datagram, or,
//!   with `IdleWait::coalesce`, on a full burst or at the end of that window (io_uring
//!   `min_wait`, kernel 6.12+; older kernels wake on the first datagram).
//!
//! Steady state allocates nothing: send slots (`msghdr`, address, iovecs), the pending queue
//! and the per-burst scratch space are allocated at open or grow once.
#![deny(unsafe_code)]

mod addr;
mod backend;
#[allow(unsafe_code)]
mod buf_ring;
mod error;
mod params;
mod plan;
mod stats;

pub use backend::UringBackend;
pub use buf_ring::UringBuf;
pub use error::OpenError;
pub use params::{UringParams, BUFFER_HEADROOM};
pub use stats::UringStats;
