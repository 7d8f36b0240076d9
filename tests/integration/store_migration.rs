//! The store's schema versions against the real binaries: version-0 and
//! version-1 stores built by hand with `sled` are upgraded (by
//! `logcatch-ctl offsets` offline, and by the daemon), and a store from a
//! newer logcatch is refused by both, with a message naming the path,
//! before anything is written.
//!
//! The layout these tests read (see `src/store/migrations/v0_to_v1.rs` and
//! `v1_to_v2.rs`): default tree keys `schema_version` = u32 big-endian and
//! (v2) `instance_id` = u64 big-endian; trees `sources` and `spool`; in
//! `spool`, key `ledger` (its v1 format is dropped by the v2 step).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(120);
const TOPIC: &str = "logs";
const VERSION_KEY: &[u8] = b"schema_version";
/// A key a v0 store may hold that no migration knows about: it must survive.
const FOREIGN_KEY: &[u8] = b"fixture-note";
const FOREIGN_VALUE: &[u8] = b"written by tests/integration/store_migration.rs as a v0 store";
const INSTANCE_ID_KEY: &[u8] = b"instance_id";
/// The schema version this build writes.
const CURRENT: u32 = 3;

/// Opens a sled db the way a test fixture needs: plain `sled::open`, which
/// is what any earlier logcatch build would have produced on disk.
fn open_sled(dir: &Path) -> sled::Db {
    // The daemon or logcatch-ctl may have just exited; sled's file lock is
    // released with the process, but retry briefly to be safe.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                eprintln!("sled::open({}) failed ({e}); retrying", dir.display());
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("sled::open({}): {e}", dir.display()),
        }
    }
}

/// Builds a version-0 store at `dir`: a sled db with no `schema_version`
/// key (and one unrelated key), flushed and closed.
fn make_v0_store(dir: &Path) {
    let db = open_sled(dir);
    assert!(db.get(VERSION_KEY).unwrap().is_none());
    db.insert(FOREIGN_KEY, FOREIGN_VALUE).unwrap();
    db.flush().unwrap();
    drop(db);
}

/// A v1 ledger, bincode (standard config) as v1 wrote it: source `app`,
/// topic `logs`: partition 0, last_offset 41, acked_beyond_cursor 3; not
/// clean. Read with the v2 format it would not decode.
const V1_LEDGER: &[u8] = &[
    1, 3, b'a', b'p', b'p', 1, 4, b'l', b'o', b'g', b's', 0, 82, 3, 0,
];

/// Builds a version-1 store at `dir`: `schema_version` 1, the `sources`
/// and `spool` trees, and a v1 ledger left by a crash (not clean).
fn make_v1_store(dir: &Path) {
    let db = open_sled(dir);
    db.insert(VERSION_KEY, &1u32.to_be_bytes()).unwrap();
    db.insert(FOREIGN_KEY, FOREIGN_VALUE).unwrap();
    db.open_tree("sources").unwrap();
    db.open_tree("spool")
        .unwrap()
        .insert(b"ledger", V1_LEDGER)
        .unwrap();
    db.flush().unwrap();
    drop(db);
}

/// Builds a store whose `schema_version` is `v`.
fn make_store_with_version(dir: &Path, v: u32) {
    let db = open_sled(dir);
    db.insert(VERSION_KEY, &v.to_be_bytes()).unwrap();
    db.insert(FOREIGN_KEY, FOREIGN_VALUE).unwrap();
    db.flush().unwrap();
    drop(db);
}

/// What is in the store now: (schema_version if present, tree names other
/// than the default one, the foreign key's value, `sources` tree keys).
struct StoreView {
    version: Option<Vec<u8>>,
    instance_id: Option<Vec<u8>>,
    ledger: Option<Vec<u8>>,
    trees: Vec<String>,
    foreign: Option<Vec<u8>>,
    source_names: Vec<String>,
}

fn inspect(dir: &Path) -> StoreView {
    let db = open_sled(dir);
    let version = db.get(VERSION_KEY).unwrap().map(|v| v.to_vec());
    let default_name = db.name();
    let mut trees: Vec<String> = db
        .tree_names()
        .into_iter()
        .filter(|n| *n != default_name)
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect();
    trees.sort();
    let foreign = db.get(FOREIGN_KEY).unwrap().map(|v| v.to_vec());
    let instance_id = db.get(INSTANCE_ID_KEY).unwrap().map(|v| v.to_vec());
    let ledger = if trees.iter().any(|t| t == "spool") {
        let spool = db.open_tree("spool").unwrap();
        spool.get(b"ledger").unwrap().map(|v| v.to_vec())
    } else {
        None
    };
    let source_names = if trees.iter().any(|t| t == "sources") {
        db.open_tree("sources")
            .unwrap()
            .iter()
            .keys()
            .map(|k| String::from_utf8_lossy(&k.unwrap()).into_owned())
            .collect()
    } else {
        Vec::new()
    };
    drop(db);
    StoreView {
        version,
        instance_id,
        ledger,
        trees,
        foreign,
        source_names,
    }
}

fn assert_is_current(view: &StoreView, after: &str) {
    assert_eq!(
        view.version.as_deref(),
        Some(&CURRENT.to_be_bytes()[..]),
        "after {after}: schema_version should be {CURRENT} as 4 bytes big-endian, found {:?}",
        view.version
    );
    assert!(
        view.instance_id
            .as_ref()
            .is_some_and(|v| v.len() == 8 && v.iter().any(|b| *b != 0)),
        "after {after}: no 8-byte non-zero instance_id: {:?}",
        view.instance_id
    );
    for t in ["sources", "spool"] {
        assert!(
            view.trees.iter().any(|n| n == t),
            "after {after}: the tree `{t}` is missing (trees: {:?})",
            view.trees
        );
    }
    assert_eq!(
        view.foreign.as_deref(),
        Some(FOREIGN_VALUE),
        "after {after}: an unrelated key of the v0 store was lost"
    );
}

/// A temp dir with `data/store` as a v0 fixture and a config naming one
/// source. The broker address is only used by the daemon test.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("logcatch-migr-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Fixture { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn store(&self) -> PathBuf {
        self.path("data/store")
    }
    fn config(&self, brokers: &str) -> ConfigBuilder {
        ConfigBuilder::new(self.path("data"), brokers, TOPIC).source("app", self.path("app.log"))
    }
    fn write_config(&self, cfg: &ConfigBuilder) -> PathBuf {
        let p = self.path("logcatch.yaml");
        std::fs::write(&p, cfg.render()).unwrap();
        p
    }
}

/// `logcatch-ctl offsets` on a stopped v0 store: works, upgrades it to the
/// current version (and only adds what it needs).
#[test]
fn v0_store_is_upgraded_by_ctl_offline() {
    let fx = Fixture::new();
    make_v0_store(&fx.store());
    let v = inspect(&fx.store());
    assert!(
        v.version.is_none(),
        "the fixture must have no schema_version"
    );
    write_numbered(&fx.path("app.log"), 0, 10);
    // No broker: logcatch-ctl never talks to Kafka.
    let config = fx.write_config(&fx.config("127.0.0.1:1"));

    let out = ctl_run(&config, &["offsets", "--json"]);
    assert_eq!(
        out.code,
        Some(0),
        "logcatch-ctl offsets on a v0 store failed:\n{}",
        out.describe()
    );
    let rows = out.json();
    let row = offsets_row(&rows, "app")
        .unwrap_or_else(|| panic!("no row for the configured source `app`: {rows:#}"));
    assert!(
        row["offset"].is_null(),
        "a v0 store has no record for `app`, yet offsets shows one: {row:#}"
    );
    assert_is_current(&inspect(&fx.store()), "logcatch-ctl offsets");

    let id = inspect(&fx.store()).instance_id;

    // A second run finds the current version and changes nothing.
    let out = ctl_run(&config, &["offsets", "--json"]);
    assert_eq!(out.code, Some(0), "second run:\n{}", out.describe());
    let v = inspect(&fx.store());
    assert_is_current(&v, "a second logcatch-ctl offsets");
    assert_eq!(v.instance_id, id, "the instance id changed");
}

/// `logcatch-ctl offsets` on a stopped v1 store with a v1 ledger: upgraded
/// to v2, with an instance id that then stays, the v1 ledger dropped.
#[test]
fn v1_store_is_upgraded_by_ctl_offline() {
    let fx = Fixture::new();
    make_v1_store(&fx.store());
    assert_eq!(inspect(&fx.store()).ledger.as_deref(), Some(V1_LEDGER));
    write_numbered(&fx.path("app.log"), 0, 10);
    let config = fx.write_config(&fx.config("127.0.0.1:1"));
    for run in ["logcatch-ctl offsets", "a second logcatch-ctl offsets"] {
        let out = ctl_run(&config, &["offsets", "--json"]);
        assert_eq!(
            out.code,
            Some(0),
            "{run} on a v1 store:\n{}",
            out.describe()
        );
        let v = inspect(&fx.store());
        assert_is_current(&v, run);
        assert_eq!(v.ledger, None, "after {run}: the v1 ledger is still there");
    }
}

/// The daemon on a v1 store with a v1 ledger left by a crash: upgrades it
/// and delivers every line exactly once (the old ledger cannot make it
/// skip anything), then restarts on it with the same instance id.
#[test]
fn v1_store_is_upgraded_by_the_daemon() {
    let broker = Broker::start();
    let fx = Fixture::new();
    make_v1_store(&fx.store());
    write_numbered(&fx.path("app.log"), 0, 500);
    let cfg = fx.config(&broker.addr());
    let mut d = Daemon::with(fx.dir.path(), &cfg);
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(500)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..500);
    d.stop();
    let v = inspect(&fx.store());
    assert_is_current(&v, "the daemon ran");
    write_numbered(&fx.path("app.log"), 500, 600);
    d.restart();
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(600)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..600);
    d.stop();
    let migrated = d.log_lines("migrating store");
    assert_eq!(migrated.len(), 2, "two steps, once each: {migrated:?}");
    assert!(migrated[0].contains("from=1") && migrated[0].contains("to=2"));
    assert!(migrated[1].contains("from=2") && migrated[1].contains("to=3"));
    assert_eq!(inspect(&fx.store()).instance_id, v.instance_id);
}

/// The daemon on a v0 store: upgrades it, tails and delivers, and the
/// store afterwards is current with the source's record.
#[test]
fn v0_store_is_upgraded_by_the_daemon() {
    let broker = Broker::start();
    let fx = Fixture::new();
    make_v0_store(&fx.store());
    write_numbered(&fx.path("app.log"), 0, 1000);
    let cfg = fx.config(&broker.addr());
    let mut d = Daemon::with(fx.dir.path(), &cfg);
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(1000)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..1000);
    d.stop();

    let v = inspect(&fx.store());
    assert_is_current(&v, "the daemon ran");
    assert_eq!(
        v.source_names,
        vec!["app".to_string()],
        "the upgraded store should hold the record of source `app`"
    );
    // And it is a store the daemon takes again (no second migration, no
    // line read twice).
    write_numbered(&fx.path("app.log"), 1000, 1200);
    d.restart();
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(1200)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..1200);
    d.stop();
    // Each step ran once, at the first start, and said so.
    let migrated = d.log_lines("migrating store");
    eprintln!("migration log lines:\n{}", migrated.join("\n"));
    assert_eq!(
        migrated.len(),
        3,
        "the v0 -> v1, v1 -> v2 and v2 -> v3 steps should run (and be logged) exactly once over two starts"
    );
    for (line, (from, to)) in migrated.iter().zip([(0, 1), (1, 2), (2, 3)]) {
        assert!(
            line.contains(&format!("from={from}")) && line.contains(&format!("to={to}")),
            "the migration log line does not name the versions {from} -> {to}: {line}"
        );
    }
    assert_is_current(&inspect(&fx.store()), "the second run");
}

/// A store written by a newer logcatch (schema_version 99) is refused by
/// the daemon and by `logcatch-ctl`, naming the path and saying it is
/// newer, and left as it was.
#[test]
fn newer_store_is_refused() {
    let fx = Fixture::new();
    make_store_with_version(&fx.store(), 99);
    write_numbered(&fx.path("app.log"), 0, 10);
    // Nothing listens on port 1: the daemon must fail before it would
    // connect anywhere.
    let config = fx.write_config(&fx.config("127.0.0.1:1"));
    let store = fx.store();
    let store_s = store.to_str().unwrap();

    let (code, text) = run_to_exit(&config, Duration::from_secs(30));
    eprintln!("logcatch on a v99 store: exit {code:?}\n{text}");
    assert!(
        code.is_some_and(|c| c != 0),
        "logcatch must exit non-zero on a newer store, got {code:?}:\n{text}"
    );
    assert!(
        text.contains("newer"),
        "the refusal does not say the store is newer:\n{text}"
    );
    assert!(
        text.contains(store_s),
        "the refusal does not name the store path {store_s}:\n{text}"
    );
    assert!(
        text.contains("99"),
        "the refusal does not name the store's version 99:\n{text}"
    );
    assert!(
        !fx.path("data/spool").exists(),
        "the daemon created data/spool before refusing the store"
    );

    let out = ctl_run(&config, &["offsets", "--json"]);
    eprintln!("logcatch-ctl offsets on a v99 store:\n{}", out.describe());
    assert_eq!(
        out.code,
        Some(1),
        "logcatch-ctl offsets must exit 1 on a newer store:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("newer") && out.stderr.contains(store_s),
        "logcatch-ctl's message does not say `newer` and name {store_s}:\n{}",
        out.describe()
    );
    assert!(
        out.stdout.trim().is_empty(),
        "logcatch-ctl printed output despite failing:\n{}",
        out.describe()
    );

    let v = inspect(&store);
    assert_eq!(
        v.version.as_deref(),
        Some(&99u32.to_be_bytes()[..]),
        "the refused store's schema_version was changed"
    );
    assert!(
        v.trees.is_empty(),
        "trees were created in a refused store: {:?}",
        v.trees
    );
    assert_eq!(v.foreign.as_deref(), Some(FOREIGN_VALUE));
}

/// A source record as schema v2 wrote it (bincode, standard config): the
/// fields in this order, no list of draining files. Written here by hand,
/// not with the crate's own types, so the fixture is the old format.
#[derive(serde::Serialize)]
struct V2Record {
    path: String,
    dev: u64,
    ino: u64,
    head_len: u32,
    head_crc: u32,
    offset: u64,
    tail_len: u32,
    tail_crc: u32,
    lines: u64,
    bytes: u64,
    updated_ms: u64,
    seq: u64,
}

/// A v2 store whose record of `app` says lines 0..100 of `log` are read:
/// the daemon upgrades it to v3 and resumes at that offset, so only lines
/// 100..300 are sent.
#[test]
fn v2_store_keeps_its_offsets_across_the_upgrade_to_v3() {
    use std::os::unix::fs::MetadataExt;
    let broker = Broker::start();
    let fx = Fixture::new();
    let log = fx.path("app.log");
    write_numbered(&log, 0, 300);
    let bytes = std::fs::read(&log).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let offset = line_offsets(&log)[&100];
    let head = &bytes[..1024];
    let tail = &bytes[offset as usize - 64..offset as usize];
    let rec = V2Record {
        path: log.to_string_lossy().into_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        head_len: 1024,
        head_crc: crc32c::crc32c(head),
        offset,
        tail_len: 64,
        tail_crc: crc32c::crc32c(tail),
        lines: 100,
        bytes: offset,
        updated_ms: 1,
        seq: 7,
    };
    {
        let db = open_sled(&fx.store());
        db.insert(VERSION_KEY, &2u32.to_be_bytes()).unwrap();
        db.insert(INSTANCE_ID_KEY, &42u64.to_be_bytes()).unwrap();
        db.insert(FOREIGN_KEY, FOREIGN_VALUE).unwrap();
        db.open_tree("spool").unwrap();
        let v = bincode::serde::encode_to_vec(&rec, bincode::config::standard()).unwrap();
        db.open_tree("sources").unwrap().insert("app", v).unwrap();
        db.flush().unwrap();
    }
    let cfg = fx.config(&broker.addr());
    let mut d = Daemon::with(fx.dir.path(), &cfg);
    let msgs = d
        .consume(&broker.addr(), TOPIC)
        .until_count(200)
        .quiet(Duration::from_secs(3))
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 100..300);
    d.stop();
    assert_is_current(&inspect(&fx.store()), "the daemon ran");
    let migrated = d.log_lines("migrating store");
    assert_eq!(migrated.len(), 1, "{migrated:?}");
    assert!(migrated[0].contains("from=2") && migrated[0].contains("to=3"));
}
