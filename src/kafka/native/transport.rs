//! transport: what a broker connection reads and writes through, plain TCP
//! or TLS ([`super::tls`]), and what makes a new connection ready for
//! requests: the TLS handshake, then an ApiVersions round trip and the
//! SASL login ([`super::sasl`]), all before the connection's reader thread
//! starts, within the request timeout.
//!
//! Invariants:
//! - [`Security`] is prepared once per session ([`Security::prepare`]): the
//!   TLS files are read then, and their errors are
//!   [`ProducerError::Tls`] naming the file.
//! - A connection that comes out of [`establish`] has passed TLS and SASL;
//!   a broker refusing either is [`ProducerError::Tls`] or
//!   [`ProducerError::Authentication`], which end the session (they are not
//!   among the failures a retry clears), never a lost connection that is
//!   opened again and again. Conversely a connection lost while being
//!   established (a broker restarting) is [`ProducerError::Io`], retried,
//!   never a refusal; closed during the TLS handshake, its error asks
//!   whether the listener speaks TLS at all.
//! - The socket has no read timeout once established (the reader thread
//!   blocks until an answer or a shutdown).
//!
//! Must never: log or put in an error the SASL password.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use rustls::ClientConfig;

use super::sasl::{self, Exchange};
use super::tls::{self, TlsReader, TlsWriter};
use super::wire::{answer_body, encode_request, error_name, read_response, RequestHead};
use super::ProducerError;
use crate::config::{SaslConfig, TlsConfig};

/// What every connection of a session must go through before it carries
/// requests: TLS with this configuration, a SASL login.
#[derive(Clone, Default)]
pub(super) struct Security {
    tls: Option<Arc<ClientConfig>>,
    sasl: Option<SaslConfig>,
}

impl Security {
    /// Reads the TLS files of `tls` (so a renewed certificate is taken by
    /// the next session); `brokers` names the cluster in an error.
    pub(super) fn prepare(
        tls: Option<&TlsConfig>,
        sasl: Option<&SaslConfig>,
        brokers: &str,
    ) -> Result<Self, ProducerError> {
        let tls = tls
            .map(tls::client_config)
            .transpose()
            .map_err(|detail| ProducerError::Tls {
                addr: brokers.to_string(),
                detail,
            })?;
        Ok(Security {
            tls,
            sasl: sasl.cloned(),
        })
    }

    fn is_plain(&self) -> bool {
        self.tls.is_none() && self.sasl.is_none()
    }
}

/// The half of a connection its reader thread reads answers from.
pub(super) enum ReadHalf {
    Plain(TcpStream),
    Tls(TlsReader),
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(s) => s.read(buf),
            ReadHalf::Tls(t) => t.read(buf),
        }
    }
}

/// The half of a connection the producer writes requests to.
pub(super) enum WriteHalf {
    Plain(TcpStream),
    Tls(TlsWriter),
}

impl WriteHalf {
    /// The socket, for shutting it down and setting its timeouts.
    pub(super) fn socket(&self) -> &TcpStream {
        match self {
            WriteHalf::Plain(s) => s,
            WriteHalf::Tls(t) => t.socket(),
        }
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(s) => s.write(buf),
            WriteHalf::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.flush(),
            WriteHalf::Tls(t) => t.flush(),
        }
    }
}

/// Makes `stream`, connected to `addr`, ready for requests as `security`
/// says (TLS handshake, ApiVersions, SASL login), within
/// `timeouts.request`; returns its two halves.
pub(super) fn establish(
    addr: &str,
    mut stream: TcpStream,
    request_timeout: Duration,
    security: &Security,
) -> Result<(ReadHalf, WriteHalf), ProducerError> {
    let io = |source| ProducerError::Io {
        addr: addr.to_string(),
        source,
    };
    if security.is_plain() {
        let read = stream.try_clone().map_err(io)?;
        return Ok((ReadHalf::Plain(read), WriteHalf::Plain(stream)));
    }
    let deadline = Instant::now() + request_timeout;
    stream.set_read_timeout(Some(request_timeout)).map_err(io)?;
    let (read, write) = match &security.tls {
        None => (
            ReadHalf::Plain(stream.try_clone().map_err(io)?),
            WriteHalf::Plain(stream),
        ),
        Some(config) => {
            let name = tls::server_name(addr).map_err(|detail| ProducerError::Tls {
                addr: addr.to_string(),
                detail,
            })?;
            let conn = tls::handshake(config, name, &mut stream, deadline)
                .map_err(|e| handshake_error(addr, e, request_timeout))?;
            let (r, w) = tls::split(conn, stream).map_err(io)?;
            (ReadHalf::Tls(r), WriteHalf::Tls(w))
        }
    };
    let mut early = Early {
        addr,
        read,
        write,
        out: BytesMut::new(),
        correlation: 0,
        deadline,
        timeout: request_timeout,
    };
    // ApiVersions first: SASL's versions, and, with TLS 1.3, the proof
    // that the broker took our certificate (it says so only after the
    // handshake, with an alert read here).
    let versions: ApiVersionsResponse =
        early.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
    if let Some(e) = ResponseError::try_from_code(versions.error_code) {
        return Err(ProducerError::Protocol {
            addr: addr.to_string(),
            detail: format!("ApiVersions refused: {}", error_name(e)),
        });
    }
    if let Some(s) = &security.sasl {
        sasl::log_in(&mut early, &versions, s, addr)?;
    }
    early.write.socket().set_read_timeout(None).map_err(io)?;
    Ok((early.read, early.write))
}

/// A failed TLS handshake: rustls' error (a certificate it refuses, the
/// broker's alert) is [`ProducerError::Tls`]; the deadline passing stays a
/// timeout; any other I/O failure is a lost connection,
/// [`ProducerError::Io`], retried like one (a broker restarting). A
/// broker closing the connection is also what a listener that does not
/// speak TLS does, so that error says so.
fn handshake_error(addr: &str, e: io::Error, timeout: Duration) -> ProducerError {
    if is_timeout(&e) {
        return ProducerError::Timeout {
            addr: addr.to_string(),
            secs: timeout.as_secs(),
        };
    }
    if let Some(r) = tls::rustls_error(&e) {
        return ProducerError::Tls {
            addr: addr.to_string(),
            detail: r.to_string(),
        };
    }
    let hint = if matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    ) {
        " (is the broker's listener TLS?)"
    } else {
        ""
    };
    ProducerError::Io {
        addr: addr.to_string(),
        source: io::Error::new(e.kind(), format!("during the TLS handshake: {e}{hint}")),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Requests sent and answered one by one on a connection being
/// established (before its reader thread exists).
struct Early<'a> {
    addr: &'a str,
    read: ReadHalf,
    write: WriteHalf,
    out: BytesMut,
    correlation: i32,
    deadline: Instant,
    timeout: Duration,
}

impl Early<'_> {
    fn call<R: Encodable, S: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<S, ProducerError> {
        let addr = self.addr;
        self.correlation += 1;
        let head = RequestHead {
            api,
            version,
            correlation: self.correlation,
            client_id: "logcatch",
        };
        encode_request(&mut self.out, &head, body, None).map_err(|e| ProducerError::Protocol {
            addr: addr.to_string(),
            detail: format!("cannot encode {api:?} v{version}: {e}"),
        })?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        let r = if left.is_zero() {
            Err(io::Error::from(io::ErrorKind::TimedOut))
        } else {
            self.write
                .socket()
                .set_read_timeout(Some(left))
                .and_then(|()| self.write.write_all(&self.out))
                .and_then(|()| read_response(&mut self.read))
        };
        let frame = r.map_err(|e| self.failure(e))?;
        let mut buf = answer_body(addr, Ok(frame), api, version, self.correlation)?;
        S::decode(&mut buf, version).map_err(|e| ProducerError::Protocol {
            addr: addr.to_string(),
            detail: format!("{api:?} v{version}: {e}"),
        })
    }

    /// An I/O failure while establishing: a timeout, a TLS alert (the
    /// broker refusing our certificate), or the socket's error.
    fn failure(&self, e: io::Error) -> ProducerError {
        let addr = self.addr.to_string();
        if is_timeout(&e) {
            return ProducerError::Timeout {
                addr,
                secs: self.timeout.as_secs(),
            };
        }
        match tls::rustls_error(&e) {
            Some(r) => ProducerError::Tls {
                addr,
                detail: r.to_string(),
            },
            None => ProducerError::Io { addr, source: e },
        }
    }
}

impl Exchange for Early<'_> {
    fn request_handshake(
        &mut self,
        version: i16,
        body: &SaslHandshakeRequest,
    ) -> Result<SaslHandshakeResponse, ProducerError> {
        self.call(ApiKey::SaslHandshake, version, body)
    }

    fn request_authenticate(
        &mut self,
        version: i16,
        body: &SaslAuthenticateRequest,
    ) -> Result<SaslAuthenticateResponse, ProducerError> {
        self.call(ApiKey::SaslAuthenticate, version, body)
    }
}

#[cfg(test)]
#[path = "transport/tests.rs"]
mod tests;
