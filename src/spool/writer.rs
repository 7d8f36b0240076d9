//! writer: owns the open segment. One thread takes the tailers'
//! [`WriterMsg`]s, writes them as frames in groups (one fsync per group),
//! then commits each batch's source position to the store, seals a segment
//! when it is full, and pauses the tailers while the spool is at its size
//! cap.
//!
//! Invariants: this is the only writer of segment files; the durable end
//! (`SpoolState::durable`) moves only after a group is written and synced,
//! and a source's store record only after that (spool invariant 1); a
//! segment is sealed only after [`Store::flush`] (invariant 2).
//!
//! Must never: drop a batch it accepted. A failed write is rolled back to
//! the last whole frame and retried every second until it succeeds; only a
//! stop request during a lasting failure ends the retries, and then the
//! batches were not committed, so their lines are read again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::SpoolError;
use super::{encode_frame, io_err, segment_path, sync_dir, Frame, Position, Spool, SpoolBatch};
use crate::config::FsyncPolicy;
use crate::runtime::{now_ms, Backoff, Outage};
use crate::store::{FileIdentity, SourceRecord, Store};

/// A first batch smaller than this waits `GROUP_WINDOW` for company
/// before the group is written and synced.
const GROUP_WINDOW_BELOW: usize = 64 << 10;
const GROUP_WINDOW: Duration = Duration::from_millis(2);

/// A failed spool write is retried this often (the tailers wait).
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// A lasting write failure is logged again every this many failures.
const WRITE_FAILURES_PER_LOG: u64 = 30;
/// At shutdown, a failing write is given up after this many failures.
const WRITE_FAILURES_AT_STOP: u64 = 3;

/// While the spool is full, the writer looks again this often even if no
/// segment was released meanwhile (the forwarder's cursor may have moved).
const SPACE_RECHECK: Duration = Duration::from_millis(500);

/// A message from a tailer to the spool writer.
pub enum WriterMsg {
    /// Lines to spool and the position to commit after them. A batch with
    /// no lines only commits the position (e.g. a switch to a new file).
    Batch(SpoolBatch),
    /// Answer once everything sent before it is durable and committed.
    Sync(tokio::sync::oneshot::Sender<()>),
    /// Replace (`Some`) or delete (`None`) a source's store record, after
    /// every batch sent before it is committed: a source removed from the
    /// config, or reset by the operator. Answers when durable.
    SetRecord(
        String,
        Option<SourceRecord>,
        tokio::sync::oneshot::Sender<Result<(), SpoolError>>,
    ),
    /// Delete the records of these sources (a glob source's files gone for
    /// `forget_after`, or no longer matched), after every batch sent
    /// before it is committed, with one segment roll for all of them (one
    /// per record made a host that deletes a thousand files a minute wait
    /// on a thousand fsyncs). Answers when durable.
    Forget(
        Vec<String>,
        tokio::sync::oneshot::Sender<Result<(), SpoolError>>,
    ),
    /// The tailer of source `.0` finished the rotated file `.1` (read to
    /// its end, and idle for `rotate_wait` or deleted): its position leaves
    /// the source's record ([`SourceRecord::draining`]), after every batch
    /// sent before it is committed. Not made durable on its own: a crash
    /// that loses it leaves a position the next start finds finished again.
    Drained(String, FileIdentity),
    /// Make the store durable (after every batch sent before it is
    /// committed): a tailer's positions that no spooled line carries (the
    /// checkpoints of rotated files found at a start) must not be lost
    /// while later positions, replayed from the spool at recovery, survive.
    Flush,
}

impl Spool {
    /// Starts the writer on a dedicated thread. It ends when every sender of
    /// `rx` is dropped (after writing what they sent) or, if the disk keeps
    /// failing, when `stop` is cancelled.
    ///
    /// Once per [`Spool::open`]: the writer starts at the beginning of the
    /// open segment, which [`Spool::open`] created empty.
    pub fn spawn_writer(
        &self,
        store: Store,
        rx: tokio::sync::mpsc::Receiver<WriterMsg>,
        first_seq: u64,
        stop: CancellationToken,
    ) -> Result<std::thread::JoinHandle<Result<(), SpoolError>>, SpoolError> {
        let open = self.state().durable.segment;
        let p = segment_path(&self.dir, open);
        let file = OpenOptions::new()
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        let writer = SpoolWriter {
            spool: self.clone(),
            store,
            file,
            segment: open,
            size: 0,
            next_seq: first_seq,
            counts: HashMap::new(),
            stop,
        };
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(&self.dir))
    }
}

/// The single writer of the open segment.
struct SpoolWriter {
    spool: Spool,
    store: Store,
    file: File,
    segment: u64,
    size: u64,
    next_seq: u64,
    /// Lines and bytes per source so far, for the store records.
    counts: HashMap<String, SourceRecord>,
    stop: CancellationToken,
}

/// Where a batch's frame landed in the open segment (start, end), or
/// `None` for a batch without lines, which writes no frame.
type FrameSpan = Option<(u64, u64)>;

impl SpoolWriter {
    fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<WriterMsg>) -> Result<(), SpoolError> {
        let result = self.run_inner(&mut rx);
        self.spool.state().closed = true;
        self.spool.notify_changed();
        // Every commit so far becomes durable at a clean stop.
        self.store.flush()?;
        result
    }

    fn run_inner(
        &mut self,
        rx: &mut tokio::sync::mpsc::Receiver<WriterMsg>,
    ) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut group: Vec<SpoolBatch> = Vec::new();
        let mut waiters = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let set = self.gather(first, rx, &mut group, &mut waiters);
            if !group.is_empty() {
                if !self.write_group(&mut group, &mut buf)? {
                    return Ok(()); // stopped while the disk was failing
                }
                group.clear();
            }
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
            match set {
                Some(WriterMsg::SetRecord(name, rec, tx)) => {
                    let _ = tx.send(self.set_record(&name, rec));
                }
                Some(WriterMsg::Forget(names, tx)) => {
                    let _ = tx.send(self.forget(&names));
                }
                Some(WriterMsg::Drained(name, identity)) => self.drained(&name, &identity)?,
                Some(WriterMsg::Flush) => self.store.flush()?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Group commit: takes `first` and what is already queued, up to a
    /// bound, into `group` and `waiters`. A `SetRecord` or `Drained` ends
    /// the group so that it applies after the batches before it; it is
    /// returned.
    fn gather(
        &self,
        first: WriterMsg,
        rx: &mut tokio::sync::mpsc::Receiver<WriterMsg>,
        group: &mut Vec<SpoolBatch>,
        waiters: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> Option<WriterMsg> {
        let mut bytes = 0usize;
        let max_group = (self.spool.config.segment_bytes as usize).min(4 << 20);
        if matches!(&first, WriterMsg::Batch(b) if b.data.len() < GROUP_WINDOW_BELOW) {
            // A trickle (e.g. many slow files): give other batches a
            // moment to arrive and share this fsync.
            std::thread::sleep(GROUP_WINDOW);
        }
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                WriterMsg::Batch(b) => {
                    bytes += b.data.len();
                    group.push(b);
                }
                WriterMsg::Sync(tx) => waiters.push(tx),
                set @ (WriterMsg::SetRecord(..)
                | WriterMsg::Forget(..)
                | WriterMsg::Drained(..)
                | WriterMsg::Flush) => return Some(set),
            }
            if bytes < max_group && group.len() < 1024 {
                next = rx.try_recv().ok();
            }
        }
        None
    }

    /// Writes, syncs and commits one group. Returns false if told to stop
    /// before it could be written.
    fn write_group(
        &mut self,
        group: &mut Vec<SpoolBatch>,
        buf: &mut Vec<u8>,
    ) -> Result<bool, SpoolError> {
        // Seal before a segment would outgrow its size (a single group
        // larger than a segment still gets a segment of its own).
        let incoming: u64 = group.iter().map(|b| b.data.len() as u64).sum();
        if self.size > 0 && self.size + incoming > self.spool.config.segment_bytes {
            self.roll()?;
        }
        if !self.wait_for_space() {
            return Ok(false);
        }
        let spans = self.encode_group(group, buf)?;
        if !self.append_until_written(buf) {
            return Ok(false);
        }
        self.size += buf.len() as u64;
        self.publish_durable();
        // Invariant 1: the batch is durable, now its offset may be recorded.
        self.commit_positions(group)?;
        self.keep_hot(group, spans);
        Ok(true)
    }

    /// Numbers and stamps the group's batches and encodes their frames
    /// into `buf`; returns where each frame lands in the open segment.
    fn encode_group(
        &mut self,
        group: &mut [SpoolBatch],
        buf: &mut Vec<u8>,
    ) -> Result<Vec<FrameSpan>, SpoolError> {
        let now = now_ms();
        for b in group.iter_mut() {
            b.seq = self.next_seq;
            b.spooled_ms = now;
            self.next_seq += 1;
        }
        buf.clear();
        // Where each frame lands, for the in-memory copies.
        let mut spans = Vec::with_capacity(group.len());
        for b in group.iter() {
            if b.lines.is_empty() {
                spans.push(None);
            } else {
                let start = buf.len() as u64;
                encode_frame(b, buf)?;
                spans.push(Some((self.size + start, self.size + buf.len() as u64)));
            }
        }
        Ok(spans)
    }

    /// Appends `buf` to the open segment, retrying every [`WRITE_RETRY`]
    /// until it is written. False if it still failed after `stop` was
    /// cancelled: then nothing of `buf` is in the segment.
    fn append_until_written(&mut self, buf: &[u8]) -> bool {
        let path = segment_path(&self.spool.dir, self.segment);
        let mut retry = Backoff::fixed(WRITE_RETRY);
        let mut outage = Outage::default();
        while let Err(e) = self.append(buf) {
            // Roll back the partial write so the segment stays a
            // clean sequence of frames, then retry: nothing the
            // tailers sent is dropped (e.g. on a full disk).
            let _ = self.file.set_len(self.size);
            if outage.failed() || outage.failures() % WRITE_FAILURES_PER_LOG == 1 {
                tracing::error!(segment = %path.display(), error = %e, bytes = buf.len(),
                    "spool write failed; tailers are paused and the write is retried every second");
            }
            if self.stop.is_cancelled() && outage.failures() > WRITE_FAILURES_AT_STOP {
                tracing::error!(segment = %path.display(),
                    "giving up the spool write at shutdown; the lines were not committed and will be read again");
                return false;
            }
            // A whole second even once `stop` is cancelled: at shutdown a
            // failing write still gets its last tries a second apart.
            std::thread::sleep(retry.next_delay());
        }
        if let Some(failures) = outage.recovered() {
            tracing::info!(segment = %path.display(), "spool write succeeded after {failures} failures");
        }
        true
    }

    /// Records the group's positions in the store, each after the source's
    /// previous record (lines and bytes add up).
    fn commit_positions(&mut self, group: &[SpoolBatch]) -> Result<(), SpoolError> {
        for b in group {
            let prev = match self.counts.get(&b.source) {
                Some(r) => Some(r.clone()),
                None => self.store.source(&b.source)?,
            };
            let rec = b.record(prev.as_ref());
            self.store.put_source(&b.source, &rec)?;
            self.counts.insert(b.source.clone(), rec);
        }
        Ok(())
    }

    /// Hands the group's frames, now durable, to the readers' memory.
    fn keep_hot(&mut self, group: &mut Vec<SpoolBatch>, spans: Vec<FrameSpan>) {
        let segment = self.segment;
        let mut s = self.spool.state();
        for (b, span) in group.drain(..).zip(spans) {
            let Some((at, next)) = span else { continue };
            s.hot.push(Frame {
                at: Position { segment, pos: at },
                next: Position { segment, pos: next },
                batch: Arc::new(b),
            });
        }
        drop(s);
        self.spool.notify_changed();
    }

    /// Moves the durable end to the end of the open segment and wakes the
    /// readers.
    fn publish_durable(&mut self) {
        {
            let mut s = self.spool.state();
            s.durable = Position {
                segment: self.segment,
                pos: self.size,
            };
            s.sizes.insert(self.segment, self.size);
        }
        self.spool.notify_changed();
    }

    /// Replaces or deletes a record, then seals the segment: recovery only
    /// scans the newest segment, which then holds no older batch of this
    /// source that could bring the old position back after a crash.
    fn set_record(&mut self, name: &str, rec: Option<SourceRecord>) -> Result<(), SpoolError> {
        self.counts.remove(name);
        match rec {
            Some(mut r) => {
                r.seq = self.next_seq;
                self.next_seq += 1;
                self.store.put_source(name, &r)?;
            }
            None => {
                self.store.remove_source(name)?;
            }
        }
        self.roll()
    }

    /// Deletes the records of `names`; one roll makes it durable (see
    /// `set_record`).
    fn forget(&mut self, names: &[String]) -> Result<(), SpoolError> {
        for name in names {
            self.counts.remove(name);
            self.store.remove_source(name)?;
        }
        self.roll()
    }

    /// Takes a finished rotated file's position out of the source's record
    /// (see [`WriterMsg::Drained`] and [`SourceRecord::drained`]).
    fn drained(&mut self, name: &str, identity: &FileIdentity) -> Result<(), SpoolError> {
        let prev = match self.counts.get(name) {
            Some(r) => Some(r.clone()),
            None => self.store.source(name)?,
        };
        let Some(rec) = prev.and_then(|p| p.drained(identity)) else {
            return Ok(());
        };
        self.store.put_source(name, &rec)?;
        self.counts.insert(name.to_string(), rec);
        Ok(())
    }

    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        if self.spool.config.fsync == FsyncPolicy::Batch {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Seals the open segment and starts the next one.
    fn roll(&mut self) -> Result<(), SpoolError> {
        let path = segment_path(&self.spool.dir, self.segment);
        self.file.sync_all().map_err(io_err(&path))?;
        // Invariant 2: every offset covered by a sealed segment is durable.
        self.store.flush()?;
        let next = self.segment + 1;
        let p = segment_path(&self.spool.dir, next);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        sync_dir(&self.spool.dir)?;
        self.file = file;
        self.segment = next;
        self.size = 0;
        self.publish_durable();
        Ok(())
    }

    /// Backpressure: blocks while the spool is at its size cap. Returns
    /// false if told to stop meanwhile.
    fn wait_for_space(&mut self) -> bool {
        let max = self.spool.config.max_bytes;
        let mut full = Outage::default();
        loop {
            // Segments the forwarder's cursor has passed since it last
            // released any (e.g. one that was sealed only afterwards) make
            // room too.
            // The durable cursor only: a cursor the forwarder wrote but
            // has not made durable yet must not delete a segment (a power
            // cut would leave the store's cursor pointing into it).
            if let Some(c) = self.store.durable_cursor() {
                if let Err(e) = self.spool.release_before(&c) {
                    tracing::warn!(error = %e, "cannot delete a delivered spool segment");
                }
            }
            let mut s = self.spool.state();
            if s.sizes.values().sum::<u64>() < max {
                s.paused = false;
                break;
            }
            if full.failed() {
                tracing::warn!(spool = %self.spool.dir.display(), max_bytes = max,
                    "spool is full; tailers pause until the forwarder delivers (nothing is dropped)");
            }
            s.paused = true;
            if self.stop.is_cancelled() {
                s.paused = false;
                return false;
            }
            drop(self.spool.wait_for_change(s, SPACE_RECHECK));
        }
        if full.recovered().is_some() {
            tracing::info!(spool = %self.spool.dir.display(), "spool has room again; tailers resume");
        }
        true
    }
}
