//! End-to-end benchmark of the real `logcatch` binary against a local
//! Apache Kafka broker (one KRaft node from `scripts/kafka.sh`; `--broker
//! tansu` for the small in-memory broker instead), with the durable
//! defaults (fsync per group commit, acks=all, idempotence).
//!
//! `cargo bench --bench e2e -- [--lines N[,N...]] [--runs R] [--line-bytes B]
//!  [--many-files] [--compression none|lz4] [--client native|librdkafka]
//!  [--broker kafka|tansu] [--tls] [--json PATH] [--perf PATH]`
//!
//! `--tls`: W1 through a TLS listener (logcatch's `kafka.tls` with the
//! test CA; a broker from `tests/common/secure.rs`); the plain producer's
//! ceiling and the counting consumer stay on the plaintext listener, so
//! the figures that change are logcatch's own (CPU per line, RSS).
//!
//! `scripts/bench-e2e.sh` runs the whole set: W1 at 0.5 M, 2 M and 8 M lines,
//! three runs each, then the many-files workload.
//!
//! W1 ("catch-up"): one file of N unique lines is written first; the
//! collector starts, reads it from the beginning and delivers it while a
//! consumer counts the messages. Printed: lines/s and MB/s end to end, the
//! collector's CPU-seconds per million lines (utime+stime from /proc), its
//! peak RSS (VmHWM), and the ratio to what a plain rdkafka producer gets
//! through the same broker (the ceiling, measured in the same run). Both
//! are also timed to the broker's last acknowledgement ("accepted"), which
//! leaves out how fast the broker serves the counting consumer. Each W1 run
//! gets a broker of its own, so that no run reads or appends to another's
//! log. Kafka's JVM runs with G1 and the full JIT here, and a 1 GiB heap
//! (`LOGCATCH_KAFKA_JVM_OPTS` and `LOGCATCH_KAFKA_HEAP` override them),
//! not the tests' fast-start settings. With several
//! sizes, a table at the end shows how CPU per line and RSS grow, and the
//! marginal cost: CPU-seconds per further million lines between the
//! smallest and the largest size, which leaves out the one-off start-up.
//!
//! `--perf PATH` records the daemon with `perf record -e cpu-clock
//! --call-graph dwarf` during each W1 run (PATH, or PATH-LINES-RUN with
//! several runs); read it with `perf report -i PATH --no-children --sort
//! comm,dso,sym`.
//!
//! Many files (`--many-files`): 1,000 files tailed, 10 of them written at
//! 1,000 lines/s in total; printed: idle and active CPU (% of one core),
//! RSS, and p50/p99 latency from a line's write to its arrival in Kafka.

// Borrows the broker from the integration tests' helpers; the rest of
// them serves the tests (and is checked for dead code there), not this bench.
#[allow(dead_code, unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

struct Args {
    /// W1 sizes, each run `runs` times.
    sizes: Vec<u64>,
    runs: u32,
    line_bytes: usize,
    many_files: bool,
    json: PathBuf,
    /// Kafka compression for both logcatch and the plain producer.
    compression: String,
    /// logcatch's `kafka.client`.
    client: String,
    /// Record the daemon with `perf` during W1 into this file.
    perf: Option<PathBuf>,
    /// Which broker: Apache Kafka, or tansu.
    broker: BrokerKind,
    /// logcatch reaches the broker over TLS (Apache Kafka only).
    tls: bool,
}

/// Where W1's logcatch sends: the broker, and how logcatch reaches it.
struct Target {
    /// The plaintext address: the ceiling's producer and the consumer.
    addr: String,
    /// `kafka.brokers` for logcatch.
    brokers: String,
    /// Extra `kafka:` lines of logcatch's config.
    kafka_extra: String,
    /// The broker's kind, as the figures name it.
    kind: String,
    /// Keeps the broker up while W1 runs.
    _broker: Box<dyn std::any::Any>,
}

impl Target {
    fn start(a: &Args) -> Target {
        if a.tls {
            assert!(a.broker == BrokerKind::Kafka, "--tls needs Apache Kafka");
            let b = common::secure::SecureBroker::start();
            return Target {
                addr: b.addr(),
                brokers: b.tls_addr(),
                kafka_extra: format!("  tls: {{ca_file: \"{}\"}}\n", b.pki().ca.display()),
                kind: "kafka+tls".into(),
                _broker: Box::new(b),
            };
        }
        let b = a.broker.start();
        Target {
            addr: b.addr(),
            brokers: b.addr(),
            kafka_extra: String::new(),
            kind: b.kind().into(),
            _broker: Box::new(b),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum BrokerKind {
    Kafka,
    Tansu,
}

impl BrokerKind {
    fn start(self) -> common::Broker {
        match self {
            BrokerKind::Kafka => common::Broker::start(),
            BrokerKind::Tansu => common::Broker::tansu(),
        }
    }
}

fn args() -> Args {
    let mut a = Args {
        sizes: vec![2_000_000],
        runs: 1,
        line_bytes: 146,
        many_files: false,
        json: PathBuf::from("target/bench-e2e.json"),
        compression: "lz4".into(),
        client: "native".into(),
        perf: None,
        broker: BrokerKind::Kafka,
        tls: false,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--lines" => {
                i += 1;
                a.sizes = v[i]
                    .split(',')
                    .map(|n| n.replace('_', "").parse().expect("--lines N[,N...]"))
                    .collect();
            }
            "--runs" => {
                i += 1;
                a.runs = v[i].parse::<u32>().expect("--runs R").max(1);
            }
            "--perf" => {
                i += 1;
                a.perf = Some(PathBuf::from(&v[i]));
            }
            "--line-bytes" => {
                i += 1;
                a.line_bytes = v[i].parse().expect("--line-bytes B");
            }
            "--many-files" => a.many_files = true,
            "--tls" => a.tls = true,
            "--client" => {
                i += 1;
                a.client = v[i].clone();
            }
            "--compression" => {
                i += 1;
                a.compression = v[i].clone();
            }
            "--broker" => {
                i += 1;
                a.broker = match v[i].as_str() {
                    "kafka" => BrokerKind::Kafka,
                    "tansu" => BrokerKind::Tansu,
                    other => panic!("--broker kafka|tansu, not {other}"),
                };
            }
            "--json" => {
                i += 1;
                a.json = PathBuf::from(&v[i]);
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    a
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) of a process so far.
fn cpu_secs(pid: u32, tck: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of /proc/PID/stat: indexes 11, 12 here.
    (ticks(11) + ticks(12)) / tck
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn consumer(addr: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", format!("bench-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        // librdkafka waits this long (1 s by default) before fetching again
        // once a fetch filled its queue past `queued.min.messages`, which
        // one fetch of well-compressed lz4 batches does: counting would
        // measure that pause, not the broker.
        .set("fetch.queue.backoff.ms", "10")
        .set("log_level", "3")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let parts: Vec<i32> = md
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if !parts.is_empty() && md.topics().iter().all(|t| t.error().is_none()) {
                let mut tpl = TopicPartitionList::new();
                for p in parts {
                    tpl.add_partition_offset(topic, p, Offset::Beginning)
                        .expect("partition");
                }
                c.assign(&tpl).expect("assign");
                return c;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Counts `n` messages; returns the instant the last one arrived.
fn count(c: &BaseConsumer, n: u64, timeout: Duration) -> (u64, Instant) {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    let mut last = Instant::now();
    while got < n && Instant::now() < deadline {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            got += 1;
            last = Instant::now();
        }
    }
    (got, last)
}

fn line_text(i: u64, bytes: usize) -> Vec<u8> {
    let mut l = format!("2026-11-25T10:00:00.000Z INFO w1 request_id={i:012} ").into_bytes();
    l.resize(bytes, b'x');
    l.push(b'\n');
    l
}

fn start_daemon(dir: &Path, config: &str) -> Child {
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, config).expect("config");
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
    Command::new(env!("CARGO_BIN_EXE_logcatch"))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("logcatch")
}

fn stop(child: &mut Child) {
    stop_with(child, "-TERM");
}

fn stop_with(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// `perf record` of process `pid` into `out`, until sent SIGINT.
fn perf_record(pid: u32, out: &Path) -> Child {
    let child = Command::new("perf")
        .args([
            "record",
            "-F",
            "999",
            "-e",
            "cpu-clock",
            "--call-graph",
            "dwarf,16384",
        ])
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf (Debian's linux-perf) is needed for --perf");
    eprintln!(
        "recording logcatch (pid {pid}) with perf into {}",
        out.display()
    );
    child
}

/// Plain rdkafka producer, same durability settings: the broker's ceiling.
/// Returns lines/s consumed (end to end) and lines/s accepted (all
/// acknowledged by the broker).
fn ceiling(addr: &str, n: u64, bytes: usize, compression: &str) -> (f64, f64) {
    common::create_topic(addr, "ceiling", 1);
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let c = consumer(addr, "ceiling");
    let start = Instant::now();
    let counter = std::thread::scope(|s| {
        let h = s.spawn(|| count(&c, n, Duration::from_secs(600)));
        for i in 0..n {
            let line = line_text(i, bytes);
            let mut rec = BaseRecord::to("ceiling").key("w1").payload(&line[..bytes]);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        p.poll(Duration::from_millis(1));
                    }
                }
            }
            if i % 1024 == 0 {
                p.poll(Duration::ZERO);
            }
        }
        let _ = p.flush(Duration::from_secs(120));
        let acked = Instant::now();
        (h.join().expect("counter"), acked)
    });
    let ((got, last), acked) = counter;
    assert_eq!(got, n, "ceiling: consumed {got} of {n}");
    (
        n as f64 / (last - start).as_secs_f64(),
        n as f64 / (acked - start).as_secs_f64(),
    )
}

/// When the daemon's `delivered` count (lines Kafka acknowledged, from
/// `logcatch-ctl queue --json`) first reaches `n`.
fn acked_at(config: &Path, n: u64, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let out = Command::new(env!("CARGO_BIN_EXE_logcatch-ctl"))
            .arg("--config")
            .arg(config)
            .args(["queue", "--json"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let delivered = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["delivered"].as_u64())
            .unwrap_or(0);
        if delivered >= n {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// One W1 run of `lines` lines; `perf`: record the daemon into this file.
/// Long because it is one measurement read top to bottom: the input, the
/// ceiling, the daemon's run, the figures.
fn w1(target: &Target, a: &Args, lines: u64, perf: Option<&Path>, tck: f64) -> serde_json::Value {
    let addr = target.addr.clone();
    let dir = tempfile::Builder::new()
        .prefix("bench-w1-")
        .tempdir()
        .expect("tempdir");
    let file = dir.path().join("w1.log");
    {
        let mut f = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&file).expect("w1.log"),
        );
        for i in 0..lines {
            f.write_all(&line_text(i, a.line_bytes)).expect("write");
        }
        f.flush().expect("flush");
    }
    let mb = (lines * (a.line_bytes as u64 + 1)) as f64 / 1e6;
    eprintln!(
        "W1: {} lines of {} bytes ({mb:.0} MB); measuring the plain producer ceiling…",
        lines, a.line_bytes
    );
    let (ceiling, ceiling_accepted) = ceiling(&addr, lines, a.line_bytes, &a.compression);
    eprintln!(
        "ceiling: {ceiling:.0} lines/s consumed, {ceiling_accepted:.0} lines/s accepted; starting logcatch"
    );

    let config = format!(
        "data_dir: {}\nkafka:\n  brokers: {}\n  topic: w1\n  compression: {}\n  client: {}\n{}configpath:\n  w1: {}\n",
        dir.path().join("data").display(),
        target.brokers,
        a.compression,
        a.client,
        target.kafka_extra,
        file.display()
    );
    let start = Instant::now();
    let mut daemon = start_daemon(dir.path(), &config);
    let mut recorder = perf.map(|p| perf_record(daemon.id(), p));
    let c = consumer(&addr, "w1");
    let cfg = dir.path().join("config.yaml");
    let (acked, (got, last)) = std::thread::scope(|s| {
        let acked = s.spawn(|| acked_at(&cfg, lines, Duration::from_secs(1800)));
        let counted = count(&c, lines, Duration::from_secs(1800));
        (acked.join().ok().flatten(), counted)
    });
    let pid = daemon.id();
    let cpu = cpu_secs(pid, tck);
    let hwm_kib = status_kib(pid, "VmHWM:");
    if let Some(r) = recorder.as_mut() {
        stop_with(r, "-INT");
    }
    stop(&mut daemon);
    assert_eq!(got, lines, "W1: consumed {got} of {}", lines);
    let secs = (last - start).as_secs_f64();
    let lps = lines as f64 / secs;
    let accepted = acked.map_or(0.0, |t| lines as f64 / (t - start).as_secs_f64());
    let r = serde_json::json!({
        "workload": "W1",
        "broker": target.kind,
        "lines": lines,
        "line_bytes": a.line_bytes,
        "compression": a.compression,
        "client": a.client,
        "seconds": secs,
        "lines_per_sec": lps,
        "mb_per_sec": mb / secs,
        "cpu_seconds": cpu,
        "cpu_seconds_per_million_lines": cpu / (lines as f64 / 1e6),
        "peak_rss_mib": hwm_kib as f64 / 1024.0,
        "ceiling_lines_per_sec": ceiling,
        "ratio_to_ceiling": lps / ceiling,
        "accepted_lines_per_sec": accepted,
        "ceiling_accepted_lines_per_sec": ceiling_accepted,
        "accepted_ratio_to_ceiling": accepted / ceiling_accepted,
    });
    println!(
        "W1 {} lines ({}, {}, {}): {:.0} lines/s, {:.1} MB/s, {:.3} CPU-s per million lines, peak RSS {:.1} MiB, {:.2}x the plain producer ({:.0} lines/s)",
        lines, a.compression, a.client, target.kind, lps, mb / secs, cpu / (lines as f64 / 1e6), hwm_kib as f64 / 1024.0, lps / ceiling, ceiling
    );
    println!(
        "W1 {} lines ({}): accepted by the broker (all acknowledged) at {:.0} lines/s, {:.2}x the plain producer's {:.0} lines/s",
        lines, a.compression, accepted, accepted / ceiling_accepted, ceiling_accepted
    );
    r
}

fn many_files(broker: &common::Broker, tck: f64) -> serde_json::Value {
    let addr = broker.addr();
    let dir = tempfile::Builder::new()
        .prefix("bench-many-")
        .tempdir()
        .expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let mut config = format!(
        "data_dir: {}\nkafka:\n  brokers: {addr}\n  topic: many\nconfigpath:\n",
        dir.path().join("data").display()
    );
    for i in 0..1000 {
        let p = logs.join(format!("f{i:04}.log"));
        std::fs::write(&p, b"").expect("file");
        config.push_str(&format!("  f{i:04}: {}\n", p.display()));
    }
    let mut daemon = start_daemon(dir.path(), &config);
    let pid = daemon.id();
    std::thread::sleep(Duration::from_secs(3));
    let idle_secs = 10.0;
    let c0 = cpu_secs(pid, tck);
    std::thread::sleep(Duration::from_secs_f64(idle_secs));
    let idle_cpu = (cpu_secs(pid, tck) - c0) / idle_secs * 100.0;
    eprintln!(
        "many files: idle CPU {idle_cpu:.2}% of a core; writing 1000 lines/s to 10 files for 20 s"
    );

    let total = 20_000u64;
    let c = consumer_when_ready(&addr, "many");
    let c1 = cpu_secs(pid, tck);
    let active_start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut files: Vec<std::fs::File> = (0..10)
            .map(|i| {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(logs.join(format!("f{i:04}.log")))
                    .expect("open")
            })
            .collect();
        let start = Instant::now();
        for n in 0..total {
            let due = start + Duration::from_micros(n * 1000);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let line = format!("{} line {n} of the many-files workload\n", now_ns());
            files[(n % 10) as usize]
                .write_all(line.as_bytes())
                .expect("write");
        }
    });
    let mut latencies = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let arrived = now_ns();
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            if let Some(sent) = v
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<u128>().ok())
            {
                latencies.push((arrived.saturating_sub(sent)) as f64 / 1e6);
            }
        }
    }
    let _ = writer.join();
    let active_secs = active_start.elapsed().as_secs_f64();
    let active_cpu = (cpu_secs(pid, tck) - c1) / active_secs * 100.0;
    let rss = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let hwm = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    stop(&mut daemon);
    assert_eq!(
        latencies.len() as u64,
        total,
        "many files: consumed {} of {total}",
        latencies.len()
    );
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let (p50, p99) = (pct(0.50), pct(0.99));
    println!(
        "many files (1000 tailed, 10 active at 1000 lines/s): idle CPU {idle_cpu:.2}%, active CPU {active_cpu:.2}% of a core, RSS {rss:.1} MiB (peak {hwm:.1}), latency p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    serde_json::json!({
        "workload": "many-files",
        "broker": broker.kind(),
        "files": 1000,
        "active_files": 10,
        "lines_per_sec": 1000,
        "idle_cpu_percent": idle_cpu,
        "active_cpu_percent": active_cpu,
        "rss_mib": rss,
        "peak_rss_mib": hwm,
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
    })
}

fn consumer_when_ready(addr: &str, topic: &str) -> BaseConsumer {
    // The daemon creates the topic on its first line: write nothing until
    // the consumer is assigned, so create it here.
    common::create_topic(addr, topic, 1);
    consumer(addr, topic)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// How W1's cost grows with its size: one row per size (medians of the
/// runs), then the marginal CPU per further million lines.
fn print_scaling(results: &[serde_json::Value]) {
    let mut sizes: Vec<u64> = results.iter().filter_map(|r| r["lines"].as_u64()).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.len() < 2 && results.len() < 2 {
        return;
    }
    let field = |n: u64, k: &str| -> Vec<f64> {
        results
            .iter()
            .filter(|r| r["lines"].as_u64() == Some(n))
            .filter_map(|r| r[k].as_f64())
            .collect()
    };
    println!();
    println!("W1 scaling (median of runs; min..max in brackets)");
    println!(
        "{:>10} {:>5} {:>24} {:>20} {:>22} {:>22}",
        "lines", "runs", "lines/s", "x plain producer", "CPU-s per M lines", "peak RSS MiB"
    );
    let span = |v: &[f64], prec: usize| -> String {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{:.prec$} [{lo:.prec$}..{hi:.prec$}]", median(v.to_vec()))
    };
    for &n in &sizes {
        let runs = field(n, "lines_per_sec").len();
        println!(
            "{n:>10} {runs:>5} {:>24} {:>20} {:>22} {:>22}",
            span(&field(n, "lines_per_sec"), 0),
            span(&field(n, "ratio_to_ceiling"), 2),
            span(&field(n, "cpu_seconds_per_million_lines"), 3),
            span(&field(n, "peak_rss_mib"), 1),
        );
    }
    if let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) {
        if large > small {
            let cpu_small = median(field(small, "cpu_seconds"));
            let cpu_large = median(field(large, "cpu_seconds"));
            println!(
                "marginal cost from {small} to {large} lines: {:.3} CPU-s per further million lines",
                (cpu_large - cpu_small) / ((large - small) as f64 / 1e6)
            );
        }
    }
}

fn main() {
    let a = args();
    if a.broker == BrokerKind::Kafka {
        // A broker tuned to serve, not to start fast (set before any
        // thread starts: scripts/kafka.sh reads them).
        for (key, value) in [
            ("LOGCATCH_KAFKA_JVM_OPTS", "-XX:+UseG1GC -XX:-UsePerfData"),
            ("LOGCATCH_KAFKA_HEAP", "-Xms1g -Xmx1g"),
        ] {
            if std::env::var_os(key).is_none() {
                std::env::set_var(key, value);
            }
        }
    }
    let tck = clk_tck();
    let mut results = Vec::new();
    let several = a.sizes.len() > 1 || a.runs > 1;
    for &lines in &a.sizes {
        for run in 1..=a.runs {
            // A broker per run (see the module's doc).
            let target = Target::start(&a);
            let perf = a.perf.as_ref().map(|p| {
                if several {
                    PathBuf::from(format!("{}-{lines}-{run}", p.display()))
                } else {
                    p.clone()
                }
            });
            results.push(w1(&target, &a, lines, perf.as_deref(), tck));
        }
    }
    print_scaling(&results);
    if a.many_files {
        let broker = a.broker.start();
        results.push(many_files(&broker, tck));
    }
    let out = serde_json::json!({ "results": results });
    if let Some(parent) = a.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(
        &a.json,
        serde_json::to_string_pretty(&out).unwrap_or_default(),
    ) {
        Ok(()) => eprintln!("figures written to {}", a.json.display()),
        Err(e) => eprintln!("cannot write {}: {e}", a.json.display()),
    }
}
