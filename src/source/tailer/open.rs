//! open: where a tailer starts. Owns the first open of a source's file and
//! every reopen after a rotation: which stored position applies to the file
//! at the path ([`Known`]), resuming the record's rotated files as draining
//! files, and reading the rest of a file truncated while logcatch was
//! stopped from logrotate's copy.
//!
//! Invariants: a stored offset is resumed only in the file it was read
//! from, verified ([`verify`], [`find_rotated`]); the file at the path is
//! read from 0 whenever the record's positions belong to other files.
//!
//! Must never: resume a position in a file that failed its checks (that
//! would skip lines), or pass over a possible gap without logging and
//! counting it.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::drain::DrainingFile;
use super::{FileTail, OpenFile, StartPoint, TailError, TailState};
use crate::config::StartAt;
use crate::runtime::lock;
use crate::source::compressed::{find_compressed, unpack, unpack_if_same, unpacked_head, Codec};
use crate::source::copies::{find_copy, CopyWanted};
use crate::source::discover::claimed_by_another;
use crate::source::identity::{
    born_after, crc_at, find_rotated, folder_of, identity_of, not_a_regular_file, rotated_name,
    verify, Verdict,
};
use crate::source::lines::{LineBatch, LineSplitter};
use crate::spool::SpoolBatch;
use crate::store::{FileIdentity, FilePosition, SourceRecord};

/// What the source's record knows of the file now at its path.
enum Known {
    /// No record: a source never read.
    Nothing,
    /// The record's files are all elsewhere: the file at the path is new.
    Elsewhere,
    /// The record's position in this file (device and inode match), and
    /// the device and inode of the record's other files (drained from
    /// their own positions by [`FileTail::resume_draining`]).
    AtPath(SourceRecord, Vec<FilePosition>),
}

impl FileTail {
    /// Opens the source's file and decides where to start. Returns the
    /// checkpoint to commit, or `None` if there is no file yet.
    ///
    /// At the first open the record's other files (rotated away, drained
    /// when the last run stopped, or rotated while it was stopped) are found
    /// again beside the path by device and inode and drained from their
    /// stored offsets ([`FileTail::resume_draining`]).
    ///
    /// Longer than most: its steps (resume, take back, match the record,
    /// start point, unknown generations) share the record and the stat of
    /// the path, and their order is the crash-safety argument; each step's
    /// work is in its own function.
    pub(super) fn open(&mut self) -> Result<Option<SpoolBatch>, TailError> {
        let path = self.source.path.clone();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io(&path)(e)),
        };
        let record = self
            .store
            .source(&self.source.name)
            .map_err(|e| self.store_err(e))?
            .filter(|r| Path::new(&r.path) == path);
        // The record's rotated files are drained whatever is at the path
        // (nothing, mid-rotation). Until an open succeeds this runs again
        // at each try; files already draining are not added twice.
        let first = !self.resumed;
        if let (Some(rec), false) = (&record, self.drains_resumed) {
            self.scan_after = Some(rec.updated_ms);
            self.resume_draining(rec, meta.as_ref())?;
            self.drains_resumed = true;
        }
        let Some(meta) = meta else {
            return Ok(None);
        };
        if let Some(kind) = not_a_regular_file(&meta) {
            return Err(TailError::NotAFile {
                source_name: self.source.name.clone(),
                path,
                kind,
            });
        }
        if let Some(checkpoint) = self.take_back(&meta) {
            return Ok(Some(checkpoint));
        }
        let known = match &record {
            None => Known::Nothing,
            Some(rec) => std::iter::once(rec.position())
                .chain(rec.draining.iter().cloned())
                .find(|p| p.identity.is_inode_of(&meta))
                .map_or(Known::Elsewhere, |p| {
                    let others = std::iter::once(rec.position())
                        .chain(rec.draining.iter().cloned())
                        .filter(|o| !o.identity.same_file(&p.identity))
                        .collect();
                    Known::AtPath(rec.for_position(&p), others)
                }),
        };
        // A glob source's file: a file new to this record may be another
        // file's of the same source (a rotated name the glob matches too),
        // which that file's tailer reads. Not opened: as if none were here.
        if !matches!(known, Known::AtPath(..))
            && claimed_by_another(&self.store, &self.source.name, &path, &meta)
                .map_err(|e| self.store_err(e))?
        {
            return Ok(None);
        }
        let resumes_at = match &known {
            Known::AtPath(rec, _) => Some(rec.offset),
            _ => None,
        };

        let file = File::open(&path).map_err(self.io(&path))?;
        let StartPoint {
            file,
            opened_as,
            offset: start,
            tail,
            goes_by,
        } = self.start_point(file, &path, known)?;
        self.rotated = false;
        let mut open = self.open_file(file, opened_as, start, tail)?;
        if let Some((dev, ino)) = goes_by {
            (open.identity.dev, open.identity.ino) = (dev, ino);
        }
        tracing::info!(source = %self.source.name, path = %open.opened_as.display(), offset = start,
            device = open.identity.dev, inode = open.identity.ino, "tailing");
        let unchanged = open.opened_as == path && resumes_at == Some(start);
        let (cur_dev, cur_ino) = (open.identity.dev, open.identity.ino);
        self.current = Some(open);
        let compressed = Codec::of(&path).is_some();
        if let Some(rec) = record
            .as_ref()
            .filter(|_| first && !unchanged && !compressed)
        {
            self.read_unknown_generations(rec, (meta.dev(), meta.ino()), (cur_dev, cur_ino))?;
        }
        self.resumed = true;
        self.set_state(TailState::Tailing, None);
        Ok(Some(self.checkpoint(start)))
    }

    /// The file at the path is one being drained (the path named another
    /// file for a moment, then this one again): it becomes the current
    /// file again at its read position, never read a second time from 0.
    /// Returns the checkpoint of its position.
    fn take_back(&mut self, at_path: &Metadata) -> Option<SpoolBatch> {
        let i = self
            .draining
            .iter()
            .position(|d| d.file.identity.is_inode_of(at_path))?;
        let d = self.draining.remove(i);
        tracing::info!(source = %self.source.name, path = %self.source.path.display(), offset = d.file.read_pos,
            "the path names the rotated file being drained again; going on in it");
        let committed = d.file.committed;
        let mut file = d.file;
        file.opened_as = self.source.path.clone();
        self.current = Some(file);
        self.rotated = false;
        self.set_draining_status();
        self.set_state(TailState::Tailing, None);
        Some(self.checkpoint(committed))
    }

    /// An [`OpenFile`] of `file` (opened as `opened_as`) reading from
    /// `start`, whose committed bytes end with the tail check `tail`.
    pub(super) fn open_file(
        &self,
        file: File,
        opened_as: PathBuf,
        start: u64,
        tail: (u32, u32),
    ) -> Result<OpenFile, TailError> {
        let meta = file.metadata().map_err(self.io(&opened_as))?;
        let identity =
            identity_of(&file, meta.len(), meta.dev(), meta.ino()).map_err(self.io(&opened_as))?;
        Ok(OpenFile {
            file,
            opened_as,
            identity,
            read_pos: start,
            committed: start,
            splitter: LineSplitter::new(self.source.max_line_bytes, self.source.long_lines, start),
            last_size: meta.len(),
            head_checked: std::time::Instant::now(),
            tail,
        })
    }

    /// At the first open: every file of `rec` that is not the one at the
    /// path (`at_path`) is looked for beside the path by device and inode,
    /// unchanged up to its offset ([`find_rotated`]), and drained from
    /// there. The record's own file gone is a possible gap (lines written
    /// to it after its offset cannot be read), logged and counted; a
    /// draining file gone was most likely finished (its `Drained` was lost
    /// in a crash) or deleted by logrotate, and is logged.
    ///
    /// Why no line is read twice: a file is resumed at its stored offset
    /// only if [`find_rotated`] verified its head and the bytes before the
    /// offset, and the file at the path is never among them.
    fn resume_draining(
        &mut self,
        rec: &SourceRecord,
        at_path: Option<&Metadata>,
    ) -> Result<(), TailError> {
        let path = self.source.path.clone();
        let own = rec.position();
        // Oldest first (the record's own file is its newest): drained in
        // this order, so an older file's rest goes out first.
        for p in rec
            .draining
            .iter()
            .cloned()
            .chain(std::iter::once(own.clone()))
        {
            // Handled at an earlier try: draining, or gone (pending).
            let held = self
                .draining
                .iter()
                .any(|d| d.file.identity.same_file(&p.identity))
                || self
                    .pending_drained
                    .iter()
                    .any(|i| i.same_file(&p.identity));
            if held || at_path.is_some_and(|m| p.identity.is_inode_of(m)) {
                continue;
            }
            let this = rec.for_position(&p);
            let found = find_rotated(&path, &this).map_err(self.io(&path))?;
            // A file that was empty has no first bytes to check: one born
            // after the record's last commit on its inode (logrotate deleted
            // it, a new copy got the inode) is another file.
            let found =
                found.filter(|(_, f)| p.identity.head_len > 0 || !born_after(f, rec.updated_ms));
            match found {
                Some((old_path, old_file)) => {
                    tracing::info!(source = %self.source.name, rotated_to = %old_path.display(), offset = p.offset,
                        "the file was rotated away before this start; draining the rest of it beside the new one");
                    let file =
                        self.open_file(old_file, old_path, p.offset, (p.tail_len, p.tail_crc))?;
                    self.draining.push(DrainingFile::new(file));
                }
                None if self.resume_compressed(&this)? => {}
                None if p == own => {
                    tracing::warn!(source = %self.source.name, path = %path.display(),
                        old_device = p.identity.dev, old_inode = p.identity.ino, old_offset = p.offset,
                        "the previously read file is gone (rotated away or deleted while logcatch was stopped); \
                         lines written to it after the stored offset cannot be read");
                    // Counted like a missing copy: a possible gap is never
                    // passed over silently.
                    self.count_gap();
                    // Its position leaves the record once the new file's
                    // takes over.
                    self.pending_drained.push(p.identity);
                }
                None => {
                    tracing::info!(source = %self.source.name, old_device = p.identity.dev, old_inode = p.identity.ino,
                        old_offset = p.offset, "a rotated file that was being drained is gone (finished, or deleted by logrotate)");
                    self.pending_drained.push(p.identity);
                }
            }
        }
        self.set_draining_status();
        Ok(())
    }

    /// After rotations or truncations while logcatch was stopped: rotated
    /// files beside the path that no position of `rec` names, not finished
    /// lately, and written after the record's last commit hold a
    /// generation of the file logcatch never saw (the middle one of two
    /// rotations, or the copy of a second copytruncate). They are drained
    /// from 0. `at_path` and `current` (device, inode) are the file at the
    /// path and the file read first (logrotate's copy, when one was
    /// followed): never such a generation.
    ///
    /// Why no line is read twice: every file logcatch read from is named by
    /// a position of the record (draining, its own) or its finished list,
    /// or was written to last before the record's last commit; a file none
    /// of that holds was never read. A rotated file compressed by logrotate
    /// (`.gz`, ...) is never taken for one.
    fn read_unknown_generations(
        &mut self,
        rec: &SourceRecord,
        at_path: (u64, u64),
        current: (u64, u64),
    ) -> Result<(), TailError> {
        let path = self.source.path.clone();
        let mut held: Vec<(u64, u64)> = vec![at_path, current];
        held.extend(self.held_inodes());
        let known: Vec<FileIdentity> = std::iter::once(rec.identity)
            .chain(rec.draining.iter().map(|d| d.identity))
            .chain(rec.finished.iter().copied())
            .collect();
        let after = self.scan_after.unwrap_or(rec.updated_ms);
        let mut found = rotated_siblings(&path, after, &held, &known).map_err(self.io(&path))?;
        for (packed, codec) in
            compressed_siblings(&path, after, &held, &known).map_err(self.io(&path))?
        {
            match unpack(&packed, codec, &self.scratch_dir()) {
                Ok(u) => found.push((packed, u.file, Some((u.dev, u.ino)))),
                Err(e) => {
                    tracing::warn!(source = %self.source.name, compressed = %packed.display(), error = %e,
                        "cannot unpack a compressed rotation logcatch never read")
                }
            }
        }
        // A glob source's file: siblings the glob matches are files of
        // their own (discovery tails them; reading them here too would
        // send them twice).
        if let Some(glob) = &self.source.matched_by {
            found.retain(|(p, _, _)| !glob.matches(p));
        }
        for (old_path, old_file, goes_by) in found {
            tracing::info!(source = %self.source.name, rotated = %old_path.display(),
                "a rotated file logcatch never read (rotated while it was stopped); reading it from the start");
            let mut file = self.open_file(old_file, old_path, 0, (0, 0))?;
            if let Some((dev, ino)) = goes_by {
                (file.identity.dev, file.identity.ino) = (dev, ino);
            }
            // Named in the record at once, before anything moves the
            // record's time past the file's: a crash before its first
            // line would else hide it for good.
            let checkpoint = self.batch_of(
                &file,
                LineBatch {
                    end_offset: Some(0),
                    ..LineBatch::default()
                },
            );
            self.found_checkpoints.push(checkpoint);
            self.flush_store = true;
            self.draining.push(DrainingFile::new(file));
        }
        self.set_draining_status();
        Ok(())
    }

    /// The device and inode of every file this tailer holds open to drain,
    /// and of the compressed files it unpacked: files that are not a
    /// generation never read, nor a copy still to follow.
    ///
    /// Asked of the open handles, never taken from the positions: a file
    /// drained from its unpacked `.gz` goes by the record's identity, whose
    /// inode was freed when logrotate deleted the plain file and may be a
    /// newer `.gz`'s now (the rotation soak lost such a generation whole).
    /// An inode held open cannot be given to another file.
    fn held_inodes(&self) -> Vec<(u64, u64)> {
        self.draining
            .iter()
            .filter_map(|d| d.file.file.metadata().ok())
            .map(|m| (m.dev(), m.ino()))
            .chain(self.unpacked.iter().copied())
            .collect()
    }

    /// The data_dir folder for unpacked compressed rotations.
    fn scratch_dir(&self) -> PathBuf {
        self.store.path().with_file_name("unpacked")
    }

    /// The file `rec` describes is gone from beside the path: if logrotate
    /// compressed it (`compress` without `delaycompress`), its unread rest
    /// is unpacked ([`find_compressed`]) and drained under the record's
    /// identity, so its batches move the same position. True if found.
    fn resume_compressed(&mut self, rec: &SourceRecord) -> Result<bool, TailError> {
        let path = self.source.path.clone();
        let found = match find_compressed(&path, rec, &self.scratch_dir()) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(source = %self.source.name, path = %path.display(), error = %e,
                    "cannot look for a compressed rotation beside the file");
                None
            }
        };
        let Some(unpacked) = found else {
            return Ok(false);
        };
        tracing::info!(source = %self.source.name, compressed = %unpacked.path.display(), offset = rec.offset,
            size = unpacked.size, "the rotated file was compressed before logcatch read all of it; reading the rest from the compressed file");
        let (packed_dev, packed_ino) = (unpacked.dev, unpacked.ino);
        let mut file = self.open_file(
            unpacked.file,
            unpacked.path,
            rec.offset,
            (rec.tail_len, rec.tail_crc),
        )?;
        file.identity = rec.identity;
        self.unpacked.push((packed_dev, packed_ino));
        self.draining.push(DrainingFile::new(file));
        Ok(true)
    }

    /// Where to start in `file` (just opened at `path`), given what the
    /// record knows of it: its offset if it is the record's file,
    /// unchanged (from logrotate's copy first if it was truncated while we
    /// were down); 0 if the record's files are elsewhere (rotated away:
    /// [`FileTail::resume_draining`] drains them) or after a rotation;
    /// otherwise (a source never read) 0 or, with `start_at: end`, the end.
    fn start_point(&self, file: File, path: &Path, known: Known) -> Result<StartPoint, TailError> {
        let meta = file.metadata().map_err(self.io(path))?;
        let from = |file, offset, tail| StartPoint::at(file, path, offset, tail);
        if let Some(codec) = Codec::of(path) {
            return self.start_compressed(path, codec, known);
        }
        let start = match known {
            _ if self.rotated => from(file, 0, (0, 0)),
            Known::Nothing => {
                let start = match self.source.start_at {
                    StartAt::Beginning => 0,
                    StartAt::End => meta.len(),
                };
                from(file, start, (0, 0))
            }
            Known::Elsewhere => from(file, 0, (0, 0)),
            Known::AtPath(rec, others) => match verify(&file, meta.len(), &rec)
                .map_err(self.io(path))?
            {
                Verdict::Same => from(file, rec.offset, (rec.tail_len, rec.tail_crc)),
                Verdict::Changed(why) => self.changed_while_down(file, path, &rec, why, &others)?,
            },
        };
        Ok(start)
    }

    /// Where to start in a compressed source (a path ending in `.gz` or
    /// `.zst`, read once): its unpacked bytes, in a scratch file that goes
    /// by the compressed file's device and inode; from the record's offset
    /// when the unpacked bytes before it match, else from 0 (or, for a
    /// source never read with `start_at: end`, at the end).
    fn start_compressed(
        &self,
        path: &Path,
        codec: Codec,
        known: Known,
    ) -> Result<StartPoint, TailError> {
        let scratch = self.scratch_dir();
        if let (Known::AtPath(rec, _), false) = (&known, self.rotated) {
            if let Some(u) = unpack_if_same(path, codec, rec, &scratch).map_err(self.io(path))? {
                return Ok(StartPoint {
                    file: u.file,
                    opened_as: path.to_path_buf(),
                    offset: rec.offset,
                    tail: (rec.tail_len, rec.tail_crc),
                    goes_by: Some((u.dev, u.ino)),
                });
            }
        }
        let u = unpack(path, codec, &scratch).map_err(self.io(path))?;
        let offset = match known {
            Known::Nothing if !self.rotated && self.source.start_at == StartAt::End => u.size,
            _ => 0,
        };
        tracing::info!(source = %self.source.name, path = %path.display(), unpacked = u.size, offset,
            "a compressed source: reading its unpacked bytes once");
        Ok(StartPoint {
            file: u.file,
            opened_as: path.to_path_buf(),
            offset,
            tail: (0, 0),
            goes_by: Some((u.dev, u.ino)),
        })
    }

    /// The file at `path` is the one `rec` describes, but it changed while
    /// logcatch was stopped (`why`): truncated by a copytruncate, or
    /// rewritten. The rest after the stored offset is read from logrotate's
    /// copy when there is one, then the file from 0.
    ///
    /// Why no line is skipped or read twice: the copy's bytes up to
    /// `rec.offset` are the bytes already committed ([`find_copy`] checks
    /// its head and the tail check before the offset), so the copy resumes
    /// exactly where the record stopped. Its batches carry the copy's
    /// identity: a crash while draining it leaves a record naming the copy,
    /// which the next start finds beside the path by device and inode
    /// ([`find_rotated`]) and resumes, and the truncated file is read from 0
    /// only after the copy is finished. The truncated file's bytes were all
    /// written after the truncation, so none of them is in the copy.
    ///
    /// A copy that is one of the record's other files (`others`), or whose
    /// generation one of them already holds further on ([`covered`]: a
    /// crash while the copy was read and the truncated file was read again
    /// from 0; a copy compressed since), is already drained from its own
    /// position: the file is read from 0 and the copy is not read a second
    /// time.
    fn changed_while_down(
        &self,
        file: File,
        path: &Path,
        rec: &SourceRecord,
        why: &str,
        others: &[FilePosition],
    ) -> Result<StartPoint, TailError> {
        let name = &self.source.name;
        // Not the positions found gone (pending): their inodes may be a
        // new copy's now.
        let draining = self.held_inodes();
        match find_copy(path, &CopyWanted::of_record(rec)).map_err(self.io(path))? {
            Some(copy) if covered(rec, (copy.dev, copy.ino), others, &draining) => {
                tracing::info!(source = %name, path = %path.display(), copy = %copy.path.display(),
                    "{why} since the last run; its copy is already being read from where it stopped: reading the file from the start");
                Ok(StartPoint::at(file, path, 0, (0, 0)))
            }
            Some(copy) => {
                tracing::info!(source = %name, path = %path.display(), copy = %copy.path.display(), offset = rec.offset,
                    "{why} since the last run; reading the rest from logrotate's copy first, then the file from the start");
                Ok(StartPoint {
                    file: copy.file,
                    opened_as: copy.path,
                    offset: rec.offset,
                    tail: (rec.tail_len, rec.tail_crc),
                    goes_by: None,
                })
            }
            None => {
                if let Some(u) =
                    find_compressed(path, rec, &self.scratch_dir()).map_err(self.io(path))?
                {
                    if covered(rec, (u.dev, u.ino), others, &draining) {
                        tracing::info!(source = %name, path = %path.display(), compressed = %u.path.display(),
                            "{why} since the last run; its compressed copy is already being read from where it stopped: reading the file from the start");
                        return Ok(StartPoint::at(file, path, 0, (0, 0)));
                    }
                    tracing::info!(source = %name, path = %path.display(), compressed = %u.path.display(), offset = rec.offset,
                        "{why} since the last run; reading the rest from logrotate's compressed copy first, then the file from the start");
                    return Ok(StartPoint {
                        file: u.file,
                        opened_as: u.path,
                        offset: rec.offset,
                        tail: (rec.tail_len, rec.tail_crc),
                        goes_by: Some((u.dev, u.ino)),
                    });
                }
                self.count_gap();
                tracing::warn!(source = %name, path = %path.display(), offset = rec.offset,
                    "{why} since the last run, and no copy of it was found beside it: lines written after offset {} \
                     before that may be lost (a gap); reading it from the start", rec.offset);
                Ok(StartPoint::at(file, path, 0, (0, 0)))
            }
        }
    }

    fn count_gap(&self) {
        lock(&self.status).truncation_gaps += 1;
    }
}

/// A rotated file found beside the path: its name, the file to read (an
/// unpacked scratch file for a compressed one), and the device and inode it
/// goes by when not its own.
type Sibling = (PathBuf, File, Option<(u64, u64)>);

/// Names logrotate gives rotated files that logcatch does not read as
/// plain text.
const COMPRESSED: &[&str] = &[".gz", ".zst", ".bz2", ".xz", ".lz4", ".zip", ".Z"];

/// Does one of the record's other positions (`others`) already hold the
/// generation `rec` describes, so that a copy of it must not be read again?
/// It does when it has the same first bytes (a copy of this generation:
/// the one found, or one since compressed or deleted, whose rest
/// [`FileTail::resume_draining`] reads) and an offset at least as far.
/// Or the copy (`copy`: device and inode) is itself being drained (found
/// again and verified at this start: in `draining`).
///
/// Never by a position's device and inode alone: a position whose file is
/// gone may name an inode a new copy got since.
fn covered(
    rec: &SourceRecord,
    copy: (u64, u64),
    others: &[FilePosition],
    draining: &[(u64, u64)],
) -> bool {
    draining.contains(&copy)
        || others.iter().any(|o| {
            o.identity.head_len == rec.identity.head_len
                && o.identity.head_len > 0
                && o.identity.head_crc == rec.identity.head_crc
                && o.offset >= rec.offset
        })
}

/// Regular files beside `path` named like its rotations (its file name,
/// `.` or `-`, then a digit: `app.log.1`, `app.log-20261203`), not
/// compressed, last written after `after_ms` (Unix ms), not `held` (device,
/// inode: files open now) and not one of `known` (same device, inode and
/// first bytes: a file read before; a new file on a reused inode is not);
/// oldest first.
fn rotated_siblings(
    path: &Path,
    after_ms: u64,
    held: &[(u64, u64)],
    known: &[FileIdentity],
) -> std::io::Result<Vec<Sibling>> {
    let Some(base) = path.file_name() else {
        return Ok(Vec::new());
    };
    let dir = folder_of(path);
    let base = base.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !rotated_name(&base, &name) || COMPRESSED.iter().any(|c| name.ends_with(c)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let mtime_ms = mtime_ms(&meta);
        if !meta.file_type().is_file()
            || mtime_ms <= after_ms
            || held.contains(&(meta.dev(), meta.ino()))
        {
            continue;
        }
        // Unreadable: left to the next start, not a stall.
        let Ok(file) = File::open(entry.path()) else {
            continue;
        };
        let read_before = known.iter().any(|k| {
            k.is_inode_of(&meta)
                && crc_at(&file, 0, u64::from(k.head_len)).ok().flatten() == Some(k.head_crc)
        });
        // An empty file holds nothing to read, and nothing that would tell
        // it from a new file on its inode at a later start.
        if !read_before && meta.len() > 0 {
            found.push((mtime_ms, entry.path(), file));
        }
    }
    found.sort_by_key(|(m, _, _)| *m);
    Ok(found.into_iter().map(|(_, p, f)| (p, f, None)).collect())
}

/// When `meta`'s file was last written, in Unix milliseconds.
fn mtime_ms(meta: &Metadata) -> u64 {
    (meta.mtime().max(0) as u64) * 1000 + meta.mtime_nsec().max(0) as u64 / 1_000_000
}

/// Compressed rotations (`.gz`, `.zst`) beside `path`, named like its
/// rotations, last written after `after_ms`, not `held`, whose unpacked
/// first bytes are those of none of `known`: a generation logrotate
/// compressed before logcatch ever saw it. Oldest first; one that cannot
/// be unpacked is passed (logged by the caller's next start).
fn compressed_siblings(
    path: &Path,
    after_ms: u64,
    held: &[(u64, u64)],
    known: &[FileIdentity],
) -> std::io::Result<Vec<(PathBuf, Codec)>> {
    let Some(base) = path.file_name() else {
        return Ok(Vec::new());
    };
    let base = base.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder_of(path))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(codec) = Codec::of(Path::new(&name)) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !rotated_name(&base, &name)
            || !meta.file_type().is_file()
            || mtime_ms(&meta) <= after_ms
            || held.contains(&(meta.dev(), meta.ino()))
        {
            continue;
        }
        // gzip still running: the plain file is there too, and is what a
        // scan reads (or has read).
        let plain = entry.path().with_extension("");
        if plain.exists() {
            continue;
        }
        let head = match unpacked_head(&entry.path(), codec) {
            Ok(head) if !head.is_empty() => head,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(compressed = %entry.path().display(), error = %e,
                    "cannot unpack a compressed rotation beside the file; it is not read");
                continue;
            }
        };
        let read_before = known.iter().any(|k| {
            k.head_len > 0
                && head.len() >= k.head_len as usize
                && crc32c::crc32c(&head[..k.head_len as usize]) == k.head_crc
        });
        if !read_before {
            found.push((mtime_ms(&meta), entry.path(), codec));
        }
    }
    found.sort_by_key(|(m, _, _)| *m);
    Ok(found.into_iter().map(|(_, p, c)| (p, c)).collect())
}
