//! reset: where `logcatch-ctl reset` moves a source, and the store record
//! that makes its tailer start there.
//!
//! Must never: write the record itself: the supervisor sends it through
//! the spool writer's queue ([`crate::spool::WriterMsg::SetRecord`]), or
//! [`crate::daemon::offline_set_record`] writes it on a stopped store.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use super::ControlError;
use crate::config::SourceConfig;
use crate::source::identity::identity_of;
use crate::store::SourceRecord;

/// Where `logcatch-ctl reset` moves a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetTo {
    Beginning,
    End,
    #[serde(untagged)]
    Offset(u64),
}

impl std::str::FromStr for ResetTo {
    type Err = String;
    fn from_str(s: &str) -> Result<ResetTo, String> {
        match s {
            "beginning" => Ok(ResetTo::Beginning),
            "end" => Ok(ResetTo::End),
            n => n
                .parse()
                .map(ResetTo::Offset)
                .map_err(|_| format!("`{s}` is not `beginning`, `end` or a byte offset")),
        }
    }
}

/// The record that makes `source`'s tailer start at `to` in the file now
/// at its path. An explicit offset must not be past the end of the file;
/// the tailer takes it as given (no check of the bytes before it).
pub fn reset_record(
    source: &SourceConfig,
    prev: Option<&SourceRecord>,
    to: ResetTo,
) -> Result<SourceRecord, ControlError> {
    let path = &source.path;
    let io = |source| ControlError::ResetFile {
        path: path.clone(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let offset = match to {
        ResetTo::Beginning => 0,
        ResetTo::End => meta.len(),
        ResetTo::Offset(n) if n <= meta.len() => n,
        ResetTo::Offset(n) => {
            return Err(ControlError::PastEnd {
                offset: n,
                path: path.clone(),
                size: meta.len(),
            })
        }
    };
    let identity = identity_of(&file, meta.len(), meta.dev(), meta.ino()).map_err(io)?;
    Ok(SourceRecord {
        path: path.to_string_lossy().into_owned(),
        identity,
        offset,
        tail_len: 0,
        tail_crc: 0,
        lines: prev.map(|p| p.lines).unwrap_or(0),
        bytes: prev.map(|p| p.bytes).unwrap_or(0),
        updated_ms: crate::runtime::now_ms(),
        seq: 0,
        draining: Vec::new(),
        finished: Vec::new(),
    })
}
