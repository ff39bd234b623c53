//! Where an admitted rooms-route request goes: a WebSocket (JSON protocol or raw relay), an SSE
//! stream, or a long-poll. All three serve the same rooms through the pod's hub.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::cursor::{Cursor, rooms_param};
use super::hooks::{Notifier, Sent};
use super::hub::{Encoding, Joined, Joiner};
use super::outbox::{Item, Outbox};
use super::protocol;
use super::route::RoomsPolicy;
use super::session::{self, SessionCtx};
use crate::admission::Admitted;
use crate::auth::jwt::Claims;
use crate::auth::token::{self, query_param};
use crate::error::{CloseCause, Refusal, Side};
use crate::gateway::Gateway;
use crate::metrics::metrics;
use crate::pipeline::{Body, close_at_expiry, full, unix_now};
use crate::routes::CompiledRoute;

/// Longest a long-poll waits before answering 204.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(30);
/// SSE keep-alive comment period.
pub const SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// The `retry:` SSE clients are told (milliseconds).
pub const SSE_RETRY_MS: u64 = 2000;

/// What the shared pipeline established before handing over.
pub struct Admission {
    pub claims: Option<Claims>,
    pub admitted: Option<Admitted>,
    pub websocket: bool,
}

/// A pod-unique connection id.
pub fn next_conn_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| format!("{:08x}", rand::random::<u32>()));
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
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

/// Serve an admitted request on a rooms route.
pub async fn serve(
    gw: &Arc<Gateway>,
    route: &Arc<CompiledRoute>,
    policy: Arc<RoomsPolicy>,
    adm: Admission,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let transports = &route.cfg.transports;
    if adm.websocket {
        if !transports.websocket {
            return Err(Refusal::BadRoomsRequest("WebSocket is off for this route"));
        }
        return websocket(gw, route, policy, adm, req);
    }
    if policy.is_raw() {
        return Err(Refusal::BadRoomsRequest("raw rooms are WebSocket only"));
    }
    if gw.drain.is_refusing() {
        return Err(Refusal::Draining);
    }
    if is_event_stream(&req) {
        if !transports.sse {
            return Err(Refusal::BadRoomsRequest("SSE is off for this route"));
        }
        return sse(gw, route, policy, adm, &req).map(|r| cors(route, &req, r));
    }
    if req.method() == http::Method::GET
        && transports.long_polling
        && !rooms_param(req.uri().query()).is_empty()
    {
        return long_poll(gw, route, policy, adm, &req)
            .await
            .map(|r| cors(route, &req, r));
    }
    Err(Refusal::BadRoomsRequest(
        "rooms route: use WebSocket, SSE or ?rooms= long-polling",
    ))
}

/// Browsers let a page read an SSE stream or a long-poll answer from another origin (the app's
/// page on its own host) only with CORS. The request's `Origin` has passed the route's
/// allow-list by now, so it is echoed; credentials (cookies, `withCredentials`) only for
/// origins the route lists explicitly.
fn cors(
    route: &CompiledRoute,
    req: &Request<Incoming>,
    mut resp: Response<Body>,
) -> Response<Body> {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return resp;
    };
    let h = resp.headers_mut();
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
    resp
}

fn websocket(
    gw: &Arc<Gateway>,
    route: &Arc<CompiledRoute>,
    policy: Arc<RoomsPolicy>,
    adm: Admission,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let raw_room = if policy.is_raw() {
        let room = policy.raw_room(req.uri().path()).ok_or(Refusal::NoRoute)?;
        if !policy.may_join(&room, adm.claims.as_ref()) {
            return Err(Refusal::RoomForbidden);
        }
        Some(room)
    } else {
        None
    };
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| tokio_tungstenite::tungstenite::handshake::derive_accept_key(v.as_bytes()))
        .ok_or(Refusal::BadHandshake(
            "missing or invalid Sec-WebSocket-Key",
        ))?;
    // Echo a real subprotocol only: `switchboard.v1` for the JSON protocol, the first offered
    // (never a token carrier) for raw rooms.
    let token_prefixes: Vec<String> = route
        .cfg
        .jwt
        .iter()
        .flat_map(|j| &j.token_sources)
        .filter_map(|s| match s {
            switchboard_config::TokenSource::Subprotocol { prefix } => Some(prefix.clone()),
            _ => None,
        })
        .collect();
    let offered: Vec<String> = token::subprotocols(req.headers())
        .into_iter()
        .filter(|p| !token_prefixes.iter().any(|t| p.starts_with(t.as_str())))
        .map(str::to_string)
        .collect();
    let chosen = if policy.is_raw() {
        offered.first().cloned()
    } else {
        offered
            .iter()
            .find(|p| *p == protocol::SUBPROTOCOL)
            .cloned()
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    // `rooms.notify` / `rooms.notifyNats` (SSE streams notify too; long-polls do not).
    let notifier = Notifier::new(&gw.hooks, &route.cfg.name, &policy, gw.hub.bus());
    let ctx = SessionCtx {
        hub: gw.hub.clone(),
        policy,
        hooks: gw.hooks.clone(),
        route: route.cfg.name.clone(),
        conn_id: next_conn_id(),
        expires_at: close_at_expiry(route, adm.claims.as_ref()),
        claims: adm.claims,
        limits: route.cfg.limits.clone(),
        keepalive: route.cfg.keepalive.clone(),
        drain: gw.drain.close_signal(),
        drain_code: route.cfg.drain.close_code,
        drain_reason: route.cfg.drain.close_reason.clone(),
        drain_window: route.cfg.drain.window,
        raw_room,
    };
    let live = gw.drain.enter();
    let admitted = adm.admitted;
    let route_name = route.cfg.name.clone();
    metrics()
        .connections_total
        .with_label_values(&[&route_name, "upgraded"])
        .inc();
    tokio::spawn(async move {
        let _live = live;
        let Ok(io) = on_upgrade.await else { return };
        let active = metrics()
            .connections_active
            .with_label_values(&[&route_name]);
        active.inc();
        let started = std::time::Instant::now();
        let user = ctx.claims.as_ref().and_then(|c| c.sub.clone());
        let conn = ctx.conn_id.clone();
        let connected = notifier.send(
            Sent::default(),
            user.as_deref(),
            connect_event(&conn, user.as_deref(), &route_name, "websocket"),
        );
        let cause = session::run(io, ctx).await;
        active.dec();
        drop(admitted); // the admission slot frees with the connection
        let disconnected = notifier.send(
            connected,
            user.as_deref(),
            disconnect_event(&conn, user.as_deref(), &route_name, "websocket", &cause),
        );
        metrics()
            .closes
            .with_label_values(&[&route_name, &cause.code().to_string(), cause.label()])
            .inc();
        tracing::info!(
            target: "switchboard::connection",
            route = %route_name,
            conn = %conn,
            duration_ms = started.elapsed().as_millis() as u64,
            close_code = cause.code(),
            cause = cause.label(),
            "rooms connection ended"
        );
        disconnected.finished().await; // still counted as live for the drain
    });

    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = chosen.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(resp)
}

/// The `connect` notification of a rooms WebSocket or SSE stream (docs/protocol.md).
fn connect_event(conn: &str, user: Option<&str>, route: &str, transport: &str) -> Value {
    json!({"event": "connect", "conn": conn, "user": user, "route": route,
           "transport": transport, "ts": unix_now()})
}

/// The `disconnect` notification: `code` is the close code of the cause (for an SSE stream,
/// the code a WebSocket would have been closed with; 1006 when the client went away).
fn disconnect_event(
    conn: &str,
    user: Option<&str>,
    route: &str,
    transport: &str,
    cause: &CloseCause,
) -> Value {
    json!({"event": "disconnect", "conn": conn, "user": user, "route": route,
           "transport": transport, "ts": unix_now(), "code": cause.code()})
}

/// The rooms of an SSE or long-poll request, all checked against `rooms.join`.
fn requested_rooms(
    policy: &RoomsPolicy,
    claims: Option<&Claims>,
    query: Option<&str>,
) -> Result<Vec<String>, Refusal> {
    let mut rooms = rooms_param(query);
    if let Some(user_room) = policy.user_room(claims)
        && !rooms.contains(&user_room)
    {
        rooms.push(user_room);
    }
    if rooms.is_empty() {
        return Err(Refusal::BadRoomsRequest(
            "name at least one room: ?rooms=a,b",
        ));
    }
    if rooms.len() > session::MAX_ROOMS_PER_CONNECTION {
        return Err(Refusal::BadRoomsRequest("too many rooms"));
    }
    if rooms.iter().any(|r| !policy.may_join(r, claims)) {
        return Err(Refusal::RoomForbidden);
    }
    Ok(rooms)
}

fn start_cursor(req: &Request<Incoming>, param: &str) -> Cursor {
    req.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(req.uri().query(), param))
        .and_then(|c| Cursor::decode(&c))
        .unwrap_or_default()
}

/// Where a joined room's cursor entry starts: where the member's stream starts (its own
/// position while its gap is replayed, just before what a new epoch retains; each replayed
/// message then raises it), else the room's current position. Set, not merged: a `since` from
/// another epoch or ahead of the room must not survive.
fn start_at(cursor: &mut Cursor, room: &str, j: &Joined) {
    cursor
        .positions
        .insert(room.to_string(), (j.start.seq, j.start.epoch.clone()));
}

fn sse_event(event: Option<&str>, id: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 64);
    if let Some(e) = event {
        out.push_str("event: ");
        out.push_str(e);
        out.push('\n');
    }
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

fn sse(
    gw: &Arc<Gateway>,
    route: &Arc<CompiledRoute>,
    policy: Arc<RoomsPolicy>,
    adm: Admission,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let rooms = requested_rooms(&policy, adm.claims.as_ref(), req.uri().query())?;
    let mut cursor = start_cursor(req, "lastEventId");
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let hub = gw.hub.clone();
    let conn = next_conn_id();
    let outbox = Outbox::new(policy.cfg.max_queue_bytes);
    let joiner = Joiner {
        conn: conn.clone(),
        outbox: outbox.clone(),
        encoding: Encoding::Json,
        presence: None,
        presence_events: false,
    };
    let mut drain = gw.drain.close_signal();
    let live = gw.drain.enter();
    let admitted = adm.admitted;
    let expiry = close_at_expiry(route, adm.claims.as_ref());
    let drain_window = route.cfg.drain.window;
    let draining = CloseCause::Draining {
        code: route.cfg.drain.close_code,
        reason: route.cfg.drain.close_reason.clone(),
    };
    let route_name = route.cfg.name.clone();
    let notifier = Notifier::new(&gw.hooks, &route_name, &policy, gw.hub.bus());
    let user = adm.claims.as_ref().and_then(|c| c.sub.clone());
    metrics()
        .connections_total
        .with_label_values(&[&route_name, "sse"])
        .inc();
    tokio::spawn(async move {
        let _live = live;
        let started = std::time::Instant::now();
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(Frame::data(b))).await.is_ok() }
        };
        if !send(Bytes::from(format!(
            "retry: {SSE_RETRY_MS}\n: connected\n\n"
        )))
        .await
        {
            return;
        }
        let connected = notifier.send(
            Sent::default(),
            user.as_deref(),
            connect_event(&conn, user.as_deref(), &route_name, "sse"),
        );
        let gone = CloseCause::Abnormal(Side::Downstream);
        let mut joined = Vec::new();
        let mut ended = None;
        for room in &rooms {
            let key = policy.key(room);
            let since = cursor.get(room);
            match hub.join(&key, &joiner, since.as_ref(), None).await {
                Ok(j) => {
                    joined.push(key);
                    start_at(&mut cursor, room, &j);
                    // The id lets EventSource resume even if no message arrives before a drop.
                    let data = protocol::joined(room, j.recovered, &j.position, None);
                    let id = cursor.encode();
                    if !send(sse_event(Some("joined"), Some(&id), &data)).await {
                        ended = Some(gone.clone());
                        break;
                    }
                }
                Err(e) => {
                    let data =
                        protocol::error(None, protocol::ErrorCode::Unavailable, &e.to_string());
                    let _ = send(sse_event(Some("error"), None, &data)).await;
                }
            }
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let expiry = expiry.unwrap_or(far);
        let mut drain_at: Option<tokio::time::Instant> = (*drain.borrow())
            .then(|| tokio::time::Instant::now() + crate::drain::jitter(drain_window));
        let cause = loop {
            if let Some(cause) = ended {
                break cause;
            }
            tokio::select! {
                items = outbox.take_all() => {
                    if items.is_empty() {
                        // Slow consumer: the client reconnects with Last-Event-ID.
                        break CloseCause::SlowConsumer;
                    }
                    let mut chunk = Vec::new();
                    for item in items {
                        match item {
                            Item::Message { room, seq, epoch, json } => {
                                cursor.set(&room, seq, &epoch);
                                chunk.extend_from_slice(&sse_event(None, Some(&cursor.encode()), &json));
                            }
                            // Told before the next message; the id moves past what was lost.
                            Item::Lost { room, seq, epoch, json } => {
                                if seq != 0 {
                                    cursor.set(&room, seq, &epoch);
                                }
                                chunk.extend_from_slice(&sse_event(Some("lost"), Some(&cursor.encode()), &json));
                            }
                            _ => {}
                        }
                    }
                    if !chunk.is_empty() && !send(Bytes::from(chunk)).await {
                        break gone;
                    }
                }
                _ = tokio::time::sleep(SSE_KEEPALIVE) => {
                    if !send(Bytes::from_static(b": keep-alive\n\n")).await {
                        break gone;
                    }
                }
                _ = tokio::time::sleep_until(expiry) => {
                    let _ = send(sse_event(Some("error"), None, &protocol::error(None, protocol::ErrorCode::Forbidden, CloseCause::TokenExpired.reason()))).await;
                    break CloseCause::TokenExpired;
                }
                changed = drain.changed(), if drain_at.is_none() => {
                    if changed.is_err() || *drain.borrow() {
                        // Spread stream ends over the route's drain window, like WebSockets.
                        drain_at = Some(tokio::time::Instant::now() + crate::drain::jitter(drain_window));
                    }
                }
                _ = tokio::time::sleep_until(drain_at.unwrap_or(far)), if drain_at.is_some() => {
                    {
                        let hint = rand::random_range(500..5000u64);
                        let _ = send(Bytes::from(format!("retry: {hint}\n")))
                            .await;
                        let _ = send(sse_event(Some("shutdown"), None, &protocol::shutdown(hint))).await;
                        break draining;
                    }
                }
                _ = tx.closed() => break gone,
            }
        };
        outbox.close();
        for key in joined {
            hub.leave(&key, &conn).await;
        }
        drop(admitted); // the admission slot frees with the connection
        let disconnected = notifier.send(
            connected,
            user.as_deref(),
            disconnect_event(&conn, user.as_deref(), &route_name, "sse", &cause),
        );
        tracing::info!(
            target: "switchboard::connection",
            route = %route_name,
            conn = %conn,
            transport = "sse",
            duration_ms = started.elapsed().as_millis() as u64,
            close_code = cause.code(),
            cause = cause.label(),
            "rooms stream ended"
        );
        disconnected.finished().await; // still counted as live for the drain
    });
    let body = StreamBody::new(tokio_stream_from(rx))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// Adapt an mpsc receiver into a `Stream` without another dependency.
fn tokio_stream_from<T>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn long_poll(
    gw: &Arc<Gateway>,
    route: &Arc<CompiledRoute>,
    policy: Arc<RoomsPolicy>,
    adm: Admission,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let rooms = requested_rooms(&policy, adm.claims.as_ref(), req.uri().query())?;
    let wait = query_param(req.uri().query(), "timeout")
        .and_then(|t| {
            humantime::parse_duration(&t)
                .ok()
                .or_else(|| t.parse::<u64>().ok().map(Duration::from_secs))
        })
        .unwrap_or(Duration::from_secs(25))
        .min(MAX_POLL_WAIT);
    let mut cursor = start_cursor(req, "cursor");
    let conn = next_conn_id();
    let outbox = Outbox::new(policy.cfg.max_queue_bytes);
    let joiner = Joiner {
        conn: conn.clone(),
        outbox: outbox.clone(),
        encoding: Encoding::Json,
        presence: None,
        presence_events: false,
    };
    metrics()
        .connections_total
        .with_label_values(&[&route.cfg.name, "long_poll"])
        .inc();
    let mut lost = Vec::new();
    let mut joined = Vec::new();
    for room in &rooms {
        let key = policy.key(room);
        let since = cursor.get(room);
        match gw.hub.join(&key, &joiner, since.as_ref(), None).await {
            Ok(j) => {
                if since.is_some() && !j.recovered {
                    lost.push(room.clone());
                }
                start_at(&mut cursor, room, &j);
                joined.push(key);
            }
            Err(_) => {
                for key in &joined {
                    gw.hub.leave(key, &conn).await;
                }
                return Err(Refusal::BusUnavailable);
            }
        }
    }
    // Whatever the gap replay queued is ready now; otherwise wait for the first live message.
    let mut messages: Vec<Value> = Vec::new();
    // A `lost` signal (the pod fell behind mid-poll) is kept in order among the messages, and
    // its room is listed in `lost`.
    let collect = |items: Vec<Item>,
                   cursor: &mut Cursor,
                   messages: &mut Vec<Value>,
                   lost: &mut Vec<String>| {
        for item in items {
            match item {
                Item::Message {
                    room,
                    seq,
                    epoch,
                    json,
                } => {
                    cursor.set(&room, seq, &epoch);
                    messages.push(serde_json::from_str(&json).unwrap_or(Value::Null));
                }
                Item::Lost {
                    room,
                    seq,
                    epoch,
                    json,
                } => {
                    if seq != 0 {
                        cursor.set(&room, seq, &epoch);
                    }
                    messages.push(serde_json::from_str(&json).unwrap_or(Value::Null));
                    if !lost.contains(&room) {
                        lost.push(room);
                    }
                }
                _ => {}
            }
        }
    };
    let ready = futures_util::FutureExt::now_or_never(outbox.take_all()).unwrap_or_default();
    collect(ready, &mut cursor, &mut messages, &mut lost);
    if messages.is_empty() && lost.is_empty() {
        let mut drain = gw.drain.close_signal();
        tokio::select! {
            items = outbox.take_all() => {
                // Let a burst land in one answer.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let more = futures_util::FutureExt::now_or_never(outbox.take_all()).unwrap_or_default();
                collect(items, &mut cursor, &mut messages, &mut lost);
                collect(more, &mut cursor, &mut messages, &mut lost);
            }
            _ = tokio::time::sleep(wait) => {}
            _ = wait_drain(&mut drain) => {}
        }
    }
    outbox.close();
    for key in &joined {
        gw.hub.leave(key, &conn).await;
    }
    drop(adm.admitted);
    let cursor_text = cursor.encode();
    if messages.is_empty() && lost.is_empty() {
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&cursor_text) {
            resp.headers_mut().insert("x-switchboard-cursor", v);
        }
        return Ok(resp);
    }
    let body = json!({ "messages": messages, "cursor": cursor_text, "lost": lost }).to_string();
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Resolves once the drain's close phase starts (or the drain controller is gone).
async fn wait_drain(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let started = rx.wait_for(|d| *d).await.is_ok();
    let _ = started;
}
