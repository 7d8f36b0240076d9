//! compressed: owns finding a rotated file that logrotate compressed
//! (`compress` without `delaycompress`: `app.log.1` becomes `app.log.1.gz`
//! right after the rotation) and unpacking the part logcatch has not read.
//! When logcatch was behind (stopped, or down while the rotation ran), the
//! unread rest of the file exists only inside the `.gz`/`.zst`.
//!
//! A compressed sibling is the file a record describes when its unpacked
//! bytes have the record's head checksum, reach the record's offset, and
//! match the tail check before it ([`find_compressed`]). The rest is
//! unpacked into a scratch file under `data_dir` that is unlinked at once
//! (nothing is left behind by a crash), sparse up to the offset, so the
//! tailer reads it like any rotated file ([`Unpacked`]).
//!
//! A source whose path ends in `.gz` or `.zst` is read the same way, once:
//! unpacked ([`unpack`]) and read to its end, resumed after a restart at its
//! unpacked offset if the unpacked bytes before it still match.
//!
//! Invariants: the scratch file holds the unpacked bytes at their own
//! offsets (the head and everything from just before the record's offset
//! to the end); nothing else of it is ever read. A sibling is accepted only
//! if every check the record allows passed.
//!
//! Must never: write next to the logs, keep a scratch file on disk, or take
//! a compressed file for the record's file on its name alone.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::source::identity::{folder_of, HEAD_BYTES};
use crate::store::SourceRecord;

/// The suffixes unpacked, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    /// The codec a file name asks for, if any.
    pub fn of(path: &Path) -> Option<Codec> {
        let name = path.file_name()?.to_string_lossy();
        if name.ends_with(".gz") {
            Some(Codec::Gzip)
        } else if name.ends_with(".zst") {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    fn reader(self, file: File) -> io::Result<Box<dyn Read>> {
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file))),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        })
    }
}

/// The unread rest of a compressed rotated file, unpacked.
#[derive(Debug)]
pub struct Unpacked {
    /// The compressed file (for logs and `logcatch-ctl`).
    pub path: PathBuf,
    /// The scratch file: unpacked bytes at their own offsets, unlinked.
    pub file: File,
    /// Unpacked length of the whole file.
    pub size: u64,
    /// The compressed file's device and inode: what the unpacked file goes
    /// by in the source's record (the scratch file's own change with every
    /// unpacking).
    pub dev: u64,
    pub ino: u64,
}

/// Looks beside `path` for a `.gz` or `.zst` file named like its rotations
/// that holds the file `rec` describes, unchanged up to `rec.offset`, and
/// unpacks its rest into a scratch file in `scratch_dir`. Newest first; a
/// candidate that cannot be read or unpacked is skipped.
pub fn find_compressed(
    path: &Path,
    rec: &SourceRecord,
    scratch_dir: &Path,
) -> io::Result<Option<Unpacked>> {
    // A record with no first bytes (its file was empty) would match any
    // compressed file.
    if rec.identity.head_len == 0 {
        return Ok(None);
    }
    let Some(base) = path.file_name() else {
        return Ok(None);
    };
    let dir = folder_of(path);
    let base = base.to_string_lossy().into_owned();
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(codec) = Codec::of(Path::new(&name)) else {
            continue;
        };
        if !name.starts_with(&base) || name == base {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.file_type().is_file() && !meta.file_type().is_fifo() {
            candidates.push((meta.mtime(), entry.path(), codec));
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, candidate, codec) in candidates {
        match unpack_if_same(&candidate, codec, rec, scratch_dir) {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => {}
            Err(e) => {
                // Warned: the caller takes "not found" for the file gone
                // (a possible gap), so an error here must be seen.
                tracing::warn!(candidate = %candidate.display(), error = %e,
                    "cannot unpack a compressed rotation beside the file to look for the file's rest in it")
            }
        }
    }
    Ok(None)
}

/// The first unpacked bytes of `path` (at most [`HEAD_BYTES`]).
pub fn unpacked_head(path: &Path, codec: Codec) -> io::Result<Vec<u8>> {
    let mut reader = codec.reader(File::open(path)?)?;
    let mut head = vec![0u8; HEAD_BYTES as usize];
    let got = read_full(&mut reader, &mut head)?;
    head.truncate(got);
    Ok(head)
}

/// Unpacks all of `path` (a `.gz` or `.zst` source, read once).
pub fn unpack(path: &Path, codec: Codec, scratch_dir: &Path) -> io::Result<Unpacked> {
    let nothing_read = SourceRecord {
        path: String::new(),
        identity: crate::store::FileIdentity {
            head_crc: crc32c::crc32c(&[]),
            ..Default::default()
        },
        offset: 0,
        tail_len: 0,
        tail_crc: 0,
        lines: 0,
        bytes: 0,
        updated_ms: 0,
        seq: 0,
        draining: Vec::new(),
        finished: Vec::new(),
    };
    unpack_if_same(path, codec, &nothing_read, scratch_dir)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unpacking found nothing"))
}

/// Scratch files made by this process so far: part of their names.
static SCRATCH_COUNT: AtomicU64 = AtomicU64::new(0);

/// Unpacks `candidate` if it holds `rec`'s file; `None` if it does not.
pub fn unpack_if_same(
    candidate: &Path,
    codec: Codec,
    rec: &SourceRecord,
    scratch_dir: &Path,
) -> io::Result<Option<Unpacked>> {
    let packed = File::open(candidate)?;
    let packed_meta = packed.metadata()?;
    let mut reader = codec.reader(packed)?;
    // The first HEAD_BYTES are kept whatever the record's head covers: the
    // scratch file's own identity is taken from them.
    let head_len = rec.identity.head_len as usize;
    let mut head = vec![0u8; (HEAD_BYTES as usize).max(head_len)];
    let got = read_full(&mut reader, &mut head)?;
    head.truncate(got);
    if got < head_len || crc32c::crc32c(&head[..head_len]) != rec.identity.head_crc {
        return Ok(None);
    }
    // Bytes kept from `keep_from` on: the tail check's and the unread rest.
    let keep_from = rec.offset - u64::from(rec.tail_len).min(rec.offset);
    std::fs::create_dir_all(scratch_dir)?;
    // Every source's tailer unpacks here, several at once at a start: the
    // process id and the time alone gave two of them the same name in the
    // same millisecond, and the second one's `create_new` failed (its
    // caller took the compressed file for gone: the rotation soak lost a
    // `delaycompress` file's rest so). The count makes the name unique.
    let scratch_path = scratch_dir.join(format!(
        "unpacked-{}-{}-{}",
        std::process::id(),
        crate::runtime::now_ms(),
        SCRATCH_COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let scratch = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&scratch_path)?;
    // Unlinked at once: a crash leaves nothing behind.
    std::fs::remove_file(&scratch_path)?;
    scratch.write_all_at(&head, 0)?;
    let mut at = got as u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let end = at + n as u64;
        if end > keep_from {
            let skip = keep_from.saturating_sub(at) as usize;
            scratch.write_all_at(&buf[skip..n], at + skip as u64)?;
        }
        at = end;
    }
    if at < rec.offset {
        return Ok(None);
    }
    if rec.tail_len > 0
        && crate::source::identity::crc_at(&scratch, keep_from, u64::from(rec.tail_len))?
            != Some(rec.tail_crc)
    {
        return Ok(None);
    }
    Ok(Some(Unpacked {
        path: candidate.to_path_buf(),
        file: scratch,
        size: at,
        dev: packed_meta.dev(),
        ino: packed_meta.ino(),
    }))
}

/// Reads until `buf` is full or the stream ends; how many bytes were read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::identity::{identity_of, tail_check};
    use std::io::Write;

    /// The record of a tailer that read `bytes[..offset]` of a file.
    fn record(bytes: &[u8], offset: u64) -> SourceRecord {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        let m = f.metadata().unwrap();
        let identity = identity_of(&f, m.len(), m.dev(), m.ino()).unwrap();
        let (tail_len, tail_crc) = tail_check(&bytes[..offset as usize]);
        SourceRecord {
            path: "/logs/app.log".into(),
            identity,
            offset,
            tail_len,
            tail_crc,
            lines: 0,
            bytes: 0,
            updated_ms: 0,
            seq: 0,
            draining: Vec::new(),
            finished: Vec::new(),
        }
    }

    fn lines(from: u32, to: u32) -> Vec<u8> {
        (from..to)
            .flat_map(|i| format!("line {i:06} of the rotated file\n").into_bytes())
            .collect()
    }

    fn gzip(bytes: &[u8], to: &Path) {
        let mut e =
            flate2::write::GzEncoder::new(File::create(to).unwrap(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap();
    }

    #[test]
    fn the_unread_rest_of_a_gzipped_rotation_is_unpacked_at_its_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let all = lines(0, 5000);
        let offset = lines(0, 3000).len() as u64;
        let rec = record(&all, offset);
        gzip(&all, &logs.join("app.log.1.gz"));
        // Another rotation's .gz: a different head.
        gzip(&lines(9000, 9100), &logs.join("app.log.2.gz"));
        let scratch = dir.path().join("data/unpacked");
        let u = find_compressed(&logs.join("app.log"), &rec, &scratch)
            .unwrap()
            .expect("found");
        assert!(u.path.ends_with("app.log.1.gz"));
        assert_eq!(u.size, all.len() as u64);
        let mut rest = vec![0u8; all.len() - offset as usize];
        u.file.read_exact_at(&mut rest, offset).unwrap();
        assert_eq!(rest, &all[offset as usize..]);
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "the scratch file is unlinked"
        );
    }

    #[test]
    fn zstd_rotations_are_unpacked_too() {
        let dir = tempfile::tempdir().unwrap();
        let all = lines(0, 100);
        let rec = record(&all, 40 * 30);
        let packed = zstd::stream::encode_all(&all[..], 3).unwrap();
        std::fs::write(dir.path().join("app.log-20261203.zst"), packed).unwrap();
        let u = find_compressed(&dir.path().join("app.log"), &rec, &dir.path().join("s"))
            .unwrap()
            .expect("found");
        assert_eq!(u.size, all.len() as u64);
    }

    #[test]
    fn a_compressed_file_shorter_than_the_offset_or_rewritten_before_it_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let all = lines(0, 100);
        let rec = record(&all, all.len() as u64 - 10);
        // Shorter: an earlier copy of the file.
        gzip(&all[..all.len() - 100], &dir.path().join("app.log.1.gz"));
        let mut changed = all.clone();
        let at = all.len() - 40;
        changed[at] = b'X';
        gzip(&changed, &dir.path().join("app.log.2.gz"));
        let got =
            find_compressed(&dir.path().join("app.log"), &rec, &dir.path().join("s")).unwrap();
        assert!(got.is_none(), "{got:?}");
    }

    /// Every source's tailer unpacks into the same scratch folder, several
    /// at once at a start: a scratch name another unpacking holds at that
    /// moment (the same process, the same millisecond) must not make this
    /// one fail, which its caller would take for "no compressed copy" (the
    /// rotation soak lost the unread rest of a `delaycompress` file so).
    /// The other unpackings are stood in for by files holding the names
    /// the next seconds would give.
    #[test]
    fn an_unpacking_beside_another_in_the_same_millisecond_finds_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let all = lines(0, 100);
        let rec = record(&all, 40 * 30);
        gzip(&all, &dir.path().join("app.log.1.gz"));
        let scratch = dir.path().join("s");
        std::fs::create_dir(&scratch).unwrap();
        let now = crate::runtime::now_ms();
        for ms in now..now + 5_000 {
            File::create(scratch.join(format!("unpacked-{}-{ms}", std::process::id()))).unwrap();
        }
        let u = find_compressed(&dir.path().join("app.log"), &rec, &scratch)
            .unwrap()
            .expect("found, whatever other unpackings hold");
        assert_eq!(u.size, all.len() as u64);
    }
}
