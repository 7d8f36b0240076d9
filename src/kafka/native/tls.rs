//! tls: the native producer's TLS, through rustls (ring). It owns the
//! session's [`ClientConfig`] (trusted roots, an optional client
//! certificate, the host-name policy), the server name a broker address
//! gives, the handshake, and the two halves of a TLS connection: a
//! [`TlsReader`] for the connection's reader thread and a [`TlsWriter`] for
//! the producer thread, sharing one rustls state behind a mutex.
//!
//! Invariants:
//! - The broker's certificate chain and dates are always verified; only its
//!   name may be let off, when `kafka.tls.verify_hostname` is false.
//! - Neither half blocks on the socket while it holds the rustls state: the
//!   reader reads raw bytes, then locks to decrypt; the writer locks to
//!   encrypt (at most [`WRITE_CHUNK`] of plaintext at a time), then writes
//!   the records unlocked. So a full TCP window on one side never stops the
//!   other side's progress (which would deadlock).
//! - Only the writer half writes to the socket (TLS records must not
//!   interleave); what rustls wants to send after reading (a key update)
//!   goes out with the next write.
//! - A record rustls refuses (an alert, a corrupt record) is an error for
//!   the reader only after the plaintext of the records before it.
//!
//! Must never: accept a certificate whose chain does not end at a trusted
//! root, or put a private key's bytes in an error.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
};

use crate::config::TlsConfig;

/// Plaintext encrypted per lock of the shared state (a multi-MB batch goes
/// in pieces, so the reader is never kept waiting long).
pub(super) const WRITE_CHUNK: usize = 64 << 10;
/// Raw bytes read from the socket at a time by the reader half.
const READ_CHUNK: usize = 64 << 10;

/// The session's rustls client configuration from `kafka.tls`: the CAs of
/// `ca_file` (else the system's roots), the client certificate and key if
/// given. The files are read now, so each session takes renewed ones.
/// `Err` is a message naming the file (never a key's content).
pub(super) fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = read_certs(path)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "ca_file {}: no usable CA certificate",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(format!(
                    "no system CA certificates found ({}); set kafka.tls.ca_file",
                    found
                        .errors
                        .first()
                        .map_or("none installed".to_string(), |e| e.to_string())
                ));
            }
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.verify_hostname {
        webpki
    } else {
        Arc::new(NameMismatchAllowed { inner: webpki })
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let certs = read_certs(&c.cert_file)?;
            let key = PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| {
                format!(
                    "key_file {}: no usable private key ({e})",
                    c.key_file.display()
                )
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "cert_file {} with key_file {}: {e}",
                    c.cert_file.display(),
                    c.key_file.display()
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// The PEM certificates in `path`; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(certs)
}

/// The name a broker's certificate must carry: the host part of `addr`
/// (`host:port`, `1.2.3.4:port`, `[::1]:port`); an IP literal is an IP
/// address name.
pub(super) fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host} is not a valid TLS server name: {e}"))
}

/// A verifier that checks the chain, the dates and the signatures like
/// webpki, but takes a certificate that names another host
/// (`kafka.tls.verify_hostname: false`).
#[derive(Debug)]
struct NameMismatchAllowed {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NameMismatchAllowed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the
        // chain was good.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Runs the TLS handshake with the broker at `name` over `socket`, by
/// `deadline`: each read and write on the socket may take only the time
/// left (so a broker trickling bytes cannot stretch it), and past the
/// deadline it fails with `TimedOut`. `Err` is rustls' error (in an
/// `InvalidData` I/O error) or the socket's. The socket's write timeout is
/// as it was when this returns `Ok`; its read timeout is the time that
/// was left.
pub(super) fn handshake(
    config: &Arc<ClientConfig>,
    name: ServerName<'static>,
    socket: &mut TcpStream,
    deadline: Instant,
) -> io::Result<ClientConnection> {
    let mut conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    let write_timeout = socket.write_timeout()?;
    let mut bounded = Bounded { socket, deadline };
    while conn.is_handshaking() {
        let (read, written) = conn.complete_io(&mut bounded)?;
        if read == 0 && written == 0 && conn.is_handshaking() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            ));
        }
    }
    // Whatever is left to send (none in TLS 1.2/1.3 after the client's
    // Finished, but cheap to be sure of).
    while conn.wants_write() {
        conn.write_tls(&mut bounded)?;
    }
    socket.set_write_timeout(write_timeout)?;
    Ok(conn)
}

/// A socket whose every read and write is bounded by the time left until
/// `deadline` (rustls' `complete_io` reads on as long as bytes come).
struct Bounded<'a> {
    socket: &'a mut TcpStream,
    deadline: Instant,
}

impl Bounded<'_> {
    /// The time left, or `TimedOut` (a zero timeout is no timeout to the
    /// socket).
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake did not finish in time",
            ));
        }
        Ok(left)
    }
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.set_read_timeout(Some(self.left()?))?;
        self.socket.read(buf)
    }
}

impl Write for Bounded<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.socket.set_write_timeout(Some(self.left()?))?;
        self.socket.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// The rustls error inside an I/O error from this module, if that is what
/// it is.
pub(super) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// The two halves of a TLS connection over `socket` (after [`handshake`]).
pub(super) fn split(
    conn: ClientConnection,
    socket: TcpStream,
) -> io::Result<(TlsReader, TlsWriter)> {
    let state = Arc::new(Mutex::new(conn));
    let reader = TlsReader {
        socket: socket.try_clone()?,
        state: state.clone(),
        raw: vec![0; READ_CHUNK].into_boxed_slice(),
        plain: Vec::new(),
        pos: 0,
        eof: false,
        failed: None,
    };
    let writer = TlsWriter {
        socket,
        state,
        records: Vec::with_capacity(WRITE_CHUNK + 1024),
    };
    Ok((reader, writer))
}

fn lock(state: &Mutex<ClientConnection>) -> io::Result<MutexGuard<'_, ClientConnection>> {
    state
        .lock()
        .map_err(|_| io::Error::other("the TLS state was left inconsistent by a panic"))
}

/// The reading half: decrypted bytes from the broker.
pub(super) struct TlsReader {
    socket: TcpStream,
    state: Arc<Mutex<ClientConnection>>,
    raw: Box<[u8]>,
    /// Decrypted bytes not yet read, from `pos` on.
    plain: Vec<u8>,
    pos: usize,
    /// The broker closed the connection (cleanly or not).
    eof: bool,
    /// rustls refused what the broker sent (an alert, a corrupt record):
    /// returned by every read once `plain` is read, and the socket is no
    /// longer read.
    failed: Option<rustls::Error>,
}

impl TlsReader {
    /// Decrypts `n` raw bytes just read (0: the socket's end) into
    /// `plain`. A record rustls refuses sets `failed`, after what the
    /// records before it carried is in `plain`.
    fn take_in(&mut self, n: usize) -> io::Result<()> {
        let mut conn = lock(&self.state)?;
        let mut raw = &self.raw[..n];
        loop {
            let fed = conn.read_tls(&mut raw)?;
            let io_state = match conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    drain_plaintext(&mut conn, &mut self.plain);
                    self.failed = Some(e);
                    return Ok(());
                }
            };
            let k = io_state.plaintext_bytes_to_read();
            if k > 0 {
                let start = self.plain.len();
                self.plain.resize(start + k, 0);
                conn.reader().read_exact(&mut self.plain[start..])?;
            }
            if io_state.peer_has_closed() || fed == 0 {
                if n == 0 || io_state.peer_has_closed() {
                    self.eof = true;
                }
                return Ok(());
            }
            if raw.is_empty() {
                return Ok(());
            }
        }
    }
}

/// Moves the plaintext rustls holds into `plain` (after a refused record:
/// what the good records before it carried).
fn drain_plaintext(conn: &mut ClientConnection, plain: &mut Vec<u8>) {
    loop {
        let start = plain.len();
        plain.resize(start + READ_CHUNK, 0);
        // WouldBlock (nothing left) or an unclean end: either way, done.
        let k = conn.reader().read(&mut plain[start..]).unwrap_or(0);
        plain.truncate(start + k);
        if k == 0 {
            return;
        }
    }
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.plain.len() {
                let n = out.len().min(self.plain.len() - self.pos);
                out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.plain.clear();
            self.pos = 0;
            if let Some(e) = &self.failed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
            }
            if self.eof || out.is_empty() {
                return Ok(0);
            }
            // Unlocked: the writer may encrypt meanwhile.
            let n = self.socket.read(&mut self.raw)?;
            self.take_in(n)?;
        }
    }
}

/// The writing half: plaintext in, TLS records out to the socket.
pub(super) struct TlsWriter {
    socket: TcpStream,
    state: Arc<Mutex<ClientConnection>>,
    /// Encrypted records of one chunk, reused.
    records: Vec<u8>,
}

impl TlsWriter {
    /// The socket, for shutting it down.
    pub(super) fn socket(&self) -> &TcpStream {
        &self.socket
    }
}

impl Write for TlsWriter {
    /// Encrypts up to [`WRITE_CHUNK`] bytes of `data` under the lock, then
    /// writes the records with the lock released.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let chunk = &data[..data.len().min(WRITE_CHUNK)];
        let n = {
            let mut conn = lock(&self.state)?;
            let n = conn.writer().write(chunk)?;
            while conn.wants_write() {
                conn.write_tls(&mut self.records)?;
            }
            n
        };
        let sent = self.socket.write_all(&self.records);
        self.records.clear();
        if self.records.capacity() > 4 * WRITE_CHUNK {
            self.records.shrink_to(WRITE_CHUNK + 1024);
        }
        sent?;
        if n == 0 && !chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the TLS connection takes no more data",
            ));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

#[cfg(test)]
#[path = "tls/tests.rs"]
mod tests;
