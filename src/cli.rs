//! The command line, the top layer: `warpwatch [--addr ADDR] [--data-dir DIR] [--header-timeout
//! SECONDS] [--idle-timeout SECONDS]`,
//! `warpwatch probe [--timeout SECONDS] [URL]`, `--help`, `--version`. clap reads the flags and
//! their variables; [`crate::config`] checks the values; the data directory is created here, so a
//! directory that cannot be made stops the process before the port opens.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{
    self, Config, DEFAULT_ADDR, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LOG,
    ENV_ADDR, ENV_DATA_DIR, ENV_HEADER_TIMEOUT, ENV_IDLE_TIMEOUT, ENV_LOG, ENV_PORT, Flags, Given,
};
use crate::exit::{EXIT_DATA, EXIT_FAILURE, EXIT_USAGE};
use crate::{logging, probe, server};

/// warpwatch: Moscow time and a visit counter, instrumented for Prometheus.
#[derive(Debug, Parser)]
#[command(
    name = "warpwatch",
    version,
    after_help = after_help(),
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    hide_possible_values = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[arg(long, value_name = "ADDR", env = ENV_ADDR, hide_env_values = true, help = addr_help())]
    addr: Option<OsString>,

    /// Directory of the visits file, created if missing [default: none, the count is kept in
    /// memory only]
    #[arg(long, value_name = "DIR", env = ENV_DATA_DIR, hide_env_values = true)]
    data_dir: Option<OsString>,

    #[arg(long, value_name = "SECONDS", env = ENV_HEADER_TIMEOUT, hide_env_values = true,
          help = header_timeout_help())]
    header_timeout: Option<OsString>,

    #[arg(long, value_name = "SECONDS", env = ENV_IDLE_TIMEOUT, hide_env_values = true,
          help = idle_timeout_help())]
    idle_timeout: Option<OsString>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Health-check a URL: exit 0 on a 2xx answer, 1 otherwise (see warpwatch probe --help)
    #[command(long_about = probe_about())]
    Probe {
        /// Overall deadline in seconds (resolve, connect, send, the answer's head) [default: 5]
        #[arg(long, value_name = "SECONDS", value_parser = probe::parse_timeout)]
        timeout: Option<Duration>,

        /// http://HOST[:PORT][/PATH]; default: this service's own /healthz
        url: Option<String>,
    },
}

fn addr_help() -> String {
    format!(
        "Listen address, IP:PORT [default: {any}:${ENV_PORT} when {ENV_PORT} is set, else {DEFAULT_ADDR}]",
        any = DEFAULT_ADDR.ip()
    )
}

fn header_timeout_help() -> String {
    format!(
        "Longest wait for a complete request head, from a connection's opening or the first byte \
         of a later request [default: {}]",
        DEFAULT_HEADER_TIMEOUT.as_secs()
    )
}

fn idle_timeout_help() -> String {
    format!(
        "Longest a kept-alive connection may sit idle between requests, or a response wait for its \
         reader [default: {}]",
        DEFAULT_IDLE_TIMEOUT.as_secs()
    )
}

fn after_help() -> String {
    format!(
        "\
Environment: {ENV_LOG} log filter, comma-separated LEVEL or MODULE=LEVEL (default {DEFAULT_LOG}), e.g.
warn,warpwatch=debug. Flags win over variables; an empty variable counts as unset.

Endpoints: GET /  /visits  /healthz  /readyz  /metrics

Exit status: 0 stopped cleanly; {EXIT_FAILURE} runtime failure (e.g. address in use, data directory cannot be
created); {EXIT_USAGE} invalid flag or variable; {EXIT_DATA} visits file corrupt or unreadable (never reset to 0;
the message says what to do)."
    )
}

fn probe_about() -> String {
    format!(
        "\
HTTP GET URL and exit 0 on a 2xx answer, {EXIT_FAILURE} otherwise (with a one-line reason), {EXIT_USAGE} on bad usage.
URL defaults to this service's own /healthz, at the address {ENV_ADDR} or {ENV_PORT} configure
(loopback when listening on all interfaces). Only http:// URLs are supported."
    )
}

/// Runs the command line `args` (without the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let probe_command = args.first().is_some_and(|a| a == "probe");
    let argv = std::iter::once(OsString::from("warpwatch")).chain(args);
    let matches = match Cli::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return clap_error(&e, probe_command),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_error(&e, probe_command),
    };
    if let Some(Command::Probe { timeout, url }) = cli.command {
        let timeout = timeout.unwrap_or(probe::DEFAULT_TIMEOUT);
        return probe::main(url, timeout, &config::process_env);
    }
    let flags = Flags {
        addr: given(&matches, &cli.addr, "addr", ("--addr", ENV_ADDR)),
        data_dir: given(
            &matches,
            &cli.data_dir,
            "data_dir",
            ("--data-dir", ENV_DATA_DIR),
        ),
        header_timeout: given(
            &matches,
            &cli.header_timeout,
            "header_timeout",
            ("--header-timeout", ENV_HEADER_TIMEOUT),
        ),
        idle_timeout: given(
            &matches,
            &cli.idle_timeout,
            "idle_timeout",
            ("--idle-timeout", ENV_IDLE_TIMEOUT),
        ),
    };
    let config = Config::resolve(flags, &config::process_env);
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("warpwatch: {}", logging::escape(&e.0));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // server::run creates and locks the data directory before anything else, so a directory
    // that cannot be made stops the start (exit 1) instead of leaving the service unready.
    server::run(config)
}

/// The value of argument `id`, if any, with the flag or the variable it came from.
fn given<'a>(
    matches: &ArgMatches,
    value: &'a Option<OsString>,
    id: &str,
    (flag, var): (&'static str, &'static str),
) -> Option<Given<'a>> {
    let value = value.as_deref()?;
    match matches.value_source(id) {
        // An empty variable counts as unset (compose files often pass `VAR=` through).
        Some(ValueSource::EnvVariable) if value.is_empty() => None,
        Some(ValueSource::EnvVariable) => Some(Given { value, source: var }),
        _ => Some(Given {
            value,
            source: flag,
        }),
    }
}

/// Help and version go to stdout (exit 0); a usage error is one line on stderr (exit 2).
fn clap_error(e: &clap::Error, probe_command: bool) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    // The message, without the usage and tips clap puts after a blank line.
    let first = rendered.split("\n\n").next().unwrap_or_default().trim_end();
    let message = logging::escape(first.strip_prefix("error: ").unwrap_or(first));
    let (prefix, help) = if probe_command {
        ("warpwatch probe", "warpwatch probe --help")
    } else {
        ("warpwatch", "warpwatch --help")
    };
    eprintln!("{prefix}: {message}; see {help}");
    ExitCode::from(EXIT_USAGE)
}
