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
