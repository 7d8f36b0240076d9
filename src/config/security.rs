//! security: the `kafka.tls` and `kafka.sasl` sections, typed keys that
//! both Kafka clients take (the native one through rustls and its own SASL
//! exchange, librdkafka through the `ssl.*` and `sasl.*` properties they
//! map to in [`crate::kafka::librdkafka`]).
//!
//! Invariants:
//! - A secret (a SASL password) is read once, at load, from the file or
//!   environment variable the config names, and lives only in a
//!   [`Secret`], whose `Debug` and `Display` print `<redacted>`: it is
//!   never logged, and never shown by `logcatch-ctl status`.
//! - Every file named here is checked at load (readable; a certificate or
//!   key file holds PEM of the right kind), so a typo is refused with the
//!   config line, and a hot reload that names a bad file is refused while
//!   the daemon keeps running on the last good config. The certificate
//!   files are read again at each Kafka session, so a renewed certificate
//!   is taken without a restart.
//! - A mechanism a client cannot serve is refused at load (see
//!   [`super::validate`]'s client choice), never looped on at run time.
//!
//! Must never: log or serialize a secret's text.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret's text (a SASL password). Compared by value (a changed
/// password makes a new config, hence a new Kafka session), printed as
/// `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `kafka.tls`: TLS to every broker. Present (even empty, `tls: {}`), it
/// turns TLS on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificates of the CAs to trust; `None`: the system's roots
    /// (`/etc/ssl/certs`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate for mutual TLS.
    pub client: Option<ClientCertificate>,
    /// Whether the broker's certificate must name the host it was reached
    /// at (default true; librdkafka's
    /// `ssl.endpoint.identification.algorithm=https`).
    pub verify_hostname: bool,
}

/// A client certificate chain and its private key, both PEM files. The
/// key is unencrypted (PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `kafka.sasl`: how the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    /// The user name and password (PLAIN, SCRAM); `None` for OAUTHBEARER,
    /// whose token settings are librdkafka's `sasl.oauthbearer.*`
    /// properties.
    pub credentials: Option<SaslCredentials>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    pub username: String,
    pub password: Secret,
}

/// A SASL mechanism, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// librdkafka only (its OIDC or unsecured-JWT token settings).
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
    /// Kerberos: not built into logcatch; refused at load.
    #[serde(rename = "GSSAPI")]
    Gssapi,
}

impl SaslMechanism {
    /// Kafka's name for it (SaslHandshake, librdkafka's `sasl.mechanism`).
    pub fn kafka_name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
            SaslMechanism::Gssapi => "GSSAPI",
        }
    }

    /// Whether the native client speaks it.
    pub fn native_supports(self) -> bool {
        matches!(
            self,
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512
        )
    }
}

impl std::fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kafka_name())
    }
}

/// Kafka's `security.protocol` for a TLS and SASL choice.
pub fn security_protocol(tls: Option<&TlsConfig>, sasl: Option<&SaslConfig>) -> &'static str {
    match (tls.is_some(), sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    }
}

// ---------------------------------------------------------------------------
// As written.
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) ca_file: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) verify_hostname: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSasl {
    pub(super) mechanism: SaslMechanism,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) password_env: Option<String>,
}

/// What is wrong with a `kafka.tls` / `kafka.sasl` key: its dotted name
/// and the message, for [`super::validate`] to give the config line.
pub(super) struct KeyProblem {
    pub(super) key: &'static str,
    pub(super) message: String,
}

fn problem(key: &'static str, message: impl Into<String>) -> KeyProblem {
    KeyProblem {
        key,
        message: message.into(),
    }
}

/// `kafka.tls` typed; `resolve` makes a written path absolute.
pub(super) fn tls(raw: RawTls, resolve: impl Fn(&str) -> PathBuf) -> Result<TlsConfig, KeyProblem> {
    let ca_file = raw.ca_file.as_deref().map(&resolve);
    if let Some(ca) = &ca_file {
        check_pem(ca, PemKind::Certificate).map_err(|m| problem("kafka.tls.ca_file", m))?;
    }
    let client = match (raw.cert_file.as_deref(), raw.key_file.as_deref()) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(problem(
                "kafka.tls.cert_file",
                "a client certificate needs its key: set kafka.tls.key_file too",
            ))
        }
        (None, Some(_)) => {
            return Err(problem(
                "kafka.tls.key_file",
                "a client key needs its certificate: set kafka.tls.cert_file too",
            ))
        }
        (Some(c), Some(k)) => {
            let cert_file = resolve(c);
            let key_file = resolve(k);
            check_pem(&cert_file, PemKind::Certificate)
                .map_err(|m| problem("kafka.tls.cert_file", m))?;
            check_pem(&key_file, PemKind::PrivateKey)
                .map_err(|m| problem("kafka.tls.key_file", m))?;
            Some(ClientCertificate {
                cert_file,
                key_file,
            })
        }
    };
    Ok(TlsConfig {
        ca_file,
        client,
        verify_hostname: raw.verify_hostname.unwrap_or(true),
    })
}

/// `kafka.sasl` typed, its password read from its file or variable.
pub(super) fn sasl(
    raw: RawSasl,
    resolve: impl Fn(&str) -> PathBuf,
) -> Result<SaslConfig, KeyProblem> {
    if raw.mechanism == SaslMechanism::Gssapi {
        return Err(problem(
            "kafka.sasl.mechanism",
            "GSSAPI (Kerberos) is not built into logcatch; use PLAIN, SCRAM-SHA-256, \
             SCRAM-SHA-512 or OAUTHBEARER",
        ));
    }
    if raw.mechanism == SaslMechanism::OAuthBearer {
        if raw.username.is_some() || raw.password_file.is_some() || raw.password_env.is_some() {
            return Err(problem(
                "kafka.sasl.mechanism",
                "OAUTHBEARER takes no username or password: its token settings are \
                 librdkafka's sasl.oauthbearer.* keys under kafka.properties",
            ));
        }
        return Ok(SaslConfig {
            mechanism: raw.mechanism,
            credentials: None,
        });
    }
    let username = match raw.username {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(problem(
                "kafka.sasl.username",
                format!("{} needs a username", raw.mechanism),
            ))
        }
    };
    let password = password(raw.password_file, raw.password_env, raw.mechanism, resolve)?;
    if password.is_empty() {
        return Err(problem("kafka.sasl.password_file", "the password is empty"));
    }
    Ok(SaslConfig {
        mechanism: raw.mechanism,
        credentials: Some(SaslCredentials {
            username,
            password: Secret(password),
        }),
    })
}

/// The password, from the file or the environment variable named.
fn password(
    file: Option<String>,
    env: Option<String>,
    mechanism: SaslMechanism,
    resolve: impl Fn(&str) -> PathBuf,
) -> Result<String, KeyProblem> {
    Ok(match (file, env) {
        (Some(_), Some(_)) => {
            return Err(problem(
                "kafka.sasl.password_env",
                "set one of password_file and password_env, not both",
            ))
        }
        (None, None) => {
            return Err(problem(
                "kafka.sasl.password_file",
                format!(
                    "{} needs a password: set password_file (a file holding it) or \
                     password_env (an environment variable holding it)",
                    mechanism
                ),
            ))
        }
        (Some(file), None) => {
            let path = resolve(&file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                problem(
                    "kafka.sasl.password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            // A trailing newline is the editor's, not the password's.
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string()
        }
        (None, Some(var)) => std::env::var(&var).map_err(|_| {
            problem(
                "kafka.sasl.password_env",
                format!("environment variable `{var}` is not set (or not UTF-8)"),
            )
        })?,
    })
}

#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    PrivateKey,
}

/// Whether `path` is a readable PEM file with at least one block of `kind`.
fn check_pem(path: &Path, kind: PemKind) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    let ok = match kind {
        PemKind::Certificate => text.contains("-----BEGIN CERTIFICATE-----"),
        PemKind::PrivateKey => {
            if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                return Err(format!(
                    "{} holds an encrypted private key; logcatch takes an unencrypted one \
                     (PKCS#8, PKCS#1 or SEC1 PEM), readable only by its user",
                    path.display()
                ));
            }
            ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]
                .iter()
                .any(|k| text.contains(&format!("-----BEGIN {k}-----")))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} holds no PEM {}",
            path.display(),
            match kind {
                PemKind::Certificate => "certificate (-----BEGIN CERTIFICATE-----)",
                PemKind::PrivateKey => "private key (-----BEGIN PRIVATE KEY-----)",
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError, KafkaClient};

    /// `text` as a config file in `dir`, parsed.
    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse(&dir.join("logcatch.yaml"), text)
    }

    /// A folder with a password file and PEM-shaped certificate files.
    fn files() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(d.path().join("ca.pem"), cert).unwrap();
        std::fs::write(d.path().join("client.pem"), cert).unwrap();
        std::fs::write(
            d.path().join("client.key"),
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(d.path().join("password"), "s3cret\n").unwrap();
        d
    }

    #[test]
    fn tls_and_scram_keys_load_for_the_native_client() {
        let d = files();
        let c = parse_in(
            d.path(),
            "kafka:\n  tls:\n    ca_file: ca.pem\n    cert_file: client.pem\n    key_file: client.key\n  sasl:\n    mechanism: SCRAM-SHA-512\n    username: alice\n    password_file: password\n",
        )
        .expect("valid");
        assert_eq!(
            c.kafka.client,
            KafkaClient::Native,
            "native serves TLS and SCRAM"
        );
        let tls = c.kafka.tls.as_ref().expect("tls");
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(d.path().join("ca.pem").as_path())
        );
        assert!(tls.verify_hostname, "on by default");
        let sasl = c.kafka.sasl.as_ref().expect("sasl");
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        let cred = sasl.credentials.as_ref().expect("credentials");
        assert_eq!(
            (cred.username.as_str(), cred.password.expose()),
            ("alice", "s3cret")
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the password never prints"
        );
    }

    #[test]
    fn a_password_comes_from_an_environment_variable() {
        let d = files();
        std::env::set_var("LOGCATCH_TEST_SASL_PASSWORD", "from-env");
        let c = parse_in(
            d.path(),
            "kafka:\n  sasl:\n    mechanism: PLAIN\n    username: bob\n    password_env: LOGCATCH_TEST_SASL_PASSWORD\n",
        )
        .expect("valid");
        let cred = c
            .kafka
            .sasl
            .and_then(|s| s.credentials)
            .expect("credentials");
        assert_eq!(cred.password.expose(), "from-env");
        let e = parse_in(
            d.path(),
            "kafka:\n  sasl:\n    mechanism: PLAIN\n    username: bob\n    password_env: LOGCATCH_TEST_NO_SUCH_VARIABLE\n",
        )
        .expect_err("unset variable");
        assert!(
            e.to_string().contains(":5: key `kafka.sasl.password_env`"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_security_key_is_refused_with_its_line() {
        let d = files();
        let cases = [
            (
                "kafka:\n  tls:\n    ca_file: missing.pem\n",
                ":3: key `kafka.tls.ca_file`",
                "cannot read",
            ),
            (
                "kafka:\n  tls:\n    ca_file: password\n",
                ":3: key `kafka.tls.ca_file`",
                "no PEM certificate",
            ),
            (
                "kafka:\n  tls:\n    cert_file: client.pem\n",
                ":3: key `kafka.tls.cert_file`",
                "key_file",
            ),
            (
                "kafka:\n  tls:\n    cert_file: client.pem\n    key_file: ca.pem\n",
                ":4: key `kafka.tls.key_file`",
                "no PEM private key",
            ),
            (
                "kafka:\n  sasl:\n    mechanism: SCRAM-SHA-256\n    password_file: password\n",
                ":2: key `kafka.sasl.username`",
                "needs a username",
            ),
            (
                "kafka:\n  sasl:\n    mechanism: PLAIN\n    username: a\n",
                ":2: key `kafka.sasl.password_file`",
                "needs a password",
            ),
            (
                "kafka:\n  sasl:\n    mechanism: GSSAPI\n",
                ":3: key `kafka.sasl.mechanism`",
                "not built",
            ),
            (
                "kafka:\n  sasl:\n    mechanism: KERBEROS\n",
                ":3:",
                "unknown variant",
            ),
            (
                "kafka:\n  tls: {}\n  properties:\n    ssl.ca.location: /x\n",
                ":4: key `kafka.properties.ssl.ca.location`",
                "set it there",
            ),
            (
                "kafka:\n  client: native\n  sasl:\n    mechanism: OAUTHBEARER\n",
                ":2: key `kafka.client`",
                "OAUTHBEARER needs librdkafka",
            ),
        ];
        for (text, at, says) in cases {
            let e = parse_in(d.path(), text).expect_err(text);
            let e = e.to_string();
            assert!(e.contains(at) && e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn oauthbearer_chooses_librdkafka_and_a_protocol_it_lacks_is_refused() {
        let d = files();
        let c = parse_in(d.path(), "kafka:\n  sasl:\n    mechanism: OAUTHBEARER\n").expect("valid");
        assert_eq!(c.kafka.client, KafkaClient::Librdkafka);
        let e = parse_in(
            d.path(),
            "kafka:\n  properties:\n    security.protocol: sasl_plaintext\n    sasl.mechanism: GSSAPI\n",
        )
        .expect_err("no GSSAPI in this librdkafka");
        assert!(
            e.to_string()
                .contains(":4: key `kafka.properties.sasl.mechanism`"),
            "{e}"
        );
    }

    #[test]
    fn a_secret_never_prints_its_text() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        let c = SaslCredentials {
            username: "alice".into(),
            password: s,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_security_protocol_follows_tls_and_sasl() {
        let tls = TlsConfig {
            ca_file: None,
            client: None,
            verify_hostname: true,
        };
        let sasl = SaslConfig {
            mechanism: SaslMechanism::Plain,
            credentials: None,
        };
        assert_eq!(security_protocol(None, None), "plaintext");
        assert_eq!(security_protocol(Some(&tls), None), "ssl");
        assert_eq!(security_protocol(None, Some(&sasl)), "sasl_plaintext");
        assert_eq!(security_protocol(Some(&tls), Some(&sasl)), "sasl_ssl");
    }
}
