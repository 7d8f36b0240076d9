//! Shared helpers for the integration tests: a throwaway tansu broker, a TCP
//! proxy that can simulate a broker outage, a consumer that reads a whole
//! topic back, a handle on the real `logcatch` daemon, and numbered-line
//! writers and checkers.
//!
//! Used from each test file with `mod common;`. Not every test file uses
//! every helper, hence the `dead_code` allowances.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race is possible,
/// which `Broker::start` absorbs by retrying).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a text.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

/// A small deterministic PRNG (xorshift64*) so tests need no extra crate.
/// Seed it from `seed_from_env_or_time` and print the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `range` (half-open).
    pub fn range(&mut self, range: Range<u64>) -> u64 {
        assert!(range.start < range.end);
        range.start + self.next_u64() % (range.end - range.start)
    }
}

/// `LOGCATCH_TEST_SEED` if set, else the clock.
pub fn seed_from_env_or_time() -> u64 {
    if let Ok(s) = std::env::var("LOGCATCH_TEST_SEED") {
        if let Ok(n) = s.trim().parse() {
            return n;
        }
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

// ---------------------------------------------------------------------------
// tansu
// ---------------------------------------------------------------------------

/// The tansu binary: `$TANSU_BIN`, else `<repo>/.tools/bin/tansu`, else
/// `tansu` on PATH.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "TANSU_BIN={} does not exist; run scripts/install-tansu.sh",
            p.display()
        );
        return p;
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/tansu");
    if local.is_file() {
        return local;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("tansu");
            if cand.is_file() {
                return cand;
            }
        }
    }
    panic!(
        "the tansu broker (0.6.x) was not found: set TANSU_BIN, or run \
         scripts/install-tansu.sh (installs it into {})",
        local.display()
    );
}

/// A tansu broker with in-memory storage, on a free loopback port, killed on
/// drop. Optionally behind a [`Proxy`], in which case the broker advertises
/// the proxy's address and every client goes through the proxy.
pub struct Broker {
    child: Child,
    /// The port tansu itself listens on.
    port: u16,
    proxy: Option<Proxy>,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker that clients reach directly.
    pub fn start() -> Broker {
        Broker::start_inner(false)
    }

    /// Starts a broker behind a [`Proxy`]; `addr()` is the proxy's address.
    pub fn start_with_proxy() -> Broker {
        Broker::start_inner(true)
    }

    fn start_inner(with_proxy: bool) -> Broker {
        let bin = tansu_bin();
        let dir = tempfile::Builder::new()
            .prefix("tansu-")
            .tempdir()
            .expect("tempdir");
        let log_path = dir.path().join("tansu.log");
        let mut errors = Vec::new();
        // A free port can be taken between our probe and tansu's bind:
        // retry on a new port when tansu does not come up.
        for attempt in 0..4 {
            let port = free_port();
            let proxy = with_proxy.then(|| Proxy::start(port));
            let advertised = proxy.as_ref().map_or(port, |p| p.port());
            let client_addr = format!("127.0.0.1:{advertised}");
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open tansu.log");
            writeln!(
                &log,
                "=== test harness: attempt {attempt}, port {port}, advertised {advertised} ==="
            )
            .ok();
            let mut child = Command::new(&bin)
                .arg("broker")
                .arg("--listener-url")
                .arg(format!("tcp://127.0.0.1:{port}"))
                .arg("--advertised-listener-url")
                .arg(format!("tcp://{client_addr}"))
                .arg("--storage-engine")
                .arg("memory://tansu/")
                .env(
                    "RUST_LOG",
                    std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            match wait_ready(&mut child, &client_addr, Duration::from_secs(30)) {
                Ok(()) => {
                    return Broker {
                        child,
                        port,
                        proxy,
                        log_path,
                        _dir: dir,
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    errors.push(format!("attempt {attempt} on port {port}: {e}"));
                }
            }
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!(
            "tansu ({}) did not become ready:\n{}\n--- tansu.log ---\n{}",
            bin.display(),
            errors.join("\n"),
            tail_lines(&log, 40)
        );
    }

    /// The address clients use (the proxy's, when there is one).
    pub fn addr(&self) -> String {
        match &self.proxy {
            Some(p) => p.addr(),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// The address tansu itself listens on.
    pub fn direct_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The proxy in front of the broker. Panics when started without one.
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("this broker was started without a proxy (use Broker::start_with_proxy)")
    }

    /// The proxy, mutably (for `down()` / `up()`).
    pub fn proxy_mut(&mut self) -> &mut Proxy {
        self.proxy
            .as_mut()
            .expect("this broker was started without a proxy (use Broker::start_with_proxy)")
    }

    /// tansu's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Creates a topic with `partitions` partitions through the Kafka admin
    /// API. An already existing topic is not an error.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        create_topic(&self.addr(), topic, partitions);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "--- tansu.log (last 30 lines) ---\n{}",
                tail_lines(&self.log(), 30)
            );
        }
    }
}

/// Waits until a broker answers a metadata request at `addr`.
fn wait_ready(child: &mut Child, addr: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let probe: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("socket.connection.setup.timeout.ms", "2000")
        .set("log_level", "0")
        .create()
        .map_err(|e| format!("cannot create a probe client: {e}"))?;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("tansu exited early with {status}"));
        }
        if let Ok(md) = probe.client().fetch_metadata(None, Duration::from_secs(2)) {
            if !md.brokers().is_empty() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no metadata from tansu within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Creates `topic` with `partitions` partitions (replication 1) through
/// rdkafka's AdminClient. "Already exists" is fine.
pub fn create_topic(addr: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("log_level", "3")
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = rt
        .block_on(admin.create_topics([&new], &opts))
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("create topic {name}: {code:?}"),
        }
    }
    // Wait until the topic's partitions show in metadata.
    let probe: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("log_level", "3")
        .create()
        .expect("probe client");
    wait_for(
        &format!("topic {topic} in metadata"),
        Duration::from_secs(30),
        || partitions_of(probe.client(), topic).filter(|p| !p.is_empty()),
    );
}

/// The partition ids of `topic`, or `None` when the broker does not know it.
fn partitions_of<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Option<Vec<i32>> {
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() {
        return None;
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Some(ids)
}

// ---------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------

struct ProxyShared {
    upstream: SocketAddr,
    /// Every open socket of every proxied connection (both sides), by id.
    conns: Mutex<BTreeMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

/// A TCP forwarder from a loopback port to the broker. `down()` cuts every
/// open connection and stops listening (new connects are refused); `up()`
/// listens on the same port again. Runs on its own threads.
pub struct Proxy {
    port: u16,
    shared: Arc<ProxyShared>,
    acceptor: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Proxy {
    /// A proxy on a free port forwarding to 127.0.0.1:`upstream_port`.
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let mut p = Proxy {
            port,
            shared: Arc::new(ProxyShared {
                upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
                conns: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(0),
            }),
            acceptor: None,
        };
        p.run(listener);
        p
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_up(&self) -> bool {
        self.acceptor.is_some()
    }

    /// Stops listening and closes every open connection.
    pub fn down(&mut self) {
        if let Some((stop, handle)) = self.acceptor.take() {
            stop.store(true, Ordering::SeqCst);
            handle.join().expect("proxy acceptor panicked");
        }
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for s in conns.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn up(&mut self) {
        if self.acceptor.is_some() {
            return;
        }
        let addr = format!("127.0.0.1:{}", self.port);
        let listener = wait_for(
            &format!("proxy to rebind {addr}"),
            Duration::from_secs(30),
            || TcpListener::bind(&addr).ok(),
        );
        self.run(listener);
    }

    fn run(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let stop2 = stop.clone();
        let handle = thread::Builder::new()
            .name(format!("proxy-accept-{}", self.port))
            .spawn(move || {
                while !stop2.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if stop2.load(Ordering::SeqCst) {
                                let _ = client.shutdown(Shutdown::Both);
                                break;
                            }
                            Proxy::forward(&shared, client);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
                // `listener` is dropped here: connects are refused from now.
            })
            .expect("spawn proxy acceptor");
        self.acceptor = Some((stop, handle));
    }

    fn forward(shared: &Arc<ProxyShared>, client: TcpStream) {
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let upstream = match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(_) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let id_c = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let id_u = shared.next_id.fetch_add(1, Ordering::SeqCst);
        {
            let mut conns = shared.conns.lock().unwrap();
            conns.insert(id_c, client.try_clone().unwrap());
            conns.insert(id_u, upstream.try_clone().unwrap());
        }
        let pipe = |mut from: TcpStream, to: TcpStream, shared: Arc<ProxyShared>, ids: [u64; 2]| {
            move || {
                let mut to_w = to;
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if to_w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = to_w.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                let mut conns = shared.conns.lock().unwrap();
                for id in ids {
                    conns.remove(&id);
                }
            }
        };
        let c2u = pipe(
            client.try_clone().unwrap(),
            upstream.try_clone().unwrap(),
            shared.clone(),
            [id_c, id_u],
        );
        let u2c = pipe(upstream, client, shared.clone(), [id_c, id_u]);
        thread::Builder::new()
            .name("proxy-c2u".into())
            .spawn(c2u)
            .expect("spawn proxy pipe");
        thread::Builder::new()
            .name("proxy-u2c".into())
            .spawn(u2c)
            .expect("spawn proxy pipe");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

// ---------------------------------------------------------------------------
// Consuming a topic back
// ---------------------------------------------------------------------------

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

    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
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

/// Assigns `partitions` of `topic` to `consumer`, each from offset 0 (tansu
/// does not deliver through consumer groups).
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

/// How long `consume` keeps reading after it has what it expected, to catch
/// duplicates.
pub const QUIET: Duration = Duration::from_secs(2);

/// Reads every partition of `topic` from offset 0 until `expected` messages
/// have arrived and then [`QUIET`] passes with nothing new, or `timeout`
/// runs out (then it returns what it has: callers assert on the count).
/// The result is in partition/offset order.
pub fn consume(addr: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Msg> {
    consume_until(addr, topic, timeout, |msgs| msgs.len() >= expected)
}

/// Like [`consume`], but stops (after [`QUIET`]) once `done` holds for the
/// messages so far (given in arrival order).
pub fn consume_until(
    addr: &str,
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[Msg]) -> bool,
) -> Vec<Msg> {
    consume_inner(addr, topic, timeout, done, &mut || None)
}

/// The consumer behind [`consume`]: `abort` is asked about once a second
/// and, when it returns a reason, the wait ends with a panic naming it
/// (e.g. "the daemon exited").
pub fn consume_inner(
    addr: &str,
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[Msg]) -> bool,
    abort: &mut dyn FnMut() -> Option<String>,
) -> Vec<Msg> {
    consume_inner_quiet(addr, topic, timeout, QUIET, done, abort)
}

/// [`consume_inner`] with its own quiet time (how long to keep reading
/// after `done` holds). A short quiet suits waits in the middle of a test
/// whose final check uses the full [`QUIET`].
pub fn consume_inner_quiet(
    addr: &str,
    topic: &str,
    timeout: Duration,
    quiet: Duration,
    mut done: impl FnMut(&[Msg]) -> bool,
    abort: &mut dyn FnMut() -> Option<String>,
) -> Vec<Msg> {
    let deadline = Instant::now() + timeout;
    // librdkafka wants a group.id even for assign(); nothing is committed.
    static GROUP: AtomicU64 = AtomicU64::new(0);
    let group = format!(
        "logcatch-test-{}-{}",
        std::process::id(),
        GROUP.fetch_add(1, Ordering::SeqCst)
    );
    let consumer: BaseConsumer = ClientConfig::new()
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
        .expect("consumer");
    let mut last_abort_check = Instant::now();
    let mut check_abort = |last: &mut Instant| {
        if last.elapsed() >= Duration::from_secs(1) {
            *last = Instant::now();
            if let Some(reason) = abort() {
                panic!("stopped waiting for messages on topic {topic}: {reason}");
            }
        }
    };

    // The topic may not exist yet (the daemon creates it): wait for it.
    let parts = loop {
        if let Some(p) = partitions_of(consumer.client(), topic).filter(|p| !p.is_empty()) {
            break p;
        }
        if Instant::now() >= deadline {
            eprintln!("consume: topic {topic} never appeared on {addr} within {timeout:?}");
            return Vec::new();
        }
        check_abort(&mut last_abort_check);
        thread::sleep(Duration::from_millis(200));
    };
    assign_from_start(&consumer, topic, &parts);

    // Deduplicated by (partition, offset): a message fetched twice (after a
    // reconnect, say) is still one message in the log.
    let mut seen: std::collections::HashSet<(i32, i64)> = std::collections::HashSet::new();
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
                if last_abort_check.elapsed() < Duration::from_secs(1) {
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
        check_abort(&mut last_abort_check);
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
    got
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// Builds a test config. Values are written as YAML scalars; paths are
/// quoted.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    pub data_dir: PathBuf,
    pub brokers: String,
    pub topic: String,
    /// `configpath` entries: name -> path.
    pub configpath: Vec<(String, PathBuf)>,
    /// `sources` entries: name -> (path, optional topic).
    pub sources: Vec<(String, PathBuf, Option<String>)>,
    /// Extra `kafka:` keys (raw YAML values).
    pub kafka: Vec<(String, String)>,
    /// Extra `kafka.properties:` keys (raw YAML values).
    pub properties: Vec<(String, String)>,
    /// `tailer:` keys (raw YAML values); `poll_interval: 50ms` by default.
    pub tailer: Vec<(String, String)>,
    /// `spool:` keys (raw YAML values).
    pub spool: Vec<(String, String)>,
}

impl ConfigBuilder {
    pub fn new(data_dir: impl Into<PathBuf>, brokers: &str, topic: &str) -> ConfigBuilder {
        ConfigBuilder {
            data_dir: data_dir.into(),
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            configpath: Vec::new(),
            sources: Vec::new(),
            kafka: vec![("linger_ms".into(), "5".into())],
            properties: Vec::new(),
            tailer: vec![("poll_interval".into(), "50ms".into())],
            spool: Vec::new(),
        }
    }

    /// A source under `sources:`, sent to the default topic.
    pub fn source(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.sources.push((name.into(), path.into(), None));
        self
    }

    /// A source under `sources:` with its own topic.
    pub fn source_to(mut self, name: &str, path: impl Into<PathBuf>, topic: &str) -> Self {
        self.sources
            .push((name.into(), path.into(), Some(topic.to_string())));
        self
    }

    /// A source under `configpath:`.
    pub fn configpath(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.configpath.push((name.into(), path.into()));
        self
    }

    pub fn kafka(mut self, key: &str, value: &str) -> Self {
        set(&mut self.kafka, key, value);
        self
    }

    pub fn property(mut self, key: &str, value: &str) -> Self {
        set(&mut self.properties, key, value);
        self
    }

    pub fn tailer(mut self, key: &str, value: &str) -> Self {
        set(&mut self.tailer, key, value);
        self
    }

    pub fn spool(mut self, key: &str, value: &str) -> Self {
        set(&mut self.spool, key, value);
        self
    }

    pub fn render(&self) -> String {
        let mut y = String::new();
        writeln!(y, "data_dir: {}", q(&self.data_dir)).unwrap();
        writeln!(y, "kafka:").unwrap();
        writeln!(y, "  brokers: \"{}\"", self.brokers).unwrap();
        writeln!(y, "  topic: \"{}\"", self.topic).unwrap();
        for (k, v) in &self.kafka {
            writeln!(y, "  {k}: {v}").unwrap();
        }
        if !self.properties.is_empty() {
            writeln!(y, "  properties:").unwrap();
            for (k, v) in &self.properties {
                writeln!(y, "    {k}: {v}").unwrap();
            }
        }
        if !self.configpath.is_empty() {
            writeln!(y, "configpath:").unwrap();
            for (name, path) in &self.configpath {
                writeln!(y, "  \"{name}\": {}", q(path)).unwrap();
            }
        }
        if !self.sources.is_empty() {
            writeln!(y, "sources:").unwrap();
            for (name, path, topic) in &self.sources {
                writeln!(y, "  \"{name}\":").unwrap();
                writeln!(y, "    path: {}", q(path)).unwrap();
                if let Some(t) = topic {
                    writeln!(y, "    topic: \"{t}\"").unwrap();
                }
            }
        }
        for (section, kv) in [("tailer", &self.tailer), ("spool", &self.spool)] {
            if !kv.is_empty() {
                writeln!(y, "{section}:").unwrap();
                for (k, v) in kv {
                    writeln!(y, "  {k}: {v}").unwrap();
                }
            }
        }
        y
    }
}

fn set(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = value.to_string(),
        None => list.push((key.to_string(), value.to_string())),
    }
}

/// A path as a double-quoted YAML string.
fn q(p: &Path) -> String {
    let s = p.to_str().expect("test paths are UTF-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The real `logcatch` binary, run in the foreground with `--config`.
/// Output (stdout and stderr) is appended to `<dir>/daemon.log`. Killed
/// (SIGKILL) on drop.
pub struct Daemon {
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    exited: Option<ExitStatus>,
    starts: usize,
}

impl Daemon {
    pub fn bin() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_logcatch"))
    }

    /// Writes `config_text` to `<dir>/logcatch.yaml` and starts the daemon.
    pub fn start(dir: &Path, config_text: &str) -> Daemon {
        let config = dir.join("logcatch.yaml");
        std::fs::write(&config, config_text).expect("write config");
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            config,
            child: None,
            exited: None,
            starts: 0,
        };
        d.spawn();
        d
    }

    /// Renders `builder` into `<dir>/logcatch.yaml` and starts the daemon.
    pub fn with(dir: &Path, builder: &ConfigBuilder) -> Daemon {
        Daemon::start(dir, &builder.render())
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Everything the daemon printed, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.log(), n)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon.log");
        writeln!(log, "===== test harness: start #{} =====", self.starts).ok();
        let child = Command::new(Daemon::bin())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn logcatch");
        self.child = Some(child);
        self.exited = None;
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.as_mut() {
            None => false,
            Some(c) => match c.try_wait().expect("try_wait") {
                Some(st) => {
                    self.exited = Some(st);
                    false
                }
                None => true,
            },
        }
    }

    /// Panics if the daemon has exited (the log's tail is printed when the
    /// `Daemon` is dropped during the panic).
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "logcatch exited unexpectedly ({})",
                self.exited.map(|s| s.to_string()).unwrap_or_default()
            );
        }
    }

    fn signal(&mut self, sig: &str) {
        if !self.is_running() {
            return;
        }
        let pid = self.child.as_ref().unwrap().id();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {pid} failed: {st}");
    }

    /// Sends SIGTERM (graceful shutdown). Does not wait.
    pub fn sigterm(&mut self) {
        self.signal("TERM");
    }

    /// Sends SIGINT (graceful shutdown). Does not wait.
    pub fn sigint(&mut self) {
        self.signal("INT");
    }

    /// SIGKILL, and reaps the process.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(c) = self.child.as_mut() {
            if self.exited.is_none() {
                let _ = c.kill();
                self.exited = Some(c.wait().expect("wait after kill"));
            }
        }
        self.exited.expect("daemon was never started")
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return self.exited.expect("daemon was never started");
            }
            if Instant::now() >= deadline {
                panic!("logcatch did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for exit and asserts it was clean (status 0).
    pub fn stop(&mut self) {
        self.sigterm();
        let st = self.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "logcatch exited with {st} after SIGTERM");
    }

    /// Starts the daemon again with the same config. A still running daemon
    /// is first stopped with SIGTERM (and must exit 0).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        }
        self.spawn();
    }

    /// [`consume`], but fails at once (with the log's tail) if the daemon
    /// exits while it waits.
    pub fn consume(
        &mut self,
        addr: &str,
        topic: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<Msg> {
        self.consume_until(addr, topic, timeout, |m| m.len() >= expected)
    }

    /// [`consume_until`], but fails at once if the daemon exits meanwhile.
    pub fn consume_until(
        &mut self,
        addr: &str,
        topic: &str,
        timeout: Duration,
        done: impl FnMut(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        consume_inner(addr, topic, timeout, done, &mut || {
            if self.is_running() {
                return None;
            }
            Some(format!(
                "logcatch exited ({}); its log follows the panic",
                self.exited.map(|s| s.to_string()).unwrap_or_default()
            ))
        })
    }

    /// Rewrites the config file (takes effect at the next `restart`).
    pub fn rewrite_config(&mut self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if self.exited.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if thread::panicking() {
            eprintln!(
                "--- daemon.log (last 60 lines) [{}] ---\n{}",
                self.log_path().display(),
                self.log_tail(60)
            );
        }
    }
}

/// Runs `logcatch-ctl --config <config> <args...>`.
pub fn ctl(config_path: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logcatch-ctl"))
        .arg("--config")
        .arg(config_path)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run logcatch-ctl")
}

// ---------------------------------------------------------------------------
// Numbered lines
// ---------------------------------------------------------------------------

/// The width of the zero-padded number in a numbered line.
pub const NUM_WIDTH: usize = 9;
/// The length of a numbered line including its newline.
pub const LINE_LEN: usize = 100;

/// The numbered line for `n`, without its newline: `line-000000123 ` and
/// filler, `LINE_LEN - 1` bytes long.
pub fn numbered_line(n: u64) -> String {
    const FILLER: &str = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs! 0123456789";
    let mut s = format!("line-{n:0NUM_WIDTH$} ");
    let rot = (n % 37) as usize;
    let filler: String = FILLER[rot..].chars().chain(FILLER[..rot].chars()).collect();
    s.push_str(&filler);
    s.truncate(LINE_LEN - 1);
    s
}

/// Appends lines `from..to` (half-open) to `path`, creating it if needed.
/// Written in chunks of up to 64 KiB, so a line may be split across two
/// writes (as real writers do).
pub fn write_numbered(path: &Path, from: u64, to: u64) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = Vec::with_capacity(64 << 10);
    for n in from..to {
        buf.extend_from_slice(numbered_line(n).as_bytes());
        buf.push(b'\n');
        if buf.len() >= 64 << 10 {
            f.write_all(&buf).expect("write");
            buf.clear();
        }
    }
    f.write_all(&buf).expect("write");
}

/// Writes lines `from..to` to `path` in batches of `batch` lines, sleeping
/// `pause` between batches, on a new thread.
pub fn write_numbered_slowly(
    path: &Path,
    from: u64,
    to: u64,
    batch: u64,
    pause: Duration,
) -> JoinHandle<()> {
    let path = path.to_path_buf();
    thread::spawn(move || {
        let mut n = from;
        while n < to {
            let end = (n + batch).min(to);
            write_numbered(&path, n, end);
            n = end;
            thread::sleep(pause);
        }
    })
}

/// The number in a numbered line (a message value), if it is one.
pub fn number_of(value: &[u8]) -> Option<u64> {
    let rest = value.strip_prefix(b"line-")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The numbers of numbered-line messages, in the given order. Panics on a
/// message that is not a numbered line.
pub fn numbers_of(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .map(|m| {
            number_of(&m.value).unwrap_or_else(|| {
                panic!(
                    "message at partition {} offset {} is not a numbered line: {:?}",
                    m.partition,
                    m.offset,
                    String::from_utf8_lossy(&m.value)
                )
            })
        })
        .collect()
}

/// Byte offset of the start of every line of a file, by the line's number
/// (for numbered lines).
pub fn line_offsets(path: &Path) -> BTreeMap<u64, u64> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut r = BufReader::new(f);
    let mut out = BTreeMap::new();
    let mut off = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).expect("read");
        if n == 0 {
            break;
        }
        if let Some(num) = number_of(&line) {
            out.insert(num, off);
        }
        off += n as u64;
    }
    out
}

/// What went wrong in a delivery, by line number.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Numbers in the expected range that never arrived.
    pub missing: Vec<u64>,
    /// Numbers that arrived more than once, with how many times.
    pub duplicated: BTreeMap<u64, usize>,
    /// Numbers outside the expected range, with how many times.
    pub unexpected: BTreeMap<u64, usize>,
}

impl Tally {
    pub fn of(msgs: &[Msg], expected: Range<u64>) -> Tally {
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for n in numbers_of(msgs) {
            *counts.entry(n).or_default() += 1;
        }
        let mut t = Tally::default();
        for n in expected.clone() {
            if !counts.contains_key(&n) {
                t.missing.push(n);
            }
        }
        for (&n, &c) in &counts {
            if !expected.contains(&n) {
                t.unexpected.insert(n, c);
            } else if c > 1 {
                t.duplicated.insert(n, c);
            }
        }
        t
    }

    /// Extra copies delivered (a number seen 3 times counts 2).
    pub fn duplicate_count(&self) -> usize {
        self.duplicated.values().map(|c| c - 1).sum()
    }

    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.unexpected.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        if !self.missing.is_empty() {
            writeln!(
                s,
                "missing {} line(s): {}",
                self.missing.len(),
                ranges(self.missing.iter().copied())
            )
            .unwrap();
        }
        if !self.duplicated.is_empty() {
            writeln!(
                s,
                "{} line(s) duplicated ({} extra copies): {}",
                self.duplicated.len(),
                self.duplicate_count(),
                ranges(self.duplicated.keys().copied())
            )
            .unwrap();
        }
        if !self.unexpected.is_empty() {
            writeln!(
                s,
                "{} unexpected line number(s): {}",
                self.unexpected.len(),
                ranges(self.unexpected.keys().copied())
            )
            .unwrap();
        }
        if s.is_empty() {
            s.push_str("exactly once");
        }
        s
    }
}

/// Compresses sorted numbers into `a..=b` runs (at most 20 shown).
pub fn ranges(nums: impl IntoIterator<Item = u64>) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for n in nums {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => runs.push((n, n)),
        }
    }
    let total = runs.len();
    let mut parts: Vec<String> = runs
        .iter()
        .take(20)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b} ({})", b - a + 1)
            }
        })
        .collect();
    if total > 20 {
        parts.push(format!("... and {} more runs", total - 20));
    }
    parts.join(", ")
}

/// `(missing, duplicates)`: how many numbers of `expected` never arrived,
/// and how many extra copies arrived. Panics on numbers outside `expected`.
pub fn missing_and_duplicates(msgs: &[Msg], expected: Range<u64>) -> (usize, usize) {
    let t = Tally::of(msgs, expected);
    assert!(
        t.unexpected.is_empty(),
        "unexpected line numbers: {}",
        ranges(t.unexpected.keys().copied())
    );
    (t.missing.len(), t.duplicate_count())
}

/// Asserts every number in `expected` arrived exactly once and nothing
/// else did; the message names the missing and duplicated numbers.
pub fn assert_exactly_once(msgs: &[Msg], expected: Range<u64>) {
    let t = Tally::of(msgs, expected.clone());
    assert!(
        t.is_exact(),
        "delivery of lines {expected:?} was not exactly once ({} messages):\n{}",
        msgs.len(),
        t.describe()
    );
}

/// Asserts that, within each partition and key, line numbers strictly
/// increase with the offset (file order per source).
pub fn assert_file_order(msgs: &[Msg]) {
    // (partition, key) -> (last line number, its offset)
    type Stream = (i32, Option<Vec<u8>>);
    let mut last: BTreeMap<Stream, (u64, i64)> = BTreeMap::new();
    let mut bad = Vec::new();
    for m in msgs {
        let Some(n) = number_of(&m.value) else {
            continue;
        };
        let k = (m.partition, m.key.clone());
        if let Some(&(prev, prev_off)) = last.get(&k) {
            if n <= prev && bad.len() < 10 {
                bad.push(format!(
                    "partition {} key {:?}: line {n} at offset {} after line {prev} at offset {prev_off}",
                    m.partition,
                    m.key_str(),
                    m.offset
                ));
            }
        }
        last.insert(k, (n, m.offset));
    }
    assert!(
        bad.is_empty(),
        "lines out of file order:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Reload and logcatch-ctl helpers
// ---------------------------------------------------------------------------

/// A temp dir and a broker of its own, for one test.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub broker: Broker,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv::with_broker(Broker::start())
    }

    /// With the broker behind a [`Proxy`] (for outages).
    pub fn with_proxy() -> TestEnv {
        TestEnv::with_broker(Broker::start_with_proxy())
    }

    pub fn with_broker(broker: Broker) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("logcatch-e2e-")
            .tempdir()
            .expect("tempdir");
        TestEnv { dir, broker }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn addr(&self) -> String {
        self.broker.addr()
    }

    /// A config with the test-friendly defaults, data in `<dir>/data`, the
    /// default topic `topic`, and no sources yet.
    pub fn config(&self, topic: &str) -> ConfigBuilder {
        ConfigBuilder::new(self.path("data"), &self.addr(), topic)
    }

    pub fn start(&self, cfg: &ConfigBuilder) -> Daemon {
        Daemon::with(self.dir.path(), cfg)
    }

    /// The common prologue: writes `lines` to `path`, starts a daemon
    /// tailing it as source `name` into `topic`, and waits until every line
    /// arrived exactly once.
    pub fn start_delivered(
        &self,
        topic: &str,
        name: &str,
        path: &Path,
        lines: Range<u64>,
        wait: Duration,
    ) -> Daemon {
        write_numbered(path, lines.start, lines.end);
        let mut d = self.start(&self.config(topic).source(name, path));
        let msgs = d.consume(
            &self.addr(),
            topic,
            (lines.end - lines.start) as usize,
            wait,
        );
        assert_exactly_once(&msgs, lines);
        d
    }
}

/// Truncates `path` to 0 bytes in place (same inode).
pub fn truncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncate")
        .set_len(0)
        .expect("truncate");
}

impl Daemon {
    /// Starts the daemon on an existing config file (which may be a
    /// symlink); the log goes to `<dir>/daemon.log`.
    pub fn start_with_file(dir: &Path, config: &Path) -> Daemon {
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            child: None,
            exited: None,
            starts: 0,
        };
        d.spawn();
        d
    }

    /// Sends SIGHUP (reload the config). Does not wait.
    pub fn sighup(&mut self) {
        self.signal("HUP");
    }

    /// How many lines of the log (all runs) contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// The log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until at least `n` log lines contain `needle` and returns the
    /// `n`th; fails at once if the daemon exits.
    pub fn wait_log(&mut self, needle: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.log_lines(needle);
            if lines.len() >= n {
                return lines[n - 1].clone();
            }
            self.assert_running();
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for log line #{n} containing {needle:?} (have {})",
                    lines.len()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (reading with a short quiet time) until `done` holds for the
    /// messages of `topic`; returns them. Fails at once if the daemon exits
    /// and, unlike `consume`, panics with `what` on timeout.
    pub fn wait_delivered(
        &mut self,
        addr: &str,
        topic: &str,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        let mut ok = false;
        let msgs = consume_inner_quiet(
            addr,
            topic,
            timeout,
            Duration::from_millis(200),
            |m| {
                ok = done(m);
                ok
            },
            &mut || {
                if self.is_running() {
                    return None;
                }
                Some(format!(
                    "logcatch exited ({}); its log follows the panic",
                    self.exited.map(|s| s.to_string()).unwrap_or_default()
                ))
            },
        );
        assert!(
            ok,
            "timed out after {timeout:?} waiting for {what} on topic {topic} ({} messages, numbers {})",
            msgs.len(),
            ranges(counts_of(&msgs).keys().copied())
        );
        msgs
    }
}

/// Whether every number of `range` is among the messages.
pub fn has_all(msgs: &[Msg], range: Range<u64>) -> bool {
    let got: std::collections::HashSet<u64> =
        msgs.iter().filter_map(|m| number_of(&m.value)).collect();
    range.into_iter().all(|n| got.contains(&n))
}

/// How many times each number arrived.
pub fn counts_of(msgs: &[Msg]) -> BTreeMap<u64, usize> {
    let mut c = BTreeMap::new();
    for n in numbers_of(msgs) {
        *c.entry(n).or_default() += 1;
    }
    c
}

/// Writes `text` to `path` the way careful editors do: a temp file in the
/// same directory, then rename over.
pub fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-edit");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}

/// `logcatch-ctl` output, parsed.
pub struct CtlOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOut {
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// stdout as JSON; panics (with the output) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("logcatch-ctl printed no JSON ({e}):\n{}", self.describe()))
    }
}

/// Runs `logcatch-ctl --config <config> <args...>` and collects its output.
pub fn ctl_run(config: &Path, args: &[&str]) -> CtlOut {
    let out = ctl(config, args);
    CtlOut {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `logcatch-ctl` and returns its JSON; panics unless it exits 0.
pub fn ctl_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let out = ctl_run(config, args);
    assert_eq!(
        out.code,
        Some(0),
        "logcatch-ctl {args:?} failed:\n{}",
        out.describe()
    );
    out.json()
}

/// The row named `name` of `logcatch-ctl offsets --json` output, if any.
pub fn offsets_row<'a>(rows: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    rows.as_array()
        .unwrap_or_else(|| panic!("offsets output is not a JSON array: {rows}"))
        .iter()
        .find(|r| r["name"] == name)
}

/// One HTTP/1.1 GET over a stream; returns (status, body).
fn http_get_over(mut s: impl Read + Write, path: &str) -> (u16, String) {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: logcatch\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read reply");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP reply: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET `path` from a loopback TCP address.
pub fn http_get_tcp(addr: &str, path: &str) -> (u16, String) {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    http_get_over(s, path)
}

/// GET `path` from a Unix socket.
pub fn http_get_unix(sock: &Path, path: &str) -> (u16, String) {
    let s = std::os::unix::net::UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    http_get_over(s, path)
}

/// Prometheus text: `name{labels}` (exactly as written) -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        let v: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in metrics line {line:?}"));
        out.insert(k.to_string(), v);
    }
    out
}

/// Asserts every number in the union of `expected` arrived exactly once and
/// nothing else did.
pub fn assert_exactly_once_in(msgs: &[Msg], expected: &[Range<u64>]) {
    let counts = counts_of(msgs);
    let want: std::collections::BTreeSet<u64> = expected.iter().flat_map(|r| r.clone()).collect();
    let missing: Vec<u64> = want
        .iter()
        .copied()
        .filter(|n| !counts.contains_key(n))
        .collect();
    let duplicated: Vec<u64> = counts
        .iter()
        .filter(|(n, c)| want.contains(n) && **c > 1)
        .map(|(n, _)| *n)
        .collect();
    let unexpected: Vec<u64> = counts
        .keys()
        .copied()
        .filter(|n| !want.contains(n))
        .collect();
    assert!(
        missing.is_empty() && duplicated.is_empty() && unexpected.is_empty(),
        "delivery of lines {expected:?} was not exactly once ({} messages):\nmissing: {}\nduplicated: {}\nunexpected: {}",
        msgs.len(),
        ranges(missing),
        ranges(duplicated),
        ranges(unexpected)
    );
}

/// Polls `logcatch-ctl status --json` until `pred` holds; returns it.
pub fn wait_status(
    config: &Path,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let deadline = Instant::now() + timeout;
    loop {
        let out = ctl_run(config, &["status", "--json"]);
        if out.code == Some(0) {
            last = out.json();
            if pred(&last) {
                return last;
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for status: {what}; last status:\n{last:#}"
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}
