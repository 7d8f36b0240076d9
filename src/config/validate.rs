//! Validation: the one pass that turns a [`RawConfig`] into the typed
//! [`Config`], resolving paths against the config file's directory and
//! naming the file, line and key of anything wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    defaults, RawAdmin, RawConfig, RawKafka, RawPaths, RawSource, RawSpool, RawTailer,
};
use super::security::{self, RawSasl, RawTls};
use super::{
    is_pattern, normalize, AdminConfig, AdminListen, BadPattern, Config, ConfigError, GlobSpec,
    KafkaClient, KafkaConfig, SaslConfig, SourceConfig, SpoolConfig, TlsConfig,
};

/// The `tailer:` section: global settings and the defaults of every source.
struct TailerDefaults {
    poll_interval: Duration,
    read_buffer: u64,
    line_cap: u64,
    long_lines: super::LongLines,
    start_at: super::StartAt,
    rotate_wait: Duration,
}

pub(super) struct Validator<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
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

    /// The 1-based line where `key` (its last dotted part; the whole
    /// librdkafka key after `kafka.properties.`) is first written, else
    /// the line of its parent key (`kafka.sasl` for a missing
    /// `kafka.sasl.username`), or 0 when none is written (a default).
    fn line_of(&self, key: &str) -> usize {
        let last = match key.strip_prefix("kafka.properties.") {
            Some(property) => property,
            None => key.rsplit('.').next().unwrap_or(key),
        };
        let wanted = [
            format!("{last}:"),
            format!("\"{last}\":"),
            format!("'{last}':"),
        ];
        let found = self
            .text
            .lines()
            .position(|l| {
                wanted
                    .iter()
                    .any(|w| l.trim_start().starts_with(w.as_str()))
            })
            .map(|i| i + 1);
        match found {
            Some(line) => line,
            None => match key.rsplit_once('.') {
                Some((parent, _)) if !key.starts_with("kafka.properties.") => self.line_of(parent),
                _ => 0,
            },
        }
    }

    pub(super) fn resolve(&self, p: &str) -> PathBuf {
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

    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let data_dir = self.resolve(raw.data_dir.as_deref().unwrap_or(defaults::DATA_DIR));
        let kafka = self.kafka(raw.kafka)?;
        let spool = self.spool(raw.spool)?;
        let tailer = self.tailer(raw.tailer)?;
        let admin = self.admin(raw.admin, &data_dir)?;
        let sources = self.sources(raw.configpath, raw.sources, &kafka.topic, &tailer)?;
        Ok(Config {
            file: self.path.to_path_buf(),
            data_dir,
            kafka,
            spool,
            poll_interval: tailer.poll_interval,
            read_buffer_bytes: tailer.read_buffer as usize,
            sources,
            admin,
        })
    }

    fn kafka(&self, kafka: RawKafka) -> Result<KafkaConfig, ConfigError> {
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
        let properties = self.properties(kafka.properties)?;
        let (tls, sasl) = self.security(kafka.tls, kafka.sasl, &properties)?;
        let oauth = sasl
            .as_ref()
            .is_some_and(|s| !s.mechanism.native_supports());
        let client = self.client(kafka.client.as_deref(), &properties, &compression, oauth)?;

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
                "must be at least 1, or -1 for min(3, brokers)",
            ));
        }
        let config = KafkaConfig {
            brokers,
            topic,
            compression,
            client,
            linger_ms: kafka.linger_ms.unwrap_or(defaults::LINGER_MS),
            create_topics: kafka.create_topics.unwrap_or(defaults::CREATE_TOPICS),
            topic_partitions,
            topic_replication_factor,
            shutdown_ack_timeout: kafka
                .shutdown_ack_timeout
                .unwrap_or(defaults::ACK_TIMEOUT_ON_SHUTDOWN),
            request_timeout: self.timeout(
                "kafka.request_timeout",
                kafka.request_timeout,
                defaults::REQUEST_TIMEOUT,
            )?,
            connect_timeout: self.timeout(
                "kafka.connect_timeout",
                kafka.connect_timeout,
                defaults::CONNECT_TIMEOUT,
            )?,
            delivery_timeout: self.timeout(
                "kafka.delivery_timeout",
                kafka.delivery_timeout,
                defaults::DELIVERY_TIMEOUT,
            )?,
            tls,
            sasl,
            properties,
        };
        self.librdkafka_takes(&config)?;
        Ok(config)
    }

    /// `kafka.tls` and `kafka.sasl` typed, once it is clear they do not
    /// clash with `properties`.
    fn security(
        &self,
        tls: Option<RawTls>,
        sasl: Option<RawSasl>,
        properties: &BTreeMap<String, String>,
    ) -> Result<(Option<TlsConfig>, Option<SaslConfig>), ConfigError> {
        let tls = match tls {
            None => None,
            Some(raw) => Some(
                security::tls(raw, |p| self.resolve(p))
                    .map_err(|p| self.invalid(p.key, p.message))?,
            ),
        };
        let sasl = match sasl {
            None => None,
            Some(raw) => Some(
                security::sasl(raw, |p| self.resolve(p))
                    .map_err(|p| self.invalid(p.key, p.message))?,
            ),
        };
        self.typed_or_properties(tls.is_some(), sasl.is_some(), properties)?;
        Ok((tls, sasl))
    }

    /// What this build of librdkafka takes, asked of librdkafka itself (a
    /// value it refuses, a SASL mechanism it lacks), so that it is refused
    /// here and not looped on by every session.
    fn librdkafka_takes(&self, config: &KafkaConfig) -> Result<(), ConfigError> {
        if config.client == KafkaClient::Librdkafka {
            crate::kafka::librdkafka::check_settings(config).map_err(|e| {
                let key = match e.property() {
                    Some(p) if config.properties.contains_key(p) => format!("kafka.properties.{p}"),
                    Some(p) if p.starts_with("sasl") => "kafka.sasl".to_string(),
                    Some(p) if p.starts_with("ssl") => "kafka.tls".to_string(),
                    _ => "kafka".to_string(),
                };
                self.invalid(&key, e.to_string())
            })?;
        }
        Ok(())
    }

    /// `kafka.tls` / `kafka.sasl` and the librdkafka properties they map to
    /// are one or the other: both would leave it unclear which one wins.
    fn typed_or_properties(
        &self,
        tls: bool,
        sasl: bool,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        if !tls && !sasl {
            return Ok(());
        }
        for key in properties.keys() {
            let clash = key == "security.protocol"
                || (tls && key.starts_with("ssl."))
                || (sasl
                    && (key == "sasl.mechanism"
                        || key == "sasl.mechanisms"
                        || key == "sasl.username"
                        || key == "sasl.password"));
            if clash {
                return Err(self.invalid(
                    &format!("kafka.properties.{key}"),
                    format!(
                        "`{key}` is set by kafka.{}: set it there, not in kafka.properties",
                        if key.starts_with("sasl") {
                            "sasl"
                        } else {
                            "tls"
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A Kafka timeout `key` (`default` when unset): 1 s to 10 min.
    fn timeout(
        &self,
        key: &str,
        value: Option<Duration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let t = value.unwrap_or(default);
        if t < Duration::from_secs(1) || t > Duration::from_secs(600) {
            return Err(self.invalid(key, "must be between 1s and 10m"));
        }
        Ok(t)
    }

    /// librdkafka properties as the strings librdkafka takes.
    fn properties(
        &self,
        raw: BTreeMap<String, serde_yaml::Value>,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut properties = BTreeMap::new();
        for (k, v) in raw {
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
        Ok(properties)
    }

    /// What only librdkafka can do decides the client unless it is set.
    fn client(
        &self,
        asked: Option<&str>,
        properties: &BTreeMap<String, String>,
        compression: &str,
        oauthbearer: bool,
    ) -> Result<KafkaClient, ConfigError> {
        let needs_librdkafka = if !properties.is_empty() {
            Some("kafka.properties is set")
        } else if oauthbearer {
            Some("kafka.sasl.mechanism OAUTHBEARER needs librdkafka")
        } else if !["none", "lz4"].contains(&compression) {
            Some("kafka.compression needs librdkafka")
        } else {
            None
        };
        match asked {
            None if needs_librdkafka.is_some() => Ok(KafkaClient::Librdkafka),
            None => Ok(KafkaClient::Native),
            Some("librdkafka") => Ok(KafkaClient::Librdkafka),
            Some("native") => match needs_librdkafka {
                Some(why) => Err(self.invalid(
                    "kafka.client",
                    format!("`native` cannot be used here: {why} (use `librdkafka`, or leave `client` unset)"),
                )),
                None => Ok(KafkaClient::Native),
            },
            Some(other) => Err(self.invalid(
                "kafka.client",
                format!("`{other}` is not one of native, librdkafka"),
            )),
        }
    }

    fn spool(&self, spool: RawSpool) -> Result<SpoolConfig, ConfigError> {
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
        Ok(SpoolConfig {
            max_bytes,
            segment_bytes,
            fsync: spool.fsync.unwrap_or(defaults::FSYNC),
        })
    }

    fn tailer(&self, tailer: RawTailer) -> Result<TailerDefaults, ConfigError> {
        let poll_interval = tailer.poll_interval.unwrap_or(defaults::POLL_INTERVAL);
        if poll_interval < Duration::from_millis(1) || poll_interval > Duration::from_secs(60) {
            return Err(self.invalid("tailer.poll_interval", "must be between 1ms and 60s"));
        }
        let read_buffer = tailer.read_buffer.unwrap_or(defaults::READ_BUFFER_BYTES);
        if !(4 << 10..=64 << 20).contains(&read_buffer) {
            return Err(self.invalid("tailer.read_buffer", "must be between 4KiB and 64MiB"));
        }
        let rotate_wait = tailer.rotate_wait.unwrap_or(defaults::ROTATE_WAIT);
        check_rotate_wait(rotate_wait).map_err(|m| self.invalid("tailer.rotate_wait", m))?;
        Ok(TailerDefaults {
            rotate_wait,
            poll_interval,
            read_buffer,
            line_cap: tailer.max_line_bytes.unwrap_or(defaults::MAX_LINE_BYTES),
            long_lines: tailer.long_lines.unwrap_or(defaults::LONG_LINES),
            start_at: tailer.start_at.unwrap_or(defaults::START_AT),
        })
    }

    /// Every source by name, from `configpath` and `sources` together.
    fn sources(
        &self,
        configpath: BTreeMap<String, String>,
        sources: BTreeMap<String, RawSource>,
        topic: &str,
        tailer: &TailerDefaults,
    ) -> Result<BTreeMap<String, SourceConfig>, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, path) in configpath {
            check_name(&name).map_err(|m| self.invalid(&name, m))?;
            // The original form: a path that names an existing file is
            // that file, as before glob sources, even if its name holds
            // glob characters (`app[1].log`).
            let (path, glob) = if is_pattern(&path) && self.resolve(&path).is_file() {
                (self.resolve(&path), None)
            } else {
                self.paths(&name, RawPaths::One(path), Vec::new(), None, None)?
            };
            out.insert(
                name.clone(),
                SourceConfig {
                    name,
                    path,
                    glob,
                    matched_by: None,
                    topic: topic.to_string(),
                    start_at: tailer.start_at,
                    max_line_bytes: line_cap(tailer.line_cap)
                        .map_err(|m| self.invalid("tailer.max_line_bytes", m))?,
                    long_lines: tailer.long_lines,
                    rotate_wait: tailer.rotate_wait,
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
            let src_topic = s.topic.unwrap_or_else(|| topic.to_string());
            check_topic(&src_topic)
                .map_err(|m| self.invalid(&format!("sources.{name}.topic"), m))?;
            let (path, glob) = self.paths(
                &name,
                s.path,
                s.exclude,
                s.ignore_older_than,
                s.forget_after,
            )?;
            out.insert(
                name.clone(),
                SourceConfig {
                    path,
                    glob,
                    matched_by: None,
                    topic: src_topic,
                    start_at: s.start_at.unwrap_or(tailer.start_at),
                    max_line_bytes: line_cap(s.max_line_bytes.unwrap_or(tailer.line_cap))
                        .map_err(|m| self.invalid("max_line_bytes", m))?,
                    long_lines: s.long_lines.unwrap_or(tailer.long_lines),
                    rotate_wait: match s.rotate_wait {
                        Some(w) => {
                            check_rotate_wait(w).map_err(|m| self.invalid("rotate_wait", m))?;
                            w
                        }
                        None => tailer.rotate_wait,
                    },
                    name,
                },
            );
        }
        let mut seen: BTreeMap<&Path, &str> = BTreeMap::new();
        for s in out.values().filter(|s| s.glob.is_none()) {
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
        Ok(out)
    }

    /// A source's `path` (and, for a glob source, its options): one path
    /// is a one-path source unless it holds glob characters; a list, or a
    /// pattern, makes a glob source. A bad pattern is named with the line
    /// it is written on.
    fn paths(
        &self,
        name: &str,
        paths: RawPaths,
        exclude: Vec<String>,
        ignore_older_than: Option<Duration>,
        forget_after: Option<Duration>,
    ) -> Result<(PathBuf, Option<GlobSpec>), ConfigError> {
        let key = format!("sources.{name}");
        let include = match paths {
            RawPaths::One(p) if !is_pattern(&p) => {
                if !exclude.is_empty() || ignore_older_than.is_some() || forget_after.is_some() {
                    return Err(self.invalid(
                        &key,
                        "`exclude`, `ignore_older_than` and `forget_after` need a glob `path` \
                         (with *, ?, [...], {a,b} or **, or a list)",
                    ));
                }
                return Ok((self.resolve(&p), None));
            }
            RawPaths::One(p) => vec![p],
            RawPaths::Many(list) if list.is_empty() => {
                return Err(self.invalid(&key, "`path` must name at least one file or pattern"))
            }
            RawPaths::Many(list) => list,
        };
        let absolute = |ps: &[String]| -> Vec<String> {
            ps.iter()
                .map(|p| self.resolve(p).to_string_lossy().into_owned())
                .collect()
        };
        let spec = GlobSpec::new(
            absolute(&include),
            absolute(&exclude),
            ignore_older_than,
            forget_after.unwrap_or(defaults::FORGET_AFTER),
        )
        .map_err(|BadPattern { pattern, message }| {
            // The line the pattern is written on (its text before
            // resolving is what the file holds).
            let written = include
                .iter()
                .chain(&exclude)
                .find(|p| pattern.ends_with(p.trim_start_matches("./")))
                .cloned()
                .unwrap_or(pattern.clone());
            let line = self.text.lines().position(|l| l.contains(&written));
            ConfigError::Invalid {
                path: self.path.to_path_buf(),
                line: line.map_or_else(|| self.line_of(&key), |l| l + 1),
                key: format!("{key}.path"),
                message: format!("bad glob pattern `{written}`: {message}"),
            }
        })?;
        let first = PathBuf::from(&spec.include[0]);
        Ok((first, Some(spec)))
    }

    pub(super) fn admin(&self, raw: RawAdmin, data_dir: &Path) -> Result<AdminConfig, ConfigError> {
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
    if name.contains(super::KEY_SEP) {
        // A glob source's files are keyed `NAME:/path`.
        return Err(format!(
            "a source name must not contain `{}`",
            super::KEY_SEP
        ));
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

/// `rotate_wait` bounds: at least 0 (finish a rotated file at its end at
/// once), at most an hour (a rotated file's descriptor is held meanwhile).
fn check_rotate_wait(wait: Duration) -> Result<(), &'static str> {
    if wait > Duration::from_secs(3600) {
        return Err("must be at most 1h (the rotated file stays open that long)");
    }
    Ok(())
}
