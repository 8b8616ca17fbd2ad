//! HTTP routing and handlers.
//!
//! The route table ([`Route::from_path`]) is a `match` on the exact request path: it yields the
//! metric `path` label and the handler in one step, and anything unknown collapses into
//! [`Route::Other`], so no request can create a new series. Every request, 404s and 405s
//! included, flows through [`handle`], which records metrics and the access log.
//!
//! [`app`] is the warp filter; [`service`] turns it into the hyper service the connection layer
//! serves, and answers itself the one request form warp cannot route (see there).

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use futures_util::future::Either;
use hyper::body::Incoming;

use log::{debug, error, warn};
use warp::Filter;
use warp::filters::path::FullPath;
use warp::http::header::{self, HeaderValue};
use warp::http::{Method as HttpMethod, Request, StatusCode};
use warp::reply::Response;

use crate::clock::{LocalTime, MOSCOW_TIMEZONE};
use crate::labels::{Method, Route};
use crate::logging::{ACCESS_TARGET, access_log_enabled};
use crate::metrics::{self, InFlight};
use crate::state::AppState;
use crate::{HEALTHZ_BODY, HEALTHZ_CONTENT_TYPE, json};

/// Requests slower than this are logged at warn.
pub const SLOW_REQUEST: Duration = Duration::from_millis(500);

/// Methods every route accepts (HEAD answers like GET without a body and counts no visit).
pub const ALLOWED_METHODS: &str = "GET, HEAD";

/// The whole service as one warp filter. It never rejects: unknown paths and methods become
/// JSON 404/405 answers inside [`handle`], so they are counted like any other request.
pub fn app(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static
{
    // Only `/` negotiates its content type, so only `/` pays for reading `Accept`.
    let index_accept = warp::path::end().and(
        warp::header::value("accept")
            .map(Some)
            .or(warp::any().map(|| None))
            .unify(),
    );
    let accept = index_accept.or(warp::any().map(|| None)).unify();

    warp::any()
        .map(InFlight::enter)
        .and(warp::method())
        .and(warp::path::full())
        .and(accept)
        .map(
            move |guard: InFlight,
                  method: HttpMethod,
                  path: FullPath,
                  accept: Option<HeaderValue>| {
                handle(&state, guard, &method, path.as_str(), accept.as_ref())
            },
        )
}

/// The hyper service for one connection: [`app`] for every request whose target has a path
/// (origin-form `/x`, absolute-form `http://host/x`, asterisk-form `*`), and [`handle`] directly
/// for authority-form targets (`CONNECT host:port`): warp's path filters panic on a URI without
/// a path, and these requests must be answered and counted like any other.
pub fn service(
    state: Arc<AppState>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    AppService {
        filter: RefCell::new(warp::service(app(state.clone()))),
        state,
    }
}

struct AppService<S> {
    /// `tower::Service::call` takes `&mut self`, hyper's `&self`; a connection serves its
    /// requests one at a time, so the borrow never conflicts (and costs no clone per request).
    filter: RefCell<S>,
    state: Arc<AppState>,
}

impl<S: Clone> Clone for AppService<S> {
    fn clone(&self) -> Self {
        AppService {
            filter: RefCell::new(self.filter.borrow().clone()),
            state: self.state.clone(),
        }
    }
}

impl<S> hyper::service::Service<Request<Incoming>> for AppService<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    #[inline]
    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.uri().path_and_query().is_some() {
            let mut filter = self.filter.borrow_mut();
            // warp's service is always ready; polling keeps the tower contract all the same.
            let _ = filter.poll_ready(&mut Context::from_waker(std::task::Waker::noop()));
            return Either::Right(filter.call(req));
        }
        let target = req.uri().authority().map_or("", |a| a.as_str());
        let guard = InFlight::enter();
        Either::Left(ready(Ok(handle(
            &self.state,
            guard,
            req.method(),
            target,
            None,
        ))))
    }
}

/// Answers one request and records it.
fn handle(
    state: &AppState,
    guard: InFlight,
    method: &HttpMethod,
    path: &str,
    accept: Option<&HeaderValue>,
) -> Response {
    let route = Route::from_path(path);
    let response = respond(state, route, method, accept);
    let status = response.status();
    let elapsed = guard.elapsed();
    metrics::observe(route, Method::of(method), status, elapsed);
    if status.is_server_error() || elapsed >= SLOW_REQUEST {
        warn!(
            target: ACCESS_TARGET,
            "{method} {path} {} in {:.1} ms",
            status.as_u16(),
            elapsed.as_secs_f64() * 1e3
        );
    } else if access_log_enabled() {
        debug!(
            target: ACCESS_TARGET,
            "{method} {path} {} in {} µs",
            status.as_u16(),
            elapsed.as_micros()
        );
    }
    drop(guard);
    response
}

fn respond(
    state: &AppState,
    route: Route,
    method: &HttpMethod,
    accept: Option<&HeaderValue>,
) -> Response {
    let is_get = *method == HttpMethod::GET;
    // 404 before 405: an unknown path has no methods to allow.
    if route != Route::Other && !is_get && *method != HttpMethod::HEAD {
        return method_not_allowed();
    }
    match route {
        Route::Healthz => healthz(),
        Route::Index => index(state, is_get, accept),
        Route::Visits => json_response(
            StatusCode::OK,
            json::body(&json::Visits {
                visits: state.visits.count(),
            }),
        ),
        Route::Readyz => readyz(state),
        Route::Metrics => metrics_page(state),
        Route::Other => json_response(
            StatusCode::NOT_FOUND,
            json::body(&json::Error {
                error: "not found",
                allow: None,
            }),
        ),
    }
}

#[inline]
fn healthz() -> Response {
    let mut r = Response::new(HEALTHZ_BODY.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(HEALTHZ_CONTENT_TYPE),
    );
    r
}

fn index(state: &AppState, is_get: bool, accept: Option<&HeaderValue>) -> Response {
    // HEAD must not have side effects: it shows the count without adding a visit.
    let visits = if is_get {
        state.visits.visit()
    } else {
        state.visits.count()
    };
    let now = LocalTime::moscow_now();
    let (time, offset) = (now.rfc3339(), now.utc_offset());
    let mut r = if prefers_json(accept) {
        json_response(
            StatusCode::OK,
            json::body(&json::Index {
                time: &time,
                timezone: MOSCOW_TIMEZONE,
                utc_offset: &offset,
                visits,
            }),
        )
    } else {
        let mut r = Response::new(
            format!(
                "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>warpwatch</title></head>\n\
                 <body>\n<h1>Moscow time</h1>\n<p><time datetime=\"{time}\">{}</time> (UTC{offset})</p>\n\
                 <p>Visits: <span id=\"visits\">{visits}</span></p>\n</body>\n</html>\n",
                now.display()
            )
            .into(),
        );
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    };
    let h = r.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn readyz(state: &AppState) -> Response {
    match state.readiness() {
        Ok(()) => json_response(
            StatusCode::OK,
            json::body(&json::Readiness {
                status: "ready",
                reason: None,
            }),
        ),
        Err(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json::body(&json::Readiness {
                status: "not ready",
                reason: Some(&reason),
            }),
        ),
    }
}

fn metrics_page(state: &AppState) -> Response {
    metrics::READY.set(i64::from(state.readiness().is_ok()));
    match metrics::render() {
        Ok(text) => {
            let mut r = Response::new(text.into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            error!("cannot encode metrics: {e}");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json::body(&json::Error {
                    error: "cannot encode metrics",
                    allow: None,
                }),
            )
        }
    }
}

fn method_not_allowed() -> Response {
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json::body(&json::Error {
            error: "method not allowed",
            allow: Some(ALLOWED_METHODS),
        }),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    r
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Whether `Accept` ranks `application/json` above `text/html` (RFC 9110 §12.5.1: the most
/// specific matching range sets each type's quality). No header, `*/*` or a tie → HTML.
fn prefers_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // Qualities are at least 0, so a JSON quality above HTML's is above 0 too.
    quality(accept, "application", "json") > quality(accept, "text", "html")
}

fn quality(accept: &str, ty: &str, sub: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let Some((t, s)) = media.split_once('/') else {
            continue;
        };
        let specificity = match (t.trim(), s.trim()) {
            (t, s) if t.eq_ignore_ascii_case(ty) && s.eq_ignore_ascii_case(sub) => 2,
            (t, "*") if t.eq_ignore_ascii_case(ty) => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        // Of equally specific ranges (a type listed twice), the first counts.
        if best.is_none_or(|(b, _)| specificity > b) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_for(accept: &str) -> bool {
        prefers_json(Some(&HeaderValue::from_str(accept).unwrap()))
    }

    #[test]
    fn negotiation() {
        assert!(json_for("application/json"));
        assert!(json_for("application/*"));
        assert!(json_for("text/html;q=0.5, application/json"));
        assert!(!json_for("*/*"));
        assert!(!json_for(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!json_for("application/json;q=0, */*"));
        assert!(!json_for("text/html, application/json"));
        assert!(!prefers_json(None));
    }
}
