//! store: owns the sled database under `data_dir/store`: per-source offset
//! and file identity records, the spool's delivery cursor and delivery
//! ledger, the instance id, and the schema version.
//!
//! Invariants: the schema version key is present in every store this build
//! has opened; a store whose version is newer than `migrations::CURRENT` is
//! refused before anything is read or written.
//!
//! Must never: hold spooled lines (they live in the spool's segment files),
//! or be called directly from an async task: every method blocks on disk,
//! so callers go through `spawn_blocking` or a dedicated thread.

mod durable;
pub mod migrations;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::kafka::ledger::DeliveryLedger;
/// Moved to [`crate::source::identity`]; kept here because records embed it
/// and the spool names it through the store.
pub use crate::source::identity::FileIdentity;
use crate::spool::SpoolCursor;

const VERSION_KEY: &[u8] = b"schema_version";
const CURSOR_KEY: &[u8] = b"cursor";
const LEDGER_KEY: &[u8] = b"ledger";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no store at {path} (has logcatch run with this data_dir yet?)")]
    Missing { path: PathBuf },
    #[error("store {path} is in use by another process (is logcatch running?)")]
    Locked { path: PathBuf },
    #[error("store {path} has schema version {found}, newer than this logcatch understands ({supported}); upgrade logcatch or point data_dir elsewhere")]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("store {path}: {source}")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// Making the store durable failed (see [`Store::flush`]).
    #[error("store {path}: cannot make it durable (fsync): {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {path}: record `{key}` is damaged: {message}")]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A source's committed progress: everything in `identity` before `offset`
/// is in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub path: String,
    pub identity: FileIdentity,
    /// Byte offset just past the last spooled line (always at a line start).
    pub offset: u64,
    /// How many bytes right before `offset` `tail_crc` covers (0: none).
    pub tail_len: u32,
    /// crc32c of the bytes `[offset - tail_len, offset)`: notices a file that
    /// was rewritten with the same first bytes.
    pub tail_crc: u32,
    /// Lines and bytes this source has spooled since the record was created.
    pub lines: u64,
    pub bytes: u64,
    /// Unix time in milliseconds of the last commit.
    pub updated_ms: u64,
    /// The spool writer's commit sequence number of this record; orders it
    /// against batches found in the spool at recovery.
    pub seq: u64,
    /// Files of this source that were rotated away and are still read
    /// (late writes, see [`crate::source::tailer`]), each with its own
    /// position. Schema v3 ([`migrations::v2_to_v3`]).
    pub draining: Vec<FilePosition>,
    /// Rotated files of this source finished lately (at most
    /// [`MAX_FINISHED`], newest last): a start after rotations while
    /// logcatch was stopped reads rotated files it finds beside the path
    /// that no position names ([`crate::source::tailer`]), and must not
    /// take these for such.
    pub finished: Vec<FileIdentity>,
}

/// The most finished files a [`SourceRecord`] remembers.
pub const MAX_FINISHED: usize = 32;

/// One file's committed position inside a [`SourceRecord`]: the fields of
/// the record's own file, for a file being drained after a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub identity: FileIdentity,
    pub offset: u64,
    pub tail_len: u32,
    pub tail_crc: u32,
    /// The commit sequence number of this position (see
    /// [`SourceRecord::seq`]).
    pub seq: u64,
}

impl SourceRecord {
    /// The position of the record's own (newest) file.
    pub fn position(&self) -> FilePosition {
        FilePosition {
            identity: self.identity,
            offset: self.offset,
            tail_len: self.tail_len,
            tail_crc: self.tail_crc,
            seq: self.seq,
        }
    }

    /// This record as if `p` were its own file and nothing were draining:
    /// what the identity checks of [`crate::source::identity`] take.
    pub fn for_position(&self, p: &FilePosition) -> SourceRecord {
        SourceRecord {
            identity: p.identity,
            offset: p.offset,
            tail_len: p.tail_len,
            tail_crc: p.tail_crc,
            seq: p.seq,
            draining: Vec::new(),
            ..self.clone()
        }
    }

    /// The commit sequence number of the position of the file with
    /// `identity`'s device and inode, if the record holds one.
    pub fn seq_of(&self, identity: &FileIdentity) -> Option<u64> {
        std::iter::once(self.position())
            .chain(self.draining.iter().cloned())
            .find(|p| p.identity.same_file(identity))
            .map(|p| p.seq)
    }

    /// This record without the position of the finished file `identity`
    /// (device and inode), which joins the finished files; `None` when that
    /// changes nothing. When the finished file is the record's own (a
    /// copytruncate's copy, drained while the truncated file is read), the
    /// newest draining file takes its place; a record whose only file it is
    /// keeps its position.
    pub fn drained(&self, identity: &FileIdentity) -> Option<SourceRecord> {
        let mut rec = self.clone();
        rec.draining.retain(|d| !d.identity.same_file(identity));
        if rec.draining.len() == self.draining.len() && rec.identity.same_file(identity) {
            let newest = rec.draining.pop()?;
            rec = SourceRecord {
                draining: std::mem::take(&mut rec.draining),
                ..rec.for_position(&newest)
            };
        }
        if rec.finished.contains(identity) && rec.draining.len() == self.draining.len() {
            return None;
        }
        // The highest sequence number never goes down: the writer's next
        // one after a restart must stay above every number used
        // ([`SourceRecord::max_seq`]).
        rec.seq = rec.seq.max(self.max_seq());
        rec.finished.retain(|f| !f.same_file(identity));
        rec.finished.push(*identity);
        if rec.finished.len() > MAX_FINISHED {
            rec.finished.remove(0);
        }
        Some(rec)
    }

    /// The highest commit sequence number in the record (its own file's or
    /// a draining file's): the writer's next number must be above it.
    pub fn max_seq(&self) -> u64 {
        self.draining.iter().map(|d| d.seq).fold(self.seq, u64::max)
    }
}

/// The sled store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    sources: sled::Tree,
    spool: sled::Tree,
    /// The files [`Store::flush`] fsyncs after sled's own flush.
    files: Arc<Mutex<durable::DurableFiles>>,
    /// The newest spool cursor known to be on disk (see
    /// [`Store::durable_cursor`]).
    durable_cursor: Arc<Mutex<Option<SpoolCursor>>>,
}

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl Store {
    /// Opens (creating if needed) the store at `dir`, upgrading an older
    /// schema and refusing a newer one.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(200))
            // The store is a few records per source: a small page cache
            // (sled's default is 1 GiB) keeps the daemon's memory low.
            .cache_capacity(4 << 20)
            .open()
            .map_err(|source| match source {
                sled::Error::Io(ref e) if e.to_string().contains("lock") => {
                    StoreError::Locked { path: path.clone() }
                }
                source => StoreError::Sled {
                    path: path.clone(),
                    source,
                },
            })?;
        let sled_err = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        let found = match db.get(VERSION_KEY).map_err(sled_err)? {
            None => 0,
            Some(v) => {
                let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    path: path.clone(),
                    key: "schema_version".into(),
                    message: format!("expected 4 bytes, found {}", v.len()),
                })?;
                u32::from_be_bytes(bytes)
            }
        };
        if found > migrations::CURRENT {
            return Err(StoreError::TooNew {
                path,
                found,
                supported: migrations::CURRENT,
            });
        }
        for step in migrations::STEPS.iter().filter(|s| s.from >= found) {
            tracing::info!(store = %path.display(), from = step.from, to = step.from + 1, "migrating store: {}", step.what);
            (step.apply)(&db).map_err(sled_err)?;
            // The step's writes are durable before the version says so, so
            // a crash mid-step reruns the (idempotent) step.
            db.flush().map_err(sled_err)?;
            db.insert(VERSION_KEY, &(step.from + 1).to_be_bytes())
                .map_err(sled_err)?;
            db.flush().map_err(sled_err)?;
        }
        let sources = db.open_tree("sources").map_err(sled_err)?;
        let spool = db.open_tree("spool").map_err(sled_err)?;
        let files = durable::DurableFiles::open(&path).map_err(|source| StoreError::Sync {
            path: path.clone(),
            source,
        })?;
        let store = Store {
            path,
            db,
            sources,
            spool,
            files: Arc::new(Mutex::new(files)),
            durable_cursor: Arc::new(Mutex::new(None)),
        };
        // Read back from disk at open: durable.
        *crate::runtime::lock(&store.durable_cursor) = store.cursor()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// This store's instance id (see [`migrations::v1_to_v2`]): made once,
    /// never changed; the first part of every line identity.
    pub fn instance_id(&self) -> Result<u64, StoreError> {
        let v = self
            .db
            .get(migrations::v1_to_v2::INSTANCE_ID_KEY)
            .map_err(|e| self.sled_err(e))?;
        let bytes: Option<[u8; 8]> = v.as_ref().and_then(|v| v.as_ref().try_into().ok());
        bytes
            .map(u64::from_be_bytes)
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                key: "instance_id".into(),
                message: format!("expected 8 bytes, found {}", v.map_or(0, |v| v.len())),
            })
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v = self.db.get(VERSION_KEY).map_err(|e| self.sled_err(e))?;
        Ok(v.and_then(|v| v.as_ref().try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, key: &str, v: &[u8]) -> Result<T, StoreError> {
        bincode::serde::decode_from_slice(v, bincode_cfg())
            .map(|(t, _)| t)
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                key: key.to_string(),
                message: e.to_string(),
            })
    }

    fn encode<T: Serialize>(&self, key: &str, t: &T) -> Result<Vec<u8>, StoreError> {
        bincode::serde::encode_to_vec(t, bincode_cfg()).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    pub fn source(&self, name: &str) -> Result<Option<SourceRecord>, StoreError> {
        match self.sources.get(name).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(v) => self.decode(name, &v).map(Some),
        }
    }

    /// Writes a source's record. Not durable until `flush` (or sled's own
    /// periodic flush); see `spool::SpoolWriter` for why that is safe.
    pub fn put_source(&self, name: &str, rec: &SourceRecord) -> Result<(), StoreError> {
        let v = self.encode(name, rec)?;
        self.sources.insert(name, v).map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    pub fn remove_source(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .sources
            .remove(name)
            .map_err(|e| self.sled_err(e))?
            .is_some())
    }

    /// Every source record, by name.
    /// The records whose name starts with `prefix` (a glob source's files:
    /// `NAME:/`), without reading the others.
    pub fn sources_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, SourceRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.sources.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let rec = self.decode(&name, &v)?;
            out.push((name, rec));
        }
        Ok(out)
    }

    pub fn sources(&self) -> Result<Vec<(String, SourceRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.sources.iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let rec = self.decode(&name, &v)?;
            out.push((name, rec));
        }
        Ok(out)
    }

    pub fn cursor(&self) -> Result<Option<SpoolCursor>, StoreError> {
        match self.spool.get(CURSOR_KEY).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(v) => self.decode("spool.cursor", &v).map(Some),
        }
    }

    pub fn put_cursor(&self, c: &SpoolCursor) -> Result<(), StoreError> {
        let v = self.encode("spool.cursor", c)?;
        self.spool
            .insert(CURSOR_KEY, v)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// The delivery ledger written with the cursor (empty if none yet,
    /// which is safe: nothing is skipped without a ledger).
    pub fn ledger(&self) -> Result<DeliveryLedger, StoreError> {
        match self.spool.get(LEDGER_KEY).map_err(|e| self.sled_err(e))? {
            None => Ok(DeliveryLedger::default()),
            Some(v) => self.decode("spool.ledger", &v),
        }
    }

    /// Writes the cursor and the ledger in one atomic batch (not yet
    /// durable: `flush`).
    pub fn put_progress(
        &self,
        cursor: Option<&SpoolCursor>,
        ledger: &DeliveryLedger,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        if let Some(c) = cursor {
            batch.insert(CURSOR_KEY, self.encode("spool.cursor", c)?);
        }
        batch.insert(LEDGER_KEY, self.encode("spool.ledger", ledger)?);
        self.spool.apply_batch(batch).map_err(|e| self.sled_err(e))
    }

    /// Makes every write so far durable: sled's flush, then an fsync of
    /// the files sled wrote without one (the argument is in
    /// [`durable`]'s module doc). Afterwards [`durable_cursor`] is the
    /// cursor this flush covered.
    ///
    /// [`durable_cursor`]: Store::durable_cursor
    pub fn flush(&self) -> Result<(), StoreError> {
        // Read before the flush: a cursor written meanwhile may not be
        // covered by it.
        let cursor = self.cursor()?;
        self.db.flush().map_err(|e| self.sled_err(e))?;
        crate::runtime::lock(&self.files)
            .sync()
            .map_err(|source| StoreError::Sync {
                path: self.path.clone(),
                source,
            })?;
        let mut durable = crate::runtime::lock(&self.durable_cursor);
        let newer = match (*durable, cursor) {
            (Some(d), Some(c)) => (c.segment, c.position) > (d.segment, d.position),
            (None, Some(_)) => true,
            _ => false,
        };
        if newer {
            *durable = cursor;
        }
        Ok(())
    }

    /// The newest spool cursor that a [`flush`](Store::flush) made
    /// durable (or that was on disk at open): what may decide which spool
    /// segments are deleted. [`cursor`](Store::cursor) may be newer and
    /// not yet on disk.
    pub fn durable_cursor(&self) -> Option<SpoolCursor> {
        *crate::runtime::lock(&self.durable_cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: u64) -> SourceRecord {
        SourceRecord {
            path: "/x".into(),
            identity: FileIdentity {
                dev: 1,
                ino: 2,
                head_len: 3,
                head_crc: 4,
            },
            offset,
            tail_len: 0,
            tail_crc: 0,
            lines: 1,
            bytes: 2,
            updated_ms: 5,
            seq: 6,
            draining: Vec::new(),
            finished: Vec::new(),
        }
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_source("a", &rec(42)).unwrap();
            s.put_cursor(&SpoolCursor {
                segment: 3,
                position: 10,
                lines_done: 2,
            })
            .unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.source("a").unwrap().unwrap().offset, 42);
        assert_eq!(s.cursor().unwrap().unwrap().segment, 3);
        assert_eq!(s.schema_version().unwrap(), migrations::CURRENT);
        assert!(s.remove_source("a").unwrap());
        assert!(s.source("a").unwrap().is_none());
    }

    #[test]
    fn newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(VERSION_KEY, &(migrations::CURRENT + 1).to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let e = Store::open(dir.path()).err().unwrap();
        assert!(matches!(e, StoreError::TooNew { .. }), "{e}");
        assert!(e.to_string().contains("newer"), "{e}");
    }

    /// A v1 store built by hand (version key 1, a cursor and a v1-format
    /// ledger): opening it makes an instance id that stays, keeps the
    /// cursor, and drops the old ledger (it reads as empty, not clean).
    #[test]
    fn v1_store_gets_an_instance_id_and_loses_its_old_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let cursor = SpoolCursor {
            segment: 4,
            position: 99,
            lines_done: 1,
        };
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(VERSION_KEY, &1u32.to_be_bytes()).unwrap();
            db.open_tree("sources").unwrap();
            let spool = db.open_tree("spool").unwrap();
            let c = bincode::serde::encode_to_vec(cursor, bincode_cfg()).unwrap();
            spool.insert(CURSOR_KEY, c).unwrap();
            // v1 ledger: {"app": {"t": (partition 0, last_offset 41,
            // acked_beyond_cursor 3)}}, not clean.
            type V1 = std::collections::BTreeMap<
                String,
                std::collections::BTreeMap<String, (i32, i64, u64)>,
            >;
            let mut v1 = V1::new();
            v1.entry("app".into())
                .or_default()
                .insert("t".into(), (0, 41, 3));
            let l = bincode::serde::encode_to_vec((v1, false), bincode_cfg()).unwrap();
            spool.insert(LEDGER_KEY, l).unwrap();
            db.flush().unwrap();
        }
        let id = {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.schema_version().unwrap(), migrations::CURRENT);
            assert_eq!(s.cursor().unwrap(), Some(cursor));
            let l = s.ledger().unwrap();
            assert!(l.entries.is_empty() && !l.clean, "{l:?}");
            s.instance_id().unwrap()
        };
        assert_ne!(id, 0);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.instance_id().unwrap(),
            id,
            "the instance id never changes"
        );
    }

    #[test]
    fn new_stores_get_different_instance_ids() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Store::open(a.path()).unwrap().instance_id().unwrap();
        let b = Store::open(b.path()).unwrap().instance_id().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn second_open_reports_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _s = Store::open(dir.path()).unwrap();
        let e = Store::open(dir.path()).err().unwrap();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    }
}
