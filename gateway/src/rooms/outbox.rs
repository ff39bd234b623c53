//! A connection's outbound queue, bounded in bytes. Producers (room fan-out, replies) never
//! wait: an item that would overflow the bound marks the connection as a slow consumer, and
//! its writer closes it (close 4008). The writer takes everything queued at once so a burst
//! goes out in as few writes as the socket allows.
//!
//! The bound covers what the writer has taken but not yet handed to the socket as well: an SSE
//! stream's encoded chunks are [`Outbox::hold`]-charged until the HTTP layer takes them, so a
//! stream that stops reading holds at most `rooms.maxQueueBytes` in all (plus the HTTP layer's
//! own write buffer), whatever its events cost to encode.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::task::AtomicWaker;

use crate::engine::conn::Shared;

/// A room message as every member of the pod gets it: its JSON encoding and position (for SSE
/// ids and cursors), and its WebSocket frames (built once per compression setting). Made once
/// per message and pod; each member's queue holds a pointer to it, never a copy.
#[derive(Debug)]
pub struct Posted {
    pub room: String,
    pub seq: u64,
    pub epoch: String,
    pub json: Arc<str>,
    pub frames: Arc<Shared>,
}

/// Messages of `room` one member will not get (`lost`, docs/protocol.md); `seq`/`epoch`: the
/// last of them (the member's position from now on; `seq` 0: only ephemeral ones).
#[derive(Debug, Clone)]
pub struct LostNotice {
    pub room: String,
    pub seq: u64,
    pub epoch: String,
    pub json: String,
}

/// One queued item: a shared room message (encoded once per pod) or a reply. Small (a pointer
/// or two): a burst into a big room costs one slot per member and message.
#[derive(Debug, Clone)]
pub enum Item {
    /// A room message, shared by every member of the pod.
    Message(Arc<Posted>),
    /// A room message for WebSocket members only (binary encoding, raw relay): its frames,
    /// built once per compression setting for every member of the pod.
    Shared(Arc<Shared>),
    /// Raw relay: an opaque text or binary message.
    RawText(Arc<str>),
    RawBinary(bytes::Bytes),
    /// A protocol reply (ack, error, joined...).
    Reply(String),
    /// Messages this member will not get (rare: boxed, so every other item stays small).
    Lost(Box<LostNotice>),
}

impl Item {
    /// What the item counts against the queue's bound.
    pub fn cost(&self) -> u64 {
        let n = match self {
            Self::Message(m) => m.json.len() + 64,
            Self::Shared(s) => s.payload().len(),
            Self::RawText(t) => t.len(),
            Self::RawBinary(b) => b.len(),
            Self::Reply(r) => r.len(),
            Self::Lost(l) => l.json.len() + 64,
        };
        n as u64 + 16
    }
}

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    bytes: u64,
    /// Bytes the writer took and encoded but has not handed to the socket yet.
    held: u64,
}

impl State {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.held == 0
    }
}

/// Every outbox's queued and held bytes, summed (`switchboard_rooms_queued_bytes`).
fn account(delta: i64) {
    crate::metrics::metrics().rooms_queued_bytes.add(delta);
}

/// The queue. Cheap to share (`Arc<Outbox>`).
pub struct Outbox {
    state: Mutex<State>,
    max_bytes: u64,
    overflowed: AtomicBool,
    closed: AtomicBool,
    /// The writer (one per outbox): woken by a push, an overflow (also while it is blocked on
    /// the socket) and the close. A waker, not a waiting future: an idle writer holds nothing
    /// for its queue.
    writer: AtomicWaker,
}

impl Outbox {
    pub fn new(max_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            max_bytes,
            overflowed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            writer: AtomicWaker::new(),
        })
    }

    /// The queue's bound in bytes (`rooms.maxQueueBytes`).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Queue an item; false (and the connection marked slow) when it does not fit.
    pub fn push(&self, item: Item) -> bool {
        self.queue(item, true)
    }

    /// [`Outbox::push`] from the writer's own task while it runs (a session's reply to the
    /// message it is handling): the writer takes the queue before it waits again, so it is
    /// not woken. Waking the running task would make tokio reschedule it behind every queued
    /// task and unpark another worker to poll it for nothing.
    pub fn push_own(&self, item: Item) -> bool {
        self.queue(item, false)
    }

    fn queue(&self, item: Item, wake: bool) -> bool {
        // Sticky: once an item was refused nothing after it may be queued, or it would go out
        // (with a cursor past the refused one) and the gap would be silent.
        if self.closed.load(Ordering::Acquire) || self.is_overflowed() {
            return false;
        }
        let cost = item.cost();
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            // One item always fits an empty queue (a message may exceed the bound on its own);
            // the bound is on what piles up behind it.
            if !st.is_empty() && st.bytes + st.held + cost > self.max_bytes {
                drop(st);
                self.mark_overflowed();
                return false;
            }
            st.bytes += cost;
            st.items.push_back(item);
        }
        account(cost as i64);
        if wake {
            self.writer.wake();
        }
        true
    }

    /// Charge `n` bytes the writer encoded and still holds (not yet taken by the socket) to
    /// the bound; false (and the connection marked slow) when they do not fit. Like an item,
    /// they always fit when nothing else is queued or held.
    pub fn hold(&self, n: u64) -> bool {
        if self.is_overflowed() {
            return false;
        }
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !st.is_empty() && st.bytes + st.held + n > self.max_bytes {
                drop(st);
                self.mark_overflowed();
                return false;
            }
            st.held += n;
        }
        account(n as i64);
        true
    }

    /// The socket took `n` held bytes.
    pub fn release(&self, n: u64) {
        let released = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let r = n.min(st.held);
            st.held -= r;
            r
        };
        account(-(released as i64));
    }

    /// Take nothing more (as if the next item had not fitted): a long-poll answer whose
    /// backlog read stopped at what the queue could take ends with it, and no later message
    /// goes out with a cursor past what was not read.
    pub fn refuse_more(&self) {
        self.mark_overflowed();
    }

    fn mark_overflowed(&self) {
        self.overflowed.store(true, Ordering::Release);
        self.writer.wake();
    }

    /// Wait for items; returns everything queued (empty only when overflowed or closed).
    /// One consumer at a time (the connection's writer).
    pub async fn take_all(&self) -> Vec<Item> {
        std::future::poll_fn(|cx| {
            // Registered before the checks, so a push in between still wakes us.
            self.writer.register(cx.waker());
            let items = self.take_now();
            if items.is_empty() && !self.is_overflowed() && !self.is_closed() {
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(items)
        })
        .await
    }

    /// Everything queued now, without waiting.
    pub fn take_now(&self) -> Vec<Item> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.items.is_empty() {
            return Vec::new();
        }
        account(-(st.bytes as i64));
        st.bytes = 0;
        // The buffer goes with the items (freed once written): an idle connection's queue
        // holds none.
        Vec::from(std::mem::take(&mut st.items))
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether a push did not fit (the writer closes the connection as a slow consumer).
    pub fn is_overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Stop accepting items and wake the writer.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.writer.wake();
    }

    /// Bytes queued now (items, and encoded bytes held by the writer).
    pub fn queued_bytes(&self) -> u64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.bytes + st.held
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        account(-((st.bytes + st.held) as i64));
    }
}

/// The session loop's view of a connection's outbox.
impl crate::engine::session::Queue for Outbox {
    type Item = Item;

    fn register(&self, waker: &std::task::Waker) {
        self.writer.register(waker);
    }

    fn take_now(&self) -> Vec<Item> {
        Outbox::take_now(self)
    }

    fn is_overflowed(&self) -> bool {
        Outbox::is_overflowed(self)
    }

    fn is_closed(&self) -> bool {
        Outbox::is_closed(self)
    }
}

#[cfg(test)]
mod tests;
