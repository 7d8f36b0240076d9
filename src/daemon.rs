//! daemon: owns the running pipeline: opens the store and spool, recovers
//! offsets from the spool, starts the spool writer, the forwarder and one
//! tailer per source, and shuts them down in data-flow order.
//!
//! Invariants: shutdown goes tailers -> spool writer -> forwarder, so every
//! line a tailer handed over is durable before the forwarder's last drain,
//! and the forwarder's final cursor is written before the store closes.
//!
//! Must never: start a tailer before recovery has merged the spool's
//! newest batches into the store (the tailer would resume from a stale
//! offset and spool lines twice).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::forwarder::{ForwardError, ForwardStats, Forwarder};
use crate::spool::{Recovery, Spool, SpoolError, WriterMsg};
use crate::store::{Store, StoreError};
use crate::tailer::{self, FileTail, TailStatus};

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
/// and returns the next commit sequence number.
fn recover(store: &Store, recovery: Recovery) -> Result<u64, DaemonError> {
    let mut max_seq = recovery.max_seq;
    for (_, rec) in store.sources()? {
        max_seq = max_seq.max(rec.seq);
    }
    for (name, batch) in recovery.last_batches {
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

/// Live handles for status reporting.
#[derive(Clone, Default)]
pub struct Live {
    pub tailers: Arc<Mutex<BTreeMap<String, Arc<Mutex<TailStatus>>>>>,
    pub forward: Arc<ForwardStats>,
}

/// Runs the daemon until `shutdown` is cancelled, then stops cleanly.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
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
    let st = store.clone();
    let first_seq = blocking(move || recover(&st, recovery)).await??;

    let live = Live::default();
    let (tx, rx) = mpsc::channel::<WriterMsg>(64);
    let writer_stop = CancellationToken::new();
    let writer = spool.spawn_writer(store.clone(), rx, first_seq, writer_stop.clone())?;

    let finish = CancellationToken::new();
    let forwarder = Forwarder {
        kafka: config.kafka.clone(),
        spool: spool.clone(),
        store: store.clone(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        data_dir: config.data_dir.clone(),
        stats: live.forward.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let fin = finish.clone();
    let (fwd_done, mut forwarded) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("forwarder".into())
        .spawn(move || {
            let _ = fwd_done.send(forwarder.run(fin));
        })
        .map_err(|e| DaemonError::Task(format!("cannot start the forwarder thread: {e}")))?;

    let tail_stop = CancellationToken::new();
    let mut tailers = JoinSet::new();
    for source in config.sources.values() {
        let tail = FileTail::new(source.clone(), store.clone(), config.read_buffer_bytes);
        live.tailers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source.name.clone(), tail.status());
        tailers.spawn(tailer::run(
            tail,
            tx.clone(),
            tail_stop.clone(),
            config.poll_interval,
        ));
    }
    drop(tx);
    tracing::info!(sources = config.sources.len(), config = %config.file.display(), "logcatch is running");

    let mut early = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut forwarded => {
            let r = r.unwrap_or_else(|_| Err(ForwardError::Stopped));
            tracing::error!(result = ?r.as_ref().err(), "the forwarder stopped unexpectedly; shutting down");
            early = Some(r);
        }
    }
    tracing::info!("shutting down: stopping tailers, flushing the spool, waiting for Kafka acks");
    tail_stop.cancel();
    writer_stop.cancel();
    while let Some(joined) = tailers.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "a tailer task failed");
        }
    }
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
