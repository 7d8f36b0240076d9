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
//!   checked by [`verify`]). Anything else is a new file and is
//!   read from 0.
//! - After a rename rotation the old file is read to its end before the new
//!   one is opened, also when the rotation happened while we were down (the
//!   old file is looked for beside the path by device and inode:
//!   [`find_rotated`]).
//! - After a copytruncate (the file shrank below the read position, or its
//!   first bytes changed) logrotate's copy is finished from the read
//!   position before the truncated file is read again from 0, also when
//!   the truncation happened while we were down ([`find_copy`]). Without a
//!   copy the possible gap is logged and counted
//!   ([`TailStatus::truncation_gaps`]), never passed over silently.
//!
//! Must never: hold more than `max_line_bytes` of one line, block an async
//! worker thread on file I/O, or open anything but a regular file (a FIFO
//! would block the open).
//!
//! Known limits (what the in-process tests' model leaves out, see
//! `tailer/tests.rs`): lines written to a rotated file after the tailer
//! moved to the new one are not read; lines a copytruncate left only in a
//! copy that is gone (deleted or compressed), or in the copy of a second
//! copytruncate that came before the tailer finished the first copy (for
//! example two while logcatch was stopped), are not read; a file of 1 KiB
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

use crate::config::{SourceConfig, StartAt};
use crate::runtime::{lock, Outage};
use crate::source::copies::{find_copy, CopyWanted, FoundCopy};
use crate::source::filewatch::{FileWatch, Seen};
use crate::source::identity::{
    crc_at, find_rotated, identity_of, not_a_regular_file, tail_check, verify, FileIdentity,
    Verdict, HEAD_BYTES,
};
use crate::source::lines::{LineBatch, LineSplitter};
use crate::spool::{SpoolBatch, WriterMsg};
use crate::store::{SourceRecord, Store, StoreError};

/// The read buffer of an idle source.
const MIN_READ_BUFFER: usize = 16 << 10;
/// How often a growing file's first bytes are compared with its identity.
const HEAD_RECHECK: Duration = Duration::from_secs(1);

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

/// Where [`FileTail::open`] starts reading, and in which file.
struct StartPoint {
    file: File,
    opened_as: PathBuf,
    offset: u64,
    tail: (u32, u32),
}

/// The blocking half of a tailer: one source's file state.
pub struct FileTail {
    source: SourceConfig,
    store: Store,
    current: Option<OpenFile>,
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
}

impl FileTail {
    pub fn new(source: SourceConfig, store: Store, read_buffer: usize) -> FileTail {
        FileTail {
            source,
            store,
            current: None,
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
        let mut step = self.step_logged();
        if !step.more {
            step.seen = self.idle_seen();
            if self.buf.len() > MIN_READ_BUFFER {
                self.buf = vec![0u8; MIN_READ_BUFFER];
            }
        }
        step
    }

    /// What is at the path as far as this tailer knows, for [`FileWatch`].
    fn idle_seen(&self) -> Option<Seen> {
        match &self.current {
            Some(c) if c.opened_as == self.source.path => Some(Seen {
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
                Step {
                    batches: Vec::new(),
                    more: false,
                    seen: None,
                }
            }
        }
    }

    fn step_inner(&mut self) -> Result<Step, TailError> {
        let mut batches = Vec::new();
        let idle = |batches| Step {
            batches,
            more: false,
            seen: None,
        };
        if self.current.is_none() {
            match self.open()? {
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
            batches,
            more,
            seen: None,
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
        let at = cur.read_pos;
        let mut out = LineBatch::default();
        cur.splitter.feed(&self.buf[..n], at, &mut out);
        cur.read_pos += n as u64;
        if let Some(end) = out.end_offset {
            cur.tail = tail_check(&self.buf[..(end - at) as usize]);
            cur.committed = end;
        }
        if cur.identity.head_len < HEAD_BYTES {
            let size = cur.read_pos;
            cur.identity = identity_of(&cur.file, size, cur.identity.dev, cur.identity.ino)
                .map_err(io_err(&self.source.name, &cur.opened_as))?;
        }
        {
            let mut s = lock(&self.status);
            s.lines_read += out.lines.len() as u64;
            s.bytes_read += out.data.len() as u64;
            s.last_read_ms = crate::runtime::now_ms();
        }
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

    fn batch(&self, out: LineBatch) -> SpoolBatch {
        let cur = self.current.as_ref();
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

    /// Opens the source's file and decides where to start. Returns the
    /// checkpoint to commit, or `None` if there is no file yet.
    fn open(&mut self) -> Result<Option<SpoolBatch>, TailError> {
        let path = self.source.path.clone();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path)(e)),
        };
        if let Some(kind) = not_a_regular_file(&meta) {
            return Err(TailError::NotAFile {
                source_name: self.source.name.clone(),
                path,
                kind,
            });
        }
        let record = self
            .store
            .source(&self.source.name)
            .map_err(|e| self.store_err(e))?
            .filter(|r| Path::new(&r.path) == path);

        let file = File::open(&path).map_err(self.io(&path))?;
        let StartPoint {
            file,
            opened_as,
            offset: start,
            tail,
        } = self.start_point(file, &path, record)?;
        self.rotated = false;
        let meta = file.metadata().map_err(self.io(&opened_as))?;
        let identity =
            identity_of(&file, meta.len(), meta.dev(), meta.ino()).map_err(self.io(&opened_as))?;
        tracing::info!(source = %self.source.name, path = %opened_as.display(), offset = start,
            device = identity.dev, inode = identity.ino, "tailing");
        self.current = Some(OpenFile {
            file,
            opened_as,
            identity,
            read_pos: start,
            committed: start,
            splitter: LineSplitter::new(self.source.max_line_bytes, self.source.long_lines, start),
            last_size: meta.len(),
            head_checked: std::time::Instant::now(),
            tail,
        });
        self.set_state(TailState::Tailing, None);
        Ok(Some(self.checkpoint(start)))
    }

    /// Where to start in `file` (just opened at `path`), given the stored
    /// `record` of this path: its offset if it is the same file, unchanged;
    /// the old file's offset if the file was rotated while we were down
    /// (that file is read first); otherwise 0 (or the end, for a source
    /// never read, with `start_at: end`).
    fn start_point(
        &self,
        file: File,
        path: &Path,
        record: Option<SourceRecord>,
    ) -> Result<StartPoint, TailError> {
        let meta = file.metadata().map_err(self.io(path))?;
        let from = |file, offset, tail| StartPoint {
            file,
            opened_as: path.to_path_buf(),
            offset,
            tail,
        };
        let start = match record {
            _ if self.rotated => from(file, 0, (0, 0)),
            None => {
                let start = match self.source.start_at {
                    StartAt::Beginning => 0,
                    StartAt::End => meta.len(),
                };
                from(file, start, (0, 0))
            }
            Some(rec) if rec.identity.is_inode_of(&meta) => {
                match verify(&file, meta.len(), &rec).map_err(self.io(path))? {
                    Verdict::Same => from(file, rec.offset, (rec.tail_len, rec.tail_crc)),
                    Verdict::Changed(why) => self.changed_while_down(file, path, &rec, why)?,
                }
            }
            Some(rec) => match find_rotated(path, &rec).map_err(self.io(path))? {
                Some((old_path, old_file)) => {
                    tracing::info!(source = %self.source.name, rotated_to = %old_path.display(), offset = rec.offset,
                        "the file was rotated while logcatch was stopped; finishing the old file first");
                    StartPoint {
                        file: old_file,
                        opened_as: old_path,
                        offset: rec.offset,
                        tail: (rec.tail_len, rec.tail_crc),
                    }
                }
                None => {
                    tracing::warn!(source = %self.source.name, path = %path.display(),
                        old_device = rec.identity.dev, old_inode = rec.identity.ino, old_offset = rec.offset,
                        "the previously read file is gone (rotated away or deleted while logcatch was stopped); \
                         lines written to it after the stored offset cannot be read; starting the new file from 0");
                    // Counted like a missing copy: a possible gap is never
                    // passed over silently.
                    self.count_gap();
                    from(file, 0, (0, 0))
                }
            },
        };
        Ok(start)
    }

    /// The file at `path` is the one `rec` describes, but it changed while
    /// logcatch was stopped (`why`): truncated by a copytruncate, or
    /// rewritten. The rest after the stored offset is read from logrotate's
    /// copy when there is one, then the file from 0.
    ///
    /// Why no line is skipped or read twice: the copy's bytes up to
    /// `rec.offset` are the bytes already committed ([`find_copy`] checks
    /// its head and the tail check before the offset), so the copy resumes
    /// exactly where the record stopped. Its batches carry the copy's
    /// identity: a crash while draining it leaves a record naming the copy,
    /// which the next start finds beside the path by device and inode
    /// ([`find_rotated`]) and resumes, and the truncated file is read from 0
    /// only after the copy is finished. The truncated file's bytes were all
    /// written after the truncation, so none of them is in the copy.
    fn changed_while_down(
        &self,
        file: File,
        path: &Path,
        rec: &SourceRecord,
        why: &str,
    ) -> Result<StartPoint, TailError> {
        let name = &self.source.name;
        match find_copy(path, &CopyWanted::of_record(rec)).map_err(self.io(path))? {
            Some(copy) => {
                tracing::info!(source = %name, path = %path.display(), copy = %copy.path.display(), offset = rec.offset,
                    "{why} since the last run; reading the rest from logrotate's copy first, then the file from the start");
                Ok(StartPoint {
                    file: copy.file,
                    opened_as: copy.path,
                    offset: rec.offset,
                    tail: (rec.tail_len, rec.tail_crc),
                })
            }
            None => {
                self.count_gap();
                tracing::warn!(source = %name, path = %path.display(), offset = rec.offset,
                    "{why} since the last run, and no copy of it was found beside it: lines written after offset {} \
                     before that may be lost (a gap); reading it from the start", rec.offset);
                Ok(StartPoint {
                    file,
                    opened_as: path.to_path_buf(),
                    offset: 0,
                    tail: (0, 0),
                })
            }
        }
    }

    fn count_gap(&self) {
        lock(&self.status).truncation_gaps += 1;
    }

    /// At end of file: detects truncation, in-place replacement, and
    /// rotation. Returns a batch to commit when the position changed.
    fn check_at_eof(&mut self) -> Result<Option<SpoolBatch>, TailError> {
        if self.current.is_none() {
            return Ok(None);
        }
        if let Some(restart) = self.check_rewritten()? {
            return Ok(Some(restart));
        }
        self.check_rotated()
    }

    /// Has the open file shrunk below the read position, or had its first
    /// bytes rewritten, since the last look? Then the rest is read from
    /// logrotate's copy if there is one ([`FileTail::follow_copy`]), and the
    /// file is read again from 0 (after the copy, or at once when there is
    /// none: a possible gap, logged and counted). Returns the checkpoint of
    /// the new position.
    fn check_rewritten(&mut self) -> Result<Option<SpoolBatch>, TailError> {
        let name = self.source.name.as_str();
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        let size = cur
            .file
            .metadata()
            .map_err(io_err(name, &cur.opened_as))?
            .len();
        if size == cur.last_size {
            return Ok(None);
        }
        cur.last_size = size;
        // Rereading the head on every growth would cost a read per
        // wake-up of a busy file: once a second is enough to catch a
        // truncate-and-rewrite that outgrew our offset in between.
        // A file shorter than its head (under 1 KiB) is checked at every
        // look: its head is extended from the file after each read, so a
        // rewrite must be caught before it.
        let head_due =
            cur.head_checked.elapsed() >= HEAD_RECHECK || cur.identity.head_len < HEAD_BYTES;
        let changed = if size < cur.read_pos {
            Some("the file was truncated (copytruncate?)")
        } else if head_due && cur.identity.head_len > 0 && {
            cur.head_checked = std::time::Instant::now();
            crc_at(&cur.file, 0, cur.identity.head_len as u64)
                .map_err(io_err(name, &cur.opened_as))?
                != Some(cur.identity.head_crc)
        } {
            Some("the file's first bytes were rewritten")
        } else {
            None
        };
        let Some(why) = changed else {
            return Ok(None);
        };
        let wanted = CopyWanted {
            identity: cur.identity,
            committed: cur.committed,
            tail: cur.tail,
            read_pos: cur.read_pos,
        };
        match find_copy(&self.source.path, &wanted) {
            Ok(Some(copy)) => return self.follow_copy(copy, why),
            Ok(None) => {}
            // Not a stall: the truncated file is read again from 0, and the
            // gap is reported below like a missing copy.
            Err(e) => {
                tracing::warn!(source = %name, path = %self.source.path.display(), error = %e,
                "cannot look for logrotate's copy beside the file")
            }
        }
        tracing::warn!(source = %name, path = %cur.opened_as.display(), offset = cur.read_pos, size,
            "{why}, and no copy of it was found beside it: lines written between offset {} and the truncation \
             may be lost (a gap); reading it again from the start", cur.read_pos);
        lock(&self.status).truncation_gaps += 1;
        cur.read_pos = 0;
        cur.committed = 0;
        cur.splitter.reset(0);
        cur.tail = (0, 0);
        cur.identity = identity_of(&cur.file, size, cur.identity.dev, cur.identity.ino)
            .map_err(io_err(name, &cur.opened_as))?;
        Ok(Some(self.checkpoint(0)))
    }

    /// Moves the open file to logrotate's `copy`, at the same read position
    /// and keeping a held partial line, and returns the checkpoint that
    /// commits the copy's identity at the committed offset. The copy is then
    /// drained like a rotated file: [`FileTail::check_rotated`] finishes it
    /// at its end (the path names another inode) and the truncated file is
    /// opened from 0.
    ///
    /// Why no line is skipped or read twice: [`find_copy`] accepted the copy
    /// only if it has the open file's head, the tail check before the
    /// committed offset, and at least `read_pos` bytes, so its bytes up to
    /// `read_pos` are the ones already read and the bytes after it are the
    /// unread rest up to the copy (lines written between the copy and the
    /// truncation are in neither file: logrotate itself loses them). The
    /// truncated file is read from 0 only after the copy, and everything in
    /// it was written after the truncation. A crash before the checkpoint
    /// commits leaves the record on the truncated file, which the next
    /// start finds changed and resolves to the copy again
    /// ([`FileTail::changed_while_down`]); a crash after it leaves a record
    /// naming the copy, found by device and inode ([`find_rotated`]).
    fn follow_copy(&mut self, copy: FoundCopy, why: &str) -> Result<Option<SpoolBatch>, TailError> {
        let name = self.source.name.as_str();
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        let identity = identity_of(&copy.file, copy.size, copy.dev, copy.ino)
            .map_err(io_err(name, &copy.path))?;
        tracing::info!(source = %name, path = %cur.opened_as.display(), copy = %copy.path.display(), offset = cur.read_pos,
            "{why}; reading the rest from logrotate's copy first, then the file from the start");
        cur.file = copy.file;
        cur.opened_as = copy.path;
        cur.identity = identity;
        cur.last_size = copy.size;
        cur.head_checked = std::time::Instant::now();
        let committed = cur.committed;
        self.set_state(TailState::DrainingRotated, None);
        Ok(Some(self.checkpoint(committed)))
    }

    /// Does the path now name another file (or, while draining a file
    /// found rotated at start, any file)? Then the open file, read to its
    /// end, is finished: its last partial line is returned as a line and
    /// the next step opens the new file from 0.
    fn check_rotated(&mut self) -> Result<Option<SpoolBatch>, TailError> {
        let at_path = match std::fs::metadata(&self.source.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io(&self.source.path)(e)),
        };
        let Some(m) = at_path else {
            return Ok(None); // deleted or mid-rotation: keep the old file open
        };
        let cur = match self.current.as_mut() {
            Some(c) => c,
            None => return Ok(None),
        };
        if cur.identity.is_inode_of(&m) {
            return Ok(None);
        }
        // Rotated. Bytes may have reached the old file after the read that
        // hit its end: read those first.
        let old_size = cur.file.metadata().map(|m| m.len()).unwrap_or(0);
        if old_size > cur.read_pos {
            return Ok(None);
        }
        // The old file is finished: we just read to its end. Its last line
        // will never get a newline, so it is complete as it is.
        let mut out = LineBatch::default();
        cur.splitter.flush_partial(cur.read_pos, &mut out);
        let batch = (!out.is_empty()).then(|| self.batch(out));
        tracing::info!(source = %self.source.name, old = %self.current.as_ref().map(|c| c.opened_as.display().to_string()).unwrap_or_default(),
            "rotation detected; moving to the new file at {}", self.source.path.display());
        self.current = None;
        self.rotated = true;
        Ok(batch)
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
        if !hand_over(step.batches, &tx, &stop, &name).await {
            break;
        }
        if !step.more {
            idle.wait(step.seen, &stop).await;
        }
    }
    let mut s = lock(&status);
    s.state = TailState::Stopped;
}

/// Sends one step's batches to the spool writer, in order. False when the
/// tailer must stop: the writer is gone, or a hard stop gave up a batch
/// still waiting for spool room.
async fn hand_over(
    batches: Vec<SpoolBatch>,
    tx: &mpsc::Sender<WriterMsg>,
    stop: &TailStop,
    name: &str,
) -> bool {
    for b in batches {
        tokio::select! {
            sent = tx.send(WriterMsg::Batch(b)) => if sent.is_err() {
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
    /// or [`IDLE_RECHECK`] passed.
    async fn wait(&mut self, seen: Option<Seen>, stop: &TailStop) {
        self.watch.idle(&self.path, seen, self.wake.clone());
        let woken = tokio::select! {
            _ = stop.graceful.cancelled() => false,
            _ = stop.hard.cancelled() => false,
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(IDLE_RECHECK) => false,
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
