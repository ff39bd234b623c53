//! Rooms across gateway pods over a real NATS (JetStream): two gateway processes and one
//! `nats-server` started per test on free ports. A message published on one pod reaches the
//! members on the other, in order, with the same positions; resume works across pods; presence
//! is cluster-wide and the members of a crashed pod disappear; and NATS stopped and restarted
//! in the middle of a stream loses no acknowledged publish (the reference client retries its
//! publishes until acked; the pods' live delivery resumes where it stopped). With
//! `rooms.notifyNats` every connection's connect and disconnect is published on
//! `P.events.<ns>` for app pods.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::nats::NatsServer;
use support::room_client::{Event, Options, Position, RoomClient};
use support::rooms::{JsonWs, PUBLISH_TOKEN, publish_api};
use support::{ConfigBuilder, route};
use support::{Gateway, PROMPTLY, claims, eventually, jwt_hs256, sign_hs256, try_http_get};

/// One pod: the `chat` route (HS256 JWT, join/publish `chat:*`, 1000 messages of history,
/// presence, connect/disconnect notifications on `sbtest.events.chat`) on the bus at `nats`,
/// presence entries expiring after 3 s.
fn config(nats: &str) -> String {
    builder(nats).yaml()
}

fn builder(nats: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .publish_token(PUBLISH_TOKEN)
        .nats(nats, "sbtest")
        .set("bus.nats.presenceTtl", json!("3s"))
        .route(
            route("chat", "/chat")
                .jwt(jwt_hs256())
                .rooms(json!({
                    "join": ["chat:*"],
                    "publish": ["chat:*"],
                    "history": {"maxMessages": 1000, "maxAge": "10m"},
                    "presence": true,
                    "notifyNats": true,
                }))
                .messages_per_second(10_000, 10_000),
        )
}

/// [`config`] plus `raw`: a raw relay room per path (`/raw/{room}`, no token, history kept).
fn config_with_raw(nats: &str) -> String {
    builder(nats)
        .route(route("raw", "/raw").rooms(json!({
            "protocol": "raw",
            "pathRoom": "/raw/{room}",
            "join": ["*"],
            "publish": ["*"],
            "history": {"maxMessages": 100, "maxAge": "10m"},
        })))
        .yaml()
}

fn bearer(sub: &str) -> String {
    sign_hs256(&claims(sub, 600, json!({})))
}

async fn client(gw: &Gateway, sub: &str) -> RoomClient {
    RoomClient::connected(Options::new(gw.ws_url("/chat")).bearer(&bearer(sub))).await
}

async fn json_ws(gw: &Gateway, sub: &str) -> JsonWs {
    let auth = format!("Bearer {}", bearer(sub));
    let mut ws = JsonWs::connect(&gw.ws_url("/chat"), &[("authorization", &auth)]).await;
    let (joined, _) = ws.recv_type("joined").await;
    assert_eq!(joined["room"], format!("user:{sub}"));
    // Presence is on: the user room announces this connection too. A `leave` of the same
    // user's previous connection on another pod may come first (that pod sees its EOF late).
    loop {
        let (ev, _) = ws.recv_type("presence").await;
        assert_eq!(ev["room"], format!("user:{sub}"), "{ev}");
        if ev["event"] == "join" {
            break;
        }
        assert_eq!(ev["event"], "leave", "{ev}");
    }
    ws
}

/// Two pods on one NATS.
async fn cluster() -> (NatsServer, Gateway, Gateway) {
    let nats = NatsServer::start();
    let a = Gateway::start(&config(&nats.url())).await;
    let b = Gateway::start(&config(&nats.url())).await;
    (nats, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_on_one_pod_reaches_members_on_the_other_in_order() {
    let (_nats, a, b) = cluster().await;
    let mut alice = client(&a, "alice").await;
    let mut bob = client(&b, "bob").await;
    alice.join_and_wait("chat:x").await;
    bob.join_and_wait("chat:x").await;

    // 30 publishes on pod A, acked with their positions.
    let mut acked = Vec::new();
    for n in 0..30 {
        let id = alice.publish("chat:x", json!({"n": n})).await.unwrap();
        let pos = alice.acked(&id).await.expect("accepted").expect("stored");
        acked.push((pos, json!({"n": n})));
    }
    assert!(
        acked.windows(2).all(|w| w[0].0.seq < w[1].0.seq),
        "positions increase (not necessarily by one)"
    );
    // Pod B's member gets them all, in order, with the same positions; so does the publisher.
    for (who, c) in [("bob on pod B", &mut bob), ("alice on pod A", &mut alice)] {
        let got: Vec<(Position, Value)> = c
            .messages("chat:x", acked.len(), PROMPTLY)
            .await
            .into_iter()
            .map(|m| (m.position(), m.data.unwrap()))
            .collect();
        assert_eq!(got, acked, "{who}");
    }

    // The publish API on pod B reaches a user connected to pod A.
    let (status, body) =
        publish_api(b.admin(), &json!({"users": ["alice"], "data": "cross-pod"})).await;
    assert_eq!(status, 200, "{body}");
    let m = alice.messages("user:alice", 1, PROMPTLY).await.remove(0);
    assert_eq!(m.data, Some(json!("cross-pod")));
    assert_eq!(m.seq, body["results"][0]["seq"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_resumes_on_the_other_pod_with_exactly_the_gap() {
    let (_nats, a, b) = cluster().await;
    let mut on_a = json_ws(&a, "carol").await;
    on_a.join("chat:hop").await;
    let mut seqs = Vec::new();
    for n in 1..=6 {
        let (status, body) = publish_api(a.admin(), &json!({"room": "chat:hop", "data": n})).await;
        assert_eq!(status, 200, "{body}");
        seqs.push(body["results"][0]["seq"].as_u64().unwrap());
    }
    let got = on_a.messages(2).await;
    let epoch = got[1]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(got[1]["seq"].as_u64(), Some(seqs[1]));
    drop(on_a); // carol's connection to pod A drops after message 2

    // She comes back through pod B with her last position: exactly 3..=6, then live.
    let mut on_b = json_ws(&b, "carol").await;
    on_b.send(json!({"type": "join", "room": "chat:hop", "since": {"seq": seqs[1], "epoch": epoch}, "id": "r"}))
        .await;
    let (joined, _) = on_b.recv_type("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["position"]["seq"].as_u64(), Some(seqs[5]));
    let gap = on_b.messages(4).await;
    assert_eq!(
        gap.iter()
            .map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone()))
            .collect::<Vec<_>>(),
        (2..6).map(|i| (seqs[i], json!(i + 1))).collect::<Vec<_>>()
    );
    let (status, _) = publish_api(a.admin(), &json!({"room": "chat:hop", "data": 7})).await;
    assert_eq!(status, 200);
    assert_eq!(on_b.messages(1).await[0]["data"], 7);

    // A position from another epoch is not recovered.
    on_b.send(json!({"type": "join", "room": "chat:hop", "since": {"seq": seqs[1], "epoch": "elsewhere"}, "id": "x"}))
        .await;
    let (joined, _) = on_b.recv_type("joined").await;
    assert_eq!(joined["recovered"], false, "{joined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide_and_a_crashed_pods_members_are_announced_as_leaving() {
    let (_nats, a, b) = cluster().await;
    let mut alice = json_ws(&a, "alice").await;
    alice.join("chat:p").await;
    let mut bob = json_ws(&b, "bob").await;
    bob.join("chat:p").await;

    // Alice (pod A) hears of bob's join on pod B.
    let bob_conn = loop {
        let (ev, _) = alice.recv_type("presence").await;
        if ev["room"] == "chat:p" && ev["event"] == "join" && ev["member"]["user"] == "bob" {
            break ev["member"]["conn"].as_str().unwrap().to_owned();
        }
    };
    // The snapshot on either pod lists both.
    for (pod, ws) in [("A", &mut alice), ("B", &mut bob)] {
        ws.send(json!({"type": "presence", "room": "chat:p", "id": "who"}))
            .await;
        let snap = loop {
            let (v, _) = ws.recv_type("presence").await;
            if v["id"] == "who" {
                break v;
            }
        };
        let mut users: Vec<&str> = snap["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user"].as_str().unwrap())
            .collect();
        users.sort();
        assert_eq!(users, ["alice", "bob"], "pod {pod}: {snap}");
    }
    // Leaving on pod B is announced on pod A.
    bob.send(json!({"type": "leave", "room": "chat:p"})).await;
    bob.recv_type("left").await;
    loop {
        let (ev, _) = alice.recv_type("presence").await;
        if ev["event"] == "leave" {
            assert_eq!(ev["member"]["conn"].as_str(), Some(bob_conn.as_str()));
            break;
        }
    }
    bob.join("chat:p").await;
    // Pod B announces a join only after its presence entry is stored: once alice hears it,
    // the crash below cannot lose the entry.
    loop {
        let (ev, _) = alice.recv_type("presence").await;
        if ev["event"] == "join" {
            assert_eq!(ev["member"]["conn"].as_str(), Some(bob_conn.as_str()));
            break;
        }
    }

    // Pod B crashes (SIGKILL first, so it cannot send a leave for bob's socket). Its members'
    // presence entries expire (presenceTtl 3s); pod A lists the room every presenceTtl / 3 and
    // announces bob's `leave` once he has been missing for a whole TTL, and drops him from the
    // snapshot.
    drop(b);
    let crashed = tokio::time::Instant::now();
    drop(bob);
    let leave = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (ev, _) = alice.recv_type("presence").await;
            if ev["event"] == "leave" {
                break ev;
            }
        }
    })
    .await
    .expect("a leave event for the crashed pod's member within 20s");
    assert_eq!(
        leave["member"]["conn"].as_str(),
        Some(bob_conn.as_str()),
        "{leave}"
    );
    assert_eq!(leave["member"]["user"], "bob", "{leave}");
    let after = crashed.elapsed();
    println!("leave of a crashed pod's member announced after {after:?}");
    assert!(
        after >= Duration::from_secs(3),
        "a leave {after:?} after the crash, before the TTL ran out, was not the expiry repair"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        let id = format!("poll-{n}");
        alice
            .send(json!({"type": "presence", "room": "chat:p", "id": id}))
            .await;
        let snap = loop {
            let (v, _) = alice.recv_type("presence").await;
            if v["id"] == id {
                break v;
            }
        };
        let users: Vec<&str> = snap["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user"].as_str().unwrap())
            .collect();
        if users == ["alice"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob is still present 20s after his pod crashed: {snap}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The next notification on `events`, as JSON.
async fn next_notification(events: &mut async_nats::Subscriber) -> Value {
    let m = tokio::time::timeout(PROMPTLY, events.next())
        .await
        .expect("a notification in time")
        .expect("the subscription is open");
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", m.payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_pod_subscribed_to_the_events_subject_hears_each_connect_and_disconnect() {
    let nats = NatsServer::start();
    let gw = Gateway::start(&config(&nats.url())).await;
    let app = async_nats::connect(nats.url()).await.unwrap();
    let mut events = app.subscribe("sbtest.events.chat").await.unwrap();
    app.flush().await.unwrap(); // subscribed before anyone connects

    let mut ws = json_ws(&gw, "dave").await;
    let connect = next_notification(&mut events).await;
    assert_eq!(
        (
            connect["event"].as_str(),
            connect["user"].as_str(),
            connect["route"].as_str()
        ),
        (Some("connect"), Some("dave"), Some("chat")),
        "{connect}"
    );
    let conn = connect["conn"].as_str().expect("conn").to_owned();
    assert!(
        connect["ts"].as_u64().is_some_and(|t| t > 1_600_000_000),
        "{connect}"
    );
    assert!(connect.get("code").is_none(), "{connect}");

    support::close_normally(&mut ws.ws).await;
    let disconnect = next_notification(&mut events).await;
    assert_eq!(
        (
            disconnect["event"].as_str(),
            disconnect["conn"].as_str(),
            disconnect["user"].as_str(),
            disconnect["route"].as_str(),
            disconnect["code"].as_u64()
        ),
        (
            Some("disconnect"),
            Some(conn.as_str()),
            Some("dave"),
            Some("chat"),
            Some(1000)
        ),
        "{disconnect}"
    );

    // Both publishes are counted (once each publishing task has finished).
    eventually("both NATS notifications counted", PROMPTLY, || async {
        try_http_get(gw.admin(), "/metrics", &[])
            .await
            .is_ok_and(|(_, m)| {
                m.contains(r#"switchboard_notifications_total{result="ok",via="nats"} 2"#)
            })
    })
    .await;
}

/// A hung server (it holds the connection and answers nothing) shows on `/readyz` within the
/// 15 s docs/nats.md promises (pings every 5 s; the third unanswered ends the connection);
/// with pings every 10 s it took 30 s. Ready again once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_nats_server_shows_on_readyz_within_fifteen_seconds() {
    let nats = NatsServer::start();
    let gw = Gateway::start(&config(&nats.url())).await;
    eventually("the pod ready", PROMPTLY, || async {
        matches!(try_http_get(gw.admin(), "/readyz", &[]).await, Ok((200, _)))
    })
    .await;
    nats.freeze();
    let hung = std::time::Instant::now();
    let mut noticed = None;
    while hung.elapsed() < Duration::from_secs(40) {
        if matches!(try_http_get(gw.admin(), "/readyz", &[]).await, Ok((503, _))) {
            noticed = Some(hung.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nats.thaw();
    let noticed = noticed.expect("the hung server never showed on /readyz");
    // 15 s by the pings, plus a ping interval of slack for a loaded machine.
    assert!(
        noticed < Duration::from_secs(21),
        "noticed after {noticed:?}"
    );
    eventually("the pod ready again", Duration::from_secs(30), || async {
        matches!(try_http_get(gw.admin(), "/readyz", &[]).await, Ok((200, _)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_restarted_mid_stream_loses_no_acknowledged_publish() {
    outage_loses_nothing(Outage::Stop).await;
}

/// SIGKILL: a crash. With a single JetStream server without replicas, a write acknowledged in
/// the last milliseconds before the kill could in principle be lost by the server itself
/// (it flushes to its files asynchronously); the gateway must lose nothing on its side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_mid_stream_loses_no_acknowledged_publish() {
    outage_loses_nothing(Outage::Kill).await;
}

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGTERM: the server flushes and closes its connections.
    Stop,
    /// SIGKILL.
    Kill,
}

/// A steady stream of publishes on pod A (reference client) to a member on pod B (reference
/// client) while NATS goes away for a few seconds and comes back: every publish is acked in the
/// end, and every acknowledged position reaches pod B's member exactly once, in order.
async fn outage_loses_nothing(outage: Outage) {
    let (mut nats, a, b) = cluster().await;
    let mut publisher = client(&a, "alice").await;
    let mut subscriber = client(&b, "bob").await;
    publisher.join_and_wait("chat:stream").await;
    subscriber.join_and_wait("chat:stream").await;

    const N: usize = 300;
    let mut ids = BTreeMap::new(); // ack id -> n
    let mut acked: BTreeMap<String, Position> = BTreeMap::new();
    let mut saw_readyz_503 = false;
    for n in 0..N {
        let id = publisher
            .publish("chat:stream", json!({"n": n}))
            .await
            .expect("the queue has room");
        ids.insert(id, n);
        if n % 10 == 9 {
            // A steady stream: let the acks of this batch come back.
            for e in publisher.take_events() {
                if let Event::Acked { id, position } = e {
                    acked.insert(id, position.expect("stored"));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if n == N / 3 {
            match outage {
                Outage::Stop => nats.stop(),
                Outage::Kill => nats.kill(),
            }
            // The outage shows on /readyz.
            eventually("pod A to report not ready", PROMPTLY, || async {
                matches!(try_http_get(a.admin(), "/readyz", &[]).await, Ok((503, _)))
            })
            .await;
            saw_readyz_503 = true;
        }
        if (N / 3..N / 2).contains(&n) {
            // Keep publishing through a NATS outage of a few seconds.
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        if n == N / 2 {
            nats.start_again();
        }
    }
    assert!(saw_readyz_503);
    // Every publish is acked in the end (those refused as `unavailable` were retried).
    while acked.len() < N {
        let (id, pos) = publisher
            .expect("the remaining acks", Duration::from_secs(60), |e| match e {
                Event::Acked { id, position } => Some((id.clone(), position.clone())),
                Event::PublishFailed { id, code, reason } => {
                    panic!("publish {id} refused for good: {code} {reason}")
                }
                _ => None,
            })
            .await;
        acked.insert(id, pos.expect("stored"));
    }
    eventually("pod A ready again", PROMPTLY, || async {
        matches!(try_http_get(a.admin(), "/readyz", &[]).await, Ok((200, _)))
    })
    .await;

    // The subscriber on pod B receives every acknowledged position exactly once, in order.
    let mut by_seq: BTreeMap<u64, usize> = BTreeMap::new(); // seq -> n
    for (id, pos) in &acked {
        by_seq.insert(pos.seq, ids[id]);
    }
    let want: Vec<u64> = by_seq.keys().copied().collect();
    let mut received: Vec<(u64, usize)> = Vec::new();
    let mut losses = want.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.last().map(|(s, _)| *s) < want.last().copied() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = subscriber.messages("chat:stream", 1, left).await.remove(0);
        received.push((m.seq, m.data.unwrap()["n"].as_u64().unwrap() as usize));
    }
    let got_seqs: Vec<u64> = received.iter().map(|(s, _)| *s).collect();
    assert!(
        got_seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no position twice: {got_seqs:?}"
    );
    for (seq, n) in &received {
        if let Some(want_n) = by_seq.get(seq) {
            assert_eq!(n, want_n, "position {seq} carries publish {want_n}");
            losses -= 1;
        }
    }
    let extra = received.len() - (want.len() - losses);
    let distinct: std::collections::BTreeSet<usize> = received.iter().map(|(_, n)| *n).collect();
    println!(
        "NATS outage ({outage:?}): {N} publishes, {} acked positions, {} received by the other pod, \
         losses {losses}, stored twice by client retries {extra}, distinct payloads {}, \
         publish frames resent {}, subscriber duplicates dropped {}",
        acked.len(),
        received.len(),
        distinct.len(),
        publisher
            .stats()
            .resent
            .load(std::sync::atomic::Ordering::SeqCst),
        subscriber
            .stats()
            .duplicates
            .load(std::sync::atomic::Ordering::SeqCst),
    );
    assert_eq!(losses, 0, "acknowledged publishes lost");
    assert_eq!(distinct.len(), N, "every payload arrived");
    assert!(
        !subscriber.take_events().iter().any(Event::is_loss),
        "the subscriber never had to reload"
    );
}

/// A message under `maxMessageBytes` (1 MiB) that, wrapped for the bus (binary payloads travel
/// as base64), is larger than the NATS server's `max_payload` (here 64 KiB) is refused as too
/// large, never as "bus unavailable", which clients retry for ever: a raw member is closed
/// 1009, a JSON or protobuf publisher gets `too_large`, the publish API a 413; the connection
/// and the bus stay usable. The routes that allow such messages are named at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_nats_max_payload_is_refused_as_too_large_not_bus_unavailable() {
    use futures_util::SinkExt;
    use support::room_client::Encoding;
    use support::ws::{expect_close, ws_connect};
    use tokio_tungstenite::tungstenite::Message;

    let nats = NatsServer::start_with_config("max_payload: 65536");
    let gw = Gateway::start(&config_with_raw(&nats.url())).await;

    let mut raw = ws_connect(&gw.ws_url("/raw/big")).await;
    raw.send(Message::binary(vec![7u8; 60_000])).await.unwrap();
    let (code, reason, _) = expect_close(&mut raw, PROMPTLY).await;
    assert_eq!(
        (code, reason.as_str()),
        (1009, "message too big for the room bus")
    );

    // 60,000 bytes are 80,000 of base64 in the envelope (JSON members send them as such,
    // protobuf ones as bytes).
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 60_000]);
    for encoding in [Encoding::Json, Encoding::Proto] {
        let mut c = RoomClient::connected(
            Options::new(gw.ws_url("/chat"))
                .bearer(&bearer("big"))
                .encoding(encoding),
        )
        .await;
        c.join_and_wait("chat:big").await;
        let id = c.publish_b64("chat:big", &b64).await.unwrap();
        let refused = c.acked(&id).await.map_err(|(code, _)| code);
        assert_eq!(refused, Err("too_large".to_string()), "{encoding:?}");
        let id = c.publish("chat:big", json!("small")).await.unwrap();
        assert!(
            c.acked(&id).await.is_ok(),
            "{encoding:?}: a small publish after it"
        );
    }

    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "chat", "room": "chat:big", "b64": b64}),
    )
    .await;
    assert_eq!(status, 413, "{body}");

    let log = gw.log();
    for route in ["chat", "raw"] {
        assert!(
            log.lines().any(|l| l.contains("max_payload")
                && l.contains(&format!("route={route}"))
                && l.contains("max_payload=65536")),
            "no warning naming route {route}:\n{log}"
        );
    }
}
