//! Tokens signed with the fixture keys, and [`JwksServer`]: a JWKS endpoint whose answer a test
//! changes (rotation, outages). The gateway's unit tests (`src/auth/jwks.rs`) keep their own
//! small copy: a library's unit tests cannot reach the integration tests' `support`.

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
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;

/// Sign `claims` with RS256 using `fixtures/keys/<key>.pem` (`rsa` or `rsa2`), with an optional
/// `kid` header.
pub fn sign_rs256(key: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(fixture(&format!("keys/{key}.pem")))
        .unwrap_or_else(|e| panic!("read fixture key {key}: {e}"));
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
        .unwrap_or_else(|e| panic!("fixture key {key} is an RSA private key: {e}"));
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding).expect("sign a test token")
}

/// Claims `{sub, exp: now + ttl_secs}` plus `extra` (an object) merged in.
pub fn claims(sub: &str, ttl_secs: i64, extra: serde_json::Value) -> serde_json::Value {
    let exp = unix_now() as i64 + ttl_secs;
    let mut c = serde_json::json!({ "sub": sub, "exp": exp, "iat": unix_now() });
    if let (Some(obj), serde_json::Value::Object(more)) = (c.as_object_mut(), extra) {
        obj.extend(more);
    }
    c
}

/// A token for `sub`, valid for 10 minutes, signed with the `rsa` fixture key (no `kid`).
pub fn token_for(sub: &str) -> String {
    sign_rs256("rsa", None, &claims(sub, 600, serde_json::json!({})))
}

/// The HS256 secret of [`jwt_hs256`] routes (HMAC tokens are cheap to sign in debug builds,
/// for tests that need many distinct tokens).
pub const HS256_SECRET: &str = "switchboard-test-hmac-secret-0123456789";

/// Sign `claims` with HS256 and [`HS256_SECRET`].
pub fn sign_hs256(claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(HS256_SECRET.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &key,
    )
    .expect("sign a test token")
}

/// A JWKS endpoint on 127.0.0.1:0 whose status and body can be changed; counts requests.
pub struct JwksServer {
    /// `http://127.0.0.1:<port>/jwks.json`.
    pub url: String,
    reply: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl JwksServer {
    /// Serve `body` with status 200 until [`Self::set`] changes it.
    pub async fn start(body: String) -> Self {
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

    /// Answer every following request with this status and body.
    pub fn set(&self, status: u16, body: String) {
        *self.reply.lock().expect("reply lock") = (status, body);
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The public half of fixture key `name` (`rsa`, `rsa2`) as a JWK with `kid`.
pub fn rsa_jwk(name: &str, kid: &str) -> serde_json::Value {
    let pem = std::fs::read(fixture(&format!("keys/{name}.pub.pem"))).expect("public key");
    let key = DecodingKey::from_rsa_pem(&pem).expect("RSA public key");
    let mut jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256)).expect("JWK");
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).expect("JWK JSON")
}

/// A JWK Set document with these keys.
pub fn jwk_set(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}
