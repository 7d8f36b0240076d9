//! A damaged spool: bytes flipped in a frame, or a segment cut short, in
//! the middle of the spool. The damaged frames are skipped and counted;
//! every other line is delivered, none twice.

use std::path::Path;
use std::thread;
use std::time::Duration;

use super::{TOPIC, WAIT};
use crate::common::*;

/// One decoded frame of a segment file.
#[derive(Debug, Clone)]
struct FrameInfo {
    segment: u64,
    at: u64,
    len: u64,
    numbers: Vec<u64>,
}

/// Every frame of every segment in `spool`, decoded with the daemon's own
/// frame code.
fn frames_of(spool: &Path) -> Vec<FrameInfo> {
    let mut out = Vec::new();
    for id in logcatch::spool::list_segments(spool).unwrap() {
        let bytes = std::fs::read(logcatch::spool::segment_path(spool, id)).unwrap();
        let mut at = 0usize;
        while at < bytes.len() {
            let (batch, n) = logcatch::spool::decode_frame(&bytes[at..])
                .unwrap_or_else(|e| panic!("segment {id} at {at}: {e:?}"));
            out.push(FrameInfo {
                segment: id,
                at: at as u64,
                len: n,
                numbers: batch
                    .iter_lines()
                    .map(|(_, l)| number_of(l).expect("numbered line"))
                    .collect(),
            });
            at += n as usize;
        }
    }
    out
}

enum Damage {
    /// Flip bytes in the middle of a frame's payload.
    Flip,
    /// Cut the segment in the middle of a frame.
    Cut,
}

/// Tailer reads (frames) while the broker is away, and lines per read.
const ROUNDS: u64 = 30;
const PER: u64 = 150;
const TOTAL: u64 = ROUNDS * PER;

/// Fills the spool while the broker is away, stops, damages a segment in
/// the middle of the spool, restarts with the broker back.
fn spool_damage(damage: Damage) {
    let mut env = TestEnv::with_proxy();
    env.broker.create_topic(TOPIC, 1);
    env.broker.proxy_mut().down();
    let log = env.path("app.log");
    std::fs::write(&log, b"").unwrap();
    let cfg = env
        .config(TOPIC)
        .source("app", &log)
        .spool("segment_bytes", "64KiB")
        .kafka("shutdown_ack_timeout", "1s");
    let mut d = env.start(&cfg);
    // Many small tailer reads: many frames, several segments.
    for r in 0..ROUNDS {
        write_numbered(&log, r * PER, (r + 1) * PER);
        thread::sleep(Duration::from_millis(120));
    }
    let size = std::fs::metadata(&log).unwrap().len();
    wait_offsets_row(d.config_path(), "app", "every line spooled", WAIT, |r| {
        r["offset"].as_u64() == Some(size)
    });
    d.stop();

    let spool = env.path("data/spool");
    let frames = frames_of(&spool);
    let mut spooled: Vec<u64> = frames.iter().flat_map(|f| f.numbers.clone()).collect();
    spooled.sort_unstable();
    assert_eq!(
        spooled,
        (0..TOTAL).collect::<Vec<_>>(),
        "the spool does not hold every line exactly once before the damage"
    );
    let (lost, damaged_frames) = damage_middle_segment(&spool, &frames, damage);
    let mut lost_sorted = lost.clone();
    lost_sorted.sort_unstable();

    env.broker.proxy_mut().up();
    d.restart();
    let expect: Vec<u64> = (0..TOTAL)
        .filter(|n| lost_sorted.binary_search(n).is_err())
        .collect();
    let msgs = d
        .consume(&env.addr(), TOPIC)
        .until_count(expect.len())
        .timeout(WAIT)
        .run();
    d.assert_running();
    let line = d.wait_log("damaged spool frame", 1, WAIT);
    eprintln!("spool damage: {line}");
    let q = ctl_json(d.config_path(), &["queue", "--json"]);
    eprintln!(
        "spool damage: queue damaged_frames {} damaged_bytes {}",
        q["damaged_frames"], q["damaged_bytes"]
    );
    assert!(
        q["damaged_frames"].as_u64().unwrap_or(0) >= 1,
        "logcatch-ctl queue does not count the damaged frame: {q:#}"
    );

    check_delivery_after_damage(&msgs, &lost, damaged_frames);
    d.stop();
}

/// Damages a segment in the middle of the spool (neither the oldest nor the
/// newest, which recovery would treat as a torn tail) in the frame at its
/// middle. Returns the numbers of the lines the damage took, and how many
/// frames it damaged.
fn damage_middle_segment(spool: &Path, frames: &[FrameInfo], damage: Damage) -> (Vec<u64>, usize) {
    let mut segs: Vec<u64> = frames.iter().map(|f| f.segment).collect();
    segs.dedup();
    assert!(
        segs.len() >= 3,
        "want at least 3 segments with frames, have {segs:?}"
    );
    // A segment in the middle of the spool (neither the oldest nor the
    // newest, which recovery would treat as a torn tail).
    let seg = segs[segs.len() / 2];
    let in_seg: Vec<&FrameInfo> = frames.iter().filter(|f| f.segment == seg).collect();
    let seg_path = logcatch::spool::segment_path(spool, seg);
    let seg_len = std::fs::metadata(&seg_path).unwrap().len();
    let mid = seg_len / 2;
    let hit = in_seg
        .iter()
        .position(|f| f.at <= mid && mid < f.at + f.len)
        .unwrap();
    let f = in_seg[hit];
    let target = f.at + 8 + (f.len - 8) / 2;
    let lost: Vec<u64> = match damage {
        Damage::Flip => {
            let mut bytes = std::fs::read(&seg_path).unwrap();
            for b in &mut bytes[target as usize..target as usize + 4] {
                *b ^= 0xff;
            }
            std::fs::write(&seg_path, &bytes).unwrap();
            eprintln!(
                "spool damage: flipped 4 bytes at {target} of segment {seg} ({seg_len} bytes), in the frame at {} ({} bytes, {} lines)",
                f.at,
                f.len,
                f.numbers.len()
            );
            f.numbers.clone()
        }
        Damage::Cut => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&seg_path)
                .unwrap()
                .set_len(target)
                .unwrap();
            let lost: Vec<u64> = in_seg[hit..]
                .iter()
                .flat_map(|f| f.numbers.clone())
                .collect();
            eprintln!(
                "spool damage: cut segment {seg} from {seg_len} to {target} bytes, in the frame at {} ({} frame(s), {} lines after the cut)",
                f.at,
                in_seg.len() - hit,
                lost.len()
            );
            lost
        }
    };
    let damaged_frames = match damage {
        Damage::Flip => 1,
        Damage::Cut => in_seg.len() - hit,
    };
    (lost, damaged_frames)
}

/// Every line but those of the damaged frames arrived, none twice, and the
/// loss is within what the damaged frames can hold.
fn check_delivery_after_damage(msgs: &[Msg], lost: &[u64], damaged_frames: usize) {
    let mut lost_sorted = lost.to_vec();
    lost_sorted.sort_unstable();
    let counts = number_counts(msgs, "app");
    let delivered = counts.len() as u64;
    let dups: Vec<u64> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    let missing: Vec<u64> = (0..TOTAL).filter(|n| !counts.contains_key(n)).collect();
    // One frame is one tailer read of at most read_buffer (256 KiB).
    let per_frame = (256 * 1024 / LINE_LEN as u64) + 1;
    let bound = per_frame * damaged_frames as u64;
    eprintln!(
        "spool damage: written {TOTAL}, delivered {delivered}, missing {} (the damaged frame(s) held {}), duplicated {}; bound on the loss {bound}",
        missing.len(),
        lost.len(),
        dups.len()
    );
    assert!(dups.is_empty(), "duplicated: {}", ranges(dups));
    assert!(
        delivered >= TOTAL.saturating_sub(bound),
        "lost {} lines, more than {damaged_frames} frame(s) can hold ({bound})",
        TOTAL - delivered
    );
    assert_eq!(
        missing,
        lost_sorted,
        "the lines missing are not exactly those of the damaged frame(s): missing {}, damaged {}",
        ranges(missing.clone()),
        ranges(lost_sorted.clone())
    );
}

/// Bytes flipped in the middle of a spool segment: that frame is skipped
/// and counted, every other line is delivered.
#[test]
fn spool_segment_with_flipped_bytes() {
    spool_damage(Damage::Flip);
}

/// A spool segment cut short in the middle: the rest of that segment is
/// skipped and counted, every other line is delivered.
#[test]
fn spool_segment_cut_short() {
    spool_damage(Damage::Cut);
}
