//! drain: rotated files still being read. After a rename rotation many
//! programs keep writing to their open descriptor until `postrotate` tells
//! them to reopen the file; those late lines land in the rotated file
//! (`app.log.1`). The tailer keeps such a file open as a [`DrainingFile`]
//! and reads it beside the new file until it has been idle for the
//! source's `rotate_wait` after its end, or is deleted and read to its end
//! (Fluent Bit's `Rotate_Wait`; Filebeat keeps its harvester until the file
//! is inactive).
//!
//! Invariants:
//! - A draining file's batches carry its own identity, so the spool writer
//!   moves its own position in the source's record
//!   ([`SpoolBatch::record`]); its position leaves the record only with
//!   [`WriterMsg::Drained`](crate::spool::WriterMsg::Drained), sent after
//!   its last batch.
//! - It is finished only at its end: its held partial line goes out as a
//!   line then (nothing will complete it).
//!
//! Must never: read the file at the path (it is the current file), or hold
//! a deleted file's descriptor past its end.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Instant;

use super::{io_err, FileTail, OpenFile, TailError};
use crate::runtime::lock;
use crate::source::identity::crc_at;
use crate::source::lines::LineBatch;
use crate::spool::SpoolBatch;
use crate::store::FileIdentity;

/// A rotated file read for its late writes.
pub(super) struct DrainingFile {
    pub(super) file: OpenFile,
    /// Since when reads have found nothing new (`None` while bytes keep
    /// coming).
    idle_since: Option<Instant>,
}

impl DrainingFile {
    pub(super) fn new(file: OpenFile) -> DrainingFile {
        DrainingFile {
            file,
            idle_since: None,
        }
    }
}

/// What the draining files gave in one step.
#[derive(Default)]
pub(super) struct Drained {
    pub(super) batches: Vec<SpoolBatch>,
    /// Files finished this step, after their last batch.
    pub(super) finished: Vec<FileIdentity>,
    /// A read filled the buffer: more is probably waiting.
    pub(super) more: bool,
}

impl FileTail {
    /// Reads one buffer from each draining file, oldest first, up to the
    /// first one with a backlog (a full read); finishes those idle for
    /// `rotate_wait` after their end, deleted and read to their end, or
    /// shorter than their read position (truncated: nothing more of them
    /// can be read in order).
    ///
    /// A read error finishes nothing: the file is dropped from this run
    /// with an error logged, and its position stays in the record, so the
    /// next start tries it again.
    pub(super) fn step_draining(&mut self) -> Drained {
        let mut out = Drained::default();
        if self.draining.is_empty() {
            return out;
        }
        let mut i = 0;
        while i < self.draining.len() {
            match self.step_one_draining(i, &mut out) {
                Ok(true) => {
                    let d = self.draining.remove(i);
                    out.finished.push(d.file.identity);
                }
                // A backlog: the newer files wait until this one is at its
                // end, so a file's rest goes out before a newer file's
                // lines (the list is oldest first).
                Ok(false) if out.more => break,
                Ok(false) => i += 1,
                Err(e) => {
                    let d = self.draining.remove(i);
                    tracing::error!(source = %self.source.name, path = %d.file.opened_as.display(), error = %e,
                        "cannot read the rotated file any more; its rest is tried again at the next start");
                }
            }
        }
        self.set_draining_status();
        out
    }

    /// One read of draining file `i`. True when it is finished (its last
    /// partial line is in `out`).
    fn step_one_draining(&mut self, i: usize, out: &mut Drained) -> Result<bool, TailError> {
        let name = self.source.name.as_str();
        let wait = self.source.rotate_wait;
        let f = &mut self.draining[i].file;
        // Rewritten in place since the last look (`cp app.log app.log.1`
        // over an older copy reuses its inode): what follows the read
        // position is another file's, never this one's rest. It is
        // finished as it was.
        if let Some(why) = rewritten(f).map_err(io_err(name, &f.opened_as))? {
            return Ok(self.finish_draining(i, why, out));
        }
        let f = &mut self.draining[i].file;
        let n = f
            .file
            .read_at(&mut self.buf, f.read_pos)
            .map_err(io_err(name, &f.opened_as))?;
        if n > 0 {
            let mut lines = LineBatch::default();
            f.take(&self.buf[..n], &mut lines)
                .map_err(io_err(name, &f.opened_as))?;
            self.count_read(&lines);
            if !lines.is_empty() {
                let batch = self.batch_of(&self.draining[i].file, lines);
                out.batches.push(batch);
            }
        }
        let d = &mut self.draining[i];
        let f = &mut d.file;
        if n == self.buf.len() {
            d.idle_since = None;
            out.more = true;
            return Ok(false);
        }
        // At its end: the idle time counts from the read that reached it.
        if n > 0 {
            d.idle_since = None;
        }
        let idle = *d.idle_since.get_or_insert_with(Instant::now);
        let meta = f.file.metadata().map_err(io_err(name, &f.opened_as))?;
        let why = if meta.nlink() == 0 {
            "it was deleted and is read to its end"
        } else if idle.elapsed() >= wait {
            "it was idle for rotate_wait after its end"
        } else {
            return Ok(false);
        };
        Ok(self.finish_draining(i, why, out))
    }

    /// Finishes draining file `i` (`why`, for the log): its held partial
    /// line goes out as a line, nothing will complete it. True, for
    /// [`FileTail::step_one_draining`]'s caller to drop it.
    fn finish_draining(&mut self, i: usize, why: &str, out: &mut Drained) -> bool {
        let f = &mut self.draining[i].file;
        let mut lines = LineBatch::default();
        f.splitter.flush_partial(f.read_pos, &mut lines);
        tracing::info!(source = %self.source.name, path = %f.opened_as.display(), offset = f.read_pos,
            "finished the rotated file: {why}");
        if !lines.is_empty() {
            let batch = self.batch_of(&self.draining[i].file, lines);
            out.batches.push(batch);
        }
        true
    }

    /// The draining files, for `logcatch-ctl`.
    pub(super) fn set_draining_status(&self) {
        let files = self
            .draining
            .iter()
            .map(|d| super::DrainingStatus {
                path: d.file.opened_as.display().to_string(),
                offset: d.file.committed,
            })
            .collect();
        lock(&self.status).draining = files;
    }
}

/// Has draining file `f` been truncated below its read position, or had
/// its first bytes rewritten, since the last look? The reason, if so.
fn rewritten(f: &mut OpenFile) -> std::io::Result<Option<&'static str>> {
    let size = f.file.metadata()?.len();
    if size == f.last_size {
        return Ok(None);
    }
    f.last_size = size;
    if size < f.read_pos {
        return Ok(Some("it was truncated"));
    }
    let head = f.identity.head_len;
    if head > 0 && crc_at(&f.file, 0, u64::from(head))? != Some(f.identity.head_crc) {
        return Ok(Some(
            "its first bytes were rewritten (another file copied over it)",
        ));
    }
    Ok(None)
}
