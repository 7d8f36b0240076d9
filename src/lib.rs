#![deny(rustdoc::broken_intra_doc_links, rust_2018_idioms, unsafe_code)]
// These docs are for logcatch's developers and are built with
// `--document-private-items` (see .ci/run): a module's doc links to the
// private pieces it is made of on purpose, and a stale link still fails.
#![allow(rustdoc::private_intra_doc_links)]
//! logcatch: a crash-safe log collector.
//!
//! Data flows `source -> spool -> kafka`; `store` (sled) holds
//! every piece of state except the spooled lines; `daemon` owns the tasks.
//! Start reading at `daemon::run`.

pub mod config;
pub mod control;
pub mod daemon;
pub mod kafka;
pub mod logging;
pub mod runtime;
pub mod source;
pub mod spool;
pub mod store;
