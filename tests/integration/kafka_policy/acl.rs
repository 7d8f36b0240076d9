//! A producer with only WRITE and DESCRIBE ACLs on its topics, on a
//! one-node Apache Kafka with the KRaft `StandardAuthorizer`.
//!
//! Over PLAINTEXT every client is `User:ANONYMOUS`, and so is the broker
//! itself (towards its controller). The setup that makes CreateTopics
//! refused while Produce works: `allow.everyone.if.no.acl.found=true` (a
//! resource with no ACL is open, so the broker starts), then ANONYMOUS is
//! granted CLUSTER_ACTION (what the broker needs), ALTER (so that the test
//! can add ACLs later) and DESCRIBE on the cluster, and WRITE and DESCRIBE
//! on topics `T` and `U`. The cluster and those topics now have ACLs, so
//! what is not granted is refused: CREATE (on the cluster and on the
//! topics) and READ. IDEMPOTENT_WRITE is not granted either: WRITE on a
//! topic implies it (KIP-679). The Kafka CLI's `topics --create` is checked
//! to be refused, even for `T` which exists.
//!
//! `T` is created before the ACLs; `U` never is by the test. logcatch runs
//! with `create_topics` on (its default):
//! 1. every line of source `a` arrives in `T` (logcatch must not need
//!    CreateTopics for a topic that exists);
//! 2. source `b`'s lines, for `U`, make logcatch log an error naming the
//!    missing ACL (CREATE on topic U); it keeps running and nothing is
//!    delivered or dead-lettered; the lines wait in the spool;
//! 3. READ is granted (the test's consumer needs it) after the daemon
//!    reports `a`'s lines delivered, and `T` holds them exactly once;
//! 4. CREATE on `U` is granted: logcatch creates `U` at its next retry and
//!    `b`'s lines arrive exactly once. The stall is from the grant (once
//!    the CLI returned) to the last line consumed (the retry backs off up
//!    to 30 s).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{counter, dead_letters, wait_queue};
use crate::common::*;

const T: &str = "acl-granted";
const U: &str = "acl-missing";
const WAIT: Duration = Duration::from_secs(120);
/// Source `a`'s lines (to `T`) and source `b`'s (to `U`).
const A_LINES: std::ops::Range<u64> = 0..2_000;
const B_LINES: std::ops::Range<u64> = 2_000..3_000;

/// The broker settings of this case (see the module doc).
const AUTHORIZER_PROPS: &[&str] = &[
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found=true",
];

/// The error logcatch logs when Kafka refuses it for want of an ACL (see
/// `TopicCreator::ensure`).
const ACL_ERROR: &str = "Kafka refuses logcatch for want of an ACL";

#[test]
fn acl_write_describe_only_delivers_to_an_existing_topic_and_holds_a_missing_ones_lines_native() {
    acl_case("native");
}

#[test]
fn acl_write_describe_only_delivers_to_an_existing_topic_and_holds_a_missing_ones_lines_librdkafka()
{
    acl_case("librdkafka");
}

/// Runs a Kafka CLI tool; panics with its output unless it exits 0.
fn tool_ok(args: &[&str]) -> String {
    let out = kafka_tool(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kafka.sh tool {args:?} failed ({}):\n{}",
        out.status,
        tail_lines(&text, 30)
    );
    text
}

/// Grants `User:ANONYMOUS` the `operations` on `resource` (e.g.
/// `["--topic", T]` or `["--cluster"]`).
fn grant(addr: &str, operations: &[&str], resource: &[&str]) {
    let mut args = vec![
        "acls",
        "--bootstrap-server",
        addr,
        "--add",
        "--allow-principal",
        "User:ANONYMOUS",
    ];
    for op in operations {
        args.extend(["--operation", op]);
    }
    args.extend(resource);
    tool_ok(&args);
}

/// Asserts that the Kafka CLI cannot create `topic`: an authorization
/// error, not "already exists".
fn assert_create_refused(addr: &str, topic: &str) {
    let out = kafka_tool(&[
        "topics",
        "--bootstrap-server",
        addr,
        "--create",
        "--topic",
        topic,
        "--partitions",
        "1",
        "--replication-factor",
        "1",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && text.contains("TopicAuthorizationException"),
        "CreateTopics {topic} should be refused for want of CREATE ({}):\n{}",
        out.status,
        tail_lines(&text, 20)
    );
}

/// A one-node Kafka with the authorizer, topic `T`, and the ACLs of the
/// module doc; checks that the CLI cannot create `T`.
fn authorized_env() -> TestEnv {
    let env = TestEnv::with_broker(Broker::start_with_props(AUTHORIZER_PROPS));
    let addr = env.addr();
    env.broker.create_topic(T, 1);
    // Topics first: adding ACLs takes ALTER on the cluster, open until the
    // cluster has an ACL.
    grant(&addr, &["Write", "Describe"], &["--topic", T, "--topic", U]);
    grant(
        &addr,
        &["ClusterAction", "Alter", "Describe"],
        &["--cluster"],
    );
    assert_create_refused(&addr, T);
    env
}

/// While CREATE is missing: the daemon keeps running, `b`'s lines stay in
/// the spool (at least as many bytes waiting as in `held`), only `a`'s
/// `n_a` lines are delivered, and nothing is dead-lettered.
fn assert_held(d: &mut Daemon, data_dir: &Path, n_a: u64, held: &serde_json::Value) {
    std::thread::sleep(Duration::from_secs(2));
    d.assert_running();
    let q = super::queue(d.config_path());
    assert_eq!(
        (counter(&q, "delivered"), counter(&q, "dead_lettered")),
        (n_a, 0),
        "only a's lines are delivered and nothing is dead-lettered while CREATE is missing:\n{q:#}"
    );
    assert!(
        counter(&q, "waiting_bytes") >= counter(held, "waiting_bytes"),
        "b's lines left the spool without being delivered:\n{q:#}"
    );
    assert_eq!(dead_letters(data_dir), 0, "nothing is dead-lettered");
}

fn acl_case(client: &str) {
    let env = authorized_env();
    let addr = env.addr();
    let a_log = env.path("a.log");
    let b_log = env.path("b.log");
    write_numbered(&a_log, A_LINES.start, A_LINES.end);
    let cfg = env
        .config(T)
        .kafka("client", client)
        .source("a", &a_log)
        .source_to("b", &b_log, U);
    let data_dir = cfg.data_dir.clone();
    let started = Instant::now();
    let mut d = env.start(&cfg);

    // 1. Every line of `a` delivered to T, as the daemon reports it (the
    // test cannot read T yet).
    let n_a = A_LINES.end - A_LINES.start;
    wait_queue(&mut d, "a's lines delivered to T", WAIT, |q| {
        counter(q, "delivered") >= n_a && counter(q, "waiting_bytes") == 0
    });
    let t_delivered = started.elapsed();

    // 2. `b`'s lines for U: refused for want of CREATE, logged, held.
    write_numbered(&b_log, B_LINES.start, B_LINES.end);
    let refused_at = Instant::now();
    let line = d.wait_log(ACL_ERROR, 1, WAIT);
    let refusal_logged = refused_at.elapsed();
    assert!(
        line.contains("CREATE on topic") && line.contains(U),
        "the ACL error does not name the missing ACL (CREATE on topic {U}):\n{line}"
    );
    eprintln!("kafka_policy: acl client={client}: the refusal as logged:\n{line}");
    let held = wait_queue(&mut d, "b's lines spooled and waiting", WAIT, |q| {
        counter(q, "waiting_bytes") >= (B_LINES.end - B_LINES.start) * LINE_LEN as u64
    });
    assert_held(&mut d, &data_dir, n_a, &held);

    // 3. READ for the test's consumer; T holds a's lines exactly once.
    grant(&addr, &["Read"], &["--topic", T, "--topic", U]);
    let msgs = d
        .consume(&addr, T)
        .until_count(n_a as usize)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, A_LINES);

    // 4. CREATE on U: logcatch creates it and delivers b's lines once.
    grant(&addr, &["Create"], &["--topic", U]);
    let granted = Instant::now();
    let n_b = (B_LINES.end - B_LINES.start) as usize;
    d.consume(&addr, U)
        .until_count(n_b)
        .quiet(Duration::ZERO)
        .timeout(WAIT)
        .expect("b's lines in U after CREATE was granted");
    let (stall, held) = (granted.elapsed(), refused_at.elapsed());
    let msgs = d.consume(&addr, U).until_count(n_b).timeout(WAIT).run();
    assert_exactly_once(&msgs, B_LINES);
    let q = super::queue(d.config_path());
    assert_eq!(counter(&q, "dead_lettered"), 0, "{q:#}");
    assert_eq!(dead_letters(&data_dir), 0, "nothing is dead-lettered");
    let msgs = Consume::new(&addr, T)
        .until_count(n_a as usize)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, A_LINES);
    d.stop();
    eprintln!(
        "kafka_policy: acl client={client}: T delivered {:.1} s after start; ACL error logged {:.1} s after U's lines; U's lines held {:.1} s in all, {:.1} s of it after CREATE was granted (stall)",
        t_delivered.as_secs_f64(),
        refusal_logged.as_secs_f64(),
        held.as_secs_f64(),
        stall.as_secs_f64()
    );
}
