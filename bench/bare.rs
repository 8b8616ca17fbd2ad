//! The benchmark baseline (bench/run.sh): plain warp answering `GET /healthz` byte-for-byte like
//! warpwatch — same body, same `Content-Type`, same tokio runtime — with nothing else: no metrics,
//! no logger, no state, no graceful shutdown, and served by `warp::serve` as users write it (no
//! header-read or idle timeout, no connection cap). The gap between the two is the cost of
//! warpwatch's instrumentation, routing and connection limits.
//!
//! Usage: `cargo run --release --example bare -- [ADDR]` (default `127.0.0.1:8081`; port 0 picks
//! a free port). Prints `listening on http://ADDR` once it accepts connections; stop it with a
//! signal.

use std::net::SocketAddr;
use std::process::ExitCode;

use warp::Filter;
use warp::http::header::{CONTENT_TYPE, HeaderValue};
use warp::reply::Response;

const DEFAULT_ADDR: &str = "127.0.0.1:8081";

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let addr: SocketAddr = match arg.as_deref().unwrap_or(DEFAULT_ADDR).parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("bare: invalid ADDR argument ({e}): expected IP:PORT, e.g. {DEFAULT_ADDR}");
            return ExitCode::from(2);
        }
    };
    // The very runtime the service builds, so the comparison measures the handler path only.
    let runtime = match warpwatch::server::build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bare: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(local) => println!("listening on http://{local}"),
            Err(e) => eprintln!("bare: cannot read the bound address: {e}"),
        }
        let healthz = warp::path!("healthz").and(warp::get()).map(healthz);
        warp::serve(healthz).incoming(listener).run().await;
        ExitCode::SUCCESS
    })
}

fn healthz() -> Response {
    let mut r = Response::new(warpwatch::HEALTHZ_BODY.into());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(warpwatch::HEALTHZ_CONTENT_TYPE),
    );
    r
}
