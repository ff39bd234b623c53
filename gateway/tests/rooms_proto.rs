//! The binary encoding of room protocol v1 (`switchboard.v1.proto`, Protocol Buffers) against
//! the real binary with the embedded bus. The behaviour tests have one body and run in both
//! encodings (`<test>::json`, `<test>::proto`): ordering, acks and publishers; resume; ephemeral
//! messages; malformed input; presence; 1009; drain. A frame-level client ([`Wire`]) writes and
//! reads protocol messages as JSON values in either encoding, so the assertions are the same
//! (`docs/protocol.md`: one protocol, two encodings). Then what only the mix shows: JSON and
//! protobuf members of one room see the same messages and seqs, binary payloads travel as bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::room_client::{Encoding, Event, Options, RoomClient};
use support::{ConfigBuilder, route};
use support::{
    Gateway, PROMPTLY, WsClient, claims, expect_close, jwt_hs256, sign_hs256, ws_config,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Routes: `/chat` (HS256 JWT; join and publish `chat:*`, `user:{sub}`; 5 messages of
/// history; 4096-byte messages; drain code 4100), `/here` (JWT; join `chat:*`; presence),
/// `/open` (anonymous; join and publish `chat:*`; no presence).
fn config() -> String {
    let chat = json!(["chat:*"]);
    ConfigBuilder::new()
        .drain("0s", "15s")
        .route(
            route("chat", "/chat")
                .jwt(jwt_hs256())
                .rooms(json!({
                    "namespace": "app",
                    "join": ["chat:*", "user:{sub}"],
                    "publish": ["chat:*", "user:{sub}"],
                    "history": {"maxMessages": 5, "maxAge": "10m"},
                }))
                .max_message_bytes(4096)
                .messages_per_second(1000, 1000)
                .drain(json!({"window": "1s", "closeCode": 4100, "closeReason": "pod restarting"})),
        )
        .route(
            route("here", "/here")
                .jwt(jwt_hs256())
                .rooms(json!({"join": chat, "presence": true}))
                .unset("drain"),
        )
        .route(
            route("open", "/open")
                .rooms(json!({
                    "join": chat,
                    "publish": chat,
                    "history": {"maxMessages": 100, "maxAge": "10m"},
                }))
                .unset("drain"),
        )
        .yaml()
}

async fn start() -> Gateway {
    Gateway::start(&config()).await
}

fn bearer(sub: &str) -> String {
    format!("Bearer {}", token(sub))
}

fn token(sub: &str) -> String {
    sign_hs256(&claims(sub, 600, json!({"org": "acme"})))
}

/// One body, two encodings: `mod <name> { json, proto }`.
macro_rules! both_encodings {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn json() {
                super::$name(super::Encoding::Json).await
            }
            #[tokio::test]
            async fn proto() {
                super::$name(super::Encoding::Proto).await
            }
        }
    )*};
}

both_encodings!(
    members_see_every_publish_in_one_order_with_acks_and_publishers,
    a_member_that_resumes_gets_exactly_the_gap_then_live_messages,
    ephemeral_messages_are_delivered_live_but_never_replayed,
    malformed_input_gets_bad_request_and_the_connection_keeps_working,
    forbidden_and_not_joined_are_the_same_errors_in_both_encodings,
    presence_announces_joins_and_leaves_and_answers_snapshots,
    a_message_over_max_message_bytes_closes_that_connection_with_1009,
    sigterm_sends_shutdown_then_closes_with_the_routes_drain_code,
);

/// A frame-level client in either encoding: protocol messages in and out as JSON values.
struct Wire {
    ws: WsClient,
    encoding: Encoding,
}

impl Wire {
    async fn connect(url: &str, encoding: Encoding, headers: &[(&str, &str)]) -> Self {
        Self::offering(url, encoding, &[encoding.subprotocol()], headers).await
    }

    /// Offer `subprotocols` in this order; the gateway must pick `encoding`'s.
    async fn offering(
        url: &str,
        encoding: Encoding,
        subprotocols: &[&str],
        headers: &[(&str, &str)],
    ) -> Self {
        let mut req = url.into_client_request().expect("ws url");
        req.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_str(&subprotocols.join(", ")).unwrap(),
        );
        for (n, v) in headers {
            req.headers_mut().append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let (ws, resp) = tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        assert_eq!(
            resp.headers()
                .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok()),
            Some(encoding.subprotocol())
        );
        Self { ws, encoding }
    }

    /// A `/chat` connection as `sub`, past the automatic join of its user room.
    async fn chat(gw: &Gateway, encoding: Encoding, sub: &str) -> Self {
        let mut w = Self::connect(
            &gw.ws_url("/chat"),
            encoding,
            &[("authorization", &bearer(sub))],
        )
        .await;
        let first = w.recv().await;
        assert_eq!(first["type"], "joined", "{first}");
        w
    }

    async fn send(&mut self, v: Value) {
        let frame = self.encoding.client_frame(v.to_string());
        self.ws.send(frame).await.expect("send");
    }

    async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(PROMPTLY, self.ws.next())
                .await
                .expect("a message in time")
                .expect("the connection is open")
                .expect("a frame");
            if matches!(m, Message::Ping(_) | Message::Pong(_)) {
                continue;
            }
            let text = self
                .encoding
                .server_text(&m)
                .unwrap_or_else(|| panic!("a frame of the {:?} encoding: {m:?}", self.encoding));
            return serde_json::from_str(&text).unwrap();
        }
    }

    async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room, "id": format!("join-{room}")}))
            .await;
        let v = self.recv_type("joined").await;
        assert_eq!(v["room"], room);
        v
    }
}

async fn chat_client(gw: &Gateway, encoding: Encoding, sub: &str) -> RoomClient {
    RoomClient::connected(
        Options::new(gw.ws_url("/chat"))
            .bearer(&token(sub))
            .encoding(encoding),
    )
    .await
}

async fn members_see_every_publish_in_one_order_with_acks_and_publishers(encoding: Encoding) {
    let gw = start().await;
    let subs = ["alice", "bob", "carol"];
    let mut clients = Vec::new();
    for sub in subs {
        let mut c = chat_client(&gw, encoding, sub).await;
        assert_eq!(c.join_and_wait("chat:lobby").await.seq, 0);
        clients.push(c);
    }
    let mut acked = Vec::new();
    for round in 0..3 {
        for (i, sub) in subs.iter().enumerate() {
            let data = json!({"text": format!("{sub} says {round}"), "n": [round, i]});
            let id = clients[i]
                .publish("chat:lobby", data.clone())
                .await
                .unwrap();
            let pos = clients[i].acked(&id).await.unwrap().expect("a position");
            acked.push((pos, sub.to_string(), data));
        }
    }
    for c in &mut clients {
        let got = c.messages("chat:lobby", acked.len(), PROMPTLY).await;
        let seen: Vec<_> = got
            .iter()
            .map(|m| {
                (
                    m.position(),
                    m.from.as_ref().expect("from")["sub"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    m.data.clone().expect("data"),
                )
            })
            .collect();
        assert_eq!(seen, acked);
        assert!(got.iter().all(|m| !m.ephemeral && m.ts > 0));
    }
    let id = clients[0]
        .publish_b64("chat:lobby", "AAEC/w==")
        .await
        .unwrap();
    clients[0].acked(&id).await.unwrap();
    for c in &mut clients {
        let m = c.messages("chat:lobby", 1, PROMPTLY).await.remove(0);
        assert_eq!((m.b64.as_deref(), m.data), (Some("AAEC/w=="), None));
    }
    for c in clients {
        c.close().await;
    }
}

async fn a_member_that_resumes_gets_exactly_the_gap_then_live_messages(encoding: Encoding) {
    let gw = start().await;
    let mut member = chat_client(&gw, encoding, "alice").await;
    member.join_and_wait("chat:resume").await;
    let mut publisher = Wire::chat(&gw, encoding, "bob").await;
    let mut send = async |n: u64| {
        publisher
            .send(json!({"type": "publish", "room": "chat:resume", "data": n, "id": n.to_string()}))
            .await;
        publisher.recv_type("ack").await["seq"].as_u64().unwrap()
    };
    send(1).await;
    assert_eq!(member.messages("chat:resume", 1, PROMPTLY).await.len(), 1);
    member.go_offline();
    member
        .expect("the disconnect", PROMPTLY, |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await;
    for n in 2..=4 {
        send(n).await;
    }
    member.reconnect();
    let (recovered, position) = member
        .expect("the resumed join", PROMPTLY, |e| match e {
            Event::Joined {
                room,
                recovered,
                position,
                ..
            } if room == "chat:resume" => Some((*recovered, position.clone())),
            _ => None,
        })
        .await;
    assert!(recovered);
    assert_eq!(position.seq, 4);
    let seq5 = send(5).await;
    let after: Vec<_> = member
        .messages("chat:resume", 4, PROMPTLY)
        .await
        .iter()
        .map(|m| (m.seq, m.data.clone().unwrap()))
        .collect();
    assert_eq!(
        after,
        [
            (2, json!(2)),
            (3, json!(3)),
            (4, json!(4)),
            (seq5, json!(5))
        ]
    );

    let mut raw = Wire::chat(&gw, encoding, "carol").await;
    let epoch = position.epoch;
    raw.send(json!({"type": "join", "room": "chat:resume", "since": {"seq": 3, "epoch": epoch}, "id": "r"}))
        .await;
    assert_eq!(
        raw.recv().await,
        json!({"type": "joined", "room": "chat:resume", "recovered": true,
               "position": {"seq": 5, "epoch": epoch}, "id": "r"})
    );
    for want in [4, 5] {
        let m = raw.recv().await;
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64()),
            (Some("message"), Some(want))
        );
    }
}

async fn ephemeral_messages_are_delivered_live_but_never_replayed(encoding: Encoding) {
    let gw = start().await;
    let mut a = Wire::chat(&gw, encoding, "alice").await;
    let mut b = Wire::chat(&gw, encoding, "bob").await;
    a.join("chat:typing").await;
    b.join("chat:typing").await;
    a.send(json!({"type": "publish", "room": "chat:typing", "data": {"typing": true}, "ephemeral": true, "id": "e"}))
        .await;
    assert_eq!(a.recv_type("ack").await, json!({"type": "ack", "id": "e"}));
    let m = b.recv_type("message").await;
    assert_eq!(
        (&m["seq"], &m["ephemeral"], &m["data"]),
        (&json!(0), &json!(true), &json!({"typing": true}))
    );
    let mut late = Wire::chat(&gw, encoding, "carol").await;
    let joined = late.join("chat:typing").await;
    assert_eq!(joined["position"]["seq"], 0, "{joined}");
    late.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(
        late.recv().await,
        json!({"type": "pong", "id": "p"}),
        "nothing replayed"
    );
}

async fn malformed_input_gets_bad_request_and_the_connection_keeps_working(encoding: Encoding) {
    let gw = start().await;
    let mut bad = Wire::chat(&gw, encoding, "mallory").await;
    bad.join("chat:robust").await;
    let mut other = Wire::chat(&gw, encoding, "alice").await;
    other.join("chat:robust").await;
    // The other encoding's frame kind, then garbage of this encoding's kind.
    let (wrong_kind, garbage) = match encoding {
        Encoding::Json => (Message::binary(vec![1u8, 2, 3]), Message::text("not json")),
        Encoding::Proto => (
            Message::text(r#"{"type":"ping"}"#),
            Message::binary(vec![0xffu8, 0xff, 0xff]),
        ),
    };
    for frame in [wrong_kind, garbage] {
        bad.ws.send(frame).await.unwrap();
        let v = bad.recv().await;
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{v}"
        );
        assert!(!v["reason"].as_str().unwrap().is_empty());
    }
    // A publish without a payload is refused with its id in both encodings.
    bad.send(json!({"type": "publish", "room": "chat:robust", "id": "d5"}))
        .await;
    let v = bad.recv().await;
    assert_eq!(
        (v["code"].as_str(), v["id"].as_str()),
        (Some("bad_request"), Some("d5")),
        "{v}"
    );

    bad.send(
        json!({"type": "publish", "room": "chat:robust", "data": "after the noise", "id": "ok"}),
    )
    .await;
    assert_eq!(bad.recv_type("ack").await["id"], "ok");
    let m = other.recv_type("message").await;
    assert_eq!(
        (m["data"].as_str(), m["from"]["sub"].as_str()),
        (Some("after the noise"), Some("mallory"))
    );
}

async fn forbidden_and_not_joined_are_the_same_errors_in_both_encodings(encoding: Encoding) {
    let gw = start().await;
    let mut w = Wire::chat(&gw, encoding, "alice").await;
    w.send(json!({"type": "join", "room": "secret", "id": "j"}))
        .await;
    assert_eq!(
        w.recv().await,
        json!({"type": "error", "code": "forbidden", "reason": "not allowed to join this room", "id": "j"})
    );
    w.send(json!({"type": "publish", "room": "user:bob", "data": 1, "id": "p"}))
        .await;
    assert_eq!(
        w.recv().await,
        json!({"type": "error", "code": "forbidden", "reason": "not allowed to publish to this room", "id": "p"})
    );
    w.send(json!({"type": "leave", "room": "chat:never", "id": "l"}))
        .await;
    assert_eq!(
        w.recv().await,
        json!({"type": "error", "code": "not_joined", "reason": "not in this room", "id": "l"})
    );
    w.join("chat:x").await;
    w.send(json!({"type": "leave", "room": "chat:x", "id": "l2"}))
        .await;
    assert_eq!(
        w.recv().await,
        json!({"type": "left", "room": "chat:x", "id": "l2"})
    );
}

async fn presence_announces_joins_and_leaves_and_answers_snapshots(encoding: Encoding) {
    let gw = start().await;
    let here = |sub: &str| {
        let url = gw.ws_url("/here");
        let auth = bearer(sub);
        async move {
            let mut w = Wire::connect(&url, encoding, &[("authorization", &auth)]).await;
            assert_eq!(w.recv().await["type"], "joined");
            assert_eq!(w.recv().await["event"], "join", "the user room's presence");
            w
        }
    };
    let mut alice = here("alice").await;
    alice.join("chat:here").await;
    let me = alice.recv().await;
    assert_eq!(
        (me["event"].as_str(), me["member"]["user"].as_str()),
        (Some("join"), Some("alice")),
        "{me}"
    );
    let mut bob = here("bob").await;
    bob.join("chat:here").await;
    let ev = alice.recv().await;
    assert_eq!(
        (
            ev["event"].as_str(),
            ev["room"].as_str(),
            ev["member"]["user"].as_str()
        ),
        (Some("join"), Some("chat:here"), Some("bob")),
        "{ev}"
    );
    alice
        .send(json!({"type": "presence", "room": "chat:here", "id": "who"}))
        .await;
    let snap = alice.recv().await;
    assert_eq!(snap["id"], "who");
    let mut users: Vec<&str> = snap["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{snap}"))
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    support::close_normally(&mut bob.ws).await;
    let ev = alice.recv().await;
    assert_eq!(
        (ev["event"].as_str(), ev["member"]["user"].as_str()),
        (Some("leave"), Some("bob")),
        "{ev}"
    );
}

async fn a_message_over_max_message_bytes_closes_that_connection_with_1009(encoding: Encoding) {
    let gw = start().await;
    let mut big = Wire::chat(&gw, encoding, "alice").await;
    big.send(json!({"type": "publish", "room": "chat:size", "data": "x".repeat(5000)}))
        .await;
    let (code, reason, _) = expect_close(&mut big.ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));
}

async fn sigterm_sends_shutdown_then_closes_with_the_routes_drain_code(encoding: Encoding) {
    let mut gw = start().await;
    let mut w = Wire::chat(&gw, encoding, "alice").await;
    w.join("chat:drain").await;
    gw.terminate();
    let (code, reason, before) = expect_close(&mut w.ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (4100, "pod restarting"));
    let hint: Value = before
        .iter()
        .filter_map(|m| encoding.server_text(m))
        .filter_map(|t| serde_json::from_str(&t).ok())
        .next_back()
        .unwrap_or_else(|| panic!("a shutdown message before the close: {before:?}"));
    assert_eq!(hint["type"], "shutdown");
    assert!((500..5000).contains(&hint["reconnectAfterMs"].as_u64().unwrap()));
    assert!(gw.wait_exit(PROMPTLY).await.is_some_and(|s| s.success()));
}

#[tokio::test]
async fn json_and_protobuf_members_of_one_room_see_the_same_messages_and_seqs() {
    let gw = start().await;
    let mut json_member = chat_client(&gw, Encoding::Json, "alice").await;
    let mut proto_member = chat_client(&gw, Encoding::Proto, "bob").await;
    json_member.join_and_wait("chat:mixed").await;
    proto_member.join_and_wait("chat:mixed").await;
    for i in 0..10 {
        let (c, data) = if i % 2 == 0 {
            (&json_member, json!({"from": "json", "i": i}))
        } else {
            (&proto_member, json!({"from": "proto", "i": i}))
        };
        c.publish("chat:mixed", data).await.unwrap();
    }
    proto_member
        .publish_b64("chat:mixed", "3q2+7w==")
        .await
        .unwrap();
    let mut seen = Vec::new();
    for c in [&mut json_member, &mut proto_member] {
        let got = c.messages("chat:mixed", 11, PROMPTLY).await;
        seen.push(
            got.iter()
                .map(|m| (m.position(), m.from.clone(), m.data.clone(), m.b64.clone()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(seen[0], seen[1]);
    let seqs: Vec<u64> = seen[0].iter().map(|m| m.0.seq).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
}

#[tokio::test]
async fn binary_payloads_reach_protobuf_members_as_bytes_and_json_members_as_base64() {
    use prost::Message as _;
    use switchboard_gateway::rooms::proto::{self, room_message, server_message};
    let gw = start().await;
    let mut pb = Wire::chat(&gw, Encoding::Proto, "alice").await;
    let mut js = Wire::chat(&gw, Encoding::Json, "bob").await;
    pb.join("chat:bin").await;
    js.join("chat:bin").await;
    let payload: Vec<u8> = (0..=255u8).collect();
    let publish = proto::ClientMessage {
        id: Some("b".into()),
        kind: Some(proto::client_message::Kind::Publish(proto::Publish {
            room: "chat:bin".into(),
            payload: Some(proto::publish::Payload::Binary(payload.clone().into())),
            ephemeral: false,
        })),
    };
    pb.ws
        .send(Message::binary(publish.encode_to_vec()))
        .await
        .unwrap();
    // The protobuf member's own copy, as raw bytes on the wire.
    let frame = loop {
        match tokio::time::timeout(PROMPTLY, pb.ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                let m = proto::ServerMessage::decode(b.as_ref()).unwrap();
                if let Some(server_message::Kind::Message(m)) = m.kind {
                    break m;
                }
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        frame.payload,
        Some(room_message::Payload::Binary(payload.clone().into()))
    );
    assert_eq!(frame.from.map(|f| f.sub).as_deref(), Some("alice"));
    let m = js.recv_type("message").await;
    use base64::Engine;
    assert_eq!(
        m["b64"].as_str(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(&payload)
                .as_str()
        )
    );
}

#[tokio::test]
async fn the_first_offered_encoding_is_the_one_chosen() {
    let gw = start().await;
    let url = gw.ws_url("/open");
    let mut pb = Wire::offering(
        &url,
        Encoding::Proto,
        &["switchboard.v1.proto", "switchboard.v1"],
        &[],
    )
    .await;
    pb.send(json!({"type": "ping", "id": "1"})).await;
    assert_eq!(pb.recv().await, json!({"type": "pong", "id": "1"}));
    let mut js = Wire::offering(
        &url,
        Encoding::Json,
        &["switchboard.v1", "switchboard.v1.proto"],
        &[],
    )
    .await;
    js.send(json!({"type": "ping", "id": "2"})).await;
    assert_eq!(js.recv().await, json!({"type": "pong", "id": "2"}));
}

/// One pod of a NATS cluster: `/chat` as above (JWT, `chat:*`, history), presence on.
fn nats_config(nats: &str) -> String {
    ConfigBuilder::new()
        .nats(nats, "sbproto")
        .route(
            route("chat", "/chat")
                .jwt(jwt_hs256())
                .rooms(json!({
                    "join": ["chat:*"],
                    "publish": ["chat:*"],
                    "history": {"maxMessages": 1000, "maxAge": "10m"},
                    "presence": true,
                }))
                .messages_per_second(10_000, 10_000),
        )
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_protobuf_members_on_two_pods_over_nats_see_the_same_messages_and_seqs() {
    let nats = support::nats::NatsServer::start();
    let a = Gateway::start(&nats_config(&nats.url())).await;
    let b = Gateway::start(&nats_config(&nats.url())).await;
    // One member of each encoding on each pod.
    let mut members = Vec::new();
    for (gw, enc, sub) in [
        (&a, Encoding::Json, "a-json"),
        (&a, Encoding::Proto, "a-proto"),
        (&b, Encoding::Json, "b-json"),
        (&b, Encoding::Proto, "b-proto"),
    ] {
        let mut c = chat_client(gw, enc, sub).await;
        c.join_and_wait("chat:pods").await;
        members.push(c);
    }
    // Every member publishes, JSON and binary payloads, on both pods.
    let mut acked = Vec::new();
    for round in 0..3 {
        for c in &mut members {
            let id = if round == 2 {
                c.publish_b64("chat:pods", "AP8=").await.unwrap()
            } else {
                c.publish("chat:pods", json!({"round": round}))
                    .await
                    .unwrap()
            };
            acked.push(c.acked(&id).await.unwrap().expect("stored").seq);
        }
    }
    acked.sort_unstable();
    let mut seen = Vec::new();
    for c in &mut members {
        let got = c.messages("chat:pods", acked.len(), PROMPTLY).await;
        seen.push(
            got.iter()
                .map(|m| (m.position(), m.from.clone(), m.data.clone(), m.b64.clone()))
                .collect::<Vec<_>>(),
        );
    }
    let seqs: Vec<u64> = seen[0].iter().map(|m| m.0.seq).collect();
    assert_eq!(seqs, acked, "every acked publish, in position order");
    for (i, s) in seen.iter().enumerate().skip(1) {
        assert_eq!(s, &seen[0], "member {i} sees what member 0 sees");
    }
    for c in members {
        c.close().await;
    }
}
