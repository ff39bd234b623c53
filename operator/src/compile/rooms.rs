//! `spec.rooms` -> the gateway's `rooms` section: room patterns, the rooms namespace, raw
//! rooms' path, history, hooks and queue bounds.

use serde_json::json;
use switchboard_config::{
    Documents, History, Hook, PathMatch as ConfigPathMatch, RoomProtocol as ConfigRoomProtocol,
    Rooms as ConfigRooms,
};

use crate::api::{Mode, RealtimeRoute, RoomDocuments, RoomHook, RoomProtocol};

use super::paths::path_room_problem;
use super::problems::{Problems, from_wire};

/// Why `pattern` is not a room pattern, if it is not one: the schema's length bound, then the
/// gateway's own grammar ([`switchboard_config::room::Pattern`], the one parser the config
/// validator and the gateway's rooms authorization use), checked here so a bad pattern is
/// refused on its route instead of breaking the snapshot.
pub fn room_pattern_problem(pattern: &str) -> Option<String> {
    if pattern.len() > 256 {
        return Some("at most 256 characters".into());
    }
    switchboard_config::room::Pattern::parse(pattern).err()
}

/// The rooms namespace the gateways see for a route in mode `rooms`:
/// `<metadata.namespace>_<spec.rooms.namespace>`, by default `<metadata.namespace>_<name>`
/// with dots as `_`. Prefixing the Kubernetes namespace keeps tenants' rooms apart whatever
/// they name their namespaces; `_` cannot occur in a Kubernetes namespace, so the prefix is
/// unambiguous.
pub fn rooms_namespace(rt: &RealtimeRoute) -> Option<String> {
    if rt.spec.mode != Mode::Rooms {
        return None;
    }
    let ns = rt.metadata.namespace.as_deref().unwrap_or_default();
    let own = match rt.spec.rooms.as_ref().and_then(|r| r.namespace.as_ref()) {
        Some(n) => n.clone(),
        None => rt
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .replace('.', "_"),
    };
    Some(format!("{ns}_{own}"))
}

fn compile_hook(at: &str, hook: &RoomHook, p: &mut Problems) -> Option<Hook> {
    let mut out: Hook = from_wire(json!({"url": hook.url}), at, p)?;
    if let Some(t) = p.duration(&format!("{at}.timeout"), &hook.timeout) {
        if t.is_zero() {
            p.push(format!("{at}.timeout"), "must be more than 0s");
        } else {
            out.timeout = t;
        }
    }
    Some(out)
}

/// The gateway's `rooms` section for a route in mode `rooms` (unset `spec.rooms`: all the
/// gateway's defaults, i.e. JSON protocol and default deny).
pub(super) fn compile_rooms(
    rt: &RealtimeRoute,
    path: &ConfigPathMatch,
    p: &mut Problems,
) -> Option<ConfigRooms> {
    let at = "spec.rooms";
    let r = rt.spec.rooms.clone().unwrap_or_default();
    let protocol = r.protocol;
    let raw = protocol == RoomProtocol::Raw;
    let by_path = protocol != RoomProtocol::Json;
    for (what, list) in [("join", &r.join), ("publish", &r.publish)] {
        if list.len() > 32 {
            p.push(format!("{at}.{what}"), "at most 32 patterns");
        }
        for (i, pattern) in list.iter().enumerate() {
            if let Some(why) = room_pattern_problem(pattern) {
                p.push(format!("{at}.{what}[{i}]"), why);
            }
        }
    }
    if let Some(ns) = &r.namespace
        && (ns.is_empty()
            || ns.len() > 63
            || !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)))
    {
        p.push(format!("{at}.namespace"), "1-63 of A-Z a-z 0-9 _ -");
    }
    match &r.path_room {
        None if by_path => p.push(
            format!("{at}.pathRoom"),
            "protocols raw and yjs need pathRoom, a path with one {room} segment such as /collab/{room}",
        ),
        Some(_) if !by_path => p.push(
            format!("{at}.pathRoom"),
            "only used with protocols raw and yjs (JSON rooms name their rooms in join messages)",
        ),
        Some(pr) => {
            if let Some(why) = path_room_problem(pr, path) {
                p.push(format!("{at}.pathRoom"), why);
            }
        }
        None => {}
    }
    if r.documents.is_some() && protocol != RoomProtocol::Yjs {
        p.push(format!("{at}.documents"), "only used with protocol yjs");
    }
    if r.echo.is_some() && !raw {
        p.push(format!("{at}.echo"), "only used with protocol raw");
    }
    if r.publish_hook.is_some() && by_path {
        p.push(
            format!("{at}.publishHook"),
            "not called for raw or yjs rooms (their messages are relayed unchanged); remove it or use protocol json",
        );
    }

    let mut rooms: ConfigRooms = from_wire(json!({}), at, p)?;
    rooms.protocol = match protocol {
        RoomProtocol::Json => ConfigRoomProtocol::Json,
        RoomProtocol::Raw => ConfigRoomProtocol::Raw,
        RoomProtocol::Yjs => ConfigRoomProtocol::Yjs,
    };
    rooms.path_room = r.path_room.clone();
    rooms.echo = r.echo.unwrap_or(false);
    rooms.namespace = rooms_namespace(rt);
    rooms.join = r.join.clone();
    rooms.publish = r.publish.clone();
    if let Some(h) = &r.history {
        let hat = format!("{at}.history");
        let mut history: History = from_wire(json!({}), &hat, p)?;
        if let Some(m) = h.max_messages {
            match u32::try_from(m) {
                Ok(n) if (1..=100_000).contains(&n) => history.max_messages = n,
                _ => p.push(
                    format!("{hat}.maxMessages"),
                    format!("must be 1-100000, got {m}"),
                ),
            }
        }
        if let Some(b) = h.max_bytes {
            match u64::try_from(b) {
                Ok(n) if n >= switchboard_config::MIN_HISTORY_BYTES => history.max_bytes = Some(n),
                _ => p.push(
                    format!("{hat}.maxBytes"),
                    format!(
                        "must be at least {}, got {b}",
                        switchboard_config::MIN_HISTORY_BYTES
                    ),
                ),
            }
        }
        if let Some(age) = p.duration(&format!("{hat}.maxAge"), &h.max_age) {
            if age.is_zero() {
                p.push(format!("{hat}.maxAge"), "must be more than 0s");
            } else {
                history.max_age = age;
            }
        }
        rooms.history = Some(history);
    }
    rooms.presence = r.presence.unwrap_or(false);
    if let Some(q) = r.max_queue_bytes {
        match u64::try_from(q) {
            Ok(n) if (4096..=1 << 30).contains(&n) => rooms.max_queue_bytes = n,
            _ => p.push(
                format!("{at}.maxQueueBytes"),
                format!("must be 4096-1073741824, got {q}"),
            ),
        }
    }
    rooms.publish_hook = r
        .publish_hook
        .as_ref()
        .and_then(|h| compile_hook(&format!("{at}.publishHook"), h, p));
    rooms.notify = r
        .notify
        .as_ref()
        .and_then(|h| compile_hook(&format!("{at}.notify"), h, p));
    rooms.notify_nats = r.notify_nats.unwrap_or(false);
    compile_chat(&r, by_path, at, &mut rooms, p);
    if let Some(d) = &r.documents {
        rooms.documents = compile_documents(&format!("{at}.documents"), d, p);
    }
    Some(rooms)
}

/// `receipts`, `batch`, `offline` (JSON rooms only).
fn compile_chat(
    r: &crate::api::Rooms,
    by_path: bool,
    at: &str,
    rooms: &mut ConfigRooms,
    p: &mut Problems,
) {
    let patterns = |list: &[String], what: &str, p: &mut Problems| {
        for (i, pattern) in list.iter().enumerate() {
            if let Some(why) = room_pattern_problem(pattern) {
                p.push(format!("{at}.{what}[{i}]"), why);
            }
        }
    };
    for (what, set) in [
        ("receipts", r.receipts.is_some()),
        ("batch", r.batch.is_some()),
        ("offline", r.offline.is_some()),
    ] {
        if set && by_path {
            p.push(format!("{at}.{what}"), "only used with protocol json");
        }
    }
    if let Some(rc) = &r.receipts {
        patterns(&rc.rooms, "receipts.rooms", p);
        let mut out: switchboard_config::Receipts =
            match from_wire(json!({"rooms": rc.rooms}), &format!("{at}.receipts"), p) {
                Some(o) => o,
                None => return,
            };
        if let Some(i) = p.duration(&format!("{at}.receipts.interval"), &rc.interval) {
            if i.is_zero() || i > std::time::Duration::from_secs(3600) {
                p.push(
                    format!("{at}.receipts.interval"),
                    "must be more than 0s and at most 1h",
                );
            } else {
                out.interval = i;
            }
        }
        rooms.receipts = Some(out);
    }
    if let Some(b) = &r.batch {
        patterns(&b.rooms, "batch.rooms", p);
        let mut out: switchboard_config::Batch =
            match from_wire(json!({"rooms": b.rooms}), &format!("{at}.batch"), p) {
                Some(o) => o,
                None => return,
            };
        if let Some(w) = p.duration(&format!("{at}.batch.window"), &b.window) {
            if w.is_zero() || w > std::time::Duration::from_secs(60) {
                p.push(
                    format!("{at}.batch.window"),
                    "must be more than 0s and at most 1m",
                );
            } else {
                out.window = w;
            }
        }
        if let Some(m) = b.max_messages {
            match u32::try_from(m) {
                Ok(n) if (1..=1000).contains(&n) => out.max_messages = n,
                _ => p.push(
                    format!("{at}.batch.maxMessages"),
                    format!("must be 1-1000, got {m}"),
                ),
            }
        }
        out.group_by = b.group_by.clone();
        rooms.batch = Some(out);
    }
    if let Some(o) = &r.offline {
        for (i, pattern) in o.rooms.iter().enumerate() {
            let bad = match switchboard_config::room::Pattern::parse(pattern) {
                Err(e) => Some(e),
                Ok(parsed) if parsed.user_affixes().is_none() => Some(format!(
                    "`{pattern}`: a user room pattern has exactly one `{{sub}}` and no `*` or other claim"
                )),
                Ok(_) => None,
            };
            if let Some(why) = bad {
                p.push(format!("{at}.offline.rooms[{i}]"), why);
            }
        }
        rooms.offline = Some(switchboard_config::Offline {
            rooms: o.rooms.clone(),
            notify: o
                .notify
                .as_ref()
                .and_then(|h| compile_hook(&format!("{at}.offline.notify"), h, p)),
            notify_nats: o.notify_nats.unwrap_or(false),
        });
    }
}

/// `spec.rooms.documents` -> the gateway's `rooms.documents` (unset fields: its defaults).
fn compile_documents(at: &str, d: &RoomDocuments, p: &mut Problems) -> Option<Documents> {
    let mut out: Documents = from_wire(json!({}), at, p)?;
    let mut bytes = |field: &str, v: Option<i64>, max: u64, slot: &mut u64| {
        if let Some(n) = v {
            match u64::try_from(n) {
                Ok(n) if (1..=max).contains(&n) => *slot = n,
                _ => p.push(format!("{at}.{field}"), format!("must be 1-{max}, got {n}")),
            }
        }
    };
    bytes(
        "maxUpdateBytes",
        d.max_update_bytes,
        64 << 20,
        &mut out.max_update_bytes,
    );
    bytes(
        "maxDocumentBytes",
        d.max_document_bytes,
        1 << 30,
        &mut out.max_document_bytes,
    );
    if out.max_update_bytes > out.max_document_bytes {
        p.push(
            format!("{at}.maxUpdateBytes"),
            "must be at most maxDocumentBytes",
        );
    }
    if let Some(n) = d.compact_after_updates {
        match u32::try_from(n) {
            Ok(n) if (1..=1_000_000).contains(&n) => out.compact_after_updates = n,
            _ => p.push(
                format!("{at}.compactAfterUpdates"),
                format!("must be 1-1000000, got {n}"),
            ),
        }
    }
    if let Some(idle) = p.duration(&format!("{at}.idleUnload"), &d.idle_unload) {
        out.idle_unload = idle;
    }
    out.notify = d
        .notify
        .as_ref()
        .and_then(|h| compile_hook(&format!("{at}.notify"), h, p));
    out.notify_nats = d.notify_nats.unwrap_or(false);
    if let Some(w) = p.duration(&format!("{at}.notifyDebounce"), &d.notify_debounce) {
        out.notify_debounce = w;
    }
    if (out.notify.is_some() || out.notify_nats)
        && (out.notify_debounce.is_zero() || out.notify_debounce >= out.idle_unload)
    {
        p.push(
            format!("{at}.notifyDebounce"),
            "must be more than 0s and shorter than idleUnload",
        );
    }
    Some(out)
}
