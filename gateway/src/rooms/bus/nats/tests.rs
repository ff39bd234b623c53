use super::*;
use async_nats::jetstream::context::{RequestError, RequestErrorKind};

fn api_error(code: u16, err_code: u64, description: &str) -> RequestError {
    let e: jetstream::Error = serde_json::from_value(serde_json::json!({
        "code": code, "err_code": err_code, "description": description,
    }))
    .expect("a JetStream API error");
    RequestError::with_source(RequestErrorKind::Other, e)
}

#[test]
fn only_jetstreams_stream_not_found_is_a_missing_stream() {
    assert!(stream_not_found(&api_error(404, 10059, "stream not found")));
    // What a stream electing a leader answers: retried, never recreated.
    assert!(!stream_not_found(&RequestError::new(
        RequestErrorKind::NoResponders
    )));
    assert!(!stream_not_found(&RequestError::new(
        RequestErrorKind::TimedOut
    )));
    assert!(!stream_not_found(&api_error(
        503,
        10008,
        "JetStream system temporarily unavailable"
    )));
}

fn key(room: &str) -> RoomKey {
    RoomKey {
        namespace: "ns".into(),
        room: room.into(),
    }
}

#[test]
fn names_are_limited_to_subject_safe_characters() {
    for ok in ["chat", "user:alice", "a_b-c", "x@y+z=", "R2D2"] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in [
        "",
        "a.b",
        "a b",
        "a*",
        "a>",
        "a/b",
        "é",
        &"x".repeat(MAX_NAME_LEN + 1),
    ] {
        assert!(!valid_name(bad), "{bad}");
    }
    assert!(matches!(check_key(&key("a.b")), Err(BusError::Other(_))));
}

#[test]
fn prefixes_are_dot_separated_tokens_and_map_to_stream_names() {
    assert!(valid_prefix("switchboard"));
    assert!(valid_prefix("sb.prod-1"));
    for bad in ["", ".", "a..b", "a.", "a*", "a b", "a>"] {
        assert!(!valid_prefix(bad), "{bad}");
    }
    assert_eq!(stream_prefix("sb.prod"), "SB_PROD");
}

#[test]
fn kv_keys_escape_everything_outside_the_kv_alphabet_injectively() {
    assert_eq!(kv_escape("lobby:1"), "lobby=3A1");
    assert_eq!(kv_escape("a=b"), "a=3Db");
    assert_eq!(kv_escape("x.y"), "x=2Ey");
    assert_ne!(kv_escape("a:"), kv_escape("a=3A"));
    let k = Inner::presence_key(
        &RoomKey {
            namespace: "n@s".into(),
            room: "r+1".into(),
        },
        "pod/1",
    );
    assert_eq!(k, "n=40s.r=2B1.pod=2F1");
}

/// The deepest `data` a client may publish is read back from the envelope (one nested 127
/// levels, which the binary encoding admitted, was acknowledged and then dropped by every pod
/// as "not a JSON envelope").
#[test]
fn the_deepest_data_a_client_may_publish_survives_the_envelope() {
    let depth = crate::rooms::protocol::MAX_DATA_DEPTH;
    let data = (1..depth).fold(serde_json::json!([]), |inner, _| serde_json::json!([inner]));
    assert_eq!(crate::rooms::protocol::data_depth(&data), depth);
    let p = Publish {
        key: key("r"),
        from: None,
        data: Payload::Json(data.clone()),
        ephemeral: false,
        origin_conn: None,
    };
    let bytes = Envelope::of(p, 1).encode();
    let m = decode(&key("r"), &bytes, 7, "e", 0).expect("decodes");
    assert_eq!(m.data, Payload::Json(data));
}

#[test]
fn envelopes_round_trip_every_payload_kind() {
    for data in [
        Payload::Json(serde_json::json!({"hi": [1, 2]})),
        Payload::Json(serde_json::Value::Null),
        Payload::Binary(Bytes::from_static(b"\x00\xffbin")),
        Payload::Text("raw frame".into()),
    ] {
        let p = Publish {
            key: key("r"),
            from: Some(serde_json::json!({"sub": "alice"})),
            data: data.clone(),
            ephemeral: false,
            origin_conn: Some("c1".into()),
        };
        let bytes = Envelope::of(p, 42).encode();
        let m = decode(&key("r"), &bytes, 7, "e", 0).expect("decodes");
        assert_eq!(
            (m.seq, m.ts_ms, m.data, m.origin_conn.as_deref()),
            (7, 42, data, Some("c1"))
        );
        assert_eq!(m.from, Some(serde_json::json!({"sub": "alice"})));
    }
}

#[test]
fn app_pods_may_publish_bare_data_and_get_the_stream_timestamp() {
    let m = decode(&key("r"), br#"{"data":{"n":1}}"#, 3, "e", 99).expect("decodes");
    assert_eq!(
        (m.ts_ms, m.from, m.data),
        (99, None, Payload::Json(serde_json::json!({"n": 1})))
    );
    assert!(decode(&key("r"), b"not json", 3, "e", 99).is_none());
    assert!(decode(&key("r"), br#"{"data":1,"text":"x"}"#, 3, "e", 99).is_none());
    assert!(decode(&key("r"), br#"{"ts":1}"#, 3, "e", 99).is_none());
    assert!(decode(&key("r"), br#"{"b64":"***"}"#, 3, "e", 99).is_none());
}

#[test]
fn only_core_messages_published_as_ephemeral_are_ephemeral() {
    let bytes = br#"{"data":1,"eph":true}"#;
    assert!(decode(&key("r"), bytes, 0, "e", 0).unwrap().ephemeral);
    assert!(
        !decode(&key("r"), br#"{"data":1}"#, 0, "e", 0)
            .unwrap()
            .ephemeral
    );
    assert!(!decode(&key("r"), bytes, 5, "e", 0).unwrap().ephemeral);
}

#[test]
fn a_gap_is_complete_while_the_room_keeps_a_message_at_or_right_after_since() {
    // The message at `since` itself (or older) is retained: nothing after it was dropped.
    assert!(gap_is_complete(8, Some(8), 5, 20, 3, 3));
    assert!(gap_is_complete(8, Some(2), 100, 120, 3, 3));
    // The very next sequence is the room's oldest: nothing can be missing in between.
    assert!(gap_is_complete(8, Some(9), 5, 11, 3, 3));
}

#[test]
fn a_gap_is_complete_when_neither_the_head_nor_the_room_limit_dropped_anything() {
    assert!(gap_is_complete(0, None, 1, 0, 0, 3)); // empty stream
    assert!(gap_is_complete(0, Some(4), 1, 9, 2, 3)); // room below its limit, head intact
    assert!(gap_is_complete(10, None, 11, 10, 0, 3)); // stream emptied by age, nothing after
    assert!(gap_is_complete(10, Some(12), 11, 14, 2, 0)); // no per-subject limit
}

#[test]
fn a_gap_is_lost_when_the_room_limit_or_the_head_may_have_dropped_part_of_it() {
    // Room full and its oldest retained message is after `since`: per-subject trimming may
    // have dropped messages after `since` even though the stream head is older.
    assert!(!gap_is_complete(3, Some(9), 1, 11, 3, 3));
    // Exactly `limit` room messages after `since` with others in between: not provable
    // from the counts alone (the probe decides).
    assert!(!gap_is_complete(8, Some(12), 1, 16, 3, 3));
    // The head moved past `since` (max_age): unknown what the room lost.
    assert!(!gap_is_complete(3, Some(30), 10, 40, 1, 100));
    assert!(!gap_is_complete(3, None, 10, 40, 0, 100));
    // Not a position of this stream.
    assert!(!gap_is_complete(50, Some(1), 1, 40, 1, 100));
}

#[test]
fn only_short_runs_between_since_and_the_rooms_oldest_message_are_probed() {
    assert_eq!(probe_range(8, Some(12), 16), Some(9..12));
    assert_eq!(probe_range(8, Some(9), 16), None); // nothing in between
    assert_eq!(probe_range(8, None, 16), None);
    assert_eq!(probe_range(8, Some(9 + PROBE_MAX + 1), 40), None); // too long: Lost
    assert_eq!(probe_range(50, Some(60), 40), None); // not a position of this stream
}
