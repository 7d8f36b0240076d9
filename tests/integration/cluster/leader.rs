//! Faults of the partition leader while lines flow, with both clients at
//! once: `kill -9` of the leader, its controlled shutdown (SIGTERM), and
//! `kill -9` of the leader followed at once by `kill -9` of both daemons,
//! which restart while the cluster elects a new leader. The node comes
//! back after a seeded pause; the long run repeats the fault on whichever
//! node leads next.

use std::time::{Duration, Instant};

use super::{finish_all, led_by, report_and_check, sleep_watching, Case, Settings};

/// What happens to the leader (and to logcatch).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Kill9,
    Shutdown,
    Kill9WithDaemons,
}

#[test]
fn kill9_of_the_leader_loses_and_duplicates_nothing() {
    leader_faults("leader_kill9", Fault::Kill9);
}

#[test]
fn a_controlled_shutdown_of_the_leader_loses_and_duplicates_nothing() {
    leader_faults("leader_shutdown", Fault::Shutdown);
}

#[test]
fn logcatch_killed_during_a_leader_election_loses_and_duplicates_nothing() {
    leader_faults("election_crash", Fault::Kill9WithDaemons);
}

fn leader_faults(name: &'static str, fault: Fault) {
    let mut s = Settings::for_case(name);
    let case = Case::start(name);
    let first = s.node(&[1, 2, 3]);
    let rate = s.pick(500, 1500);
    let rounds = s.pick(1, if fault == Fault::Kill9 { 5 } else { 3 });
    let mut flows = case.flows(&led_by(first), rate);
    let warm = s.ms(1000..3000);
    sleep_watching(&mut flows, warm);

    let mut fault_total = Duration::ZERO;
    let mut first_fault = None;
    for round in 1..=rounds {
        let leader = case.leader(&flows);
        let t = Instant::now();
        first_fault.get_or_insert(t);
        match fault {
            Fault::Kill9 => case.cluster.kill9(leader as usize),
            Fault::Shutdown => {
                let took = case
                    .cluster
                    .shutdown(leader as usize, Duration::from_secs(60));
                eprintln!(
                    "{name}: node {leader} shut down in {:.1} s",
                    took.as_secs_f64()
                );
            }
            Fault::Kill9WithDaemons => {
                case.cluster.kill9(leader as usize);
                for f in &mut flows {
                    f.daemon.kill9();
                }
                for f in &mut flows {
                    f.daemon.restart();
                }
            }
        }
        let down = s.ms(s.pick(3000..8000, 5000..20000));
        sleep_watching(&mut flows, down);
        let took = case.cluster.restart(leader as usize);
        fault_total += t.elapsed();
        eprintln!(
            "{name}: round {round}/{rounds}: node {leader} ({fault:?}) down {:.1} s, its restart took {:.1} s",
            down.as_secs_f64(),
            took.as_secs_f64()
        );
        let after = s.ms(s.pick(4000..4001, 10_000..20_000));
        sleep_watching(&mut flows, after);
    }
    let windows = [(first_fault.expect("one round at least"), None)];
    let outcomes = finish_all(&case.cluster, flows, &windows);
    report_and_check(name, &outcomes, fault_total);
}
