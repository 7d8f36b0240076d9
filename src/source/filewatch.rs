//! filewatch: owns waking idle tailers. A tailer that reached the end of
//! its file registers what it last saw (device, inode, size at the path)
//! and waits; this wakes it when that changes, from two sources:
//! - inotify (through `notify`) on the sources' directories: a write, a
//!   rename, a create wakes the tailer of that path at once (low latency);
//! - one thread that `stat`s every idle path each `poll_interval`: the
//!   safety net for filesystems without events (NFS), and for a file that
//!   appears where the directory did not exist yet.
//!
//! So an idle source costs one `stat` per poll interval on a shared thread,
//! not a task wake-up and a blocking-pool hop.
//!
//! Must never: lose a wake-up (a `Notify` keeps one permit, so a change
//! between registering and waiting still wakes), do a tailer's reading, or
//! call into `notify` while holding the registry's lock (its event thread
//! takes that lock).

use crate::runtime::lock;
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

/// What a tailer last saw at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

struct Idle {
    seen: Option<Seen>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Registry {
    /// By path (one source per path, checked at config load).
    idle: HashMap<PathBuf, Idle>,
    watched_dirs: BTreeSet<PathBuf>,
}

/// Shared by every tailer. Cheap to clone.
#[derive(Clone)]
pub struct FileWatch {
    registry: Arc<Mutex<Registry>>,
    watcher: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    poll_ms: Arc<std::sync::atomic::AtomicU64>,
}

fn changed(path: &Path, seen: Option<Seen>) -> bool {
    let now = std::fs::metadata(path).ok().map(|m| Seen {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
    });
    now != seen
}

impl FileWatch {
    /// Starts the poll thread and the inotify watcher (if the system has
    /// one; without it, polling alone still works).
    pub fn start(poll: Duration) -> FileWatch {
        let registry: Arc<Mutex<Registry>> = Arc::default();
        let reg = registry.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            let r = lock(&reg);
            for p in &ev.paths {
                if let Some(idle) = r.idle.get(p) {
                    idle.wake.notify_one();
                }
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "no file events available; idle files are polled only");
                None
            }
        };
        let fw = FileWatch {
            registry,
            watcher: Arc::new(Mutex::new(watcher)),
            stop: Arc::default(),
            poll_ms: Arc::new(std::sync::atomic::AtomicU64::new(poll.as_millis() as u64)),
        };
        let poller = fw.clone();
        let spawned = std::thread::Builder::new()
            .name("file-poll".into())
            .spawn(move || poller.poll_loop());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the file poll thread; tailers fall back to timed checks");
        }
        fw
    }

    /// Changes the poll period (a config reload).
    pub fn set_poll(&self, poll: Duration) {
        self.poll_ms.store(
            poll.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn poll_loop(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        while !self.stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(self.poll_ms.load(Relaxed).max(1)));
            // One stat per idle path, under the lock: a pass over a
            // thousand paths takes a millisecond or two.
            let r = lock(&self.registry);
            for (path, idle) in &r.idle {
                if changed(path, idle.seen) {
                    idle.wake.notify_one();
                }
            }
        }
    }

    /// Registers the tailer of `path` as idle, having seen `seen` there.
    /// Wakes it at once if that is already out of date.
    pub fn idle(&self, path: &Path, seen: Option<Seen>, wake: Arc<Notify>) {
        let dir = path.parent().map(Path::to_path_buf);
        let unwatched = dir.filter(|d| !lock(&self.registry).watched_dirs.contains(d));
        if let Some(dir) = unwatched {
            // Never under the registry's lock: notify's `watch` waits for
            // its event thread, which may be in the event handler above
            // waiting for that lock (a deadlock that hung every tokio
            // worker; the rotation soak found it). A directory that does
            // not exist yet is covered by the poll; tried again at the
            // next idle.
            let watched = lock(&self.watcher)
                .as_mut()
                .is_some_and(|w| w.watch(&dir, RecursiveMode::NonRecursive).is_ok());
            if watched {
                lock(&self.registry).watched_dirs.insert(dir);
            }
        }
        let mut r = lock(&self.registry);
        r.idle.insert(
            path.to_path_buf(),
            Idle {
                seen,
                wake: wake.clone(),
            },
        );
        drop(r);
        if changed(path, seen) {
            wake.notify_one();
        }
    }

    /// The tailer of `path` is working (or gone): no wake-ups needed.
    pub fn busy(&self, path: &Path) {
        lock(&self.registry).idle.remove(path);
    }

    pub fn shutdown(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        lock(&self.watcher).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_wakes_the_idle_tailer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"x\n").unwrap();
        let m = std::fs::metadata(&path).unwrap();
        let seen = Seen {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
        };
        let fw = FileWatch::start(Duration::from_secs(30));
        let wake = Arc::new(Notify::new());
        fw.idle(&path, Some(seen), wake.clone());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_at_end(b"y\n");
        // inotify, not the 30 s poll, must wake it.
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("woken by the file event");
        fw.shutdown();
    }

    /// Registering paths in new folders (a `watch` call each) while events
    /// flood in from a watched one: every call returns. Before the fix,
    /// `watch` ran under the registry's lock while the event thread waited
    /// for it, and both waited for good.
    #[test]
    fn watching_new_folders_while_events_arrive_never_deadlocks() {
        let dir = tempfile::tempdir().unwrap();
        let busy = dir.path().join("busy.log");
        std::fs::write(&busy, b"").unwrap();
        let fw = FileWatch::start(Duration::from_secs(30));
        fw.idle(&busy, None, Arc::new(Notify::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (busy, stop) = (busy.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&busy)
                    .unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::io::Write::write_all(&mut f, b"x\n").unwrap();
                }
            })
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let registering = {
            let (fw, root) = (fw.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                for i in 0..300 {
                    let sub = root.join(format!("d{i}"));
                    std::fs::create_dir(&sub).unwrap();
                    fw.idle(&sub.join("a.log"), None, Arc::new(Notify::new()));
                }
                done_tx.send(()).unwrap();
            })
        };
        let finished = done_rx.recv_timeout(Duration::from_secs(60)).is_ok();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(finished, "idle() deadlocked against the event thread");
        registering.join().unwrap();
        writer.join().unwrap();
        fw.shutdown();
    }

    #[tokio::test]
    async fn a_stale_registration_wakes_at_once_and_polling_sees_creation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/late.log");
        let fw = FileWatch::start(Duration::from_millis(20));
        let wake = Arc::new(Notify::new());
        fw.idle(&path, None, wake.clone());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"now\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("woken by the poll");
        fw.shutdown();
    }

    trait AppendExt {
        fn write_all_at_end(self, b: &[u8]);
    }
    impl AppendExt for std::fs::File {
        fn write_all_at_end(mut self, b: &[u8]) {
            use std::io::Write;
            self.write_all(b).unwrap();
        }
    }
}
