//! Each secured listener delivers the exactly-once scenario, with each
//! client: lines appended while logcatch runs, `kill -9` mid-stream, a
//! restart, more lines; every line arrives once, read back over the
//! broker's plaintext listener. The other mechanisms (SCRAM-SHA-256,
//! PLAIN, and OAUTHBEARER with librdkafka) deliver a file once.

use std::thread;
use std::time::Duration;

use std::path::Path;

use super::{secure_root, Access, SecureCase};
use crate::common::secure::SecureBroker;
use crate::common::*;

const WAIT: Duration = Duration::from_secs(90);

/// The listeners that get the whole scenario.
const KILLED: &[Access] = &[
    Access::Tls,
    Access::MutualTls,
    Access::Sasl("SCRAM-SHA-512"),
    Access::SaslTls("SCRAM-SHA-512"),
];

/// The other mechanisms: one file, delivered once.
const DELIVERED: &[Access] = &[
    Access::Sasl("SCRAM-SHA-256"),
    Access::Sasl("PLAIN"),
    Access::SaslTls("PLAIN"),
];

#[test]
fn every_secured_listener_delivers_exactly_once_across_kill9_native() {
    every_listener("native", &[]);
}

#[test]
fn every_secured_listener_delivers_exactly_once_across_kill9_librdkafka() {
    every_listener("librdkafka", &[Access::Sasl("OAUTHBEARER")]);
}

fn every_listener(client: &str, extra: &[Access]) {
    let b = SecureBroker::start();
    let root = secure_root();
    for &access in KILLED {
        killed_midway(&b, root.path(), client, access);
    }
    for &access in DELIVERED.iter().chain(extra) {
        delivered_once(&b, root.path(), client, access);
    }
}

/// The files of `client`'s daemon on `access`, in `root/<access>`.
fn listener_case(b: &SecureBroker, root: &Path, client: &str, access: Access) -> SecureCase {
    let topic = format!("sec-{client}-{}", access.name());
    SecureCase::new(root, &access.name(), topic, b.password())
}

/// The exactly-once scenario through `access`.
fn killed_midway(b: &SecureBroker, root: &Path, client: &str, access: Access) {
    let case = listener_case(b, root, client, access);
    let topic = &case.topic;
    const TOTAL: u64 = 12_000;
    write_numbered(&case.log, 0, 3_000);
    let mut d = Daemon::with(&case.dir, &case.config(b, client, access, &b.pki().ca));
    let writer = write_numbered_slowly(&case.log, 3_000, TOTAL, 300, Duration::from_millis(20));
    // Killed once Kafka took some lines, so that the restart resends from
    // a cursor behind what Kafka has.
    wait_status(d.config_path(), "some lines delivered", WAIT, |s| {
        s["broker"] == "up"
    });
    thread::sleep(Duration::from_millis(300));
    d.assert_running();
    d.kill9();
    d.restart();
    writer.join().expect("writer");
    let msgs = d
        .consume(&b.addr(), topic)
        .until(|m| Tally::of(m, 0..TOTAL).missing.is_empty())
        .timeout(WAIT)
        .run();
    eprintln!(
        "secure {client} {}: {} messages for {TOTAL} lines",
        access.name(),
        msgs.len()
    );
    assert_exactly_once(&msgs, 0..TOTAL);
    let status = ctl_json(d.config_path(), &["status", "--json"]);
    assert_eq!(status["kafka_client"], client, "{status:#}");
    assert!(
        !status.to_string().contains(b.password()) && !d.log().contains(b.password()),
        "neither the status nor the log may show the password"
    );
    d.stop();
}

/// One file through `access`, delivered once.
fn delivered_once(b: &SecureBroker, root: &Path, client: &str, access: Access) {
    let case = listener_case(b, root, client, access);
    let topic = &case.topic;
    write_numbered(&case.log, 0, 2_000);
    let mut d = Daemon::with(&case.dir, &case.config(b, client, access, &b.pki().ca));
    let msgs = d
        .consume(&b.addr(), topic)
        .until_count(2_000)
        .timeout(WAIT)
        .run();
    eprintln!(
        "secure {client} {}: {} messages for 2000 lines",
        access.name(),
        msgs.len()
    );
    assert_exactly_once(&msgs, 0..2_000);
    assert!(
        !d.log().contains(b.password()),
        "the log must never show the password"
    );
    d.stop();
}
