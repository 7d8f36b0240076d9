//! A host clock 2 h ahead of the broker's. Kafka 4 refuses record
//! timestamps more than `log.message.timestamp.after.max.ms` (1 h by
//! default) ahead with INVALID_TIMESTAMP, whichever client sends them.
//!
//! The real daemon runs under libfaketime (`LD_PRELOAD` of the Debian
//! package `faketime`'s library, `FAKETIME=+2h`; monotonic clocks are left
//! alone), which is checked by the timestamps of the daemon's own log.
//! librdkafka (both clients use it: the native one for the read-back and
//! its anchors) waits with C11 `cnd_timedwait` until a deadline it takes
//! from the faked clock, and glibc's `cnd_timedwait` reaches
//! `pthread_cond_timedwait` without passing libfaketime, which translates
//! such deadlines: every wait would last 2 h more. So a shim
//! ([`CND_SHIM`], built with `cc` into the test's folder and preloaded
//! before libfaketime) sends `cnd_timedwait` through libfaketime's
//! `pthread_cond_timedwait`. The daemon
//! must log that the host's clock is wrong (`CLOCK_HINT` of
//! `src/kafka/client.rs`), deliver nothing,
//! dead-letter nothing and keep running (retrying with back-off). Then it
//! is restarted without libfaketime on the same `data_dir`: every line
//! arrives exactly once. The stall reported is from that restart to the
//! last line consumed.
//!
//! Without libfaketime the test fails at once and says what to install
//! (the Debian package `faketime`); `LOGCATCH_FAKETIME_LIB` may name the
//! library instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{counter, dead_letters, wait_queue};
use crate::common::*;

const TOPIC: &str = "clock-ahead";
const WAIT: Duration = Duration::from_secs(120);
const LINES: std::ops::Range<u64> = 0..2_000;
/// How far ahead the daemon's clock is, in seconds (`FAKETIME`).
const AHEAD_SECS: i64 = 2 * 3600;

/// `cnd_timedwait` through `pthread_cond_timedwait`, so that libfaketime
/// translates its deadline (see the module doc); glibc's `cnd_t` and
/// `mtx_t` are its `pthread_cond_t` and `pthread_mutex_t`.
const CND_SHIM: &str = r#"#include <errno.h>
#include <pthread.h>
#include <threads.h>
int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts) {
    int r = pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts);
    return r == 0 ? thrd_success : r == ETIMEDOUT ? thrd_timedout : thrd_error;
}
"#;

/// What the forwarder logs for an INVALID_TIMESTAMP refusal.
const CLOCK_ERROR: &str = "Kafka refuses this host's timestamps";

#[test]
fn clock_two_hours_ahead_is_refused_without_loss_then_delivered_once_native() {
    clock_case("native");
}

#[test]
fn clock_two_hours_ahead_is_refused_without_loss_then_delivered_once_librdkafka() {
    clock_case("librdkafka");
}

/// libfaketime's library: `$LOGCATCH_FAKETIME_LIB`, else the Debian
/// package's (`/usr/lib/<multiarch>/faketime/`), its multi-threaded
/// variant first. Panics, saying what to install, when there is none.
fn faketime_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("LOGCATCH_FAKETIME_LIB").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "LOGCATCH_FAKETIME_LIB={} does not exist",
            p.display()
        );
        return p;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/lib"));
    dirs.push(PathBuf::from("/usr/local/lib"));
    dirs.sort();
    for name in ["libfaketimeMT.so.1", "libfaketime.so.1"] {
        if let Some(p) = dirs
            .iter()
            .map(|d| d.join("faketime").join(name))
            .find(|p| p.is_file())
        {
            return p;
        }
    }
    panic!(
        "SKIPPED FOR WANT OF libfaketime: this test runs logcatch with its clock 2 h ahead \
         through libfaketime; install the Debian package `faketime` \
         (apt-get install -y faketime), or set LOGCATCH_FAKETIME_LIB to libfaketime.so.1"
    );
}

/// Builds [`CND_SHIM`] into `dir` with `cc`; returns the library's path.
fn build_cnd_shim(dir: &Path) -> PathBuf {
    let src = dir.join("cnd_shim.c");
    let lib = dir.join("libcnd_shim.so");
    std::fs::write(&src, CND_SHIM).expect("write the cnd_timedwait shim");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-lpthread")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc to build the cnd_timedwait shim: {e}"));
    assert!(
        out.status.success(),
        "cc could not build the cnd_timedwait shim ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// Seconds since the Unix epoch of a tracing log line's leading
/// `YYYY-MM-DDTHH:MM:SS` (UTC), if it has one.
fn log_line_secs(line: &str) -> Option<i64> {
    let b = line.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| line.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard
    // Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// How far ahead of the test's clock the daemon's start `start` stamped
/// its log line containing `needle`, in seconds (the line was logged
/// just before; `now` is when it was read).
fn log_clock_offset(d: &Daemon, start: usize, needle: &str, now: i64) -> i64 {
    let log = d.log();
    let marker = format!("===== test harness: start #{start} =====");
    let from = log
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the daemon's log"));
    let line = log[from..]
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("start #{start} logged no line containing {needle:?}"));
    let secs = log_line_secs(line)
        .unwrap_or_else(|| panic!("no leading timestamp in the daemon's log line {line:?}"));
    secs - now
}

/// Waits for the forwarder's clock error; fails at once if a line is
/// dead-lettered meanwhile (the clock is no reason to drop a line).
fn wait_clock_error(d: &mut Daemon, data_dir: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let dead = dead_letters(data_dir);
        assert_eq!(
            dead,
            0,
            "{dead} line(s) dead-lettered for a clock 2 h ahead, e.g.:\n{}",
            d.log_lines("dead-letter")
                .first()
                .cloned()
                .unwrap_or_default()
        );
        if let Some(line) = d.log_lines(CLOCK_ERROR).into_iter().next() {
            return line;
        }
        d.assert_running();
        assert!(
            Instant::now() < deadline,
            "no {CLOCK_ERROR:?} in the daemon's log after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn clock_case(client: &str) {
    let faketime = faketime_lib();
    let env = TestEnv::new();
    let shim = build_cnd_shim(env.dir.path());
    let preload = format!("{} {}", shim.display(), faketime.display());
    let addr = env.addr();
    let log = env.path("app.log");
    write_numbered(&log, LINES.start, LINES.end);
    let cfg = env
        .config(TOPIC)
        .kafka("client", client)
        .source("app", &log);
    let data_dir = cfg.data_dir.clone();
    let faked = [
        ("LD_PRELOAD", preload.as_str()),
        ("FAKETIME", "+2h"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut d = Daemon::with_env(env.dir.path(), &cfg, &faked);

    let line = wait_clock_error(&mut d, &data_dir);
    let offset = log_clock_offset(&d, 1, CLOCK_ERROR, now_secs());
    assert!(
        (AHEAD_SECS - 120..=AHEAD_SECS + 5).contains(&offset),
        "libfaketime did not put the daemon's clock 2 h ahead: its log is {offset} s ahead"
    );
    assert!(
        line.contains("this host's clock") && line.contains("NTP"),
        "the refusal does not say the host's clock is wrong:\n{line}"
    );
    eprintln!("kafka_policy: clock client={client}: the refusal as logged:\n{line}");

    // It goes on retrying, delivering and dead-lettering nothing.
    let n = (LINES.end - LINES.start) as usize;
    let q = wait_queue(&mut d, "a second refused session", WAIT, |q| {
        counter(q, "producer_rebuilds") >= 2
    });
    assert_eq!(
        (counter(&q, "delivered"), counter(&q, "dead_lettered")),
        (0, 0),
        "nothing may be delivered or dead-lettered while the clock is ahead:\n{q:#}"
    );
    let msgs = Consume::new(&addr, TOPIC)
        .until_count(1)
        .timeout(Duration::from_secs(3))
        .run();
    assert!(
        msgs.is_empty(),
        "{} message(s) reached Kafka with the clock 2 h ahead",
        msgs.len()
    );
    d.assert_running();
    assert_eq!(dead_letters(&data_dir), 0, "nothing is dead-lettered");
    let refusals = counter(&super::queue(d.config_path()), "producer_rebuilds");

    // The clock is fixed: the same data_dir, without libfaketime.
    d.stop();
    d.set_env(&[]);
    let restarted = Instant::now();
    d.restart();
    d.consume(&addr, TOPIC)
        .until_count(n)
        .quiet(Duration::ZERO)
        .timeout(WAIT)
        .expect("every line after the clock was fixed");
    let stall = restarted.elapsed();
    let msgs = d.consume(&addr, TOPIC).until_count(n).timeout(WAIT).run();
    assert_exactly_once(&msgs, LINES);
    let offset = log_clock_offset(&d, 2, "forwarding to Kafka", now_secs());
    assert!(
        (-120..=5).contains(&offset),
        "the restarted daemon's clock is still off by {offset} s"
    );
    let q = super::queue(d.config_path());
    assert_eq!(counter(&q, "dead_lettered"), 0, "{q:#}");
    assert_eq!(dead_letters(&data_dir), 0, "nothing is dead-lettered");
    d.stop();
    eprintln!(
        "kafka_policy: clock client={client}: {refusals} refused sessions while 2 h ahead; every line delivered {:.1} s after the restart with the right clock (stall)",
        stall.as_secs_f64()
    );
}
