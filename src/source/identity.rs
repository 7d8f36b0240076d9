//! identity: owns telling one file from another, independent of its name:
//! device and inode, a checksum of the first bytes ([`FileIdentity`]), and a
//! checksum of the bytes just before a committed offset (the tail check of
//! [`SourceRecord`]). The tailer asks three questions of it: what is this
//! file ([`identity_of`]), is it still the file a record describes, unchanged
//! up to the record's offset ([`verify`]), and where did it go after a
//! rename rotation ([`find_rotated`]).
//!
//! Invariants:
//! - [`FileIdentity`] is part of the on-disk formats (it is serialized with
//!   bincode inside every [`SourceRecord`] in the store and every
//!   [`SpoolBatch`](crate::spool::SpoolBatch) in the spool): its fields,
//!   their order and their types never change.
//! - A checksum covers at most [`HEAD_BYTES`] (head) or [`TAIL_BYTES`]
//!   (tail) bytes; a file too short for the bytes a checksum covers does
//!   not match it.
//! - [`verify`] says [`Verdict::Same`] only when every check the record
//!   allows passed (size, head, tail): anything else is a new file, read
//!   from 0 (re-reading is safe, skipping is not).
//!
//! Must never: open anything but a regular file (a FIFO would block the
//! open, see [`not_a_regular_file`]), or trust a device and inode alone (an
//! inode is reused as soon as its file is deleted).

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::SourceRecord;

/// How many leading bytes identify a file.
pub const HEAD_BYTES: u32 = 1024;
/// How many bytes before the committed offset are checked on resume.
pub const TAIL_BYTES: u64 = 64;

/// What identifies one file, independent of its name: device and inode,
/// plus a checksum of its first bytes to notice inode reuse.
///
/// Stored with bincode in the store and the spool: the fields and their
/// order are an on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    /// How many leading bytes `head_crc` covers (at most [`HEAD_BYTES`]).
    pub head_len: u32,
    /// crc32c of the first `head_len` bytes.
    pub head_crc: u32,
}

impl FileIdentity {
    /// Is `meta` (a stat of some path) the same device and inode? Says
    /// nothing about the content: see [`verify`].
    pub fn is_inode_of(&self, meta: &Metadata) -> bool {
        meta.dev() == self.dev && meta.ino() == self.ino
    }

    /// The same device and inode as `other` (the same file, or a new one
    /// on a reused inode: the head checksum tells which).
    pub fn same_file(&self, other: &FileIdentity) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// Why `meta` cannot be tailed (a directory, a FIFO, ...), or `None` for a
/// regular file.
pub fn not_a_regular_file(meta: &Metadata) -> Option<&'static str> {
    let ft = meta.file_type();
    if ft.is_file() {
        None
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_socket() {
        Some("a socket")
    } else {
        Some("a device or other special file")
    }
}

/// crc32c of `len` bytes at `at`, or `None` if the file is shorter.
pub fn crc_at(file: &File, at: u64, len: u64) -> std::io::Result<Option<u32>> {
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

/// The identity of `file` (device `dev`, inode `ino`), whose first
/// `min(size, HEAD_BYTES)` bytes are checksummed.
pub fn identity_of(file: &File, size: u64, dev: u64, ino: u64) -> std::io::Result<FileIdentity> {
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

/// The tail check of bytes that end at a committed offset: how many of the
/// last bytes of `before_offset` it covers (at most [`TAIL_BYTES`]) and
/// their crc32c. The pair goes to [`SourceRecord::tail_len`] and
/// [`SourceRecord::tail_crc`].
pub fn tail_check(before_offset: &[u8]) -> (u32, u32) {
    let k = before_offset.len().min(TAIL_BYTES as usize);
    let tail = &before_offset[before_offset.len() - k..];
    (k as u32, crc32c::crc32c(tail))
}

/// What [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The file is the one the record describes, unchanged up to its
    /// offset: resume there.
    Same,
    /// It is not (the reason, for the log): read it from 0.
    Changed(&'static str),
}

/// Is the open file still the one `rec` describes, unchanged up to its
/// offset?
pub fn verify(file: &File, size: u64, rec: &SourceRecord) -> std::io::Result<Verdict> {
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

/// The folder `path` is in (`.` for a bare name): where its rotated files
/// and copies are looked for.
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The name beside `path` that the file `identity` (device and inode) has
/// now, if any: where a rotation renamed it. Says nothing about content.
pub fn current_name(path: &Path, identity: &FileIdentity) -> Option<PathBuf> {
    let dir = folder_of(path);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| {
            e.metadata()
                .is_ok_and(|m| m.file_type().is_file() && identity.is_inode_of(&m))
        })
        .map(|e| e.path())
}

/// Looks beside `path` for the file `rec` describes (renamed by rotation):
/// a regular file with the record's device and inode that [`verify`]
/// accepts. Returns its path and the open file.
pub fn find_rotated(path: &Path, rec: &SourceRecord) -> std::io::Result<Option<(PathBuf, File)>> {
    let dir = folder_of(path);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() || !rec.identity.is_inode_of(&meta) {
            continue;
        }
        // A compressed file on the inode of a file it replaced is never
        // that file (an empty one has nothing else to tell them apart).
        if crate::source::compressed::Codec::of(&entry.path()).is_some() {
            continue;
        }
        let file = File::open(entry.path())?;
        if let Verdict::Same = verify(&file, meta.len(), rec)? {
            return Ok(Some((entry.path(), file)));
        }
    }
    Ok(None)
}

/// Was `file` created after `after_ms` (Unix ms)? False where the file
/// system does not keep a birth time.
pub fn born_after(file: &File, after_ms: u64) -> bool {
    file.metadata()
        .and_then(|m| m.created())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|d| d.as_millis() as u64 > after_ms)
}

/// Is `name` a rotation of the file named `base`: `base`, `.` or `-`, then
/// a digit (`app.log.1`, `app.log-20261203`, `app.log.2.gz`)?
pub fn rotated_name(base: &str, name: &str) -> bool {
    name.strip_prefix(base).is_some_and(|rest| {
        let mut c = rest.chars();
        matches!(c.next(), Some('.' | '-')) && c.next().is_some_and(|d| d.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The record a tailer would have committed after reading `path` up to
    /// `offset` (the tail check covers the bytes just before it).
    fn record_at(path: &Path, offset: u64) -> SourceRecord {
        let file = File::open(path).unwrap();
        let meta = file.metadata().unwrap();
        let identity = identity_of(&file, meta.len(), meta.dev(), meta.ino()).unwrap();
        let bytes = std::fs::read(path).unwrap();
        let (tail_len, tail_crc) = tail_check(&bytes[..offset as usize]);
        SourceRecord {
            path: path.to_string_lossy().into_owned(),
            identity,
            offset,
            tail_len,
            tail_crc,
            lines: 0,
            bytes: 0,
            updated_ms: 0,
            seq: 0,
            draining: Vec::new(),
            finished: Vec::new(),
        }
    }

    #[test]
    fn a_renamed_file_is_found_beside_its_path_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, b"one\ntwo\n").unwrap();
        let rec = record_at(&path, 4);
        // A decoy with the same content but another inode.
        std::fs::write(dir.path().join("app.log.2"), b"one\ntwo\n").unwrap();
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        std::fs::write(&path, b"new\n").unwrap();
        let (found, _file) = find_rotated(&path, &rec).unwrap().expect("found");
        assert_eq!(found, dir.path().join("app.log.1"));
        // Gone altogether: nothing is found.
        std::fs::remove_file(&found).unwrap();
        assert!(find_rotated(&path, &rec).unwrap().is_none());
    }

    #[test]
    fn a_rewrite_with_the_same_first_bytes_is_caught_by_the_tail_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        // The head covers the first HEAD_BYTES; the rewrite changes bytes
        // after them but before the offset.
        let head = vec![b'h'; HEAD_BYTES as usize];
        let mut content = head.clone();
        content.extend_from_slice(b"first line\nsecond\n");
        std::fs::write(&path, &content).unwrap();
        let rec = record_at(&path, content.len() as u64);
        let file = File::open(&path).unwrap();
        assert_eq!(
            verify(&file, content.len() as u64, &rec).unwrap(),
            Verdict::Same
        );
        // Appending keeps it the same file.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        assert_eq!(
            verify(&file, content.len() as u64 + 5, &rec).unwrap(),
            Verdict::Same
        );
        let mut rewritten = head;
        rewritten.extend_from_slice(b"FIRST LINE\nsecond\nmore\n");
        std::fs::write(&path, &rewritten).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            verify(&file, rewritten.len() as u64, &rec).unwrap(),
            Verdict::Changed("the bytes before the stored offset changed (the file was rewritten)")
        );
    }

    #[test]
    fn a_reused_inode_with_new_content_is_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, b"old line\n").unwrap();
        let rec = record_at(&path, 9);
        // Rewritten in place (same inode), longer than the offset.
        std::fs::write(&path, b"new content, longer\n").unwrap();
        let file = File::open(&path).unwrap();
        assert!(rec.identity.is_inode_of(&file.metadata().unwrap()));
        assert!(matches!(
            verify(&file, 20, &rec).unwrap(),
            Verdict::Changed(why) if why.contains("first bytes")
        ));
        // Shorter than the offset: truncated.
        std::fs::write(&path, b"x\n").unwrap();
        assert!(matches!(
            verify(&file, 2, &rec).unwrap(),
            Verdict::Changed(why) if why.contains("truncated")
        ));
    }

    #[test]
    fn only_regular_files_are_tailed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(not_a_regular_file(&std::fs::metadata(&path).unwrap()), None);
        assert_eq!(
            not_a_regular_file(&std::fs::metadata(dir.path()).unwrap()),
            Some("a directory")
        );
    }

    #[test]
    fn the_bincode_encoding_of_an_identity_is_unchanged() {
        // Stored in every record and spooled batch: four varints in field
        // order (dev, ino, head_len, head_crc).
        let id = FileIdentity {
            dev: 1,
            ino: 300,
            head_len: 3,
            head_crc: 4,
        };
        let bytes = bincode::serde::encode_to_vec(id, bincode::config::standard()).unwrap();
        assert_eq!(bytes, [1, 251, 44, 1, 3, 4]);
    }

    #[test]
    fn tail_check_covers_at_most_tail_bytes() {
        assert_eq!(tail_check(b""), (0, crc32c::crc32c(b"")));
        assert_eq!(tail_check(b"ab\n"), (3, crc32c::crc32c(b"ab\n")));
        let long = vec![7u8; 200];
        assert_eq!(tail_check(&long), (64, crc32c::crc32c(&long[136..])));
    }
}
