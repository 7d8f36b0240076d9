//! Hostile input against the real `logcatch` binary and a real (Apache
//! Kafka) broker, by kind: a 100 MiB line ([`long_line`]); random binary bytes
//! and mixed line endings ([`line_bytes`]); a file that shrinks under the
//! reader, paths that are a directory or a FIFO, a file that appears late
//! ([`sources`]); a damaged spool ([`spool_damage`]); and broken or
//! missing configs ([`config`]).
//!
//! Not tested here: a file the daemon may not read (EACCES). The tests run
//! as root, and root reads a mode-000 file anyway, so the case cannot be
//! produced with chmod; the error path it would take is the same `Io` error
//! a directory source exercises (logged once, shown in `logcatch-ctl
//! offsets`, the daemon keeps running).

use std::time::Duration;

mod config;
mod line_bytes;
mod long_line;
mod sources;
mod spool_damage;

const WAIT: Duration = Duration::from_secs(120);
const TOPIC: &str = "logs";
const MIB: usize = 1 << 20;
