//! A test bus: the embedded bus, but a call the test names is held on its way to the bus (as
//! a NATS round trip is, or a JetStream request that gets no answer) until the test releases
//! it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::rooms::bus::memory::MemoryBus;
use crate::rooms::bus::{
    Bus, BusError, Member, Position, Publish, Replayed, Retention, RoomKey, Sink, Subscription,
};

pub(super) struct HeldBus {
    inner: Arc<MemoryBus>,
    /// Hold the next write of a present member.
    pub hold_next_presence: AtomicBool,
    /// Hold every subscription to the room of this name.
    pub hold_subscribe_of: Mutex<Option<String>>,
    /// A held subscription fails (as a JetStream request that timed out) once released.
    pub fail_held: AtomicBool,
    /// Subscriptions made (held ones included).
    pub subscribes: AtomicUsize,
    /// Told when a call is held; the call goes on when `release` is told.
    pub held: tokio::sync::Notify,
    pub release: tokio::sync::Notify,
}

impl HeldBus {
    pub fn new() -> Arc<Self> {
        Arc::new(HeldBus {
            inner: Arc::new(MemoryBus::new()),
            hold_next_presence: false.into(),
            hold_subscribe_of: Mutex::new(None),
            fail_held: false.into(),
            subscribes: 0.into(),
            held: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        })
    }

    async fn hold(&self) {
        self.held.notify_one();
        self.release.notified().await;
    }
}

#[async_trait::async_trait]
impl Bus for HeldBus {
    async fn configure(&self, ns: &str, retention: Option<Retention>) -> Result<(), BusError> {
        self.inner.configure(ns, retention).await
    }
    async fn publish(&self, msg: Publish) -> Result<Option<Position>, BusError> {
        self.inner.publish(msg).await
    }
    async fn subscribe(&self, key: &RoomKey) -> Result<Subscription, BusError> {
        self.subscribes.fetch_add(1, Ordering::SeqCst);
        let held = self.hold_subscribe_of.lock().unwrap().as_deref() == Some(&*key.room);
        if held {
            self.hold().await;
            if self.fail_held.load(Ordering::SeqCst) {
                return Err(BusError::Timeout);
            }
        }
        self.inner.subscribe(key).await
    }
    async fn replay_into(
        &self,
        key: &RoomKey,
        since: &Position,
        sink: &mut dyn Sink,
    ) -> Result<Replayed, BusError> {
        self.inner.replay_into(key, since, sink).await
    }
    async fn position(&self, key: &RoomKey) -> Result<Position, BusError> {
        self.inner.position(key).await
    }
    async fn retained_into(
        &self,
        key: &RoomKey,
        sink: &mut dyn Sink,
    ) -> Result<Position, BusError> {
        self.inner.retained_into(key, sink).await
    }
    async fn presence_set(
        &self,
        key: &RoomKey,
        member: &Member,
        present: bool,
    ) -> Result<(), BusError> {
        if present && self.hold_next_presence.swap(false, Ordering::SeqCst) {
            self.hold().await;
        }
        self.inner.presence_set(key, member, present).await
    }
    async fn presence_list(&self, key: &RoomKey) -> Result<Vec<Member>, BusError> {
        self.inner.presence_list(key).await
    }
    async fn notify(&self, ns: &str, event: bytes::Bytes) -> Result<(), BusError> {
        self.inner.notify(ns, event).await
    }
    fn healthy(&self) -> bool {
        true
    }
}
