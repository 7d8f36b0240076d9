//! Shared helpers for the integration tests (`tests/integration/`), by
//! concern:
//! - [`broker`]: a throwaway one-node Apache Kafka (or tansu), and a TCP
//!   proxy in front of it that can simulate a broker outage;
//! - [`cluster`]: a three-node Apache Kafka cluster and the faults the
//!   cluster suite injects on its nodes (one cluster at a time);
//! - [`daemon`]: the config builder, the real `logcatch` daemon as a child
//!   process, and [`TestEnv`] (a temp dir and a broker of its own);
//! - [`ctl`]: `logcatch-ctl` and the admin endpoint (status, offsets,
//!   metrics);
//! - [`consume`]: reading a topic back ([`Consume`], one options builder);
//! - [`files`]: numbered lines, written to log files and read back from
//!   them, and the file operations the scenarios perform (truncate, replace
//!   by rename);
//! - [`delivery`]: checks over what was consumed (exactly once, file order);
//! - [`logrotate`]: logrotate's rotation modes and the application
//!   writing the log they rotate, for the rotation scenarios;
//! - [`lazyfs`]: a FUSE file system that forgets what was not fsync'd, for
//!   the power-loss tests;
//! - [`secure`]: a test PKI and a one-node Apache Kafka with TLS, mTLS,
//!   SASL_PLAINTEXT and SASL_SSL listeners.
//!
//! The integration tests are one crate, so this module is compiled once
//! and `dead_code` is checked over all of them: a helper no test uses
//! warns. The end-to-end bench (`benches/e2e.rs`) borrows the broker from
//! here too.

pub mod broker;
pub mod cluster;
pub mod consume;
pub mod ctl;
pub mod daemon;
pub mod delivery;
pub mod files;
pub mod lazyfs;
pub mod logrotate;
pub mod secure;

pub use broker::*;
pub use consume::*;
pub use ctl::*;
pub use daemon::*;
pub use delivery::*;
pub use files::*;

use std::net::TcpListener;
use std::ops::Range;
use std::thread;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race is possible,
/// which [`Broker::start`] absorbs by retrying).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a text.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

/// A small deterministic PRNG (xorshift64*) so tests need no extra crate.
/// Seed it from [`seed_from_env_or_time`] and print the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `range` (half-open).
    pub fn range(&mut self, range: Range<u64>) -> u64 {
        assert!(range.start < range.end);
        range.start + self.next_u64() % (range.end - range.start)
    }
}

/// `LOGCATCH_TEST_SEED` if set, else the clock.
pub fn seed_from_env_or_time() -> u64 {
    if let Ok(s) = std::env::var("LOGCATCH_TEST_SEED") {
        if let Ok(n) = s.trim().parse() {
            return n;
        }
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
