//! A real browser against rooms mode: headless Chromium (driven by `e2e/browser/rooms.js` with
//! playwright-core) loads a page served by this test from its own origin. The page opens a
//! `WebSocket` with the `switchboard.v1` subprotocol and an `EventSource` on the same room of
//! the gateway (another origin, as an app and its realtime host usually are); the test
//! publishes through the publish API; both the page's WebSocket and its EventSource receive the
//! message, which the page writes into its DOM, where the driver reads it.
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`) and `e2e/browser/node_modules` (both installed by
//! `scripts/setup.sh`).

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
use support::rooms::{PUBLISH_TOKEN, publish_api};
use support::{Gateway, free_port, repo_root};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

const ROOM: &str = "demo:browser";

fn config(public: u16, admin: u16) -> String {
    format!(
        r#"apiVersion: switchboard.dev/v1alpha1
kind: GatewayConfig
listeners: [{{name: public, address: "127.0.0.1:{public}"}}]
admin: {{address: "127.0.0.1:{admin}"}}
drain: {{propagation: 0s, deadline: 5s}}
publishApi: {{token: {PUBLISH_TOKEN}}}
routes:
  - name: demo
    path: {{value: /rooms}}
    mode: rooms
    rooms:
      join: ["demo:*"]
      publish: ["demo:*"]
      history: {{maxMessages: 100, maxAge: 10m}}
    keepalive: {{interval: 0s}}
    drain: {{window: 1s}}
"#
    )
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

    let gw = Gateway::start(&config(free_port(), free_port())).await;
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
