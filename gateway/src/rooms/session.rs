//! A rooms-mode WebSocket connection: the JSON room protocol or a raw relay room. The gateway
//! terminates the WebSocket (tungstenite with explicit memory limits); one reader handles the
//! client's messages in order, one writer drains the connection's outbox in batches.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::{Value, json};
use switchboard_config::{Keepalive, RouteLimits};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::bus::{Member, Payload, Publish};
use super::hooks::{Hooks, Verdict};
use super::hub::{Encoding, Hub, Joiner};
use super::outbox::{Item, Outbox};
use super::protocol::{self, ClientMsg, ErrorCode};
use super::route::RoomsPolicy;
use crate::auth::jwt::Claims;
use crate::error::CloseCause;
use crate::tunnel::bucket::TokenBucket;

/// Most rooms one connection may be in at once.
pub const MAX_ROOMS_PER_CONNECTION: usize = 256;

/// Everything a session needs, fixed at admission.
pub struct SessionCtx {
    pub hub: Arc<Hub>,
    pub policy: Arc<RoomsPolicy>,
    pub hooks: Hooks,
    pub route: String,
    pub conn_id: String,
    pub claims: Option<Claims>,
    pub limits: RouteLimits,
    pub keepalive: Keepalive,
    pub expires_at: Option<Instant>,
    pub drain: watch::Receiver<bool>,
    pub drain_code: u16,
    pub drain_reason: String,
    pub drain_window: Duration,
    /// Raw relay rooms: the room from the path.
    pub raw_room: Option<String>,
    /// The binary encoding (`switchboard.v1.proto`) was negotiated.
    pub proto: bool,
}

/// tungstenite limits: small buffers for idle connections, bounded writes, the route's
/// message cap.
pub fn ws_config(max_message: u64) -> WebSocketConfig {
    let max = usize::try_from(max_message).unwrap_or(usize::MAX);
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(max.saturating_add(64 * 1024).max(1 << 20))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

enum Ctl {
    Close(CloseCause),
    Ping,
}

fn close_frame(cause: &CloseCause) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(cause.code()),
        reason: cause.reason().to_string().into(),
    }
}

/// The identity shown to other members (`from`): the token's `sub`.
fn publisher(claims: Option<&Claims>) -> Option<Value> {
    claims
        .and_then(|c| c.sub.as_ref())
        .map(|s| json!({ "sub": s }))
}

/// Run a rooms WebSocket until it closes; returns why it ended.
pub async fn run(io: Upgraded, ctx: SessionCtx) -> CloseCause {
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(io),
        Role::Server,
        Some(ws_config(ctx.limits.max_message_bytes)),
    )
    .await;
    let (mut sink, mut stream) = ws.split();
    let outbox = Outbox::new(ctx.policy.cfg.max_queue_bytes);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Ctl>(4);

    // Writer: batches of queued items, one flush per batch; closes on request or overflow.
    let writer_outbox = outbox.clone();
    let raw = ctx.policy.is_raw();
    let proto = ctx.proto;
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                ctl = ctl_rx.recv() => match ctl {
                    Some(Ctl::Ping) => {
                        if sink.send(Message::Ping(Vec::from(&b"sb"[..]).into())).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ctl::Close(cause)) => {
                        // Bounded: a peer that stopped reading must not keep the session alive.
                        let _ = tokio::time::timeout(CLOSE_WAIT, async {
                            for item in drain_now(&writer_outbox) {
                                let _ = sink.feed(to_message(item, proto)).await;
                            }
                            let _ = sink.send(Message::Close(Some(close_frame(&cause)))).await;
                        })
                        .await;
                        return Some(cause);
                    }
                    None => return None,
                },
                items = writer_outbox.take_all() => {
                    if items.is_empty() {
                        if writer_outbox.is_overflowed() {
                            return Some(close_slow_consumer(&mut sink).await);
                        }
                        return None;
                    }
                    // A raw member cannot be told in-band that messages were lost: what came
                    // before is written, then it is closed (4009) to resync on reconnect.
                    let mut items = items;
                    let lost_at = raw
                        .then(|| items.iter().position(|i| matches!(i, Item::Lost { .. })))
                        .flatten();
                    if let Some(at) = lost_at {
                        items.truncate(at);
                    }
                    tokio::select! {
                        written = async {
                            for item in items {
                                sink.feed(to_message(item, proto)).await?;
                            }
                            sink.flush().await
                        } => if written.is_err() {
                            return None;
                        },
                        // A peer that stops reading blocks this write while its queue
                        // overflows: close it now rather than when (if ever) it reads again.
                        _ = writer_outbox.overflowed() => {
                            return Some(close_slow_consumer(&mut sink).await);
                        }
                    }
                    if lost_at.is_some() {
                        let cause = CloseCause::MessagesLost;
                        let close = Message::Close(Some(close_frame(&cause)));
                        let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(close)).await;
                        return Some(cause);
                    }
                }
            }
        }
    });

    let mut session = Session {
        ctx,
        outbox: outbox.clone(),
        rooms: HashSet::new(),
        ctl: ctl_tx,
    };
    let cause = session.read_loop(&mut stream).await;
    session.leave_all().await;
    outbox.close();
    let written = writer.await.ok().flatten();
    written.unwrap_or(cause)
}

/// How long a closing connection gets: for its Close frame to be written, and for the peer's
/// Close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long the Close of a slow consumer may take to be written before the socket is dropped.
const SLOW_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Say 4008 if the socket takes it within [`SLOW_CLOSE_WAIT`]; the caller then drops it.
async fn close_slow_consumer<S>(sink: &mut S) -> CloseCause
where
    S: futures_util::Sink<Message> + Unpin,
{
    let cause = CloseCause::SlowConsumer;
    let close = Message::Close(Some(close_frame(&cause)));
    let _ = tokio::time::timeout(SLOW_CLOSE_WAIT, sink.send(close)).await;
    cause
}

fn drain_now(outbox: &Outbox) -> Vec<Item> {
    // Whatever is queued right now, without waiting.
    futures_util::FutureExt::now_or_never(outbox.take_all()).unwrap_or_default()
}

/// The frame of a queued item. On the binary encoding room messages and presence events come
/// encoded (`RawBinary`, once per pod); this connection's own replies are translated here.
fn to_message(item: Item, proto: bool) -> Message {
    match item {
        Item::Message { json, .. } => Message::text(json.to_string()),
        Item::RawText(t) => Message::text(t.to_string()),
        Item::RawBinary(b) => Message::binary(b),
        Item::Reply(r) | Item::Lost { json: r, .. } if proto => {
            match super::proto::transcode(&r) {
                Some(b) => Message::binary(b),
                None => {
                    // Every reply protocol.rs builds has a binary form (unit-tested).
                    tracing::error!(reply = %r, "reply without a binary form");
                    Message::text(r)
                }
            }
        }
        Item::Reply(r) | Item::Lost { json: r, .. } => Message::text(r),
    }
}

struct Session {
    ctx: SessionCtx,
    outbox: Arc<Outbox>,
    rooms: HashSet<String>,
    ctl: mpsc::Sender<Ctl>,
}

impl Session {
    fn joiner(&self) -> Joiner {
        let p = &self.ctx.policy.cfg;
        Joiner {
            conn: self.ctx.conn_id.clone(),
            outbox: self.outbox.clone(),
            encoding: if self.ctx.policy.is_raw() {
                Encoding::Raw { echo: p.echo }
            } else if self.ctx.proto {
                Encoding::Proto
            } else {
                Encoding::Json
            },
            presence: p.presence.then(|| Member {
                conn: self.ctx.conn_id.clone(),
                user: self.ctx.claims.as_ref().and_then(|c| c.sub.clone()),
                info: Value::Null,
            }),
            presence_events: p.presence && !self.ctx.policy.is_raw(),
            read: None,
            batch: self.ctx.policy.batch_rule(self.ctx.claims.as_ref()),
        }
    }

    /// The joiner for `room`, with the read state `joined` reports where receipts are on.
    async fn joiner_for(&self, room: &str) -> Joiner {
        let mut j = self.joiner();
        let ctx = &self.ctx;
        j.read = super::chat::read_state(&ctx.hub, &ctx.policy, ctx.claims.as_ref(), room).await;
        j
    }

    fn reply(&self, text: String) {
        self.outbox.push(Item::Reply(text));
    }

    async fn close(&self, cause: CloseCause) -> CloseCause {
        let _ = self.ctl.send(Ctl::Close(cause.clone())).await;
        cause
    }

    async fn read_loop<S>(&mut self, stream: &mut S) -> CloseCause
    where
        S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let mut bucket = TokenBucket::new(
            self.ctx.limits.messages_per_second,
            self.ctx.limits.message_burst,
            std::time::Instant::now(),
        );
        let ka = self.ctx.keepalive.clone();
        let mut ping_at = if ka.interval.is_zero() {
            far
        } else {
            Instant::now() + ka.interval
        };
        let mut pong_deadline = far;
        let expiry = self.ctx.expires_at.unwrap_or(far);
        let mut drain_at = if *self.ctx.drain.borrow() {
            Instant::now()
        } else {
            far
        };
        let mut drain_seen = drain_at != far;
        let mut closing: Option<(CloseCause, Instant)> = None;

        // Automatic rooms: the raw room of the path, or the connection's own user room.
        let auto = match &self.ctx.raw_room {
            Some(r) => Some(r.clone()),
            None => self.ctx.policy.user_room(self.ctx.claims.as_ref()),
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
                    self.ctx.claims.as_ref().and_then(|c| c.sub.as_deref()),
                );
            }
            if let Err(e) = self.ctx.hub.join(&key, &joiner, None, reply).await {
                tracing::warn!(room, error = %e, "automatic join failed");
                return self.close(CloseCause::BusUnavailable).await;
            }
            self.rooms.insert(room);
        }

        loop {
            let close_deadline = closing.as_ref().map_or(far, |(_, t)| *t);
            tokio::select! {
                msg = stream.next() => {
                    let msg = match msg {
                        None => return closing.map_or(CloseCause::Abnormal(crate::error::Side::Downstream), |(c, _)| c),
                        Some(Err(e)) => {
                            let cause = match e {
                                // The client vanished without a close: nothing to send.
                                WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                                    return CloseCause::Abnormal(crate::error::Side::Downstream);
                                }
                                // tungstenite reports a 64-bit length with its most significant
                                // bit set (RFC 6455 §5.2: must be 0) as an oversized message;
                                // it is a framing error. (`size` is that length as usize.)
                                WsError::Capacity(CapacityError::MessageTooLong { size, .. })
                                    if (size as u64) >> 63 != 0 =>
                                {
                                    CloseCause::ProtocolError
                                }
                                WsError::Capacity(_) => CloseCause::MessageTooBig,
                                WsError::Protocol(_) => CloseCause::ProtocolError,
                                WsError::Utf8(_) => CloseCause::InvalidUtf8,
                                _ => return CloseCause::Abnormal(crate::error::Side::Downstream),
                            };
                            return self.close(cause).await;
                        }
                        Some(Ok(m)) => m,
                    };
                    if closing.is_some() {
                        continue; // draining the peer's close reply
                    }
                    match msg {
                        Message::Pong(_) => pong_deadline = far,
                        Message::Ping(_) | Message::Frame(_) => {}
                        Message::Close(frame) => {
                            let code = frame.map_or(1005, |f| u16::from(f.code));
                            // tungstenite queued the reply; polling on flushes it and ends.
                            while stream.next().await.is_some() {}
                            return CloseCause::Peer(crate::error::Side::Downstream, code);
                        }
                        Message::Text(_) | Message::Binary(_) => {
                            if !bucket.try_take(std::time::Instant::now()) {
                                let c = self.close(CloseCause::RateLimited).await;
                                closing = Some((c, Instant::now() + Duration::from_secs(5)));
                                continue;
                            }
                            if let Some(cause) = self.handle(msg).await {
                                closing = Some((cause, Instant::now() + Duration::from_secs(5)));
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(ping_at), if closing.is_none() => {
                    let _ = self.ctl.try_send(Ctl::Ping);
                    if pong_deadline == far {
                        pong_deadline = Instant::now() + ka.timeout;
                    }
                    ping_at = Instant::now() + ka.interval;
                }
                _ = tokio::time::sleep_until(pong_deadline), if closing.is_none() => {
                    return self.close(CloseCause::PongTimeout).await;
                }
                _ = tokio::time::sleep_until(expiry), if closing.is_none() => {
                    let c = self.close(CloseCause::TokenExpired).await;
                    closing = Some((c, Instant::now() + Duration::from_secs(5)));
                }
                changed = self.ctx.drain.changed(), if !drain_seen => {
                    if changed.is_err() || *self.ctx.drain.borrow() {
                        drain_seen = true;
                        drain_at = Instant::now() + crate::drain::jitter(self.ctx.drain_window);
                    }
                }
                _ = tokio::time::sleep_until(drain_at), if closing.is_none() => {
                    if !self.ctx.policy.is_raw() {
                        // A reconnect hint spread over a few seconds so clients do not stampede.
                        let hint = rand::rng().random_range(500..5000u64);
                        self.reply(protocol::shutdown(hint));
                    }
                    let c = CloseCause::Draining { code: self.ctx.drain_code, reason: self.ctx.drain_reason.clone() };
                    let c = self.close(c).await;
                    closing = Some((c, Instant::now() + Duration::from_secs(5)));
                }
                // The writer ended by itself (slow consumer, broken socket): wait for the
                // peer's Close as after any close, then end (the writer's cause wins).
                _ = self.ctl.closed(), if closing.is_none() => {
                    closing = Some((CloseCause::Abnormal(crate::error::Side::Downstream), Instant::now() + CLOSE_WAIT));
                }
                _ = tokio::time::sleep_until(close_deadline) => {
                    return closing.map_or(CloseCause::Abnormal(crate::error::Side::Downstream), |(c, _)| c);
                }
            }
        }
    }

    /// Handle one data message; `Some(cause)` when the connection is being closed.
    async fn handle(&mut self, msg: Message) -> Option<CloseCause> {
        if self.ctx.policy.is_raw() {
            let data = match msg {
                Message::Text(t) => Payload::Text(t.to_string()),
                Message::Binary(b) => Payload::Binary(b),
                _ => return None,
            };
            let room = self.ctx.raw_room.clone().unwrap_or_default();
            if !self.ctx.policy.may_publish(&room, self.ctx.claims.as_ref()) {
                return Some(self.close(CloseCause::PublishForbidden).await);
            }
            let p = Publish {
                key: self.ctx.policy.key(&room),
                from: publisher(self.ctx.claims.as_ref()),
                data,
                ephemeral: self.ctx.policy.cfg.history.is_none(),
                origin_conn: Some(self.ctx.conn_id.clone()),
            };
            if self.ctx.hub.publish(p, "raw").await.is_err() {
                return Some(self.close(CloseCause::BusUnavailable).await);
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
        let claims = self.ctx.claims.as_ref();
        match parsed {
            ClientMsg::Ping { id } => self.reply(protocol::pong(id.as_deref())),
            ClientMsg::Read { room, position, id } => {
                let joined = self.rooms.contains(&room);
                let ctx = &self.ctx;
                let reply = super::chat::read(
                    (&ctx.hub, &ctx.policy, ctx.claims.as_ref()),
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
        let claims = self.ctx.claims.as_ref();
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
                .publish(hook, &self.ctx.route, &room, from.as_ref(), user, &payload)
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
            origin_conn: Some(self.ctx.conn_id.clone()),
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
                (&ctx.hub, &ctx.policy, &ctx.hooks, &ctx.route),
                super::offline::Missed {
                    route: ctx.route.clone(),
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
            Err(e) => self.reply(protocol::error(
                id.as_deref(),
                ErrorCode::Unavailable,
                &e.to_string(),
            )),
        }
    }

    async fn leave_all(&mut self) {
        for room in std::mem::take(&mut self.rooms) {
            self.ctx
                .hub
                .leave(&self.ctx.policy.key(&room), &self.ctx.conn_id)
                .await;
        }
    }
}
