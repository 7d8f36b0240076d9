//! Checks over what was consumed, by the numbers of numbered lines (see
//! [`super::files`]): exactly once, file order, which numbers arrived how
//! often.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

use super::consume::Msg;
use super::files::number_of;

/// The numbers of numbered-line messages, in the given order. Panics on a
/// message that is not a numbered line.
pub fn numbers_of(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .map(|m| {
            number_of(&m.value).unwrap_or_else(|| {
                panic!(
                    "message at partition {} offset {} is not a numbered line: {:?}",
                    m.partition,
                    m.offset,
                    String::from_utf8_lossy(&m.value)
                )
            })
        })
        .collect()
}

/// How many times each number arrived. Panics on a message that is not a
/// numbered line.
pub fn counts_of(msgs: &[Msg]) -> BTreeMap<u64, usize> {
    let mut c = BTreeMap::new();
    for n in numbers_of(msgs) {
        *c.entry(n).or_default() += 1;
    }
    c
}

/// Whether every number of `range` is among the messages.
pub fn has_all(msgs: &[Msg], range: Range<u64>) -> bool {
    let got: std::collections::HashSet<u64> =
        msgs.iter().filter_map(|m| number_of(&m.value)).collect();
    range.into_iter().all(|n| got.contains(&n))
}

/// The messages whose key is `source`, in the given order.
pub fn of_source<'a>(msgs: &'a [Msg], source: &str) -> Vec<&'a Msg> {
    msgs.iter()
        .filter(|m| m.key.as_deref() == Some(source.as_bytes()))
        .collect()
}

/// Number -> how many times, over the numbered messages of `source`
/// (others are left out).
pub fn number_counts(msgs: &[Msg], source: &str) -> BTreeMap<u64, usize> {
    let mut c = BTreeMap::new();
    for m in of_source(msgs, source) {
        if let Some(n) = number_of(&m.value) {
            *c.entry(n).or_default() += 1;
        }
    }
    c
}

/// What went wrong in a delivery, by line number.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Numbers in the expected range that never arrived.
    pub missing: Vec<u64>,
    /// Numbers that arrived more than once, with how many times.
    pub duplicated: BTreeMap<u64, usize>,
    /// Numbers outside the expected range, with how many times.
    pub unexpected: BTreeMap<u64, usize>,
}

impl Tally {
    /// Against the numbers of `expected`.
    pub fn of(msgs: &[Msg], expected: Range<u64>) -> Tally {
        Tally::of_ranges(msgs, &[expected])
    }

    /// Against the numbers of all of `expected` (disjoint ranges).
    pub fn of_ranges(msgs: &[Msg], expected: &[Range<u64>]) -> Tally {
        let counts = counts_of(msgs);
        let mut t = Tally {
            missing: expected
                .iter()
                .flat_map(|r| r.clone())
                .filter(|n| !counts.contains_key(n))
                .collect(),
            ..Tally::default()
        };
        t.missing.sort_unstable();
        for (&n, &c) in &counts {
            if !expected.iter().any(|r| r.contains(&n)) {
                t.unexpected.insert(n, c);
            } else if c > 1 {
                t.duplicated.insert(n, c);
            }
        }
        t
    }

    /// Extra copies delivered (a number seen 3 times counts 2).
    pub fn duplicate_count(&self) -> usize {
        self.duplicated.values().map(|c| c - 1).sum()
    }

    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.unexpected.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        if !self.missing.is_empty() {
            writeln!(
                s,
                "missing {} line(s): {}",
                self.missing.len(),
                ranges(self.missing.iter().copied())
            )
            .unwrap();
        }
        if !self.duplicated.is_empty() {
            writeln!(
                s,
                "{} line(s) duplicated ({} extra copies): {}",
                self.duplicated.len(),
                self.duplicate_count(),
                ranges(self.duplicated.keys().copied())
            )
            .unwrap();
        }
        if !self.unexpected.is_empty() {
            writeln!(
                s,
                "{} unexpected line number(s): {}",
                self.unexpected.len(),
                ranges(self.unexpected.keys().copied())
            )
            .unwrap();
        }
        if s.is_empty() {
            s.push_str("exactly once");
        }
        s
    }
}

/// Compresses sorted numbers into `a..=b` runs (at most 20 shown).
pub fn ranges(nums: impl IntoIterator<Item = u64>) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for n in nums {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => runs.push((n, n)),
        }
    }
    let total = runs.len();
    let mut parts: Vec<String> = runs
        .iter()
        .take(20)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b} ({})", b - a + 1)
            }
        })
        .collect();
    if total > 20 {
        parts.push(format!("... and {} more runs", total - 20));
    }
    parts.join(", ")
}

/// Asserts every number in `expected` arrived exactly once and nothing
/// else did; the message names the missing and duplicated numbers.
pub fn assert_exactly_once(msgs: &[Msg], expected: Range<u64>) {
    assert_exactly_once_in(msgs, &[expected]);
}

/// Asserts every number in the union of `expected` (disjoint ranges)
/// arrived exactly once and nothing else did.
pub fn assert_exactly_once_in(msgs: &[Msg], expected: &[Range<u64>]) {
    let t = Tally::of_ranges(msgs, expected);
    assert!(
        t.is_exact(),
        "delivery of lines {expected:?} was not exactly once ({} messages):\n{}",
        msgs.len(),
        t.describe()
    );
}

/// Asserts that, within each partition and key, line numbers strictly
/// increase with the offset (file order per source).
pub fn assert_file_order(msgs: &[Msg]) {
    // (partition, key) -> (last line number, its offset)
    type Stream = (i32, Option<Vec<u8>>);
    let mut last: BTreeMap<Stream, (u64, i64)> = BTreeMap::new();
    let mut bad = Vec::new();
    for m in msgs {
        let Some(n) = number_of(&m.value) else {
            continue;
        };
        let k = (m.partition, m.key.clone());
        if let Some(&(prev, prev_off)) = last.get(&k) {
            if n <= prev && bad.len() < 10 {
                bad.push(format!(
                    "partition {} key {:?}: line {n} at offset {} after line {prev} at offset {prev_off}",
                    m.partition,
                    m.key_str(),
                    m.offset
                ));
            }
        }
        last.insert(k, (n, m.offset));
    }
    assert!(
        bad.is_empty(),
        "lines out of file order:\n{}",
        bad.join("\n")
    );
}
