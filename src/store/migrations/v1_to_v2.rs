//! v1 -> v2: the store gets its instance id, and the delivery ledger its
//! identity-based format.
//!
//! v2 layout, beyond v1's (see [`v0_to_v1`](super::v0_to_v1)):
//! - default tree, key `instance_id`: u64 big-endian, random, never 0, made
//!   once and never changed: the first part of every line identity
//!   ([`LineId`](crate::kafka::line_id::LineId)).
//! - tree `spool`, key `ledger`: bincode
//!   [`DeliveryLedger`](crate::kafka::ledger::DeliveryLedger) in its v2
//!   format (per source and topic: partition, read-back start, last
//!   acknowledged offset, last frame sent).
//!
//! The v1 ledger is removed, not converted. It located messages sent
//! without an identity header, which the v2 read-back cannot recognise, so
//! a converted entry could not skip anything anyway. Removing it can only
//! cause a resend (duplicates) of the lines that were in flight when the
//! old version stopped, and none at all after a clean stop; it never causes
//! a loss, because a line is skipped only when its identity is found.
//!
//! Idempotent: an instance id already there is kept; the ledger key is only
//! removed while the version key still says 1, so a rerun after a crash
//! mid-step removes (at most) a v1 ledger again.

/// The key of the instance id in the default tree.
pub const INSTANCE_ID_KEY: &[u8] = b"instance_id";

pub fn apply(db: &sled::Db) -> sled::Result<()> {
    if db.get(INSTANCE_ID_KEY)?.is_none() {
        let id = crate::kafka::line_id::new_instance_id();
        db.insert(INSTANCE_ID_KEY, &id.to_be_bytes())?;
    }
    db.open_tree("spool")?.remove(b"ledger")?;
    Ok(())
}
