//! Service configuration: command-line flags with environment fallbacks, validated up front.
//!
//! Precedence for each setting: flag, then its variable, then the default. An empty variable counts
//! as unset (compose files often pass `VAR=` through). Every error names the flag or variable and
//! the accepted form, and makes the process exit with status 2.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Listen address when neither `--addr`, `WARPWATCH_ADDR` nor `PORT` is given.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
/// Log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG: &str = "info";

pub const ENV_ADDR: &str = "WARPWATCH_ADDR";
pub const ENV_PORT: &str = "PORT";
pub const ENV_DATA_DIR: &str = "WARPWATCH_DATA_DIR";
pub const ENV_LOG: &str = "RUST_LOG";

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub addr: SocketAddr,
    /// Where the `visits` file lives; `None` keeps the count in memory only.
    pub data_dir: Option<PathBuf>,
    /// The effective `RUST_LOG` filter.
    pub log: String,
}

impl Config {
    /// Parses the serve command's flags (`--addr`, `--data-dir`) with environment fallbacks.
    pub fn from_args(args: &[OsString], env: EnvLookup<'_>) -> Result<Config, UsageError> {
        let mut addr_flag = None;
        let mut data_dir_flag = None;
        let mut args = ArgReader::new(args);
        while let Some(arg) = args.next_arg()? {
            match arg {
                "--addr" => addr_flag = Some(args.value(arg, "see warpwatch --help")?),
                "--data-dir" => data_dir_flag = Some(args.value(arg, "see warpwatch --help")?),
                other if other.starts_with('-') => {
                    return Err(UsageError(format!(
                        "unknown option '{other}'; see warpwatch --help"
                    )));
                }
                other => {
                    return Err(UsageError(format!(
                        "unexpected argument '{other}' (the only subcommand is 'probe'); see warpwatch --help"
                    )));
                }
            }
        }

        let addr = match addr_flag {
            Some(v) => parse_addr("--addr", v)?,
            None => addr_from_env(env)?,
        };
        let data_dir = match data_dir_flag {
            Some(v) => Some(parse_dir("--data-dir", v)?),
            None => match env_value(env, ENV_DATA_DIR)? {
                Some(v) => Some(parse_dir(ENV_DATA_DIR, &v)?),
                None => None,
            },
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
        })
    }
}

/// The listen address from `WARPWATCH_ADDR`, else `PORT` (on all interfaces), else the default.
pub fn addr_from_env(env: EnvLookup<'_>) -> Result<SocketAddr, UsageError> {
    if let Some(v) = env_value(env, ENV_ADDR)? {
        return parse_addr(ENV_ADDR, &v);
    }
    if let Some(v) = env_value(env, ENV_PORT)? {
        let port = v.trim().parse::<u16>().map_err(|_| {
            UsageError(format!(
                "invalid {ENV_PORT} '{v}': expected a port number from 0 to 65535, e.g. {ENV_PORT}=8080"
            ))
        })?;
        return Ok(SocketAddr::new(DEFAULT_ADDR.ip(), port));
    }
    Ok(DEFAULT_ADDR)
}

fn env_value(env: EnvLookup<'_>, name: &str) -> Result<Option<String>, UsageError> {
    match env(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => utf8(name, &v).map(|s| Some(s.to_owned())),
    }
}

/// A command line read one argument at a time, where a flag's value may follow as the next
/// argument (`--addr 127.0.0.1:80`) or inline (`--addr=127.0.0.1:80`). Shared by the serve and
/// probe commands so both accept the same forms and word their errors alike.
pub(crate) struct ArgReader<'a> {
    rest: std::slice::Iter<'a, OsString>,
    inline: Option<&'a str>,
}

impl<'a> ArgReader<'a> {
    pub(crate) fn new(args: &'a [OsString]) -> ArgReader<'a> {
        ArgReader {
            rest: args.iter(),
            inline: None,
        }
    }

    /// The next flag (without its `=value`) or positional argument.
    pub(crate) fn next_arg(&mut self) -> Result<Option<&'a str>, UsageError> {
        let Some(arg) = self.rest.next() else {
            return Ok(None);
        };
        let arg = utf8("argument", arg)?;
        Ok(Some(match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                self.inline = Some(value);
                name
            }
            _ => {
                self.inline = None;
                arg
            }
        }))
    }

    /// The value of `flag`, the argument [`ArgReader::next_arg`] just returned.
    pub(crate) fn value(&mut self, flag: &str, hint: &str) -> Result<&'a str, UsageError> {
        if let Some(v) = self.inline.take() {
            return Ok(v);
        }
        match self.rest.next() {
            Some(v) => utf8(flag, v),
            None => Err(UsageError(format!("{flag} needs a value; {hint}"))),
        }
    }
}

fn utf8<'a>(what: &str, value: &'a OsString) -> Result<&'a str, UsageError> {
    value.to_str().ok_or_else(|| {
        UsageError(format!(
            "invalid {what} {value:?}: not valid UTF-8; use a UTF-8 value"
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

fn parse_dir(source: &str, value: &str) -> Result<PathBuf, UsageError> {
    if value.trim().is_empty() {
        return Err(UsageError(format!(
            "invalid {source}: empty; expected a directory path, e.g. /var/lib/warpwatch"
        )));
    }
    Ok(PathBuf::from(value))
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `RUST_LOG` value the way env_logger reads it, because env_logger itself only prints a
/// warning and carries on with a filter the operator did not ask for.
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
                if module.is_empty() {
                    return Err(bad(&format!("'{directive}' has no module before '='")));
                }
                if !is_level(level) {
                    return Err(bad(&format!("unknown level '{level}'")));
                }
            }
            None => {
                // A bare word is a level if it names one, otherwise a module path.
                if !is_level(module) && !is_module_path(module) {
                    return Err(bad(&format!(
                        "'{module}' is neither a level nor a module path"
                    )));
                }
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

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = Config::from_args(&[], &env_of(&[])).unwrap();
        assert_eq!(c.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.data_dir, None);
        assert_eq!(c.log, "info");
    }

    #[test]
    fn flag_beats_variable_beats_port() {
        let env = env_of(&[("WARPWATCH_ADDR", "127.0.0.1:9000"), ("PORT", "7000")]);
        let c = Config::from_args(&args(&["--addr=127.0.0.1:1234"]), &env).unwrap();
        assert_eq!(c.addr.port(), 1234);
        let c = Config::from_args(&[], &env).unwrap();
        assert_eq!(c.addr.port(), 9000);
        let c = Config::from_args(&[], &env_of(&[("PORT", "7000")])).unwrap();
        assert_eq!(c.addr, "0.0.0.0:7000".parse().unwrap());
        let c = Config::from_args(&[], &env_of(&[("WARPWATCH_ADDR", ""), ("PORT", "7")])).unwrap();
        assert_eq!(c.addr.port(), 7);
    }

    #[test]
    fn errors_name_their_source() {
        let e = Config::from_args(&args(&["--addr", "localhost"]), &env_of(&[])).unwrap_err();
        assert!(e.0.contains("--addr") && e.0.contains("IP:PORT"), "{e}");
        let e = Config::from_args(&[], &env_of(&[("PORT", "http")])).unwrap_err();
        assert!(e.0.starts_with("invalid PORT 'http'"), "{e}");
        let e = Config::from_args(&args(&["--data-dir"]), &env_of(&[])).unwrap_err();
        assert!(e.0.contains("--data-dir needs a value"), "{e}");
        let e = Config::from_args(&args(&["--verbose"]), &env_of(&[])).unwrap_err();
        assert!(e.0.contains("unknown option '--verbose'"), "{e}");
    }

    #[test]
    fn log_filters() {
        for ok in [
            "info",
            "WARN",
            "warn,warpwatch=debug",
            "warpwatch::server",
            "info/foo",
            "off",
        ] {
            validate_log_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "info,lo!ud",
            "warpwatch=loud",
            "=info",
            "a=b=c",
            "info/x/y",
            "war pwatch",
        ] {
            assert!(validate_log_filter(bad).is_err(), "{bad} accepted");
        }
    }
}
