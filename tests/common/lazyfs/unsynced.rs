//! One file's cache of bytes written and not yet fsync'd ([`Unsynced`]):
//! what a read lays over the backing file, what the file's size grows to,
//! what an fsync writes, what a power cut forgets.
//!
//! Invariant: its extents never overlap and never touch (a write that
//! reaches one merges into it), so an append costs one extension. It never
//! reads or writes a file itself.

use std::collections::BTreeMap;
use std::ops::Bound;

/// One file's bytes written but not yet fsync'd: non-overlapping,
/// non-adjacent extents by offset. Its size over a backing file of `n`
/// bytes is `max(n, self.end())` (a truncate cuts both, see
/// [`Unsynced::truncate`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Unsynced {
    extents: BTreeMap<u64, Vec<u8>>,
}

impl Unsynced {
    /// Records `data` written at `off`, over whatever was cached there.
    /// An append to the last extent extends it in place.
    pub(super) fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        // The extent that starts at or before `off` and reaches it, if any,
        // absorbs the write.
        let pred = self
            .extents
            .range(..=off)
            .next_back()
            .filter(|(s, v)| *s + v.len() as u64 >= off)
            .map(|(s, _)| *s);
        let (start, mut buf) = match pred {
            Some(s) => {
                let mut v = self.extents.remove(&s).unwrap_or_default();
                let v_end = s + v.len() as u64;
                let tail = if v_end > end {
                    v[(end - s) as usize..].to_vec()
                } else {
                    Vec::new()
                };
                v.truncate((off - s) as usize);
                v.extend_from_slice(data);
                v.extend_from_slice(&tail);
                (s, v)
            }
            None => (off, data.to_vec()),
        };
        // Extents starting inside (or right after) the new one merge into it.
        let mut buf_end = start + buf.len() as u64;
        let next: Vec<u64> = self
            .extents
            .range((Bound::Excluded(off), Bound::Included(buf_end)))
            .map(|(s, _)| *s)
            .collect();
        for s in next {
            let v = self.extents.remove(&s).unwrap_or_default();
            let v_end = s + v.len() as u64;
            if v_end > buf_end {
                buf.extend_from_slice(&v[(buf_end - s) as usize..]);
                buf_end = v_end;
            }
        }
        self.extents.insert(start, buf);
    }

    /// A truncate to `size`: cached bytes at or past it are forgotten.
    pub(super) fn truncate(&mut self, size: u64) {
        let _gone = self.extents.split_off(&size);
        if let Some((s, v)) = self.extents.iter_mut().next_back() {
            if *s + v.len() as u64 > size {
                v.truncate((size - *s) as usize);
            }
        }
    }

    /// The end of the last cached extent (0 when nothing is cached).
    pub(super) fn end(&self) -> u64 {
        self.extents
            .iter()
            .next_back()
            .map_or(0, |(s, v)| s + v.len() as u64)
    }

    /// How many bytes are cached.
    pub(super) fn bytes(&self) -> u64 {
        self.extents.values().map(|v| v.len() as u64).sum()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Copies the cached bytes of `[off, off + buf.len())` over `buf`.
    pub(super) fn overlay(&self, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        let first = self
            .extents
            .range(..=off)
            .next_back()
            .map_or(off, |(s, _)| *s);
        for (s, v) in self.extents.range(first..end) {
            let from = off.max(*s);
            let to = end.min(s + v.len() as u64);
            if from < to {
                buf[(from - off) as usize..(to - off) as usize]
                    .copy_from_slice(&v[(from - s) as usize..(to - s) as usize]);
            }
        }
    }

    /// The extents, by offset (what an fsync writes).
    pub(super) fn extents(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.extents.iter().map(|(s, v)| (*s, v.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::Unsynced;

    fn read(u: &Unsynced, backing: &[u8], off: u64, len: usize) -> Vec<u8> {
        let end = (backing.len() as u64).max(u.end());
        let n = (len as u64).min(end.saturating_sub(off)) as usize;
        let mut buf = vec![0u8; n];
        for (i, b) in buf.iter_mut().enumerate() {
            if let Some(x) = backing.get(off as usize + i) {
                *b = *x;
            }
        }
        u.overlay(off, &mut buf);
        buf
    }

    #[test]
    fn cached_writes_overlay_the_backing_bytes() {
        let mut u = Unsynced::default();
        u.write(2, b"XY");
        u.write(8, b"Z");
        assert_eq!(read(&u, b"abcdef", 0, 100), b"abXYef\0\0Z");
        assert_eq!(read(&u, b"abcdef", 3, 2), b"Ye");
        assert_eq!(u.bytes(), 3);
    }

    #[test]
    fn the_size_is_the_larger_of_backing_and_cache() {
        let mut u = Unsynced::default();
        assert_eq!(u.end(), 0);
        u.write(10, b"0123");
        assert_eq!(u.end(), 14);
        u.write(0, b"ab");
        assert_eq!(u.end(), 14, "a write below the end does not shrink it");
        assert_eq!(read(&u, &[b'.'; 20], 12, 100).len(), 8);
    }

    #[test]
    fn appends_and_overlapping_writes_merge_into_one_extent() {
        let mut u = Unsynced::default();
        u.write(0, b"aaaa");
        u.write(4, b"bbbb");
        u.write(10, b"cc");
        u.write(6, b"XXXXX");
        let ext: Vec<(u64, Vec<u8>)> = u.extents().map(|(o, b)| (o, b.to_vec())).collect();
        assert_eq!(ext, vec![(0, b"aaaabbXXXXXc".to_vec())]);
        u.write(1, b"y");
        assert_eq!(read(&u, b"", 0, 100), b"ayaabbXXXXXc");
    }

    #[test]
    fn a_write_inside_an_extent_keeps_its_tail() {
        let mut u = Unsynced::default();
        u.write(0, b"0123456789");
        u.write(3, b"ab");
        assert_eq!(read(&u, b"", 0, 100), b"012ab56789");
        assert_eq!(u.extents().count(), 1);
    }

    #[test]
    fn a_truncate_forgets_cached_bytes_past_the_new_size() {
        let mut u = Unsynced::default();
        u.write(0, b"0123456789");
        u.write(20, b"far");
        u.truncate(4);
        assert_eq!(u.end(), 4);
        assert_eq!(u.bytes(), 4);
        assert_eq!(read(&u, b"", 0, 100), b"0123");
        u.truncate(0);
        assert!(u.is_empty());
    }

    #[test]
    fn dropping_the_cache_leaves_only_the_backing_bytes() {
        let mut u = Unsynced::default();
        u.write(3, b"new bytes");
        assert_eq!(read(&u, b"old", 0, 100), b"oldnew bytes");
        u = Unsynced::default();
        assert_eq!(read(&u, b"old", 0, 100), b"old");
    }
}
