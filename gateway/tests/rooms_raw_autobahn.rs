//! RFC 6455 and RFC 7692 conformance of raw relay rooms: Autobahn|Testsuite's fuzzingclient,
//! every case including compression (12.*, 13.*), against a raw room with `echo: true` (every
//! message a member sends comes back to it through the room) and permessage-deflate on (every
//! message compressed: threshold 0), with limits generous enough for its 16 MiB cases and
//! keep-alive pings off. Zero FAILED and zero UNIMPLEMENTED cases, and the gateway is alive and
//! ready afterwards. Also: raw rooms relay text and binary
//! frames unchanged between members, without echo unless the route asks for it.
//!
//! Needs `wstest` from `scripts/setup.sh` (`.venv-autobahn/`), or `SWITCHBOARD_WSTEST`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use support::autobahn::run_fuzzingclient_all;
use support::{ConfigBuilder, route};
use support::{Gateway, MAX_MESSAGE_BYTES, PROMPTLY, http_get, ws_connect};

use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

fn config() -> String {
    ConfigBuilder::new()
        .route(
            route("collab", "/collab")
                .rooms(json!({
                    "protocol": "raw",
                    "pathRoom": "/collab/{room}",
                    "echo": true,
                    "join": ["*"],
                    "publish": ["*"],
                    "maxQueueBytes": 16 * MAX_MESSAGE_BYTES,
                }))
                .max_message_bytes(MAX_MESSAGE_BYTES)
                .messages_per_second(100_000, 100_000)
                .compression(json!({"enabled": true, "thresholdBytes": 0})),
        )
        .route(route("quiet", "/quiet").rooms(json!({
            "protocol": "raw",
            "pathRoom": "/quiet/{room}",
            "join": ["doc-*"],
            "publish": ["doc-*"],
        })))
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzingclient_against_a_compressing_raw_echo_room_has_no_failed_or_unimplemented_cases()
 {
    let mut gateway = Gateway::start(&config()).await;

    let report = run_fuzzingclient_all(&gateway.ws_url("/collab/autobahn")).await;
    report.assert_all_implemented("raw relay room with echo and permessage-deflate");

    assert!(
        gateway.is_running(),
        "the gateway exited during the Autobahn run; log tail:\n{}",
        gateway.log_tail(60)
    );
    let (status, body) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(
        status, 200,
        "/readyz after the Autobahn run: {status} {body}"
    );
    // And the room still relays.
    let mut ws = ws_connect(&gateway.ws_url("/collab/after")).await;
    support::assert_echo(&mut ws, "still here").await;
}

#[tokio::test]
async fn raw_rooms_relay_frames_unchanged_to_the_other_members_only() {
    let gateway = Gateway::start(&config()).await;
    let mut a = ws_connect(&gateway.ws_url("/quiet/doc-1")).await;
    let mut b = ws_connect(&gateway.ws_url("/quiet/doc-1")).await;
    let mut other_room = ws_connect(&gateway.ws_url("/quiet/doc-2")).await;
    // A member joins its room just after its 101, and a raw room keeps no history: a frame sent
    // before the receiver joined is not for it. So each receiver first hears a probe.
    joined(&mut b, &mut a).await;
    joined(&mut a, &mut b).await;

    // A Yjs-style binary update and a text message, relayed as sent.
    let update = vec![0u8, 1, 2, 0xFF, 0x80];
    a.send(Message::binary(update.clone())).await.unwrap();
    a.send(Message::text("hello from a")).await.unwrap();
    assert_eq!(next_relayed(&mut b).await, Message::binary(update));
    assert_eq!(next_relayed(&mut b).await, Message::text("hello from a"));
    // Not back to the sender (no echo on this route): b's reply is a's next message.
    b.send(Message::text("hello from b")).await.unwrap();
    assert_eq!(next_relayed(&mut a).await, Message::text("hello from b"));
    // Nor into another room: doc-2's first message is its own room's.
    let mut other_peer = ws_connect(&gateway.ws_url("/quiet/doc-2")).await;
    joined(&mut other_peer, &mut other_room).await;
    other_peer.send(Message::text("doc-2 only")).await.unwrap();
    assert_eq!(
        next_relayed(&mut other_room).await,
        Message::text("doc-2 only")
    );

    // Rooms outside the patterns, and paths that name no room, are refused before the upgrade.
    for (path, status) in [
        ("/quiet/secret", 403),
        ("/quiet/", 404),
        ("/quiet/a.b", 404),
    ] {
        let (resp, ws) = support::raw_upgrade(gateway.addr(), path, &[]).await;
        assert!(ws.is_none());
        assert_eq!(resp.status, status, "{path}: {}", resp.body_text());
    }
    // SSE and long-polls are refused on raw routes.
    let (status, _) = http_get(gateway.addr(), "/quiet/doc-1?rooms=doc-1").await;
    assert_eq!(status, 400);
}

/// Probes from `from` until one reaches `to`: both are then members of the room (a probe sent
/// before `to` joined is simply not delivered to it).
async fn joined<S>(from: &mut WebSocketStream<S>, to: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for n in 0..40 {
        from.send(Message::text(format!("{PROBE}{n}")))
            .await
            .unwrap();
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), to.next()).await {
            assert!(is_probe(&m), "a probe, got {m:?}");
            return;
        }
    }
    panic!("no probe reached the other member in 20 s");
}

const PROBE: &str = "join-probe-";

fn is_probe(m: &Message) -> bool {
    matches!(m, Message::Text(t) if t.as_str().starts_with(PROBE))
}

/// The next data message, past probes that were still on their way.
async fn next_relayed<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(PROMPTLY, ws.next())
            .await
            .expect("a relayed message in time")
            .expect("the stream is open")
            .expect("a frame");
        if !is_probe(&m) && !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}
