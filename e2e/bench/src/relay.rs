//! The cross-pod baseline: the smallest WebSocket -> NATS -> WebSocket relay one would write
//! (every text message a client sends is published on one NATS subject; every relay subscribes
//! to it and sends what arrives to all of its clients), run as two helper processes ("pods") on
//! the gateway's nats-server; and a raw NATS round trip (publish on one connection, receive on
//! another) as the floor under both.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::stats::{Lat, summarize};
use crate::wsclient::{Dialect, connect};

const SUBJECT: &str = "sbrelay.room";

/// `sbbench relay nats=URL`: serve on a free loopback port, print `listening <port>`.
pub async fn serve(nats_url: &str) -> Result<()> {
    let nats = async_nats::connect(nats_url).await?;
    let mut sub = nats.subscribe(SUBJECT).await?;
    let (tx, _) = broadcast::channel::<bytes::Bytes>(1024);
    let fan = tx.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let _ = fan.send(m.payload);
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (nats, mut rx) = (nats.clone(), tx.subscribe());
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let (mut out, mut inc) = ws.split();
            let reader = async {
                while let Some(Ok(m)) = inc.next().await {
                    if let Message::Text(t) = m {
                        let payload = bytes::Bytes::copy_from_slice(t.as_bytes());
                        if nats.publish(SUBJECT, payload).await.is_err() {
                            break;
                        }
                    }
                }
            };
            let writer = async {
                while let Ok(p) = rx.recv().await {
                    let Ok(text) = String::from_utf8(p.to_vec()) else {
                        continue;
                    };
                    if out.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! { _ = reader => {}, _ = writer => {} }
        });
    }
}

/// Publish on relay `pub_port`, receive on relay `sub_port`: `n` measured hops after `warmup`.
pub async fn hop(pub_port: u16, sub_port: u16, n: usize, warmup: usize) -> Result<Lat> {
    let mut sub = connect(sub_port, "/", Dialect::Plain).await?;
    let mut publisher = connect(pub_port, "/", Dialect::Plain).await?;
    let recv =
        async |sub: &mut crate::wsclient::Ws, want: &str, within: Duration| -> Result<bool> {
            let deadline = Instant::now() + within;
            loop {
                match tokio::time::timeout_at(deadline, sub.next()).await {
                    Err(_) => return Ok(false),
                    Ok(None) => bail!("relay member connection ended"),
                    Ok(Some(m)) => {
                        if let Message::Text(t) = m?
                            && t.as_str() == want
                        {
                            return Ok(true);
                        }
                    }
                }
            }
        };
    // The far relay's subscription may take a moment.
    let mut ready = false;
    for i in 0..20 {
        let probe = format!("ready-{i}");
        publisher.send(Message::text(probe.clone())).await?;
        if recv(&mut sub, &probe, Duration::from_millis(500)).await? {
            ready = true;
            break;
        }
    }
    if !ready {
        bail!("nothing crossed the relay from :{pub_port} to :{sub_port}");
    }
    let mut samples = Vec::with_capacity(n);
    for k in 0..warmup + n {
        let text = k.to_string();
        let t = Instant::now();
        publisher.send(Message::text(text.clone())).await?;
        if !recv(&mut sub, &text, Duration::from_secs(5)).await? {
            bail!("relay message {k} not received within 5 s");
        }
        if k >= warmup {
            samples.push(t.elapsed());
        }
    }
    let _ = publisher.close(None).await;
    let _ = sub.close(None).await;
    Ok(summarize(&samples))
}

/// Raw NATS: publish on one client connection, receive on another (one message in flight).
pub async fn nats_round_trip(url: &str, n: usize, warmup: usize) -> Result<Lat> {
    let a = async_nats::connect(url).await?;
    let b = async_nats::connect(url).await?;
    let mut sub = b.subscribe("sbrelay.rtt").await?;
    b.flush().await?;
    let mut samples = Vec::with_capacity(n);
    for k in 0..warmup + n {
        let t = Instant::now();
        a.publish("sbrelay.rtt", k.to_string().into()).await?;
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .context("raw NATS message not received within 5 s")?
            .context("subscription ended")?;
        if m.payload.as_ref() != k.to_string().as_bytes() {
            bail!("raw NATS: out of order");
        }
        if k >= warmup {
            samples.push(t.elapsed());
        }
    }
    Ok(summarize(&samples))
}
