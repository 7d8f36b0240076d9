//! forwarder: owns delivery from the spool to Kafka and the spool's durable
//! cursor. Runs on a dedicated thread. Each [`Session`] sends with one
//! Kafka [`Client`] (`kafka.client`, see [`KafkaClient`]): the
//! [`native`] producer (the default) or an rdkafka
//! [`BaseProducer`](rdkafka::producer::BaseProducer) that it polls itself,
//! so delivery reports arrive on this thread. Both are acks=all and
//! idempotent, and neither gives up on a line: a failure ends the session
//! and the next one resends from the cursor. [`Forwarder::run`] starts sessions one after another, backing
//! off between rebuilds.
//!
//! Invariants (the crash-safety argument):
//! - The cursor written to the store only moves over lines whose delivery
//!   Kafka acknowledged ([`AckTracker::advance`] takes the longest fully
//!   acknowledged prefix; a partly acknowledged frame records how many of
//!   its leading lines are done, which is exact because all lines of a frame
//!   share one key, hence one partition, whose acks arrive in order).
//! - The cursor is made durable ([`Store::flush`]) before any segment before
//!   it is deleted (invariant 3 of the [`spool`](crate::spool)).
//! - With the cursor, the delivery ledger is persisted atomically; each
//!   session first reads back the identities of our messages Kafka has
//!   past it (the [`ledger`](crate::kafka::ledger)), so lines acknowledged
//!   after the last cursor write (at most [`CURSOR_EVERY`] ago) or sent but
//!   never answered before a crash are skipped, not resent; a line is
//!   skipped only if its identity was found.
//! - A line that Kafka permanently refuses (e.g. larger than the broker
//!   allows) is written to `data_dir/dead-letter.jsonl` with an error log
//!   before the cursor passes it; it is never silently dropped, and only a
//!   line Kafka refused alone in its batch is. (The native producer sends
//!   a large line alone; with either client, when Kafka refuses a batch
//!   that may hold several lines, the session ends and batches shrink
//!   until the refused line is alone, see [`BatchSize`].) Any other
//!   failure rebuilds the client and resends from the cursor.
//!
//! Must never: advance the cursor on a send that was merely queued, or
//! delete a segment before the cursor past it is durable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use crate::config::KafkaClient;
use crate::config::KafkaConfig;
use crate::kafka::client::CLOCK_HINT;
use crate::kafka::native;
use crate::kafka::session::{Session, SessionEnd};
#[cfg(doc)]
use crate::kafka::{acks::AckTracker, client::Client};
use crate::runtime::{lock, Backoff};
use crate::spool::{Spool, SpoolError};
use crate::store::{Store, StoreError};

/// Kept at its old path: the librdkafka settings, built in
/// [`crate::kafka::librdkafka`].
pub use crate::kafka::librdkafka::client_config;

/// How often the cursor is written and flushed to the store.
pub const CURSOR_EVERY: Duration = Duration::from_millis(100);
/// How long smaller batches are kept after Kafka refused a whole batch.
const BATCH_RESTORE: Duration = Duration::from_secs(300);

/// Why the forwarder stopped.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the forwarder thread ended without a result (it panicked)")]
    Stopped,
    #[error("cannot write dead-letter file {path}: {source}")]
    DeadLetter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the forwarder last learnt about the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrokerState {
    /// Nothing yet.
    #[default]
    Unknown,
    /// A delivery succeeded.
    Up,
    /// A connection failed or broke (librdkafka said all brokers are down,
    /// or the native producer could not connect or lost a connection).
    Down,
    /// A broker answered but refused the TLS handshake or SASL
    /// authentication (a wrong password, an untrusted CA, an expired
    /// certificate): delivery waits and retries with back-off.
    AuthFailed,
}

impl BrokerState {
    /// The name `logcatch-ctl` shows: `unknown`, `up`, `down` or
    /// `auth_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerState::Unknown => "unknown",
            BrokerState::Up => "up",
            BrokerState::Down => "down",
            BrokerState::AuthFailed => "auth_failed",
        }
    }
}

/// A [`BrokerState`] that the forwarder thread (and librdkafka's) update
/// while the admin API reads it.
#[derive(Debug, Default)]
pub struct AtomicBrokerState(AtomicU8);

impl AtomicBrokerState {
    pub fn load(&self) -> BrokerState {
        match self.0.load(Ordering::Relaxed) {
            1 => BrokerState::Up,
            2 => BrokerState::Down,
            3 => BrokerState::AuthFailed,
            _ => BrokerState::Unknown,
        }
    }

    pub fn store(&self, state: BrokerState) {
        let v = match state {
            BrokerState::Unknown => 0,
            BrokerState::Up => 1,
            BrokerState::Down => 2,
            BrokerState::AuthFailed => 3,
        };
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Counters for `logcatch-ctl` and logs.
#[derive(Debug, Default)]
pub struct ForwardStats {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub producer_errors: AtomicU64,
    pub rebuilds: AtomicU64,
    /// When the oldest line not yet acknowledged was spooled (Unix ms, 0:
    /// none in flight).
    pub oldest_unacked_spooled_ms: AtomicU64,
    pub broker_state: AtomicBrokerState,
    pub last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardSnapshot {
    pub sent: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub producer_errors: u64,
    pub rebuilds: u64,
    pub oldest_unacked_spooled_ms: Option<u64>,
    /// unknown | up | down | auth_failed
    pub broker: &'static str,
    pub last_error: Option<String>,
}

impl ForwardStats {
    pub fn snapshot(&self) -> ForwardSnapshot {
        ForwardSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            producer_errors: self.producer_errors.load(Ordering::Relaxed),
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
            oldest_unacked_spooled_ms: Some(self.oldest_unacked_spooled_ms.load(Ordering::Relaxed))
                .filter(|v| *v > 0),
            broker: self.broker_state.load().as_str(),
            last_error: lock(&self.last_error).clone(),
        }
    }
}

/// The clients' batch size (the native producer's, and librdkafka's
/// `batch.size`, see [`crate::kafka::librdkafka`]); cut to a quarter after
/// Kafka refuses a batch of several lines, so a refused line ends up alone and is
/// dead-lettered instead of blocking the rest, and back to full size
/// [`BATCH_RESTORE`] later.
struct BatchSize {
    bytes: usize,
    shrunk_at: Option<Instant>,
}

impl BatchSize {
    fn full() -> BatchSize {
        BatchSize {
            bytes: native::BATCH_BYTES,
            shrunk_at: None,
        }
    }

    /// The size for the next session.
    fn current(&mut self) -> usize {
        if self.shrunk_at.is_some_and(|t| t.elapsed() >= BATCH_RESTORE) {
            *self = BatchSize::full();
            tracing::info!(batch_bytes = self.bytes, "back to full-size batches");
        }
        self.bytes
    }

    fn shrink(&mut self) {
        // Down to 0: every line alone, so a refused one is dead-lettered
        // by itself and the rest go through.
        self.bytes = if self.bytes > 4096 { self.bytes / 4 } else { 0 };
        self.shrunk_at = Some(Instant::now());
    }
}

/// How often a session failure identical to the one before is logged
/// again (it is in `last_error`, hence `logcatch-ctl status`, every time).
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The last session failure logged, so that one that repeats (a host clock
/// ahead, a missing ACL) is logged once a minute, not at every rebuild.
#[derive(Default)]
struct Repeats {
    last: Option<(String, Instant)>,
    /// Failures like the last one logged, not logged since.
    quiet: u64,
}

impl Repeats {
    /// Whether to log failure `why` now: `Some(n)` with how many like it
    /// were not logged since it last was.
    fn log(&mut self, why: &str) -> Option<u64> {
        match &self.last {
            Some((w, at)) if w == why && at.elapsed() < REPEAT_LOG_EVERY => {
                self.quiet += 1;
                None
            }
            _ => {
                let repeated = if self.last.as_ref().is_some_and(|(w, _)| w == why) {
                    self.quiet
                } else {
                    0
                };
                self.last = Some((why.to_string(), Instant::now()));
                self.quiet = 0;
                Some(repeated)
            }
        }
    }
}

pub struct Forwarder {
    /// The Kafka settings; a new value (config reload) rebuilds the
    /// producer between sessions.
    pub kafka: tokio::sync::watch::Receiver<KafkaConfig>,
    pub spool: Spool,
    pub store: Store,
    pub host: String,
    pub data_dir: PathBuf,
    pub stats: Arc<ForwardStats>,
    /// Tokio handle, for the admin client's futures.
    pub runtime: tokio::runtime::Handle,
}

impl Forwarder {
    /// Runs until `finish` is cancelled and the spool is drained (or the
    /// shutdown deadline passes).
    pub fn run(self, finish: CancellationToken) -> Result<(), ForwardError> {
        // Rebuilds wait 200 ms, doubling up to 5 s; a shutdown or new
        // settings cut the wait short.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut kafka_rx = self.kafka.clone();
        let mut batch = BatchSize::full();
        let mut repeats = Repeats::default();
        tracing::info!(client = %kafka_rx.borrow().client, brokers = %kafka_rx.borrow().brokers,
            "forwarding to Kafka (acks=all, idempotent)");
        loop {
            let kafka = kafka_rx.borrow_and_update().clone();
            let batch_bytes = batch.current();
            match self.session(&kafka, &kafka_rx, &finish, batch_bytes)? {
                SessionEnd::Done => return Ok(()),
                SessionEnd::Reconfigure => {
                    tracing::info!(brokers = %kafka_rx.borrow().brokers, "Kafka settings changed; rebuilding the producer from the spool cursor");
                    backoff.reset();
                }
                SessionEnd::Rebuild(why) => {
                    self.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
                    *lock(&self.stats.last_error) = Some(why.clone());
                    if finish.is_cancelled() {
                        tracing::warn!(error = %why, "Kafka unreachable while stopping; what is not delivered stays in the spool for the next start");
                        return Ok(());
                    }
                    if let Some(repeated) = repeats.log(&why) {
                        if why.contains(CLOCK_HINT) {
                            tracing::error!(error = %why, repeated, "Kafka refuses this host's timestamps; retrying with back-off (nothing is dropped)");
                        } else {
                            tracing::warn!(error = %why, repeated, "Kafka producer failed; rebuilding it and resending from the spool cursor");
                        }
                    }
                    backoff
                        .sleep(|| finish.is_cancelled() || kafka_rx.has_changed().unwrap_or(false));
                }
                SessionEnd::SmallerBatches(why) => {
                    batch.shrink();
                    tracing::warn!(error = %why, batch_bytes = batch.bytes,
                        "Kafka refused a whole batch; resending from the spool cursor in smaller batches");
                }
                SessionEnd::Resume(why) => {
                    tracing::info!(reason = %why, "going on from the spool cursor with a new producer");
                }
            }
        }
    }

    /// One session with the client `kafka` asks for, from the durable
    /// cursor until it ends.
    fn session(
        &self,
        kafka: &KafkaConfig,
        kafka_rx: &tokio::sync::watch::Receiver<KafkaConfig>,
        finish: &CancellationToken,
        batch_bytes: usize,
    ) -> Result<SessionEnd, ForwardError> {
        match Session::open(self, kafka, kafka_rx, finish, batch_bytes)? {
            std::ops::ControlFlow::Continue(session) => session.run(),
            std::ops::ControlFlow::Break(end) => Ok(end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session failure identical to the last one logged is not logged
    /// again within a minute; a different one is, at once.
    #[test]
    fn a_repeated_failure_is_logged_once_a_minute() {
        let mut r = Repeats::default();
        assert_eq!(r.log("clock"), Some(0));
        assert_eq!(r.log("clock"), None);
        assert_eq!(r.log("clock"), None);
        assert_eq!(r.log("acl"), Some(0));
        assert_eq!(r.log("clock"), Some(0));
        r.last.as_mut().expect("last").1 -= REPEAT_LOG_EVERY;
        r.quiet = 7;
        assert_eq!(r.log("clock"), Some(7), "a minute later, with the count");
    }

    #[test]
    fn broker_state_shows_as_unknown_up_or_down() {
        let stats = ForwardStats::default();
        assert_eq!(stats.snapshot().broker, "unknown");
        stats.broker_state.store(BrokerState::Up);
        assert_eq!(stats.snapshot().broker, "up");
        stats.broker_state.store(BrokerState::Down);
        assert_eq!(stats.snapshot().broker, "down");
        stats.broker_state.store(BrokerState::AuthFailed);
        assert_eq!(stats.snapshot().broker, "auth_failed");
        let json = serde_json::to_value(stats.snapshot()).unwrap();
        assert_eq!(json["broker"], "auth_failed");
    }

    #[test]
    fn refused_batches_shrink_to_a_quarter_then_to_lone_lines() {
        let mut b = BatchSize::full();
        assert_eq!(b.current(), native::BATCH_BYTES);
        b.shrink();
        assert_eq!(b.current(), native::BATCH_BYTES / 4);
        while b.current() > 4096 {
            b.shrink();
        }
        b.shrink();
        assert_eq!(b.current(), 0, "every line alone");
        // (A machine up for less than BATCH_RESTORE cannot go back so far.)
        if let Some(long_ago) = Instant::now().checked_sub(BATCH_RESTORE) {
            b.shrunk_at = Some(long_ago);
            assert_eq!(b.current(), native::BATCH_BYTES, "full size again later");
        }
    }
}
