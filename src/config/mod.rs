//! config: owns the YAML configuration file format and its validation.
//!
//! The file is parsed into `RawConfig` (serde, `deny_unknown_fields`, every
//! default in `defaults` below) and then validated once, at load, into the
//! typed `Config` that the rest of the daemon trusts without re-checking.
//!
//! Invariants: every path in a `Config` is absolute (relative paths are
//! resolved against the config file's directory); source names are unique
//! across `configpath` and `sources`; every size and duration is in range.
//!
//! Must never: touch the filesystem beyond reading the config file itself,
//! or start anything. Loading is pure, so a bad edit can be rejected while
//! the daemon keeps running on the last good `Config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Errors from loading a config file. Every variant names the file, and the
/// line and key where it can.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}:{line}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// Where a tailer starts on a file it has no stored offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

/// What happens to a line longer than `max_line_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongLines {
    /// Deliver it as several messages of at most `max_line_bytes` each.
    Split,
    /// Deliver the first `max_line_bytes` and skip the rest of the line.
    Truncate,
}

/// When the spool calls fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Group commit: every batch is on disk before its file offset is
    /// committed and before the forwarder may send it. Survives power loss.
    Batch,
    /// Leave flushing to the kernel. Survives `kill -9` (the page cache
    /// outlives the process) but not power loss.
    Never,
}

// ---------------------------------------------------------------------------
// Defaults: the one place they live.
// ---------------------------------------------------------------------------
mod defaults {
    use super::*;
    pub const DATA_DIR: &str = "./data";
    pub const TOPIC: &str = "logs";
    pub const COMPRESSION: &str = "lz4";
    pub const LINGER_MS: u64 = 5;
    pub const CREATE_TOPICS: bool = true;
    pub const TOPIC_PARTITIONS: i32 = 1;
    /// -1: the broker's `default.replication.factor`.
    pub const TOPIC_REPLICATION_FACTOR: i16 = -1;
    pub const ACK_TIMEOUT_ON_SHUTDOWN: Duration = Duration::from_secs(10);
    pub const SPOOL_MAX_BYTES: u64 = 1 << 30;
    pub const SEGMENT_BYTES: u64 = 64 << 20;
    pub const FSYNC: FsyncPolicy = FsyncPolicy::Batch;
    pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
    pub const MAX_LINE_BYTES: u64 = 1 << 20;
    pub const LONG_LINES: LongLines = LongLines::Split;
    pub const START_AT: StartAt = StartAt::Beginning;
    pub const READ_BUFFER_BYTES: u64 = 256 << 10;
}

// ---------------------------------------------------------------------------
// The file as written (serde).
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<String>,
    #[serde(default)]
    kafka: RawKafka,
    #[serde(default)]
    configpath: BTreeMap<String, String>,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    tailer: RawTailer,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    metrics_listen: Option<String>,
    allow_non_loopback: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, serde_yaml::Value>,
    compression: Option<String>,
    client: Option<String>,
    linger_ms: Option<u64>,
    create_topics: Option<bool>,
    topic_partitions: Option<i32>,
    topic_replication_factor: Option<i16>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    shutdown_ack_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    path: String,
    topic: Option<String>,
    start_at: Option<StartAt>,
    #[serde(default, deserialize_with = "de_opt_size")]
    max_line_bytes: Option<u64>,
    long_lines: Option<LongLines>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    #[serde(default, deserialize_with = "de_opt_size")]
    max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_size")]
    segment_bytes: Option<u64>,
    fsync: Option<FsyncPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTailer {
    #[serde(default, deserialize_with = "de_opt_duration")]
    poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_size")]
    max_line_bytes: Option<u64>,
    long_lines: Option<LongLines>,
    start_at: Option<StartAt>,
    #[serde(default, deserialize_with = "de_opt_size")]
    read_buffer: Option<u64>,
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

// ---------------------------------------------------------------------------
// The typed, validated config.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The config file this was loaded from.
    pub file: PathBuf,
    pub data_dir: PathBuf,
    pub kafka: KafkaConfig,
    pub spool: SpoolConfig,
    pub poll_interval: Duration,
    pub read_buffer_bytes: usize,
    /// Every source by name, from `configpath` and `sources` together.
    pub sources: BTreeMap<String, SourceConfig>,
    pub admin: AdminConfig,
}

/// Where the admin endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for AdminListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminListen::Unix(p) => write!(f, "unix:{}", p.display()),
            AdminListen::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: AdminListen,
    /// Optional extra TCP listener serving only `/metrics`.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub compression: String,
    /// Which Kafka client the forwarder sends with.
    pub client: KafkaClient,
    pub linger_ms: u64,
    pub create_topics: bool,
    pub topic_partitions: i32,
    /// Replicas of a topic logcatch creates; -1 leaves it to the broker.
    pub topic_replication_factor: i16,
    pub shutdown_ack_timeout: Duration,
    /// Extra librdkafka settings, passed through as given.
    pub properties: BTreeMap<String, String>,
}

/// The forwarder's Kafka client. `Native` (the default) encodes record
/// batches itself and costs far less per line; `Librdkafka` is needed for
/// TLS, SASL, gzip/snappy/zstd and `kafka.properties`, and is chosen by
/// itself when those are configured and `client` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaClient {
    Native,
    Librdkafka,
}

impl std::fmt::Display for KafkaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KafkaClient::Native => "native",
            KafkaClient::Librdkafka => "librdkafka",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub name: String,
    pub path: PathBuf,
    pub topic: String,
    pub start_at: StartAt,
    pub max_line_bytes: usize,
    pub long_lines: LongLines,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Absolute, so that reloads and messages do not depend on the
        // working directory (the file itself may be a symlink: not resolved,
        // so a swapped link is followed on the next reload).
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| normalize(&d.join(path)))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        Config::parse(&path, &text)
    }

    /// Parses and validates config text that was read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            // Most likely caught mid-write (truncated, not yet rewritten):
            // an empty file would remove every source.
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: "the config file is empty".into(),
            });
        } else {
            let syntax = |e: serde_yaml::Error| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line,
                    column,
                    message: e.to_string(),
                }
            };
            // Parsing to a plain value first rejects duplicate keys, which a
            // typed map would silently overwrite.
            serde_yaml::from_str::<serde_yaml::Value>(text).map_err(|e| {
                let mut err = syntax(e);
                // serde_yaml places a duplicate at its map's start: point at
                // the second occurrence of the key instead.
                if let ConfigError::Syntax {
                    line,
                    column,
                    message,
                    ..
                } = &mut err
                {
                    if let Some(key) = message
                        .split("duplicate entry with key \"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                    {
                        let wanted = format!("{key}:");
                        if let Some((i, l)) = text
                            .lines()
                            .enumerate()
                            .filter(|(_, l)| l.trim_start().starts_with(&wanted))
                            .nth(1)
                        {
                            *line = i + 1;
                            *column = l.len() - l.trim_start().len() + 1;
                        }
                    }
                }
                err
            })?;
            serde_yaml::from_str(text).map_err(syntax)?
        };
        Validator { path, text }.validate(raw)
    }
}

/// The admin endpoint named by a config file, found even when the file
/// does not validate (so that `logcatch-ctl status` can still ask the daemon
/// why its last reload failed): only `data_dir` and `admin.listen` are read.
pub fn admin_endpoint_lenient(path: &Path) -> Option<AdminListen> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null);
    let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let listen = v
        .get("admin")
        .and_then(|a| a.get("listen"))
        .and_then(|x| x.as_str())
        .map(str::to_string);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let validator = Validator {
        path: &path,
        text: &text,
    };
    let data_dir = validator.resolve(get("data_dir").as_deref().unwrap_or(defaults::DATA_DIR));
    let raw = RawAdmin {
        listen,
        metrics_listen: None,
        allow_non_loopback: Some(true),
    };
    validator.admin(raw, &data_dir).ok().map(|a| a.listen)
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The 1-based line where `key` (its last dotted part) is first written,
    /// or 0 when it is not written (a default).
    fn line_of(&self, key: &str) -> usize {
        let last = key.rsplit('.').next().unwrap_or(key);
        let wanted = [
            format!("{last}:"),
            format!("\"{last}\":"),
            format!("'{last}':"),
        ];
        self.text
            .lines()
            .position(|l| {
                wanted
                    .iter()
                    .any(|w| l.trim_start().starts_with(w.as_str()))
            })
            .map(|i| i + 1)
            .unwrap_or(0)
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            return p;
        }
        let base = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        let base = match base {
            Some(b) => b.to_path_buf(),
            None => PathBuf::from("."),
        };
        let joined = base.join(p);
        let abs = if joined.is_absolute() {
            joined
        } else {
            std::env::current_dir()
                .map(|c| c.join(&joined))
                .unwrap_or(joined)
        };
        normalize(&abs)
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let RawConfig {
            data_dir,
            kafka,
            configpath,
            sources,
            spool,
            tailer,
            admin,
        } = raw;

        let data_dir = self.resolve(data_dir.as_deref().unwrap_or(defaults::DATA_DIR));

        let topic = kafka.topic.unwrap_or_else(|| defaults::TOPIC.to_string());
        check_topic(&topic).map_err(|m| self.invalid("kafka.topic", m))?;
        let brokers = kafka
            .brokers
            .unwrap_or_else(|| "127.0.0.1:9092".to_string());
        if brokers.trim().is_empty() {
            return Err(self.invalid("kafka.brokers", "must name at least one broker"));
        }
        let compression = kafka
            .compression
            .unwrap_or_else(|| defaults::COMPRESSION.to_string());
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&compression.as_str()) {
            return Err(self.invalid(
                "kafka.compression",
                format!("`{compression}` is not one of none, gzip, snappy, lz4, zstd"),
            ));
        }
        let mut properties = BTreeMap::new();
        for (k, v) in kafka.properties {
            let v = match v {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(self.invalid(
                        &format!("kafka.properties.{k}"),
                        "must be a string, number or boolean",
                    ))
                }
            };
            properties.insert(k, v);
        }
        // What only librdkafka can do decides the client unless it is set.
        let needs_librdkafka = if !properties.is_empty() {
            Some("kafka.properties is set")
        } else if !["none", "lz4"].contains(&compression.as_str()) {
            Some("kafka.compression needs librdkafka")
        } else {
            None
        };
        let client = match kafka.client.as_deref() {
            None => {
                if needs_librdkafka.is_some() {
                    KafkaClient::Librdkafka
                } else {
                    KafkaClient::Native
                }
            }
            Some("librdkafka") => KafkaClient::Librdkafka,
            Some("native") => {
                if let Some(why) = needs_librdkafka {
                    return Err(self.invalid(
                        "kafka.client",
                        format!("`native` cannot be used here: {why} (use `librdkafka`, or leave `client` unset)"),
                    ));
                }
                KafkaClient::Native
            }
            Some(other) => {
                return Err(self.invalid(
                    "kafka.client",
                    format!("`{other}` is not one of native, librdkafka"),
                ))
            }
        };
        let topic_partitions = kafka.topic_partitions.unwrap_or(defaults::TOPIC_PARTITIONS);
        if topic_partitions < 1 {
            return Err(self.invalid("kafka.topic_partitions", "must be at least 1"));
        }
        let topic_replication_factor = kafka
            .topic_replication_factor
            .unwrap_or(defaults::TOPIC_REPLICATION_FACTOR);
        if topic_replication_factor < 1 && topic_replication_factor != -1 {
            return Err(self.invalid(
                "kafka.topic_replication_factor",
                "must be at least 1, or -1 for the broker's default",
            ));
        }
        let kafka = KafkaConfig {
            brokers,
            topic: topic.clone(),
            compression,
            client,
            linger_ms: kafka.linger_ms.unwrap_or(defaults::LINGER_MS),
            create_topics: kafka.create_topics.unwrap_or(defaults::CREATE_TOPICS),
            topic_partitions,
            topic_replication_factor,
            shutdown_ack_timeout: kafka
                .shutdown_ack_timeout
                .unwrap_or(defaults::ACK_TIMEOUT_ON_SHUTDOWN),
            properties,
        };

        let max_bytes = spool.max_bytes.unwrap_or(defaults::SPOOL_MAX_BYTES);
        if max_bytes < 64 << 10 {
            return Err(self.invalid("spool.max_bytes", "must be at least 64KiB"));
        }
        let segment_bytes = spool
            .segment_bytes
            .unwrap_or(defaults::SEGMENT_BYTES.min(max_bytes / 4));
        if segment_bytes < 4 << 10 || segment_bytes > max_bytes {
            return Err(self.invalid(
                "spool.segment_bytes",
                "must be at least 4KiB and at most spool.max_bytes",
            ));
        }
        let spool = SpoolConfig {
            max_bytes,
            segment_bytes,
            fsync: spool.fsync.unwrap_or(defaults::FSYNC),
        };

        let poll_interval = tailer.poll_interval.unwrap_or(defaults::POLL_INTERVAL);
        if poll_interval < Duration::from_millis(1) || poll_interval > Duration::from_secs(60) {
            return Err(self.invalid("tailer.poll_interval", "must be between 1ms and 60s"));
        }
        let default_line_cap = tailer.max_line_bytes.unwrap_or(defaults::MAX_LINE_BYTES);
        let default_long = tailer.long_lines.unwrap_or(defaults::LONG_LINES);
        let default_start = tailer.start_at.unwrap_or(defaults::START_AT);
        let read_buffer = tailer.read_buffer.unwrap_or(defaults::READ_BUFFER_BYTES);
        if !(4 << 10..=64 << 20).contains(&read_buffer) {
            return Err(self.invalid("tailer.read_buffer", "must be between 4KiB and 64MiB"));
        }

        let admin = self.admin(admin, &data_dir)?;

        let mut out = BTreeMap::new();
        for (name, path) in configpath {
            check_name(&name).map_err(|m| self.invalid(&name, m))?;
            out.insert(
                name.clone(),
                SourceConfig {
                    name,
                    path: self.resolve(&path),
                    topic: topic.clone(),
                    start_at: default_start,
                    max_line_bytes: line_cap(default_line_cap)
                        .map_err(|m| self.invalid("tailer.max_line_bytes", m))?,
                    long_lines: default_long,
                },
            );
        }
        for (name, s) in sources {
            check_name(&name).map_err(|m| self.invalid(&name, m))?;
            if out.contains_key(&name) {
                return Err(self.invalid(
                    &name,
                    format!("source `{name}` is named in both `configpath` and `sources`"),
                ));
            }
            let src_topic = s.topic.unwrap_or_else(|| topic.clone());
            check_topic(&src_topic)
                .map_err(|m| self.invalid(&format!("sources.{name}.topic"), m))?;
            out.insert(
                name.clone(),
                SourceConfig {
                    path: self.resolve(&s.path),
                    topic: src_topic,
                    start_at: s.start_at.unwrap_or(default_start),
                    max_line_bytes: line_cap(s.max_line_bytes.unwrap_or(default_line_cap))
                        .map_err(|m| self.invalid("max_line_bytes", m))?,
                    long_lines: s.long_lines.unwrap_or(default_long),
                    name,
                },
            );
        }
        let mut seen: BTreeMap<&Path, &str> = BTreeMap::new();
        for s in out.values() {
            if let Some(other) = seen.insert(&s.path, &s.name) {
                return Err(self.invalid(
                    &s.name,
                    format!(
                        "sources `{other}` and `{}` both tail {}",
                        s.name,
                        s.path.display()
                    ),
                ));
            }
        }

        Ok(Config {
            file: self.path.to_path_buf(),
            data_dir,
            kafka,
            spool,
            poll_interval,
            read_buffer_bytes: read_buffer as usize,
            sources: out,
            admin,
        })
    }

    fn admin(&self, raw: RawAdmin, data_dir: &Path) -> Result<AdminConfig, ConfigError> {
        let allow = raw.allow_non_loopback.unwrap_or(false);
        let tcp = |key: &str, text: &str| -> Result<std::net::SocketAddr, ConfigError> {
            let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                self.invalid(
                    key,
                    format!("`{text}` is not an address like 127.0.0.1:9601"),
                )
            })?;
            if !addr.ip().is_loopback() && !allow {
                return Err(self.invalid(
                    key,
                    format!("`{text}` is not a loopback address; set admin.allow_non_loopback: true to expose the admin endpoint"),
                ));
            }
            Ok(addr)
        };
        let listen = match raw.listen.as_deref() {
            None => AdminListen::Unix(data_dir.join("admin.sock")),
            Some(t) if t.starts_with("unix:") => AdminListen::Unix(self.resolve(&t[5..])),
            Some(t) if t.starts_with('/') || t.starts_with('.') => {
                AdminListen::Unix(self.resolve(t))
            }
            Some(t) => AdminListen::Tcp(tcp("admin.listen", t)?),
        };
        let metrics_listen = match raw.metrics_listen.as_deref() {
            None => None,
            Some(t) => Some(tcp("admin.metrics_listen", t)?),
        };
        Ok(AdminConfig {
            listen,
            metrics_listen,
        })
    }
}

fn line_cap(n: u64) -> Result<usize, String> {
    if !(16..=256 << 20).contains(&n) {
        return Err("must be between 16 bytes and 256MiB".into());
    }
    Ok(n as usize)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err("a source name must be 1 to 200 characters".into());
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("a source name must not contain control characters".into());
    }
    Ok(())
}

fn check_topic(topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok && topic != "." && topic != ".." {
        Ok(())
    } else {
        Err(format!(
            "`{topic}` is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"
        ))
    }
}

/// Removes `.` and `..` components without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/logcatch/config.yaml"), text)
    }

    #[test]
    fn original_configpath_form_resolves_against_config_dir() {
        let c = parse("configpath:\n  logdir1: \"../logdir1/log.txt\"\n").unwrap();
        let s = &c.sources["logdir1"];
        assert_eq!(s.path, PathBuf::from("/etc/logdir1/log.txt"));
        assert_eq!(s.topic, "logs");
        assert_eq!(c.data_dir, PathBuf::from("/etc/logcatch/data"));
    }

    #[test]
    fn full_form_with_sizes_and_topic() {
        let c = parse(
            "kafka:\n  topic: base\nspool:\n  max_bytes: 1GiB\nsources:\n  app:\n    path: /var/log/app.log\n    topic: app-logs\n    start_at: end\n    max_line_bytes: 64KiB\n",
        )
        .unwrap();
        assert_eq!(c.spool.max_bytes, 1 << 30);
        let s = &c.sources["app"];
        assert_eq!(s.topic, "app-logs");
        assert_eq!(s.start_at, StartAt::End);
        assert_eq!(s.max_line_bytes, 64 << 10);
    }

    #[test]
    fn kafka_client_defaults_to_native_unless_librdkafka_is_needed() {
        let c = parse("configpath:\n  a: /x\n").unwrap();
        assert_eq!(c.kafka.client, KafkaClient::Native);
        let c = parse("kafka:\n  compression: none\n").unwrap();
        assert_eq!(c.kafka.client, KafkaClient::Native);
        let c = parse("kafka:\n  properties:\n    security.protocol: ssl\n").unwrap();
        assert_eq!(
            c.kafka.client,
            KafkaClient::Librdkafka,
            "properties are librdkafka's"
        );
        let c = parse("kafka:\n  compression: zstd\n").unwrap();
        assert_eq!(
            c.kafka.client,
            KafkaClient::Librdkafka,
            "zstd is librdkafka's"
        );
        let c = parse("kafka:\n  client: librdkafka\n").unwrap();
        assert_eq!(c.kafka.client, KafkaClient::Librdkafka);
    }

    #[test]
    fn topic_replication_factor_defaults_to_the_brokers() {
        let c = parse("configpath:\n  a: /x\n").unwrap();
        assert_eq!(c.kafka.topic_replication_factor, -1);
        let c = parse("kafka:\n  topic_replication_factor: 3\n").unwrap();
        assert_eq!(c.kafka.topic_replication_factor, 3);
        let e = parse("kafka:\n  topic_replication_factor: 0\n").unwrap_err();
        assert!(
            e.to_string().contains("kafka.topic_replication_factor"),
            "{e}"
        );
    }

    #[test]
    fn native_client_with_librdkafka_settings_is_rejected_with_line() {
        let e = parse("kafka:\n  compression: gzip\n  client: native\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("config.yaml:3"), "{msg}");
        assert!(msg.contains("kafka.client"), "{msg}");
        assert!(msg.contains("librdkafka"), "{msg}");
        let e = parse("kafka:\n  client: rust\n").unwrap_err();
        assert!(e.to_string().contains("`rust` is not one of"), "{e}");
    }

    #[test]
    fn unknown_key_names_line() {
        let e = parse("data_dir: /d\nkafka:\n  brokerz: x\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("config.yaml:3"), "{msg}");
        assert!(msg.contains("brokerz"), "{msg}");
    }

    #[test]
    fn bad_size_is_rejected_with_line() {
        let e = parse("spool:\n  max_bytes: lots\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(":2:"), "{msg}");
        assert!(msg.contains("lots"), "{msg}");
    }

    #[test]
    fn name_in_both_maps_is_rejected() {
        let e = parse("configpath:\n  a: /x\nsources:\n  a:\n    path: /y\n").unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
    }

    #[test]
    fn two_sources_on_one_path_are_rejected() {
        let e = parse("configpath:\n  a: /x\n  b: /x\n").unwrap_err();
        assert!(e.to_string().contains("both tail"), "{e}");
    }

    #[test]
    fn duplicate_key_is_rejected_at_its_line() {
        let e = parse("configpath:\n  a: /x\n  a: /y\n").unwrap_err();
        assert!(e.to_string().contains("config.yaml:3:3"), "{e}");
        assert!(e.to_string().contains("\"a\""), "{e}");
    }

    #[test]
    fn bad_topic_is_rejected() {
        let e = parse("kafka:\n  topic: \"no spaces\"\n").unwrap_err();
        assert!(e.to_string().contains("kafka.topic"), "{e}");
        assert!(e.to_string().contains(":2:"), "{e}");
    }

    #[test]
    fn properties_pass_through_as_strings() {
        let c = parse("kafka:\n  properties:\n    batch.num.messages: 5000\n    enable.ssl.certificate.verification: false\n").unwrap();
        assert_eq!(c.kafka.properties["batch.num.messages"], "5000");
        assert_eq!(
            c.kafka.properties["enable.ssl.certificate.verification"],
            "false"
        );
    }

    #[test]
    fn admin_defaults_to_a_socket_and_refuses_open_addresses() {
        let c = parse("data_dir: /d\n").unwrap();
        assert_eq!(
            c.admin.listen,
            AdminListen::Unix(PathBuf::from("/d/admin.sock"))
        );
        let c = parse("admin:\n  listen: 127.0.0.1:9601\n").unwrap();
        assert!(matches!(c.admin.listen, AdminListen::Tcp(_)));
        let e = parse("admin:\n  listen: 0.0.0.0:9601\n").unwrap_err();
        assert!(e.to_string().contains("allow_non_loopback"), "{e}");
        assert!(parse("admin:\n  listen: 0.0.0.0:9601\n  allow_non_loopback: true\n").is_ok());
    }

    #[test]
    fn an_empty_file_is_rejected() {
        let e = parse("  \n").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("64 KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("x").is_err());
    }
}
