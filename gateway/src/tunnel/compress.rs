//! permessage-deflate at the edge of a proxied tunnel: the client side of the tunnel speaks
//! RFC 7692 (negotiated by [`crate::engine::deflate::negotiate`], no context takeover either
//! way), the app side stays uncompressed (the offer is never forwarded).
//!
//! One [`Compression`] per tunnel direction, hooked into the relay's frame loop:
//! - client → app: a message whose first frame has RSV1 is collected (its fragments, unmasked),
//!   inflated with the engine's bounded inflater (the route's `maxMessageBytes` measured after
//!   inflation: a bomb is refused without being allocated), checked as UTF-8 when it is text,
//!   and forwarded as one uncompressed frame masked with a fresh random key. Uncompressed
//!   messages keep the relay's streaming path (frames and masks forwarded as they are); only
//!   their size is counted here, since the scanner's cap is widened for compressed ones.
//! - app → client: a single-frame text or binary message of at least `thresholdBytes` is
//!   collected, compressed whole and sent with RSV1. Fragmented app messages (an app streaming
//!   a message whose size it does not know up front) are forwarded uncompressed as they come:
//!   collecting them would hold the whole message and delay its first byte, and RFC 7692 lets a
//!   sender leave any message uncompressed. Smaller messages and control frames are forwarded
//!   as today.
//!
//! Memory: nothing is held between messages (the collection buffer exists only while a
//! compressed message is being collected or a large app message is being compressed), and
//! zlib state is per worker (see [`crate::engine::deflate`]).

use rand::Rng;

use crate::engine::conn::counters;
use crate::engine::deflate::{self, Deflate, InflateError};
use crate::engine::frame::{self, DataHeader, OpCode, Sender};
use crate::error::CloseCause;

/// At most this much is reserved for a frame before its payload arrives (`Vec` grows as it
/// comes).
const RESERVE_MAX: usize = 64 * 1024;

/// What the relay does with a data frame whose header was just scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forward it as it is (the streaming path).
    Forward,
    /// Its payload goes to [`Compression::payload`]; nothing is forwarded until the message
    /// is whole.
    Collect,
    /// The message is over the route's cap (1009).
    TooBig,
}

/// A message being collected.
#[derive(Debug)]
struct Collecting {
    opcode: OpCode,
    /// The current frame's mask (client frames) and how far into its payload we are.
    mask: Option<[u8; 4]>,
    offset: usize,
    /// The current frame is the message's last.
    fin: bool,
    /// The payload so far, unmasked (compressed bytes from a client, plain from the app).
    data: Vec<u8>,
}

/// permessage-deflate state of one tunnel direction.
#[derive(Debug)]
pub struct Compression {
    deflate: Deflate,
    /// Whose frames this direction reads.
    sender: Sender,
    /// The route's `maxMessageBytes` (after inflation).
    max_message: u64,
    /// Bytes of the uncompressed client message in progress (the scanner's cap is widened).
    plain_bytes: u64,
    /// `Some` only while a message is being collected.
    collecting: Option<Box<Collecting>>,
}

impl Compression {
    /// Compression for the direction reading frames from `sender`.
    pub fn new(deflate: Deflate, sender: Sender, max_message: u64) -> Self {
        Self {
            deflate,
            sender,
            max_message,
            plain_bytes: 0,
            collecting: None,
        }
    }

    /// The cap the direction's frame scanner applies on the wire: client messages may grow a
    /// little when compressed (zlib: 5 bytes per 16 KiB stored block), so the wire cap leaves
    /// room for it and the real cap is applied after inflation (or here, for uncompressed
    /// messages).
    pub fn wire_cap(sender: Sender, max_message: u64) -> u64 {
        match sender {
            Sender::Client => max_message.saturating_add(max_message / 1000 + 64),
            Sender::Server => max_message,
        }
    }

    /// A message is being collected.
    pub fn collecting(&self) -> bool {
        self.collecting.is_some()
    }

    /// Drop a message being collected (the direction stopped relaying: a close started).
    pub fn abandon(&mut self) {
        self.collecting = None;
    }

    /// Decide what happens to the data frame with header `h` (not too big for the scanner,
    /// not rate limited).
    pub fn header(&mut self, h: &DataHeader) -> Route {
        if h.starts_message {
            self.plain_bytes = 0;
            self.collecting = None;
            if self.starts_collecting(h) {
                // Reserved up to what one read can bring: a header alone (its length not yet
                // backed by any byte) does not make the tunnel hold the route's cap.
                let mut data = Vec::new();
                data.reserve_exact(usize::try_from(h.payload_len).unwrap_or(0).min(RESERVE_MAX));
                self.collecting = Some(Box::new(Collecting {
                    opcode: h.opcode,
                    mask: mask_of(h),
                    offset: 0,
                    fin: h.fin,
                    data,
                }));
                return Route::Collect;
            }
        }
        if let Some(c) = self.collecting.as_mut() {
            c.mask = mask_of(h);
            c.offset = 0;
            c.fin = h.fin;
            // Amortized growth: a message in many small fragments is not copied per fragment.
            c.data
                .reserve(usize::try_from(h.payload_len).unwrap_or(0).min(RESERVE_MAX));
            return Route::Collect;
        }
        self.plain_bytes = self.plain_bytes.saturating_add(h.payload_len);
        if self.plain_bytes > self.max_message {
            return Route::TooBig;
        }
        Route::Forward
    }

    fn starts_collecting(&self, h: &DataHeader) -> bool {
        match self.sender {
            // Compressed client messages, whatever their size.
            Sender::Client => h.compressed,
            // Whole app messages worth compressing.
            Sender::Server => {
                h.fin && usize::try_from(h.payload_len).is_ok_and(|n| self.deflate.compresses(n))
            }
        }
    }

    /// Payload bytes of the frame being collected, as received.
    pub fn payload(&mut self, p: &[u8]) {
        let Some(c) = self.collecting.as_mut() else {
            return;
        };
        match c.mask {
            Some(m) => {
                let at = c.offset;
                c.data
                    .extend(p.iter().enumerate().map(|(i, b)| b ^ m[(at + i) % 4]));
            }
            None => c.data.extend_from_slice(p),
        }
        c.offset += p.len();
    }

    /// The frame being collected ended (the scanner is at a frame boundary). `None` while
    /// the message goes on; then the frame to forward, or why the connection closes.
    pub fn frame_end(&mut self) -> Option<Result<Vec<u8>, CloseCause>> {
        if !self.collecting.as_ref().is_some_and(|c| c.fin) {
            return None;
        }
        let c = self.collecting.take()?;
        Some(match self.sender {
            Sender::Client => self.inflated(*c),
            Sender::Server => Ok(self.compressed(*c)),
        })
    }

    /// A client message, inflated and framed for the app (masked with a fresh key).
    fn inflated(&self, c: Collecting) -> Result<Vec<u8>, CloseCause> {
        let plain = deflate::inflate(&c.data, self.max_message).map_err(|e| match e {
            InflateError::TooBig => CloseCause::MessageTooBig,
            InflateError::Invalid => CloseCause::InvalidCompressed,
        })?;
        let m = counters();
        m.in_wire.inc_by(c.data.len() as u64);
        m.in_plain.inc_by(plain.len() as u64);
        drop(c.data);
        if c.opcode == OpCode::Text && std::str::from_utf8(&plain).is_err() {
            return Err(CloseCause::InvalidUtf8);
        }
        let mask: [u8; 4] = rand::rng().random();
        Ok(frame::encode_frame(
            c.opcode,
            true,
            false,
            &plain,
            Some(mask),
        ))
    }

    /// An app message, compressed for the client (uncompressed when zlib cannot do it).
    fn compressed(&self, c: Collecting) -> Vec<u8> {
        match self.deflate.compress(&c.data) {
            Some(z) => {
                let m = counters();
                m.out_plain.inc_by(c.data.len() as u64);
                m.out_wire.inc_by(z.len() as u64);
                frame::encode_frame(c.opcode, true, true, &z, None)
            }
            None => frame::encode_frame(c.opcode, true, false, &c.data, None),
        }
    }
}

/// The mask key at the end of a masked frame header.
fn mask_of(h: &DataHeader) -> Option<[u8; 4]> {
    if h.raw.get(1).is_none_or(|b| b & 0x80 == 0) {
        return None;
    }
    let n = h.raw.len();
    let m = h.raw.get(n.checked_sub(4)?..)?;
    Some([m[0], m[1], m[2], m[3]])
}

#[cfg(test)]
mod tests;
