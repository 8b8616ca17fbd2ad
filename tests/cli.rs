//! The command line: help, version, configuration errors, bind errors, and the probe.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Service, TempDir, run, stderr_of};

/// Arguments, environment, and the flag or variable the error must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

/// A help text mentions every one of `parts`.
fn mentions_all(help: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            help.contains(part),
            "help does not mention {part:?}: {help}"
        );
    }
}

#[test]
fn help_and_version() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    mentions_all(
        &help,
        &[
            "--addr",
            "--data-dir",
            "WARPWATCH_ADDR",
            "PORT",
            "$PORT",
            "RUST_LOG",
            "probe",
        ],
    );
    // Each timeout's line says what it bounds, its default and its variable (clap may wrap it).
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for (flag, bounds, default, var) in [
        (
            "--header-timeout <SECONDS>",
            "complete request head",
            "[default: 10]",
            "WARPWATCH_HEADER_TIMEOUT",
        ),
        (
            "--idle-timeout <SECONDS>",
            "kept-alive connection may sit idle",
            "[default: 30]",
            "WARPWATCH_IDLE_TIMEOUT",
        ),
    ] {
        let line = flat
            .split_once(flag)
            .map(|(_, rest)| rest.split(" --").next().unwrap_or_default())
            .unwrap_or_else(|| panic!("--help has no {flag}: {help}"));
        for part in [bounds, default, var] {
            assert!(line.contains(part), "{flag}: no {part:?} in {line:?}");
        }
    }
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("warpwatch {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["probe", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    mentions_all(
        &String::from_utf8_lossy(&out.stdout),
        &[
            "exit 0 on a 2xx answer",
            "/healthz",
            "Only http:// URLs",
            "--timeout",
        ],
    );
}

#[test]
fn invalid_configuration_exits_2_naming_the_setting() {
    let cases: &[Case] = &[
        (&["--addr", "localhost:80"], &[], "--addr"),
        (&["--addr"], &[], "--addr"),
        (&[], &[("WARPWATCH_ADDR", "8080")], "WARPWATCH_ADDR"),
        (&[], &[("PORT", "99999")], "PORT"),
        (&[], &[("PORT", "eighty")], "PORT"),
        (&["--data-dir", ""], &[], "--data-dir"),
        (&[], &[("RUST_LOG", "warpwatch=loud")], "RUST_LOG"),
        // env_logger would read a bare non-level word as a module name and silence everything.
        (&[], &[("RUST_LOG", "verbose")], "RUST_LOG"),
        (&["--header-timeout", "0"], &[], "--header-timeout"),
        (&["--idle-timeout", "3601"], &[], "--idle-timeout"),
        (
            &[],
            &[("WARPWATCH_IDLE_TIMEOUT", "1.5")],
            "WARPWATCH_IDLE_TIMEOUT",
        ),
        (
            &[],
            &[("WARPWATCH_HEADER_TIMEOUT", "ten")],
            "WARPWATCH_HEADER_TIMEOUT",
        ),
        (&["--verbose"], &[], "--verbose"),
        (&["serve"], &[], "serve"),
    ];
    for (args, env, named) in cases {
        let out = run(args, env);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} {env:?}: message does not name {named}: {stderr}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "one clear line expected: {stderr}"
        );
    }
    // The accepted form is spelled out.
    assert!(stderr_of(&run(&[], &[("WARPWATCH_ADDR", "x")])).contains("IP:PORT"));
    assert!(stderr_of(&run(&[], &[("RUST_LOG", "verbose")])).contains("MODULE=LEVEL"));
    assert!(stderr_of(&run(&["--idle-timeout", "0"], &[])).contains("from 1 to 3600"));
    // A usage error names the command it belongs to, and the help to read.
    let probe = stderr_of(&run(&["probe", "--retries", "3"], &[]));
    assert!(
        probe.starts_with("warpwatch probe: ") && probe.contains("see warpwatch probe --help"),
        "{probe}"
    );
    let server = stderr_of(&run(&["--retries", "3"], &[]));
    assert!(
        server.starts_with("warpwatch: ") && server.contains("see warpwatch --help"),
        "{server}"
    );
}

#[test]
fn data_dir_that_is_a_file_is_a_usage_error() {
    let dir = TempDir::new("cli-data-file");
    let file = dir.file("visits-dir");
    std::fs::write(&file, "").unwrap();
    let file = file.display().to_string();
    let cases: [Case; 2] = [
        (&["--data-dir", &file], &[], "--data-dir"),
        (&[], &[("WARPWATCH_DATA_DIR", &file)], "WARPWATCH_DATA_DIR"),
    ];
    for (args, env, named) in cases {
        let out = run(&[&["--addr", "127.0.0.1:0"], args].concat(), env);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{named}: {stderr}");
        assert!(
            stderr.contains(named) && stderr.contains(&file) && stderr.contains("not a directory"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    }
}

#[test]
fn data_dir_that_cannot_be_created_stops_the_start() {
    let dir = TempDir::new("cli-data-uncreatable");
    let file = dir.file("file");
    std::fs::write(&file, "").unwrap();
    // Tests run as root, so permissions cannot stop the creation: a regular file as parent can,
    // and so can /proc, where no directory can be made (and nothing is there to be read).
    let under_file = file.join("data").display().to_string();
    for (data_dir, os_error) in [
        (under_file.as_str(), "Not a directory (os error 20)"),
        (
            "/proc/warpwatch-test/data",
            "No such file or directory (os error 2)",
        ),
    ] {
        let out = run(&["--addr", "127.0.0.1:0", "--data-dir", data_dir], &[]);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot create the data directory {data_dir}: {os_error}"
            )),
            "{stderr}"
        );
        assert!(
            !stderr.contains("listening on"),
            "the port opened: {stderr}"
        );
    }
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--addr", &addr], &[]);
    refused_to_listen(&out, &addr, "in use");
    refused_to_listen(&out, &addr, "another process is listening there");
    // A filter that hides error lines, by level, by module or by message, still lets the
    // refusal through: once, in the usual line shape.
    for filter in [
        "error/zzz",
        "off",
        "warpwatch=off",
        "info,warpwatch::server=off",
    ] {
        let out = run(&["--addr", &addr], &[("RUST_LOG", filter)]);
        refused_to_listen(&out, &addr, "another process is listening there");
        let stderr = stderr_of(&out);
        let line = stderr.lines().find(|l| l.contains("cannot listen on"));
        assert!(
            line.is_some_and(|l| l.trim_start().starts_with("ERROR warpwatch::server")),
            "RUST_LOG={filter}: {stderr}"
        );
        // So does a usage error.
        let out = run(&["--addr", "nonsense"], &[("RUST_LOG", filter)]);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("invalid --addr 'nonsense'"), "{stderr}");
    }
}

/// The start failed with exit status 1 and one error line: cannot listen on `addr`, `advice`.
fn refused_to_listen(out: &std::process::Output, addr: &str, advice: &str) {
    let stderr = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains(advice),
        "{stderr}"
    );
    let errors = stderr.lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(errors, 1, "{stderr}");
}

/// Each cause of a failed bind gets its own advice, on one line, with exit status 1.
#[test]
fn bind_errors_say_what_to_do() {
    // An address of no local interface (TEST-NET-1, RFC 5737).
    refused_to_listen(
        &run(&["--addr", "192.0.2.1:8080"], &[]),
        "192.0.2.1:8080",
        "no local interface has that IP",
    );
    // A privileged port without CAP_NET_BIND_SERVICE: root drops it with setpriv (util-linux).
    // SAFETY: geteuid(2) only reads the process's credentials.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--inh-caps=-net_bind_service",
            "--bounding-set=-net_bind_service",
        ]);
        cmd.arg(common::BIN);
        cmd
    } else {
        common::command()
    };
    cmd.args(["--addr", "127.0.0.1:81"]);
    refused_to_listen(
        &common::run_command(cmd, Duration::from_secs(8)),
        "127.0.0.1:81",
        "ports below 1024 need privileges",
    );
}

/// Runs `warpwatch probe ARGS`, which must fail (exit 1) with one line naming `reason`.
fn probe_fails(args: &[&str], reason: &str) {
    let out = run(&[&["probe"], args].concat(), &[]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.contains(reason),
        "{args:?}: expected {reason:?} in {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
}

/// A one-shot HTTP server answering every connection with `answer` (or nothing at all).
fn fake_server(answer: Option<&'static str>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        match answer {
            Some(a) => {
                let _ = s.write_all(a.as_bytes());
            }
            None => std::thread::sleep(Duration::from_secs(3)),
        }
    });
    (url, handle)
}

/// A server that reads the request and resets the connection.
fn resetting_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        common::close_with_reset(s);
    });
    (url, handle)
}

#[test]
fn probe_exit_codes() {
    let svc = Service::start(None);
    let up = format!("http://{}/healthz", svc.addr);

    let out = run(&["probe", &up], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"));
    // The default URL is the service's own /healthz, found like the server finds its address.
    let port = svc.addr.port();
    let out = run(&["probe"], &[("PORT", &port.to_string())]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // All interfaces are probed on loopback, IPv4 and IPv6 alike.
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("ok: http://127.0.0.1:{port}/healthz answered 200")),
        "{out:?}"
    );
    // A specific address is probed as it is: another loopback IPv4 address, and an IPv4-mapped
    // IPv6 one (which reaches the IPv4 listener, where [::1] would be refused).
    let other = Service::start_with(&["--addr".into(), "127.0.0.2:0".into()], &[]);
    let mapped = format!("[::ffff:127.0.0.1]:{port}");
    for (addr, url) in [
        (
            other.addr.to_string(),
            format!("http://{}/healthz", other.addr),
        ),
        (mapped.clone(), format!("http://{mapped}/healthz")),
    ] {
        let out = run(&["probe"], &[("WARPWATCH_ADDR", &addr)]);
        assert_eq!(out.status.code(), Some(0), "{addr}: {}", stderr_of(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(&format!("ok: {url} answered 200")),
            "{out:?}"
        );
    }
    let v6 = Service::start_with(&["--addr".into(), "[::1]:0".into()], &[]);
    let any = format!("[::]:{}", v6.addr.port());
    let out = run(&["probe"], &[("WARPWATCH_ADDR", &any)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("ok: http://[::1]:{}/healthz", v6.addr.port())),
        "{out:?}"
    );
    let out = run(
        &["probe", "--timeout", "2"],
        &[("WARPWATCH_ADDR", &svc.addr.to_string())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // Non-2xx is a failure, with the status in the reason.
    probe_fails(&[&format!("http://{}/missing", svc.addr)], "404");

    // Down: nothing listens on a port we just released.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    probe_fails(&[&format!("http://{free}/healthz")], "connection refused");

    let (url, server) = fake_server(Some(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
    ));
    probe_fails(&[&url], "500 Internal Server Error");
    server.join().unwrap();

    // A server that accepts and never answers: the timeout bounds the probe.
    let (url, server) = fake_server(None);
    let started = Instant::now();
    probe_fails(&["--timeout", "0.5", &url], "timed out after 0.5s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.join().unwrap();

    // Not HTTP at all.
    let (url, server) = fake_server(Some("SSH-2.0-OpenSSH_9.6\r\n"));
    probe_fails(&[&url], "not an HTTP answer");
    server.join().unwrap();

    // Closed, or reset, before a complete answer.
    let (url, server) = fake_server(Some("HTTP/1.1 200 OK\r\nContent-"));
    probe_fails(&[&url], "connection closed without a complete answer");
    server.join().unwrap();
    let (url, server) = resetting_server();
    probe_fails(&[&url], "connection reset by the server");
    server.join().unwrap();

    // Usage errors are 2, and say what is wrong.
    for (url, why) in [
        ("https://127.0.0.1/healthz", "https is not supported"),
        ("ftp://127.0.0.1/healthz", "it must start with http://"),
    ] {
        let out = run(&["probe", url], &[]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains(why), "{url}: {}", stderr_of(&out));
    }
    for args in [
        &["probe", "https://127.0.0.1/healthz"][..],
        &["probe", "--timeout", "0", &up],
        &["probe", "--timeout"],
        &["probe", "127.0.0.1:8080"],
        &["probe", &up, &up],
    ] {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
    }
}

/// Compose files often pass `VAR=` through: an empty variable is no value, not an invalid one.
#[test]
fn empty_variables_count_as_unset() {
    let args = ["--addr", "127.0.0.1:0"].map(String::from);
    let env = [
        ("WARPWATCH_DATA_DIR", ""),
        ("WARPWATCH_HEADER_TIMEOUT", ""),
        ("WARPWATCH_IDLE_TIMEOUT", ""),
        ("RUST_LOG", ""),
    ];
    let mut svc = Service::start_with(&args, &env);
    let logs = svc.logs();
    for default in [
        "data dir: none, in memory",
        "log: info",
        "header timeout: 10s, idle timeout: 30s",
    ] {
        assert!(logs.contains(default), "no {default:?} in {logs}");
    }
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
}

/// The runtime starts one worker per CPU, as the startup line says.
#[test]
fn workers_follow_the_cpus() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let mut svc = Service::start(None);
    assert!(
        svc.logs().contains(&format!("workers: {cpus},")),
        "{cpus} CPUs: {}",
        svc.logs()
    );
    assert_eq!(svc.stop().code(), Some(0));
}

/// When the OS refuses the runtime a thread (a pids limit), the panic that follows is one error
/// line, not the standard hook's multi-line dump. The refusal is real: the process runs with a
/// limit of one process for its user (root ignores that limit, so root runs it as nobody).
#[test]
fn a_refused_thread_panics_in_one_error_line() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        cpus >= 2,
        "this test needs 2 CPUs: on one the service starts no thread that could be refused"
    );
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nproc=1:1");
    // SAFETY: geteuid(2) only reads the process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]);
    }
    cmd.args([common::BIN, "--addr", "127.0.0.1:0"]);
    let out = common::run_command(cmd, Duration::from_secs(8));
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("WARN")).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(
        lines[0].trim_start().starts_with("ERROR")
            && lines[0].contains("warpwatch::panic")
            && lines[0].contains("thread 'main' panicked at ")
            && lines[0].contains("can't spawn worker thread"),
        "{stderr}"
    );
}

/// What a forged log line would look like: a level and a target at the start of a line.
const FORGED: &str = "\n WARN warpwatch::fake > injected\u{1b}[2K\r";

/// Every stderr line of `stderr` is a line the program meant: none begins with the forged
/// event, none holds a raw control character; the forged text itself appears escaped.
fn no_forged_line(stderr: &str, what: &str) {
    for line in stderr.lines() {
        assert!(
            !line.trim_start().starts_with("WARN warpwatch::fake"),
            "{what}: a forged line: {stderr:?}"
        );
        assert!(
            !line.chars().any(char::is_control),
            "{what}: a raw control character: {line:?}"
        );
    }
}

/// A line break, carriage return or ESC in a value from the configuration or a client is
/// written escaped: one event stays one line, whatever the value (data directory, address,
/// timeout, unknown flag, probe URL, request bytes).
#[test]
fn values_with_line_breaks_cannot_forge_log_lines() {
    let dir = TempDir::new("forge");
    let data_dir = dir.file(&format!("data{FORGED}"));
    let args = [
        "--addr".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
    ];
    let mut svc = Service::start_with(&args, &[("RUST_LOG", "debug")]);
    // A client's request line with a line break and an escape sequence in it.
    let mut s = std::net::TcpStream::connect(svc.addr).unwrap();
    s.write_all(
        format!("GET /x{FORGED} HTTP/1.1\r\nHost: x\r\nUser-Agent: a{FORGED}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(svc.stop().code(), Some(0), "{}", svc.logs());
    let logs = svc.logs();
    no_forged_line(&logs, "service");
    assert!(
        logs.contains("data\\n WARN warpwatch::fake > injected\\u{1b}[2K\\r"),
        "the data directory is not in the startup line, escaped: {logs}"
    );

    let header_timeout = format!("3{FORGED}");
    let addr = format!("x{FORGED}");
    let url = format!("http://127.0.0.1:1/{FORGED}");
    let flag = format!("--bogus{FORGED}");
    for (args, code) in [
        (vec!["--addr", &addr], 2),
        (vec!["--header-timeout", &header_timeout], 2),
        (vec![&flag], 2),
        (vec!["probe", "--timeout", "1", &url], 2),
        (vec!["probe", "--timeout", &header_timeout], 2),
    ] {
        let out = run(&args, &[]);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        no_forged_line(&stderr, &format!("{args:?}"));
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("\\n WARN warpwatch::fake"),
            "{args:?}: {stderr}"
        );
    }
}
