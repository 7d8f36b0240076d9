//! A FUSE file system for power-loss tests, after Jepsen's LazyFS: a
//! passthrough over a backing directory that keeps each file's written
//! bytes in a cache of its own until that file is fsync'd, and forgets
//! every byte not yet synced on command ([`LazyMount::cut_power`]).
//!
//! What it models (its invariants):
//! - **Data waits for fsync.** A `write` lands in the file's [`Unsynced`]
//!   cache; reads, and the size `stat` reports, see that cache laid over the
//!   backing file. `fsync` and `fdatasync` (the same here: both persist the
//!   size, as `fdatasync` must for appended data) write the file's cache
//!   into the backing file. Closing a file syncs nothing, and there is no
//!   background writeback, however old the bytes are. `sync_file_range(2)`
//!   never reaches a FUSE file system, so it persists nothing: that is what
//!   sled 0.34's `Db::flush` relies on (sled issue #1452).
//! - **Metadata is durable at once.** create, mknod, mkdir, rename, unlink,
//!   rmdir, truncate, chmod and chown go to the backing directory when they
//!   happen, like a journal that commits at once; `fsync` of a directory has
//!   nothing left to do. So an unlink is durable at once, before any data
//!   written earlier to another file. A truncate also cuts the file's cache:
//!   cached bytes past the new size are gone, those before it stay cached.
//! - **The kernel keeps no copy.** Every file is opened with `direct_io`, so
//!   the page cache never holds its data, and a power cut ends with an
//!   unmount and a fresh mount ([`LazyMount::remount`]: new inodes, no
//!   cached attributes).
//! - **A cut is an instant.** After [`LazyMount::cut_power`] every request
//!   fails with EIO, so nothing a frozen process still had in flight
//!   reaches the backing directory afterwards.
//!
//! It must never write file data to the backing directory except on fsync
//! (not on write, close, release or unmount). "Durable" means "in the
//! backing directory": that directory is on an ordinary disk whose host does
//! not lose power, so the backing files themselves are never fsync'd.
//!
//! Supported: lookup, getattr, setattr (size, mode, owner, times), create,
//! mknod (regular files, and Unix sockets: logcatch's admin socket),
//! mkdir, unlink, rmdir, rename (without flags), open, read, write, flush,
//! release, fsync, opendir, readdir, releasedir, fsyncdir, statfs. Not
//! supported (ENOSYS or EPERM): symlinks, hard links, xattrs, fallocate.
//! File locks are not implemented here, so the kernel keeps them within
//! the mount: sled's `flock` on its `db` file works.
//!
//! The parts: [`unsynced`] is one file's cache; [`server`] is the inode
//! table and the answers to the kernel; this module mounts, cuts, remounts
//! and unmounts ([`LazyMount`]).
//!
//! Mounting needs `/dev/fuse`, and either root (mount(2) directly) or the
//! `fusermount3` binary (Debian's `fuse3`); [`unavailable`] says why a
//! machine cannot, so that the tests can report themselves as skipped.

mod server;
mod unsynced;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, MountOption};

use server::{lock, LazyFs, State};
use unsynced::Unsynced;

/// What a power cut forgot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Unsynced bytes forgotten.
    pub bytes: u64,
    /// The files that had unsynced bytes (paths relative to the mount;
    /// `?` for an unlinked file) and how many each.
    pub files: Vec<(String, u64)>,
}

impl Cut {
    /// `1007 byte(s): data/store/conf 62, data/store/db 945`.
    pub fn describe(&self) -> String {
        let files: Vec<String> = self.files.iter().map(|(p, n)| format!("{p} {n}")).collect();
        format!("{} byte(s): {}", self.bytes, files.join(", "))
    }
}

/// Counters over one mount's life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub writes: u64,
    pub written_bytes: u64,
    /// fsync and fdatasync calls on files.
    pub fsyncs: u64,
    /// Bytes written into the backing files by those calls.
    pub synced_bytes: u64,
    pub unlinks: u64,
    pub renames: u64,
}

/// A mounted lazy file system: `mountpoint` shows `backing` with a cache
/// that forgets. Unmounted (without syncing anything) on drop.
pub struct LazyMount {
    backing: PathBuf,
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    /// Mounts so far (the first one counts).
    pub mounts: usize,
}

impl LazyMount {
    /// Mounts a new lazy file system over `backing` at `mountpoint` (both
    /// are created if missing).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyMount> {
        fs::create_dir_all(backing)?;
        fs::create_dir_all(mountpoint)?;
        let backing = backing.canonicalize()?;
        let mountpoint = mountpoint.canonicalize()?;
        let state = Arc::new(Mutex::new(State::new(&backing)));
        let session = spawn(&state, &mountpoint)?;
        Ok(LazyMount {
            backing,
            mountpoint,
            state,
            session: Some(session),
            mounts: 1,
        })
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The power cut: forgets every unsynced byte, and fails every request
    /// from now on. Freeze the processes using the mount first; kill them
    /// and [`remount`](LazyMount::remount) after.
    pub fn cut_power(&self) -> Cut {
        let mut s = lock(&self.state);
        s.dead = true;
        let mut files: Vec<(String, u64)> = s
            .unsynced
            .iter()
            .filter(|(_, u)| !u.is_empty())
            .map(|(ino, u)| {
                let path = s
                    .paths
                    .get(ino)
                    .and_then(|p| p.strip_prefix(&self.backing).ok());
                let name = path.map_or("?".into(), |p| p.display().to_string());
                (name, u.bytes())
            })
            .collect();
        files.sort();
        s.unsynced.clear();
        Cut {
            bytes: files.iter().map(|(_, n)| n).sum(),
            files,
        }
    }

    /// The counters of the current mount.
    pub fn stats(&self) -> Stats {
        lock(&self.state).stats
    }

    /// Bytes cached now, not yet synced.
    pub fn unsynced_bytes(&self) -> u64 {
        lock(&self.state)
            .unsynced
            .values()
            .map(Unsynced::bytes)
            .sum()
    }

    /// Unmounts (nothing is synced: what the cache held is gone) and mounts
    /// a fresh file system over the same backing directory. Nothing may
    /// have a file open on the mount.
    pub fn remount(&mut self) -> io::Result<()> {
        self.unmount_session()?;
        self.state = Arc::new(Mutex::new(State::new(&self.backing)));
        self.session = Some(spawn(&self.state, &self.mountpoint)?);
        self.mounts += 1;
        Ok(())
    }

    fn unmount_session(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        lock(&self.state).dead = true;
        let r = unmount(&self.mountpoint);
        // The session's threads end when the kernel closes the connection.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !session.guard.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if session.guard.is_finished() {
            let _ = session.join();
        }
        r
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_session() {
            eprintln!("lazyfs: unmounting {}: {e}", self.mountpoint.display());
        }
    }
}

fn spawn(state: &Arc<Mutex<State>>, mountpoint: &Path) -> io::Result<BackgroundSession> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("lazyfs".into()), MountOption::NoAtime];
    config.n_threads = Some(2);
    let fs = LazyFs {
        state: state.clone(),
    };
    fuser::spawn_mount(fs, mountpoint, &config)
}

/// Whether `path` is a mount point now (from `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

/// Unmounts `mountpoint`: `umount` (retried while busy, for up to 10 s),
/// then a lazy `umount -l` if it is still mounted.
fn unmount(mountpoint: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while is_mounted(mountpoint) {
        if Instant::now() >= deadline {
            let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
            return Err(io::Error::other(format!(
                "umount {} kept failing ({last}); detached it lazily",
                mountpoint.display()
            )));
        }
        match Command::new("umount").arg(mountpoint).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_string(),
            // No umount binary: fusermount3 unmounts FUSE mounts too.
            Err(_) => {
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg(mountpoint)
                    .status();
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether an executable called `name` is on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Why this machine cannot mount the lazy file system, or `None` when it
/// can (probed once per test process with a real mount). `LOGCATCH_LAZYFS=off`
/// turns the power-loss tests off on purpose. A failed mount on a machine
/// that has both `/dev/fuse` and `fusermount3` is a failure, not a skip.
pub fn unavailable() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(probe).clone()
}

fn probe() -> Option<String> {
    if std::env::var("LOGCATCH_LAZYFS").is_ok_and(|v| v == "off") {
        return Some("LOGCATCH_LAZYFS=off".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse on this machine, so FUSE cannot be mounted".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("lazyfs-probe-")
        .tempdir()
        .expect("tempdir");
    match LazyMount::mount(&dir.path().join("backing"), &dir.path().join("mnt")) {
        Ok(m) => {
            drop(m);
            None
        }
        Err(e) if !on_path("fusermount3") => Some(format!(
            "mount(2) of FUSE refused ({e}) and no fusermount3 on PATH (Debian package fuse3)"
        )),
        Err(e) => panic!(
            "cannot mount the lazy file system although /dev/fuse and fusermount3 exist: {e}"
        ),
    }
}
