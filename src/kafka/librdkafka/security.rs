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

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::config::{security_protocol, KafkaConfig};

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
