//! Numbered lines, the test data: writing them to log files (at once or
//! slowly, from a thread), reading their numbers back, and the file
//! operations the scenarios perform on log and config files (truncate in
//! place, replace by rename).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The width of the zero-padded number in a numbered line.
pub const NUM_WIDTH: usize = 9;
/// The length of a numbered line including its newline.
pub const LINE_LEN: usize = 100;

/// The numbered line for `n`, without its newline: `line-000000123 ` and
/// filler, `LINE_LEN - 1` bytes long.
pub fn numbered_line(n: u64) -> String {
    const FILLER: &str = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs! 0123456789";
    let mut s = format!("line-{n:0NUM_WIDTH$} ");
    let rot = (n % 37) as usize;
    let filler: String = FILLER[rot..].chars().chain(FILLER[..rot].chars()).collect();
    s.push_str(&filler);
    s.truncate(LINE_LEN - 1);
    s
}

/// Appends lines `from..to` (half-open) to `path`, creating it if needed.
/// Written in chunks of up to 64 KiB, so a line may be split across two
/// writes (as real writers do).
pub fn write_numbered(path: &Path, from: u64, to: u64) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = Vec::with_capacity(64 << 10);
    for n in from..to {
        buf.extend_from_slice(numbered_line(n).as_bytes());
        buf.push(b'\n');
        if buf.len() >= 64 << 10 {
            f.write_all(&buf).expect("write");
            buf.clear();
        }
    }
    f.write_all(&buf).expect("write");
}

/// Writes lines `from..to` to `path` in batches of `batch` lines, sleeping
/// `pause` between batches, on a new thread.
pub fn write_numbered_slowly(
    path: &Path,
    from: u64,
    to: u64,
    batch: u64,
    pause: Duration,
) -> JoinHandle<()> {
    let path = path.to_path_buf();
    thread::spawn(move || {
        let mut n = from;
        while n < to {
            let end = (n + batch).min(to);
            write_numbered(&path, n, end);
            n = end;
            thread::sleep(pause);
        }
    })
}

/// The number in a numbered line (a message value), if it is one.
pub fn number_of(value: &[u8]) -> Option<u64> {
    let rest = value.strip_prefix(b"line-")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Byte offset of the start of every line of a file, by the line's number
/// (for numbered lines).
pub fn line_offsets(path: &Path) -> BTreeMap<u64, u64> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut r = BufReader::new(f);
    let mut out = BTreeMap::new();
    let mut off = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).expect("read");
        if n == 0 {
            break;
        }
        if let Some(num) = number_of(&line) {
            out.insert(num, off);
        }
        off += n as u64;
    }
    out
}

/// Truncates `path` to 0 bytes in place (same inode).
pub fn truncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncate")
        .set_len(0)
        .expect("truncate");
}

/// Writes `text` to `path` the way careful editors do: a temp file in the
/// same directory, then rename over.
pub fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-edit");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}
