//! JWKS key rotation through the real binary, against a local JWKS server whose document and
//! status the test changes: a token whose `kid` appears after a rotation is accepted after an
//! on-demand refresh (the regular refresh is an hour away), a rotated-out key stops working,
//! and a JWKS endpoint that starts failing leaves the last good keys in service.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::json;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, PROMPTLY, RawResponse, assert_echo, claims, close_normally, eventually,
    fixture, http_get, raw_upgrade, sign_rs256,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A JWKS endpoint on 127.0.0.1:0 whose status and body can be changed; counts requests.
struct JwksServer {
    url: String,
    reply: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind JWKS");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let reply = Arc::new(Mutex::new((200, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, h) = (reply.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, h) = (r.clone(), h.clone());
                let service = service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = r.lock().expect("reply lock").clone();
                    async move {
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .expect("response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            reply,
            hits,
            task,
        }
    }

    fn set(&self, status: u16, body: String) {
        *self.reply.lock().expect("reply lock") = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The public half of fixture key `name` (`rsa`, `rsa2`) as a JWK with `kid`.
fn rsa_jwk(name: &str, kid: &str) -> serde_json::Value {
    let pem = std::fs::read(fixture(&format!("keys/{name}.pub.pem"))).expect("public key");
    let key = DecodingKey::from_rsa_pem(&pem).expect("RSA public key");
    let mut jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256)).expect("JWK");
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).expect("JWK JSON")
}

fn jwk_set(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

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
