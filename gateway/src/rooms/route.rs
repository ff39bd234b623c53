//! A rooms route, compiled: namespace, authorization patterns, raw-room path pattern.

use switchboard_config::{GatewayConfig, RoomProtocol, Rooms};

use std::sync::Arc;
use std::time::Duration;

use super::authz::{self, Pattern};
use super::batch::{BatchCfg, BatchRule};
use super::bus::{Retention, RoomKey};
use crate::auth::jwt::Claims;

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
        Ok(Self {
            namespace: cfg
                .namespace
                .clone()
                .unwrap_or_else(|| route_name.to_string()),
            join: parse(&cfg.join, "join")?,
            publish: parse(&cfg.publish, "publish")?,
            receipts: parse(
                cfg.receipts.as_ref().map_or(&[][..], |r| &r.rooms),
                "receipts.rooms",
            )?,
            batch: parse(
                cfg.batch.as_ref().map_or(&[][..], |b| &b.rooms),
                "batch.rooms",
            )?,
            offline: parse(
                cfg.offline.as_ref().map_or(&[][..], |o| &o.rooms),
                "offline.rooms",
            )?,
            raw_path,
            cfg: cfg.clone(),
        })
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

/// Every rooms namespace of `cfg` and its retention (the first route naming a namespace sets it).
pub fn namespaces(cfg: &GatewayConfig) -> Vec<(String, Option<Retention>)> {
    let mut out: Vec<(String, Option<Retention>)> = Vec::new();
    for r in &cfg.routes {
        if let Some(rooms) = &r.rooms {
            let ns = rooms.namespace.clone().unwrap_or_else(|| r.name.clone());
            let retention = rooms.history.as_ref().map(|h| Retention {
                max_messages: h.max_messages,
                max_age: h.max_age,
            });
            if !out.iter().any(|(n, _)| *n == ns) {
                out.push((ns, retention));
            }
        }
    }
    out
}
