//! Power loss: the real `logcatch` binary with its `data_dir` on the lazy
//! file system ([`crate::common::lazyfs`]), which keeps every byte not yet
//! fsync'd in a cache it forgets on a power cut. The log files are on an
//! ordinary disk (they survive, as the files of the applications would);
//! the broker is a one-node Apache Kafka.
//!
//! A power cut: SIGSTOP the daemon, drop the unsynced cache (from then on
//! the file system fails every request), `kill -9`, unmount, mount afresh,
//! start the daemon again. Cuts fall after seeded runs of 1–3 s, unless
//! said otherwise. Scenarios, all with `spool.fsync: batch` (the default,
//! which promises to survive power loss):
//! - `steady`: two files written at about 10k lines/s in all;
//! - `catch_up`: a big file written first, and more of it while the daemon
//!   is down, with runs of 0.3–1.5 s, so every cut falls in a catch-up;
//! - `small_segments`: the steady writer with `spool.segment_bytes: 1MiB`,
//!   so segments seal and are deleted during the runs; every other cut
//!   comes 0–150 ms after the daemon deleted one (the file system counts
//!   unlinks);
//! - `in_recovery`: the same, but every other cut comes 0–800 ms after a
//!   start, while the daemon recovers (store, spool, the read-back of what
//!   Kafka has).
//!
//! After each cut, before the restart, the store (opened from a copy of
//! the backing directory) must hold a cursor whose segment is still on
//! disk: a segment is deleted only after a durable commit of a cursor past
//! it. Each scenario ends with the writer stopped, one more start, and the
//! whole topic read back: 0 lost, 0 duplicated, every start reached
//! "logcatch is running" (the cut ones in recovery need not have), no
//! ERROR line in the daemon's log, and the daemon stops cleanly. `fsync_never_survives_kill9_without_power_loss`
//! checks the weaker promise of `spool.fsync: never`: `kill -9` (the cache,
//! like the kernel's page cache, outlives the process) loses and
//! duplicates nothing; power loss is not promised there and not tested.
//!
//! 50 cuts in all by default (`LOGCATCH_POWER_CUTS=N` spreads N instead).
//! The schedule is seeded: the seed is printed, `LOGCATCH_POWER_SEED=S`
//! replays it. Each scenario prints one figures line (and appends it to the
//! file `LOGCATCH_POWER_REPORT` names, which `scripts/test.sh` prints).
//! `LOGCATCH_POWER_KEEP=1` keeps each scenario's temp dir (the daemon's
//! log, the backing directory) for a look afterwards.
//! Where FUSE cannot be mounted each test prints a line starting
//! `SKIPPED:` and returns; `scripts/test.sh` counts those as skipped.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::lazyfs::{self, LazyMount};
use crate::common::*;

const TOPIC: &str = "logs";
/// Numbers of log file `i` are `i * SPAN ..`.
const SPAN: u64 = 100_000_000;
/// How long the last run may take to deliver everything.
const DRAIN: Duration = Duration::from_secs(240);
/// How long a start may take to reach "logcatch is running".
const START: Duration = Duration::from_secs(60);
const RUNNING: &str = "logcatch is running";
/// Cuts over all scenarios unless `LOGCATCH_POWER_CUTS` says otherwise.
const DEFAULT_CUTS: u64 = 50;

/// When FUSE cannot be mounted here: prints `SKIPPED: <test>: <why>` on a
/// line of its own, past the test harness's capture (so `scripts/test.sh`
/// sees it), and returns true.
fn skipped(test: &str) -> bool {
    let Some(why) = lazyfs::unavailable() else {
        return false;
    };
    let mut err = std::io::stderr();
    let _ = writeln!(err, "\nSKIPPED: power_loss::{test}: {why}");
    true
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// `LOGCATCH_POWER_SEED` if set, else the clock.
fn power_seed() -> u64 {
    env_u64("LOGCATCH_POWER_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    })
}

/// A scenario's cuts: its `share` of [`DEFAULT_CUTS`], scaled to
/// `LOGCATCH_POWER_CUTS`.
fn cuts_for(share: u64) -> u64 {
    let total = env_u64("LOGCATCH_POWER_CUTS").unwrap_or(DEFAULT_CUTS);
    ((total * share + DEFAULT_CUTS / 2) / DEFAULT_CUTS).max(1)
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// A log file of numbered lines `base..next`, on the ordinary disk.
struct LogFile {
    name: &'static str,
    path: PathBuf,
    base: u64,
    next: AtomicU64,
}

impl LogFile {
    /// Appends the next `n` lines.
    fn append(&self, n: u64) {
        let from = self.next.load(Ordering::SeqCst);
        write_numbered(&self.path, from, from + n);
        self.next.store(from + n, Ordering::SeqCst);
    }

    fn written(&self) -> Range<u64> {
        self.base..self.next.load(Ordering::SeqCst)
    }
}

/// Appends to some of the files at a steady rate (lines per second over
/// all of them), on a thread of its own, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(files: Arc<Vec<LogFile>>, which: Vec<usize>, rate: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = thread::spawn(move || {
            let t0 = Instant::now();
            let mut done = 0u64;
            while !stopped.load(Ordering::SeqCst) {
                let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
                let each = due.saturating_sub(done) / which.len() as u64;
                if each > 0 {
                    for i in &which {
                        files[*i].append(each);
                    }
                    done += each * which.len() as u64;
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a fault does to the daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Freeze, drop the unsynced cache, `kill -9`, remount.
    PowerCut,
    /// `kill -9` only: the file system keeps its cache.
    Kill9,
}

/// When a fault comes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    /// After a run of the scenario's `run_ms`.
    AfterRun,
    /// 0–800 ms after a start, while the daemon recovers.
    InRecovery,
    /// 0–150 ms after the daemon deleted a file (a delivered segment), once
    /// it ran for 1 s: the window in which a deletion is durable and the
    /// store's latest commit may not be.
    AfterUnlink,
}

struct Scenario {
    name: &'static str,
    faults: u64,
    fault: Fault,
    /// How long a run lasts before a [`When::AfterRun`] fault, in ms.
    run_ms: Range<u64>,
    /// Lines per second over `a.log` and `b.log` (0: no steady writer).
    rate: u64,
    /// `spool.fsync`.
    fsync: &'static str,
    /// More `spool:` settings.
    spool: &'static [(&'static str, &'static str)],
    /// Lines of `big.log` written before the first start, and the range of
    /// lines appended while the daemon is down after each fault.
    backlog: Option<(u64, Range<u64>)>,
    /// When every other fault comes (the others come after a run).
    odd: When,
}

impl Scenario {
    fn when(&self, i: u64) -> When {
        if i % 2 == 1 {
            self.odd
        } else {
            When::AfterRun
        }
    }
}

/// What a scenario measured.
#[derive(Default)]
struct Figures {
    faults: u64,
    in_recovery: u64,
    after_unlink: u64,
    starts: usize,
    /// Starts that reached "logcatch is running".
    running: usize,
    written: u64,
    lost: usize,
    duplicated: usize,
    extra_copies: usize,
    unexpected: usize,
    /// Cuts after which the stored cursor named a segment no longer on
    /// disk (or the store did not open), with what was found.
    bad_cursors: Vec<String>,
    /// The most unsynced bytes (and files) one cut dropped, and the sum.
    max_dropped: (u64, usize),
    dropped: u64,
    fsyncs: u64,
    error_lines: usize,
    took: Duration,
}

/// One scenario's world. Fields drop in order: the writer stops, the
/// daemon is killed, the file system unmounted, the broker stopped, the
/// temp dir removed.
struct Rig {
    name: &'static str,
    rng: Rng,
    t0: Instant,
    writer: Option<Writer>,
    d: Daemon,
    mount: LazyMount,
    files: Arc<Vec<LogFile>>,
    broker: Broker,
    _dir: tempfile::TempDir,
    fig: Figures,
}

impl Rig {
    fn start(sc: &Scenario, seed: u64) -> Rig {
        let broker = Broker::start();
        broker.create_topic(TOPIC, 1);
        let mut dir = tempfile::Builder::new()
            .prefix("logcatch-power-")
            .tempdir()
            .expect("tempdir");
        if std::env::var_os("LOGCATCH_POWER_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("power_loss[{}]: keeping {}", sc.name, dir.path().display());
        }
        let mount = LazyMount::mount(&dir.path().join("backing"), &dir.path().join("mnt"))
            .expect("mount the lazy file system");
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        let file = |i: u64, name: &'static str| LogFile {
            name,
            path: logs.join(name),
            base: i * SPAN,
            next: AtomicU64::new(i * SPAN),
        };
        let mut files = Vec::new();
        if sc.rate > 0 {
            files.extend([file(1, "a.log"), file(2, "b.log")]);
        }
        if let Some((first, _)) = &sc.backlog {
            files.push(file(3, "big.log"));
            files.last().unwrap().append(*first);
        }
        let mut cfg = ConfigBuilder::new(mount.path().join("data"), &broker.addr(), TOPIC)
            .spool("fsync", sc.fsync);
        for (k, v) in sc.spool {
            cfg = cfg.spool(k, v);
        }
        for f in &files {
            f.append(0);
            cfg = cfg.source(f.name, &f.path);
        }
        let d = Daemon::with(dir.path(), &cfg);
        let mut rig = Rig {
            name: sc.name,
            rng: Rng::new(seed ^ fnv(sc.name)),
            t0: Instant::now(),
            writer: None,
            d,
            mount,
            files: Arc::new(files),
            broker,
            _dir: dir,
            fig: Figures {
                starts: 1,
                ..Figures::default()
            },
        };
        rig.wait_running();
        if sc.rate > 0 {
            rig.writer = Some(Writer::start(rig.files.clone(), vec![0, 1], sc.rate));
        }
        rig
    }

    fn event(&self, what: String) {
        eprintln!(
            "[{:7.2}s] {}: {what}",
            self.t0.elapsed().as_secs_f64(),
            self.name
        );
    }

    /// Waits until one more start than before reached "logcatch is
    /// running"; fails at once, with the log, if the daemon exits.
    fn wait_running(&mut self) {
        self.d.wait_log(RUNNING, self.fig.running + 1, START);
        self.fig.running = self.d.log_count(RUNNING);
    }

    fn restart(&mut self, wait: bool) {
        self.d.restart();
        self.fig.starts += 1;
        if wait {
            self.wait_running();
        }
    }

    /// Waits for the daemon's next unlink on the lazy mount (up to 5 s)
    /// and returns how long that took, or `None` if none came.
    fn next_unlink(&self) -> Option<Duration> {
        let t = Instant::now();
        let before = self.mount.stats().unlinks;
        while t.elapsed() < Duration::from_secs(5) {
            if self.mount.stats().unlinks > before {
                return Some(t.elapsed());
            }
            thread::sleep(Duration::from_millis(1));
        }
        None
    }

    /// Waits until the fault is due; says when that was.
    fn wait_due(&mut self, sc: &Scenario, when: When) -> String {
        match when {
            When::AfterRun => {
                let ms = self.rng.range(sc.run_ms.clone());
                thread::sleep(Duration::from_millis(ms));
                format!("after {ms} ms")
            }
            When::InRecovery => {
                let ms = self.rng.range(0..800);
                thread::sleep(Duration::from_millis(ms));
                format!("{ms} ms after the start (in recovery)")
            }
            When::AfterUnlink => {
                let ms = self.rng.range(0..150);
                thread::sleep(Duration::from_millis(1000));
                let Some(waited) = self.next_unlink() else {
                    return "after 6 s (no unlink came)".into();
                };
                thread::sleep(Duration::from_millis(ms));
                self.fig.after_unlink += 1;
                format!(
                    "{ms} ms after an unlink (that came {} ms into the wait)",
                    waited.as_millis()
                )
            }
        }
    }

    /// One fault and its wait, and more of the backlog while the daemon is
    /// down.
    fn fault(&mut self, sc: &Scenario, when: When) {
        let due = self.wait_due(sc, when);
        if !self.d.is_running() {
            panic!(
                "{}: logcatch exited before fault #{} (a start that was not clean)",
                self.name,
                self.fig.faults + 1
            );
        }
        let what = match sc.fault {
            Fault::PowerCut => self.power_cut(),
            Fault::Kill9 => {
                self.d.kill9();
                "kill -9".to_string()
            }
        };
        self.fig.faults += 1;
        if when == When::InRecovery {
            self.fig.in_recovery += 1;
            // It may have reached "running" before the cut, or not.
            self.fig.running = self.d.log_count(RUNNING);
        }
        self.event(format!("fault #{} {due}: {what}", self.fig.faults));
        if let Some((_, per_fault)) = &sc.backlog {
            let n = self.rng.range(per_fault.clone());
            self.files.last().unwrap().append(n);
        }
    }

    /// SIGSTOP, drop the cache, `kill -9`, remount.
    fn power_cut(&mut self) -> String {
        let pid = self.d.pid().expect("daemon pid");
        signal(pid, "STOP");
        let cut = self.mount.cut_power();
        self.d.kill9();
        self.fig.fsyncs += self.mount.stats().fsyncs;
        self.mount.remount().expect("remount the lazy file system");
        if let Some(bad) = self.check_cursor() {
            self.event(format!("after cut #{}: {bad}", self.fig.faults + 1));
            self.fig
                .bad_cursors
                .push(format!("cut #{}: {bad}", self.fig.faults + 1));
        }
        self.fig.dropped += cut.bytes;
        if cut.bytes > self.fig.max_dropped.0 {
            self.fig.max_dropped = (cut.bytes, cut.files.len());
        }
        format!("power cut, dropped {}", cut.describe())
    }

    /// What survived the cut, before the daemon sees it: the cursor the
    /// store holds must name a segment that is still on disk (a segment is
    /// deleted only after a durable commit of a cursor past it), and the
    /// segments from there on must have no gap. The store is opened from a
    /// copy, so the daemon still recovers the original itself.
    fn check_cursor(&self) -> Option<String> {
        let data = self._dir.path().join("backing/data");
        if !data.join("store/db").exists() {
            return None;
        }
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&data.join("store"), copy.path());
        let cursor = match logcatch::store::Store::open(copy.path()).and_then(|s| s.cursor()) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => return Some(format!("the store does not open: {e}")),
        };
        let segs = logcatch::spool::list_segments(&data.join("spool")).unwrap_or_default();
        let from = segs.iter().position(|s| *s == cursor.segment);
        let gap = from.is_some_and(|i| segs[i..].windows(2).any(|w| w[1] != w[0] + 1));
        match (from, gap) {
            (Some(_), false) => None,
            _ => Some(format!(
                "the stored cursor {cursor:?} names a segment that is gone or is followed by a gap (segments on disk: {segs:?})"
            )),
        }
    }

    /// Reads the whole topic until every written line is there and 2 s
    /// pass with nothing new; tallies it.
    fn verify(&mut self) -> Tally {
        let expected: Vec<Range<u64>> = self.files.iter().map(LogFile::written).collect();
        let total: u64 = expected.iter().map(|r| r.end - r.start).sum();
        self.fig.written = total;
        let mut seen: HashSet<u64> = HashSet::new();
        let mut upto = 0;
        let addr = self.broker.addr();
        let wanted = &expected;
        let msgs = self
            .d
            .consume(&addr, TOPIC)
            .until(|m| {
                for x in &m[upto..] {
                    if let Some(n) = number_of(&x.value) {
                        if wanted.iter().any(|r| r.contains(&n)) {
                            seen.insert(n);
                        }
                    }
                }
                upto = m.len();
                seen.len() as u64 >= total
            })
            .timeout(DRAIN)
            .run();
        let t = Tally::of_ranges(&msgs, &expected);
        self.fig.lost = t.missing.len();
        self.fig.duplicated = t.duplicated.len();
        self.fig.extra_copies = t.duplicate_count();
        self.fig.unexpected = t.unexpected.len();
        t
    }
}

/// Copies the files of `from` (and its subdirectories) into `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// FNV-1a, to give each scenario its own stream from one seed.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Figures {
    fn line(&self, name: &str, seed: u64, fault: Fault) -> String {
        let kind = match fault {
            Fault::PowerCut => "power cuts",
            Fault::Kill9 => "kill -9 (no power cut)",
        };
        format!(
            "power_loss[{name}]: {} {kind} ({} in recovery, {} right after an unlink), \
             {} starts ({} reached running), \
             {} lines written, {} lost, {} duplicated ({} extra copies), {} unexpected; \
             unsynced dropped: {} KiB in all, at most {} KiB in {} file(s) at one cut; \
             {} cut(s) left a stored cursor into a missing segment; \
             {} fsyncs seen; {} ERROR log lines (PartitionEOF left out); {:.0} s; seed {seed}",
            self.faults,
            self.in_recovery,
            self.after_unlink,
            self.starts,
            self.running,
            self.written,
            self.lost,
            self.duplicated,
            self.extra_copies,
            self.unexpected,
            self.dropped / 1024,
            self.max_dropped.0 / 1024,
            self.max_dropped.1,
            self.bad_cursors.len(),
            self.fsyncs,
            self.error_lines,
            self.took.as_secs_f64()
        )
    }
}

/// Prints the figures line, and appends it to `LOGCATCH_POWER_REPORT`.
fn report(line: &str) {
    eprintln!("{line}");
    if let Ok(path) = std::env::var("LOGCATCH_POWER_REPORT") {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The daemon's ERROR lines, less librdkafka's "PartitionEOF" that the
/// read-back's consumer logs at that level when it reaches the end.
fn error_lines(d: &Daemon) -> Vec<String> {
    d.log_lines(" ERROR ")
        .into_iter()
        .filter(|l| !l.contains("PartitionEOF"))
        .collect()
}

/// Runs a scenario to its end and asserts exactly once and clean starts.
fn run(sc: Scenario) {
    let seed = power_seed();
    eprintln!(
        "power_loss[{}]: seed {seed} (LOGCATCH_POWER_SEED={seed} replays it), {} faults",
        sc.name, sc.faults
    );
    let started = Instant::now();
    let mut rig = Rig::start(&sc, seed);
    for i in 0..sc.faults {
        rig.fault(&sc, sc.when(i));
        // A start that the next fault hits in recovery is not waited for.
        let next_in_recovery = i + 1 < sc.faults && sc.when(i + 1) == When::InRecovery;
        rig.restart(!next_in_recovery);
    }
    rig.fig.fsyncs += rig.mount.stats().fsyncs;
    thread::sleep(Duration::from_millis(1000));
    if let Some(w) = rig.writer.as_mut() {
        w.stop();
    }
    rig.event("writer stopped; reading the topic back".into());
    let tally = rig.verify();
    let errors = error_lines(&rig.d);
    rig.fig.error_lines = errors.len();
    rig.fig.took = started.elapsed();
    report(&rig.fig.line(sc.name, seed, sc.fault));
    for l in errors.iter().take(5) {
        eprintln!("  {l}");
    }
    assert!(
        tally.is_exact(),
        "power_loss[{}] (seed {seed}) was not exactly once:\n{}",
        sc.name,
        tally.describe()
    );
    assert!(
        rig.fig.bad_cursors.is_empty(),
        "power_loss[{}] (seed {seed}): a cut left the store's cursor behind a deleted segment:\n{}",
        sc.name,
        rig.fig.bad_cursors.join("\n")
    );
    // Every start not cut in recovery was waited for (wait_running fails
    // at once if the daemon exits); none logged an error, and the last one
    // stops cleanly.
    assert!(
        errors.is_empty(),
        "power_loss[{}] (seed {seed}): the daemon logged {} ERROR line(s), e.g.:\n{}",
        sc.name,
        errors.len(),
        errors
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    rig.d.assert_running();
    rig.d.stop();
}

#[test]
fn steady_writer_survives_power_cuts_exactly_once() {
    if skipped("steady_writer_survives_power_cuts_exactly_once") {
        return;
    }
    run(Scenario {
        name: "steady",
        faults: cuts_for(14),
        fault: Fault::PowerCut,
        run_ms: 1000..3000,
        rate: 10_000,
        fsync: "batch",
        spool: &[],
        backlog: None,
        odd: When::AfterRun,
    });
}

/// The cuts come while the daemon catches up with a backlog: 400k lines
/// before the first start, and 50k–150k more while it is down after each
/// cut, so the runs are shorter (0.3–1.5 s; it reads well over 100k
/// lines/s).
#[test]
fn catch_up_of_a_big_file_survives_power_cuts_exactly_once() {
    if skipped("catch_up_of_a_big_file_survives_power_cuts_exactly_once") {
        return;
    }
    run(Scenario {
        name: "catch_up",
        faults: cuts_for(10),
        fault: Fault::PowerCut,
        run_ms: 300..1500,
        rate: 0,
        fsync: "batch",
        spool: &[],
        backlog: Some((400_000, 50_000..150_000)),
        odd: When::AfterRun,
    });
}

/// 1 MiB segments at about 1 MB/s: a delivered segment is deleted about
/// every second, and every other cut comes right after such a deletion.
#[test]
fn segment_deletions_survive_power_cuts_exactly_once() {
    if skipped("segment_deletions_survive_power_cuts_exactly_once") {
        return;
    }
    run(Scenario {
        name: "small_segments",
        faults: cuts_for(16),
        fault: Fault::PowerCut,
        run_ms: 1000..3000,
        rate: 10_000,
        fsync: "batch",
        spool: &[("segment_bytes", "1MiB")],
        backlog: None,
        odd: When::AfterUnlink,
    });
}

#[test]
fn power_cuts_during_recovery_lose_and_duplicate_nothing() {
    if skipped("power_cuts_during_recovery_lose_and_duplicate_nothing") {
        return;
    }
    run(Scenario {
        name: "in_recovery",
        faults: cuts_for(10),
        fault: Fault::PowerCut,
        run_ms: 1000..3000,
        rate: 10_000,
        fsync: "batch",
        spool: &[("segment_bytes", "1MiB")],
        backlog: None,
        odd: When::InRecovery,
    });
}

/// `spool.fsync: never` promises `kill -9`, not power loss: the lazy
/// file system keeps its cache across the kills, as the kernel's page
/// cache outlives a process.
#[test]
fn fsync_never_survives_kill9_without_power_loss() {
    if skipped("fsync_never_survives_kill9_without_power_loss") {
        return;
    }
    run(Scenario {
        name: "fsync_never_kill9",
        faults: 6,
        fault: Fault::Kill9,
        run_ms: 1000..3000,
        rate: 10_000,
        fsync: "never",
        spool: &[("segment_bytes", "1MiB")],
        backlog: None,
        odd: When::AfterUnlink,
    });
}

/// The file system itself, through the kernel: what survives a cut is
/// exactly what was fsync'd, plus every metadata operation.
#[test]
fn lazy_mount_keeps_only_fsynced_bytes_across_a_power_cut() {
    if skipped("lazy_mount_keeps_only_fsynced_bytes_across_a_power_cut") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mut m = LazyMount::mount(&backing, &dir.path().join("mnt")).unwrap();
    let mnt = m.path().to_path_buf();
    let p = |name: &str| mnt.join("d").join(name);
    fs::create_dir(mnt.join("d")).unwrap();

    // Appended as the spool appends: a synced frame, then an unsynced one.
    let mut seg = OpenOptions::new()
        .create(true)
        .append(true)
        .open(p("seg"))
        .unwrap();
    seg.write_all(b"synced;").unwrap();
    seg.sync_data().unwrap();
    seg.write_all(b"cached").unwrap();
    assert_eq!(fs::read(p("seg")).unwrap(), b"synced;cached");
    assert_eq!(fs::metadata(p("seg")).unwrap().len(), 13);
    assert_eq!(fs::read(backing.join("d/seg")).unwrap(), b"synced;");

    fs::write(p("never"), b"never synced").unwrap();
    let mut tmp = File::create(p("tmp")).unwrap();
    tmp.write_all(b"renamed").unwrap();
    tmp.sync_all().unwrap();
    drop(tmp);
    fs::rename(p("tmp"), p("final")).unwrap();
    File::create(p("gone")).unwrap();
    fs::remove_file(p("gone")).unwrap();

    // A truncate keeps the cached bytes before the new size cached.
    let t = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(p("trunc"))
        .unwrap();
    t.write_all_at(b"0123456789", 0).unwrap();
    t.sync_all().unwrap();
    t.write_all_at(b"abcdef", 10).unwrap();
    t.set_len(13).unwrap();
    assert_eq!(fs::read(p("trunc")).unwrap(), b"0123456789abc");
    File::open(mnt.join("d")).unwrap().sync_all().unwrap();

    let stats = m.stats();
    assert!(stats.fsyncs >= 3 && stats.renames == 1 && stats.unlinks == 1);
    assert_eq!(m.unsynced_bytes(), 6 + 12 + 3);
    drop((seg, t));
    let cut = m.cut_power();
    assert_eq!(cut.bytes, 6 + 12 + 3);
    let files: Vec<&str> = cut.files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(files, ["d/never", "d/seg", "d/trunc"], "{}", cut.describe());
    assert!(
        fs::read(p("seg")).is_err(),
        "after the cut every request fails"
    );
    m.remount().unwrap();
    assert_eq!(m.mounts, 2);

    assert_eq!(fs::read(p("seg")).unwrap(), b"synced;");
    assert_eq!(fs::read(p("never")).unwrap(), b"", "created, never synced");
    assert_eq!(fs::read(p("final")).unwrap(), b"renamed");
    assert!(!p("tmp").exists() && !p("gone").exists());
    assert_eq!(fs::read(p("trunc")).unwrap(), b"0123456789\0\0\0");

    // A Unix socket (logcatch's admin socket lives in data_dir).
    let listener = std::os::unix::net::UnixListener::bind(p("sock")).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(p("sock")).unwrap();
    client.write_all(b"hi").unwrap();
    drop((client, listener));
    fs::remove_file(p("sock")).unwrap();

    drop(m);
    assert!(!lazyfs::is_mounted(&mnt), "unmounted on drop");
}
