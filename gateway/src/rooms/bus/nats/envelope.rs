//! The bytes of a room message on NATS: the JSON envelope stored and delivered as is, and the
//! presence event published beside it.

use super::*;

/// The JSON envelope of every room message, stored and delivered as the same bytes. Exactly one
/// of `data` (JSON), `b64` (binary, standard base64) and `text` (raw-relay text frame).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) from: Option<serde_json::Value>,
    /// `Some(Null)` is JSON `null` data; `None` is "no `data` field".
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) text: Option<String>,
    /// Server time (ms since the Unix epoch); stored messages without it get the stream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ts: Option<u64>,
    /// The publishing connection (raw rooms skip the sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) conn: Option<String>,
    /// Published as ephemeral (only on the `eph` subject).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) eph: bool,
}

pub(super) fn present<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

impl Envelope {
    pub(super) fn of(p: Publish, ts: u64) -> Self {
        let mut env = Envelope {
            from: p.from,
            ts: Some(ts),
            conn: p.origin_conn,
            eph: p.ephemeral,
            ..Default::default()
        };
        match p.data {
            Payload::Json(v) => env.data = Some(v),
            Payload::Binary(b) => {
                env.b64 = Some(base64::engine::general_purpose::STANDARD.encode(&b))
            }
            Payload::Text(t) => env.text = Some(t),
        }
        env
    }

    pub(super) fn encode(&self) -> Bytes {
        // Serializing JSON values, strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(super) fn payload(self) -> Result<Payload, String> {
        match (self.data, self.b64, self.text) {
            (Some(v), None, None) => Ok(Payload::Json(v)),
            (None, Some(b), None) => base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map(|b| Payload::Binary(Bytes::from(b)))
                .map_err(|e| format!("b64 is not base64: {e}")),
            (None, None, Some(t)) => Ok(Payload::Text(t)),
            _ => Err("exactly one of data, b64, text is required".into()),
        }
    }
}

/// Room for what an envelope holds besides the payload (`from` with the publisher's chosen
/// claims, `ts`, `conn`, the field names): an estimate for the start-up check only, the
/// publish itself measures the envelope.
pub(super) const ENVELOPE_OVERHEAD: u64 = 1024;

/// The largest envelope a message of up to `max_message` bytes makes: a binary payload (a raw
/// binary frame, a protobuf publish) travels as base64, four bytes for every three.
pub(super) fn envelope_bound(max_message: u64) -> u64 {
    max_message.div_ceil(3).saturating_mul(4) + ENVELOPE_OVERHEAD
}

/// Decode one message of `key`; malformed ones are logged and skipped (an app pod may publish
/// anything to a room subject).
pub(super) fn decode(
    key: &RoomKey,
    bytes: &[u8],
    seq: u64,
    epoch: &str,
    fallback_ts: u64,
) -> Option<RoomMessage> {
    let env: Envelope = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(namespace = %key.namespace, room = %key.room, seq, error = %e, "dropping a room message that is not a JSON envelope");
            return None;
        }
    };
    let ts_ms = env.ts.unwrap_or(fallback_ts);
    let from = env.from.clone();
    let origin_conn = env.conn.clone();
    let ephemeral = seq == 0 && env.eph;
    match env.payload() {
        Ok(data) => Some(RoomMessage {
            key: key.clone(),
            seq,
            epoch: epoch.to_string(),
            ts_ms,
            from,
            data,
            ephemeral,
            origin_conn,
        }),
        Err(e) => {
            tracing::warn!(namespace = %key.namespace, room = %key.room, seq, error = %e, "dropping a malformed room message");
            None
        }
    }
}

/// A presence event as published on `P.presence.<ns>.<room>`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PresenceWire {
    pub(super) joined: bool,
    pub(super) member: Member,
}
