//! Hostile input against the real `logcatch` binary and a real (tansu)
//! broker: a 100 MiB line, random binary bytes, mixed line endings, a file
//! that shrinks under the reader, paths that are a directory or a FIFO, a
//! file that appears late, a damaged spool, and broken or missing configs.
//!
//! Not tested here: a file the daemon may not read (EACCES). The tests run
//! as root, and root reads a mode-000 file anyway, so the case cannot be
//! produced with chmod; the error path it would take is the same `Io` error
//! a directory source exercises below (logged once, shown in `logcatch-ctl
//! offsets`, the daemon keeps running).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

const WAIT: Duration = Duration::from_secs(120);
const TOPIC: &str = "logs";
const MIB: usize = 1 << 20;

/// Each test's temp dir and broker (`common::TestEnv`).
use common::TestEnv as Env;

/// The messages whose key is `source`, in partition/offset order.
fn of_source<'a>(msgs: &'a [Msg], source: &str) -> Vec<&'a Msg> {
    msgs.iter()
        .filter(|m| m.key.as_deref() == Some(source.as_bytes()))
        .collect()
}

/// Number -> how many times, over the numbered messages of `source`.
fn number_counts(msgs: &[Msg], source: &str) -> BTreeMap<u64, usize> {
    let mut c = BTreeMap::new();
    for m in of_source(msgs, source) {
        if let Some(n) = number_of(&m.value) {
            *c.entry(n).or_default() += 1;
        }
    }
    c
}

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
        let parts = common::current_partitions(&consumer, topic);
        assert!(!parts.is_empty(), "topic {topic} has no partitions");
        common::assign_from_start(&consumer, topic, &parts);
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

/// The 100 MiB line scenario, under `split` or `truncate`.
fn long_line(policy: &str) {
    const PIECES: usize = 100;
    const AFTER: u64 = 100; // numbered lines after the long one
    const SMALL_BASE: u64 = 1_000_000;
    let env = Env::new();
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
    let peak = sampler.finish();
    let writes = small_writer.finish();
    let small_end = writes.last().map(|w| w.1).unwrap_or(SMALL_BASE + 100);
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

    // The long line's messages: everything of `big` that is not numbered,
    // in topic order.
    let big_msgs: Vec<&(Msg, Instant)> = all
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

    // Memory: the line is never held whole.
    assert!(
        peak < 200 * 1024,
        "the daemon's RSS peaked at {peak} KiB (> 200 MiB) while a 100 MiB line went through"
    );

    // The other source was not held up behind the long line.
    let small_msgs: BTreeMap<u64, Instant> = all
        .iter()
        .filter(|(m, _)| m.key.as_deref() == Some(b"small"))
        .filter_map(|(m, t)| number_of(&m.value).map(|n| (n, *t)))
        .collect();
    let counts = {
        let msgs: Vec<Msg> = all.iter().map(|(m, _)| m.clone()).collect();
        number_counts(&msgs, "small")
    };
    let missing: Vec<u64> = (SMALL_BASE..small_end)
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
    for &(from, _, at) in &writes {
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
    d.stop();
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

/// The file split at `\n` as the daemon must deliver it: complete lines
/// only, one trailing `\r` dropped.
fn expected_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        let mut line = &rest[..i];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        out.push(line.to_vec());
        rest = &rest[i + 1..];
    }
    out
}

/// Random bytes (all 256 values, invalid UTF-8, NUL, lone `\r`, empty
/// lines): every line arrives unchanged, in order.
#[test]
fn random_binary_bytes_arrive_unchanged() {
    let seed = seed_from_env_or_time();
    eprintln!("random_binary: seed {seed} (set LOGCATCH_TEST_SEED to replay)");
    let mut rng = Rng::new(seed);
    let env = Env::new();
    let bin = env.path("bin.log");
    // Edge cases first, then 1 MiB of random bytes.
    let mut bytes: Vec<u8> = Vec::new();
    for special in [
        &b"\n"[..],                          // empty line
        b"\r\n",                             // empty after the \r
        b"\r\r\n",                           // one \r dropped, one kept
        b"a\rb\n",                           // \r inside a line stays
        b"\x00\x01\x02\xff\xfe\n",           // NUL and bytes that are never UTF-8
        b"\xc3\x28 \xe2\x82 \xf0\x90\x28\n", // broken multi-byte sequences
        b"caf\xc3\xa9 \xe2\x82\xac\n",       // valid UTF-8
        b"\r\n",
    ] {
        bytes.extend_from_slice(special);
    }
    while bytes.len() < MIB {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.push(b'\n');
    std::fs::write(&bin, &bytes).unwrap();
    let want = expected_lines(&bytes);
    eprintln!("random_binary: {} bytes, {} lines", bytes.len(), want.len());

    let mut d = env.start(&env.config(TOPIC).source("bin", &bin));
    let msgs = d.consume(&env.addr(), TOPIC, want.len(), WAIT);
    let got: Vec<&Msg> = of_source(&msgs, "bin");
    assert_eq!(
        got.len(),
        want.len(),
        "messages from the binary file (want one per line)"
    );
    // Offsets: each line's start in the file.
    let mut starts = Vec::with_capacity(want.len());
    let mut at = 0usize;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            starts.push(at);
            at = i + 1;
        }
    }
    let mut bad = Vec::new();
    for (i, (m, w)) in got.iter().zip(&want).enumerate() {
        if &m.value != w || m.header("offset") != Some(starts[i].to_string()) {
            if bad.len() < 5 {
                bad.push(format!(
                    "line {i} at {}: got {} bytes {:?} (offset header {:?}), want {} bytes {:?}",
                    starts[i],
                    m.value.len(),
                    &m.value[..m.value.len().min(24)],
                    m.header("offset"),
                    w.len(),
                    &w[..w.len().min(24)]
                ));
            } else {
                bad.push(String::new());
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} line(s) changed on the way:\n{}",
        bad.len(),
        bad.iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    d.stop();
}

/// A file mixing `\n` and `\r\n` endings (and `\r` elsewhere): each value
/// is the line without its ending; only one `\r` right before `\n` goes.
#[test]
fn mixed_lf_and_crlf_line_endings() {
    let env = Env::new();
    let log = env.path("mixed.log");
    let mut text: Vec<u8> = Vec::new();
    let mut want: Vec<Vec<u8>> = Vec::new();
    for n in 0..600u64 {
        let line = numbered_line(n);
        text.extend_from_slice(line.as_bytes());
        // Endings in an irregular pattern, runs of each kind included.
        let crlf = (n % 7) < 3 || (n / 50) % 2 == 1;
        text.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        want.push(line.into_bytes());
        if n % 100 == 99 {
            text.extend_from_slice(b"mid\rdle\r\n");
            want.push(b"mid\rdle".to_vec());
            text.extend_from_slice(b"two\r\r\n");
            want.push(b"two\r".to_vec());
            text.extend_from_slice(b"\r\n");
            want.push(Vec::new());
        }
    }
    // Half now, half while running, split between a `\r` and its `\n`:
    // the daemon sees a line end in `\r` first and must not keep it.
    let cut = text.len() / 2;
    let cut = cut + text[cut..].windows(2).position(|w| w == b"\r\n").unwrap() + 1;
    std::fs::write(&log, &text[..cut]).unwrap();
    let mut d = env.start(&env.config(TOPIC).source("mixed", &log));
    let complete = text[..cut].iter().filter(|b| **b == b'\n').count();
    d.wait_delivered(&env.addr(), TOPIC, "the first half", WAIT, |m| {
        m.len() >= complete
    });
    thread::sleep(Duration::from_millis(300));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&text[cut..])
        .unwrap();
    let msgs = d.consume(&env.addr(), TOPIC, want.len(), WAIT);
    let got: Vec<Vec<u8>> = of_source(&msgs, "mixed")
        .iter()
        .map(|m| m.value.clone())
        .collect();
    assert_eq!(got.len(), want.len(), "one message per line");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g,
            w,
            "line {i}: got {:?}, want {:?}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
    d.stop();
}

/// Polls `logcatch-ctl offsets --json` until `pred` holds for the row of
/// `name`; returns it.
fn wait_row(
    config: &Path,
    name: &str,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    loop {
        let out = ctl_run(config, &["offsets", "--json"]);
        if out.code == Some(0) {
            let rows = out.json();
            if let Some(r) = offsets_row(&rows, name) {
                last = r.clone();
                if pred(r) {
                    return last;
                }
            }
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last row of {name}: {last:#}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A large file is truncated to half of what the daemon already read: it
/// keeps running, warns about the truncation, reads the file again from 0,
/// and delivers the lines written after.
#[test]
fn file_shrinks_while_being_read() {
    const LINES: u64 = 200_000; // 20 MB
    const NEW: u64 = 5_000_000;
    let mut env = Env::with_proxy();
    env.broker.create_topic(TOPIC, 1);
    let log = env.path("big.log");
    write_numbered(&log, 0, LINES);
    // The broker is away and the spool small, so the daemon stops reading
    // part way (backpressure): it is certainly mid-file at the truncation.
    env.broker.proxy_mut().down();
    let cfg = env
        .config(TOPIC)
        .source("app", &log)
        .spool("max_bytes", "2MiB")
        .spool("segment_bytes", "256KiB");
    let mut d = env.start(&cfg);
    let row = wait_row(
        d.config_path(),
        "app",
        "the daemon to read part of the file",
        WAIT,
        |r| r["offset"].as_u64().unwrap_or(0) > 1_000_000,
    );
    // Settle: the reader is blocked by backpressure now.
    thread::sleep(Duration::from_millis(500));
    let q = ctl_json(d.config_path(), &["queue", "--json"]);
    let row2 = wait_row(d.config_path(), "app", "offsets", WAIT, |_| true);
    let committed = row2["offset"].as_u64().unwrap();
    eprintln!(
        "shrink: committed offset {} then {committed} of {} bytes; paused_by_backpressure {}",
        row["offset"],
        LINES * LINE_LEN as u64,
        q["paused_by_backpressure"]
    );
    assert!(
        committed < LINES * LINE_LEN as u64 / 2,
        "the daemon read {committed} bytes despite a 2 MiB spool and no broker: the test cannot truncate mid-read"
    );
    let half_lines = committed / 2 / LINE_LEN as u64;
    let half = half_lines * LINE_LEN as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(half)
        .unwrap();
    eprintln!("shrink: truncated to {half} bytes ({half_lines} lines)");
    env.broker.proxy_mut().up();
    let warn = d.wait_log("truncated", 1, WAIT);
    eprintln!("shrink: {warn}");
    d.assert_running();
    // New lines only after the daemon has seen the truncation (before it,
    // appended bytes would simply look like more file).
    write_numbered(&log, NEW, NEW + 1000);
    let msgs = d.consume_until(&env.addr(), TOPIC, WAIT, |m| {
        has_all(m, NEW..NEW + 1000) && has_all(m, 0..committed / LINE_LEN as u64)
    });
    d.assert_running();
    let counts = number_counts(&msgs, "app");
    let new_bad: Vec<u64> = (NEW..NEW + 1000)
        .filter(|n| counts.get(n) != Some(&1))
        .collect();
    assert!(
        new_bad.is_empty(),
        "lines written after the truncation not delivered exactly once: {}",
        ranges(new_bad)
    );
    let spooled_missing: Vec<u64> = (0..committed / LINE_LEN as u64)
        .filter(|n| !counts.contains_key(n))
        .collect();
    assert!(
        spooled_missing.is_empty(),
        "lines that were in the spool before the truncation were lost: {}",
        ranges(spooled_missing)
    );
    let unexpected: Vec<u64> = counts
        .keys()
        .copied()
        .filter(|n| !(*n < LINES || (NEW..NEW + 1000).contains(n)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected numbers {}",
        ranges(unexpected)
    );
    let reread = (0..half_lines)
        .filter(|n| counts.get(n).copied().unwrap_or(0) >= 2)
        .count();
    eprintln!(
        "shrink: {} messages; {reread} of the {half_lines} lines kept by the truncation were read again from 0 (expected: all)",
        msgs.len()
    );
    assert_eq!(
        reread as u64, half_lines,
        "after the truncation the file was not read again from 0"
    );
    d.stop();
}

/// How many log lines mention `path` and `needle`.
fn count_log(d: &Daemon, path: &Path, needle: &str) -> usize {
    let p = path.to_str().unwrap();
    d.log()
        .lines()
        .filter(|l| l.contains(p) && l.contains(needle))
        .count()
}

/// Sources whose path is a directory or a FIFO: one clear error each (not
/// one per poll), shown by `logcatch-ctl offsets`; the other source is
/// delivered; a FIFO replaced by a regular file is then read.
#[test]
fn directory_and_fifo_sources() {
    let env = Env::new();
    let dir = env.path("adir");
    std::fs::create_dir(&dir).unwrap();
    let fifo = env.path("pipe");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success(), "mkfifo failed");
    let ok = env.path("ok.log");
    write_numbered(&ok, 0, 500);
    let cfg = env
        .config(TOPIC)
        .source("dir", &dir)
        .source("fifo", &fifo)
        .source("ok", &ok);
    let mut d = env.start(&cfg);
    let msgs = d.consume(&env.addr(), TOPIC, 500, WAIT);
    assert_exactly_once(&msgs, 0..500);
    // 2 s at a 50 ms poll: ~40 attempts on each bad path.
    thread::sleep(Duration::from_secs(2));
    d.assert_running();
    for (p, kind) in [(&dir, "a directory"), (&fifo, "a FIFO")] {
        let n = count_log(&d, p, "not a regular file");
        assert_eq!(
            n,
            1,
            "the error for {} ({kind}) should be logged once, found {n} time(s):\n{}",
            p.display(),
            d.log_lines(p.to_str().unwrap()).join("\n")
        );
        let line = d
            .log_lines(p.to_str().unwrap())
            .into_iter()
            .find(|l| l.contains("not a regular file"))
            .unwrap();
        assert!(line.contains(kind), "the error does not say {kind}: {line}");
        assert!(line.contains("ERROR"), "not logged as an error: {line}");
    }
    let rows = ctl_json(d.config_path(), &["offsets", "--json"]);
    for (name, p) in [("dir", &dir), ("fifo", &fifo)] {
        let r = offsets_row(&rows, name).unwrap_or_else(|| panic!("no row {name}: {rows:#}"));
        let state = r["state"].as_str().unwrap_or_default();
        assert!(
            state == "waiting_for_file" || state == "error",
            "state of {name}: {r:#}"
        );
        let err = r["last_error"].as_str().unwrap_or_else(|| {
            panic!("no last_error for {name}: {r:#}");
        });
        assert!(
            err.contains(p.to_str().unwrap()),
            "last_error of {name} does not name its path: {err}"
        );
    }
    let ok_row = offsets_row(&rows, "ok").unwrap();
    assert_eq!(ok_row["state"], "tailing", "{ok_row:#}");

    // Still delivering, and a FIFO replaced by a file is picked up.
    write_numbered(&ok, 500, 800);
    std::fs::remove_file(&fifo).unwrap();
    write_numbered(&fifo, 10_000, 10_200);
    let msgs = d.consume(&env.addr(), TOPIC, 1000, WAIT);
    assert_exactly_once_in(&msgs, &[0..800, 10_000..10_200]);
    let r = wait_row(
        d.config_path(),
        "fifo",
        "the replaced FIFO to be tailed",
        WAIT,
        |r| r["state"] == "tailing",
    );
    assert!(r["last_error"].is_null(), "fifo row after recovery: {r:#}");
    assert_eq!(
        count_log(&d, &fifo, "not a regular file"),
        1,
        "the FIFO's error was logged again"
    );
    d.stop();
}

/// A source whose file does not exist yet is waited for (no error), then
/// read from its first byte.
#[test]
fn missing_file_appears_later() {
    let env = Env::new();
    let late = env.path("late.log");
    let ok = env.path("ok.log");
    write_numbered(&ok, 0, 100);
    let cfg = env.config(TOPIC).source("late", &late).source("ok", &ok);
    let mut d = env.start(&cfg);
    let msgs = d.consume(&env.addr(), TOPIC, 100, WAIT);
    assert_exactly_once(&msgs, 0..100);
    let r = wait_row(d.config_path(), "late", "late to wait", WAIT, |r| {
        r["state"] == "waiting_for_file"
    });
    assert!(
        r["last_error"].is_null(),
        "a missing file is not an error: {r:#}"
    );
    thread::sleep(Duration::from_millis(500));
    let errors = d
        .log_lines(late.to_str().unwrap())
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect::<Vec<_>>();
    assert!(errors.is_empty(), "errors for a missing file: {errors:?}");

    // Created and written in one go: every line from offset 0.
    write_numbered(&late, 1000, 1300);
    let msgs = d.consume(&env.addr(), TOPIC, 400, WAIT);
    assert_exactly_once_in(&msgs, &[0..100, 1000..1300]);
    let late_msgs = of_source(&msgs, "late");
    assert_eq!(
        late_msgs[0].header("offset").as_deref(),
        Some("0"),
        "the late file was not read from its start"
    );
    d.stop();
}

/// One decoded frame of a segment file.
#[derive(Debug, Clone)]
struct FrameInfo {
    segment: u64,
    at: u64,
    len: u64,
    numbers: Vec<u64>,
}

/// Every frame of every segment in `spool`, decoded with the daemon's own
/// frame code.
fn frames_of(spool: &Path) -> Vec<FrameInfo> {
    let mut out = Vec::new();
    for id in logcatch::spool::list_segments(spool).unwrap() {
        let bytes = std::fs::read(logcatch::spool::segment_path(spool, id)).unwrap();
        let mut at = 0usize;
        while at < bytes.len() {
            let (batch, n) = logcatch::spool::decode_frame(&bytes[at..])
                .unwrap_or_else(|e| panic!("segment {id} at {at}: {e:?}"));
            out.push(FrameInfo {
                segment: id,
                at: at as u64,
                len: n,
                numbers: batch
                    .iter_lines()
                    .map(|(_, l)| number_of(l).expect("numbered line"))
                    .collect(),
            });
            at += n as usize;
        }
    }
    out
}

enum Damage {
    /// Flip bytes in the middle of a frame's payload.
    Flip,
    /// Cut the segment in the middle of a frame.
    Cut,
}

/// Fills the spool while the broker is away, stops, damages a segment in
/// the middle of the spool, restarts with the broker back.
fn spool_damage(damage: Damage) {
    const ROUNDS: u64 = 30;
    const PER: u64 = 150;
    const TOTAL: u64 = ROUNDS * PER;
    let mut env = Env::with_proxy();
    env.broker.create_topic(TOPIC, 1);
    env.broker.proxy_mut().down();
    let log = env.path("app.log");
    std::fs::write(&log, b"").unwrap();
    let cfg = env
        .config(TOPIC)
        .source("app", &log)
        .spool("segment_bytes", "64KiB")
        .kafka("shutdown_ack_timeout", "1s");
    let mut d = env.start(&cfg);
    // Many small tailer reads: many frames, several segments.
    for r in 0..ROUNDS {
        write_numbered(&log, r * PER, (r + 1) * PER);
        thread::sleep(Duration::from_millis(120));
    }
    let size = std::fs::metadata(&log).unwrap().len();
    wait_row(d.config_path(), "app", "every line spooled", WAIT, |r| {
        r["offset"].as_u64() == Some(size)
    });
    d.stop();

    let spool = env.path("data/spool");
    let frames = frames_of(&spool);
    let mut spooled: Vec<u64> = frames.iter().flat_map(|f| f.numbers.clone()).collect();
    spooled.sort_unstable();
    assert_eq!(
        spooled,
        (0..TOTAL).collect::<Vec<_>>(),
        "the spool does not hold every line exactly once before the damage"
    );
    let mut segs: Vec<u64> = frames.iter().map(|f| f.segment).collect();
    segs.dedup();
    assert!(
        segs.len() >= 3,
        "want at least 3 segments with frames, have {segs:?}"
    );
    // A segment in the middle of the spool (neither the oldest nor the
    // newest, which recovery would treat as a torn tail).
    let seg = segs[segs.len() / 2];
    let in_seg: Vec<&FrameInfo> = frames.iter().filter(|f| f.segment == seg).collect();
    let seg_path = logcatch::spool::segment_path(&spool, seg);
    let seg_len = std::fs::metadata(&seg_path).unwrap().len();
    let mid = seg_len / 2;
    let hit = in_seg
        .iter()
        .position(|f| f.at <= mid && mid < f.at + f.len)
        .unwrap();
    let f = in_seg[hit];
    let target = f.at + 8 + (f.len - 8) / 2;
    let lost: Vec<u64> = match damage {
        Damage::Flip => {
            let mut bytes = std::fs::read(&seg_path).unwrap();
            for b in &mut bytes[target as usize..target as usize + 4] {
                *b ^= 0xff;
            }
            std::fs::write(&seg_path, &bytes).unwrap();
            eprintln!(
                "spool damage: flipped 4 bytes at {target} of segment {seg} ({seg_len} bytes), in the frame at {} ({} bytes, {} lines)",
                f.at,
                f.len,
                f.numbers.len()
            );
            f.numbers.clone()
        }
        Damage::Cut => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&seg_path)
                .unwrap()
                .set_len(target)
                .unwrap();
            let lost: Vec<u64> = in_seg[hit..]
                .iter()
                .flat_map(|f| f.numbers.clone())
                .collect();
            eprintln!(
                "spool damage: cut segment {seg} from {seg_len} to {target} bytes, in the frame at {} ({} frame(s), {} lines after the cut)",
                f.at,
                in_seg.len() - hit,
                lost.len()
            );
            lost
        }
    };
    let damaged_frames = match damage {
        Damage::Flip => 1,
        Damage::Cut => in_seg.len() - hit,
    };
    let mut lost_sorted = lost.clone();
    lost_sorted.sort_unstable();

    env.broker.proxy_mut().up();
    d.restart();
    let expect: Vec<u64> = (0..TOTAL)
        .filter(|n| lost_sorted.binary_search(n).is_err())
        .collect();
    let msgs = d.consume(&env.addr(), TOPIC, expect.len(), WAIT);
    d.assert_running();
    let line = d.wait_log("damaged spool frame", 1, WAIT);
    eprintln!("spool damage: {line}");
    let q = ctl_json(d.config_path(), &["queue", "--json"]);
    eprintln!(
        "spool damage: queue damaged_frames {} damaged_bytes {}",
        q["damaged_frames"], q["damaged_bytes"]
    );
    assert!(
        q["damaged_frames"].as_u64().unwrap_or(0) >= 1,
        "logcatch-ctl queue does not count the damaged frame: {q:#}"
    );

    let counts = number_counts(&msgs, "app");
    let delivered = counts.len() as u64;
    let dups: Vec<u64> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    let missing: Vec<u64> = (0..TOTAL).filter(|n| !counts.contains_key(n)).collect();
    // One frame is one tailer read of at most read_buffer (256 KiB).
    let per_frame = (256 * 1024 / LINE_LEN as u64) + 1;
    let bound = per_frame * damaged_frames as u64;
    eprintln!(
        "spool damage: written {TOTAL}, delivered {delivered}, missing {} (the damaged frame(s) held {}), duplicated {}; bound on the loss {bound}",
        missing.len(),
        lost.len(),
        dups.len()
    );
    assert!(dups.is_empty(), "duplicated: {}", ranges(dups));
    assert!(
        delivered >= TOTAL.saturating_sub(bound),
        "lost {} lines, more than {damaged_frames} frame(s) can hold ({bound})",
        TOTAL - delivered
    );
    assert_eq!(
        missing,
        lost_sorted,
        "the lines missing are not exactly those of the damaged frame(s): missing {}, damaged {}",
        ranges(missing.clone()),
        ranges(lost_sorted.clone())
    );
    d.stop();
}

/// Bytes flipped in the middle of a spool segment: that frame is skipped
/// and counted, every other line is delivered.
#[test]
fn spool_segment_with_flipped_bytes() {
    spool_damage(Damage::Flip);
}

/// A spool segment cut short in the middle: the rest of that segment is
/// skipped and counted, every other line is delivered.
#[test]
fn spool_segment_cut_short() {
    spool_damage(Damage::Cut);
}

/// Runs `logcatch --config <path>` expecting it to exit by itself.
fn run_expecting_exit(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(Daemon::bin())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logcatch");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("logcatch kept running with config {}", config.display());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A missing config and a broken one stop the daemon at start with a
/// message naming the file (and the line); a config deleted while running
/// leaves it running on the last good one, logged at most once.
#[test]
fn missing_and_broken_config() {
    let env = Env::new();
    let missing = env.path("missing.yaml");
    let (code, text) = run_expecting_exit(&missing);
    eprintln!("missing config: exit {code:?}: {text}");
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {text}");
    assert!(
        text.contains(missing.to_str().unwrap()),
        "the message does not name {}: {text}",
        missing.display()
    );

    let log = env.path("app.log");
    let good = env.config(TOPIC).source("app", &log).render();
    let broken_path = env.path("broken.yaml");
    // An unknown key under `tailer:` (typo), on a known line.
    let broken = format!("{good}tailer:\n  poll_intervall: 50ms\n");
    let broken = broken.replacen("tailer:\n  poll_interval: 50ms\n", "", 1);
    let bad_line = broken
        .lines()
        .position(|l| l.contains("poll_intervall"))
        .unwrap()
        + 1;
    std::fs::write(&broken_path, &broken).unwrap();
    let (code, text) = run_expecting_exit(&broken_path);
    eprintln!("broken config (line {bad_line}): exit {code:?}: {text}");
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {text}");
    let p = broken_path.to_str().unwrap();
    assert!(text.contains(p), "the message does not name {p}: {text}");
    assert!(
        text.contains("poll_intervall"),
        "the message does not name the bad key: {text}"
    );
    assert!(
        text.contains(&format!("{p}:{bad_line}")),
        "the message does not name {p}:{bad_line}: {text}"
    );
    assert!(
        !env.path("data").exists(),
        "a rejected config still created data_dir"
    );

    // Deleted while running: keeps running and delivering.
    write_numbered(&log, 0, 300);
    let cfg = env.config(TOPIC).source("app", &log);
    let mut d = env.start(&cfg);
    let msgs = d.consume(&env.addr(), TOPIC, 300, WAIT);
    assert_exactly_once(&msgs, 0..300);
    let config = d.config_path().to_path_buf();
    std::fs::remove_file(&config).unwrap();
    // Longer than two content polls (2 s each).
    thread::sleep(Duration::from_millis(5000));
    d.assert_running();
    write_numbered(&log, 300, 600);
    let msgs = d.consume(&env.addr(), TOPIC, 600, WAIT);
    assert_exactly_once(&msgs, 0..600);
    let mentions = d.log_lines(config.to_str().unwrap());
    let complaints: Vec<&String> = mentions
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    eprintln!(
        "config deleted while running: {} warning/error line(s):\n{}",
        complaints.len(),
        complaints
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        complaints.len() <= 1,
        "a deleted config was complained about {} times (once per poll?)",
        complaints.len()
    );
    // Put back unchanged: still one tailer, nothing read twice.
    std::fs::write(&config, cfg.render()).unwrap();
    write_numbered(&log, 600, 700);
    let msgs = d.consume(&env.addr(), TOPIC, 700, WAIT);
    assert_exactly_once(&msgs, 0..700);
    d.stop();
}
