//! Connection set-up against in-process fake brokers: what each way of
//! failing is reported as.

use std::net::TcpListener;
use std::thread::JoinHandle;

use rcgen::{CertificateParams, KeyPair};

use super::*;

/// A [`Security`] with TLS trusting a throwaway self-signed CA (no
/// handshake against these fakes gets as far as checking it); the
/// directory holds the CA file.
fn tls_security() -> (tempfile::TempDir, Security) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&KeyPair::generate().expect("key"))
        .expect("self-signed");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.pem()).expect("write ca");
    let tls = TlsConfig {
        ca_file: Some(ca),
        client: None,
        verify_hostname: true,
    };
    let security = Security::prepare(Some(&tls), None, "test").expect("prepare");
    (dir, security)
}

/// A one-connection fake broker running `serve` on what it accepts;
/// returns its address.
fn fake_broker(serve: impl FnOnce(TcpStream) + Send + 'static) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let (sock, _) = listener.accept().expect("accept");
        serve(sock);
    });
    (format!("localhost:{port}"), h)
}

fn establish_to(
    addr: &str,
    timeout: Duration,
    security: &Security,
) -> Result<(ReadHalf, WriteHalf), ProducerError> {
    let stream = TcpStream::connect(addr).expect("connect");
    establish(addr, stream, timeout, security)
}

/// A plaintext listener given to a TLS client reads the ClientHello and
/// closes: a lost connection (retried, `down`), with the hint, not a TLS
/// refusal (`auth_failed`).
#[test]
fn a_connection_closed_during_the_handshake_is_io_with_a_hint() {
    let (_dir, security) = tls_security();
    let (addr, server) = fake_broker(|mut sock| {
        let mut hello = [0u8; 4096];
        let _ = sock.read(&mut hello);
    });
    let e = establish_to(&addr, Duration::from_secs(5), &security)
        .err()
        .expect("no TLS from a plaintext listener");
    assert!(matches!(e, ProducerError::Io { .. }), "{e:?}");
    assert!(
        e.to_string().contains("is the broker's listener TLS?"),
        "{e}"
    );
    server.join().expect("server");
}

/// A broker trickling a byte at a time, each well within the read
/// timeout, cannot stretch the handshake past the request timeout.
#[test]
fn a_trickling_handshake_times_out_at_the_deadline() {
    let (_dir, security) = tls_security();
    let (addr, server) = fake_broker(|mut sock| {
        // A handshake record of 16 KiB, sent a byte per 50 ms (for 3 s
        // at most).
        if sock.write_all(&[0x16, 0x03, 0x03, 0x40, 0x00]).is_err() {
            return;
        }
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(50));
            if sock.write_all(&[0]).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let e = establish_to(&addr, Duration::from_millis(500), &security)
        .err()
        .expect("no handshake completes");
    let took = started.elapsed();
    assert!(matches!(e, ProducerError::Timeout { .. }), "{e:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    server.join().expect("server");
}

/// An ApiVersions answer with an error code is the broker's error, named,
/// not a SASL refusal read into its empty version list.
#[test]
fn an_api_versions_error_is_a_protocol_error_naming_it() {
    use kafka_protocol::ResponseError;
    let sasl = SaslConfig {
        mechanism: crate::config::SaslMechanism::Plain,
        credentials: Some(crate::config::SaslCredentials {
            username: "alice".into(),
            password: crate::config::Secret::new("s3cret"),
        }),
    };
    let security = Security::prepare(None, Some(&sasl), "test").expect("prepare");
    let (addr, server) = fake_broker(|mut sock| {
        if read_response(&mut sock).is_err() {
            return;
        }
        // (The client build of kafka_protocol decodes answers only.)
        // Header v0: the correlation id; ApiVersions v0: the error code and
        // an empty api_keys array.
        let mut body = 1i32.to_be_bytes().to_vec();
        body.extend_from_slice(&ResponseError::UnsupportedVersion.code().to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        if sock.write_all(&frame).is_ok() {
            let _ = sock.read(&mut [0u8; 512]);
        }
    });
    let e = establish_to(&addr, Duration::from_secs(5), &security)
        .err()
        .expect("the broker's error");
    assert!(matches!(e, ProducerError::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("UnsupportedVersion"), "{e}");
    server.join().expect("server");
}
