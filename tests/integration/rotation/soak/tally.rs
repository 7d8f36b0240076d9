//! What the rotation soak delivered: [`Tracker`] follows the topic while
//! the faults run (per file, which lines arrived: the guards of the
//! schedule ask it), and [`read_topic`] reads the whole topic once at the
//! end and checks every message against where its line was written
//! ([`Logrotate::placement`]): exact bytes, the `path` and `offset`
//! headers, file order within each generation. Messages are told apart by
//! their key (the source name); only counts are kept, so a long soak's
//! millions of lines cost little memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use crate::common::logrotate::Logrotate;
use crate::common::*;

/// A consumer assigned to every partition of `topic` (which must exist)
/// from offset 0.
fn consumer_from_start(addr: &str, topic: &str, purpose: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set(
            "group.id",
            format!("rot-soak-{purpose}-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .set("log_level", "0")
        .create()
        .expect("consumer");
    let parts = current_partitions(&consumer, topic);
    assert!(!parts.is_empty(), "topic {topic} has no partitions");
    assign_from_start(&consumer, topic, &parts);
    consumer
}

/// Whether a message is new: offsets only grow within a partition, so one
/// fetched again after a reconnect is recognised without a set of them.
fn first_time(last: &mut HashMap<i32, i64>, partition: i32, offset: i64) -> bool {
    let l = last.entry(partition).or_insert(-1);
    if offset <= *l {
        return false;
    }
    *l = offset;
    true
}

/// The index of the source whose name is the message's key.
fn source_of(key: Option<&[u8]>, sources: &[&str]) -> Option<usize> {
    let key = key?;
    sources.iter().position(|s| s.as_bytes() == key)
}

/// One file's lines as the tracker saw them arrive.
#[derive(Default)]
struct Arrived {
    /// Copies per line number.
    counts: Vec<u16>,
    /// Every line below it arrived.
    watermark: u64,
    /// When the watermark last moved (or the tracker started).
    moved: Option<Instant>,
    /// The highest line number that arrived.
    max: Option<u64>,
}

/// Follows the topic from offset 0 on a thread of its own.
pub(super) struct Tracker {
    arrived: Arc<Mutex<Vec<Arrived>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Tracker {
    pub(super) fn start(addr: &str, topic: &str, sources: &[&'static str]) -> Tracker {
        let consumer = consumer_from_start(addr, topic, "tracker");
        let arrived: Arc<Mutex<Vec<Arrived>>> = Arc::new(Mutex::new(
            sources
                .iter()
                .map(|_| Arrived {
                    moved: Some(Instant::now()),
                    ..Arrived::default()
                })
                .collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s, sources) = (arrived.clone(), stop.clone(), sources.to_vec());
        let handle = thread::Builder::new()
            .name("rot-tracker".into())
            .spawn(move || {
                let mut last = HashMap::new();
                while !s.load(Ordering::SeqCst) {
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    if !first_time(&mut last, m.partition(), m.offset()) {
                        continue;
                    }
                    let (Some(i), Some(n)) = (
                        source_of(m.key(), &sources),
                        m.payload().and_then(number_of),
                    ) else {
                        continue; // stray: the final read reports it
                    };
                    let mut all = a.lock().unwrap();
                    let f = &mut all[i];
                    if f.counts.len() <= n as usize {
                        f.counts.resize(n as usize + 1, 0);
                    }
                    f.counts[n as usize] = f.counts[n as usize].saturating_add(1);
                    f.max = f.max.max(Some(n));
                    while f.counts.get(f.watermark as usize).is_some_and(|&c| c > 0) {
                        f.watermark += 1;
                        f.moved = Some(Instant::now());
                    }
                }
            })
            .unwrap();
        Tracker {
            arrived,
            stop,
            handle: Some(handle),
        }
    }

    /// Every line of file `i` numbered below it arrived.
    pub(super) fn watermark(&self, i: usize) -> u64 {
        self.arrived.lock().unwrap()[i].watermark
    }

    /// How long the watermark of file `i` has not moved.
    pub(super) fn stuck_for(&self, i: usize) -> Duration {
        self.arrived.lock().unwrap()[i]
            .moved
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Some line of file `i` numbered `from` or higher arrived.
    pub(super) fn any_from(&self, i: usize, from: u64) -> bool {
        self.arrived.lock().unwrap()[i]
            .max
            .is_some_and(|m| m >= from)
    }

    pub(super) fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One file's delivery, from the final read.
#[derive(Default)]
pub(super) struct Delivery {
    pub(super) written: u64,
    /// Messages that are lines of this file (copies counted).
    pub(super) delivered: u64,
    pub(super) lost: Vec<u64>,
    /// Extra copies, and the numbers that had them.
    pub(super) duplicated: u64,
    pub(super) dup_numbers: Vec<u64>,
    /// Lines with other bytes, a wrong `path` or `offset` header, or out of
    /// order within their file: how many, and the first few.
    pub(super) wrong: u64,
    pub(super) wrong_examples: Vec<String>,
}

/// What one read of the whole topic found.
pub(super) struct TopicRead {
    pub(super) files: Vec<Delivery>,
    /// Messages that are no line any file had.
    pub(super) stray: Vec<String>,
    pub(super) messages: u64,
}

/// Checks one message of file `lr` (line `n`) and updates `d`; `last`
/// holds, per generation, the last line number seen from it.
fn check_message(
    lr: &Logrotate,
    n: u64,
    m: &Msg,
    d: &mut Delivery,
    last: &mut BTreeMap<usize, u64>,
) {
    let Some((generation, offset)) = lr.placement(n) else {
        return;
    };
    let want_offset = offset.to_string();
    let path = lr.path().to_str().unwrap();
    let mut why = Vec::new();
    if m.value != numbered_line(n).as_bytes() {
        why.push(format!("bytes {:?}", String::from_utf8_lossy(&m.value)));
    }
    if m.header("path").as_deref() != Some(path) {
        why.push(format!("path {:?}", m.header("path")));
    }
    if m.header("offset").as_deref() != Some(want_offset.as_str()) {
        why.push(format!(
            "offset {:?} (want {want_offset})",
            m.header("offset")
        ));
    }
    if let Some(prev) = last.insert(generation, n).filter(|&prev| prev > n) {
        why.push(format!("after line {prev} of the same file #{generation}"));
    }
    if !why.is_empty() {
        d.wrong += 1;
        if d.wrong_examples.len() < 5 {
            d.wrong_examples.push(format!(
                "line {n} at kafka offset {}: {}",
                m.offset,
                why.join(", ")
            ));
        }
    }
}

/// Reads `topic` from offset 0 until `expected` messages arrived, or
/// every partition was read to the high watermark it had at the start,
/// and then [`QUIET`] passed without a new message (or `timeout`),
/// checking each message against the file its key names.
pub(super) fn read_topic(
    addr: &str,
    topic: &str,
    sources: &[&str],
    files: &[&Logrotate],
    timeout: Duration,
) -> TopicRead {
    let expected: u64 = files.iter().map(|f| f.written()).sum();
    let consumer = consumer_from_start(addr, topic, "read");
    let mut ends: HashMap<i32, i64> = current_partitions(&consumer, topic)
        .into_iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("the topic's high watermark");
            (p, high)
        })
        .filter(|&(_, high)| high > 0)
        .collect();
    let mut counts: Vec<Vec<u16>> = files
        .iter()
        .map(|f| vec![0; f.written() as usize])
        .collect();
    let mut out = TopicRead {
        files: files.iter().map(|_| Delivery::default()).collect(),
        stray: Vec::new(),
        messages: 0,
    };
    let mut order: Vec<BTreeMap<usize, u64>> = files.iter().map(|_| BTreeMap::new()).collect();
    let mut last = HashMap::new();
    let deadline = Instant::now() + timeout;
    let mut last_new = Instant::now();
    while Instant::now() < deadline
        && ((out.messages < expected && !ends.is_empty()) || last_new.elapsed() < QUIET)
    {
        let Some(Ok(bm)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if !first_time(&mut last, bm.partition(), bm.offset()) {
            continue;
        }
        if ends
            .get(&bm.partition())
            .is_some_and(|&e| bm.offset() + 1 >= e)
        {
            ends.remove(&bm.partition());
        }
        last_new = Instant::now();
        out.messages += 1;
        let m = Msg::from_message(&bm);
        let at = source_of(m.key.as_deref(), sources).zip(number_of(&m.value));
        match at {
            Some((i, n)) if n < files[i].written() => {
                let c = &mut counts[i][n as usize];
                *c = c.saturating_add(1);
                if *c == 1 {
                    check_message(files[i], n, &m, &mut out.files[i], &mut order[i]);
                }
            }
            _ => {
                if out.stray.len() < 20 {
                    out.stray.push(format!(
                        "key {:?}: {:?}",
                        m.key_str(),
                        String::from_utf8_lossy(&m.value)
                    ));
                }
            }
        }
    }
    if !ends.is_empty() {
        eprintln!(
            "rotation soak: the read gave up after {timeout:?} with {} messages ({expected} lines written)",
            out.messages
        );
    }
    for ((d, c), f) in out.files.iter_mut().zip(&counts).zip(files) {
        d.written = f.written();
        d.delivered = c.iter().map(|&k| k as u64).sum();
        d.lost = (0..c.len() as u64)
            .filter(|&n| c[n as usize] == 0)
            .collect();
        d.dup_numbers = (0..c.len() as u64).filter(|&n| c[n as usize] > 1).collect();
        d.duplicated = c.iter().map(|&k| (k as u64).saturating_sub(1)).sum();
    }
    out
}
