//! The server publish API (admin listener): `POST /v1/publish` with a bearer token publishes
//! into rooms, many rooms, or users' own rooms, and returns the assigned positions. One call
//! names at most `publishApi.maxRoomsPerCall` rooms and users (413 `too_many_rooms`).
//! Publishes into user rooms on a namespace with `rooms.offline` report, per user, whether
//! the user has a live connection (and hand the message off when not, [`super::offline`]).
//! `GET /v1/reads?user=<sub>` lists a user's read positions and unread counts (badges).

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_config::GatewayConfig;

use super::authz::valid_room;
use super::bus::Publish;
use super::hooks::Hooks;
use super::hub::Hub;
use super::offline::{self, Missed};
use super::protocol;
use super::route::RoomsPolicy;
use crate::auth::api_token::authorize_api;
use crate::error::Refusal;

/// Largest publish request body.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    b64: Option<String>,
    #[serde(default)]
    ephemeral: bool,
}

/// [`authorize_api`] with the answer as this API's JSON.
fn authorize<B>(
    config: &ArcSwap<GatewayConfig>,
    req: &http::Request<B>,
) -> Result<u32, (StatusCode, Value)> {
    authorize_api(&config.load(), req.headers()).map_err(|r| {
        let (status, error) = r.answer();
        (status, json!({ "error": error }))
    })
}

/// The namespace a call names (or the only one configured).
fn pick_namespace(
    asked: Option<&str>,
    namespaces: &[(String, Option<super::bus::Retention>)],
) -> Result<String, (StatusCode, Value)> {
    match (asked, namespaces) {
        (Some(ns), _) if namespaces.iter().any(|(n, _)| n == ns) => Ok(ns.to_string()),
        (Some(ns), _) => Err((
            StatusCode::NOT_FOUND,
            json!({"error": format!("no rooms route has namespace `{ns}`")}),
        )),
        (None, [(only, _)]) => Ok(only.clone()),
        (None, []) => Err((
            StatusCode::NOT_FOUND,
            json!({"error": "no rooms route serves room messages (Yjs documents have the documents API)"}),
        )),
        (None, _) => Err((
            StatusCode::BAD_REQUEST,
            json!({"error": "name the namespace (more than one rooms namespace is configured)"}),
        )),
    }
}

/// The first route of `namespace` with `rooms.offline`, compiled (offline hand-off of API
/// publishes follows it).
fn offline_route(cfg: &GatewayConfig, namespace: &str) -> Option<(String, RoomsPolicy)> {
    cfg.routes.iter().find_map(|r| {
        let rooms = r.rooms.as_ref()?;
        rooms.offline.as_ref()?;
        let policy = RoomsPolicy::new(&r.name, rooms).ok()?;
        (policy.namespace == namespace).then(|| (r.name.clone(), policy))
    })
}

/// Handle `POST /v1/publish` with the live config and the pod's hub: (status, JSON body).
pub async fn handle(
    config: &ArcSwap<GatewayConfig>,
    hub: &Hub,
    hooks: &Hooks,
    req: http::Request<Incoming>,
) -> (StatusCode, Value) {
    let max_rooms = match authorize(config, &req) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    let body: Bytes = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "body over 1 MiB"}),
            );
        }
    };
    let r: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("bad request: {e}")}),
            );
        }
    };
    let namespaces = super::route::namespaces(&config.load());
    let namespace = match pick_namespace(r.namespace.as_deref(), &namespaces) {
        Ok(ns) => ns,
        Err(answer) => return answer,
    };
    let offline_policy = offline_route(&config.load(), &namespace);
    let keeps_history = namespaces
        .iter()
        .any(|(n, h)| *n == namespace && h.is_some());
    // Checked before anything is built from the lists: one call's work is bounded.
    let named = r.rooms.len() + r.users.len() + usize::from(r.room.is_some());
    if named > max_rooms as usize {
        let refusal = Refusal::TooManyRooms;
        return (
            refusal.status(),
            json!({"error": refusal.label(), "reason": refusal.to_string(), "max": max_rooms}),
        );
    }
    if r.users.iter().any(String::is_empty) {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "users: an empty user names no user room"}),
        );
    }
    let mut targets: Vec<String> = r.room.into_iter().chain(r.rooms).collect();
    targets.extend(r.users.iter().map(|u| format!("user:{u}")));
    if targets.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "give room, rooms or users"}),
        );
    }
    if let Some(bad) = targets.iter().find(|t| !valid_room(t)) {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": format!("`{bad}` is not a valid room name")}),
        );
    }
    let payload = match protocol::payload(r.data, r.b64) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, json!({"error": e})),
    };
    let mut results = Vec::new();
    let ephemeral = r.ephemeral || !keeps_history;
    for room in targets {
        // Offline hand-off: is the user of a user room live anywhere? (Asked before the
        // publish, so a connection that opens meanwhile gets the message live.)
        let user = offline_policy
            .as_ref()
            .and_then(|(_, p)| p.offline_user(&room));
        let online = match &user {
            Some(u) => Some(offline::online(hub.bus().as_ref(), &namespace, u).await),
            None => None,
        };
        let p = Publish {
            key: super::bus::RoomKey {
                namespace: namespace.clone(),
                room: room.clone(),
            },
            from: None,
            data: payload.clone(),
            ephemeral,
            origin_conn: None,
        };
        match hub.publish(p, "api").await {
            Ok(pos) => {
                let mut result = json!({"room": room, "seq": pos.as_ref().map(|p| p.seq), "epoch": pos.as_ref().map(|p| p.epoch.clone())});
                if let (Some(user), Some(online)) = (user, online) {
                    // `online` null: cluster presence could not be read (no hand-off).
                    result["user"] = user.clone().into();
                    result["online"] = online.as_ref().ok().copied().into();
                    if let (Ok(false), Some(pos), Some((route, policy))) =
                        (online, pos, &offline_policy)
                        && let Some(cfg) = &policy.cfg.offline
                    {
                        let missed = Missed {
                            route: route.clone(),
                            namespace: namespace.clone(),
                            room: room.clone(),
                            user,
                            position: pos,
                            from: None,
                            payload: payload.clone(),
                        };
                        offline::notify(hooks, hub.bus(), cfg, missed);
                    }
                }
                results.push(result);
            }
            Err(e) => {
                // Too large for the bus: sending it again fails the same way.
                let status = match e {
                    super::bus::BusError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                return (
                    status,
                    json!({"error": e.to_string(), "published": results}),
                );
            }
        }
    }
    (StatusCode::OK, json!({ "results": results }))
}

/// Handle `GET /v1/reads?user=<sub>[&namespace=<ns>]`: the user's read positions and unread
/// counts, room by room (at most [`super::receipts::MAX_ROOMS_PER_USER`]), and their sum.
pub async fn reads(
    config: &ArcSwap<GatewayConfig>,
    hub: &Hub,
    req: http::Request<Incoming>,
) -> (StatusCode, Value) {
    if let Err(answer) = authorize(config, &req) {
        return answer;
    }
    let query = req.uri().query();
    let Some(user) = crate::auth::token::query_param(query, "user").filter(|u| !u.is_empty())
    else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "give the user: ?user=<sub>"}),
        );
    };
    let asked = crate::auth::token::query_param(query, "namespace");
    let namespaces = super::route::namespaces(&config.load());
    let namespace = match pick_namespace(asked.as_deref(), &namespaces) {
        Ok(ns) => ns,
        Err(answer) => return answer,
    };
    let receipts = hub.receipts();
    let listed = match receipts
        .store()
        .of_user(&namespace, &user, super::receipts::MAX_ROOMS_PER_USER)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": e.to_string()}),
            );
        }
    };
    let mut rooms = Vec::new();
    let mut total = 0u64;
    for (room, read) in listed {
        let key = super::bus::RoomKey {
            namespace: namespace.clone(),
            room: room.clone(),
        };
        match super::receipts::unread(hub.bus().as_ref(), &key, &user, Some(&read)).await {
            Ok(unread) => {
                total += unread;
                rooms.push(json!({"room": room, "read": read, "unread": unread}));
            }
            Err(e) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": e.to_string()}),
                );
            }
        }
    }
    (
        StatusCode::OK,
        json!({"user": user, "namespace": namespace, "rooms": rooms, "unread": total}),
    )
}

#[cfg(test)]
mod tests;
