//! spool: owns the durable on-disk queue between the tailers and the
//! forwarder: numbered segment files under `data_dir/spool`, each a sequence
//! of checksummed frames, one frame per tailer batch.
//!
//! Frame layout: `[u32 LE payload length][u32 LE crc32c(length bytes ++
//! payload)][payload = bincode(SpoolBatch)]`. The length is inside the
//! checksum so that a zero-filled tail (power loss) never reads as a frame.
//!
//! Invariants (the crash-safety argument, relied on by
//! [`tailer`](crate::source::tailer) and [`forwarder`](crate::kafka::forwarder)):
//! 1. A batch is written and (with `fsync: batch`) fdatasync'd *before* its
//!    source's offset is written to the store, and before the reader may see
//!    it (`SpoolState::durable` only moves after the sync). So an offset in
//!    the store never covers a line that is not in the spool.
//! 2. Offsets are written to sled without waiting for sled's flush, because
//!    the spool itself is the log: every batch carries its source's identity
//!    and end offset and a commit sequence number. At open, the newest
//!    segment is scanned and any batch newer than the store's record wins
//!    ([`Recovery`]). A segment is sealed only after
//!    [`Store::flush`](crate::store::Store::flush), so every offset covered
//!    by a sealed segment is durable in sled and only the newest segment
//!    needs scanning.
//! 3. A segment file is deleted only when the forwarder's durable cursor is
//!    past it, i.e. when Kafka acknowledged every line in it.
//! 4. Segments are append-only; a new segment is started at every open, so
//!    a crash can only leave a torn frame at the end of the newest segment.
//!    It is cut off at open (its offsets were never committed).
//!
//! Must never: drop a batch it accepted (a failed write is rolled back and
//! retried, e.g. on a full disk), or hand the reader bytes that are not yet
//! durable.
//!
//! Layout: `frame.rs` encodes and decodes a frame ([`encode_frame`],
//! [`decode_frame`], [`SpoolBatch`]); `writer.rs` is the single writer of the
//! open segment (group commit, rolling, backpressure:
//! [`Spool::spawn_writer`], [`WriterMsg`]); `reader.rs` is the forwarder's
//! sequential reader ([`SpoolReader`]: in-memory hot frames, skipping
//! damage); this file opens the spool (recovery), keeps the state the
//! writer and the readers share, and deletes delivered segments.

mod frame;
mod reader;
mod writer;

pub use frame::{decode_frame, encode_frame, FrameFault, LineRef, SpoolBatch, MAX_FRAME};
pub use reader::{Frame, ReadOutcome, SpoolReader};
pub use writer::WriterMsg;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::SpoolConfig;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool: cannot encode batch of source `{source_name}`: {message}")]
    Encode {
        source_name: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A place in the spool: segment id and byte position in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Position {
    pub segment: u64,
    pub pos: u64,
}

/// The forwarder's durable progress: every line before it is acknowledged
/// by Kafka. `lines_done` leading lines of the frame at `position` are too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpoolCursor {
    pub segment: u64,
    pub position: u64,
    pub lines_done: u32,
}

/// What the writer and the readers share, behind [`Shared::state`].
#[derive(Debug, Default)]
struct SpoolState {
    /// End of the durable bytes; always in the open (newest) segment.
    durable: Position,
    /// Bytes on disk per segment id.
    sizes: BTreeMap<u64, u64>,
    /// The writer is waiting for the forwarder to free space.
    paused: bool,
    /// The writer has finished; nothing more will become durable.
    closed: bool,
    damaged_frames: u64,
    damaged_bytes: u64,
    /// Sealed segments the reader found missing where it had to read.
    missing_segments: u64,
    /// Every segment below this id was deleted by
    /// [`Spool::release_before`] (delivered): not missing.
    released_below: u64,
    /// The newest durable frames, kept in memory for the reader.
    hot: reader::HotFrames,
}

struct Shared {
    state: Mutex<SpoolState>,
    /// Notified whenever `state` changes: new durable bytes, a deleted
    /// segment, the writer closing.
    changed: Condvar,
}

/// What [`Spool::open`] found in the newest segment: the last batch of each
/// file of each source (a source reads a rotated file and its new file at
/// once), to be merged into the store (invariant 2).
#[derive(Debug, Default)]
pub struct Recovery {
    /// By source, device and inode.
    pub last_batches: HashMap<(String, u64, u64), SpoolBatch>,
    pub max_seq: u64,
    pub torn_bytes: u64,
}

/// A summary for `logcatch-ctl queue` and logs.
#[derive(Debug, Clone, Serialize)]
pub struct SpoolStats {
    pub segments: usize,
    pub bytes: u64,
    pub paused: bool,
    pub damaged_frames: u64,
    pub damaged_bytes: u64,
    /// Segments the reader found missing where it had to read (see
    /// [`reader`]): their undelivered lines are lost from the spool.
    pub missing_segments: u64,
}

/// Handle to the spool directory, shared by the writer and the reader.
#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    shared: Arc<Shared>,
}

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Segment ids present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl Spool {
    /// Opens the spool in `dir`: cuts a torn tail off the newest segment,
    /// collects its batches for recovery, and starts a new open segment.
    pub fn open(dir: &Path, config: SpoolConfig) -> Result<(Spool, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        // The spool's own entry in data_dir, on the first run.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let ids = list_segments(dir)?;
        // Each open scans the newest segment and starts a new one, so no
        // segment is scanned twice (a record forgotten with `logcatch-ctl
        // forget` is not brought back by a second scan).
        let open_id = ids.last().map_or(1, |i| i + 1);
        let recovery = match ids.last() {
            Some(&newest) => recover(&segment_path(dir, newest))?,
            None => Recovery::default(),
        };
        // Sizes after the recovery, which may have cut the newest segment.
        let mut sizes = BTreeMap::new();
        for &id in &ids {
            let p = segment_path(dir, id);
            let len = std::fs::metadata(&p).map_err(io_err(&p))?.len();
            sizes.insert(id, len);
        }
        let p = segment_path(dir, open_id);
        File::create(&p).map_err(io_err(&p))?;
        sync_dir(dir)?;
        sizes.insert(open_id, 0);
        let state = SpoolState {
            durable: Position {
                segment: open_id,
                pos: 0,
            },
            sizes,
            ..SpoolState::default()
        };
        let spool = Spool {
            dir: dir.to_path_buf(),
            config,
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
        };
        Ok((spool, recovery))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state(&self) -> MutexGuard<'_, SpoolState> {
        // A panic while holding this lock is a bug; the state is plain data
        // and stays usable, so recover the guard rather than cascade.
        crate::runtime::lock(&self.shared.state)
    }

    /// Releases `state` until it changes or `timeout` passes, then takes it
    /// again (poison-tolerant, like [`Spool::state`]).
    fn wait_for_change<'a>(
        &'a self,
        state: MutexGuard<'a, SpoolState>,
        timeout: Duration,
    ) -> MutexGuard<'a, SpoolState> {
        self.shared
            .changed
            .wait_timeout(state, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0)
    }

    /// Wakes every thread in [`Spool::wait_for_change`].
    fn notify_changed(&self) {
        self.shared.changed.notify_all();
    }

    pub fn stats(&self) -> SpoolStats {
        let s = self.state();
        SpoolStats {
            segments: s.sizes.len(),
            bytes: s.sizes.values().sum(),
            paused: s.paused,
            damaged_frames: s.damaged_frames,
            damaged_bytes: s.damaged_bytes,
            missing_segments: s.missing_segments,
        }
    }

    /// (segment id, bytes on disk) of every segment, as the writer and
    /// the deletions keep them (no directory listing).
    pub fn segment_sizes(&self) -> Vec<(u64, u64)> {
        self.state()
            .sizes
            .iter()
            .map(|(id, len)| (*id, *len))
            .collect()
    }

    pub fn durable_end(&self) -> Position {
        self.state().durable
    }

    /// `c`, or the start of the next segment when `c` is at the very end of
    /// a sealed segment (the next one exists: sealing creates it). A stored
    /// cursor then never points into a segment that is deleted, so a
    /// stored cursor whose segment is missing always means lost lines (see
    /// [`reader`]), never "delivered, then deleted".
    pub fn normalize(&self, c: SpoolCursor) -> SpoolCursor {
        let s = self.state();
        let at_sealed_end = c.segment < s.durable.segment
            && s.sizes
                .get(&c.segment)
                .is_some_and(|&size| c.position >= size);
        if at_sealed_end {
            SpoolCursor {
                segment: c.segment + 1,
                position: 0,
                lines_done: 0,
            }
        } else {
            c
        }
    }

    /// Deletes every segment before `cursor.segment` (invariant 3: the
    /// caller made `cursor` durable first) and wakes a paused writer.
    /// Never the cursor's own segment, even at its end: a stored cursor
    /// must not point into a deleted segment. A cursor at a sealed
    /// segment's end is stored as the next one's start instead
    /// ([`Spool::normalize`]), which releases it.
    pub fn release_before(&self, cursor: &SpoolCursor) -> Result<(), SpoolError> {
        let doomed: Vec<u64> = {
            let s = self.state();
            s.sizes
                .keys()
                .filter(|id| **id < s.durable.segment && **id < cursor.segment)
                .copied()
                .collect()
        };
        for id in doomed {
            let p = segment_path(&self.dir, id);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
            tracing::debug!(segment = %p.display(), "deleted delivered spool segment");
            let mut s = self.state();
            s.sizes.remove(&id);
            s.released_below = s.released_below.max(id + 1);
        }
        self.notify_changed();
        Ok(())
    }
}

/// Scans the newest segment at `path` for [`Recovery`] (invariant 2) and
/// cuts a torn frame off its end (invariant 4).
fn recover(path: &Path) -> Result<Recovery, SpoolError> {
    let mut recovery = Recovery::default();
    // What the scan finds becomes durable offsets: it must be on disk
    // first, not only in the page cache (a crash between a frame's write
    // and its fsync leaves it there; a power cut would then drop it).
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))?;
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let mut at = 0usize;
    while at < bytes.len() {
        match decode_frame(&bytes[at..]) {
            Ok((batch, n)) => {
                recovery.max_seq = recovery.max_seq.max(batch.seq);
                let key = (batch.source.clone(), batch.identity.dev, batch.identity.ino);
                recovery.last_batches.insert(key, batch);
                at += n as usize;
            }
            Err(FrameFault::Incomplete) => {
                // Invariant 4: written but never synced nor committed.
                recovery.torn_bytes = (bytes.len() - at) as u64;
                tracing::warn!(segment = %path.display(), at, bytes = recovery.torn_bytes,
                    "cutting off a torn frame at the end of the newest spool segment: normal after a crash during a write (its lines were never committed and are read again); if the file was cut by other damage, the lines in those bytes are lost");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(at as u64).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
                break;
            }
            Err(FrameFault::Damaged(why)) => {
                tracing::error!(segment = %path.display(), at, %why,
                    "damaged frame in the newest spool segment; recovery stops here and the reader will skip it");
                break;
            }
        }
    }
    Ok(recovery)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
pub(super) mod tests {
    use super::frame::tests::batch;
    use super::*;
    use crate::config::FsyncPolicy;
    use crate::store::Store;
    use proptest::prelude::*;
    use tokio_util::sync::CancellationToken;

    pub(in crate::spool) fn cfg(max: u64, seg: u64) -> SpoolConfig {
        SpoolConfig {
            max_bytes: max,
            segment_bytes: seg,
            fsync: FsyncPolicy::Batch,
        }
    }

    pub(in crate::spool) fn write_all(spool: &Spool, store: &Store, batches: Vec<SpoolBatch>) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let h = spool
            .spawn_writer(store.clone(), rx, 1, CancellationToken::new())
            .unwrap();
        for b in batches {
            tx.blocking_send(WriterMsg::Batch(b)).unwrap();
        }
        drop(tx);
        h.join().unwrap().unwrap();
    }

    /// A closed spool whose first segment holds two frames of source `a`,
    /// "one" then "two"; the temp dir (keep it alive), store, spool dir.
    pub(in crate::spool) fn spool_with_one_and_two() -> (tempfile::TempDir, Store, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sdir = dir.path().join("spool");
        let (spool, _) = Spool::open(&sdir, cfg(1 << 20, 1 << 20)).unwrap();
        write_all(
            &spool,
            &store,
            vec![batch("a", &[b"one"], 4), batch("a", &[b"two"], 8)],
        );
        drop(spool);
        (dir, store, sdir)
    }

    #[test]
    fn write_read_recover_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sdir = dir.path().join("spool");
        let (spool, rec) = Spool::open(&sdir, cfg(1 << 20, 4096)).unwrap();
        assert!(rec.last_batches.is_empty());
        let big = vec![b'x'; 1000];
        let batches: Vec<_> = (0..20)
            .map(|i| batch("a", &[&big, format!("n{i}").as_bytes()], (i + 1) * 100))
            .collect();
        write_all(&spool, &store, batches);
        // The store holds the last batch's offset.
        assert_eq!(store.source("a").unwrap().unwrap().offset, 2000);
        assert!(list_segments(&sdir).unwrap().len() > 2, "rolled segments");

        let mut r = spool.reader(None);
        let mut seen = Vec::new();
        let mut last_next = None;
        while let ReadOutcome::Frame(f) = r.next(Duration::from_millis(10)).unwrap() {
            seen.push(String::from_utf8(f.batch.iter_lines().nth(1).unwrap().1.to_vec()).unwrap());
            last_next = Some(f.next);
        }
        assert_eq!(seen, (0..20).map(|i| format!("n{i}")).collect::<Vec<_>>());
        let next = last_next.unwrap();
        spool
            .release_before(&SpoolCursor {
                segment: next.segment,
                position: next.pos,
                lines_done: 0,
            })
            .unwrap();
        assert_eq!(list_segments(&sdir).unwrap(), vec![next.segment]);
        drop(spool);

        // Reopen: the newest segment's batches are recovered.
        let (_spool, rec) = Spool::open(&sdir, cfg(1 << 20, 4096)).unwrap();
        assert_eq!(rec.last_batches[&("a".to_string(), 0, 0)].end_offset, 2000);
    }

    /// A spool of several sealed segments (20 frames of ~1 KB, 4 KiB
    /// segments), written and closed; reading starts from the beginning.
    fn rolled_spool() -> (tempfile::TempDir, Spool, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sdir = dir.path().join("spool");
        let (spool, _) = Spool::open(&sdir, cfg(1 << 20, 4096)).unwrap();
        let big = vec![b'x'; 1000];
        let batches: Vec<_> = (0..20)
            .map(|i| batch("a", &[&big, format!("n{i}").as_bytes()], (i + 1) * 100))
            .collect();
        write_all(&spool, &store, batches);
        (dir, spool, sdir)
    }

    /// A cursor at the very end of a sealed segment is stored as the next
    /// segment's start, so that a stored cursor never points into a
    /// segment that is deleted; any other cursor stays as it is.
    #[test]
    fn a_cursor_at_a_sealed_segments_end_becomes_the_next_segments_start() {
        let (_dir, spool, _sdir) = rolled_spool();
        let sizes: BTreeMap<u64, u64> = spool.segment_sizes().into_iter().collect();
        let end_of_1 = SpoolCursor {
            segment: 1,
            position: sizes[&1],
            lines_done: 0,
        };
        let start_of_2 = SpoolCursor {
            segment: 2,
            position: 0,
            lines_done: 0,
        };
        assert_eq!(spool.normalize(end_of_1), start_of_2);
        let inside = SpoolCursor {
            segment: 1,
            position: 10,
            lines_done: 1,
        };
        assert_eq!(spool.normalize(inside), inside);
        let open = spool.durable_end();
        let at_open_end = SpoolCursor {
            segment: open.segment,
            position: open.pos,
            lines_done: 0,
        };
        assert_eq!(spool.normalize(at_open_end), at_open_end);
    }

    /// A sealed segment missing where the reader must read (deleted by
    /// hand here) is counted, and the reader goes on with the next one:
    /// the frames after it are all read.
    #[test]
    fn a_missing_segment_is_counted_and_the_reader_goes_on() {
        let (_dir, spool, sdir) = rolled_spool();
        drop(spool);
        let ids = list_segments(&sdir).unwrap();
        assert!(ids.len() > 3, "{ids:?}");
        std::fs::remove_file(segment_path(&sdir, 2)).unwrap();
        // Reopened, so that frames are read from the files.
        let (spool, _) = Spool::open(&sdir, cfg(1 << 20, 4096)).unwrap();
        let mut r = spool.reader(None);
        let mut seen = Vec::new();
        while let ReadOutcome::Frame(f) = r.next(Duration::from_millis(10)).unwrap() {
            seen.push(f.at.segment);
        }
        assert!(!seen.contains(&2));
        assert!(seen.contains(&1) && seen.contains(&3), "{seen:?}");
        assert_eq!(spool.stats().missing_segments, 1);
    }

    #[test]
    fn torn_tail_is_cut_at_open_and_the_batches_before_it_recovered() {
        let (_dir, _store, sdir) = spool_with_one_and_two();
        let seg = segment_path(&sdir, 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let good_len = bytes.len() as u64;
        bytes.extend_from_slice(&[5, 0, 0, 0, 1, 2]); // a torn header + payload
        std::fs::write(&seg, &bytes).unwrap();
        let (spool, rec) = Spool::open(&sdir, cfg(1 << 20, 1 << 20)).unwrap();
        assert_eq!(rec.torn_bytes, 6);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
        assert_eq!(rec.last_batches[&("a".to_string(), 0, 0)].end_offset, 8);
        // The sizes the spool keeps are those after the cut.
        assert!(spool.segment_sizes().contains(&(1, good_len)));
    }

    /// One step of the spool model test.
    #[derive(Debug, Clone)]
    enum Step {
        /// A writer session spools these batches, each given as its
        /// source (an index) and the lengths of its lines (none: a batch
        /// that only commits a position).
        Write(Vec<(usize, Vec<usize>)>),
        /// A restart: the spool is dropped and opened again.
        Reopen,
        /// The forwarder reads everything and delivers it: the segments
        /// before its cursor are released.
        Deliver,
    }

    fn step() -> impl Strategy<Value = Step> {
        let lines = proptest::collection::vec(0usize..700, 0..4);
        let batches = proptest::collection::vec((0usize..3, lines), 1..6);
        prop_oneof![
            3 => batches.prop_map(Step::Write),
            1 => Just(Step::Reopen),
            1 => Just(Step::Deliver),
        ]
    }

    /// What the spool must hold, kept as plainly as possible.
    #[derive(Default)]
    struct Model {
        /// Every batch with lines, in the order sent (each writes a frame).
        framed: Vec<SpoolBatch>,
        /// How many of `framed` the forwarder has delivered.
        delivered: usize,
        /// Framed batches sent since the spool was last opened.
        since_open: Vec<SpoolBatch>,
        /// The last batch sent per source, with its lines and bytes so far.
        committed: HashMap<String, (SpoolBatch, u64, u64)>,
        next_seq: u64,
        /// Bytes of each source's file so far.
        file_ends: HashMap<String, u64>,
        cursor: Option<SpoolCursor>,
    }

    impl Model {
        /// The batches of a `Step::Write`, numbered as the writer will.
        fn batches(&mut self, specs: &[(usize, Vec<usize>)]) -> Vec<SpoolBatch> {
            let mut out = Vec::new();
            for (source, lens) in specs {
                let source = format!("s{source}");
                let seq = self.next_seq + out.len() as u64;
                let texts: Vec<Vec<u8>> = lens
                    .iter()
                    .enumerate()
                    .map(|(i, len)| {
                        let mut l = format!("{source} #{seq} line {i} ").into_bytes();
                        l.resize(l.len() + len, b'.');
                        l
                    })
                    .collect();
                let refs: Vec<&[u8]> = texts.iter().map(|l| l.as_slice()).collect();
                let end = self.file_ends.entry(source.clone()).or_default();
                *end += texts.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
                let mut b = batch(&source, &refs, *end);
                b.seq = seq;
                out.push(b);
            }
            out
        }

        fn sent(&mut self, batches: &[SpoolBatch]) {
            for b in batches {
                self.next_seq = b.seq + 1;
                let (lines, bytes) = self
                    .committed
                    .get(&b.source)
                    .map(|(_, l, n)| (*l, *n))
                    .unwrap_or((0, 0));
                let total = (
                    b.clone(),
                    lines + b.lines.len() as u64,
                    bytes + b.data.len() as u64,
                );
                self.committed.insert(b.source.clone(), total);
                if !b.lines.is_empty() {
                    self.framed.push(b.clone());
                    self.since_open.push(b.clone());
                }
            }
        }
    }

    /// A batch as the model knows it: without the writer's time stamp.
    fn unstamped(b: &SpoolBatch) -> SpoolBatch {
        SpoolBatch {
            spooled_ms: 0,
            ..b.clone()
        }
    }

    fn last_per_source(batches: &[SpoolBatch]) -> HashMap<String, SpoolBatch> {
        batches
            .iter()
            .map(|b| (b.source.clone(), unstamped(b)))
            .collect()
    }

    fn check_store(store: &Store, model: &Model) -> Result<(), TestCaseError> {
        for (source, (last, lines, bytes)) in &model.committed {
            let rec = store.source(source).unwrap().unwrap();
            prop_assert_eq!(rec.offset, last.end_offset, "offset of {}", source);
            prop_assert_eq!(rec.seq, last.seq, "seq of {}", source);
            prop_assert_eq!((rec.lines, rec.bytes), (*lines, *bytes), "{}", source);
        }
        Ok(())
    }

    /// After a reopen: the recovery reports, per source, the last batch of
    /// the newest segment, which holds the latest frames sent since the
    /// previous open (all of them unless a segment filled up).
    fn check_recovery(rec: &Recovery, model: &Model, rolls: bool) -> Result<(), TestCaseError> {
        prop_assert_eq!(rec.torn_bytes, 0);
        let got: HashMap<String, SpoolBatch> = rec
            .last_batches
            .iter()
            // The model's batches all have the default identity: one file
            // per source.
            .map(|((s, _, _), b)| (s.clone(), unstamped(b)))
            .collect();
        let sent = &model.since_open;
        let matches = |k: usize| last_per_source(&sent[k..]) == got;
        if rolls {
            prop_assert!((0..=sent.len()).any(matches), "{:?}", got);
        } else {
            prop_assert!(matches(0), "{:?}", got);
        }
        let max_seq = got.values().map(|b| b.seq).max().unwrap_or(0);
        prop_assert_eq!(rec.max_seq, max_seq);
        Ok(())
    }

    /// Reads everything after the model's cursor: exactly the frames not
    /// yet delivered, once each, in order. Then releases up to there.
    fn deliver(spool: &Spool, sdir: &Path, model: &mut Model) -> Result<(), TestCaseError> {
        let mut r = spool.reader(model.cursor);
        let mut got = Vec::new();
        while let ReadOutcome::Frame(f) = r.next(Duration::from_millis(10)).unwrap() {
            got.push(unstamped(&f.batch));
            model.cursor = Some(SpoolCursor {
                segment: f.next.segment,
                position: f.next.pos,
                lines_done: 0,
            });
        }
        let want: Vec<SpoolBatch> = model.framed[model.delivered..]
            .iter()
            .map(unstamped)
            .collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(spool.stats().damaged_frames, 0);
        model.delivered = model.framed.len();
        if let Some(c) = model.cursor {
            spool.release_before(&c).unwrap();
            let left = list_segments(sdir).unwrap();
            prop_assert!(left.iter().all(|id| *id >= c.segment), "{:?}", left);
        }
        Ok(())
    }

    /// The writer of one open spool, as the daemon runs it.
    struct WriterSession {
        tx: tokio::sync::mpsc::Sender<WriterMsg>,
        thread: std::thread::JoinHandle<Result<(), SpoolError>>,
    }

    impl WriterSession {
        fn start(spool: &Spool, store: &Store, first_seq: u64) -> WriterSession {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let thread = spool
                .spawn_writer(store.clone(), rx, first_seq, CancellationToken::new())
                .unwrap();
            WriterSession { tx, thread }
        }

        /// Sends `batches` and waits until they are durable and committed.
        fn write(&self, batches: Vec<SpoolBatch>) {
            for b in batches {
                self.tx.blocking_send(WriterMsg::Batch(b)).unwrap();
            }
            let (done, wait) = tokio::sync::oneshot::channel();
            self.tx.blocking_send(WriterMsg::Sync(done)).unwrap();
            wait.blocking_recv().unwrap();
        }

        fn end(self) {
            drop(self.tx);
            self.thread.join().unwrap().unwrap();
        }
    }

    fn run_model(steps: Vec<Step>, rolls: bool) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sdir = dir.path().join("spool");
        let config = cfg(1 << 30, if rolls { 2048 } else { 1 << 20 });
        let (mut spool, rec) = Spool::open(&sdir, config.clone()).unwrap();
        prop_assert!(rec.last_batches.is_empty());
        let mut model = Model {
            next_seq: 1,
            ..Model::default()
        };
        let mut writer = WriterSession::start(&spool, &store, model.next_seq);
        for step in steps.into_iter().chain([Step::Deliver]) {
            match step {
                Step::Write(specs) => {
                    let batches = model.batches(&specs);
                    model.sent(&batches);
                    writer.write(batches);
                    check_store(&store, &model)?;
                }
                Step::Reopen => {
                    writer.end();
                    drop(spool);
                    let (reopened, rec) = Spool::open(&sdir, config.clone()).unwrap();
                    spool = reopened;
                    check_recovery(&rec, &model, rolls)?;
                    model.since_open.clear();
                    writer = WriterSession::start(&spool, &store, model.next_seq);
                }
                Step::Deliver => deliver(&spool, &sdir, &mut model)?,
            }
        }
        writer.end();
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Batches sent through the writer, across restarts and
        /// deliveries, are read back once each and in order; the store
        /// holds each source's last position; a reopen recovers the last
        /// batch per source.
        #[test]
        fn spool_matches_a_model_of_sent_batches_across_restarts(
            steps in proptest::collection::vec(step(), 1..8),
            rolls in any::<bool>(),
        ) {
            run_model(steps, rolls)?;
        }
    }
}
