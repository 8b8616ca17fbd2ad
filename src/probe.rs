//! `warpwatch probe`: a dependency-free HTTP/1.1 health probe for container healthchecks and
//! systemd, so images need neither curl nor wget.
//!
//! Plain blocking std networking: one GET, one overall deadline, the status line is all it reads.
//! Exit 0 on 2xx; 1 with a one-line reason otherwise; 2 for usage errors.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::{self, ArgReader, ENV_ADDR, ENV_PORT, EnvLookup, UsageError};
use crate::exit::{EXIT_FAILURE, EXIT_USAGE};

/// Overall deadline when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest accepted `--timeout`, in seconds (a day: anything longer is a typo).
const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// Largest status line read before giving up on the answer.
const MAX_HEAD: usize = 8 * 1024;

fn usage() -> String {
    format!(
        "\
Usage: warpwatch probe [--timeout SECONDS] [URL]

HTTP GET URL and exit 0 on a 2xx answer, {EXIT_FAILURE} otherwise (with a one-line reason), {EXIT_USAGE} on bad usage.
URL defaults to this service's own /healthz, at the address {ENV_ADDR} or {ENV_PORT} configure
(127.0.0.1 when listening on all interfaces). Only http:// URLs are supported.

Options:
  --timeout SECONDS   overall deadline (connect, send, first line of the answer); default {}",
        seconds(DEFAULT_TIMEOUT)
    )
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, UsageError> {
        let bad = |why: &str| {
            UsageError(format!(
                "invalid URL '{url}': {why}; expected http://HOST[:PORT][/PATH], e.g. http://127.0.0.1:8080/healthz"
            ))
        };
        let rest = if let Some(r) = strip_prefix_ignore_case(url, "http://") {
            r
        } else if strip_prefix_ignore_case(url, "https://").is_some() {
            return Err(bad(
                "https is not supported (the probe is for plain-HTTP local health endpoints)",
            ));
        } else {
            return Err(bad("it must start with http://"));
        };
        // A fragment is for the client alone; it is never sent.
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("only ':PORT' may follow ']'"))?,
                ),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("the path contains spaces or control characters"));
        }
        Ok(Target {
            host: host.to_owned(),
            port,
            path,
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The service's own `/healthz` URL, derived like the server's listen address.
pub fn default_url(env: EnvLookup<'_>) -> Result<String, UsageError> {
    let addr = config::addr_from_env(env)?;
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!(
        "http://{}/healthz",
        SocketAddr::new(ip, addr.port())
    ))
}

/// `warpwatch probe ARGS`.
pub fn main(args: &[OsString], env: EnvLookup<'_>) -> ExitCode {
    let (url, timeout) = match parse_args(args, env) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("warpwatch probe: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let target = match Target::parse(&url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warpwatch probe: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match get(&target, timeout) {
        Ok(status) if (200..300).contains(&status.code) => {
            println!("ok: {url} answered {}", status.line);
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("unhealthy: {url} answered {}", status.line);
            ExitCode::from(EXIT_FAILURE)
        }
        Err(reason) => {
            eprintln!("unhealthy: {url}: {reason}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `Ok(None)` means `--help`.
fn parse_args(
    args: &[OsString],
    env: EnvLookup<'_>,
) -> Result<Option<(String, Duration)>, UsageError> {
    let mut timeout = DEFAULT_TIMEOUT;
    let mut url = None;
    let mut args = ArgReader::new(args);
    while let Some(arg) = args.next_arg()? {
        match arg {
            "-h" | "--help" => return Ok(None),
            "--timeout" => {
                timeout = parse_timeout(args.value(arg, "in seconds, e.g. --timeout 3")?)?;
            }
            flag if flag.starts_with('-') => {
                return Err(UsageError(format!(
                    "unknown option '{flag}'; usage: warpwatch probe [--timeout SECONDS] [URL]"
                )));
            }
            positional if url.is_none() => url = Some(positional.to_owned()),
            extra => {
                return Err(UsageError(format!(
                    "unexpected argument '{extra}': give at most one URL"
                )));
            }
        }
    }
    let url = match url {
        Some(u) => u,
        None => default_url(env)?,
    };
    Ok(Some((url, timeout)))
}

fn parse_timeout(value: &str) -> Result<Duration, UsageError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT_SECONDS)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            UsageError(format!(
                "invalid --timeout '{value}': expected a number of seconds greater than 0 and at most \
                 {MAX_TIMEOUT_SECONDS}, e.g. 3 or 0.5"
            ))
        })
}

/// The status line of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    /// e.g. `500 Internal Server Error`.
    pub line: String,
}

/// GETs `target` within `timeout`; `Err` is a one-line reason.
pub fn get(target: &Target, timeout: Duration) -> Result<Status, String> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out after {}", seconds(timeout)))
    };
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("cannot resolve {}: no addresses", target.host));
    }
    let mut last_error = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, remaining()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(describe(&e, timeout)),
        }
    }
    let mut stream = stream.ok_or_else(|| last_error.unwrap_or_default())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: warpwatch-probe/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_header(),
        crate::VERSION
    );
    stream
        .set_write_timeout(Some(remaining()?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("cannot send the request: {}", describe(&e, timeout)))?;

    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&head[..end]);
        }
        if head.len() > MAX_HEAD {
            return Err(format!(
                "no HTTP status line in the first {} KiB of the answer",
                MAX_HEAD / 1024
            ));
        }
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|e| describe(&e, timeout))?;
        match stream.read(&mut buf) {
            Ok(0) if head.is_empty() => {
                return Err("connection closed without an answer".to_owned());
            }
            Ok(0) => return Err("connection closed in the middle of the status line".to_owned()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("no answer: {}", describe(&e, timeout))),
        }
    }
}

fn parse_status_line(line: &[u8]) -> Result<Status, String> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if version.starts_with("HTTP/") && (100..1000).contains(&code) => Ok(Status {
            code,
            line: text[version.len() + 1..].trim_end().to_owned(),
        }),
        _ => Err(format!("not an HTTP answer: {:?}", truncate(&text, 60))),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn describe(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("timed out after {}", seconds(timeout))
        }
        io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing is listening there)".to_owned()
        }
        io::ErrorKind::ConnectionReset => "connection reset by the server".to_owned(),
        _ => e.to_string(),
    }
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/healthz").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/healthz")
        );
        let t = Target::parse("HTTP://[::1]:9090/-/ready?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 9090, "/-/ready?x=1")
        );
        assert_eq!(t.host_header(), "[::1]:9090");
        let t = Target::parse("http://grafana?x").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/?x"));
        let t = Target::parse("http://[::1]/a?b#frag").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/a?b"));
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://h:port/",
            "http://u@h/",
            "http://h/a b",
            "http://h:0/",
            "http://[::1]x/",
            "http://[::1]:/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn default_url_follows_the_listen_address() {
        let env = |name: &str| (name == "PORT").then(|| OsString::from("9000"));
        assert_eq!(default_url(&env).unwrap(), "http://127.0.0.1:9000/healthz");
        let env = |name: &str| (name == "WARPWATCH_ADDR").then(|| OsString::from("[::]:81"));
        assert_eq!(default_url(&env).unwrap(), "http://[::1]:81/healthz");
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 503 Service Unavailable")
                .unwrap()
                .code,
            503
        );
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
        for bad in ["0", "-1", "nan", "inf", "86401", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(parse_timeout("0.5").unwrap(), Duration::from_millis(500));
    }
}
