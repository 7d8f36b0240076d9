//! durable: what makes a [`Store::flush`](super::Store::flush) mean "on
//! disk". sled 0.34.7's own flush writes its log with `pwrite` and then
//! calls `sync_file_range`, which reaches neither the file's size nor its
//! metadata, nor the disk's cache; only sled's background thread fsyncs,
//! every 200 ms (sled issue #1452). A power cut after such a flush loses
//! what it "flushed". So after sled's flush we fsync, through handles of
//! our own, every file sled writes without fsyncing it: new blob files
//! (`blobs/*`, values too large for the log, which sled writes and never
//! syncs) and the `blobs` directory, then the log (`db`), which points to
//! them. sled fsyncs its snapshots (`snap.*`) itself, and writes `conf`
//! once at creation; the store's directory and its parent are fsync'd
//! once, at open, so the entries of `db`, `conf` and `blobs` are durable.
//! Once an fsync failed, every later flush fails (the kernel may have
//! dropped the pages and cleared the error).
//!
//! Why fsync through another handle is enough: fsync flushes the inode's
//! dirty pages and metadata whichever descriptor wrote them (POSIX; Linux
//! keeps them per inode), and sled never replaces `db` (it is one log
//! file, written in place), so our handle always names the live file.
//!
//! Must never: be skipped on a path whose caller then deletes a spool
//! segment (the cursor past it must be on disk first).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The files of a sled store that our flush fsyncs.
pub(super) struct DurableFiles {
    dir: PathBuf,
    db: File,
    /// Blob files fsync'd already, with the length they had: sled writes
    /// each once, but one seen while being written is fsync'd again once
    /// its length changed.
    synced_blobs: BTreeSet<(std::ffi::OsString, u64)>,
    /// A failed fsync: every later one fails too. After a failed fsync
    /// the kernel may have dropped the dirty pages and cleared the error,
    /// so a later fsync that succeeds proves nothing (the "fsyncgate"
    /// lesson); the daemon must not delete segments on its word.
    failed: Option<String>,
}

impl DurableFiles {
    /// Opens the store's log for fsyncing and makes the directory entries
    /// durable (the store at `dir` was just opened by sled, so they exist).
    pub(super) fn open(dir: &Path) -> io::Result<DurableFiles> {
        let db = File::open(dir.join("db"))?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let mut files = DurableFiles {
            dir: dir.to_path_buf(),
            db,
            synced_blobs: BTreeSet::new(),
            failed: None,
        };
        files.sync()?;
        Ok(files)
    }

    /// fsyncs each blob not fsync'd yet at its length and then the blobs'
    /// directory, then the log (which points to the blobs, so they go
    /// first). Once one fsync failed, every call fails.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(format!("an earlier fsync failed: {why}")));
        }
        let r = self.sync_blobs().and_then(|()| self.db.sync_all());
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }

    fn sync_blobs(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = BTreeSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // Collected by sled meanwhile: nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let key = (entry.file_name(), len);
            if !self.synced_blobs.contains(&key) {
                match File::open(entry.path()).and_then(|f| f.sync_all()) {
                    Ok(()) => new = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            present.insert(key);
        }
        self.synced_blobs = present;
        if new {
            sync_dir(&blobs)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log is opened and every blob found is fsync'd once, then
    /// remembered; a blob removed (collected by sled) is forgotten.
    #[test]
    fn new_blobs_are_synced_once_and_removed_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/7"), b"blob").unwrap();
        let mut f = DurableFiles::open(dir.path()).unwrap();
        assert_eq!(f.synced_blobs.len(), 1);
        std::fs::write(dir.path().join("blobs/9"), b"blob").unwrap();
        std::fs::remove_file(dir.path().join("blobs/7")).unwrap();
        f.sync().unwrap();
        let names: Vec<_> = f.synced_blobs.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, [std::ffi::OsString::from("9")]);
        // Grown since (seen while sled wrote it): fsync'd again.
        std::fs::write(dir.path().join("blobs/9"), b"blob, whole").unwrap();
        f.sync().unwrap();
        assert_eq!(f.synced_blobs.iter().next().map(|(_, l)| *l), Some(11));
    }

    /// After a failed fsync every later one fails: the kernel may have
    /// dropped the dirty pages and cleared the error.
    #[test]
    fn after_a_failed_sync_every_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let mut f = DurableFiles::open(dir.path()).unwrap();
        f.failed = Some("EIO".into());
        let e = f.sync().unwrap_err();
        assert!(e.to_string().contains("EIO"), "{e}");
    }

    /// A store without a log is an error, not a silent "durable".
    #[test]
    fn a_missing_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DurableFiles::open(dir.path()).is_err());
    }
}
