//! lines: owns splitting a file's bytes into lines, with the long-line cap.
//!
//! Pure and synchronous: bytes in, lines and the committable offset out. The
//! tailer feeds it consecutive chunks of one file.
//!
//! Invariants: `LineBatch::end_offset` only ever names a place where every
//! byte before it was emitted as (part of) a line, or deliberately skipped
//! as the tail of a truncated long line; bytes after it are held or unread.
//! The held partial line never exceeds `max` bytes.
//!
//! Must never: emit a line before its newline arrives (except pieces of a
//! line longer than the cap under `split`, and `flush_partial` at the end of
//! a rotated file), or hold more than `max` bytes of one line.

use crate::config::LongLines;
use crate::spool::LineRef;

/// Lines split out of one or more chunks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineBatch {
    /// The lines' bytes, back to back, without newlines.
    pub data: Vec<u8>,
    pub lines: Vec<LineRef>,
    /// The file offset to resume at after these lines, if it moved.
    pub end_offset: Option<u64>,
}

impl LineBatch {
    fn emit(&mut self, offset: u64, bytes: &[u8], end: u64) {
        self.data.extend_from_slice(bytes);
        self.lines.push(LineRef {
            offset,
            len: bytes.len() as u32,
        });
        self.end_offset = Some(end);
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.end_offset.is_none()
    }
}

/// Splits bytes at `\n`; strips one `\r` before it.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    policy: LongLines,
    /// Bytes of the current line not yet emitted (at most `max`).
    partial: Vec<u8>,
    /// File offset of `partial[0]` (or of the next line when empty).
    partial_start: u64,
    /// Truncate mode: `partial` holds the first `max` bytes and the rest of
    /// the line is being skipped until its newline.
    skipping: bool,
    /// Split mode: `partial` continues a line whose first piece was emitted.
    split_continuation: bool,
    /// Lines longer than the cap: split into pieces, or truncated.
    pub long_lines: u64,
}

impl LineSplitter {
    pub fn new(max: usize, policy: LongLines, start: u64) -> LineSplitter {
        LineSplitter {
            max,
            policy,
            partial: Vec::new(),
            partial_start: start,
            skipping: false,
            split_continuation: false,
            long_lines: 0,
        }
    }

    /// Bytes held for an incomplete line.
    pub fn held(&self) -> usize {
        self.partial.len()
    }

    /// Forgets any partial line and restarts at file offset `start`.
    pub fn reset(&mut self, start: u64) {
        self.partial.clear();
        self.partial_start = start;
        self.skipping = false;
        self.split_continuation = false;
    }

    /// Feeds `chunk`, read at file offset `at` (contiguous with the previous
    /// chunk). Complete lines go to `out`.
    pub fn feed(&mut self, chunk: &[u8], at: u64, out: &mut LineBatch) {
        // The lines take about the chunk's bytes: one allocation, not a
        // series of doublings that each copy what came before.
        out.data.reserve(chunk.len());
        let mut s = 0usize;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            let end = at + nl as u64 + 1;
            let seg = &chunk[s..nl];
            if self.partial.is_empty() && !self.skipping && seg.len() <= self.max + 1 {
                let line = strip_cr(seg);
                if line.len() <= self.max {
                    out.emit(at + s as u64, line, end);
                } else {
                    self.append(seg, out);
                    self.finish_line(end, out);
                }
            } else {
                self.append(seg, out);
                self.finish_line(end, out);
            }
            s = nl + 1;
            self.partial_start = end;
        }
        if s < chunk.len() {
            self.append(&chunk[s..], out);
        }
    }

    /// Adds bytes of an unfinished line, enforcing the cap.
    fn append(&mut self, mut bytes: &[u8], out: &mut LineBatch) {
        if self.skipping {
            return;
        }
        while !bytes.is_empty() {
            let room = self.max - self.partial.len();
            if bytes.len() <= room {
                self.partial.extend_from_slice(bytes);
                return;
            }
            self.partial.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            match self.policy {
                LongLines::Split => {
                    if self.partial_start_is_line_start() {
                        self.long_lines += 1;
                    }
                    let end = self.partial_start + self.max as u64;
                    out.emit(self.partial_start, &self.partial, end);
                    self.partial.clear();
                    self.partial_start = end;
                    self.split_continuation = true;
                }
                LongLines::Truncate => {
                    self.long_lines += 1;
                    self.skipping = true;
                    return;
                }
            }
        }
    }

    fn partial_start_is_line_start(&self) -> bool {
        !self.split_continuation
    }

    fn finish_line(&mut self, end: u64, out: &mut LineBatch) {
        if !self.skipping {
            let n = strip_cr(&self.partial).len();
            self.partial.truncate(n);
        }
        out.emit(self.partial_start, &self.partial, end);
        self.partial.clear();
        self.skipping = false;
        self.split_continuation = false;
    }

    /// Emits a held partial line as a whole line: the file it came from is
    /// finished (rotated away), so its newline will never come.
    pub fn flush_partial(&mut self, file_end: u64, out: &mut LineBatch) {
        if !self.partial.is_empty() {
            out.emit(self.partial_start, &self.partial, file_end);
            self.partial.clear();
        } else if self.skipping {
            out.end_offset = Some(file_end);
        }
        self.skipping = false;
        self.split_continuation = false;
        self.partial_start = file_end;
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines_of(b: &LineBatch) -> Vec<(u64, Vec<u8>)> {
        let mut at = 0;
        b.lines
            .iter()
            .map(|l| {
                let s = b.data[at..at + l.len as usize].to_vec();
                at += l.len as usize;
                (l.offset, s)
            })
            .collect()
    }

    fn split_all(input: &[u8], cuts: &[usize], max: usize, policy: LongLines) -> LineBatch {
        let mut sp = LineSplitter::new(max, policy, 0);
        let mut out = LineBatch::default();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        for p in points {
            sp.feed(&input[at..p], at as u64, &mut out);
            at = p;
        }
        out
    }

    #[test]
    fn simple_lines_and_partial() {
        let out = split_all(b"ab\r\ncd\nef", &[1, 5], 100, LongLines::Split);
        assert_eq!(
            lines_of(&out),
            vec![(0, b"ab".to_vec()), (4, b"cd".to_vec())]
        );
        assert_eq!(out.end_offset, Some(7));
    }

    #[test]
    fn truncate_keeps_head_and_commits_after_newline() {
        let out = split_all(b"0123456789\nxy\n", &[3, 12], 4, LongLines::Truncate);
        assert_eq!(
            lines_of(&out),
            vec![(0, b"0123".to_vec()), (11, b"xy".to_vec())]
        );
        assert_eq!(out.end_offset, Some(14));
    }

    #[test]
    fn split_emits_pieces_with_offsets() {
        let out = split_all(b"0123456789\n", &[2], 4, LongLines::Split);
        assert_eq!(
            lines_of(&out),
            vec![
                (0, b"0123".to_vec()),
                (4, b"4567".to_vec()),
                (8, b"89".to_vec())
            ]
        );
        assert_eq!(out.end_offset, Some(11));
    }

    #[test]
    fn flush_partial_at_rotation() {
        let mut sp = LineSplitter::new(100, LongLines::Split, 0);
        let mut out = LineBatch::default();
        sp.feed(b"a\nlast", 0, &mut out);
        sp.flush_partial(6, &mut out);
        assert_eq!(
            lines_of(&out),
            vec![(0, b"a".to_vec()), (2, b"last".to_vec())]
        );
        assert_eq!(out.end_offset, Some(6));
    }

    proptest! {
        /// However the input is cut into chunks, the lines are the same as
        /// splitting it whole, and the committed offset is just past the
        /// last newline.
        #[test]
        fn chunking_does_not_matter(
            lines in proptest::collection::vec("[a-z\r]{0,20}", 0..30),
            tail in "[a-z]{0,10}",
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut input = Vec::new();
            for l in &lines { input.extend_from_slice(l.as_bytes()); input.push(b'\n'); }
            let committed = input.len() as u64;
            input.extend_from_slice(tail.as_bytes());
            let out = split_all(&input, &cuts, 1000, LongLines::Split);
            let want: Vec<Vec<u8>> = lines.iter().map(|l| strip_cr(l.as_bytes()).to_vec()).collect();
            let got: Vec<Vec<u8>> = lines_of(&out).into_iter().map(|(_, l)| l).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(out.end_offset, if lines.is_empty() { None } else { Some(committed) });
            // Offsets point at the line starts.
            for (off, l) in lines_of(&out) {
                prop_assert!(input[off as usize..].starts_with(&l));
            }
        }

        /// With a cap, no emitted piece exceeds it and split loses no byte.
        #[test]
        fn cap_is_respected(
            lines in proptest::collection::vec("[a-z]{0,50}", 1..10),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            max in 1usize..20,
        ) {
            let mut input = Vec::new();
            for l in &lines { input.extend_from_slice(l.as_bytes()); input.push(b'\n'); }
            let split = split_all(&input, &cuts, max, LongLines::Split);
            for (_, l) in lines_of(&split) { prop_assert!(l.len() <= max); }
            let joined: Vec<u8> = split.data.clone();
            let want: Vec<u8> = lines.concat().into_bytes();
            prop_assert_eq!(joined, want);
            let trunc = split_all(&input, &cuts, max, LongLines::Truncate);
            prop_assert_eq!(trunc.lines.len(), lines.len());
            for ((_, got), l) in lines_of(&trunc).into_iter().zip(&lines) {
                let n = l.len().min(max);
                prop_assert_eq!(got, l.as_bytes()[..n].to_vec());
            }
            prop_assert_eq!(trunc.end_offset, Some(input.len() as u64));
        }
    }
}
