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
use crate::kafka::client::{missing_acl, CLOCK_HINT};
use crate::kafka::forwarder::BrokerState;
use crate::kafka::line_id::{self, LineId};
use crate::kafka::native::TopicLookup;
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
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

/// A producer whose delivery reports go to `delivery`, with `config` and
/// `k.request_timeout` as `request.timeout.ms` (a producer setting, so not
/// in [`client_config`], which consumers share) unless
/// `kafka.properties` sets it.
pub fn producer(
    config: &ClientConfig,
    k: &KafkaConfig,
    delivery: &Arc<Delivery>,
) -> KafkaResult<LibrdkafkaProducer> {
    let mut config = config.clone();
    if !k.properties.contains_key("request.timeout.ms") {
        config.set(
            "request.timeout.ms",
            k.request_timeout.as_millis().to_string(),
        );
    }
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
                    t.fail(failure_text(err));
                }
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An INVALID_TIMESTAMP delivery failure says the host's clock is off
    /// and that the lines wait; other failures read as librdkafka says.
    #[test]
    fn invalid_timestamp_failure_names_the_clock() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp);
        let text = failure_text(&e);
        assert!(text.contains("this host's clock"), "{text}");
        assert!(text.contains("wait in the spool"), "{text}");
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas);
        assert_eq!(failure_text(&e), e.to_string());
    }
}
