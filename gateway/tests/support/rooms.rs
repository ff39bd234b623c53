//! Helpers for the rooms-mode tests: the publish API, a JSON-protocol WebSocket client for
//! frame-exact assertions, an SSE reader, long-polling, and a raw TCP member that stops reading.
//! The reconnecting application client is [`super::room_client`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{PROMPTLY, WsClient, ws_config};

/// The publish API token the rooms test configs use.
pub const PUBLISH_TOKEN: &str = "rooms-test-publish-token";

/// `POST /v1/publish` on the admin listener with [`PUBLISH_TOKEN`]; returns status and JSON body.
pub async fn publish_api(admin: SocketAddr, body: &Value) -> (u16, Value) {
    publish_api_with_token(admin, PUBLISH_TOKEN, body).await
}

/// [`publish_api`] with any bearer token (empty: no `Authorization` header).
pub async fn publish_api_with_token(admin: SocketAddr, token: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("content-type", "application/json")];
    if !token.is_empty() {
        headers.push(("authorization", auth.as_str()));
    }
    let (status, _, text) =
        http_request(admin, "POST", "/v1/publish", &headers, body.to_string()).await;
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("publish API answer is not JSON ({e}): {status} {text:?}"));
    (status, v)
}

/// Publish `data` to `room` through the API and return the assigned seq (panics unless 200).
pub async fn publish_seq(admin: SocketAddr, room: &str, data: Value) -> u64 {
    let (status, body) = publish_api(admin, &serde_json::json!({"room": room, "data": data})).await;
    assert_eq!(status, 200, "publish to {room}: {body}");
    body["results"][0]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("publish to {room}: no seq in {body}"))
}

/// One HTTP/1.1 request; returns status, headers and body text.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(40), client.request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 40s"))
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

// --- JSON protocol over a plain WebSocket ---------------------------------------------------

/// A `switchboard.v1` WebSocket without any client logic: what is sent is what the gateway
/// gets, what it sends is returned as is.
pub struct JsonWs {
    pub ws: WsClient,
}

impl JsonWs {
    /// Connect offering `switchboard.v1` (and any extra headers); panics on refusal.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Self {
        Self::try_connect(url, headers)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Connect; the handshake error (a refusal's status) is returned.
    pub async fn try_connect(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request().expect("ws url");
        req.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static("switchboard.v1"),
        );
        for (n, v) in headers {
            req.headers_mut().append(
                http::header::HeaderName::from_bytes(n.as_bytes()).expect("header name"),
                http::HeaderValue::from_str(v).expect("header value"),
            );
        }
        let (ws, resp) =
            tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true).await?;
        assert_eq!(
            resp.headers()
                .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok()),
            Some("switchboard.v1"),
            "the gateway selects the protocol's subprotocol"
        );
        Ok(Self { ws })
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    /// The next JSON message (skipping pings), or panic.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(PROMPTLY).await
    }

    pub async fn recv_within(&mut self, within: Duration) -> Value {
        let text = super::recv_text(&mut self.ws, within).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
    }

    /// The next message of `type` (others skipped and returned too, in order).
    pub async fn recv_type(&mut self, ty: &str) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return (v, skipped);
            }
            skipped.push(v);
        }
    }

    /// The next frame that is not a presence event (presence events arrive asynchronously,
    /// from the bus, interleaved with everything else).
    pub async fn recv_skipping_presence(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] != "presence" || v.get("id").is_some() {
                return v;
            }
        }
    }

    /// `join` and return the `joined` reply (panics on anything else first, presence events
    /// aside).
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(serde_json::json!({"type": "join", "room": room, "id": format!("j-{room}")}))
            .await;
        let v = self.recv_skipping_presence().await;
        assert_eq!(v["type"], "joined", "join {room}: {v}");
        assert_eq!(v["room"], room, "{v}");
        v
    }

    /// The next `n` messages, which must all be `message`s (presence events aside).
    pub async fn messages(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let v = self.recv_skipping_presence().await;
            assert_eq!(v["type"], "message", "expected a message, got {v}");
            out.push(v);
        }
        out
    }

    /// Nothing is queued for this connection: a `ping` sent now is answered by the very next
    /// frame (the gateway handles a connection's messages in order, and a join queues its
    /// reply and replay before the next message is read).
    pub async fn expect_nothing_queued(&mut self) {
        self.send(serde_json::json!({"type": "ping", "id": "sentinel"}))
            .await;
        let v = self.recv().await;
        assert_eq!(
            v,
            serde_json::json!({"type": "pong", "id": "sentinel"}),
            "expected nothing before the pong"
        );
    }
}

// --- SSE -------------------------------------------------------------------------------------

/// One Server-Sent Event (fields as received; `data` lines joined with `\n`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }
}

/// An open `text/event-stream` response, parsed as events arrive.
pub struct Sse {
    pub status: u16,
    pub headers: HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
    /// Comment lines seen (without the leading `:`).
    pub comments: Vec<String>,
    /// `retry:` values seen outside events with data (in order).
    pub retries: Vec<u64>,
    ended: bool,
}

impl Sse {
    /// `GET path` with `Accept: text/event-stream` and `headers`.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut req = Request::get(format!("http://{addr}{path}"))
            .header(http::header::ACCEPT, "text/event-stream");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = tokio::time::timeout(PROMPTLY, client.request(req.body(Empty::new()).unwrap()))
            .await
            .unwrap_or_else(|_| panic!("SSE {path}: no response head"))
            .unwrap_or_else(|e| panic!("SSE {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Self {
            status,
            headers,
            body: resp.into_body(),
            buf: Vec::new(),
            comments: Vec::new(),
            retries: Vec::new(),
            ended: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next event with data (comments and bare `retry:` blocks are recorded, not
    /// returned); `None` when the stream ended.
    pub async fn next_event(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(ev) = self.parse_one() {
                if ev.data.is_empty() && ev.event.is_none() {
                    if let Some(r) = ev.retry {
                        self.retries.push(r);
                    }
                    continue;
                }
                return Some(ev);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => panic!(
                    "SSE: no event within {within:?}; buffered {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(None) | Ok(Some(Err(_))) => self.ended = true,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// [`Self::next_event`] that must produce an event.
    pub async fn event(&mut self) -> SseEvent {
        self.next_event(PROMPTLY)
            .await
            .expect("an SSE event before the end of the stream")
    }

    /// One complete block (up to a blank line) from the buffer.
    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let block = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end + 2);
            let mut ev = SseEvent::default();
            let mut data = Vec::new();
            let mut any = false;
            for line in block.split('\n') {
                if let Some(c) = line.strip_prefix(':') {
                    self.comments.push(c.trim().to_owned());
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                any = true;
                match field {
                    "event" => ev.event = Some(value.to_owned()),
                    "id" => ev.id = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    "retry" => ev.retry = value.parse().ok(),
                    _ => {}
                }
            }
            if !any {
                continue; // a comment-only block
            }
            ev.data = data.join("\n");
            return Some(ev);
        }
    }
}

// --- Long-polling ----------------------------------------------------------------------------

/// One long-poll answer.
#[derive(Debug)]
pub struct Poll {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Option<Value>,
}

impl Poll {
    /// The cursor to poll with next: the body's `cursor` (200) or `X-Switchboard-Cursor` (204).
    pub fn cursor(&self) -> String {
        match &self.body {
            Some(b) => b["cursor"].as_str().expect("cursor in the body").to_owned(),
            None => self
                .headers
                .get("x-switchboard-cursor")
                .and_then(|v| v.to_str().ok())
                .expect("X-Switchboard-Cursor on a 204")
                .to_owned(),
        }
    }

    /// The `data` of every message in the answer.
    pub fn data(&self) -> Vec<Value> {
        self.body
            .as_ref()
            .and_then(|b| b["messages"].as_array())
            .map(|a| a.iter().map(|m| m["data"].clone()).collect())
            .unwrap_or_default()
    }
}

/// `GET path` (a long-poll).
pub async fn long_poll(addr: SocketAddr, path: &str) -> Poll {
    let (status, headers, text) = http_request(addr, "GET", path, &[], String::new()).await;
    let body = (!text.is_empty()).then(|| {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("poll body ({e}): {text:?}"))
    });
    Poll {
        status,
        headers,
        body,
    }
}

// --- A member that stops reading --------------------------------------------------------------

/// A client-side (masked) WebSocket text frame.
pub fn masked_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask: [u8; 4] = rand::random();
    let mut out = vec![0x81u8];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A raw TCP WebSocket client with a small receive buffer: it does the handshake, sends what it
/// is told, and reads nothing until asked ([`StalledMember::read_to_end`]).
pub struct StalledMember {
    pub stream: TcpStream,
    /// Bytes already read past the 101 head.
    pub pending: Vec<u8>,
}

impl StalledMember {
    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // As small as the kernel allows: the gateway's writes stall almost at once.
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("connect");
        let head = super::upgrade_head(path, &[("Sec-WebSocket-Protocol", "switchboard.v1")]);
        stream.write_all(head.as_bytes()).await.expect("write head");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(PROMPTLY, stream.read(&mut chunk))
                .await
                .expect("101 in time")
                .expect("read head");
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self {
            stream,
            pending: buf[end..].to_vec(),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .write_all(&masked_text_frame(text))
            .await
            .expect("write frame");
    }

    /// Read everything until the gateway ends the connection; returns the server frames as
    /// `(opcode, payload)`.
    pub async fn read_to_end(mut self, within: Duration) -> Vec<(u8, Vec<u8>)> {
        let mut data = std::mem::take(&mut self.pending);
        let deadline = Instant::now() + within;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!(
                    "the gateway did not end the connection within {within:?} ({} bytes read)",
                    data.len()
                ),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => data.extend_from_slice(&chunk[..n]),
            }
        }
        parse_server_frames(&data)
    }
}

/// Split unmasked server frames (complete ones; a truncated tail is dropped).
pub fn parse_server_frames(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let opcode = data[0] & 0x0F;
        let (len, header) = match data[1] & 0x7F {
            126 if data.len() >= 4 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
            127 if data.len() >= 10 => (
                u64::from_be_bytes(data[2..10].try_into().expect("8 bytes")) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if data.len() < header + len {
            break;
        }
        out.push((opcode, data[header..header + len].to_vec()));
        data = &data[header + len..];
    }
    out
}
