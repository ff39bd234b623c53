//! The life of a terminated WebSocket (rooms and documents), in one task: read messages, write
//! what the connection's queue holds (taking more only once the socket took the last batch),
//! keep-alive pings, token expiry, the shutdown drain, the close handshake, and the
//! slow-consumer close. What a message means and what is queued is the [`Handler`]'s business.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::{Conn, Frame, Message};
use super::deflate::Deflate;
use crate::error::{CloseCause, Side};

/// How long a closing connection gets: for its Close frame to be written, and for the peer's
/// Close reply.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long the Close of a slow consumer may take to be written before the socket is dropped.
pub const SLOW_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The ping payload of keep-alives.
const PING: &[u8] = b"sb";

/// Timers and the drain signal of one connection.
pub struct Lifecycle {
    /// Ping period (zero: no pings) and how long the pong may take.
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Close 4001 at this instant (the token's `exp`).
    pub expires_at: Option<Instant>,
    /// Becomes true when the pod drains.
    pub drain: watch::Receiver<bool>,
    /// The close sent when draining (the route's code and reason).
    pub drain_close: CloseCause,
    /// Drain closes are spread over this window.
    pub drain_window: Duration,
}

/// A connection's outbound queue, as the session loop drains it.
pub trait Queue {
    /// What the queue holds.
    type Item;

    /// Wait for queued items; empty only when the queue is closed or overflowed (cancel-safe:
    /// items are taken only when the future completes).
    fn take(&self) -> impl Future<Output = Vec<Self::Item>>;

    /// Whatever is queued now, without waiting.
    fn take_now(&self) -> Vec<Self::Item>;

    /// Whether the queue overflowed (the connection reads too slowly).
    fn is_overflowed(&self) -> bool;

    /// Resolves once the queue overflows.
    fn overflowed(&self) -> impl Future<Output = ()>;
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

    /// A text or binary message from the peer; `Some(cause)` closes the connection.
    fn message(&mut self, msg: Message) -> impl Future<Output = Option<CloseCause>>;

    /// The drain closes this connection now: queue a goodbye if the protocol has one.
    fn draining(&mut self) {}
}

/// Serve `conn` with `handler` until it ends; returns why it ended.
pub async fn run<S, H>(conn: &mut Conn<S>, life: &mut Lifecycle, handler: &mut H) -> CloseCause
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut ping_at = if life.ping_interval.is_zero() {
        far
    } else {
        Instant::now() + life.ping_interval
    };
    let mut pong_deadline = far;
    let expiry = life.expires_at.unwrap_or(far);
    let mut drain_at = if *life.drain.borrow() {
        Instant::now()
    } else {
        far
    };
    let mut drain_seen = drain_at != far;
    let mut closing: Option<(CloseCause, Instant)> = None;
    let mut frames: Vec<Frame> = Vec::new();

    loop {
        let close_deadline = closing.as_ref().map_or(far, |(_, t)| *t);
        let idle = conn.write_idle();
        tokio::select! {
            ev = conn.next_or_flushed() => {
                let msg = match ev {
                    None => return closing.map_or(CloseCause::Abnormal(Side::Downstream), |(c, _)| c),
                    Some(Err(e)) => {
                        if let Some((c, _)) = closing {
                            return c; // the peer went away while we were closing
                        }
                        let cause = e.cause();
                        if e.sends_close() {
                            return close_now(conn, handler, cause, CLOSE_WAIT).await;
                        }
                        return cause;
                    }
                    Some(Ok(None)) => continue, // the socket took everything: take more
                    Some(Ok(Some(m))) => m,
                };
                match msg {
                    Message::Close { code, .. } => {
                        // Replies already queued go out before the echo of the Close.
                        if closing.is_none() {
                            flush_queue(conn, handler);
                        }
                        let _ = tokio::time::timeout(CLOSE_WAIT, conn.flush()).await;
                        return match closing {
                            Some((c, _)) => c,
                            None => CloseCause::Peer(Side::Downstream, code.unwrap_or(1005)),
                        };
                    }
                    Message::Pong(_) => pong_deadline = far,
                    Message::Text(_) | Message::Binary(_) => {
                        if closing.is_some() {
                            continue; // reading on only for the peer's Close
                        }
                        if let Some(cause) = handler.message(msg).await {
                            closing = Some(begin_close(conn, handler, cause));
                        }
                    }
                }
            }
            items = handler.queue().take(), if idle && closing.is_none() => {
                if items.is_empty() {
                    if handler.queue().is_overflowed() {
                        return close_now(conn, handler, CloseCause::SlowConsumer, SLOW_CLOSE_WAIT).await;
                    }
                    // The queue closed: the session is over on its side.
                    let cause = CloseCause::Abnormal(Side::Downstream);
                    closing = Some((cause, Instant::now() + CLOSE_WAIT));
                    continue;
                }
                let end = handler.frames(items, conn.deflate(), &mut frames);
                for f in frames.drain(..) {
                    conn.send(f);
                }
                if let Some(cause) = end {
                    return close_now(conn, handler, cause, CLOSE_WAIT).await;
                }
            }
            // A peer that stops reading while its queue overflows: close it now rather than
            // when (if ever) it reads again.
            _ = handler.queue().overflowed(), if closing.is_none() => {
                return close_now(conn, handler, CloseCause::SlowConsumer, SLOW_CLOSE_WAIT).await;
            }
            _ = tokio::time::sleep_until(ping_at), if closing.is_none() => {
                conn.ping(PING);
                if pong_deadline == far {
                    pong_deadline = Instant::now() + life.pong_timeout;
                }
                ping_at = Instant::now() + life.ping_interval;
            }
            _ = tokio::time::sleep_until(pong_deadline), if closing.is_none() => {
                return close_now(conn, handler, CloseCause::PongTimeout, CLOSE_WAIT).await;
            }
            _ = tokio::time::sleep_until(expiry), if closing.is_none() => {
                closing = Some(begin_close(conn, handler, CloseCause::TokenExpired));
            }
            changed = life.drain.changed(), if !drain_seen => {
                if changed.is_err() || *life.drain.borrow() {
                    drain_seen = true;
                    drain_at = Instant::now() + crate::drain::jitter(life.drain_window);
                }
            }
            _ = tokio::time::sleep_until(drain_at), if closing.is_none() => {
                handler.draining();
                closing = Some(begin_close(conn, handler, life.drain_close.clone()));
            }
            _ = tokio::time::sleep_until(close_deadline) => {
                return closing.map_or(CloseCause::Abnormal(Side::Downstream), |(c, _)| c);
            }
        }
    }
}

/// Queue what is waiting, then our Close; the caller reads on for the peer's Close.
fn begin_close<S, H>(
    conn: &mut Conn<S>,
    handler: &mut H,
    cause: CloseCause,
) -> (CloseCause, Instant)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    flush_queue(conn, handler);
    conn.close_with(&cause);
    (cause, Instant::now() + CLOSE_WAIT)
}

/// Queue what is waiting and our Close, give the socket `wait` to take them, and end.
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
