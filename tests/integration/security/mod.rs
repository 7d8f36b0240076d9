//! Secured Kafka: logcatch through each kind of listener of one Apache
//! Kafka broker ([`SecureBroker`]: TLS, mutual TLS, SASL_PLAINTEXT with
//! SCRAM and PLAIN, SASL_SSL), with both clients, and what an operator sees
//! when the credentials or the CA are wrong.
//!
//! - [`listeners`]: each listener delivers the exactly-once scenario
//!   (lines appended, `kill -9` mid-stream, a restart, more lines; every
//!   line once, read back over the broker's plaintext listener).
//! - [`refusals`]: a wrong password and an untrusted CA show as broker
//!   state `auth_failed` with the cause in `last_kafka_error` and the
//!   `logcatch_kafka_auth_failed` gauge at 1, deliver nothing and drop
//!   nothing; once the config is fixed (SIGHUP, or an edit picked up by the
//!   watcher) every line arrives exactly once. A reload asking for what no
//!   client here serves (GSSAPI) is refused, and delivery goes on.

use std::path::{Path, PathBuf};

use crate::common::secure::SecureBroker;
use crate::common::*;

mod listeners;
mod reauth;
mod refusals;

/// How a daemon connects: which listener, with which typed keys.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    /// TLS, server authentication only.
    Tls,
    /// TLS with a client certificate.
    MutualTls,
    /// SASL_PLAINTEXT with this mechanism.
    Sasl(&'static str),
    /// SASL_SSL with this mechanism.
    SaslTls(&'static str),
}

impl Access {
    /// The listener's address on `b`.
    pub fn addr(self, b: &SecureBroker) -> String {
        match self {
            Access::Tls => b.tls_addr(),
            Access::MutualTls => b.mtls_addr(),
            Access::Sasl(_) => b.sasl_addr(),
            Access::SaslTls(_) => b.sasl_ssl_addr(),
        }
    }

    /// A short name, for topics and logs.
    pub fn name(self) -> String {
        match self {
            Access::Tls => "tls".into(),
            Access::MutualTls => "mtls".into(),
            Access::Sasl(m) => format!("sasl-{}", m.to_ascii_lowercase()),
            Access::SaslTls(m) => format!("sasl-ssl-{}", m.to_ascii_lowercase()),
        }
    }
}

/// A test's folder for its daemons, removed on drop.
pub fn secure_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("logcatch-secure-")
        .tempdir()
        .expect("tempdir")
}

/// One daemon's files: its folder, its topic, the log file it tails as
/// source `app`, and its password file.
pub struct SecureCase {
    pub dir: PathBuf,
    pub topic: String,
    pub log: PathBuf,
    pub password: PathBuf,
}

impl SecureCase {
    /// Folder `root/name` (made), with `password` in its password file.
    pub fn new(root: &Path, name: &str, topic: String, password: &str) -> SecureCase {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        SecureCase {
            log: dir.join("app.log"),
            password: password_file(&dir, password),
            topic,
            dir,
        }
    }

    /// The config of `client` reaching `b` through `access`, trusting the
    /// CA `ca_file` (the broker's own unless a test wants another).
    pub fn config(
        &self,
        b: &SecureBroker,
        client: &str,
        access: Access,
        ca_file: &Path,
    ) -> ConfigBuilder {
        secured_config(
            b,
            &self.dir,
            &self.topic,
            client,
            access,
            ca_file,
            &self.password,
        )
        .source("app", &self.log)
    }
}

/// A config for `client` reaching `b` through `access`, with the password
/// in `password_file` and the CA `ca_file`.
fn secured_config(
    b: &SecureBroker,
    dir: &Path,
    topic: &str,
    client: &str,
    access: Access,
    ca_file: &Path,
    password_file: &Path,
) -> ConfigBuilder {
    let pki = b.pki();
    let mut cfg =
        ConfigBuilder::new(dir.join("data"), &access.addr(b), topic).kafka("client", client);
    let tls = |client_cert: bool| {
        let mut t = format!("{{ca_file: {}", yaml_path(ca_file));
        if client_cert {
            t += &format!(
                ", cert_file: {}, key_file: {}",
                yaml_path(&pki.client_cert),
                yaml_path(&pki.client_key)
            );
        }
        t + "}"
    };
    let sasl = |mechanism: &str| {
        if mechanism == "OAUTHBEARER" {
            // librdkafka's unsecured JWT, which the broker's listener takes.
            return "{mechanism: OAUTHBEARER}".to_string();
        }
        format!(
            "{{mechanism: {mechanism}, username: {}, password_file: {}}}",
            b.user(),
            yaml_path(password_file)
        )
    };
    if matches!(
        access,
        Access::Sasl("OAUTHBEARER") | Access::SaslTls("OAUTHBEARER")
    ) {
        cfg = cfg.kafka(
            "properties",
            &format!(
                "{{enable.sasl.oauthbearer.unsecure.jwt: true, sasl.oauthbearer.config: \"principal={}\"}}",
                b.user()
            ),
        );
    }
    match access {
        Access::Tls => cfg = cfg.kafka("tls", &tls(false)),
        Access::MutualTls => cfg = cfg.kafka("tls", &tls(true)),
        Access::Sasl(m) => cfg = cfg.kafka("sasl", &sasl(m)),
        Access::SaslTls(m) => cfg = cfg.kafka("tls", &tls(false)).kafka("sasl", &sasl(m)),
    }
    cfg
}

/// A path as a double-quoted YAML string.
fn yaml_path(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// Writes `password` to `dir/password` and returns its path.
pub fn password_file(dir: &Path, password: &str) -> PathBuf {
    let p = dir.join("password");
    std::fs::write(&p, format!("{password}\n")).expect("write password file");
    p
}
