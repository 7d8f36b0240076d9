//! session: owns one run of a Kafka client in the
//! [`Forwarder`], from the durable
//! cursor until the spool is drained, the settings change, or the client
//! fails. A [`Session`] reads back what Kafka already has past the cursor
//! (the [`ledger`]), then turns a loop: read a frame
//! and send it, take in the client's answers, persist the cursor and ledger
//! when due, and decide whether it is over.
//!
//! Invariants: the crash-safety argument of the
//! [`forwarder`](crate::kafka::forwarder); in particular the cursor and
//! ledger are persisted together and flushed before the spool releases any
//! segment before the cursor, no line is sent before the read-back
//! told which lines past the cursor Kafka already has, and a source with
//! no ledger entry gets one, persisted, before its first line is sent
//! (when the broker says where its lines land; see [`ledger`]).
//!
//! Must never: send a line before the read-back is done, or persist a
//! cursor past a line that is not done (see
//! [`AckTracker`]).

use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::kafka::acks::{AckTracker, Delivery};
use crate::kafka::client::{Client, ClientError, TopicCreator};
use crate::kafka::forwarder::{BrokerState, ForwardError, Forwarder, CURSOR_EVERY};
use crate::kafka::ledger::{self, DeliveryLedger, Redelivery, Verdict};
use crate::kafka::librdkafka::{self, client_config};
use crate::kafka::native::{Event, ProducerError};
use crate::runtime::{Backoff, Outage};
use crate::spool::{Position, ReadOutcome, SpoolBatch, SpoolCursor, SpoolReader};

/// The longest the reader waits for new spool data before the session
/// looks again at a shutdown, a config change or an open batch's linger.
const READ_WAIT: Duration = Duration::from_millis(50);

/// How a session ended, which tells the forwarder what to do next.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Stopped (drained, or the shutdown deadline passed).
    Done,
    /// New Kafka settings: start a session with them.
    Reconfigure,
    /// The client failed (why): rebuild it after a pause.
    Rebuild(String),
    /// Kafka refused a batch of several lines: resend in smaller ones.
    SmallerBatches(String),
    /// librdkafka stopped its producer at a line it dead-lettered (see
    /// [`librdkafka::Stop::Resume`]): go on with a new one at once.
    Resume(String),
}

/// A session step's outcome: go on with a value, or the session is over.
type Step<T> = Result<ControlFlow<SessionEnd, T>, ForwardError>;

/// What the tracker says after a turn's answers.
struct Progress {
    /// Where the cursor may be now.
    cursor: Option<SpoolCursor>,
    /// Frames sent and not fully done.
    in_flight: usize,
    /// Why the session failed, if it did.
    failed: Option<String>,
    /// An ack arrived since the progress was last persisted.
    dirty: bool,
}

/// What reading the spool did in one turn.
enum Read {
    /// A frame was sent (more may be waiting).
    Sent,
    /// Nothing new to read: open batches need not wait for more.
    Idle,
    /// Reading stopped before a frame could be sent; start the turn over.
    Stopped,
}

/// One session: today's client, the spool reader and the progress made.
/// Each turn of its loop reads a frame and sends it (`read_frame`), takes
/// in the client's answers (`poll_client`), persists the cursor and ledger
/// when due (`persist_if_due`) and decides whether the session is over
/// (`finish`).
pub struct Session<'a> {
    fwd: &'a Forwarder,
    kafka: &'a KafkaConfig,
    /// Changes when new Kafka settings are to be applied.
    kafka_rx: &'a watch::Receiver<KafkaConfig>,
    finish: &'a CancellationToken,
    config: ClientConfig,
    delivery: Arc<Delivery>,
    /// What the read-back found in Kafka past the cursor.
    redelivery: Redelivery,
    /// The store's instance id: the first part of every line identity.
    instance: u64,
    /// Asks where a source with no ledger entry will land
    /// ([`ledger::partition_end`]); made when first needed.
    anchors: Option<ledger::ReadBackConsumer>,
    /// Cleared when asking failed: this session asks no more (each ask
    /// may wait for a broker that does not answer).
    anchoring: bool,
    client: Client,
    topics: TopicCreator,
    reader: SpoolReader,
    /// The cursor's frame and how many of its lines are done.
    skip: Option<(Position, u32)>,
    persisted: Option<SpoolCursor>,
    last_persist: Instant,
    /// Set at a shutdown or a settings change: in-flight lines have until
    /// then to be acknowledged.
    deadline: Option<Instant>,
    reconfigure: bool,
    reading: bool,
    /// The reader reached the end of a closed spool.
    drained: bool,
    /// The native producer's events, reused.
    events: Vec<Event>,
}

impl<'a> Session<'a> {
    /// Reads back what Kafka has past the durable cursor, then connects
    /// the client `kafka` asks for. `Break` if the session is over before
    /// it started (told to finish or reconfigure during the read-back, or
    /// the client could not be made).
    pub(crate) fn open(
        fwd: &'a Forwarder,
        kafka: &'a KafkaConfig,
        kafka_rx: &'a watch::Receiver<KafkaConfig>,
        finish: &'a CancellationToken,
        batch_bytes: usize,
    ) -> Step<Session<'a>> {
        let config = client_config(kafka, &fwd.host);
        let start = fwd.store.cursor()?.map(|c| fwd.spool.normalize(c));
        let stored_ledger = fwd.store.ledger()?;
        let instance = fwd.store.instance_id()?;
        let delivery = Arc::new(Delivery::new(
            AckTracker::resuming(&stored_ledger),
            fwd.stats.clone(),
            fwd.data_dir.join("dead-letter.jsonl"),
        ));
        // Exactly-once across crashes: find what Kafka already has past the
        // cursor before sending anything (see `ledger`).
        let Some(redelivery) = read_back(&config, &stored_ledger, instance, finish, kafka_rx)
        else {
            return Ok(Break(if finish.is_cancelled() {
                SessionEnd::Done
            } else {
                SessionEnd::Reconfigure
            }));
        };
        if !redelivery.is_empty() {
            tracing::info!("Kafka already has lines past the spool cursor (sent before a crash); they are skipped, not sent again");
        }
        let client = match Client::connect(
            kafka,
            &config,
            &fwd.host,
            &delivery,
            batch_bytes,
            &fwd.stats,
        ) {
            Ok(c) => c,
            Err(e) => return Ok(Break(SessionEnd::Rebuild(e.to_string()))),
        };
        if stored_ledger.clean {
            // From here on, lines may be sent past the cursor.
            let mut l = stored_ledger.clone();
            l.clean = false;
            fwd.store.put_progress(start.as_ref(), &l)?;
            fwd.store.flush()?;
        }
        Ok(Continue(Session {
            fwd,
            kafka,
            kafka_rx,
            finish,
            topics: TopicCreator::new(kafka, fwd.runtime.clone(), fwd.stats.clone()),
            config,
            delivery,
            redelivery,
            instance,
            anchors: None,
            anchoring: true,
            client,
            reader: fwd.spool.reader(start),
            skip: start.map(|c| {
                (
                    Position {
                        segment: c.segment,
                        pos: c.position,
                    },
                    c.lines_done,
                )
            }),
            persisted: start,
            last_persist: Instant::now(),
            deadline: None,
            reconfigure: false,
            reading: true,
            drained: false,
            events: Vec::new(),
        }))
    }

    /// Turns until the session is over.
    pub(crate) fn run(mut self) -> Result<SessionEnd, ForwardError> {
        loop {
            if let Break(end) = self.turn()? {
                return Ok(end);
            }
        }
    }

    /// One turn: read and send a frame (while reading), take in the
    /// client's answers, persist progress when due, end if it is time.
    fn turn(&mut self) -> Step<()> {
        self.notice_stop();
        let past_deadline = self.deadline.is_some_and(|d| Instant::now() >= d);
        let mut idle = !self.reading;
        if self.reading && !past_deadline {
            match self.read_frame()? {
                Break(end) => return Ok(Break(end)),
                Continue(Read::Stopped) => return Ok(Continue(())),
                Continue(Read::Sent) => {}
                Continue(Read::Idle) => idle = true,
            }
        }
        if let Break(end) = self.poll_client(past_deadline, idle)? {
            return Ok(Break(end));
        }
        let progress = self.progress();
        let finished = !self.reading && progress.in_flight == 0;
        self.persist_if_due(&progress, finished, past_deadline)?;
        if let Some(why) = progress.failed {
            return self.end_after_failure(why).map(Break);
        }
        Ok(self.finish(finished, past_deadline, progress.in_flight))
    }

    /// Starts the deadline for what is in flight at a shutdown, or at new
    /// Kafka settings (then reading stops: drain, and rebuild with them).
    fn notice_stop(&mut self) {
        if self.deadline.is_none() && self.finish.is_cancelled() {
            self.deadline = Some(Instant::now() + self.kafka.shutdown_ack_timeout);
        }
        if self.deadline.is_none() && self.kafka_rx.has_changed().unwrap_or(false) {
            self.reconfigure = true;
            self.reading = false;
            self.deadline = Some(Instant::now() + self.kafka.shutdown_ack_timeout);
        }
    }

    /// Reads the next durable frame and sends it.
    fn read_frame(&mut self) -> Step<Read> {
        // The reader is woken by new spool data; the timeout only bounds
        // how late a shutdown, a config change or the end of a batch's
        // linger is noticed.
        let wait = self
            .client
            .linger_left()
            .map_or(READ_WAIT, |l| l.min(READ_WAIT));
        match self.reader.next(wait)? {
            ReadOutcome::Frame(frame) => self.send_frame(frame.at, frame.next, &frame.batch),
            ReadOutcome::Idle => Ok(Continue(Read::Idle)),
            ReadOutcome::Closed => {
                self.reading = false;
                self.drained = true;
                Ok(Continue(Read::Idle))
            }
        }
    }

    /// Sends the lines of the frame at `at` (the next at `next`) that are
    /// not done yet and that Kafka does not have already.
    fn send_frame(&mut self, at: Position, next: Position, b: &SpoolBatch) -> Step<Read> {
        let done = self.lines_done_at(at, b.lines.len() as u32);
        if done < b.lines.len() as u32 {
            let give_up = || {
                self.kafka_rx.has_changed().unwrap_or(false)
                    || (self.finish.is_cancelled()
                        && self.deadline.is_none_or(|d| Instant::now() >= d))
            };
            match self
                .topics
                .ensure(&mut self.client, &self.config, &b.topic, &give_up)
            {
                Ok(true) => {}
                Ok(false) => {
                    // Shutting down, or new settings, before the topic
                    // could be made: this frame was not pushed, so the
                    // cursor stays before it.
                    self.reading = false;
                    return Ok(Continue(Read::Stopped));
                }
                Err(e) => return self.end_native(e).map(Break),
            }
            self.anchor(b)?;
        }
        let id = self.delivery.tracker().push(b, at, next, done);
        // A line Kafka already has (sent before a crash) is acknowledged
        // here instead of sent.
        let (delivery, redelivery) = (&self.delivery, &mut self.redelivery);
        let mut in_kafka = |index: u32| {
            if redelivery.is_empty() {
                return false;
            }
            match redelivery.check(b.seq, index) {
                Verdict::Skip(at) => {
                    delivery.tracker().ack(id, Some(at));
                    true
                }
                Verdict::Send => false,
            }
        };
        let lines = b
            .iter_lines()
            .enumerate()
            .skip(done as usize)
            .map(|(i, (offset, line))| (i as u32, offset, line));
        let from = (self.fwd.host.as_str(), self.instance);
        match self.client.send(id, b, from, lines, &mut in_kafka) {
            Ok(sent) => {
                self.fwd.stats.sent.fetch_add(sent, Ordering::Relaxed);
                Ok(Continue(Read::Sent))
            }
            Err(ClientError::Native(e)) => self.end_native(e).map(Break),
            Err(e) => self.end_after_failure(e.to_string()).map(Break),
        }
    }

    /// Gives `b`'s source a ledger entry, persisted with the cursor, before
    /// its first line is sent, if it has none (see [`ledger`]). If the
    /// broker does not say where, its lines are sent without one (then a
    /// crash before an ack is persisted resends them).
    fn anchor(&mut self, b: &SpoolBatch) -> Result<(), ForwardError> {
        // The ledger goes by the lines' Kafka key (see `AckTracker::push`).
        let key = crate::config::kafka_key(&b.source);
        if !self.anchoring || self.delivery.tracker().has_entry(key, &b.topic) {
            return Ok(());
        }
        let consumer = match &mut self.anchors {
            Some(c) => c,
            empty => match ledger::anchor_consumer(&self.config) {
                Ok(c) => empty.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ask Kafka where a source's lines land; they are sent without a ledger entry");
                    self.anchoring = false;
                    return Ok(());
                }
            },
        };
        match ledger::partition_end(consumer, &b.topic, &b.source) {
            Ok((partition, high)) => {
                let (cursor, ledger) = {
                    let mut t = self.delivery.tracker();
                    t.anchor(key, &b.topic, partition, high);
                    (t.advance(), t.ledger_to_persist())
                };
                self.persist(cursor.as_ref(), &ledger)?;
                self.persisted = cursor;
                self.last_persist = Instant::now();
            }
            Err(e) => {
                tracing::warn!(source = b.source, topic = b.topic, error = %e,
                    "cannot ask Kafka where this source's lines land; they are sent without a ledger entry (until this session ends)");
                self.anchoring = false;
            }
        }
        Ok(())
    }

    /// Takes in the client's answers. When not reading (or past the
    /// deadline), it waits a little for them instead of the reader waiting
    /// for spool data; `idle`: open batches need not wait for more lines.
    fn poll_client(&mut self, past_deadline: bool, idle: bool) -> Step<()> {
        let waits = !self.reading || past_deadline;
        match self
            .client
            .poll(waits, idle, &self.delivery, &mut self.events)
        {
            Ok(()) => Ok(Continue(())),
            Err(e) => self.end_native(e).map(Break),
        }
    }

    /// Moves the cursor over what is done, and says what is left.
    fn progress(&self) -> Progress {
        let mut t = self.delivery.tracker();
        let cursor = t.advance();
        self.fwd
            .stats
            .oldest_unacked_spooled_ms
            .store(t.oldest_spooled_ms(), Ordering::Relaxed);
        Progress {
            cursor,
            in_flight: t.in_flight(),
            failed: t.take_failure(),
            dirty: t.is_dirty(),
        }
    }

    /// How many leading lines of the frame at `at` (of `lines`) an earlier
    /// session got done: only the frame the cursor is in has any.
    fn lines_done_at(&mut self, at: Position, lines: u32) -> u32 {
        match self.skip.take() {
            Some((cursor_at, n)) if cursor_at == at => n.min(lines),
            other => {
                self.skip = other.filter(|(cursor_at, _)| *cursor_at > at);
                0
            }
        }
    }

    /// Persists the cursor with the ledger when it changed (or the session
    /// is `finished`) and a write is due: every [`CURSOR_EVERY`], and at
    /// once when the session is ending.
    fn persist_if_due(
        &mut self,
        p: &Progress,
        finished: bool,
        past_deadline: bool,
    ) -> Result<(), ForwardError> {
        let due = finished
            || past_deadline
            || p.failed.is_some()
            || self.last_persist.elapsed() >= CURSOR_EVERY;
        // Compared as stored: a cursor at the end of a segment that has
        // been sealed since is stored anew as the next one's start, which
        // lets the sealed one be deleted (see `Spool::normalize`).
        let cursor = p.cursor.map(|c| self.fwd.spool.normalize(c));
        if !due || (cursor == self.persisted && !p.dirty && !finished) {
            return Ok(());
        }
        let mut ledger = self.delivery.tracker().ledger_to_persist();
        // Nothing in flight and nothing sent past the cursor: the next
        // start needs no read-back.
        ledger.clean = finished && !past_deadline;
        self.persist(cursor.as_ref(), &ledger)?;
        self.persisted = cursor;
        self.last_persist = Instant::now();
        Ok(())
    }

    /// The session is over when nothing is in flight and nothing more is
    /// read (`finished`), or the deadline passed (`give_up`) with
    /// `in_flight` frames unanswered, which are abandoned.
    fn finish(
        &mut self,
        finished: bool,
        give_up: bool,
        in_flight: usize,
    ) -> ControlFlow<SessionEnd> {
        if finished && self.reconfigure {
            return Break(SessionEnd::Reconfigure);
        }
        if finished {
            if self.drained {
                tracing::info!("forwarder delivered everything spooled");
            } else {
                tracing::warn!(
                    "forwarder stopped before the spool was delivered (Kafka unreachable?); the rest is sent on the next start"
                );
            }
            return Break(SessionEnd::Done);
        }
        if give_up && self.reconfigure {
            tracing::warn!(in_flight_frames = in_flight,
                "lines still unacknowledged when rebuilding the producer; they are sent again by the new one");
            self.client.abandon();
            return Break(SessionEnd::Reconfigure);
        }
        if give_up {
            tracing::warn!(in_flight_frames = in_flight,
                "shutdown deadline passed with lines unacknowledged or unsent; they stay in the spool and are sent on the next start");
            self.client.abandon();
            return Break(SessionEnd::Done);
        }
        Continue(())
    }

    /// Ends a session whose client failed (`why`). With librdkafka, what
    /// is done is made durable (the failure may have come from a send,
    /// before progress was persisted); the reports the abandon takes in do
    /// not count; and the producer may have stopped at a refusal, which
    /// then says how the session ends ([`librdkafka::Stop`]).
    fn end_after_failure(&mut self, why: String) -> Result<SessionEnd, ForwardError> {
        if !matches!(self.client, Client::Librdkafka(_)) {
            self.client.abandon();
            return Ok(SessionEnd::Rebuild(why));
        }
        let (cursor, ledger) = {
            let mut t = self.delivery.tracker();
            if !t.has_failed() {
                t.fail(why.clone());
            }
            (t.advance(), t.ledger_to_persist())
        };
        self.client.abandon();
        self.persist(cursor.as_ref(), &ledger)?;
        self.persisted = cursor;
        let stop = match &self.client {
            Client::Librdkafka(p) => librdkafka::stop(p),
            Client::Native(_) => None,
        };
        Ok(match stop {
            Some(librdkafka::Stop::SmallerBatches(why)) => SessionEnd::SmallerBatches(why),
            Some(librdkafka::Stop::Resume(why)) => SessionEnd::Resume(why),
            None => SessionEnd::Rebuild(why),
        })
    }

    /// Ends a session whose native producer failed: what was acknowledged
    /// before is made durable first, then the next session resends the rest
    /// (in smaller batches if Kafka refused a whole batch).
    fn end_native(&mut self, e: ProducerError) -> Result<SessionEnd, ForwardError> {
        let stats = &self.fwd.stats;
        stats.producer_errors.fetch_add(1, Ordering::Relaxed);
        if e.is_refusal() {
            stats.broker_state.store(BrokerState::AuthFailed);
        } else if matches!(e, ProducerError::Io { .. } | ProducerError::Connect { .. }) {
            stats.broker_state.store(BrokerState::Down);
        }
        // Answers taken in before the failure still count.
        self.client.take_last_answers(&self.delivery);
        let (cursor, ledger) = {
            let mut t = self.delivery.tracker();
            let c = t.advance();
            (c, t.ledger_to_persist())
        };
        self.persist(cursor.as_ref(), &ledger)?;
        self.client.abandon();
        Ok(match e {
            ProducerError::BatchRefused { .. } => SessionEnd::SmallerBatches(e.to_string()),
            e => SessionEnd::Rebuild(e.to_string()),
        })
    }

    fn persist(
        &self,
        c: Option<&SpoolCursor>,
        ledger: &DeliveryLedger,
    ) -> Result<(), ForwardError> {
        // At a sealed segment's end, the next one's start: see
        // `Spool::normalize`.
        let c = c.map(|c| self.fwd.spool.normalize(*c));
        self.fwd.store.put_progress(c.as_ref(), ledger)?;
        // The cursor is durable before any segment it passes is deleted:
        // the flush fsyncs the store (see `Store::flush`), and segments
        // go by the cursor it made durable, never by one only written.
        self.fwd.store.flush()?;
        if let Some(d) = self.fwd.store.durable_cursor() {
            self.fwd.spool.release_before(&d)?;
        }
        Ok(())
    }
}

/// Reads back what Kafka has past the cursor, retrying every 500 ms while
/// the broker is unreachable. `None` if told to finish or to apply new
/// settings first.
fn read_back(
    config: &ClientConfig,
    stored: &DeliveryLedger,
    instance: u64,
    finish: &CancellationToken,
    kafka_rx: &watch::Receiver<KafkaConfig>,
) -> Option<Redelivery> {
    let mut retry = Backoff::fixed(Duration::from_millis(500));
    let mut outage = Outage::default();
    let stop = || finish.is_cancelled() || kafka_rx.has_changed().unwrap_or(false);
    loop {
        match ledger::read_back(config, stored, instance) {
            Ok(r) => {
                if let Some(failures) = outage.recovered() {
                    tracing::info!(failures, "read back what Kafka already has; sending");
                }
                return Some(r);
            }
            Err(e) => {
                use rdkafka::types::RDKafkaErrorCode as Code;
                if outage.failed() {
                    let unauthorized = matches!(
                        e.rdkafka_error_code(),
                        Some(Code::TopicAuthorizationFailed | Code::GroupAuthorizationFailed)
                    );
                    if unauthorized {
                        tracing::error!(error = %e, "Kafka refuses the read-back for want of an ACL: after a crash logcatch reads back what Kafka already has, which needs READ (and DESCRIBE) on the topic; retrying with back-off (lines wait in the spool)");
                    } else {
                        tracing::warn!(error = %e, "cannot read back what Kafka already has yet; retrying before sending (lines wait in the spool)");
                    }
                }
                if !retry.sleep(stop) {
                    return None;
                }
            }
        }
    }
}
