//! The bounded label sets of the request metrics: the matched route and the method. A leaf
//! module, so that the metrics and the handlers both depend on it and not on each other.

use warp::http::Method as HttpMethod;

/// A matched route; its label is the metric `path` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Index,
    Visits,
    Healthz,
    Readyz,
    Metrics,
    /// Every other request target (unknown paths, `*`, `host:port`): one fixed label however
    /// many distinct targets are requested.
    Other,
}

impl Route {
    pub const COUNT: usize = 6;
    pub const ALL: [Route; Route::COUNT] = [
        Route::Index,
        Route::Visits,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Other,
    ];

    /// The route table: a `match` on the exact path, which yields the label and the handler in
    /// one step.
    #[inline]
    pub fn from_path(path: &str) -> Route {
        match path {
            "/healthz" => Route::Healthz,
            "/" => Route::Index,
            "/visits" => Route::Visits,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            _ => Route::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Index => "/",
            Route::Visits => "/visits",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }
}

/// The `method` label: the nine standard methods, everything else (extension methods are
/// unbounded) as `OTHER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Connect,
    Trace,
    Other,
}

impl Method {
    pub const COUNT: usize = 10;

    #[inline]
    pub fn of(m: &HttpMethod) -> Method {
        match *m {
            HttpMethod::GET => Method::Get,
            HttpMethod::HEAD => Method::Head,
            HttpMethod::POST => Method::Post,
            HttpMethod::PUT => Method::Put,
            HttpMethod::DELETE => Method::Delete,
            HttpMethod::PATCH => Method::Patch,
            HttpMethod::OPTIONS => Method::Options,
            HttpMethod::CONNECT => Method::Connect,
            HttpMethod::TRACE => Method::Trace,
            _ => Method::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other => "OTHER",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_targets_share_one_label() {
        for p in [
            "/nope",
            "/healthz/",
            "//",
            "/metrics/x",
            "/%68ealthz",
            "*",
            "",
            "127.0.0.1:80",
        ] {
            assert_eq!(Route::from_path(p), Route::Other, "{p}");
        }
        for r in Route::ALL {
            if r != Route::Other {
                assert_eq!(Route::from_path(r.label()), r);
            }
        }
    }

    #[test]
    fn extension_methods_share_one_label() {
        let ext = HttpMethod::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(Method::of(&ext), Method::Other);
        assert_eq!(Method::of(&HttpMethod::HEAD).label(), "HEAD");
        assert_eq!(Method::of(&HttpMethod::CONNECT).label(), "CONNECT");
    }
}
