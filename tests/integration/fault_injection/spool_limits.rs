//! The spool at its limits, against the real `logcatch` binary and a real
//! (Apache Kafka) broker.
//!
//! `spool_cap_backpressure`: a 256 KiB spool fills while the broker is away;
//! the daemon pauses (`logcatch-ctl queue --json`), the spool stays near its
//! cap, and everything arrives exactly once when the broker returns.
//!
//! `disk_full_then_space_returns`: data_dir on a 2 MiB tmpfs (mounted by
//! the test; skipped with a note if mounting fails); the spool write fails,
//! the daemon keeps running and retries; after a remount to 64 MiB every
//! line arrives exactly once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const TOPIC: &str = "logs";
const WAIT: Duration = Duration::from_secs(180);

fn queue(config: &Path) -> serde_json::Value {
    ctl_json(config, &["queue", "--json"])
}

/// Sum of the spool's segment files on disk.
fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Polls `logcatch-ctl queue --json` until the spool reports backpressure
/// (at most 60 s after `since`); returns that report.
fn wait_paused(d: &mut Daemon, since: Instant) -> serde_json::Value {
    loop {
        let q = queue(d.config_path());
        if q["paused_by_backpressure"] == true {
            return q;
        }
        d.assert_running();
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the spool never reported backpressure: {q:#}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// For a delivery that stalled at `got` of 21,000 messages: the spool as
/// the daemon sees it and on disk, and its last spool log lines.
fn describe_stall(d: &Daemon, spool: &Path, got: usize) {
    let q = queue(d.config_path());
    let mut segs: Vec<(String, u64)> = std::fs::read_dir(spool)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map(|m| m.len()).unwrap_or(0),
            )
        })
        .collect();
    segs.sort();
    eprintln!(
        "cap: STALLED at {} of 21000 messages after the broker returned\nqueue: {q:#}\nspool dir: {segs:?}\n--- daemon.log (spool lines) ---\n{}",
        got,
        d.log_lines("logcatch::spool").iter().rev().take(6).rev().cloned().collect::<Vec<_>>().join("\n")
    );
}

/// A 256 KiB spool fills while the broker is away: tailers pause, the spool
/// stays near its cap, nothing is lost or doubled when the broker returns.
#[test]
fn spool_cap_backpressure() {
    const CAP: u64 = 256 << 10;
    let dir = tempfile::Builder::new()
        .prefix("logcatch-cap-")
        .tempdir()
        .unwrap();
    let mut broker = Broker::start_with_proxy();
    broker.create_topic(TOPIC, 1);
    let log = dir.path().join("app.log");
    write_numbered(&log, 0, 1000);
    let cfg = ConfigBuilder::new(dir.path().join("data"), &broker.addr(), TOPIC)
        .source("app", &log)
        .spool("max_bytes", "256KiB")
        .spool("segment_bytes", "64KiB");
    let mut d = Daemon::with(dir.path(), &cfg);
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(1000)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..1000);
    let q = queue(d.config_path());
    assert_eq!(q["paused_by_backpressure"], false, "{q:#}");

    broker.proxy_mut().down();
    // 2 MB: eight times the cap.
    let writer = write_numbered_slowly(&log, 1000, 21_000, 2000, Duration::from_millis(100));
    writer.join().unwrap();
    let t = Instant::now();
    let paused = wait_paused(&mut d, t);
    // Bound: the cap, plus one group of writes (at most segment_bytes) and
    // the one tailer batch (at most read_buffer, 256 KiB) that crossed it.
    let bound = CAP + (64 << 10) + (256 << 10) + (8 << 10);
    let spool = dir.path().join("data/spool");
    thread::sleep(Duration::from_secs(2));
    d.assert_running();
    let q2 = queue(d.config_path());
    let on_disk = spool_bytes(&spool);
    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    let row = offsets_row(&rows, "app").unwrap().clone();
    eprintln!(
        "cap: paused after {:?}; queue bytes {} (then {}), {on_disk} bytes of segments on disk, cap {CAP}, bound {bound}; app offset {} of {}; state {}",
        t.elapsed(),
        paused["bytes"],
        q2["bytes"],
        row["offset"],
        std::fs::metadata(&log).unwrap().len(),
        row["state"]
    );
    assert_eq!(q2["paused_by_backpressure"], true, "{q2:#}");
    assert!(
        q2["bytes"].as_u64().unwrap() <= bound && on_disk <= bound,
        "the spool grew past its cap: {} bytes reported, {on_disk} on disk, bound {bound}",
        q2["bytes"]
    );
    assert!(
        row["offset"].as_u64().unwrap() < std::fs::metadata(&log).unwrap().len(),
        "the tailer did not pause: it committed the whole file with a full spool: {row:#}"
    );
    assert_eq!(
        row["state"], "paused_by_backpressure",
        "offsets does not show the pause: {row:#}"
    );

    broker.proxy_mut().up();
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(21_000)
        .timeout(Duration::from_secs(45))
        .run();
    if msgs.len() < 21_000 {
        describe_stall(&d, &spool, msgs.len());
    }
    assert_exactly_once(&msgs, 0..21_000);
    assert_file_order(&msgs);
    let q = queue(d.config_path());
    assert_eq!(q["paused_by_backpressure"], false, "{q:#}");
    d.stop();
}

// ---------------------------------------------------------------------------
// Disk full
// ---------------------------------------------------------------------------

/// A tmpfs mounted for one test, unmounted on drop (also on panic).
struct TmpfsMount {
    dir: PathBuf,
}

impl TmpfsMount {
    fn mount(dir: &Path, size: &str) -> Result<TmpfsMount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(TmpfsMount {
            dir: dir.to_path_buf(),
        })
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {} failed: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// data_dir on a 2 MiB tmpfs: the spool write fails with ENOSPC, the daemon
/// keeps running and retries, and after the tmpfs grows every line arrives
/// exactly once.
#[test]
fn disk_full_then_space_returns() {
    // Drop order matters: the daemon (declared last) dies first, then the
    // tmpfs is unmounted, then the temp dir removed.
    let dir = tempfile::Builder::new()
        .prefix("logcatch-full-")
        .tempdir()
        .unwrap();
    let mnt_dir = dir.path().join("mnt");
    let mnt = match TmpfsMount::mount(&mnt_dir, "2m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("disk_full: SKIPPED, cannot mount a tmpfs ({e}); the full-disk case is not tested here");
            return;
        }
    };
    let broker = Broker::start();
    let log = dir.path().join("app.log");
    write_numbered(&log, 0, 1000);
    let cfg = ConfigBuilder::new(mnt_dir.join("data"), &broker.addr(), TOPIC).source("app", &log);
    let mut d = Daemon::with(dir.path(), &cfg);
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(1000)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..1000);

    // 4 MB into a 2 MiB file system: the open segment cannot be released
    // while it is being written, so the disk fills up.
    write_numbered(&log, 1000, 41_000);
    let line = d.wait_log("spool write failed", 1, WAIT);
    eprintln!("disk_full: {line}");
    thread::sleep(Duration::from_secs(2));
    d.assert_running();
    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    let row = offsets_row(&rows, "app").unwrap().clone();
    let size = std::fs::metadata(&log).unwrap().len();
    eprintln!(
        "disk_full: app offset {} of {size} while the disk is full; state {}",
        row["offset"], row["state"]
    );
    assert!(
        row["offset"].as_u64().unwrap() < size,
        "the whole file was committed although the spool could not hold it: {row:#}"
    );

    mnt.resize("64m");
    eprintln!("disk_full: tmpfs grown to 64 MiB");
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(41_000)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..41_000);
    assert_file_order(&msgs);
    let ok = d.wait_log("spool write succeeded after", 1, Duration::from_secs(10));
    eprintln!("disk_full: {ok}");
    let failed_logged = d.log_count("spool write failed");
    eprintln!("disk_full: `spool write failed` logged {failed_logged} time(s)");
    d.stop();
    drop(d);
    drop(mnt);
}
