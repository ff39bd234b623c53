//! The harness's echo upstream, tested directly (no gateway): if these fail, every gateway
//! integration test built on it would fail for the wrong reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{EchoServer, http_get, http_get_with, next_text, parse_http_echo, ws_connect};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn echo_server_echoes_text_and_binary_and_answers_pings() {
    let echo = EchoServer::start().await;
    let mut ws = ws_connect(&echo.ws_url("/")).await;

    ws.send(Message::text("hello")).await.expect("send text");
    assert_eq!(next_text(&mut ws, WAIT).await, "hello");

    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(blob.clone()))
        .await
        .expect("send binary");
    match tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("binary echo")
    {
        Some(Ok(Message::Binary(b))) => assert_eq!(b.as_ref(), blob.as_slice()),
        other => panic!("expected the binary echo, got {other:?}"),
    }

    ws.send(Message::Ping(b"p1".to_vec().into()))
        .await
        .expect("send ping");
    match tokio::time::timeout(WAIT, ws.next()).await.expect("pong") {
        Some(Ok(Message::Pong(p))) => assert_eq!(p.as_ref(), b"p1"),
        other => panic!("expected a pong, got {other:?}"),
    }

    ws.close(None).await.expect("send close");
    // The server completes the close handshake, then the stream ends.
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close reply")
        {
            Some(Ok(Message::Close(_))) => continue,
            None => break,
            other => panic!("expected the close reply then end of stream, got {other:?}"),
        }
    }
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn announcing_echo_server_sends_its_label_first() {
    let echo = EchoServer::announcing().await;
    let mut ws = ws_connect(&echo.ws_url("/room")).await;
    assert_eq!(
        next_text(&mut ws, WAIT).await,
        format!("backend:{}", echo.port())
    );
    assert_eq!(echo.label(), format!("backend:{}", echo.port()));
    ws.send(Message::text("after")).await.expect("send");
    assert_eq!(next_text(&mut ws, WAIT).await, "after");
}

#[tokio::test]
async fn echo_server_selects_the_first_offered_subprotocol_it_supports() {
    let echo = EchoServer::start().await;

    let mut req = echo.ws_url("/").into_client_request().expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "bearer.x, chat.v1, chat.v2".parse().expect("header value"),
    );
    let (_ws, resp) = support::ws_connect_with_response(req)
        .await
        .expect("handshake with a supported subprotocol");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"chat.v1"[..])
    );

    // Nothing supported offered: the server answers 101 without a subprotocol, which the
    // tungstenite client (stricter than RFC 6455 requires) then refuses.
    let mut req = echo.ws_url("/").into_client_request().expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "other.v9".parse().expect("header value"),
    );
    match support::ws_connect_with_response(req).await {
        Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(
                tungstenite::error::SubProtocolError::NoSubProtocol,
            ),
        )) => {}
        other => panic!(
            "expected a 101 without a subprotocol, got {:?}",
            other.map(|(_, r)| r)
        ),
    }

    let selected: Vec<_> = echo
        .handshakes()
        .into_iter()
        .map(|h| h.subprotocol)
        .collect();
    assert_eq!(selected, vec![Some("chat.v1".to_owned()), None]);
}

#[tokio::test]
async fn echo_server_records_each_handshake_request() {
    let echo = EchoServer::start().await;
    let mut req = echo
        .ws_url("/a/b?x=1")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-switchboard-user", "alice".parse().expect("header value"));
    let mut ws = support::ws_try_connect(req).await.expect("connect");
    ws.send(Message::text("x")).await.expect("send");
    assert_eq!(next_text(&mut ws, WAIT).await, "x");

    let _second = ws_connect(&echo.ws_url("/")).await;

    let handshakes = echo.handshakes();
    assert_eq!(handshakes.len(), 2);
    assert_eq!(echo.connections(), 2);
    assert_eq!(handshakes[0].id, 1);
    assert_eq!(handshakes[1].id, 2);
    assert_eq!(handshakes[0].uri.to_string(), "/a/b?x=1");
    let headers = echo.handshake_headers();
    assert_eq!(
        headers[0].get("x-switchboard-user").map(|v| v.as_bytes()),
        Some(&b"alice"[..])
    );
    assert!(headers[1].get("x-switchboard-user").is_none());
}

#[tokio::test]
async fn plain_get_answers_with_the_backend_and_the_request_headers() {
    let echo = EchoServer::start().await;
    let (status, body) =
        http_get_with(echo.addr(), "/plain?q=2", &[("x-switchboard-user", "bob")]).await;
    assert_eq!(status, 200);
    let answer = parse_http_echo(&body);
    assert_eq!(answer.backend, format!("http:{}", echo.port()));
    assert_eq!(answer.method, "GET");
    assert_eq!(answer.path, "/plain?q=2");
    assert_eq!(
        answer.headers.get("x-switchboard-user").map(String::as_str),
        Some("bob")
    );

    let (status, _) = http_get(echo.addr(), "/").await;
    assert_eq!(status, 200);
    let requests = echo.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| !r.upgrade));
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn stopping_the_echo_server_ends_open_connections() {
    let echo = EchoServer::start().await;
    let mut ws = ws_connect(&echo.ws_url("/")).await;
    ws.send(Message::text("up")).await.expect("send");
    assert_eq!(next_text(&mut ws, WAIT).await, "up");
    assert_eq!(echo.open_connections(), 1);

    echo.stop();
    // The TCP connection goes away without a Close frame: an error or the end of the stream.
    match tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("connection ends after stop")
    {
        None | Some(Err(_)) => {}
        other => panic!("expected the connection to drop, got {other:?}"),
    }
    // The accept loop sees the stop on its own schedule: give it a moment.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(echo.addr()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after stop");
}

#[test]
fn free_port_returns_a_bindable_port() {
    let port = support::free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}
