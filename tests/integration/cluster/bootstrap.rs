//! A hung first bootstrap broker: node 1, first in the daemons' `brokers`
//! list, is SIGSTOPped (it keeps its sockets open and answers nothing, like
//! a long GC pause or a stuck disk) while nodes 2 and 3 stay healthy. The
//! topics are led by node 2 or 3 (seeded) with node 1 a follower, so the
//! cluster itself can go on once it has fenced node 1 (Kafka's broker
//! session timeout) and dropped it from the in-sync replicas. Delivery
//! must go on while node 1 is stopped: each daemon must have acknowledged
//! lines in the last 5 s of the stop. Then SIGCONT.

use std::time::{Duration, Instant};

use super::{finish_all, report_and_check, sleep_watching, Case, Settings};

/// The end of the stop in which progress must be seen.
const MUST_MOVE_IN: Duration = Duration::from_secs(5);

#[test]
fn a_stopped_first_bootstrap_broker_does_not_stop_delivery() {
    let name = "bootstrap_sigstop";
    let mut s = Settings::for_case(name);
    let case = Case::start(name);
    let leader = s.node(&[2, 3]);
    let other = 5 - leader;
    let rate = s.pick(500, 1500);
    let mut flows = case.flows(&[leader, other, 1], rate);
    let warm = s.ms(1000..3000);
    sleep_watching(&mut flows, warm);

    let stop_for = s.pick(Duration::from_secs(30), Duration::from_secs(60));
    let t0 = Instant::now();
    case.cluster.sigstop(1);
    sleep_watching(&mut flows, stop_for);
    let end = Instant::now();
    for f in &mut flows {
        let moves = f.progress.moves_between(end - MUST_MOVE_IN, end);
        let stall = f.progress.stall(&[(t0, Some(end))]);
        eprintln!(
            "{name}: {} while node 1 was stopped: longest stall {:.1} s, {moves} move(s) in its last {MUST_MOVE_IN:?}",
            f.client,
            stall.as_secs_f64()
        );
        if moves == 0 {
            f.problems.push(format!(
                "no line was acknowledged in the last {MUST_MOVE_IN:?} of the {stop_for:?} SIGSTOP of node 1 \
                 (longest stall {:.1} s): delivery did not go on past the hung bootstrap broker",
                stall.as_secs_f64()
            ));
        }
    }
    case.cluster.sigcont(1);
    let fault = t0.elapsed();
    eprintln!(
        "{name}: node 1 stopped for {:.1} s (leader: node {leader})",
        fault.as_secs_f64()
    );
    let after = s.ms(s.pick(4000..4001, 10_000..20_000));
    sleep_watching(&mut flows, after);
    let outcomes = finish_all(&case.cluster, flows, &[(t0, None)]);
    report_and_check(name, &outcomes, fault);
}
