//! The native producer against librdkafka's `MockCluster`: deliveries,
//! refusals, failures during setup requests, and idle connections.

use super::*;

/// Settings for a producer to `brokers`, plaintext, with small batches.
fn test_settings(brokers: String, lz4: bool) -> ProducerSettings {
    ProducerSettings {
        brokers,
        client_id: "test".into(),
        lz4,
        linger: Duration::from_millis(5),
        batch_bytes: 64 << 10,
        allow_auto_create: false,
        timeouts: Timeouts::DEFAULT,
        bootstrap_turn: 0,
        tls: None,
        sasl: None,
    }
}

/// [`test_settings`] against a `MockCluster`.
fn mock_settings(
    cluster: &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    lz4: bool,
) -> ProducerSettings {
    test_settings(cluster.bootstrap_servers(), lz4)
}

/// The native producer against librdkafka's mock broker (a real Kafka
/// protocol server in process): many batches over two partitions and
/// a line big enough to go alone; every line acknowledged once, then
/// read back by rdkafka's consumer with key, value and headers intact.
#[test]
fn delivers_to_mock_cluster_and_reads_back() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t1", 2, 1).expect("create topic");
    let mut p = NativeProducer::connect(mock_settings(&cluster, true), "h1").expect("connect");
    let targets = [
        p.target("t1", "a", "/a.log", (1, 0)).expect("target a"),
        p.target("t1", "d", "/d.log", (1, 0)).expect("target d"),
    ];
    assert_ne!(
        targets[0].partition, targets[1].partition,
        "sources a and d hash to different partitions of 2"
    );
    let big = vec![b'z'; 200 << 10];
    let mut expected: Vec<(usize, u64, Vec<u8>)> = Vec::new();
    let mut lines_of = HashMap::new();
    for frame in 0..40u64 {
        let who = (frame % 2) as usize;
        let t = &targets[who];
        for i in 0..300u64 {
            let line = if frame == 7 && i == 5 {
                big.clone()
            } else {
                format!("frame {frame} line {i}").into_bytes()
            };
            let offset = frame * 1_000_000 + i;
            p.append(t, frame, (0, offset), &line).expect("append");
            expected.push((who, offset, line));
            *lines_of.entry(frame).or_insert(0u32) += 1;
        }
        p.poll(Duration::ZERO, false).expect("poll");
    }
    let acked = wait_for_acks(&mut p, expected.len() as u32);
    assert_eq!(
        acked, lines_of,
        "every line of every frame acknowledged once"
    );
    assert!(!p.in_flight());
    drop(p);

    let partitions = [targets[0].partition, targets[1].partition];
    let got = read_back(&cluster, partitions, expected.len());
    for who in 0..2 {
        let want: Vec<(u64, Vec<u8>)> = expected
            .iter()
            .filter(|e| e.0 == who)
            .map(|e| (e.1, e.2.clone()))
            .collect();
        assert_eq!(got[&who], want, "source {who}: every line once, in order");
    }
}

/// Polls `p` until `want` lines are acknowledged, checking that offsets go
/// up in each partition; the acknowledged lines by frame.
fn wait_for_acks(p: &mut NativeProducer, want: u32) -> HashMap<u64, u32> {
    let mut acked: HashMap<u64, u32> = HashMap::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.values().sum::<u32>() < want {
        assert!(Instant::now() < deadline, "acks missing: {acked:?}");
        p.poll(Duration::from_millis(10), true).expect("poll");
        p.take_events(&mut events);
        for e in events.drain(..) {
            let Event::Acked {
                frame,
                lines,
                partition,
                last_offset: Some(o),
            } = e
            else {
                panic!("unexpected event {e:?}");
            };
            *acked.entry(frame).or_default() += lines;
            let prev = last_offset.insert(partition, o).unwrap_or(-1);
            assert!(o > prev, "offsets go up in a partition: {prev} then {o}");
        }
    }
    acked
}

/// Reads `t1`'s two partitions from the start with rdkafka's consumer until
/// `want` lines came, checking each line's partition (source `a` goes to
/// `partitions[0]`, `d` to `partitions[1]`) and headers; (offset header,
/// value) of each line by source.
fn read_back(
    cluster: &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    partitions: [i32; 2],
    want: usize,
) -> HashMap<usize, Vec<(u64, Vec<u8>)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "readback")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for part in 0..2 {
        tpl.add_partition_offset("t1", part, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut got: HashMap<usize, Vec<(u64, Vec<u8>)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.values().map(Vec::len).sum::<usize>() < want {
        assert!(
            Instant::now() < deadline,
            "consumed {}",
            got.values().map(Vec::len).sum::<usize>()
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("message");
        let key = m.key().expect("key");
        let who = if key == b"a" { 0 } else { 1 };
        assert_eq!(m.partition(), partitions[who]);
        let h = m.headers().expect("headers");
        let header = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| v.to_vec())
        };
        assert_eq!(header("source"), Some(key.to_vec()));
        assert_eq!(header("host"), Some(b"h1".to_vec()));
        let path = if who == 0 { "/a.log" } else { "/d.log" };
        assert_eq!(header("path"), Some(path.as_bytes().to_vec()));
        let offset: u64 = String::from_utf8(header("offset").expect("offset header"))
            .expect("utf8")
            .parse()
            .expect("number");
        got.entry(who)
            .or_default()
            .push((offset, m.payload().unwrap_or_default().to_vec()));
    }
    got
}

// Kafka's answers other than success: a lone line refused for good becomes
// an `Event::Refused` carrying the line, and the session goes on with the
// sequence number the broker did not take; a refused batch of several
// lines, or any other error, ends the session with `Err` and acknowledges
// nothing.

/// A mock cluster with a one-partition topic `t1`.
fn one_partition_cluster(
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t1", 1, 1).expect("create topic");
    cluster
}

/// A producer connected to `cluster`, and where source `a` goes in `t1`.
fn connect_to(
    cluster: &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
) -> (NativeProducer, FrameTarget) {
    let mut p = NativeProducer::connect(mock_settings(cluster, false), "h1").expect("connect");
    let t = p.target("t1", "a", "/a.log", (1, 0)).expect("target");
    (p, t)
}

/// Polls `p` until nothing is in flight or it fails (10 s at most): how
/// the last poll ended, and the events gathered.
fn drain(p: &mut NativeProducer) -> (Result<(), ProducerError>, Vec<Event>) {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = p.poll(Duration::from_millis(10), true);
        p.take_events(&mut events);
        if r.is_err() || !p.in_flight() || Instant::now() > deadline {
            break r;
        }
    };
    (r, events)
}

/// A lone line refused as too large, between two lines that are taken:
/// it becomes an `Event::Refused` carrying the line, the session goes on,
/// and the line after it reuses its sequence number (the mock broker does
/// not check for gaps, so the number is checked here).
#[test]
fn a_refused_lone_line_is_reported_and_gives_its_sequence_number_back() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    p.append(&t, 8, (0, 0), b"before").expect("append");
    let (r, events) = drain(&mut p);
    r.expect("first line");
    assert!(
        matches!(&events[..], [Event::Acked { frame: 8, .. }]),
        "{events:?}"
    );
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let big = vec![b'q'; 100 << 10];
    p.append(&t, 9, (0, 4242), &big).expect("append");
    p.append(&t, 10, (0, 200_000), b"after").expect("append");
    let (r, events) = drain(&mut p);
    r.expect("a refused lone line does not end the session");
    assert_eq!(
        p.partitions[t.slot].next_sequence, 2,
        "the line after the refused one took its sequence number (1)"
    );
    match &events[..] {
        [Event::Refused {
            frame: 9,
            line,
            error,
        }, Event::Acked {
            frame: 10,
            lines: 1,
            last_offset: Some(1),
            ..
        }] => {
            assert_eq!(line.offset, 4242);
            assert_eq!(line.value, big);
            assert_eq!((line.source.as_str(), line.path.as_str()), ("a", "/a.log"));
            assert!(error.contains("10"), "{error}");
        }
        other => panic!("want one refusal, got {other:?}"),
    }
}

/// A batch of several lines refused: the session ends, and nothing is
/// acknowledged.
#[test]
fn a_refused_batch_of_several_lines_ends_the_session() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    for i in 0..10 {
        p.append(&t, 1, (0, i * 10), b"small line").expect("append");
    }
    let (r, events) = drain(&mut p);
    assert!(
        matches!(r, Err(ProducerError::BatchRefused { lines: 10, .. })),
        "{r:?}"
    );
    assert!(events.is_empty(), "nothing acknowledged: {events:?}");
}

/// An error a retry cannot clear ends the session, and nothing is
/// acknowledged.
#[test]
fn a_produce_error_a_retry_cannot_clear_ends_the_session() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    p.append(&t, 1, (0, 0), b"line").expect("append");
    let (r, events) = drain(&mut p);
    assert!(matches!(r, Err(ProducerError::Refused { .. })), "{r:?}");
    assert!(events.is_empty(), "nothing acknowledged: {events:?}");
}

/// A Produce answer with an error that arrives while a setup request
/// waits is not lost: the setup call returns it (not a topic error, so
/// the forwarder ends the session), after taking its own answer, so
/// the next setup request is still answered in step.
#[test]
fn produce_failure_during_a_setup_request_is_returned() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t1", 1, 1).expect("create topic");
    cluster.create_topic("t2", 1, 1).expect("create topic");
    let mut p = NativeProducer::connect(mock_settings(&cluster, false), "h1").expect("connect");
    let t = p.target("t1", "a", "/a.log", (1, 0)).expect("target");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    p.append(&t, 1, (0, 0), b"line").expect("append");
    // Sealed and sent, but its answer not taken in (poll might take it).
    p.seal(t.slot).expect("seal and send");
    assert!(p.in_flight());
    // Let the refusal arrive before the setup request goes out.
    std::thread::sleep(Duration::from_millis(1000));
    // A metadata request (the mock broker takes no CreateTopics).
    let r = p.target("t2", "b", "/b.log", (1, 0)).map(|_| ());
    assert!(
        matches!(r, Err(ProducerError::Refused { api: "Produce", .. })),
        "{r:?}"
    );
    assert!(!p.in_flight(), "the refused batch is no longer in flight");
    let mut events = Vec::new();
    p.take_events(&mut events);
    assert!(events.is_empty(), "nothing acknowledged: {events:?}");
    // Connection 0 is still in step: its next answer matches.
    p.target("t2", "b", "/b.log", (1, 0))
        .expect("next setup request");
}

/// A connection the broker closes while nothing is asked (as Kafka does
/// after `connections.max.idle.ms`) is reopened on the next send, not
/// treated as a failure.
#[test]
fn idle_connection_closed_by_broker_is_reopened() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t1", 1, 1).expect("create topic");
    let mut p = NativeProducer::connect(mock_settings(&cluster, false), "h1").expect("connect");
    let t = p.target("t1", "a", "/a.log", (1, 0)).expect("target");
    let mut events = Vec::new();
    let mut send_and_wait = |p: &mut NativeProducer, frame: u64| {
        p.append(&t, frame, (0, frame), b"line").expect("append");
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.in_flight() {
            assert!(Instant::now() < deadline, "no answer");
            p.poll(Duration::from_millis(10), true).expect("poll");
        }
        p.take_events(&mut events);
        assert!(
            matches!(events.pop(), Some(Event::Acked { frame: f, lines: 1, .. }) if f == frame),
            "frame {frame} acknowledged"
        );
    };
    send_and_wait(&mut p, 1);
    cluster.broker_down(1).expect("down");
    // Both connections are idle: their closing is no failure.
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        p.poll(Duration::from_millis(10), false)
            .expect("an idle connection closing is not an error");
    }
    cluster.broker_up(1).expect("up");
    send_and_wait(&mut p, 2);
}

/// A metadata answer refusing the topic for want of an ACL is a
/// `NotAuthorized` naming the ACL, not a plain topic error.
#[test]
fn metadata_authorization_refusal_names_the_acl() {
    use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use kafka_protocol::messages::{MetadataResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let r = MetadataResponse::default().with_topics(vec![MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("t1"))))
        .with_error_code(ResponseError::TopicAuthorizationFailed.code())]);
    match setup::leaders_of(&r, "t1") {
        Err(e @ ProducerError::NotAuthorized { .. }) => {
            let text = e.to_string();
            assert!(text.contains("TopicAuthorizationFailed"), "{text}");
            assert!(text.contains("DESCRIBE and WRITE on topic t1"), "{text}");
        }
        other => panic!("want NotAuthorized, got {other:?}"),
    }
}

/// INVALID_TIMESTAMP (a host clock over an hour ahead of Kafka 4's) ends
/// the session with `ClockAhead`, which says what to fix; nothing is
/// acknowledged or refused, so the lines stay in the spool.
#[test]
fn invalid_timestamp_is_a_clock_error_and_drops_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP],
    );
    p.append(&t, 1, (0, 0), b"line").expect("append");
    let (r, events) = drain(&mut p);
    match r {
        Err(e @ ProducerError::ClockAhead { .. }) => {
            let text = e.to_string();
            assert!(text.contains("INVALID_TIMESTAMP"), "{text}");
            assert!(text.contains("this host's clock"), "{text}");
        }
        other => panic!("want ClockAhead, got {other:?}"),
    }
    assert!(
        events.is_empty(),
        "nothing acknowledged or refused: {events:?}"
    );
}

/// Partitions with fewer than 2 in-sync replicas are noted, with how many.
#[test]
fn thin_isr_lists_partitions_with_fewer_than_two_in_sync() {
    use kafka_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, MetadataResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let part = |i: i32, isr: &[i32]| {
        MetadataResponsePartition::default()
            .with_partition_index(i)
            .with_isr_nodes(isr.iter().map(|&n| BrokerId(n)).collect())
    };
    let r = MetadataResponse::default().with_topics(vec![MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("t1"))))
        .with_partitions(vec![part(0, &[1, 2, 3]), part(1, &[2]), part(2, &[])])]);
    let thin = setup::thin_isr(&r, "t1");
    assert_eq!(thin.into_iter().collect::<Vec<_>>(), vec![(1, 1), (2, 0)]);
    assert!(setup::thin_isr(&r, "other").is_empty());
}

/// A bootstrap broker that accepts connections and never answers (as a
/// SIGSTOPped one does) costs one request timeout, then the next broker
/// is asked; a later session starts at the next broker anyway.
#[test]
fn connect_skips_a_bootstrap_broker_that_does_not_answer() {
    let cluster = one_partition_cluster();
    // Listening, never accepting: the kernel completes the handshake.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_addr = hung.local_addr().expect("addr").to_string();
    let mut settings = mock_settings(&cluster, false);
    settings.brokers = format!("{hung_addr},{}", cluster.bootstrap_servers());
    settings.timeouts = Timeouts {
        request: Duration::from_secs(1),
        connect: Duration::from_secs(1),
        ..Timeouts::DEFAULT
    };
    let started = Instant::now();
    let mut p = NativeProducer::connect(settings.clone(), "h1").expect("the second broker");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the hung one was asked first"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_ne!(p.conns[0].addr, hung_addr);
    p.target("t1", "a", "/a.log", (1, 0)).expect("routed");

    settings.bootstrap_turn = 1;
    let started = Instant::now();
    let p = NativeProducer::connect(settings, "h1").expect("connect");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the next session starts at the next broker"
    );
    assert_ne!(p.conns[0].addr, hung_addr);
}

/// InitProducerId answered COORDINATOR_LOAD_IN_PROGRESS (KRaft allocating
/// a block of producer ids) is asked again in place: connecting succeeds.
#[test]
fn init_producer_id_retries_coordinator_load_in_progress() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = one_partition_cluster();
    cluster.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        ],
    );
    let (mut p, t) = connect_to(&cluster);
    assert!(p.producer_id >= 0, "a producer id after two refusals");
    p.append(&t, 1, (0, 0), b"line").expect("append");
    let (r, events) = drain(&mut p);
    r.expect("delivered");
    assert!(
        matches!(&events[..], [Event::Acked { frame: 1, .. }]),
        "{events:?}"
    );
}

/// A connection the broker throttles (`throttle_time_ms`) writes nothing
/// until the throttle ends; then what waited goes out and is delivered.
#[test]
fn a_throttled_connection_waits_then_sends() {
    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    let c = p.by_node[&p.partitions[t.slot].leader];
    let throttle = Duration::from_millis(400);
    let started = Instant::now();
    p.conns[c].throttled_until = Some(started + throttle);
    p.append(&t, 1, (0, 0), b"line").expect("append");
    p.poll(Duration::from_millis(50), true).expect("poll");
    assert!(
        p.conns[c].in_flight.is_empty(),
        "nothing written while throttled"
    );
    assert_eq!(p.conns[c].waiting.len(), 1);
    let (r, events) = drain(&mut p);
    r.expect("delivered after the throttle");
    assert!(started.elapsed() >= throttle);
    assert!(
        matches!(&events[..], [Event::Acked { frame: 1, .. }]),
        "{events:?}"
    );
    assert!(p.conns[c].throttled_until.is_none());
}

mod retry;

/// Bootstrap brokers "B refuses the login, A is down" (in that order)
/// report B's refusal, which ends the session as `auth_failed`, not A's
/// lost connection, which would be retried as if the cluster were down.
#[test]
fn bootstrap_reports_a_login_refusal_over_a_broker_that_is_down() {
    use std::io::{Read, Write};
    let refusing = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refusing_port = refusing.local_addr().expect("addr").port();
    let down_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    // A broker whose ApiVersions lists no SASL API: the login is refused.
    let server = std::thread::spawn(move || {
        let (mut sock, _) = refusing.accept().expect("accept");
        let _ = crate::kafka::native::wire::read_response(&mut sock);
        // Header v0 (correlation 1), error code 0, no api_keys.
        let mut frame = 10u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&1i32.to_be_bytes());
        frame.extend_from_slice(&0i16.to_be_bytes());
        frame.extend_from_slice(&0i32.to_be_bytes());
        if sock.write_all(&frame).is_ok() {
            let _ = sock.read(&mut [0u8; 512]);
        }
    });
    let settings = ProducerSettings {
        sasl: Some(SaslConfig {
            mechanism: crate::config::SaslMechanism::Plain,
            credentials: Some(crate::config::SaslCredentials {
                username: "alice".into(),
                password: crate::config::Secret::new("s3cret"),
            }),
        }),
        ..test_settings(
            format!("127.0.0.1:{refusing_port},127.0.0.1:{down_port}"),
            false,
        )
    };
    let e = NativeProducer::connect(settings, "h1")
        .err()
        .expect("no broker takes us");
    assert!(
        matches!(&e, ProducerError::Authentication { addr, .. } if addr.ends_with(&format!(":{refusing_port}"))),
        "{e:?}"
    );
    server.join().expect("server");
}
