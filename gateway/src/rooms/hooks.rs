//! Calls to the app: the per-route publish hook (accept, replace or refuse a client publish)
//! and connect/disconnect notifications (fire-and-forget, bounded), over HTTP (`rooms.notify`)
//! and over the bus (`rooms.notifyNats`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use switchboard_config::Hook;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::bus::{Bus, Payload};
use super::route::RoomsPolicy;
use crate::http_client::HttpsClient;
use crate::metrics::metrics;

/// Most notifications in flight per pod, per channel (HTTP, bus); more are dropped (and
/// counted).
const MAX_NOTIFY_IN_FLIGHT: usize = 256;
/// Largest hook response body read.
const MAX_HOOK_BODY: usize = 1 << 20;

/// HTTP client for hooks. One per process; a clone is one pointer (every rooms connection
/// holds one).
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

struct Inner {
    client: HttpsClient<Full<Bytes>>,
    notify_slots: Arc<Semaphore>,
    bus_notify_slots: Arc<Semaphore>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                client: crate::http_client::https_client(None),
                notify_slots: Arc::new(Semaphore::new(MAX_NOTIFY_IN_FLIGHT)),
                bus_notify_slots: Arc::new(Semaphore::new(MAX_NOTIFY_IN_FLIGHT)),
            }),
        }
    }
}

/// What the publish hook decided.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Accept,
    Replace(Payload),
    Refuse(String),
}

fn payload_json(p: &Payload) -> Value {
    match p {
        Payload::Json(v) => json!({ "data": v }),
        Payload::Text(t) => json!({ "data": t }),
        Payload::Binary(b) => {
            use base64::Engine;
            json!({ "b64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
    }
}

impl Hooks {
    pub(super) async fn post(
        &self,
        hook: &Hook,
        user: Option<&str>,
        route: &str,
        body: Value,
    ) -> Result<(u16, Bytes), String> {
        let mut req = http::Request::post(&hook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-switchboard-route", route);
        if let Some(u) = user {
            req = req.header("x-switchboard-user", u);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(hook.timeout, self.inner.client.request(req))
            .await
            .map_err(|_| "publish hook timed out".to_string())?
            .map_err(|_| "publish hook unreachable".to_string())?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_HOOK_BODY)
            .collect()
            .await
            .map_err(|_| "publish hook answer too large or broken".to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// Ask the app about a client publish. 2xx accepts; a 2xx JSON body with `data` or `b64`
    /// replaces the payload; anything else refuses with the body's `reason` (or the status).
    pub async fn publish(
        &self,
        hook: &Hook,
        route: &str,
        room: &str,
        from: Option<&Value>,
        user: Option<&str>,
        payload: &Payload,
    ) -> Verdict {
        let mut body = payload_json(payload);
        if let Some(obj) = body.as_object_mut() {
            obj.insert("room".into(), room.into());
            obj.insert("from".into(), from.cloned().unwrap_or(Value::Null));
        }
        match self.post(hook, user, route, body).await {
            Err(reason) => Verdict::Refuse(reason),
            Ok((status, body)) if (200..300).contains(&status) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Some(d) = v.get("data") {
                    Verdict::Replace(Payload::Json(d.clone()))
                } else if let Some(b) = v.get("b64").and_then(Value::as_str) {
                    use base64::Engine;
                    match base64::engine::general_purpose::STANDARD.decode(b) {
                        Ok(bytes) => Verdict::Replace(Payload::Binary(bytes.into())),
                        Err(_) => Verdict::Refuse("publish hook returned invalid b64".into()),
                    }
                } else {
                    Verdict::Accept
                }
            }
            Ok((status, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let reason = v
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("refused by the app (HTTP {status})"));
                Verdict::Refuse(reason)
            }
        }
    }

    /// Tell the app a connection started or ended (POST to `hook`), after `after` (the same
    /// connection's previous notification) is done; never blocks the caller. A 2xx answer
    /// counts as delivered; anything else, a timeout or an unreachable app is logged at debug
    /// and counted as an error.
    pub fn notify(
        &self,
        hook: &Hook,
        route: &str,
        user: Option<&str>,
        event: Value,
        after: Option<JoinHandle<()>>,
    ) -> Option<JoinHandle<()>> {
        let (this, hook, route_owned, user) = (
            self.clone(),
            hook.clone(),
            route.to_string(),
            user.map(str::to_string),
        );
        dispatch(&self.inner.notify_slots, "http", route, after, async move {
            let route = route_owned;
            match this.post(&hook, user.as_deref(), &route, event).await {
                Ok((status, _)) if (200..300).contains(&status) => "ok",
                Ok((status, _)) => {
                    tracing::debug!(
                        route,
                        via = "http",
                        status,
                        "notification refused by the app"
                    );
                    "error"
                }
                Err(e) => {
                    tracing::debug!(route, via = "http", error = %e, "notification failed");
                    "error"
                }
            }
        })
    }

    /// Publish a connection's start or end on the bus (`P.events.<namespace>` on NATS), after
    /// `after` (the same connection's previous notification) is done; never blocks the caller.
    /// A failed publish is logged at debug and counted as an error.
    pub fn notify_bus(
        &self,
        bus: &Arc<dyn Bus>,
        namespace: &str,
        route: &str,
        event: Bytes,
        after: Option<JoinHandle<()>>,
    ) -> Option<JoinHandle<()>> {
        let (bus, namespace, route_owned) = (bus.clone(), namespace.to_string(), route.to_string());
        dispatch(
            &self.inner.bus_notify_slots,
            "nats",
            route,
            after,
            async move {
                match bus.notify(&namespace, event).await {
                    Ok(()) => "ok",
                    Err(e) => {
                        let route = route_owned;
                        tracing::debug!(route, via = "nats", namespace, error = %e, "notification failed");
                        "error"
                    }
                }
            },
        )
    }
}

/// Run one notification on its own task: at most [`MAX_NOTIFY_IN_FLIGHT`] per channel (more
/// are dropped, logged and counted), after `after` is done, its result counted under `via`.
/// Returns the task, for the connection's next notification to wait on (or `after` when this
/// one was dropped).
fn dispatch(
    slots: &Arc<Semaphore>,
    via: &'static str,
    route: &str,
    after: Option<JoinHandle<()>>,
    send: impl Future<Output = &'static str> + Send + 'static,
) -> Option<JoinHandle<()>> {
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        tracing::warn!(route, via, "notification dropped: too many in flight");
        count_notification(via, "dropped");
        return after;
    };
    Some(tokio::spawn(async move {
        let _permit = permit;
        if let Some(previous) = after {
            let _ = previous.await;
        }
        count_notification(via, send.await);
    }))
}

fn count_notification(via: &str, result: &str) {
    metrics()
        .notifications
        .with_label_values(&[via, result])
        .inc();
}

/// Where one rooms route sends its connections' connect/disconnect events: the app over HTTP
/// (`rooms.notify`), the bus (`rooms.notifyNats`), both, or nowhere. Both carry the same JSON.
#[derive(Clone)]
pub struct Notifier {
    hooks: Hooks,
    route: String,
    http: Option<Hook>,
    /// The bus and the route's rooms namespace, with `rooms.notifyNats`.
    bus: Option<(Arc<dyn Bus>, String)>,
}

impl Notifier {
    pub fn new(hooks: &Hooks, route: &str, policy: &RoomsPolicy, bus: &Arc<dyn Bus>) -> Self {
        Self {
            hooks: hooks.clone(),
            route: route.to_string(),
            http: policy.cfg.notify.clone(),
            bus: policy
                .cfg
                .notify_nats
                .then(|| (bus.clone(), policy.namespace.clone())),
        }
    }

    /// Send the event `event` builds everywhere this route notifies, each channel after
    /// `previous` (what this connection sent before, so a `disconnect` never overtakes its
    /// `connect`); never blocks or fails the caller. A route that notifies nowhere does not
    /// build the event (a connect storm pays nothing for it).
    pub fn send(&self, previous: Sent, user: Option<&str>, event: impl FnOnce() -> Value) -> Sent {
        if self.bus.is_none() && self.http.is_none() {
            return previous;
        }
        let event = event();
        let bus = match &self.bus {
            Some((bus, namespace)) => {
                let body = Bytes::from(event.to_string());
                self.hooks
                    .notify_bus(bus, namespace, &self.route, body, previous.bus)
            }
            None => None,
        };
        let http = match &self.http {
            Some(hook) => self
                .hooks
                .notify(hook, &self.route, user, event, previous.http),
            None => None,
        };
        Sent { bus, http }
    }
}

/// A connection's notifications still on their way, per channel.
#[derive(Debug, Default)]
pub struct Sent {
    bus: Option<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
}

impl Sent {
    /// Wait until every channel has answered, failed or timed out (each send is bounded by
    /// its hook's timeout or the bus's operation timeout). A connection awaits its
    /// `disconnect` this way while it still counts for the drain, so a shutdown does not exit
    /// with the app's notifications unsent.
    pub async fn finished(self) {
        for task in [self.bus, self.http].into_iter().flatten() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::bus::memory::MemoryBus;

    fn policy(rooms: Value) -> RoomsPolicy {
        let cfg: switchboard_config::Rooms = serde_json::from_value(rooms).unwrap();
        RoomsPolicy::new("chat", &cfg).unwrap()
    }

    fn nats_errors() -> u64 {
        metrics()
            .notifications
            .with_label_values(&["nats", "error"])
            .get()
    }

    #[tokio::test]
    async fn a_bus_that_refuses_a_notification_neither_blocks_nor_fails_the_connection() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let notifier = Notifier::new(
            &Hooks::default(),
            "chat",
            &policy(json!({"notifyNats": true})),
            &bus,
        );
        let before = nats_errors();
        notifier.send(
            Sent::default(),
            Some("alice"),
            || json!({"event": "connect"}),
        );
        // Counted once the spawned publish has run (the in-process bus refuses at once).
        for _ in 0..1000 {
            if nats_errors() > before {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the refused notification was not counted");
    }

    #[tokio::test]
    async fn a_notification_waits_for_the_connections_previous_one() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let hooks = Hooks::default();
        // The connection's `connect`, still on its way until `release` fires.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let connect = tokio::spawn(async move {
            let _ = released.await;
        });
        let before = nats_errors();
        let disconnect = hooks
            .notify_bus(&bus, "ns", "chat", Bytes::from_static(b"{}"), Some(connect))
            .expect("sent");
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        // Asked of the task, not the process-wide counter (tests share it under `cargo test`).
        assert!(
            !disconnect.is_finished(),
            "sent before the connect was done"
        );
        release.send(()).unwrap();
        disconnect.await.unwrap();
        assert!(nats_errors() > before, "sent once the connect was done");
    }

    #[test]
    fn a_route_notifies_only_where_it_asks_to() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let hooks = Hooks::default();
        let quiet = Notifier::new(&hooks, "chat", &policy(json!({})), &bus);
        assert!(quiet.http.is_none() && quiet.bus.is_none());
        let both = Notifier::new(
            &hooks,
            "chat",
            &policy(
                json!({"namespace": "team", "notifyNats": true, "notify": {"url": "http://app/n"}}),
            ),
            &bus,
        );
        assert_eq!(both.http.map(|h| h.url).as_deref(), Some("http://app/n"));
        assert_eq!(both.bus.map(|(_, ns)| ns).as_deref(), Some("team"));
    }
}
