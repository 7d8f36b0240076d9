//! admin: owns the daemon's admin endpoint (HTTP/1.1 on a Unix socket by
//! default, mode 0600, or a loopback TCP address) and the reports it
//! serves: `/offsets`, `/queue`, `/status` (JSON), `/metrics` (Prometheus
//! text), and the actions `/reload`, `/reset`, `/forget` (POST), which are
//! carried out by the supervisor through [`AdminCommand`].
//!
//! The same reports are built offline by `logcatch-ctl` from a stopped
//! daemon's store ([`queue_offline`], [`offsets::read_offline`]).
//!
//! Invariants: the endpoint never listens on a non-loopback address unless
//! the config explicitly allowed it (checked at config load); the socket
//! file is created with mode 0600.
//!
//! Must never: change state itself. Reads go to the store on the blocking
//! pool; changes go to the supervisor, which owns the tailers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{AdminListen, Config};
use crate::control::offsets::{self, LiveView, OffsetRow};
use crate::control::reload::SourceDiff;
use crate::control::reset::ResetTo;
use crate::control::ControlError;
use crate::daemon::{Live, ReloadStatus};
use crate::kafka::forwarder::ForwardSnapshot;
use crate::runtime::lock;
use crate::runtime::now_ms;
use crate::source::tailer::TailStatus;
use crate::spool::{self, Position, Spool, SpoolCursor};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin endpoint {listen}: {source}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

/// A change the supervisor carries out for the admin endpoint.
pub enum AdminCommand {
    Reload(oneshot::Sender<Result<SourceDiff, ControlError>>),
    Reset {
        name: String,
        to: ResetTo,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Forget {
        name: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub config: Arc<Mutex<Config>>,
    pub store: Store,
    pub spool: Spool,
    pub live: Live,
    pub started: Instant,
    pub commands: mpsc::Sender<AdminCommand>,
}

/// `/queue`: the spool and delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueReport {
    pub spool_dir: String,
    pub segments: usize,
    pub bytes: u64,
    /// Spooled bytes the forwarder's durable cursor has not passed.
    pub waiting_bytes: u64,
    pub cursor: Option<SpoolCursor>,
    pub durable_end: Option<Position>,
    pub paused_by_backpressure: bool,
    pub damaged_frames: u64,
    pub damaged_bytes: u64,
    /// Spool segments found missing before they were delivered.
    #[serde(default)]
    pub missing_segments: u64,
    /// Age of the oldest spooled line Kafka has not acknowledged (live).
    pub oldest_unacked_age_ms: Option<u64>,
    /// Since the daemon started (live only).
    pub sent: Option<u64>,
    pub delivered: Option<u64>,
    pub dead_lettered: Option<u64>,
    pub producer_errors: Option<u64>,
    pub producer_rebuilds: Option<u64>,
}

/// `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config_file: String,
    pub config_loaded_ms: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub last_reload_error: Option<String>,
    pub last_reload: Option<SourceDiff>,
    pub sources: usize,
    pub running_tailers: usize,
    /// unknown | up | down | auth_failed
    pub broker: String,
    /// native | librdkafka (see [`crate::config::KafkaClient`])
    #[serde(default)]
    pub kafka_client: String,
    pub last_kafka_error: Option<String>,
}

fn waiting_bytes(sizes: &[(u64, u64)], cursor: Option<&SpoolCursor>) -> u64 {
    sizes
        .iter()
        .map(|(id, len)| match cursor {
            Some(c) if *id < c.segment => 0,
            Some(c) if *id == c.segment => len.saturating_sub(c.position),
            _ => *len,
        })
        .sum()
}

fn segment_sizes(dir: &std::path::Path) -> Vec<(u64, u64)> {
    spool::list_segments(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|id| {
            let len = std::fs::metadata(spool::segment_path(dir, id))
                .map(|m| m.len())
                .unwrap_or(0);
            (id, len)
        })
        .collect()
}

/// The queue report of a stopped daemon, from its store and spool dir.
pub fn queue_offline(config: &Config) -> Result<QueueReport, StoreError> {
    let store = offsets::open_existing(config)?;
    let cursor = store.cursor()?;
    let dir = crate::daemon::spool_dir(config);
    let sizes = segment_sizes(&dir);
    Ok(QueueReport {
        spool_dir: dir.display().to_string(),
        segments: sizes.len(),
        bytes: sizes.iter().map(|(_, l)| l).sum(),
        waiting_bytes: waiting_bytes(&sizes, cursor.as_ref()),
        cursor,
        durable_end: None,
        paused_by_backpressure: false,
        damaged_frames: 0,
        damaged_bytes: 0,
        missing_segments: 0,
        oldest_unacked_age_ms: None,
        sent: None,
        delivered: None,
        dead_lettered: None,
        producer_errors: None,
        producer_rebuilds: None,
    })
}

impl AdminState {
    fn tailer_statuses(&self) -> BTreeMap<String, TailStatus> {
        let t = lock(&self.live.tailers);
        t.iter()
            .map(|(k, v)| (k.clone(), lock(v).clone()))
            .collect()
    }

    fn config(&self) -> Config {
        lock(&self.config).clone()
    }

    fn queue(&self) -> Result<QueueReport, StoreError> {
        let cursor = self.store.cursor()?;
        let stats = self.spool.stats();
        let sizes = self.spool.segment_sizes();
        let f: ForwardSnapshot = self.live.forward.snapshot();
        Ok(QueueReport {
            spool_dir: self.spool.dir().display().to_string(),
            segments: stats.segments,
            bytes: stats.bytes,
            waiting_bytes: waiting_bytes(&sizes, cursor.as_ref()),
            cursor,
            durable_end: Some(self.spool.durable_end()),
            paused_by_backpressure: stats.paused,
            damaged_frames: stats.damaged_frames,
            damaged_bytes: stats.damaged_bytes,
            missing_segments: stats.missing_segments,
            oldest_unacked_age_ms: f
                .oldest_unacked_spooled_ms
                .map(|t| now_ms().saturating_sub(t)),
            sent: Some(f.sent),
            delivered: Some(f.delivered),
            dead_lettered: Some(f.dead_lettered),
            producer_errors: Some(f.producer_errors),
            producer_rebuilds: Some(f.rebuilds),
        })
    }

    fn offsets(&self) -> Result<Vec<OffsetRow>, StoreError> {
        let tailers = self.tailer_statuses();
        let view = LiveView {
            tailers: &tailers,
            spool_paused: self.spool.stats().paused,
        };
        let mut rows = offsets::rows(&self.config(), self.store.sources()?, Some(&view));
        // Removed sources stay listed until the cursor passes their lines.
        let cursor = self.store.cursor()?.map(|c| Position {
            segment: c.segment,
            pos: c.position,
        });
        let mut draining = lock(&self.live.draining);
        draining.retain(|_, (_, end)| cursor.is_none_or(|c| c < *end));
        for (name, (path, _)) in draining.iter() {
            if !rows.iter().any(|r| &r.name == name) {
                rows.push(OffsetRow::removed_draining(name, path));
            }
        }
        Ok(rows)
    }

    fn status(&self) -> StatusReport {
        let r: ReloadStatus = lock(&self.live.reload).clone();
        let f = self.live.forward.snapshot();
        let config = self.config();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            config_file: r.config_file,
            config_loaded_ms: r.loaded_ms,
            reloads: r.reloads,
            reload_failures: r.failures,
            last_reload_error: r.last_error,
            last_reload: r.last_diff,
            sources: config.sources.len(),
            running_tailers: self.live.tailers.lock().map(|t| t.len()).unwrap_or(0),
            broker: f.broker.to_string(),
            kafka_client: match config.kafka.client {
                crate::config::KafkaClient::Native => "native".into(),
                crate::config::KafkaClient::Librdkafka => "librdkafka".into(),
            },
            last_kafka_error: f.last_error,
        }
    }

    fn metrics(&self) -> Result<String, StoreError> {
        let rows = self.offsets()?;
        let q = self.queue()?;
        let st = self.status();
        let mut m = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(m, "{name}{labels} {v}");
            }
        };
        let per_source = |f: &dyn Fn(&OffsetRow) -> Option<u64>| -> Vec<(String, u64)> {
            rows.iter()
                .filter_map(|r| f(r).map(|v| (format!("{{source=\"{}\"}}", escape(&r.name)), v)))
                .collect()
        };
        family(
            "logcatch_source_lines_read_total",
            "counter",
            "Lines spooled from the source since its record was created.",
            &per_source(&|r| r.lines),
        );
        family(
            "logcatch_source_bytes_read_total",
            "counter",
            "Bytes spooled from the source since its record was created.",
            &per_source(&|r| r.bytes),
        );
        family(
            "logcatch_source_lag_bytes",
            "gauge",
            "Bytes of the file not yet read.",
            &per_source(&|r| r.lag_bytes),
        );
        for (name, kind, help, v) in scalar_metrics(&q, &st) {
            family(name, kind, help, &[(String::new(), v)]);
        }
        Ok(m)
    }
}

/// The metric families with one sample each: (name, type, help, value).
/// Long because it is a table, one entry per metric.
fn scalar_metrics(
    q: &QueueReport,
    st: &StatusReport,
) -> [(&'static str, &'static str, &'static str, u64); 13] {
    [
        (
            "logcatch_spool_bytes",
            "gauge",
            "Bytes in spool segment files.",
            q.bytes,
        ),
        (
            "logcatch_spool_segments",
            "gauge",
            "Spool segment files.",
            q.segments as u64,
        ),
        (
            "logcatch_spool_waiting_bytes",
            "gauge",
            "Spooled bytes not yet acknowledged by Kafka.",
            q.waiting_bytes,
        ),
        (
            "logcatch_spool_paused",
            "gauge",
            "1 while tailers wait for spool room.",
            q.paused_by_backpressure as u64,
        ),
        (
            "logcatch_spool_damaged_frames_total",
            "counter",
            "Damaged spool frames skipped.",
            q.damaged_frames,
        ),
        (
            "logcatch_records_sent_total",
            "counter",
            "Lines handed to the Kafka producer.",
            q.sent.unwrap_or(0),
        ),
        (
            "logcatch_records_delivered_total",
            "counter",
            "Lines Kafka acknowledged.",
            q.delivered.unwrap_or(0),
        ),
        (
            "logcatch_delivery_errors_total",
            "counter",
            "Failed deliveries (resent after a producer rebuild).",
            q.producer_errors.unwrap_or(0),
        ),
        (
            "logcatch_dead_lettered_total",
            "counter",
            "Lines Kafka refused permanently, written to the dead-letter file.",
            q.dead_lettered.unwrap_or(0),
        ),
        (
            "logcatch_reloads_total",
            "counter",
            "Config reloads applied.",
            st.reloads,
        ),
        (
            "logcatch_reload_failures_total",
            "counter",
            "Config reloads rejected.",
            st.reload_failures,
        ),
        (
            "logcatch_running_tailers",
            "gauge",
            "Tailer tasks running.",
            st.running_tailers as u64,
        ),
        (
            "logcatch_kafka_auth_failed",
            "gauge",
            "1 while a broker refuses logcatch's TLS handshake or SASL login (see last_kafka_error).",
            (st.broker == "auth_failed") as u64,
        ),
    ]
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn internal(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

async fn with_state<T: Send + 'static>(
    state: AdminState,
    f: impl FnOnce(&AdminState) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(move || f(&state)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(internal(e)),
        Err(e) => Err(internal(e)),
    }
}

async fn get_offsets(State(s): State<AdminState>) -> Response {
    match with_state(s, |s| s.offsets()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn get_queue(State(s): State<AdminState>) -> Response {
    match with_state(s, |s| s.queue()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn get_status(State(s): State<AdminState>) -> Response {
    Json(s.status()).into_response()
}

async fn get_metrics(State(s): State<AdminState>) -> Response {
    match with_state(s, |s| s.metrics()).await {
        Ok(v) => ([("content-type", "text/plain; version=0.0.4")], v).into_response(),
        Err(r) => r,
    }
}

async fn command<T: Serialize>(
    s: &AdminState,
    make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> AdminCommand,
) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.commands.send(make(tx)).await.is_err() {
        return internal("the daemon is shutting down");
    }
    match rx.await {
        Ok(Ok(v)) => Json(serde_json::json!({ "ok": true, "result": v })).into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(_) => internal("the daemon is shutting down"),
    }
}

async fn post_reload(State(s): State<AdminState>) -> Response {
    command(&s, AdminCommand::Reload).await
}

#[derive(Deserialize)]
struct ResetQuery {
    name: String,
    to: String,
}

async fn post_reset(State(s): State<AdminState>, Query(q): Query<ResetQuery>) -> Response {
    let to: ResetTo = match q.to.parse() {
        Ok(t) => t,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": e })),
            )
                .into_response()
        }
    };
    command(&s, |reply| AdminCommand::Reset {
        name: q.name,
        to,
        reply,
    })
    .await
}

#[derive(Deserialize)]
struct NameQuery {
    name: String,
}

async fn post_forget(State(s): State<AdminState>, Query(q): Query<NameQuery>) -> Response {
    command(&s, |reply| AdminCommand::Forget {
        name: q.name,
        reply,
    })
    .await
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/offsets", get(get_offsets))
        .route("/queue", get(get_queue))
        .route("/status", get(get_status))
        .route("/metrics", get(get_metrics))
        .route("/reload", post(post_reload))
        .route("/reset", post(post_reset))
        .route("/forget", post(post_forget))
        .with_state(state)
}

/// Serves the admin endpoint (and the optional metrics port) until
/// `shutdown`; removes the socket file afterwards.
pub async fn serve(
    listen: AdminListen,
    metrics: Option<std::net::SocketAddr>,
    state: AdminState,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinSet<()>, AdminError> {
    let mut tasks = tokio::task::JoinSet::new();
    let bind_err = |listen: &dyn std::fmt::Display| {
        let listen = listen.to_string();
        move |source| AdminError::Bind { listen, source }
    };
    match &listen {
        AdminListen::Unix(path) => {
            // One daemon per data_dir (sled's lock), so a socket file left
            // here is from a crashed run.
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path).map_err(bind_err(&listen))?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(bind_err(&listen))?;
            }
            let app = router(state.clone());
            let stop = shutdown.clone();
            let path: PathBuf = path.clone();
            tasks.spawn(async move {
                let served = axum::serve(l, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin endpoint failed");
                }
                let _ = std::fs::remove_file(&path);
            });
        }
        AdminListen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_err(&listen))?;
            let app = router(state.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let served = axum::serve(l, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin endpoint failed");
                }
            });
        }
    }
    if let Some(addr) = metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err(&addr))?;
        let app = Router::new()
            .route("/metrics", get(get_metrics))
            .with_state(state);
        tasks.spawn(async move {
            let served = axum::serve(l, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    tracing::info!(admin = %listen, metrics = ?metrics, "admin endpoint listening");
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_bytes_counts_from_the_cursor() {
        let sizes = [(1, 100), (2, 50), (3, 10)];
        let c = SpoolCursor {
            segment: 2,
            position: 20,
            lines_done: 0,
        };
        assert_eq!(waiting_bytes(&sizes, Some(&c)), 30 + 10);
        assert_eq!(waiting_bytes(&sizes, None), 160);
    }
}
