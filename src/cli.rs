//! Command-line entry: `warpwatch [--addr ADDR] [--data-dir DIR]`, `warpwatch probe ...`,
//! `--help`, `--version`; and the exit statuses.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::{
    self, Config, DEFAULT_ADDR, DEFAULT_LOG, ENV_ADDR, ENV_DATA_DIR, ENV_LOG, ENV_PORT,
};
use crate::exit::{EXIT_DATA, EXIT_FAILURE, EXIT_USAGE};
use crate::{probe, server};

fn help() -> String {
    let any_ip = DEFAULT_ADDR.ip();
    format!(
        "\
warpwatch: Moscow time and a visit counter, instrumented for Prometheus.

Usage:
  warpwatch [--addr ADDR] [--data-dir DIR]     serve HTTP
  warpwatch probe [--timeout SECONDS] [URL]    health-check a URL (see warpwatch probe --help)
  warpwatch --help | --version

Options (each falls back to an environment variable, then a default):
  --addr ADDR       listen address, IP:PORT    {ENV_ADDR}, else {any_ip}:${ENV_PORT}, else {DEFAULT_ADDR}
  --data-dir DIR    visits file directory      {ENV_DATA_DIR} (unset: count kept in memory only)
                    log filter                 {ENV_LOG} (default {DEFAULT_LOG}), e.g. warn,warpwatch=debug

Endpoints: GET /  /visits  /healthz  /readyz  /metrics

Exit status: 0 stopped cleanly; {EXIT_FAILURE} runtime failure (e.g. address in use); {EXIT_USAGE} invalid flag or
variable; {EXIT_DATA} visits file corrupt or unreadable (never reset to 0; the message says what to do)."
    )
}

/// Runs the command line `args` (without the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    if args.first().is_some_and(|a| a == "probe") {
        return probe::main(&args[1..], &config::process_env);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", help());
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("warpwatch {}", crate::VERSION);
        return ExitCode::SUCCESS;
    }
    match Config::from_args(&args, &config::process_env) {
        Ok(config) => server::run(config),
        Err(e) => {
            eprintln!("warpwatch: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
