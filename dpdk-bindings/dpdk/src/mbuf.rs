//! Owned packet buffers (`rte_mbuf` chains) with a soundness rule for shared data.
//!
//! # Who may write what
//! An mbuf's data buffer can be shared: [`Mbuf::clone_indirect`] and
//! [`Mbuf::header_copy_chained`] attach other mbufs to it, and those may be in flight on TX on
//! another core while this handle lives. Writing shared bytes would race with those readers, so
//! each handle tracks how many leading bytes of its first segment it may write:
//!
//! - A handle that never shared its data (fresh from a pool, received, copied) may write the
//!   whole first segment exactly when DPDK says nobody else can see the buffer: the segment is
//!   direct (not attached to another mbuf or an external buffer) and its refcount is 1.
//! - Sharing through this API freezes the limit: `clone_indirect` to 0 on both sides,
//!   `header_copy_chained` to `hdr_len` on the original (the clone only reads the bytes after
//!   it). The frozen limit only moves with the data: [`adj`](Mbuf::adj) shrinks it, a
//!   successful [`prepend`](Mbuf::prepend) (which needs the buffer exclusive) grows it.
//!
//! [`AsMut`] hands out `data[..min(data_len, limit)]`; `prepend`/`append` write headroom or
//! tailroom only after checking that the segment they touch is exclusive. Reading is always
//! allowed: every sharer only ever reads the bytes it shares.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;

use popmesh_dpdk_sys as sys;

use crate::Mempool;

/// How many mbuf pointers the burst and bulk paths move through the stack at a time.
pub(crate) const BURST_CHUNK: usize = 64;

/// An owned packet: the head `rte_mbuf` of a (possibly chained) packet. Dropping it returns
/// every segment to its pool (`rte_pktmbuf_free`).
///
/// `Send` (DPDK mbufs move between cores all the time) but not `Sync`. The pool it came from
/// must outlive it; see [`Mempool`]'s lifetime rule.
pub struct Mbuf {
    ptr: NonNull<sys::rte_mbuf>,
    /// `None`: this handle never shared the buffer; the write limit follows exclusivity.
    /// `Some(n)`: frozen limit after sharing (see the module docs).
    frozen: Option<u16>,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: an Mbuf is the unique owner of its head rte_mbuf and of that packet's segment chain;
// moving it to another thread moves that ownership. Freeing on another thread is supported by
// DPDK (MP/MC mempools), and shared data buffers are reference-counted atomically.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be the head segment of a valid packet mbuf whose one reference the caller owns
    /// and hands over (no other `Mbuf`, PMD or C code will free or modify it), from a pool that
    /// outlives the returned `Mbuf`.
    #[inline]
    pub unsafe fn from_raw(ptr: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf {
            ptr,
            frozen: None,
            _not_sync: PhantomData,
        }
    }

    /// Gives up ownership without freeing; the caller must eventually free the mbuf (e.g. hand
    /// it to a PMD, or [`from_raw`](Self::from_raw) it back). A frozen write limit is lost:
    /// `from_raw` derives it from exclusivity alone, which is sound but may be stricter.
    #[inline]
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// The raw head mbuf, for calls into `popmesh_dpdk_sys`; still owned by `self`.
    #[inline]
    pub fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.ptr.as_ptr()
    }

    /// Bytes in the first segment (what `as_ref()` returns).
    #[inline]
    pub fn data_len(&self) -> usize {
        // SAFETY: self owns a valid head mbuf; a by-value field read through the raw pointer
        // (no reference to the whole struct, whose refcnt other threads may update atomically).
        usize::from(unsafe { (*self.ptr.as_ptr()).data_len })
    }

    /// Bytes in the whole packet, all segments.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        // SAFETY: as in data_len.
        unsafe { (*self.ptr.as_ptr()).pkt_len as usize }
    }

    /// Bytes in the whole packet, all segments (same as [`pkt_len`](Self::pkt_len)).
    #[inline]
    pub fn len(&self) -> usize {
        self.pkt_len()
    }

    /// True when the packet holds no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pkt_len() == 0
    }

    /// Number of segments in the chain.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        // SAFETY: as in data_len.
        unsafe { (*self.ptr.as_ptr()).nb_segs }
    }

    /// Free bytes in front of the first segment's data.
    #[inline]
    pub fn headroom(&self) -> usize {
        // SAFETY: as in data_len.
        usize::from(unsafe { (*self.ptr.as_ptr()).data_off })
    }

    /// Free bytes after the last segment's data.
    pub fn tailroom(&self) -> usize {
        // SAFETY: the chain is valid and owned by self; tailroom only reads it.
        let last = unsafe { sys::popmesh_pktmbuf_lastseg(self.ptr.as_ptr()) };
        // SAFETY: lastseg returns a segment of this valid chain.
        usize::from(unsafe { sys::popmesh_pktmbuf_tailroom(last) })
    }

    /// The input port DPDK recorded at RX, or the one set with [`set_port`](Self::set_port).
    #[inline]
    pub fn port(&self) -> u16 {
        // SAFETY: as in data_len.
        unsafe { (*self.ptr.as_ptr()).port }
    }

    /// Sets the mbuf's port field (metadata only; it does not pick a TX port).
    #[inline]
    pub fn set_port(&mut self, port: u16) {
        // SAFETY: self uniquely owns the head struct; the port field is plain metadata.
        unsafe { (*self.ptr.as_ptr()).port = port };
    }

    /// The RSS hash the NIC computed at RX, if it computed one.
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.ptr.as_ptr();
        // SAFETY: m is a valid mbuf owned by self; these read two plain fields.
        unsafe {
            (sys::popmesh_pktmbuf_has_rss_hash(m) != 0).then(|| sys::popmesh_pktmbuf_rss_hash(m))
        }
    }

    /// True when no other mbuf can see the first segment's data buffer (direct, refcount 1).
    #[inline]
    pub fn is_exclusive(&self) -> bool {
        // SAFETY: valid mbuf; the check is an atomic acquire load plus a flags read.
        unsafe { sys::popmesh_mbuf_is_exclusive(self.ptr.as_ptr()) != 0 }
    }

    /// How many leading bytes of the first segment `as_mut()` exposes (module docs).
    #[inline]
    pub fn writable_len(&self) -> usize {
        match self.frozen {
            Some(limit) => usize::from(limit).min(self.data_len()),
            None if self.is_exclusive() => self.data_len(),
            None => 0,
        }
    }

    /// The current write limit as a value to freeze.
    fn current_limit(&self) -> u16 {
        // writable_len() <= data_len() which is a u16.
        u16::try_from(self.writable_len()).unwrap_or(u16::MAX)
    }

    /// Iterates over the bytes of every segment, head first.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            next: self.ptr.as_ptr(),
            _packet: PhantomData,
        }
    }

    /// Copies the whole packet (all segments) into `out`, replacing its contents.
    pub fn copy_to_vec(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.pkt_len());
        for segment in self.segments() {
            out.extend_from_slice(segment);
        }
    }

    /// Grows the first segment by `n` bytes at the front (into the headroom) and returns them
    /// for writing (their content is whatever the buffer held). `None`, with the mbuf unchanged,
    /// if the headroom is smaller than `n` or the buffer is shared.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        if !self.is_exclusive() {
            return None;
        }
        // SAFETY: self owns the chain and the first segment's buffer is exclusive (checked
        // above), so the headroom bytes are ours to hand out.
        let start = unsafe { sys::popmesh_pktmbuf_prepend(self.ptr.as_ptr(), n16) };
        if start.is_null() {
            return None;
        }
        // The buffer is exclusive, so the whole first segment is writable again.
        self.frozen = None;
        // SAFETY: prepend returned the start of n fresh data bytes inside the exclusive
        // buffer; the slice borrows self mutably so no other access overlaps.
        Some(unsafe { std::slice::from_raw_parts_mut(start.cast::<u8>(), n) })
    }

    /// Removes `n` bytes from the front of the first segment. False (mbuf unchanged) if the
    /// first segment holds fewer than `n` bytes.
    #[must_use = "false means nothing was removed"]
    pub fn adj(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: self owns the head struct; adj only moves data_off/data_len/pkt_len of it.
        let start = unsafe { sys::popmesh_pktmbuf_adj(self.ptr.as_ptr(), n16) };
        if start.is_null() {
            return false;
        }
        // The frozen limit counts from the data start, which moved forward by n.
        self.frozen = self.frozen.map(|limit| limit.saturating_sub(n16));
        true
    }

    /// Grows the last segment by `n` bytes at the end (into its tailroom) and returns them for
    /// writing (content is whatever the buffer held). `None`, mbuf unchanged, if the tailroom is
    /// smaller than `n` or the last segment's buffer is shared.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: the chain is valid and owned by self.
        let last = unsafe { sys::popmesh_pktmbuf_lastseg(self.ptr.as_ptr()) };
        // SAFETY: last is a segment of this valid chain.
        if unsafe { sys::popmesh_mbuf_is_exclusive(last) } == 0 {
            return None;
        }
        // SAFETY: self owns the chain; the last segment's buffer is exclusive (checked above), so
        // its tailroom is ours.
        let tail = unsafe { sys::popmesh_pktmbuf_append(self.ptr.as_ptr(), n16) };
        if tail.is_null() {
            return None;
        }
        if last == self.ptr.as_ptr() {
            // The first segment is exclusive: all of it is writable again.
            self.frozen = None;
        }
        // SAFETY: append returned the start of n fresh bytes in the exclusive last segment; the
        // slice borrows self mutably so no other access overlaps.
        Some(unsafe { std::slice::from_raw_parts_mut(tail.cast::<u8>(), n) })
    }

    /// Removes `n` bytes from the end of the last segment. False (mbuf unchanged) if the last
    /// segment holds fewer than `n` bytes.
    #[must_use = "false means nothing was removed"]
    pub fn trim(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: self owns the chain; trim only shrinks data_len/pkt_len fields.
        unsafe { sys::popmesh_pktmbuf_trim(self.ptr.as_ptr(), n16) == 0 }
    }

    /// Appends `tail`'s segments to this packet. On failure (the chain would exceed 65535
    /// segments) `tail` is handed back untouched.
    ///
    /// # Errors
    /// Returns `tail` if the segment count would overflow.
    pub fn chain(&mut self, tail: Mbuf) -> Result<(), Mbuf> {
        // SAFETY: self and tail own distinct, valid chains (unique ownership means no segment
        // is in both, so no cycle can form); on success tail's chain becomes part of self's.
        let rc = unsafe { sys::popmesh_pktmbuf_chain(self.ptr.as_ptr(), tail.ptr.as_ptr()) };
        if rc != 0 {
            return Err(tail);
        }
        // self now owns tail's segments and frees them with the packet.
        std::mem::forget(tail);
        Ok(())
    }

    /// A new packet that shares this one's data (one indirect mbuf per segment, taken from
    /// `pool`, which may have a data room of 0). Both become read-only: the write limit of the
    /// clone and of `self` freezes at 0. `None`, `self` unchanged, if `pool` runs dry.
    pub fn clone_indirect(&mut self, pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: a Mempool handle is a live pktmbuf pool.
        unsafe { self.clone_indirect_raw(pool.as_ptr()) }
    }

    /// # Safety
    /// `pool` must be a live pktmbuf pool that outlives the clone.
    unsafe fn clone_indirect_raw(&mut self, pool: *mut sys::rte_mempool) -> Option<Mbuf> {
        // SAFETY: self's chain is valid and pool is live (caller); rte_pktmbuf_clone attaches
        // new indirect mbufs (bumping the refcounts atomically) and on failure releases what it
        // took.
        let ptr = unsafe { sys::rte_pktmbuf_clone(self.ptr.as_ptr(), pool) };
        let ptr = NonNull::new(ptr)?;
        self.frozen = Some(0);
        // SAFETY: a non-null clone is a new packet we own.
        let mut clone = unsafe { Mbuf::from_raw(ptr) };
        clone.frozen = Some(0);
        Some(clone)
    }

    /// A full private copy of the packet (all segments, plus port, RSS hash and offload
    /// metadata) from `pool`, fully writable. `None` if `pool` runs dry.
    pub fn copy_from(&self, pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: a Mempool handle is a live pktmbuf pool.
        unsafe { self.copy_raw(pool.as_ptr(), 0, u32::MAX) }
    }

    /// [`copy_from`](Self::copy_from) the pool that holds this packet's first data buffer
    /// (for a clone: the pool of the mbuf it shares), so callers need not carry a pool handle.
    /// `None` if that pool runs dry or the data lives in an external buffer.
    pub fn copy_own_pool(&self) -> Option<Mbuf> {
        let pool = self.data_pool()?;
        // SAFETY: the pool holds this packet's data, so it outlives this mbuf (Mempool's
        // lifetime rule) and hence the copy, which the same rule then covers.
        unsafe { self.copy_raw(pool.as_ptr(), 0, u32::MAX) }
    }

    /// The pool holding the first segment's data buffer, if it is a pool buffer.
    fn data_pool(&self) -> Option<NonNull<sys::rte_mempool>> {
        // SAFETY: valid mbuf; reads its flags and, for a clone, the direct mbuf's pool field.
        NonNull::new(unsafe { sys::popmesh_pktmbuf_data_pool(self.ptr.as_ptr()) })
    }

    /// # Safety
    /// `pool` must be a live pktmbuf pool that outlives the copy.
    unsafe fn copy_raw(&self, pool: *mut sys::rte_mempool, offset: u32, len: u32) -> Option<Mbuf> {
        // SAFETY: self's chain is valid and pool is live (caller); the copy only reads self's
        // data, and offset <= pkt_len is checked by DPDK (NULL otherwise).
        let ptr = unsafe { sys::rte_pktmbuf_copy(self.ptr.as_ptr(), pool, offset, len) };
        // SAFETY: a non-null copy is a new packet we own.
        NonNull::new(ptr).map(|ptr| unsafe { Mbuf::from_raw(ptr) })
    }

    /// Builds a per-receiver copy for fan-out: a new packet whose first segment is a private,
    /// writable copy of this packet's first `hdr_len` bytes (from `hdr_pool`, with the packet
    /// metadata), chained to an indirect clone of the rest (from `clone_pool`). Only headers are
    /// copied; the payload is shared.
    ///
    /// `self` keeps its first `hdr_len` bytes writable (the clone never reads them) and the rest
    /// becomes read-only. Sending the result needs a port configured with `multi_seg_tx`.
    ///
    /// `None`, `self` unchanged, if `hdr_len` exceeds the first segment or a pool runs dry.
    // ~62 ns per copy (42-byte header of 1200, free included; cargo bench -p popmesh-dpdk
    // --bench burst).
    pub fn header_copy_chained(
        &mut self,
        hdr_len: usize,
        hdr_pool: &Mempool,
        clone_pool: &Mempool,
    ) -> Option<Mbuf> {
        // SAFETY: Mempool handles are live pktmbuf pools.
        unsafe { self.header_copy_chained_raw(hdr_len, hdr_pool.as_ptr(), clone_pool.as_ptr()) }
    }

    /// [`header_copy_chained`](Self::header_copy_chained) with the header and the clones taken
    /// from the pool that holds this packet's first data buffer (each clone then occupies a
    /// full-size mbuf of that pool). `None` also when the data lives in an external buffer.
    pub fn header_copy_chained_own_pool(&mut self, hdr_len: usize) -> Option<Mbuf> {
        let pool = self.data_pool()?.as_ptr();
        // SAFETY: as in copy_own_pool.
        unsafe { self.header_copy_chained_raw(hdr_len, pool, pool) }
    }

    /// # Safety
    /// Both pools must be live pktmbuf pools that outlive the result.
    unsafe fn header_copy_chained_raw(
        &mut self,
        hdr_len: usize,
        hdr_pool: *mut sys::rte_mempool,
        clone_pool: *mut sys::rte_mempool,
    ) -> Option<Mbuf> {
        if hdr_len > self.data_len() {
            return None;
        }
        if hdr_len == 0 {
            // No header to copy: an empty private segment would only confuse PMDs.
            // SAFETY: clone_pool is live (caller).
            return unsafe { self.clone_indirect_raw(clone_pool) };
        }
        // hdr_len <= data_len, a u16.
        let hdr_len16 = u16::try_from(hdr_len).ok()?;
        // Taken before the clone below makes the buffer shared (which would read as 0).
        let (frozen_before, limit_before) = (self.frozen, self.current_limit());
        // SAFETY: hdr_pool is live (caller); copies hdr_len (<= first segment) bytes.
        let mut head = unsafe { self.copy_raw(hdr_pool, 0, u32::from(hdr_len16)) }?;
        if self.pkt_len() == hdr_len {
            // Nothing after the header: the copy is the whole packet and nothing is shared.
            return Some(head);
        }
        // SAFETY: clone_pool is live (caller). Dropping `rest` on the error paths below
        // detaches it again.
        let mut rest = unsafe { self.clone_indirect_raw(clone_pool) }?;
        // clone_indirect_raw froze self at 0; until the chain is built, failures below drop
        // `rest` and leave self as it was.
        self.frozen = frozen_before;
        if !rest.adj(hdr_len) {
            // Unreachable: the clone's first segment has self's data_len >= hdr_len.
            return None;
        }
        if rest.data_len() == 0 && rest.nb_segs() > 1 {
            rest.drop_empty_head();
        }
        head.chain(rest).ok()?;
        self.frozen = Some(limit_before.min(hdr_len16));
        Some(head)
    }

    /// Unlinks and frees an empty first segment so a chain does not carry a zero-length
    /// segment (some PMDs reject those). Caller ensures `data_len() == 0` and `nb_segs() > 1`.
    fn drop_empty_head(&mut self) {
        let first = self.ptr.as_ptr();
        // SAFETY: self owns the chain; first has a successor (nb_segs > 1), which becomes the
        // new head with the chain's totals (first held no bytes, so pkt_len is unchanged).
        // first is then a lone, empty segment owned by nobody else, and is freed.
        unsafe {
            let second = (*first).next;
            debug_assert!(!second.is_null());
            (*second).nb_segs = (*first).nb_segs - 1;
            (*second).pkt_len = (*first).pkt_len;
            (*first).next = std::ptr::null_mut();
            (*first).nb_segs = 1;
            (*first).pkt_len = 0;
            sys::popmesh_pktmbuf_free(first);
            self.ptr = NonNull::new_unchecked(second);
        }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: self owns one reference to a valid packet; rte_pktmbuf_free releases every
        // segment (detaching indirect ones) exactly once.
        unsafe { sys::popmesh_pktmbuf_free(self.ptr.as_ptr()) };
    }
}

/// Start and length of a segment's data.
///
/// # Safety
/// `segment` must be a valid mbuf segment.
#[inline]
unsafe fn segment_data(segment: *const sys::rte_mbuf) -> (*mut u8, usize) {
    // SAFETY: valid segment (caller); by-value field reads through the raw pointer create no
    // reference to the struct, whose refcnt other threads may update atomically.
    unsafe {
        let start = (*segment)
            .buf_addr
            .cast::<u8>()
            .add(usize::from((*segment).data_off));
        (start, usize::from((*segment).data_len))
    }
}

impl AsRef<[u8]> for Mbuf {
    /// The first segment's data.
    #[inline]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: self owns a valid head segment, whose data is data_len initialised bytes
        // inside its buffer. They stay valid while self lives, and nobody writes them during the
        // borrow: other sharers only read shared bytes (module docs) and this handle is borrowed.
        unsafe {
            let (start, len) = segment_data(self.ptr.as_ptr());
            std::slice::from_raw_parts(start, len)
        }
    }
}

impl AsMut<[u8]> for Mbuf {
    /// The writable prefix of the first segment's data: `data[..writable_len()]`.
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        let len = self.writable_len();
        // SAFETY: the first `len` data bytes are within the segment (len <= data_len) and no
        // other mbuf can read or write them: either the buffer is exclusive (refcount 1,
        // direct), or a frozen limit marks bytes no sharer's window covers. The &mut borrow
        // of self excludes access through this handle.
        unsafe {
            let (start, _) = segment_data(self.ptr.as_ptr());
            std::slice::from_raw_parts_mut(start, len)
        }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("pkt_len", &self.pkt_len())
            .field("data_len", &self.data_len())
            .field("nb_segs", &self.nb_segs())
            .field("writable_len", &self.writable_len())
            .field("port", &self.port())
            .finish()
    }
}

/// Iterator over a packet's segments' bytes; see [`Mbuf::segments`].
#[derive(Debug)]
pub struct Segments<'a> {
    next: *mut sys::rte_mbuf,
    _packet: PhantomData<&'a Mbuf>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let segment = self.next;
        if segment.is_null() {
            return None;
        }
        // SAFETY: segment belongs to the chain of an Mbuf borrowed for 'a, so it stays valid and
        // its data unwritten (by anyone: module docs) for 'a.
        unsafe {
            self.next = (*segment).next;
            let (start, len) = segment_data(segment);
            Some(std::slice::from_raw_parts(start, len))
        }
    }
}
