//! The embedded bus: one process, rooms fanned out in memory, history in a bounded ring per
//! room. The epoch is fixed for the life of the process (a restart loses history, so clients
//! resuming across it get `recovered: false`, then what the new process retains).
//!
//! A room costs memory only while it has a subscriber (a pod-local member), a presence member
//! or a retained message; then it is freed. Positions are therefore per *namespace* (like the
//! NATS bus's stream sequences): they increase with every stored message of the namespace, so a
//! room freed and created again never reuses one, and resume stays exact without remembering
//! freed rooms: a gap is complete when the room's oldest retained message is right after the
//! client's position, or when nothing of the room after that position was ever removed (its own
//! trims, and the watermark of freed rooms of its bucket of room names, are at or before it).
//!
//! A namespace's history is bounded three ways: `maxMessages` per room, `maxAge`, and
//! `maxBytes` for all its rooms together (what each message costs in memory, [`cost`]), so a
//! client publishing into ever new rooms holds at most that much. Beyond `maxBytes` the
//! namespace's oldest messages go first, whichever room holds them, as JetStream's discard-old
//! does; a resume that needed them is told `lost`. Expired history is freed by [`Bus::maintain`]
//! (called every second) without waiting for the next publish, at most [`SWEEP_BUDGET`]
//! messages per call, oldest first.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use super::feed::{FeedSender, Wake, room_queue};
use super::{
    Bus, BusError, Member, Payload, Position, PresenceEvent, Publish, Replayed, Retention, RoomKey,
    RoomMessage, Sink, Subscription,
};

/// Most expired messages one [`Bus::maintain`] call frees.
pub const SWEEP_BUDGET: usize = 10_000;

/// A retained message and what it is charged against its namespace's `maxBytes`.
struct Stored {
    msg: RoomMessage,
    cost: u64,
}

/// What a published message costs in memory once retained, an estimate near enough to bound
/// it (computed before the bus's lock is taken): the message, its room's share of a room
/// entry (so rooms of one tiny message are bounded too: the room, its map slot and the two
/// further copies of its key, in the rooms map and the oldest-first index), the strings it
/// holds, and its payload as held (a JSON tree costs more than its text: `[0,0,...]` is 2 bytes
/// an element as text, a node each in memory).
pub fn cost(p: &Publish, epoch: &str) -> u64 {
    /// The room entry, its map slot, the index entry and the history's first slots, beyond
    /// the key's text (measured: a room of one tiny message holds ~1.6 KiB of RSS).
    const ROOM_SHARE: u64 = 1280;
    let payload = match &p.data {
        Payload::Json(v) => json_cost(v),
        Payload::Binary(b) => b.len() as u64,
        Payload::Text(t) => t.capacity() as u64,
    };
    let key = (p.key.namespace.capacity() + p.key.room.capacity()) as u64;
    std::mem::size_of::<Stored>() as u64
        + ROOM_SHARE
        + 3 * key
        + epoch.len() as u64
        + p.origin_conn.as_ref().map_or(0, |c| c.capacity() as u64)
        + p.from.as_ref().map_or(0, json_cost)
        + payload
}

/// What the embedded bus holds of a namespace's history at most.
fn held_bound(r: &Retention) -> u64 {
    r.max_bytes
        .unwrap_or(switchboard_config::DEFAULT_HISTORY_BYTES)
}

/// A JSON tree's heap cost (serde_json parses at most 128 levels deep).
fn json_cost(v: &serde_json::Value) -> u64 {
    use serde_json::Value;
    const NODE: u64 = std::mem::size_of::<Value>() as u64;
    /// A map entry's key and its share of the map's B-tree nodes (about half full).
    const ENTRY: u64 = 2 * (std::mem::size_of::<String>() + std::mem::size_of::<Value>()) as u64;
    NODE + match v {
        Value::String(t) => t.capacity() as u64,
        Value::Array(a) => {
            a.iter().map(json_cost).sum::<u64>() + (a.capacity() - a.len()) as u64 * NODE
        }
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| ENTRY + k.capacity() as u64 + json_cost(v))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// What one namespace's history holds.
#[derive(Default)]
struct Held {
    /// The [`cost`] of every retained message of the namespace.
    bytes: u64,
    /// Each room with history under the position of its oldest message: the namespace's
    /// oldest messages in order (positions grow with time), for `maxBytes` and `maxAge`.
    oldest: BTreeMap<u64, RoomKey>,
}

#[derive(Default)]
struct Room {
    history: VecDeque<Stored>,
    /// Highest position of this room removed from (or never put in) its history.
    trimmed: u64,
    /// One feed per subscription (the hub subscribes once per room), messages and presence.
    subscribers: Vec<(u64, FeedSender)>,
    members: HashMap<String, Member>,
    /// The namespace's last position when this incarnation of the room was created: every
    /// message of an earlier (freed) incarnation is at or before it.
    born: u64,
}

impl Room {
    fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.members.is_empty() && self.history.is_empty()
    }

    /// Retain `msg`, charged `cost` ([`cost`]) to its namespace.
    fn keep(&mut self, msg: RoomMessage, cost: u64, held: &mut Held) {
        if self.history.is_empty() {
            held.oldest.insert(msg.seq, msg.key.clone());
        }
        held.bytes += cost;
        self.history.push_back(Stored { msg, cost });
    }

    /// Drop the oldest retained message, remembering its position as removed; false if none.
    fn drop_oldest(&mut self, held: &mut Held) -> bool {
        let Some(gone) = self.history.pop_front() else {
            return false;
        };
        self.trimmed = self.trimmed.max(gone.msg.seq);
        held.bytes = held.bytes.saturating_sub(gone.cost);
        held.oldest.remove(&gone.msg.seq);
        if let Some(next) = self.history.front() {
            held.oldest.insert(next.msg.seq, gone.msg.key);
        }
        // Its slots are charged only while they hold messages: give most of them back once
        // the room holds far fewer than it did.
        if self.history.len() * 4 < self.history.capacity() {
            self.history.shrink_to(self.history.len() * 2);
        }
        true
    }

    /// Drop what the room's own bounds no longer keep (`maxMessages`, `maxAge`).
    fn trim(&mut self, r: &Retention, now: u64, held: &mut Held) {
        let oldest = now.saturating_sub(r.max_age.as_millis() as u64);
        while self.history.len() > r.max_messages as usize
            || self.history.front().is_some_and(|m| m.msg.ts_ms < oldest)
        {
            if !self.drop_oldest(held) {
                break;
            }
        }
    }
}

/// Buckets of [`Positions::freed`]: rooms hashed into this many watermarks, so a room freed
/// with losses makes only the rooms of its bucket (1 in 4096) resume as `lost`, not every
/// quiet room of the namespace (once history is at its `maxBytes`, rooms are freed all the
/// time). 32 KiB per namespace that ever freed a room with losses.
const FREED_BUCKETS: usize = 4096;

/// Positions of one namespace.
#[derive(Default, Clone)]
struct Positions {
    /// The last position assigned.
    seq: u64,
    /// Per bucket of room names (a process-random hash), the highest `trimmed` of any room
    /// freed in this namespace: no freed room of the bucket lost a message after it. Empty
    /// until a room is freed with losses.
    freed: Vec<u64>,
}

impl Positions {
    /// No freed incarnation of `room` lost a message after this position.
    fn freed_for(&self, hasher: &RandomState, room: &str) -> u64 {
        self.freed.get(bucket(hasher, room)).copied().unwrap_or(0)
    }

    /// `room` was freed (or a message of it dropped unseen) having lost messages up to `seq`.
    fn note_freed(&mut self, hasher: &RandomState, room: &str, seq: u64) {
        if seq == 0 {
            return;
        }
        if self.freed.is_empty() {
            self.freed = vec![0; FREED_BUCKETS];
        }
        let b = bucket(hasher, room);
        self.freed[b] = self.freed[b].max(seq);
    }
}

fn bucket(hasher: &RandomState, room: &str) -> usize {
    (hasher.hash_one(room) % FREED_BUCKETS as u64) as usize
}

#[derive(Default)]
struct State {
    /// Boxed: the map keeps spare slots (up to about twice the rooms), and a spare slot should
    /// cost a pointer, not a room.
    rooms: HashMap<RoomKey, Box<Room>>,
    positions: HashMap<String, Positions>,
    /// Each namespace's retained history.
    held: HashMap<String, Held>,
    next_sub: u64,
    /// Which namespace the next sweep starts with.
    sweep_turn: usize,
    /// Room names to [`Positions::freed`] buckets.
    buckets: RandomState,
}

/// The room, created if needed; a new room is born at `born` (see [`Room::born`]).
fn room_in<'a>(
    rooms: &'a mut HashMap<RoomKey, Box<Room>>,
    key: &RoomKey,
    born: u64,
) -> &'a mut Room {
    rooms.entry(key.clone()).or_insert_with(|| {
        Box::new(Room {
            born,
            ..Room::default()
        })
    })
}

impl State {
    /// The room, created if needed; a new room is born at `born` (see [`Room::born`]).
    fn room_mut(&mut self, key: &RoomKey, born: u64) -> &mut Room {
        room_in(&mut self.rooms, key, born)
    }

    /// Drop the namespace's oldest messages, whichever rooms hold them, until what it holds
    /// fits in `max_bytes` (or, with `None`, all of them); with `expired_before`, only
    /// messages older than that (ms since the Unix epoch). At most `budget` messages; returns
    /// how many went. Rooms left with nothing are freed.
    fn shed(
        &mut self,
        namespace: &str,
        max_bytes: Option<u64>,
        expired_before: Option<u64>,
        budget: usize,
    ) -> usize {
        let mut dropped = 0;
        while dropped < budget {
            let Some(held) = self.held.get_mut(namespace) else {
                break;
            };
            if max_bytes.is_some_and(|max| held.bytes <= max) {
                break;
            }
            let Some(key) = held.oldest.first_key_value().map(|(_, k)| k.clone()) else {
                break;
            };
            let Some(room) = self.rooms.get_mut(&key) else {
                // Not reached: a room with history is never freed.
                held.oldest.pop_first();
                continue;
            };
            if let Some(before) = expired_before
                && room.history.front().is_none_or(|m| m.msg.ts_ms >= before)
            {
                break;
            }
            room.drop_oldest(held);
            dropped += 1;
            self.free_if_idle(&key);
        }
        dropped
    }

    /// Set the history gauge (few namespaces: a sum is cheap).
    fn count_held(&self) {
        crate::metrics::metrics()
            .bus_history_bytes
            .set(self.held.values().map(|h| h.bytes).sum::<u64>() as i64);
    }

    /// The namespace's last position.
    fn last_position(&self, namespace: &str) -> u64 {
        self.positions.get(namespace).map_or(0, |p| p.seq)
    }

    /// Free the room if nothing holds it any more (its removals go to the namespace watermark).
    fn free_if_idle(&mut self, key: &RoomKey) {
        if self.rooms.get(key).is_some_and(|r| r.is_idle())
            && let Some(room) = self.rooms.remove(key)
        {
            let p = self.positions.entry(key.namespace.clone()).or_default();
            p.note_freed(&self.buckets, &key.room, room.trimmed);
            shrink_if_sparse(&mut self.rooms);
        }
        crate::metrics::metrics()
            .bus_rooms
            .set(self.rooms.len() as i64);
    }
}

/// Give a map's memory back once it holds under a quarter of what it has room for (maps never
/// shrink on their own: a burst of rooms would stay paid for), all of it once it is empty.
/// Amortised: the next shrink needs half of what is left to go first.
fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// The in-process bus.
pub struct MemoryBus {
    epoch: String,
    state: Arc<Mutex<State>>,
    retention: Mutex<HashMap<String, Retention>>,
    /// Live queue depth of each subscription.
    queue: usize,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Held by a subscription: dropping it removes the subscriber (and frees an idle room).
struct Unsubscribe {
    state: Weak<Mutex<State>>,
    key: RoomKey,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let mut st = lock(&state);
        if let Some(room) = st.rooms.get_mut(&self.key) {
            room.subscribers.retain(|(id, _)| *id != self.id);
        }
        st.free_if_idle(&self.key);
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::with_queue(room_queue())
    }

    /// A bus whose subscriptions queue at most `queue` messages (tests overflow them).
    pub fn with_queue(queue: usize) -> Self {
        Self {
            epoch: format!("mem-{:x}", rand::random::<u64>()),
            state: Arc::default(),
            retention: Mutex::default(),
            queue,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn retention_of(&self, namespace: &str) -> Option<Retention> {
        self.retention
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .cloned()
    }

    /// Rooms held now (tests and the `switchboard_bus_rooms` gauge).
    pub fn room_count(&self) -> usize {
        self.state().rooms.len()
    }

    /// What the namespace's history costs now (tests).
    pub fn held_bytes(&self, namespace: &str) -> u64 {
        self.state().held.get(namespace).map_or(0, |h| h.bytes)
    }

    /// Expire history due at `now` (ms since the Unix epoch), oldest first, at most `budget`
    /// messages; rooms left with nothing are freed. Returns how many messages went.
    pub fn sweep(&self, now: u64, budget: usize) -> usize {
        let retention = self
            .retention
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut st = self.state();
        let mut namespaces: Vec<String> = st.held.keys().cloned().collect();
        // Each call starts one namespace further on, so a backlog in one never starves the rest.
        st.sweep_turn = st.sweep_turn.wrapping_add(1);
        let turn = st.sweep_turn % namespaces.len().max(1);
        namespaces.rotate_left(turn);
        let mut done = 0;
        for ns in namespaces {
            // A namespace that keeps no history any more drops all of it; one whose bound a
            // reload lowered comes down to it without waiting for its next publish.
            let (bound, before) = match retention.get(&ns) {
                Some(r) => (
                    Some(held_bound(r)),
                    Some(now.saturating_sub(r.max_age.as_millis() as u64)),
                ),
                None => (None, None),
            };
            if let Some(bound) = bound {
                done += st.shed(&ns, Some(bound), None, budget - done);
            }
            done += st.shed(&ns, None, before, budget.saturating_sub(done));
            if done >= budget {
                break;
            }
        }
        st.count_held();
        done
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn configure(
        &self,
        namespace: &str,
        retention: Option<Retention>,
    ) -> Result<(), BusError> {
        let mut map = self.retention.lock().unwrap_or_else(|p| p.into_inner());
        match retention {
            Some(r) => map.insert(namespace.to_string(), r),
            None => map.remove(namespace),
        };
        Ok(())
    }

    async fn publish(&self, p: Publish) -> Result<Option<Position>, BusError> {
        let retention = (!p.ephemeral)
            .then(|| self.retention_of(&p.key.namespace))
            .flatten();
        let now = now_ms();
        // Outside the lock: walking a JSON payload is the costly part.
        let cost = retention.as_ref().map_or(0, |_| cost(&p, &self.epoch));
        let mut guard = self.state();
        let st = &mut *guard;
        let seq = if p.ephemeral {
            0
        } else {
            let pos = st.positions.entry(p.key.namespace.clone()).or_default();
            pos.seq += 1;
            pos.seq
        };
        if retention.is_none() && !st.rooms.contains_key(&p.key) {
            // Nobody is listening and nothing is stored: no room is created (memory would
            // otherwise grow with every room name ever published to). A stored-kind message
            // nobody will ever get still counts as removed, so no resume skips it.
            if seq != 0 {
                let pos = st.positions.entry(p.key.namespace.clone()).or_default();
                pos.note_freed(&st.buckets, &p.key.room, seq);
            }
            return Ok(None);
        }
        // Born just before its first message (or at the current position for an ephemeral one).
        let born = if seq == 0 {
            st.last_position(&p.key.namespace)
        } else {
            seq - 1
        };
        if retention.is_some() && !st.held.contains_key(&p.key.namespace) {
            st.held.insert(p.key.namespace.clone(), Held::default());
        }
        let room = room_in(&mut st.rooms, &p.key, born);
        let msg = RoomMessage {
            key: p.key,
            seq,
            epoch: self.epoch.clone(),
            ts_ms: now,
            from: p.from,
            data: p.data,
            ephemeral: p.ephemeral,
            origin_conn: p.origin_conn,
        };
        match (&retention, st.held.get_mut(&msg.key.namespace)) {
            (Some(r), Some(held)) => {
                room.keep(msg.clone(), cost, held);
                room.trim(r, now, held);
            }
            (Some(_), None) => {} // inserted above
            (None, _) if seq != 0 => room.trimmed = room.trimmed.max(seq),
            (None, _) => {}
        }
        // Sent under the lock so every subscriber sees positions in order. A hub queue that
        // is full (the hub's fan-out never awaits, so this means the process is starved) makes
        // the feed lag: the hub repairs its members from history or tells them (`feed`).
        room.subscribers.retain(|(_, s)| !s.is_closed());
        let wakes: Vec<Wake> = room
            .subscribers
            .iter()
            .filter_map(|(_, s)| s.send_deferred(msg.clone()).ok())
            .collect();
        if let Some(r) = &retention {
            st.shed(&msg.key.namespace, Some(held_bound(r)), None, usize::MAX);
            st.count_held();
        }
        st.free_if_idle(&msg.key);
        drop(guard);
        // Outside the lock: a woken room may be freed, and its unsubscribe takes the lock.
        wakes.into_iter().for_each(Wake::wake);
        Ok((seq != 0).then(|| Position {
            seq,
            epoch: self.epoch.clone(),
        }))
    }

    async fn subscribe(&self, key: &RoomKey) -> Result<Subscription, BusError> {
        let mut st = self.state();
        st.next_sub += 1;
        let id = st.next_sub;
        // Live delivery starts after the namespace's last position: no message of this room
        // lies between the two, so a lag counted from it names exactly what the room missed.
        let last = st.positions.get(&key.namespace).map_or(0, |p| p.seq);
        let (tx, rx) = FeedSender::with_capacity(
            self.queue,
            Position {
                seq: last,
                epoch: self.epoch.clone(),
            },
        );
        let born = st.last_position(&key.namespace);
        let room = st.room_mut(key, born);
        if room.subscribers.capacity() == 0 {
            room.subscribers.reserve_exact(1); // the hub subscribes once per room
        }
        room.subscribers.push((id, tx));
        crate::metrics::metrics()
            .bus_rooms
            .set(st.rooms.len() as i64);
        Ok(Subscription {
            presence: rx.presence(),
            messages: rx,
            guard: Box::new(Unsubscribe {
                state: Arc::downgrade(&self.state),
                key: key.clone(),
                id,
            }),
        })
    }

    async fn replay_into(
        &self,
        key: &RoomKey,
        since: &Position,
        sink: &mut dyn Sink,
    ) -> Result<Replayed, BusError> {
        if since.epoch != self.epoch {
            return Ok(Replayed::Lost);
        }
        let retention = self.retention_of(&key.namespace);
        let mut st = self.state();
        let (last, freed_for) = st
            .positions
            .get(&key.namespace)
            .map_or((0, 0), |p| (p.seq, p.freed_for(&st.buckets, &key.room)));
        if since.seq > last {
            return Ok(Replayed::Lost); // not a position of this namespace
        }
        let st = &mut *st;
        let Some(room) = st.rooms.get_mut(key) else {
            // Nothing of the room is held: complete unless a freed incarnation lost messages
            // after `since`.
            return Ok(if freed_for <= since.seq {
                Replayed::Gap
            } else {
                Replayed::Lost
            });
        };
        if let Some(r) = &retention {
            room.trim(
                r,
                now_ms(),
                st.held.entry(key.namespace.clone()).or_default(),
            );
        }
        let oldest_follows = room
            .history
            .front()
            .is_some_and(|m| m.msg.seq <= since.seq.saturating_add(1));
        // A freed earlier incarnation of this room matters only if it may hold messages after
        // `since`; other rooms' losses never do.
        let freed = if room.born > since.seq { freed_for } else { 0 };
        let nothing_removed = room.trimmed.max(freed) <= since.seq;
        let replay = if oldest_follows || nothing_removed {
            // One message at a time into the sink, which keeps what it needs.
            for m in room.history.iter().filter(|m| m.msg.seq > since.seq) {
                if !sink.take(Cow::Borrowed(&m.msg)) {
                    break;
                }
            }
            Replayed::Gap
        } else {
            Replayed::Lost
        };
        // The trim may have left the room with nothing (its history expired, nobody in it).
        st.free_if_idle(key);
        st.count_held();
        Ok(replay)
    }

    async fn position(&self, key: &RoomKey) -> Result<Position, BusError> {
        // The namespace's last position, not the room's: no message of the room lies between
        // the two, and a recent position keeps a later resume exact.
        let seq = self
            .state()
            .positions
            .get(&key.namespace)
            .map_or(0, |p| p.seq);
        Ok(Position {
            seq,
            epoch: self.epoch.clone(),
        })
    }

    async fn retained_into(
        &self,
        key: &RoomKey,
        sink: &mut dyn Sink,
    ) -> Result<Position, BusError> {
        let retention = self.retention_of(&key.namespace);
        let mut st = self.state();
        // The namespace's last position (as `position` answers): nothing of the room lies after it.
        let position = Position {
            seq: st.positions.get(&key.namespace).map_or(0, |p| p.seq),
            epoch: self.epoch.clone(),
        };
        let st = &mut *st;
        let Some(room) = st.rooms.get_mut(key) else {
            return Ok(position);
        };
        if let Some(r) = &retention {
            room.trim(
                r,
                now_ms(),
                st.held.entry(key.namespace.clone()).or_default(),
            );
        }
        for m in &room.history {
            if !sink.take(Cow::Borrowed(&m.msg)) {
                break;
            }
        }
        // The trim may have left the room with nothing (its history expired, nobody in it).
        st.free_if_idle(key);
        st.count_held();
        Ok(position)
    }

    async fn presence_set(
        &self,
        key: &RoomKey,
        member: &Member,
        present: bool,
    ) -> Result<(), BusError> {
        let mut st = self.state();
        if !present && !st.rooms.contains_key(key) {
            return Ok(());
        }
        let born = st.last_position(&key.namespace);
        let room = st.room_mut(key, born);
        let changed = if present {
            room.members
                .insert(member.conn.clone(), member.clone())
                .is_none()
        } else {
            let removed = room.members.remove(&member.conn).is_some();
            shrink_if_sparse(&mut room.members);
            removed
        };
        let mut wakes = Vec::new();
        if changed {
            for (_, s) in &room.subscribers {
                wakes.extend(
                    s.send_presence_deferred(PresenceEvent {
                        key: key.clone(),
                        joined: present,
                        member: member.clone(),
                    })
                    .ok(),
                );
            }
        }
        st.free_if_idle(key);
        drop(st);
        // Outside the lock (see `publish`).
        wakes.into_iter().for_each(Wake::wake);
        Ok(())
    }

    async fn presence_list(&self, key: &RoomKey) -> Result<Vec<Member>, BusError> {
        let mut list: Vec<Member> = self
            .state()
            .rooms
            .get(key)
            .map(|r| r.members.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.conn.cmp(&b.conn));
        Ok(list)
    }

    /// Nothing outside this process can listen to the in-process bus, so it refuses rather
    /// than pretend to deliver. Validation keeps `rooms.notifyNats` off without `bus.nats`;
    /// this is reached only when a reload added `bus.nats` to a gateway that started without
    /// it (the bus is chosen at start).
    async fn notify(&self, _namespace: &str, _event: Bytes) -> Result<(), BusError> {
        Err(BusError::Other(
            "notifications over NATS need the NATS bus; this gateway started with the in-process bus (restart it to use bus.nats)".into(),
        ))
    }

    async fn maintain(&self) {
        self.sweep(now_ms(), SWEEP_BUDGET);
    }

    fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
