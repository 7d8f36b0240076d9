//! reader: owns the forwarder's way through the spool: [`SpoolReader`]
//! hands out durable frames in order, from memory while the forwarder
//! keeps up ([`HotFrames`]) and from the segment files otherwise.
//!
//! Invariants: a reader never goes past the durable end
//! (`SpoolState::durable`), so it only sees synced bytes (spool invariant
//! 1); a damaged frame is counted, logged and skipped to the next place
//! where a whole valid frame starts (or the segment's end), never handed
//! out.
//!
//! Must never: write to a segment, or stop at damage: the lines after it
//! are still delivered.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{find_frame, FrameHeader};
use super::{
    io_err, segment_path, FrameFault, Position, Spool, SpoolBatch, SpoolCursor, SpoolError,
};

/// How many line bytes of recent frames stay in memory for the reader.
const HOT_BYTES: usize = 4 << 20;

/// One frame read from the spool.
#[derive(Debug)]
pub struct Frame {
    pub at: Position,
    pub next: Position,
    pub batch: Arc<SpoolBatch>,
}

pub enum ReadOutcome {
    Frame(Box<Frame>),
    /// Nothing new within the wait.
    Idle,
    /// The writer has finished and everything durable was read.
    Closed,
}

/// The newest durable frames, kept in memory so that a forwarder that
/// keeps up does not read back what was just written. Exact copies of
/// what is on disk; evicted oldest first past `HOT_BYTES`.
#[derive(Debug, Default)]
pub(super) struct HotFrames {
    frames: VecDeque<Frame>,
    /// Line bytes of `frames`.
    bytes: usize,
}

impl HotFrames {
    /// Keeps a frame that was just made durable, evicting the oldest ones
    /// past `HOT_BYTES`.
    pub(super) fn push(&mut self, frame: Frame) {
        self.bytes += frame.batch.data.len();
        self.frames.push_back(frame);
        while self.bytes > HOT_BYTES {
            if self.pop_front().is_none() {
                break;
            }
        }
    }

    /// The frame starting at `here`, if it is in memory; frames before
    /// `here` are dropped (the reader is past them).
    fn take_at(&mut self, here: Position) -> Option<Frame> {
        while self.frames.front().is_some_and(|f| f.at < here) {
            self.pop_front();
        }
        if self.frames.front().is_some_and(|f| f.at == here) {
            return self.pop_front();
        }
        None
    }

    fn pop_front(&mut self) -> Option<Frame> {
        let f = self.frames.pop_front()?;
        self.bytes -= f.batch.data.len();
        Some(f)
    }
}

impl Spool {
    /// A reader positioned at `cursor` (or the oldest segment).
    pub fn reader(&self, cursor: Option<SpoolCursor>) -> SpoolReader {
        let (segment, pos) = match cursor {
            Some(c) => (c.segment, c.position),
            None => (self.state().sizes.keys().next().copied().unwrap_or(1), 0),
        };
        SpoolReader {
            spool: self.clone(),
            segment,
            pos,
            file: None,
        }
    }
}

/// Sequential reader over durable frames, used by the forwarder.
pub struct SpoolReader {
    spool: Spool,
    segment: u64,
    pos: u64,
    file: Option<(u64, BufReader<File>)>,
}

impl SpoolReader {
    pub fn position(&self) -> Position {
        Position {
            segment: self.segment,
            pos: self.pos,
        }
    }

    /// Reads the next durable frame, waiting up to `wait` for one.
    pub fn next(&mut self, wait: Duration) -> Result<ReadOutcome, SpoolError> {
        let deadline = Instant::now() + wait;
        loop {
            let Some((durable, closed)) = self.wait_for_durable(deadline) else {
                return Ok(ReadOutcome::Idle);
            };
            if self.segment > durable.segment {
                // A cursor from a segment that was never written (an empty
                // newest segment deleted by hand): start at the open one.
                self.segment = durable.segment;
                self.pos = 0;
                self.file = None;
            }
            if self.segment == durable.segment && self.pos >= durable.pos {
                if closed {
                    return Ok(ReadOutcome::Closed);
                }
                continue;
            }
            if let Some(frame) = self.take_hot() {
                return Ok(ReadOutcome::Frame(Box::new(frame)));
            }
            let path = segment_path(&self.spool.dir, self.segment);
            let Some(limit) = self.readable_end(&path, durable)? else {
                self.report_missing(&path);
                self.move_to_next_segment();
                continue;
            };
            if self.pos >= limit {
                self.move_to_next_segment();
                continue;
            }
            match self.read_frame(&path, limit)? {
                Ok((batch, len)) => {
                    let at = self.position();
                    self.pos += len;
                    return Ok(ReadOutcome::Frame(Box::new(Frame {
                        at,
                        next: self.position(),
                        batch: Arc::new(batch),
                    })));
                }
                Err(fault) => self.skip_damage(fault, &path, limit, durable)?,
            }
        }
    }

    /// Waits until there are durable bytes past the reader, or the writer
    /// closed, or `deadline` passed (`None`). Returns the durable end and
    /// whether the writer closed.
    fn wait_for_durable(&self, deadline: Instant) -> Option<(Position, bool)> {
        let mut s = self.spool.state();
        loop {
            let caught_up = self.segment >= s.durable.segment && self.pos >= s.durable.pos;
            if !caught_up || s.closed {
                return Some((s.durable, s.closed));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = self.spool.wait_for_change(s, deadline - now);
        }
    }

    /// How far the reader may read in `path`: all of a sealed segment, up
    /// to `durable` in the open one. `None` if the sealed segment is gone.
    fn readable_end(&self, path: &Path, durable: Position) -> Result<Option<u64>, SpoolError> {
        if self.segment < durable.segment {
            match std::fs::metadata(path) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(path)(e)),
            }
        } else {
            Ok(Some(durable.pos))
        }
    }

    /// The frame at the reader's position from memory, if it is there.
    fn take_hot(&mut self) -> Option<Frame> {
        let f = self.spool.state().hot.take_at(self.position())?;
        self.segment = f.next.segment;
        self.pos = f.next.pos;
        // The file reader, if any, is now behind: reopen when needed.
        self.file = None;
        Some(f)
    }

    fn read_frame(
        &mut self,
        path: &Path,
        limit: u64,
    ) -> Result<Result<(SpoolBatch, u64), FrameFault>, SpoolError> {
        if self.file.as_ref().map(|(id, _)| *id) != Some(self.segment) {
            let f = File::open(path).map_err(io_err(path))?;
            let mut r = BufReader::with_capacity(1 << 20, f);
            r.seek(SeekFrom::Start(self.pos)).map_err(io_err(path))?;
            self.file = Some((self.segment, r));
        }
        let Some((_, r)) = self.file.as_mut() else {
            return Ok(Err(FrameFault::Incomplete));
        };
        let avail = limit - self.pos;
        if avail < FrameHeader::SIZE {
            return Ok(Err(FrameFault::Incomplete));
        }
        let mut header = [0u8; FrameHeader::SIZE as usize];
        r.read_exact(&mut header).map_err(io_err(path))?;
        let decoded = match FrameHeader::parse(&header) {
            Ok(h) if h.frame_len() > avail => Err(FrameFault::Incomplete),
            Ok(h) => {
                let mut payload = vec![0u8; (h.frame_len() - FrameHeader::SIZE) as usize];
                r.read_exact(&mut payload).map_err(io_err(path))?;
                h.decode_payload(&payload)
                    .map(|batch| (batch, h.frame_len()))
            }
            Err(fault) => Err(fault),
        };
        if decoded.is_err() {
            // The buffered reader stopped somewhere inside the bad frame.
            self.file = None;
        }
        Ok(decoded)
    }

    /// Skips the unreadable frame at the reader's position: to the next
    /// place in this segment where a whole valid frame starts, else to the
    /// segment's end (the next segment, or the durable end if this is the
    /// open one).
    fn skip_damage(
        &mut self,
        fault: FrameFault,
        path: &Path,
        limit: u64,
        durable: Position,
    ) -> Result<(), SpoolError> {
        let why = match fault {
            FrameFault::Incomplete => "frame cut short".to_string(),
            FrameFault::Damaged(w) => w,
        };
        let skip_to = match resync(path, self.pos + 1, limit)? {
            Some(pos) => Position {
                segment: self.segment,
                pos,
            },
            None if self.segment < durable.segment => Position {
                segment: self.segment + 1,
                pos: 0,
            },
            None => durable,
        };
        self.report_damage(&why, skip_to);
        Ok(())
    }

    /// A sealed segment the reader must read is gone. Segments are only
    /// deleted behind the durable cursor ([`Spool::release_before`]), so
    /// this is a deletion outside logcatch or a file system that lost it:
    /// said loudly and counted, never skipped in silence.
    fn report_missing(&mut self, path: &Path) {
        tracing::error!(segment = %path.display(), from = self.pos,
            "a spool segment that is not fully delivered is missing (deleted outside logcatch, or lost by the file system): its lines from this position on cannot be delivered; going on with the next segment");
        self.spool.state().missing_segments += 1;
    }

    /// Moves to the next segment there is. Segment ids are consecutive
    /// (sealing one creates the next), so a gap is segments missing
    /// (see [`report_missing`](Self::report_missing)).
    fn move_to_next_segment(&mut self) {
        let next = {
            let s = self.spool.state();
            s.sizes
                .range(self.segment + 1..)
                .next()
                .map(|(id, _)| *id)
                .unwrap_or(s.durable.segment)
        };
        for gone in self.segment + 1..next {
            self.segment = gone;
            self.pos = 0;
            self.report_missing(&segment_path(&self.spool.dir, gone));
        }
        self.segment = next;
        self.pos = 0;
        self.file = None;
    }

    fn report_damage(&mut self, why: &str, skip_to: Position) {
        let skipped = if skip_to.segment == self.segment {
            skip_to.pos.saturating_sub(self.pos)
        } else {
            self.spool
                .state()
                .sizes
                .get(&self.segment)
                .copied()
                .unwrap_or(0)
                .saturating_sub(self.pos)
        };
        let p = segment_path(&self.spool.dir, self.segment);
        tracing::error!(segment = %p.display(), at = self.pos, skipped_bytes = skipped, %why,
            "damaged spool frame; skipping to the next readable place");
        {
            let mut s = self.spool.state();
            s.damaged_frames += 1;
            s.damaged_bytes += skipped;
        }
        if skip_to.segment == self.segment {
            self.pos = skip_to.pos;
            self.file = None;
        } else {
            self.move_to_next_segment();
        }
    }
}

/// The first position in `[from, limit)` of `path` where a complete frame
/// with a valid checksum starts.
fn resync(path: &Path, from: u64, limit: u64) -> Result<Option<u64>, SpoolError> {
    if from >= limit {
        return Ok(None);
    }
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::Start(from)).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    f.take(limit - from)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    Ok(find_frame(&bytes).map(|i| from + i as u64))
}

#[cfg(test)]
mod tests {
    use super::super::frame::tests::batch;
    use super::super::tests::{cfg, spool_with_one_and_two, write_all};
    use super::*;

    #[test]
    fn damaged_frame_is_skipped_counted_and_the_next_frame_found_again() {
        let (_dir, store, sdir) = spool_with_one_and_two();

        // Flip a byte in the first frame: it is skipped and counted, the
        // reader moves on to later segments.
        let seg = segment_path(&sdir, 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[12] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let (spool, _) = Spool::open(&sdir, cfg(1 << 20, 1 << 20)).unwrap();
        write_all(&spool, &store, vec![batch("a", &[b"three"], 14)]);
        let mut r = spool.reader(None);
        let mut got = Vec::new();
        while let ReadOutcome::Frame(f) = r.next(Duration::from_millis(10)).unwrap() {
            got.push(f.batch.iter_lines().next().unwrap().1.to_vec());
        }
        // "one" was damaged; "two" after it in the same segment is found
        // again by resynchronising; "three" is in the next segment.
        assert_eq!(got, vec![b"two".to_vec(), b"three".to_vec()]);
        assert_eq!(spool.stats().damaged_frames, 1);
    }

    fn frame_at(pos: u64, data_len: usize) -> Frame {
        let line = vec![b'x'; data_len];
        Frame {
            at: Position { segment: 1, pos },
            next: Position {
                segment: 1,
                pos: pos + 1,
            },
            batch: Arc::new(batch("a", &[&line], 0)),
        }
    }

    #[test]
    fn hot_frames_evict_the_oldest_past_their_budget() {
        let mut hot = HotFrames::default();
        hot.push(frame_at(0, HOT_BYTES / 2));
        hot.push(frame_at(1, HOT_BYTES / 2));
        hot.push(frame_at(2, 1));
        assert_eq!(hot.bytes, HOT_BYTES / 2 + 1);
        assert!(hot.take_at(Position { segment: 1, pos: 0 }).is_none());
        // Taking a later frame drops the ones before it.
        let f = hot.take_at(Position { segment: 1, pos: 2 }).unwrap();
        assert_eq!(f.at.pos, 2);
        assert_eq!((hot.frames.len(), hot.bytes), (0, 0));
    }
}
