//! The room bus: how a room's messages reach every gateway pod that has members in it, with
//! per-room positions for ordering and resume.
//!
//! Two implementations: [`memory`] (the embedded default: one process, in-memory history) and
//! `nats` (core NATS subjects for live fan-out, JetStream for history, positions and resume).
//! The hub holds one [`Subscription`] per room per pod (reference-counted by the hub).

pub mod feed;
pub mod memory;
pub mod nats;

use std::borrow::Cow;
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A room, scoped by namespace (routes with the same namespace share rooms).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    pub namespace: String,
    pub room: String,
}

/// Where a room's stream is: `seq` increases with every stored message of the room (not
/// necessarily by one), `epoch` names the stream; a different epoch means the history the
/// client saw is gone (`recovered: false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Position {
    pub seq: u64,
    pub epoch: String,
}

/// A message's payload: JSON, or binary bytes (base64 on JSON transports).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(serde_json::Value),
    Binary(Bytes),
    /// Raw-relay rooms: a text frame relayed unchanged.
    Text(String),
}

/// One room message as every pod delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomMessage {
    pub key: RoomKey,
    /// 0 for ephemeral messages (never stored, no position).
    pub seq: u64,
    pub epoch: String,
    /// Server time in milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Publisher identity (JWT `sub` and chosen claims), `None` for the server API.
    pub from: Option<serde_json::Value>,
    pub data: Payload,
    pub ephemeral: bool,
    /// The publishing connection (pod-unique id), so raw rooms can skip the sender.
    pub origin_conn: Option<String>,
}

/// A publish request.
#[derive(Debug, Clone)]
pub struct Publish {
    pub key: RoomKey,
    pub from: Option<serde_json::Value>,
    pub data: Payload,
    pub ephemeral: bool,
    pub origin_conn: Option<String>,
}

/// History retention for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub max_messages: u32,
    pub max_age: Duration,
    /// The namespace's whole history, all rooms together (`history.maxBytes`, if set; the
    /// embedded bus bounds it by [`switchboard_config::DEFAULT_HISTORY_BYTES`] otherwise).
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// A route's `history`.
    pub fn of(h: &switchboard_config::History) -> Self {
        Self {
            max_messages: h.max_messages,
            max_age: h.max_age,
            max_bytes: h.max_bytes,
        }
    }
}

/// What a resume gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Exactly the messages after the client's position, in order (possibly none).
    Gap(Vec<RoomMessage>),
    /// The position is beyond retained history (or from another epoch): reload from the app.
    Lost,
}

/// Where a history read ([`Bus::replay_into`], [`Bus::retained_into`]) hands the messages it
/// reads, oldest first, one at a time as it reads them: a read never holds a room's history
/// itself, so what a join or a count holds is what its sink keeps (a window the size of the
/// member's queue, a counter), not the room's retained history.
pub trait Sink: Send {
    /// Take the next message (borrowed where the bus holds it, as the embedded bus does: a
    /// sink that only looks at it copies nothing); `false`: the sink has what it needs and the
    /// read stops.
    fn take(&mut self, msg: Cow<'_, RoomMessage>) -> bool;
    /// Forget what was taken: the read found it belongs to no current history (the stream
    /// was recreated while it was read).
    fn reset(&mut self);
}

/// Keep everything (tests, small reads).
impl Sink for Vec<RoomMessage> {
    fn take(&mut self, msg: Cow<'_, RoomMessage>) -> bool {
        self.push(msg.into_owned());
        true
    }
    fn reset(&mut self) {
        self.clear();
    }
}

/// How a replay into a sink ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// The sink got exactly the messages after the position, in order (up to where it
    /// stopped the read).
    Gap,
    /// The position is beyond retained history (or from another epoch); what the sink took,
    /// if anything, is not a gap and is to be dropped.
    Lost,
}

/// Presence of one connection in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Pod-unique connection id.
    pub conn: String,
    /// JWT `sub`, if any.
    pub user: Option<String>,
    /// Extra public info (selected claims).
    #[serde(default)]
    pub info: serde_json::Value,
}

/// A presence change delivered to the pods with members in the room.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEvent {
    pub key: RoomKey,
    pub joined: bool,
    pub member: Member,
}

/// Live delivery for one room on this pod. Dropping it unsubscribes.
pub struct Subscription {
    /// Room messages in position order, and a [`feed::Lag`] where the pod fell behind.
    pub messages: feed::FeedReceiver,
    /// The room's presence events (from the same feed).
    pub presence: feed::PresenceReceiver,
    /// Held to keep the underlying subscription alive (NATS subscriptions, consumers).
    pub guard: Box<dyn Send + Sync>,
}

/// Why the bus could not do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus timed out")]
    Timeout,
    /// The message, as the bus carries it, is larger than the bus takes (NATS: the server's
    /// `max_payload`). Not stored; sending it again fails the same way.
    #[error("message too big for the room bus: {size} bytes as carried, over its limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("bus error: {0}")]
    Other(String),
}

/// The largest message a route hands NATS, for [`Bus::check_message_limits`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Carried {
    pub route: String,
    pub what: CarriedKind,
    /// The route's bound: `limits.maxMessageBytes` of a room message, `maxDocumentBytes` of
    /// a document snapshot.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CarriedKind {
    /// A room message in the bus's envelope (binary payloads as base64).
    RoomMessage,
    /// A Yjs document's snapshot in its log (the whole document as one message).
    DocumentSnapshot,
}

/// Read positions one user keeps in one namespace (on either bus); past it the user's least
/// recently marked one is forgotten (that room then counts its whole retained history as
/// unread for them). Bounds what one client can make a pod (embedded bus) or NATS (the reads
/// bucket) store by marking read in room after room.
pub const MAX_READS_PER_USER: usize = 1000;

/// Read positions (read receipts, docs/protocol.md): one per (room, user), only ever raised
/// within an epoch (a position of another epoch replaces it); at most [`MAX_READS_PER_USER`]
/// per user and namespace.
#[async_trait]
pub trait ReadStore: Send + Sync {
    /// Raise `user`'s read position in `key` to `pos`; returns the position now stored (the
    /// higher of the two).
    async fn mark(&self, key: &RoomKey, user: &str, pos: &Position) -> Result<Position, BusError>;
    /// `user`'s read position in `key`, if any.
    async fn get(&self, key: &RoomKey, user: &str) -> Result<Option<Position>, BusError>;
    /// Every room of `namespace` where `user` has a read position (at most `max`).
    async fn of_user(
        &self,
        namespace: &str,
        user: &str,
        max: usize,
    ) -> Result<Vec<(String, Position)>, BusError>;
}

/// Whether read position `new` moves `old` (a later seq, or another epoch).
pub fn read_advances(old: Option<&Position>, new: &Position) -> bool {
    old.is_none_or(|o| o.epoch != new.epoch || new.seq > o.seq)
}

/// What other NATS users in the gateway get from a NATS bus.
#[derive(Clone)]
pub struct NatsAccess {
    pub client: async_nats::Client,
    /// `bus.nats.subjectPrefix`.
    pub prefix: String,
    /// `bus.nats.replicas`.
    pub replicas: usize,
    /// The runtime the client runs on (the edge runtime): tasks that follow NATS feeds are
    /// spawned there, whichever runtime asked for them (an admin API call, say).
    pub runtime: tokio::runtime::Handle,
}

/// The room bus.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Declare a namespace's retention (called at start and on reload; idempotent).
    /// `None`: the namespace keeps no history. A bus that is not connected yet records it and
    /// applies it once connected (`Ok`); an error means a connected bus refused it.
    async fn configure(
        &self,
        namespace: &str,
        retention: Option<Retention>,
    ) -> Result<(), BusError>;

    /// Publish. Stored messages return their position only once stored durably (the ack a
    /// client gets); ephemeral ones return `None` once sent.
    async fn publish(&self, msg: Publish) -> Result<Option<Position>, BusError>;

    /// Start live delivery for a room on this pod: every message published from now on, in
    /// position order.
    async fn subscribe(&self, key: &RoomKey) -> Result<Subscription, BusError>;

    /// Messages after `since` (exclusive) into `sink` as they are read, or `Lost` when beyond
    /// retention or another epoch.
    async fn replay_into(
        &self,
        key: &RoomKey,
        since: &Position,
        sink: &mut dyn Sink,
    ) -> Result<Replayed, BusError>;

    /// [`Bus::replay_into`] a `Vec`: the whole gap in memory (tests, bounded gaps).
    async fn replay(&self, key: &RoomKey, since: &Position) -> Result<Replay, BusError> {
        let mut msgs = Vec::new();
        Ok(match self.replay_into(key, since, &mut msgs).await? {
            Replayed::Gap => Replay::Gap(msgs),
            Replayed::Lost => Replay::Lost,
        })
    }

    /// The room's current position (what a fresh joiner is told).
    async fn position(&self, key: &RoomKey) -> Result<Position, BusError>;

    /// Every retained message of the room in the current epoch into `sink`, oldest first, as
    /// they are read; returns the room's current position (a resume from another epoch starts
    /// from the oldest of them).
    async fn retained_into(&self, key: &RoomKey, sink: &mut dyn Sink)
    -> Result<Position, BusError>;

    /// [`Bus::retained_into`] a `Vec`: the whole history in memory (tests, bounded reads).
    async fn retained(&self, key: &RoomKey) -> Result<(Vec<RoomMessage>, Position), BusError> {
        let mut msgs = Vec::new();
        let position = self.retained_into(key, &mut msgs).await?;
        Ok((msgs, position))
    }

    /// Announce (or withdraw) a member; refreshed by the caller every `ttl / 3` while present.
    /// The bus does not tell a refresh from an announce: a write that lands after the
    /// member's withdraw announces it again, so the caller withdraws a member only once no
    /// refresh of it is under way.
    async fn presence_set(
        &self,
        key: &RoomKey,
        member: &Member,
        present: bool,
    ) -> Result<(), BusError>;

    /// Everyone in the room, cluster-wide.
    async fn presence_list(&self, key: &RoomKey) -> Result<Vec<Member>, BusError>;

    /// Hand a connect/disconnect notification (`event`, JSON) of a connection in `namespace`
    /// to whoever listens outside the gateway (`rooms.notifyNats`). At most once: nothing is
    /// stored or retried.
    async fn notify(&self, namespace: &str, event: Bytes) -> Result<(), BusError>;

    /// Periodic upkeep, called every second (the embedded bus frees expired history here).
    async fn maintain(&self) {}

    /// Wait until what was handed to the bus has reached it (NATS: the server has read every
    /// publish so far). Called once at exit, bounded by the caller.
    async fn flush(&self) {}

    /// The largest message each route may hand the bus ([`Carried`]), at start and on every
    /// reload: a bus that carries messages in a bounded envelope (NATS: the server's
    /// `max_payload`) warns about each route whose largest messages cannot fit it.
    fn check_message_limits(&self, _routes: Vec<Carried>) {}

    /// Whether the bus is usable now (readiness and metrics).
    fn healthy(&self) -> bool;

    /// The cluster-wide store of read positions (a JetStream KV bucket with NATS). None: the
    /// caller keeps them in this process (the embedded bus).
    fn reads(&self) -> Option<Arc<dyn ReadStore>> {
        None
    }

    /// The NATS connection under this bus, for the gateway's other NATS users (Yjs
    /// documents). None: the embedded bus.
    fn nats(&self) -> Option<NatsAccess> {
        None
    }
}

/// Connect the NATS bus on `rt` (its client tasks live there: the edge runtime, beside the
/// connections it serves). Returns at once even when NATS is down: the client keeps
/// reconnecting and the bus reports unhealthy (readiness, `switchboard_bus_up`) until it is
/// connected.
pub fn connect_nats(
    cfg: &switchboard_config::Nats,
    rt: &tokio::runtime::Runtime,
) -> Result<Arc<dyn Bus>, BusError> {
    let bus = rt.block_on(nats::NatsBus::connect(cfg))?;
    Ok(Arc::new(bus))
}
