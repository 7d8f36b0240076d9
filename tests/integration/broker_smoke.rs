//! Proves the test helpers on their own, without the daemon: the Apache
//! Kafka broker starts, a plain idempotent producer's messages all come
//! back through [`Consume`], and the proxy really cuts the broker off and
//! back on. One test runs logcatch against the second broker, tansu.

use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts delivery reports: successes and failures.
#[derive(Default, Clone)]
struct Counter {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl ClientContext for Counter {}

impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::SeqCst),
            Err(_) => self.failed.fetch_add(1, Ordering::SeqCst),
        };
    }
}

fn producer(addr: &str) -> (ThreadedProducer<Counter>, Counter) {
    let counter = Counter::default();
    let p = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "3")
        .create_with_context(counter.clone())
        .expect("producer");
    (p, counter)
}

fn send(p: &ThreadedProducer<Counter>, topic: &str, n: u64) {
    let line = numbered_line(n);
    let key = format!("k{}", n % 3);
    let headers = OwnedHeaders::new().insert(Header {
        key: "n",
        value: Some(n.to_string().as_bytes()),
    });
    let mut rec = BaseRecord::to(topic)
        .payload(line.as_bytes())
        .key(key.as_bytes())
        .headers(headers);
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((e, r)) => {
                // Queue full: let it drain.
                assert!(
                    matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "send: {e}"
                );
                rec = r;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn wait_delivered(c: &Counter, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        assert_eq!(c.failed.load(Ordering::SeqCst), 0, "a delivery failed");
        if c.ok.load(Ordering::SeqCst) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn produce_and_consume_1000_in_order() {
    let t0 = Instant::now();
    let broker = Broker::start();
    eprintln!("broker up at {} in {:?}", broker.addr(), t0.elapsed());
    broker.create_topic("smoke", 1);

    let (p, c) = producer(&broker.addr());
    for n in 0..1000 {
        send(&p, "smoke", n);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    assert!(wait_delivered(&c, 1000, Duration::from_secs(30)));

    let msgs = Consume::new(&broker.addr(), "smoke")
        .until_count(1000)
        .timeout(Duration::from_secs(30))
        .run();
    assert_eq!(msgs.len(), 1000, "consumed {} messages", msgs.len());
    assert_exactly_once(&msgs, 0..1000);
    let nums = numbers_of(&msgs);
    assert_eq!(nums, (0..1000).collect::<Vec<u64>>(), "not in order");
    let offsets: Vec<i64> = msgs.iter().map(|m| m.offset).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets not increasing"
    );
    for m in &msgs {
        let n = number_of(&m.value).unwrap();
        assert_eq!(m.key_str().as_deref(), Some(format!("k{}", n % 3).as_str()));
        assert_eq!(m.header("n"), Some(n.to_string()));
        assert_eq!(m.value.len(), LINE_LEN - 1);
    }
    eprintln!(
        "offsets {}..={}, total {:?}",
        offsets[0],
        offsets[offsets.len() - 1],
        t0.elapsed()
    );
}

#[test]
fn consume_reads_every_partition() {
    let broker = Broker::start();
    broker.create_topic("multi", 3);
    let (p, c) = producer(&broker.addr());
    for n in 0..300u64 {
        let line = numbered_line(n);
        p.send(
            BaseRecord::<[u8], [u8]>::to("multi")
                .payload(line.as_bytes())
                .partition((n % 3) as i32),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    assert!(wait_delivered(&c, 300, Duration::from_secs(30)));
    let msgs = Consume::new(&broker.addr(), "multi")
        .until_count(300)
        .timeout(Duration::from_secs(30))
        .run();
    assert_exactly_once(&msgs, 0..300);
    assert_file_order(&msgs);
    for m in &msgs {
        assert_eq!(m.partition as u64, number_of(&m.value).unwrap() % 3);
    }
}

#[test]
fn proxy_outage_blocks_then_delivers() {
    let mut broker = Broker::start_with_proxy();
    assert_ne!(broker.addr(), broker.direct_addr());
    broker.create_topic("outage", 1);

    let (p, c) = producer(&broker.addr());
    send(&p, "outage", 0);
    p.flush(Duration::from_secs(10)).expect("flush");
    assert!(wait_delivered(&c, 1, Duration::from_secs(10)));

    // Broker cut off: a new message must not be acknowledged.
    broker.proxy_mut().down();
    let t = Instant::now();
    send(&p, "outage", 1);
    assert!(
        !wait_delivered(&c, 2, Duration::from_secs(2)),
        "delivered while the proxy was down"
    );
    // Connections are refused, not just stalled.
    assert!(std::net::TcpStream::connect(broker.addr()).is_err());

    broker.proxy_mut().up();
    assert!(
        wait_delivered(&c, 2, Duration::from_secs(25)),
        "not delivered within 25 s after the proxy came back"
    );
    eprintln!("delivered {:?} after the outage began", t.elapsed());

    let msgs = Consume::new(&broker.addr(), "outage")
        .until_count(2)
        .timeout(Duration::from_secs(20))
        .run();
    // An idempotent producer must not duplicate across the reconnect.
    assert_exactly_once(&msgs, 0..2);
}

/// The second broker: logcatch delivers a file to tansu exactly once, as
/// it does to Apache Kafka.
#[test]
fn logcatch_delivers_to_tansu() {
    let env = TestEnv::with_broker(Broker::tansu());
    assert_eq!(env.broker.kind(), "tansu");
    let mut d = env.start_delivered(
        "tansu-smoke",
        "app",
        &env.path("app.log"),
        0..1000,
        Duration::from_secs(60),
    );
    d.stop();
}
