//! Fault injection against the real `logcatch` binary and a real (tansu)
//! broker behind the outage proxy.
//!
//! `soak_under_faults`: a writer thread appends numbered lines to five
//! files at a steady rate while the test, for a bounded time:
//! - `kill -9`s the daemon at random moments (seeded: the seed is printed;
//!   `LOGCATCH_TEST_SEED` replays it) and restarts it after a random pause;
//! - rotates `rot.log` by rename every few seconds (`rot.log.1` is renamed
//!   further to `rot.log.old-K`, so every line written stays on disk), with a
//!   few late lines written to the renamed file by the "old writer", and
//!   sometimes while the daemon is down;
//! - copytruncates `ct.log` (only after its lines were delivered: lines
//!   written between the copy and the truncate cannot be guaranteed by any
//!   tailer, so the writer of that file pauses);
//! - deletes and recreates `dr.log` (also after delivery), alternately
//!   while the daemon runs and while it is down (then the inode is often
//!   reused, which only the content checks can notice);
//! - stops the daemon, rewrites `rw.log` in place with the same first
//!   1.1 KiB (a header block) but different lines after it, and restarts:
//!   every new line must be delivered. The first rewrite (and every odd one)
//!   is longer than before, so only the check of the bytes before the
//!   stored offset can notice; the others are shorter;
//! - takes the broker away for a few seconds through the proxy while lines
//!   are written (every other outage with a `kill -9` in the middle, so the
//!   restarted daemon's read-back waits for the broker);
//! - `plain.log` just receives lines.
//!
//! At the end it reads the whole topic and prints, per file, lines
//! written, delivered, missing, duplicated; missing and duplicated must be
//! 0 (exactly once, also across `kill -9`). Default: about 70 s of faults;
//! `LOGCATCH_SOAK_SECS=N` runs N seconds. `LOGCATCH_FI_RATE` sets the lines
//! per second per file (default 1000).
//!
//! `spool_cap_backpressure`: a 256 KiB spool fills while the broker is away;
//! the daemon pauses (`logcatch-ctl queue --json`), the spool stays near its
//! cap, and everything arrives exactly once when the broker returns.
//!
//! `disk_full_then_space_returns`: data_dir on a 2 MiB tmpfs (mounted by
//! the test; skipped with a note if mounting fails); the spool write fails,
//! the daemon keeps running and retries; after a remount to 64 MiB every
//! line arrives exactly once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

const TOPIC: &str = "logs";
const WAIT: Duration = Duration::from_secs(180);
/// Numbers of file `i` are `i * SPAN ..`.
const SPAN: u64 = 100_000_000;

// ---------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------

/// Line `n` without its newline, 99 bytes: `line-NNNNNNNNN <filler> #NNNNNNNNN`.
/// The number also ends the line, so two different lines never share their
/// last bytes (the daemon checks the 64 bytes before a resumed offset).
fn fi_line(n: u64) -> String {
    const FILLER: &str =
        "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs! 0123456789";
    let rot = (n % 37) as usize;
    let filler: String = FILLER[rot..].chars().chain(FILLER[..rot].chars()).collect();
    let mut s = format!("line-{n:09} ");
    s.push_str(&filler[..99 - 15 - 11]);
    write!(s, " #{n:09}").unwrap();
    debug_assert_eq!(s.len(), 99);
    s
}

fn lines_bytes(from: u64, to: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(((to - from) * 100) as usize);
    for n in from..to {
        buf.extend_from_slice(fi_line(n).as_bytes());
        buf.push(b'\n');
    }
    buf
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(bytes).expect("append");
}

/// The header block of `rw.log`: identical in every version of the file,
/// longer than the 1 KiB the daemon checksums as the file's identity.
const HEADER_LINES: u64 = 12;
fn header_bytes() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..HEADER_LINES {
        writeln!(
            s,
            "# rw.log header {i:02}: the same in every version of this file, padding padding padding pad"
        )
        .unwrap();
    }
    assert!(s.len() > 1024);
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// The files and their writer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rotate,
    CopyTruncate,
    DeleteRecreate,
    Rewrite,
    Plain,
}

const FILES: [(&str, Kind); 5] = [
    ("rot", Kind::Rotate),
    ("ct", Kind::CopyTruncate),
    ("dr", Kind::DeleteRecreate),
    ("rw", Kind::Rewrite),
    ("plain", Kind::Plain),
];

struct WFile {
    name: &'static str,
    path: PathBuf,
    base: u64,
    /// The next number to write (absolute).
    next: u64,
    /// The first number written to the file now at `path`.
    cur_first: u64,
    paused: bool,
    /// Header lines written (rw.log only).
    headers: u64,
}

/// One append: which numbers, when.
#[derive(Clone, Copy)]
struct WriteRec {
    file: usize,
    from: u64,
    to: u64,
    at: Instant,
}

struct Files {
    files: Vec<WFile>,
    log: Vec<WriteRec>,
}

impl Files {
    fn write(&mut self, i: usize, count: u64) {
        let f = &mut self.files[i];
        let (from, to) = (f.next, f.next + count);
        append(&f.path, &lines_bytes(from, to));
        f.next = to;
        self.log.push(WriteRec {
            file: i,
            from,
            to,
            at: Instant::now(),
        });
    }
}

/// Appends `per_tick` lines to every unpaused file every `tick`.
struct Writer {
    files: Arc<Mutex<Files>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(files: Arc<Mutex<Files>>, per_tick: u64, tick: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (files.clone(), stop.clone());
        let handle = thread::Builder::new()
            .name("fi-writer".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    {
                        let mut fs = f.lock().unwrap();
                        for i in 0..fs.files.len() {
                            if !fs.files[i].paused {
                                fs.write(i, per_tick);
                            }
                        }
                    }
                    thread::sleep(tick);
                }
            })
            .unwrap();
        Writer {
            files,
            stop,
            handle: Some(handle),
        }
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread panicked");
        }
    }

    fn set_paused(&self, i: usize, paused: bool) {
        self.files.lock().unwrap().files[i].paused = paused;
    }

    fn next(&self, i: usize) -> u64 {
        self.files.lock().unwrap().files[i].next
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// A consumer that tracks what has been delivered, per file
// ---------------------------------------------------------------------------

/// A consumer assigned to every partition of `topic` (which must exist)
/// from offset 0.
fn consumer_from_start(addr: &str, topic: &str, purpose: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", format!("fi-{purpose}-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .set("log_level", "0")
        .create()
        .expect("consumer");
    let parts = common::current_partitions(&consumer, topic);
    assert!(!parts.is_empty(), "topic {topic} has no partitions");
    common::assign_from_start(&consumer, topic, &parts);
    consumer
}

/// Whether a message is new: offsets only grow within a partition, so a
/// message fetched again after a reconnect is recognised without keeping a
/// set of every offset (a long soak reads tens of millions).
fn first_time(last: &mut HashMap<i32, i64>, partition: i32, offset: i64) -> bool {
    let l = last.entry(partition).or_insert(-1);
    if offset <= *l {
        return false;
    }
    *l = offset;
    true
}

/// What one full read of the topic found, kept as counts only.
struct TopicCount {
    /// Copies per number, per file, indexed by `n % SPAN`.
    counts: Vec<Vec<u16>>,
    /// Header lines per key.
    headers: BTreeMap<String, u64>,
    stray: Vec<String>,
    messages: u64,
}

/// Reads `topic` from offset 0 until at least `expected` messages arrived
/// and [`QUIET`] passed without a new one (or `timeout`), counting.
fn count_topic(
    addr: &str,
    topic: &str,
    nfiles: usize,
    expected: u64,
    timeout: Duration,
) -> TopicCount {
    let consumer = consumer_from_start(addr, topic, "count");
    let mut t = TopicCount {
        counts: vec![Vec::new(); nfiles],
        headers: BTreeMap::new(),
        stray: Vec::new(),
        messages: 0,
    };
    let mut last = HashMap::new();
    let deadline = Instant::now() + timeout;
    let mut last_new = Instant::now();
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if !first_time(&mut last, m.partition(), m.offset()) {
                continue;
            }
            last_new = Instant::now();
            t.messages += 1;
            let value = m.payload().unwrap_or_default();
            match number_of(value) {
                Some(n) if ((n / SPAN) as usize) < nfiles => {
                    let c = &mut t.counts[(n / SPAN) as usize];
                    let i = (n % SPAN) as usize;
                    if c.len() <= i {
                        c.resize(i + 1, 0);
                    }
                    c[i] = c[i].saturating_add(1);
                }
                Some(n) => t.stray.push(format!("number {n}")),
                None if value.starts_with(b"# rw.log header") => {
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    *t.headers.entry(key).or_default() += 1;
                }
                None => t
                    .stray
                    .push(format!("{:?}", String::from_utf8_lossy(value))),
            }
        }
        if t.messages >= expected && last_new.elapsed() >= QUIET {
            return t;
        }
    }
    eprintln!(
        "count_topic: gave up after {timeout:?} with {} of {expected} messages",
        t.messages
    );
    t
}

/// Up to `limit` messages whose number `want` selects, reading `topic`
/// from offset 0 until nothing new comes for [`QUIET`].
fn find_messages(addr: &str, topic: &str, want: impl Fn(u64) -> bool, limit: usize) -> Vec<Msg> {
    let consumer = consumer_from_start(addr, topic, "find");
    let mut out = Vec::new();
    let mut last = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_new = Instant::now();
    while Instant::now() < deadline && out.len() < limit && last_new.elapsed() < QUIET {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if !first_time(&mut last, m.partition(), m.offset()) {
            continue;
        }
        last_new = Instant::now();
        let value = m.payload().unwrap_or_default();
        if number_of(value).is_some_and(&want) {
            out.push(Msg::from_message(&m));
        }
    }
    out
}

#[derive(Default)]
struct FileProgress {
    /// Copies per number, indexed by `n - base`.
    counts: Vec<u16>,
    /// Every number below `base + watermark` was delivered.
    watermark: u64,
}

struct Tracker {
    progress: Arc<Mutex<Vec<FileProgress>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Tracker {
    /// Follows `topic` (which must exist) from offset 0.
    fn start(addr: &str, topic: &str, nfiles: usize) -> Tracker {
        let consumer = consumer_from_start(addr, topic, "tracker");
        let progress: Arc<Mutex<Vec<FileProgress>>> = Arc::new(Mutex::new(
            (0..nfiles).map(|_| FileProgress::default()).collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (progress.clone(), stop.clone());
        let handle = thread::Builder::new()
            .name("fi-tracker".into())
            .spawn(move || {
                let mut last = HashMap::new();
                while !s.load(Ordering::SeqCst) {
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    if !first_time(&mut last, m.partition(), m.offset()) {
                        continue;
                    }
                    let Some(n) = m.payload().and_then(number_of) else {
                        continue; // a header line
                    };
                    let (i, idx) = ((n / SPAN) as usize, n % SPAN);
                    let mut all = p.lock().unwrap();
                    let Some(fp) = all.get_mut(i) else { continue };
                    if fp.counts.len() <= idx as usize {
                        fp.counts.resize(idx as usize + 1, 0);
                    }
                    fp.counts[idx as usize] = fp.counts[idx as usize].saturating_add(1);
                    while (fp.watermark as usize) < fp.counts.len()
                        && fp.counts[fp.watermark as usize] > 0
                    {
                        fp.watermark += 1;
                    }
                }
            })
            .unwrap();
        Tracker {
            progress,
            stop,
            handle: Some(handle),
        }
    }

    /// Every number of file `i` below `upto` (absolute) was delivered.
    fn delivered_below(&self, i: usize, upto: u64) -> bool {
        let base = i as u64 * SPAN;
        base + self.progress.lock().unwrap()[i].watermark >= upto
    }

    fn watermark(&self, i: usize) -> u64 {
        i as u64 * SPAN + self.progress.lock().unwrap()[i].watermark
    }

    /// Waits until `delivered_below(i, upto)`; false after `timeout`.
    fn wait_below(&self, d: &mut Daemon, i: usize, upto: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.delivered_below(i, upto) {
            d.assert_running();
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------

/// What happened when, for the report and for finding the restart behind a
/// duplicate.
struct Event {
    at: Instant,
    /// The daemon start (as numbered in daemon.log) after this event, if it
    /// started one.
    start_no: Option<usize>,
    what: String,
}

struct Soak {
    env_dir: tempfile::TempDir,
    broker: Broker,
    t0: Instant,
    events: Vec<Event>,
    starts: usize,
    skipped: Vec<String>,
}

impl Soak {
    fn path(&self, name: &str) -> PathBuf {
        self.env_dir.path().join(name)
    }
    fn event(&mut self, what: String, started: bool) {
        if started {
            self.starts += 1;
        }
        eprintln!(
            "[{:7.2}s] {what}{}",
            self.t0.elapsed().as_secs_f64(),
            if started {
                format!(" (daemon start #{})", self.starts)
            } else {
                String::new()
            }
        );
        self.events.push(Event {
            at: Instant::now(),
            start_no: started.then_some(self.starts),
            what,
        });
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// Daemon log lines of start #`n` (from its harness marker) and the last
/// `before` lines of the run it follows.
fn log_around_start(log: &str, n: usize, before: usize, after: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let marker = format!("===== test harness: start #{n} =====");
    let Some(at) = lines.iter().position(|l| *l == marker) else {
        return format!("(no {marker} in daemon.log)");
    };
    let from = at.saturating_sub(before);
    let to = (at + 1 + after).min(lines.len());
    lines[from..to].join("\n")
}

#[test]
fn soak_under_faults() {
    let started = Instant::now();
    let seed = seed_from_env_or_time();
    let secs = env_u64("LOGCATCH_SOAK_SECS").unwrap_or(70);
    let rate = env_u64("LOGCATCH_FI_RATE").unwrap_or(1000).max(40);
    eprintln!(
        "soak: seed {seed} (LOGCATCH_TEST_SEED={seed} replays the schedule), {secs} s of faults, {rate} lines/s per file"
    );
    let mut rng = Rng::new(seed);
    let broker = Broker::start_with_proxy();
    broker.create_topic(TOPIC, 1);
    let env_dir = tempfile::Builder::new()
        .prefix("logcatch-soak-")
        .tempdir()
        .expect("tempdir");
    let mut s = Soak {
        env_dir,
        broker,
        t0: Instant::now(),
        events: Vec::new(),
        starts: 0,
        skipped: Vec::new(),
    };

    // Files, and the rw header.
    let mut wfiles = Vec::new();
    let mut cfg = ConfigBuilder::new(s.path("data"), &s.broker.addr(), TOPIC);
    for (i, (name, kind)) in FILES.iter().enumerate() {
        let path = s.path(&format!("{name}.log"));
        let base = i as u64 * SPAN;
        let mut headers = 0;
        if *kind == Kind::Rewrite {
            append(&path, &header_bytes());
            headers = HEADER_LINES;
        }
        cfg = cfg.source(name, &path);
        wfiles.push(WFile {
            name,
            path,
            base,
            next: base,
            cur_first: base,
            paused: false,
            headers,
        });
    }
    let idx = |k: Kind| FILES.iter().position(|(_, kk)| *kk == k).unwrap();
    let (rot, ct, dr, rw) = (
        idx(Kind::Rotate),
        idx(Kind::CopyTruncate),
        idx(Kind::DeleteRecreate),
        idx(Kind::Rewrite),
    );
    let files = Arc::new(Mutex::new(Files {
        files: wfiles,
        log: Vec::new(),
    }));
    // Some lines before the first start.
    {
        let mut fs = files.lock().unwrap();
        for i in 0..FILES.len() {
            fs.write(i, 200);
        }
    }

    let tracker = Tracker::start(&s.broker.addr(), TOPIC, FILES.len());
    let mut d = Daemon::with(s.env_dir.path(), &cfg);
    s.event("daemon started".into(), true);
    let tick = Duration::from_millis(25);
    let per_tick = (rate * tick.as_millis() as u64 / 1000).max(1);
    let mut writer = Writer::start(files.clone(), per_tick, tick);

    // The schedule: next due time of each kind of fault.
    let phase = Duration::from_secs(secs);
    let phase_start = Instant::now();
    let at = |secs_f: f64| phase_start + Duration::from_secs_f64(secs_f);
    let mut next_kill = at(rng.range(2000..5000) as f64 / 1000.0);
    let mut next_rotate = at(3.0);
    let mut next_ct = at(6.0);
    let mut next_dr = at(9.0);
    let mut next_rw = at((secs as f64 * 0.35).min(25.0));
    let mut next_outage = at((secs as f64 * 0.55).min(40.0));
    let mut rotations = 0u64;
    let mut kills = 0u64;
    let mut dr_count = 0u64;
    let mut rewrites = 0u64;
    let mut outages = 0u64;
    let mut inode_reuses = 0u64;
    let op_wait = Duration::from_secs(30);

    // Rotates rot.log (the caller checked that the daemon is on the file
    // now at rot.log). `late` lines go to the renamed file first.
    let rotate = |k: u64, late: u64| {
        let mut fs = files.lock().unwrap();
        let p = fs.files[rot].path.clone();
        let p1 = p.with_extension("log.1");
        if p1.exists() {
            std::fs::rename(&p1, p.with_extension(format!("log.old-{k}"))).unwrap();
        }
        std::fs::rename(&p, &p1).unwrap();
        // The old writer still holds the old file for a moment.
        fs.files[rot].path = p1.clone();
        fs.write(rot, late);
        fs.files[rot].path = p;
        let next = fs.files[rot].next;
        fs.files[rot].cur_first = next;
    };
    let rot_ready = |tracker: &Tracker| {
        let cur_first = files.lock().unwrap().files[rot].cur_first;
        // Every line before the current file and its first line: the
        // daemon has moved on to the file now at rot.log.
        tracker.delivered_below(rot, cur_first + 1)
    };

    while phase_start.elapsed() < phase {
        let now = Instant::now();
        let due = [
            next_kill,
            next_rotate,
            next_ct,
            next_dr,
            next_rw,
            next_outage,
        ]
        .into_iter()
        .min()
        .unwrap();
        if due > now {
            thread::sleep((due - now).min(Duration::from_millis(100)));
            d.assert_running();
            continue;
        }
        if next_kill <= now {
            // kill -9 at a random moment; sometimes rotate while it is down.
            d.assert_running();
            d.kill9();
            kills += 1;
            let down = Duration::from_millis(rng.range(0..800));
            let mut what = format!("kill -9 #{kills}, down for {down:?}");
            if rng.range(0..3) == 0 && rot_ready(&tracker) {
                rotations += 1;
                rotate(rotations, rng.range(0..30));
                what.push_str(", rot.log rotated while down");
            }
            thread::sleep(down);
            d.restart();
            s.event(what, true);
            next_kill = Instant::now() + Duration::from_millis(rng.range(3000..9000));
        } else if next_rotate <= now {
            if rot_ready(&tracker) {
                rotations += 1;
                rotate(rotations, rng.range(0..30));
                s.event(format!("rot.log rotated (#{rotations})"), false);
            } else {
                s.event(
                    "rot.log rotation postponed: the daemon is not on the current file yet".into(),
                    false,
                );
            }
            next_rotate = Instant::now() + Duration::from_millis(rng.range(2500..4000));
        } else if next_ct <= now {
            writer.set_paused(ct, true);
            let upto = writer.next(ct);
            if tracker.wait_below(&mut d, ct, upto, op_wait) {
                let p = files.lock().unwrap().files[ct].path.clone();
                std::fs::copy(&p, p.with_extension("log.1")).unwrap();
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                files.lock().unwrap().files[ct].cur_first = upto;
                s.event(
                    format!("ct.log copied and truncated (lines below {upto} delivered)"),
                    false,
                );
            } else {
                let msg = format!(
                    "copytruncate skipped: ct lines below {upto} not delivered within {op_wait:?} (watermark {})",
                    tracker.watermark(ct)
                );
                s.skipped.push(msg.clone());
                s.event(msg, false);
            }
            writer.set_paused(ct, false);
            next_ct = Instant::now() + Duration::from_millis(rng.range(6000..9000));
        } else if next_dr <= now {
            writer.set_paused(dr, true);
            let upto = writer.next(dr);
            if tracker.wait_below(&mut d, dr, upto, op_wait) {
                dr_count += 1;
                let p = files.lock().unwrap().files[dr].path.clone();
                let old_ino = std::fs::metadata(&p).unwrap().ino();
                let stopped = dr_count.is_multiple_of(2);
                if stopped {
                    d.kill9();
                    kills += 1;
                }
                std::fs::remove_file(&p).unwrap();
                {
                    let mut fs = files.lock().unwrap();
                    fs.files[dr].cur_first = fs.files[dr].next;
                    fs.write(dr, per_tick);
                }
                let new_ino = std::fs::metadata(&p).unwrap().ino();
                if new_ino == old_ino {
                    inode_reuses += 1;
                }
                let what = format!(
                    "dr.log deleted and recreated {} (inode {old_ino} -> {new_ino}{})",
                    if stopped {
                        format!("while the daemon was down (kill -9 #{kills})")
                    } else {
                        "while running".into()
                    },
                    if new_ino == old_ino { ", reused" } else { "" }
                );
                if stopped {
                    thread::sleep(Duration::from_millis(rng.range(0..300)));
                    d.restart();
                }
                s.event(what, stopped);
            } else {
                let msg = format!(
                    "delete-recreate skipped: dr lines below {upto} not delivered within {op_wait:?} (watermark {})",
                    tracker.watermark(dr)
                );
                s.skipped.push(msg.clone());
                s.event(msg, false);
            }
            writer.set_paused(dr, false);
            next_dr = Instant::now() + Duration::from_millis(rng.range(8000..12000));
        } else if next_rw <= now {
            writer.set_paused(rw, true);
            let upto = writer.next(rw);
            if tracker.wait_below(&mut d, rw, upto, op_wait) {
                rewrites += 1;
                d.stop();
                s.event("daemon stopped (SIGTERM) for the rewrite".into(), false);
                let p = files.lock().unwrap().files[rw].path.clone();
                let old = std::fs::read(&p).unwrap();
                let old_size = old.len() as u64;
                let ino = std::fs::metadata(&p).unwrap().ino();
                let header = header_bytes();
                assert!(old.starts_with(&header));
                // Same header, different lines. Odd rewrites are longer
                // than before, so neither the size nor the first 1 KiB
                // tells: only the bytes before the stored offset do. Even
                // ones are shorter (the size tells), which also keeps the
                // file from growing without bound in a long soak.
                let old_lines = (old_size - header.len() as u64) / 100;
                let longer = rewrites % 2 == 1;
                let new_lines = if longer {
                    old_lines + 3
                } else {
                    50.min(old_lines / 2)
                };
                {
                    let mut fs = files.lock().unwrap();
                    let f = OpenOptions::new().write(true).open(&p).unwrap();
                    f.set_len(0).unwrap();
                    drop(f);
                    append(&p, &header);
                    fs.files[rw].headers += HEADER_LINES;
                    fs.files[rw].cur_first = fs.files[rw].next;
                    fs.write(rw, new_lines);
                }
                let meta = std::fs::metadata(&p).unwrap();
                assert_eq!(meta.ino(), ino, "rewritten in place");
                assert_eq!(meta.len() > old_size, longer);
                d.restart();
                s.event(
                    format!(
                        "rw.log rewritten in place ({}): same first {} bytes, {old_size} -> {} bytes",
                        if longer { "longer" } else { "shorter" },
                        header.len(),
                        meta.len()
                    ),
                    true,
                );
            } else {
                let msg = format!(
                    "rewrite skipped: rw lines below {upto} not delivered within {op_wait:?} (watermark {})",
                    tracker.watermark(rw)
                );
                s.skipped.push(msg.clone());
                s.event(msg, false);
            }
            writer.set_paused(rw, false);
            next_rw = Instant::now() + Duration::from_secs(30);
        } else if next_outage <= now {
            outages += 1;
            let len = Duration::from_millis(rng.range(3000..6000));
            s.broker.proxy_mut().down();
            s.event(format!("broker away (outage #{outages}, {len:?})"), false);
            if outages % 2 == 1 {
                thread::sleep(len / 2);
                d.assert_running();
                d.kill9();
                kills += 1;
                thread::sleep(Duration::from_millis(rng.range(0..500)));
                d.restart();
                s.event(format!("kill -9 #{kills} during the outage"), true);
                thread::sleep(len / 2);
            } else {
                thread::sleep(len);
            }
            d.assert_running();
            s.broker.proxy_mut().up();
            s.event("broker back".into(), false);
            next_outage = Instant::now() + Duration::from_secs(45);
        }
    }
    writer.finish();
    let phase_took = phase_start.elapsed();
    s.event("writer stopped; waiting for delivery".into(), false);

    // Everything written must arrive.
    let targets: Vec<u64> = {
        let fs = files.lock().unwrap();
        fs.files.iter().map(|f| f.next).collect()
    };
    // Until every file's lines all arrived, or nothing moved for 30 s (a
    // lost line holds its file's watermark forever; the table names it).
    let drain = Instant::now();
    let mut last_progress = (Instant::now(), Vec::new());
    loop {
        let marks: Vec<u64> = (0..FILES.len()).map(|i| tracker.watermark(i)).collect();
        if marks.iter().zip(&targets).all(|(m, t)| m >= t) {
            break;
        }
        if marks != last_progress.1 {
            last_progress = (Instant::now(), marks.clone());
        }
        if last_progress.0.elapsed() >= Duration::from_secs(30) || drain.elapsed() >= WAIT {
            for (i, (m, t)) in marks.iter().zip(&targets).enumerate() {
                if m < t {
                    eprintln!(
                        "soak: {} not fully delivered: line {m} still missing, {t} written",
                        FILES[i].0
                    );
                }
            }
            break;
        }
        d.assert_running();
        thread::sleep(Duration::from_millis(50));
    }
    let drain_took = drain.elapsed();
    drop(tracker);
    let (expected_total, written_log, file_info) = {
        let fs = files.lock().unwrap();
        let total: u64 = fs.files.iter().map(|f| f.next - f.base + f.headers).sum();
        let info: Vec<(&'static str, u64, u64, u64)> = fs
            .files
            .iter()
            .map(|f| (f.name, f.base, f.next, f.headers))
            .collect();
        (total, fs.log.clone(), info)
    };
    let read = Instant::now();
    let tc = count_topic(&s.broker.addr(), TOPIC, FILES.len(), expected_total, WAIT);
    eprintln!(
        "soak: read back {} messages (expected {expected_total}) in {:?}",
        tc.messages,
        read.elapsed()
    );
    d.assert_running();
    let mut stray = tc.stray.clone();
    let header_counts = &tc.headers;

    let mut table = String::new();
    writeln!(
        table,
        "{:<8} {:>10} {:>10} {:>8} {:>10}",
        "file", "written", "delivered", "missing", "duplicated"
    )
    .unwrap();
    let mut total_missing = 0usize;
    let mut total_dup = 0usize;
    let mut missing_desc = Vec::new();
    let mut dup_numbers: Vec<u64> = Vec::new();
    for (i, (name, base, next, headers)) in file_info.iter().enumerate() {
        let c = &tc.counts[i];
        let written = next - base;
        let count_of = |n: u64| c.get((n % SPAN) as usize).copied().unwrap_or(0) as usize;
        let missing: Vec<u64> = (*base..*next).filter(|n| count_of(*n) == 0).collect();
        let dups: Vec<u64> = (0..c.len() as u64)
            .filter(|k| c[*k as usize] > 1)
            .map(|k| base + k)
            .collect();
        let extra: usize = c.iter().map(|k| (*k as usize).saturating_sub(1)).sum();
        let unexpected: Vec<u64> = (0..c.len() as u64)
            .map(|k| base + k)
            .filter(|n| *n >= *next && count_of(*n) > 0)
            .collect();
        let delivered: usize = c.iter().map(|k| *k as usize).sum();
        let (w, dl, mi, du) = if *headers > 0 {
            let h = header_counts.get(*name).copied().unwrap_or(0);
            (
                written + headers,
                delivered as u64 + h,
                missing.len() as u64 + headers.saturating_sub(h),
                extra as u64 + h.saturating_sub(*headers),
            )
        } else {
            (
                written,
                delivered as u64,
                missing.len() as u64,
                extra as u64,
            )
        };
        writeln!(table, "{name:<8} {w:>10} {dl:>10} {mi:>8} {du:>10}").unwrap();
        total_missing += mi as usize;
        total_dup += du as usize;
        if !missing.is_empty() {
            missing_desc.push(format!("{name}: missing {}", ranges(missing)));
        }
        if !unexpected.is_empty() {
            stray.push(format!("{name}: never written {}", ranges(unexpected)));
        }
        if !dups.is_empty() {
            missing_desc.push(format!("{name}: duplicated {}", ranges(dups.clone())));
        }
        if *headers > 0 {
            let h = header_counts.get(*name).copied().unwrap_or(0);
            if h != *headers {
                missing_desc.push(format!(
                    "{name}: {h} header lines delivered, {headers} written"
                ));
            }
        }
        dup_numbers.extend(dups);
    }
    let total = started.elapsed();
    eprintln!(
        "\nsoak: {:?} of faults ({kills} kill -9, {rotations} rotations, {dr_count} delete-recreates ({inode_reuses} inode reuse(s)), {rewrites} rewrite(s), {outages} outage(s)), drain {drain_took:?}, {total:?} in all; seed {seed}\n{table}",
        phase_took
    );
    for sk in &s.skipped {
        eprintln!("soak: {sk}");
    }
    let log = d.log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    eprintln!(
        "soak: daemon.log: {} start(s) with a read-back that found lines Kafka already had, {} torn spool tail(s) cut, {} offset(s) recovered from the spool, {} truncation/rewrite warning(s)",
        count("they are skipped, not sent again"),
        count("cutting off a torn frame"),
        count("recovered the source's offset from the spool"),
        count("reading it again from the start") + count("reading it from the start"),
    );
    // The rewrite kept the first 1.1 KiB and the length: only the bytes
    // before the stored offset tell the files apart, and that must be seen.
    let rw_path = files.lock().unwrap().files[rw].path.clone();
    let rw_noticed = log
        .lines()
        .filter(|l| {
            l.contains(rw_path.to_str().unwrap()) && l.contains("reading it from the start")
        })
        .count();
    eprintln!("soak: rw.log rewrites noticed at start: {rw_noticed} of {rewrites}");

    // Duplicates: which restart came right after each duplicated line was
    // written, and that restart's log.
    if !dup_numbers.is_empty() {
        let log = d.log();
        let mut restarts: BTreeMap<usize, usize> = BTreeMap::new();
        for n in &dup_numbers {
            let Some(w) = written_log
                .iter()
                .find(|w| (w.from..w.to).contains(n) && w.file == (n / SPAN) as usize)
            else {
                continue;
            };
            if let Some(e) = s
                .events
                .iter()
                .find(|e| e.at >= w.at && e.start_no.is_some())
            {
                *restarts.entry(e.start_no.unwrap()).or_default() += 1;
            }
        }
        eprintln!(
            "soak: duplicated lines by the first restart after they were written: {restarts:?}"
        );
        dup_numbers.sort_unstable();
        let copies = find_messages(
            &s.broker.addr(),
            TOPIC,
            |n| dup_numbers.binary_search(&n).is_ok(),
            24,
        );
        for m in &copies {
            eprintln!(
                "  dup copy: line {} at kafka offset {} (offset header {:?}, path {:?})",
                number_of(&m.value).unwrap(),
                m.offset,
                m.header("offset"),
                m.header("path")
            );
        }
        for (start, n) in restarts.iter().take(3) {
            let e = s.events.iter().find(|e| e.start_no == Some(*start));
            eprintln!(
                "--- daemon.log around start #{start} ({n} duplicated line(s); event: {}) ---\n{}",
                e.map(|e| e.what.as_str()).unwrap_or("?"),
                log_around_start(&log, *start, 12, 30)
            );
        }
    }

    assert!(stray.is_empty(), "unexpected messages: {stray:?}");
    assert!(
        rw_noticed as u64 >= rewrites,
        "rw.log was rewritten {rewrites} time(s) while stopped but the daemon noticed {rw_noticed}"
    );
    assert!(
        total_missing == 0,
        "lines missing after {kills} kill -9 and the other faults (seed {seed}):\n{}\n{table}",
        missing_desc.join("\n")
    );
    assert!(
        total_dup == 0,
        "lines duplicated (exactly-once across kill -9 is claimed) (seed {seed}):\n{}\n{table}",
        missing_desc.join("\n")
    );
    d.stop();
}

// ---------------------------------------------------------------------------
// Spool cap
// ---------------------------------------------------------------------------

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
    let msgs = d.consume(&broker.addr(), TOPIC, 1000, WAIT);
    assert_exactly_once(&msgs, 0..1000);
    let q = queue(d.config_path());
    assert_eq!(q["paused_by_backpressure"], false, "{q:#}");

    broker.proxy_mut().down();
    // 2 MB: eight times the cap.
    let writer = write_numbered_slowly(&log, 1000, 21_000, 2000, Duration::from_millis(100));
    writer.join().unwrap();
    let t = Instant::now();
    let paused = loop {
        let q = queue(d.config_path());
        if q["paused_by_backpressure"] == true {
            break q;
        }
        d.assert_running();
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the spool never reported backpressure: {q:#}"
        );
        thread::sleep(Duration::from_millis(100));
    };
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
    let msgs = d.consume(&broker.addr(), TOPIC, 21_000, Duration::from_secs(45));
    if msgs.len() < 21_000 {
        // Stalled: show the spool as the daemon sees it and on disk.
        let q = queue(d.config_path());
        let mut segs: Vec<(String, u64)> = std::fs::read_dir(&spool)
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
            msgs.len(),
            d.log_lines("logcatch::spool").iter().rev().take(6).rev().cloned().collect::<Vec<_>>().join("\n")
        );
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
    let msgs = d.consume(&broker.addr(), TOPIC, 1000, WAIT);
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
    let msgs = d.consume(&broker.addr(), TOPIC, 41_000, WAIT);
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
