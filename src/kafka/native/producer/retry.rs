//! retry: what the [`NativeProducer`] does when Kafka cannot take a batch
//! *yet*: the partition's leader moved (NOT_LEADER_OR_FOLLOWER), too few
//! replicas are in sync (NOT_ENOUGH_REPLICAS, ..._AFTER_APPEND), the
//! broker's own wait ran out (REQUEST_TIMED_OUT), or the connection was
//! lost or stopped answering. Like the Java client and librdkafka, it sends
//! the same batches again within the session, with the same producer id,
//! epoch and sequence numbers, so the broker keeps a batch it already has
//! only once, and no new session (with its read-back) is needed.
//!
//! How: the partition is *held*. Its failed batch, the batches after it
//! (answered OUT_OF_ORDER_SEQUENCE_NUMBER, handed back by a lost
//! connection, or not yet written) and those sealed meanwhile wait in its
//! `held` map, in seal order. Once none of its batches is unanswered on any
//! connection and its back-off (100 ms doubling to 1 s) is over, the
//! metadata is asked who leads it (when the error says the leader may have
//! moved) and the held batches are queued, in order, on the leader's
//! connection.
//!
//! Invariants:
//! - A partition's batches reach the broker in sequence order: held ones
//!   go out only once none of the partition's batches is unanswered, and
//!   all of them before any later one. A partition whose leader moves while
//!   batches are unanswered at the old one is held until they are answered.
//! - A batch is never renumbered: it is resent as the same bytes.
//! - What becomes of a partition's batches is reported in seal order
//!   ([`NativeProducer::report`]): a batch answered before an earlier one
//!   that is being sent again waits for it, since the forwarder counts a
//!   frame's acknowledged lines as its first ones.
//! - Until Kafka has taken one batch of the session's producer id in a
//!   partition, only one batch of it is unanswered: a broker with no state
//!   for a producer id takes its first batch at any sequence number, so a
//!   second batch could be taken while the first was refused (a gap).
//! - A refused lone line gives its sequence number back only if no earlier
//!   copy may be in Kafka (never written, or answered with an error raised
//!   before the broker appends); otherwise the session ends.
//! - OUT_OF_ORDER_SEQUENCE_NUMBER means "an earlier batch failed" only when
//!   an earlier batch of the partition is held. Otherwise it ends the
//!   session (the broker lost what it had acknowledged, e.g. an unclean
//!   leader election), and the next session's read-back decides.
//! - A partition that keeps failing for [`Timeouts::delivery`] ends the
//!   session ([`ProducerError::GaveUp`]); the next session starts over from
//!   the spool cursor.
//!
//! Why a resend never duplicates and a crash never loses (the argument the
//! forwarder relies on): a held batch is unacknowledged, so the spool
//! cursor is not past its lines, and after a crash the next session's
//! read-back finds whichever copy Kafka took. Kafka remembers the last 5
//! batches of each producer and partition; at most 5 of a partition's
//! batches are unanswered at once (one connection, [`MAX_IN_FLIGHT`]), and
//! held ones are resent in order from the first unacknowledged one, so a
//! resent batch Kafka already has is within those 5 and is answered as a
//! duplicate, with its first offsets.
//!
//! Must never: send a held batch while an earlier one of its partition is
//! unanswered, or acknowledge a line because it was held.
//!
//! [`Timeouts::delivery`]: super::super::wire::Timeouts::delivery
//! [`MAX_IN_FLIGHT`]: super::super::connection::MAX_IN_FLIGHT

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataResponse;
use kafka_protocol::ResponseError;

use super::super::connection::{bootstrap_order, Sealed};
use super::super::keep_the_refusal;
use super::setup::listed_topic;
use super::{BatchLines, NativeProducer, ProducerError};
use crate::runtime::Backoff;

/// The first wait before a held partition is sent again; it doubles up to
/// [`RETRY_CAP`] while the partition keeps failing (the Java client's
/// `retry.backoff.ms` and `retry.backoff.max.ms`).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(1);
/// How long asking the metadata who leads a held partition may take before
/// another broker is asked.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// A held partition's next try.
pub(in crate::kafka::native) struct Hold {
    /// Not sent again before this.
    retry_at: Instant,
    /// Ask the metadata who leads the partition before sending again.
    refresh: bool,
}

/// A partition that has failed, with no batch taken since `since`.
pub(in crate::kafka::native) struct Failing {
    since: Instant,
    backoff: Backoff,
    /// The last failure, for the error if it lasts too long.
    error: String,
}

/// Produce errors that a retry of the same batch can clear: Kafka did not
/// keep it, or kept it without enough replicas yet (then the resend is
/// answered as a duplicate once they catch up).
pub(super) fn is_retriable(e: ResponseError) -> bool {
    needs_new_leader(e)
        || matches!(
            e,
            ResponseError::NotEnoughReplicas
                | ResponseError::NotEnoughReplicasAfterAppend
                | ResponseError::RequestTimedOut
        )
}

/// Produce errors that say the partition's leader may have moved: ask the
/// metadata before sending again.
pub(super) fn needs_new_leader(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::KafkaStorageError
            | ResponseError::NetworkException
            | ResponseError::FencedLeaderEpoch
            | ResponseError::UnknownLeaderEpoch
    )
}

/// Produce errors after which the broker may have kept the batch (in its
/// log, waiting for replicas): the others are raised before it appends.
pub(super) fn may_have_kept(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::RequestTimedOut
            | ResponseError::NotEnoughReplicasAfterAppend
            | ResponseError::NetworkException
            | ResponseError::KafkaStorageError
    )
}

/// Whether a failure to reach a broker may clear by itself (it restarts,
/// or another broker takes its partitions over).
pub(super) fn clears_on_retry(e: &ProducerError) -> bool {
    matches!(
        e,
        ProducerError::Connect { .. } | ProducerError::Io { .. } | ProducerError::Timeout { .. }
    )
}

impl NativeProducer {
    /// Whether error `e`, answering the batch of `lines`, clears if the
    /// batch is sent again. OUT_OF_ORDER_SEQUENCE_NUMBER does only behind
    /// an earlier batch of its partition that is held.
    pub(super) fn clears_on_resend(&self, lines: &BatchLines, e: ResponseError) -> bool {
        if e == ResponseError::OutOfOrderSequenceNumber {
            return self
                .partitions
                .get(lines.slot)
                .and_then(|p| p.held.keys().next())
                .is_some_and(|&first| first < lines.seal_no);
        }
        is_retriable(e)
    }

    /// Holds batch `s` after `error`, with its partition's batches not yet
    /// written (they would only be refused out of sequence); `refresh`:
    /// ask who leads the partition before sending again.
    pub(super) fn hold(&mut self, s: Sealed, error: String, refresh: bool) {
        let slot = s.lines.slot;
        let mut behind = Vec::new();
        for c in self.conns.iter_mut().filter(|c| !c.retired) {
            if c.waiting.iter().any(|w| w.lines.slot == slot) {
                let mut keep = VecDeque::with_capacity(c.waiting.len());
                for w in c.waiting.drain(..) {
                    if w.lines.slot == slot {
                        behind.push(w);
                    } else {
                        keep.push_back(w);
                    }
                }
                c.waiting = keep;
            }
        }
        let now = Instant::now();
        let p = &mut self.partitions[slot];
        let failing = p.failing.get_or_insert_with(|| {
            tracing::warn!(topic = %p.topic, partition = p.partition, error = %error, "Kafka cannot take these lines yet; sending them again in this session, with the same sequence numbers");
            Failing {
                since: now,
                backoff: Backoff::new(RETRY_FIRST, RETRY_CAP),
                error: String::new(),
            }
        });
        tracing::debug!(topic = %p.topic, partition = p.partition, error = %error, "batch held for sending again");
        failing.error = error;
        match &mut p.hold {
            Some(h) => h.refresh |= refresh,
            None => {
                p.hold = Some(Hold {
                    retry_at: now + failing.backoff.next_delay(),
                    refresh,
                })
            }
        }
        p.held.insert(s.lines.seal_no, s);
        for w in behind {
            p.held.insert(w.lines.seal_no, w);
        }
    }

    /// A batch of partition `slot` was taken: it is failing no more.
    pub(super) fn taken(&mut self, slot: usize) {
        let Some(p) = self.partitions.get_mut(slot) else {
            return;
        };
        if let Some(f) = p.failing.take() {
            tracing::info!(topic = %p.topic, partition = p.partition, after_secs = f.since.elapsed().as_secs_f64(), "Kafka takes these lines again");
        }
    }

    /// Gives connection `c` up after `error`: every batch it had, answered
    /// or not, is held for sending again.
    pub(super) fn retire(&mut self, c: usize, error: String) {
        let batches = self.conns[c].retire();
        self.by_node.retain(|_, i| *i != c);
        tracing::debug!(broker = %self.conns[c].addr, error = %error, batches = batches.len(), "Kafka connection given up");
        for s in batches {
            self.hold(s, error.clone(), true);
        }
    }

    /// Gives up each connection whose first unanswered request has waited
    /// longer than the answer timeout (counted from when the answer before
    /// it arrived, since the broker answers one request at a time).
    pub(super) fn give_up_silent_connections(&mut self) {
        for c in 0..self.conns.len() {
            let conn = &self.conns[c];
            let Some(f) = conn.in_flight.front() else {
                continue;
            };
            let since = conn.last_answer.map_or(f.sent, |a| a.max(f.sent));
            let limit = conn.timeouts.answer();
            if since.elapsed() > limit {
                let why = format!(
                    "Kafka broker {} did not answer for {} s",
                    conn.addr,
                    limit.as_secs()
                );
                self.retire(c, why);
            }
        }
    }

    /// When the first held partition may be sent again. A partition with
    /// batches unanswered is left out: their answers wake the producer.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        (0..self.partitions.len())
            .filter(|&s| !self.unanswered(s))
            .filter_map(|s| self.partitions[s].hold.as_ref())
            .map(|h| h.retry_at)
            .min()
    }

    /// Whether a batch of partition `slot` is written and unanswered, or
    /// waiting to be written, on a connection.
    fn unanswered(&self, slot: usize) -> bool {
        self.conns.iter().filter(|c| !c.retired).any(|c| {
            c.in_flight.iter().any(|f| f.sealed.lines.slot == slot)
                || c.waiting.iter().any(|s| s.lines.slot == slot)
        })
    }

    /// Sends again the held partitions whose retry is due and that have
    /// nothing unanswered, asking who leads them first where needed. `Err`
    /// ([`ProducerError::GaveUp`]) once a partition has failed for longer
    /// than the delivery timeout, or if the metadata refuses for good.
    pub(super) fn release_held(&mut self) -> Result<(), ProducerError> {
        self.check_delivery_timeout()?;
        let now = Instant::now();
        let due: Vec<usize> = (0..self.partitions.len())
            .filter(|&s| {
                self.partitions[s]
                    .hold
                    .as_ref()
                    .is_some_and(|h| h.retry_at <= now)
                    && !self.unanswered(s)
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let topics: BTreeSet<String> = due
            .iter()
            .map(|&s| &self.partitions[s])
            .filter(|p| p.hold.as_ref().is_some_and(|h| h.refresh))
            .map(|p| p.topic.clone())
            .collect();
        for topic in topics {
            match self.refresh_leaders(&topic) {
                Ok(()) => {}
                // No broker answered, or no leader yet: asked again later.
                Err(e) if clears_on_retry(&e) || matches!(e, ProducerError::Topic { .. }) => {
                    tracing::debug!(topic = %topic, error = %e, "cannot ask who leads the topic's partitions yet");
                }
                // A Produce failure taken in meanwhile, an ACL refusal...
                Err(e) => return Err(e),
            }
        }
        for s in due {
            let p = &mut self.partitions[s];
            if p.hold.as_ref().is_some_and(|h| h.refresh) {
                // No leader known yet (an election, or no broker answered).
                Self::postpone(p);
                continue;
            }
            p.hold = None;
            let held = std::mem::take(&mut p.held);
            for b in held.into_values() {
                self.queue(b)?;
            }
        }
        Ok(())
    }

    /// `Err` if a partition has failed for longer than the delivery timeout.
    fn check_delivery_timeout(&self) -> Result<(), ProducerError> {
        let limit = self.settings.timeouts.delivery;
        for p in &self.partitions {
            if let Some(f) = p.failing.as_ref().filter(|f| f.since.elapsed() > limit) {
                return Err(ProducerError::GaveUp {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    secs: limit.as_secs(),
                    error: f.error.clone(),
                });
            }
        }
        Ok(())
    }

    /// Puts a held partition's next try off by its back-off.
    fn postpone(p: &mut super::PartitionState) {
        let delay = p
            .failing
            .as_mut()
            .map_or(RETRY_FIRST, |f| f.backoff.next_delay());
        if let Some(h) = &mut p.hold {
            h.retry_at = Instant::now() + delay;
        }
    }

    /// Asks the metadata who leads `topic`'s partitions, moving the setup
    /// connection to another broker when its broker fails to answer.
    fn refresh_leaders(&mut self, topic: &str) -> Result<(), ProducerError> {
        let timeout = self.settings.timeouts.request.min(REFRESH_TIMEOUT);
        let mut tries = self.nodes.len().max(1);
        loop {
            match self.metadata_within(topic, timeout) {
                Ok(r) => return self.relearn(topic, &r),
                Err(e) if clears_on_retry(&e) && tries > 1 => {
                    tries -= 1;
                    tracing::debug!(error = %e, "asking another Kafka broker for metadata");
                    self.move_setup()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the setup connection to another broker (the next one listed
    /// after the current one; the same one last), then gives the current
    /// one up. If none opens, the error is the first refusal of TLS or the
    /// login among them (which ends the session), else the last one's.
    pub(super) fn move_setup(&mut self) -> Result<(), ProducerError> {
        let old = self.setup;
        let old_addr = self.conns[old].addr.clone();
        let mut candidates: Vec<String> = self.nodes.values().cloned().collect();
        for b in bootstrap_order(&self.settings.brokers, 0) {
            if !candidates.iter().any(|c| c == b) {
                candidates.push(b.to_string());
            }
        }
        if let Some(i) = candidates.iter().position(|a| *a == old_addr) {
            candidates.rotate_left(i + 1);
        }
        // The one that failed goes last (it may be the only one).
        candidates.retain(|a| *a != old_addr);
        candidates.push(old_addr.clone());
        let mut last = None;
        for addr in &candidates {
            let index = self.conns.len();
            match self.open(addr, index) {
                Ok(c) => {
                    self.conns.push(c);
                    self.setup = index;
                    self.conns[old].retire();
                    tracing::info!(from = %old_addr, to = %addr, "metadata requests now go to another Kafka broker");
                    return Ok(());
                }
                Err(e) => keep_the_refusal(&mut last, e),
            }
        }
        Err(last.unwrap_or_else(|| ProducerError::Connect {
            addr: old_addr,
            detail: "no broker is known".into(),
        }))
    }

    /// Takes in a fresh metadata answer about `topic`: each known
    /// partition's leader. A held partition whose leader is known may be
    /// sent again; a partition whose leader moved while batches are
    /// unanswered at the old one is held until they are answered.
    fn relearn(&mut self, topic: &str, r: &MetadataResponse) -> Result<(), ProducerError> {
        self.learn_brokers(r);
        let t = listed_topic(r, topic)?;
        for part in &t.partitions {
            let leader = part.leader_id.0;
            let key = (topic.to_string(), part.partition_index);
            let Some(&slot) = self.slots.get(&key) else {
                continue;
            };
            if leader < 0 {
                // Still electing: the hold's next try asks again.
                continue;
            }
            let moved = self.partitions[slot].leader != leader;
            let busy = moved && self.unanswered(slot);
            let p = &mut self.partitions[slot];
            if moved {
                tracing::info!(
                    topic,
                    partition = p.partition,
                    from = p.leader,
                    to = leader,
                    "partition leader moved"
                );
                p.leader = leader;
            }
            match &mut p.hold {
                Some(h) => h.refresh = false,
                None if busy => {
                    p.hold = Some(Hold {
                        retry_at: Instant::now(),
                        refresh: false,
                    })
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Queues sealed batch `s` on its partition's leader's connection and
    /// writes what fits; or holds it, behind its partition's held batches,
    /// when the partition is held or its leader cannot be reached. Never
    /// waits (see [`send`](Self::send) for the one that does).
    pub(super) fn queue(&mut self, s: Sealed) -> Result<(), ProducerError> {
        let slot = s.lines.slot;
        // Until Kafka took a batch of this producer id here, one at a time
        // (see `PartitionState::established`).
        let first_unanswered = !self.partitions[slot].established && self.unanswered(slot);
        let p = &mut self.partitions[slot];
        if p.hold.is_some() || first_unanswered {
            p.hold.get_or_insert(Hold {
                retry_at: Instant::now(),
                refresh: false,
            });
            p.held.insert(s.lines.seal_no, s);
            return Ok(());
        }
        match self.connection_for(self.partitions[slot].leader) {
            Ok(c) => {
                self.conns[c].waiting.push_back(s);
                self.pump(c)
            }
            Err(e) if clears_on_retry(&e) => {
                self.hold(s, e.to_string(), true);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
