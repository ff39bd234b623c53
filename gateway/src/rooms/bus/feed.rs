//! The live queue between the bus and the hub for one room on this pod, and what happens when
//! it is full.
//!
//! The bus side never waits (the embedded bus sends under its room lock, the NATS pump must keep
//! reading NATS), so a hub that falls behind (a starved process) fills the queue. From then on
//! the feed is *lagging*: every further message is counted into one [`Lag`] instead of being
//! queued, and once the hub has taken everything queued before it, the lag itself is delivered
//! as [`Delivery::Lagged`], before any later message. The hub answers it by repairing the pod's
//! members from history (a resume from [`Lag::after`]), or, where history cannot cover the gap,
//! by telling each member exactly what it missed (docs/protocol.md, "Delivery guarantees").
//! Nothing is dropped without the members learning of it.
//!
//! A feed costs what it holds: one small shared allocation, queues that allocate only while
//! something waits in them (and are freed once drained), no task and no channel. The hub does
//! not park a task on every room: it registers a [`Consumer`] that the feed wakes when something
//! arrives while the consumer is idle, and the consumer takes everything with
//! [`FeedReceiver::next`] until that says the feed is empty (tests can `recv().await` instead).
//! The same feed carries the room's presence events (dropped, never waited for, when
//! [`room_queue`] of them are already waiting: the presence view repairs itself from listings).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use super::{Position, PresenceEvent, RoomMessage};

/// Default live queue depth between the bus and the hub for one room.
pub const ROOM_QUEUE: usize = 4096;

/// A queue drained back to empty keeps at most this many slots; a bigger one (after a burst) is
/// freed, so an idle room holds no buffer.
const KEEP_SLOTS: usize = 8;

/// What the hub receives from the bus for one room.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next message, in position order.
    Message(RoomMessage),
    /// Messages that did not fit the queue (all of them between the last queued message and
    /// the next one): repair from history or tell the members.
    Lagged(Lag),
}

impl Delivery {
    /// The message, unless this is a lag.
    pub fn into_message(self) -> Option<RoomMessage> {
        match self {
            Self::Message(m) => Some(m),
            Self::Lagged(_) => None,
        }
    }
}

/// Messages a feed could not queue, in one run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lag {
    /// The last stored position queued before the run (a resume from here repairs it).
    pub after: Position,
    /// First and last stored message not queued (`seq` 0: none), in `epoch`. Every stored
    /// message of the room between them was dropped (the feed drops everything while lagging).
    pub first: u64,
    pub last: u64,
    pub epoch: String,
    /// Stored messages not queued.
    pub stored: u64,
    /// Messages without a position (ephemeral ones) not queued: history cannot repair them.
    pub ephemeral: u64,
}

impl Lag {
    fn add(&mut self, msg: &RoomMessage) {
        if msg.seq == 0 {
            self.ephemeral += 1;
            return;
        }
        if self.first == 0 || msg.epoch != self.epoch {
            self.first = msg.seq;
            self.epoch.clone_from(&msg.epoch);
        }
        self.last = msg.seq;
        self.stored += 1;
    }

    /// Messages in the run.
    pub fn messages(&self) -> u64 {
        self.stored + self.ephemeral
    }
}

/// What a consumer takes from a feed.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivery(Delivery),
    Presence(PresenceEvent),
}

/// Who takes a feed's deliveries without a task waiting on it (the hub's local room).
pub trait Consumer: Send + Sync {
    /// The feed has something and the consumer was idle: take everything with
    /// [`FeedReceiver::next`] until it returns `None`. Called without the feed's lock, from the
    /// feeder's task (the embedded bus wakes from the publisher's, before the publisher is
    /// acknowledged) or from [`FeedReceiver::set_consumer`] (under the hub's rooms lock): must
    /// not wait or do the work here (spawn it).
    fn wake(self: Arc<Self>);

    /// As [`Consumer::wake`], from a feeder that is only a pump (the NATS pump: nothing waits
    /// on it but the next delivery): the consumer may take a bounded amount of the work here,
    /// saving a task hand-off, and spawns the rest. By default, [`Consumer::wake`].
    fn wake_here(self: Arc<Self>) {
        self.wake();
    }
}

struct State {
    queue: VecDeque<Delivery>,
    capacity: usize,
    presence: VecDeque<PresenceEvent>,
    /// The last stored position queued (or told of through a delivered lag).
    last_sent: Position,
    /// Boxed: a lag is rare, a feed is per room.
    lag: Option<Box<Lag>>,
    senders: usize,
    receiver_open: bool,
    presence_open: bool,
    consumer: Option<Weak<dyn Consumer>>,
    /// The consumer was woken and has not found the feed empty since.
    woken: bool,
    /// Tasks waiting in `recv` (tests, and a bus used without a hub). Boxed and made on the
    /// first wait: a hub's feed has a consumer instead, and a feed is per room.
    waiting: Option<Box<Waiting>>,
}

/// The task waiting for a delivery and the one waiting for a presence event (one each: a
/// second waiter on the same side replaces the first).
#[derive(Default)]
struct Waiting {
    messages: Option<Waker>,
    presence: Option<Waker>,
}

/// One side's slot in [`Waiting`].
type Slot = fn(&mut Waiting) -> &mut Option<Waker>;

impl Waiting {
    fn messages(&mut self) -> &mut Option<Waker> {
        &mut self.messages
    }

    fn presence(&mut self) -> &mut Option<Waker> {
        &mut self.presence
    }
}

impl State {
    fn pop_delivery(&mut self) -> Option<Delivery> {
        if let Some(d) = self.queue.pop_front() {
            if self.queue.is_empty() && self.queue.capacity() > KEEP_SLOTS {
                self.queue = VecDeque::new();
            }
            return Some(d);
        }
        // Everything queued before the lag is taken: the lag comes next (messages sent
        // meanwhile were counted into it, none overtakes it).
        let lag = self.lag.take()?;
        if lag.last != 0 {
            self.last_sent = Position {
                seq: lag.last,
                epoch: lag.epoch.clone(),
            };
        }
        Some(Delivery::Lagged(*lag))
    }

    fn pop_presence(&mut self) -> Option<PresenceEvent> {
        let ev = self.presence.pop_front();
        if self.presence.is_empty() && self.presence.capacity() > KEEP_SLOTS {
            self.presence = VecDeque::new();
        }
        ev
    }

    /// The task waiting on `slot`'s side, to wake after something was queued there.
    fn waiter(&mut self, slot: Slot) -> Option<Waker> {
        slot(self.waiting.as_mut()?).take()
    }

    /// The consumer to wake after something was queued, once per idle period.
    fn consumer_to_wake(&mut self) -> Option<Arc<dyn Consumer>> {
        if self.woken {
            return None;
        }
        let consumer = self.consumer.as_ref()?.upgrade()?;
        self.woken = true;
        Some(consumer)
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `pop` takes, waiting for it with the task's waker in `slot`; `None` once every
    /// sender is gone and nothing waits. Checked and registered under one lock, so an arrival
    /// in between finds the waker.
    async fn recv<T>(&self, pop: fn(&mut State) -> Option<T>, slot: Slot) -> Option<T> {
        poll_fn(|cx| {
            let mut st = self.lock();
            if let Some(v) = pop(&mut st) {
                return Poll::Ready(Some(v));
            }
            if st.senders == 0 {
                return Poll::Ready(None);
            }
            *slot(st.waiting.get_or_insert_default()) = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A consumer to wake, once the caller holds no lock: waking may release the last reference to
/// the consumer's room, and freeing it unsubscribes (which takes the bus's lock).
#[must_use = "call wake() once no lock is held"]
pub struct Wake(Option<Arc<dyn Consumer>>);

impl Wake {
    pub fn wake(self) {
        if let Some(consumer) = self.0 {
            consumer.wake();
        }
    }

    /// Wake from a pump ([`Consumer::wake_here`]).
    pub(in crate::rooms) fn wake_here(self) {
        if let Some(consumer) = self.0 {
            consumer.wake_here();
        }
    }
}

/// The receiver of the hub is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The bus side of one room's feed. Cheap to clone.
pub struct FeedSender {
    shared: Arc<Shared>,
}

impl Clone for FeedSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for FeedSender {
    fn drop(&mut self) {
        let waiters = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            // The last sender gone: a waiting `recv` returns `None`.
            if st.senders == 0 {
                [st.waiter(Waiting::messages), st.waiter(Waiting::presence)]
            } else {
                [None, None]
            }
        };
        waiters.into_iter().flatten().for_each(Waker::wake);
    }
}

impl FeedSender {
    /// A feed of [`room_queue`] depth whose live delivery starts after `start`.
    pub fn new(start: Position) -> (Self, FeedReceiver) {
        Self::with_capacity(room_queue(), start)
    }

    pub fn with_capacity(capacity: usize, start: Position) -> (Self, FeedReceiver) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                capacity: capacity.max(1),
                presence: VecDeque::new(),
                last_sent: start,
                lag: None,
                senders: 1,
                receiver_open: true,
                presence_open: true,
                consumer: None,
                woken: false,
                waiting: None,
            }),
        });
        (
            Self {
                shared: shared.clone(),
            },
            FeedReceiver { shared },
        )
    }

    /// Whether the hub's receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_open
    }

    /// Queue `msg` without waiting, from a pump that holds no lock (the NATS pump), and wake
    /// the consumer there ([`Consumer::wake_here`]): the consumer may fan out in the caller's
    /// task. Only for a bus's pump (a publisher's task uses [`Self::send_deferred`]).
    pub(in crate::rooms::bus) fn send(&self, msg: RoomMessage) -> Result<(), Closed> {
        self.send_deferred(msg).map(Wake::wake_here)
    }

    /// Queue a presence event from a pump, as [`Self::send`] ([`Self::send_presence_deferred`]).
    pub(in crate::rooms::bus) fn send_presence(&self, ev: PresenceEvent) -> Result<(), Closed> {
        self.send_presence_deferred(ev).map(Wake::wake_here)
    }

    /// Queue `msg` without waiting. While the queue is full (and until the lag has been
    /// delivered) the message is counted into the lag instead. Must be called in position
    /// order, from one place at a time per feed (the bus's room lock, the NATS pump). The
    /// consumer is woken by the returned [`Wake`], once the caller's locks are released.
    pub fn send_deferred(&self, msg: RoomMessage) -> Result<Wake, Closed> {
        let mut st = self.shared.lock();
        if !st.receiver_open {
            return Err(Closed);
        }
        if let Some(lag) = st.lag.as_mut() {
            lag.add(&msg);
            crate::metrics::metrics().room_overflow_messages.inc();
            return Ok(Wake(None));
        }
        if st.queue.len() >= st.capacity {
            let mut lag = Lag {
                after: st.last_sent.clone(),
                ..Lag::default()
            };
            lag.add(&msg);
            st.lag = Some(Box::new(lag));
            drop(st);
            let m = crate::metrics::metrics();
            m.room_overflows.inc();
            m.room_overflow_messages.inc();
            OVERFLOW_LOG.note(&msg.key.namespace, &msg.key.room);
            // The queue is not empty, so the consumer is already awake.
            return Ok(Wake(None));
        }
        if msg.seq != 0 {
            st.last_sent = Position {
                seq: msg.seq,
                epoch: msg.epoch.clone(),
            };
        }
        st.queue.push_back(Delivery::Message(msg));
        let wake = st.consumer_to_wake();
        let waiter = st.waiter(Waiting::messages);
        drop(st);
        if let Some(w) = waiter {
            w.wake();
        }
        Ok(Wake(wake))
    }

    /// Queue a presence event without waiting; dropped when [`room_queue`] events already
    /// wait (presence views repair themselves from listings). `Closed` once the hub's presence
    /// receiver is gone. The consumer is woken by the returned [`Wake`].
    pub fn send_presence_deferred(&self, ev: PresenceEvent) -> Result<Wake, Closed> {
        let mut st = self.shared.lock();
        if !st.presence_open {
            return Err(Closed);
        }
        if st.presence.len() >= st.capacity {
            return Ok(Wake(None));
        }
        st.presence.push_back(ev);
        let wake = st.consumer_to_wake();
        let waiter = st.waiter(Waiting::presence);
        drop(st);
        if let Some(w) = waiter {
            w.wake();
        }
        Ok(Wake(wake))
    }
}

/// The hub side of one room's feed: its messages (and lags). Dropping it closes the feed.
pub struct FeedReceiver {
    shared: Arc<Shared>,
}

impl FeedReceiver {
    /// The room's presence events, from the same feed.
    pub fn presence(&self) -> PresenceReceiver {
        PresenceReceiver {
            shared: self.shared.clone(),
        }
    }

    /// Have `consumer` woken whenever the feed gets something while the consumer is idle (at
    /// once if something waits already). Replaces waiting with [`Self::recv`].
    pub fn set_consumer(&self, consumer: Weak<dyn Consumer>) {
        let wake = {
            let mut st = self.shared.lock();
            st.consumer = Some(consumer);
            st.woken = false;
            if st.queue.is_empty() && st.lag.is_none() && st.presence.is_empty() {
                None
            } else {
                st.consumer_to_wake()
            }
        };
        if let Some(consumer) = wake {
            consumer.wake();
        }
    }

    /// The next delivery, then the next presence event; `None` when nothing waits, and the
    /// consumer is woken again by the next arrival.
    pub fn next(&self) -> Option<Next> {
        let mut st = self.shared.lock();
        if let Some(d) = st.pop_delivery() {
            return Some(Next::Delivery(d));
        }
        if let Some(ev) = st.pop_presence() {
            return Some(Next::Presence(ev));
        }
        st.woken = false;
        None
    }

    /// The next delivery, waiting for it; `None` once every sender is gone and nothing waits.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.shared
            .recv(State::pop_delivery, Waiting::messages)
            .await
    }

    /// The next delivery if one waits.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.shared.lock().pop_delivery()
    }
}

impl Drop for FeedReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receiver_open = false;
        st.queue = VecDeque::new();
        st.lag = None;
        st.consumer = None;
    }
}

/// The hub side of one room's presence events.
pub struct PresenceReceiver {
    shared: Arc<Shared>,
}

impl PresenceReceiver {
    /// The next presence event, waiting for it; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<PresenceEvent> {
        self.shared
            .recv(State::pop_presence, Waiting::presence)
            .await
    }
}

impl Drop for PresenceReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.presence_open = false;
        st.presence = VecDeque::new();
    }
}

/// The live queue depth of a room: [`ROOM_QUEUE`], or in debug builds
/// `SWITCHBOARD_TEST_ROOM_QUEUE` (a test seam: tests make the queue overflow on purpose).
pub fn room_queue() -> usize {
    static DEPTH: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DEPTH.get_or_init(|| {
        if cfg!(debug_assertions) {
            std::env::var("SWITCHBOARD_TEST_ROOM_QUEUE")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(ROOM_QUEUE)
        } else {
            ROOM_QUEUE
        }
    })
}

/// One warning per [`OVERFLOW_LOG_PERIOD`] at most, however many rooms overflow: a starved
/// process must not also flood its log.
static OVERFLOW_LOG: RateLimitedLog = RateLimitedLog::new();
const OVERFLOW_LOG_PERIOD: Duration = Duration::from_secs(10);

struct RateLimitedLog {
    /// Milliseconds since [`log_base`] of the last line (`u64::MAX`: never).
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

fn log_base() -> std::time::Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

impl RateLimitedLog {
    const fn new() -> Self {
        Self {
            last_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether to write a line now; `Some(n)`: yes, with `n` events left unlogged since the
    /// last line.
    fn allow(&self, now: std::time::Instant) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now_ms = now.saturating_duration_since(log_base()).as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX
            || now_ms.saturating_sub(last) >= OVERFLOW_LOG_PERIOD.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    fn note(&self, namespace: &str, room: &str) {
        if let Some(more) = self.allow(std::time::Instant::now()) {
            tracing::warn!(
                namespace,
                room,
                unlogged_overflows = more,
                "room queue full: this pod fell behind; its members are repaired from history or told what they missed (switchboard_room_overflows_total counts every overflow)"
            );
        }
    }
}

#[cfg(test)]
mod tests;
