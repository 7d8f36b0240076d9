//! migrations: one step per store schema version.
//!
//! Owns: the ordered list of upgrade steps for the sled store, and the
//! schema version this build writes ([`CURRENT`]).
//!
//! Invariants: `STEPS[i]` upgrades version `i` to version `i + 1`, so the
//! list is applied in order from the store's recorded version up to
//! `CURRENT`. Each step is idempotent (a crash in the middle of a step is
//! repaired by running it again, because the version key is written only
//! after the step's writes are flushed).
//!
//! Must never: downgrade, or guess at a store newer than `CURRENT`; that
//! store is refused by [`Store::open`](crate::store::Store::open) with a clear error.
//!
//! To add version N+1: write `vN_to_vN1.rs` here with one `apply` function,
//! push it onto `STEPS`, bump `CURRENT`, and add a fixture test that builds a
//! version N store by hand and opens it.

pub mod v0_to_v1;
pub mod v1_to_v2;
pub mod v2_to_v3;

/// One upgrade step.
pub struct Step {
    /// The version this step upgrades from; it produces `from + 1`.
    pub from: u32,
    /// A short description, logged when the step runs.
    pub what: &'static str,
    pub apply: fn(&sled::Db) -> sled::Result<()>,
}

/// The schema version this build of logcatch reads and writes.
pub const CURRENT: u32 = 3;

/// Every step, in order. `STEPS.len() == CURRENT`.
pub const STEPS: &[Step] = &[
    Step {
        from: 0,
        what: "create the sources and spool trees of schema v1",
        apply: v0_to_v1::apply,
    },
    Step {
        from: 1,
        what: "make the store's instance id; drop the v1 delivery ledger (lines in flight at the last stop may be sent again)",
        apply: v1_to_v2::apply,
    },
    Step {
        from: 2,
        what: "give every source record (empty) lists of draining and finished rotated files",
        apply: v2_to_v3::apply,
    },
];
