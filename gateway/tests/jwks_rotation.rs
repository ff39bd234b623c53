//! JWKS key rotation through the real binary, against a local JWKS server whose document and
//! status the test changes: a token whose `kid` appears after a rotation is accepted after an
//! on-demand refresh (the regular refresh is an hour away), a rotated-out key stops working,
//! and a JWKS endpoint that starts failing leaves the last good keys in service.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use serde_json::json;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, JwksServer, PROMPTLY, RawResponse, assert_echo, claims, close_normally,
    eventually, http_get, jwk_set, raw_upgrade, rsa_jwk, sign_rs256,
};

fn config(backend: u16, jwks_url: &str) -> String {
    ConfigBuilder::new()
        .route(
            route("jwks", "/")
                .jwt(json!({"keys": [{"jwks": {"url": jwks_url, "refresh": "1h", "minRefresh": "200ms"}}]}))
                .proxy(&[backend]),
        )
        .yaml()
}

/// A token for `sub` signed with fixture key `key`, header `kid`.
fn token(key: &str, kid: &str) -> String {
    sign_rs256(key, Some(kid), &claims("alice", 600, serde_json::json!({})))
}

async fn connect(gateway: &Gateway, token: &str) -> RawResponse {
    let bearer = format!("Bearer {token}");
    let (resp, ws) = raw_upgrade(gateway.addr(), "/", &[("Authorization", &bearer)]).await;
    if let Some(mut ws) = ws {
        assert_echo(&mut ws, "signed in").await;
        close_normally(&mut ws).await;
    }
    resp
}

fn assert_unknown_key(resp: &RawResponse) {
    assert_eq!(resp.status, 401, "{resp:?}");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error_description=\"unknown signing key\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn a_token_with_a_rotated_in_kid_is_accepted_after_an_on_demand_refresh() {
    let echo = EchoServer::start().await;
    let jwks = JwksServer::start(jwk_set(&[rsa_jwk("rsa", "key-a")])).await;
    let gateway = Gateway::start(&config(echo.port(), &jwks.url)).await;
    let (token_a, token_b) = (token("rsa", "key-a"), token("rsa2", "key-b"));

    assert_eq!(connect(&gateway, &token_a).await.status, 101);
    assert_unknown_key(&connect(&gateway, &token_b).await);

    // Rotate: the identity provider now publishes only key B.
    let fetched = jwks.hits();
    jwks.set(200, jwk_set(&[rsa_jwk("rsa2", "key-b")]));
    // The refresh B triggers is rate-limited by minRefresh (200ms): retry until it is let
    // through; the regular refresh is an hour away, so only an on-demand fetch can admit B.
    eventually(
        "a token with kid key-b to be accepted",
        PROMPTLY,
        || async { connect(&gateway, &token_b).await.status == 101 },
    )
    .await;
    assert!(jwks.hits() > fetched, "the rotation was fetched on demand");

    // Key A was rotated out: its tokens are refused now.
    eventually(
        "kid key-a to be refused after the rotation",
        PROMPTLY,
        || async { connect(&gateway, &token_a).await.status == 401 },
    )
    .await;
    assert_unknown_key(&connect(&gateway, &token_a).await);
    assert_eq!(connect(&gateway, &token_b).await.status, 101);
}

#[tokio::test]
async fn a_failing_jwks_endpoint_keeps_the_last_good_keys_in_service() {
    let echo = EchoServer::start().await;
    let jwks = JwksServer::start(jwk_set(&[rsa_jwk("rsa", "key-a")])).await;
    let gateway = Gateway::start(&config(echo.port(), &jwks.url)).await;
    let token_a = token("rsa", "key-a");
    assert_eq!(connect(&gateway, &token_a).await.status, 101);

    jwks.set(500, "{\"error\": \"identity provider down\"}".to_owned());
    let before = jwks.hits();
    // An unknown kid makes the gateway refetch; the fetch gets the 500.
    let unknown = token("rsa2", "key-unknown");
    eventually("a refetch that meets the 500", PROMPTLY, || async {
        assert_unknown_key(&connect(&gateway, &unknown).await);
        jwks.hits() > before
    })
    .await;
    eventually("the failed fetch to be logged", PROMPTLY, || async {
        gateway
            .log()
            .contains("JWKS fetch failed; keeping the last good key set")
    })
    .await;

    assert_eq!(
        connect(&gateway, &token_a).await.status,
        101,
        "the last good key still verifies"
    );
    let (status, body) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(status, 200, "still ready with the last good keys: {body}");
}
