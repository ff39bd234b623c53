//! Publish -> receive latency through rooms: a publisher on pod A, a member on pod B (the same
//! pod for the local case), one message in flight at a time.

use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::stats::{Lat, summarize};
use crate::wsclient::{Dialect, Ws, connect, sb_join};

const ROOM: &str = "bench:hop";

fn publish(i: u64) -> Message {
    Message::text(serde_json::json!({"type": "publish", "room": ROOM, "data": i}).to_string())
}

/// Wait for the `message` carrying `i` (earlier ones, e.g. from set-up retries, are skipped).
async fn receive(sub: &mut Ws, i: u64, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = match tokio::time::timeout_at(deadline, sub.next()).await {
            Err(_) => return Ok(false),
            Ok(None) => bail!("member connection ended"),
            Ok(Some(m)) => m?,
        };
        if let Message::Text(t) = m
            && t.contains("\"type\":\"message\"")
        {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            if v["data"].as_u64() == Some(i) {
                return Ok(true);
            }
        }
    }
}

/// `n` measured publish -> receive hops after `warmup` ones, on the rooms route at `path`.
pub async fn hop(pub_port: u16, sub_port: u16, path: &str, n: usize, warmup: usize) -> Result<Lat> {
    let mut sub = connect(sub_port, path, Dialect::Switchboard).await?;
    sb_join(&mut sub, ROOM).await?;
    let publisher = connect(pub_port, path, Dialect::Switchboard).await?;
    let (mut tx, mut rx) = publisher.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    // Set-up: the member's pod may take a moment to subscribe on the bus.
    let mut ready = false;
    for i in 1_000_000u64..1_000_020 {
        tx.send(publish(i)).await?;
        if receive(&mut sub, i, Duration::from_millis(500)).await? {
            ready = true;
            break;
        }
    }
    if !ready {
        bail!("no message crossed from :{pub_port} to :{sub_port} in 10 s");
    }
    let mut samples = Vec::with_capacity(n);
    for k in 0..(warmup + n) as u64 {
        let t = Instant::now();
        tx.send(publish(k)).await?;
        if !receive(&mut sub, k, Duration::from_secs(5)).await? {
            bail!("message {k} not received within 5 s");
        }
        if k as usize >= warmup {
            samples.push(t.elapsed());
        }
    }
    drain.abort();
    let _ = tx.close().await;
    let _ = sub.close(None).await;
    Ok(summarize(&samples))
}
