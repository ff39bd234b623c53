//! The gateway-owned WebSocket tunnel: after the 101, frames are relayed both ways by two pumps
//! (client -> app, app -> client), each the only writer of its destination. A supervisor owns
//! the timers (keep-alive ping and pong deadline, token expiry, drain) and limit violations, and
//! closes both sides with one code from [`CloseCause`] by asking each pump to inject a Close frame
//! at the next frame boundary.
//!
//! Written over `AsyncRead + AsyncWrite` so tests drive it with in-memory duplex streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use prometheus::IntCounter;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::bucket::TokenBucket;
use crate::engine::frame::{self, Event, OpCode, Scanner, Sender};
use crate::error::{CloseCause, Side};

/// Prefix of the gateway's own keep-alive ping payloads; pongs carrying it are not forwarded.
const PING_MAGIC: &[u8] = b"sb-ka:";
const READ_BUF: usize = 8 * 1024;
/// Longest a pump waits to shut its client stream down cleanly after the close.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// Most bytes relayed from what a source has already sent when a close starts.
const READY_BUDGET: usize = 256 * 1024;

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

enum Cmd {
    Ping(Vec<u8>),
    /// Send Close; with `fail`, also end the connection at once (RFC 6455 §7.1.7 "fail the
    /// WebSocket connection": no waiting for a reply after a protocol error).
    Close {
        code: u16,
        reason: String,
        fail: bool,
    },
    /// A close that starts at the source (the client was sent Close by the other pump): keep
    /// relaying until the source's Close arrives, then send the destination this Close instead
    /// of forwarding the source's.
    CloseAfterSource {
        code: u16,
        reason: String,
    },
    /// The destination's close handshake is complete (it was sent our Close and its own Close
    /// has arrived at the other pump): end its stream now instead of when this pump's source
    /// answers too.
    Finish,
}

enum Report {
    /// A pong from the client.
    Pong,
    /// A pong from the app.
    AppPong,
    Violation(CloseCause),
}

#[derive(Debug)]
enum End {
    /// The source sent Close; it was forwarded.
    PeerClose(u16),
    /// We had sent Close to the destination; the source's Close (the reply) arrived.
    CloseAck,
    /// The source's stream ended (or failed) without a Close frame.
    SourceGone,
    /// The source's stream broke (reset) and the destination was sent a Close of ours
    /// (1011 toward a client whose app went away).
    SourceBroken,
    /// Writing to the destination failed.
    DestinationGone,
    /// We failed the connection (protocol error): Close sent, destination shut down.
    Failed,
}

struct PumpResult {
    end: End,
    frames: u64,
    bytes: u64,
}

#[derive(PartialEq)]
enum Mode {
    Relay,
    /// A close is under way: parse, forward nothing, stop at the source's Close.
    Discard,
    /// Framing is broken: nothing can be parsed; read and drop until EOF.
    Blind,
}

struct Pump<R, W> {
    src: ReadHalf<R>,
    dst: WriteHalf<W>,
    sender: Sender,
    scanner: Scanner,
    cmds: mpsc::Receiver<Cmd>,
    reports: mpsc::Sender<Report>,
    bucket: Option<TokenBucket>,
    counters: DirCounters,
    mode: Mode,
    /// We injected a Close into `dst`.
    close_sent: bool,
    /// A command waiting for `dst` to reach a frame boundary.
    pending: Option<Cmd>,
    /// The Close to send `dst` once the source's Close arrives ([`Cmd::CloseAfterSource`]).
    handoff: Option<(u16, String)>,
    /// `dst`'s stream was ended early ([`Cmd::Finish`]).
    finished: bool,
    /// `dst` has a data frame of ours half written.
    dst_mid_frame: bool,
    /// This pump reported a violation: the supervisor owes `dst` a Close for it.
    violated: bool,
    frames: u64,
    bytes: u64,
    /// Who sent the first Close (side << 16 | code), shared by both pumps: both may finish
    /// before the supervisor looks, so the order it sees them in proves nothing.
    first_close: Arc<AtomicU32>,
}

impl<R: AsyncRead + Send + 'static, W: AsyncWrite + Send + 'static> Pump<R, W> {
    /// The pump reading frames sent by `sender` from `src` and writing them to `dst`; only the
    /// client's direction is rate limited.
    #[allow(clippy::too_many_arguments)]
    fn new(
        src: ReadHalf<R>,
        dst: WriteHalf<W>,
        sender: Sender,
        limits: &TunnelLimits,
        cmds: mpsc::Receiver<Cmd>,
        reports: mpsc::Sender<Report>,
        counters: DirCounters,
        first_close: Arc<AtomicU32>,
    ) -> Self {
        Pump {
            src,
            dst,
            sender,
            scanner: Scanner::new(sender, limits.max_message_bytes),
            cmds,
            reports,
            bucket: (sender == Sender::Client).then(|| {
                TokenBucket::new(
                    limits.messages_per_second,
                    limits.message_burst,
                    std::time::Instant::now(),
                )
            }),
            counters,
            mode: Mode::Relay,
            close_sent: false,
            pending: None,
            handoff: None,
            finished: false,
            dst_mid_frame: false,
            violated: false,
            frames: 0,
            bytes: 0,
            first_close,
        }
    }

    fn out_mask(&self) -> Option<[u8; 4]> {
        // Frames we write toward a server (the app) must be masked; toward a client, not.
        (self.sender == Sender::Client).then(|| rand::rng().random())
    }

    async fn run(mut self) -> PumpResult {
        let mut buf = vec![0u8; READ_BUF];
        let mut out: Vec<u8> = Vec::new();
        let mut cmds_open = true;
        let end = loop {
            if !self.dst_mid_frame
                && let Some(cmd) = self.pending.take()
            {
                match self.inject(cmd).await {
                    Err(end) => break end,
                    Ok(true) => {
                        let _ = self.dst.shutdown().await;
                        break End::Failed;
                    }
                    Ok(false) => {}
                }
            }
            let takes_cmds = cmds_open && self.pending.is_none();
            tokio::select! {
                biased;
                cmd = self.cmds.recv(), if takes_cmds => match cmd {
                    None => cmds_open = false,
                    Some(Cmd::CloseAfterSource { code, reason }) => {
                        self.handoff = Some((code, reason));
                    }
                    Some(Cmd::Finish) => {
                        if self.close_sent && !self.finished {
                            self.finished = true;
                            let _ = self.dst.flush().await;
                            let _ = tokio::time::timeout(SHUTDOWN_WAIT, self.dst.shutdown()).await;
                        }
                    }
                    Some(cmd @ Cmd::Close { fail: false, .. }) => {
                        // What the source sent before the close started goes out before it.
                        // The Close is held as pending meanwhile: if the source ends first
                        // (its own Close can be among what is ready), it is still owed.
                        self.pending = Some(cmd);
                        if let Some(end) = self.forward_ready(&mut buf, &mut out).await {
                            break end;
                        }
                    }
                    Some(cmd) => self.pending = Some(cmd),
                },
                read = self.src.read(&mut buf) => {
                    if let Some(end) = self.relay_read(read, &buf, &mut out).await {
                        break end;
                    }
                }
            }
        };
        self.write_owed_close(&end).await;
        let _ = self.dst.flush().await;
        if self.sender == Sender::Server
            && !self.finished
            && (self.close_sent || matches!(end, End::PeerClose(_)))
        {
            // The client has its Close and nothing follows it: end the stream cleanly (TLS
            // close_notify, then FIN) instead of dropping the socket, which a TLS client sees
            // as a truncated stream. Bounded: a stuck client must not hold the tunnel open.
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, self.dst.shutdown()).await;
        }
        tracing::debug!(sender = ?self.sender, end = ?end, "pump ended");
        PumpResult {
            end,
            frames: self.frames,
            bytes: self.bytes,
        }
    }

    /// The pump is ending: a Close the supervisor asked for (or, after a violation, is about
    /// to ask for) still goes out. The source's own Close or end can overtake the close
    /// command — e.g. an app that answers the Close the other pump sent it while this pump
    /// is still discarding the message it refused — and the destination must get its Close
    /// (1009, 1008, ...) rather than a bare end of stream. Bounded by [`SHUTDOWN_WAIT`].
    async fn write_owed_close(&mut self, end: &End) {
        if self.close_sent
            || self.dst_mid_frame
            || matches!(end, End::PeerClose(_) | End::DestinationGone | End::Failed)
        {
            return;
        }
        let owed = match self.pending.take() {
            Some(cmd @ Cmd::Close { .. }) => Some(cmd),
            _ if self.violated => tokio::time::timeout(SHUTDOWN_WAIT, next_close(&mut self.cmds))
                .await
                .ok()
                .flatten(),
            _ => next_close(&mut self.cmds).now_or_never().flatten(),
        };
        if let Some(cmd) = owed {
            let _ = self.inject(cmd).await;
        }
    }

    /// Handle one read from the source: relay its frames to the destination. `Some` when the
    /// pump is done.
    async fn relay_read(
        &mut self,
        read: std::io::Result<usize>,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<End> {
        let n = match read {
            Ok(0) => return Some(self.source_vanished(false).await),
            Err(_) => return Some(self.source_vanished(true).await),
            Ok(n) => n,
        };
        self.bytes += n as u64;
        self.counters.bytes.inc_by(n as u64);
        if self.mode == Mode::Blind {
            return None;
        }
        out.clear();
        let processed = self.process(&buf[..n], out).await;
        // pingora's client stream buffers writes: flush every chunk so nothing waits.
        if !out.is_empty()
            && (self.dst.write_all(out).await.is_err() || self.dst.flush().await.is_err())
        {
            return Some(End::DestinationGone);
        }
        if out.capacity() > 64 * 1024 {
            *out = Vec::new();
        }
        processed
    }

    /// Relay what the source has already sent (bytes waiting in the socket) without waiting
    /// for more, up to [`READY_BUDGET`]: frames sent before a close starts are delivered
    /// before it, as far as they reached the gateway.
    async fn forward_ready(&mut self, buf: &mut [u8], out: &mut Vec<u8>) -> Option<End> {
        let mut budget = READY_BUDGET;
        while budget > 0 {
            let read = self.src.read(buf).now_or_never()?;
            if let Ok(n) = read {
                budget = budget.saturating_sub(n.max(1));
            }
            if let Some(end) = self.relay_read(read, buf, out).await {
                return Some(end);
            }
        }
        None
    }

    /// The source's TCP stream ended without a Close. During a client-first close the app
    /// still gets the close's Close. Otherwise a clean end (FIN) is mirrored: the
    /// destination's stream is ended the same way, so the tunnel stays transparent. A broken
    /// stream (reset, error) is reported with a Close of ours: 1011 to a client whose app pod
    /// went away, 1001 to an app whose client went away.
    async fn source_vanished(&mut self, broken: bool) -> End {
        if let Some((code, reason)) = self.handoff.take()
            && !self.close_sent
            && !self.dst_mid_frame
        {
            let _ = self
                .inject(Cmd::Close {
                    code,
                    reason,
                    fail: false,
                })
                .await;
            return End::SourceGone;
        }
        if self.mode != Mode::Relay || self.close_sent || self.dst_mid_frame || !broken {
            let _ = self.dst.shutdown().await;
            return End::SourceGone;
        }
        let (code, reason) = match self.sender {
            Sender::Server => (
                CloseCause::UpstreamGone.code(),
                CloseCause::UpstreamGone.reason(),
            ),
            Sender::Client => (1001, "client went away"),
        };
        match self
            .inject(Cmd::Close {
                code,
                reason: reason.to_string(),
                fail: false,
            })
            .await
        {
            Ok(_) => End::SourceBroken,
            Err(_) => End::SourceGone,
        }
    }

    /// Write a frame of ours; `Ok(true)` when the connection is to end now.
    async fn inject(&mut self, cmd: Cmd) -> Result<bool, End> {
        if self.close_sent {
            return Ok(false);
        }
        let mut end_now = false;
        let bytes = match cmd {
            Cmd::Ping(payload) => frame::encode(OpCode::Ping, &payload, self.out_mask()),
            Cmd::CloseAfterSource { code, reason } => {
                self.handoff = Some((code, reason));
                return Ok(false);
            }
            Cmd::Finish => return Ok(false),
            Cmd::Close { code, reason, fail } => {
                end_now = fail;
                self.close_sent = true;
                if self.mode == Mode::Relay {
                    self.mode = Mode::Discard;
                }
                frame::close_frame(code, &reason, self.out_mask())
            }
        };
        if self.dst.write_all(&bytes).await.is_err() || self.dst.flush().await.is_err() {
            return Err(End::DestinationGone);
        }
        Ok(end_now)
    }

    /// Scan one read's worth of input, appending what to forward to `out`.
    async fn process(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<End> {
        let mut pos = 0;
        // Whether the data frame being scanned is forwarded (false once refused or discarding).
        loop {
            let event = match self.scanner.next(input, &mut pos) {
                Ok(Some(ev)) => ev,
                Ok(None) => return None,
                Err(_) => {
                    self.mode = Mode::Blind;
                    self.violated = true;
                    let _ = self
                        .reports
                        .send(Report::Violation(CloseCause::ProtocolError))
                        .await;
                    return None;
                }
            };
            match event {
                Event::Header(h) => {
                    self.frames += 1;
                    self.counters.frames.inc();
                    if self.mode != Mode::Relay {
                        continue;
                    }
                    let limited = h.starts_message
                        && self
                            .bucket
                            .as_mut()
                            .is_some_and(|b| !b.try_take(std::time::Instant::now()));
                    if h.too_big || limited {
                        let cause = if h.too_big {
                            CloseCause::MessageTooBig
                        } else {
                            CloseCause::RateLimited
                        };
                        self.mode = Mode::Discard;
                        self.violated = true;
                        let _ = self.reports.send(Report::Violation(cause)).await;
                        continue;
                    }
                    out.extend_from_slice(&h.raw);
                    self.dst_mid_frame = h.payload_len > 0;
                }
                Event::Payload(p) => {
                    if self.mode == Mode::Relay && self.dst_mid_frame {
                        out.extend_from_slice(p);
                        self.dst_mid_frame = !self.scanner.at_boundary();
                    }
                }
                Event::Control(c) => {
                    self.frames += 1;
                    self.counters.frames.inc();
                    match c.opcode {
                        OpCode::Close => {
                            if let Some((code, reason)) = self.handoff.take()
                                && !self.close_sent
                            {
                                // The source answered the Close it was sent: now the
                                // destination gets the same close (not the source's code).
                                out.extend_from_slice(&frame::close_frame(
                                    code,
                                    &reason,
                                    self.out_mask(),
                                ));
                                self.close_sent = true;
                                self.mode = Mode::Discard;
                                return Some(End::CloseAck);
                            }
                            if self.mode == Mode::Relay {
                                out.extend_from_slice(&c.raw);
                                let code = c.close_code().unwrap_or(1005);
                                let side = if self.sender == Sender::Client { 1 } else { 2 };
                                let _ = self.first_close.compare_exchange(
                                    0,
                                    (side << 16) | u32::from(code),
                                    Ordering::AcqRel,
                                    Ordering::Acquire,
                                );
                                return Some(End::PeerClose(code));
                            }
                            return Some(End::CloseAck);
                        }
                        OpCode::Pong => {
                            let _ = self.reports.try_send(match self.sender {
                                Sender::Client => Report::Pong,
                                Sender::Server => Report::AppPong,
                            });
                            if !c.payload.starts_with(PING_MAGIC) && self.mode == Mode::Relay {
                                out.extend_from_slice(&c.raw);
                            }
                        }
                        _ => {
                            if self.mode == Mode::Relay {
                                out.extend_from_slice(&c.raw);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The next Close command on `cmds`, skipping pings and the like; `None` once it is closed.
async fn next_close(cmds: &mut mpsc::Receiver<Cmd>) -> Option<Cmd> {
    loop {
        match cmds.recv().await? {
            cmd @ Cmd::Close { .. } => return Some(cmd),
            _ => continue,
        }
    }
}

/// The peer close that started the close handshake (the first Close either pump saw).
fn peer_cause(first: &AtomicU32, side: Side, code: u16) -> CloseCause {
    match first.load(Ordering::Acquire) {
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

/// Relay frames between `client` and `upstream` until both sides are closed.
pub async fn run<C, U>(
    client: C,
    upstream: U,
    limits: TunnelLimits,
    inbound: DirCounters,
    outbound: DirCounters,
    mut drain: watch::Receiver<bool>,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    U: AsyncRead + AsyncWrite + Send + 'static,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (up_r, up_w) = tokio::io::split(upstream);
    let first_close = Arc::new(AtomicU32::new(0));
    let (report_tx, mut reports) = mpsc::channel(8);
    let (to_up_tx, to_up_rx) = mpsc::channel(4);
    let (to_client_tx, to_client_rx) = mpsc::channel(4);
    let c2u = Pump::new(
        client_r,
        up_w,
        Sender::Client,
        &limits,
        to_up_rx,
        report_tx.clone(),
        inbound,
        first_close.clone(),
    );
    let u2c = Pump::new(
        up_r,
        client_w,
        Sender::Server,
        &limits,
        to_client_rx,
        report_tx,
        outbound,
        first_close.clone(),
    );
    let mut c2u = tokio::spawn(c2u.run());
    let mut u2c = tokio::spawn(u2c.run());
    let (mut c2u_done, mut u2c_done) = (None::<PumpResult>, None::<PumpResult>);

    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut cause: Option<CloseCause> = None;
    let mut close_deadline = far;
    // A client-first close (drain): when the client's time to answer its Close runs out and
    // the app is to be closed regardless.
    let mut handoff_at = far;
    let every = |interval: Duration| {
        if interval.is_zero() {
            far
        } else {
            Instant::now() + interval
        }
    };
    let mut ping_at = every(limits.ping_interval);
    let mut pong_deadline = far;
    let mut app_ping_at = every(limits.app_ping_interval);
    let mut app_pong_deadline = far;
    let expiry = limits.expires_at.unwrap_or(far);
    let mut drain_at = far;
    let mut drain_seen = *drain.borrow();
    if drain_seen {
        drain_at = Instant::now() + crate::drain::jitter(limits.drain_window);
    }
    let mut ping_seq: u64 = 0;
    let ping_payload = |seq: u64| {
        let mut payload = PING_MAGIC.to_vec();
        payload.extend_from_slice(seq.to_string().as_bytes());
        payload
    };

    // Start a gateway-initiated close (once). A drain closes the client first and keeps
    // relaying what it still sends until its Close; the app then gets the same Close (the
    // c2u pump sends it). Every other cause closes both sides at once.
    let initiate = |c: CloseCause,
                    cause: &mut Option<CloseCause>,
                    close_deadline: &mut Instant,
                    handoff_at: &mut Instant| {
        if cause.is_some() {
            return;
        }
        let (code, reason) = (c.code(), c.reason().to_string());
        if matches!(c, CloseCause::Draining { .. }) {
            let _ = to_up_tx.try_send(Cmd::CloseAfterSource {
                code,
                reason: reason.clone(),
            });
            let _ = to_client_tx.try_send(Cmd::Close {
                code,
                reason,
                fail: false,
            });
            *handoff_at = Instant::now() + limits.close_timeout;
        } else {
            let fail = c == CloseCause::ProtocolError;
            let _ = to_up_tx.try_send(Cmd::Close {
                code,
                reason: reason.clone(),
                fail,
            });
            let _ = to_client_tx.try_send(Cmd::Close { code, reason, fail });
            *close_deadline = Instant::now() + limits.close_timeout;
        }
        *cause = Some(c);
    };
    // Pings never take the last command slot: a Close must always fit.
    let ping = |tx: &mpsc::Sender<Cmd>, seq: u64| {
        if tx.capacity() > 1 {
            let _ = tx.try_send(Cmd::Ping(ping_payload(seq)));
        }
    };

    loop {
        if c2u_done.is_some() && u2c_done.is_some() {
            break;
        }
        tokio::select! {
            r = &mut c2u, if c2u_done.is_none() => {
                let r = r.unwrap_or(PumpResult { end: End::SourceGone, frames: 0, bytes: 0 });
                match r.end {
                    End::PeerClose(code) => {
                        cause.get_or_insert(peer_cause(&first_close, Side::Downstream, code));
                    }
                    End::SourceGone | End::SourceBroken => {
                        // The client vanished; the pump told the app. Wait briefly for its reply.
                        cause.get_or_insert(CloseCause::Abnormal(Side::Downstream));
                    }
                    End::CloseAck => {
                        // The client answered the Close we sent it: its handshake is done,
                        // whether or not the app answers its own Close.
                        let _ = to_client_tx.try_send(Cmd::Finish);
                    }
                    End::DestinationGone | End::Failed => {}
                }
                // The app has its Close now (or is gone): no separate deadline for it.
                handoff_at = far;
                close_deadline = close_deadline.min(Instant::now() + limits.close_timeout);
                c2u_done = Some(r);
            }
            r = &mut u2c, if u2c_done.is_none() => {
                let r = r.unwrap_or(PumpResult { end: End::SourceGone, frames: 0, bytes: 0 });
                match r.end {
                    End::PeerClose(code) => {
                        cause.get_or_insert(peer_cause(&first_close, Side::Upstream, code));
                    }
                    End::SourceBroken => {
                        // The app's connection broke; the pump sent the client 1011.
                        cause.get_or_insert(CloseCause::UpstreamGone);
                    }
                    End::SourceGone => {
                        // The app's stream ended without a close frame; the pump passed that on.
                        cause.get_or_insert(CloseCause::Abnormal(Side::Upstream));
                    }
                    _ => {}
                }
                close_deadline = close_deadline.min(Instant::now() + limits.close_timeout);
                u2c_done = Some(r);
            }
            Some(report) = reports.recv() => match report {
                Report::Pong => pong_deadline = far,
                Report::AppPong => app_pong_deadline = far,
                Report::Violation(c) => {
                    initiate(c, &mut cause, &mut close_deadline, &mut handoff_at)
                }
            },
            _ = tokio::time::sleep_until(ping_at), if cause.is_none() => {
                ping_seq += 1;
                ping(&to_client_tx, ping_seq);
                if pong_deadline == far {
                    pong_deadline = Instant::now() + limits.pong_timeout;
                }
                ping_at = Instant::now() + limits.ping_interval;
            }
            _ = tokio::time::sleep_until(pong_deadline), if cause.is_none() => {
                initiate(CloseCause::PongTimeout, &mut cause, &mut close_deadline, &mut handoff_at);
            }
            _ = tokio::time::sleep_until(app_ping_at), if cause.is_none() => {
                ping_seq += 1;
                ping(&to_up_tx, ping_seq);
                if app_pong_deadline == far {
                    app_pong_deadline = Instant::now() + limits.app_pong_timeout;
                }
                app_ping_at = Instant::now() + limits.app_ping_interval;
            }
            _ = tokio::time::sleep_until(app_pong_deadline), if cause.is_none() => {
                initiate(
                    CloseCause::UpstreamPongTimeout,
                    &mut cause,
                    &mut close_deadline,
                    &mut handoff_at,
                );
            }
            _ = tokio::time::sleep_until(expiry), if cause.is_none() => {
                initiate(CloseCause::TokenExpired, &mut cause, &mut close_deadline, &mut handoff_at);
            }
            changed = drain.changed(), if !drain_seen => {
                if changed.is_err() || *drain.borrow() {
                    drain_seen = true;
                    drain_at = Instant::now() + crate::drain::jitter(limits.drain_window);
                }
            }
            _ = tokio::time::sleep_until(drain_at), if cause.is_none() => {
                let c = CloseCause::Draining { code: limits.drain_code, reason: limits.drain_reason.clone() };
                initiate(c, &mut cause, &mut close_deadline, &mut handoff_at);
            }
            _ = tokio::time::sleep_until(handoff_at) => {
                // The client did not answer in time: close the app now, with the same code.
                handoff_at = far;
                if let Some(c) = &cause {
                    let _ = to_up_tx.try_send(Cmd::Close {
                        code: c.code(),
                        reason: c.reason().to_string(),
                        fail: false,
                    });
                }
                close_deadline = close_deadline.min(Instant::now() + limits.close_timeout);
            }
            _ = tokio::time::sleep_until(close_deadline) => break,
        }
    }
    c2u.abort();
    u2c.abort();
    let (fi, bi) = c2u_done.as_ref().map_or((0, 0), |r| (r.frames, r.bytes));
    let (fo, bo) = u2c_done.as_ref().map_or((0, 0), |r| (r.frames, r.bytes));
    Outcome {
        cause: cause.unwrap_or(CloseCause::Abnormal(Side::Internal)),
        frames_in: fi,
        frames_out: fo,
        bytes_in: bi,
        bytes_out: bo,
    }
}

#[cfg(test)]
mod tests;
