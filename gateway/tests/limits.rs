//! Per-message limits of the tunnel through the real binary: a message over `maxMessageBytes`
//! in either direction closes both sides with 1009, a client sending faster than
//! `messagesPerSecond`/`messageBurst` is closed with 1008. The app's side is checked through the
//! Close frames the echo backend received.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use futures_util::SinkExt;
use support::{ConfigBuilder, route};
use support::{
    EchoOptions, EchoServer, Gateway, PROMPTLY, assert_echo, eventually, expect_close, metric_sum,
    metrics_text, ws_connect,
};
use tokio_tungstenite::tungstenite::Message;

const MAX_BYTES: usize = 1024;
const BURST: usize = 3;

fn config(backend: u16) -> String {
    ConfigBuilder::new()
        .route(
            route("big", "/big")
                .proxy(&[backend])
                .max_message_bytes(MAX_BYTES)
                .messages_per_second(1000, 1000),
        )
        .route(
            route("rate", "/rate")
                .proxy(&[backend])
                .messages_per_second(1, BURST),
        )
        .yaml()
}

async fn start() -> (EchoServer, Gateway) {
    let echo = EchoServer::start_with(EchoOptions {
        commands: true,
        ..EchoOptions::default()
    })
    .await;
    let gateway = Gateway::start(&config(echo.port())).await;
    (echo, gateway)
}

/// The Close the app received, once it has arrived.
async fn app_close(echo: &EchoServer) -> (u16, String) {
    echo.wait_closes(1, PROMPTLY).await[0]
        .clone()
        .expect("the app's Close frame carries a code")
}

/// `switchboard_closes_total{code, cause}` once it is counted (the relay ends just after the
/// close handshake).
async fn assert_close_counted(gateway: &Gateway, code: &str, cause: &str) {
    let what = format!("switchboard_closes_total{{code={code},cause={cause}}}");
    eventually(&what, PROMPTLY, || async {
        let text = metrics_text(gateway).await;
        metric_sum(
            &text,
            "switchboard_closes_total",
            &[("code", code), ("cause", cause)],
        ) == 1.0
    })
    .await;
}

#[tokio::test]
async fn a_client_message_over_max_message_bytes_closes_both_sides_with_1009() {
    let (echo, gateway) = start().await;
    let mut ws = ws_connect(&gateway.ws_url("/big")).await;
    assert_echo(&mut ws, "small is fine").await;

    ws.send(Message::binary(vec![7u8; MAX_BYTES + 1]))
        .await
        .expect("send the oversized message");
    let (code, reason, before) = expect_close(&mut ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));
    assert!(
        before.iter().all(|m| m.len() <= MAX_BYTES),
        "nothing oversized came back: {before:?}"
    );
    assert_eq!(app_close(&echo).await, (1009, "message too big".into()));
    assert!(
        echo.requests().len() == 1,
        "the oversized message never became a new request"
    );
    assert_close_counted(&gateway, "1009", "message_too_big").await;
}

#[tokio::test]
async fn an_app_message_over_max_message_bytes_closes_both_sides_with_1009() {
    let (echo, gateway) = start().await;
    let mut ws = ws_connect(&gateway.ws_url("/big")).await;
    assert_echo(&mut ws, "before").await;

    // The app answers this with one binary message of MAX_BYTES * 4 bytes.
    ws.send(Message::text(format!("send-binary:{}", MAX_BYTES * 4)))
        .await
        .expect("send the command");
    let (code, reason, before) = expect_close(&mut ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));
    assert!(
        before.iter().all(|m| !m.is_binary()),
        "the oversized app message was not relayed: {before:?}"
    );
    assert_eq!(app_close(&echo).await, (1009, "message too big".into()));
    assert_close_counted(&gateway, "1009", "message_too_big").await;
}

#[tokio::test]
async fn client_messages_faster_than_the_rate_close_both_sides_with_1008() {
    let (echo, gateway) = start().await;
    let mut ws = ws_connect(&gateway.ws_url("/rate")).await;

    // The burst goes through...
    for i in 0..BURST {
        assert_echo(&mut ws, &format!("burst {i}")).await;
    }
    // ...and going on at full speed with an empty bucket is refused. (Echoes of the flood that
    // were on their way when the close started are dropped: nothing follows a Close.)
    for i in 0..10 {
        ws.send(Message::text(format!("flood {i}")))
            .await
            .expect("send");
    }
    let (code, reason, before) = expect_close(&mut ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (1008, "message rate exceeded"));
    assert!(
        before.iter().filter(|m| m.is_text()).count() < 10,
        "the flood was not relayed in full: {before:?}"
    );
    assert_eq!(
        app_close(&echo).await,
        (1008, "message rate exceeded".into())
    );
    assert_close_counted(&gateway, "1008", "rate_limited").await;
}
