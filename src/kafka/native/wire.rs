//! wire: Kafka's request and response framing, as the native producer
//! speaks it. It owns the encoding of a request (size, header, body, and a
//! record batch written after it uncopied), the reading of a response frame
//! and the check that it answers the request due, the API versions agreed
//! with the broker, correlation ids, and the protocol's timeouts.
//!
//! Invariants:
//! - A response frame larger than [`MAX_RESPONSE_BYTES`] is an error, never
//!   an allocation.
//! - An answer whose correlation id is not the one due is an error: the
//!   connection is out of step.
//! - Only a one-partition Produce request v3..=v8, whose records field is
//!   last, takes a batch after its encoding ([`encode_request`]).
//!
//! Must never: hold connection or producer state; it encodes and decodes
//! what it is given.

use std::io::Read;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

use super::ProducerError;

/// The producer's timeouts, from `kafka.request_timeout` and
/// `kafka.connect_timeout`
/// ([`KafkaConfig`](crate::config::KafkaConfig)).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// What the broker may take to answer a Produce request (its
    /// `timeout_ms`), and what a setup request (versions, producer id,
    /// metadata, topic creation) may take before the session ends.
    pub request: Duration,
    /// Connecting to a broker.
    pub connect: Duration,
    /// How long a partition may keep failing with errors a retry can clear
    /// (a leader change, too few in-sync replicas, a lost connection)
    /// before the session ends; until then its batches are sent again in
    /// the session, with the same sequence numbers (the Java client's
    /// `delivery.timeout.ms`).
    pub delivery: Duration,
}

impl Timeouts {
    /// librdkafka's defaults: 30 s requests, 10 s connections; the Java
    /// client's 120 s of retries.
    pub const DEFAULT: Timeouts = Timeouts {
        request: Duration::from_secs(30),
        connect: Duration::from_secs(10),
        delivery: Duration::from_secs(120),
    };

    /// Past this without a Produce answer the connection is given up: the
    /// broker's own `timeout_ms` plus slack for the answer to travel.
    pub(super) fn answer(&self) -> Duration {
        self.request + ANSWER_SLACK
    }

    /// The Produce request's `timeout_ms`.
    pub(super) fn produce_ms(&self) -> i32 {
        self.request.as_millis().min(i32::MAX as u128) as i32
    }
}

/// What a Produce answer may take beyond the broker's `timeout_ms`.
const ANSWER_SLACK: Duration = Duration::from_secs(15);
/// A response larger than this is a protocol error, not an allocation.
pub(super) const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The version of each API the producer speaks to the broker.
#[derive(Debug, Clone, Copy)]
pub(super) struct Versions {
    pub(super) produce: i16,
    pub(super) metadata: i16,
    pub(super) init_producer_id: i16,
    /// None: the broker does not take CreateTopics at a version we speak.
    pub(super) create_topics: Option<i16>,
}

impl Versions {
    /// Until the broker's ApiVersions answer is in (which is asked at v0).
    pub(super) const BEFORE_NEGOTIATION: Versions = Versions {
        produce: 3,
        metadata: 1,
        init_producer_id: 0,
        create_topics: None,
    };

    /// The highest version of each API that both the broker at `addr`
    /// (its ApiVersions answer `r`) and this code speak.
    pub(super) fn negotiate(r: &ApiVersionsResponse, addr: &str) -> Result<Self, ProducerError> {
        let pick = |key: ApiKey, lowest: i16, highest: i16| {
            highest_common(r, key, lowest, highest).ok_or_else(|| ProducerError::Protocol {
                addr: addr.to_string(),
                detail: format!(
                    "the broker does not speak {key:?} v{lowest}..v{highest} (use kafka.client: librdkafka)"
                ),
            })
        };
        Ok(Versions {
            // Up to v8, where a batch can follow the request unencoded
            // (see `encode_request`).
            produce: pick(ApiKey::Produce, 3, 8)?,
            metadata: pick(ApiKey::Metadata, 1, 9)?,
            init_producer_id: pick(ApiKey::InitProducerId, 0, 4)?,
            create_topics: pick(ApiKey::CreateTopics, 2, 5).ok(),
        })
    }
}

/// Highest version of `key` both sides speak, capped at what this code was
/// tested with (`lowest..=highest`); None if the broker's range misses it.
fn highest_common(r: &ApiVersionsResponse, key: ApiKey, lowest: i16, highest: i16) -> Option<i16> {
    let broker = r
        .api_keys
        .iter()
        .find(|k| k.api_key == key as i16)
        .map(|k| (k.min_version, k.max_version));
    match broker {
        Some((lo, hi)) if hi >= lowest && lo <= highest => Some(hi.min(highest)),
        _ => None,
    }
}

/// The correlation ids of one producer's requests: 1 up, wrapping to 1.
pub(super) struct Correlations {
    next: i32,
}

impl Correlations {
    pub(super) fn new() -> Self {
        Correlations { next: 1 }
    }

    pub(super) fn next(&mut self) -> i32 {
        let c = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        c
    }
}

/// How a Kafka error reads in a message: its name and code.
pub(super) fn error_name(error: ResponseError) -> String {
    format!("{error:?} ({})", error.code())
}

/// A one-partition Produce request asking for acks from all in-sync
/// replicas, with `records` as the partition's records (empty when the
/// batch follows as the request's tail, see [`encode_request`]).
pub(super) fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
    timeout_ms: i32,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// What a request's header says: the API and version of its body, the
/// correlation id its answer will carry, and who asks.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestHead<'a> {
    pub(super) api: ApiKey,
    pub(super) version: i16,
    pub(super) correlation: i32,
    pub(super) client_id: &'a str,
}

/// Encodes size, header and body of a request into `out`. With `tail`, the
/// body's encoding ends in the empty records field of a one-partition
/// Produce request (v3..=v8, where that field is last: an int32 length,
/// then the bytes): the length is set to the tail's, and the tail is to be
/// written after `out`, so a batch is never copied into the request.
pub(super) fn encode_request<R: Encodable>(
    out: &mut BytesMut,
    head: &RequestHead<'_>,
    body: &R,
    tail: Option<&[u8]>,
) -> anyhow::Result<()> {
    let RequestHead {
        api,
        version,
        correlation,
        client_id,
    } = *head;
    out.clear();
    out.extend_from_slice(&[0; 4]);
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    header.encode(out, api.request_header_version(version))?;
    body.encode(out, version)?;
    let mut len = out.len() - 4;
    if let Some(tail) = tail {
        anyhow::ensure!(
            api == ApiKey::Produce && (3..=8).contains(&version) && out.ends_with(&[0; 4]),
            "a tail only follows a one-partition Produce request v3..=v8"
        );
        let n = out.len();
        out[n - 4..].copy_from_slice(&(tail.len() as i32).to_be_bytes());
        len += tail.len();
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// The body of an answer read from `addr`, after checking that its header
/// answers request `correlation`.
pub(super) fn answer_body(
    addr: &str,
    r: std::io::Result<Bytes>,
    api: ApiKey,
    version: i16,
    correlation: i32,
) -> Result<Bytes, ProducerError> {
    let mut buf = r.map_err(|source| ProducerError::Io {
        addr: addr.to_string(),
        source,
    })?;
    let header =
        ResponseHeader::decode(&mut buf, api.response_header_version(version)).map_err(|e| {
            ProducerError::Protocol {
                addr: addr.to_string(),
                detail: format!("{api:?} response header: {e}"),
            }
        })?;
    if header.correlation_id != correlation {
        return Err(ProducerError::Protocol {
            addr: addr.to_string(),
            detail: format!(
                "answer {} arrived where {correlation} was due",
                header.correlation_id
            ),
        });
    }
    Ok(buf)
}

/// One response frame, without its size prefix.
pub(super) fn read_response(s: &mut impl Read) -> std::io::Result<Bytes> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let n = u32::from_be_bytes(size) as usize;
    if n > MAX_RESPONSE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a response of {n} bytes is past the {MAX_RESPONSE_BYTES}-byte limit"),
        ));
    }
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_request_with_tail_equals_the_full_encoding() {
        let batch = Bytes::from_static(b"0123456789 a record batch");
        let req = |records: Bytes| produce_request("logs", 2, records, 30_000);
        let request_head = |version| RequestHead {
            api: ApiKey::Produce,
            version,
            correlation: 7,
            client_id: "c",
        };
        for version in 3..=8 {
            let mut full = BytesMut::new();
            encode_request(&mut full, &request_head(version), &req(batch.clone()), None)
                .expect("full");
            let mut head = BytesMut::new();
            encode_request(
                &mut head,
                &request_head(version),
                &req(Bytes::new()),
                Some(&batch),
            )
            .expect("head");
            let mut joined = head.to_vec();
            joined.extend_from_slice(&batch);
            assert_eq!(joined, full.to_vec(), "v{version}");
        }
        let mut out = BytesMut::new();
        assert!(
            encode_request(&mut out, &request_head(9), &req(Bytes::new()), Some(&batch)).is_err(),
            "v9 puts tagged fields after the records"
        );
    }

    #[test]
    fn correlation_ids_wrap_to_one() {
        let mut c = Correlations::new();
        assert_eq!((c.next(), c.next()), (1, 2));
        c.next = i32::MAX;
        assert_eq!((c.next(), c.next()), (i32::MAX, 1));
    }

    #[test]
    fn versions_are_the_highest_both_sides_speak() {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        let api = |key: ApiKey, lo: i16, hi: i16| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(lo)
                .with_max_version(hi)
        };
        let r = ApiVersionsResponse::default().with_api_keys(vec![
            api(ApiKey::Produce, 0, 11),
            api(ApiKey::Metadata, 0, 4),
            api(ApiKey::InitProducerId, 0, 4),
        ]);
        let v = Versions::negotiate(&r, "b:9092").expect("versions");
        assert_eq!((v.produce, v.metadata, v.init_producer_id), (8, 4, 4));
        assert_eq!(v.create_topics, None, "CreateTopics is optional");
        let old = ApiVersionsResponse::default().with_api_keys(vec![api(ApiKey::Produce, 0, 2)]);
        assert!(matches!(
            Versions::negotiate(&old, "b:9092"),
            Err(ProducerError::Protocol { .. })
        ));
    }
}
