//! A 100 MiB line, under `long_lines: split` and `truncate`: it arrives in
//! pieces (or as its first MiB) at the right offsets, the daemon's memory
//! stays far below the line's size, and another source is not held up
//! behind it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use super::{MIB, TOPIC, WAIT};
use crate::common::*;

/// `VmRSS` of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's RSS every 20 ms on a thread until stopped; returns
/// the peak in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            peak,
            handle: Some(handle),
        }
    }
    fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.peak_kib()
    }
}

/// A consumer on its own thread that keeps every message of a topic (read
/// from offset 0) with the time it arrived here.
struct Collector {
    got: Arc<Mutex<Vec<(Msg, Instant)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Collector {
    /// `topic` must exist.
    fn start(addr: &str, topic: &str) -> Collector {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set(
                "group.id",
                format!("hostile-collector-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            .set("max.partition.fetch.bytes", (4 * MIB).to_string())
            .set("log_level", "3")
            .create()
            .expect("collector consumer");
        let parts = current_partitions(&consumer, topic);
        assert!(!parts.is_empty(), "topic {topic} has no partitions");
        assign_from_start(&consumer, topic, &parts);
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let handle = thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            while !s.load(Ordering::SeqCst) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    if !seen.insert((m.partition(), m.offset())) {
                        continue;
                    }
                    g.lock()
                        .unwrap()
                        .push((Msg::from_message(&m), Instant::now()));
                }
            }
        });
        Collector {
            got,
            stop,
            handle: Some(handle),
        }
    }

    /// Waits until `done` holds for the messages so far (arrival order);
    /// fails at once if the daemon exits.
    fn wait(
        &self,
        d: &mut Daemon,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[(Msg, Instant)]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.got.lock().unwrap()) {
                return;
            }
            d.assert_running();
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what} ({} messages so far)",
                    self.got.lock().unwrap().len()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn messages(&self) -> Vec<(Msg, Instant)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Chunk `k` of the 100 MiB line: 1 MiB, no `\n` or `\r`, starting with
/// its number so a misplaced piece is easy to see.
fn big_chunk(k: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(MIB);
    v.extend_from_slice(format!("<piece {k:03}>").as_bytes());
    let mut i = 0usize;
    while v.len() < MIB {
        v.push(b'a' + ((i * 7 + k) % 26) as u8);
        i += 1;
    }
    v
}

/// Writes 10 numbered lines every 100 ms to `path` from `from` on, until
/// stopped; returns the (first number, last number + 1, time) of each write.
struct SteadyWriter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<(u64, u64, Instant)>>>,
}

impl SteadyWriter {
    fn start(path: &Path, from: u64) -> SteadyWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let path = path.to_path_buf();
        let handle = thread::spawn(move || {
            let mut log = Vec::new();
            let mut n = from;
            while !s.load(Ordering::SeqCst) {
                write_numbered(&path, n, n + 10);
                log.push((n, n + 10, Instant::now()));
                n += 10;
                thread::sleep(Duration::from_millis(100));
            }
            log
        });
        SteadyWriter {
            stop,
            handle: Some(handle),
        }
    }
    fn finish(mut self) -> Vec<(u64, u64, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().expect("writer")
    }
}

const PIECES: usize = 100;
/// Numbered lines written after the long one.
const AFTER: u64 = 100;
/// The first number of the other source's lines.
const SMALL_BASE: u64 = 1_000_000;

/// The 100 MiB line scenario, under `split` or `truncate`.
fn long_line(policy: &str) {
    let env = TestEnv::new();
    let (mut d, seen) = deliver_long_line(&env, policy);
    let last_piece_at = check_long_line(policy, &seen);
    // Memory: the line is never held whole.
    let peak = seen.rss_peak;
    assert!(
        peak < 200 * 1024,
        "the daemon's RSS peaked at {peak} KiB (> 200 MiB) while a 100 MiB line went through"
    );
    check_small_not_held_up(&seen, last_piece_at);
    d.stop();
}

/// What a run of the scenario saw.
struct LongLineRun {
    /// Every message of the topic, with when it arrived here.
    all: Vec<(Msg, Instant)>,
    /// The other source's writes while the long line went through.
    small_writes: Vec<(u64, u64, Instant)>,
    /// One past the last number written to the other source.
    small_end: u64,
    /// The daemon's RSS (KiB) before the long line, after it was written,
    /// and at its peak.
    rss_before: u64,
    rss_after_write: u64,
    rss_peak: u64,
    /// How long writing the long line took, and how long until all of
    /// `big` was delivered.
    big_written: Duration,
    big_done: Duration,
}

/// Starts a daemon on `big` (the long line, then numbered lines) and
/// `small` (10 lines every 100 ms meanwhile), and collects everything
/// delivered. Returns the daemon, still running.
fn deliver_long_line(env: &TestEnv, policy: &str) -> (Daemon, LongLineRun) {
    env.broker.create_topic(TOPIC, 1);
    let big = env.path("big.log");
    let small = env.path("small.log");
    std::fs::write(&big, b"").unwrap();
    write_numbered(&small, SMALL_BASE, SMALL_BASE + 100);
    let cfg = env
        .config(TOPIC)
        .source("big", &big)
        .source("small", &small)
        .tailer("long_lines", policy);
    let collector = Collector::start(&env.addr(), TOPIC);
    let mut d = env.start(&cfg);
    collector.wait(&mut d, "small's first lines", WAIT, |m| {
        m.iter()
            .filter(|(m, _)| m.key.as_deref() == Some(b"small"))
            .count()
            >= 100
    });
    let pid = d.pid().unwrap();
    let rss_before = rss_kib(pid).unwrap_or(0);
    let sampler = RssSampler::start(pid);
    let small_writer = SteadyWriter::start(&small, SMALL_BASE + 100);

    // The long line, 1 MiB at a time with short pauses so that the daemon
    // reads it while it is being written; then its newline and normal lines.
    let big_started = Instant::now();
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
        for k in 0..PIECES {
            f.write_all(&big_chunk(k)).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        f.write_all(b"\n").unwrap();
    }
    let big_written = big_started.elapsed();
    write_numbered(&big, 0, AFTER);
    let rss_after_write = rss_kib(pid).unwrap_or(0);

    let want_big = match policy {
        "split" => PIECES + AFTER as usize,
        _ => 1 + AFTER as usize,
    };
    collector.wait(&mut d, "the long line and the lines after it", WAIT, |m| {
        m.iter()
            .filter(|(m, _)| m.key.as_deref() == Some(b"big"))
            .count()
            >= want_big
    });
    let big_done = big_started.elapsed();
    let rss_peak = sampler.finish();
    let small_writes = small_writer.finish();
    let small_end = small_writes.last().map(|w| w.1).unwrap_or(SMALL_BASE + 100);
    collector.wait(&mut d, "all of small's lines", WAIT, |m| {
        m.iter()
            .filter(|(m, _)| m.key.as_deref() == Some(b"small"))
            .filter_map(|(m, _)| number_of(&m.value))
            .filter(|n| *n >= small_end - 10)
            .count()
            >= 10
    });
    thread::sleep(QUIET);
    let all = collector.messages();
    d.assert_running();
    let run = LongLineRun {
        all,
        small_writes,
        small_end,
        rss_before,
        rss_after_write,
        rss_peak,
        big_written,
        big_done,
    };
    (d, run)
}

/// Checks the long line's messages (its pieces, or its first MiB) and the
/// numbered lines after it; returns when its last piece arrived.
fn check_long_line(policy: &str, seen: &LongLineRun) -> Option<Instant> {
    // The long line's messages: everything of `big` that is not numbered,
    // in topic order.
    let big_msgs: Vec<&(Msg, Instant)> = seen
        .all
        .iter()
        .filter(|(m, _)| m.key.as_deref() == Some(b"big"))
        .collect();
    let pieces: Vec<&(Msg, Instant)> = big_msgs
        .iter()
        .copied()
        .filter(|(m, _)| number_of(&m.value).is_none())
        .collect();
    let total: usize = pieces.iter().map(|(m, _)| m.value.len()).sum();
    let last_piece_at = pieces.iter().map(|(_, t)| *t).max();
    let LongLineRun {
        rss_before,
        rss_after_write,
        rss_peak: peak,
        big_written,
        big_done,
        ..
    } = seen;
    eprintln!(
        "long line ({policy}): {} piece(s), {total} bytes; written in {big_written:?}, all of `big` delivered {big_done:?} after the first byte; \
         daemon RSS {rss_before} KiB before, {rss_after_write} KiB after the write, peak {peak} KiB",
        pieces.len()
    );
    let mut orders = pieces.clone();
    orders.sort_by_key(|(m, _)| (m.partition, m.offset));
    match policy {
        "split" => {
            assert_eq!(pieces.len(), PIECES, "pieces of the long line");
            assert_eq!(total, PIECES * MIB, "total bytes of the pieces");
            for (k, (m, _)) in orders.iter().enumerate() {
                assert!(
                    m.value == big_chunk(k),
                    "piece {k} is not bytes [{k} MiB, {} MiB) of the line (starts {:?})",
                    k + 1,
                    String::from_utf8_lossy(&m.value[..m.value.len().min(16)])
                );
                assert_eq!(
                    m.header("offset"),
                    Some((k * MIB).to_string()),
                    "offset header of piece {k}"
                );
            }
        }
        _ => {
            assert_eq!(pieces.len(), 1, "a truncated long line is one message");
            assert_eq!(total, MIB, "a truncated long line keeps max_line_bytes");
            assert!(
                orders[0].0.value == big_chunk(0),
                "the truncated line is not the first MiB of the line"
            );
        }
    }
    // The lines after the long one: exactly once, in order, at the right
    // offsets.
    let after: Vec<&Msg> = big_msgs
        .iter()
        .map(|(m, _)| m)
        .filter(|m| number_of(&m.value).is_some())
        .collect();
    let nums: Vec<u64> = after.iter().map(|m| number_of(&m.value).unwrap()).collect();
    assert_eq!(
        nums,
        (0..AFTER).collect::<Vec<_>>(),
        "the numbered lines after the long line"
    );
    let first_after = (PIECES * MIB + 1) as u64;
    assert_eq!(
        after[0].header("offset"),
        Some(first_after.to_string()),
        "offset header of the first line after the long one"
    );
    last_piece_at
}

/// The other source was not held up behind the long line: its lines all
/// arrived once, some of them before the long line's last piece, none
/// late.
fn check_small_not_held_up(seen: &LongLineRun, last_piece_at: Option<Instant>) {
    let all = &seen.all;
    let writes = &seen.small_writes;
    let big_done = seen.big_done;
    let small_msgs: BTreeMap<u64, Instant> = all
        .iter()
        .filter(|(m, _)| m.key.as_deref() == Some(b"small"))
        .filter_map(|(m, t)| number_of(&m.value).map(|n| (n, *t)))
        .collect();
    let counts = {
        let msgs: Vec<Msg> = all.iter().map(|(m, _)| m.clone()).collect();
        number_counts(&msgs, "small")
    };
    let missing: Vec<u64> = (SMALL_BASE..seen.small_end)
        .filter(|n| !counts.contains_key(n))
        .collect();
    let dups: Vec<u64> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        missing.is_empty() && dups.is_empty(),
        "small: missing {}, duplicated {}",
        ranges(missing),
        ranges(dups)
    );
    let mut worst = Duration::ZERO;
    let mut during = 0usize;
    for &(from, _, at) in writes {
        let arrived = small_msgs[&from];
        worst = worst.max(arrived.saturating_duration_since(at));
        if last_piece_at.is_some_and(|last| arrived < last) {
            during += 1;
        }
    }
    eprintln!(
        "small: {} writes while the long line went through; worst latency {worst:?}; {during} write(s) arrived before the long line's last piece",
        writes.len()
    );
    assert!(
        during > 0,
        "no line of `small` arrived while the long line was being delivered (it took {big_done:?})"
    );
    assert!(
        worst < Duration::from_secs(10),
        "a line of `small` took {worst:?} to arrive while the long line went through"
    );
}

/// A 100 MiB line with `long_lines: split` arrives as 100 pieces of 1 MiB;
/// RSS stays low; another source is not held up.
#[test]
fn long_line_100mib_split() {
    long_line("split");
}

/// The same line with `long_lines: truncate` arrives as its first MiB.
#[test]
fn long_line_100mib_truncate() {
    long_line("truncate");
}
