//! Packet-buffer pools (`rte_pktmbuf_pool_create`) with RAII release.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use popmesh_dpdk_sys as sys;

use crate::error::{mempool_hint, rte_errno, strerror, Error};
use crate::mbuf::{Mbuf, BURST_CHUNK};
use crate::Eal;

/// Default data room per mbuf: 2048 bytes of packet plus [`HEADROOM`].
pub const DEFAULT_DATA_ROOM: u16 = sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;
/// Headroom DPDK reserves in front of the packet data of every fresh mbuf (part of the data
/// room), where [`Mbuf::prepend`] writes encapsulation headers.
pub const HEADROOM: u16 = sys::RTE_PKTMBUF_HEADROOM as u16;
/// Longest mempool name DPDK accepts, in bytes.
pub const MAX_NAME_LEN: usize = sys::RTE_MEMPOOL_NAMESIZE as usize - 1;
/// Largest per-lcore cache a mempool can have.
pub const MAX_CACHE_SIZE: u32 = sys::RTE_MEMPOOL_CACHE_MAX_SIZE;

/// A pool of packet mbufs. Cloning is cheap (an `Arc`); DPDK mempools are multi-producer /
/// multi-consumer safe, so handles may be used from any thread. Threads with an lcore id (EAL
/// lcores, or ones holding a [`ThreadRegistration`](crate::ThreadRegistration)) allocate and
/// free through a per-lcore cache; others go to the shared ring every time.
///
/// # Lifetime rule
/// A pool must outlive every mbuf taken from it and every port that receives into it. Mbufs do
/// not hold a pool handle (that would cost an atomic per packet); ports do. When the last handle
/// is dropped the pool is freed with `rte_mempool_free` only if all its mbufs are back
/// ([`in_use`](Self::in_use) is 0). Otherwise the pool (and EAL with it) is deliberately leaked,
/// so late frees stay valid. That check cannot see an mbuf being freed by another thread at that
/// very instant: drop the last handle after joining the threads that handled its mbufs, which is
/// the normal shutdown order.
#[derive(Clone, Debug)]
pub struct Mempool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    ptr: NonNull<sys::rte_mempool>,
    name: String,
    data_room: u16,
    /// Keeps EAL (and its memory) alive under the pool. `None` only while dropping.
    eal: Option<Eal>,
}

// SAFETY: an rte_mempool is built for concurrent use from many threads (MP/MC ring plus
// per-lcore caches indexed by the caller's own lcore id); PoolInner itself is immutable.
unsafe impl Send for PoolInner {}
// SAFETY: as above; every method takes &self and goes through DPDK's thread-safe entry points.
unsafe impl Sync for PoolInner {}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: the pool is live (this is its last handle).
        let in_use = unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) };
        if in_use == 0 {
            // SAFETY: last handle, no mbuf outstanding and no port holds the pool (ports hold
            // handles), so nothing references the pool any more.
            unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
        } else {
            // Mbufs are still out and will be freed into this pool later: keep the pool and EAL
            // memory mapped for good rather than free under them.
            std::mem::forget(self.eal.take());
        }
    }
}

impl Mempool {
    /// Creates a pool of `n_mbufs` packet mbufs with `data_room` bytes each (headroom included:
    /// use [`DEFAULT_DATA_ROOM`] for standard frames, 0 for a pool that only feeds
    /// [`Mbuf::clone_indirect`] and [`Mbuf::header_copy_chained`]'s clones), a per-lcore cache
    /// of `cache_size` mbufs, on NUMA `socket` (`None`: any).
    ///
    /// DPDK sizes pools best at 2^q - 1 mbufs and caches that divide `n_mbufs`.
    ///
    /// # Errors
    /// [`Error::MempoolName`] for an empty, over-long (> [`MAX_NAME_LEN`]) or NUL-holding name;
    /// [`Error::MempoolCreate`] when DPDK refuses (name taken, cache too large, out of memory),
    /// with the fix.
    pub fn new(
        eal: &Eal,
        name: &str,
        n_mbufs: u32,
        cache_size: u32,
        data_room: u16,
        socket: Option<u32>,
    ) -> Result<Mempool, Error> {
        let bad_name = |why| Error::MempoolName {
            name: name.to_owned(),
            why,
        };
        if name.is_empty() {
            return Err(bad_name("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad_name("DPDK limits mempool names to 25 bytes"));
        }
        let c_name = CString::new(name).map_err(|_| bad_name("it contains a NUL byte"))?;
        let socket_id = socket.map_or(sys::SOCKET_ID_ANY, |s| i32::try_from(s).unwrap_or(i32::MAX));
        // SAFETY: EAL is initialised (eal exists) and c_name is NUL-terminated; DPDK copies it.
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_name.as_ptr(),
                n_mbufs,
                cache_size,
                0,
                data_room,
                socket_id,
            )
        };
        let Some(ptr) = NonNull::new(ptr) else {
            let errno = rte_errno();
            return Err(Error::MempoolCreate {
                name: name.to_owned(),
                n_mbufs,
                cache_size,
                data_room,
                errno,
                reason: strerror(errno),
                hint: mempool_hint(errno),
            });
        };
        Ok(Mempool {
            inner: Arc::new(PoolInner {
                ptr,
                name: name.to_owned(),
                data_room,
                eal: Some(eal.clone()),
            }),
        })
    }

    /// Takes one mbuf (empty, one segment, full headroom), or `None` if the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is live while self exists.
        let ptr = unsafe { sys::popmesh_pktmbuf_alloc(self.as_ptr()) };
        // SAFETY: a non-null result is a fresh mbuf nobody else references; we take it.
        NonNull::new(ptr).map(|ptr| unsafe { Mbuf::from_raw(ptr) })
    }

    /// Appends exactly `n` fresh mbufs to `out` and returns true, or appends nothing and returns
    /// false when the pool cannot supply all `n`. Allocates only if `out` lacks capacity.
    #[inline]
    pub fn alloc_bulk(&self, out: &mut Vec<Mbuf>, n: usize) -> bool {
        let start = out.len();
        out.reserve(n);
        let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); BURST_CHUNK];
        let mut remaining = n;
        while remaining > 0 {
            let chunk = remaining.min(BURST_CHUNK);
            // SAFETY: the pool is live; raw has room for chunk (<= BURST_CHUNK) pointers.
            let rc = unsafe {
                sys::popmesh_pktmbuf_alloc_bulk(self.as_ptr(), raw.as_mut_ptr(), chunk as u32)
            };
            if rc != 0 {
                // All or nothing: return what earlier chunks took.
                out.truncate(start);
                return false;
            }
            for &ptr in &raw[..chunk] {
                // SAFETY: alloc_bulk succeeded, so each of the chunk pointers is a fresh,
                // non-null mbuf we now own.
                out.push(unsafe { Mbuf::from_raw(NonNull::new_unchecked(ptr)) });
            }
            remaining -= chunk;
        }
        true
    }

    /// Mbufs currently free in the pool (shared ring plus every lcore cache). Walks all lcore
    /// caches: for monitoring, not the per-packet path.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is live.
        unsafe { sys::rte_mempool_avail_count(self.as_ptr()) }
    }

    /// Mbufs currently taken from the pool (by us, by a PMD's RX ring or in flight on TX).
    /// Same cost as [`available`](Self::available).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is live.
        unsafe { sys::rte_mempool_in_use_count(self.as_ptr()) }
    }

    /// Total number of mbufs in the pool.
    pub fn capacity(&self) -> u32 {
        // SAFETY: the pool is live; `size` is set at creation and never changes.
        unsafe { (*self.as_ptr()).size }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Data room of each mbuf (headroom included), as given to [`Mempool::new`].
    pub fn data_room(&self) -> u16 {
        self.inner.data_room
    }

    /// The raw pool, for calls into `popmesh_dpdk_sys`. Valid while any handle exists.
    #[inline]
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.inner.ptr.as_ptr()
    }
}
