//! forwarder: owns delivery from the spool to Kafka and the spool's durable
//! cursor. Runs on a dedicated thread. A session sends with one Kafka
//! client (`kafka.client`): the native producer (`producer`, the default)
//! or an rdkafka `BaseProducer` that it polls itself, so delivery reports
//! arrive on this thread. Both are acks=all and idempotent, and neither
//! gives up on a line: a failure ends the session and the next one resends
//! from the cursor.
//!
//! Invariants (the crash-safety argument):
//! - The cursor written to the store only moves over lines whose delivery
//!   Kafka acknowledged (`AckTracker::advance` takes the longest fully
//!   acknowledged prefix; a partly acknowledged frame records how many of
//!   its leading lines are done, which is exact because all lines of a frame
//!   share one key, hence one partition, whose acks arrive in order).
//! - The cursor is made durable (`Store::flush`) before any segment before
//!   it is deleted (`spool` invariant 3).
//! - With the cursor, the delivery ledger is persisted atomically; each
//!   session first reads back what Kafka has past it (`ledger`), so lines
//!   acknowledged after the last cursor write (at most `CURSOR_EVERY` ago)
//!   or sent but never answered before a crash are skipped, not resent.
//! - A line that Kafka permanently refuses (e.g. larger than the broker
//!   allows) is written to `data_dir/dead-letter.jsonl` with an error log
//!   before the cursor passes it; it is never silently dropped. (The native
//!   producer sends a large line alone; when Kafka refuses a batch of
//!   several lines, batches shrink until the refused line is alone.) Any
//!   other failure rebuilds the client and resends from the cursor.
//!
//! Must never: advance the cursor on a send that was merely queued, or
//! delete a segment before the cursor past it is durable.

use std::collections::{BTreeSet, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaClient, KafkaConfig};
use crate::kafka::ledger::{self, DeliveryLedger, Redelivery, Verdict};
use crate::kafka::native::{self, Event, NativeProducer, ProducerError, ProducerSettings};
use crate::runtime::lock;
use crate::spool::{Position, ReadOutcome, Spool, SpoolBatch, SpoolCursor, SpoolError};
use crate::store::{Store, StoreError};

/// How often the cursor is written and flushed to the store.
pub const CURSOR_EVERY: Duration = Duration::from_millis(100);
/// How long smaller batches are kept after Kafka refused a whole batch.
const BATCH_RESTORE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("kafka client for {brokers}: {source}")]
    Kafka {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the forwarder thread ended without a result (it panicked)")]
    Stopped,
    #[error("dead-letter file {path}: {source}")]
    DeadLetter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    /// 0 unknown, 1 up (a delivery succeeded), 2 down (librdkafka said so).
    pub broker_state: std::sync::atomic::AtomicU8,
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
    /// unknown | up | down
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
            broker: match self.broker_state.load(Ordering::Relaxed) {
                1 => "up",
                2 => "down",
                _ => "unknown",
            },
            last_error: lock(&self.last_error).clone(),
        }
    }
}

struct InFlightFrame {
    spooled_ms: u64,
    source: String,
    topic: String,
    at: Position,
    next: Position,
    /// Lines in the frame, and how many of them are done (skipped because
    /// an earlier run delivered them, or acknowledged now).
    lines: u32,
    done: u32,
}

/// Tracks which sent lines Kafka acknowledged, frame by frame.
#[derive(Default)]
pub struct AckTracker {
    base: u64,
    frames: VecDeque<InFlightFrame>,
    cursor: Option<SpoolCursor>,
    /// Set when a delivery failed in a way that needs a producer rebuild.
    failed: Option<String>,
    /// Where each source's acknowledged lines are in Kafka.
    ledger: DeliveryLedger,
    /// An ack arrived since the progress was last written.
    dirty: bool,
}

impl AckTracker {
    fn push(&mut self, batch: &SpoolBatch, at: Position, next: Position, done: u32) -> u64 {
        self.frames.push_back(InFlightFrame {
            spooled_ms: batch.spooled_ms,
            source: batch.source.clone(),
            topic: batch.topic.clone(),
            at,
            next,
            lines: batch.lines.len() as u32,
            done,
        });
        self.base + self.frames.len() as u64 - 1
    }

    /// One more line of `frame` is in Kafka, at `at` (partition, offset)
    /// when known.
    fn ack(&mut self, frame: u64, at: Option<(i32, i64)>) {
        self.ack_lines(frame, 1, at);
    }

    /// `n` more lines of `frame` are in Kafka, the last at `at`.
    ///
    /// Once the session has failed, acks are no longer counted: `done`
    /// counts a frame's leading lines, which is only exact while its acks
    /// arrive in order with no line missing (a line whose dead-letter
    /// write failed is missing). Lines acknowledged but not counted are
    /// sent again by the next session, whose read-back skips them.
    fn ack_lines(&mut self, frame: u64, n: u32, at: Option<(i32, i64)>) {
        if self.failed.is_some() {
            return;
        }
        if let Some(f) = frame
            .checked_sub(self.base)
            .and_then(|i| self.frames.get_mut(i as usize))
        {
            f.done += n;
            if let Some((partition, offset)) = at {
                self.ledger.acked(&f.source, &f.topic, partition, offset);
            }
            self.dirty = true;
        }
    }

    /// The ledger to persist with the cursor `advance` just computed: lines
    /// done in frames after the front one are past the cursor.
    fn ledger_snapshot(&self) -> DeliveryLedger {
        let mut l = self.ledger.clone();
        l.clean = false;
        for e in l.entries.values_mut().flat_map(|t| t.values_mut()) {
            e.acked_beyond_cursor = 0;
        }
        for f in self.frames.iter().skip(1) {
            if let Some(e) = l.entry_mut(&f.source, &f.topic) {
                e.acked_beyond_cursor += f.done as u64;
            }
        }
        l
    }

    /// Moves the cursor over every fully acknowledged frame.
    fn advance(&mut self) -> Option<SpoolCursor> {
        while let Some(f) = self.frames.front() {
            if f.done < f.lines {
                break;
            }
            self.cursor = Some(SpoolCursor {
                segment: f.next.segment,
                position: f.next.pos,
                lines_done: 0,
            });
            self.frames.pop_front();
            self.base += 1;
        }
        if let Some(f) = self.frames.front() {
            if f.done > 0 {
                self.cursor = Some(SpoolCursor {
                    segment: f.at.segment,
                    position: f.at.pos,
                    lines_done: f.done,
                });
            }
        }
        self.cursor
    }

    fn in_flight(&self) -> usize {
        self.frames.len()
    }

    fn oldest_spooled_ms(&self) -> u64 {
        self.frames.front().map(|f| f.spooled_ms).unwrap_or(0)
    }
}

/// Where either client reports what happened to sent lines.
struct Delivery {
    tracker: Mutex<AckTracker>,
    stats: Arc<ForwardStats>,
    dead_letter: PathBuf,
}

/// A line Kafka refused for good, as the dead-letter file records it.
struct RefusedLine<'a> {
    source: &'a str,
    path: Option<&'a str>,
    offset: &'a str,
    topic: &'a str,
    line: &'a [u8],
}

impl Delivery {
    fn tracker(&self) -> std::sync::MutexGuard<'_, AckTracker> {
        lock(&self.tracker)
    }

    /// Writes a refused line to the dead-letter file; only then does it
    /// count as done (so the cursor can pass it).
    fn refused(&self, t: &mut AckTracker, frame: u64, r: RefusedLine<'_>, error: &str) {
        tracing::error!(source = r.source, offset = r.offset, topic = r.topic, error,
            dead_letter = %self.dead_letter.display(),
            "Kafka refused this line permanently; it is written to the dead-letter file");
        let entry = serde_json::json!({
            "source": r.source,
            "path": r.path,
            "offset": r.offset,
            "topic": r.topic,
            "error": error,
            "line": String::from_utf8_lossy(r.line),
        });
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dead_letter)
            .and_then(|mut f| {
                writeln!(f, "{entry}")?;
                f.sync_data()
            });
        match written {
            Ok(()) => {
                t.ack(frame, None);
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                t.failed = Some(format!(
                    "cannot write dead-letter file {}: {e}",
                    self.dead_letter.display()
                ));
            }
        }
    }

    /// Takes in the native producer's events.
    fn apply(&self, events: &mut Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut t = self.tracker();
        for e in events.drain(..) {
            match e {
                Event::Acked {
                    frame,
                    lines,
                    partition,
                    last_offset,
                } => {
                    t.ack_lines(frame, lines, last_offset.map(|o| (partition, o)));
                    self.stats
                        .delivered
                        .fetch_add(lines as u64, Ordering::Relaxed);
                    self.stats.broker_state.store(1, Ordering::Relaxed);
                }
                Event::Refused { frame, line, error } => {
                    let offset = line.offset.to_string();
                    let r = RefusedLine {
                        source: &line.source,
                        path: Some(&line.path),
                        offset: &offset,
                        topic: &line.topic,
                        line: &line.value,
                    };
                    self.refused(&mut t, frame, r, &error);
                }
            }
        }
    }
}

/// librdkafka's context: delivery reports go to the shared `Delivery`.
struct DeliveryContext(Arc<Delivery>);

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.0.stats.broker_state.store(2, Ordering::Relaxed);
        }
        tracing::warn!(error = %error, reason, "Kafka client error (librdkafka retries by itself)");
        *lock(&self.0.stats.last_error) = Some(format!("{error}: {reason}"));
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, frame: usize) {
        let d = &self.0;
        let mut t = d.tracker();
        match result {
            Ok(m) => {
                t.ack(frame as u64, Some((m.partition(), m.offset())));
                d.stats.delivered.fetch_add(1, Ordering::Relaxed);
                d.stats.broker_state.store(1, Ordering::Relaxed);
            }
            Err((err, msg)) => match err.rdkafka_error_code() {
                Some(RDKafkaErrorCode::PurgeQueue) | Some(RDKafkaErrorCode::PurgeInflight) => {
                    // Purged at shutdown: not delivered, resent next run.
                }
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidRecord,
                ) => {
                    let header = |k: &str| {
                        msg.headers().and_then(|h| {
                            use rdkafka::message::Headers;
                            h.iter()
                                .find(|x| x.key == k)
                                .and_then(|x| x.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        })
                    };
                    let (source, path, offset) =
                        (header("source"), header("path"), header("offset"));
                    let r = RefusedLine {
                        source: source.as_deref().unwrap_or_default(),
                        path: path.as_deref(),
                        offset: offset.as_deref().unwrap_or_default(),
                        topic: msg.topic(),
                        line: msg.payload().unwrap_or_default(),
                    };
                    d.refused(&mut t, frame as u64, r, &err.to_string());
                }
                _ => {
                    d.stats.producer_errors.fetch_add(1, Ordering::Relaxed);
                    t.failed = Some(err.to_string());
                }
            },
        }
    }
}

/// Builds the librdkafka settings: ours first, the operator's on top.
pub fn client_config(k: &KafkaConfig, host: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("client.id", format!("logcatch@{host}"))
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "0")
        .set("compression.type", &k.compression)
        .set("linger.ms", k.linger_ms.to_string())
        // Bounds what librdkafka holds (each queued line costs it a few
        // hundred bytes besides the line): the spool is the buffer, not RAM.
        .set("queue.buffering.max.kbytes", "8192")
        .set("queue.buffering.max.messages", "20000")
        .set("message.max.bytes", (300u64 << 20).to_string())
        .set("log_level", "4");
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
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
    /// shutdown deadline passes), or `abort` is cancelled.
    pub fn run(self, finish: CancellationToken) -> Result<(), ForwardError> {
        let mut backoff = Duration::from_millis(200);
        let mut kafka_rx = self.kafka.clone();
        // The native producer's batch size; halved after Kafka refuses a
        // batch of several lines, so a refused line ends up alone and is
        // dead-lettered instead of blocking the rest.
        let mut batch_bytes = native::BATCH_BYTES;
        let mut shrunk_at: Option<Instant> = None;
        tracing::info!(client = %kafka_rx.borrow().client, brokers = %kafka_rx.borrow().brokers,
            "forwarding to Kafka (acks=all, idempotent)");
        loop {
            let kafka = kafka_rx.borrow_and_update().clone();
            if shrunk_at.is_some_and(|t| t.elapsed() >= BATCH_RESTORE) {
                shrunk_at = None;
                batch_bytes = native::BATCH_BYTES;
                tracing::info!(batch_bytes, "back to full-size batches");
            }
            match self.session(&kafka, &mut kafka_rx, &finish, batch_bytes)? {
                SessionEnd::Done => return Ok(()),
                SessionEnd::Reconfigure => {
                    tracing::info!(brokers = %kafka_rx.borrow().brokers, "Kafka settings changed; rebuilding the producer from the spool cursor");
                    backoff = Duration::from_millis(200);
                }
                SessionEnd::Rebuild(why) => {
                    self.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
                    *lock(&self.stats.last_error) = Some(why.clone());
                    if finish.is_cancelled() {
                        tracing::warn!(error = %why, "Kafka unreachable while stopping; what is not delivered stays in the spool for the next start");
                        return Ok(());
                    }
                    tracing::warn!(error = %why, "Kafka producer failed; rebuilding it and resending from the spool cursor");
                    // Back off, but notice a shutdown or new settings at once.
                    let until = Instant::now() + backoff;
                    while Instant::now() < until
                        && !finish.is_cancelled()
                        && !kafka_rx.has_changed().unwrap_or(false)
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                SessionEnd::SmallerBatches(why) => {
                    // Down to 0: every line alone, so a refused one is
                    // dead-lettered by itself and the rest go through.
                    batch_bytes = if batch_bytes > 4096 {
                        batch_bytes / 4
                    } else {
                        0
                    };
                    shrunk_at = Some(Instant::now());
                    tracing::warn!(error = %why, batch_bytes,
                        "Kafka refused a whole batch; resending from the spool cursor in smaller batches");
                }
            }
        }
    }

    /// The Kafka client of one session.
    fn client(
        &self,
        kafka: &KafkaConfig,
        config: &ClientConfig,
        delivery: &Arc<Delivery>,
        batch_bytes: usize,
    ) -> Result<Client, SessionEnd> {
        match kafka.client {
            KafkaClient::Native => {
                let settings = ProducerSettings {
                    brokers: kafka.brokers.clone(),
                    client_id: format!("logcatch@{}", self.host),
                    lz4: kafka.compression == "lz4",
                    linger: Duration::from_millis(kafka.linger_ms),
                    batch_bytes,
                    allow_auto_create: !kafka.create_topics,
                };
                match NativeProducer::connect(settings, &self.host) {
                    Ok(p) => Ok(Client::Native(Box::new(p))),
                    Err(e) => {
                        self.stats.broker_state.store(2, Ordering::Relaxed);
                        Err(SessionEnd::Rebuild(e.to_string()))
                    }
                }
            }
            KafkaClient::Librdkafka => config
                .create_with_context(DeliveryContext(delivery.clone()))
                .map(Client::Librdkafka)
                .map_err(|e| {
                    SessionEnd::Rebuild(format!("kafka client for {}: {e}", kafka.brokers))
                }),
        }
    }

    fn session(
        &self,
        kafka: &KafkaConfig,
        kafka_rx: &mut tokio::sync::watch::Receiver<KafkaConfig>,
        finish: &CancellationToken,
        batch_bytes: usize,
    ) -> Result<SessionEnd, ForwardError> {
        let config = client_config(kafka, &self.host);
        let delivery = Arc::new(Delivery {
            tracker: Mutex::new(AckTracker::default()),
            stats: self.stats.clone(),
            dead_letter: self.data_dir.join("dead-letter.jsonl"),
        });

        let start = self.store.cursor()?;
        let stored_ledger = self.store.ledger()?;
        // Exactly-once across crashes: find what Kafka already has past the
        // cursor before sending anything (see `ledger`).
        let Some(mut redelivery) = self.read_back(&config, &stored_ledger, finish, kafka_rx) else {
            return Ok(if finish.is_cancelled() {
                SessionEnd::Done
            } else {
                SessionEnd::Reconfigure
            });
        };
        if !redelivery.is_empty() {
            tracing::info!("Kafka already has lines past the spool cursor (sent before a crash); they are skipped, not sent again");
        }
        let mut client = match self.client(kafka, &config, &delivery, batch_bytes) {
            Ok(c) => c,
            Err(end) => return Ok(end),
        };
        let mut topics = TopicCreator {
            admin: None,
            enabled: kafka.create_topics,
            known: BTreeSet::new(),
            partitions: kafka.topic_partitions,
            replication: kafka.topic_replication_factor,
            runtime: self.runtime.clone(),
        };
        {
            let mut t = delivery.tracker();
            t.ledger = stored_ledger.clone();
            t.ledger.clean = false;
        }
        if stored_ledger.clean {
            // From here on, lines may be sent past the cursor.
            let mut l = stored_ledger.clone();
            l.clean = false;
            self.store.put_progress(start.as_ref(), &l)?;
            self.store.flush()?;
        }
        let mut reader = self.spool.reader(start);
        let mut skip = start.map(|c| {
            (
                Position {
                    segment: c.segment,
                    pos: c.position,
                },
                c.lines_done,
            )
        });
        let mut persisted = start;
        let mut last_persist = Instant::now();
        let mut deadline: Option<Instant> = None;
        let mut reconfigure = false;
        let mut reading = true;
        // The reader reached the end of a closed spool.
        let mut drained = false;
        let mut events = Vec::new();

        loop {
            if deadline.is_none() && finish.is_cancelled() {
                deadline = Some(Instant::now() + kafka.shutdown_ack_timeout);
            }
            if deadline.is_none() && kafka_rx.has_changed().unwrap_or(false) {
                // Drain what is in flight, then rebuild with the new settings.
                reconfigure = true;
                reading = false;
                deadline = Some(Instant::now() + kafka.shutdown_ack_timeout);
            }
            let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
            // Nothing new to read: open batches need not wait for more.
            let mut idle = !reading;
            if reading && !past_deadline {
                // The reader is woken by new spool data; the timeout only
                // bounds how late a shutdown, a config change or the end of
                // a batch's linger is noticed.
                let wait = client.linger_left().map_or(Duration::from_millis(50), |l| {
                    l.min(Duration::from_millis(50))
                });
                match reader.next(wait)? {
                    ReadOutcome::Frame(frame) => {
                        let done = match skip.take() {
                            Some((at, n)) if at == frame.at => {
                                n.min(frame.batch.lines.len() as u32)
                            }
                            other => {
                                skip = other.filter(|(at, _)| *at > frame.at);
                                0
                            }
                        };
                        let b = &frame.batch;
                        let give_up = || {
                            kafka_rx.has_changed().unwrap_or(false)
                                || (finish.is_cancelled()
                                    && deadline.is_none_or(|d| Instant::now() >= d))
                        };
                        if done < b.lines.len() as u32 {
                            match topics.ensure(&mut client, &config, &b.topic, &give_up) {
                                Ok(true) => {}
                                Ok(false) => {
                                    // Shutting down, or new settings, before
                                    // the topic could be made: this frame was
                                    // not pushed, so the cursor stays before it.
                                    reading = false;
                                    continue;
                                }
                                Err(e) => return self.end_native(e, &delivery, &mut client),
                            }
                        }
                        let id = delivery.tracker().push(b, frame.at, frame.next, done);
                        // A line Kafka already has (sent before a crash) is
                        // acknowledged here instead of sent.
                        let mut in_kafka = |offset: u64| {
                            if redelivery.is_empty() {
                                return false;
                            }
                            match redelivery.check(&b.source, &b.topic, offset) {
                                Verdict::Skip(at) => {
                                    delivery.tracker().ack(id, at);
                                    true
                                }
                                _ => false,
                            }
                        };
                        let lines = b.iter_lines().skip(done as usize);
                        let sent = match &mut client {
                            Client::Native(p) => {
                                match send_native(p, id, b, lines, &mut in_kafka) {
                                    Ok(n) => n,
                                    Err(e) => {
                                        return self.end_native(e, &delivery, &mut client);
                                    }
                                }
                            }
                            Client::Librdkafka(p) => {
                                match send_librdkafka(p, id, b, &self.host, lines, &mut in_kafka) {
                                    Ok(n) => n,
                                    Err(why) => return Ok(end_after_failure(&mut client, why)),
                                }
                            }
                        };
                        self.stats.sent.fetch_add(sent, Ordering::Relaxed);
                    }
                    ReadOutcome::Idle => idle = true,
                    ReadOutcome::Closed => {
                        reading = false;
                        drained = true;
                        idle = true;
                    }
                }
            }
            match &mut client {
                Client::Native(p) => {
                    // Not reading: wait for answers here instead of sleeping.
                    let wait = if reading && !past_deadline {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(5)
                    };
                    let r = p.poll(wait, idle);
                    p.take_events(&mut events);
                    delivery.apply(&mut events);
                    if let Err(e) = r {
                        return self.end_native(e, &delivery, &mut client);
                    }
                }
                Client::Librdkafka(p) => {
                    if !reading || past_deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    p.poll(Duration::ZERO);
                }
            }

            let (cursor, in_flight, failed, dirty) = {
                let mut t = delivery.tracker();
                let c = t.advance();
                self.stats
                    .oldest_unacked_spooled_ms
                    .store(t.oldest_spooled_ms(), Ordering::Relaxed);
                (c, t.in_flight(), t.failed.take(), t.dirty)
            };
            let finished = !reading && in_flight == 0;
            let give_up = past_deadline;
            let due =
                finished || give_up || failed.is_some() || last_persist.elapsed() >= CURSOR_EVERY;
            if due && (cursor != persisted || dirty || finished) {
                let mut ledger = {
                    let mut t = delivery.tracker();
                    t.dirty = false;
                    t.ledger_snapshot()
                };
                // Nothing in flight and nothing sent past the cursor: the
                // next start needs no read-back.
                ledger.clean = finished && !give_up;
                self.persist(cursor.as_ref(), &ledger)?;
                persisted = cursor;
                last_persist = Instant::now();
            }
            if let Some(why) = failed {
                return Ok(end_after_failure(&mut client, why));
            }
            if finished && reconfigure {
                return Ok(SessionEnd::Reconfigure);
            }
            if finished {
                if drained {
                    tracing::info!("forwarder delivered everything spooled");
                } else {
                    tracing::warn!(
                        "forwarder stopped before the spool was delivered (Kafka unreachable?); the rest is sent on the next start"
                    );
                }
                return Ok(SessionEnd::Done);
            }
            if give_up && reconfigure {
                tracing::warn!(in_flight_frames = in_flight,
                    "lines still unacknowledged when rebuilding the producer; they are sent again by the new one");
                client.abandon();
                return Ok(SessionEnd::Reconfigure);
            }
            if give_up {
                tracing::warn!(in_flight_frames = in_flight,
                    "shutdown deadline passed with lines unacknowledged or unsent; they stay in the spool and are sent on the next start");
                client.abandon();
                return Ok(SessionEnd::Done);
            }
        }
    }

    /// Ends a session whose native producer failed: what was acknowledged
    /// before is made durable first, then the next session resends the rest
    /// (in smaller batches if Kafka refused a whole batch).
    fn end_native(
        &self,
        e: ProducerError,
        delivery: &Delivery,
        client: &mut Client,
    ) -> Result<SessionEnd, ForwardError> {
        self.stats.producer_errors.fetch_add(1, Ordering::Relaxed);
        if matches!(e, ProducerError::Io { .. } | ProducerError::Connect { .. }) {
            self.stats.broker_state.store(2, Ordering::Relaxed);
        }
        if let Client::Native(p) = client {
            // Answers taken in before the failure still count.
            let mut events = Vec::new();
            p.take_events(&mut events);
            delivery.apply(&mut events);
        }
        let (cursor, ledger) = {
            let mut t = delivery.tracker();
            let c = t.advance();
            t.dirty = false;
            (c, t.ledger_snapshot())
        };
        self.persist(cursor.as_ref(), &ledger)?;
        client.abandon();
        Ok(match e {
            ProducerError::BatchRefused { .. } => SessionEnd::SmallerBatches(e.to_string()),
            e => SessionEnd::Rebuild(e.to_string()),
        })
    }

    fn persist(
        &self,
        c: Option<&SpoolCursor>,
        ledger: &DeliveryLedger,
    ) -> Result<(), ForwardError> {
        self.store.put_progress(c, ledger)?;
        // The cursor is durable before any segment it passes is deleted.
        self.store.flush()?;
        if let Some(c) = c {
            self.spool.release_before(c)?;
        }
        Ok(())
    }

    /// Reads back what Kafka has past the cursor, retrying while the broker
    /// is unreachable. `None` if told to finish first.
    fn read_back(
        &self,
        config: &ClientConfig,
        stored: &DeliveryLedger,
        finish: &CancellationToken,
        kafka_rx: &tokio::sync::watch::Receiver<KafkaConfig>,
    ) -> Option<Redelivery> {
        let mut logged = false;
        loop {
            match ledger::read_back(config, stored, &self.host) {
                Ok(r) => return Some(r),
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, "cannot read back what Kafka already has yet; retrying before sending (lines wait in the spool)");
                        logged = true;
                    }
                    if finish.is_cancelled() || kafka_rx.has_changed().unwrap_or(false) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

enum SessionEnd {
    Done,
    Reconfigure,
    Rebuild(String),
    /// Kafka refused a batch of several lines: resend in smaller ones.
    SmallerBatches(String),
}

/// The Kafka client of one session (see `config::KafkaClient`).
enum Client {
    Native(Box<NativeProducer>),
    Librdkafka(BaseProducer<DeliveryContext>),
}

impl Client {
    /// How long until an open batch must be sent (native only).
    fn linger_left(&self) -> Option<Duration> {
        match self {
            Client::Native(p) => p.linger_left(),
            Client::Librdkafka(_) => None,
        }
    }

    /// Drops what is queued or unanswered: not delivered as far as the
    /// cursor knows, so it is sent again (and the read-back skips what
    /// Kafka got anyway).
    fn abandon(&mut self) {
        if let Client::Librdkafka(p) = self {
            p.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            p.poll(Duration::from_millis(100));
        }
        // The native producer closes its connections when dropped.
    }
}

fn end_after_failure(client: &mut Client, why: String) -> SessionEnd {
    client.abandon();
    SessionEnd::Rebuild(why)
}

/// Sends a frame's lines with the native producer; returns how many were
/// sent (not skipped).
fn send_native<'a>(
    p: &mut NativeProducer,
    id: u64,
    b: &SpoolBatch,
    lines: impl Iterator<Item = (u64, &'a [u8])>,
    in_kafka: &mut dyn FnMut(u64) -> bool,
) -> Result<u64, ProducerError> {
    let target = p.target(&b.topic, &b.source, &b.path)?;
    let mut sent = 0;
    for (offset, line) in lines {
        if in_kafka(offset) {
            continue;
        }
        p.append(&target, id, offset, line)?;
        sent += 1;
    }
    Ok(sent)
}

/// Sends a frame's lines with librdkafka, one message each.
fn send_librdkafka<'a>(
    producer: &BaseProducer<DeliveryContext>,
    id: u64,
    b: &SpoolBatch,
    host: &str,
    lines: impl Iterator<Item = (u64, &'a [u8])>,
    in_kafka: &mut dyn FnMut(u64) -> bool,
) -> Result<u64, String> {
    let path = b.path.as_bytes();
    let mut sent = 0;
    for (offset, line) in lines {
        if in_kafka(offset) {
            continue;
        }
        let mut digits = itoa::Buffer::new();
        let offset = digits.format(offset);
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "source",
                value: Some(b.source.as_bytes()),
            })
            .insert(Header {
                key: "path",
                value: Some(path),
            })
            .insert(Header {
                key: "offset",
                value: Some(offset.as_bytes()),
            })
            .insert(Header {
                key: "host",
                value: Some(host.as_bytes()),
            });
        let mut record = BaseRecord::with_opaque_to(&b.topic, id as usize)
            .key(b.source.as_bytes())
            .payload(line)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(format!("send failed: {e}")),
            }
        }
        sent += 1;
    }
    Ok(sent)
}

/// Creates missing topics once each (when `kafka.create_topics` is on).
struct TopicCreator {
    /// librdkafka's admin client, made when first needed.
    admin: Option<AdminClient<DefaultClientContext>>,
    enabled: bool,
    known: BTreeSet<String>,
    partitions: i32,
    /// -1: the broker's default.
    replication: i16,
    runtime: tokio::runtime::Handle,
}

impl TopicCreator {
    /// Returns false if `give_up` said so first (shutdown past its
    /// deadline, or new Kafka settings to apply). A CreateTopics refusal is
    /// retried; any other failure of the native producer (a setup request
    /// that timed out, or a Produce answer that arrived meanwhile with an
    /// error) is returned and ends the session: the producer may be out of
    /// step with the broker.
    fn ensure(
        &mut self,
        client: &mut Client,
        config: &ClientConfig,
        topic: &str,
        give_up: &dyn Fn() -> bool,
    ) -> Result<bool, ProducerError> {
        if !self.enabled || self.known.contains(topic) {
            return Ok(true);
        }
        let mut logged = false;
        loop {
            let outcome = match client {
                Client::Native(p) => match p.create_topic(topic, self.partitions, self.replication)
                {
                    Ok(()) => Ok(()),
                    Err(e @ ProducerError::Topic { .. }) => Err(e.to_string()),
                    Err(e) => return Err(e),
                },
                Client::Librdkafka(_) => self.create_with_librdkafka(config, topic),
            };
            match outcome {
                Ok(()) => {
                    self.known.insert(topic.to_string());
                    return Ok(true);
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(topic, error = %e, "cannot create or check the topic yet; retrying (lines wait in the spool)");
                        logged = true;
                    }
                    if give_up() {
                        return Ok(false);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    fn create_with_librdkafka(&mut self, config: &ClientConfig, topic: &str) -> Result<(), String> {
        if self.admin.is_none() {
            self.admin = Some(config.create().map_err(|e| e.to_string())?);
        }
        let Some(admin) = &self.admin else {
            return Err("no admin client".into());
        };
        let new = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication.into()),
        );
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        match self.runtime.block_on(admin.create_topics([&new], &opts)) {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) | None => Ok(()),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
                Some(Err((_, code))) => Err(code.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: u64, p: u64) -> Position {
        Position { segment: s, pos: p }
    }

    fn cursor(segment: u64, position: u64, lines_done: u32) -> Option<SpoolCursor> {
        Some(SpoolCursor {
            segment,
            position,
            lines_done,
        })
    }

    fn batch(lines: usize) -> SpoolBatch {
        SpoolBatch {
            seq: 0,
            spooled_ms: 0,
            source: "a".into(),
            path: "/a".into(),
            topic: "t".into(),
            identity: Default::default(),
            end_offset: 0,
            tail_len: 0,
            tail_crc: 0,
            data: vec![b'x'; lines],
            lines: (0..lines as u64)
                .map(|i| crate::spool::LineRef {
                    offset: i * 2,
                    len: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn ledger_counts_acks_past_the_cursor() {
        let mut t = AckTracker::default();
        let a = t.push(&batch(2), pos(1, 0), pos(1, 100), 0);
        let b = t.push(&batch(2), pos(1, 100), pos(1, 200), 0);
        t.ack(a, Some((0, 7)));
        t.ack(b, Some((0, 9)));
        t.ack(b, Some((0, 10)));
        t.advance();
        let l = t.ledger_snapshot();
        let e = l.entries["a"]["t"];
        assert_eq!(e.last_offset, 10);
        assert_eq!(
            e.acked_beyond_cursor, 2,
            "both lines of b are past the cursor"
        );
        assert!(!l.clean);
    }

    #[test]
    fn cursor_moves_only_over_acknowledged_prefix() {
        let mut t = AckTracker::default();
        let a = t.push(&batch(2), pos(1, 0), pos(1, 100), 0);
        let b = t.push(&batch(2), pos(1, 100), pos(1, 200), 0);
        assert_eq!(t.advance(), None);
        t.ack(b, None);
        t.ack(b, None);
        assert_eq!(t.advance(), None, "b is acked but a is not");
        t.ack(a, None);
        assert_eq!(t.advance(), cursor(1, 0, 1));
        t.ack(a, None);
        assert_eq!(t.advance(), cursor(1, 200, 0));
        assert_eq!(t.in_flight(), 0);
    }

    /// A line whose dead-letter write failed is neither in Kafka nor in the
    /// dead-letter file: acks of the lines after it must not count, or the
    /// frame's `lines_done` would cover it and the cursor pass it.
    #[test]
    fn acks_after_a_failure_do_not_count() {
        let mut t = AckTracker::default();
        let a = t.push(&batch(3), pos(1, 0), pos(1, 100), 0);
        t.ack(a, Some((0, 5)));
        // Line 2 was refused and its dead-letter write failed.
        t.failed = Some("cannot write dead-letter file".into());
        t.ack(a, Some((0, 6)));
        assert_eq!(
            t.advance(),
            cursor(1, 0, 1),
            "only the line before the failure is done"
        );
        assert_eq!(t.ledger_snapshot().entries["a"]["t"].last_offset, 5);
    }

    #[test]
    fn skipped_lines_count_as_done() {
        let mut t = AckTracker::default();
        let a = t.push(&batch(3), pos(2, 0), pos(2, 50), 2);
        assert_eq!(t.advance(), cursor(2, 0, 2));
        t.ack(a, None);
        assert_eq!(t.advance(), cursor(2, 50, 0));
    }
}
