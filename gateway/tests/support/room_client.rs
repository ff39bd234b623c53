//! The reference client of the Switchboard room protocol v1 (`docs/protocol.md`), over a
//! WebSocket with the `switchboard.v1` subprotocol (JSON text frames) or, with
//! [`Options::proto`], `switchboard.v1.proto` (Protocol Buffers binary frames; the client keeps
//! one code path and translates at the socket). It is what the rooms tests use to act like a
//! real application, and it shows the patterns a client needs:
//!
//! - **Reconnect** with exponential backoff and full jitter (`random(0, min(cap, base·2^n))`),
//!   waiting at least the `reconnectAfterMs` of a `shutdown` hint.
//! - **Resume**: it keeps, per room, the last position it processed and re-joins every room with
//!   `since` after a reconnect (also the automatic `user:<sub>` room once it has seen it).
//!   `recovered: false` on such a join is surfaced ([`Event::is_loss`]): the caller must reload.
//!   A `lost` message (the pod fell behind and history could not repair it) is surfaced too.
//! - **De-duplication by `seq`** (per room and epoch): a stored message is delivered to the
//!   caller at most once. Messages of a room that arrive while a join for it is still
//!   unanswered are dropped: the join's replay (the gap after `since`) sends them again, after
//!   the `joined` reply.
//! - **A bounded publish queue**: every publish gets a client ack id and stays queued until its
//!   `ack`; while disconnected new publishes wait in the queue (up to `queue_limit`, then
//!   [`QueueFull`]); on reconnect the queue is sent again in order (after the joins); an
//!   `unavailable` error is retried every `retry_every`. Other refusals are final
//!   ([`Event::PublishFailed`]). A publish whose connection dropped before its ack is sent
//!   again, so it can be stored twice (at-least-once on the publish path); acknowledged
//!   positions are delivered exactly once.
//!
//! The connection runs in a task; the caller talks to it through [`RoomClient`] and reads
//! [`Event`]s. Events the caller skips while waiting for something else are kept, in order.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{WsClient, ws_config};

/// The subprotocol of the room protocol v1.
pub const SUBPROTOCOL: &str = "switchboard.v1";
/// The subprotocol of its binary encoding.
pub const PROTO_SUBPROTOCOL: &str = "switchboard.v1.proto";

/// How the room protocol is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `switchboard.v1`: JSON text frames.
    Json,
    /// `switchboard.v1.proto`: Protocol Buffers binary frames.
    Proto,
}

impl Encoding {
    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::Json => SUBPROTOCOL,
            Self::Proto => PROTO_SUBPROTOCOL,
        }
    }

    /// The frame of a client message written as JSON text. A text that is not a protocol
    /// message is sent as it is (a text frame), for tests of bad input.
    pub fn client_frame(self, text: String) -> Message {
        match self {
            Self::Json => Message::text(text),
            Self::Proto => match switchboard_gateway::rooms::protocol::parse(&text) {
                Ok(m) => Message::binary(switchboard_gateway::rooms::proto::encode_client(&m)),
                Err(_) => Message::text(text),
            },
        }
    }

    /// The JSON text of a server frame (a binary frame decoded and written as JSON).
    pub fn server_text(self, msg: &Message) -> Option<String> {
        use prost::Message as _;
        use switchboard_gateway::rooms::proto;
        match msg {
            Message::Text(t) if self == Self::Json => Some(t.as_str().to_owned()),
            Message::Binary(b) if self == Self::Proto => {
                let m = proto::ServerMessage::decode(b.as_ref()).ok()?;
                Some(proto::to_json(&m).to_string())
            }
            _ => None,
        }
    }
}

/// A room position: `seq` increases per room (not necessarily by one), `epoch` names the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    pub seq: u64,
    pub epoch: String,
}

impl Position {
    pub fn new(seq: u64, epoch: &str) -> Self {
        Self {
            seq,
            epoch: epoch.to_owned(),
        }
    }

    /// `{"seq": .., "epoch": ..}`.
    pub fn to_json(&self) -> Value {
        json!({"seq": self.seq, "epoch": self.epoch})
    }

    /// From `{"seq": .., "epoch": ..}` (or the `seq`/`epoch` fields of a message or ack).
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            seq: v.get("seq")?.as_u64()?,
            epoch: v.get("epoch")?.as_str()?.to_owned(),
        })
    }
}

/// A `message` as the caller receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomMessage {
    pub room: String,
    pub seq: u64,
    pub epoch: String,
    pub ts: u64,
    pub from: Option<Value>,
    pub data: Option<Value>,
    pub b64: Option<String>,
    pub ephemeral: bool,
    /// The message exactly as received.
    pub raw: Value,
}

impl RoomMessage {
    fn parse(v: &Value) -> Option<Self> {
        Some(Self {
            room: v.get("room")?.as_str()?.to_owned(),
            seq: v.get("seq")?.as_u64()?,
            epoch: v.get("epoch")?.as_str()?.to_owned(),
            ts: v.get("ts").and_then(Value::as_u64).unwrap_or(0),
            from: v.get("from").cloned(),
            data: v.get("data").cloned(),
            b64: v.get("b64").and_then(Value::as_str).map(str::to_owned),
            ephemeral: v.get("ephemeral").and_then(Value::as_bool).unwrap_or(false),
            raw: v.clone(),
        })
    }

    pub fn position(&self) -> Position {
        Position::new(self.seq, &self.epoch)
    }
}

/// What the client tells its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A connection is established (the `n`th, 1-based).
    Connected { n: usize },
    /// The connection ended: the gateway's Close code and reason, or `None` when it ended
    /// without a Close frame (or the test cut it).
    Disconnected { code: Option<u16>, reason: String },
    /// A `joined` reply. `resumed`: the join carried `since`. `resumed && !recovered` is a loss
    /// ([`Event::is_loss`]): the room's history since the last position is gone.
    Joined {
        room: String,
        recovered: bool,
        resumed: bool,
        position: Position,
    },
    /// A `left` reply.
    Left { room: String },
    /// `lost`: the pod fell behind and history could not repair it; the room's stored messages
    /// `from..=to` (when given) and `ephemeral` ones were missed ([`Event::is_loss`]).
    Lost {
        room: String,
        from: Option<Position>,
        to: Option<Position>,
        ephemeral: u64,
    },
    /// A room message, de-duplicated.
    Message(RoomMessage),
    /// A publish was acknowledged (`position` is `None` for ephemeral publishes).
    Acked {
        id: String,
        position: Option<Position>,
    },
    /// A publish was refused for good (not `unavailable`): it is no longer queued.
    PublishFailed {
        id: String,
        code: String,
        reason: String,
    },
    /// Any other `error` reply (a refused join, a bad frame sent with [`RoomClient::send_raw`]).
    Error {
        id: Option<String>,
        code: String,
        reason: String,
    },
    /// A presence event or snapshot, as received.
    Presence(Value),
    /// A `pong`.
    Pong { id: Option<String> },
    /// The gateway is draining; the client waits at least this long before reconnecting.
    Shutdown { reconnect_after_ms: u64 },
}

impl Event {
    /// A resume whose gap is gone: the caller must reload the room.
    pub fn is_loss(&self) -> bool {
        matches!(
            self,
            Event::Joined {
                resumed: true,
                recovered: false,
                ..
            } | Event::Lost { .. }
        )
    }
}

/// The publish queue is full (the client has been disconnected for a while).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// How the client connects and retries.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ws://host:port/path`.
    pub url: String,
    /// Extra handshake headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// First reconnect delay cap; doubled per failed attempt up to `backoff_cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Most publishes queued (sent and unacknowledged, or waiting for a connection).
    pub queue_limit: usize,
    /// How soon a publish refused as `unavailable` is sent again.
    pub retry_every: Duration,
    /// Handshake timeout per attempt.
    pub connect_timeout: Duration,
    /// Wire encoding (JSON by default).
    pub encoding: Encoding,
}

impl Options {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(2),
            queue_limit: 1000,
            retry_every: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            encoding: Encoding::Json,
        }
    }

    /// Speak `encoding` on the wire.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Add a handshake header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn queue_limit(mut self, n: usize) -> Self {
        self.queue_limit = n;
        self
    }
}

/// Counters for assertions about the client's own behaviour.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections established.
    pub connections: AtomicUsize,
    /// Stored messages dropped as duplicates (seq not above the last one processed).
    pub duplicates: AtomicUsize,
    /// Messages dropped because a join of their room was unanswered (the replay resends them).
    pub dropped_before_join: AtomicUsize,
    /// Publish frames sent again (after a reconnect or an `unavailable` error).
    pub resent: AtomicUsize,
}

enum Cmd {
    Join(String),
    Leave(String),
    Publish {
        room: String,
        payload: (&'static str, Value),
        ephemeral: bool,
        reply: oneshot::Sender<Result<String, QueueFull>>,
    },
    Raw(String),
    /// Cut the connection without a close handshake; `hold`: stay disconnected until
    /// [`Cmd::Reconnect`].
    Drop {
        hold: bool,
    },
    Reconnect,
    Close(oneshot::Sender<()>),
}

/// A reconnecting room client. Dropping it stops the connection task.
pub struct RoomClient {
    cmd: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<Event>,
    backlog: VecDeque<Event>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for RoomClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RoomClient {
    /// Start connecting (in the background) to `opts.url`.
    pub fn connect(opts: Options) -> Self {
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let worker = Worker {
            opts,
            events: ev_tx,
            stats: stats.clone(),
            rooms: BTreeMap::new(),
            pending: VecDeque::new(),
            next_id: 0,
            attempt: 0,
            not_before: None,
            hold: false,
        };
        let task = tokio::spawn(worker.run(cmd_rx));
        Self {
            cmd,
            events,
            backlog: VecDeque::new(),
            stats,
            task,
        }
    }

    /// Connect and wait for the first connection.
    pub async fn connected(opts: Options) -> Self {
        let mut c = Self::connect(opts);
        c.expect("the first connection", super::PROMPTLY, |e| {
            matches!(e, Event::Connected { .. }).then_some(())
        })
        .await;
        c
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn send(&self, cmd: Cmd) {
        // The task only ends on `close` or drop, after which nobody calls this.
        let _ = self.cmd.send(cmd);
    }

    /// Join `room` (now, and again with `since` after every reconnect).
    pub fn join(&self, room: &str) {
        self.send(Cmd::Join(room.to_owned()));
    }

    /// [`Self::join`] and wait for its `joined` (or panic on an `error` for it).
    pub async fn join_and_wait(&mut self, room: &str) -> Position {
        self.join(room);
        let room_owned = room.to_owned();
        let got = self
            .expect(&format!("joined {room}"), super::PROMPTLY, |e| match e {
                Event::Joined { room, position, .. } if *room == room_owned => {
                    Some(Ok(position.clone()))
                }
                Event::Error { code, reason, .. } => Some(Err(format!("{code}: {reason}"))),
                _ => None,
            })
            .await;
        got.unwrap_or_else(|e| panic!("join {room} refused: {e}"))
    }

    pub fn leave(&self, room: &str) {
        self.send(Cmd::Leave(room.to_owned()));
    }

    async fn publish_payload(
        &self,
        room: &str,
        payload: (&'static str, Value),
        ephemeral: bool,
    ) -> Result<String, QueueFull> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Publish {
            room: room.to_owned(),
            payload,
            ephemeral,
            reply,
        });
        rx.await.expect("the client task answers every publish")
    }

    /// Queue a publish of JSON `data`; returns its ack id.
    pub async fn publish(&self, room: &str, data: Value) -> Result<String, QueueFull> {
        self.publish_payload(room, ("data", data), false).await
    }

    /// Queue an ephemeral publish.
    pub async fn publish_ephemeral(&self, room: &str, data: Value) -> Result<String, QueueFull> {
        self.publish_payload(room, ("data", data), true).await
    }

    /// Queue a binary publish (`b64`: standard base64).
    pub async fn publish_b64(&self, room: &str, b64: &str) -> Result<String, QueueFull> {
        self.publish_payload(room, ("b64", Value::from(b64)), false)
            .await
    }

    /// Send a text frame as is (a malformed frame, a `presence` query, a `ping`), if connected.
    pub fn send_raw(&self, text: &str) {
        self.send(Cmd::Raw(text.to_owned()));
    }

    /// Cut the connection without a close handshake (a network drop); it reconnects by itself.
    pub fn drop_connection(&self) {
        self.send(Cmd::Drop { hold: false });
    }

    /// Cut the connection and stay offline until [`Self::reconnect`] (publishes queue up).
    pub fn go_offline(&self) {
        self.send(Cmd::Drop { hold: true });
    }

    /// Come back after [`Self::go_offline`].
    pub fn reconnect(&self) {
        self.send(Cmd::Reconnect);
    }

    /// Close with 1000 and stop.
    pub async fn close(mut self) {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Close(tx));
        let _ = tokio::time::timeout(super::PROMPTLY, rx).await;
        let _ = (&mut self.task).await;
    }

    /// Wait for the first event (kept ones first, in order) for which `f` returns `Some`;
    /// the events before it stay kept, in order. Panics after `within` with what was seen.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        if let Some(i) = self.backlog.iter().position(|e| f(e).is_some()) {
            let e = self.backlog.remove(i).expect("index from position");
            return f(&e).expect("matched before");
        }
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!(
                    "room client: no {what} within {within:?}; events kept: {:#?}",
                    self.backlog
                ),
                Ok(None) => panic!(
                    "room client: the connection task ended while waiting for {what}; kept: {:#?}",
                    self.backlog
                ),
                Ok(Some(e)) => match f(&e) {
                    Some(t) => return t,
                    None => self.backlog.push_back(e),
                },
            }
        }
    }

    /// The next `n` messages of `room`, in the order they were delivered.
    pub async fn messages(&mut self, room: &str, n: usize, within: Duration) -> Vec<RoomMessage> {
        let deadline = Instant::now() + within;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let what = format!("message {} of {n} in {room}", out.len() + 1);
            out.push(
                self.expect(&what, left, |e| match e {
                    Event::Message(m) if m.room == room => Some(m.clone()),
                    _ => None,
                })
                .await,
            );
        }
        out
    }

    /// Wait for the ack of publish `id`; `Err` when it was refused for good.
    pub async fn acked(&mut self, id: &str) -> Result<Option<Position>, (String, String)> {
        self.expect(&format!("ack of {id}"), super::PROMPTLY, |e| match e {
            Event::Acked { id: i, position } if i == id => Some(Ok(position.clone())),
            Event::PublishFailed {
                id: i,
                code,
                reason,
            } if i == id => Some(Err((code.clone(), reason.clone()))),
            _ => None,
        })
        .await
    }

    /// Everything received so far that no `expect` took, in order (emptying the backlog).
    pub fn take_events(&mut self) -> Vec<Event> {
        while let Ok(e) = self.events.try_recv() {
            self.backlog.push_back(e);
        }
        self.backlog.drain(..).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The connection task
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RoomState {
    /// The last position processed (or the position a join started from).
    position: Option<Position>,
    /// The id of a join sent and not answered yet, and whether it carried `since`.
    pending_join: Option<(String, bool)>,
}

struct Queued {
    id: String,
    frame: String,
    /// On the current connection, not answered yet.
    in_flight: bool,
    /// Refused as `unavailable`: send again at this time.
    retry_at: Option<Instant>,
}

struct Worker {
    opts: Options,
    events: mpsc::UnboundedSender<Event>,
    stats: Arc<Stats>,
    rooms: BTreeMap<String, RoomState>,
    pending: VecDeque<Queued>,
    next_id: u64,
    attempt: u32,
    /// A `shutdown` hint: do not reconnect before this.
    not_before: Option<Instant>,
    hold: bool,
}

enum End {
    /// `close()` was called (or the handle dropped).
    Stop,
    /// The connection ended; reconnect.
    Lost { code: Option<u16>, reason: String },
}

impl Worker {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            if !self.wait_before_connecting(&mut cmds).await {
                return;
            }
            let ws = match self.open().await {
                Ok(ws) => ws,
                Err(_) => {
                    self.attempt = self.attempt.saturating_add(1);
                    continue;
                }
            };
            self.attempt = 0;
            let n = self.stats.connections.fetch_add(1, Ordering::SeqCst) + 1;
            self.emit(Event::Connected { n });
            match self.serve(ws, &mut cmds).await {
                End::Stop => return,
                End::Lost { code, reason } => {
                    self.emit(Event::Disconnected { code, reason });
                    self.attempt = self.attempt.saturating_add(1);
                }
            }
        }
    }

    /// Full jitter: a uniformly random delay in `[0, min(cap, base·2^attempt))`.
    fn backoff(&self) -> Duration {
        if self.attempt == 0 {
            return Duration::ZERO;
        }
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1u32 << (self.attempt - 1).min(16));
        let cap = exp.min(self.opts.backoff_cap).as_millis().max(1) as u64;
        Duration::from_millis(rand::random_range(0..cap))
    }

    /// Sleep the backoff (and any shutdown hint; and while held offline), handling commands
    /// meanwhile. False when the client was closed.
    async fn wait_before_connecting(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> bool {
        let mut until = Instant::now() + self.backoff();
        if let Some(t) = self.not_before.take() {
            until = until.max(t);
        }
        loop {
            if !self.hold && Instant::now() >= until {
                return true;
            }
            let sleep = tokio::time::sleep_until(until);
            tokio::select! {
                _ = sleep, if !self.hold => return true,
                cmd = cmds.recv() => match cmd {
                    None => return false,
                    Some(Cmd::Close(done)) => {
                        let _ = done.send(());
                        return false;
                    }
                    Some(Cmd::Reconnect) => {
                        self.hold = false;
                        until = Instant::now();
                    }
                    Some(Cmd::Drop { hold }) => self.hold |= hold,
                    Some(cmd) => self.offline_command(cmd),
                },
            }
        }
    }

    /// A command while there is no connection: remember it for the next one.
    fn offline_command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(room) => {
                self.rooms.entry(room).or_default();
            }
            Cmd::Leave(room) => {
                self.rooms.remove(&room);
            }
            Cmd::Publish {
                room,
                payload,
                ephemeral,
                reply,
            } => {
                let _ = reply.send(self.enqueue(room, payload, ephemeral));
            }
            // Nothing to send it on; connection-level commands are handled by the callers.
            Cmd::Raw(_) | Cmd::Drop { .. } | Cmd::Reconnect | Cmd::Close(_) => {}
        }
    }

    fn enqueue(
        &mut self,
        room: String,
        payload: (&'static str, Value),
        ephemeral: bool,
    ) -> Result<String, QueueFull> {
        if self.pending.len() >= self.opts.queue_limit {
            return Err(QueueFull);
        }
        let id = self.id("pub");
        let mut frame = json!({"type": "publish", "room": room, "id": id});
        frame[payload.0] = payload.1;
        if ephemeral {
            frame["ephemeral"] = true.into();
        }
        self.pending.push_back(Queued {
            id: id.clone(),
            frame: frame.to_string(),
            in_flight: false,
            retry_at: None,
        });
        Ok(id)
    }

    async fn open(&self) -> Result<WsClient, tungstenite::Error> {
        let mut req = self.opts.url.as_str().into_client_request()?;
        let h = req.headers_mut();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(self.opts.encoding.subprotocol()),
        );
        for (name, value) in &self.opts.headers {
            h.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let connect = tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true);
        match tokio::time::timeout(self.opts.connect_timeout, connect).await {
            Ok(Ok((ws, resp))) => {
                let chosen = resp
                    .headers()
                    .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                    .and_then(|v| v.to_str().ok());
                assert_eq!(
                    chosen,
                    Some(self.opts.encoding.subprotocol()),
                    "the gateway selects the offered encoding"
                );
                Ok(ws)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(tungstenite::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "handshake timed out",
            ))),
        }
    }

    fn join_frame(&mut self, room: &str) -> String {
        let id = self.id("join");
        let st = self.rooms.entry(room.to_owned()).or_default();
        let since = st.position.clone();
        st.pending_join = Some((id.clone(), since.is_some()));
        let mut frame = json!({"type": "join", "room": room, "id": id});
        if let Some(p) = since {
            frame["since"] = p.to_json();
        }
        frame.to_string()
    }

    async fn serve(&mut self, mut ws: WsClient, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> End {
        // Re-join every room from its last position, then send the queue again, in order: the
        // gateway handles a connection's messages in order, so the joins come first.
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        let mut out: Vec<String> = rooms.iter().map(|r| self.join_frame(r)).collect();
        for q in &mut self.pending {
            if q.in_flight || q.retry_at.is_some() {
                self.stats.resent.fetch_add(1, Ordering::Relaxed);
            }
            q.in_flight = true;
            q.retry_at = None;
            out.push(q.frame.clone());
        }
        for frame in out {
            if ws
                .feed(self.opts.encoding.client_frame(frame))
                .await
                .is_err()
            {
                return self.lost(None, "send failed");
            }
        }
        if ws.flush().await.is_err() {
            return self.lost(None, "send failed");
        }

        let mut retry = tokio::time::interval(self.opts.retry_every);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                        match self.opts.encoding.server_text(&m) {
                            Some(text) => self.on_frame(&text),
                            None => panic!("a frame of the wrong kind for {:?}: {m:?}", self.opts.encoding),
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.as_str().to_owned())
                        });
                        // Finish the close handshake (tungstenite queued the reply).
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while ws.next().await.is_some() {}
                        })
                        .await;
                        return self.lost(Some(code), &reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return self.lost(None, &e.to_string()),
                    None => return self.lost(None, "connection ended"),
                },
                cmd = cmds.recv() => {
                    let frame = match cmd {
                        None => return End::Stop,
                        Some(Cmd::Close(done)) => {
                            let _ = ws
                                .close(Some(CloseFrame {
                                    code: CloseCode::Normal,
                                    reason: "bye".into(),
                                }))
                                .await;
                            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                                while ws.next().await.is_some() {}
                            })
                            .await;
                            let _ = done.send(());
                            return End::Stop;
                        }
                        Some(Cmd::Drop { hold }) => {
                            self.hold = hold;
                            drop(ws);
                            return self.lost(None, "dropped by the test");
                        }
                        Some(Cmd::Reconnect) => None,
                        Some(Cmd::Join(room)) => Some(self.join_frame(&room)),
                        Some(Cmd::Leave(room)) => {
                            self.rooms.remove(&room);
                            Some(json!({"type": "leave", "room": room}).to_string())
                        }
                        Some(Cmd::Raw(text)) => Some(text),
                        Some(Cmd::Publish { room, payload, ephemeral, reply }) => {
                            let queued = self.enqueue(room, payload, ephemeral);
                            let frame = queued.as_ref().ok().map(|_| {
                                let q = self.pending.back_mut().expect("just queued");
                                q.in_flight = true;
                                q.frame.clone()
                            });
                            let _ = reply.send(queued);
                            frame
                        }
                    };
                    if let Some(frame) = frame
                        && ws.send(self.opts.encoding.client_frame(frame)).await.is_err()
                    {
                        return self.lost(None, "send failed");
                    }
                }
                _ = retry.tick() => {
                    let now = Instant::now();
                    let mut frames = Vec::new();
                    for q in &mut self.pending {
                        if q.retry_at.is_some_and(|t| t <= now) {
                            q.retry_at = None;
                            q.in_flight = true;
                            self.stats.resent.fetch_add(1, Ordering::Relaxed);
                            frames.push(q.frame.clone());
                        }
                    }
                    for frame in frames {
                        if ws.send(self.opts.encoding.client_frame(frame)).await.is_err() {
                            return self.lost(None, "send failed");
                        }
                    }
                }
            }
        }
    }

    /// The connection is gone: nothing in flight on it will be answered.
    fn lost(&mut self, code: Option<u16>, reason: &str) -> End {
        for st in self.rooms.values_mut() {
            st.pending_join = None;
        }
        End::Lost {
            code,
            reason: reason.to_owned(),
        }
    }

    fn on_frame(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message" => self.on_message(&v),
            "joined" => self.on_joined(&v, id),
            "left" => {
                let room = v["room"].as_str().unwrap_or_default().to_owned();
                self.emit(Event::Left { room });
            }
            "ack" => {
                let Some(id) = id else { return };
                if let Some(i) = self.pending.iter().position(|q| q.id == id) {
                    self.pending.remove(i);
                    let position = Position::from_json(&v);
                    self.emit(Event::Acked { id, position });
                }
            }
            "error" => {
                let code = v["code"].as_str().unwrap_or_default().to_owned();
                let reason = v["reason"].as_str().unwrap_or_default().to_owned();
                if let Some(i) = id
                    .as_deref()
                    .and_then(|id| self.pending.iter().position(|q| q.id == id))
                {
                    if code == "unavailable" {
                        let q = &mut self.pending[i];
                        q.in_flight = false;
                        q.retry_at = Some(Instant::now() + self.opts.retry_every);
                    } else {
                        let q = self.pending.remove(i).expect("index from position");
                        self.emit(Event::PublishFailed {
                            id: q.id,
                            code,
                            reason,
                        });
                    }
                    return;
                }
                // A refused join: forget the room (it would be refused again).
                let refused_room = self
                    .rooms
                    .iter()
                    .find(|(_, st)| st.pending_join.as_ref().map(|(j, _)| j) == id.as_ref())
                    .map(|(r, _)| r.clone());
                if let Some(room) = refused_room
                    && id.is_some()
                {
                    if code == "unavailable" {
                        // Try again on the next connection.
                        if let Some(st) = self.rooms.get_mut(&room) {
                            st.pending_join = None;
                        }
                    } else {
                        self.rooms.remove(&room);
                    }
                }
                self.emit(Event::Error { id, code, reason });
            }
            "lost" => {
                let room = v["room"].as_str().unwrap_or_default().to_owned();
                let to = Position::from_json(&v["to"]);
                // Continue after what was lost (the caller reloads the room).
                if let (Some(st), Some(to)) = (self.rooms.get_mut(&room), &to) {
                    st.position = Some(to.clone());
                }
                self.emit(Event::Lost {
                    room,
                    from: Position::from_json(&v["from"]),
                    to,
                    ephemeral: v["ephemeral"].as_u64().unwrap_or(0),
                });
            }
            "presence" => self.emit(Event::Presence(v)),
            "pong" => self.emit(Event::Pong { id }),
            "shutdown" => {
                let ms = v["reconnectAfterMs"].as_u64().unwrap_or(0);
                self.not_before = Some(Instant::now() + Duration::from_millis(ms));
                self.emit(Event::Shutdown {
                    reconnect_after_ms: ms,
                });
            }
            _ => {}
        }
    }

    fn on_joined(&mut self, v: &Value, id: Option<String>) {
        let room = v["room"].as_str().unwrap_or_default().to_owned();
        let recovered = v["recovered"].as_bool().unwrap_or(false);
        let Some(position) = Position::from_json(&v["position"]) else {
            return;
        };
        let st = self.rooms.entry(room.clone()).or_default();
        let resumed = match (&id, &st.pending_join) {
            // The answer to our join.
            (Some(id), Some((pending, resumed))) if id == pending => {
                let resumed = *resumed;
                st.pending_join = None;
                resumed
            }
            // An automatic join (the user room) while our own join of it is on its way:
            // that join decides.
            (None, Some(_)) => return,
            // An automatic join we did not ask for (the user room on the first connection).
            _ => false,
        };
        // Recovered: the gap follows and raises the position as it is processed. Otherwise
        // live delivery continues after the room's current position.
        if !recovered {
            st.position = Some(position.clone());
        }
        self.emit(Event::Joined {
            room,
            recovered,
            resumed,
            position,
        });
    }

    fn on_message(&mut self, v: &Value) {
        let Some(m) = RoomMessage::parse(v) else {
            return;
        };
        let Some(st) = self.rooms.get_mut(&m.room) else {
            return; // a room we left
        };
        if st.pending_join.is_some() {
            self.stats
                .dropped_before_join
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if m.seq != 0 {
            if let Some(p) = &st.position
                && p.epoch == m.epoch
                && m.seq <= p.seq
            {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            st.position = Some(m.position());
        }
        self.emit(Event::Message(m));
    }
}
