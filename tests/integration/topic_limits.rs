//! A topic with a small `max.message.bytes` (64 KiB), with each client and
//! no compression. Kafka refuses every full-size batch, and one line that
//! can never fit. Only that line is dead-lettered (named in the daemon's
//! log and in the dead-letter file); every other line, among them a 60 KiB
//! one that fits alone, arrives exactly once and in file order; the daemon
//! keeps running and delivers what comes next.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

const TOPIC: &str = "limited";
/// The topic's `max.message.bytes`: a record batch may be at most this.
const TOPIC_MAX: usize = 64 << 10;
/// The lines written first: numbers `0..LINES`, about 200 B each but two.
const LINES: u64 = 10_002;
/// About 60 KiB: fits the topic alone, not with a full batch.
const FITS: u64 = 3_000;
const FITS_LEN: usize = 60 << 10;
/// About 70 KiB: larger than the topic allows, alone or not.
const TOO_BIG: u64 = 7_000;
const TOO_BIG_LEN: usize = 70 << 10;
/// Lines written once the first ones are in: `LINES..LATER`.
const LATER: u64 = LINES + 100;
const WAIT: Duration = Duration::from_secs(180);

/// Line `n`: the numbered line padded to about 200 B, or to its big size.
fn line(n: u64) -> String {
    let len = match n {
        FITS => FITS_LEN,
        TOO_BIG => TOO_BIG_LEN,
        _ => 200,
    };
    let mut s = numbered_line(n);
    let pad = (b'a' + (n % 26) as u8) as char;
    s.extend(std::iter::repeat_n(pad, len - s.len()));
    s
}

/// Appends lines `from..to` to `path`; returns the file offset of line
/// `TOO_BIG` if it is among them.
fn write_lines(path: &Path, from: u64, to: u64) -> Option<u64> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    let mut at = f.metadata().expect("metadata").len();
    let mut too_big_at = None;
    let mut buf = String::new();
    for n in from..to {
        if n == TOO_BIG {
            too_big_at = Some(at);
        }
        let l = line(n);
        at += l.len() as u64 + 1;
        buf.push_str(&l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).expect("write log");
    too_big_at
}

/// The entries of the dead-letter file at `path` (none if it is missing).
fn dead_lettered(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a dead-letter entry is JSON"))
        .collect()
}

/// The scenario with `kafka.client: client`.
fn only_the_line_that_cannot_fit_is_dead_lettered(client: &str) {
    let env = TestEnv::new();
    env.broker
        .create_topic_with(TOPIC, 1, &[("max.message.bytes", &TOPIC_MAX.to_string())]);
    let log = env.path("app.log");
    // All written before the daemon starts: it reads them in full batches.
    let too_big_at = write_lines(&log, 0, LINES).expect("the 70 KiB line is written");
    let cfg = env
        .config(TOPIC)
        .source("app", &log)
        .kafka("client", client)
        .kafka("compression", "none");
    let dead_letter = env.path("data").join("dead-letter.jsonl");
    let started = Instant::now();
    let mut d = env.start(&cfg);
    let expected = [0..TOO_BIG, TOO_BIG + 1..LINES];
    let msgs = Consume::new(&env.addr(), TOPIC)
        .until(|m| expected.iter().all(|r| has_all(m, r.clone())))
        .timeout(WAIT)
        .abort_when(|| {
            if !d.is_running() {
                return Some("logcatch exited; its log follows the panic".into());
            }
            let n = dead_lettered(&dead_letter).len();
            (n > 1).then(|| format!("{n} lines dead-lettered; only the 70 KiB one may be"))
        })
        .expect("every line but the 70 KiB one");
    let took = started.elapsed();
    assert_exactly_once_in(&msgs, &expected);
    assert_file_order(&msgs);
    let fits = msgs
        .iter()
        .find(|m| number_of(&m.value) == Some(FITS))
        .expect("the 60 KiB line");
    assert_eq!(fits.value, line(FITS).as_bytes(), "the 60 KiB line, whole");

    // The topic's limit was met: batches were refused and made smaller.
    let shrunk = d.log_count("in smaller batches");
    assert!(
        shrunk >= 1,
        "no batch was refused: the scenario did not test the topic's limit"
    );
    // Only the 70 KiB line is dead-lettered, named in the log and the file.
    let dead = dead_lettered(&dead_letter);
    let numbers: Vec<Option<u64>> = dead
        .iter()
        .map(|e| number_of(e["line"].as_str().unwrap_or_default().as_bytes()))
        .collect();
    assert_eq!(numbers, vec![Some(TOO_BIG)], "the dead-lettered lines");
    assert_eq!(dead[0]["source"], "app");
    assert_eq!(dead[0]["offset"], too_big_at.to_string());
    assert_eq!(dead[0]["topic"], TOPIC);
    let refused = d.log_lines("refused this line permanently");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        refused[0].contains(&too_big_at.to_string()),
        "the log names the line's offset: {}",
        refused[0]
    );
    eprintln!(
        "{client}: {} lines delivered in {took:?}, {shrunk} batch refusal(s), 1 line dead-lettered",
        msgs.len()
    );

    // The daemon keeps running and delivers what comes next.
    d.assert_running();
    write_lines(&log, LINES, LATER);
    let expected = [0..TOO_BIG, TOO_BIG + 1..LATER];
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until(|m| has_all(m, LINES..LATER))
        .timeout(WAIT)
        .expect("the lines written later");
    assert_exactly_once_in(&msgs, &expected);
    assert_file_order(&msgs);
    assert_eq!(dead_lettered(&dead_letter).len(), 1, "dead-lettered in all");
    d.stop();
}

/// The native client sends the 70 KiB line alone and dead-letters it;
/// refused batches shrink until the rest fits.
#[test]
fn native_dead_letters_only_the_line_that_cannot_fit() {
    only_the_line_that_cannot_fit_is_dead_lettered("native");
}

/// librdkafka: a refused batch is resent in smaller batches, not
/// dead-lettered; only the line refused alone is.
#[test]
fn librdkafka_dead_letters_only_the_line_that_cannot_fit() {
    only_the_line_that_cannot_fit_is_dead_lettered("librdkafka");
}
