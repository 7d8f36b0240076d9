//! v0 -> v1: a store with no schema version (brand new) gets the trees of v1.
//!
//! v1 layout:
//! - default tree, key `schema_version`: u32 big-endian.
//! - tree `sources`: source name -> bincode `store::SourceRecord`.
//! - tree `spool`: key `cursor` -> bincode `spool::SpoolCursor`.

pub fn apply(db: &sled::Db) -> sled::Result<()> {
    db.open_tree("sources")?;
    db.open_tree("spool")?;
    Ok(())
}
