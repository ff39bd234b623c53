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

/// What docs/protocol.md says of numbers in `data`: 64-bit integers exactly, larger integers
/// as the nearest double, numbers beyond a double's range refused.
#[test]
fn numbers_in_data_are_held_as_the_protocol_documents() {
    let data = |text: &str| match parse(text) {
        Ok(ClientMsg::Publish { data: Some(d), .. }) => Ok(d.to_string()),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    let publish = |n: &str| format!(r#"{{"type":"publish","room":"a","data":{n}}}"#);
    assert_eq!(
        data(&publish("18446744073709551615")).unwrap(),
        "18446744073709551615"
    );
    assert_eq!(
        data(&publish("-9223372036854775808")).unwrap(),
        "-9223372036854775808"
    );
    assert_eq!(
        data(&publish("18446744073709551616")).unwrap(),
        "1.8446744073709552e+19"
    );
    assert!(data(&publish("1e400")).is_err());
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

#[test]
fn joined_is_the_same_json_the_value_tree_gave() {
    // The reply as it was built before it was serialized from borrowed fields.
    fn reference(
        room: &str,
        recovered: bool,
        position: &Position,
        read: Option<&ReadState>,
        id: Option<&str>,
    ) -> String {
        let mut v =
            json!({"type": "joined", "room": room, "recovered": recovered, "position": position});
        if let (Some(r), Some(obj)) = (read, v.as_object_mut()) {
            obj.insert("read".into(), json!(r.position));
            obj.insert("unread".into(), r.unread.into());
        }
        with_id(v, id)
    }
    let at = Position {
        seq: 7,
        epoch: "e\"1".into(),
    };
    let reads = [
        None,
        Some(ReadState {
            position: None,
            unread: 0,
        }),
        Some(ReadState {
            position: Some(Position {
                seq: 3,
                epoch: "e1".into(),
            }),
            unread: 4,
        }),
    ];
    for read in &reads {
        for id in [None, Some("x\\y")] {
            for recovered in [false, true] {
                assert_eq!(
                    joined("user:ä\n", recovered, &at, read.as_ref(), id),
                    reference("user:ä\n", recovered, &at, read.as_ref(), id)
                );
            }
        }
    }
}

#[test]
fn message_is_the_same_json_the_value_tree_gave() {
    // The message as it was built before it was serialized from borrowed fields.
    fn reference(m: &RoomMessage) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), "message".into());
        obj.insert("room".into(), m.key.room.clone().into());
        obj.insert("seq".into(), m.seq.into());
        obj.insert("epoch".into(), json!(m.epoch));
        obj.insert("ts".into(), m.ts_ms.into());
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
        Value::Object(obj)
    }
    let payloads = [
        Payload::Json(json!({"hi": [1, "ä\"\n"], "n": null})),
        Payload::Json(Value::Null),
        Payload::Binary(vec![0, 1, 2, 255].into()),
        Payload::Text("raw \"text\"\u{1}".into()),
    ];
    for data in payloads {
        for from in [None, Some(json!({"sub": "alice", "role": ["a"]}))] {
            for (seq, ephemeral) in [(0, true), (9, false)] {
                let m = RoomMessage {
                    key: super::super::bus::RoomKey {
                        namespace: "n".into(),
                        room: "user:ä\\".into(),
                    },
                    seq,
                    epoch: "e\"1".into(),
                    ts_ms: 1_700_000_000_123,
                    from: from.clone(),
                    data: data.clone(),
                    ephemeral,
                    origin_conn: Some("c1".into()),
                };
                assert_eq!(message(&m), reference(&m).to_string());
                // A batch carries the same message objects.
                let batched: Value =
                    serde_json::from_str(&batch("r", &[(None, vec![&m])])).unwrap();
                assert_eq!(batched["groups"][0]["messages"][0], reference(&m));
            }
        }
    }
}
