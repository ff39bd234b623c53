//! The binary encoding of room protocol v1 (subprotocol [`SUBPROTOCOL`]): Protocol Buffers
//! messages defined in `gateway/proto/switchboard/v1/rooms.proto`, one per binary frame.
//!
//! The types below are written by hand with `prost`'s derives to match that file field for
//! field (no `protoc` at build time); the Node test in `e2e/proto` encodes and decodes every
//! message with `protobufjs` from the committed `.proto` against a live gateway, which is what
//! keeps the two in step.
//!
//! Semantics are those of the JSON encoding ([`super::protocol`]): a client message decodes to
//! the same [`ClientMsg`]; replies are built as JSON and translated by [`from_json`] (one
//! connection's replies, never fanned out); room messages and presence events, which are fanned
//! out, are encoded once per pod for all binary members ([`message`], [`encode`]).

use base64::Engine;
use bytes::Bytes;
use prost::Message as _;
use serde_json::{Value, json};

use super::bus::{Payload, Position as BusPosition, RoomMessage as BusMessage};
use super::protocol::{self, BadMessage, ClientMsg};

/// The WebSocket subprotocol of the binary encoding.
pub const SUBPROTOCOL: &str = "switchboard.v1.proto";

#[derive(Clone, PartialEq, prost::Message)]
pub struct Position {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub epoch: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientMessage {
    #[prost(string, optional, tag = "1")]
    pub id: Option<String>,
    #[prost(oneof = "client_message::Kind", tags = "2, 3, 4, 5, 6, 7")]
    pub kind: Option<client_message::Kind>,
}

pub mod client_message {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "2")]
        Join(super::Join),
        #[prost(message, tag = "3")]
        Leave(super::Leave),
        #[prost(message, tag = "4")]
        Publish(super::Publish),
        #[prost(message, tag = "5")]
        Presence(super::PresenceQuery),
        #[prost(message, tag = "6")]
        Ping(super::Ping),
        #[prost(message, tag = "7")]
        Read(super::Read),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Join {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(message, optional, tag = "2")]
    pub since: Option<Position>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Leave {
    #[prost(string, tag = "1")]
    pub room: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Publish {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(oneof = "publish::Payload", tags = "2, 3")]
    pub payload: Option<publish::Payload>,
    #[prost(bool, tag = "4")]
    pub ephemeral: bool,
}

pub mod publish {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Payload {
        #[prost(bytes = "bytes", tag = "2")]
        Json(bytes::Bytes),
        #[prost(bytes = "bytes", tag = "3")]
        Binary(bytes::Bytes),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PresenceQuery {
    #[prost(string, tag = "1")]
    pub room: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Read {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(message, optional, tag = "2")]
    pub position: Option<Position>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMessage {
    #[prost(string, optional, tag = "1")]
    pub id: Option<String>,
    #[prost(
        oneof = "server_message::Kind",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12"
    )]
    pub kind: Option<server_message::Kind>,
}

pub mod server_message {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "2")]
        Message(super::RoomMessage),
        #[prost(message, tag = "3")]
        Joined(super::Joined),
        #[prost(message, tag = "4")]
        Left(super::Left),
        #[prost(message, tag = "5")]
        Ack(super::Ack),
        #[prost(message, tag = "6")]
        Error(super::Error),
        #[prost(message, tag = "7")]
        Presence(super::Presence),
        #[prost(message, tag = "8")]
        Pong(super::Pong),
        #[prost(message, tag = "9")]
        Shutdown(super::Shutdown),
        #[prost(message, tag = "10")]
        Lost(super::Lost),
        #[prost(message, tag = "11")]
        Receipt(super::Receipt),
        #[prost(message, tag = "12")]
        Batch(super::Batch),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Publisher {
    #[prost(string, tag = "1")]
    pub sub: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomMessage {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(string, tag = "3")]
    pub epoch: String,
    #[prost(uint64, tag = "4")]
    pub ts: u64,
    #[prost(message, optional, tag = "5")]
    pub from: Option<Publisher>,
    #[prost(bool, tag = "6")]
    pub ephemeral: bool,
    #[prost(oneof = "room_message::Payload", tags = "7, 8, 9")]
    pub payload: Option<room_message::Payload>,
}

pub mod room_message {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Payload {
        #[prost(bytes = "bytes", tag = "7")]
        Json(bytes::Bytes),
        #[prost(bytes = "bytes", tag = "8")]
        Binary(bytes::Bytes),
        #[prost(string, tag = "9")]
        Text(String),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Joined {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(bool, tag = "2")]
    pub recovered: bool,
    #[prost(message, optional, tag = "3")]
    pub position: Option<Position>,
    #[prost(message, optional, tag = "4")]
    pub read: Option<Position>,
    #[prost(uint64, optional, tag = "5")]
    pub unread: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Left {
    #[prost(string, tag = "1")]
    pub room: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(message, optional, tag = "1")]
    pub position: Option<Position>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Member {
    #[prost(string, tag = "1")]
    pub conn: String,
    #[prost(string, optional, tag = "2")]
    pub user: Option<String>,
    #[prost(bytes = "bytes", tag = "3")]
    pub info: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Presence {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(string, tag = "2")]
    pub event: String,
    #[prost(message, optional, tag = "3")]
    pub member: Option<Member>,
    #[prost(message, repeated, tag = "4")]
    pub members: Vec<Member>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Shutdown {
    #[prost(uint64, tag = "1")]
    pub reconnect_after_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Lost {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(message, optional, tag = "2")]
    pub from: Option<Position>,
    #[prost(message, optional, tag = "3")]
    pub to: Option<Position>,
    #[prost(uint64, tag = "4")]
    pub ephemeral: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Receipt {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(message, optional, tag = "3")]
    pub position: Option<Position>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(message, repeated, tag = "2")]
    pub groups: Vec<BatchGroup>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchGroup {
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<RoomMessage>,
}

fn bad(reason: impl Into<String>) -> BadMessage {
    BadMessage(reason.into())
}

/// Decode one binary frame from a client. The error carries the message's id when the frame
/// decoded that far, so the `bad_request` reply can echo it.
pub fn decode_client(frame: &[u8]) -> Result<ClientMsg, (Option<String>, BadMessage)> {
    let m = ClientMessage::decode(frame)
        .map_err(|e| (None, bad(format!("not a ClientMessage: {e}"))))?;
    let id = m.id;
    let Some(kind) = m.kind else {
        return Err((id, bad("ClientMessage has no kind")));
    };
    use client_message::Kind;
    Ok(match kind {
        Kind::Join(j) => ClientMsg::Join {
            room: j.room,
            since: j.since.map(|p| BusPosition {
                seq: p.seq,
                epoch: p.epoch,
            }),
            id,
        },
        Kind::Leave(l) => ClientMsg::Leave { room: l.room, id },
        Kind::Presence(p) => ClientMsg::Presence { room: p.room, id },
        Kind::Ping(_) => ClientMsg::Ping { id },
        Kind::Read(r) => {
            let Some(p) = r.position else {
                return Err((id, bad("read needs a position")));
            };
            ClientMsg::Read {
                room: r.room,
                position: BusPosition {
                    seq: p.seq,
                    epoch: p.epoch,
                },
                id,
            }
        }
        Kind::Publish(p) => {
            let (data, bin) = match p.payload {
                None => return Err((id, bad("publish needs `json` or `binary`"))),
                Some(publish::Payload::Json(j)) => match serde_json::from_slice::<Value>(&j) {
                    // As deep as a text frame's `data` may be (the bus reads no deeper).
                    Ok(v) if protocol::data_depth(&v) > protocol::MAX_DATA_DEPTH => {
                        return Err((
                            id,
                            bad(format!(
                                "json nests deeper than {} levels",
                                protocol::MAX_DATA_DEPTH
                            )),
                        ));
                    }
                    Ok(v) => (Some(v), None),
                    Err(e) => return Err((id, bad(format!("json is not JSON: {e}")))),
                },
                Some(publish::Payload::Binary(b)) => (None, Some(b)),
            };
            ClientMsg::Publish {
                room: p.room,
                data,
                b64: None,
                bin,
                id,
                ephemeral: p.ephemeral,
            }
        }
    })
}

/// Encode a client message (what a client sends; the reference test client uses it).
pub fn encode_client(m: &ClientMsg) -> Vec<u8> {
    use client_message::Kind;
    let pos = |p: &BusPosition| Position {
        seq: p.seq,
        epoch: p.epoch.clone(),
    };
    let (id, kind) = match m {
        ClientMsg::Join { room, since, id } => (
            id,
            Kind::Join(Join {
                room: room.clone(),
                since: since.as_ref().map(pos),
            }),
        ),
        ClientMsg::Leave { room, id } => (id, Kind::Leave(Leave { room: room.clone() })),
        ClientMsg::Presence { room, id } => {
            (id, Kind::Presence(PresenceQuery { room: room.clone() }))
        }
        ClientMsg::Ping { id } => (id, Kind::Ping(Ping {})),
        ClientMsg::Read { room, position, id } => (
            id,
            Kind::Read(Read {
                room: room.clone(),
                position: Some(pos(position)),
            }),
        ),
        ClientMsg::Publish {
            room,
            data,
            b64,
            bin,
            id,
            ephemeral,
        } => {
            let payload = if let Some(b) = bin {
                Some(publish::Payload::Binary(b.clone()))
            } else if let Some(b) = b64 {
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .ok()
                    .map(|v| publish::Payload::Binary(v.into()))
            } else {
                data.as_ref()
                    .map(|d| publish::Payload::Json(d.to_string().into()))
            };
            (
                id,
                Kind::Publish(Publish {
                    room: room.clone(),
                    payload,
                    ephemeral: *ephemeral,
                }),
            )
        }
    };
    ClientMessage {
        id: id.clone(),
        kind: Some(kind),
    }
    .encode_to_vec()
}

/// `message`: encoded once per pod per message for all binary members.
pub fn message(m: &BusMessage) -> Bytes {
    let payload = match &m.data {
        Payload::Json(v) => room_message::Payload::Json(v.to_string().into()),
        Payload::Binary(b) => room_message::Payload::Binary(b.clone()),
        Payload::Text(t) => room_message::Payload::Text(t.clone()),
    };
    let msg = RoomMessage {
        room: m.key.room.clone(),
        seq: m.seq,
        epoch: m.epoch.clone(),
        ts: m.ts_ms,
        from: publisher(m.from.as_ref()),
        ephemeral: m.ephemeral,
        payload: Some(payload),
    };
    encode(ServerMessage {
        id: None,
        kind: Some(server_message::Kind::Message(msg)),
    })
}

pub fn encode(m: ServerMessage) -> Bytes {
    m.encode_to_vec().into()
}

fn publisher(from: Option<&Value>) -> Option<Publisher> {
    let sub = from?.get("sub")?.as_str()?;
    Some(Publisher { sub: sub.into() })
}

fn position(v: &Value) -> Option<Position> {
    Some(Position {
        seq: v.get("seq")?.as_u64()?,
        epoch: v.get("epoch")?.as_str()?.to_string(),
    })
}

fn member(v: &Value) -> Member {
    let info = match v.get("info") {
        None | Some(Value::Null) => Bytes::new(),
        Some(i) => i.to_string().into(),
    };
    Member {
        conn: str_of(v, "conn"),
        user: v.get("user").and_then(Value::as_str).map(str::to_string),
        info,
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The binary form of a server message built as JSON by [`super::protocol`]; `None` for a
/// JSON value that is not one (a bug: the caller logs it).
pub fn from_json(v: &Value) -> Option<ServerMessage> {
    use server_message::Kind;
    let room = || str_of(v, "room");
    let kind = match v.get("type")?.as_str()? {
        "message" => Kind::Message(room_message_of(v)?),
        "joined" => Kind::Joined(Joined {
            room: room(),
            recovered: v.get("recovered")?.as_bool()?,
            position: position(v.get("position")?),
            read: v.get("read").and_then(position),
            unread: v.get("unread").and_then(Value::as_u64),
        }),
        "receipt" => Kind::Receipt(Receipt {
            room: room(),
            user: str_of(v, "user"),
            position: position(v.get("position")?),
        }),
        "batch" => Kind::Batch(Batch {
            room: room(),
            groups: v
                .get("groups")?
                .as_array()?
                .iter()
                .map(|g| {
                    Some(BatchGroup {
                        key: g.get("key").and_then(Value::as_str).map(str::to_string),
                        messages: g
                            .get("messages")?
                            .as_array()?
                            .iter()
                            .map(room_message_of)
                            .collect::<Option<Vec<_>>>()?,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        }),
        "left" => Kind::Left(Left { room: room() }),
        "ack" => Kind::Ack(Ack {
            position: position(v),
        }),
        "error" => Kind::Error(Error {
            code: str_of(v, "code"),
            reason: str_of(v, "reason"),
        }),
        "presence" => Kind::Presence(Presence {
            room: room(),
            event: str_of(v, "event"),
            member: v.get("member").map(member),
            members: v
                .get("members")
                .and_then(Value::as_array)
                .map(|ms| ms.iter().map(member).collect())
                .unwrap_or_default(),
        }),
        "pong" => Kind::Pong(Pong {}),
        "shutdown" => Kind::Shutdown(Shutdown {
            reconnect_after_ms: v.get("reconnectAfterMs")?.as_u64()?,
        }),
        "lost" => Kind::Lost(Lost {
            room: room(),
            from: v.get("from").and_then(position),
            to: v.get("to").and_then(position),
            ephemeral: v.get("ephemeral").and_then(Value::as_u64).unwrap_or(0),
        }),
        _ => return None,
    };
    Some(ServerMessage {
        id: v.get("id").and_then(Value::as_str).map(str::to_string),
        kind: Some(kind),
    })
}

/// A `message` JSON object's binary form.
fn room_message_of(v: &Value) -> Option<RoomMessage> {
    let payload = if let Some(b) = v.get("b64").and_then(Value::as_str) {
        room_message::Payload::Binary(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()?
                .into(),
        )
    } else {
        room_message::Payload::Json(v.get("data")?.to_string().into())
    };
    Some(RoomMessage {
        room: str_of(v, "room"),
        seq: v.get("seq")?.as_u64()?,
        epoch: str_of(v, "epoch"),
        ts: v.get("ts").and_then(Value::as_u64).unwrap_or(0),
        from: publisher(v.get("from")),
        ephemeral: v.get("ephemeral").and_then(Value::as_bool).unwrap_or(false),
        payload: Some(payload),
    })
}

/// Translate a JSON reply into its binary frame.
pub fn transcode(json: &str) -> Option<Bytes> {
    let v: Value = serde_json::from_str(json).ok()?;
    from_json(&v).map(encode)
}

/// The JSON form of a binary server message (a client that keeps one code path for both
/// encodings; the reference test client does). `message` payloads: `json` becomes `data`,
/// `binary` becomes `b64`, `text` becomes `data` as a string.
pub fn to_json(m: &ServerMessage) -> Value {
    use server_message::Kind;
    let pos = |p: &Position| json!({"seq": p.seq, "epoch": p.epoch});
    let member = |m: &Member| {
        let info = serde_json::from_slice::<Value>(&m.info).unwrap_or(Value::Null);
        json!({"conn": m.conn, "user": m.user, "info": info})
    };
    let mut v = match &m.kind {
        None => json!({}),
        Some(Kind::Message(r)) => room_message_json(r),
        Some(Kind::Joined(j)) => {
            let mut v = json!({"type": "joined", "room": j.room,
                "recovered": j.recovered, "position": j.position.as_ref().map(pos)});
            if let Some(unread) = j.unread {
                v["read"] = j.read.as_ref().map(pos).unwrap_or(Value::Null);
                v["unread"] = unread.into();
            }
            v
        }
        Some(Kind::Receipt(r)) => json!({"type": "receipt", "room": r.room, "user": r.user,
            "position": r.position.as_ref().map(pos)}),
        Some(Kind::Batch(b)) => {
            let groups: Vec<Value> = b
                .groups
                .iter()
                .map(|g| {
                    json!({"key": g.key,
                        "messages": g.messages.iter().map(room_message_json).collect::<Vec<_>>()})
                })
                .collect();
            json!({"type": "batch", "room": b.room, "groups": groups})
        }
        Some(Kind::Left(l)) => json!({"type": "left", "room": l.room}),
        Some(Kind::Ack(a)) => {
            let mut v = json!({"type": "ack"});
            if let Some(p) = &a.position {
                v["seq"] = p.seq.into();
                v["epoch"] = p.epoch.clone().into();
            }
            v
        }
        Some(Kind::Error(e)) => json!({"type": "error", "code": e.code, "reason": e.reason}),
        Some(Kind::Presence(p)) => {
            let mut v = json!({"type": "presence", "room": p.room});
            if p.event.is_empty() {
                v["members"] = p.members.iter().map(member).collect();
            } else {
                v["event"] = p.event.clone().into();
                v["member"] = p.member.as_ref().map(member).unwrap_or(Value::Null);
            }
            v
        }
        Some(Kind::Pong(_)) => json!({"type": "pong"}),
        Some(Kind::Shutdown(s)) => {
            json!({"type": "shutdown", "reconnectAfterMs": s.reconnect_after_ms})
        }
        Some(Kind::Lost(l)) => {
            let mut v = json!({"type": "lost", "room": l.room, "ephemeral": l.ephemeral});
            if let (Some(f), Some(t)) = (&l.from, &l.to) {
                v["from"] = pos(f);
                v["to"] = pos(t);
            }
            v
        }
    };
    if let (Some(id), Some(obj)) = (&m.id, v.as_object_mut()) {
        obj.insert("id".into(), id.clone().into());
    }
    v
}

/// The JSON form of a binary room message.
fn room_message_json(r: &RoomMessage) -> Value {
    let mut v = json!({"type": "message", "room": r.room, "seq": r.seq,                "epoch": r.epoch, "ts": r.ts});
    if let Some(f) = &r.from {
        v["from"] = json!({"sub": f.sub});
    }
    if r.ephemeral {
        v["ephemeral"] = true.into();
    }
    match &r.payload {
        Some(room_message::Payload::Json(j)) => {
            v["data"] = serde_json::from_slice(j).unwrap_or(Value::Null);
        }
        Some(room_message::Payload::Binary(b)) => {
            v["b64"] = base64::engine::general_purpose::STANDARD.encode(b).into();
        }
        Some(room_message::Payload::Text(t)) => v["data"] = t.clone().into(),
        None => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::bus::{Member as BusMember, RoomKey};
    use super::super::protocol::{self, ErrorCode};
    use super::*;

    fn round_trip(json_text: &str) -> Value {
        let bin = transcode(json_text).expect("a server message");
        to_json(&ServerMessage::decode(bin.as_ref()).unwrap())
    }

    #[test]
    fn every_reply_survives_the_binary_encoding_unchanged() {
        let p = BusPosition {
            seq: 4,
            epoch: "e".into(),
        };
        let member = BusMember {
            conn: "c1".into(),
            user: Some("alice".into()),
            info: json!({"name": "A"}),
        };
        for text in [
            protocol::joined("r", true, &p, None, Some("j1")),
            protocol::joined("r", false, &p, None, None),
            protocol::joined(
                "r",
                true,
                &p,
                Some(&protocol::ReadState {
                    position: Some(p.clone()),
                    unread: 3,
                }),
                None,
            ),
            protocol::joined("r", true, &p, Some(&protocol::ReadState::default()), None),
            protocol::receipt("r", "alice", &p),
            protocol::left("r", Some("l")),
            protocol::ack(Some("a"), Some(&p)),
            protocol::ack(Some("a"), None),
            protocol::error(Some("9"), ErrorCode::Forbidden, "no"),
            protocol::error(None, ErrorCode::BadRequest, "what"),
            protocol::presence_event("r", true, &member),
            protocol::presence_event("r", false, &member),
            protocol::presence_snapshot("r", std::slice::from_ref(&member), Some("p")),
            protocol::presence_snapshot("r", &[], None),
            protocol::pong(Some("x")),
            protocol::shutdown(1500),
            protocol::lost("r", Some((&p, &p)), 2),
            protocol::lost("r", None, 3),
        ] {
            let want: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(round_trip(&text), want, "{text}");
        }
    }

    fn bus_message(data: Payload) -> BusMessage {
        BusMessage {
            key: RoomKey {
                namespace: "n".into(),
                room: "r".into(),
            },
            seq: 7,
            epoch: "e".into(),
            ts_ms: 1,
            from: Some(json!({"sub": "alice"})),
            data,
            ephemeral: false,
            origin_conn: None,
        }
    }

    #[test]
    fn a_room_message_reads_the_same_in_both_encodings() {
        for data in [
            Payload::Json(json!({"hi": [1, "two"]})),
            Payload::Binary(vec![0, 1, 255].into()),
            Payload::Text("plain".into()),
        ] {
            let m = bus_message(data);
            let bin = message(&m);
            let got = to_json(&ServerMessage::decode(bin.as_ref()).unwrap());
            let want: Value = serde_json::from_str(&protocol::message(&m)).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn binary_payloads_travel_as_bytes_not_base64() {
        let m = bus_message(Payload::Binary(vec![7u8; 300].into()));
        let bin = message(&m);
        let json = protocol::message(&m);
        assert!(bin.len() < 360, "{} bytes", bin.len());
        assert!(json.len() > 400, "{} bytes", json.len());
    }

    /// `[[…[]…]]`, `depth` levels.
    fn nested(depth: usize) -> Value {
        (0..depth).fold(Value::Null, |inner, d| {
            if d == 0 {
                Value::Array(vec![])
            } else {
                Value::Array(vec![inner])
            }
        })
    }

    #[test]
    fn json_data_is_admitted_as_deep_as_in_a_text_frame_and_no_deeper() {
        for depth in [protocol::MAX_DATA_DEPTH, protocol::MAX_DATA_DEPTH + 1] {
            assert_eq!(protocol::data_depth(&nested(depth)), depth);
            let m = ClientMsg::Publish {
                room: "a".into(),
                data: Some(nested(depth)),
                b64: None,
                bin: None,
                id: Some("p".into()),
                ephemeral: false,
            };
            let text = serde_json::to_string(&m).unwrap();
            let admitted = depth <= protocol::MAX_DATA_DEPTH;
            assert_eq!(
                protocol::parse(&text).is_ok(),
                admitted,
                "text, depth {depth}"
            );
            assert_eq!(
                decode_client(&encode_client(&m)).is_ok(),
                admitted,
                "binary, depth {depth}"
            );
        }
    }

    #[test]
    fn every_client_message_decodes_to_its_json_twin() {
        for text in [
            r#"{"type":"join","room":"a","id":"1"}"#,
            r#"{"type":"join","room":"a","since":{"seq":4,"epoch":"e"}}"#,
            r#"{"type":"leave","room":"a","id":"2"}"#,
            r#"{"type":"publish","room":"a","data":{"x":1},"ephemeral":true,"id":"3"}"#,
            r#"{"type":"presence","room":"a"}"#,
            r#"{"type":"ping","id":"p"}"#,
        ] {
            let m = protocol::parse(text).unwrap();
            assert_eq!(decode_client(&encode_client(&m)).unwrap(), m, "{text}");
        }
        let b64 = protocol::parse(r#"{"type":"publish","room":"a","b64":"AAEC"}"#).unwrap();
        match decode_client(&encode_client(&b64)).unwrap() {
            ClientMsg::Publish { bin, b64, .. } => {
                assert_eq!(bin.as_deref(), Some(&[0u8, 1, 2][..]));
                assert_eq!(b64, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn undecodable_client_frames_are_errors_that_keep_the_id_when_they_can() {
        let (id, e) = decode_client(b"\xff\xff\xff").unwrap_err();
        assert_eq!(id, None);
        assert!(e.0.starts_with("not a ClientMessage"), "{}", e.0);

        let empty = ClientMessage {
            id: Some("7".into()),
            kind: None,
        };
        let (id, _) = decode_client(&empty.encode_to_vec()).unwrap_err();
        assert_eq!(id.as_deref(), Some("7"));

        let bad_json = ClientMessage {
            id: Some("8".into()),
            kind: Some(client_message::Kind::Publish(Publish {
                room: "a".into(),
                payload: Some(publish::Payload::Json(Bytes::from_static(b"{nope"))),
                ephemeral: false,
            })),
        };
        let (id, e) = decode_client(&bad_json.encode_to_vec()).unwrap_err();
        assert_eq!(id.as_deref(), Some("8"));
        assert!(e.0.starts_with("json is not JSON"), "{}", e.0);

        let no_payload = ClientMessage {
            id: None,
            kind: Some(client_message::Kind::Publish(Publish::default())),
        };
        assert!(decode_client(&no_payload.encode_to_vec()).is_err());
    }
}
