//! v2 -> v3: every source record gets the list of rotated files that are
//! still being read ([`SourceRecord::draining`](crate::store::SourceRecord::draining)).
//!
//! v3 layout, beyond v2's (see [`v1_to_v2`](super::v1_to_v2)): tree
//! `sources`, source name -> bincode [`SourceRecord`], whose last fields are now
//! `draining: Vec<FilePosition>` and then `finished: Vec<FileIdentity>`. A
//! v2 record is the same bytes without those fields; the step decodes each record with the v2 layout ([`V2Record`]) and
//! writes it back with empty lists.
//!
//! Idempotent: a record that already decodes as v3 (the step ran before a
//! crash, or the record was written by this build) is left alone; one that
//! decodes as neither is left alone too and reported as damaged when it is
//! read, as before.

use serde::{Deserialize, Serialize};

use crate::store::{FileIdentity, SourceRecord};

/// A source record as schema v2 stored it: the fields, their order and
/// their types are that on-disk format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Record {
    pub path: String,
    pub identity: FileIdentity,
    pub offset: u64,
    pub tail_len: u32,
    pub tail_crc: u32,
    pub lines: u64,
    pub bytes: u64,
    pub updated_ms: u64,
    pub seq: u64,
}

impl V2Record {
    fn upgraded(self) -> SourceRecord {
        SourceRecord {
            path: self.path,
            identity: self.identity,
            offset: self.offset,
            tail_len: self.tail_len,
            tail_crc: self.tail_crc,
            lines: self.lines,
            bytes: self.bytes,
            updated_ms: self.updated_ms,
            seq: self.seq,
            draining: Vec::new(),
            finished: Vec::new(),
        }
    }
}

/// Decodes all of `bytes` as a `T`, or `None` (trailing bytes too).
fn decode_whole<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let cfg = bincode::config::standard();
    match bincode::serde::decode_from_slice::<T, _>(bytes, cfg) {
        Ok((t, n)) if n == bytes.len() => Some(t),
        _ => None,
    }
}

pub fn apply(db: &sled::Db) -> sled::Result<()> {
    let sources = db.open_tree("sources")?;
    for kv in sources.iter() {
        let (key, value) = kv?;
        if decode_whole::<SourceRecord>(&value).is_some() {
            continue;
        }
        let Some(old) = decode_whole::<V2Record>(&value) else {
            continue;
        };
        let new = bincode::serde::encode_to_vec(old.upgraded(), bincode::config::standard())
            .map_err(|e| sled::Error::Unsupported(format!("re-encoding a source record: {e}")))?;
        sources.insert(key, new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(offset: u64) -> V2Record {
        V2Record {
            path: "/var/log/app.log".into(),
            identity: FileIdentity {
                dev: 7,
                ino: 99,
                head_len: 1024,
                head_crc: 0xdead_beef,
            },
            offset,
            tail_len: 64,
            tail_crc: 0x1234_5678,
            lines: 10,
            bytes: 400,
            updated_ms: 1_700_000_000_000,
            seq: 41,
        }
    }

    /// A v2 record written by hand is decoded with its fields kept and an
    /// empty draining list; running the step twice changes nothing more.
    #[test]
    fn v2_records_keep_their_fields_and_get_an_empty_draining_list() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("sources").unwrap();
        let bytes = bincode::serde::encode_to_vec(v2(4096), bincode::config::standard()).unwrap();
        tree.insert("app", bytes).unwrap();
        assert!(
            decode_whole::<SourceRecord>(&tree.get("app").unwrap().unwrap()).is_none(),
            "a v2 record does not decode as v3 (the step is needed)"
        );
        apply(&db).unwrap();
        let got = tree.get("app").unwrap().unwrap();
        let rec: SourceRecord = decode_whole(&got).unwrap();
        assert_eq!(rec, v2(4096).upgraded());
        assert!(rec.draining.is_empty());
        apply(&db).unwrap();
        assert_eq!(tree.get("app").unwrap().unwrap(), got, "idempotent");
    }
}
