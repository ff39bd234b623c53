//! WebSocket clients with the harness limits, and assertions on what they receive.

use super::*;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Largest message and frame the test peers accept: Autobahn's 9.x cases send 16 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A WebSocket client connection as returned by [`ws_connect`].
pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// WebSocket limits shared by the echo server and [`ws_connect`]: explicit so a tungstenite
/// default change cannot silently change what the tests exercise.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        // Flush every message at once (the echo is latency-sensitive, not throughput-bound)...
        .write_buffer_size(0)
        // ...and bound what a stuck peer can make us hold: one largest message plus framing.
        .max_write_buffer_size(2 * MAX_MESSAGE_BYTES)
}

/// Open a WebSocket (`ws://...`) with the harness limits. Panics if the handshake fails; use
/// [`ws_try_connect`] to assert on refusals.
pub async fn ws_connect(url: &str) -> WsClient {
    ws_try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("websocket connect to {url}: {e}"))
}

/// Open a WebSocket from a full request (extra headers, subprotocols...): build it with
/// `tungstenite::client::IntoClientRequest` and add headers. Errors (refusals) are returned.
pub async fn ws_try_connect<R>(request: R) -> Result<WsClient, tungstenite::Error>
where
    R: tungstenite::client::IntoClientRequest + Unpin,
{
    let (ws, _resp) =
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true).await?;
    Ok(ws)
}

/// Like [`ws_try_connect`] but also returns the handshake response (subprotocol, headers).
pub async fn ws_connect_with_response<R>(
    request: R,
) -> Result<(WsClient, tungstenite::handshake::client::Response), tungstenite::Error>
where
    R: tungstenite::client::IntoClientRequest + Unpin,
{
    tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true).await
}

/// The next text message, skipping pings/pongs; panics on anything else or after `timeout`.
pub async fn next_text(ws: &mut WsClient, timeout: Duration) -> String {
    loop {
        let msg = tokio::time::timeout(timeout, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message within {timeout:?}"));
        match msg {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// A WebSocket request for `url` with extra headers (values must be valid header values).
pub fn ws_request(url: &str, headers: &[(&str, &str)]) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("a valid ws:// URL");
    for (name, value) in headers {
        req.headers_mut().append(
            http::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    req
}

/// Send `text` and expect it back (skipping pings/pongs).
pub async fn assert_echo<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    assert_eq!(recv_text(ws, PROMPTLY).await, text);
}

/// [`next_text`] for any WebSocket stream (raw or TLS clients too).
pub async fn recv_text<S>(ws: &mut WebSocketStream<S>, within: Duration) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => panic!("no message within {within:?}"),
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Read until a Close frame arrives (data messages and pings before it are returned too), then
/// require the end of the stream. Returns `(code, reason, messages before the close)`.
pub async fn expect_close<S>(
    ws: &mut WebSocketStream<S>,
    within: Duration,
) -> (u16, String, Vec<Message>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let (code, reason) = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no Close frame within {within:?}; got {before:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                break frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_owned())
                });
            }
            Ok(Some(Ok(msg))) => before.push(msg),
            Ok(other) => panic!("expected a Close frame, got {other:?} after {before:?}"),
        }
    };
    expect_end(ws, within).await;
    (code, reason, before)
}

/// Require the end of the stream (after a close handshake): `None` or `ConnectionClosed`.
pub async fn expect_end<S>(ws: &mut WebSocketStream<S>, within: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => panic!("stream did not end within {within:?} after the close"),
            Ok(None) | Ok(Some(Err(tungstenite::Error::ConnectionClosed))) => return,
            // Pings that crossed the close on the wire.
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected the end of the stream after Close, got {other:?}"),
        }
    }
}

/// Close with 1000 and complete the close handshake (the peer's Close, then the end).
pub async fn close_normally<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("send Close 1000");
    let (code, _, _) = expect_close(ws, PROMPTLY).await;
    assert_eq!(code, 1000, "the peer answers a 1000 close with 1000");
}
