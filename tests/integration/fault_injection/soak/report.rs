//! The soak's report: per file, lines written, delivered, missing and
//! duplicated, from one full read of the topic; and, for duplicates, which
//! restart came after them and what the daemon logged there.

use std::fmt::Write as _;

use super::tracker::TopicCount;
use super::SPAN;
use crate::common::*;

/// What a file ended with: name, first number, next number to write, and
/// header lines written (rw.log only).
pub(super) type FileInfo = (&'static str, u64, u64, u64);

/// The delivery of every file, as a table and as what is wrong.
pub(super) struct DeliveryTable {
    /// file, written, delivered, missing, duplicated.
    pub(super) text: String,
    pub(super) missing: usize,
    pub(super) duplicated: usize,
    /// Per file, the missing and duplicated lines, by number.
    pub(super) problems: Vec<String>,
    /// The numbers that arrived more than once.
    pub(super) dup_numbers: Vec<u64>,
    /// Messages that are no line a file had.
    pub(super) stray: Vec<String>,
}

/// Builds the [`DeliveryTable`] of `files` from one full read of the topic.
pub(super) fn delivery_table(tc: &TopicCount, files: &[FileInfo]) -> DeliveryTable {
    let mut stray = tc.stray.clone();
    let header_counts = &tc.headers;
    let mut table = String::new();
    writeln!(
        table,
        "{:<8} {:>10} {:>10} {:>8} {:>10}",
        "file", "written", "delivered", "missing", "duplicated"
    )
    .unwrap();
    let mut total_missing = 0usize;
    let mut total_dup = 0usize;
    let mut missing_desc = Vec::new();
    let mut dup_numbers: Vec<u64> = Vec::new();
    for (i, (name, base, next, headers)) in files.iter().enumerate() {
        let c = &tc.counts[i];
        let written = next - base;
        let count_of = |n: u64| c.get((n % SPAN) as usize).copied().unwrap_or(0) as usize;
        let missing: Vec<u64> = (*base..*next).filter(|n| count_of(*n) == 0).collect();
        let dups: Vec<u64> = (0..c.len() as u64)
            .filter(|k| c[*k as usize] > 1)
            .map(|k| base + k)
            .collect();
        let extra: usize = c.iter().map(|k| (*k as usize).saturating_sub(1)).sum();
        let unexpected: Vec<u64> = (0..c.len() as u64)
            .map(|k| base + k)
            .filter(|n| *n >= *next && count_of(*n) > 0)
            .collect();
        let delivered: usize = c.iter().map(|k| *k as usize).sum();
        let (w, dl, mi, du) = if *headers > 0 {
            let h = header_counts.get(*name).copied().unwrap_or(0);
            (
                written + headers,
                delivered as u64 + h,
                missing.len() as u64 + headers.saturating_sub(h),
                extra as u64 + h.saturating_sub(*headers),
            )
        } else {
            (
                written,
                delivered as u64,
                missing.len() as u64,
                extra as u64,
            )
        };
        writeln!(table, "{name:<8} {w:>10} {dl:>10} {mi:>8} {du:>10}").unwrap();
        total_missing += mi as usize;
        total_dup += du as usize;
        if !missing.is_empty() {
            missing_desc.push(format!("{name}: missing {}", ranges(missing)));
        }
        if !unexpected.is_empty() {
            stray.push(format!("{name}: never written {}", ranges(unexpected)));
        }
        if !dups.is_empty() {
            missing_desc.push(format!("{name}: duplicated {}", ranges(dups.clone())));
        }
        if *headers > 0 {
            let h = header_counts.get(*name).copied().unwrap_or(0);
            if h != *headers {
                missing_desc.push(format!(
                    "{name}: {h} header lines delivered, {headers} written"
                ));
            }
        }
        dup_numbers.extend(dups);
    }
    DeliveryTable {
        text: table,
        missing: total_missing,
        duplicated: total_dup,
        problems: missing_desc,
        dup_numbers,
        stray,
    }
}

/// Daemon log lines of start #`n` (from its harness marker) and the last
/// `before` lines of the run it follows.
pub(super) fn log_around_start(log: &str, n: usize, before: usize, after: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let marker = format!("===== test harness: start #{n} =====");
    let Some(at) = lines.iter().position(|l| *l == marker) else {
        return format!("(no {marker} in daemon.log)");
    };
    let from = at.saturating_sub(before);
    let to = (at + 1 + after).min(lines.len());
    lines[from..to].join("\n")
}
