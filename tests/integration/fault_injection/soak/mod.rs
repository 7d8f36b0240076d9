//! The soak: many faults at once, on a seeded schedule, against the real
//! `logcatch` binary and a real (Apache Kafka) broker behind the outage proxy.
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

mod report;
mod tracker;
mod writer;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use report::{delivery_table, log_around_start, FileInfo};
use tracker::{count_topic, find_messages, Tracker};
use writer::{append, header_bytes, Files, Kind, WFile, WriteRec, Writer, FILES, HEADER_LINES};

const TOPIC: &str = "logs";
const WAIT: Duration = Duration::from_secs(180);
/// Numbers of file `i` are `i * SPAN ..`.
const SPAN: u64 = 100_000_000;
/// How long a fault that needs a file's lines delivered first waits for
/// them before it is skipped.
const OP_WAIT: Duration = Duration::from_secs(30);

#[test]
fn soak_under_faults() {
    let started = Instant::now();
    let seed = seed_from_env_or_time();
    let secs = env_u64("LOGCATCH_SOAK_SECS").unwrap_or(70);
    let rate = env_u64("LOGCATCH_FI_RATE").unwrap_or(1000).max(40);
    eprintln!(
        "soak: seed {seed} (LOGCATCH_TEST_SEED={seed} replays the schedule), {secs} s of faults, {rate} lines/s per file"
    );
    let mut s = Soak::start(seed, rate);
    let phase_took = s.run_faults(secs);
    s.timeline
        .event("writer stopped; waiting for delivery".into(), false);
    let drain_took = s.drain();
    s.tracker.finish();

    let (expected_total, written_log, file_info) = s.written();
    let read = Instant::now();
    let tc = count_topic(&s.broker.addr(), TOPIC, FILES.len(), expected_total, WAIT);
    eprintln!(
        "soak: read back {} messages (expected {expected_total}) in {:?}",
        tc.messages,
        read.elapsed()
    );
    s.d.assert_running();
    let table = delivery_table(&tc, &file_info);
    let total = started.elapsed();
    let Faults {
        kills,
        rotations,
        delete_recreates,
        rewrites,
        outages,
        inode_reuses,
    } = s.faults;
    eprintln!(
        "\nsoak: {:?} of faults ({kills} kill -9, {rotations} rotations, {delete_recreates} delete-recreates ({inode_reuses} inode reuse(s)), {rewrites} rewrite(s), {outages} outage(s)), drain {drain_took:?}, {total:?} in all; seed {seed}\n{}",
        phase_took, table.text
    );
    for sk in &s.timeline.skipped {
        eprintln!("soak: {sk}");
    }
    let rw_noticed = s.summarize_log();
    if !table.dup_numbers.is_empty() {
        s.explain_duplicates(table.dup_numbers.clone(), &written_log);
    }

    let (stray, text) = (&table.stray, &table.text);
    assert!(stray.is_empty(), "unexpected messages: {stray:?}");
    assert!(
        rw_noticed as u64 >= rewrites,
        "rw.log was rewritten {rewrites} time(s) while stopped but the daemon noticed {rw_noticed}"
    );
    assert!(
        table.missing == 0,
        "lines missing after {kills} kill -9 and the other faults (seed {seed}):\n{}\n{text}",
        table.problems.join("\n")
    );
    assert!(
        table.duplicated == 0,
        "lines duplicated (exactly-once across kill -9 is claimed) (seed {seed}):\n{}\n{text}",
        table.problems.join("\n")
    );
    s.d.stop();
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// What happened when, for the report and for finding the restart behind a
/// duplicate.
struct Event {
    at: Instant,
    /// The daemon start (as numbered in daemon.log) after this event, if it
    /// started one.
    start_no: Option<usize>,
    what: String,
}

/// The events so far, printed as they happen, and the faults skipped.
struct Timeline {
    t0: Instant,
    events: Vec<Event>,
    starts: usize,
    skipped: Vec<String>,
}

impl Timeline {
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

    /// A fault that could not be done, for the report.
    fn skip(&mut self, why: String) {
        self.skipped.push(why.clone());
        self.event(why, false);
    }
}

/// How many faults of each kind were done.
#[derive(Default, Clone, Copy)]
struct Faults {
    kills: u64,
    rotations: u64,
    delete_recreates: u64,
    rewrites: u64,
    outages: u64,
    inode_reuses: u64,
}

/// When each kind of fault is due next.
struct Schedule {
    kill: Instant,
    rotate: Instant,
    copytruncate: Instant,
    delete_recreate: Instant,
    rewrite: Instant,
    outage: Instant,
}

impl Schedule {
    fn earliest(&self) -> Instant {
        [
            self.kill,
            self.rotate,
            self.copytruncate,
            self.delete_recreate,
            self.rewrite,
            self.outage,
        ]
        .into_iter()
        .min()
        .unwrap()
    }
}

/// The index in [`FILES`] of the file of kind `k`.
fn file_index(k: Kind) -> usize {
    FILES.iter().position(|(_, kk)| *kk == k).unwrap()
}

/// A running soak. Fields drop in this order: the writer stops, the daemon
/// is killed (its log printed on a panic), the tracker stops, the broker
/// goes, then the temp dir.
struct Soak {
    writer: Writer,
    d: Daemon,
    tracker: Tracker,
    files: Arc<Mutex<Files>>,
    rng: Rng,
    timeline: Timeline,
    faults: Faults,
    /// Lines each file gets per writer tick.
    per_tick: u64,
    broker: Broker,
    _dir: tempfile::TempDir,
}

impl Soak {
    /// A broker behind the proxy, the five files with some lines each (and
    /// rw.log's header), the tracker, the daemon, and the writer at `rate`
    /// lines per second per file.
    fn start(seed: u64, rate: u64) -> Soak {
        let rng = Rng::new(seed);
        let broker = Broker::start_with_proxy();
        broker.create_topic(TOPIC, 1);
        let env_dir = tempfile::Builder::new()
            .prefix("logcatch-soak-")
            .tempdir()
            .expect("tempdir");
        let path = |name: &str| env_dir.path().join(name);
        let mut timeline = Timeline {
            t0: Instant::now(),
            events: Vec::new(),
            starts: 0,
            skipped: Vec::new(),
        };

        // Files, and the rw header.
        let mut wfiles = Vec::new();
        let mut cfg = ConfigBuilder::new(path("data"), &broker.addr(), TOPIC);
        for (i, (name, kind)) in FILES.iter().enumerate() {
            let path = path(&format!("{name}.log"));
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

        let tracker = Tracker::start(&broker.addr(), TOPIC, FILES.len());
        let d = Daemon::with(env_dir.path(), &cfg);
        timeline.event("daemon started".into(), true);
        let tick = Duration::from_millis(25);
        let per_tick = (rate * tick.as_millis() as u64 / 1000).max(1);
        let writer = Writer::start(files.clone(), per_tick, tick);
        Soak {
            writer,
            d,
            tracker,
            files,
            rng,
            timeline,
            faults: Faults::default(),
            per_tick,
            broker,
            _dir: env_dir,
        }
    }

    /// Runs the faults for `secs` seconds, each kind when it is due, then
    /// stops the writer. Returns how long it ran.
    fn run_faults(&mut self, secs: u64) -> Duration {
        let phase = Duration::from_secs(secs);
        let phase_start = Instant::now();
        let at = |secs_f: f64| phase_start + Duration::from_secs_f64(secs_f);
        let mut next = Schedule {
            kill: at(self.rng.range(2000..5000) as f64 / 1000.0),
            rotate: at(3.0),
            copytruncate: at(6.0),
            delete_recreate: at(9.0),
            rewrite: at((secs as f64 * 0.35).min(25.0)),
            outage: at((secs as f64 * 0.55).min(40.0)),
        };
        let after = |ms: u64| Instant::now() + Duration::from_millis(ms);
        while phase_start.elapsed() < phase {
            let now = Instant::now();
            let due = next.earliest();
            if due > now {
                thread::sleep((due - now).min(Duration::from_millis(100)));
                self.d.assert_running();
                continue;
            }
            if next.kill <= now {
                self.kill_and_restart();
                next.kill = after(self.rng.range(3000..9000));
            } else if next.rotate <= now {
                self.rotate_if_ready();
                next.rotate = after(self.rng.range(2500..4000));
            } else if next.copytruncate <= now {
                self.copytruncate();
                next.copytruncate = after(self.rng.range(6000..9000));
            } else if next.delete_recreate <= now {
                self.delete_and_recreate();
                next.delete_recreate = after(self.rng.range(8000..12000));
            } else if next.rewrite <= now {
                self.rewrite_while_stopped();
                next.rewrite = Instant::now() + Duration::from_secs(30);
            } else if next.outage <= now {
                self.outage();
                next.outage = Instant::now() + Duration::from_secs(45);
            }
        }
        self.writer.finish();
        phase_start.elapsed()
    }

    /// kill -9 at a random moment; sometimes rotate while it is down.
    fn kill_and_restart(&mut self) {
        self.d.assert_running();
        self.d.kill9();
        self.faults.kills += 1;
        let down = Duration::from_millis(self.rng.range(0..800));
        let mut what = format!("kill -9 #{}, down for {down:?}", self.faults.kills);
        if self.rng.range(0..3) == 0 && self.rot_ready() {
            self.faults.rotations += 1;
            let late = self.rng.range(0..30);
            self.rotate(self.faults.rotations, late);
            what.push_str(", rot.log rotated while down");
        }
        thread::sleep(down);
        self.d.restart();
        self.timeline.event(what, true);
    }

    /// Rotates rot.log if the daemon is on its current file, else
    /// postpones.
    fn rotate_if_ready(&mut self) {
        if self.rot_ready() {
            self.faults.rotations += 1;
            let late = self.rng.range(0..30);
            self.rotate(self.faults.rotations, late);
            self.timeline.event(
                format!("rot.log rotated (#{})", self.faults.rotations),
                false,
            );
        } else {
            self.timeline.event(
                "rot.log rotation postponed: the daemon is not on the current file yet".into(),
                false,
            );
        }
    }

    /// Whether every line before rot.log's current file and its first line
    /// were delivered: the daemon has moved on to the file now at rot.log.
    fn rot_ready(&self) -> bool {
        let rot = file_index(Kind::Rotate);
        let cur_first = self.files.lock().unwrap().files[rot].cur_first;
        self.tracker.delivered_below(rot, cur_first + 1)
    }

    /// Rotates rot.log (the caller checked that the daemon is on the file
    /// now at rot.log). `late` lines go to the renamed file first.
    fn rotate(&self, k: u64, late: u64) {
        let rot = file_index(Kind::Rotate);
        let mut fs = self.files.lock().unwrap();
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
    }

    /// Pauses ct.log's writer and, once its lines were delivered, copies
    /// and truncates it.
    fn copytruncate(&mut self) {
        let ct = file_index(Kind::CopyTruncate);
        self.writer.set_paused(ct, true);
        let upto = self.writer.next(ct);
        if self.tracker.wait_below(&mut self.d, ct, upto, OP_WAIT) {
            let p = self.files.lock().unwrap().files[ct].path.clone();
            std::fs::copy(&p, p.with_extension("log.1")).unwrap();
            OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(0)
                .unwrap();
            self.files.lock().unwrap().files[ct].cur_first = upto;
            self.timeline.event(
                format!("ct.log copied and truncated (lines below {upto} delivered)"),
                false,
            );
        } else {
            self.timeline.skip(format!(
                "copytruncate skipped: ct lines below {upto} not delivered within {OP_WAIT:?} (watermark {})",
                self.tracker.watermark(ct)
            ));
        }
        self.writer.set_paused(ct, false);
    }

    /// Pauses dr.log's writer and, once its lines were delivered, deletes
    /// and recreates it: every other time while the daemon is down (killed
    /// with -9), when the inode is often reused.
    fn delete_and_recreate(&mut self) {
        let dr = file_index(Kind::DeleteRecreate);
        self.writer.set_paused(dr, true);
        let upto = self.writer.next(dr);
        if self.tracker.wait_below(&mut self.d, dr, upto, OP_WAIT) {
            self.faults.delete_recreates += 1;
            let p = self.files.lock().unwrap().files[dr].path.clone();
            let old_ino = std::fs::metadata(&p).unwrap().ino();
            let stopped = self.faults.delete_recreates.is_multiple_of(2);
            if stopped {
                self.d.kill9();
                self.faults.kills += 1;
            }
            std::fs::remove_file(&p).unwrap();
            {
                let mut fs = self.files.lock().unwrap();
                fs.files[dr].cur_first = fs.files[dr].next;
                fs.write(dr, self.per_tick);
            }
            let new_ino = std::fs::metadata(&p).unwrap().ino();
            if new_ino == old_ino {
                self.faults.inode_reuses += 1;
            }
            let what = format!(
                "dr.log deleted and recreated {} (inode {old_ino} -> {new_ino}{})",
                if stopped {
                    format!("while the daemon was down (kill -9 #{})", self.faults.kills)
                } else {
                    "while running".into()
                },
                if new_ino == old_ino { ", reused" } else { "" }
            );
            if stopped {
                thread::sleep(Duration::from_millis(self.rng.range(0..300)));
                self.d.restart();
            }
            self.timeline.event(what, stopped);
        } else {
            self.timeline.skip(format!(
                "delete-recreate skipped: dr lines below {upto} not delivered within {OP_WAIT:?} (watermark {})",
                self.tracker.watermark(dr)
            ));
        }
        self.writer.set_paused(dr, false);
    }

    /// Pauses rw.log's writer and, once its lines were delivered, stops the
    /// daemon, rewrites rw.log in place (same header, different lines) and
    /// starts the daemon again.
    fn rewrite_while_stopped(&mut self) {
        let rw = file_index(Kind::Rewrite);
        self.writer.set_paused(rw, true);
        let upto = self.writer.next(rw);
        if self.tracker.wait_below(&mut self.d, rw, upto, OP_WAIT) {
            self.faults.rewrites += 1;
            self.d.stop();
            self.timeline
                .event("daemon stopped (SIGTERM) for the rewrite".into(), false);
            let p = self.files.lock().unwrap().files[rw].path.clone();
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
            let longer = self.faults.rewrites % 2 == 1;
            let new_lines = if longer {
                old_lines + 3
            } else {
                50.min(old_lines / 2)
            };
            {
                let mut fs = self.files.lock().unwrap();
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
            self.d.restart();
            self.timeline.event(
                format!(
                    "rw.log rewritten in place ({}): same first {} bytes, {old_size} -> {} bytes",
                    if longer { "longer" } else { "shorter" },
                    header.len(),
                    meta.len()
                ),
                true,
            );
        } else {
            self.timeline.skip(format!(
                "rewrite skipped: rw lines below {upto} not delivered within {OP_WAIT:?} (watermark {})",
                self.tracker.watermark(rw)
            ));
        }
        self.writer.set_paused(rw, false);
    }

    /// Takes the broker away for 3 to 6 s while lines are written; every
    /// other time with a kill -9 in the middle, so the restarted daemon's
    /// read-back waits for the broker.
    fn outage(&mut self) {
        self.faults.outages += 1;
        let outages = self.faults.outages;
        let len = Duration::from_millis(self.rng.range(3000..6000));
        self.broker.proxy_mut().down();
        self.timeline
            .event(format!("broker away (outage #{outages}, {len:?})"), false);
        if outages % 2 == 1 {
            thread::sleep(len / 2);
            self.d.assert_running();
            self.d.kill9();
            self.faults.kills += 1;
            thread::sleep(Duration::from_millis(self.rng.range(0..500)));
            self.d.restart();
            self.timeline.event(
                format!("kill -9 #{} during the outage", self.faults.kills),
                true,
            );
            thread::sleep(len / 2);
        } else {
            thread::sleep(len);
        }
        self.d.assert_running();
        self.broker.proxy_mut().up();
        self.timeline.event("broker back".into(), false);
    }

    /// Waits until every file's lines all arrived, or nothing moved for
    /// 30 s (a lost line holds its file's watermark forever; the report
    /// names it). Returns how long it waited.
    fn drain(&mut self) -> Duration {
        // Everything written must arrive.
        let targets: Vec<u64> = {
            let fs = self.files.lock().unwrap();
            fs.files.iter().map(|f| f.next).collect()
        };
        let drain = Instant::now();
        let mut last_progress = (Instant::now(), Vec::new());
        loop {
            let marks: Vec<u64> = (0..FILES.len())
                .map(|i| self.tracker.watermark(i))
                .collect();
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
            self.d.assert_running();
            thread::sleep(Duration::from_millis(50));
        }
        drain.elapsed()
    }

    /// How many lines were written in all (headers included), the log of
    /// every append, and what each file ended with.
    fn written(&self) -> (u64, Vec<WriteRec>, Vec<FileInfo>) {
        let fs = self.files.lock().unwrap();
        let total: u64 = fs.files.iter().map(|f| f.next - f.base + f.headers).sum();
        let info: Vec<FileInfo> = fs
            .files
            .iter()
            .map(|f| (f.name, f.base, f.next, f.headers))
            .collect();
        (total, fs.log.clone(), info)
    }

    /// Prints what the daemon's log says about recoveries; returns how many
    /// of the rw.log rewrites it noticed at start.
    fn summarize_log(&self) -> usize {
        let log = self.d.log();
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
        let rw_path = self.files.lock().unwrap().files[file_index(Kind::Rewrite)]
            .path
            .clone();
        let rw_noticed = log
            .lines()
            .filter(|l| {
                l.contains(rw_path.to_str().unwrap()) && l.contains("reading it from the start")
            })
            .count();
        eprintln!(
            "soak: rw.log rewrites noticed at start: {rw_noticed} of {}",
            self.faults.rewrites
        );
        rw_noticed
    }

    /// For duplicated lines: which restart came right after each was
    /// written, their copies in the topic, and the daemon's log around
    /// those restarts.
    fn explain_duplicates(&self, mut dup_numbers: Vec<u64>, written_log: &[WriteRec]) {
        let log = self.d.log();
        let mut restarts: BTreeMap<usize, usize> = BTreeMap::new();
        for n in &dup_numbers {
            let Some(w) = written_log
                .iter()
                .find(|w| (w.from..w.to).contains(n) && w.file == (n / SPAN) as usize)
            else {
                continue;
            };
            if let Some(e) = self
                .timeline
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
            &self.broker.addr(),
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
            let e = self
                .timeline
                .events
                .iter()
                .find(|e| e.start_no == Some(*start));
            eprintln!(
                "--- daemon.log around start #{start} ({n} duplicated line(s); event: {}) ---\n{}",
                e.map(|e| e.what.as_str()).unwrap_or("?"),
                log_around_start(&log, *start, 12, 30)
            );
        }
    }
}
