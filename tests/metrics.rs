//! The exposition after known request sequences, parsed; and bounded label cardinality.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::exposition::Exposition;
use common::http::{self, Conn};
use common::{Service, TempDir};

fn scrape(svc: &Service) -> Exposition {
    let r = http::get(svc.addr, "/metrics");
    assert_eq!(r.status, 200);
    Exposition::parse(&r.body)
}

#[test]
fn values_follow_a_known_request_sequence() {
    let dir = TempDir::new("metrics");
    let svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("/").unwrap().status, 200);
    }
    for _ in 0..2 {
        conn.get("/visits").unwrap();
    }
    for p in ["/nope", "/a/b", "/healthz/", "/metrics.php"] {
        assert_eq!(conn.get(p).unwrap().status, 404);
    }
    assert_eq!(
        conn.send("POST", "/visits", &[("Content-Length", "0")], false)
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        conn.send("HEAD", "/healthz", &[], false).unwrap().status,
        200
    );
    assert_eq!(
        conn.send("BREW", "/healthz", &[], false).unwrap().status,
        405
    );
    // Every standard method keeps its own label; only extension methods share OTHER.
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
        let r = conn.send(method, "/visits", &[], false).unwrap();
        assert_eq!(r.status, 405, "{method}");
    }
    conn.get("/readyz").unwrap();

    let m = scrape(&svc);
    let requests = |method: &str, path: &str, status: &str| {
        m.value(
            "http_requests_total",
            &[("method", method), ("path", path), ("status", status)],
        )
    };
    assert_eq!(m.types["http_requests_total"], "counter");
    assert_eq!(m.types["http_request_duration_seconds"], "histogram");
    assert_eq!(m.types["http_requests_in_flight"], "gauge");
    assert_eq!(m.types["warpwatch_visits_total"], "counter");
    for family in m.types.keys() {
        assert!(
            m.helps.get(family).is_some_and(|h| !h.is_empty()),
            "{family} has no HELP"
        );
    }
    assert_eq!(requests("GET", "/", "200"), Some(3.0));
    assert_eq!(requests("GET", "/visits", "200"), Some(2.0));
    assert_eq!(requests("GET", "other", "404"), Some(4.0));
    assert_eq!(requests("POST", "/visits", "405"), Some(1.0));
    assert_eq!(requests("HEAD", "/healthz", "200"), Some(1.0));
    assert_eq!(requests("OTHER", "/healthz", "405"), Some(1.0));
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
        assert_eq!(requests(method, "/visits", "405"), Some(1.0), "{method}");
    }
    assert_eq!(requests("GET", "/readyz", "200"), Some(1.0));
    // Pre-created so rate() sees the first request; nothing has hit them yet.
    assert_eq!(requests("GET", "/healthz", "200"), Some(0.0));
    // The scrape in progress is the only request in flight, and is counted only once it is done.
    assert_eq!(m.value("http_requests_in_flight", &[]), Some(1.0));
    assert_eq!(requests("GET", "/metrics", "200"), Some(0.0));
    assert_eq!(m.value("warpwatch_visits_total", &[]), Some(3.0));
    assert_eq!(m.value("warpwatch_ready", &[]), Some(1.0));
    let build = m.find(
        "warpwatch_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].value, 1.0);
    let process = |name: &str| {
        m.value(name, &[])
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    // Values only the real process can have: resident memory, a listening socket, started just now.
    assert!(process("process_resident_memory_bytes") > 1e6);
    assert!(process("process_cpu_seconds_total") >= 0.0);
    assert!(process("process_open_fds") >= 1.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = process("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && now - started < 120.0,
        "started at {started}, now {now}"
    );

    // One histogram per (method, route) seen above, plus the GET series created at startup.
    let histograms = m.find("http_request_duration_seconds_count", &[]);
    let pairs: BTreeSet<(&str, &str)> = histograms
        .iter()
        .map(|h| (h.labels["method"].as_str(), h.labels["path"].as_str()))
        .collect();
    let expected: BTreeSet<(&str, &str)> = [
        ("GET", "/"),
        ("GET", "/visits"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "other"),
        ("POST", "/visits"),
        ("HEAD", "/healthz"),
        ("OTHER", "/healthz"),
        ("PUT", "/visits"),
        ("DELETE", "/visits"),
        ("PATCH", "/visits"),
        ("OPTIONS", "/visits"),
        ("TRACE", "/visits"),
    ]
    .into();
    assert_eq!(pairs, expected);
    // Every histogram agrees with the counters: _count is the sum over statuses, buckets are
    // cumulative and end at _count, the sum is positive when anything was observed.
    for h in histograms {
        let (method, path) = (&h.labels["method"], &h.labels["path"]);
        let counted: f64 = m
            .find("http_requests_total", &[("method", method), ("path", path)])
            .iter()
            .map(|s| s.value)
            .sum();
        assert_eq!(h.value, counted, "{method} {path}");
        let buckets = m.find(
            "http_request_duration_seconds_bucket",
            &[("method", method), ("path", path)],
        );
        let mut bounds: Vec<(f64, f64)> = buckets
            .iter()
            .map(|b| {
                (
                    b.labels["le"]
                        .replace("+Inf", "inf")
                        .parse::<f64>()
                        .unwrap(),
                    b.value,
                )
            })
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            bounds.len() >= 10,
            "{method} {path}: {} buckets",
            bounds.len()
        );
        assert!(
            bounds[0].0 <= 0.0001,
            "the first bucket must resolve sub-millisecond latencies"
        );
        assert!(
            bounds.windows(2).all(|w| w[0].1 <= w[1].1),
            "{method} {path}: not cumulative"
        );
        assert_eq!(bounds.last().unwrap(), &(f64::INFINITY, h.value));
        let sum = m
            .value(
                "http_request_duration_seconds_sum",
                &[("method", method), ("path", path)],
            )
            .unwrap();
        assert_eq!(sum > 0.0, h.value > 0.0, "{method} {path}: sum {sum}");
    }

    // The next scrape sees the previous one.
    let m2 = scrape(&svc);
    assert_eq!(
        m2.value(
            "http_requests_total",
            &[("method", "GET"), ("path", "/metrics"), ("status", "200")]
        ),
        Some(1.0)
    );
}

#[test]
fn ten_thousand_random_paths_create_no_series() {
    let svc = Service::start(None);
    // Warm every label combination the scan will use, then take the series set.
    http::get(svc.addr, "/never-seen-before");
    let before = scrape(&svc);

    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let paths: Vec<String> = (0..2500)
                .map(|i| format!("/{:x}/{w}-{i}/{:x}?q={:x}", next(), next() % 1000, next()))
                .collect();
            let addr = svc.addr;
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).unwrap();
                for p in paths {
                    assert_eq!(conn.get(&p).unwrap().status, 404, "{p}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }

    let after = scrape(&svc);
    let new: Vec<_> = after
        .series()
        .difference(&before.series())
        .cloned()
        .collect();
    assert!(
        new.is_empty(),
        "new series after scanning 10,000 paths: {new:#?}"
    );
    assert_eq!(
        after.value(
            "http_requests_total",
            &[("method", "GET"), ("path", "other"), ("status", "404")]
        ),
        Some(10_001.0)
    );
    let paths: BTreeSet<&str> = after
        .samples
        .iter()
        .filter_map(|s| s.labels.get("path").map(String::as_str))
        .collect();
    assert_eq!(
        paths,
        ["/", "/visits", "/healthz", "/readyz", "/metrics", "other"].into()
    );
}

#[test]
fn parser_accepts_valid_and_rejects_invalid_text() {
    let e = Exposition::parse(
        "# HELP a_total help text\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
         # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n",
    );
    assert_eq!(e.value("a_total", &[("x", "1"), ("y", "q\"")]), Some(3.0));
    assert_eq!(e.value("h_count", &[]), Some(2.0));
    for bad in [
        "x 1\n",
        "# TYPE x counter\nx{a=1} 1\n",
        "# TYPE x counter\nx 1\nx 2\n",
        "# TYPE x counter\nx one\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| Exposition::parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

/// The process collector reads `/proc` at most once a second, however often `/metrics` is
/// scraped (a tight scrape loop costs no extra file reads); the next scrape after a second
/// reads it afresh.
#[test]
fn process_metrics_are_read_from_proc_at_most_once_a_second() {
    let dir = TempDir::new("proc-cache");
    let svc = Service::start(None);
    let trace = common::Strace::attach(svc.pid(), "openat", &[], &dir.file("strace"));
    let started = Instant::now();
    let mut conn = Conn::open(svc.addr).unwrap();
    for _ in 0..5 {
        assert_eq!(conn.get("/metrics").unwrap().status, 200);
    }
    let burst = started.elapsed();
    std::thread::sleep(Duration::from_millis(1100));
    let m = Exposition::parse(&conn.get("/metrics").unwrap().body);
    assert!(m.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);
    let lines = trace.detach();
    let reads = lines
        .lines()
        .filter(|l| l.contains("\"limits\"") || l.contains("/limits\""))
        .count();
    assert!(burst < Duration::from_millis(900), "burst took {burst:?}");
    assert_eq!(reads, 2, "/proc/PID/limits opened {reads} times:\n{lines}");
}

/// User plus system CPU time of process `pid` in clock ticks, and the tick rate.
fn cpu_ticks(pid: i32) -> (u64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[0] + fields[1], hz)
}

/// `process_cpu_seconds_total` is the process's CPU time to the clock tick, as `/proc/PID/stat`
/// gives it, not whole seconds: after some work it is fractional, and lies between what
/// `/proc` said just before and just after the scrape that read it.
#[test]
fn process_cpu_seconds_are_fractional_and_match_proc() {
    let svc = Service::start(None);
    let mut conn = Conn::open(svc.addr).unwrap();
    let mut fractional = 0;
    for round in 0..8 {
        // Some CPU time for the service: a few tens of milliseconds of requests.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            assert_eq!(conn.get("/metrics").unwrap().status, 200);
        }
        // Past the process collector's one-second cache, so the next scrape reads /proc afresh.
        std::thread::sleep(Duration::from_millis(1100));
        let (before, hz) = cpu_ticks(svc.pid());
        let m = Exposition::parse(&conn.get("/metrics").unwrap().body);
        let (after, _) = cpu_ticks(svc.pid());
        let value = m.value("process_cpu_seconds_total", &[]).unwrap();
        let (low, high) = (before as f64 / hz, after as f64 / hz);
        assert!(
            value >= low - 1e-9 && value <= high + 1e-9,
            "round {round}: process_cpu_seconds_total {value} outside /proc's [{low}, {high}]"
        );
        if value.fract() != 0.0 {
            fractional += 1;
        }
        if fractional >= 2 {
            return;
        }
    }
    panic!(
        "process_cpu_seconds_total was fractional in {fractional} of 8 scrapes, expected 2 or more"
    );
}
