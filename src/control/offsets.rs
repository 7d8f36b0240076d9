//! offsets: owns the per-source progress report shown by `logcatch-ctl
//! offsets`: the store's records joined with the config and the files as
//! they are now.
//!
//! Must never: write to the store.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use crate::config::{split_key, Config};
use crate::source::identity::current_name;
use crate::source::tailer::{TailState, TailStatus};
use crate::store::{SourceRecord, Store, StoreError};

/// One source's progress, or one file's of a glob source.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OffsetRow {
    /// The source's name, or for a glob source's file its key
    /// (`NAME:/path`, [`crate::config::file_key`]).
    pub name: String,
    /// The configured source the row belongs to (`name` without the file's
    /// path).
    #[serde(default)]
    pub source: String,
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
    /// Lines and bytes spooled from this source since its record was
    /// created.
    pub lines: Option<u64>,
    pub bytes: Option<u64>,
    /// Unix ms of the last commit of this record.
    pub updated_ms: Option<u64>,
    /// Unix ms of the last read that returned bytes (live only).
    pub last_read_ms: Option<u64>,
    /// Truncations of the file since the daemon started for which no
    /// logrotate copy was found: possible gaps (live only; see
    /// [`TailStatus::truncation_gaps`]).
    #[serde(default)]
    pub truncation_gaps: Option<u64>,
    /// tailing | waiting_for_file | paused_by_backpressure |
    /// draining_rotated | error | stopped | not_running (no daemon) |
    /// not_configured | removed_draining (removed from the config, its
    /// spooled lines not all delivered yet)
    pub state: String,
    pub last_error: Option<String>,
    /// Whether the current config names this source.
    pub configured: bool,
    /// Rotated files of this source still read for late writes, each with
    /// its own committed position ([`SourceRecord::draining`]).
    #[serde(default)]
    pub draining: Vec<DrainingRow>,
}

/// A rotated file still drained: a sub-row of its source.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DrainingRow {
    /// Its name now, found beside the source's path by device and inode
    /// (`None`: gone, or not beside it).
    pub path: Option<String>,
    pub device: u64,
    pub inode: u64,
    pub offset: u64,
    pub size: Option<u64>,
    pub lag_bytes: Option<u64>,
}

/// The sub-rows of `rec`'s draining files, `path` being the source's path.
fn draining_rows(path: &str, rec: Option<&SourceRecord>) -> Vec<DrainingRow> {
    let Some(rec) = rec else {
        return Vec::new();
    };
    rec.draining
        .iter()
        .map(|p| {
            let name = current_name(Path::new(path), &p.identity);
            let size = name
                .as_ref()
                .and_then(|n| std::fs::metadata(n).ok())
                .map(|m| m.len());
            DrainingRow {
                path: name.map(|n| n.to_string_lossy().into_owned()),
                device: p.identity.dev,
                inode: p.identity.ino,
                offset: p.offset,
                size,
                lag_bytes: size.map(|s| s.saturating_sub(p.offset)),
            }
        })
        .collect()
}

impl OffsetRow {
    /// A source removed from the config whose spooled lines are still
    /// being delivered.
    pub fn removed_draining(name: &str, path: &str) -> OffsetRow {
        OffsetRow {
            name: name.to_string(),
            source: split_key(name).0.to_string(),
            path: path.to_string(),
            device: None,
            inode: None,
            offset: None,
            size: None,
            lag_bytes: None,
            lines: None,
            bytes: None,
            updated_ms: None,
            last_read_ms: None,
            truncation_gaps: None,
            state: "removed_draining".into(),
            last_error: None,
            configured: false,
            draining: Vec::new(),
        }
    }
}

/// What the running daemon adds to the stored records.
pub struct LiveView<'a> {
    pub tailers: &'a BTreeMap<String, TailStatus>,
    pub spool_paused: bool,
}

/// Builds rows from the store's records and the config.
pub fn rows(
    config: &Config,
    records: Vec<(String, SourceRecord)>,
    live: Option<&LiveView<'_>>,
) -> Vec<OffsetRow> {
    let mut out = Vec::new();
    let mut records: BTreeMap<String, SourceRecord> = records.into_iter().collect();
    // One-path sources, then every record (a glob source's files have
    // records only; the glob source itself has no row).
    let mut names: Vec<String> = config
        .sources
        .values()
        .filter(|s| s.glob.is_none())
        .map(|s| s.name.clone())
        .collect();
    for n in records.keys() {
        if !names.contains(n) {
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
        let configured = config.has_key(&name);
        let status = live.and_then(|l| l.tailers.get(&name));
        let state = match (configured, live, status) {
            (false, _, _) => "not_configured".to_string(),
            (true, None, _) => "not_running".to_string(),
            (true, Some(_), None) => "stopped".to_string(),
            (true, Some(l), Some(st)) => {
                if l.spool_paused && st.state == TailState::Tailing {
                    "paused_by_backpressure".to_string()
                } else {
                    serde_json::to_value(st.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                }
            }
        };
        out.push(OffsetRow {
            draining: draining_rows(&path, rec.as_ref()),
            configured,
            state,
            last_error: status.and_then(|s| s.last_error.clone()),
            last_read_ms: status.map(|s| s.last_read_ms).filter(|v| *v > 0),
            truncation_gaps: status.map(|s| s.truncation_gaps),
            source: split_key(&name).0.to_string(),
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
    let store = open_existing(config)?;
    Ok(rows(config, store.sources()?, None))
}

/// Opens the store of a stopped daemon, refusing to create one.
pub fn open_existing(config: &Config) -> Result<Store, StoreError> {
    let dir = crate::daemon::store_dir(config);
    if !dir.exists() {
        return Err(StoreError::Missing { path: dir });
    }
    Store::open(&dir)
}
