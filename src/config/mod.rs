//! config: owns the YAML configuration file format and its validation.
//!
//! The file is parsed into [`raw::RawConfig`] (serde, `deny_unknown_fields`,
//! every default in [`raw::defaults`]) and then validated once, at load, by
//! [`validate::Validator`] into the typed [`Config`] that the rest of the
//! daemon trusts without re-checking.
//!
//! Invariants: every path in a `Config` is absolute (relative paths are
//! resolved against the config file's directory); source names are unique
//! across `configpath` and `sources`; every size and duration is in range.
//!
//! Must never: touch the filesystem beyond reading the config file itself
//! and the files it names as TLS certificates or secrets ([`security`]),
//! or start anything. Loading is pure, so a bad edit can be rejected while
//! the daemon keeps running on the last good `Config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

mod glob;
mod raw;
mod security;
mod validate;

pub use glob::{file_key, is_pattern, kafka_key, split_key, BadPattern, GlobSpec, KEY_SEP};
pub use raw::parse_size;
use raw::{defaults, RawAdmin, RawConfig};
pub use security::{
    security_protocol, ClientCertificate, SaslConfig, SaslCredentials, SaslMechanism, Secret,
    TlsConfig,
};
use validate::Validator;

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
    /// Replicas of a topic logcatch creates; -1: min(3, brokers) (see
    /// [`crate::kafka::client::replicas`]).
    pub topic_replication_factor: i16,
    pub shutdown_ack_timeout: Duration,
    /// How long a request may wait for its answer (a setup request past it
    /// ends the session, and the next one starts at another bootstrap
    /// broker); librdkafka's `request.timeout.ms`.
    pub request_timeout: Duration,
    /// How long connecting to a broker may take; librdkafka's
    /// `socket.connection.setup.timeout.ms`.
    pub connect_timeout: Duration,
    /// How long the native client sends a partition's batches again, in one
    /// session and with the same sequence numbers, while Kafka answers with
    /// errors a retry can clear (leader change, too few in-sync replicas, a
    /// lost connection); past it the session ends and the next one starts
    /// over. The Java client's `delivery.timeout.ms`. (librdkafka retries
    /// without a limit: its `message.timeout.ms` is 0.)
    pub delivery_timeout: Duration,
    /// `kafka.tls`: TLS to the brokers (both clients).
    pub tls: Option<TlsConfig>,
    /// `kafka.sasl`: SASL authentication (both clients; OAUTHBEARER with
    /// librdkafka only).
    pub sasl: Option<SaslConfig>,
    /// Extra librdkafka settings, passed through as given.
    pub properties: BTreeMap<String, String>,
}

/// The forwarder's Kafka client. `Native` (the default) encodes record
/// batches itself and costs far less per line, and does `kafka.tls` and
/// `kafka.sasl` PLAIN and SCRAM; `Librdkafka` is needed for SASL
/// OAUTHBEARER, gzip/snappy/zstd and `kafka.properties`, and is chosen by
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
    /// How long a rotated file is still read after its end (late writes
    /// through a descriptor opened before the rotation) before the tailer
    /// finishes it: [`crate::source::tailer`].
    pub rotate_wait: Duration,
    /// A glob source's patterns and options (`path` held glob characters
    /// or was a list); `path` is then its first pattern. `None` for a
    /// one-path source, and for each file a glob source tails
    /// ([`SourceConfig::for_file`]).
    pub glob: Option<GlobSpec>,
    /// For a file of a glob source ([`SourceConfig::for_file`]): the glob
    /// that found it. Files beside it that the glob matches are that
    /// glob's to tail, not this file's tailer's.
    pub matched_by: Option<GlobSpec>,
}

impl SourceConfig {
    /// The one-path source that tails `path`, a file of this glob source:
    /// named by its [`file_key`], with every other setting of this source.
    pub fn for_file(&self, path: &Path) -> SourceConfig {
        SourceConfig {
            name: file_key(&self.name, path),
            path: path.to_path_buf(),
            glob: None,
            matched_by: self.glob.clone(),
            ..self.clone()
        }
    }
}

impl Config {
    /// The source `key` names: a one-path source by its name, or a file a
    /// glob source matches by its [`file_key`] (as [`SourceConfig::for_file`]
    /// makes it). `None` if the config does not tail it.
    pub fn source_for(&self, key: &str) -> Option<SourceConfig> {
        match split_key(key) {
            (name, None) => self.sources.get(name).filter(|s| s.glob.is_none()).cloned(),
            (name, Some(path)) => {
                let s = self.sources.get(name)?;
                let path = Path::new(path);
                s.glob
                    .as_ref()
                    .is_some_and(|g| g.matches(path))
                    .then(|| s.for_file(path))
            }
        }
    }

    /// Does the config tail `key` ([`Config::source_for`])?
    pub fn has_key(&self, key: &str) -> bool {
        self.source_for(key).is_some()
    }

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
        if text.trim().is_empty() {
            // Most likely caught mid-write (truncated, not yet rewritten):
            // an empty file would remove every source.
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: "the config file is empty".into(),
            });
        }
        // Parsing to a plain value first rejects duplicate keys, which a
        // typed map would silently overwrite.
        serde_yaml::from_str::<serde_yaml::Value>(text)
            .map_err(|e| point_at_duplicate(syntax_error(path, e), text))?;
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| syntax_error(path, e))?;
        Validator { path, text }.validate(raw)
    }
}

fn syntax_error(path: &Path, e: serde_yaml::Error) -> ConfigError {
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
}

/// serde_yaml places a duplicate key at its map's start: point at the
/// second occurrence of the key instead.
fn point_at_duplicate(mut err: ConfigError, text: &str) -> ConfigError {
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
    fn kafka_timeouts_default_parse_and_are_bounded() {
        let c = parse("configpath:\n  a: /x\n").unwrap();
        assert_eq!(c.kafka.request_timeout, Duration::from_secs(30));
        assert_eq!(c.kafka.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.kafka.delivery_timeout, Duration::from_secs(120));
        let c =
            parse("kafka:\n  request_timeout: 5s\n  connect_timeout: 2s\n  delivery_timeout: 1m\n")
                .unwrap();
        assert_eq!(c.kafka.request_timeout, Duration::from_secs(5));
        assert_eq!(c.kafka.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.kafka.delivery_timeout, Duration::from_secs(60));
        for bad in [
            "request_timeout: 0s",
            "connect_timeout: 1h",
            "delivery_timeout: 0s",
        ] {
            let e = parse(&format!("kafka:\n  {bad}\n")).unwrap_err();
            let key = bad.split(':').next().unwrap();
            assert!(e.to_string().contains(&format!("kafka.{key}")), "{e}");
        }
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
