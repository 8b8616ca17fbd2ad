//! The service's lifecycle: lock the data directory, load the store, bind, serve, stop on a
//! signal, persist, exit. The top of the library: nothing below imports it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use log::{info, warn};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::config::Config;
use crate::connections::{self, Limits};
use crate::exit::{EXIT_DATA, EXIT_FAILURE};
use crate::flusher::{FLUSH_INTERVAL, Flusher, Outcome, PERSIST_TIMEOUT, Writer};
use crate::shutdown::{DRAIN_TIMEOUT, Drain, Signals};
pub use crate::state::AppState;
use crate::visits::VisitStore;
use crate::{datadir, logging, metrics, routes};

/// Worker threads: the CPUs this process may use (affinity mask and cgroup quota included).
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The runtime the binary uses. On one CPU a current-thread runtime serves everything from the
/// main thread: no idle worker, no cross-thread wake-ups, the smallest footprint.
pub fn build_runtime() -> io::Result<Runtime> {
    let workers = worker_count();
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    // Nothing here uses the blocking pool (the flusher writes in its own process); keep it small.
    builder.enable_all().max_blocking_threads(2).build()
}

/// Serves `state` on `listener` with `limits` until `shutdown` resolves, then until every
/// connection is done (no deadline: callers race it, see [`crate::shutdown::drain`]). Must run
/// inside a runtime.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    metrics::init();
    connections::serve(listener, routes::service(state), limits, shutdown).await;
}

/// Runs the service with `config` until a stop signal; returns the process exit status.
pub fn run(config: Config) -> ExitCode {
    logging::init(&config.log);
    metrics::init();

    let limits = match connections::open_file_limit()
        .map_err(|e| format!("cannot read the open-file limit: {e}"))
        .and_then(Limits::for_open_files)
    {
        Ok(limits) => Limits {
            header_read_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            ..limits
        },
        Err(e) => return fatal(EXIT_FAILURE, &e),
    };
    // Held until the process exits: taken before the count is read, so two processes never
    // both load it.
    let data = match &config.data_dir {
        Some(dir) => match datadir::lock(dir) {
            Ok(data) => Some(Arc::new(data)),
            Err(e) => return fatal(EXIT_FAILURE, &e.to_string()),
        },
        None => None,
    };
    let store = match &data {
        Some(data) => match VisitStore::open(data.dir()) {
            Ok(store) => store,
            Err(e) => return fatal(EXIT_DATA, &e.to_string()),
        },
        None => {
            warn!(
                "no data directory (--data-dir / WARPWATCH_DATA_DIR): visits are kept in memory only and reset on restart"
            );
            VisitStore::in_memory()
        }
    };
    // Forked while the process has one thread, before the listener and the runtime exist: the
    // writer holds the data directory and its lock (so no second process can take them while a
    // write of its may still land), and nothing else.
    let mut writer = match data.as_deref().map(Writer::fork).transpose() {
        Ok(writer) => writer,
        Err(e) => {
            return fatal(
                EXIT_FAILURE,
                &format!("cannot start the visits writer process: {e}"),
            );
        }
    };
    let store = Arc::new(store);
    // Proves the directory writable before reporting ready; a failure is logged, shown by
    // /readyz, and retried by the flusher.
    if let Some(writer) = writer.as_mut() {
        let count = store.count();
        let _ = store.record(Some(count), writer.write_now(count));
    }
    let state = AppState::new(store.clone());

    let runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            return fatal(
                EXIT_FAILURE,
                &format!("cannot start the async runtime: {e}"),
            );
        }
    };
    let listener = match runtime.block_on(TcpListener::bind(config.addr)) {
        Ok(l) => l,
        Err(e) => return fatal(EXIT_FAILURE, &bind_error(config.addr, &e)),
    };
    let local = listener.local_addr().unwrap_or(config.addr);
    let mut signals = match runtime.block_on(async { Signals::install() }) {
        Ok(s) => s,
        Err(e) => {
            return fatal(
                EXIT_FAILURE,
                &format!("cannot install signal handlers: {e}"),
            );
        }
    };
    let spawned = {
        let _entered = runtime.enter();
        Flusher::spawn(store.clone(), writer, FLUSH_INTERVAL)
    };
    let flusher = match spawned {
        Ok(f) => f,
        Err(e) => {
            return fatal(
                EXIT_FAILURE,
                &format!("cannot start the visits flusher: {e}"),
            );
        }
    };

    info!(
        "warpwatch {} listening on http://{local} (data dir: {}, visits: {}, workers: {}, log: {}, drain timeout: {}s, \
         max connections: {}, header timeout: {}s, idle timeout: {}s)",
        crate::VERSION,
        config
            .data_dir
            .as_ref()
            .map_or_else(|| "none, in memory".to_owned(), |d| d.display().to_string()),
        store.count(),
        worker_count(),
        config.log,
        DRAIN_TIMEOUT.as_secs(),
        limits.max_connections,
        limits.header_read_timeout.as_secs(),
        limits.idle_timeout.as_secs()
    );

    let again = runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = serve(listener, state.clone(), limits, async {
            let _ = stop_rx.await;
        });
        let mut server = std::pin::pin!(server);
        let name = tokio::select! {
            () = &mut server => return None,
            name = signals.recv() => name,
        };
        info!(
            "{name} received: refusing new connections, draining in-flight requests (up to {}s), \
             then persisting the count (up to {}s); another SIGTERM or SIGINT ends the process at once",
            DRAIN_TIMEOUT.as_secs(),
            PERSIST_TIMEOUT.as_secs()
        );
        state.begin_shutdown();
        let _ = stop_tx.send(());
        match crate::shutdown::drain(server, &mut signals, DRAIN_TIMEOUT).await {
            Drain::Complete => info!("all connections drained"),
            Drain::TimedOut => warn!(
                "drain timeout ({}s) passed with {} requests in flight: closing their connections",
                DRAIN_TIMEOUT.as_secs(),
                metrics::HTTP_REQUESTS_IN_FLIGHT.get()
            ),
            Drain::Interrupted(again) => {
                warn!(
                    "{again} received again: closing {} in-flight requests and ending now",
                    metrics::HTTP_REQUESTS_IN_FLIGHT.get()
                );
                return Some(again);
            }
        }
        None
    });
    // No request counts a visit any more: a stop lets each connection finish only the request it
    // is on, and the ones left after the drain have had their answer computed.
    let outcome = match again {
        Some(name) => Err(name),
        None => runtime.block_on(async {
            tokio::select! {
                outcome = flusher.finish(&store, data.clone(), PERSIST_TIMEOUT) => Ok(outcome),
                name = signals.recv() => Err(name),
            }
        }),
    };
    // Abandoned connections die with the runtime; their visits are already in the count. Not
    // waited for: a final write from this process stuck on the disk must not hold the exit.
    runtime.shutdown_background();
    stopped(&store, outcome)
}

/// Logs how the stop ended and returns the exit status: 0 when the file holds every counted
/// visit (or there is no file), 1 with the number of visits not persisted otherwise.
fn stopped(store: &VisitStore, outcome: Result<Outcome, &'static str>) -> ExitCode {
    let count = store.count();
    let why = match outcome {
        Ok(Outcome::Persisted) => {
            info!("stopped; {count} visits persisted");
            return ExitCode::SUCCESS;
        }
        Ok(Outcome::InMemory) => {
            info!("stopped; {count} visits counted (in memory only: no data directory)");
            return ExitCode::SUCCESS;
        }
        Ok(Outcome::NotPersisted(why)) => why,
        Err(name) => {
            if store.unwritten().is_none() && store.lost().is_none() {
                info!("{name} received again: stopped at once; {count} visits persisted");
                return ExitCode::SUCCESS;
            }
            format!("{name} received again: stopped at once, without the final write")
        }
    };
    fatal(
        EXIT_FAILURE,
        &format!(
            "stopped without persisting the last {} visits ({}): {why}",
            count.saturating_sub(store.on_disk()),
            store.behind()
        ),
    )
}

fn bind_error(addr: SocketAddr, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => {
            "another process is listening there: stop it, or choose another address with --addr, WARPWATCH_ADDR or PORT"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges: use a higher port, or grant CAP_NET_BIND_SERVICE"
        }
        io::ErrorKind::AddrNotAvailable => {
            "no local interface has that IP: use 0.0.0.0, 127.0.0.1 or an address of this host"
        }
        _ => "check --addr / WARPWATCH_ADDR / PORT",
    };
    format!("cannot listen on {addr}: {e}; {hint}")
}

/// Logs why the process stops with `code`, whatever the log filter, and returns `code`.
fn fatal(code: u8, message: &str) -> ExitCode {
    logging::fatal(module_path!(), message);
    ExitCode::from(code)
}
