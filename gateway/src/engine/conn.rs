//! The connection core: one server-side WebSocket over any `AsyncRead + AsyncWrite`, after the
//! 101. It yields whole messages (text checked as UTF-8 after reassembly and inflation), answers
//! pings, enforces the message cap (1009), validates and echoes the peer's Close, and writes
//! queued frames — shared, pre-encoded frames ([`Shared`]) as well as its own.
//!
//! Idle costs nothing but the struct: reads go through `poll_read` into a per-worker scratch
//! buffer (`thread_local`), the scanner takes what it needs, and only a partial message (or a
//! partial control frame) is kept in owned memory. The write queue is released as soon as it
//! is empty. Reading and writing progress in the same poll, so one task serves a connection.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::bucket::{TokenBucket, frame_cost};
use super::deflate::{self, Deflate, InflateError};
use super::frame::{self, Event, FrameError, OpCode, Scanner, Sender};
use crate::error::{CloseCause, Side};

/// Bytes read per `poll_read` (the per-worker scratch buffer).
const SCRATCH_BYTES: usize = 16 * 1024;

/// At most this many queued buffers go into one vectored write.
const MAX_IOVECS: usize = 64;
/// Pings are answered one pong each (in order) while fewer than this many bytes wait to be
/// written; beyond it only the latest ping is answered (RFC 6455 §5.5.3 allows answering only
/// the most recent), so a peer that floods pings without reading costs at most this much.
pub const PONG_QUEUE_LIMIT: usize = 4 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A message from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A pong (an answer to our keep-alive ping, or unsolicited).
    Pong(Bytes),
    /// The peer's Close. Its echo is queued at the next poll or flush, after whatever the
    /// caller queues on seeing it. `code`: none when the payload was empty.
    Close { code: Option<u16>, reason: String },
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    #[error("message larger than the limit")]
    TooBig,
    #[error("text message that is not UTF-8")]
    InvalidUtf8,
    #[error("invalid compressed message")]
    BadCompressed,
    #[error("messages, fragments or pings over the rate limit")]
    RateLimited,
    #[error("connection ended without a close")]
    Eof,
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

impl ConnError {
    /// The close this error ends the connection with (from the one table in `error.rs`).
    pub fn cause(&self) -> CloseCause {
        match self {
            Self::Frame(_) => CloseCause::ProtocolError,
            Self::RateLimited => CloseCause::RateLimited,
            Self::TooBig => CloseCause::MessageTooBig,
            Self::InvalidUtf8 => CloseCause::InvalidUtf8,
            Self::BadCompressed => CloseCause::InvalidCompressed,
            Self::Eof | Self::Io(_) => CloseCause::Abnormal(Side::Downstream),
        }
    }

    /// Whether a Close frame can (and should) still be sent.
    pub fn sends_close(&self) -> bool {
        !matches!(self, Self::Eof | Self::Io(_))
    }
}

/// `switchboard_compression_bytes_total`, resolved once (a fan-out counts per member); the
/// proxy tunnel's compression counts into the same series.
pub(crate) struct Counters {
    pub(crate) out_plain: IntCounter,
    pub(crate) out_wire: IntCounter,
    pub(crate) in_wire: IntCounter,
    pub(crate) in_plain: IntCounter,
}

pub(crate) fn counters() -> &'static Counters {
    static C: OnceLock<Counters> = OnceLock::new();
    C.get_or_init(|| {
        let m = &crate::metrics::metrics().compression_bytes;
        Counters {
            out_plain: m.with_label_values(&["outbound", "uncompressed"]),
            out_wire: m.with_label_values(&["outbound", "compressed"]),
            in_wire: m.with_label_values(&["inbound", "compressed"]),
            in_plain: m.with_label_values(&["inbound", "uncompressed"]),
        }
    })
}

/// One frame ready to write: a (small) header and a body, both shared.
#[derive(Debug, Clone)]
pub struct Frame {
    head: Bytes,
    body: Bytes,
    /// For a compressed frame: the payload's length before compression.
    plain: Option<usize>,
}

impl Frame {
    /// A whole unmasked server frame carrying `payload` (already compressed when `compressed`).
    pub fn new(opcode: OpCode, payload: Bytes, compressed: bool) -> Self {
        let rsv1 = if compressed { 0x40 } else { 0 };
        let mut h = Vec::with_capacity(10);
        h.push(0x80 | rsv1 | opcode.bits());
        match payload.len() {
            n if n < 126 => h.push(n as u8),
            n if n <= usize::from(u16::MAX) => {
                h.push(126);
                h.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                h.push(127);
                h.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        Self {
            head: Bytes::from(h),
            body: payload,
            plain: None,
        }
    }

    /// A data message, compressed when the connection negotiated deflate and it is worth it.
    pub fn message(text: bool, payload: Bytes, deflate: Option<&Deflate>) -> Self {
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        match deflate.and_then(|d| d.compress(&payload)) {
            Some(c) => Self {
                plain: Some(payload.len()),
                ..Self::new(opcode, Bytes::from(c), true)
            },
            None => Self::new(opcode, payload, false),
        }
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Never true (a frame has a header); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The compression a frame was built with (`None`: uncompressed).
type FrameKey = Option<(u32, u8)>;

/// A message sent to many connections: its payload held once, its frame built once per
/// compression setting in use (the first member that needs a setting builds it; the others
/// share it).
#[derive(Debug)]
pub struct Shared {
    text: bool,
    payload: Bytes,
    frames: Mutex<Vec<(FrameKey, Frame)>>,
}

/// Lets an `Arc<str>` back a `Bytes` without a copy.
struct ArcStr(Arc<str>);

impl AsRef<[u8]> for ArcStr {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Shared {
    /// A text message (shares the string, no copy).
    pub fn text(s: Arc<str>) -> Arc<Self> {
        Self::new(true, Bytes::from_owner(ArcStr(s)))
    }

    /// A binary message.
    pub fn binary(b: Bytes) -> Arc<Self> {
        Self::new(false, b)
    }

    fn new(text: bool, payload: Bytes) -> Arc<Self> {
        Arc::new(Self {
            text,
            payload,
            frames: Mutex::new(Vec::new()),
        })
    }

    /// The payload as sent (uncompressed).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The frame for a connection with `deflate`; compressed at most once per setting.
    pub fn frame(&self, deflate: Option<&Deflate>) -> Frame {
        let key: FrameKey = deflate
            .filter(|d| d.compresses(self.payload.len()))
            .map(|d| (d.level, d.server_window_bits));
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, f)) = frames.iter().find(|(k, _)| *k == key) {
            return f.clone();
        }
        let f = Frame::message(self.text, self.payload.clone(), deflate);
        frames.push((key, f.clone()));
        f
    }
}

/// The message being reassembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
}

/// One server-side WebSocket connection.
pub struct Conn<S> {
    io: S,
    scanner: Scanner,
    deflate: Option<Deflate>,
    max_message: u64,
    partial: Option<Partial>,
    /// The current data frame: its mask, the mask offset, the payload bytes still to come and
    /// whether it ends the message.
    frame_mask: [u8; 4],
    frame_pos: u8,
    frame_left: u64,
    frame_fin: bool,
    ready: VecDeque<Message>,
    /// Reading ended (error or end of stream, reported once).
    read_done: bool,
    write: VecDeque<Bytes>,
    write_off: usize,
    write_bytes: usize,
    need_flush: bool,
    close_sent: bool,
    close_received: bool,
    /// The echo of the peer's Close: queued once the Close was handed to the caller (which
    /// may still queue frames before it, e.g. replies to the messages before the Close).
    echo: Option<Box<[u8]>>,
    echo_due: bool,
    /// The answer to the latest ping while the write queue holds [`PONG_QUEUE_LIMIT`] bytes
    /// or more, queued once it drains: a peer that sends pings without reading costs one pong
    /// beyond that, not one per ping.
    pong: Option<Box<[u8]>>,
    /// The peer's message rate ([`Conn::limit_rate`]).
    rate: Option<TokenBucket>,
    /// The bytes after complete messages failed (over the rate or the size cap, bad framing,
    /// bad UTF-8...): those messages are handed out first, then this.
    deferred: Option<ConnError>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Hold the peer to `bucket`, the route's message rate, closing 1008 when it runs out: a
    /// message costs one token at its first frame, each further frame of it and each pong a
    /// sixteenth, a ping one ([`frame_cost`], as the proxy tunnel charges them). Counting
    /// whole messages alone let a peer that sends only pings or empty fragments, never a
    /// message, keep a core busy for ever.
    pub fn limit_rate(mut self, bucket: TokenBucket) -> Self {
        self.rate = Some(bucket);
        self
    }

    /// Nothing is read from the peer for a while (its message is being handled): what it
    /// sends meanwhile is not taken for a burst ([`TokenBucket::pause`]).
    pub fn pause_rate(&mut self, now: std::time::Instant) {
        if let Some(b) = self.rate.as_mut() {
            b.pause(now);
        }
    }

    /// Reading from the peer again ([`TokenBucket::resume`]).
    pub fn resume_rate(&mut self, now: std::time::Instant) {
        if let Some(b) = self.rate.as_mut() {
            b.resume(now);
        }
    }

    fn charge(&mut self, cost: f64) -> Result<(), ConnError> {
        let now = std::time::Instant::now();
        match self.rate.as_mut().map(|b| b.try_take_part(now, cost)) {
            Some(false) => Err(ConnError::RateLimited),
            _ => Ok(()),
        }
    }

    /// A server connection over `io`, refusing messages over `max_message` bytes (after
    /// inflation), with permessage-deflate when `deflate` was negotiated.
    pub fn new(io: S, max_message: u64, deflate: Option<Deflate>) -> Self {
        // With deflate, the wire cap allows for incompressible data growing a little (zlib:
        // 5 bytes per 16 KiB block); the real cap is applied after inflation.
        let wire_max = if deflate.is_some() {
            max_message.saturating_add(max_message / 1000 + 64)
        } else {
            max_message
        };
        let mut scanner = Scanner::new(Sender::Client, wire_max);
        if deflate.is_some() {
            scanner.allow_compressed();
        }
        Self {
            io,
            scanner,
            deflate,
            max_message,
            partial: None,
            frame_mask: [0; 4],
            frame_pos: 0,
            frame_left: 0,
            frame_fin: false,
            ready: VecDeque::new(),
            read_done: false,
            write: VecDeque::new(),
            write_off: 0,
            write_bytes: 0,
            need_flush: false,
            close_sent: false,
            close_received: false,
            echo: None,
            echo_due: false,
            pong: None,
            rate: None,
            deferred: None,
        }
    }

    /// What was negotiated.
    pub fn deflate(&self) -> Option<&Deflate> {
        self.deflate.as_ref()
    }

    /// Queue a frame (written by the next [`Conn::next`] or [`Conn::flush`]).
    pub fn send(&mut self, f: Frame) {
        if self.close_sent {
            return; // nothing may follow our Close
        }
        self.push_frame(f);
    }

    fn push_frame(&mut self, f: Frame) {
        if let Some(plain) = f.plain {
            let c = counters();
            c.out_plain.inc_by(plain as u64);
            c.out_wire.inc_by(f.body.len() as u64);
        }
        self.write_bytes += f.len();
        self.write.push_back(f.head);
        if !f.body.is_empty() {
            self.write.push_back(f.body);
        }
    }

    /// Queue a text or binary message of this connection only (compressed when negotiated and
    /// over the threshold).
    pub fn send_message(&mut self, text: bool, payload: Bytes) {
        let f = Frame::message(text, payload, self.deflate.as_ref());
        self.send(f);
    }

    /// Queue a shared message's frame for this connection's compression.
    pub fn send_shared(&mut self, s: &Shared) {
        self.send(s.frame(self.deflate.as_ref()));
    }

    /// Queue a ping.
    pub fn ping(&mut self, payload: &[u8]) {
        let f = frame::encode(OpCode::Ping, payload, None);
        self.send_raw(f);
    }

    fn send_raw(&mut self, bytes: Vec<u8>) {
        if self.close_sent {
            return;
        }
        self.write_bytes += bytes.len();
        self.write.push_back(Bytes::from(bytes));
    }

    /// Queue our Close (once); what is queued before it is still written.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.close_sent {
            return;
        }
        let f = frame::close_frame(code, reason, None);
        self.send_raw(f);
        self.close_sent = true;
        self.echo = None;
    }

    /// Queue our Close for `cause`.
    pub fn close_with(&mut self, cause: &CloseCause) {
        self.close(cause.code(), cause.reason());
    }

    /// Whether our Close was queued.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether the peer's Close arrived.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Bytes queued but not yet taken by the socket.
    pub fn pending_write_bytes(&self) -> usize {
        self.write_bytes
    }

    /// Whether messages already read wait to be taken (no socket read is needed for the next).
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Nothing left to write.
    pub fn write_idle(&self) -> bool {
        self.write.is_empty()
            && !self.need_flush
            && self.pong.is_none()
            && !(self.echo_due && self.echo.is_some())
    }

    /// Write everything queued and flush.
    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_queue(cx)).await
    }

    /// The next message from the peer, writing queued frames meanwhile. `None` once reading
    /// has ended (after an error or the end of the stream was reported).
    pub async fn next(&mut self) -> Option<Result<Message, ConnError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Like [`Conn::next`], but also reports `Ok(None)` when the socket took everything that
    /// was queued (the caller may queue more).
    pub async fn next_or_flushed(&mut self) -> Option<Result<Option<Message>, ConnError>> {
        poll_fn(|cx| self.poll_next_or_flushed(cx)).await
    }

    /// Poll form of [`Conn::next_or_flushed`].
    pub fn poll_next_or_flushed(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Option<Message>, ConnError>>> {
        if !self.write_idle() {
            match self.poll_write_queue(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Some(Ok(None))),
                Poll::Ready(Err(e)) => {
                    self.read_done = true;
                    return Poll::Ready(Some(Err(ConnError::Io(e))));
                }
                Poll::Pending => {}
            }
        }
        self.poll_next(cx).map(|m| m.map(|r| r.map(Some)))
    }

    /// Poll for the next message; queued frames are written as the socket takes them.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, ConnError>>> {
        if let Poll::Ready(Err(e)) = self.poll_write_queue(cx) {
            self.read_done = true;
            return Poll::Ready(Some(Err(ConnError::Io(e))));
        }
        loop {
            if let Some(m) = self.ready.pop_front() {
                if matches!(m, Message::Close { .. }) {
                    self.echo_due = true;
                }
                if self.ready.is_empty() {
                    self.ready = VecDeque::new(); // give the capacity back while idle
                }
                return Poll::Ready(Some(Ok(m)));
            }
            if self.read_done {
                if let Some(e) = self.deferred.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                return Poll::Ready(None);
            }
            match ready!(self.poll_read_some(cx)) {
                Ok(true) => {
                    // New frames may have queued pongs or a Close echo.
                    if let Poll::Ready(Err(e)) = self.poll_write_queue(cx) {
                        self.read_done = true;
                        return Poll::Ready(Some(Err(ConnError::Io(e))));
                    }
                }
                Ok(false) => {
                    self.read_done = true;
                    return Poll::Ready(Some(Err(ConnError::Eof)));
                }
                // The messages read before the bytes that failed were whole and valid (within
                // the rate, the cap, the framing rules): they are handed out first, in order,
                // then the error (a client's publish before an oversized one is handled and
                // acknowledged, not dropped by the 1009).
                Err(e) if !self.ready.is_empty() => {
                    self.read_done = true;
                    self.partial = None;
                    self.deferred = Some(e);
                }
                Err(e) => {
                    self.read_done = true;
                    self.partial = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    /// One read into the worker's scratch buffer, fed to the scanner. `Ok(false)`: end of
    /// stream.
    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, ConnError>> {
        SCRATCH.with(|cell| {
            // Re-entry on one thread cannot happen (a poll does not poll another connection
            // from inside `poll_read`); a fresh buffer keeps even that case correct.
            let mut own;
            let mut borrowed = cell.try_borrow_mut();
            let buf: &mut Vec<u8> = match borrowed.as_deref_mut() {
                Ok(b) => b,
                Err(_) => {
                    own = Vec::new();
                    &mut own
                }
            };
            if buf.len() < SCRATCH_BYTES {
                buf.resize(SCRATCH_BYTES, 0);
            }
            let mut rb = ReadBuf::new(&mut buf[..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(false));
            }
            self.feed(&buf[..n])?;
            Poll::Ready(Ok(true))
        })
    }

    /// Scan `input`; complete messages go to `ready`, pings are answered.
    fn feed(&mut self, input: &[u8]) -> Result<(), ConnError> {
        let mut pos = 0;
        while let Some(ev) = self.scanner.next(input, &mut pos)? {
            match ev {
                Event::Header(h) => {
                    if h.too_big {
                        return Err(ConnError::TooBig);
                    }
                    self.charge(frame_cost(h.opcode, h.starts_message))?;
                    if h.starts_message {
                        let cap = usize::try_from(h.payload_len.min(64 * 1024)).unwrap_or(0);
                        self.partial = Some(Partial {
                            text: h.opcode == OpCode::Text,
                            compressed: h.compressed,
                            data: Vec::with_capacity(cap),
                        });
                    }
                    // Client frames are masked (the scanner refuses others): the key ends the
                    // header.
                    let raw = &h.raw;
                    self.frame_mask.copy_from_slice(&raw[raw.len() - 4..]);
                    self.frame_pos = 0;
                    self.frame_left = h.payload_len;
                    self.frame_fin = h.fin;
                    if self.frame_left == 0 && self.frame_fin {
                        self.finish_message()?;
                    }
                }
                Event::Payload(p) => {
                    if let Some(part) = self.partial.as_mut() {
                        let start = part.data.len();
                        part.data.extend_from_slice(p);
                        for (i, b) in part.data[start..].iter_mut().enumerate() {
                            *b ^= self.frame_mask[(usize::from(self.frame_pos) + i) % 4];
                        }
                    }
                    // The mask's offset (0 to 3) for the frame's next bytes.
                    self.frame_pos = ((usize::from(self.frame_pos) + p.len()) % 4) as u8;
                    self.frame_left -= p.len() as u64;
                    if self.frame_left == 0 && self.frame_fin {
                        self.finish_message()?;
                    }
                }
                Event::Control(c) => self.control(c.opcode, c.payload)?,
            }
        }
        Ok(())
    }

    fn finish_message(&mut self) -> Result<(), ConnError> {
        let Some(part) = self.partial.take() else {
            return Ok(());
        };
        let data = if part.compressed {
            let out = deflate::inflate(&part.data, self.max_message).map_err(|e| match e {
                InflateError::TooBig => ConnError::TooBig,
                InflateError::Invalid => ConnError::BadCompressed,
            })?;
            let c = counters();
            c.in_wire.inc_by(part.data.len() as u64);
            c.in_plain.inc_by(out.len() as u64);
            out
        } else {
            part.data
        };
        let msg = if part.text {
            Message::Text(String::from_utf8(data).map_err(|_| ConnError::InvalidUtf8)?)
        } else {
            Message::Binary(Bytes::from(data))
        };
        if !self.close_received {
            self.ready.push_back(msg);
        }
        Ok(())
    }

    fn control(&mut self, op: OpCode, payload: Vec<u8>) -> Result<(), ConnError> {
        self.charge(frame_cost(op, false))?;
        match op {
            // After the peer's Close nothing is answered (only the Close is echoed).
            OpCode::Ping if !self.close_received => {
                let pong = frame::encode(OpCode::Pong, &payload, None);
                if self.write_bytes < PONG_QUEUE_LIMIT {
                    // Any coalesced pong answers an earlier ping: it goes first.
                    if let Some(p) = self.pong.take() {
                        self.send_raw(p.into_vec());
                    }
                    self.send_raw(pong);
                } else {
                    self.pong = Some(pong.into_boxed_slice());
                }
            }
            OpCode::Ping => {}
            OpCode::Pong => self.ready.push_back(Message::Pong(Bytes::from(payload))),
            OpCode::Close => {
                let (code, reason) = if payload.len() >= 2 {
                    // The scanner refused a code no peer may send.
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let reason =
                        std::str::from_utf8(&payload[2..]).map_err(|_| ConnError::InvalidUtf8)?;
                    (Some(code), reason.to_string())
                } else {
                    (None, String::new())
                };
                if !self.close_sent {
                    // Echo the code (RFC 6455 §5.5.1); an empty Close is echoed empty.
                    let echo = match code {
                        Some(c) => frame::close_frame(c, "", None),
                        None => frame::encode(OpCode::Close, &[], None),
                    };
                    self.echo = Some(echo.into_boxed_slice());
                }
                self.close_received = true;
                self.pong = None;
                self.ready.push_back(Message::Close { code, reason });
            }
            // The scanner only hands out control opcodes here.
            _ => {}
        }
        Ok(())
    }

    /// Write queued buffers (vectored), then flush. Ready once all is written.
    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.echo_due
            && let Some(echo) = self.echo.take()
        {
            self.send_raw(echo.into_vec());
            self.close_sent = true;
        }
        loop {
            if self.write.is_empty() {
                // `send_raw` drops the pong once our Close went out.
                if let Some(p) = self.pong.take() {
                    self.send_raw(p.into_vec());
                }
                if self.write.is_empty() {
                    break;
                }
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut k = 0;
            for (i, b) in self.write.iter().take(MAX_IOVECS).enumerate() {
                let b = if i == 0 { &b[self.write_off..] } else { &b[..] };
                slices[k] = IoSlice::new(b);
                k += 1;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.need_flush = true;
            self.write_bytes -= n;
            let mut left = n;
            while left > 0 {
                let Some(front) = self.write.front() else {
                    break;
                };
                let rest = front.len() - self.write_off;
                if left >= rest {
                    left -= rest;
                    self.write.pop_front();
                    self.write_off = 0;
                } else {
                    self.write_off += left;
                    left = 0;
                }
            }
        }
        if self.write.capacity() > 0 {
            self.write = VecDeque::new(); // no write buffer while nothing is pending
        }
        if self.need_flush {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.need_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Shut the write side down (after the close handshake).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await
    }
}

#[cfg(test)]
mod tests;
