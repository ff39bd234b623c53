//! permessage-deflate (RFC 7692) on rooms routes, over real sockets with a hand-driven client
//! (tungstenite has no deflate): the negotiation answer, compressed messages both ways through
//! a raw echo room, the threshold, a route without compression, and a decompression bomb that
//! closes 1009 without the gateway holding it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use serde_json::json;
use support::deflate_client::{Client, chat_payload, rss_kib};
use support::{ConfigBuilder, Gateway, route};
use switchboard_gateway::engine::deflate;
use switchboard_gateway::engine::frame::OpCode;

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
    c.echo_compressed(&text, MAX as u64).await;
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
