//! copies: owns finding logrotate's copy of a file that was truncated in
//! place (`copytruncate`). logrotate copies `app.log` to `app.log.1` (or
//! `app.log-20261203` with `dateext`, or any other name in the same
//! directory) and then truncates `app.log` to 0: the lines between the
//! tailer's position and the truncation then exist only in the copy. The
//! tailer asks [`find_copy`] for that copy, finishes it from its own
//! position, and only then reads the truncated file again from 0.
//!
//! Invariants:
//! - A copy is recognised by content, never by name: a regular file beside
//!   the source's path, not the path itself and not the truncated file's
//!   own inode, whose first bytes have the truncated file's head checksum
//!   ([`FileIdentity::head_crc`]), that reaches at least the position the
//!   tailer read to, and whose bytes just before the committed offset have
//!   the committed tail check. All of it is [`verify`]'s test of a stored
//!   record, applied to another inode. So the copy's bytes up to the read
//!   position are the bytes the tailer already read from the original,
//!   and continuing in the copy at that position reads every line once.
//! - Of several matches the newest (by modification time) is used: that
//!   is the copy logrotate made just before the truncation.
//! - A file whose identity covers no bytes (`head_len` 0: nothing was read
//!   of it yet) has no copy: every file would match an empty head.
//!
//! Must never: open anything but a regular file (see
//! [`not_a_regular_file`](crate::source::identity::not_a_regular_file)),
//! or accept a candidate on its name or device and inode alone.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::source::identity::{folder_of, verify, FileIdentity, Verdict};
use crate::store::SourceRecord;

/// What a copy must match: the truncated file's identity, the committed
/// offset and the tail check of the bytes before it, and how far the
/// tailer read (a held partial line lies between the committed offset and
/// the read position).
#[derive(Debug, Clone, Copy)]
pub struct CopyWanted {
    pub identity: FileIdentity,
    pub committed: u64,
    /// (length, crc32c) of the bytes just before `committed`.
    pub tail: (u32, u32),
    pub read_pos: u64,
}

impl CopyWanted {
    /// What a copy of the file a stored record describes must match: the
    /// record's offset is both the committed and the read position (a
    /// restarted tailer holds nothing).
    pub fn of_record(rec: &SourceRecord) -> CopyWanted {
        CopyWanted {
            identity: rec.identity,
            committed: rec.offset,
            tail: (rec.tail_len, rec.tail_crc),
            read_pos: rec.offset,
        }
    }

    /// The record [`verify`] checks a candidate against.
    fn as_record(&self) -> SourceRecord {
        SourceRecord {
            path: String::new(),
            identity: self.identity,
            offset: self.committed,
            tail_len: self.tail.0,
            tail_crc: self.tail.1,
            lines: 0,
            bytes: 0,
            updated_ms: 0,
            seq: 0,
            draining: Vec::new(),
            finished: Vec::new(),
        }
    }
}

/// logrotate's copy, found and open.
#[derive(Debug)]
pub struct FoundCopy {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

/// Looks beside `path` for a copy of the truncated file `wanted`
/// describes (module doc: what matches). Returns the newest match. Only a
/// folder that cannot be listed is an error (the caller counts it as a
/// gap); a candidate that cannot be read is not the copy, and is passed.
pub fn find_copy(path: &Path, wanted: &CopyWanted) -> std::io::Result<Option<FoundCopy>> {
    if wanted.identity.head_len == 0 {
        return Ok(None);
    }
    let dir = folder_of(path);
    let rec = wanted.as_record();
    let mut best: Option<(SystemTime, FoundCopy)> = None;
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let candidate = entry.path();
        // lstat: a symlink is not followed, a FIFO is never opened.
        let Ok(meta) = entry.metadata() else { continue };
        if candidate == path
            || !meta.file_type().is_file()
            || wanted.identity.is_inode_of(&meta)
            || meta.len() < wanted.read_pos
        {
            continue;
        }
        // Gone or unreadable since the listing: not the copy we can use.
        let Ok(file) = File::open(&candidate) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        if !meta.file_type().is_file() || meta.len() < wanted.read_pos {
            continue;
        }
        if !matches!(verify(&file, meta.len(), &rec), Ok(Verdict::Same)) {
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_some_and(|(t, _)| *t >= mtime) {
            continue;
        }
        let found = FoundCopy {
            path: candidate,
            size: meta.len(),
            dev: meta.dev(),
            ino: meta.ino(),
            file,
        };
        best = Some((mtime, found));
    }
    Ok(best.map(|(_, found)| found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::identity::{identity_of, tail_check};
    use std::time::Duration;

    /// What the tailer knows after reading `content` up to `read_pos`,
    /// with its last line end at `committed`.
    fn wanted(path: &Path, content: &[u8], committed: u64, read_pos: u64) -> CopyWanted {
        std::fs::write(path, content).unwrap();
        let file = File::open(path).unwrap();
        let meta = file.metadata().unwrap();
        let identity = identity_of(&file, read_pos, meta.dev(), meta.ino()).unwrap();
        CopyWanted {
            identity,
            committed,
            tail: tail_check(&content[..committed as usize]),
            read_pos,
        }
    }

    fn set_mtime(path: &Path, ago: Duration) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - ago).unwrap();
    }

    #[test]
    fn the_newest_copy_with_the_head_and_the_tail_is_found_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let content = b"first line\nsecond line\nthird";
        let w = wanted(&path, content, 23, 28);
        // logrotate: copy, then truncate.
        std::fs::write(dir.path().join("app.log-20261203"), content).unwrap();
        std::fs::write(dir.path().join("app.log.2"), content).unwrap();
        set_mtime(&dir.path().join("app.log.2"), Duration::from_secs(60));
        std::fs::write(&path, b"").unwrap();
        let found = find_copy(&path, &w).unwrap().expect("a copy");
        assert_eq!(found.path, dir.path().join("app.log-20261203"));
        assert_eq!(found.size, content.len() as u64);
    }

    #[test]
    fn a_copy_shorter_than_the_read_position_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let content = b"first line\nsecond line\n";
        let w = wanted(&path, content, 23, 23);
        // Same head, but it ends before what was read.
        std::fs::write(dir.path().join("app.log.1"), &content[..15]).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert!(find_copy(&path, &w).unwrap().is_none());
    }

    #[test]
    fn a_copy_whose_bytes_before_the_committed_offset_differ_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let content = b"first line\nsecond line\n";
        // Only the first 5 bytes are in the identity; the tail check
        // covers "second line\n".
        let mut w = wanted(&path, content, 23, 23);
        let file = File::open(&path).unwrap();
        w.identity = identity_of(&file, 5, w.identity.dev, w.identity.ino).unwrap();
        std::fs::write(dir.path().join("app.log.1"), b"first line\nSECOND LINE\n").unwrap();
        std::fs::write(&path, b"").unwrap();
        assert!(find_copy(&path, &w).unwrap().is_none());
        std::fs::write(dir.path().join("app.log.1"), content).unwrap();
        assert!(find_copy(&path, &w).unwrap().is_some());
    }

    #[test]
    fn neither_the_path_nor_a_file_with_no_head_is_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let content = b"first line\n";
        let w = wanted(&path, content, 11, 11);
        // Only the path itself (not truncated) has the content.
        assert!(find_copy(&path, &w).unwrap().is_none());
        // Nothing read yet: no head to match, nothing is a copy.
        std::fs::write(dir.path().join("app.log.1"), content).unwrap();
        let empty = CopyWanted {
            identity: FileIdentity::default(),
            committed: 0,
            tail: (0, 0),
            read_pos: 0,
        };
        assert!(find_copy(&path, &empty).unwrap().is_none());
        assert!(find_copy(&path, &w).unwrap().is_some());
    }
}
