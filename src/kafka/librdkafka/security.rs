//! security: librdkafka's side of `kafka.tls` and `kafka.sasl`: the
//! `security.protocol`, `ssl.*` and `sasl.*` settings the typed keys map
//! to ([`set_security`]), and the load-time check that this build of
//! librdkafka takes every setting and SASL mechanism asked of it
//! ([`check_settings`]).
//!
//! This build has OpenSSL (the rdkafka `ssl` feature, Debian's
//! libssl-dev), hence TLS, SASL PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER
//! (its unsecured-JWT default, or OIDC where librdkafka has curl, which
//! this build does not). It has no Cyrus SASL, so no GSSAPI.
//!
//! Invariants: the password goes only into the librdkafka setting
//! `sasl.password`; it is never logged (librdkafka does not log setting
//! values at the log level logcatch sets).
//!
//! Must never: accept at load a setting that librdkafka would refuse at
//! every session start (the daemon would then loop on it).

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::{security_protocol, KafkaConfig};
use crate::kafka::forwarder::{BrokerState, ForwardStats};
use crate::runtime::lock;

/// Whether librdkafka's error `code` with `reason` is a broker refusing
/// logcatch's TLS handshake or SASL login, or logcatch refusing the
/// broker's certificate. Under TLS 1.3 a broker refuses a client
/// certificate after the handshake, which librdkafka reports as a
/// transport failure whose reason names the TLS alert; a reason that only
/// names an `ssl://` broker is not one.
pub fn is_security_refusal(code: RDKafkaErrorCode, reason: &str) -> bool {
    match code {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::UnsupportedSASLMechanism
        | RDKafkaErrorCode::IllegalSASLState
        | RDKafkaErrorCode::SSL => true,
        RDKafkaErrorCode::BrokerTransportFailure => {
            let r = reason.to_ascii_lowercase();
            ["alert", "certificate", "handshake"]
                .iter()
                .any(|w| r.contains(w))
        }
        _ => false,
    }
}

/// Whether a librdkafka log line says a broker refused logcatch's TLS
/// handshake or SASL login, or that logcatch refused the broker's
/// certificate: librdkafka does not always raise an error event for a
/// failed handshake, but it always logs one (`FAIL`).
fn is_security_log(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "ssl handshake failed",
        "certificate verify failed",
        "sasl authentication error",
        "authentication failed",
        " alert ",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// Marks the broker state `auth_failed` with the cause in `last_error`
/// when librdkafka logs a refused handshake or login at warning level or
/// worse.
pub(super) fn note_log(stats: &ForwardStats, level: RDKafkaLogLevel, fac: &str, message: &str) {
    let serious = matches!(
        level,
        RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning
    );
    if serious && is_security_log(message) {
        stats.broker_state.store(BrokerState::AuthFailed);
        *lock(&stats.last_error) = Some(format!("{fac}: {message}"));
    }
}

/// Puts the typed `kafka.tls` and `kafka.sasl` into `c`. (With either set,
/// [`crate::config`] has refused the same settings in `kafka.properties`.)
pub(super) fn set_security(c: &mut ClientConfig, k: &KafkaConfig) {
    if k.tls.is_none() && k.sasl.is_none() {
        return;
    }
    c.set(
        "security.protocol",
        security_protocol(k.tls.as_ref(), k.sasl.as_ref()),
    );
    if let Some(tls) = &k.tls {
        if let Some(ca) = &tls.ca_file {
            c.set("ssl.ca.location", ca.display().to_string());
        }
        if let Some(client) = &tls.client {
            c.set(
                "ssl.certificate.location",
                client.cert_file.display().to_string(),
            );
            c.set("ssl.key.location", client.key_file.display().to_string());
        }
        c.set(
            "ssl.endpoint.identification.algorithm",
            if tls.verify_hostname { "https" } else { "none" },
        );
    }
    if let Some(sasl) = &k.sasl {
        c.set("sasl.mechanism", sasl.mechanism.kafka_name());
        if let Some(cred) = &sasl.credentials {
            c.set("sasl.username", &cred.username);
            c.set("sasl.password", cred.password.expose());
        }
    }
}

/// A setting this build of librdkafka does not take.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("librdkafka refuses `{key}`: {reason}")]
    Refused { key: String, reason: String },
    #[error(
        "SASL mechanism {mechanism} is not built into this logcatch's librdkafka \
         (it has: {features})"
    )]
    Mechanism {
        key: String,
        mechanism: String,
        features: String,
    },
}

impl SettingError {
    /// The librdkafka setting at fault.
    pub fn property(&self) -> Option<&str> {
        match self {
            SettingError::Refused { key, .. } | SettingError::Mechanism { key, .. } => Some(key),
        }
    }
}

/// Whether this librdkafka takes every setting `k` makes (ours, the typed
/// security keys', `kafka.properties`), and has the SASL mechanism asked
/// for: librdkafka checks a value when it is set, but a mechanism only when
/// a client starts, so that one is checked against its `builtin.features`.
pub fn check_settings(k: &KafkaConfig) -> Result<(), SettingError> {
    let config = super::client_config(k, "check");
    let native = config.create_native_config().map_err(|e| match e {
        KafkaError::ClientConfig(_, reason, key, _) => SettingError::Refused { key, reason },
        other => SettingError::Refused {
            key: String::new(),
            reason: other.to_string(),
        },
    })?;
    let asked = ["sasl.mechanism", "sasl.mechanisms"]
        .iter()
        .find_map(|key| config.get(key).map(|m| (*key, m.to_string())));
    let protocol = config
        .get("security.protocol")
        .unwrap_or("plaintext")
        .to_ascii_lowercase();
    let Some((key, mechanism)) = asked.filter(|_| protocol.starts_with("sasl")) else {
        return Ok(());
    };
    let features = native.get("builtin.features").unwrap_or_default();
    let feature = match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => "sasl_plain",
        "SCRAM-SHA-256" | "SCRAM-SHA-512" => "sasl_scram",
        "OAUTHBEARER" => "sasl_oauthbearer",
        "GSSAPI" => "sasl_gssapi",
        _ => "",
    };
    if feature.is_empty() || !features.split(',').any(|f| f == feature) {
        return Err(SettingError::Mechanism {
            key: key.to_string(),
            mechanism,
            features,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{
        ClientCertificate, KafkaClient, SaslConfig, SaslCredentials, SaslMechanism, Secret,
        TlsConfig,
    };

    fn kafka(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "b:9093".into(),
            topic: "t".into(),
            compression: "lz4".into(),
            client: KafkaClient::Librdkafka,
            linger_ms: 5,
            create_topics: true,
            topic_partitions: 1,
            topic_replication_factor: -1,
            shutdown_ack_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(30),
            connect_timeout: std::time::Duration::from_secs(10),
            delivery_timeout: std::time::Duration::from_secs(120),
            tls: None,
            sasl: None,
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn typed_keys_become_librdkafka_settings() {
        let mut k = kafka(&[]);
        k.tls = Some(TlsConfig {
            ca_file: Some("/etc/ca.pem".into()),
            client: Some(ClientCertificate {
                cert_file: "/etc/c.pem".into(),
                key_file: "/etc/k.pem".into(),
            }),
            verify_hostname: false,
        });
        k.sasl = Some(SaslConfig {
            mechanism: SaslMechanism::ScramSha512,
            credentials: Some(SaslCredentials {
                username: "alice".into(),
                password: Secret::new("pw"),
            }),
        });
        let c = super::super::client_config(&k, "h");
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(c.get("ssl.certificate.location"), Some("/etc/c.pem"));
        assert_eq!(c.get("ssl.key.location"), Some("/etc/k.pem"));
        assert_eq!(c.get("ssl.endpoint.identification.algorithm"), Some("none"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("alice"));
        assert_eq!(c.get("sasl.password"), Some("pw"));
        check_settings(&k).expect("this build takes TLS and SCRAM");
    }

    #[test]
    fn this_build_takes_tls_scram_plain_and_oauthbearer_but_not_gssapi() {
        for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] {
            let k = kafka(&[("security.protocol", "sasl_ssl"), ("sasl.mechanism", m)]);
            check_settings(&k).unwrap_or_else(|e| panic!("{m}: {e}"));
        }
        let k = kafka(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "GSSAPI"),
        ]);
        let e = check_settings(&k).expect_err("no Cyrus SASL here");
        assert_eq!(e.property(), Some("sasl.mechanisms"));
        assert!(e.to_string().contains("GSSAPI"), "{e}");
    }

    #[test]
    fn tls_alerts_and_sasl_failures_are_security_refusals_but_a_plain_disconnect_is_not() {
        use RDKafkaErrorCode as C;
        assert!(is_security_refusal(
            C::Authentication,
            "SASL authentication error"
        ));
        assert!(is_security_refusal(C::SSL, "certificate verify failed"));
        assert!(is_security_refusal(
            C::BrokerTransportFailure,
            "ssl://127.0.0.1:9093/1: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate"
        ));
        assert!(!is_security_refusal(
            C::BrokerTransportFailure,
            "ssl://127.0.0.1:9093/1: Disconnected (after 600000ms in state UP)"
        ));
        assert!(!is_security_refusal(
            C::AllBrokersDown,
            "1/1 brokers are down"
        ));
    }

    #[test]
    fn a_logged_handshake_or_login_failure_marks_the_broker_auth_failed() {
        let stats = ForwardStats::default();
        note_log(&stats, RDKafkaLogLevel::Error, "FAIL", "ssl://h:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed");
        assert_eq!(stats.broker_state.load(), BrokerState::AuthFailed);
        assert!(lock(&stats.last_error)
            .as_deref()
            .is_some_and(|e| e.contains("certificate verify failed")));
        let stats = ForwardStats::default();
        note_log(
            &stats,
            RDKafkaLogLevel::Info,
            "FAIL",
            "SSL handshake failed",
        );
        note_log(
            &stats,
            RDKafkaLogLevel::Error,
            "FAIL",
            "ssl://h:9093/1: Connect to ipv4#127.0.0.1:9093 failed: Connection refused",
        );
        assert_eq!(
            stats.broker_state.load(),
            BrokerState::Unknown,
            "neither is a refusal"
        );
    }

    #[test]
    fn a_value_librdkafka_refuses_is_named_with_its_key() {
        let k = kafka(&[("security.protocol", "tls")]);
        let e = check_settings(&k).expect_err("no such protocol");
        assert_eq!(e.property(), Some("security.protocol"));
        let k = kafka(&[("no.such.setting", "1")]);
        assert_eq!(
            check_settings(&k).expect_err("unknown").property(),
            Some("no.such.setting")
        );
    }
}
