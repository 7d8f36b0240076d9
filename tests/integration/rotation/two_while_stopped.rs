//! Two rename rotations while the daemon is stopped (SIGTERM, or
//! `kill -9` while it reads): the file it read last has unread lines and
//! is now `app.log.2`, a whole generation it never saw is `app.log.1`, and
//! a third is at the path. At the start every line of all three
//! generations must arrive exactly once, in file order.
//!
//! The daemon drains the file it knew from its offset, finds the middle
//! generation beside the path (named like a rotation, written after its
//! last commit, named by no position of its record) and reads it from 0,
//! then the file at the path.

use std::thread;
use std::time::Duration;

use crate::common::logrotate::{Logrotate, Naming};
use crate::common::*;

const TOPIC: &str = "logs";

/// How the daemon stops before the rotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM after everything written so far was delivered.
    Sigterm,
    /// `kill -9` a seeded moment after 2,000 more lines were written
    /// (while it reads them), once the first 1,000 were delivered (a
    /// daemon killed before it read anything has no record: the rotated
    /// files of a source it never read are not its to find).
    Kill9,
}

fn two_rotations_while_stopped(stop: Stop) {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    match stop {
        Stop::Sigterm => {
            lr.delivered(&env, &mut d, TOPIC);
            d.stop();
        }
        Stop::Kill9 => {
            let seed = seed_from_env_or_time();
            eprintln!(
                "two rotations while stopped: seed {seed} (set LOGCATCH_TEST_SEED to replay)"
            );
            let mut rng = Rng::new(seed);
            lr.delivered(&env, &mut d, TOPIC);
            lr.write(2_000);
            thread::sleep(Duration::from_millis(rng.range(0..300)));
            d.assert_running();
            d.kill9();
        }
    }

    lr.write(1_000); // the first generation's unread rest
    lr.rotate();
    lr.write(1_000); // the second generation: never seen by the daemon
    lr.rotate();
    lr.write(1_000); // the third, at the path
    d.restart();

    lr.delivered(&env, &mut d, TOPIC);
    d.stop();
}

#[test]
fn two_rotations_while_stopped_by_sigterm_deliver_all_three_generations_once() {
    two_rotations_while_stopped(Stop::Sigterm);
}

#[test]
fn two_rotations_after_a_kill9_deliver_all_three_generations_once() {
    two_rotations_while_stopped(Stop::Kill9);
}
