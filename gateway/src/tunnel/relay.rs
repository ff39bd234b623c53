//! The gateway-owned WebSocket tunnel: after the 101, one task relays frames both ways
//! (client -> app, app -> client). Each direction (`Dir`) is a state machine driven from the
//! tunnel's single poll function; the supervisor part of the tunnel owns the timers (keep-alive
//! ping and pong deadline, token expiry, drain, close deadlines) and limit violations, and
//! closes both sides with one code from [`CloseCause`] by having each direction inject a Close
//! frame at the next frame boundary.
//!
//! What an idle tunnel holds: its two streams, this state (two directions with their frame
//! scanners) and one timer entry; no read buffer, no channel, no second task. Data is read into
//! a per-worker scratch buffer inside the poll (`SCRATCH`, never held across an await) and
//! written to the destination from there, frame headers and payload as received (client masks
//! included); only bytes the destination does not take at once are copied into an owned buffer,
//! which is freed when it empties. A direction does not read more while it owes its
//! destination bytes, so a slow reader holds back its source (back-pressure, as before).
//!
//! Written over `AsyncRead + AsyncWrite` so tests drive it with in-memory duplex streams.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

mod direction;

use crate::drain::CloseSignal;
use crate::engine::deflate::Deflate;
use crate::engine::frame::Sender;
use crate::error::{CloseCause, Side};
use direction::{Dir, End};

/// The one timer a tunnel keeps, set to its earliest armed deadline: tokio's [`Sleep`] where
/// the tunnel runs on tokio, the tunnel loop's own on the tunnel threads
/// (`event_loop::LoopSleep`).
pub trait Timer: Future<Output = ()> {
    fn deadline(&self) -> Instant;
    /// Whether the deadline passed and the timer's driver has seen it (no clock read).
    fn is_elapsed(&self) -> bool;
    fn reset(self: Pin<&mut Self>, deadline: Instant);
}

impl Timer for Sleep {
    fn deadline(&self) -> Instant {
        Sleep::deadline(self)
    }

    fn is_elapsed(&self) -> bool {
        Sleep::is_elapsed(self)
    }

    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        Sleep::reset(self, deadline);
    }
}

/// Per-connection limits and timers, fixed when the connection is admitted.
#[derive(Debug, Clone)]
pub struct TunnelLimits {
    pub max_message_bytes: u64,
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// Zero disables keep-alive pings.
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Keep-alive pings toward the app; zero disables them.
    pub app_ping_interval: Duration,
    pub app_pong_timeout: Duration,
    /// How long to wait for the close handshake after a close starts.
    pub close_timeout: Duration,
    /// Close with 4001 at this instant (the token's `exp`).
    pub expires_at: Option<Instant>,
    /// Drain close code/reason and the window to spread closes across.
    pub drain_code: u16,
    pub drain_reason: String,
    pub drain_window: Duration,
    /// permessage-deflate negotiated with the client (the app side stays uncompressed).
    pub deflate: Option<Deflate>,
}

/// Counters for one direction.
#[derive(Clone, Debug)]
pub struct DirCounters {
    pub frames: IntCounter,
    pub bytes: IntCounter,
}

/// How a tunnel ended, for the connection-end log line and metrics.
#[derive(Debug)]
pub struct Outcome {
    pub cause: CloseCause,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The peer close that started the close handshake (the first Close either direction saw).
fn peer_cause(first: u32, side: Side, code: u16) -> CloseCause {
    match first {
        0 => CloseCause::Peer(side, code),
        v => {
            let side = if v >> 16 == 2 {
                Side::Upstream
            } else {
                Side::Downstream
            };
            CloseCause::Peer(side, (v & 0xffff) as u16)
        }
    }
}

/// A tunnel: both streams, both directions, and the supervisor's timers.
struct Tunnel<C, U> {
    client: C,
    upstream: U,
    /// Client -> app.
    c2u: Dir,
    /// App -> client.
    u2c: Dir,
    /// Which ends the supervisor has reacted to.
    c2u_seen: bool,
    u2c_seen: bool,
    limits: TunnelLimits,
    cause: Option<CloseCause>,
    /// Who sent the first Close (side << 16 | code).
    first_close: u32,
    /// "Never": a deadline that is not armed.
    far: Instant,
    close_deadline: Instant,
    /// A client-first close (drain): when the client's time to answer its Close runs out and
    /// the app is to be closed regardless.
    handoff_at: Instant,
    ping_at: Instant,
    pong_deadline: Instant,
    app_ping_at: Instant,
    app_pong_deadline: Instant,
    expiry: Instant,
    drain_at: Instant,
    drain_seen: bool,
    ping_seq: u64,
}

impl<C, U> Tunnel<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    fn new(
        client: C,
        upstream: U,
        limits: TunnelLimits,
        inbound: DirCounters,
        outbound: DirCounters,
        draining: bool,
    ) -> Self {
        let now = Instant::now();
        let far = now + Duration::from_secs(86400 * 365);
        let every = |interval: Duration| {
            if interval.is_zero() {
                far
            } else {
                now + interval
            }
        };
        Tunnel {
            client,
            upstream,
            c2u: Dir::new(Sender::Client, &limits, inbound),
            u2c: Dir::new(Sender::Server, &limits, outbound),
            c2u_seen: false,
            u2c_seen: false,
            cause: None,
            first_close: 0,
            far,
            close_deadline: far,
            handoff_at: far,
            ping_at: every(limits.ping_interval),
            pong_deadline: far,
            app_ping_at: every(limits.app_ping_interval),
            app_pong_deadline: far,
            expiry: limits.expires_at.unwrap_or(far),
            drain_at: if draining {
                now + crate::drain::jitter(limits.drain_window)
            } else {
                far
            },
            drain_seen: draining,
            ping_seq: 0,
            limits,
        }
    }

    /// The gateway started draining: close at a random point of the route's drain window.
    fn drain_signal(&mut self) {
        if !self.drain_seen {
            self.drain_seen = true;
            self.drain_at = Instant::now() + crate::drain::jitter(self.limits.drain_window);
        }
    }

    /// Start a gateway-initiated close (once). A drain closes the client first and keeps
    /// relaying what it still sends until its Close; the app then gets the same Close (the
    /// client's direction sends it). Every other cause closes both sides at once.
    fn initiate(&mut self, c: CloseCause) {
        if self.cause.is_some() {
            return;
        }
        let (code, reason) = (c.code(), c.reason().to_string());
        if matches!(c, CloseCause::Draining { .. }) {
            self.c2u.close_after_source(code, reason.clone());
            self.u2c.close(code, reason, false);
            self.handoff_at = Instant::now() + self.limits.close_timeout;
        } else {
            let fail = c == CloseCause::ProtocolError;
            self.c2u.close(code, reason.clone(), fail);
            self.u2c.close(code, reason, fail);
            self.close_deadline = Instant::now() + self.limits.close_timeout;
        }
        self.cause = Some(c);
    }

    /// Look at what the directions reported. True when something changed.
    fn supervise(&mut self) -> bool {
        let mut changed = false;
        if std::mem::take(&mut self.c2u.pong) {
            self.pong_deadline = self.far;
            changed = true;
        }
        if std::mem::take(&mut self.u2c.pong) {
            self.app_pong_deadline = self.far;
            changed = true;
        }
        for c in [self.c2u.violation.take(), self.u2c.violation.take()]
            .into_iter()
            .flatten()
        {
            self.initiate(*c);
            changed = true;
        }
        // Read the clock only when a direction has just ended (not once per wake-up).
        let close_timeout = self.limits.close_timeout;
        let close_by = || Instant::now() + close_timeout;
        if !self.c2u_seen
            && let Some(end) = self.c2u.done()
        {
            self.c2u_seen = true;
            changed = true;
            match end {
                End::PeerClose(code) => {
                    let c = peer_cause(self.first_close, Side::Downstream, code);
                    self.cause.get_or_insert(c);
                }
                End::SourceGone | End::SourceBroken => {
                    // The client vanished; the app was told. Wait briefly for its reply.
                    self.cause
                        .get_or_insert(CloseCause::Abnormal(Side::Downstream));
                }
                End::CloseAck => {
                    // The client answered the Close we sent it: its handshake is done,
                    // whether or not the app answers its own Close.
                    self.u2c.finish();
                }
                End::DestinationGone | End::Failed => {}
            }
            // The app has its Close now (or is gone): no separate deadline for it.
            self.handoff_at = self.far;
            self.close_deadline = self.close_deadline.min(close_by());
        }
        if !self.u2c_seen
            && let Some(end) = self.u2c.done()
        {
            self.u2c_seen = true;
            changed = true;
            match end {
                End::PeerClose(code) => {
                    let c = peer_cause(self.first_close, Side::Upstream, code);
                    self.cause.get_or_insert(c);
                }
                End::SourceBroken => {
                    // The app's connection broke; the client was sent 1011.
                    self.cause.get_or_insert(CloseCause::UpstreamGone);
                }
                End::SourceGone => {
                    // The app's stream ended without a close frame; that was passed on.
                    self.cause
                        .get_or_insert(CloseCause::Abnormal(Side::Upstream));
                }
                _ => {}
            }
            self.close_deadline = self.close_deadline.min(close_by());
        }
        changed
    }

    /// The armed deadlines: (instant, whether it counts now).
    fn deadlines(&self) -> [(Instant, bool); 10] {
        let open = self.cause.is_none();
        [
            (self.ping_at, open),
            (self.pong_deadline, open),
            (self.app_ping_at, open),
            (self.app_pong_deadline, open),
            (self.expiry, open),
            (self.drain_at, open),
            (self.handoff_at, true),
            (self.close_deadline, true),
            (self.c2u.shutdown_by.unwrap_or(self.far), true),
            (self.u2c.shutdown_by.unwrap_or(self.far), true),
        ]
    }

    fn next_deadline(&self) -> Instant {
        self.deadlines()
            .into_iter()
            .filter(|(_, armed)| *armed)
            .map(|(t, _)| t)
            .min()
            .unwrap_or(self.far)
    }

    /// Act on the deadlines that passed. `Err(())` when the close deadline passed: the
    /// tunnel ends now. `Ok(true)` when something fired.
    fn fire_timers(&mut self, now: Instant) -> Result<bool, ()> {
        if now >= self.close_deadline {
            return Err(());
        }
        let mut fired = self.c2u.shutdown_expired(now) | self.u2c.shutdown_expired(now);
        if now >= self.handoff_at {
            // The client did not answer in time: close the app now, with the same code.
            self.handoff_at = self.far;
            if let Some(c) = &self.cause {
                self.c2u.close(c.code(), c.reason().to_string(), false);
            }
            self.close_deadline = self.close_deadline.min(now + self.limits.close_timeout);
            fired = true;
        }
        if self.cause.is_some() {
            return Ok(fired);
        }
        if now >= self.ping_at {
            self.ping_seq += 1;
            self.u2c.ping(self.ping_seq);
            if self.pong_deadline == self.far {
                self.pong_deadline = now + self.limits.pong_timeout;
            }
            self.ping_at = now + self.limits.ping_interval;
            fired = true;
        }
        if now >= self.app_ping_at {
            self.ping_seq += 1;
            self.c2u.ping(self.ping_seq);
            if self.app_pong_deadline == self.far {
                self.app_pong_deadline = now + self.limits.app_pong_timeout;
            }
            self.app_ping_at = now + self.limits.app_ping_interval;
            fired = true;
        }
        let cause = if now >= self.pong_deadline {
            Some(CloseCause::PongTimeout)
        } else if now >= self.app_pong_deadline {
            Some(CloseCause::UpstreamPongTimeout)
        } else if now >= self.expiry {
            Some(CloseCause::TokenExpired)
        } else if now >= self.drain_at {
            Some(CloseCause::Draining {
                code: self.limits.drain_code,
                reason: self.limits.drain_reason.clone(),
            })
        } else {
            None
        };
        if let Some(c) = cause {
            self.initiate(c);
            fired = true;
        }
        Ok(fired)
    }

    /// Drive both directions and the timers. `Ready` when the tunnel is over.
    fn poll<T: Timer>(&mut self, cx: &mut Context<'_>, mut sleep: Pin<&mut T>) -> Poll<()> {
        loop {
            let mut news = false;
            if self.c2u.done().is_none() {
                news |= self
                    .c2u
                    .poll(
                        cx,
                        &mut self.client,
                        &mut self.upstream,
                        &mut self.first_close,
                    )
                    .is_ready();
            }
            if self.u2c.done().is_none() {
                news |= self
                    .u2c
                    .poll(
                        cx,
                        &mut self.upstream,
                        &mut self.client,
                        &mut self.first_close,
                    )
                    .is_ready();
            }
            news |= self.supervise();
            if self.c2u.done().is_some() && self.u2c.done().is_some() {
                return Poll::Ready(());
            }
            // The clock is read here only when the timer has fired: a deadline that passed is
            // always the sleep's (it is reset to the earliest one below before waiting), so a
            // wake-up for data, the common case, costs the tunnel no clock read (tokio's timer
            // driver reads it once per wake-up of its thread; the tunnel threads' loop only
            // when its timerfd fires).
            if sleep.is_elapsed() {
                match self.fire_timers(Instant::now()) {
                    Err(()) => return Poll::Ready(()),
                    Ok(fired) => news |= fired,
                }
            }
            if news {
                // Commands may wait in a direction that was idle: poll it again.
                continue;
            }
            let next = self.next_deadline();
            if next >= self.far {
                if sleep.is_elapsed() {
                    // Nothing armed after the last one fired: park the sleep far away, so the
                    // next wake-up for data does not read the clock again.
                    sleep.as_mut().reset(self.far);
                }
                return Poll::Pending;
            }
            if sleep.deadline() != next {
                sleep.as_mut().reset(next);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            cause: self
                .cause
                .clone()
                .unwrap_or(CloseCause::Abnormal(Side::Internal)),
            frames_in: self.c2u.frames,
            frames_out: self.u2c.frames,
            bytes_in: self.c2u.bytes,
            bytes_out: self.u2c.bytes,
        }
    }
}

/// Relay frames between `client` and `upstream` until both sides are closed, with the timer
/// `timer` makes (`tokio::time::sleep_until` on tokio; the tunnel threads' loop has its own).
///
/// Not an `async fn`: the tunnel is built here and moved into the future once. An `async fn`
/// keeps its arguments in the future for its whole life beside what is built from them (the
/// streams and limits, ~300 bytes per idle tunnel), and the future returned here is what the
/// connection's task holds while the tunnel idles.
pub fn run<C, U, T>(
    client: C,
    upstream: U,
    limits: TunnelLimits,
    inbound: DirCounters,
    outbound: DirCounters,
    drain: CloseSignal,
    timer: fn(Instant) -> T,
) -> impl Future<Output = Outcome>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    T: Timer,
{
    let draining = drain.is_closed();
    let mut tunnel = Tunnel::new(client, upstream, limits, inbound, outbound, draining);
    // The block uses what it captures in place (never `let x = captured`), so each is stored
    // once.
    async move {
        let sleep = timer(tunnel.far);
        tokio::pin!(sleep);
        // Registers this task once; after that a wake-up reads the signal's flag, no lock.
        let closed = drain.closed();
        tokio::pin!(closed);
        loop {
            let drained = poll_fn(|cx| {
                if !tunnel.drain_seen && closed.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                tunnel.poll(cx, sleep.as_mut()).map(|()| false)
            })
            .await;
            if !drained {
                break;
            }
            tunnel.drain_signal();
        }
        tunnel.outcome()
    }
}

#[cfg(test)]
mod tests;
