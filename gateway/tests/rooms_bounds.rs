//! No client can make the gateway hold more than its documented bounds (issue 8 §2), against
//! the real binary over real sockets: SSE streams that stop reading end as slow consumers and
//! hold no more than `rooms.maxQueueBytes`; forged cursors keep only the requested rooms; rooms
//! with no member and no retained message cost nothing on the embedded bus (also after history
//! expires, with no further publish); long-polls hold admission slots; the publish API caps
//! the rooms of one call; empty token subjects never name a shared user room.
//!
//! Memory is asserted as *bounded* (RSS growth, or the gateway's own queued-bytes gauge, under a
//! bound derived from the config), never as timings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use support::rooms::{JsonWs, PUBLISH_TOKEN, Sse, long_poll, publish_api};
use support::{ConfigBuilder, route};
use support::{
    Gateway, PROMPTLY, claims, eventually, jwt_hs256, metric_sum, metrics_text, sign_hs256,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The queue bound of `/capped` (the smallest round number well above one message).
const MAX_QUEUE: u64 = 65_536;
/// The default `rooms.maxQueueBytes` (`/news`).
const DEFAULT_QUEUE: u64 = 1 << 20;

/// `/news` (namespace `news`): anonymous, join and publish `news:*`, presence, history, the
/// default queue bound.
/// `/capped`: the same rooms with at most 2 connections per IP.
/// `/brief` (namespace `brief`): history that expires after 1 s.
/// `/me`: HS256 JWT from `?access_token=` (user rooms are joined automatically).
fn config() -> String {
    ConfigBuilder::new()
        .drain("0s", "20s")
        .publish_token(PUBLISH_TOKEN)
        .route(
            route("news", "/news")
                .rooms(json!({
                    "join": ["news:*"],
                    "publish": ["news:*"],
                    "presence": true,
                    "history": {"maxMessages": 5, "maxAge": "10m"},
                }))
                .messages_per_second(1_000_000, 1_000_000)
                .unset("drain"),
        )
        .route(
            route("capped", "/capped")
                .rooms(json!({
                    "namespace": "news",
                    "join": ["news:*"],
                    "history": {"maxMessages": 5, "maxAge": "10m"},
                    "maxQueueBytes": MAX_QUEUE,
                }))
                .limits(json!({"connectionsPerIp": 2}))
                .unset("drain"),
        )
        .route(
            route("brief", "/brief")
                .rooms(json!({"join": ["brief:*"], "history": {"maxMessages": 5, "maxAge": "1s"}}))
                .unset("drain"),
        )
        .route(
            route("me", "/me")
                .jwt(jwt_hs256())
                .set(
                    "jwt.tokenSources",
                    json!([{"query": {"name": "access_token"}}]),
                )
                .rooms(json!({"join": ["inbox:*"]}))
                .unset("drain"),
        )
        .yaml()
}

async fn start() -> Gateway {
    Gateway::start(&config()).await
}

/// Resident set of a process, in KiB (`/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A gauge that must be exported (absent counts as a failure, not as 0).
async fn gauge(gw: &Gateway, name: &str) -> f64 {
    let text = metrics_text(gw).await;
    assert!(
        text.lines().any(|l| l.starts_with(name)),
        "{name} is not exported"
    );
    metric_sum(&text, name, &[])
}

/// A cursor (`Last-Event-ID`) naming `n` rooms that do not exist, plus `real`.
fn forged_cursor(n: usize, real: &[&str]) -> String {
    let mut p = serde_json::Map::new();
    for i in 0..n {
        p.insert(format!("fake:{i:04}"), json!([1, "mem-0123456789abcdef"]));
    }
    for r in real {
        p.insert((*r).to_owned(), json!([0, "mem-0123456789abcdef"]));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({ "p": p }).to_string())
}

/// The rooms a cursor holds, of the forged ones and `news:a` (a cursor names its rooms by a tag
/// of their names: it is read against every name it could hold).
fn cursor_rooms(cursor: &str) -> Vec<String> {
    let mut candidates: Vec<String> = (0..250).map(|i| format!("fake:{i:04}")).collect();
    candidates.push("news:a".to_owned());
    let c = switchboard_gateway::rooms::cursor::Cursor::decode(cursor, &candidates)
        .unwrap_or_else(|e| panic!("cursor {cursor:?}: {e}"));
    c.positions.keys().cloned().collect()
}

/// An SSE request from a socket with the smallest receive buffer the kernel allows, whose
/// response head is read and then nothing more: the gateway's writes stall almost at once.
async fn stalled_sse(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PROMPTLY, stream.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read head");
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// Read until the gateway ends the connection (EOF or reset); panics if it does not.
async fn read_until_closed(mut stream: TcpStream, within: Duration) {
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!("the gateway did not end the stalled stream within {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// Publish one message of `size` bytes into every room of `rooms` (one API call).
async fn publish_many(admin: SocketAddr, namespace: &str, rooms: &[String], size: usize) {
    let (status, body) = publish_api(
        admin,
        &json!({"namespace": namespace, "rooms": rooms, "data": "x".repeat(size)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Ping and read everything up to the pong (joined/left replies and presence events).
async fn drain_until_pong(ws: &mut JsonWs, n: usize) {
    let id = format!("sentinel-{n}");
    ws.send(json!({"type": "ping", "id": id})).await;
    loop {
        let v = ws.recv().await;
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "pong" && v["id"] == id.as_str() {
            return;
        }
    }
}

#[tokio::test]
async fn an_sse_cursor_keeps_only_the_rooms_the_request_asked_for() {
    let gw = start().await;
    let forged = forged_cursor(250, &["news:a"]);
    assert!(forged.len() < 16 * 1024, "within the header cap");
    let mut sse = Sse::open(
        gw.addr(),
        "/news?rooms=news:a",
        &[("last-event-id", &forged)],
    )
    .await;
    assert_eq!(sse.status, 200);
    let joined = sse.event().await;
    assert_eq!(joined.event.as_deref(), Some("joined"), "{joined:?}");
    let id = joined.id.expect("joined carries the cursor");
    assert_eq!(
        cursor_rooms(&id),
        ["news:a"],
        "the forged rooms are not kept"
    );

    // The long-poll cursor likewise.
    let poll = long_poll(
        gw.addr(),
        &format!("/news?rooms=news:a&timeout=0s&cursor={forged}"),
    )
    .await;
    assert!(matches!(poll.status, 200 | 204), "{poll:?}");
    assert_eq!(cursor_rooms(&poll.cursor()), ["news:a"]);
}

#[tokio::test]
async fn a_stalled_sse_stream_ends_as_a_slow_consumer_and_frees_its_admission_slot() {
    let gw = start().await;
    let stalled = stalled_sse(gw.addr(), "/capped?rooms=news:stall", &[]).await;
    let _second = Sse::open(gw.addr(), "/capped?rooms=news:other", &[]).await;
    // 4 KiB messages into the stalled stream's room until it is closed: its 64 KiB queue
    // fills once the kernel's socket buffers (up to `tcp_wmem`'s 4 MiB) are full. Bounded:
    // at most 16 MiB in all.
    let rooms = vec!["news:stall".to_owned()];
    let slow_closes = || async {
        metric_sum(
            &metrics_text(&gw).await,
            "switchboard_closes_total",
            &[("route", "capped"), ("cause", "slow_consumer")],
        )
    };
    for _ in 0..64 {
        for _ in 0..64 {
            publish_many(gw.admin(), "news", &rooms, 4096).await;
        }
        if slow_closes().await >= 1.0 {
            break;
        }
    }
    eventually(
        "the stalled stream to be closed as a slow consumer",
        Duration::from_secs(30),
        || async {
            let text = metrics_text(&gw).await;
            metric_sum(
                &text,
                "switchboard_closes_total",
                &[
                    ("route", "capped"),
                    ("code", "4008"),
                    ("cause", "slow_consumer"),
                ],
            ) >= 1.0
        },
    )
    .await;
    assert!(
        gw.log().contains("rooms stream ended")
            && gw
                .log()
                .lines()
                .any(|l| l.contains("rooms stream ended") && l.contains("slow_consumer")),
        "a connection-end log line says slow_consumer:\n{}",
        gw.log_tail(20)
    );
    // Its admission slot is free again: a new stream from the same address is admitted
    // (connectionsPerIp: 2, the second stream still holds the other slot).
    let again = Sse::open(gw.addr(), "/capped?rooms=news:again", &[]).await;
    assert_eq!(again.status, 200, "the stalled stream's slot was released");
    // And the socket itself is ended (a client that reads nothing cannot take a clean end).
    read_until_closed(stalled, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn non_reading_sse_clients_with_forged_cursors_hold_no_more_than_max_queue_bytes() {
    const CLIENTS: usize = 4;
    const ROOMS: usize = 200;
    let gw = start().await;
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("news:r{i}")).collect();
    let path = format!("/news?rooms={}", rooms.join(","));
    let forged = forged_cursor(250, &[]);
    let baseline = rss_kib(gw.pid());
    let mut stalled = Vec::new();
    for _ in 0..CLIENTS {
        stalled.push(stalled_sse(gw.addr(), &path, &[("last-event-id", &forged)]).await);
    }
    let admin = gw.admin();
    let publisher = tokio::spawn(async move {
        for _ in 0..40 {
            publish_many(admin, "news", &rooms, 512).await;
        }
    });
    let mut peak = baseline;
    let mut peak_queued = 0.0f64;
    while !publisher.is_finished() {
        peak = peak.max(rss_kib(gw.pid()));
        let text = metrics_text(&gw).await;
        peak_queued = peak_queued.max(metric_sum(&text, "switchboard_rooms_queued_bytes", &[]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.await.expect("publisher");
    // The fan-out and the streams' encoding run behind the publisher: keep sampling.
    for _ in 0..60 {
        peak = peak.max(rss_kib(gw.pid()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = rss_kib(gw.pid());
    // What the config promises: each stream holds at most maxQueueBytes; allow the HTTP
    // layer's write buffer, allocator slack and the publish traffic itself on top.
    let promised_kib = CLIENTS as u64 * DEFAULT_QUEUE / 1024;
    let bound_kib = promised_kib + 20 * 1024;
    eprintln!(
        "RSS before {baseline} KiB, peak {peak} KiB, after {after} KiB; \
         queued peak {peak_queued} B; promised {promised_kib} KiB of queues"
    );
    assert!(
        peak - baseline < bound_kib,
        "RSS grew by {} KiB (bound {bound_kib} KiB)",
        peak - baseline
    );
    gauge(&gw, "switchboard_rooms_queued_bytes").await;
    assert!(
        peak_queued <= (CLIENTS as u64 * DEFAULT_QUEUE) as f64,
        "queued {peak_queued} B for {CLIENTS} streams of {DEFAULT_QUEUE} B"
    );
    // Each stream's end is counted by its own task: under load the last may lag the queue.
    let slow_ends = || async {
        metric_sum(
            &metrics_text(&gw).await,
            "switchboard_closes_total",
            &[("route", "news"), ("cause", "slow_consumer")],
        )
    };
    eventually("every stalled stream to be counted", PROMPTLY, || async {
        slow_ends().await >= CLIENTS as f64
    })
    .await;
    assert_eq!(
        slow_ends().await,
        CLIENTS as f64,
        "every stalled stream ended as a slow consumer"
    );
}

#[tokio::test]
async fn a_long_poll_holds_an_admission_slot_like_an_sse_stream() {
    let gw = start().await;
    let addr = gw.addr();
    let held: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(async move {
                long_poll(addr, &format!("/capped?rooms=news:lp{i}&timeout=20s")).await
            })
        })
        .collect();
    eventually("both long-polls to be admitted", PROMPTLY, || async {
        metric_sum(
            &metrics_text(&gw).await,
            "switchboard_connections_total",
            &[("route", "capped"), ("outcome", "long_poll")],
        ) >= 2.0
    })
    .await;
    let third = long_poll(addr, "/capped?rooms=news:lp2&timeout=1s").await;
    assert_eq!(
        third.status, 429,
        "a third long-poll is over connectionsPerIp: 2"
    );
    let text = metrics_text(&gw).await;
    assert!(
        metric_sum(
            &text,
            "switchboard_handshake_refusals_total",
            &[("route", "capped"), ("reason", "per_ip_cap")]
        ) >= 1.0
    );
    // A message ends both polls; their slots free with them.
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "news", "rooms": ["news:lp0", "news:lp1"], "data": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for h in held {
        assert_eq!(h.await.expect("poll").status, 200);
    }
    let fourth = long_poll(addr, "/capped?rooms=news:lp3&timeout=0s").await;
    assert_eq!(fourth.status, 204);
}

#[tokio::test]
async fn joining_and_leaving_many_distinct_rooms_leaves_nothing_behind() {
    const ROOMS: usize = 10_000;
    let gw = start().await;
    let baseline = rss_kib(gw.pid());
    let mut ws = JsonWs::connect(&gw.ws_url("/news"), &[]).await;
    let mut peak = baseline;
    for batch in 0..ROOMS / 100 {
        for i in 0..100 {
            let room = format!("news:j{batch}-{i}");
            ws.send(json!({"type": "join", "room": room})).await;
            ws.send(json!({"type": "leave", "room": room})).await;
        }
        drain_until_pong(&mut ws, batch).await;
        if batch % 10 == 0 {
            peak = peak.max(rss_kib(gw.pid()));
        }
    }
    // Long-polls naming 255 fresh rooms each, one after the other.
    for p in 0..20 {
        let rooms: Vec<String> = (0..255).map(|i| format!("news:p{p}-{i}")).collect();
        let poll = long_poll(
            gw.addr(),
            &format!("/news?rooms={}&timeout=0s", rooms.join(",")),
        )
        .await;
        assert_eq!(poll.status, 204, "{poll:?}");
    }
    peak = peak.max(rss_kib(gw.pid()));
    let after = rss_kib(gw.pid());
    eprintln!("RSS before {baseline} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        after.saturating_sub(baseline) < 40 * 1024,
        "{ROOMS} joined-and-left rooms and 5100 polled rooms kept {} KiB",
        after - baseline
    );
    // A leave and a finished poll release their rooms from tasks of their own: give a busy
    // machine time to run them.
    eventually(
        "every room without members or retained messages to be freed",
        PROMPTLY,
        || async { gauge(&gw, "switchboard_bus_rooms").await == 0.0 },
    )
    .await;
}

#[tokio::test]
async fn expired_history_is_freed_without_another_publish() {
    let gw = start().await;
    for batch in 0..5 {
        let rooms: Vec<String> = (0..1000).map(|i| format!("brief:{batch}-{i}")).collect();
        publish_many(gw.admin(), "brief", &rooms, 100).await;
    }
    assert!(gauge(&gw, "switchboard_bus_rooms").await >= 5000.0);
    eventually(
        "expired history to be freed",
        Duration::from_secs(30),
        || async { gauge(&gw, "switchboard_bus_rooms").await == 0.0 },
    )
    .await;
}

#[tokio::test]
async fn one_publish_call_naming_more_rooms_than_the_cap_is_refused() {
    let gw = start().await;
    let rooms: Vec<String> = (0..50_000).map(|i| format!("news:{i}")).collect();
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "news", "rooms": rooms, "data": 1}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "too_many_rooms", "{body}");
    let users: Vec<String> = (0..50_000).map(|i| format!("u{i}")).collect();
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "news", "users": users, "data": 1}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    // At the cap it is accepted.
    let rooms: Vec<String> = (0..1000).map(|i| format!("news:{i}")).collect();
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "news", "rooms": rooms, "data": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn empty_subjects_never_name_a_user_room() {
    let gw = start().await;
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": "me", "users": [""], "data": 1}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let token = sign_hs256(&claims("", 600, json!({})));
    let url = format!("{}?access_token={token}", gw.ws_url("/me"));
    match JsonWs::try_connect(&url, &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("sub"), "the refusal says why: {body}");
        }
        Err(e) => panic!("expected a 401, got {e}"),
        Ok(_) => panic!("a token with an empty sub joined the shared room `user:`"),
    }
    let sse = Sse::open(
        gw.addr(),
        &format!("/me?rooms=inbox:a&access_token={token}"),
        &[],
    )
    .await;
    assert_eq!(sse.status, 401);
}

/// The closing-note measurement (not a check): the gateway's RSS before, at peak and after each
/// abuse of issue 8 §2 at the scale, next to what the config promises. Run against a
/// release build with
/// `SWITCHBOARD_GATEWAY_BIN=target/release/switchboard-gateway cargo test -p switchboard-gateway
/// --test rooms_bounds -- --ignored --nocapture measure`.
#[tokio::test]
#[ignore = "a measurement for the closing note, minutes long"]
async fn measure_rss_before_peak_and_after_each_abuse() {
    let gw = start().await;
    let pid = gw.pid();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let report = |what: &str, before: u64, peak: u64, after: u64, promise: &str| {
        eprintln!(
            "{what}: RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB; config promises {promise}",
            mib(before),
            mib(peak),
            mib(after)
        );
    };

    // 1. Eight SSE clients that read nothing, with forged 250-room cursors, 200 rooms each.
    let rooms: Vec<String> = (0..200).map(|i| format!("news:m{i}")).collect();
    let path = format!("/news?rooms={}", rooms.join(","));
    let forged = forged_cursor(250, &[]);
    let before = rss_kib(pid);
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(stalled_sse(gw.addr(), &path, &[("last-event-id", &forged)]).await);
    }
    let mut peak = before;
    let mut peak_queued = 0.0f64;
    for _ in 0..40 {
        publish_many(gw.admin(), "news", &rooms, 512).await;
        peak = peak.max(rss_kib(pid));
        let text = metrics_text(&gw).await;
        peak_queued = peak_queued.max(metric_sum(&text, "switchboard_rooms_queued_bytes", &[]));
    }
    for _ in 0..40 {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stalled);
    tokio::time::sleep(Duration::from_secs(3)).await;
    report(
        "8 stalled SSE streams, forged cursors",
        before,
        peak,
        rss_kib(pid),
        &format!(
            "8 x maxQueueBytes = 8 MiB queued (queued-bytes gauge peak {:.2} MiB)",
            peak_queued / 1048576.0
        ),
    );

    // 2. Join and leave 60,000 distinct rooms on one WebSocket.
    let before = rss_kib(pid);
    let mut peak = before;
    let mut ws = JsonWs::connect(&gw.ws_url("/news"), &[]).await;
    for batch in 0..600 {
        for i in 0..100 {
            let room = format!("news:x{batch}-{i}");
            ws.send(json!({"type": "join", "room": room})).await;
            ws.send(json!({"type": "leave", "room": room})).await;
        }
        drain_until_pong(&mut ws, batch).await;
        if batch % 20 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    drop(ws);
    tokio::time::sleep(Duration::from_secs(1)).await;
    report(
        "join/leave of 60000 rooms",
        before,
        peak,
        rss_kib(pid),
        &format!(
            "no room kept (switchboard_bus_rooms = {})",
            gauge(&gw, "switchboard_bus_rooms").await
        ),
    );

    // 3. 100 concurrent long-polls naming 255 fresh rooms each, twice (the second round shows
    // whether the first one's memory was freed for reuse or kept).
    for round in 0..2 {
        let before = rss_kib(pid);
        let addr = gw.addr();
        let polls: Vec<_> = (0..100)
            .map(|p| {
                let rooms: Vec<String> =
                    (0..255).map(|i| format!("news:q{round}-{p}-{i}")).collect();
                tokio::spawn(async move {
                    long_poll(addr, &format!("/news?rooms={}&timeout=2s", rooms.join(","))).await
                })
            })
            .collect();
        let mut peak = before;
        while polls.iter().any(|p| !p.is_finished()) {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for p in polls {
            let _ = p.await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        report(
            &format!("100 long-polls x 255 fresh rooms, round {}", round + 1),
            before,
            peak,
            rss_kib(pid),
            &format!(
                "rooms held only while the polls wait (switchboard_bus_rooms = {} after)",
                gauge(&gw, "switchboard_bus_rooms").await
            ),
        );
    }

    // 4. 150,000 rooms published with 1 s history, then left to expire (the `news` rooms
    // above keep their 10 min history).
    let kept = gauge(&gw, "switchboard_bus_rooms").await;
    let before = rss_kib(pid);
    let mut peak = before;
    for batch in 0..150 {
        let rooms: Vec<String> = (0..1000).map(|i| format!("brief:{batch}-{i}")).collect();
        publish_many(gw.admin(), "brief", &rooms, 100).await;
        peak = peak.max(rss_kib(pid));
    }
    let held = gauge(&gw, "switchboard_bus_rooms").await;
    eventually(
        "expired history to be freed",
        Duration::from_secs(120),
        || async { gauge(&gw, "switchboard_bus_rooms").await <= kept },
    )
    .await;
    report(
        "150000 rooms with 1 s history, after expiry",
        before,
        peak,
        rss_kib(pid),
        &format!("nothing after maxAge ({held} rooms held at peak, {kept} = the news rooms after)"),
    );

    // 5. One publish call naming 50,000 rooms: refused before anything is built.
    let before = rss_kib(pid);
    let rooms: Vec<String> = (0..50_000).map(|i| format!("news:{i}")).collect();
    let (status, _) = publish_api(
        gw.admin(),
        &json!({"namespace": "news", "rooms": rooms, "data": 1}),
    )
    .await;
    report(
        &format!("one publish call naming 50000 rooms (HTTP {status})"),
        before,
        rss_kib(pid),
        rss_kib(pid),
        "at most publishApi.maxRoomsPerCall = 1000 rooms per call",
    );
}
