//! The app side of rooms mode against the real binary: the per-route publish hook (accept,
//! replace the payload, reject with the app's reason; unreachable and slow apps) and
//! connect/disconnect notifications. The app is a tiny hyper server in the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::rooms::{JsonWs, PUBLISH_TOKEN, Sse, http_request, publish_api};
use support::{ConfigBuilder, route};
use support::{
    Gateway, PROMPTLY, claims, eventually, free_port, jwt_hs256, sign_hs256, try_http_get,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How long the hook holds a publish whose text is `stall`.
const STALL: Duration = Duration::from_secs(2);

/// How long the app takes to answer a drain's disconnect notification.
const LATE_ANSWER: Duration = Duration::from_secs(1);

/// One request the app received.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// The app: `/hook` decides on publishes by their text, `/notify` takes notifications (a
/// drain's disconnects late), `/slow` answers after 3 s.
struct App {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    notifications: mpsc::UnboundedReceiver<Value>,
}

impl App {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (tx, notifications) = mpsc::unbounded_channel();
        let recorded = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (calls, tx) = (recorded.clone(), tx.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (calls, tx) = (calls.clone(), tx.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &calls, &tx).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            calls,
            notifications,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hook_calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == "/hook")
            .cloned()
            .collect()
    }

    async fn notification(&mut self) -> Value {
        tokio::time::timeout(PROMPTLY, self.notifications.recv())
            .await
            .expect("a notification in time")
            .expect("app running")
    }
}

fn json_response(status: u16, body: Option<Value>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(
        body.map(|b| b.to_string()).unwrap_or_default(),
    )));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp
}

async fn answer(
    req: Request<Incoming>,
    calls: &Mutex<Vec<Call>>,
    notify: &mpsc::UnboundedSender<Value>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    calls.lock().unwrap().push(Call {
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    match path.as_str() {
        "/notify" => {
            // Disconnects of a drain (code 1001) are answered late, as by a busy app.
            let late = body["event"] == "disconnect" && body["code"] == 1001;
            let _ = notify.send(body);
            if late {
                tokio::time::sleep(LATE_ANSWER).await;
            }
            json_response(204, None)
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json_response(204, None)
        }
        _ => {
            let text = body["data"]["text"].as_str().unwrap_or_default().to_owned();
            if text == "stall" {
                // A busy app: this publish waits while the client goes on sending.
                tokio::time::sleep(STALL).await;
            }
            if text.contains("spam") {
                json_response(403, Some(json!({"reason": "no spam in this room"})))
            } else if text.contains("teapot") {
                json_response(418, None)
            } else if let Some(rest) = text.strip_prefix("shout ") {
                json_response(
                    200,
                    Some(json!({"data": {"text": rest.to_uppercase(), "moderated": true}})),
                )
            } else if body.get("b64").is_some() {
                json_response(200, Some(json!({"b64": "AQID"})))
            } else {
                json_response(200, Some(json!({"ok": true}))) // accept as is
            }
        }
    }
}

fn config(app: &App) -> String {
    let chat = json!(["chat:*"]);
    let dead = free_port();
    ConfigBuilder::new()
        .publish_token(PUBLISH_TOKEN)
        .route(route("hooked", "/hooked").jwt(jwt_hs256()).rooms(json!({
            "namespace": "chat",
            "join": chat,
            "publish": chat,
            "history": {"maxMessages": 100, "maxAge": "10m"},
            "publishHook": {"url": app.url("/hook")},
            "notify": {"url": app.url("/notify")},
        })))
        .route(
            route("paced", "/paced")
                .rooms(json!({
                    "namespace": "paced",
                    "join": chat,
                    "publish": chat,
                    "publishHook": {"url": app.url("/hook"), "timeout": "5s"},
                }))
                .messages_per_second(10, 5),
        )
        .route(route("unreachable", "/unreachable").rooms(json!({
            "join": chat,
            "publish": chat,
            "publishHook": {"url": format!("http://127.0.0.1:{dead}/hook")},
        })))
        .route(route("slowapp", "/slowapp").rooms(json!({
            "join": chat,
            "publish": chat,
            "publishHook": {"url": app.url("/slow"), "timeout": "300ms"},
        })))
        .yaml()
}

/// A notification's `(event, user, transport, code)`, to compare whole events at once.
fn brief(n: &Value) -> (String, String, String, Option<u64>) {
    let text = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
    (
        text("event"),
        text("user"),
        text("transport"),
        n["code"].as_u64(),
    )
}

/// What [`brief`] should say.
fn expect(
    event: &str,
    user: &str,
    transport: &str,
    code: Option<u64>,
) -> (String, String, String, Option<u64>) {
    (event.into(), user.into(), transport.into(), code)
}

/// An SSE stream on `/hooked` (room `chat:a`) with `sub`'s token.
async fn sse_as(gw: &Gateway, sub: &str) -> Sse {
    Sse::open(
        gw.addr(),
        "/hooked?rooms=chat:a",
        &[("authorization", &bearer(sub))],
    )
    .await
}

fn bearer(sub: &str) -> String {
    format!("Bearer {}", sign_hs256(&claims(sub, 600, json!({}))))
}

/// Publish `data` with id `id` and return the reply to it (`ack` or `error`).
async fn publish(ws: &mut JsonWs, data: Value, id: &str) -> Value {
    ws.send(json!({"type": "publish", "room": "chat:hooked", "data": data, "id": id}))
        .await;
    loop {
        let v = ws.recv().await;
        if v["id"] == id {
            return v;
        }
    }
}

/// While a publish waits for the hook the gateway reads nothing more from the client; what a
/// client within its rate sent meanwhile is read at once afterwards. That backlog is not a burst
/// of its own: the client is not closed with 1008 and every publish is acknowledged.
#[tokio::test]
async fn a_client_within_its_rate_is_not_limited_for_what_it_sent_while_a_hook_stalled() {
    let app = App::start().await;
    let gw = Gateway::start(&config(&app)).await;
    let mut ws = JsonWs::connect(&gw.ws_url("/paced"), &[]).await;
    // 10 messages/s, burst 5: one publish that stalls 2 s, then 15 more at 8/s meanwhile.
    ws.send(json!({"type": "publish", "room": "chat:paced", "data": {"text": "stall"}, "id": "0"}))
        .await;
    for n in 1..=15 {
        tokio::time::sleep(Duration::from_millis(125)).await;
        ws.send(json!({"type": "publish", "room": "chat:paced", "data": {"text": "hi"}, "id": n.to_string()}))
            .await;
    }
    let mut acked = Vec::new();
    while acked.len() < 16 {
        let v = ws.recv().await;
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "ack" {
            acked.push(v["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    let want: Vec<String> = (0..16).map(|n: u32| n.to_string()).collect();
    assert_eq!(acked, want);
}

#[tokio::test]
async fn the_publish_hook_accepts_replaces_or_rejects_with_the_apps_reason() {
    let mut app = App::start().await;
    let gw = Gateway::start(&config(&app)).await;
    let auth = bearer("alice");
    let mut alice = JsonWs::connect(&gw.ws_url("/hooked"), &[("authorization", &auth)]).await;
    assert_eq!(alice.recv().await["room"], "user:alice");
    let auth = bearer("bob");
    let mut bob = JsonWs::connect(&gw.ws_url("/hooked"), &[("authorization", &auth)]).await;
    assert_eq!(bob.recv().await["room"], "user:bob");
    bob.join("chat:hooked").await;

    // Accepted as is.
    let reply = publish(&mut alice, json!({"text": "hello"}), "1").await;
    assert_eq!(
        (reply["type"].as_str(), reply["seq"].as_u64()),
        (Some("ack"), Some(1)),
        "{reply}"
    );
    // Accepted with the app's replacement payload.
    let reply = publish(&mut alice, json!({"text": "shout hi there"}), "2").await;
    assert_eq!(reply["type"], "ack", "{reply}");
    // Rejected with the app's reason, and with a reason made from the status.
    let reply = publish(&mut alice, json!({"text": "buy spam"}), "3").await;
    assert_eq!(
        reply,
        json!({"type": "error", "code": "rejected", "reason": "no spam in this room", "id": "3"})
    );
    let reply = publish(&mut alice, json!({"text": "I am a teapot"}), "4").await;
    assert_eq!(
        reply,
        json!({"type": "error", "code": "rejected", "reason": "refused by the app (HTTP 418)", "id": "4"})
    );
    // Binary payloads go to the hook as b64 and can be replaced the same way.
    alice
        .send(json!({"type": "publish", "room": "chat:hooked", "b64": "/w==", "id": "5"}))
        .await;
    loop {
        let v = alice.recv().await;
        if v["id"] == "5" {
            assert_eq!(v["type"], "ack", "{v}");
            break;
        }
    }
    // The publish API does not go through the hook.
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "chat", "room": "chat:hooked", "data": {"text": "spam from the app"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The members saw exactly what was accepted, as the app left it.
    let got = bob.messages(4).await;
    assert_eq!(got[0]["data"], json!({"text": "hello"}));
    assert_eq!(got[0]["from"], json!({"sub": "alice"}));
    assert_eq!(
        got[1]["data"],
        json!({"text": "HI THERE", "moderated": true})
    );
    assert_eq!(got[2]["b64"], "AQID");
    assert_eq!(got[3]["data"], json!({"text": "spam from the app"}));
    assert_eq!(
        got.iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "refused publishes were never stored"
    );

    // What the app was asked: one call per client publish, with identity headers.
    let calls = app.hook_calls();
    assert_eq!(calls.len(), 5, "{calls:#?}");
    for c in &calls {
        assert_eq!(c.headers["x-switchboard-route"], "hooked");
        assert_eq!(c.headers["x-switchboard-user"], "alice");
        assert_eq!(c.headers["content-type"], "application/json");
        assert_eq!(c.body["room"], "chat:hooked");
        assert_eq!(c.body["from"], json!({"sub": "alice"}));
    }
    assert_eq!(
        calls[0].body,
        json!({"room": "chat:hooked", "from": {"sub": "alice"}, "data": {"text": "hello"}})
    );
    assert_eq!(calls[4].body["b64"], "/w==");
    assert!(calls[4].body.get("data").is_none());
    // Both connections' connect notifications also arrived.
    for _ in 0..2 {
        assert_eq!(app.notification().await["event"], "connect");
    }
}

#[tokio::test]
async fn an_unreachable_or_too_slow_hook_rejects_the_publish() {
    let app = App::start().await;
    let gw = Gateway::start(&config(&app)).await;
    for (path, reason) in [
        ("/unreachable", "publish hook unreachable"),
        ("/slowapp", "publish hook timed out"),
    ] {
        let mut ws = JsonWs::connect(&gw.ws_url(path), &[]).await;
        let reply = publish(&mut ws, json!({"text": "hello"}), "1").await;
        assert_eq!(
            reply,
            json!({"type": "error", "code": "rejected", "reason": reason, "id": "1"}),
            "{path}"
        );
        // The connection keeps working.
        ws.send(json!({"type": "ping", "id": "p"})).await;
        assert_eq!(ws.recv().await, json!({"type": "pong", "id": "p"}));
    }
}

#[tokio::test]
async fn connect_and_disconnect_notifications_reach_the_app() {
    let mut app = App::start().await;
    let gw = Gateway::start(&config(&app)).await;
    let auth = bearer("alice");
    let mut ws = JsonWs::connect(&gw.ws_url("/hooked"), &[("authorization", &auth)]).await;
    let connect = app.notification().await;
    assert_eq!(
        brief(&connect),
        expect("connect", "alice", "websocket", None),
        "{connect}"
    );
    assert_eq!(connect["route"], "hooked");
    let conn = connect["conn"].as_str().expect("conn").to_owned();
    assert!(
        connect["ts"].as_u64().is_some_and(|t| t > 1_600_000_000),
        "{connect}"
    );

    support::close_normally(&mut ws.ws).await;
    let disconnect = app.notification().await;
    assert_eq!(
        brief(&disconnect),
        expect("disconnect", "alice", "websocket", Some(1000)),
        "{disconnect}"
    );
    assert_eq!(disconnect["conn"], conn.as_str());
    let notify_calls: Vec<_> = app
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.path == "/notify")
        .cloned()
        .collect();
    for c in &notify_calls {
        assert_eq!(c.headers["x-switchboard-route"], "hooked");
        assert_eq!(c.headers["x-switchboard-user"], "alice");
    }

    // A connection that just goes away is reported with 1006.
    let auth = bearer("bob");
    let ws = JsonWs::connect(&gw.ws_url("/hooked"), &[("authorization", &auth)]).await;
    assert_eq!(app.notification().await["user"], "bob");
    drop(ws);
    let gone = app.notification().await;
    assert_eq!(
        brief(&gone),
        expect("disconnect", "bob", "websocket", Some(1006)),
        "{gone}"
    );
    // All four answered 204: counted as delivered.
    eventually("the HTTP notifications counted", PROMPTLY, || async {
        try_http_get(gw.admin(), "/metrics", &[])
            .await
            .is_ok_and(|(_, m)| {
                m.contains(r#"switchboard_notifications_total{result="ok",via="http"} 4"#)
            })
    })
    .await;
}

#[tokio::test]
async fn an_sse_stream_notifies_like_a_websocket_and_a_long_poll_does_not() {
    let mut app = App::start().await;
    let mut gw = Gateway::start(&config(&app)).await;

    // A long-poll is a request, not a connection: nothing is sent for it.
    let auth = bearer("carol");
    let (status, _, _) = http_request(
        gw.addr(),
        "GET",
        "/hooked?rooms=chat:poll&timeout=100ms",
        &[("authorization", &auth)],
        String::new(),
    )
    .await;
    assert_eq!(status, 204);

    let mut sse = sse_as(&gw, "dave").await;
    assert_eq!(sse.status, 200);
    let connect = app.notification().await;
    assert_eq!(
        brief(&connect),
        expect("connect", "dave", "sse", None),
        "the first notification is the stream's (none for the long-poll): {connect}"
    );
    let conn = connect["conn"].as_str().expect("conn").to_owned();
    sse.event().await; // joined: the stream is live

    // The client goes away (an SSE stream has no close handshake): code 1006.
    drop(sse);
    let gone = app.notification().await;
    assert_eq!(
        brief(&gone),
        expect("disconnect", "dave", "sse", Some(1006)),
        "{gone}"
    );
    assert_eq!(gone["conn"], conn.as_str());

    // Connections ended by the drain carry the route's drain code, and their notifications
    // go out before the process exits (they count as live until answered).
    let mut sse = sse_as(&gw, "erin").await;
    assert_eq!(app.notification().await["user"], "erin");
    sse.event().await;
    let auth = bearer("frank");
    let mut ws = JsonWs::connect(&gw.ws_url("/hooked"), &[("authorization", &auth)]).await;
    assert_eq!(app.notification().await["user"], "frank");
    // Keep reading, so the client answers the gateway's Close (tungstenite does on read).
    tokio::spawn(async move { while let Some(Ok(_)) = ws.ws.next().await {} });
    gw.terminate();
    let mut drained = vec![
        brief(&app.notification().await),
        brief(&app.notification().await),
    ];
    let received = tokio::time::Instant::now();
    drained.sort();
    assert_eq!(
        drained,
        [
            expect("disconnect", "erin", "sse", Some(1001)),
            expect("disconnect", "frank", "websocket", Some(1001)),
        ]
    );
    let status = gw.wait_exit(PROMPTLY).await.expect("the gateway exits");
    assert!(status.success(), "exit status {status}");
    // The app answered those two only after LATE_ANSWER: the gateway waited for the answers.
    assert!(
        received.elapsed() >= LATE_ANSWER - Duration::from_millis(100),
        "exited {:?} after the app got the notifications, before answering them",
        received.elapsed()
    );
}
