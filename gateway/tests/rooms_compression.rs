//! permessage-deflate (RFC 7692) on rooms routes, over real sockets with a hand-driven client
//! (tungstenite has no deflate): the negotiation answer, compressed messages both ways through
//! a raw echo room, the threshold, a route without compression, and a decompression bomb that
//! closes 1009 without the gateway holding it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use serde_json::json;
use support::{ConfigBuilder, Gateway, PROMPTLY, RawResponse, raw_exchange, route, upgrade_head};
use switchboard_gateway::engine::deflate;
use switchboard_gateway::engine::frame::{self, Event, OpCode, Scanner, Sender};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MASK: Option<[u8; 4]> = Some([9, 8, 7, 6]);
const MAX: usize = 1024 * 1024;

fn config() -> String {
    let raw = json!({"protocol": "raw", "pathRoom": "/{room}", "echo": true, "join": ["*"], "publish": ["*"]});
    ConfigBuilder::new()
        .route(
            route("zip", "/zip")
                .prefix()
                .rooms(raw.clone())
                .set("rooms.pathRoom", json!("/zip/{room}"))
                .max_message_bytes(MAX)
                .compression(json!({"enabled": true, "thresholdBytes": 64})),
        )
        .route(
            route("plain", "/plain")
                .prefix()
                .rooms(raw)
                .set("rooms.pathRoom", json!("/plain/{room}")),
        )
        .yaml()
}

/// A WebSocket client frame by frame: masked frames out, whole frames in.
struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
    scanner: Scanner,
}

impl Client {
    async fn connect(gw: &Gateway, path: &str, offer: Option<&str>) -> (RawResponse, Client) {
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

    async fn send(&mut self, op: OpCode, compressed: bool, payload: &[u8]) {
        let f = frame::encode_frame(op, true, compressed, payload, MASK);
        self.stream.write_all(&f).await.unwrap();
    }

    /// The next whole frame (opcode, RSV1, payload); `None` when the stream ended.
    async fn next(&mut self) -> Option<(OpCode, bool, Vec<u8>)> {
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
    async fn next_data(&mut self) -> (OpCode, bool, Vec<u8>) {
        loop {
            let f = self.next().await.expect("a frame");
            if !matches!(f.0, OpCode::Ping | OpCode::Pong) {
                return f;
            }
        }
    }
}

fn chat_payload() -> String {
    (0..40)
        .map(|i| {
            format!("{{\"user\":\"user-{i}\",\"text\":\"hello everyone, message number {i}\"}}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn a_client_offering_deflate_gets_it_and_messages_travel_compressed_both_ways() {
    let gw = Gateway::start(&config()).await;
    let (resp, mut c) = Client::connect(
        &gw,
        "/zip/room-1",
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(
        resp.header("sec-websocket-extensions"),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let text = chat_payload();
    let compressed = deflate::compress(text.as_bytes(), 6, 15).unwrap();
    c.send(OpCode::Text, true, &compressed).await;
    let (op, rsv1, payload) = c.next_data().await;
    assert_eq!(op, OpCode::Text);
    assert!(rsv1, "the echo over the threshold comes compressed");
    assert!(payload.len() < text.len() / 2, "{} bytes", payload.len());
    assert_eq!(
        deflate::inflate(&payload, MAX as u64).unwrap(),
        text.as_bytes()
    );
    // Under the threshold (64 bytes): sent as it is, RSV1 clear.
    c.send(OpCode::Text, false, b"short").await;
    assert_eq!(
        c.next_data().await,
        (OpCode::Text, false, b"short".to_vec())
    );
}

#[tokio::test]
async fn a_route_without_compression_does_not_negotiate_it_and_refuses_compressed_frames() {
    let gw = Gateway::start(&config()).await;
    let (resp, mut c) = Client::connect(&gw, "/plain/room-1", Some("permessage-deflate")).await;
    assert_eq!(resp.header("sec-websocket-extensions"), None);
    let compressed = deflate::compress(b"Hello", 6, 15).unwrap();
    c.send(OpCode::Text, true, &compressed).await;
    let (op, _, payload) = c.next_data().await;
    assert_eq!(op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_decompression_bomb_closes_1009_without_the_gateway_inflating_it() {
    let gw = Gateway::start(&config()).await;
    let (_, mut c) = Client::connect(&gw, "/zip/bombed", Some("permessage-deflate")).await;
    // 512 MiB of zeros, about 500 KiB compressed: under the 1 MiB cap on the wire, 512 times
    // over it once inflated.
    let bomb = deflate::compress(&vec![0u8; 512 << 20], 9, 15).unwrap();
    assert!(bomb.len() < MAX, "{}", bomb.len());
    let before = rss_kib(gw.pid());
    c.send(OpCode::Binary, true, &bomb).await;
    let (op, _, payload) = c.next_data().await;
    assert_eq!(op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    // The wire message (≤ 1 MiB) and at most the cap inflated (1 MiB) plus slack; the bomb
    // itself would be 524,288 KiB.
    assert!(grown < 32 * 1024, "gateway RSS grew by {grown} KiB");
}
