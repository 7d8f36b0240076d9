//! The broker the tests deliver to: a one-node Apache Kafka (KRaft) on free
//! loopback ports, started with `scripts/kafka.sh` and killed on drop;
//! optionally behind a [`Proxy`] that takes it away (every connection cut,
//! new ones refused) and brings it back, to simulate an outage. tansu, a
//! small in-memory Kafka-compatible broker, stays available as
//! [`Broker::tansu`] for one smoke test and the bench's comparison.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, Producer};

use super::{free_port, tail_lines, wait_for};

/// Settings of the test broker on top of `scripts/kafka.sh`'s own (one
/// partition per new topic, replication 1, no initial rebalance delay):
/// one partition for each internal topic and a small log-cleaner buffer,
/// so that it starts and runs light. Auto topic creation stays on, as in
/// Kafka's default (logcatch creates its topics itself anyway). The node
/// starts with `--static-quorum` (its storage copied from a template, no
/// format JVM, unless SCRAM users are made at format time) and uses the CDS archive of `scripts/kafka.sh cds` when
/// there is one.
pub const KAFKA_TEST_PROPS: &[&str] = &[
    "offsets.topic.num.partitions=1",
    "transaction.state.log.num.partitions=1",
    "share.coordinator.state.topic.num.partitions=1",
    "log.cleaner.dedupe.buffer.size=8388608",
];

/// The repository's `scripts/` folder.
fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// Apache Kafka's install folder: what `scripts/install-kafka.sh` prints
/// (it honours `$LOGCATCH_KAFKA_HOME`, and installs Kafka into its cache
/// when missing), asked once per test process.
pub fn kafka_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let script = scripts_dir().join("install-kafka.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let home = stdout.lines().last().unwrap_or("").trim();
        assert!(
            out.status.success() && !home.is_empty(),
            "{} failed ({}); Apache Kafka needs Java 17 and Maven:\n{}",
            script.display(),
            out.status,
            tail_lines(&String::from_utf8_lossy(&out.stderr), 30)
        );
        PathBuf::from(home)
    })
}

/// Runs a Kafka command-line tool through `scripts/kafka.sh tool CLASS|ALIAS
/// ARGS...` (e.g. `["acls", "--bootstrap-server", addr, "--list"]`) and
/// returns its output, whatever its exit status.
pub fn kafka_tool(args: &[&str]) -> std::process::Output {
    let script = scripts_dir().join("kafka.sh");
    Command::new("bash")
        .arg(&script)
        .arg("tool")
        .args(args)
        .env("LOGCATCH_KAFKA_HOME", kafka_home())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} tool: {e}", script.display()))
}

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

/// The broker process behind a [`Broker`].
enum Server {
    /// One Apache Kafka node started by `scripts/kafka.sh` in a session of
    /// its own (so not a child of ours): killed by pid.
    Kafka { node_dir: PathBuf, pid: u32 },
    /// tansu with in-memory storage, our child.
    Tansu { child: Child, log_path: PathBuf },
}

/// A broker on a free loopback port, killed on drop: Apache Kafka unless
/// made with [`Broker::tansu`]. Optionally behind a [`Proxy`], in which
/// case the broker advertises the proxy's address and every client goes
/// through the proxy.
pub struct Broker {
    server: Server,
    /// The port the broker itself listens on.
    port: u16,
    proxy: Option<Proxy>,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts an Apache Kafka node that clients reach directly.
    pub fn start() -> Broker {
        Broker::start_kafka(false, &mut |_, _| Vec::new())
    }

    /// Starts an Apache Kafka node behind a [`Proxy`]; `addr()` is the
    /// proxy's address, and the node advertises it.
    pub fn start_with_proxy() -> Broker {
        Broker::start_kafka(true, &mut |_, _| Vec::new())
    }

    /// Starts an Apache Kafka node that clients reach directly, with extra
    /// broker settings (`KEY=VALUE`, each passed as `--prop` to
    /// `scripts/kafka.sh`, after the test settings, so they may override
    /// them), e.g. an authorizer.
    pub fn start_with_props(props: &[&str]) -> Broker {
        Broker::start_kafka(false, &mut |_, _| {
            props
                .iter()
                .flat_map(|p| ["--prop", p])
                .map(String::from)
                .collect()
        })
    }

    /// Starts an Apache Kafka node that clients reach directly, with extra
    /// `scripts/kafka.sh start` arguments (after the test settings) made
    /// by `args` from the node's broker and controller ports, e.g. `--prop`
    /// settings for more listeners on ports of their own and `--add-scram`
    /// (which costs a format JVM). `args` is asked again at each attempt,
    /// on new ports (as `secure::SecureBroker` does).
    pub fn start_with_args(mut args: impl FnMut(u16, u16) -> Vec<String>) -> Broker {
        Broker::start_kafka(false, &mut args)
    }

    /// Starts tansu (in-memory storage), reached directly: the second
    /// broker, for one smoke test and the bench's `--broker tansu`.
    pub fn tansu() -> Broker {
        Broker::start_tansu()
    }

    /// `extra` makes the extra `kafka.sh start` arguments of an attempt
    /// from its broker and controller ports.
    fn start_kafka(with_proxy: bool, extra: &mut dyn FnMut(u16, u16) -> Vec<String>) -> Broker {
        let home = kafka_home();
        let script = scripts_dir().join("kafka.sh");
        let dir = tempfile::Builder::new()
            .prefix("kafka-")
            .tempdir()
            .expect("tempdir");
        let mut errors = Vec::new();
        // A free port can be taken between our probe and Kafka's bind
        // (kafka.sh refuses a taken port, or the node fails to bind): retry
        // on new ports, in a new cluster folder.
        for attempt in 0..3 {
            let port = free_port();
            let ctrl_port = loop {
                let p = free_port();
                if p != port {
                    break p;
                }
            };
            let proxy = with_proxy.then(|| Proxy::start(port));
            let advertised = proxy.as_ref().map_or(port, |p| p.port());
            let cluster = dir.path().join(format!("attempt-{attempt}"));
            let mut cmd = Command::new("bash");
            cmd.arg(&script)
                .arg("start")
                .arg("--dir")
                .arg(&cluster)
                .args(["--port", &port.to_string()])
                .args(["--ctrl-port", &ctrl_port.to_string()])
                .args(["--advertise", &format!("127.0.0.1:{advertised}")])
                .args(["--owner", &std::process::id().to_string()])
                .arg("--static-quorum")
                .args(["--timeout", "120"]);
            for prop in KAFKA_TEST_PROPS {
                cmd.args(["--prop", prop]);
            }
            cmd.args(extra(port, ctrl_port));
            let out = cmd
                .env("LOGCATCH_KAFKA_HOME", home)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            let pid = std::fs::read_to_string(cluster.join("node-1.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            match pid {
                Some(pid) if out.status.success() => {
                    return Broker {
                        server: Server::Kafka {
                            node_dir: cluster.join("node-1"),
                            pid,
                        },
                        port,
                        proxy,
                        _dir: dir,
                    };
                }
                _ => errors.push(format!(
                    "attempt {attempt} on ports {port}/{ctrl_port}: kafka.sh start {}:\n{}",
                    out.status,
                    tail_lines(&String::from_utf8_lossy(&out.stderr), 30)
                )),
            }
        }
        panic!(
            "Apache Kafka ({}) did not start:\n{}",
            home.display(),
            errors.join("\n")
        );
    }

    fn start_tansu() -> Broker {
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
            let addr = format!("127.0.0.1:{port}");
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open tansu.log");
            writeln!(&log, "=== test harness: attempt {attempt}, port {port} ===").ok();
            let mut child = Command::new(&bin)
                .arg("broker")
                .arg("--listener-url")
                .arg(format!("tcp://{addr}"))
                .arg("--advertised-listener-url")
                .arg(format!("tcp://{addr}"))
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
            match wait_ready(&mut child, &addr, Duration::from_secs(30)) {
                Ok(()) => {
                    return Broker {
                        server: Server::Tansu { child, log_path },
                        port,
                        proxy: None,
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

    /// The address the broker itself listens on.
    pub fn direct_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The proxy, mutably (for `down()` / `up()`).
    pub fn proxy_mut(&mut self) -> &mut Proxy {
        self.proxy
            .as_mut()
            .expect("this broker was started without a proxy (use Broker::start_with_proxy)")
    }

    /// Which broker this is: "kafka" or "tansu".
    pub fn kind(&self) -> &'static str {
        match self.server {
            Server::Kafka { .. } => "kafka",
            Server::Tansu { .. } => "tansu",
        }
    }

    /// The broker's own log file (Kafka's `server.log`, or tansu's output).
    pub fn log_path(&self) -> PathBuf {
        match &self.server {
            Server::Kafka { node_dir, .. } => node_dir.join("logs/server.log"),
            Server::Tansu { log_path, .. } => log_path.clone(),
        }
    }

    /// The broker's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Creates a topic with `partitions` partitions through the Kafka admin
    /// API. An already existing topic is not an error.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        create_topic(&self.addr(), topic, partitions);
    }

    /// [`Broker::create_topic`] with topic `configs` (e.g.
    /// `("max.message.bytes", "65536")`).
    pub fn create_topic_with(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        create_topic_with(&self.addr(), topic, partitions, configs);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match &mut self.server {
            Server::Kafka { pid, .. } => kill_kafka(*pid),
            Server::Tansu { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            eprintln!(
                "--- {} log (last 30 lines) [{}] ---\n{}",
                self.kind(),
                self.log_path().display(),
                tail_lines(&self.log(), 30)
            );
        }
    }
}

/// SIGKILLs the Kafka node `pid` (if that pid is still a Kafka node) and
/// waits up to 5 s for it to be gone, so that the next test does not share
/// the cores with a dying JVM.
fn kill_kafka(pid: u32) {
    let is_kafka = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.windows(11).any(|w| w == b"kafka.Kafka"))
            .unwrap_or(false)
    };
    if !is_kafka() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdin(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // Gone, or a zombie (its memory is freed; init reaps it).
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state.rsplit_once(')').map(|(_, r)| r.trim_start());
        if state.is_none_or(|s| s.starts_with('Z')) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
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
            return Err(format!("the broker exited early with {status}"));
        }
        if let Ok(md) = probe.client().fetch_metadata(None, Duration::from_secs(2)) {
            if !md.brokers().is_empty() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no metadata from the broker within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Creates `topic` with `partitions` partitions (replication 1) through
/// rdkafka's AdminClient. "Already exists" is fine.
pub fn create_topic(addr: &str, topic: &str, partitions: i32) {
    create_topic_with(addr, topic, partitions, &[]);
}

/// Creates `topic` at `addr` with the admin API (`repl` replicas, topic
/// `configs`, the broker given `timeout`); one that exists is fine. Does
/// not wait for it to show in metadata: each caller waits for what it
/// needs.
pub fn admin_create_topic(
    addr: &str,
    topic: &str,
    partitions: i32,
    repl: TopicReplication<'_>,
    configs: &[(&str, &str)],
    timeout: Duration,
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("log_level", "3")
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let new = configs
        .iter()
        .fold(NewTopic::new(topic, partitions, repl), |t, (k, v)| {
            t.set(k, v)
        });
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results = rt
        .block_on(admin.create_topics([&new], &opts))
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("create topic {name}: {code:?}"),
        }
    }
}

/// [`create_topic`] with topic `configs`.
pub fn create_topic_with(addr: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let one = TopicReplication::Fixed(1);
    admin_create_topic(
        addr,
        topic,
        partitions,
        one,
        configs,
        Duration::from_secs(10),
    );
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
pub fn partitions_of<C: rdkafka::ClientContext>(
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
