//! Logger setup: pretty_env_logger's line shape (` INFO warpwatch::server > message`), filtered by
//! `RUST_LOG`. Colours only when stderr is a terminal, so Loki and journald get clean lines.

use log::Level;

/// Target of the per-request access log (debug level; see README "Logging").
pub const ACCESS_TARGET: &str = "warpwatch::access";

/// Installs the global logger with `filter` (already validated by [`crate::config`]).
/// A second call is a no-op, so tests and benchmarks can call it freely.
pub fn init(filter: &str) {
    let mut builder = pretty_env_logger::formatted_builder();
    // env_logger's default write style is "auto": colour only when the target is a terminal.
    builder.parse_filters(filter);
    let _ = builder.try_init();
    install_panic_hook();
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
