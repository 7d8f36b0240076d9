//! control: how an operator steers the daemon: the admin endpoint
//! ([`admin`]), its reports ([`offsets`]) and config reloads ([`reload`]).
//!
//! Owns: [`ControlError`], the one error type of an operator's command
//! (reload, reset, forget), live or on a stopped store.
//!
//! Must never: change a source's state itself: changes go to the
//! supervisor ([`crate::daemon`]), which owns the tailers, or, with no
//! daemon running, through [`crate::daemon::offline_set_record`].

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::spool::SpoolError;
use crate::store::StoreError;

pub mod admin;
pub mod offsets;
pub mod reload;
pub mod reset;

/// Why an operator's command was not carried out. Its text is what
/// `logcatch-ctl` prints.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no source named `{name}` in {config}")]
    UnknownSource { name: String, config: PathBuf },
    #[error("the store has no record of `{0}`")]
    NoRecord(String),
    #[error("the spool writer has stopped")]
    WriterStopped,
    #[error("the config file did not change")]
    Unchanged,
    /// The reload was refused; the daemon runs on the last good config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("{path}: {source}")]
    ResetFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("offset {offset} is past the end of {path} ({size} bytes)")]
    PastEnd {
        offset: u64,
        path: PathBuf,
        size: u64,
    },
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
