//! Rename rotation with `compress` and no `delaycompress`: right after the
//! rotation (and the application's reopen) gzip turns `app.log.1` into
//! `app.log.1.gz` and deletes the plain file. A running daemon still has
//! the renamed file open and finishes it. A stopped one has only the
//! `.gz` left for the lines it had not read: it must read them from there
//! (decompressed), exactly once, and nothing else of the `.gz`.
//!
//! The stopped case waits for that feature (reading the rest from the
//! `.gz` sibling).

use std::time::Duration;

use crate::common::logrotate::{rotate_while_running, Compress, Logrotate, Naming};
use crate::common::*;

const TOPIC: &str = "logs";
/// The daemon's warning when the file it read last is gone at a start.
const GONE: &str = "the previously read file is gone";

/// Four rotations 2 s apart, each `app.log.1` gzipped at once.
#[test]
fn compress_rotations_while_running_deliver_every_line_once() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered).compress(Compress::Immediate);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    rotate_while_running(&mut lr, &mut d, 4, Duration::from_secs(2), None);
    lr.write_for(Duration::from_millis(500));
    assert!(env.path("app.log.1.gz").exists() && !env.path("app.log.1").exists());

    lr.delivered(&env, &mut d, TOPIC);
    d.stop();
}

/// `kill -9` after everything was delivered, 2,000 lines written while
/// the daemon is down, then rotation and compression: those lines exist
/// only in `app.log.1.gz`. Then 500 lines in the new file, and a start:
/// all of them exactly once, and no file reported gone.
#[test]
fn compress_after_kill9_with_unread_lines_reads_the_rest_from_the_gz() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered).compress(Compress::Immediate);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    lr.delivered(&env, &mut d, TOPIC);
    d.kill9();

    lr.write(2_000); // unread
    lr.rotate();
    assert!(env.path("app.log.1.gz").exists() && !env.path("app.log.1").exists());
    lr.write(500);
    d.restart();

    lr.delivered(&env, &mut d, TOPIC);
    assert_eq!(d.log_count(GONE), 0, "{}", d.log_tail(40));
    d.stop();
}
