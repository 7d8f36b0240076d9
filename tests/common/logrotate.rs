//! logrotate, and the application writing the log it rotates, for the
//! rotation scenarios (`tests/integration/rotation/`): [`Logrotate`]
//! performs each mode's file operations (`create` by rename, with or
//! without `compress`/`delaycompress`, and `copytruncate`; numbered or
//! `dateext` names; `rotate 3`) and writes numbered lines the way an
//! application does, through an `O_APPEND` handle it keeps across a rename
//! until told to reopen. It remembers where every line went (which file,
//! at which byte offset), so [`Logrotate::check`] can hold the delivery to
//! exactly once, each line with its `offset` header and exact bytes, in
//! file order.
//!
//! Also what the scenarios share around it: [`rotate_while_running`]
//! (rotation cycles with seeded `kill -9`s at the moments that matter),
//! [`kill9_and_restart`], and the waits on the daemon's log ([`opened`],
//! [`wait_back_on_path`]).
//!
//! Must never: write a line anywhere but where it records it (a partial
//! line is the last thing written to its file), or write between a copy
//! and its truncate (those lines are in neither file: logrotate itself
//! loses them, so no collector can deliver them).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;

use super::{
    assert_exactly_once, assert_file_order, number_of, numbered_line, Daemon, Msg, Rng, Tally,
    TestEnv, LINE_LEN,
};

/// How long the scenarios wait for a delivery (a debug build on 2 cores
/// running two tests at once; passing tests finish far sooner).
pub const ROTATION_WAIT: Duration = Duration::from_secs(120);
/// The daemon's log line when it opens a file.
pub const OPENED: &str = "tailing source=app path=";
/// How many rotated files logrotate keeps (`rotate 3`).
const KEEP: usize = 3;

/// How logrotate names the rotated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `app.log.1`, older ones shifted to `.2` and `.3`.
    Numbered,
    /// `app.log-2026120318`, `app.log-2026120319`, ... (`dateext` with
    /// `dateformat -%Y%m%d%H`), the oldest deleted beyond three.
    DateExt,
}

/// logrotate's `compress` options (numbered names only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// No `compress`.
    Off,
    /// `compress` + `delaycompress`: `app.log.1` stays plain for one cycle,
    /// then becomes `app.log.2.gz`.
    Delayed,
    /// `compress` alone: `app.log.1` becomes `app.log.1.gz` at once.
    Immediate,
}

/// Where a line was written: which file (a generation: a file created at
/// the path, or a truncated file's new content) and at which offset in it.
#[derive(Debug, Clone, Copy)]
struct Placed {
    generation: usize,
    offset: u64,
}

/// The application's open log file.
struct AppHandle {
    file: File,
    generation: usize,
}

/// The log file, the application writing it, and logrotate.
pub struct Logrotate {
    log: PathBuf,
    naming: Naming,
    compress: Compress,
    /// The application's `O_APPEND` handle (opened at the first write).
    app: Option<AppHandle>,
    /// The generation at the path, if there is a file there.
    at_path: Option<usize>,
    /// Every generation's length so far (only this writes to them).
    lens: Vec<u64>,
    /// Generations whose last line has no newline: nothing more may be
    /// written to them.
    ended_partial: Vec<usize>,
    /// Where each line went, by number.
    placed: Vec<Placed>,
    /// A line went to an older generation after a newer one got lines (a
    /// late write to a renamed file), or a generation ended with an
    /// unterminated line (delivered when its file is finished): no order
    /// across generations then.
    interleaved: bool,
    rotations: usize,
    /// `dateext` names, oldest first.
    dated: VecDeque<PathBuf>,
}

impl Logrotate {
    pub fn new(log: &Path, naming: Naming) -> Logrotate {
        Logrotate {
            log: log.to_path_buf(),
            naming,
            compress: Compress::Off,
            app: None,
            at_path: None,
            lens: Vec::new(),
            ended_partial: Vec::new(),
            placed: Vec::new(),
            interleaved: false,
            rotations: 0,
            dated: VecDeque::new(),
        }
    }

    /// With logrotate's `compress` (and `delaycompress`) option.
    pub fn compress(mut self, compress: Compress) -> Logrotate {
        assert!(
            compress == Compress::Off || self.naming == Naming::Numbered,
            "compress is modelled with numbered names only"
        );
        self.compress = compress;
        self
    }

    /// How many lines were written (numbers `0..written()`).
    pub fn written(&self) -> u64 {
        self.placed.len() as u64
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.log
    }

    /// Where line `n` went: its file (a generation, numbered from 0 in the
    /// order they were created) and its byte offset in that file.
    pub fn placement(&self, n: u64) -> Option<(usize, u64)> {
        let p = self.placed.get(usize::try_from(n).ok()?)?;
        Some((p.generation, p.offset))
    }

    fn dir(&self) -> PathBuf {
        self.log.parent().unwrap().to_path_buf()
    }

    /// The generation at the path, creating the file (as the application's
    /// `O_CREAT` open would) when there is none.
    fn path_generation(&mut self) -> usize {
        if let Some(g) = self.at_path {
            return g;
        }
        assert!(
            !self.log.exists(),
            "{} appeared by itself",
            self.log.display()
        );
        self.create()
    }

    /// logrotate's `create`: a new empty file at the path (a new
    /// generation). The application still writes to its old handle until
    /// [`Logrotate::reopen`].
    pub fn create(&mut self) -> usize {
        File::options()
            .write(true)
            .create_new(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("create {}: {e}", self.log.display()));
        self.lens.push(0);
        let g = self.lens.len() - 1;
        self.at_path = Some(g);
        g
    }

    /// The application reopens its log (logrotate's `postrotate` signal):
    /// its handle moves to the file at the path, created if missing.
    pub fn reopen(&mut self) {
        let generation = self.path_generation();
        let file = OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        self.app = Some(AppHandle { file, generation });
    }

    /// Appends `bytes` (lines starting at number `first`, `LINE_LEN` apart)
    /// through `file`, which writes to `generation`.
    fn append(&mut self, file: &mut File, generation: usize, first: u64, bytes: &[u8]) {
        assert!(
            !self.ended_partial.contains(&generation),
            "generation {generation} ends with a partial line"
        );
        if self
            .placed
            .last()
            .is_some_and(|p| p.generation > generation)
        {
            self.interleaved = true;
        }
        assert_eq!(first, self.written());
        let start = self.lens[generation];
        let lines = bytes.len().div_ceil(LINE_LEN);
        for i in 0..lines {
            self.placed.push(Placed {
                generation,
                offset: start + (i * LINE_LEN) as u64,
            });
        }
        file.write_all(bytes).expect("write the log");
        self.lens[generation] += bytes.len() as u64;
    }

    /// `lines` whole lines through the application's handle.
    pub fn write(&mut self, lines: u64) {
        if self.app.is_none() {
            self.reopen();
        }
        let AppHandle {
            mut file,
            generation,
        } = self.app.take().unwrap();
        let first = self.written();
        let bytes = numbered_bytes(first, first + lines);
        self.append(&mut file, generation, first, &bytes);
        self.app = Some(AppHandle { file, generation });
    }

    /// `lines` whole lines through a new handle on the path (another
    /// process appending to the file that is there now).
    pub fn write_via_path(&mut self, lines: u64) {
        let generation = self.path_generation();
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        let first = self.written();
        let bytes = numbered_bytes(first, first + lines);
        self.append(&mut file, generation, first, &bytes);
    }

    /// One numbered line without its newline, through the application's
    /// handle: the last bytes ever written to that file.
    pub fn write_partial(&mut self) {
        if self.app.is_none() {
            self.reopen();
        }
        let AppHandle {
            mut file,
            generation,
        } = self.app.take().unwrap();
        let first = self.written();
        let line = numbered_line(first);
        self.append(&mut file, generation, first, line.as_bytes());
        self.ended_partial.push(generation);
        // The daemon holds an unterminated line until the renamed file is
        // finished (idle for `rotate_wait`): it arrives after the newer
        // file's lines.
        self.interleaved = true;
    }

    /// About 4,000 lines a second for `dur`, through the application's
    /// handle.
    pub fn write_for(&mut self, dur: Duration) {
        let t = Instant::now();
        while t.elapsed() < dur {
            self.write(100);
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The name of rotated file `i` (numbered), with `.gz` if `gz`.
    fn nth(&self, i: usize, gz: bool) -> PathBuf {
        let ext = if gz { ".gz" } else { "" };
        self.dir().join(format!("app.log.{i}{ext}"))
    }

    /// Makes room for a new rotated file: numbered names shift up (plain
    /// and `.gz` alike, the oldest beyond three deleted); returns the name
    /// the file at the path gets.
    fn make_room(&mut self) -> PathBuf {
        self.rotations += 1;
        match self.naming {
            Naming::Numbered => {
                for gz in [false, true] {
                    let _ = std::fs::remove_file(self.nth(KEEP, gz));
                    for i in (1..KEEP).rev() {
                        if self.nth(i, gz).exists() {
                            std::fs::rename(self.nth(i, gz), self.nth(i + 1, gz))
                                .expect("shift a rotated file");
                        }
                    }
                }
                self.nth(1, false)
            }
            Naming::DateExt => {
                let hour = 17 + self.rotations;
                let name = self.dir().join(format!("app.log-20261203{hour:02}"));
                self.dated.push_back(name.clone());
                if self.dated.len() > KEEP {
                    let oldest = self.dated.pop_front().unwrap();
                    std::fs::remove_file(&oldest).expect("delete the oldest rotated file");
                }
                name
            }
        }
    }

    /// logrotate's `create` mode, first step: older files shift, and the
    /// log is renamed to `app.log.1` (or its `dateext` name), leaving no
    /// file at the path. The application keeps writing to the renamed
    /// file. Returns its new name.
    pub fn rename_away(&mut self) -> PathBuf {
        assert!(self.at_path.is_some(), "no file at the path to rotate");
        let to = self.make_room();
        std::fs::rename(&self.log, &to).expect("rename the log away");
        self.at_path = None;
        to
    }

    /// logrotate's compression after `postrotate`: every plain numbered
    /// file from `app.log.1` (`compress`) or `app.log.2` (`delaycompress`)
    /// on is written to `<name>.gz` and deleted, as gzip does.
    pub fn compress_rotated(&mut self) {
        let first = match self.compress {
            Compress::Off => return,
            Compress::Immediate => 1,
            Compress::Delayed => 2,
        };
        for i in first..=KEEP {
            let plain = self.nth(i, false);
            if plain.exists() {
                gzip(&plain, &self.nth(i, true));
            }
        }
    }

    /// A whole `create` rotation: rename away, create, the application
    /// reopens, and compression. Returns the rotated file's name.
    pub fn rotate(&mut self) -> PathBuf {
        let rotated = self.rename_away();
        self.create();
        self.reopen();
        self.compress_rotated();
        rotated
    }

    /// logrotate's `copytruncate` (the writer paused: nothing is written
    /// between the copy and the truncate). The truncated file is a new
    /// generation; the application's handle (`O_APPEND`) writes there.
    /// Returns the copy's path.
    pub fn copytruncate(&mut self) -> PathBuf {
        let g = self.at_path.expect("no file at the path to copy");
        let copy = self.make_room();
        std::fs::copy(&self.log, &copy).expect("copy");
        super::truncate(&self.log);
        self.lens.push(0);
        let new = self.lens.len() - 1;
        self.at_path = Some(new);
        if let Some(app) = self.app.as_mut().filter(|a| a.generation == g) {
            app.generation = new;
        }
        copy
    }

    /// Every line written arrived exactly once, with its exact bytes, the
    /// log's path and its offset in its own file; in file order within
    /// each file, and across files too unless lines were written to a
    /// renamed file after a newer one got lines.
    pub fn check(&self, msgs: &[Msg]) {
        assert_exactly_once(msgs, 0..self.written());
        if !self.interleaved {
            assert_file_order(msgs);
        }
        let path = self.log.to_str().unwrap();
        let mut bad = Vec::new();
        // generation -> the last line number delivered from it.
        let mut last: BTreeMap<usize, u64> = BTreeMap::new();
        for m in msgs {
            let n = number_of(&m.value).expect("a numbered line");
            let p = self.placed[n as usize];
            let want = p.offset.to_string();
            if m.header("offset").as_deref() != Some(want.as_str())
                || m.header("path").as_deref() != Some(path)
                || m.value != numbered_line(n).as_bytes()
            {
                bad.push(format!(
                    "line {n}: offset {:?} (want {want}), path {:?}, value {:?}",
                    m.header("offset"),
                    m.header("path"),
                    String::from_utf8_lossy(&m.value)
                ));
            }
            if let Some(prev) = last.insert(p.generation, n).filter(|&prev| prev > n) {
                bad.push(format!(
                    "line {n} of file #{} after line {prev} of the same file",
                    p.generation
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{} lines with a wrong offset, path, value or order, first: {:#?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    /// Reads `topic` until every line written arrived (or
    /// [`ROTATION_WAIT`]); checks it ([`Logrotate::check`]).
    pub fn delivered(&self, env: &TestEnv, d: &mut Daemon, topic: &str) {
        let total = self.written();
        let msgs = d
            .consume(&env.addr(), topic)
            .until(|msgs| Tally::of(msgs, 0..total).missing.is_empty())
            .timeout(ROTATION_WAIT)
            .run();
        self.check(&msgs);
    }
}

/// Lines `from..to`, each with its newline.
fn numbered_bytes(from: u64, to: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity((to - from) as usize * LINE_LEN);
    for n in from..to {
        buf.extend_from_slice(numbered_line(n).as_bytes());
        buf.push(b'\n');
    }
    buf
}

/// gzip's way: `<plain>.gz` written from the plain file (at its final name,
/// growing while it is written), then the plain file deleted.
fn gzip(plain: &Path, gz: &Path) {
    let mut from = File::open(plain).unwrap_or_else(|e| panic!("open {}: {e}", plain.display()));
    let to = File::create(gz).unwrap_or_else(|e| panic!("create {}: {e}", gz.display()));
    let mut enc = GzEncoder::new(to, flate2::Compression::default());
    std::io::copy(&mut from, &mut enc).expect("gzip");
    enc.finish()
        .expect("gzip")
        .sync_all()
        .expect("sync the .gz");
    std::fs::remove_file(plain).expect("delete the compressed file");
}

/// How many files the daemon has opened (all runs).
pub fn opened(d: &Daemon) -> usize {
    d.log_count(OPENED)
}

/// Waits until the daemon opened a file after the first `before` and the
/// last one it opened is the file at `log` (not a rotated file or a copy):
/// it finished the old file and is back on the path.
pub fn wait_back_on_path(d: &mut Daemon, log: &Path, before: usize) {
    let at_path = format!("{OPENED}{} offset=", log.display());
    let t = Instant::now();
    loop {
        let lines = d.log_lines(OPENED);
        if lines.len() > before && lines.last().is_some_and(|l| l.contains(&at_path)) {
            return;
        }
        d.assert_running();
        assert!(
            t.elapsed() < ROTATION_WAIT,
            "the daemon did not come back to {} after the rotation:\n{}",
            log.display(),
            d.log_tail(30)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Where a `kill -9` lands in a rotation cycle of
/// [`rotate_while_running`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAt {
    /// No kill in this cycle.
    Nowhere,
    /// While lines are written, between rotations.
    Writing,
    /// After the rename, before logrotate creates the new file (the path
    /// names no file; the application writes to the renamed one).
    AfterRename,
    /// Right after the new file is created and the application reopened:
    /// before the daemon noticed, or while it finishes the renamed file.
    AfterReopen,
    /// After the compression (with `compress`).
    AfterCompress,
}

/// `kill -9`, 300 lines written through the application's handle while
/// the daemon is down, a random down time, restart.
pub fn kill9_and_restart(d: &mut Daemon, lr: &mut Logrotate, rng: &mut Rng) {
    d.assert_running();
    d.kill9();
    lr.write(300);
    thread::sleep(Duration::from_millis(rng.range(0..200)));
    d.restart();
}

/// `rotations` `create` rotations while the daemon runs: lines written
/// for about `interval` (a seeded part of it with `rng`), a burst of 1,000
/// right before the rename (so the renamed file holds lines the daemon
/// has not read), 200 more the application writes to the renamed file
/// before logrotate creates the new one, then create, reopen and
/// compression ([`Logrotate::rotate`] in steps). With `rng`, each cycle has
/// a `kill -9` at a seeded [`KillAt`] or none, and at least one cycle has
/// one. Returns where the kills landed.
///
/// The application writes nothing to the renamed file after logrotate
/// created the new one: such late lines need the daemon to keep reading
/// the renamed file (`rotate_wait`), a scenario of its own.
pub fn rotate_while_running(
    lr: &mut Logrotate,
    d: &mut Daemon,
    rotations: usize,
    interval: Duration,
    mut rng: Option<&mut Rng>,
) -> Vec<KillAt> {
    let mut moments = vec![KillAt::Writing, KillAt::AfterRename, KillAt::AfterReopen];
    if lr.compress != Compress::Off {
        moments.push(KillAt::AfterCompress);
    }
    let forced = rng.as_mut().map(|r| r.range(0..rotations as u64) as usize);
    let mut kills = Vec::new();
    let ms = interval.as_millis() as u64;
    for cycle in 0..rotations {
        let (at, wait) = match rng.as_mut() {
            None => (KillAt::Nowhere, ms),
            Some(r) => {
                // One in (moments + 1) cycles has no kill, unless forced.
                let pick = r.range(0..moments.len() as u64 + 1) as usize;
                let at = match moments.get(pick) {
                    Some(&at) => at,
                    None if forced == Some(cycle) => moments[0],
                    None => KillAt::Nowhere,
                };
                (at, r.range(ms / 2..ms))
            }
        };
        let mut kill_here = |lr: &mut Logrotate, d: &mut Daemon, here: KillAt| {
            if at == here {
                let r = rng.as_deref_mut().expect("kills only with an rng");
                if here == KillAt::AfterReopen {
                    // Before the daemon noticed the new file, or while it
                    // finishes the renamed one.
                    thread::sleep(Duration::from_millis(r.range(0..40)));
                }
                kill9_and_restart(d, lr, r);
            }
        };
        if at == KillAt::Writing {
            lr.write_for(Duration::from_millis(wait / 2));
            kill_here(lr, d, KillAt::Writing);
            lr.write_for(Duration::from_millis(wait / 2));
        } else {
            lr.write_for(Duration::from_millis(wait));
        }
        lr.write(1_000);
        lr.rename_away();
        lr.write(200);
        kill_here(lr, d, KillAt::AfterRename);
        lr.create();
        lr.reopen();
        kill_here(lr, d, KillAt::AfterReopen);
        lr.compress_rotated();
        kill_here(lr, d, KillAt::AfterCompress);
        d.assert_running();
        if at != KillAt::Nowhere {
            kills.push(at);
        }
    }
    kills
}
