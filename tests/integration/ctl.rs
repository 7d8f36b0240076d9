//! End-to-end tests of `logcatch-ctl` and the admin endpoint (issue 4)
//! against the real binaries and a real (Apache Kafka) broker.
//!
//! The contract: the admin endpoint is a Unix socket `data_dir/admin.sock`
//! (mode 0600) unless `admin.listen` names another socket path or a
//! loopback TCP address; non-loopback addresses are refused at config load
//! unless `admin.allow_non_loopback: true`; `admin.metrics_listen` serves
//! `/metrics` over TCP. `logcatch-ctl --config PATH <offsets|queue|status|
//! reset|forget|reload> [--json]` talks to the daemon, or with no daemon
//! opens the store and says `no daemon is running` on stderr (`status` and
//! `reload` then exit 1). Exit codes: 0 ok, 1 daemon/store error, 2 usage.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "logs";
const NO_DAEMON: &str = "no daemon is running";

/// Config text with an `admin:` section appended.
fn with_admin(cfg: &ConfigBuilder, admin: &[(&str, String)]) -> String {
    let mut text = cfg.render();
    text.push_str("admin:\n");
    for (k, v) in admin {
        text.push_str(&format!("  {k}: {v}\n"));
    }
    text
}

fn quoted(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// Asserts a socket file exists with mode 0600.
fn assert_socket_0600(p: &Path) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(m.file_type().is_socket(), "{} is not a socket", p.display());
    assert_eq!(
        m.permissions().mode() & 0o777,
        0o600,
        "mode of {} is {:o}",
        p.display(),
        m.permissions().mode() & 0o777
    );
}

/// Checks one source's offsets row against its fully read file.
fn check_row(rows: &serde_json::Value, name: &str, file: &Path, lines: u64, live: bool) {
    let r = offsets_row(rows, name).unwrap_or_else(|| panic!("no row for {name}:\n{rows:#}"));
    let meta = std::fs::metadata(file).unwrap();
    assert_eq!(r["path"], file.to_str().unwrap(), "path: {r:#}");
    assert_eq!(r["device"].as_u64(), Some(meta.dev()), "device: {r:#}");
    assert_eq!(r["inode"].as_u64(), Some(meta.ino()), "inode: {r:#}");
    assert_eq!(r["offset"].as_u64(), Some(meta.len()), "offset: {r:#}");
    assert_eq!(r["size"].as_u64(), Some(meta.len()), "size: {r:#}");
    assert_eq!(r["lag_bytes"].as_u64(), Some(0), "lag_bytes: {r:#}");
    assert_eq!(r["lines"].as_u64(), Some(lines), "lines: {r:#}");
    let bytes = r["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("bytes: {r:#}"));
    assert!(
        (meta.len() - lines..=meta.len()).contains(&bytes),
        "bytes {bytes} for a file of {} bytes and {lines} lines: {r:#}",
        meta.len()
    );
    assert!(
        r["updated_ms"].as_u64().is_some_and(|t| t > 0),
        "updated_ms: {r:#}"
    );
    assert_eq!(r["configured"], true, "configured: {r:#}");
    assert!(r["last_error"].is_null(), "last_error: {r:#}");
    if live {
        assert_eq!(r["state"], "tailing", "state: {r:#}");
        assert!(
            r["last_read_ms"].as_u64().is_some_and(|t| t > 0),
            "last_read_ms: {r:#}"
        );
    } else {
        assert_eq!(r["state"], "not_running", "state: {r:#}");
        assert!(r["last_read_ms"].is_null(), "last_read_ms offline: {r:#}");
    }
}

/// Waits until the live offsets show every (name, file) fully committed.
fn wait_committed(config: &Path, files: &[(&str, &Path)]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = |rows: &serde_json::Value| {
        files.iter().all(|(name, f)| {
            offsets_row(rows, name)
                .is_some_and(|r| r["offset"].as_u64() == Some(std::fs::metadata(f).unwrap().len()))
        })
    };
    for _ in 0..600 {
        last = ctl_json(config, &["offsets", "--json"]);
        if done(&last) {
            return last;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("offsets never caught up with the files:\n{last:#}");
}

/// Every line of `range` arrived exactly `times` times, and nothing else.
fn assert_each_times(msgs: &[Msg], range: std::ops::Range<u64>, times: usize) {
    let counts = counts_of(msgs);
    let wrong: Vec<u64> = range
        .clone()
        .filter(|n| counts.get(n).copied().unwrap_or(0) != times)
        .collect();
    let unexpected: Vec<u64> = counts
        .keys()
        .copied()
        .filter(|n| !range.contains(n))
        .collect();
    assert!(
        wrong.is_empty() && unexpected.is_empty(),
        "want every line of {range:?} exactly {times} times ({} messages); wrong count: {}; unexpected: {}",
        msgs.len(),
        ranges(wrong),
        ranges(unexpected)
    );
}

/// offsets, queue, status, reload against a running daemon and then
/// against its stopped store, checked against what was written and
/// delivered.
#[test]
fn offsets_queue_status_reload_report_live_and_offline() {
    let env = TestEnv::new();
    let (a, b) = (env.path("a.log"), env.path("b.log"));
    write_numbered(&a, 0, 1000);
    write_numbered(&b, 5000, 5500);
    let mut d = env.start(&env.config(TOPIC).source("a", &a).source("b", &b));
    let cfg = d.config_path().to_path_buf();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(1500)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..1000, 5000..5500]);

    // The socket.
    assert_socket_0600(&env.path("data/admin.sock"));

    // offsets, live.
    wait_committed(&cfg, &[("a", &a), ("b", &b)]);
    let out = ctl_run(&cfg, &["offsets", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(!out.stderr.contains(NO_DAEMON), "{}", out.describe());
    let rows = out.json();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows:#}");
    check_row(&rows, "a", &a, 1000, true);
    check_row(&rows, "b", &b, 500, true);
    let table = ctl_run(&cfg, &["offsets"]);
    assert_eq!(table.code, Some(0), "{}", table.describe());
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("a ") && l.contains(a.to_str().unwrap())),
        "table has no row for a:\n{}",
        table.stdout
    );

    check_queue_live(&cfg, &env.path("data/spool"), msgs.len() as u64);
    check_status_live(&cfg, d.pid());

    // reload, live: a forced reload of an unchanged file.
    let out = ctl_run(&cfg, &["reload"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains("added 0, removed 0, changed 0 (path 0, settings 0), unchanged 2"),
        "{}",
        out.describe()
    );
    let r = ctl_json(&cfg, &["reload", "--json"]);
    assert_eq!(
        r["result"]["unchanged"],
        serde_json::json!(["a", "b"]),
        "{r:#}"
    );
    let st = ctl_json(&cfg, &["status", "--json"]);
    assert_eq!(st["reloads"], 2, "status: {st:#}");
    assert_eq!(d.log_count("config reloaded:"), 2);
    let live_cursor = ctl_json(&cfg, &["queue", "--json"])["cursor"].clone();

    d.stop();
    assert!(
        !env.path("data/admin.sock").exists(),
        "the admin socket outlived the daemon"
    );

    check_offline(
        &cfg,
        &env.path("data/spool"),
        &[("a", &a, 1000), ("b", &b, 500)],
        &live_cursor,
    );
}

/// `queue --json` of the running daemon of the test above (1,500 lines of
/// 100 bytes), once its durable cursor passed everything: all sent, as
/// many delivered as the consumer read (`delivered`), nothing waiting or
/// failed, the spool in `spool_dir`.
fn check_queue_live(cfg: &Path, spool_dir: &Path, delivered: u64) {
    // Wait for the durable cursor to pass everything.
    let mut q = serde_json::Value::Null;
    for _ in 0..300 {
        q = ctl_json(cfg, &["queue", "--json"]);
        if q["waiting_bytes"] == 0 && q["delivered"] == 1500 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(q["delivered"].as_u64(), Some(delivered), "queue: {q:#}");
    assert_eq!(q["sent"].as_u64(), Some(1500), "queue: {q:#}");
    assert_eq!(q["waiting_bytes"], 0, "queue: {q:#}");
    assert_eq!(q["dead_lettered"], 0, "queue: {q:#}");
    assert_eq!(q["producer_errors"], 0, "queue: {q:#}");
    assert_eq!(q["producer_rebuilds"], 0, "queue: {q:#}");
    assert_eq!(q["damaged_frames"], 0, "queue: {q:#}");
    assert_eq!(q["damaged_bytes"], 0, "queue: {q:#}");
    assert_eq!(q["paused_by_backpressure"], false, "queue: {q:#}");
    assert_eq!(q["spool_dir"], spool_dir.to_str().unwrap(), "queue: {q:#}");
    assert!(
        q["segments"].as_u64().is_some_and(|n| n >= 1),
        "queue: {q:#}"
    );
    assert!(
        q["bytes"].as_u64().is_some_and(|n| n >= 150_000 - 1500),
        "spool bytes smaller than the lines spooled: {q:#}"
    );
    assert!(
        q["cursor"]["segment"].is_u64() && q["cursor"]["position"].is_u64(),
        "queue: {q:#}"
    );
    assert!(q["durable_end"].is_object(), "queue: {q:#}");
    assert!(
        q["oldest_unacked_age_ms"].is_null(),
        "nothing is unacked: {q:#}"
    );
}

/// `status --json` of the running daemon `pid`, before any reload.
fn check_status_live(cfg: &Path, pid: Option<u32>) {
    let st = ctl_json(cfg, &["status", "--json"]);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"), "status: {st:#}");
    assert_eq!(st["pid"].as_u64(), pid.map(u64::from), "status: {st:#}");
    assert_eq!(st["config_file"], cfg.to_str().unwrap(), "status: {st:#}");
    assert_eq!(st["sources"], 2, "status: {st:#}");
    assert_eq!(st["running_tailers"], 2, "status: {st:#}");
    assert_eq!(st["reloads"], 0, "status: {st:#}");
    assert_eq!(st["reload_failures"], 0, "status: {st:#}");
    assert!(st["last_reload_error"].is_null(), "status: {st:#}");
    assert!(st["last_reload"].is_null(), "status: {st:#}");
    assert_eq!(st["broker"], "up", "status: {st:#}");
    assert_eq!(st["kafka_client"], "native", "the default client: {st:#}");
}

/// offsets, queue, status and reload with the daemon stopped: the store's
/// rows for `files` (name, path, lines), the cursor it last reported live,
/// and status and reload refused.
fn check_offline(
    cfg: &Path,
    spool_dir: &Path,
    files: &[(&str, &Path, u64)],
    live_cursor: &serde_json::Value,
) {
    // offsets, offline.
    let out = ctl_run(cfg, &["offsets", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains(NO_DAEMON),
        "no offline note:\n{}",
        out.describe()
    );
    let rows = out.json();
    for (name, file, lines) in files {
        check_row(&rows, name, file, *lines, false);
    }

    // queue, offline.
    let out = ctl_run(cfg, &["queue", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains(NO_DAEMON),
        "no offline note:\n{}",
        out.describe()
    );
    let q = out.json();
    for k in [
        "sent",
        "delivered",
        "dead_lettered",
        "producer_errors",
        "producer_rebuilds",
    ] {
        assert!(q[k].is_null(), "offline queue has {k}: {q:#}");
    }
    assert_eq!(q["waiting_bytes"], 0, "offline queue: {q:#}");
    assert_eq!(q["spool_dir"], spool_dir.to_str().unwrap(), "{q:#}");
    assert_eq!(
        &q["cursor"], live_cursor,
        "offline cursor differs from the last live one: {q:#}"
    );

    // status and reload need a daemon.
    for cmd in [["status", "--json"], ["reload", "--json"]] {
        let out = ctl_run(cfg, &cmd);
        assert_eq!(
            out.code,
            Some(1),
            "{cmd:?} with no daemon:\n{}",
            out.describe()
        );
        assert!(
            out.stderr.contains(NO_DAEMON),
            "{cmd:?}:\n{}",
            out.describe()
        );
    }
}

/// `reset a --to beginning --yes` on a running daemon (admin on a custom
/// socket path): every line delivered a second time; then to a byte
/// offset; bad resets change nothing.
#[test]
fn reset_while_running_delivers_again_from_the_new_offset() {
    let env = TestEnv::new();
    let a = env.path("a.log");
    write_numbered(&a, 0, 1000);
    let sock = env.path("custom.sock");
    let text = with_admin(
        &env.config(TOPIC).source("a", &a),
        &[("listen", quoted(&sock))],
    );
    let mut d = Daemon::start(env.dir.path(), &text);
    let cfg = d.config_path().to_path_buf();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(1000)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..1000);
    assert_socket_0600(&sock);
    assert!(
        !env.path("data/admin.sock").exists(),
        "a socket at the default path too"
    );

    let out = ctl_run(&cfg, &["reset", "a", "--to", "beginning", "--yes"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(!out.stderr.contains(NO_DAEMON), "{}", out.describe());
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|m| {
            let c = counts_of(m);
            (0..1000).all(|n| c.get(&n) >= Some(&2))
        })
        .timeout(WAIT)
        .run();
    assert_each_times(&msgs, 0..1000, 2);
    wait_committed(&cfg, &[("a", &a)]);

    // To the start of line 900: lines 900.. a third time.
    let at = line_offsets(&a)[&900].to_string();
    let out = ctl_run(&cfg, &["reset", "a", "--to", &at, "--yes"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(2100)
        .timeout(WAIT)
        .run();
    let c = counts_of(&msgs);
    assert!(
        (0..900).all(|n| c[&n] == 2) && (900..1000).all(|n| c[&n] == 3) && msgs.len() == 2100,
        "after reset to line 900: {} messages, counts of 899/900/999: {:?}/{:?}/{:?}",
        msgs.len(),
        c.get(&899),
        c.get(&900),
        c.get(&999)
    );

    // Past the end, and an unknown source: errors, nothing moves.
    let size = std::fs::metadata(&a).unwrap().len();
    let past = (size + 1000).to_string();
    for args in [
        vec!["reset", "a", "--to", past.as_str(), "--yes"],
        vec!["reset", "nosuch", "--to", "beginning", "--yes"],
        vec!["forget", "nosuch", "--yes"],
    ] {
        let out = ctl_run(&cfg, &args);
        assert_eq!(out.code, Some(1), "{args:?}:\n{}", out.describe());
    }
    thread::sleep(Duration::from_millis(500));
    let rows = wait_committed(&cfg, &[("a", &a)]);
    assert_eq!(
        offsets_row(&rows, "a").unwrap()["offset"].as_u64(),
        Some(size)
    );
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(2100)
        .timeout(Duration::from_secs(10))
        .run();
    assert_eq!(msgs.len(), 2100, "a failed reset delivered lines");
    d.stop();
}

/// `reset a --to end --yes` with no daemon: lines written while it was
/// stopped and before the reset are skipped, lines appended after it
/// arrive.
#[test]
fn reset_to_end_offline_skips_the_unread_lines() {
    let env = TestEnv::new();
    let a = env.path("a.log");
    let mut d = env.start_delivered(TOPIC, "a", &a, 0..1000, WAIT);
    let cfg = d.config_path().to_path_buf();
    d.stop();

    write_numbered(&a, 1000, 1500); // skipped by the reset
    let out = ctl_run(&cfg, &["reset", "a", "--to", "end", "--yes"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains(NO_DAEMON),
        "no offline note:\n{}",
        out.describe()
    );
    let rows = ctl_json(&cfg, &["offsets", "--json"]);
    let r = offsets_row(&rows, "a").unwrap();
    assert_eq!(
        r["offset"].as_u64(),
        Some(std::fs::metadata(&a).unwrap().len()),
        "{r:#}"
    );

    write_numbered(&a, 1500, 2000);
    d.restart();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, 1500..2000))
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..1000, 1500..2000]);
    d.stop();
}

/// `forget a --yes` with no daemon: the record is gone and the whole file
/// is delivered again at the next start.
#[test]
fn forget_offline_delivers_the_whole_file_again() {
    let env = TestEnv::new();
    let a = env.path("a.log");
    let mut d = env.start_delivered(TOPIC, "a", &a, 0..1000, WAIT);
    let cfg = d.config_path().to_path_buf();
    d.stop();

    let out = ctl_run(&cfg, &["forget", "a", "--yes"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains(NO_DAEMON),
        "no offline note:\n{}",
        out.describe()
    );
    let rows = ctl_json(&cfg, &["offsets", "--json"]);
    let r = offsets_row(&rows, "a").expect("a configured source keeps a row");
    assert!(r["offset"].is_null(), "forgotten, yet: {r:#}");
    assert_eq!(r["state"], "not_running", "{r:#}");
    let again = ctl_run(&cfg, &["forget", "a", "--yes"]);
    assert_eq!(
        again.code,
        Some(1),
        "forgetting twice:\n{}",
        again.describe()
    );

    d.restart();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|m| {
            let c = counts_of(m);
            (0..1000).all(|n| c.get(&n) >= Some(&2))
        })
        .timeout(WAIT)
        .run();
    assert_each_times(&msgs, 0..1000, 2);
    d.stop();
}

/// `reset`/`forget` without `--yes` and stdin not a terminal exit 2 and
/// change nothing (live and offline); usage errors exit 2.
#[test]
fn reset_and_forget_need_confirmation_and_usage_errors_exit_2() {
    let env = TestEnv::new();
    let a = env.path("a.log");
    write_numbered(&a, 0, 500);
    let mut d = env.start(&env.config(TOPIC).source("a", &a));
    let cfg = d.config_path().to_path_buf();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(500)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..500);
    let before = wait_committed(&cfg, &[("a", &a)]);
    let before = offsets_row(&before, "a").unwrap().clone();

    let refuse = |phase: &str| {
        for args in [
            vec!["reset", "a", "--to", "beginning"],
            vec!["reset", "a", "--to", "0", "--json"],
            vec!["forget", "a"],
        ] {
            let out = ctl_run(&cfg, &args);
            assert_eq!(out.code, Some(2), "{phase} {args:?}:\n{}", out.describe());
            assert!(
                out.stderr.contains("--yes"),
                "{phase} {args:?}:\n{}",
                out.describe()
            );
        }
    };
    refuse("live");
    thread::sleep(Duration::from_millis(500));
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(500)
        .timeout(Duration::from_secs(10))
        .run();
    assert_exactly_once(&msgs, 0..500);
    d.stop();

    refuse("offline");
    let rows = ctl_json(&cfg, &["offsets", "--json"]);
    let after = offsets_row(&rows, "a").unwrap();
    for k in ["offset", "lines", "bytes", "inode", "updated_ms"] {
        assert_eq!(
            after[k], before[k],
            "{k} changed: before {before:#}, after {after:#}"
        );
    }

    // Usage errors.
    let bare = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_logcatch-ctl"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run logcatch-ctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let c = cfg.to_str().unwrap();
    for args in [
        vec!["offsets"],                                                // no --config
        vec!["--config", c, "frobnicate"],                              // unknown command
        vec!["--config", c],                                            // no command
        vec!["--config", c, "reset", "a", "--to", "sideways", "--yes"], // bad --to
        vec!["--config", c, "reset", "--to", "end", "--yes"],           // no name
    ] {
        let (code, stderr) = bare(&args);
        assert_eq!(code, Some(2), "{args:?}: exit {code:?}\n{stderr}");
    }
}

/// A non-loopback admin address is refused at config load unless allowed.
#[test]
fn non_loopback_admin_is_refused() {
    let dir = tempfile::Builder::new()
        .prefix("logcatch-e2e-")
        .tempdir()
        .unwrap();
    let cfg = ConfigBuilder::new(dir.path().join("data"), "127.0.0.1:1", TOPIC)
        .source("a", dir.path().join("a.log"));
    let port = free_port();
    let check = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = Command::new(Daemon::bin())
            .arg("--config")
            .arg(&p)
            .arg("--check")
            .output()
            .expect("run logcatch --check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for key in ["listen", "metrics_listen"] {
        let text = with_admin(&cfg, &[(key, format!("\"0.0.0.0:{port}\""))]);
        let (ok, stderr) = check(&format!("{key}.yaml"), &text);
        assert!(!ok, "--check accepted admin.{key}: 0.0.0.0:{port}");
        assert!(
            stderr.contains("allow_non_loopback"),
            "the refusal of admin.{key} does not mention allow_non_loopback:\n{stderr}"
        );
    }
    let text = with_admin(
        &cfg,
        &[
            ("listen", format!("\"0.0.0.0:{port}\"")),
            ("allow_non_loopback", "true".into()),
        ],
    );
    let (ok, stderr) = check("allowed.yaml", &text);
    assert!(
        ok,
        "--check refused an allowed non-loopback address:\n{stderr}"
    );

    // The daemon itself refuses to start on it, without listening.
    let p = dir.path().join("listen.yaml");
    let out = Command::new(Daemon::bin())
        .arg("--config")
        .arg(&p)
        .stdin(Stdio::null())
        .output()
        .expect("run logcatch");
    assert!(
        !out.status.success(),
        "logcatch started with admin.listen 0.0.0.0"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allow_non_loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Samples of `/metrics` by `name{labels}`.
type Metrics = std::collections::BTreeMap<String, f64>;

/// Polls `/metrics` at `addr` until `pred` holds; returns the samples and
/// the text.
fn wait_metrics(addr: &str, what: &str, pred: &dyn Fn(&Metrics) -> bool) -> (Metrics, String) {
    let mut last = String::new();
    for _ in 0..300 {
        let (code, body) = http_get_tcp(addr, "/metrics");
        assert_eq!(code, 200, "GET /metrics: {body}");
        let m = parse_metrics(&body);
        if pred(&m) {
            return (m, body);
        }
        last = body;
        thread::sleep(Duration::from_millis(100));
    }
    panic!("metrics never showed {what}:\n{last}");
}

/// The sample `k`; panics if there is none.
fn sample(m: &Metrics, k: &str) -> f64 {
    *m.get(k)
        .unwrap_or_else(|| panic!("no sample {k} in /metrics: {m:#?}"))
}

/// The metric families, and their values once the 1,300 lines of sources
/// a (1,000) and b (300) were delivered: they agree with the offsets
/// `rows`.
fn check_metrics_after_delivery(m: &Metrics, body: &str, rows: &serde_json::Value) {
    for family in [
        "logcatch_source_lines_read_total",
        "logcatch_source_bytes_read_total",
        "logcatch_source_lag_bytes",
        "logcatch_spool_bytes",
        "logcatch_spool_segments",
        "logcatch_spool_waiting_bytes",
        "logcatch_records_sent_total",
        "logcatch_records_delivered_total",
        "logcatch_delivery_errors_total",
        "logcatch_dead_lettered_total",
        "logcatch_reloads_total",
        "logcatch_reload_failures_total",
        "logcatch_running_tailers",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "no TYPE line for {family}:\n{body}"
        );
    }
    let row_bytes = |name: &str| offsets_row(rows, name).unwrap()["bytes"].as_f64().unwrap();
    assert_eq!(
        sample(m, "logcatch_source_lines_read_total{source=\"a\"}"),
        1000.0
    );
    assert_eq!(
        sample(m, "logcatch_source_lines_read_total{source=\"b\"}"),
        300.0
    );
    assert_eq!(
        sample(m, "logcatch_source_bytes_read_total{source=\"a\"}"),
        row_bytes("a")
    );
    assert_eq!(
        sample(m, "logcatch_source_bytes_read_total{source=\"b\"}"),
        row_bytes("b")
    );
    assert_eq!(sample(m, "logcatch_source_lag_bytes{source=\"a\"}"), 0.0);
    assert_eq!(sample(m, "logcatch_source_lag_bytes{source=\"b\"}"), 0.0);
    assert!(
        sample(m, "logcatch_spool_bytes") >= 130_000.0 - 1300.0,
        "{body}"
    );
    assert!(sample(m, "logcatch_spool_segments") >= 1.0, "{body}");
    assert_eq!(sample(m, "logcatch_records_sent_total"), 1300.0);
    assert_eq!(sample(m, "logcatch_delivery_errors_total"), 0.0);
    assert_eq!(sample(m, "logcatch_dead_lettered_total"), 0.0);
    assert_eq!(sample(m, "logcatch_reloads_total"), 0.0);
    assert_eq!(sample(m, "logcatch_reload_failures_total"), 0.0);
    assert_eq!(sample(m, "logcatch_running_tailers"), 2.0);
}

/// Admin over loopback TCP plus `/metrics` on `metrics_listen`: the
/// families are there with values that match what was written, delivered
/// and reloaded.
#[test]
fn tcp_admin_and_metrics_match_what_was_delivered() {
    let env = TestEnv::new();
    let (a, b) = (env.path("a.log"), env.path("b.log"));
    write_numbered(&a, 0, 1000);
    write_numbered(&b, 5000, 5300);
    let (p1, p2) = (free_port(), free_port());
    let admin = [
        ("listen", format!("\"127.0.0.1:{p1}\"")),
        ("metrics_listen", format!("\"127.0.0.1:{p2}\"")),
    ];
    let base = env.config(TOPIC).source("a", &a);
    let text = with_admin(&base.clone().source("b", &b), &admin);
    let mut d = Daemon::start(env.dir.path(), &text);
    let cfg = d.config_path().to_path_buf();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(1300)
        .timeout(WAIT)
        .run();
    assert_exactly_once_in(&msgs, &[0..1000, 5000..5300]);
    assert!(
        !env.path("data/admin.sock").exists(),
        "a Unix socket with admin.listen on TCP"
    );

    // ctl over TCP.
    let out = ctl_run(&cfg, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert_eq!(out.json()["running_tailers"], 2);
    let rows = wait_committed(&cfg, &[("a", &a), ("b", &b)]);
    check_row(&rows, "a", &a, 1000, true);

    let metrics_addr = format!("127.0.0.1:{p2}");
    let get = |what: &str, pred: &dyn Fn(&Metrics) -> bool| wait_metrics(&metrics_addr, what, pred);
    let (m, body) = get("everything delivered", &|m| {
        m.get("logcatch_records_delivered_total") == Some(&1300.0)
            && m.get("logcatch_spool_waiting_bytes") == Some(&0.0)
    });
    check_metrics_after_delivery(&m, &body, &rows);

    // The metrics port serves only /metrics; the admin port serves it too.
    assert_eq!(http_get_tcp(&metrics_addr, "/status").0, 404);
    let (code, admin_body) = http_get_tcp(&format!("127.0.0.1:{p1}"), "/metrics");
    assert_eq!(code, 200);
    assert!(
        admin_body.contains("logcatch_running_tailers 2"),
        "{admin_body}"
    );

    // A rejected edit, then one that removes b: the reload counters and the
    // tailer gauge follow.
    d.rewrite_config(&format!("{text}bogus_key: 1\n"));
    get("a reload failure", &|m| {
        m.get("logcatch_reload_failures_total") == Some(&1.0)
    });
    write_numbered(&a, 1000, 1100);
    d.rewrite_config(&with_admin(&base, &admin));
    let (m, body) = get("the reload", &|m| {
        m.get("logcatch_reloads_total") == Some(&1.0)
            && m.get("logcatch_running_tailers") == Some(&1.0)
            && m.get("logcatch_source_lines_read_total{source=\"a\"}") == Some(&1100.0)
    });
    assert_eq!(sample(&m, "logcatch_reload_failures_total"), 1.0);
    assert!(
        !body.contains("source=\"b\""),
        "the removed source b is still reported:\n{body}"
    );
    d.stop();

    // Offline over a TCP endpoint: nothing answers, the store is read.
    let out = ctl_run(&cfg, &["offsets", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(out.stderr.contains(NO_DAEMON), "{}", out.describe());
    check_row(&out.json(), "a", &a, 1100, false);
}
