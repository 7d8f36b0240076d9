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
//! Why a record is deleted only here, and only so (always after its
//! tailer stopped and handed over what it read):
//! - a glob source removed from the config, or whose patterns no longer
//!   match a file's path (changed by a reload, or while logcatch was
//!   stopped);
//! - a file gone: its path missing, and none of its files (the one it read,
//!   rotated ones, finished ones) found under another name, for
//!   `forget_after` without a break, while its tailer holds nothing open
//!   (waiting for the file, nothing draining: a deleted file it still reads
//!   is read to its end first). So the store stays bounded on a host that
//!   creates and deletes files all day, and no file is forgotten while any
//!   part of it can still be read.
//!
//! Must never: start two tailers for one key, delete the record of a
//! running tailer, or start again in a pass a file it forgot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Supervisor;
use crate::config::{file_key, split_key, SourceConfig, StartAt, KEY_SEP};
use crate::daemon::{blocking, DaemonError};
use crate::runtime::lock;
use crate::source::discover::{discover, Claimed};
use crate::source::tailer::TailState;
use crate::spool::WriterMsg;
use crate::store::{SourceRecord, Store};

/// One pass's findings for a glob source.
#[derive(Default)]
struct Pass {
    /// Files to tail: found by the walk (and not another file's), or with
    /// a record the patterns match.
    run: BTreeSet<PathBuf>,
    /// Recorded files gone: path missing, none of their files found under
    /// another name, nothing being drained.
    gone: Vec<PathBuf>,
    /// Records the patterns no longer match.
    stale: Vec<PathBuf>,
}

/// The glob sources' state between passes.
#[derive(Default)]
pub(super) struct GlobState {
    /// Since when each gone file (its key) has been seen gone, pass after
    /// pass.
    missing_since: BTreeMap<String, Instant>,
    /// Glob sources past their first pass: a file they find later is new,
    /// and is read from its start whatever `start_at` says (its first lines
    /// were written after the source began to watch).
    passed: BTreeSet<String>,
}

impl GlobState {
    /// A glob source was added, changed or removed: its next pass is a
    /// first one again.
    pub(super) fn reset(&mut self, name: &str) {
        self.passed.remove(name);
        self.missing_since.retain(|k, _| split_key(k).0 != name);
    }
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

    /// A discovery pass over every glob source: forgets what is stale or
    /// long gone, starts the files that should run and are not running, and
    /// stops the ones that should not (a file deleted before anything of it
    /// was committed).
    pub(in crate::daemon) async fn rediscover(&mut self) -> Result<(), DaemonError> {
        for source in self.globs() {
            let (store, s) = (self.store.clone(), source.clone());
            let pass = blocking(move || pass(&store, &s)).await?;
            let name = source.name.clone();
            let mut forget: Vec<String> = pass.stale.iter().map(|p| file_key(&name, p)).collect();
            forget.extend(self.expired(&source, &pass.gone));
            for key in &forget {
                self.stop(key).await;
            }
            // A path back since the pass: not forgotten (it runs again).
            let back: Vec<String> = {
                let keys = forget.clone();
                blocking(move || {
                    keys.into_iter()
                        .filter(|k| split_key(k).1.is_some_and(|p| Path::new(p).exists()))
                        .collect()
                })
                .await?
            };
            forget.retain(|k| {
                !back.contains(k) || pass.stale.iter().any(|p| file_key(&name, p) == *k)
            });
            self.forget_many(&name, &forget).await;
            let first = self.globs_state.passed.insert(name.clone());
            let mut wanted = BTreeSet::new();
            for path in &pass.run {
                let mut file = source.for_file(path);
                if forget.contains(&file.name) {
                    continue;
                }
                wanted.insert(file.name.clone());
                if self.tailers.contains_key(&file.name) {
                    continue;
                }
                if !first {
                    file.start_at = StartAt::Beginning;
                }
                tracing::info!(source = %name, path = %path.display(), "a file of the glob source: tailing it");
                self.start(&file);
            }
            for key in self.files_of(&name) {
                if !wanted.contains(&key) {
                    self.stop(&key).await;
                }
            }
        }
        Ok(())
    }

    /// The gone files (`gone`, of glob source `source`) whose time is up:
    /// gone for `forget_after` without a break, and their tailer (if any)
    /// holding nothing open. Keeps the clocks of the others.
    fn expired(&mut self, source: &SourceConfig, gone: &[PathBuf]) -> Vec<String> {
        let Some(spec) = source.glob.as_ref() else {
            return Vec::new();
        };
        let now = Instant::now();
        let gone: BTreeSet<String> = gone.iter().map(|p| file_key(&source.name, p)).collect();
        let state = &mut self.globs_state;
        state
            .missing_since
            .retain(|k, _| split_key(k).0 != source.name || gone.contains(k));
        let live = lock(&self.live.tailers);
        let mut out = Vec::new();
        for key in gone {
            let since = *state.missing_since.entry(key.clone()).or_insert(now);
            let holds_nothing = live.get(&key).is_none_or(|st| {
                let st = lock(st);
                st.state == TailState::WaitingForFile && st.draining.is_empty()
            });
            if now.duration_since(since) >= spec.forget_after && holds_nothing {
                state.missing_since.remove(&key);
                out.push(key);
            }
        }
        out
    }

    /// Deletes the records of `keys` (files of glob source `name`, their
    /// tailers stopped) in one writer message.
    async fn forget_many(&self, name: &str, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .tx
            .send(WriterMsg::Forget(keys.to_vec(), tx))
            .await
            .is_ok();
        match (sent, rx.await) {
            (true, Ok(Ok(()))) => {
                tracing::info!(source = name, files = keys.len(), first = %keys[0],
                "deleted the records of files of the glob source (gone for forget_after, or no longer matched)")
            }
            (_, Ok(Err(e))) => {
                tracing::error!(source = name, error = %e, "cannot delete records of the glob source's files")
            }
            _ => tracing::error!(
                source = name,
                "cannot delete records of the glob source's files: the spool writer is gone"
            ),
        }
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
        let prefix = format!("{name}{KEY_SEP}");
        // Either failure only logged: the records stay, and a later reload
        // or pass deals with them.
        let listed = blocking(move || store.sources_with_prefix(&prefix)).await;
        let records = match listed.map(|r| r.map_err(|e| e.to_string())) {
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
        let keys: Vec<String> = records
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| split_key(k).1.is_some_and(|p| !keep(Path::new(p))))
            .collect();
        self.forget_many(name, &keys).await;
    }
}

/// One glob source's pass (blocking: a walk and a scan of its records).
fn pass(store: &Store, source: &SourceConfig) -> Pass {
    let Some(spec) = source.glob.as_ref() else {
        return Pass::default();
    };
    let prefix = format!("{}{KEY_SEP}", source.name);
    let records: Vec<(PathBuf, SourceRecord)> = match store.sources_with_prefix(&prefix) {
        Ok(all) => all
            .into_iter()
            .filter_map(|(key, rec)| split_key(&key).1.map(|p| (PathBuf::from(p), rec)))
            .collect(),
        Err(e) => {
            tracing::error!(source = %source.name, error = %e, "cannot list the glob source's records; its new files wait for the next pass");
            return Pass::default();
        }
    };
    let (records, stale): (Vec<_>, Vec<_>) =
        records.into_iter().partition(|(p, _)| spec.matches(p));
    let recorded: BTreeSet<&Path> = records.iter().map(|(p, _)| p.as_path()).collect();
    let claimed = Claimed::of(records.iter().map(|(p, r)| (p.as_path(), r)));
    let found = discover(spec, &|p| recorded.contains(p));
    let found_paths: BTreeSet<&Path> = found.iter().map(|f| f.path.as_path()).collect();
    let mut run: BTreeSet<PathBuf> = found
        .iter()
        .filter(|f| recorded.contains(f.path.as_path()) || !claimed.holds(f))
        .map(|f| f.path.clone())
        .collect();
    let mut gone = Vec::new();
    for (path, rec) in &records {
        run.insert(path.clone());
        let elsewhere = || {
            let mine = Claimed::of([(path.as_path(), rec)]);
            found.iter().any(|f| mine.holds(f))
        };
        if !found_paths.contains(path.as_path())
            && rec.draining.is_empty()
            && !path.exists()
            && !elsewhere()
        {
            gone.push(path.clone());
        }
    }
    Pass {
        run,
        gone,
        stale: stale.into_iter().map(|(p, _)| p).collect(),
    }
}
