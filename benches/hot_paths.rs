//! Criterion benches for the hot pieces: line splitting, spool framing,
//! spool append and read (with and without fsync), offset commits to sled,
//! and producing to a `MockCluster` with rdkafka and with logcatch's native
//! producer. Run: `cargo bench --bench hot_paths`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use logcatch::config::{FsyncPolicy, LongLines, SpoolConfig};
use logcatch::kafka::native::{Event, NativeProducer, ProducerSettings, Timeouts};
use logcatch::source::lines::{LineBatch, LineSplitter};
use logcatch::spool::{encode_frame, ReadOutcome, Spool, SpoolBatch, WriterMsg};
use logcatch::store::{FileIdentity, SourceRecord, Store};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio_util::sync::CancellationToken;

/// 146-byte numbered lines, like the W1 workload.
fn text(lines: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines * 147);
    for i in 0..lines {
        let head = format!(
            "2026-11-25T10:00:00.000Z INFO worker-{} request_id={i:012} ",
            i % 8
        );
        out.extend_from_slice(head.as_bytes());
        out.resize(out.len() + (146 - head.len()), b'x');
        out.push(b'\n');
    }
    out
}

fn batch_of(data: &[u8]) -> SpoolBatch {
    let mut sp = LineSplitter::new(1 << 20, LongLines::Split, 0);
    let mut out = LineBatch::default();
    sp.feed(data, 0, &mut out);
    SpoolBatch {
        seq: 0,
        spooled_ms: 0,
        source: "bench".into(),
        path: "/var/log/bench.log".into(),
        topic: "logs".into(),
        identity: FileIdentity::default(),
        end_offset: out.end_offset.unwrap_or(0),
        tail_len: 0,
        tail_crc: 0,
        data: out.data,
        lines: out.lines,
    }
}

fn splitting(c: &mut Criterion) {
    let data = text(10_000);
    let mut g = c.benchmark_group("split");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("146B lines, 256KiB chunks", |b| {
        b.iter(|| {
            let mut sp = LineSplitter::new(1 << 20, LongLines::Split, 0);
            let mut out = LineBatch::default();
            for (i, chunk) in data.chunks(256 << 10).enumerate() {
                sp.feed(chunk, (i * (256 << 10)) as u64, &mut out);
            }
            out.lines.len()
        })
    });
    g.finish();
}

fn framing(c: &mut Criterion) {
    let batch = batch_of(&text(1_700));
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(batch.lines.len() as u64));
    let mut buf = Vec::new();
    g.bench_function("encode 1700 lines", |b| {
        b.iter(|| {
            buf.clear();
            encode_frame(&batch, &mut buf).map(|_| buf.len())
        })
    });
    encode_frame(&batch, &mut buf).ok();
    g.bench_function("decode 1700 lines", |b| {
        b.iter(|| {
            logcatch::spool::decode_frame(&buf)
                .map(|(b, _)| b.lines.len())
                .ok()
        })
    });
    g.finish();
}

/// Frames (spool records) per spool bench iteration.
const SPOOL_FRAMES: usize = 50;

fn spool_config(fsync: FsyncPolicy) -> SpoolConfig {
    SpoolConfig {
        max_bytes: 1 << 30,
        segment_bytes: 64 << 20,
        fsync,
    }
}

/// Appends `SPOOL_FRAMES` copies of `batch` to a new spool in `dir`, one
/// group commit each (the worst case for fsync); returns the spool's bytes.
fn spool_append(dir: &std::path::Path, batch: &SpoolBatch, fsync: FsyncPolicy) -> u64 {
    let store = Store::open(&dir.join("store")).expect("store");
    let (spool, _) = Spool::open(&dir.join("spool"), spool_config(fsync)).expect("spool");
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let w = spool
        .spawn_writer(store, rx, 1, CancellationToken::new())
        .expect("writer");
    for _ in 0..SPOOL_FRAMES {
        tx.blocking_send(WriterMsg::Batch(batch.clone())).ok();
        let (stx, srx) = tokio::sync::oneshot::channel();
        tx.blocking_send(WriterMsg::Sync(stx)).ok();
        srx.blocking_recv().ok();
    }
    drop(tx);
    w.join().ok();
    spool.stats().bytes
}

/// Reads every frame of the spool in `dir` from its segment files (a fresh
/// handle keeps no recent frames in memory); returns the lines read.
fn spool_read(dir: &std::path::Path) -> usize {
    let (spool, _) =
        Spool::open(&dir.join("spool"), spool_config(FsyncPolicy::Never)).expect("spool");
    let mut r = spool.reader(None);
    let mut n = 0;
    while let Ok(ReadOutcome::Frame(f)) = r.next(Duration::ZERO) {
        n += f.batch.lines.len();
    }
    n
}

/// Spool append (with and without fsync) and read, each in records
/// (frames of 1,700 lines) per second and in bytes per second.
fn spool_roundtrip(c: &mut Criterion) {
    let batch = batch_of(&text(1_700));
    let lines = SPOOL_FRAMES * batch.lines.len();
    let bytes = {
        let dir = tempfile::tempdir().expect("tempdir");
        spool_append(dir.path(), &batch, FsyncPolicy::Never)
    };
    for (group, throughput) in [
        ("spool-records", Throughput::Elements(SPOOL_FRAMES as u64)),
        ("spool-bytes", Throughput::Bytes(bytes)),
    ] {
        let mut g = c.benchmark_group(group);
        g.sample_size(10).throughput(throughput);
        for fsync in [FsyncPolicy::Never, FsyncPolicy::Batch] {
            g.bench_function(
                format!("append {SPOOL_FRAMES} frames, fsync {fsync:?}"),
                |b| {
                    b.iter_batched(
                        || tempfile::tempdir().expect("tempdir"),
                        |dir| spool_append(dir.path(), &batch, fsync),
                        BatchSize::PerIteration,
                    )
                },
            );
        }
        g.bench_function(format!("read {SPOOL_FRAMES} frames from segments"), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("tempdir");
                    spool_append(dir.path(), &batch, FsyncPolicy::Never);
                    dir
                },
                |dir| assert_eq!(spool_read(dir.path()), lines),
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

fn offset_commits(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let mut rec = SourceRecord {
        path: "/var/log/bench.log".into(),
        identity: FileIdentity {
            dev: 1,
            ino: 2,
            head_len: 1024,
            head_crc: 3,
        },
        offset: 0,
        tail_len: 64,
        tail_crc: 4,
        lines: 0,
        bytes: 0,
        updated_ms: 0,
        seq: 0,
        draining: Vec::new(),
        finished: Vec::new(),
    };
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    g.bench_function("offset commit (no flush)", |b| {
        b.iter(|| {
            rec.offset += 147;
            rec.seq += 1;
            store.put_source("bench", &rec).ok()
        })
    });
    g.sample_size(20);
    g.bench_function("offset commit + flush", |b| {
        b.iter(|| {
            rec.offset += 147;
            store.put_source("bench", &rec).ok();
            store.flush().ok()
        })
    });
    g.finish();
}

fn produce_mock(c: &mut Criterion) {
    let Ok(cluster) = MockCluster::new(1) else {
        return;
    };
    let producer: BaseProducer = match ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
    {
        Ok(p) => p,
        Err(_) => return,
    };
    let line = [b'x'; 146];
    let n = 20_000u64;
    let mut g = c.benchmark_group("produce");
    g.sample_size(10).throughput(Throughput::Elements(n));
    g.bench_function("20k lines to MockCluster, acks=all", |b| {
        b.iter(|| {
            for i in 0..n {
                let off = i.to_string();
                let mut rec = BaseRecord::to("bench").key("bench").payload(&line[..]);
                rec = rec.headers(rdkafka::message::OwnedHeaders::new().insert(
                    rdkafka::message::Header {
                        key: "offset",
                        value: Some(&off),
                    },
                ));
                while let Err((_, r)) = producer.send(rec) {
                    rec = r;
                    producer.poll(Duration::from_millis(1));
                }
                producer.poll(Duration::ZERO);
            }
            producer.flush(Duration::from_secs(30)).ok()
        })
    });
    // The same lines through logcatch's native producer (the default
    // client), with all four headers, until every line is acknowledged.
    let settings = ProducerSettings {
        brokers: cluster.bootstrap_servers(),
        client_id: "bench".into(),
        lz4: true,
        linger: Duration::from_millis(5),
        batch_bytes: logcatch::kafka::native::BATCH_BYTES,
        allow_auto_create: true,
        timeouts: Timeouts::DEFAULT,
        bootstrap_turn: 0,
        tls: None,
        sasl: None,
    };
    let Ok(mut native) = NativeProducer::connect(settings, "bench-host") else {
        g.finish();
        return;
    };
    let Ok(target) = native.target("bench", "bench", "/var/log/bench.log", (1, 0)) else {
        g.finish();
        return;
    };
    let mut events = Vec::new();
    let mut frame = 0u64;
    g.bench_function("20k lines to MockCluster, native producer, acks=all", |b| {
        b.iter(|| {
            frame += 1;
            for i in 0..n {
                if native
                    .append(&target, frame, (i as u32, i * 147), &line[..])
                    .is_err()
                {
                    return;
                }
            }
            let mut acked = 0u64;
            while acked < n {
                if native.poll(Duration::from_millis(1), true).is_err() {
                    return;
                }
                native.take_events(&mut events);
                for e in events.drain(..) {
                    if let Event::Acked { lines, .. } = e {
                        acked += lines as u64;
                    }
                }
            }
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    splitting,
    framing,
    spool_roundtrip,
    offset_commits,
    produce_mock
);
criterion_main!(benches);
