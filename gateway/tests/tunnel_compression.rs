//! permessage-deflate (RFC 7692) terminated at the edge on proxy routes, over real sockets: the
//! gateway answers the client's offer itself, inflates compressed client messages for the app
//! (which is offered no extension and sees plain frames), compresses large app messages for the
//! client, closes a decompression bomb 1009 without holding it, and refuses RSV1 where it was
//! not negotiated (1002). A proxy route without compression strips the offer as before.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::time::Duration;

use serde_json::json;
use support::deflate_client::{Client, chat_payload, close_code, rss_kib};
use support::{ConfigBuilder, EchoServer, Gateway, Received, eventually, route};
use switchboard_gateway::engine::deflate;
use switchboard_gateway::engine::frame::OpCode;

const MAX: usize = 1024 * 1024;
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn config(app: u16) -> String {
    ConfigBuilder::new()
        .route(
            route("zip", "/zip")
                .prefix()
                .proxy(&[app])
                .max_message_bytes(MAX)
                .compression(json!({"enabled": true, "thresholdBytes": 64})),
        )
        .route(route("plain", "/plain").prefix().proxy(&[app]))
        .yaml()
}

#[tokio::test]
async fn a_proxy_route_with_compression_negotiates_it_at_the_edge_and_the_app_sees_plain_messages()
{
    let app = EchoServer::start().await;
    let gw = Gateway::start(&config(app.port())).await;
    let (resp, mut c) = Client::connect(
        &gw,
        "/zip/chat",
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(resp.header("sec-websocket-extensions"), Some(ANSWER));
    let offered: Vec<_> = app
        .handshake_headers()
        .iter()
        .filter_map(|h| h.get("sec-websocket-extensions").cloned())
        .collect();
    assert!(offered.is_empty(), "the app was offered {offered:?}");

    // Compressed from the client: the app gets it plain (its WebSocket has no extension and
    // would fail the connection on RSV1), and its echo comes back compressed.
    let text = chat_payload();
    c.echo_compressed(&text, MAX as u64).await;
    assert_eq!(app.received(), [Received::Text(text.clone())]);

    // Uncompressed both ways under the threshold (64 bytes).
    c.send(OpCode::Text, false, b"short").await;
    assert_eq!(
        c.next_data().await,
        (OpCode::Text, false, b"short".to_vec())
    );
}

#[tokio::test]
async fn a_decompression_bomb_through_the_tunnel_closes_1009_without_the_gateway_inflating_it() {
    let app = EchoServer::start().await;
    let gw = Gateway::start(&config(app.port())).await;
    let (_, mut c) = Client::connect(&gw, "/zip/bombed", Some("permessage-deflate")).await;
    // 512 MiB of zeros, about 500 KiB compressed: under the 1 MiB cap on the wire, 512 times
    // over it once inflated.
    let bomb = deflate::compress(&vec![0u8; 512 << 20], 9, 15).unwrap();
    assert!(bomb.len() < MAX, "{}", bomb.len());
    let before = rss_kib(gw.pid());
    c.send(OpCode::Binary, true, &bomb).await;
    let (op, _, payload) = c.next_data().await;
    assert_eq!(op, OpCode::Close);
    assert_eq!(close_code(&payload), 1009);
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    // The wire message (≤ 1 MiB) and at most the cap inflated (1 MiB) plus slack; the bomb
    // itself would be 524,288 KiB.
    assert!(grown < 32 * 1024, "gateway RSS grew by {grown} KiB");
    let closes = app.wait_closes(1, Duration::from_secs(10)).await;
    assert_eq!(closes[0].as_ref().map(|c| c.0), Some(1009));
    assert!(
        app.received()
            .iter()
            .all(|r| matches!(r, Received::Close(_))),
        "the app got nothing of the bomb"
    );
}

#[tokio::test]
async fn a_proxy_route_without_compression_strips_the_offer_and_refuses_rsv1_with_1002() {
    let app = EchoServer::start().await;
    let gw = Gateway::start(&config(app.port())).await;
    let (resp, mut c) = Client::connect(&gw, "/plain/chat", Some("permessage-deflate")).await;
    assert_eq!(resp.header("sec-websocket-extensions"), None);
    eventually(
        "the app saw the handshake",
        Duration::from_secs(5),
        || async { !app.handshake_headers().is_empty() },
    )
    .await;
    assert!(
        app.handshake_headers()
            .iter()
            .all(|h| h.get("sec-websocket-extensions").is_none()),
        "the offer is not forwarded"
    );
    let compressed = deflate::compress(b"Hello", 6, 15).unwrap();
    c.send(OpCode::Text, true, &compressed).await;
    let (op, _, payload) = c.next_data().await;
    assert_eq!(op, OpCode::Close);
    assert_eq!(close_code(&payload), 1002);
}
