//! Read receipts and unread counts (docs/protocol.md, "Read receipts"): a member marks a room
//! read up to a position (`read`); the pod stores one read position per (room, user) — in the
//! bus's store (a NATS KV bucket) or, on the embedded bus, in this process (bounded:
//! [`MAX_LOCAL_READS`]) — and tells the room's members with a `receipt` event, coalesced: each
//! pod sends its members at most one receipt per user per room per `receipts.interval` (the
//! latest position wins). With NATS the reads travel to every pod on the core subject
//! `<prefix>.receipts.<namespace>`; each pod coalesces what it delivers, so the bound holds for
//! the members whichever pods the reads came from.
//!
//! Unread counts are counted in the room's retained history: the stored messages after the
//! read position that the user did not publish (at most `history.maxMessages`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;

use super::bus::{
    Bus, BusError, Position, ReadStore, Replayed, RoomKey, RoomMessage, Sink, read_advances,
};
use super::protocol::{self, ReadState};

/// Read positions kept by a pod on the embedded bus; past it the least recently marked one is
/// forgotten (its user then counts the room's whole retained history as unread).
pub const MAX_LOCAL_READS: usize = 100_000;

pub use super::bus::MAX_READS_PER_USER;

/// Most rooms the publish API lists for one user: all of their read positions.
pub const MAX_ROOMS_PER_USER: usize = MAX_READS_PER_USER;

/// Who delivers a receipt to the members of a room on this pod (the hub).
#[async_trait]
pub trait Members: Send + Sync {
    /// Queue `json` (a server message) to every member of `key` on this pod that speaks the
    /// room protocol (JSON or binary), encoded once per encoding.
    async fn tell(&self, key: &RoomKey, json: &str);
}

/// The embedded bus's read positions: bounded, least recently marked forgotten first.
#[derive(Default)]
pub struct LocalReads {
    state: Mutex<LocalState>,
}

type ReadKey = (String, String, String);

#[derive(Default)]
struct LocalState {
    /// (namespace, user, room) -> (position, stamp of its last change).
    by_key: HashMap<ReadKey, (Position, u64)>,
    /// stamp -> key, oldest first (eviction order).
    order: BTreeMap<u64, ReadKey>,
    /// (namespace, user) -> their rooms by stamp, oldest first (the per-user bound).
    per_user: HashMap<(String, String), BTreeMap<u64, String>>,
    next: u64,
}

impl LocalState {
    fn forget(&mut self, k: &ReadKey) {
        if let Some((_, stamp)) = self.by_key.remove(k) {
            self.order.remove(&stamp);
            let user = (k.0.clone(), k.1.clone());
            if let Some(rooms) = self.per_user.get_mut(&user) {
                rooms.remove(&stamp);
                if rooms.is_empty() {
                    self.per_user.remove(&user);
                }
            }
        }
    }

    /// The user's least recently marked key.
    fn oldest_of(&self, namespace: &str, user: &str) -> Option<ReadKey> {
        let rooms = self
            .per_user
            .get(&(namespace.to_string(), user.to_string()))?;
        let (_, room) = rooms.first_key_value()?;
        Some((namespace.to_string(), user.to_string(), room.clone()))
    }
}

impl LocalReads {
    fn lock(&self) -> std::sync::MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ReadStore for LocalReads {
    async fn mark(&self, key: &RoomKey, user: &str, pos: &Position) -> Result<Position, BusError> {
        let mut st = self.lock();
        let k = (key.namespace.clone(), user.to_string(), key.room.clone());
        let old = st.by_key.get(&k).map(|(p, s)| (p.clone(), *s));
        if let Some((p, _)) = &old
            && !read_advances(Some(p), pos)
        {
            return Ok(p.clone());
        }
        let user = (k.0.clone(), k.1.clone());
        if let Some((_, stamp)) = old {
            st.order.remove(&stamp);
            if let Some(rooms) = st.per_user.get_mut(&user) {
                rooms.remove(&stamp);
            }
        } else {
            if st.per_user.get(&user).map_or(0, BTreeMap::len) >= MAX_READS_PER_USER
                && let Some(evict) = st.oldest_of(&k.0, &k.1)
            {
                st.forget(&evict);
                crate::metrics::metrics().room_reads_forgotten.inc();
            }
            while st.by_key.len() >= MAX_LOCAL_READS {
                let Some(evict) = st.order.first_key_value().map(|(_, k)| k.clone()) else {
                    break;
                };
                st.forget(&evict);
                crate::metrics::metrics().room_reads_forgotten.inc();
            }
        }
        let stamp = st.next;
        st.next += 1;
        st.per_user
            .entry(user)
            .or_default()
            .insert(stamp, k.2.clone());
        st.order.insert(stamp, k.clone());
        st.by_key.insert(k, (pos.clone(), stamp));
        Ok(pos.clone())
    }

    async fn get(&self, key: &RoomKey, user: &str) -> Result<Option<Position>, BusError> {
        let k = (key.namespace.clone(), user.to_string(), key.room.clone());
        Ok(self.lock().by_key.get(&k).map(|(p, _)| p.clone()))
    }

    async fn of_user(
        &self,
        namespace: &str,
        user: &str,
        max: usize,
    ) -> Result<Vec<(String, Position)>, BusError> {
        let st = self.lock();
        let (namespace, user) = (namespace.to_string(), user.to_string());
        let Some(rooms) = st.per_user.get(&(namespace.clone(), user.clone())) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<(String, Position)> = rooms
            .values()
            .filter_map(|room| {
                let k = (namespace.clone(), user.clone(), room.clone());
                st.by_key.get(&k).map(|(p, _)| (room.clone(), p.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.truncate(max);
        Ok(out)
    }
}

/// At most one emission per key per interval: the first offer of a quiet key goes out at
/// once, later ones within the interval are merged (the latest wins) and go out when it ends.
#[derive(Debug)]
pub struct Coalescer<K> {
    keys: HashMap<K, Pace>,
}

#[derive(Debug)]
struct Pace {
    /// No emission before this.
    quiet_until: Instant,
    /// What waits for `quiet_until`.
    pending: Option<Position>,
}

impl<K: std::hash::Hash + Eq + Clone> Default for Coalescer<K> {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Coalescer<K> {
    /// Offer `pos` for `key`: `Some` to emit now, `None` when it waits (merged) for the end of
    /// the key's interval.
    pub fn offer(
        &mut self,
        key: K,
        pos: Position,
        interval: Duration,
        now: Instant,
    ) -> Option<Position> {
        match self.keys.get_mut(&key) {
            Some(pace) if pace.quiet_until > now => {
                if read_advances(pace.pending.as_ref(), &pos) {
                    pace.pending = Some(pos);
                }
                None
            }
            _ => {
                self.keys.insert(
                    key,
                    Pace {
                        quiet_until: now + interval,
                        pending: None,
                    },
                );
                Some(pos)
            }
        }
    }

    /// Everything whose interval has ended with something pending (emit it now; each starts a
    /// new interval), and forget quiet keys with nothing pending.
    pub fn due(
        &mut self,
        interval_of: impl Fn(&K) -> Duration,
        now: Instant,
    ) -> Vec<(K, Position)> {
        let mut out = Vec::new();
        self.keys.retain(|k, pace| {
            if pace.quiet_until > now {
                return true;
            }
            match pace.pending.take() {
                Some(p) => {
                    out.push((k.clone(), p));
                    pace.quiet_until = now + interval_of(k);
                    true
                }
                None => false,
            }
        });
        out
    }

    /// When [`Self::due`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.keys.values().map(|p| p.quiet_until).min()
    }
}

/// One read as it travels between pods.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    ns: String,
    room: String,
    user: String,
    seq: u64,
    epoch: String,
    /// The route's `receipts.interval`, in milliseconds.
    interval_ms: u64,
}

type Key = (RoomKey, String);

/// The pod's read receipts service.
pub struct Receipts {
    bus: Arc<dyn Bus>,
    store: Arc<dyn ReadStore>,
    members: Weak<dyn Members>,
    pace: Mutex<(Coalescer<Key>, HashMap<Key, Duration>)>,
    wake: Arc<Notify>,
    started: OnceCell<()>,
}

impl Receipts {
    pub fn new(bus: Arc<dyn Bus>, members: Weak<dyn Members>) -> Arc<Self> {
        let store = bus
            .reads()
            .unwrap_or_else(|| Arc::new(LocalReads::default()));
        Arc::new(Self {
            bus,
            store,
            members,
            pace: Mutex::default(),
            wake: Arc::new(Notify::new()),
            started: OnceCell::new(),
        })
    }

    pub fn store(&self) -> &Arc<dyn ReadStore> {
        &self.store
    }

    /// Start delivering receipts on this pod (idempotent): the pacing task, and with NATS the
    /// subscription to every pod's reads. Called before the first receipts room is joined.
    pub async fn start(self: &Arc<Self>) {
        self.started
            .get_or_init(|| async {
                tokio::spawn(pace_loop(Arc::downgrade(self), self.wake.clone()));
                if let Some(nats) = self.bus.nats() {
                    let subject = format!("{}.receipts.>", nats.prefix);
                    match nats.client.subscribe(subject).await {
                        Ok(sub) => {
                            tokio::spawn(listen(Arc::downgrade(self), sub));
                            // Registered with the server before the first member hears anything.
                            let _ = nats.client.flush().await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot subscribe to read receipts; receipts from other pods are not delivered")
                        }
                    }
                }
            })
            .await;
    }

    /// `user` read `key` up to `pos`: store it (never lowering it) and tell the room's
    /// members (paced). Returns the stored read position.
    pub async fn read(
        self: &Arc<Self>,
        key: &RoomKey,
        user: &str,
        pos: &Position,
        interval: Duration,
    ) -> Result<Position, BusError> {
        self.start().await;
        let old = self.store.get(key, user).await?;
        let stored = self.store.mark(key, user, pos).await?;
        crate::metrics::metrics()
            .room_reads
            .with_label_values(&["ok"])
            .inc();
        if !read_advances(old.as_ref(), &stored) {
            return Ok(stored); // nothing moved: nobody is told
        }
        let wire = Wire {
            ns: key.namespace.clone(),
            room: key.room.clone(),
            user: user.to_string(),
            seq: stored.seq,
            epoch: stored.epoch.clone(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        };
        match self.bus.nats() {
            Some(nats) => {
                let payload = Bytes::from(serde_json::to_vec(&wire).unwrap_or_default());
                let subject = format!("{}.receipts.{}", nats.prefix, key.namespace);
                if let Err(e) = nats.client.publish(subject, payload).await {
                    tracing::warn!(error = %e, "read receipt not sent to the other pods");
                }
            }
            None => self.offer(wire).await,
        }
        Ok(stored)
    }

    /// A read (from this pod or another): deliver its receipt now or when its interval ends.
    async fn offer(&self, w: Wire) {
        let key = (
            RoomKey {
                namespace: w.ns,
                room: w.room,
            },
            w.user,
        );
        let interval = Duration::from_millis(w.interval_ms.max(1));
        let pos = Position {
            seq: w.seq,
            epoch: w.epoch,
        };
        let now_due = {
            let mut pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
            pace.1.insert(key.clone(), interval);
            pace.0.offer(key.clone(), pos, interval, Instant::now())
        };
        match now_due {
            Some(pos) => self.deliver(&key, &pos).await,
            None => {
                crate::metrics::metrics().room_receipts_coalesced.inc();
                self.wake.notify_one();
            }
        }
    }

    async fn deliver(&self, (key, user): &Key, pos: &Position) {
        let Some(members) = self.members.upgrade() else {
            return;
        };
        members
            .tell(key, &protocol::receipt(&key.room, user, pos))
            .await;
        crate::metrics::metrics().room_receipts.inc();
    }

    /// The read state `joined` reports for `user` in `key`.
    pub async fn state(&self, key: &RoomKey, user: &str) -> Result<ReadState, BusError> {
        let position = self.store.get(key, user).await?;
        let unread = unread(self.bus.as_ref(), key, user, position.as_ref()).await?;
        Ok(ReadState { position, unread })
    }
}

/// Stored messages of `key` after `read` (all retained ones without it, or when it is from
/// another epoch or beyond history) that `user` did not publish. Counted as the bus reads
/// them: a count holds no message.
pub async fn unread(
    bus: &dyn Bus,
    key: &RoomKey,
    user: &str,
    read: Option<&Position>,
) -> Result<u64, BusError> {
    let mut count = Unread { user, n: 0 };
    let lost = match read {
        Some(p) => bus.replay_into(key, p, &mut count).await? == Replayed::Lost,
        None => true,
    };
    if lost {
        count.reset();
        bus.retained_into(key, &mut count).await?;
    }
    Ok(count.n)
}

/// Counts what [`counts_as_unread`] for its user.
struct Unread<'a> {
    user: &'a str,
    n: u64,
}

impl Sink for Unread<'_> {
    fn take(&mut self, msg: Cow<'_, RoomMessage>) -> bool {
        if counts_as_unread(&msg, self.user) {
            self.n += 1;
        }
        true
    }
    fn reset(&mut self) {
        self.n = 0;
    }
}

/// Whether `m` counts as unread for `user`: stored, not the user's own.
pub fn counts_as_unread(m: &RoomMessage, user: &str) -> bool {
    m.seq != 0
        && !m.ephemeral
        && m.from
            .as_ref()
            .and_then(|f| f.get("sub"))
            .and_then(|s| s.as_str())
            != Some(user)
}

/// Deliver what waited for the end of its interval, as intervals end. Holds the service
/// weakly (ends within a minute of it).
async fn pace_loop(weak: Weak<Receipts>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(r) = weak.upgrade() else { return };
            r.pace
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .next_deadline()
        };
        let at = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = wake.notified() => {}
        }
        let Some(r) = weak.upgrade() else { return };
        let due = {
            let mut pace = r.pace.lock().unwrap_or_else(|p| p.into_inner());
            let (co, intervals) = &mut *pace;
            let due = co.due(
                |k| intervals.get(k).copied().unwrap_or(Duration::from_secs(1)),
                Instant::now(),
            );
            // Keys the coalescer forgot need no interval either.
            intervals.retain(|k, _| co.keys.contains_key(k));
            due
        };
        for (key, pos) in due {
            r.deliver(&key, &pos).await;
        }
    }
}

/// Every pod's reads (NATS): offer each to this pod's members.
async fn listen(weak: Weak<Receipts>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let Some(r) = weak.upgrade() else { return };
        match serde_json::from_slice::<Wire>(&msg.payload) {
            Ok(w) => r.offer(w).await,
            Err(e) => tracing::debug!(error = %e, "not a read receipt; ignored"),
        }
    }
}

#[cfg(test)]
mod tests;
