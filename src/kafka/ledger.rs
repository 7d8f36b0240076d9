//! ledger: owns the delivery ledger (for each source and topic, the
//! partition and the Kafka offset from which its lines past the spool
//! cursor can be found) and the read-back that turns it into
//! [`Redelivery`]: which lines past the cursor Kafka already has, so that a
//! restart after `kill -9` (or a producer rebuild) does not send them
//! again. This makes delivery exactly-once for every consumer, without
//! transactions.
//!
//! The argument:
//! - Every message carries its line's [`LineId`] (the `lc-id` header): the
//!   store's instance id, the spool batch's commit seq and the line's index
//!   in the batch. No two spooled lines of one store share an identity
//!   ([`line_id`]), whatever the files do (rotation, truncation), and no
//!   other logcatch uses our instance id.
//! - [`Redelivery::check`] skips a line iff its identity was found in
//!   Kafka by the read-back. So a skipped line is in Kafka: the read-back
//!   can miss a line (then it is sent again: a duplicate), but never make
//!   one be skipped that Kafka does not have. There is no queue, no order
//!   and no count involved.
//! - What the read-back misses only costs duplicates. It reads each
//!   partition of a [`LedgerEntry`] from its [`from_offset`] (the first
//!   acknowledged line past the cursor, else past the last acknowledged
//!   one; see [`AckTracker::ledger_snapshot`]), which the source's later
//!   lines cannot precede (one key, one partition, appended in order). The
//!   ledger is written atomically with the cursor.
//!
//! The read-back is bounded: it reads from the starts up to the high
//! watermarks taken when it starts (after [`SETTLE`], so that requests of
//! the ended session that the broker already took are counted), then takes
//! for at most [`TAIL`] what the consumer already fetched without waiting,
//! and ends there whatever other producers write meanwhile (it never waits
//! for a partition to go quiet). A start that retention has deleted is
//! logged and the partition is read from its low watermark: what was
//! deleted cannot be checked, so those lines (if any past the cursor) are
//! sent again.
//!
//! Entries are pruned when the ledger is written: a source with nothing in
//! flight, whose last frame sent the cursor passed, and that sent nothing
//! for [`PRUNE_IDLE`] (removed sources end that way too).
//!
//! A source with no entry gets one before its first line of a session is
//! sent: its partition and that partition's high watermark then
//! ([`partition_end`]), persisted with the cursor. So lines sent before
//! any of their acks was persisted are read back too.
//!
//! Limits (each costs duplicates, never a loss): if that anchor cannot be
//! taken (the broker does not answer it), the source's lines are sent
//! without it and, until an ack is persisted, are not read back; a
//! request the broker appends after the settle is not seen; a
//! repartitioned topic starts its entry over. Identities rely on a batch's
//! seq never being given to another batch, which holds across `kill -9`;
//! across power loss only with a spool `fsync` setting that makes a frame
//! durable before it is sent.
//!
//! The read-back consumer is built on the forwarder's librdkafka settings
//! ([`client_config`](crate::kafka::librdkafka::client_config)) whichever
//! client sends; the [`session`](crate::kafka::session) retries it while
//! the broker is unreachable.
//!
//! Must never: skip a line whose identity was not found in Kafka.
//!
//! [`from_offset`]: LedgerEntry::from_offset

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::kafka::acks::{AckTracker, PRUNE_IDLE};
use crate::kafka::librdkafka::header;
use crate::kafka::line_id::{self, LineId};
use crate::kafka::native::partition_for;
use crate::spool::Position;

/// How long the read-back waits before taking the high watermarks, so that
/// produce requests of the session that just ended, which the broker
/// already took, are below them. One that lands later is sent again.
pub const SETTLE: Duration = Duration::from_secs(1);

/// After the ends are reached, how long the read-back goes on taking the
/// messages the consumer already fetched (without waiting for more): the
/// rest of the batch at the end, for a broker whose high watermark
/// under-counts (tansu was seen one batch short).
const TAIL: Duration = Duration::from_millis(200);

/// How long the read-back may go without a message before it gives up (an
/// error: the session retries it).
const STALL: Duration = Duration::from_secs(30);

/// Where a source's lines past the cursor can be found in one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub partition: i32,
    /// Every line of this source past the cursor that Kafka has is at this
    /// offset or later.
    pub from_offset: i64,
    /// Kafka offset of the last acknowledged line.
    pub last_offset: i64,
    /// The spool position just past the last frame of this source and topic
    /// that was sent: once the cursor is there and nothing is in flight, the
    /// entry is pruned.
    pub sent_through: Position,
}

/// Persisted with the spool cursor
/// ([`Store::put_progress`](crate::store::Store::put_progress)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryLedger {
    /// By source name, then topic.
    pub entries: BTreeMap<String, BTreeMap<String, LedgerEntry>>,
    /// Written at a stop with nothing in flight: nothing after the cursor
    /// was sent, so no read-back is needed.
    pub clean: bool,
}

impl DeliveryLedger {
    pub fn entry_mut(&mut self, source: &str, topic: &str) -> Option<&mut LedgerEntry> {
        self.entries.get_mut(source)?.get_mut(topic)
    }

    /// Records acknowledged lines at `partition`, the first at `first` and
    /// the last at `last`.
    pub fn acked(&mut self, source: &str, topic: &str, partition: i32, (first, last): (i64, i64)) {
        let fresh = LedgerEntry {
            partition,
            from_offset: first,
            last_offset: last,
            sent_through: Position::default(),
        };
        let e = self
            .entries
            .entry(source.to_string())
            .or_default()
            .entry(topic.to_string())
            .or_insert(fresh);
        if e.partition == partition {
            e.last_offset = e.last_offset.max(last);
            e.from_offset = e.from_offset.min(first);
        } else {
            // The topic was repartitioned: start over on the new one.
            *e = LedgerEntry {
                sent_through: e.sent_through,
                ..fresh
            };
        }
    }

    /// A new entry: nothing acknowledged yet, lines to come in `partition`
    /// at `high` or later (its high watermark).
    pub fn anchor(&mut self, source: &str, topic: &str, partition: i32, high: i64) {
        self.entries.entry(source.to_string()).or_default().insert(
            topic.to_string(),
            LedgerEntry {
                partition,
                from_offset: high,
                last_offset: high - 1,
                sent_through: Position::default(),
            },
        );
    }

    /// Drops every entry `keep` refuses (and sources left with none);
    /// `keep` may update the entries it keeps.
    pub fn prune(&mut self, mut keep: impl FnMut(&str, &str, &mut LedgerEntry) -> bool) {
        for (source, topics) in self.entries.iter_mut() {
            topics.retain(|topic, e| keep(source, topic, e));
        }
        self.entries.retain(|_, topics| !topics.is_empty());
    }
}

/// Lines past the cursor that Kafka already has: the identities of our
/// messages the read-back found, by (batch seq, line index), with where
/// they are.
#[derive(Debug, Default)]
pub struct Redelivery {
    /// Those of batches before the one last checked are dropped: the spool
    /// hands batches out in seq order, so they cannot come up again (and
    /// if one did, it would only be sent again).
    found: BTreeMap<(u64, u32), (i32, i64)>,
    /// How many lines were skipped, for the log.
    pub skipped: u64,
}

/// What to do with one line after the cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Kafka has it, at `(partition, offset)`.
    Skip((i32, i64)),
}

impl Redelivery {
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Decides for the line `index` of the spool batch `seq`: skipped iff
    /// its identity was found.
    pub fn check(&mut self, seq: u64, index: u32) -> Verdict {
        if self.found.first_key_value().is_some_and(|(k, _)| k.0 < seq) {
            self.found = self.found.split_off(&(seq, 0));
        }
        match self.found.remove(&(seq, index)) {
            Some(at) => {
                self.skipped += 1;
                if self.found.is_empty() {
                    tracing::info!(
                        skipped = self.skipped,
                        "lines Kafka already had (sent before a crash) were not sent again"
                    );
                }
                Verdict::Skip(at)
            }
            None => Verdict::Send,
        }
    }

    /// Takes note of a message: kept if it carries an identity of
    /// `instance`.
    fn note(&mut self, instance: u64, id: Option<LineId>, at: (i32, i64)) {
        if let Some(id) = id.filter(|id| id.instance == instance) {
            self.found.insert((id.seq, id.index), at);
        }
    }
}

/// By (topic, partition): where the read-back starts.
type Starts = BTreeMap<(String, i32), i64>;

/// The offsets one partition is read over: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: i64,
    end: i64,
}

/// The range to read from `wanted` in a partition whose watermarks are
/// `low` and `high`, and the offsets retention deleted (`[wanted, low)`)
/// if any: those cannot be checked.
fn range_of(wanted: i64, (low, high): (i64, i64)) -> (Range, Option<(i64, i64)>) {
    let start = wanted.max(low);
    let gap = (wanted < low).then_some((wanted, low));
    (
        Range {
            start,
            end: high.max(start),
        },
        gap,
    )
}

/// Which partitions reached the end of their range.
#[derive(Debug)]
struct Reading {
    ends: BTreeMap<(String, i32), i64>,
    reached: BTreeSet<(String, i32)>,
}

impl Reading {
    /// Only non-empty ranges are read.
    fn new(ranges: &BTreeMap<(String, i32), Range>) -> Reading {
        Reading {
            ends: ranges
                .iter()
                .filter(|(_, r)| r.start < r.end)
                .map(|(k, r)| (k.clone(), r.end))
                .collect(),
            reached: BTreeSet::new(),
        }
    }

    /// A message at `offset` was read.
    fn see(&mut self, topic: &str, partition: i32, offset: i64) {
        let key = (topic.to_string(), partition);
        if self.ends.get(&key).is_some_and(|end| offset + 1 >= *end) {
            self.reached.insert(key);
        }
    }

    /// The consumer's position in a partition is `position` (it moves past
    /// records that are never handed out, e.g. transaction markers).
    fn at(&mut self, topic: &str, partition: i32, position: i64) {
        let key = (topic.to_string(), partition);
        if self.ends.get(&key).is_some_and(|end| position >= *end) {
            self.reached.insert(key);
        }
    }

    fn done(&self) -> bool {
        self.reached.len() == self.ends.len()
    }
}

/// Reads back, from Kafka, the identities of our messages (`instance`'s)
/// past each ledger entry's start. `base` carries the connection settings
/// (bootstrap servers, security).
pub fn read_back(
    base: &ClientConfig,
    ledger: &DeliveryLedger,
    instance: u64,
) -> Result<Redelivery, KafkaError> {
    if ledger.clean || ledger.entries.is_empty() {
        return Ok(Redelivery::default());
    }
    let consumer = read_back_consumer(base)?;
    let mut starts = start_offsets(ledger);
    keep_present(&consumer, &mut starts)?;
    if starts.is_empty() {
        return Ok(Redelivery::default());
    }
    std::thread::sleep(SETTLE);
    let ranges = ranges(&consumer, &starts)?;
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), r) in &ranges {
        if r.start < r.end {
            tpl.add_partition_offset(topic, *p, Offset::Offset(r.start))?;
        }
    }
    if tpl.count() == 0 {
        return Ok(Redelivery::default());
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let r = read_ranges(&consumer, Reading::new(&ranges), instance)?;
    tracing::info!(
        partitions = tpl.count(),
        found = r.found.len(),
        ms = started.elapsed().as_millis() as u64,
        "read back the lines of ours Kafka has past the cursor"
    );
    Ok(r)
}

/// Where the next line of `source` lands in `topic` (its partition, by the
/// partitioner both clients use) and that partition's high watermark now:
/// a start for a new ledger entry, persisted before the source's first
/// line is sent, so that lines sent before any ack was persisted are read
/// back too. `consumer` is an [`anchor_consumer`].
pub fn partition_end(
    consumer: &ReadBackConsumer,
    topic: &str,
    source: &str,
) -> Result<(i32, i64), KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    // Where the producers send `source`'s lines: by its Kafka key.
    let p = partition_for(crate::config::kafka_key(source).as_bytes(), partitions) as i32;
    let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
    Ok((p, high))
}

/// The consumer [`partition_end`] asks with: the read-back's.
pub fn anchor_consumer(base: &ClientConfig) -> Result<ReadBackConsumer, KafkaError> {
    read_back_consumer(base)
}

/// A consumer with the producer's connection settings, that commits
/// nothing and sees every message.
fn read_back_consumer(base: &ClientConfig) -> Result<ReadBackConsumer, KafkaError> {
    let mut config = base.clone();
    config
        .set(
            "group.id",
            format!("logcatch-readback-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_uncommitted")
        // A start deleted meanwhile by retention: from the oldest left.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        // Not the default 1 s pause after a fetch that filled the queue
        // (one fetch of lz4 batches does): the read-back holds up sending.
        .set("fetch.queue.backoff.ms", "10");
    for k in [
        "acks",
        "enable.idempotence",
        "message.timeout.ms",
        "compression.type",
        "linger.ms",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.messages",
    ] {
        config.remove(k);
    }
    config.create_with_context(ReadBackContext)
}

/// The read-back's (and the anchoring's) consumer.
pub type ReadBackConsumer = BaseConsumer<ReadBackContext>;

/// The read-back consumer's context: reaching a partition's end is how the
/// read-back knows it is done (`enable.partition.eof`), not an error to
/// log; librdkafka's other errors are logged as the producer's are.
pub struct ReadBackContext;

impl rdkafka::ClientContext for ReadBackContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(%error, reason, "read-back reached a partition's end");
        } else {
            tracing::warn!(%error, reason, "Kafka read-back consumer error (librdkafka retries by itself)");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReadBackContext {}

/// One assignment per (topic, partition), from the lowest start in it.
fn start_offsets(ledger: &DeliveryLedger) -> Starts {
    let mut starts = Starts::new();
    for topics in ledger.entries.values() {
        for (topic, e) in topics {
            let s = starts
                .entry((topic.clone(), e.partition))
                .or_insert(e.from_offset);
            *s = (*s).min(e.from_offset);
        }
    }
    starts
}

/// Drops the starts in topics or partitions that no longer exist.
fn keep_present(consumer: &ReadBackConsumer, starts: &mut Starts) -> Result<(), KafkaError> {
    // A topic or partition that no longer exists (deleted by an operator,
    // or a topic a source no longer uses) has nothing to read back; an
    // unreachable broker is an error, retried by the caller.
    let mut present: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for topic in starts
        .keys()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
    {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let parts = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        present.insert(topic, parts);
    }
    starts.retain(|(t, p), _| present.get(t).is_some_and(|ps| ps.contains(p)));
    Ok(())
}

/// The range of each partition, from its watermarks now. A start that
/// retention deleted is logged (once per read-back) with what cannot be
/// checked.
fn ranges(
    consumer: &ReadBackConsumer,
    starts: &Starts,
) -> Result<BTreeMap<(String, i32), Range>, KafkaError> {
    let mut out = BTreeMap::new();
    for ((topic, p), start) in starts {
        let marks = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        let (range, gap) = range_of(*start, marks);
        if let Some((from, low)) = gap {
            tracing::warn!(topic, partition = p, from, low,
                "retention already deleted where the read-back should start: lines of ours in offsets [from, low) cannot be checked, so any past the cursor are sent again (duplicates possible); reading on from the oldest offset left");
        }
        out.insert((topic.clone(), *p), range);
    }
    Ok(out)
}

/// Polls until every range is read (an error if no message comes for
/// [`STALL`]), then takes what the consumer already holds (for at most
/// [`TAIL`]), noting the identities of `instance`'s messages.
fn read_ranges(
    consumer: &ReadBackConsumer,
    mut reading: Reading,
    instance: u64,
) -> Result<Redelivery, KafkaError> {
    let mut r = Redelivery::default();
    let mut last_message = Instant::now();
    let mut tail: Option<Instant> = None;
    loop {
        if reading.done() {
            let since = *tail.get_or_insert_with(Instant::now);
            if since.elapsed() >= TAIL {
                break;
            }
        } else if last_message.elapsed() >= STALL {
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let wait = if tail.is_some() {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                last_message = Instant::now();
                reading.see(m.topic(), m.partition(), m.offset());
                // Past the end too: a found identity is in Kafka wherever
                // it is.
                let id = header(&m, line_id::HEADER).and_then(LineId::decode);
                r.note(instance, id, (m.partition(), m.offset()));
            }
            None if tail.is_some() => break,
            None | Some(Err(KafkaError::PartitionEOF(_))) => {
                for e in consumer.position()?.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        reading.at(e.topic(), e.partition(), o);
                    }
                }
            }
            Some(Err(e)) => return Err(e),
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 0xA11CE;

    fn id(seq: u64, index: u32) -> Option<LineId> {
        Some(LineId {
            instance: US,
            seq,
            index,
        })
    }

    /// After a rotation, batch 9's first line has the same file offset (0)
    /// as batch 5's first line. Only the one whose identity Kafka has is
    /// skipped, whichever it is.
    #[test]
    fn a_repeated_file_offset_is_sent_unless_its_identity_is_found() {
        let mut r = Redelivery::default();
        r.note(US, id(5, 0), (0, 100));
        assert_eq!(r.check(5, 0), Verdict::Skip((0, 100)));
        assert_eq!(r.check(5, 0), Verdict::Send, "found once, skipped once");
        assert_eq!(r.check(9, 0), Verdict::Send, "same offset, other line");
        assert!(r.is_empty());
        assert_eq!(r.skipped, 1);

        let mut r = Redelivery::default();
        r.note(US, id(9, 0), (0, 200));
        assert_eq!(r.check(5, 0), Verdict::Send, "same offset, other line");
        assert_eq!(r.check(9, 0), Verdict::Skip((0, 200)));
    }

    /// Identities of batches before the one checked are dropped, so the
    /// fast path (`is_empty`) comes back once the read-back's lines passed.
    #[test]
    fn identities_of_earlier_batches_are_dropped() {
        let mut r = Redelivery::default();
        r.note(US, id(3, 0), (0, 1));
        r.note(US, id(4, 1), (0, 2));
        assert_eq!(r.check(4, 0), Verdict::Send);
        assert!(!r.is_empty());
        assert_eq!(r.check(4, 1), Verdict::Skip((0, 2)));
        assert!(r.is_empty());
    }

    /// Found identities are skipped in any order; a gap (a dead-lettered or
    /// never-acknowledged line) is sent; another instance's messages (a
    /// neighbour, even with our host name) and messages without an
    /// identity count for nothing.
    #[test]
    fn only_identities_of_this_instance_found_are_skipped() {
        let mut r = Redelivery::default();
        r.note(US, id(7, 2), (1, 12));
        r.note(US, id(7, 0), (1, 10));
        let neighbour = id(7, 1).map(|i| LineId {
            instance: US + 1,
            ..i
        });
        r.note(US, neighbour, (1, 11));
        r.note(US, None, (1, 13));
        assert_eq!(r.check(7, 0), Verdict::Skip((1, 10)));
        assert_eq!(r.check(7, 1), Verdict::Send);
        assert_eq!(r.check(7, 2), Verdict::Skip((1, 12)));
        assert_eq!(r.check(7, 3), Verdict::Send);
        assert_eq!(r.skipped, 2);
    }

    /// Retention deleted offsets 10..50: the read starts at 50, the gap is
    /// reported, and lines whose messages were in the gap are sent.
    #[test]
    fn a_retention_gap_is_reported_and_lines_past_it_are_sent() {
        let (range, gap) = range_of(10, (50, 80));
        assert_eq!(range, Range { start: 50, end: 80 });
        assert_eq!(gap, Some((10, 50)));
        assert_eq!(range_of(60, (50, 80)), (Range { start: 60, end: 80 }, None));
        // Everything deleted: nothing to read, never a loop.
        let (range, _) = range_of(10, (90, 90));
        let mut ranges = BTreeMap::new();
        ranges.insert(("t".to_string(), 0), range);
        assert!(Reading::new(&ranges).done());
        // Line (3, 0) was in the gap: not found, so sent.
        let mut r = Redelivery::default();
        r.note(US, id(3, 1), (0, 50));
        assert_eq!(r.check(3, 0), Verdict::Send);
        assert_eq!(r.check(3, 1), Verdict::Skip((0, 50)));
    }

    /// A neighbour keeps writing to the partition: the read ends at the
    /// end taken at the start, and later messages are not looked at.
    #[test]
    fn a_busy_neighbour_does_not_delay_the_end() {
        let mut ranges = BTreeMap::new();
        ranges.insert(("t".to_string(), 0), Range { start: 10, end: 20 });
        ranges.insert(("t".to_string(), 1), Range { start: 5, end: 5 });
        let mut reading = Reading::new(&ranges);
        let mut read = 0;
        for offset in 10.. {
            if reading.done() {
                break;
            }
            reading.see("t", 0, offset);
            read += 1;
            assert!(offset < 1_000, "the read-back never ended");
        }
        assert_eq!(read, 10);
        // A transaction marker at the end is never handed out: the
        // position says the end was reached.
        let mut reading = Reading::new(&ranges);
        reading.see("t", 0, 17);
        assert!(!reading.done());
        reading.at("t", 0, 20);
        assert!(reading.done());
    }

    #[test]
    fn a_clean_ledger_needs_no_read_back() {
        let mut l = DeliveryLedger::default();
        l.acked("a", "t", 0, (5, 10));
        l.clean = true;
        let r = read_back(&ClientConfig::new(), &l, US).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn acks_keep_the_lowest_start_and_repartitioning_restarts() {
        let mut l = DeliveryLedger::default();
        l.acked("a", "t", 0, (10, 10));
        l.acked("a", "t", 0, (11, 15));
        let e = *l.entry_mut("a", "t").unwrap();
        assert_eq!((e.from_offset, e.last_offset), (10, 15));
        l.acked("a", "t", 3, (1, 1));
        let e = *l.entry_mut("a", "t").unwrap();
        assert_eq!((e.partition, e.from_offset, e.last_offset), (3, 1, 1));
        l.acked("b", "t", 0, (1, 1));
        l.prune(|source, _, _| source != "a");
        assert!(!l.entries.contains_key("a"));
        assert!(l.entries.contains_key("b"));
        let starts = start_offsets(&l);
        assert_eq!(starts.get(&("t".to_string(), 0)), Some(&1));
    }
}
