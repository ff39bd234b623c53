//! The server publish API (admin listener): `POST /v1/publish` with a bearer token publishes
//! into rooms, many rooms, or users' own rooms, and returns the assigned positions. One call
//! names at most `publishApi.maxRoomsPerCall` rooms and users (413 `too_many_rooms`).

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_config::GatewayConfig;

use super::authz::valid_room;
use super::bus::Publish;
use super::hub::Hub;
use super::protocol;
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

pub(crate) fn token_matches(given: &str, expected: &str) -> bool {
    // Compare digests so the comparison time says nothing about the token.
    Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// The configured token, read now (so a rotated token file takes effect without a restart),
/// and the per-call room cap.
pub(crate) fn expected_token(cfg: &GatewayConfig) -> Option<(String, u32)> {
    let api = cfg.publish_api.clone()?;
    let token = match (api.token, api.token_file) {
        (Some(t), _) => Some(t),
        (None, Some(f)) => std::fs::read_to_string(f)
            .ok()
            .map(|t| t.trim().to_string()),
        _ => None,
    }?;
    Some((token, api.max_rooms_per_call))
}

/// Handle `POST /v1/publish` with the live config and the pod's hub: (status, JSON body).
pub async fn handle(
    config: &ArcSwap<GatewayConfig>,
    hub: &Hub,
    req: http::Request<Incoming>,
) -> (StatusCode, Value) {
    let Some((expected, max_rooms)) = expected_token(&config.load()) else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error": "publish API is not enabled (publishApi)"}),
        );
    };
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if given.is_empty() || !token_matches(given, &expected) {
        return (
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or wrong bearer token"}),
        );
    }
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
    let namespace = match (&r.namespace, namespaces.as_slice()) {
        (Some(ns), _) if namespaces.iter().any(|(n, _)| n == ns) => ns.clone(),
        (Some(ns), _) => {
            return (
                StatusCode::NOT_FOUND,
                json!({"error": format!("no rooms route has namespace `{ns}`")}),
            );
        }
        (None, [(only, _)]) => only.clone(),
        (None, _) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": "name the namespace (more than one rooms namespace is configured)"}),
            );
        }
    };
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
    for room in targets {
        let p = Publish {
            key: super::bus::RoomKey {
                namespace: namespace.clone(),
                room: room.clone(),
            },
            from: None,
            data: payload.clone(),
            ephemeral: r.ephemeral || !keeps_history,
            origin_conn: None,
        };
        match hub.publish(p, "api").await {
            Ok(pos) => results.push(json!({"room": room, "seq": pos.as_ref().map(|p| p.seq), "epoch": pos.map(|p| p.epoch)})),
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, json!({"error": e.to_string(), "published": results})),
        }
    }
    (StatusCode::OK, json!({ "results": results }))
}
