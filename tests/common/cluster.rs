//! A three-node Apache Kafka (KRaft) cluster for the cluster fault suite
//! (`tests/integration/cluster/`): [`Cluster`] starts it with
//! `scripts/kafka.sh start --nodes 3` on a free block of loopback ports
//! (broker listeners `BASE..BASE+2`, controllers `BASE+50..BASE+52`; RF 3
//! and `min.insync.replicas=2` are kafka.sh's defaults at three nodes), and
//! offers the faults the cases inject on one node: `kill -9`, a
//! controlled shutdown (SIGTERM, then wait), SIGSTOP/SIGCONT, a restart;
//! plus topic creation and leader lookup through rdkafka.
//!
//! Invariants: at most one cluster runs in the test process at a time (a
//! process-wide lock held for the cluster's life: three JVMs on a two-core
//! machine are enough); every node started, also by a restart, carries a
//! `--owner` watchdog for this process, so a test process that dies
//! leaves no JVM behind; dropping the [`Cluster`] SIGKILLs
//! every node (a stopped one too) and waits for them to be gone before the lock is released.
//!
//! Must never: signal a process that is not one of this cluster's Kafka
//! nodes (every signal goes to the pid in `node-I.pid` after checking that
//! it runs `kafka.Kafka`).

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::TopicReplication;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

use super::broker::admin_create_topic;
use super::{kafka_home, tail_lines, wait_for, KAFKA_TEST_PROPS};

/// How many nodes a [`Cluster`] has.
pub const NODES: usize = 3;

/// Held by the running [`Cluster`]: one at a time per test process.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

/// The repository's `scripts/kafka.sh`.
fn kafka_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

/// A running three-node KRaft cluster on loopback; every node is SIGKILLed
/// on drop. Nodes are numbered 1 to 3 (their `node.id`), node 1 first in
/// [`Cluster::bootstrap`].
pub struct Cluster {
    /// The cluster folder handed to kafka.sh (`node-I/`, `node-I.pid`).
    dir: PathBuf,
    base: u16,
    meta: BaseProducer,
    _tmp: tempfile::TempDir,
    _one: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts three nodes (waiting for the lock if another cluster of this
    /// process runs), retrying on other ports when a port was taken
    /// between the probe and Kafka's bind.
    pub fn start() -> Cluster {
        let waited = Instant::now();
        let one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        if waited.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "cluster: waited {:.1} s for the previous cluster of this process",
                waited.elapsed().as_secs_f64()
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("kafka3-")
            .tempdir()
            .expect("tempdir");
        let mut errors = Vec::new();
        for attempt in 0..3 {
            let base = free_block();
            let dir = tmp.path().join(format!("attempt-{attempt}"));
            let mut args = vec![
                "start".to_string(),
                "--nodes".into(),
                NODES.to_string(),
                "--dir".into(),
                dir.display().to_string(),
                "--port".into(),
                base.to_string(),
            ];
            for prop in KAFKA_TEST_PROPS {
                args.extend(["--prop".to_string(), prop.to_string()]);
            }
            let started = Instant::now();
            match run_kafka_sh(&args) {
                Ok(_) => {
                    eprintln!(
                        "cluster: 3 nodes on 127.0.0.1:{base}..{} ready in {:.1} s ({})",
                        base + 2,
                        started.elapsed().as_secs_f64(),
                        dir.display()
                    );
                    let meta = ClientConfig::new()
                        .set("bootstrap.servers", bootstrap_of(base))
                        .set("socket.connection.setup.timeout.ms", "2000")
                        .set("log_level", "0")
                        .create()
                        .expect("metadata client");
                    return Cluster {
                        dir,
                        base,
                        meta,
                        _tmp: tmp,
                        _one: one,
                    };
                }
                Err(e) => {
                    kill_all(&dir);
                    errors.push(format!("attempt {attempt} on base port {base}: {e}"));
                }
            }
        }
        panic!(
            "a 3-node Apache Kafka cluster ({}) did not start:\n{}",
            kafka_home().display(),
            errors.join("\n")
        );
    }

    /// `127.0.0.1:BASE,127.0.0.1:BASE+1,127.0.0.1:BASE+2`: node 1 first.
    pub fn bootstrap(&self) -> String {
        bootstrap_of(self.base)
    }

    /// Node `node`'s broker address.
    pub fn addr(&self, node: usize) -> String {
        check_node(node);
        format!("127.0.0.1:{}", self.base as usize + node - 1)
    }

    /// The pid of node `node` while it runs (also while SIGSTOPped).
    pub fn pid(&self, node: usize) -> Option<u32> {
        check_node(node);
        node_pid(&self.dir, node)
    }

    fn live_pid(&self, node: usize, what: &str) -> u32 {
        self.pid(node)
            .unwrap_or_else(|| panic!("cannot {what} node {node}: it is not running"))
    }

    /// SIGKILLs node `node` and waits until it is gone.
    pub fn kill9(&self, node: usize) {
        let pid = self.live_pid(node, "kill -9");
        signal(pid, "KILL");
        wait_gone(pid, Duration::from_secs(10));
    }

    /// A controlled shutdown: SIGTERM, then waits up to `timeout` for the
    /// node to exit (it moves its leaderships away first); a node still
    /// up then is SIGKILLed and the test fails. Returns how long it took.
    pub fn shutdown(&self, node: usize, timeout: Duration) -> Duration {
        let pid = self.live_pid(node, "shut down");
        let t0 = Instant::now();
        signal(pid, "TERM");
        if !wait_gone(pid, timeout) {
            signal(pid, "KILL");
            panic!("node {node} (pid {pid}) did not exit within {timeout:?} of SIGTERM");
        }
        t0.elapsed()
    }

    /// SIGSTOP: the node keeps its sockets but answers nothing.
    pub fn sigstop(&self, node: usize) {
        signal(self.live_pid(node, "SIGSTOP"), "STOP");
    }

    /// SIGCONT after [`Cluster::sigstop`].
    pub fn sigcont(&self, node: usize) {
        signal(self.live_pid(node, "SIGCONT"), "CONT");
    }

    /// Starts node `node` again (`kafka.sh start --node`), which returns
    /// once every running node lists all three brokers: the others must be
    /// running. Returns how long it took.
    pub fn restart(&self, node: usize) -> Duration {
        check_node(node);
        self.start_nodes(Some(node))
    }

    /// Starts every node that is not running (after two were taken down;
    /// [`Cluster::restart`] of one of them would wait for the other).
    pub fn restart_stopped(&self) -> Duration {
        self.start_nodes(None)
    }

    fn start_nodes(&self, node: Option<usize>) -> Duration {
        let t0 = Instant::now();
        let mut args = vec![
            "start".to_string(),
            "--dir".into(),
            self.dir.display().to_string(),
        ];
        if let Some(n) = node {
            args.extend(["--node".to_string(), n.to_string()]);
        }
        if let Err(e) = run_kafka_sh(&args) {
            panic!("restarting node(s) {node:?} failed: {e}");
        }
        t0.elapsed()
    }

    /// Node `node`'s `server.log` (the last `n` lines).
    pub fn log_tail(&self, node: usize, n: usize) -> String {
        check_node(node);
        let log = self.dir.join(format!("node-{node}/logs/server.log"));
        tail_lines(&std::fs::read_to_string(log).unwrap_or_default(), n)
    }

    /// The leader of `topic`'s `partition` as a broker's metadata says
    /// now (any broker that answers within 5 s), or `None` (no answer, no
    /// such partition, or no leader: -1).
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<i32> {
        let md = self
            .meta
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        (p.leader() >= 0).then_some(p.leader())
    }

    /// Polls [`Cluster::leader_of`] until `ok` holds for the leader.
    pub fn wait_leader(
        &self,
        topic: &str,
        partition: i32,
        what: &str,
        timeout: Duration,
        ok: impl Fn(i32) -> bool,
    ) -> i32 {
        wait_for(
            &format!("{what} (leader of {topic}-{partition})"),
            timeout,
            || self.leader_of(topic, partition).filter(|l| ok(*l)),
        )
    }

    /// Creates `topic` with `partitions` partitions of `rf` replicas and the
    /// topic `configs`, and waits until each partition has a leader.
    pub fn create_topic(&self, topic: &str, partitions: i32, rf: i32, configs: &[(&str, &str)]) {
        self.create(topic, partitions, TopicReplication::Fixed(rf), configs);
    }

    /// Creates a one-partition `topic` on the brokers `replicas`, the first
    /// being its preferred leader (so that several topics share a leader),
    /// and waits until that one leads it.
    pub fn create_topic_on(&self, topic: &str, replicas: &[i32], configs: &[(&str, &str)]) {
        let assignment: &[&[i32]] = &[replicas];
        self.create(topic, 1, TopicReplication::Variable(assignment), configs);
        self.wait_leader(
            topic,
            0,
            "the preferred leader",
            Duration::from_secs(30),
            |l| l == replicas[0],
        );
    }

    fn create(&self, topic: &str, partitions: i32, repl: TopicReplication, cfg: &[(&str, &str)]) {
        let boot = self.bootstrap();
        admin_create_topic(&boot, topic, partitions, repl, cfg, Duration::from_secs(30));
        for p in 0..partitions {
            self.wait_leader(topic, p, "a leader", Duration::from_secs(30), |_| true);
        }
    }

    /// One line a node: pid and state (for failure messages).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for node in 1..=NODES {
            let state = match self.pid(node) {
                Some(pid) => format!("pid {pid} {}", proc_state(pid)),
                None => "down".into(),
            };
            writeln!(s, "node {node} ({}): {state}", self.addr(node)).unwrap();
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprint!("--- cluster at failure ---\n{}", self.describe());
            for node in 1..=NODES {
                eprintln!(
                    "--- node {node} server.log (last 15 lines) ---\n{}",
                    self.log_tail(node, 15)
                );
            }
        }
        kill_all(&self.dir);
    }
}

fn check_node(node: usize) {
    assert!(
        (1..=NODES).contains(&node),
        "no node {node} in a {NODES}-node cluster"
    );
}

fn bootstrap_of(base: u16) -> String {
    (0..NODES as u16)
        .map(|i| format!("127.0.0.1:{}", base + i))
        .collect::<Vec<_>>()
        .join(",")
}

/// A base port whose three broker ports and three controller ports
/// (base+50..) are all free now, picked from 20000..40000 starting at a
/// point derived from the pid and the clock.
fn free_block() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    let mut base = 20_000 + (seed % 20_000) as u16;
    for _ in 0..200 {
        let free = (0..NODES as u16)
            .flat_map(|i| [base + i, base + 50 + i])
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
        base = 20_000 + (base - 20_000 + 97) % 20_000;
    }
    panic!("no free block of ports for a 3-node Kafka cluster");
}

/// Runs `scripts/kafka.sh start ARGS --owner <this process>`; its stdout,
/// or why it failed with its stderr's tail.
fn run_kafka_sh(args: &[String]) -> Result<String, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(kafka_sh()).args(args);
    cmd.args(["--owner", &std::process::id().to_string()]);
    let out = cmd
        .env("LOGCATCH_KAFKA_HOME", kafka_home())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run kafka.sh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kafka.sh {} exited {}:\n{}",
            args.join(" "),
            out.status,
            tail_lines(&String::from_utf8_lossy(&out.stderr), 30)
        ))
    }
}

/// The pid in `dir/node-N.pid` if that process runs Kafka.
fn node_pid(dir: &Path, node: usize) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(format!("node-{node}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let is_kafka = cmdline.windows(11).any(|w| w == b"kafka.Kafka");
    (is_kafka && !proc_state(pid).starts_with('Z')).then_some(pid)
}

/// The state letter of `/proc/PID/stat` (R, S, T for stopped, Z...), or
/// "gone".
fn proc_state(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rsplit_once(')') {
        Some((_, rest)) => rest.trim_start().chars().take(1).collect(),
        None => "gone".into(),
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed: {st}");
}

/// Waits until `pid` is gone or a zombie; false after `timeout`.
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let state = proc_state(pid);
        if state == "gone" || state.starts_with('Z') {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs every node of the cluster in `dir` (a SIGSTOPped one too) and
/// waits for them to be gone.
fn kill_all(dir: &Path) {
    let pids: Vec<u32> = (1..=NODES).filter_map(|n| node_pid(dir, n)).collect();
    for &pid in &pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    for pid in pids {
        wait_gone(pid, Duration::from_secs(10));
    }
}
