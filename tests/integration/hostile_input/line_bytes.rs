//! Lines whose bytes are hostile: random binary (every byte value, invalid
//! UTF-8, NUL, lone `\r`, empty lines) and a mix of `\n` and `\r\n`
//! endings. Every line arrives as it was, without its ending.

use std::io::Write;
use std::thread;
use std::time::Duration;

use super::{MIB, TOPIC, WAIT};
use crate::common::*;

/// The file split at `\n` as the daemon must deliver it: complete lines
/// only, one trailing `\r` dropped.
fn expected_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        let mut line = &rest[..i];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        out.push(line.to_vec());
        rest = &rest[i + 1..];
    }
    out
}

/// Random bytes (all 256 values, invalid UTF-8, NUL, lone `\r`, empty
/// lines): every line arrives unchanged, in order.
#[test]
fn random_binary_bytes_arrive_unchanged() {
    let seed = seed_from_env_or_time();
    eprintln!("random_binary: seed {seed} (set LOGCATCH_TEST_SEED to replay)");
    let mut rng = Rng::new(seed);
    let env = TestEnv::new();
    let bin = env.path("bin.log");
    // Edge cases first, then 1 MiB of random bytes.
    let mut bytes: Vec<u8> = Vec::new();
    for special in [
        &b"\n"[..],                          // empty line
        b"\r\n",                             // empty after the \r
        b"\r\r\n",                           // one \r dropped, one kept
        b"a\rb\n",                           // \r inside a line stays
        b"\x00\x01\x02\xff\xfe\n",           // NUL and bytes that are never UTF-8
        b"\xc3\x28 \xe2\x82 \xf0\x90\x28\n", // broken multi-byte sequences
        b"caf\xc3\xa9 \xe2\x82\xac\n",       // valid UTF-8
        b"\r\n",
    ] {
        bytes.extend_from_slice(special);
    }
    while bytes.len() < MIB {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.push(b'\n');
    std::fs::write(&bin, &bytes).unwrap();
    let want = expected_lines(&bytes);
    eprintln!("random_binary: {} bytes, {} lines", bytes.len(), want.len());

    let mut d = env.start(&env.config(TOPIC).source("bin", &bin));
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(want.len())
        .timeout(WAIT)
        .run();
    let got: Vec<&Msg> = of_source(&msgs, "bin");
    assert_eq!(
        got.len(),
        want.len(),
        "messages from the binary file (want one per line)"
    );
    // Offsets: each line's start in the file.
    let mut starts = Vec::with_capacity(want.len());
    let mut at = 0usize;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            starts.push(at);
            at = i + 1;
        }
    }
    let mut bad = Vec::new();
    for (i, (m, w)) in got.iter().zip(&want).enumerate() {
        if &m.value != w || m.header("offset") != Some(starts[i].to_string()) {
            if bad.len() < 5 {
                bad.push(format!(
                    "line {i} at {}: got {} bytes {:?} (offset header {:?}), want {} bytes {:?}",
                    starts[i],
                    m.value.len(),
                    &m.value[..m.value.len().min(24)],
                    m.header("offset"),
                    w.len(),
                    &w[..w.len().min(24)]
                ));
            } else {
                bad.push(String::new());
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} line(s) changed on the way:\n{}",
        bad.len(),
        bad.iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    d.stop();
}

/// A file mixing `\n` and `\r\n` endings (and `\r` elsewhere): each value
/// is the line without its ending; only one `\r` right before `\n` goes.
#[test]
fn mixed_lf_and_crlf_line_endings() {
    let env = TestEnv::new();
    let log = env.path("mixed.log");
    let mut text: Vec<u8> = Vec::new();
    let mut want: Vec<Vec<u8>> = Vec::new();
    for n in 0..600u64 {
        let line = numbered_line(n);
        text.extend_from_slice(line.as_bytes());
        // Endings in an irregular pattern, runs of each kind included.
        let crlf = (n % 7) < 3 || (n / 50) % 2 == 1;
        text.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        want.push(line.into_bytes());
        if n % 100 == 99 {
            text.extend_from_slice(b"mid\rdle\r\n");
            want.push(b"mid\rdle".to_vec());
            text.extend_from_slice(b"two\r\r\n");
            want.push(b"two\r".to_vec());
            text.extend_from_slice(b"\r\n");
            want.push(Vec::new());
        }
    }
    // Half now, half while running, split between a `\r` and its `\n`:
    // the daemon sees a line end in `\r` first and must not keep it.
    let cut = text.len() / 2;
    let cut = cut + text[cut..].windows(2).position(|w| w == b"\r\n").unwrap() + 1;
    std::fs::write(&log, &text[..cut]).unwrap();
    let mut d = env.start(&env.config(TOPIC).source("mixed", &log));
    let complete = text[..cut].iter().filter(|b| **b == b'\n').count();
    d.consume(&env.addr(), TOPIC)
        .until(|m| m.len() >= complete)
        .quiet(SHORT_QUIET)
        .timeout(WAIT)
        .expect("the first half");
    thread::sleep(Duration::from_millis(300));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&text[cut..])
        .unwrap();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(want.len())
        .timeout(WAIT)
        .run();
    let got: Vec<Vec<u8>> = of_source(&msgs, "mixed")
        .iter()
        .map(|m| m.value.clone())
        .collect();
    assert_eq!(got.len(), want.len(), "one message per line");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g,
            w,
            "line {i}: got {:?}, want {:?}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
    d.stop();
}
