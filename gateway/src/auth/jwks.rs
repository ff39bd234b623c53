//! JWKS documents fetched over HTTP(S), cached per URL and shared by every route, and every config
//! generation, that names the URL.
//!
//! The [`JwksRegistry`] owns one HTTP client (hyper-util legacy client over hyper-rustls with the
//! ring provider and the webpki roots; `http://` is allowed for local development) and a
//! [`JwksCache`] per URL. [`JwksRegistry::run`] is the background loop that fetches each cache
//! when its regular refresh is due; a verifier (`auth::jwt`) that meets an unknown
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

use super::keys::VerifyKey;
pub(crate) use super::keys::parse_jwk;
use crate::http_client::redact_url;

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

    /// A config (a reload, or another route) names this URL with these settings: the latest
    /// win. A shorter `refresh` pulls the next regular fetch in (it was scheduled with the old
    /// period, an hour by default).
    fn reconfigure(&self, algorithms: &[Algorithm], refresh: Duration, min_refresh: Duration) {
        let mut st = lock(&self.state);
        if refresh < st.refresh {
            let sooner = Instant::now() + jittered(refresh);
            if sooner < st.next_due {
                st.next_due = sooner;
                self.wake.notify_one();
            }
        }
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
mod tests;
