//! offsets: owns the per-source progress report shown by `logcatch-ctl
//! offsets`: the store's records joined with the config and the files as
//! they are now.
//!
//! Must never: write to the store.

use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use crate::config::Config;
use crate::store::{SourceRecord, Store, StoreError};

/// One source's progress.
#[derive(Debug, Clone, Serialize)]
pub struct OffsetRow {
    pub name: String,
    pub path: String,
    /// Identity of the file the offset belongs to.
    pub device: Option<u64>,
    pub inode: Option<u64>,
    /// Committed offset: every byte before it is in the spool.
    pub offset: Option<u64>,
    /// Current size of the file at `path`, if it exists.
    pub size: Option<u64>,
    /// `size - offset` when the path still names the same file.
    pub lag_bytes: Option<u64>,
    pub lines: Option<u64>,
    pub bytes: Option<u64>,
    pub updated_ms: Option<u64>,
    /// Whether the current config names this source.
    pub configured: bool,
}

/// Builds rows from the store's records and the config.
pub fn rows(config: &Config, records: Vec<(String, SourceRecord)>) -> Vec<OffsetRow> {
    let mut out = Vec::new();
    let mut records: std::collections::BTreeMap<String, SourceRecord> =
        records.into_iter().collect();
    let mut names: Vec<String> = config.sources.keys().cloned().collect();
    for n in records.keys() {
        if !config.sources.contains_key(n) {
            names.push(n.clone());
        }
    }
    for name in names {
        let rec = records.remove(&name);
        let path = match (&rec, config.sources.get(&name)) {
            (_, Some(s)) => s.path.to_string_lossy().into_owned(),
            (Some(r), None) => r.path.clone(),
            (None, None) => continue,
        };
        let meta = std::fs::metadata(&path).ok();
        let size = meta.as_ref().map(|m| m.len());
        let same_file = match (&meta, &rec) {
            (Some(m), Some(r)) => m.dev() == r.identity.dev && m.ino() == r.identity.ino,
            _ => false,
        };
        out.push(OffsetRow {
            configured: config.sources.contains_key(&name),
            name,
            path,
            device: rec.as_ref().map(|r| r.identity.dev),
            inode: rec.as_ref().map(|r| r.identity.ino),
            offset: rec.as_ref().map(|r| r.offset),
            size,
            lag_bytes: match (same_file, size, &rec) {
                (true, Some(s), Some(r)) => Some(s.saturating_sub(r.offset)),
                _ => None,
            },
            lines: rec.as_ref().map(|r| r.lines),
            bytes: rec.as_ref().map(|r| r.bytes),
            updated_ms: rec.as_ref().map(|r| r.updated_ms),
        });
    }
    out
}

/// Opens the store of a stopped daemon and reports.
pub fn read_offline(config: &Config) -> Result<Vec<OffsetRow>, StoreError> {
    let dir = crate::daemon::store_dir(config);
    if !dir.exists() {
        return Err(StoreError::Missing { path: dir });
    }
    let store = Store::open(&dir)?;
    Ok(rows(config, store.sources()?))
}
