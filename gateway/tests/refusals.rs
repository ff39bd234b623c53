//! Every refusal path, against one real gateway, in one table: what was sent, what the client
//! must get, what it got. The matrix is printed (run with `--no-capture` to see it) and every
//! row must hold; then `/metrics` must have counted each refusal under its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener as StdTcpListener;

use serde_json::json;
use support::{ConfigBuilder, route};
use support::{
    EchoOptions, EchoServer, Gateway, PROMPTLY, RawResponse, claims, close_normally, eventually,
    free_port, http_get, jwt_rsa_file, metric_sum, metrics_text, raw_request, raw_upgrade,
    sign_rs256, upgrade_head,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// `limits.maxConnections` of the gateway under test.
const POD_CAP: usize = 4;

fn config(echo: u16, dead: u16, silent: u16) -> String {
    let open = |name: &str, path: &str| route(name, path).proxy(&[echo]);
    ConfigBuilder::new()
        .limits(
            json!({"maxConnections": POD_CAP, "handshakeTimeout": "1s", "upstreamTimeout": "3s"}),
        )
        .route(open("open", "/open"))
        .route(open("origin", "/origin").origins(&["https://app.example.com"]))
        .route(
            open("auth", "/auth")
                .jwt(jwt_rsa_file())
                .set("jwt.audiences", json!(["switchboard"])),
        )
        .route(open("per-ip", "/per-ip").limits(json!({"connectionsPerIp": 1})))
        .route(
            open("per-user", "/per-user")
                .jwt(jwt_rsa_file())
                .limits(json!({"connectionsPerUser": 1})),
        )
        .route(open("rate", "/rate").limits(json!({"newConnectionsPerIpPerSecond": 2})))
        .route(route("no-backend", "/no-backend").proxy(&[]))
        .route(route("unreachable", "/unreachable").proxy(&[dead]))
        .route(route("silent", "/silent").proxy(&[silent]))
        .route(open("app", "/app"))
        .yaml()
}

/// One line of the matrix.
struct Row {
    path: String,
    expected: String,
    got: String,
    ok: bool,
}

#[derive(Default)]
struct Matrix {
    rows: Vec<Row>,
}

impl Matrix {
    fn check(&mut self, path: &str, expected: &str, got: String, ok: bool) {
        self.rows.push(Row {
            path: path.to_owned(),
            expected: expected.to_owned(),
            got,
            ok,
        });
    }

    /// A refusal row: `status` plus every `(header, substring)` in `headers`.
    fn refusal(&mut self, path: &str, resp: &RawResponse, status: u16, headers: &[(&str, &str)]) {
        let mut expected = format!("{status}");
        let mut got = format!("{}", resp.status);
        let mut ok = resp.status == status;
        for (name, want) in headers {
            expected += &format!(" {name}~{want:?}");
            let value = resp.header(name);
            got += &format!(" {name}={:?}", value.unwrap_or("-"));
            ok &= value.is_some_and(|v| v.contains(want));
        }
        self.check(path, &expected, got, ok);
    }

    fn print(&self) {
        let w = self.rows.iter().map(|r| r.path.len()).max().unwrap_or(4);
        let e = self
            .rows
            .iter()
            .map(|r| r.expected.len())
            .max()
            .unwrap_or(8);
        println!("\nrefusal matrix ({} rows)", self.rows.len());
        println!("{:<w$} | {:<e$} | got", "path", "expected");
        println!("{}", "-".repeat(w + e + 40));
        for r in &self.rows {
            let mark = if r.ok { "" } else { "   <-- MISMATCH" };
            println!("{:<w$} | {:<e$} | {}{mark}", r.path, r.expected, r.got);
        }
    }
}

fn aud_token(sub: &str, ttl: i64, aud: &str, key: &str) -> String {
    sign_rs256(
        key,
        None,
        &claims(sub, ttl, serde_json::json!({ "aud": aud })),
    )
}

/// Open and hold a WebSocket on `path` (must get 101).
async fn hold(gateway: &Gateway, path: &str, extra: &[(&str, &str)]) -> WebSocketStream<TcpStream> {
    let (resp, ws) = raw_upgrade(gateway.addr(), path, extra).await;
    assert_eq!(resp.status, 101, "holding {path}: {resp:?}");
    ws.expect("upgraded")
}

async fn release(held: Vec<WebSocketStream<TcpStream>>) {
    for mut ws in held {
        close_normally(&mut ws).await;
    }
}

/// Wait until the gateway has no live WebSocket left (its admission slots are free).
async fn wait_idle(gateway: &Gateway) {
    eventually("no live connections", PROMPTLY, || async {
        let (_, body) = http_get(gateway.admin(), "/status").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("/status JSON");
        v["connections"] == 0
    })
    .await;
}

#[tokio::test]
async fn every_refusal_path_answers_with_its_status_and_is_counted_by_reason() {
    let echo = EchoServer::start_with(EchoOptions {
        refuse_paths: vec!["/app/refused".to_owned()],
        ..EchoOptions::default()
    })
    .await;
    // Accepts TCP (kernel backlog) but never answers: the handshake times out.
    let silent = StdTcpListener::bind("127.0.0.1:0").expect("bind silent backend");
    let silent_port = silent.local_addr().expect("addr").port();
    let gateway = Gateway::start(&config(echo.port(), free_port(), silent_port)).await;
    let addr = gateway.addr();
    let mut m = Matrix::default();
    let up = |path: &'static str, extra: Vec<(&'static str, String)>| async move {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        raw_upgrade(addr, path, &extra).await
    };

    // --- pod-wide cap (first, while nothing else is open) -------------------------------
    wait_idle(&gateway).await;
    let mut held = Vec::new();
    for _ in 0..POD_CAP {
        held.push(hold(&gateway, "/open", &[]).await);
    }
    let (resp, _) = up("/open", vec![]).await;
    m.refusal(
        &format!("/open with {POD_CAP} open (pod cap)"),
        &resp,
        503,
        &[("retry-after", ""), ("content-type", "json")],
    );
    release(held).await;
    wait_idle(&gateway).await;

    // --- route, origin ------------------------------------------------------------------
    let (resp, _) = up("/nowhere", vec![]).await;
    m.refusal("/nowhere (no route)", &resp, 404, &[]);
    let (resp, ws) = up(
        "/origin",
        vec![("Origin", "https://app.example.com".into())],
    )
    .await;
    m.check(
        "/origin allowed origin (control)",
        "101",
        resp.status.to_string(),
        resp.status == 101,
    );
    release(ws.into_iter().collect()).await;
    for (what, origin) in [
        ("bad origin", "https://evil.example.com"),
        ("suffix trick", "https://app.example.com.evil.com"),
        ("null origin", "null"),
    ] {
        let (resp, _) = up("/origin", vec![("Origin", origin.into())]).await;
        m.refusal(&format!("/origin {what} {origin}"), &resp, 403, &[]);
    }

    // --- tokens -------------------------------------------------------------------------
    let (resp, _) = up("/auth", vec![]).await;
    m.refusal(
        "/auth no token",
        &resp,
        401,
        &[("www-authenticate", "Bearer realm=\"switchboard\"")],
    );
    let good = aud_token("alice", 600, "switchboard", "rsa");
    let (resp, ws) = up("/auth", vec![("Authorization", format!("Bearer {good}"))]).await;
    m.check(
        "/auth valid token (control)",
        "101",
        resp.status.to_string(),
        resp.status == 101,
    );
    release(ws.into_iter().collect()).await;
    for (what, token, reason) in [
        (
            "expired token",
            aud_token("alice", -120, "switchboard", "rsa"),
            "token expired",
        ),
        (
            "bad signature (other key)",
            aud_token("alice", 600, "switchboard", "rsa2"),
            "invalid signature",
        ),
        (
            "wrong aud",
            aud_token("alice", 600, "other", "rsa"),
            "invalid audience",
        ),
    ] {
        let (resp, _) = up("/auth", vec![("Authorization", format!("Bearer {token}"))]).await;
        m.refusal(
            &format!("/auth {what}"),
            &resp,
            401,
            &[(
                "www-authenticate",
                &format!("error_description=\"{reason}\""),
            )],
        );
    }

    // --- admission ----------------------------------------------------------------------
    // Every slot free again, so only the cap under test can refuse.
    wait_idle(&gateway).await;
    let first = hold(&gateway, "/per-ip", &[]).await;
    let (resp, _) = up("/per-ip", vec![]).await;
    m.refusal(
        "/per-ip second connection (cap 1)",
        &resp,
        429,
        &[("retry-after", "")],
    );
    release(vec![first]).await;

    let alice = format!("Bearer {}", support::token_for("alice"));
    let first = hold(&gateway, "/per-user", &[("Authorization", &alice)]).await;
    let (resp, _) = up("/per-user", vec![("Authorization", alice.clone())]).await;
    m.refusal(
        "/per-user second connection of alice (cap 1)",
        &resp,
        429,
        &[("retry-after", "")],
    );
    release(vec![first]).await;

    wait_idle(&gateway).await;
    // Five attempts at once: at most two per one-second window pass, so whichever window
    // boundary falls among them, at least one is refused (and at most four are held, within
    // the pod cap, because the rate is checked before the pod cap).
    let mut admitted = Vec::new();
    let mut rate_refusals = Vec::new();
    for _ in 0..5 {
        let (resp, ws) = up("/rate", vec![]).await;
        match ws {
            Some(ws) => admitted.push(ws),
            None => rate_refusals.push(resp),
        }
    }
    match rate_refusals.first() {
        Some(resp) => m.refusal(
            &format!(
                "/rate 5 quick connections, 2/s ({} refused)",
                rate_refusals.len()
            ),
            resp,
            429,
            &[("retry-after", "")],
        ),
        None => m.check(
            "/rate 5 quick connections, 2/s",
            "429",
            "all 5 admitted".into(),
            false,
        ),
    }
    let rate_refused = rate_refusals.len();
    let rate_all_429 = rate_refusals.iter().all(|r| r.status == 429);
    m.check(
        "/rate every refusal is a 429",
        "429 x refused",
        format!(
            "{:?}",
            rate_refusals.iter().map(|r| r.status).collect::<Vec<_>>()
        ),
        rate_all_429,
    );
    release(admitted).await;

    // --- handshake hardening ------------------------------------------------------------
    let head =
        upgrade_head("/open", &[]).replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let resp = raw_request(addr, &head).await;
    m.refusal(
        "/open Sec-WebSocket-Version: 8",
        &resp,
        426,
        &[("sec-websocket-version", "13")],
    );
    let head = upgrade_head("/open", &[]);
    let key_line = head
        .lines()
        .find(|l| l.starts_with("Sec-WebSocket-Key"))
        .expect("key line")
        .to_owned();
    let resp = raw_request(
        addr,
        &head.replace(&key_line, "Sec-WebSocket-Key: not-a-16-byte-key!"),
    )
    .await;
    m.refusal("/open bad Sec-WebSocket-Key", &resp, 400, &[]);
    // RFC 6455 §11.3.1, §11.3.5: each appears once. A second copy the gateway did not check
    // would reach the app, which could read the handshake differently.
    let twice = |line: &str| head.replace(line, &format!("{line}\r\n{line}"));
    let resp = raw_request(addr, &twice(&key_line)).await;
    m.refusal("/open Sec-WebSocket-Key twice", &resp, 400, &[]);
    let other_key = head.replace(
        &key_line,
        &format!("{key_line}\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="),
    );
    let resp = raw_request(addr, &other_key).await;
    m.refusal("/open two different Sec-WebSocket-Keys", &resp, 400, &[]);
    let resp = raw_request(
        addr,
        &head.replace(
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8",
        ),
    )
    .await;
    m.refusal("/open Sec-WebSocket-Version twice", &resp, 400, &[]);

    let many: Vec<(String, String)> = (0..100)
        .map(|i| (format!("X-Filler-{i}"), "x".into()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let resp = raw_request(addr, &upgrade_head("/open", &many)).await;
    m.refusal("/open 100 headers (max 64)", &resp, 431, &[]);
    let huge = "y".repeat(20 * 1024);
    let resp = raw_request(addr, &upgrade_head("/open", &[("X-Huge", &huge)])).await;
    m.refusal("/open one 20 KiB header (max 16 KiB)", &resp, 431, &[]);

    // Slowloris: half a request head, then silence. handshakeTimeout is 1s.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /open HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .await
        .expect("write half a head");
    let mut junk = Vec::new();
    let ended = tokio::time::timeout(PROMPTLY, slow.read_to_end(&mut junk)).await;
    let (got, ok) = match ended {
        Ok(Ok(_)) => (
            format!("disconnected (EOF after {} bytes)", junk.len()),
            true,
        ),
        Ok(Err(e)) => (format!("disconnected ({e})"), true),
        Err(_) => (format!("still connected after {PROMPTLY:?}"), false),
    };
    m.check(
        "/open half a request head (slowloris)",
        "disconnected",
        got,
        ok,
    );

    // --- backends -----------------------------------------------------------------------
    let (resp, _) = up("/no-backend", vec![]).await;
    m.refusal(
        "/no-backend (empty backend list)",
        &resp,
        503,
        &[("retry-after", "")],
    );
    let (resp, _) = up("/unreachable", vec![]).await;
    m.refusal("/unreachable (nothing listening)", &resp, 502, &[]);
    let (resp, _) = up("/silent", vec![]).await;
    m.refusal("/silent (backend never answers)", &resp, 504, &[]);
    drop(silent);

    // --- the app's own refusal, relayed unchanged ---------------------------------------
    let (resp, ws) = up("/app/refused", vec![]).await;
    assert!(ws.is_none());
    m.refusal(
        "/app/refused (the app answers 403)",
        &resp,
        403,
        &[
            ("x-echo-refused", "/app/refused"),
            ("content-type", "text/plain"),
        ],
    );
    m.check(
        "/app/refused body",
        "\"refused by the app\\n\"",
        format!("{:?}", resp.body_text()),
        resp.body_text() == "refused by the app\n",
    );

    m.print();
    let mismatches: Vec<&Row> = m.rows.iter().filter(|r| !r.ok).collect();
    assert!(
        mismatches.is_empty(),
        "{} row(s) of the refusal matrix do not hold (see the printed matrix)",
        mismatches.len()
    );

    // --- metrics: each refusal counted under its reason ---------------------------------
    let text = metrics_text(&gateway).await;
    let expected: BTreeMap<&str, f64> = [
        ("pod_cap", 1.0),
        ("no_route", 1.0),
        ("origin", 3.0),
        ("token_missing", 1.0),
        ("token_invalid", 3.0),
        ("per_ip_cap", 1.0),
        ("per_user_cap", 1.0),
        ("per_ip_rate", rate_refused as f64),
        ("ws_version", 1.0),
        ("bad_handshake", 4.0),
        ("headers_too_large", 2.0),
        ("no_backend", 1.0),
        ("backend_unreachable", 1.0),
        ("backend_timeout", 1.0),
    ]
    .into_iter()
    .collect();
    let mut counted = BTreeMap::new();
    // (0.0 + sum: an absent series sums to -0.0, which prints confusingly.)
    for reason in expected.keys() {
        counted.insert(
            *reason,
            0.0 + metric_sum(
                &text,
                "switchboard_handshake_refusals_total",
                &[("reason", reason)],
            ),
        );
    }
    println!("\nswitchboard_handshake_refusals_total by reason: {counted:?}");
    assert_eq!(counted, expected, "refusals counted by reason");
    // The slowloris connection above (and any idle keep-alive connection) is counted when
    // hyper gives up on its request head.
    let header_timeouts = metric_sum(
        &text,
        "switchboard_handshake_timeouts_total",
        &[("stage", "headers")],
    );
    assert!(
        header_timeouts >= 1.0,
        "the slowloris connection is counted as a header timeout (got {header_timeouts})"
    );
    assert_eq!(
        metric_sum(
            &text,
            "switchboard_connections_total",
            &[("route", "app"), ("outcome", "app_refused")]
        ),
        1.0,
        "the app's refusal is counted as app_refused"
    );
}

/// Routes for the "one view of the request" matrix: an anonymous `/public`, a JWT `/api` and
/// `/ws`, an `/admin` that needs another audience, a host-bound `/hosted` (with a host-less
/// fallback that has no backend) and a rooms route.
fn request_view_config(echo: u16) -> String {
    let proxied = |name: &str, path: &str| route(name, path).proxy(&[echo]).unset("drain");
    let audience = |aud: &str| {
        let mut jwt = jwt_rsa_file();
        jwt["audiences"] = json!([aud]);
        jwt
    };
    ConfigBuilder::new()
        .listener(
            "keep",
            json!({"paths": {"escapedSlashes": "keep", "mergeSlashes": false}}),
        )
        .limits(json!({"handshakeTimeout": "2s", "upstreamTimeout": "3s"}))
        .drain("0s", "15s")
        .route(proxied("public", "/public"))
        .route(proxied("api", "/api").jwt(audience("switchboard")))
        .route(proxied("ws", "/ws").jwt(audience("switchboard")))
        .route(proxied("admin", "/admin").jwt(audience("admin")))
        .route(
            proxied("hosted", "/hosted")
                .set("hosts", json!(["chat.example.com"]))
                .unset("keepalive"),
        )
        .route(
            route("hosted-fallback", "/hosted")
                .proxy(&[])
                .unset("keepalive")
                .unset("drain"),
        )
        .route(
            route("rooms", "/rooms")
                .rooms(json!({"join": ["lobby"]}))
                .unset("drain"),
        )
        .yaml()
}

/// A plain GET head with `Host: localhost` (or the given host lines) and `extra` header lines.
fn get_head(target: &str, host_lines: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\n{host_lines}{extra}\r\n")
}

const LOCALHOST: &str = "Host: localhost\r\n";

#[tokio::test]
async fn the_gateway_and_the_app_see_the_same_request() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&request_view_config(echo.port())).await;
    let addr = gateway.addr();
    let keep = gateway.listener("keep");
    let token = format!(
        "Authorization: Bearer {}\r\n",
        aud_token("alice", 600, "switchboard", "rsa")
    );
    let mut m = Matrix::default();

    // A 200 row must also show the path the app received.
    let forwarded = |m: &mut Matrix, what: &str, resp: &RawResponse, path: &str| {
        let got_path =
            (resp.status == 200).then(|| support::parse_http_echo(&resp.body_text()).path);
        m.check(
            what,
            &format!("200 app sees {path}"),
            format!(
                "{} app sees {}",
                resp.status,
                got_path.as_deref().unwrap_or("-")
            ),
            resp.status == 200 && got_path.as_deref() == Some(path),
        );
    };

    // --- paths: the route and the app see the normalized path -------------------------------
    let resp = raw_request(addr, &get_head("/public/x", LOCALHOST, "")).await;
    forwarded(&mut m, "/public/x (control)", &resp, "/public/x");
    for target in [
        "/public/../api/secret",
        "/public/%2e%2e/api/secret",
        "/public/%2E%2E/api/secret",
        "/public/./../api/secret",
        "/public/.%2e/api/secret",
    ] {
        let resp = raw_request(addr, &get_head(target, LOCALHOST, "")).await;
        m.refusal(
            &format!("{target} no token (is /api/secret)"),
            &resp,
            401,
            &[],
        );
    }
    let resp = raw_request(addr, &get_head("/public/../api/secret", LOCALHOST, &token)).await;
    forwarded(
        &mut m,
        "/public/../api/secret with token",
        &resp,
        "/api/secret",
    );
    for target in [
        "/public/..%2fapi/secret",
        "/public/%2e%2e%2fapi/secret",
        "/public/..%2Fapi/secret",
        "/public/..%5capi/secret",
        "/public/a%2fb",
        "/public/..;/api/secret",
        "/public/..;jsessionid=1/api/secret",
        "/public/%zz",
        "/public/%4",
    ] {
        let resp = raw_request(addr, &get_head(target, LOCALHOST, "")).await;
        m.refusal(&format!("{target} (refused)"), &resp, 400, &[]);
    }
    let resp = raw_request(addr, &get_head("/public//x///y", LOCALHOST, "")).await;
    forwarded(&mut m, "/public//x///y (merged)", &resp, "/public/x/y");
    let resp = raw_request(addr, &get_head("/public/%7Euser/%41%62;p=1", LOCALHOST, "")).await;
    forwarded(
        &mut m,
        "/public/%7Euser/%41%62;p=1",
        &resp,
        "/public/~user/Ab;p=1",
    );
    let resp = raw_request(addr, &get_head("/public/%c3%a9?q=%2e%2e/x", LOCALHOST, "")).await;
    forwarded(
        &mut m,
        "/public/%c3%a9?q=%2e%2e/x",
        &resp,
        "/public/%C3%A9?q=%2e%2e/x",
    );

    // The same through the `keep` listener: encoded slashes stay encoded, slashes unmerged.
    let resp = raw_request(keep, &get_head("/public/a%2fb", LOCALHOST, "")).await;
    forwarded(&mut m, "keep: /public/a%2fb", &resp, "/public/a%2Fb");
    let resp = raw_request(keep, &get_head("/public/..%2fapi/secret", LOCALHOST, "")).await;
    forwarded(
        &mut m,
        "keep: /public/..%2fapi/secret",
        &resp,
        "/public/..%2Fapi/secret",
    );
    let resp = raw_request(keep, &get_head("/public//x", LOCALHOST, "")).await;
    forwarded(&mut m, "keep: /public//x (not merged)", &resp, "/public//x");
    let resp = raw_request(keep, &get_head("/public/../api/secret", LOCALHOST, "")).await;
    m.refusal("keep: /public/../api/secret no token", &resp, 401, &[]);

    // A token valid for /ws does not open /admin through a dot segment.
    let handshakes_before = echo.handshakes().len();
    let bearer = format!("Bearer {}", aud_token("alice", 600, "switchboard", "rsa"));
    let (resp, ws) = raw_upgrade(addr, "/ws/../admin", &[("Authorization", &bearer)]).await;
    m.refusal("/ws/../admin upgrade with a /ws token", &resp, 401, &[]);
    release(ws.into_iter().collect()).await;
    let (resp, ws) = raw_upgrade(addr, "/ws/a/./b/../c", &[("Authorization", &bearer)]).await;
    release(ws.into_iter().collect()).await;
    let seen: Vec<String> = echo.handshakes()[handshakes_before..]
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    m.check(
        "/ws/a/./b/../c upgrade: the app's handshakes",
        "101 [\"/ws/a/c\"]",
        format!("{} {seen:?}", resp.status),
        resp.status == 101 && seen == ["/ws/a/c"],
    );

    // --- Host (RFC 9112 §3.2) -----------------------------------------------------------------
    let resp = raw_request(
        addr,
        &get_head(
            "/public/x",
            "Host: localhost\r\nHost: chat.example.com\r\n",
            "",
        ),
    )
    .await;
    m.refusal("two Host headers", &resp, 400, &[]);
    let resp = raw_request(addr, &get_head("/public/x", "", "")).await;
    m.refusal("HTTP/1.1 without Host", &resp, 400, &[]);
    let resp = raw_request(addr, "GET /public/x HTTP/1.0\r\n\r\n").await;
    forwarded(
        &mut m,
        "HTTP/1.0 without Host (control)",
        &resp,
        "/public/x",
    );
    let resp = raw_request(
        addr,
        &get_head("/hosted/x", "Host: chat.example.com\r\n", ""),
    )
    .await;
    forwarded(
        &mut m,
        "/hosted Host: chat.example.com (control)",
        &resp,
        "/hosted/x",
    );
    let resp = raw_request(
        addr,
        &get_head(
            "http://chat.example.com/hosted/x",
            "Host: other.example.com\r\n",
            "",
        ),
    )
    .await;
    let host_seen = (resp.status == 200)
        .then(|| {
            support::parse_http_echo(&resp.body_text())
                .headers
                .get("host")
                .cloned()
        })
        .flatten();
    m.check(
        "absolute-form http://chat.example.com/hosted/x, Host: other",
        "200 app Host chat.example.com",
        format!("{} app Host {host_seen:?}", resp.status),
        resp.status == 200 && host_seen.as_deref() == Some("chat.example.com"),
    );
    let resp = raw_request(
        addr,
        &get_head(
            "http://chat.example.com/public/../api/x",
            "Host: chat.example.com\r\n",
            "",
        ),
    )
    .await;
    m.refusal("absolute-form with dot segments, no token", &resp, 401, &[]);

    // --- fields two parsers could read two ways ---------------------------------------------
    // Content-Length beside Transfer-Encoding is the request-smuggling shape (RFC 9112 §6.1):
    // the body is read as chunks and the length never reaches the app (§6.3: a proxy removes
    // it); Authorization is not a list (RFC 9110 §5.3): with two, which one was checked?
    let posts_before = echo.requests().len();
    let resp = raw_request(
        addr,
        "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    let length_seen = (resp.status == 200).then(|| {
        support::parse_http_echo(&resp.body_text())
            .headers
            .get("content-length")
            .cloned()
    });
    m.check(
        "POST with Content-Length: 40 and Transfer-Encoding: chunked",
        "200 app length None",
        format!(
            "{} app length {:?}",
            resp.status,
            length_seen.clone().flatten()
        ),
        resp.status == 200
            && length_seen
                .as_ref()
                .is_some_and(|l| l.as_deref() != Some("40")),
    );
    let resp = raw_request(
        addr,
        &get_head(
            "/api/x",
            LOCALHOST,
            &format!("{token}Authorization: Bearer forged\r\n"),
        ),
    )
    .await;
    m.refusal("/api/x with two Authorization headers", &resp, 400, &[]);
    let resp = raw_request(addr, &get_head("/api/x", LOCALHOST, &token)).await;
    forwarded(&mut m, "/api/x with one token (control)", &resp, "/api/x");
    let smuggled = echo.requests().len() - posts_before;
    m.check(
        "requests that reach the app",
        "2 (the chunked POST and the control)",
        smuggled.to_string(),
        smuggled == 2,
    );

    // --- HTTP/1.0 upgrade (RFC 6455 §4.1): refused before the app is asked ------------------
    let handshakes_before = echo.handshakes().len();
    for path in ["/public/x", "/rooms"] {
        let head = upgrade_head(path, &[]).replacen("HTTP/1.1", "HTTP/1.0", 1);
        let resp = raw_request(addr, &head).await;
        m.refusal(&format!("{path} HTTP/1.0 upgrade"), &resp, 400, &[]);
    }
    // RFC 6455 §4.1: a handshake has no body; an app reading one would read every frame
    // after it shifted.
    for (name, value, body) in [
        ("Content-Length", "6", "abcdef"),
        ("Transfer-Encoding", "chunked", "0\r\n\r\n"),
    ] {
        let head = upgrade_head("/public/x", &[(name, value)]);
        let resp = raw_request(addr, &format!("{head}{body}")).await;
        let what = format!("{name}: {value}");
        m.refusal(&format!("/public/x upgrade with {what}"), &resp, 400, &[]);
    }
    let app_handshakes = echo.handshakes().len() - handshakes_before;
    m.check(
        "HTTP/1.0 upgrades reach the app",
        "0",
        app_handshakes.to_string(),
        app_handshakes == 0,
    );

    // --- a broken body from the client is the client's fault --------------------------------
    let resp = raw_request(
        addr,
        "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
         FFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n",
    )
    .await;
    m.refusal("POST chunk size overflow", &resp, 400, &[]);

    m.print();
    let mismatches = m.rows.iter().filter(|r| !r.ok).count();
    assert_eq!(
        mismatches, 0,
        "rows of the request-view matrix that do not hold (see the printed matrix)"
    );

    let text = metrics_text(&gateway).await;
    let count = |reason: &str| {
        0.0 + metric_sum(
            &text,
            "switchboard_handshake_refusals_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(
        count("bad_request_body"),
        1.0,
        "the broken chunked body is counted as the client's"
    );
    assert_eq!(
        count("backend_unreachable"),
        0.0,
        "no request here is a backend failure"
    );
    assert_eq!(
        count("bad_request"),
        12.0,
        "9 path, 2 Host and 1 repeated Authorization refusals are counted as bad_request"
    );
    assert_eq!(
        count("bad_handshake"),
        4.0,
        "the HTTP/1.0 upgrades and the upgrades with a body are bad handshakes"
    );
}
