//! The probe's deadline covers name resolution: run in a network and mount namespace of its own
//! whose /etc/resolv.conf names a DNS server on 127.0.0.1 that never answers (a bound UDP socket
//! nobody reads), `warpwatch probe --timeout 1 http://HOSTNAME/` must give up after 1 s, not after
//! the resolver's own timeouts. The only traffic is to 127.0.0.1 inside that namespace.

mod common;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TempDir, stderr_of, wait_output};

/// How long past its deadline the probe may take to exit (process start and teardown).
const EXIT_MARGIN: Duration = Duration::from_millis(500);

/// A name that is in no hosts file, so resolving it asks the (silent) DNS server.
const HOSTNAME: &str = "warpwatch-probe-test.invalid";

/// Everything the child needs, prepared before `fork`: between `fork` and `exec` only
/// async-signal-safe calls on these buffers are allowed.
struct Sandbox {
    uid_map: CString,
    gid_map: CString,
    resolv_conf: CString,
}

impl Sandbox {
    fn new(resolv_conf: &std::path::Path) -> Sandbox {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Sandbox {
            uid_map: CString::new(format!("0 {uid} 1")).unwrap(),
            gid_map: CString::new(format!("0 {gid} 1")).unwrap(),
            resolv_conf: CString::new(resolv_conf.as_os_str().as_bytes()).unwrap(),
        }
    }

    /// In the child: new user, network and mount namespaces; loopback up; our resolv.conf bound
    /// over /etc/resolv.conf; a UDP socket on 127.0.0.1:53 that the probe inherits and never
    /// reads, so queries are accepted and never answered.
    fn enter(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(rc)
            }
        };
        // SAFETY: plain syscalls on NUL-terminated buffers owned by `self` and on stack values.
        unsafe {
            check(libc::unshare(
                libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS,
            ))?;
            write_file(c"/proc/self/setgroups", c"deny")?;
            write_file(c"/proc/self/uid_map", &self.uid_map)?;
            write_file(c"/proc/self/gid_map", &self.gid_map)?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                self.resolv_conf.as_ptr(),
                c"/etc/resolv.conf".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;

            let fd = check(libc::socket(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                0,
            ))?;
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
                *dst = *src as libc::c_char;
            }
            check(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr))?;
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr))?;
            libc::close(fd);

            // No CLOEXEC: the probe itself holds the silent server's socket.
            let dns = check(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0))?;
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = 53u16.to_be();
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            check(libc::bind(
                dns,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ))?;
        }
        Ok(())
    }
}

/// SAFETY: async-signal-safe (open, write, close); `path` and `text` are NUL-terminated.
unsafe fn write_file(path: &std::ffi::CStr, text: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: see the function's contract.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = text.to_bytes().len();
        let written = libc::write(fd, text.as_ptr().cast(), len);
        libc::close(fd);
        if written != len as isize {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn timeout_covers_an_unresponsive_resolver() {
    let dir = TempDir::new("probe-dns");
    let resolv_conf = dir.file("resolv.conf");
    // glibc's defaults spelled out: 2 tries of 5 s each, far beyond the probe's 1 s.
    std::fs::write(
        &resolv_conf,
        "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n",
    )
    .unwrap();
    let sandbox = Sandbox::new(&resolv_conf);

    let timeout = Duration::from_secs(1);
    let url = format!("http://{HOSTNAME}:8080/healthz");
    let mut cmd = common::command();
    cmd.args(["probe", "--timeout", "1", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: `enter` makes only async-signal-safe calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || sandbox.enter());
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run the probe in its own user, network and mount namespaces ({e}); \
             this test needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, \
             or run as root)"
        )
    });
    let out = wait_output(child, Duration::from_secs(20));
    let elapsed = started.elapsed();
    let stderr = stderr_of(&out);

    assert!(
        elapsed >= timeout && elapsed < timeout + EXIT_MARGIN,
        "the probe took {elapsed:?} with --timeout 1: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Timed out while resolving: the silent server was asked and kept the resolver waiting.
    assert!(
        stderr.contains(&format!("timed out after 1s resolving {HOSTNAME}")),
        "{stderr}"
    );
}
