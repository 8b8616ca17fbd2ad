//! Client connections: HTTP/1.1 through hyper with a tokio timer, a cap on how many are open at
//! once, error accounting, and the drain on stop.
//!
//! What a hostile or broken client can hold, and for how long:
//! - a connection must deliver a complete request head within [`HEADER_READ_TIMEOUT`] of opening,
//!   and of the end of its previous response (hyper's header-read timer runs in both cases, so
//!   the same deadline closes half-sent requests and idle keep-alive connections);
//! - a request head over [`MAX_REQUEST_HEAD`] bytes is answered 431 and the connection closed;
//! - at most [`Limits::max_connections`] are open; when a new connection arrives at the cap, the
//!   oldest open connection is closed to make room. The listener keeps accepting, so a probe or a
//!   scrape always gets in, and an attacker's connections are the ones that go first: they are
//!   the oldest, since nothing legitimate stays long without a complete request head.
//!
//! Client mistakes (malformed requests, timeouts, resets) are counted in
//! `warpwatch_connection_errors_total{kind}` and logged at debug only: no client can write
//! operator-level log lines at will.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use warp::http::Request;
use warp::reply::Response;

use crate::metrics::{self, ConnectionError};

/// Longest wait for a complete request head, from a connection's opening or the end of its
/// previous response. Generous for any real client on any network; short enough that a flood of
/// half-sent requests drains by itself.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes a request head may take (hyper's smallest read buffer limit is 8 KiB). This
/// service reads no cookies or bodies; 16 KiB is double what common proxies allow. It also bounds
/// what a half-sent request can make the server buffer.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Ceiling of the connection cap whatever the open-file limit: about 40 KB each when every one
/// holds a full request head, so the cap stays well inside the 256 MiB memory limit.
pub const MAX_CONNECTIONS: usize = 4096;

/// File descriptors kept out of the cap: the process's own (stdio, epoll, the listener, the
/// visits and lock files, `/proc` reads for `process_*`) and room for connections being evicted
/// while their replacements are already open.
pub const FD_RESERVE: u64 = 128;

/// The smallest useful cap; below it the service refuses to start.
pub const MIN_CONNECTIONS: usize = 16;

/// After a surge above this many open connections ...
const TRIM_AFTER: usize = 256;
/// ... falling back to this many returns freed heap memory to the system.
const TRIM_BELOW: usize = 16;

/// The limits one server applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The defaults, with the cap fitted under `open_files`, the process's open-file limit:
    /// `min(MAX_CONNECTIONS, open_files - FD_RESERVE)`.
    pub fn for_open_files(open_files: u64) -> Result<Limits, String> {
        let cap = open_files.saturating_sub(FD_RESERVE);
        if cap < MIN_CONNECTIONS as u64 {
            return Err(format!(
                "the open-file limit is {open_files}: too low to serve (at least {} needed: \
                 {MIN_CONNECTIONS} connections plus {FD_RESERVE} for the process itself); raise it \
                 with ulimit -n, LimitNOFILE= (systemd) or --ulimit nofile= (docker)",
                MIN_CONNECTIONS as u64 + FD_RESERVE
            ));
        }
        Ok(Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: usize::try_from(cap)
                .map_or(MAX_CONNECTIONS, |c| c.min(MAX_CONNECTIONS)),
        })
    }
}

/// The open-file limit, after raising the soft limit towards the hard one as far as the
/// connection cap can use (systemd's default soft limit is 1024 under a hard limit of 524288).
#[cfg(unix)]
pub fn open_file_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted: libc::rlim_t = MAX_CONNECTIONS as u64 + FD_RESERVE;
    if lim.rlim_cur < wanted && lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own. Failure keeps the old limit, which is fine.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    Ok(lim.rlim_cur)
}

/// What the accept loop tells a connection's task. Only ever moves up.
const RUN: u8 = 0;
const DRAIN: u8 = 1;
const CLOSE: u8 = 2;

struct Control {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Control {
    fn signal(&self, state: u8) {
        self.state.fetch_max(state, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// The connections of one server.
struct Shared {
    max: usize,
    open: AtomicUsize,
    /// Highest `open` since the last heap trim.
    peak: AtomicUsize,
    /// Notified when `open` falls to 0.
    idle: Notify,
    /// Every open connection, oldest first (plus some already closed, pruned as it grows).
    order: Mutex<VecDeque<Weak<Control>>>,
}

impl Shared {
    fn order(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<Control>>> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the oldest open connection that is not already closing.
    fn evict_oldest(&self) {
        let mut order = self.order();
        while let Some(weak) = order.pop_front() {
            if let Some(control) = weak.upgrade()
                && control.state.load(Ordering::Acquire) < CLOSE
            {
                control.signal(CLOSE);
                metrics::CONNECTIONS_EVICTED_TOTAL.inc();
                return;
            }
        }
    }

    fn register(&self, control: &Arc<Control>) {
        let mut order = self.order();
        order.push_back(Arc::downgrade(control));
        // Amortised O(1): prune closed entries once they outnumber open ones.
        if order.len() > 2 * self.open.load(Ordering::Relaxed) + 64 {
            order.retain(|w| w.strong_count() > 0);
            let keep = order.len() * 2;
            order.shrink_to(keep);
        }
    }

    fn signal_all(&self, state: u8) {
        for control in self.order().iter().filter_map(Weak::upgrade) {
            control.signal(state);
        }
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            let mut notified = pin!(notified);
            // Registered before the check, so a close in between still wakes us.
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Held by each connection's task: counts it open until the task ends, however it ends
/// (panics included).
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        metrics::CONNECTIONS_OPEN.dec();
        let left = self.0.open.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 {
            self.0.idle.notify_waiters();
        }
        if left <= TRIM_BELOW && self.0.peak.load(Ordering::Relaxed) > TRIM_AFTER {
            self.0.peak.store(left, Ordering::Relaxed);
            release_free_memory();
        }
    }
}

/// Hands freed heap pages back to the kernel. glibc keeps what thousands of connections freed
/// in its per-thread arenas otherwise, and RSS stays at the attack's peak.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Serves `service` (cloned per connection) on `listener` with `limits` until `shutdown`
/// resolves; then stops accepting, lets every connection finish its current request, and returns
/// once all are closed (no deadline: callers race it, see [`crate::shutdown::drain`]).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    metrics::CONNECTIONS_MAX.set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
    let shared = Arc::new(Shared {
        max: limits.max_connections,
        open: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        idle: Notify::new(),
        order: Mutex::new(VecDeque::new()),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD);
    let builder = Arc::new(builder);

    let mut shutdown = pin!(shutdown);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => admit(&shared, &builder, stream, service.clone()),
            Err(e) => accept_failed(&e, &mut last_warning).await,
        }
    }
    drop(listener);
    shared.signal_all(DRAIN);
    shared.wait_idle().await;
}

fn admit<S>(shared: &Arc<Shared>, builder: &Arc<http1::Builder>, stream: TcpStream, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let open = shared.open.load(Ordering::Acquire);
    if open >= shared.max {
        // Evicted connections close on their next poll; until then they still hold their
        // descriptor, so refuse outright if too many are still on their way out.
        if open >= shared.max + (FD_RESERVE / 2) as usize {
            debug!(target: "warpwatch::connections", "refusing a connection: {open} still open");
            return;
        }
        shared.evict_oldest();
    }
    let open = shared.open.fetch_add(1, Ordering::AcqRel) + 1;
    shared.peak.fetch_max(open, Ordering::Relaxed);
    metrics::CONNECTIONS_OPEN.inc();
    let guard = OpenGuard(shared.clone());
    let control = Arc::new(Control {
        state: AtomicU8::new(RUN),
        waker: AtomicWaker::new(),
    });
    shared.register(&control);
    let builder = builder.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut conn = pin!(conn);
        let mut draining = false;
        let result = poll_fn(|cx| {
            control.waker.register(cx.waker());
            match control.state.load(Ordering::Acquire) {
                CLOSE => return Poll::Ready(Ok(())),
                DRAIN if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ => {}
            }
            conn.as_mut().poll(cx)
        })
        .await;
        if let Err(e) = result {
            let kind = classify(&e);
            metrics::connection_error(kind).inc();
            debug!(target: "warpwatch::connections", "client connection error ({}): {e}", kind.label());
        }
    });
}

fn classify(e: &hyper::Error) -> ConnectionError {
    if e.is_timeout() {
        return ConnectionError::Timeout;
    }
    if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
        return ConnectionError::Malformed;
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || e.is_body_write_aborted() {
        return ConnectionError::Aborted;
    }
    let io_kind = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map(io::Error::kind);
    match io_kind {
        Some(
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof,
        ) => ConnectionError::Aborted,
        _ => ConnectionError::Other,
    }
}

/// Pause after an accept error that is not the client's doing (e.g. out of descriptors despite
/// the cap, because something else in the process holds many), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

async fn accept_failed(e: &io::Error, last_warning: &mut Option<Instant>) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        // The client gave up before we accepted: its business.
        debug!(target: "warpwatch::connections", "accept: {e}");
        return;
    }
    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        warn!("cannot accept connections: {e}; retrying (logged at most once a second)");
        *last_warning = Some(Instant::now());
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sits_under_the_open_file_limit() {
        let at = |n| Limits::for_open_files(n).map(|l| l.max_connections);
        assert_eq!(at(1024), Ok(1024 - FD_RESERVE as usize));
        assert_eq!(at(1 << 20), Ok(MAX_CONNECTIONS));
        assert_eq!(at(FD_RESERVE + 16), Ok(16));
        assert!(at(FD_RESERVE + 15).unwrap_err().contains("ulimit -n"));
    }
}
