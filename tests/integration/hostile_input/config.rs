//! Missing and broken configs: refused at start with the file (and line)
//! named; a config deleted under a running daemon leaves it running.

use std::path::Path;
use std::thread;
use std::time::Duration;

use super::{TOPIC, WAIT};
use crate::common::*;

/// A missing config, then one with an unknown key: the daemon exits
/// non-zero naming the file (and the key and line), before creating
/// data_dir. `log` is the source the broken config names.
fn refused_at_start(env: &TestEnv, log: &Path) {
    let missing = env.path("missing.yaml");
    let (code, text) = run_to_exit(&missing, Duration::from_secs(30));
    eprintln!("missing config: exit {code:?}: {text}");
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {text}");
    assert!(
        text.contains(missing.to_str().unwrap()),
        "the message does not name {}: {text}",
        missing.display()
    );

    let good = env.config(TOPIC).source("app", log).render();
    let broken_path = env.path("broken.yaml");
    // An unknown key under `tailer:` (typo), on a known line.
    let broken = format!("{good}tailer:\n  poll_intervall: 50ms\n");
    let broken = broken.replacen("tailer:\n  poll_interval: 50ms\n", "", 1);
    let bad_line = broken
        .lines()
        .position(|l| l.contains("poll_intervall"))
        .unwrap()
        + 1;
    std::fs::write(&broken_path, &broken).unwrap();
    let (code, text) = run_to_exit(&broken_path, Duration::from_secs(30));
    eprintln!("broken config (line {bad_line}): exit {code:?}: {text}");
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {text}");
    let p = broken_path.to_str().unwrap();
    assert!(text.contains(p), "the message does not name {p}: {text}");
    assert!(
        text.contains("poll_intervall"),
        "the message does not name the bad key: {text}"
    );
    assert!(
        text.contains(&format!("{p}:{bad_line}")),
        "the message does not name {p}:{bad_line}: {text}"
    );
    assert!(
        !env.path("data").exists(),
        "a rejected config still created data_dir"
    );
}

/// A missing config and a broken one stop the daemon at start with a
/// message naming the file (and the line); a config deleted while running
/// leaves it running on the last good one, logged at most once.
#[test]
fn missing_and_broken_config() {
    let env = TestEnv::new();
    let log = env.path("app.log");
    refused_at_start(&env, &log);

    // Deleted while running: keeps running and delivering.
    write_numbered(&log, 0, 300);
    let cfg = env.config(TOPIC).source("app", &log);
    let mut d = env.start(&cfg);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(300)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..300);
    let config = d.config_path().to_path_buf();
    std::fs::remove_file(&config).unwrap();
    // Longer than two content polls (2 s each).
    thread::sleep(Duration::from_millis(5000));
    d.assert_running();
    write_numbered(&log, 300, 600);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(600)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..600);
    let mentions = d.log_lines(config.to_str().unwrap());
    let complaints: Vec<&String> = mentions
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    eprintln!(
        "config deleted while running: {} warning/error line(s):\n{}",
        complaints.len(),
        complaints
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        complaints.len() <= 1,
        "a deleted config was complained about {} times (once per poll?)",
        complaints.len()
    );
    // Put back unchanged: still one tailer, nothing read twice.
    std::fs::write(&config, cfg.render()).unwrap();
    write_numbered(&log, 600, 700);
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(700)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..700);
    d.stop();
}
