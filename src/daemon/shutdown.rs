//! Shutdown: the one type that stops the daemon, in named phases.
//!
//! Owns: a root [`CancellationToken`] and one child token per [`Phase`].
//! The supervisor enters the phases in data-flow order (see the invariants
//! of [`crate::daemon`]); each stage is handed the token of the phase that
//! stops it and never sees the others.
//!
//! Invariants: phases are entered in the order of [`Phase`]'s variants,
//! each at most once. Cancelling the root ([`Shutdown::abort`]) cancels
//! every phase at once: that is for an exit that cannot keep the order (an
//! error that ends `run` early), so that no thread outlives the daemon.
//!
//! Must never: be used to cancel a single tailer on reload (that is a
//! [`TailStop::graceful`](crate::source::tailer::TailStop::graceful) token
//! of its own): a phase stops every task of its stage.

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The phases of a shutdown, in the order they are entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A signal asked the daemon to stop (or the forwarder failed): the
    /// supervisor leaves its loop.
    Requested,
    /// Tailers stop between steps and give up a batch still waiting for
    /// spool room (never committed, so read again next run); the spool
    /// writer stops waiting for room or retrying a failed write.
    StopTailers,
    /// The admin endpoint closes.
    CloseAdmin,
    /// The spool writer has committed its last batch: the forwarder
    /// delivers what is spooled, for up to `kafka.shutdown_ack_timeout`,
    /// writes its cursor and exits.
    DrainForwarder,
}

const PHASES: [Phase; 4] = [
    Phase::Requested,
    Phase::StopTailers,
    Phase::CloseAdmin,
    Phase::DrainForwarder,
];

/// The daemon's shutdown: cheap to clone, every clone is the same one.
#[derive(Clone, Debug)]
pub struct Shutdown {
    root: CancellationToken,
    phases: [CancellationToken; 4],
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let root = CancellationToken::new();
        let phases = std::array::from_fn(|_| root.child_token());
        Shutdown { root, phases }
    }

    fn index(phase: Phase) -> usize {
        PHASES.iter().position(|p| *p == phase).unwrap_or(0)
    }

    /// The token a stage watches: cancelled when `phase` is entered (or on
    /// [`Shutdown::abort`]).
    pub fn token(&self, phase: Phase) -> CancellationToken {
        self.phases[Shutdown::index(phase)].clone()
    }

    /// Enters `phase`.
    pub fn enter(&self, phase: Phase) {
        tracing::debug!(?phase, "shutdown phase");
        self.phases[Shutdown::index(phase)].cancel();
    }

    /// Asks the daemon to stop (SIGTERM, SIGINT): enters [`Phase::Requested`].
    pub fn request(&self) {
        self.enter(Phase::Requested);
    }

    /// Resolves once a stop was requested.
    pub fn requested(&self) -> WaitForCancellationFuture<'_> {
        self.phases[Shutdown::index(Phase::Requested)].cancelled()
    }

    /// Whether `phase` has been entered.
    pub fn entered(&self, phase: Phase) -> bool {
        self.phases[Shutdown::index(phase)].is_cancelled()
    }

    /// Every phase at once, out of order: for an exit that cannot wait.
    pub fn abort(&self) {
        self.root.cancel();
    }

    /// Aborts when dropped unless [`AbortGuard::disarm`]ed: held by `run`
    /// so that an early error return stops every thread it started.
    pub fn abort_on_drop(&self) -> AbortGuard {
        AbortGuard(Some(self.clone()))
    }
}

/// See [`Shutdown::abort_on_drop`].
pub struct AbortGuard(Option<Shutdown>);

impl AbortGuard {
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_a_phase_cancels_only_that_phase() {
        let s = Shutdown::new();
        let tailers = s.token(Phase::StopTailers);
        s.request();
        assert!(s.entered(Phase::Requested));
        assert!(!tailers.is_cancelled());
        s.enter(Phase::StopTailers);
        assert!(tailers.is_cancelled());
        assert!(!s.entered(Phase::DrainForwarder));
    }

    #[test]
    fn abort_and_a_dropped_guard_cancel_every_phase() {
        let s = Shutdown::new();
        drop(s.abort_on_drop());
        assert!(PHASES.iter().all(|p| s.entered(*p)));
        let s = Shutdown::new();
        s.abort_on_drop().disarm();
        assert!(!s.entered(Phase::Requested));
    }
}
