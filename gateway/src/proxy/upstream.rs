//! Talking to the pinned backend pod: the WebSocket handshake (whose 101, or refusal, is
//! relayed to the client unchanged) and plain HTTP forwarding.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::Refusal;

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
    let upgraded = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|_| Refusal::BackendUnreachable)?;
    let (parts, _) = resp.into_parts();
    Ok(Handshake::Upgraded(
        Response::from_parts(parts, ()),
        upgraded,
    ))
}
