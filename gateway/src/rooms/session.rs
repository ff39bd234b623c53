//! A rooms-mode WebSocket connection: the JSON (or binary) room protocol or a raw relay room,
//! on the engine's connection core ([`crate::engine::session`]): one task reads the client's
//! messages in order and writes the connection's outbox in batches.

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::bus::{BusError, Member, Payload, Publish};
use super::hooks::{Hooks, Verdict};
use super::hub::{Encoding, GapFit, Hub, Joiner};
use super::outbox::{Item, Outbox};
use super::protocol::{self, ClientMsg, ErrorCode};
use super::route::{ConnSettings, RoomsPolicy};
use crate::auth::jwt::Claims;
use crate::drain::CloseSignal;
use crate::engine::bucket::TokenBucket;
use crate::engine::conn::{Conn, Frame, Message};
use crate::engine::deflate::Deflate;
use crate::engine::session::{self as engine_session, CLOSE_WAIT, Handler, Lifecycle};
use crate::error::CloseCause;

/// Most rooms one connection may be in at once.
pub const MAX_ROOMS_PER_CONNECTION: usize = 256;

/// Everything a session needs, fixed at admission: the route's shared parts (its policy with
/// the connection settings, [`RoomsPolicy::conn`]) by reference, and only what differs per
/// connection by value.
pub struct SessionCtx {
    pub hub: Arc<Hub>,
    pub policy: Arc<RoomsPolicy>,
    pub hooks: Hooks,
    /// Shared with the connection's task (its log line and notifications).
    pub conn_id: Arc<str>,
    /// The verified token's claims as [`RoomsPolicy::session_claims`] trimmed them (`sub`, `exp`
    /// and the claims the route's room patterns name); shared with the connection's task.
    pub claims: Option<Arc<Claims>>,
    pub expires_at: Option<Instant>,
    pub drain: CloseSignal,
    /// Raw relay rooms: the room from the path.
    pub raw_room: Option<String>,
    /// The binary encoding (`switchboard.v1.proto`) was negotiated.
    pub proto: bool,
    /// permessage-deflate was negotiated (the route's `compression`).
    pub deflate: Option<Deflate>,
}

impl SessionCtx {
    /// The connection core over the upgraded socket, with this session's limits.
    pub fn conn<S: AsyncRead + AsyncWrite + Unpin>(&self, io: S) -> Conn<S> {
        Conn::new(io, self.policy.conn.limits.max_message_bytes, self.deflate)
            .limit_rate(self.bucket())
    }

    /// Keep-alive, expiry and drain settings for the engine (`route`: this session's
    /// [`RoomsPolicy::conn`], held by the caller).
    pub fn lifecycle<'a>(&self, route: &'a ConnSettings) -> Lifecycle<'a> {
        Lifecycle {
            ping_interval: route.keepalive.interval,
            pong_timeout: route.keepalive.timeout,
            expires_at: self.expires_at,
            drain: self.drain.clone(),
            drain_close: &route.drain_close,
            drain_window: route.drain_window,
        }
    }

    /// The route's message rate limit.
    pub fn bucket(&self) -> TokenBucket {
        let limits = &self.policy.conn.limits;
        TokenBucket::new(
            limits.messages_per_second,
            limits.message_burst,
            std::time::Instant::now(),
        )
    }

    /// The route's name.
    pub fn route(&self) -> &str {
        &self.policy.conn.route
    }
}

/// The identity shown to other members (`from`): the token's `sub`.
fn publisher(claims: Option<&Claims>) -> Option<Value> {
    claims
        .and_then(|c| c.sub.as_ref())
        .map(|s| json!({ "sub": s }))
}

/// Run a rooms WebSocket until it closes; returns why it ended.
pub fn run(io: Upgraded, ctx: SessionCtx) -> impl Future<Output = CloseCause> {
    let conn = ctx.conn(TokioIo::new(io));
    run_on(conn, ctx)
}

/// Run a rooms session on any byte stream (the 101 already sent).
///
/// Not an `async fn`: the session is built first and moved into the future once, so the
/// connection's task does not also keep the moved-from arguments.
pub fn run_on<S: AsyncRead + AsyncWrite + Unpin>(
    conn: Conn<S>,
    ctx: SessionCtx,
) -> impl Future<Output = CloseCause> {
    let outbox = Outbox::new(ctx.policy.cfg.max_queue_bytes);
    let session = Session {
        ctx,
        outbox,
        rooms: Joined::default(),
    };
    serve(conn, session)
}

/// Not an `async fn` either: its arguments would be moved into the future's locals and kept
/// twice; the block uses what it captures in place.
fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    conn: Conn<S>,
    session: Session,
) -> impl Future<Output = CloseCause> {
    let (mut conn, mut session) = (conn, session);
    async move {
        let policy = session.ctx.policy.clone();
        let mut life = session.ctx.lifecycle(&policy.conn);
        // Joining and leaving are boxed: their futures exist while they run, not for the whole
        // life of the connection's task.
        // `if let … else`: the join's result is dropped before the `else` (edition 2024), so
        // the task does not keep it while the session runs.
        let cause = if let Err(cause) = Box::pin(session.join_automatic()).await {
            conn.close_with(&cause);
            let _ = Box::pin(tokio::time::timeout(CLOSE_WAIT, conn.flush())).await;
            cause
        } else {
            engine_session::run(&mut conn, &mut life, &mut session).await
        };
        Box::pin(session.leave_all()).await;
        session.outbox.close();
        cause
    }
}

/// A text frame of this connection's own (no sharing).
fn own_text(text: String, deflate: Option<&Deflate>) -> Frame {
    Frame::message(true, Bytes::from(text), deflate)
}

/// The frame of a queued item. Room messages come with their frames built once per pod
/// (`Message`, `Shared`); this connection's own replies are encoded here (on the binary
/// encoding, translated to protobuf).
fn to_frame(item: Item, proto: bool, deflate: Option<&Deflate>) -> Frame {
    match item {
        Item::Message(m) => m.frames.frame(deflate),
        Item::Shared(s) => s.frame(deflate),
        Item::RawText(t) => Frame::message(true, Bytes::copy_from_slice(t.as_bytes()), deflate),
        Item::RawBinary(b) => Frame::message(false, b, deflate),
        Item::Reply(r) if proto => transcoded(r, deflate),
        Item::Lost(l) if proto => transcoded(l.json, deflate),
        Item::Reply(r) => own_text(r, deflate),
        Item::Lost(l) => own_text(l.json, deflate),
    }
}

/// A reply of this connection's own on the binary encoding: translated to protobuf.
fn transcoded(r: String, deflate: Option<&Deflate>) -> Frame {
    match super::proto::transcode(&r) {
        Some(b) => Frame::message(false, b, deflate),
        None => {
            // Every reply protocol.rs builds has a binary form (unit-tested).
            tracing::error!(reply = %r, "reply without a binary form");
            own_text(r, deflate)
        }
    }
}

impl Handler for Session {
    type Queue = Outbox;

    fn queue(&self) -> &Outbox {
        &self.outbox
    }

    fn frames(
        &mut self,
        mut items: Vec<Item>,
        deflate: Option<&Deflate>,
        out: &mut Vec<Frame>,
    ) -> Option<CloseCause> {
        // A raw member cannot be told in-band that messages were lost: what came before is
        // written, then it is closed (4009) to resync on reconnect.
        let lost_at = self
            .ctx
            .policy
            .is_raw()
            .then(|| items.iter().position(|i| matches!(i, Item::Lost(_))))
            .flatten();
        if let Some(at) = lost_at {
            items.truncate(at);
        }
        let proto = self.ctx.proto;
        out.extend(items.into_iter().map(|i| to_frame(i, proto, deflate)));
        lost_at.map(|_| CloseCause::MessagesLost)
    }

    async fn message(&mut self, msg: Message) -> Option<CloseCause> {
        // The rate limit is the connection's (`SessionCtx::conn`).
        self.handle(msg).await
    }

    fn draining(&mut self) {
        if !self.ctx.policy.is_raw() {
            // A reconnect hint spread over a few seconds so clients do not stampede.
            let hint = rand::rng().random_range(500..5000u64);
            self.reply(protocol::shutdown(hint));
        }
    }
}

/// The rooms a connection is in (at most [`MAX_ROOMS_PER_CONNECTION`]), in a list sized to
/// what it holds: most connections are in one room or a few, where a hash set costs about a
/// hundred bytes more.
#[derive(Default)]
struct Joined(Vec<String>);

impl Joined {
    fn contains(&self, room: &str) -> bool {
        self.0.iter().any(|r| r == room)
    }

    fn insert(&mut self, room: String) {
        if !self.contains(&room) {
            self.0.reserve_exact(1);
            self.0.push(room);
        }
    }

    fn remove(&mut self, room: &str) -> bool {
        match self.0.iter().position(|r| r == room) {
            Some(i) => {
                self.0.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.0)
    }
}

struct Session {
    ctx: SessionCtx,
    outbox: Arc<Outbox>,
    rooms: Joined,
}

impl Session {
    fn joiner(&self) -> Joiner {
        let p = &self.ctx.policy.cfg;
        Joiner {
            conn: self.ctx.conn_id.to_string(),
            outbox: self.outbox.clone(),
            encoding: if self.ctx.policy.is_raw() {
                Encoding::Raw { echo: p.echo }
            } else if self.ctx.proto {
                Encoding::Proto
            } else {
                Encoding::Json
            },
            presence: p.presence.then(|| Member {
                conn: self.ctx.conn_id.to_string(),
                user: self.ctx.claims.as_deref().and_then(|c| c.sub.clone()),
                info: Value::Null,
            }),
            presence_events: p.presence && !self.ctx.policy.is_raw(),
            read: None,
            batch: self.ctx.policy.batch_rule(self.ctx.claims.as_deref()),
            gap: GapFit::Fit { extra: 0 },
        }
    }

    /// The joiner for `room`, with the read state `joined` reports where receipts are on.
    async fn joiner_for(&self, room: &str) -> Joiner {
        let mut j = self.joiner();
        let ctx = &self.ctx;
        j.read = super::chat::read_state(&ctx.hub, &ctx.policy, ctx.claims.as_deref(), room).await;
        j
    }

    /// Queue a reply; called only from the connection's own task (its loop takes the queue
    /// once the handler returns).
    fn reply(&self, text: String) {
        self.outbox.push_own(Item::Reply(text));
    }

    /// Join the automatic room: the raw room of the path, or the connection's own user room.
    async fn join_automatic(&mut self) -> Result<(), CloseCause> {
        let auto = match &self.ctx.raw_room {
            Some(r) => Some(r.clone()),
            None => self.ctx.policy.user_room(self.ctx.claims.as_deref()),
        };
        if let Some(room) = auto {
            let key = self.ctx.policy.key(&room);
            let reply = (!self.ctx.policy.is_raw()).then_some(None);
            let mut joiner = self.joiner_for(&room).await;
            if self.ctx.raw_room.is_none() && joiner.presence.is_none() {
                // Offline hand-off: the user's live connections are its user room's presence.
                joiner.presence = super::chat::user_presence(
                    &self.ctx.policy,
                    &self.ctx.conn_id,
                    self.ctx.claims.as_deref().and_then(|c| c.sub.as_deref()),
                );
            }
            if let Err(e) = self.ctx.hub.join(&key, &joiner, None, reply).await {
                tracing::warn!(room, error = %e, "automatic join failed");
                return Err(CloseCause::BusUnavailable);
            }
            self.rooms.insert(room);
        }
        Ok(())
    }

    /// Handle one data message; `Some(cause)` when the connection is being closed.
    async fn handle(&mut self, msg: Message) -> Option<CloseCause> {
        if self.ctx.policy.is_raw() {
            let data = match msg {
                Message::Text(t) => Payload::Text(t),
                Message::Binary(b) => Payload::Binary(b),
                _ => return None,
            };
            let room = self.ctx.raw_room.clone().unwrap_or_default();
            if !self
                .ctx
                .policy
                .may_publish(&room, self.ctx.claims.as_deref())
            {
                return Some(CloseCause::PublishForbidden);
            }
            let p = Publish {
                key: self.ctx.policy.key(&room),
                from: publisher(self.ctx.claims.as_deref()),
                data,
                ephemeral: self.ctx.policy.cfg.history.is_none(),
                origin_conn: Some(self.ctx.conn_id.to_string()),
            };
            match self.ctx.hub.publish(p, "raw").await {
                Ok(_) => {}
                Err(BusError::TooLarge { .. }) => return Some(CloseCause::BusMessageTooBig),
                Err(_) => return Some(CloseCause::BusUnavailable),
            }
            return None;
        }
        let decoded = match (msg, self.ctx.proto) {
            (Message::Text(text), false) => protocol::parse(&text)
                .map_err(|reason| (protocol::loose_id(&text), reason)),
            (Message::Binary(frame), true) => super::proto::decode_client(&frame),
            (_, false) => Err((
                None,
                protocol::BadMessage(
                    "binary frames are not part of switchboard.v1; use b64 (or switchboard.v1.proto)"
                        .into(),
                ),
            )),
            (_, true) => Err((
                None,
                protocol::BadMessage(
                    "text frames are not part of switchboard.v1.proto; send ClientMessage frames"
                        .into(),
                ),
            )),
        };
        let parsed = match decoded {
            Ok(m) => m,
            Err((id, reason)) => {
                self.reply(protocol::error(
                    id.as_deref(),
                    ErrorCode::BadRequest,
                    &reason.0,
                ));
                return None;
            }
        };
        let claims = self.ctx.claims.as_deref();
        match parsed {
            ClientMsg::Ping { id } => self.reply(protocol::pong(id.as_deref())),
            ClientMsg::Read { room, position, id } => {
                let joined = self.rooms.contains(&room);
                let ctx = &self.ctx;
                let reply = super::chat::read(
                    (&ctx.hub, &ctx.policy, ctx.claims.as_deref()),
                    &ctx.conn_id,
                    joined,
                    &room,
                    &position,
                    id.as_deref(),
                );
                self.reply(reply.await);
            }
            ClientMsg::Join { room, since, id } => {
                if !self.ctx.policy.may_join(&room, claims) {
                    self.reply(protocol::error(
                        id.as_deref(),
                        ErrorCode::Forbidden,
                        "not allowed to join this room",
                    ));
                } else if self.rooms.len() >= MAX_ROOMS_PER_CONNECTION
                    && !self.rooms.contains(&room)
                {
                    self.reply(protocol::error(
                        id.as_deref(),
                        ErrorCode::Forbidden,
                        "too many rooms on this connection",
                    ));
                } else {
                    let key = self.ctx.policy.key(&room);
                    if self.rooms.contains(&room) {
                        self.ctx.hub.leave(&key, &self.ctx.conn_id).await;
                    }
                    let joiner = self.joiner_for(&room).await;
                    match self
                        .ctx
                        .hub
                        .join(&key, &joiner, since.as_ref(), Some(id.as_deref()))
                        .await
                    {
                        Ok(_) => {
                            self.rooms.insert(room);
                        }
                        Err(e) => self.reply(protocol::error(
                            id.as_deref(),
                            ErrorCode::Unavailable,
                            &e.to_string(),
                        )),
                    }
                }
            }
            ClientMsg::Leave { room, id } => {
                if self.rooms.remove(&room) {
                    self.ctx
                        .hub
                        .leave(&self.ctx.policy.key(&room), &self.ctx.conn_id)
                        .await;
                    self.reply(protocol::left(&room, id.as_deref()));
                } else {
                    self.reply(protocol::error(
                        id.as_deref(),
                        ErrorCode::NotJoined,
                        "not in this room",
                    ));
                }
            }
            ClientMsg::Presence { room, id } => {
                if !self.ctx.policy.cfg.presence {
                    self.reply(protocol::error(
                        id.as_deref(),
                        ErrorCode::BadRequest,
                        "presence is off for this route",
                    ));
                } else if !self.rooms.contains(&room) {
                    self.reply(protocol::error(
                        id.as_deref(),
                        ErrorCode::NotJoined,
                        "join the room first",
                    ));
                } else {
                    match self
                        .ctx
                        .hub
                        .bus()
                        .presence_list(&self.ctx.policy.key(&room))
                        .await
                    {
                        Ok(members) => {
                            self.reply(protocol::presence_snapshot(&room, &members, id.as_deref()))
                        }
                        Err(e) => self.reply(protocol::error(
                            id.as_deref(),
                            ErrorCode::Unavailable,
                            &e.to_string(),
                        )),
                    }
                }
            }
            ClientMsg::Publish {
                room,
                data,
                b64,
                bin,
                id,
                ephemeral,
            } => {
                let payload = match bin {
                    Some(b) => Ok(Payload::Binary(b)),
                    None => protocol::payload(data, b64),
                };
                self.publish(room, payload, id, ephemeral).await;
            }
        }
        None
    }

    async fn publish(
        &mut self,
        room: String,
        payload: Result<Payload, String>,
        id: Option<String>,
        ephemeral: bool,
    ) {
        let claims = self.ctx.claims.as_deref();
        if !self.ctx.policy.may_publish(&room, claims) {
            self.reply(protocol::error(
                id.as_deref(),
                ErrorCode::Forbidden,
                "not allowed to publish to this room",
            ));
            return;
        }
        let mut payload = match payload {
            Ok(p) => p,
            Err(reason) => {
                self.reply(protocol::error(
                    id.as_deref(),
                    ErrorCode::BadRequest,
                    &reason,
                ));
                return;
            }
        };
        let from = publisher(claims);
        if let Some(hook) = &self.ctx.policy.cfg.publish_hook {
            let user = claims.and_then(|c| c.sub.as_deref());
            match self
                .ctx
                .hooks
                .publish(hook, self.ctx.route(), &room, from.as_ref(), user, &payload)
                .await
            {
                Verdict::Accept => {}
                Verdict::Replace(p) => payload = p,
                Verdict::Refuse(reason) => {
                    self.reply(protocol::error(id.as_deref(), ErrorCode::Rejected, &reason));
                    return;
                }
            }
        }
        let ephemeral = ephemeral || self.ctx.policy.cfg.history.is_none();
        // Offline hand-off needs the payload after the publish (user rooms only).
        let handoff = (!ephemeral)
            .then(|| self.ctx.policy.offline_user(&room))
            .flatten()
            .map(|user| (user, room.clone(), from.clone(), payload.clone()));
        let p = Publish {
            key: self.ctx.policy.key(&room),
            from,
            data: payload,
            ephemeral,
            origin_conn: Some(self.ctx.conn_id.to_string()),
        };
        let result = self.ctx.hub.publish(p, "ws").await;
        let label = if result.is_ok() { "ok" } else { "error" };
        crate::metrics::metrics()
            .room_publishes
            .with_label_values(&[label])
            .inc();
        if let (Ok(Some(pos)), Some((user, room, from, payload))) = (&result, handoff) {
            let ctx = &self.ctx;
            super::chat::hand_off_later(
                (&ctx.hub, &ctx.policy, &ctx.hooks, ctx.route()),
                super::offline::Missed {
                    route: ctx.route().to_string(),
                    namespace: ctx.policy.namespace.clone(),
                    room,
                    user,
                    position: pos.clone(),
                    from,
                    payload,
                },
            );
        }
        match result {
            Ok(pos) => self.reply(protocol::ack(id.as_deref(), pos.as_ref())),
            Err(e @ BusError::TooLarge { .. }) => self.reply(protocol::error(
                id.as_deref(),
                ErrorCode::TooLarge,
                &e.to_string(),
            )),
            Err(e) => self.reply(protocol::error(
                id.as_deref(),
                ErrorCode::Unavailable,
                &e.to_string(),
            )),
        }
    }

    async fn leave_all(&mut self) {
        for room in self.rooms.take() {
            self.ctx
                .hub
                .leave(&self.ctx.policy.key(&room), &self.ctx.conn_id)
                .await;
        }
    }
}
