//! warpwatch: a small warp web service instrumented for Prometheus.
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]; everything else lives here, so that the
//! benchmark's bare-warp baseline (`bench/bare.rs`) shares the service's runtime and `/healthz`
//! answer, and an embedding program can run the server itself. (The integration tests start the
//! real binary.)
//!
//! # Layers
//!
//! Dependencies run one way, downwards; a module imports only modules of the layers below it,
//! so nothing below `server` knows the server or the command line:
//!
//! | layer | modules | job |
//! |-------|---------|-----|
//! | 6 command line | [`cli`] | parse arguments, pick a command, map its result to an exit status |
//! | 5 commands | [`server`], [`probe`] | the service's lifecycle (lock, load, bind, serve, stop, persist); the health probe |
//! | 4 serving | [`connections`], [`routes`] | client connections (limits, timeouts, drain); the handlers |
//! | 3 shared state | [`state`], [`flusher`] | what the handlers share; the background writer |
//! | 2 storage and signals | [`visits`], [`datadir`], [`shutdown`] | the persisted count, the directory lock, stop signals and the drain |
//! | 1 instruments | [`metrics`], [`logging`] | the registry and the request series; the logger |
//! | 0 leaves | [`labels`], [`config`], [`exit`], [`clock`], [`json`], [`dirfd`] | label sets, settings, exit statuses, time, JSON, a directory held open and its files reached without following links |
//!
//! `tests/layers.rs` checks this table against every `crate::` reference in `src/`.
//!
//! `connections` serves any hyper service and knows nothing of the routes; `routes` builds the
//! service from the warp filter and [`state::AppState`].
//!
//! # Entry points
//!
//! - [`HEALTHZ_BODY`] and [`HEALTHZ_CONTENT_TYPE`]: the exact `/healthz` answer, so a bare warp
//!   server used as a benchmark baseline (e.g. `bench/bare.rs`) can answer byte-for-byte the same.
//! - [`state::AppState`], [`routes::app`] / [`routes::service`] and [`server::serve`]: build the
//!   state, the warp filter (or the hyper service around it), and run it on any
//!   `tokio::net::TcpListener` (port 0 included) with [`connections::Limits`] until a shutdown
//!   future fires.
//! - [`server::build_runtime`]: the tokio runtime the binary uses (one worker per CPU the process
//!   may run on; a current-thread runtime when that is one CPU).
//!
//! Metrics are process-wide globals (`lazy_static`) in one registry ([`metrics::REGISTRY`]), as the
//! `prometheus` crate intends; run one [`state::AppState`] per process.

pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod datadir;
pub mod dirfd;
pub mod exit;
pub mod flusher;
pub mod json;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod visits;

/// Body of every `GET /healthz` answer.
pub const HEALTHZ_BODY: &str = "ok\n";

/// `Content-Type` of the `/healthz` answer (what warp sets for a `&'static str` reply).
pub const HEALTHZ_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Crate version, as reported by `--version`, the startup line and `warpwatch_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
