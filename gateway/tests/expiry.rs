//! Token expiry on live proxied connections, through the real binary: at the token's `exp` the
//! gateway closes both sides with 4001 "token expired", unless the route sets
//! `closeOnExpiry: false`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::time::Duration;

use futures_util::StreamExt;

use serde_json::json;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, PROMPTLY, assert_echo, claims, close_normally, expect_close, jwt_hs256,
    sign_hs256, unix_now, ws_request, ws_try_connect,
};

const TTL_SECS: i64 = 2;

fn config(backend: u16) -> String {
    ConfigBuilder::new()
        .route(
            route("expiring", "/expiring")
                .jwt(jwt_hs256())
                .proxy(&[backend]),
        )
        .route(
            route("lasting", "/lasting")
                .jwt(jwt_hs256())
                .set("jwt.closeOnExpiry", json!(false))
                .proxy(&[backend]),
        )
        .yaml()
}

/// Connect to `path` with a token expiring `TTL_SECS` from now; returns the client and `exp`.
async fn connect_short_lived(gateway: &Gateway, path: &str) -> (support::WsClient, u64) {
    let c = claims("alice", TTL_SECS, serde_json::json!({}));
    let exp = c["exp"].as_u64().expect("exp");
    let bearer = format!("Bearer {}", sign_hs256(&c));
    let ws = ws_try_connect(ws_request(
        &gateway.ws_url(path),
        &[("Authorization", &bearer)],
    ))
    .await
    .unwrap_or_else(|e| panic!("connect {path}: {e}"));
    (ws, exp)
}

#[tokio::test]
async fn a_live_connection_is_closed_with_4001_when_its_token_expires() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&config(echo.port())).await;
    let (mut ws, exp) = connect_short_lived(&gateway, "/expiring").await;
    assert_echo(&mut ws, "while the token is valid").await;

    let (code, reason, _) = expect_close(&mut ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    assert!(
        unix_now() + 1 >= exp,
        "closed at {} although the token expires at {exp}",
        unix_now()
    );
    assert_eq!(
        echo.wait_closes(1, PROMPTLY).await[0],
        Some((4001, "token expired".to_owned())),
        "the app is told too"
    );
}

#[tokio::test]
async fn with_close_on_expiry_off_a_connection_outlives_its_token() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&config(echo.port())).await;
    let (mut ws, exp) = connect_short_lived(&gateway, "/lasting").await;
    assert_echo(&mut ws, "while the token is valid").await;

    // Wait (reading, so a close would be seen) until the token is a full second past exp.
    while unix_now() <= exp + 1 {
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            panic!("unexpected {msg:?} before the token expired");
        }
    }
    assert_echo(&mut ws, "after the token expired").await;
    assert!(echo.closes().is_empty(), "{:?}", echo.closes());
    close_normally(&mut ws).await;
}

/// An SSE request to `/expiring/events` (`accept`: with `Accept: text/event-stream`, as
/// `EventSource` sends): the response status, and the connection to read on.
async fn open_stream(gateway: &Gateway, token: &str, accept: bool) -> (u16, tokio::net::TcpStream) {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    if accept {
        headers.push(("Accept", "text/event-stream"));
    }
    support::open_http_stream(gateway.addr(), "/expiring/events", &headers).await
}

/// An app-served SSE stream on a proxy route kept going past the token's `exp`, and its
/// admission slot was given back at the response head, so one IP with `connectionsPerIp: 1`
/// held any number of them. The slot is held until the stream ends, and the stream ends at
/// `exp` (`closeOnExpiry`), as for WebSockets.
#[tokio::test]
async fn an_app_served_sse_stream_holds_its_slot_and_ends_when_its_token_expires() {
    let app = support::sse_app().await;
    let yaml = ConfigBuilder::new()
        .route(
            route("expiring", "/expiring")
                .jwt(jwt_hs256())
                .set("limits", json!({"connectionsPerIp": 1}))
                .proxy(&[app]),
        )
        .yaml();
    let gateway = Gateway::start(&yaml).await;
    let c = claims("alice", TTL_SECS, serde_json::json!({}));
    let exp = c["exp"].as_u64().expect("exp");
    let token = sign_hs256(&c);
    let (status, mut stream) = open_stream(&gateway, &token, true).await;
    assert_eq!(status, 200);
    for accept in [true, false] {
        // Asked for, or only answered with (curl, fetch without the header): a stream.
        let (second, _) = open_stream(&gateway, &token, accept).await;
        assert_eq!(second, 429, "the first stream holds the IP's one slot");
    }
    // The stream ends (its last chunk, then the connection) once the token has expired.
    let ended =
        support::stream_ends_within(&mut stream, PROMPTLY + Duration::from_secs(TTL_SECS as u64))
            .await;
    assert!(ended, "the stream outlived its token");
    assert!(unix_now() >= exp, "ended before exp");
    drop(stream);
    // The slot is free again.
    let fresh = sign_hs256(&claims("alice", 60, serde_json::json!({})));
    support::eventually("the slot to be given back", PROMPTLY, || async {
        open_stream(&gateway, &fresh, false).await.0 == 200
    })
    .await;
}
