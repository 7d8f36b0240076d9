//! ledger: owns the delivery ledger (for each source and topic, the
//! partition and Kafka offset of its last acknowledged line, and how many of
//! its lines after the spool cursor Kafka had acknowledged) and the
//! read-back that turns it into [`Redelivery`]: which lines after the cursor
//! Kafka already has, so that a restart after `kill -9` (or a producer
//! rebuild) does not send them again. This makes delivery exactly-once for
//! every consumer, without transactions.
//!
//! The argument: a source's lines all carry its name as the key, so they go
//! to one partition, in spool order (idempotent producer: no reordering, no
//! duplicates within a session). The ledger is written atomically with the
//! cursor. After a crash, the lines of source S after the cursor that Kafka
//! has are: first the `acked_beyond_cursor` ones the ledger counted, then
//! every message in S's partition after `last_offset` whose `host` and
//! `source` headers are ours, in order. Those are matched against S's lines
//! after the cursor by their `offset` header, in order; a line is skipped
//! only on a match, so a gap (a dead-lettered line) or a surprise only ever
//! causes a resend, never a loss.
//!
//! Limits: the host name and source name must identify one logcatch per
//! topic (two daemons on one host with the same source name and topic would
//! see each other's messages); a source with no ledger entry yet (its first
//! acks were never persisted) is not read back.
//!
//! The read-back consumer is built on the forwarder's librdkafka settings
//! ([`client_config`](crate::kafka::librdkafka::client_config)) whichever
//! client sends; the [`session`](crate::kafka::session) retries it while
//! the broker is unreachable.
//!
//! Must never: skip a line that is not matched by a message in Kafka.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::kafka::librdkafka::header;

/// Where a source's acknowledged lines sit in one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub partition: i32,
    /// Kafka offset of the last acknowledged line.
    pub last_offset: i64,
    /// Lines after the spool cursor that were acknowledged when this was
    /// written.
    pub acked_beyond_cursor: u64,
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

    /// Records an acknowledged line at `(partition, offset)`.
    pub fn acked(&mut self, source: &str, topic: &str, partition: i32, offset: i64) {
        if let Some(e) = self.entry_mut(source, topic) {
            if e.partition == partition {
                e.last_offset = e.last_offset.max(offset);
            } else {
                // The topic was repartitioned: start over on the new one.
                *e = LedgerEntry {
                    partition,
                    last_offset: offset,
                    acked_beyond_cursor: 0,
                };
            }
            return;
        }
        self.entries.entry(source.to_string()).or_default().insert(
            topic.to_string(),
            LedgerEntry {
                partition,
                last_offset: offset,
                acked_beyond_cursor: 0,
            },
        );
    }
}

#[derive(Debug, Default)]
struct SourcePlan {
    skip_first: u64,
    partition: i32,
    /// (Kafka offset, `offset` header) of our messages after `last_offset`.
    found: VecDeque<(i64, u64)>,
}

/// Lines after the cursor that Kafka already has.
#[derive(Debug, Default)]
pub struct Redelivery {
    plans: HashMap<String, HashMap<String, SourcePlan>>,
    /// How many lines were skipped, for the log.
    pub skipped: u64,
}

/// What to do with one line after the cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Kafka has it; at `(partition, offset)` when known.
    Skip(Option<(i32, i64)>),
}

impl Redelivery {
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// Decides for the next line of `source` to `topic` in spool order.
    pub fn check(&mut self, source: &str, topic: &str, file_offset: u64) -> Verdict {
        let Some(topics) = self.plans.get_mut(source) else {
            return Verdict::Send;
        };
        let Some(plan) = topics.get_mut(topic) else {
            return Verdict::Send;
        };
        let verdict = if plan.skip_first > 0 {
            plan.skip_first -= 1;
            Verdict::Skip(None)
        } else {
            match plan.found.front() {
                Some(&(kafka_offset, header)) if header == file_offset => {
                    plan.found.pop_front();
                    Verdict::Skip(Some((plan.partition, kafka_offset)))
                }
                _ => Verdict::Send,
            }
        };
        if verdict != Verdict::Send {
            self.skipped += 1;
            // Done with this source: later lines take the fast path.
            if plan.skip_first == 0 && plan.found.is_empty() {
                topics.remove(topic);
                if topics.is_empty() {
                    self.plans.remove(source);
                }
                tracing::info!(
                    source,
                    topic,
                    skipped_so_far = self.skipped,
                    "lines Kafka already had (sent before a crash) were not sent again"
                );
            }
        }
        verdict
    }

    /// Builds the plan from a ledger and the messages found in Kafka.
    fn from_found(
        ledger: &DeliveryLedger,
        found: HashMap<(String, String), VecDeque<(i64, u64)>>,
    ) -> Redelivery {
        let mut r = Redelivery::default();
        for (source, topics) in &ledger.entries {
            for (topic, e) in topics {
                let f = found
                    .get(&(source.clone(), topic.clone()))
                    .cloned()
                    .unwrap_or_default();
                if e.acked_beyond_cursor == 0 && f.is_empty() {
                    continue;
                }
                r.plans.entry(source.clone()).or_default().insert(
                    topic.clone(),
                    SourcePlan {
                        skip_first: e.acked_beyond_cursor,
                        partition: e.partition,
                        found: f,
                    },
                );
            }
        }
        r
    }
}

/// Where the read-back starts in each (topic, partition), and where it
/// ends.
type Offsets = BTreeMap<(String, i32), i64>;

/// What the read-back found: by (source, topic), the (Kafka offset,
/// `offset` header) of our messages after the ledger entry, in order.
type Found = HashMap<(String, String), VecDeque<(i64, u64)>>;

/// Reads back, from Kafka, our messages after each ledger entry.
/// `base` carries the connection settings (bootstrap servers, security).
pub fn read_back(
    base: &ClientConfig,
    ledger: &DeliveryLedger,
    host: &str,
) -> Result<Redelivery, KafkaError> {
    if ledger.clean || ledger.entries.is_empty() {
        return Ok(Redelivery::default());
    }
    let consumer = read_back_consumer(base)?;
    let mut starts = start_offsets(ledger);
    keep_present(&consumer, &mut starts)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Offsets::new();
    for ((topic, p), start) in &starts {
        let (_, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        ends.insert((topic.clone(), *p), high);
        tpl.add_partition_offset(topic, *p, Offset::Offset(*start))?;
    }
    if starts.is_empty() {
        return Ok(Redelivery::from_found(ledger, HashMap::new()));
    }
    consumer.assign(&tpl)?;
    let found = read_until_caught_up(&consumer, ledger, host, &starts, &ends)?;
    Ok(Redelivery::from_found(ledger, found))
}

/// A consumer with the producer's connection settings, that commits
/// nothing and sees every message.
fn read_back_consumer(base: &ClientConfig) -> Result<BaseConsumer, KafkaError> {
    let mut config = base.clone();
    config
        .set(
            "group.id",
            format!("logcatch-readback-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_uncommitted")
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
    config.create()
}

/// One assignment per (topic, partition), from the lowest entry in it.
fn start_offsets(ledger: &DeliveryLedger) -> Offsets {
    let mut starts = Offsets::new();
    for topics in ledger.entries.values() {
        for (topic, e) in topics {
            let s = starts
                .entry((topic.clone(), e.partition))
                .or_insert(e.last_offset + 1);
            *s = (*s).min(e.last_offset + 1);
        }
    }
    starts
}

/// Drops the starts in topics or partitions that no longer exist.
fn keep_present(consumer: &BaseConsumer, starts: &mut Offsets) -> Result<(), KafkaError> {
    // A topic or partition that no longer exists (deleted by an operator,
    // or a topic a source no longer uses) has nothing to read back; an
    // unreachable broker is an error, retried by the caller.
    let mut present: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for topic in starts
        .keys()
        .map(|(t, _)| t.clone())
        .collect::<std::collections::BTreeSet<_>>()
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

/// Polls the assigned partitions until each reached its end (or within a
/// minute, else an error), collecting our messages past the ledger.
fn read_until_caught_up(
    consumer: &BaseConsumer,
    ledger: &DeliveryLedger,
    host: &str,
    starts: &Offsets,
    ends: &Offsets,
) -> Result<Found, KafkaError> {
    let mut found = Found::new();
    // Read until every partition reached its high watermark (which may
    // under-count on some brokers, hence also) and nothing came for a while.
    let mut reached: BTreeMap<(String, i32), bool> = starts
        .iter()
        .map(|(k, start)| (k.clone(), ends.get(k).is_some_and(|h| *h <= *start)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_message = Instant::now();
    loop {
        let all = reached.values().all(|r| *r);
        if all && last_message.elapsed() >= Duration::from_secs(1) {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => return Err(e),
            Some(Ok(m)) => {
                last_message = Instant::now();
                let key = (m.topic().to_string(), m.partition());
                if ends.get(&key).is_some_and(|h| m.offset() + 1 >= *h) {
                    reached.insert(key, true);
                }
                if let Some((source, offset)) = ours_past_ledger(&m, ledger, host) {
                    found
                        .entry((source, m.topic().to_string()))
                        .or_default()
                        .push_back((m.offset(), offset));
                }
            }
        }
    }
}

/// The source and `offset` header of `m` if it is ours (our host, a
/// source in the ledger) and after that source's ledger entry.
fn ours_past_ledger<M: Message>(
    m: &M,
    ledger: &DeliveryLedger,
    host: &str,
) -> Option<(String, u64)> {
    if header(m, "host") != Some(host.as_bytes()) {
        return None;
    }
    let source = String::from_utf8_lossy(header(m, "source")?).into_owned();
    let offset = header(m, "offset")?;
    let e = ledger.entries.get(&source)?.get(m.topic())?;
    if e.partition != m.partition() || m.offset() <= e.last_offset {
        return None;
    }
    let offset = std::str::from_utf8(offset).ok()?.parse::<u64>().ok()?;
    Some((source, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(beyond: u64) -> DeliveryLedger {
        let mut l = DeliveryLedger::default();
        l.acked("a", "t", 0, 10);
        l.entry_mut("a", "t").unwrap().acked_beyond_cursor = beyond;
        l
    }

    #[test]
    fn skips_counted_lines_then_matched_ones_in_order() {
        let l = ledger(2);
        let mut found = HashMap::new();
        found.insert(
            ("a".to_string(), "t".to_string()),
            VecDeque::from(vec![(11, 300), (12, 400)]),
        );
        let mut r = Redelivery::from_found(&l, found);
        assert_eq!(r.check("a", "t", 100), Verdict::Skip(None));
        assert_eq!(r.check("a", "t", 200), Verdict::Skip(None));
        assert_eq!(r.check("a", "t", 300), Verdict::Skip(Some((0, 11))));
        // A line Kafka does not have (e.g. dead-lettered): sent.
        assert_eq!(r.check("a", "t", 350), Verdict::Send);
        assert_eq!(r.check("a", "t", 400), Verdict::Skip(Some((0, 12))));
        assert_eq!(r.check("a", "t", 500), Verdict::Send);
        assert_eq!(r.check("b", "t", 0), Verdict::Send);
        assert_eq!(r.skipped, 4);
    }

    #[test]
    fn a_clean_ledger_needs_no_read_back() {
        let mut l = ledger(5);
        l.clean = true;
        let r = read_back(&ClientConfig::new(), &l, "h").unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn acks_move_the_last_offset_and_repartitioning_restarts() {
        let mut l = ledger(0);
        l.acked("a", "t", 0, 15);
        l.acked("a", "t", 0, 12);
        assert_eq!(l.entry_mut("a", "t").unwrap().last_offset, 15);
        l.acked("a", "t", 3, 1);
        assert_eq!(l.entry_mut("a", "t").unwrap().partition, 3);
    }
}
