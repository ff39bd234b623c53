//! Rooms over Server-Sent Events: one stream per request, joined to the rooms it names,
//! resumable with `Last-Event-ID`; and the stream a draining pod answers SSE requests with.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::conn::{
    Services, connect_event, disconnect_event, next_conn_id, requested_rooms, start_at,
    start_cursor,
};
use super::hooks::{Notifier, Sent};
use super::hub::{Encoding, GapFit, Joiner};
use super::outbox::{Item, Outbox};
use super::protocol;
use super::route::RoomsPolicy;
use super::stream_body::{self, SendError};
use crate::abort::ConnAbort;
use crate::admission::Passed;
use crate::error::{CloseCause, Refusal, Side};
use crate::http::{Body, full, is_event_stream};
use crate::metrics::metrics;
use crate::routes::CompiledRoute;

/// SSE keep-alive comment period.
pub const SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// The `retry:` SSE clients are told (milliseconds).
pub const SSE_RETRY_MS: u64 = 2000;
/// How long the end of a slow consumer's stream may take to be written before its
/// connection is dropped (as for a slow WebSocket's Close).
const SLOW_END_WAIT: Duration = Duration::from_secs(2);

/// Most bytes of encoded events built up before they are handed to the stream's body.
const CHUNK_BYTES: usize = 64 * 1024;

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

/// Answer an SSE request with its stream and spawn the task that feeds it.
pub(crate) fn sse(
    svc: &Services<'_>,
    route: &Arc<CompiledRoute>,
    policy: Arc<RoomsPolicy>,
    adm: Passed,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let rooms = requested_rooms(&policy, adm.claims.as_ref(), req.uri().query())?;
    let cursor = start_cursor(req, "lastEventId", &rooms);
    let hub = (*svc.hub).clone();
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
        read: None,
        batch: policy.batch_rule(adm.claims.as_ref()),
        // Each event's `id` is the whole cursor: a base64 JSON entry per room, counted with a
        // margin for the room's position and epoch.
        gap: GapFit::Fit {
            extra: 16
                + rooms
                    .iter()
                    .map(|r| (r.len() as u64 + 64) * 4 / 3)
                    .sum::<u64>(),
        },
    };
    let drain = svc.drain.close_signal();
    // Shared by the task and the response body: the drain counts the stream until both are
    // done, so the process cannot exit between the task's end and hyper writing the body's
    // terminating chunk.
    let live = Arc::new(svc.drain.enter());
    let body_live = live.clone();
    let admitted = adm.admitted;
    let expiry = route.close_at_expiry(adm.claims.as_ref());
    let drain_window = route.cfg.drain.window;
    let draining = CloseCause::Draining {
        code: route.cfg.drain.close_code,
        reason: route.cfg.drain.close_reason.clone(),
    };
    let route_name = route.cfg.name.clone();
    let notifier = Notifier::new(svc.hooks, &route_name, &policy, svc.hub.bus());
    let user = adm.claims.as_ref().and_then(|c| c.sub.clone());
    metrics()
        .connections_total
        .with_label_values(&[&route_name, "sse"])
        .inc();
    let feed = Feed {
        live,
        body_tx,
        conn,
        notifier,
        user,
        route_name,
        rooms,
        policy,
        hub,
        joiner,
        cursor,
        outbox,
        expiry,
        drain,
        drain_window,
        draining,
        admitted,
        conn_abort,
    };
    tokio::spawn(feed.run());
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

/// One SSE stream's task: everything it owns, from the opening `joined` events to its end.
struct Feed {
    /// Counted live for the drain until the task and the response body are both done.
    live: Arc<crate::drain::LiveGuard>,
    body_tx: stream_body::Sender,
    conn: String,
    notifier: Notifier,
    user: Option<String>,
    route_name: String,
    rooms: Vec<String>,
    policy: Arc<RoomsPolicy>,
    hub: Arc<super::hub::Hub>,
    joiner: Joiner,
    cursor: super::cursor::Cursor,
    outbox: Arc<Outbox>,
    expiry: Option<tokio::time::Instant>,
    drain: crate::drain::CloseSignal,
    drain_window: Duration,
    draining: CloseCause,
    admitted: Option<crate::admission::Admitted>,
    conn_abort: Option<ConnAbort>,
}

impl Feed {
    /// Join the rooms, then feed the stream until it ends (client gone, slow consumer, token
    /// expiry, drain), leave the rooms and report the end.
    async fn run(self) {
        let Feed {
            live,
            body_tx,
            conn,
            notifier,
            user,
            route_name,
            rooms,
            policy,
            hub,
            joiner,
            mut cursor,
            outbox,
            expiry,
            drain,
            drain_window,
            draining,
            admitted,
            conn_abort,
        } = self;
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
        let connected = notifier.send(Sent::default(), user.as_deref(), || {
            connect_event(&conn, user.as_deref(), &route_name, "sse")
        });
        let mut joined = Vec::new();
        // The joined events go out as one chunk (one chunk always fits an empty queue).
        let mut opening = Vec::new();
        for room in &rooms {
            let key = policy.key(room);
            let since = cursor.get(room);
            // Offline hand-off: the stream is a live connection of its user (user room).
            let user_room = user.as_deref().map(|u| format!("user:{u}"));
            let presence = (user_room.as_deref() == Some(room.as_str()))
                .then(|| super::chat::user_presence(&policy, &conn, user.as_deref()))
                .flatten();
            let this = Joiner {
                presence,
                ..joiner.clone()
            };
            match hub.join(&key, &this, since.as_ref(), None).await {
                Ok(j) => {
                    joined.push(key);
                    start_at(&mut cursor, room, &j);
                    // The id lets EventSource resume even if no message arrives before a drop.
                    let data = protocol::joined(room, j.recovered, &j.position, None, None);
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
        let mut drain_at: Option<tokio::time::Instant> = drain
            .is_closed()
            .then(|| tokio::time::Instant::now() + crate::drain::jitter(drain_window));
        // Registers this task once; after that a wake-up reads the signal's flag, no lock.
        let closed = drain.closed();
        tokio::pin!(closed);
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
                    // Every event carries the whole cursor as its id (up to 256 rooms), so
                    // the encoded events can be many times the bytes the outbox held: they go
                    // out in chunks of at most CHUNK_BYTES (plus one event), each charged to
                    // the stream's bound as it is handed over, never built up all at once.
                    let budget = CHUNK_BYTES.min(policy.cfg.max_queue_bytes as usize);
                    let mut chunk = Vec::new();
                    for item in items {
                        match item {
                            Item::Message(m) => {
                                cursor.set(&m.room, m.seq, &m.epoch);
                                chunk.extend_from_slice(&sse_event(None, Some(&cursor.encode()), &m.json));
                            }
                            // Told before the next message; the id moves past what was lost.
                            Item::Lost(l) => {
                                if l.seq != 0 {
                                    cursor.set(&l.room, l.seq, &l.epoch);
                                }
                                chunk.extend_from_slice(&sse_event(Some("lost"), Some(&cursor.encode()), &l.json));
                            }
                            _ => {}
                        }
                        if chunk.len() >= budget {
                            ended = send(Bytes::from(std::mem::take(&mut chunk)));
                            if ended.is_some() {
                                break;
                            }
                        }
                    }
                    if !chunk.is_empty() && ended.is_none() {
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
                () = closed.as_mut(), if drain_at.is_none() => {
                    // Spread stream ends over the route's drain window, like WebSockets.
                    drain_at = Some(tokio::time::Instant::now() + crate::drain::jitter(drain_window));
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
            .with_label_values(&[&route_name, &*cause.code_label(), cause.label()])
            .inc();
        let disconnected = notifier.send(connected, user.as_deref(), || {
            disconnect_event(&conn, user.as_deref(), &route_name, "sse", &cause)
        });
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
    }
}
