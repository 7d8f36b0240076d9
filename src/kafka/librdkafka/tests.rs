//! librdkafka's settings and delivery reports: the batching that follows
//! the forwarder's batch size, and refusals against librdkafka's
//! `MockCluster` (a refused batch, a line refused alone, one too large to
//! queue).

use super::*;
use crate::config::KafkaClient;
use crate::kafka::forwarder::ForwardStats;
use crate::spool::{LineRef, Position, SpoolCursor};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

fn batching(batch_bytes: usize, properties: &[(&str, &str)]) -> (ClientConfig, Batching) {
    let mut c = client_config(&kafka("b:9092", properties), "h1");
    let b = set_batching(&mut c, batch_bytes);
    (c, b)
}

fn kafka(brokers: &str, properties: &[(&str, &str)]) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.into(),
        topic: "t1".into(),
        compression: "none".into(),
        client: KafkaClient::Librdkafka,
        linger_ms: 100,
        create_topics: false,
        topic_partitions: 1,
        topic_replication_factor: -1,
        shutdown_ack_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
        delivery_timeout: Duration::from_secs(120),
        tls: None,
        sasl: None,
        properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Full-size batches keep librdkafka's batch.size and stop at a refused
/// batch; smaller ones cap batch.size; size 0 sends every line alone,
/// without the stop.
#[test]
fn batching_follows_the_forwarders_batch_size() {
    let (c, b) = batching(native::BATCH_BYTES, &[]);
    assert_eq!(c.get("batch.size"), None);
    assert_eq!(c.get("enable.gapless.guarantee"), Some("true"));
    assert_eq!(
        b,
        Batching {
            lone: false,
            alone_above: LIBRDKAFKA_BATCH_SIZE,
            stops_at_gap: true
        }
    );
    let (c, b) = batching(native::BATCH_BYTES / 4, &[]);
    assert_eq!(c.get("batch.size"), Some("250000"));
    assert_eq!(b.alone_above, 250_000);
    let (c, b) = batching(0, &[]);
    assert_eq!(c.get("batch.num.messages"), Some("1"));
    assert_eq!(c.get("enable.gapless.guarantee"), None);
    assert!(b.lone && !b.stops_at_gap);
}

/// The operator's settings count: a smaller batch.size or
/// message.max.bytes says which lines go alone; without idempotence
/// there is no gapless guarantee to ask for (librdkafka would refuse it).
#[test]
fn batching_respects_the_operators_settings() {
    let (_, b) = batching(native::BATCH_BYTES, &[("batch.size", "50000")]);
    assert_eq!(b.alone_above, 50_000);
    let (c, b) = batching(native::BATCH_BYTES / 4, &[("batch.size", "50000")]);
    assert_eq!(c.get("batch.size"), Some("50000"), "never raised");
    assert_eq!(b.alone_above, 50_000);
    let (_, b) = batching(native::BATCH_BYTES, &[("message.max.bytes", "20000")]);
    assert_eq!(b.alone_above, 20_000);
    let (c, b) = batching(native::BATCH_BYTES, &[("enable.idempotence", "false")]);
    assert_eq!(c.get("enable.gapless.guarantee"), None);
    assert!(!b.stops_at_gap);
    let (_, b) = batching(native::BATCH_BYTES, &[("batch.num.messages", "1")]);
    assert!(b.lone);
}

/// A refused line is dead-lettered only when it was alone in its batch:
/// every line is, one per batch; in batches, one longer than the batch
/// size is.
#[test]
fn only_a_line_refused_alone_is_dead_lettered() {
    let batches = Batching {
        lone: false,
        alone_above: 1000,
        stops_at_gap: true,
    };
    assert_eq!(batches.refused(1000), Refused::InBatch);
    assert_eq!(batches.refused(1001), Refused::Alone { stopped: true });
    let lone = Batching {
        lone: true,
        stops_at_gap: false,
        ..batches
    };
    assert_eq!(lone.refused(10), Refused::Alone { stopped: false });
}

/// One session's producer on `cluster`, with `properties` and the
/// forwarder's `batch_bytes`, reporting to a tracker whose dead-letter file
/// is in `dir`.
struct TestSession {
    p: LibrdkafkaProducer,
    delivery: Arc<Delivery>,
    dead_letter: std::path::PathBuf,
}

impl TestSession {
    fn new(
        cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
        dir: &std::path::Path,
        properties: &[(&str, &str)],
        batch_bytes: usize,
    ) -> TestSession {
        let dead_letter = dir.join("dead-letter.jsonl");
        let k = kafka(&cluster.bootstrap_servers(), properties);
        let delivery = Arc::new(Delivery::new(
            AckTracker::default(),
            Arc::new(ForwardStats::default()),
            dead_letter.clone(),
        ));
        let p = producer(&client_config(&k, "h1"), &k, &delivery, batch_bytes).expect("producer");
        TestSession {
            p,
            delivery,
            dead_letter,
        }
    }

    /// Sends a frame of source `a` whose lines are `lens` bytes long (one
    /// after another in the file); returns how many were sent.
    fn send_frame(&self, lens: &[usize]) -> u64 {
        let mut offset = 0;
        let b = SpoolBatch {
            seq: 0,
            spooled_ms: 0,
            source: "a".into(),
            path: "/a.log".into(),
            topic: "t1".into(),
            identity: Default::default(),
            end_offset: 0,
            tail_len: 0,
            tail_crc: 0,
            data: lens.iter().flat_map(|&n| vec![b'x'; n]).collect(),
            lines: lens
                .iter()
                .map(|&len| {
                    let l = LineRef {
                        offset,
                        len: len as u32,
                    };
                    offset += len as u64 + 1;
                    l
                })
                .collect(),
        };
        let at = |pos| Position { segment: 1, pos };
        let id = self.delivery.tracker().push(&b, at(0), at(100), 0);
        let lines = b
            .iter_lines()
            .enumerate()
            .map(|(i, (offset, line))| (i as u32, offset, line));
        send(&self.p, id, &b, ("h1", 1), lines, &mut |_| false).expect("sent")
    }

    /// The entries of the dead-letter file.
    fn dead_lettered(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.dead_letter)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }
}

/// What a session sending one frame of `lines` lines of `len` bytes saw
/// when the mock broker refused its first Produce request with
/// MESSAGE_TOO_LARGE: how it stopped, the cursor, the dead-letter file.
struct Refusal {
    stop: Option<Stop>,
    cursor: Option<SpoolCursor>,
    dead_lettered: Vec<serde_json::Value>,
}

fn first_produce_refused(batch_bytes: usize, lines: usize, len: usize) -> Refusal {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t1", 1, 1).expect("create topic");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestSession::new(&cluster, dir.path(), &[], batch_bytes);
    s.send_frame(&vec![len; lines]);
    // Until every line is answered (or purged after a stop).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.p.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        s.p.poll(Duration::from_millis(50));
    }
    if stop(&s.p).is_some() {
        purge(&s.p);
    }
    let cursor = s.delivery.tracker().advance();
    Refusal {
        stop: stop(&s.p),
        cursor,
        dead_lettered: s.dead_lettered(),
    }
}

/// A refused batch of several lines dead-letters none: the session
/// stops for smaller batches, and the cursor stays before them.
#[test]
fn a_refused_batch_is_resent_in_smaller_batches_not_dead_lettered() {
    let r = first_produce_refused(native::BATCH_BYTES, 5, 100);
    assert!(
        matches!(&r.stop, Some(Stop::SmallerBatches(why)) if why.contains("t1/0")),
        "{:?}",
        r.stop
    );
    assert!(r.dead_lettered.is_empty(), "{:?}", r.dead_lettered);
    assert_eq!(r.cursor, None, "no line of the frame is done");
}

/// With one line per batch, the refused line is dead-lettered and the
/// others are delivered, in the same session.
#[test]
fn a_line_refused_alone_is_dead_lettered_and_the_rest_delivered() {
    let r = first_produce_refused(0, 5, 100);
    assert_eq!(r.stop, None);
    assert_eq!(r.dead_lettered.len(), 1, "{:?}", r.dead_lettered);
    assert_eq!(r.dead_lettered[0]["offset"], "0");
    assert_eq!(r.dead_lettered[0]["source"], "a");
    assert_eq!(
        r.cursor,
        Some(SpoolCursor {
            segment: 1,
            position: 100,
            lines_done: 0
        }),
        "every line done: one dead-lettered, four acknowledged"
    );
}

/// In batches, a line longer than the batch size was alone: it is
/// dead-lettered, and the session goes on after it with a new producer
/// (librdkafka stopped at it).
#[test]
fn a_line_longer_than_a_batch_is_dead_lettered_and_the_session_resumes() {
    let r = first_produce_refused(150, 3, 200);
    assert!(matches!(&r.stop, Some(Stop::Resume(_))), "{:?}", r.stop);
    assert_eq!(r.dead_lettered.len(), 1, "{:?}", r.dead_lettered);
    assert_eq!(r.dead_lettered[0]["offset"], "0");
    assert_eq!(
        r.cursor,
        Some(SpoolCursor {
            segment: 1,
            position: 0,
            lines_done: 1
        }),
        "the refused line is done; the next session sends the others"
    );
}

/// A line larger than librdkafka's message.max.bytes is never queued:
/// it is dead-lettered after the lines before it are acknowledged, and
/// the lines after it are sent.
#[test]
fn a_line_too_large_to_queue_is_dead_lettered_in_order() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t1", 1, 1).expect("create topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestSession::new(
        &cluster,
        dir.path(),
        &[("message.max.bytes", "5000")],
        native::BATCH_BYTES,
    );
    let sent = s.send_frame(&[100, 6000, 100]);
    assert_eq!(sent, 2, "the large line is not sent");
    s.p.flush(Duration::from_secs(20)).expect("flushed");
    let dead = s.dead_lettered();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["offset"], "101");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("message.max.bytes"),
        "{dead:?}"
    );
    assert_eq!(
        s.delivery.tracker().advance(),
        Some(SpoolCursor {
            segment: 1,
            position: 100,
            lines_done: 0
        }),
        "all three lines done"
    );
}

/// An INVALID_TIMESTAMP delivery failure says the host's clock is off
/// and that the lines wait; other failures read as librdkafka says.
#[test]
fn invalid_timestamp_failure_names_the_clock() {
    let e = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp);
    let text = failure_text(&e);
    assert!(text.contains("this host's clock"), "{text}");
    assert!(text.contains("wait in the spool"), "{text}");
    let e = KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas);
    assert_eq!(failure_text(&e), e.to_string());
}
