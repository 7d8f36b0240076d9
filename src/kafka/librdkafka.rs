//! librdkafka: owns logcatch's use of the librdkafka client (the
//! `kafka.client: librdkafka` choice, see [`crate::config::KafkaClient`]):
//! its settings ([`client_config`], also the base of the
//! [`ledger`](crate::kafka::ledger)'s read-back consumer), the producer
//! context that turns its delivery reports into acks ([`DeliveryContext`]),
//! sending a frame's lines ([`send`]) and creating topics with its admin
//! client ([`TopicAdmin`]).
//!
//! Invariants: the producer is acks=all and idempotent with no message
//! timeout, so librdkafka retries a line until it is delivered or refused
//! for good; delivery reports arrive on the forwarder's thread, which polls
//! the producer itself.
//!
//! Must never: count a purged (undelivered) line as done, or drop a line
//! Kafka refused without the dead-letter file taking it (see
//! [`Delivery::refused`]).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};

use crate::config::KafkaConfig;
use crate::kafka::acks::{Delivery, RefusedLine};
use crate::kafka::forwarder::BrokerState;
use crate::kafka::line_id::{self, LineId};
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
        .set("log_level", "4");
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

/// A producer whose delivery reports go to `delivery`.
pub fn producer(
    config: &ClientConfig,
    delivery: &Arc<Delivery>,
) -> KafkaResult<LibrdkafkaProducer> {
    config.create_with_context(DeliveryContext(delivery.clone()))
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

/// librdkafka's context: delivery reports go to the shared [`Delivery`].
pub struct DeliveryContext(Arc<Delivery>);

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.0.stats().broker_state.store(BrokerState::Down);
        }
        tracing::warn!(error = %error, reason, "Kafka client error (librdkafka retries by itself)");
        *lock(&self.0.stats().last_error) = Some(format!("{error}: {reason}"));
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
                d.stats()
                    .delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                d.stats().broker_state.store(BrokerState::Up);
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
                    let text =
                        |k: &str| header(msg, k).map(|v| String::from_utf8_lossy(v).into_owned());
                    let (source, path, offset) = (text("source"), text("path"), text("offset"));
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
                    d.stats()
                        .producer_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    t.fail(err.to_string());
                }
            },
        }
    }
}

/// Sends a frame's lines with librdkafka, one message each, skipping those
/// `in_kafka` says Kafka has; returns how many were sent.
/// Each line comes with its index in `b` and its file offset; `from` is
/// the host name and the store's instance id.
pub fn send<'a>(
    producer: &LibrdkafkaProducer,
    id: u64,
    b: &SpoolBatch,
    (host, instance): (&str, u64),
    lines: impl Iterator<Item = (u32, u64, &'a [u8])>,
    in_kafka: &mut dyn FnMut(u32) -> bool,
) -> KafkaResult<u64> {
    let path = b.path.as_bytes();
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
        let headers = OwnedHeaders::new_with_capacity(5)
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
            })
            .insert(Header {
                key: line_id::HEADER,
                value: Some(&line_id[..]),
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
                Err((e, _)) => return Err(e),
            }
        }
        sent += 1;
    }
    Ok(sent)
}

/// Why librdkafka's admin client could not create a topic.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be made, or its request failed.
    #[error("{0}")]
    Client(#[from] KafkaError),
    /// The broker refused to create the topic.
    #[error("{0}")]
    Refused(RDKafkaErrorCode),
}

/// Creates topics with librdkafka's admin client, made when first needed.
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

    /// Creates `topic` (`replication` -1: the broker's default); a topic
    /// that already exists is fine.
    pub fn create_topic(
        &mut self,
        config: &ClientConfig,
        topic: &str,
        partitions: i32,
        replication: i16,
    ) -> Result<(), TopicError> {
        let admin = match &mut self.admin {
            Some(a) => a,
            empty => empty.insert(config.create()?),
        };
        let new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(replication.into()),
        );
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        let results = self.runtime.block_on(admin.create_topics([&new], &opts))?;
        match results.into_iter().next() {
            Some(Ok(_)) | None => Ok(()),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
            Some(Err((_, code))) => Err(TopicError::Refused(code)),
        }
    }
}
