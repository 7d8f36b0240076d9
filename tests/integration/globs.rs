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

/// gzip `from` into `to` and delete `from`, as logrotate's `compress` does.
fn gzip_away(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).unwrap();
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut e, &bytes).unwrap();
    e.finish().unwrap();
    std::fs::remove_file(from).unwrap();
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
    // Three partitions: the read-back after the kill -9 must look where
    // the lines of each file went (by the source's name, not the file's).
    let cfg = env
        .config(TOPIC)
        .kafka("topic_partitions", "3")
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
    // Rotation 2, while stopped, with logrotate's `compress`: the oldest
    // file is gzipped (`app.log.2.gz` matches too).
    d.stop();
    std::fs::rename(logs.join("app.log.1"), logs.join("app.log.2")).unwrap();
    gzip_away(&logs.join("app.log.2"), &logs.join("app.log.2.gz"));
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
    d.wait_log("deleted the records of files of the glob source", 1, WAIT);
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

/// How many files the churn test creates and deletes
/// (`LOGCATCH_CHURN_FILES`, 10,000 by default; the full run is
/// 100,000).
fn churn_files() -> u64 {
    std::env::var("LOGCATCH_CHURN_FILES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10_000)
}

/// A host that creates and deletes files all day: batches of 1,000 files
/// of one line each appear, are read, and are deleted. Every line arrives
/// once, and the store never holds many more records than the files that
/// exist plus those gone for less than `forget_after`: it does not grow
/// with the files ever seen.
#[test]
fn the_store_stays_bounded_while_files_are_created_and_deleted_all_day() {
    const BATCH: u64 = 1000;
    let total = churn_files().div_ceil(BATCH) * BATCH;
    let env = TestEnv::new();
    let logs = env.path("churn");
    std::fs::create_dir(&logs).unwrap();
    let cfg = env
        .config(TOPIC)
        .source("churn", glob(&logs, "*.log"))
        .source_key("churn", "forget_after", "1s");
    let mut d = env.start(&cfg);
    // None until the daemon answers (its admin socket may not be up yet).
    let rows_of = |d: &Daemon| -> Option<Vec<serde_json::Value>> {
        let out = ctl_run(d.config_path(), &["offsets", "churn", "--json"]);
        (out.code == Some(0)).then(|| out.json().as_array().cloned().unwrap_or_default())
    };
    let mut most_records = 0;
    for b in 0..total / BATCH {
        let batch: Vec<u64> = (b * BATCH..(b + 1) * BATCH).collect();
        for &i in &batch {
            write_numbered(&logs.join(format!("f{i:06}.log")), i, i + 1);
        }
        wait_for("a batch of files read", WAIT, || {
            let rows = rows_of(&d)?;
            most_records = most_records.max(rows.len());
            let read = rows
                .iter()
                .filter(|r| r["offset"] == LINE_LEN as u64)
                .filter(|r| {
                    batch.iter().any(|i| {
                        r["path"]
                            .as_str()
                            .is_some_and(|p| p.ends_with(&format!("f{i:06}.log")))
                    })
                })
                .count();
            (read as u64 == BATCH).then_some(())
        });
        for &i in &batch {
            std::fs::remove_file(logs.join(format!("f{i:06}.log"))).unwrap();
        }
    }
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(total as usize)
        .timeout(Duration::from_secs(120))
        .run();
    assert_exactly_once(&msgs, 0..total);
    wait_for("every gone file's record deleted", WAIT, || {
        rows_of(&d)?.is_empty().then_some(())
    });
    eprintln!("churn: {total} files created and deleted; at most {most_records} records at once");
    assert!(
        most_records as u64 <= 3 * BATCH,
        "{most_records} records at once for batches of {BATCH}: the store grows with the files ever seen"
    );
    d.stop();
}
