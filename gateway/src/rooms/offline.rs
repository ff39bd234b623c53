//! Offline hand-off (docs/protocol.md, "Offline hand-off"): when a publish targets a user room
//! (`user:<sub>`, or a room matching `offline.rooms`) and that user has no live connection
//! anywhere in the cluster, the gateway says so — in the publish API's answer — and, for each
//! stored message, sends an `offline` notification (HTTP hook, retried; and/or the core NATS
//! subject `<prefix>.offline.<namespace>`) so the app can send a push notification.
//!
//! "Live connection": a room-protocol WebSocket or SSE stream of the user on a route of the
//! namespace with `offline` set; each announces itself in the cluster presence of its user
//! room (the NATS presence KV bucket, or in-process on the embedded bus), refreshed like any
//! presence entry and gone within `presenceTtl` of a crashed pod.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_config::Offline;
use tokio::sync::Semaphore;

use super::bus::{Bus, BusError, Payload, Position, RoomKey};
use super::hooks::Hooks;
use crate::metrics::metrics;

/// Offline notifications in flight per pod (each with its retries); more are dropped and
/// counted.
pub const MAX_IN_FLIGHT: usize = 256;
/// Attempts of one HTTP notification (the first and its retries).
pub const ATTEMPTS: u32 = 3;
/// Pause before the first retry; doubled for each further one.
pub const RETRY_BASE: Duration = Duration::from_millis(200);

/// Whether `user` has a live connection anywhere in the cluster (in `namespace`).
pub async fn online(bus: &dyn Bus, namespace: &str, user: &str) -> Result<bool, BusError> {
    let key = RoomKey {
        namespace: namespace.to_string(),
        room: format!("user:{user}"),
    };
    Ok(!bus.presence_list(&key).await?.is_empty())
}

/// One stored message into the room of an offline user.
#[derive(Debug, Clone)]
pub struct Missed {
    pub route: String,
    pub namespace: String,
    pub room: String,
    pub user: String,
    pub position: Position,
    pub from: Option<Value>,
    pub payload: Payload,
}

impl Missed {
    /// The notification's JSON.
    pub fn event(&self) -> Value {
        let mut v = json!({
            "event": "offline",
            "route": self.route,
            "namespace": self.namespace,
            "room": self.room,
            "user": self.user,
            "seq": self.position.seq,
            "epoch": self.position.epoch,
            "from": self.from,
            "ts": crate::http::unix_now(),
        });
        if let Some(obj) = v.as_object_mut() {
            match &self.payload {
                Payload::Json(d) => obj.insert("data".into(), d.clone()),
                Payload::Text(t) => obj.insert("data".into(), t.clone().into()),
                Payload::Binary(b) => {
                    use base64::Engine;
                    obj.insert(
                        "b64".into(),
                        base64::engine::general_purpose::STANDARD.encode(b).into(),
                    )
                }
            };
        }
        v
    }
}

fn slots() -> &'static Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)))
}

fn count(via: &str, result: &str) {
    metrics()
        .offline_notifications
        .with_label_values(&[via, result])
        .inc();
}

/// Send `missed` everywhere `cfg` says, in the background (never blocks the publisher).
pub fn notify(hooks: &Hooks, bus: &Arc<dyn Bus>, cfg: &Offline, missed: Missed) {
    metrics().offline_publishes.inc();
    let event = missed.event();
    if let Some(hook) = &cfg.notify {
        match slots().clone().try_acquire_owned() {
            Err(_) => {
                tracing::warn!(route = %missed.route, "offline notification dropped: too many in flight");
                count("http", "dropped");
            }
            Ok(permit) => {
                let (hooks, hook, event) = (hooks.clone(), hook.clone(), event.clone());
                let (route, user) = (missed.route.clone(), missed.user.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let result = post_retried(&hooks, &hook, &route, &user, event).await;
                    count("http", result);
                });
            }
        }
    }
    if cfg.notify_nats {
        match bus.nats() {
            None => count("nats", "error"),
            Some(nats) => {
                let subject = format!("{}.offline.{}", nats.prefix, missed.namespace);
                let body = Bytes::from(event.to_string());
                tokio::spawn(async move {
                    let sent = tokio::time::timeout(
                        Duration::from_secs(5),
                        nats.client.publish(subject, body),
                    )
                    .await;
                    count(
                        "nats",
                        if matches!(sent, Ok(Ok(()))) {
                            "ok"
                        } else {
                            "error"
                        },
                    );
                });
            }
        }
    }
}

/// POST `event`, retrying ([`ATTEMPTS`] in all, backing off from [`RETRY_BASE`]) on a failure
/// or a 5xx; a 4xx is the app's final answer.
async fn post_retried(
    hooks: &Hooks,
    hook: &switchboard_config::Hook,
    route: &str,
    user: &str,
    event: Value,
) -> &'static str {
    let mut pause = RETRY_BASE;
    for attempt in 1..=ATTEMPTS {
        match hooks.post(hook, Some(user), route, event.clone()).await {
            Ok((status, _)) if (200..300).contains(&status) => return "ok",
            Ok((status, _)) if status < 500 => {
                tracing::debug!(route, status, "offline notification refused by the app");
                return "error";
            }
            Ok((status, _)) => {
                tracing::debug!(route, status, attempt, "offline notification failed")
            }
            Err(e) => tracing::debug!(route, error = %e, attempt, "offline notification failed"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    "error"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::route::RoomsPolicy;

    fn policy(rooms: Value) -> RoomsPolicy {
        let cfg: switchboard_config::Rooms = serde_json::from_value(rooms).unwrap();
        RoomsPolicy::new("chat", &cfg).unwrap()
    }

    #[test]
    fn a_user_room_names_its_user_only_where_the_route_hands_off() {
        let p = policy(json!({"offline": {"rooms": ["inbox:{sub}:n"]}}));
        assert_eq!(p.offline_user("user:alice").as_deref(), Some("alice"));
        assert_eq!(p.offline_user("inbox:bob:n").as_deref(), Some("bob"));
        assert_eq!(p.offline_user("chat:lobby"), None);
        assert_eq!(p.offline_user("user:"), None);
        assert_eq!(policy(json!({})).offline_user("user:alice"), None);
    }

    #[test]
    fn an_offline_notification_carries_room_user_position_and_payload() {
        let m = Missed {
            route: "chat".into(),
            namespace: "ns".into(),
            room: "inbox:bob:n".into(),
            user: "bob".into(),
            position: Position {
                seq: 9,
                epoch: "e".into(),
            },
            from: Some(json!({"sub": "alice"})),
            payload: Payload::Binary(Bytes::from_static(b"\x00\x01")),
        };
        let mut v = m.event();
        assert!(v["ts"].as_u64().is_some());
        v.as_object_mut().unwrap().remove("ts");
        assert_eq!(
            v,
            json!({"event": "offline", "route": "chat", "namespace": "ns", "room": "inbox:bob:n",
                   "user": "bob", "seq": 9, "epoch": "e", "from": {"sub": "alice"}, "b64": "AAE="})
        );
    }
}
