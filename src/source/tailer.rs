//! tailer: owns following one source's file: finding it, resuming at the
//! stored offset, reading new bytes, and noticing rotation, truncation and
//! replacement. One task per source ([`run`]); the reading itself runs on
//! the blocking pool ([`FileTail::step`]).
//!
//! Invariants:
//! - The tailer never writes offsets itself. It sends batches (lines plus
//!   the offset after them) to the spool writer in file order, and the
//!   writer commits the offset only after the lines are durable
//!   ([`crate::spool`] invariant 1). So a crash anywhere here re-reads, never
//!   skips.
//! - A file is identified by device, inode and a checksum of its first
//!   bytes ([`FileIdentity`]), and a resumed offset is trusted only if the
//!   bytes just before it still match
//!   ([`SourceRecord::tail_crc`](crate::store::SourceRecord::tail_crc),
//!   checked by [`verify`](crate::source::identity::verify)). Anything else is a new file and is
//!   read from 0.
//! - After a rename rotation the old file is kept open and drained beside
//!   the new one (late writes through descriptors opened before the
//!   rotation) until it is idle for the source's `rotate_wait` after its
//!   end, or deleted and read to its end ([`drain`]). Its position stays in
//!   the source's record ([`SourceRecord::draining`]), so a restart in the
//!   middle finds it again beside the path by device and inode
//!   ([`find_rotated`]) and drains the rest; the same happens when the
//!   rotation happened while we were down ([`open`]).
//! - After a copytruncate (the file shrank below the read position, or its
//!   first bytes changed) logrotate's copy is finished from the read
//!   position before the truncated file is read again from 0, also when
//!   the truncation happened while we were down ([`find_copy`](crate::source::copies::find_copy)). Without a
//!   copy the possible gap is logged and counted
//!   ([`TailStatus::truncation_gaps`]), never passed over silently.
//!
//! Must never: hold more than `max_line_bytes` of one line, block an async
//! worker thread on file I/O, or open anything but a regular file (a FIFO
//! would block the open).
//!
//! Layout: this file holds the state and the step loop; [`open`] decides
//! where a file starts; [`rewrite`] checks the open file for truncation,
//! rewrites and rotation; [`drain`] reads rotated files for late writes.
//!
//! Known limits (what the in-process tests' model leaves out, see
//! `tailer/tests.rs`): lines written to a rotated file after it was
//! finished (idle for `rotate_wait`) are not read; lines a copytruncate
//! left only in a copy that is gone (deleted or compressed), or in the copy
//! of a second copytruncate that came while the tailer ran but before it
//! finished the first copy, are not read (after rotations while logcatch
//! was stopped the generations it never saw are found beside the path and
//! read from 0: [`open`]); a file of 1 KiB
//! or more truncated and rewritten past the read position between two
//! looks (a look is before every read and at end of file) is caught only by
//! the head check, at most once a second (`HEAD_RECHECK`; a smaller file's
//! head is compared at every look); a partial last line of a file that was
//! deleted or rewritten while logcatch was stopped is lost.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;
use crate::runtime::{lock, Outage};
use crate::source::compressed::Codec;
use crate::source::filewatch::{FileWatch, Seen};
#[cfg(doc)]
use crate::source::identity::find_rotated;
use crate::source::identity::{identity_of, tail_check, FileIdentity, HEAD_BYTES};
use crate::source::lines::{LineBatch, LineSplitter};
use crate::spool::{SpoolBatch, WriterMsg};
#[cfg(doc)]
use crate::store::SourceRecord;
use crate::store::{Store, StoreError};

mod drain;
mod open;
mod rewrite;

use drain::DrainingFile;

/// The read buffer of an idle source.
const MIN_READ_BUFFER: usize = 16 << 10;
/// How often a growing file's first bytes are compared with its identity.
const HEAD_RECHECK: Duration = Duration::from_secs(1);
/// How often an idle tailer looks at its draining files (their late writes
/// wake nothing: the watch follows the path).
const DRAIN_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("source `{source_name}`: {path}: {source}")]
    Io {
        source_name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source `{source_name}`: {path} is not a regular file ({kind}); waiting for it to become one")]
    NotAFile {
        source_name: String,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("source `{source_name}`: {source}")]
    Store {
        source_name: String,
        #[source]
        source: StoreError,
    },
}

/// Wraps an I/O error on `path` of source `source_name`.
fn io_err(source_name: &str, path: &Path) -> impl FnOnce(std::io::Error) -> TailError {
    let (source_name, path) = (source_name.to_string(), path.to_path_buf());
    move |source| TailError::Io {
        source_name,
        path,
        source,
    }
}

/// What a tailer is doing, for `logcatch-ctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TailState {
    #[default]
    Starting,
    Tailing,
    WaitingForFile,
    /// Finishing a rotated file before moving to the new one.
    DrainingRotated,
    Error,
    Stopped,
}

/// Live status shared with the admin side.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TailStatus {
    pub state: TailState,
    pub last_error: Option<String>,
    /// Lines longer than the cap (split or truncated) in the open file.
    pub long_lines: u64,
    /// Lines and bytes handed to the spool since this tailer started.
    pub lines_read: u64,
    pub bytes_read: u64,
    /// Unix milliseconds of the last read that returned bytes.
    pub last_read_ms: u64,
    /// Truncations (or rewrites) of the file for which no copy was found:
    /// lines written between the read position and the truncation may be
    /// lost. Counted since this tailer started.
    pub truncation_gaps: u64,
    /// Rotated files still read for late writes, with their committed
    /// offsets as of the last change of the list.
    pub draining: Vec<DrainingStatus>,
}

/// One draining file, for `logcatch-ctl`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainingStatus {
    pub path: String,
    pub offset: u64,
}

struct OpenFile {
    file: File,
    /// The path it was opened under (a rotated file's new name when found
    /// at start).
    opened_as: PathBuf,
    identity: FileIdentity,
    read_pos: u64,
    /// The offset after the last line emitted (where `tail` ends): a
    /// held partial line lies between it and `read_pos`.
    committed: u64,
    splitter: LineSplitter,
    /// Size seen at the last end-of-file check.
    last_size: u64,
    /// When the head checksum was last compared with the file.
    head_checked: std::time::Instant,
    /// The tail check (length, crc32c) of the bytes before the last line
    /// end: see [`tail_check`].
    tail: (u32, u32),
}

impl OpenFile {
    /// Splits `bytes`, just read at the read position, into lines in
    /// `out`, and moves the read position, the tail check and (while the
    /// file is shorter than its head) the identity past them.
    fn take(&mut self, bytes: &[u8], out: &mut LineBatch) -> std::io::Result<()> {
        let at = self.read_pos;
        self.splitter.feed(bytes, at, out);
        self.read_pos += bytes.len() as u64;
        if let Some(end) = out.end_offset {
            self.tail = tail_check(&bytes[..(end - at) as usize]);
            self.committed = end;
        }
        if self.identity.head_len < HEAD_BYTES {
            let size = self.read_pos;
            self.identity = identity_of(&self.file, size, self.identity.dev, self.identity.ino)?;
        }
        Ok(())
    }
}

impl StartPoint {
    /// `file`, opened at the source's `path`, read from `offset`.
    fn at(file: File, path: &Path, offset: u64, tail: (u32, u32)) -> StartPoint {
        StartPoint {
            file,
            opened_as: path.to_path_buf(),
            offset,
            tail,
            goes_by: None,
        }
    }
}

/// Where [`FileTail::open`] starts reading, and in which file.
struct StartPoint {
    file: File,
    opened_as: PathBuf,
    offset: u64,
    tail: (u32, u32),
    /// The device and inode the file goes by when they are not its own:
    /// an unpacked compressed copy goes by the compressed file's, which
    /// stay the same across restarts ([`crate::source::compressed`]).
    goes_by: Option<(u64, u64)>,
}

/// The blocking half of a tailer: one source's file state.
pub struct FileTail {
    source: SourceConfig,
    store: Store,
    current: Option<OpenFile>,
    /// Rotated files still read for late writes ([`drain`]).
    draining: Vec<DrainingFile>,
    /// The record's draining files were resumed (at the first open).
    resumed: bool,
    /// Draining files finished while no file at the path was open yet:
    /// their [`WriterMsg::Drained`] waits until the new file's first
    /// checkpoint is out, so that the record moves to the new file before
    /// the finished one leaves it (else a record whose only file was the
    /// finished one would keep it as draining once the new file came).
    pending_drained: Vec<FileIdentity>,
    /// The record's rotated files were looked for (once a run, even while
    /// the first open is retried).
    drains_resumed: bool,
    /// The time of the record's last commit as it was before this run
    /// wrote anything: what rotated files' modification times are
    /// compared with at the first open (later commits would hide them).
    scan_after: Option<u64>,
    /// Checkpoints at 0 of rotated files found at the first open that no
    /// position named: they go out before the path's checkpoint.
    found_checkpoints: Vec<SpoolBatch>,
    /// Ask the writer to make the store durable after the next step's
    /// batches ([`Step::flush`]).
    flush_store: bool,
    /// Device and inode of compressed rotations unpacked at a start to
    /// drain a record position (the drain goes by the position's own).
    unpacked: Vec<(u64, u64)>,
    /// Set after a rotation: the next file at the path is new, read from 0.
    rotated: bool,
    /// Read buffer: grows (up to `max_buf`) while reads fill it, and goes
    /// back to `MIN_READ_BUFFER` when the file is idle, so a thousand idle
    /// sources cost little memory.
    buf: Vec<u8>,
    max_buf: usize,
    status: Arc<Mutex<TailStatus>>,
    /// Failing steps since the last good one: the recovery is logged once.
    outage: Outage,
    /// The last error logged, to log each distinct error once.
    last_logged: Option<String>,
}

/// What one step produced.
pub struct Step {
    pub batches: Vec<SpoolBatch>,
    /// More bytes are probably waiting: step again without sleeping.
    pub more: bool,
    /// When idle: what is at the path as far as this tailer knows (a
    /// change wakes it).
    pub seen: Option<Seen>,
    /// Rotated files finished in this step, after their last batch in
    /// `batches`: their positions leave the record
    /// ([`WriterMsg::Drained`]).
    pub finished: Vec<FileIdentity>,
    /// Rotated files are being drained: an idle wait looks again within
    /// [`DRAIN_POLL`].
    pub draining: bool,
    /// Make the store durable after this step's batches
    /// ([`WriterMsg::Flush`]).
    pub flush: bool,
}

impl Step {
    fn idle(batches: Vec<SpoolBatch>) -> Step {
        Step {
            batches,
            more: false,
            seen: None,
            finished: Vec::new(),
            draining: false,
            flush: false,
        }
    }
}

impl FileTail {
    pub fn new(source: SourceConfig, store: Store, read_buffer: usize) -> FileTail {
        FileTail {
            source,
            store,
            current: None,
            draining: Vec::new(),
            resumed: false,
            pending_drained: Vec::new(),
            drains_resumed: false,
            scan_after: None,
            found_checkpoints: Vec::new(),
            flush_store: false,
            unpacked: Vec::new(),
            rotated: false,
            buf: vec![0u8; MIN_READ_BUFFER.min(read_buffer)],
            max_buf: read_buffer,
            status: Arc::new(Mutex::new(TailStatus::default())),
            outage: Outage::default(),
            last_logged: None,
        }
    }

    pub fn status(&self) -> Arc<Mutex<TailStatus>> {
        self.status.clone()
    }

    fn set_state(&self, state: TailState, error: Option<String>) {
        let mut s = lock(&self.status);
        s.state = state;
        s.last_error = error;
        if let Some(c) = &self.current {
            s.long_lines = c.splitter.long_lines;
        }
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> TailError {
        io_err(&self.source.name, path)
    }

    fn store_err(&self, source: StoreError) -> TailError {
        TailError::Store {
            source_name: self.source.name.clone(),
            source,
        }
    }

    /// One unit of work: open the file if needed, read one buffer, check
    /// for rotation at end of file.
    pub fn step(&mut self) -> Step {
        // The draining files first: their lines are older than the new
        // file's. While one has a backlog (a full read) the file at the
        // path waits, so a restart after a rotation sends the old file's
        // rest before the new file's lines. They are read whatever became
        // of the file at the path (missing, failing).
        let mut drained = self.step_draining();
        // Before the file at the path is looked at: a first open still
        // being retried must see them as handled, not find them again.
        self.pending_drained.extend(drained.finished);
        let mut step = if drained.more && !self.rotated_during_backlog() {
            Step::idle(Vec::new())
        } else {
            self.step_logged()
        };
        step.batches
            .splice(0..0, std::mem::take(&mut drained.batches));
        step.flush = std::mem::take(&mut self.flush_store);
        step.more |= drained.more;
        step.draining = !self.draining.is_empty();
        if self.current.is_some() && !self.pending_drained.is_empty() {
            step.finished = self.finished_not_held();
        }
        if !step.more {
            step.seen = self.idle_seen();
            if self.buf.len() > MIN_READ_BUFFER {
                self.buf = vec![0u8; MIN_READ_BUFFER];
            }
        }
        step
    }

    /// The pending finished files whose positions are to leave the record
    /// ([`WriterMsg::Drained`]), taking them. Not one that a file this
    /// tailer still reads goes by (device and inode): the record tells
    /// positions apart by device and inode alone
    /// ([`SpoolBatch::record`], [`SourceRecord::drained`]), so that file's
    /// batches have taken the finished one's place, and its `Drained`
    /// would take the held file's position out instead. That happens when
    /// a file found gone at the start (deleted by logrotate) had its inode
    /// given to a generation found beside the path and read from 0: the
    /// generation was named in the record only to leave it again, and a
    /// stop before its first lines lost it whole (the rotation soak, mode
    /// `late`).
    fn finished_not_held(&mut self) -> Vec<FileIdentity> {
        let held: Vec<FileIdentity> = self
            .current
            .iter()
            .chain(self.draining.iter().map(|d| &d.file))
            .map(|f| f.identity)
            .collect();
        let mut finished = std::mem::take(&mut self.pending_drained);
        finished.retain(|f| !held.iter().any(|h| h.same_file(f)));
        finished
    }

    /// What is at the path as far as this tailer knows, for [`FileWatch`].
    fn idle_seen(&self) -> Option<Seen> {
        // A compressed source's open file is its unpacked copy: what the
        // watch compares is the compressed file as it is.
        let unpacked = Codec::of(&self.source.path).is_some();
        match &self.current {
            Some(c) if c.opened_as == self.source.path && !unpacked => Some(Seen {
                dev: c.identity.dev,
                ino: c.identity.ino,
                size: c.read_pos,
            }),
            _ => std::fs::metadata(&self.source.path).ok().map(|m| Seen {
                dev: m.dev(),
                ino: m.ino(),
                size: m.len(),
            }),
        }
    }

    fn step_logged(&mut self) -> Step {
        match self.step_inner() {
            Ok(step) => {
                if self.outage.recovered().is_some() {
                    self.last_logged = None;
                    tracing::info!(source = %self.source.name, path = %self.source.path.display(), "source recovered");
                }
                step
            }
            Err(e) => {
                self.outage.failed();
                let msg = e.to_string();
                if self.last_logged.as_deref() != Some(msg.as_str()) {
                    tracing::error!(source = %self.source.name, "{msg}");
                    self.last_logged = Some(msg.clone());
                }
                let state = if matches!(e, TailError::NotAFile { .. }) {
                    TailState::WaitingForFile
                } else {
                    TailState::Error
                };
                self.set_state(state, Some(msg));
                // Drop the open file on a read error; reopen resumes at the
                // committed offset.
                if matches!(e, TailError::Io { .. }) {
                    self.current = None;
                }
                Step::idle(Vec::new())
            }
        }
    }

    fn step_inner(&mut self) -> Result<Step, TailError> {
        let mut batches = Vec::new();
        let idle = Step::idle;
        if self.current.is_none() {
            match self.open()? {
                // Files resumed as draining are read first (see `step`).
                // The checkpoints of rotated files found at this open go
                // before the path's (see `FileTail::read_unknown_generations`).
                Some(checkpoint) if !self.draining.is_empty() => {
                    let mut batches = std::mem::take(&mut self.found_checkpoints);
                    batches.push(checkpoint);
                    return Ok(Step {
                        more: true,
                        ..idle(batches)
                    });
                }
                Some(checkpoint) => batches.push(checkpoint),
                None => {
                    self.set_state(TailState::WaitingForFile, None);
                    return Ok(idle(batches));
                }
            }
        }
        if self.current.is_none() {
            return Ok(idle(batches));
        }
        // Truncated or rewritten since the last look? Checked before the
        // read too, not only at end of file: a tailer that fell behind
        // (backpressure, a busy file) would otherwise read a new
        // generation's bytes at the old position as if they were the old
        // file's, and lose what only the copy holds.
        if let Some(b) = self.check_rewritten()? {
            batches.push(b);
        }
        let asked = self.buf.len();
        let n = self.read_chunk()?;
        if n > 0 {
            self.split_chunk(n, &mut batches)?;
        }
        // A full read: more is probably waiting. A short read reached the
        // end of the file: do the end-of-file checks now rather than in one
        // more step (was it truncated, replaced, or rotated away?).
        let more = if n > 0 && n == asked {
            true
        } else {
            match self.check_at_eof()? {
                Some(b) => {
                    batches.push(b);
                    true
                }
                None => self.current.is_none(),
            }
        };
        Ok(Step {
            more,
            ..Step::idle(batches)
        })
    }

    /// Reads the next buffer of the open file at its read position; grows
    /// the buffer when a read fills it.
    fn read_chunk(&mut self) -> Result<usize, TailError> {
        let Some(cur) = self.current.as_ref() else {
            return Ok(0);
        };
        let n = cur
            .file
            .read_at(&mut self.buf, cur.read_pos)
            .map_err(io_err(&self.source.name, &cur.opened_as))?;
        if n == self.buf.len() && n < self.max_buf {
            // Catching up: read more per step next time.
            let grown = (n * 2).min(self.max_buf);
            self.buf.resize(grown, 0);
        }
        Ok(n)
    }

    /// Splits the `n` bytes just read into lines, moves the read position,
    /// tail check and identity past them, and queues the lines.
    fn split_chunk(&mut self, n: usize, batches: &mut Vec<SpoolBatch>) -> Result<(), TailError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let mut out = LineBatch::default();
        cur.take(&self.buf[..n], &mut out)
            .map_err(io_err(&self.source.name, &cur.opened_as))?;
        self.count_read(&out);
        if !out.is_empty() {
            batches.push(self.batch(out));
        }
        let state = if self.rotated_drain() {
            TailState::DrainingRotated
        } else {
            TailState::Tailing
        };
        self.set_state(state, None);
        Ok(())
    }

    fn rotated_drain(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.opened_as != self.source.path)
    }

    /// Counts lines read, for `logcatch-ctl`.
    fn count_read(&self, out: &LineBatch) {
        let mut s = lock(&self.status);
        s.lines_read += out.lines.len() as u64;
        s.bytes_read += out.data.len() as u64;
        s.last_read_ms = crate::runtime::now_ms();
    }

    /// A batch of the current file's lines `out`.
    fn batch(&self, out: LineBatch) -> SpoolBatch {
        self.batch_for(self.current.as_ref(), out)
    }

    /// A batch of the lines `out` read from `file`.
    fn batch_of(&self, file: &OpenFile, out: LineBatch) -> SpoolBatch {
        self.batch_for(Some(file), out)
    }

    fn batch_for(&self, cur: Option<&OpenFile>, out: LineBatch) -> SpoolBatch {
        let identity = cur.map(|c| c.identity).unwrap_or_default();
        let tail = cur.map(|c| c.tail).unwrap_or((0, 0));
        SpoolBatch {
            seq: 0,
            spooled_ms: 0,
            source: self.source.name.clone(),
            path: self.source.path.to_string_lossy().into_owned(),
            topic: self.source.topic.clone(),
            identity,
            end_offset: out.end_offset.unwrap_or_else(|| {
                cur.map(|c| c.read_pos - c.splitter.held() as u64)
                    .unwrap_or(0)
            }),
            tail_len: tail.0,
            tail_crc: tail.1,
            data: out.data,
            lines: out.lines,
        }
    }

    /// A position-only batch committing where reading (re)starts.
    fn checkpoint(&self, offset: u64) -> SpoolBatch {
        self.batch(LineBatch {
            end_offset: Some(offset),
            ..LineBatch::default()
        })
    }
}

/// How a tailer task is told to stop.
#[derive(Clone, Default)]
pub struct TailStop {
    /// Graceful (config reload): finish handing over what was read, then
    /// stop between steps.
    pub graceful: CancellationToken,
    /// Shutdown: also give up a batch still waiting for spool room (it was
    /// never committed, so it is read again next run).
    pub hard: CancellationToken,
}

impl TailStop {
    fn requested(&self) -> bool {
        self.graceful.is_cancelled() || self.hard.is_cancelled()
    }
}

/// How long an idle tailer waits without any wake-up before checking
/// anyway (a safety net; [`FileWatch`] normally wakes it).
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// How long a woken tailer of a busy file waits before reading, and what
/// counts as busy (woken again within this).
const WAKE_LINGER: Duration = Duration::from_millis(20);
const BUSY_WITHIN: Duration = Duration::from_millis(100);

/// The async half of a tailer: steps the file on the blocking pool and
/// sends batches to the spool writer until stopped. When idle it waits for
/// `watch` to report a change at its path.
pub async fn run(
    mut tail: FileTail,
    tx: mpsc::Sender<WriterMsg>,
    stop: TailStop,
    watch: FileWatch,
) {
    let name = tail.source.name.clone();
    let status = tail.status();
    let mut idle = IdleWait::new(tail.source.path.clone(), watch);
    while !stop.requested() {
        let joined = tokio::task::spawn_blocking(move || {
            let step = tail.step();
            (tail, step)
        })
        .await;
        let step;
        (tail, step) = match joined {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(source = %name, error = %e, "tailer step panicked; stopping this source");
                break;
            }
        };
        if !hand_over(step.batches, step.finished, step.flush, &tx, &stop, &name).await {
            break;
        }
        if !step.more {
            let within = step.draining.then_some(DRAIN_POLL);
            idle.wait(step.seen, within, &stop).await;
        }
    }
    let mut s = lock(&status);
    s.state = TailState::Stopped;
}

/// Sends one step's batches to the spool writer, in order, then the
/// rotated files it finished (after their last batches). False when the
/// tailer must stop: the writer is gone, or a hard stop gave up a batch
/// still waiting for spool room.
async fn hand_over(
    batches: Vec<SpoolBatch>,
    finished: Vec<FileIdentity>,
    flush: bool,
    tx: &mpsc::Sender<WriterMsg>,
    stop: &TailStop,
    name: &str,
) -> bool {
    let msgs = batches
        .into_iter()
        .map(WriterMsg::Batch)
        .chain(
            finished
                .into_iter()
                .map(|id| WriterMsg::Drained(name.to_string(), id)),
        )
        .chain(flush.then_some(WriterMsg::Flush));
    for m in msgs {
        tokio::select! {
            sent = tx.send(m) => if sent.is_err() {
                tracing::error!(source = %name, "spool writer is gone; stopping this source");
                return false;
            },
            _ = stop.hard.cancelled() => return false,
        }
    }
    true
}

/// An idle tailer's wait for a change at its path.
struct IdleWait {
    path: PathBuf,
    watch: FileWatch,
    wake: Arc<tokio::sync::Notify>,
    last_wake: tokio::time::Instant,
}

impl IdleWait {
    fn new(path: PathBuf, watch: FileWatch) -> IdleWait {
        IdleWait {
            path,
            watch,
            wake: Arc::new(tokio::sync::Notify::new()),
            last_wake: tokio::time::Instant::now() - BUSY_WITHIN,
        }
    }

    /// Waits until `watch` reports a change from `seen`, a stop is asked,
    /// or [`IDLE_RECHECK`] (or `within`, when shorter) passed.
    async fn wait(&mut self, seen: Option<Seen>, within: Option<Duration>, stop: &TailStop) {
        self.watch.idle(&self.path, seen, self.wake.clone());
        let woken = tokio::select! {
            _ = stop.graceful.cancelled() => false,
            _ = stop.hard.cancelled() => false,
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(within.unwrap_or(IDLE_RECHECK)) => false,
        };
        self.watch.busy(&self.path);
        if woken {
            // A file that is written continuously: let a few more lines
            // land, so one read (and one spool fsync) takes several
            // lines rather than one. The first line after a quiet spell
            // is read at once.
            if self.last_wake.elapsed() < BUSY_WITHIN {
                tokio::time::sleep(WAKE_LINGER).await;
            }
            self.last_wake = tokio::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests;
