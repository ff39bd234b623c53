//! Frames that arrive in the same read as a handshake, through the real binary: hyper keeps
//! what it read past the client's upgrade request, or past the app's 101, and the tunnel (which
//! takes both sockets to a tunnel thread after the upgrade, `tunnel/threads.rs`) must relay
//! those bytes first, not lose them with hyper's buffer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use futures_util::StreamExt;
use support::{ConfigBuilder, EchoServer, Gateway, PROMPTLY, Received, route, upgrade_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

fn config(backend: u16) -> String {
    ConfigBuilder::new()
        .route(route("app", "/").proxy(&[backend]))
        .yaml()
}

/// A text frame as a client sends it (masked).
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Read more from `stream` onto `buf`, within [`PROMPTLY`]; `what` names what is awaited.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, what: &str) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(PROMPTLY, stream.read(&mut chunk))
        .await
        .unwrap_or_else(|_| panic!("{what} in time"))
        .unwrap();
    assert!(n > 0, "closed before {what}: {buf:?}");
    buf.extend_from_slice(&chunk[..n]);
}

/// Read until the end of an HTTP head; returns the head and what came after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return (String::from_utf8(buf).unwrap(), rest);
        }
        read_more(stream, &mut buf, "the end of a head").await;
    }
}

#[tokio::test]
async fn a_frame_sent_in_the_same_write_as_the_upgrade_request_reaches_the_app() {
    let app = EchoServer::start().await;
    let gateway = Gateway::start(&config(app.port())).await;
    let mut client = TcpStream::connect(gateway.addr()).await.unwrap();
    let mut request = upgrade_head("/early", &[]).into_bytes();
    request.extend(masked_text("early"));
    client.write_all(&request).await.unwrap();

    let (head, mut rest) = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The app echoes it: an unmasked text frame "early".
    while rest.len() < 7 {
        read_more(&mut client, &mut rest, "the echo").await;
    }
    assert_eq!(rest, b"\x81\x05early");
    assert_eq!(app.received(), [Received::Text("early".into())]);
}

#[tokio::test]
async fn a_frame_the_app_sends_in_the_same_write_as_its_101_reaches_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut app, _) = listener.accept().await.unwrap();
        let (head, _) = read_head(&mut app).await;
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .expect("a key");
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes();
        answer.extend_from_slice(b"\x81\x05hello");
        app.write_all(&answer).await.unwrap();
        // Hold the connection until the test ends.
        let mut sink = [0u8; 256];
        while app.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    let gateway = Gateway::start(&config(port)).await;
    let mut ws = support::ws_connect(&gateway.ws_url("/early")).await;
    let first = tokio::time::timeout(PROMPTLY, ws.next())
        .await
        .expect("the app's first message in time")
        .expect("a message")
        .unwrap();
    assert_eq!(first, Message::Text("hello".into()));
}
