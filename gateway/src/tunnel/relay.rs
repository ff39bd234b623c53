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

use prometheus::IntCounter;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::bucket::TokenBucket;
use super::frame::{self, Event, OpCode, Scanner, Sender};
use crate::error::{CloseCause, Side};

/// Prefix of the gateway's own keep-alive ping payloads; pongs carrying it are not forwarded.
const PING_MAGIC: &[u8] = b"sb-ka:";
const READ_BUF: usize = 8 * 1024;
/// Longest a pump waits to shut its client stream down cleanly after the close.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Per-connection limits and timers, fixed when the connection is admitted.
#[derive(Debug, Clone)]
pub struct TunnelLimits {
    pub max_message_bytes: u64,
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// Zero disables keep-alive pings.
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
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
}

enum Report {
    Pong,
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
    /// `dst` has a data frame of ours half written.
    dst_mid_frame: bool,
    frames: u64,
    bytes: u64,
    /// Who sent the first Close (side << 16 | code), shared by both pumps: both may finish
    /// before the supervisor looks, so the order it sees them in proves nothing.
    first_close: Arc<AtomicU32>,
}

impl<R: AsyncRead + Send + 'static, W: AsyncWrite + Send + 'static> Pump<R, W> {
    fn out_mask(&self) -> Option<[u8; 4]> {
        // Frames we write toward a server (the app) must be masked; toward a client, not.
        (self.sender == Sender::Client).then(|| rand::rng().random())
    }

    async fn run(mut self) -> PumpResult {
        let mut buf = vec![0u8; READ_BUF];
        let mut out: Vec<u8> = Vec::new();
        let mut cmds_open = true;
        let end = loop {
            let injectable = cmds_open && !self.dst_mid_frame;
            tokio::select! {
                biased;
                cmd = self.cmds.recv(), if injectable => match cmd {
                    None => cmds_open = false,
                    Some(cmd) => match self.inject(cmd).await {
                        Err(end) => break end,
                        Ok(true) => {
                            let _ = self.dst.shutdown().await;
                            break End::Failed;
                        }
                        Ok(false) => {}
                    },
                },
                read = self.src.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => {
                            self.source_vanished(false).await;
                            break End::SourceGone;
                        }
                        Err(_) => {
                            self.source_vanished(true).await;
                            break End::SourceGone;
                        }
                        Ok(n) => n,
                    };
                    self.bytes += n as u64;
                    self.counters.bytes.inc_by(n as u64);
                    if self.mode == Mode::Blind {
                        continue;
                    }
                    out.clear();
                    let processed = self.process(&buf[..n], &mut out).await;
                    // pingora's client stream buffers writes: flush every chunk so nothing waits.
                    if !out.is_empty()
                        && (self.dst.write_all(&out).await.is_err() || self.dst.flush().await.is_err())
                    {
                        break End::DestinationGone;
                    }
                    if out.capacity() > 64 * 1024 {
                        out = Vec::new();
                    }
                    if let Some(end) = processed {
                        break end;
                    }
                }
            }
        };
        let _ = self.dst.flush().await;
        if self.sender == Sender::Server && (self.close_sent || matches!(end, End::PeerClose(_))) {
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

    /// The source's TCP stream ended without a Close. A clean end (FIN) is mirrored: the
    /// destination's stream is ended the same way, so the tunnel stays transparent. A broken
    /// stream (reset, error) is reported with a Close of ours: 1011 to a client whose app pod
    /// went away, 1001 to an app whose client went away.
    async fn source_vanished(&mut self, broken: bool) {
        if self.mode != Mode::Relay || self.close_sent || self.dst_mid_frame || !broken {
            let _ = self.dst.shutdown().await;
            return;
        }
        let (code, reason) = match self.sender {
            Sender::Server => (
                CloseCause::UpstreamGone.code(),
                CloseCause::UpstreamGone.reason(),
            ),
            Sender::Client => (1001, "client went away"),
        };
        let _ = self
            .inject(Cmd::Close {
                code,
                reason: reason.to_string(),
                fail: false,
            })
            .await;
    }

    /// Write a frame of ours; `Ok(true)` when the connection is to end now.
    async fn inject(&mut self, cmd: Cmd) -> Result<bool, End> {
        if self.close_sent {
            return Ok(false);
        }
        let mut end_now = false;
        let bytes = match cmd {
            Cmd::Ping(payload) => frame::encode(OpCode::Ping, &payload, self.out_mask()),
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
                        OpCode::Pong if self.sender == Sender::Client => {
                            let _ = self.reports.try_send(Report::Pong);
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
    let c2u = Pump {
        src: client_r,
        dst: up_w,
        sender: Sender::Client,
        scanner: Scanner::new(Sender::Client, limits.max_message_bytes),
        cmds: to_up_rx,
        reports: report_tx.clone(),
        bucket: Some(TokenBucket::new(
            limits.messages_per_second,
            limits.message_burst,
            std::time::Instant::now(),
        )),
        counters: inbound,
        mode: Mode::Relay,
        close_sent: false,
        dst_mid_frame: false,
        frames: 0,
        bytes: 0,
        first_close: first_close.clone(),
    };
    let u2c = Pump {
        src: up_r,
        dst: client_w,
        sender: Sender::Server,
        scanner: Scanner::new(Sender::Server, limits.max_message_bytes),
        cmds: to_client_rx,
        reports: report_tx,
        bucket: None,
        counters: outbound,
        mode: Mode::Relay,
        close_sent: false,
        dst_mid_frame: false,
        frames: 0,
        bytes: 0,
        first_close: first_close.clone(),
    };
    let mut c2u = tokio::spawn(c2u.run());
    let mut u2c = tokio::spawn(u2c.run());
    let (mut c2u_done, mut u2c_done) = (None::<PumpResult>, None::<PumpResult>);

    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut cause: Option<CloseCause> = None;
    let mut close_deadline = far;
    let mut ping_at = if limits.ping_interval.is_zero() {
        far
    } else {
        Instant::now() + limits.ping_interval
    };
    let mut pong_deadline = far;
    let expiry = limits.expires_at.unwrap_or(far);
    let mut drain_at = far;
    let mut drain_seen = *drain.borrow();
    if drain_seen {
        drain_at = Instant::now() + crate::drain::jitter(limits.drain_window);
    }
    let mut ping_seq: u64 = 0;

    // Start a gateway-initiated close of both sides (once).
    let initiate = |c: CloseCause, cause: &mut Option<CloseCause>, close_deadline: &mut Instant| {
        if cause.is_some() {
            return;
        }
        let (code, reason) = (c.code(), c.reason().to_string());
        let fail = c == CloseCause::ProtocolError;
        let _ = to_up_tx.try_send(Cmd::Close {
            code,
            reason: reason.clone(),
            fail,
        });
        let _ = to_client_tx.try_send(Cmd::Close { code, reason, fail });
        *cause = Some(c);
        *close_deadline = Instant::now() + limits.close_timeout;
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
                        close_deadline = close_deadline.min(Instant::now() + limits.close_timeout);
                    }
                    End::SourceGone => {
                        // The client vanished; the pump told the app. Wait briefly for its reply.
                        cause.get_or_insert(CloseCause::Abnormal(Side::Downstream));
                        close_deadline = close_deadline.min(Instant::now() + limits.close_timeout);
                    }
                    End::CloseAck | End::DestinationGone | End::Failed => {
                        close_deadline = close_deadline.min(Instant::now() + limits.close_timeout);
                    }
                }
                c2u_done = Some(r);
            }
            r = &mut u2c, if u2c_done.is_none() => {
                let r = r.unwrap_or(PumpResult { end: End::SourceGone, frames: 0, bytes: 0 });
                match r.end {
                    End::PeerClose(code) => {
                        cause.get_or_insert(peer_cause(&first_close, Side::Upstream, code));
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
                Report::Violation(c) => initiate(c, &mut cause, &mut close_deadline),
            },
            _ = tokio::time::sleep_until(ping_at), if cause.is_none() => {
                ping_seq += 1;
                let mut payload = PING_MAGIC.to_vec();
                payload.extend_from_slice(ping_seq.to_string().as_bytes());
                let _ = to_client_tx.try_send(Cmd::Ping(payload));
                if pong_deadline == far {
                    pong_deadline = Instant::now() + limits.pong_timeout;
                }
                ping_at = Instant::now() + limits.ping_interval;
            }
            _ = tokio::time::sleep_until(pong_deadline), if cause.is_none() => {
                initiate(CloseCause::PongTimeout, &mut cause, &mut close_deadline);
            }
            _ = tokio::time::sleep_until(expiry), if cause.is_none() => {
                initiate(CloseCause::TokenExpired, &mut cause, &mut close_deadline);
            }
            changed = drain.changed(), if !drain_seen => {
                if changed.is_err() || *drain.borrow() {
                    drain_seen = true;
                    drain_at = Instant::now() + crate::drain::jitter(limits.drain_window);
                }
            }
            _ = tokio::time::sleep_until(drain_at), if cause.is_none() => {
                let c = CloseCause::Draining { code: limits.drain_code, reason: limits.drain_reason.clone() };
                initiate(c, &mut cause, &mut close_deadline);
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
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    fn counters() -> DirCounters {
        DirCounters {
            frames: IntCounter::new("f", "f").expect("counter"),
            bytes: IntCounter::new("b", "b").expect("counter"),
        }
    }

    fn limits() -> TunnelLimits {
        TunnelLimits {
            max_message_bytes: 1000,
            messages_per_second: 100,
            message_burst: 10,
            ping_interval: Duration::ZERO,
            pong_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_secs(2),
            expires_at: None,
            drain_code: 1012,
            drain_reason: "restart".into(),
            drain_window: Duration::from_secs(1),
        }
    }

    struct Harness {
        client: DirectionReader,
        upstream: DirectionReader,
        drain: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Outcome>,
    }

    /// One test-side end: writes raw frames, reads frames back with the scanner.
    struct DirectionReader {
        io: DuplexStream,
        scanner: Scanner,
        buf: Vec<u8>,
    }

    #[derive(Debug, PartialEq)]
    enum Got {
        Data(Vec<u8>),
        Close(Option<u16>),
        Ping,
        Eof,
    }

    impl DirectionReader {
        async fn send(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.expect("write");
        }

        async fn next(&mut self) -> Got {
            let mut data = Vec::new();
            loop {
                let mut pos = 0;
                let buf = std::mem::take(&mut self.buf);
                while let Some(ev) = self.scanner.next(&buf, &mut pos).expect("valid frames") {
                    match ev {
                        Event::Header(_) => {}
                        Event::Payload(p) => data.extend_from_slice(p),
                        Event::Control(c) if c.opcode == OpCode::Close => {
                            self.buf = buf[pos..].to_vec();
                            return Got::Close(c.close_code());
                        }
                        Event::Control(c) if c.opcode == OpCode::Ping => {
                            self.buf = buf[pos..].to_vec();
                            return Got::Ping;
                        }
                        Event::Control(_) => {}
                    }
                    if self.scanner.at_boundary() && !data.is_empty() && !self.scanner.in_message()
                    {
                        self.buf = buf[pos..].to_vec();
                        return Got::Data(data);
                    }
                }
                let mut chunk = vec![0u8; 4096];
                match self.io.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Got::Eof,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }

    const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    fn start(l: TunnelLimits) -> Harness {
        let (client_test, client_gw) = tokio::io::duplex(64 * 1024);
        let (up_test, up_gw) = tokio::io::duplex(64 * 1024);
        let (drain, drain_rx) = watch::channel(false);
        let task = tokio::spawn(run(client_gw, up_gw, l, counters(), counters(), drain_rx));
        Harness {
            // The test's client end reads what the gateway sends to clients (server frames).
            client: DirectionReader {
                io: client_test,
                scanner: Scanner::new(Sender::Server, u64::MAX),
                buf: vec![],
            },
            upstream: DirectionReader {
                io: up_test,
                scanner: Scanner::new(Sender::Client, u64::MAX),
                buf: vec![],
            },
            drain,
            task,
        }
    }

    #[tokio::test]
    async fn data_frames_pass_both_ways_unchanged() {
        let mut h = start(limits());
        h.client
            .send(&frame::encode(OpCode::Text, b"hello", MASK))
            .await;
        assert_eq!(
            h.upstream.next().await,
            Got::Data(
                b"hello"
                    .iter()
                    .zip([1u8, 2, 3, 4].iter().cycle())
                    .map(|(b, m)| b ^ m)
                    .collect()
            )
        );
        h.upstream
            .send(&frame::encode(OpCode::Binary, b"back", None))
            .await;
        assert_eq!(h.client.next().await, Got::Data(b"back".to_vec()));
    }

    #[tokio::test]
    async fn close_frames_pass_through_with_their_codes_and_end_the_tunnel() {
        let mut h = start(limits());
        h.client.send(&frame::close_frame(4321, "bye", MASK)).await;
        assert_eq!(h.upstream.next().await, Got::Close(Some(4321)));
        h.upstream.send(&frame::close_frame(4321, "", None)).await;
        assert_eq!(h.client.next().await, Got::Close(Some(4321)));
        let out = h.task.await.expect("tunnel task");
        assert_eq!(out.cause, CloseCause::Peer(Side::Downstream, 4321));
    }

    #[tokio::test]
    async fn oversized_client_message_closes_both_sides_with_1009_and_is_not_forwarded() {
        let mut h = start(limits());
        h.client
            .send(&frame::encode(OpCode::Binary, &[0u8; 1001], MASK))
            .await;
        assert_eq!(
            h.upstream.next().await,
            Got::Close(Some(1009)),
            "the app gets a close, not the message"
        );
        assert_eq!(h.client.next().await, Got::Close(Some(1009)));
        h.client.send(&frame::close_frame(1009, "", MASK)).await;
        h.upstream.send(&frame::close_frame(1009, "", None)).await;
        let out = h.task.await.expect("tunnel task");
        assert_eq!(out.cause, CloseCause::MessageTooBig);
    }

    #[tokio::test]
    async fn oversized_app_message_closes_with_1009_too() {
        let mut h = start(limits());
        h.upstream
            .send(&frame::encode(OpCode::Text, &[b'a'; 2000], None))
            .await;
        assert_eq!(h.client.next().await, Got::Close(Some(1009)));
        assert_eq!(h.upstream.next().await, Got::Close(Some(1009)));
    }

    #[tokio::test]
    async fn a_burst_beyond_the_rate_limit_closes_with_1008() {
        let mut h = start(TunnelLimits {
            messages_per_second: 1,
            message_burst: 3,
            ..limits()
        });
        for _ in 0..4 {
            h.client
                .send(&frame::encode(OpCode::Text, b"x", MASK))
                .await;
        }
        for _ in 0..3 {
            assert!(matches!(h.upstream.next().await, Got::Data(_)));
        }
        assert_eq!(h.upstream.next().await, Got::Close(Some(1008)));
        assert_eq!(h.client.next().await, Got::Close(Some(1008)));
    }

    #[tokio::test(start_paused = true)]
    async fn token_expiry_closes_both_sides_with_4001() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut h = start(TunnelLimits {
            expires_at: Some(deadline),
            ..limits()
        });
        assert_eq!(h.client.next().await, Got::Close(Some(4001)));
        assert_eq!(h.upstream.next().await, Got::Close(Some(4001)));
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_closes_with_the_routes_code_within_its_window() {
        let mut h = start(limits());
        let started = Instant::now();
        h.drain.send(true).expect("drain receiver alive");
        assert_eq!(h.client.next().await, Got::Close(Some(1012)));
        assert_eq!(h.upstream.next().await, Got::Close(Some(1012)));
        assert!(started.elapsed() <= Duration::from_secs(1));
        h.client.send(&frame::close_frame(1012, "", MASK)).await;
        h.upstream.send(&frame::close_frame(1012, "", None)).await;
        let out = h.task.await.expect("tunnel task");
        assert_eq!(out.cause.code(), 1012);
        assert_eq!(out.cause.reason(), "restart");
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_pings_the_client_and_a_silent_client_is_closed() {
        let mut h = start(TunnelLimits {
            ping_interval: Duration::from_secs(5),
            ..limits()
        });
        assert_eq!(h.client.next().await, Got::Ping);
        // no pong: the pong deadline passes
        assert_eq!(h.client.next().await, Got::Close(Some(1001)));
        let out = h.task.await.expect("tunnel task");
        assert_eq!(out.cause, CloseCause::PongTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_answering_pings_stays_open_and_its_pongs_are_not_forwarded() {
        let mut h = start(TunnelLimits {
            ping_interval: Duration::from_secs(5),
            ..limits()
        });
        for _ in 0..5 {
            assert_eq!(h.client.next().await, Got::Ping);
            h.client
                .send(&frame::encode(OpCode::Pong, b"sb-ka:1", MASK))
                .await;
        }
        h.client
            .send(&frame::encode(OpCode::Text, b"still here", MASK))
            .await;
        assert!(
            matches!(h.upstream.next().await, Got::Data(_)),
            "the app sees data, never our pongs"
        );
    }

    #[tokio::test]
    async fn an_app_that_ends_its_stream_without_a_close_frame_is_mirrored_to_the_client() {
        let mut h = start(limits());
        drop(h.upstream);
        assert_eq!(
            h.client.next().await,
            Got::Eof,
            "no close frame invented for a clean end"
        );
        drop(h.client);
        let out = h.task.await.expect("tunnel task");
        assert_eq!(out.cause, CloseCause::Abnormal(Side::Upstream));
    }

    #[tokio::test]
    async fn a_protocol_error_closes_both_sides_with_1002() {
        let mut h = start(limits());
        h.client
            .send(&frame::encode(OpCode::Text, b"unmasked", None))
            .await;
        assert_eq!(h.upstream.next().await, Got::Close(Some(1002)));
        assert_eq!(h.client.next().await, Got::Close(Some(1002)));
        assert_eq!(
            h.client.next().await,
            Got::Eof,
            "the connection is failed, not left waiting for a reply"
        );
        assert_eq!(h.upstream.next().await, Got::Eof);
        let out = h.task.await.expect("tunnel task");
        assert_eq!(out.cause, CloseCause::ProtocolError);
    }
}
