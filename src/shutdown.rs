//! Signals and the bounded drain.
//!
//! SIGTERM and SIGINT stop the service cleanly. SIGHUP, SIGUSR1 and SIGUSR2, whose default action
//! would kill the process without the final write, are caught, logged and otherwise ignored:
//! there is no configuration file to reload and no log file to reopen, and an operator's stray
//! `kill -HUP` must never cost visits. The connection drain has no deadline of its own, so it is
//! raced against [`DRAIN_TIMEOUT`] and against a second stop signal (an impatient operator).

use std::future::Future;
use std::io;
use std::time::Duration;

use log::info;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Longest wait for in-flight requests after a stop signal. Leaves room for the final flush
/// within the 10 s grace period Docker and most supervisors give before SIGKILL.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Every signal whose default action would end the process without the final write and that an
/// operator or a supervisor plausibly sends, listened to from startup.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Waits for the next stop signal (SIGTERM or SIGINT) and returns its name; logs and ignores
    /// the others meanwhile.
    pub async fn recv(&mut self) -> &'static str {
        loop {
            let ignored = tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => "SIGHUP",
                _ = self.usr1.recv() => "SIGUSR1",
                _ = self.usr2.recv() => "SIGUSR2",
            };
            info!(
                "{ignored} received: ignored (warpwatch has nothing to reload or reopen); SIGTERM or SIGINT stops it"
            );
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
