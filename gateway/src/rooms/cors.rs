//! CORS for the answers a browser page reads from another origin: SSE streams and long-polls
//! (WebSockets need none). Every such answer carries them, refusals included (401, 403, 429,
//! 503 ...), so a page can read why it was refused; a request whose `Origin` the route does not
//! allow gets none (403 `origin`), and neither does one that matches no route (404).

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::http::{Body, full};
use crate::routes::CompiledRoute;

/// The request's `Origin`, when it passes the route's allow-list (echoed back by [`apply`]).
pub fn allowed_origin(route: &CompiledRoute, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    route.origin.check(headers).ok()?;
    Some(origin.clone())
}

/// Let a page on `origin` read this answer: the origin is echoed; credentials (cookies,
/// `withCredentials`) only for origins the route lists explicitly.
pub fn apply(route: &CompiledRoute, origin: HeaderValue, h: &mut HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-switchboard-cursor"),
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if !route.cfg.origins.allowed.is_empty() {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// Whether `req` is a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`): what a
/// browser sends before a `fetch()` long-poll that carries `Authorization` or `Last-Event-ID`.
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from an allowed `origin`: GET, with the request headers a page
/// sends to a rooms route (a token, a cursor). A preflight carries no credentials (Fetch
/// standard), so it is answered before the token check, and it admits nothing: the request
/// that follows is checked like any other.
pub fn preflight(route: &CompiledRoute, origin: HeaderValue) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    apply(route, origin, h);
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, "GET"),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "authorization, last-event-id, accept, cache-control",
        ),
        (header::ACCESS_CONTROL_MAX_AGE, "600"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}
