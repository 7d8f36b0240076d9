//! A secured one-node Apache Kafka for the TLS and SASL tests: a test PKI
//! ([`TestPki`], made with `rcgen`, written as PEM files) and a
//! [`SecureBroker`] with one broker listener per kind of security, each
//! advertising itself (a client on a listener gets metadata that points
//! back at that listener):
//!
//! | listener   | protocol         | what a client needs                       |
//! |------------|------------------|-------------------------------------------|
//! | `PLAINTEXT`| PLAINTEXT        | nothing: the harness's own admin/consume  |
//! | `TLS`      | SSL              | trust in [`TestPki::ca`]                  |
//! | `MTLS`     | SSL, client auth | that, and [`TestPki::client_cert`]/key    |
//! | `SASL`     | SASL_PLAINTEXT   | SCRAM-SHA-256/512, PLAIN or OAUTHBEARER   |
//! | `SASL_SSL` | SASL_SSL         | trust in the CA; SCRAM-SHA-512 or PLAIN   |
//!
//! Every listener binds and advertises `127.0.0.1`; the broker certificate
//! names both `IP:127.0.0.1` and `DNS:localhost`, so hostname verification
//! passes whether a client bootstraps by IP or by `localhost` (the
//! metadata it then follows names `127.0.0.1`). The one user is
//! [`SASL_USER`] with [`SASL_PASSWORD`]: SCRAM credentials made when the
//! storage is formatted (`kafka.sh --add-scram`), PLAIN in the listener's
//! JAAS settings; OAUTHBEARER takes Kafka's unsecured JWTs (librdkafka's
//! `enable.sasl.oauthbearer.unsecure.jwt`). The controller and
//! inter-broker listeners stay PLAINTEXT, and there is no authorizer.
//!
//! Kafka reads the PEM files itself (`ssl.keystore.type=PEM`, one file
//! with the unencrypted PKCS#8 key and the certificate: Kafka 4.x needs no
//! key password). Never used for anything but loopback tests: the keys are
//! throwaway and lie unencrypted in a temp dir.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use super::{free_port, Broker};

/// The SASL user of a [`SecureBroker`] (every mechanism).
pub const SASL_USER: &str = "alice";
/// [`SASL_USER`]'s password.
pub const SASL_PASSWORD: &str = "alice-secret";

/// The test PKI's PEM files, in a temp dir removed on drop. Keys are
/// EC P-256, unencrypted PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
pub struct TestPki {
    /// `ca.pem`: the CA that signs the broker and client certificates.
    pub ca: PathBuf,
    /// `untrusted-ca.pem`: a second CA, which signs nothing here (a client
    /// trusting only it refuses the broker).
    pub untrusted_ca: PathBuf,
    /// `broker-keystore.pem`: the broker's key then its certificate chain
    /// (Kafka's `ssl.keystore.location` with `ssl.keystore.type=PEM`);
    /// the same key and chain are also in `broker.key` and `broker.pem`.
    pub broker_keystore: PathBuf,
    /// `client.pem`: a client certificate (CN `logcatch-client`, EKU
    /// clientAuth) signed by [`TestPki::ca`], for mTLS.
    pub client_cert: PathBuf,
    /// `client.key`: [`TestPki::client_cert`]'s key.
    pub client_key: PathBuf,
    /// `expired-client.pem`: like [`TestPki::client_cert`], but valid only
    /// in 2020.
    pub expired_client_cert: PathBuf,
    /// `expired-client.key`: [`TestPki::expired_client_cert`]'s key.
    pub expired_client_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes the CAs, keys and certificates and writes them in a new temp
    /// dir (see the fields for the file names).
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let ca = new_ca("logcatch test CA");
        let untrusted = new_ca("logcatch untrusted CA");
        write(d, "ca.pem", &ca.pem());
        write(d, "untrusted-ca.pem", &untrusted.pem());

        let (broker_cert, broker_key) = leaf(
            &ca,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        );
        let chain = format!("{broker_cert}{}", ca.pem());
        write(d, "broker.pem", &chain);
        write(d, "broker.key", &broker_key);
        write(d, "broker-keystore.pem", &format!("{broker_key}{chain}"));

        let (client_cert, client_key) = leaf(
            &ca,
            "logcatch-client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
        );
        write(d, "client.pem", &client_cert);
        write(d, "client.key", &client_key);
        let (expired_cert, expired_key) = leaf(
            &ca,
            "logcatch-client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            true,
        );
        write(d, "expired-client.pem", &expired_cert);
        write(d, "expired-client.key", &expired_key);

        TestPki {
            ca: d.join("ca.pem"),
            untrusted_ca: d.join("untrusted-ca.pem"),
            broker_keystore: d.join("broker-keystore.pem"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            expired_client_cert: d.join("expired-client.pem"),
            expired_client_key: d.join("expired-client.key"),
            _dir: dir,
        }
    }
}

/// A self-signed CA named `cn`.
fn new_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2100, 1, 1);
    let key = KeyPair::generate().expect("CA key");
    CertifiedIssuer::self_signed(params, key).expect("CA certificate")
}

/// A certificate signed by `ca` for `cn` with subject alternative names
/// `sans` (DNS names or IP addresses) and extended key usage `eku`, valid
/// 2020..2100 or, when `expired`, in 2020 only; returns its PEM and its
/// key's (PKCS#8).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
    expired: bool,
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("subject alternative names");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = if expired {
        date_time_ymd(2021, 1, 1)
    } else {
        date_time_ymd(2100, 1, 1)
    };
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The ports of a [`SecureBroker`]'s secured listeners.
#[derive(Clone, Copy, Default)]
struct SecurePorts {
    tls: u16,
    mtls: u16,
    sasl: u16,
    sasl_ssl: u16,
}

/// A one-node Apache Kafka with a PLAINTEXT, a TLS, an mTLS, a
/// SASL_PLAINTEXT and a SASL_SSL listener (see the module doc), killed on
/// drop.
pub struct SecureBroker {
    // Declared before `pki`: the broker dies before its key files go.
    broker: Broker,
    ports: SecurePorts,
    pki: TestPki,
}

impl SecureBroker {
    /// Makes a [`TestPki`] and starts the broker: one format JVM (for the
    /// SCRAM users) and the node's.
    pub fn start() -> SecureBroker {
        SecureBroker::start_with_props(&[])
    }

    /// [`SecureBroker::start`] with extra broker settings (`KEY=VALUE`,
    /// after the harness's own), e.g. `connections.max.reauth.ms`.
    pub fn start_with_props(extra: &[&str]) -> SecureBroker {
        let pki = TestPki::generate();
        let mut ports = SecurePorts::default();
        let broker = Broker::start_with_args(|port, ctrl_port| {
            let mut taken = vec![port, ctrl_port];
            for _ in 0..4 {
                taken.push(free_port_but(&taken));
            }
            ports = SecurePorts {
                tls: taken[2],
                mtls: taken[3],
                sasl: taken[4],
                sasl_ssl: taken[5],
            };
            let mut args = secure_args(&pki, port, ctrl_port, ports);
            for prop in extra {
                args.extend(["--prop".to_string(), prop.to_string()]);
            }
            args
        });
        SecureBroker { broker, ports, pki }
    }

    /// The PLAINTEXT listener (for admin work and reading topics back).
    pub fn addr(&self) -> String {
        self.broker.addr()
    }

    /// The TLS listener (SSL, no client certificate asked).
    pub fn tls_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.tls)
    }

    /// The mTLS listener (SSL, a client certificate signed by
    /// [`TestPki::ca`] required).
    pub fn mtls_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.mtls)
    }

    /// The SASL_PLAINTEXT listener: SCRAM-SHA-256, SCRAM-SHA-512, PLAIN and
    /// OAUTHBEARER (unsecured JWTs).
    pub fn sasl_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.sasl)
    }

    /// The SASL_SSL listener: SCRAM-SHA-512 and PLAIN, no client
    /// certificate asked.
    pub fn sasl_ssl_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.sasl_ssl)
    }

    /// The SASL user name ([`SASL_USER`]).
    pub fn user(&self) -> &'static str {
        SASL_USER
    }

    /// The SASL user's password ([`SASL_PASSWORD`]).
    pub fn password(&self) -> &'static str {
        SASL_PASSWORD
    }

    /// The certificates and keys (the CA the broker's certificate chains
    /// to, a client certificate, an untrusted CA, an expired client
    /// certificate).
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The broker itself (its log, topic creation over PLAINTEXT).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

/// A free loopback port that is none of `taken`.
fn free_port_but(taken: &[u16]) -> u16 {
    loop {
        let p = free_port();
        if !taken.contains(&p) {
            return p;
        }
    }
}

/// The `kafka.sh start` arguments of a secured node on broker port `port`
/// and controller port `ctrl`: the listeners (these `--prop` lines come
/// after kafka.sh's own `listeners`, `advertised.listeners` and
/// `listener.security.protocol.map`, and the last value of a key wins),
/// the PEM key and trust stores, the SASL settings and the SCRAM users.
fn secure_args(pki: &TestPki, port: u16, ctrl: u16, p: SecurePorts) -> Vec<String> {
    let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    let plain = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required \
         user_{SASL_USER}=\"{SASL_PASSWORD}\";"
    );
    let oauth = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule \
                 required unsecuredLoginStringClaim_sub=\"broker\";";
    let broker_listeners = format!(
        "PLAINTEXT://127.0.0.1:{port},TLS://127.0.0.1:{},MTLS://127.0.0.1:{},\
         SASL://127.0.0.1:{},SASL_SSL://127.0.0.1:{}",
        p.tls, p.mtls, p.sasl, p.sasl_ssl
    );
    let controller = format!("CONTROLLER://127.0.0.1:{ctrl}");
    let props = [
        format!("listeners={broker_listeners},{controller}"),
        format!("advertised.listeners={broker_listeners},{controller}"),
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,\
         TLS:SSL,MTLS:SSL,SASL:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
            .to_string(),
        "ssl.keystore.type=PEM".to_string(),
        format!("ssl.keystore.location={}", pki.broker_keystore.display()),
        "ssl.truststore.type=PEM".to_string(),
        format!("ssl.truststore.location={}", pki.ca.display()),
        "listener.name.mtls.ssl.client.auth=required".to_string(),
        "listener.name.sasl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN,OAUTHBEARER"
            .to_string(),
        format!("listener.name.sasl.scram-sha-256.sasl.jaas.config={scram}"),
        format!("listener.name.sasl.scram-sha-512.sasl.jaas.config={scram}"),
        format!("listener.name.sasl.plain.sasl.jaas.config={plain}"),
        format!("listener.name.sasl.oauthbearer.sasl.jaas.config={oauth}"),
        "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN".to_string(),
        format!("listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}"),
        format!("listener.name.sasl_ssl.plain.sasl.jaas.config={plain}"),
    ];
    let mut args = Vec::new();
    for prop in props {
        args.extend(["--prop".to_string(), prop]);
    }
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        args.extend([
            "--add-scram".to_string(),
            format!("{mechanism}=[name={SASL_USER},password={SASL_PASSWORD}]"),
        ]);
    }
    args
}
