//! One client's line flow in a cluster case: [`Flow`] owns a daemon (with
//! `kafka.client` set), the file it tails, a [`Writer`] appending unique
//! numbered lines at a steady rate, and a [`Progress`] sampler of the
//! daemon's acknowledged-line count, from which the stall is measured.
//! [`Flow::finish`] reads the whole topic back and gives an [`Outcome`]
//! (lost, duplicated, stall) that the case reports and asserts.
//!
//! Invariants: a flow's lines are numbered from 0 and are the only lines
//! of its source; the stall is measured on the daemon's own acks (the
//! `delivered` count of `/queue` on its admin socket, sampled every
//! 100 ms), so a consumer's own leader-change delays do not count.
//!
//! Must never: assert before every flow of the case has reported (the
//! report line is written first, so a failing case still has its figures).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::cluster::Cluster;
use crate::common::*;

/// How long the read-back at the end may take.
pub(super) const WAIT: Duration = Duration::from_secs(240);

/// Appends numbered lines `from..` to a file at a steady rate (a batch
/// every 50 ms) on a thread, until stopped.
pub(super) struct Writer {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(path: &Path, from: u64, per_sec: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(from));
        let (stop2, next2, path) = (stop.clone(), next.clone(), path.to_path_buf());
        let batch = (per_sec / 20).max(1);
        let handle = thread::spawn(move || {
            let t0 = Instant::now();
            let mut written = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                let n = next2.load(Ordering::SeqCst);
                write_numbered(&path, n, n + batch);
                next2.store(n + batch, Ordering::SeqCst);
                written += batch;
                // Keep the rate over time, not per batch.
                let due = t0 + Duration::from_millis(written * 1000 / per_sec.max(1));
                thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        Writer {
            stop,
            next,
            handle: Some(handle),
        }
    }

    /// Stops writing; returns the number after the last line written.
    pub(super) fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
        self.next.load(Ordering::SeqCst)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Default)]
struct Samples {
    /// The daemon's `delivered` count at the last sample (0 while it is
    /// down or restarting).
    delivered: u64,
    /// When the count changed to a non-zero value: delivery progress.
    events: Vec<Instant>,
}

/// Samples a daemon's `/queue` over its admin socket every 100 ms on a
/// thread and records when its acknowledged-line count moved.
pub(super) struct Progress {
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    pub(super) fn start(admin_sock: PathBuf) -> Progress {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (samples.clone(), stop.clone());
        let handle = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let now = Instant::now();
                let d = admin_get(&admin_sock, "/queue")
                    .and_then(|q| q["delivered"].as_u64())
                    .unwrap_or(0);
                let mut s = s2.lock().unwrap();
                if d != s.delivered && d > 0 {
                    s.events.push(now);
                }
                s.delivered = d;
                drop(s);
                thread::sleep(Duration::from_millis(100));
            }
        });
        Progress {
            samples,
            stop,
            handle: Some(handle),
        }
    }

    /// The daemon's acknowledged lines since it (re)started.
    pub(super) fn delivered(&self) -> u64 {
        self.samples.lock().unwrap().delivered
    }

    /// How often the count moved in `from..to`.
    pub(super) fn moves_between(&self, from: Instant, to: Instant) -> usize {
        let s = self.samples.lock().unwrap();
        s.events.iter().filter(|e| **e >= from && **e < to).count()
    }

    /// The longest time without progress over `windows`: in a closed
    /// window `(from, Some(to))` delivery should have gone on all along
    /// (the gap up to `to` counts); an open one `(from, None)` ends at the
    /// last progress seen (the flow's end).
    pub(super) fn stall(&self, windows: &[(Instant, Option<Instant>)]) -> Duration {
        let s = self.samples.lock().unwrap();
        let last = s.events.last().copied();
        let mut worst = Duration::ZERO;
        for &(from, to) in windows {
            let end = match (to, last) {
                (Some(to), _) => to,
                (None, Some(last)) if last >= from => last,
                // No progress at all after `from`: the stall is until now.
                (None, _) => Instant::now(),
            };
            let mut prev = from;
            for &e in s.events.iter().filter(|e| **e >= from && **e <= end) {
                worst = worst.max(e - prev);
                prev = e;
            }
            worst = worst.max(end.saturating_duration_since(prev));
        }
        worst
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("progress sampler");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` (a JSON report: `/queue`, `/offsets`) on a daemon's admin
/// socket, or `None` while it does not answer.
pub(super) fn admin_get(sock: &Path, path: &str) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: logcatch\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body.trim()).ok()
}

/// What a flow delivered, for the report and the assertions.
pub(super) struct Outcome {
    pub(super) client: &'static str,
    pub(super) what: String,
    pub(super) lines: u64,
    pub(super) lost: usize,
    /// Extra copies (a line seen 3 times counts 2).
    pub(super) dup: usize,
    /// What was not exactly once ([`Tally::describe`]), if anything.
    pub(super) not_exact: Option<String>,
    pub(super) stall: Duration,
    /// Why the daemon was not fine at the end (it had exited, or did not
    /// exit 0 on SIGTERM), if so.
    pub(super) daemon_error: Option<String>,
    /// The end of the daemon's log (shown when something is off).
    pub(super) log_tail: String,
    /// What the case saw go wrong during the fault.
    pub(super) problems: Vec<String>,
}

impl Outcome {
    /// One report row for this flow and `other` (of the same client):
    /// lines, lost and duplicated add up; the stall stays this one's.
    pub(super) fn with(mut self, other: Outcome) -> Outcome {
        let (w1, w2) = (self.what.clone(), other.what.clone());
        let both = |a: Option<String>, b: Option<String>| -> Option<String> {
            let parts: Vec<String> = [
                a.map(|a| format!("[{w1}] {a}")),
                b.map(|b| format!("[{w2}] {b}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        };
        self.lines += other.lines;
        self.lost += other.lost;
        self.dup += other.dup;
        self.not_exact = both(self.not_exact.take(), other.not_exact);
        self.daemon_error = both(self.daemon_error.take(), other.daemon_error);
        let mut problems: Vec<String> = std::mem::take(&mut self.problems)
            .into_iter()
            .map(|p| format!("[{w1}] {p}"))
            .collect();
        problems.extend(other.problems.into_iter().map(|p| format!("[{w2}] {p}")));
        self.problems = problems;
        self.log_tail = format!("[{w1}]\n{}\n[{w2}]\n{}", self.log_tail, other.log_tail);
        self.what = format!("{w1} and {w2}");
        self
    }
}

/// A flow's file, `<root>/<topic>-<source>/<source>.log`, with lines
/// `0..prefill`: created with them unless it exists (then it is left as
/// it is).
pub(super) fn flow_file(root: &Path, topic: &str, source: &str, prefill: u64) -> PathBuf {
    let dir = root.join(format!("{topic}-{source}"));
    std::fs::create_dir_all(&dir).expect("flow dir");
    let log = dir.join(format!("{source}.log"));
    if !log.exists() {
        std::fs::write(&log, b"").expect("create the log file");
        write_numbered(&log, 0, prefill);
    }
    log
}

/// One daemon with `kafka.client: <client>` tailing `<dir>/<source>.log`
/// into `topic`, its writer, and its progress sampler.
pub(super) struct Flow {
    pub(super) client: &'static str,
    pub(super) topic: String,
    pub(super) source: String,
    pub(super) admin_sock: PathBuf,
    pub(super) daemon: Daemon,
    pub(super) writer: Option<Writer>,
    pub(super) progress: Progress,
    /// Lines in the file before the daemon started.
    prefill: u64,
    /// What the case saw go wrong during the fault (reported, then
    /// asserted, at the end).
    pub(super) problems: Vec<String>,
}

impl Flow {
    /// Starts the daemon in `<root>/<topic>-<source>/` on a file that
    /// holds lines `0..prefill` (see [`flow_file`]); with `per_sec`, a
    /// writer appends the next ones at that rate.
    pub(super) fn start(
        root: &Path,
        cluster: &Cluster,
        (client, topic, source): (&'static str, &str, &str),
        prefill: u64,
        per_sec: Option<u64>,
    ) -> Flow {
        let log = flow_file(root, topic, source, prefill);
        let dir = root.join(format!("{topic}-{source}"));
        let cfg = ConfigBuilder::new(dir.join("data"), &cluster.bootstrap(), topic)
            .source(source, &log)
            .kafka("client", client);
        let daemon = Daemon::with(&dir, &cfg);
        let admin_sock = dir.join("data/admin.sock");
        let progress = Progress::start(admin_sock.clone());
        let writer = per_sec.map(|r| Writer::start(&log, prefill, r));
        Flow {
            client,
            topic: topic.to_string(),
            source: source.to_string(),
            admin_sock,
            daemon,
            writer,
            progress,
            prefill,
            problems: Vec::new(),
        }
    }

    /// Waits until the daemon acknowledged at least `n` lines since it
    /// started (fails at once if it exits).
    pub(super) fn wait_delivered(&mut self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.progress.delivered() < n {
            self.daemon.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} ({}): fewer than {n} lines acknowledged after {timeout:?} (have {})",
                self.source,
                self.client,
                self.progress.delivered()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the writer; returns how many lines the file holds.
    pub(super) fn stop_writing(&mut self) -> u64 {
        self.writer.as_mut().map_or(self.prefill, Writer::stop)
    }

    /// Stops the writer, reads the whole topic until every line of this
    /// flow's source is there (or [`WAIT`] ends), checks that the daemon still
    /// runs and stops it (SIGTERM: it must exit 0), and measures the stall
    /// over `windows` (see [`Progress::stall`]). Asserts nothing.
    pub(super) fn finish(
        mut self,
        cluster: &Cluster,
        windows: &[(Instant, Option<Instant>)],
    ) -> Outcome {
        let lines = self.stop_writing();
        let source = self.source.clone();
        let msgs = self
            .daemon
            .consume(&cluster.bootstrap(), &self.topic)
            .until(|m| number_counts(m, &source).len() as u64 >= lines)
            .timeout(WAIT)
            .run();
        let mine: Vec<Msg> = of_source(&msgs, &self.source)
            .into_iter()
            .cloned()
            .collect();
        let tally = Tally::of(&mine, 0..lines);
        let stall = self.progress.stall(windows);
        let daemon_error = if self.daemon.is_running() {
            self.daemon.sigterm();
            let st = self.daemon.wait_exit(Duration::from_secs(60));
            (!st.success()).then(|| format!("it exited with {st} after SIGTERM"))
        } else {
            Some("it had exited before the end".to_string())
        };
        let log_tail = self.daemon.log_tail(80);
        Outcome {
            client: self.client,
            what: format!("{} ({}) on {}", self.source, self.client, self.topic),
            lines,
            lost: tally.missing.len(),
            dup: tally.duplicate_count(),
            not_exact: (!tally.is_exact()).then(|| tally.describe().trim_end().to_string()),
            stall,
            daemon_error,
            log_tail,
            problems: std::mem::take(&mut self.problems),
        }
    }
}
