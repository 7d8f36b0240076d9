//! reload: owns noticing that the config file changed and deciding what a
//! new config means for the running sources (the diff). Applying the diff
//! is the supervisor's job ([`crate::daemon`]).
//!
//! Triggers: `notify` events in the config file's directory (and in its
//! symlink target's directory, for Kubernetes-style `..data` swaps), a poll
//! of the file's content every [`POLL_EVERY`] as a safety net, and SIGHUP.
//! Bursts are debounced into one reload.
//!
//! Invariants: a reload is attempted only when the file's bytes differ from
//! the last attempt (or on SIGHUP), so one bad edit is logged once. The new
//! file is parsed and validated completely before anything is touched.
//!
//! Must never: apply a config that failed validation, or stop the daemon
//! because of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{Config, SourceConfig};

/// Quiet time that ends a burst of file events.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// A burst never delays a reload longer than this.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// Two reads of the file this far apart must agree before it is applied.
pub const SETTLE: Duration = Duration::from_millis(100);
/// How often the file's content is compared even without events.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot watch config directory {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file may have changed; reload if its bytes did.
    FileEvent,
    /// SIGHUP or `logcatch-ctl reload`: reload even if the bytes are the same.
    Forced,
}

/// Keeps the notify watcher alive; dropping it stops the events.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Watches the directories that can change what `config_path` reads as,
/// sending `Trigger::FileEvent` (coalesced: the channel is small and a full
/// channel already means "reload pending").
pub fn watch(config_path: &Path, tx: mpsc::Sender<Trigger>) -> Result<ConfigWatch, ReloadError> {
    // Only events that can change what the config path reads as: the file
    // itself (by name, in either watched directory), and Kubernetes-style
    // `..data` links. Logs written beside the config do not count.
    let mut names: Vec<std::ffi::OsString> = config_path
        .file_name()
        .map(|n| n.to_os_string())
        .into_iter()
        .collect();
    if let Some(n) = std::fs::canonicalize(config_path)
        .ok()
        .and_then(|r| r.file_name().map(|n| n.to_os_string()))
    {
        names.push(n);
    }
    let relevant = move |p: &Path| match p.file_name() {
        Some(f) => names.iter().any(|n| n == f) || f.to_string_lossy().starts_with(".."),
        None => false,
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_))
                && ev.paths.iter().any(|p| relevant(p))
            {
                let _ = tx.try_send(Trigger::FileEvent);
            }
        }
    })
    .map_err(|source| ReloadError::Watch {
        path: config_path.to_path_buf(),
        source,
    })?;
    let mut dirs = Vec::new();
    if let Some(d) = parent(config_path) {
        dirs.push(d);
    }
    if let Ok(real) = std::fs::canonicalize(config_path) {
        if let Some(d) = parent(&real) {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    for d in dirs {
        watcher
            .watch(&d, RecursiveMode::NonRecursive)
            .map_err(|source| ReloadError::Watch { path: d, source })?;
    }
    Ok(ConfigWatch { _watcher: watcher })
}

fn parent(p: &Path) -> Option<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(p)
    };
    abs.parent().map(Path::to_path_buf)
}

/// Waits out a burst: returns once no trigger arrived for `DEBOUNCE`, or
/// `DEBOUNCE_MAX` after the first. Returns whether any trigger was forced.
pub async fn debounce(rx: &mut mpsc::Receiver<Trigger>, first: Trigger) -> bool {
    let mut forced = first == Trigger::Forced;
    let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = tokio::time::sleep(DEBOUNCE);
        tokio::select! {
            t = rx.recv() => match t {
                Some(t) => forced |= t == Trigger::Forced,
                None => return forced,
            },
            _ = quiet => return forced,
            _ = tokio::time::sleep_until(until) => return forced,
        }
    }
}

/// How the sources of two configs differ, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SourceDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The path changed: the old record is dropped and the new path is a
    /// new file.
    pub moved: Vec<String>,
    /// Other settings changed: restart from the stored offset.
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    pub kafka_changed: bool,
    /// Settings that only take effect at the next start.
    pub needs_restart: Vec<String>,
}

impl SourceDiff {
    pub fn summary(&self) -> String {
        format!(
            "added {}, removed {}, changed {} (path {}, settings {}), unchanged {}{}{}",
            self.added.len(),
            self.removed.len(),
            self.moved.len() + self.changed.len(),
            self.moved.len(),
            self.changed.len(),
            self.unchanged.len(),
            if self.kafka_changed {
                ", kafka settings changed"
            } else {
                ""
            },
            if self.needs_restart.is_empty() {
                String::new()
            } else {
                format!(
                    "; needs a restart to take effect: {}",
                    self.needs_restart.join(", ")
                )
            }
        )
    }
}

/// What a running tailer depends on: its source plus the global tailer
/// settings.
fn tailer_settings(c: &Config) -> BTreeMap<&str, (&SourceConfig, Duration, usize)> {
    c.sources
        .iter()
        .map(|(n, s)| (n.as_str(), (s, c.poll_interval, c.read_buffer_bytes)))
        .collect()
}

pub fn diff(old: &Config, new: &Config) -> SourceDiff {
    let mut d = SourceDiff::default();
    let (o, n) = (tailer_settings(old), tailer_settings(new));
    for (name, new_s) in &n {
        match o.get(name) {
            None => d.added.push(name.to_string()),
            Some(old_s) if old_s.0.path != new_s.0.path => d.moved.push(name.to_string()),
            Some(old_s) if old_s != new_s => d.changed.push(name.to_string()),
            Some(_) => d.unchanged.push(name.to_string()),
        }
    }
    for name in o.keys() {
        if !n.contains_key(name) {
            d.removed.push(name.to_string());
        }
    }
    d.kafka_changed = old.kafka != new.kafka;
    if old.data_dir != new.data_dir {
        d.needs_restart.push("data_dir".into());
    }
    if old.spool != new.spool {
        d.needs_restart.push("spool".into());
    }
    if old.admin != new.admin {
        d.needs_restart.push("admin".into());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(Path::new("/etc/lc/config.yaml"), text).unwrap()
    }

    #[test]
    fn diff_by_name() {
        let old = cfg("configpath:\n  a: /a\n  b: /b\n  c: /c\n  d: /d\n");
        let new = cfg("configpath:\n  a: /a\n  c: /c2\n  e: /e\nsources:\n  d:\n    path: /d\n    topic: other\n");
        let d = diff(&old, &new);
        assert_eq!(d.added, vec!["e"]);
        assert_eq!(d.removed, vec!["b"]);
        assert_eq!(d.moved, vec!["c"]);
        assert_eq!(d.changed, vec!["d"]);
        assert_eq!(d.unchanged, vec!["a"]);
        assert!(!d.kafka_changed);
        assert!(d.summary().starts_with("added 1, removed 1, changed 2"));
    }

    #[test]
    fn global_tailer_settings_restart_everything_and_kafka_is_noticed() {
        let old = cfg("configpath:\n  a: /a\n");
        let new = cfg("configpath:\n  a: /a\ntailer:\n  poll_interval: 5s\nkafka:\n  brokers: other:9092\nspool:\n  max_bytes: 2GiB\n");
        let d = diff(&old, &new);
        assert_eq!(d.changed, vec!["a"]);
        assert!(d.kafka_changed);
        assert_eq!(d.needs_restart, vec!["spool"]);
    }
}
