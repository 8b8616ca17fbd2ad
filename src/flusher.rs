//! The background flusher: persists the visit count about once a second, so a SIGKILL loses at
//! most that much.
//!
//! fsync blocks, so the writes run outside the async runtime: in a small writer process forked
//! before the runtime starts (it inherits nothing but the data directory, held open, its lock,
//! and one end of a socket pair). A writer thread would do the same job, but a second thread
//! makes glibc pay its cancellation bookkeeping on every system call of the process: about 2 % of
//! `/healthz` throughput (CONTRIBUTING.md, "Benchmark"). The process stays single-threaded on one
//! CPU, and a slow or stuck disk never stalls a request.
//!
//! Protocol: the service sends a request (1 byte: [`CHECK`] or [`WRITE`], then the count in 8
//! bytes, little endian); the writer checks that the data directory is still this process's
//! ([`DataDir::check`]), writes the count if asked ([`write_atomically`], checking again just
//! before the rename), and answers with a status byte ([`OK`], [`FAILED`], [`LOST`]) and a
//! length-prefixed reason. Once lost, the writer answers [`LOST`] to everything. Every tick sends
//! a request, a write when the count changed and a check otherwise, so a stuck disk and a lost
//! directory are noticed even on an idle service. The writer exits when its socket closes, so it
//! never outlives the service; it holds the lock's descriptor too, so no second process can take
//! the directory while a write of this one may still land.
//!
//! A write unanswered for [`STALL_TIMEOUT`] is reported (see [`VisitStore::stalled`]); at a
//! stop, the final write gets [`PERSIST_TIMEOUT`], after which the writer is killed and the stop
//! says how many visits it could not persist.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::datadir::DataDir;
use crate::visits::{VisitStore, WriteError, write_atomically};

/// Interval between flushes: the most visits a SIGKILL can lose.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How long the writer may leave a request unanswered before `/readyz` reports the store
/// stalled (a few flushes: one slow fsync is no stall).
pub const STALL_TIMEOUT: Duration = FLUSH_INTERVAL.saturating_mul(5);

/// Longest wait for the final write at a stop (after the drain): past it, the writer is killed
/// and the visits since the last write are reported lost. With the drain's 5 s, a stop ends
/// within the 10 s Docker and most supervisors give before SIGKILL.
pub const PERSIST_TIMEOUT: Duration = Duration::from_secs(3);

/// Request: check the directory only.
const CHECK: u8 = 0;
/// Request: check, then write the count.
const WRITE: u8 = 1;
/// Answer: done.
const OK: u8 = 0;
/// Answer: the write failed ([`WriteError::Failed`]).
const FAILED: u8 = 1;
/// Answer: the directory is lost ([`WriteError::Lost`]).
const LOST: u8 = 2;

/// The writer process, seen from the service.
#[derive(Debug)]
pub struct Writer {
    process: Process,
    socket: StdUnixStream,
}

impl Writer {
    /// Forks the writer for `data`. Call it while the process has a single thread and before it
    /// opens anything the writer must not hold (the listener, the runtime's descriptors).
    pub fn fork(data: &DataDir) -> io::Result<Writer> {
        let (service_end, writer_end) = StdUnixStream::pair()?;
        // SAFETY: the caller guarantees one thread, so the child starts from a consistent heap
        // and locks; it only runs `writer_main`, which never returns.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(service_end);
                writer_main(data, writer_end)
            }
            pid => Ok(Writer {
                process: Process(Some(pid)),
                socket: service_end,
            }),
        }
    }

    /// Writes `count` and waits for the answer (at startup, before the runtime exists).
    pub fn write_now(&mut self, count: u64) -> Result<(), WriteError> {
        self.socket.write_all(&request(Some(count))).map_err(gone)?;
        let mut head = [0u8; 5];
        self.socket.read_exact(&mut head).map_err(gone)?;
        let mut reason = vec![0u8; reason_len(&head)];
        self.socket.read_exact(&mut reason).map_err(gone)?;
        answer(head[0], &reason)
    }
}

/// The writer's pid until it is reaped; dropping it kills and reaps the writer if that was not
/// done in order (a stop that gave up on it, or the service ending at once).
#[derive(Debug)]
struct Process(Option<libc::pid_t>);

impl Process {
    /// Waits for the writer to exit (after its socket closed: at once).
    fn reap(&mut self) {
        if let Some(pid) = self.0.take() {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // A writer stuck in the kernel dies as soon as its system call returns, before any
            // later one (no rename of an older count after this process's end). It is not waited
            // for: that could take as long as the disk is stuck.
            let mut status = 0;
            // SAFETY: signals and polls our own child; `status` is a valid out-pointer.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, libc::WNOHANG);
            }
        }
    }
}

fn request(count: Option<u64>) -> [u8; 9] {
    let mut bytes = [0u8; 9];
    bytes[0] = if count.is_some() { WRITE } else { CHECK };
    bytes[1..].copy_from_slice(&count.unwrap_or(0).to_le_bytes());
    bytes
}

fn reason_len(head: &[u8; 5]) -> usize {
    u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize
}

fn answer(status: u8, reason: &[u8]) -> Result<(), WriteError> {
    let reason = String::from_utf8_lossy(reason).into_owned();
    match status {
        OK => Ok(()),
        LOST => Err(WriteError::Lost(reason)),
        _ => Err(WriteError::Failed(reason)),
    }
}

fn gone(e: io::Error) -> WriteError {
    WriteError::Failed(format!("the visits writer process is gone ({e})"))
}

/// Checks that `data` is still this process's directory, and writes `count` there if given:
/// what the writer does for each request.
pub fn persist(data: &DataDir, count: Option<u64>) -> Result<(), WriteError> {
    let check = || match data.check() {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(WriteError::Lost(why)),
        Err(e) => Err(WriteError::Failed(format!(
            "cannot check the data directory {}: {e}",
            data.dir().path().display()
        ))),
    };
    check()?;
    match count {
        Some(count) => write_atomically(data.dir(), count, check),
        None => Ok(()),
    }
}

/// The writer process's whole life. It ignores the signals the service handles: a `systemctl
/// stop` signals every process of the unit, and the service alone decides when writing ends.
fn writer_main(data: &DataDir, mut socket: StdUnixStream) -> ! {
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
    let mut lost: Option<String> = None;
    let mut message = [0u8; 9];
    while socket.read_exact(&mut message).is_ok() {
        let count = (message[0] == WRITE).then(|| {
            let mut n = [0u8; 8];
            n.copy_from_slice(&message[1..]);
            u64::from_le_bytes(n)
        });
        let result = match &lost {
            Some(why) => Err(WriteError::Lost(why.clone())),
            None => persist(data, count),
        };
        let (status, reason) = match result {
            Ok(()) => (OK, String::new()),
            Err(WriteError::Failed(e)) => (FAILED, e),
            Err(WriteError::Lost(why)) => (LOST, lost.insert(why).clone()),
        };
        let mut reply = vec![status];
        reply.extend_from_slice(&(reason.len() as u32).to_le_bytes());
        reply.extend_from_slice(reason.as_bytes());
        if socket.write_all(&reply).is_err() {
            break;
        }
    }
    // SAFETY: ends the child without running the service's exit handlers or destructors.
    unsafe { libc::_exit(0) }
}

/// Sends one request and reads its answer. The outer `Err` means the writer is gone.
async fn exchange(
    socket: &mut UnixStream,
    count: Option<u64>,
) -> io::Result<Result<(), WriteError>> {
    socket.write_all(&request(count)).await?;
    let mut head = [0u8; 5];
    socket.read_exact(&mut head).await?;
    let mut reason = vec![0u8; reason_len(&head)];
    socket.read_exact(&mut reason).await?;
    Ok(answer(head[0], &reason))
}

/// [`exchange`], reporting it to `store` as stalled once it takes [`STALL_TIMEOUT`].
async fn watched_exchange(
    store: &VisitStore,
    socket: &mut UnixStream,
    count: Option<u64>,
) -> io::Result<Result<(), WriteError>> {
    let sent = Instant::now();
    let mut exchange = std::pin::pin!(exchange(socket, count));
    tokio::select! {
        result = &mut exchange => return result,
        () = tokio::time::sleep(STALL_TIMEOUT) => store.stalled(sent),
    }
    exchange.await
}

/// What the ticking task hands back when it stops.
enum Link {
    /// No data directory: nothing to write.
    None,
    /// The writer answered its last request.
    Up(UnixStream),
    /// The writer's socket failed: it is dead.
    Gone,
}

/// How a stop's final write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file holds the count.
    Persisted,
    /// No data directory.
    InMemory,
    /// The file does not hold the count, and why.
    NotPersisted(String),
}

/// The ticking task on the runtime, and the writer it talks to.
pub struct Flusher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Link>,
    process: Process,
}

impl Flusher {
    /// Starts ticking every `every` on the current runtime; without a writer (no data
    /// directory) there is nothing to write and the task only waits for the stop.
    pub fn spawn(
        store: Arc<VisitStore>,
        writer: Option<Writer>,
        every: Duration,
    ) -> io::Result<Flusher> {
        let (process, socket) = match writer {
            Some(w) => {
                w.socket.set_nonblocking(true)?;
                (w.process, Some(UnixStream::from_std(w.socket)?))
            }
            None => (Process(None), None),
        };
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let Some(mut socket) = socket else {
                let _ = stopped.await;
                return Link::None;
            };
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate; startup already wrote
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {}
                }
                if store.is_lost() {
                    continue;
                }
                let count = store.unwritten();
                match watched_exchange(&store, &mut socket, count).await {
                    // Errors are logged and reported by the store; the next tick retries.
                    Ok(result) => {
                        let _ = store.record(count, result);
                    }
                    Err(e) => {
                        let _ = store.record(count, Err(gone(e)));
                        return Link::Gone;
                    }
                }
            }
            Link::Up(socket)
        });
        Ok(Flusher {
            stop,
            task,
            process,
        })
    }

    /// Stops ticking and writes the count a last time, within `deadline`: through the writer
    /// (after the write it may be in the middle of), or, if the writer died, from this process
    /// (`data`). Past the deadline the writer is killed. Run it once no request can count a
    /// visit any more. Dropping the future before it ends also kills the writer.
    pub async fn finish(
        mut self,
        store: &Arc<VisitStore>,
        data: Option<Arc<DataDir>>,
        deadline: Duration,
    ) -> Outcome {
        let _ = self.stop.send(());
        let task = &mut self.task;
        let process = &mut self.process;
        let last = async {
            let link = task.await.unwrap_or(Link::Gone);
            if let Link::None = link {
                return Outcome::InMemory;
            }
            let Some(count) = store.unwritten() else {
                return store
                    .lost()
                    .map_or(Outcome::Persisted, Outcome::NotPersisted);
            };
            let result = match link {
                Link::Up(mut socket) => exchange(&mut socket, Some(count))
                    .await
                    .unwrap_or_else(|e| Err(gone(e))),
                _ => {
                    // The writer is dead (its socket failed), so no write of it can land after
                    // this one: write from here, off the runtime thread.
                    process.reap();
                    match data {
                        Some(data) => {
                            tokio::task::spawn_blocking(move || persist(&data, Some(count)))
                                .await
                                .unwrap_or_else(|e| Err(WriteError::Failed(e.to_string())))
                        }
                        None => Err(WriteError::Failed("no data directory".to_owned())),
                    }
                }
            };
            // The socket is closed: the writer exits.
            process.reap();
            match store.record(Some(count), result) {
                Ok(()) => Outcome::Persisted,
                Err(why) => Outcome::NotPersisted(why),
            }
        };
        match tokio::time::timeout(deadline, last).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.task.abort();
                Outcome::NotPersisted(format!(
                    "the visits writer did not finish within {}s (a stuck disk?)",
                    deadline.as_secs()
                ))
            }
        }
    }
}
