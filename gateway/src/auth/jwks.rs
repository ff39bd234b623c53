//! JWKS documents fetched over HTTP(S), cached per URL and shared by every route, and every config
//! generation, that names the URL.
//!
//! The [`JwksRegistry`] owns one HTTP client (hyper-util legacy client over hyper-rustls with the
//! ring provider and the webpki roots; `http://` is allowed for local development) and a
//! [`JwksCache`] per URL. [`JwksRegistry::run`] is the background loop that fetches each cache
//! when its regular refresh is due; a [`Verifier`](super::jwt::Verifier) that meets an unknown
//! `kid` asks for an extra fetch, at most one per `minRefresh` per URL.
//!
//! A fetch that fails (network error, non-2xx, a body over [`MAX_JWKS_BYTES`], more than
//! [`FETCH_TIMEOUT`], bad JSON, or no usable signing key) keeps the last good key set and logs a
//! warning with the URL (without its query string or user info). Keys with `use` other than `sig`,
//! `key_ops` without `verify`, an encryption `alg`, or symmetric (`oct`) material are ignored:
//! a key set anyone can download must never hold an HMAC secret.
//!
//! Caches live as long as a verifier holds them: the registry keeps weak references, so a URL that
//! no route names any more stops being fetched once the old route table is dropped, while a URL
//! kept across a reload keeps its keys and its schedule.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use rand::Rng as _;
use serde_json::Value;
use switchboard_config::Algorithm;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::http_client::redact_url;
use switchboard_config::keys::VerifyKey;
pub(crate) use switchboard_config::keys::parse_jwk;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most signing keys kept from one document. A token without `kid` is tried against every key of
/// its algorithm, so this also bounds the signature checks one token can cost.
pub const MAX_JWKS_KEYS: usize = 64;
/// Longest a fetch may take, connect to last body byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Regular refreshes are pulled forward by up to this fraction of the period, so gateway pods
/// started together do not hit the identity provider in lockstep.
const REFRESH_JITTER: f64 = 0.1;
/// The background loop re-checks at least this often even when nothing is due.
const IDLE_TICK: Duration = Duration::from_secs(60);

type HttpClient = crate::http_client::HttpsClient<Empty<Bytes>>;

/// All JWKS caches of the process, keyed by URL. Clone it freely; clones share the caches.
#[derive(Clone)]
pub struct JwksRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    client: HttpClient,
    caches: Mutex<HashMap<String, Weak<JwksCache>>>,
    /// Wakes [`JwksRegistry::run`]: a cache was added or a fetch finished.
    wake: Arc<Notify>,
}

impl fmt::Debug for JwksRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<_> = self.live().iter().map(|c| c.log_url.clone()).collect();
        f.debug_struct("JwksRegistry")
            .field("caches", &urls)
            .finish()
    }
}

impl Default for JwksRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl JwksRegistry {
    /// One HTTP client for every JWKS fetch: HTTP/1.1, `https://` via rustls (ring provider,
    /// webpki roots) and plain `http://`.
    pub fn new() -> Self {
        let client = crate::http_client::https_client(Some(FETCH_TIMEOUT));
        Self {
            inner: Arc::new(RegistryInner {
                client,
                caches: Mutex::new(HashMap::new()),
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    /// The cache for `url`, created on first use. Later registrations of the same URL share it and
    /// update its refresh periods (the newest config wins). `algorithms` is the source's list,
    /// used to judge whether a fetched document has any usable key; each verifier still applies
    /// its own list to every key.
    pub fn cache(
        &self,
        url: &str,
        algorithms: &[Algorithm],
        refresh: Duration,
        min_refresh: Duration,
    ) -> Arc<JwksCache> {
        let mut caches = lock(&self.inner.caches);
        if let Some(cache) = caches.get(url).and_then(Weak::upgrade) {
            cache.reconfigure(algorithms, refresh, min_refresh);
            return cache;
        }
        caches.retain(|_, c| c.strong_count() > 0);
        let cache = Arc::new(JwksCache::new(
            url,
            self.inner.client.clone(),
            Arc::clone(&self.inner.wake),
            algorithms,
            refresh,
            min_refresh,
        ));
        caches.insert(url.to_owned(), Arc::downgrade(&cache));
        self.inner.wake.notify_one();
        cache
    }

    /// Background loop: fetches each cache when its regular refresh is due (new caches at once);
    /// ends when `shutdown` becomes true or its sender is dropped. Run exactly one per registry.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let now = Instant::now();
            let mut next = now + IDLE_TICK;
            for cache in self.live() {
                if let Some(due) = cache.start_if_due(now) {
                    next = next.min(due);
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.inner.wake.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::debug!("JWKS refresh loop stopped");
    }

    /// True once every registered cache has had at least one successful fetch (readiness).
    pub fn all_loaded(&self) -> bool {
        self.live().iter().all(|c| c.is_loaded())
    }

    fn live(&self) -> Vec<Arc<JwksCache>> {
        lock(&self.inner.caches)
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

/// The keys of one JWKS URL: the last good set, and when to fetch again.
pub struct JwksCache {
    url: String,
    /// `url` without user info or query, for logs.
    log_url: String,
    client: HttpClient,
    wake: Arc<Notify>,
    keys: ArcSwap<Vec<VerifyKey>>,
    /// Bumped after every key set swap (verified-token caches key on it).
    generation: AtomicU64,
    loaded: AtomicBool,
    state: Mutex<FetchState>,
    /// Counts finished fetches; waiters for an on-demand fetch watch it.
    done: watch::Sender<u64>,
}

struct FetchState {
    refresh: Duration,
    min_refresh: Duration,
    /// Every distinct `algorithms` list registered for this URL.
    algorithm_lists: Vec<Vec<Algorithm>>,
    in_flight: bool,
    last_attempt: Option<Instant>,
    next_due: Instant,
    finished: u64,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.log_url)
            .field("keys", &self.keys.load().len())
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl JwksCache {
    fn new(
        url: &str,
        client: HttpClient,
        wake: Arc<Notify>,
        algorithms: &[Algorithm],
        refresh: Duration,
        min_refresh: Duration,
    ) -> Self {
        Self {
            url: url.to_owned(),
            log_url: redact_url(url),
            client,
            wake,
            keys: ArcSwap::from_pointee(Vec::new()),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            state: Mutex::new(FetchState {
                refresh,
                min_refresh,
                algorithm_lists: vec![algorithms.to_vec()],
                in_flight: false,
                last_attempt: None,
                next_due: Instant::now(),
                finished: 0,
            }),
            done: watch::channel(0).0,
        }
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a fetch has succeeded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The last good key set (empty before the first successful fetch).
    /// Changes whenever the key set is replaced (read it before [`Self::keys`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.load_full()
    }

    fn reconfigure(&self, algorithms: &[Algorithm], refresh: Duration, min_refresh: Duration) {
        let mut st = lock(&self.state);
        st.refresh = refresh;
        st.min_refresh = min_refresh;
        if !st.algorithm_lists.iter().any(|l| l == algorithms) {
            st.algorithm_lists.push(algorithms.to_vec());
        }
    }

    /// For a token whose `kid` is unknown: joins the fetch in progress, or starts one unless the
    /// last one began less than `min_refresh` ago; resolves when that fetch has finished (at once
    /// when rate-limited). The fetch runs in its own task, so dropping this future does not
    /// cancel it.
    pub(crate) async fn refresh_for_unknown_key(self: &Arc<Self>) {
        let wait = {
            let mut st = lock(&self.state);
            // Subscribed under the lock that `finish` bumps `done` under: no wake-up is missed.
            let rx = self.done.subscribe();
            let now = Instant::now();
            if st.in_flight {
                Some(rx)
            } else if st
                .last_attempt
                .is_some_and(|at| now.duration_since(at) < st.min_refresh)
            {
                None
            } else {
                self.start(&mut st, now);
                Some(rx)
            }
        };
        if let Some(mut rx) = wait {
            // An error means the sender is gone, i.e. the cache itself: nothing left to wait for.
            let _ = rx.changed().await;
        }
    }

    /// Starts the regular fetch when due. Returns when the next one is due, `None` while a fetch
    /// is running (its end wakes the loop).
    fn start_if_due(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut st = lock(&self.state);
        if st.in_flight {
            return None;
        }
        if st.next_due <= now {
            self.start(&mut st, now);
            return None;
        }
        Some(st.next_due)
    }

    fn start(self: &Arc<Self>, st: &mut FetchState, now: Instant) {
        st.in_flight = true;
        st.last_attempt = Some(now);
        let cache = Arc::clone(self);
        let span = tracing::info_span!("jwks_fetch", url = %self.log_url);
        tokio::spawn(async move { cache.fetch_and_store().await }.instrument(span));
    }

    async fn fetch_and_store(self: Arc<Self>) {
        let mut guard = FetchGuard {
            cache: &self,
            ok: false,
        };
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout),
        };
        match result {
            Ok(keys) => {
                crate::metrics::metrics()
                    .jwks_fetches
                    .with_label_values(&["ok"])
                    .inc();
                tracing::debug!(keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
                // After the store: a reader that saw the old generation may hold the new keys,
                // never the other way round, so nothing verified with old keys outlives them.
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.loaded.store(true, Ordering::Release);
                guard.ok = true;
            }
            Err(error) => {
                crate::metrics::metrics()
                    .jwks_fetches
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(
                    url = %self.log_url,
                    error = %error,
                    "JWKS fetch failed; keeping the last good key set"
                );
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, FetchError> {
        let uri: http::Uri = self.url.parse().map_err(|_| FetchError::Url)?;
        let request = http::Request::get(uri)
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .header(
                USER_AGENT,
                concat!("switchboard-gateway/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|_| FetchError::Url)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FetchError::Http(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    FetchError::TooLarge
                } else {
                    FetchError::Http(error_chain(e.as_ref()))
                }
            })?
            .to_bytes();
        let keys = parse_jwk_set(&body).map_err(FetchError::Document)?;
        let lists = lock(&self.state).algorithm_lists.clone();
        let usable = keys
            .iter()
            .any(|k| lists.iter().any(|allowed| k.usable_with_any(allowed)));
        if !usable {
            return Err(FetchError::NoUsableKey);
        }
        Ok(keys)
    }

    /// Ends a fetch: schedules the next regular one and wakes waiters and the loop.
    fn finish(&self, ok: bool) {
        let mut st = lock(&self.state);
        st.in_flight = false;
        let delay = if ok {
            jittered(st.refresh)
        } else {
            // Retry sooner than a full period: until it works, old (or no) keys are served.
            st.min_refresh.min(st.refresh)
        };
        st.next_due = Instant::now() + delay;
        st.finished += 1;
        self.done.send_replace(st.finished);
        drop(st);
        self.wake.notify_one();
    }
}

/// Marks the fetch finished even if the task is cancelled or panics, so the cache never stays
/// "in flight" forever.
struct FetchGuard<'a> {
    cache: &'a JwksCache,
    ok: bool,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        self.cache.finish(self.ok);
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("invalid URL")]
    Url,
    #[error("request failed: {0}")]
    Http(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("document larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("timed out after {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("invalid document: {0}")]
    Document(String),
    #[error("the document has no usable signing key")]
    NoUsableKey,
}

/// The signing keys of a fetched JWKS document. Keys that are not for signatures or not
/// understood are skipped (logged at debug); a document that is not `{"keys": [...]}` is an error.
pub(crate) fn parse_jwk_set(body: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no `keys` array")?;
    let mut keys = Vec::with_capacity(list.len());
    for (index, jwk) in list.iter().enumerate() {
        if keys.len() == MAX_JWKS_KEYS {
            tracing::warn!(
                kept = MAX_JWKS_KEYS,
                total = list.len(),
                "JWKS has too many keys; ignoring the rest"
            );
            break;
        }
        match parse_jwk(jwk, false) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(error) => tracing::debug!(index, %error, "skipping JWKS key"),
        }
    }
    Ok(keys)
}

fn jittered(period: Duration) -> Duration {
    let cut = rand::rng().random_range(0.0..=REFRESH_JITTER);
    period.mul_f64(1.0 - cut)
}

fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Locks, ignoring poison: every critical section leaves the state consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
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
        EC256_PUB, ED25519_PUB, RSA_PUB, RSA2, RSA2_PUB, SECRET, claims, jwt_config, sign,
        sign_with,
    };
    use crate::auth::jwt::{TokenError, Verifier, to_jwt_alg};

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
        let parsed: JwkSet =
            serde_json::from_str(&set(&[rsa_jwk("a"), rsa2_jwk("b")])).expect("set");
        let body = serde_json::to_vec(&parsed).expect("json");
        assert_eq!(parse_jwk_set(&body).expect("parses").len(), 2);
    }
}
