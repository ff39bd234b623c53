//! Rooms mode over WebSocket (JSON protocol `switchboard.v1`) against the real binary with the
//! embedded bus: ordering and acks across members, authorization patterns (default deny, JWT
//! claims, the automatic user room), resume (exactly the gap, `recovered: false` past retention),
//! ephemeral messages, malformed frames, the 1009/1008/4008 closes, presence and drain.
//!
//! Application-like clients use the reference client (`support::room_client`); frame-exact
//! assertions use a plain JSON WebSocket (`support::rooms::JsonWs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::room_client::{Event, Options, Position, RoomClient};
use support::rooms::{
    JsonWs, PUBLISH_TOKEN, StalledMember, http_request, publish_api, publish_api_with_token,
};
use support::{ConfigBuilder, route};
use support::{
    Gateway, PROMPTLY, claims, eventually, expect_close, jwt_hs256, metric_sum, metrics_text,
    sign_hs256,
};
use tokio_tungstenite::tungstenite::Message;

/// Routes:
/// - `/chat` (namespace `app`): HS256 JWT; join `chat:*`, `user:{sub}`, `team:{org}:*`; publish
///   `chat:*`, `user:{sub}`, `team:{org}:*`; 5 messages of history; drain code 4100.
/// - `/here` (namespace `here`): HS256 JWT; join `chat:*`; presence on.
/// - `/open` (namespace `open`): anonymous; join and publish `chat:*`; no presence.
/// - `/strict` (namespace `strict`): anonymous; no patterns at all (default deny).
/// - `/slow` (namespace `slow`): anonymous; 64 KiB messages, 64 KiB queues, no rate limit to
///   speak of.
/// - `/brief` (namespace `brief`): anonymous; history kept for 3 seconds only.
/// - `/limited` (namespace `limited`): anonymous; 1 message/s with a burst of 5 (a slow refill, so
///   a stalled CI machine does not answer more than the burst plus one).
fn config() -> String {
    let chat = json!(["chat:*"]);
    ConfigBuilder::new()
        .drain("0s", "15s")
        .publish_token(PUBLISH_TOKEN)
        .route(
            route("chat", "/chat")
                .jwt(jwt_hs256())
                .rooms(json!({
                    "namespace": "app",
                    "join": ["chat:*", "user:{sub}", "team:{org}:*"],
                    "publish": ["chat:*", "user:{sub}", "team:{org}:*"],
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
        .route(route("strict", "/strict").rooms(json!({})).unset("drain"))
        .route(
            route("slow", "/slow")
                .rooms(json!({"join": ["feed"], "publish": ["feed"], "maxQueueBytes": 65536}))
                .max_message_bytes(65536)
                .messages_per_second(100_000, 100_000)
                .unset("drain"),
        )
        .route(
            route("brief", "/brief")
                .rooms(json!({
                    "join": chat,
                    "publish": chat,
                    "history": {"maxMessages": 100, "maxAge": "3s"},
                }))
                .unset("drain"),
        )
        .route(
            route("limited", "/limited")
                .rooms(json!({"join": chat, "publish": chat}))
                .messages_per_second(1, 5)
                .unset("drain"),
        )
        .yaml()
}

async fn start() -> Gateway {
    Gateway::start(&config()).await
}

/// A token for `sub` in org `acme`, valid for 10 minutes.
fn token(sub: &str) -> String {
    sign_hs256(&claims(sub, 600, json!({"org": "acme"})))
}

fn bearer(sub: &str) -> String {
    format!("Bearer {}", token(sub))
}

/// A reference client on `/chat` as `sub`.
async fn chat_client(gw: &Gateway, sub: &str) -> RoomClient {
    RoomClient::connected(Options::new(gw.ws_url("/chat")).bearer(&token(sub))).await
}

/// A plain JSON WebSocket on `/chat` as `sub`, past the automatic `joined` of its user room.
async fn chat_ws(gw: &Gateway, sub: &str) -> JsonWs {
    let mut ws = JsonWs::connect(&gw.ws_url("/chat"), &[("authorization", &bearer(sub))]).await;
    let first = ws.recv().await;
    assert_eq!(
        first,
        json!({"type": "joined", "room": format!("user:{sub}"), "recovered": false,
               "position": first["position"].clone()}),
        "the first message is the automatic join of the user room"
    );
    ws
}

#[tokio::test]
async fn members_see_every_publish_in_one_order_with_acks_positions_and_publishers() {
    let gw = start().await;
    let subs = ["alice", "bob", "carol"];
    let mut clients = Vec::new();
    for sub in subs {
        let mut c = chat_client(&gw, sub).await;
        let joined = c.join_and_wait("chat:lobby").await;
        assert_eq!(joined.seq, 0, "a new room starts at seq 0");
        clients.push(c);
    }

    // Each member publishes 4 messages, interleaved; the acks carry the stored positions.
    let mut acked = Vec::new(); // (position, publisher, data)
    for round in 0..4 {
        for (i, sub) in subs.iter().enumerate() {
            let data = json!({"text": format!("{sub} says {round}")});
            let id = clients[i]
                .publish("chat:lobby", data.clone())
                .await
                .expect("queue has room");
            let pos = clients[i]
                .acked(&id)
                .await
                .expect("the publish is accepted")
                .expect("a stored publish is acked with its position");
            acked.push((pos, sub.to_string(), data));
        }
    }
    let seqs: Vec<u64> = acked.iter().map(|(p, _, _)| p.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "positions increase in publish order: {seqs:?}"
    );

    // Every member (publishers included) gets all 12, in the same order, matching the acks.
    for (i, c) in clients.iter_mut().enumerate() {
        let got = c.messages("chat:lobby", acked.len(), PROMPTLY).await;
        let seen: Vec<(Position, String, Value)> = got
            .iter()
            .map(|m| {
                (
                    m.position(),
                    m.from.as_ref().expect("from")["sub"]
                        .as_str()
                        .expect("from.sub")
                        .to_owned(),
                    m.data.clone().expect("data"),
                )
            })
            .collect();
        assert_eq!(seen, acked, "member {} ({})", i, subs[i]);
        assert!(got.iter().all(|m| !m.ephemeral && m.ts > 0));
    }

    // Concurrent publishers (no waiting for acks): every member still sees one and the same
    // order, the order of the positions.
    for round in 0..10 {
        for (i, c) in clients.iter().enumerate() {
            c.publish("chat:lobby", json!({"burst": format!("{i}.{round}")}))
                .await
                .expect("queue has room");
        }
    }
    let mut orders = Vec::new();
    for c in &mut clients {
        let got = c.messages("chat:lobby", 30, PROMPTLY).await;
        let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        orders.push(
            got.iter()
                .map(|m| (m.seq, m.data.clone().unwrap()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[0], orders[2]);

    // Binary payloads round-trip as base64.
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
        assert_eq!(
            c.stats()
                .duplicates
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        c.close().await;
    }
}

#[tokio::test]
async fn joins_and_publishes_outside_the_patterns_are_forbidden_and_no_patterns_deny_everything() {
    let gw = start().await;
    let mut ws = chat_ws(&gw, "alice").await;
    ws.send(json!({"type": "join", "room": "secret:plans", "id": "1"}))
        .await;
    assert_eq!(
        ws.recv().await,
        json!({"type": "error", "code": "forbidden", "reason": "not allowed to join this room", "id": "1"})
    );
    ws.send(json!({"type": "publish", "room": "secret:plans", "data": 1, "id": "2"}))
        .await;
    assert_eq!(
        ws.recv().await,
        json!({"type": "error", "code": "forbidden", "reason": "not allowed to publish to this room", "id": "2"})
    );
    ws.send(json!({"type": "leave", "room": "chat:never-joined", "id": "3"}))
        .await;
    assert_eq!(
        ws.recv().await,
        json!({"type": "error", "code": "not_joined", "reason": "not in this room", "id": "3"})
    );
    // Joining, leaving and joining again is fine.
    ws.join("chat:lobby").await;
    ws.send(json!({"type": "leave", "room": "chat:lobby", "id": "4"}))
        .await;
    assert_eq!(
        ws.recv().await,
        json!({"type": "left", "room": "chat:lobby", "id": "4"})
    );

    // A route without patterns: nothing can be joined or published, the connection lives on.
    let mut strict = JsonWs::connect(&gw.ws_url("/strict"), &[]).await;
    for (i, room) in ["chat:lobby", "user:alice", "x"].into_iter().enumerate() {
        strict
            .send(json!({"type": "join", "room": room, "id": format!("j{i}")}))
            .await;
        let v = strict.recv().await;
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{v}"
        );
        strict
            .send(json!({"type": "publish", "room": room, "data": 1, "id": format!("p{i}")}))
            .await;
        let v = strict.recv().await;
        assert_eq!(
            (v["code"].as_str(), v["id"].as_str()),
            (Some("forbidden"), Some(format!("p{i}").as_str())),
            "{v}"
        );
    }
    strict
        .send(json!({"type": "ping", "id": "still-here"}))
        .await;
    assert_eq!(
        strict.recv().await,
        json!({"type": "pong", "id": "still-here"})
    );

    // Raw rooms and SSE are refused before any stream starts when the room is not allowed.
    let (status, body) = support::http_get_with(gw.addr(), "/strict?rooms=chat:lobby", &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("room_forbidden"), "{body}");
}

#[tokio::test]
async fn claim_patterns_follow_the_token_of_each_connection() {
    let gw = start().await;
    let mut alice = chat_ws(&gw, "alice").await;
    // `team:{org}:*` with org=acme.
    alice.join("team:acme:general").await;
    alice
        .send(json!({"type": "join", "room": "team:other:general", "id": "x"}))
        .await;
    assert_eq!(alice.recv().await["code"], "forbidden");
    // `user:{sub}`: her own user room, not bob's.
    alice
        .send(json!({"type": "join", "room": "user:bob", "id": "y"}))
        .await;
    assert_eq!(alice.recv().await["code"], "forbidden");
    alice
        .send(json!({"type": "publish", "room": "user:bob", "data": "psst", "id": "z"}))
        .await;
    assert_eq!(alice.recv().await["code"], "forbidden");
    alice
        .send(json!({"type": "publish", "room": "user:alice", "data": "note to self", "id": "w"}))
        .await;
    let (ack, before) = alice.recv_type("ack").await;
    assert_eq!(ack["id"], "w");
    let own: Vec<&Value> = before.iter().filter(|v| v["type"] == "message").collect();
    let own = match own.as_slice() {
        [m] => (*m).clone(),
        [] => alice.recv().await,
        more => panic!("one message expected, got {more:?}"),
    };
    assert_eq!(
        (
            own["room"].as_str(),
            own["data"].as_str(),
            own["from"]["sub"].as_str()
        ),
        (Some("user:alice"), Some("note to self"), Some("alice"))
    );

    // A token without `org` matches no `team:{org}:*` room at all.
    let no_org = sign_hs256(&claims("dave", 600, json!({})));
    let mut dave = JsonWs::connect(
        &gw.ws_url("/chat"),
        &[("authorization", &format!("Bearer {no_org}"))],
    )
    .await;
    assert_eq!(dave.recv().await["room"], "user:dave");
    dave.send(json!({"type": "join", "room": "team:acme:general", "id": "t"}))
        .await;
    assert_eq!(dave.recv().await["code"], "forbidden");

    // Without a token there is no connection at all.
    let refused = JsonWs::try_connect(&gw.ws_url("/chat"), &[]).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        Err(other) => panic!("expected a 401, got {other}"),
        Ok(_) => panic!("a connection without a token was accepted"),
    }
}

#[tokio::test]
async fn the_publish_api_reaches_every_device_of_a_user_through_the_user_room() {
    let gw = start().await;
    let mut phone = chat_client(&gw, "alice").await;
    let mut laptop = chat_client(&gw, "alice").await;
    let mut bob = chat_client(&gw, "bob").await;
    for (c, sub) in [
        (&mut phone, "alice"),
        (&mut laptop, "alice"),
        (&mut bob, "bob"),
    ] {
        let room = format!("user:{sub}");
        let recovered = c
            .expect("the automatic user room", PROMPTLY, |e| match e {
                Event::Joined {
                    room: r, recovered, ..
                } if *r == room => Some(*recovered),
                _ => None,
            })
            .await;
        assert!(!recovered);
    }

    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "app", "users": ["alice"], "data": {"notice": "invoice paid"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{body}");
    assert_eq!(results[0]["room"], "user:alice");
    assert_eq!(results[0]["seq"], 1);
    let epoch = results[0]["epoch"].as_str().expect("epoch").to_owned();

    for device in [&mut phone, &mut laptop] {
        let m = device.messages("user:alice", 1, PROMPTLY).await.remove(0);
        assert_eq!(m.data, Some(json!({"notice": "invoice paid"})));
        assert_eq!(m.position(), Position::new(1, &epoch));
        assert_eq!(m.from, None, "publish API messages have no publisher");
    }
    // Bob got nothing of it: his first user-room message is his own.
    let (status, _) = publish_api(
        gw.admin(),
        &json!({"namespace": "app", "users": ["bob"], "data": "for bob"}),
    )
    .await;
    assert_eq!(status, 200);
    let got = bob.messages("user:bob", 1, PROMPTLY).await;
    assert_eq!(got[0].data, Some(json!("for bob")));
    assert!(
        !bob.take_events()
            .iter()
            .any(|e| matches!(e, Event::Message(m) if m.room == "user:alice")),
        "bob must not see alice's user room"
    );

    // Many rooms and users in one call, in target order.
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "app", "room": "chat:a", "rooms": ["chat:b"], "users": ["alice", "bob"], "data": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rooms: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, ["chat:a", "chat:b", "user:alice", "user:bob"]);

    // Refusals of the API itself.
    let (status, _) = publish_api_with_token(
        gw.admin(),
        "wrong",
        &json!({"namespace": "app", "room": "chat:a", "data": 1}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = publish_api_with_token(
        gw.admin(),
        "",
        &json!({"namespace": "app", "room": "chat:a", "data": 1}),
    )
    .await;
    assert_eq!(status, 401);
    // The scheme is case-insensitive (RFC 9110 §11.1); two credentials are refused, not the
    // first one read.
    let call = json!({"namespace": "app", "room": "chat:a", "data": 1}).to_string();
    let lower = format!("bearer {PUBLISH_TOKEN}");
    let right = format!("Bearer {PUBLISH_TOKEN}");
    for (auth, want) in [
        (vec![lower.as_str()], 200),
        (vec![right.as_str(), "Bearer forged"], 400),
        (vec!["Bearer forged", right.as_str()], 400),
    ] {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(auth.iter().map(|a| ("authorization", *a)));
        let (status, _, text) =
            http_request(gw.admin(), "POST", "/v1/publish", &headers, call.clone()).await;
        assert_eq!(status, want, "{auth:?}: {text}");
        if want == 400 {
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["error"], "repeated Authorization", "{text}");
        }
    }
    let (status, body) = publish_api(gw.admin(), &json!({"room": "chat:a", "data": 1})).await;
    assert_eq!(status, 400, "several namespaces: it must be named: {body}");
    let (status, _) = publish_api(
        gw.admin(),
        &json!({"namespace": "nope", "room": "chat:a", "data": 1}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = publish_api(
        gw.admin(),
        &json!({"namespace": "app", "room": "bad room", "data": 1}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = publish_api(gw.admin(), &json!({"namespace": "app", "room": "chat:a"})).await;
    assert_eq!(status, 400, "no payload");
    let (status, _) = publish_api(gw.admin(), &json!({"namespace": "app", "data": 1})).await;
    assert_eq!(status, 400, "no target");
}

#[tokio::test]
async fn a_member_that_resumes_gets_exactly_the_gap_then_live_messages() {
    let gw = start().await;
    let mut member = chat_client(&gw, "alice").await;
    member.join_and_wait("chat:resume").await;
    let mut publisher = chat_ws(&gw, "bob").await;
    let mut send = async |n: u64| {
        publisher
            .send(json!({"type": "publish", "room": "chat:resume", "data": n, "id": n.to_string()}))
            .await;
        let (ack, _) = publisher.recv_type("ack").await;
        ack["seq"].as_u64().expect("seq")
    };
    for n in 1..=2 {
        send(n).await;
    }
    let before = member.messages("chat:resume", 2, PROMPTLY).await;
    assert_eq!(
        before
            .iter()
            .map(|m| m.data.clone().unwrap())
            .collect::<Vec<_>>(),
        [json!(1), json!(2)]
    );

    // Offline while 3, 4 and 5 are published (history keeps 5).
    member.go_offline();
    member
        .expect("the disconnect", PROMPTLY, |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await;
    for n in 3..=5 {
        send(n).await;
    }
    member.reconnect();
    let (recovered, resumed, position) = member
        .expect("the resumed join", PROMPTLY, |e| match e {
            Event::Joined {
                room,
                recovered,
                resumed,
                position,
            } if room == "chat:resume" => Some((*recovered, *resumed, position.clone())),
            _ => None,
        })
        .await;
    assert!(resumed && recovered, "the gap is retained");
    assert_eq!(position.seq, 5, "joined reports the position after the gap");
    let seq6 = send(6).await;
    let after = member.messages("chat:resume", 4, PROMPTLY).await;
    assert_eq!(
        after
            .iter()
            .map(|m| (m.seq, m.data.clone().unwrap()))
            .collect::<Vec<_>>(),
        [
            (3, json!(3)),
            (4, json!(4)),
            (5, json!(5)),
            (seq6, json!(6))
        ],
        "exactly the gap, then live"
    );

    // The same at the frame level: join with `since` gets `joined` then exactly the gap.
    let epoch = position.epoch.clone();
    let mut raw = chat_ws(&gw, "carol").await;
    raw.send(json!({"type": "join", "room": "chat:resume", "since": {"seq": 4, "epoch": epoch}, "id": "r"}))
        .await;
    assert_eq!(
        raw.recv().await,
        json!({"type": "joined", "room": "chat:resume", "recovered": true,
               "position": {"seq": 6, "epoch": epoch}, "id": "r"})
    );
    let gap = raw.messages(2).await;
    assert_eq!(
        gap.iter()
            .map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone()))
            .collect::<Vec<_>>(),
        [(5, json!(5)), (6, json!(6))]
    );
    // Resuming at the head: recovered with nothing to replay.
    raw.send(json!({"type": "join", "room": "chat:resume", "since": {"seq": 6, "epoch": epoch}, "id": "h"}))
        .await;
    let v = raw.recv().await;
    assert_eq!(
        (v["recovered"].as_bool(), v["position"]["seq"].as_u64()),
        (Some(true), Some(6)),
        "{v}"
    );
    raw.expect_nothing_queued().await;
}

#[tokio::test]
async fn publishes_queued_while_offline_are_sent_in_order_after_the_reconnect() {
    let gw = start().await;
    let mut member = chat_client(&gw, "bob").await;
    member.join_and_wait("chat:queue").await;
    let mut writer = RoomClient::connected(
        Options::new(gw.ws_url("/chat"))
            .bearer(&token("alice"))
            .queue_limit(3),
    )
    .await;
    writer.join_and_wait("chat:queue").await;

    writer.go_offline();
    writer
        .expect("the disconnect", PROMPTLY, |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            writer
                .publish("chat:queue", json!(n))
                .await
                .expect("queued"),
        );
    }
    assert!(
        writer.publish("chat:queue", json!(4)).await.is_err(),
        "the queue is bounded"
    );
    writer.reconnect();
    let n = writer
        .expect("the second connection", PROMPTLY, |e| match e {
            Event::Connected { n } => Some(*n),
            _ => None,
        })
        .await;
    assert_eq!(n, 2);
    let mut positions = Vec::new();
    for id in &ids {
        positions.push(
            writer
                .acked(id)
                .await
                .expect("accepted")
                .expect("stored")
                .seq,
        );
    }
    let got = member.messages("chat:queue", 3, PROMPTLY).await;
    assert_eq!(
        got.iter()
            .map(|m| (m.seq, m.data.clone().unwrap()))
            .collect::<Vec<_>>(),
        positions
            .iter()
            .zip(1..=3)
            .map(|(s, n)| (*s, json!(n)))
            .collect::<Vec<_>>(),
        "sent once each, in order, after the reconnect"
    );

    // A dropped connection (no close handshake) is re-established on its own, and the room is
    // resumed: what was published meanwhile arrives exactly once.
    writer.drop_connection();
    let (status, _) = publish_api(
        gw.admin(),
        &json!({"namespace": "app", "room": "chat:queue", "data": "meanwhile"}),
    )
    .await;
    assert_eq!(status, 200);
    writer
        .expect("the third connection", PROMPTLY, |e| {
            matches!(e, Event::Connected { n: 3 }).then_some(())
        })
        .await;
    let own = writer.messages("chat:queue", 4, PROMPTLY).await;
    assert_eq!(
        own.iter()
            .map(|m| m.data.clone().unwrap())
            .collect::<Vec<_>>(),
        [json!(1), json!(2), json!(3), json!("meanwhile")]
    );
}

#[tokio::test]
async fn a_resume_past_the_retained_history_reports_recovered_false() {
    let gw = start().await;
    let mut member = chat_client(&gw, "alice").await;
    member.join_and_wait("chat:busy").await;
    let publish = async |n: i64| {
        let (status, body) = publish_api(
            gw.admin(),
            &json!({"namespace": "app", "room": "chat:busy", "data": n}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["results"][0]["seq"].as_u64().unwrap()
    };
    publish(1).await;
    assert_eq!(member.messages("chat:busy", 1, PROMPTLY).await[0].seq, 1);

    member.go_offline();
    member
        .expect("the disconnect", PROMPTLY, |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await;
    // 8 more: seq 2..=9; history keeps 5 (5..=9), so 2, 3 and 4 are gone.
    for n in 2..=9 {
        publish(n).await;
    }
    member.reconnect();
    let joined = member
        .expect("the resumed join", PROMPTLY, |e| match e {
            Event::Joined { room, .. } if room == "chat:busy" => Some(e.clone()),
            _ => None,
        })
        .await;
    assert!(joined.is_loss(), "{joined:?}");
    let Event::Joined { position, .. } = joined else {
        unreachable!()
    };
    assert_eq!(position.seq, 9, "the room's current position");
    // Nothing is replayed; live delivery continues after the current position.
    let seq = publish(10).await;
    let live = member.messages("chat:busy", 1, PROMPTLY).await;
    assert_eq!((live[0].seq, live[0].data.clone()), (seq, Some(json!(10))));

    // Frame level: a seq ahead of the room, and a gap that is gone.
    let mut raw = chat_ws(&gw, "bob").await;
    for (i, since) in [
        json!({"seq": 1000, "epoch": position.epoch}),
        json!({"seq": 2, "epoch": position.epoch}),
    ]
    .into_iter()
    .enumerate()
    {
        raw.send(json!({"type": "join", "room": "chat:busy", "since": since, "id": i.to_string()}))
            .await;
        let v = raw.recv().await;
        assert_eq!(
            v,
            json!({"type": "joined", "room": "chat:busy", "recovered": false,
                   "position": {"seq": 10, "epoch": position.epoch}, "id": i.to_string()}),
            "since {since}"
        );
    }
    raw.expect_nothing_queued().await;
    // Another epoch: not recovered, but what this epoch retains (6..=10) follows, oldest first.
    raw.send(json!({"type": "join", "room": "chat:busy", "id": "e",
                    "since": {"seq": 9, "epoch": "some-other-epoch"}}))
        .await;
    assert_eq!(
        raw.recv().await,
        json!({"type": "joined", "room": "chat:busy", "recovered": false,
               "position": {"seq": 5, "epoch": position.epoch}, "id": "e"})
    );
    let retained: Vec<u64> = raw
        .messages(5)
        .await
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(retained, vec![6, 7, 8, 9, 10]);
    raw.expect_nothing_queued().await;
}

#[tokio::test]
async fn a_resume_past_the_history_max_age_reports_recovered_false() {
    let gw = start().await;
    let mut ws = JsonWs::connect(&gw.ws_url("/brief"), &[]).await;
    ws.join("chat:old").await;
    ws.send(json!({"type": "publish", "room": "chat:old", "data": "soon gone", "id": "p"}))
        .await;
    let (ack, _) = ws.recv_type("ack").await;
    let since = json!({"seq": ack["seq"].as_u64().unwrap() - 1, "epoch": ack["epoch"]});
    // Within maxAge the message is replayed...
    ws.send(json!({"type": "join", "room": "chat:old", "since": since, "id": "r1"}))
        .await;
    let (joined, _) = ws.recv_type("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    // ...and once it is older than maxAge (3s), it is gone.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    ws.send(json!({"type": "join", "room": "chat:old", "since": since, "id": "r2"}))
        .await;
    let (joined, _) = ws.recv_type("joined").await;
    assert_eq!(
        (joined["id"].as_str(), joined["recovered"].as_bool()),
        (Some("r2"), Some(false)),
        "{joined}"
    );
}

#[tokio::test]
async fn ephemeral_messages_are_delivered_live_but_never_stored_or_replayed() {
    let gw = start().await;
    let mut member = chat_ws(&gw, "alice").await;
    let joined = member.join("chat:typing").await;
    let epoch = joined["position"]["epoch"].as_str().unwrap().to_owned();
    let mut publisher = chat_ws(&gw, "bob").await;

    publisher
        .send(json!({"type": "publish", "room": "chat:typing", "data": {"typing": true}, "ephemeral": true, "id": "e"}))
        .await;
    assert_eq!(
        publisher.recv().await,
        json!({"type": "ack", "id": "e"}),
        "an ephemeral publish is acked without a position"
    );
    publisher
        .send(json!({"type": "publish", "room": "chat:typing", "data": "stored", "id": "s"}))
        .await;
    let ack = publisher.recv().await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "app", "room": "chat:typing", "data": "api typing", "ephemeral": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["seq"], Value::Null, "{body}");

    let live = member.messages(3).await;
    assert_eq!(live[0]["ephemeral"], true);
    assert_eq!(live[0]["seq"], 0);
    assert_eq!(live[0]["data"], json!({"typing": true}));
    assert_eq!(live[0]["from"], json!({"sub": "bob"}));
    assert_eq!(
        (live[1]["seq"].as_u64(), live[1].get("ephemeral")),
        (Some(1), None)
    );
    assert_eq!(
        (live[2]["seq"].as_u64(), &live[2]["ephemeral"]),
        (Some(0), &json!(true))
    );

    // A late joiner resuming from the very beginning gets the stored message only.
    let mut late = chat_ws(&gw, "carol").await;
    late.send(json!({"type": "join", "room": "chat:typing", "since": {"seq": 0, "epoch": epoch}, "id": "l"}))
        .await;
    let v = late.recv().await;
    assert_eq!(
        (v["type"].as_str(), v["recovered"].as_bool()),
        (Some("joined"), Some(true)),
        "{v}"
    );
    let replay = late.messages(1).await;
    assert_eq!(replay[0]["data"], "stored");
    late.expect_nothing_queued().await;
}

#[tokio::test]
async fn malformed_frames_get_error_replies_and_every_connection_keeps_working() {
    let gw = start().await;
    let mut bad = chat_ws(&gw, "mallory").await;
    bad.join("chat:robust").await;
    let mut other = chat_ws(&gw, "alice").await;
    other.join("chat:robust").await;

    let cases: &[(&str, Option<&str>)] = &[
        ("not json", None),
        ("[]", None),
        ("{}", None),
        (r#"{"type":"dance","id":"d1"}"#, Some("d1")),
        (r#"{"type":"join","id":"d2"}"#, Some("d2")),
        (r#"{"type":"join","room":5,"id":"d3"}"#, Some("d3")),
        (
            r#"{"type":"join","room":"chat:x","extra":1,"id":"d4"}"#,
            Some("d4"),
        ),
        (
            r#"{"type":"publish","room":"chat:robust","id":"d5"}"#,
            Some("d5"),
        ),
        (
            r#"{"type":"publish","room":"chat:robust","data":1,"b64":"AA==","id":"d6"}"#,
            Some("d6"),
        ),
        (
            r#"{"type":"publish","room":"chat:robust","b64":"***","id":"d7"}"#,
            Some("d7"),
        ),
        (
            r#"{"type":"join","room":"chat:x","since":{"seq":"one"},"id":"d8"}"#,
            Some("d8"),
        ),
    ];
    for (frame, id) in cases {
        bad.send_text(frame).await;
        let v = bad.recv().await;
        assert_eq!(v["type"], "error", "{frame}: {v}");
        assert_eq!(v["code"], "bad_request", "{frame}: {v}");
        assert!(
            !v["reason"].as_str().unwrap_or_default().is_empty(),
            "{frame}: {v}"
        );
        assert_eq!(v["id"].as_str(), *id, "{frame}: {v}");
    }
    bad.ws
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send binary");
    let v = bad.recv().await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{v}"
    );

    // Still a working member, and the others never noticed.
    bad.send(
        json!({"type": "publish", "room": "chat:robust", "data": "after the noise", "id": "ok"}),
    )
    .await;
    let (ack, _) = bad.recv_type("ack").await;
    assert_eq!(ack["id"], "ok");
    let m = other.messages(1).await.remove(0);
    assert_eq!(
        (m["data"].as_str(), m["from"]["sub"].as_str()),
        (Some("after the noise"), Some("mallory"))
    );
    other.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(other.recv().await, json!({"type": "pong", "id": "p"}));
}

#[tokio::test]
async fn a_message_over_max_message_bytes_closes_that_connection_with_1009() {
    let gw = start().await;
    let mut big = chat_ws(&gw, "alice").await;
    let mut other = chat_ws(&gw, "bob").await;
    other.join("chat:size").await;
    let data = "x".repeat(5000); // the route allows 4096 bytes
    big.send(json!({"type": "publish", "room": "chat:size", "data": data}))
        .await;
    let (code, reason, before) = expect_close(&mut big.ws, PROMPTLY).await;
    assert_eq!(
        (code, reason.as_str()),
        (1009, "message too big"),
        "{before:?}"
    );

    other
        .send(json!({"type": "publish", "room": "chat:size", "data": "small", "id": "s"}))
        .await;
    let (ack, _) = other.recv_type("ack").await;
    assert_eq!(ack["seq"], 1, "the oversized message was never published");
    let (m, _) = other.recv_type("message").await;
    assert_eq!(m["data"], "small");
    eventually("the 1009 close in the metrics", PROMPTLY, || async {
        metric_sum(
            &metrics_text(&gw).await,
            "switchboard_closes_total",
            &[
                ("route", "chat"),
                ("code", "1009"),
                ("cause", "message_too_big"),
            ],
        ) == 1.0
    })
    .await;
}

#[tokio::test]
async fn a_frame_length_with_the_high_bit_set_closes_with_1002_not_1009() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = start().await;
    let head = support::upgrade_head("/open", &[("Sec-WebSocket-Protocol", "switchboard.v1")]);
    let (resp, mut sock, mut buf) = support::raw_exchange(gw.addr(), &head)
        .await
        .expect("upgrade /open");
    assert_eq!(resp.status, 101, "{resp:?}");
    // A masked binary frame whose 64-bit length has the most significant bit set: RFC 6455
    // §5.2 says that bit must be 0, so this is a framing error, not a large message.
    let mut frame = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
    frame.extend_from_slice(&[1, 2, 3, 4]);
    sock.write_all(&frame).await.expect("write the frame");
    // Read until the server's Close frame (unmasked: 0x88, length, code).
    let code = tokio::time::timeout(PROMPTLY, async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(i) = buf.iter().position(|&b| b == 0x88)
                && buf.len() >= i + 4
            {
                return Some(u16::from_be_bytes([buf[i + 2], buf[i + 3]]));
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("a close within PROMPTLY");
    assert_eq!(
        code,
        Some(1002),
        "close code for a length with the high bit set"
    );
}

#[tokio::test]
async fn messages_faster_than_the_rate_limit_close_the_connection_with_1008() {
    let gw = start().await;
    let mut fast = JsonWs::connect(&gw.ws_url("/limited"), &[]).await;
    let mut calm = JsonWs::connect(&gw.ws_url("/limited"), &[]).await;
    calm.join("chat:rate").await;
    for i in 0..20 {
        // The close can arrive while we are still sending.
        if fast
            .ws
            .send(Message::text(
                json!({"type": "ping", "id": i.to_string()}).to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason, before) = expect_close(&mut fast.ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (1008, "message rate exceeded"));
    let pongs: Vec<Value> = before
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
            _ => None,
        })
        .collect();
    assert!(
        pongs.len() <= 6 && pongs.iter().all(|p| p["type"] == "pong"),
        "at most the burst (5, plus one refill) is answered before the close: {pongs:?}"
    );
    assert_eq!(
        pongs.iter().map(|p| p["id"].clone()).collect::<Vec<_>>(),
        (0..pongs.len())
            .map(|i| json!(i.to_string()))
            .collect::<Vec<_>>(),
        "answered in order"
    );
    calm.send(json!({"type": "ping", "id": "calm"})).await;
    assert_eq!(calm.recv().await, json!({"type": "pong", "id": "calm"}));
}

/// Pings and empty fragments are never a message, yet each costs the gateway a read: they are
/// charged to the same rate (a ping one, a fragment a sixteenth), as in proxy mode. Before, one
/// connection sending nothing else kept a core busy and was never closed.
#[tokio::test]
async fn a_flood_of_pings_or_of_empty_fragments_closes_with_1008() {
    let gw = start().await;
    for flood in ["pings", "fragments"] {
        let mut ws = JsonWs::connect(&gw.ws_url("/limited"), &[]).await;
        let frames: Vec<Message> =
            if flood == "pings" {
                (0..40).map(|_| Message::Ping(Vec::new().into())).collect()
            } else {
                std::iter::once(Message::Frame(
                    tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                        b"{".to_vec(),
                        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                        ),
                        false,
                    ),
                ))
                .chain((0..40 * 16).map(|_| {
                    Message::Frame(tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                    Vec::new(),
                    tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                        tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Continue,
                    ),
                    false,
                ))
                }))
                .collect()
            };
        for f in frames {
            if ws.ws.send(f).await.is_err() {
                break; // the close can arrive while we are still sending
            }
        }
        // The gateway stops reading once it closes: tungstenite's own replies to the flood
        // can then fail, so only the Close is looked for.
        let code = tokio::time::timeout(PROMPTLY, async {
            while let Some(m) = futures_util::StreamExt::next(&mut ws.ws).await {
                if let Ok(Message::Close(c)) = m {
                    return c.map(|c| u16::from(c.code));
                }
            }
            None
        })
        .await
        .expect("a Close in time");
        assert_eq!(code, Some(1008), "{flood}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_is_closed_with_4008_while_the_others_get_everything() {
    let gw = start().await;
    let mut stalled = StalledMember::connect(gw.addr(), "/slow").await;
    stalled
        .send_text(&json!({"type": "join", "room": "feed", "id": "s"}).to_string())
        .await;
    let mut fast = JsonWs::connect(&gw.ws_url("/slow"), &[]).await;
    fast.join("feed").await;
    let mut publisher = JsonWs::connect(&gw.ws_url("/slow"), &[]).await;

    // 12 MiB in 200 messages of 60 KiB: far more than the stalled member's socket buffers plus
    // its 64 KiB queue. The publisher waits for the fast member to get each message, so the
    // fast member never has more than one message queued.
    const N: usize = 200;
    let chunk = "y".repeat(60 * 1024);
    for i in 0..N {
        publisher
            .send(json!({"type": "publish", "room": "feed", "data": {"n": i, "pad": chunk}}))
            .await;
        let m = loop {
            let v = fast.recv().await;
            if v["type"] == "message" {
                break v;
            }
        };
        assert_eq!(
            m["data"]["n"], i,
            "the fast member gets every message, in order"
        );
    }

    // The stalled member is closed as a slow consumer although it never reads.
    eventually(
        "the slow consumer's 4008 close",
        Duration::from_secs(30),
        || async {
            metric_sum(
                &metrics_text(&gw).await,
                "switchboard_closes_total",
                &[
                    ("route", "slow"),
                    ("code", "4008"),
                    ("cause", "slow_consumer"),
                ],
            ) == 1.0
        },
    )
    .await;
    // What it had been sent is an in-order prefix, and its stream ends (with Close 4008 if the
    // Close frame fit into its socket before the gateway gave up on it).
    let frames = stalled.read_to_end(PROMPTLY).await;
    let mut ns = Vec::new();
    for (opcode, payload) in &frames {
        match opcode {
            1 => {
                let v: Value = serde_json::from_slice(payload).expect("JSON text frame");
                if v["type"] == "message" {
                    ns.push(v["data"]["n"].as_u64().unwrap());
                }
            }
            8 => assert_eq!(
                u16::from_be_bytes([payload[0], payload[1]]),
                4008,
                "{:?}",
                String::from_utf8_lossy(&payload[2..])
            ),
            other => panic!("unexpected opcode {other}"),
        }
    }
    assert!(
        ns.iter().enumerate().all(|(i, n)| *n == i as u64),
        "a prefix in order: {ns:?}"
    );
    assert!(
        ns.len() < N,
        "the stalled member cannot have received everything"
    );

    // The fast member is still fine.
    publisher
        .send(json!({"type": "publish", "room": "feed", "data": "after"}))
        .await;
    let (m, _) = fast.recv_type("message").await;
    assert_eq!(m["data"], "after");
}

/// A plain JSON WebSocket on `/here` (presence on) as `sub`, past the automatic join of its
/// user room and the presence event of that join.
async fn presence_ws(gw: &Gateway, sub: &str) -> JsonWs {
    let mut ws = JsonWs::connect(&gw.ws_url("/here"), &[("authorization", &bearer(sub))]).await;
    let user_room = format!("user:{sub}");
    let joined = ws.recv().await;
    assert_eq!(
        (joined["type"].as_str(), joined["room"].as_str()),
        (Some("joined"), Some(user_room.as_str()))
    );
    let ev = ws.recv().await;
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["room"].as_str(),
            ev["event"].as_str(),
            ev["member"]["user"].as_str()
        ),
        (
            Some("presence"),
            Some(user_room.as_str()),
            Some("join"),
            Some(sub)
        ),
        "the user room is a presence room too: {ev}"
    );
    ws
}

#[tokio::test]
async fn presence_announces_joins_and_leaves_and_answers_snapshots() {
    let gw = start().await;
    let mut alice = presence_ws(&gw, "alice").await;
    alice.join("chat:here").await;
    let me = alice.recv().await;
    assert_eq!(
        (
            me["type"].as_str(),
            me["event"].as_str(),
            me["member"]["user"].as_str()
        ),
        (Some("presence"), Some("join"), Some("alice")),
        "a member sees its own join: {me}"
    );
    let alice_conn = me["member"]["conn"].as_str().unwrap().to_owned();

    let mut bob = presence_ws(&gw, "bob").await;
    bob.join("chat:here").await;
    assert_eq!(bob.recv().await["event"], "join", "bob's own join");
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
    let bob_conn = ev["member"]["conn"].as_str().unwrap().to_owned();
    assert_ne!(alice_conn, bob_conn);

    alice
        .send(json!({"type": "presence", "room": "chat:here", "id": "who"}))
        .await;
    let snap = alice.recv().await;
    let mut members: Vec<(String, String)> = snap["members"]
        .as_array()
        .unwrap_or_else(|| panic!("a snapshot: {snap}"))
        .iter()
        .map(|m| {
            (
                m["conn"].as_str().unwrap().to_owned(),
                m["user"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    let mut want = vec![
        (alice_conn.clone(), "alice".to_owned()),
        (bob_conn.clone(), "bob".to_owned()),
    ];
    want.sort();
    assert_eq!(
        (snap["type"].as_str(), snap["id"].as_str()),
        (Some("presence"), Some("who"))
    );
    assert_eq!(members, want);

    // Leaving (explicitly, then by disconnecting) is announced.
    bob.send(json!({"type": "leave", "room": "chat:here", "id": "bye"}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "left", "room": "chat:here", "id": "bye"})
    );
    let ev = alice.recv().await;
    assert_eq!(
        (ev["event"].as_str(), ev["member"]["conn"].as_str()),
        (Some("leave"), Some(bob_conn.as_str())),
        "{ev}"
    );
    bob.join("chat:here").await;
    let ev = alice.recv().await;
    assert_eq!(ev["event"], "join");
    support::close_normally(&mut bob.ws).await;
    let ev = alice.recv().await;
    assert_eq!(
        (ev["event"].as_str(), ev["member"]["user"].as_str()),
        (Some("leave"), Some("bob")),
        "{ev}"
    );
    alice
        .send(json!({"type": "presence", "room": "chat:here", "id": "again"}))
        .await;
    let snap = alice.recv().await;
    assert_eq!(snap["members"].as_array().map(Vec::len), Some(1), "{snap}");

    // Presence of a room one is not in, and on a route without presence.
    alice
        .send(json!({"type": "presence", "room": "chat:elsewhere", "id": "n"}))
        .await;
    assert_eq!(alice.recv().await["code"], "not_joined");
    let mut open = JsonWs::connect(&gw.ws_url("/open"), &[]).await;
    open.join("chat:here").await;
    open.send(json!({"type": "presence", "room": "chat:here", "id": "off"}))
        .await;
    let v = open.recv().await;
    assert_eq!(
        (v["code"].as_str(), v["reason"].as_str()),
        (Some("bad_request"), Some("presence is off for this route"))
    );
}

#[tokio::test]
async fn sigterm_sends_shutdown_then_closes_with_the_routes_drain_code() {
    let mut gw = start().await;
    let mut raw = chat_ws(&gw, "alice").await;
    raw.join("chat:drain").await;
    let mut client =
        RoomClient::connected(Options::new(gw.ws_url("/chat")).bearer(&token("bob"))).await;
    client.join_and_wait("chat:drain").await;

    gw.terminate();
    let (code, reason, before) = expect_close(&mut raw.ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (4100, "pod restarting"));
    let texts: Vec<Value> = before
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
            _ => None,
        })
        .collect();
    let hint = texts
        .last()
        .unwrap_or_else(|| panic!("a shutdown message before the close: {before:?}"));
    assert_eq!(hint["type"], "shutdown", "{texts:?}");
    let ms = hint["reconnectAfterMs"].as_u64().expect("reconnectAfterMs");
    assert!((500..5000).contains(&ms), "{ms}");

    let ms = client
        .expect("the shutdown hint", PROMPTLY, |e| match e {
            Event::Shutdown { reconnect_after_ms } => Some(*reconnect_after_ms),
            _ => None,
        })
        .await;
    assert!((500..5000).contains(&ms));
    let (code, reason) = client
        .expect("the drain close", PROMPTLY, |e| match e {
            Event::Disconnected { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
        .await;
    assert_eq!((code, reason.as_str()), (Some(4100), "pod restarting"));
    assert!(gw.wait_exit(PROMPTLY).await.is_some_and(|s| s.success()));
}
