//! Talking to the pinned backend pod: the WebSocket handshake (whose 101, or refusal, is
//! relayed to the client unchanged) and plain HTTP forwarding.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::engine::handshake::accept_key;
use crate::error::Refusal;
use crate::http::header_has_token;

/// What the backend answered to the upgrade request.
pub enum Handshake {
    /// 101: the response to relay and the upgraded connection.
    Upgraded(Response<()>, Upgraded),
    /// Anything else: relayed to the client as-is.
    Refused(Response<Incoming>),
}

/// Connect to `addr` and send the upgrade request; bounded by `timeout` end to end.
pub async fn open_websocket(
    addr: SocketAddr,
    req: Request<Empty<Bytes>>,
    timeout: Duration,
) -> Result<Handshake, Refusal> {
    tokio::time::timeout(timeout, handshake(addr, req))
        .await
        .map_err(|_| Refusal::BackendTimeout)?
}

async fn handshake(addr: SocketAddr, req: Request<Empty<Bytes>>) -> Result<Handshake, Refusal> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|_| Refusal::BackendUnreachable)?;
    let _ = tcp.set_nodelay(true);
    let offered = req.headers().clone();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|_| Refusal::BackendUnreachable)?;
    tokio::spawn(async move {
        // Ends when the upgrade completes or the backend closes; errors are reported through
        // the response future below.
        let _ = conn.with_upgrades().await;
    });
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|_| Refusal::BackendUnreachable)?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Handshake::Refused(resp));
    }
    if let Some(why) = bad_upgrade(&offered, resp.headers()) {
        return Err(Refusal::BackendBadUpgrade(why));
    }
    let upgraded = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|_| Refusal::BackendUnreachable)?;
    let (parts, _) = resp.into_parts();
    Ok(Handshake::Upgraded(
        Response::from_parts(parts, ()),
        upgraded,
    ))
}

/// Why the app's 101 is one a WebSocket client must refuse (RFC 6455 §4.1; the gateway is the
/// app's client), given the request the gateway sent it. `None`: a valid 101.
fn bad_upgrade(request: &HeaderMap, response: &HeaderMap) -> Option<&'static str> {
    let tokens = |map: &HeaderMap, name: HeaderName| -> Vec<String> {
        map.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    };
    if !header_has_token(response, header::UPGRADE, "websocket") {
        return Some("a 101 without Upgrade: websocket");
    }
    if !header_has_token(response, header::CONNECTION, "upgrade") {
        return Some("a 101 without Connection: Upgrade");
    }
    let key = request
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let accept = response.get_all(header::SEC_WEBSOCKET_ACCEPT);
    if accept.iter().count() != 1
        || accept.iter().next().map(HeaderValue::as_bytes) != Some(accept_key(key).as_bytes())
    {
        return Some("wrong Sec-WebSocket-Accept");
    }
    // Empty header values (some servers send them) choose nothing.
    match tokens(response, header::SEC_WEBSOCKET_PROTOCOL).as_slice() {
        [] => {}
        [chosen] => {
            if !tokens(request, header::SEC_WEBSOCKET_PROTOCOL).contains(chosen) {
                return Some("a subprotocol the client did not offer");
            }
        }
        _ => return Some("more than one subprotocol"),
    }
    if !tokens(response, header::SEC_WEBSOCKET_EXTENSIONS).is_empty()
        && tokens(request, header::SEC_WEBSOCKET_EXTENSIONS).is_empty()
    {
        return Some("an extension nobody offered");
    }
    None
}
