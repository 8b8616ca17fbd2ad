//! Stop signals and the bounded drain.
//!
//! warp 0.4's `graceful()` waits for every connection with no deadline of its own, so the drain is
//! raced against [`DRAIN_TIMEOUT`] and against a second signal (an impatient operator).

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Longest wait for in-flight requests after a stop signal. Leaves room for the final flush
/// within the 10 s grace period Docker and most supervisors give before SIGKILL.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// SIGTERM and SIGINT, listened to from startup so neither kills the process outright.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next stop signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every in-flight request finished.
    Complete,
    /// [`DRAIN_TIMEOUT`] passed; remaining connections are dropped.
    TimedOut,
    /// A second signal arrived (its name); remaining connections are dropped.
    Interrupted(&'static str),
}

/// Drives `server` (already told to stop) until it finishes, the deadline passes, or another
/// signal arrives.
pub async fn drain(
    server: impl Future<Output = ()>,
    signals: &mut Signals,
    deadline: Duration,
) -> Drain {
    tokio::select! {
        () = server => Drain::Complete,
        () = tokio::time::sleep(deadline) => Drain::TimedOut,
        name = signals.recv() => Drain::Interrupted(name),
    }
}
