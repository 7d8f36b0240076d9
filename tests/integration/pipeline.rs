//! End-to-end scenarios against the real `logcatch` binary and a real
//! (Apache Kafka) broker. Each test has its own broker and temp dir and
//! asserts exact counts of numbered lines (see [`write_numbered`]).
//!
//! The daemon contract these tests hold it to:
//! - one Kafka message per line: value = the line without `\n` (and `\r`),
//!   key = source name, headers `source`, `path`, `offset` (decimal byte
//!   offset of the line start), `host`, and `lc-id` (20 bytes: the
//!   store's instance id, the spool batch seq, the line's index in it;
//!   one instance id per data dir, and no identity twice for two lines);
//! - SIGTERM/SIGINT shut down gracefully with exit status 0;
//! - nothing is lost across restarts, `kill -9`, rotation, truncation and
//!   broker outages; nothing is duplicated except after `kill -9`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long to wait for a delivery before failing. Generous: a debug build
/// on 2 cores running two tests at once. Passing tests finish far sooner.
const WAIT: Duration = Duration::from_secs(120);
const TOPIC: &str = "logs";

/// Checks the key and headers of every numbered-line message from `source`
/// against the file: `offset` must be the byte offset where that line
/// starts in `file` (read now).
fn check_headers(msgs: &[Msg], source: &str, file: &Path, numbers: std::ops::Range<u64>) {
    let offsets = line_offsets(file);
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let path = file.to_str().unwrap();
    let mut bad = Vec::new();
    let mut checked = 0usize;
    let mut ids: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
    let mut instances = std::collections::BTreeSet::new();
    for m in msgs {
        let Some(n) = number_of(&m.value) else {
            continue;
        };
        if !numbers.contains(&n) {
            continue;
        }
        checked += 1;
        let mut problems = Vec::new();
        if m.key_str().as_deref() != Some(source) {
            problems.push(format!("key {:?}", m.key_str()));
        }
        if m.header("source").as_deref() != Some(source) {
            problems.push(format!("source header {:?}", m.header("source")));
        }
        if m.header("path").as_deref() != Some(path) {
            problems.push(format!("path header {:?}", m.header("path")));
        }
        let want = offsets.get(&n).map(|o| o.to_string());
        if m.header("offset") != want {
            problems.push(format!(
                "offset header {:?}, line starts at {want:?}",
                m.header("offset")
            ));
        }
        if m.header("host").as_deref() != Some(host.as_str()) {
            problems.push(format!(
                "host header {:?}, hostname {host:?}",
                m.header("host")
            ));
        }
        match m.headers.get("lc-id") {
            Some(id) if id.len() == 20 => {
                instances.insert(id[..8].to_vec());
                if ids.insert(id.clone(), n).is_some_and(|other| other != n) {
                    problems.push(format!("lc-id {id:?} also names another line"));
                }
            }
            other => problems.push(format!("lc-id header {other:?}")),
        }
        if m.value.len() != LINE_LEN - 1 || m.value.ends_with(b"\r") {
            problems.push(format!("value of {} bytes", m.value.len()));
        }
        if !problems.is_empty() && bad.len() < 10 {
            bad.push(format!(
                "line {n} (offset {}): {}",
                m.offset,
                problems.join("; ")
            ));
        }
    }
    assert!(checked > 0, "no message of lines {numbers:?} to check");
    assert_eq!(
        instances.len(),
        1,
        "one instance id per data dir: {instances:?}"
    );
    assert!(
        bad.is_empty(),
        "wrong key/headers for source {source} ({}):\n{}",
        file.display(),
        bad.join("\n")
    );
}

/// Reads back lines `0..lines.end` of source `app` (waiting up to
/// [`WAIT`]): each exactly once, in file order, and the lines of `lines`
/// with the key and headers of `log` as it is now.
fn read_back_in_order(
    env: &TestEnv,
    d: &mut Daemon,
    log: &Path,
    lines: std::ops::Range<u64>,
) -> Vec<Msg> {
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(lines.end as usize)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..lines.end);
    assert_file_order(&msgs);
    check_headers(&msgs, "app", log, lines);
    msgs
}

/// 100,000 lines, SIGTERM (exit 0), 50,000 more, restart:
/// exactly 150,000 messages in file order, headers right.
#[test]
fn clean_restart_delivers_exactly_once() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    write_numbered(&log, 0, 100_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));

    let t = Instant::now();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(100_000)
        .timeout(WAIT)
        .run();
    eprintln!(
        "first 100,000: {} messages in {:?}",
        msgs.len(),
        t.elapsed()
    );
    assert_exactly_once(&msgs, 0..100_000);
    d.stop();

    write_numbered(&log, 100_000, 150_000);
    d.restart();
    let t = Instant::now();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(150_000)
        .timeout(WAIT)
        .run();
    eprintln!("all 150,000: {} messages in {:?}", msgs.len(), t.elapsed());
    assert_exactly_once(&msgs, 0..150_000);
    assert_file_order(&msgs);
    check_headers(&msgs, "app", &log, 0..150_000);
    d.stop();
}

/// kill -9 at random points during delivery, three times, while
/// lines keep being appended: nothing missing. Duplicates are allowed and
/// printed.
#[test]
fn kill9_three_times_loses_nothing() {
    let seed = seed_from_env_or_time();
    eprintln!("kill9: seed {seed} (set LOGCATCH_TEST_SEED to replay)");
    let mut rng = Rng::new(seed);
    let env = TestEnv::new();
    let log = env.path("app.log");
    const TOTAL: u64 = 60_000;
    write_numbered(&log, 0, 10_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    // 50,000 more lines over ~4 s, so kills land while lines are being
    // both appended and delivered.
    let writer = write_numbered_slowly(&log, 10_000, TOTAL, 250, Duration::from_millis(20));

    for round in 1..=3 {
        let run_for = Duration::from_millis(rng.range(300..1500));
        thread::sleep(run_for);
        d.assert_running();
        d.kill9();
        eprintln!("kill9: kill -9 #{round} after {run_for:?}");
        thread::sleep(Duration::from_millis(rng.range(0..300)));
        d.restart();
    }
    writer.join().expect("writer");

    let t = Instant::now();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|msgs| Tally::of(msgs, 0..TOTAL).missing.is_empty())
        .timeout(WAIT)
        .run();
    let tally = Tally::of(&msgs, 0..TOTAL);
    eprintln!(
        "kill9: {} messages for {TOTAL} lines in {:?}: {} missing, {} duplicate copies ({} lines duplicated)",
        msgs.len(),
        t.elapsed(),
        tally.missing.len(),
        tally.duplicate_count(),
        tally.duplicated.len()
    );
    if !tally.duplicated.is_empty() {
        eprintln!(
            "kill9: duplicated lines: {}",
            ranges(tally.duplicated.keys().copied())
        );
    }
    assert!(
        tally.missing.is_empty() && tally.unexpected.is_empty(),
        "lines lost across kill -9:\n{}",
        tally.describe()
    );
    check_headers(&msgs, "app", &log, 0..TOTAL);
    d.stop();
}

/// Rename rotation while running; the writer's last lines go
/// to the renamed file, then a new file is created.
#[test]
fn rotation_by_rename_while_running_delivers_every_line_once() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let rotated = env.path("app.log.1");
    let mut d = env.start_delivered(TOPIC, "app", &log, 0..1000, WAIT);

    std::fs::rename(&log, &rotated).expect("rename");
    // The old writer still holds the old file for a moment.
    write_numbered(&rotated, 1000, 1100);
    write_numbered(&log, 1100, 1500);
    thread::sleep(Duration::from_millis(300));
    write_numbered(&log, 1500, 2000);

    read_back_in_order(&env, &mut d, &log, 1100..2000);
    d.stop();
}

/// Rename rotation while stopped; the new file has exactly the
/// old file's size, so only its identity tells it apart.
#[test]
fn rotation_by_rename_while_stopped_is_told_apart_by_identity() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut d = env.start_delivered(TOPIC, "app", &log, 0..1000, WAIT);
    d.stop();

    std::fs::rename(&log, env.path("app.log.1")).expect("rename");
    write_numbered(&log, 1000, 2000);
    d.restart();

    read_back_in_order(&env, &mut d, &log, 1000..2000);
    d.stop();
}

/// Copytruncate while running, after everything was
/// delivered; the new content is shorter than the old.
#[test]
fn copytruncate_while_running_delivers_the_new_content() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut d = env.start_delivered(TOPIC, "app", &log, 0..1000, WAIT);

    std::fs::copy(&log, env.path("app.log.1")).expect("copy");
    truncate(&log);
    thread::sleep(Duration::from_millis(300));
    write_numbered(&log, 1000, 1500);

    read_back_in_order(&env, &mut d, &log, 1000..1500);
    d.stop();
}

/// Truncated and rewritten (shorter, different content) while
/// the daemon was stopped.
#[test]
fn truncate_and_rewrite_while_stopped_delivers_the_new_content() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut d = env.start_delivered(TOPIC, "app", &log, 0..1000, WAIT);
    d.stop();

    let ino_before = std::fs::metadata(&log).unwrap().ino();
    truncate(&log);
    write_numbered(&log, 1000, 1300);
    assert_eq!(std::fs::metadata(&log).unwrap().ino(), ino_before);
    d.restart();

    read_back_in_order(&env, &mut d, &log, 1000..1300);
    d.stop();
}

/// Rename rotation while stopped with unread lines: 1,000
/// lines are appended after the clean stop, then the file is renamed away
/// and a new one with 500 lines takes its path. The daemon must find the
/// old file beside the path by inode, finish it from the stored offset, and
/// then read the new file: every line exactly once, in file order.
#[test]
fn rotation_while_stopped_with_unread_lines_finishes_the_old_file() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let rotated = env.path("app.log.1");
    let mut d = env.start_delivered(TOPIC, "app", &log, 0..1000, WAIT);
    d.stop();

    write_numbered(&log, 1000, 2000); // unread: written while stopped
    let old_ino = std::fs::metadata(&log).unwrap().ino();
    std::fs::rename(&log, &rotated).expect("rename");
    write_numbered(&log, 2000, 2500);
    assert_ne!(std::fs::metadata(&log).unwrap().ino(), old_ino);
    d.restart();

    let msgs = read_back_in_order(&env, &mut d, &log, 2000..2500);
    // The old file's lines carry their offsets in the old file.
    let old_offsets = line_offsets(&rotated);
    for m in &msgs {
        let n = number_of(&m.value).unwrap();
        if (1000..2000).contains(&n) {
            assert_eq!(
                m.header("offset"),
                old_offsets.get(&n).map(|o| o.to_string()),
                "offset header of line {n} (read from the rotated file)"
            );
        }
    }
    d.stop();
}

/// Rewritten in place while stopped with LONGER content (same
/// inode, different numbered lines, more bytes than the stored offset): the
/// first bytes changed, so the new content is read from 0, exactly once.
#[test]
fn rewrite_longer_while_stopped_is_read_from_the_start() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut d = env.start_delivered(TOPIC, "app", &log, 0..1000, WAIT);
    d.stop();

    let before = std::fs::metadata(&log).unwrap();
    truncate(&log);
    write_numbered(&log, 1000, 2500);
    let after = std::fs::metadata(&log).unwrap();
    assert_eq!(after.ino(), before.ino());
    assert!(after.len() > before.len());
    d.restart();

    read_back_in_order(&env, &mut d, &log, 1000..2500);
    d.stop();
}

/// The broker is unreachable for 10 s while lines are written;
/// all arrive exactly once after it returns.
#[test]
fn broker_outage_then_recovery_delivers_exactly_once() {
    let mut env = TestEnv::with_proxy();
    let log = env.path("app.log");
    let mut d = env.start_delivered(TOPIC, "app", &log, 0..1000, WAIT);

    env.broker.proxy_mut().down();
    let down_at = Instant::now();
    // 2,000 lines over ~10 s.
    let writer = write_numbered_slowly(&log, 1000, 3000, 100, Duration::from_millis(500));
    writer.join().expect("writer");
    if let Some(rest) = Duration::from_secs(10).checked_sub(down_at.elapsed()) {
        thread::sleep(rest);
    }
    d.assert_running();
    env.broker.proxy_mut().up();
    eprintln!("outage: broker back after {:?}", down_at.elapsed());

    let t = Instant::now();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(3000)
        .timeout(WAIT)
        .run();
    eprintln!(
        "outage: {} messages {:?} after recovery",
        msgs.len(),
        t.elapsed()
    );
    assert_exactly_once(&msgs, 0..3000);
    assert_file_order(&msgs);
    check_headers(&msgs, "app", &log, 0..3000);
    d.stop();
}

/// `logcatch-ctl offsets --json` on a stopped daemon names each
/// source with its file's device, inode and size, fully read.
#[test]
fn ctl_offsets_after_clean_stop_names_each_file() {
    let env = TestEnv::new();
    let a = env.path("a.log");
    let b = env.path("b.log");
    write_numbered(&a, 0, 1000);
    write_numbered(&b, 1000, 1500);
    let mut d = env.start(&env.config(TOPIC).source("alpha", &a).source("beta", &b));
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(1500)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..1500);
    d.stop();

    let out = ctl_run(d.config_path(), &["offsets", "--json"]);
    assert_eq!(
        out.code,
        Some(0),
        "logcatch-ctl offsets --json failed:\n{}",
        out.describe()
    );
    let json = out.json();
    let stdout = &out.stdout;
    let entries = json
        .as_array()
        .unwrap_or_else(|| panic!("not a JSON array:\n{stdout}"));
    for (name, file) in [("alpha", &a), ("beta", &b)] {
        let e = entries
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no entry for source {name} in:\n{stdout}"));
        let meta = std::fs::metadata(file).unwrap();
        assert_eq!(e["path"], file.to_str().unwrap(), "path of {name}: {e}");
        assert_eq!(
            e["device"].as_u64(),
            Some(meta.dev()),
            "device of {name}: {e}"
        );
        assert_eq!(
            e["inode"].as_u64(),
            Some(meta.ino()),
            "inode of {name}: {e}"
        );
        assert_eq!(e["size"].as_u64(), Some(meta.len()), "size of {name}: {e}");
        assert_eq!(
            e["offset"].as_u64(),
            Some(meta.len()),
            "offset of {name}: {e}"
        );
    }
}

/// A `configpath` source (default topic) and a `sources` entry
/// with its own topic are both delivered, each to its topic. Stopped with
/// SIGINT, which must also exit 0.
#[test]
fn two_sources_deliver_to_two_topics() {
    let env = TestEnv::new();
    let web = env.path("web.log");
    let db = env.path("db.log");
    write_numbered(&web, 0, 2000);
    write_numbered(&db, 10_000, 13_000);
    let cfg = env
        .config(TOPIC)
        .configpath("web", &web)
        .source_to("db", &db, "db-logs");
    let mut d = env.start(&cfg);

    let web_msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(2000)
        .timeout(WAIT)
        .run();
    let db_msgs = d
        .consume(&env.addr(), "db-logs")
        .until_count(3000)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&web_msgs, 0..2000);
    assert_exactly_once(&db_msgs, 10_000..13_000);
    assert_file_order(&web_msgs);
    assert_file_order(&db_msgs);
    check_headers(&web_msgs, "web", &web, 0..2000);
    check_headers(&db_msgs, "db", &db, 10_000..13_000);

    d.sigint();
    let st = d.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "exit after SIGINT: {st}");
}

/// `--check` accepts a good config and rejects a bad one with the error on
/// stderr, without starting anything.
#[test]
fn check_validates_config() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let good = env.path("good.yaml");
    std::fs::write(&good, env.config(TOPIC).source("app", &log).render()).unwrap();
    let out = std::process::Command::new(Daemon::bin())
        .arg("--config")
        .arg(&good)
        .arg("--check")
        .output()
        .expect("run logcatch --check");
    assert!(
        out.status.success(),
        "--check rejected a good config: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = env.path("bad.yaml");
    std::fs::write(
        &bad,
        env.config(TOPIC)
            .source("app", &log)
            .kafka("brokerz", "\"x\"")
            .render(),
    )
    .unwrap();
    let out = std::process::Command::new(Daemon::bin())
        .arg("--config")
        .arg(&bad)
        .arg("--check")
        .output()
        .expect("run logcatch --check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--check accepted a bad config");
    assert!(
        stderr.contains("brokerz"),
        "stderr does not name the bad key:\n{stderr}"
    );
}

/// Lines ending in `\r\n` are delivered without the `\r`.
#[test]
fn crlf_line_endings_are_stripped() {
    let env = TestEnv::new();
    let log = env.path("win.log");
    let mut text = String::new();
    for n in 0..500 {
        text.push_str(&numbered_line(n));
        text.push_str("\r\n");
    }
    std::fs::write(&log, text).unwrap();
    let mut d = env.start(&env.config(TOPIC).source("win", &log));
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(500)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..500);
    assert_file_order(&msgs);
    // Checks each value is the line without "\r\n" and the offsets count
    // the "\r" bytes.
    check_headers(&msgs, "win", &log, 0..500);
    d.stop();
}

/// The librdkafka client (`kafka.client: librdkafka`, what
/// TLS, SASL and `kafka.properties` setups get) keeps the same guarantees
/// as the native one across `kill -9`, and `status` names the client.
#[test]
fn librdkafka_client_is_exactly_once_across_kill9() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    const TOTAL: u64 = 20_000;
    write_numbered(&log, 0, 5_000);
    let mut d = env.start(
        &env.config(TOPIC)
            .kafka("client", "librdkafka")
            .source("app", &log),
    );
    let writer = write_numbered_slowly(&log, 5_000, TOTAL, 250, Duration::from_millis(20));
    thread::sleep(Duration::from_millis(800));
    let status = ctl_json(d.config_path(), &["status", "--json"]);
    assert_eq!(status["kafka_client"], "librdkafka", "{status:#}");
    for round in 1..=2 {
        thread::sleep(Duration::from_millis(500));
        d.assert_running();
        d.kill9();
        eprintln!("librdkafka: kill -9 #{round}");
        d.restart();
    }
    writer.join().expect("writer");
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|msgs| Tally::of(msgs, 0..TOTAL).missing.is_empty())
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..TOTAL);
    check_headers(&msgs, "app", &log, 0..TOTAL);
    d.stop();
}
