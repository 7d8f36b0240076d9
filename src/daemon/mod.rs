//! daemon: owns the running pipeline: opens the store and spool, recovers
//! offsets from the spool, starts the spool writer, the forwarder and one
//! tailer per source (the `Supervisor`), applies config reloads, and shuts
//! everything down in data-flow order.
//!
//! Invariants:
//! - Shutdown goes tailers -> spool writer -> forwarder, so every line a
//!   tailer handed over is durable before the forwarder's last drain, and
//!   the forwarder's final cursor is written before the store closes.
//! - A source's record is deleted (`WriterMsg::Forget`) only after its
//!   tailer has stopped and through the writer's queue, so it lands after
//!   every batch that tailer sent; its spooled lines are still delivered.
//! - A restarted tailer starts only after the writer has committed every
//!   batch of the old one (`WriterMsg::Sync`), so it resumes exactly there.
//!
//! Must never: start a tailer before recovery has merged the spool's
//! newest batches into the store (the tailer would resume from a stale
//! offset and spool lines twice), or run two tailers for one source.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, KafkaConfig, SourceConfig};
use crate::control::admin::{self, AdminCommand, AdminState};
use crate::control::reload::{self, SourceDiff, Trigger};
use crate::kafka::forwarder::{ForwardError, ForwardStats, Forwarder};
use crate::runtime::lock;
use crate::runtime::now_ms;
use crate::source::filewatch::FileWatch;
use crate::source::tailer::{self, FileTail, ResetTo, TailStatus, TailStop};
use crate::spool::{Position, Recovery, Spool, SpoolError, WriterMsg};
use crate::store::{SourceRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Reload(#[from] reload::ReloadError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("internal task failed: {0}")]
    Task(String),
}

pub fn store_dir(config: &Config) -> PathBuf {
    config.data_dir.join("store")
}

pub fn spool_dir(config: &Config) -> PathBuf {
    config.data_dir.join("spool")
}

/// Runs blocking work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))
}

/// Merges the newest segment's batches into the store (`spool` invariant 2)
/// and returns the next commit sequence number. Batches of sources that are
/// no longer configured are not merged: their records were forgotten.
fn recover(store: &Store, recovery: Recovery, config: &Config) -> Result<u64, DaemonError> {
    let mut max_seq = recovery.max_seq;
    for (_, rec) in store.sources()? {
        max_seq = max_seq.max(rec.seq);
    }
    for (name, batch) in recovery.last_batches {
        if !config.sources.contains_key(&name) {
            continue;
        }
        let prev = store.source(&name)?;
        if prev.as_ref().is_none_or(|p| p.seq < batch.seq) {
            tracing::info!(source = %name, offset = batch.end_offset,
                "recovered the source's offset from the spool (the process stopped before the store saw it)");
            store.put_source(&name, &batch.record(prev.as_ref()))?;
        }
    }
    store.flush()?;
    Ok(max_seq + 1)
}

/// `logcatch-ctl reset`/`forget` with no daemon running: opens the store
/// and the spool (running the same recovery as a start, and sealing the
/// newest segment so that recovery cannot bring the old position back),
/// then replaces (`Some`) or deletes (`None`) the source's record.
pub fn offline_set_record(config: &Config, name: &str, to: Option<ResetTo>) -> Result<(), String> {
    let store = crate::control::offsets::open_existing(config).map_err(|e| e.to_string())?;
    let (_spool, recovery) =
        Spool::open(&spool_dir(config), config.spool.clone()).map_err(|e| e.to_string())?;
    let next_seq = recover(&store, recovery, config).map_err(|e| e.to_string())?;
    let prev = store.source(name).map_err(|e| e.to_string())?;
    match to {
        Some(to) => {
            let source = config
                .sources
                .get(name)
                .ok_or_else(|| format!("no source named `{name}` in {}", config.file.display()))?;
            let mut rec = tailer::reset_record(source, prev.as_ref(), to)?;
            rec.seq = next_seq;
            store.put_source(name, &rec).map_err(|e| e.to_string())?;
        }
        None => {
            if !store.remove_source(name).map_err(|e| e.to_string())? {
                return Err(format!("the store has no record of `{name}`"));
            }
        }
    }
    store.flush().map_err(|e| e.to_string())
}

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

struct RunningTailer {
    stop: TailStop,
    task: JoinHandle<()>,
}

/// Owns the tailer tasks: one per configured source, never two.
struct Supervisor {
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
}

impl Supervisor {
    fn start(&mut self, source: &SourceConfig) {
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
    async fn set_record(&self, name: &str, rec: Option<SourceRecord>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(WriterMsg::SetRecord(name.to_string(), rec, tx))
            .await
            .map_err(|_| "the spool writer has stopped".to_string())?;
        match rx.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the spool writer has stopped".to_string()),
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
    async fn apply(&mut self, new: Config) -> SourceDiff {
        let d = reload::diff(&self.config, &new);
        let old = std::mem::replace(&mut self.config, new);
        // Settings that need a restart keep their running values.
        self.config.data_dir = old.data_dir.clone();
        self.config.spool = old.spool.clone();
        self.config.admin = old.admin.clone();
        for name in d.removed.iter().chain(&d.moved) {
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
        d
    }

    /// Re-reads the config file; applies it if it changed (or `forced`).
    /// Returns what happened, or `None` when the file did not change.
    async fn reload(
        &mut self,
        forced: bool,
    ) -> Result<Option<Result<SourceDiff, String>>, DaemonError> {
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
                Err(e.to_string())
            }
        };
        Ok(Some(outcome))
    }

    /// `logcatch-ctl reset`: restart the source's tailer at `to`.
    async fn reset(&mut self, name: &str, to: ResetTo) -> Result<(), String> {
        let source =
            self.config.sources.get(name).cloned().ok_or_else(|| {
                format!("no source named `{name}` in {}", self.config.file.display())
            })?;
        let running = self.tailers.contains_key(name);
        self.stop(name).await;
        self.sync().await;
        let (store, s) = (self.store.clone(), source.clone());
        let rec = blocking(move || {
            let prev = store.source(&s.name).map_err(|e| e.to_string())?;
            tailer::reset_record(&s, prev.as_ref(), to)
        })
        .await
        .map_err(|e| e.to_string())
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
    async fn forget_now(&mut self, name: &str) -> Result<(), String> {
        let store = self.store.clone();
        let n = name.to_string();
        let exists = blocking(move || store.source(&n))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .is_some();
        if !exists {
            return Err(format!("the store has no record of `{name}`"));
        }
        let configured = self.config.sources.get(name).cloned();
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

    async fn stop_all(&mut self) {
        self.hard_stop.cancel();
        let names: Vec<String> = self.tailers.keys().cloned().collect();
        for name in names {
            if let Some(t) = self.tailers.remove(&name) {
                if let Err(e) = t.task.await {
                    tracing::error!(source = %name, error = %e, "tailer task failed");
                }
            }
        }
    }
}

/// Handle for asking the running daemon to reload (SIGHUP, admin).
pub type ReloadSender = mpsc::Sender<Trigger>;

/// Runs the daemon until `shutdown` is cancelled, then stops cleanly.
/// `reload_rx` receives forced reloads (SIGHUP); file changes are watched
/// here.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reload_tx: ReloadSender,
    mut reload_rx: mpsc::Receiver<Trigger>,
) -> Result<(), DaemonError> {
    let data_dir = config.data_dir.clone();
    blocking(move || std::fs::create_dir_all(&data_dir))
        .await?
        .map_err(|source| DaemonError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let sdir = store_dir(&config);
    let store = blocking(move || Store::open(&sdir)).await??;
    let spdir = spool_dir(&config);
    let spool_cfg = config.spool.clone();
    let (spool, recovery) = blocking(move || Spool::open(&spdir, spool_cfg)).await??;
    let (st, cfg) = (store.clone(), config.clone());
    let first_seq = blocking(move || recover(&st, recovery, &cfg)).await??;

    let live = Live::default();
    {
        let mut r = lock(&live.reload);
        r.config_file = config.file.display().to_string();
        r.loaded_ms = now_ms();
    }
    let (tx, rx) = mpsc::channel::<WriterMsg>(8);
    let writer_stop = CancellationToken::new();
    let writer = spool.spawn_writer(store.clone(), rx, first_seq, writer_stop.clone())?;

    let finish = CancellationToken::new();
    let (kafka_tx, kafka_rx) = watch::channel(config.kafka.clone());
    let forwarder = Forwarder {
        kafka: kafka_rx,
        spool: spool.clone(),
        store: store.clone(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        data_dir: config.data_dir.clone(),
        stats: live.forward.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let fin = finish.clone();
    let (fwd_done, mut forwarded) = oneshot::channel();
    std::thread::Builder::new()
        .name("forwarder".into())
        .spawn(move || {
            let _ = fwd_done.send(forwarder.run(fin));
        })
        .map_err(|e| DaemonError::Task(format!("cannot start the forwarder thread: {e}")))?;

    let mut sup = Supervisor {
        shared: Arc::new(Mutex::new(config.clone())),
        last_text: std::fs::read(&config.file).ok(),
        config: config.clone(),
        store: store.clone(),
        spool: spool.clone(),
        tx,
        tailers: BTreeMap::new(),
        hard_stop: CancellationToken::new(),
        kafka: kafka_tx,
        watch: FileWatch::start(config.poll_interval),
        live: live.clone(),
    };
    for source in config.sources.values() {
        sup.start(source);
    }
    let _watch = reload::watch(&config.file, reload_tx.clone())?;
    let mut poll = tokio::time::interval(reload::POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(sources = config.sources.len(), config = %config.file.display(), "logcatch is running");

    let admin_stop = CancellationToken::new();
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<AdminCommand>(8);
    let admin_state = AdminState {
        config: sup.shared.clone(),
        store: store.clone(),
        spool: spool.clone(),
        live: live.clone(),
        started: std::time::Instant::now(),
        commands: cmd_tx,
    };
    let mut admin_tasks = admin::serve(
        config.admin.listen.clone(),
        config.admin.metrics_listen,
        admin_state,
        admin_stop.clone(),
    )
    .await?;

    let mut early = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = &mut forwarded => {
                let r = r.unwrap_or(Err(ForwardError::Stopped));
                tracing::error!(result = ?r.as_ref().err(), "the forwarder stopped unexpectedly; shutting down");
                early = Some(r);
                break;
            }
            t = reload_rx.recv() => {
                let forced = reload::debounce(&mut reload_rx, t.unwrap_or(Trigger::FileEvent)).await;
                sup.reload(forced).await?;
            }
            _ = poll.tick() => { sup.reload(false).await?; }
            Some(cmd) = cmd_rx.recv() => match cmd {
                AdminCommand::Reload(reply) => {
                    let r = sup.reload(true).await?;
                    let _ = reply.send(r.unwrap_or_else(|| Err("the config file did not change".into())));
                }
                AdminCommand::Reset { name, to, reply } => {
                    let _ = reply.send(sup.reset(&name, to).await);
                }
                AdminCommand::Forget { name, reply } => {
                    let _ = reply.send(sup.forget_now(&name).await);
                }
            },
        }
    }

    tracing::info!("shutting down: stopping tailers, flushing the spool, waiting for Kafka acks");
    writer_stop.cancel();
    sup.stop_all().await;
    sup.watch.shutdown();
    drop(sup);
    admin_stop.cancel();
    while admin_tasks.join_next().await.is_some() {}
    let written = blocking(move || writer.join()).await?;
    let written = written.map_err(|_| DaemonError::Task("the spool writer panicked".into()))?;
    finish.cancel();
    let forwarded = match early {
        Some(r) => r,
        None => forwarded.await.unwrap_or(Err(ForwardError::Stopped)),
    };
    let st = store.clone();
    blocking(move || st.flush()).await??;
    written?;
    forwarded?;
    tracing::info!("stopped cleanly");
    Ok(())
}
