//! copytruncate: logrotate copies `app.log` to `app.log.1` (shifting older
//! copies to `.2`, `.3`) or to a `dateext` name, then truncates `app.log`
//! to 0 in place. The lines the daemon had not read at the truncation exist
//! only in the copy: it must read them from there, then the truncated file
//! from 0. Every line exactly once, each with its offset in its own
//! generation of the file; while running, across `kill -9`, and while
//! stopped.
//!
//! How the writer behaves, and why:
//! - It writes whole numbered lines through an `O_APPEND` handle
//!   ([`Logrotate::write`]), a few thousand a second, and a burst of 1,000
//!   right before each copy, so the copy usually holds lines the daemon
//!   has not read yet.
//! - It writes nothing between the copy and the truncate: lines written
//!   there are in neither file (logrotate itself loses them), so no
//!   collector can deliver them.
//! - After a truncate it waits until the daemon is back on the file at the
//!   path (its log says `tailing ... path=app.log`) before writing again
//!   and before the next rotation. A truncated file that outgrows the read
//!   position before the daemon looks is caught only by the tailer's
//!   timed head check (its documented limit), and a second copytruncate
//!   before the daemon finished the previous copy leaves a generation
//!   that only the second copy holds (a limit of this step).

use std::thread;
use std::time::Duration;

use crate::common::logrotate::{opened, wait_back_on_path, Logrotate, Naming, ROTATION_WAIT};
use crate::common::*;

const WAIT: Duration = ROTATION_WAIT;
const TOPIC: &str = "logs";
/// Its log line when it reads the rest from logrotate's copy.
const FROM_COPY: &str = "reading the rest from logrotate's copy";
/// Its log line when no copy was found.
const GAP: &str = "may be lost (a gap)";

/// The daemon's gap count for source `app`, from `logcatch-ctl offsets`.
fn truncation_gaps(d: &Daemon) -> u64 {
    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    let row = offsets_row(&rows, "app").expect("a row for app");
    row["truncation_gaps"]
        .as_u64()
        .unwrap_or_else(|| panic!("no truncation_gaps in {row:#}"))
}

/// Five copytruncates while the daemon runs, a second apart, at the
/// given names: every line exactly once, each copy used, no gap.
fn copytruncate_while_running(naming: Naming) {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, naming);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    const ROTATIONS: usize = 5;
    for _ in 0..ROTATIONS {
        lr.write_for(Duration::from_millis(1_000));
        lr.write(1_000);
        let before = opened(&d);
        lr.copytruncate();
        wait_back_on_path(&mut d, &log, before);
    }
    lr.write_for(Duration::from_millis(500));
    lr.delivered(&env, &mut d, TOPIC);
    assert_eq!(d.log_count(FROM_COPY), ROTATIONS, "{}", d.log_tail(40));
    assert_eq!(d.log_count(GAP), 0, "{}", d.log_tail(40));
    assert_eq!(truncation_gaps(&d), 0);
    d.stop();
}

/// logrotate `copytruncate` with `app.log.1`, `.2`, `.3`.
#[test]
fn copytruncate_with_numbered_copies_while_running_delivers_every_line_once() {
    copytruncate_while_running(Naming::Numbered);
}

/// logrotate `copytruncate` with `dateext` names.
#[test]
fn copytruncate_with_dateext_copies_while_running_delivers_every_line_once() {
    copytruncate_while_running(Naming::DateExt);
}

/// copytruncate every ~1 s with `kill -9` at seeded random moments: right
/// after a copytruncate (before or while the daemon drains the copy),
/// or while lines are written; lines are also written while the daemon is
/// down. 0 lost, 0 duplicated.
#[test]
fn copytruncate_with_kill9_at_random_moments_loses_and_duplicates_nothing() {
    let seed = seed_from_env_or_time();
    eprintln!("copytruncate kill9: seed {seed} (set LOGCATCH_TEST_SEED to replay)");
    let mut rng = Rng::new(seed);
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    let mut kills = 0;
    const ROTATIONS: usize = 8;
    for _ in 0..ROTATIONS {
        lr.write_for(Duration::from_millis(rng.range(200..900)));
        lr.write(1_000);
        let mut before = opened(&d);
        lr.copytruncate();
        match rng.range(0..3) {
            // Right after the copytruncate: before the daemon noticed it,
            // or while it drains the copy.
            0 => {
                thread::sleep(Duration::from_millis(rng.range(0..40)));
                before = kill_and_restart(&mut d, &mut lr, &mut rng);
                kills += 1;
            }
            // Once it is back on the path, while lines are written.
            1 => {
                wait_back_on_path(&mut d, &log, before);
                lr.write_for(Duration::from_millis(rng.range(50..400)));
                before = kill_and_restart(&mut d, &mut lr, &mut rng);
                kills += 1;
            }
            _ => {}
        }
        wait_back_on_path(&mut d, &log, before);
    }
    lr.write_for(Duration::from_millis(300));
    eprintln!(
        "copytruncate kill9: {} lines, {ROTATIONS} copytruncates, {kills} kill -9",
        lr.written()
    );
    lr.delivered(&env, &mut d, TOPIC);
    // Which ways to the copy the kills took (random; the in-process tests
    // cover each one deterministically).
    let at_start = d
        .log_lines(FROM_COPY)
        .iter()
        .filter(|l| l.contains("since the last run"))
        .count();
    eprintln!(
        "copytruncate kill9: copy used while running {}, at a start after the truncation {at_start}, \
         copy drain resumed after kill -9 {}",
        d.log_count(FROM_COPY) - at_start,
        d.log_count("finishing the old file first"),
    );
    assert_eq!(d.log_count(GAP), 0, "{}", d.log_tail(40));
    d.stop();
}

/// `kill -9`, 300 lines written while the daemon is down, a random down
/// time, restart. Returns how many files the daemon had opened before the
/// restart (for [`wait_back_on_path`]).
fn kill_and_restart(d: &mut Daemon, lr: &mut Logrotate, rng: &mut Rng) -> usize {
    d.assert_running();
    d.kill9();
    lr.write(300);
    thread::sleep(Duration::from_millis(rng.range(0..200)));
    let before = opened(d);
    d.restart();
    before
}

/// copytruncate while the daemon is stopped, with 2,000 lines it had not
/// read: they come from the copy, then the truncated file's new lines.
#[test]
fn copytruncate_while_stopped_reads_the_unread_lines_from_the_copy() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    lr.delivered(&env, &mut d, TOPIC);
    d.stop();

    lr.write(2_000); // unread: written while stopped
    let copy = lr.copytruncate();
    lr.write(500);
    d.restart();

    lr.delivered(&env, &mut d, TOPIC);
    let used = d.wait_log(FROM_COPY, 1, WAIT);
    assert!(
        used.contains(&copy.display().to_string()) && used.contains("since the last run"),
        "{used}"
    );
    assert_eq!(truncation_gaps(&d), 0);
    d.stop();
}

/// A truncation with no copy beside the file (while stopped): the lines
/// after the stored offset are gone, and the daemon says so: a warning
/// naming the offset, and `truncation_gaps` in `logcatch-ctl offsets`.
#[test]
fn a_truncation_without_a_copy_is_reported_as_a_gap() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut d = env.start_delivered(TOPIC, "app", &log, 0..1000, WAIT);
    d.stop();

    write_numbered(&log, 1000, 1500); // unread, then truncated away
    truncate(&log);
    write_numbered(&log, 1500, 1600);
    d.restart();

    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|msgs| has_all(msgs, 1500..1600))
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..1000, 1500..1600]);
    let warn = d.wait_log(GAP, 1, WAIT);
    assert!(warn.contains("offset=100000"), "{warn}");
    assert_eq!(truncation_gaps(&d), 1);
    d.stop();
}
