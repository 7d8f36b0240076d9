//! The secured test broker itself ([`SecureBroker`]), checked with a plain
//! librdkafka producer before logcatch's TLS and SASL scenarios rely on
//! it: every listener takes a record from a client with the right
//! settings (and its metadata points back at that listener), and refuses
//! one without them: a wrong SCRAM password, no client certificate or an
//! expired one on the mTLS listener, trust in another CA only.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Message;

use crate::common::secure::SecureBroker;
use crate::common::*;

const TOPIC: &str = "secure-smoke";

/// One way into the broker: a listener and the librdkafka settings of a
/// client on it.
struct WayIn {
    what: &'static str,
    addr: String,
    settings: Vec<(&'static str, String)>,
}

/// What a producer saw: its record's delivery (the offset, or the error),
/// the errors and warnings librdkafka reported, and the broker addresses
/// its metadata named.
#[derive(Default)]
struct Outcome {
    delivery: Option<Result<i64, String>>,
    errors: Vec<String>,
    brokers: Vec<String>,
}

/// A producer context that records what the producer saw.
#[derive(Default)]
struct Recorder(Mutex<Outcome>);

impl ClientContext for Recorder {
    /// Warnings and worse only: the producer is made with `log_level` 4.
    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        let mut o = self.0.lock().unwrap();
        o.errors.push(format!("log {fac}: {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut o = self.0.lock().unwrap();
        o.errors.push(format!("error {error}: {reason}"));
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut o = self.0.lock().unwrap();
        o.delivery = Some(match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.to_string()),
        });
    }
}

/// Produces one record to [`TOPIC`] through `way`, waiting up to `wait`
/// for its delivery report (a record not delivered fails after
/// `message.timeout.ms`, 5 s less than `wait`), then asks for metadata if
/// it was delivered.
fn produce_one(way: &WayIn, wait: Duration) -> Outcome {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &way.addr)
        .set("message.timeout.ms", (wait.as_millis() - 5_000).to_string())
        .set("log_level", "4");
    for (k, v) in &way.settings {
        config.set(*k, v);
    }
    let producer: BaseProducer<Recorder> = config
        .create_with_context(Recorder::default())
        .unwrap_or_else(|e| panic!("{}: cannot create the producer: {e}", way.what));
    producer
        .send(BaseRecord::to(TOPIC).key(way.what).payload(way.what))
        .unwrap_or_else(|(e, _)| panic!("{}: cannot queue the record: {e}", way.what));
    let deadline = Instant::now() + wait;
    while producer.context().0.lock().unwrap().delivery.is_none() && Instant::now() < deadline {
        producer.poll(Duration::from_millis(100));
    }
    let delivered = matches!(producer.context().0.lock().unwrap().delivery, Some(Ok(_)));
    let brokers = if delivered {
        let md = producer
            .client()
            .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{}: metadata: {e}", way.what));
        md.brokers()
            .iter()
            .map(|b| format!("{}:{}", b.host(), b.port()))
            .collect()
    } else {
        Vec::new()
    };
    let mut outcome = std::mem::take(&mut *producer.context().0.lock().unwrap());
    outcome.brokers = brokers;
    outcome
}

/// The settings of a TLS client trusting `ca`.
fn tls(ca: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "ssl".into()),
        ("ssl.ca.location", ca.display().to_string()),
    ]
}

/// The settings of a SASL client with `mechanism` and `password` (the
/// broker's user), over TLS when `ca` is given.
fn sasl(
    b: &SecureBroker,
    ca: Option<&std::path::Path>,
    mechanism: &str,
    password: &str,
) -> Vec<(&'static str, String)> {
    let mut s = match ca {
        Some(ca) => vec![
            ("security.protocol", "sasl_ssl".into()),
            ("ssl.ca.location", ca.display().to_string()),
        ],
        None => vec![("security.protocol", "sasl_plaintext".into())],
    };
    s.extend([
        ("sasl.mechanism", mechanism.into()),
        ("sasl.username", b.user().into()),
        ("sasl.password", password.into()),
    ]);
    s
}

/// Over 80 lines: most of it is the table of ways in.
#[test]
fn every_secured_listener_takes_a_record_with_the_right_credentials() {
    let b = SecureBroker::start();
    b.broker().create_topic(TOPIC, 1);
    let pki = b.pki();
    let mut mtls = tls(&pki.ca);
    mtls.extend([
        (
            "ssl.certificate.location",
            pki.client_cert.display().to_string(),
        ),
        ("ssl.key.location", pki.client_key.display().to_string()),
    ]);
    let oauth = vec![
        ("security.protocol", "sasl_plaintext".into()),
        ("sasl.mechanism", "OAUTHBEARER".into()),
        ("enable.sasl.oauthbearer.unsecure.jwt", "true".into()),
        ("sasl.oauthbearer.config", format!("principal={}", b.user())),
    ];
    let ways = [
        ("plaintext", b.addr(), vec![]),
        ("tls", b.tls_addr(), tls(&pki.ca)),
        // The certificate's DNS name, checked too; the metadata names
        // 127.0.0.1 (its IP address).
        (
            "tls by name",
            b.tls_addr().replace("127.0.0.1", "localhost"),
            tls(&pki.ca),
        ),
        ("mtls", b.mtls_addr(), mtls),
        (
            "scram-sha-256",
            b.sasl_addr(),
            sasl(&b, None, "SCRAM-SHA-256", b.password()),
        ),
        (
            "scram-sha-512",
            b.sasl_addr(),
            sasl(&b, None, "SCRAM-SHA-512", b.password()),
        ),
        (
            "plain",
            b.sasl_addr(),
            sasl(&b, None, "PLAIN", b.password()),
        ),
        ("oauthbearer", b.sasl_addr(), oauth),
        (
            "sasl-ssl scram-sha-512",
            b.sasl_ssl_addr(),
            sasl(&b, Some(&pki.ca), "SCRAM-SHA-512", b.password()),
        ),
        (
            "sasl-ssl plain",
            b.sasl_ssl_addr(),
            sasl(&b, Some(&pki.ca), "PLAIN", b.password()),
        ),
    ];
    for (what, addr, settings) in ways.iter().cloned() {
        let way = WayIn {
            what,
            addr,
            settings,
        };
        let o = produce_one(&way, Duration::from_secs(30));
        assert!(
            matches!(o.delivery, Some(Ok(_))),
            "{what} via {}: the record was not delivered ({:?}); librdkafka said:\n{}",
            way.addr,
            o.delivery,
            o.errors.join("\n")
        );
        assert_eq!(
            o.brokers,
            vec![way.addr.replace("localhost", "127.0.0.1")],
            "{what}: the metadata must point back at the listener"
        );
    }
    // Every record is in the topic, read over PLAINTEXT.
    let probe: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.addr())
        .create()
        .expect("probe client");
    let (low, high) = probe
        .client()
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!(high - low, ways.len() as i64, "one record per way in");
}

/// Over 80 lines: most of it is the table of refusals.
#[test]
fn every_secured_listener_refuses_a_client_without_the_right_credentials() {
    let b = SecureBroker::start();
    b.broker().create_topic(TOPIC, 1);
    let pki = b.pki();
    let mut expired = tls(&pki.ca);
    expired.extend([
        (
            "ssl.certificate.location",
            pki.expired_client_cert.display().to_string(),
        ),
        (
            "ssl.key.location",
            pki.expired_client_key.display().to_string(),
        ),
    ]);
    // Each refusal, and a piece of what librdkafka says about it.
    let refusals = [
        (
            WayIn {
                what: "scram-sha-512 with a wrong password",
                addr: b.sasl_addr(),
                settings: sasl(&b, None, "SCRAM-SHA-512", "not-the-password"),
            },
            "Authentication failed during authentication due to invalid credentials",
        ),
        (
            WayIn {
                what: "sasl-ssl plain with a wrong password",
                addr: b.sasl_ssl_addr(),
                settings: sasl(&b, Some(&pki.ca), "PLAIN", "not-the-password"),
            },
            "Authentication failed: Invalid username or password",
        ),
        (
            WayIn {
                what: "mtls without a client certificate",
                addr: b.mtls_addr(),
                settings: tls(&pki.ca),
            },
            "alert bad certificate",
        ),
        (
            WayIn {
                what: "mtls with an expired client certificate",
                addr: b.mtls_addr(),
                settings: expired,
            },
            "alert certificate unknown",
        ),
        (
            WayIn {
                what: "tls trusting only another CA",
                addr: b.tls_addr(),
                settings: tls(&pki.untrusted_ca),
            },
            "certificate verify failed",
        ),
    ];
    // In parallel: each waits out its message timeout.
    let outcomes: Vec<Outcome> = thread::scope(|s| {
        let handles: Vec<_> = refusals
            .iter()
            .map(|(way, _)| s.spawn(move || produce_one(way, Duration::from_secs(10))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((way, said), o) in refusals.iter().zip(&outcomes) {
        let errors = o.errors.join("\n");
        assert!(
            matches!(o.delivery, Some(Err(_))),
            "{}: the broker must refuse the record, got {:?}; librdkafka said:\n{errors}",
            way.what,
            o.delivery
        );
        assert!(
            errors.contains(said),
            "{}: librdkafka must say {said:?}; it said:\n{errors}",
            way.what
        );
    }
    let log = b.broker().log();
    assert!(
        log.contains("Failed authentication"),
        "the broker logs the refusals; its log ends:\n{}",
        tail_lines(&log, 30)
    );
}
