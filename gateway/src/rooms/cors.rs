//! CORS for the answers a browser page reads from another origin: SSE streams and long-polls
//! (WebSockets need none). Every such answer carries them, refusals included (401, 403, 429,
//! 503 ...), so a page can read why it was refused; a request whose `Origin` the route does not
//! allow gets none (403 `origin`), and neither does one that matches no route (404).

use http::{HeaderMap, HeaderValue, header};

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
