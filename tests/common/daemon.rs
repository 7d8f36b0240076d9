//! The daemon under test: [`ConfigBuilder`] writes its config, [`Daemon`]
//! runs the real `logcatch` binary as a child process (signals, restarts,
//! its log), and [`TestEnv`] gives each test a temp dir and a broker of its
//! own.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{assert_exactly_once, tail_lines, write_numbered, Broker, Consume};

/// Builds a test config. Values are written as YAML scalars; paths are
/// quoted.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    pub data_dir: PathBuf,
    pub brokers: String,
    pub topic: String,
    /// `configpath` entries: name -> path.
    pub configpath: Vec<(String, PathBuf)>,
    /// `sources` entries: name -> (path, optional topic).
    pub sources: Vec<(String, PathBuf, Option<String>)>,
    /// More keys of `sources` entries: (source name, key, raw YAML value).
    pub source_keys: Vec<(String, String, String)>,
    /// Extra `kafka:` keys (raw YAML values).
    pub kafka: Vec<(String, String)>,
    /// `tailer:` keys (raw YAML values); `poll_interval: 50ms` by default.
    pub tailer: Vec<(String, String)>,
    /// `spool:` keys (raw YAML values).
    pub spool: Vec<(String, String)>,
}

impl ConfigBuilder {
    pub fn new(data_dir: impl Into<PathBuf>, brokers: &str, topic: &str) -> ConfigBuilder {
        ConfigBuilder {
            data_dir: data_dir.into(),
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            configpath: Vec::new(),
            sources: Vec::new(),
            source_keys: Vec::new(),
            kafka: vec![("linger_ms".into(), "5".into())],
            tailer: vec![("poll_interval".into(), "50ms".into())],
            spool: Vec::new(),
        }
    }

    /// A source under `sources:`, sent to the default topic.
    pub fn source(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.sources.push((name.into(), path.into(), None));
        self
    }

    /// A source under `sources:` with its own topic.
    pub fn source_to(mut self, name: &str, path: impl Into<PathBuf>, topic: &str) -> Self {
        self.sources
            .push((name.into(), path.into(), Some(topic.to_string())));
        self
    }

    /// A key of the `sources:` entry `name` (e.g. `rotate_wait`, `3s`).
    pub fn source_key(mut self, name: &str, key: &str, value: &str) -> Self {
        self.source_keys
            .push((name.into(), key.into(), value.into()));
        self
    }

    /// A source under `configpath:`.
    pub fn configpath(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.configpath.push((name.into(), path.into()));
        self
    }

    pub fn kafka(mut self, key: &str, value: &str) -> Self {
        set(&mut self.kafka, key, value);
        self
    }

    pub fn tailer(mut self, key: &str, value: &str) -> Self {
        set(&mut self.tailer, key, value);
        self
    }

    pub fn spool(mut self, key: &str, value: &str) -> Self {
        set(&mut self.spool, key, value);
        self
    }

    pub fn render(&self) -> String {
        let mut y = String::new();
        writeln!(y, "data_dir: {}", q(&self.data_dir)).unwrap();
        writeln!(y, "kafka:").unwrap();
        writeln!(y, "  brokers: \"{}\"", self.brokers).unwrap();
        writeln!(y, "  topic: \"{}\"", self.topic).unwrap();
        for (k, v) in &self.kafka {
            writeln!(y, "  {k}: {v}").unwrap();
        }
        if !self.configpath.is_empty() {
            writeln!(y, "configpath:").unwrap();
            for (name, path) in &self.configpath {
                writeln!(y, "  \"{name}\": {}", q(path)).unwrap();
            }
        }
        if !self.sources.is_empty() {
            writeln!(y, "sources:").unwrap();
            for (name, path, topic) in &self.sources {
                writeln!(y, "  \"{name}\":").unwrap();
                writeln!(y, "    path: {}", q(path)).unwrap();
                if let Some(t) = topic {
                    writeln!(y, "    topic: \"{t}\"").unwrap();
                }
                for (_, k, v) in self.source_keys.iter().filter(|(n, ..)| n == name) {
                    writeln!(y, "    {k}: {v}").unwrap();
                }
            }
        }
        for (section, kv) in [("tailer", &self.tailer), ("spool", &self.spool)] {
            if !kv.is_empty() {
                writeln!(y, "{section}:").unwrap();
                for (k, v) in kv {
                    writeln!(y, "  {k}: {v}").unwrap();
                }
            }
        }
        y
    }
}

fn set(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = value.to_string(),
        None => list.push((key.to_string(), value.to_string())),
    }
}

/// A path as a double-quoted YAML string.
fn q(p: &Path) -> String {
    let s = p.to_str().expect("test paths are UTF-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The real `logcatch` binary, run in the foreground with `--config`.
/// Output (stdout and stderr) is appended to `<dir>/daemon.log`. Killed
/// (SIGKILL) on drop.
pub struct Daemon {
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    exited: Option<ExitStatus>,
    starts: usize,
    /// Environment variables added at each start (see [`Daemon::set_env`]).
    env: Vec<(String, String)>,
}

impl Daemon {
    pub fn bin() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_logcatch"))
    }

    /// Writes `config_text` to `<dir>/logcatch.yaml` and starts the daemon.
    pub fn start(dir: &Path, config_text: &str) -> Daemon {
        let config = dir.join("logcatch.yaml");
        std::fs::write(&config, config_text).expect("write config");
        Daemon::start_with_file(dir, &config)
    }

    /// Starts the daemon on an existing config file (which may be a
    /// symlink); the log goes to `<dir>/daemon.log`.
    pub fn start_with_file(dir: &Path, config: &Path) -> Daemon {
        Daemon::launch(dir, config, &[])
    }

    /// Like [`Daemon::with`], with environment variables added to the
    /// daemon's (e.g. libfaketime's `LD_PRELOAD` and `FAKETIME`).
    pub fn with_env(dir: &Path, builder: &ConfigBuilder, env: &[(&str, &str)]) -> Daemon {
        let config = dir.join("logcatch.yaml");
        std::fs::write(&config, builder.render()).expect("write config");
        Daemon::launch(dir, &config, env)
    }

    fn launch(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            child: None,
            exited: None,
            starts: 0,
            env: Vec::new(),
        };
        d.set_env(env);
        d.spawn();
        d
    }

    /// The environment variables added at the next starts (`&[]`: none).
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Renders `builder` into `<dir>/logcatch.yaml` and starts the daemon.
    pub fn with(dir: &Path, builder: &ConfigBuilder) -> Daemon {
        Daemon::start(dir, &builder.render())
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Everything the daemon printed, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.log(), n)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon.log");
        writeln!(log, "===== test harness: start #{} =====", self.starts).ok();
        let child = Command::new(Daemon::bin())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn logcatch");
        self.child = Some(child);
        self.exited = None;
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.as_mut() {
            None => false,
            Some(c) => match c.try_wait().expect("try_wait") {
                Some(st) => {
                    self.exited = Some(st);
                    false
                }
                None => true,
            },
        }
    }

    /// Panics if the daemon has exited (the log's tail is printed when the
    /// `Daemon` is dropped during the panic).
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "logcatch exited unexpectedly ({})",
                self.exited.map(|s| s.to_string()).unwrap_or_default()
            );
        }
    }

    fn signal(&mut self, sig: &str) {
        if !self.is_running() {
            return;
        }
        let pid = self.child.as_ref().unwrap().id();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {pid} failed: {st}");
    }

    /// Sends SIGTERM (graceful shutdown). Does not wait.
    pub fn sigterm(&mut self) {
        self.signal("TERM");
    }

    /// Sends SIGINT (graceful shutdown). Does not wait.
    pub fn sigint(&mut self) {
        self.signal("INT");
    }

    /// SIGKILL, and reaps the process.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(c) = self.child.as_mut() {
            if self.exited.is_none() {
                let _ = c.kill();
                self.exited = Some(c.wait().expect("wait after kill"));
            }
        }
        self.exited.expect("daemon was never started")
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return self.exited.expect("daemon was never started");
            }
            if Instant::now() >= deadline {
                panic!("logcatch did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for exit and asserts it was clean (status 0).
    pub fn stop(&mut self) {
        self.sigterm();
        let st = self.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "logcatch exited with {st} after SIGTERM");
    }

    /// Starts the daemon again with the same config. A still running daemon
    /// is first stopped with SIGTERM (and must exit 0).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        }
        self.spawn();
    }

    /// Reads `topic` back ([`Consume`]), failing at once (with the log's
    /// tail) if the daemon exits while it waits.
    pub fn consume(&mut self, addr: &str, topic: &str) -> Consume<'_> {
        Consume::new(addr, topic).abort_when(|| {
            if self.is_running() {
                return None;
            }
            Some(format!(
                "logcatch exited ({}); its log follows the panic",
                self.exited.map(|s| s.to_string()).unwrap_or_default()
            ))
        })
    }

    /// Rewrites the config file (takes effect at the next `restart`).
    pub fn rewrite_config(&mut self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Sends SIGHUP (reload the config). Does not wait.
    pub fn sighup(&mut self) {
        self.signal("HUP");
    }

    /// How many lines of the log (all runs) contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// The log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until at least `n` log lines contain `needle` and returns the
    /// `n`th; fails at once if the daemon exits.
    pub fn wait_log(&mut self, needle: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.log_lines(needle);
            if lines.len() >= n {
                return lines[n - 1].clone();
            }
            self.assert_running();
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for log line #{n} containing {needle:?} (have {})",
                    lines.len()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if self.exited.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if thread::panicking() {
            eprintln!(
                "--- daemon.log (last 60 lines) [{}] ---\n{}",
                self.log_path().display(),
                self.log_tail(60)
            );
        }
    }
}

/// A temp dir and a broker of its own, for one test.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub broker: Broker,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv::with_broker(Broker::start())
    }

    /// With the broker behind a [`Proxy`] (for outages).
    pub fn with_proxy() -> TestEnv {
        TestEnv::with_broker(Broker::start_with_proxy())
    }

    pub fn with_broker(broker: Broker) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("logcatch-e2e-")
            .tempdir()
            .expect("tempdir");
        TestEnv { dir, broker }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn addr(&self) -> String {
        self.broker.addr()
    }

    /// A config with the test-friendly defaults, data in `<dir>/data`, the
    /// default topic `topic`, and no sources yet.
    pub fn config(&self, topic: &str) -> ConfigBuilder {
        ConfigBuilder::new(self.path("data"), &self.addr(), topic)
    }

    pub fn start(&self, cfg: &ConfigBuilder) -> Daemon {
        Daemon::with(self.dir.path(), cfg)
    }

    /// The common prologue: writes `lines` to `path`, starts a daemon
    /// tailing it as source `name` into `topic`, and waits until every line
    /// arrived exactly once.
    pub fn start_delivered(
        &self,
        topic: &str,
        name: &str,
        path: &Path,
        lines: Range<u64>,
        wait: Duration,
    ) -> Daemon {
        write_numbered(path, lines.start, lines.end);
        let mut d = self.start(&self.config(topic).source(name, path));
        let msgs = d
            .consume(&self.addr(), topic)
            .until_count((lines.end - lines.start) as usize)
            .timeout(wait)
            .run();
        assert_exactly_once(&msgs, lines);
        d
    }
}

/// Runs `logcatch --config <config>` expecting it to exit by itself (a
/// config or store it must refuse) within `timeout`; returns its exit code
/// and everything it printed. Panics, with the output, if it keeps running.
pub fn run_to_exit(config: &Path, timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(Daemon::bin())
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logcatch");
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "logcatch kept running with config {} (killed after {timeout:?}); output:\n{}{}",
                config.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}
