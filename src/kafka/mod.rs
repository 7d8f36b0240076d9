//! kafka: delivering spooled lines. The [`forwarder`] reads the spool and
//! drives one of two clients, [`native`] or librdkafka; the [`ledger`]
//! records what Kafka acknowledged so that a crash is followed by a
//! read-back instead of a resend.
pub mod forwarder;
pub mod ledger;
pub mod native;
