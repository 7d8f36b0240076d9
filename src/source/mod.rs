//! source: the first stage, reading log files. Owns everything between a
//! configured file and a batch handed to the spool writer: one
//! [`tailer::FileTail`] per configured source follows its file across
//! rotation, truncation and replacement ([`tailer`]), tells one file from
//! another by device, inode and checksums ([`identity`]), splits what it
//! reads into lines under the long-line cap ([`lines`]), and sleeps while
//! its file is idle until [`filewatch::FileWatch`] wakes it.
//!
//! A line's way through this stage: [`tailer::run`] steps the
//! [`tailer::FileTail`] on the blocking pool; a step reads one buffer at the
//! read position, [`lines::LineSplitter`] cuts it into lines, and the lines
//! go out as one [`SpoolBatch`](crate::spool::SpoolBatch) (lines, the
//! offset after them, the file's [`identity::FileIdentity`] and tail
//! check) on the writer's channel ([`WriterMsg`](crate::spool::WriterMsg)).
//!
//! Invariants:
//! - This stage never writes offsets. It sends batches in file order, and
//!   the spool writer commits a batch's offset to the
//!   [`Store`](crate::store::Store) only after its lines are durable
//!   ([`crate::spool`] invariant 1). So a crash anywhere here re-reads,
//!   never skips.
//! - A stored offset is resumed only in the file it was read from, unchanged
//!   up to it ([`identity::verify`]: device and inode, the checksum of the
//!   first bytes, the checksum of the bytes just before the offset).
//!   Anything else is a new file and is read from 0.
//! - After a rename rotation the old file is read to its end before the new
//!   one is opened, also when the rotation happened while logcatch was down
//!   ([`identity::find_rotated`]).
//! - After a copytruncate the rest of the file is read from logrotate's
//!   copy ([`copies::find_copy`]) before the truncated file is read again
//!   from 0; when no copy is found the possible gap is logged and counted.
//! - A rotated file that logrotate compressed before logcatch read all of
//!   it is read from its `.gz`/`.zst` sibling ([`compressed`]).
//! - A committed offset is always at a line start ([`lines`]' invariant):
//!   a partial line is held, not committed, and read again after a restart.
//!
//! Must never: hold more than `max_line_bytes` of one line, block an async
//! worker thread on file I/O, open anything but a regular file (a FIFO
//! would block the open), or lose a wake-up of an idle tailer.
pub mod compressed;
pub mod copies;
pub mod discover;
pub mod filewatch;
pub mod identity;
pub mod lines;
pub mod tailer;
