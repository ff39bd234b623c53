//! Yjs documents at the edge (rooms `protocol: yjs`, docs/documents.md).
//!
//! Stock `y-websocket` clients connect to a document's path; the gateway holds the document
//! (a `yrs` replica per pod that has editors of it), answers their sync and awareness
//! messages, and with `bus.nats` stores every update in JetStream and follows the other pods'
//! updates from there. With the embedded bus documents live in this pod's memory only.
//!
//! - [`sync`]: the y-protocols messages (pure).
//! - [`store`]: the JetStream log of a document, snapshots and compaction.
//! - [`replica`]: one pod's replica, its editors and its NATS feeds.
//! - [`peers`]: the other pods' replicas and their editors' awareness (removed when a pod is
//!   silent: crashed).
//! - [`session`]: one editor's WebSocket.
//! - [`api`]: read a document and apply server-side updates (admin listener).
//! - [`notify`]: the debounced "document changed" notification to the app.

pub mod api;
pub mod notify;
pub mod peers;
pub mod replica;
pub mod session;
pub mod store;
pub mod sync;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_config::Documents as DocCfg;

use self::replica::Replica;
use self::store::NatsStore;
use crate::rooms::bus::{Bus, RoomKey};

/// The path prefix of the documents API ([`api`]) on the admin listener.
pub const API_PREFIX: &str = "/v1/documents/";

/// Longest a connection waits for its document to load.
pub const LOAD_WAIT: Duration = Duration::from_secs(10);

/// How often a replica nobody uses any more, which still owes the log a snapshot, is checked
/// again before it is dropped.
const OWED_RECHECK: Duration = Duration::from_secs(1);

/// How long a replica nobody uses is kept loaded for a snapshot it owes the log.
pub const OWED_HOLD: Duration = Duration::from_secs(600);

/// This pod's documents.
pub struct Documents {
    store: Option<NatsStore>,
    /// Where "document changed" notifications go (`documents.notify`, `notifyNats`).
    channels: notify::Channels,
    map: Mutex<HashMap<RoomKey, Arc<Replica>>>,
}

impl Documents {
    pub fn new(bus: &Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(Self {
            store: bus.nats().map(NatsStore::new),
            channels: notify::Channels::new(bus),
            map: Mutex::new(HashMap::new()),
        })
    }

    /// Documents this pod holds.
    pub fn loaded(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The replica of `key`, loaded (from JetStream with `bus.nats`). Each `open` is paired
    /// with one [`Documents::close`].
    pub async fn open(
        self: &Arc<Self>,
        key: &RoomKey,
        cfg: &DocCfg,
    ) -> Result<Arc<Replica>, String> {
        let (replica, fresh) = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key) {
                Some(r) => (r.clone(), false),
                None => {
                    let r = Replica::new(
                        key.clone(),
                        cfg.clone(),
                        rand::random(),
                        self.store.clone(),
                        &self.channels,
                    );
                    map.insert(key.clone(), r.clone());
                    (r, true)
                }
            }
        };
        replica.users.fetch_add(1, Ordering::AcqRel);
        if fresh && let Err(e) = replica.start().await {
            replica.fail(e);
        }
        if let Err(e) = replica.loaded(LOAD_WAIT).await {
            self.close(&replica, Duration::ZERO);
            return Err(e);
        }
        Ok(replica)
    }

    /// Done with a replica; once nobody on this pod uses it for `idle`, it is dropped — not
    /// while it holds changes the log lacks (NATS was down when they were made): it stays
    /// loaded, retrying its snapshot every second, until they are stored, for at most
    /// [`OWED_HOLD`] (then, or when its log feed failed, they are given up, logged and counted
    /// as `switchboard_document_compactions_total{result="abandoned"}`).
    pub fn close(self: &Arc<Self>, replica: &Arc<Replica>, idle: Duration) {
        if replica.users.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let docs = Arc::downgrade(self);
        let weak = Arc::downgrade(replica);
        replica.spawn(async move {
            tokio::time::sleep(idle).await;
            let Some(r) = weak.upgrade() else { return };
            if r.owes_snapshot() && !r.failed() {
                if r.owed_watch.swap(true, Ordering::AcqRel) {
                    return; // another close's task holds it until it is stored
                }
                let until = tokio::time::Instant::now() + OWED_HOLD;
                // Held strongly meanwhile (its log feed holds it only weakly).
                while r.owes_snapshot()
                    && !r.failed()
                    && r.users.load(Ordering::Acquire) == 0
                    && tokio::time::Instant::now() < until
                {
                    tokio::time::sleep(OWED_RECHECK).await;
                }
                r.owed_watch.store(false, Ordering::Release);
            }
            if r.users.load(Ordering::Acquire) == 0 && r.owes_snapshot() {
                tracing::error!(document = %r.key.room, failed = r.failed(), "document unloaded with changes its log lacks (NATS was unreachable); editors that still have them send them when they sync again");
                crate::metrics::metrics()
                    .document_compactions
                    .with_label_values(&["abandoned"])
                    .inc();
            }
            let Some(docs) = docs.upgrade() else {
                return;
            };
            let mut map = docs.map.lock().unwrap_or_else(|p| p.into_inner());
            if r.users.load(Ordering::Acquire) == 0
                && map.get(&r.key).is_some_and(|m| Arc::ptr_eq(m, &r))
            {
                map.remove(&r.key);
            }
        });
    }

    /// The document's current state as one Yjs update (admin API).
    pub async fn state(self: &Arc<Self>, key: &RoomKey, cfg: &DocCfg) -> Result<Vec<u8>, String> {
        let r = self.open(key, cfg).await?;
        let state = r.state();
        self.close(&r, cfg.idle_unload);
        Ok(state)
    }

    /// Apply a server-side update (admin API): relayed to the editors and stored like theirs.
    pub async fn apply(
        self: &Arc<Self>,
        key: &RoomKey,
        cfg: &DocCfg,
        update: Vec<u8>,
    ) -> Result<(), crate::error::CloseCause> {
        let r = self
            .open(key, cfg)
            .await
            .map_err(|_| crate::error::CloseCause::BusUnavailable)?;
        let result = r.apply_local(None, update).await;
        self.close(&r, cfg.idle_unload);
        result
    }
}
