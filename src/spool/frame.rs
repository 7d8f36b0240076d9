//! frame: owns the spool's on-disk record, the frame, and the batch it
//! carries ([`SpoolBatch`]).
//!
//! The frame layout is in the [spool module doc](super): a header of
//! payload length and checksum, then `bincode(SpoolBatch)`.
//!
//! Invariants: the header is written by [`FrameHeader::encode`] and read by
//! [`FrameHeader::parse`] only; every reader of frames (recovery at open,
//! the [`SpoolReader`](super::SpoolReader), resynchronisation after damage)
//! goes through them, so a frame means the same thing everywhere. A frame
//! is never larger than [`MAX_FRAME`].
//!
//! Must never: accept a frame whose checksum does not match, or read past
//! the bytes it was given (a frame that runs past them is
//! [`FrameFault::Incomplete`], a torn write).

use serde::{Deserialize, Serialize};

use super::SpoolError;
use crate::store::{FileIdentity, FilePosition, SourceRecord};

/// The most draining files one source record keeps (see
/// [`SpoolBatch::record`]).
pub const MAX_DRAINING: usize = 64;

/// No frame is larger than this; a larger length field is damage.
pub const MAX_FRAME: u32 = 512 << 20;

/// Where one line sits in [`SpoolBatch::data`], and where it sat in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRef {
    /// Byte offset of the line's start in its file.
    pub offset: u64,
    /// Length of the line in `data` (without its newline).
    pub len: u32,
}

/// One tailer batch: consecutive lines of one file, and the source's
/// position after them. The unit the spool writes, checksums and replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolBatch {
    /// Commit sequence number, assigned by the writer; orders a batch
    /// against the store's record of the same source.
    pub seq: u64,
    /// Unix milliseconds when the writer spooled it.
    pub spooled_ms: u64,
    pub source: String,
    pub path: String,
    pub topic: String,
    pub identity: FileIdentity,
    /// The file offset the source resumes at after this batch.
    pub end_offset: u64,
    pub tail_len: u32,
    pub tail_crc: u32,
    /// The lines' bytes, back to back.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub lines: Vec<LineRef>,
}

impl SpoolBatch {
    /// The lines, in order, with their file offsets.
    pub fn iter_lines(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let mut at = 0usize;
        self.lines.iter().map(move |l| {
            let s = &self.data[at..at + l.len as usize];
            at += l.len as usize;
            (l.offset, s)
        })
    }

    /// The store record this batch commits, given the previous one.
    ///
    /// A source's record holds its newest file and the files still drained
    /// after a rotation ([`SourceRecord::draining`]), each told apart by
    /// device and inode: the batch moves the position of its own file. A
    /// file the record does not hold yet is the source's new file: it
    /// becomes the record's own, and the previous one joins the draining
    /// files (the tailer sends [`WriterMsg::Drained`](super::WriterMsg::Drained)
    /// when it is finished). Lines and bytes add up over all files.
    ///
    /// Why this is crash-safe: the rule depends only on the order of the
    /// batches, so replaying the newest segment's batches at recovery (in
    /// seq order, each only if newer than its file's stored position) gives
    /// the same record as committing them did.
    pub fn record(&self, prev: Option<&SourceRecord>) -> SourceRecord {
        let Some(prev) = prev else {
            let (lines, bytes) = (self.lines.len() as u64, self.data.len() as u64);
            return self.fresh_record(lines, bytes, Vec::new(), Vec::new());
        };
        let (lines, bytes) = (
            prev.lines + self.lines.len() as u64,
            prev.bytes + self.data.len() as u64,
        );
        if prev.identity.same_file(&self.identity) {
            return self.fresh_record(lines, bytes, prev.draining.clone(), prev.finished.clone());
        }
        if let Some(i) = prev
            .draining
            .iter()
            .position(|d| d.identity.same_file(&self.identity))
        {
            let mut rec = prev.clone();
            rec.draining[i] = self.position();
            rec.lines = lines;
            rec.bytes = bytes;
            rec.updated_ms = self.spooled_ms;
            return rec;
        }
        let mut draining = prev.draining.clone();
        draining.push(prev.position());
        if draining.len() > MAX_DRAINING {
            // A tailer drains at most a few files at once; more means
            // positions of files long finished whose `Drained` was lost
            // in a crash. The oldest go.
            draining.drain(..draining.len() - MAX_DRAINING);
        }
        self.fresh_record(lines, bytes, draining, prev.finished.clone())
    }

    /// This batch's position, as a draining file's.
    fn position(&self) -> FilePosition {
        FilePosition {
            identity: self.identity,
            offset: self.end_offset,
            tail_len: self.tail_len,
            tail_crc: self.tail_crc,
            seq: self.seq,
        }
    }

    fn fresh_record(
        &self,
        lines: u64,
        bytes: u64,
        draining: Vec<FilePosition>,
        finished: Vec<FileIdentity>,
    ) -> SourceRecord {
        SourceRecord {
            path: self.path.clone(),
            identity: self.identity,
            offset: self.end_offset,
            tail_len: self.tail_len,
            tail_crc: self.tail_crc,
            lines,
            bytes,
            // When it was spooled, also when replayed at recovery: a start
            // compares rotated files' modification times with it.
            updated_ms: self.spooled_ms,
            seq: self.seq,
            draining,
            finished,
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameFault {
    /// The frame runs past the end of the readable bytes: a torn write.
    Incomplete,
    /// The bytes are there but wrong.
    Damaged(String),
}

/// The eight bytes before every payload: its length, and the checksum of
/// the length and the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    len: u32,
    crc: u32,
}

impl FrameHeader {
    /// Bytes in a header.
    pub(super) const SIZE: u64 = 8;

    /// The header at the start of `bytes`, as it stands; `None` if fewer
    /// than [`FrameHeader::SIZE`] bytes are there. Says nothing about
    /// whether the length is possible: see [`FrameHeader::parse`].
    fn read(bytes: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; 8] = bytes.get(..Self::SIZE as usize)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            crc: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        })
    }

    /// The header at the start of `bytes`, if it can start a frame: too few
    /// bytes are [`FrameFault::Incomplete`], a zero length or one above
    /// [`MAX_FRAME`] is damage (a zero-filled tail reads as length 0).
    pub(super) fn parse(bytes: &[u8]) -> Result<FrameHeader, FrameFault> {
        let h = Self::read(bytes).ok_or(FrameFault::Incomplete)?;
        if !h.possible() {
            return Err(FrameFault::Damaged(format!(
                "impossible frame length {}",
                h.len
            )));
        }
        Ok(h)
    }

    fn possible(&self) -> bool {
        self.len != 0 && self.len <= MAX_FRAME
    }

    /// Bytes in the whole frame: header and payload.
    pub(super) fn frame_len(&self) -> u64 {
        Self::SIZE + self.len as u64
    }

    fn encode(&self) -> [u8; 8] {
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&self.len.to_le_bytes());
        h[4..].copy_from_slice(&self.crc.to_le_bytes());
        h
    }

    /// Checks `payload` (the [`FrameHeader::frame_len`]` - SIZE` bytes
    /// after this header) against the checksum and decodes its batch.
    pub(super) fn decode_payload(&self, payload: &[u8]) -> Result<SpoolBatch, FrameFault> {
        if frame_crc(self.len, payload) != self.crc {
            return Err(FrameFault::Damaged("checksum mismatch".into()));
        }
        let (batch, _) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| FrameFault::Damaged(format!("undecodable batch: {e}")))?;
        Ok(batch)
    }
}

fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

/// Appends one frame holding `batch` to `out`.
pub fn encode_frame(batch: &SpoolBatch, out: &mut Vec<u8>) -> Result<(), SpoolError> {
    let start = out.len();
    let payload_at = start + FrameHeader::SIZE as usize;
    out.resize(payload_at, 0);
    bincode::serde::encode_into_std_write(batch, out, bincode::config::standard()).map_err(
        |e| SpoolError::Encode {
            source_name: batch.source.clone(),
            message: e.to_string(),
        },
    )?;
    let len = (out.len() - payload_at) as u64;
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| SpoolError::Encode {
            source_name: batch.source.clone(),
            message: format!("batch of {len} bytes is larger than a frame may be"),
        })?;
    let crc = frame_crc(len, &out[payload_at..]);
    out[start..payload_at].copy_from_slice(&FrameHeader { len, crc }.encode());
    Ok(())
}

/// Decodes the frame at the start of `bytes`; returns it and its length.
pub fn decode_frame(bytes: &[u8]) -> Result<(SpoolBatch, u64), FrameFault> {
    let header = FrameHeader::parse(bytes)?;
    let end = header.frame_len();
    let payload = bytes
        .get(FrameHeader::SIZE as usize..end as usize)
        .ok_or(FrameFault::Incomplete)?;
    Ok((header.decode_payload(payload)?, end))
}

/// The first place in `bytes` where a complete frame with a valid checksum
/// starts, as an index into `bytes`.
pub(super) fn find_frame(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find(|&i| {
        let rest = &bytes[i..];
        // Cheap filter before the checksum: a possible length that fits.
        match FrameHeader::read(rest) {
            Some(h) if h.possible() && h.frame_len() <= rest.len() as u64 => {
                decode_frame(rest).is_ok()
            }
            _ => false,
        }
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A batch of `lines` of `source`, each followed by a newline in its
    /// file, ending at file offset `end`.
    pub(in crate::spool) fn batch(source: &str, lines: &[&[u8]], end: u64) -> SpoolBatch {
        let mut data = Vec::new();
        let mut refs = Vec::new();
        let mut off = 0;
        for l in lines {
            refs.push(LineRef {
                offset: off,
                len: l.len() as u32,
            });
            off += l.len() as u64 + 1;
            data.extend_from_slice(l);
        }
        SpoolBatch {
            seq: 0,
            spooled_ms: 0,
            source: source.into(),
            path: "/x".into(),
            topic: "t".into(),
            identity: FileIdentity::default(),
            end_offset: end,
            tail_len: 0,
            tail_crc: 0,
            data,
            lines: refs,
        }
    }

    proptest! {
        #[test]
        fn frames_roundtrip(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20)) {
            let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_slice()).collect();
            let b = batch("s", &refs, 7);
            let mut buf = Vec::new();
            encode_frame(&b, &mut buf).unwrap();
            let (back, n) = decode_frame(&buf).unwrap();
            prop_assert_eq!(n as usize, buf.len());
            let got: Vec<&[u8]> = back.iter_lines().map(|(_, l)| l).collect();
            prop_assert_eq!(got, refs);
        }

        #[test]
        fn any_cut_is_incomplete_and_any_flip_is_caught(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
            let b = batch("s", &[b"hello world", b"second line of text"], 9);
            let mut buf = Vec::new();
            encode_frame(&b, &mut buf).unwrap();
            let cut = cut % buf.len();
            prop_assert_eq!(decode_frame(&buf[..cut]).unwrap_err(), FrameFault::Incomplete);
            let flip = flip % buf.len();
            let mut bad = buf.clone();
            bad[flip] ^= 1 << bit;
            prop_assert!(decode_frame(&bad).is_err());
        }

        #[test]
        fn a_frame_is_found_again_after_any_garbage(garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = batch("s", &[b"found again"], 12);
            let mut bytes = garbage.clone();
            encode_frame(&b, &mut bytes).unwrap();
            // A frame starting inside the garbage would need a matching
            // checksum: odds of 2^-32 per place.
            prop_assert_eq!(find_frame(&bytes), Some(garbage.len()));
        }
    }

    #[test]
    fn zero_filled_tail_is_not_a_frame() {
        assert!(decode_frame(&[0u8; 64]).is_err());
    }

    #[test]
    fn impossible_lengths_are_damage_and_short_headers_incomplete() {
        assert_eq!(
            FrameHeader::parse(&[1, 2, 3]).unwrap_err(),
            FrameFault::Incomplete
        );
        let mut huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 4]);
        assert!(matches!(
            FrameHeader::parse(&huge),
            Err(FrameFault::Damaged(w)) if w.contains("impossible frame length")
        ));
    }

    /// A batch of file `ino` ending at `end`, committed as number `seq`.
    fn of_file(ino: u64, end: u64, seq: u64) -> SpoolBatch {
        let mut b = batch("a", &[b"x"], end);
        b.identity = FileIdentity {
            dev: 1,
            ino,
            head_len: 2,
            head_crc: 3,
        };
        b.seq = seq;
        b
    }

    #[test]
    fn a_new_file_takes_the_record_and_the_old_one_drains_beside_it() {
        let r1 = of_file(10, 100, 1).record(None);
        let r2 = of_file(20, 0, 2).record(Some(&r1));
        assert_eq!((r2.identity.ino, r2.offset, r2.seq), (20, 0, 2));
        assert_eq!(r2.draining.len(), 1);
        assert_eq!(
            (r2.draining[0].identity.ino, r2.draining[0].offset),
            (10, 100)
        );
        // A late line of the old file moves only its own position.
        let r3 = of_file(10, 150, 3).record(Some(&r2));
        assert_eq!((r3.identity.ino, r3.offset, r3.seq), (20, 0, 2));
        assert_eq!((r3.draining[0].offset, r3.draining[0].seq), (150, 3));
        assert_eq!(r3.lines, 3, "lines add up over both files");
        assert_eq!(
            (r3.seq_of(&r3.draining[0].identity), r3.max_seq()),
            (Some(3), 3)
        );
        // Finished: its position leaves the record.
        let done = r3.drained(&r3.draining[0].identity).unwrap();
        assert!(done.draining.is_empty());
        assert_eq!(
            done.finished,
            [r3.draining[0].identity],
            "remembered as finished"
        );
        assert_eq!(done.identity.ino, 20);
        assert!(
            done.drained(&done.identity).is_none(),
            "a record's only file stays"
        );
    }

    #[test]
    fn a_finished_own_file_gives_the_record_to_the_newest_draining_file() {
        // copytruncate: the copy (30) took the record while the truncated
        // file (10) is read again from 0 as a draining position.
        let r1 = of_file(10, 100, 1).record(None);
        let r2 = of_file(30, 100, 2).record(Some(&r1));
        let r3 = of_file(10, 5, 3).record(Some(&r2));
        let done = r3.drained(&r3.identity).unwrap();
        assert_eq!((done.identity.ino, done.offset, done.seq), (10, 5, 3));
        assert!(done.draining.is_empty());
    }

    #[test]
    fn a_record_keeps_at_most_max_draining_files() {
        let mut rec = of_file(0, 1, 1).record(None);
        for i in 1..100 {
            rec = of_file(i, 1, i + 1).record(Some(&rec));
        }
        assert_eq!(rec.draining.len(), MAX_DRAINING);
        assert_eq!(rec.identity.ino, 99);
        assert_eq!(
            rec.draining[MAX_DRAINING - 1].identity.ino,
            98,
            "the newest stay"
        );
    }

    /// A finished file's late lines had the record's highest number: the
    /// record keeps it, so the writer's next number after a restart stays
    /// above every one used.
    #[test]
    fn a_finished_file_never_lowers_the_records_highest_seq() {
        let r1 = of_file(10, 100, 1).record(None);
        let r2 = of_file(20, 0, 2).record(Some(&r1));
        let r3 = of_file(10, 150, 5).record(Some(&r2));
        assert_eq!(r3.max_seq(), 5);
        let done = r3.drained(&r3.draining[0].identity).unwrap();
        assert_eq!(done.max_seq(), 5);
    }
}
