//! connection: one connection to a Kafka broker (plain TCP or TLS, see
//! [`super::transport`]). It owns the connection's write half, the reader
//! thread that turns its response frames into messages on the
//! producer's answer channel, and the connection's two queues: sealed
//! batches waiting for room, and Produce requests sent and not yet
//! answered.
//!
//! Invariants:
//! - Requests go out in the order they are written and answers come back
//!   in that order (Kafka answers a connection's requests in order), so the
//!   front of `in_flight` is always the request the next answer is for.
//! - At most [`MAX_IN_FLIGHT`] Produce requests are unanswered: [`pump`]
//!   (the only writer of Produce requests) stops there, and writes none
//!   while the broker's `throttle_time_ms` lasts.
//! - Dropping a connection shuts its socket down, which ends its reader.
//! - The reader thread starts only once the connection is established
//!   (TLS handshake and SASL login done, see [`super::transport`]).
//!
//! Must never: decide what an answer means (that is
//! [`super::producer`]), or reorder a waiting batch.
//!
//! [`pump`]: Connection::pump

use std::collections::VecDeque;
use std::io::Write;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;

use super::producer::BatchLines;
use super::transport::{establish, Security, WriteHalf};
use super::wire::{
    encode_request, produce_request, read_response, Correlations, RequestHead, Timeouts,
};
use super::ProducerError;

/// Unanswered requests per connection: Kafka keeps an idempotent producer's
/// order for at most 5.
pub const MAX_IN_FLIGHT: usize = 5;

/// Where each connection's reader thread sends what it read: the
/// connection's index, and a response frame or the error that ended it.
pub(super) type Answers = SyncSender<(usize, std::io::Result<Bytes>)>;

/// A batch waiting for room on its leader's connection.
pub(super) struct Sealed {
    pub(super) lines: BatchLines,
    pub(super) batch: Bytes,
}

/// A Produce request sent and not yet answered. It keeps its batch (a
/// shared buffer, not a copy): a retriable failure sends the same bytes
/// again, with the same producer id and sequence numbers.
pub(super) struct InFlight {
    pub(super) correlation: i32,
    pub(super) version: i16,
    pub(super) sent: Instant,
    pub(super) sealed: Sealed,
}

pub(super) struct Connection {
    pub(super) addr: String,
    writer: WriteHalf,
    reader: Option<JoinHandle<()>>,
    pub(super) in_flight: VecDeque<InFlight>,
    pub(super) waiting: VecDeque<Sealed>,
    /// Request bytes, reused.
    out: BytesMut,
    /// The broker closed it while nothing was asked (Kafka closes idle
    /// connections after `connections.max.idle.ms`): reopened when needed.
    pub(super) closed: bool,
    pub(super) timeouts: Timeouts,
    /// A Produce answer's `throttle_time_ms`: no request is written before
    /// this (the broker would hold it anyway).
    pub(super) throttled_until: Option<Instant>,
    /// Given up on after a failure (its socket shut down, its batches
    /// taken back by the producer): whatever its reader still sends is
    /// ignored, and nothing is written to it again.
    pub(super) retired: bool,
    /// When the last answer arrived: the broker works through a
    /// connection's requests one at a time, so the front request's answer
    /// is due within the timeout of the later of this and its writing.
    pub(super) last_answer: Option<Instant>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shut_down();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// `host:port` for a broker the metadata lists; an IPv6 address goes in
/// brackets.
pub(super) fn broker_addr(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Connection {
    /// Connects to `addr` (the first of its addresses that answers),
    /// establishes it as `security` says (TLS, SASL), and starts its
    /// reader, which sends what it reads to `tx` as connection `index`.
    pub(super) fn open(
        addr: &str,
        index: usize,
        tx: &Answers,
        timeouts: Timeouts,
        security: &Security,
    ) -> Result<Connection, ProducerError> {
        let stream = connect(addr, timeouts.connect)?;
        let io = |source| ProducerError::Io {
            addr: addr.to_string(),
            source,
        };
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_write_timeout(Some(timeouts.answer()))
            .map_err(io)?;
        let (mut read_half, writer) = establish(addr, stream, timeouts.request, security)?;
        let tx = tx.clone();
        let reader = std::thread::Builder::new()
            .name("kafka-reader".into())
            .spawn(move || loop {
                let r = read_response(&mut read_half);
                let stop = r.is_err();
                if tx.send((index, r)).is_err() || stop {
                    return;
                }
            })
            .map_err(io)?;
        Ok(Connection {
            addr: addr.to_string(),
            writer,
            reader: Some(reader),
            in_flight: VecDeque::new(),
            waiting: VecDeque::new(),
            out: BytesMut::with_capacity(64 << 10),
            closed: false,
            timeouts,
            throttled_until: None,
            retired: false,
            last_answer: None,
        })
    }

    /// Shuts the socket down, which ends the reader once it is not blocked
    /// on a full answer channel.
    pub(super) fn shut_down(&self) {
        let _ = self.writer.socket().shutdown(Shutdown::Both);
    }

    /// The reader thread, for the one who drops the connection and must
    /// keep the answer channel drained while it ends.
    pub(super) fn take_reader(&mut self) -> Option<JoinHandle<()>> {
        self.reader.take()
    }

    /// Writes one request, then `tail` (a record batch) right after it,
    /// uncopied (see [`encode_request`]).
    pub(super) fn write_request<R: Encodable>(
        &mut self,
        head: &RequestHead<'_>,
        body: &R,
        tail: Option<&[u8]>,
    ) -> Result<(), ProducerError> {
        encode_request(&mut self.out, head, body, tail).map_err(|e| ProducerError::Protocol {
            addr: self.addr.clone(),
            detail: format!("cannot encode {:?} v{}: {e}", head.api, head.version),
        })?;
        let io = |source| ProducerError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.writer.write_all(&self.out).map_err(io)?;
        if let Some(tail) = tail {
            self.writer.write_all(tail).map_err(io)?;
        }
        if self.out.capacity() > 4 << 20 {
            // One huge line must not pin its buffer for good.
            self.out = BytesMut::with_capacity(64 << 10);
        }
        Ok(())
    }

    /// Writes waiting batches, in order, while the connection has room
    /// (Produce `version`, each with the next of `correlations`).
    pub(super) fn pump(
        &mut self,
        version: i16,
        client_id: &str,
        correlations: &mut Correlations,
    ) -> Result<(), ProducerError> {
        if let Some(until) = self.throttled_until {
            if Instant::now() < until {
                return Ok(());
            }
            self.throttled_until = None;
        }
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(s) = self.waiting.pop_front() else {
                break;
            };
            let req = produce_request(
                &s.lines.topic,
                s.lines.partition,
                Bytes::new(),
                self.timeouts.produce_ms(),
            );
            let correlation = correlations.next();
            let head = RequestHead {
                api: ApiKey::Produce,
                version,
                correlation,
                client_id,
            };
            if let Err(e) = self.write_request(&head, &req, Some(&s.batch)) {
                // Not written (or not all of it): the batch stays first in
                // line, for whoever takes this connection's batches back.
                self.waiting.push_front(s);
                return Err(e);
            }
            self.in_flight.push_back(InFlight {
                correlation,
                version,
                sent: Instant::now(),
                sealed: s,
            });
        }
        Ok(())
    }

    /// Gives the connection up: shuts its socket down and hands back every
    /// batch it holds, the unanswered ones first, each queue in its order.
    /// Whether the broker took an unanswered one is unknown, which is why
    /// they are sent again with the same sequence numbers (the broker
    /// drops a duplicate).
    pub(super) fn retire(&mut self) -> Vec<Sealed> {
        self.shut_down();
        self.retired = true;
        let mut out: Vec<Sealed> = self
            .in_flight
            .drain(..)
            .map(|mut f| {
                f.sealed.lines.resent = true;
                f.sealed
            })
            .collect();
        out.extend(self.waiting.drain(..));
        out
    }
}

/// The comma-separated bootstrap `brokers`, starting at the one after
/// `turn` others (`turn` counts sessions), so that each session asks
/// another broker first and a hung one is not picked every time.
pub(super) fn bootstrap_order(brokers: &str, turn: usize) -> Vec<&str> {
    let mut all: Vec<&str> = brokers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !all.is_empty() {
        let n = all.len();
        all.rotate_left(turn % n);
    }
    all
}

/// A stream to the first of `addr`'s addresses that answers within
/// `timeout`.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ProducerError> {
    let connect_err = |detail: String| ProducerError::Connect {
        addr: addr.to_string(),
        detail,
    };
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| connect_err(e.to_string()))?
        .collect();
    let mut last = "the name resolved to no address".to_string();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(connect_err(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each turn starts at the next bootstrap broker, wrapping around.
    #[test]
    fn bootstrap_order_rotates_with_the_turn() {
        let b = "a:1, b:2,,c:3";
        assert_eq!(bootstrap_order(b, 0), ["a:1", "b:2", "c:3"]);
        assert_eq!(bootstrap_order(b, 1), ["b:2", "c:3", "a:1"]);
        assert_eq!(bootstrap_order(b, 5), ["c:3", "a:1", "b:2"]);
        assert!(bootstrap_order(" , ", 3).is_empty());
    }

    #[test]
    fn ipv6_broker_addresses_go_in_brackets() {
        assert_eq!(broker_addr("b1.example", 9092), "b1.example:9092");
        assert_eq!(broker_addr("::1", 9092), "[::1]:9092");
        assert_eq!(broker_addr("[::1]", 9092), "[::1]:9092");
    }
}
