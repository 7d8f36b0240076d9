//! Following what the soak delivered: [`Tracker`] follows the topic during
//! the faults (per file, the lowest number not delivered yet);
//! [`count_topic`] reads the whole topic once at the end, as counts only;
//! [`find_messages`] fetches the copies of chosen lines for a report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use super::SPAN;
use crate::common::*;

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
    let parts = current_partitions(&consumer, topic);
    assert!(!parts.is_empty(), "topic {topic} has no partitions");
    assign_from_start(&consumer, topic, &parts);
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
pub(super) struct TopicCount {
    /// Copies per number, per file, indexed by `n % SPAN`.
    pub(super) counts: Vec<Vec<u16>>,
    /// Header lines per key.
    pub(super) headers: BTreeMap<String, u64>,
    pub(super) stray: Vec<String>,
    pub(super) messages: u64,
}

/// Reads `topic` from offset 0 until at least `expected` messages arrived
/// and [`QUIET`] passed without a new one (or `timeout`), counting.
pub(super) fn count_topic(
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
pub(super) fn find_messages(
    addr: &str,
    topic: &str,
    want: impl Fn(u64) -> bool,
    limit: usize,
) -> Vec<Msg> {
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

pub(super) struct Tracker {
    progress: Arc<Mutex<Vec<FileProgress>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Tracker {
    /// Follows `topic` (which must exist) from offset 0.
    pub(super) fn start(addr: &str, topic: &str, nfiles: usize) -> Tracker {
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
    pub(super) fn delivered_below(&self, i: usize, upto: u64) -> bool {
        let base = i as u64 * SPAN;
        base + self.progress.lock().unwrap()[i].watermark >= upto
    }

    pub(super) fn watermark(&self, i: usize) -> u64 {
        i as u64 * SPAN + self.progress.lock().unwrap()[i].watermark
    }

    /// Waits until `delivered_below(i, upto)`; false after `timeout`.
    pub(super) fn wait_below(
        &self,
        d: &mut Daemon,
        i: usize,
        upto: u64,
        timeout: Duration,
    ) -> bool {
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

impl Tracker {
    /// Stops following the topic (its consumer goes away).
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
