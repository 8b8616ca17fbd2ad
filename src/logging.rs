//! Logger setup: pretty_env_logger's line shape (` INFO warpwatch::server > message`), filtered by
//! `RUST_LOG`. Colours only when stderr is a terminal, so Loki and journald get clean lines.

use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Record};
use pretty_env_logger::env_logger::Logger;

/// Target of the per-request access log (debug level; see README "Logging").
pub const ACCESS_TARGET: &str = "warpwatch::access";

/// The same line shape with no filter, for [`fatal`]; set by the [`init`] that installed the
/// global logger.
static UNFILTERED: OnceLock<Logger> = OnceLock::new();

/// Installs the global logger with `filter` (already validated by [`crate::config`]).
/// A second call is a no-op, so tests and benchmarks can call it freely.
pub fn init(filter: &str) {
    // env_logger's default write style is "auto": colour only when the target is a terminal.
    let logger = pretty_env_logger::formatted_builder()
        .parse_filters(filter)
        .build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
        let _ = UNFILTERED.set(
            pretty_env_logger::formatted_builder()
                .filter_level(LevelFilter::Trace)
                .build(),
        );
    }
    install_panic_hook();
}

/// Writes `message` as an error line of `target` whatever `RUST_LOG` says: the reason the
/// process is about to exit with a failure must reach stderr even under `RUST_LOG=off` or a
/// `/REGEX` that does not match it. Plain `warpwatch: message` if [`init`] did not install the
/// logger (an embedding program has its own).
pub fn fatal(target: &str, message: &str) {
    match UNFILTERED.get() {
        Some(logger) => {
            logger.log(
                &Record::builder()
                    .level(Level::Error)
                    .target(target)
                    .args(format_args!("{message}"))
                    .build(),
            );
            logger.flush();
        }
        None => eprintln!("warpwatch: {message}"),
    }
}

/// Whether the access log is on; one relaxed atomic load when it is off.
#[inline]
pub fn access_log_enabled() -> bool {
    log::log_enabled!(target: ACCESS_TARGET, Level::Debug)
}

/// Panics become one error line through the logger (and so reach Loki with a level) instead of a
/// raw multi-line stderr dump. A panic inside a request only ends that connection's task.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        // The standard hook's text puts the message on a line of its own, and a message may
        // hold line breaks itself: either would split one event in journald and Loki.
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)")
            .replace(['\r', '\n'], " ");
        log::error!(target: "warpwatch::panic", "thread '{name}' panicked{at}: {message}");
    }));
}
