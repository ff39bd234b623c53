//! A hand-driven WebSocket client for permessage-deflate tests (tungstenite has no deflate):
//! masked frames out with RSV1 as the test says, whole frames in with their RSV1 bit; and the
//! gateway's RSS for decompression-bomb checks.

use super::{Gateway, PROMPTLY, RawResponse, raw_exchange, upgrade_head};
use switchboard_gateway::engine::frame::{self, Event, OpCode, Scanner, Sender};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MASK: Option<[u8; 4]> = Some([9, 8, 7, 6]);

/// A WebSocket client frame by frame: masked frames out, whole frames in.
pub struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
    scanner: Scanner,
}

impl Client {
    pub async fn connect(gw: &Gateway, path: &str, offer: Option<&str>) -> (RawResponse, Client) {
        let extra: Vec<(&str, &str)> = offer
            .map(|o| vec![("Sec-WebSocket-Extensions", o)])
            .unwrap_or_default();
        let (resp, stream, rest) = raw_exchange(gw.addr(), &upgrade_head(path, &extra))
            .await
            .unwrap();
        assert_eq!(resp.status, 101, "{}", String::from_utf8_lossy(&resp.body));
        let mut scanner = Scanner::new(Sender::Server, u64::MAX);
        scanner.allow_compressed();
        let client = Client {
            stream,
            pending: rest,
            scanner,
        };
        (resp, client)
    }

    pub async fn send(&mut self, op: OpCode, compressed: bool, payload: &[u8]) {
        let f = frame::encode_frame(op, true, compressed, payload, MASK);
        self.stream.write_all(&f).await.unwrap();
    }

    /// The next whole frame (opcode, RSV1, payload); `None` when the stream ended.
    pub async fn next(&mut self) -> Option<(OpCode, bool, Vec<u8>)> {
        let mut cur: Option<(OpCode, bool, u64, Vec<u8>)> = None;
        loop {
            let input = std::mem::take(&mut self.pending);
            let mut pos = 0;
            while let Some(ev) = self.scanner.next(&input, &mut pos).unwrap() {
                match ev {
                    Event::Header(h) => {
                        cur = Some((h.opcode, h.compressed, h.payload_len, Vec::new()))
                    }
                    Event::Payload(p) => cur.as_mut().unwrap().3.extend_from_slice(p),
                    Event::Control(c) => {
                        self.pending = input[pos..].to_vec();
                        return Some((c.opcode, false, c.payload));
                    }
                }
                if let Some((op, c, len, data)) = &cur
                    && data.len() as u64 == *len
                {
                    let out = (*op, *c, data.clone());
                    self.pending = input[pos..].to_vec();
                    return Some(out);
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(PROMPTLY, self.stream.read(&mut buf))
                .await
                .expect("a frame in time")
                .unwrap();
            if n == 0 {
                return None;
            }
            buf.truncate(n);
            self.pending = buf;
        }
    }

    /// The next data frame, past pings.
    /// Send `text` compressed and read the echo: it must come back compressed (RSV1, under
    /// half the size) and inflate (within `max` bytes) to `text`.
    pub async fn echo_compressed(&mut self, text: &str, max: u64) {
        use switchboard_gateway::engine::deflate;
        let compressed = deflate::compress(text.as_bytes(), 6, 15).unwrap();
        self.send(OpCode::Text, true, &compressed).await;
        let (op, rsv1, payload) = self.next_data().await;
        assert_eq!(op, OpCode::Text);
        assert!(rsv1, "the echo over the threshold comes compressed");
        assert!(payload.len() < text.len() / 2, "{} bytes", payload.len());
        assert_eq!(deflate::inflate(&payload, max).unwrap(), text.as_bytes());
    }

    pub async fn next_data(&mut self) -> (OpCode, bool, Vec<u8>) {
        loop {
            let f = self.next().await.expect("a frame");
            if !matches!(f.0, OpCode::Ping | OpCode::Pong) {
                return f;
            }
        }
    }
}

/// The resident set of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A JSON chat payload that compresses like real chat (~2.5 KiB, over any test threshold).
pub fn chat_payload() -> String {
    (0..40)
        .map(|i| {
            format!("{{\"user\":\"user-{i}\",\"text\":\"hello everyone, message number {i}\"}}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The code of a Close frame's payload.
pub fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}
