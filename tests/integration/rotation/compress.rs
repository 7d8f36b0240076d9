//! Rename rotation with `compress` and `delaycompress`: `app.log` becomes
//! `app.log.1`, which stays plain for one cycle; at the next rotation it
//! shifts to `app.log.2` and gzip turns that into `app.log.2.gz` (written
//! at its final name, then the plain file deleted). The daemon must
//! deliver every line exactly once, and never read a `.gz` (its bytes
//! would arrive as lines that are not numbered lines); while running, and
//! with `kill -9`s at seeded moments (the seed is printed;
//! `LOGCATCH_TEST_SEED` replays it).

use std::time::Duration;

use crate::common::logrotate::{rotate_while_running, Compress, Logrotate, Naming, OPENED};
use crate::common::*;

const TOPIC: &str = "logs";
const ROTATIONS: usize = 4;
const INTERVAL: Duration = Duration::from_secs(2);

fn delaycompress(mut rng: Option<Rng>) {
    let env = TestEnv::new();
    let log = env.path("app.log");
    let mut lr = Logrotate::new(&log, Naming::Numbered).compress(Compress::Delayed);
    lr.write(1_000);
    let mut d = env.start(&env.config(TOPIC).source("app", &log));
    let kills = rotate_while_running(&mut lr, &mut d, ROTATIONS, INTERVAL, rng.as_mut());
    lr.write_for(Duration::from_millis(500));
    eprintln!(
        "delaycompress: {} lines, {ROTATIONS} rotations, kill -9 at {kills:?}",
        lr.written()
    );
    // logrotate's files now: the plain app.log.1, and .gz older ones.
    for (name, there) in [
        ("app.log.1", true),
        ("app.log.2", false),
        ("app.log.2.gz", true),
        ("app.log.3.gz", true),
    ] {
        assert_eq!(env.path(name).exists(), there, "{name}");
    }

    lr.delivered(&env, &mut d, TOPIC);
    let gz: Vec<String> = d
        .log_lines(OPENED)
        .into_iter()
        .filter(|l| l.contains(".gz"))
        .collect();
    assert!(gz.is_empty(), "the daemon opened a .gz: {gz:#?}");
    d.stop();
}

#[test]
fn delaycompress_rotations_while_running_deliver_every_line_once() {
    delaycompress(None);
}

#[test]
fn delaycompress_rotations_with_kill9_at_seeded_moments_lose_and_duplicate_nothing() {
    let seed = seed_from_env_or_time();
    eprintln!("delaycompress kill9: seed {seed} (set LOGCATCH_TEST_SEED to replay)");
    delaycompress(Some(Rng::new(seed)));
}
