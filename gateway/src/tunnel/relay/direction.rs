//! One direction of a tunnel ([`Dir`]): frames read from its source, checked, relayed (or
//! inflated, or dropped while a close is under way) and written to its destination, with the
//! Close and keep-alive ping the supervisor ([`super::Tunnel`]) asks it to send at the next frame
//! boundary, and what it saw (a pong, a violation, its end) left for the supervisor to read.
//! [`Forward`] writes one read's bytes straight from the per-worker scratch buffer while the
//! destination takes them.

use std::cell::RefCell;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::super::compress::{self, Compression};
use super::{DirCounters, TunnelLimits};
use crate::engine::bucket::{TokenBucket, frame_cost};
use crate::engine::frame::{self, Event, OpCode, Scanner, Sender};
use crate::error::CloseCause;

/// Prefix of the gateway's own keep-alive ping payloads; pongs carrying it are not forwarded.
const PING_MAGIC: &[u8] = b"sb-ka:";
/// Size of the per-worker read buffer every tunnel on that worker reads into.
const SCRATCH_LEN: usize = 16 * 1024;
/// Most reads one direction does in one poll before letting other tasks run.
const READS_PER_POLL: usize = 16;
/// Longest a direction waits to shut its destination's stream down cleanly.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// Most bytes relayed from what a source has already sent when a close starts.
const READY_BUDGET: usize = 256 * 1024;

thread_local! {
    /// The read buffer shared by the tunnels of one worker thread: borrowed for one read and
    /// the forwarding of what it returned, inside a poll, never across an await.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Relay,
    /// A close is under way: parse, forward nothing, stop at the source's Close.
    Discard,
    /// Framing is broken: nothing can be parsed; read and drop until EOF.
    Blind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Relaying.
    Open,
    /// The source is done (`end`); what is owed to the destination (bytes, a Close the
    /// supervisor asked for) still goes out, then the destination is flushed and, with
    /// `shutdown`, its stream ended.
    Ending { end: End, shutdown: bool },
    /// Nothing more to do.
    Done(End),
}

/// A Close the supervisor asked a direction to send its destination.
#[derive(Debug)]
pub(super) struct CloseCmd {
    pub(super) code: u16,
    pub(super) reason: String,
    /// Also end the connection at once (RFC 6455 §7.1.7 "fail the WebSocket connection": no
    /// waiting for a reply after a protocol error).
    pub(super) fail: bool,
}

/// One direction of the tunnel: frames sent by `sender`, read from its source and written to
/// its destination (the streams are the tunnel's; a direction only borrows them while polled).
/// Only the client's direction is rate limited.
pub(super) struct Dir {
    pub(super) sender: Sender,
    pub(super) scanner: Scanner,
    pub(super) bucket: Option<TokenBucket>,
    /// permessage-deflate on the client side of the tunnel, when negotiated (boxed: most
    /// tunnels have none, and a direction is part of every idle tunnel's task).
    pub(super) pmd: Option<Box<Compression>>,
    pub(super) counters: DirCounters,
    pub(super) mode: Mode,
    pub(super) stage: Stage,
    /// Bytes owed to the destination that it did not take yet; empty (unallocated) when idle.
    pub(super) out: Vec<u8>,
    /// Bytes were written to the destination since its last flush.
    pub(super) unflushed: bool,
    /// We wrote a Close into the destination.
    pub(super) close_sent: bool,
    /// A Close waiting for the destination to reach a frame boundary. This, `handoff` and
    /// `violation` are boxed: they exist once a close starts, and a direction is part of every
    /// idle tunnel's task.
    pub(super) close: Option<Box<CloseCmd>>,
    /// A keep-alive ping (its sequence number) waiting for a frame boundary.
    pub(super) ping: Option<u64>,
    /// While non-zero, a close has started and what the source already sent is relayed
    /// first (up to this many more bytes), before the Close goes out.
    pub(super) ready_budget: usize,
    /// The Close to send the destination once the source's Close arrives (a client-first
    /// close: the source was sent Close by the other direction).
    pub(super) handoff: Option<Box<(u16, String)>>,
    /// The destination's close handshake is complete: end its stream without waiting for
    /// this direction's source to answer too.
    pub(super) finish: bool,
    /// The destination's stream was ended early (`finish`).
    pub(super) finished: bool,
    /// A shutdown of the destination's stream is under way; given up at this instant.
    pub(super) shutdown_by: Option<Instant>,
    /// The destination has a data frame of ours half written.
    pub(super) dst_mid_frame: bool,
    pub(super) frames: u64,
    pub(super) bytes: u64,
    // What the supervisor has to look at after a poll.
    /// A pong arrived from the source.
    pub(super) pong: bool,
    /// The source broke a limit or the framing rules.
    pub(super) violation: Option<Box<CloseCause>>,
}

/// Where one read's forwarded bytes go: straight to the destination while it takes them, into
/// the direction's owned buffer from the first byte it does not. Contiguous input ranges are
/// gathered into one write.
struct Forward<'a, 'b, D> {
    dst: &'a mut D,
    cx: &'a mut Context<'b>,
    input: &'a [u8],
    /// Input bytes to forward that are not written yet.
    run: Range<usize>,
    out: &'a mut Vec<u8>,
    wrote: bool,
    failed: bool,
}

impl<D: AsyncWrite + Unpin> Forward<'_, '_, D> {
    fn range(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        if self.run.is_empty() {
            self.run = r;
        } else if self.run.end == r.start {
            self.run.end = r.end;
        } else {
            self.flush_run();
            self.run = r;
        }
    }

    fn owned(&mut self, bytes: &[u8]) {
        self.flush_run();
        self.write(bytes);
    }

    fn flush_run(&mut self) {
        let r = std::mem::replace(&mut self.run, 0..0);
        let input = self.input;
        self.write(&input[r]);
    }

    fn write(&mut self, mut bytes: &[u8]) {
        if self.failed || bytes.is_empty() {
            return;
        }
        if !self.out.is_empty() {
            self.out.extend_from_slice(bytes);
            return;
        }
        while !bytes.is_empty() {
            match Pin::new(&mut *self.dst).poll_write(self.cx, bytes) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.failed = true;
                    return;
                }
                Poll::Ready(Ok(n)) => {
                    self.wrote = true;
                    bytes = &bytes[n..];
                }
                Poll::Pending => {
                    self.out.extend_from_slice(bytes);
                    return;
                }
            }
        }
    }
}

impl Dir {
    pub(super) fn new(sender: Sender, limits: &TunnelLimits, counters: DirCounters) -> Self {
        let max = limits.max_message_bytes;
        let mut scanner = match limits.deflate {
            Some(_) => Scanner::new(sender, Compression::wire_cap(sender, max)),
            None => Scanner::new(sender, max),
        };
        if limits.deflate.is_some() && sender == Sender::Client {
            scanner.allow_compressed();
        }
        Dir {
            sender,
            scanner,
            pmd: limits
                .deflate
                .map(|d| Box::new(Compression::new(d, sender, max))),
            bucket: (sender == Sender::Client).then(|| {
                TokenBucket::new(
                    limits.messages_per_second,
                    limits.message_burst,
                    std::time::Instant::now(),
                )
            }),
            counters,
            mode: Mode::Relay,
            stage: Stage::Open,
            out: Vec::new(),
            unflushed: false,
            close_sent: false,
            close: None,
            ping: None,
            ready_budget: 0,
            handoff: None,
            finish: false,
            finished: false,
            shutdown_by: None,
            dst_mid_frame: false,
            frames: 0,
            bytes: 0,
            pong: false,
            violation: None,
        }
    }

    pub(super) fn done(&self) -> Option<End> {
        match self.stage {
            Stage::Done(end) => Some(end),
            _ => None,
        }
    }

    fn out_mask(&self) -> Option<[u8; 4]> {
        // Frames we write toward a server (the app) must be masked; toward a client, not.
        (self.sender == Sender::Client).then(|| rand::rng().random())
    }

    /// Ask for a Close to the destination (ignored once one is sent or asked for). A close
    /// that is not a failure first relays what the source has already sent.
    pub(super) fn close(&mut self, code: u16, reason: String, fail: bool) {
        let accepts = match self.stage {
            Stage::Open => true,
            // The source ended in the same read that broke a limit: the Close is still owed.
            Stage::Ending { .. } => self.shutdown_by.is_none(),
            Stage::Done(_) => false,
        };
        if !accepts || self.close_sent || self.close.is_some() {
            return;
        }
        if !fail && self.stage == Stage::Open {
            self.ready_budget = READY_BUDGET;
        }
        self.close = Some(Box::new(CloseCmd { code, reason, fail }));
    }

    /// A client-first close: relay until the source's Close, then send the destination this
    /// Close instead of forwarding the source's.
    pub(super) fn close_after_source(&mut self, code: u16, reason: String) {
        if self.stage == Stage::Open {
            self.handoff = Some(Box::new((code, reason)));
        }
    }

    /// The destination's close handshake is complete (it was sent our Close and its own Close
    /// has arrived at the other direction).
    pub(super) fn finish(&mut self) {
        if self.stage == Stage::Open {
            self.finish = true;
        }
    }

    /// A keep-alive ping to the destination at the next frame boundary (at most one waits).
    pub(super) fn ping(&mut self, seq: u64) {
        if self.stage == Stage::Open && !self.close_sent && self.close.is_none() {
            self.ping = Some(seq);
        }
    }

    /// Queue a Close of ours for the destination.
    fn write_close(&mut self, code: u16, reason: &str) {
        self.close_sent = true;
        // Nothing follows our Close: a keep-alive ping that was waiting for a frame boundary
        // is dropped with it.
        self.ping = None;
        if self.mode == Mode::Relay {
            self.mode = Mode::Discard;
        }
        let bytes = frame::close_frame(code, reason, self.out_mask());
        if self.out.is_empty() {
            self.out = bytes;
        } else {
            self.out.extend_from_slice(&bytes);
        }
    }

    /// Write what is owed to `dst` and flush it. `Ready(Err)` when the destination is gone.
    fn poll_out<D: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut D,
    ) -> Poll<Result<(), ()>> {
        let mut written = 0;
        while written < self.out.len() {
            match Pin::new(&mut *dst).poll_write(cx, &self.out[written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Ready(Ok(n)) => {
                    written += n;
                    self.unflushed = true;
                }
                Poll::Pending => {
                    self.out.drain(..written);
                    return Poll::Pending;
                }
            }
        }
        if self.out.capacity() > 0 {
            // Nothing owed: hold no buffer while waiting.
            self.out = Vec::new();
        }
        if self.unflushed {
            // A TLS client stream buffers writes: flush every chunk so nothing waits.
            match Pin::new(&mut *dst).poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Ready(Ok(())) => self.unflushed = false,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Shut the destination's stream down, bounded by [`SHUTDOWN_WAIT`] (the supervisor
    /// gives up for us at `shutdown_by`). `Ready` once done or failed.
    fn poll_shutdown<D: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut D,
    ) -> Poll<()> {
        if self.shutdown_by.is_none() {
            self.shutdown_by = Some(Instant::now() + SHUTDOWN_WAIT);
        }
        match Pin::new(dst).poll_shutdown(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.shutdown_by = None;
                Poll::Ready(())
            }
        }
    }

    /// The supervisor's clock passed `shutdown_by`: stop waiting for the destination.
    pub(super) fn shutdown_expired(&mut self, now: Instant) -> bool {
        if self.shutdown_by.is_none_or(|t| t > now) {
            return false;
        }
        self.shutdown_by = None;
        match self.stage {
            Stage::Open => self.finished = true,
            Stage::Ending { end, .. } => self.stage = Stage::Done(end),
            Stage::Done(_) => {}
        }
        true
    }

    /// Drive this direction as far as it goes without waiting. `Ready` when the supervisor
    /// has something to look at (a pong, a violation, the direction is done); `Pending` when
    /// waiting for its streams.
    pub(super) fn poll<S, D>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut S,
        dst: &mut D,
        first_close: &mut u32,
    ) -> Poll<()>
    where
        S: AsyncRead + Unpin,
        D: AsyncWrite + Unpin,
    {
        let mut reads = 0;
        loop {
            if self.done().is_some() {
                return Poll::Pending;
            }
            // What is owed to the destination goes first; nothing more is read meanwhile (the
            // client's rate limit credits that pause: what it sends meanwhile is read at once
            // afterwards, and is not a burst of its own).
            match self.poll_out(cx, dst) {
                Poll::Pending => {
                    if let Some(b) = self.bucket.as_mut().filter(|b| !b.is_paused()) {
                        b.pause(std::time::Instant::now());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(())) => {
                    self.out = Vec::new();
                    self.stage = match self.stage {
                        Stage::Ending {
                            end: End::SourceBroken,
                            ..
                        } => Stage::Done(End::SourceGone),
                        Stage::Ending { end, .. } => Stage::Done(end),
                        _ => Stage::Done(End::DestinationGone),
                    };
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => {
                    if let Some(b) = self.bucket.as_mut().filter(|b| b.is_paused()) {
                        b.resume(std::time::Instant::now());
                    }
                }
            }
            if let Stage::Ending { end, shutdown } = self.stage {
                if !self.close_sent
                    && !self.dst_mid_frame
                    && !matches!(end, End::PeerClose(_) | End::DestinationGone | End::Failed)
                    && let Some(c) = self.close.take()
                {
                    // A Close the supervisor asked for still goes out: the source's own
                    // Close or end can overtake it (an app answering the Close the other
                    // direction sent while this one discards the message it refused), and
                    // the destination must get its 1009/1008/... rather than a bare end.
                    self.write_close(c.code, &c.reason);
                    continue;
                }
                let shutdown = shutdown
                    || (self.sender == Sender::Server
                        && !self.finished
                        && (self.close_sent || matches!(end, End::PeerClose(_))));
                if shutdown && self.poll_shutdown(cx, dst).is_pending() {
                    // The client has its Close and nothing follows it: end the stream cleanly
                    // (TLS close_notify, then FIN) instead of dropping the socket, which a TLS
                    // client sees as a truncated stream. Bounded: a stuck client must not
                    // hold the tunnel open.
                    self.stage = Stage::Ending {
                        end,
                        shutdown: true,
                    };
                    return Poll::Pending;
                }
                tracing::debug!(sender = ?self.sender, end = ?end, "direction ended");
                self.stage = Stage::Done(end);
                return Poll::Ready(());
            }
            if self.finish && self.close_sent && !self.finished {
                if self.poll_shutdown(cx, dst).is_pending() {
                    return Poll::Pending;
                }
                self.finished = true;
            }
            if !self.dst_mid_frame && self.ready_budget == 0 {
                if let Some(c) = self.close.take() {
                    if self.close_sent {
                        continue;
                    }
                    self.write_close(c.code, &c.reason);
                    if c.fail {
                        self.stage = Stage::Ending {
                            end: End::Failed,
                            shutdown: true,
                        };
                    }
                    continue;
                }
                if let Some(seq) = self.ping.take() {
                    let mut payload = PING_MAGIC.to_vec();
                    payload.extend_from_slice(seq.to_string().as_bytes());
                    self.out = frame::encode(OpCode::Ping, &payload, self.out_mask());
                    continue;
                }
            }
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            if self.read_and_relay(cx, src, dst, first_close).is_pending() {
                if self.ready_budget > 0 {
                    // All the source had sent before the close started is relayed.
                    self.ready_budget = 0;
                    continue;
                }
                return Poll::Pending;
            }
            if self.pong || self.violation.is_some() {
                return Poll::Ready(());
            }
        }
    }

    /// One read from the source into the worker's scratch buffer, and the relaying of its
    /// frames. `Pending` when the source has nothing.
    fn read_and_relay<S, D>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut S,
        dst: &mut D,
        first_close: &mut u32,
    ) -> Poll<()>
    where
        S: AsyncRead + Unpin,
        D: AsyncWrite + Unpin,
    {
        SCRATCH.with(|cell| {
            let mut own;
            let mut shared;
            // Re-entry cannot happen (a poll does not poll another tunnel), but if it did, a
            // buffer of its own keeps it correct.
            let buf: &mut [u8] = match cell.try_borrow_mut() {
                Ok(b) => {
                    shared = b;
                    &mut shared[..]
                }
                Err(_) => {
                    own = vec![0; SCRATCH_LEN];
                    &mut own[..]
                }
            };
            let mut rb = ReadBuf::new(buf);
            let read = match Pin::new(src).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            let n = rb.filled().len();
            match read {
                Err(_) => self.source_vanished(true),
                Ok(()) if n == 0 => self.source_vanished(false),
                Ok(()) => {
                    self.bytes += n as u64;
                    self.counters.bytes.inc_by(n as u64);
                    self.ready_budget = self.ready_budget.saturating_sub(n);
                    if self.mode != Mode::Blind {
                        self.relay(cx, rb.filled(), dst, first_close);
                    }
                }
            }
            Poll::Ready(())
        })
    }

    /// Relay the frames in `input` to `dst`.
    fn relay<D: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        input: &[u8],
        dst: &mut D,
        first_close: &mut u32,
    ) {
        let mut out = std::mem::take(&mut self.out);
        let mut fwd = Forward {
            dst,
            cx,
            input,
            run: 0..0,
            out: &mut out,
            wrote: false,
            failed: false,
        };
        let end = self.process(input, &mut fwd, first_close);
        fwd.flush_run();
        let (wrote, failed) = (fwd.wrote, fwd.failed);
        self.out = out;
        self.unflushed |= wrote;
        if failed {
            self.out = Vec::new();
            self.stage = Stage::Done(End::DestinationGone);
        } else if let Some(end) = end {
            self.stage = Stage::Ending {
                end,
                shutdown: false,
            };
        }
    }

    /// Scan `input`, forwarding what passes through `fwd`. `Some` when the source is done.
    fn process<D: AsyncWrite + Unpin>(
        &mut self,
        input: &[u8],
        fwd: &mut Forward<'_, '_, D>,
        first_close: &mut u32,
    ) -> Option<End> {
        let mut pos = 0;
        loop {
            let start = pos;
            let event = match self.scanner.next(input, &mut pos) {
                Ok(Some(ev)) => ev,
                Ok(None) => return None,
                Err(_) => {
                    self.abandon_collected();
                    self.mode = Mode::Blind;
                    self.violation = Some(Box::new(CloseCause::ProtocolError));
                    return None;
                }
            };
            // The event's bytes are `input[start..pos]` when all of them arrived in this read;
            // a header or control frame split across reads is forwarded from the scanner's copy.
            match event {
                Event::Header(h) => {
                    if self.mode != Mode::Relay {
                        self.abandon_collected();
                        continue;
                    }
                    // A message's first frame costs a token, each further fragment a
                    // sixteenth: a message that never ends, in empty continuation frames, is
                    // otherwise an unlimited flood of frames to the app, while a client that
                    // streams a large message in write-buffer-sized frames (256 of 4 KiB for
                    // 1 MiB) stays well inside its rate.
                    if h.too_big {
                        self.mode = Mode::Discard;
                        self.violation = Some(Box::new(CloseCause::MessageTooBig));
                        continue;
                    }
                    if self.over_rate(frame_cost(h.opcode, h.starts_message)) {
                        continue;
                    }
                    if let Some(z) = self.pmd.as_mut() {
                        match z.header(&h) {
                            compress::Route::Forward => {}
                            compress::Route::Collect => {
                                if h.payload_len == 0 {
                                    self.collected_frame_end(fwd);
                                }
                                continue;
                            }
                            compress::Route::TooBig => {
                                self.mode = Mode::Discard;
                                self.violation = Some(Box::new(CloseCause::MessageTooBig));
                                continue;
                            }
                        }
                    }
                    // Relayed from here: what the metric and the log's frame counts say (a
                    // collected message counts once, when it goes out whole).
                    self.count_frame();
                    if pos - start == h.raw.len() {
                        fwd.range(start..pos);
                    } else {
                        fwd.owned(&h.raw);
                    }
                    self.dst_mid_frame = h.payload_len > 0;
                }
                Event::Payload(p) => {
                    if self.mode == Mode::Relay && self.dst_mid_frame {
                        fwd.range(pos - p.len()..pos);
                        self.dst_mid_frame = !self.scanner.at_boundary();
                    } else if self.mode == Mode::Relay
                        && let Some(z) = self.pmd.as_mut()
                        && z.collecting()
                    {
                        z.payload(p);
                        if self.scanner.at_boundary() {
                            self.collected_frame_end(fwd);
                        }
                    } else {
                        self.abandon_collected();
                    }
                }
                Event::Control(c) => {
                    let whole = pos - start == c.raw.len();
                    let forward = |fwd: &mut Forward<'_, '_, D>| {
                        if whole {
                            fwd.range(start..pos);
                        } else {
                            fwd.owned(&c.raw);
                        }
                    };
                    match c.opcode {
                        OpCode::Close => {
                            if let Some((code, reason)) = self.handoff.take().map(|h| *h)
                                && !self.close_sent
                            {
                                // The source answered the Close it was sent: now the
                                // destination gets the same close (not the source's code).
                                fwd.owned(&frame::close_frame(code, &reason, self.out_mask()));
                                self.count_frame();
                                self.close_sent = true;
                                self.mode = Mode::Discard;
                                return Some(End::CloseAck);
                            }
                            if self.mode == Mode::Relay {
                                forward(fwd);
                                self.count_frame();
                                let code = c.close_code().unwrap_or(1005);
                                let side = if self.sender == Sender::Client { 1 } else { 2 };
                                if *first_close == 0 {
                                    *first_close = (side << 16) | u32::from(code);
                                }
                                return Some(End::PeerClose(code));
                            }
                            return Some(End::CloseAck);
                        }
                        OpCode::Pong => {
                            self.pong = true;
                            if !c.payload.starts_with(PING_MAGIC)
                                && self.mode == Mode::Relay
                                && !self.over_rate(frame_cost(c.opcode, false))
                            {
                                forward(fwd);
                                self.count_frame();
                            }
                        }
                        _ => {
                            if self.mode == Mode::Relay
                                && !self.over_rate(frame_cost(c.opcode, false))
                            {
                                forward(fwd);
                                self.count_frame();
                            }
                        }
                    }
                }
            }
        }
    }

    /// One more frame relayed to the destination (the log's frame count and
    /// `switchboard_frames_total`; frames read and dropped are not counted).
    fn count_frame(&mut self) {
        self.frames += 1;
        self.counters.frames.inc();
    }

    /// Charge a frame the client sends the app to its rate limit: a message's first frame or
    /// a ping a token, a continuation frame or a pong (most answer the app's own pings) a
    /// sixteenth ([`frame_cost`]). True when it is over (nothing more is relayed, the supervisor closes
    /// with 1008). A direction without a limit (the app's) is never over.
    fn over_rate(&mut self, part: f64) -> bool {
        let over = self
            .bucket
            .as_mut()
            .is_some_and(|b| !b.try_take_part(std::time::Instant::now(), part));
        if over {
            self.mode = Mode::Discard;
            self.violation = Some(Box::new(CloseCause::RateLimited));
        }
        over
    }

    /// A frame of a message being collected for permessage-deflate ended: once the message
    /// is whole, forward it (inflated toward the app, compressed toward the client) or fail
    /// the connection with the close the inflater chose.
    fn collected_frame_end<D: AsyncWrite + Unpin>(&mut self, fwd: &mut Forward<'_, '_, D>) {
        match self.pmd.as_deref_mut().and_then(Compression::frame_end) {
            None => {}
            Some(Ok(frame)) => {
                fwd.owned(&frame);
                self.count_frame();
            }
            Some(Err(cause)) => {
                self.mode = Mode::Discard;
                self.violation = Some(Box::new(cause));
            }
        }
    }

    /// Drop a message being collected for permessage-deflate (relaying stopped).
    fn abandon_collected(&mut self) {
        if let Some(z) = self.pmd.as_mut() {
            z.abandon();
        }
    }

    /// The source's stream ended without a Close. During a client-first close the app
    /// still gets the close's Close. Otherwise a clean end (FIN) is mirrored: the
    /// destination's stream is ended the same way, so the tunnel stays transparent. A broken
    /// stream (reset, error) is reported with a Close of ours: 1011 to a client whose app pod
    /// went away, 1001 to an app whose client went away.
    fn source_vanished(&mut self, broken: bool) {
        let (end, shutdown) = if let Some((code, reason)) = self.handoff.take().map(|h| *h)
            && !self.close_sent
            && !self.dst_mid_frame
        {
            self.write_close(code, &reason);
            (End::SourceGone, false)
        } else if self.mode != Mode::Relay || self.close_sent || self.dst_mid_frame || !broken {
            (End::SourceGone, true)
        } else {
            let (code, reason) = match self.sender {
                Sender::Server => (
                    CloseCause::UpstreamGone.code(),
                    CloseCause::UpstreamGone.reason(),
                ),
                Sender::Client => (1001, "client went away"),
            };
            self.write_close(code, reason);
            (End::SourceBroken, false)
        };
        self.stage = Stage::Ending { end, shutdown };
    }
}
