//! Service configuration: the raw values the command line gathered, checked up front.
//!
//! The command line (`cli`) reads the flags and their variables (`--addr`/`WARPWATCH_ADDR`,
//! `--data-dir`/`WARPWATCH_DATA_DIR`, `--header-timeout`/`WARPWATCH_HEADER_TIMEOUT`,
//! `--idle-timeout`/`WARPWATCH_IDLE_TIMEOUT`) with clap; this module turns those values into a [`Config`],
//! adding the settings that have no flag (`PORT`, `RUST_LOG`). Precedence for each setting: flag,
//! then its variable, then the default. An empty variable counts as unset (compose files often
//! pass `VAR=` through). Every error names the flag or variable and the accepted form, and makes
//! the process exit with status 2.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Listen address when neither `--addr`, `WARPWATCH_ADDR` nor `PORT` is given.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
/// Log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG: &str = "info";

/// Longest wait for a complete request head, from a connection's opening or the end of its
/// previous response. Generous for any real client on any network; short enough that a flood of
/// half-sent requests drains by itself.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a kept-alive connection may wait for its next request, or a response for its reader.
/// Above Prometheus' default scrape interval (15 s), so a scraper keeps its connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest accepted connection timeout: an hour. Longer only lets idle clients hold connections.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

pub const ENV_ADDR: &str = "WARPWATCH_ADDR";
pub const ENV_PORT: &str = "PORT";
pub const ENV_DATA_DIR: &str = "WARPWATCH_DATA_DIR";
pub const ENV_LOG: &str = "RUST_LOG";
pub const ENV_HEADER_TIMEOUT: &str = "WARPWATCH_HEADER_TIMEOUT";
pub const ENV_IDLE_TIMEOUT: &str = "WARPWATCH_IDLE_TIMEOUT";

/// A configuration or usage error; always exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Reads one environment variable; injectable so parsing is testable without touching the process.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// A value as given, and the flag or variable it came from (which errors name).
#[derive(Debug, Clone, Copy)]
pub struct Given<'a> {
    pub value: &'a OsStr,
    pub source: &'a str,
}

/// What the flags (or their variables) gave; `None`: neither.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags<'a> {
    pub addr: Option<Given<'a>>,
    pub data_dir: Option<Given<'a>>,
    pub header_timeout: Option<Given<'a>>,
    pub idle_timeout: Option<Given<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub addr: SocketAddr,
    /// Where the `visits` file lives; `None` keeps the count in memory only.
    pub data_dir: Option<PathBuf>,
    /// The effective `RUST_LOG` filter.
    pub log: String,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Config {
    /// Checks what the flags gave, and reads `PORT` and `RUST_LOG` from `env`.
    pub fn resolve(flags: Flags<'_>, env: EnvLookup<'_>) -> Result<Config, UsageError> {
        let addr = match flags.addr {
            Some(g) => parse_addr(g.source, utf8(g)?)?,
            None => port_from_env(env)?,
        };
        let data_dir = match flags.data_dir {
            Some(g) => Some(parse_dir(g)?),
            None => None,
        };
        let header_timeout = match flags.header_timeout {
            Some(g) => parse_timeout(g)?,
            None => DEFAULT_HEADER_TIMEOUT,
        };
        let idle_timeout = match flags.idle_timeout {
            Some(g) => parse_timeout(g)?,
            None => DEFAULT_IDLE_TIMEOUT,
        };
        let log = match env_value(env, ENV_LOG)? {
            Some(v) => {
                validate_log_filter(&v)?;
                v
            }
            None => DEFAULT_LOG.to_owned(),
        };
        Ok(Config {
            addr,
            data_dir,
            log,
            header_timeout,
            idle_timeout,
        })
    }
}

/// The listen address from `WARPWATCH_ADDR`, else `PORT` (on all interfaces), else the default:
/// what the server uses when `--addr` is not given, and where the probe looks by default.
pub fn addr_from_env(env: EnvLookup<'_>) -> Result<SocketAddr, UsageError> {
    match env_value(env, ENV_ADDR)? {
        Some(v) => parse_addr(ENV_ADDR, &v),
        None => port_from_env(env),
    }
}

/// `PORT` on all interfaces, else the default.
fn port_from_env(env: EnvLookup<'_>) -> Result<SocketAddr, UsageError> {
    let Some(v) = env_value(env, ENV_PORT)? else {
        return Ok(DEFAULT_ADDR);
    };
    let port = v.trim().parse::<u16>().map_err(|_| {
        UsageError(format!(
            "invalid {ENV_PORT} '{v}': expected a port number from 0 to 65535, e.g. {ENV_PORT}=8080"
        ))
    })?;
    Ok(SocketAddr::new(DEFAULT_ADDR.ip(), port))
}

fn env_value(env: EnvLookup<'_>, name: &str) -> Result<Option<String>, UsageError> {
    match env(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => utf8(Given {
            value: &v,
            source: name,
        })
        .map(|s| Some(s.to_owned())),
    }
}

fn utf8<'a>(given: Given<'a>) -> Result<&'a str, UsageError> {
    given.value.to_str().ok_or_else(|| {
        UsageError(format!(
            "invalid {} {:?}: not valid UTF-8; use a UTF-8 value",
            given.source, given.value
        ))
    })
}

fn parse_addr(source: &str, value: &str) -> Result<SocketAddr, UsageError> {
    value.trim().parse::<SocketAddr>().map_err(|_| {
        UsageError(format!(
            "invalid {source} '{value}': expected IP:PORT, e.g. 0.0.0.0:8080, 127.0.0.1:8080 or [::]:8080 \
             (host names are not accepted)"
        ))
    })
}

/// A data directory path: not empty, and not something that exists but is no directory. Whether
/// it can be created is for the startup in `cli` to check, since that is no usage error.
fn parse_dir(given: Given<'_>) -> Result<PathBuf, UsageError> {
    let source = given.source;
    let expected = "expected a directory path (created if missing), e.g. /var/lib/warpwatch";
    if given.value.to_str().is_some_and(|s| s.trim().is_empty()) {
        return Err(UsageError(format!("invalid {source}: empty; {expected}")));
    }
    let dir = PathBuf::from(given.value);
    match std::fs::metadata(&dir) {
        Ok(meta) if !meta.is_dir() => Err(UsageError(format!(
            "invalid {source} '{}': it exists and is not a directory; {expected}",
            dir.display()
        ))),
        _ => Ok(dir),
    }
}

/// Whole seconds from 1 to [`MAX_TIMEOUT_SECS`].
fn parse_timeout(given: Given<'_>) -> Result<Duration, UsageError> {
    let source = given.source;
    let value = utf8(given)?;
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|s| (1..=MAX_TIMEOUT_SECS).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            UsageError(format!(
                "invalid {source} '{value}': expected whole seconds from 1 to {MAX_TIMEOUT_SECS}, e.g. 30"
            ))
        })
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `RUST_LOG` value against the subset of env_logger's syntax this service documents:
/// comma-separated `LEVEL` or `MODULE=LEVEL` directives, optionally followed by `/REGEX`.
/// env_logger itself only prints a warning and carries on with a filter the operator did not ask
/// for; and it reads a bare word that is no level (`RUST_LOG=verbose`) as a module name, which
/// silences every other module. So a bare word must be a level here.
pub fn validate_log_filter(spec: &str) -> Result<(), UsageError> {
    let bad = |why: &str| {
        UsageError(format!(
            "invalid {ENV_LOG} '{spec}': {why}; expected comma-separated LEVEL or MODULE=LEVEL \
             directives with LEVEL one of {}, e.g. {ENV_LOG}=info or {ENV_LOG}=warn,warpwatch=debug",
            LEVELS.join(", ")
        ))
    };
    // Anything after the first '/' is env_logger's message filter, not a directive.
    let directives = spec.split('/').next().unwrap_or_default();
    if spec.matches('/').count() > 1 {
        return Err(bad("more than one '/' message filter"));
    }
    for directive in directives.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        let mut parts = directive.split('=');
        let module = parts.next().unwrap_or_default();
        let level = parts.next();
        if parts.next().is_some() {
            return Err(bad(&format!("'{directive}' has more than one '='")));
        }
        match level {
            Some(level) => {
                if !is_module_path(module) {
                    return Err(bad(&format!("'{module}' before '=' is not a module path")));
                }
                if !is_level(level) {
                    return Err(bad(&format!("unknown level '{level}'")));
                }
            }
            None if is_level(module) => {}
            None => {
                return Err(bad(&format!(
                    "'{module}' is not a level (a module needs one: MODULE=LEVEL)"
                )));
            }
        }
    }
    Ok(())
}

fn is_level(s: &str) -> bool {
    LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s))
}

fn is_module_path(s: &str) -> bool {
    s.split("::").all(|seg| {
        !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(*v))
        }
    }

    fn flag<'a>(source: &'a str, value: &'a str) -> Option<Given<'a>> {
        Some(Given {
            value: OsStr::new(value),
            source,
        })
    }

    fn addr<'a>(source: &'a str, value: &'a str) -> Flags<'a> {
        Flags {
            addr: flag(source, value),
            ..Flags::default()
        }
    }

    fn data_dir<'a>(source: &'a str, value: &'a str) -> Flags<'a> {
        Flags {
            data_dir: flag(source, value),
            ..Flags::default()
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = Config::resolve(Flags::default(), &env_of(&[])).unwrap();
        assert_eq!(c.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.data_dir, None);
        assert_eq!(c.log, "info");
        assert_eq!(c.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(c.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    }

    #[test]
    fn given_address_beats_port() {
        let env = env_of(&[("PORT", "7000")]);
        let c = Config::resolve(addr("--addr", "127.0.0.1:1234"), &env).unwrap();
        assert_eq!(c.addr.port(), 1234);
        let c = Config::resolve(Flags::default(), &env).unwrap();
        assert_eq!(c.addr, "0.0.0.0:7000".parse().unwrap());
        let env = env_of(&[("WARPWATCH_ADDR", "127.0.0.1:9000"), ("PORT", "7000")]);
        assert_eq!(addr_from_env(&env).unwrap().port(), 9000);
        let env = env_of(&[("WARPWATCH_ADDR", ""), ("PORT", "7")]);
        assert_eq!(addr_from_env(&env).unwrap().port(), 7);
    }

    #[test]
    fn errors_name_their_source() {
        let e = Config::resolve(addr("--addr", "localhost"), &env_of(&[])).unwrap_err();
        assert!(e.0.contains("--addr") && e.0.contains("IP:PORT"), "{e}");
        let e = Config::resolve(Flags::default(), &env_of(&[("PORT", "http")])).unwrap_err();
        assert!(e.0.starts_with("invalid PORT 'http'"), "{e}");
        let e = Config::resolve(data_dir("WARPWATCH_DATA_DIR", " "), &env_of(&[])).unwrap_err();
        assert!(e.0.starts_with("invalid WARPWATCH_DATA_DIR: empty"), "{e}");
    }

    #[test]
    fn data_dir_must_not_be_a_file() {
        let file = std::env::current_exe().unwrap();
        let file = file.to_str().unwrap();
        let e = Config::resolve(data_dir("--data-dir", file), &env_of(&[])).unwrap_err();
        assert!(
            e.0.contains("--data-dir") && e.0.contains("not a directory"),
            "{e}"
        );
        let dir = std::env::temp_dir();
        let dir = dir.to_str().unwrap();
        let c = Config::resolve(data_dir("--data-dir", dir), &env_of(&[])).unwrap();
        assert_eq!(c.data_dir, Some(PathBuf::from(dir)));
    }

    #[test]
    fn log_filters() {
        for ok in [
            "info",
            "WARN",
            "warn,warpwatch=debug",
            "warpwatch::server=trace",
            "info/foo",
            "off",
        ] {
            validate_log_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "verbose",
            "info,warpwatch",
            "info,lo!ud=info",
            "warpwatch=loud",
            "=info",
            "a=b=c",
            "info/x/y",
            "war pwatch=info",
        ] {
            assert!(validate_log_filter(bad).is_err(), "{bad} accepted");
        }
    }
}
