//! Reading a topic back: [`Consume`], one options builder for every wait on
//! messages (how many or which, how long, how quiet, whether a daemon must
//! stay up meanwhile), and [`Msg`], what the tests look at in a message.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::delivery::{counts_of, ranges};
use super::partitions_of;

/// One consumed Kafka message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl Msg {
    /// Copies what the tests look at out of a consumed message.
    pub fn from_message(m: &rdkafka::message::BorrowedMessage<'_>) -> Msg {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Msg {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }

    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
    /// A header as UTF-8 text (lossy), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Assigns `partitions` of `topic` to `consumer`, each from offset 0: no
/// consumer group, so nothing waits for a rebalance (and tansu, which does
/// not deliver through consumer groups, works the same).
pub fn assign_from_start(consumer: &BaseConsumer, topic: &str, partitions: &[i32]) {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&tpl).expect("assign");
}

/// The partitions of `topic` as the broker reports them now.
pub fn current_partitions(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// How long [`Consume`] keeps reading after its condition holds, to catch
/// duplicates.
pub const QUIET: Duration = Duration::from_secs(2);

/// A short quiet time, for waits in the middle of a test whose final check
/// uses the full [`QUIET`].
pub const SHORT_QUIET: Duration = Duration::from_millis(200);

/// When a wait is over, given the messages so far (in arrival order).
type Done<'a> = Box<dyn FnMut(&[Msg]) -> bool + 'a>;
/// Why to stop waiting at once (e.g. "the daemon exited"), or `None`.
type Abort<'a> = Box<dyn FnMut() -> Option<String> + 'a>;

/// Reads every partition of a topic from offset 0 until a condition holds
/// and then the quiet time passes with nothing new, or the timeout runs
/// out. The result is in partition/offset order, deduplicated by
/// (partition, offset).
///
/// ```ignore
/// let msgs = Consume::new(&addr, "logs").until_count(1000).timeout(WAIT).run();
/// let msgs = daemon.consume(&addr, "logs")
///     .until(|m| has_all(m, 0..1000))
///     .quiet(SHORT_QUIET)
///     .timeout(WAIT)
///     .expect("a's lines");
/// ```
///
/// The condition ([`until_count`](Consume::until_count) or
/// [`until`](Consume::until)) and the [`timeout`](Consume::timeout) must be
/// given; the quiet time is [`QUIET`] unless set.
/// [`Daemon::consume`](super::Daemon::consume) starts one that fails at
/// once if the daemon exits while it waits.
pub struct Consume<'a> {
    addr: String,
    topic: String,
    done: Option<Done<'a>>,
    quiet: Duration,
    timeout: Option<Duration>,
    abort: Option<Abort<'a>>,
}

impl<'a> Consume<'a> {
    /// Reads `topic` on the broker at `addr`.
    pub fn new(addr: &str, topic: &str) -> Consume<'a> {
        Consume {
            addr: addr.to_string(),
            topic: topic.to_string(),
            done: None,
            quiet: QUIET,
            timeout: None,
            abort: None,
        }
    }

    /// Done once at least `n` messages arrived.
    pub fn until_count(self, n: usize) -> Self {
        self.until(move |msgs| msgs.len() >= n)
    }

    /// Done once `done` holds for the messages so far (in arrival order).
    /// Asked after new messages arrived, and no more once it held.
    pub fn until(mut self, done: impl FnMut(&[Msg]) -> bool + 'a) -> Self {
        self.done = Some(Box::new(done));
        self
    }

    /// How long to keep reading after the condition holds ([`QUIET`] by
    /// default).
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// How long to wait in all.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Asks `reason` about once a second; when it gives one, the wait ends
    /// with a panic naming it.
    pub fn abort_when(mut self, reason: impl FnMut() -> Option<String> + 'a) -> Self {
        self.abort = Some(Box::new(reason));
        self
    }

    /// Reads; on timeout returns what it has (callers assert on it).
    pub fn run(self) -> Vec<Msg> {
        self.read().0
    }

    /// Reads; panics naming `what` if the condition did not hold in time.
    pub fn expect(self, what: &str) -> Vec<Msg> {
        let topic = self.topic.clone();
        let timeout = self.timeout;
        let (msgs, done) = self.read();
        assert!(
            done,
            "timed out after {timeout:?} waiting for {what} on topic {topic} ({} messages, numbers {})",
            msgs.len(),
            ranges(counts_of(&msgs).keys().copied())
        );
        msgs
    }

    /// The messages, and whether the condition held.
    fn read(self) -> (Vec<Msg>, bool) {
        let Consume {
            addr,
            topic,
            done,
            quiet,
            timeout,
            abort,
        } = self;
        let mut done =
            done.expect("Consume: say when it is done with .until_count(n) or .until(..)");
        let timeout = timeout.expect("Consume: give it a .timeout(..)");
        let deadline = Instant::now() + timeout;
        let consumer = consumer_for_tests(&addr);
        let mut abort = AbortCheck {
            topic: &topic,
            reason: abort,
            last: Instant::now(),
        };

        // The topic may not exist yet (the daemon creates it): wait for it.
        let parts = loop {
            if let Some(p) = partitions_of(consumer.client(), &topic).filter(|p| !p.is_empty()) {
                break p;
            }
            if Instant::now() >= deadline {
                eprintln!("consume: topic {topic} never appeared on {addr} within {timeout:?}");
                return (Vec::new(), false);
            }
            abort.check();
            thread::sleep(Duration::from_millis(200));
        };
        assign_from_start(&consumer, &topic, &parts);

        // Deduplicated by (partition, offset): a message fetched twice (after a
        // reconnect, say) is still one message in the log.
        let mut seen: HashSet<(i32, i64)> = HashSet::new();
        let mut got: Vec<Msg> = Vec::new();
        let mut dirty = false;
        let mut last_new = Instant::now();
        let mut satisfied = false;
        let mut last_error: Option<String> = None;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if seen.insert((m.partition(), m.offset())) {
                        got.push(Msg::from_message(&m));
                        dirty = true;
                        last_new = Instant::now();
                    }
                    // Drain what is buffered before checking anything else,
                    // unless this goes on for long.
                    if !abort.is_due() {
                        continue;
                    }
                }
                // Transient errors (a broker outage) are expected in some tests;
                // keep polling until the deadline.
                Some(Err(e)) => last_error = Some(e.to_string()),
                None => {}
            }
            if dirty {
                dirty = false;
                if !satisfied && done(&got) {
                    satisfied = true;
                }
            }
            if satisfied && last_new.elapsed() >= quiet {
                break;
            }
            abort.check();
        }
        if !satisfied {
            eprintln!(
                "consume: gave up on topic {topic} after {timeout:?} with {} message(s){}",
                got.len(),
                last_error
                    .map(|e| format!("; last consumer error: {e}"))
                    .unwrap_or_default()
            );
        }
        got.sort_by_key(|m| (m.partition, m.offset));
        (got, satisfied)
    }
}

/// Asks a [`Consume`]'s abort reason at most once a second.
struct AbortCheck<'t, 'a> {
    topic: &'t str,
    reason: Option<Abort<'a>>,
    last: Instant,
}

impl AbortCheck<'_, '_> {
    fn is_due(&self) -> bool {
        self.last.elapsed() >= Duration::from_secs(1)
    }

    /// Panics with the reason, if there is one and it is time to ask.
    fn check(&mut self) {
        if !self.is_due() {
            return;
        }
        self.last = Instant::now();
        if let Some(reason) = self.reason.as_mut().and_then(|r| r()) {
            panic!(
                "stopped waiting for messages on topic {}: {reason}",
                self.topic
            );
        }
    }
}

/// A consumer that commits nothing, fetches every 100 ms, and does not pause
/// after a full fetch.
fn consumer_for_tests(addr: &str) -> BaseConsumer {
    // librdkafka wants a group.id even for assign(); nothing is committed.
    static GROUP: AtomicU64 = AtomicU64::new(0);
    let group = format!(
        "logcatch-test-{}-{}",
        std::process::id(),
        GROUP.fetch_add(1, Ordering::SeqCst)
    );
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .set("fetch.wait.max.ms", "100")
        // Not the default 1 s pause after a fetch that filled the queue.
        .set("fetch.queue.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "3")
        .create()
        .expect("consumer")
}
