//! The TypeScript client (`clients/js`, docs/client-js.md) against the real gateway: each test
//! starts gateways (and NATS) with the support harness and runs one scenario of
//! `clients/js/test/integration/driver.mjs` in Node, which drives real `@switchboard/client`
//! connections from the built `clients/js/dist/` and reports what they saw as JSON lines.
//! Where a scenario needs the world to change (a gateway restart, a publish through the API),
//! the driver says so and waits for a line on its stdin.
//!
//! The last test runs the client in headless Chromium (`clients/js/test/integration/browser.mjs`,
//! playwright-core from `e2e/browser`).
//!
//! Needs Node 20+ and `clients/js/dist` (`npm test` in clients/js builds it; `make test` runs
//! that first; `scripts/setup.sh` installs its devDependencies).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::nats::NatsServer;
use support::rooms::{PUBLISH_TOKEN, publish_api, publish_seq};
use support::{ConfigBuilder, route};
use support::{Gateway, HS256_SECRET, claims, jwt_hs256, repo_root, sign_hs256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// A rooms route `/chat` (rooms `chat:*`, history, presence) taking HS256 tokens from a
/// `bearer.` subprotocol entry, `?access_token=` or `Authorization`; NATS when `nats` is given.
/// `listen`: a fixed address for the public listener (a gateway taking over another's port).
fn config(nats: Option<&str>, listen: Option<std::net::SocketAddr>) -> String {
    let mut gateway = ConfigBuilder::new()
        .drain("0s", "10s")
        .publish_token(PUBLISH_TOKEN)
        .route(
            route("chat", "/chat")
                .jwt(jwt_hs256())
                .set(
                    "jwt.tokenSources",
                    json!([{"subprotocol": {"prefix": "bearer."}}, {"query": {"name": "access_token"}}, {"bearer": {}}]),
                )
                .rooms(json!({
                    "join": ["chat:*"],
                    "publish": ["chat:*"],
                    "history": {"maxMessages": 1000, "maxAge": "10m"},
                    "presence": true,
                }))
                .messages_per_second(10_000, 10_000),
        );
    if let Some(url) = nats {
        gateway = gateway
            .nats(url, "sbjs")
            .set("bus.nats.presenceTtl", json!("3s"));
    }
    if let Some(addr) = listen {
        gateway = gateway.listen(addr);
    }
    gateway.yaml()
}

fn driver_path() -> std::path::PathBuf {
    let root = repo_root().join("clients/js");
    assert!(
        root.join("dist/index.js").is_file(),
        "needs {}/dist: run `npm test` (or `npm run build`) in clients/js",
        root.display()
    );
    // A dist built before the sources last changed would test old code: refuse it by name.
    let newest = |dir: &std::path::Path, ext: &str| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == ext))
            .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
            .max()
    };
    let (src, dist) = (
        newest(&root.join("src"), "ts"),
        newest(&root.join("dist"), "js"),
    );
    assert!(
        src <= dist,
        "{}/dist is older than src/: run `npm run build` in clients/js",
        root.display()
    );
    root.join("test/integration/driver.mjs")
}

/// One run of the Node driver.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Driver {
    fn start(scenario: &str, args: Value) -> Self {
        Self::spawn(&[
            // Node 20 has a global WebSocket behind this flag (Node 22+ by default).
            "--experimental-websocket".into(),
            driver_path().into_os_string(),
            scenario.into(),
            args.to_string().into(),
        ])
    }

    fn spawn(node_args: &[std::ffi::OsString]) -> Self {
        let mut child = tokio::process::Command::new("node")
            .args(node_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run node");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The driver's next event (panics on its `error` event, its end, or 180 s of silence).
    /// A browser page's console lines are printed, not returned.
    async fn next(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(180), self.lines.next_line())
                .await
                .expect("the driver said nothing for 180s")
                .expect("read the driver's output")
                .expect("the driver ended early");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_ne!(v["event"], "error", "the driver failed: {}", v["text"]);
            if v["event"] == "console" || v["event"] == "pageerror" {
                eprintln!("page: {v}");
                continue;
            }
            return v;
        }
    }

    async fn expect(&mut self, event: &str) -> Value {
        let v = self.next().await;
        assert_eq!(v["event"], event, "{v}");
        v
    }

    async fn send(&mut self, v: Value) {
        let line = format!("{v}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("write");
        self.stdin.flush().await.expect("flush");
    }

    async fn finish(mut self) -> Value {
        let result = self.expect("result").await;
        let status = self.child.wait().await.expect("wait for node");
        assert!(status.success(), "driver exit {status}");
        result
    }
}

fn args(gw: &Gateway) -> Value {
    json!({
        "url": gw.ws_url("/chat"),
        "admin": gw.admin().to_string(),
        "secret": HS256_SECRET,
        "publishToken": PUBLISH_TOKEN,
    })
}

fn seqs(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_u64().unwrap_or_else(|| panic!("not a seq: {s}")))
        .collect()
}

/// Log times are `Date.now()` at emit, a millisecond or two after the client computed its
/// delay from the same clock.
const SLACK_MS: u64 = 5;

/// When a `reconnecting` event's attempt is due (ms since the Unix epoch).
fn not_before(reconnecting: &Value) -> u64 {
    reconnecting["t"].as_u64().unwrap() + reconnecting["delayMs"].as_u64().unwrap()
}

/// When a `shutdown` event's hint ends.
fn at_hint(shutdown: &Value) -> u64 {
    shutdown["t"].as_u64().unwrap() + shutdown["reconnectAfterMs"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_acknowledged_with_their_positions_and_reach_every_member_in_order() {
    let gw = Gateway::start(&config(None, None)).await;
    let r = Driver::start("basic", args(&gw)).finish().await;

    let acks: Vec<u64> = r["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().expect("stored: a seq"))
        .collect();
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "{r}");
    assert_eq!(
        r["typingAck"],
        json!({}),
        "an ephemeral ack has no position"
    );
    for member in ["alice", "bob"] {
        let got = r[member].as_array().unwrap();
        let stored: Vec<u64> = got.iter().filter_map(|m| m["seq"].as_u64()).collect();
        assert_eq!(stored[..3], acks[..], "{member}: {r}");
        let texts: Vec<&str> = got[..3]
            .iter()
            .map(|m| m["data"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["one", "two", "three"]);
        assert_eq!(got[0]["from"], json!({"sub": "alice"}));
        assert_eq!(got[3]["ephemeral"], true, "{member}: {r}");
        assert_eq!(got[3]["seq"], 0);
        assert_eq!(got.len(), 4, "{member}: {r}");
    }
    assert_eq!(r["forbidden"], "forbidden", "publish outside rooms.publish");
    // Bob's presence: a snapshot (on join) and diffs; alice's join is in the snapshot or
    // follows it, and her close is a `leave`.
    let presence = r["presence"].as_array().unwrap();
    assert!(presence.iter().any(|p| p[0] == "snapshot"), "{r}");
    let before_leave = &presence[presence.len() - 2];
    assert_eq!(before_leave[1], json!(["alice", "bob"]), "{r}");
    assert_eq!(presence.last().unwrap(), &json!(["leave", ["bob"]]), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_client_and_a_json_client_in_one_room_see_the_same_messages_and_seqs() {
    let gw = Gateway::start(&config(None, None)).await;
    let r = Driver::start("mixed", args(&gw)).finish().await;

    assert_eq!(
        r["protocols"],
        json!({"alice": "switchboard.v1.proto", "bob": "switchboard.v1"}),
        "each client got the encoding it offered: {r}"
    );
    let acks: Vec<u64> = r["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().expect("stored: a seq"))
        .collect();
    assert_eq!(acks.len(), 4, "{r}");
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "{r}");
    assert_eq!(
        r["typingAck"],
        json!({}),
        "an ephemeral ack has no position"
    );
    // Byte for byte the same messages (payloads, seqs, epochs, ts, from), whatever the encoding.
    assert_eq!(r["alice"], r["bob"], "{r}");
    let got = r["alice"].as_array().unwrap();
    assert_eq!(got.len(), 5, "{r}");
    let stored: Vec<u64> = got[..4]
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(stored, acks, "{r}");
    assert_eq!(got[0]["data"], json!({"text": "from proto", "n": 1.5}));
    assert_eq!(got[0]["from"], json!({"sub": "alice"}));
    assert_eq!(got[1]["data"], json!({"text": "from json"}));
    assert_eq!(got[1]["from"], json!({"sub": "bob"}));
    assert_eq!(got[2]["b64"], "AAEC/w==", "binary from the protobuf client");
    assert_eq!(got[3]["b64"], "CQg=", "binary from the JSON client");
    assert_eq!(
        (&got[4]["seq"], &got[4]["ephemeral"], &got[4]["data"]),
        (&json!(0), &json!(true), &json!({"typing": true})),
        "{r}"
    );
    assert_eq!(
        r["members"],
        json!(["alice", "bob"]),
        "presence over protobuf: {r}"
    );
    assert_eq!(r["forbidden"], "forbidden", "errors over protobuf: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_after_a_gateway_restart_with_exactly_the_gap() {
    resume_after_restart("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_client_resumes_after_a_gateway_restart_with_exactly_the_gap() {
    resume_after_restart("proto").await;
}

/// The `resume` scenario with the client on `encoding` (`json` or `proto`).
async fn resume_after_restart(encoding: &str) {
    let nats = NatsServer::start();
    let mut a = Gateway::start(&config(Some(&nats.url()), None)).await;
    let b = Gateway::start(&config(Some(&nats.url()), None)).await;
    let mut v = args(&a);
    v["encoding"] = json!(encoding);
    let mut d = Driver::start("resume", v);
    let before = seqs(&d.expect("ready").await["seqs"]);

    a.terminate();
    a.wait_exit(Duration::from_secs(30))
        .await
        .expect("gateway A exited");
    let mut gap = Vec::new();
    for i in 0..5 {
        gap.push(publish_seq(b.admin(), "chat:resume", json!({"gap": i})).await);
    }
    let _a2 = Gateway::start(&config(Some(&nats.url()), Some(a.addr()))).await;
    d.send(json!({"seqs": gap})).await;
    let r = d.finish().await;

    let want: Vec<u64> = before.iter().chain(&gap).copied().collect();
    assert_eq!(seqs(&r["got"]), want, "every message once, in order: {r}");
    assert_eq!(r["gaps"], json!([]), "nothing lost: {r}");
    let last = r["joins"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["resumed"].as_bool(), last["recovered"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    let log = r["log"].as_array().unwrap();
    let shutdown = log
        .iter()
        .find(|l| l["e"] == "shutdown")
        .expect("the drain's shutdown hint");
    let retry = log
        .iter()
        .find(|l| l["e"] == "reconnecting")
        .expect("a reconnect");
    assert!(
        not_before(retry) + SLACK_MS >= at_hint(shutdown),
        "waited at least the hint: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_queued_while_offline_are_flushed_in_order_after_the_reconnect() {
    let mut gw = Gateway::start(&config(None, None)).await;
    let mut d = Driver::start("offline", args(&gw));
    d.expect("ready").await;
    gw.terminate();
    gw.wait_exit(Duration::from_secs(30))
        .await
        .expect("gateway exited");
    d.expect("queued").await;
    let _gw2 = Gateway::start(&config(None, Some(gw.addr()))).await;
    let r = d.finish().await;

    assert_eq!(r["overflow"], "queue_full", "the queue is bounded: {r}");
    let acks: Vec<u64> = r["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(acks.len(), 5);
    assert!(
        acks.windows(2).all(|w| w[0] < w[1]),
        "stored in publish order: {r}"
    );
    assert_eq!(r["got"], json!([0, 1, 2, 3, 4]), "{r}");
    assert_eq!(seqs(&r["seqs"]), acks, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refreshed_before_exp_keeps_the_rooms_and_loses_nothing() {
    let gw = Gateway::start(&config(None, None)).await;
    // 3 s tokens: refreshed every 1.5 s, well before the gateway's 4001 at exp.
    let mut a = args(&gw);
    a["ttl"] = json!(3);
    a["runMs"] = json!(7000);
    let r = Driver::start("refresh", a).finish().await;

    let log = r["log"].as_array().unwrap();
    let closes: Vec<&Value> = log
        .iter()
        .filter(|l| l["e"] == "disconnected" && l["reason"] != "client closed")
        .collect();
    assert!(closes.len() >= 2, "the token was refreshed: {r}");
    assert!(
        closes
            .iter()
            .all(|c| c["code"] == 1000 && c["reason"] == "token refresh"),
        "every reconnect was a refresh, none a 4001: {r}"
    );
    assert!(r["tokens"].as_u64() > Some(2), "{r}");
    assert_eq!(
        seqs(&r["got"]),
        seqs(&r["acks"]),
        "every publish, once, in order: {r}"
    );
    assert_eq!(r["gaps"], json!([]), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_falls_back_to_sse_when_a_proxy_refuses_the_upgrade_and_resumes_a_cut_stream() {
    let gw = Gateway::start(&config(None, None)).await;
    let r = Driver::start("sse", args(&gw)).finish().await;

    assert!(
        r["upgrades"].as_u64() >= Some(2),
        "WebSocket tried first: {r}"
    );
    let log = r["log"].as_array().unwrap();
    let connected: Vec<&Value> = log.iter().filter(|l| l["e"] == "connected").collect();
    assert!(connected.len() >= 2, "{r}");
    assert!(connected.iter().all(|c| c["transport"] == "sse"), "{r}");
    assert_eq!(
        seqs(&r["got"]),
        seqs(&r["acks"]),
        "the resume delivered exactly the gap: {r}"
    );
    assert_eq!(r["gaps"], json!([]), "{r}");
    let last = r["joins"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["resumed"].as_bool(), last["recovered"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_pods_over_nats_see_each_others_publishes_and_presence() {
    let nats = NatsServer::start();
    let a = Gateway::start(&config(Some(&nats.url()), None)).await;
    let b = Gateway::start(&config(Some(&nats.url()), None)).await;
    let mut v = args(&a);
    v["urls"] = json!([a.ws_url("/chat"), b.ws_url("/chat")]);
    let r = Driver::start("pods", v).finish().await;

    let acks = seqs(&r["acks"]);
    assert_eq!(seqs(&r["a"]), acks, "{r}");
    assert_eq!(seqs(&r["b"]), acks, "{r}");
    assert_eq!(r["members"], json!(["alice", "bob"]), "{r}");
}

/// 200 clients across a drain (window 1 s: the gateway closes them all within a second). Each
/// one waits at least its `shutdown` hint (random 0.5–5 s) before trying again, so the
/// reconnects spread out instead of arriving together. (Here they all retry the draining
/// gateway's own address, refused with 503 until it exits, so its drain lasts until the
/// deadline: the quiet pause it waits for never comes. Behind a load balancer they would go to
/// another pod.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_spreads_the_reconnects_of_200_clients() {
    const CLIENTS: usize = 200;
    let mut gw = Gateway::start(&config(None, None)).await;
    let mut v = args(&gw);
    v["clients"] = json!(CLIENTS);
    let mut d = Driver::start("drain", v);
    d.expect("ready").await;
    gw.terminate();
    gw.wait_exit(Duration::from_secs(30))
        .await
        .expect("drained");
    let gw2 = Gateway::start(&config(None, Some(gw.addr()))).await;
    d.expect("reconnected").await;
    let (status, body) =
        publish_api(gw2.admin(), &json!({"room": "chat:drain", "data": "after"})).await;
    assert_eq!(status, 200, "{body}");
    d.send(json!({})).await;
    let r = d.finish().await;

    let clients = r["clients"].as_array().unwrap();
    assert_eq!(clients.len(), CLIENTS);
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    let first = clients
        .iter()
        .filter_map(|c| c["retryAt"].as_u64())
        .min()
        .expect("retries");
    for c in clients {
        *per_second
            .entry((c["retryAt"].as_u64().expect("a retry") - first) / 1000)
            .or_default() += 1;
    }
    let busiest = per_second.values().max().copied().unwrap_or(0);
    eprintln!("reconnect attempts per second after the drain: {per_second:?}");
    for c in clients {
        assert_eq!(c["code"], 1001, "closed by the drain: {c}");
        let hint = c["hint"]
            .as_u64()
            .unwrap_or_else(|| panic!("no shutdown hint: {c}"));
        assert!((500..=5000).contains(&hint), "{c}");
        assert!(
            c["retryAt"].as_u64().unwrap() + SLACK_MS >= c["shutdownAt"].as_u64().unwrap() + hint,
            "waited at least the hint: {c}"
        );
    }
    // Without the hint all 200 would retry within about a second of their close (the window);
    // with it they spread over ~5 s. Generous: no second gets half of them.
    assert!(busiest <= CLIENTS / 2, "{per_second:?}");
    assert!(
        per_second.len() >= 4,
        "spread over several seconds: {per_second:?}"
    );
}

// --- headless Chromium ---------------------------------------------------------------------------

/// The page: the client from `/dist/` on a WebSocket and a second one on SSE (cross-origin
/// `fetch` streaming), both in `ROOM` at `gateway` (`host:port`); `window.report` says what they
/// saw. Phases: `ready` (both joined and got the two messages the WebSocket client published),
/// then `step()` with the expected sequence numbers, `done` when both have them all.
fn client_page(gateway: &str, token: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>@switchboard/client</title></head><body>
<script type="module">
import {{ SwitchboardClient }} from "/dist/index.js";
const ROOM = "chat:browser";
const report = (window.report = {{ phase: "start", ws: [], sse: [], acks: [], joins: {{ ws: [], sse: [] }}, gaps: [], log: [] }});
function watch(name, c) {{
  for (const e of ["connected", "disconnected", "shutdown", "error"])
    c.on(e, (v) => report.log.push({{ client: name, e, ...v }}));
  c.join(ROOM, {{
    onMessage: (m) => report[name].push(m.seq),
    onJoined: (j) => report.joins[name].push(j),
    onGap: (g) => report.gaps.push({{ client: name, ...g }}),
  }});
}}
const ws = new SwitchboardClient({{ url: "ws://{gateway}/chat", getToken: () => "{token}", backoffBaseMs: 200, upgradeProbeMs: 1000 }});
const sse = new SwitchboardClient({{ url: "http://{gateway}/chat", transports: ["sse"], getToken: () => "{token}", backoffBaseMs: 200 }});
watch("ws", ws);
watch("sse", sse);
const until = async (pred) => {{ while (!pred()) await new Promise((r) => setTimeout(r, 20)); }};
await until(() => report.joins.ws.length && report.joins.sse.length);
for (const i of [1, 2]) report.acks.push((await ws.publish(ROOM, {{ i }})).seq);
await until(() => report.ws.length == 2 && report.sse.length == 2);
report.transports = [ws.transport, sse.transport];
report.phase = "ready";
window.step = async (line) => {{
  const want = JSON.parse(line).total;
  report.phase = "resuming";
  await until(() => report.ws.length >= want && report.sse.length >= want);
  // An outage can fail the WebSocket client's attempts until it falls back to SSE (the old pod
  // draining answers 503); its probe brings it back to the WebSocket within a few seconds.
  const deadline = Date.now() + 10000;
  await until(() => (ws.transport == "websocket" && sse.transport == "sse") || Date.now() > deadline);
  report.transportsAtEnd = [ws.transport, sse.transport];
  ws.close();
  sse.close();
  report.phase = "done";
}};
</script></body></html>
"#
    )
}

/// Serve `html` at `/` and `clients/js/dist/*.js` at `/dist/` on 127.0.0.1 (the page's origin
/// is `http://localhost:<port>`, the gateway another one).
async fn serve_client_page(html: String) -> u16 {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let dist = repo_root().join("clients/js/dist");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (html, dist) = (html.clone(), dist.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_owned();
                    let file = path
                        .strip_prefix("/dist/")
                        .filter(|f| f.ends_with(".js") && !f.contains(['/', '\\']))
                        .and_then(|f| std::fs::read(dist.join(f)).ok());
                    let (status, kind, body) = match (path.as_str(), file) {
                        ("/", _) => (200, "text/html; charset=utf-8", html.clone().into_bytes()),
                        (_, Some(js)) => (200, "text/javascript", js),
                        _ => (404, "text/plain", Vec::new()),
                    };
                    let resp = http::Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, kind)
                        .body(Full::new(bytes::Bytes::from(body)))
                        .expect("response");
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_client_publishes_over_websocket_receives_over_sse_and_resumes_both_after_a_restart()
 {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let playwright = repo_root().join("e2e/browser/node_modules/playwright-core");
    assert!(
        playwright.is_dir() && std::path::Path::new(&chromium).exists(),
        "needs {} and {chromium}: run scripts/setup.sh",
        playwright.display()
    );
    let nats = NatsServer::start();
    let mut a = Gateway::start(&config(Some(&nats.url()), None)).await;
    let b = Gateway::start(&config(Some(&nats.url()), None)).await;
    let token = sign_hs256(&claims("alice", 600, json!({})));
    let page = serve_client_page(client_page(&a.addr().to_string(), &token)).await;
    let script = driver_path().with_file_name("browser.mjs");
    let mut d = Driver::spawn(&[
        script.into_os_string(),
        format!("http://localhost:{page}/").into(),
    ]);
    let mut report = d.expect("report").await;
    while report["report"]["phase"] != "ready" {
        report = d.expect("report").await;
    }
    let ready = &report["report"];
    assert_eq!(ready["transports"], json!(["websocket", "sse"]), "{ready}");
    let acks = seqs(&ready["acks"]);

    a.terminate();
    a.wait_exit(Duration::from_secs(30))
        .await
        .expect("gateway A exited");
    let mut gap = Vec::new();
    for i in 0..3 {
        gap.push(publish_seq(b.admin(), "chat:browser", json!({"gap": i})).await);
    }
    let _a2 = Gateway::start(&config(Some(&nats.url()), Some(a.addr()))).await;
    d.send(json!({"total": acks.len() + gap.len()})).await;
    loop {
        report = d.expect("report").await;
        if report["report"]["phase"] == "done" {
            break;
        }
    }
    let r = &report["report"];
    let want: Vec<u64> = acks.iter().chain(&gap).copied().collect();
    assert_eq!(seqs(&r["ws"]), want, "the WebSocket client: {r}");
    assert_eq!(seqs(&r["sse"]), want, "the SSE client: {r}");
    assert_eq!(r["gaps"], json!([]), "{r}");
    assert_eq!(
        r["transportsAtEnd"],
        json!(["websocket", "sse"]),
        "the outage did not leave the WebSocket client on SSE: {r}"
    );
    for client in ["ws", "sse"] {
        let last = r["joins"][client]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            (last["resumed"].as_bool(), last["recovered"].as_bool()),
            (Some(true), Some(true)),
            "{client}: {r}"
        );
    }
    let status = d.child.wait().await.expect("wait for node");
    assert!(status.success(), "driver exit {status}");
}
