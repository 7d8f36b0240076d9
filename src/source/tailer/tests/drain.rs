//! Draining rotated files ([`crate::source::tailer::drain`]): late writes
//! through a descriptor opened before a rename rotation are read beside the
//! new file, across restarts, until the file is idle for `rotate_wait` or
//! deleted; the source's record holds both positions meanwhile.

use super::*;

/// `mv app.log app.log.1`, an empty `app.log`, and an `O_APPEND` handle on
/// the old file kept open, as a program that has not reopened yet.
fn rotate_keeping_handle(h: &Harness) -> std::fs::File {
    let old = OpenOptions::new().append(true).open(&h.path).unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"").unwrap();
    old
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn late_writes_to_a_renamed_file_are_read_beside_the_new_file() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_secs(3600));
    append(&h.path, b"one\ntwo\n");
    h.catch_up();
    let mut old = rotate_keeping_handle(&h);
    append(&h.path, b"new 1\n");
    h.catch_up();
    old.write_all(b"late 1\nlate 2\n").unwrap();
    append(&h.path, b"new 2\n");
    h.catch_up();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(got, ["late 1", "late 2", "new 1", "new 2", "one", "two"]);
    let rec = h.committed();
    assert_eq!(
        rec.identity.ino,
        ino(&h.path),
        "the record's own file is the new one"
    );
    assert_eq!(rec.offset, 12);
    assert_eq!(rec.draining.len(), 1, "{rec:?}");
    assert_eq!(rec.draining[0].identity.ino, ino(&h.rotated));
    assert_eq!(rec.draining[0].offset, 22);
    let status = lock(&h.tail.status()).clone();
    assert_eq!(status.draining.len(), 1, "{status:?}");
    assert!(status.draining[0].path.ends_with("app.log.1"), "{status:?}");
}

#[test]
fn a_restart_while_draining_resumes_the_rotated_file_at_its_offset() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_secs(3600));
    append(&h.path, b"one\n");
    h.catch_up();
    let mut old = rotate_keeping_handle(&h);
    old.write_all(b"late 1\npart").unwrap();
    append(&h.path, b"new 1\n");
    h.catch_up();
    h.restart();
    old.write_all(b"ial\nlate 3\n").unwrap();
    append(&h.path, b"new 2\n");
    h.catch_up();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(
        got,
        ["late 1", "late 3", "new 1", "new 2", "one", "partial"],
        "every line once, the held partial line read again whole"
    );
    let rec = h.committed();
    assert_eq!(rec.identity.ino, ino(&h.path));
    assert_eq!(rec.draining.len(), 1, "{rec:?}");
}

#[test]
fn a_rotated_file_idle_for_rotate_wait_is_finished_and_leaves_the_record() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_millis(100));
    append(&h.path, b"one\n");
    h.catch_up();
    let mut old = rotate_keeping_handle(&h);
    old.write_all(b"late\nunterminated").unwrap();
    append(&h.path, b"new\n");
    h.catch_up();
    assert_eq!(h.committed().draining.len(), 1);
    std::thread::sleep(Duration::from_millis(150));
    h.catch_up();
    assert_eq!(h.emitted, ["one", "late", "new", "unterminated"]);
    let rec = h.committed();
    assert!(rec.draining.is_empty(), "{rec:?}");
    assert!(lock(&h.tail.status()).draining.is_empty());
    // Written after it was finished: not read (the documented limit).
    old.write_all(b"too late\n").unwrap();
    h.catch_up();
    assert_eq!(h.emitted.len(), 4);
}

#[test]
fn a_deleted_rotated_file_is_finished_at_its_end_without_waiting() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_secs(3600));
    append(&h.path, b"one\n");
    h.catch_up();
    let mut old = rotate_keeping_handle(&h);
    old.write_all(b"late\n").unwrap();
    std::fs::remove_file(&h.rotated).unwrap();
    append(&h.path, b"new\n");
    h.catch_up();
    assert_eq!(h.emitted, ["one", "late", "new"]);
    assert!(h.committed().draining.is_empty());
}

#[test]
fn a_rotation_while_stopped_drains_the_old_rest_before_the_new_lines() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_secs(3600));
    append(&h.path, b"one\n");
    h.catch_up();
    h.restart();
    append(&h.path, b"unread 1\nunread 2\n");
    let mut old = rotate_keeping_handle(&h);
    append(&h.path, b"new\n");
    h.catch_up();
    assert_eq!(h.emitted, ["one", "unread 1", "unread 2", "new"]);
    old.write_all(b"late\n").unwrap();
    h.catch_up();
    assert_eq!(h.emitted.last().map(String::as_str), Some("late"));
}

#[test]
fn two_rotations_drain_both_old_files() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_secs(3600));
    append(&h.path, b"gen 0\n");
    h.catch_up();
    let mut gen0 = rotate_keeping_handle(&h);
    append(&h.path, b"gen 1\n");
    h.catch_up();
    let mut gen1 = OpenOptions::new().append(true).open(&h.path).unwrap();
    std::fs::rename(&h.rotated, h.path.with_file_name("app.log.2")).unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"gen 2\n").unwrap();
    h.catch_up();
    gen0.write_all(b"late 0\n").unwrap();
    gen1.write_all(b"late 1\n").unwrap();
    h.catch_up();
    h.restart();
    gen0.write_all(b"later 0\n").unwrap();
    h.catch_up();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(
        got,
        ["gen 0", "gen 1", "gen 2", "late 0", "late 1", "later 0"]
    );
    assert_eq!(h.committed().draining.len(), 2);
}

#[test]
fn two_rename_rotations_while_stopped_read_the_middle_generation_from_0() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::ZERO);
    append(&h.path, b"gen 0 a\n");
    h.catch_up();
    h.restart();
    // mtimes are compared with the record's last commit (milliseconds).
    std::thread::sleep(Duration::from_millis(20));
    append(&h.path, b"gen 0 b\n");
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"gen 1\n").unwrap();
    std::fs::rename(&h.rotated, h.path.with_file_name("app.log.2")).unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"gen 2\n").unwrap();
    h.catch_up();
    assert_eq!(h.emitted, ["gen 0 a", "gen 0 b", "gen 1", "gen 2"]);
    // A second restart reads nothing again.
    h.restart();
    h.catch_up();
    assert_eq!(h.emitted.len(), 4);
}

#[test]
fn two_copytruncates_while_stopped_read_the_second_copy_from_0() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::ZERO);
    append(&h.path, b"gen 0 a\n");
    h.catch_up();
    h.restart();
    std::thread::sleep(Duration::from_millis(20));
    append(&h.path, b"gen 0 b\n");
    std::fs::copy(&h.path, &h.rotated).unwrap();
    truncate(&h.path);
    append(&h.path, b"gen 1\n");
    std::fs::rename(&h.rotated, h.path.with_file_name("app.log.2")).unwrap();
    std::fs::copy(&h.path, &h.rotated).unwrap();
    truncate(&h.path);
    append(&h.path, b"gen 2\n");
    h.catch_up();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(got, ["gen 0 a", "gen 0 b", "gen 1", "gen 2"]);
    assert_eq!(h.gaps(), 0);
    h.restart();
    h.catch_up();
    assert_eq!(h.emitted.len(), 4);
}

#[test]
fn an_old_rotated_file_and_compressed_ones_are_not_taken_for_unread_generations() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::ZERO);
    std::fs::write(h.path.with_file_name("app.log.3"), b"read long ago\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    append(&h.path, b"one\n");
    h.catch_up();
    h.restart();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(h.path.with_file_name("app.log.2.gz"), b"\x1f\x8b not text").unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"two\n").unwrap();
    h.catch_up();
    assert_eq!(h.emitted, ["one", "two"]);
}

/// gzip `from` into `to` and delete `from`, as logrotate's `compress` does.
fn gzip_away(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).unwrap();
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(&bytes).unwrap();
    e.finish().unwrap();
    std::fs::remove_file(from).unwrap();
}

#[test]
fn a_rotation_compressed_while_stopped_is_read_from_the_gz() {
    let mut h = Harness::with_rotate_wait(64, Duration::from_secs(3600));
    let read: Vec<u8> = (0..50)
        .flat_map(|i| format!("read {i}\n").into_bytes())
        .collect();
    append(&h.path, &read);
    h.catch_up();
    h.restart();
    let unread: Vec<u8> = (0..50)
        .flat_map(|i| format!("unread {i}\n").into_bytes())
        .collect();
    append(&h.path, &unread);
    std::fs::rename(&h.path, &h.rotated).unwrap();
    gzip_away(&h.rotated, &h.path.with_file_name("app.log.1.gz"));
    std::fs::write(&h.path, b"new\n").unwrap();
    // A crash in the middle of the compressed rest resumes there.
    while h.emitted.len() < 60 {
        let step = h.tail.step();
        h.commit_step(step);
    }
    let _lost = h.tail.step();
    h.restart();
    h.catch_up();
    let mut want: Vec<String> = (0..50).map(|i| format!("read {i}")).collect();
    want.extend((0..50).map(|i| format!("unread {i}")));
    want.push("new".into());
    let mut got = h.emitted.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(h.gaps(), 0);
    assert!(h.committed().draining.is_empty(), "{:?}", h.committed());
}

#[test]
fn a_copytruncate_compressed_while_stopped_is_read_from_the_gz() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::ZERO);
    append(&h.path, b"one\ntwo\n");
    h.catch_up();
    h.restart();
    append(&h.path, b"three\n");
    std::fs::copy(&h.path, &h.rotated).unwrap();
    truncate(&h.path);
    gzip_away(&h.rotated, &h.path.with_file_name("app.log.1.gz"));
    append(&h.path, b"new\n");
    h.catch_up();
    assert_eq!(h.emitted, ["one", "two", "three", "new"]);
    assert_eq!(h.gaps(), 0);
    h.restart();
    h.catch_up();
    assert_eq!(h.emitted.len(), 4);
}

/// A tailer of `app.log.gz` (a compressed source, read once).
fn gz_source(h: &mut Harness) -> PathBuf {
    let gz = h.path.with_file_name("old.log.gz");
    h.config.path = gz.clone();
    h.restart();
    gz
}

#[test]
fn a_gz_source_is_read_once_and_resumed_at_its_unpacked_offset() {
    let mut h = Harness::with_rotate_wait(64, Duration::ZERO);
    let gz = gz_source(&mut h);
    let plain = h.path.with_file_name("old.log");
    let text: Vec<u8> = (0..40)
        .flat_map(|i| format!("old {i}\n").into_bytes())
        .collect();
    std::fs::write(&plain, &text).unwrap();
    gzip_away(&plain, &gz);
    while h.emitted.len() < 15 {
        let step = h.tail.step();
        h.commit_step(step);
    }
    let _lost = h.tail.step();
    h.restart();
    h.catch_up();
    let want: Vec<String> = (0..40).map(|i| format!("old {i}")).collect();
    assert_eq!(h.emitted, want);
    let rec = h.committed();
    assert_eq!(rec.offset, text.len() as u64, "the unpacked offset");
    h.restart();
    h.catch_up();
    assert_eq!(h.emitted.len(), 40, "read once");
    // Replaced by another compressed file: read from 0.
    let text2 = b"next 0\nnext 1\n";
    std::fs::write(&plain, text2).unwrap();
    let tmp = h.path.with_file_name("tmp.gz");
    gzip_away(&plain, &tmp);
    std::fs::rename(&tmp, &gz).unwrap();
    h.catch_up();
    assert_eq!(&h.emitted[40..], ["next 0", "next 1"]);
}

#[test]
fn a_rotated_file_is_drained_while_the_path_is_missing_at_start() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_secs(3600));
    append(&h.path, b"one\n");
    h.catch_up();
    h.restart();
    let mut old = OpenOptions::new().append(true).open(&h.path).unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    old.write_all(b"late\n").unwrap();
    for _ in 0..3 {
        let step = h.tail.step();
        h.commit_step(step);
    }
    assert_eq!(h.emitted, ["one", "late"], "read with no file at the path");
    assert_eq!(h.gaps(), 0);
    std::fs::write(&h.path, b"new\n").unwrap();
    h.catch_up();
    assert_eq!(h.emitted, ["one", "late", "new"]);
}

#[test]
fn a_draining_file_back_at_the_path_goes_on_where_it_was() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_secs(3600));
    append(&h.path, b"one\n");
    h.catch_up();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"").unwrap();
    h.catch_up();
    // Renamed back over the new (empty) file.
    std::fs::rename(&h.rotated, &h.path).unwrap();
    append(&h.path, b"two\n");
    h.catch_up();
    assert_eq!(h.emitted, ["one", "two"]);
    let rec = h.committed();
    assert_eq!(rec.identity.ino, ino(&h.path));
    assert_eq!(rec.offset, 8);
}

/// Two rotations while stopped, the first file with an unread rest: stop
/// after the start's first step (before the middle generation's first
/// line), start again. The middle generation was named in the record at
/// the first start, so it is still read.
#[test]
fn a_crash_early_in_the_start_after_two_rotations_keeps_the_middle_generation() {
    let mut h = Harness::with_rotate_wait(16, Duration::ZERO);
    append(&h.path, b"gen 0 a\n");
    h.catch_up();
    h.restart();
    std::thread::sleep(Duration::from_millis(20));
    let rest: Vec<u8> = (0..40)
        .flat_map(|i| format!("gen 0 rest {i}\n").into_bytes())
        .collect();
    append(&h.path, &rest);
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"gen 1\n").unwrap();
    std::fs::rename(&h.rotated, h.path.with_file_name("app.log.2")).unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"gen 2\n").unwrap();
    for _ in 0..3 {
        let step = h.tail.step();
        h.commit_step(step);
    }
    assert!(
        !h.emitted.contains(&"gen 1".to_string()),
        "still behind the old rest"
    );
    h.restart();
    h.catch_up();
    let mut want: Vec<String> = vec!["gen 0 a".into(), "gen 1".into(), "gen 2".into()];
    want.extend((0..40).map(|i| format!("gen 0 rest {i}")));
    want.sort();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(got, want);
}

/// The same with no file at the path at the start (`nocreate`): the first
/// open is retried while the old rest is drained, and the middle
/// generation is still found when the file appears.
#[test]
fn two_rotations_while_stopped_with_the_path_missing_read_every_generation_once() {
    let mut h = Harness::with_rotate_wait(16, Duration::ZERO);
    append(&h.path, b"gen 0 a\n");
    h.catch_up();
    h.restart();
    std::thread::sleep(Duration::from_millis(20));
    append(&h.path, b"gen 0 b\n");
    std::fs::rename(&h.path, &h.rotated).unwrap();
    std::fs::write(&h.path, b"gen 1\n").unwrap();
    std::fs::rename(&h.rotated, h.path.with_file_name("app.log.2")).unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    for _ in 0..5 {
        let step = h.tail.step();
        h.commit_step(step);
    }
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&h.path, b"gen 2\n").unwrap();
    h.catch_up();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(got, ["gen 0 a", "gen 0 b", "gen 1", "gen 2"]);
    assert_eq!(h.gaps(), 0);
}

/// `compress` without `delaycompress`, two rotations while stopped: the
/// middle generation exists only as `app.log.1.gz` and was never read; it
/// is unpacked and read from 0, once.
#[test]
fn a_never_read_generation_already_gzipped_is_read_from_the_gz() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::ZERO);
    append(&h.path, b"gen 0 a\n");
    h.catch_up();
    h.restart();
    std::thread::sleep(Duration::from_millis(20));
    append(&h.path, b"gen 0 b\n");
    std::fs::rename(&h.path, &h.rotated).unwrap();
    gzip_away(&h.rotated, &h.path.with_file_name("app.log.1.gz"));
    std::fs::write(&h.path, b"gen 1 a\ngen 1 b\n").unwrap();
    std::fs::rename(
        h.path.with_file_name("app.log.1.gz"),
        h.path.with_file_name("app.log.2.gz"),
    )
    .unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    gzip_away(&h.rotated, &h.path.with_file_name("app.log.1.gz"));
    std::fs::write(&h.path, b"gen 2\n").unwrap();
    h.catch_up();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(got, ["gen 0 a", "gen 0 b", "gen 1 a", "gen 1 b", "gen 2"]);
    h.restart();
    h.catch_up();
    assert_eq!(h.emitted.len(), 5, "read once");
}

/// While an old file's backlog is drained the file at the path is rotated
/// (logcatch notices at once and names the new file), then logcatch stops
/// and another rotation happens: every generation is read once.
#[test]
fn a_rotation_during_a_backlog_is_noticed_at_once() {
    let mut h = Harness::with_rotate_wait(16, Duration::ZERO);
    let name = |n: u32| h.path.with_file_name(format!("app.log.{n}"));
    let (n1, n2, n3) = (name(1), name(2), name(3));
    append(&h.path, b"gen 0 a\n");
    h.catch_up();
    h.restart();
    let rest: Vec<u8> = (0..60)
        .flat_map(|i| format!("gen 0 rest {i}\n").into_bytes())
        .collect();
    append(&h.path, &rest);
    std::fs::rename(&h.path, &n1).unwrap();
    std::fs::write(&h.path, b"gen 1\n").unwrap();
    for _ in 0..3 {
        let step = h.tail.step();
        h.commit_step(step);
    }
    // Rotated while the backlog of gen 0 is read.
    std::fs::rename(&n1, &n2).unwrap();
    std::fs::rename(&h.path, &n1).unwrap();
    std::fs::write(&h.path, b"gen 2\n").unwrap();
    for _ in 0..3 {
        let step = h.tail.step();
        h.commit_step(step);
    }
    // Stopped; rotated again.
    h.restart();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(&n2, &n3).unwrap();
    std::fs::rename(&n1, &n2).unwrap();
    std::fs::rename(&h.path, &n1).unwrap();
    std::fs::write(&h.path, b"gen 3\n").unwrap();
    h.catch_up();
    let mut want: Vec<String> = vec![
        "gen 0 a".into(),
        "gen 1".into(),
        "gen 2".into(),
        "gen 3".into(),
    ];
    want.extend((0..60).map(|i| format!("gen 0 rest {i}")));
    want.sort();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(got, want);
}

/// `compress` without `delaycompress`, two rotations while stopped, and
/// the file system gave the inode of the record's file (gzipped and
/// deleted) to the newer `app.log.1.gz`: that `.gz` is a generation never
/// read, not the record's file still held (its device and inode name a
/// file that is gone), and is read from 0 (the rotation soak lost such a
/// generation whole).
#[test]
fn a_never_read_gz_on_the_inode_of_the_records_gone_file_is_read() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::ZERO);
    append(&h.path, b"gen 0 a\n");
    h.catch_up();
    h.restart();
    std::thread::sleep(Duration::from_millis(20));
    append(&h.path, b"gen 0 b\n");
    std::fs::rename(&h.path, &h.rotated).unwrap();
    gzip_away(&h.rotated, &h.path.with_file_name("app.log.2.gz"));
    std::fs::write(&h.path, b"gen 1 a\ngen 1 b\n").unwrap();
    std::fs::rename(&h.path, &h.rotated).unwrap();
    let newer_gz = h.path.with_file_name("app.log.1.gz");
    gzip_away(&h.rotated, &newer_gz);
    std::fs::write(&h.path, b"gen 2\n").unwrap();
    // The inode reuse, made certain: the record's file now "is" the .gz.
    let mut rec = h.committed();
    rec.identity.ino = ino(&newer_gz);
    h.store.put_source("app", &rec).unwrap();
    h.catch_up();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(got, ["gen 0 a", "gen 0 b", "gen 1 a", "gen 1 b", "gen 2"]);
    h.restart();
    h.catch_up();
    assert_eq!(h.emitted.len(), 5, "read once");
}

/// A rotated file drained when logcatch stopped is deleted by a rotation
/// while it is stopped, and the file system gives its inode to the
/// generation rotated next (never read, now `app.log.1`). The gone file's
/// position leaves the record without taking the new generation's with it
/// (the record tells positions apart by device and inode, and both have
/// the same): a stop right after the start's first step still finds that
/// generation at the next start (the rotation soak lost such a generation
/// whole, mode `late`).
#[test]
fn a_never_read_generation_on_the_inode_of_a_gone_draining_file_survives_a_stop() {
    let mut h = Harness::with_rotate_wait(64 << 10, Duration::from_secs(3600));
    let (n1, n2) = (
        h.path.with_file_name("app.log.1"),
        h.path.with_file_name("app.log.2"),
    );
    append(&h.path, b"gen 0 a\n");
    h.catch_up();
    std::fs::rename(&h.path, &n1).unwrap();
    std::fs::write(&h.path, b"gen 1 a\n").unwrap();
    h.catch_up();
    let gen0 = ino(&n1);
    assert!(
        h.committed()
            .draining
            .iter()
            .any(|d| d.identity.ino == gen0),
        "gen 0 is drained beside gen 1"
    );
    h.restart();
    std::thread::sleep(Duration::from_millis(20));
    // Two rotations while stopped; the first deletes gen 0.
    std::fs::remove_file(&n1).unwrap();
    std::fs::rename(&h.path, &n1).unwrap();
    std::fs::write(&h.path, b"gen 2 a\n").unwrap();
    std::fs::rename(&n1, &n2).unwrap();
    std::fs::rename(&h.path, &n1).unwrap();
    std::fs::write(&h.path, b"gen 3 a\n").unwrap();
    // The inode reuse, made certain: gen 0's position now names gen 2's
    // inode (with gen 0's first bytes).
    let mut rec = h.committed();
    for d in rec.draining.iter_mut().filter(|d| d.identity.ino == gen0) {
        d.identity.ino = ino(&n1);
    }
    h.store.put_source("app", &rec).unwrap();
    // The start's first step (it names gen 2 in the record), then a stop.
    let step = h.tail.step();
    h.commit_step(step);
    let gen2 = ino(&n1);
    assert!(
        h.committed()
            .draining
            .iter()
            .any(|d| d.identity.ino == gen2 && d.offset == 0),
        "gen 2 is named in the record at 0: {:?}",
        h.committed()
    );
    h.restart();
    h.catch_up();
    let mut got = h.emitted.clone();
    got.sort();
    assert_eq!(got, ["gen 0 a", "gen 1 a", "gen 2 a", "gen 3 a"]);
}
