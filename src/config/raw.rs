//! The config file as written: serde structs with `deny_unknown_fields`,
//! and every default in one place ([`defaults`]). Nothing here is checked
//! beyond its type; [`super::validate`] turns a [`RawConfig`] into the typed
//! [`Config`](super::Config).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::security::{RawSasl, RawTls};
use super::{FsyncPolicy, LongLines, StartAt};

// ---------------------------------------------------------------------------
// Defaults: the one place they live.
// ---------------------------------------------------------------------------
pub(super) mod defaults {
    use super::*;
    pub const DATA_DIR: &str = "./data";
    pub const TOPIC: &str = "logs";
    pub const COMPRESSION: &str = "lz4";
    pub const LINGER_MS: u64 = 5;
    pub const CREATE_TOPICS: bool = true;
    pub const TOPIC_PARTITIONS: i32 = 1;
    /// -1: min(3, brokers in the cluster's metadata), at creation.
    pub const TOPIC_REPLICATION_FACTOR: i16 = -1;
    pub const ACK_TIMEOUT_ON_SHUTDOWN: Duration = Duration::from_secs(10);
    /// How long a Kafka request may wait for its answer (librdkafka's
    /// `request.timeout.ms` default).
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long connecting to a broker may take.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long the native client retries a partition's failing batches
    /// in one session (the Java client's `delivery.timeout.ms` default).
    pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
    pub const SPOOL_MAX_BYTES: u64 = 1 << 30;
    pub const SEGMENT_BYTES: u64 = 64 << 20;
    pub const FSYNC: FsyncPolicy = FsyncPolicy::Batch;
    pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
    pub const MAX_LINE_BYTES: u64 = 1 << 20;
    pub const LONG_LINES: LongLines = LongLines::Split;
    pub const START_AT: StartAt = StartAt::Beginning;
    pub const READ_BUFFER_BYTES: u64 = 256 << 10;
    /// How long a rotated file is still read after its end before it is
    /// finished (Fluent Bit's `Rotate_Wait` default).
    pub const ROTATE_WAIT: Duration = Duration::from_secs(5);
    /// How long after a glob source's file vanished (read to its end) its
    /// record is deleted (Filebeat's `clean_removed` keeps none; Fluent
    /// Bit's DB keeps them for good).
    pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
}

// ---------------------------------------------------------------------------
// The file as written (serde).
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) data_dir: Option<String>,
    #[serde(default)]
    pub(super) kafka: RawKafka,
    #[serde(default)]
    pub(super) configpath: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub(super) spool: RawSpool,
    #[serde(default)]
    pub(super) tailer: RawTailer,
    #[serde(default)]
    pub(super) admin: RawAdmin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    pub(super) metrics_listen: Option<String>,
    pub(super) allow_non_loopback: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafka {
    pub(super) brokers: Option<String>,
    pub(super) topic: Option<String>,
    #[serde(default)]
    pub(super) properties: BTreeMap<String, serde_yaml::Value>,
    pub(super) compression: Option<String>,
    pub(super) client: Option<String>,
    pub(super) linger_ms: Option<u64>,
    pub(super) create_topics: Option<bool>,
    pub(super) topic_partitions: Option<i32>,
    pub(super) topic_replication_factor: Option<i16>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) shutdown_ack_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) request_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) delivery_timeout: Option<Duration>,
    pub(super) tls: Option<RawTls>,
    pub(super) sasl: Option<RawSasl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) path: RawPaths,
    #[serde(default)]
    pub(super) exclude: Vec<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) ignore_older_than: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) forget_after: Option<Duration>,
    pub(super) topic: Option<String>,
    pub(super) start_at: Option<StartAt>,
    #[serde(default, deserialize_with = "de_opt_size")]
    pub(super) max_line_bytes: Option<u64>,
    pub(super) long_lines: Option<LongLines>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) rotate_wait: Option<Duration>,
}

/// A source's `path`: one path or pattern, or a list of patterns.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawPaths {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpool {
    #[serde(default, deserialize_with = "de_opt_size")]
    pub(super) max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_size")]
    pub(super) segment_bytes: Option<u64>,
    pub(super) fsync: Option<FsyncPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTailer {
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_size")]
    pub(super) max_line_bytes: Option<u64>,
    pub(super) long_lines: Option<LongLines>,
    pub(super) start_at: Option<StartAt>,
    #[serde(default, deserialize_with = "de_opt_size")]
    pub(super) read_buffer: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) rotate_wait: Option<Duration>,
}

/// A size: a plain number of bytes, or a string such as `64KiB`, `1GiB`, `10MB`.
fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(s)) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A duration such as `100ms`, `2s`, `1m`.
fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => humantime::parse_duration(s.trim())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration `{s}`: {e}"))),
    }
}

/// Parses `1GiB`, `512 MiB`, `10MB`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size `{text}`: {e} (use e.g. 4096, 64KiB, 1GiB)"))
}
