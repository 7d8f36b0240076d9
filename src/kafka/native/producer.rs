//! producer: the native Kafka producer the forwarder uses by default. It owns
//! the broker connections, the idempotent producer id with each partition's
//! sequence numbers, and the encoding of Kafka record batches (magic v2),
//! which it writes straight from spooled lines: no allocation per line.
//!
//! Why not librdkafka on this path: a profile of workload W1 showed about 85 %
//! of the collector's CPU in librdkafka's per-message work (a malloc per
//! message and per header, a delivery-report event per message, message-set
//! writing). Here a line costs a few varints and two copies. librdkafka stays
//! available (`kafka.client: librdkafka`) for what this producer does not do:
//! TLS, SASL, gzip/snappy/zstd and raw `kafka.properties`.
//!
//! Invariants:
//! - Every Produce request asks for acks=-1 (all in-sync replicas), and every
//!   batch carries the producer id and epoch from `InitProducerId` and its
//!   partition's next sequence number, so the broker drops a duplicated batch
//!   and refuses a gap (idempotence).
//! - A line is reported delivered (`Event::Acked`) only when the Produce
//!   response for its batch says so, with the offset Kafka gave it.
//! - A partition's batches are sealed, numbered and written in one order on
//!   one connection, at most `MAX_IN_FLIGHT` (5) unanswered per connection,
//!   the most for which Kafka keeps an idempotent producer's order.
//! - A line too large to share a batch goes alone, and its partition seals
//!   no further batch until that one is answered. If Kafka refuses it for
//!   good (`Event::Refused`, for the dead-letter file), the broker did not
//!   take its sequence number, so the partition's next batch takes that
//!   number again and the sequence stays gapless.
//! - No retry inside a session: any other failure (connection lost,
//!   timeout, an error the broker may later clear) ends the session with
//!   `Err`. The forwarder then rebuilds from its cursor, and the delivery
//!   ledger's read-back skips what Kafka already has, so a resend never
//!   duplicates. An `Err` from a setup request (`create_topic`, `target`)
//!   ends the session too: the connection may be out of step.
//!
//! Must never: report a line delivered that no Produce response covered, or
//! send a partition's batches out of sequence order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

/// Unanswered requests per connection: Kafka keeps an idempotent producer's
/// order for at most 5.
pub const MAX_IN_FLIGHT: usize = 5;
/// Sealed batches that may wait behind a full connection before `append`
/// blocks for an answer (the spool, not memory, is the buffer).
const MAX_WAITING: usize = 2;
/// Records bytes in one batch before it is sealed (librdkafka's default
/// `batch.size`; under the broker's default `message.max.bytes`).
pub const BATCH_BYTES: usize = 1_000_000;
/// What the broker may take to answer a Produce request.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Past this without an answer the connection is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(45);
/// Connecting, and the setup requests (versions, metadata, producer id).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A response larger than this is a protocol error, not an allocation.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Bytes of a record batch before its records (magic v2).
const BATCH_HEADER: usize = 61;

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
    /// A batch of several lines was refused as too large or invalid; the
    /// next session sends smaller batches (see `Forwarder`).
    #[error("Kafka refused a batch of {lines} lines for {topic}/{partition}: {error}")]
    BatchRefused {
        topic: String,
        partition: i32,
        lines: u32,
        error: String,
    },
}

/// How the producer is set up; built from `KafkaConfig` by the forwarder.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub brokers: String,
    pub client_id: String,
    pub lz4: bool,
    pub linger: Duration,
    /// Records bytes per batch before it is sealed.
    pub batch_bytes: usize,
    /// Let the broker create a missing topic on a metadata request (when
    /// logcatch does not create topics itself).
    pub allow_auto_create: bool,
}

/// What happened to sent lines; drained with [`NativeProducer::take_events`].
#[derive(Debug)]
pub enum Event {
    /// `lines` more lines of `frame` are in Kafka, the last at
    /// `partition`/`last_offset` (None when the broker did not say).
    Acked {
        frame: u64,
        lines: u32,
        partition: i32,
        last_offset: Option<i64>,
    },
    /// Kafka refused this line for good (e.g. larger than it allows).
    Refused {
        frame: u64,
        line: LoneLine,
        error: String,
    },
}

/// A line sent in a batch of its own, kept until answered so a permanent
/// refusal can name it and put it in the dead-letter file.
#[derive(Debug, Clone)]
pub struct LoneLine {
    pub topic: String,
    pub source: String,
    pub path: String,
    pub offset: u64,
    pub value: Vec<u8>,
}

/// Where one spooled frame's lines go, with the parts of each record that
/// are the same for every line of the frame, encoded once.
pub struct FrameTarget {
    topic: String,
    partition: i32,
    /// The partition's slot in `NativeProducer::partitions`.
    slot: usize,
    /// The records' timestamp (Unix ms): when the frame was taken up.
    now_ms: i64,
    source: String,
    path: String,
    key: Vec<u8>,
    /// The `source` and `path` headers, encoded.
    headers_before: Vec<u8>,
    /// The `host` header, encoded.
    headers_after: Vec<u8>,
}

/// The producer's per-thread scratch and connections. Not `Sync`: the
/// forwarder thread owns it.
pub struct NativeProducer {
    settings: ProducerSettings,
    host_header: Vec<u8>,
    producer_id: i64,
    producer_epoch: i16,
    versions: Versions,
    /// Connection 0 is to the bootstrap broker; leaders follow, by node id.
    conns: Vec<Connection>,
    by_node: HashMap<i32, usize>,
    nodes: BTreeMap<i32, String>,
    topics: HashMap<String, Vec<i32>>,
    /// Every known partition, by slot; `slots` finds a partition's slot.
    partitions: Vec<PartitionState>,
    slots: HashMap<(String, i32), usize>,
    responses: Receiver<(usize, std::io::Result<Bytes>)>,
    responses_tx: SyncSender<(usize, std::io::Result<Bytes>)>,
    events: Vec<Event>,
    next_correlation: i32,
}

#[derive(Debug, Clone, Copy)]
struct Versions {
    produce: i16,
    metadata: i16,
    init_producer_id: i16,
    /// None: the broker does not take CreateTopics at a version we speak.
    create_topics: Option<i16>,
}

struct PartitionState {
    topic: String,
    partition: i32,
    leader: i32,
    next_sequence: i32,
    open: Option<OpenBatch>,
    /// The base sequence of a sealed batch holding one lone line, until it
    /// is answered; no other batch of the partition is sealed meanwhile.
    lone_unanswered: Option<i32>,
}

struct OpenBatch {
    /// `BATCH_HEADER` bytes reserved, then the encoded records.
    buf: Vec<u8>,
    count: i32,
    base_ms: i64,
    max_ms: i64,
    opened: Instant,
    /// Consecutive records by frame: (frame, how many).
    runs: Vec<(u64, u32)>,
    lone: Option<LoneLine>,
}

/// What the answer to a sealed batch needs to know about it.
struct BatchLines {
    topic: String,
    partition: i32,
    slot: usize,
    count: i32,
    runs: Vec<(u64, u32)>,
    lone: Option<LoneLine>,
}

/// A batch waiting for room on its leader's connection.
struct Sealed {
    lines: BatchLines,
    batch: Bytes,
}

/// A Produce request sent and not yet answered.
struct InFlight {
    correlation: i32,
    version: i16,
    sent: Instant,
    lines: BatchLines,
}

struct Connection {
    addr: String,
    stream: TcpStream,
    reader: Option<JoinHandle<()>>,
    in_flight: VecDeque<InFlight>,
    waiting: VecDeque<Sealed>,
    /// Request bytes, reused.
    out: BytesMut,
    /// The broker closed it while nothing was asked (Kafka closes idle
    /// connections after `connections.max.idle.ms`): reopened when needed.
    closed: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("error code {code}"),
    }
}

/// Kafka's permanent refusals of a batch's content: MESSAGE_TOO_LARGE,
/// RECORD_LIST_TOO_LARGE, INVALID_RECORD. Not CORRUPT_MESSAGE: that one
/// says the encoding is wrong, which would hold for every line, so it ends
/// the session like any other error and the lines stay in the spool.
fn is_refusal(code: i16) -> bool {
    matches!(code, 10 | 18 | 87)
}

/// `host:port` for a broker the metadata lists; an IPv6 address goes in
/// brackets.
fn broker_addr(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Zigzag varint, as Kafka's records use.
fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_header(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    put_varint(buf, key.len() as i64);
    buf.extend_from_slice(key.as_bytes());
    put_varint(buf, value.len() as i64);
    buf.extend_from_slice(value);
}

/// The partition librdkafka's default (`consistent_random`) partitioner
/// picks for a key, so a source keeps its partition whichever client sends.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    (kafka_protocol::records::IEEE.checksum(key) as usize) % partitions.max(1)
}

/// Fills in a record batch's header (magic v2) in front of its records,
/// compressing them first with lz4 if asked. `buf` starts with
/// `BATCH_HEADER` reserved bytes.
fn finish_batch(
    mut buf: Vec<u8>,
    count: i32,
    base_ms: i64,
    max_ms: i64,
    producer: (i64, i16),
    base_sequence: i32,
    lz4: bool,
) -> Result<Bytes, ProducerError> {
    let mut attributes: i16 = 0;
    if lz4 {
        let mut out = Vec::with_capacity(BATCH_HEADER + buf.len() / 2 + 64);
        out.resize(BATCH_HEADER, 0);
        // The LZ4 frame format Kafka expects, with liblz4's fast
        // compressor (level 0), independent 64 KiB blocks and no checksums
        // (the batch's crc32c covers the compressed bytes), as librdkafka
        // writes it.
        let compressed = lz4::EncoderBuilder::new()
            .level(0)
            .block_size(lz4::BlockSize::Max64KB)
            .block_mode(lz4::BlockMode::Independent)
            .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
            .checksum(lz4::ContentChecksum::NoChecksum)
            .build(out)
            .and_then(|mut enc| {
                enc.write_all(&buf[BATCH_HEADER..])?;
                let (out, r) = enc.finish();
                r.map(|()| out)
            });
        buf = compressed.map_err(|e| ProducerError::Protocol {
            addr: String::new(),
            detail: format!("lz4 compression failed: {e}"),
        })?;
        attributes = 3;
    }
    let len = buf.len();
    let h = &mut buf[..BATCH_HEADER];
    h[0..8].copy_from_slice(&0i64.to_be_bytes());
    h[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
    h[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    h[16] = 2;
    h[21..23].copy_from_slice(&attributes.to_be_bytes());
    h[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    h[27..35].copy_from_slice(&base_ms.to_be_bytes());
    h[35..43].copy_from_slice(&max_ms.to_be_bytes());
    h[43..51].copy_from_slice(&producer.0.to_be_bytes());
    h[51..53].copy_from_slice(&producer.1.to_be_bytes());
    h[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    h[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(buf))
}

/// Appends one record: `body` is its length after the length varint.
fn put_record(
    buf: &mut Vec<u8>,
    t: &FrameTarget,
    body: usize,
    ts_delta: i64,
    offset_delta: i64,
    offset_digits: &[u8],
    line: &[u8],
) {
    buf.reserve(body + 5);
    put_varint(buf, body as i64);
    buf.push(0);
    put_varint(buf, ts_delta);
    put_varint(buf, offset_delta);
    put_varint(buf, t.key.len() as i64);
    buf.extend_from_slice(&t.key);
    put_varint(buf, line.len() as i64);
    buf.extend_from_slice(line);
    put_varint(buf, 4);
    buf.extend_from_slice(&t.headers_before);
    put_header(buf, "offset", offset_digits);
    buf.extend_from_slice(&t.headers_after);
}

impl Connection {
    fn open(
        addr: &str,
        index: usize,
        tx: &SyncSender<(usize, std::io::Result<Bytes>)>,
    ) -> Result<Connection, ProducerError> {
        let connect_err = |detail: String| ProducerError::Connect {
            addr: addr.to_string(),
            detail,
        };
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| connect_err(e.to_string()))?
            .collect();
        let mut last = "the name resolved to no address".to_string();
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, SETUP_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let stream = stream.ok_or_else(|| connect_err(last))?;
        let io = |source| ProducerError::Io {
            addr: addr.to_string(),
            source,
        };
        stream.set_nodelay(true).map_err(io)?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        let mut read_half = stream.try_clone().map_err(io)?;
        let tx = tx.clone();
        let reader = std::thread::Builder::new()
            .name("kafka-reader".into())
            .spawn(move || loop {
                let r = read_response(&mut read_half);
                let stop = r.is_err();
                if tx.send((index, r)).is_err() || stop {
                    return;
                }
            })
            .map_err(io)?;
        Ok(Connection {
            addr: addr.to_string(),
            stream,
            reader: Some(reader),
            in_flight: VecDeque::new(),
            waiting: VecDeque::new(),
            out: BytesMut::with_capacity(64 << 10),
            closed: false,
        })
    }

    /// Writes one request. With `tail`, the body's encoding ends in the
    /// empty records field of a one-partition Produce request (v3..=v8,
    /// where that field is last: an int32 length, then the bytes): the
    /// length is set to the tail's and the tail is written after it, so a
    /// batch is never copied into the request.
    fn write_request<R: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        correlation: i32,
        client_id: &str,
        body: &R,
        tail: Option<&[u8]>,
    ) -> Result<(), ProducerError> {
        encode_request(
            &mut self.out,
            api,
            version,
            correlation,
            client_id,
            body,
            tail,
        )
        .map_err(|e| ProducerError::Protocol {
            addr: self.addr.clone(),
            detail: format!("cannot encode {api:?} v{version}: {e}"),
        })?;
        let io = |source| ProducerError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(&self.out).map_err(io)?;
        if let Some(tail) = tail {
            self.stream.write_all(tail).map_err(io)?;
        }
        if self.out.capacity() > 4 << 20 {
            // One huge line must not pin its buffer for good.
            self.out = BytesMut::with_capacity(64 << 10);
        }
        Ok(())
    }
}

/// Encodes size, header and body of a request into `out` (see
/// `Connection::write_request` for `tail`).
fn encode_request<R: Encodable>(
    out: &mut BytesMut,
    api: ApiKey,
    version: i16,
    correlation: i32,
    client_id: &str,
    body: &R,
    tail: Option<&[u8]>,
) -> anyhow::Result<()> {
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
fn answer_body(
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
fn read_response(s: &mut TcpStream) -> std::io::Result<Bytes> {
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

impl NativeProducer {
    /// Connects to the first bootstrap broker that answers, agrees on
    /// versions and gets an idempotent producer id.
    pub fn connect(settings: ProducerSettings, host: &str) -> Result<Self, ProducerError> {
        let (responses_tx, responses) = sync_channel(64);
        let mut last = None;
        let mut conn = None;
        for addr in settings
            .brokers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match Connection::open(addr, 0, &responses_tx) {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let conn = match (conn, last) {
            (Some(c), _) => c,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(ProducerError::Connect {
                    addr: settings.brokers.clone(),
                    detail: "no broker address given".into(),
                })
            }
        };
        let mut host_header = Vec::new();
        put_header(&mut host_header, "host", host.as_bytes());
        let mut p = NativeProducer {
            settings,
            host_header,
            producer_id: -1,
            producer_epoch: -1,
            versions: Versions {
                produce: 3,
                metadata: 1,
                init_producer_id: 0,
                create_topics: None,
            },
            conns: vec![conn],
            by_node: HashMap::new(),
            nodes: BTreeMap::new(),
            topics: HashMap::new(),
            partitions: Vec::new(),
            slots: HashMap::new(),
            responses,
            responses_tx,
            events: Vec::new(),
            next_correlation: 1,
        };
        p.negotiate_versions()?;
        p.init_producer_id()?;
        Ok(p)
    }

    /// Sends one request on connection `c` and waits for its answer (setup
    /// only: nothing else may be in flight there). Answers to Produce
    /// requests that arrive meanwhile are taken in; if one of them failed,
    /// that failure is returned, but only after this request's own answer,
    /// so that connection `c` stays in step.
    fn call<R: Encodable, S: Decodable>(
        &mut self,
        c: usize,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<S, ProducerError> {
        self.reopen_if_closed(c)?;
        let correlation = self.correlation();
        let client_id = self.settings.client_id.clone();
        self.conns[c].write_request(api, version, correlation, &client_id, body, None)?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let mut produce_failure = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (from, r) = match self.responses.recv_timeout(left) {
                Ok(x) => x,
                Err(_) => {
                    return Err(ProducerError::Timeout {
                        addr: self.conns[c].addr.clone(),
                        secs: SETUP_TIMEOUT.as_secs(),
                    })
                }
            };
            if from != c {
                // An answer to a Produce request on a leader's connection.
                if let Err(e) = self.answer(from, r) {
                    produce_failure.get_or_insert(e);
                }
                continue;
            }
            let addr = &self.conns[from].addr;
            let mut buf = answer_body(addr, r, api, version, correlation)?;
            if let Some(e) = produce_failure {
                return Err(e);
            }
            let proto = |detail: String| ProducerError::Protocol {
                addr: addr.clone(),
                detail,
            };
            return S::decode(&mut buf, version)
                .map_err(|e| proto(format!("{api:?} v{version}: {e}")));
        }
    }

    fn correlation(&mut self) -> i32 {
        let c = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1).max(1);
        c
    }

    fn negotiate_versions(&mut self) -> Result<(), ProducerError> {
        let r: ApiVersionsResponse =
            self.call(0, ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        let addr = self.conns[0].addr.clone();
        if r.error_code != 0 {
            return Err(ProducerError::Refused {
                addr,
                api: "ApiVersions",
                error: error_name(r.error_code),
            });
        }
        // Highest version both sides speak, capped at what this code was
        // tested with.
        let pick = |key: ApiKey, lowest: i16, highest: i16| -> Result<i16, ProducerError> {
            let broker = r
                .api_keys
                .iter()
                .find(|k| k.api_key == key as i16)
                .map(|k| (k.min_version, k.max_version));
            match broker {
                Some((lo, hi)) if hi >= lowest && lo <= highest => Ok(hi.min(highest)),
                _ => Err(ProducerError::Protocol {
                    addr: addr.clone(),
                    detail: format!(
                        "the broker does not speak {key:?} v{lowest}..v{highest} (use kafka.client: librdkafka)"
                    ),
                }),
            }
        };
        self.versions = Versions {
            // Up to v8, where a batch can follow the request unencoded
            // (see `encode_request`).
            produce: pick(ApiKey::Produce, 3, 8)?,
            metadata: pick(ApiKey::Metadata, 1, 9)?,
            init_producer_id: pick(ApiKey::InitProducerId, 0, 4)?,
            create_topics: pick(ApiKey::CreateTopics, 2, 5).ok(),
        };
        Ok(())
    }

    fn init_producer_id(&mut self) -> Result<(), ProducerError> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1i64).into())
            .with_producer_epoch(-1);
        let v = self.versions.init_producer_id;
        let r: InitProducerIdResponse = self.call(0, ApiKey::InitProducerId, v, &req)?;
        if r.error_code != 0 {
            return Err(ProducerError::Refused {
                addr: self.conns[0].addr.clone(),
                api: "InitProducerId",
                error: error_name(r.error_code),
            });
        }
        self.producer_id = r.producer_id.0;
        self.producer_epoch = r.producer_epoch;
        Ok(())
    }

    /// Creates `topic` with `partitions` partitions and `replication`
    /// replicas (-1: the broker's default) unless it exists.
    pub fn create_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        replication: i16,
    ) -> Result<(), ProducerError> {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication)])
            .with_timeout_ms(5_000);
        let Some(v) = self.versions.create_topics else {
            return Err(ProducerError::Topic {
                topic: topic.to_string(),
                error: "the broker does not take CreateTopics v2..v5; create the topic, or set kafka.create_topics: false".into(),
            });
        };
        if replication == -1 && v < 4 {
            return Err(ProducerError::Topic {
                topic: topic.to_string(),
                error: format!("the broker takes CreateTopics up to v{v}, which cannot ask for its default replication factor; set kafka.topic_replication_factor"),
            });
        }
        let r: CreateTopicsResponse = self.call(0, ApiKey::CreateTopics, v, &req)?;
        for t in r.topics {
            // TOPIC_ALREADY_EXISTS (36) is what we want too.
            if t.error_code != 0 && t.error_code != 36 {
                return Err(ProducerError::Topic {
                    topic: topic.to_string(),
                    error: error_name(t.error_code),
                });
            }
        }
        Ok(())
    }

    /// Learns the topic's partitions and their leaders, and connects to
    /// leaders not yet connected.
    fn route(&mut self, topic: &str) -> Result<(), ProducerError> {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_string())),
            ))]))
            .with_allow_auto_topic_creation(self.settings.allow_auto_create);
        let v = self.versions.metadata;
        let r: MetadataResponse = self.call(0, ApiKey::Metadata, v, &req)?;
        for b in &r.brokers {
            self.nodes
                .insert(b.node_id.0, broker_addr(b.host.as_str(), b.port));
        }
        let t = r
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
            .ok_or_else(|| ProducerError::Topic {
                topic: topic.to_string(),
                error: "the broker's metadata does not list it".into(),
            })?;
        if t.error_code != 0 || t.partitions.is_empty() {
            return Err(ProducerError::Topic {
                topic: topic.to_string(),
                error: if t.error_code != 0 {
                    error_name(t.error_code)
                } else {
                    "no partitions yet".into()
                },
            });
        }
        let mut leaders = vec![-1; t.partitions.len()];
        for p in &t.partitions {
            let i = p.partition_index as usize;
            if i >= leaders.len() || p.leader_id.0 < 0 {
                return Err(ProducerError::Topic {
                    topic: topic.to_string(),
                    error: format!("partition {} has no leader", p.partition_index),
                });
            }
            leaders[i] = p.leader_id.0;
        }
        for &node in &leaders {
            self.connection_for(node)?;
        }
        for (i, &leader) in leaders.iter().enumerate() {
            let key = (topic.to_string(), i as i32);
            if !self.slots.contains_key(&key) {
                self.slots.insert(key, self.partitions.len());
                self.partitions.push(PartitionState {
                    topic: topic.to_string(),
                    partition: i as i32,
                    leader,
                    next_sequence: 0,
                    open: None,
                    lone_unanswered: None,
                });
            }
        }
        self.topics.insert(topic.to_string(), leaders);
        Ok(())
    }

    /// Replaces connection `c` if the broker closed it while idle.
    fn reopen_if_closed(&mut self, c: usize) -> Result<(), ProducerError> {
        if self.conns[c].closed {
            let addr = self.conns[c].addr.clone();
            self.conns[c] = Connection::open(&addr, c, &self.responses_tx)?;
        }
        Ok(())
    }

    fn connection_for(&mut self, node: i32) -> Result<usize, ProducerError> {
        if let Some(&i) = self.by_node.get(&node) {
            self.reopen_if_closed(i)?;
            return Ok(i);
        }
        let addr = self
            .nodes
            .get(&node)
            .cloned()
            .ok_or_else(|| ProducerError::Protocol {
                addr: self.conns[0].addr.clone(),
                detail: format!("leader {node} is not among the brokers listed"),
            })?;
        let i = self.conns.len();
        let c = Connection::open(&addr, i, &self.responses_tx)?;
        self.conns.push(c);
        self.by_node.insert(node, i);
        Ok(i)
    }

    /// Resolves where a frame of `source` goes, connecting as needed.
    pub fn target(
        &mut self,
        topic: &str,
        source: &str,
        path: &str,
    ) -> Result<FrameTarget, ProducerError> {
        if !self.topics.contains_key(topic) {
            self.route(topic)?;
        }
        let partitions = self.topics.get(topic).map_or(1, Vec::len);
        let partition = partition_for(source.as_bytes(), partitions) as i32;
        let slot = *self
            .slots
            .get(&(topic.to_string(), partition))
            .ok_or_else(|| ProducerError::Topic {
                topic: topic.to_string(),
                error: format!("partition {partition} is unknown"),
            })?;
        let mut headers_before = Vec::with_capacity(source.len() + path.len() + 16);
        put_header(&mut headers_before, "source", source.as_bytes());
        put_header(&mut headers_before, "path", path.as_bytes());
        Ok(FrameTarget {
            topic: topic.to_string(),
            partition,
            slot,
            now_ms: now_ms(),
            source: source.to_string(),
            path: path.to_string(),
            key: source.as_bytes().to_vec(),
            headers_before,
            headers_after: self.host_header.clone(),
        })
    }

    /// Adds one line (file offset `offset`) of spooled frame `frame` to its
    /// partition's open batch, sealing and sending batches as they fill.
    /// Blocks for answers while the connection is full.
    pub fn append(
        &mut self,
        t: &FrameTarget,
        frame: u64,
        offset: u64,
        line: &[u8],
    ) -> Result<(), ProducerError> {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(offset).as_bytes();
        let now = t.now_ms;
        let body_without_ts = 1 // attributes
            + varint_len(t.key.len() as i64) + t.key.len()
            + varint_len(line.len() as i64) + line.len()
            + 1 // 4 headers
            + t.headers_before.len()
            + 1 + 6 + varint_len(digits.len() as i64) + digits.len()
            + t.headers_after.len();
        let lone_size = (self.settings.batch_bytes / 2).min(64 << 10);
        let lone = body_without_ts + 24 >= lone_size;

        let slot = t.slot;
        // Seal the open batch first if this record would not fit, or goes
        // alone.
        let must_seal = self.partitions.get(slot).is_some_and(|p| {
            p.open.as_ref().is_some_and(|b| {
                lone || b.lone.is_some()
                    || b.buf.len() + body_without_ts + 24 > self.settings.batch_bytes
            })
        });
        if must_seal {
            self.seal(slot)?;
        }
        let batch_bytes = self.settings.batch_bytes;
        let Some(state) = self.partitions.get_mut(slot) else {
            return Err(ProducerError::Topic {
                topic: t.topic.clone(),
                error: format!("partition {} is unknown", t.partition),
            });
        };
        let b = state.open.get_or_insert_with(|| OpenBatch {
            buf: {
                // Room for a full batch up front: growing it would copy.
                let mut v = Vec::with_capacity(if lone {
                    BATCH_HEADER + body_without_ts + 32
                } else {
                    BATCH_HEADER + batch_bytes + 64
                });
                v.resize(BATCH_HEADER, 0);
                v
            },
            count: 0,
            base_ms: now,
            max_ms: now,
            opened: Instant::now(),
            runs: Vec::new(),
            lone: None,
        });
        let ts_delta = now - b.base_ms;
        let offset_delta = b.count as i64;
        let body = body_without_ts + varint_len(ts_delta) + varint_len(offset_delta);
        put_record(&mut b.buf, t, body, ts_delta, offset_delta, digits, line);
        b.count += 1;
        b.max_ms = b.max_ms.max(now);
        match b.runs.last_mut() {
            Some((f, n)) if *f == frame => *n += 1,
            _ => b.runs.push((frame, 1)),
        }
        if lone {
            b.lone = Some(LoneLine {
                topic: t.topic.clone(),
                source: t.source.clone(),
                path: t.path.clone(),
                offset,
                value: line.to_vec(),
            });
            self.seal(slot)?;
        }
        Ok(())
    }

    /// Whether any batch is open, and how long until the oldest one's
    /// linger ends.
    pub fn linger_left(&self) -> Option<Duration> {
        self.partitions
            .iter()
            .filter_map(|p| p.open.as_ref())
            .map(|b| self.settings.linger.saturating_sub(b.opened.elapsed()))
            .min()
    }

    /// Whether anything is open, waiting or unanswered.
    pub fn in_flight(&self) -> bool {
        self.partitions.iter().any(|p| p.open.is_some())
            || self
                .conns
                .iter()
                .any(|c| !c.in_flight.is_empty() || !c.waiting.is_empty())
    }

    /// Seals and sends batches whose linger is over (`all`: every open
    /// batch), then takes in whatever answers arrive within `wait`.
    pub fn poll(&mut self, wait: Duration, all: bool) -> Result<(), ProducerError> {
        let linger = self.settings.linger;
        for slot in 0..self.partitions.len() {
            let due = self.partitions[slot]
                .open
                .as_ref()
                .is_some_and(|b| all || b.opened.elapsed() >= linger);
            if due {
                self.seal(slot)?;
            }
        }
        let mut first = true;
        loop {
            let got = if first && !wait.is_zero() {
                match self.responses.recv_timeout(wait) {
                    Ok(x) => Some(x),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            } else {
                self.responses.try_recv().ok()
            };
            first = false;
            let Some((from, r)) = got else { break };
            self.answer(from, r)?;
        }
        for c in &self.conns {
            if let Some(f) = c.in_flight.front() {
                if f.sent.elapsed() > ANSWER_TIMEOUT {
                    return Err(ProducerError::Timeout {
                        addr: c.addr.clone(),
                        secs: ANSWER_TIMEOUT.as_secs(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Takes the acknowledgements and refusals gathered so far.
    pub fn take_events(&mut self, out: &mut Vec<Event>) {
        out.append(&mut self.events);
    }

    fn seal(&mut self, slot: usize) -> Result<(), ProducerError> {
        if self.partitions.get(slot).is_none_or(|p| p.open.is_none()) {
            return Ok(());
        }
        // A lone line's batch may yet be refused, giving its sequence
        // number back: number nothing after it until it is answered.
        while self.partitions[slot].lone_unanswered.is_some() {
            self.wait_for_answer(self.partitions[slot].leader)?;
        }
        let state = &mut self.partitions[slot];
        let Some(open) = state.open.take() else {
            return Ok(());
        };
        let base_sequence = state.next_sequence;
        if open.lone.is_some() {
            state.lone_unanswered = Some(base_sequence);
        }
        // Sequence numbers wrap to 0 after i32::MAX, as Kafka expects.
        state.next_sequence = if i32::MAX - base_sequence < open.count {
            open.count - (i32::MAX - base_sequence) - 1
        } else {
            base_sequence + open.count
        };
        let (leader, topic, partition) = (state.leader, state.topic.clone(), state.partition);
        let batch = finish_batch(
            open.buf,
            open.count,
            open.base_ms,
            open.max_ms,
            (self.producer_id, self.producer_epoch),
            base_sequence,
            self.settings.lz4,
        )?;
        let c = self.connection_for(leader)?;
        self.conns[c].waiting.push_back(Sealed {
            lines: BatchLines {
                topic,
                partition,
                slot,
                count: open.count,
                runs: open.runs,
                lone: open.lone,
            },
            batch,
        });
        self.pump(c)?;
        // Backpressure: wait for answers while too much is queued.
        while self.conns[c].waiting.len() > MAX_WAITING {
            self.wait_for_answer(leader)?;
        }
        Ok(())
    }

    /// Takes in the next answer from any connection, waiting at most
    /// `ANSWER_TIMEOUT` (blamed on the connection to `leader`).
    fn wait_for_answer(&mut self, leader: i32) -> Result<(), ProducerError> {
        match self.responses.recv_timeout(ANSWER_TIMEOUT) {
            Ok((from, r)) => self.answer(from, r),
            Err(_) => Err(ProducerError::Timeout {
                addr: self.nodes.get(&leader).cloned().unwrap_or_default(),
                secs: ANSWER_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Writes waiting batches while the connection has room.
    fn pump(&mut self, c: usize) -> Result<(), ProducerError> {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        while self.conns[c].in_flight.len() < MAX_IN_FLIGHT {
            let Some(s) = self.conns[c].waiting.pop_front() else {
                break;
            };
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(PRODUCE_TIMEOUT_MS)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(s.lines.topic.clone())))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(s.lines.partition)
                        .with_records(Some(Bytes::new()))])]);
            let correlation = self.correlation();
            let version = self.versions.produce;
            let client_id = std::mem::take(&mut self.settings.client_id);
            let written = self.conns[c].write_request(
                ApiKey::Produce,
                version,
                correlation,
                &client_id,
                &req,
                Some(&s.batch),
            );
            self.settings.client_id = client_id;
            written?;
            self.conns[c].in_flight.push_back(InFlight {
                correlation,
                version,
                sent: Instant::now(),
                lines: s.lines,
            });
        }
        Ok(())
    }

    /// Takes in one answer from connection `from`.
    fn answer(&mut self, from: usize, r: std::io::Result<Bytes>) -> Result<(), ProducerError> {
        let addr = self.conns[from].addr.clone();
        let proto = |detail: String| ProducerError::Protocol {
            addr: addr.clone(),
            detail,
        };
        let Some(f) = self.conns[from].in_flight.pop_front() else {
            if r.is_err() && self.conns[from].waiting.is_empty() {
                // Closed while idle: nothing was lost; reopen on next use.
                tracing::debug!(broker = %addr, "idle Kafka connection closed by the broker");
                self.conns[from].closed = true;
                return Ok(());
            }
            r.map_err(|source| ProducerError::Io {
                addr: addr.clone(),
                source,
            })?;
            return Err(proto("an answer arrived for no request".into()));
        };
        let mut buf = answer_body(&addr, r, ApiKey::Produce, f.version, f.correlation)?;
        let BatchLines {
            topic,
            partition,
            slot,
            count,
            runs,
            lone,
        } = f.lines;
        let resp = ProduceResponse::decode(&mut buf, f.version)
            .map_err(|e| proto(format!("Produce v{}: {e}", f.version)))?;
        // The lone line's batch, if this is it, is answered either way.
        let lone_sequence = match (&lone, self.partitions.get_mut(slot)) {
            (Some(_), Some(state)) => state.lone_unanswered.take(),
            _ => None,
        };
        let part = resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| {
                proto(format!(
                    "the Produce answer does not mention {topic}/{partition}"
                ))
            })?;
        match part.error_code {
            // NONE, or DUPLICATE_SEQUENCE_NUMBER: the broker has the batch.
            0 | 46 => {
                let base =
                    (part.error_code == 0 && part.base_offset >= 0).then_some(part.base_offset);
                let mut at = 0i64;
                for (frame, n) in runs {
                    at += n as i64;
                    self.events.push(Event::Acked {
                        frame,
                        lines: n,
                        partition,
                        last_offset: base.map(|b| b + at - 1),
                    });
                }
            }
            code if is_refusal(code) => {
                let error = match &part.error_message {
                    Some(m) => format!("{} {}", error_name(code), m.as_str()),
                    None => error_name(code),
                };
                match (lone, lone_sequence) {
                    (Some(line), Some(sequence)) if count == 1 => {
                        let frame = runs.first().map_or(0, |r| r.0);
                        self.events.push(Event::Refused { frame, line, error });
                        // Nothing after it was numbered (see `seal`): the
                        // partition's next batch takes its number.
                        if let Some(state) = self.partitions.get_mut(slot) {
                            state.next_sequence = sequence;
                        }
                    }
                    _ => {
                        return Err(ProducerError::BatchRefused {
                            topic,
                            partition,
                            lines: count as u32,
                            error,
                        })
                    }
                }
            }
            code => {
                return Err(ProducerError::Refused {
                    addr,
                    api: "Produce",
                    error: format!("{topic}/{partition}: {}", error_name(code)),
                })
            }
        }
        self.pump(from)
    }
}

impl Drop for NativeProducer {
    fn drop(&mut self) {
        // Shutting the sockets down ends the readers; one blocked on the
        // full answer channel is freed by draining it while we wait.
        for c in &self.conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        for c in &mut self.conns {
            if let Some(h) = c.reader.take() {
                while !h.is_finished() {
                    while self.responses.try_recv().is_ok() {}
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn varints_match_kafka_zigzag() {
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (63, vec![126]),
            (64, vec![128, 1]),
            (-65, vec![129, 1]),
            (300, vec![216, 4]),
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
        assert_eq!(varint_len(i64::MAX), 10);
    }

    /// Settings for a producer against a `MockCluster`, with small batches.
    fn mock_settings(
        cluster: &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
        lz4: bool,
    ) -> ProducerSettings {
        ProducerSettings {
            brokers: cluster.bootstrap_servers(),
            client_id: "test".into(),
            lz4,
            linger: Duration::from_millis(5),
            batch_bytes: 64 << 10,
            allow_auto_create: false,
        }
    }

    fn target() -> FrameTarget {
        let mut headers_before = Vec::new();
        put_header(&mut headers_before, "source", b"app");
        put_header(&mut headers_before, "path", b"/var/log/app.log");
        let mut headers_after = Vec::new();
        put_header(&mut headers_after, "host", b"h1");
        FrameTarget {
            topic: "logs".into(),
            partition: 0,
            slot: 0,
            now_ms: 0,
            source: "app".into(),
            path: "/var/log/app.log".into(),
            key: b"app".to_vec(),
            headers_before,
            headers_after,
        }
    }

    /// Encodes a batch the way `append` + `seal` do and decodes it with
    /// kafka-protocol's decoder, which checks the CRC and every length.
    fn round_trip(lz4: bool) {
        let t = target();
        let lines: Vec<Vec<u8>> = (0..500u32)
            .map(|i| format!("line {i} {}", "x".repeat((i % 300) as usize)).into_bytes())
            .chain([Vec::new(), vec![0xff, 0xfe, b'\r']])
            .collect();
        let mut buf = vec![0u8; BATCH_HEADER];
        let mut offset = 0u64;
        for (i, line) in lines.iter().enumerate() {
            let digits = offset.to_string();
            let without = 1
                + varint_len(t.key.len() as i64)
                + t.key.len()
                + varint_len(line.len() as i64)
                + line.len()
                + 1
                + t.headers_before.len()
                + 1
                + 6
                + varint_len(digits.len() as i64)
                + digits.len()
                + t.headers_after.len();
            let ts = (i % 3) as i64;
            let body = without + varint_len(ts) + varint_len(i as i64);
            put_record(&mut buf, &t, body, ts, i as i64, digits.as_bytes(), line);
            offset += line.len() as u64 + 1;
        }
        let n = lines.len() as i32;
        let batch = finish_batch(
            buf,
            n,
            1_700_000_000_000,
            1_700_000_000_002,
            (42, 3),
            7,
            lz4,
        )
        .expect("encode");
        let mut bytes = batch.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode_with_custom_compression(
            &mut bytes,
            Some(|b: &mut Bytes, c: kafka_protocol::records::Compression| {
                assert_eq!(c == kafka_protocol::records::Compression::Lz4, lz4);
                let mut out = Vec::new();
                if lz4 {
                    lz4::Decoder::new(&b[..])?.read_to_end(&mut out)?;
                } else {
                    out.extend_from_slice(b);
                }
                Ok(Bytes::from(out))
            }),
        )
        .expect("kafka-protocol decodes what we encode");
        assert_eq!(set.records.len(), lines.len());
        let mut offset = 0u64;
        for (i, (r, line)) in set.records.iter().zip(&lines).enumerate() {
            assert_eq!(r.value.as_deref(), Some(&line[..]), "record {i}");
            assert_eq!(r.key.as_deref(), Some(&b"app"[..]));
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.sequence, 7 + i as i32);
            assert_eq!(r.producer_id, 42);
            assert_eq!(r.producer_epoch, 3);
            assert_eq!(r.timestamp, 1_700_000_000_000 + (i % 3) as i64);
            let h = |k: &'static str| {
                r.headers
                    .get(&StrBytes::from_static_str(k))
                    .cloned()
                    .flatten()
                    .map(|v| v.to_vec())
            };
            assert_eq!(h("source"), Some(b"app".to_vec()));
            assert_eq!(h("path"), Some(b"/var/log/app.log".to_vec()));
            assert_eq!(h("offset"), Some(offset.to_string().into_bytes()));
            assert_eq!(h("host"), Some(b"h1".to_vec()));
            offset += line.len() as u64 + 1;
        }
    }

    #[test]
    fn batch_round_trips_uncompressed() {
        round_trip(false);
    }

    #[test]
    fn batch_round_trips_lz4() {
        round_trip(true);
    }

    #[test]
    fn produce_request_with_tail_equals_the_full_encoding() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let batch = Bytes::from_static(b"0123456789 a record batch");
        let req = |records: Bytes| {
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("logs")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(2)
                        .with_records(Some(records))])])
        };
        for version in 3..=8 {
            let mut full = BytesMut::new();
            encode_request(
                &mut full,
                ApiKey::Produce,
                version,
                7,
                "c",
                &req(batch.clone()),
                None,
            )
            .expect("full");
            let mut head = BytesMut::new();
            encode_request(
                &mut head,
                ApiKey::Produce,
                version,
                7,
                "c",
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
            encode_request(
                &mut out,
                ApiKey::Produce,
                9,
                7,
                "c",
                &req(Bytes::new()),
                Some(&batch)
            )
            .is_err(),
            "v9 puts tagged fields after the records"
        );
    }

    /// The native producer against librdkafka's mock broker (a real Kafka
    /// protocol server in process): many batches over two partitions and
    /// a line big enough to go alone; every line acknowledged once, then
    /// read back by rdkafka's consumer with key, value and headers intact.
    #[test]
    fn delivers_to_mock_cluster_and_reads_back() {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::{Headers, Message};

        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t1", 2, 1).expect("create topic");
        let mut p = NativeProducer::connect(mock_settings(&cluster, true), "h1").expect("connect");
        let targets = [
            p.target("t1", "a", "/a.log").expect("target a"),
            p.target("t1", "d", "/d.log").expect("target d"),
        ];
        assert_ne!(
            targets[0].partition, targets[1].partition,
            "sources a and d hash to different partitions of 2"
        );
        let big = vec![b'z'; 200 << 10];
        let mut expected: Vec<(usize, u64, Vec<u8>)> = Vec::new();
        let mut lines_of = HashMap::new();
        for frame in 0..40u64 {
            let who = (frame % 2) as usize;
            let t = &targets[who];
            for i in 0..300u64 {
                let line = if frame == 7 && i == 5 {
                    big.clone()
                } else {
                    format!("frame {frame} line {i}").into_bytes()
                };
                let offset = frame * 1_000_000 + i;
                p.append(t, frame, offset, &line).expect("append");
                expected.push((who, offset, line));
                *lines_of.entry(frame).or_insert(0u32) += 1;
            }
            p.poll(Duration::ZERO, false).expect("poll");
        }
        let mut acked: HashMap<u64, u32> = HashMap::new();
        let mut last_offset: HashMap<i32, i64> = HashMap::new();
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.values().sum::<u32>() < expected.len() as u32 {
            assert!(Instant::now() < deadline, "acks missing: {acked:?}");
            p.poll(Duration::from_millis(10), true).expect("poll");
            p.take_events(&mut events);
            for e in events.drain(..) {
                let Event::Acked {
                    frame,
                    lines,
                    partition,
                    last_offset: Some(o),
                } = e
                else {
                    panic!("unexpected event {e:?}");
                };
                *acked.entry(frame).or_default() += lines;
                let prev = last_offset.insert(partition, o).unwrap_or(-1);
                assert!(o > prev, "offsets go up in a partition: {prev} then {o}");
            }
        }
        assert_eq!(
            acked, lines_of,
            "every line of every frame acknowledged once"
        );
        assert!(!p.in_flight());
        drop(p);

        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "readback")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for part in 0..2 {
            tpl.add_partition_offset("t1", part, rdkafka::Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut got: HashMap<usize, Vec<(u64, Vec<u8>)>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.values().map(Vec::len).sum::<usize>() < expected.len() {
            assert!(
                Instant::now() < deadline,
                "consumed {}",
                got.values().map(Vec::len).sum::<usize>()
            );
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.expect("message");
            let key = m.key().expect("key");
            let who = if key == b"a" { 0 } else { 1 };
            assert_eq!(m.partition(), targets[who].partition);
            let h = m.headers().expect("headers");
            let header = |k: &str| {
                h.iter()
                    .find(|x| x.key == k)
                    .and_then(|x| x.value)
                    .map(|v| v.to_vec())
            };
            assert_eq!(header("source"), Some(key.to_vec()));
            assert_eq!(header("host"), Some(b"h1".to_vec()));
            let path = if who == 0 { "/a.log" } else { "/d.log" };
            assert_eq!(header("path"), Some(path.as_bytes().to_vec()));
            let offset: u64 = String::from_utf8(header("offset").expect("offset header"))
                .expect("utf8")
                .parse()
                .expect("number");
            got.entry(who)
                .or_default()
                .push((offset, m.payload().unwrap_or_default().to_vec()));
        }
        for who in 0..2 {
            let want: Vec<(u64, Vec<u8>)> = expected
                .iter()
                .filter(|e| e.0 == who)
                .map(|e| (e.1, e.2.clone()))
                .collect();
            assert_eq!(got[&who], want, "source {who}: every line once, in order");
        }
    }

    /// Kafka's answers other than success: a lone line refused for good
    /// becomes an `Event::Refused` carrying the line, and the session goes
    /// on with the sequence number the broker did not take; a refused batch
    /// of several lines, or any other error, ends the session with `Err`
    /// and acknowledges nothing.
    #[test]
    fn refusals_and_errors_from_mock_cluster() {
        use rdkafka::types::RDKafkaApiKey;
        use rdkafka::types::RDKafkaRespErr;

        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t1", 1, 1).expect("create topic");
        let connect = || {
            let mut p =
                NativeProducer::connect(mock_settings(&cluster, false), "h1").expect("connect");
            let t = p.target("t1", "a", "/a.log").expect("target");
            (p, t)
        };
        let drain = |p: &mut NativeProducer| -> (Result<(), ProducerError>, Vec<Event>) {
            let mut events = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            let r = loop {
                let r = p.poll(Duration::from_millis(10), true);
                p.take_events(&mut events);
                if r.is_err() || !p.in_flight() || Instant::now() > deadline {
                    break r;
                }
            };
            (r, events)
        };

        // A lone line refused as too large, between two lines that are
        // taken: the line after it reuses its sequence number (the mock
        // broker does not check for gaps, so the number is checked here).
        let (mut p, t) = connect();
        p.append(&t, 8, 0, b"before").expect("append");
        let (r, events) = drain(&mut p);
        r.expect("first line");
        assert!(
            matches!(&events[..], [Event::Acked { frame: 8, .. }]),
            "{events:?}"
        );
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        let big = vec![b'q'; 100 << 10];
        p.append(&t, 9, 4242, &big).expect("append");
        p.append(&t, 10, 200_000, b"after").expect("append");
        let (r, events) = drain(&mut p);
        r.expect("a refused lone line does not end the session");
        assert_eq!(
            p.partitions[t.slot].next_sequence, 2,
            "the line after the refused one took its sequence number (1)"
        );
        match &events[..] {
            [Event::Refused {
                frame: 9,
                line,
                error,
            }, Event::Acked {
                frame: 10,
                lines: 1,
                last_offset: Some(1),
                ..
            }] => {
                assert_eq!(line.offset, 4242);
                assert_eq!(line.value, big);
                assert_eq!((line.source.as_str(), line.path.as_str()), ("a", "/a.log"));
                assert!(error.contains("10"), "{error}");
            }
            other => panic!("want one refusal, got {other:?}"),
        }
        drop(p);

        // A batch of several lines refused: the session ends.
        let (mut p, t) = connect();
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        for i in 0..10 {
            p.append(&t, 1, i * 10, b"small line").expect("append");
        }
        let (r, events) = drain(&mut p);
        assert!(
            matches!(r, Err(ProducerError::BatchRefused { lines: 10, .. })),
            "{r:?}"
        );
        assert!(events.is_empty(), "nothing acknowledged: {events:?}");
        drop(p);

        // Any other error ends the session too.
        let (mut p, t) = connect();
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION],
        );
        p.append(&t, 1, 0, b"line").expect("append");
        let (r, events) = drain(&mut p);
        assert!(matches!(r, Err(ProducerError::Refused { .. })), "{r:?}");
        assert!(events.is_empty(), "nothing acknowledged: {events:?}");
    }

    /// A Produce answer with an error that arrives while a setup request
    /// waits is not lost: the setup call returns it (not a topic error, so
    /// the forwarder ends the session), after taking its own answer, so
    /// the next setup request is still answered in step.
    #[test]
    fn produce_failure_during_a_setup_request_is_returned() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t1", 1, 1).expect("create topic");
        cluster.create_topic("t2", 1, 1).expect("create topic");
        let mut p = NativeProducer::connect(mock_settings(&cluster, false), "h1").expect("connect");
        let t = p.target("t1", "a", "/a.log").expect("target");
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
        );
        p.append(&t, 1, 0, b"line").expect("append");
        p.poll(Duration::ZERO, true).expect("seal and send");
        assert!(p.in_flight());
        // Let the refusal arrive before the setup request goes out.
        std::thread::sleep(Duration::from_millis(300));
        // A metadata request (the mock broker takes no CreateTopics).
        let r = p.target("t2", "b", "/b.log").map(|_| ());
        assert!(
            matches!(r, Err(ProducerError::Refused { api: "Produce", .. })),
            "{r:?}"
        );
        assert!(!p.in_flight(), "the refused batch is no longer in flight");
        let mut events = Vec::new();
        p.take_events(&mut events);
        assert!(events.is_empty(), "nothing acknowledged: {events:?}");
        // Connection 0 is still in step: its next answer matches.
        p.target("t2", "b", "/b.log").expect("next setup request");
    }

    /// A connection the broker closes while nothing is asked (as Kafka does
    /// after `connections.max.idle.ms`) is reopened on the next send, not
    /// treated as a failure.
    #[test]
    fn idle_connection_closed_by_broker_is_reopened() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t1", 1, 1).expect("create topic");
        let mut p = NativeProducer::connect(mock_settings(&cluster, false), "h1").expect("connect");
        let t = p.target("t1", "a", "/a.log").expect("target");
        let mut events = Vec::new();
        let mut send_and_wait = |p: &mut NativeProducer, frame: u64| {
            p.append(&t, frame, frame, b"line").expect("append");
            let deadline = Instant::now() + Duration::from_secs(10);
            while p.in_flight() {
                assert!(Instant::now() < deadline, "no answer");
                p.poll(Duration::from_millis(10), true).expect("poll");
            }
            p.take_events(&mut events);
            assert!(
                matches!(events.pop(), Some(Event::Acked { frame: f, lines: 1, .. }) if f == frame),
                "frame {frame} acknowledged"
            );
        };
        send_and_wait(&mut p, 1);
        cluster.broker_down(1).expect("down");
        // Both connections are idle: their closing is no failure.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            p.poll(Duration::from_millis(10), false)
                .expect("an idle connection closing is not an error");
        }
        cluster.broker_up(1).expect("up");
        send_and_wait(&mut p, 2);
    }

    #[test]
    fn partitioner_matches_librdkafka_crc32() {
        // crc32("a") = 0xe8b7be43, as librdkafka's rd_crc32 computes it.
        assert_eq!(kafka_protocol::records::IEEE.checksum(b"a"), 0xe8b7_be43);
        assert_eq!(partition_for(b"a", 4), 0xe8b7_be43usize % 4);
        assert_eq!(partition_for(b"anything", 1), 0);
    }
}
