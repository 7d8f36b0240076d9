//! kafka: owns delivering spooled lines to Kafka, and the spool cursor that
//! says how far delivery got. The [`forwarder`] thread reads the
//! [`spool`](crate::spool) and runs one [`session`] after another; each
//! session sends with one [`client`]: the [`native`] producer or
//! [`librdkafka`]. What Kafka answered is tracked frame by frame in
//! [`acks`], and the [`ledger`] records where acknowledged lines are in
//! Kafka, so that a crash is followed by a read-back instead of a resend.
//!
//! Parts, in the order a line meets them:
//! - [`forwarder`]: the thread, its counters ([`forwarder::ForwardStats`])
//!   and the back-off between sessions.
//! - [`session`]: one client's life: read back, read a frame, send it,
//!   take in the answers, persist the cursor and ledger.
//! - [`client`]: the session's client behind one enum, and topic creation.
//! - [`native`]: logcatch's own producer (record batches, connections,
//!   request framing, producer state).
//! - [`librdkafka`]: the librdkafka settings, delivery reports, sending and
//!   its admin client.
//! - [`acks`]: which sent lines are done (acknowledged, or in the
//!   dead-letter file), hence how far the cursor may move.
//! - [`line_id`]: the identity every message carries (the `lc-id`
//!   header: instance id, batch seq, line index).
//! - [`ledger`]: the delivery ledger persisted with the cursor, and the
//!   read-back that finds, by identity, what Kafka already has past it.
//!
//! Invariants: the cursor in the [`store`](crate::store) only moves over
//! lines Kafka acknowledged or the dead-letter file holds; it is durable
//! before the spool deletes a segment it passed; every session reads back
//! what Kafka has past the cursor before sending anything, so lines are
//! delivered exactly once across crashes (see [`forwarder`] and
//! [`ledger`] for the argument).
//!
//! Must never: drop a line (it is delivered, or dead-lettered with an error
//! log), or send one that the read-back found in Kafka.
pub mod acks;
pub mod client;
pub mod forwarder;
pub mod ledger;
pub mod librdkafka;
pub mod line_id;
pub mod native;
pub mod session;
