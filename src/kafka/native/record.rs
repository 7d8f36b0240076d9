//! record: the encoding of Kafka record batches (magic v2), written straight
//! from spooled lines: a line costs a few varints and two copies, no
//! allocation. It owns the batch header's layout, the records' varints and
//! headers, the lz4 framing Kafka expects, and the partitioner.
//!
//! Invariants:
//! - A batch buffer starts with [`BATCH_HEADER`] reserved bytes, then its
//!   records; [`finish_batch`] fills the header in (after compressing the
//!   records if asked) and nothing else writes to it.
//! - The CRC (crc32c) covers every byte from the attributes to the end, so
//!   it is computed last, over the compressed records.
//!
//! Must never: know about connections, sequence bookkeeping or answers
//! (that is [`super::producer`]); it encodes what it is given.

use std::io::Write;

use bytes::Bytes;

use crate::kafka::line_id;

/// Bytes of a record batch before its records (magic v2).
pub(super) const BATCH_HEADER: usize = header::RECORDS_COUNT.end;

/// Room a record needs beyond its [`RecordTemplate::body_len`]: its length,
/// timestamp-delta and offset-delta varints (at most 5 + 10 + 5 bytes),
/// with some slack.
pub(super) const RECORD_SLACK: usize = 24;

/// Where each field of a record batch's header (magic v2) lies, in wire
/// order; every number is big-endian.
mod header {
    use std::ops::Range;

    /// int64, always 0: the broker assigns offsets.
    pub(super) const BASE_OFFSET: Range<usize> = 0..8;
    /// int32: the bytes that follow this field.
    pub(super) const BATCH_LENGTH: Range<usize> = 8..12;
    /// int32, -1 from a producer.
    pub(super) const PARTITION_LEADER_EPOCH: Range<usize> = 12..16;
    /// int8: 2.
    pub(super) const MAGIC: usize = 16;
    /// uint32: crc32c of everything from `ATTRIBUTES` to the end.
    pub(super) const CRC: Range<usize> = 17..21;
    /// int16: the compression in the low 3 bits.
    pub(super) const ATTRIBUTES: Range<usize> = 21..23;
    /// int32: the count of records less one.
    pub(super) const LAST_OFFSET_DELTA: Range<usize> = 23..27;
    /// int64: the first record's timestamp (Unix ms).
    pub(super) const BASE_TIMESTAMP: Range<usize> = 27..35;
    /// int64: the latest record's timestamp (Unix ms).
    pub(super) const MAX_TIMESTAMP: Range<usize> = 35..43;
    /// int64: from `InitProducerId`.
    pub(super) const PRODUCER_ID: Range<usize> = 43..51;
    /// int16: from `InitProducerId`.
    pub(super) const PRODUCER_EPOCH: Range<usize> = 51..53;
    /// int32: the first record's sequence number.
    pub(super) const BASE_SEQUENCE: Range<usize> = 53..57;
    /// int32: how many records follow.
    pub(super) const RECORDS_COUNT: Range<usize> = 57..61;

    /// The magic byte of this layout.
    pub(super) const MAGIC_V2: u8 = 2;
    /// The attributes' compression bits for lz4.
    pub(super) const LZ4: i16 = 3;
}

/// What a batch's header says about its records, besides their length,
/// compression and CRC.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchFields {
    pub(super) count: i32,
    /// The first record's timestamp (Unix ms).
    pub(super) base_ms: i64,
    /// The latest record's timestamp (Unix ms).
    pub(super) max_ms: i64,
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    pub(super) base_sequence: i32,
}

/// The parts of a record that are the same for every line of a spooled
/// frame, encoded once.
pub(super) struct RecordTemplate {
    /// The records' timestamp (Unix ms): when the frame was taken up.
    pub(super) now_ms: i64,
    pub(super) key: Vec<u8>,
    /// How many headers each record has: [`HEADERS`], and `file` for a
    /// glob source's file.
    pub(super) headers: i64,
    /// The `source`, `path` (and `file`) headers, encoded.
    pub(super) headers_before: Vec<u8>,
    /// The `host` header, encoded.
    pub(super) headers_after: Vec<u8>,
    /// The [`line_id::HEADER`] header, encoded up to the line's index (its
    /// last 4 bytes, written per line).
    pub(super) id_prefix: Vec<u8>,
}

/// Headers per record: `source`, `path`, `offset`, `host`, `lc-id` (and
/// `file` for a glob source's file).
const HEADERS: i64 = 5;

impl RecordTemplate {
    /// The records of a frame of `source` (their key) read from `path`
    /// (`file`: the path a glob source found it under), taken up at
    /// `now_ms`; `host_header` is [`put_header`]'s encoding of
    /// the `host` header; `instance` and `seq` the first parts of each
    /// line's [`LineId`](crate::kafka::line_id::LineId).
    pub(super) fn new(
        source: &str,
        file: Option<&str>,
        path: &str,
        host_header: Vec<u8>,
        now_ms: i64,
        (instance, seq): (u64, u64),
    ) -> Self {
        let mut headers_before = Vec::with_capacity(source.len() + path.len() + 16);
        put_header(&mut headers_before, "source", source.as_bytes());
        put_header(&mut headers_before, "path", path.as_bytes());
        if let Some(file) = file {
            put_header(&mut headers_before, "file", file.as_bytes());
        }
        let mut id_prefix = Vec::with_capacity(32);
        put_varint(&mut id_prefix, line_id::HEADER.len() as i64);
        id_prefix.extend_from_slice(line_id::HEADER.as_bytes());
        put_varint(&mut id_prefix, line_id::LEN as i64);
        id_prefix.extend_from_slice(&instance.to_be_bytes());
        id_prefix.extend_from_slice(&seq.to_be_bytes());
        RecordTemplate {
            now_ms,
            key: source.as_bytes().to_vec(),
            headers: HEADERS + i64::from(file.is_some()),
            headers_before,
            headers_after: host_header,
            id_prefix,
        }
    }

    /// The length of a record of `line` with `offset` header `offset_digits`,
    /// after its length varint and without its timestamp and offset deltas.
    pub(super) fn body_len(&self, offset_digits: &[u8], line: &[u8]) -> usize {
        1 // attributes
            + varint_len(self.key.len() as i64) + self.key.len()
            + varint_len(line.len() as i64) + line.len()
            + varint_len(self.headers)
            + self.headers_before.len()
            + 1 + 6 + varint_len(offset_digits.len() as i64) + offset_digits.len()
            + self.headers_after.len()
            + self.id_prefix.len() + 4 // the line's index
    }
}

/// Zigzag varint, as Kafka's records use.
fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

pub(super) fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends one record header: key and value, each after its length.
pub(super) fn put_header(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    put_varint(buf, key.len() as i64);
    buf.extend_from_slice(key.as_bytes());
    put_varint(buf, value.len() as i64);
    buf.extend_from_slice(value);
}

/// The partition librdkafka's default (`consistent_random`) partitioner
/// picks for a key, so a source keeps its partition whichever client sends.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    (kafka_protocol::records::IEEE.checksum(key) as usize) % partitions.max(1)
}

/// Fills in a record batch's header (magic v2) in front of its records,
/// compressing them first with lz4 if asked. `buf` starts with
/// [`BATCH_HEADER`] reserved bytes. Fails only if lz4 does.
pub(super) fn finish_batch(
    mut buf: Vec<u8>,
    fields: &BatchFields,
    lz4: bool,
) -> std::io::Result<Bytes> {
    let mut attributes: i16 = 0;
    if lz4 {
        buf = compress_lz4(&buf)?;
        attributes = header::LZ4;
    }
    let len = buf.len();
    let h = &mut buf[..BATCH_HEADER];
    h[header::BASE_OFFSET].copy_from_slice(&0i64.to_be_bytes());
    h[header::BATCH_LENGTH]
        .copy_from_slice(&((len - header::BATCH_LENGTH.end) as i32).to_be_bytes());
    h[header::PARTITION_LEADER_EPOCH].copy_from_slice(&(-1i32).to_be_bytes());
    h[header::MAGIC] = header::MAGIC_V2;
    h[header::ATTRIBUTES].copy_from_slice(&attributes.to_be_bytes());
    h[header::LAST_OFFSET_DELTA].copy_from_slice(&(fields.count - 1).to_be_bytes());
    h[header::BASE_TIMESTAMP].copy_from_slice(&fields.base_ms.to_be_bytes());
    h[header::MAX_TIMESTAMP].copy_from_slice(&fields.max_ms.to_be_bytes());
    h[header::PRODUCER_ID].copy_from_slice(&fields.producer_id.to_be_bytes());
    h[header::PRODUCER_EPOCH].copy_from_slice(&fields.producer_epoch.to_be_bytes());
    h[header::BASE_SEQUENCE].copy_from_slice(&fields.base_sequence.to_be_bytes());
    h[header::RECORDS_COUNT].copy_from_slice(&fields.count.to_be_bytes());
    let crc = crc32c::crc32c(&buf[header::ATTRIBUTES.start..]);
    buf[header::CRC].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(buf))
}

/// A new batch buffer: `BATCH_HEADER` reserved bytes, then `buf`'s records
/// compressed.
fn compress_lz4(buf: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(BATCH_HEADER + buf.len() / 2 + 64);
    out.resize(BATCH_HEADER, 0);
    // The LZ4 frame format Kafka expects, with liblz4's fast compressor
    // (level 0), independent 64 KiB blocks and no checksums (the batch's
    // crc32c covers the compressed bytes), as librdkafka writes it.
    let mut enc = lz4::EncoderBuilder::new()
        .level(0)
        .block_size(lz4::BlockSize::Max64KB)
        .block_mode(lz4::BlockMode::Independent)
        .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
        .checksum(lz4::ContentChecksum::NoChecksum)
        .build(out)?;
    enc.write_all(&buf[BATCH_HEADER..])?;
    let (out, r) = enc.finish();
    r.map(|()| out)
}

/// One line as [`put_record`] writes it: its `offset` header's digits,
/// its index in the spooled batch, its bytes.
pub(super) struct LineRecord<'a> {
    pub(super) offset_digits: &'a [u8],
    pub(super) index: u32,
    pub(super) line: &'a [u8],
}

/// Appends one record: `body` is its length after the length varint.
pub(super) fn put_record(
    buf: &mut Vec<u8>,
    t: &RecordTemplate,
    body: usize,
    ts_delta: i64,
    offset_delta: i64,
    r: &LineRecord<'_>,
) {
    let LineRecord {
        offset_digits,
        index,
        line,
    } = *r;
    buf.reserve(body + 5);
    put_varint(buf, body as i64);
    buf.push(0);
    put_varint(buf, ts_delta);
    put_varint(buf, offset_delta);
    put_varint(buf, t.key.len() as i64);
    buf.extend_from_slice(&t.key);
    put_varint(buf, line.len() as i64);
    buf.extend_from_slice(line);
    put_varint(buf, t.headers);
    buf.extend_from_slice(&t.headers_before);
    put_header(buf, "offset", offset_digits);
    buf.extend_from_slice(&t.headers_after);
    buf.extend_from_slice(&t.id_prefix);
    buf.extend_from_slice(&index.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn varints_match_kafka_zigzag() {
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (63, vec![126]),
            (64, vec![128, 1]),
            (-65, vec![129, 1]),
            (300, vec![216, 4]),
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
        assert_eq!(varint_len(i64::MAX), 10);
    }

    fn template(file: Option<&str>) -> RecordTemplate {
        let mut host = Vec::new();
        put_header(&mut host, "host", b"h1");
        RecordTemplate::new("app", file, "/var/log/app.log", host, 0, (0xabc, 77))
    }

    /// Encodes a batch the way `append` + `seal` do and decodes it with
    /// kafka-protocol's decoder, which checks the CRC and every length.
    fn round_trip(lz4: bool, file: Option<&str>) {
        let t = template(file);
        let lines: Vec<Vec<u8>> = (0..500u32)
            .map(|i| format!("line {i} {}", "x".repeat((i % 300) as usize)).into_bytes())
            .chain([Vec::new(), vec![0xff, 0xfe, b'\r']])
            .collect();
        let mut buf = vec![0u8; BATCH_HEADER];
        let mut offset = 0u64;
        for (i, line) in lines.iter().enumerate() {
            let digits = offset.to_string();
            let without = t.body_len(digits.as_bytes(), line);
            let ts = (i % 3) as i64;
            let body = without + varint_len(ts) + varint_len(i as i64);
            let r = LineRecord {
                offset_digits: digits.as_bytes(),
                index: i as u32,
                line,
            };
            put_record(&mut buf, &t, body, ts, i as i64, &r);
            offset += line.len() as u64 + 1;
        }
        let fields = BatchFields {
            count: lines.len() as i32,
            base_ms: 1_700_000_000_000,
            max_ms: 1_700_000_000_002,
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 7,
        };
        let batch = finish_batch(buf, &fields, lz4).expect("encode");
        let mut bytes = batch.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode_with_custom_compression(
            &mut bytes,
            Some(|b: &mut Bytes, c: kafka_protocol::records::Compression| {
                assert_eq!(c == kafka_protocol::records::Compression::Lz4, lz4);
                let mut out = Vec::new();
                if lz4 {
                    lz4::Decoder::new(&b[..])?.read_to_end(&mut out)?;
                } else {
                    out.extend_from_slice(b);
                }
                Ok(Bytes::from(out))
            }),
        )
        .expect("kafka-protocol decodes what we encode");
        assert_eq!(set.records.len(), lines.len());
        let mut offset = 0u64;
        for (i, (r, line)) in set.records.iter().zip(&lines).enumerate() {
            assert_eq!(r.value.as_deref(), Some(&line[..]), "record {i}");
            assert_eq!(r.key.as_deref(), Some(&b"app"[..]));
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.sequence, 7 + i as i32);
            assert_eq!(r.producer_id, 42);
            assert_eq!(r.producer_epoch, 3);
            assert_eq!(r.timestamp, 1_700_000_000_000 + (i % 3) as i64);
            let h = |k: &'static str| {
                r.headers
                    .get(&StrBytes::from_static_str(k))
                    .cloned()
                    .flatten()
                    .map(|v| v.to_vec())
            };
            assert_eq!(h("source"), Some(b"app".to_vec()));
            assert_eq!(h("path"), Some(b"/var/log/app.log".to_vec()));
            assert_eq!(h("offset"), Some(offset.to_string().into_bytes()));
            assert_eq!(h("host"), Some(b"h1".to_vec()));
            assert_eq!(h("file"), file.map(|f| f.as_bytes().to_vec()));
            assert_eq!(r.headers.len(), 5 + usize::from(file.is_some()));
            let id = line_id::LineId {
                instance: 0xabc,
                seq: 77,
                index: i as u32,
            };
            assert_eq!(h(line_id::HEADER), Some(id.encode().to_vec()));
            offset += line.len() as u64 + 1;
        }
    }

    #[test]
    fn batch_round_trips_uncompressed() {
        round_trip(false, None);
    }

    /// A glob source's file: a sixth header, `file`.
    #[test]
    fn batch_with_a_file_header_round_trips() {
        round_trip(false, Some("/var/log/app.log"));
        round_trip(true, Some("/var/log/nginx/a.log"));
    }

    #[test]
    fn batch_round_trips_lz4() {
        round_trip(true, None);
    }

    #[test]
    fn partitioner_matches_librdkafka_crc32() {
        // crc32("a") = 0xe8b7be43, as librdkafka's rd_crc32 computes it.
        assert_eq!(kafka_protocol::records::IEEE.checksum(b"a"), 0xe8b7_be43);
        assert_eq!(partition_for(b"a", 4), 0xe8b7_be43usize % 4);
        assert_eq!(partition_for(b"anything", 1), 0);
    }
}
