//! The producer's retries within a session ([`super::super::retry`])
//! against librdkafka's `MockCluster`. The mock broker does not check
//! sequence numbers for an idempotent producer, so order and numbering are
//! checked on the producer's side here; the cluster suite
//! (`tests/integration/cluster/`) proves them on Apache Kafka.

use super::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Sends `n` one-line frames (numbered from `first`) and drains: the
/// frames acknowledged, in the order their acks came.
fn send_frames(p: &mut NativeProducer, t: &FrameTarget, first: u64, n: u64) -> Vec<u64> {
    for f in first..first + n {
        p.append(t, f, (0, f), format!("line {f}").as_bytes())
            .expect("append");
        p.seal(t.slot).expect("seal");
    }
    let (r, events) = drain(p);
    r.expect("retriable errors do not end the session");
    events
        .iter()
        .map(|e| match e {
            Event::Acked {
                frame, lines: 1, ..
            } => *frame,
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

/// NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS and REQUEST_TIMED_OUT are
/// retried in the session: every line acknowledged once, with the batches
/// numbered once (the next sequence number is the line count: nothing was
/// renumbered), and the session goes on.
#[test]
fn retriable_produce_errors_are_sent_again_with_the_same_sequence_numbers() {
    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let acked = send_frames(&mut p, &t, 0, 6);
    assert_eq!(
        acked,
        (0..6).collect::<Vec<_>>(),
        "each line acked once, in order"
    );
    assert_eq!(p.partitions[t.slot].next_sequence, 6, "nothing renumbered");
    assert!(p.partitions[t.slot].failing.is_none(), "failing no more");
    assert_eq!(send_frames(&mut p, &t, 6, 1), [6], "the session goes on");
}

/// The partition's leader moves to another broker: the old one answers
/// NOT_LEADER_OR_FOLLOWER, the metadata is asked again, and the batches go
/// to the new leader, in the same session.
#[test]
fn batches_follow_a_leader_that_moved() {
    let cluster = rdkafka::mocking::MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("t1", 1, 3).expect("create topic");
    cluster
        .partition_leader("t1", 0, Some(1))
        .expect("leader 1");
    let (mut p, t) = connect_to(&cluster);
    assert_eq!(send_frames(&mut p, &t, 0, 2), [0, 1]);
    assert_eq!(p.partitions[t.slot].leader, 1);
    cluster
        .partition_leader("t1", 0, Some(3))
        .expect("leader 3");
    let acked = send_frames(&mut p, &t, 2, 4);
    assert_eq!(acked, [2, 3, 4, 5], "each line acked once, in order");
    assert_eq!(p.partitions[t.slot].leader, 3, "the new leader was learnt");
}

/// A partition that keeps failing past the delivery timeout ends the
/// session with `GaveUp`, naming the partition and the last error;
/// nothing is acknowledged.
#[test]
fn a_partition_failing_past_the_delivery_timeout_ends_the_session() {
    let cluster = one_partition_cluster();
    let mut settings = mock_settings(&cluster, false);
    settings.timeouts.delivery = Duration::from_secs(1);
    let mut p = NativeProducer::connect(settings, "h1").expect("connect");
    let t = p.target("t1", "a", "/a.log", (1, 0)).expect("target");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 200],
    );
    let started = Instant::now();
    p.append(&t, 1, (0, 0), b"line").expect("append");
    let (r, events) = drain(&mut p);
    match r {
        Err(e @ ProducerError::GaveUp { .. }) => {
            let text = e.to_string();
            assert!(text.contains("t1/0"), "{text}");
            assert!(text.contains("NotEnoughReplicas"), "{text}");
        }
        other => panic!("want GaveUp, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(events.is_empty(), "nothing acknowledged: {events:?}");
}

/// OUT_OF_ORDER_SEQUENCE_NUMBER with no earlier batch held means the
/// broker lost what it had: the session ends (the read-back decides).
#[test]
fn out_of_sequence_with_nothing_held_ends_the_session() {
    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    p.append(&t, 1, (0, 0), b"line").expect("append");
    let (r, events) = drain(&mut p);
    assert!(matches!(r, Err(ProducerError::Refused { .. })), "{r:?}");
    assert!(events.is_empty(), "nothing acknowledged: {events:?}");
}

/// A connection lost with batches unanswered (the broker goes down, and
/// comes back): they are held and sent again on a new connection, each
/// line acknowledged once.
#[test]
fn batches_of_a_lost_connection_are_sent_again() {
    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    assert_eq!(send_frames(&mut p, &t, 0, 1), [0]);
    cluster
        .broker_round_trip_time(1, Duration::from_millis(300))
        .expect("rtt");
    for f in 1..4u64 {
        p.append(&t, f, (0, f), b"line").expect("append");
        p.seal(t.slot).expect("seal");
    }
    cluster.broker_down(1).expect("down");
    std::thread::sleep(Duration::from_millis(100));
    cluster.broker_up(1).expect("up");
    cluster
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("rtt");
    let (r, events) = drain(&mut p);
    r.expect("a lost connection does not end the session");
    let acked: Vec<u64> = events
        .iter()
        .map(|e| match e {
            Event::Acked { frame, .. } => *frame,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(acked, [1, 2, 3], "each line acked once, in order");
}

/// A partition's outcomes are reported in seal order even when a later
/// batch is answered first (its earlier one was sent again): the
/// forwarder counts a frame's acknowledged lines as its first ones.
#[test]
fn a_later_batch_answered_first_is_reported_after_the_earlier_one() {
    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    let slot = t.slot;
    p.report(
        slot,
        1,
        NativeProducer::acknowledged(&[(7, 2)], 0, Some(10)),
    );
    let mut events = Vec::new();
    p.take_events(&mut events);
    assert!(events.is_empty(), "batch 1 waits for batch 0: {events:?}");
    p.report(slot, 0, NativeProducer::acknowledged(&[(7, 3)], 0, Some(5)));
    p.take_events(&mut events);
    let frames: Vec<(u32, Option<i64>)> = events
        .iter()
        .map(|e| match e {
            Event::Acked {
                lines, last_offset, ..
            } => (*lines, *last_offset),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(frames, [(3, Some(7)), (2, Some(11))]);
}

/// Until Kafka has taken a batch of the session's producer id in a
/// partition, only one batch of it is unanswered (a broker with no state
/// for a producer id takes any sequence number first, so a second batch
/// could land while the first was refused); the rest wait, then go.
#[test]
fn one_batch_at_a_time_until_the_first_is_taken() {
    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    for f in 0..3u64 {
        p.append(&t, f, (0, f), b"line").expect("append");
        p.seal(t.slot).expect("seal");
    }
    let unanswered: usize = p
        .conns
        .iter()
        .map(|c| c.in_flight.len() + c.waiting.len())
        .sum();
    assert_eq!(unanswered, 1, "only the first batch is out");
    assert_eq!(p.partitions[t.slot].held.len(), 2, "the others wait");
    let (r, events) = drain(&mut p);
    r.expect("drain");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(p.partitions[t.slot].established);
}

/// Polls `p` for `ms`, gathering events; the first failure ends it.
fn poll_for(p: &mut NativeProducer, ms: u64, events: &mut Vec<Event>) -> Result<(), ProducerError> {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < deadline {
        let r = p.poll(Duration::from_millis(10), true);
        p.take_events(events);
        r?;
    }
    Ok(())
}

/// Takes answers in until partition `slot` is held.
fn until_held(p: &mut NativeProducer, slot: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.partitions[slot].hold.is_none() {
        assert!(Instant::now() < deadline, "never held");
        if let Ok((from, r)) = p.responses.recv_timeout(Duration::from_millis(5)) {
            p.answer(from, r).expect("answer");
        }
    }
}

/// A Produce failure that arrives while the metadata is asked who leads a
/// held partition ends the session: it is not lost with its batch.
#[test]
fn a_produce_failure_during_a_leader_refresh_ends_the_session() {
    let cluster = one_partition_cluster();
    cluster.create_topic("t2", 1, 1).expect("t2");
    let (mut p, t) = connect_to(&cluster);
    let t2 = p.target("t2", "b", "/b.log", (1, 0)).expect("t2");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        ],
    );
    cluster
        .broker_round_trip_time(1, Duration::from_millis(300))
        .expect("rtt");
    p.append(&t, 1, (0, 1), b"x").expect("append");
    p.seal(t.slot).expect("seal");
    until_held(&mut p, t.slot);
    p.append(&t2, 2, (0, 2), b"y").expect("append");
    p.seal(t2.slot).expect("seal");
    let mut events = Vec::new();
    let r = poll_for(&mut p, 3000, &mut events);
    assert!(
        matches!(r, Err(ProducerError::Refused { .. })),
        "the refusal ends the session: {r:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Acked { frame: 2, .. })),
        "{events:?}"
    );
}

/// While a held partition still has a batch unanswered, waiting for
/// progress sleeps until an answer comes; it does not spin.
#[test]
fn waiting_behind_an_unanswered_batch_does_not_spin() {
    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    p.append(&t, 0, (0, 0), b"w").expect("append");
    let (r, _) = drain(&mut p);
    r.expect("the partition is established");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
    );
    cluster
        .broker_round_trip_time(1, Duration::from_millis(1000))
        .expect("rtt");
    p.append(&t, 1, (0, 1), b"x").expect("append");
    p.seal(t.slot).expect("seal");
    std::thread::sleep(Duration::from_millis(600));
    p.append(&t, 2, (0, 2), b"y").expect("append");
    p.seal(t.slot).expect("seal");
    until_held(&mut p, t.slot);
    let started = Instant::now();
    let mut calls = 0u64;
    while p.partitions[t.slot].hold.is_some() && started.elapsed() < Duration::from_secs(3) {
        p.wait_for_progress().expect("wait");
        calls += 1;
    }
    assert!(calls < 50, "{calls} waits in {:?}", started.elapsed());
}

/// A metadata refresh that times out on the only broker gives the setup
/// connection up (a late answer would put it out of step); the next try
/// opens a new one, and the held line is delivered.
#[test]
fn a_refresh_that_times_out_does_not_leave_the_setup_connection_out_of_step() {
    let cluster = one_partition_cluster();
    let mut settings = mock_settings(&cluster, false);
    settings.timeouts.request = Duration::from_secs(1);
    let mut p = NativeProducer::connect(settings, "h1").expect("connect");
    let t = p.target("t1", "a", "/a.log", (1, 0)).expect("target");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION],
    );
    p.append(&t, 1, (0, 1), b"x").expect("append");
    p.seal(t.slot).expect("seal");
    until_held(&mut p, t.slot);
    cluster
        .broker_round_trip_time(1, Duration::from_millis(1500))
        .expect("rtt");
    let mut events = Vec::new();
    let r = poll_for(&mut p, 2000, &mut events);
    cluster
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("rtt");
    let r = r.and_then(|()| poll_for(&mut p, 4000, &mut events));
    r.expect("the session goes on");
    assert!(
        matches!(&events[..], [Event::Acked { frame: 1, .. }]),
        "{events:?}"
    );
}

/// A lone line sent once with an outcome unknown (REQUEST_TIMED_OUT:
/// Kafka may have it), then refused for good, does not give its sequence
/// number back: the session ends, and the next one decides by the
/// read-back.
#[test]
fn a_lone_line_refused_after_an_unknown_outcome_ends_the_session() {
    let cluster = one_partition_cluster();
    let (mut p, t) = connect_to(&cluster);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
    let big = vec![b'q'; 100 << 10];
    p.append(&t, 1, (0, 1), &big).expect("append");
    let (r, events) = drain(&mut p);
    assert!(
        matches!(r, Err(ProducerError::BatchRefused { lines: 1, .. })),
        "{r:?}"
    );
    assert!(events.is_empty(), "nothing dead-lettered here: {events:?}");
}

/// A lone line Kafka did not keep (NOT_ENOUGH_REPLICAS is raised before
/// appending), sent again and then refused for good, is dead-lettered, the
/// session goes on, and the partition is failing no more (no `GaveUp`
/// later with nothing pending).
#[test]
fn a_lone_line_refused_after_a_retry_is_dead_lettered_and_the_session_goes_on() {
    let cluster = one_partition_cluster();
    let mut settings = mock_settings(&cluster, false);
    settings.timeouts.delivery = Duration::from_secs(1);
    let mut p = NativeProducer::connect(settings, "h1").expect("connect");
    let t = p.target("t1", "a", "/a.log", (1, 0)).expect("target");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
    let big = vec![b'q'; 100 << 10];
    p.append(&t, 1, (0, 1), &big).expect("append");
    let mut events = Vec::new();
    poll_for(&mut p, 2500, &mut events).expect("the session goes on");
    assert!(
        matches!(&events[..], [Event::Refused { frame: 1, .. }]),
        "{events:?}"
    );
    assert!(p.partitions[t.slot].failing.is_none());
    assert_eq!(
        p.partitions[t.slot].next_sequence, 0,
        "its number given back"
    );
}
