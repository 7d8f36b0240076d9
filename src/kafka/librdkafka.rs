//! librdkafka: owns logcatch's use of the librdkafka client (the
//! `kafka.client: librdkafka` choice, see [`crate::config::KafkaClient`]):
//! its settings ([`client_config`], also the base of the
//! [`ledger`](crate::kafka::ledger)'s read-back consumer), the producer
//! context that turns its delivery reports into acks ([`DeliveryContext`]),
//! sending a frame's lines ([`send`]) and checking and creating topics with
//! its admin client ([`TopicAdmin`], which creates only a topic the
//! metadata says is missing).
//!
//! Invariants: the producer is acks=all and idempotent with no message
//! timeout, so librdkafka retries a line until it is delivered or refused
//! for good; delivery reports arrive on the forwarder's thread, which polls
//! the producer itself.
//!
//! Refusals (a line too large, or invalid: see [`is_refusal`]) are handled
//! as the native producer handles them, by the forwarder's batch size
//! ([`Batching`]):
//! - A line refused alone in its batch cannot fit: it goes to the
//!   dead-letter file. It was alone when the session sends one line per
//!   batch (`batch.num.messages=1`, the batch size 0), or when it is longer
//!   than `batch.size`, since librdkafka adds a message to a batch only
//!   while the batch stays within it.
//! - A refused batch that may hold several lines dead-letters none of
//!   them: the session ends ([`Stop::SmallerBatches`]), and the next one
//!   resends from the spool cursor in smaller batches, down to one line per
//!   batch. With batches the producer has `enable.gapless.guarantee`, so
//!   librdkafka stops at a refused batch instead of sending the lines after
//!   it first: they keep their order.
//! - A line larger than librdkafka's own `message.max.bytes` is never
//!   queued: it is dead-lettered once every line queued before it is
//!   answered.
//!
//! Must never: count a purged (undelivered) line as done, drop a line
//! Kafka refused without the dead-letter file taking it (see
//! [`Delivery::refused`]), or dead-letter a line Kafka did not refuse
//! alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};

use crate::config::KafkaConfig;
use crate::kafka::acks::{AckTracker, Delivery, RefusedLine};
use crate::kafka::client::{missing_acl, CLOCK_HINT};
use crate::kafka::forwarder::BrokerState;
use crate::kafka::line_id::{self, LineId};
use crate::kafka::native::{self, TopicLookup};
use crate::runtime::lock;
use crate::spool::SpoolBatch;

/// The librdkafka producer of one session.
pub type LibrdkafkaProducer = BaseProducer<DeliveryContext>;

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
        .set(
            "socket.connection.setup.timeout.ms",
            k.connect_timeout.as_millis().to_string(),
        )
        .set("log_level", "4");
    security::set_security(&mut c, k);
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

/// A producer whose delivery reports go to `delivery`, with `config` and
/// `k.request_timeout` as `request.timeout.ms` (a producer setting, so not
/// in [`client_config`], which consumers share) unless
/// `kafka.properties` sets it, batching as the forwarder's `batch_bytes`
/// say (see [`set_batching`]).
pub fn producer(
    config: &ClientConfig,
    k: &KafkaConfig,
    delivery: &Arc<Delivery>,
    batch_bytes: usize,
) -> KafkaResult<LibrdkafkaProducer> {
    let mut config = config.clone();
    if !k.properties.contains_key("request.timeout.ms") {
        config.set(
            "request.timeout.ms",
            k.request_timeout.as_millis().to_string(),
        );
    }
    let batching = set_batching(&mut config, batch_bytes);
    config.create_with_context(DeliveryContext {
        delivery: delivery.clone(),
        batching,
        stop: Mutex::new(None),
    })
}

/// A librdkafka log line, to `tracing` at its level.
fn trace_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
    }
}

/// librdkafka's `batch.size` and `message.max.bytes` when not set.
const LIBRDKAFKA_BATCH_SIZE: usize = 1_000_000;
const LIBRDKAFKA_MESSAGE_MAX: usize = 1_000_000;
/// librdkafka's `batch.num.messages` when not set.
const LIBRDKAFKA_BATCH_MESSAGES: usize = 10_000;

/// How a session's producer batches, hence whether a refused line was
/// alone in its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// One line per batch (`batch.num.messages=1`).
    lone: bool,
    /// A line whose payload and key are longer than this is alone in its
    /// batch: librdkafka adds a message to a batch only while the batch
    /// stays within `batch.size` and `message.max.bytes`, except the
    /// batch's first message.
    alone_above: usize,
    /// librdkafka stops the producer at a batch Kafka refused for good
    /// (`enable.gapless.guarantee`), so no line after it lands first.
    stops_at_gap: bool,
}

/// What a refusal of one line means.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// It was alone in its batch, so it cannot fit: dead-letter it;
    /// `stopped`: librdkafka stopped the producer there.
    Alone { stopped: bool },
    /// Its batch may have held other lines: resend them in smaller batches.
    InBatch,
}

impl Batching {
    /// What Kafka's refusal of a line whose payload and key are `len`
    /// bytes long means.
    fn refused(&self, len: usize) -> Refused {
        if self.lone || len > self.alone_above {
            Refused::Alone {
                stopped: self.stops_at_gap,
            }
        } else {
            Refused::InBatch
        }
    }
}

/// Sets the batching of a producer for a session whose batches are of at
/// most `batch_bytes` (the forwarder's size, see
/// [`forwarder`](crate::kafka::forwarder); full size is
/// [`native::BATCH_BYTES`], 0 is every line alone), on top of `c` (ours
/// and the operator's settings), and says what it is.
/// - 0: `batch.num.messages=1`, so a refused line was alone.
/// - Smaller than full: `batch.size` at most `batch_bytes`.
/// - Any size but 0, idempotent: `enable.gapless.guarantee`, so that after
///   a refused batch librdkafka sends nothing more (it would otherwise
///   send the lines after the batch first, then the session would resend
///   the batch's lines after them).
fn set_batching(c: &mut ClientConfig, batch_bytes: usize) -> Batching {
    fn number(c: &ClientConfig, key: &str, default: usize) -> usize {
        c.get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }
    // As librdkafka reads a boolean.
    fn is_on(c: &ClientConfig, key: &str) -> bool {
        c.get(key)
            .is_some_and(|v| ["true", "t", "1"].contains(&v.trim().to_ascii_lowercase().as_str()))
    }
    if batch_bytes == 0 {
        c.set("batch.num.messages", "1");
    } else {
        if is_on(c, "enable.idempotence") {
            c.set("enable.gapless.guarantee", "true");
        }
        if batch_bytes < native::BATCH_BYTES {
            let size = number(c, "batch.size", LIBRDKAFKA_BATCH_SIZE).min(batch_bytes);
            c.set("batch.size", size.max(1).to_string());
        }
    }
    Batching {
        lone: number(c, "batch.num.messages", LIBRDKAFKA_BATCH_MESSAGES) == 1,
        alone_above: number(c, "batch.size", LIBRDKAFKA_BATCH_SIZE).min(number(
            c,
            "message.max.bytes",
            LIBRDKAFKA_MESSAGE_MAX,
        )),
        stops_at_gap: is_on(c, "enable.gapless.guarantee"),
    }
}

/// Why a librdkafka session stopped sending at a refusal: how the session
/// ends (see [`stop`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Kafka refused a batch that may hold several lines: none is
    /// dead-lettered, the next session resends them in smaller batches.
    SmallerBatches(String),
    /// A line refused alone was dead-lettered, and librdkafka stopped the
    /// producer there (see [`Batching`]): the next session goes on after it.
    Resume(String),
}

/// Why the session's producer stopped sending at a refusal, if it did.
pub fn stop(p: &LibrdkafkaProducer) -> Option<Stop> {
    lock(&p.context().stop).clone()
}

/// Kafka's permanent refusals of a line (or of its batch): too large
/// (MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE), or invalid.
fn is_refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
    )
}

/// Drops what is queued or in flight (its reports say "purged", which does
/// not count as delivered), and takes in the last reports.
pub fn purge(p: &LibrdkafkaProducer) {
    p.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    p.poll(Duration::from_millis(100));
}

/// The value of header `key` of a message, if it has one.
pub fn header<'a, M: Message>(m: &'a M, key: &str) -> Option<&'a [u8]> {
    m.headers()?.iter().find(|h| h.key == key)?.value
}

/// librdkafka's context: delivery reports go to the shared [`Delivery`];
/// a refusal that stops the session is kept for its end ([`stop`]).
pub struct DeliveryContext {
    delivery: Arc<Delivery>,
    batching: Batching,
    stop: Mutex<Option<Stop>>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // We set this experimental property on purpose (see `set_batching`).
        if fac == "CONFWARN" && message.contains("enable.gapless.guarantee is experimental") {
            return;
        }
        // Its stop at a refused batch (see `error`) is no failure of ours.
        if fac == "FATAL" && message.contains("Gap-less") {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}");
            return;
        }
        security::note_log(self.delivery.stats(), level, fac, message);
        trace_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let stats = self.delivery.stats();
        match error.rdkafka_error_code() {
            // After a refused login librdkafka also says every broker is
            // down: the refusal is the news, so it stays.
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
                if stats.broker_state.load() != BrokerState::AuthFailed =>
            {
                stats.broker_state.store(BrokerState::Down);
            }
            Some(code) if is_security_refusal(code, reason) => {
                stats.broker_state.store(BrokerState::AuthFailed);
            }
            Some(RDKafkaErrorCode::GaplessGuarantee) => {
                // A batch failed for good and librdkafka stopped there (see
                // `set_batching`): its delivery reports say how the session
                // ends (smaller batches, or on after a line refused alone),
                // which the forwarder logs.
                tracing::debug!(reason, "librdkafka stopped the producer at a batch Kafka refused, so that no line after it is sent first");
                return;
            }
            _ => {}
        }
        tracing::warn!(error = %error, reason, "Kafka client error (librdkafka retries by itself)");
        *lock(&stats.last_error) = Some(format!("{error}: {reason}"));
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, frame: usize) {
        let d = &self.delivery;
        let mut t = d.tracker();
        match result {
            Ok(m) => {
                t.ack(frame as u64, Some((m.partition(), m.offset())));
                d.stats()
                    .delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                d.stats().broker_state.store(BrokerState::Up);
            }
            Err((err, msg)) => match err.rdkafka_error_code() {
                Some(RDKafkaErrorCode::PurgeQueue) | Some(RDKafkaErrorCode::PurgeInflight) => {
                    // Purged at shutdown: not delivered, resent next run.
                }
                Some(code) if is_refusal(code) => self.refused(&mut t, frame as u64, err, msg),
                _ => {
                    d.stats()
                        .producer_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    t.fail(failure_text(err));
                }
            },
        }
    }
}

impl DeliveryContext {
    /// Kafka refused line `msg` of `frame` for good (`err`): dead-lettered
    /// if it was alone in its batch, else the session stops to resend its
    /// batch's lines in smaller batches (see [`Batching::refused`]). Once
    /// the session failed, nothing is dead-lettered: acks no longer count,
    /// so the next session sends the line again.
    fn refused(&self, t: &mut AckTracker, frame: u64, err: &KafkaError, msg: &BorrowedMessage<'_>) {
        let (topic, partition) = (msg.topic(), msg.partition());
        match self.batching.refused(msg.payload_len() + msg.key_len()) {
            Refused::InBatch => {
                let why = format!("Kafka refused a batch of lines for {topic}/{partition}: {err}");
                self.stop_with(t, Stop::SmallerBatches(why));
            }
            Refused::Alone { .. } if t.has_failed() => {}
            // Answered before an earlier line of its frame (being retried):
            // counting it now would count that one as done. The next
            // session sends them again, in order.
            Refused::Alone { .. } if !next_undone(t, frame, msg) => {
                let why = format!("a line of {topic}/{partition} was refused before an earlier one was answered ({err}); resending both in order");
                t.fail(why);
            }
            Refused::Alone { stopped } => {
                let text =
                    |k: &str| header(msg, k).map(|v| String::from_utf8_lossy(v).into_owned());
                let (source, path, offset) = (text("source"), text("path"), text("offset"));
                let r = RefusedLine {
                    id: header(msg, line_id::HEADER),
                    source: source.as_deref().unwrap_or_default(),
                    path: path.as_deref(),
                    offset: offset.as_deref().unwrap_or_default(),
                    topic,
                    line: msg.payload().unwrap_or_default(),
                };
                self.delivery.refused(t, frame, r, &err.to_string());
                if stopped && !t.has_failed() {
                    let why = format!("librdkafka stopped at the line it dead-lettered ({topic}/{partition}: {err})");
                    self.stop_with(t, Stop::Resume(why));
                }
            }
        }
    }

    /// The session stops at a refusal: acks no longer count, and `stop`
    /// (the first one) says how it ends.
    fn stop_with(&self, t: &mut AckTracker, stop: Stop) {
        if !t.has_failed() {
            let (Stop::SmallerBatches(why) | Stop::Resume(why)) = &stop;
            t.fail(why.clone());
        }
        lock(&self.stop).get_or_insert(stop);
    }
}

/// Whether no line of `frame` before `msg` is still undone: by its
/// `lc-id` index, compared with the frame's leading lines done (a line
/// without an index passes).
fn next_undone(t: &AckTracker, frame: u64, msg: &BorrowedMessage<'_>) -> bool {
    let index = header(msg, line_id::HEADER)
        .and_then(LineId::decode)
        .map(|id| id.index);
    match (index, t.done_of(frame)) {
        (Some(i), Some(done)) => i <= done,
        _ => true,
    }
}

/// Why a delivery failed, as the session's failure says it: an
/// INVALID_TIMESTAMP refusal says what to fix ([`CLOCK_HINT`]).
fn failure_text(err: &KafkaError) -> String {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::InvalidTimestamp) => format!("{err}: {CLOCK_HINT}"),
        _ => err.to_string(),
    }
}

/// Sends a frame's lines with librdkafka, one message each, skipping those
/// `in_kafka` says Kafka has; returns how many were sent.
/// Each line comes with its index in `b` and its file offset; `from` is
/// the host name and the store's instance id. A line larger than
/// librdkafka's `message.max.bytes` is dead-lettered instead (see
/// [`dead_letter_unqueued`]).
///
/// Longer than most: one loop handles each outcome of queueing a line
/// (queued, queue full, too large to queue, the producer stopped) in
/// place, since their order is what keeps the cursor right.
pub fn send<'a>(
    producer: &LibrdkafkaProducer,
    id: u64,
    b: &SpoolBatch,
    (host, instance): (&str, u64),
    lines: impl Iterator<Item = (u32, u64, &'a [u8])>,
    in_kafka: &mut dyn FnMut(u32) -> bool,
) -> KafkaResult<u64> {
    let path = b.path.as_bytes();
    // A glob source's file goes by its source's name (the key) and carries
    // its path in a `file` header.
    let (key, file) = (
        crate::config::kafka_key(&b.source),
        crate::config::split_key(&b.source).1,
    );
    let mut sent = 0;
    for (index, offset, line) in lines {
        if in_kafka(index) {
            continue;
        }
        let mut digits = itoa::Buffer::new();
        let offset = digits.format(offset);
        let line_id = LineId {
            instance,
            seq: b.seq,
            index,
        }
        .encode();
        let headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: "source",
                value: Some(key.as_bytes()),
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
            })
            .insert(Header {
                key: line_id::HEADER,
                value: Some(&line_id[..]),
            });
        let headers = match file {
            Some(file) => headers.insert(Header {
                key: "file",
                value: Some(file.as_bytes()),
            }),
            None => headers,
        };
        let mut record = BaseRecord::with_opaque_to(&b.topic, id as usize)
            .key(key.as_bytes())
            .payload(line)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => {
                    sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((
                    e @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                    _,
                )) => {
                    let r = RefusedLine {
                        id: Some(&line_id),
                        source: &b.source,
                        path: Some(&b.path),
                        offset,
                        topic: &b.topic,
                        line,
                    };
                    dead_letter_unqueued(producer, id, r, &e)?;
                    break;
                }
                Err((e, _)) => {
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                        // It may have stopped at a refusal (see
                        // `set_batching`) whose reports are queued: take
                        // them in while they count, so that the session
                        // ends as they say.
                        let _ = producer.flush(STOPPED_WAIT);
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(sent)
}

/// How long a stopped producer's last reports are waited for.
const STOPPED_WAIT: Duration = Duration::from_secs(5);

/// How long a line too large to queue waits for the lines queued before it
/// to be answered.
const UNQUEUED_WAIT: Duration = Duration::from_secs(60);

/// Dead-letters line `r` of `frame`, which librdkafka would not queue as
/// larger than its `message.max.bytes` (`err`): it cannot be sent alone.
/// First every line queued before it is answered, so that the frame's done
/// lines stay its leading lines. If they are not within [`UNQUEUED_WAIT`],
/// or the session failed meanwhile, returns `err`: the session ends and the
/// next one sends the line again.
fn dead_letter_unqueued(
    producer: &LibrdkafkaProducer,
    frame: u64,
    r: RefusedLine<'_>,
    err: &KafkaError,
) -> KafkaResult<()> {
    producer.flush(UNQUEUED_WAIT).map_err(|_| err.clone())?;
    let d = &producer.context().delivery;
    let mut t = d.tracker();
    if t.has_failed() {
        return Err(err.clone());
    }
    let why = format!("{err}: larger than librdkafka's message.max.bytes");
    d.refused(&mut t, frame, r, &why);
    Ok(())
}

/// Why librdkafka's admin client could not check or create a topic.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be made, or its request failed.
    #[error("{0}")]
    Client(#[from] KafkaError),
    /// The broker refused to describe or create the topic.
    #[error("topic {topic}: {api} refused: {code}")]
    Refused {
        topic: String,
        api: &'static str,
        code: RDKafkaErrorCode,
    },
    /// The broker refused for want of an ACL: `acl` says which.
    #[error(
        "topic {topic}: {api} refused: {code}: the principal logcatch connects as needs {acl}"
    )]
    NotAuthorized {
        topic: String,
        api: &'static str,
        code: RDKafkaErrorCode,
        acl: String,
    },
}

impl TopicError {
    /// `api`'s refusal `code` about `topic`.
    fn refused(topic: &str, api: &'static str, code: RDKafkaErrorCode) -> TopicError {
        let topic = topic.to_string();
        let cluster = match code {
            RDKafkaErrorCode::TopicAuthorizationFailed => false,
            RDKafkaErrorCode::ClusterAuthorizationFailed => true,
            _ => return TopicError::Refused { topic, api, code },
        };
        TopicError::NotAuthorized {
            acl: missing_acl(&topic, api, cluster),
            topic,
            api,
            code,
        }
    }
}

/// Checks and creates topics with librdkafka's admin client, made when
/// first needed.
pub struct TopicAdmin {
    admin: Option<AdminClient<DefaultClientContext>>,
    /// Tokio handle, for the admin client's futures.
    runtime: tokio::runtime::Handle,
}

impl TopicAdmin {
    pub fn new(runtime: tokio::runtime::Handle) -> TopicAdmin {
        TopicAdmin {
            admin: None,
            runtime,
        }
    }

    /// The admin client, made from `config` when first needed. Its metadata
    /// requests never create a topic: that is [`TopicAdmin::create_topic`]'s.
    fn admin(
        &mut self,
        config: &ClientConfig,
    ) -> Result<&AdminClient<DefaultClientContext>, KafkaError> {
        match &mut self.admin {
            Some(a) => Ok(a),
            empty => {
                let mut config = config.clone();
                config.set("allow.auto.create.topics", "false");
                Ok(empty.insert(config.create()?))
            }
        }
    }

    /// What the cluster's metadata says about `topic`:
    /// [`TopicLookup::Missing`] only for UNKNOWN_TOPIC_OR_PARTITION.
    pub fn lookup_topic(
        &mut self,
        config: &ClientConfig,
        topic: &str,
    ) -> Result<TopicLookup, TopicError> {
        let admin = self.admin(config)?;
        let m = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let Some(t) = m.topics().iter().find(|t| t.name() == topic) else {
            return Err(TopicError::refused(
                topic,
                "Metadata",
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        };
        match t.error().map(RDKafkaErrorCode::from) {
            None => {
                for p in t.partitions().iter().filter(|p| p.isr().len() < 2) {
                    tracing::warn!(topic, partition = p.id(), in_sync_replicas = p.isr().len(), "fewer than 2 in-sync replicas: acks=all keeps fewer than 2 copies of these lines (raise the topic's replication factor)");
                }
                Ok(TopicLookup::Present)
            }
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(TopicLookup::Missing {
                brokers: m.brokers().len(),
            }),
            Some(code) => Err(TopicError::refused(topic, "Metadata", code)),
        }
    }

    /// Creates `topic` with `replication` replicas (see
    /// [`replicas`](crate::kafka::client::replicas)); a topic
    /// that already exists is fine.
    pub fn create_topic(
        &mut self,
        config: &ClientConfig,
        topic: &str,
        partitions: i32,
        replication: i16,
    ) -> Result<(), TopicError> {
        let new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(replication.into()),
        );
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        let runtime = self.runtime.clone();
        let admin = self.admin(config)?;
        let results = runtime.block_on(admin.create_topics([&new], &opts))?;
        match results.into_iter().next() {
            Some(Ok(_)) | None => Ok(()),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
            Some(Err((_, code))) => Err(TopicError::refused(topic, "CreateTopics", code)),
        }
    }
}

mod security;
pub use security::{check_settings, is_security_refusal, SettingError};

#[cfg(test)]
mod tests;
