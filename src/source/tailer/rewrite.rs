//! rewrite: what a tailer checks at every look at its open file: was it
//! truncated or rewritten in place (copytruncate: read the rest from
//! logrotate's copy, [`FileTail::follow_copy`]), or rotated away (the path
//! names another file: drain it, [`FileTail::check_rotated`])?
//!
//! Invariants: a truncation is never read past: the rest comes from the
//! copy, or the possible gap is logged and counted; a rotated file keeps
//! its read position and held partial line as it becomes a draining file.
//!
//! Must never: read a new generation's bytes at the old generation's
//! position (the check runs before every read).

use super::drain::DrainingFile;
use super::{io_err, FileTail, TailError, TailState, HEAD_RECHECK};
use crate::runtime::lock;
use crate::source::copies::{find_copy, CopyWanted, FoundCopy};
use crate::source::identity::{crc_at, current_name, identity_of, HEAD_BYTES};
use crate::spool::SpoolBatch;

impl FileTail {
    /// At end of file: detects truncation, in-place replacement, and
    /// rotation. Returns a batch to commit when the position changed.
    pub(super) fn check_at_eof(&mut self) -> Result<Option<SpoolBatch>, TailError> {
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
    pub(super) fn check_rewritten(&mut self) -> Result<Option<SpoolBatch>, TailError> {
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
    /// naming the copy, found by device and inode ([`find_rotated`](crate::source::identity::find_rotated)).
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

    /// Does the path now name another file (or, while reading logrotate's
    /// copy, any file)? Then the open file, read to its end, becomes a
    /// draining file ([`FileTail::step_draining`] reads its late writes
    /// until it is idle for `rotate_wait` or deleted, keeping a held
    /// partial line for them to finish) and the next step opens the new
    /// file from 0.
    ///
    /// Why nothing is read twice or skipped: the open file keeps its read
    /// position and its held partial line as it moves, and its position
    /// stays in the source's record as a draining file
    /// ([`SpoolBatch::record`]) once the new file's first checkpoint
    /// commits, so a restart resumes both.
    fn check_rotated(&mut self) -> Result<Option<SpoolBatch>, TailError> {
        let at_path = match std::fs::metadata(&self.source.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io(&self.source.path)(e)),
        };
        let Some(m) = at_path else {
            // Renamed away (mid-rotation): kept open until the path names a
            // new file. Deleted (no name left): drained like a rotated
            // file, so it is read to its end and then let go (Filebeat's
            // `close_removed`), not held open for good; the tailer then
            // waits for a file at the path.
            let deleted = self.current.as_ref().is_some_and(|c| {
                c.file
                    .metadata()
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 0)
            });
            if deleted {
                self.move_to_draining();
            }
            return Ok(None);
        };
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
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
        self.move_to_draining();
        Ok(None)
    }

    /// Called while older rotated files have a backlog and the file at the
    /// path is not read: has the path moved on to another file (or is there
    /// a file at it and none open)? Then the open file becomes a draining
    /// file at once, its unread rest included (drained after the older
    /// ones), and true tells the step to open the new file, whose
    /// checkpoint names it in the record. Noticing a rotation only once the
    /// backlog is gone would leave a generation written meanwhile that no
    /// position names: a second rotation while logcatch is stopped would
    /// then hide it.
    pub(super) fn rotated_during_backlog(&mut self) -> bool {
        let Ok(m) = std::fs::metadata(&self.source.path) else {
            return false;
        };
        match &self.current {
            None => true,
            Some(cur) if cur.identity.is_inode_of(&m) => false,
            Some(_) => {
                self.move_to_draining();
                true
            }
        }
    }

    /// The open file becomes a draining file (keeping its read position and
    /// held partial line); the next open reads the new file from 0.
    fn move_to_draining(&mut self) {
        let Some(mut old) = self.current.take() else {
            return;
        };
        // Its new name, for the logs and `logcatch-ctl` (one listing of
        // the folder per rotation).
        if let Some(name) = current_name(&self.source.path, &old.identity) {
            old.opened_as = name;
        }
        tracing::info!(source = %self.source.name, old = %old.opened_as.display(), rotate_wait = ?self.source.rotate_wait,
            "rotation detected; moving to the new file at {} and draining the old one", self.source.path.display());
        self.draining.push(DrainingFile::new(old));
        self.set_draining_status();
        self.rotated = true;
    }
}
