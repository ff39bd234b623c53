//! An app pod that fails under a live proxied WebSocket, through the real binary and real
//! sockets: an app that stops answering (hung, SIGSTOPped, partitioned) is found by the
//! gateway's pings toward the app and the client is closed with 1011 "backend not responding";
//! an app whose connection is reset gets the client 1011 "backend went away". Either way the
//! close metric and the connection-end log line carry the code the client actually got.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, PROMPTLY, assert_echo, expect_close, metric_sum, metrics_text, ws_connect,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// What the app does after echoing the first message.
#[derive(Clone, Copy)]
enum Fault {
    /// Stop reading and answering anything (pings included), keep the socket open.
    Hang,
    /// Reset the TCP connection (SO_LINGER 0), no Close frame: a pod that died.
    Reset,
}

/// A one-connection WebSocket app on `127.0.0.1:0`: echoes the first text message, reports
/// that it is about to fail, then fails as told. Returns its port and the "failing now" signal.
async fn faulty_app(fault: Fault) -> (u16, oneshot::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let port = listener.local_addr().expect("app address").port();
    let (failing_tx, failing) = oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("app handshake");
        let first = loop {
            match ws.next().await {
                Some(Ok(msg @ Message::Text(_))) => break msg,
                Some(Ok(_)) => continue,
                other => panic!("the app expected a message, got {other:?}"),
            }
        };
        ws.send(first).await.expect("app echo");
        let _ = failing_tx.send(Instant::now());
        match fault {
            Fault::Hang => {
                // Hold the socket and never poll it again: no reads, no pongs. The task never
                // wakes; it is dropped, socket and all, when the test ends.
                let _held = ws;
                std::future::pending::<()>().await;
            }
            Fault::Reset => {
                ws.get_ref().set_zero_linger().expect("SO_LINGER 0");
                drop(ws);
            }
        }
    });
    (port, failing)
}

fn config(backend: u16) -> String {
    ConfigBuilder::new()
        .route(
            route("app", "/")
                .proxy(&[backend])
                .keepalive(json!({"interval": "0s", "app": {"interval": "1s", "timeout": "2s"}}))
                .drain(json!({"window": "0s"})),
        )
        .yaml()
}

/// The connection-end log line of the route's one connection.
fn end_line(gateway: &Gateway) -> String {
    gateway
        .log()
        .lines()
        .find(|l| l.contains("connection ended"))
        .unwrap_or_else(|| panic!("no connection-end line:\n{}", gateway.log()))
        .to_owned()
}

#[tokio::test]
async fn an_app_that_stops_answering_gets_the_client_closed_with_1011_and_is_counted() {
    let (app, failing) = faulty_app(Fault::Hang).await;
    let gateway = Gateway::start(&config(app)).await;
    let mut ws = ws_connect(&gateway.ws_url("/hung")).await;
    assert_echo(&mut ws, "the app answers once").await;
    let hung_at = failing.await.expect("the app hangs");

    let (code, reason, _) = expect_close(&mut ws, PROMPTLY).await;
    println!(
        "hung app detected after {:?} (keepalive.app interval 1s, timeout 2s)",
        hung_at.elapsed()
    );
    assert_eq!((code, reason.as_str()), (1011, "backend not responding"));

    let labels = [("cause", "upstream_pong_timeout"), ("code", "1011")];
    support::eventually("the close to be counted", PROMPTLY, || async {
        metric_sum(
            &metrics_text(&gateway).await,
            "switchboard_closes_total",
            &labels,
        ) == 1.0
    })
    .await;
    let line = end_line(&gateway);
    assert!(
        line.contains("upstream_pong_timeout") && line.contains("close_code=1011"),
        "{line}"
    );
}

#[tokio::test]
async fn an_app_connection_reset_closes_the_client_with_1011_and_is_recorded_as_upstream_gone() {
    let (app, failing) = faulty_app(Fault::Reset).await;
    let gateway = Gateway::start(&config(app)).await;
    let mut ws = ws_connect(&gateway.ws_url("/reset")).await;
    assert_echo(&mut ws, "the app answers once").await;
    failing.await.expect("the app resets");

    let (code, reason, _) = expect_close(&mut ws, PROMPTLY).await;
    assert_eq!((code, reason.as_str()), (1011, "backend went away"));
    let labels = [("cause", "upstream_gone"), ("code", "1011")];
    support::eventually("the close to be counted", PROMPTLY, || async {
        metric_sum(
            &metrics_text(&gateway).await,
            "switchboard_closes_total",
            &labels,
        ) == 1.0
    })
    .await;
    let text = metrics_text(&gateway).await;
    assert_eq!(
        metric_sum(
            &text,
            "switchboard_closes_total",
            &[("cause", "upstream_reset")]
        ),
        0.0,
        "nothing recorded as a 1006 the client never got"
    );
    let line = end_line(&gateway);
    assert!(
        line.contains("upstream_gone") && line.contains("close_code=1011"),
        "{line}"
    );
}

/// A healthy app answers the gateway's pings: a connection idle far longer than the app's
/// pong timeout stays open, and the app never sees the pings' pongs as messages.
#[tokio::test]
async fn an_idle_connection_to_a_healthy_app_stays_open_across_app_pings() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&config(echo.port())).await;
    let mut ws = ws_connect(&gateway.ws_url("/idle")).await;
    assert_echo(&mut ws, "before").await;
    // Four ping intervals, two pong timeouts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_echo(&mut ws, "after").await;
    assert!(echo.closes().is_empty(), "{:?}", echo.closes());
}

/// An app that answers the upgrade with a 101 breaking RFC 6455 §4.1 (the gateway is the
/// WebSocket client toward it): a wrong `Sec-WebSocket-Accept`, no `Upgrade`/`Connection`, a
/// subprotocol or an extension nobody offered. Each 101 was relayed to the client (a broken
/// handshake for the browser, counted as upgraded); each is a 502 now, counted by reason.
async fn app_answering_101s_as_told() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let port = listener.local_addr().expect("app address").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Some(head) = support::read_request_head(&mut s).await else {
                    return;
                };
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let key = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("sec-websocket-key:")
                            .then(|| l[18..].trim().to_owned())
                    })
                    .unwrap_or_default();
                let accept =
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
                let resp = match path.as_str() {
                    "/badaccept" => format!(
                        "HTTP/1.1 101 Switching Protocols\r\n{upgrade}Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
                    ),
                    "/noupgrade" => format!(
                        "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    ),
                    "/protocol" => format!(
                        "HTTP/1.1 101 Switching Protocols\r\n{upgrade}Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: bearer.stolen\r\n\r\n"
                    ),
                    "/extension" => format!(
                        "HTTP/1.1 101 Switching Protocols\r\n{upgrade}Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
                    ),
                    "/empty" => format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: \r\nSec-WebSocket-Extensions: \r\n\r\n"
                    ),
                    _ => format!(
                        "HTTP/1.1 101 Switching Protocols\r\n{upgrade}Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
                    ),
                };
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.read(&mut [0u8; 64]).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_101_from_the_app_that_breaks_the_websocket_handshake_is_a_502_not_relayed() {
    let app = app_answering_101s_as_told().await;
    let gateway = Gateway::start(&config(app)).await;
    let offer = [("Sec-WebSocket-Protocol", "chat, superchat")];
    for path in ["/badaccept", "/noupgrade", "/protocol", "/extension"] {
        let (resp, ws) = support::raw_upgrade(gateway.addr(), path, &offer).await;
        assert_eq!(resp.status, 502, "{path}: {resp:?}");
        assert!(ws.is_none());
        assert!(
            resp.body_text().contains("backend_bad_upgrade"),
            "{path}: {}",
            resp.body_text()
        );
    }
    // A 101 that keeps the rules still goes through, its subprotocol one the client offered;
    // so does one with empty subprotocol and extension values and other spellings.
    for path in ["/good", "/empty"] {
        let (resp, ws) = support::raw_upgrade(gateway.addr(), path, &offer).await;
        assert_eq!(resp.status, 101, "{path}: {resp:?}");
        assert!(ws.is_some());
    }
    let text = metrics_text(&gateway).await;
    assert_eq!(
        metric_sum(
            &text,
            "switchboard_handshake_refusals_total",
            &[("reason", "backend_bad_upgrade")]
        ),
        4.0
    );
}
