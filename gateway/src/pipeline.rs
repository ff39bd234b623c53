//! The request pipeline, all before any 101: normalization (one path, one authority, for the
//! gateway and the app alike), route lookup, then the checks every mode shares (drain, Origin,
//! token, admission) and the dispatch to the route's mode: [`crate::proxy::serve`] or
//! [`crate::rooms::entry`]. Every refusal goes through [`refuse`], which renders the one error
//! table.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use switchboard_config::ListenerPaths;
use tracing::Instrument;

use crate::admission::Passed;
use crate::admission::client_ip::client_ip;
use crate::auth::token;
use crate::error::Refusal;
use crate::gateway::Gateway;
use crate::http::{count_refusal, is_event_stream};
use crate::routes::{CompiledRoute, Matched};

pub use crate::http::{Body, is_websocket, refuse};

/// Facts about the client connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The listener's path normalization settings.
    pub paths: ListenerPaths,
}

fn check_handshake(req: &Request<Incoming>) -> Result<(), Refusal> {
    // RFC 6455 §4.1: the opening handshake is an HTTP/1.1 (or later) request. An HTTP/1.0
    // client cannot be switched; refuse before the app is asked.
    if req.version() != http::Version::HTTP_11 {
        return Err(Refusal::BadHandshake("WebSocket needs HTTP/1.1"));
    }
    // RFC 6455 §11.3.1, §11.3.5: each of these appears once. A second copy the gateway did
    // not check would reach the app, which could read the handshake differently.
    let once = |name: header::HeaderName, what: &'static str| {
        let mut values = req.headers().get_all(name).iter();
        match (values.next(), values.next()) {
            (_, Some(_)) => Err(Refusal::BadHandshake(what)),
            (v, None) => Ok(v.and_then(|v| v.to_str().ok())),
        }
    };
    let version = once(
        header::SEC_WEBSOCKET_VERSION,
        "Sec-WebSocket-Version sent more than once",
    )?;
    if version.map(str::trim) != Some("13") {
        return Err(Refusal::BadWebSocketVersion);
    }
    // RFC 6455 §4.1: the handshake is a GET with no body. One the app read before its first
    // frame would shift every frame the gateway checked by its length.
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    if length || req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Err(Refusal::BadHandshake("a WebSocket handshake has no body"));
    }
    let key = once(
        header::SEC_WEBSOCKET_KEY,
        "Sec-WebSocket-Key sent more than once",
    )?
    .unwrap_or("");
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(bytes) if bytes.len() == 16 => Ok(()),
        _ => Err(Refusal::BadHandshake(
            "missing or invalid Sec-WebSocket-Key",
        )),
    }
}

/// The transport a request asks for, as the `handshake` span records it. A plain `GET` on a
/// rooms route can only be long-polling (or refused).
fn transport(req: &Request<Incoming>, rooms: bool) -> &'static str {
    if is_websocket(req) {
        "ws"
    } else if is_event_stream(req) {
        "sse"
    } else if rooms && req.method() == http::Method::GET {
        "longpoll"
    } else {
        "http"
    }
}

/// Handle one request from the edge listener.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: Conn,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // One span per request, ended when the response (the 101 included) is ready: never the
    // connection's lifetime. Never the token, the query string or any header.
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "handshake",
        otel.kind = "server",
        route = tracing::field::Empty,
        transport = tracing::field::Empty,
        status = tracing::field::Empty,
        outcome = tracing::field::Empty,
        reason = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, req.headers());
    // In flight from the head until the response has been sent: the drain waits for it.
    let in_flight = gw.drain.enter_request();
    let resp = route_and_admit(gw.clone(), conn, req, &span)
        .instrument(span.clone())
        .await;
    span.record("status", resp.status().as_u16());
    let (mut parts, body) = resp.into_parts();
    // From SIGTERM on, keep-alive ends with each response, so clients open their next
    // connection where the load balancer now sends them (never on a 101: it is not the end).
    if gw.drain.is_draining() && parts.status != StatusCode::SWITCHING_PROTOCOLS {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let body = InFlight {
        inner: body,
        _guard: in_flight,
    };
    Ok(Response::from_parts(parts, body.boxed()))
}

/// A response body that keeps its request counted as in flight (for the drain) until the body
/// has been sent in full or dropped.
struct InFlight {
    inner: Body,
    _guard: crate::drain::RequestGuard,
}

impl hyper::body::Body for InFlight {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Make the request the one the app will see, before anything looks at it: no field two
/// readers could take differently ([`crate::normalize::unambiguous_fields`]), one authority
/// (the absolute-form target's, written into `Host`), and the normalized path in an
/// origin-form target (the query is kept as sent). Returns the authority to route on.
fn normalize_head(
    req: &mut Request<Incoming>,
    paths: ListenerPaths,
) -> Result<Option<String>, Refusal> {
    crate::normalize::unambiguous_fields(req.headers())
        .map_err(|e| Refusal::BadRequest(e.reason()))?;
    let authority = crate::normalize::authority(req.version(), req.uri(), req.headers())
        .map_err(|e| Refusal::BadRequest(e.reason()))?;
    let path = crate::normalize::path(req.uri().path(), paths)
        .map_err(|e| Refusal::BadRequest(e.reason()))?;
    let absolute_form = req.uri().authority().is_some();
    if absolute_form || path != req.uri().path() {
        let target = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        };
        *req.uri_mut() = target
            .parse()
            .map_err(|_| Refusal::BadRequest("request target"))?;
    }
    if absolute_form && let Some(a) = &authority {
        let host =
            HeaderValue::from_str(a.as_str()).map_err(|_| Refusal::BadRequest("invalid Host"))?;
        req.headers_mut().insert(header::HOST, host);
    }
    Ok(authority.map(|a| a.as_str().to_string()))
}

async fn route_and_admit(
    gw: Arc<Gateway>,
    conn: Conn,
    mut req: Request<Incoming>,
    span: &tracing::Span,
) -> Response<Body> {
    let host = match normalize_head(&mut req, conn.paths) {
        Ok(host) => host,
        Err(r) => {
            if !span.is_disabled() {
                span.record("transport", transport(&req, false));
            }
            span.record("outcome", "refused");
            span.record("reason", r.label());
            return refuse("", r);
        }
    };
    let table = gw.routes.load_full();
    let route = match table.lookup(host.as_deref(), req.uri().path()) {
        Some(Matched::Route(route)) => route,
        missing => {
            // No route, or one that never compiled: refused before anything else is looked at,
            // so a broken route's requests never reach a shorter route's backends.
            let (name, refusal) = match missing {
                Some(Matched::NotProgrammed(name)) => (name, Refusal::RouteNotProgrammed),
                _ => (String::new(), Refusal::NoRoute),
            };
            if !span.is_disabled() {
                if !name.is_empty() {
                    span.record("route", name.as_str());
                }
                span.record("transport", transport(&req, false));
            }
            span.record("outcome", "refused");
            span.record("reason", refusal.label());
            return refuse(&name, refusal);
        }
    };
    let name = route.cfg.name.clone();
    // Nothing is computed for the span when tracing is off.
    if !span.is_disabled() {
        span.record("route", name.as_str());
        span.record("transport", transport(&req, route.rooms.is_some()));
    }
    // Rooms SSE and long-poll answers are read by pages on other origins: all of them, refusals
    // included, carry the route's CORS headers.
    let cors = match route.rooms {
        Some(_) if !is_websocket(&req) => crate::rooms::cors::allowed_origin(&route, req.headers()),
        _ => None,
    };
    if let Some(origin) = &cors
        && crate::rooms::cors::is_preflight(&req)
    {
        span.record("outcome", "preflight");
        return crate::rooms::cors::preflight(&route, origin.clone());
    }
    let draining_stream = crate::rooms::sse::wants_draining_stream(&route, &req);
    let mut resp = match admit_and_dispatch(gw, conn, route.clone(), req).await {
        Ok(resp) => {
            span.record("outcome", "accepted");
            resp
        }
        Err(r) => {
            span.record("outcome", "refused");
            span.record("reason", r.label());
            if r == Refusal::Draining && draining_stream {
                // The refusal an EventSource survives: a 200 stream that says retry and ends.
                count_refusal(&name, &r);
                crate::rooms::sse::draining_stream()
            } else {
                refuse(&name, r)
            }
        }
    };
    if let Some(origin) = cors {
        crate::rooms::cors::apply(&route, origin, resp.headers_mut());
    }
    resp
}

/// The checks every mode shares, in order: drain, WebSocket handshake, Origin, token,
/// admission. What they establish is handed to the route's mode.
async fn check(
    gw: &Gateway,
    conn: Conn,
    route: &CompiledRoute,
    req: &Request<Incoming>,
) -> Result<Passed, Refusal> {
    let websocket = is_websocket(req);
    // After the propagation window nothing new starts here: upgrades and plain requests alike
    // get 503 `draining` with `Retry-After` (and `Connection: close`), so clients retry on
    // another pod; requests already in flight complete.
    if gw.drain.is_refusing() {
        return Err(Refusal::Draining);
    }
    if websocket {
        check_handshake(req)?;
    }
    route.origin.check(req.headers())?;
    let ip = client_ip(
        conn.peer.ip(),
        req.headers(),
        &gw.config.load().trusted_proxies,
    );
    let claims = match (&route.verifier, &route.cfg.jwt) {
        (Some(verifier), Some(jwt)) => {
            let (tok, _) = token::extract(&jwt.token_sources, req.headers(), req.uri().query())
                .ok_or(Refusal::TokenMissing)?;
            Some(
                verifier
                    .verify(&tok)
                    .await
                    .map_err(|e| Refusal::TokenInvalid(e.reason()))?,
            )
        }
        _ => None,
    };
    // Admission counts long-lived connections: WebSockets, SSE streams and (rooms routes)
    // long-polls, which hold a member slot in every room they name while they wait.
    let admitted = if websocket || is_event_stream(req) || route.rooms.is_some() {
        let user = claims.as_ref().and_then(|c| c.sub.as_deref());
        Some(
            route
                .admission
                .admit(&route.cfg.limits, ip, user, &gw.pod)?,
        )
    } else {
        None
    };
    Ok(Passed {
        claims,
        admitted,
        ip,
        websocket,
    })
}

/// The shared checks, then the route's mode, given only the services it uses.
async fn admit_and_dispatch(
    gw: Arc<Gateway>,
    conn: Conn,
    route: Arc<CompiledRoute>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let passed = check(&gw, conn, &route, &req).await?;
    if let Some(policy) = &route.rooms {
        // Yjs document rooms run their own session over the rooms upgrade.
        let session = policy.is_yjs().then(|| {
            let docs = gw.documents.clone();
            let run: crate::rooms::conn::SessionRunner = Arc::new(move |io, ctx| {
                Box::pin(crate::documents::session::run(io, ctx, docs.clone()))
            });
            run
        });
        let svc = crate::rooms::conn::Services {
            hub: &gw.hub,
            drain: &gw.drain,
            hooks: &gw.hooks,
            session,
        };
        return crate::rooms::entry::serve(&svc, &route, policy.clone(), passed, req).await;
    }
    let cfg = gw.config.load();
    let svc = crate::proxy::serve::Services {
        drain: &gw.drain,
        tunnel_threads: gw.tunnel_threads.get(),
        http: &gw.http,
        upstream_timeout: cfg.limits.upstream_timeout,
        http_response_timeout: cfg.limits.http_response_timeout,
        pod: &gw.pod,
    };
    crate::proxy::serve::serve(svc, route, conn.tls, passed, req).await
}
