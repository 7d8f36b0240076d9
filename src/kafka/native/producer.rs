//! producer: [`NativeProducer`], the state of one forwarder session with
//! Kafka. It owns the setup requests (versions, producer id, topics,
//! metadata), each partition's open batch and next sequence number, the
//! sealing of batches onto their leader's connection, and what an answer
//! means for the lines it covers (the invariants are in [`super`]).
//!
//! Must never: number a partition's batch while its lone line is
//! unanswered, or report a line that no Produce answer covered.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ProduceResponse};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use super::connection::{bootstrap_order, Answers, Connection, InFlight, Sealed};
use super::record::{
    finish_batch, partition_for, put_header, put_record, varint_len, BatchFields, LineRecord,
    RecordTemplate, BATCH_HEADER, RECORD_SLACK,
};
use super::transport::Security;
use super::wire::{answer_body, error_name, Correlations, Timeouts, Versions};
use super::{keep_the_refusal, ProducerError};
use crate::config::{SaslConfig, TlsConfig};

/// Sealed batches that may wait behind a full connection before `append`
/// blocks for an answer (the spool, not memory, is the buffer).
const MAX_WAITING: usize = 2;
/// Batches a held partition may gather (see [`retry`]) before sealing
/// another blocks until it is sent again.
const MAX_HELD: usize = 8;
/// Batches all held partitions may gather together (a broker leading many
/// partitions went down): past it, sealing waits too.
const MAX_HELD_IN_ALL: usize = 32;
/// Records bytes in one batch before it is sealed (librdkafka's default
/// `batch.size`; under the broker's default `message.max.bytes`).
pub const BATCH_BYTES: usize = 1_000_000;

/// How the producer is set up; built from
/// [`KafkaConfig`](crate::config::KafkaConfig) by the forwarder.
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
    /// Request and connection timeouts.
    pub timeouts: Timeouts,
    /// Sessions started before this one: the bootstrap broker asked first
    /// is the next one each time (see [`NativeProducer::connect`]).
    pub bootstrap_turn: usize,
    /// `kafka.tls`: TLS to every broker; its files are read at
    /// [`NativeProducer::connect`].
    pub tls: Option<TlsConfig>,
    /// `kafka.sasl`: the login on every connection (PLAIN, SCRAM).
    pub sasl: Option<SaslConfig>,
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
    /// Its [`LineId`](crate::kafka::line_id::LineId), encoded.
    pub id: [u8; crate::kafka::line_id::LEN],
}

/// Where one spooled frame's lines go, with the parts of each record that
/// are the same for every line of the frame, encoded once.
pub struct FrameTarget {
    topic: String,
    partition: i32,
    /// The partition's slot in `NativeProducer::partitions`.
    slot: usize,
    source: String,
    path: String,
    record: RecordTemplate,
    /// (instance id, batch seq): the first parts of each line's id.
    ids: (u64, u64),
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
    responses_tx: Answers,
    events: Vec<Event>,
    correlations: Correlations,
    /// The connection setup requests go to (a bootstrap broker at first;
    /// another broker once it fails, see [`retry`]).
    setup: usize,
    /// TLS and SASL for every connection, prepared once per session.
    security: Security,
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
    /// Fewer than 2 in-sync replicas when the metadata was read: warned
    /// about (and cleared) when a frame is first sent to the partition.
    thin_isr: Option<usize>,
    /// The number the partition's next sealed batch gets: the order of
    /// its batches, for sending held ones again in order.
    next_seal: u64,
    /// Set while the partition's batches are held back after a failure a
    /// retry can clear; see [`retry`].
    hold: Option<retry::Hold>,
    /// Batches to send (again), by seal number: each keeps its producer
    /// id, epoch and sequence numbers, so the broker drops a duplicate.
    held: BTreeMap<u64, Sealed>,
    /// Since when the partition has failed with no batch taken since.
    failing: Option<retry::Failing>,
    /// The seal number of the first batch whose outcome is not reported
    /// yet, and outcomes of later batches that wait for it (see
    /// [`NativeProducer::report`]).
    next_report: u64,
    answered_ahead: BTreeMap<u64, Vec<Event>>,
    /// Kafka has taken a batch of this session's producer id here. Until
    /// then only one batch is unanswered at a time: a broker with no state
    /// for a producer id takes its first batch at any sequence number, so
    /// a second batch could be taken while the first was refused (a gap).
    established: bool,
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

impl OpenBatch {
    /// An empty batch whose records start at `now_ms`, with room for
    /// `capacity` bytes of records up front (growing it would copy).
    fn new(now_ms: i64, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(BATCH_HEADER + capacity);
        buf.resize(BATCH_HEADER, 0);
        OpenBatch {
            buf,
            count: 0,
            base_ms: now_ms,
            max_ms: now_ms,
            opened: Instant::now(),
            runs: Vec::new(),
            lone: None,
        }
    }

    /// Appends a record of line `r` of `frame` (`body_len` is
    /// [`RecordTemplate::body_len`]).
    fn push(&mut self, t: &RecordTemplate, frame: u64, r: &LineRecord<'_>, body_len: usize) {
        let ts_delta = t.now_ms - self.base_ms;
        let offset_delta = self.count as i64;
        let body = body_len + varint_len(ts_delta) + varint_len(offset_delta);
        put_record(&mut self.buf, t, body, ts_delta, offset_delta, r);
        self.count += 1;
        self.max_ms = self.max_ms.max(t.now_ms);
        match self.runs.last_mut() {
            Some((f, n)) if *f == frame => *n += 1,
            _ => self.runs.push((frame, 1)),
        }
    }
}

/// What the answer to a sealed batch needs to know about it.
pub(super) struct BatchLines {
    pub(super) topic: String,
    pub(super) partition: i32,
    slot: usize,
    /// The batch's place among its partition's batches.
    seal_no: u64,
    /// Written at least once before (see [`retry`]): Kafka may have it.
    pub(super) resent: bool,
    count: i32,
    runs: Vec<(u64, u32)>,
    lone: Option<LoneLine>,
}

/// Kafka's permanent refusals of a batch's content: MESSAGE_TOO_LARGE,
/// RECORD_LIST_TOO_LARGE, INVALID_RECORD. Not CORRUPT_MESSAGE: that one
/// says the encoding is wrong, which would hold for every line, so it ends
/// the session like any other error and the lines stay in the spool.
fn is_refusal(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::MessageTooLarge
            | ResponseError::RecordListTooLarge
            | ResponseError::InvalidRecord
    )
}

impl NativeProducer {
    /// Connects to a bootstrap broker, agrees on versions and gets an
    /// idempotent producer id. The brokers are tried in turn, starting at
    /// the one after `settings.bootstrap_turn` others; one that cannot be
    /// reached or does not answer within the request timeout (hung, e.g.
    /// SIGSTOPped) makes it try the next. The error is the first refusal
    /// of TLS or the login if any broker refused, else the last broker's.
    /// With `settings.tls`, its files are read first (an unreadable one is
    /// [`ProducerError::Tls`]).
    pub fn connect(settings: ProducerSettings, host: &str) -> Result<Self, ProducerError> {
        let security = Security::prepare(
            settings.tls.as_ref(),
            settings.sasl.as_ref(),
            &settings.brokers,
        )?;
        let (responses_tx, responses) = sync_channel(64);
        let mut host_header = Vec::new();
        put_header(&mut host_header, "host", host.as_bytes());
        let brokers = settings.brokers.clone();
        let turn = settings.bootstrap_turn;
        let mut p = NativeProducer {
            settings,
            host_header,
            producer_id: -1,
            producer_epoch: -1,
            versions: Versions::BEFORE_NEGOTIATION,
            conns: Vec::new(),
            by_node: HashMap::new(),
            nodes: BTreeMap::new(),
            topics: HashMap::new(),
            partitions: Vec::new(),
            slots: HashMap::new(),
            responses,
            responses_tx,
            events: Vec::new(),
            correlations: Correlations::new(),
            setup: 0,
            security,
        };
        let mut last = None;
        for addr in bootstrap_order(&brokers, turn) {
            match p.set_up_with(addr) {
                Ok(()) => return Ok(p),
                Err(e) => {
                    tracing::debug!(broker = addr, error = %e, "bootstrap broker failed; trying the next");
                    keep_the_refusal(&mut last, e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ProducerError::Connect {
            addr: brokers,
            detail: "no broker address given".into(),
        }))
    }

    /// Makes bootstrap broker `addr` connection 0 and sends it the setup
    /// requests that start a session.
    fn set_up_with(&mut self, addr: &str) -> Result<(), ProducerError> {
        // A previous broker's connection: its reader is joined when it
        // drops, so what it read is in the channel; that goes too.
        self.conns.clear();
        while self.responses.try_recv().is_ok() {}
        self.conns.push(self.open(addr, 0)?);
        self.setup = 0;
        self.negotiate_versions()?;
        self.init_producer_id()
    }

    /// Opens connection `index` to `addr`, with the session's TLS and SASL.
    fn open(&self, addr: &str, index: usize) -> Result<Connection, ProducerError> {
        let timeouts = self.settings.timeouts;
        Connection::open(addr, index, &self.responses_tx, timeouts, &self.security)
    }

    /// Replaces connection `c` if the broker closed it while idle.
    fn reopen_if_closed(&mut self, c: usize) -> Result<(), ProducerError> {
        if self.conns[c].closed {
            let addr = self.conns[c].addr.clone();
            self.conns[c] = self.open(&addr, c)?;
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
                addr: self.conns[self.setup].addr.clone(),
                detail: format!("leader {node} is not among the brokers listed"),
            })?;
        let i = self.conns.len();
        let c = self.open(&addr, i)?;
        self.conns.push(c);
        self.by_node.insert(node, i);
        Ok(i)
    }

    /// Resolves where a frame of `source` goes, connecting as needed.
    /// `ids` is (instance id, batch seq): the first parts of each line's
    /// [`LineId`](crate::kafka::line_id::LineId).
    pub fn target(
        &mut self,
        topic: &str,
        source: &str,
        path: &str,
        ids: (u64, u64),
    ) -> Result<FrameTarget, ProducerError> {
        if !self.topics.contains_key(topic) {
            self.route(topic)?;
        }
        let partitions = self.topics.get(topic).map_or(1, Vec::len);
        // A glob source's file goes by its source's name (the key) and
        // carries its path in a `file` header.
        let (key, file) = (
            crate::config::kafka_key(source),
            crate::config::split_key(source).1,
        );
        let partition = partition_for(key.as_bytes(), partitions) as i32;
        let slot = *self
            .slots
            .get(&(topic.to_string(), partition))
            .ok_or_else(|| {
                ProducerError::topic(topic, format!("partition {partition} is unknown"))
            })?;
        if let Some(isr) = self
            .partitions
            .get_mut(slot)
            .and_then(|p| p.thin_isr.take())
        {
            tracing::warn!(topic, partition, in_sync_replicas = isr, "fewer than 2 in-sync replicas: acks=all keeps fewer than 2 copies of these lines (raise the topic's replication factor)");
        }
        let now_ms = crate::runtime::now_ms() as i64;
        Ok(FrameTarget {
            topic: topic.to_string(),
            partition,
            slot,
            source: source.to_string(),
            path: path.to_string(),
            record: RecordTemplate::new(key, file, path, self.host_header.clone(), now_ms, ids),
            ids,
        })
    }

    /// Adds one line (the `index`th of its spooled batch, at file offset
    /// `offset`) of spooled frame `frame` to its partition's open batch,
    /// sealing and sending batches as they fill. Blocks for answers while
    /// the connection is full.
    pub fn append(
        &mut self,
        t: &FrameTarget,
        frame: u64,
        (index, offset): (u32, u64),
        line: &[u8],
    ) -> Result<(), ProducerError> {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(offset).as_bytes();
        let body_len = t.record.body_len(digits, line);
        let lone_size = (self.settings.batch_bytes / 2).min(64 << 10);
        let lone = body_len + RECORD_SLACK >= lone_size;

        let slot = t.slot;
        if self.must_seal_before(slot, body_len, lone) {
            self.seal(slot)?;
        }
        let batch_bytes = self.settings.batch_bytes;
        let Some(state) = self.partitions.get_mut(slot) else {
            return Err(ProducerError::topic(
                &t.topic,
                format!("partition {} is unknown", t.partition),
            ));
        };
        let b = state.open.get_or_insert_with(|| {
            // Room for a full batch up front: growing it would copy.
            let capacity = if lone {
                body_len + 32
            } else {
                batch_bytes + 64
            };
            OpenBatch::new(t.record.now_ms, capacity)
        });
        let r = LineRecord {
            offset_digits: digits,
            index,
            line,
        };
        b.push(&t.record, frame, &r, body_len);
        if lone {
            b.lone = Some(LoneLine {
                topic: t.topic.clone(),
                source: t.source.clone(),
                path: t.path.clone(),
                offset,
                value: line.to_vec(),
                id: crate::kafka::line_id::LineId {
                    instance: t.ids.0,
                    seq: t.ids.1,
                    index,
                }
                .encode(),
            });
            self.seal(slot)?;
        }
        Ok(())
    }

    /// Whether the open batch of `slot` must be sealed before a record of
    /// `body_len` joins it: it would not fit, or one of them goes alone.
    fn must_seal_before(&self, slot: usize, body_len: usize, lone: bool) -> bool {
        self.partitions.get(slot).is_some_and(|p| {
            p.open.as_ref().is_some_and(|b| {
                lone || b.lone.is_some()
                    || b.buf.len() + body_len + RECORD_SLACK > self.settings.batch_bytes
            })
        })
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

    /// Whether anything is open, waiting, held or unanswered.
    pub fn in_flight(&self) -> bool {
        self.partitions
            .iter()
            .any(|p| p.open.is_some() || !p.held.is_empty())
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
        self.pump_unthrottled()?;
        self.give_up_silent_connections();
        self.release_held()
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
            self.wait_for_progress()?;
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
        let seal_no = state.next_seal;
        state.next_seal += 1;
        let (topic, partition) = (state.topic.clone(), state.partition);
        let fields = BatchFields {
            count: open.count,
            base_ms: open.base_ms,
            max_ms: open.max_ms,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence,
        };
        let batch = finish_batch(open.buf, &fields, self.settings.lz4).map_err(|e| {
            ProducerError::Protocol {
                addr: String::new(),
                detail: format!("lz4 compression failed: {e}"),
            }
        })?;
        self.send(Sealed {
            lines: BatchLines {
                topic,
                partition,
                slot,
                seal_no,
                resent: false,
                count: open.count,
                runs: open.runs,
                lone: open.lone,
            },
            batch,
        })
    }

    /// [`queue`](Self::queue)s sealed batch `s`, then, for backpressure,
    /// waits for answers while too much is queued or held.
    fn send(&mut self, s: Sealed) -> Result<(), ProducerError> {
        let slot = s.lines.slot;
        self.queue(s)?;
        while self.partitions[slot].held.len() > MAX_HELD
            || self.partitions.iter().map(|p| p.held.len()).sum::<usize>() > MAX_HELD_IN_ALL
            || self.conns.iter().any(|c| c.waiting.len() > MAX_WAITING)
        {
            self.wait_for_progress()?;
        }
        Ok(())
    }

    /// Takes in the next answer from any connection, waiting at most until
    /// the next thing is due: a throttle's end (then the waiting batches
    /// are written), a held partition's retry (then its batches are sent
    /// again), or an answer's timeout (then that connection is given up
    /// and its batches held). `Err` once a partition has failed for longer
    /// than the delivery timeout.
    fn wait_for_progress(&mut self) -> Result<(), ProducerError> {
        self.release_held()?;
        let now = Instant::now();
        let wake = [self.throttle_end(), self.next_retry()]
            .into_iter()
            .flatten()
            .fold(now + self.settings.timeouts.answer(), Instant::min);
        match self
            .responses
            .recv_timeout(wake.saturating_duration_since(now))
        {
            Ok((from, r)) => self.answer(from, r),
            Err(_) => {
                self.pump_unthrottled()?;
                self.give_up_silent_connections();
                self.release_held()
            }
        }
    }

    /// When the first throttle of a connection with waiting batches ends.
    fn throttle_end(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter(|c| !c.waiting.is_empty())
            .filter_map(|c| c.throttled_until)
            .min()
    }

    /// Writes the waiting batches of connections whose throttle is over.
    fn pump_unthrottled(&mut self) -> Result<(), ProducerError> {
        for c in 0..self.conns.len() {
            if self.conns[c].throttled_until.is_some() && !self.conns[c].waiting.is_empty() {
                self.pump(c)?;
            }
        }
        Ok(())
    }

    /// Writes connection `c`'s waiting batches while it has room. A write
    /// that fails gives the connection up (its batches are held and sent
    /// again, see [`retry`]).
    fn pump(&mut self, c: usize) -> Result<(), ProducerError> {
        if self.conns[c].retired {
            return Ok(());
        }
        let version = self.versions.produce;
        match self.conns[c].pump(version, &self.settings.client_id, &mut self.correlations) {
            Err(e @ ProducerError::Io { .. }) => {
                self.retire(c, e.to_string());
                Ok(())
            }
            r => r,
        }
    }

    /// Takes in one answer from connection `from`. A lost connection, and
    /// an error a retry can clear, hold the batches concerned for sending
    /// again ([`retry`]); the rest is [`take_answer`](Self::take_answer).
    fn answer(&mut self, from: usize, r: std::io::Result<Bytes>) -> Result<(), ProducerError> {
        if self.conns[from].retired {
            // Read before it was given up: its batches are held already.
            return Ok(());
        }
        let Some(f) = self.conns[from].in_flight.pop_front() else {
            return self.answer_unasked(from, r);
        };
        self.conns[from].last_answer = Some(Instant::now());
        let addr = self.conns[from].addr.clone();
        let buf = match answer_body(&addr, r, ApiKey::Produce, f.version, f.correlation) {
            Ok(buf) => buf,
            Err(e @ ProducerError::Io { .. }) => {
                self.conns[from].in_flight.push_front(f);
                self.retire(from, e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.take_answer(from, f, buf)
    }

    /// Takes in Produce answer `buf` to request `f` from connection `from`.
    fn take_answer(
        &mut self,
        from: usize,
        f: InFlight,
        mut buf: Bytes,
    ) -> Result<(), ProducerError> {
        let addr = self.conns[from].addr.clone();
        let resp =
            ProduceResponse::decode(&mut buf, f.version).map_err(|e| ProducerError::Protocol {
                addr: addr.clone(),
                detail: format!("Produce v{}: {e}", f.version),
            })?;
        if resp.throttle_time_ms > 0 {
            // The broker throttles this client: nothing more to it until
            // then (KIP-219); what waits is written by `pump_unthrottled`.
            tracing::debug!(broker = %addr, ms = resp.throttle_time_ms, "Kafka throttles this client");
            let until = Instant::now() + Duration::from_millis(resp.throttle_time_ms as u64);
            self.conns[from].throttled_until = Some(until);
        }
        let (topic, partition) = (&f.sealed.lines.topic, f.sealed.lines.partition);
        let part = resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| ProducerError::Protocol {
                addr: addr.clone(),
                detail: format!("the Produce answer does not mention {topic}/{partition}"),
            })?;
        let error = ResponseError::try_from_code(part.error_code);
        if let Some(e) = error.filter(|&e| self.clears_on_resend(&f.sealed.lines, e)) {
            let why = format!("{topic}/{partition}: {}", error_name(e));
            let mut sealed = f.sealed;
            sealed.lines.resent |= retry::may_have_kept(e);
            self.hold(sealed, why, retry::needs_new_leader(e));
            return self.pump(from);
        }
        let (base_offset, error_message) = (part.base_offset, part.error_message.clone());
        let lines = f.sealed.lines;
        let (topic, partition) = (&lines.topic, lines.partition);
        // The lone line's batch, if this is it, is answered for good.
        let lone_sequence = match (&lines.lone, self.partitions.get_mut(lines.slot)) {
            (Some(_), Some(state)) => state.lone_unanswered.take(),
            _ => None,
        };
        match error {
            // NONE, or DUPLICATE_SEQUENCE_NUMBER: the broker has the batch.
            None | Some(ResponseError::DuplicateSequenceNumber) => {
                let base = (error.is_none() && base_offset >= 0).then_some(base_offset);
                let events = Self::acknowledged(&lines.runs, partition, base);
                self.report(lines.slot, lines.seal_no, events);
                self.taken(lines.slot);
                if let Some(p) = self.partitions.get_mut(lines.slot) {
                    p.established = true;
                }
            }
            Some(e) if is_refusal(e) => {
                let error = match &error_message {
                    Some(m) => format!("{} {}", error_name(e), m.as_str()),
                    None => error_name(e),
                };
                self.refused(lines, lone_sequence, error)?;
            }
            Some(ResponseError::InvalidTimestamp) => {
                return Err(ProducerError::ClockAhead {
                    addr,
                    topic: topic.clone(),
                    partition,
                })
            }
            Some(e) => {
                return Err(ProducerError::Refused {
                    addr,
                    api: "Produce",
                    error: format!("{topic}/{partition}: {}", error_name(e)),
                })
            }
        }
        self.pump(from)
    }

    /// Takes in what connection `from` read while nothing was asked there:
    /// the broker closing an idle connection is no failure, anything else
    /// is.
    fn answer_unasked(
        &mut self,
        from: usize,
        r: std::io::Result<Bytes>,
    ) -> Result<(), ProducerError> {
        let addr = self.conns[from].addr.clone();
        if let Err(e) = r {
            if self.conns[from].waiting.is_empty() {
                // Closed while idle: nothing was lost; reopen on next use.
                tracing::debug!(broker = %addr, "idle Kafka connection closed by the broker");
                self.conns[from].closed = true;
            } else {
                // Closed with batches waiting (a throttle): send them
                // again elsewhere.
                self.retire(from, format!("Kafka broker {addr}: {e}"));
            }
            return Ok(());
        }
        Err(ProducerError::Protocol {
            addr,
            detail: "an answer arrived for no request".into(),
        })
    }

    /// The events for the lines of a batch Kafka took, run by run, the
    /// first at offset `base` of `partition` (None when the broker did not
    /// say).
    fn acknowledged(runs: &[(u64, u32)], partition: i32, base: Option<i64>) -> Vec<Event> {
        let mut at = 0i64;
        let mut out = Vec::with_capacity(runs.len());
        for &(frame, n) in runs {
            at += n as i64;
            out.push(Event::Acked {
                frame,
                lines: n,
                partition,
                last_offset: base.map(|b| b + at - 1),
            });
        }
        out
    }

    /// Reports what became of batch `seal_no` of partition `slot`, in seal
    /// order: a batch answered before an earlier one of its partition
    /// (possible once a batch is sent again) waits for it. The forwarder
    /// counts a frame's acknowledged lines as its first ones, so a later
    /// batch's lines must never be reported before an earlier batch's.
    fn report(&mut self, slot: usize, seal_no: u64, events: Vec<Event>) {
        let Some(p) = self.partitions.get_mut(slot) else {
            return;
        };
        if seal_no != p.next_report {
            p.answered_ahead.insert(seal_no, events);
            return;
        }
        self.events.extend(events);
        p.next_report += 1;
        while let Some(later) = p.answered_ahead.remove(&p.next_report) {
            self.events.extend(later);
            p.next_report += 1;
        }
    }

    /// A batch Kafka refused for good: a lone line (whose sequence number
    /// was `lone_sequence`) becomes an [`Event::Refused`]; a batch of
    /// several lines ends the session.
    fn refused(
        &mut self,
        lines: BatchLines,
        lone_sequence: Option<i32>,
        error: String,
    ) -> Result<(), ProducerError> {
        match (lines.lone, lone_sequence) {
            // Only if it was never sent before: a copy sent earlier (on a
            // connection lost since) may be in Kafka, and then its number
            // is taken; the session ends and the read-back decides.
            (Some(line), Some(sequence)) if lines.count == 1 && !lines.resent => {
                let frame = lines.runs.first().map_or(0, |r| r.0);
                self.report(
                    lines.slot,
                    lines.seal_no,
                    vec![Event::Refused { frame, line, error }],
                );
                self.taken(lines.slot);
                // Nothing after it was numbered (see `seal`): the
                // partition's next batch takes its number.
                if let Some(state) = self.partitions.get_mut(lines.slot) {
                    state.next_sequence = sequence;
                }
                Ok(())
            }
            _ => Err(ProducerError::BatchRefused {
                topic: lines.topic,
                partition: lines.partition,
                lines: lines.count as u32,
                error,
            }),
        }
    }
}

impl Drop for NativeProducer {
    fn drop(&mut self) {
        // Shutting the sockets down ends the readers; one blocked on the
        // full answer channel is freed by draining it while we wait.
        for c in &self.conns {
            c.shut_down();
        }
        for c in &mut self.conns {
            if let Some(h) = c.take_reader() {
                while !h.is_finished() {
                    while self.responses.try_recv().is_ok() {}
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = h.join();
            }
        }
    }
}

mod retry;
mod setup;
#[cfg(test)]
mod tests;

pub use setup::TopicLookup;
