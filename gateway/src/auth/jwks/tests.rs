use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as URL_SAFE;

use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::jwk::JwkSet;
use serde_json::json;
use switchboard_config::KeySource;
use switchboard_config::keys::KeyKind;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;
use crate::auth::jwt::tests::{
    EC256_PUB, ED25519_PUB, RSA_PUB, RSA2, RSA2_PUB, SECRET, claims, jwt_config, sign, sign_with,
};
use crate::auth::jwt::{TokenError, Verifier};
use crate::auth::keys::to_jwt_alg;

fn jwk(pem: &str, alg: Option<Algorithm>, kid: &str) -> Value {
    let key = match alg {
        Some(Algorithm::ES256) => DecodingKey::from_ec_pem(pem.as_bytes()),
        Some(Algorithm::EdDSA) => DecodingKey::from_ed_pem(pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("fixture public key");
    let mut jwk = Jwk::from_decoding_key(&key, alg.map(to_jwt_alg)).expect("jwk");
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).expect("json")
}

fn rsa_jwk(kid: &str) -> Value {
    jwk(RSA_PUB, Some(Algorithm::RS256), kid)
}

fn rsa2_jwk(kid: &str) -> Value {
    jwk(RSA2_PUB, Some(Algorithm::RS256), kid)
}

fn set(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn sign_rsa2(kid: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(RSA2.as_bytes()).expect("rsa2");
    sign_with(Algorithm::RS256, &key, Some(kid), &claims(60))
}

/// A JWKS server on 127.0.0.1:0 whose status and body can change, counting requests.
struct JwksServer {
    url: String,
    reply: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/jwks.json?tenant=secret",
            listener.local_addr().expect("addr")
        );
        let reply = Arc::new(Mutex::new((200, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, h) = (Arc::clone(&reply), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, h) = (Arc::clone(&r), Arc::clone(&h));
                let service = service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = lock(&r).clone();
                    async move {
                        let response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .expect("response");
                        Ok::<_, Infallible>(response)
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
        *lock(&self.reply) = (status, body);
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

fn jwks_source(url: &str, algorithms: Vec<Algorithm>, min_refresh: Duration) -> KeySource {
    KeySource::Jwks {
        url: url.to_owned(),
        algorithms,
        refresh: Duration::from_secs(3600),
        min_refresh,
    }
}

fn jwks_verifier(registry: &JwksRegistry, url: &str, min_refresh: Duration) -> Verifier {
    let cfg = jwt_config(vec![jwks_source(url, Vec::new(), min_refresh)]);
    Verifier::new(&cfg, registry).expect("valid config")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn jwk_without_alg_is_used_with_its_key_types_usual_algorithm() {
    let rsa = parse_jwk(&jwk(RSA_PUB, None, "r"), false)
        .expect("valid")
        .expect("signing key");
    assert!(rsa.permits(Algorithm::RS256, &[]));
    assert!(!rsa.permits(Algorithm::PS256, &[]));
    assert!(!rsa.permits(Algorithm::HS256, &[]));
    // The source's list replaces the default.
    assert!(rsa.permits(Algorithm::PS256, &[Algorithm::PS256]));
    assert!(!rsa.permits(Algorithm::RS256, &[Algorithm::PS256]));
    assert!(!rsa.permits(Algorithm::ES256, &[Algorithm::ES256]));

    let ec = parse_jwk(&jwk(EC256_PUB, Some(Algorithm::ES256), "e"), false)
        .expect("valid")
        .expect("signing key");
    assert_eq!(ec.kind, KeyKind::EcP256);
    let mut no_alg = jwk(EC256_PUB, Some(Algorithm::ES256), "e");
    no_alg.as_object_mut().expect("object").remove("alg");
    let ec = parse_jwk(&no_alg, false).expect("valid").expect("key");
    assert!(ec.permits(Algorithm::ES256, &[]));

    let mut ed = jwk(ED25519_PUB, Some(Algorithm::EdDSA), "d");
    ed.as_object_mut().expect("object").remove("alg");
    let ed = parse_jwk(&ed, false).expect("valid").expect("key");
    assert!(ed.permits(Algorithm::EdDSA, &[]));
}

#[test]
fn jwk_alg_must_be_in_the_sources_algorithm_list() {
    let ps = parse_jwk(&jwk(RSA_PUB, Some(Algorithm::PS256), "p"), false)
        .expect("valid")
        .expect("key");
    assert!(ps.permits(Algorithm::PS256, &[]));
    assert!(ps.permits(Algorithm::PS256, &[Algorithm::PS256, Algorithm::RS256]));
    assert!(!ps.permits(Algorithm::PS256, &[Algorithm::RS256]));
    // Pinned to its own alg even when the list allows others.
    assert!(!ps.permits(Algorithm::RS256, &[Algorithm::PS256, Algorithm::RS256]));
}

#[test]
fn keys_not_meant_for_signatures_are_skipped() {
    let mut enc = rsa_jwk("enc");
    enc["use"] = json!("enc");
    let mut oaep = rsa_jwk("oaep");
    oaep["alg"] = json!("RSA-OAEP");
    let mut wrap = rsa_jwk("wrap");
    wrap["key_ops"] = json!(["wrapKey"]);
    let mut sig = rsa_jwk("sig");
    sig["use"] = json!("sig");
    let oct = json!({ "kty": "oct", "kid": "hmac", "alg": "HS256",
            "k": URL_SAFE.encode(SECRET) });
    let curve = json!({ "kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA" });
    let body = set(&[enc, oaep, wrap, sig, oct, curve, json!("junk")]);
    let keys = parse_jwk_set(body.as_bytes()).expect("document");
    let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, ["sig"]);
}

#[test]
fn jwk_whose_curve_does_not_match_its_coordinates_is_refused() {
    let mut p256 = jwk(EC256_PUB, Some(Algorithm::ES256), "e");
    p256["crv"] = json!("P-384");
    assert!(parse_jwk(&p256, false).is_err());
    let mut wrong_alg = jwk(EC256_PUB, Some(Algorithm::ES256), "e");
    wrong_alg["alg"] = json!("ES384");
    assert!(parse_jwk(&wrong_alg, false).is_err());
    assert!(parse_jwk_set(b"{\"keys\": 5}").is_err());
    assert!(parse_jwk_set(b"not json").is_err());
}

#[tokio::test]
async fn caches_are_shared_per_url_and_dropped_with_their_last_verifier() {
    let registry = JwksRegistry::new();
    let a = registry.cache(
        "http://127.0.0.1:9/a",
        &[],
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    let b = registry.cache(
        "http://127.0.0.1:9/a",
        &[],
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    let c = registry.cache(
        "http://127.0.0.1:9/c",
        &[],
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(registry.live().len(), 2);
    drop((a, b));
    assert_eq!(registry.live().len(), 1);
    assert_eq!(
        redact_url("https://u:p@idp.example:8443/keys?token=x"),
        "https://idp.example:8443/keys"
    );
}

#[tokio::test]
async fn first_token_loads_the_jwks_and_a_rotated_key_verifies_after_an_on_demand_refresh() {
    let server = JwksServer::start(set(&[rsa_jwk("k1")])).await;
    let registry = JwksRegistry::new();
    let v = jwks_verifier(&registry, &server.url, Duration::from_millis(200));
    assert!(!registry.all_loaded());

    // Nothing fetched yet: the first token triggers the initial fetch and waits for it.
    let token = sign(Algorithm::RS256, Some("k1"), &claims(60));
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(server.hits(), 1);
    assert!(registry.all_loaded());
    // Known kid: no fetch.
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(server.hits(), 1);

    // The identity provider rotates: k2 appears.
    server.set(200, set(&[rsa_jwk("k1"), rsa2_jwk("k2")]));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let rotated = sign_rsa2("k2");
    let claims = v.verify(&rotated).await.expect("k2 verifies after refresh");
    assert_eq!(claims.sub.as_deref(), Some("user-1"));
    assert_eq!(server.hits(), 2);
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn a_token_cached_as_verified_is_refused_once_its_key_is_rotated_out() {
    let server = JwksServer::start(set(&[rsa_jwk("k1")])).await;
    let registry = JwksRegistry::new();
    let v = jwks_verifier(&registry, &server.url, Duration::from_millis(200));
    let token = sign(Algorithm::RS256, Some("k1"), &claims(60));
    assert!(v.verify(&token).await.is_ok());
    assert!(v.verify(&token).await.is_ok(), "answered from the cache");
    assert_eq!(v.cached_tokens(), 1);

    // k1 leaves the key set; a token with the new kid makes the gateway refresh.
    server.set(200, set(&[rsa2_jwk("k2")]));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(v.verify(&sign_rsa2("k2")).await.is_ok());
    assert_eq!(server.hits(), 2);
    assert_eq!(
        v.verify(&token).await.err(),
        Some(TokenError::UnknownKey),
        "a verification cached before the rotation no longer counts"
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch_per_min_refresh() {
    let server = JwksServer::start(set(&[rsa_jwk("k1")])).await;
    let registry = JwksRegistry::new();
    // A long window: after the initial fetch no unknown kid may cause another.
    let v = jwks_verifier(&registry, &server.url, Duration::from_secs(3600));
    assert!(
        v.verify(&sign(Algorithm::RS256, Some("k1"), &claims(60)))
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 1);
    let flood: Vec<_> = (0..50)
        .map(|i| {
            let v = v.clone();
            let token = sign(Algorithm::RS256, Some(&format!("random-{i}")), &claims(60));
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for handle in flood {
        assert_eq!(
            handle.await.expect("task").err(),
            Some(TokenError::UnknownKey)
        );
    }
    assert_eq!(server.hits(), 1);

    // A short window: concurrent unknown kids share one fetch once the window has passed.
    let server = JwksServer::start(set(&[rsa_jwk("k1")])).await;
    let v = jwks_verifier(&registry, &server.url, Duration::from_millis(200));
    assert!(
        v.verify(&sign(Algorithm::RS256, Some("k1"), &claims(60)))
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let tokens: Vec<_> = (0..20)
        .map(|i| sign(Algorithm::RS256, Some(&format!("r-{i}")), &claims(60)))
        .collect();
    let results = futures_util::future::join_all(tokens.iter().map(|t| v.verify(t))).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().err() == Some(&TokenError::UnknownKey))
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn the_last_good_key_set_survives_errors_and_bad_documents() {
    let server = JwksServer::start(set(&[rsa_jwk("k1")])).await;
    let registry = JwksRegistry::new();
    let v = jwks_verifier(&registry, &server.url, Duration::from_millis(200));
    let good = sign(Algorithm::RS256, Some("k1"), &claims(60));
    assert!(v.verify(&good).await.is_ok());

    let oversized = format!(
        "{{\"keys\": [], \"pad\": \"{}\"}}",
        "x".repeat(MAX_JWKS_BYTES)
    );
    let bad_replies = [
        (500, "oops".to_owned()),
        (200, "not json".to_owned()),
        (200, set(&[])),
        (200, "{\"keys\": \"none\"}".to_owned()),
        (200, set(&[json!({ "kty": "oct", "k": "c2VjcmV0" })])),
        (200, oversized),
    ];
    for (round, (status, body)) in bad_replies.into_iter().enumerate() {
        server.set(status, body);
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The unknown kid forces a fetch; it fails and the old key set stays.
        let unknown = sign(Algorithm::RS256, Some("nope"), &claims(60));
        assert_eq!(v.verify(&unknown).await.err(), Some(TokenError::UnknownKey));
        assert_eq!(server.hits(), round + 2, "round {round}");
        assert!(v.verify(&good).await.is_ok(), "round {round}");
        assert!(registry.all_loaded());
    }
}

/// A reload that shortens a URL's `refresh` takes effect at once: the next regular fetch was
/// scheduled with the old period (an hour), so the new one waited for it, or for a restart.
#[tokio::test]
async fn a_shorter_refresh_from_a_reload_reschedules_the_next_fetch() {
    let server = JwksServer::start(set(&[rsa_jwk("k1")])).await;
    let registry = JwksRegistry::new();
    let (stop, stopped) = watch::channel(false);
    let looping = registry.clone();
    let task = tokio::spawn(async move { looping.run(stopped).await });
    let _hourly = jwks_verifier(&registry, &server.url, Duration::from_millis(50));
    eventually("the first fetch", || server.hits() >= 1).await;
    let cache = registry.cache(
        &server.url,
        &[],
        Duration::from_millis(300),
        Duration::from_millis(50),
    );
    eventually("a fetch on the new, shorter period", || server.hits() >= 3).await;
    drop(cache);
    stop.send(true).expect("loop listening");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("loop ended")
        .expect("no panic");
}

#[tokio::test]
async fn all_loaded_waits_for_every_cache_and_the_loop_ends_on_shutdown() {
    let up = JwksServer::start(set(&[rsa_jwk("k1")])).await;
    let down = JwksServer::start("nope".into()).await;
    down.set(503, "unavailable".into());
    let registry = JwksRegistry::new();
    assert!(registry.all_loaded(), "no caches: nothing to wait for");

    let _up = jwks_verifier(&registry, &up.url, Duration::from_millis(50));
    let _down = jwks_verifier(&registry, &down.url, Duration::from_millis(50));
    assert!(!registry.all_loaded());

    let (stop, stopped) = watch::channel(false);
    let looping = registry.clone();
    let task = tokio::spawn(async move { looping.run(stopped).await });

    // The loop fetches new caches at once and retries failures after minRefresh.
    eventually("the first fetches", || up.hits() >= 1 && down.hits() >= 2).await;
    assert!(!registry.all_loaded(), "one source has never loaded");

    down.set(200, set(&[rsa_jwk("k1")]));
    eventually("the failing source to load", || registry.all_loaded()).await;

    stop.send(true).expect("loop listening");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("loop ended")
        .expect("no panic");
}

#[tokio::test]
async fn jwks_and_inline_keys_work_side_by_side() {
    let server = JwksServer::start(set(&[rsa_jwk("idp")])).await;
    let registry = JwksRegistry::new();
    let cfg = jwt_config(vec![
        crate::auth::jwt::tests::inline(Algorithm::HS256, Some("local")),
        jwks_source(
            &server.url,
            vec![Algorithm::RS256],
            Duration::from_millis(200),
        ),
    ]);
    let v = Verifier::new(&cfg, &registry).expect("valid");
    assert!(
        v.verify(&sign(Algorithm::HS256, Some("local"), &claims(60)))
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 0, "a known static kid needs no fetch");
    assert!(
        v.verify(&sign(Algorithm::RS256, Some("idp"), &claims(60)))
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 1);
    // An HS256 token naming the JWKS key's kid is refused: that key is RS256.
    let forged = sign_with(
        Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(RSA_PUB.as_bytes()),
        Some("idp"),
        &claims(60),
    );
    assert_eq!(
        v.verify(&forged).await.err(),
        Some(TokenError::AlgorithmNotAllowed)
    );
}

#[test]
fn a_document_with_too_many_keys_keeps_the_first_ones() {
    let keys: Vec<_> = (0..MAX_JWKS_KEYS + 10)
        .map(|i| rsa_jwk(&format!("k{i}")))
        .collect();
    let parsed = parse_jwk_set(set(&keys).as_bytes()).expect("parses");
    assert_eq!(parsed.len(), MAX_JWKS_KEYS);
    assert_eq!(parsed[0].kid.as_deref(), Some("k0"));
}

#[test]
fn verification_and_the_refresh_loop_can_run_on_any_worker_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let registry = JwksRegistry::new();
    let cfg = jwt_config(vec![jwks_source(
        "http://127.0.0.1:9/jwks",
        Vec::new(),
        Duration::from_secs(1),
    )]);
    let v = Verifier::new(&cfg, &registry).expect("valid");
    assert_send(&v.verify("token"));
    assert_send(&registry.run(watch::channel(false).1));
    fn assert_sync<T: Send + Sync>() {}
    assert_sync::<Verifier>();
    assert_sync::<JwksRegistry>();
}

#[test]
fn jwk_set_type_round_trips_through_the_parser() {
    // jsonwebtoken's own JwkSet serialisation (what test fixtures and many IdPs emit) parses.
    let parsed: JwkSet = serde_json::from_str(&set(&[rsa_jwk("a"), rsa2_jwk("b")])).expect("set");
    let body = serde_json::to_vec(&parsed).expect("json");
    assert_eq!(parse_jwk_set(&body).expect("parses").len(), 2);
}
