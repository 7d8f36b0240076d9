//! The supervisor's glob sources: each file a glob source matches gets a
//! tailer of its own, under its [`file_key`] (`NAME:/path`), started by a
//! discovery pass ([`Supervisor::rediscover`]) at start, every
//! `poll_interval`, and after a reload.
//!
//! Which files run: every file the pass finds that no file of the source
//! already reads ([`Claimed`]: a rotated name the glob also matches), and
//! every file with a record whose path still matches (its tailer resumes
//! what the record holds: a rotated file being drained, a rest to read;
//! the path itself may be gone for now).
//!
//! Why a record is deleted only here, and only so:
//! - a glob source removed from the config: its files are stopped first
//!   (each hands over what it read), then their records go;
//! - a glob source whose patterns changed: its files are stopped; records
//!   whose path no longer matches go, the others resume;
//! - a file gone from its path, with nothing left to drain, not written
//!   for `forget_after`: its tailer is stopped first, then its record goes
//!   (the store stays bounded on a host that creates and deletes files all
//!   day).
//!
//! Must never: start two tailers for one key, or delete the record of a
//! running tailer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Supervisor;
use crate::config::{split_key, GlobSpec, SourceConfig};
use crate::daemon::{blocking, DaemonError};
use crate::runtime::now_ms;
use crate::source::discover::{discover, Claimed};
use crate::store::{SourceRecord, Store};

/// One pass's verdict for a glob source.
struct Pass {
    /// Files to tail (their paths), each under its file key.
    run: BTreeSet<PathBuf>,
    /// Keys whose file is gone and long idle: stop, then delete the record.
    forget: Vec<String>,
}

impl Supervisor {
    /// The glob sources of the running config.
    fn globs(&self) -> Vec<SourceConfig> {
        self.config
            .sources
            .values()
            .filter(|s| s.glob.is_some())
            .cloned()
            .collect()
    }

    /// The running tailers of glob source `name`'s files.
    fn files_of(&self, name: &str) -> Vec<String> {
        self.tailers
            .keys()
            .filter(|k| matches!(split_key(k), (n, Some(_)) if n == name))
            .cloned()
            .collect()
    }

    /// How often glob sources are walked: every `poll_interval` (at the
    /// start's value; a reload's new one applies at the next start).
    pub(in crate::daemon) fn discovery_every(&self) -> Duration {
        crate::source::discover::pass_every(self.config.poll_interval)
    }

    /// A discovery pass over every glob source: starts the files that
    /// should run and are not running, and forgets the ones long gone.
    pub(in crate::daemon) async fn rediscover(&mut self) -> Result<(), DaemonError> {
        for source in self.globs() {
            let (store, s) = (self.store.clone(), source.clone());
            let pass = blocking(move || pass(&store, &s)).await?;
            for key in pass.forget {
                self.stop(&key).await;
                tracing::info!(source = %source.name, key = %key,
                    "a file of the glob source is gone and was not written for forget_after: deleting its record");
                self.forget(&key).await;
            }
            for path in pass.run {
                let file = source.for_file(&path);
                if !self.tailers.contains_key(&file.name) {
                    tracing::info!(source = %source.name, path = %path.display(), "a file of the glob source: tailing it");
                    self.start(&file);
                }
            }
        }
        Ok(())
    }

    /// Stops every file of glob source `name`; each hands over what it
    /// read first.
    pub(super) async fn stop_files(&mut self, name: &str) {
        for key in self.files_of(name) {
            self.stop(&key).await;
        }
    }

    /// Deletes the records of glob source `name`'s files whose path `keep`
    /// refuses. Their tailers must be stopped.
    pub(super) async fn forget_files(&mut self, name: &str, keep: impl Fn(&Path) -> bool) {
        let store = self.store.clone();
        let records = match blocking(move || store.sources()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(source = name, error = %e, "cannot list the glob source's records");
                return;
            }
            Err(e) => {
                tracing::error!(source = name, error = %e, "cannot list the glob source's records");
                return;
            }
        };
        for (key, _) in records {
            if let (n, Some(path)) = split_key(&key) {
                if n == name && !keep(Path::new(path)) {
                    self.forget(&key).await;
                }
            }
        }
    }
}

/// One glob source's pass (blocking: a walk and a store scan).
fn pass(store: &Store, source: &SourceConfig) -> Pass {
    let Some(spec) = source.glob.as_ref() else {
        return Pass {
            run: BTreeSet::new(),
            forget: Vec::new(),
        };
    };
    let records: Vec<(PathBuf, SourceRecord)> = match store.sources() {
        Ok(all) => all
            .into_iter()
            .filter_map(|(key, rec)| match split_key(&key) {
                (n, Some(path)) if n == source.name => Some((PathBuf::from(path), rec)),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::error!(source = %source.name, error = %e, "cannot list the glob source's records; its new files wait for the next pass");
            return Pass {
                run: BTreeSet::new(),
                forget: Vec::new(),
            };
        }
    };
    let recorded: BTreeSet<&Path> = records.iter().map(|(p, _)| p.as_path()).collect();
    let claimed = Claimed::of(records.iter().map(|(_, r)| r));
    let found = discover(spec, &|p| recorded.contains(p));
    let mut run: BTreeSet<PathBuf> = found
        .into_iter()
        .filter(|f| recorded.contains(f.path.as_path()) || !claimed.holds(f))
        .map(|f| f.path)
        .collect();
    let mut forget = Vec::new();
    for (path, rec) in &records {
        if !spec.matches(path) {
            continue;
        }
        if gone_long_enough(path, rec, spec) {
            forget.push(crate::config::file_key(&source.name, path));
        } else {
            run.insert(path.clone());
        }
    }
    Pass { run, forget }
}

/// A file's record may go: nothing at its path, nothing left to drain,
/// and nothing read for `forget_after`.
fn gone_long_enough(path: &Path, rec: &SourceRecord, spec: &GlobSpec) -> bool {
    let idle = Duration::from_millis(now_ms().saturating_sub(rec.updated_ms));
    rec.draining.is_empty() && idle >= spec.forget_after && !path.exists()
}
