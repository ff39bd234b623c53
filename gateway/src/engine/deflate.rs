//! permessage-deflate (RFC 7692) with no context takeover in either direction.
//!
//! The gateway always answers `server_no_context_takeover; client_no_context_takeover`
//! (§7.1.1 lets a server add both), so every message is compressed and inflated on its own:
//! no connection holds a zlib context between messages. The compressor and the inflater are
//! per worker thread (`thread_local`), reset before each message, and used inside one
//! synchronous call (never across an `.await`).
//!
//! Inflation is bounded: output grows in chunks and stops as soon as it passes the caller's
//! cap (the route's `maxMessageBytes` measured after inflation), so a decompression bomb is
//! refused after allocating at most the cap plus one chunk.
//!
//! zlib itself comes from `flate2` on the zlib-ng backend the dependency graph already builds
//! for pingora (window bits need a zlib backend; no home-made deflate).

use std::cell::RefCell;

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress, Status};
use switchboard_config::Compression;

/// The extension token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The 4 bytes a sync flush ends with; the sender strips them, the receiver appends them
/// (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// An empty stored block with BFINAL set, fed after the tail. A message compressed per §7.2.1
/// has produced all its output before the tail (zlib decodes every symbol whose bits it has)
/// and, with the tail back, ends on a block boundary: the tail and this block then add nothing
/// and end the stream. A message cut off inside a block decodes them as more of that block,
/// which adds output or fails to end the stream.
const FINAL: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];

/// Output grows by at most this much per inflate step (bounds the overshoot past the cap).
const INFLATE_CHUNK: usize = 16 * 1024;

/// What was agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Deflate {
    /// The LZ77 window the gateway compresses with (`server_max_window_bits`), 8 to 15. At 8
    /// the gateway sends every message uncompressed: zlib cannot write raw deflate with a
    /// 256-byte window, and RFC 7692 lets a sender leave any message uncompressed.
    pub server_window_bits: u8,
    /// `server_max_window_bits` is part of the answer (offered by the client or configured
    /// below 15).
    announce_window: bool,
    /// zlib level, 1 to 9.
    pub level: u32,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: u64,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` value of the 101.
    pub fn response_header(&self) -> String {
        let mut h = format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.announce_window {
            h.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        h
    }

    /// Whether a message of `len` bytes is worth compressing on this connection.
    pub fn compresses(&self, len: usize) -> bool {
        self.server_window_bits >= 9 && len as u64 >= self.threshold
    }

    /// Compress one message (`None`: send it uncompressed, see [`Deflate::compresses`]).
    pub fn compress(&self, payload: &[u8]) -> Option<Vec<u8>> {
        if !self.compresses(payload.len()) {
            return None;
        }
        compress(payload, self.level, self.server_window_bits)
    }
}

/// [`negotiate`] over the `Sec-WebSocket-Extensions` headers of an upgrade request.
pub fn negotiate_request(headers: &http::HeaderMap, cfg: &Compression) -> Option<Deflate> {
    negotiate(
        headers
            .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        cfg,
    )
}

/// Choose the first acceptable permessage-deflate offer among the client's
/// `Sec-WebSocket-Extensions` header values (each a comma-separated list of offers). `None`:
/// compression is off for the route, or no offer is acceptable (the connection goes on
/// uncompressed).
pub fn negotiate<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
    cfg: &Compression,
) -> Option<Deflate> {
    if !cfg.enabled {
        return None;
    }
    header_values
        .into_iter()
        .flat_map(split_outside_quotes)
        .find_map(|offer| accept(offer, cfg))
}

/// Split a header value at commas that are not inside a quoted string.
fn split_outside_quotes(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// A window-bits value: `1*DIGIT` 8 to 15, no leading zero (quotes allowed, RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    let v = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// One offer (`permessage-deflate; param; param=value`), or `None` when it is not
/// permessage-deflate or is malformed (unknown, duplicate or invalid parameters: RFC 7692 §5.1
/// says decline it).
fn accept(offer: &str, cfg: &Compression) -> Option<Deflate> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_bits: Option<u8> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(v)?),
            // Without a value: the client can honour a limit we answer (we do not need one:
            // inflation always has a 15-bit window).
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    let configured = cfg.max_window_bits.clamp(9, 15);
    let bits = server_bits.map_or(configured, |b| b.min(configured));
    Some(Deflate {
        server_window_bits: bits,
        announce_window: server_bits.is_some() || configured < 15,
        level: cfg.level.clamp(1, 9),
        threshold: cfg.threshold_bytes,
    })
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The message inflates past the cap (close 1009).
    #[error("message larger than the limit once inflated")]
    TooBig,
    /// Not valid deflate data (close 1007: invalid payload data).
    #[error("invalid deflate data")]
    Invalid,
}

thread_local! {
    /// This worker's compressors, one per (level, window bits) in use (at most 9 × 7).
    static COMPRESSORS: RefCell<Vec<((u32, u8), Compress)>> = const { RefCell::new(Vec::new()) };
    /// This worker's inflater (15-bit window: inflates what any smaller window produced).
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compress one message with a fresh context: raw deflate, sync-flushed, without the
/// trailing `00 00 ff ff`. `None` only for a window zlib cannot write (below 9 bits).
pub fn compress(payload: &[u8], level: u32, window_bits: u8) -> Option<Vec<u8>> {
    if !(9..=15).contains(&window_bits) {
        return None;
    }
    let level = level.clamp(1, 9);
    COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let key = (level, window_bits);
        let at = match all.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                all.push((
                    key,
                    Compress::new_with_window_bits(Level::new(level), false, window_bits),
                ));
                all.len() - 1
            }
        };
        let c = &mut all[at].1;
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
            let input = payload.get(consumed..).unwrap_or_default();
            if out.capacity() - out.len() < 64 {
                out.reserve(out.len().max(1024));
            }
            match c.compress_vec(input, &mut out, FlushCompress::Sync) {
                Ok(_) => {}
                Err(_) => {
                    c.reset();
                    return None;
                }
            }
            // Done once all input is in and the flush left spare room (zlib filled what it had).
            if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        c.reset();
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        Some(out)
    })
}

/// Inflate one message (the payload of all its frames, joined) with a fresh context,
/// refusing output past `max` bytes without allocating it.
pub fn inflate(compressed: &[u8], max: u64) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        let result = inflate_with(d, compressed, max);
        d.reset(false);
        result
    })
}

fn inflate_with(d: &mut Decompress, compressed: &[u8], max: u64) -> Result<Vec<u8>, InflateError> {
    // One byte past the cap is enough to know a message is over it.
    let limit = usize::try_from(max)
        .unwrap_or(usize::MAX - 1)
        .saturating_add(1);
    if compressed.is_empty() {
        // Nothing to inflate: the empty message (as zlib-based peers read it; a compressor
        // sends `00` for one).
        return Ok(Vec::new());
    }
    let mut out: Vec<u8> = Vec::new();
    // The message, then the tail the sender stripped (unless it kept it: a message compressed
    // per §7.2.1 never ends in 0xff, save one whose final block ends the stream before the
    // tail is read), then the final empty block.
    let tail: &[u8] = if compressed.ends_with(&TAIL) {
        &[]
    } else {
        &TAIL
    };
    // Output of the message itself; what is appended to it must add none.
    let mut message_out = None;
    for part in [compressed, tail, &FINAL[..]] {
        // How much of `part` the inflater has taken.
        let mut used = 0usize;
        loop {
            if out.len() == out.capacity() {
                // Geometric growth, never past the limit.
                let grow = out.len().max(INFLATE_CHUNK).min(limit - out.len());
                out.reserve_exact(grow);
            }
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(
                    part.get(used..).unwrap_or_default(),
                    &mut out,
                    FlushDecompress::Sync,
                )
                .map_err(|_| InflateError::Invalid)?;
            let took = usize::try_from(d.total_in() - in_before).unwrap_or(usize::MAX);
            used = used.saturating_add(took);
            let progressed = took > 0 || d.total_out() != out_before;
            if out.len() >= limit {
                return Err(InflateError::TooBig);
            }
            if message_out.is_some_and(|n| out.len() > n) {
                return Err(InflateError::Invalid); // the message stopped inside a block
            }
            if status == Status::StreamEnd {
                if message_out.is_none() && used < part.len() {
                    // More of the message after its own final block (§7.2.1 lets a sender
                    // use blocks with BFINAL set): the rest is read as a new stream.
                    d.reset(false);
                    continue;
                }
                // A final block ended the stream: the message's own, one whose header the
                // message began and the tail completed, or the one appended here.
                return Ok(out);
            }
            let room_left = out.len() < out.capacity();
            if used >= part.len() && room_left {
                break; // all input taken and zlib stopped with room to spare: drained
            }
            if room_left && !progressed {
                return Err(InflateError::Invalid); // no progress with input and room: stuck
            }
        }
        message_out.get_or_insert(out.len());
    }
    // The appended final block did not end the stream: the message stopped inside a block.
    Err(InflateError::Invalid)
}

#[cfg(test)]
mod tests;
