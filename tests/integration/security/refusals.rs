//! What an operator sees when Kafka refuses logcatch's credentials or
//! logcatch refuses the broker's certificate, and that fixing the config
//! while it runs delivers every waiting line exactly once.
//!
//! For each client:
//! - a wrong SCRAM-SHA-512 password: broker state `auth_failed`, the cause
//!   in `last_kafka_error`, `logcatch_kafka_auth_failed 1`, nothing
//!   delivered and every line still in the spool; the password file is
//!   fixed and SIGHUP reloads it: every line arrives once, the state is
//!   `up` and the gauge 0;
//! - a CA that did not sign the broker's certificate: the same, fixed by
//!   an edit of the config file (the watcher's reload).
//!
//! - a client certificate that expired (mutual TLS), for both clients on
//!   one broker: the same, fixed by an edit naming the valid certificate.
//!
//! And a reload that asks for GSSAPI (not built in) is refused naming the
//! line, while the daemon goes on delivering on the last good config.

use std::path::Path;
use std::time::Duration;

use super::{password_file, secure_root, Access, SecureCase};
use crate::common::secure::SecureBroker;
use crate::common::*;

const WAIT: Duration = Duration::from_secs(90);
const LINES: u64 = 3_000;

#[test]
fn a_wrong_password_is_auth_failed_then_a_sighup_with_the_right_one_delivers_native() {
    wrong_password("native");
}

#[test]
fn a_wrong_password_is_auth_failed_then_a_sighup_with_the_right_one_delivers_librdkafka() {
    wrong_password("librdkafka");
}

#[test]
fn an_untrusted_ca_is_auth_failed_then_the_fixed_config_delivers_native() {
    untrusted_ca("native");
}

#[test]
fn an_untrusted_ca_is_auth_failed_then_the_fixed_config_delivers_librdkafka() {
    untrusted_ca("librdkafka");
}

#[test]
fn an_expired_client_certificate_is_auth_failed_then_a_valid_one_delivers_both_clients() {
    let b = SecureBroker::start();
    let root = secure_root();
    for client in ["native", "librdkafka"] {
        let case = SecureCase::new(
            root.path(),
            client,
            format!("sec-expired-{client}"),
            b.password(),
        );
        write_numbered(&case.log, 0, LINES);
        let pki = b.pki();
        let valid = case.config(&b, client, Access::MutualTls, &pki.ca);
        let expired = valid.clone().kafka(
            "tls",
            &format!(
                "{{ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\"}}",
                pki.ca.display(),
                pki.expired_client_cert.display(),
                pki.expired_client_key.display()
            ),
        );
        let mut d = Daemon::with(&case.dir, &expired);
        let data = case.dir.join("data");
        assert_refused_and_holding(&mut d, &data, &["certificate", "alert", "tls", "ssl"]);
        d.rewrite_config(&valid.render());
        assert_delivered_after_fix(&mut d, &b, &case.topic, &data);
        d.stop();
    }
}

/// The `logcatch_kafka_auth_failed` gauge, from the admin socket.
fn auth_failed_gauge(data: &Path) -> f64 {
    let (code, body) = http_get_unix(&data.join("admin.sock"), "/metrics");
    assert_eq!(code, 200, "GET /metrics: {body}");
    parse_metrics(&body)
        .get("logcatch_kafka_auth_failed")
        .copied()
        .unwrap_or_else(|| panic!("no logcatch_kafka_auth_failed in /metrics:\n{body}"))
}

/// Waits for `auth_failed`, then checks that it says why (`cause`, any
/// case), delivered nothing and holds every line in its spool.
fn assert_refused_and_holding(d: &mut Daemon, data: &Path, cause: &[&str]) {
    let st = wait_status(d.config_path(), "broker auth_failed", WAIT, |s| {
        s["broker"] == "auth_failed"
    });
    let err = st["last_kafka_error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        cause.iter().any(|c| err.contains(c)),
        "last_kafka_error does not say {cause:?}: {st:#}"
    );
    assert_eq!(auth_failed_gauge(data), 1.0, "the gauge shows the refusal");
    // Every line is spooled and none is delivered.
    wait_offsets_row(d.config_path(), "app", "every line spooled", WAIT, |r| {
        r["lines"].as_u64() == Some(LINES)
    });
    let q = ctl_json(d.config_path(), &["queue", "--json"]);
    assert_eq!(q["delivered"].as_u64(), Some(0), "queue: {q:#}");
    assert!(q["waiting_bytes"].as_u64() > Some(0), "queue: {q:#}");
    d.assert_running();
}

/// After the fix: every line once, state `up`, gauge 0.
fn assert_delivered_after_fix(d: &mut Daemon, b: &SecureBroker, topic: &str, data: &Path) {
    let msgs = d
        .consume(&b.addr(), topic)
        .until_count(LINES as usize)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..LINES);
    wait_status(d.config_path(), "broker up", WAIT, |s| s["broker"] == "up");
    assert_eq!(auth_failed_gauge(data), 0.0, "the gauge is back to 0");
}

fn wrong_password(client: &str) {
    let b = SecureBroker::start();
    let root = secure_root();
    let case = SecureCase::new(
        root.path(),
        client,
        format!("sec-wrong-password-{client}"),
        "not-the-password",
    );
    write_numbered(&case.log, 0, LINES);
    let cfg = case.config(&b, client, Access::Sasl("SCRAM-SHA-512"), &b.pki().ca);
    let mut d = Daemon::with(&case.dir, &cfg);
    let data = case.dir.join("data");
    assert_refused_and_holding(&mut d, &data, &["authentication", "sasl"]);
    assert!(
        !d.log().contains("not-the-password"),
        "the log must never show the password"
    );

    password_file(&case.dir, b.password());
    d.sighup();
    assert_delivered_after_fix(&mut d, &b, &case.topic, &data);
    d.stop();
}

fn untrusted_ca(client: &str) {
    let b = SecureBroker::start();
    let root = secure_root();
    let case = SecureCase::new(
        root.path(),
        client,
        format!("sec-untrusted-ca-{client}"),
        b.password(),
    );
    let (topic, log) = (&case.topic, &case.log);
    write_numbered(log, 0, LINES);
    let pki = b.pki();
    let cfg = |ca: &Path| case.config(&b, client, Access::Tls, ca);
    let mut d = Daemon::with(&case.dir, &cfg(&pki.untrusted_ca));
    let data = case.dir.join("data");
    assert_refused_and_holding(&mut d, &data, &["certificate", "ssl", "tls"]);

    // The watcher picks the edit up (no signal).
    d.rewrite_config(&cfg(&pki.ca).render());
    assert_delivered_after_fix(&mut d, &b, topic, &data);

    // An edit asking for what no client here serves is refused, naming the
    // line; the daemon goes on with the last good config.
    let gssapi = cfg(&pki.ca).kafka("sasl", "{mechanism: GSSAPI, username: alice}");
    d.rewrite_config(&gssapi.render());
    let st = wait_status(d.config_path(), "the GSSAPI edit refused", WAIT, |s| {
        s["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("kafka.sasl.mechanism"))
    });
    let err = st["last_reload_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("GSSAPI") && err.contains("logcatch.yaml:"),
        "{st:#}"
    );
    write_numbered(log, LINES, LINES + 500);
    let msgs = d
        .consume(&b.addr(), topic)
        .until_count((LINES + 500) as usize)
        .timeout(WAIT)
        .run();
    assert_exactly_once(&msgs, 0..LINES + 500);
    d.stop();
}

/// `--check`, and the daemon at startup, refuse what no client of this
/// build serves, naming the file, line and key, instead of looping on it.
#[test]
fn check_and_startup_refuse_what_no_built_client_serves() {
    let dir = secure_root();
    let base = || ConfigBuilder::new(dir.path().join("data"), "127.0.0.1:9", "t");
    let cases = [
        (
            base()
                .kafka("client", "native")
                .kafka("sasl", "{mechanism: OAUTHBEARER}"),
            "kafka.client",
        ),
        (
            base().kafka("sasl", "{mechanism: GSSAPI, username: a}"),
            "kafka.sasl.mechanism",
        ),
        (
            base().kafka(
                "properties",
                "{security.protocol: sasl_plaintext, sasl.mechanism: GSSAPI}",
            ),
            "kafka.properties.sasl.mechanism",
        ),
    ];
    let config = dir.path().join("logcatch.yaml");
    for (cfg, key) in cases {
        std::fs::write(&config, cfg.render()).expect("write config");
        let out = std::process::Command::new(Daemon::bin())
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .output()
            .expect("run logcatch --check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--check accepted:\n{}", cfg.render());
        assert!(
            stderr.contains("logcatch.yaml:") && stderr.contains(&format!("`{key}`")),
            "--check does not name the line and `{key}`:\n{stderr}"
        );
        let (code, text) = run_to_exit(&config, Duration::from_secs(30));
        assert_ne!(code, Some(0), "the daemon started with:\n{}", cfg.render());
        assert!(text.contains(&format!("`{key}`")), "{text}");
    }
}
