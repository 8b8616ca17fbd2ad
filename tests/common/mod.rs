//! Helpers for the integration tests: run the real binary on a free port, talk HTTP/1.1 over real
//! sockets, and parse the Prometheus text exposition.
#![allow(dead_code)] // each test crate uses a different subset

pub mod exposition;
pub mod http;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_warpwatch");

/// A scratch directory under cargo's per-target temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with a clean environment (none of the variables it reads leak in from the caller).
pub fn command() -> Command {
    use warpwatch::config::{
        ENV_ADDR, ENV_DATA_DIR, ENV_HEADER_TIMEOUT, ENV_IDLE_TIMEOUT, ENV_LOG, ENV_PORT,
    };
    let mut cmd = Command::new(BIN);
    for var in [
        ENV_ADDR,
        ENV_DATA_DIR,
        ENV_PORT,
        ENV_LOG,
        ENV_HEADER_TIMEOUT,
        ENV_IDLE_TIMEOUT,
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the binary to completion. Every command run this way exits within a probe's timeout
/// (2 s at most in these tests), so 8 s means it never would: fail then, not after minutes.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(cmd, Duration::from_secs(8))
}

/// Runs `cmd` to completion; it must exit within `limit`.
pub fn run_command(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, limit)
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{BIN} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// A running service, killed on drop if a test fails before stopping it.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Starts on 127.0.0.1 port 0 with `data_dir` (if any), at log level info.
    pub fn start(data_dir: Option<&Path>) -> Service {
        let mut args = vec!["--addr".to_owned(), "127.0.0.1:0".to_owned()];
        if let Some(dir) = data_dir {
            args.push("--data-dir".to_owned());
            args.push(dir.display().to_string());
        }
        Service::start_with(&args, &[("RUST_LOG", "info")])
    }

    /// Starts with explicit arguments; learns the port from the startup log line.
    pub fn start_with(args: &[String], env: &[(&str, &str)]) -> Service {
        Service::spawn(service_command(args, env))
    }

    /// Like [`Service::start_with`], with the open-file limit (soft and hard) set to `nofile`.
    pub fn start_with_nofile(args: &[String], env: &[(&str, &str)], nofile: u64) -> Service {
        let mut cmd = service_command(args, env);
        limit_nofile(&mut cmd, nofile);
        Service::spawn(cmd)
    }

    /// Like [`Service::start_with`], with the open-file limit's soft and hard values set apart.
    pub fn start_with_nofile_soft(
        args: &[String],
        env: &[(&str, &str)],
        (soft, hard): (u64, u64),
    ) -> Service {
        let mut cmd = service_command(args, env);
        set_rlimit(&mut cmd, libc::RLIMIT_NOFILE, (soft, hard));
        Service::spawn(cmd)
    }

    /// Starts `cmd`, a command of the binary's own (see [`command`]) with `--addr`.
    pub fn spawn_command(cmd: Command) -> Service {
        Service::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Service {
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let addr = line.split("listening on http://").nth(1).map(|rest| {
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                });
                // Recorded before the address is announced, so a test never misses the line.
                sink.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "service did not report its address; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Service {
            child,
            addr,
            logs,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits up to 5 s for a log line containing `text` (the log reader runs behind the process).
    pub fn logged(&self, text: &str) -> bool {
        eventually(Duration::from_secs(5), || {
            self.logs.lock().unwrap().iter().any(|l| l.contains(text))
        })
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for the process to exit (within `limit`) and returns its status.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader ends at end of file: every line the process wrote is recorded.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "service did not exit within {limit:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(15))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn service_command(args: &[String], env: &[(&str, &str)]) -> Command {
    let mut cmd = command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Makes `cmd` start with `RLIMIT_NOFILE` = `nofile` (soft and hard, so it cannot be raised).
pub fn limit_nofile(cmd: &mut Command, nofile: u64) {
    set_rlimit(cmd, libc::RLIMIT_NOFILE, (nofile, nofile));
}

/// Makes `cmd` start with its address space (virtual memory) limited to `bytes`.
pub fn limit_address_space(cmd: &mut Command, bytes: u64) {
    set_rlimit(cmd, libc::RLIMIT_AS, (bytes, bytes));
}

fn set_rlimit(cmd: &mut Command, resource: libc::__rlimit_resource_t, (soft, hard): (u64, u64)) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(resource, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Resident set size of process `pid`, in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the `"key":<integer>` field of a flat JSON object (the service's JSON is machine-made,
/// but this parses it rather than matching the whole text).
pub fn json_u64(body: &str, key: &str) -> u64 {
    json_field(body, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not an integer in {body}"))
}

/// The raw value text of `key` in a flat JSON object; strings are returned unquoted (escapes kept).
pub fn json_field(body: &str, key: &str) -> String {
    let body = body.trim();
    assert!(
        body.starts_with('{') && body.ends_with('}'),
        "not a JSON object: {body}"
    );
    let needle = format!("\"{key}\":");
    let start = body
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        + needle.len();
    let rest = body[start..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        let mut end = 0;
        let bytes = s.as_bytes();
        while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
            end += 1;
        }
        s[..end].to_owned()
    } else {
        rest.split([',', '}']).next().unwrap().trim().to_owned()
    }
}

/// strace attached to a running process: the system calls it makes, seen from outside, and
/// faults injected into them (a slow disk, a slow `/proc`). Detaches on drop.
pub struct Strace {
    child: Child,
    out: PathBuf,
}

impl Strace {
    /// Attaches to every thread of `pid`, tracing `syscalls` (strace's `-e trace=` list) into
    /// `out`, with `extra` arguments (e.g. `-e inject=openat:delay_enter=600000`). Returns once
    /// strace reports the process attached.
    pub fn attach(pid: i32, syscalls: &str, extra: &[&str], out: &Path) -> Strace {
        let mut child = Command::new("strace")
            .args(["-f", "-p", &pid.to_string(), "-e"])
            .arg(format!("trace={syscalls}"))
            .args(extra)
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run strace ({e}): install it (Debian: apt-get install strace)")
            });
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        match lines.next() {
            Some(Ok(line)) if line.contains("attached") => {}
            other => {
                let _ = child.kill();
                panic!(
                    "strace did not attach to {pid}: {other:?} (ptrace needs root or CAP_SYS_PTRACE)"
                );
            }
        }
        // The other threads' "attached" lines follow at once; keep the pipe drained.
        std::thread::spawn(move || lines.for_each(drop));
        std::thread::sleep(Duration::from_millis(200));
        Strace {
            child,
            out: out.to_owned(),
        }
    }

    /// Detaches (SIGINT, as at a terminal) and returns every traced line.
    pub fn detach(mut self) -> String {
        self.stop();
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Closes `s` with a reset (SO_LINGER 0) instead of a normal close.
pub fn close_with_reset(s: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads the struct we own, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}
