//! The gateway's one RFC 6455 frame codec. The streaming scanner reads frame headers as bytes
//! arrive (in any split), checks framing rules and the per-message size cap *before* a frame's
//! first byte is forwarded, and hands payload back as slices of the input so data is forwarded
//! (proxy tunnel) or assembled (connection core) without an intermediate copy. Control frames
//! (at most 125 bytes) are collected whole so the caller can read close codes, answer pings,
//! swallow its own keep-alive pongs, and inject frames between them.
//!
//! RSV1 is the permessage-deflate bit (RFC 7692 §6): allowed only once deflate was negotiated
//! ([`Scanner::allow_compressed`]), and then only on the first frame of a data message — never
//! on a continuation or a control frame. RSV2 and RSV3 are never allowed.
//!
//! The encoder writes whole frames: unmasked from the server, masked by a client (tests).
//!
//! No I/O here: the tunnel and the connection core feed it buffers; tests feed it every split.

/// Which peer sends the bytes being scanned (decides the masking rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Frames from a client must be masked.
    Client,
    /// Frames from a server must not be masked.
    Server,
}

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The 4-bit opcode of the frame header.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A framing rule broken by the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved opcode")]
    ReservedOpcode,
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("control frame longer than 125 bytes")]
    ControlTooLong,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("client frame not masked")]
    UnmaskedClientFrame,
    #[error("server frame masked")]
    MaskedServerFrame,
    #[error("payload length with the most significant bit set")]
    LengthOverflow,
    #[error("close frame with a 1-byte payload")]
    CloseLengthOne,
    #[error("close code {0} that no peer may send")]
    BadCloseCode(u16),
}

/// RFC 6455 §7.4: the codes a peer may send in a Close frame (1005, 1006 and 1015 only ever
/// report a close; the rest below 3000 is unassigned or reserved, 5000 and up undefined).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The bytes of one frame header exactly as received (2 to 14 bytes), held inline: the scanner
/// gathers a header in one and hands that one out, so scanning a data frame allocates nothing.
#[derive(Clone, Copy)]
pub struct RawHeader {
    bytes: [u8; 14],
    len: u8,
}

impl RawHeader {
    const EMPTY: Self = Self {
        bytes: [0; 14],
        len: 0,
    };

    /// One more byte (the scanner never asks for more than 14: `Scanner::header_needed`).
    fn push(&mut self, b: u8) {
        self.bytes[usize::from(self.len)] = b;
        self.len += 1;
    }
}

impl std::ops::Deref for RawHeader {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Equal when the header bytes are (whatever the unused tail of the array holds).
impl PartialEq for RawHeader {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for RawHeader {}

impl std::fmt::Debug for RawHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A complete data-frame header (Text, Binary or Continuation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataHeader {
    /// The header bytes exactly as received (forward these).
    pub raw: RawHeader,
    pub opcode: OpCode,
    pub fin: bool,
    pub payload_len: u64,
    /// True for the first frame of a message (Text/Binary, not Continuation).
    pub starts_message: bool,
    /// The message this frame belongs to is over the size limit: the relay must not forward it.
    /// Scanning goes on (so the peer's Close reply can still be found).
    pub too_big: bool,
    /// RSV1 on the first frame of a message: the message is compressed (permessage-deflate).
    /// Only ever true when [`Scanner::allow_compressed`] was called.
    pub compressed: bool,
}

/// A complete control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub opcode: OpCode,
    /// Header and payload exactly as received (forward these).
    pub raw: Vec<u8>,
    /// The unmasked payload.
    pub payload: Vec<u8>,
}

impl Control {
    /// For Close frames: the status code, if the payload carries one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OpCode::Close && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// What the scanner found next in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A data frame starts; its payload follows as [`Event::Payload`]s.
    Header(DataHeader),
    /// Payload bytes of the current data frame, as received (still masked if masked).
    Payload(&'a [u8]),
    /// A whole control frame.
    Control(Control),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Data { remaining: u64 },
    Control { remaining: usize },
}

/// Incremental frame scanner for one direction of a tunnel.
#[derive(Debug)]
pub struct Scanner {
    sender: Sender,
    max_message: u64,
    state: State,
    /// The header being gathered.
    hdr: RawHeader,
    ctrl_opcode: OpCode,
    ctrl_raw: Vec<u8>,
    ctrl_payload: Vec<u8>,
    ctrl_mask: Option<[u8; 4]>,
    in_message: bool,
    message_bytes: u64,
    frame_fin: bool,
    /// permessage-deflate was negotiated: RSV1 may start a data message.
    compressed_ok: bool,
}

impl Scanner {
    /// A scanner for frames from `sender`, refusing messages over `max_message` bytes.
    pub fn new(sender: Sender, max_message: u64) -> Self {
        Self {
            sender,
            max_message,
            state: State::Header,
            hdr: RawHeader::EMPTY,
            ctrl_opcode: OpCode::Ping,
            ctrl_raw: Vec::new(),
            ctrl_payload: Vec::new(),
            ctrl_mask: None,
            in_message: false,
            message_bytes: 0,
            frame_fin: true,
            compressed_ok: false,
        }
    }

    /// permessage-deflate was negotiated: accept RSV1 on the first frame of a data message.
    pub fn allow_compressed(&mut self) {
        self.compressed_ok = true;
    }

    /// True when nothing of a data frame has been handed out unfinished: a frame of our own
    /// can be written to the receiving side now without corrupting the stream.
    pub fn at_boundary(&self) -> bool {
        !matches!(self.state, State::Data { .. })
    }

    /// True while a fragmented message is in progress.
    pub fn in_message(&self) -> bool {
        self.in_message
    }

    fn header_needed(&self) -> usize {
        if self.hdr.len() < 2 {
            return 2;
        }
        let ext = match self.hdr[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.hdr[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// Scan from `input[*pos..]`, advancing `pos`. `Ok(None)`: all input consumed, feed more.
    /// After an error the stream is unusable; the relay closes the connection.
    pub fn next<'a>(
        &mut self,
        input: &'a [u8],
        pos: &mut usize,
    ) -> Result<Option<Event<'a>>, FrameError> {
        loop {
            match self.state {
                State::Header => {
                    while *pos < input.len() && self.hdr.len() < self.header_needed() {
                        self.hdr.push(input[*pos]);
                        *pos += 1;
                    }
                    if self.hdr.len() < self.header_needed() {
                        return Ok(None);
                    }
                    if let Some(event) = self.finish_header()? {
                        return Ok(Some(event));
                    }
                }
                State::Data { remaining } => {
                    if remaining == 0 {
                        self.end_data_frame();
                        continue;
                    }
                    let available = input.len() - *pos;
                    if available == 0 {
                        return Ok(None);
                    }
                    let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    let slice = &input[*pos..*pos + take];
                    *pos += take;
                    let remaining = remaining - take as u64;
                    self.state = State::Data { remaining };
                    if remaining == 0 {
                        self.end_data_frame();
                    }
                    return Ok(Some(Event::Payload(slice)));
                }
                State::Control { remaining } => {
                    let take = remaining.min(input.len() - *pos);
                    let start = self.ctrl_payload.len();
                    for (i, &b) in input[*pos..*pos + take].iter().enumerate() {
                        self.ctrl_raw.push(b);
                        let m = self.ctrl_mask.map_or(0, |m| m[(start + i) % 4]);
                        self.ctrl_payload.push(b ^ m);
                    }
                    *pos += take;
                    let remaining = remaining - take;
                    self.state = State::Control { remaining };
                    if remaining > 0 {
                        return Ok(None);
                    }
                    self.state = State::Header;
                    let control = Control {
                        opcode: self.ctrl_opcode,
                        raw: std::mem::take(&mut self.ctrl_raw),
                        payload: std::mem::take(&mut self.ctrl_payload),
                    };
                    if let Some(code) = control.close_code()
                        && !valid_close_code(code)
                    {
                        return Err(FrameError::BadCloseCode(code));
                    }
                    return Ok(Some(Event::Control(control)));
                }
            }
        }
    }

    fn end_data_frame(&mut self) {
        self.state = State::Header;
        if self.frame_fin {
            self.in_message = false;
            self.message_bytes = 0;
        }
    }

    fn finish_header(&mut self) -> Result<Option<Event<'static>>, FrameError> {
        // Taken whole: it is this frame's `raw`, and the next header starts empty.
        let raw = std::mem::replace(&mut self.hdr, RawHeader::EMPTY);
        let h = &*raw;
        let fin = h[0] & 0x80 != 0;
        let rsv1 = h[0] & 0x40 != 0;
        if h[0] & 0x30 != 0 || (rsv1 && !self.compressed_ok) {
            return Err(FrameError::ReservedBits);
        }
        let opcode = OpCode::from_bits(h[0] & 0x0F).ok_or(FrameError::ReservedOpcode)?;
        // RFC 7692 §6.1: only the first frame of a message carries the "compressed" bit.
        if rsv1 && (opcode.is_control() || opcode == OpCode::Continuation) {
            return Err(FrameError::ReservedBits);
        }
        let masked = h[1] & 0x80 != 0;
        match (self.sender, masked) {
            (Sender::Client, false) => return Err(FrameError::UnmaskedClientFrame),
            (Sender::Server, true) => return Err(FrameError::MaskedServerFrame),
            _ => {}
        }
        let (len, ext) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 2),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthOverflow);
                }
                (len, 8)
            }
            n => (u64::from(n), 0),
        };
        let mask = masked.then(|| {
            let m = &h[2 + ext..6 + ext];
            [m[0], m[1], m[2], m[3]]
        });
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if len > 125 {
                return Err(FrameError::ControlTooLong);
            }
            if opcode == OpCode::Close && len == 1 {
                return Err(FrameError::CloseLengthOne);
            }
            self.ctrl_opcode = opcode;
            self.ctrl_mask = mask;
            // Header and payload, in one allocation.
            self.ctrl_raw = Vec::with_capacity(raw.len() + len as usize);
            self.ctrl_raw.extend_from_slice(&raw);
            self.ctrl_payload = Vec::with_capacity(len as usize);
            self.state = State::Control {
                remaining: len as usize,
            };
            return Ok(None);
        }
        let starts_message = match (opcode, self.in_message) {
            (OpCode::Continuation, false) => return Err(FrameError::UnexpectedContinuation),
            (OpCode::Continuation, true) => false,
            (_, true) => return Err(FrameError::ExpectedContinuation),
            (_, false) => true,
        };
        let total = self.message_bytes.saturating_add(len);
        let too_big = total > self.max_message;
        self.message_bytes = total;
        self.in_message = true;
        self.frame_fin = fin;
        self.state = State::Data { remaining: len };
        Ok(Some(Event::Header(DataHeader {
            raw,
            opcode,
            fin,
            payload_len: len,
            starts_message,
            too_big,
            compressed: rsv1,
        })))
    }
}

/// Encode a whole, final frame of our own (Close, Ping, a message): unmasked toward clients,
/// masked toward servers.
pub fn encode(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    encode_frame(opcode, true, false, payload, mask)
}

/// Encode one frame with explicit FIN and RSV1 (the permessage-deflate bit; set it on the
/// first frame of a compressed message only).
pub fn encode_frame(
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    let fin_bit = if fin { 0x80 } else { 0 };
    let rsv1_bit = if rsv1 { 0x40 } else { 0 };
    out.push(fin_bit | rsv1_bit | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A Close frame with `code` and `reason` (truncated at a char boundary to fit 123 bytes).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Close, &payload, mask)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
