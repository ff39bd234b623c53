//! The life of a terminated WebSocket (rooms and documents), in one task: read messages, write
//! what the connection's queue holds (taking more only once the socket took the last batch),
//! keep-alive pings, token expiry, the shutdown drain, the close handshake, and the
//! slow-consumer close. What a message means and what is queued is the [`Handler`]'s business.

use std::future::{Future, poll_fn};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::conn::{Conn, ConnError, Frame, Message};
use super::deflate::Deflate;
use crate::drain::CloseSignal;
use crate::error::{CloseCause, Side};

/// How long a closing connection gets: for its Close frame to be written, and for the peer's
/// Close reply.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long the Close of a slow consumer may take to be written before the socket is dropped.
pub const SLOW_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The ping payload of keep-alives.
const PING: &[u8] = b"sb";

/// Timers and the drain signal of one connection (the route's parts borrowed, not copied).
pub struct Lifecycle<'a> {
    /// Ping period (zero: no pings) and how long the pong may take.
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Close 4001 at this instant (the token's `exp`).
    pub expires_at: Option<Instant>,
    /// Set when the pod drains.
    pub drain: CloseSignal,
    /// The close sent when draining (the route's code and reason).
    pub drain_close: &'a CloseCause,
    /// Drain closes are spread over this window.
    pub drain_window: Duration,
}

/// A connection's outbound queue, as the session loop drains it. The loop holds no future of
/// the queue while it waits: it registers its task's waker, and the queue wakes it when items
/// arrive, when it overflows and when it closes (one consumer per queue).
pub trait Queue {
    /// What the queue holds.
    type Item;

    /// Wake `waker` at the next push, overflow or close (replaces the waker registered before).
    fn register(&self, waker: &Waker);

    /// Whatever is queued now, without waiting.
    fn take_now(&self) -> Vec<Self::Item>;

    /// Whether the queue overflowed (the connection reads too slowly).
    fn is_overflowed(&self) -> bool;

    /// Whether the queue was closed (the session is over on its side).
    fn is_closed(&self) -> bool;
}

/// What a session does with its connection.
pub trait Handler {
    /// The connection's outbound queue.
    type Queue: Queue;

    /// The queue the loop takes items from.
    fn queue(&self) -> &Self::Queue;

    /// The frames of `items`; `Some(cause)` ends the connection after them.
    fn frames(
        &mut self,
        items: Vec<<Self::Queue as Queue>::Item>,
        deflate: Option<&Deflate>,
        out: &mut Vec<Frame>,
    ) -> Option<CloseCause>;

    /// A text or binary message from the peer; `Some(cause)` closes the connection. The loop
    /// holds this future (boxed) only while it runs, never while the connection is idle.
    fn message(&mut self, msg: Message) -> impl Future<Output = Option<CloseCause>>;

    /// The drain closes this connection now: queue a goodbye if the protocol has one.
    fn draining(&mut self) {}

    /// A text or binary message the peer sent after this side began closing with `cause`,
    /// before the peer's Close: nothing can be answered any more, but the handler may still
    /// take what it carries (a document editor's edits that were in flight when its store
    /// failed). Dropped by default. Bounded by the close wait, like the rest of the closing.
    fn closing_message(&mut self, cause: &CloseCause, msg: Message) -> impl Future<Output = ()> {
        let _ = (cause, msg);
        std::future::ready(())
    }
}

/// What woke the loop.
enum Event<T> {
    /// From the connection: a message, an error, the end, or `Ok(None)` when the socket took
    /// everything queued.
    Conn(Option<Result<Option<Message>, ConnError>>),
    /// Queued items (never empty).
    Items(Vec<T>),
    /// The queue closed: the session is over on its side.
    QueueClosed,
    /// The queue overflowed.
    Overflowed,
    /// The pod started draining.
    Drain,
    /// The earliest deadline passed.
    Deadline,
}

/// The deadlines of one connection; one timer sleeps until the earliest.
struct Deadlines {
    ping: Option<Instant>,
    pong: Option<Instant>,
    expiry: Option<Instant>,
    drain: Option<Instant>,
    /// Once closing: why, and when we stop waiting for the peer's Close (boxed: it is set once,
    /// at the end, and would otherwise take 48 bytes of every idle connection's task).
    closing: Option<Box<(CloseCause, Instant)>>,
}

impl Deadlines {
    /// The instant the timer must wake at (while closing, only the close wait counts).
    fn next(&self) -> Option<Instant> {
        match self.closing.as_deref() {
            Some((_, at)) => Some(*at),
            None => [self.ping, self.pong, self.expiry, self.drain]
                .into_iter()
                .flatten()
                .min(),
        }
    }
}

/// Serve `conn` with `handler` until it ends; returns why it ended.
///
/// One poll function waits for everything at once — the socket, the queue (through its
/// registered waker), one timer for the earliest deadline (ping, pong, expiry, drain, close)
/// and the drain signal — so an idle connection's task holds one timer and one drain waiter,
/// not a future per event source.
pub async fn run<S, H>(conn: &mut Conn<S>, life: &mut Lifecycle<'_>, handler: &mut H) -> CloseCause
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    // In a block: what only sets up the loop is not kept in the task while it idles.
    let (mut d, sleep) = {
        let now = Instant::now();
        let d = Deadlines {
            ping: (!life.ping_interval.is_zero()).then(|| now + life.ping_interval),
            pong: None,
            expiry: life.expires_at,
            drain: life.drain.is_closed().then_some(now),
            closing: None,
        };
        let far = now + Duration::from_secs(86400 * 365);
        let sleep = tokio::time::sleep_until(d.next().unwrap_or(far));
        (d, sleep)
    };
    tokio::pin!(sleep);
    let drain = life.drain.closed();
    tokio::pin!(drain);

    loop {
        let ev = poll_fn(|cx| {
            // Every source is looked at before the socket, and deadlines by the clock: a peer
            // that keeps the socket readable (a ping flood, answered inside the connection
            // core) spends the task's cooperative budget on reads, and a timer polled after
            // them would never fire (no expiry, no drain, no close wait).
            let closing = d.closing.is_some();
            let queue = handler.queue();
            if !closing {
                queue.register(cx.waker());
                // A peer that stops reading while its queue overflows: close it now rather
                // than when (if ever) it reads again.
                if queue.is_overflowed() {
                    return Poll::Ready(Event::Overflowed);
                }
            }
            if d.next().is_some_and(|at| at <= Instant::now()) {
                return Poll::Ready(Event::Deadline);
            }
            // Until the drain is seen (its deadline set), not after.
            if d.drain.is_none() && drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Drain);
            }
            if !closing && conn.write_idle() {
                let items = queue.take_now();
                if !items.is_empty() {
                    return Poll::Ready(Event::Items(items));
                }
                if queue.is_closed() {
                    return Poll::Ready(Event::QueueClosed);
                }
            }
            if let Poll::Ready(ev) = conn.poll_next_or_flushed(cx) {
                return Poll::Ready(Event::Conn(ev));
            }
            if let Some(at) = d.next() {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Deadline);
                }
            }
            Poll::Pending
        })
        .await;

        match ev {
            Event::Conn(ev) => {
                let msg = match ev {
                    None => {
                        return d
                            .closing
                            .map_or(CloseCause::Abnormal(Side::Downstream), |c| c.0);
                    }
                    Some(Err(e)) => {
                        if let Some(c) = d.closing {
                            return c.0; // the peer went away while we were closing
                        }
                        let cause = e.cause();
                        if e.sends_close() {
                            return Box::pin(close_now(conn, handler, cause, CLOSE_WAIT)).await;
                        }
                        return cause;
                    }
                    Some(Ok(None)) => continue, // the socket took everything: take more
                    Some(Ok(Some(m))) => m,
                };
                match msg {
                    Message::Close { code, .. } => {
                        // Replies already queued go out before the echo of the Close.
                        if d.closing.is_none() {
                            flush_queue(conn, handler);
                        }
                        let _ = Box::pin(tokio::time::timeout(CLOSE_WAIT, conn.flush())).await;
                        return match d.closing {
                            Some(c) => c.0,
                            None => CloseCause::Peer(Side::Downstream, code.unwrap_or(1005)),
                        };
                    }
                    Message::Pong(_) => d.pong = None,
                    Message::Text(_) | Message::Binary(_) => {
                        if let Some(c) = &d.closing {
                            // Reading on for the peer's Close; what it sent before it saw
                            // ours is the handler's to keep or drop.
                            Box::pin(handler.closing_message(&c.0, msg)).await;
                            continue;
                        }
                        // Boxed: the handler's future exists only while it runs.
                        // Nothing is read while the handler works (a publish waits for the
                        // bus, a hook for the app): the rate limit does not take what the
                        // peer sends meanwhile for a burst.
                        conn.pause_rate(std::time::Instant::now());
                        let closed = Box::pin(handler.message(msg)).await;
                        conn.resume_rate(std::time::Instant::now());
                        if let Some(cause) = closed {
                            d.closing = Some(begin_close(conn, handler, cause));
                        } else if !conn.has_ready() {
                            // The last message read: the tasks it woke on this worker (the
                            // bus's NATS connection writing a publish, members' writers) get
                            // to run before this connection writes its replies, so one
                            // message in flight usually leaves the pod before its ack's
                            // write. Best effort: tokio resumes a yielded task once its
                            // worker runs out of work, at its next maintenance (61 polls)
                            // or at any other wake-up. Not between messages already read: a
                            // publisher's burst is fanned out as a batch, where a yield per
                            // message would write every member once per message (burst
                            // fan-out halved when tried).
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
            Event::Items(items) => {
                // Built per batch: nothing is held while idle.
                let mut frames = Vec::new();
                let end = handler.frames(items, conn.deflate(), &mut frames);
                for f in frames {
                    conn.send(f);
                }
                if let Some(cause) = end {
                    return Box::pin(close_now(conn, handler, cause, CLOSE_WAIT)).await;
                }
            }
            Event::QueueClosed => {
                let cause = CloseCause::Abnormal(Side::Downstream);
                d.closing = Some(Box::new((cause, Instant::now() + CLOSE_WAIT)));
            }
            Event::Overflowed => {
                return Box::pin(close_now(
                    conn,
                    handler,
                    CloseCause::SlowConsumer,
                    SLOW_CLOSE_WAIT,
                ))
                .await;
            }
            Event::Drain => {
                d.drain = Some(Instant::now() + crate::drain::jitter(life.drain_window));
            }
            Event::Deadline => {
                let now = Instant::now();
                let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
                if let Some((cause, at)) = d.closing.as_deref() {
                    if *at <= now {
                        return cause.clone();
                    }
                } else if due(d.pong) {
                    return Box::pin(close_now(
                        conn,
                        handler,
                        CloseCause::PongTimeout,
                        CLOSE_WAIT,
                    ))
                    .await;
                } else if due(d.expiry) {
                    d.closing = Some(begin_close(conn, handler, CloseCause::TokenExpired));
                } else if due(d.drain) {
                    handler.draining();
                    d.closing = Some(begin_close(conn, handler, life.drain_close.clone()));
                } else if due(d.ping) {
                    conn.ping(PING);
                    if d.pong.is_none() {
                        d.pong = Some(now + life.pong_timeout);
                    }
                    d.ping = Some(now + life.ping_interval);
                }
            }
        }
    }
}

/// Queue what is waiting, then our Close; the caller reads on for the peer's Close.
fn begin_close<S, H>(
    conn: &mut Conn<S>,
    handler: &mut H,
    cause: CloseCause,
) -> Box<(CloseCause, Instant)>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    flush_queue(conn, handler);
    conn.close_with(&cause);
    Box::new((cause, Instant::now() + CLOSE_WAIT))
}

/// Queue what is waiting and our Close, give the socket `wait` to take them, and end.
/// Callers box it (and the flush wait after a peer's Close): a close happens once, at the
/// end, and an unboxed close future would be part of every idle connection's task.
async fn close_now<S, H>(
    conn: &mut Conn<S>,
    handler: &mut H,
    cause: CloseCause,
    wait: Duration,
) -> CloseCause
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    if cause != CloseCause::SlowConsumer {
        flush_queue(conn, handler);
    }
    conn.close_with(&cause);
    let _ = tokio::time::timeout(wait, conn.flush()).await;
    cause
}

fn flush_queue<S, H>(conn: &mut Conn<S>, handler: &mut H)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    if handler.queue().is_overflowed() {
        return;
    }
    let mut frames = Vec::new();
    let items = handler.queue().take_now();
    if !items.is_empty() {
        // A close cause from the items (raw rooms' lost messages) yields to the one at hand.
        let _ = handler.frames(items, conn.deflate(), &mut frames);
    }
    for f in frames {
        conn.send(f);
    }
}

#[cfg(test)]
mod tests;
