//! The Switchboard room protocol v1 (`docs/protocol.md`): JSON text frames. Client messages
//! are parsed strictly (a bad one gets an `error` reply, never a crash); server messages are
//! encoded once per pod and shared by every member that receives them.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::bus::{Member, Payload, Position, RoomMessage};

/// The WebSocket subprotocol naming this protocol version.
pub const SUBPROTOCOL: &str = "switchboard.v1";

/// A message from a client (`Serialize` is what a client sends: the reference client and the
/// property tests encode with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientMsg {
    Join {
        room: String,
        #[serde(default)]
        since: Option<Position>,
        #[serde(default)]
        id: Option<String>,
    },
    Leave {
        room: String,
        #[serde(default)]
        id: Option<String>,
    },
    Publish {
        room: String,
        #[serde(default)]
        data: Option<Value>,
        /// Binary payload, base64 (standard alphabet).
        #[serde(default)]
        b64: Option<String>,
        /// Binary payload as bytes: the binary encoding's (`proto`), never in JSON.
        #[serde(skip)]
        bin: Option<bytes::Bytes>,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        ephemeral: bool,
    },
    Presence {
        room: String,
        #[serde(default)]
        id: Option<String>,
    },
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
    /// Mark `room` read up to `position` (read receipts, routes with `rooms.receipts`).
    Read {
        room: String,
        position: Position,
        #[serde(default)]
        id: Option<String>,
    },
}

/// A member's read state in a room, as `joined` reports it (read receipts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadState {
    /// The user's read position; `None`: the user never marked the room read.
    pub position: Option<Position>,
    /// Stored messages after it that the user did not publish, counted in retained history.
    pub unread: u64,
}

/// Error codes in `error` replies (stable; see docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    NotJoined,
    Rejected,
    Unavailable,
    TooLarge,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::NotJoined => "not_joined",
            Self::Rejected => "rejected",
            Self::Unavailable => "unavailable",
            Self::TooLarge => "too_large",
        }
    }
}

/// Deepest nesting of a message's JSON `data` (`[[1]]` is 2) that clients may publish, by
/// any path: what a text frame's parser admits (serde_json's 128-level bound less the
/// frame's own levels). The bus's envelope holds `data` no deeper, so every message a client
/// may publish is one the bus reads back; the binary encoding, which parses `json` alone,
/// checks it explicitly.
pub const MAX_DATA_DEPTH: usize = 126;

/// How deeply `v` nests (a scalar is 0). Iterative: no recursion on client data.
pub fn data_depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// Why a client's text frame is not a protocol message: the reason of its `bad_request` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub String);

/// Parse one text frame.
pub fn parse(text: &str) -> Result<ClientMsg, BadMessage> {
    serde_json::from_str(text).map_err(|e| {
        let e = e.to_string();
        // serde's messages name the bad field or type; trim position noise.
        BadMessage(e.split(" at line ").next().unwrap_or(&e).to_string())
    })
}

/// The client's message id, if it can be read even from an otherwise bad message.
pub fn loose_id(text: &str) -> Option<String> {
    serde_json::from_str::<Value>(text)
        .ok()?
        .get("id")?
        .as_str()
        .map(str::to_string)
}

impl ClientMsg {
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Join { id, .. }
            | Self::Leave { id, .. }
            | Self::Publish { id, .. }
            | Self::Presence { id, .. }
            | Self::Read { id, .. }
            | Self::Ping { id } => id.as_deref(),
        }
    }
}

/// Decode a publish's payload.
pub fn payload(data: Option<Value>, b64: Option<String>) -> Result<Payload, String> {
    match (data, b64) {
        (Some(d), None) => Ok(Payload::Json(d)),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map(|v| Payload::Binary(v.into()))
            .map_err(|_| "b64 is not valid base64".to_string()),
        (None, None) => Err("publish needs `data` or `b64`".into()),
        (Some(_), Some(_)) => Err("publish takes `data` or `b64`, not both".into()),
    }
}

fn with_id(mut v: Value, id: Option<&str>) -> String {
    if let (Some(id), Some(obj)) = (id, v.as_object_mut()) {
        obj.insert("id".into(), id.into());
    }
    v.to_string()
}

/// A `message` as JSON, serialized straight from the message's borrowed fields (no `Value`
/// tree, no copy of the payload). The fields are in sorted order, the order the `Value` tree
/// this replaced gave them (serde_json's maps sort their keys).
#[derive(Serialize)]
struct MessageJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<MessageData<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ephemeral: bool,
    epoch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a Value>,
    room: &'a str,
    seq: u64,
    ts: u64,
    r#type: &'static str,
}

/// The `data` of a `message`: a JSON payload, or a raw-relay text as a JSON string.
#[derive(Serialize)]
#[serde(untagged)]
enum MessageData<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl<'a> MessageJson<'a> {
    fn of(m: &'a RoomMessage) -> Self {
        let (b64, data) = match &m.data {
            Payload::Json(d) => (None, Some(MessageData::Json(d))),
            Payload::Binary(b) => (
                Some(base64::engine::general_purpose::STANDARD.encode(b)),
                None,
            ),
            Payload::Text(t) => (None, Some(MessageData::Text(t))),
        };
        Self {
            b64,
            data,
            ephemeral: m.ephemeral,
            epoch: &m.epoch,
            from: m.from.as_ref(),
            room: &m.key.room,
            seq: m.seq,
            ts: m.ts_ms,
            r#type: "message",
        }
    }
}

/// `message`: encoded once per pod per message.
pub fn message(m: &RoomMessage) -> String {
    // Serializing strings, integers and JSON values cannot fail.
    serde_json::to_string(&MessageJson::of(m)).unwrap_or_default()
}

pub fn joined(
    room: &str,
    recovered: bool,
    position: &Position,
    read: Option<&ReadState>,
    id: Option<&str>,
) -> String {
    /// The reply as the `Value` tree gave it (serde_json's maps sort their keys), serialized
    /// straight from borrowed fields: every connection that joins its user room gets one, so
    /// no tree is built for it.
    #[derive(Serialize)]
    struct At<'a> {
        epoch: &'a str,
        seq: u64,
    }
    #[derive(Serialize)]
    struct Joined<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        position: At<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        read: Option<Option<At<'a>>>,
        recovered: bool,
        room: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        unread: Option<u64>,
    }
    fn at(p: &Position) -> At<'_> {
        At {
            epoch: &p.epoch,
            seq: p.seq,
        }
    }
    let reply = Joined {
        id,
        position: at(position),
        read: read.map(|r| r.position.as_ref().map(at)),
        recovered,
        room,
        kind: "joined",
        unread: read.map(|r| r.unread),
    };
    // Infallible: strings, numbers and booleans only (no map with non-string keys).
    serde_json::to_string(&reply).unwrap_or_default()
}

/// `receipt`: `user` has read `room` up to `position` (sent to the room's members).
pub fn receipt(room: &str, user: &str, position: &Position) -> String {
    json!({"type": "receipt", "room": room, "user": user, "position": position}).to_string()
}

/// `batch`: messages of `room` delivered together (batched rooms). `groups` in the order of
/// their first message, each `(key, messages)`; the key is the `groupBy` field's value (`None`
/// without `groupBy`, or for messages without the field).
pub fn batch(room: &str, groups: &[(Option<String>, Vec<&RoomMessage>)]) -> String {
    let groups: Vec<Value> = groups
        .iter()
        .map(|(key, msgs)| {
            let messages: Vec<MessageJson<'_>> = msgs.iter().map(|m| MessageJson::of(m)).collect();
            json!({"key": key, "messages": messages})
        })
        .collect();
    json!({"type": "batch", "room": room, "groups": groups}).to_string()
}

/// `lost`: messages of `room` this member did not get and will not get (the pod fell behind and
/// history could not repair it): every stored message with `from.seq <= seq <= to.seq` (in that
/// epoch) when `range` is given, and `ephemeral` messages without a position.
pub fn lost(room: &str, range: Option<(&Position, &Position)>, ephemeral: u64) -> String {
    let mut v = json!({"type": "lost", "room": room, "ephemeral": ephemeral});
    if let (Some((from, to)), Some(obj)) = (range, v.as_object_mut()) {
        obj.insert("from".into(), json!(from));
        obj.insert("to".into(), json!(to));
    }
    v.to_string()
}

pub fn left(room: &str, id: Option<&str>) -> String {
    with_id(json!({"type": "left", "room": room}), id)
}

pub fn ack(id: Option<&str>, position: Option<&Position>) -> String {
    let mut v = json!({"type": "ack"});
    if let (Some(p), Some(obj)) = (position, v.as_object_mut()) {
        obj.insert("seq".into(), p.seq.into());
        obj.insert("epoch".into(), p.epoch.clone().into());
    }
    with_id(v, id)
}

pub fn error(id: Option<&str>, code: ErrorCode, reason: &str) -> String {
    with_id(
        json!({"type": "error", "code": code.as_str(), "reason": reason}),
        id,
    )
}

pub fn presence_event(room: &str, joined: bool, member: &Member) -> String {
    json!({"type": "presence", "room": room, "event": if joined {"join"} else {"leave"}, "member": member}).to_string()
}

pub fn presence_snapshot(room: &str, members: &[Member], id: Option<&str>) -> String {
    with_id(
        json!({"type": "presence", "room": room, "members": members}),
        id,
    )
}

pub fn pong(id: Option<&str>) -> String {
    with_id(json!({"type": "pong"}), id)
}

pub fn shutdown(reconnect_after_ms: u64) -> String {
    json!({"type": "shutdown", "reconnectAfterMs": reconnect_after_ms}).to_string()
}

#[cfg(test)]
mod tests;
