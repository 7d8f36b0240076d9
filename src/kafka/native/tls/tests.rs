//! The TLS halves against an in-process rustls server with rcgen
//! certificates: data both ways at once, a multi-MB write, names checked
//! (or let off), client certificates.

use std::net::TcpListener;
use std::thread::JoinHandle;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::*;
use crate::config::ClientCertificate;

/// A CA, and certificates it signed for a broker and a client, as PEM
/// files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    broker: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

impl Pki {
    /// A broker certificate naming `broker_names`.
    fn new(broker_names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca");
        let names: Vec<String> = broker_names.iter().map(|s| s.to_string()).collect();
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("broker cert");
        let broker = (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        );
        let client_key = KeyPair::generate().expect("key");
        let client = CertificateParams::new(vec!["logcatch".to_string()])
            .expect("params")
            .signed_by(&client_key, &ca)
            .expect("client cert");
        std::fs::write(dir.path().join("client.pem"), client.pem()).expect("write");
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).expect("write");
        Pki { dir, ca, broker }
    }

    fn config(&self, verify_hostname: bool, with_client_cert: bool) -> TlsConfig {
        TlsConfig {
            ca_file: Some(self.dir.path().join("ca.pem")),
            client: with_client_cert.then(|| ClientCertificate {
                cert_file: self.dir.path().join("client.pem"),
                key_file: self.dir.path().join("client.key"),
            }),
            verify_hostname,
        }
    }

    /// A one-connection server: it sends `send` bytes, then reads as many
    /// bytes as it is sent until the end, and returns them.
    fn serve(&self, send: Vec<u8>, want_client_cert: bool) -> (u16, JoinHandle<Vec<u8>>) {
        let config = self.server_config(want_client_cert);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let h = std::thread::spawn(move || {
            let (sock, _) = listener.accept().expect("accept");
            let conn = ServerConnection::new(Arc::new(config)).expect("server conn");
            let mut s = StreamOwned::new(conn, sock);
            let mut got = Vec::new();
            if s.write_all(&send).and_then(|()| s.flush()).is_err() {
                return got;
            }
            let _ = s.read_to_end(&mut got);
            got
        });
        (port, h)
    }

    /// A one-connection server that completes the handshake, then writes
    /// the records of `plaintext` followed by `raw` bytes in one socket
    /// write, and waits for the client to close.
    fn serve_then_raw(&self, plaintext: &'static [u8], raw: &'static [u8]) -> u16 {
        let config = self.server_config(false);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().expect("accept");
            let mut conn = ServerConnection::new(Arc::new(config)).expect("server conn");
            while conn.is_handshaking() {
                if conn.complete_io(&mut sock).is_err() {
                    return;
                }
            }
            let mut out = Vec::new();
            conn.writer().write_all(plaintext).expect("plaintext");
            while conn.wants_write() {
                conn.write_tls(&mut out).expect("records");
            }
            out.extend_from_slice(raw);
            if sock.write_all(&out).is_ok() {
                let _ = sock.read_to_end(&mut Vec::new());
            }
        });
        port
    }

    fn server_config(&self, want_client_cert: bool) -> ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if want_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.der().clone()).expect("root");
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(v)
        } else {
            builder.with_no_client_auth()
        };
        builder
            .with_single_cert(vec![self.broker.0.clone()], self.broker.1.clone_key())
            .expect("server config")
    }
}

/// Connects to 127.0.0.1:`port` as `addr` says (the name checked) and
/// runs the handshake.
fn connect(config: &TlsConfig, addr: &str, port: u16) -> io::Result<(TcpStream, ClientConnection)> {
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    let cc = client_config(config).expect("client config");
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = handshake(&cc, server_name(addr).expect("name"), &mut sock, deadline)?;
    sock.set_read_timeout(None)?;
    Ok((sock, conn))
}

/// Reads the server's "hello" through the halves of an established
/// connection, then closes it and waits for the server.
fn read_hello_then_close(sock: TcpStream, conn: ClientConnection, server: JoinHandle<Vec<u8>>) {
    let (mut reader, writer) = split(conn, sock).expect("split");
    let mut got = [0u8; 5];
    reader.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"hello");
    writer
        .socket()
        .shutdown(std::net::Shutdown::Both)
        .expect("shutdown");
    let _ = server.join();
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
}

#[test]
fn server_names_come_from_the_host_part_of_the_address() {
    let dns = server_name("broker-1.example:9093").expect("dns");
    assert_eq!(dns, ServerName::try_from("broker-1.example").expect("dns"));
    let v4 = server_name("10.0.0.7:9093").expect("v4");
    assert!(matches!(v4, ServerName::IpAddress(_)), "{v4:?}");
    let v6 = server_name("[::1]:9093").expect("v6");
    assert_eq!(v6, ServerName::try_from("::1").expect("v6"));
    assert!(matches!(v6, ServerName::IpAddress(_)));
    assert!(server_name("bad name!:9093").is_err());
}

/// 6 MB each way at once, from two threads: the writer blocks on a full
/// window while the server sends, and the reader must still get its data
/// (neither half holds the TLS state while on the socket).
#[test]
fn halves_carry_megabytes_both_ways_at_once() {
    let pki = Pki::new(&["localhost"]);
    let down = pattern(6 << 20, 0x5a);
    let up = pattern(6 << 20, 0x33);
    let (port, server) = pki.serve(down.clone(), false);
    let (sock, conn) = connect(&pki.config(true, false), "localhost:9093", port).expect("tls");
    let (mut reader, mut writer) = split(conn, sock).expect("split");
    let read = std::thread::spawn(move || {
        let mut got = vec![0u8; 6 << 20];
        reader.read_exact(&mut got).map(|()| got)
    });
    writer.write_all(&up).expect("write 6 MB");
    let got = read.join().expect("reader").expect("read 6 MB");
    assert!(got == down, "what the server sent arrives intact");
    writer
        .socket()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let received = server.join().expect("server");
    assert_eq!(received.len(), up.len());
    assert!(received == up, "what the client sent arrives intact");
}

#[test]
fn a_certificate_for_another_name_is_refused_unless_names_are_not_verified() {
    let pki = Pki::new(&["broker.example"]);
    let (port, _server) = pki.serve(b"hello".to_vec(), false);
    let e = connect(&pki.config(true, false), "127.0.0.1:9093", port)
        .expect_err("a name mismatch is refused");
    assert!(
        matches!(
            rustls_error(&e),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{e}"
    );
    let (port, server) = pki.serve(b"hello".to_vec(), false);
    let (sock, conn) =
        connect(&pki.config(false, false), "127.0.0.1:9093", port).expect("name let off");
    read_hello_then_close(sock, conn, server);
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_refused_even_without_name_checks() {
    let pki = Pki::new(&["localhost"]);
    let other = Pki::new(&["localhost"]);
    let (port, _server) = pki.serve(b"hello".to_vec(), false);
    let e = connect(&other.config(false, false), "localhost:9093", port)
        .expect_err("an unknown issuer is refused");
    assert!(
        matches!(
            rustls_error(&e),
            // The same empty subject as our CA: its signature is tried.
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            ))
        ),
        "{e}"
    );
}

/// mTLS: with the client certificate the server sends its data; without
/// it, the refusal arrives as a rustls error on the first read (TLS 1.3
/// refuses after the client's handshake is over).
#[test]
fn a_server_that_wants_a_client_certificate_takes_ours_and_refuses_none() {
    let pki = Pki::new(&["localhost"]);
    let (port, server) = pki.serve(b"hello".to_vec(), true);
    let (sock, conn) = connect(&pki.config(true, true), "localhost:9093", port).expect("mtls");
    read_hello_then_close(sock, conn, server);

    let (port, _server) = pki.serve(b"hello".to_vec(), true);
    let mut got = [0u8; 5];
    let refused =
        connect(&pki.config(true, false), "localhost:9093", port).and_then(|(sock, conn)| {
            let (mut reader, _writer) = split(conn, sock)?;
            reader.read_exact(&mut got)
        });
    let e = refused.expect_err("no client certificate is refused");
    assert!(
        rustls_error(&e).is_some(),
        "a TLS alert, not a bare I/O error: {e}"
    );
}

/// Good records and a corrupt one in the same socket read: what the good
/// ones carried is read first, then the error (and again after).
#[test]
fn data_before_a_corrupt_record_is_read_before_the_error() {
    let pki = Pki::new(&["localhost"]);
    // An application-data record whose 32 bytes cannot authenticate.
    const CORRUPT: &[u8] = &[
        0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
        18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
    ];
    let port = pki.serve_then_raw(b"hello", CORRUPT);
    let (sock, conn) = connect(&pki.config(true, false), "localhost:9093", port).expect("tls");
    let (mut reader, writer) = split(conn, sock).expect("split");
    let mut got = [0u8; 5];
    reader
        .read_exact(&mut got)
        .expect("what came before the corrupt record");
    assert_eq!(&got, b"hello");
    let e = reader.read(&mut got).expect_err("then the corrupt record");
    assert!(rustls_error(&e).is_some(), "a TLS error: {e}");
    let again = reader.read(&mut got).expect_err("the error stays");
    assert!(rustls_error(&again).is_some(), "a TLS error: {again}");
    let _ = writer.socket().shutdown(std::net::Shutdown::Both);
}

#[test]
fn unreadable_tls_files_are_named_in_the_error() {
    let pki = Pki::new(&["localhost"]);
    let mut c = pki.config(true, true);
    c.ca_file = Some(pki.dir.path().join("missing.pem"));
    let e = client_config(&c).expect_err("missing CA file");
    assert!(e.contains("missing.pem"), "{e}");
    let mut c = pki.config(true, true);
    if let Some(cc) = &mut c.client {
        cc.key_file = pki.dir.path().join("ca.pem");
    }
    let e = client_config(&c).expect_err("a certificate is no key");
    assert!(e.contains("ca.pem") && e.contains("key_file"), "{e}");
}
