//! discover: owns finding the files of a glob source ([`GlobSpec`]). A
//! walk from each pattern's literal folder ([`GlobSpec::roots`]) lists the
//! regular files whose path matches; the daemon ([`crate::daemon`]) starts
//! a tailer for each one that is new, under its [`file_key`].
//!
//! What an operator of Vector, Fluent Bit or Filebeat expects holds here:
//! - symlinks are followed to their targets (Kubernetes'
//!   `/var/log/containers/*.log`), and a file reached through two paths is
//!   tailed once, under the first path in sorted order;
//! - a folder that appears under `**` is walked at the next pass;
//! - `ignore_older_than` leaves out files last written before it, unless
//!   they already have a record (their rest is still read);
//! - a file that another file of the same source already reads (a rotated
//!   name the glob also matches: `app.log.1` beside `app.log` under
//!   `app.log*`) is recognised by its identity and never tailed twice
//!   ([`Claimed`]).
//!
//! Invariants: discovery only lists; it never opens a file for reading,
//! never writes the store, and never stops a tailer.
//!
//! Must never: follow a symlink loop forever (the walk detects loops), or
//! fail a whole pass because one folder cannot be read (it is logged and
//! passed over; the next pass tries again).
//!
//! [`file_key`]: crate::config::file_key

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::{split_key, GlobSpec};
use crate::source::identity::crc_at;
use crate::store::{FileIdentity, SourceRecord, Store, StoreError};

/// A file a pass found: its path and what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// Lists the files that match `spec` now, in path order, each file once
/// (the first path by which it is reached). `recorded` says whether a path
/// already has a record (kept even when `ignore_older_than` would leave it
/// out).
pub fn discover(spec: &GlobSpec, recorded: &dyn Fn(&Path) -> bool) -> Vec<Found> {
    let mut paths: BTreeMap<PathBuf, (u64, u64)> = BTreeMap::new();
    let oldest = spec
        .ignore_older_than
        .and_then(|d| SystemTime::now().checked_sub(d));
    for (root, depth) in spec.roots() {
        let walk = walkdir::WalkDir::new(&root)
            .follow_links(true)
            .max_depth(depth.unwrap_or(usize::MAX));
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    // A missing root is only "nothing yet"; anything else
                    // (permission, a loop) is worth a line.
                    if e.io_error().map(std::io::Error::kind) != Some(std::io::ErrorKind::NotFound)
                    {
                        tracing::debug!(root = %root.display(), error = %e, "a glob's walk passed over an entry");
                    }
                    continue;
                }
            };
            if !entry.file_type().is_file() || !spec.matches(entry.path()) {
                continue;
            }
            // Followed: a symlink's target's metadata.
            let Ok(meta) = entry.metadata() else { continue };
            let stale = oldest.is_some_and(|o| meta.modified().is_ok_and(|m| m < o));
            if stale && !recorded(entry.path()) {
                continue;
            }
            paths.insert(entry.into_path(), (meta.dev(), meta.ino()));
        }
    }
    let mut seen = HashSet::new();
    paths
        .into_iter()
        .filter(|(_, id)| seen.insert(*id))
        .map(|(path, (dev, ino))| Found { path, dev, ino })
        .collect()
}

/// What the files of one glob source already read: every position, every
/// file being drained, and every file finished lately, of each of its
/// records. A file found under a new path that is one of them is a name
/// the glob also matches for a file already read (a rotation renamed it),
/// not a new file.
pub struct Claimed {
    identities: Vec<FileIdentity>,
}

impl Claimed {
    /// The claims of `records` (the source's files' records).
    pub fn of<'a>(records: impl IntoIterator<Item = &'a SourceRecord>) -> Claimed {
        let identities = records
            .into_iter()
            .flat_map(|r| {
                std::iter::once(r.identity)
                    .chain(r.draining.iter().map(|d| d.identity))
                    .chain(r.finished.iter().copied())
            })
            .collect();
        Claimed { identities }
    }

    /// Is the file at `found` one of the claimed files: same device and
    /// inode, and the same first bytes (a new file on a reused inode is
    /// not)? A claim with no first bytes (its file was empty) holds
    /// nothing: passing over a file is a loss, reading one twice is not.
    pub fn holds(&self, found: &Found) -> bool {
        let mut same_inode = self
            .identities
            .iter()
            .filter(|i| i.dev == found.dev && i.ino == found.ino && i.head_len > 0)
            .peekable();
        if same_inode.peek().is_none() {
            return false;
        }
        let Ok(file) = File::open(&found.path) else {
            return false;
        };
        same_inode
            .any(|i| crc_at(&file, 0, u64::from(i.head_len)).ok().flatten() == Some(i.head_crc))
    }
}

/// Is the file now at `path` (`meta`) one that another file of the same
/// glob source reads, read, or drains (its record claims it)? Asked by the
/// tailer of a glob source's file (`key`) before it opens a new file at
/// its path: a rotation that renames `app.log` to `app.log.1`, when the
/// glob matches both, puts at `app.log.1`'s path a file `app.log`'s tailer
/// drains; read it there too and every line of it goes twice. False for a
/// one-path source.
pub fn claimed_by_another(
    store: &Store,
    key: &str,
    path: &Path,
    meta: &std::fs::Metadata,
) -> Result<bool, StoreError> {
    let (source, Some(_)) = split_key(key) else {
        return Ok(false);
    };
    let others: Vec<SourceRecord> = store
        .sources()?
        .into_iter()
        .filter(|(k, _)| k != key && matches!(split_key(k), (s, Some(_)) if s == source))
        .map(|(_, r)| r)
        .collect();
    let found = Found {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok(Claimed::of(&others).holds(&found))
}

/// How often a glob source is walked again when no file event came first.
pub fn pass_every(poll_interval: Duration) -> Duration {
    poll_interval.max(Duration::from_millis(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(include: &[String], exclude: &[String], older: Option<Duration>) -> GlobSpec {
        GlobSpec::new(
            include.to_vec(),
            exclude.to_vec(),
            older,
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    fn paths(found: &[Found]) -> Vec<String> {
        found
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn files_that_match_are_found_in_new_folders_under_two_stars() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.log"), b"a\n").unwrap();
        std::fs::write(root.join("a.txt"), b"a\n").unwrap();
        let pat = format!("{}/**/*.log", root.display());
        let s = spec(&[pat], &[format!("{}/**/skip*.log", root.display())], None);
        assert_eq!(paths(&discover(&s, &|_| false)), ["a.log"]);
        std::fs::create_dir_all(root.join("x/y")).unwrap();
        std::fs::write(root.join("x/y/b.log"), b"b\n").unwrap();
        std::fs::write(root.join("x/skip.log"), b"s\n").unwrap();
        assert_eq!(paths(&discover(&s, &|_| false)), ["a.log", "b.log"]);
    }

    #[test]
    fn a_file_reached_through_a_symlink_too_is_found_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("pods")).unwrap();
        std::fs::create_dir(root.join("containers")).unwrap();
        std::fs::write(root.join("pods/0.log"), b"x\n").unwrap();
        std::os::unix::fs::symlink(root.join("pods/0.log"), root.join("containers/c.log")).unwrap();
        let s = spec(&[format!("{}/*/*.log", root.display())], &[], None);
        let found = discover(&s, &|_| false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].path.ends_with("containers/c.log"), "{found:?}");
    }

    #[test]
    fn old_files_are_left_out_unless_they_have_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.log");
        std::fs::write(&old, b"x\n").unwrap();
        let f = File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        std::fs::write(dir.path().join("new.log"), b"y\n").unwrap();
        let s = spec(
            &[format!("{}/*.log", dir.path().display())],
            &[],
            Some(Duration::from_secs(3600)),
        );
        assert_eq!(paths(&discover(&s, &|_| false)), ["new.log"]);
        assert_eq!(
            paths(&discover(&s, &|p| p == old.as_path())),
            ["new.log", "old.log"]
        );
    }

    #[test]
    fn a_missing_root_finds_nothing() {
        let s = spec(&["/nonexistent-logcatch/*/*.log".into()], &[], None);
        assert!(discover(&s, &|_| false).is_empty());
    }
}
