//! line_id: owns the identity every message carries, so that the
//! [`ledger`](crate::kafka::ledger)'s read-back can tell exactly which
//! spooled lines Kafka already has.
//!
//! A [`LineId`] is (instance id, spool batch seq, line index in the batch):
//! - the instance id is a random 64-bit number made once, when the store is
//!   created (or upgraded to schema v2), and never changed
//!   ([`Store::instance_id`](crate::store::Store::instance_id)); it stays the
//!   same when a pod or VM is redeployed with the same `data_dir`, unlike
//!   the host name;
//! - the seq is the spool writer's commit sequence number
//!   ([`SpoolBatch::seq`](crate::spool::SpoolBatch::seq)), strictly
//!   increasing over the spool's life, so it never repeats for one
//!   instance, whatever the files do (rotation, truncation, rewrites);
//! - the index is the line's place in that batch.
//!
//! On the wire it is the header [`HEADER`] (`lc-id`) with a 20-byte value:
//! instance id (8 bytes), seq (8 bytes), index (4 bytes), each big-endian.
//! The other headers (`source`, `path`, `offset`, `host`) are unchanged, for
//! consumers.
//!
//! Must never: give two different spooled lines of one store the same
//! identity.

/// The header that carries a line's identity.
pub const HEADER: &str = "lc-id";

/// Length of the [`HEADER`]'s value.
pub const LEN: usize = 20;

/// One spooled line's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineId {
    pub instance: u64,
    pub seq: u64,
    pub index: u32,
}

impl LineId {
    /// The header value: instance, seq, index, big-endian.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..8].copy_from_slice(&self.instance.to_be_bytes());
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..].copy_from_slice(&self.index.to_be_bytes());
        b
    }

    /// Reads a header value; `None` if it is not [`LEN`] bytes.
    pub fn decode(v: &[u8]) -> Option<LineId> {
        let v: &[u8; LEN] = v.try_into().ok()?;
        Some(LineId {
            instance: u64::from_be_bytes(v[..8].try_into().ok()?),
            seq: u64::from_be_bytes(v[8..16].try_into().ok()?),
            index: u32::from_be_bytes(v[16..].try_into().ok()?),
        })
    }
}

/// A new random instance id (never 0), from the standard library's
/// OS-seeded hasher keys, the time and the process id.
pub fn new_instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_lengths() {
        let id = LineId {
            instance: 0x0102_0304_0506_0708,
            seq: u64::MAX - 1,
            index: 7,
        };
        let b = id.encode();
        assert_eq!(&b[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(LineId::decode(&b), Some(id));
        assert_eq!(LineId::decode(&b[..19]), None);
        assert_ne!(new_instance_id(), 0);
        assert_ne!(new_instance_id(), new_instance_id());
    }
}
