//! A real browser against rooms mode: headless Chromium (driven by `e2e/browser/rooms.js` with
//! playwright-core) loads a page served by this test from its own origin. The page opens a
//! `WebSocket` with the `switchboard.v1` subprotocol and an `EventSource` on the same room of
//! the gateway (another origin, as an app and its realtime host usually are); the test
//! publishes through the publish API; both the page's WebSocket and its EventSource receive the
//! message, which the page writes into its DOM, where the driver reads it. The route compresses
//! every message (permessage-deflate, threshold 0): the page reports `ws.extensions`, and the
//! messages it reads arrived compressed.
//!
//! A second test keeps five pages' EventSources open across a drain and a restart of the
//! gateway, with another connection holding the drain open, and counts the EventSources that
//! survive (reconnect to the new gateway and receive a message).
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`) and `e2e/browser/node_modules` (both installed by
//! `scripts/setup.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::convert::Infallible;
use std::process::Stdio;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::held_app::HeldApp;
use support::rooms::{PUBLISH_TOKEN, http_request, publish_api};
use support::{ConfigBuilder, route};
use support::{Gateway, eventually, repo_root};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const ROOM: &str = "demo:browser";

fn config() -> String {
    ConfigBuilder::new()
        .publish_token(PUBLISH_TOKEN)
        .route(
            route("demo", "/rooms")
                .rooms(json!({
                    "join": ["demo:*"],
                    "publish": ["demo:*"],
                    "history": {"maxMessages": 100, "maxAge": "10m"},
                }))
                // Every message compressed (threshold 0): the browser must inflate it.
                .compression(json!({"enabled": true, "thresholdBytes": 0})),
        )
        .yaml()
}

/// The page: a WebSocket and an EventSource on `ROOM` at `gateway` (`host:port`); each writes the
/// messages it gets as JSON into a list, and its state into a status element.
fn page(gateway: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>switchboard rooms</title></head>
<body>
<p id="ws-status" data-state="connecting"></p><ul id="ws"></ul>
<p id="sse-status" data-state="connecting"></p><ul id="sse"></ul>
<script>
const GATEWAY = "{gateway}";
const ROOM = "{ROOM}";
function add(list, obj) {{
  const li = document.createElement("li");
  li.textContent = JSON.stringify(obj);
  document.getElementById(list).appendChild(li);
}}
const wsStatus = document.getElementById("ws-status");
const ws = new WebSocket(`ws://${{GATEWAY}}/rooms`, ["switchboard.v1"]);
ws.onopen = () => {{
  wsStatus.dataset.protocol = ws.protocol;
  wsStatus.dataset.extensions = ws.extensions;
  ws.send(JSON.stringify({{type: "join", room: ROOM, id: "j1"}}));
}};
ws.onmessage = (ev) => {{
  const m = JSON.parse(ev.data);
  if (m.type === "joined" && m.id === "j1") wsStatus.dataset.state = "joined";
  else if (m.type === "message") add("ws", m);
  else console.log("ws: " + ev.data);
}};
ws.onclose = (ev) => console.log(`ws closed ${{ev.code}} ${{ev.reason}}`);
const sseStatus = document.getElementById("sse-status");
const es = new EventSource(`http://${{GATEWAY}}/rooms?rooms=${{ROOM}}`);
es.addEventListener("joined", () => {{ sseStatus.dataset.state = "joined"; }});
es.onmessage = (ev) => add("sse", {{id: ev.lastEventId, message: JSON.parse(ev.data)}});
es.onerror = () => console.log(`eventsource error, readyState ${{es.readyState}}`);
</script>
</body></html>
"#
    )
}

/// Serve `html` at `/` on a free port of 127.0.0.1 (the page's origin is
/// `http://localhost:<port>`, the gateway's `http://127.0.0.1:<port>`).
async fn serve_page(html: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let html = Bytes::from(html);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let html = html.clone();
                    async move {
                        let mut resp = Response::new(Full::new(if req.uri().path() == "/" {
                            html
                        } else {
                            Bytes::new()
                        }));
                        if req.uri().path() == "/" {
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("text/html; charset=utf-8"),
                            );
                        } else {
                            *resp.status_mut() = http::StatusCode::NOT_FOUND;
                        }
                        Ok::<_, Infallible>(resp)
                    }
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
async fn a_browsers_websocket_and_eventsource_both_receive_a_message_published_through_the_api() {
    let driver = repo_root().join("e2e/browser/rooms.js");
    let node_modules = repo_root().join("e2e/browser/node_modules/playwright-core");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        node_modules.is_dir() && std::path::Path::new(&chromium).exists(),
        "needs {} and {chromium}: run scripts/setup.sh",
        node_modules.display()
    );

    let gw = Gateway::start(&config()).await;
    let page_port = serve_page(page(&gw.addr().to_string())).await;
    let mut node = tokio::process::Command::new("node")
        .arg(&driver)
        .arg(format!("http://localhost:{page_port}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    let mut next = async || -> Value {
        loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!("the browser driver said nothing for 60s; so far: {log:#?}")
                })
                .expect("read the driver's output")
                .unwrap_or_else(|| panic!("the browser driver ended early; it said: {log:#?}"));
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"raw": line}));
            match v["event"].as_str() {
                Some("console" | "pageerror") | None => log.push(v),
                Some("error") => panic!(
                    "the browser driver failed: {}\npage log: {log:#?}",
                    v["text"]
                ),
                Some(_) => return v,
            }
        }
    };

    let ready = next().await;
    assert_eq!(ready["event"], "ready");
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"room": ROOM, "data": {"hello": "browser"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seq = body["results"][0]["seq"].as_u64().expect("seq");

    let result = next().await;
    assert_eq!(result["event"], "result", "{result}");
    assert_eq!(
        result["protocol"], "switchboard.v1",
        "the WebSocket negotiated the protocol"
    );
    let extensions = result["extensions"].as_str().unwrap_or_default();
    assert!(
        extensions.starts_with("permessage-deflate"),
        "Chromium negotiated permessage-deflate: {result}"
    );
    // The gateway sent it compressed (the joined reply and the message, at threshold 0), and
    // the page read it: Chromium inflated it.
    let metrics = support::metrics_text(&gw).await;
    let sent = support::metric_sum(
        &metrics,
        "switchboard_compression_bytes_total",
        &[("direction", "outbound"), ("form", "compressed")],
    );
    assert!(sent > 0.0, "compressed bytes sent: {sent}");
    let ws = result["ws"].as_array().expect("ws list");
    let sse = result["sse"].as_array().expect("sse list");
    assert_eq!(ws.len(), 1, "{result}");
    assert_eq!(sse.len(), 1, "{result}");
    assert_eq!(
        (
            ws[0]["type"].as_str(),
            ws[0]["room"].as_str(),
            ws[0]["seq"].as_u64()
        ),
        (Some("message"), Some(ROOM), Some(seq))
    );
    assert_eq!(ws[0]["data"], json!({"hello": "browser"}));
    assert_eq!(
        sse[0]["message"], ws[0],
        "the EventSource got the very same message"
    );
    assert!(
        sse[0]["id"].as_str().is_some_and(|id| !id.is_empty()),
        "EventSource saw the cursor as lastEventId: {result}"
    );
    let status = node.wait().await.expect("wait for node");
    assert!(status.success(), "driver exit: {status}");
}

/// The rooms route of [`config`] with a longer deadline, and a proxy route `/app` to `app`: a
/// request held there is the "other connection" that keeps the drain going while the pages'
/// EventSources reconnect.
fn restart_config(app: u16, listen: Option<std::net::SocketAddr>) -> String {
    let gateway = ConfigBuilder::new()
        .drain("0s", "120s")
        .publish_token(PUBLISH_TOKEN)
        .route(route("demo", "/rooms").rooms(json!({
            "join": ["demo:*"],
            "publish": ["demo:*"],
            "history": {"maxMessages": 100, "maxAge": "10m"},
        })))
        .route(
            route("app", "/app")
                .prefix()
                .proxy(&[app])
                .unset("keepalive"),
        );
    match listen {
        Some(addr) => gateway.listen(addr).yaml(),
        None => gateway.yaml(),
    }
}

/// A page with one EventSource on `ROOM` at `gateway`; `window.sseState()` says what it saw.
fn eventsource_page(gateway: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>switchboard eventsource</title></head>
<body>
<script>
const st = {{joined: 0, shutdowns: 0, errors: 0, messages: []}};
const es = new EventSource(`http://{gateway}/rooms?rooms={ROOM}`);
es.addEventListener("joined", () => {{ st.joined++; }});
es.addEventListener("shutdown", () => {{ st.shutdowns++; }});
es.onmessage = (ev) => st.messages.push(JSON.parse(ev.data).data);
es.onerror = () => {{ st.errors++; console.log(`eventsource error, readyState ${{es.readyState}}`); }};
window.sseState = () => ({{...st, readyState: es.readyState}});
</script>
</body></html>
"#
    )
}

/// `e2e/browser/eventsource_pages.js`, spoken to over stdin/stdout.
struct Pages {
    node: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    log: Vec<Value>,
}

impl Pages {
    async fn open(url: &str, n: usize) -> Self {
        let driver = repo_root().join("e2e/browser/eventsource_pages.js");
        let node_modules = repo_root().join("e2e/browser/node_modules/playwright-core");
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            node_modules.is_dir() && std::path::Path::new(&chromium).exists(),
            "needs {} and {chromium}: run scripts/setup.sh",
            node_modules.display()
        );
        let mut node = tokio::process::Command::new("node")
            .arg(&driver)
            .arg(url)
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run node");
        let stdin = node.stdin.take().unwrap();
        let lines = BufReader::new(node.stdout.take().unwrap()).lines();
        Self {
            node,
            stdin,
            lines,
            log: Vec::new(),
        }
    }

    /// The driver's next event (console lines are kept for diagnostics).
    async fn next(&mut self) -> Value {
        loop {
            let line =
                tokio::time::timeout(std::time::Duration::from_secs(90), self.lines.next_line())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "the browser driver said nothing for 90s; so far: {:#?}",
                            self.log
                        )
                    })
                    .expect("read the driver's output")
                    .unwrap_or_else(|| {
                        panic!("the browser driver ended early; it said: {:#?}", self.log)
                    });
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"raw": line}));
            match v["event"].as_str() {
                Some("console" | "pageerror") | None => self.log.push(v),
                Some("error") => panic!(
                    "the browser driver failed: {}\npage log: {:#?}",
                    v["text"], self.log
                ),
                Some(_) => return v,
            }
        }
    }

    /// Every page's `sseState()`.
    async fn states(&mut self) -> Vec<Value> {
        self.stdin
            .write_all(b"state\n")
            .await
            .expect("driver stdin");
        let v = self.next().await;
        assert_eq!(v["event"], "state", "{v}");
        v["pages"].as_array().expect("pages").clone()
    }

    /// Poll the pages until `done` holds for every one (up to two minutes).
    async fn wait_all(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let states = self.states().await;
            if states.iter().all(&done) {
                return states;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pages not all {what} within 120s: {states:#?}\npage log: {:#?}",
                self.log
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        drop(self.stdin);
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), self.node.wait())
            .await
            .expect("the driver exits within 60s")
            .expect("wait for node");
        assert!(status.success(), "driver exit: {status}");
    }
}

/// EventSource `readyState` CLOSED: the browser gave up on this stream for good.
const CLOSED: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pages_eventsource_survives_a_drain_and_restart_while_other_connections_hold_the_drain()
 {
    const PAGES: usize = 5;
    let app = HeldApp::start().await;
    let mut old = Gateway::start(&restart_config(app.port(), None)).await;
    let addr = old.addr();
    let page_port = serve_page(eventsource_page(&addr.to_string())).await;
    let mut pages = Pages::open(&format!("http://localhost:{page_port}/"), PAGES).await;
    assert_eq!(pages.next().await["event"], "ready");

    // Another client's request is in flight: the drain lasts until it is answered.
    let held =
        tokio::spawn(
            async move { http_request(addr, "GET", "/app/slow", &[], String::new()).await },
        );
    eventually(
        "the app to hold a request",
        std::time::Duration::from_secs(30),
        || async { app.held() == 1 },
    )
    .await;
    old.terminate();

    // Every stream ends with a shutdown event; each EventSource then reconnects into the
    // gateway that is still draining. It either gets the drain's answer (a second shutdown)
    // or is closed for good by the browser.
    let states = pages
        .wait_all("reconnected into the draining gateway", |p| {
            p["shutdowns"].as_u64() >= Some(2) || p["readyState"].as_u64() == Some(CLOSED)
        })
        .await;
    let dead_in_drain = states
        .iter()
        .filter(|p| p["readyState"].as_u64() == Some(CLOSED))
        .count();

    // The drain ends, the gateway exits, and a new one starts on the same port (the one the
    // old one was given).
    app.release();
    let (status, _, _) = held.await.expect("held request");
    assert_eq!(status, 200, "the held request completed during the drain");
    let exit = old
        .wait_exit(std::time::Duration::from_secs(60))
        .await
        .expect("the old gateway exits after the drain");
    assert!(exit.success(), "{exit}");
    let new = Gateway::start(&restart_config(app.port(), Some(addr))).await;

    // Every EventSource the browser kept reconnects to the new gateway; then a message.
    pages
        .wait_all("rejoined or closed", |p| {
            p["readyState"].as_u64() == Some(CLOSED) || p["joined"].as_u64() >= Some(2)
        })
        .await;
    let (status, body) = publish_api(
        new.admin(),
        &json!({"room": ROOM, "data": {"after": "restart"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let states = pages
        .wait_all("delivered or closed", |p| {
            p["readyState"].as_u64() == Some(CLOSED)
                || p["messages"]
                    .as_array()
                    .is_some_and(|m| m.contains(&json!({"after": "restart"})))
        })
        .await;
    let survived = states
        .iter()
        .filter(|p| {
            p["messages"]
                .as_array()
                .is_some_and(|m| m.contains(&json!({"after": "restart"})))
        })
        .count();
    println!(
        "EventSource survival across a drain and restart: {survived} of {PAGES} \
         (closed by the browser while the gateway drained: {dead_in_drain}); pages: {states:?}"
    );
    assert_eq!(
        survived, PAGES,
        "every page's EventSource survives; page log: {:#?}",
        pages.log
    );
    pages.quit().await;
}
