//! Sans-IO resilience building blocks for the signaling lane's L7 proxy: load balancing,
//! outlier ejection, circuit-breaker limits and retry budgets.
//!
//! Every type is `Send + Sync` and shared by the per-CPU runtimes through `Arc`; the hot path
//! is atomics only. Time is always an argument (`now: Instant`), randomness too (`rand: u64`),
//! so the proxy decides where the clock and the RNG come from and tests run on exact times.
//!
//! How the proxy uses them for one request to a service:
//!
//! 1. `budget.deposit(now)` — the request is an original, it earns retry budget.
//! 2. `breaker.try_request()` — refuse fast (503, `Overflow::as_str()` as metrics label) when
//!    the service is at its limit; keep the permit until the response is done.
//! 3. `balancer.pick(now, rand)` — power of two choices among endpoints in rotation.
//! 4. `endpoint.start(now)` — counts the request in flight (raises the endpoint's cost);
//!    waiting for a pooled connection holds `try_pending()`, opening one `try_connection()`.
//! 5. `in_flight.finish(now, outcome)` — records latency, feeds outlier detection; log and
//!    count the returned [`Ejection`] if any. Dropping the guard means cancelled.
//! 6. On a retryable failure: `budget.try_withdraw(now)` and `breaker.try_retry()` (plus a new
//!    `try_request()`), then `balancer.pick_excluding(now, rand, failed.addr())` and repeat
//!    from 4. If the budget or breaker says no, return the failure as it is.
//!
//! Active health checks call [`Endpoint::set_health`]; `/metrics` and the admin view read
//! [`Endpoint::snapshot`], [`Balancer::is_panic`] and [`Breaker::counts`].

pub mod balance;
pub mod breaker;
pub mod budget;
pub mod endpoint;

pub use balance::Balancer;
pub use breaker::{
    Breaker, BreakerCounts, ConnectionPermit, Limits, Overflow, PendingPermit, RequestPermit,
    RetryPermit,
};
pub use budget::RetryBudget;
pub use endpoint::{
    Ejection, Endpoint, EndpointSnapshot, InFlight, Outcome, OutlierPolicy, DEFAULT_RTT_PRIOR,
    EWMA_DECAY,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        assert_send_sync::<Endpoint>();
        assert_send_sync::<InFlight>();
        assert_send_sync::<Balancer>();
        assert_send_sync::<Breaker>();
        assert_send_sync::<RequestPermit>();
        assert_send_sync::<RetryBudget>();
    }
}
