//! [`EchoServer`]: a WebSocket + plain-HTTP echo backend on `127.0.0.1:0` (hyper 1 with
//! upgrades, tokio-tungstenite on the upgraded IO). It records every request it sees, can
//! announce itself (`backend:<port>`) so pinning tests know which backend they hit, and selects
//! a subprotocol from a configured list.

use super::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// How an [`EchoServer`] behaves.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// Send one text message `backend:<port>` right after the handshake.
    pub announce: bool,
    /// Subprotocols this backend speaks, in no particular order. The first one the client
    /// offers that is in this list is selected. Default `["chat.v1"]`.
    pub subprotocols: Vec<String>,
    /// Upgrade requests whose path starts with one of these are refused by the app itself:
    /// 403 with `x-echo-refused: <path>` and body `refused by the app\n` (the gateway must relay
    /// that answer unchanged). Default: none.
    pub refuse_paths: Vec<String>,
    /// Obey commands in text messages instead of echoing them: `send-binary:<n>` makes the app
    /// send one binary message of `n` bytes (an oversized app frame). Default false.
    pub commands: bool,
}

impl Default for EchoOptions {
    fn default() -> Self {
        Self {
            announce: false,
            subprotocols: vec!["chat.v1".to_owned()],
            refuse_paths: Vec::new(),
            commands: false,
        }
    }
}

/// One request an [`EchoServer`] received (upgrade or plain).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// 1-based, in arrival order, over all requests this server received.
    pub id: usize,
    /// Whether it was a WebSocket upgrade that got a 101.
    pub upgrade: bool,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The subprotocol this server selected, if any.
    pub subprotocol: Option<String>,
}

#[derive(Debug, Default)]
struct EchoState {
    requests: Mutex<Vec<RecordedRequest>>,
    /// WebSocket connections accepted (101 sent), ever.
    accepted: AtomicUsize,
    /// WebSocket connections currently open.
    open: AtomicUsize,
    /// Close frames received from the peer (the gateway), in arrival order: `(code, reason)`,
    /// `None` for a Close without a code.
    closes: Mutex<Vec<Option<(u16, String)>>>,
    /// Text messages and Close frames received, over all connections, in arrival order.
    received: Mutex<Vec<Received>>,
}

/// One thing an [`EchoServer`] received on a WebSocket: what the app saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Text(String),
    /// A Close frame: `(code, reason)`, `None` without a code.
    Close(Option<(u16, String)>),
}

impl EchoState {
    /// Append a request, numbering it under the lock; returns the stored copy.
    fn record(&self, mut request: RecordedRequest) -> RecordedRequest {
        let mut requests = lock(&self.requests);
        request.id = requests.len() + 1;
        requests.push(request.clone());
        request
    }
}

/// A real WebSocket echo backend on 127.0.0.1, running in the test's tokio runtime.
///
/// - WebSocket: echoes text and binary messages, answers pings (tungstenite does), completes the
///   close handshake; optionally announces `backend:<port>` first.
/// - Plain HTTP (any method, no upgrade): 200 with body `http:<port>\n<json>` where the JSON is
///   `{"method", "path", "headers": {name: value}}` (see [`parse_http_echo`]).
///
/// Dropping it (or [`EchoServer::stop`]) closes the listener and every open connection, like a
/// backend pod going away.
pub struct EchoServer {
    addr: SocketAddr,
    options: EchoOptions,
    state: Arc<EchoState>,
    shutdown: watch::Sender<bool>,
}

impl EchoServer {
    /// Start with the default options (no announce, subprotocols `["chat.v1"]`).
    pub async fn start() -> Self {
        Self::start_with(EchoOptions::default()).await
    }

    /// Start one that announces `backend:<port>` after each handshake.
    pub async fn announcing() -> Self {
        Self::start_with(EchoOptions {
            announce: true,
            ..EchoOptions::default()
        })
        .await
    }

    /// Start with explicit options.
    pub async fn start_with(options: EchoOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("echo server: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("echo server: local_addr");
        let state = Arc::new(EchoState::default());
        let (shutdown, _) = watch::channel(false);
        let ctx = ConnCtx {
            port: addr.port(),
            options: Arc::new(options.clone()),
            state: state.clone(),
            shutdown: shutdown.subscribe(),
        };
        tokio::spawn(accept_loop(listener, ctx));
        Self {
            addr,
            options,
            state,
            shutdown,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `ws://127.0.0.1:<port><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// What this backend announces, and what [`Self::port`] tests compare against:
    /// `backend:<port>`.
    pub fn label(&self) -> String {
        format!("backend:{}", self.port())
    }

    pub fn options(&self) -> &EchoOptions {
        &self.options
    }

    /// WebSocket connections accepted so far (101 sent).
    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// WebSocket connections open right now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Every request received, upgrades and plain ones, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// The accepted WebSocket handshakes, in arrival order.
    pub fn handshakes(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.upgrade)
            .cloned()
            .collect()
    }

    /// The request headers of each accepted WebSocket handshake, in arrival order.
    pub fn handshake_headers(&self) -> Vec<HeaderMap> {
        self.handshakes().into_iter().map(|r| r.headers).collect()
    }

    /// Close the listener and every connection (TCP close without a WebSocket Close frame):
    /// a backend pod that went away.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone)]
struct ConnCtx {
    port: u16,
    options: Arc<EchoOptions>,
    state: Arc<EchoState>,
    shutdown: watch::Receiver<bool>,
}

async fn accept_loop(listener: TcpListener, ctx: ConnCtx) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let stream = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Transient (EMFILE, aborted handshake): keep serving.
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut shutdown = ctx.shutdown.clone();
            let svc_ctx = ctx.clone();
            let service = service_fn(move |req| {
                let ctx = svc_ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(handle_request(req, ctx)) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                _ = conn => {}
            }
        });
    }
}

fn handle_request(mut req: Request<Incoming>, ctx: ConnCtx) -> Response<Full<Bytes>> {
    let mut record = RecordedRequest {
        id: 0,
        upgrade: false,
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
        subprotocol: None,
    };

    if !wants_websocket(req.headers()) {
        let record = ctx.state.record(record);
        return plain_response(ctx.port, &record);
    }

    let key = req.headers().get("sec-websocket-key").cloned();
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let (Some(key), true, true) = (key, version_ok, req.method() == Method::GET) else {
        ctx.state.record(record);
        return text_response(StatusCode::BAD_REQUEST, "bad websocket handshake\n");
    };
    let path = req.uri().path().to_owned();
    if ctx
        .options
        .refuse_paths
        .iter()
        .any(|p| path.starts_with(p.as_str()))
    {
        ctx.state.record(record);
        let mut resp = text_response(StatusCode::FORBIDDEN, "refused by the app\n");
        if let Ok(v) = HeaderValue::from_str(&path) {
            resp.headers_mut().insert("x-echo-refused", v);
        }
        return resp;
    }

    let selected = select_subprotocol(req.headers(), &ctx.options.subprotocols);
    record.upgrade = true;
    record.subprotocol = selected.clone();
    ctx.state.record(record);

    let on_upgrade = hyper::upgrade::on(&mut req);
    let port = ctx.port;
    let announce = ctx.options.announce;
    let commands = ctx.options.commands;
    let state = ctx.state.clone();
    let mut shutdown = ctx.shutdown.clone();
    state.accepted.fetch_add(1, Ordering::SeqCst);
    state.open.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let upgraded = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => None,
            upgraded = on_upgrade => upgraded.ok(),
        };
        if let Some(upgraded) = upgraded {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(ws_config()),
            )
            .await;
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                _ = echo(ws, announce.then(|| format!("backend:{port}")), commands, &state) => {}
            }
        }
        state.open.fetch_sub(1, Ordering::SeqCst);
    });

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if let Some(proto) = selected {
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&proto).expect("configured subprotocol is a valid token"),
        );
    }
    resp
}

/// The echo loop of the tungstenite autobahn example: data messages go back as they came;
/// pings, pongs and the close handshake are handled by tungstenite on the next read/flush.
async fn echo<S>(
    mut ws: WebSocketStream<S>,
    announce: Option<String>,
    commands: bool,
    state: &EchoState,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(text) = announce
        && ws.send(Message::text(text)).await.is_err()
    {
        return;
    }
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) if commands && t.as_str().starts_with("send-binary:") => {
                let n: usize = t.as_str()["send-binary:".len()..].parse().unwrap_or(0);
                if ws.send(Message::binary(vec![b'x'; n])).await.is_err() {
                    return;
                }
            }
            Ok(Message::Close(frame)) => {
                let close = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                lock(&state.received).push(Received::Close(close.clone()));
                lock(&state.closes).push(close);
            }
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                if let Message::Text(t) = &msg {
                    lock(&state.received).push(Received::Text(t.as_str().to_owned()));
                }
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            // Close: tungstenite queued the reply; the next `next()` flushes it and ends.
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn header_has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn wants_websocket(headers: &HeaderMap) -> bool {
    header_has_token(headers, CONNECTION, "upgrade")
        && header_has_token(headers, UPGRADE, "websocket")
}

/// The first subprotocol the client offers (in its order) that `supported` contains.
fn select_subprotocol(headers: &HeaderMap, supported: &[String]) -> Option<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|offered| supported.iter().any(|s| s == offered))
        .map(str::to_owned)
}

fn plain_response(port: u16, record: &RecordedRequest) -> Response<Full<Bytes>> {
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &record.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let json = serde_json::json!({
        "method": record.method.as_str(),
        "path": record
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        "headers": headers,
    });
    text_response(StatusCode::OK, &format!("http:{port}\n{json}\n"))
}

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A plain HTTP echo answer from an [`EchoServer`].
#[derive(Debug, Clone)]
pub struct HttpEcho {
    /// `http:<port>` of the backend that answered.
    pub backend: String,
    pub method: String,
    /// Path and query as the backend received them.
    pub path: String,
    /// Request headers as the backend received them: lowercase name -> values joined by ", ".
    pub headers: BTreeMap<String, String>,
}

/// Parse the body of an [`EchoServer`] plain-HTTP answer.
pub fn parse_http_echo(body: &str) -> HttpEcho {
    let (backend, json) = body
        .split_once('\n')
        .unwrap_or_else(|| panic!("not an echo server body: {body:?}"));
    let v: serde_json::Value = serde_json::from_str(json.trim())
        .unwrap_or_else(|e| panic!("echo body JSON: {e}: {json:?}"));
    let headers = v["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    HttpEcho {
        backend: backend.to_owned(),
        method: v["method"].as_str().unwrap_or_default().to_owned(),
        path: v["path"].as_str().unwrap_or_default().to_owned(),
        headers,
    }
}

impl EchoServer {
    /// Close frames this backend received (from the gateway), in arrival order.
    pub fn closes(&self) -> Vec<Option<(u16, String)>> {
        lock(&self.state.closes).clone()
    }

    /// Text messages and Close frames received, over all connections, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// The codes of [`Self::closes`] (`1005` for a Close without a code).
    pub fn close_codes(&self) -> Vec<u16> {
        self.closes()
            .into_iter()
            .map(|c| c.map_or(1005, |(code, _)| code))
            .collect()
    }

    /// Wait until this backend has received at least `n` Close frames; returns them.
    pub async fn wait_closes(&self, n: usize, within: Duration) -> Vec<Option<(u16, String)>> {
        let what = format!("{n} close frame(s) at {}", self.label());
        eventually(&what, within, || async { self.closes().len() >= n }).await;
        self.closes()
    }
}
