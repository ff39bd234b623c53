//! Graceful drain of the real binary on SIGTERM: readiness fails at once, the listener keeps
//! accepting during `drain.propagation`, then every client (and the app behind it) gets the
//! route's Close code and reason, spread over the route's drain window, and the process exits 0
//! before `drain.deadline`. Upgrades after the propagation window are refused with 503 (or find
//! the listener gone once the process has exited).
//!
//! Plain HTTP through a proxy route drains like the WebSockets: responses from SIGTERM on carry
//! `Connection: close`, requests in flight when the window ends still complete, and new requests
//! after the window get `503 draining` with `Retry-After` (never a reset), also for clients that
//! poll back to back.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans of the request path and of the drain reach an
//! OTLP/HTTP receiver run by the test before the process exits; a caller's `traceparent` is
//! continued and the app is handed the gateway's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::json;
use support::held_app::HeldApp;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, PROMPTLY, Received, assert_echo, eventually, expect_close, http_get,
    jwt_rsa_file, metric_sum, metrics_text, raw_exchange, token_for, try_http_get, upgrade_head,
    ws_connect, ws_try_connect,
};
use switchboard_gateway::engine::frame::{self, Event, OpCode, Scanner, Sender};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const CLIENTS: usize = 8;

fn config(backend: u16) -> String {
    ConfigBuilder::new()
        .drain("4s", "15s")
        .route(
            route("drained", "/")
                .proxy(&[backend])
                .drain(json!({"window": "1s", "closeCode": 1012, "closeReason": "restart"})),
        )
        .yaml()
}

#[tokio::test]
async fn sigterm_drains_every_client_with_the_routes_close_code_and_exits_zero() {
    let echo = EchoServer::start().await;
    let mut gateway = Gateway::start(&config(echo.port())).await;

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut ws = ws_connect(&gateway.ws_url(&format!("/client/{i}"))).await;
        assert_echo(&mut ws, "before the drain").await;
        clients.push(ws);
    }
    let ready = |text: &str| metric_sum(text, "switchboard_ready", &[]);
    assert_eq!(
        ready(&metrics_text(&gateway).await),
        1.0,
        "ready before SIGTERM"
    );

    gateway.terminate();
    eventually("/readyz to fail after SIGTERM", PROMPTLY, || async {
        matches!(
            try_http_get(gateway.admin(), "/readyz", &[]).await,
            Ok((503, _))
        )
    })
    .await;
    let (_, body) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(body.trim(), "draining");
    assert_eq!(
        ready(&metrics_text(&gateway).await),
        0.0,
        "not ready while draining"
    );

    // Still inside the propagation window: the listener accepts and proxies a new client.
    let mut late = ws_connect(&gateway.ws_url("/client/late")).await;
    assert_echo(&mut late, "during propagation").await;
    clients.push(late);

    // Every client sees the route's Close, then the end of its stream.
    let (first_tx, mut first_rx) = mpsc::channel::<()>(CLIENTS + 1);
    let mut waits = Vec::new();
    for mut ws in clients {
        let first_tx = first_tx.clone();
        waits.push(tokio::spawn(async move {
            let (code, reason, _) = expect_close(&mut ws, PROMPTLY).await;
            let _ = first_tx.try_send(());
            (code, reason, Instant::now())
        }));
    }
    first_rx.recv().await.expect("a first close");
    // The propagation window is over: a new upgrade is refused (or, if the drain already
    // finished, the process is gone).
    let after = match raw_exchange(gateway.addr(), &upgrade_head("/client/too-late", &[])).await {
        Ok((resp, _, _)) => {
            assert_eq!(resp.status, 503, "{resp:?}");
            assert!(resp.header("retry-after").is_some(), "{resp:?}");
            format!("{} {}", resp.status, resp.body_text().trim())
        }
        Err(e) => format!("connection failed ({e}): the gateway had exited"),
    };
    println!("upgrade after the propagation window: {after}");

    let mut at = Vec::new();
    for wait in waits {
        let (code, reason, when) = wait.await.expect("client task");
        assert_eq!((code, reason.as_str()), (1012, "restart"));
        at.push(when);
    }
    let first = *at.iter().min().expect("closes");
    let spread: Vec<u128> = at
        .iter()
        .map(|t| t.duration_since(first).as_millis())
        .collect();
    println!("close arrival offsets (ms, drain window 1s): {spread:?}");

    let app = echo.wait_closes(CLIENTS + 1, PROMPTLY).await;
    assert!(
        app.iter()
            .all(|c| c.as_ref().map(|(code, r)| (*code, r.as_str())) == Some((1012, "restart"))),
        "the app got the same close: {app:?}"
    );

    let status = gateway
        .wait_exit(PROMPTLY)
        .await
        .expect("the gateway exits after the drain");
    assert!(status.success(), "exit status {status}");
    let log = gateway.log();
    assert!(
        log.contains("drain complete: graceful exit"),
        "exited before the deadline, not forced; log:\n{log}"
    );
}

/// A WebSocket client written frame by frame over a raw socket, so it can do what a library
/// client never does on purpose: send a message after a Close reached it, before answering it
/// (what happens when a message and the gateway's Close cross on the wire).
struct RawClient {
    stream: TcpStream,
    scanner: Scanner,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum Frame {
    Text(String),
    Close(u16, String),
    Ping,
    End,
}

impl RawClient {
    async fn connect(gateway: &Gateway, path: &str) -> Self {
        let (resp, stream, rest) = raw_exchange(gateway.addr(), &upgrade_head(path, &[]))
            .await
            .expect("upgrade exchange");
        assert_eq!(resp.status, 101, "{resp:?}");
        RawClient {
            stream,
            scanner: Scanner::new(Sender::Server, u64::MAX),
            buf: rest,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("client write");
    }

    async fn send_text(&mut self, text: &str) {
        let mask = Some(rand::random::<[u8; 4]>());
        self.send(&frame::encode(OpCode::Text, text.as_bytes(), mask))
            .await;
    }

    async fn send_close(&mut self, code: u16) {
        let mask = Some(rand::random::<[u8; 4]>());
        self.send(&frame::close_frame(code, "", mask)).await;
    }

    /// The next frame from the gateway (pongs skipped), or `End` when the stream ends.
    async fn next(&mut self) -> Frame {
        let mut data = Vec::new();
        loop {
            let mut pos = 0;
            let buf = std::mem::take(&mut self.buf);
            while let Some(ev) = self.scanner.next(&buf, &mut pos).expect("valid frames") {
                match ev {
                    Event::Header(_) => {}
                    Event::Payload(p) => data.extend_from_slice(p),
                    Event::Control(c) if c.opcode == OpCode::Close => {
                        self.buf = buf[pos..].to_vec();
                        let reason = String::from_utf8_lossy(c.payload.get(2..).unwrap_or(&[]));
                        return Frame::Close(c.close_code().unwrap_or(1005), reason.into_owned());
                    }
                    Event::Control(c) if c.opcode == OpCode::Ping => {
                        self.buf = buf[pos..].to_vec();
                        return Frame::Ping;
                    }
                    Event::Control(_) => {}
                }
                if self.scanner.at_boundary() && !self.scanner.in_message() && !data.is_empty() {
                    self.buf = buf[pos..].to_vec();
                    return Frame::Text(String::from_utf8(data).expect("UTF-8 text"));
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(PROMPTLY, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("nothing from the gateway within {PROMPTLY:?}"),
                Ok(Ok(0) | Err(_)) => return Frame::End,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[tokio::test]
async fn a_message_that_crosses_the_drain_close_reaches_the_app_before_the_apps_close() {
    let echo = EchoServer::start().await;
    let mut gateway = Gateway::start(&config(echo.port())).await;
    let mut client = RawClient::connect(&gateway, "/client/raw").await;
    client.send_text("before the drain").await;
    assert_eq!(client.next().await, Frame::Text("before the drain".into()));

    gateway.terminate();
    assert_eq!(client.next().await, Frame::Close(1012, "restart".into()));
    // The client had written this before it read the Close: the two crossed on the wire.
    client.send_text("crossed the close").await;
    client.send_close(1012).await;
    assert_eq!(
        client.next().await,
        Frame::End,
        "nothing follows the gateway's Close but the end of the stream"
    );

    eventually("the app to get its Close", PROMPTLY, || async {
        echo.received()
            .iter()
            .any(|r| matches!(r, Received::Close(_)))
    })
    .await;
    assert_eq!(
        echo.received(),
        vec![
            Received::Text("before the drain".into()),
            Received::Text("crossed the close".into()),
            Received::Close(Some((1012, "restart".into()))),
        ],
        "the app got every message the client sent, then the client's close code"
    );
    let status = gateway
        .wait_exit(PROMPTLY)
        .await
        .expect("the gateway exits after the drain");
    assert!(status.success(), "exit status {status}");
}

/// What became of one plain HTTP request sent to the gateway (the texts are read through
/// `Debug` in the test's report and failure messages).
#[derive(Debug)]
#[allow(dead_code)]
enum HttpOutcome {
    /// A complete response: status, headers, body.
    Answered(u16, http::HeaderMap, String),
    /// The connection was accepted and the request sent, but it ended without a complete
    /// response: the request was cut.
    Cut(String),
    /// No listener (the process had exited): a client retries elsewhere.
    NoListener(String),
}

/// `GET path` on a new HTTP/1.1 keep-alive connection; waits up to a minute for the answer.
/// Returns the outcome and, when answered, the connection (for keep-alive checks).
async fn http_exchange(
    addr: std::net::SocketAddr,
    path: &str,
) -> (
    HttpOutcome,
    Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
) {
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return (HttpOutcome::NoListener(e.to_string()), None),
    };
    let (mut send, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return (HttpOutcome::Cut(e.to_string()), None),
    };
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let exchange = async {
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, headers, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(60), exchange).await {
        Err(_) => (HttpOutcome::Cut("no answer within 60s".into()), None),
        Ok(Err(e)) => (HttpOutcome::Cut(e), None),
        Ok(Ok((status, headers, body))) => {
            (HttpOutcome::Answered(status, headers, body), Some(send))
        }
    }
}

fn connection_close(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
}

#[tokio::test]
async fn sigterm_lets_inflight_http_requests_finish_and_refuses_new_ones_with_a_retryable_503() {
    const IN_FLIGHT: usize = 4;
    let app = HeldApp::start().await;
    let yaml = ConfigBuilder::new()
        .drain("4s", "60s")
        .route(route("polling", "/").prefix().proxy(&[app.port()]))
        .yaml();
    let mut gateway = Gateway::start(&yaml).await;
    let addr = gateway.addr();

    // A keep-alive connection that served one request and sits idle at SIGTERM.
    let (before, idle) = http_exchange(addr, "/fast").await;
    assert!(
        matches!(&before, HttpOutcome::Answered(200, h, _) if !connection_close(h)),
        "before SIGTERM responses keep the connection alive: {before:?}"
    );
    let mut idle = idle.expect("an open keep-alive connection");

    // Requests in flight at the app (long-polls, like Socket.IO's polling transport).
    let slow: Vec<_> = (0..IN_FLIGHT)
        .map(|_| tokio::spawn(async move { http_exchange(addr, "/slow").await.0 }))
        .collect();
    eventually("the slow requests to reach the app", PROMPTLY, || async {
        app.held() == IN_FLIGHT
    })
    .await;

    gateway.terminate();
    eventually("/readyz to fail after SIGTERM", PROMPTLY, || async {
        matches!(
            try_http_get(gateway.admin(), "/readyz", &[]).await,
            Ok((503, _))
        )
    })
    .await;
    // The idle keep-alive connection's next request is answered, and ends keep-alive.
    idle.ready()
        .await
        .expect("the keep-alive connection is still open");
    let resp = idle
        .send_request(
            http::Request::get("/fast")
                .header(http::header::HOST, "localhost")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("an answer on the keep-alive connection");
    assert_eq!(resp.status(), 200);
    assert!(
        connection_close(resp.headers()),
        "keep-alive ends during the drain: {:?}",
        resp.headers()
    );
    let _ = resp.into_body().collect().await;
    eventually("the gateway to close that connection", PROMPTLY, || {
        std::future::ready(idle.is_closed())
    })
    .await;

    // New requests until the propagation window is over: served (with Connection: close),
    // then refused.
    let mut served_in_window = 0;
    let after = loop {
        let (outcome, _) = http_exchange(addr, "/fast").await;
        match &outcome {
            HttpOutcome::Answered(200, h, body) if body == "app answered /fast" => {
                assert!(
                    connection_close(h),
                    "a response during the drain ends keep-alive: {outcome:?}"
                );
                served_in_window += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            _ => break outcome,
        }
    };
    // Only now are the in-flight requests answered by the app.
    app.release();
    let mut completed = 0;
    let mut cut = Vec::new();
    for task in slow {
        match task.await.expect("request task") {
            HttpOutcome::Answered(200, h, body) if body == "app answered /slow" => {
                assert!(connection_close(&h), "in-flight response: {h:?}");
                completed += 1;
            }
            other => cut.push(other),
        }
    }
    let refused = matches!(&after, HttpOutcome::Answered(503, ..)) as usize;
    println!(
        "HTTP drain: in flight at the window's end {IN_FLIGHT}: completed {completed}, cut {}; \
         served during propagation {served_in_window}; first request after the window: {after:?}",
        cut.len()
    );
    assert!(
        cut.is_empty(),
        "every in-flight request completes during the drain; cut: {cut:?}"
    );
    assert_eq!(completed, IN_FLIGHT);
    assert_eq!(
        refused, 1,
        "a new request after the window is refused: {after:?}"
    );
    let HttpOutcome::Answered(_, h, body) = &after else {
        unreachable!()
    };
    assert!(h.contains_key(http::header::RETRY_AFTER), "{h:?}");
    assert!(connection_close(h), "{h:?}");
    assert!(body.contains(r#""error":"draining""#), "{body}");

    let status = gateway
        .wait_exit(PROMPTLY)
        .await
        .expect("the gateway exits once the requests completed");
    assert!(status.success(), "exit status {status}");
    assert!(
        gateway.log().contains("drain complete: graceful exit"),
        "{}",
        gateway.log_tail(20)
    );
}

/// One exported span: its name and attributes (values rendered as text), plus the resource's.
#[derive(Debug, Clone)]
struct ExportedSpan {
    name: String,
    /// Lower-case hex, as in `traceparent`.
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attrs: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attr_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// A minimal OTLP/HTTP trace receiver on `127.0.0.1:0`: decodes every
/// `ExportTraceServiceRequest` POSTed to `/v1/traces` and keeps its spans.
struct OtlpReceiver {
    port: u16,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = spans.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let status = match ExportTraceServiceRequest::decode(body) {
                                Ok(export) if path == "/v1/traces" => {
                                    let mut store = store.lock().unwrap();
                                    for rs in export.resource_spans {
                                        let resource = rs
                                            .resource
                                            .as_ref()
                                            .map(|r| attr_map(&r.attributes))
                                            .unwrap_or_default();
                                        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                                            store.push(ExportedSpan {
                                                name: span.name.clone(),
                                                trace_id: hex(&span.trace_id),
                                                span_id: hex(&span.span_id),
                                                parent_span_id: hex(&span.parent_span_id),
                                                attrs: attr_map(&span.attributes),
                                                resource: resource.clone(),
                                            });
                                        }
                                    }
                                    200
                                }
                                _ => 400,
                            };
                            let mut resp = http::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, spans, task }
    }

    fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn handshake_auth_and_drain_spans_reach_the_otlp_endpoint_before_exit_without_the_token() {
    const CALLER_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
    let receiver = OtlpReceiver::start().await;
    let echo = EchoServer::start().await;
    let yaml = ConfigBuilder::new()
        .route(
            route("traced", "/traced")
                .origins(&["https://app.example.com"])
                .jwt(jwt_rsa_file())
                .set(
                    "jwt.tokenSources",
                    json!([{"query": {"name": "access_token"}}]),
                )
                .proxy(&[echo.port()])
                .drain(json!({"window": "0s"})),
        )
        .yaml();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let mut gateway = Gateway::start_with_env(
        &yaml,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("POD_NAME", "gateway-0"),
            ("POD_NAMESPACE", "edge"),
        ],
    )
    .await;
    let token = token_for("alice");

    // Accepted: allowed Origin, valid token in the query string, and the caller's trace.
    let url = gateway.ws_url(&format!("/traced?access_token={token}&room=secret-room"));
    let mut ws = ws_try_connect(support::ws_request(
        &url,
        &[
            ("Origin", "https://app.example.com"),
            ("traceparent", CALLER_TRACEPARENT),
        ],
    ))
    .await
    .expect("the upgrade is accepted");
    assert_echo(&mut ws, "traced").await;

    // Refused before the upgrade: bad Origin (the token is there too, and must not leak).
    let head = upgrade_head(
        &format!("/traced?access_token={token}"),
        &[("Origin", "https://evil.example.com")],
    );
    let (resp, _, _) = raw_exchange(gateway.addr(), &head).await.expect("exchange");
    assert_eq!(resp.status, 403, "{resp:?}");

    gateway.terminate();
    // The live connection is part of the drain: it gets the route's Close and answers it.
    expect_close(&mut ws, PROMPTLY).await;
    let status = gateway
        .wait_exit(PROMPTLY)
        .await
        .expect("the gateway exits after the drain");
    assert!(status.success(), "exit status {status}");

    // Everything was exported before exit: nothing is waited for after it.
    let spans = receiver.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    println!("exported spans: {names:?}");

    let handshakes: Vec<&ExportedSpan> = spans.iter().filter(|s| s.name == "handshake").collect();
    let accepted = handshakes
        .iter()
        .find(|s| s.attrs.get("status").map(String::as_str) == Some("101"))
        .unwrap_or_else(|| panic!("an accepted handshake span: {handshakes:#?}"));
    assert_eq!(accepted.attrs["route"], "traced");
    assert_eq!(accepted.attrs["transport"], "ws");
    assert_eq!(accepted.attrs["outcome"], "accepted");
    let refused = handshakes
        .iter()
        .find(|s| s.attrs.get("status").map(String::as_str) == Some("403"))
        .unwrap_or_else(|| panic!("a refused handshake span: {handshakes:#?}"));
    assert_eq!(refused.attrs["route"], "traced");
    assert_eq!(refused.attrs["outcome"], "refused");
    assert_eq!(refused.attrs["reason"], "origin");

    let auth = spans
        .iter()
        .find(|s| s.name == "auth")
        .unwrap_or_else(|| panic!("an auth span: {names:?}"));
    assert_eq!(auth.attrs["alg"], "RS256");
    assert_eq!(auth.attrs["result"], "ok");
    let connect = spans
        .iter()
        .find(|s| s.name == "proxy.connect")
        .unwrap_or_else(|| panic!("a proxy.connect span: {names:?}"));
    assert_eq!(
        connect.attrs["backend"],
        format!("127.0.0.1:{}", echo.port())
    );
    assert_eq!(connect.attrs["result"], "upgraded");

    // W3C trace context: the handshake continues the caller's trace, and the app is handed
    // the gateway's proxy.connect span as its parent (not the caller's span id).
    assert_eq!(accepted.trace_id, CALLER_TRACE_ID, "{accepted:?}");
    assert_eq!(accepted.parent_span_id, CALLER_SPAN_ID, "{accepted:?}");
    assert_eq!(connect.trace_id, CALLER_TRACE_ID, "{connect:?}");
    assert_eq!(connect.parent_span_id, accepted.span_id, "{connect:?}");
    let at_app = echo.handshake_headers();
    let traceparent = at_app[0]
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("the app gets a traceparent");
    assert_eq!(
        traceparent,
        format!("00-{CALLER_TRACE_ID}-{}-01", connect.span_id),
        "the app's parent is proxy.connect"
    );
    // A request without a traceparent starts its own trace.
    assert_ne!(refused.trace_id, CALLER_TRACE_ID);

    let drain = spans
        .iter()
        .find(|s| s.name == "drain")
        .unwrap_or_else(|| panic!("a drain span exported before exit: {names:?}"));
    assert_eq!(drain.attrs["outcome"], "graceful");
    assert_eq!(drain.attrs["connections"], "1");
    assert!(drain.attrs.contains_key("duration_ms"), "{drain:?}");

    assert_eq!(accepted.resource["service.name"], "switchboard-gateway");
    assert_eq!(accepted.resource["k8s.pod.name"], "gateway-0");
    assert_eq!(accepted.resource["k8s.namespace.name"], "edge");

    // No attribute of any span (nor the resource) carries the token or the query string.
    let signature = token.rsplit('.').next().expect("a JWT has a signature");
    for span in &spans {
        for (k, v) in span.attrs.iter().chain(&span.resource) {
            assert!(
                !v.contains(signature) && !v.contains("access_token") && !v.contains("secret-room"),
                "span {} attribute {k} leaks the request: {v}",
                span.name
            );
        }
    }
}

#[tokio::test]
async fn polling_clients_through_a_drain_are_answered_or_refused_never_cut() {
    const CLIENTS: usize = 25;
    let app = HeldApp::start().await;
    let yaml = ConfigBuilder::new()
        .drain("2s", "60s")
        .route(route("polling", "/").prefix().proxy(&[app.port()]))
        .yaml();
    let mut gateway = Gateway::start(&yaml).await;
    let addr = gateway.addr();

    // Each client polls back to back on its keep-alive connection (a new one when the gateway
    // ends keep-alive), like Socket.IO's polling transport, and stops at its first answer that
    // is not a poll result: a refusal (it would retry elsewhere), a missing listener, or a cut.
    #[derive(Debug, Default)]
    struct Tally {
        answered: usize,
        refused: usize,
        no_listener: usize,
        cut: Vec<String>,
    }
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let started = started.clone();
            tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Empty<Bytes>>();
                let mut tally = Tally::default();
                loop {
                    let uri: http::Uri = format!("http://{addr}/client/{i}/poll").parse().unwrap();
                    let result = tokio::time::timeout(std::time::Duration::from_secs(60), async {
                        let resp = client.get(uri).await?;
                        let status = resp.status().as_u16();
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                        Ok::<_, hyper_util::client::legacy::Error>((status, body))
                    })
                    .await
                    .expect("an outcome within 60s");
                    match result {
                        Ok((200, Ok(_))) => {
                            tally.answered += 1;
                            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok((503, Ok(_))) => {
                            tally.refused += 1;
                            break;
                        }
                        Ok((status, body)) => {
                            tally.cut.push(format!("{status} {body:?}"));
                            break;
                        }
                        Err(e) if e.is_connect() => {
                            tally.no_listener += 1;
                            break;
                        }
                        Err(e) => {
                            tally.cut.push(format!("{e:?}"));
                            break;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    eventually("every client to have polled twice", PROMPTLY, || async {
        started.load(std::sync::atomic::Ordering::SeqCst) >= 2 * CLIENTS
    })
    .await;
    gateway.terminate();
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.expect("client task");
        total.answered += t.answered;
        total.refused += t.refused;
        total.no_listener += t.no_listener;
        total.cut.extend(t.cut);
    }
    println!(
        "{CLIENTS} polling clients through a drain: polls answered {}, refused (503) {}, \
         found no listener {}, cut {}: {:?}",
        total.answered,
        total.refused,
        total.no_listener,
        total.cut.len(),
        total.cut
    );
    assert!(total.cut.is_empty(), "no poll is cut: {:?}", total.cut);
    let status = gateway
        .wait_exit(PROMPTLY)
        .await
        .expect("the gateway exits after the drain");
    assert!(status.success(), "exit status {status}");
}

/// An app's SSE stream through a proxy route ran on until the drain's deadline (counted as an
/// in-flight request), holding the pod's exit back; it ends within the route's drain window,
/// like a rooms SSE stream, and `EventSource` reconnects to another pod.
#[tokio::test]
async fn an_app_sse_stream_ends_within_the_drain_window_not_at_the_deadline() {
    let app = support::sse_app().await;
    let yaml = ConfigBuilder::new()
        .drain("1s", "60s")
        .route(
            route("events", "/")
                .proxy(&[app])
                .drain(json!({"window": "1s"})),
        )
        .yaml();
    let gateway = Gateway::start(&yaml).await;
    let (status, mut stream) = support::open_http_stream(
        gateway.addr(),
        "/events",
        &[("Accept", "text/event-stream")],
    )
    .await;
    assert_eq!(status, 200);
    // A live connection of the pod, like a WebSocket.
    let (_, body) = support::http_get(gateway.admin(), "/status").await;
    assert!(body.contains(r#""connections":1"#), "{body}");
    let started = std::time::Instant::now();
    gateway.terminate();
    assert!(
        support::stream_ends_within(&mut stream, std::time::Duration::from_secs(20)).await,
        "the stream ran on past 20 s of a 60 s deadline"
    );
    println!("app SSE stream ended {:?} after SIGTERM", started.elapsed());
}
