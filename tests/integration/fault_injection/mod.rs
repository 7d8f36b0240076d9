//! Fault injection against the real `logcatch` binary and a real (Apache
//! Kafka) broker behind the outage proxy: [`soak`] runs many faults at once on a
//! seeded schedule; [`spool_limits`] drives the spool into its cap and a
//! full disk, one fault at a time.

mod soak;
mod spool_limits;
