//! HTTP clients: a small GET for admin endpoints and plain routes, raw HTTP/1.1 exchanges and
//! hand-written upgrades (full control over the bytes), and Prometheus text helpers.

use super::*;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self};

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

/// What a scripted app reads of a request: its head, through the blank line (and whatever
/// came with it); `None` if the peer closes first.
pub async fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An app that answers every request with an endless SSE stream (a chunk every 100 ms).
pub async fn sse_app() -> u16 {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind app");
    let port = listener.local_addr().expect("app address").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_request_head(&mut s).await.is_none() {
                    return;
                }
                let start = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
                if s.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    let event = "data: tick\n\n";
                    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            });
        }
    });
    port
}

/// Read until `stream` ends: its terminating chunk, its close, or `within` passing (`false`).
pub async fn stream_ends_within(stream: &mut TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let mut tail = Vec::new();
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.ends_with(b"0\r\n\r\n") {
                        break;
                    }
                    let keep = tail.len().saturating_sub(8);
                    tail.drain(..keep);
                }
            }
        }
    })
    .await
    .is_ok()
}

/// A GET to `path` with `headers` whose answer is read up to its head (a stream's body
/// follows on the connection): the status, and the connection to read on.
pub async fn open_http_stream(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .await
        .expect("send the request");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.expect("read the response head");
        assert!(n > 0, "closed before the response head");
        got.extend_from_slice(&buf[..n]);
    }
    let status = String::from_utf8_lossy(&got[9..12])
        .parse()
        .expect("a status");
    (status, s)
}
