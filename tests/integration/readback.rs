//! The crash read-back by line identity, end to end: two daemons share a
//! one-partition topic; one is `kill -9`ed in the middle of a catch-up
//! while the other keeps writing. The read-back after the restart must end
//! while the neighbour is still writing (it reads up to the high watermark
//! taken when it starts, not until the partition is quiet), and the killed
//! daemon's lines arrive with none lost and none duplicated.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(120);
const TOPIC: &str = "shared";

#[test]
fn a_busy_neighbour_does_not_hold_up_the_read_back() {
    let env = TestEnv::new();
    env.broker.create_topic(TOPIC, 1);
    std::fs::create_dir_all(env.path("a")).unwrap();
    std::fs::create_dir_all(env.path("b")).unwrap();
    let (a_log, b_log) = (env.path("a/a.log"), env.path("b/b.log"));
    const TOTAL: u64 = 100_000;
    write_numbered(&a_log, 0, TOTAL);
    write_numbered(&b_log, 0, 10);
    let cfg = |dir: &str| ConfigBuilder::new(env.path(&format!("{dir}/data")), &env.addr(), TOPIC);
    let mut b = Daemon::with(&env.path("b"), &cfg("b").source("b", &b_log));
    // The neighbour: 50 lines/s for 40 s, whatever happens to `a`.
    let neighbour = write_numbered_slowly(&b_log, 10, 2010, 5, Duration::from_millis(100));
    let mut a = Daemon::with(&env.path("a"), &cfg("a").source("a", &a_log));
    // Kill `a` once some of its lines are in Kafka and their acks were
    // persisted (the cursor is written every few hundred ms).
    a.wait_log("forwarding to Kafka", 1, WAIT);
    thread::sleep(Duration::from_millis(1500));
    a.assert_running();
    a.kill9();
    let killed = Instant::now();
    a.restart();
    let line = a.wait_log(
        "read back the lines of ours Kafka has past the cursor",
        1,
        WAIT,
    );
    eprintln!("readback: {line} ({:?} after the kill)", killed.elapsed());
    assert!(
        !neighbour.is_finished(),
        "the neighbour stopped writing before the read-back ended: the test proves nothing"
    );
    assert_eq!(
        a.log_count("cannot read back what Kafka already has yet"),
        0,
        "the read-back failed or timed out:\n{}",
        a.log_tail(40)
    );
    let msgs = a
        .consume(&env.addr(), TOPIC)
        .until(|msgs| number_counts(msgs, "a").len() as u64 == TOTAL)
        .timeout(WAIT)
        .run();
    let a_msgs: Vec<Msg> = of_source(&msgs, "a").into_iter().cloned().collect();
    let tally = Tally::of(&a_msgs, 0..TOTAL);
    eprintln!(
        "readback: {} messages of `a` for {TOTAL} lines: {} missing, {} duplicate copies",
        a_msgs.len(),
        tally.missing.len(),
        tally.duplicate_count()
    );
    assert!(tally.is_exact(), "{}", tally.describe());
    neighbour.join().expect("neighbour writer");
    a.stop();
    b.stop();
}
