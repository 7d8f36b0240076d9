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
//! fail a whole pass because one folder cannot be read (it is passed over,
//! at debug level since every pass would repeat it; the next pass tries
//! again).
//!
//! [`file_key`]: crate::config::file_key

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::{split_key, GlobSpec, KEY_SEP};
use crate::source::compressed::{unpacked_head, Codec};
use crate::source::identity::{born_after, rotated_name, HEAD_BYTES};
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
            if entry.path().to_str().is_none() {
                // Keys, records and headers hold paths as UTF-8 text: such
                // a file could not be found again by its record.
                tracing::warn!(path = %entry.path().display(),
                    "a file the glob matches has a name that is not UTF-8; it is not tailed");
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
/// records. A file a pass finds that one of them holds is not a new file:
/// - the same device, inode and first bytes, not created after the
///   claiming record's last commit (a rename rotation gave it a name the
///   glob also matches; a new file on a reused inode with the same first
///   bytes is born later and is not held);
/// - beside the claiming record's file and named as its rotation
///   (`app.log.1`, `app.log-20261203`, `app.log.2.gz`), with its first
///   bytes (unpacked, for a compressed one): logrotate's copy of a
///   copytruncate, or a compressed rotation, whose rest that file's tailer
///   reads from its own position.
///
/// A claim with no first bytes (its file was empty) holds nothing:
/// passing over a file is a loss, reading one twice is not.
pub struct Claimed {
    claims: Vec<Claim>,
}

struct Claim {
    identity: FileIdentity,
    /// The claiming record's path (its file's name in the glob).
    record_path: PathBuf,
    /// When the claiming record was last committed (Unix ms).
    updated_ms: u64,
}

impl Claimed {
    /// The claims of `records` (the source's files' records, with their
    /// paths).
    pub fn of<'a>(records: impl IntoIterator<Item = (&'a Path, &'a SourceRecord)>) -> Claimed {
        let claims = records
            .into_iter()
            .flat_map(|(path, r)| {
                std::iter::once(r.identity)
                    .chain(r.draining.iter().map(|d| d.identity))
                    .chain(r.finished.iter().copied())
                    .filter(|i| i.head_len > 0)
                    .map(move |identity| Claim {
                        identity,
                        record_path: path.to_path_buf(),
                        updated_ms: r.updated_ms,
                    })
            })
            .collect();
        Claimed { claims }
    }

    /// Is the file at `found` one of the claimed files (see [`Claimed`])?
    pub fn holds(&self, found: &Found) -> bool {
        let mut head: Option<Vec<u8>> = None;
        self.claims.iter().any(|c| {
            let same_inode = c.identity.dev == found.dev && c.identity.ino == found.ino;
            if !same_inode && !is_rotation_of(&c.record_path, &found.path) {
                return false;
            }
            let head = head.get_or_insert_with(|| first_bytes(&found.path));
            let first = u64::from(c.identity.head_len) as usize;
            let same_head =
                head.len() >= first && crc32c::crc32c(&head[..first]) == c.identity.head_crc;
            same_head && (!same_inode || !born_later(&found.path, c.updated_ms))
        })
    }
}

/// Is `path` named as a rotation of `of` (`app.log.1`, `app.log-2026`,
/// `app.log.2.gz` beside `app.log`)?
fn is_rotation_of(of: &Path, path: &Path) -> bool {
    let (Some(base), Some(name)) = (of.file_name(), path.file_name()) else {
        return false;
    };
    of.parent() == path.parent() && rotated_name(&base.to_string_lossy(), &name.to_string_lossy())
}

/// The first [`HEAD_BYTES`] of the file at `path` (unpacked, for a `.gz` or
/// `.zst`); empty when it cannot be read (then it matches no claim).
fn first_bytes(path: &Path) -> Vec<u8> {
    if let Some(codec) = Codec::of(path) {
        return unpacked_head(path, codec).unwrap_or_default();
    }
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; HEAD_BYTES as usize];
    let mut got = 0;
    while got < buf.len() {
        match std::os::unix::fs::FileExt::read_at(&file, &mut buf[got..], got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    buf
}

/// Was the file at `path` created after `after_ms` (a new file on a reused
/// inode)?
fn born_later(path: &Path, after_ms: u64) -> bool {
    File::open(path).is_ok_and(|f| born_after(&f, after_ms))
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
    let others: Vec<(PathBuf, SourceRecord)> = store
        .sources_with_prefix(&format!("{source}{KEY_SEP}"))?
        .into_iter()
        .filter(|(k, _)| k != key)
        .filter_map(|(k, r)| split_key(&k).1.map(|p| (PathBuf::from(p), r)))
        .collect();
    let found = Found {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok(Claimed::of(others.iter().map(|(p, r)| (p.as_path(), r))).holds(&found))
}

/// How often a glob source is walked again: every `poll_interval`, at
/// most five times a second.
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

    /// A record (at `path`) whose own file is the one at `file` now.
    fn record_of(file: &Path, updated_ms: u64) -> SourceRecord {
        let f = File::open(file).unwrap();
        let m = f.metadata().unwrap();
        SourceRecord {
            path: String::new(),
            identity: crate::source::identity::identity_of(&f, m.len(), m.dev(), m.ino()).unwrap(),
            offset: m.len(),
            tail_len: 0,
            tail_crc: 0,
            lines: 0,
            bytes: 0,
            updated_ms,
            seq: 1,
            draining: Vec::new(),
            finished: Vec::new(),
        }
    }

    fn found(path: &Path) -> Found {
        let m = std::fs::metadata(path).unwrap();
        Found {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    #[test]
    fn a_renamed_file_a_copy_and_a_gz_of_a_recorded_file_are_claimed_a_new_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.log");
        std::fs::write(&app, b"first line of app\nsecond\n").unwrap();
        let rec = record_of(&app, crate::runtime::now_ms() + 60_000);
        // Renamed: same inode and first bytes.
        let one = dir.path().join("app.log.1");
        std::fs::rename(&app, &one).unwrap();
        let claimed = Claimed::of([(app.as_path(), &rec)]);
        assert!(claimed.holds(&found(&one)));
        // logrotate's copy (copytruncate) and a compressed rotation: named
        // as rotations of the record's path, with its first bytes.
        let copy = dir.path().join("app.log-20261203");
        std::fs::copy(&one, &copy).unwrap();
        assert!(claimed.holds(&found(&copy)));
        let gz = dir.path().join("app.log.2.gz");
        let mut e =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &std::fs::read(&one).unwrap()).unwrap();
        e.finish().unwrap();
        assert!(claimed.holds(&found(&gz)));
        // The same first bytes under a name that is no rotation of it: a
        // file of its own (a copy elsewhere is not logrotate's).
        let other = dir.path().join("other.log");
        std::fs::copy(&one, &other).unwrap();
        assert!(!claimed.holds(&found(&other)));
        // A new file at the path: other first bytes.
        std::fs::write(&app, b"a new file\n").unwrap();
        assert!(!claimed.holds(&found(&app)));
    }

    #[test]
    fn a_file_born_after_the_claiming_record_on_its_inode_is_not_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let gc = dir.path().join("gc-1.log");
        std::fs::write(&gc, b"JVM header, the same at every start\n").unwrap();
        // The record's last commit was before this file was created: the
        // same inode and first bytes are a new file's (inode reuse).
        let rec = record_of(&gc, 1);
        let claimed = Claimed::of([(dir.path().join("gc-0.log").as_path(), &rec)]);
        assert!(!claimed.holds(&found(&gc)));
    }

    #[test]
    fn a_missing_root_finds_nothing() {
        let s = spec(&["/nonexistent-logcatch/*/*.log".into()], &[], None);
        assert!(discover(&s, &|_| false).is_empty());
    }
}
