//! In-process tests of [`FileTail`]: real files in a temp dir, a real
//! [`Store`], and the tailer driven through [`FileTail::step`].
//!
//! The tailer commits nothing itself: its batches go to the spool writer,
//! which writes each one's record to the store once the lines are durable.
//! [`Harness::commit`] does what the writer does
//! ([`SpoolBatch::record`](crate::spool::SpoolBatch::record) and
//! [`Store::put_source`]), so that a restarted tailer resumes where a real
//! one would.
//!
//! The model ([`Model`]) is a line splitter over what the tailer reads of
//! the file it follows. What it assumes:
//! - The tailer catches up (is stepped until idle, [`Harness::catch_up`])
//!   after every file operation, except inside the operations that test a
//!   race on purpose. Then nothing depends on timing: the only timed check
//!   (the head checksum, at most once per [`HEAD_RECHECK`]) never decides
//!   anything, because every shrinking rewrite is caught by its size first.
//!   That is why a running tailer's in-place rewrite is only ever shorter
//!   than the file (a longer one is found by the head check, whenever it
//!   next runs: timing-dependent, left out); a rewrite of any length is
//!   tested while the tailer is down, where [`verify`] decides.
//! - Every line carries a unique number at its start, so a file's first
//!   bytes always differ from any earlier file's (the head check can tell
//!   them apart, as it can for real logs that start with a timestamp).
//! - Lines have no `\r` and stay under the long-line cap (`lines` has its
//!   own tests for both).
//!
//! What the tailer documents as not read, and the model therefore drops:
//! - lines written to a rotated file after the tailer finished it (the
//!   model's `rotate_wait` is 0: [`Op::Rotate`]'s `after_switch`; waiting
//!   for late writes has its own tests in `tests/drain.rs`);
//! - lines written between the copy and the truncate of a copytruncate
//!   (they are in neither file: logrotate loses them, [`Op::CopyTruncate`]);
//! - a partial last line held when the file is rewritten in place with no
//!   copy beside it ([`Op::RewriteShorter`]);
//! - lines a copytruncate while stopped left in the copy when no line of
//!   the file was ever committed (nothing identifies the copy then,
//!   [`Op::CopyTruncateWhileDown`]);
//! - a partial last line of a file deleted or rewritten while the tailer
//!   was stopped: its offset was never committed ([`Op::ReplaceWhileDown`]).
//!
//! A file that is deleted and recreated while the tailer runs cannot get
//! the same inode back (the tailer holds the old one open), so inode reuse
//! is tested while the tailer is down: [`Op::ReplaceWhileDown`] with
//! `delete` (on ext4 the new file usually gets the freed inode).

use std::fs::OpenOptions;
use std::io::Write;

use proptest::prelude::*;

use super::*;
use crate::config::{LongLines, StartAt};
use crate::store::SourceRecord;

/// A real tailer over `logs/app.log`, with its store in another directory.
struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// Where rotations move the file (`app.log.1`).
    rotated: PathBuf,
    store: Store,
    tail: FileTail,
    /// The source the tailer (and every restarted one) follows.
    config: SourceConfig,
    read_buffer: usize,
    /// Every line the tailer emitted, in order.
    emitted: Vec<String>,
    seq: u64,
}

impl Harness {
    fn new(read_buffer: usize) -> Harness {
        Harness::with_rotate_wait(read_buffer, Duration::ZERO)
    }

    /// A harness whose source drains rotated files for `rotate_wait`.
    fn with_rotate_wait(read_buffer: usize, rotate_wait: Duration) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let path = logs.join("app.log");
        std::fs::write(&path, b"").unwrap();
        let config = SourceConfig {
            rotate_wait,
            ..source(&path)
        };
        let tail = FileTail::new(config.clone(), store.clone(), read_buffer);
        Harness {
            config,
            rotated: logs.join("app.log.1"),
            path,
            store,
            tail,
            read_buffer,
            emitted: Vec::new(),
            seq: 0,
            _dir: dir,
        }
    }

    /// Stops the tailer (closing its file) and starts a new one on the same
    /// store, as a daemon restart does. The new one opens nothing until
    /// stepped.
    fn restart(&mut self) {
        self.tail = FileTail::new(self.config.clone(), self.store.clone(), self.read_buffer);
    }

    /// Steps until the tailer says it is idle, committing every batch; then
    /// checks that one more step finds nothing (idle means caught up).
    fn catch_up(&mut self) {
        for _ in 0..100_000 {
            let step = self.tail.step();
            let more = step.more;
            self.commit_step(step);
            if !more {
                let again = self.tail.step();
                assert!(
                    again.batches.is_empty() && !again.more,
                    "an idle tailer found more work on the next step"
                );
                let status = lock(&self.tail.status()).clone();
                assert_eq!(status.state, TailState::Tailing, "{status:?}");
                return;
            }
        }
        panic!("the tailer never went idle");
    }

    /// What the spool writer does with a step's batches, then with the
    /// rotated files it finished ([`WriterMsg::Drained`]).
    fn commit_step(&mut self, step: Step) {
        self.commit(step.batches);
        for id in step.finished {
            let prev = self.store.source("app").unwrap().expect("a record");
            if let Some(rec) = prev.drained(&id) {
                self.store.put_source("app", &rec).unwrap();
            }
        }
    }

    /// What the spool writer does with a batch once it is durable.
    fn commit(&mut self, batches: Vec<SpoolBatch>) {
        for mut b in batches {
            self.seq += 1;
            b.seq = self.seq;
            b.spooled_ms = crate::runtime::now_ms();
            self.emitted.extend(
                b.iter_lines()
                    .map(|(_, l)| String::from_utf8_lossy(l).into_owned()),
            );
            let prev = self.store.source(&b.source).unwrap();
            self.store
                .put_source(&b.source, &b.record(prev.as_ref()))
                .unwrap();
        }
    }

    /// The committed record: for the file now at the path, just past its
    /// last complete line (where a restart must resume).
    fn committed(&self) -> SourceRecord {
        self.store.source("app").unwrap().expect("a record")
    }
}

fn source(path: &Path) -> SourceConfig {
    SourceConfig {
        name: "app".into(),
        path: path.to_path_buf(),
        topic: "t".into(),
        start_at: StartAt::Beginning,
        max_line_bytes: 1 << 20,
        long_lines: LongLines::Split,
        // Finished at its end at once: the model's rotations write late
        // lines only before the tailer looks (the waiting has its own
        // tests).
        rotate_wait: Duration::ZERO,
        glob: None,
        matched_by: None,
    }
}

fn truncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// What the tailer must have emitted: the lines of what it read, in order.
#[derive(Debug, Default)]
struct Model {
    expected: Vec<String>,
    /// The bytes after the last newline of the file being read: a partial
    /// line the tailer holds (and has not committed).
    held: Vec<u8>,
}

impl Model {
    /// The tailer reads `bytes`, appended to the file it follows.
    fn read(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
        while let Some(nl) = self.held.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.held.drain(..=nl).collect();
            self.expected
                .push(String::from_utf8_lossy(&line[..nl]).into_owned());
        }
    }

    /// The tailer finished the file (rotated away or replaced) after
    /// reading it to its end: a partial last line is a whole line.
    fn finish_file(&mut self) {
        if !self.held.is_empty() {
            self.expected
                .push(String::from_utf8_lossy(&self.held).into_owned());
            self.held.clear();
        }
    }

    /// The file was truncated or rewritten under the held partial line:
    /// it is not read (documented limit).
    fn drop_held(&mut self) {
        self.held.clear();
    }
}

/// Lines to write: each gets a unique number at its start when rendered.
#[derive(Debug, Clone)]
struct Chunk {
    lines: Vec<String>,
    /// An unterminated last line.
    partial: Option<String>,
}

impl Chunk {
    fn render(&self, ids: &mut u32) -> Vec<u8> {
        let mut out = Vec::new();
        for filler in &self.lines {
            *ids += 1;
            writeln!(out, "L{:05}-{filler}", *ids).unwrap();
        }
        if let Some(filler) = &self.partial {
            *ids += 1;
            write!(out, "L{:05}-{filler}", *ids).unwrap();
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Append to the file.
    Write(Chunk),
    /// logrotate's `create`: rename the file to `app.log.1`, create an
    /// empty one at the path, then `late` reaches the old file before the
    /// tailer looks (read), and `after_switch` after it moved on (not read).
    Rotate { late: Chunk, after_switch: Chunk },
    /// logrotate's `copytruncate`: copy to `app.log.1`, `late` is appended
    /// between the copy and the truncate (lost), truncate to 0. The tailer
    /// finishes the copy (a held partial line is a line at its end).
    CopyTruncate { late: Chunk },
    /// While stopped: `unread` is appended, the file is copied to
    /// `app.log.1` (or a `dateext` name) and truncated, and `new` is
    /// written. The restarted tailer reads the unread rest from the copy,
    /// then the file from 0.
    CopyTruncateWhileDown {
        unread: Chunk,
        new: Chunk,
        dateext: bool,
    },
    /// Rewrite in place (same inode) with content shorter than the file;
    /// skipped when the rendered content is not shorter.
    RewriteShorter(Chunk),
    /// Delete the file and create a new one at the path with content.
    Recreate(Chunk),
    /// Stop the tailer and start a new one on the same store.
    Restart,
    /// While stopped: `late` is appended, the file is renamed to
    /// `app.log.1` and a new one is created with `new`. The restarted
    /// tailer finds the old file by inode and finishes it first.
    RotateWhileDown { late: Chunk, new: Chunk },
    /// While stopped: the file is replaced by `content`, deleted and
    /// recreated (`delete`: probably reusing the inode) or rewritten in
    /// place.
    ReplaceWhileDown { content: Chunk, delete: bool },
}

impl Harness {
    /// Does `op` to the files, lets the tailer catch up, and tells the
    /// model what the tailer read.
    fn apply(&mut self, op: &Op, m: &mut Model, ids: &mut u32) {
        match op {
            Op::Write(c) => {
                let bytes = c.render(ids);
                append(&self.path, &bytes);
                self.catch_up();
                m.read(&bytes);
            }
            Op::Rotate { late, after_switch } => {
                std::fs::rename(&self.path, &self.rotated).unwrap();
                std::fs::write(&self.path, b"").unwrap();
                let late = late.render(ids);
                append(&self.rotated, &late);
                self.catch_up();
                append(&self.rotated, &after_switch.render(ids));
                self.catch_up();
                m.read(&late);
                m.finish_file();
            }
            Op::CopyTruncate { late } => {
                std::fs::copy(&self.path, &self.rotated).unwrap();
                append(&self.path, &late.render(ids));
                let file = OpenOptions::new().write(true).open(&self.path).unwrap();
                file.set_len(0).unwrap();
                self.catch_up();
                m.finish_file();
            }
            Op::CopyTruncateWhileDown {
                unread,
                new,
                dateext,
            } => {
                self.restart();
                let identified = self.committed().identity.head_len > 0;
                let (unread, new) = (unread.render(ids), new.render(ids));
                append(&self.path, &unread);
                let copy = if *dateext {
                    self.path.with_file_name("app.log-20261203")
                } else {
                    self.rotated.clone()
                };
                std::fs::copy(&self.path, copy).unwrap();
                truncate(&self.path);
                append(&self.path, &new);
                self.catch_up();
                if identified {
                    m.read(&unread);
                    m.finish_file();
                } else {
                    m.drop_held();
                }
                m.read(&new);
            }
            Op::RewriteShorter(c) => {
                let bytes = c.render(ids);
                if (bytes.len() as u64) < std::fs::metadata(&self.path).unwrap().len() {
                    std::fs::write(&self.path, &bytes).unwrap();
                    self.catch_up();
                    m.drop_held();
                    m.read(&bytes);
                }
            }
            Op::Recreate(c) => {
                let bytes = c.render(ids);
                std::fs::remove_file(&self.path).unwrap();
                std::fs::write(&self.path, &bytes).unwrap();
                self.catch_up();
                m.finish_file();
                m.read(&bytes);
            }
            Op::Restart => {
                self.restart();
                self.catch_up();
            }
            Op::RotateWhileDown { late, new } => {
                self.restart();
                let (late, new) = (late.render(ids), new.render(ids));
                append(&self.path, &late);
                std::fs::rename(&self.path, &self.rotated).unwrap();
                std::fs::write(&self.path, &new).unwrap();
                self.catch_up();
                m.read(&late);
                m.finish_file();
                m.read(&new);
            }
            Op::ReplaceWhileDown { content, delete } => {
                self.restart();
                let bytes = content.render(ids);
                if *delete {
                    std::fs::remove_file(&self.path).unwrap();
                }
                std::fs::write(&self.path, &bytes).unwrap();
                self.catch_up();
                m.drop_held();
                m.read(&bytes);
            }
        }
    }
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (
        proptest::collection::vec("[a-z ]{0,12}", 0..4),
        proptest::option::of("[a-z]{0,6}"),
    )
        .prop_map(|(lines, partial)| Chunk { lines, partial })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => chunk().prop_map(Op::Write),
        1 => (chunk(), chunk()).prop_map(|(late, after_switch)| Op::Rotate { late, after_switch }),
        1 => chunk().prop_map(|late| Op::CopyTruncate { late }),
        1 => (chunk(), chunk(), any::<bool>())
            .prop_map(|(unread, new, dateext)| Op::CopyTruncateWhileDown { unread, new, dateext }),
        1 => chunk().prop_map(Op::RewriteShorter),
        1 => chunk().prop_map(Op::Recreate),
        1 => Just(Op::Restart),
        1 => (chunk(), chunk()).prop_map(|(late, new)| Op::RotateWhileDown { late, new }),
        1 => (chunk(), any::<bool>()).prop_map(|(content, delete)| Op::ReplaceWhileDown { content, delete }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever happens to the file (writes, rename and copytruncate
    /// rotations, also while stopped, rewrites, deletion, restarts with rotation or inode reuse
    /// in between), every line is emitted exactly once and in order, except
    /// the documented losses (module doc); and the committed offset is
    /// always just past the last complete line of the file at the path.
    #[test]
    fn every_line_is_emitted_once_in_order_across_rotation_truncation_and_restarts(
        ops in proptest::collection::vec(op(), 1..14),
        read_buffer in prop_oneof![Just(5usize), Just(64), Just(64 << 10)],
    ) {
        let mut h = Harness::new(read_buffer);
        let mut m = Model::default();
        let mut ids = 0u32;
        h.catch_up();
        for (i, op) in ops.iter().enumerate() {
            h.apply(op, &mut m, &mut ids);
            prop_assert_eq!(&h.emitted, &m.expected, "after op {} {:?}", i, op);
            let rec = h.committed();
            let meta = std::fs::metadata(&h.path).unwrap();
            prop_assert!(rec.identity.is_inode_of(&meta), "after op {} {:?}: {:?}", i, op, rec);
            prop_assert_eq!(rec.offset, meta.len() - m.held.len() as u64, "after op {} {:?}", i, op);
        }
    }
}

#[test]
fn a_rotation_while_stopped_finishes_the_old_file_before_the_new_one() {
    let mut h = Harness::new(64 << 10);
    append(&h.path, b"one\ntwo\npart");
    h.catch_up();
    assert_eq!(h.emitted, ["one", "two"]);
    assert_eq!(h.committed().offset, 8);
    h.restart();
    append(&h.path, b"ial\nlast");
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"new\n").unwrap();
    h.catch_up();
    // The held partial line is read again from the committed offset, the
    // unterminated last line of the finished file is a line.
    assert_eq!(h.emitted, ["one", "two", "partial", "last", "new"]);
    assert_eq!(h.committed().offset, 4);
}

#[test]
fn a_source_that_recovers_from_an_error_says_so_once() {
    let mut h = Harness::new(64 << 10);
    std::fs::remove_file(&h.path).unwrap();
    std::fs::create_dir(&h.path).unwrap();
    h.restart();
    let step = h.tail.step();
    assert!(step.batches.is_empty() && !step.more);
    let status = lock(&h.tail.status()).clone();
    assert_eq!(status.state, TailState::WaitingForFile);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("a directory"),
        "{status:?}"
    );
    assert_eq!(h.tail.outage.failures(), 1);
    std::fs::remove_dir(&h.path).unwrap();
    std::fs::write(&h.path, b"x\n").unwrap();
    h.catch_up();
    assert_eq!(h.emitted, ["x"]);
    assert_eq!(h.tail.outage.failures(), 0);
    assert!(h.tail.last_logged.is_none());
}

impl Harness {
    fn gaps(&self) -> u64 {
        lock(&self.tail.status()).truncation_gaps
    }

    /// The file is copied to `copy` and truncated (logrotate's
    /// copytruncate) after the tailer read `read` and before it read
    /// `unread`; `new` is written to the truncated file.
    fn copytruncate_behind(&mut self, copy: &Path, read: &[u8], unread: &[u8], new: &[u8]) {
        append(&self.path, read);
        self.catch_up();
        append(&self.path, unread);
        std::fs::copy(&self.path, copy).unwrap();
        append(&self.path, b"between copy and truncate\n"); // lost by logrotate
        truncate(&self.path);
        append(&self.path, new);
    }
}

#[test]
fn copytruncate_while_running_reads_the_unread_rest_from_app_log_1() {
    let mut h = Harness::new(64 << 10);
    let copy = h.rotated.clone();
    h.copytruncate_behind(&copy, b"one\ntwo\npar", b"tial\nthree\nlast", b"new\n");
    h.catch_up();
    // The held partial line continues in the copy; the copy's
    // unterminated last line is a line; then the truncated file from 0.
    assert_eq!(h.emitted, ["one", "two", "partial", "three", "last", "new"]);
    assert_eq!(h.gaps(), 0);
    let rec = h.committed();
    assert!(rec
        .identity
        .is_inode_of(&std::fs::metadata(&h.path).unwrap()));
    assert_eq!(rec.offset, 4);
}

#[test]
fn copytruncate_while_running_finds_a_dateext_copy_among_older_ones() {
    let mut h = Harness::new(64 << 10);
    let logs = h.path.parent().unwrap().to_path_buf();
    // An older generation's copy: another head.
    std::fs::write(logs.join("app.log-20261202"), b"yesterday\nold\n").unwrap();
    let copy = logs.join("app.log-20261203");
    // The new content stays shorter than the read position until the
    // tailer looks (a longer one is caught by the timed head check: see
    // the module doc).
    h.copytruncate_behind(&copy, b"today 1\n", b"today 2\ntoday 3\n", b"next\n");
    h.catch_up();
    assert_eq!(h.emitted, ["today 1", "today 2", "today 3", "next"]);
    assert_eq!(h.gaps(), 0);
}

/// A small file (its head under 1 KiB) whose new generation outgrew the
/// read position before the tailer looked: the head is compared at every
/// look, so the new bytes are not taken for the old file's.
#[test]
fn copytruncate_of_a_small_file_caught_even_when_the_new_content_is_longer() {
    let mut h = Harness::new(64 << 10);
    let copy = h.rotated.clone();
    h.copytruncate_behind(
        &copy,
        b"today 1\n",
        b"today 2\n",
        b"a much longer first line of the next generation\n",
    );
    h.catch_up();
    assert_eq!(
        h.emitted,
        [
            "today 1",
            "today 2",
            "a much longer first line of the next generation"
        ]
    );
    assert_eq!(h.gaps(), 0);
}

#[test]
fn a_truncation_without_a_copy_is_counted_as_a_gap() {
    let mut h = Harness::new(64 << 10);
    append(&h.path, b"one\ntwo\n");
    h.catch_up();
    append(&h.path, b"unread\n");
    truncate(&h.path);
    append(&h.path, b"new\n");
    h.catch_up();
    assert_eq!(h.emitted, ["one", "two", "new"]);
    assert_eq!(h.gaps(), 1);
}

#[test]
fn a_copy_with_the_head_but_shorter_than_the_read_position_is_not_used() {
    let mut h = Harness::new(64 << 10);
    append(&h.path, b"one\ntwo\n");
    // A copy made earlier: the same first bytes, but it ends before what
    // the tailer has read.
    std::fs::copy(&h.path, &h.rotated).unwrap();
    append(&h.path, b"three\n");
    h.catch_up();
    truncate(&h.path);
    append(&h.path, b"new\n");
    h.catch_up();
    assert_eq!(h.emitted, ["one", "two", "three", "new"]);
    assert_eq!(h.gaps(), 1);
}

#[test]
fn copytruncate_while_stopped_reads_the_unread_lines_from_the_copy() {
    let mut h = Harness::new(64 << 10);
    append(&h.path, b"one\ntwo\npart");
    h.catch_up();
    h.restart();
    append(&h.path, b"ial\nthree\n");
    let copy = h.path.with_file_name("app.log-20261203");
    std::fs::copy(&h.path, &copy).unwrap();
    truncate(&h.path);
    append(&h.path, b"new\n");
    h.catch_up();
    assert_eq!(h.emitted, ["one", "two", "partial", "three", "new"]);
    assert_eq!(h.gaps(), 0);
    assert_eq!(h.committed().offset, 4);
}

#[test]
fn a_crash_while_draining_the_copy_resumes_in_the_copy_then_reads_the_file_from_0() {
    // A 5-byte read buffer: the copy takes many steps to drain.
    let mut h = Harness::new(5);
    let copy = h.rotated.clone();
    let read: Vec<u8> = (0..3)
        .flat_map(|i| format!("old {i}\n").into_bytes())
        .collect();
    let unread: Vec<u8> = (3..20)
        .flat_map(|i| format!("old {i}\n").into_bytes())
        .collect();
    h.copytruncate_behind(&copy, &read, &unread, b"new 0\nnew 1\n");
    // Step until a few lines of the copy are committed.
    let copy_ino = std::fs::metadata(&copy).unwrap().ino();
    while h.emitted.len() < 8 {
        let step = h.tail.step();
        h.commit_step(step);
    }
    assert_eq!(
        h.committed().identity.ino,
        copy_ino,
        "the record names the copy"
    );
    assert_eq!(lock(&h.tail.status()).state, TailState::DrainingRotated);
    // The next step's batches are lost with the crash (never committed).
    let _lost = h.tail.step();
    h.restart();
    h.catch_up();
    let mut want: Vec<String> = (0..20).map(|i| format!("old {i}")).collect();
    want.extend(["new 0".to_string(), "new 1".to_string()]);
    assert_eq!(h.emitted, want);
    assert_eq!(h.gaps(), 0);
    let rec = h.committed();
    assert!(rec
        .identity
        .is_inode_of(&std::fs::metadata(&h.path).unwrap()));
    assert_eq!(rec.offset, 12);
}

mod drain;
