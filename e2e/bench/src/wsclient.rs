//! The load generator's WebSocket client (tokio-tungstenite) and the three wire dialects it
//! speaks: plain WebSocket (echo apps, the Node room server, the gateway's raw relay rooms), the
//! Switchboard room protocol v1 (JSON frames, or its Protocol Buffers encoding: a few
//! hand-written varint and length-delimited fields, see [`pb`]), and Socket.IO v4 over the WebSocket transport
//! (`0{..}` open, `40` connect, `42[..]` events, `2`/`3` ping/pong). Every system is driven by
//! the same client code, so the client's own cost is the same for all of them.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

pub type Ws = WebSocketStream<TcpStream>;

/// How a client talks to a system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Plain WebSocket messages.
    Plain,
    /// The Switchboard room protocol (`switchboard.v1`).
    Switchboard,
    /// Its binary encoding (`switchboard.v1.proto`, gateway/proto/switchboard/v1/rooms.proto).
    SwitchboardProto,
    /// Socket.IO v4, WebSocket transport.
    SocketIo,
}

/// The room protocol's subprotocol name.
pub const SWITCHBOARD_V1: &str = "switchboard.v1";
/// The subprotocol of its binary encoding.
pub const SWITCHBOARD_V1_PROTO: &str = "switchboard.v1.proto";

fn config() -> WebSocketConfig {
    // Small read buffers: the idle-memory test holds thousands of client connections here.
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// Connect to `ws://127.0.0.1:{port}{path}` with TCP_NODELAY; for the Switchboard dialect offer
/// `switchboard.v1`, for Socket.IO complete the Engine.IO/Socket.IO handshake.
pub async fn connect(port: u16, path: &str, dialect: Dialect) -> Result<Ws> {
    connect_with(port, path, dialect, &Extra::default()).await
}

/// Extra handshake details: a source address (spreading many connections over 127.0.0.0/8)
/// and request headers (`Authorization`, `Origin`).
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub src: Option<std::net::Ipv4Addr>,
    pub headers: Vec<(&'static str, String)>,
}

/// [`connect`] with a source address and extra headers.
pub async fn connect_with(port: u16, path: &str, dialect: Dialect, extra: &Extra) -> Result<Ws> {
    let url = format!("ws://127.0.0.1:{port}{path}");
    let mut req = url.as_str().into_client_request()?;
    if dialect == Dialect::Switchboard {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", SWITCHBOARD_V1.parse()?);
    }
    if dialect == Dialect::SwitchboardProto {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", SWITCHBOARD_V1_PROTO.parse()?);
    }
    for (k, v) in &extra.headers {
        req.headers_mut().insert(*k, v.parse()?);
    }
    let dst = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = match extra.src {
        None => TcpStream::connect(dst).await,
        Some(ip) => {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(std::net::SocketAddr::from((ip, 0)))?;
            sock.connect(dst).await
        }
    }
    .with_context(|| format!("connect :{port}"))?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = client_async_with_config(req, tcp, Some(config()))
        .await
        .with_context(|| format!("handshake {url}"))?;
    if dialect == Dialect::SocketIo {
        sio_handshake(&mut ws).await?;
    }
    Ok(ws)
}

/// Socket.IO path with a role query.
pub fn sio_path(role: &str) -> String {
    format!("/socket.io/?EIO=4&transport=websocket&role={role}")
}

async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(f))) => bail!("closed by server: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

async fn sio_handshake(ws: &mut Ws) -> Result<()> {
    let open = tokio::time::timeout(Duration::from_secs(10), next_text(ws)).await??;
    if !open.starts_with('0') {
        bail!("Socket.IO: expected an open packet, got {open}");
    }
    ws.send(Message::text("40")).await?;
    loop {
        let t = tokio::time::timeout(Duration::from_secs(10), next_text(ws)).await??;
        if t.starts_with("40") {
            return Ok(());
        }
        if t.as_str() == "2" {
            ws.send(Message::text("3")).await?;
        }
    }
}

/// Join a room with the Switchboard protocol and wait for `joined`.
pub async fn sb_join(ws: &mut Ws, room: &str) -> Result<()> {
    let msg = serde_json::json!({"type": "join", "room": room, "id": "j"}).to_string();
    ws.send(Message::text(msg)).await?;
    loop {
        let t = tokio::time::timeout(Duration::from_secs(10), next_text(ws)).await??;
        if t.contains("\"joined\"") {
            return Ok(());
        }
        if t.contains("\"error\"") {
            bail!("join refused: {t}");
        }
    }
}

/// Join a room with the binary encoding and wait for `joined`.
pub async fn sb_proto_join(ws: &mut Ws, room: &str) -> Result<()> {
    ws.send(Message::binary(pb::join(room))).await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await?
            .context("connection ended")??;
        let Message::Binary(b) = frame else { continue };
        match pb::server_kind(&b) {
            Some(pb::JOINED) => return Ok(()),
            Some(pb::ERROR) => bail!("join refused: {b:?}"),
            _ => {}
        }
    }
}

/// Just enough Protocol Buffers for the bench (field numbers of
/// gateway/proto/switchboard/v1/rooms.proto), so the load generator does not depend on the
/// gateway's crate.
pub mod pb {
    pub const MESSAGE: u64 = 2;
    pub const JOINED: u64 = 3;
    pub const ERROR: u64 = 6;

    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn field(tag: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(tag << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    /// `ClientMessage { id: "j", join: { room } }`.
    pub fn join(room: &str) -> Vec<u8> {
        let mut join = Vec::new();
        field(1, room.as_bytes(), &mut join);
        let mut out = Vec::new();
        field(1, b"j", &mut out);
        field(2, &join, &mut out);
        out
    }

    /// `ClientMessage { publish: { room, json } }`.
    pub fn publish(room: &str, json: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        field(1, room.as_bytes(), &mut p);
        field(2, json, &mut p);
        let mut out = Vec::new();
        field(4, &p, &mut out);
        out
    }

    fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            n |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(n);
            }
        }
        None
    }

    /// The length-delimited field `tag` of a message (the first one), if any.
    fn bytes_field(b: &[u8], tag: u64) -> Option<&[u8]> {
        let mut at = 0;
        while at < b.len() {
            let key = read_varint(b, &mut at)?;
            match key & 7 {
                0 => {
                    read_varint(b, &mut at)?;
                }
                2 => {
                    let len = read_varint(b, &mut at)? as usize;
                    let data = b.get(at..at + len)?;
                    at += len;
                    if key >> 3 == tag {
                        return Some(data);
                    }
                }
                _ => return None,
            }
        }
        None
    }

    /// Which `ServerMessage.kind` a frame holds.
    pub fn server_kind(b: &[u8]) -> Option<u64> {
        [MESSAGE, JOINED, ERROR, 4, 5, 7, 8, 9, 10]
            .into_iter()
            .find(|k| bytes_field(b, *k).is_some())
    }

    /// The `json` payload of a `message` frame.
    pub fn message_json(b: &[u8]) -> Option<&[u8]> {
        bytes_field(bytes_field(b, MESSAGE)?, 7)
    }
}

/// What a receiver counts as one delivered room message.
pub fn is_delivery(dialect: Dialect, text: &str) -> bool {
    match dialect {
        Dialect::Plain => true,
        // serde_json sorts keys; match the type field anywhere in the object.
        Dialect::Switchboard => text.contains("\"type\":\"message\""),
        // Binary frames are checked with `pb::server_kind`.
        Dialect::SwitchboardProto => false,
        Dialect::SocketIo => text.starts_with("42"),
    }
}

/// One request/response: send `payload` and wait for the next data message. Socket.IO pings
/// are answered on the way.
pub async fn round_trip(ws: &mut Ws, payload: &str) -> Result<()> {
    ws.send(Message::text(payload.to_string())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(_) | Message::Binary(_))) => return Ok(()),
            Some(Ok(Message::Close(f))) => bail!("closed by server: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}
