//! The soak's log files and their writers: one [`LogFile`] per logrotate
//! [`Mode`], each a [`Logrotate`] in its own folder (logrotate's names,
//! `app.log.1` or `app.log-2026120318`, are per folder), and
//! [`Writers`]: a thread per file appending numbered lines at a steady
//! rate through the application's `O_APPEND` handle.
//!
//! Must never: write to a file while its [`LogFile`] is locked by a
//! rotation (so nothing lands between logrotate's copy and its truncate),
//! or write to a paused file.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::logrotate::{Compress, Logrotate, Naming};

/// One file per logrotate setup; the source name is also the messages'
/// key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `create` with numbered names; the application writes late lines
    /// through its old handle (into the renamed file) for a while after
    /// the rotation, while another process writes to the new file.
    Late,
    /// `create` with `dateext` names.
    DateExt,
    /// `copytruncate` with numbered names.
    CopyTruncate,
    /// `create` + `compress` + `delaycompress`.
    DelayCompress,
    /// `create` + `compress`, no `delaycompress`: `app.log.1.gz` at once.
    Compress,
    /// Never rotated.
    Plain,
}

pub(super) const MODES: [Mode; 6] = [
    Mode::Late,
    Mode::DateExt,
    Mode::CopyTruncate,
    Mode::DelayCompress,
    Mode::Compress,
    Mode::Plain,
];

impl Mode {
    /// The source's name (and folder).
    pub(super) fn source(self) -> &'static str {
        match self {
            Mode::Late => "late",
            Mode::DateExt => "dateext",
            Mode::CopyTruncate => "copytruncate",
            Mode::DelayCompress => "delaycompress",
            Mode::Compress => "compress",
            Mode::Plain => "plain",
        }
    }

    pub(super) fn rotates(self) -> bool {
        self != Mode::Plain
    }

    /// A rotation while the daemon is down leaves the unread rest of the
    /// file at the path only in a file found by its content (logrotate's
    /// copy, the `.gz`), which needs a line of it committed before: the
    /// first such rotation of a down time waits for one.
    pub(super) fn needs_a_commit_to_rotate_while_down(self) -> bool {
        matches!(self, Mode::CopyTruncate | Mode::Compress)
    }

    /// logrotate for `log` in this mode.
    pub(super) fn logrotate(self, log: &Path) -> Logrotate {
        let (naming, compress) = match self {
            Mode::DateExt => (Naming::DateExt, Compress::Off),
            Mode::DelayCompress => (Naming::Numbered, Compress::Delayed),
            Mode::Compress => (Naming::Numbered, Compress::Immediate),
            Mode::Late | Mode::CopyTruncate | Mode::Plain => (Naming::Numbered, Compress::Off),
        };
        Logrotate::new(log, naming).compress(compress)
    }
}

/// A log file, shared by its writer thread and the test (which locks it
/// for each rotation: the writer waits meanwhile).
pub(super) struct LogFile {
    pub(super) lr: Logrotate,
    /// The writer writes nothing (a copytruncate waiting for the daemon to
    /// be back on the path, or the end of the test).
    pub(super) paused: bool,
    /// [`Mode::Late`] after a rename: the application still writes to its
    /// old handle (the renamed file) until the test reopens it at this
    /// moment; a third of the lines go to the new file through the path
    /// meanwhile (another process).
    pub(super) late_until: Option<Instant>,
}

pub(super) type SharedFile = Arc<Mutex<LogFile>>;

/// How often a writer wakes up.
const TICK: Duration = Duration::from_millis(10);
/// A writer that fell behind (the file locked by a rotation, a busy
/// machine) catches up at most this much at once: beyond it, it writes
/// what it can and the report shows the rate it achieved.
const MAX_BACKLOG: Duration = Duration::from_millis(500);

/// The writer threads, one per file.
pub(super) struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Writers {
    /// A thread per file writing `rate` lines a second to it.
    pub(super) fn start(files: &[SharedFile], rate: f64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (f, stop) = (f.clone(), stop.clone());
                thread::Builder::new()
                    .name(format!("rot-writer-{i}"))
                    .spawn(move || write_at(&f, rate, &stop))
                    .unwrap()
            })
            .collect();
        Writers { stop, handles }
    }

    /// Stops every writer and waits for it.
    pub(super) fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            h.join().expect("a writer thread panicked");
        }
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Appends `rate` lines a second to `file` until `stop`: what is owed
/// since the last tick, at most [`MAX_BACKLOG`] of it; nothing is owed
/// while the file is paused.
fn write_at(file: &SharedFile, rate: f64, stop: &AtomicBool) {
    let mut owed = 0.0f64;
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        owed = (owed + rate * (now - last).as_secs_f64()).min(rate * MAX_BACKLOG.as_secs_f64());
        last = now;
        let n = owed as u64;
        if n > 0 {
            let mut f = file.lock().unwrap();
            if f.paused {
                owed = 0.0;
            } else {
                if f.late_until.is_some() {
                    let via_path = n / 3;
                    f.lr.write(n - via_path);
                    if via_path > 0 {
                        f.lr.write_via_path(via_path);
                    }
                } else {
                    f.lr.write(n);
                }
                owed -= n as f64;
            }
        }
        thread::sleep(TICK);
    }
}
