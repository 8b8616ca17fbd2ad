//! Hostile and careless clients against the connection layer: half-sent requests, idle
//! keep-alive connections, floods over the open-file limit, and the memory they leave behind.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::exposition::Exposition;
use common::http::{self, Conn};
use common::{Service, eventually, rss_kib};
use warpwatch::connections::{FD_RESERVE, MAX_CONNECTIONS};

/// The smallest open-file limit the service starts under: a cap of 16 connections.
const MIN_CAP_NOFILE: u64 = FD_RESERVE + 16;

fn scrape(addr: SocketAddr) -> Exposition {
    let r = http::get(addr, "/metrics");
    assert_eq!(r.status, 200);
    Exposition::parse(&r.body)
}

/// The value of the series `name{labels}`, which must exist.
fn value(m: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

/// Opens a connection and sends `bytes`: a request head that never ends.
fn half_sent(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// Whether the server closed `s` (end of file or reset) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408/400 answer before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn operator_lines(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("ERROR") || l.starts_with("WARN")
        })
        .collect()
}

/// Under an open-file limit of 256, three times as many half-sent requests as descriptors:
/// `/healthz` and `/metrics` keep answering at once, the service never runs out of descriptors,
/// and every one of the attacker's connections is closed by the header-read timeout.
#[test]
fn half_sent_requests_cannot_take_the_port_offline() {
    let nofile = 256;
    let header_timeout = Duration::from_secs(3);
    let args = ["--addr".to_owned(), "127.0.0.1:0".to_owned()];
    let env = [("RUST_LOG", "info"), ("WARPWATCH_HEADER_TIMEOUT", "3")];
    let mut svc = Service::start_with_nofile(&args, &env, nofile);
    let cap = (nofile - FD_RESERVE) as usize;

    let started = Instant::now();
    let mut attack: Vec<TcpStream> = (0..3 * nofile)
        .map(|_| half_sent(svc.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "))
        .collect();
    // Fresh connections still get in and are answered, one at a time and on a keep-alive one.
    for _ in 0..5 {
        let t = Instant::now();
        let r = http::get(svc.addr, "/healthz");
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // Evicted connections close on their next turn, which a loaded machine may delay a little.
    let open = || value(&scrape(svc.addr), "warpwatch_connections_open", &[]);
    assert!(
        eventually(Duration::from_secs(2), || open() <= cap as f64 + 1.0),
        "{} open over the cap {cap}",
        open()
    );
    let m = scrape(svc.addr);
    assert_eq!(value(&m, "warpwatch_connections_max", &[]), cap as f64);
    // New connections waited for evicted ones to close rather than being turned away.
    assert_eq!(value(&m, "warpwatch_connections_refused_total", &[]), 0.0);
    // How many were evicted rather than timed out depends on how fast the flood was built.
    assert!(value(&m, "warpwatch_connections_evicted_total", &[]) >= 1.0);

    // Evicted or not, every one is closed by the end of the header-read timeout, counted from
    // its acceptance: while evicted connections finish closing, new ones wait in the backlog, so
    // on a loaded machine the last are accepted a few seconds after the flood began.
    let limit = 2 * header_timeout + Duration::from_secs(3);
    for s in &mut attack {
        let left = limit.saturating_sub(started.elapsed());
        assert!(
            closed_within(s, left.max(Duration::from_millis(1))),
            "a half-sent request was still open {:?} after it began",
            started.elapsed()
        );
    }
    let m = scrape(svc.addr);
    assert!(
        value(
            &m,
            "warpwatch_connection_errors_total",
            &[("kind", "timeout")]
        ) >= 1.0
    );
    drop(attack);
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
    let logs = svc.logs();
    assert!(!logs.contains("Too many open files"), "{logs}");
    assert!(
        operator_lines(&logs)
            .iter()
            .all(|l| l.contains("no data directory")),
        "clients wrote operator-level lines: {:?}",
        operator_lines(&logs)
    );
}

/// A half-sent request is closed after the header-read timeout; an idle kept-alive connection
/// after the idle timeout; a connection that keeps asking stays open past both. Both timeouts as
/// configured by their flags, and reported in the startup line.
#[test]
fn idle_and_half_sent_connections_are_closed_on_time() {
    let (header_timeout, idle_timeout) = (Duration::from_secs(3), Duration::from_secs(6));
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--header-timeout",
        "3",
        "--idle-timeout",
        "6",
    ]
    .map(String::from);
    let svc = Service::start_with(&args, &[("RUST_LOG", "info")]);
    assert!(
        svc.logs().contains("header timeout: 3s, idle timeout: 6s"),
        "{}",
        svc.logs()
    );
    let t0 = Instant::now();
    let mut half = half_sent(svc.addr, b"GET /healthz HTTP/1.1\r\nHost:");
    let mut idle = Conn::open(svc.addr).unwrap();
    assert_eq!(idle.get("/healthz").unwrap().status, 200);
    let mut busy = Conn::open(svc.addr).unwrap();
    assert_eq!(busy.get("/healthz").unwrap().status, 200);

    let slack = Duration::from_secs(1);
    let half_closed_at = std::thread::spawn(move || {
        let open_until = header_timeout - slack;
        let early = closed_within(&mut half, open_until);
        let on_time = early || closed_within(&mut half, 2 * slack);
        (early, on_time, t0.elapsed())
    });
    // The busy connection asks every second until past the idle timeout.
    while t0.elapsed() < idle_timeout + slack {
        std::thread::sleep(Duration::from_millis(500));
        let r = busy.get("/healthz");
        assert_eq!(r.unwrap().status, 200, "at {:?}", t0.elapsed());
    }
    // By now the idle one (idle since t0) is gone.
    assert!(
        idle.get("/healthz").is_err(),
        "idle connection still open at {:?}",
        t0.elapsed()
    );
    assert_eq!(busy.get("/healthz").unwrap().status, 200);
    let (early, on_time, at) = half_closed_at.join().unwrap();
    assert!(!early && on_time, "half-sent request closed at {at:?}");
    // The half-sent request timed out; the idle connection's close was a normal end.
    let timeouts = value(
        &scrape(svc.addr),
        "warpwatch_connection_errors_total",
        &[("kind", "timeout")],
    );
    assert_eq!(timeouts, 1.0);
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// `wanted` connections, or as many as this test process may open (raising its own soft
/// open-file limit first); never fewer than 1,000, so the flood stays a flood.
fn flood_size(wanted: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    // Other tests in this binary run at the same time and open their own sockets.
    let n = wanted.min((lim.rlim_cur as usize).saturating_sub(1024));
    assert!(
        n >= 1000,
        "this test needs an open-file limit of at least 2024 (it is {}): raise it with ulimit -n",
        lim.rlim_cur
    );
    n
}

/// Thousands of connections held open: memory grows while they are held, and is back near its
/// idle figure soon after they are gone.
#[test]
fn memory_returns_near_idle_after_a_flood() {
    let svc = Service::start(None);
    let pid = svc.pid();
    // Warm up the allocator and the runtime the way ordinary traffic does.
    let mut conn = Conn::open(svc.addr).unwrap();
    for _ in 0..200 {
        assert_eq!(conn.get("/metrics").unwrap().status, 200);
    }
    drop(conn);
    let idle = rss_kib(pid);
    let idle_fds = open_fds(pid);

    // Each connection made one request and stays open, idle: the server holds its buffers.
    // (Half-sent ones would not do here: the header-read timeout closes them before a flood
    // this size is even built on a slow machine.)
    let flood: Vec<Conn> = (0..flood_size(MAX_CONNECTIONS / 2))
        .map(|_| {
            let mut c = Conn::open(svc.addr).unwrap();
            assert_eq!(c.get("/healthz").unwrap().status, 200);
            c
        })
        .collect();
    // Counted from the process's descriptors, not from its own metrics.
    let held = flood.len();
    let mut open = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            open = open_fds(pid);
            open + 2 >= idle_fds + held
        }),
        "only {open} descriptors open with a flood of {held} (idle: {idle_fds})"
    );
    let during = rss_kib(pid);
    drop(flood);
    assert!(
        eventually(Duration::from_secs(10), || open_fds(pid) <= idle_fds + 1),
        "the flood's connections were not closed: {} descriptors open",
        open_fds(pid)
    );
    assert!(
        during > idle + 8 * 1024,
        "the flood did not grow memory: {during} KiB"
    );
    // "Near idle": at most a quarter of what the flood added is still resident.
    let near_idle = idle + (during - idle) / 4;
    let settled = eventually(Duration::from_secs(5), || rss_kib(pid) <= near_idle);
    let after = rss_kib(pid);
    eprintln!("RSS KiB: idle {idle}, during {during}, after {after}");
    assert!(
        settled,
        "RSS stayed at {after} KiB after the flood (idle {idle}, during {during})"
    );
}

/// A stop signal with half-sent requests open: they hold nothing acknowledged, so they do not
/// hold up the drain either (it would otherwise run into its 5 s deadline).
#[test]
fn half_sent_requests_do_not_delay_a_stop() {
    let mut svc = Service::start(None);
    let held: Vec<TcpStream> = (0..20)
        .map(|_| half_sent(svc.addr, b"GET /healthz HTTP/1.1\r\nHost:"))
        .collect();
    let mut conn = Conn::open(svc.addr).unwrap();
    assert_eq!(conn.get("/healthz").unwrap().status, 200);
    // Let the server read every one of them.
    assert!(eventually(Duration::from_secs(5), || value(
        &scrape(svc.addr),
        "warpwatch_connections_open",
        &[]
    ) >= 22.0));
    let t = Instant::now();
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
    assert!(
        t.elapsed() < warpwatch::shutdown::DRAIN_TIMEOUT / 2,
        "stopping took {:?}; logs:\n{}",
        t.elapsed(),
        svc.logs()
    );
    assert!(
        svc.logs().contains("all connections drained"),
        "{}",
        svc.logs()
    );
    drop(held);
}

/// The soft and hard open-file limits of a running process, from `/proc/PID/limits`.
fn nofile_limits(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (values[0], values[1])
}

/// The soft open-file limit is raised towards the hard one as far as the connection cap can use
/// (systemd's default is soft 1024 under hard 524288), never above the hard limit, and never
/// lowered; the cap follows what was reached.
#[test]
fn soft_open_file_limit_is_raised_as_far_as_the_cap_uses() {
    let wanted = MAX_CONNECTIONS as u64 + FD_RESERVE;
    // A hard limit above what the cap uses, within the one this test may give (20000 here).
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) }, 0);
    let high = own.rlim_max.min(10_000);
    assert!(
        high > 5000,
        "the hard open-file limit {high} is too low for this test"
    );
    let args = ["--addr".to_owned(), "127.0.0.1:0".to_owned()];
    for (start, raised) in [
        ((300, 1000), (1000, 1000)),
        ((300, high), (wanted, high)),
        // Already above what the cap uses: left alone, never lowered.
        ((5000, high), (5000, high)),
        ((5000, 5000), (5000, 5000)),
        ((1000, wanted), (wanted, wanted)),
    ] {
        let mut svc = Service::start_with_nofile_soft(&args, &[("RUST_LOG", "info")], start);
        assert_eq!(nofile_limits(svc.pid()), raised, "starting from {start:?}");
        let cap = (raised.0 - FD_RESERVE).min(MAX_CONNECTIONS as u64);
        let m = scrape(svc.addr);
        assert_eq!(
            value(&m, "warpwatch_connections_max", &[]),
            cap as f64,
            "starting from {start:?}"
        );
        assert!(
            svc.logs().contains(&format!("max connections: {cap},")),
            "{}",
            svc.logs()
        );
        assert_eq!(svc.stop().code(), Some(0));
    }
}

/// Splits a stream of HTTP/1.1 responses into (status, whole) pairs: `whole` is false for a
/// response cut short (fewer body bytes than its Content-Length).
fn responses(mut stream: &[u8]) -> Vec<(u16, bool)> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let Some(end) = stream.windows(4).position(|w| w == b"\r\n\r\n") else {
            out.push((0, false));
            break;
        };
        let head = String::from_utf8_lossy(&stream[..end]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap_or(0);
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let body = &stream[end + 4..];
        out.push((status, body.len() >= length));
        stream = &body[length.min(body.len())..];
    }
    out
}

/// A stop signal lets the responses a connection is writing finish (within the drain time), and
/// takes no further request on it: a client that pipelined more scrapes than the kernel's socket
/// buffers hold and reads them only after the signal gets whole answers, then the close (no
/// reset: the service had read every request), and the service exits 0 once it is done.
#[test]
fn responses_being_written_at_a_stop_are_finished_before_the_exit() {
    // All requests fit in the service's 16 KiB read buffer, so none is left unread at the close.
    let request = "GET /metrics HTTP/1.1\r\nHost:a\r\n\r\n";
    let pipelined = 16 * 1024 / request.len();
    let mut svc = Service::start(None);
    let answer_size = http::get(svc.addr, "/metrics").body.len();
    let send_buffer_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        pipelined * answer_size > send_buffer_max + (1 << 20),
        "{pipelined} answers of {answer_size} bytes fit in a {send_buffer_max}-byte send buffer \
         (net.ipv4.tcp_wmem): the service would finish writing before the signal"
    );
    let mut reader = TcpStream::connect(svc.addr).unwrap();
    reader
        .write_all(request.repeat(pipelined).as_bytes())
        .unwrap();
    // Once the bytes queued on both ends stop growing, the buffers are full and the service is
    // blocked writing an answer.
    let (client, server) = (reader.local_addr().unwrap().port(), svc.addr.port());
    let queued = || {
        use std::os::fd::AsRawFd;
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes the count into the int we own, for a socket we own.
        assert_eq!(
            unsafe { libc::ioctl(reader.as_raw_fd(), libc::FIONREAD, &mut unread) },
            0
        );
        // The service's end of the connection: its send queue, from /proc/net/tcp.
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let unsent = table.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ends = (f.get(1)?, f.get(2)?);
            let port = |end: &str| u16::from_str_radix(end.rsplit(':').next()?, 16).ok();
            (port(ends.0)? == server && port(ends.1)? == client)
                .then(|| u64::from_str_radix(f.get(4)?.split(':').next()?, 16).ok())?
        });
        (unread, unsent.expect("the service's end in /proc/net/tcp"))
    };
    let (mut last, mut steady) = (queued(), 0);
    while steady < 5 {
        std::thread::sleep(Duration::from_millis(100));
        let now = queued();
        steady = if now == last && now.0 > 0 && now.1 > 0 {
            steady + 1
        } else {
            0
        };
        last = now;
    }
    svc.signal(libc::SIGTERM);
    assert!(svc.logged("SIGTERM received"), "{}", svc.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !svc.logs().contains("stopped;"),
        "the service stopped with answers unread: {}",
        svc.logs()
    );
    let mut answers = Vec::new();
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    reader.read_to_end(&mut answers).unwrap();
    let got = responses(&answers);
    assert!(
        !got.is_empty() && got.len() < pipelined,
        "{} answers to {pipelined} pipelined requests",
        got.len()
    );
    assert!(
        got.iter().all(|&(status, whole)| status == 200 && whole),
        "an answer was cut short by the stop: {:?}",
        got.last()
    );
    assert_eq!(svc.wait(Duration::from_secs(10)).code(), Some(0));
    assert!(
        svc.logs().contains("all connections drained"),
        "{}",
        svc.logs()
    );
}

/// A kept-alive connection that starts a request after idling must complete its head within the
/// header-read timeout from that first byte, which comes before its idle deadline; the close
/// counts as a timeout.
#[test]
fn a_request_begun_after_idling_must_complete_its_head_in_time() {
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--header-timeout",
        "2",
        "--idle-timeout",
        "8",
    ]
    .map(String::from);
    let svc = Service::start_with(&args, &[("RUST_LOG", "info")]);
    let mut s = TcpStream::connect(svc.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.ends_with(b"ok\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    // Past the header-read timeout of the first request: the connection's timer now waits for
    // its idle deadline, which the new request head must bring forward.
    std::thread::sleep(Duration::from_secs(3));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
    let begun = Instant::now();
    let early = closed_within(&mut s, Duration::from_millis(1500));
    let on_time = early || closed_within(&mut s, Duration::from_secs(2));
    assert!(
        !early && on_time,
        "closed {:?} after the request began",
        begun.elapsed()
    );
    let m = scrape(svc.addr);
    assert_eq!(
        value(
            &m,
            "warpwatch_connection_errors_total",
            &[("kind", "timeout")]
        ),
        1.0
    );
}

/// A client that resets its connection in the middle of a request head is counted as
/// `kind="aborted"`, not as an unexplained `other`.
#[test]
fn a_reset_in_the_middle_of_a_request_counts_as_aborted() {
    let svc = Service::start(None);
    let errors = |kind| {
        value(
            &scrape(svc.addr),
            "warpwatch_connection_errors_total",
            &[("kind", kind)],
        )
    };
    for _ in 0..3 {
        let s = half_sent(svc.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-");
        // Let the service read what was sent before the reset arrives.
        std::thread::sleep(Duration::from_millis(50));
        common::close_with_reset(s);
    }
    assert!(
        eventually(Duration::from_secs(5), || errors("aborted") == 3.0),
        "aborted: {}, other: {}",
        errors("aborted"),
        errors("other")
    );
    assert_eq!(errors("other"), 0.0);
}

/// When `accept` itself fails (descriptors used up by something the cap does not know of, here
/// 150 inherited ones), the service warns at most once a second, backs off instead of spinning,
/// and serves again as soon as descriptors are free.
#[test]
fn accept_failures_are_warned_once_a_second_and_retried() {
    use std::os::unix::process::CommandExt;
    let nofile = 256;
    let mut cmd = common::command();
    cmd.args(["--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    common::limit_nofile(&mut cmd, nofile);
    // SAFETY: between fork and exec the closure only calls dup(2), which is async-signal-safe;
    // the duplicates of stdin carry no close-on-exec flag, so the service inherits them.
    unsafe {
        cmd.pre_exec(|| {
            for _ in 0..150 {
                if libc::dup(0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut svc = Service::spawn_command(cmd);
    let pid = svc.pid();
    // Connections beyond the descriptors left wait in the listen backlog while accept fails.
    let held: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(svc.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    let cpu = {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        f[0] + f[1]
    };
    let logs = svc.logs();
    let warnings = logs
        .lines()
        .filter(|l| l.contains("cannot accept connections") && l.contains("Too many open files"))
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} warnings in 2.5 s: {logs}"
    );
    // Spinning on a failing accept would burn a CPU (250 ticks in 2.5 s).
    assert!(cpu < 100, "{cpu} ticks of CPU in 2.5 s");
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || http::request(
            svc.addr,
            "GET",
            "/healthz",
            &[]
        )
        .is_ok_and(|r| r.status == 200)),
        "{}",
        svc.logs()
    );
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
}

/// At the cap, among connections that each completed as many requests, the one idle longest is
/// evicted, even after enough short-lived connections came and went that the service pruned its
/// record of them: the long-lived ones are still known.
#[test]
fn eviction_finds_the_longest_idle_after_much_churn() {
    let nofile = MIN_CAP_NOFILE;
    let cap = (nofile - FD_RESERVE) as usize;
    let args = ["--addr".to_owned(), "127.0.0.1:0".to_owned()];
    let svc = Service::start_with_nofile(&args, &[("RUST_LOG", "info")], nofile);
    let mut originals: Vec<Conn> = (0..cap - 1)
        .map(|_| {
            let mut c = Conn::open(svc.addr).unwrap();
            assert_eq!(c.get("/healthz").unwrap().status, 200);
            c
        })
        .collect();
    // Enough one-request connections that the dead outnumber the open ones several times over.
    for _ in 0..6 * cap + 64 {
        let r = http::request(svc.addr, "GET", "/healthz", &[]).unwrap();
        assert_eq!(r.status, 200);
    }
    let newcomers: Vec<Conn> = (0..cap)
        .map(|_| {
            let mut c = Conn::open(svc.addr).unwrap();
            assert_eq!(c.get("/healthz").unwrap().status, 200);
            c
        })
        .collect();
    for (i, c) in originals.iter_mut().enumerate() {
        assert!(
            c.get("/healthz").is_err(),
            "original connection {i} was not evicted for the newcomers {}",
            svc.logs()
        );
    }
    for mut c in newcomers {
        assert_eq!(c.get("/healthz").unwrap().status, 200);
    }
}

/// One flooding client: until `stop`, opens connections as fast as it can and holds the last
/// eight. `mixed` alternates connections never used, half-sent requests and one answered
/// request; otherwise every connection gets one answered request and is then held idle.
fn flood(addr: SocketAddr, mixed: bool, stop: &AtomicBool) -> usize {
    let mut held = std::collections::VecDeque::new();
    let mut opened = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        match if mixed { opened % 3 } else { 2 } {
            0 => {}
            1 => {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            }
            _ => {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
                let _ = s.read(&mut [0u8; 512]);
            }
        }
        held.push_back(s);
        if held.len() > 8 {
            held.pop_front();
        }
        opened += 1;
    }
    opened
}

/// A Prometheus-like client, scraping `/metrics` on one keep-alive connection, loses no scrape
/// and keeps its connection (its port never changes) while four clients churn connections far
/// past the cap: two with connections never used or half-sent, two with connections that each
/// make one request and then sit idle. The flood's connections are the ones evicted.
#[test]
fn a_scraper_keeps_its_connection_through_a_connection_flood() {
    let nofile = MIN_CAP_NOFILE;
    let cap = (nofile - FD_RESERVE) as usize;
    let args = ["--addr".to_owned(), "127.0.0.1:0".to_owned()];
    let svc = Service::start_with_nofile(&args, &[("RUST_LOG", "info")], nofile);
    let mut scraper = Conn::open(svc.addr).unwrap();
    let port = scraper.local_addr().port();
    // Established before the flood, as a scraper is.
    for _ in 0..3 {
        assert_eq!(scraper.get("/metrics").unwrap().status, 200);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            let addr = svc.addr;
            std::thread::spawn(move || flood(addr, i < 2, &stop))
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(4);
    let mut scrapes = 0;
    let mut last = None;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(250));
        let reply = scraper.get("/metrics");
        let reply = reply.unwrap_or_else(|e| {
            stop.store(true, Ordering::Relaxed);
            panic!("scrape {scrapes} during the flood was lost: {e}")
        });
        assert_eq!(reply.status, 200);
        assert_eq!(scraper.local_addr().port(), port);
        scrapes += 1;
        last = Some(Exposition::parse(&reply.body));
    }
    stop.store(true, Ordering::Relaxed);
    let opened: usize = flooders.into_iter().map(|t| t.join().unwrap()).sum();
    let m = last.unwrap();
    let evicted = value(&m, "warpwatch_connections_evicted_total", &[]);
    eprintln!("{scrapes} scrapes; the flood opened {opened} connections, {evicted} evicted");
    assert!(scrapes >= 10, "only {scrapes} scrapes in 4 s");
    assert!(
        opened > 10 * cap && evicted >= cap as f64,
        "the flood opened {opened} connections and {evicted} were evicted: not past the cap {cap}"
    );
}

/// A connection that completed requests outlives the never-used connections opened after it,
/// even after enough short-lived connections came and went that the service pruned its record
/// of them: at the cap, the never-used ones go first, however new.
#[test]
fn at_the_cap_unused_connections_go_before_a_used_one() {
    let nofile = MIN_CAP_NOFILE;
    let cap = (nofile - FD_RESERVE) as usize;
    let args = ["--addr".to_owned(), "127.0.0.1:0".to_owned()];
    let svc = Service::start_with_nofile(&args, &[("RUST_LOG", "info")], nofile);
    let mut used = Conn::open(svc.addr).unwrap();
    for _ in 0..3 {
        assert_eq!(used.get("/healthz").unwrap().status, 200);
    }
    let port = used.local_addr().port();
    let mut unused: Vec<TcpStream> = (0..cap / 2)
        .map(|_| TcpStream::connect(svc.addr).unwrap())
        .collect();
    // Below the cap: nothing is evicted, the dead come to outnumber the open.
    for _ in 0..6 * cap + 64 {
        assert_eq!(http::get(svc.addr, "/healthz").status, 200);
    }
    // Newcomers making one request each, kept open: past the room left, each evicts an unused
    // connection.
    let room = cap - 1 - cap / 2;
    let mut newcomers: Vec<Conn> = (0..room + 5)
        .map(|i| {
            let mut c = Conn::open(svc.addr).unwrap();
            assert_eq!(c.get("/healthz").unwrap().status, 200, "newcomer {i}");
            c
        })
        .collect();
    for (i, c) in newcomers.iter_mut().enumerate() {
        let status = c.get("/healthz").map(|r| r.status).ok();
        assert_eq!(status, Some(200), "newcomer {i} was evicted");
    }
    assert_eq!(used.get("/healthz").unwrap().status, 200);
    assert_eq!(used.local_addr().port(), port);
    let closed = unused
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(300)))
        .filter(|closed| *closed)
        .count();
    assert!(closed >= 5, "only {closed} unused connections evicted");
}

/// At the cap, among connections that all completed requests, the ones that asked least go
/// first, even when they are the newest, and connections already closed are never counted as
/// evicted: open connections stay at the cap.
#[test]
fn at_the_cap_connections_that_asked_least_go_first() {
    let nofile = MIN_CAP_NOFILE;
    let cap = (nofile - FD_RESERVE) as usize;
    let args = ["--addr".to_owned(), "127.0.0.1:0".to_owned()];
    let svc = Service::start_with_nofile(&args, &[("RUST_LOG", "info")], nofile);
    let mut regulars: Vec<Conn> = (0..cap - 2)
        .map(|_| {
            let mut c = Conn::open(svc.addr).unwrap();
            for _ in 0..2 {
                assert_eq!(c.get("/healthz").unwrap().status, 200);
            }
            c
        })
        .collect();
    // Closed one-request connections: the service's record of them must not stand in for a
    // live connection at the cap.
    for _ in 0..32 {
        assert_eq!(http::get(svc.addr, "/healthz").status, 200);
    }
    // Eight newcomers with one request each, kept open: at the cap each evicts an earlier one.
    let newcomers: Vec<Conn> = (0..8)
        .map(|_| {
            let mut c = Conn::open(svc.addr).unwrap();
            assert_eq!(c.get("/healthz").unwrap().status, 200);
            c
        })
        .collect();
    for (i, c) in regulars.iter_mut().enumerate() {
        assert_eq!(
            c.get("/healthz").map(|r| r.status).ok(),
            Some(200),
            "regular connection {i} (two requests) was evicted for a newcomer (one)"
        );
    }
    // The scrape's own connection is one more; evicted ones close on their next turn.
    let open = || value(&scrape(svc.addr), "warpwatch_connections_open", &[]);
    assert!(
        eventually(Duration::from_secs(2), || open() <= cap as f64),
        "{} open over the cap {cap}",
        open()
    );
    drop(newcomers);
}
