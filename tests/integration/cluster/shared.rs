//! Two daemons share a one-partition topic (RF 3) on the cluster, per
//! client: B writes a steady trickle (about 50 lines/s) under its own
//! source name all along; A starts on a file of 200,000 lines (1,000,000
//! in the long run), is `kill -9`ed in the middle of that catch-up (at a
//! seeded share of it) and restarted at once while B goes on. A's
//! read-back after the restart must end while B is writing (it reads up
//! to the high watermark taken when it starts, never until the partition
//! is quiet), and A must have delivered everything within a bound; both
//! A's and B's lines arrive exactly once. The one-node version is
//! `tests/integration/readback.rs`.
//!
//! The report line of each client adds A's and B's lines up; the stall is
//! A's, from its kill to its last acknowledgement (its restart and
//! read-back included).

use std::thread;
use std::time::{Duration, Instant};

use super::flow::{admin_get, flow_file, Flow};
use super::{report_and_check, Case, Settings, CLIENTS};

/// B's lines a second.
const TRICKLE: u64 = 50;
/// How long after its kill A may take to deliver everything.
const A_BOUND: Duration = Duration::from_secs(150);

#[test]
fn a_daemon_killed_mid_catch_up_finishes_beside_a_busy_neighbour() {
    let name = "shared_partition";
    let mut s = Settings::for_case(name);
    let case = Case::start(name);
    let total = s.pick(200_000, 1_000_000);
    let kill_at = total * s.rng.range(5..40) / 100;
    let root = case.dir.path();
    let mut bs = Vec::new();
    for client in CLIENTS {
        let topic = format!("shared-{client}");
        case.cluster.create_topic(&topic, 1, 3, &[]);
        bs.push(Flow::start(
            root,
            &case.cluster,
            (client, &topic, "b"),
            0,
            Some(TRICKLE),
        ));
    }
    for b in &mut bs {
        b.wait_delivered(1, Duration::from_secs(60));
    }
    // Both catch-up files first: writing one takes a while, and the other
    // daemon must not be far into its catch-up meanwhile.
    for client in CLIENTS {
        flow_file(root, &format!("shared-{client}"), "a", total);
    }
    let mut as_: Vec<Flow> = CLIENTS
        .iter()
        .map(|client| {
            let topic = format!("shared-{client}");
            Flow::start(root, &case.cluster, (client, &topic, "a"), total, None)
        })
        .collect();

    let killed = kill_mid_catch_up(&mut as_, kill_at, total);
    for ((a, b), kill) in as_.iter_mut().zip(&bs).zip(&killed) {
        check_catch_up(a, b, *kill);
    }
    for b in &mut bs {
        b.daemon.assert_running();
        b.stop_writing();
    }
    let first_kill = *killed.iter().min().expect("killed");
    let outcomes: Vec<_> = as_
        .into_iter()
        .zip(bs)
        .zip(&killed)
        .map(|((a, b), kill)| {
            let a = a.finish(&case.cluster, &[(*kill, None)]);
            a.with(b.finish(&case.cluster, &[(first_kill, None)]))
        })
        .collect();
    report_and_check(name, &outcomes, Duration::ZERO);
}

/// `kill -9`s each A once it has acknowledged `kill_at` lines, and
/// restarts it at once; when each was killed.
fn kill_mid_catch_up(as_: &mut [Flow], kill_at: u64, total: u64) -> Vec<Instant> {
    let mut killed: Vec<Option<Instant>> = vec![None; as_.len()];
    let deadline = Instant::now() + Duration::from_secs(180);
    while killed.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "the catch-ups did not reach line {kill_at} in time"
        );
        for (a, k) in as_.iter_mut().zip(&mut killed) {
            // Asked here, not of the 100 ms sampler: the catch-up is fast.
            let acked = admin_get(&a.admin_sock, "/queue")
                .and_then(|q| q["delivered"].as_u64())
                .unwrap_or(0);
            if k.is_some() || acked < kill_at {
                a.daemon.assert_running();
                continue;
            }
            a.daemon.kill9();
            *k = Some(Instant::now());
            eprintln!(
                "shared_partition: {}: a kill -9ed at {acked} of {total} lines acknowledged",
                a.client
            );
            if acked >= total {
                a.problems.push(format!(
                    "the catch-up was over ({acked} lines) before the kill"
                ));
            }
            a.daemon.restart();
        }
        thread::sleep(Duration::from_millis(5));
    }
    killed.into_iter().flatten().collect()
}

/// After A's kill at `kill`: A must be done (everything read and
/// acknowledged) within [`A_BOUND`], its read-back never failed (it is
/// logged only when there was something to read: printed, not asserted),
/// and B must have gone on delivering meanwhile (else the case proves
/// nothing). What is wrong goes to A's problems.
fn check_catch_up(a: &mut Flow, b: &Flow, kill: Instant) {
    let took = wait_caught_up(a, kill);
    let readback = a
        .daemon
        .log_lines("read back the lines of ours Kafka has past the cursor");
    let b_moves = b.progress.moves_between(kill, Instant::now());
    eprintln!(
        "shared_partition: {}: a caught up {} after its kill (b's count moved {b_moves} times meanwhile); read-back: {}",
        a.client,
        took.map_or("NOT".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        readback.last().map_or("none logged", String::as_str)
    );
    if took.is_none() {
        a.problems.push(format!(
            "a had not delivered everything {A_BOUND:?} after its kill"
        ));
    }
    let failed = a
        .daemon
        .log_count("cannot read back what Kafka already has yet");
    if failed > 0 {
        a.problems.push(format!(
            "the read-back failed or timed out {failed} time(s)"
        ));
    }
    if b_moves == 0 {
        a.problems.push(
            "the neighbour b delivered nothing while a recovered: the case proves nothing".into(),
        );
    }
}

/// Waits until `a` has read its whole file and Kafka acknowledged all of
/// it (its offsets row has no lag, its queue nothing waiting), at most
/// [`A_BOUND`] after `kill`; how long after the kill that was.
fn wait_caught_up(a: &mut Flow, kill: Instant) -> Option<Duration> {
    let deadline = kill + A_BOUND;
    loop {
        a.daemon.assert_running();
        let lag = admin_get(&a.admin_sock, "/offsets").and_then(|rows| {
            rows.as_array()?
                .iter()
                .find(|r| r["name"] == "a")
                .and_then(|r| r["lag_bytes"].as_u64())
        });
        let waiting = admin_get(&a.admin_sock, "/queue").and_then(|q| q["waiting_bytes"].as_u64());
        if lag == Some(0) && waiting == Some(0) {
            return Some(kill.elapsed());
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
    }
}
