//! The same rooms over Server-Sent Events and long-polling, against the real binary: SSE
//! framing and proxy headers, `id:` cursors, `Last-Event-ID` resume (exactly the gap, or
//! `recovered: false`), drain; long-polls that return the gap, wait for the first live
//! message, answer 204 with a cursor, and report `lost` rooms.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::held_app::HeldApp;
use support::rooms::{PUBLISH_TOKEN, Sse, http_request, long_poll, publish_api};
use support::{ConfigBuilder, route};
use support::{Gateway, PROMPTLY, claims, eventually, http_get, jwt_hs256, sign_hs256};

/// `/news` (namespace `news`): anonymous, join `news:*`, 5 messages of history, any origin.
/// `/listed`: the same rooms (namespace `news`) for the origin `https://app.example.com` only.
/// `/me` (namespace `me`): HS256 JWT from `?access_token=`, join `inbox:*` (plus the user room).
fn config() -> String {
    let history = json!({"maxMessages": 5, "maxAge": "10m"});
    ConfigBuilder::new()
        .drain("0s", "10s")
        .publish_token(PUBLISH_TOKEN)
        .route(route("news", "/news").rooms(json!({"join": ["news:*"], "history": history})))
        .route(
            route("listed", "/listed")
                .origins(&["https://app.example.com"])
                .rooms(json!({"namespace": "news", "join": ["news:*"], "history": history})),
        )
        .route(
            route("me", "/me")
                .jwt(jwt_hs256())
                .set(
                    "jwt.tokenSources",
                    json!([{"query": {"name": "access_token"}}]),
                )
                .rooms(json!({"join": ["inbox:*"], "history": history})),
        )
        .yaml()
}

async fn start() -> Gateway {
    Gateway::start(&config()).await
}

async fn publish(gw: &Gateway, room: &str, data: Value) -> u64 {
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "news", "room": room, "data": data}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["results"][0]["seq"].as_u64().expect("seq")
}

/// The positions in a cursor: `{room: [seq, epoch]}`.
fn decode_cursor(cursor: &str) -> Value {
    // Cursors name rooms by a tag of their name: the rooms this file uses.
    let rooms: Vec<String> = ["news:a", "news:b", "news:busy", "news:quiet"]
        .iter()
        .map(|r| r.to_string())
        .collect();
    let c = switchboard_gateway::rooms::cursor::Cursor::decode(cursor, &rooms)
        .unwrap_or_else(|e| panic!("cursor {cursor:?}: {e}"));
    serde_json::to_value(c.positions).unwrap()
}

/// The `data` of the next `n` SSE message events (unnamed events with an `id:`); returns them
/// with the last id.
async fn sse_messages(sse: &mut Sse, n: usize) -> (Vec<Value>, String) {
    let mut out = Vec::new();
    let mut last = String::new();
    while out.len() < n {
        let ev = sse.event().await;
        assert_eq!(ev.event, None, "a message event: {ev:?}");
        last = ev.id.clone().expect("messages carry an id");
        let m = ev.json();
        assert_eq!(m["type"], "message", "{m}");
        out.push(m);
    }
    (out, last)
}

/// The `joined` events at the start of a stream (one per room), as (JSON, id).
async fn sse_joined(sse: &mut Sse, rooms: usize) -> Vec<(Value, Option<String>)> {
    let mut out = Vec::new();
    for _ in 0..rooms {
        let ev = sse.event().await;
        assert_eq!(ev.event.as_deref(), Some("joined"), "{ev:?}");
        out.push((ev.json(), ev.id.clone()));
    }
    out
}

#[tokio::test]
async fn sse_streams_joined_events_then_messages_with_cursor_ids_and_proxy_friendly_headers() {
    let gw = start().await;
    let mut sse = Sse::open(gw.addr(), "/news?rooms=news:b,news:a", &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache, no-transform"));
    assert_eq!(sse.header("x-accel-buffering"), Some("no"));

    let joined = sse_joined(&mut sse, 2).await;
    assert_eq!(sse.retries, [2000], "the stream starts with retry: 2000");
    assert_eq!(sse.comments, ["connected"]);
    let rooms: Vec<&str> = joined
        .iter()
        .map(|(j, _)| j["room"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, ["news:a", "news:b"]);
    for (j, _) in &joined {
        assert_eq!(j["recovered"], false);
        assert_eq!(j["position"]["seq"], 0);
    }

    let a1 = publish(&gw, "news:a", json!("a1")).await;
    let b1 = publish(&gw, "news:b", json!({"headline": "b1"})).await;
    let a2 = publish(&gw, "news:a", json!("a2")).await;
    let (msgs, last) = sse_messages(&mut sse, 3).await;
    // Each room in its own order; rooms fan out independently, so a stream may interleave
    // them in any order (docs/protocol.md promises order per room only).
    let in_room = |room: &str| {
        msgs.iter()
            .filter(|m| m["room"] == room)
            .map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(in_room("news:a"), [(a1, json!("a1")), (a2, json!("a2"))]);
    assert_eq!(in_room("news:b"), [(b1, json!({"headline": "b1"}))]);
    // The id is the position of every room of the stream.
    let epoch = msgs[0]["epoch"].as_str().unwrap();
    assert_eq!(
        decode_cursor(&last),
        json!({"news:a": [a2, epoch], "news:b": [b1, epoch]})
    );
}

#[tokio::test]
async fn an_sse_reconnect_with_last_event_id_gets_exactly_the_gap() {
    let gw = start().await;
    let path = "/news?rooms=news:a,news:b";
    let mut sse = Sse::open(gw.addr(), path, &[]).await;
    sse_joined(&mut sse, 2).await;
    publish(&gw, "news:a", json!(1)).await;
    publish(&gw, "news:b", json!(2)).await;
    let (_, last) = sse_messages(&mut sse, 2).await;
    drop(sse); // the connection drops

    for n in 3..=5 {
        publish(&gw, if n % 2 == 0 { "news:b" } else { "news:a" }, json!(n)).await;
    }
    let mut sse = Sse::open(gw.addr(), path, &[("last-event-id", &last)]).await;
    for (j, _) in sse_joined(&mut sse, 2).await {
        assert_eq!(j["recovered"], true, "{j}");
    }
    // The gap is replayed room by room, each in order.
    let (gap, _) = sse_messages(&mut sse, 3).await;
    assert_eq!(
        gap.iter()
            .map(|m| (m["room"].as_str().unwrap(), m["data"].clone()))
            .collect::<Vec<_>>(),
        [
            ("news:a", json!(3)),
            ("news:a", json!(5)),
            ("news:b", json!(4))
        ],
        "exactly the gap"
    );

    // Dropped in the middle of a replay: the id of the last event received resumes exactly
    // after it (it must not claim the rest of the gap was delivered).
    drop(sse);
    let mut sse = Sse::open(gw.addr(), path, &[("last-event-id", &last)]).await;
    sse_joined(&mut sse, 2).await;
    let (first, mid) = sse_messages(&mut sse, 1).await;
    assert_eq!(first[0]["data"], 3);
    drop(sse);
    let mut sse = Sse::open(gw.addr(), path, &[("last-event-id", &mid)]).await;
    sse_joined(&mut sse, 2).await;
    let (rest, _) = sse_messages(&mut sse, 2).await;
    assert_eq!(
        rest.iter().map(|m| m["data"].clone()).collect::<Vec<_>>(),
        [json!(5), json!(4)],
        "the rest of the gap"
    );
    publish(&gw, "news:a", json!(6)).await;
    let (live, last) = sse_messages(&mut sse, 1).await;
    assert_eq!(live[0]["data"], 6, "then live");

    // The id works as a query parameter too (for clients that cannot set headers).
    drop(sse);
    publish(&gw, "news:b", json!(7)).await;
    let mut sse = Sse::open(gw.addr(), &format!("{path}&lastEventId={last}"), &[]).await;
    sse_joined(&mut sse, 2).await;
    let (gap, _) = sse_messages(&mut sse, 1).await;
    assert_eq!(gap[0]["data"], 7);
}

#[tokio::test]
async fn an_sse_reconnect_before_any_message_resumes_from_the_joined_events_id() {
    let gw = start().await;
    let mut sse = Sse::open(gw.addr(), "/news?rooms=news:quiet", &[]).await;
    let joined = sse_joined(&mut sse, 1).await;
    let id = joined[0]
        .1
        .clone()
        .expect("joined events carry the cursor as their id, so EventSource can resume even before the first message");
    drop(sse);
    publish(&gw, "news:quiet", json!("while away")).await;
    let mut sse = Sse::open(
        gw.addr(),
        "/news?rooms=news:quiet",
        &[("last-event-id", &id)],
    )
    .await;
    let joined = sse_joined(&mut sse, 1).await;
    assert_eq!(joined[0].0["recovered"], true);
    let (gap, _) = sse_messages(&mut sse, 1).await;
    assert_eq!(gap[0]["data"], "while away");
}

#[tokio::test]
async fn an_sse_resume_past_the_retained_history_reports_recovered_false() {
    let gw = start().await;
    let mut sse = Sse::open(gw.addr(), "/news?rooms=news:busy", &[]).await;
    sse_joined(&mut sse, 1).await;
    publish(&gw, "news:busy", json!(1)).await;
    let (_, last) = sse_messages(&mut sse, 1).await;
    drop(sse);
    for n in 2..=8 {
        publish(&gw, "news:busy", json!(n)).await; // history keeps 4..=8
    }
    let mut sse = Sse::open(
        gw.addr(),
        "/news?rooms=news:busy",
        &[("last-event-id", &last)],
    )
    .await;
    let joined = sse_joined(&mut sse, 1).await;
    assert_eq!(joined[0].0["recovered"], false, "{}", joined[0].0);
    assert_eq!(joined[0].0["position"]["seq"], 8);
    publish(&gw, "news:busy", json!(9)).await;
    let (live, _) = sse_messages(&mut sse, 1).await;
    assert_eq!(live[0]["data"], 9, "nothing replayed; live continues");

    // A cursor that cannot be decoded is ignored: a fresh join.
    let mut sse = Sse::open(
        gw.addr(),
        "/news?rooms=news:busy",
        &[("last-event-id", "garbage!")],
    )
    .await;
    let joined = sse_joined(&mut sse, 1).await;
    assert_eq!(
        (
            joined[0].0["recovered"].as_bool(),
            joined[0].0["position"]["seq"].as_u64()
        ),
        (Some(false), Some(9))
    );
}

#[tokio::test]
async fn sse_with_a_token_also_streams_the_users_own_room() {
    let gw = start().await;
    let token = sign_hs256(&claims("alice", 600, json!({})));
    let mut sse = Sse::open(
        gw.addr(),
        &format!("/me?rooms=inbox:team&access_token={token}"),
        &[],
    )
    .await;
    assert_eq!(sse.status, 200);
    let rooms: Vec<String> = sse_joined(&mut sse, 2)
        .await
        .iter()
        .map(|(j, _)| j["room"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rooms, ["inbox:team", "user:alice"]);
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "me", "users": ["alice"], "data": "hi alice"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (m, _) = sse_messages(&mut sse, 1).await;
    assert_eq!(
        (m[0]["room"].as_str(), m[0]["data"].as_str()),
        (Some("user:alice"), Some("hi alice"))
    );

    // Someone else's user room, a room outside the patterns, no rooms, no token.
    for (path, status) in [
        (format!("/me?rooms=user:bob&access_token={token}"), 403),
        (format!("/me?rooms=news:a&access_token={token}"), 403),
        ("/news?rooms=other:a".to_owned(), 403),
        ("/news".to_owned(), 400),
        ("/me?rooms=inbox:team".to_owned(), 401),
    ] {
        let sse = Sse::open(gw.addr(), &path, &[]).await;
        assert_eq!(sse.status, status, "{path}");
    }
}

#[tokio::test]
async fn sigterm_ends_sse_streams_with_a_retry_hint_and_a_shutdown_event() {
    let mut gw = start().await;
    let mut sse = Sse::open(gw.addr(), "/news?rooms=news:a", &[]).await;
    sse_joined(&mut sse, 1).await;
    gw.terminate();
    let ev = sse.event().await;
    assert_eq!(ev.event.as_deref(), Some("shutdown"), "{ev:?}");
    let hint = ev.json()["reconnectAfterMs"]
        .as_u64()
        .expect("reconnectAfterMs");
    assert!((500..5000).contains(&hint));
    assert_eq!(
        ev.retry,
        Some(hint),
        "retry: tells EventSource the same delay"
    );
    assert!(
        sse.next_event(PROMPTLY).await.is_none(),
        "then the stream ends"
    );
    assert!(gw.wait_exit(PROMPTLY).await.is_some_and(|s| s.success()));
}

#[tokio::test]
async fn a_long_poll_returns_the_gap_waits_for_live_messages_and_answers_204_when_nothing_arrives()
{
    let gw = start().await;
    // First poll: nothing yet; the 204 pins the current position.
    let first = long_poll(gw.addr(), "/news?rooms=news:a,news:b&timeout=300ms").await;
    assert_eq!(first.status, 204);
    assert!(first.body.is_none());
    let cursor = first.cursor();
    let positions = decode_cursor(&cursor);
    assert_eq!(positions["news:a"][0], 0);
    assert_eq!(positions["news:b"][0], 0);

    // What arrived since the cursor, in order, across rooms.
    publish(&gw, "news:a", json!("a1")).await;
    publish(&gw, "news:b", json!("b1")).await;
    publish(&gw, "news:a", json!("a2")).await;
    let got = long_poll(
        gw.addr(),
        &format!("/news?rooms=news:a,news:b&cursor={cursor}&timeout=5s"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(got.headers.get("cache-control").unwrap(), "no-store");
    let body = got.body.clone().unwrap();
    assert_eq!(body["lost"], json!([]));
    let mut data: Vec<(String, Value)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["room"].as_str().unwrap().to_owned(), m["data"].clone()))
        .collect();
    // Per room in order (the gap is replayed room by room).
    data.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        data,
        [
            ("news:a".to_owned(), json!("a1")),
            ("news:a".to_owned(), json!("a2")),
            ("news:b".to_owned(), json!("b1"))
        ]
    );
    let cursor = got.cursor();

    // Nothing new: 204 after the (short) timeout, the cursor unchanged in substance.
    let idle = long_poll(
        gw.addr(),
        &format!("/news?rooms=news:a,news:b&cursor={cursor}&timeout=300ms"),
    )
    .await;
    assert_eq!(idle.status, 204);
    assert_eq!(decode_cursor(&idle.cursor()), decode_cursor(&cursor));

    // A waiting poll returns the first live message.
    let addr = gw.addr();
    let path = format!("/news?rooms=news:a,news:b&cursor={cursor}&timeout=20s");
    let waiting = tokio::spawn(async move { long_poll(addr, &path).await });
    let seq = publish(&gw, "news:b", json!("b2")).await;
    let got = waiting.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.data(), [json!("b2")]);
    assert_eq!(decode_cursor(&got.cursor())["news:b"][0], seq);

    // Bad requests.
    let (status, _) = http_get(gw.addr(), "/news?rooms=secret:x").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_long_poll_past_the_retained_history_reports_the_room_as_lost() {
    let gw = start().await;
    let first = long_poll(gw.addr(), "/news?rooms=news:a,news:b&timeout=200ms").await;
    let cursor = first.cursor();
    for n in 1..=7 {
        publish(&gw, "news:a", json!(n)).await; // history keeps 3..=7
    }
    let got = long_poll(
        gw.addr(),
        &format!("/news?rooms=news:a,news:b&cursor={cursor}"),
    )
    .await;
    assert_eq!(got.status, 200);
    let body = got.body.clone().unwrap();
    assert_eq!(body["lost"], json!(["news:a"]));
    assert_eq!(
        body["messages"],
        json!([]),
        "nothing replayed for a lost room"
    );
    let positions = decode_cursor(&got.cursor());
    assert_eq!(
        positions["news:a"][0], 7,
        "the cursor moves to the current position"
    );

    let next = long_poll(
        gw.addr(),
        &format!(
            "/news?rooms=news:a,news:b&cursor={}&timeout=200ms",
            got.cursor()
        ),
    )
    .await;
    assert_eq!(next.status, 204, "from there on, nothing is lost");

    // A cursor ahead of the room (not one the gateway gave out) is lost too, and replaced by
    // the real position rather than kept.
    let epoch = positions["news:a"][1].clone();
    let ahead = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"p": {"news:a": [1000, epoch]}}).to_string());
    let got = long_poll(gw.addr(), &format!("/news?rooms=news:a&cursor={ahead}")).await;
    assert_eq!(
        got.body.as_ref().map(|b| b["lost"].clone()),
        Some(json!(["news:a"]))
    );
    assert_eq!(decode_cursor(&got.cursor())["news:a"], json!([7, epoch]));
}

#[tokio::test]
async fn browsers_on_another_origin_may_read_streams_and_polls_through_cors() {
    let gw = start().await;
    let origin = ("origin", "https://app.example.com");

    // Any origin on a route without an allow-list: echoed, without credentials.
    let sse = Sse::open(
        gw.addr(),
        "/news?rooms=news:a",
        &[("origin", "http://localhost:3000")],
    )
    .await;
    assert_eq!(sse.status, 200);
    assert_eq!(
        sse.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(sse.header("access-control-allow-credentials"), None);
    assert_eq!(sse.header("vary"), Some("origin"));
    // An origin the route lists: echoed, with credentials (EventSource withCredentials).
    let sse = Sse::open(gw.addr(), "/listed?rooms=news:a", &[origin]).await;
    assert_eq!(
        sse.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(sse.header("access-control-allow-credentials"), Some("true"));
    // Other origins are refused by the allow-list before any of this.
    let sse = Sse::open(
        gw.addr(),
        "/listed?rooms=news:a",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(sse.status, 403);
    // Without Origin (not a browser), no CORS headers.
    let sse = Sse::open(gw.addr(), "/news?rooms=news:a", &[]).await;
    assert_eq!(sse.header("access-control-allow-origin"), None);

    // Long-polls too, with the cursor header readable by fetch().
    let (status, headers, _) = support::rooms::http_request(
        gw.addr(),
        "GET",
        "/listed?rooms=news:a&timeout=100ms",
        &[origin],
        String::new(),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        headers["access-control-expose-headers"],
        "x-switchboard-cursor"
    );
    assert!(headers.contains_key("x-switchboard-cursor"));

    // A fetch() long-poll that sends its token in `Authorization` is preflighted first: the
    // preflight carries no credentials (Fetch standard), so it is answered before the token
    // check (it was a 401, and the poll was never sent). Only for an allowed origin.
    let (status, headers, _) = support::rooms::http_request(
        gw.addr(),
        "OPTIONS",
        "/me?rooms=inbox:team",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ],
        String::new(),
    )
    .await;
    assert_eq!(status, 204, "{headers:?}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(allowed.contains("last-event-id"), "{allowed}");
    assert_eq!(headers["access-control-allow-methods"], "GET");
    let (status, _, _) = support::rooms::http_request(
        gw.addr(),
        "OPTIONS",
        "/listed?rooms=news:a",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
        String::new(),
    )
    .await;
    assert_eq!(status, 403, "a preflight from an origin the route refuses");
}

#[tokio::test]
async fn an_sse_stream_ends_with_an_error_event_when_its_token_expires() {
    let gw = start().await;
    let token = sign_hs256(&claims("alice", 2, json!({})));
    let mut sse = Sse::open(
        gw.addr(),
        &format!("/me?rooms=inbox:team&access_token={token}"),
        &[],
    )
    .await;
    assert_eq!(sse.status, 200);
    sse_joined(&mut sse, 2).await;
    let ev = sse.event().await;
    assert_eq!(ev.event.as_deref(), Some("error"), "{ev:?}");
    assert_eq!(
        ev.json(),
        json!({"type": "error", "code": "forbidden", "reason": "token expired"})
    );
    assert!(
        sse.next_event(PROMPTLY).await.is_none(),
        "then the stream ends"
    );
}

/// `/listed` as in [`config`], and a proxy route `/app` to `app`: a request held there keeps
/// the drain going (as any other open connection would), so the tests can talk to a gateway
/// that is still draining.
fn draining_config(app: u16) -> String {
    ConfigBuilder::new()
        .drain("0s", "60s")
        .route(
            route("listed", "/listed")
                .origins(&["https://app.example.com"])
                .rooms(json!({
                    "namespace": "news",
                    "join": ["news:*"],
                    "history": {"maxMessages": 5, "maxAge": "10m"},
                })),
        )
        .route(
            route("app", "/app")
                .prefix()
                .proxy(&[app])
                .unset("keepalive"),
        )
        .yaml()
}

#[tokio::test]
async fn an_eventsource_reconnecting_into_a_draining_gateway_gets_a_200_stream_that_says_retry_and_ends()
 {
    let app = HeldApp::start().await;
    let mut gw = Gateway::start(&draining_config(app.port())).await;
    let addr = gw.addr();
    let held =
        tokio::spawn(
            async move { http_request(addr, "GET", "/app/slow", &[], String::new()).await },
        );
    eventually("the app to hold a request", PROMPTLY, || async {
        app.held() == 1
    })
    .await;
    gw.terminate();
    eventually("the gateway to refuse new requests", PROMPTLY, || async {
        http_request(addr, "GET", "/app/fast", &[], String::new())
            .await
            .0
            == 503
    })
    .await;

    // What an EventSource sends when it reconnects: its Origin and the last id it saw.
    let origin = ("origin", "https://app.example.com");
    let mut sse = Sse::open(
        addr,
        "/listed?rooms=news:a",
        &[origin, ("last-event-id", "eyJwIjp7fX0")],
    )
    .await;
    assert_eq!(
        sse.status, 200,
        "never a status EventSource treats as fatal: {:?}",
        sse.headers
    );
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        sse.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(sse.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(sse.header("connection"), Some("close"));
    let ev = sse.event().await;
    assert_eq!(ev.event.as_deref(), Some("shutdown"), "{ev:?}");
    let hint = ev.json()["reconnectAfterMs"]
        .as_u64()
        .expect("reconnectAfterMs");
    assert!((500..5000).contains(&hint), "{hint}");
    assert_eq!(
        ev.retry,
        Some(hint),
        "retry: tells EventSource the same delay"
    );
    assert_eq!(
        ev.id, None,
        "no id: the EventSource keeps its Last-Event-ID"
    );
    assert!(
        sse.next_event(PROMPTLY).await.is_none(),
        "then the stream ends"
    );

    // A long-poll is refused in a way fetch() can read and retry: 503 draining, Retry-After,
    // Connection: close, CORS.
    let (status, headers, body) = http_request(
        addr,
        "GET",
        "/listed?rooms=news:a&timeout=5s",
        &[origin],
        String::new(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""error":"draining""#), "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(headers["connection"], "close");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );

    app.release();
    let (status, _, body) = held.await.expect("held request");
    assert_eq!((status, body.as_str()), (200, "app answered /app/slow"));
    assert!(gw.wait_exit(PROMPTLY).await.is_some_and(|s| s.success()));
}

#[tokio::test]
async fn refusals_of_streams_and_polls_carry_the_cors_headers_of_their_route() {
    let gw = start().await;
    let origin = ("origin", "https://app.example.com");
    let cors = |headers: &http::HeaderMap| {
        (
            headers
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            headers
                .get("vary")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        )
    };
    let readable = (
        Some("https://app.example.com".to_owned()),
        Some("origin".to_owned()),
    );

    // 401: no token on a JWT route (SSE and long-poll).
    let sse = Sse::open(gw.addr(), "/me?rooms=inbox:team", &[origin]).await;
    assert_eq!(sse.status, 401);
    assert_eq!(cors(&sse.headers), readable, "401 SSE: {:?}", sse.headers);
    let (status, headers, _) = http_request(
        gw.addr(),
        "GET",
        "/me?rooms=inbox:team",
        &[origin],
        String::new(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(cors(&headers), readable, "401 poll: {headers:?}");
    // 403: a room the route does not allow.
    let sse = Sse::open(gw.addr(), "/news?rooms=secret:a", &[origin]).await;
    assert_eq!(sse.status, 403);
    assert_eq!(cors(&sse.headers), readable, "403 SSE: {:?}", sse.headers);
    // 400: neither SSE nor a long-poll.
    let (status, headers, _) = http_request(
        gw.addr(),
        "POST",
        "/listed?rooms=news:a",
        &[origin],
        String::new(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(cors(&headers), readable, "400: {headers:?}");
    // With credentials where the route lists its origins.
    assert_eq!(headers["access-control-allow-credentials"], "true");

    // An origin the route does not allow learns nothing (403 `origin`, no CORS), and a request
    // that matches no route has no route to take CORS rules from.
    let sse = Sse::open(
        gw.addr(),
        "/listed?rooms=news:a",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(sse.status, 403);
    assert_eq!(cors(&sse.headers), (None, None));
    let sse = Sse::open(gw.addr(), "/nowhere?rooms=news:a", &[origin]).await;
    assert_eq!(sse.status, 404);
    assert_eq!(cors(&sse.headers), (None, None));
}

/// Read a raw HTTP/1.1 SSE response until the gateway closes the socket; the bytes as sent.
async fn raw_sse_until_closed(gw: &mut Gateway) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    s.write_all(b"GET /news?rooms=news:a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(13).any(|w| w == b"event: joined") && gw.is_running() {
                gw.terminate();
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the gateway closes the stream when it drains");
    got
}

#[tokio::test]
async fn an_sse_stream_ended_by_a_drain_ends_with_the_terminating_chunk() {
    // The stream's end races the process exit; a few rounds make a lost end visible.
    for round in 0..6 {
        let mut gw = start().await;
        let got = raw_sse_until_closed(&mut gw).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains("transfer-encoding: chunked"),
            "{text}"
        );
        assert!(text.contains("event: shutdown"), "round {round}: {text}");
        assert!(
            got.ends_with(b"\r\n0\r\n\r\n"),
            "round {round}: the chunked body ends with the zero-length chunk: {:?}",
            &text[text.len().saturating_sub(80)..]
        );
        assert!(gw.wait_exit(PROMPTLY).await.is_some_and(|s| s.success()));
    }
}

/// A long-poll whose client goes away while it waits (a tab closed, a network change) leaves
/// its rooms: hyper drops the request there, and the rooms it had joined kept a member that
/// nobody would ever read, with their subscriptions (~1.4 kB per room; an outside probe grew a
/// pod by 17 MB/s with aborted polls).
#[tokio::test]
async fn a_long_poll_abandoned_by_its_client_while_it_waits_leaves_its_rooms() {
    use tokio::io::AsyncWriteExt;
    let gw = start().await;
    let rooms_local = || async {
        let text = support::metrics_text(&gw).await;
        support::metric_sum(&text, "switchboard_rooms_local", &[])
    };
    assert_eq!(rooms_local().await, 0.0);
    let mut polls = Vec::new();
    for n in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let head = format!(
            "GET /news?rooms=news:gone-{n}-a,news:gone-{n}-b&timeout=20 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        polls.push(tcp);
    }
    eventually("the polls to join their rooms", PROMPTLY, || async {
        rooms_local().await == 6.0
    })
    .await;
    drop(polls);
    eventually(
        "the abandoned polls to leave their rooms",
        PROMPTLY,
        || async { rooms_local().await == 0.0 },
    )
    .await;
}
