//! Persistence of Yjs documents in JetStream (with `bus.nats`).
//!
//! One stream, `<PREFIX>_DOCS`, subjects `<prefix>.doc.<namespace>.<document>`: every accepted
//! update is one message on its document's subject, tagged with the pod that wrote it. A
//! snapshot is a message like any other (the whole document as one update, header
//! `Sb-Doc-Snapshot`); after writing one, the pod purges the subject's messages its replica had
//! already integrated, so a document loads from one snapshot plus the updates after it.
//! Awareness is not stored: it goes over core NATS on `<prefix>.docaw.<namespace>.<document>`.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;

use crate::rooms::bus::nats::streams;
use crate::rooms::bus::{NatsAccess, RoomKey};

/// Header naming the pod that wrote an update (its replica already has it).
pub const ORIGIN: &str = "Sb-Doc-Origin";
/// Header marking a snapshot (the document's whole state).
pub const SNAPSHOT: &str = "Sb-Doc-Snapshot";
/// Bound on one JetStream operation (the NATS-outage test waits past it).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("document store unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn fail(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| fail(what, e)),
        Err(_) => Err(fail(what, "timed out")),
    }
}

/// The documents' stream on one NATS connection.
#[derive(Clone)]
pub struct NatsStore {
    pub client: async_nats::Client,
    /// Made on first use (inside the runtime; the store is built before it runs).
    js: Arc<std::sync::OnceLock<jetstream::Context>>,
    prefix: String,
    stream: String,
    replicas: usize,
    /// The NATS client's runtime (see [`NatsAccess::runtime`]).
    pub(crate) runtime: tokio::runtime::Handle,
    /// The stream exists (created or found once).
    ready: Arc<AtomicBool>,
}

/// One message of a document's log.
pub struct Stored {
    pub seq: u64,
    pub update: Bytes,
    pub origin: Option<u64>,
    pub snapshot: bool,
}

impl NatsStore {
    pub fn new(nats: NatsAccess) -> Self {
        Self {
            stream: format!(
                "{}_DOCS",
                nats.prefix.to_ascii_uppercase().replace('.', "_")
            ),
            client: nats.client,
            js: Arc::default(),
            prefix: nats.prefix,
            replicas: nats.replicas,
            runtime: nats.runtime,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    fn js(&self) -> &jetstream::Context {
        self.js.get_or_init(|| jetstream::new(self.client.clone()))
    }

    pub fn subject(&self, key: &RoomKey) -> String {
        format!("{}.doc.{}.{}", self.prefix, key.namespace, key.room)
    }

    pub fn awareness_subject(&self, key: &RoomKey) -> String {
        format!("{}.docaw.{}.{}", self.prefix, key.namespace, key.room)
    }

    /// The stream, created on first use (idempotent: same config every time).
    async fn stream(&self) -> Result<stream::Stream> {
        let s = bounded(
            "create documents stream",
            streams::get_or_create(
                self.js(),
                stream::Config {
                    name: self.stream.clone(),
                    description: Some("switchboard Yjs documents (updates and snapshots)".into()),
                    subjects: vec![format!("{}.doc.>", self.prefix)],
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    allow_direct: true,
                    ..Default::default()
                },
            ),
        )
        .await?;
        self.ready.store(true, Ordering::Release);
        Ok(s)
    }

    /// Append an update (or a snapshot); returns its stream sequence once JetStream stored it.
    pub async fn append(
        &self,
        key: &RoomKey,
        update: Bytes,
        origin: u64,
        snapshot: bool,
    ) -> Result<u64> {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, origin.to_string().as_str());
        if snapshot {
            headers.insert(SNAPSHOT, "1");
        }
        if !self.ready.load(Ordering::Acquire) {
            self.stream().await?;
        }
        let subject = self.subject(key);
        let ack = bounded(
            "publish update",
            self.js().publish_with_headers(subject, headers, update),
        )
        .await?;
        let ack = bounded("publish update ack", ack.into_future()).await?;
        Ok(ack.sequence)
    }

    /// The last sequence of a document's log; None when it has none.
    pub async fn last_seq(&self, key: &RoomKey) -> Result<Option<u64>> {
        let stream = self.stream().await?;
        let subject = self.subject(key);
        let last =
            tokio::time::timeout(OP_TIMEOUT, stream.get_last_raw_message_by_subject(&subject))
                .await
                .map_err(|_| fail("last document message", "timed out"))?;
        match last {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(fail("last document message", e)),
        }
    }

    /// Every message of a document's log from the start, then live ones, in order. The
    /// consumer re-creates itself after reconnects and server restarts.
    pub async fn follow(&self, key: &RoomKey) -> Result<consumer::push::Ordered> {
        let stream = self.stream().await?;
        let consumer = bounded(
            "create document consumer",
            stream.create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: self.subject(key),
                deliver_policy: consumer::DeliverPolicy::All,
                description: Some("switchboard document replica".into()),
                ..Default::default()
            }),
        )
        .await?;
        bounded("document consumer", consumer.messages()).await
    }

    /// Drop a document's messages below `seq` (they are merged into a later snapshot).
    pub async fn purge_below(&self, key: &RoomKey, seq: u64) -> Result<u64> {
        let stream = self.stream().await?;
        let r = bounded(
            "purge document log",
            stream
                .purge()
                .filter(self.subject(key))
                .sequence(seq)
                .into_future(),
        )
        .await?;
        Ok(r.purged)
    }
}

/// Decode one consumed message.
pub fn stored(msg: &jetstream::Message) -> Option<Stored> {
    let seq = msg.info().ok()?.stream_sequence;
    let headers = msg.headers.as_ref();
    let origin = headers
        .and_then(|h| h.get(ORIGIN))
        .and_then(|v| v.as_str().parse().ok());
    let snapshot = headers.and_then(|h| h.get(SNAPSHOT)).is_some();
    Some(Stored {
        seq,
        update: msg.payload.clone(),
        origin,
        snapshot,
    })
}
