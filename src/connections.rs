//! Client connections: HTTP/1.1 through hyper with a tokio timer, a cap on how many are open at
//! once, error accounting, and the drain on stop.
//!
//! What a hostile or broken client can hold, and for how long:
//! - a connection must deliver a complete request head within [`Limits::header_read_timeout`]
//!   (default [`DEFAULT_HEADER_TIMEOUT`]) of opening, or of the first byte of a later request;
//! - a kept-alive connection may sit idle between requests for [`Limits::idle_timeout`] (default
//!   [`DEFAULT_IDLE_TIMEOUT`]), and a response the client does not read may stall for as long;
//! - a request head over [`MAX_REQUEST_HEAD`] bytes is answered 431 and the connection closed;
//! - at most [`Limits::max_connections`] are open; when a new connection arrives at the cap, one
//!   open connection is closed to make room (see [`Shared::evict`] for which). The listener keeps
//!   accepting, so a probe or a scrape always gets in, and an established client that keeps
//!   asking, such as a Prometheus scraper on its keep-alive connection, keeps its connection:
//!   connections that never sent a complete request go first, then those that asked least.
//!
//! Client mistakes (malformed requests, timeouts, resets) are counted in
//! `warpwatch_connection_errors_total{kind}` and logged at debug only: no client can write
//! operator-level log lines at will.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use log::{debug, warn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use warp::http::Request;
use warp::reply::Response;

use crate::config::{DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
use crate::metrics::{self, ConnectionError};

/// Granularity of the connection clock: timeouts fire up to this much late.
const CLOCK_TICK: Duration = Duration::from_millis(250);

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

/// How many connections over the cap may be open while evicted ones finish closing (part of
/// [`FD_RESERVE`]); past it a newcomer waits for them, see [`EVICTION_WAIT`].
const EVICTION_SLACK: usize = 64;
/// How long the accept loop waits for evicted connections to close when the slack is used up,
/// before it refuses one. Their tasks were woken, so only a starved scheduler takes this long.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

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
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The default timeouts, with the cap fitted under `open_files`, the process's open-file limit:
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
            header_read_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
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

/// What a connection is doing, and since when: the phase in the top two bits of
/// [`Control::activity`], the [`Clock`] tick it began in the rest.
const PHASE_SHIFT: u32 = 62;
const TICK_MASK: u64 = (1 << PHASE_SHIFT) - 1;
/// Waiting for (the rest of) a request head: [`Limits::header_read_timeout`].
const HEAD: u64 = 0;
/// Handling a request or writing its response: [`Limits::idle_timeout`].
const BUSY: u64 = 1;
/// Between requests, kept alive: [`Limits::idle_timeout`].
const IDLE: u64 = 2;

/// One connection's shared state: written by its own task (I/O and service wrappers), read by
/// its deadline check and the eviction, signalled by the accept loop.
struct Control {
    state: AtomicU8,
    waker: AtomicWaker,
    activity: AtomicU64,
    /// Requests received; written by the connection's task only.
    requests: AtomicU64,
    /// Set once its first request head is complete: it moved to [`Order::established`].
    established: AtomicBool,
    /// Its place in the order of acceptance.
    seq: u64,
}

impl Control {
    fn new(now: u64, seq: u64) -> Control {
        Control {
            state: AtomicU8::new(RUN),
            waker: AtomicWaker::new(),
            activity: AtomicU64::new(HEAD << PHASE_SHIFT | now),
            requests: AtomicU64::new(0),
            established: AtomicBool::new(false),
            seq,
        }
    }

    /// Among established connections, the lowest is evicted first: the fewest requests, then
    /// the one idle (or in its current phase) since the earliest tick, then the oldest.
    fn eviction_rank(&self) -> (u64, u64, u64) {
        let requests = self.requests.load(Ordering::Relaxed);
        (requests, self.phase().1, self.seq)
    }

    fn signal(&self, state: u8) {
        self.state.fetch_max(state, Ordering::AcqRel);
        self.waker.wake();
    }

    #[inline]
    fn enter(&self, phase: u64, now: u64) {
        self.activity
            .store(phase << PHASE_SHIFT | now, Ordering::Relaxed);
    }

    #[inline]
    fn phase(&self) -> (u64, u64) {
        let a = self.activity.load(Ordering::Relaxed);
        (a >> PHASE_SHIFT, a & TICK_MASK)
    }
}

/// A clock read on every phase change, so it must cost no more than an atomic load: a tick
/// counter a background task advances every [`CLOCK_TICK`].
struct Clock {
    start: Instant,
    ticks: AtomicU64,
}

impl Clock {
    #[inline]
    fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    fn advance(&self) {
        let ticks = self.start.elapsed().as_millis() / CLOCK_TICK.as_millis();
        self.ticks
            .store(u64::try_from(ticks).unwrap_or(TICK_MASK), Ordering::Relaxed);
    }

    fn ticks_in(d: Duration) -> u64 {
        u64::try_from(d.as_millis().div_ceil(CLOCK_TICK.as_millis())).unwrap_or(TICK_MASK)
    }

    fn instant_of(&self, tick: u64) -> tokio::time::Instant {
        let at = self.start + CLOCK_TICK * u32::try_from(tick).unwrap_or(u32::MAX);
        tokio::time::Instant::from_std(at)
    }
}

/// The connections of one server.
struct Shared {
    limits: Limits,
    clock: Clock,
    open: AtomicUsize,
    /// Highest `open` since the last heap trim.
    peak: AtomicUsize,
    /// Notified when `open` falls to 0.
    idle: Notify,
    /// Notified when `open` falls back below the cap plus [`EVICTION_SLACK`].
    room: Notify,
    /// Connections accepted so far.
    accepted: AtomicU64,
    order: Mutex<Order>,
}

/// Every open connection, in one of two lists (plus some already closed, pruned as they grow).
/// Each connection takes the lock twice: when accepted, and when its first request head is
/// complete.
#[derive(Default)]
struct Order {
    /// Every connection in the order it was accepted; those since established are skipped.
    accepted: VecDeque<Weak<Control>>,
    /// Connections that sent a complete request. Strong references, so the eviction's scan reads
    /// each with plain loads; one whose task ended is the only holder of its `Control`.
    established: Vec<Arc<Control>>,
}

impl Shared {
    fn order(&self) -> std::sync::MutexGuard<'_, Order> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes one open connection to make room for a new one: the oldest that has not sent a
    /// complete request head (a half-sent request, a connection opened and never used: what a
    /// flood is made of); if there is none, the established one with the lowest
    /// [`Control::eviction_rank`], so a client that keeps asking on one connection is the last
    /// to go. The first costs O(1) amortised; the second a scan of the established connections,
    /// at most the cap. An evicted connection leaves the lists at once, so every live entry is
    /// not closing yet.
    fn evict(&self) {
        let mut order = self.order();
        while let Some(weak) = order.accepted.pop_front() {
            if let Some(control) = weak.upgrade()
                && !control.established.load(Ordering::Acquire)
            {
                evicted(&control);
                return;
            }
        }
        // (One evicted before its first request head was complete may have been added since.)
        order
            .established
            .retain(|c| Arc::strong_count(c) > 1 && c.state.load(Ordering::Acquire) != CLOSE);
        let victim = order
            .established
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.eviction_rank())
            .map(|(i, _)| i);
        if let Some(i) = victim {
            evicted(&order.established.swap_remove(i));
        }
    }

    fn register(&self, control: &Arc<Control>) {
        let open = self.open.load(Ordering::Relaxed);
        let mut order = self.order();
        order.accepted.push_back(Arc::downgrade(control));
        if prune_due(order.accepted.len(), open) {
            order.accepted.retain(|w| {
                w.upgrade()
                    .is_some_and(|c| !c.established.load(Ordering::Acquire))
            });
            let keep = order.accepted.len() * 2;
            order.accepted.shrink_to(keep);
        }
    }

    /// Moves `control` to the established connections, once its first request head is complete.
    fn establish(&self, control: &Arc<Control>) {
        let open = self.open.load(Ordering::Relaxed);
        let mut order = self.order();
        control.established.store(true, Ordering::Release);
        order.established.push(control.clone());
        if prune_due(order.established.len(), open) {
            order.established.retain(|c| Arc::strong_count(c) > 1);
            let keep = order.established.len() * 2;
            order.established.shrink_to(keep);
        }
    }

    fn signal_all(&self, state: u8) {
        let order = self.order();
        for control in order.accepted.iter().filter_map(Weak::upgrade) {
            control.signal(state);
        }
        for control in &order.established {
            control.signal(state);
        }
    }

    /// Above this many open, a new connection waits for evicted ones to close.
    fn admission_ceiling(&self) -> usize {
        self.limits.max_connections + EVICTION_SLACK
    }

    /// Waits until fewer than [`Shared::admission_ceiling`] are open, or `limit` has passed.
    async fn wait_room(&self, limit: Duration) {
        if self.open.load(Ordering::Acquire) < self.admission_ceiling() {
            return; // The common case, without touching the timer or the waiter list.
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.room.notified();
            let mut notified = pin!(notified);
            // Registered before the check, so a close in between still wakes us.
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) < self.admission_ceiling() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
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

    /// When the connection in `control`'s phase times out, as a clock tick.
    fn deadline(&self, control: &Control) -> u64 {
        let (phase, since) = control.phase();
        let limit = if phase == HEAD {
            self.limits.header_read_timeout
        } else {
            self.limits.idle_timeout
        };
        since.saturating_add(Clock::ticks_in(limit))
    }
}

fn evicted(control: &Control) {
    control.signal(CLOSE);
    metrics::CONNECTIONS_EVICTED_TOTAL.inc();
}

/// Amortised O(1) upkeep of [`Order`]'s lists: prune closed entries once they outnumber open
/// ones (plus some slack, so a small server never bothers).
fn prune_due(len: usize, open: usize) -> bool {
    len > 2 * open + 64
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
        if left + 1 == self.0.admission_ceiling() {
            self.0.room.notify_waiters();
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

/// The socket, recording the connection's phase: bytes in while idle start a request head,
/// bytes out end a request.
struct TrackedStream {
    io: TcpStream,
    control: Arc<Control>,
    shared: Arc<Shared>,
}

impl AsyncRead for TrackedStream {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before && this.control.phase().0 == IDLE {
            this.control.enter(HEAD, this.shared.clock.now());
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(&polled);
        polled
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl TrackedStream {
    #[inline]
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled
            && *n > 0
        {
            // Responses here are small and written whole: any progress means the next thing
            // expected is a new request.
            self.control.enter(IDLE, self.shared.clock.now());
        }
    }
}

/// The service, recording that a complete request head arrived.
struct TrackedService<S> {
    inner: S,
    control: Arc<Control>,
    shared: Arc<Shared>,
}

impl<S> hyper::service::Service<Request<Incoming>> for TrackedService<S>
where
    S: hyper::service::Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn call(&self, req: Request<Incoming>) -> S::Future {
        self.control.enter(BUSY, self.shared.clock.now());
        // Only this connection's task writes the count: no read-modify-write needed.
        let requests = self.control.requests.load(Ordering::Relaxed);
        self.control
            .requests
            .store(requests.saturating_add(1), Ordering::Relaxed);
        if requests == 0 {
            self.shared.establish(&self.control);
        }
        self.inner.call(req)
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
        limits,
        clock: Clock {
            start: Instant::now(),
            ticks: AtomicU64::new(0),
        },
        open: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        idle: Notify::new(),
        room: Notify::new(),
        accepted: AtomicU64::new(0),
        order: Mutex::new(Order::default()),
    });
    let ticker = {
        let shared = shared.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut every = tokio::time::interval(CLOCK_TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                shared.clock.advance();
            }
        }))
    };
    // No hyper timer: the deadlines are checked per connection, see `admit`.
    let mut builder = http1::Builder::new();
    builder.max_buf_size(MAX_REQUEST_HEAD);
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
            Ok((stream, _)) => {
                // Evicted connections close on their next poll, and until then hold their
                // descriptor: when many are on their way out, let them go first. Waiting rather
                // than refusing keeps the promise that a probe or a scrape gets in, however
                // loaded the machine; the kernel's backlog holds new arrivals meanwhile.
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = shared.wait_room(EVICTION_WAIT) => {}
                }
                admit(&shared, &builder, stream, service.clone());
            }
            Err(e) => accept_failed(&e, &mut last_warning).await,
        }
    }
    drop(listener);
    shared.signal_all(DRAIN);
    shared.wait_idle().await;
    drop(ticker);
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn admit<S>(shared: &Arc<Shared>, builder: &Arc<http1::Builder>, stream: TcpStream, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let open = shared.open.load(Ordering::Acquire);
    if open >= shared.limits.max_connections {
        if open >= shared.admission_ceiling() {
            // Only if evicted connections did not close within `EVICTION_WAIT` (see `serve`).
            debug!(target: "warpwatch::connections", "refusing a connection: {open} still open");
            metrics::CONNECTIONS_REFUSED_TOTAL.inc();
            return;
        }
        shared.evict();
    }
    let open = shared.open.fetch_add(1, Ordering::AcqRel) + 1;
    shared.peak.fetch_max(open, Ordering::Relaxed);
    metrics::CONNECTIONS_OPEN.inc();
    let guard = OpenGuard(shared.clone());
    let seq = shared.accepted.fetch_add(1, Ordering::Relaxed);
    let control = Arc::new(Control::new(shared.clock.now(), seq));
    shared.register(&control);
    let io = TrackedStream {
        io: stream,
        control: control.clone(),
        shared: shared.clone(),
    };
    let service = TrackedService {
        inner: service,
        control: control.clone(),
        shared: shared.clone(),
    };
    let builder = builder.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let mut conn = pin!(conn);
        // One timer per connection, re-armed only when it fires: cheaper than a timer per
        // request, which is what hyper's own header-read timeout costs.
        let mut deadline = shared.deadline(&control);
        let timer = tokio::time::sleep_until(shared.clock.instant_of(deadline));
        let mut timer = pin!(timer);
        let mut draining = false;
        let mut first = true;
        let result = poll_fn(|cx| {
            // The waker of a spawned tokio task wakes that task for as long as it lives, so
            // registering it once (and the timer's on each re-arm) is enough; doing it on every
            // wake-up cost a few atomic operations per request.
            let state = control.state.load(Ordering::Acquire);
            if first || state != RUN {
                // (Again after a signal: waking consumed the registration.)
                control.waker.register(cx.waker());
            }
            if first {
                first = false;
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Closed::TimedOut));
                }
            }
            match state {
                CLOSE => return Poll::Ready(Ok(())),
                // Stopping: a connection still waiting for a request head has nothing in flight
                // (hyper would wait for the rest of a half-sent one); the others finish the
                // request they are on.
                DRAIN if control.phase().0 == HEAD => return Poll::Ready(Ok(())),
                DRAIN if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ => {}
            }
            // Invariant between polls: `deadline` <= the current phase's deadline. A phase that
            // moved it later is noticed when the timer fires; one that moved it earlier (a
            // request head begun on an idle connection) re-arms the timer at once.
            while timer.is_elapsed() {
                let due = shared.deadline(&control);
                if due <= deadline {
                    return Poll::Ready(Err(Closed::TimedOut));
                }
                deadline = due;
                timer.as_mut().reset(shared.clock.instant_of(deadline));
                let _ = timer.as_mut().poll(cx);
            }
            let polled = conn.as_mut().poll(cx);
            if polled.is_pending() {
                let due = shared.deadline(&control);
                if due < deadline {
                    deadline = due;
                    timer.as_mut().reset(shared.clock.instant_of(deadline));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(Closed::TimedOut));
                    }
                }
            }
            polled.map_err(Closed::Hyper)
        })
        .await;
        let kind = match &result {
            Ok(()) => return,
            // An idle keep-alive connection closed on time is the normal end of one.
            Err(Closed::TimedOut) if control.phase().0 == IDLE => return,
            Err(Closed::TimedOut) => ConnectionError::Timeout,
            Err(Closed::Hyper(e)) => classify(e),
        };
        metrics::connection_error(kind).inc();
        match result {
            Err(Closed::Hyper(e)) => debug!(
                target: "warpwatch::connections",
                "client connection error ({}): {e}",
                kind.label()
            ),
            _ => debug!(target: "warpwatch::connections", "client connection timed out"),
        }
    });
}

enum Closed {
    TimedOut,
    Hyper(hyper::Error),
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
