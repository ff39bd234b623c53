//! What every rooms transport (WebSocket, SSE, long-poll) starts from: the narrow set of
//! gateway services rooms mode uses, the connection id, the rooms a request names and where
//! its cursor starts, and the `connect` / `disconnect` notifications.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Request;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::cursor::{Cursor, rooms_param};
use super::hooks::Hooks;
use super::hub::{Hub, Joined};
use super::route::RoomsPolicy;
use super::session;
use crate::auth::jwt::Claims;
use crate::auth::token::query_param;
use crate::drain::Drain;
use crate::error::{CloseCause, Refusal};
use crate::http::unix_now;

/// What rooms mode uses of the gateway.
#[derive(Clone)]
pub struct Services<'a> {
    /// This pod's hub over the configured bus.
    pub hub: &'a Arc<Hub>,
    /// Live connections enter the drain and close on its signal.
    pub drain: &'a Arc<Drain>,
    /// The publish hook and the notification client.
    pub hooks: &'a Hooks,
    /// What serves an upgraded WebSocket when it is not the room protocol or raw relay (a
    /// Yjs document session); chosen by the dispatcher, so rooms never imports that mode.
    pub session: Option<SessionRunner>,
}

/// Runs one upgraded WebSocket to its end, returning why it closed.
pub type SessionRunner = std::sync::Arc<
    dyn Fn(
            hyper::upgrade::Upgraded,
            super::session::SessionCtx,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::error::CloseCause> + Send>>
        + Send
        + Sync,
>;

/// A pod-unique connection id.
pub fn next_conn_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| format!("{:08x}", rand::random::<u32>()));
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The `connect` notification of a rooms WebSocket or SSE stream (docs/protocol.md).
pub(crate) fn connect_event(conn: &str, user: Option<&str>, route: &str, transport: &str) -> Value {
    json!({"event": "connect", "conn": conn, "user": user, "route": route,
           "transport": transport, "ts": unix_now()})
}

/// The `disconnect` notification: `code` is the close code of the cause (for an SSE stream,
/// the code a WebSocket would have been closed with; 1006 when the client went away).
pub(crate) fn disconnect_event(
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
pub(crate) fn requested_rooms(
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
pub(crate) fn start_cursor(req: &Request<Incoming>, param: &str, rooms: &[String]) -> Cursor {
    req.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(req.uri().query(), param))
        .and_then(|c| Cursor::decode(&c, rooms).ok())
        .unwrap_or_default()
}

/// Where a joined room's cursor entry starts: where the member's stream starts (its own
/// position while its gap is replayed, just before what a new epoch retains; each replayed
/// message then raises it), else the room's current position. Set, not merged: a `since` from
/// another epoch or ahead of the room must not survive.
pub(crate) fn start_at(cursor: &mut Cursor, room: &str, j: &Joined) {
    cursor
        .positions
        .insert(room.to_string(), (j.start.seq, j.start.epoch.clone()));
}
