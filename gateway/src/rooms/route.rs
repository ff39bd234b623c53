//! A rooms route, compiled: namespace, authorization patterns, raw-room path pattern, and the
//! settings every connection of the route shares.

use switchboard_config::{
    GatewayConfig, Keepalive, RoomProtocol, Rooms, Route, RouteDrain, RouteLimits,
};

use std::sync::Arc;
use std::time::Duration;

use super::authz::{self, Pattern};
use super::batch::{BatchCfg, BatchRule};
use super::bus::{Carried, CarriedKind, Retention, RoomKey};
use crate::auth::jwt::Claims;
use crate::error::CloseCause;

/// What every WebSocket of a rooms route shares, fixed when the route is compiled (held once
/// per route, never copied into a connection).
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// The route's name (metrics, hooks, logs).
    pub route: Arc<str>,
    pub limits: RouteLimits,
    pub keepalive: Keepalive,
    /// The close a drain sends (the route's code and reason), spread over `drain_window`.
    pub drain_close: CloseCause,
    pub drain_window: Duration,
}

impl ConnSettings {
    fn new(route: &str, limits: &RouteLimits, keepalive: &Keepalive, drain: &RouteDrain) -> Self {
        Self {
            route: route.into(),
            limits: limits.clone(),
            keepalive: keepalive.clone(),
            drain_close: CloseCause::Draining {
                code: drain.close_code,
                reason: drain.close_reason.clone(),
            },
            drain_window: drain.window,
        }
    }
}

/// The compiled rooms policy of a route.
#[derive(Debug, Clone)]
pub struct RoomsPolicy {
    pub cfg: Rooms,
    pub namespace: String,
    join: Vec<Pattern>,
    publish: Vec<Pattern>,
    /// `receipts.rooms`, `batch.rooms`, `offline.rooms`.
    receipts: Vec<Pattern>,
    batch: Vec<Pattern>,
    offline: Vec<Pattern>,
    /// Raw rooms: the path before and after `{room}`.
    raw_path: Option<(String, String)>,
    /// The route's connection settings (defaults until [`RoomsPolicy::with_route`]).
    pub conn: ConnSettings,
    /// The claims the route's room patterns name (`{org}`), other than `sub`.
    claim_names: Vec<String>,
}

impl RoomsPolicy {
    pub fn new(route_name: &str, cfg: &Rooms) -> Result<Self, String> {
        let parse = |list: &[String], what: &str| -> Result<Vec<Pattern>, String> {
            list.iter()
                .enumerate()
                .map(|(i, p)| Pattern::parse(p).map_err(|e| format!("rooms.{what}[{i}]: {e}")))
                .collect()
        };
        let raw_path = match (&cfg.protocol, &cfg.path_room) {
            (RoomProtocol::Raw | RoomProtocol::Yjs, Some(p)) => {
                let (before, after) = p
                    .split_once("{room}")
                    .ok_or_else(|| "rooms.pathRoom: must contain `{room}`".to_string())?;
                Some((before.to_string(), after.to_string()))
            }
            (RoomProtocol::Raw | RoomProtocol::Yjs, None) => {
                return Err(
                    "rooms.pathRoom: raw rooms need a path pattern like `/collab/{room}`".into(),
                );
            }
            _ => None,
        };
        let join = parse(&cfg.join, "join")?;
        let publish = parse(&cfg.publish, "publish")?;
        let receipts = parse(
            cfg.receipts.as_ref().map_or(&[][..], |r| &r.rooms),
            "receipts.rooms",
        )?;
        let batch = parse(
            cfg.batch.as_ref().map_or(&[][..], |b| &b.rooms),
            "batch.rooms",
        )?;
        let offline = parse(
            cfg.offline.as_ref().map_or(&[][..], |o| &o.rooms),
            "offline.rooms",
        )?;
        let mut claim_names: Vec<String> = [&join, &publish, &receipts, &batch, &offline]
            .into_iter()
            .flatten()
            .flat_map(Pattern::claims)
            .filter(|c| *c != "sub")
            .map(str::to_string)
            .collect();
        claim_names.sort();
        claim_names.dedup();
        Ok(Self {
            claim_names,
            namespace: cfg
                .namespace
                .clone()
                .unwrap_or_else(|| route_name.to_string()),
            join,
            publish,
            receipts,
            batch,
            offline,
            raw_path,
            cfg: cfg.clone(),
            conn: ConnSettings::new(
                route_name,
                &RouteLimits::default(),
                &Keepalive::default(),
                &RouteDrain::default(),
            ),
        })
    }

    /// The claims a connection keeps after admission: `sub`, `exp` and the claims this route's
    /// room patterns name; the rest of the token is not held for the connection's life. A
    /// string `sub` is kept in [`Claims::sub`] only (room patterns read it from there). Code on
    /// the WebSocket path that reads another claim must add it to the names kept here (SSE and
    /// long-polls keep the whole token: they live per request).
    pub fn session_claims(&self, mut claims: Claims) -> Claims {
        let keep_sub = claims.sub.is_none();
        claims.raw = std::mem::take(&mut claims.raw)
            .into_iter()
            .filter(|(k, _)| (keep_sub && k == "sub") || self.claim_names.contains(k))
            .collect();
        claims
    }

    /// With the connection settings of `route` (its limits, keep-alive and drain).
    pub fn with_route(mut self, route: &Route) -> Self {
        self.conn = ConnSettings::new(&route.name, &route.limits, &route.keepalive, &route.drain);
        self
    }

    pub fn key(&self, room: &str) -> RoomKey {
        RoomKey {
            namespace: self.namespace.clone(),
            room: room.to_string(),
        }
    }

    /// The room comes from the path (raw relay rooms and Yjs documents).
    pub fn is_raw(&self) -> bool {
        self.raw_path.is_some()
    }

    /// A Yjs document room (served by [`crate::documents`]).
    pub fn is_yjs(&self) -> bool {
        self.cfg.protocol == RoomProtocol::Yjs
    }

    /// The raw room named by a request path, if the path fits the pattern.
    pub fn raw_room(&self, path: &str) -> Option<String> {
        let (before, after) = self.raw_path.as_ref()?;
        let room = path
            .strip_prefix(before.as_str())?
            .strip_suffix(after.as_str())?;
        let room = percent_encoding::percent_decode_str(room)
            .decode_utf8()
            .ok()?
            .into_owned();
        authz::valid_room(&room).then_some(room)
    }

    /// The connection's own user room (`user:<sub>`), joined automatically. None for an empty
    /// `sub` (such tokens are refused on rooms routes; never one room shared by all of them).
    pub fn user_room(&self, claims: Option<&Claims>) -> Option<String> {
        let sub = claims?.sub.as_deref().filter(|s| !s.is_empty())?;
        let room = format!("user:{sub}");
        authz::valid_room(&room).then_some(room)
    }

    pub fn may_join(&self, room: &str, claims: Option<&Claims>) -> bool {
        authz::allowed(&self.join, room, claims) || self.user_room(claims).as_deref() == Some(room)
    }

    pub fn may_publish(&self, room: &str, claims: Option<&Claims>) -> bool {
        authz::allowed(&self.publish, room, claims)
    }

    /// The receipts interval of `room`, when the route keeps read receipts there.
    pub fn receipts_in(&self, room: &str, claims: Option<&Claims>) -> Option<Duration> {
        let r = self.cfg.receipts.as_ref()?;
        authz::allowed(&self.receipts, room, claims).then_some(r.interval)
    }

    /// The batching rule of a member with `claims` (routes with `rooms.batch`).
    pub fn batch_rule(&self, claims: Option<&Claims>) -> Option<Arc<BatchRule>> {
        let b = self.cfg.batch.as_ref()?;
        Some(Arc::new(BatchRule {
            patterns: self.batch.clone(),
            claims: claims.cloned(),
            cfg: BatchCfg::from(b),
        }))
    }

    /// The user whose room `room` is, for offline hand-off (routes with `rooms.offline`):
    /// `user:<sub>`, or a room matching an `offline.rooms` pattern.
    pub fn offline_user(&self, room: &str) -> Option<String> {
        self.cfg.offline.as_ref()?;
        user_of_room(room, &self.offline)
    }
}

/// The user a user room names: `user:<sub>`, or the `{sub}` of a matching user room pattern.
pub fn user_of_room(room: &str, patterns: &[Pattern]) -> Option<String> {
    if let Some(sub) = room.strip_prefix("user:")
        && !sub.is_empty()
    {
        return Some(sub.to_string());
    }
    patterns.iter().find_map(|p| p.user_of(room))
}

/// Every room namespace of `cfg` (not the Yjs documents ones) and its retention (the first
/// route naming a namespace sets it).
pub fn namespaces(cfg: &GatewayConfig) -> Vec<(String, Option<Retention>)> {
    let mut out: Vec<(String, Option<Retention>)> = Vec::new();
    for r in &cfg.routes {
        // Documents namespaces are served by the documents store and API, not the room bus.
        if let Some(rooms) = r.rooms.as_ref().filter(|r| r.protocol != RoomProtocol::Yjs) {
            let ns = rooms.namespace.clone().unwrap_or_else(|| r.name.clone());
            let retention = rooms.history.as_ref().map(Retention::of);
            if !out.iter().any(|(n, _)| *n == ns) {
                out.push((ns, retention));
            }
        }
    }
    out
}

/// The largest message every rooms route hands the bus: a room message up to the route's
/// `limits.maxMessageBytes`; a Yjs documents route's snapshot, its whole document, up to
/// `documents.maxDocumentBytes` (its updates are far smaller).
pub fn message_limits(cfg: &GatewayConfig) -> Vec<Carried> {
    cfg.routes
        .iter()
        .filter_map(|r| {
            let rooms = r.rooms.as_ref()?;
            let (what, bytes) = match (&rooms.protocol, &rooms.documents) {
                (RoomProtocol::Yjs, Some(d)) => {
                    (CarriedKind::DocumentSnapshot, d.max_document_bytes)
                }
                (RoomProtocol::Yjs, None) => return None,
                _ => (CarriedKind::RoomMessage, r.limits.max_message_bytes),
            };
            Some(Carried {
                route: r.name.clone(),
                what,
                bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_namespaces_are_not_room_namespaces() {
        // The publish API and the bus serve room namespaces: a publish into a documents one
        // was acknowledged and reached no editor (documents have their own API).
        let cfg = GatewayConfig::from_yaml(
            "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\n\
             listeners: [{name: public, address: '127.0.0.1:8080'}]\n\
             routes: [{name: d, path: {value: /d}, mode: rooms, rooms: {protocol: yjs, pathRoom: '/d/{room}'}},\
                      {name: chat, path: {value: /chat}, mode: rooms, rooms: {}}]",
        )
        .unwrap();
        let names: Vec<String> = namespaces(&cfg).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["chat"]);
    }

    #[test]
    fn a_connection_keeps_only_the_claims_its_room_patterns_name() {
        let cfg: Rooms =
            serde_json::from_value(json!({"join": ["team:{org}:*", "user:{sub}"]})).unwrap();
        let policy = RoomsPolicy::new("chat", &cfg).unwrap();
        let raw = json!({"sub": "alice", "org": "acme", "iss": "https://issuer", "aud": "chat",
                         "iat": 1, "exp": 2});
        let claims = Claims {
            sub: Some("alice".into()),
            exp: Some(2),
            raw: raw.as_object().unwrap().clone(),
        };
        let kept = policy.session_claims(claims);
        assert_eq!(kept.raw.keys().collect::<Vec<_>>(), ["org"]);
        assert_eq!((kept.sub.as_deref(), kept.exp), (Some("alice"), Some(2)));
        // Authorization reads the same as with the whole token.
        assert!(policy.may_join("team:acme:general", Some(&kept)));
        assert!(policy.may_join("user:alice", Some(&kept)));
        assert!(!policy.may_join("team:other:general", Some(&kept)));
        assert!(!policy.may_join("user:bob", Some(&kept)));
    }

    #[test]
    fn a_sub_that_is_not_a_string_is_kept_with_the_claims() {
        let cfg: Rooms = serde_json::from_value(json!({"join": ["user:{sub}"]})).unwrap();
        let policy = RoomsPolicy::new("chat", &cfg).unwrap();
        let raw = json!({"sub": 42, "iss": "https://issuer"});
        let claims = Claims {
            sub: None,
            exp: None,
            raw: raw.as_object().unwrap().clone(),
        };
        let kept = policy.session_claims(claims);
        assert_eq!(kept.raw.keys().collect::<Vec<_>>(), ["sub"]);
        assert!(policy.may_join("user:42", Some(&kept)));
    }
}
