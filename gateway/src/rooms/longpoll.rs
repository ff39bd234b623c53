//! Rooms over long-polling: `GET ?rooms=a,b&cursor=…` waits (at most [`MAX_POLL_WAIT`]) for
//! the messages after the cursor and answers them as one JSON document with the next cursor.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tracing::Instrument;

use super::bus::RoomKey;
use super::conn::{Services, next_conn_id, requested_rooms, start_at, start_cursor};
use super::cursor::Cursor;
use super::hub::{Encoding, GapFit, Hub, Joiner};
use super::outbox::{Item, Outbox};
use super::route::RoomsPolicy;
use crate::admission::Passed;
use crate::auth::token::query_param;
use crate::error::Refusal;
use crate::http::{Body, full};
use crate::metrics::metrics;
use crate::routes::CompiledRoute;

/// Longest a long-poll waits before answering 204.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// How long a poll waits: its `timeout` (a duration or whole seconds; default 25 s, at most
/// [`MAX_POLL_WAIT`]). One that is neither is refused (`1.5` silently waited 25 s).
fn poll_wait(query: Option<&str>) -> Result<Duration, Refusal> {
    let Some(t) = query_param(query, "timeout") else {
        return Ok(Duration::from_secs(25));
    };
    humantime::parse_duration(&t)
        .ok()
        .or_else(|| t.parse::<u64>().ok().map(Duration::from_secs))
        .map(|d| d.min(MAX_POLL_WAIT))
        .ok_or(Refusal::BadRoomsRequest(
            "timeout: a duration (25s, 500ms) or whole seconds",
        ))
}

/// Answer one long-poll: the messages after its cursor, or 204 when none came in time.
pub(crate) async fn long_poll(
    svc: &Services<'_>,
    route: &Arc<CompiledRoute>,
    policy: Arc<RoomsPolicy>,
    adm: Passed,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let rooms = requested_rooms(&policy, adm.claims.as_ref(), req.uri().query())?;
    let wait = poll_wait(req.uri().query())?;
    let mut cursor = start_cursor(req, "cursor", &rooms);
    let conn = next_conn_id();
    let outbox = Outbox::new(policy.cfg.max_queue_bytes);
    let joiner = Joiner {
        conn: conn.clone(),
        outbox: outbox.clone(),
        encoding: Encoding::Json,
        presence: None,
        presence_events: false,
        read: None,
        batch: policy.batch_rule(adm.claims.as_ref()),
        // Each answer holds what the queue took; the next poll goes on from its cursor.
        gap: GapFit::Whole,
    };
    metrics()
        .connections_total
        .with_label_values(&[&route.cfg.name, "long_poll"])
        .inc();
    let mut lost = Vec::new();
    let mut joined = Joined {
        hub: svc.hub.clone(),
        conn: conn.clone(),
        keys: Vec::with_capacity(rooms.len()),
    };
    for room in &rooms {
        let key = policy.key(room);
        let since = cursor.get(room);
        // Held before the join: a client gone during it leaves what the join did.
        joined.keys.push(key.clone());
        match svc.hub.join(&key, &joiner, since.as_ref(), None).await {
            Ok(j) => {
                if since.is_some() && !j.recovered {
                    lost.push(room.clone());
                }
                start_at(&mut cursor, room, &j);
            }
            Err(_) => {
                joined.leave().await;
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
                Item::Message(m) => {
                    cursor.set(&m.room, m.seq, &m.epoch);
                    messages.push(serde_json::from_str(&m.json).unwrap_or(Value::Null));
                }
                Item::Lost(l) => {
                    if l.seq != 0 {
                        cursor.set(&l.room, l.seq, &l.epoch);
                    }
                    messages.push(serde_json::from_str(&l.json).unwrap_or(Value::Null));
                    if !lost.contains(&l.room) {
                        lost.push(l.room);
                    }
                }
                _ => {}
            }
        }
    };
    let ready = outbox.take_now();
    collect(ready, &mut cursor, &mut messages, &mut lost);
    if messages.is_empty() && lost.is_empty() {
        let drain = svc.drain.close_signal();
        tokio::select! {
            items = outbox.take_all() => {
                // Let a burst land in one answer.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let more = outbox.take_now();
                collect(items, &mut cursor, &mut messages, &mut lost);
                collect(more, &mut cursor, &mut messages, &mut lost);
            }
            _ = tokio::time::sleep(wait) => {}
            _ = drain.closed() => {}
        }
    }
    outbox.close();
    joined.leave().await;
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

/// The rooms a long-poll joined, left however the poll ends: with its answer, or when its
/// client goes away while it waits (hyper then drops the poll at an await, and the rooms would
/// keep a member nobody reads, with their subscriptions).
struct Joined {
    hub: Arc<Hub>,
    conn: String,
    keys: Vec<RoomKey>,
}

impl Joined {
    /// Leave the rooms one by one, each kept until it has been left: a poll dropped in the
    /// middle leaves the rest from its drop (leaving twice does nothing).
    async fn leave(&mut self) {
        while let Some(key) = self.keys.last() {
            self.hub.leave(key, &self.conn).await;
            self.keys.pop();
        }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        // No await in a drop: the rooms are left by a task of their own, at once.
        let (hub, conn) = (self.hub.clone(), std::mem::take(&mut self.conn));
        let keys = std::mem::take(&mut self.keys);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let span = tracing::debug_span!("rooms.long_poll_left", rooms = keys.len());
            runtime.spawn(
                async move {
                    for key in keys {
                        hub.leave(&key, &conn).await;
                    }
                }
                .instrument(span),
            );
        }
    }
}

#[cfg(test)]
mod tests;
