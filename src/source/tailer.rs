//! tailer: owns following one source's file: finding it, resuming at the
//! stored offset, reading new bytes, and noticing rotation, truncation and
//! replacement. One task per source; the reading itself runs on the
//! blocking pool (`FileTail::step`).
//!
//! Invariants:
//! - The tailer never writes offsets itself. It sends batches (lines plus
//!   the offset after them) to the spool writer in file order, and the
//!   writer commits the offset only after the lines are durable
//!   (`spool` invariant 1). So a crash anywhere here re-reads, never skips.
//! - A file is identified by device, inode and a checksum of its first
//!   bytes (`FileIdentity`), and a resumed offset is trusted only if the
//!   bytes just before it still match (`tail_crc`). Anything else is a new
//!   file and is read from 0.
//! - After a rename rotation the old file is read to its end before the new
//!   one is opened, also when the rotation happened while we were down (the
//!   old file is looked for beside the path by device and inode).
//!
//! Must never: hold more than `max_line_bytes` of one line, block an async
//! worker thread on file I/O, or open anything but a regular file (a FIFO
//! would block the open).

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{SourceConfig, StartAt};
use crate::runtime::lock;
use crate::source::filewatch::{FileWatch, Seen};
use crate::source::lines::{LineBatch, LineSplitter};
use crate::spool::{SpoolBatch, WriterMsg};
use crate::store::{FileIdentity, SourceRecord, Store, StoreError};

/// How many leading bytes identify a file.
pub const HEAD_BYTES: u32 = 1024;
/// How many bytes before the committed offset are checked on resume.
pub const TAIL_BYTES: u64 = 64;
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
}

struct OpenFile {
    file: File,
    /// The path it was opened under (a rotated file's new name when found
    /// at start).
    opened_as: PathBuf,
    identity: FileIdentity,
    read_pos: u64,
    splitter: LineSplitter,
    /// Size seen at the last end-of-file check.
    last_size: u64,
    /// When the head checksum was last compared with the file.
    head_checked: std::time::Instant,
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

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> TailError + '_ {
        let path = path.to_path_buf();
        move |source| TailError::Io {
            source_name: self.source.name.clone(),
            path,
            source,
        }
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

    /// What is at the path as far as this tailer knows, for `FileWatch`.
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
                if self.last_logged.take().is_some() {
                    tracing::info!(source = %self.source.name, path = %self.source.path.display(), "source recovered");
                }
                step
            }
            Err(e) => {
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
        if self.current.is_none() {
            match self.open()? {
                Some(checkpoint) => batches.push(checkpoint),
                None => {
                    self.set_state(TailState::WaitingForFile, None);
                    return Ok(Step {
                        batches,
                        more: false,
                        seen: None,
                    });
                }
            }
        }
        let Some(cur) = self.current.as_mut() else {
            return Ok(Step {
                batches,
                more: false,
                seen: None,
            });
        };
        let asked = self.buf.len();
        let n = cur
            .file
            .read_at(&mut self.buf, cur.read_pos)
            .map_err(|source| TailError::Io {
                source_name: self.source.name.clone(),
                path: cur.opened_as.clone(),
                source,
            })?;
        if n == self.buf.len() && n < self.max_buf {
            // Catching up: read more per step next time.
            let grown = (n * 2).min(self.max_buf);
            self.buf.resize(grown, 0);
        }
        if n > 0 {
            let at = cur.read_pos;
            let mut out = LineBatch::default();
            cur.splitter.feed(&self.buf[..n], at, &mut out);
            cur.read_pos += n as u64;
            if let Some(end) = out.end_offset {
                let k = (end - at).min(TAIL_BYTES) as usize;
                let rel = (end - at) as usize;
                cur.tail = (k as u32, crc32c::crc32c(&self.buf[rel - k..rel]));
            }
            if cur.identity.head_len < HEAD_BYTES {
                let size = cur.read_pos;
                cur.identity = identity_of(&cur.file, size, cur.identity.dev, cur.identity.ino)
                    .map_err(|source| TailError::Io {
                        source_name: self.source.name.clone(),
                        path: cur.opened_as.clone(),
                        source,
                    })?;
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
            // A short read reached the end of the file: do the end-of-file
            // checks now rather than in one more step.
            let more = if n < asked {
                match self.check_at_eof()? {
                    Some(b) => {
                        batches.push(b);
                        true
                    }
                    None => self.current.is_none(),
                }
            } else {
                true
            };
            return Ok(Step {
                batches,
                more,
                seen: None,
            });
        }
        // End of file: was it truncated, replaced, or rotated away?
        if let Some(b) = self.check_at_eof()? {
            batches.push(b);
            return Ok(Step {
                batches,
                more: true,
                seen: None,
            });
        }
        Ok(Step {
            batches,
            more: self.current.is_none(),
            seen: None,
        })
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
        check_regular(&self.source.name, &path, &meta)?;
        let record = self
            .store
            .source(&self.source.name)
            .map_err(|e| self.store_err(e))?
            .filter(|r| Path::new(&r.path) == path);

        let file = File::open(&path).map_err(self.io(&path))?;
        let meta = file.metadata().map_err(self.io(&path))?;
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());

        let (file, opened_as, start, tail) = match record {
            _ if self.rotated => (file, path.clone(), 0, (0, 0)),
            None => {
                let start = match self.source.start_at {
                    StartAt::Beginning => 0,
                    StartAt::End => size,
                };
                (file, path.clone(), start, (0, 0))
            }
            Some(rec) if rec.identity.dev == dev && rec.identity.ino == ino => {
                match verify(&file, size, &rec).map_err(self.io(&path))? {
                    Verdict::Same => (file, path.clone(), rec.offset, (rec.tail_len, rec.tail_crc)),
                    Verdict::Changed(why) => {
                        tracing::warn!(source = %self.source.name, path = %path.display(), offset = rec.offset,
                            "{why} since the last run; reading it from the start");
                        (file, path.clone(), 0, (0, 0))
                    }
                }
            }
            Some(rec) => match find_rotated(&path, &rec).map_err(self.io(&path))? {
                Some((old_path, old_file)) => {
                    tracing::info!(source = %self.source.name, rotated_to = %old_path.display(), offset = rec.offset,
                        "the file was rotated while logcatch was stopped; finishing the old file first");
                    (old_file, old_path, rec.offset, (rec.tail_len, rec.tail_crc))
                }
                None => {
                    tracing::warn!(source = %self.source.name, path = %path.display(),
                        old_device = rec.identity.dev, old_inode = rec.identity.ino, old_offset = rec.offset,
                        "the previously read file is gone (rotated away or deleted while logcatch was stopped); \
                         lines written to it after the stored offset cannot be read; starting the new file from 0");
                    (file, path.clone(), 0, (0, 0))
                }
            },
        };
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
            splitter: LineSplitter::new(self.source.max_line_bytes, self.source.long_lines, start),
            last_size: meta.len(),
            head_checked: std::time::Instant::now(),
            tail,
        });
        self.set_state(TailState::Tailing, None);
        Ok(Some(self.checkpoint(start)))
    }

    /// At end of file: detects truncation, in-place replacement, and
    /// rotation. Returns a batch to commit when the position changed.
    fn check_at_eof(&mut self) -> Result<Option<SpoolBatch>, TailError> {
        let name = self.source.name.clone();
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        let opened_as = cur.opened_as.clone();
        let io = |source| TailError::Io {
            source_name: name.clone(),
            path: opened_as.clone(),
            source,
        };
        let size = cur.file.metadata().map_err(io)?.len();
        if size != cur.last_size {
            cur.last_size = size;
            // Rereading the head on every growth would cost a read per
            // wake-up of a busy file: once a second is enough to catch a
            // truncate-and-rewrite that outgrew our offset in between.
            let head_due = cur.head_checked.elapsed() >= HEAD_RECHECK;
            let changed = if size < cur.read_pos {
                Some("the file was truncated (copytruncate?)")
            } else if head_due && cur.identity.head_len > 0 && {
                cur.head_checked = std::time::Instant::now();
                crc_at(&cur.file, 0, cur.identity.head_len as u64).map_err(io)?
                    != Some(cur.identity.head_crc)
            } {
                Some("the file's first bytes were rewritten")
            } else {
                None
            };
            if let Some(why) = changed {
                tracing::warn!(source = %name, path = %cur.opened_as.display(), offset = cur.read_pos, size,
                    "{why}; reading it again from the start");
                cur.read_pos = 0;
                cur.splitter.reset(0);
                cur.tail = (0, 0);
                cur.identity =
                    identity_of(&cur.file, size, cur.identity.dev, cur.identity.ino).map_err(io)?;
                return Ok(Some(self.checkpoint(0)));
            }
        }
        // Rotation: the path now names another file (or, while draining a
        // file found rotated at start, any file).
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
        if m.dev() == cur.identity.dev && m.ino() == cur.identity.ino {
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

fn check_regular(name: &str, path: &Path, meta: &std::fs::Metadata) -> Result<(), TailError> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        return Ok(());
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a device or other special file"
    };
    Err(TailError::NotAFile {
        source_name: name.to_string(),
        path: path.to_path_buf(),
        kind,
    })
}

/// crc32c of `len` bytes at `at`, or `None` if the file is shorter.
fn crc_at(file: &File, at: u64, len: u64) -> std::io::Result<Option<u32>> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0usize;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], at + got as u64)?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    Ok(Some(crc32c::crc32c(&buf)))
}

fn identity_of(file: &File, size: u64, dev: u64, ino: u64) -> std::io::Result<FileIdentity> {
    let want = size.min(HEAD_BYTES as u64);
    let (head_len, head_crc) = match crc_at(file, 0, want)? {
        Some(crc) => (want as u32, crc),
        None => (0, 0), // shrank under us; the next check corrects it
    };
    Ok(FileIdentity {
        dev,
        ino,
        head_len,
        head_crc,
    })
}

enum Verdict {
    Same,
    Changed(&'static str),
}

/// Is the open file still the one `rec` describes, unchanged up to its
/// offset?
fn verify(file: &File, size: u64, rec: &SourceRecord) -> std::io::Result<Verdict> {
    if size < rec.offset {
        return Ok(Verdict::Changed(
            "the file is shorter than the stored offset (truncated)",
        ));
    }
    if rec.identity.head_len > 0
        && crc_at(file, 0, rec.identity.head_len as u64)? != Some(rec.identity.head_crc)
    {
        return Ok(Verdict::Changed(
            "the file's first bytes changed (a new file on a reused inode, or rewritten)",
        ));
    }
    if rec.tail_len > 0
        && crc_at(file, rec.offset - rec.tail_len as u64, rec.tail_len as u64)?
            != Some(rec.tail_crc)
    {
        return Ok(Verdict::Changed(
            "the bytes before the stored offset changed (the file was rewritten)",
        ));
    }
    Ok(Verdict::Same)
}

/// Looks beside `path` for the file `rec` describes (renamed by rotation).
fn find_rotated(path: &Path, rec: &SourceRecord) -> std::io::Result<Option<(PathBuf, File)>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file()
            || meta.dev() != rec.identity.dev
            || meta.ino() != rec.identity.ino
        {
            continue;
        }
        let file = File::open(entry.path())?;
        if let Verdict::Same = verify(&file, meta.len(), rec)? {
            return Ok(Some((entry.path(), file)));
        }
    }
    Ok(None)
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
/// anyway (a safety net; `FileWatch` normally wakes it).
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
    let path = tail.source.path.clone();
    let status = tail.status();
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut last_wake = tokio::time::Instant::now() - BUSY_WITHIN;
    'outer: loop {
        if stop.requested() {
            break;
        }
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
        for b in step.batches {
            tokio::select! {
                sent = tx.send(WriterMsg::Batch(b)) => if sent.is_err() {
                    tracing::error!(source = %name, "spool writer is gone; stopping this source");
                    break 'outer;
                },
                _ = stop.hard.cancelled() => break 'outer,
            }
        }
        if !step.more {
            watch.idle(&path, step.seen, wake.clone());
            let woken = tokio::select! {
                _ = stop.graceful.cancelled() => false,
                _ = stop.hard.cancelled() => false,
                _ = wake.notified() => true,
                _ = tokio::time::sleep(IDLE_RECHECK) => false,
            };
            watch.busy(&path);
            if woken {
                // A file that is written continuously: let a few more lines
                // land, so one read (and one spool fsync) takes several
                // lines rather than one. The first line after a quiet spell
                // is read at once.
                if last_wake.elapsed() < BUSY_WITHIN {
                    tokio::time::sleep(WAKE_LINGER).await;
                }
                last_wake = tokio::time::Instant::now();
            }
        }
    }
    let mut s = lock(&status);
    s.state = TailState::Stopped;
}

/// Where `logcatch-ctl reset` moves a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetTo {
    Beginning,
    End,
    #[serde(untagged)]
    Offset(u64),
}

impl std::str::FromStr for ResetTo {
    type Err = String;
    fn from_str(s: &str) -> Result<ResetTo, String> {
        match s {
            "beginning" => Ok(ResetTo::Beginning),
            "end" => Ok(ResetTo::End),
            n => n
                .parse()
                .map(ResetTo::Offset)
                .map_err(|_| format!("`{s}` is not `beginning`, `end` or a byte offset")),
        }
    }
}

/// The record that makes `source`'s tailer start at `to` in the file now
/// at its path. An explicit offset must not be past the end of the file;
/// the tailer takes it as given (no check of the bytes before it).
pub fn reset_record(
    source: &SourceConfig,
    prev: Option<&SourceRecord>,
    to: ResetTo,
) -> Result<SourceRecord, String> {
    let path = &source.path;
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let offset = match to {
        ResetTo::Beginning => 0,
        ResetTo::End => meta.len(),
        ResetTo::Offset(n) if n <= meta.len() => n,
        ResetTo::Offset(n) => {
            return Err(format!(
                "offset {n} is past the end of {} ({} bytes)",
                path.display(),
                meta.len()
            ))
        }
    };
    let identity = identity_of(&file, meta.len(), meta.dev(), meta.ino())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SourceRecord {
        path: path.to_string_lossy().into_owned(),
        identity,
        offset,
        tail_len: 0,
        tail_crc: 0,
        lines: prev.map(|p| p.lines).unwrap_or(0),
        bytes: prev.map(|p| p.bytes).unwrap_or(0),
        updated_ms: crate::runtime::now_ms(),
        seq: 0,
    })
}
