//! Circuit-breaker limits per service (Envoy's `circuit_breakers.thresholds`): caps on
//! concurrent upstream connections, requests waiting for a connection, active requests and
//! active retries. Acquiring is a compare-exchange loop on one atomic, so a count never exceeds
//! its limit, even for an instant, whatever the number of CPUs acquiring at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Caps for one service. `0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Upstream connections open (or being opened) at once.
    pub max_connections: u32,
    /// Requests waiting for a connection from the pool at once.
    pub max_pending_requests: u32,
    /// Requests in flight to the service at once (retries included).
    pub max_requests: u32,
    /// Retries in flight at once.
    pub max_retries: u32,
}

/// Which limit refused a permit. `Display` is a message for operators; [`Overflow::as_str`] is
/// the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    /// [`Limits::max_connections`] reached.
    #[error("service at its limit of {limit} upstream connections")]
    Connections {
        /// The limit in force.
        limit: u32,
    },
    /// [`Limits::max_pending_requests`] reached.
    #[error("service at its limit of {limit} requests waiting for a connection")]
    PendingRequests {
        /// The limit in force.
        limit: u32,
    },
    /// [`Limits::max_requests`] reached.
    #[error("service at its limit of {limit} active requests")]
    Requests {
        /// The limit in force.
        limit: u32,
    },
    /// [`Limits::max_retries`] reached.
    #[error("service at its limit of {limit} active retries")]
    Retries {
        /// The limit in force.
        limit: u32,
    },
}

impl Overflow {
    /// Metrics label: `connections`, `pending_requests`, `requests` or `retries`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Overflow::Connections { .. } => "connections",
            Overflow::PendingRequests { .. } => "pending_requests",
            Overflow::Requests { .. } => "requests",
            Overflow::Retries { .. } => "retries",
        }
    }

    /// The limit that was reached.
    pub fn limit(&self) -> u32 {
        match *self {
            Overflow::Connections { limit }
            | Overflow::PendingRequests { limit }
            | Overflow::Requests { limit }
            | Overflow::Retries { limit } => limit,
        }
    }
}

/// Current counts of a [`Breaker`] (each read atomically, not all at the same instant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerCounts {
    /// Connection permits held.
    pub connections: u32,
    /// Pending-request permits held.
    pub pending_requests: u32,
    /// Request permits held.
    pub requests: u32,
    /// Retry permits held.
    pub retries: u32,
}

#[derive(Debug, Default)]
struct Gauge {
    count: AtomicU32,
    limit: AtomicU32,
}

impl Gauge {
    fn try_acquire(&self) -> Result<(), u32> {
        let mut cur = self.count.load(Ordering::Relaxed);
        loop {
            let limit = self.limit.load(Ordering::Relaxed);
            if limit != 0 && cur >= limit {
                return Err(limit);
            }
            match self.count.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Circuit breaker of one service, shared by all CPUs as `Arc<Breaker>`.
#[derive(Debug, Default)]
pub struct Breaker {
    connections: Gauge,
    pending: Gauge,
    requests: Gauge,
    retries: Gauge,
}

macro_rules! permit {
    ($(#[$doc:meta])* $name:ident, $field:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        #[must_use = "the permit is released when dropped"]
        pub struct $name {
            breaker: Arc<Breaker>,
        }

        impl $name {
            /// The breaker this permit counts against.
            pub fn breaker(&self) -> &Arc<Breaker> {
                &self.breaker
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.breaker.$field.release();
            }
        }
    };
}

permit!(
    /// One upstream connection counted against [`Limits::max_connections`]; released on drop.
    ConnectionPermit,
    connections
);
permit!(
    /// One request waiting for a connection, counted against
    /// [`Limits::max_pending_requests`]; released on drop.
    PendingPermit,
    pending
);
permit!(
    /// One active request counted against [`Limits::max_requests`]; released on drop.
    RequestPermit,
    requests
);
permit!(
    /// One active retry counted against [`Limits::max_retries`]; released on drop. A retry
    /// also needs a [`RequestPermit`].
    RetryPermit,
    retries
);

impl Breaker {
    /// A breaker with `limits` and all counts at zero.
    pub fn new(limits: Limits) -> Breaker {
        let b = Breaker::default();
        b.set_limits(limits);
        b
    }

    /// Apply new limits (config reload). Current permits stay valid; if a count is above its
    /// new limit, new permits are refused until enough are released. The four limits are
    /// stored one after the other, not as one atomic change.
    pub fn set_limits(&self, limits: Limits) {
        self.connections
            .limit
            .store(limits.max_connections, Ordering::Relaxed);
        self.pending
            .limit
            .store(limits.max_pending_requests, Ordering::Relaxed);
        self.requests
            .limit
            .store(limits.max_requests, Ordering::Relaxed);
        self.retries
            .limit
            .store(limits.max_retries, Ordering::Relaxed);
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.connections.limit.load(Ordering::Relaxed),
            max_pending_requests: self.pending.limit.load(Ordering::Relaxed),
            max_requests: self.requests.limit.load(Ordering::Relaxed),
            max_retries: self.retries.limit.load(Ordering::Relaxed),
        }
    }

    /// Permit for one active request.
    ///
    /// # Errors
    /// [`Overflow::Requests`] when `max_requests` permits are held.
    pub fn try_request(self: &Arc<Self>) -> Result<RequestPermit, Overflow> {
        self.requests
            .try_acquire()
            .map_err(|limit| Overflow::Requests { limit })?;
        Ok(RequestPermit {
            breaker: Arc::clone(self),
        })
    }

    /// Permit for one request waiting for a pooled connection.
    ///
    /// # Errors
    /// [`Overflow::PendingRequests`] when `max_pending_requests` permits are held.
    pub fn try_pending(self: &Arc<Self>) -> Result<PendingPermit, Overflow> {
        self.pending
            .try_acquire()
            .map_err(|limit| Overflow::PendingRequests { limit })?;
        Ok(PendingPermit {
            breaker: Arc::clone(self),
        })
    }

    /// Permit for one active retry.
    ///
    /// # Errors
    /// [`Overflow::Retries`] when `max_retries` permits are held.
    pub fn try_retry(self: &Arc<Self>) -> Result<RetryPermit, Overflow> {
        self.retries
            .try_acquire()
            .map_err(|limit| Overflow::Retries { limit })?;
        Ok(RetryPermit {
            breaker: Arc::clone(self),
        })
    }

    /// Permit for one upstream connection.
    ///
    /// # Errors
    /// [`Overflow::Connections`] when `max_connections` permits are held.
    pub fn try_connection(self: &Arc<Self>) -> Result<ConnectionPermit, Overflow> {
        self.connections
            .try_acquire()
            .map_err(|limit| Overflow::Connections { limit })?;
        Ok(ConnectionPermit {
            breaker: Arc::clone(self),
        })
    }

    /// Current counts, for metrics and the admin view.
    pub fn counts(&self) -> BreakerCounts {
        BreakerCounts {
            connections: self.connections.count.load(Ordering::Relaxed),
            pending_requests: self.pending.count.load(Ordering::Relaxed),
            requests: self.requests.count.load(Ordering::Relaxed),
            retries: self.retries.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(c: u32, p: u32, r: u32, t: u32) -> Limits {
        Limits {
            max_connections: c,
            max_pending_requests: p,
            max_requests: r,
            max_retries: t,
        }
    }

    #[test]
    fn refuses_at_limit_and_releases_on_drop() {
        let b = Arc::new(Breaker::new(limits(1, 2, 3, 1)));
        let r: Vec<_> = (0..3).map(|_| b.try_request().unwrap()).collect();
        let err = b.try_request().unwrap_err();
        assert_eq!(err, Overflow::Requests { limit: 3 });
        assert_eq!(err.as_str(), "requests");
        assert_eq!(err.to_string(), "service at its limit of 3 active requests");
        let _t = b.try_retry().unwrap();
        assert_eq!(b.try_retry().unwrap_err().as_str(), "retries");
        let _c = b.try_connection().unwrap();
        assert_eq!(b.try_connection().unwrap_err().as_str(), "connections");
        let _p1 = b.try_pending().unwrap();
        let _p2 = b.try_pending().unwrap();
        let e = b.try_pending().unwrap_err();
        assert_eq!(e.as_str(), "pending_requests");
        assert_eq!(e.limit(), 2);
        assert_eq!(
            b.counts(),
            BreakerCounts {
                connections: 1,
                pending_requests: 2,
                requests: 3,
                retries: 1
            }
        );
        drop(r);
        assert_eq!(b.counts().requests, 0);
        assert!(b.try_request().is_ok());
    }

    #[test]
    fn zero_is_unlimited() {
        let b = Arc::new(Breaker::new(Limits::default()));
        let held: Vec<_> = (0..10_000).map(|_| b.try_request().unwrap()).collect();
        assert_eq!(b.counts().requests, 10_000);
        drop(held);
        assert_eq!(b.counts().requests, 0);
    }

    #[test]
    fn set_limits_keeps_counts() {
        let b = Arc::new(Breaker::new(limits(0, 0, 5, 0)));
        let held: Vec<_> = (0..5).map(|_| b.try_request().unwrap()).collect();
        b.set_limits(limits(0, 0, 2, 0));
        assert_eq!(b.counts().requests, 5);
        let mut held = held;
        held.truncate(2);
        assert!(b.try_request().is_err(), "still at the new limit");
        held.pop();
        assert!(b.try_request().is_ok());
    }

    #[test]
    fn concurrent_acquire_never_exceeds_limit() {
        let b = Arc::new(Breaker::new(limits(0, 0, 7, 0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    let mut max_seen = 0;
                    let mut granted = 0u32;
                    for _ in 0..20_000 {
                        if let Ok(p) = b.try_request() {
                            granted += 1;
                            max_seen = max_seen.max(b.counts().requests);
                            drop(p);
                        }
                    }
                    (max_seen, granted)
                })
            })
            .collect();
        for t in threads {
            let (max_seen, granted) = t.join().unwrap();
            assert!(max_seen <= 7, "{max_seen}");
            assert!(granted > 0);
        }
        assert_eq!(b.counts(), BreakerCounts::default());
    }

    #[test]
    fn permits_move_into_threads() {
        let b = Arc::new(Breaker::new(limits(0, 0, 1, 0)));
        let p = b.try_request().unwrap();
        std::thread::spawn(move || drop(p)).join().unwrap();
        assert_eq!(b.counts().requests, 0);
    }

    proptest! {
        #[test]
        fn counts_bounded_and_return_to_zero(
            limit in 0u32..10,
            ops in proptest::collection::vec((any::<bool>(), 0usize..16), 1..200),
        ) {
            let b = Arc::new(Breaker::new(limits(limit, limit, limit, limit)));
            let mut held: Vec<RetryPermit> = Vec::new();
            for (acquire, idx) in ops {
                if acquire {
                    match b.try_retry() {
                        Ok(p) => held.push(p),
                        Err(e) => {
                            prop_assert!(limit != 0);
                            prop_assert_eq!(held.len() as u32, limit);
                            prop_assert_eq!(e.limit(), limit);
                        }
                    }
                } else if !held.is_empty() {
                    drop(held.swap_remove(idx % held.len()));
                }
                prop_assert_eq!(b.counts().retries, held.len() as u32);
                prop_assert!(limit == 0 || b.counts().retries <= limit);
            }
            drop(held);
            prop_assert_eq!(b.counts(), BreakerCounts::default());
        }
    }
}
