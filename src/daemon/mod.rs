//! daemon: owns the running pipeline: opens the store and spool, recovers
//! offsets from the spool, starts the spool writer, the forwarder and one
//! tailer per source (the [`supervisor::Supervisor`]), applies config
//! reloads, and shuts everything down in data-flow order ([`Shutdown`]).
//!
//! Invariants:
//! - Shutdown goes tailers -> spool writer -> forwarder, so every line a
//!   tailer handed over is durable before the forwarder's last drain, and
//!   the forwarder's final cursor is written before the store closes.
//! - A source's record is deleted ([`WriterMsg::SetRecord`] with `None`)
//!   only after its tailer has stopped and through the writer's queue, so
//!   it lands after every batch that tailer sent; its spooled lines are
//!   still delivered.
//! - A restarted tailer starts only after the writer has committed every
//!   batch of the old one ([`WriterMsg::Sync`]), so it resumes exactly
//!   there.
//!
//! Must never: start a tailer before recovery has merged the spool's
//! newest batches into the store (the tailer would resume from a stale
//! offset and spool lines twice), or run two tailers for one source.

mod shutdown;
mod supervisor;

pub use shutdown::{AbortGuard, Phase, Shutdown};
pub use supervisor::{Live, ReloadStatus};

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::control::admin::{self, AdminCommand, AdminState};
use crate::control::reload::{self, Trigger};
use crate::control::reset::{self, ResetTo};
use crate::control::ControlError;
use crate::kafka::forwarder::{ForwardError, Forwarder};
use crate::spool::{Recovery, Spool, SpoolBatch, SpoolError, WriterMsg};
use crate::store::{Store, StoreError};
use supervisor::Supervisor;

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
    Task(#[from] tokio::task::JoinError),
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} panicked")]
    Panicked(&'static str),
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
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

/// Merges the newest segment's batches into the store (the
/// [`crate::spool`] invariant that offsets are recovered from the spool)
/// and returns the next commit sequence number. Batches of sources that are
/// no longer configured are not merged: their records were forgotten.
fn recover(store: &Store, recovery: Recovery, config: &Config) -> Result<u64, StoreError> {
    let mut max_seq = recovery.max_seq;
    for (_, rec) in store.sources()? {
        max_seq = max_seq.max(rec.max_seq());
    }
    // In commit order: the record a batch makes depends on the ones before
    // it (`SpoolBatch::record`: a new file pushes the old one to draining).
    let mut batches: Vec<SpoolBatch> = recovery.last_batches.into_values().collect();
    batches.sort_by_key(|b| b.seq);
    for batch in batches {
        let name = batch.source.clone();
        if !config.has_key(&name) {
            continue;
        }
        let prev = store.source(&name)?;
        // Newer than the stored position of its file; a file the record
        // does not hold is new only if the batch is newer than the whole
        // record (else the record already moved past it: a drained file).
        let stored_seq = prev
            .as_ref()
            .map(|p| p.seq_of(&batch.identity).unwrap_or_else(|| p.max_seq()));
        if stored_seq.is_none_or(|seq| seq < batch.seq) {
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
pub fn offline_set_record(
    config: &Config,
    name: &str,
    to: Option<ResetTo>,
) -> Result<(), ControlError> {
    let store = crate::control::offsets::open_existing(config)?;
    let (_spool, recovery) = Spool::open(&spool_dir(config), config.spool.clone())?;
    let next_seq = recover(&store, recovery, config)?;
    let prev = store.source(name)?;
    match to {
        Some(to) => {
            let source = config
                .source_for(name)
                .ok_or_else(|| ControlError::UnknownSource {
                    name: name.to_string(),
                    config: config.file.clone(),
                })?;
            let mut rec = reset::reset_record(&source, prev.as_ref(), to)?;
            rec.seq = next_seq;
            store.put_source(name, &rec)?;
        }
        None => {
            if !store.remove_source(name)? {
                return Err(ControlError::NoRecord(name.to_string()));
            }
        }
    }
    Ok(store.flush()?)
}

/// Handle for asking the running daemon to reload (SIGHUP, admin).
pub type ReloadSender = mpsc::Sender<Trigger>;

/// The store and spool, opened and recovered.
struct Opened {
    store: Store,
    spool: Spool,
    first_seq: u64,
}

async fn open(config: &Config) -> Result<Opened, DaemonError> {
    let data_dir = config.data_dir.clone();
    blocking(move || std::fs::create_dir_all(&data_dir))
        .await?
        .map_err(|source| DaemonError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let sdir = store_dir(config);
    let store = blocking(move || Store::open(&sdir)).await??;
    let spdir = spool_dir(config);
    let spool_cfg = config.spool.clone();
    let (spool, recovery) = blocking(move || Spool::open(&spdir, spool_cfg)).await??;
    let (st, cfg) = (store.clone(), config.clone());
    let first_seq = blocking(move || recover(&st, recovery, &cfg)).await??;
    Ok(Opened {
        store,
        spool,
        first_seq,
    })
}

/// Starts the forwarder on a thread of its own (it blocks on sockets and
/// the spool); its result arrives on the returned channel.
fn start_forwarder(
    forwarder: Forwarder,
    shutdown: &Shutdown,
) -> Result<oneshot::Receiver<Result<(), ForwardError>>, DaemonError> {
    let finish = shutdown.token(Phase::DrainForwarder);
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("forwarder".into())
        .spawn(move || {
            let _ = done.send(forwarder.run(finish));
        })
        .map_err(|source| DaemonError::Thread {
            name: "forwarder",
            source,
        })?;
    Ok(result)
}

/// Runs the daemon until `shutdown` is requested, then stops cleanly.
/// `reload_rx` receives forced reloads (SIGHUP); file changes are watched
/// here.
pub async fn run(
    config: Config,
    shutdown: Shutdown,
    reload_tx: ReloadSender,
    reload_rx: mpsc::Receiver<Trigger>,
) -> Result<(), DaemonError> {
    // An early error return must not leave the writer or forwarder running.
    let guard = shutdown.abort_on_drop();
    let Opened {
        store,
        spool,
        first_seq,
    } = open(&config).await?;
    let live = Live::new(&config.file);
    let (tx, rx) = mpsc::channel::<WriterMsg>(8);
    let writer_stop = shutdown.token(Phase::StopTailers);
    let writer = spool.spawn_writer(store.clone(), rx, first_seq, writer_stop)?;

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
    let forwarded = start_forwarder(forwarder, &shutdown)?;

    let mut sup = Supervisor::new(
        &config,
        store.clone(),
        spool.clone(),
        tx,
        shutdown.token(Phase::StopTailers),
        kafka_tx,
        live.clone(),
    );
    for source in config.sources.values() {
        sup.start(source);
    }
    sup.rediscover().await?;
    let _watch = reload::watch(&config.file, reload_tx.clone())?;
    tracing::info!(sources = config.sources.len(), config = %config.file.display(), "logcatch is running");

    let (cmd_tx, cmd_rx) = mpsc::channel::<AdminCommand>(8);
    let admin_state = AdminState {
        config: sup.shared_config(),
        store: store.clone(),
        spool: spool.clone(),
        live: live.clone(),
        started: std::time::Instant::now(),
        commands: cmd_tx,
    };
    let admin_tasks = admin::serve(
        config.admin.listen.clone(),
        config.admin.metrics_listen,
        admin_state,
        shutdown.token(Phase::CloseAdmin),
    )
    .await?;

    let mut forwarded = forwarded;
    let early = serve(&mut sup, &shutdown, reload_rx, cmd_rx, &mut forwarded).await?;
    let running = Running {
        sup,
        admin_tasks,
        writer,
        forwarded,
        early,
        store,
    };
    let result = stop(running, &shutdown).await;
    guard.disarm();
    result
}

/// What [`stop`] shuts down.
struct Running {
    sup: Supervisor,
    admin_tasks: JoinSet<()>,
    writer: std::thread::JoinHandle<Result<(), SpoolError>>,
    forwarded: oneshot::Receiver<Result<(), ForwardError>>,
    /// The forwarder's result if it ended before a stop was requested.
    early: Option<Result<(), ForwardError>>,
    store: Store,
}

/// The supervisor's loop: reloads, the config poll and admin commands,
/// until a stop is requested or the forwarder ends. Returns the forwarder's
/// result if it ended first.
async fn serve(
    sup: &mut Supervisor,
    shutdown: &Shutdown,
    mut reload_rx: mpsc::Receiver<Trigger>,
    mut cmd_rx: mpsc::Receiver<AdminCommand>,
    forwarded: &mut oneshot::Receiver<Result<(), ForwardError>>,
) -> Result<Option<Result<(), ForwardError>>, DaemonError> {
    let mut poll = tokio::time::interval(reload::POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut discovery = tokio::time::interval(sup.discovery_every());
    discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.requested() => return Ok(None),
            r = &mut *forwarded => {
                let r = r.unwrap_or(Err(ForwardError::Stopped));
                tracing::error!(result = ?r.as_ref().err(), "the forwarder stopped unexpectedly; shutting down");
                return Ok(Some(r));
            }
            t = reload_rx.recv() => {
                let forced = reload::debounce(&mut reload_rx, t.unwrap_or(Trigger::FileEvent)).await;
                sup.reload(forced).await?;
            }
            _ = poll.tick() => { sup.reload(false).await?; }
            _ = discovery.tick() => { sup.rediscover().await?; }
            Some(cmd) = cmd_rx.recv() => match cmd {
                AdminCommand::Reload(reply) => {
                    let r = sup.reload(true).await?;
                    let _ = reply.send(r.unwrap_or(Err(ControlError::Unchanged)));
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
}

/// Shuts down in data-flow order, entering each [`Phase`] in turn.
async fn stop(running: Running, shutdown: &Shutdown) -> Result<(), DaemonError> {
    let Running {
        mut sup,
        mut admin_tasks,
        writer,
        forwarded,
        early,
        store,
    } = running;
    tracing::info!("shutting down: stopping tailers, flushing the spool, waiting for Kafka acks");
    shutdown.request();
    shutdown.enter(Phase::StopTailers);
    sup.stop_all().await;
    // Dropping the supervisor drops the writer's last sender: the writer
    // commits what it has and exits.
    drop(sup);
    shutdown.enter(Phase::CloseAdmin);
    while admin_tasks.join_next().await.is_some() {}
    let written = blocking(move || writer.join()).await?;
    let written = written.map_err(|_| DaemonError::Panicked("spool writer"))?;
    shutdown.enter(Phase::DrainForwarder);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileIdentity;

    fn batch_of(ino: u64, end: u64, seq: u64) -> SpoolBatch {
        SpoolBatch {
            seq,
            spooled_ms: 0,
            source: "app".into(),
            path: "/logs/app.log".into(),
            topic: "logs".into(),
            identity: FileIdentity {
                dev: 1,
                ino,
                head_len: 4,
                head_crc: 5,
            },
            end_offset: end,
            tail_len: 0,
            tail_crc: 0,
            data: b"x".to_vec(),
            lines: vec![crate::spool::LineRef {
                offset: end.saturating_sub(2),
                len: 1,
            }],
        }
    }

    fn recovery(batches: &[SpoolBatch]) -> Recovery {
        let mut r = Recovery::default();
        for b in batches {
            r.max_seq = r.max_seq.max(b.seq);
            let key = (b.source.clone(), b.identity.dev, b.identity.ino);
            r.last_batches.insert(key, b.clone());
        }
        r
    }

    fn setup() -> (tempfile::TempDir, Store, Config) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let config = Config::parse(
            &dir.path().join("config.yaml"),
            "sources:\n  app:\n    path: /logs/app.log\n",
        )
        .unwrap();
        (dir, store, config)
    }

    /// The store saw only the old file; the newest segment holds the new
    /// file's batch and then a late line of the old one: both positions
    /// come back, the new file as the record's own.
    #[test]
    fn recovery_brings_back_the_new_file_and_the_draining_one() {
        let (_dir, store, config) = setup();
        store
            .put_source("app", &batch_of(10, 100, 1).record(None))
            .unwrap();
        let next = recover(
            &store,
            recovery(&[batch_of(20, 50, 3), batch_of(10, 120, 5)]),
            &config,
        )
        .unwrap();
        assert_eq!(next, 6);
        let rec = store.source("app").unwrap().unwrap();
        assert_eq!((rec.identity.ino, rec.offset), (20, 50));
        assert_eq!(rec.draining.len(), 1);
        assert_eq!(
            (rec.draining[0].identity.ino, rec.draining[0].offset),
            (10, 120)
        );
    }

    /// A batch of a file the record no longer holds, older than the
    /// record (the file was drained and finished): it changes nothing, and
    /// the next sequence number stays above every one in the record.
    #[test]
    fn recovery_leaves_a_finished_file_out() {
        let (_dir, store, config) = setup();
        let mut rec = batch_of(30, 10, 20).record(None);
        rec.draining.push(crate::store::FilePosition {
            identity: batch_of(40, 0, 0).identity,
            offset: 7,
            tail_len: 0,
            tail_crc: 0,
            seq: 25,
        });
        store.put_source("app", &rec).unwrap();
        let next = recover(&store, recovery(&[batch_of(10, 100, 12)]), &config).unwrap();
        assert_eq!(next, 26, "above the draining file's number too");
        assert_eq!(store.source("app").unwrap().unwrap(), rec);
    }
}
