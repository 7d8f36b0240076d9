//! client: owns the Kafka client of one forwarder [`Session`](crate::kafka::session::Session),
//! the [`native`](crate::kafka::native) producer or librdkafka's (see
//! [`crate::config::KafkaClient`]), behind one [`Client`] that connects,
//! sends a frame's lines, polls for answers and abandons what is
//! unanswered; and [`TopicCreator`], which creates missing topics with
//! whichever client the session has.
//!
//! Invariants: every line goes out tagged with its frame's id, so that its
//! answer reaches the [`AckTracker`](crate::kafka::acks::AckTracker)
//! through [`Delivery`]; a line the read-back found in Kafka is not sent.
//!
//! Must never: retry a failed send by itself: a failure ends the session,
//! and the next one resends from the durable cursor.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::config::{KafkaClient, KafkaConfig};
use crate::kafka::acks::Delivery;
use crate::kafka::forwarder::{BrokerState, ForwardStats};
use crate::kafka::librdkafka::{self, LibrdkafkaProducer, TopicAdmin};
use crate::kafka::native::{Event, NativeProducer, ProducerError, ProducerSettings};
use crate::runtime::{Backoff, Outage};
use crate::spool::SpoolBatch;

/// The Kafka client of one session (see [`crate::config::KafkaClient`]).
pub enum Client {
    Native(Box<NativeProducer>),
    Librdkafka(LibrdkafkaProducer),
}

/// Why a session's client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The native producer failed (connecting, sending or polling).
    #[error(transparent)]
    Native(#[from] ProducerError),
    /// librdkafka's producer could not be made.
    #[error("kafka client for {brokers}: {source}")]
    LibrdkafkaClient {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    /// librdkafka would not queue a line.
    #[error("send failed: {0}")]
    LibrdkafkaSend(#[source] KafkaError),
}

impl Client {
    /// The client `kafka` asks for; librdkafka's reports go to `delivery`.
    /// A native producer that cannot connect marks the broker down.
    pub fn connect(
        kafka: &KafkaConfig,
        config: &ClientConfig,
        host: &str,
        delivery: &Arc<Delivery>,
        batch_bytes: usize,
        stats: &ForwardStats,
    ) -> Result<Client, ClientError> {
        match kafka.client {
            KafkaClient::Native => {
                let settings = ProducerSettings {
                    brokers: kafka.brokers.clone(),
                    client_id: format!("logcatch@{host}"),
                    lz4: kafka.compression == "lz4",
                    linger: Duration::from_millis(kafka.linger_ms),
                    batch_bytes,
                    allow_auto_create: !kafka.create_topics,
                };
                match NativeProducer::connect(settings, host) {
                    Ok(p) => Ok(Client::Native(Box::new(p))),
                    Err(e) => {
                        stats.broker_state.store(BrokerState::Down);
                        Err(e.into())
                    }
                }
            }
            KafkaClient::Librdkafka => librdkafka::producer(config, delivery)
                .map(Client::Librdkafka)
                .map_err(|source| ClientError::LibrdkafkaClient {
                    brokers: kafka.brokers.clone(),
                    source,
                }),
        }
    }

    /// How long until an open batch must be sent (native only).
    pub fn linger_left(&self) -> Option<Duration> {
        match self {
            Client::Native(p) => p.linger_left(),
            Client::Librdkafka(_) => None,
        }
    }

    /// Sends the `lines` of frame `id` (of batch `b`), skipping those
    /// `in_kafka` says Kafka has; returns how many were sent. Each line
    /// comes with its index in `b` and its file offset; `from` is the host
    /// name and the store's instance id (see [`line_id`](crate::kafka::line_id)).
    pub fn send<'a>(
        &mut self,
        id: u64,
        b: &SpoolBatch,
        from: (&str, u64),
        lines: impl Iterator<Item = (u32, u64, &'a [u8])>,
        in_kafka: &mut dyn FnMut(u32) -> bool,
    ) -> Result<u64, ClientError> {
        match self {
            Client::Native(p) => Ok(send_native(p, id, b, from.1, lines, in_kafka)?),
            Client::Librdkafka(p) => librdkafka::send(p, id, b, from, lines, in_kafka)
                .map_err(ClientError::LibrdkafkaSend),
        }
    }

    /// Takes in the answers that arrived, into `delivery`. `wait`: nothing
    /// to read, so wait a little for answers here instead of sleeping;
    /// `idle`: open batches need not wait for more lines.
    pub fn poll(
        &mut self,
        wait: bool,
        idle: bool,
        delivery: &Delivery,
        events: &mut Vec<Event>,
    ) -> Result<(), ProducerError> {
        match self {
            Client::Native(p) => {
                let r = p.poll(
                    if wait {
                        Duration::from_millis(5)
                    } else {
                        Duration::ZERO
                    },
                    idle,
                );
                p.take_events(events);
                delivery.apply(events);
                r
            }
            Client::Librdkafka(p) => {
                if wait {
                    std::thread::sleep(Duration::from_millis(5));
                }
                p.poll(Duration::ZERO);
                Ok(())
            }
        }
    }

    /// Takes in the native producer's answers that arrived before it
    /// failed: they still count.
    pub fn take_last_answers(&mut self, delivery: &Delivery) {
        if let Client::Native(p) = self {
            let mut events = Vec::new();
            p.take_events(&mut events);
            delivery.apply(&mut events);
        }
    }

    /// Drops what is queued or unanswered: not delivered as far as the
    /// cursor knows, so it is sent again (and the read-back skips what
    /// Kafka got anyway).
    pub fn abandon(&mut self) {
        if let Client::Librdkafka(p) = self {
            librdkafka::purge(p);
        }
        // The native producer closes its connections when dropped.
    }
}

/// Sends a frame's lines with the native producer; returns how many were
/// sent (not skipped).
fn send_native<'a>(
    p: &mut NativeProducer,
    id: u64,
    b: &SpoolBatch,
    instance: u64,
    lines: impl Iterator<Item = (u32, u64, &'a [u8])>,
    in_kafka: &mut dyn FnMut(u32) -> bool,
) -> Result<u64, ProducerError> {
    let target = p.target(&b.topic, &b.source, &b.path, (instance, b.seq))?;
    let mut sent = 0;
    for (index, offset, line) in lines {
        if in_kafka(index) {
            continue;
        }
        p.append(&target, id, (index, offset), line)?;
        sent += 1;
    }
    Ok(sent)
}

/// Creates missing topics once each (when `kafka.create_topics` is on).
pub struct TopicCreator {
    /// librdkafka's admin client, for a librdkafka session.
    admin: TopicAdmin,
    enabled: bool,
    known: BTreeSet<String>,
    partitions: i32,
    /// -1: the broker's default.
    replication: i16,
}

impl TopicCreator {
    pub fn new(kafka: &KafkaConfig, runtime: tokio::runtime::Handle) -> TopicCreator {
        TopicCreator {
            admin: TopicAdmin::new(runtime),
            enabled: kafka.create_topics,
            known: BTreeSet::new(),
            partitions: kafka.topic_partitions,
            replication: kafka.topic_replication_factor,
        }
    }

    /// Returns false if `give_up` said so first (shutdown past its
    /// deadline, or new Kafka settings to apply). A CreateTopics refusal is
    /// retried every 500 ms; any other failure of the native producer (a
    /// setup request that timed out, or a Produce answer that arrived
    /// meanwhile with an error) is returned and ends the session: the
    /// producer may be out of step with the broker.
    pub fn ensure(
        &mut self,
        client: &mut Client,
        config: &ClientConfig,
        topic: &str,
        give_up: &dyn Fn() -> bool,
    ) -> Result<bool, ProducerError> {
        if !self.enabled || self.known.contains(topic) {
            return Ok(true);
        }
        let mut retry = Backoff::fixed(Duration::from_millis(500));
        let mut outage = Outage::default();
        loop {
            let outcome = match client {
                Client::Native(p) => match p.create_topic(topic, self.partitions, self.replication)
                {
                    Ok(()) => Ok(()),
                    Err(e @ ProducerError::Topic { .. }) => Err(e.to_string()),
                    Err(e) => return Err(e),
                },
                Client::Librdkafka(_) => self
                    .admin
                    .create_topic(config, topic, self.partitions, self.replication)
                    .map_err(|e| e.to_string()),
            };
            let Err(e) = outcome else {
                if let Some(failures) = outage.recovered() {
                    tracing::info!(topic, failures, "the topic is there now; sending");
                }
                self.known.insert(topic.to_string());
                return Ok(true);
            };
            if outage.failed() {
                tracing::warn!(topic, error = %e, "cannot create or check the topic yet; retrying (lines wait in the spool)");
            }
            if !retry.sleep(give_up) {
                return Ok(false);
            }
        }
    }
}
