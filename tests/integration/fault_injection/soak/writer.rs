//! The soak's data and its writer: five files of numbered lines (each file
//! its own range of numbers, see [`SPAN`](super::SPAN)), appended to by one thread at a
//! steady rate, with a log of every append.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Line `n` without its newline, 99 bytes: `line-NNNNNNNNN <filler> #NNNNNNNNN`.
/// The number also ends the line, so two different lines never share their
/// last bytes (the daemon checks the 64 bytes before a resumed offset).
fn fi_line(n: u64) -> String {
    const FILLER: &str =
        "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs! 0123456789";
    let rot = (n % 37) as usize;
    let filler: String = FILLER[rot..].chars().chain(FILLER[..rot].chars()).collect();
    let mut s = format!("line-{n:09} ");
    s.push_str(&filler[..99 - 15 - 11]);
    write!(s, " #{n:09}").unwrap();
    debug_assert_eq!(s.len(), 99);
    s
}

fn lines_bytes(from: u64, to: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(((to - from) * 100) as usize);
    for n in from..to {
        buf.extend_from_slice(fi_line(n).as_bytes());
        buf.push(b'\n');
    }
    buf
}

pub(super) fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(bytes).expect("append");
}

/// The header block of `rw.log`: identical in every version of the file,
/// longer than the 1 KiB the daemon checksums as the file's identity.
pub(super) const HEADER_LINES: u64 = 12;
pub(super) fn header_bytes() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..HEADER_LINES {
        writeln!(
            s,
            "# rw.log header {i:02}: the same in every version of this file, padding padding padding pad"
        )
        .unwrap();
    }
    assert!(s.len() > 1024);
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// The files and their writer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Rotate,
    CopyTruncate,
    DeleteRecreate,
    Rewrite,
    Plain,
}

pub(super) const FILES: [(&str, Kind); 5] = [
    ("rot", Kind::Rotate),
    ("ct", Kind::CopyTruncate),
    ("dr", Kind::DeleteRecreate),
    ("rw", Kind::Rewrite),
    ("plain", Kind::Plain),
];

pub(super) struct WFile {
    pub(super) name: &'static str,
    pub(super) path: PathBuf,
    pub(super) base: u64,
    /// The next number to write (absolute).
    pub(super) next: u64,
    /// The first number written to the file now at `path`.
    pub(super) cur_first: u64,
    pub(super) paused: bool,
    /// Header lines written (rw.log only).
    pub(super) headers: u64,
}

/// One append: which numbers, when.
#[derive(Clone, Copy)]
pub(super) struct WriteRec {
    pub(super) file: usize,
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) at: Instant,
}

pub(super) struct Files {
    pub(super) files: Vec<WFile>,
    pub(super) log: Vec<WriteRec>,
}

impl Files {
    pub(super) fn write(&mut self, i: usize, count: u64) {
        let f = &mut self.files[i];
        let (from, to) = (f.next, f.next + count);
        append(&f.path, &lines_bytes(from, to));
        f.next = to;
        self.log.push(WriteRec {
            file: i,
            from,
            to,
            at: Instant::now(),
        });
    }
}

/// Appends `per_tick` lines to every unpaused file every `tick`.
pub(super) struct Writer {
    files: Arc<Mutex<Files>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(files: Arc<Mutex<Files>>, per_tick: u64, tick: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (files.clone(), stop.clone());
        let handle = thread::Builder::new()
            .name("fi-writer".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    {
                        let mut fs = f.lock().unwrap();
                        for i in 0..fs.files.len() {
                            if !fs.files[i].paused {
                                fs.write(i, per_tick);
                            }
                        }
                    }
                    thread::sleep(tick);
                }
            })
            .unwrap();
        Writer {
            files,
            stop,
            handle: Some(handle),
        }
    }

    pub(super) fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread panicked");
        }
    }

    pub(super) fn set_paused(&self, i: usize, paused: bool) {
        self.files.lock().unwrap().files[i].paused = paused;
    }

    pub(super) fn next(&self, i: usize) -> u64 {
        self.files.lock().unwrap().files[i].next
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
