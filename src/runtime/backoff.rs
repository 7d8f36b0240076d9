//! Backoff and Outage: the one way logcatch waits between retries and
//! reports a failure that lasts.
//!
//! Invariants: a delay never exceeds the cap (jitter only shortens it);
//! [`Backoff::sleep`] wakes within [`SLICE`] of its stop condition turning
//! true, so a retry loop never delays a shutdown or a reload by its delay.

use std::time::{Duration, Instant};

/// How often [`Backoff::sleep`] checks its stop condition.
pub const SLICE: Duration = Duration::from_millis(20);

/// Exponential back-off with a cap and jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
    /// Fraction of each delay that may be cut at random (0.0 = none).
    jitter: f64,
    seed: u64,
}

impl Backoff {
    /// Delays start at `first` and double up to `cap`, each cut by up to a
    /// fifth at random, so that many hosts retrying together spread out.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Backoff {
            first,
            cap: cap.max(first),
            next: first,
            jitter: 0.2,
            seed,
        }
    }

    /// The same delay every time, without jitter: a steady poll.
    pub fn fixed(every: Duration) -> Backoff {
        Backoff {
            jitter: 0.0,
            ..Backoff::new(every, every)
        }
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay to wait now; the one after it doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        if self.jitter <= 0.0 {
            return base;
        }
        // xorshift64: enough randomness to spread retries.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let r = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 - self.jitter * r)
    }

    /// Sleeps the next delay on this thread, returning early (`false`) as
    /// soon as `stop()` is true; `true` when the whole delay passed.
    pub fn sleep(&mut self, stop: impl Fn() -> bool) -> bool {
        let until = Instant::now() + self.next_delay();
        loop {
            if stop() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep(SLICE.min(until - now));
        }
    }
}

/// A failure that may last: the first failure is reported, repeats are
/// counted quietly, and the recovery is reported once with the count.
#[derive(Debug, Default)]
pub struct Outage {
    failures: u64,
}

impl Outage {
    /// Counts a failure; true when it is the first of this outage (log it).
    pub fn failed(&mut self) -> bool {
        self.failures += 1;
        self.failures == 1
    }

    /// Ends the outage; the number of failures if there was one (log the
    /// recovery), `None` if nothing had failed.
    pub fn recovered(&mut self) -> Option<u64> {
        Some(std::mem::take(&mut self.failures)).filter(|n| *n > 0)
    }

    /// Failures so far in this outage.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_only_shortens() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        for (got, base) in d.iter().zip([100u64, 200, 400, 400, 400]) {
            let base = Duration::from_millis(base);
            assert!(
                *got <= base && *got >= base.mul_f64(0.8),
                "{got:?} vs {base:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn fixed_backoff_never_varies() {
        let mut b = Backoff::fixed(Duration::from_millis(500));
        assert!((0..4).all(|_| b.next_delay() == Duration::from_millis(500)));
    }

    #[test]
    fn sleep_returns_early_when_told_to_stop() {
        let mut b = Backoff::fixed(Duration::from_secs(30));
        let t = Instant::now();
        assert!(!b.sleep(|| t.elapsed() > Duration::from_millis(50)));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn outage_reports_first_failure_and_recovery_once() {
        let mut o = Outage::default();
        assert_eq!(o.recovered(), None);
        assert!(o.failed());
        assert!(!o.failed());
        assert_eq!(o.failures(), 2);
        assert_eq!(o.recovered(), Some(2));
        assert_eq!(o.recovered(), None);
        assert!(o.failed());
    }
}
