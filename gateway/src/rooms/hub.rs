//! The pod's room hub: one bus subscription per room with local members (reference-counted by
//! membership; a room's last leave frees it), fan-out of each message (encoded once) to every member's outbox, join with
//! resume (exactly the gap, then live, de-duplicated by position), and presence.
//!
//! Delivery contract (docs/protocol.md, "Delivery guarantees"): when the room's feed lagged
//! (this pod fell behind), the hub repairs its members from history like a resume, or, where
//! history cannot cover the gap, queues each member a `lost` signal naming exactly what it
//! missed, before the next message. A resume from another epoch starts at the oldest message
//! the current epoch retains (`recovered: false`).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tracing::Instrument;

use super::batch::{BatchCfg, BatchRule, Batcher};
use super::bus::feed::{Consumer, Delivery, Next};
use super::bus::{
    Bus, BusError, Member, Payload, Position, Publish, Replayed, RoomKey, RoomMessage, Sink,
    Subscription,
};
use super::outbox::{Item, Outbox, Posted};
use super::presence::PresenceView;
use super::receipts::{self, Receipts};
use super::{proto, protocol};
use crate::engine::conn::Shared;
pub use gap::GapFit;
use gap::{Synced, Window, backlog_budget};
use members::Members;
use repair::{Lost, repair, tell_lost};

/// How a member wants messages encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The JSON room protocol (WebSocket, SSE, long-polling).
    Json,
    /// The binary room protocol (`switchboard.v1.proto`, WebSocket).
    Proto,
    /// Raw relay: payloads as they were sent; `echo` sends a member's own messages back.
    Raw { echo: bool },
}

/// A joining member.
#[derive(Clone)]
pub struct Joiner {
    /// Pod-unique connection id.
    pub conn: String,
    pub outbox: Arc<Outbox>,
    pub encoding: Encoding,
    /// Announce presence with this identity (routes with presence on).
    pub presence: Option<Member>,
    /// Deliver presence events of the room.
    pub presence_events: bool,
    /// Read receipts: the read state the `joined` reply reports (`read`, `unread`).
    pub read: Option<protocol::ReadState>,
    /// Batched delivery (`rooms.batch`): the member's route's rule. Routes sharing a
    /// namespace agree on it (validated), so whichever member brings a room to this pod decides
    /// alike.
    pub batch: Option<Arc<BatchRule>>,
    /// How much of a resume's gap the join queues.
    pub gap: GapFit,
}

/// The result of a join.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub recovered: bool,
    /// What the `joined` reply says: recovered, the position after the gap queued with the
    /// join; not recovered, the position the messages that follow come after.
    pub position: Position,
    /// Where this member's stream starts: the messages queued with the join (a gap, or what
    /// a new epoch retains) follow it, each raising it. A cursor pinned here resumes them all.
    pub start: Position,
}

/// What waits for a member whose join is still replaying history.
enum Pending {
    Message(RoomMessage),
    Lost(Lost),
}

struct Slot {
    outbox: Arc<Outbox>,
    encoding: Encoding,
    presence_events: bool,
    /// How much of a repair the member is queued: its join's [`GapFit`], packed (it fits in
    /// the slot's padding).
    fit: u32,
    /// While a join is replaying history, live messages (and `lost` signals) wait here.
    syncing: Option<Vec<Pending>>,
    last_seq: u64,
    /// The stream epoch `last_seq` belongs to; a new epoch (stream recreated) restarts it.
    epoch: String,
}

/// A room with members on this pod. No task waits on it: its feed wakes it when the bus has
/// something ([`Consumer`]), and a task drains the feed and ends ([`drain`]); a small room fed
/// by the NATS pump is fanned out by the pump itself.
struct LocalRoom {
    key: RoomKey,
    bus: Arc<dyn Bus>,
    /// Where the drain tasks run (the runtime of the room's first joiner; the feed may be fed
    /// from another, e.g. a test's bus).
    runtime: tokio::runtime::Handle,
    members: Mutex<Members<Slot>>,
    /// Who the members with presence events were told of (locked before `members`); made on
    /// the room's first presence event or listing.
    presence: Mutex<Option<Box<PresenceView>>>,
    /// The bus subscription (dropped with the room's last member).
    sub: Subscription,
    /// Batched rooms (`rooms.batch`): live messages collect here until due or full. Fanned out
    /// under this lock, so a batch flushed by its timer and one filled by the drain keep order.
    batcher: Option<Box<Mutex<Batcher>>>,
}

/// A room with at most this many members on this pod is fanned out by the NATS pump that
/// received its message ([`Consumer::wake_here`]): a few outbox pushes cost less than handing
/// the message to a task, which was a good part of a small room's cross-pod latency. Bigger
/// rooms get a task, so the pump goes back to reading NATS at once.
const INLINE_MEMBERS: usize = 32;

/// At most this many deliveries are fanned out by the pump per wake; the rest goes to a task.
/// What the pump does per delivery is bounded by both limits: outbox pushes, or for a batched
/// room a batch encoded per member that needs its own (a room that grew past the limit during
/// one wake is served inline for that wake).
const INLINE_ITEMS: usize = 8;

impl Consumer for LocalRoom {
    fn wake(self: Arc<Self>) {
        self.runtime.spawn(drain(Arc::downgrade(&self), None));
    }

    fn wake_here(self: Arc<Self>) {
        if !self.inline() {
            self.wake();
        } else if let Some(first) = self.drain_inline() {
            self.runtime.spawn(drain(Arc::downgrade(&self), first));
        }
    }
}

impl LocalRoom {
    /// The room of `members`, fed by `sub`: its feed wakes it from now on (at once if
    /// something waits already).
    fn open(
        key: RoomKey,
        bus: Arc<dyn Bus>,
        sub: Subscription,
        members: Members<Slot>,
        batch: Option<BatchCfg>,
    ) -> Arc<Self> {
        let room = Arc::new(LocalRoom {
            key,
            bus,
            runtime: tokio::runtime::Handle::current(),
            members: Mutex::new(members),
            presence: Mutex::default(),
            sub,
            batcher: batch.map(|cfg| Box::new(Mutex::new(Batcher::new(cfg)))),
        });
        let weak: Weak<LocalRoom> = Arc::downgrade(&room);
        room.sub.messages.set_consumer(weak);
        room
    }

    /// Whether the pump may fan out here (never while the test seam holds fan-out back).
    fn inline(&self) -> bool {
        !fanout_gated()
            && self.members.lock().unwrap_or_else(|p| p.into_inner()).len() <= INLINE_MEMBERS
    }

    /// Fan out what the feed holds now, without waiting. `None`: the feed is empty (the next
    /// arrival wakes the room again); otherwise what a task must take over, from this item on
    /// (a lag, which repairs from history, or the rest of a burst).
    fn drain_inline(self: &Arc<Self>) -> Option<Option<Next>> {
        for _ in 0..INLINE_ITEMS {
            match self.sub.messages.next()? {
                Next::Delivery(Delivery::Message(msg)) => self.take_message(msg),
                Next::Presence(ev) => self.take_presence(ev),
                lag @ Next::Delivery(Delivery::Lagged(_)) => return Some(Some(lag)),
            }
        }
        Some(None)
    }

    fn take_message(self: &Arc<Self>, msg: RoomMessage) {
        match &self.batcher {
            Some(batcher) => collect(self, batcher, msg),
            None => fan_out(self, &self.key, msg),
        }
    }

    fn take_presence(&self, ev: super::bus::PresenceEvent) {
        let mut view = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        let view = view.get_or_insert_with(Box::default);
        if view.on_event(ev.joined, &ev.member) {
            self.announce(&self.key.room, ev.joined, &ev.member);
        }
    }
}

/// Fan out everything the room's feed holds (`first`, taken already, before it), in order,
/// then end (the feed wakes the room again with the next arrival). Holds the room only between
/// waits: a room whose last member left is freed at once.
async fn drain(weak: Weak<LocalRoom>, mut first: Option<Next>) {
    loop {
        let Some(room) = weak.upgrade() else { return };
        let Some(next) = first.take().or_else(|| room.sub.messages.next()) else {
            return;
        };
        match next {
            Next::Delivery(delivery) => {
                drop(room);
                fanout_gate().await;
                let Some(room) = weak.upgrade() else { return };
                match delivery {
                    Delivery::Message(msg) => room.take_message(msg),
                    Delivery::Lagged(lag) => {
                        // What was collected comes before the repair, in order.
                        if let Some(batcher) = &room.batcher {
                            let mut b = batcher.lock().unwrap_or_else(|p| p.into_inner());
                            let msgs = b.take();
                            fan_out_batch(&room, &room.key, msgs, b.cfg());
                        }
                        let (bus, key) = (room.bus.clone(), room.key.clone());
                        drop(room);
                        repair(&bus, &weak, &key, lag).await;
                    }
                }
            }
            Next::Presence(ev) => room.take_presence(ev),
        }
        // A busy room must not keep its worker from every other task.
        tokio::task::coop::consume_budget().await;
    }
}

/// Add `msg` to the room's pending batch: a full batch goes out now; the first message of a
/// batch starts the timer that sends it when its window ends.
fn collect(room: &Arc<LocalRoom>, batcher: &Mutex<Batcher>, msg: RoomMessage) {
    let mut b = batcher.lock().unwrap_or_else(|p| p.into_inner());
    let was_empty = b.due().is_none();
    if let Some(full) = b.push(msg, tokio::time::Instant::now()) {
        fan_out_batch(room, &room.key, full, b.cfg());
        return;
    }
    if let (true, Some(due)) = (was_empty, b.due()) {
        room.runtime.spawn(flush_at(Arc::downgrade(room), due));
    }
}

/// Send the room's pending batch once `due` has come, unless it already went out (full) and a
/// later batch has its own timer.
async fn flush_at(weak: Weak<LocalRoom>, due: tokio::time::Instant) {
    tokio::time::sleep_until(due).await;
    let Some(room) = weak.upgrade() else { return };
    let Some(batcher) = &room.batcher else { return };
    let mut b = batcher.lock().unwrap_or_else(|p| p.into_inner());
    if b.due().is_some_and(|d| d <= tokio::time::Instant::now()) {
        let msgs = b.take();
        fan_out_batch(&room, &room.key, msgs, b.cfg());
    }
}

impl LocalRoom {
    /// Queue a presence event to every member that asked for presence events.
    fn announce(&self, room: &str, joined: bool, member: &Member) {
        // Encoded once per encoding in use, shared by the members that use it.
        let text = protocol::presence_event(room, joined, member);
        let mut bin: Option<bytes::Bytes> = None;
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        for slot in members.values().filter(|s| s.presence_events) {
            let item = match slot.encoding {
                Encoding::Proto => Item::RawBinary(
                    bin.get_or_insert_with(|| proto::transcode(&text).unwrap_or_default())
                        .clone(),
                ),
                _ => Item::Reply(text.clone()),
            };
            slot.outbox.push(item);
        }
    }

    /// Queue a server message (a `receipt`) to every member speaking the room protocol,
    /// encoded once per encoding.
    fn tell(&self, text: &str) {
        let mut bin: Option<bytes::Bytes> = None;
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        for slot in members.values() {
            let item = match slot.encoding {
                Encoding::Proto => Item::RawBinary(
                    bin.get_or_insert_with(|| proto::transcode(text).unwrap_or_default())
                        .clone(),
                ),
                Encoding::Json => Item::Reply(text.to_string()),
                Encoding::Raw { .. } => continue,
            };
            slot.outbox.push(item);
        }
    }

    fn watches_presence(&self) -> bool {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|s| s.presence_events)
    }
}

/// A message encoded once per encoding for all members of this pod.
struct Encoded {
    msg: RoomMessage,
    /// The JSON encoding, its position and its WebSocket frames (one per compression setting
    /// in use): what every JSON member's queue points to.
    json: Option<Arc<Posted>>,
    /// The binary encoding's frames.
    proto: Option<Arc<Shared>>,
    /// Raw relay: the payload as sent, framed once.
    raw: Option<Arc<Shared>>,
}

impl Encoded {
    fn new(msg: RoomMessage) -> Self {
        Self {
            msg,
            json: None,
            proto: None,
            raw: None,
        }
    }
}

impl Encoded {
    fn item(&mut self, encoding: Encoding, conn: &str) -> Option<Item> {
        match encoding {
            Encoding::Json => {
                let msg = &self.msg;
                let posted = self.json.get_or_insert_with(|| {
                    let json: Arc<str> = protocol::message(msg).into();
                    Arc::new(Posted {
                        room: msg.key.room.clone(),
                        seq: msg.seq,
                        epoch: msg.epoch.clone(),
                        frames: Shared::text(json.clone()),
                        json,
                    })
                });
                Some(Item::Message(posted.clone()))
            }
            // A binary frame like a raw one: the writer sends it as it is.
            Encoding::Proto => Some(Item::Shared(
                self.proto
                    .get_or_insert_with(|| Shared::binary(proto::message(&self.msg)))
                    .clone(),
            )),
            Encoding::Raw { echo } => {
                if !echo && self.msg.origin_conn.as_deref() == Some(conn) {
                    return None;
                }
                let data = &self.msg.data;
                Some(Item::Shared(
                    self.raw
                        .get_or_insert_with(|| match data {
                            Payload::Text(t) => Shared::text(t.as_str().into()),
                            Payload::Binary(b) => Shared::binary(b.clone()),
                            Payload::Json(v) => Shared::text(v.to_string().into()),
                        })
                        .clone(),
                ))
            }
        }
    }
}

/// Whether `slot` still needs `msg` (raising its position if so): stored messages are
/// de-duplicated by position; ephemeral ones always pass.
fn fresh(slot: &mut Slot, msg: &RoomMessage) -> bool {
    let seq = msg.seq;
    if seq != 0 {
        if msg.epoch != slot.epoch {
            slot.epoch.clone_from(&msg.epoch);
            slot.last_seq = 0;
        }
        if seq <= slot.last_seq {
            return false; // already delivered (resume overlap): de-duplicated by position
        }
        slot.last_seq = seq;
    }
    true
}

fn deliver(slot: &mut Slot, conn: &str, enc: &mut Encoded) {
    if !fresh(slot, &enc.msg) {
        return;
    }
    if let Some(item) = enc.item(slot.encoding, conn)
        && slot.outbox.push(item)
    {
        crate::metrics::metrics().room_deliveries.inc();
    }
}

/// Fan one message out to every member of the room on this pod.
fn fan_out(room: &LocalRoom, key: &RoomKey, msg: RoomMessage) {
    let mut enc = Encoded::new(msg);
    let mut members = room.members.lock().unwrap_or_else(|p| p.into_inner());
    // One span per message and pod (a disabled callsite when not exporting), never one per
    // delivery.
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "rooms.fanout",
        namespace = %key.namespace,
        members = members.len(),
    );
    span.in_scope(|| {
        for (conn, slot) in members.iter_mut() {
            match &mut slot.syncing {
                Some(buf) => buf.push(Pending::Message(enc.msg.clone())),
                None => deliver(slot, conn, &mut enc),
            }
        }
    });
}

/// The `batch` item of `msgs` for one encoding (JSON: the SSE cursor moves to its last stored
/// message).
fn batch_item(key: &RoomKey, msgs: &[RoomMessage], cfg: &BatchCfg, encoding: Encoding) -> Item {
    let json = protocol::batch(
        &key.room,
        &super::batch::groups(msgs, cfg.group_by.as_deref()),
    );
    if encoding == Encoding::Proto {
        return Item::Shared(Shared::binary(proto::transcode(&json).unwrap_or_default()));
    }
    let last = msgs.iter().rev().find(|m| m.seq != 0);
    let json: Arc<str> = json.into();
    Item::Message(Arc::new(Posted {
        frames: Shared::text(json.clone()),
        room: key.room.clone(),
        seq: last.map_or(0, |m| m.seq),
        epoch: last
            .or(msgs.first())
            .map_or_else(String::new, |m| m.epoch.clone()),
        json,
    }))
}

/// Fan a batch out to every member of the room on this pod: one `batch` event each, built
/// once per encoding (a member that already has some of the messages, after a resume, gets
/// its own batch of the rest; raw members get them one by one).
fn fan_out_batch(room: &LocalRoom, key: &RoomKey, msgs: Vec<RoomMessage>, cfg: &BatchCfg) {
    if msgs.is_empty() {
        return;
    }
    let metrics = crate::metrics::metrics();
    metrics.room_batches.inc();
    metrics.room_batched_messages.inc_by(msgs.len() as u64);
    let mut shared: HashMap<bool, Item> = HashMap::new();
    let mut members = room.members.lock().unwrap_or_else(|p| p.into_inner());
    for (conn, slot) in members.iter_mut() {
        if let Some(buf) = &mut slot.syncing {
            buf.extend(msgs.iter().cloned().map(Pending::Message));
            continue;
        }
        if let Encoding::Raw { .. } = slot.encoding {
            for m in &msgs {
                deliver(slot, conn, &mut Encoded::new(m.clone()));
            }
            continue;
        }
        let proto = slot.encoding == Encoding::Proto;
        let keep: Vec<bool> = msgs.iter().map(|m| fresh(slot, m)).collect();
        let item = if keep.iter().all(|k| *k) {
            shared
                .entry(proto)
                .or_insert_with(|| batch_item(key, &msgs, cfg, slot.encoding))
                .clone()
        } else {
            let rest: Vec<RoomMessage> = msgs
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(m, _)| m.clone())
                .collect();
            if rest.is_empty() {
                continue;
            }
            batch_item(key, &rest, cfg, slot.encoding)
        };
        if slot.outbox.push(item) {
            metrics.room_deliveries.inc();
        }
    }
}

/// Test seam (debug builds only): while the file named by `SWITCHBOARD_TEST_FANOUT_GATE`
/// exists, every room's fan-out on this pod waits before the next message, as in a process
/// starved of CPU, so tests can make room queues overflow on purpose.
fn fanout_gate_path() -> Option<&'static PathBuf> {
    if !cfg!(debug_assertions) {
        return None;
    }
    static GATE: OnceLock<Option<PathBuf>> = OnceLock::new();
    GATE.get_or_init(|| std::env::var_os("SWITCHBOARD_TEST_FANOUT_GATE").map(PathBuf::from))
        .as_ref()
}

/// Whether the test seam is set (fan-out then always runs in a task, which it can hold back).
fn fanout_gated() -> bool {
    fanout_gate_path().is_some()
}

async fn fanout_gate() {
    if let Some(path) = fanout_gate_path() {
        while path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Give a map's memory back once it holds under a quarter of what it has room for (maps never
/// shrink on their own), all of it once it is empty. Amortised: the next shrink needs half of
/// what is left to go first.
fn shrink_if_sparse<T: Eq + Hash>(set: &mut HashSet<T>) {
    if set.len() * 4 < set.capacity() {
        set.shrink_to(set.len() * 2);
    }
}

/// A local room in the hub's set, found by its key: the room holds the one copy of the key,
/// and a spare slot of the set costs a pointer.
#[derive(Clone)]
struct Entry(Arc<LocalRoom>);

impl std::borrow::Borrow<RoomKey> for Entry {
    fn borrow(&self) -> &RoomKey {
        &self.0.key
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl std::ops::Deref for Entry {
    type Target = LocalRoom;
    fn deref(&self) -> &LocalRoom {
        &self.0
    }
}

/// The hub.
pub struct Hub {
    bus: Arc<dyn Bus>,
    /// Read receipts (delivered to this pod's members through the hub).
    receipts: Arc<Receipts>,
    /// Open local rooms. Never held across an await.
    rooms: Mutex<HashSet<Entry>>,
    /// Rooms being opened (subscribed): their joiners queue on the room's gate, which holds
    /// the error of a subscription that failed for the joiners that waited for it.
    opening: Mutex<HashMap<RoomKey, Gate>>,
    present: Mutex<HashMap<(RoomKey, String), Member>>,
    /// Held by the refresh while it writes one member's entry (the member checked present
    /// under it), and by a leave while it drops its member from `present` (the withdraw
    /// follows): a refresh write that read the member before it left reaches the
    /// bus before the withdraw, never after it (where it would put the entry back and announce
    /// the member joining again).
    refresh_gate: tokio::sync::Mutex<()>,
}

impl Hub {
    pub fn new(bus: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new_cyclic(|hub: &Weak<Hub>| Self {
            receipts: Receipts::new(bus.clone(), hub.clone()),
            bus,
            rooms: Mutex::default(),
            opening: Mutex::default(),
            present: Mutex::default(),
            refresh_gate: tokio::sync::Mutex::default(),
        })
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// The pod's read receipts service.
    pub fn receipts(&self) -> &Arc<Receipts> {
        &self.receipts
    }

    /// The position this pod has given member `conn` of `key`: its join's start, raised by
    /// every message delivered to it since. Any position at or before it is one the member
    /// was shown. No I/O.
    pub async fn given(&self, key: &RoomKey, conn: &str) -> Option<Position> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms.get(key)?;
        let members = room.members.lock().unwrap_or_else(|p| p.into_inner());
        members.get(conn).map(|slot| Position {
            seq: slot.last_seq,
            epoch: slot.epoch.clone(),
        })
    }

    /// The local room for `key` with `slot` added, created (and subscribed) if needed. The
    /// member is added under the map lock, so a concurrent last-member leave cannot drop the
    /// room under a joiner. The subscription (a bus round trip, up to the bus's bound when it
    /// does not answer) is made under the room's own opening gate, not the map lock: joiners
    /// of that room wait for it and share it (or its error), everyone else goes on.
    async fn enter(
        self: &Arc<Self>,
        key: &RoomKey,
        conn: &str,
        slot: Slot,
        batch: Option<BatchCfg>,
    ) -> Result<Arc<LocalRoom>, BusError> {
        let mut slot = Some(slot);
        if let Some(room) = self.join_open(key, conn, &mut slot) {
            return Ok(room);
        }
        let opening = Opening::take(self, key);
        let mut gate = opening.gate.clone().lock_owned().await;
        // Opened by the joiner this one waited for? Or failed to open: then its error is this
        // one's too (not another wait of up to the bus's bound for each joiner in turn).
        if let Some(room) = self.join_open(key, conn, &mut slot) {
            return Ok(room);
        }
        if let Some(e) = &*gate {
            return Err(e.clone());
        }
        let sub = match self.bus.subscribe(key).await {
            Ok(sub) => sub,
            Err(e) => {
                // For the joiners waiting now; one that comes later tries afresh.
                *gate = Some(e.clone());
                opening.forget();
                return Err(e);
            }
        };
        let mut members = Members::default();
        if let Some(slot) = slot {
            members.insert(conn, slot);
        }
        let room = LocalRoom::open(key.clone(), self.bus.clone(), sub, members, batch);
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.insert(Entry(room.clone()));
        crate::metrics::metrics()
            .rooms_local
            .set(rooms.len() as i64);
        Ok(room)
    }

    /// Add `slot` to `key`'s local room if it is open (the slot is taken then).
    fn join_open(
        &self,
        key: &RoomKey,
        conn: &str,
        slot: &mut Option<Slot>,
    ) -> Option<Arc<LocalRoom>> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms.get(key)?;
        if let Some(slot) = slot.take() {
            room.members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(conn, slot);
        }
        Some(room.0.clone())
    }

    /// Join `key`. With `since`, the exact gap is queued first (or `recovered: false` when it
    /// is gone); then live messages follow without loss or duplicates. `reply` queues a
    /// `joined` message (with the client's id) before any message of the room.
    ///
    /// Traced as the `rooms.join` span (namespace, resumed, recovered; not the room name).
    pub async fn join(
        self: &Arc<Self>,
        key: &RoomKey,
        j: &Joiner,
        since: Option<&Position>,
        reply: Option<Option<&str>>,
    ) -> Result<Joined, BusError> {
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "rooms.join",
            namespace = %key.namespace,
            resumed = since.is_some(),
            recovered = tracing::field::Empty,
            result = tracing::field::Empty,
        );
        let joined = self
            .join_untraced(key, j, since, reply)
            .instrument(span.clone())
            .await;
        match &joined {
            Ok(j) => {
                span.record("recovered", j.recovered);
                span.record("result", "ok");
            }
            Err(_) => {
                span.record("result", "error");
            }
        }
        joined
    }

    async fn join_untraced(
        self: &Arc<Self>,
        key: &RoomKey,
        j: &Joiner,
        since: Option<&Position>,
        reply: Option<Option<&str>>,
    ) -> Result<Joined, BusError> {
        let slot = Slot {
            outbox: j.outbox.clone(),
            encoding: j.encoding,
            presence_events: j.presence_events,
            fit: j.gap.pack(),
            syncing: Some(Vec::new()),
            last_seq: 0,
            epoch: String::new(),
        };
        let batch = j.batch.as_ref().and_then(|r| r.for_room(&key.room));
        let room = self.enter(key, &j.conn, slot, batch).await?;
        let budget = match j.gap {
            GapFit::Whole => j.outbox.max_bytes().saturating_sub(j.outbox.queued_bytes()),
            GapFit::Fit { .. } => backlog_budget(&j.outbox),
        };
        let mut window = Window::new(j, budget);
        let mut synced = match self.sync(key, since, &mut window).await {
            Ok(v) => v,
            Err(e) => {
                self.leave_room(key, &j.conn).await;
                return Err(e);
            }
        };
        // Measured again: the member's other rooms may have queued live messages meanwhile.
        let (gap, stopped) = window.finish(&mut synced, backlog_budget(&j.outbox));
        if let Some(id) = reply {
            j.outbox.push(Item::Reply(protocol::joined(
                &key.room,
                synced.recovered,
                &synced.position,
                j.read.as_ref(),
                id,
            )));
        }
        {
            let mut members = room.members.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = members.get_mut(&j.conn) {
                // Deliver from the start (the replayed messages raise it as they go); live
                // messages that were buffered meanwhile follow, de-duplicated by position.
                slot.last_seq = synced.start.seq;
                slot.epoch.clone_from(&synced.start.epoch);
                for mut enc in gap {
                    deliver(slot, &j.conn, &mut enc);
                }
                let buffered = slot.syncing.take().unwrap_or_default();
                if stopped {
                    // The gap's read stopped at what the queue could take: nothing after it
                    // may be queued (the next poll goes on from the last message taken).
                    slot.outbox.refuse_more();
                }
                for pending in buffered {
                    match pending {
                        Pending::Message(msg) => deliver(slot, &j.conn, &mut Encoded::new(msg)),
                        Pending::Lost(lost) => tell_lost(slot, &key.room, &lost),
                    }
                }
            }
        }
        if let Some(m) = &j.presence {
            self.present
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((key.clone(), j.conn.clone()), m.clone());
            if let Err(e) = self.bus.presence_set(key, m, true).await {
                tracing::warn!(room = %key.room, error = %e, "presence announce failed; retried by the refresh loop");
            }
        }
        Ok(Joined {
            recovered: synced.recovered,
            position: synced.position,
            start: synced.start,
        })
    }

    /// Publish into a room through the bus, traced as the `rooms.publish` span. `source` says
    /// who published: `ws` (room protocol), `raw` (raw relay frame) or `api` (publish API).
    pub async fn publish(
        &self,
        p: Publish,
        source: &'static str,
    ) -> Result<Option<Position>, BusError> {
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "rooms.publish",
            namespace = %p.key.namespace,
            source,
            ephemeral = p.ephemeral,
            result = tracing::field::Empty,
        );
        let result = self.bus.publish(p).instrument(span.clone()).await;
        span.record("result", if result.is_ok() { "ok" } else { "error" });
        result
    }

    /// Replay (when resuming) and the position live delivery continues from. A `since` from
    /// another epoch gets what the current epoch retains, from its oldest message, flagged
    /// `recovered: false` (the history the client saw is gone; what came after is not).
    ///
    /// What is queued with the join is what `window` keeps as the bus reads it (a cut window
    /// makes the resume `recovered: false` from where it starts: [`Window::finish`]).
    async fn sync(
        &self,
        key: &RoomKey,
        since: Option<&Position>,
        window: &mut Window<'_>,
    ) -> Result<Synced, BusError> {
        let Some(since) = since else {
            return Ok(Synced::at(self.bus.position(key).await?));
        };
        match self.bus.replay_into(key, since, window).await? {
            Replayed::Gap => {
                let position = window.last().map_or(since.clone(), |seq| Position {
                    seq,
                    epoch: since.epoch.clone(),
                });
                Ok(Synced {
                    recovered: true,
                    position,
                    start: since.clone(),
                })
            }
            Replayed::Lost => {
                window.reset();
                let now = self.bus.position(key).await?;
                if now.epoch == since.epoch {
                    return Ok(Synced::at(now)); // gone from this epoch's history: reload
                }
                let now = self.bus.retained_into(key, window).await?;
                let Some(first) = window.first() else {
                    return Ok(Synced::at(now));
                };
                // `position` as for any `recovered: false`: what follows comes after it (a
                // client that sets its position from it keeps the retained messages).
                let start = Position {
                    seq: first.seq.saturating_sub(1),
                    epoch: first.epoch.clone(),
                };
                Ok(Synced {
                    recovered: false,
                    position: start.clone(),
                    start,
                })
            }
        }
    }

    async fn leave_room(self: &Arc<Self>, key: &RoomKey, conn: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.get(key) {
            let empty = {
                let mut members = room.members.lock().unwrap_or_else(|p| p.into_inner());
                members.remove(conn);
                members.is_empty()
            };
            if empty {
                rooms.remove(key); // drops the subscription with the last local member
                shrink_if_sparse(&mut rooms);
                crate::metrics::metrics()
                    .rooms_local
                    .set(rooms.len() as i64);
            }
        }
    }

    /// Leave `key` (and withdraw presence).
    pub async fn leave(self: &Arc<Self>, key: &RoomKey, conn: &str) {
        self.leave_room(key, conn).await;
        let id = (key.clone(), conn.to_string());
        let announced = || {
            self.present
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id)
        };
        if !announced() {
            return;
        }
        // Under the gate: a refresh write of this member under way lands first (see
        // `refresh_gate`), and the member stays in `present` until the gate is passed, so a
        // leave cancelled while it waits is still there for the retry to withdraw.
        let gate = self.refresh_gate.lock().await;
        let member = {
            let mut present = self.present.lock().unwrap_or_else(|p| p.into_inner());
            let m = present.remove(&id);
            let len = present.len();
            if len * 4 < present.capacity() {
                present.shrink_to(len * 2);
            }
            m
        };
        drop(gate);
        if let Some(m) = member {
            let _ = self.bus.presence_set(key, &m, false).await;
        }
    }

    #[cfg(test)]
    fn opening_rooms(&self) -> usize {
        self.opening.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Rooms with local members (metrics).
    pub async fn room_count(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Re-announce every present member (presence entries expire on a TTL in the cluster).
    /// One write at a time, each of a member still present when it starts, under the
    /// `refresh_gate`: a member that left since the list was taken is not written (its
    /// withdraw is done or waits for the gate), and one that leaves during its write is
    /// withdrawn after it.
    pub async fn refresh_presence(&self) {
        let present: Vec<_> = self
            .present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in present {
            let _gate = self.refresh_gate.lock().await;
            let member = self
                .present
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned();
            if let Some(m) = member {
                let _ = self.bus.presence_set(&id.0, &m, true).await;
            }
        }
    }

    /// Repair the presence view of every room watched on this pod from a cluster listing
    /// (see [`PresenceView`]): members whose entries expired without a `leave` (their pod
    /// crashed) get one, joins lost on the bus get theirs. One listing per watched room, one at
    /// a time; a room that empties meanwhile is skipped (only weak references are held).
    pub async fn sweep_presence(&self) {
        let watched: Vec<(RoomKey, Weak<LocalRoom>)> = self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|room| room.watches_presence())
            .map(|room| (room.key.clone(), Arc::downgrade(&room.0)))
            .collect();
        for (key, room) in watched {
            let listed = self.bus.presence_list(&key).await;
            let Some(room) = room.upgrade() else { continue };
            let mut view = room.presence.lock().unwrap_or_else(|p| p.into_inner());
            let view = view.get_or_insert_with(Box::default);
            let Ok(listed) = listed else {
                // The bus is down: nothing is concluded across the gap.
                view.on_listing_failed();
                continue;
            };
            for (joined, member) in view.on_listing(listed) {
                tracing::debug!(room = %key.room, conn = %member.conn, joined, "presence repaired from the listing");
                room.announce(&key.room, joined, &member);
            }
        }
    }

    /// Every `period` until `shutdown`: refresh this pod's presence entries, and (on a cadence
    /// of its own, so slow listings never delay a refresh past the TTL) sweep the watched rooms.
    pub async fn run_presence(
        &self,
        period: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let refresh = async {
            loop {
                tokio::time::sleep(period).await;
                crate::metrics::metrics()
                    .bus_up
                    .set(i64::from(self.bus.healthy()));
                self.refresh_presence().await;
            }
        };
        let sweep = async {
            loop {
                tokio::time::sleep(period).await;
                self.sweep_presence().await;
            }
        };
        tokio::select! {
            _ = async { tokio::join!(refresh, sweep) } => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// A joiner's hold on a room's opening gate; the gate (and a failure it holds) leaves the map
/// with its last holder, also when the join is cancelled while it waits or subscribes: a
/// joiner that comes after it tries afresh.
struct Opening<'h> {
    hub: &'h Hub,
    key: &'h RoomKey,
    gate: Gate,
}

/// A room's opening gate (see [`Hub::enter`]).
type Gate = Arc<tokio::sync::Mutex<Option<BusError>>>;

impl<'h> Opening<'h> {
    fn take(hub: &'h Hub, key: &'h RoomKey) -> Self {
        let gate = hub
            .opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        Opening { hub, key, gate }
    }
}

impl Opening<'_> {
    /// Take the gate out of the map if it is still this one's: joiners that come after this
    /// get a gate of their own.
    fn forget(&self) {
        self.remove_if(|_| true);
    }

    fn remove_if(&self, last: impl Fn(&Gate) -> bool) {
        let mut opening = self.hub.opening.lock().unwrap_or_else(|p| p.into_inner());
        if opening
            .get(self.key)
            .is_some_and(|g| Arc::ptr_eq(g, &self.gate) && last(g))
        {
            opening.remove(self.key);
            if opening.is_empty() {
                opening.shrink_to_fit();
            }
        }
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        // The map's and this one's: no other joiner holds or waits for the gate. Clones are
        // taken under the map's lock, so the count cannot rise meanwhile.
        self.remove_if(|g| Arc::strong_count(g) == 2);
    }
}

#[async_trait::async_trait]
impl receipts::Members for Hub {
    async fn tell(&self, key: &RoomKey, json: &str) {
        let room = self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(room) = room {
            room.tell(json);
        }
    }
}

mod gap;
mod members;
mod repair;

#[cfg(test)]
mod gap_tests;
#[cfg(test)]
mod held_bus;
#[cfg(test)]
mod opening_tests;
#[cfg(test)]
mod refresh_tests;
#[cfg(test)]
mod tests;
