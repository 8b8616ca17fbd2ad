//! Every endpoint over real sockets: content negotiation, health, errors, and hostile input.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::exposition::Exposition;
use common::http::{self, Conn};
use common::{Service, TempDir, json_field, json_u64};

/// Seconds since the epoch for an RFC 3339 timestamp, computed by GNU date (not by our code).
fn epoch_of(timestamp: &str) -> i64 {
    let out = Command::new("date")
        .args(["-d", timestamp, "+%s"])
        .output()
        .expect("GNU date (coreutils)");
    assert!(out.status.success(), "date cannot parse {timestamp}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn index_negotiates_html_and_json_and_counts_get_only() {
    let dir = TempDir::new("index");
    let svc = Service::start(Some(dir.path()));

    let html = http::get_with(
        svc.addr,
        "/",
        &[("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
    );
    assert_eq!(html.status, 200);
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        html.headers
    );
    assert!(
        html.body.contains("<html") && html.body.contains("Moscow"),
        "{}",
        html.body
    );
    assert!(
        html.body.contains(">1<"),
        "first visit should show 1: {}",
        html.body
    );
    assert_eq!(html.header("vary"), Some("accept"));

    let json = http::get_with(svc.addr, "/", &[("Accept", "application/json")]);
    assert_eq!(json.status, 200);
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert_eq!(json_u64(&json.body, "visits"), 2);
    let time = json_field(&json.body, "time");
    assert!(time.ends_with("+03:00"), "Moscow offset expected: {time}");
    assert!(
        (epoch_of(&time) - now_epoch()).abs() <= 5,
        "{time} is not now"
    );

    // No Accept header at all: HTML, the browser default.
    let plain = http::get(svc.addr, "/");
    assert!(
        plain
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );

    // HEAD has no side effects.
    let head = http::request(svc.addr, "HEAD", "/", &[]).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(json_u64(&http::get(svc.addr, "/visits").body, "visits"), 3);

    // RFC 9110 §12.5.1: each type takes the quality of the most specific range matching it.
    for (accept, wants_json) in [
        // */* gives text/html quality 1.
        ("application/json;q=0.5, */*", false),
        // application/xml is not application/json: JSON has quality 0 here.
        ("application/xml, text/html;q=0.5", false),
        ("text/html;q=0.4, application/*;q=0.6", true),
        ("*/*;q=0.1, application/json", true),
        // A type listed twice: the first counts.
        (
            "application/json;q=0.9, application/json;q=0.1, text/html;q=0.5",
            true,
        ),
        (
            "application/json;q=0.1, application/json;q=0.9, text/html;q=0.5",
            false,
        ),
    ] {
        let r = http::get_with(svc.addr, "/", &[("Accept", accept)]);
        let json = r.header("content-type") == Some("application/json");
        assert_eq!(json, wants_json, "Accept: {accept}: {:?}", r.headers);
    }
}

#[test]
fn visits_health_and_readiness() {
    let dir = TempDir::new("health");
    let svc = Service::start(Some(dir.path()));

    let visits = http::get(svc.addr, "/visits");
    assert_eq!(visits.status, 200);
    assert_eq!(visits.header("content-type"), Some("application/json"));
    assert_eq!(json_u64(&visits.body, "visits"), 0);
    http::get(svc.addr, "/");
    assert_eq!(json_u64(&http::get(svc.addr, "/visits").body, "visits"), 1);

    let health = http::get(svc.addr, "/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.body, warpwatch::HEALTHZ_BODY);
    assert_eq!(
        health.header("content-type"),
        Some(warpwatch::HEALTHZ_CONTENT_TYPE)
    );

    let ready = http::get(svc.addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(json_field(&ready.body, "status"), "ready");

    let metrics = http::get(svc.addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
}

#[test]
fn unknown_paths_and_wrong_methods_get_small_json_errors() {
    let svc = Service::start(None);

    let missing = http::get(svc.addr, "/wp-login.php?x=1");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(json_field(&missing.body, "error"), "not found");

    for (method, path) in [
        ("POST", "/"),
        ("DELETE", "/visits"),
        ("PUT", "/healthz"),
        ("PROPFIND", "/metrics"),
    ] {
        let r = http::request(svc.addr, method, path, &[("Content-Length", "0")]).unwrap();
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(json_field(&r.body, "error"), "method not allowed");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    // A POST to / is not a visit.
    assert_eq!(json_u64(&http::get(svc.addr, "/visits").body, "visits"), 0);
}

#[test]
fn hostile_input_never_takes_the_process_down() {
    let mut svc = Service::start(None);
    let garbage: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n".to_vec(),
        b"GET /\x7f HTTP/1.1\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
        // 1 MiB of header: far over any limit.
        [
            b"GET / HTTP/1.1\r\nX-Big: ".to_vec(),
            vec![b'a'; 1 << 20],
            b"\r\n\r\n".to_vec(),
        ]
        .concat(),
        // Half a request, then hang up.
        b"GET /healthz HTTP/1.1\r\nHost:".to_vec(),
    ];
    for bytes in &garbage {
        let mut s = TcpStream::connect(svc.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        if !answer.is_empty() {
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 4"), "hostile input got {text:?}");
        }
    }
    // Many connections opened and dropped without a byte.
    for _ in 0..50 {
        drop(TcpStream::connect(svc.addr).unwrap());
    }
    let mut conn = Conn::open(svc.addr).unwrap();
    assert_eq!(conn.get("/healthz").unwrap().status, 200);
    drop(conn);
    // Every malformed or aborted connection is counted, by kind.
    let m = Exposition::parse(&http::get(svc.addr, "/metrics").body);
    let errors = |kind| {
        m.value("warpwatch_connection_errors_total", &[("kind", kind)])
            .unwrap_or_else(|| panic!("no warpwatch_connection_errors_total{{kind={kind:?}}}"))
    };
    assert!(
        errors("malformed") >= 5.0,
        "malformed: {}",
        errors("malformed")
    );
    assert!(errors("aborted") >= 1.0, "aborted: {}", errors("aborted"));
    // Still healthy enough to stop cleanly, and nothing panicked on the way.
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
    let logs = svc.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    // Client mistakes are not operator errors: no ERROR or WARN line came from them.
    let loud: Vec<&str> = logs
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            (l.starts_with("ERROR") || l.starts_with("WARN")) && !l.contains("no data directory")
        })
        .collect();
    assert!(
        loud.is_empty(),
        "clients wrote operator-level lines: {loud:?}"
    );
}

/// Sends `head` as-is on a fresh connection; returns the status code of the answer.
fn raw_status(addr: std::net::SocketAddr, head: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {head:?}: {text:?}"))
}

/// RFC 9112 §3.2: origin-form, absolute-form, authority-form (CONNECT) and asterisk-form
/// (OPTIONS *) request targets all get an answer, and each is counted with bounded labels.
#[test]
fn every_request_target_form_is_answered_and_counted() {
    let mut svc = Service::start(None);
    let forms = [
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            200,
            "GET",
            "/healthz",
        ),
        (
            "GET http://x/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            200,
            "GET",
            "/healthz",
        ),
        (
            "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\nConnection: close\r\n\r\n",
            404,
            "CONNECT",
            "other",
        ),
        (
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nConnection: close\r\n\r\n",
            404,
            "CONNECT",
            "other",
        ),
        (
            "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            404,
            "OPTIONS",
            "other",
        ),
    ];
    for (head, status, _, _) in &forms {
        assert_eq!(raw_status(svc.addr, head), *status, "{head:?}");
    }
    let m = Exposition::parse(&http::get(svc.addr, "/metrics").body);
    let count = |method: &str, path: &str, status: &str| {
        m.value(
            "http_requests_total",
            &[("method", method), ("path", path), ("status", status)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("GET", "/healthz", "200"), 2.0);
    assert_eq!(count("CONNECT", "other", "404"), 2.0);
    assert_eq!(count("OPTIONS", "other", "404"), 1.0);
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
    assert!(!svc.logs().contains("panicked"), "{}", svc.logs());
}

#[test]
fn logs_are_plain_leveled_lines_with_access_log_at_debug() {
    let mut svc = Service::start(None);
    http::get(svc.addr, "/healthz");
    http::get(svc.addr, "/nope");
    assert_eq!(svc.stop().code(), Some(0));
    let logs = svc.logs();
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in non-terminal logs: {logs:?}"
    );
    let startup = logs.lines().find(|l| l.contains("listening on")).unwrap();
    assert!(startup.trim_start().starts_with("INFO"), "{startup}");
    assert!(
        startup.contains(&format!("warpwatch {}", env!("CARGO_PKG_VERSION"))),
        "{startup}"
    );
    assert!(
        startup.contains("data dir") && startup.contains("log: info"),
        "{startup}"
    );
    assert!(
        !logs.contains("GET /healthz"),
        "access lines must be off at info: {logs}"
    );

    let args = ["--addr".to_owned(), "127.0.0.1:0".to_owned()];
    let svc = Service::start_with(&args, &[("RUST_LOG", "info,warpwatch::access=debug")]);
    http::get(svc.addr, "/healthz");
    assert!(
        common::eventually(Duration::from_secs(2), || svc
            .logs()
            .lines()
            .any(
                |l| l.trim_start().starts_with("DEBUG") && l.contains("GET /healthz 200")
            )),
        "{}",
        svc.logs()
    );
}

/// A slow request is logged at warn, at the default log level, with its timing; fast ones are
/// not. The slowness is real: strace delays the `/proc` reads of the process collector, which
/// happen inside the `/metrics` handler.
#[test]
fn slow_requests_are_logged_at_warn() {
    let dir = TempDir::new("slow");
    let mut svc = Service::start(None);
    let trace = common::Strace::attach(
        svc.pid(),
        "openat",
        &["-e", "inject=openat:delay_enter=300000"],
        &dir.file("strace"),
    );
    let t = std::time::Instant::now();
    assert_eq!(http::get(svc.addr, "/metrics").status, 200);
    let took = t.elapsed();
    drop(trace);
    assert_eq!(http::get(svc.addr, "/healthz").status, 200);
    assert_eq!(svc.stop().code(), Some(0));
    let logs = svc.logs();
    let slow: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("GET /metrics 200 in"))
        .collect();
    assert!(took >= Duration::from_millis(500), "not slowed: {took:?}");
    assert_eq!(slow.len(), 1, "{logs}");
    assert!(
        slow[0].trim_start().starts_with("WARN") && slow[0].contains("warpwatch::access"),
        "{}",
        slow[0]
    );
    let ms: f64 = slow[0]
        .rsplit(" in ")
        .next()
        .and_then(|t| t.strip_suffix(" ms"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timing in {}", slow[0]));
    assert!(
        ms >= 500.0 && ms <= took.as_secs_f64() * 1e3,
        "{ms} ms, took {took:?}"
    );
    assert!(!logs.contains("GET /healthz"), "{logs}");
}
