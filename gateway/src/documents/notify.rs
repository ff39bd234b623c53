//! The debounced "document changed" notification (`rooms.documents.notify` over HTTP,
//! `rooms.documents.notifyNats` on NATS), so the app can store its own copy of a document.
//!
//! Each replica with a notification configured runs one [`debounce`] loop: an edit applied on
//! this pod (by an editor or the documents API) wakes it; it waits `notifyDebounce`, folding in
//! every edit of that window, then sends one notification and starts over. So a document gets
//! at most one notification per window from a pod, and one always follows its last edit.
//! Each send is tried up to [`ATTEMPTS`] times per channel; results are counted in
//! `switchboard_document_notifications_total{via,result}`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use switchboard_config::Hook;
use tokio::sync::Notify;

use crate::http_client::HttpsClient;
use crate::metrics::metrics;
use crate::rooms::bus::{Bus, RoomKey};

/// Attempts per notification and channel.
pub const ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubled before each later one.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Where a pod sends its documents' "document changed" notifications.
#[derive(Clone)]
pub struct Channels {
    client: HttpsClient<Full<Bytes>>,
    bus: Arc<dyn Bus>,
}

/// What one notification says about a document.
pub struct Changed<'a> {
    pub key: &'a RoomKey,
    /// The document's state vector (v1 encoding): compare it with the copy the app has.
    pub state_vector: &'a [u8],
    /// The document's size (an upper bound of its encoded state).
    pub bytes: u64,
    /// Edits applied on this pod since the previous notification.
    pub updates: u64,
}

/// The notification's JSON body.
pub fn body(c: &Changed<'_>) -> Value {
    json!({
        "event": "document.changed",
        "namespace": c.key.namespace,
        "document": c.key.room,
        "stateVector": base64::engine::general_purpose::STANDARD.encode(c.state_vector),
        "bytes": c.bytes,
        "updates": c.updates,
        // GET it on the admin listener with the publish-API token (docs/documents.md).
        // (Namespace and document names need no escaping in a path.)
        "statePath": format!("{}{}/{}", super::API_PREFIX, c.key.namespace, c.key.room),
    })
}

impl Channels {
    pub fn new(bus: &Arc<dyn Bus>) -> Self {
        Self {
            client: crate::http_client::https_client(None),
            bus: bus.clone(),
        }
    }

    /// Send one notification to `hook` and/or the bus; each channel retried, counted.
    pub async fn send(&self, hook: Option<&Hook>, nats: bool, namespace: &str, body: Value) {
        let text = Bytes::from(body.to_string());
        let http = async {
            if let Some(hook) = hook {
                with_retries("http", || self.post(hook, text.clone())).await;
            }
        };
        let bus = async {
            if nats {
                with_retries("nats", || async {
                    self.bus
                        .notify(namespace, text.clone())
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
            }
        };
        tokio::join!(http, bus);
    }

    async fn post(&self, hook: &Hook, body: Bytes) -> Result<(), String> {
        let req = http::Request::post(&hook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(hook.timeout, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("unreachable: {e}"))?;
        let status = resp.status();
        // Read (and drop) the answer so the connection can be reused.
        let _ = tokio::time::timeout(
            hook.timeout,
            http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect(),
        )
        .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

/// Up to [`ATTEMPTS`] tries of `send`, backing off; every result counted under `via`.
async fn with_retries<F, Fut>(via: &str, mut send: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        match send().await {
            Ok(()) => {
                count(via, "ok");
                return;
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::debug!(via, attempt, error = %e, "document notification failed; retrying");
                count(via, "retried");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::warn!(via, error = %e, "document notification not delivered");
                count(via, "error");
            }
        }
    }
}

fn count(via: &str, result: &str) {
    metrics()
        .document_notifications
        .with_label_values(&[via, result])
        .inc();
}

/// Edits not yet notified, and the wake-up of the debounce loop.
#[derive(Default)]
pub struct Pending {
    edited: AtomicBool,
    wake: Notify,
}

impl Pending {
    /// An edit was applied.
    pub fn mark(&self) {
        self.edited.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The debounce loop of one document: after an edit ([`Pending::mark`]), wait `window`, then
/// `send` (which reports the document as it is then, so it covers every edit so far). Edits
/// during the wait are folded into that send; edits during the send into the next round. Runs
/// until its task is aborted or `send` says stop (false).
pub async fn debounce<F, Fut>(pending: Arc<Pending>, window: Duration, mut send: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        pending.wake.notified().await;
        if !pending.edited.load(Ordering::Acquire) {
            continue; // a wake-up for edits the previous send covered
        }
        tokio::time::sleep(window).await;
        pending.edited.store(false, Ordering::Release);
        if !send().await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    /// A debounce loop whose sends record their (virtual) time since `t0`.
    fn sends(changed: &Arc<Pending>, window: Duration, t0: Instant) -> Arc<Mutex<Vec<u128>>> {
        let at = Arc::new(Mutex::new(Vec::new()));
        let record = at.clone();
        tokio::spawn(debounce(changed.clone(), window, move || {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(t0.elapsed().as_millis());
                true
            }
        }));
        at
    }

    async fn edit_at(changed: &Pending, t0: Instant, ms: u64) {
        tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
        changed.mark();
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_edits_gets_one_notification_a_window_after_its_first_edit() {
        let t0 = Instant::now();
        let changed = Arc::new(Pending::default());
        let at = sends(&changed, Duration::from_secs(2), t0);
        for ms in [0, 100, 500, 1900] {
            edit_at(&changed, t0, ms).await;
        }
        tokio::time::sleep_until(t0 + Duration::from_secs(10)).await;
        assert_eq!(*at.lock().unwrap(), [2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn steady_editing_is_notified_at_most_once_per_window_and_once_after_the_last_edit() {
        let t0 = Instant::now();
        let changed = Arc::new(Pending::default());
        let at = sends(&changed, Duration::from_secs(1), t0);
        // An edit every 300 ms for 3.5 s, then silence.
        for ms in (0..=3500).step_by(300) {
            edit_at(&changed, t0, ms).await;
        }
        tokio::time::sleep_until(t0 + Duration::from_secs(20)).await;
        let at = at.lock().unwrap().clone();
        assert!(
            at.windows(2).all(|w| w[1] - w[0] >= 1000),
            "at most one per window: {at:?}"
        );
        // The last edit (3300 ms) is covered by a later notification.
        assert!(at.last().is_some_and(|t| *t >= 3300), "{at:?}");
        // Windows start at the first edit after a send: 0, 1200 (the edit at 900 was in the
        // first send), 2400.
        assert_eq!(at, [1000, 2200, 3400]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_edit_no_notification() {
        let t0 = Instant::now();
        let changed = Arc::new(Pending::default());
        let at = sends(&changed, Duration::from_secs(1), t0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(at.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_channel_is_tried_three_times_then_counted_as_an_error() {
        let tries = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let errors = || {
            metrics()
                .document_notifications
                .with_label_values(&["test-failing", "error"])
                .get()
        };
        let before = errors();
        let log = tries.clone();
        with_retries("test-failing", || {
            log.lock().unwrap().push(t0.elapsed().as_millis());
            async { Err::<(), _>("down".to_string()) }
        })
        .await;
        assert_eq!(*tries.lock().unwrap(), [0, 500, 1500], "backing off");
        assert_eq!(errors(), before + 1);
    }
}
