//! Bounded property tests of the decoders a client's bytes reach first: the room protocol
//! ([`protocol::parse`], its binary encoding [`proto::decode_client`]) and resume cursors
//! ([`Cursor::decode`]). Arbitrary input never panics
//! and fails only with the decoder's typed error; generated valid values survive
//! encode-then-decode unchanged.
//!
//! Case counts come from [`crate::proptest_config`] (a short fixed run; longer with
//! `SWITCHBOARD_PROPTEST_CASES`, see the README).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::Value;

use super::bus::Position;
use super::cursor::{Cursor, CursorError, MAX_CURSOR_TEXT};
use super::proto;
use super::protocol::{self, ClientMsg};

/// JSON values without floats (the protocol carries them, but float text round trips are
/// serde_json's business, not the decoder's).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn position() -> impl Strategy<Value = Position> {
    (any::<u64>(), any::<String>()).prop_map(|(seq, epoch)| Position { seq, epoch })
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    let id = proptest::option::of(any::<String>());
    prop_oneof![
        (
            any::<String>(),
            proptest::option::of(position()),
            id.clone()
        )
            .prop_map(|(room, since, id)| ClientMsg::Join { room, since, id }),
        (any::<String>(), id.clone()).prop_map(|(room, id)| ClientMsg::Leave { room, id }),
        (
            any::<String>(),
            // `"data": null` is the same as no `data`.
            proptest::option::of(json_value().prop_filter("not null", |v| !v.is_null())),
            proptest::option::of(any::<String>()),
            id.clone(),
            any::<bool>(),
        )
            .prop_map(|(room, data, b64, id, ephemeral)| ClientMsg::Publish {
                room,
                data,
                b64,
                bin: None,
                id,
                ephemeral,
            }),
        (any::<String>(), id.clone()).prop_map(|(room, id)| ClientMsg::Presence { room, id }),
        id.prop_map(|id| ClientMsg::Ping { id }),
    ]
}

fn cursor() -> impl Strategy<Value = Cursor> {
    prop::collection::btree_map(any::<String>(), (any::<u64>(), any::<String>()), 0..24)
        .prop_map(|positions| Cursor { positions })
}

/// A valid encoding with one edit: a byte replaced, inserted or the text cut.
fn mutated(text: String) -> impl Strategy<Value = String> {
    let len = text.len().max(1);
    (0..len, any::<u8>(), 0..3u8).prop_map(move |(at, byte, how)| {
        let mut bytes = text.clone().into_bytes();
        let at = at.min(bytes.len());
        match how {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => bytes.truncate(at),
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

proptest! {
    #![proptest_config(crate::proptest_config())]

    #[test]
    fn any_text_frame_parses_or_gets_a_reason(text in any::<String>()) {
        if let Err(e) = protocol::parse(&text) {
            prop_assert!(!e.0.is_empty());
        }
        let _ = protocol::loose_id(&text);
    }

    #[test]
    fn any_json_document_parses_or_gets_a_reason(v in json_value()) {
        if let Err(e) = protocol::parse(&v.to_string()) {
            prop_assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn any_binary_frame_decodes_or_gets_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Err((_, e)) = proto::decode_client(&bytes) {
            prop_assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn client_messages_survive_the_binary_encoding(msg in client_msg()) {
        // Only publishes with exactly one valid payload encode (`b64` becomes bytes).
        if let ClientMsg::Publish { data, b64, .. } = &msg {
            prop_assume!(data.is_some() && b64.is_none());
        }
        prop_assert_eq!(proto::decode_client(&proto::encode_client(&msg)), Ok(msg));
    }

    #[test]
    fn client_messages_survive_encode_then_decode(msg in client_msg()) {
        let text = serde_json::to_string(&msg).expect("a message encodes");
        prop_assert_eq!(protocol::parse(&text), Ok(msg));
    }

    #[test]
    fn edited_client_messages_parse_or_get_a_reason(
        text in client_msg()
            .prop_map(|m| serde_json::to_string(&m).expect("encodes"))
            .prop_flat_map(mutated)
    ) {
        if let Err(e) = protocol::parse(&text) {
            prop_assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn any_cursor_text_decodes_or_fails_with_a_cursor_error(text in any::<String>()) {
        match Cursor::decode(&text, &["a".to_string()]) {
            Ok(_) | Err(CursorError::NotBase64 | CursorError::NotPositions(_)) => {}
            Err(CursorError::TooLong) => prop_assert!(text.trim().len() > MAX_CURSOR_TEXT),
        }
    }

    #[test]
    fn any_base64url_payload_decodes_or_is_not_positions(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        match Cursor::decode(&URL_SAFE_NO_PAD.encode(&bytes), &["a".to_string()]) {
            Ok(_) | Err(CursorError::NotPositions(_)) => {}
            Err(e) => prop_assert!(false, "valid base64url reported as {e}"),
        }
    }

    #[test]
    fn cursors_survive_encode_then_decode(c in cursor()) {
        let rooms: Vec<String> = c.positions.keys().cloned().collect();
        prop_assert_eq!(Cursor::decode(&c.encode(), &rooms), Ok(c));
    }

    #[test]
    fn edited_cursors_decode_or_fail_with_a_cursor_error(
        text in cursor().prop_map(|c| c.encode()).prop_flat_map(mutated)
    ) {
        let _ = Cursor::decode(&text, &["a".to_string()]);
    }

    #[test]
    fn a_cursor_keeps_exactly_the_requested_rooms_it_holds(
        c in cursor(),
        extra in prop::collection::vec(any::<String>(), 0..8),
        keep_every in 1..4usize,
    ) {
        let mut rooms: Vec<String> = c.positions.keys().step_by(keep_every).cloned().collect();
        rooms.extend(extra);
        let mut kept = c.clone();
        kept.retain(&rooms);
        for (room, pos) in &c.positions {
            prop_assert_eq!(kept.positions.get(room), rooms.contains(room).then_some(pos));
        }
        prop_assert!(kept.positions.keys().all(|r| c.positions.contains_key(r)));
    }
}
