//! acks: owns what the forwarder knows about each line it sent: which frames
//! are in flight, how many of each frame's lines Kafka acknowledged (or the
//! dead-letter file took), and so how far the spool cursor may move.
//! [`Delivery`] is where both clients report: the [`native`](crate::kafka::native)
//! producer through its events, librdkafka through its delivery callback
//! ([`DeliveryContext`](crate::kafka::librdkafka::DeliveryContext)).
//!
//! Invariants:
//! - [`AckTracker::advance`] moves the cursor over the longest fully
//!   acknowledged prefix of frames only; a partly acknowledged frame records
//!   how many of its leading lines are done, which is exact because all lines
//!   of a frame share one key, hence one partition, whose acks arrive in
//!   order.
//! - Once a session failed, acks are no longer counted (see
//!   [`AckTracker::ack_lines`]): after a missing line, "leading lines done"
//!   would be wrong.
//! - A refused line counts as done only once the dead-letter file holds it
//!   (written and synced).
//!
//! Must never: count a line as done that is neither acknowledged by Kafka nor
//! in the dead-letter file.

use std::collections::{HashMap, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kafka::forwarder::{BrokerState, ForwardError, ForwardStats};
use crate::kafka::ledger::DeliveryLedger;
use crate::kafka::native::Event;
use crate::runtime::lock;
use crate::spool::{Position, SpoolBatch, SpoolCursor};

/// How much of the dead-letter file's end is searched for a line refused
/// again ([`Delivery::refused`]).
const DEAD_LETTER_TAIL: u64 = 4 << 20;

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One spooled frame whose lines are sent but not all done.
pub struct InFlightFrame {
    spooled_ms: u64,
    source: String,
    topic: String,
    at: Position,
    next: Position,
    /// Lines in the frame, and how many of them are done (skipped because
    /// an earlier run delivered them, or acknowledged now).
    lines: u32,
    done: u32,
    /// Where its first acknowledged line is in Kafka (partition, offset).
    first_acked: Option<(i32, i64)>,
}

/// Tracks which sent lines Kafka acknowledged, frame by frame.
#[derive(Default)]
pub struct AckTracker {
    base: u64,
    frames: VecDeque<InFlightFrame>,
    cursor: Option<SpoolCursor>,
    /// Set when a delivery failed in a way that needs a producer rebuild.
    failed: Option<String>,
    /// Where each source's acknowledged lines are in Kafka.
    ledger: DeliveryLedger,
    /// An ack arrived since the progress was last written.
    dirty: bool,
    /// By (source, topic): the spool position past the last frame pushed.
    sent_through: HashMap<(String, String), Position>,
    /// By (source, topic): the stored ledger's start and last frame sent,
    /// kept until the cursor passes that frame (lines an earlier session
    /// sent past the cursor may be there).
    carried: HashMap<(String, String), (i64, Position)>,
    /// By (source, topic): when a frame was last pushed.
    last_push: HashMap<(String, String), Instant>,
    /// When the session began ([`resuming`](Self::resuming)); `None`: long
    /// ago.
    since: Option<Instant>,
    /// How long a caught-up source keeps its entry ([`PRUNE_IDLE`] in a
    /// session; zero by default).
    prune_idle: Duration,
}

/// How long an entry whose lines past the cursor are all done is kept
/// after its source last sent. Kept, its next lines (sent before the next
/// cursor write) are read back after a crash; pruned, they would be sent
/// again. Its cost: the read-back reads the partition from its last
/// acknowledged line, which an idle source no longer moves.
pub const PRUNE_IDLE: Duration = Duration::from_secs(60);

impl AckTracker {
    /// A tracker for a session that starts from the `stored` ledger. Lines
    /// may be sent past the cursor from now on, so its copy is not clean.
    pub fn resuming(stored: &DeliveryLedger) -> AckTracker {
        let mut ledger = stored.clone();
        ledger.clean = false;
        let carried = ledger
            .entries
            .iter()
            .flat_map(|(s, topics)| {
                topics
                    .iter()
                    .map(move |(t, e)| ((s.clone(), t.clone()), (e.from_offset, e.sent_through)))
            })
            .collect();
        AckTracker {
            ledger,
            carried,
            since: Some(Instant::now()),
            prune_idle: PRUNE_IDLE,
            ..AckTracker::default()
        }
    }

    /// Starts tracking the frame of `batch` at `at` (the next one at
    /// `next`), whose first `done` lines are done already; returns its id.
    ///
    /// Tracked (and kept in the ledger) by the lines' Kafka key
    /// ([`crate::config::kafka_key`]): a glob source's files share one
    /// key, one partition, and so one ledger entry, and a host with ten
    /// thousand files does not anchor ten thousand entries.
    pub fn push(&mut self, batch: &SpoolBatch, at: Position, next: Position, done: u32) -> u64 {
        let source = crate::config::kafka_key(&batch.source).to_string();
        let key = (source.clone(), batch.topic.clone());
        self.last_push.insert(key.clone(), Instant::now());
        let through = self.sent_through.entry(key).or_default();
        *through = (*through).max(next);
        self.frames.push_back(InFlightFrame {
            spooled_ms: batch.spooled_ms,
            source,
            topic: batch.topic.clone(),
            at,
            next,
            lines: batch.lines.len() as u32,
            done,
            first_acked: None,
        });
        self.base + self.frames.len() as u64 - 1
    }

    /// Whether the ledger has an entry for `source` and `topic`.
    pub fn has_entry(&self, source: &str, topic: &str) -> bool {
        self.ledger
            .entries
            .get(source)
            .is_some_and(|t| t.contains_key(topic))
    }

    /// A new entry for `source` and `topic`, before its first line is
    /// sent: its lines will land in `partition` at `high` or later.
    pub fn anchor(&mut self, source: &str, topic: &str, partition: i32, high: i64) {
        self.ledger.anchor(source, topic, partition, high);
        let key = (source.to_string(), topic.to_string());
        self.last_push.insert(key, Instant::now());
    }

    /// How many of `frame`'s leading lines are done (None: not in flight).
    pub fn done_of(&self, frame: u64) -> Option<u32> {
        frame
            .checked_sub(self.base)
            .and_then(|i| self.frames.get(i as usize))
            .map(|f| f.done)
    }

    /// One more line of `frame` is in Kafka, at `at` (partition, offset)
    /// when known.
    pub fn ack(&mut self, frame: u64, at: Option<(i32, i64)>) {
        self.ack_lines(frame, 1, at);
    }

    /// `n` more lines of `frame` are in Kafka, the last at `at`.
    ///
    /// Once the session has failed, acks are no longer counted: `done`
    /// counts a frame's leading lines, which is only exact while its acks
    /// arrive in order with no line missing (a line whose dead-letter
    /// write failed is missing). Lines acknowledged but not counted are
    /// sent again by the next session, whose read-back skips them.
    pub fn ack_lines(&mut self, frame: u64, n: u32, at: Option<(i32, i64)>) {
        if self.failed.is_some() {
            return;
        }
        if let Some(f) = frame
            .checked_sub(self.base)
            .and_then(|i| self.frames.get_mut(i as usize))
        {
            f.done += n;
            if let Some((partition, last)) = at {
                // The `n` lines are consecutive records of one batch.
                let first = last - (n as i64 - 1).max(0);
                // The lowest: a batch sent again within a session can be
                // acknowledged after a later batch of the same frame.
                match &mut f.first_acked {
                    Some((p, o)) if *p == partition => *o = (*o).min(first),
                    Some(_) => {}
                    None => f.first_acked = Some((partition, first)),
                }
                self.ledger
                    .acked(&f.source, &f.topic, partition, (first, last));
            }
            self.dirty = true;
        }
    }

    /// The session failed (`why`): the client must be rebuilt, and acks
    /// from now on do not count.
    pub fn fail(&mut self, why: String) {
        self.failed = Some(why);
    }

    /// Whether the session failed: acks no longer count.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Why the session failed, if it did (once).
    pub fn take_failure(&mut self) -> Option<String> {
        self.failed.take()
    }

    /// An ack arrived since the progress was last taken for persisting.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The ledger to persist with the cursor [`advance`](Self::advance)
    /// just computed. Each entry's start is the first acknowledged line
    /// past the cursor (acked lines of the front frame are before it), else
    /// past the last acknowledged line, and never past what an earlier
    /// session may have sent and the cursor has not passed. An entry with
    /// nothing in flight, whose last frame sent the cursor passed, and whose
    /// source sent nothing for `prune_idle`, is pruned (this covers removed
    /// sources too).
    pub fn ledger_snapshot(&self) -> DeliveryLedger {
        let mut l = self.ledger.clone();
        l.clean = false;
        let cursor = self.cursor.map(|c| Position {
            segment: c.segment,
            pos: c.position,
        });
        let passed = |p: Position| cursor.is_some_and(|c| c >= p);
        l.prune(|source, topic, e| {
            let key = (source.to_string(), topic.to_string());
            if let Some(through) = self.sent_through.get(&key) {
                e.sent_through = e.sent_through.max(*through);
            }
            let in_flight = self
                .frames
                .iter()
                .any(|f| f.source == source && f.topic == topic);
            let mut from = self
                .frames
                .iter()
                .skip(1)
                .filter(|f| f.source == source && f.topic == topic)
                .filter_map(|f| f.first_acked)
                .filter(|(p, _)| *p == e.partition)
                .map(|(_, o)| o)
                .min()
                .unwrap_or(e.last_offset + 1);
            if let Some((carried_from, through)) = self.carried.get(&key) {
                if !passed(*through) {
                    from = from.min(*carried_from);
                }
            }
            e.from_offset = from;
            let idle = self
                .last_push
                .get(&key)
                .or(self.since.as_ref())
                .is_none_or(|t| t.elapsed() >= self.prune_idle);
            in_flight || !passed(e.sent_through) || !idle
        });
        l
    }

    /// [`ledger_snapshot`](Self::ledger_snapshot), taken to be persisted:
    /// the acks so far no longer make the tracker dirty.
    pub fn ledger_to_persist(&mut self) -> DeliveryLedger {
        self.dirty = false;
        self.ledger_snapshot()
    }

    /// Moves the cursor over every fully acknowledged frame.
    pub fn advance(&mut self) -> Option<SpoolCursor> {
        while let Some(f) = self.frames.front() {
            if f.done < f.lines {
                break;
            }
            self.cursor = Some(SpoolCursor {
                segment: f.next.segment,
                position: f.next.pos,
                lines_done: 0,
            });
            self.frames.pop_front();
            self.base += 1;
        }
        if let Some(f) = self.frames.front() {
            if f.done > 0 {
                self.cursor = Some(SpoolCursor {
                    segment: f.at.segment,
                    position: f.at.pos,
                    lines_done: f.done,
                });
            }
        }
        self.cursor
    }

    /// Frames sent and not fully done.
    pub fn in_flight(&self) -> usize {
        self.frames.len()
    }

    /// When the oldest frame not fully done was spooled (Unix ms; 0: none).
    pub fn oldest_spooled_ms(&self) -> u64 {
        self.frames.front().map(|f| f.spooled_ms).unwrap_or(0)
    }
}

/// Where either client reports what happened to sent lines.
pub struct Delivery {
    tracker: Mutex<AckTracker>,
    stats: Arc<ForwardStats>,
    dead_letter: PathBuf,
}

/// A line Kafka refused for good, as the dead-letter file records it.
pub struct RefusedLine<'a> {
    /// Its `lc-id` (see [`crate::kafka::line_id`]), when known.
    pub id: Option<&'a [u8]>,
    pub source: &'a str,
    pub path: Option<&'a str>,
    pub offset: &'a str,
    pub topic: &'a str,
    pub line: &'a [u8],
}

impl Delivery {
    /// Reports go to `tracker` and `stats`; refused lines to the
    /// `dead_letter` file.
    pub fn new(tracker: AckTracker, stats: Arc<ForwardStats>, dead_letter: PathBuf) -> Delivery {
        Delivery {
            tracker: Mutex::new(tracker),
            stats,
            dead_letter,
        }
    }

    pub fn tracker(&self) -> MutexGuard<'_, AckTracker> {
        lock(&self.tracker)
    }

    /// The forwarder's counters, which reports update.
    pub fn stats(&self) -> &ForwardStats {
        &self.stats
    }

    /// Writes a refused line to the dead-letter file; only then does it
    /// count as done (so the cursor can pass it).
    pub fn refused(&self, t: &mut AckTracker, frame: u64, r: RefusedLine<'_>, error: &str) {
        let id = r.id.map(hex);
        if id
            .as_deref()
            .is_some_and(|id| self.dead_lettered_already(id))
        {
            // A session that ended before the cursor passed it sent it
            // again: the file has it once already.
            tracing::info!(
                source = r.source,
                offset = r.offset,
                topic = r.topic,
                "Kafka refused a line again that the dead-letter file already holds"
            );
            t.ack(frame, None);
            return;
        }
        tracing::error!(source = r.source, offset = r.offset, topic = r.topic, error,
            dead_letter = %self.dead_letter.display(),
            "Kafka refused this line permanently; it is written to the dead-letter file");
        let entry = serde_json::json!({
            "lc_id": id,
            "source": r.source,
            "path": r.path,
            "offset": r.offset,
            "topic": r.topic,
            "error": error,
            "line": String::from_utf8_lossy(r.line),
        });
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dead_letter)
            .and_then(|mut f| {
                writeln!(f, "{entry}")?;
                f.sync_data()
            });
        match written {
            Ok(()) => {
                t.ack(frame, None);
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            Err(source) => {
                let e = ForwardError::DeadLetter {
                    path: self.dead_letter.clone(),
                    source,
                };
                t.fail(e.to_string());
            }
        }
    }

    /// Whether the dead-letter file's last [`DEAD_LETTER_TAIL`] bytes hold
    /// the line with `lc-id` `id` (hex). Refusals are rare and the file
    /// small, so reading its tail is cheap; unreadable is "no".
    fn dead_lettered_already(&self, id: &str) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.dead_letter) else {
            return false;
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let mut tail = Vec::new();
        let read = f
            .seek(SeekFrom::Start(len.saturating_sub(DEAD_LETTER_TAIL)))
            .and_then(|_| f.take(DEAD_LETTER_TAIL).read_to_end(&mut tail));
        let needle = format!("\"lc_id\":\"{id}\"");
        read.is_ok() && tail.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    /// Takes in the native producer's events.
    pub fn apply(&self, events: &mut Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut t = self.tracker();
        for e in events.drain(..) {
            match e {
                Event::Acked {
                    frame,
                    lines,
                    partition,
                    last_offset,
                } => {
                    t.ack_lines(frame, lines, last_offset.map(|o| (partition, o)));
                    self.stats
                        .delivered
                        .fetch_add(lines as u64, Ordering::Relaxed);
                    self.stats.broker_state.store(BrokerState::Up);
                }
                Event::Refused { frame, line, error } => {
                    let offset = line.offset.to_string();
                    let r = RefusedLine {
                        id: Some(&line.id),
                        source: &line.source,
                        path: Some(&line.path),
                        offset: &offset,
                        topic: &line.topic,
                        line: &line.value,
                    };
                    self.refused(&mut t, frame, r, &error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: u64, p: u64) -> Position {
        Position { segment: s, pos: p }
    }

    fn cursor(segment: u64, position: u64, lines_done: u32) -> Option<SpoolCursor> {
        Some(SpoolCursor {
            segment,
            position,
            lines_done,
        })
    }

    fn batch(lines: usize) -> SpoolBatch {
        SpoolBatch {
            seq: 0,
            spooled_ms: 0,
            source: "a".into(),
            path: "/a".into(),
            topic: "t".into(),
            identity: Default::default(),
            end_offset: 0,
            tail_len: 0,
            tail_crc: 0,
            data: vec![b'x'; lines],
            lines: (0..lines as u64)
                .map(|i| crate::spool::LineRef {
                    offset: i * 2,
                    len: 1,
                })
                .collect(),
        }
    }

    /// The start is the first acknowledged line past the cursor: a's acked
    /// line is before it (the cursor is in a), b's first is past it.
    #[test]
    fn ledger_starts_at_the_first_ack_past_the_cursor() {
        let mut t = AckTracker::default();
        let a = t.push(&batch(2), pos(1, 0), pos(1, 100), 0);
        let b = t.push(&batch(2), pos(1, 100), pos(1, 200), 0);
        t.ack(a, Some((0, 7)));
        t.ack(b, Some((0, 9)));
        t.ack(b, Some((0, 10)));
        assert_eq!(t.advance(), cursor(1, 0, 1));
        let l = t.ledger_snapshot();
        let e = l.entries["a"]["t"];
        assert_eq!((e.from_offset, e.last_offset), (9, 10));
        assert_eq!(e.sent_through, pos(1, 200));
        assert!(!l.clean);
        // A batch ack of 3 lines ending at 12: its first line is at 10.
        let c = t.push(&batch(3), pos(1, 200), pos(1, 300), 0);
        t.ack_lines(c, 3, Some((0, 12)));
        t.ack(a, Some((0, 8)));
        assert_eq!(t.advance(), cursor(1, 300, 0));
        // Nothing in flight and the cursor passed every frame sent: pruned.
        assert!(t.ledger_snapshot().entries.is_empty());
    }

    /// In a session, a caught-up source keeps its entry (from past its last
    /// ack) for a while, so that its next lines are read back after a crash.
    #[test]
    fn a_caught_up_source_keeps_its_entry_while_it_is_active() {
        let mut t = AckTracker::resuming(&DeliveryLedger::default());
        let a = t.push(&batch(1), pos(1, 0), pos(1, 100), 0);
        t.ack(a, Some((0, 7)));
        assert_eq!(t.advance(), cursor(1, 100, 0));
        let e = t.ledger_snapshot().entries["a"]["t"];
        assert_eq!((e.from_offset, e.last_offset), (8, 7));
        t.prune_idle = Duration::ZERO;
        assert!(t.ledger_snapshot().entries.is_empty());
    }

    /// A source anchored before its first line is sent has an entry that
    /// starts at the watermark, kept while nothing is acknowledged.
    #[test]
    fn an_anchored_source_is_read_back_from_the_watermark() {
        let mut t = AckTracker::resuming(&DeliveryLedger::default());
        assert!(!t.has_entry("a", "t"));
        t.anchor("a", "t", 2, 500);
        assert!(t.has_entry("a", "t"));
        let e = t.ledger_snapshot().entries["a"]["t"];
        assert_eq!((e.partition, e.from_offset), (2, 500));
        let a = t.push(&batch(2), pos(1, 0), pos(1, 100), 0);
        t.ack(a, Some((2, 503)));
        t.advance();
        let e = t.ledger_snapshot().entries["a"]["t"];
        assert_eq!(
            (e.from_offset, e.last_offset),
            (504, 503),
            "a's acked line is before the cursor: the rest comes after it"
        );
    }

    /// Lines a crashed session sent past the cursor keep the stored start
    /// until the cursor passes the last frame it sent.
    #[test]
    fn a_stored_start_is_kept_until_the_cursor_passes_what_was_sent() {
        let mut stored = DeliveryLedger::default();
        stored.acked("a", "t", 0, (40, 41));
        stored.entry_mut("a", "t").unwrap().sent_through = pos(1, 300);
        let mut t = AckTracker::resuming(&stored);
        t.prune_idle = Duration::ZERO;
        let a = t.push(&batch(1), pos(1, 0), pos(1, 100), 0);
        t.ack(a, Some((0, 90)));
        assert_eq!(t.advance(), cursor(1, 100, 0));
        let e = t.ledger_snapshot().entries["a"]["t"];
        assert_eq!((e.from_offset, e.last_offset), (40, 90));
        let b = t.push(&batch(1), pos(1, 100), pos(1, 300), 0);
        t.ack(b, Some((0, 91)));
        assert_eq!(t.advance(), cursor(1, 300, 0));
        assert!(t.ledger_snapshot().entries.is_empty());
    }

    #[test]
    fn cursor_moves_only_over_acknowledged_prefix() {
        let mut t = AckTracker::default();
        let a = t.push(&batch(2), pos(1, 0), pos(1, 100), 0);
        let b = t.push(&batch(2), pos(1, 100), pos(1, 200), 0);
        assert_eq!(t.advance(), None);
        t.ack(b, None);
        t.ack(b, None);
        assert_eq!(t.advance(), None, "b is acked but a is not");
        t.ack(a, None);
        assert_eq!(t.advance(), cursor(1, 0, 1));
        t.ack(a, None);
        assert_eq!(t.advance(), cursor(1, 200, 0));
        assert_eq!(t.in_flight(), 0);
    }

    /// A line whose dead-letter write failed is neither in Kafka nor in the
    /// dead-letter file: acks of the lines after it must not count, or the
    /// frame's `lines_done` would cover it and the cursor pass it.
    #[test]
    fn acks_after_a_failure_do_not_count() {
        let mut t = AckTracker::default();
        let a = t.push(&batch(3), pos(1, 0), pos(1, 100), 0);
        t.ack(a, Some((0, 5)));
        // Line 2 was refused and its dead-letter write failed.
        t.fail("cannot write dead-letter file".into());
        t.ack(a, Some((0, 6)));
        assert_eq!(
            t.advance(),
            cursor(1, 0, 1),
            "only the line before the failure is done"
        );
        let e = t.ledger_snapshot().entries["a"]["t"];
        assert_eq!(
            (e.from_offset, e.last_offset),
            (6, 5),
            "nothing acked past the cursor"
        );
    }

    /// A line refused again (a session ended before the cursor passed
    /// it, so it was sent again) is counted done without a second entry
    /// in the dead-letter file, which names each entry's `lc-id`.
    #[test]
    fn a_line_refused_twice_is_dead_lettered_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dead-letter.jsonl");
        let stats = Arc::new(ForwardStats::default());
        let d = Delivery::new(AckTracker::default(), stats, file.clone());
        let id = [7u8; crate::kafka::line_id::LEN];
        let line = |id: &'static [u8]| RefusedLine {
            id: Some(id),
            source: "a",
            path: Some("/a.log"),
            offset: "42",
            topic: "t",
            line: b"too big",
        };
        let id: &'static [u8] = Box::leak(Box::new(id));
        for _ in 0..2 {
            let mut t = d.tracker();
            let f = t.push(&batch(1), pos(1, 0), pos(1, 10), 0);
            d.refused(&mut t, f, line(id), "MESSAGE_TOO_LARGE");
            assert_eq!(t.done_of(f), Some(1), "counted done both times");
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(&format!("\"lc_id\":\"{}\"", "07".repeat(20))),
            "{text}"
        );
    }

    #[test]
    fn skipped_lines_count_as_done() {
        let mut t = AckTracker::default();
        let a = t.push(&batch(3), pos(2, 0), pos(2, 50), 2);
        assert_eq!(t.advance(), cursor(2, 0, 2));
        t.ack(a, None);
        assert_eq!(t.advance(), cursor(2, 50, 0));
    }

    #[test]
    fn a_resumed_tracker_keeps_the_stored_ledger_but_not_its_clean_mark() {
        let mut stored = DeliveryLedger::default();
        stored.acked("a", "t", 0, (41, 41));
        stored.clean = true;
        let mut t = AckTracker::resuming(&stored);
        let a = t.push(&batch(1), pos(1, 0), pos(1, 10), 0);
        assert!(!t.is_dirty());
        t.ack(a, Some((0, 42)));
        assert!(t.is_dirty());
        let l = t.ledger_to_persist();
        assert!(!t.is_dirty());
        assert!(!l.clean);
        assert_eq!(l.entries["a"]["t"].last_offset, 42);
    }
}
