//! The FUSE server of the lazy file system: [`State`], everything one mount
//! knows behind one lock (the inode table by backing path, each inode's
//! [`Unsynced`] cache, the open handles), and [`LazyFs`], which answers the
//! kernel's requests from it.
//!
//! Invariants: an inode is a backing path, kept across renames (the cache
//! follows the file, not the name); file data reaches the backing file only
//! in [`State::fsync`]; metadata operations reach the backing directory
//! before they are answered; once `dead` (a power cut) every request but
//! release fails with EIO. Every file is opened with `direct_io`, so the
//! kernel keeps no copy of its data.
//!
//! Must never: write file data to the backing directory on write, flush,
//! release or unmount.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::unsynced::Unsynced;
use super::Stats;

/// How long the kernel may cache entries and attributes. Every change goes
/// through this mount, so the kernel's copy stays right; a remount starts
/// afresh.
const TTL: Duration = Duration::from_secs(1);

// Linux's open(2) and stat(2) constants (the same on every Linux
// architecture Rust supports), to avoid a libc dependency for five numbers.
const O_EXCL: i32 = 0o200;
const O_TRUNC: i32 = 0o1000;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFSOCK: u32 = 0o140_000;

/// An open file or directory.
enum Handle {
    File {
        ino: u64,
        file: File,
    },
    Dir {
        entries: Vec<(u64, FileType, OsString)>,
    },
}

/// Everything one mount knows, behind one lock: the inode table, each
/// inode's unsynced bytes, the open handles.
pub(super) struct State {
    /// Set by a power cut: every request fails from then on.
    pub(super) dead: bool,
    /// Linked inodes and their backing paths (absolute).
    pub(super) paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    pub(super) unsynced: HashMap<u64, Unsynced>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    pub(super) stats: Stats,
}

/// A result the FUSE replies can send.
type Res<T> = Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

impl State {
    pub(super) fn new(backing: &Path) -> State {
        let mut s = State {
            dead: false,
            paths: HashMap::new(),
            inos: HashMap::new(),
            next_ino: INodeNo::ROOT.0 + 1,
            unsynced: HashMap::new(),
            handles: HashMap::new(),
            next_fh: 1,
            stats: Stats::default(),
        };
        s.paths.insert(INodeNo::ROOT.0, backing.to_path_buf());
        s.inos.insert(backing.to_path_buf(), INodeNo::ROOT.0);
        s
    }

    fn path(&self, ino: u64) -> Res<PathBuf> {
        self.paths.get(&ino).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Res<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    /// The inode of a backing path, allocated on first sight.
    fn ino_for(&mut self, path: &Path) -> u64 {
        if let Some(i) = self.inos.get(path) {
            return *i;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(path.to_path_buf(), ino);
        self.paths.insert(ino, path.to_path_buf());
        ino
    }

    fn is_open(&self, ino: u64) -> bool {
        self.handles
            .values()
            .any(|h| matches!(h, Handle::File { ino: i, .. } if *i == ino))
    }

    /// The name `path` (and anything below it) is gone: its inode stays
    /// readable through open handles, and its cache goes with the last one.
    fn detach(&mut self, path: &Path) {
        let gone: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        for p in gone {
            if let Some(ino) = self.inos.remove(&p) {
                self.paths.remove(&ino);
                if !self.is_open(ino) {
                    self.unsynced.remove(&ino);
                }
            }
        }
    }

    /// `from` (and anything below it) is now called `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        let moving: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for p in moving {
            if let Some(ino) = self.inos.remove(&p) {
                let rel = p.strip_prefix(from).unwrap_or(Path::new(""));
                let new = if rel.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rel)
                };
                self.inos.insert(new.clone(), ino);
                self.paths.insert(ino, new);
            }
        }
    }

    fn file(&self, fh: u64) -> Res<&File> {
        match self.handles.get(&fh) {
            Some(Handle::File { file, .. }) => Ok(file),
            _ => Err(Errno::EBADF),
        }
    }

    fn add_handle(&mut self, h: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, h);
        fh
    }

    /// The attributes of `ino`: the backing file's, with the size the
    /// cache gives it.
    fn attr(&self, ino: u64, fh: Option<u64>) -> Res<FileAttr> {
        let meta = match fh.map(|fh| self.file(fh)) {
            Some(Ok(f)) => f.metadata(),
            _ => fs::symlink_metadata(self.path(ino)?),
        }
        .map_err(errno)?;
        let size = match self.unsynced.get(&ino) {
            Some(u) if meta.is_file() => meta.len().max(u.end()),
            _ => meta.len(),
        };
        Ok(attr_of(ino, &meta, size))
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let path = self.child(parent, name)?;
        fs::symlink_metadata(&path).map_err(errno)?;
        let ino = self.ino_for(&path);
        self.attr(ino, None)
    }

    fn setattr(&mut self, ino: u64, a: &SetAttr) -> Res<FileAttr> {
        let path = self.paths.get(&ino).cloned();
        if let Some(size) = a.size {
            if let Some(u) = self.unsynced.get_mut(&ino) {
                u.truncate(size);
            }
            match a.fh.map(|fh| self.file(fh)) {
                Some(Ok(f)) => f.set_len(size),
                _ => OpenOptions::new()
                    .write(true)
                    .open(path.as_ref().ok_or(Errno::ENOENT)?)
                    .and_then(|f| f.set_len(size)),
            }
            .map_err(errno)?;
        }
        if let Some(path) = &path {
            if let Some(mode) = a.mode {
                fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(errno)?;
            }
            if a.uid.is_some() || a.gid.is_some() {
                std::os::unix::fs::lchown(path, a.uid, a.gid).map_err(errno)?;
            }
            if a.atime.is_some() || a.mtime.is_some() {
                // Best effort: a socket cannot be opened to set them.
                let now = SystemTime::now();
                let when = |t: &TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => *t,
                    TimeOrNow::Now => now,
                };
                let mut times = fs::FileTimes::new();
                if let Some(t) = &a.atime {
                    times = times.set_accessed(when(t));
                }
                if let Some(t) = &a.mtime {
                    times = times.set_modified(when(t));
                }
                let _ = File::open(path).and_then(|f| f.set_times(times));
            }
        }
        self.attr(ino, a.fh)
    }

    fn create(&mut self, parent: u64, name: &OsStr, mode: u32, flags: i32) -> Res<(FileAttr, u64)> {
        let path = self.child(parent, name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .create_new(flags & O_EXCL != 0)
            .mode(mode & 0o7777)
            .open(&path)
            .map_err(errno)?;
        let ino = self.ino_for(&path);
        if flags & O_TRUNC != 0 {
            file.set_len(0).map_err(errno)?;
            self.unsynced.remove(&ino);
        }
        let fh = self.add_handle(Handle::File { ino, file });
        Ok((self.attr(ino, Some(fh))?, fh))
    }

    fn mknod(&mut self, parent: u64, name: &OsStr, mode: u32) -> Res<FileAttr> {
        let path = self.child(parent, name)?;
        match mode & S_IFMT {
            S_IFREG => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode & 0o7777)
                .open(&path)
                .map(drop),
            // A socket node, as bind(2) makes it; the listener is the
            // caller's, in the kernel, on this mount's inode.
            S_IFSOCK => std::os::unix::net::UnixListener::bind(&path)
                .map(drop)
                .and_then(|()| {
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                }),
            _ => return Err(Errno::EPERM),
        }
        .map_err(errno)?;
        let ino = self.ino_for(&path);
        self.attr(ino, None)
    }

    fn mkdir(&mut self, parent: u64, name: &OsStr, mode: u32) -> Res<FileAttr> {
        let path = self.child(parent, name)?;
        fs::DirBuilder::new()
            .mode(mode & 0o7777)
            .create(&path)
            .map_err(errno)?;
        let ino = self.ino_for(&path);
        self.attr(ino, None)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Res<()> {
        let path = self.child(parent, name)?;
        if dir {
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        }
        .map_err(errno)?;
        self.stats.unlinks += 1;
        self.detach(&path);
        Ok(())
    }

    fn rename(&mut self, from: (u64, &OsStr), to: (u64, &OsStr), flags: RenameFlags) -> Res<()> {
        if !flags.is_empty() {
            return Err(Errno::EINVAL);
        }
        let (from, to) = (self.child(from.0, from.1)?, self.child(to.0, to.1)?);
        fs::rename(&from, &to).map_err(errno)?;
        self.stats.renames += 1;
        if from != to {
            self.detach(&to);
            self.moved(&from, &to);
        }
        Ok(())
    }

    fn open(&mut self, ino: u64) -> Res<u64> {
        let path = self.path(ino)?;
        // Read and write whatever the caller asked: an fsync writes the
        // cache back through this handle.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(errno)?;
        Ok(self.add_handle(Handle::File { ino, file }))
    }

    fn read(&self, ino: u64, fh: u64, off: u64, size: u32) -> Res<Vec<u8>> {
        let file = self.file(fh)?;
        let backing = file.metadata().map_err(errno)?.len();
        let cached = self.unsynced.get(&ino);
        let end = backing.max(cached.map_or(0, Unsynced::end));
        if off >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (size as u64).min(end - off) as usize];
        if off < backing {
            let n = (buf.len() as u64).min(backing - off) as usize;
            read_full_at(file, &mut buf[..n], off).map_err(errno)?;
        }
        if let Some(u) = cached {
            u.overlay(off, &mut buf);
        }
        Ok(buf)
    }

    fn write(&mut self, ino: u64, fh: u64, off: u64, data: &[u8]) -> Res<u32> {
        self.file(fh)?;
        self.unsynced.entry(ino).or_default().write(off, data);
        self.stats.writes += 1;
        self.stats.written_bytes += data.len() as u64;
        Ok(data.len() as u32)
    }

    /// fsync and fdatasync: the file's cache goes into the backing file.
    fn fsync(&mut self, ino: u64, fh: u64) -> Res<()> {
        self.stats.fsyncs += 1;
        let Some(u) = self.unsynced.remove(&ino) else {
            return Ok(());
        };
        let file = self.file(fh)?;
        for (off, bytes) in u.extents() {
            file.write_all_at(bytes, off).map_err(errno)?;
        }
        self.stats.synced_bytes += u.bytes();
        Ok(())
    }

    fn release(&mut self, fh: u64) {
        if let Some(Handle::File { ino, .. }) = self.handles.remove(&fh) {
            if !self.paths.contains_key(&ino) && !self.is_open(ino) {
                self.unsynced.remove(&ino);
            }
        }
    }

    fn opendir(&mut self, ino: u64) -> Res<u64> {
        let path = self.path(ino)?;
        let parent = path
            .parent()
            .and_then(|p| self.inos.get(p).copied())
            .unwrap_or(ino);
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for e in fs::read_dir(&path).map_err(errno)? {
            let e = e.map_err(errno)?;
            let kind = e.file_type().map_err(errno)?;
            let kind = FileType::from_std(kind).unwrap_or(FileType::RegularFile);
            entries.push((self.ino_for(&e.path()), kind, e.file_name()));
        }
        Ok(self.add_handle(Handle::Dir { entries }))
    }

    fn readdir(&self, fh: u64, offset: u64, reply: &mut ReplyDirectory) -> Res<()> {
        let Some(Handle::Dir { entries }) = self.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        Ok(())
    }
}

/// The fields of a setattr this file system applies.
struct SetAttr {
    fh: Option<u64>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

fn attr_of(ino: u64, m: &fs::Metadata, size: u64) -> FileAttr {
    let ctime = UNIX_EPOCH
        + Duration::new(
            u64::try_from(m.ctime()).unwrap_or(0),
            u32::try_from(m.ctime_nsec()).unwrap_or(0),
        );
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: m.accessed().unwrap_or(UNIX_EPOCH),
        mtime: m.modified().unwrap_or(UNIX_EPOCH),
        ctime,
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// Reads until `buf` is full or the file ends (the rest stays zero).
fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The FUSE side: each request locks the state, which refuses it after a
/// cut.
pub(super) struct LazyFs {
    pub(super) state: Arc<Mutex<State>>,
}

impl LazyFs {
    fn live(&self) -> Res<MutexGuard<'_, State>> {
        let s = lock(&self.state);
        if s.dead {
            return Err(Errno::EIO);
        }
        Ok(s)
    }
}

fn entry(reply: ReplyEntry, r: Res<FileAttr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, r: Res<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn opened(reply: ReplyOpen, r: Res<u64>) {
    match r {
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(
            reply,
            self.live().and_then(|mut s| s.lookup(parent.0, name)),
        );
    }

    fn getattr(&self, _: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live().and_then(|s| s.attr(ino.0, fh.map(|f| f.0))) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr {
            fh: fh.map(|f| f.0),
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        match self.live().and_then(|mut s| s.setattr(ino.0, &a)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .live()
            .and_then(|mut s| s.mknod(parent.0, name, mode & !umask));
        entry(reply, r);
    }

    fn mkdir(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .live()
            .and_then(|mut s| s.mkdir(parent.0, name, mode & !umask));
        entry(reply, r);
    }

    fn unlink(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.live()
                .and_then(|mut s| s.remove(parent.0, name, false)),
        );
    }

    fn rmdir(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.live().and_then(|mut s| s.remove(parent.0, name, true)),
        );
    }

    fn rename(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self
            .live()
            .and_then(|mut s| s.rename((parent.0, name), (newparent.0, newname), flags));
        empty(reply, r);
    }

    fn open(&self, _: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        opened(reply, self.live().and_then(|mut s| s.open(ino.0)));
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.live().and_then(|s| s.read(ino.0, fh.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .live()
            .and_then(|mut s| s.write(ino.0, fh.0, offset, data))
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) persists nothing.
        empty(reply, self.live().map(drop));
    }

    fn release(
        &self,
        _: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(reply, self.live().and_then(|mut s| s.fsync(ino.0, fh.0)));
    }

    fn opendir(&self, _: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live().and_then(|mut s| s.opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self
            .live()
            .and_then(|s| s.readdir(fh.0, offset, &mut reply))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        // Directory operations were durable when they returned.
        empty(reply, self.live().map(drop));
    }

    fn statfs(&self, _: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room (nothing in logcatch asks; `df` would).
        reply.statfs(1 << 28, 1 << 28, 1 << 28, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn create(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self
            .live()
            .and_then(|mut s| s.create(parent.0, name, mode & !umask, flags));
        match r {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }
}
