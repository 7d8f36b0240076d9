//! The cluster fault suite: the real `logcatch` binary against a
//! three-node Apache Kafka cluster ([`Cluster`]: KRaft, every node a broker
//! and a controller, RF 3, `min.insync.replicas=2`, Kafka's own timeouts),
//! with real `kill -9`, SIGTERM and SIGSTOP of its nodes.
//!
//! Every case runs both clients at once on one cluster (to save cluster
//! starts): one daemon with `kafka.client: native` and one with
//! `kafka.client: librdkafka`, each writing unique numbered lines to its
//! own topic, both topics on the same replicas (so one fault hits both).
//! At the end each topic is read whole, and each client must have 0 lines
//! lost and 0 duplicated, its daemon still running (and exiting 0 on
//! SIGTERM). The cases:
//! - [`leader`]: `kill -9` of the partition leader while lines flow, then
//!   its restart; a controlled shutdown (SIGTERM) of the leader, then its
//!   restart; `kill -9` of the leader and, at once, of both daemons, which
//!   are restarted during the election (then the node too);
//! - [`bootstrap`]: SIGSTOP of node 1, the first broker of the daemons'
//!   `brokers` list (a follower of the topics; nodes 2 and 3 healthy):
//!   delivery must go on while it is stopped, then SIGCONT;
//! - [`followers`]: one follower `kill -9`ed: delivery goes on; then the
//!   second one too (two of three nodes down: the controller quorum is
//!   lost too): nothing may be acknowledged; then both restart and
//!   delivery resumes;
//! - [`shared`]: two daemons share a one-partition topic; B writes about
//!   50 lines/s; A is `kill -9`ed in the middle of a 200,000-line
//!   catch-up and restarted while B goes on: A must finish in bounded
//!   time (its read-back does not wait for B to go quiet).
//!
//! Each case and client appends one line to the report,
//! `case=<name> client=<client> lines=<n> lost=<n> dup=<n> stall_s=<x.x> fault_s=<y.y>`,
//! and prints it. The stall is the longest time without delivery progress
//! (the daemon's acknowledged-line count, sampled every 100 ms) from the
//! fault on, in the stretches where delivery should go on (not while two
//! of three nodes are down); `fault_s` is how long the fault lasted (a
//! node down or stopped, in total; 0 for `shared_partition`, whose fault
//! is a `kill -9` of the daemon, restarted at once). The
//! report goes to `$LOGCATCH_CLUSTER_REPORT`, by default
//! `<CARGO_TARGET_TMPDIR>/cluster-report.txt` (`target/tmp/`); lines are
//! appended, never overwritten.
//!
//! Durations: by default short, seeded (which node leads, how long it is
//! down, when the fault comes), so that the whole suite
//! (`cargo test --test integration -- cluster:: --test-threads=2`) takes
//! under about 10 minutes on two cores; one cluster runs at a time (a lock
//! in [`Cluster`]), so a second test thread only overlaps the
//! read-backs. `LOGCATCH_CLUSTER_LONG=1` is the long run: SIGSTOP for 60 s
//! instead of 30, longer line flows at a higher rate, longer outages, and
//! repeated leader faults (several rounds per case). The seed is
//! `LOGCATCH_CLUSTER_SEED` if set, else the clock; every case prints it
//! (`LOGCATCH_CLUSTER_SEED=<seed>` replays the schedule).

mod bootstrap;
mod flow;
mod followers;
mod leader;
mod shared;

use std::fs::OpenOptions;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::cluster::Cluster;
use crate::common::Rng;
use flow::{Flow, Outcome};

/// The two clients every case runs with.
const CLIENTS: [&str; 2] = ["native", "librdkafka"];

/// The run's seed and length, from the environment, and a case's own
/// random schedule.
struct Settings {
    long: bool,
    rng: Rng,
}

impl Settings {
    /// For case `case`: prints the seed and the mode. The case's random
    /// numbers depend on the seed and its name only.
    fn for_case(case: &str) -> Settings {
        let seed = std::env::var("LOGCATCH_CLUSTER_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(crate::common::seed_from_env_or_time);
        let long = std::env::var("LOGCATCH_CLUSTER_LONG").is_ok_and(|v| v == "1");
        eprintln!(
            "cluster case {case}: seed {seed} (LOGCATCH_CLUSTER_SEED={seed} replays it), {} run",
            if long { "long" } else { "short" }
        );
        let salt = case.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Settings {
            long,
            rng: Rng::new(seed ^ salt),
        }
    }

    /// `short` by default, `long` in the long run.
    fn pick<T>(&self, short: T, long: T) -> T {
        if self.long {
            long
        } else {
            short
        }
    }

    /// A seeded duration in `ms` (milliseconds, half-open).
    fn ms(&mut self, ms: Range<u64>) -> Duration {
        Duration::from_millis(self.rng.range(ms))
    }

    /// A seeded node number in `nodes`.
    fn node(&mut self, nodes: &[i32]) -> i32 {
        nodes[self.rng.range(0..nodes.len() as u64) as usize]
    }
}

/// A case's temp dir and its cluster.
struct Case {
    name: &'static str,
    cluster: Cluster,
    dir: tempfile::TempDir,
}

impl Case {
    fn start(name: &'static str) -> Case {
        let dir = tempfile::Builder::new()
            .prefix(&format!("logcatch-cluster-{name}-"))
            .tempdir()
            .expect("tempdir");
        Case {
            name,
            cluster: Cluster::start(),
            dir,
        }
    }

    /// One flow per client, each into topic `<case>-<client>` created on
    /// `replicas` (the first leads), writing `per_sec` lines a second;
    /// returns once each daemon has acknowledged a first line.
    fn flows(&self, replicas: &[i32], per_sec: u64) -> Vec<Flow> {
        let mut flows: Vec<Flow> = CLIENTS
            .iter()
            .map(|client| {
                let topic = format!("{}-{client}", self.name);
                self.cluster.create_topic_on(&topic, replicas, &[]);
                Flow::start(
                    self.dir.path(),
                    &self.cluster,
                    (client, &topic, "app"),
                    0,
                    Some(per_sec),
                )
            })
            .collect();
        for f in &mut flows {
            f.wait_delivered(1, Duration::from_secs(60));
        }
        flows
    }

    /// The leader of the flows' partition now; the topics are placed
    /// alike, and a leader that differs between them is said.
    fn leader(&self, flows: &[Flow]) -> i32 {
        let leaders: Vec<i32> = flows
            .iter()
            .map(|f| {
                self.cluster
                    .wait_leader(&f.topic, 0, "a leader", Duration::from_secs(60), |_| true)
            })
            .collect();
        if leaders.iter().any(|l| *l != leaders[0]) {
            eprintln!(
                "cluster case {}: the topics have different leaders {leaders:?}; the fault hits node {}",
                self.name, leaders[0]
            );
        }
        leaders[0]
    }
}

/// The replicas of a topic led by `leader`: it, then the others in order.
fn led_by(leader: i32) -> Vec<i32> {
    let mut r = vec![leader];
    r.extend((1..=3).filter(|n| *n != leader));
    r
}

/// Where the report lines go.
fn report_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LOGCATCH_CLUSTER_REPORT").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let tmp = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp"));
    tmp.join("cluster-report.txt")
}

/// Stops every flow's writer (together), then finishes each flow (see
/// [`Flow::finish`]) with the stall measured over `windows`.
fn finish_all(
    cluster: &Cluster,
    mut flows: Vec<Flow>,
    windows: &[(Instant, Option<Instant>)],
) -> Vec<Outcome> {
    for f in &mut flows {
        f.stop_writing();
    }
    flows
        .into_iter()
        .map(|f| f.finish(cluster, windows))
        .collect()
}

/// Writes (and prints) one report line per outcome, then asserts that
/// each is exact, its daemon was fine, and the case saw no problem.
fn report_and_check(case: &str, outcomes: &[Outcome], fault: Duration) {
    let path = report_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("report dir");
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open the report {}: {e}", path.display()));
    let mut failures = Vec::new();
    for o in outcomes {
        let line = format!(
            "case={case} client={} lines={} lost={} dup={} stall_s={:.1} fault_s={:.1}\n",
            o.client,
            o.lines,
            o.lost,
            o.dup,
            o.stall.as_secs_f64(),
            fault.as_secs_f64()
        );
        file.write_all(line.as_bytes()).expect("write the report");
        eprint!("{line}");
        let mut why = o.problems.clone();
        if let Some(t) = &o.not_exact {
            why.push(format!("not exactly once: {t}"));
        }
        if let Some(e) = &o.daemon_error {
            why.push(format!("the daemon: {e}"));
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}:\n  {}\n--- its daemon.log (last 80 lines) ---\n{}",
                o.what,
                why.join("\n  "),
                o.log_tail
            ));
        }
    }
    eprintln!("cluster case {case}: report in {}", path.display());
    assert!(
        failures.is_empty(),
        "cluster case {case} failed:\n{}",
        failures.join("\n")
    );
}

/// Sleeps `d`, checking every 200 ms that every flow's daemon still runs.
fn sleep_watching(flows: &mut [Flow], d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        for f in flows.iter_mut() {
            f.daemon.assert_running();
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200)),
        );
    }
}
