//! The HTTP pieces every layer of the request path shares, below all of them: the response
//! [`Body`], `full` bodies, what kind of request this is ([`is_websocket`],
//! [`is_event_stream`]), the one rendering of a [`Refusal`] ([`refuse`]), and `unix_now`.
//! It imports nothing of the request path itself, so the listener, the pipeline and every mode
//! can use it without a cycle.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;

use crate::error::Refusal;
use crate::metrics::metrics;

/// Response body type of the edge listener.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A body of fixed bytes.
pub(crate) fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Count a refusal by route and reason (and as a `refused` connection).
pub(crate) fn count_refusal(route: &str, r: &Refusal) {
    metrics()
        .refusals
        .with_label_values(&[route, r.label()])
        .inc();
    metrics()
        .connections_total
        .with_label_values(&[route, "refused"])
        .inc();
}

/// Render a refusal: status, reason, `Retry-After`, `WWW-Authenticate`; counted by reason.
pub fn refuse(route: &str, r: Refusal) -> Response<Body> {
    count_refusal(route, &r);
    let body =
        serde_json::json!({ "error": r.label(), "reason": r.to_string() }).to_string() + "\n";
    let mut resp = Response::new(full(body));
    *resp.status_mut() = r.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(after) = r.retry_after()
        && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        h.insert(header::RETRY_AFTER, v);
    }
    if let Some(v) = r
        .www_authenticate()
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    if r == Refusal::BadWebSocketVersion {
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    resp
}

/// Whether the comma-separated header `name` lists `token` (ASCII case-insensitive), as
/// `Connection: keep-alive, Upgrade` lists `upgrade`.
pub fn header_has_token(headers: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A WebSocket upgrade request (RFC 6455 §4.2.1), before version/key checks.
pub fn is_websocket(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::GET
        && header_has_token(req.headers(), header::CONNECTION, "upgrade")
        && header_has_token(req.headers(), header::UPGRADE, "websocket")
}

/// `GET` asking for `text/event-stream`.
pub fn is_event_stream(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::GET
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"))
}
