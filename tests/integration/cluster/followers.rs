//! Followers down under `min.insync.replicas=2`, with RF 3: one follower
//! is `kill -9`ed and delivery must go on (in the last 5 s of that phase
//! each daemon must have acknowledged lines; Kafka drops the dead node
//! from the in-sync replicas once its session times out). Then the second
//! follower is `kill -9`ed too: two of three nodes are down (the KRaft
//! controller quorum with them), so Kafka cannot acknowledge anything
//! with acks=all, and no daemon may count a line acknowledged from 2 s
//! after that kill (answers already on their way) until the nodes are
//! back. Both restart; delivery resumes, and nothing is lost or
//! duplicated.
//!
//! The stall reported is the longest stretch without progress while
//! delivery should go on: from the first kill to the second, and from the
//! restart's return (every node lists all brokers) to the end; the wait
//! with two nodes down is by design and not counted.

use std::time::{Duration, Instant};

use super::{finish_all, report_and_check, sleep_watching, Case, Settings};

/// The end of the one-follower phase in which progress must be seen.
const MUST_MOVE_IN: Duration = Duration::from_secs(5);
/// Acks of requests answered just before the second kill may still come.
const GRACE: Duration = Duration::from_secs(2);

#[test]
fn delivery_goes_on_with_one_follower_down_and_waits_with_two() {
    let name = "followers_down";
    let mut s = Settings::for_case(name);
    let case = Case::start(name);
    let leader = s.node(&[1, 2, 3]);
    let mut followers: Vec<i32> = (1..=3).filter(|n| *n != leader).collect();
    if s.rng.range(0..2) == 1 {
        followers.swap(0, 1);
    }
    let (f1, f2) = (followers[0], followers[1]);
    let rate = s.pick(500, 1500);
    let mut flows = case.flows(&[leader, f1, f2], rate);
    let warm = s.ms(1000..3000);
    sleep_watching(&mut flows, warm);

    // One follower down: delivery goes on.
    let one_down = s.pick(Duration::from_secs(20), Duration::from_secs(45));
    let t1 = Instant::now();
    case.cluster.kill9(f1 as usize);
    sleep_watching(&mut flows, one_down);
    let t2 = Instant::now();
    for f in &mut flows {
        let moves = f.progress.moves_between(t2 - MUST_MOVE_IN, t2);
        eprintln!(
            "{name}: {} with node {f1} down: longest stall {:.1} s, {moves} move(s) in the last {MUST_MOVE_IN:?}",
            f.client,
            f.progress.stall(&[(t1, Some(t2))]).as_secs_f64()
        );
        if moves == 0 {
            f.problems.push(format!(
                "nothing acknowledged in the last {MUST_MOVE_IN:?} of {one_down:?} with one follower \
                 (node {f1}) down: delivery did not go on"
            ));
        }
    }

    // Two down: nothing can be acknowledged. Longer than the request
    // timeout (30 s) even in the short run, so that Produce requests the
    // leader appended but cannot commit time out (REQUEST_TIMED_OUT) and
    // must be sent again without a duplicate.
    case.cluster.kill9(f2 as usize);
    let two_down = s.pick(Duration::from_secs(35), Duration::from_secs(50));
    sleep_watching(&mut flows, two_down);
    let t3 = Instant::now();
    for f in &mut flows {
        let moves = f.progress.moves_between(t2 + GRACE, t3);
        eprintln!(
            "{name}: {} with nodes {f1} and {f2} down: {moves} move(s) after the first {GRACE:?}",
            f.client
        );
        if moves > 0 {
            f.problems.push(format!(
                "lines were counted acknowledged while two of three nodes were down \
                 (min.insync.replicas=2): {moves} move(s) of the delivered count"
            ));
        }
    }
    let took = case.cluster.restart_stopped();
    let t4 = Instant::now();
    let fault = t4 - t1;
    eprintln!(
        "{name}: leader {leader}; node {f1} down {:.1} s, node {f2} {:.1} s; their restart took {:.1} s",
        fault.as_secs_f64(),
        (t4 - t2).as_secs_f64(),
        took.as_secs_f64()
    );
    let after = s.ms(s.pick(5000..5001, 10_000..20_000));
    sleep_watching(&mut flows, after);
    let outcomes = finish_all(&case.cluster, flows, &[(t1, Some(t2)), (t4, None)]);
    report_and_check(name, &outcomes, fault);
}
