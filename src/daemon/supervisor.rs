//! The supervisor: owns the tailer tasks (one per configured one-path
//! source, one per file of a glob source ([`globs`]); never two for one
//! key), applies a reloaded config by diff, and carries out the
//! operator's commands (reset, forget) in the order the invariants of
//! [`crate::daemon`] require.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod globs;

use super::{blocking, DaemonError};
use crate::config::{Config, ConfigError, KafkaConfig, SourceConfig};
use crate::control::reload::{self, SourceDiff};
use crate::control::reset::{self, ResetTo};
use crate::control::ControlError;
use crate::kafka::forwarder::ForwardStats;
use crate::runtime::{lock, now_ms};
use crate::source::filewatch::FileWatch;
use crate::source::tailer::{self, FileTail, TailStatus, TailStop};
use crate::spool::{Position, Spool, WriterMsg};
use crate::store::{SourceRecord, Store};

/// What the last reload did, for `logcatch-ctl status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub config_file: String,
    pub loaded_ms: u64,
    pub reloads: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_diff: Option<SourceDiff>,
}

/// Live handles for status reporting.
#[derive(Clone, Default)]
pub struct Live {
    pub tailers: Arc<Mutex<BTreeMap<String, Arc<Mutex<TailStatus>>>>>,
    pub forward: Arc<ForwardStats>,
    pub reload: Arc<Mutex<ReloadStatus>>,
    /// Sources removed from the config whose spooled lines may not all be
    /// delivered yet: name -> (path, spool end when it was removed).
    pub draining: Arc<Mutex<BTreeMap<String, (String, Position)>>>,
}

impl Live {
    /// Handles for a daemon that just loaded `config_file`.
    pub fn new(config_file: &std::path::Path) -> Live {
        let live = Live::default();
        {
            let mut r = lock(&live.reload);
            r.config_file = config_file.display().to_string();
            r.loaded_ms = now_ms();
        }
        live
    }
}

struct RunningTailer {
    stop: TailStop,
    task: JoinHandle<()>,
}

/// Owns the tailer tasks: one per configured source, never two.
pub(super) struct Supervisor {
    config: Config,
    spool: Spool,
    /// The running config, as the admin endpoint sees it.
    shared: Arc<Mutex<Config>>,
    /// The config file's bytes at the last reload attempt.
    last_text: Option<Vec<u8>>,
    store: Store,
    tx: mpsc::Sender<WriterMsg>,
    tailers: BTreeMap<String, RunningTailer>,
    /// Shutdown for every tailer at once.
    hard_stop: CancellationToken,
    kafka: watch::Sender<KafkaConfig>,
    /// Wakes idle tailers (inotify + one poll thread).
    watch: FileWatch,
    live: Live,
    /// What glob sources' passes remember ([`globs`]).
    globs_state: globs::GlobState,
}

impl Supervisor {
    pub(super) fn new(
        config: &Config,
        store: Store,
        spool: Spool,
        tx: mpsc::Sender<WriterMsg>,
        hard_stop: CancellationToken,
        kafka: watch::Sender<KafkaConfig>,
        live: Live,
    ) -> Supervisor {
        Supervisor {
            shared: Arc::new(Mutex::new(config.clone())),
            last_text: std::fs::read(&config.file).ok(),
            config: config.clone(),
            store,
            spool,
            tx,
            tailers: BTreeMap::new(),
            hard_stop,
            kafka,
            watch: FileWatch::start(config.poll_interval),
            live,
            globs_state: globs::GlobState::default(),
        }
    }

    /// The running config, as the admin endpoint sees it.
    pub(super) fn shared_config(&self) -> Arc<Mutex<Config>> {
        self.shared.clone()
    }

    /// Starts the tailer of a one-path source, or of one file of a glob
    /// source. A glob source itself is not started here: its files are,
    /// by [`Supervisor::rediscover`].
    pub(super) fn start(&mut self, source: &SourceConfig) {
        if source.glob.is_some() {
            return;
        }
        let tail = FileTail::new(
            source.clone(),
            self.store.clone(),
            self.config.read_buffer_bytes,
        );
        lock(&self.live.tailers).insert(source.name.clone(), tail.status());
        let stop = TailStop {
            graceful: CancellationToken::new(),
            hard: self.hard_stop.clone(),
        };
        let task = tokio::spawn(tailer::run(
            tail,
            self.tx.clone(),
            stop.clone(),
            self.watch.clone(),
        ));
        self.tailers
            .insert(source.name.clone(), RunningTailer { stop, task });
    }

    /// Stops a tailer after it handed over what it read.
    async fn stop(&mut self, name: &str) {
        if let Some(t) = self.tailers.remove(name) {
            t.stop.graceful.cancel();
            if let Err(e) = t.task.await {
                tracing::error!(source = name, error = %e, "tailer task failed");
            }
        }
        lock(&self.live.tailers).remove(name);
    }

    /// Waits until the writer committed everything sent so far.
    async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Sync(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Replaces or deletes a source's record through the writer's queue.
    async fn set_record(&self, name: &str, rec: Option<SourceRecord>) -> Result<(), ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(WriterMsg::SetRecord(name.to_string(), rec, tx))
            .await
            .map_err(|_| ControlError::WriterStopped)?;
        match rx.await {
            Ok(r) => r.map_err(ControlError::from),
            Err(_) => Err(ControlError::WriterStopped),
        }
    }

    async fn forget(&self, name: &str) {
        match self.set_record(name, None).await {
            Ok(()) => tracing::info!(source = name, "deleted the source's offset record"),
            Err(e) => {
                tracing::error!(source = name, error = %e, "cannot delete the source's offset record")
            }
        }
    }

    /// Applies a validated new config by diff.
    ///
    /// Longer than most: each kind of change (removed, moved, changed,
    /// added; glob sources apart) must be carried out in this order (stop,
    /// hand over, forget, start), which is the argument that no record is
    /// deleted under a running tailer.
    async fn apply(&mut self, new: Config) -> SourceDiff {
        let d = reload::diff(&self.config, &new);
        let old = std::mem::replace(&mut self.config, new);
        // Settings that need a restart keep their running values.
        self.config.data_dir = old.data_dir.clone();
        self.config.spool = old.spool.clone();
        self.config.admin = old.admin.clone();
        self.apply_globs(&old, &d).await;
        let was_glob = |n: &String| old.sources.get(n).is_some_and(|s| s.glob.is_some());
        for name in d.removed.iter().chain(&d.moved).filter(|n| !was_glob(n)) {
            self.stop(name).await;
            self.forget(name).await;
        }
        for name in &d.removed {
            if let Some(s) = old.sources.get(name) {
                lock(&self.live.draining).insert(
                    name.clone(),
                    (s.path.display().to_string(), self.spool.durable_end()),
                );
            }
        }
        for name in &d.changed {
            self.stop(name).await;
        }
        if !d.changed.is_empty() {
            self.sync().await;
        }
        for name in d.added.iter().chain(&d.moved).chain(&d.changed) {
            if let Some(s) = self.config.sources.get(name).cloned() {
                self.start(&s);
            }
        }
        if d.kafka_changed {
            self.kafka.send_replace(self.config.kafka.clone());
        }
        self.watch.set_poll(self.config.poll_interval);
        if let Err(e) = self.rediscover().await {
            tracing::error!(error = %e, "the discovery pass after the reload failed; the next pass tries again");
        }
        d
    }

    /// The glob sources' part of a reload: a removed one's files stop and
    /// their records go; a changed one's files stop, and the records whose
    /// path its new patterns no longer match go (the rest resume at the
    /// next discovery pass). A source that was one path and is now a glob
    /// (or back) loses its old record(s) as a moved source does.
    async fn apply_globs(&mut self, old: &Config, d: &SourceDiff) {
        let touched = d.removed.iter().chain(&d.moved).chain(&d.changed);
        for name in touched {
            let was = old.sources.get(name).and_then(|s| s.glob.clone());
            let now = self.config.sources.get(name).and_then(|s| s.glob.clone());
            if was.is_none() && now.is_none() {
                continue;
            }
            self.globs_state.reset(name);
            if was.is_some() {
                self.stop_files(name).await;
                self.sync().await;
                self.forget_files(name, |p| now.as_ref().is_some_and(|g| g.matches(p)))
                    .await;
            } else {
                // One path before: its tailer and record go.
                self.stop(name).await;
                self.forget(name).await;
            }
        }
    }

    /// Re-reads the config file; applies it if it changed (or `forced`).
    /// Returns what happened, or `None` when the file did not change.
    pub(super) async fn reload(
        &mut self,
        forced: bool,
    ) -> Result<Option<Result<SourceDiff, ControlError>>, DaemonError> {
        let path = self.config.file.clone();
        let text = blocking(move || std::fs::read(&path).ok()).await?;
        if !forced && text == self.last_text {
            return Ok(None);
        }
        // A tool may still be writing the file (truncate, then write): a
        // half-written file can be valid YAML that drops sources, whose
        // records would then be deleted. Wait until two reads agree.
        let mut text = text;
        for _ in 0..20 {
            tokio::time::sleep(reload::SETTLE).await;
            let path = self.config.file.clone();
            let again = blocking(move || std::fs::read(&path).ok()).await?;
            if again == text {
                break;
            }
            text = again;
        }
        let path = self.config.file.clone();
        let loaded = match text.as_deref().map(std::str::from_utf8) {
            // Parse exactly the bytes that settled.
            Some(Ok(t)) => Config::parse(&path, t),
            Some(Err(_)) => Err(ConfigError::Syntax {
                path: path.clone(),
                line: 0,
                column: 0,
                message: "the config file is not valid UTF-8".into(),
            }),
            None => blocking(move || Config::load(&path)).await?,
        };
        self.last_text = text;
        let outcome = match loaded {
            Ok(new) => {
                let d = self.apply(new).await;
                *lock(&self.shared) = self.config.clone();
                tracing::info!(
                    running_tailers = self.tailers.len(),
                    "config reloaded: {}",
                    d.summary()
                );
                let mut r = lock(&self.live.reload);
                r.reloads += 1;
                r.loaded_ms = now_ms();
                r.last_error = None;
                r.last_diff = Some(d.clone());
                Ok(d)
            }
            Err(e) => {
                tracing::error!(
                    "config reload rejected, still running on the last good config: {e}"
                );
                let mut r = lock(&self.live.reload);
                r.failures += 1;
                r.last_error = Some(e.to_string());
                Err(ControlError::from(e))
            }
        };
        Ok(Some(outcome))
    }

    /// `logcatch-ctl reset`: restart the source's tailer at `to`.
    pub(super) async fn reset(&mut self, name: &str, to: ResetTo) -> Result<(), ControlError> {
        let source = self
            .config
            .source_for(name)
            .ok_or_else(|| ControlError::UnknownSource {
                name: name.to_string(),
                config: self.config.file.clone(),
            })?;
        let running = self.tailers.contains_key(name);
        self.stop(name).await;
        self.sync().await;
        let (store, s) = (self.store.clone(), source.clone());
        let rec = blocking(move || {
            let prev = store.source(&s.name)?;
            reset::reset_record(&s, prev.as_ref(), to)
        })
        .await
        .map_err(ControlError::from)
        .and_then(|r| r);
        let result = match rec {
            Ok(r) => {
                let offset = r.offset;
                self.set_record(name, Some(r)).await.map(|()| {
                    tracing::info!(source = name, offset, "offset reset by the operator");
                })
            }
            Err(e) => Err(e),
        };
        if running {
            self.start(&source);
        }
        result
    }

    /// `logcatch-ctl forget`: drop the source's record; a configured source
    /// then starts over as a new file.
    pub(super) async fn forget_now(&mut self, name: &str) -> Result<(), ControlError> {
        let store = self.store.clone();
        let n = name.to_string();
        let exists = blocking(move || store.source(&n)).await??.is_some();
        if !exists {
            return Err(ControlError::NoRecord(name.to_string()));
        }
        let configured = self.config.source_for(name);
        self.stop(name).await;
        let r = self.set_record(name, None).await;
        if r.is_ok() {
            tracing::info!(source = name, "offset record forgotten by the operator");
        }
        if let Some(s) = configured {
            self.start(&s);
        }
        r
    }

    pub(super) async fn stop_all(&mut self) {
        for (name, t) in std::mem::take(&mut self.tailers) {
            if let Err(e) = t.task.await {
                tracing::error!(source = %name, error = %e, "tailer task failed");
            }
        }
        self.watch.shutdown();
    }
}
