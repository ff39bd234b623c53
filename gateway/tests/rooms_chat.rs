//! Chat and notification features of the room protocol against the real binary, on both buses
//! (the embedded bus with one pod; NATS with two pods and one `nats-server` per test): read
//! receipts coalesced per interval, unread counts after a resume and in the publish API's
//! `/v1/reads`, batched delivery of a burst, and offline hand-off (the publish API's `online`
//! per user, one `offline` notification per message to an offline user, none for an online
//! one; over HTTP with retries, and on the NATS subject).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::nats::NatsServer;
use support::rooms::{JsonWs, PUBLISH_TOKEN, Sse, http_request, publish_api, publish_seq};
use support::{ConfigBuilder, route};
use support::{Gateway, PROMPTLY, claims, jwt_hs256, sign_hs256};
use tokio::net::TcpListener;

/// The `chat` route: join/publish `chat:*` (and publish into anyone's `user:*` room), history,
/// receipts in `chat:*` every `interval`, batches in the user room, offline hand-off (`extra`
/// merged into `rooms.offline`).
fn config(nats: Option<&str>, offline: Value) -> String {
    let mut b = ConfigBuilder::new().publish_token(PUBLISH_TOKEN);
    if let Some(url) = nats {
        b = b
            .nats(url, "sbtest")
            .set("bus.nats.presenceTtl", json!("3s"));
    }
    b.route(
        route("chat", "/chat")
            .jwt(jwt_hs256())
            .rooms(json!({
                "join": ["chat:*"],
                "publish": ["chat:*", "user:*"],
                "history": {"maxMessages": 1000, "maxAge": "10m"},
                "receipts": {"rooms": ["chat:*"], "interval": "1s"},
                "batch": {"rooms": ["user:{sub}"], "window": "5s", "maxMessages": 50, "groupBy": "type"},
                "offline": offline,
            }))
            .messages_per_second(10_000, 10_000),
    )
    .yaml()
}

/// One pod on the embedded bus, or two pods on one NATS.
struct Cluster {
    _nats: Option<NatsServer>,
    a: Gateway,
    b: Option<Gateway>,
}

impl Cluster {
    async fn embedded(offline: Value) -> Self {
        Self {
            _nats: None,
            a: Gateway::start(&config(None, offline)).await,
            b: None,
        }
    }

    async fn nats(offline: Value) -> Self {
        let nats = NatsServer::start();
        let a = Gateway::start(&config(Some(&nats.url()), offline.clone())).await;
        let b = Gateway::start(&config(Some(&nats.url()), offline)).await;
        Self {
            _nats: Some(nats),
            a,
            b: Some(b),
        }
    }

    /// The other pod (the same one on the embedded bus).
    fn b(&self) -> &Gateway {
        self.b.as_ref().unwrap_or(&self.a)
    }

    fn nats_url(&self) -> Option<String> {
        self._nats.as_ref().map(NatsServer::url)
    }
}

async fn member(gw: &Gateway, sub: &str) -> (JsonWs, Value) {
    let auth = format!("Bearer {}", sign_hs256(&claims(sub, 600, json!({}))));
    let mut ws = JsonWs::connect(&gw.ws_url("/chat"), &[("authorization", &auth)]).await;
    let (joined, _) = ws.recv_type("joined").await;
    assert_eq!(joined["room"], format!("user:{sub}"));
    // The join (and the connection's presence in its user room) is complete once the next
    // message is answered.
    ws.send(json!({"type": "ping", "id": "ready"})).await;
    ws.recv_type("pong").await;
    (ws, joined)
}

async fn join(ws: &mut JsonWs, room: &str, since: Option<&Value>) -> Value {
    let mut msg = json!({"type": "join", "room": room, "id": "j"});
    if let Some(s) = since {
        msg["since"] = s.clone();
    }
    ws.send(msg).await;
    ws.recv_type("joined").await.0
}

async fn read(ws: &mut JsonWs, room: &str, position: &Value, id: &str) -> Value {
    ws.send(json!({"type": "read", "room": room, "position": position, "id": id}))
        .await;
    loop {
        let v = ws.recv().await;
        if v["id"] == id {
            return v;
        }
    }
}

/// Every `receipt` that arrives within `window`.
async fn receipts_within(ws: &mut JsonWs, window: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + window;
    while let Ok(v) = tokio::time::timeout_at(end, ws.recv()).await {
        if v["type"] == "receipt" {
            out.push(v);
        }
    }
    out
}

fn pos(seq: u64, epoch: &Value) -> Value {
    json!({"seq": seq, "epoch": epoch})
}

async fn receipts_are_coalesced_per_interval(c: Cluster) {
    let (mut alice, _) = member(&c.a, "alice").await;
    let (mut bob, _) = member(c.b(), "bob").await;
    join(&mut alice, "chat:r", None).await;
    join(&mut bob, "chat:r", None).await;
    let (_, first) = publish_api(c.a.admin(), &json!({"room": "chat:r", "data": 1})).await;
    let epoch = first["results"][0]["epoch"].clone();
    let mut seqs = vec![first["results"][0]["seq"].as_u64().unwrap()];
    for n in 2..=3 {
        seqs.push(publish_seq(c.a.admin(), "chat:r", json!(n)).await);
    }
    for (i, seq) in seqs.iter().enumerate() {
        let ack = read(&mut alice, "chat:r", &pos(*seq, &epoch), &format!("r{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["seq"].as_u64(), Some(*seq), "{ack}");
    }
    // Lower than what is stored: answered with the stored position, and nobody is told.
    let ack = read(&mut alice, "chat:r", &pos(seqs[0], &epoch), "low").await;
    assert_eq!(ack["seq"].as_u64(), Some(seqs[2]), "{ack}");

    // A position the room never had is refused and nobody is told: another epoch (any text:
    // it was stored and sent to every member) or beyond the room's newest message.
    let forged = pos(seqs[2] + 1, &json!("<b>click http://evil.example</b>"));
    let refused = read(&mut alice, "chat:r", &forged, "forged").await;
    assert_eq!(refused["code"], "bad_request", "{refused}");
    let ahead = read(&mut alice, "chat:r", &pos(seqs[2] + 1000, &epoch), "ahead").await;
    assert_eq!(ahead["code"], "bad_request", "{ahead}");

    // Three reads within one interval: the first at once, the latest when the interval ends.
    let got = receipts_within(&mut bob, Duration::from_millis(3000)).await;
    let told: Vec<(String, u64)> = got
        .iter()
        .map(|r| {
            (
                r["user"].as_str().unwrap().to_string(),
                r["position"]["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        told,
        vec![
            ("alice".to_string(), seqs[0]),
            ("alice".to_string(), seqs[2])
        ],
        "{got:?}"
    );
    // A room without receipts refuses `read`.
    let refused = read(&mut bob, "user:bob", &pos(1, &epoch), "x").await;
    assert_eq!(refused["code"], "bad_request", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_receipt_reaches_the_rooms_members_once_per_interval_on_the_embedded_bus() {
    receipts_are_coalesced_per_interval(Cluster::embedded(json!({})).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_receipt_reaches_the_other_pods_members_once_per_interval_over_nats() {
    receipts_are_coalesced_per_interval(Cluster::nats(json!({})).await).await;
}

async fn get_reads(admin: SocketAddr, user: &str) -> Value {
    let auth = format!("Bearer {PUBLISH_TOKEN}");
    let (status, _, text) = http_request(
        admin,
        "GET",
        &format!("/v1/reads?user={user}"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn unread_counts_follow_a_resume(c: Cluster) {
    let (mut alice, _) = member(&c.a, "alice").await;
    let joined = join(&mut alice, "chat:u", None).await;
    assert_eq!(joined["read"], Value::Null, "never read: {joined}");
    assert_eq!(joined["unread"], 0, "{joined}");
    let mut seqs = Vec::new();
    for n in 0..4 {
        seqs.push(publish_seq(c.a.admin(), "chat:u", json!(n)).await);
    }
    let msgs = alice.messages(4).await;
    let epoch = msgs[0]["epoch"].clone();
    let read_at = pos(seqs[1], &epoch);
    let ack = read(&mut alice, "chat:u", &read_at, "r").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let last = pos(seqs[3], &epoch);
    drop(alice);
    for n in 4..7 {
        publish_seq(c.b().admin(), "chat:u", json!(n)).await;
    }
    // Back on the other pod, resuming from the last message it saw.
    let (mut alice, _) = member(c.b(), "alice").await;
    let joined = join(&mut alice, "chat:u", Some(&last)).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["read"], read_at, "{joined}");
    assert_eq!(
        joined["unread"], 5,
        "two before the reconnect, three after: {joined}"
    );
    // The badge API says the same, on either pod.
    let badges = get_reads(c.a.admin(), "alice").await;
    assert_eq!(
        badges,
        json!({"user": "alice", "namespace": "chat", "unread": 5,
               "rooms": [{"room": "chat:u", "read": read_at, "unread": 5}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_are_right_after_a_resume_on_the_embedded_bus() {
    unread_counts_follow_a_resume(Cluster::embedded(json!({})).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_are_right_after_a_resume_on_another_pod_over_nats() {
    unread_counts_follow_a_resume(Cluster::nats(json!({})).await).await;
}

async fn a_burst_arrives_batched(c: Cluster) {
    let (mut alice, _) = member(c.b(), "alice").await;
    let mut want = Vec::new();
    for n in 0..200 {
        let kind = if n % 3 == 0 { "comment" } else { "like" };
        let (status, body) = publish_api(
            c.a.admin(),
            &json!({"users": ["alice"], "data": {"type": kind, "n": n}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        want.push(body["results"][0]["seq"].as_u64().unwrap());
    }
    let mut batches = Vec::new();
    let mut got: Vec<u64> = Vec::new();
    while got.len() < want.len() {
        let v = alice.recv_within(PROMPTLY).await;
        assert_eq!(v["type"], "batch", "only batches in a batched room: {v}");
        let mut in_batch = Vec::new();
        for g in v["groups"].as_array().unwrap() {
            let mut last = 0;
            for m in g["messages"].as_array().unwrap() {
                assert_eq!(m["data"]["type"], g["key"], "grouped by type: {g}");
                let seq = m["seq"].as_u64().unwrap();
                assert!(seq > last, "in order within a group: {g}");
                last = seq;
                in_batch.push(seq);
            }
        }
        in_batch.sort_unstable();
        assert!(
            got.last().is_none_or(|l| *l < in_batch[0]),
            "batches follow each other in order"
        );
        got.extend(in_batch);
        batches.push(v);
    }
    assert_eq!(got, want, "every seq, once, in order");
    assert!(batches.len() <= 5, "{} batches", batches.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_publishes_reaches_a_batching_member_in_at_most_5_batches_on_the_embedded_bus()
 {
    a_burst_arrives_batched(Cluster::embedded(json!({})).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_publishes_reaches_a_batching_member_in_at_most_5_batches_over_nats() {
    a_burst_arrives_batched(Cluster::nats(json!({})).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sse_a_batch_is_one_event_whose_id_resumes_after_its_last_message() {
    let c = Cluster::embedded(json!({})).await;
    let auth = format!("Bearer {}", sign_hs256(&claims("alice", 600, json!({}))));
    let mut sse = Sse::open(
        c.a.addr(),
        "/chat?rooms=chat:x",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(sse.status, 200);
    let mut joined = 0;
    while joined < 2 {
        let ev = sse.event().await;
        assert_eq!(ev.event.as_deref(), Some("joined"), "{ev:?}");
        joined += 1;
    }
    let mut want = Vec::new();
    for n in 0..50 {
        want.push(publish_seq(c.a.admin(), "user:alice", json!({"type": "like", "n": n})).await);
    }
    let ev = sse.event().await;
    assert_eq!(ev.event, None, "an unnamed event, like a message: {ev:?}");
    let batch = ev.json();
    assert_eq!(batch["type"], "batch", "{batch}");
    let seqs: Vec<u64> = batch["groups"][0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, want, "the whole burst in one event");
    // Resuming from the event's id gets nothing again: the cursor is past the batch.
    let id = ev.id.expect("a cursor id");
    let mut again = Sse::open(
        c.a.addr(),
        "/chat?rooms=chat:x",
        &[("authorization", &auth), ("last-event-id", &id)],
    )
    .await;
    for _ in 0..2 {
        let ev = again.event().await;
        assert_eq!(ev.event.as_deref(), Some("joined"), "{ev:?}");
        assert_eq!(ev.json()["recovered"], true, "{ev:?}");
    }
    let late = publish_seq(c.a.admin(), "chat:x", json!("after")).await;
    let ev = again.event().await;
    assert_eq!(
        ev.json()["seq"].as_u64(),
        Some(late),
        "only what came after: {ev:?}"
    );
}

/// The app's offline hook: records every call; answers the first one 503 (so a retry is
/// needed) and the rest 200.
struct App {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Value>>>,
}

impl App {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
        let recorded = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let calls = recorded.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let calls = calls.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let mut calls = calls.lock().unwrap();
                            calls.push(serde_json::from_slice(&body).unwrap());
                            let status = if calls.len() == 1 { 503 } else { 200 };
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, calls }
    }
}

/// Publish `n` messages to alice (offline) and bob (online) through the API of pod a, and one
/// from bob's connection into alice's room; returns alice's seqs.
async fn publish_to_both(c: &Cluster, bob: &mut JsonWs) -> Vec<u64> {
    let mut alice_seqs = Vec::new();
    for n in 0..3 {
        let (status, body) = publish_api(
            c.a.admin(),
            &json!({"users": ["alice", "bob"], "data": {"type": "note", "n": n}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let r = &body["results"];
        assert_eq!(
            (&r[0]["user"], &r[0]["online"]),
            (&json!("alice"), &json!(false)),
            "{body}"
        );
        assert_eq!(
            (&r[1]["user"], &r[1]["online"]),
            (&json!("bob"), &json!(true)),
            "{body}"
        );
        alice_seqs.push(r[0]["seq"].as_u64().unwrap());
    }
    bob.send(json!({"type": "publish", "room": "user:alice", "data": {"type": "dm"}, "id": "p"}))
        .await;
    let ack = loop {
        let v = bob.recv().await;
        if v["id"] == "p" {
            break v;
        }
    };
    alice_seqs.push(ack["seq"].as_u64().unwrap());
    alice_seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_users_publish_makes_one_retried_offline_notification_per_message_on_the_embedded_bus()
 {
    let app = App::start().await;
    let url = format!("http://{}/offline", app.addr);
    let c = Cluster::embedded(json!({"notify": {"url": url}})).await;
    let (mut bob, _) = member(&c.a, "bob").await;
    let want = publish_to_both(&c, &mut bob).await;
    let wanted = want.len();
    support::eventually("the offline notifications", PROMPTLY, || {
        let n = app.calls.lock().unwrap().len();
        async move { n > wanted }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // nothing more comes
    let calls = app.calls.lock().unwrap().clone();
    assert_eq!(
        calls.len(),
        want.len() + 1,
        "one retry of the refused one: {calls:?}"
    );
    assert!(
        calls[1..].contains(&calls[0]),
        "the refused notification is sent again: {calls:?}"
    );
    let seqs: Vec<u64> = calls[1..]
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, want,
        "one per message to alice, none for bob: {calls:?}"
    );
    let first = calls
        .iter()
        .find(|c| c["seq"].as_u64() == Some(want[0]))
        .unwrap();
    assert_eq!(
        (
            &first["event"],
            &first["user"],
            &first["room"],
            &first["route"]
        ),
        (
            &json!("offline"),
            &json!("alice"),
            &json!("user:alice"),
            &json!("chat")
        ),
        "{first}"
    );
    assert_eq!(first["data"], json!({"type": "note", "n": 0}), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_users_publish_makes_one_offline_notification_per_message_across_two_pods() {
    let c = Cluster::nats(json!({"notifyNats": true})).await;
    let app = async_nats::connect(c.nats_url().unwrap()).await.unwrap();
    let mut offline = app.subscribe("sbtest.offline.chat").await.unwrap();
    app.flush().await.unwrap();
    // Bob is live on pod b only; pod a answers for him from cluster presence.
    let (mut bob, _) = member(c.b(), "bob").await;
    let want = publish_to_both(&c, &mut bob).await;
    let mut got = Vec::new();
    while got.len() < want.len() {
        let m = tokio::time::timeout(PROMPTLY, offline.next())
            .await
            .expect("an offline notification in time")
            .unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["user"], "alice", "none for the online user: {v}");
        got.push(v["seq"].as_u64().unwrap());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), offline.next())
            .await
            .is_err(),
        "exactly one per message"
    );
    got.sort_unstable();
    assert_eq!(got, want);
    // Alice connects: she is online from then on, and nothing more is handed off.
    let (_alice, _) = member(&c.a, "alice").await;
    let (_, body) = publish_api(c.b().admin(), &json!({"users": ["alice"], "data": 1})).await;
    assert_eq!(body["results"][0]["online"], true, "{body}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), offline.next())
            .await
            .is_err(),
        "an online user gets no offline notification"
    );
}
