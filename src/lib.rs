//! logcatch: a crash-safe log collector. It tails the files named in a YAML
//! config and delivers every line to Kafka exactly once, across restarts,
//! `kill -9`, log rotation, broker failures and config edits.
//!
//! # Layout
//!
//! The folders are the stages of the data flow. One line's way from a file
//! to Kafka:
//!
//! 1. **Config.** [`config`] parses the YAML file and validates it once,
//!    at load, into a typed [`config::Config`]; nothing downstream
//!    re-checks it. Each source becomes a [`config::SourceConfig`]; a glob
//!    source ([`config::GlobSpec`]) becomes one per file it matches, found
//!    by [`source::discover`] and keyed `NAME:/path` ([`config::file_key`]).
//! 2. **Source.** A [`source::tailer::FileTail`] per source (or glob
//!    source's file) follows its file. It knows the file by its [`source::identity::FileIdentity`]
//!    (device, inode, head checksum), so rotation, truncation and
//!    rewrites are noticed; [`source::lines::LineSplitter`] cuts the bytes
//!    into lines; [`source::filewatch::FileWatch`] wakes an idle tailer on
//!    inotify or one shared stat poll. The tailer never commits an offset:
//!    it sends a [`spool::SpoolBatch`] (lines plus the offset after them)
//!    as a [`spool::WriterMsg`].
//! 3. **Spool.** The spool writer appends each batch as one checksummed
//!    frame ([`spool::encode_frame`]) to a segment file, fsyncs a group of
//!    them, and only then commits the offset in the store (the
//!    [`spool`] invariants are the crash-safety argument). A
//!    [`spool::SpoolReader`] hands the frames on, from memory while they
//!    are fresh.
//! 4. **Kafka.** The [`kafka::forwarder::Forwarder`] thread runs one
//!    [`kafka::session::Session`] after another. Every message carries its
//!    line's identity ([`kafka::line_id::LineId`]: the store's instance id,
//!    the batch's seq, the line's index). A session first reads back the
//!    identities Kafka already has past the cursor ([`kafka::ledger`]), then sends
//!    frames through a [`kafka::client::Client`]: the
//!    [`kafka::native::NativeProducer`] (record batches encoded straight
//!    from the spooled lines; TLS through rustls and SASL PLAIN/SCRAM
//!    when [`config::KafkaConfig::tls`] and [`config::KafkaConfig::sasl`]
//!    ask) or librdkafka ([`kafka::librdkafka`]). The
//!    [`kafka::acks::AckTracker`] counts what Kafka acknowledged, and the
//!    [`spool::SpoolCursor`] moves only over acknowledged lines, persisted
//!    together with the [`kafka::ledger::DeliveryLedger`]. A segment the
//!    durable cursor has passed is deleted.
//! 5. **Store.** [`store::Store`] (sled) holds every piece of state except
//!    the spooled lines: each source's [`store::SourceRecord`], the cursor,
//!    the ledger, the instance id and the schema version; [`store::migrations`] upgrades it
//!    one version at a time.
//!
//! Around the flow:
//! - [`daemon`] is the supervisor: it opens the store and spool, recovers,
//!   starts the writer, the forwarder and the tailers, applies reloads by
//!   diff, and stops everything in data-flow order ([`daemon::Shutdown`]).
//! - [`control`] is how an operator steers it: the admin endpoint
//!   ([`control::admin`]), the reports ([`control::offsets`]) and config
//!   reloads ([`control::reload`]); `logcatch-ctl` is its client.
//! - [`runtime`] holds what every stage shares: one
//!   [`runtime::Backoff`] for retry loops, [`runtime::Outage`] for "warn
//!   once, then say when it recovered", [`runtime::lock`] and
//!   [`runtime::now_ms`].
//!
//! Start reading at [`daemon::run`].

#![deny(rustdoc::broken_intra_doc_links, rust_2018_idioms, unsafe_code)]
// These docs are for logcatch's developers and are built with
// `--document-private-items` (see .ci/run): a module's doc links to the
// private pieces it is made of on purpose, and a stale link still fails.
#![allow(rustdoc::private_intra_doc_links)]

pub mod config;
pub mod control;
pub mod daemon;
pub mod kafka;
pub mod logging;
pub mod runtime;
pub mod source;
pub mod spool;
pub mod store;
