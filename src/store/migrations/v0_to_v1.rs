//! v0 -> v1: a store with no schema version (brand new) gets the trees of v1.
//!
//! v1 layout:
//! - default tree, key `schema_version`: u32 big-endian.
//! - tree `sources`: source name -> bincode [`SourceRecord`](crate::store::SourceRecord).
//! - tree `spool`: key `cursor` -> bincode [`SpoolCursor`](crate::spool::SpoolCursor), and key
//!   `ledger` -> bincode [`DeliveryLedger`](crate::kafka::ledger::DeliveryLedger) (absent until the first
//!   delivery; absent reads as empty, so it needed no version of its own).

pub fn apply(db: &sled::Db) -> sled::Result<()> {
    db.open_tree("sources")?;
    db.open_tree("spool")?;
    Ok(())
}
