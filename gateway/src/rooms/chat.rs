//! The room protocol's chat features as a connection uses them: `read` (read receipts) and the
//! read state a `joined` reply reports. Kept out of the session so the transport stays small;
//! the services themselves are [`super::receipts`], [`super::batch`] and [`super::offline`].

use std::sync::Arc;

use serde_json::Value;

use super::bus::{Member, Position};
use super::hooks::Hooks;
use super::hub::Hub;
use super::offline::{self, Missed};
use super::protocol::{self, ErrorCode, ReadState};
use super::route::RoomsPolicy;
use crate::auth::jwt::Claims;

/// What a connection is: its pod's hub, its route's policy, its token's claims.
pub type Conn<'a> = (&'a Arc<Hub>, &'a RoomsPolicy, Option<&'a Claims>);

/// The read state `joined` reports in `room`: `None` where the route keeps no receipts or the
/// token has no `sub` (or the store cannot be read now: the join goes ahead without it).
pub async fn read_state(
    hub: &Arc<Hub>,
    policy: &RoomsPolicy,
    claims: Option<&Claims>,
    room: &str,
) -> Option<ReadState> {
    policy.receipts_in(room, claims)?;
    let user = claims?.sub.as_deref().filter(|s| !s.is_empty())?;
    let receipts = hub.receipts();
    // This pod delivers receipts from now on (with NATS: it listens to every pod's reads).
    receipts.start().await;
    match receipts.state(&policy.key(room), user).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(room, error = %e, "cannot read the read position; joined without it");
            None
        }
    }
}

/// Handle `read` from connection `conn`: the reply to send (`ack` with the stored read
/// position, or `error`).
pub async fn read(
    (hub, policy, claims): Conn<'_>,
    conn: &str,
    joined: bool,
    room: &str,
    position: &Position,
    id: Option<&str>,
) -> String {
    let Some(interval) = policy.receipts_in(room, claims) else {
        return protocol::error(
            id,
            ErrorCode::BadRequest,
            "read receipts are off for this room",
        );
    };
    let Some(user) = claims
        .and_then(|c| c.sub.as_deref())
        .filter(|s| !s.is_empty())
    else {
        return protocol::error(
            id,
            ErrorCode::Forbidden,
            "read receipts need a token with a sub",
        );
    };
    if !joined {
        return protocol::error(id, ErrorCode::NotJoined, "join the room first");
    }
    // Only a position the room has had: its epoch, at most its newest message. The position
    // is stored, listed by the publish API and sent to every member in a receipt: any text as
    // an epoch let a member without the right to publish send it to all of them, and made
    // each stored read as large as a message.
    let key = policy.key(room);
    // What this pod gave the member answers most reads without I/O; the bus's position the
    // rest (the member's own publish it was not sent, a message it read elsewhere).
    let given = hub.given(&key, conn).await;
    let within = |head: &Position| head.epoch == position.epoch && position.seq <= head.seq;
    let head = match given {
        Some(g) if within(&g) => Ok(g),
        _ => hub.bus().position(&key).await,
    };
    match head {
        Ok(head) if within(&head) => {}
        Ok(_) => {
            crate::metrics::metrics()
                .room_reads
                .with_label_values(&["refused"])
                .inc();
            return protocol::error(
                id,
                ErrorCode::BadRequest,
                "not a position of this room: use the seq and epoch of a message or of joined",
            );
        }
        Err(e) => return protocol::error(id, ErrorCode::Unavailable, &e.to_string()),
    }
    match hub.receipts().read(&key, user, position, interval).await {
        Ok(stored) => protocol::ack(id, Some(&stored)),
        Err(e) => {
            crate::metrics::metrics()
                .room_reads
                .with_label_values(&["error"])
                .inc();
            protocol::error(id, ErrorCode::Unavailable, &e.to_string())
        }
    }
}

/// The presence a connection announces in its user room so offline hand-off can tell it is
/// live (routes with `rooms.offline`, tokens with a `sub`).
pub fn user_presence(policy: &RoomsPolicy, conn: &str, user: Option<&str>) -> Option<Member> {
    policy.cfg.offline.as_ref()?;
    let user = user.filter(|s| !s.is_empty())?;
    Some(Member {
        conn: conn.to_string(),
        user: Some(user.to_string()),
        info: Value::Null,
    })
}

/// A client's stored publish into a user room: if that user has no live connection anywhere,
/// send the route's offline notification. In the background: the `ack` does not wait.
pub fn hand_off_later(
    (hub, policy, hooks, route): (&Arc<Hub>, &RoomsPolicy, &Hooks, &str),
    missed: Missed,
) {
    let Some(cfg) = policy.cfg.offline.clone() else {
        return;
    };
    let (bus, hooks, route) = (hub.bus().clone(), hooks.clone(), route.to_string());
    tokio::spawn(async move {
        match offline::online(bus.as_ref(), &missed.namespace, &missed.user).await {
            Ok(true) => {}
            Ok(false) => offline::notify(&hooks, &bus, &cfg, missed),
            Err(e) => {
                tracing::warn!(route, error = %e, "cannot tell whether the user is online; no offline notification")
            }
        }
    });
}
