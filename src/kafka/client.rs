//! client: owns the Kafka client of one forwarder [`Session`](crate::kafka::session::Session),
//! the [`native`](crate::kafka::native) producer or librdkafka's (see
//! [`crate::config::KafkaClient`]), behind one [`Client`] that connects,
//! sends a frame's lines, polls for answers and abandons what is
//! unanswered; and [`TopicCreator`], which creates missing topics with
//! whichever client the session has, only those the cluster's metadata
//! says are missing.
//!
//! Invariants: every line goes out tagged with its frame's id, so that its
//! answer reaches the [`AckTracker`](crate::kafka::acks::AckTracker)
//! through [`Delivery`]; a line the read-back found in Kafka is not sent.
//!
//! Must never: retry a failed send by itself: a failure ends the session,
//! and the next one resends from the durable cursor.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::config::{KafkaClient, KafkaConfig};
use crate::kafka::acks::Delivery;
use crate::kafka::forwarder::{BrokerState, ForwardStats};
use crate::kafka::librdkafka::{self, LibrdkafkaProducer, TopicAdmin, TopicError};
use crate::kafka::native::{
    Event, NativeProducer, ProducerError, ProducerSettings, Timeouts, TopicLookup,
};
use crate::runtime::lock;
use crate::runtime::{Backoff, Outage};
use crate::spool::SpoolBatch;

/// Native sessions started so far in this process: each starts at the
/// next bootstrap broker, so that a hung one is not asked first every time.
static BOOTSTRAP_TURN: AtomicUsize = AtomicUsize::new(0);

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
                    timeouts: Timeouts {
                        request: kafka.request_timeout,
                        connect: kafka.connect_timeout,
                        delivery: kafka.delivery_timeout,
                    },
                    bootstrap_turn: BOOTSTRAP_TURN.fetch_add(1, Ordering::Relaxed),
                    tls: kafka.tls.clone(),
                    sasl: kafka.sasl.clone(),
                };
                match NativeProducer::connect(settings, host) {
                    Ok(p) => Ok(Client::Native(Box::new(p))),
                    Err(e) => {
                        stats.broker_state.store(if e.is_refusal() {
                            BrokerState::AuthFailed
                        } else {
                            BrokerState::Down
                        });
                        Err(e.into())
                    }
                }
            }
            KafkaClient::Librdkafka => librdkafka::producer(config, kafka, delivery, batch_bytes)
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
                // A fatal error whose delivery reports are all served (none
                // in flight) and that no report turned into a failure (e.g.
                // ERR__INCONSISTENT): the producer sends nothing more, so
                // the session must end, not wait for the next line.
                use rdkafka::producer::Producer as _;
                if p.in_flight_count() == 0 {
                    if let Some((code, reason)) = p.client().fatal_error() {
                        let mut t = delivery.tracker();
                        if !t.has_failed() {
                            t.fail(format!("librdkafka fatal error {code:?}: {reason}"));
                        }
                    }
                }
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

/// What an INVALID_TIMESTAMP refusal means, for the error both clients
/// report (see [`ProducerError::ClockAhead`]).
pub const CLOCK_HINT: &str = "the lines' timestamps (this host's clock) are too far from the broker's clock (Kafka 4 refuses timestamps more than message.timestamp.after.max.ms, 1 h by default, ahead); fix this host's clock (NTP). Nothing is dropped: the lines wait in the spool and are sent again";

/// The ACL a principal lacks when `api` was refused with an authorization
/// error about `topic` (`cluster`: CLUSTER_AUTHORIZATION_FAILED), for the
/// error log.
pub fn missing_acl(topic: &str, api: &str, cluster: bool) -> String {
    match (api, cluster) {
        ("CreateTopics", _) => format!("CREATE on topic {topic} or on the cluster (or create the topic and set kafka.create_topics: false)"),
        (_, true) => "IDEMPOTENT_WRITE on the cluster (or WRITE on the topic)".to_string(),
        _ => format!("DESCRIBE and WRITE on topic {topic}"),
    }
}

/// The replication factor of a topic logcatch creates: `configured`, or
/// when that is -1 (the default) min(3, `brokers`), not the broker's
/// `default.replication.factor`, which Apache Kafka ships as 1 (acks=all
/// would then mean one copy).
pub fn replicas(configured: i16, brokers: usize) -> i16 {
    if configured != -1 {
        return configured;
    }
    brokers.clamp(1, 3) as i16
}

/// Logs the creation of `topic` (once it succeeded, not at each try).
fn created(topic: &str, partitions: i32, replicas: i16) {
    tracing::info!(
        topic,
        partitions,
        replicas,
        "created the topic (replicas: kafka.topic_replication_factor; -1 is min(3, brokers))"
    );
}

/// A topic check or creation the broker refused, retried in place.
struct Refusal {
    error: String,
    /// For want of an ACL: logged as an error, the operator must act.
    not_authorized: bool,
    /// A broker refused the TLS handshake or SASL login: logged as an
    /// error, and the broker state is `auth_failed`.
    security: bool,
}

/// After creating `topic`: waits (up to 5 s) for the bootstrap broker's
/// metadata to list it, which in a KRaft cluster lags the creation a
/// little; still missing then is a [`ProducerError::Topic`], retried.
fn until_listed(p: &mut NativeProducer, topic: &str) -> Result<(), ProducerError> {
    for _ in 0..25 {
        if p.lookup_topic(topic)? == TopicLookup::Present {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(ProducerError::Topic {
        topic: topic.to_string(),
        error: "created, but the metadata does not list it yet".into(),
    })
}

/// Creates missing topics once each (when `kafka.create_topics` is on): a
/// topic is created only when the cluster's metadata says it is missing
/// (UNKNOWN_TOPIC_OR_PARTITION), never because a check could not be made.
pub struct TopicCreator {
    /// librdkafka's admin client, for a librdkafka session.
    admin: TopicAdmin,
    enabled: bool,
    known: BTreeSet<String>,
    partitions: i32,
    /// -1: min(3, brokers), see [`replicas`].
    replication: i16,
    /// Where a refusal shows (`last_error`, the broker state).
    stats: Arc<ForwardStats>,
}

impl TopicCreator {
    pub fn new(
        kafka: &KafkaConfig,
        runtime: tokio::runtime::Handle,
        stats: Arc<ForwardStats>,
    ) -> TopicCreator {
        TopicCreator {
            admin: TopicAdmin::new(runtime),
            stats,
            enabled: kafka.create_topics,
            known: BTreeSet::new(),
            partitions: kafka.topic_partitions,
            replication: kafka.topic_replication_factor,
        }
    }

    /// Returns false if `give_up` said so first (shutdown past its
    /// deadline, or new Kafka settings to apply). A refusal (the topic
    /// cannot be described or created yet, or an ACL is missing) is logged
    /// once and retried with back-off from 500 ms to 30 s while the lines
    /// wait in the spool; any other failure of the native producer (a setup
    /// request that timed out, or a Produce answer that arrived meanwhile
    /// with an error) is returned and ends the session: the producer may be
    /// out of step with the broker.
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
        let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut outage = Outage::default();
        loop {
            let Err(r) = self.attempt(client, config, topic)? else {
                if let Some(failures) = outage.recovered() {
                    tracing::info!(topic, failures, "the topic is there now; sending");
                }
                self.known.insert(topic.to_string());
                return Ok(true);
            };
            *lock(&self.stats.last_error) = Some(r.error.clone());
            if r.security {
                self.stats.broker_state.store(BrokerState::AuthFailed);
            }
            if outage.failed() {
                if r.security {
                    tracing::error!(topic, error = %r.error, "Kafka refuses logcatch's TLS handshake or SASL login (check kafka.tls and kafka.sasl); retrying with back-off (lines wait in the spool)");
                } else if r.not_authorized {
                    tracing::error!(topic, error = %r.error, "Kafka refuses logcatch for want of an ACL; retrying with back-off (lines wait in the spool)");
                } else {
                    tracing::warn!(topic, error = %r.error, "cannot check or create the topic yet; retrying (lines wait in the spool)");
                }
            }
            if !retry.sleep(give_up) {
                return Ok(false);
            }
        }
    }

    /// Checks `topic` once, and creates it if the metadata says it is
    /// missing. `Ok(Err)`: a refusal to retry.
    fn attempt(
        &mut self,
        client: &mut Client,
        config: &ClientConfig,
        topic: &str,
    ) -> Result<Result<(), Refusal>, ProducerError> {
        let (partitions, replication) = (self.partitions, self.replication);
        match client {
            Client::Native(p) => {
                let outcome = match p.lookup_topic(topic) {
                    Ok(TopicLookup::Present) => Ok(()),
                    Ok(TopicLookup::Missing { brokers }) => {
                        let n = replicas(replication, brokers);
                        p.create_topic(topic, partitions, n)
                            .and_then(|()| until_listed(p, topic))
                            .map(|()| created(topic, partitions, n))
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => Ok(Ok(())),
                    Err(e @ ProducerError::NotAuthorized { .. }) => Ok(Err(Refusal {
                        error: e.to_string(),
                        not_authorized: true,
                        security: false,
                    })),
                    Err(e @ ProducerError::Topic { .. }) => Ok(Err(Refusal {
                        error: e.to_string(),
                        not_authorized: false,
                        security: false,
                    })),
                    Err(e) => Err(e),
                }
            }
            Client::Librdkafka(p) => {
                let admin = &mut self.admin;
                let outcome = match admin.lookup_topic(config, topic) {
                    Ok(TopicLookup::Present) => Ok(()),
                    Ok(TopicLookup::Missing { brokers }) => {
                        let n = replicas(replication, brokers);
                        admin
                            .create_topic(config, topic, partitions, n)
                            .map(|()| created(topic, partitions, n))
                    }
                    Err(e) => Err(e),
                };
                // Why the brokers could not be reached (a refused TLS
                // handshake or SASL login) only goes to the producer's
                // error and log callbacks, which set the broker state:
                // polled here, since nothing else polls it while this
                // waits.
                p.poll(Duration::ZERO);
                let refused_login = self.stats.broker_state.load() == BrokerState::AuthFailed;
                Ok(outcome.map_err(|e| Refusal {
                    not_authorized: matches!(e, TopicError::NotAuthorized { .. }),
                    security: refused_login,
                    error: match lock(&self.stats.last_error).clone() {
                        Some(why) if refused_login => format!("{e} ({why})"),
                        _ => e.to_string(),
                    },
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::librdkafka::TopicAdmin;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;

    /// A mock cluster of one broker with topic `t1`.
    fn cluster() -> MockCluster<'static, DefaultProducerContext> {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t1", 1, 1).expect("create topic");
        cluster
    }

    fn native(cluster: &MockCluster<'_, DefaultProducerContext>) -> Client {
        let settings = ProducerSettings {
            brokers: cluster.bootstrap_servers(),
            client_id: "test".into(),
            lz4: false,
            linger: Duration::from_millis(5),
            batch_bytes: 64 << 10,
            allow_auto_create: false,
            timeouts: Timeouts::DEFAULT,
            bootstrap_turn: 0,
            tls: None,
            sasl: None,
        };
        Client::Native(Box::new(
            NativeProducer::connect(settings, "h1").expect("connect"),
        ))
    }

    fn creator(runtime: &tokio::runtime::Runtime) -> TopicCreator {
        let kafka = KafkaConfig {
            brokers: String::new(),
            topic: "t1".into(),
            compression: "none".into(),
            client: KafkaClient::Native,
            linger_ms: 5,
            create_topics: true,
            topic_partitions: 1,
            topic_replication_factor: -1,
            shutdown_ack_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(120),
            tls: None,
            sasl: None,
            properties: Default::default(),
        };
        TopicCreator::new(&kafka, runtime.handle().clone(), Default::default())
    }

    /// A topic the metadata lists is not created again: the mock broker
    /// takes no CreateTopics at all, so sending one would fail `ensure`.
    #[test]
    fn an_existing_topic_is_not_created_again() {
        let cluster = cluster();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mut client = native(&cluster);
        let config = ClientConfig::new();
        let mut topics = creator(&runtime);
        let ready = topics
            .ensure(&mut client, &config, "t1", &|| true)
            .expect("no session failure");
        assert!(ready, "t1 exists: no CreateTopics, no retry");
        let Client::Native(p) = &mut client else {
            unreachable!()
        };
        p.target("t1", "a", "/a.log", (1, 0)).expect("routed");
    }

    /// Both clients report a topic missing only when the metadata answers
    /// UNKNOWN_TOPIC_OR_PARTITION, with the number of brokers.
    #[test]
    fn lookup_says_missing_only_for_an_unknown_topic() {
        let cluster = cluster();
        let Client::Native(mut p) = native(&cluster) else {
            unreachable!()
        };
        assert_eq!(p.lookup_topic("t1").expect("t1"), TopicLookup::Present);
        assert_eq!(
            p.lookup_topic("nope").expect("nope"),
            TopicLookup::Missing { brokers: 1 }
        );
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mut admin = TopicAdmin::new(runtime.handle().clone());
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        assert_eq!(
            admin.lookup_topic(&config, "t1").expect("t1"),
            TopicLookup::Present
        );
        assert_eq!(
            admin.lookup_topic(&config, "nope").expect("nope"),
            TopicLookup::Missing { brokers: 1 }
        );
    }

    /// -1 picks min(3, brokers); a configured factor is kept.
    #[test]
    fn default_replication_is_min_of_3_and_brokers() {
        assert_eq!(replicas(-1, 1), 1);
        assert_eq!(replicas(-1, 2), 2);
        assert_eq!(replicas(-1, 3), 3);
        assert_eq!(replicas(-1, 7), 3);
        assert_eq!(replicas(-1, 0), 1, "no broker listed: still valid");
        assert_eq!(replicas(2, 7), 2);
    }

    /// An authorization refusal names the ACL that is missing.
    #[test]
    fn an_acl_refusal_names_the_missing_acl() {
        assert!(missing_acl("t", "Metadata", false).contains("DESCRIBE and WRITE on topic t"));
        assert!(missing_acl("t", "CreateTopics", false).contains("CREATE on topic t"));
        assert!(missing_acl("t", "InitProducerId", true).contains("IDEMPOTENT_WRITE"));
    }
}
