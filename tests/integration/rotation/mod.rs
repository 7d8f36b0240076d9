//! Rotation scenarios against the real daemon and a real Kafka: each
//! logrotate mode, with and without `kill -9`, asserting that every line
//! arrives exactly once. [`copytruncate`]: logrotate's copy-then-truncate,
//! the copy at `app.log.1` or a `dateext` name.

mod copytruncate;
