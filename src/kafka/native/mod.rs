//! native: logcatch's own Kafka producer, the one the
//! [`forwarder`](crate::kafka::forwarder) uses by default. It owns the
//! broker connections, the idempotent producer id with each partition's
//! sequence numbers, and the encoding of Kafka record batches (magic v2),
//! which it writes straight from spooled lines: no allocation per line.
//!
//! Why not librdkafka on this path: a profile of workload W1 showed about 85 %
//! of the collector's CPU in librdkafka's per-message work (a malloc per
//! message and per header, a delivery-report event per message, message-set
//! writing). Here a line costs a few varints and two copies. librdkafka stays
//! available (`kafka.client: librdkafka`, see
//! [`KafkaClient`](crate::config::KafkaClient)) for what this producer does
//! not do: SASL OAUTHBEARER, gzip/snappy/zstd and raw `kafka.properties`.
//! TLS (`kafka.tls`, through rustls) and SASL PLAIN and SCRAM-SHA-256/512
//! (`kafka.sasl`) it does itself.
//!
//! Layout, from the bytes up:
//! - `record`: record batch v2 encoding (the header's fields by name,
//!   varints, headers, lz4 framing, crc32c) and [`partition_for`].
//! - `wire`: request framing, response frames, API versions, correlation
//!   ids, the protocol's timeouts.
//! - `tls`: the session's rustls configuration (CA file or system roots,
//!   client certificate, host-name check), the handshake, and a TLS
//!   connection's read and write halves, which never block on the socket
//!   while holding the shared TLS state.
//! - `sasl`: the SASL login (SaslHandshake v1, SaslAuthenticate): PLAIN's
//!   and SCRAM's messages, the server's SCRAM signature checked.
//! - `transport`: a connection's halves (plain or TLS) and its
//!   establishment: TLS handshake, ApiVersions, SASL login, all before its
//!   reader thread starts.
//! - `connection`: one broker connection, its reader thread, its queues of
//!   waiting and unanswered batches ([`MAX_IN_FLIGHT`]).
//! - `producer`: [`NativeProducer`], its partitions, sequence numbers,
//!   batching and answers; its `setup` part sends the setup requests
//!   (versions, producer id, metadata, topic creation: only for a topic the
//!   metadata says is missing, see [`TopicLookup`]); its `retry` part
//!   holds a partition's batches after an error a retry can clear and
//!   sends them again in the session.
//!
//! Invariants:
//! - Every Produce request asks for acks=-1 (all in-sync replicas), and every
//!   batch carries the producer id and epoch from `InitProducerId` and its
//!   partition's next sequence number, so the broker drops a duplicated batch
//!   and refuses a gap (idempotence).
//! - A line is reported delivered ([`Event::Acked`]) only when the Produce
//!   response for its batch says so, with the offset Kafka gave it.
//! - A partition's batches are sealed, numbered and written in one order on
//!   one connection, at most [`MAX_IN_FLIGHT`] (5) unanswered per connection,
//!   the most for which Kafka keeps an idempotent producer's order.
//! - A line too large to share a batch goes alone, and its partition seals
//!   no further batch until that one is answered. If Kafka refuses it for
//!   good ([`Event::Refused`], for the dead-letter file), the broker did not
//!   take its sequence number, so the partition's next batch takes that
//!   number again and the sequence stays gapless.
//! - An error a retry can clear (NOT_LEADER_OR_FOLLOWER,
//!   NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, a lost or silent connection)
//!   holds the partition's batches and sends them again in the session,
//!   as the same bytes with the same producer id and sequence numbers, so
//!   the broker drops a copy it already has (the producer's `retry` part;
//!   its module doc has the argument). Past `kafka.delivery_timeout` of
//!   that, and on any other failure, the session ends with `Err`. The
//!   forwarder then rebuilds from its cursor, and the delivery
//!   [`ledger`](crate::kafka::ledger)'s read-back skips what Kafka already
//!   has, so a resend never duplicates. An `Err` from a setup request
//!   ([`NativeProducer::create_topic`], [`NativeProducer::target`]) ends
//!   the session too: the connection may be out of step.
//! - A broker refusing the TLS handshake or the SASL login (or TLS files
//!   that cannot be read) is [`ProducerError::Tls`] or
//!   [`ProducerError::Authentication`]: the session ends (the status shows
//!   `auth_failed`), and the forwarder backs off before the next one. They
//!   are never retried inside the session as a lost connection would be.
//! - INVALID_TIMESTAMP (the host's clock is ahead of the broker's) is
//!   [`ProducerError::ClockAhead`]: the session ends and the lines stay in
//!   the spool, never dropped nor dead-lettered.
//!
//! - A Produce answer's `throttle_time_ms` holds that connection's next
//!   request back until the throttle ends (KIP-219), as the Java client
//!   and librdkafka do.
//! - Each session asks the bootstrap brokers in turn, starting at the next
//!   one ([`ProducerSettings::bootstrap_turn`]); one that does not answer
//!   within [`Timeouts::request`] is skipped.
//!
//! Must never: report a line delivered that no Produce response covered, or
//! send a partition's batches out of sequence order.

mod connection;
mod producer;
mod record;
mod sasl;
mod tls;
mod transport;
mod wire;

pub use connection::MAX_IN_FLIGHT;
pub use producer::{
    Event, FrameTarget, LoneLine, NativeProducer, ProducerSettings, TopicLookup, BATCH_BYTES,
};
pub use record::partition_for;
pub use wire::Timeouts;

/// Why the native producer failed; every variant names the broker or the
/// topic it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("cannot connect to Kafka broker {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("Kafka broker {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kafka broker {addr}: {detail}")]
    Protocol { addr: String, detail: String },
    /// The TLS handshake failed (an untrusted CA, an expired or misnamed
    /// certificate, a broker that wants a client certificate), or the TLS
    /// files could not be loaded: [`crate::kafka::forwarder::BrokerState::AuthFailed`].
    #[error("TLS with Kafka broker {addr} failed: {detail}")]
    Tls { addr: String, detail: String },
    /// The broker refused the SASL login (a wrong user name or password,
    /// a mechanism it does not enable):
    /// [`crate::kafka::forwarder::BrokerState::AuthFailed`].
    #[error("SASL {mechanism} login to Kafka broker {addr} failed: {detail}")]
    Authentication {
        addr: String,
        mechanism: &'static str,
        detail: String,
    },
    #[error("Kafka broker {addr}: {api} refused: {error}")]
    Refused {
        addr: String,
        api: &'static str,
        error: String,
    },
    #[error("Kafka broker {addr} did not answer for {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("topic {topic}: {error}")]
    Topic { topic: String, error: String },
    /// The broker refused for want of an ACL: `acl` says which.
    #[error(
        "topic {topic}: {api} refused: {error}: the principal logcatch connects as needs {acl}"
    )]
    NotAuthorized {
        topic: String,
        api: &'static str,
        error: String,
        acl: String,
    },
    /// Kafka refused a batch with INVALID_TIMESTAMP: this host's clock is
    /// off. The lines stay in the spool and are sent again.
    #[error(
        "Kafka broker {addr} refused lines for {topic}/{partition} with INVALID_TIMESTAMP: {}",
        crate::kafka::client::CLOCK_HINT
    )]
    ClockAhead {
        addr: String,
        topic: String,
        partition: i32,
    },
    /// A partition kept failing with errors a retry can clear (a leader
    /// change, too few in-sync replicas, a lost connection) for longer than
    /// `kafka.delivery_timeout`: the session ends, and the next one starts
    /// over from the spool cursor.
    #[error("Kafka did not take lines for {topic}/{partition} in {secs} s of retries (last: {error}); starting a new session")]
    GaveUp {
        topic: String,
        partition: i32,
        secs: u64,
        error: String,
    },
    /// A batch of several lines was refused as too large or invalid; the
    /// next session sends smaller batches (see
    /// [`forwarder`](crate::kafka::forwarder)).
    #[error("Kafka refused a batch of {lines} lines for {topic}/{partition}: {error}")]
    BatchRefused {
        topic: String,
        partition: i32,
        lines: u32,
        error: String,
    },
}

impl ProducerError {
    /// A [`ProducerError::Topic`] about `topic`.
    fn topic(topic: &str, error: impl Into<String>) -> Self {
        ProducerError::Topic {
            topic: topic.to_string(),
            error: error.into(),
        }
    }

    /// A broker refusing us: [`ProducerError::Tls`] or
    /// [`ProducerError::Authentication`] (broker state `auth_failed`).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ProducerError::Tls { .. } | ProducerError::Authentication { .. }
        )
    }
}

/// Keeps in `kept`, of the errors of brokers tried one after another, the
/// one to report: the first refusal (one broker refusing the login ends
/// the session, whatever the others said), else the latest error.
fn keep_the_refusal(kept: &mut Option<ProducerError>, e: ProducerError) {
    if !kept.as_ref().is_some_and(ProducerError::is_refusal) {
        *kept = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_brokers_tried_in_turn_a_refusal_is_reported_over_lost_connections() {
        let connect = |addr: &str| ProducerError::Connect {
            addr: addr.into(),
            detail: "refused".into(),
        };
        let mut kept = None;
        keep_the_refusal(&mut kept, connect("a:1"));
        keep_the_refusal(&mut kept, connect("b:1"));
        assert!(
            matches!(&kept, Some(ProducerError::Connect { addr, .. }) if addr == "b:1"),
            "the latest of errors alike: {kept:?}"
        );
        keep_the_refusal(
            &mut kept,
            ProducerError::Authentication {
                addr: "c:1".into(),
                mechanism: "PLAIN",
                detail: "wrong password".into(),
            },
        );
        keep_the_refusal(&mut kept, connect("d:1"));
        keep_the_refusal(
            &mut kept,
            ProducerError::Tls {
                addr: "e:1".into(),
                detail: "unknown CA".into(),
            },
        );
        assert!(
            matches!(&kept, Some(ProducerError::Authentication { addr, .. }) if addr == "c:1"),
            "the first refusal: {kept:?}"
        );
    }
}
