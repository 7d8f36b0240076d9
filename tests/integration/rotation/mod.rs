//! Rotation scenarios against the real daemon and a real Kafka: each
//! logrotate mode, with and without `kill -9`, asserting that every line
//! arrives exactly once. The writer and logrotate are
//! [`crate::common::logrotate::Logrotate`].

/// `create` + `compress` + `delaycompress`: the plain `app.log.1` becomes
/// `app.log.2.gz` a cycle later; a `.gz` is never read.
mod compress;
/// `create` + `compress` without `delaycompress`: the stopped case needs
/// the rest read from the `.gz` sibling (leave this module out until that
/// lands).
mod compress_no_delay;
/// logrotate's copy-then-truncate, the copy at `app.log.1` or a `dateext`
/// name.
mod copytruncate;
/// `create` mode (rename, new file): numbered and `dateext` names, an
/// empty file, a partial last line, and late lines written to the renamed
/// file (the late-line tests need `rotate_wait`).
mod rename;
/// The rotation soak: every mode at once, seeded rotations and `kill -9`
/// (also rotations while down, twice in a row), a per-mode report.
mod soak;
/// Two rename rotations while the daemon is stopped: needs the middle
/// generation recovered (leave this module out until that lands).
mod two_while_stopped;
