//! `warpwatch probe`: an HTTP/1.1 health probe for container healthchecks and systemd, so images
//! need neither curl nor wget.
//!
//! One GET through hyper's client connection on a current-thread runtime, under one overall
//! deadline that covers name resolution, connecting, sending and the answer's head. Exit 0 on
//! 2xx; 1 with a one-line reason otherwise. (Usage errors, exit 2, are caught by the command
//! line in `cli` and by [`Target::parse`].)

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONNECTION, HOST, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{self, EnvLookup, UsageError};
use crate::exit::{EXIT_FAILURE, EXIT_USAGE};
use crate::logging::escape;

/// Overall deadline when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest accepted `--timeout`, in seconds (a day: anything longer is a typo).
const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The `Host` header: the authority as written.
    authority: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, UsageError> {
        let bad = |why: &str| {
            UsageError(format!(
                "invalid URL '{url}': {why}; expected http://HOST[:PORT][/PATH], e.g. http://127.0.0.1:8080/healthz"
            ))
        };
        // A fragment is for the client alone; it is never sent.
        let without_fragment = url.split('#').next().unwrap_or_default();
        let uri: Uri = without_fragment.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => {}
            Some(s) if s.eq_ignore_ascii_case("https") => {
                return Err(bad(
                    "https is not supported (the probe is for plain-HTTP local health endpoints)",
                ));
            }
            _ => return Err(bad("it must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority.host();
        // After the host: nothing, or ':' and a port (http::Uri lets "h:port" and "h:" through).
        let port = match &authority.as_str()[host.len()..] {
            "" => 80,
            rest => rest
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            path,
            authority: authority.as_str().to_owned(),
        })
    }
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

/// `--timeout SECONDS`, as a clap value parser (clap names the flag in its error).
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT_SECONDS)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!(
                "expected a number of seconds greater than 0 and at most {MAX_TIMEOUT_SECONDS}, e.g. 3 or 0.5"
            )
        })
}

/// `warpwatch probe [--timeout SECONDS] [URL]`, once the command line is parsed.
pub fn main(url: Option<String>, timeout: Duration, env: EnvLookup<'_>) -> ExitCode {
    let target = match url.map_or_else(|| default_url(env), Ok) {
        Ok(url) => Target::parse(&url).map(|t| (url, t)),
        Err(e) => Err(e),
    };
    let (url, target) = match target {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warpwatch probe: {}", escape(&e.to_string()));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // What the probe prints comes from its argument and from the server it asked: one line each.
    let url = escape(&url);
    match get(&target, timeout) {
        Ok(status) if (200..300).contains(&status.code) => {
            println!("ok: {url} answered {}", escape(&status.line));
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("unhealthy: {url} answered {}", escape(&status.line));
            ExitCode::from(EXIT_FAILURE)
        }
        Err(reason) => {
            eprintln!("unhealthy: {url}: {}", escape(&reason.to_string()));
            ExitCode::from(EXIT_FAILURE)
        }
    }
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    // What the probe was doing, for the timeout's message.
    let step = RefCell::new(String::new());
    let outcome =
        runtime.block_on(async { tokio::time::timeout(timeout, exchange(target, &step)).await });
    // getaddrinfo cannot be cancelled: a resolver that never answers keeps its blocking thread,
    // which dropping the runtime would wait for. The process exits right after, ending it.
    runtime.shutdown_background();
    outcome.unwrap_or_else(|_| {
        Err(format!(
            "timed out after {} {}",
            seconds(timeout),
            step.borrow()
        ))
    })
}

async fn exchange(target: &Target, step: &RefCell<String>) -> Result<Status, String> {
    let host = target.host.as_str();
    *step.borrow_mut() = format!("resolving {host}");
    let addrs = tokio::net::lookup_host((host, target.port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last_error = format!("cannot resolve {host}: no addresses");
    let mut stream = None;
    for addr in addrs {
        *step.borrow_mut() = format!("connecting to {addr}");
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = describe_io(&e),
        }
    }
    let stream = stream.ok_or(last_error)?;

    *step.borrow_mut() = "waiting for the answer".to_owned();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| describe_hyper(&e))?;
    // Drives the connection while the request waits; it ends with the runtime.
    tokio::spawn(connection);
    let request = Request::get(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(
            USER_AGENT,
            HeaderValue::from_static(concat!("warpwatch-probe/", env!("CARGO_PKG_VERSION"))),
        )
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| describe_hyper(&e))?;
    let status = response.status();
    // hyper keeps the reason phrase only when it differs from the standard one.
    let reason = response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .or_else(|| status.canonical_reason().map(str::to_owned))
        .unwrap_or_default();
    Ok(Status {
        code: status.as_u16(),
        line: format!("{} {reason}", status.as_u16())
            .trim_end()
            .to_owned(),
    })
}

fn describe_hyper(e: &hyper::Error) -> String {
    if e.is_parse() || e.is_parse_status() {
        return format!("not an HTTP answer ({e})");
    }
    if e.is_incomplete_message() {
        return "connection closed without a complete answer".to_owned();
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return describe_io(io);
        }
        source = s.source();
    }
    e.to_string()
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
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
    use std::ffi::OsString;

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
        assert_eq!(t.authority, "[::1]:9090");
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
            "127.0.0.1:8080",
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
    fn timeouts() {
        for bad in ["0", "-1", "nan", "inf", "86401", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(parse_timeout("0.5").unwrap(), Duration::from_millis(500));
    }
}
