//! The request pipeline, all before any 101: normalization (one path, one authority, for the
//! gateway and the app alike), route lookup, Origin, token, admission, then the route's mode.
//! Every refusal goes through [`refuse`], which renders the one error table.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchboard_config::{ListenerPaths, PinningKey};
use tracing::Instrument;

use crate::admission::client_ip::client_ip;
use crate::auth::jwt::Claims;
use crate::auth::token;
use crate::error::Refusal;
use crate::gateway::Gateway;
use crate::metrics::metrics;
use crate::proxy::identity::{self, identity_from_claims};
use crate::proxy::upstream::{Handshake, open_websocket};
use crate::routes::{CompiledRoute, Matched};
use crate::tunnel::relay::{self, DirCounters, TunnelLimits};

/// Response body type of the edge listener.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Facts about the client connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The listener's path normalization settings.
    pub paths: ListenerPaths,
}

pub(crate) fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

fn count_refusal(route: &str, r: &Refusal) {
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

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A WebSocket upgrade request (RFC 6455 §4.2.1), before version/key checks.
pub fn is_websocket(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::GET
        && header_has_token(req, header::CONNECTION, "upgrade")
        && header_has_token(req, header::UPGRADE, "websocket")
}

fn check_handshake(req: &Request<Incoming>) -> Result<(), Refusal> {
    // RFC 6455 §4.1: the opening handshake is an HTTP/1.1 (or later) request. An HTTP/1.0
    // client cannot be switched; refuse before the app is asked.
    if req.version() != http::Version::HTTP_11 {
        return Err(Refusal::BadHandshake("WebSocket needs HTTP/1.1"));
    }
    let version = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some("13") {
        return Err(Refusal::BadWebSocketVersion);
    }
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(bytes) if bytes.len() == 16 => Ok(()),
        _ => Err(Refusal::BadHandshake(
            "missing or invalid Sec-WebSocket-Key",
        )),
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When a live connection must be closed with 4001: the token's `exp`, unless the route turns
/// `closeOnExpiry` off. Shared by proxy tunnels and rooms connections.
pub(crate) fn close_at_expiry(
    route: &CompiledRoute,
    claims: Option<&Claims>,
) -> Option<tokio::time::Instant> {
    match (&route.cfg.jwt, claims.and_then(|c| c.exp)) {
        (Some(jwt), Some(exp)) if jwt.close_on_expiry => {
            Some(tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(unix_now())))
        }
        _ => None,
    }
}

/// The pinning key for this request (falls back to the client IP when the source is absent).
fn pin_key(
    route: &CompiledRoute,
    req: &Request<Incoming>,
    claims: Option<&Claims>,
    ip: IpAddr,
) -> String {
    let key = route.cfg.proxy.as_ref().and_then(|p| match &p.pinning {
        PinningKey::ClientIp => None,
        PinningKey::Claim(c) => claims.and_then(|cl| cl.get_str(c)),
        PinningKey::Header(h) => req
            .headers()
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        PinningKey::Query(q) => token::query_param(req.uri().query(), q),
        PinningKey::Cookie(name) => token::cookie(req.headers(), name),
    });
    key.unwrap_or_else(|| ip.to_string())
}

/// The transport a request asks for, as the `handshake` span records it. A plain `GET` on a
/// rooms route can only be long-polling (or refused).
fn transport(req: &Request<Incoming>, rooms: bool) -> &'static str {
    if is_websocket(req) {
        "ws"
    } else if crate::rooms::entry::is_event_stream(req) {
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

/// Make the request the one the app will see, before anything looks at it: one authority
/// (the absolute-form target's, written into `Host`), and the normalized path in an
/// origin-form target (the query is kept as sent). Returns the authority to route on.
fn normalize_head(
    req: &mut Request<Incoming>,
    paths: ListenerPaths,
) -> Result<Option<String>, Refusal> {
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
    let draining_stream = crate::rooms::entry::wants_draining_stream(&route, &req);
    let mut resp = match admit_and_proxy(gw, conn, route.clone(), req).await {
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
                crate::rooms::entry::draining_stream()
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

async fn admit_and_proxy(
    gw: Arc<Gateway>,
    conn: Conn,
    route: Arc<CompiledRoute>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let websocket = is_websocket(&req);
    // After the propagation window nothing new starts here: upgrades and plain requests alike
    // get 503 `draining` with `Retry-After` (and `Connection: close`), so clients retry on
    // another pod; requests already in flight complete.
    if gw.drain.is_refusing() {
        return Err(Refusal::Draining);
    }
    if websocket {
        check_handshake(&req)?;
    }
    route.origin.check(req.headers())?;
    let cfg = gw.config.load();
    let ip = client_ip(conn.peer.ip(), req.headers(), &cfg.trusted_proxies);

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
    let admitted =
        if websocket || crate::rooms::entry::is_event_stream(&req) || route.rooms.is_some() {
            let user = claims.as_ref().and_then(|c| c.sub.as_deref());
            Some(
                route
                    .admission
                    .admit(&route.cfg.limits, ip, user, &gw.pod)?,
            )
        } else {
            None
        };
    if let Some(policy) = &route.rooms {
        let admission = crate::rooms::entry::Admission {
            claims,
            admitted,
            websocket,
        };
        return crate::rooms::entry::serve(&gw, &route, policy.clone(), admission, req).await;
    }

    let key = pin_key(&route, &req, claims.as_ref(), ip);
    let backend = route
        .backends
        .pick(key.as_bytes())
        .ok_or(Refusal::NoBackend)?;

    // What the app sees: no token carriers, no client copies of identity, our identity.
    let mut headers = req.headers().clone();
    let query = match &route.cfg.jwt {
        Some(jwt) => token::strip(&jwt.token_sources, &mut headers, req.uri().query()),
        None => req.uri().query().map(str::to_string),
    };
    let proxy = route.cfg.proxy.as_ref();
    let identity_map = proxy
        .map(|p| p.identity_headers.clone())
        .unwrap_or_default();
    let identity = identity_from_claims(&identity_map, |c| {
        claims.as_ref().and_then(|cl| cl.get_str(c))
    });
    let names: Vec<String> = identity_map.values().cloned().collect();
    let signature = match (
        proxy.and_then(|p| p.signature.as_ref()),
        &route.signature_key,
    ) {
        (Some(s), Some(k)) => Some((s.header.as_str(), k.as_slice())),
        _ => None,
    };
    let fwd = identity::Forwarding {
        client_ip: ip,
        tls: conn.tls,
        route: &route.cfg.name,
        now_unix: unix_now(),
    };
    let mut headers = identity::upstream_headers(&headers, &identity, &names, signature, fwd);
    let path_and_query = match &query {
        Some(q) => format!("{}?{q}", req.uri().path()),
        None => req.uri().path().to_string(),
    };

    if !websocket {
        return forward_http(&gw, &route, backend, req, headers, &path_and_query).await;
    }

    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let mut up_req = Request::builder()
        .method(http::Method::GET)
        .uri(&path_and_query)
        .body(Empty::<Bytes>::new())
        .map_err(|_| Refusal::BadHandshake("request target"))?;
    *up_req.headers_mut() = headers;
    let on_client_upgrade = hyper::upgrade::on(&mut req);
    let connect = connect_span(backend);
    crate::telemetry::propagate(&connect, up_req.headers_mut());
    let handshake = open_websocket(backend, up_req, cfg.limits.upstream_timeout)
        .instrument(connect.clone())
        .await;
    record_connect(
        connect,
        match &handshake {
            Ok(Handshake::Upgraded(resp, _)) => Ok(("upgraded", resp.status())),
            Ok(Handshake::Refused(resp)) => Ok(("app_refused", resp.status())),
            Err(r) => Err(r),
        },
    );
    let (resp, upstream) = match handshake? {
        Handshake::Refused(resp) => {
            // The app said no: its answer goes to the client unchanged.
            metrics()
                .connections_total
                .with_label_values(&[&route.cfg.name, "app_refused"])
                .inc();
            let (parts, body) = resp.into_parts();
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        Handshake::Upgraded(resp, upstream) => (resp, upstream),
    };

    let expires_at = close_at_expiry(&route, claims.as_ref());
    let limits = TunnelLimits {
        max_message_bytes: route.cfg.limits.max_message_bytes,
        messages_per_second: route.cfg.limits.messages_per_second,
        message_burst: route.cfg.limits.message_burst,
        ping_interval: route.cfg.keepalive.interval,
        pong_timeout: route.cfg.keepalive.timeout,
        app_ping_interval: route.cfg.keepalive.app.interval,
        app_pong_timeout: route.cfg.keepalive.app.timeout,
        close_timeout: Duration::from_secs(5),
        expires_at,
        drain_code: route.cfg.drain.close_code,
        drain_reason: route.cfg.drain.close_reason.clone(),
        drain_window: route.cfg.drain.window,
    };
    let live = gw.drain.enter();
    let drain_signal = gw.drain.close_signal();
    let route_name = route.cfg.name.clone();
    let m = metrics();
    m.connections_total
        .with_label_values(&[&route_name, "upgraded"])
        .inc();
    let (fi, bi) = m.dir(&route_name, "inbound");
    let (fo, bo) = m.dir(&route_name, "outbound");
    tokio::spawn(async move {
        let _admitted = admitted;
        let _live = live;
        let active = metrics()
            .connections_active
            .with_label_values(&[&route_name]);
        let Ok(client) = on_client_upgrade.await else {
            metrics()
                .connections_total
                .with_label_values(&[&route_name, "upgrade_failed"])
                .inc();
            return;
        };
        active.inc();
        let started = Instant::now();
        let outcome = relay::run(
            TokioIo::new(client),
            TokioIo::new(upstream),
            limits,
            DirCounters {
                frames: fi,
                bytes: bi,
            },
            DirCounters {
                frames: fo,
                bytes: bo,
            },
            drain_signal,
        )
        .await;
        active.dec();
        let code = outcome.cause.code();
        metrics()
            .closes
            .with_label_values(&[&route_name, &code.to_string(), outcome.cause.label()])
            .inc();
        tracing::info!(
            target: "switchboard::connection",
            route = %route_name,
            backend = %backend,
            client_ip = %ip,
            duration_ms = started.elapsed().as_millis() as u64,
            bytes_in = outcome.bytes_in,
            bytes_out = outcome.bytes_out,
            frames_in = outcome.frames_in,
            frames_out = outcome.frames_out,
            close_code = code,
            cause = outcome.cause.label(),
            "connection ended"
        );
    });
    let mut out = Response::new(full(Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    Ok(out)
}

/// The `proxy.connect` span: from sending the handshake (or request) to the app's answer.
fn connect_span(backend: SocketAddr) -> tracing::Span {
    tracing::info_span!(
        target: crate::telemetry::TARGET,
        "proxy.connect",
        otel.kind = "client",
        backend = %backend,
        result = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// End a `proxy.connect` span with what the app answered (`result`, `status`) or the refusal.
fn record_connect(span: tracing::Span, outcome: Result<(&'static str, StatusCode), &Refusal>) {
    match outcome {
        Ok((result, status)) => {
            span.record("result", result);
            span.record("status", status.as_u16());
        }
        Err(r) => {
            span.record("result", r.label());
        }
    }
}

async fn forward_http(
    gw: &Gateway,
    route: &CompiledRoute,
    backend: SocketAddr,
    req: Request<Incoming>,
    headers: http::HeaderMap,
    path_and_query: &str,
) -> Result<Response<Body>, Refusal> {
    let uri: http::Uri = format!("http://{backend}{path_and_query}")
        .parse()
        .map_err(|_| Refusal::BadHandshake("request target"))?;
    let (parts, body) = req.into_parts();
    // A body the client breaks (a malformed chunk) fails the upstream request too: remember
    // whose fault it was, so it is a 400 for the client and not a 502 for the backend.
    let client_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = client_failed.clone();
    let body = body
        .map_err(move |e| {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            e
        })
        .boxed();
    let mut up = Request::builder()
        .method(parts.method)
        .uri(uri)
        .body(body)
        .map_err(|_| Refusal::BadHandshake("request"))?;
    *up.headers_mut() = headers;
    let timeout = gw.config.load().limits.http_response_timeout;
    let connect = connect_span(backend);
    crate::telemetry::propagate(&connect, up.headers_mut());
    let resp = tokio::time::timeout(timeout, gw.http.request(up))
        .instrument(connect.clone())
        .await
        .map_err(|_| Refusal::BackendTimeout)
        .and_then(|r| {
            r.map_err(|_| {
                if client_failed.load(std::sync::atomic::Ordering::Relaxed) {
                    Refusal::BadRequestBody
                } else {
                    Refusal::BackendUnreachable
                }
            })
        });
    record_connect(
        connect,
        match &resp {
            Ok(resp) => Ok(("ok", resp.status())),
            Err(r) => Err(r),
        },
    );
    let resp = resp?;
    metrics()
        .http_requests
        .with_label_values(&[&route.cfg.name, resp.status().as_str()])
        .inc();
    metrics()
        .connections_total
        .with_label_values(&[&route.cfg.name, "http"])
        .inc();
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, body.boxed()))
}
