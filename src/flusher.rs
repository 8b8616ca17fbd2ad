//! The background flusher: a plain thread that persists the visit count about once a second, so a
//! SIGKILL loses at most that much. It runs off the async runtime because fsync blocks.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::visits::VisitStore;

/// Interval between flushes: the most visits a SIGKILL can lose.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

pub struct Flusher {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Flusher {
    pub fn spawn(store: Arc<VisitStore>, every: Duration) -> std::io::Result<Flusher> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("visits-flusher".to_owned())
            // Needs little: formats a number and makes a few syscalls.
            .stack_size(64 * 1024)
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    // Errors are logged and reported by the store itself; the next tick retries.
                    let _ = store.flush();
                }
            })?;
        Ok(Flusher { stop, thread })
    }

    /// Stops the thread after its current flush; the caller does the final flush.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
