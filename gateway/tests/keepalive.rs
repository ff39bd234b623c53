//! Healthy idle connections are never cut by a timeout, and keep-alive pings find dead ones,
//! through the real binary: an idle connection outlives `limits.handshakeTimeout` (the header
//! read timeout does not apply after the 101), a client that answers pings stays open, a raw
//! client that never answers them is closed with 1001 "ping timeout" on both sides.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, PROMPTLY, assert_echo, close_normally, raw_exchange, upgrade_head,
    ws_connect,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// How long the connections sit: four times the handshake timeout, four ping intervals, two
/// pong deadlines (generous, so a busy CI machine answering a pong late does not look dead).
const SIT: Duration = Duration::from_secs(4);

fn config(backend: u16) -> String {
    ConfigBuilder::new()
        .limits(json!({"handshakeTimeout": "1s"}))
        .route(route("idle", "/idle").proxy(&[backend]))
        .route(
            route("pinged", "/pinged")
                .proxy(&[backend])
                .keepalive(json!({"interval": "1s", "timeout": "2s"})),
        )
        .yaml()
}

async fn start() -> (EchoServer, Gateway) {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&config(echo.port())).await;
    (echo, gateway)
}

#[tokio::test]
async fn an_idle_connection_outlives_the_handshake_timeout() {
    let (echo, gateway) = start().await;
    let mut ws = ws_connect(&gateway.ws_url("/idle")).await;
    assert_echo(&mut ws, "before sitting idle").await;
    tokio::time::sleep(SIT).await;
    assert_echo(&mut ws, "after sitting idle").await;
    assert!(echo.closes().is_empty(), "{:?}", echo.closes());
    close_normally(&mut ws).await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_open() {
    let (echo, gateway) = start().await;
    let mut ws = ws_connect(&gateway.ws_url("/pinged")).await;
    assert_echo(&mut ws, "hello").await;

    // Keep reading (tungstenite answers each ping with a pong on the next read).
    let until = tokio::time::Instant::now() + SIT;
    let mut pings = 0;
    while let Ok(msg) = tokio::time::timeout_at(until, ws.next()).await {
        match msg {
            Some(Ok(Message::Ping(payload))) => {
                pings += 1;
                assert!(payload.starts_with(b"sb-ka:"), "{payload:?}");
            }
            other => panic!("only pings expected while sitting, got {other:?}"),
        }
    }
    assert!(pings >= 2, "the gateway pinged ({pings} pings)");
    assert_echo(&mut ws, "still open").await;
    assert!(echo.closes().is_empty(), "{:?}", echo.closes());
    close_normally(&mut ws).await;
}

/// One unmasked server frame: (opcode, payload), or `None` when more bytes are needed.
fn parse_frame(buf: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    assert_eq!(
        b1 & 0x80,
        0,
        "frames from the gateway to a client are not masked"
    );
    let (len, start) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => panic!("no 64-bit lengths expected here"),
        n => (n as usize, 2),
    };
    let payload = buf.get(start..start + len)?.to_vec();
    Some(((b0 & 0x0f, payload), start + len))
}

#[tokio::test]
async fn a_raw_client_that_never_answers_pings_is_closed_on_both_sides() {
    let (echo, gateway) = start().await;
    let (resp, mut socket, mut buf) = raw_exchange(gateway.addr(), &upgrade_head("/pinged", &[]))
        .await
        .expect("raw handshake");
    assert_eq!(resp.status, 101, "{resp:?}");

    // Read nothing, answer nothing: the app learns of the close first.
    let app = echo.wait_closes(1, PROMPTLY).await;
    assert_eq!(app[0], Some((1001, "ping timeout".to_owned())));

    // Now read what the gateway sent: pings, then Close 1001.
    let mut frames = Vec::new();
    let close = loop {
        while let Some((frame, used)) = parse_frame(&buf) {
            buf.drain(..used);
            frames.push(frame);
        }
        if let Some((_, payload)) = frames.iter().find(|(op, _)| *op == 0x8) {
            break payload.clone();
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PROMPTLY, socket.read(&mut chunk))
            .await
            .expect("frames arrive")
            .expect("read");
        assert!(n > 0, "EOF before a Close frame; frames: {frames:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let opcodes: Vec<u8> = frames.iter().map(|(op, _)| *op).collect();
    assert!(
        opcodes[..opcodes.len() - 1].iter().all(|op| *op == 0x9) && opcodes.len() >= 2,
        "pings, then the Close: {opcodes:?}"
    );
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
    assert_eq!(&close[2..], b"ping timeout");

    // Complete the close handshake (masked, as a client must); the gateway then hangs up.
    socket
        .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9])
        .await
        .expect("send Close 1001");
    let mut rest = Vec::new();
    tokio::time::timeout(PROMPTLY, socket.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the TCP connection")
        .expect("read to EOF");
}
