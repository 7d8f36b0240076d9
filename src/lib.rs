//! logcatch: a crash-safe log collector.
//!
//! Data flows `tailer -> spool -> forwarder -> Kafka`; `store` (sled) holds
//! every piece of state except the spooled lines; `daemon` owns the tasks.
//! Start reading at `daemon::run`.

pub mod admin;
pub mod config;
pub mod lines;
pub mod spool;
pub mod store;

pub mod daemon;
pub mod filewatch;
pub mod forwarder;
pub mod ledger;
pub mod logging;
#[path = "../migrations/mod.rs"]
pub mod migrations;
pub mod offsets;
pub mod producer;
pub mod reload;
pub mod tailer;
