//! warpwatch: a small warp web service instrumented for Prometheus.
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]; everything else lives here, so that the
//! benchmark's bare-warp baseline (`examples/bare.rs`) shares the service's runtime and `/healthz`
//! answer, and an embedding program can run the server itself. (The integration tests start the
//! real binary.)
//!
//! - [`HEALTHZ_BODY`] and [`HEALTHZ_CONTENT_TYPE`]: the exact `/healthz` answer, so a bare warp
//!   server used as a benchmark baseline (e.g. `examples/bare.rs`) can answer byte-for-byte the same.
//! - [`server::AppState`], [`routes::app`] and [`server::serve`]: build the state, the warp filter,
//!   and run it on any `tokio::net::TcpListener` (port 0 included) until a shutdown future fires.
//! - [`server::build_runtime`]: the tokio runtime the binary uses (one worker per CPU the process
//!   may run on; a current-thread runtime when that is one CPU).
//!
//! Metrics are process-wide globals (`lazy_static`) in one registry ([`metrics::REGISTRY`]), as the
//! `prometheus` crate intends; run one [`server::AppState`] per process.

pub mod cli;
pub mod clock;
pub mod config;
pub mod exit;
pub mod flusher;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod visits;

/// Body of every `GET /healthz` answer.
pub const HEALTHZ_BODY: &str = "ok\n";

/// `Content-Type` of the `/healthz` answer (what warp sets for a `&'static str` reply).
pub const HEALTHZ_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Crate version, as reported by `--version`, the startup line and `warpwatch_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
