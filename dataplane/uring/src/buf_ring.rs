//! Memory shared with the kernel, and everything that submits work referring to it. This is the
//! only module of the crate allowed to use `unsafe`.
//!
//! Why `unsafe` is needed at all: the kernel writes received datagrams into memory we own (the
//! provided buffers) and reads datagrams, addresses and `msghdr`s from memory we own (the send
//! slots) at times Rust cannot see. The io_uring crate therefore makes the operations that hand
//! such memory to the kernel `unsafe fn`s (`SubmissionQueue::push`,
//! `Submitter::register_buf_ring_with_flags`), and mapping the memory and viewing kernel-written
//! bytes as slices takes raw pointers.
//!
//! The invariants that make the safe API of this module sound, and who upholds them:
//!
//! 1. **Every buffer id (bid) has exactly one owner**: the kernel (its entry is published in the
//!    provided-buffer ring, or the kernel picked it and has not completed the receive yet) or
//!    the application (`Pool::refs[bid] > 0`). The application claims a bid only from a receive
//!    completion whose bid it believes the kernel owns ([`Pool::claim`] refuses anything else),
//!    and gives it back only when the last [`UringBuf`] / [`SharedBuf`] for it is dropped. So the
//!    kernel never writes a buffer we are reading, writing or sending.
//! 2. **One writer at a time**: a bid is exposed mutably only through the single [`UringBuf`]
//!    that claimed it; [`UringBuf::into_shared`] consumes it, after which only read-only
//!    [`SharedBuf`]s exist, so nothing can change bytes the kernel is sending.
//! 3. **Memory outlives the kernel's use**: buffer memory lives in a [`Pool`] behind an `Rc`;
//!    every buffer handle and the [`Ring`] hold a clone. Send slots (`msghdr`, address, control
//!    message, iovecs) live in a boxed slice the [`Ring`] never reallocates, and a slot is not
//!    reused before its completion arrives. On drop the [`Ring`] cancels the receives and waits
//!    for every outstanding operation; if the kernel does not answer in time it leaks the memory
//!    rather than free it under the kernel.
//! 4. **The ring tail is only touched atomically**, and an entry is written only while it lies
//!    beyond the published tail, where the kernel does not read.
//!
//! Everything here is single-threaded (`Rc`, `Cell`): one backend belongs to one worker thread,
//! which is also what `IORING_SETUP_SINGLE_ISSUER` promises the kernel. The types are `!Send`,
//! so the compiler enforces that promise.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{self, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use popmesh_media::backend::PacketBuf;

use crate::addr::{self, RecvControl, GSO_CMSG_SPACE, SOCKADDR_MAX};
use crate::plan::MAX_SEGMENTS;

/// The one buffer group of a ring.
const BGID: u16 = 0;

/// `user_data` tags: kind in the high 32 bits, index in the low 32.
const TAG_RECV: u64 = 1;
const TAG_SEND: u64 = 2;
const TAG_CANCEL: u64 = 3;

fn user_data(tag: u64, index: usize) -> u64 {
    (tag << 32) | (index as u64 & 0xffff_ffff)
}

/// Mirror of the kernel's `struct io_uring_buf` (one provided-buffer ring entry).
///
/// `io_uring::types::BufRingEntry` has the same layout but is written through `&mut self`
/// setters; for entry 0 that reference would cover `resv`, which is the ring tail the kernel
/// reads concurrently. Writing the three fields through raw pointers never touches `resv`.
#[repr(C)]
struct RingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () =
    assert!(std::mem::size_of::<RingEntry>() == std::mem::size_of::<types::BufRingEntry>());
const _: () = assert!(std::mem::size_of::<RingEntry>() == 16);

/// Offset of the ring tail: the `resv` field of entry 0 (`struct io_uring_buf_ring`).
const TAIL_OFFSET: usize = std::mem::offset_of!(RingEntry, resv);

fn page_size() -> usize {
    // SAFETY: sysconf reads a process-wide constant; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// An anonymous, page-aligned, pre-faulted mapping.
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    fn new(len: usize) -> io::Result<Region> {
        let page = page_size();
        let len = len
            .checked_add(page - 1)
            .map(|l| l & !(page - 1))
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks cannot alias
        // any existing allocation; arguments are plain integers. MAP_POPULATE pre-faults it so
        // the kernel's first copy into a buffer does not take page faults.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Region { ptr, len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned. The region is dropped only when the
        // last `Rc<Pool>` goes, i.e. after every buffer handle and the ring (which drains or
        // leaks, invariant 3) are gone, so neither we nor the kernel use it any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Receive buffers and the provided-buffer ring that lends them to the kernel.
pub(crate) struct Pool {
    ring: Region,
    data: Region,
    buf_size: u32,
    mask: u16,
    /// Our copy of the tail we last published.
    tail: Cell<u16>,
    /// Application references per bid; 0 means the kernel owns it (invariant 1).
    refs: Box<[Cell<u32>]>,
    /// Bids the application holds (refs > 0).
    in_use: Cell<u32>,
}

impl Pool {
    /// Maps `nbufs` (a power of two <= 32768) buffers of `buf_size` bytes and publishes all of
    /// them in the ring.
    fn new(nbufs: u16, buf_size: u32) -> Result<Pool, (usize, io::Error)> {
        let data_len = usize::from(nbufs) * buf_size as usize;
        let ring_len = usize::from(nbufs) * std::mem::size_of::<RingEntry>();
        let data = Region::new(data_len).map_err(|e| (data_len, e))?;
        let ring = Region::new(ring_len).map_err(|e| (ring_len, e))?;
        let pool = Pool {
            ring,
            data,
            buf_size,
            mask: nbufs.wrapping_sub(1),
            tail: Cell::new(0),
            refs: (0..nbufs).map(|_| Cell::new(1)).collect(),
            in_use: Cell::new(u32::from(nbufs)),
        };
        for bid in 0..nbufs {
            pool.unref(bid);
        }
        Ok(pool)
    }

    fn nbufs(&self) -> usize {
        self.refs.len()
    }

    /// Start of buffer `bid` (callers pass a bid < nbufs).
    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        self.data
            .ptr
            .as_ptr()
            .wrapping_add(usize::from(bid) * self.buf_size as usize)
    }

    fn tail_atomic(&self) -> &AtomicU16 {
        // SAFETY: the tail is the u16 at offset 14 of the page-aligned ring mapping, so it is
        // in bounds and 2-aligned; it lives as long as `self`. The kernel only reads it and all
        // our accesses go through this atomic (invariant 4).
        unsafe { AtomicU16::from_ptr(self.ring.ptr.as_ptr().add(TAIL_OFFSET).cast::<u16>()) }
    }

    /// Gives `bid` back to the kernel.
    fn publish(&self, bid: u16) {
        let tail = self.tail.get();
        let entry = self
            .ring
            .ptr
            .as_ptr()
            .cast::<RingEntry>()
            .wrapping_add(usize::from(tail & self.mask));
        // SAFETY: `tail & mask` < nbufs, so the entry is inside the ring mapping. The kernel
        // reads only entries in [head, tail); that range holds at most nbufs - 1 entries now
        // (we own `bid`), so slot `tail & mask` is outside it (invariant 4). We write the three
        // payload fields through raw pointers and never `resv`.
        unsafe {
            ptr::addr_of_mut!((*entry).addr).write(self.buf_ptr(bid) as u64);
            ptr::addr_of_mut!((*entry).len).write(self.buf_size);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // Release: the entry writes above become visible before the kernel sees the new tail.
        self.tail_atomic().store(tail, Ordering::Release);
    }

    /// Takes `bid` from the kernel after a receive completion. Refuses an unknown bid or one the
    /// application already holds, so a confused completion can never create a second owner.
    fn claim(&self, bid: u16) -> bool {
        match self.refs.get(usize::from(bid)) {
            Some(r) if r.get() == 0 => {
                r.set(1);
                self.in_use.set(self.in_use.get() + 1);
                true
            }
            _ => false,
        }
    }

    fn add_ref(&self, bid: u16) {
        if let Some(r) = self.refs.get(usize::from(bid)) {
            r.set(r.get() + 1);
        }
    }

    fn unref(&self, bid: u16) {
        let Some(r) = self.refs.get(usize::from(bid)) else {
            return;
        };
        match r.get() {
            0 => debug_assert!(false, "bid {bid} released twice"),
            1 => {
                r.set(0);
                self.in_use.set(self.in_use.get() - 1);
                self.publish(bid);
            }
            n => r.set(n - 1),
        }
    }

    /// Buffers the kernel can still receive into.
    fn kernel_owned(&self) -> usize {
        self.nbufs() - self.in_use.get() as usize
    }
}

/// One application reference to a claimed buffer; dropping it releases the reference.
struct BufRef {
    pool: Rc<Pool>,
    bid: u16,
    /// Payload position inside the buffer; `off + len <= buf_size` (checked when created).
    off: u32,
    len: u32,
}

impl Drop for BufRef {
    fn drop(&mut self) {
        self.pool.unref(self.bid);
    }
}

impl BufRef {
    fn payload_ptr(&self) -> *mut u8 {
        self.pool.buf_ptr(self.bid).wrapping_add(self.off as usize)
    }
}

/// A received datagram's payload, in place in the receive buffer the kernel wrote it to
/// (zero copy). The buffer goes back to the kernel when this value is dropped, or, once
/// [`Backend::tx_burst`](popmesh_media::backend::Backend::tx_burst) took it, when the last
/// send of it completes. Holding many of them starves receive (see `UringStats::rx_nobufs`).
pub struct UringBuf(BufRef);

impl UringBuf {
    /// Turns the exclusive handle into a shareable, read-only one for sending (invariant 2).
    pub(crate) fn into_shared(self) -> SharedBuf {
        SharedBuf(self.0)
    }
}

impl AsRef<[u8]> for UringBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: [off, off + len) lies inside buffer `bid` of a mapping kept alive by the Rc.
        // This handle is the only one for `bid` and the kernel does not own it (invariants 1 and
        // 2), so nothing writes the bytes while the borrow of `self` lasts.
        unsafe { std::slice::from_raw_parts(self.0.payload_ptr(), self.0.len as usize) }
    }
}

impl AsMut<[u8]> for UringBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_ref`; `&mut self` makes this the only borrow of the bytes.
        unsafe { std::slice::from_raw_parts_mut(self.0.payload_ptr(), self.0.len as usize) }
    }
}

impl PacketBuf for UringBuf {
    /// Always `None`: socket backends fan out by sending one buffer to many addresses, never
    /// by copying, so the pipeline does not ask.
    fn duplicate_headers(&mut self, _header_len: usize) -> Option<Self> {
        None
    }
}

impl fmt::Debug for UringBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringBuf")
            .field("bid", &self.0.bid)
            .field("len", &self.0.len)
            .finish()
    }
}

/// A read-only reference to a buffer being sent; clones share it (fan-out).
pub(crate) struct SharedBuf(BufRef);

impl SharedBuf {
    pub(crate) fn len(&self) -> usize {
        self.0.len as usize
    }

    fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.0.payload_ptr().cast(),
            iov_len: self.0.len as usize,
        }
    }
}

impl Clone for SharedBuf {
    fn clone(&self) -> Self {
        self.0.pool.add_ref(self.0.bid);
        SharedBuf(BufRef {
            pool: Rc::clone(&self.0.pool),
            bid: self.0.bid,
            off: self.0.off,
            len: self.0.len,
        })
    }
}

impl fmt::Debug for SharedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuf")
            .field("bid", &self.0.bid)
            .field("len", &self.0.len)
            .finish()
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain C data; all-zero is a valid value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

/// Per-socket receive state. `hdr` only carries the name and control sizes the kernel lays out
/// in each buffer; `RecvMsgOut::parse` needs the same values back.
struct RecvPort {
    fd: RawFd,
    hdr: libc::msghdr,
    armed: bool,
    armed_before: bool,
}

#[repr(C, align(8))]
struct NameBytes([u8; SOCKADDR_MAX]);

#[repr(C, align(8))]
struct CmsgBytes([u8; GSO_CMSG_SPACE]);

/// Everything one in-flight `sendmsg` points to (invariant 3).
struct SendSlot {
    hdr: libc::msghdr,
    name: NameBytes,
    control: CmsgBytes,
    iov: [libc::iovec; MAX_SEGMENTS],
    /// Keeps the sent buffers alive and out of the kernel's receive ring until completion.
    bufs: Vec<SharedBuf>,
    port: u16,
    gso: bool,
    in_flight: bool,
}

impl SendSlot {
    fn new() -> Self {
        SendSlot {
            hdr: zeroed_msghdr(),
            name: NameBytes([0; SOCKADDR_MAX]),
            control: CmsgBytes([0; GSO_CMSG_SPACE]),
            iov: [libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            }; MAX_SEGMENTS],
            bufs: Vec::with_capacity(MAX_SEGMENTS),
            port: 0,
            gso: false,
            in_flight: false,
        }
    }
}

/// What a completion meant.
#[derive(Debug)]
pub(crate) enum Event {
    /// A datagram, with the sender and the control messages that came with it.
    Datagram {
        port: usize,
        src: SocketAddr,
        control: RecvControl,
        buf: UringBuf,
    },
    /// A datagram larger than the buffer; already given back.
    Truncated,
    /// A receive failed with this errno (`ENOBUFS` when the buffer ring ran dry).
    RecvFailed { errno: i32 },
    /// A receive completion we could not make sense of; any buffer was given back.
    Malformed,
    /// A `sendmsg` finished (`result` < 0 is `-errno`); its buffers were released.
    Sent {
        port: u16,
        segments: usize,
        gso: bool,
        result: i32,
    },
}

/// Why a send could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Every send slot is in flight; reap completions and retry.
    NoSlot,
    /// The submission queue stayed full even after a submit.
    QueueFull,
}

/// How the backend wants the ring built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingConfig {
    pub sq_entries: u32,
    pub buffers: u16,
    pub buffer_size: u32,
}

/// Why [`Ring::new`] failed.
#[derive(Debug)]
pub(crate) enum RingError {
    Setup(io::Error),
    Memory(usize, io::Error),
    Register(io::Error),
}

/// One io_uring with its provided-buffer pool, per-socket multishot receives and send slots.
pub(crate) struct Ring {
    // Declared first so it is closed before the slots and the pool's last `Rc` are dropped.
    uring: IoUring,
    slots: Box<[SendSlot]>,
    free_slots: Vec<u32>,
    sends_in_flight: usize,
    recv: Box<[RecvPort]>,
    pool: Rc<Pool>,
    /// The kernel flags pending completions (`IORING_SETUP_TASKRUN_FLAG`), so a poll with
    /// nothing to submit and nothing flagged can skip the syscall.
    taskrun_flag: bool,
    /// The kernel supports `min_wait_usec` in waits (IORING_FEAT_MIN_TIMEOUT, 6.12+).
    min_timeout: bool,
    submit_calls: u64,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("slots", &self.slots.len())
            .field("sends_in_flight", &self.sends_in_flight)
            .field("sockets", &self.recv.len())
            .field("buffers", &self.pool.nbufs())
            .field("buffers_in_use", &self.pool.in_use.get())
            .field("taskrun_flag", &self.taskrun_flag)
            .finish()
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::ETIME)
    )
}

impl Ring {
    /// Builds the ring, registers the buffers and arms one multishot receive per socket.
    /// `sockets` gives each socket's fd and the `sockaddr` length of its family.
    pub(crate) fn new(cfg: RingConfig, sockets: &[(RawFd, u32)]) -> Result<Ring, RingError> {
        let slots = cfg.sq_entries as usize;
        // Room for every completion that can be outstanding at once (one per buffer, per send
        // slot, two per socket for a final receive CQE and a cancel), so the CQ never overflows.
        let cq = (usize::from(cfg.buffers) + slots + 2 * sockets.len() + 16)
            .next_power_of_two()
            .min(65_536) as u32;
        let mut tuned = IoUring::builder();
        // Single issuer + deferred task work: receive completions are produced only when this
        // thread enters the kernel asking for them, in one batch, with no IPIs; the taskrun
        // flag tells us when that is worth a syscall.
        tuned
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .setup_cqsize(cq)
            .setup_clamp();
        let (uring, taskrun_flag) = match tuned.build(cfg.sq_entries) {
            Ok(r) => (r, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Older kernel: plain ring, enter on every poll.
                let mut plain = IoUring::builder();
                plain.setup_cqsize(cq).setup_clamp();
                (
                    plain.build(cfg.sq_entries).map_err(RingError::Setup)?,
                    false,
                )
            }
            Err(e) => return Err(RingError::Setup(e)),
        };
        let pool = Rc::new(
            Pool::new(cfg.buffers, cfg.buffer_size).map_err(|(n, e)| RingError::Memory(n, e))?,
        );
        // SAFETY: the ring mapping holds `buffers` entries, is page aligned and stays mapped
        // while `Ring::pool` (or a buffer handle) holds the Rc, i.e. at least until `uring` is
        // closed, which unregisters it (invariant 3).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(pool.ring.ptr.as_ptr() as u64, cfg.buffers, BGID, 0)
                .map_err(RingError::Register)?;
        }
        let recv = sockets
            .iter()
            .map(|&(fd, name_len)| {
                let mut hdr = zeroed_msghdr();
                hdr.msg_namelen = name_len;
                hdr.msg_controllen = addr::RECV_CONTROL_LEN as _;
                RecvPort {
                    fd,
                    hdr,
                    armed: false,
                    armed_before: false,
                }
            })
            .collect();
        let min_timeout = uring.params().is_feature_min_timeout();
        let mut ring = Ring {
            uring,
            min_timeout,
            slots: (0..slots).map(|_| SendSlot::new()).collect(),
            free_slots: (0..slots as u32).rev().collect(),
            sends_in_flight: 0,
            recv,
            pool,
            taskrun_flag,
            submit_calls: 0,
        };
        ring.rearm();
        ring.submit().map_err(RingError::Setup)?;
        Ok(ring)
    }

    /// `io_uring_enter` calls so far.
    pub(crate) fn submit_calls(&self) -> u64 {
        self.submit_calls
    }

    /// Buffers held by the application (pipeline, pending queue, in-flight sends).
    pub(crate) fn buffers_in_use(&self) -> u32 {
        self.pool.in_use.get()
    }

    /// Pushes an SQE, submitting once if the queue is full.
    ///
    /// # Safety
    ///
    /// Everything `entry` points to must stay valid, and unchanged where the kernel reads it,
    /// until the operation's last completion has been reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: forwarded from the caller.
        if unsafe { self.uring.submission().push(entry) }.is_ok() {
            return true;
        }
        if self.submit().is_err() {
            return false;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.uring.submission().push(entry) }.is_ok()
    }

    /// Re-arms the multishot receive of every socket whose receive ended, as long as the
    /// kernel has buffers to receive into (re-arming into an empty ring would only fail with
    /// `ENOBUFS` again). Returns how many were re-armed (first arms not counted).
    pub(crate) fn rearm(&mut self) -> u64 {
        let mut rearmed = 0;
        for port in 0..self.recv.len() {
            if self.pool.kernel_owned() == 0 {
                break;
            }
            let Some(r) = self.recv.get(port) else { break };
            if r.armed {
                continue;
            }
            let entry = opcode::RecvMsgMulti::new(types::Fd(r.fd), &r.hdr, BGID)
                .build()
                .user_data(user_data(TAG_RECV, port));
            // SAFETY: the kernel reads `hdr` (name and control sizes) from `self.recv`, a boxed
            // slice that is never reallocated and outlives the operation (the ring cancels and
            // drains it on drop). It writes only into buffers of group BGID, i.e. pool buffers
            // it owns (invariant 1).
            if !unsafe { self.push(&entry) } {
                break;
            }
            if let Some(r) = self.recv.get_mut(port) {
                rearmed += u64::from(r.armed_before);
                r.armed = true;
                r.armed_before = true;
            }
        }
        rearmed
    }

    /// Queues one `sendmsg` of `bufs` (at most [`MAX_SEGMENTS`]) from socket `port` to `dst`,
    /// as a GSO batch of `gso_size`-byte segments when `gso_size` is given and there is more
    /// than one buffer. Returns the number of datagrams queued.
    pub(crate) fn push_send<'b>(
        &mut self,
        port: usize,
        dst: &SocketAddr,
        bufs: impl Iterator<Item = &'b SharedBuf>,
        gso_size: Option<u16>,
    ) -> Result<usize, PushError> {
        let Some(fd) = self.recv.get(port).map(|r| r.fd) else {
            return Err(PushError::QueueFull);
        };
        if self.uring.submission().is_full() {
            self.submit().map_err(|_| PushError::QueueFull)?;
            if self.uring.submission().is_full() {
                return Err(PushError::QueueFull);
            }
        }
        let Some(index) = self.free_slots.pop() else {
            return Err(PushError::NoSlot);
        };
        let index = index as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return Err(PushError::NoSlot);
        };
        debug_assert!(!slot.in_flight && slot.bufs.is_empty());
        let mut n = 0;
        for (iov, buf) in slot.iov.iter_mut().zip(bufs) {
            *iov = buf.iovec();
            slot.bufs.push(buf.clone());
            n += 1;
        }
        if n == 0 {
            self.free_slots.push(index as u32);
            return Ok(0);
        }
        let name_len = addr::encode_sockaddr(dst, &mut slot.name.0);
        let gso = n > 1 && gso_size.is_some();
        let control_len = match gso_size {
            Some(size) if gso => addr::encode_udp_segment(&mut slot.control.0, size),
            _ => 0,
        };
        slot.hdr = zeroed_msghdr();
        slot.hdr.msg_name = slot.name.0.as_mut_ptr().cast();
        slot.hdr.msg_namelen = name_len;
        slot.hdr.msg_iov = slot.iov.as_mut_ptr();
        slot.hdr.msg_iovlen = n as _;
        if control_len > 0 {
            slot.hdr.msg_control = slot.control.0.as_mut_ptr().cast();
            slot.hdr.msg_controllen = control_len as _;
        }
        slot.port = port as u16;
        slot.gso = gso;
        slot.in_flight = true;
        let entry = opcode::SendMsg::new(types::Fd(fd), &slot.hdr)
            .build()
            .user_data(user_data(TAG_SEND, index));
        // SAFETY: `hdr` and the name, control and iovec arrays it points to live in slot
        // `index` of `self.slots`, which is never reallocated and not reused until this
        // operation's completion (`in_flight`). The iovecs point into pool buffers kept alive
        // and unwritable by the `SharedBuf`s stored in `slot.bufs` until then (invariants 1-3).
        // The queue has room (checked above), so this push does not submit.
        if unsafe { self.push(&entry) } {
            self.sends_in_flight += 1;
            Ok(n)
        } else {
            if let Some(slot) = self.slots.get_mut(index) {
                slot.bufs.clear();
                slot.in_flight = false;
            }
            self.free_slots.push(index as u32);
            Err(PushError::QueueFull)
        }
    }

    /// Submits queued SQEs (one `io_uring_enter`), if there are any.
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        if self.uring.submission().is_empty() && self.taskrun_flag {
            return Ok(());
        }
        self.submit_calls += 1;
        match self.uring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lets the kernel produce pending completions without blocking: enters only when there is
    /// something to submit or the kernel flagged deferred work (or always, on a ring without the
    /// taskrun flag).
    pub(crate) fn poll(&mut self) -> io::Result<()> {
        if self.taskrun_flag {
            let sq = self.uring.submission();
            if sq.is_empty() && !sq.taskrun() && !sq.cq_overflow() {
                return Ok(());
            }
        }
        self.submit_calls += 1;
        match self.uring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits queued SQEs and sleeps until at least one completion or `timeout`. With a
    /// nonzero `min_wait` (kernel 6.12+, IORING_FEAT_MIN_TIMEOUT), waits for `want`
    /// completions during the first `min_wait`, then for one: interrupt moderation.
    pub(crate) fn wait(
        &mut self,
        timeout: Duration,
        want: usize,
        min_wait: Duration,
    ) -> io::Result<()> {
        let ts = Timespec::from(timeout);
        let min_us = u32::try_from(min_wait.as_micros()).unwrap_or(u32::MAX);
        let (want, args) = if min_us > 0 && self.min_timeout {
            (
                want.max(1),
                SubmitArgs::new().timespec(&ts).min_wait_usec(min_us),
            )
        } else {
            (1, SubmitArgs::new().timespec(&ts))
        };
        self.submit_calls += 1;
        match self.uring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Drains the completion queue (no syscall), releasing finished send slots and turning
    /// receive completions into [`Event`]s.
    pub(crate) fn reap(&mut self, mut on_event: impl FnMut(Event)) {
        let Ring {
            uring,
            slots,
            free_slots,
            sends_in_flight,
            recv,
            pool,
            ..
        } = self;
        for cqe in uring.completion() {
            let data = cqe.user_data();
            let index = (data & 0xffff_ffff) as usize;
            match data >> 32 {
                TAG_RECV => {
                    let Some(port) = recv.get_mut(index) else {
                        continue;
                    };
                    if !cqueue::more(cqe.flags()) {
                        port.armed = false;
                    }
                    on_event(recv_event(pool, port, index, &cqe));
                }
                TAG_SEND => {
                    let Some(slot) = slots.get_mut(index).filter(|s| s.in_flight) else {
                        continue;
                    };
                    let segments = slot.bufs.len();
                    // Last use of these buffers by the kernel: release them (invariant 1).
                    slot.bufs.clear();
                    slot.in_flight = false;
                    free_slots.push(index as u32);
                    *sends_in_flight -= 1;
                    on_event(Event::Sent {
                        port: slot.port,
                        segments,
                        gso: slot.gso,
                        result: cqe.result(),
                    });
                }
                _ => {}
            }
        }
    }
}

/// Interprets one receive completion of socket `index`.
fn recv_event(pool: &Rc<Pool>, port: &RecvPort, index: usize, cqe: &cqueue::Entry) -> Event {
    let res = cqe.result();
    let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
        return if res < 0 {
            Event::RecvFailed { errno: -res }
        } else {
            Event::Malformed
        };
    };
    if !pool.claim(bid) {
        return Event::Malformed;
    }
    // From here the bid is ours; this handle gives it back on every path that drops it.
    let mut held = BufRef {
        pool: Rc::clone(pool),
        bid,
        off: 0,
        len: 0,
    };
    let Ok(written) = usize::try_from(res) else {
        return Event::RecvFailed { errno: -res };
    };
    let written = written.min(pool.buf_size as usize);
    let base = pool.buf_ptr(bid);
    // SAFETY: `bid` < nbufs (claim checked it), so [base, base + written) is inside the data
    // mapping. We just claimed the bid, so the kernel is done writing it and nobody else has a
    // reference (invariant 1); the slice is dropped before `held` leaves this function.
    let bytes = unsafe { std::slice::from_raw_parts(base.cast_const(), written) };
    let Ok(msg) = RecvMsgOut::parse(bytes, &port.hdr) else {
        return Event::Malformed;
    };
    let payload = msg.payload_data();
    if msg.is_payload_truncated() || msg.incoming_payload_len() as usize > payload.len() {
        return Event::Truncated;
    }
    let Some(src) = addr::parse_sockaddr(msg.name_data()) else {
        return Event::Malformed;
    };
    let control = addr::parse_control(msg.control_data());
    held.off = (payload.as_ptr() as usize - bytes.as_ptr() as usize) as u32;
    held.len = payload.len() as u32;
    Event::Datagram {
        port: index,
        src,
        control,
        buf: UringBuf(held),
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Stop the kernel using our memory before it is freed (invariant 3): cancel the
        // multishot receives, let sends finish, and reap until nothing is outstanding.
        let _ = self.submit();
        for port in 0..self.recv.len() {
            if self.recv.get(port).is_some_and(|r| r.armed) {
                let entry = opcode::AsyncCancel::new(user_data(TAG_RECV, port))
                    .build()
                    .user_data(user_data(TAG_CANCEL, port));
                // SAFETY: a cancel request points to no memory.
                unsafe { self.push(&entry) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            self.reap(drop);
            let busy = self.sends_in_flight > 0 || self.recv.iter().any(|r| r.armed);
            if !busy {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            let _ = self.wait(Duration::from_millis(10), 1, Duration::ZERO);
        }
        // The kernel still holds requests that point into our memory: leak it rather than
        // free it under the kernel. Only reachable if the kernel never completes a cancel.
        std::mem::forget(Rc::clone(&self.pool));
        std::mem::forget(std::mem::take(&mut self.slots));
        std::mem::forget(std::mem::take(&mut self.recv));
    }
}

/// Sets an integer socket option that socket2 does not wrap.
pub(crate) fn set_int_option(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: we pass a pointer to a live local c_int and its exact size; the kernel only
    // reads it. A bad fd or option makes the call fail, not touch other memory.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            ptr::addr_of!(value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
