//! Glob sources (`path: logs/**/*.log`, `exclude:`) against the real
//! daemon and Kafka: files that match are found at the start, as they
//! appear, and in folders that appear under `**`; each is tailed once
//! under its own record, across `kill -9`; a rotated name the glob also
//! matches is not tailed a second time; a reload that narrows the glob
//! stops the files it no longer matches and deletes their records; a file
//! gone for `forget_after` loses its record. Messages keep the source's
//! name as their key and `source` header, and carry the file's path in a
//! `file` header.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

const TOPIC: &str = "logs";
const WAIT: Duration = Duration::from_secs(60);
/// The daemon's log line when a glob source starts a file.
const STARTED: &str = "a file of the glob source: tailing it";

fn glob(dir: &Path, pattern: &str) -> std::path::PathBuf {
    dir.join(pattern)
}

#[test]
fn a_glob_tails_existing_new_and_nested_files_once_across_kill9() {
    let env = TestEnv::new();
    let logs = env.path("logs");
    std::fs::create_dir(&logs).unwrap();
    write_numbered(&logs.join("a.log"), 0, 1000);
    write_numbered(&logs.join("b.log"), 1000, 2000);
    write_numbered(&logs.join("skip-me.log"), 90_000, 90_100);
    std::fs::write(logs.join("notes.txt"), "not a log\n").unwrap();
    let cfg = env
        .config(TOPIC)
        .source("web", glob(&logs, "**/*.log"))
        .source_key("web", "exclude", "[\"**/skip-*.log\"]");
    let mut d = env.start(&cfg);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(2000)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..2000);
    // A folder that appears under `**`, and a file in it, while writing.
    std::fs::create_dir_all(logs.join("new/deeper")).unwrap();
    write_numbered(&logs.join("new/deeper/c.log"), 2000, 3000);
    d.wait_log(STARTED, 3, WAIT);
    d.kill9();
    write_numbered(&logs.join("a.log"), 3000, 4000);
    write_numbered(&logs.join("new/deeper/c.log"), 4000, 5000);
    d.restart();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(5000)
        .quiet(Duration::from_secs(2))
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..5000);
    // In file order within each file (one key holds them all).
    let mut last: std::collections::BTreeMap<String, u64> = Default::default();
    for m in &msgs {
        let n = number_of(&m.value).unwrap();
        let prev = last.insert(m.header("file").unwrap_or_default(), n);
        assert!(
            prev.is_none_or(|p| p < n),
            "line {n} after {prev:?} in {m:?}"
        );
    }
    for m in &msgs {
        assert_eq!(m.key_str().as_deref(), Some("web"), "{m:?}");
        assert_eq!(m.header("source").as_deref(), Some("web"), "{m:?}");
        let file = m.header("file").expect("a file header");
        let n = number_of(&m.value).unwrap();
        let want = match n {
            0..1000 | 3000..4000 => "a.log",
            1000..2000 => "b.log",
            _ => "c.log",
        };
        assert!(file.ends_with(want), "line {n} came with file {file}");
    }
    d.stop();
}

/// `app.log*` also matches `app.log.1` and `app.log.2`: after rename
/// rotations (with late lines through the old handle, and a restart in
/// between) the rotated files are read by `app.log`'s tailer alone, every
/// line once; no tailer is started under their names.
#[test]
fn a_rotated_name_the_glob_also_matches_is_not_tailed_twice() {
    let env = TestEnv::new();
    let logs = env.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    write_numbered(&app, 0, 1000);
    let cfg = env
        .config(TOPIC)
        .source("app", glob(&logs, "app.log*"))
        .source_key("app", "rotate_wait", "1s");
    let mut d = env.start(&cfg);
    d.consume(&env.addr(), TOPIC)
        .until_count(1000)
        .timeout(WAIT)
        .expect("the first lines");
    // Rotation 1, while running: late lines go to the renamed file.
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    write_numbered(&app, 1000, 2000);
    write_numbered(&logs.join("app.log.1"), 2000, 2100);
    d.consume(&env.addr(), TOPIC)
        .until_count(2100)
        .timeout(WAIT)
        .expect("the lines after rotation 1");
    // Rotation 2, while stopped.
    d.stop();
    std::fs::rename(logs.join("app.log.1"), logs.join("app.log.2")).unwrap();
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    write_numbered(&app, 2100, 3000);
    d.restart();
    // Long enough for discovery passes over the rotated names.
    std::thread::sleep(Duration::from_secs(3));
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(3000)
        .quiet(Duration::from_secs(2))
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..3000);
    let started = d.log_lines(STARTED);
    assert!(
        !started.iter().any(|l| l.contains("app.log.")),
        "a rotated name got a tailer of its own:\n{}",
        started.join("\n")
    );
    d.stop();
}

#[test]
fn narrowing_the_glob_by_reload_stops_a_file_and_deletes_its_record() {
    let env = TestEnv::new();
    let logs = env.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let (a, b) = (logs.join("a.log"), logs.join("b.log"));
    write_numbered(&a, 0, 500);
    write_numbered(&b, 500, 1000);
    let cfg = env.config(TOPIC).source("web", glob(&logs, "*.log"));
    let mut d = env.start(&cfg);
    d.consume(&env.addr(), TOPIC)
        .until_count(1000)
        .timeout(WAIT)
        .expect("both files");
    let b_key = format!("web:{}", b.display());
    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    assert!(offsets_row(&rows, &b_key).is_some(), "{rows:#}");
    d.rewrite_config(
        &env.config(TOPIC)
            .source("web", glob(&logs, "a*.log"))
            .render(),
    );
    d.wait_log("config reloaded", 1, WAIT);
    write_numbered(&a, 1000, 1500);
    write_numbered(&b, 50_000, 50_500);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(1500)
        .quiet(Duration::from_secs(2))
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..1500);
    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    assert!(offsets_row(&rows, &b_key).is_none(), "{rows:#}");
    assert!(
        offsets_row(&rows, &format!("web:{}", a.display())).is_some(),
        "{rows:#}"
    );
    d.stop();
}

#[test]
fn a_file_gone_for_forget_after_loses_its_record() {
    let env = TestEnv::new();
    let logs = env.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let gone = logs.join("gone.log");
    write_numbered(&gone, 0, 100);
    let cfg = env
        .config(TOPIC)
        .source("web", glob(&logs, "*.log"))
        .source_key("web", "forget_after", "1s");
    let mut d = env.start(&cfg);
    d.consume(&env.addr(), TOPIC)
        .until_count(100)
        .timeout(WAIT)
        .expect("the file's lines");
    let key = format!("web:{}", gone.display());
    assert!(offsets_row(&ctl_json(d.config_path(), &["offsets", "--json"]), &key).is_some());
    std::fs::remove_file(&gone).unwrap();
    d.wait_log("deleting its record", 1, WAIT);
    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    assert!(offsets_row(&rows, &key).is_none(), "{rows:#}");
    d.stop();
}

/// `app.log.1` was there before the first start, so it is a file of its
/// own; a rotation then puts `app.log`'s file at its path. That file is
/// `app.log`'s tailer's to drain: `app.log.1`'s tailer does not read it
/// again from 0 (nor after a restart), and every line arrives once.
#[test]
fn a_path_that_receives_another_files_rotation_does_not_read_it_again() {
    let env = TestEnv::new();
    let logs = env.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    let (one, two) = (logs.join("app.log.1"), logs.join("app.log.2"));
    write_numbered(&one, 5000, 5500);
    write_numbered(&app, 0, 1000);
    let cfg = env
        .config(TOPIC)
        .source("app", glob(&logs, "app.log*"))
        .source_key("app", "rotate_wait", "1s");
    let mut d = env.start(&cfg);
    d.consume(&env.addr(), TOPIC)
        .until_count(1500)
        .timeout(WAIT)
        .expect("both files");
    std::fs::rename(&one, &two).unwrap();
    std::fs::rename(&app, &one).unwrap();
    write_numbered(&app, 1000, 2000);
    write_numbered(&one, 2000, 2100);
    d.consume(&env.addr(), TOPIC)
        .until_count(2600)
        .timeout(WAIT)
        .expect("the lines after the rotation");
    d.stop();
    write_numbered(&app, 2100, 2500);
    d.restart();
    std::thread::sleep(Duration::from_secs(3));
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(3000)
        .quiet(Duration::from_secs(2))
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..2500, 5000..5500]);
    d.stop();
}

/// `logcatch-ctl offsets NAME` lists a glob source's files (each with
/// `source` = NAME); `reset NAME --file PATH --to beginning` sends that
/// one file again and leaves the other alone.
#[test]
fn ctl_lists_a_glob_sources_files_and_resets_one_of_them() {
    let env = TestEnv::new();
    let logs = env.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let (a, b) = (logs.join("a.log"), logs.join("b.log"));
    write_numbered(&a, 0, 300);
    write_numbered(&b, 300, 600);
    let cfg = env
        .config(TOPIC)
        .source("web", glob(&logs, "*.log"))
        .source("other", env.path("other.log"));
    let mut d = env.start(&cfg);
    d.consume(&env.addr(), TOPIC)
        .until_count(600)
        .timeout(WAIT)
        .expect("both files");
    let rows = ctl_json(d.config_path(), &["offsets", "web", "--json"]);
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in rows {
        assert_eq!(r["source"], "web", "{r:#}");
        assert_eq!(r["configured"], true, "{r:#}");
        assert_eq!(r["offset"], 300 * LINE_LEN as u64, "{r:#}");
    }
    let b_text = b.to_str().unwrap();
    let out = ctl_run(
        d.config_path(),
        &[
            "reset",
            "web",
            "--file",
            b_text,
            "--to",
            "beginning",
            "--yes",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(900)
        .quiet(Duration::from_secs(2))
        .timeout(WAIT)
        .run();
    let counts = counts_of(&msgs);
    assert!(
        (0..300).all(|n| counts.get(&n) == Some(&1)),
        "a.log was sent again"
    );
    assert!(
        (300..600).all(|n| counts.get(&n) == Some(&2)),
        "b.log was not sent again"
    );
    assert_eq!(msgs.len(), 900);
    d.stop();
}
