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

/// `message`: encoded once per pod per message.
pub fn message(m: &RoomMessage) -> String {
    let mut v = json!({
        "type": "message",
        "room": m.key.room,
        "seq": m.seq,
        "epoch": m.epoch,
        "ts": m.ts_ms,
    });
    let obj = v.as_object_mut().expect("json! object literal");
    if let Some(from) = &m.from {
        obj.insert("from".into(), from.clone());
    }
    if m.ephemeral {
        obj.insert("ephemeral".into(), true.into());
    }
    match &m.data {
        Payload::Json(d) => obj.insert("data".into(), d.clone()),
        Payload::Binary(b) => obj.insert(
            "b64".into(),
            base64::engine::general_purpose::STANDARD.encode(b).into(),
        ),
        Payload::Text(t) => obj.insert("data".into(), t.clone().into()),
    };
    v.to_string()
}

pub fn joined(room: &str, recovered: bool, position: &Position, id: Option<&str>) -> String {
    with_id(
        json!({"type": "joined", "room": room, "recovered": recovered, "position": position}),
        id,
    )
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
mod tests {
    use super::*;

    #[test]
    fn every_client_message_type_parses() {
        assert!(matches!(
            parse(r#"{"type":"join","room":"a","id":"1"}"#),
            Ok(ClientMsg::Join { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"join","room":"a","since":{"seq":4,"epoch":"e"}}"#),
            Ok(ClientMsg::Join {
                since: Some(Position { seq: 4, .. }),
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"leave","room":"a"}"#),
            Ok(ClientMsg::Leave { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"publish","room":"a","data":{"x":1},"ephemeral":true}"#),
            Ok(ClientMsg::Publish {
                ephemeral: true,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"presence","room":"a"}"#),
            Ok(ClientMsg::Presence { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"ping"}"#),
            Ok(ClientMsg::Ping { .. })
        ));
    }

    #[test]
    fn malformed_messages_are_errors_with_a_reason() {
        for bad in [
            "",
            "nope",
            "[]",
            r#"{"type":"join"}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"join","room":"a","x":1}"#,
            r#"{"type":"join","room":5}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.0.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn the_id_of_a_bad_message_is_still_echoed() {
        assert_eq!(
            loose_id(r#"{"type":"dance","id":"7"}"#).as_deref(),
            Some("7")
        );
        assert_eq!(loose_id("garbage"), None);
    }

    #[test]
    fn binary_payloads_round_trip_through_base64() {
        let p = payload(None, Some("AAEC/w==".into())).unwrap();
        assert_eq!(p, Payload::Binary(vec![0, 1, 2, 255].into()));
        assert!(payload(None, Some("***".into())).is_err());
        assert!(payload(None, None).is_err());
    }

    #[test]
    fn messages_carry_room_position_time_publisher_and_data() {
        let m = RoomMessage {
            key: super::super::bus::RoomKey {
                namespace: "n".into(),
                room: "r".into(),
            },
            seq: 7,
            epoch: "e".into(),
            ts_ms: 1,
            from: Some(json!({"sub": "alice"})),
            data: Payload::Json(json!({"hi": true})),
            ephemeral: false,
            origin_conn: None,
        };
        let v: Value = serde_json::from_str(&message(&m)).unwrap();
        assert_eq!(
            v,
            json!({"type":"message","room":"r","seq":7,"epoch":"e","ts":1,"from":{"sub":"alice"},"data":{"hi":true}})
        );
    }

    #[test]
    fn lost_names_the_missed_range_and_the_ephemeral_count() {
        let p = |seq| Position {
            seq,
            epoch: "e".into(),
        };
        let v: Value = serde_json::from_str(&lost("r", Some((&p(4), &p(9))), 2)).unwrap();
        assert_eq!(
            v,
            json!({"type":"lost","room":"r","from":{"seq":4,"epoch":"e"},"to":{"seq":9,"epoch":"e"},"ephemeral":2})
        );
        let v: Value = serde_json::from_str(&lost("r", None, 3)).unwrap();
        assert_eq!(v, json!({"type":"lost","room":"r","ephemeral":3}));
    }

    #[test]
    fn replies_echo_the_client_id() {
        let v: Value = serde_json::from_str(&error(Some("9"), ErrorCode::Forbidden, "no")).unwrap();
        assert_eq!(v["id"], "9");
        assert_eq!(v["code"], "forbidden");
    }
}
