//! Kafka refusing logcatch by policy, on a one-node Apache Kafka, each case
//! with both clients (`kafka.client: native` and `librdkafka`) and numbered
//! lines, asserting 0 lost and 0 duplicated and a log message that says
//! what to fix:
//! - [`acl`]: a principal with only WRITE and DESCRIBE on its topics (no
//!   CREATE): a pre-created topic gets every line; a missing one gets an
//!   error naming the missing ACL while its lines wait in the spool, and
//!   they arrive once CREATE is granted;
//! - [`clock`]: the daemon's clock 2 h ahead (libfaketime): Kafka 4 refuses
//!   the timestamps (INVALID_TIMESTAMP), logcatch says the host's clock is
//!   wrong, delivers and dead-letters nothing, keeps running, and after a
//!   restart with the right clock delivers every line once.
//!
//! Each test prints one `kafka_policy:` line with its stall in seconds.
//! These tests never change the broker's defaults beyond what the case
//! needs (an authorizer for [`acl`]; nothing for [`clock`]).

mod acl;
mod clock;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// `logcatch-ctl queue --json` of a running daemon.
fn queue(config: &Path) -> serde_json::Value {
    ctl_json(config, &["queue", "--json"])
}

/// A counter of `logcatch-ctl queue --json` (0 when absent).
fn counter(q: &serde_json::Value, name: &str) -> u64 {
    q[name].as_u64().unwrap_or(0)
}

/// Polls `logcatch-ctl queue --json` until `pred` holds; returns that
/// report. Fails at once if the daemon exits; a daemon not answering yet
/// (just started) is asked again.
fn wait_queue(
    d: &mut Daemon,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut q = serde_json::Value::Null;
    loop {
        d.assert_running();
        let out = ctl_run(d.config_path(), &["queue", "--json"]);
        if out.code == Some(0) {
            q = out.json();
            if pred(&q) {
                return q;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last queue report:\n{q:#}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The lines of the dead-letter file (none when it does not exist).
fn dead_letters(data_dir: &Path) -> usize {
    std::fs::read_to_string(data_dir.join("dead-letter.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}
