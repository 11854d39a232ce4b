//! EAL lifetime: one initialisation per process, cleanup when the last user is gone, and lcore
//! ids for our own worker threads.

use std::cell::Cell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use popmesh_dpdk_sys as sys;

use crate::error::{eal_init_hint, rte_errno, strerror, thread_register_hint, Error};

/// Set by the first `Eal::init` that reaches `rte_eal_init`; never cleared, because DPDK cannot
/// initialise twice in a process (not after a failure, not after `rte_eal_cleanup`).
static EAL_INIT_ATTEMPTED: AtomicBool = AtomicBool::new(false);

/// Program name handed to EAL as `argv[0]`; it only shows up in EAL's log lines.
const PROGRAM_NAME: &str = "popmesh";

/// A handle on the process's initialised DPDK Environment Abstraction Layer.
///
/// Cloning is cheap (an `Arc`). `rte_eal_cleanup` runs when the last `Eal` clone is dropped,
/// and every [`Mempool`](crate::Mempool), [`Port`](crate::Port), queue and
/// [`ThreadRegistration`] holds a clone, so cleanup never runs under them.
#[derive(Clone, Debug)]
pub struct Eal {
    inner: Arc<EalInner>,
}

struct EalInner {
    /// Ports opened through a [`Port`](crate::Port) handle; a second open of the same port
    /// would let two owners configure and close it under each other.
    open_ports: Mutex<Vec<u16>>,
}

impl std::fmt::Debug for EalInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EalInner")
            .field("open_ports", &*self.lock_open_ports())
            .finish()
    }
}

impl EalInner {
    fn lock_open_ports(&self) -> MutexGuard<'_, Vec<u16>> {
        // The list stays consistent even if a holder panicked: every critical section is a
        // single push/retain.
        self.open_ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: this is the last Eal handle, and pools, ports, queues and thread
        // registrations each hold one, so none of them is alive: nothing DPDK-owned is in use.
        // (A pool that had to be leaked with mbufs outstanding leaks its Eal clone too, so
        // cleanup never runs under live mbufs.) EAL was initialised, as an EalInner exists.
        unsafe {
            sys::rte_eal_cleanup();
        }
    }
}

impl Eal {
    /// Initialises DPDK's EAL with `args` (EAL options only, without a program name: e.g.
    /// `["-l", "0-1", "--no-pci", "--vdev=net_af_xdp0,iface=eth1"]`).
    ///
    /// The calling thread becomes EAL's main lcore: EAL pins it to that lcore's core and gives
    /// it lcore id 0 (or `--main-lcore`). EAL keeps pointers into the argument strings, which
    /// are therefore leaked (a few bytes, once per process).
    ///
    /// # Errors
    /// - [`Error::AlreadyInitialised`] on every call after the first that reached DPDK, whether
    ///   that one succeeded or failed: DPDK allows one `rte_eal_init` per process.
    /// - [`Error::NulInArgument`] if an argument holds a NUL byte (EAL untouched; may retry).
    /// - [`Error::EalInit`] with DPDK's reason and a fix if `rte_eal_init` fails.
    pub fn init<I, S>(args: I) -> Result<Eal, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut owned = vec![CString::new(PROGRAM_NAME).expect("program name has no NUL")];
        for arg in args {
            let arg = arg.as_ref();
            let c = CString::new(arg).map_err(|_| Error::NulInArgument {
                arg: arg.to_owned(),
            })?;
            owned.push(c);
        }
        let argc = c_int::try_from(owned.len()).expect("fewer than 2^31 EAL arguments");
        if EAL_INIT_ATTEMPTED.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyInitialised);
        }
        // EAL may keep pointers to the strings (and permutes argv) for the life of the process.
        let mut argv: Vec<*mut c_char> = owned
            .into_iter()
            .map(|arg| arg.into_raw())
            .collect::<Vec<_>>();
        argv.push(std::ptr::null_mut());
        let argv = argv.leak();
        // SAFETY: argv holds argc valid NUL-terminated strings plus a NULL terminator, all
        // leaked so they outlive EAL; EAL_INIT_ATTEMPTED guarantees this is the only
        // rte_eal_init call in the process.
        let parsed = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if parsed < 0 {
            let errno = rte_errno();
            return Err(Error::EalInit {
                errno,
                reason: strerror(errno),
                hint: eal_init_hint(errno),
            });
        }
        Ok(Eal {
            inner: Arc::new(EalInner {
                open_ports: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The DPDK version string, e.g. `"DPDK 22.11.11"`. Needs no initialised EAL.
    pub fn version() -> String {
        // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
        unsafe { CStr::from_ptr(sys::rte_version()) }
            .to_string_lossy()
            .into_owned()
    }

    /// Number of NUMA sockets EAL detected.
    pub fn socket_count(&self) -> u32 {
        // SAFETY: EAL is initialised (self exists); reads EAL's static configuration.
        unsafe { sys::rte_socket_count() }
    }

    /// The NUMA socket the port's device is attached to, or `None` if the port does not exist or
    /// the device does not know (virtual devices usually report the socket they were created on).
    pub fn socket_id_of_port(&self, port_id: u16) -> Option<u32> {
        // SAFETY: EAL is initialised; the call only reads ethdev's port table.
        if unsafe { sys::rte_eth_dev_is_valid_port(port_id) } == 0 {
            // DPDK 22.11's rte_eth_dev_socket_id dereferences the port's data pointer before
            // validating it, and crashes on a port id that was never allocated.
            return None;
        }
        // SAFETY: EAL is initialised and port_id names an allocated port (checked above).
        let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
        u32::try_from(socket).ok()
    }

    /// Gives the calling thread (one of ours, not an EAL lcore) an lcore id, so per-lcore
    /// mempool caches and lcore-aware DPDK code work on it. Hold the guard for as long as the
    /// thread does DPDK work; dropping it (on this thread: the guard is not `Send`) releases the
    /// lcore id with `rte_thread_unregister`.
    ///
    /// A thread that already has an lcore id (EAL's own lcores, or a thread registered by an
    /// outer guard) gets a guard that reports that id and releases nothing.
    ///
    /// # Errors
    /// [`Error::ThreadRegister`] when no lcore id is free or multi-process mode forbids it.
    pub fn register_thread(&self) -> Result<ThreadRegistration, Error> {
        // SAFETY: reads the calling thread's lcore id (a thread-local).
        let current = unsafe { sys::popmesh_lcore_id() };
        if current != sys::LCORE_ID_ANY {
            return Ok(ThreadRegistration::new(self.clone(), current, false));
        }
        // SAFETY: EAL is initialised; the thread has no lcore id (checked above), so
        // registering cannot clobber one.
        if unsafe { sys::rte_thread_register() } != 0 {
            let errno = rte_errno();
            return Err(Error::ThreadRegister {
                errno,
                reason: strerror(errno),
                hint: thread_register_hint(errno),
            });
        }
        // SAFETY: as above.
        let lcore_id = unsafe { sys::popmesh_lcore_id() };
        Ok(ThreadRegistration::new(self.clone(), lcore_id, true))
    }

    /// Records that a [`Port`](crate::Port) handle owns `port_id`; false if one already does.
    pub(crate) fn claim_port(&self, port_id: u16) -> bool {
        let mut open = self.inner.lock_open_ports();
        if open.contains(&port_id) {
            return false;
        }
        open.push(port_id);
        true
    }

    /// Forgets the owner of `port_id` after the port was closed.
    pub(crate) fn release_port(&self, port_id: u16) {
        self.inner.lock_open_ports().retain(|&p| p != port_id);
    }
}

/// Proof that the current thread has an EAL lcore id; see [`Eal::register_thread`].
///
/// Not `Send`: the registration belongs to the thread that made it and must be undone there.
#[derive(Debug)]
pub struct ThreadRegistration {
    /// Keeps EAL alive while the thread is registered.
    _eal: Eal,
    lcore_id: u32,
    /// True when this guard made the registration and so must undo it.
    owned: bool,
    _not_send: PhantomData<*const Cell<()>>,
}

impl ThreadRegistration {
    fn new(eal: Eal, lcore_id: u32, owned: bool) -> Self {
        ThreadRegistration {
            _eal: eal,
            lcore_id,
            owned,
            _not_send: PhantomData,
        }
    }

    /// The lcore id the thread runs as.
    pub fn lcore_id(&self) -> u32 {
        self.lcore_id
    }

    /// Whether this guard registered the thread (and unregisters it on drop), as opposed to
    /// finding an existing lcore id.
    pub fn is_owner(&self) -> bool {
        self.owned
    }
}

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: the guard is !Send, so this runs on the thread that registered, and EAL
            // is still initialised (the guard holds an Eal clone).
            unsafe { sys::rte_thread_unregister() };
        }
    }
}
