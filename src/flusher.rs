//! The background flusher: persists the visit count about once a second, so a SIGKILL loses at
//! most that much.
//!
//! fsync blocks, so the writes run outside the async runtime: in a small writer process forked
//! before the runtime starts (it inherits nothing but the data directory's path and one end of a
//! socket pair). A writer thread would do the same job, but a second thread makes glibc pay its
//! cancellation bookkeeping on every system call of the process: about 2 % of `/healthz`
//! throughput (README, "Benchmark"). The process stays single-threaded on one CPU, and a slow or
//! stuck disk never stalls a request.
//!
//! Protocol: the service sends a count (8 bytes, little endian); the writer writes it with
//! [`write_atomically`] and answers with a length-prefixed OS error text (length 0: written).
//! The writer exits when its socket closes, so it never outlives the service.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::visits::{VisitStore, write_atomically};

/// Interval between flushes: the most visits a SIGKILL can lose.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The writer process, seen from the service.
#[derive(Debug)]
pub struct Writer {
    pid: libc::pid_t,
    socket: StdUnixStream,
}

impl Writer {
    /// Forks the writer for `dir`. Call it while the process has a single thread and before it
    /// opens anything the writer must not hold (the lock, the listener, the runtime's
    /// descriptors).
    pub fn fork(dir: &Path) -> io::Result<Writer> {
        let (service_end, writer_end) = StdUnixStream::pair()?;
        // SAFETY: the caller guarantees one thread, so the child starts from a consistent heap
        // and locks; it only runs `writer_main`, which never returns.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(service_end);
                writer_main(dir, writer_end)
            }
            pid => Ok(Writer {
                pid,
                socket: service_end,
            }),
        }
    }
}

/// Closes the writer's socket (it finishes its current write, then exits) and reaps it.
fn end_writer(pid: libc::pid_t, socket: UnixStream) {
    drop(socket);
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// The writer process's whole life. It ignores the signals the service handles: a `systemctl
/// stop` signals every process of the unit, and the service alone decides when writing ends.
fn writer_main(dir: &Path, mut socket: StdUnixStream) -> ! {
    for signal in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: installing SIG_IGN has no handler that could be unsafe.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let mut count = [0u8; 8];
    while socket.read_exact(&mut count).is_ok() {
        let error = match write_atomically(dir, u64::from_le_bytes(count)) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        let mut reply = (error.len() as u32).to_le_bytes().to_vec();
        reply.extend_from_slice(error.as_bytes());
        if socket.write_all(&reply).is_err() {
            break;
        }
    }
    // SAFETY: ends the child without running the service's exit handlers or destructors.
    unsafe { libc::_exit(0) }
}

/// Asks the writer to write `count`; `Err` is the OS error text (or why the writer is gone).
async fn write_through(socket: &mut UnixStream, count: u64) -> Result<(), String> {
    let gone = |e: io::Error| format!("the visits writer process is gone ({e})");
    socket.write_all(&count.to_le_bytes()).await.map_err(gone)?;
    let mut len = [0u8; 4];
    socket.read_exact(&mut len).await.map_err(gone)?;
    let mut error = vec![0u8; u32::from_le_bytes(len) as usize];
    socket.read_exact(&mut error).await.map_err(gone)?;
    if error.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&error).into_owned())
    }
}

/// The ticking task on the runtime, and the writer it talks to.
pub struct Flusher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Option<(libc::pid_t, UnixStream)>>,
}

impl Flusher {
    /// Starts ticking every `every` on the current runtime; without a writer (no data
    /// directory) there is nothing to write and the task only waits for the stop.
    pub fn spawn(
        store: Arc<VisitStore>,
        writer: Option<Writer>,
        every: Duration,
    ) -> io::Result<Flusher> {
        let writer = match writer {
            Some(w) => {
                w.socket.set_nonblocking(true)?;
                Some((w.pid, UnixStream::from_std(w.socket)?))
            }
            None => None,
        };
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let Some((pid, mut socket)) = writer else {
                let _ = stopped.await;
                return None;
            };
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate; startup already wrote
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {}
                }
                if let Some((_, count)) = store.unwritten() {
                    // Errors are logged and reported by the store; the next tick retries.
                    let _ = store.record(count, write_through(&mut socket, count).await);
                }
            }
            Some((pid, socket))
        });
        Ok(Flusher { stop, task })
    }

    /// Stops ticking after the current write and ends the writer; the caller does the final
    /// flush. Runs on `runtime`, before it is dropped.
    pub fn stop(self, runtime: &tokio::runtime::Runtime) {
        let _ = self.stop.send(());
        if let Ok(Some((pid, socket))) = runtime.block_on(self.task) {
            end_writer(pid, socket);
        }
    }
}
