//! The NATS bus: core NATS subjects for live fan-out, JetStream for history, positions and
//! resume, and JetStream key-value buckets for presence and read positions. Every gateway pod connects to the same
//! NATS (cluster) with the same subject prefix; app pods may publish into rooms directly.
//! `docs/nats.md` is the user-facing description of everything here.
//!
//! Subjects (`P` = `nats.subjectPrefix`, `ns` = the route's room namespace):
//!
//! | subject                 | carries                                                       |
//! |-------------------------|---------------------------------------------------------------|
//! | `P.room.<ns>.<room>`    | stored messages (captured by the stream `<PREFIX>_<ns>`)       |
//! | `P.eph.<ns>.<room>`     | ephemeral messages, and every message of a namespace without history |
//! | `P.presence.<ns>.<room>`| presence join/leave events                                    |
//! | `P.events.<ns>`         | connect/disconnect notifications for the app (`rooms.notifyNats`) |
//! | `P.receipts.<ns>`       | reads between pods (`rooms::receipts`)                         |
//! | `P.offline.<ns>`        | offline notifications for the app (`rooms.offline.notifyNats`) |
//!
//! Positions are `(stream sequence, epoch)`: the sequence is the JetStream stream sequence of the
//! namespace's stream (it increases with every stored message of the room, not by one) and the
//! epoch is the stream's creation time, so a recreated stream never matches an old position.
//!
//! Live delivery of stored messages uses one ordered push consumer per subscribed room: it
//! re-creates itself after reconnects and server restarts from the last sequence it delivered,
//! so live delivery has no gaps and no duplicates across NATS outages. A stream's epoch is read
//! again on every new connection (NATS may have come back with empty storage, the stream then
//! being a new one): nothing received or acknowledged on a newer connection than the one its
//! epoch was read on is passed on until it has been, and a pump whose stream was recreated
//! starts over at the new stream's start.
//!
//! Every operation is bounded ([`OP_TIMEOUT`]) and fails at once with
//! [`BusError::Unavailable`] while the client is not connected; the client keeps reconnecting in
//! the background, forever, and [`Bus::healthy`] says whether it is connected.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, kv};
use async_nats::{ConnectOptions, ServerAddr, Subscriber};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Deserializer, Serialize};

mod buckets;
mod envelope;
mod history;
mod live;
mod presence;
mod pull;
mod reads;
pub mod streams;
mod subjects;

use envelope::*;
pub use history::{PROBE_MAX, gap_is_complete, probe_range};
use live::*;
pub use subjects::valid_name;
use subjects::*;

use super::feed::FeedSender;
use super::{
    Bus, BusError, Carried, CarriedKind, Member, Payload, Position, PresenceEvent, Publish,
    Replayed, Retention, RoomKey, RoomMessage, Sink, Subscription,
};

/// Upper bound of every bus operation (except [`Bus::replay`], see [`REPLAY_TIMEOUT`]).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of a replay (it reads up to the retained history of one room).
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between stream-info attempts while a stream does not answer (leader election).
const INFO_RETRY: Duration = Duration::from_millis(250);
/// JetStream API and publish-ack timeout: below [`OP_TIMEOUT`] so the bus reports the cause.
const JS_TIMEOUT: Duration = Duration::from_secs(4);
/// Ephemeral read consumers are removed by the server this long after their last use (they are
/// also deleted explicitly; this covers a pod that dies mid-read).
const READ_CONSUMER_TTL: Duration = Duration::from_secs(10);
/// How often the client pings the server. async-nats closes the connection at the third ping
/// still unanswered, so a hung server (accepting TCP, answering nothing) is noticed within
/// three intervals: 15 s (at 10 s it was 30 s, longer than docs/nats.md said).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// The epoch of namespaces without history (nothing is stored, nothing can be resumed).
pub const NO_HISTORY_EPOCH: &str = "none";
/// Longest namespace or room name.
pub const MAX_NAME_LEN: usize = 255;
/// The KV header that marks deletes and purges.
const KV_OPERATION: &str = "KV-Operation";

/// Whether a stream-info failure is JetStream saying the stream does not exist (and not
/// "no responders", a timeout or another transient answer).
fn stream_not_found(e: &jetstream::context::RequestError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Whenever the client (re)connects, for as long as the bus lives: read every namespace's
/// stream again, creating those recorded while it was not connected and those NATS lost (a
/// restart with empty storage), then have the pumps compare their streams' epochs.
async fn configure_on_connect(inner: std::sync::Weak<Inner>, connected: Arc<tokio::sync::Notify>) {
    loop {
        // The check every 30 s ends this task once the bus is gone.
        let _ = tokio::time::timeout(Duration::from_secs(30), connected.notified()).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // The event comes just before the client reports itself connected.
        for _ in 0..100 {
            if inner.connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if inner.connected() {
            inner.check_message_limits();
            inner.refresh_epochs().await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms_of(t: &async_nats::jetstream::message::Info<'_>) -> u64 {
    u64::try_from(t.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The epoch of a stream: its creation time in nanoseconds since the Unix epoch. JetStream keeps
/// it across server restarts (file storage), and a deleted and recreated stream gets a new one.
fn epoch_of(info: &stream::Info) -> String {
    info.created.unix_timestamp_nanos().to_string()
}

#[derive(Debug, Clone)]
struct Namespace {
    retention: Retention,
    /// The stream's epoch once it is known to exist; `None`: create or update it before use.
    epoch: Option<String>,
    /// The connection ([`Inner::generation`]) `epoch` was read on. On a later one it is read
    /// again before use: NATS may have restarted with empty storage, and the stream the
    /// pod's requests now reach is a new one.
    read_on: u64,
    /// One epoch read of this namespace at a time: after a reconnect every pump, publish and
    /// resume of it needs its epoch, and one stream request answers them all. Per namespace,
    /// so a stream that does not answer (its leader being elected) holds up no other.
    epoch_read: Arc<tokio::sync::Mutex<()>>,
}

/// The NATS room bus. Cheap to share behind an `Arc<dyn Bus>`.
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    /// The client's counters: `connects` numbers its connections ([`Inner::generation`]).
    stats: Arc<async_nats::Statistics>,
    /// Bumped once the epochs have been read again after a (re)connect: the pumps compare
    /// their streams' epochs with the namespaces'.
    epochs: tokio::sync::watch::Sender<u64>,
    /// The largest message each route hands the bus, checked against the server's
    /// `max_payload` on every connection ([`Inner::check_message_limits`]).
    message_limits: Mutex<Vec<Carried>>,
    /// (route's limit, max_payload) already warned about.
    limits_warned: Mutex<HashSet<(Carried, usize)>>,
    js: jetstream::Context,
    prefix: String,
    stream_prefix: String,
    presence_ttl: Duration,
    /// JetStream replicas of every stream this bus creates (`bus.nats.replicas`).
    replicas: usize,
    namespaces: Mutex<HashMap<String, Namespace>>,
    presence: tokio::sync::Mutex<Option<kv::Store>>,
    /// The read positions bucket, once opened (see `reads.rs`).
    reads: tokio::sync::Mutex<Option<kv::Store>>,
    /// Members this pod has announced (join events are sent once, not on every refresh).
    announced: Mutex<HashSet<(RoomKey, String)>>,
    /// The runtime the client was connected on (its tasks run there): the pumps of subscribed
    /// rooms run there too, whoever subscribed, so a NATS delivery never crosses runtimes.
    runtime: tokio::runtime::Handle,
    /// Turns for history pulls, in KiB of their byte bounds ([`pull::PULL_BUDGET_KIB`]).
    pulls: tokio::sync::Semaphore,
    /// Places for reads past their first pull ([`pull::LONG_READS`]).
    long_reads: tokio::sync::Semaphore,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NatsBus {
    /// Build the bus from the `nats` config. Does not wait for NATS: the client connects (and
    /// later reconnects) in the background, forever, so a gateway starts while NATS is briefly
    /// down; until connected [`Bus::healthy`] is false and operations fail with
    /// [`BusError::Unavailable`]. Errors: invalid URLs, subject prefix or credentials file.
    pub async fn connect(cfg: &switchboard_config::Nats) -> Result<NatsBus, BusError> {
        if !valid_prefix(&cfg.subject_prefix) {
            return Err(BusError::Other(format!(
                "nats.subjectPrefix {:?}: use dot-separated tokens of [A-Za-z0-9_-]",
                cfg.subject_prefix
            )));
        }
        if cfg.urls.is_empty() {
            return Err(BusError::Other(
                "nats.urls: at least one URL is required".into(),
            ));
        }
        let addrs = cfg
            .urls
            .iter()
            .map(|u| {
                u.parse::<ServerAddr>()
                    .map_err(|e| BusError::Other(format!("nats.urls: {u:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Wakes the task that configures history once the connection is up (see below).
        let connected = Arc::new(tokio::sync::Notify::new());
        let on_connect = connected.clone();
        let mut opts = ConnectOptions::new()
            .name("switchboard-gateway")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(OP_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            .require_tls(cfg.tls_required)
            .event_callback(move |event| {
                let on_connect = on_connect.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("NATS connected");
                            on_connect.notify_one();
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS disconnected; reconnecting")
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            });
        if let Some(token) = &cfg.token {
            opts = opts.token(token.clone());
        }
        if let Some(file) = &cfg.credentials_file {
            opts = opts
                .credentials_file(file)
                .await
                .map_err(|e| BusError::Other(format!("nats.credentialsFile {file:?}: {e}")))?;
        }
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| BusError::Unavailable(format!("NATS connect: {e}")))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(JS_TIMEOUT)
            .ack_timeout(JS_TIMEOUT)
            .build(client.clone());
        let inner = Arc::new(Inner {
            stats: client.statistics(),
            epochs: tokio::sync::watch::Sender::new(0),
            message_limits: Mutex::default(),
            limits_warned: Mutex::default(),
            client,
            js,
            prefix: cfg.subject_prefix.clone(),
            stream_prefix: stream_prefix(&cfg.subject_prefix),
            presence_ttl: cfg.presence_ttl,
            replicas: usize::from(cfg.replicas.max(1)),
            namespaces: Mutex::default(),
            presence: tokio::sync::Mutex::default(),
            reads: tokio::sync::Mutex::default(),
            announced: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
            pulls: tokio::sync::Semaphore::new(pull::PULL_BUDGET_KIB as usize),
            long_reads: tokio::sync::Semaphore::new(pull::LONG_READS),
        });
        tokio::spawn(configure_on_connect(Arc::downgrade(&inner), connected));
        Ok(NatsBus { inner })
    }

    /// The underlying client (for other NATS users in the gateway, e.g. notifications).
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The JetStream stream holding `namespace`'s history: `<PREFIX>_<namespace>`.
    pub fn stream_name(&self, namespace: &str) -> String {
        self.inner.stream_name(namespace)
    }

    /// The presence KV bucket: `<PREFIX>_presence`.
    pub fn presence_bucket(&self) -> String {
        self.inner.presence_bucket()
    }
}

impl Inner {
    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The number of the client's current connection (1 for the first, one more per
    /// reconnect). The client counts a connection before it reads anything on it, so whatever
    /// arrives on a new connection is seen with the new number.
    fn generation(&self) -> u64 {
        self.stats
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn down(&self) -> BusError {
        BusError::Unavailable("not connected to NATS".into())
    }

    /// A failed NATS call: `Unavailable` when the connection is the cause, else `Other`.
    fn fail(&self, what: &str, e: impl Display) -> BusError {
        if self.connected() {
            BusError::Other(format!("{what}: {e}"))
        } else {
            BusError::Unavailable(format!("{what}: {e}"))
        }
    }

    async fn bounded<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<T, BusError>>,
    ) -> Result<T, BusError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) if self.connected() => Err(BusError::Timeout),
            Err(_) => Err(self.down()),
        }
    }

    fn subject(&self, kind: &str, key: &RoomKey) -> String {
        format!("{}.{kind}.{}.{}", self.prefix, key.namespace, key.room)
    }

    /// `P.events.<ns>`: a namespace's connect/disconnect notifications.
    fn events_subject(&self, ns: &str) -> String {
        format!("{}.events.{ns}", self.prefix)
    }

    fn stream_name(&self, ns: &str) -> String {
        format!("{}_{ns}", self.stream_prefix)
    }

    fn presence_bucket(&self) -> String {
        format!("{}_presence", self.stream_prefix)
    }

    fn history(&self, ns: &str) -> Option<Retention> {
        lock(&self.namespaces).get(ns).map(|n| n.retention.clone())
    }

    /// Record `ns`'s epoch as read on connection `read_on` (a read from an older connection
    /// that ends late changes nothing).
    fn set_epoch(&self, ns: &str, epoch: &str, read_on: u64) {
        let mut namespaces = lock(&self.namespaces);
        let Some(n) = namespaces.get_mut(ns) else {
            return;
        };
        if read_on < n.read_on {
            return;
        }
        n.read_on = read_on;
        if n.epoch.as_deref() == Some(epoch) {
            return;
        }
        if n.epoch.is_some() {
            tracing::warn!(
                namespace = ns,
                epoch,
                "history stream was recreated: older positions are lost"
            );
        }
        n.epoch = Some(epoch.to_string());
    }

    fn forget_epoch(&self, ns: &str) {
        if let Some(n) = lock(&self.namespaces).get_mut(ns) {
            n.epoch = None;
        }
    }

    fn stream_config(&self, ns: &str, r: &Retention) -> stream::Config {
        stream::Config {
            name: self.stream_name(ns),
            description: Some(format!("switchboard room history of namespace {ns}")),
            subjects: vec![format!("{}.room.{ns}.>", self.prefix)],
            max_messages_per_subject: i64::from(r.max_messages),
            max_age: r.max_age,
            // The namespace's whole history, when set (JetStream reserves it against the
            // server's storage, so it is not given by default); its oldest go beyond it.
            max_bytes: r
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            storage: StorageType::File,
            allow_direct: true,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    async fn stream(&self, ns: &str) -> Result<stream::Stream<()>, BusError> {
        self.js
            .get_stream_no_info(self.stream_name(ns))
            .await
            .map_err(|e| BusError::Other(format!("stream name: {e}")))
    }

    /// `ns`'s epoch and the connection it was read on, if that is the current connection.
    fn current_epoch(&self, ns: &str) -> Option<(String, u64)> {
        let now = self.generation();
        let namespaces = lock(&self.namespaces);
        let n = namespaces.get(ns).filter(|n| n.read_on == now)?;
        Some((n.epoch.clone()?, now))
    }

    /// Create or update `ns`'s stream with its configured retention; returns its info and the
    /// connection it was read on.
    async fn apply_stream(&self, ns: &str) -> Result<(stream::Info, u64), BusError> {
        let Some(r) = self.history(ns) else {
            return Err(BusError::Other(format!(
                "namespace {ns:?} keeps no history"
            )));
        };
        if !self.connected() {
            return Err(self.down());
        }
        let read_on = self.generation();
        let info = streams::create_or_update(&self.js, self.stream_config(ns, &r))
            .await
            .map_err(|e| {
                self.fail(
                    &format!("create or update stream {}", self.stream_name(ns)),
                    e,
                )
            })?;
        self.set_epoch(ns, &epoch_of(&info), read_on);
        Ok((info, read_on))
    }

    /// The stream of a namespace with history, its epoch and the connection that was read on:
    /// the cached epoch when it was read on the current connection, else the stream is read
    /// again (and created if missing: a NATS restart with empty storage loses it), once for
    /// all who wait for it.
    async fn ensure_stream(&self, ns: &str) -> Result<(stream::Stream<()>, String, u64), BusError> {
        let (epoch, read_on) = match self.current_epoch(ns) {
            Some(known) => known,
            None => {
                let gate = lock(&self.namespaces).get(ns).map(|n| n.epoch_read.clone());
                let _one = match &gate {
                    Some(gate) => Some(gate.lock().await),
                    None => None,
                };
                match self.current_epoch(ns) {
                    Some(known) => known,
                    None => {
                        let (info, read_on) = self.apply_stream(ns).await?;
                        (epoch_of(&info), read_on)
                    }
                }
            }
        };
        Ok((self.stream(ns).await?, epoch, read_on))
    }

    /// Fresh stream info (refreshing the cached epoch); a missing stream is recreated. Other
    /// failures (no responders, a timeout, "cluster not available": what a stream answers while
    /// its servers elect a leader) are retried until the caller's bound, never taken for a
    /// missing stream.
    /// Also returns the connection the info was read on.
    async fn stream_info(
        &self,
        ns: &str,
    ) -> Result<(stream::Stream<()>, stream::Info, u64), BusError> {
        let (stream, ..) = self.ensure_stream(ns).await?;
        loop {
            let read_on = self.generation();
            match stream.get_info().await {
                Ok(info) => {
                    self.set_epoch(ns, &epoch_of(&info), read_on);
                    return Ok((stream, info, read_on));
                }
                Err(e) if !self.connected() => return Err(self.fail("stream info", e)),
                Err(e) if stream_not_found(&e) => {
                    tracing::warn!(namespace = ns, error = %e, "history stream missing; recreating it");
                    self.forget_epoch(ns);
                    let (info, read_on) = self.apply_stream(ns).await?;
                    return Ok((stream, info, read_on));
                }
                Err(e) => {
                    tracing::debug!(namespace = ns, error = %e, "history stream not answering (leader election?); retrying");
                    tokio::time::sleep(INFO_RETRY).await;
                }
            }
        }
    }

    /// Warn about each route whose largest message, as the bus carries it, cannot fit the
    /// connected server's `max_payload` (a room message is then refused as too large; a
    /// document snapshot is not written).
    fn check_message_limits(&self) {
        let Some(info) = self.client.try_server_info() else {
            return; // not connected yet: checked once connected
        };
        let mut warned = lock(&self.limits_warned);
        for limit in lock(&self.message_limits).iter() {
            let carried = match limit.what {
                CarriedKind::RoomMessage => envelope_bound(limit.bytes),
                // The document as one update, plus its subject and two headers.
                CarriedKind::DocumentSnapshot => limit.bytes.saturating_add(1024),
            };
            // Once per route and pair of values in the process's life, not on every reload
            // and reconnect.
            if carried <= info.max_payload as u64
                || !warned.insert((limit.clone(), info.max_payload))
            {
                continue;
            }
            match limit.what {
                CarriedKind::RoomMessage => tracing::warn!(
                    route = %limit.route,
                    max_message_bytes = limit.bytes,
                    carried_up_to = carried,
                    max_payload = info.max_payload,
                    "messages near this route's maxMessageBytes cannot fit the NATS server's max_payload once wrapped for the bus (binary payloads travel as base64): they are refused as too large (close 1009 / too_large); raise max_payload or lower maxMessageBytes (docs/nats.md#sizing)"
                ),
                CarriedKind::DocumentSnapshot => tracing::warn!(
                    route = %limit.route,
                    max_document_bytes = limit.bytes,
                    max_payload = info.max_payload,
                    "documents of this route larger than the NATS server's max_payload cannot be written as one snapshot: their logs are not compacted, and edits a pod could not append are kept only in its memory; raise max_payload (up to 64 MB) or lower maxDocumentBytes (docs/documents.md)"
                ),
            }
        }
    }

    /// After a (re)connect: read every namespace's stream again, creating those recorded while
    /// NATS was not connected and those it lost (a restart with empty storage), then have the
    /// pumps compare their streams' epochs (`live.rs`).
    async fn refresh_epochs(&self) {
        let namespaces: Vec<String> = lock(&self.namespaces).keys().cloned().collect();
        for ns in namespaces {
            if let Err(e) = self.bounded(OP_TIMEOUT, self.ensure_stream(&ns)).await {
                tracing::warn!(namespace = %ns, error = %e, "room history not configured yet; the first operation that needs it retries");
            }
        }
        self.epochs.send_modify(|n| *n += 1);
    }

    async fn js_publish(
        &self,
        subject: &str,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError> {
        self.js.publish(subject.to_string(), payload).await?.await
    }

    async fn publish(&self, p: Publish) -> Result<Option<Position>, BusError> {
        check_key(&p.key)?;
        if !self.connected() {
            return Err(self.down());
        }
        let key = p.key.clone();
        let stored = !p.ephemeral && self.history(&key.namespace).is_some();
        let payload = Envelope::of(p, now_ms()).encode();
        let max = self.client.max_payload();
        if payload.len() > max {
            // The server would close the connection for it: refused here, for good.
            return Err(BusError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        if !stored {
            self.client
                .publish(self.subject("eph", &key), payload)
                .await
                .map_err(|e| self.fail("publish", e))?;
            return Ok(None);
        }
        let ns = &key.namespace;
        let subject = self.subject("room", &key);
        let (_, mut epoch, mut read_on) = self.ensure_stream(ns).await?;
        let ack = match self.js_publish(&subject, payload.clone()).await {
            Ok(ack) => ack,
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound && self.connected() => {
                // Deleted behind our back (or lost with its server): recreate it (a new epoch)
                // and publish once more. Nothing was stored by the failed attempt.
                tracing::warn!(namespace = %ns, "history stream missing on publish; recreating it");
                self.forget_epoch(ns);
                (_, epoch, read_on) = self.ensure_stream(ns).await?;
                self.js_publish(&subject, payload)
                    .await
                    .map_err(|e| self.fail("publish", e))?
            }
            Err(e) => return Err(self.fail("publish", e)),
        };
        if self.generation() != read_on {
            // The connection changed while the publish was under way: the stream that stored
            // it may not be the one whose epoch was read (NATS came back with empty storage).
            // Unless the stream is the same, its position cannot be told.
            let (_, now, _) = self.ensure_stream(ns).await?;
            if now != epoch {
                return Err(BusError::Unavailable(format!(
                    "NATS reconnected during the publish and history stream {} was recreated: the message may or may not be stored",
                    self.stream_name(ns)
                )));
            }
        }
        Ok(Some(Position {
            seq: ack.sequence,
            epoch,
        }))
    }

    /// A core publish on `P.events.<ns>`: whoever subscribes gets it, nobody listening is fine.
    async fn notify(&self, ns: &str, event: Bytes) -> Result<(), BusError> {
        check_ns(ns)?;
        if !self.connected() {
            return Err(self.down());
        }
        self.client
            .publish(self.events_subject(ns), event)
            .await
            .map_err(|e| self.fail("notify", e))
    }

    async fn subscribe(self: &Arc<Self>, key: &RoomKey) -> Result<Subscription, BusError> {
        check_key(key)?;
        let history = self.history(&key.namespace).is_some();
        if history && !self.connected() {
            return Err(self.down());
        }
        let sub = |kind: &'static str| {
            let subject = self.subject(kind, key);
            async move {
                self.client
                    .subscribe(subject)
                    .await
                    .map_err(|e| self.fail("subscribe", e))
            }
        };
        // Without history an app pod's message to the room subject is still relayed live.
        let room_core = if history {
            None
        } else {
            Some(sub("room").await?)
        };
        let eph = sub("eph").await?;
        let presence = sub("presence").await?;
        // The server handles a connection's commands in order: once a later request is
        // answered, these subscriptions are in place ("everything published from now on").
        let stored = if history {
            // Start right after the stream's current end.
            let (stream, info, read_on) = self.stream_info(&key.namespace).await?;
            let floor = info.state.last_sequence;
            let subject = self.subject("room", key);
            let ordered = self
                .ordered(&stream, &subject, floor.saturating_add(1))
                .await?;
            Some(StoredFeed {
                stream,
                subject,
                epoch: epoch_of(&info),
                ordered,
                last: floor,
                read_on,
                rewind: false,
                retry_at: None,
            })
        } else {
            self.sync().await;
            None
        };
        // Live delivery starts after the stream's end at subscription (no history: nothing to
        // repair from, a lag is told as it is).
        let start = stored.as_ref().map_or(
            Position {
                seq: 0,
                epoch: NO_HISTORY_EPOCH.into(),
            },
            |f| Position {
                seq: f.last,
                epoch: f.epoch.clone(),
            },
        );
        let (tx, messages) = FeedSender::new(start);
        let presence_rx = messages.presence();
        let pump = Pump {
            epochs: self.epochs.subscribe(),
            inner: self.clone(),
            key: key.clone(),
            stored,
            room_core,
            eph,
            presence,
            tx,
        };
        let task = self.runtime.spawn(pump.run());
        Ok(Subscription {
            messages,
            presence: presence_rx,
            guard: Box::new(Guard(task.abort_handle())),
        })
    }

    /// A round trip to the server (a request nobody answers: the server itself replies "no
    /// responders"). Skipped while disconnected: subscriptions are then registered on reconnect.
    async fn sync(&self) {
        if self.connected() {
            let subject = format!("{}.sync", self.client.new_inbox());
            let _ =
                tokio::time::timeout(JS_TIMEOUT, self.client.request(subject, Bytes::new())).await;
        }
    }

    /// An ordered push consumer on `subject` from `start`. It re-creates itself (from the last
    /// sequence it delivered) after reconnects, server restarts and missed heartbeats.
    async fn ordered(
        &self,
        stream: &stream::Stream<()>,
        subject: &str,
        start: u64,
    ) -> Result<consumer::push::Ordered, BusError> {
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: subject.to_string(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                description: Some("switchboard live room".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| self.fail("create live consumer", e))?;
        consumer
            .messages()
            .await
            .map_err(|e| self.fail("live consumer", e))
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn configure(
        &self,
        namespace: &str,
        retention: Option<Retention>,
    ) -> Result<(), BusError> {
        check_ns(namespace)?;
        let inner = &self.inner;
        match retention.filter(|r| r.max_messages > 0) {
            None => {
                // The stream (if any) is left alone: deleting history is an operator decision.
                lock(&inner.namespaces).remove(namespace);
                Ok(())
            }
            Some(r) => {
                // Recorded first: when NATS is not connected yet (at start, the connection is
                // still being made) the stream is created once it is up, or by the first
                // operation that needs it.
                lock(&inner.namespaces).insert(
                    namespace.to_string(),
                    Namespace {
                        retention: r,
                        epoch: None,
                        read_on: 0,
                        epoch_read: Arc::default(),
                    },
                );
                if !inner.connected() {
                    tracing::debug!(
                        namespace,
                        "room history is configured once NATS is connected"
                    );
                    return Ok(());
                }
                inner
                    .bounded(OP_TIMEOUT, inner.apply_stream(namespace))
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn flush(&self) {
        if let Err(e) = self.inner.client.flush().await {
            tracing::warn!(error = %e, "could not flush the NATS connection at exit");
        }
    }

    async fn publish(&self, msg: Publish) -> Result<Option<Position>, BusError> {
        self.inner
            .bounded(OP_TIMEOUT, self.inner.publish(msg))
            .await
    }

    async fn subscribe(&self, key: &RoomKey) -> Result<Subscription, BusError> {
        self.inner
            .bounded(OP_TIMEOUT, self.inner.subscribe(key))
            .await
    }

    async fn replay_into(
        &self,
        key: &RoomKey,
        since: &Position,
        sink: &mut dyn Sink,
    ) -> Result<Replayed, BusError> {
        self.inner
            .bounded(REPLAY_TIMEOUT, self.inner.replay(key, since, sink))
            .await
    }

    async fn position(&self, key: &RoomKey) -> Result<Position, BusError> {
        self.inner
            .bounded(OP_TIMEOUT, self.inner.position(key))
            .await
    }

    async fn retained_into(
        &self,
        key: &RoomKey,
        sink: &mut dyn Sink,
    ) -> Result<Position, BusError> {
        self.inner
            .bounded(REPLAY_TIMEOUT, self.inner.retained(key, sink))
            .await
    }

    async fn presence_set(
        &self,
        key: &RoomKey,
        member: &Member,
        present: bool,
    ) -> Result<(), BusError> {
        self.inner
            .bounded(OP_TIMEOUT, self.inner.presence_set(key, member, present))
            .await
    }

    async fn presence_list(&self, key: &RoomKey) -> Result<Vec<Member>, BusError> {
        self.inner
            .bounded(OP_TIMEOUT, self.inner.presence_list(key))
            .await
    }

    async fn notify(&self, namespace: &str, event: Bytes) -> Result<(), BusError> {
        self.inner
            .bounded(OP_TIMEOUT, self.inner.notify(namespace, event))
            .await
    }

    fn check_message_limits(&self, routes: Vec<Carried>) {
        *lock(&self.inner.message_limits) = routes;
        self.inner.check_message_limits();
    }

    fn healthy(&self) -> bool {
        self.inner.connected()
    }

    fn reads(&self) -> Option<Arc<dyn super::ReadStore>> {
        Some(Arc::new(reads::NatsReads(self.inner.clone())))
    }

    fn nats(&self) -> Option<super::NatsAccess> {
        Some(super::NatsAccess {
            client: self.inner.client.clone(),
            prefix: self.inner.prefix.clone(),
            replicas: self.inner.replicas,
            runtime: self.inner.runtime.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
