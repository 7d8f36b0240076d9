//! End-to-end tests of hot reload (issue 3) against the real `logcatch`
//! binary and a real (Apache Kafka) broker.
//!
//! The contract: the daemon watches its config file (notify on its
//! directory, a 2 s content poll) and reloads on SIGHUP; bursts are
//! debounced (300 ms quiet, at most 2 s). Each applied reload logs one line
//! `config reloaded: added N, removed N, changed N (path N, settings N),
//! unchanged N ... running_tailers=N`; a rejected edit logs `config reload
//! rejected, still running on the last good config: <file>:<line>:...` and
//! the daemon keeps running. Sources are diffed by name: added -> started;
//! removed -> stopped after handing over what it read, record deleted; path
//! changed -> old record deleted, new path read from 0; other settings ->
//! restarted from the stored offset; unchanged -> untouched.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long to wait for a delivery or a log line before failing. Generous:
/// a debug build on 2 cores running two tests at once.
const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "logs";
const RELOADED: &str = "config reloaded:";
const REJECTED: &str = "config reload rejected, still running on the last good config:";

fn status(d: &Daemon) -> serde_json::Value {
    ctl_json(d.config_path(), &["status", "--json"])
}

/// The names in a JSON array of strings.
fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a name").to_string())
        .collect()
}

/// Finds `<config file>:<line>:` in `text` and returns the line number.
fn line_after_file(text: &str, file: &Path) -> Option<usize> {
    let needle = format!("{}:", file.display());
    let at = text.find(&needle)? + needle.len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if !text[at + digits.len()..].starts_with(':') {
        return None;
    }
    digits.parse().ok()
}

/// Removing a source: reload within 2 s with `removed 1`, one tailer
/// left, nothing more read from the removed file, and its record gone
/// from the store; every line of it written before the edit delivered
/// exactly once.
// Over 80 lines: one scenario whose steps build on each other (edit,
// reload, check what runs); it reads best top to bottom.
#[test]
fn removed_source_stops_and_its_record_is_deleted() {
    let env = TestEnv::new();
    let (a, b) = (env.path("a.log"), env.path("b.log"));
    write_numbered(&a, 0, 1000);
    write_numbered(&b, 100_000, 101_000);
    let cfg = env.config(TOPIC);
    let mut d = env.start(
        &cfg.clone()
            .source_to("a", &a, "a-logs")
            .source_to("b", &b, "b-logs"),
    );
    d.consume(&env.addr(), "a-logs")
        .until(|m| has_all(m, 0..1000))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's lines");
    d.consume(&env.addr(), "b-logs")
        .until(|m| has_all(m, 100_000..101_000))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("b's lines");
    assert_eq!(d.log_count(RELOADED), 0, "a reload before any edit");

    // Lines of b written just before the edit: read, maybe not delivered yet.
    write_numbered(&b, 101_000, 101_500);
    thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    d.rewrite_config(&cfg.clone().source_to("a", &a, "a-logs").render());
    let line = d.wait_log(RELOADED, 1, WAIT);
    let took = t.elapsed();
    assert!(
        took <= Duration::from_secs(2),
        "the reload took {took:?} (more than 2 s) to show in the log"
    );
    assert!(
        line.contains("added 0, removed 1, changed 0 (path 0, settings 0), unchanged 1"),
        "reload line: {line}"
    );
    assert!(line.contains("running_tailers=1"), "reload line: {line}");

    let st = status(&d);
    assert_eq!(st["running_tailers"], 1, "status: {st:#}");
    assert_eq!(st["sources"], 1, "status: {st:#}");
    assert_eq!(st["reloads"], 1, "status: {st:#}");
    assert_eq!(
        names(&st["last_reload"]["removed"]),
        ["b"],
        "status: {st:#}"
    );
    assert_eq!(
        names(&st["last_reload"]["unchanged"]),
        ["a"],
        "status: {st:#}"
    );

    // b is no longer read; a still is.
    write_numbered(&b, 101_500, 101_600);
    write_numbered(&a, 1000, 1200);
    d.consume(&env.addr(), "a-logs")
        .until(|m| has_all(m, 0..1200))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's lines after the reload");
    let live = ctl_json(d.config_path(), &["offsets", "--json"]);
    assert!(
        offsets_row(&live, "b").is_none_or(|r| r["offset"].is_null()),
        "the daemon still reports a record for the removed source b:\n{live:#}"
    );
    d.stop();

    let out = ctl_run(d.config_path(), &["offsets", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let rows = out.json();
    if let Some(r) = offsets_row(&rows, "b") {
        assert!(
            r["offset"].is_null(),
            "the stopped store still has b's offset record: {r:#}"
        );
    }
    let ra = offsets_row(&rows, "a").expect("a row for a");
    assert_eq!(
        ra["offset"].as_u64(),
        Some(std::fs::metadata(&a).unwrap().len())
    );

    let bm = Consume::new(&env.addr(), "b-logs")
        .until_count(1500)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&bm, 100_000..101_500);
    let am = Consume::new(&env.addr(), "a-logs")
        .until_count(1200)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&am, 0..1200);
}

/// Changing a source's path: the new file is read from 0, the old one
/// no longer, and the store's record describes the new file.
#[test]
fn changed_path_is_read_from_the_start() {
    let env = TestEnv::new();
    let (old, new) = (env.path("a.log"), env.path("a-new.log"));
    write_numbered(&old, 0, 1000);
    write_numbered(&new, 5000, 5600);
    let cfg = env.config(TOPIC);
    let mut d = env.start(&cfg.clone().source("a", &old));
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..1000))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("the old file's lines");

    d.rewrite_config(&cfg.clone().source("a", &new).render());
    let line = d.wait_log(RELOADED, 1, WAIT);
    assert!(
        line.contains("added 0, removed 0, changed 1 (path 1, settings 0), unchanged 0"),
        "reload line: {line}"
    );
    assert!(line.contains("running_tailers=1"), "reload line: {line}");
    let st = status(&d);
    assert_eq!(names(&st["last_reload"]["moved"]), ["a"], "status: {st:#}");

    write_numbered(&old, 1000, 1100); // not read any more
    write_numbered(&new, 5600, 5700);
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 5000..5700))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("the new file's lines");
    d.stop();

    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    let r = offsets_row(&rows, "a").unwrap_or_else(|| panic!("no row for a:\n{rows:#}"));
    let meta = std::fs::metadata(&new).unwrap();
    assert_eq!(r["path"], new.to_str().unwrap(), "row: {r:#}");
    assert_eq!(r["device"].as_u64(), Some(meta.dev()), "row: {r:#}");
    assert_eq!(r["inode"].as_u64(), Some(meta.ino()), "row: {r:#}");
    assert_eq!(r["offset"].as_u64(), Some(meta.len()), "row: {r:#}");
    assert_eq!(
        r["lines"].as_u64(),
        Some(700),
        "the record still counts the old file's lines: {r:#}"
    );

    let msgs = Consume::new(&env.addr(), TOPIC)
        .until_count(1700)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..1000, 5000..5700]);
    for m in msgs.iter().filter(|m| number_of(&m.value) >= Some(5000)) {
        assert_eq!(m.header("path").as_deref(), new.to_str(), "path header");
    }
}

/// `good` with a YAML syntax error on the line of a source's path
/// (`path: "...": oops`), and that line's number.
fn break_the_path_line(good: &str) -> (String, usize) {
    let broken: String = good
        .lines()
        .map(|l| {
            if l.starts_with("    path: ") {
                format!("{l}: oops\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(broken, good);
    let broken_line = broken.lines().position(|l| l.ends_with(": oops")).unwrap() + 1;
    (broken, broken_line)
}

/// A status (read `via` the admin endpoint or `logcatch-ctl`) after one
/// rejected edit of `config` broken at `broken_line`: the error names the
/// file and line, one failure, no reload, the one source still running.
fn check_rejected_status(st: &serde_json::Value, via: &str, config: &Path, broken_line: usize) {
    let err = st["last_reload_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{via}: no last_reload_error after a rejected edit: {st:#}"));
    assert_eq!(
        line_after_file(err, config),
        Some(broken_line),
        "{via}: last_reload_error does not name {}:{broken_line}: {err}",
        config.display()
    );
    assert_eq!(st["reload_failures"], 1, "{via}: {st:#}");
    assert_eq!(st["reloads"], 0, "{via}: {st:#}");
    assert_eq!(st["running_tailers"], 1, "{via}: {st:#}");
}

/// A broken edit is rejected (logged once, with the file and line),
/// delivery goes on on the last good config, and the fix is applied.
// Over 80 lines: one scenario whose steps build on each other (edit,
// reload, check what runs); it reads best top to bottom.
#[test]
fn broken_yaml_is_rejected_then_the_fix_applies() {
    let env = TestEnv::new();
    let (a, c) = (env.path("a.log"), env.path("c.log"));
    write_numbered(&a, 0, 500);
    write_numbered(&c, 9000, 9300);
    let cfg = env.config(TOPIC).source("a", &a);
    let mut d = env.start(&cfg);
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..500))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's lines");

    let (broken, broken_line) = break_the_path_line(&cfg.render());
    let t = Instant::now();
    d.rewrite_config(&broken);
    let line = d.wait_log(REJECTED, 1, WAIT);
    let config = d.config_path().to_path_buf();
    let n = line_after_file(&line, &config).unwrap_or_else(|| {
        panic!(
            "the rejection does not name {}:<line>: {line}",
            config.display()
        )
    });
    assert_eq!(
        n, broken_line,
        "the rejection names line {n}; the broken line is {broken_line}: {line}"
    );

    // Still delivering a's lines on the last good config.
    write_numbered(&a, 500, 800);
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..800))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's lines after the bad edit");
    d.assert_running();
    // The daemon's own report (its admin socket), then what
    // `logcatch-ctl status` shows while the file on disk is broken; the
    // latter is checked at the end so the rest of the test still runs.
    let (code, body) = http_get_unix(&env.path("data/admin.sock"), "/status");
    assert_eq!(code, 200, "GET /status: {body}");
    let st: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let check_status =
        |st: &serde_json::Value, via: &str| check_rejected_status(st, via, &config, broken_line);
    check_status(&st, "the admin endpoint's /status");
    let ctl_status_while_broken = ctl_run(d.config_path(), &["status", "--json"]);
    // One bad edit is logged once, also after the 2 s content poll ran.
    if let Some(rest) = Duration::from_millis(2500).checked_sub(t.elapsed()) {
        thread::sleep(rest);
    }
    assert_eq!(
        d.log_count(REJECTED),
        1,
        "the same bad edit was rejected more than once"
    );

    // The fix adds source c.
    d.rewrite_config(&cfg.clone().source("c", &c).render());
    let line = d.wait_log(RELOADED, 1, WAIT);
    assert!(
        line.contains("added 1, removed 0, changed 0 (path 0, settings 0), unchanged 1"),
        "reload line: {line}"
    );
    assert!(line.contains("running_tailers=2"), "reload line: {line}");
    let st = status(&d);
    assert!(st["last_reload_error"].is_null(), "status: {st:#}");
    assert_eq!(st["reloads"], 1, "status: {st:#}");
    assert_eq!(st["running_tailers"], 2, "status: {st:#}");
    assert_eq!(names(&st["last_reload"]["added"]), ["c"], "status: {st:#}");

    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(1100)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..800, 9000..9300]);
    d.stop();

    // `logcatch-ctl status` is where an operator sees a rejected edit, so
    // it must work while the config file is broken.
    assert_eq!(
        ctl_status_while_broken.code,
        Some(0),
        "`logcatch-ctl status --json` failed while the config file had a rejected edit:\n{}",
        ctl_status_while_broken.describe()
    );
    check_status(
        &ctl_status_while_broken.json(),
        "logcatch-ctl status --json",
    );
}

/// A config replaced by writing a temp file and renaming it over.
#[test]
fn config_renamed_over_is_reloaded() {
    let env = TestEnv::new();
    let (a, b, c) = (env.path("a.log"), env.path("b.log"), env.path("c.log"));
    write_numbered(&a, 0, 300);
    write_numbered(&b, 1000, 1300);
    write_numbered(&c, 2000, 2300);
    let cfg = env.config(TOPIC).source("a", &a);
    let mut d = env.start(&cfg);
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..300))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's lines");

    let cfg = cfg.source("b", &b);
    write_by_rename(d.config_path(), &cfg.render());
    let line = d.wait_log(RELOADED, 1, WAIT);
    assert!(line.contains("added 1, removed 0"), "reload line: {line}");
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 1000..1300))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("b's lines");

    // Again: the watch survives the replaced file.
    write_by_rename(d.config_path(), &cfg.source("c", &c).render());
    let line = d.wait_log(RELOADED, 2, WAIT);
    assert!(line.contains("added 1, removed 0"), "reload line: {line}");
    assert!(line.contains("running_tailers=3"), "reload line: {line}");
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(900)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..300, 1000..1300, 2000..2300]);
    d.stop();
}

/// The config path is a symlink, swapped atomically to another target
/// (`ln -s v2/config.yaml tmp && mv -T tmp config.yaml`), twice.
#[test]
fn config_symlink_swap_is_reloaded() {
    let env = TestEnv::new();
    let (a, b, c) = (env.path("a.log"), env.path("b.log"), env.path("c.log"));
    write_numbered(&a, 0, 300);
    write_numbered(&b, 1000, 1300);
    write_numbered(&c, 2000, 2300);
    let v1 = env.config(TOPIC).source("a", &a);
    let v2 = v1.clone().source("b", &b);
    let v3 = v2.clone().source("c", &c);
    for (dir, cfg) in [("v1", &v1), ("v2", &v2), ("v3", &v3)] {
        std::fs::create_dir(env.path(dir)).unwrap();
        std::fs::write(env.path(dir).join("config.yaml"), cfg.render()).unwrap();
    }
    let link = env.path("config.yaml");
    std::os::unix::fs::symlink("v1/config.yaml", &link).unwrap();
    let swap = |target: &str| {
        let tmp = env.path("config.yaml.tmp");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap(); // what `mv -T` does
        assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some(target));
    };
    let mut d = Daemon::start_with_file(env.dir.path(), &link);
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..300))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's lines");

    swap("v2/config.yaml");
    let line = d.wait_log(RELOADED, 1, WAIT);
    assert!(line.contains("added 1, removed 0"), "reload line: {line}");
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 1000..1300))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("b's lines");

    swap("v3/config.yaml");
    let line = d.wait_log(RELOADED, 2, WAIT);
    assert!(line.contains("added 1, removed 0"), "reload line: {line}");
    assert!(line.contains("running_tailers=3"), "reload line: {line}");
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(900)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..300, 1000..1300, 2000..2300]);
    let st = status(&d);
    assert_eq!(st["running_tailers"], 3, "status: {st:#}");
    d.stop();
}

/// 50 edits in one second give at most 2 reloads, and the final config
/// is what runs.
// Over 80 lines: one scenario whose steps build on each other (edit,
// reload, check what runs); it reads best top to bottom.
#[test]
fn burst_of_edits_is_debounced() {
    let env = TestEnv::new();
    let files: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| env.path(&format!("{n}.log")))
        .collect();
    for (i, f) in files.iter().enumerate() {
        let base = i as u64 * 10_000;
        write_numbered(f, base, base + 200);
    }
    let base = env.config(TOPIC);
    let ab = base.clone().source("a", &files[0]).source("b", &files[1]);
    let acd = base
        .clone()
        .source("a", &files[0])
        .source("c", &files[2])
        .source("d", &files[3]);
    let mut d = env.start(&ab);
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..200) && has_all(m, 10_000..10_200))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's and b's lines");
    let before = d.log_count(RELOADED);
    assert_eq!(before, 0);

    let start = Instant::now();
    for i in 0..50u32 {
        let text = if i == 49 {
            acd.render()
        } else {
            format!("{}# edit {i}\n", ab.render())
        };
        d.rewrite_config(&text);
        // Spread over one second.
        let next = Duration::from_millis(20 * (i as u64 + 1));
        if let Some(rest) = next.checked_sub(start.elapsed()) {
            thread::sleep(rest);
        }
    }
    eprintln!("debounce: 50 edits in {:?}", start.elapsed());

    let st = wait_status(d.config_path(), "the final config running", WAIT, |s| {
        s["sources"] == 3 && s["running_tailers"] == 3
    });
    assert_eq!(
        names(&st["last_reload"]["added"]),
        ["c", "d"],
        "status: {st:#}"
    );
    assert_eq!(
        names(&st["last_reload"]["removed"]),
        ["b"],
        "status: {st:#}"
    );
    // Deliveries of c and d; the 2 s quiet at the end also lets a late
    // poll-triggered reload show up.
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(800)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(
        &msgs,
        &[0..200, 10_000..10_200, 20_000..20_200, 30_000..30_200],
    );
    if let Some(rest) = Duration::from_secs(5).checked_sub(start.elapsed()) {
        thread::sleep(rest);
    }
    let reloads = d.log_lines(RELOADED);
    eprintln!("debounce: reload lines:\n{}", reloads.join("\n"));
    assert!(
        !reloads.is_empty() && reloads.len() <= 2,
        "{} reload lines for one burst of edits (want 1 or 2):\n{}",
        reloads.len(),
        reloads.join("\n")
    );
    let last = reloads.last().unwrap();
    assert!(
        last.contains("added 2, removed 1") && last.contains("running_tailers=3"),
        "last reload line: {last}"
    );
    let st = status(&d);
    assert_eq!(st["running_tailers"], 3, "status: {st:#}");
    assert_eq!(
        st["reloads"].as_u64(),
        Some(reloads.len() as u64),
        "status: {st:#}"
    );
    d.stop();
}

/// Changing a source's topic while lines are written: the lines before
/// the reload stay in the old topic, the lines after it go to the new
/// one, and across both every line is delivered exactly once.
#[test]
fn topic_change_moves_later_lines_to_the_new_topic() {
    let env = TestEnv::new();
    let a = env.path("a.log");
    write_numbered(&a, 0, 1000);
    let cfg = env.config(TOPIC);
    let mut d = env.start(&cfg.clone().source_to("a", &a, "t1"));
    d.consume(&env.addr(), "t1")
        .until(|m| has_all(m, 0..1000))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("the first lines");

    // Lines keep being written (20 every 30 ms) until 1 s after the reload
    // showed; `written` is how many lines are complete.
    let written = Arc::new(AtomicU64::new(1000));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (w, s) = (written.clone(), stop.clone());
    let path = a.clone();
    let writer = thread::spawn(move || {
        let mut n = 1000;
        while !s.load(Ordering::SeqCst) {
            write_numbered(&path, n, n + 20);
            n += 20;
            w.store(n, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(30));
        }
    });
    thread::sleep(Duration::from_millis(800));
    let edited_at = written.load(Ordering::SeqCst);
    let t = Instant::now();
    d.rewrite_config(&cfg.clone().source_to("a", &a, "t2").render());
    let line = d.wait_log(RELOADED, 1, WAIT);
    let after = written.load(Ordering::SeqCst);
    eprintln!(
        "topic change: reload showed {:?} after the edit ({edited_at} lines written at the edit, {after} then)",
        t.elapsed()
    );
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let total = written.load(Ordering::SeqCst);
    assert!(
        line.contains("added 0, removed 0, changed 1 (path 0, settings 1), unchanged 0"),
        "reload line: {line}"
    );
    assert!(after < total, "no line was written after the reload");

    let t2 = d
        .consume(&env.addr(), "t2")
        .until(|m| has_all(m, after..total))
        .timeout(WAIT)
        .run();
    let t1 = Consume::new(&env.addr(), "t1")
        .until_count(1000)
        .timeout(Duration::from_secs(10))
        .run();
    let n1 = numbers_of(&t1);
    let n2 = numbers_of(&t2);
    eprintln!(
        "topic change: t1 has {} lines (max {:?}), t2 has {} (min {:?}); {after} lines written when the reload showed",
        n1.len(),
        n1.iter().max(),
        n2.len(),
        n2.iter().min()
    );
    let mut all = t1.clone();
    all.extend(t2.iter().cloned());
    assert_exactly_once(&all, 0..total);
    assert!(has_all(&t1, 0..1000), "the lines before the edit left t1");
    assert!(
        has_all(&t2, after..total),
        "lines written after the reload are not all in t2"
    );
    let max1 = n1.iter().max().copied().unwrap_or(0);
    let min2 = n2.iter().min().copied().unwrap_or(u64::MAX);
    assert!(
        max1 < min2,
        "topics interleave: t1 has line {max1}, t2 has line {min2}"
    );
    assert_file_order(&t1);
    assert_file_order(&t2);
    d.stop();
}

/// SIGHUP with an unchanged file: one reload, every source unchanged
/// and left running (not reopened).
#[test]
fn sighup_with_unchanged_config_leaves_sources_running() {
    let env = TestEnv::new();
    let (a, b) = (env.path("a.log"), env.path("b.log"));
    write_numbered(&a, 0, 500);
    write_numbered(&b, 1000, 1500);
    let mut d = env.start(&env.config(TOPIC).source("a", &a).source("b", &b));
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..500) && has_all(m, 1000..1500))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's and b's lines");
    let opened = d.log_count("tailing");

    d.sighup();
    let line = d.wait_log(RELOADED, 1, WAIT);
    assert!(
        line.contains("added 0, removed 0, changed 0 (path 0, settings 0), unchanged 2"),
        "reload line: {line}"
    );
    assert!(line.contains("running_tailers=2"), "reload line: {line}");
    write_numbered(&a, 500, 700);
    write_numbered(&b, 1500, 1700);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(1400)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..700, 1000..1700]);
    assert_eq!(d.log_count(RELOADED), 1, "one SIGHUP, more than one reload");
    assert_eq!(
        d.log_count("tailing"),
        opened,
        "a tailer reopened its file on a reload that changed nothing"
    );
    let st = status(&d);
    assert_eq!(st["reloads"], 1, "status: {st:#}");
    assert_eq!(
        names(&st["last_reload"]["unchanged"]),
        ["a", "b"],
        "status: {st:#}"
    );
    assert_eq!(st["running_tailers"], 2, "status: {st:#}");
    d.stop();
}

/// Kafka settings: a harmless change (linger) rebuilds the producer
/// with no line lost or repeated; brokers pointed at a dead address and
/// then back: the fixed config takes effect and delivery resumes.
#[test]
fn kafka_settings_change_rebuilds_the_producer() {
    let env = TestEnv::new();
    let a = env.path("a.log");
    write_numbered(&a, 0, 1000);
    let cfg = env.config(TOPIC).source("a", &a);
    let mut d = env.start(&cfg);
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..1000))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("a's lines");

    // linger_ms 5 -> 20, while lines are written.
    let writer = write_numbered_slowly(&a, 1000, 2000, 50, Duration::from_millis(20));
    thread::sleep(Duration::from_millis(100));
    d.rewrite_config(&cfg.clone().kafka("linger_ms", "20").render());
    let line = d.wait_log(RELOADED, 1, WAIT);
    assert!(
        line.contains("unchanged 1, kafka settings changed"),
        "reload line: {line}"
    );
    writer.join().unwrap();
    d.consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..2000))
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("the lines around the rebuild");

    // Brokers: a dead address, then the right one again.
    let mut dead = cfg.clone();
    dead.brokers = format!("127.0.0.1:{}", free_port());
    d.rewrite_config(&dead.render());
    let line = d.wait_log(RELOADED, 2, WAIT);
    assert!(
        line.contains("kafka settings changed"),
        "reload line: {line}"
    );
    // Lines written while the producer points at the dead address.
    wait_status(d.config_path(), "the broker reported down", WAIT, |s| {
        s["broker"] == "down"
    });
    write_numbered(&a, 2000, 2100);
    thread::sleep(Duration::from_secs(1));
    d.rewrite_config(&cfg.render());
    let line = d.wait_log(RELOADED, 3, WAIT);
    assert!(
        line.contains("kafka settings changed"),
        "reload line: {line}"
    );
    write_numbered(&a, 2100, 2200);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 0..2200))
        .timeout(Duration::from_secs(30))
        .run();
    assert_exactly_once(&msgs, 0..2200);
    d.stop();
}
