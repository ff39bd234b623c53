//! Where an admitted rooms-route request goes: a WebSocket (JSON protocol or raw relay), an SSE
//! stream, or a long-poll. All three serve the same rooms through the pod's hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::cursor::{Cursor, rooms_param};
use super::hooks::{Notifier, Sent};
use super::hub::{Encoding, Joined, Joiner};
use super::outbox::{Item, Outbox};
use super::protocol;
use super::route::RoomsPolicy;
use super::session::{self, SessionCtx};
use super::stream_body::{self, SendError};
use crate::abort::ConnAbort;
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
/// How long the end of a slow consumer's stream may take to be written before its
/// connection is dropped (as for a slow WebSocket's Close).
const SLOW_END_WAIT: Duration = Duration::from_secs(2);

/// The refusal reason for a token whose `sub` is empty on a route with user rooms.
pub const EMPTY_SUB: &str = "token sub is empty (user rooms need a subject)";

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
    // Every token with a `sub` joins its user room `user:<sub>`; an empty one would join every
    // such token to the one shared room `user:`.
    if !policy.is_raw() && adm.claims.as_ref().and_then(|c| c.sub.as_deref()) == Some("") {
        return Err(Refusal::TokenInvalid(EMPTY_SUB));
    }
    if adm.websocket {
        if !transports.websocket {
            return Err(Refusal::BadRoomsRequest("WebSocket is off for this route"));
        }
        return websocket(gw, route, policy, adm, req);
    }
    if policy.is_raw() {
        return Err(Refusal::BadRoomsRequest("raw rooms are WebSocket only"));
    }
    // Drain and CORS are the pipeline's: after the propagation window nothing reaches here.
    if is_event_stream(&req) {
        if !transports.sse {
            return Err(Refusal::BadRoomsRequest("SSE is off for this route"));
        }
        return sse(gw, route, policy, adm, &req);
    }
    if req.method() == http::Method::GET
        && transports.long_polling
        && !rooms_param(req.uri().query()).is_empty()
    {
        return long_poll(gw, route, policy, adm, &req).await;
    }
    Err(Refusal::BadRoomsRequest(
        "rooms route: use WebSocket, SSE or ?rooms= long-polling",
    ))
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
    let documents = ctx.policy.is_yjs().then(|| gw.documents.clone());
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
        let cause = match documents {
            Some(docs) => crate::documents::session::run(io, ctx, docs).await,
            None => session::run(io, ctx).await,
        };
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

/// The request's cursor, keeping only the positions of the request's `rooms` (a forged cursor
/// naming other rooms would otherwise be carried, and repeated in every `id:`, for the life of
/// the stream). One that cannot be decoded is ignored: every room joins fresh.
fn start_cursor(req: &Request<Incoming>, param: &str, rooms: &[String]) -> Cursor {
    let mut cursor = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(req.uri().query(), param))
        .and_then(|c| Cursor::decode(&c).ok())
        .unwrap_or_default();
    cursor.retain(rooms);
    cursor
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
    let mut cursor = start_cursor(req, "lastEventId", &rooms);
    let hub = gw.hub.clone();
    let conn = next_conn_id();
    let outbox = Outbox::new(policy.cfg.max_queue_bytes);
    // Encoded chunks stay charged to the outbox's bound until hyper takes them.
    let (body_tx, body) = stream_body::channel(outbox.clone());
    let conn_abort = req.extensions().get::<ConnAbort>().cloned();
    let joiner = Joiner {
        conn: conn.clone(),
        outbox: outbox.clone(),
        encoding: Encoding::Json,
        presence: None,
        presence_events: false,
    };
    let mut drain = gw.drain.close_signal();
    // Shared by the task and the response body: the drain counts the stream until both are
    // done, so the process cannot exit between the task's end and hyper writing the body's
    // terminating chunk.
    let live = Arc::new(gw.drain.enter());
    let body_live = live.clone();
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
        let gone = CloseCause::Abnormal(Side::Downstream);
        // Never waits on the client: a chunk over the bound ends the stream (slow consumer).
        let send = |b: Bytes| match body_tx.send(b) {
            Ok(()) => None,
            Err(SendError::Gone) => Some(gone.clone()),
            Err(SendError::SlowConsumer) => Some(CloseCause::SlowConsumer),
        };
        if send(Bytes::from(format!(
            "retry: {SSE_RETRY_MS}\n: connected\n\n"
        )))
        .is_some()
        {
            return;
        }
        let connected = notifier.send(
            Sent::default(),
            user.as_deref(),
            connect_event(&conn, user.as_deref(), &route_name, "sse"),
        );
        let mut joined = Vec::new();
        // The joined events go out as one chunk (one chunk always fits an empty queue).
        let mut opening = Vec::new();
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
                    opening.extend_from_slice(&sse_event(Some("joined"), Some(&id), &data));
                }
                Err(e) => {
                    let data =
                        protocol::error(None, protocol::ErrorCode::Unavailable, &e.to_string());
                    opening.extend_from_slice(&sse_event(Some("error"), None, &data));
                }
            }
        }
        let mut ended = send(Bytes::from(opening));
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let expiry = expiry.unwrap_or(far);
        let mut drain_at: Option<tokio::time::Instant> = (*drain.borrow())
            .then(|| tokio::time::Instant::now() + crate::drain::jitter(drain_window));
        let cause = loop {
            if let Some(cause) = ended.take() {
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
                    if !chunk.is_empty() {
                        ended = send(Bytes::from(chunk));
                    }
                }
                _ = tokio::time::sleep(SSE_KEEPALIVE) => {
                    ended = send(Bytes::from_static(b": keep-alive\n\n"));
                }
                _ = tokio::time::sleep_until(expiry) => {
                    let _ = send(sse_event(Some("error"), None, &protocol::error(None, protocol::ErrorCode::Forbidden, CloseCause::TokenExpired.reason())));
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
                        let _ = send(Bytes::from(format!("retry: {hint}\n")));
                        let _ = send(sse_event(Some("shutdown"), None, &protocol::shutdown(hint)));
                        break draining;
                    }
                }
                _ = body_tx.gone() => break gone,
            }
        };
        outbox.close();
        for key in joined {
            hub.leave(&key, &conn).await;
        }
        drop(admitted); // the admission slot frees with the connection
        let slow = cause == CloseCause::SlowConsumer;
        if slow {
            // Like a slow WebSocket: what fitted may still go out, then the stream ends.
            body_tx.finish();
        }
        metrics()
            .closes
            .with_label_values(&[&route_name, &cause.code().to_string(), cause.label()])
            .inc();
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
        if slow
            && tokio::time::timeout(SLOW_END_WAIT, body_tx.gone())
                .await
                .is_err()
        {
            // The client reads nothing: the end cannot be written. Drop the stream's bytes
            // and the connection, so nothing it made the gateway hold is left behind.
            body_tx.discard();
            if let Some(abort) = &conn_abort {
                abort.abort();
            }
        }
        drop(body_tx);
        disconnected.finished().await; // still counted as live for the drain
    });
    let body = body
        .map_frame(move |frame| {
            let _ = &body_live;
            frame
        })
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

/// Whether a request refused as `draining` is answered with [`draining_stream`]: an SSE
/// request on a route that serves SSE.
pub fn wants_draining_stream(route: &CompiledRoute, req: &Request<Incoming>) -> bool {
    route.rooms.as_ref().is_some_and(|p| !p.is_raw())
        && route.cfg.transports.sse
        && is_event_stream(req)
}

/// The answer to an SSE request after the drain's propagation window: a 200 stream with
/// `retry:` and the `shutdown` event (as a draining stream ends), then its end. `EventSource`
/// treats every other status as fatal and never reconnects; this one it follows after the
/// hint, keeping its `Last-Event-ID` (the event has no `id:`).
pub fn draining_stream() -> Response<Body> {
    let hint = rand::random_range(500..5000u64);
    let mut body = format!("retry: {hint}\n").into_bytes();
    body.extend_from_slice(&sse_event(
        Some("shutdown"),
        None,
        &protocol::shutdown(hint),
    ));
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    resp
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
    let mut cursor = start_cursor(req, "cursor", &rooms);
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
