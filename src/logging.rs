//! Logger setup: pretty_env_logger's line shape (` INFO warpwatch::server > message`), filtered by
//! `RUST_LOG`. Colours only when stderr is a terminal, so Loki and journald get clean lines.
//!
//! One event is one line: control characters in a message (line breaks, ESC, any C0 or C1
//! character) are written escaped (`\n`, `\u{1b}`), whoever supplied them: a path from the
//! configuration, a value from a client or a panic message cannot start a line of its own.

use std::borrow::Cow;
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
    if log::set_boxed_logger(Box::new(OneLine(logger))).is_ok() {
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
            write_escaped(
                logger,
                &Record::builder()
                    .level(Level::Error)
                    .target(target)
                    .args(format_args!("{message}"))
                    .build(),
            );
        }
        None => eprintln!("warpwatch: {}", escape(message)),
    }
}

/// env_logger's logger, writing every message escaped.
struct OneLine(Logger);

impl Log for OneLine {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.0.matches(record) {
            write_escaped(&self.0, record);
        }
    }

    /// env_logger writes each record to stderr whole, unbuffered: nothing to flush.
    fn flush(&self) {}
}

fn write_escaped(logger: &Logger, record: &Record<'_>) {
    let text = record.args().to_string();
    let text = escape(&text);
    logger.log(
        &Record::builder()
            .level(record.level())
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .args(format_args!("{text}"))
            .build(),
    );
}

/// `text` with every character that could end or rewrite a terminal or log line written as its
/// Rust escape (`\n`, `\r`, `\t`, `\u{1b}`): the C0 and C1 controls, DEL, and the Unicode line
/// and paragraph separators. Borrowed when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    fn breaks_line(c: char) -> bool {
        c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
    }
    if !text.chars().any(breaks_line) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if breaks_line(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
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
        // The standard hook's text puts the message on a line of its own, which would split one
        // event in journald and Loki (line breaks inside the message are escaped by the logger).
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        log::error!(target: "warpwatch::panic", "thread '{name}' panicked{at}: {message}");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_one_line() {
        assert!(matches!(escape("plain / päth ✓"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nb\rc\td\u{1b}[31me\u{7f}f\u{85}g\u{2028}h"),
            "a\\nb\\rc\\td\\u{1b}[31me\\u{7f}f\\u{85}g\\u{2028}h"
        );
    }
}
