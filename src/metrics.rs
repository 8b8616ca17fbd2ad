//! Prometheus metrics: definitions, the registry, and the request-path recording.
//!
//! Label cardinality is bounded by construction: `path` is one of the [`Route`] labels, `method` one
//! of [`Method`]'s ten values, `status` a code this service itself produced. The per-request
//! series handles are resolved once and cached in fixed tables, so recording a request costs a
//! few atomic operations: no label hashing, no allocation, no formatting.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lazy_static::lazy_static;
use prometheus::core::{Collector, Desc, Metric};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use warp::http::StatusCode;

use crate::labels::{Method, Route};

/// `Content-Type` of the exposition (text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request-duration buckets in seconds, with their `le` label text: this service answers in tens
/// of microseconds, so the low end resolves 50 µs steps; the high end still separates slow
/// outliers up to 10 s. The label text is written once here rather than formatted per scrape.
const DURATION_BUCKETS: [(f64, &str); 16] = [
    (0.00005, "0.00005"),
    (0.0001, "0.0001"),
    (0.00025, "0.00025"),
    (0.0005, "0.0005"),
    (0.001, "0.001"),
    (0.0025, "0.0025"),
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (10.0, "10"),
];

const REQUESTS_NAME: &str = "http_requests_total";
const REQUESTS_HELP: &str = "HTTP requests answered, by method, matched route and status.";
const DURATION_NAME: &str = "http_request_duration_seconds";
const DURATION_HELP: &str =
    "Time from routing a request to its response being ready, by method and matched route.";

/// How long collected `process_*` values are reused. Reading /proc costs more than the rest of a
/// scrape; no scraper needs them fresher than this.
const PROCESS_CACHE: Duration = Duration::from_secs(1);

lazy_static! {
    /// The one registry `/metrics` exposes.
    pub static ref REGISTRY: Registry = Registry::new();

    // The two request families are series factories only: they are not in REGISTRY because
    // `render` writes them itself from the series table (see `encode_requests`).
    static ref HTTP_REQUESTS_TOTAL: IntCounterVec = IntCounterVec::new(
        Opts::new(REQUESTS_NAME, REQUESTS_HELP),
        &["method", "path", "status"],
    )
    .expect("metric definitions are valid");
    static ref HTTP_REQUEST_DURATION_SECONDS: HistogramVec = HistogramVec::new(
        HistogramOpts::new(DURATION_NAME, DURATION_HELP)
            .buckets(DURATION_BUCKETS.iter().map(|(b, _)| *b).collect()),
        &["method", "path"],
    )
    .expect("metric definitions are valid");
    pub static ref HTTP_REQUESTS_IN_FLIGHT: IntGauge = register(IntGauge::new(
        "http_requests_in_flight",
        "HTTP requests being handled right now.",
    ));
    pub static ref VISITS_TOTAL: IntCounter = register(IntCounter::new(
        "warpwatch_visits_total",
        "Visits counted by GET /, including those persisted by earlier runs.",
    ));
    pub static ref VISITS_FLUSH_FAILURES_TOTAL: IntCounter = register(IntCounter::new(
        "warpwatch_visits_flush_failures_total",
        "Failed attempts to write the visits file (each is retried).",
    ));
    pub static ref READY: IntGauge = register(IntGauge::new(
        "warpwatch_ready",
        "1 while /readyz answers 200, else 0.",
    ));
    pub static ref CONNECTIONS_OPEN: IntGauge = register(IntGauge::new(
        "warpwatch_connections_open",
        "Client connections open right now.",
    ));
    pub static ref CONNECTIONS_MAX: IntGauge = register(IntGauge::new(
        "warpwatch_connections_max",
        "The cap on open client connections (derived from the open-file limit).",
    ));
    pub static ref CONNECTIONS_EVICTED_TOTAL: IntCounter = register(IntCounter::new(
        "warpwatch_connections_evicted_total",
        "Connections closed to make room for a new one while at the cap (those that never sent a complete request first).",
    ));
    pub static ref CONNECTIONS_REFUSED_TOTAL: IntCounter = register(IntCounter::new(
        "warpwatch_connections_refused_total",
        "Connections closed unanswered at the cap because evicted ones had not closed in time (a starved machine).",
    ));
    static ref CONNECTION_ERRORS_TOTAL: IntCounterVec = register(IntCounterVec::new(
        Opts::new(
            "warpwatch_connection_errors_total",
            "Client connections that ended in an error, by kind (see ConnectionError).",
        ),
        &["kind"],
    ));
    static ref BUILD_INFO: IntGaugeVec = register(IntGaugeVec::new(
        Opts::new("warpwatch_build_info", "Build information; the value is always 1."),
        &["version", "profile"],
    ));
}

fn register<C: Collector + Clone + 'static>(collector: prometheus::Result<C>) -> C {
    let collector = collector.expect("metric definitions are valid");
    REGISTRY
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

/// Registers everything that is not created lazily on first use: build info, the process
/// collector, and the common request series (so they exist at 0 before the first request and
/// `rate()` sees the first one). Idempotent.
pub fn init() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        BUILD_INFO
            .with_label_values(&[crate::VERSION, profile])
            .set(1);
        #[cfg(target_os = "linux")]
        REGISTRY
            .register(Box::new(Cached::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            )))
            .expect("process metrics are registered once");
        for route in Route::ALL {
            let status = match route {
                Route::Other => StatusCode::NOT_FOUND,
                _ => StatusCode::OK,
            };
            series(route, Method::Get).add(status, 0);
        }
        lazy_static::initialize(&HTTP_REQUESTS_IN_FLIGHT);
        lazy_static::initialize(&VISITS_TOTAL);
        lazy_static::initialize(&VISITS_FLUSH_FAILURES_TOTAL);
        lazy_static::initialize(&READY);
        lazy_static::initialize(&CONNECTIONS_OPEN);
        lazy_static::initialize(&CONNECTIONS_MAX);
        lazy_static::initialize(&CONNECTIONS_EVICTED_TOTAL);
        lazy_static::initialize(&CONNECTIONS_REFUSED_TOTAL);
        for kind in ConnectionError::ALL {
            connection_error(kind).inc_by(0);
        }
    });
}

/// Why a client connection ended badly: the `kind` label of `warpwatch_connection_errors_total`.
/// These are the clients' doing, so they are counted, not logged above debug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionError {
    /// Not HTTP/1.x, or a request head over a limit (hyper answered 400 or 431 when it could).
    Malformed,
    /// No complete request head within the header-read timeout (a half-sent request).
    Timeout,
    /// Closed or reset by the client in the middle of a request or response.
    Aborted,
    /// Anything else hyper or the socket reported.
    Other,
}

impl ConnectionError {
    pub const ALL: [ConnectionError; 4] = [
        ConnectionError::Malformed,
        ConnectionError::Timeout,
        ConnectionError::Aborted,
        ConnectionError::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionError::Malformed => "malformed",
            ConnectionError::Timeout => "timeout",
            ConnectionError::Aborted => "aborted",
            ConnectionError::Other => "other",
        }
    }
}

/// The counter of `kind`, resolved once per kind.
pub fn connection_error(kind: ConnectionError) -> &'static IntCounter {
    static SLOTS: [OnceLock<IntCounter>; ConnectionError::ALL.len()] =
        [const { OnceLock::new() }; ConnectionError::ALL.len()];
    SLOTS[kind as usize].get_or_init(|| CONNECTION_ERRORS_TOTAL.with_label_values(&[kind.label()]))
}

/// Status codes this service answers with; each gets a cached counter slot.
const CACHED_STATUSES: [StatusCode; 5] = [
    StatusCode::OK,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// The series of one (route, method) pair.
struct Series {
    route: Route,
    method: Method,
    duration: Histogram,
    requests: [OnceLock<IntCounter>; CACHED_STATUSES.len()],
    /// Statuses outside [`CACHED_STATUSES`]; this service's handlers produce none today.
    others: Mutex<Vec<(StatusCode, IntCounter)>>,
}

impl Series {
    fn new(route: Route, method: Method) -> Series {
        Series {
            route,
            method,
            duration: HTTP_REQUEST_DURATION_SECONDS
                .with_label_values(&[method.label(), route.label()]),
            requests: [const { OnceLock::new() }; CACHED_STATUSES.len()],
            others: Mutex::new(Vec::new()),
        }
    }

    /// Adds `n` to the request counter of `status` (0 just creates the series).
    #[inline]
    fn add(&self, status: StatusCode, n: u64) {
        match CACHED_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.requests[i]
                .get_or_init(|| self.lookup(status))
                .inc_by(n),
            None => self.add_uncached(status, n),
        }
    }

    /// The slow path for a status outside [`CACHED_STATUSES`].
    #[cold]
    fn add_uncached(&self, status: StatusCode, n: u64) {
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        match others.iter().find(|(s, _)| *s == status) {
            Some((_, c)) => c.inc_by(n),
            None => {
                let c = self.lookup(status);
                c.inc_by(n);
                others.push((status, c));
            }
        }
    }

    fn lookup(&self, status: StatusCode) -> IntCounter {
        HTTP_REQUESTS_TOTAL.with_label_values(&[
            self.method.label(),
            self.route.label(),
            status.as_str(),
        ])
    }
}

static SERIES: [[OnceLock<Series>; Method::COUNT]; Route::COUNT] =
    [const { [const { OnceLock::new() }; Method::COUNT] }; Route::COUNT];

#[inline]
fn series(route: Route, method: Method) -> &'static Series {
    SERIES[route as usize][method as usize].get_or_init(|| Series::new(route, method))
}

/// Counts a request in flight from creation until drop, and remembers when it started. Dropping
/// covers every exit, including a client that disconnects mid-request.
pub struct InFlight {
    started: Instant,
}

impl InFlight {
    #[inline]
    pub fn enter() -> InFlight {
        HTTP_REQUESTS_IN_FLIGHT.inc();
        InFlight {
            started: Instant::now(),
        }
    }

    #[inline]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for InFlight {
    #[inline]
    fn drop(&mut self) {
        HTTP_REQUESTS_IN_FLIGHT.dec();
    }
}

/// Records one answered request.
#[inline]
pub fn observe(route: Route, method: Method, status: StatusCode, elapsed: Duration) {
    let s = series(route, method);
    s.add(status, 1);
    s.duration.observe(elapsed.as_secs_f64());
}

/// The exposition of every metric.
pub fn render() -> Result<String, prometheus::Error> {
    // Start from the previous scrape's size so the buffer is allocated once.
    static LAST_LEN: AtomicUsize = AtomicUsize::new(8192);
    let mut out = String::with_capacity(LAST_LEN.load(Ordering::Relaxed) + 512);
    encode_requests(&mut out);
    TextEncoder::new().encode_utf8(&REGISTRY.gather(), &mut out)?;
    LAST_LEN.store(out.len(), Ordering::Relaxed);
    Ok(out)
}

/// Writes the two request families straight from the series table. The generic encoder turns
/// every count and bucket bound into a float and formats it; for these families (most of a
/// scrape) that was the largest cost of `/metrics`. Lines are assembled from fixed
/// `&'static str` pieces (no escaping needed) and integers, without `fmt` machinery.
fn encode_requests(out: &mut String) {
    let live = || {
        SERIES
            .iter()
            .flat_map(|row| row.iter())
            .filter_map(OnceLock::get)
    };
    header(out, REQUESTS_NAME, REQUESTS_HELP, "counter");
    for s in live() {
        let (m, p) = (s.method.label(), s.route.label());
        let mut counter = |status: StatusCode, value: u64| {
            sample(
                out,
                &[
                    REQUESTS_NAME,
                    "{method=\"",
                    m,
                    "\",path=\"",
                    p,
                    "\",status=\"",
                    status.as_str(),
                    "\"} ",
                ],
                value,
            );
        };
        for (status, slot) in CACHED_STATUSES.iter().zip(&s.requests) {
            if let Some(c) = slot.get() {
                counter(*status, c.get());
            }
        }
        for (status, c) in s.others.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            counter(*status, c.get());
        }
    }
    header(out, DURATION_NAME, DURATION_HELP, "histogram");
    for s in live() {
        let (m, p) = (s.method.label(), s.route.label());
        // One snapshot: buckets, count and sum agree with each other.
        let metric = s.duration.metric();
        let h = metric.get_histogram();
        let bucket = |out: &mut String, le: &str, value: u64| {
            sample(
                out,
                &[
                    DURATION_NAME,
                    "_bucket{method=\"",
                    m,
                    "\",path=\"",
                    p,
                    "\",le=\"",
                    le,
                    "\"} ",
                ],
                value,
            );
        };
        for (b, (_, le)) in h.get_bucket().iter().zip(DURATION_BUCKETS.iter()) {
            bucket(out, le, b.cumulative_count());
        }
        let count = h.get_sample_count();
        bucket(out, "+Inf", count);
        for piece in [DURATION_NAME, "_sum{method=\"", m, "\",path=\"", p, "\"} "] {
            out.push_str(piece);
        }
        let _ = writeln!(out, "{}", h.get_sample_sum());
        sample(
            out,
            &[
                DURATION_NAME,
                "_count{method=\"",
                m,
                "\",path=\"",
                p,
                "\"} ",
            ],
            count,
        );
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    for piece in [
        "# HELP ",
        name,
        " ",
        help,
        "\n# TYPE ",
        name,
        " ",
        kind,
        "\n",
    ] {
        out.push_str(piece);
    }
}

/// Appends `pieces`, `value` in decimal, and a newline.
fn sample(out: &mut String, pieces: &[&str], value: u64) {
    for piece in pieces {
        out.push_str(piece);
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = value;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
    out.push('\n');
}

/// Reuses a collector's output for [`PROCESS_CACHE`].
#[cfg(target_os = "linux")]
struct Cached<C> {
    inner: C,
    last: Mutex<Option<(Instant, Vec<MetricFamily>)>>,
}

#[cfg(target_os = "linux")]
impl<C: Collector> Cached<C> {
    fn new(inner: C) -> Self {
        Cached {
            inner,
            last: Mutex::new(None),
        }
    }
}

#[cfg(target_os = "linux")]
impl<C: Collector> Collector for Cached<C> {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((at, families)) if at.elapsed() < PROCESS_CACHE => families.clone(),
            _ => {
                let mut families = self.inner.collect();
                fractional_cpu(&mut families);
                *last = Some((Instant::now(), families.clone()));
                families
            }
        }
    }
}

#[cfg(target_os = "linux")]
const CPU_NAME: &str = "process_cpu_seconds_total";

/// Replaces the process collector's `process_cpu_seconds_total`, which divides clock ticks by the
/// tick rate in integers (so `rate()` over it is 0 most of the time), with the exact quotient, as
/// other exporters give it. Left as it is if `/proc/self/stat` cannot be read.
#[cfg(target_os = "linux")]
fn fractional_cpu(families: &mut [MetricFamily]) {
    let Some(seconds) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| cpu_seconds(&stat))
    else {
        return;
    };
    for family in families.iter_mut().filter(|f| f.name() == CPU_NAME) {
        for metric in family.mut_metric() {
            let mut counter = prometheus::proto::Counter::default();
            counter.set_value(seconds);
            metric.set_counter(counter);
        }
    }
}

/// User plus system CPU time in seconds from the text of `/proc/PID/stat` (fields 14 and 15, in
/// clock ticks). The command name (field 2) may hold spaces and parentheses: fields are counted
/// from the last `)`.
#[cfg(target_os = "linux")]
fn cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` begins at field 3 (the state).
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // (-1 on error.)
    let ticks = std::num::NonZeroU64::new(u64::try_from(ticks).ok()?)?;
    Some((utime + stime) as f64 / ticks.get() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_labels_spell_their_bounds() {
        for (bound, label) in DURATION_BUCKETS {
            assert_eq!(label.parse::<f64>().unwrap(), bound, "{label}");
        }
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_seconds_count_fields_from_the_last_parenthesis() {
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(cpu_seconds(stat), Some(10.0 / hz));
        assert_eq!(cpu_seconds("42 (x) S 1 2"), None);
    }

    #[test]
    fn samples_print_integers() {
        let mut out = String::new();
        for v in [0, 7, 10, 1234567890, u64::MAX] {
            sample(&mut out, &["x{a=\"b\"} "], v);
        }
        assert_eq!(
            out,
            "x{a=\"b\"} 0\nx{a=\"b\"} 7\nx{a=\"b\"} 10\nx{a=\"b\"} 1234567890\nx{a=\"b\"} 18446744073709551615\n"
        );
    }
}
