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

use crate::config::{Config, KafkaConfig, SourceConfig};
use crate::forwarder::{ForwardError, ForwardStats, Forwarder};
use crate::reload::{self, SourceDiff, Trigger};
use crate::spool::{Recovery, Spool, SpoolError, WriterMsg};
use crate::store::{now_ms, Store, StoreError};
use crate::tailer::{self, FileTail, TailStatus, TailStop};

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
}

struct RunningTailer {
    stop: TailStop,
    task: JoinHandle<()>,
}

/// Owns the tailer tasks: one per configured source, never two.
struct Supervisor {
    config: Config,
    store: Store,
    tx: mpsc::Sender<WriterMsg>,
    tailers: BTreeMap<String, RunningTailer>,
    /// Shutdown for every tailer at once.
    hard_stop: CancellationToken,
    kafka: watch::Sender<KafkaConfig>,
    live: Live,
}

impl Supervisor {
    fn start(&mut self, source: &SourceConfig) {
        let tail = FileTail::new(
            source.clone(),
            self.store.clone(),
            self.config.read_buffer_bytes,
        );
        self.live
            .tailers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source.name.clone(), tail.status());
        let stop = TailStop {
            graceful: CancellationToken::new(),
            hard: self.hard_stop.clone(),
        };
        let task = tokio::spawn(tailer::run(
            tail,
            self.tx.clone(),
            stop.clone(),
            self.config.poll_interval,
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
        self.live
            .tailers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Waits until the writer committed everything sent so far.
    async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Sync(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn forget(&self, name: &str) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(WriterMsg::Forget(name.to_string(), tx))
            .await
            .is_ok()
        {
            match rx.await {
                Ok(Ok(())) => tracing::info!(source = name, "deleted the source's offset record"),
                Ok(Err(e)) => {
                    tracing::error!(source = name, error = %e, "cannot delete the source's offset record")
                }
                Err(_) => {}
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
        for name in d.removed.iter().chain(&d.moved) {
            self.stop(name).await;
            self.forget(name).await;
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
        d
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
        let mut r = live.reload.lock().unwrap_or_else(|p| p.into_inner());
        r.config_file = config.file.display().to_string();
        r.loaded_ms = now_ms();
    }
    let (tx, rx) = mpsc::channel::<WriterMsg>(64);
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
        config: config.clone(),
        store: store.clone(),
        tx,
        tailers: BTreeMap::new(),
        hard_stop: CancellationToken::new(),
        kafka: kafka_tx,
        live: live.clone(),
    };
    for source in config.sources.values() {
        sup.start(source);
    }
    let _watch = reload::watch(&config.file, reload_tx.clone())?;
    let mut last_text = std::fs::read(&config.file).ok();
    let mut poll = tokio::time::interval(reload::POLL_EVERY);
    tracing::info!(sources = config.sources.len(), config = %config.file.display(), "logcatch is running");

    let mut early = None;
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = &mut forwarded => {
                let r = r.unwrap_or(Err(ForwardError::Stopped));
                tracing::error!(result = ?r.as_ref().err(), "the forwarder stopped unexpectedly; shutting down");
                early = Some(r);
                break;
            }
            t = reload_rx.recv() => reload::debounce(&mut reload_rx, t.unwrap_or(Trigger::FileEvent)).await,
            _ = poll.tick() => false,
        };
        let path = sup.config.file.clone();
        let text = blocking(move || std::fs::read(&path).ok()).await?;
        if !forced && text == last_text {
            continue;
        }
        let path = sup.config.file.clone();
        let loaded = blocking(move || Config::load(&path)).await?;
        last_text = text;
        match loaded {
            Ok(new) => {
                let d = sup.apply(new).await;
                tracing::info!(
                    running_tailers = sup.tailers.len(),
                    "config reloaded: {}",
                    d.summary()
                );
                let mut r = live.reload.lock().unwrap_or_else(|p| p.into_inner());
                r.reloads += 1;
                r.loaded_ms = now_ms();
                r.last_error = None;
                r.last_diff = Some(d);
            }
            Err(e) => {
                tracing::error!(
                    "config reload rejected, still running on the last good config: {e}"
                );
                let mut r = live.reload.lock().unwrap_or_else(|p| p.into_inner());
                r.failures += 1;
                r.last_error = Some(e.to_string());
            }
        }
    }

    tracing::info!("shutting down: stopping tailers, flushing the spool, waiting for Kafka acks");
    writer_stop.cancel();
    sup.stop_all().await;
    drop(sup);
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
