//! One pod's replica of one Yjs document: the `yrs` document and awareness, the pod's editors
//! of it, and (with `bus.nats`) the feed that keeps it in step with the other pods.
//!
//! Local updates are applied, relayed to the pod's other editors and appended to the
//! document's JetStream log before the editor's next message is read. The replica follows the
//! log with an ordered consumer: from the start (that is the load), then live; messages it
//! wrote itself are skipped, others are applied and relayed. Awareness goes over core NATS.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use switchboard_config::Documents as DocCfg;
use tokio::sync::watch;
use yrs::sync::Awareness;
use yrs::sync::awareness::AwarenessUpdate;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, Transact};

use super::notify::{self, Channels, Pending};
use super::peers::{self, Peers};
use super::store::{self, NatsStore};
use super::sync::{self, Inbound};
use crate::error::CloseCause;
use crate::metrics::metrics;
use crate::rooms::bus::RoomKey;
use crate::rooms::outbox::{Item, Outbox};

/// Most awareness client ids one connection may control (y-websocket uses one per document).
pub const MAX_AWARENESS_CLIENTS: usize = 8;
/// Longest awareness state (its JSON) an editor may announce: a name, a colour, a cursor or a
/// few selections take well under 1 KiB. With [`MAX_AWARENESS_CLIENTS`] it bounds what one
/// connection adds to every newcomer's first awareness snapshot (64 KiB).
pub const MAX_AWARENESS_STATE_BYTES: usize = 8192;
/// An edit that does not fit `maxDocumentBytes` by the tracked size makes the pod measure the
/// document only when the tracked size grew by more than 1/64 of the bound since it was last
/// exact; within that margin the tracked size decides.
const MEASURE_MARGIN: u64 = 64;
/// How often a replica retries writing an update it could not store (as a snapshot).
const REPAIR_EVERY: Duration = Duration::from_secs(1);

/// Awareness frames on core NATS: a kind byte, the origin replica (8 bytes), the update.
const AW_UPDATE: u8 = 0;
/// "Send me your editors' states" (a replica that just opened).
const AW_QUERY: u8 = 1;
/// "My editors are still here" (no body), every [`peers::HEARTBEAT`] (docs/documents.md).
const AW_ALIVE: u8 = 2;
/// Whose the awareness clients this replica's editors hold are: a JSON object of client id to
/// the editor's token `sub` (ids of editors without one are left out). Sent before the update
/// that sets ids an editor did not hold, and with every answer to a query; a pod that does not
/// know the kind (an older version) ignores it.
const AW_OWNERS: u8 = 4;

/// What an editor's awareness change tells the other pods: the [`AW_OWNERS`] of the states it
/// set (if any has a user), then the update.
type ForPeers = (Option<Vec<u8>>, Vec<u8>);

/// Load state of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    Loading,
    Ready,
    Failed(String),
}

struct Editor {
    outbox: Arc<Outbox>,
    /// The verified token's subject (`None` on a route without JWT): awareness states one
    /// user announced are that user's ([`Replica::awareness_from`]).
    user: Option<String>,
    /// Awareness client ids this connection announced (removed when it leaves).
    clients: HashSet<ClientID>,
}

struct State {
    awareness: Awareness,
    editors: HashMap<String, Editor>,
    /// The encoded document's size, approximately: the last snapshot plus every update since.
    doc_bytes: u64,
    /// `doc_bytes` when it was last exact (measured, recounted, a snapshot written or read).
    measured_bytes: u64,
    /// How often an edit made the pod measure the document (a whole encode).
    measurements: u64,
    /// Updates in the log after its last snapshot (or, in memory, since the last recount).
    since_snapshot: u32,
    /// Highest log sequence this replica has integrated (every message at or below it).
    applied_seq: u64,
    compacting: bool,
    /// Counts the changes applied here that the log lacked (an append failed, or an edit
    /// taken while its editor was being closed).
    unstored: u64,
    /// `unstored` as of the last snapshot written: a snapshot is owed to the log while the
    /// two differ (a change the log lacks came after the state it wrote).
    stored_through: u64,
    /// The other pods' replicas and the awareness clients they announced.
    peers: Peers,
}

impl State {
    /// Whether the replica holds changes the log lacks.
    fn owes_snapshot(&self) -> bool {
        self.unstored != self.stored_through
    }

    /// Set the document's size to its exact encoded size (one whole encode).
    fn measure(&mut self) {
        self.exact(sync::state(&self.awareness).len() as u64);
    }

    /// The document's size is `bytes`, exactly.
    fn exact(&mut self, bytes: u64) {
        self.doc_bytes = bytes;
        self.measured_bytes = bytes;
    }

    /// Awareness clients announced by this pod's editors.
    fn local_clients(&self) -> Vec<ClientID> {
        self.editors
            .values()
            .flat_map(|e| e.clients.iter().copied())
            .collect()
    }

    /// [`AW_OWNERS`] for `ids` held by this pod's editors, or `None` when none has a user.
    fn owners_of(&self, ids: &[ClientID]) -> Option<Vec<u8>> {
        let owners: HashMap<String, &str> = self
            .editors
            .values()
            .filter_map(|e| Some((e, e.user.as_deref()?)))
            .flat_map(|(e, user)| {
                ids.iter()
                    .filter(|id| e.clients.contains(id))
                    .map(move |id| (id.get().to_string(), user))
            })
            .collect();
        (!owners.is_empty()).then(|| serde_json::to_vec(&owners).unwrap_or_default())
    }
}

/// A document replica. Shared by the pod's editors of the document.
pub struct Replica {
    pub key: RoomKey,
    cfg: DocCfg,
    /// This replica's id in the log and on the awareness subject.
    pod: u64,
    store: Option<NatsStore>,
    state: Mutex<State>,
    load: watch::Sender<Load>,
    /// Connections and API calls using the replica; at 0 it may be unloaded.
    pub(super) users: AtomicUsize,
    /// A task keeps the replica loaded until the snapshot it owes is stored
    /// ([`Documents::close`](super::Documents::close)): one per replica, however often it is
    /// closed meanwhile.
    pub(super) owed_watch: std::sync::atomic::AtomicBool,
    /// Edits not yet in a "document changed" notification (with `documents.notify*`).
    pending: Option<Arc<Pending>>,
    /// Edits applied here since the last notification.
    edits: AtomicU64,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Where the replica's tasks run with NATS: the client's runtime (the edge runtime, where
    /// its editors are), whichever runtime loaded the document (an admin API call, say).
    /// Without NATS (`None`) they run on the runtime of whoever spawns them.
    runtime: Option<tokio::runtime::Handle>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        metrics().documents_loaded.dec();
    }
}

impl Replica {
    /// `origin` must be unique per replica instance (not per pod): a replica skips the log
    /// messages it wrote itself, and a later replica of the same document on the same pod must
    /// apply them.
    ///
    /// With `documents.notify` or `notifyNats`, the replica runs the debounced "document
    /// changed" notification over `channels` (module [`notify`]).
    pub fn new(
        key: RoomKey,
        cfg: DocCfg,
        origin: u64,
        store: Option<NatsStore>,
        channels: &Channels,
    ) -> Arc<Self> {
        metrics().documents_loaded.inc();
        let notifies = cfg.notify.is_some() || cfg.notify_nats;
        let runtime = store.as_ref().map(|s| s.runtime.clone());
        let (load, _) = watch::channel(if store.is_some() {
            Load::Loading
        } else {
            Load::Ready
        });
        let this = Arc::new(Self {
            key,
            cfg,
            pod: origin,
            store,
            state: Mutex::new(State {
                awareness: Awareness::new(Doc::new()),
                editors: HashMap::new(),
                doc_bytes: 0,
                measured_bytes: 0,
                measurements: 0,
                since_snapshot: 0,
                applied_seq: 0,
                compacting: false,
                unstored: 0,
                stored_through: 0,
                peers: Peers::default(),
            }),
            load,
            users: AtomicUsize::new(0),
            owed_watch: std::sync::atomic::AtomicBool::new(false),
            pending: notifies.then(|| Arc::new(Pending::default())),
            edits: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            runtime,
        });
        if let Some(pending) = &this.pending {
            let task = this.spawn(notify::debounce(
                pending.clone(),
                this.cfg.notify_debounce,
                notify_once(Arc::downgrade(&this), channels.clone()),
            ));
            this.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task.abort_handle());
        }
        this
    }

    /// Run `task` where the replica's tasks run (with NATS, on the client's runtime).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(rt) => rt.spawn(task),
            None => tokio::spawn(task),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start following the document's log and awareness (NATS). Returns once the feeds are
    /// set up; the load completes in the background ([`Replica::loaded`]).
    pub async fn start(self: &Arc<Self>) -> Result<(), String> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let aw = store
            .client
            .subscribe(store.awareness_subject(&self.key))
            .await
            .map_err(|e| format!("subscribe to awareness: {e}"))?;
        let ordered = store.follow(&self.key).await.map_err(|e| e.to_string())?;
        let last = store.last_seq(&self.key).await.map_err(|e| e.to_string())?;
        if last.is_none() {
            self.load.send_replace(Load::Ready);
        }
        let feed = self.spawn(feeds::follow(
            Arc::downgrade(self),
            ordered,
            last.unwrap_or(0),
        ));
        let awareness = self.spawn(feeds::follow_awareness(Arc::downgrade(self), aw));
        {
            let mut t = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            t.push(feed.abort_handle());
            t.push(awareness.abort_handle());
        }
        // Ask the other pods for their awareness states, so a newcomer here sees them at once.
        self.publish_awareness(AW_QUERY, &[]).await;
        Ok(())
    }

    /// Wait until the replica has loaded the document (bounded).
    pub async fn loaded(&self, wait: Duration) -> Result<(), String> {
        let mut rx = self.load.subscribe();
        let r = tokio::time::timeout(wait, rx.wait_for(|l| *l != Load::Loading)).await;
        match r {
            Ok(Ok(l)) => match &*l {
                Load::Failed(e) => Err(e.clone()),
                _ => Ok(()),
            },
            Ok(Err(_)) => Err("replica gone".into()),
            Err(_) => Err("document load timed out".into()),
        }
    }

    pub(super) fn fail(&self, why: String) {
        self.load.send_replace(Load::Failed(why));
    }

    /// Whether loading or following the log failed (nothing retries its snapshot then).
    pub fn failed(&self) -> bool {
        matches!(*self.load.borrow(), Load::Failed(_))
    }

    pub fn editors(&self) -> usize {
        self.lock().editors.len()
    }

    /// Add an editor (`user`: its token's subject): it is sent the gateway's sync step 1 and
    /// every awareness state.
    pub fn attach(&self, conn: &str, user: Option<&str>, outbox: Arc<Outbox>) {
        let mut st = self.lock();
        outbox.push(Item::RawBinary(Bytes::from(sync::step1(&st.awareness))));
        if let Some(snap) = sync::awareness_snapshot(&st.awareness) {
            outbox.push(Item::RawBinary(Bytes::from(snap)));
        }
        st.editors.insert(
            conn.to_string(),
            Editor {
                outbox,
                user: user.map(str::to_string),
                clients: HashSet::new(),
            },
        );
    }

    /// Remove an editor; the awareness states it announced are removed for everyone. Each
    /// keeps its clock, as y-protocols removes a state that is not the remover's own (the
    /// y-websocket server does so when a connection ends); yrs' `remove_state` would bump it,
    /// and the editor's reconnect announces the clock it had: its next renewal (15 s later)
    /// would be ignored as well, so a lone editor heard nothing for 30 s and was reconnected.
    pub async fn detach(&self, conn: &str) {
        let removal = {
            let mut st = self.lock();
            let Some(editor) = st.editors.remove(conn) else {
                return;
            };
            let removal = AwarenessUpdate {
                clients: editor
                    .clients
                    .iter()
                    .filter(|id| st.awareness.state::<serde::de::IgnoredAny>(**id).is_some())
                    .filter_map(|id| {
                        let (clock, _) = st.awareness.meta(*id)?;
                        let entry = yrs::sync::awareness::AwarenessUpdateEntry {
                            clock,
                            json: "null".into(),
                        };
                        Some((*id, entry))
                    })
                    .collect(),
            };
            if removal.clients.is_empty() || st.awareness.apply_update(removal.clone()).is_err() {
                return;
            }
            let encoded = removal.encode_v1();
            broadcast(&st, None, &Bytes::from(sync::awareness(removal)));
            encoded
        };
        self.publish_awareness(AW_UPDATE, &removal).await;
    }

    /// Handle one message from an editor. `may_write`: false for read-only access (its
    /// document updates are dropped and counted). Err: close the connection with that cause.
    pub async fn handle(
        &self,
        conn: &str,
        frame: &[u8],
        may_write: bool,
    ) -> Result<(), CloseCause> {
        let msg = sync::decode(frame).map_err(|_| {
            metrics()
                .document_updates
                .with_label_values(&["invalid"])
                .inc();
            CloseCause::ProtocolError
        })?;
        match msg {
            Inbound::Step1(sv) => {
                let st = self.lock();
                let reply = Bytes::from(sync::step2(&st.awareness, &sv));
                if let Some(e) = st.editors.get(conn) {
                    e.outbox.push(Item::RawBinary(reply));
                }
            }
            Inbound::AwarenessQuery => {
                let st = self.lock();
                if let (Some(snap), Some(e)) = (
                    sync::awareness_snapshot(&st.awareness),
                    st.editors.get(conn),
                ) {
                    e.outbox.push(Item::RawBinary(Bytes::from(snap)));
                }
            }
            Inbound::Update(u) => {
                if !may_write {
                    metrics()
                        .document_updates
                        .with_label_values(&["read_only"])
                        .inc();
                    return Ok(());
                }
                self.apply_local(Some(conn), u).await?;
            }
            Inbound::Awareness(update) => {
                let Some((owners, encoded)) = self.awareness_from(conn, update)? else {
                    return Ok(());
                };
                if let Some(owners) = owners {
                    self.publish_awareness(AW_OWNERS, &owners).await;
                }
                self.publish_awareness(AW_UPDATE, &encoded).await;
            }
            Inbound::Ignored => {}
        }
        Ok(())
    }

    /// Apply an awareness message from editor `conn`. Only what changes the replica's states
    /// counts, as in y-websocket's own server: y-websocket clients send every awareness change
    /// they receive back to the server, and such a relay changes nothing here. What changed is
    /// sent to every editor, the sender included (a lone editor hears its own renewal and is
    /// not reconnected as idle); the states it set become the sender's own (at most
    /// [`MAX_AWARENESS_CLIENTS`]; removed for everyone when it leaves). A state must be JSON of
    /// at most [`MAX_AWARENESS_STATE_BYTES`]. A state another connection announced stays its
    /// own: this one may take it over only for the same user (y-websocket's reconnect takes its
    /// id over before the old connection has closed; on a route without JWT no connection has
    /// a user, so any may) and never remove it; a state an editor of another pod holds may be
    /// taken over (a reconnect to this pod) but not removed. Such entries are dropped, not
    /// closed: stock editors relay the removal of a state they timed out. Returns the change
    /// for the other pods.
    fn awareness_from(
        &self,
        conn: &str,
        mut update: AwarenessUpdate,
    ) -> Result<Option<ForPeers>, CloseCause> {
        let mut st = self.lock();
        let Some(me) = st.editors.get(conn) else {
            return Ok(None);
        };
        let me = me.user.clone();
        update.clients.retain(|id, entry| {
            let removal = entry.json.as_ref() == "null";
            // What changes nothing is yrs' to ignore: an older clock, or the same one unless it
            // removes (y-websocket editors send every state they hear back, and relay the
            // removal of a state they timed out with its clock).
            if let Some((clock, _)) = st.awareness.meta(*id)
                && (entry.clock < clock || (entry.clock == clock && !removal))
            {
                return true;
            }
            let local = st
                .editors
                .iter()
                .find(|(c, e)| c.as_str() != conn && e.clients.contains(id))
                .map(|(_, e)| e.user.as_ref());
            match local.or_else(|| st.peers.owner(*id)) {
                None => true, // nobody holds it
                Some(owner) => may_change(owner, me.as_deref(), removal),
            }
        });
        for (id, entry) in &update.clients {
            // Only what would change a state: y-websocket editors send every state they hear
            // back, re-encoded (`1e20` comes back as 21 digits); such an echo changes nothing.
            if st
                .awareness
                .meta(*id)
                .is_some_and(|(clock, _)| clock >= entry.clock)
            {
                continue;
            }
            if entry.json.len() > MAX_AWARENESS_STATE_BYTES {
                return Err(CloseCause::MessageTooBig);
            }
            // Relayed as they are: stock y-websocket editors parse each state and throw on one
            // that is not JSON (they then never sync). `null` removes a state.
            if serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_err() {
                return Err(CloseCause::ProtocolError);
            }
        }
        let summary = st
            .awareness
            .apply_update_summary(update)
            .map_err(|_| CloseCause::ProtocolError)?;
        let Some(summary) = summary else {
            return Ok(None); // a relay of states this replica already has
        };
        let set: Vec<ClientID> = summary
            .added
            .iter()
            .chain(&summary.updated)
            .copied()
            .collect();
        for (id, e) in st.editors.iter_mut() {
            if id != conn {
                for c in &set {
                    e.clients.remove(c);
                }
            }
        }
        st.peers.claimed_locally(&set);
        let Some(editor) = st.editors.get_mut(conn) else {
            return Ok(None);
        };
        // Only ids this editor did not hold are news to the other pods' owner lists.
        let newly: Vec<ClientID> = set
            .iter()
            .copied()
            .filter(|id| !editor.clients.contains(id))
            .collect();
        editor.clients.extend(set.iter().copied());
        if editor.clients.len() > MAX_AWARENESS_CLIENTS {
            return Err(CloseCause::ProtocolError);
        }
        let changed = st
            .awareness
            .update_with_clients(summary.all_changes())
            .map_err(|_| CloseCause::ProtocolError)?;
        let encoded = changed.encode_v1();
        broadcast(&st, None, &Bytes::from(sync::awareness(changed)));
        Ok(Some((st.owners_of(&newly), encoded)))
    }

    /// An update an editor sent before it saw its Close (its connection is being closed
    /// because the store failed, 1013): applied and relayed like any edit, not appended (the
    /// store just failed, and the close waits for nobody), and owed to the log as a snapshot.
    /// Anything else is dropped: nothing can be answered any more.
    pub fn absorb(&self, conn: &str, frame: &[u8], may_write: bool) {
        let Ok(Inbound::Update(u)) = sync::decode(frame) else {
            return;
        };
        if !may_write {
            return;
        }
        match self.change(Some(conn), u) {
            Ok(Some(_)) if self.store.is_some() => {
                self.lock().unstored += 1;
                tracing::info!(document = %self.key.room, "edit of an editor being closed applied; a snapshot will store it");
            }
            Ok(_) => {}
            Err(cause) => {
                tracing::debug!(document = %self.key.room, ?cause, "edit of an editor being closed refused");
            }
        }
    }

    /// Apply an update from an editor (`from`) or the API (None): check the limits, apply,
    /// relay to this pod's other editors, store. A refused update that yrs had partly applied
    /// (it integrates block by block and does not undo) is refused all the same (1002), and
    /// what of it was applied is relayed and stored like an accepted update, as y-websocket's
    /// own server broadcasts what a throwing `applyUpdate` integrated: the editors, the log and
    /// the replica never diverge.
    pub async fn apply_local(&self, from: Option<&str>, u: Vec<u8>) -> Result<(), CloseCause> {
        let Some((stored, result)) = self.change(from, u)? else {
            return Ok(());
        };
        if let Some(store) = &self.store
            && let Err(e) = store
                .append(&self.key, Bytes::from(stored), self.pod, false)
                .await
        {
            // The replica has the edit; the log does not. A snapshot will carry it.
            self.lock().unstored += 1;
            tracing::warn!(document = %self.key.room, error = %e, "document update not stored; a snapshot will carry it");
            return Err(CloseCause::BusUnavailable);
        }
        result
    }

    /// The part of [`Replica::apply_local`] under the replica's lock: check the limits, apply,
    /// relay. `None`: nothing new; otherwise what to store (all of `u`, or the part yrs
    /// applied of an update it then refused) and what to answer the sender.
    #[allow(clippy::type_complexity)]
    fn change(
        &self,
        from: Option<&str>,
        u: Vec<u8>,
    ) -> Result<Option<(Vec<u8>, Result<(), CloseCause>)>, CloseCause> {
        let len = u.len() as u64;
        if len > self.cfg.max_update_bytes {
            metrics()
                .document_updates
                .with_label_values(&["too_large"])
                .inc();
            return Err(CloseCause::MessageTooBig);
        }
        let (stored, result) = {
            let mut st = self.lock();
            let max = self.cfg.max_document_bytes;
            if st.doc_bytes + len > max
                && st.doc_bytes.saturating_sub(st.measured_bytes) > max / MEASURE_MARGIN
            {
                // The tracked size is an upper bound (a snapshot plus every update since):
                // measured before an edit is refused for it, unless it grew by little since
                // it was last exact (a whole encode under the lock for each edit near the
                // bound otherwise).
                st.measure();
                st.measurements += 1;
                tracing::debug!(document = %self.key.room, bytes = st.doc_bytes, measurements = st.measurements, "document measured");
            }
            if st.doc_bytes + len > max {
                metrics()
                    .document_updates
                    .with_label_values(&["too_large"])
                    .inc();
                return Err(CloseCause::DocumentTooLarge);
            }
            let (stored, result) = match sync::apply(&st.awareness, &u, sync::Source::Editor) {
                Ok(true) => {
                    metrics()
                        .document_updates
                        .with_label_values(&["applied"])
                        .inc();
                    (u, Ok(()))
                }
                // Nothing new (an editor's sync answer): nothing to relay, store or notify.
                Ok(false) => return Ok(None),
                Err(refused) => {
                    metrics()
                        .document_updates
                        .with_label_values(&["invalid"])
                        .inc();
                    let Some(partial) = refused.partial else {
                        return Err(CloseCause::ProtocolError);
                    };
                    tracing::info!(document = %self.key.room, reason = %refused.reason, "update refused after yrs applied part of it; that part is relayed and stored");
                    (partial, Err(CloseCause::ProtocolError))
                }
            };
            self.accepted(&mut st, from, &stored);
            (stored, result)
        };
        Ok(Some((stored, result)))
    }

    /// Account for a change `u` applied to the replica: its size, relayed to the editors but
    /// `from`, the notification.
    fn accepted(&self, st: &mut State, from: Option<&str>, u: &[u8]) {
        let len = u.len() as u64;
        st.doc_bytes += len;
        metrics().document_update_bytes.inc_by(len);
        broadcast(st, from, &Bytes::from(sync::update(u)));
        if let Some(p) = &self.pending {
            self.edits.fetch_add(1, Ordering::Relaxed);
            p.mark();
        }
        if self.store.is_none() {
            // In memory the document is merged as it goes: recount its size now and then.
            st.since_snapshot += 1;
            if st.since_snapshot >= self.cfg.compact_after_updates {
                st.since_snapshot = 0;
                st.measure();
            }
        }
    }

    /// Whether the replica holds changes the log lacks (a snapshot is owed).
    pub fn owes_snapshot(&self) -> bool {
        self.lock().owes_snapshot()
    }

    /// The document's whole state as one update.
    pub fn state(&self) -> Vec<u8> {
        sync::state(&self.lock().awareness)
    }

    async fn publish_awareness(&self, kind: u8, update: &[u8]) {
        let Some(store) = &self.store else { return };
        let mut b = BytesMut::with_capacity(9 + update.len());
        b.put_u8(kind);
        b.put_u64(self.pod);
        b.put_slice(update);
        let subject = store.awareness_subject(&self.key);
        if let Err(e) = store.client.publish(subject, b.freeze()).await {
            tracing::debug!(error = %e, "awareness not published");
        }
    }

    /// Write a snapshot to the log, then purge what it merged. Used for compaction and to
    /// store edits whose own append failed.
    async fn snapshot(self: Arc<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let (state, upto, unstored) = {
            let st = self.lock();
            (sync::state(&st.awareness), st.applied_seq, st.unstored)
        };
        let len = state.len() as u64;
        let result = async {
            store
                .append(&self.key, Bytes::from(state), self.pod, true)
                .await?;
            if upto > 0 {
                store.purge_below(&self.key, upto + 1).await?;
            }
            Ok::<_, store::StoreError>(())
        }
        .await;
        let mut st = self.lock();
        st.compacting = false;
        match result {
            Ok(()) => {
                // A change the log lacks that came after this state is still owed.
                st.stored_through = unstored;
                st.exact(len);
                metrics()
                    .document_compactions
                    .with_label_values(&["ok"])
                    .inc();
            }
            Err(e) => {
                // Tried again after another `compactAfterUpdates` updates, not with the next
                // one: each try encodes the whole document, and one that cannot be stored
                // (larger than the server's max_payload) fails every time.
                st.since_snapshot = 0;
                tracing::warn!(document = %self.key.room, error = %e, "document snapshot failed");
                metrics()
                    .document_compactions
                    .with_label_values(&["error"])
                    .inc();
            }
        }
    }
}

/// The send step of a replica's notification loop: the document as it is now, over every
/// configured channel. Stops the loop once the replica is gone.
fn notify_once(
    replica: Weak<Replica>,
    channels: Channels,
) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
    move || {
        let (replica, channels) = (replica.clone(), channels.clone());
        Box::pin(async move {
            let Some(r) = replica.upgrade() else {
                return false;
            };
            let (state_vector, bytes) = {
                let st = r.lock();
                let sv = st.awareness.doc().transact().state_vector().encode_v1();
                (sv, st.doc_bytes)
            };
            let body = notify::body(&notify::Changed {
                key: &r.key,
                state_vector: &state_vector,
                bytes,
                updates: r.edits.swap(0, Ordering::Relaxed),
            });
            let (hook, nats, namespace) = (
                r.cfg.notify.clone(),
                r.cfg.notify_nats,
                r.key.namespace.clone(),
            );
            drop(r); // the replica may be unloaded while the app is slow
            channels.send(hook.as_ref(), nats, &namespace, body).await;
            true
        })
    }
}

/// Queue `frame` to every editor but `except`. A full outbox closes that editor (4008).
fn broadcast(st: &State, except: Option<&str>, frame: &Bytes) {
    for (id, e) in &st.editors {
        if Some(id.as_str()) != except {
            e.outbox.push(Item::RawBinary(frame.clone()));
        }
    }
}

/// Whether a connection of user `me` may change a state that a connection of `owner` holds
/// (`None`: a route without JWT, or a token without `sub`): the same user may (its reconnect
/// takes its id over before the old connection has closed, its other tab removes it); without
/// users to tell apart, a takeover may (y-websocket's reconnect) and a removal may not; another
/// user never.
fn may_change(owner: Option<&String>, me: Option<&str>, removal: bool) -> bool {
    match (owner, me) {
        (Some(owner), Some(me)) => owner == me,
        (None, None) => !removal,
        _ => false,
    }
}

mod feeds;

#[cfg(test)]
mod tests;
