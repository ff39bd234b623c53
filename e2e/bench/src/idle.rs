//! Idle connections: open `n` WebSockets and hold them; afterwards prove they are all still
//! usable with one request/response each.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::wsclient::{Dialect, Ws, connect};

/// Open `n` connections (64 handshakes in flight at a time).
pub async fn open(port: u16, path: &str, dialect: Dialect, n: usize) -> Result<Vec<Ws>> {
    let sem = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let sem = sem.clone();
        let path = path.to_string();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            connect(port, &path, dialect).await
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r?.context("idle connect")?);
    }
    Ok(out)
}

/// Send one message on every connection and count replies within 20 s: echo apps echo, the
/// Switchboard protocol answers `ping` with `pong`, Socket.IO connections answer a probe ping.
/// Returns (alive, closed-or-silent).
pub async fn check_alive(conns: Vec<Ws>, dialect: Dialect) -> (usize, usize) {
    let mut set = JoinSet::new();
    for mut ws in conns {
        set.spawn(async move {
            let ok = tokio::time::timeout(Duration::from_secs(20), probe(&mut ws, dialect))
                .await
                .unwrap_or(false);
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            ok
        });
    }
    let (mut alive, mut dead) = (0, 0);
    while let Some(r) = set.join_next().await {
        if matches!(r, Ok(true)) {
            alive += 1;
        } else {
            dead += 1;
        }
    }
    (alive, dead)
}

/// One probe on one connection: true when it answered.
pub async fn probe(ws: &mut Ws, dialect: Dialect) -> bool {
    let probe = match dialect {
        Dialect::Plain => "alive?".to_string(),
        Dialect::Switchboard => r#"{"type":"ping"}"#.to_string(),
        // Not used by the idle sections (the binary encoding is measured by fan-out only).
        Dialect::SwitchboardProto => String::new(),
        // An event to the server; the room server ignores unknown events, so for Socket.IO a
        // WebSocket-level ping is the probe instead.
        Dialect::SocketIo => String::new(),
    };
    let ok = async {
        if dialect == Dialect::SocketIo {
            ws.send(Message::Ping(b"p".to_vec().into())).await.ok()?;
            loop {
                match ws.next().await? {
                    Ok(Message::Pong(_)) => return Some(()),
                    Ok(Message::Text(t)) if t.as_str() == "2" => {
                        ws.send(Message::text("3")).await.ok()?;
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        }
        ws.send(Message::text(probe)).await.ok()?;
        loop {
            match ws.next().await? {
                Ok(Message::Text(_) | Message::Binary(_)) => return Some(()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    ok.await.is_some()
}
