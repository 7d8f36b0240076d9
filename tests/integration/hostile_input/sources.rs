//! Sources that are not a plain growing file: one that shrinks while it is
//! being read, paths that are a directory or a FIFO, and a file that does
//! not exist yet.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use super::{TOPIC, WAIT};
use crate::common::*;

/// Lines in the file before the truncation (20 MB).
const LINES: u64 = 200_000;
/// The first number of the lines written after it.
const NEW: u64 = 5_000_000;

/// After the truncation to `half_lines` lines, with `committed` bytes read
/// before it: the new lines arrived once, the spooled ones all arrived, and
/// the lines the truncation kept were read again from 0.
fn check_after_shrink(msgs: &[Msg], committed: u64, half_lines: u64) {
    let counts = number_counts(msgs, "app");
    let new_bad: Vec<u64> = (NEW..NEW + 1000)
        .filter(|n| counts.get(n) != Some(&1))
        .collect();
    assert!(
        new_bad.is_empty(),
        "lines written after the truncation not delivered exactly once: {}",
        ranges(new_bad)
    );
    let spooled_missing: Vec<u64> = (0..committed / LINE_LEN as u64)
        .filter(|n| !counts.contains_key(n))
        .collect();
    assert!(
        spooled_missing.is_empty(),
        "lines that were in the spool before the truncation were lost: {}",
        ranges(spooled_missing)
    );
    let unexpected: Vec<u64> = counts
        .keys()
        .copied()
        .filter(|n| !(*n < LINES || (NEW..NEW + 1000).contains(n)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected numbers {}",
        ranges(unexpected)
    );
    let reread = (0..half_lines)
        .filter(|n| counts.get(n).copied().unwrap_or(0) >= 2)
        .count();
    eprintln!(
        "shrink: {} messages; {reread} of the {half_lines} lines kept by the truncation were read again from 0 (expected: all)",
        msgs.len()
    );
    assert_eq!(
        reread as u64, half_lines,
        "after the truncation the file was not read again from 0"
    );
}

/// A large file is truncated to half of what the daemon already read: it
/// keeps running, warns about the truncation, reads the file again from 0,
/// and delivers the lines written after.
#[test]
fn file_shrinks_while_being_read() {
    let mut env = TestEnv::with_proxy();
    env.broker.create_topic(TOPIC, 1);
    let log = env.path("big.log");
    write_numbered(&log, 0, LINES);
    // The broker is away and the spool small, so the daemon stops reading
    // part way (backpressure): it is certainly mid-file at the truncation.
    env.broker.proxy_mut().down();
    let cfg = env
        .config(TOPIC)
        .source("app", &log)
        .spool("max_bytes", "2MiB")
        .spool("segment_bytes", "256KiB");
    let mut d = env.start(&cfg);
    let row = wait_offsets_row(
        d.config_path(),
        "app",
        "the daemon to read part of the file",
        WAIT,
        |r| r["offset"].as_u64().unwrap_or(0) > 1_000_000,
    );
    // Settle: the reader is blocked by backpressure now.
    thread::sleep(Duration::from_millis(500));
    let q = ctl_json(d.config_path(), &["queue", "--json"]);
    let row2 = wait_offsets_row(d.config_path(), "app", "offsets", WAIT, |_| true);
    let committed = row2["offset"].as_u64().unwrap();
    eprintln!(
        "shrink: committed offset {} then {committed} of {} bytes; paused_by_backpressure {}",
        row["offset"],
        LINES * LINE_LEN as u64,
        q["paused_by_backpressure"]
    );
    assert!(
        committed < LINES * LINE_LEN as u64 / 2,
        "the daemon read {committed} bytes despite a 2 MiB spool and no broker: the test cannot truncate mid-read"
    );
    let half_lines = committed / 2 / LINE_LEN as u64;
    let half = half_lines * LINE_LEN as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(half)
        .unwrap();
    eprintln!("shrink: truncated to {half} bytes ({half_lines} lines)");
    env.broker.proxy_mut().up();
    let warn = d.wait_log("truncated", 1, WAIT);
    eprintln!("shrink: {warn}");
    d.assert_running();
    // New lines only after the daemon has seen the truncation (before it,
    // appended bytes would simply look like more file).
    write_numbered(&log, NEW, NEW + 1000);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, NEW..NEW + 1000) && has_all(m, 0..committed / LINE_LEN as u64))
        .timeout(WAIT)
        .run();
    d.assert_running();
    check_after_shrink(&msgs, committed, half_lines);
    d.stop();
}

/// How many log lines mention `path` and `needle`.
fn count_log(d: &Daemon, path: &Path, needle: &str) -> usize {
    let p = path.to_str().unwrap();
    d.log()
        .lines()
        .filter(|l| l.contains(p) && l.contains(needle))
        .count()
}

/// Sources whose path is a directory or a FIFO: one clear error each (not
/// one per poll), shown by `logcatch-ctl offsets`; the other source is
/// delivered; a FIFO replaced by a regular file is then read.
#[test]
fn directory_and_fifo_sources() {
    let env = TestEnv::new();
    let dir = env.path("adir");
    std::fs::create_dir(&dir).unwrap();
    let fifo = env.path("pipe");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success(), "mkfifo failed");
    let ok = env.path("ok.log");
    write_numbered(&ok, 0, 500);
    let cfg = env
        .config(TOPIC)
        .source("dir", &dir)
        .source("fifo", &fifo)
        .source("ok", &ok);
    let mut d = env.start(&cfg);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(500)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..500);
    // 2 s at a 50 ms poll: ~40 attempts on each bad path.
    thread::sleep(Duration::from_secs(2));
    d.assert_running();
    for (p, kind) in [(&dir, "a directory"), (&fifo, "a FIFO")] {
        let n = count_log(&d, p, "not a regular file");
        assert_eq!(
            n,
            1,
            "the error for {} ({kind}) should be logged once, found {n} time(s):\n{}",
            p.display(),
            d.log_lines(p.to_str().unwrap()).join("\n")
        );
        let line = d
            .log_lines(p.to_str().unwrap())
            .into_iter()
            .find(|l| l.contains("not a regular file"))
            .unwrap();
        assert!(line.contains(kind), "the error does not say {kind}: {line}");
        assert!(line.contains("ERROR"), "not logged as an error: {line}");
    }
    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    for (name, p) in [("dir", &dir), ("fifo", &fifo)] {
        let r = offsets_row(&rows, name).unwrap_or_else(|| panic!("no row {name}: {rows:#}"));
        let state = r["state"].as_str().unwrap_or_default();
        assert!(
            state == "waiting_for_file" || state == "error",
            "state of {name}: {r:#}"
        );
        let err = r["last_error"].as_str().unwrap_or_else(|| {
            panic!("no last_error for {name}: {r:#}");
        });
        assert!(
            err.contains(p.to_str().unwrap()),
            "last_error of {name} does not name its path: {err}"
        );
    }
    let ok_row = offsets_row(&rows, "ok").unwrap();
    assert_eq!(ok_row["state"], "tailing", "{ok_row:#}");

    // Still delivering, and a FIFO replaced by a file is picked up.
    write_numbered(&ok, 500, 800);
    std::fs::remove_file(&fifo).unwrap();
    write_numbered(&fifo, 10_000, 10_200);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(1000)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..800, 10_000..10_200]);
    let r = wait_offsets_row(
        d.config_path(),
        "fifo",
        "the replaced FIFO to be tailed",
        WAIT,
        |r| r["state"] == "tailing",
    );
    assert!(r["last_error"].is_null(), "fifo row after recovery: {r:#}");
    assert_eq!(
        count_log(&d, &fifo, "not a regular file"),
        1,
        "the FIFO's error was logged again"
    );
    d.stop();
}

/// A source whose file does not exist yet is waited for (no error), then
/// read from its first byte.
#[test]
fn missing_file_appears_later() {
    let env = TestEnv::new();
    let late = env.path("late.log");
    let ok = env.path("ok.log");
    write_numbered(&ok, 0, 100);
    let cfg = env.config(TOPIC).source("late", &late).source("ok", &ok);
    let mut d = env.start(&cfg);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(100)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..100);
    let r = wait_offsets_row(d.config_path(), "late", "late to wait", WAIT, |r| {
        r["state"] == "waiting_for_file"
    });
    assert!(
        r["last_error"].is_null(),
        "a missing file is not an error: {r:#}"
    );
    thread::sleep(Duration::from_millis(500));
    let errors = d
        .log_lines(late.to_str().unwrap())
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect::<Vec<_>>();
    assert!(errors.is_empty(), "errors for a missing file: {errors:?}");

    // Created and written in one go: every line from offset 0.
    write_numbered(&late, 1000, 1300);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(400)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..100, 1000..1300]);
    let late_msgs = of_source(&msgs, "late");
    assert_eq!(
        late_msgs[0].header("offset").as_deref(),
        Some("0"),
        "the late file was not read from its start"
    );
    d.stop();
}
