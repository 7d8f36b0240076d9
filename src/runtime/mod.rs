//! runtime: the small pieces every stage shares, so that each is written
//! once: [`Backoff`] for every retry loop, [`Outage`] for "warn once, then
//! say when it recovered", [`lock`] for a mutex that a panicked holder must
//! not wedge, and [`now_ms`] for wall-clock stamps.
//!
//! Must never: hold policy of its own (how long a stage retries, what it
//! logs): the callers decide; these types only keep the arithmetic and the
//! bookkeeping in one place.

mod backoff;

pub use backoff::{Backoff, Outage};

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if a panicking thread poisoned it: every
/// value behind our mutexes is a report or a queue that stays consistent
/// between statements, so a panic elsewhere must not stop delivery.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
