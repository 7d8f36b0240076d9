//! The integration tests: the real `logcatch` and `logcatch-ctl` binaries
//! against a real (Apache Kafka) broker, one module per concern. Each test
//! has its own broker and temp dir and asserts exact counts of numbered
//! lines (see [`common::files`]).
//!
//! One test crate, not one per file: the helpers in `tests/common/` are
//! compiled and linked once, and `dead_code` is checked over every test
//! that uses them.

#[path = "../common/mod.rs"]
mod common;

mod broker_smoke;
mod cluster;
mod ctl;
mod fault_injection;
mod globs;
mod hostile_input;
mod kafka_policy;
mod pipeline;
mod power_loss;
mod readback;
mod reload;
mod rotation;
mod secure_broker;
mod security;
mod store_migration;
mod topic_limits;
