//! The pod's room hub: one bus subscription per room with local members (reference-counted by
//! membership), fan-out of each message (encoded once) to every member's outbox, join with
//! resume (exactly the gap, then live, de-duplicated by position), and presence.
//!
//! Delivery contract (docs/protocol.md, "Delivery guarantees"): when the room's feed lagged
//! (this pod fell behind), the hub repairs its members from history like a resume, or, where
//! history cannot cover the gap, queues each member a `lost` signal naming exactly what it
//! missed, before the next message. A resume from another epoch starts at the oldest message
//! the current epoch retains (`recovered: false`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument;

use super::bus::feed::{Delivery, Lag};
use super::bus::{Bus, BusError, Member, Payload, Position, Publish, Replay, RoomKey, RoomMessage};
use super::outbox::{Item, Outbox};
use super::presence::PresenceView;
use super::{proto, protocol};
use crate::engine::conn::Shared;

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

/// What the pod could not deliver of a room and history could not repair: the stored messages
/// `first..=last` of `epoch` (`last` 0: none) and `ephemeral` ones.
#[derive(Debug, Clone, PartialEq)]
struct Lost {
    first: u64,
    last: u64,
    epoch: String,
    ephemeral: u64,
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
    /// While a join is replaying history, live messages (and `lost` signals) wait here.
    syncing: Option<Vec<Pending>>,
    last_seq: u64,
    /// The stream epoch `last_seq` belongs to; a new epoch (stream recreated) restarts it.
    epoch: String,
}

struct LocalRoom {
    members: Mutex<HashMap<String, Slot>>,
    /// Who the members with presence events were told of (locked before `members`).
    presence: Mutex<PresenceView>,
    pump: Mutex<Option<JoinHandle<()>>>,
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

    fn watches_presence(&self) -> bool {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|s| s.presence_events)
    }
}

impl Drop for LocalRoom {
    fn drop(&mut self) {
        if let Some(h) = self.pump.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }
}

/// A message encoded once per encoding for all members of this pod.
struct Encoded {
    msg: RoomMessage,
    /// The JSON encoding and its WebSocket frames (one per compression setting in use).
    json: Option<(Arc<str>, Arc<Shared>)>,
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
                let (json, frames) = self
                    .json
                    .get_or_insert_with(|| {
                        let json: Arc<str> = protocol::message(&self.msg).into();
                        let frames = Shared::text(json.clone());
                        (json, frames)
                    })
                    .clone();
                Some(Item::Message {
                    room: self.msg.key.room.clone(),
                    seq: self.msg.seq,
                    epoch: self.msg.epoch.clone(),
                    json,
                    frames,
                })
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

fn deliver(slot: &mut Slot, conn: &str, enc: &mut Encoded) {
    let seq = enc.msg.seq;
    if seq != 0 {
        if enc.msg.epoch != slot.epoch {
            slot.epoch.clone_from(&enc.msg.epoch);
            slot.last_seq = 0;
        }
        if seq <= slot.last_seq {
            return; // already delivered (resume overlap): de-duplicated by position
        }
        slot.last_seq = seq;
    }
    if let Some(item) = enc.item(slot.encoding, conn)
        && slot.outbox.push(item)
    {
        crate::metrics::metrics().room_deliveries.inc();
    }
}

/// Tell a member what it missed of `lost` that it has not been given or told yet; it then
/// continues after it. Raw members cannot be told in-band: their writer closes them (4009).
fn tell_lost(slot: &mut Slot, room: &str, lost: &Lost) {
    let floor = if slot.epoch == lost.epoch {
        slot.last_seq
    } else {
        0
    };
    let from = lost.first.max(floor.saturating_add(1));
    let stored = (lost.last != 0 && from <= lost.last).then_some(from);
    if stored.is_none() && lost.ephemeral == 0 {
        return;
    }
    let at = |seq| Position {
        seq,
        epoch: lost.epoch.clone(),
    };
    let (from, to) = match stored {
        Some(from) => {
            slot.epoch.clone_from(&lost.epoch);
            slot.last_seq = lost.last;
            (Some(at(from)), Some(at(lost.last)))
        }
        None => (None, None),
    };
    let json = protocol::lost(room, from.as_ref().zip(to.as_ref()), lost.ephemeral);
    let (seq, epoch) = to.map_or((0, String::new()), |p| (p.seq, p.epoch));
    if slot.outbox.push(Item::Lost {
        room: room.to_string(),
        seq,
        epoch,
        json,
    }) {
        crate::metrics::metrics().room_lost.inc();
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

/// What to do about a lag: the `lost` to tell (possibly nothing), then the messages to fan
/// out. `gap`: the complete replay after `lag.after`, if history had it. Otherwise `retained`:
/// what history still holds of the room in the lag's epoch (a suffix of what was published:
/// both buses drop the oldest first), so everything dropped before its oldest message is lost
/// and the rest of the lag is repaired.
fn plan(
    lag: &Lag,
    gap: Option<Vec<RoomMessage>>,
    retained: Option<Vec<RoomMessage>>,
) -> (Lost, Vec<RoomMessage>) {
    let lost = |last: u64| Lost {
        first: if last == 0 { 0 } else { lag.first },
        last,
        epoch: lag.epoch.clone(),
        ephemeral: lag.ephemeral,
    };
    if let Some(gap) = gap {
        // Only the lag's own range, as below: later messages are still queued behind it.
        let gap = gap.into_iter().filter(|m| m.seq <= lag.last).collect();
        return (lost(0), gap);
    }
    let Some(retained) = retained else {
        return (lost(lag.last), Vec::new());
    };
    let oldest = retained.first().map_or(u64::MAX, |m| m.seq);
    let last_lost = if oldest <= lag.first {
        0
    } else {
        lag.last.min(oldest - 1)
    };
    // Only the lag's own range: what history holds after it is also in the queue (or in a
    // later lag), and delivering it now would make the queued messages before it look like
    // duplicates.
    let repair = retained
        .into_iter()
        .filter(|m| m.seq > lag.after.seq && m.seq <= lag.last)
        .collect();
    (lost(last_lost), repair)
}

/// The room's feed lagged: repair every member from history (a resume from where the feed
/// stopped, de-duplicated per member); what history no longer holds is told to each member
/// (`lost`) before the repaired messages. Either way before any later message of the feed,
/// which the pump handles only after this.
async fn repair(bus: &Arc<dyn Bus>, weak: &Weak<LocalRoom>, key: &RoomKey, lag: Lag) {
    let unreadable = |e: BusError| {
        tracing::warn!(namespace = %key.namespace, room = %key.room, error = %e, "cannot read history to repair a room queue overflow; members are told what they missed");
    };
    let (mut gap, mut retained) = (None, None);
    if lag.stored == 0 {
        gap = Some(Vec::new());
    } else {
        match bus.replay(key, &lag.after).await {
            Ok(Replay::Gap(msgs)) => gap = Some(msgs),
            Ok(Replay::Lost) => match bus.retained(key).await {
                Ok((msgs, now)) if now.epoch == lag.epoch => retained = Some(msgs),
                Ok(_) => {} // another epoch now: nothing of the lag's is left
                Err(e) => unreadable(e),
            },
            Err(e) => unreadable(e),
        }
    }
    let (lost, repaired) = plan(&lag, gap, retained);
    let Some(room) = weak.upgrade() else { return };
    let told = lost.last != 0 || lost.ephemeral != 0;
    if told {
        let mut members = room.members.lock().unwrap_or_else(|p| p.into_inner());
        for slot in members.values_mut() {
            match &mut slot.syncing {
                Some(buf) => buf.push(Pending::Lost(lost.clone())),
                None => tell_lost(slot, &key.room, &lost),
            }
        }
    }
    for msg in repaired {
        fan_out(&room, key, msg);
    }
    tracing::debug!(namespace = %key.namespace, room = %key.room, stored = lag.stored, ephemeral = lag.ephemeral, lost_to = lost.last, "room queue overflow handled");
    crate::metrics::metrics()
        .room_repairs
        .with_label_values(&[if told { "lost" } else { "repaired" }])
        .inc();
}

/// Test seam (debug builds only): while the file named by `SWITCHBOARD_TEST_FANOUT_GATE`
/// exists, every room's fan-out on this pod waits before the next message, as in a process
/// starved of CPU, so tests can make room queues overflow on purpose.
async fn fanout_gate() {
    if !cfg!(debug_assertions) {
        return;
    }
    static GATE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let gate =
        GATE.get_or_init(|| std::env::var_os("SWITCHBOARD_TEST_FANOUT_GATE").map(PathBuf::from));
    if let Some(path) = gate {
        while path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Where a join starts, and what it queues.
struct Synced {
    recovered: bool,
    position: Position,
    start: Position,
    gap: Vec<RoomMessage>,
}

impl Synced {
    /// Live messages after `position`, nothing before.
    fn at(position: Position) -> Self {
        Self {
            recovered: false,
            start: position.clone(),
            position,
            gap: Vec::new(),
        }
    }
}

/// The hub.
pub struct Hub {
    bus: Arc<dyn Bus>,
    rooms: tokio::sync::Mutex<HashMap<RoomKey, Arc<LocalRoom>>>,
    present: Mutex<HashMap<(RoomKey, String), Member>>,
}

impl Hub {
    pub fn new(bus: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(Self {
            bus,
            rooms: tokio::sync::Mutex::default(),
            present: Mutex::default(),
        })
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// The local room for `key` with `slot` added, created (and subscribed) if needed. Under
    /// the map lock, so a concurrent last-member leave cannot drop the room under a joiner.
    async fn enter(
        self: &Arc<Self>,
        key: &RoomKey,
        conn: &str,
        slot: Slot,
    ) -> Result<Arc<LocalRoom>, BusError> {
        let mut rooms = self.rooms.lock().await;
        if let Some(r) = rooms.get(key) {
            r.members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(conn.to_string(), slot);
            return Ok(r.clone());
        }
        let mut sub = self.bus.subscribe(key).await?;
        let room = Arc::new(LocalRoom {
            members: Mutex::default(),
            presence: Mutex::default(),
            pump: Mutex::new(None),
        });
        let weak = Arc::downgrade(&room);
        let key2 = key.clone();
        let bus = self.bus.clone();
        let pump = tokio::spawn(async move {
            let mut presence_open = true;
            loop {
                tokio::select! {
                    delivery = sub.messages.recv() => {
                        let Some(delivery) = delivery else { break };
                        fanout_gate().await;
                        match delivery {
                            Delivery::Message(msg) => {
                                let Some(room) = weak.upgrade() else { break };
                                fan_out(&room, &key2, msg);
                            }
                            Delivery::Lagged(lag) => repair(&bus, &weak, &key2, lag).await,
                        }
                    }
                    ev = sub.presence.recv(), if presence_open => {
                        let Some(ev) = ev else {
                            presence_open = false; // closed: stop polling it, keep relaying
                            continue;
                        };
                        let Some(room) = weak.upgrade() else { break };
                        let mut view = room.presence.lock().unwrap_or_else(|p| p.into_inner());
                        if view.on_event(ev.joined, &ev.member) {
                            room.announce(&key2.room, ev.joined, &ev.member);
                        }
                        drop(view);
                    }
                }
            }
            drop(sub.guard);
        });
        *room.pump.lock().unwrap_or_else(|p| p.into_inner()) = Some(pump);
        room.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn.to_string(), slot);
        rooms.insert(key.clone(), room.clone());
        crate::metrics::metrics()
            .rooms_local
            .set(rooms.len() as i64);
        Ok(room)
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
            syncing: Some(Vec::new()),
            last_seq: 0,
            epoch: String::new(),
        };
        let room = self.enter(key, &j.conn, slot).await?;
        let synced = match self.sync(key, since).await {
            Ok(v) => v,
            Err(e) => {
                self.leave_room(key, &j.conn).await;
                return Err(e);
            }
        };
        if let Some(id) = reply {
            j.outbox.push(Item::Reply(protocol::joined(
                &key.room,
                synced.recovered,
                &synced.position,
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
                for msg in synced.gap {
                    deliver(slot, &j.conn, &mut Encoded::new(msg));
                }
                for pending in slot.syncing.take().unwrap_or_default() {
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
    async fn sync(&self, key: &RoomKey, since: Option<&Position>) -> Result<Synced, BusError> {
        let Some(since) = since else {
            return Ok(Synced::at(self.bus.position(key).await?));
        };
        match self.bus.replay(key, since).await? {
            Replay::Gap(gap) => {
                let position = gap.last().map_or(since.clone(), |m| Position {
                    seq: m.seq,
                    epoch: since.epoch.clone(),
                });
                Ok(Synced {
                    recovered: true,
                    position,
                    start: since.clone(),
                    gap,
                })
            }
            Replay::Lost => {
                let now = self.bus.position(key).await?;
                if now.epoch == since.epoch {
                    return Ok(Synced::at(now)); // gone from this epoch's history: reload
                }
                let (retained, now) = self.bus.retained(key).await?;
                let at = |m: &RoomMessage, seq| Position {
                    seq,
                    epoch: m.epoch.clone(),
                };
                let Some(first) = retained.first() else {
                    return Ok(Synced::at(now));
                };
                // `position` as for any `recovered: false`: what follows comes after it (a
                // client that sets its position from it keeps the retained messages).
                let start = at(first, first.seq.saturating_sub(1));
                Ok(Synced {
                    recovered: false,
                    position: start.clone(),
                    start,
                    gap: retained,
                })
            }
        }
    }

    async fn leave_room(self: &Arc<Self>, key: &RoomKey, conn: &str) {
        let mut rooms = self.rooms.lock().await;
        if let Some(room) = rooms.get(key) {
            let empty = {
                let mut members = room.members.lock().unwrap_or_else(|p| p.into_inner());
                members.remove(conn);
                members.is_empty()
            };
            if empty {
                rooms.remove(key); // drops the subscription with the last local member
                crate::metrics::metrics()
                    .rooms_local
                    .set(rooms.len() as i64);
            }
        }
    }

    /// Leave `key` (and withdraw presence).
    pub async fn leave(self: &Arc<Self>, key: &RoomKey, conn: &str) {
        self.leave_room(key, conn).await;
        let member = self
            .present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(key.clone(), conn.to_string()));
        if let Some(m) = member {
            let _ = self.bus.presence_set(key, &m, false).await;
        }
    }

    /// Rooms with local members (metrics).
    pub async fn room_count(&self) -> usize {
        self.rooms.lock().await.len()
    }

    /// Re-announce every present member (presence entries expire on a TTL in the cluster).
    pub async fn refresh_presence(&self) {
        let present: Vec<_> = self
            .present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, m)| (k.0.clone(), m.clone()))
            .collect();
        for (key, m) in present {
            let _ = self.bus.presence_set(&key, &m, true).await;
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
            .await
            .iter()
            .filter(|(_, room)| room.watches_presence())
            .map(|(key, room)| (key.clone(), Arc::downgrade(room)))
            .collect();
        for (key, room) in watched {
            let listed = self.bus.presence_list(&key).await;
            let Some(room) = room.upgrade() else { continue };
            let mut view = room.presence.lock().unwrap_or_else(|p| p.into_inner());
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

#[cfg(test)]
mod tests;
