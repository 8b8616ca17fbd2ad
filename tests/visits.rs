//! The visit count under concurrency, across restarts, signals and storage failures.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::http::{self, Conn};
use common::{Service, TempDir, eventually, json_field, json_u64, stderr_of};
use warpwatch::flusher::{FLUSH_INTERVAL, PERSIST_TIMEOUT, STALL_TIMEOUT};

fn visit_json(conn: &mut Conn) -> std::io::Result<u64> {
    let r = conn.send("GET", "/", &[("Accept", "application/json")], false)?;
    if r.status != 200 {
        return Err(std::io::Error::other(format!("status {}", r.status)));
    }
    Ok(json_u64(&r.body, "visits"))
}

/// Clients visiting `/` in a loop until the server stops answering; `finish` returns every count
/// the server acknowledged.
struct VisitLoad {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Vec<u64>>>,
}

impl VisitLoad {
    /// `clients` threads; with `reconnecting_half`, every other one opens a new connection per
    /// visit instead of keeping one alive.
    fn start(addr: std::net::SocketAddr, clients: usize, reconnecting_half: bool) -> VisitLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|i| {
                let stop = stop.clone();
                let reconnect = reconnecting_half && i % 2 == 1;
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut conn = Conn::open(addr).ok();
                    while !stop.load(Ordering::Relaxed) {
                        let result = match conn.as_mut() {
                            Some(c) if !reconnect => visit_json(c),
                            _ => Conn::open(addr).and_then(|mut c| visit_json(&mut c)),
                        };
                        match result {
                            Ok(n) => acked.push(n),
                            Err(_) => break, // the server stopped: nothing more is acknowledged
                        }
                    }
                    acked
                })
            })
            .collect();
        VisitLoad { stop, clients }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let acked: Vec<u64> = self
            .clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        assert!(
            acked.len() > 50,
            "too little load to prove anything: {}",
            acked.len()
        );
        acked
    }
}

/// Starts the service on `dir`, which must refuse it: returns the exit code and stderr.
fn start_refused(dir: &TempDir) -> (Option<i32>, String) {
    let out = common::run(
        &[
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    (out.status.code(), stderr_of(&out))
}

fn stored(dir: &TempDir) -> u64 {
    let text = std::fs::read_to_string(dir.file("visits")).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("visits file does not parse: {text:?}"))
}

#[test]
fn concurrent_visits_lose_no_increment() {
    let svc = Service::start(None);
    let (threads, each) = (8, 250);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let addr = svc.addr;
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).unwrap();
                (0..each)
                    .map(|_| visit_json(&mut conn).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let seen: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let distinct: HashSet<_> = seen.iter().copied().collect();
    let total = (threads * each) as u64;
    // Every acknowledged visit got its own number, and the numbers are exactly 1..=total.
    assert_eq!(distinct.len() as u64, total);
    assert_eq!(distinct, (1..=total).collect());
    assert_eq!(
        json_u64(&http::get(svc.addr, "/visits").body, "visits"),
        total
    );
}

#[test]
fn graceful_restart_keeps_the_count() {
    let dir = TempDir::new("restart");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    for _ in 0..5 {
        visit_json(&mut conn).unwrap();
    }
    drop(conn);
    let status = svc.stop();
    assert_eq!(status.code(), Some(0), "{}", svc.logs());
    assert_eq!(stored(&dir), 5);
    assert!(svc.logs().contains("5 visits persisted"), "{}", svc.logs());

    let svc = Service::start(Some(dir.path()));
    assert_eq!(json_u64(&http::get(svc.addr, "/visits").body, "visits"), 5);
    let mut conn = Conn::open(svc.addr).unwrap();
    assert_eq!(visit_json(&mut conn).unwrap(), 6);
}

#[test]
fn sigterm_under_load_loses_no_acknowledged_visit() {
    let dir = TempDir::new("sigterm");
    let mut svc = Service::start(Some(dir.path()));
    // Half keep connections alive across the signal, half reconnect every time.
    let load = VisitLoad::start(svc.addr, 6, true);
    std::thread::sleep(Duration::from_millis(400));
    svc.signal(libc::SIGTERM);
    let status = svc.wait(Duration::from_secs(15));
    let acked = load.finish();
    assert_eq!(status.code(), Some(0), "{}", svc.logs());

    let persisted = stored(&dir);
    let highest = *acked.iter().max().unwrap();
    assert!(
        persisted >= highest && persisted >= acked.len() as u64,
        "persisted {persisted} < acknowledged (highest {highest}, {} answers)",
        acked.len()
    );
    assert!(svc.logs().contains("SIGTERM received"), "{}", svc.logs());
}

#[test]
fn sigkill_leaves_a_parseable_file_missing_at_most_a_second() {
    let dir = TempDir::new("sigkill");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    for _ in 0..40 {
        visit_json(&mut conn).unwrap();
    }
    // Everything acknowledged more than a flush interval ago is on disk...
    std::thread::sleep(FLUSH_INTERVAL + Duration::from_millis(600));
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, flag) = (svc.addr, stop.clone());
    let load = std::thread::spawn(move || {
        let mut conn = Conn::open(addr).unwrap();
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) && visit_json(&mut conn).is_ok() {
            n += 1;
        }
        n
    });
    // ...and SIGKILL lands in the middle of writes.
    std::thread::sleep(Duration::from_millis(700));
    svc.signal(libc::SIGKILL);
    svc.wait(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let during = load.join().unwrap();
    let persisted = stored(&dir);
    assert!(
        persisted >= 40 && persisted <= 40 + during,
        "persisted {persisted}, sent {}",
        40 + during
    );

    // The next start accepts the file.
    let svc = Service::start(Some(dir.path()));
    assert_eq!(
        json_u64(&http::get(svc.addr, "/visits").body, "visits"),
        persisted
    );
}

#[test]
fn corrupt_or_unreadable_file_refuses_to_start() {
    let dir = TempDir::new("corrupt");
    std::fs::write(dir.file("visits"), "12x\n").unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("corrupt") && stderr.contains(&dir.file("visits").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("Restore") && stderr.contains("12x"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
    // Never reset: the file is exactly as it was.
    assert_eq!(
        std::fs::read_to_string(dir.file("visits")).unwrap(),
        "12x\n"
    );

    // The same refusal when the directory comes from the environment.
    std::fs::write(dir.file("visits"), "").unwrap();
    let out = common::run(
        &["--addr", "127.0.0.1:0"],
        &[("WARPWATCH_DATA_DIR", dir.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("empty file"),
        "{}",
        stderr_of(&out)
    );

    // Unreadable: a directory where the file should be (permissions do not stop root).
    std::fs::remove_file(dir.file("visits")).unwrap();
    std::fs::create_dir(dir.file("visits")).unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot read the visits file") && stderr.contains("it is a directory"),
        "{stderr}"
    );

    // A link that leads nowhere (to itself): refused, not a fresh 0.
    std::fs::remove_dir(dir.file("visits")).unwrap();
    std::os::unix::fs::symlink("visits", dir.file("visits")).unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot read the visits file")
            && stderr.contains("it is a symbolic link to visits"),
        "{stderr}"
    );
}

#[test]
fn write_failures_make_readyz_fail_and_keep_counting() {
    let dir = TempDir::new("writefail");
    let svc = Service::start(Some(dir.path()));
    assert_eq!(http::get(svc.addr, "/readyz").status, 200);

    // The temp file's name taken by a directory makes every write fail, as a full disk would.
    let blocker = dir.file(".visits.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let mut conn = Conn::open(svc.addr).unwrap();
    for _ in 0..3 {
        visit_json(&mut conn).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || http::get(svc.addr, "/readyz")
            .status
            == 503),
        "{}",
        svc.logs()
    );
    let r = http::get(svc.addr, "/readyz");
    assert_eq!(json_field(&r.body, "status"), "not ready");
    assert!(
        json_field(&r.body, "reason").contains("cannot write visits file"),
        "{}",
        r.body
    );
    assert!(svc.logged("ERROR"), "{}", svc.logs());
    // Still serving and counting.
    assert_eq!(visit_json(&mut conn).unwrap(), 4);
    assert_eq!(http::get(svc.addr, "/healthz").status, 200);
    // The first failure is an error; the same failure again is a warning, not a flood of errors.
    assert!(svc.logged("still failing"), "{}", svc.logs());
    let logs = svc.logs();
    let failures: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("cannot write visits file"))
        .collect();
    assert!(
        failures[0].trim_start().starts_with("ERROR")
            && failures[1..]
                .iter()
                .all(|l| l.trim_start().starts_with("WARN") && l.contains("still failing")),
        "{logs}"
    );

    std::fs::remove_dir(&blocker).unwrap();
    assert!(eventually(Duration::from_secs(5), || http::get(
        svc.addr, "/readyz"
    )
    .status
        == 200));
    assert_eq!(stored(&dir), 4);
    assert!(svc.logged("writable again"), "{}", svc.logs());
}

/// SIGHUP, SIGUSR1 and SIGUSR2 under load: each is logged and ignored (their default action would
/// kill the process without the final write); the service keeps answering, and the SIGTERM after
/// them still persists every acknowledged visit.
#[test]
fn hup_and_user_signals_under_load_lose_no_visit() {
    let dir = TempDir::new("hup");
    let mut svc = Service::start(Some(dir.path()));
    let load = VisitLoad::start(svc.addr, 4, false);
    for (sig, name) in [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
    ] {
        std::thread::sleep(Duration::from_millis(200));
        svc.signal(sig);
        assert!(
            svc.logged(&format!("{name} received: ignored")),
            "{}",
            svc.logs()
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        http::get(svc.addr, "/healthz").status,
        200,
        "{}",
        svc.logs()
    );
    svc.signal(libc::SIGTERM);
    let status = svc.wait(Duration::from_secs(15));
    let acked = load.finish();
    assert_eq!(status.code(), Some(0), "{}", svc.logs());
    let highest = *acked.iter().max().unwrap();
    assert!(
        stored(&dir) >= highest,
        "persisted {} < acknowledged {highest}",
        stored(&dir)
    );
}

/// A second process on the same data directory refuses to start (exit 1, naming the directory
/// and the holder's pid) and leaves the file alone; once the first stops, it starts.
#[test]
fn second_process_on_one_data_dir_refuses_to_start() {
    let dir = TempDir::new("lock");
    let mut first = Service::start(Some(dir.path()));
    let mut conn = Conn::open(first.addr).unwrap();
    for _ in 0..3 {
        visit_json(&mut conn).unwrap();
    }
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&dir.path().display().to_string())
            && stderr.contains(&format!("pid {}", first.pid())),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
    // The holder is undisturbed and persists its count.
    assert_eq!(visit_json(&mut conn).unwrap(), 4);
    drop(conn);
    assert_eq!(first.stop().code(), Some(0), "{}", first.logs());
    assert_eq!(stored(&dir), 4);
    // The kernel released the lock with the process: the next one starts.
    let next = Service::start(Some(dir.path()));
    assert_eq!(json_u64(&http::get(next.addr, "/visits").body, "visits"), 4);
}

/// `start_refused`, with the service's address space limited to `bytes`.
fn start_refused_within(dir: &TempDir, bytes: u64) -> (Option<i32>, String) {
    let mut cmd = common::command();
    cmd.args([
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    common::limit_address_space(&mut cmd, bytes);
    let out = common::run_command(cmd, Duration::from_secs(10));
    (out.status.code(), stderr_of(&out))
}

/// A FIFO, or a file far larger than any count, where the visits file should be: refused at
/// once (exit 3, naming the file), without blocking on the FIFO or reading the file whole.
#[test]
fn fifo_or_huge_visits_file_is_refused_without_reading_it() {
    let dir = TempDir::new("fifo");
    let path = dir.file("visits");
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("FIFO") && stderr.contains(path.to_str().unwrap()),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A socket, said as such.
    std::fs::remove_file(&path).unwrap();
    let socket = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("it is a socket"), "{stderr}");
    drop(socket);

    // 1 GiB (sparse, so it costs no disk) under a 512 MiB address-space limit: reading it whole
    // would fail to allocate; the refusal quotes its start and its size.
    std::fs::remove_file(&path).unwrap();
    let huge = std::fs::File::create(&path).unwrap();
    huge.set_len(1 << 30).unwrap();
    drop(huge);
    let (code, stderr) = start_refused_within(&dir, 512 << 20);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("corrupt") && stderr.contains(&format!("{} bytes", 1u64 << 30)),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        1 << 30,
        "the file was changed"
    );
}

/// At u64::MAX the count saturates: never wraps, never persists 0; logged once.
#[test]
fn count_saturates_at_the_maximum_instead_of_wrapping() {
    let dir = TempDir::new("saturate");
    std::fs::write(dir.file("visits"), format!("{}\n", u64::MAX - 1)).unwrap();
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    // One visit reaches the maximum; the three after it are not counted, and logged once.
    for _ in 0..4 {
        assert_eq!(visit_json(&mut conn).unwrap(), u64::MAX);
    }
    drop(conn);
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
    assert_eq!(stored(&dir), u64::MAX);
    let logs = svc.logs();
    assert_eq!(logs.matches("reached its maximum").count(), 1, "{logs}");
}

/// A file longer than any count is refused even when its start parses (a count padded with
/// spaces past the size limit).
#[test]
fn visits_file_over_the_size_limit_is_refused_even_if_its_start_parses() {
    let dir = TempDir::new("padded");
    let padded = format!(
        "42{}\n",
        " ".repeat(warpwatch::visits::MAX_FILE_BYTES as usize)
    );
    std::fs::write(dir.file("visits"), &padded).unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("{} bytes", padded.len())),
        "{stderr}"
    );

    // A file of exactly the limit is read to its last byte: here that byte makes it no count.
    let max = warpwatch::visits::MAX_FILE_BYTES as usize;
    let tail_spoils = format!("42{}7", " ".repeat(max - 3));
    assert_eq!(tail_spoils.len(), max);
    std::fs::write(dir.file("visits"), &tail_spoils).unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");

    // The message quotes the first 40 bytes, marks a longer file with "...", and names the
    // size limit only for a file over it.
    for (content, cut, over) in [
        ("x".repeat(40), false, false),
        ("x".repeat(41), true, false),
        ("x".repeat(max), true, false),
        ("x".repeat(max + 1), true, true),
    ] {
        std::fs::write(dir.file("visits"), &content).unwrap();
        let (code, stderr) = start_refused(&dir);
        assert_eq!(code, Some(3), "{stderr}");
        let quoted = format!(
            "\"{}\"{} ({} bytes",
            "x".repeat(40),
            if cut { "..." } else { "" },
            content.len()
        );
        assert!(
            stderr.contains(&quoted),
            "{} bytes: {stderr}",
            content.len()
        );
        assert_eq!(
            stderr.contains("a count takes at most"),
            over,
            "{} bytes: {stderr}",
            content.len()
        );
    }
}

/// The pid of the visits writer process the service forks (its only child).
fn writer_pid(svc: &Service) -> i32 {
    let path = format!("/proc/{0}/task/{0}/children", svc.pid());
    let children = std::fs::read_to_string(&path).unwrap();
    let pids: Vec<i32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "expected one writer process, found {pids:?}");
    pids[0]
}

fn process_is_gone(pid: i32) -> bool {
    // A reaped or exited child: no /proc entry, or a zombie waiting for its (dead) parent.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
    })
}

/// Fails unless the writer process `pid` is gone within 5 s of its service, saying `what`.
fn assert_writer_gone(pid: i32, what: &str) {
    assert!(
        eventually(Duration::from_secs(5), || process_is_gone(pid)),
        "writer process {pid} {what}"
    );
}

/// The writer process never outlives the service, however the service ends: after SIGKILL it
/// sees its socket close and exits, so no stray process keeps the data directory or the unit
/// alive.
#[test]
fn the_writer_process_ends_with_the_service() {
    let dir = TempDir::new("writer-exit");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    for _ in 0..3 {
        visit_json(&mut conn).unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || stored(&dir) == 3));
    let writer = writer_pid(&svc);
    svc.signal(libc::SIGKILL);
    svc.wait(Duration::from_secs(5));
    assert_writer_gone(writer, "still running after the service was killed");
}

/// `systemctl stop` signals every process of the unit: the writer ignores that SIGTERM (the
/// service alone decides when writing ends), keeps writing while the service drains, and the
/// final write persists every acknowledged visit.
#[test]
fn sigterm_to_service_and_writer_together_persists_every_visit() {
    let dir = TempDir::new("group-term");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    let writer = writer_pid(&svc);
    // SAFETY: kill(2) on the service's own child; no memory is involved.
    assert_eq!(unsafe { libc::kill(writer, libc::SIGTERM) }, 0);
    let mut last = 0;
    for _ in 0..50 {
        last = visit_json(&mut conn).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || stored(&dir) == last),
        "the writer stopped writing after a SIGTERM: file has {}, count is {last}; {}",
        stored(&dir),
        svc.logs()
    );
    svc.signal(libc::SIGTERM);
    let status = svc.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", svc.logs());
    assert_eq!(stored(&dir), last, "{}", svc.logs());
    assert!(!svc.logged("writer process is gone"), "{}", svc.logs());
}

/// On a clean stop the service ends its writer and reaps it before it exits (seen in its system
/// calls): no orphaned writer finishing a write after the service's own final one.
#[test]
fn a_clean_stop_reaps_the_writer_before_exiting() {
    let dir = TempDir::new("writer-reaped");
    let mut svc = Service::start(Some(dir.path()));
    let writer = writer_pid(&svc);
    let trace = common::Strace::attach(svc.pid(), "wait4,exit_group", &[], &dir.file("strace"));
    let mut conn = Conn::open(svc.addr).unwrap();
    let last = visit_json(&mut conn).unwrap();
    drop(conn);
    svc.signal(libc::SIGTERM);
    assert_eq!(
        svc.wait(Duration::from_secs(15)).code(),
        Some(0),
        "{}",
        svc.logs()
    );
    let lines = trace.detach();
    // The call may be split into `wait4(PID, <unfinished ...>` and `<... wait4 resumed> ... = PID`.
    let reaped = lines
        .lines()
        .position(|l| l.contains("wait4") && l.ends_with(&format!("= {writer}")));
    let exited = lines.lines().position(|l| l.contains("exit_group("));
    assert!(
        reaped.is_some() && reaped < exited,
        "writer {writer} not reaped before the exit:\n{lines}"
    );
    assert_eq!(stored(&dir), last);
}

/// An idle service leaves the disk alone: the visits file is rewritten only when the count
/// changed, not every second.
#[test]
fn an_idle_service_does_not_rewrite_the_visits_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("idle-writes");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    let last = visit_json(&mut conn).unwrap();
    assert!(eventually(Duration::from_secs(5), || stored(&dir) == last));
    // Every write replaces the file (a rename), so an unchanged inode means no write.
    let inode = || std::fs::metadata(dir.file("visits")).unwrap().ino();
    let before = inode();
    std::thread::sleep(FLUSH_INTERVAL * 3);
    assert_eq!(inode(), before, "rewritten with no new visit");
    let last = visit_json(&mut conn).unwrap();
    assert!(eventually(Duration::from_secs(5), || stored(&dir) == last));
    assert_ne!(inode(), before, "a new visit was not written");
    assert_eq!(svc.stop().code(), Some(0));
}

/// kill(2) on a process of the test's making (the service's writer child).
fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a known pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

fn readyz(svc: &Service) -> (u16, String) {
    let r = http::get(svc.addr, "/readyz");
    (r.status, r.body)
}

/// Waits until the file holds `n` and the writer has told the service so (it answers after the
/// rename and the directory's fsync).
fn wait_stored(dir: &TempDir, n: u64) {
    assert!(
        eventually(Duration::from_secs(5), || stored(dir) == n),
        "the file holds {}, not {n}",
        stored(dir)
    );
    std::thread::sleep(Duration::from_millis(300));
}

/// `n` visits on `conn`; returns the last count.
fn visit_n(conn: &mut Conn, n: usize) -> u64 {
    (0..n).map(|_| visit_json(conn).unwrap()).last().unwrap()
}

/// A stalled writer (SIGSTOP, as a hung disk leaves it): `/readyz` goes 503 with the reason once
/// a write has gone unanswered for the stall bound, the stall counts as a failed write, and
/// readiness returns when the writer answers. Stalled again, a SIGTERM still ends the process
/// within the final write's bound: exit 1, saying how many visits it could not persist. The
/// writer does not outlive it.
#[test]
fn a_stuck_writer_turns_readiness_red_and_a_stop_still_ends_in_time() {
    let dir = TempDir::new("stuck");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    assert_eq!(visit_n(&mut conn, 100), 100);
    wait_stored(&dir, 100);
    let writer = writer_pid(&svc);
    kill(writer, libc::SIGSTOP);
    assert_eq!(visit_n(&mut conn, 300), 400);
    // Not at once: a slow write is no stall.
    assert_eq!(readyz(&svc).0, 200, "{}", svc.logs());
    assert!(
        eventually(STALL_TIMEOUT + FLUSH_INTERVAL * 3, || readyz(&svc).0 == 503),
        "{}",
        svc.logs()
    );
    let reason = json_field(&readyz(&svc).1, "reason");
    assert!(
        reason.contains("has not answered")
            && reason.contains("the visits file holds 100, the count is 400"),
        "{reason}"
    );
    assert!(
        http::get(svc.addr, "/metrics")
            .body
            .lines()
            .any(|l| l == "warpwatch_visits_flush_failures_total 1"),
        "the stall is not counted as a failed write"
    );
    assert!(svc.logged("has not answered"), "{}", svc.logs());

    // The disk comes back: so does readiness, and the file catches up.
    kill(writer, libc::SIGCONT);
    assert!(eventually(Duration::from_secs(5), || readyz(&svc).0 == 200));
    wait_stored(&dir, 400);
    assert!(
        svc.logged("the visits writer answered again"),
        "{}",
        svc.logs()
    );

    kill(writer, libc::SIGSTOP);
    assert_eq!(visit_n(&mut conn, 300), 700);
    drop(conn);
    // The next tick's write is sent, and never answered.
    std::thread::sleep(FLUSH_INTERVAL * 2);
    let asked = std::time::Instant::now();
    svc.signal(libc::SIGTERM);
    let status = svc.wait(Duration::from_secs(15));
    let took = asked.elapsed();
    assert!(
        took >= PERSIST_TIMEOUT - Duration::from_millis(200)
            && took < PERSIST_TIMEOUT + Duration::from_secs(2),
        "stopped after {took:?}; {}",
        svc.logs()
    );
    assert_eq!(status.code(), Some(1), "{}", svc.logs());
    assert!(
        svc.logs().contains(
            "stopped without persisting the last 300 visits (the visits file holds 400, the count is 700)"
        ) && svc.logs().contains("did not finish within 3s"),
        "{}",
        svc.logs()
    );
    assert_eq!(stored(&dir), 400);
    assert_writer_gone(writer, "(stuck) outlived the service");
}

/// A writer killed under a running service (by hand, by the OOM killer) is not replaced, but the
/// final write at the stop still happens, from the service itself: no visit is lost.
#[test]
fn a_killed_writer_still_gets_the_final_write() {
    let dir = TempDir::new("killed-writer");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    let writer = writer_pid(&svc);
    kill(writer, libc::SIGKILL);
    assert_eq!(visit_n(&mut conn, 20), 20);
    assert!(
        eventually(Duration::from_secs(5), || readyz(&svc).0 == 503),
        "{}",
        svc.logs()
    );
    assert!(
        json_field(&readyz(&svc).1, "reason").contains("the visits writer process is gone"),
        "{}",
        svc.logs()
    );
    drop(conn);
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
    assert_eq!(stored(&dir), 20);
    assert!(svc.logs().contains("20 visits persisted"), "{}", svc.logs());
}

/// A second stop signal (SIGINT after SIGTERM) ends the process at once, even while it waits for
/// a stuck writer, and says how many visits are not persisted (exit 1), or that none are lost
/// when the file already holds the count (exit 0).
#[test]
fn a_second_stop_signal_ends_the_process_at_once() {
    // Nothing unwritten: the writer is stuck on an idle check.
    let dir = TempDir::new("second-signal-idle");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    assert_eq!(visit_n(&mut conn, 7), 7);
    drop(conn);
    wait_stored(&dir, 7);
    kill(writer_pid(&svc), libc::SIGSTOP);
    std::thread::sleep(FLUSH_INTERVAL * 2);
    svc.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    svc.signal(libc::SIGTERM);
    assert_eq!(
        svc.wait(Duration::from_secs(2)).code(),
        Some(0),
        "{}",
        svc.logs()
    );
    assert!(
        svc.logs()
            .contains("SIGTERM received again: stopped at once; 7 visits persisted"),
        "{}",
        svc.logs()
    );
    drop(dir);

    let dir = TempDir::new("second-signal");
    let mut svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    assert_eq!(visit_n(&mut conn, 10), 10);
    wait_stored(&dir, 10);
    let writer = writer_pid(&svc);
    kill(writer, libc::SIGSTOP);
    assert_eq!(visit_n(&mut conn, 5), 15);
    drop(conn);
    // The next tick's write is sent, and never answered.
    std::thread::sleep(FLUSH_INTERVAL * 2);
    svc.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!process_is_gone(svc.pid()), "{}", svc.logs());
    let asked = std::time::Instant::now();
    svc.signal(libc::SIGINT);
    let status = svc.wait(Duration::from_secs(15));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "a second signal took {:?} to end the process; {}",
        asked.elapsed(),
        svc.logs()
    );
    assert_eq!(status.code(), Some(1), "{}", svc.logs());
    assert!(
        svc.logs().contains("SIGINT received again")
            && svc.logs().contains("without persisting the last 5 visits"),
        "{}",
        svc.logs()
    );
    assert_eq!(stored(&dir), 10);
    assert_writer_gone(writer, "outlived the service");
}

/// Links in the data directory are never written through: a `.visits.tmp` that leads to another
/// file makes every write fail (503 naming the path; the other file untouched) until it is
/// removed; a `lock` that is a symbolic link or a hard link to another file is refused at start
/// (exit 1, naming the path), never truncated.
#[test]
fn links_in_the_data_directory_are_never_written_through() {
    let dir = TempDir::new("links");
    let elsewhere = TempDir::new("links-victim");
    let victim = elsewhere.file("precious");
    std::fs::write(&victim, "precious\n").unwrap();
    let temp = dir.file(".visits.tmp");
    // A regular file there is taken for the leftover of a write cut short: its name is removed
    // (here a hard link: the file it shares stays whole) and the write goes through.
    std::fs::hard_link(&victim, &temp).unwrap();
    let mut svc = Service::start(Some(dir.path()));
    assert_eq!(readyz(&svc).0, 200, "{}", svc.logs());
    assert_eq!(stored(&dir), 0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!temp.exists());
    assert_eq!(svc.stop().code(), Some(0));

    std::os::unix::fs::symlink(&victim, &temp).unwrap();
    let svc = Service::start(Some(dir.path()));
    let mut conn = Conn::open(svc.addr).unwrap();
    assert_eq!(visit_n(&mut conn, 3), 3);
    std::thread::sleep(FLUSH_INTERVAL * 2);
    let (status, body) = readyz(&svc);
    assert_eq!(status, 503, "{body}");
    let reason = json_field(&body, "reason");
    assert!(
        reason.contains(&format!(
            "{} is a symbolic link to {}",
            temp.display(),
            victim.display()
        )) && reason.contains("refusing to write through it"),
        "{reason}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(stored(&dir), 0, "written through the link");
    // Once the link is gone, the next write goes through.
    std::fs::remove_file(&temp).unwrap();
    assert!(eventually(Duration::from_secs(5), || readyz(&svc).0 == 200));
    assert_eq!(stored(&dir), 3);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    drop(conn);
    drop(svc);

    let lock = dir.file("lock");
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the lock file {} is a symbolic link to {}",
            lock.display(),
            victim.display()
        )) && stderr.contains("Remove it"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    std::fs::remove_file(&lock).unwrap();
    std::fs::hard_link(&victim, &lock).unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the lock file {} is a file with 2 names",
            lock.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// A `visits` that is a symbolic link is refused with exit 3, dangling (a volume not mounted yet
/// must not look like a first start) or not (its target is left alone).
#[test]
fn a_visits_symlink_dangling_or_not_is_refused() {
    let dir = TempDir::new("visits-link");
    let path = dir.file("visits");
    let volume = TempDir::new("visits-link-volume");
    let target = volume.file("not-mounted/visits");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot read the visits file {}: it is a symbolic link to {}",
            path.display(),
            target.display()
        )) && stderr.contains("never followed"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting from 0"), "{stderr}");

    std::fs::create_dir(volume.file("not-mounted")).unwrap();
    std::fs::write(&target, "42\n").unwrap();
    let (code, stderr) = start_refused(&dir);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "42\n");
    assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
}

/// Once its data directory (`remove` = rm -rf) or its lock file (`rm lock`) is gone, a running
/// service reports it (503 with `reason`, an error line) and never writes again, so a second
/// instance that starts on the same path keeps its own count; the first one's stop says how many
/// visits it could not persist (exit 1).
fn a_newer_instance_keeps_its_count_after(remove: impl Fn(&TempDir), reason: &str) {
    let dir = TempDir::new("taken-over");
    let mut first = Service::start(Some(dir.path()));
    let mut old = Conn::open(first.addr).unwrap();
    assert_eq!(visit_n(&mut old, 30), 30);
    wait_stored(&dir, 30);
    remove(&dir);
    assert!(
        eventually(FLUSH_INTERVAL * 3, || readyz(&first).0 == 503),
        "{}",
        first.logs()
    );
    let said = json_field(&readyz(&first).1, "reason");
    assert!(
        said.contains(reason) && said.contains("no longer persisted"),
        "{said}"
    );
    assert!(
        first.logged("stops writing the visits file"),
        "{}",
        first.logs()
    );
    // Reported once, not again on every tick.
    std::thread::sleep(FLUSH_INTERVAL * 2);
    assert!(
        http::get(first.addr, "/metrics")
            .body
            .lines()
            .any(|l| l == "warpwatch_visits_flush_failures_total 1"),
        "{}",
        first.logs()
    );

    let mut second = Service::start(Some(dir.path()));
    let mut new = Conn::open(second.addr).unwrap();
    let theirs = visit_n(&mut new, 5);
    // The first keeps counting (and answering) but never writes over the second's file.
    assert_eq!(visit_n(&mut old, 50), 80);
    std::thread::sleep(FLUSH_INTERVAL * 3);
    assert_eq!(stored(&dir), theirs, "{}", first.logs());
    drop(old);
    assert_eq!(first.stop().code(), Some(1), "{}", first.logs());
    assert!(
        first.logs().contains(
            "stopped without persisting the last 50 visits (the visits file holds 30, the count is 80)"
        ),
        "{}",
        first.logs()
    );
    assert_eq!(stored(&dir), theirs);
    drop(new);
    assert_eq!(second.stop().code(), Some(0), "{}", second.logs());
    assert_eq!(stored(&dir), theirs);
}

#[test]
fn a_removed_data_directory_is_never_written_behind_a_newer_instance() {
    a_newer_instance_keeps_its_count_after(
        |dir| std::fs::remove_dir_all(dir.path()).unwrap(),
        "is gone",
    );
}

#[test]
fn a_replaced_data_directory_is_never_written_behind_a_newer_instance() {
    let elsewhere = TempDir::new("moved-away");
    a_newer_instance_keeps_its_count_after(
        |dir| {
            std::fs::rename(dir.path(), elsewhere.file("data")).unwrap();
            std::fs::create_dir(dir.path()).unwrap();
        },
        "is no longer the directory this process locked",
    );
}

#[test]
fn a_removed_or_replaced_lock_file_is_never_written_behind_a_newer_instance() {
    a_newer_instance_keeps_its_count_after(
        |dir| std::fs::remove_file(dir.file("lock")).unwrap(),
        "was removed",
    );
    a_newer_instance_keeps_its_count_after(
        |dir| {
            std::fs::remove_file(dir.file("lock")).unwrap();
            std::fs::write(dir.file("lock"), "").unwrap();
        },
        "was replaced",
    );
}

/// A data directory whose parent directory became a file (so its path now fails with "Not a
/// directory") is gone too: reported, and never written again.
#[test]
fn a_data_directory_whose_parent_became_a_file_is_gone() {
    let top = TempDir::new("parent-file");
    let parent = top.file("parent");
    let data = parent.join("data");
    let svc = Service::start(Some(&data));
    let mut conn = Conn::open(svc.addr).unwrap();
    assert_eq!(visit_n(&mut conn, 3), 3);
    std::fs::remove_dir_all(&parent).unwrap();
    std::fs::write(&parent, "a file now\n").unwrap();
    assert!(
        eventually(FLUSH_INTERVAL * 3, || readyz(&svc).0 == 503),
        "{}",
        svc.logs()
    );
    let said = json_field(&readyz(&svc).1, "reason");
    assert!(
        said.contains(&format!("the data directory {} is gone", data.display()))
            && said.contains("no longer persisted"),
        "{said}"
    );
}

/// Each write is made durable: the writer fsyncs the temp file before the rename and the
/// directory after it (seen in its system calls), so a power loss leaves the old or the new
/// count, never a file that is missing or empty.
#[test]
fn each_write_fsyncs_the_file_then_renames_then_fsyncs_the_directory() {
    let dir = TempDir::new("fsync");
    let svc = Service::start(Some(dir.path()));
    let writer = writer_pid(&svc);
    let trace = common::Strace::attach(
        writer,
        "fsync,fdatasync,rename,renameat,renameat2",
        &[],
        &dir.file("strace"),
    );
    let mut conn = Conn::open(svc.addr).unwrap();
    let last = visit_n(&mut conn, 2);
    wait_stored(&dir, last);
    let lines = trace.detach();
    // `fsync(FD)` as Some(FD), a rename as None.
    let calls: Vec<Option<&str>> = lines
        .lines()
        .filter_map(|l| {
            if l.contains("rename") {
                return Some(None);
            }
            let fd = l.split("sync(").nth(1)?.split(')').next()?;
            Some(Some(fd))
        })
        .collect();
    // The file's descriptor is synced before the rename, another one (the directory's) after.
    assert!(
        calls.windows(3).any(|w| matches!(
            w,
            [Some(file), None, Some(directory)] if file != directory
        )),
        "no fsync of the file, rename, fsync of the directory:\n{lines}"
    );
}

/// A data directory path that cannot be resolved for a while for another reason than being gone
/// (here a symbolic link on the way turned into a loop) proves nothing either way: writes pause
/// (503 with the reason) and resume once the path leads to the directory again.
#[test]
fn an_unresolvable_data_directory_path_pauses_writes_until_it_resolves() {
    let top = TempDir::new("path-loop");
    std::fs::create_dir(top.file("real")).unwrap();
    let link = top.file("link");
    std::os::unix::fs::symlink("real", &link).unwrap();
    let data = link.join("data");
    let svc = Service::start(Some(&data));
    let mut conn = Conn::open(svc.addr).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("link", &link).unwrap();
    assert_eq!(visit_n(&mut conn, 4), 4);
    assert!(
        eventually(FLUSH_INTERVAL * 3, || readyz(&svc).0 == 503),
        "{}",
        svc.logs()
    );
    let said = json_field(&readyz(&svc).1, "reason");
    assert!(
        said.contains(&format!(
            "cannot check the data directory {}",
            data.display()
        )),
        "{said}"
    );
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("real", &link).unwrap();
    assert!(
        eventually(FLUSH_INTERVAL * 3, || readyz(&svc).0 == 200),
        "{}",
        svc.logs()
    );
    let written = std::fs::read_to_string(top.file("real/data/visits")).unwrap();
    assert_eq!(written.trim(), "4");
}
