//! The live queue between the bus and the hub for one room on this pod, and what happens when
//! it is full.
//!
//! The bus side never waits (the embedded bus sends under its room lock, the NATS pump must keep
//! reading NATS), so a hub that falls behind (a starved process) fills the queue. From then on
//! the feed is *lagging*: every further message is counted into one [`Lag`] instead of being
//! queued, and as soon as the queue has room again the lag itself is queued as
//! [`Delivery::Lagged`], before any later message. The hub answers it by repairing the pod's
//! members from history (a resume from [`Lag::after`]), or, where history cannot cover the gap,
//! by telling each member exactly what it missed (docs/protocol.md, "Delivery guarantees").
//! Nothing is dropped without the members learning of it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Position, RoomMessage};

/// Default live queue depth between the bus and the hub for one room.
pub const ROOM_QUEUE: usize = 4096;

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

#[derive(Default)]
struct State {
    /// The last stored position queued (or told of through a queued lag).
    last_sent: Position,
    lag: Option<Lag>,
}

/// The receiver of the hub is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The bus side of one room's feed. Cheap to clone.
#[derive(Clone)]
pub struct FeedSender {
    tx: mpsc::Sender<Delivery>,
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FeedSender {
    /// A feed of [`room_queue`] depth whose live delivery starts after `start`.
    pub fn new(start: Position) -> (Self, mpsc::Receiver<Delivery>) {
        Self::with_capacity(room_queue(), start)
    }

    pub fn with_capacity(capacity: usize, start: Position) -> (Self, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let state = State {
            last_sent: start,
            lag: None,
        };
        (
            Self {
                tx,
                state: Arc::new(Mutex::new(state)),
            },
            rx,
        )
    }

    /// Whether the hub's receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queue `msg` without waiting. While the queue is full (and until the lag has been queued)
    /// the message is counted into the lag instead. Must be called in position order, from one
    /// place at a time per feed (the bus's room lock, the NATS pump).
    pub fn send(&self, msg: RoomMessage) -> Result<(), Closed> {
        let mut st = lock(&self.state);
        if self.tx.is_closed() {
            return Err(Closed);
        }
        if let Some(lag) = st.lag.as_mut() {
            lag.add(&msg);
            crate::metrics::metrics().room_overflow_messages.inc();
            return Ok(());
        }
        let position = (msg.seq != 0).then(|| Position {
            seq: msg.seq,
            epoch: msg.epoch.clone(),
        });
        match self.tx.try_send(Delivery::Message(msg)) {
            Ok(()) => {
                if let Some(p) = position {
                    st.last_sent = p;
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(Delivery::Message(msg))) => {
                let mut lag = Lag {
                    after: st.last_sent.clone(),
                    ..Lag::default()
                };
                lag.add(&msg);
                st.lag = Some(lag);
                drop(st);
                let m = crate::metrics::metrics();
                m.room_overflows.inc();
                m.room_overflow_messages.inc();
                OVERFLOW_LOG.note(&msg.key.namespace, &msg.key.room);
                self.queue_lag_when_there_is_room();
                Ok(())
            }
            Err(_) => Err(Closed),
        }
    }

    /// Wait (in a task of its own) for room in the queue, then queue the lag with everything
    /// counted into it up to that moment. Under the state lock: no message can slip in between.
    fn queue_lag_when_there_is_room(&self) {
        let tx = self.tx.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let Ok(permit) = tx.reserve().await else {
                return; // the hub is gone
            };
            let mut st = lock(&state);
            if let Some(lag) = st.lag.take() {
                if lag.last != 0 {
                    st.last_sent = Position {
                        seq: lag.last,
                        epoch: lag.epoch.clone(),
                    };
                }
                permit.send(Delivery::Lagged(lag));
            }
        });
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
