//! Integration-test harness: real sockets, a real WebSocket echo upstream and the real gateway
//! binary. Test files use it with `mod support;`.
//!
//! - [`EchoServer`]: a WebSocket + plain-HTTP echo backend on `127.0.0.1:0` (hyper 1 with
//!   upgrades, tokio-tungstenite on the upgraded IO). It records every request it sees, can
//!   announce itself (`backend:<port>`) so pinning tests know which backend they hit, and selects
//!   a subprotocol from a configured list.
//! - [`Gateway`]: `switchboard-gateway --config <tempfile>` as a child process, output captured
//!   to a file (its tail is printed when a test panics), ready once `/readyz` answers 200 and
//!   the first listener accepts, SIGTERM-able, killed on drop.
//! - [`http_get`]: a small async HTTP/1.1 GET for the admin endpoints and plain routes.
//!
//! Everything here panics with a message instead of returning errors: it is test code.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod autobahn;
pub mod config;
pub mod held_app;
pub mod nats;
pub mod room_client;
pub mod rooms;

#[allow(unused_imports)] // Each test binary uses a different part.
pub use config::{ConfigBuilder, RouteBuilder, jwt_hs256, jwt_rsa_file, proxy_config, route};

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Largest message and frame the test peers accept: Autobahn's 9.x cases send 16 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A WebSocket client connection as returned by [`ws_connect`].
pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// WebSocket limits shared by the echo server and [`ws_connect`]: explicit so a tungstenite
/// default change cannot silently change what the tests exercise.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        // Flush every message at once (the echo is latency-sensitive, not throughput-bound)...
        .write_buffer_size(0)
        // ...and bound what a stuck peer can make us hold: one largest message plus framing.
        .max_write_buffer_size(2 * MAX_MESSAGE_BYTES)
}

/// A port that was free a moment ago on 127.0.0.1. Racy by nature (another process can take it
/// before the caller binds); good enough for a config file that needs a number up front.
pub fn free_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound socket")
        .port()
}

/// The root of the cargo workspace (the repository).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway/ has a parent directory")
        .to_path_buf()
}

/// Lock a mutex even if a panicking test thread poisoned it: the data is plain records.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Echo upstream
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Open a WebSocket (`ws://...`) with the harness limits. Panics if the handshake fails; use
/// [`ws_try_connect`] to assert on refusals.
pub async fn ws_connect(url: &str) -> WsClient {
    ws_try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("websocket connect to {url}: {e}"))
}

/// Open a WebSocket from a full request (extra headers, subprotocols...): build it with
/// `tungstenite::client::IntoClientRequest` and add headers. Errors (refusals) are returned.
pub async fn ws_try_connect<R>(request: R) -> Result<WsClient, tungstenite::Error>
where
    R: tungstenite::client::IntoClientRequest + Unpin,
{
    let (ws, _resp) =
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true).await?;
    Ok(ws)
}

/// Like [`ws_try_connect`] but also returns the handshake response (subprotocol, headers).
pub async fn ws_connect_with_response<R>(
    request: R,
) -> Result<(WsClient, tungstenite::handshake::client::Response), tungstenite::Error>
where
    R: tungstenite::client::IntoClientRequest + Unpin,
{
    tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true).await
}

/// The next text message, skipping pings/pongs; panics on anything else or after `timeout`.
pub async fn next_text(ws: &mut WsClient, timeout: Duration) -> String {
    loop {
        let msg = tokio::time::timeout(timeout, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message within {timeout:?}"));
        match msg {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// GET `http://<addr><path>` (HTTP/1.1, `Connection: close`). Returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, &[]).await
}

/// [`http_get`] with extra request headers.
pub async fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    try_http_get(addr, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get_with`] that returns connection errors instead of panicking (readiness polls).
pub async fn try_http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req =
        Request::get(format!("http://{addr}{path}")).header(http::header::CONNECTION, "close");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out after 10s".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

// ---------------------------------------------------------------------------------------------
// The gateway binary
// ---------------------------------------------------------------------------------------------

/// The gateway binary: `$SWITCHBOARD_GATEWAY_BIN` if set (a release build, say), else the one
/// cargo built for these tests.
pub fn gateway_bin() -> PathBuf {
    std::env::var_os("SWITCHBOARD_GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard-gateway")))
}

/// A running `switchboard-gateway --config <tempfile>`; killed on drop.
pub struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    exit: Option<ExitStatus>,
}

impl Gateway {
    /// Start the binary with this YAML and wait until `/readyz` answers 200 (up to 20 s).
    /// `addr()` is the first listener's address and `admin()` the admin address, as the
    /// gateway reports them once bound (its `listening` log lines): listeners on port 0 get a
    /// port the system picks, with no race against other processes. The YAML must be valid
    /// (test bad configs with [`check_config`]).
    pub async fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, &[]).await
    }

    /// [`Gateway::start`] with extra environment variables (e.g. `RUST_LOG`).
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        let cfg = switchboard_config::GatewayConfig::from_yaml(yaml)
            .unwrap_or_else(|e| panic!("the test's gateway config is invalid: {e}\n{yaml}"));
        let first = cfg
            .listeners
            .first()
            .expect("validated config has a listener")
            .name
            .clone();

        let dir = tempfile::tempdir().expect("tempdir for the gateway");
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, yaml).expect("write gateway config");
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).expect("create gateway log");
        let log_err = log.try_clone().expect("clone gateway log handle");

        let mut cmd = Command::new(gateway_bin());
        cmd.arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // The bound addresses are read from the `listening` lines, whatever else is filtered.
        let rust_log = env
            .iter()
            .find(|(k, _)| *k == "RUST_LOG")
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".to_owned());
        // The log is a file read by people and asserted on by tests: no ANSI colours.
        cmd.env("NO_COLOR", "1");
        // A developer's own OpenTelemetry settings must not make test gateways export (or
        // change what the trace test sees): only what a test passes counts.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env(
            "RUST_LOG",
            format!("{rust_log},switchboard_gateway::listener=info"),
        );
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", gateway_bin().display()));

        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut gw = Self {
            child,
            addr: unbound,
            admin: unbound,
            dir,
            exit: None,
        };
        let within = Duration::from_secs(20);
        let deadline = Instant::now() + within;
        (gw.addr, gw.admin) = gw.wait_listening(&first, within).await;
        gw.wait_ready(deadline.saturating_duration_since(Instant::now()))
            .await;
        gw
    }

    /// Wait for the `listening` log lines of listener `first` and of the admin listener;
    /// returns their bound addresses.
    async fn wait_listening(&mut self, first: &str, within: Duration) -> (SocketAddr, SocketAddr) {
        let deadline = Instant::now() + within;
        loop {
            let listening = listening_lines(&self.log());
            let find = |role: &str, name: &str| {
                listening
                    .iter()
                    .find(|l| l.role == role && l.name == name)
                    .map(|l| l.addr)
            };
            if let (Some(addr), Some(admin)) = (find("edge", first), find("admin", "admin")) {
                return (addr, admin);
            }
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "gateway exited before it was listening ({status}); log tail:\n{}",
                    self.log_tail(60)
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not report its listeners within {within:?}; log tail:\n{}",
                self.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "gateway exited before it was ready ({status}); log tail:\n{}",
                    self.log_tail(60)
                );
            }
            match try_http_get(self.admin, "/readyz", &[]).await {
                // pingora starts the admin service before the edge listener: ready means the
                // first listener accepts too, or a test's first connect races the bind.
                Ok((200, _)) if tokio::net::TcpStream::connect(self.addr).await.is_ok() => return,
                Ok((200, _)) => last = format!("/readyz 200 but {} refuses", self.addr),
                Ok((status, body)) => last = format!("{status} {}", body.trim()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "gateway not ready within {within:?} (last /readyz: {last}); log tail:\n{}",
            self.log_tail(60)
        );
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address listener `name` was bound to (from its `listening` log line).
    pub fn listener(&self, name: &str) -> SocketAddr {
        listening_lines(&self.log())
            .into_iter()
            .find(|l| l.role == "edge" && l.name == name)
            .map(|l| l.addr)
            .unwrap_or_else(|| panic!("no listener {name:?} in the gateway log"))
    }

    /// The admin listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `ws://<listener><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the gateway was started with (rewrite it for reload tests).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// Everything the gateway printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// The last `lines` lines of [`Self::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Send SIGTERM (graceful drain).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send a signal by name (`TERM`, `INT`, `HUP`...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on the gateway");
        }
        self.exit
    }

    /// Wait up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- gateway log tail (pid {}) ----\n{}\n---- end of gateway log ----",
                self.child.id(),
                self.log_tail(80)
            );
        }
        if self.try_exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One `listening` line of a gateway log: a listener and the address it was bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// `edge` or `admin`.
    pub role: String,
    pub name: String,
    pub addr: SocketAddr,
}

/// The `listening` lines of a gateway log, text or JSON (`--log-format json`), in order.
pub fn listening_lines(log: &str) -> Vec<Listening> {
    log.lines()
        .filter_map(|line| {
            let field = |key: &str| -> Option<String> {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    return v["fields"][key].as_str().map(str::to_owned);
                }
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            let message = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => v["fields"]["message"].as_str()? == "listening",
                Err(_) => line.contains("switchboard_gateway::listener: listening "),
            };
            message.then_some(())?;
            Some(Listening {
                role: field("role")?,
                name: field("name")?,
                addr: field("addr")?.parse().ok()?,
            })
        })
        .collect()
}

/// Run `switchboard-gateway --check --config <yaml in a tempfile>`; returns the exit status and
/// stdout + stderr.
pub fn check_config(yaml: &str) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(gateway_bin())
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run {} --check: {e}", gateway_bin().display()));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status, text)
}

// ---------------------------------------------------------------------------------------------
// Helpers for the behaviour tests (pinning, identity, refusals, limits, drain, reload, TLS...)
// ---------------------------------------------------------------------------------------------

/// How long a test waits for something that should happen promptly (a reply, a close, a
/// reload) before failing. Generous: it only bounds a broken run.
pub const PROMPTLY: Duration = Duration::from_secs(10);

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

/// Poll `check` every 20 ms until it is true; panic with `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `gateway/tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Replace a file atomically (write a sibling, then rename), so a poller never reads half of it.
pub fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

// --- JWTs -------------------------------------------------------------------------------------

/// Sign `claims` with RS256 using `fixtures/keys/<key>.pem` (`rsa` or `rsa2`), with an optional
/// `kid` header.
pub fn sign_rs256(key: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(fixture(&format!("keys/{key}.pem")))
        .unwrap_or_else(|e| panic!("read fixture key {key}: {e}"));
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
        .unwrap_or_else(|e| panic!("fixture key {key} is an RSA private key: {e}"));
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding).expect("sign a test token")
}

/// Claims `{sub, exp: now + ttl_secs}` plus `extra` (an object) merged in.
pub fn claims(sub: &str, ttl_secs: i64, extra: serde_json::Value) -> serde_json::Value {
    let exp = unix_now() as i64 + ttl_secs;
    let mut c = serde_json::json!({ "sub": sub, "exp": exp, "iat": unix_now() });
    if let (Some(obj), serde_json::Value::Object(more)) = (c.as_object_mut(), extra) {
        obj.extend(more);
    }
    c
}

/// A token for `sub`, valid for 10 minutes, signed with the `rsa` fixture key (no `kid`).
pub fn token_for(sub: &str) -> String {
    sign_rs256("rsa", None, &claims(sub, 600, serde_json::json!({})))
}

// --- WebSocket client helpers ---------------------------------------------------------------

/// A WebSocket request for `url` with extra headers (values must be valid header values).
pub fn ws_request(url: &str, headers: &[(&str, &str)]) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("a valid ws:// URL");
    for (name, value) in headers {
        req.headers_mut().append(
            http::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    req
}

/// Send `text` and expect it back (skipping pings/pongs).
pub async fn assert_echo<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    assert_eq!(recv_text(ws, PROMPTLY).await, text);
}

/// [`next_text`] for any WebSocket stream (raw or TLS clients too).
pub async fn recv_text<S>(ws: &mut WebSocketStream<S>, within: Duration) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => panic!("no message within {within:?}"),
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Read until a Close frame arrives (data messages and pings before it are returned too), then
/// require the end of the stream. Returns `(code, reason, messages before the close)`.
pub async fn expect_close<S>(
    ws: &mut WebSocketStream<S>,
    within: Duration,
) -> (u16, String, Vec<Message>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let (code, reason) = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no Close frame within {within:?}; got {before:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                break frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_owned())
                });
            }
            Ok(Some(Ok(msg))) => before.push(msg),
            Ok(other) => panic!("expected a Close frame, got {other:?} after {before:?}"),
        }
    };
    expect_end(ws, within).await;
    (code, reason, before)
}

/// Require the end of the stream (after a close handshake): `None` or `ConnectionClosed`.
pub async fn expect_end<S>(ws: &mut WebSocketStream<S>, within: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => panic!("stream did not end within {within:?} after the close"),
            Ok(None) | Ok(Some(Err(tungstenite::Error::ConnectionClosed))) => return,
            // Pings that crossed the close on the wire.
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected the end of the stream after Close, got {other:?}"),
        }
    }
}

/// Close with 1000 and complete the close handshake (the peer's Close, then the end).
pub async fn close_normally<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("send Close 1000");
    let (code, _, _) = expect_close(ws, PROMPTLY).await;
    assert_eq!(code, 1000, "the peer answers a 1000 close with 1000");
}

// --- Raw HTTP/1.1 -----------------------------------------------------------------------------

/// A response read off a raw socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// In order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A WebSocket upgrade request head for `path`: Host, Upgrade, Connection, a fresh key and
/// version 13, then `extra` headers; ends with the blank line.
pub fn upgrade_head(path: &str, extra: &[(&str, &str)]) -> String {
    let key = tungstenite::handshake::client::generate_key();
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Send `head` (a complete request head, no body) on a new connection and read the response
/// head, and the body unless it is a 101. Returns the response, the socket and any bytes read
/// past the head of a 101 (the first WebSocket frames).
pub async fn raw_exchange(
    addr: SocketAddr,
    head: &str,
) -> std::io::Result<(RawResponse, TcpStream, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(head.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(PROMPTLY, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response head"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a response head ({} bytes)",
                    buf.len()
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end..].to_vec();
    let mut resp = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 101 {
        return Ok((resp, stream, rest));
    }
    let length = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    loop {
        let complete = match (length, chunked) {
            (Some(len), _) => rest.len() >= len,
            (None, true) => rest.windows(5).any(|w| w == b"0\r\n\r\n"),
            (None, false) => false,
        };
        if complete {
            break;
        }
        let n = tokio::time::timeout(PROMPTLY, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "body"))??;
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    resp.body = match (length, chunked) {
        (Some(len), _) => rest[..len.min(rest.len())].to_vec(),
        (None, true) => dechunk(&rest),
        (None, false) => rest,
    };
    Ok((resp, stream, Vec::new()))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..i])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// [`raw_exchange`] that panics on I/O errors and returns only the response.
pub async fn raw_request(addr: SocketAddr, head: &str) -> RawResponse {
    raw_exchange(addr, head)
        .await
        .unwrap_or_else(|e| panic!("raw request to {addr}: {e}\n{head}"))
        .0
}

/// A WebSocket handshake written by hand (full control over the headers): the response, and
/// the client connection when it was a 101.
pub async fn raw_upgrade(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> (RawResponse, Option<WebSocketStream<TcpStream>>) {
    let head = upgrade_head(path, extra);
    let (resp, stream, rest) = raw_exchange(addr, &head)
        .await
        .unwrap_or_else(|e| panic!("upgrade {path} at {addr}: {e}"));
    if resp.status != 101 {
        return (resp, None);
    }
    let ws =
        WebSocketStream::from_partially_read(stream, rest, Role::Client, Some(ws_config())).await;
    (resp, Some(ws))
}

// --- Metrics --------------------------------------------------------------------------------

/// The admin `/metrics` text.
pub async fn metrics_text(gateway: &Gateway) -> String {
    let (status, body) = http_get(gateway.admin(), "/metrics").await;
    assert_eq!(status, 200, "/metrics: {body}");
    body
}

/// Sum of the samples of `name` whose labels include every pair of `labels`; 0 when none.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let found: Vec<(&str, &str)> = label_text
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k.trim_start_matches(','), v.trim_end_matches('"')))
                .collect();
            labels
                .iter()
                .all(|want| found.contains(want))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The HS256 secret of [`jwt_hs256`] routes (HMAC tokens are cheap to sign in debug builds,
/// for tests that need many distinct tokens).
pub const HS256_SECRET: &str = "switchboard-test-hmac-secret-0123456789";

/// Sign `claims` with HS256 and [`HS256_SECRET`].
pub fn sign_hs256(claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(HS256_SECRET.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &key,
    )
    .expect("sign a test token")
}
