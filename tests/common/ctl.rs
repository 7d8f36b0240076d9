//! `logcatch-ctl` and the daemon's admin endpoint, as the tests use them:
//! run a command and parse its output, poll `status` or an `offsets` row
//! until it shows something, GET a path over TCP or a Unix socket, parse
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// `logcatch-ctl` output, parsed.
pub struct CtlOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOut {
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// stdout as JSON; panics (with the output) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("logcatch-ctl printed no JSON ({e}):\n{}", self.describe()))
    }
}

/// Runs `logcatch-ctl --config <config> <args...>` and collects its output.
pub fn ctl_run(config: &Path, args: &[&str]) -> CtlOut {
    let out = Command::new(env!("CARGO_BIN_EXE_logcatch-ctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run logcatch-ctl");
    CtlOut {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `logcatch-ctl` and returns its JSON; panics unless it exits 0.
pub fn ctl_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let out = ctl_run(config, args);
    assert_eq!(
        out.code,
        Some(0),
        "logcatch-ctl {args:?} failed:\n{}",
        out.describe()
    );
    out.json()
}

/// The row named `name` of `logcatch-ctl offsets --json` output, if any.
pub fn offsets_row<'a>(rows: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    rows.as_array()
        .unwrap_or_else(|| panic!("offsets output is not a JSON array: {rows}"))
        .iter()
        .find(|r| r["name"] == name)
}

/// Polls `logcatch-ctl status --json` until `pred` holds; returns it.
pub fn wait_status(
    config: &Path,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let deadline = Instant::now() + timeout;
    loop {
        let out = ctl_run(config, &["status", "--json"]);
        if out.code == Some(0) {
            last = out.json();
            if pred(&last) {
                return last;
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for status: {what}; last status:\n{last:#}"
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `logcatch-ctl offsets --json` until `pred` holds for the row of
/// `name`; returns it.
pub fn wait_offsets_row(
    config: &Path,
    name: &str,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    loop {
        let out = ctl_run(config, &["offsets", "--json"]);
        if out.code == Some(0) {
            let rows = out.json();
            if let Some(r) = offsets_row(&rows, name) {
                last = r.clone();
                if pred(r) {
                    return last;
                }
            }
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last row of {name}: {last:#}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 GET over a stream; returns (status, body).
fn http_get_over(mut s: impl Read + Write, path: &str) -> (u16, String) {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: logcatch\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read reply");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP reply: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET `path` from a loopback TCP address.
pub fn http_get_tcp(addr: &str, path: &str) -> (u16, String) {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    http_get_over(s, path)
}

/// GET `path` from a Unix socket.
pub fn http_get_unix(sock: &Path, path: &str) -> (u16, String) {
    let s = std::os::unix::net::UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    http_get_over(s, path)
}

/// Prometheus text: `name{labels}` (exactly as written) -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        let v: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in metrics line {line:?}"));
        out.insert(k.to_string(), v);
    }
    out
}
