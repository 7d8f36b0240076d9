//! Rename rotation, logrotate's `create` mode: `app.log` is renamed to
//! `app.log.1` (older files shift to `.2`, `.3`) or to a `dateext` name, a
//! new empty `app.log` is created, and the application reopens its log.
//! The daemon must read the renamed file to its end, then the new file
//! from 0: every line exactly once, with its offset in its own file and
//! its exact bytes; while running, across `kill -9` at seeded moments
//! (the seed is printed; `LOGCATCH_TEST_SEED` replays it), with an empty
//! file, with a partial last line, and with late lines the application
//! writes to the renamed file after the new one exists (`rotate_wait`).
//!
//! The writer is [`Logrotate`]: the application's `O_APPEND` handle stays
//! on the renamed file until it reopens, as a real one's does.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::logrotate::{
    opened, rotate_while_running, wait_back_on_path, Logrotate, Naming,
};
use crate::common::*;

const TOPIC: &str = "logs";
/// The daemon's warning when the file it read last is gone at a start.
const GONE: &str = "the previously read file is gone";
/// Its log line when it finishes a file renamed while it was down.
const RESUMED: &str = "finishing the old file first";
/// Rotations per run, and the time between them.
const ROTATIONS: usize = 4;
const INTERVAL: Duration = Duration::from_secs(3);

/// A seeded [`Rng`] for scenario `name`, its seed printed.
fn seeded(name: &str) -> Rng {
    let seed = seed_from_env_or_time();
    eprintln!("{name}: seed {seed} (set LOGCATCH_TEST_SEED to replay)");
    Rng::new(seed)
}

/// [`ROTATIONS`] rename rotations about [`INTERVAL`] apart with the given
/// names; with `rng`, `kill -9`s at seeded moments. Every line once, in
/// file order, and no file reported gone.
fn renames_while_running(naming: Naming, mut rng: Option<Rng>) {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, naming);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    let kills = rotate_while_running(&mut lr, &mut d, ROTATIONS, INTERVAL, rng.as_mut());
    lr.write_for(Duration::from_millis(500));
    lr.delivered(&env, &mut d, TOPIC);
    eprintln!(
        "rename {naming:?}: {} lines, {ROTATIONS} rotations, kill -9 at {kills:?}, \
         renamed file finished after a restart {} times",
        lr.written(),
        d.log_count(RESUMED)
    );
    assert_eq!(d.log_count(GONE), 0, "{}", d.log_tail(40));
    d.stop();
}

/// `app.log.1`, `.2`, `.3`, a rotation every 3 s.
#[test]
fn rename_rotations_while_running_deliver_every_line_once() {
    renames_while_running(Naming::Numbered, None);
}

/// `app.log.1`, `.2`, `.3`, with `kill -9`s at seeded moments of the
/// rotations (while writing, between the rename and the create, right
/// after the application reopened).
#[test]
fn rename_rotations_with_kill9_at_seeded_moments_lose_and_duplicate_nothing() {
    renames_while_running(Naming::Numbered, Some(seeded("rename kill9")));
}

/// `dateext` names (`app.log-2026120318`, ...), a rotation every 3 s.
#[test]
fn dateext_rename_rotations_while_running_deliver_every_line_once() {
    renames_while_running(Naming::DateExt, None);
}

/// `dateext` names with `kill -9`s at seeded moments.
#[test]
fn dateext_rename_rotations_with_kill9_at_seeded_moments_lose_and_duplicate_nothing() {
    renames_while_running(Naming::DateExt, Some(seeded("dateext rename kill9")));
}

/// Where the late-write scenario kills the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LateKill {
    Never,
    /// After the rename and the new file's first lines, before the late
    /// lines reach the renamed file.
    BeforeLateLines,
    /// After the late lines, within `rotate_wait`.
    AfterLateLines,
}

/// The application keeps its handle on the renamed file: after
/// `mv app.log app.log.1` another writer puts 100 lines in the new
/// `app.log`, and 1 s later 100 more go to the old handle (now
/// `app.log.1`); then the application reopens and writes 100 more to the
/// new file. The source has `rotate_wait: 3s`: the daemon keeps reading
/// the renamed file until it was idle that long after its end, while it
/// reads the new one. Every line once (no order across the two files).
fn late_lines(kill: LateKill) {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered);
    lr.write(1_000);
    let cfg = env
        .config(TOPIC)
        .source("app", &log)
        .source_key("app", "rotate_wait", "3s");
    let mut d = env.start(&cfg);
    let mut rng = (kill != LateKill::Never).then(|| seeded(&format!("late lines {kill:?}")));
    lr.write_for(Duration::from_millis(500));

    lr.rename_away();
    let renamed = Instant::now();
    lr.create();
    lr.write_via_path(100);
    if let (LateKill::BeforeLateLines, Some(r)) = (kill, rng.as_mut()) {
        thread::sleep(Duration::from_millis(r.range(0..700)));
        d.kill9();
        thread::sleep(Duration::from_millis(r.range(0..200)));
        d.restart();
    }
    thread::sleep(Duration::from_secs(1).saturating_sub(renamed.elapsed()));
    lr.write(100); // late: through the old handle, into app.log.1
    if let (LateKill::AfterLateLines, Some(r)) = (kill, rng.as_mut()) {
        thread::sleep(Duration::from_millis(r.range(0..2_000)));
        d.kill9();
        d.restart();
    }
    lr.reopen();
    lr.write(100);

    lr.delivered(&env, &mut d, TOPIC);
    assert_eq!(d.log_count(GONE), 0, "{}", d.log_tail(40));
    d.stop();
}

#[test]
fn late_lines_in_the_renamed_file_are_delivered_within_rotate_wait() {
    late_lines(LateKill::Never);
}

/// `kill -9` between the rename and the late lines: after the restart the
/// renamed file is still read (the drain resumes from the store).
#[test]
fn late_lines_after_a_kill9_between_rename_and_them_are_delivered_once() {
    late_lines(LateKill::BeforeLateLines);
}

#[test]
fn late_lines_with_a_kill9_after_them_are_delivered_once() {
    late_lines(LateKill::AfterLateLines);
}

/// The empty file at the path is rotated (as logrotate without
/// `notifempty` does), then 1,000 lines go to the new one. With `rng`, a
/// `kill -9` at a seeded moment: before the rotation (it happens while
/// the daemon is down), right after it, or after the new lines; the
/// daemon restarts after the new lines.
fn rotate_the_empty_file(lr: &mut Logrotate, d: &mut Daemon, rng: Option<&mut Rng>) {
    let at = rng.map(|r| r.range(0..3));
    if let Some(at) = at {
        let moments = [
            "before the rotation",
            "after the rotation",
            "after the new lines",
        ];
        eprintln!("empty file: kill -9 {}", moments[at as usize]);
    }
    if at == Some(0) {
        d.kill9();
    }
    lr.rotate();
    if at == Some(1) {
        d.kill9();
    }
    lr.write(1_000);
    if let Some(at) = at {
        if at == 2 {
            d.kill9();
        }
        d.restart();
    }
}

/// Two rotations of an empty file: the one the daemon started on, and the
/// new empty file after a rotation of a file with lines.
fn empty_file_rotations(mut rng: Option<Rng>) {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered);
    lr.create(); // nothing logged yet
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    wait_back_on_path(&mut d, &log, 0);
    rotate_the_empty_file(&mut lr, &mut d, rng.as_mut());

    lr.write_for(Duration::from_millis(500));
    let before = opened(&d);
    lr.rotate();
    wait_back_on_path(&mut d, &log, before);
    rotate_the_empty_file(&mut lr, &mut d, rng.as_mut());

    lr.delivered(&env, &mut d, TOPIC);
    assert_eq!(d.log_count(GONE), 0, "{}", d.log_tail(40));
    d.stop();
}

#[test]
fn rotating_an_empty_file_delivers_every_line_once() {
    empty_file_rotations(None);
}

#[test]
fn rotating_an_empty_file_with_a_kill9_at_a_seeded_moment_delivers_every_line_once() {
    empty_file_rotations(Some(seeded("empty file kill9")));
}

/// The renamed file's last line has no newline: once the daemon finished
/// that file, the partial line is delivered as a line, once, exactly as
/// written (its 99 bytes, its offset). With `rng`, a `kill -9` at a
/// seeded moment: before the rotation (with the partial line held or not
/// yet read), right after it, or after the new file's lines.
fn partial_last_line(mut rng: Option<Rng>) {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    lr.write_partial(); // line 1000, no newline
    let at = rng.as_mut().map(|r| (r.range(0..3), r.range(0..300)));
    if let Some((at, ms)) = at {
        let moments = [
            format!("{ms} ms after the partial line, before the rotation"),
            "after the rotation".to_string(),
            "after the new lines".to_string(),
        ];
        eprintln!("partial last line: kill -9 {}", moments[at as usize]);
    }
    match at {
        Some((0, ms)) => {
            thread::sleep(Duration::from_millis(ms));
            d.kill9();
        }
        // Let the daemon read (and hold) the partial line.
        _ => thread::sleep(Duration::from_millis(300)),
    }
    lr.rotate();
    if let Some((1, _)) = at {
        d.kill9();
    }
    lr.write(1_000);
    if let Some((at, _)) = at {
        if at == 2 {
            d.kill9();
        }
        d.restart();
    }

    lr.delivered(&env, &mut d, TOPIC);
    d.stop();
}

#[test]
fn a_partial_last_line_of_a_renamed_file_is_delivered_once_as_written() {
    partial_last_line(None);
}

#[test]
fn a_partial_last_line_of_a_renamed_file_survives_a_kill9_at_a_seeded_moment() {
    partial_last_line(Some(seeded("partial last line kill9")));
}

/// While a renamed file is drained, `logcatch-ctl offsets` shows it as a
/// sub-row of its source (its new name, device:inode, offset), in the
/// table and in `--json`; once it is finished the sub-row goes.
#[test]
fn ctl_offsets_shows_the_drained_file_as_a_sub_row() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered);
    lr.write(100);
    let cfg = env
        .config(TOPIC)
        .source("app", &log)
        .source_key("app", "rotate_wait", "4s");
    let mut d = env.start(&cfg);
    lr.delivered(&env, &mut d, TOPIC);
    let rotated = lr.rename_away();
    lr.create();
    lr.write_via_path(10);
    lr.write(5); // late, into the renamed file
    let size = std::fs::metadata(&rotated).unwrap().len();
    let row = wait_offsets_row(
        d.config_path(),
        "app",
        "the drained file's sub-row at its end",
        Duration::from_secs(30),
        |r| r["draining"][0]["offset"].as_u64() == Some(size),
    );
    let sub = &row["draining"][0];
    assert_eq!(sub["path"].as_str(), rotated.to_str(), "{row:#}");
    assert_eq!(sub["lag_bytes"].as_u64(), Some(0), "{row:#}");
    let table = ctl_run(d.config_path(), &["offsets"]);
    assert!(
        table.stdout.contains(&format!("└ {}", rotated.display())),
        "{}",
        table.describe()
    );
    wait_offsets_row(
        d.config_path(),
        "app",
        "the sub-row gone after rotate_wait",
        Duration::from_secs(30),
        |r| r["draining"].as_array().is_some_and(|a| a.is_empty()),
    );
    lr.delivered(&env, &mut d, TOPIC);
    d.stop();
}
