//! Room fan-out: `members` WebSocket clients in one room, one publisher sends `messages`
//! messages of `size` bytes; every member counts what it receives.
//!
//! Two publisher modes:
//! - burst: every message queued at once, as fast as the publisher's connection takes them.
//!   Rate = total deliveries / (last delivery - first publish), all on one clock. Servers that
//!   coalesce queued frames per socket benefit most here.
//! - paced: one message every `pace`; the rate is fixed by the publisher, so what differs is the
//!   server's CPU per delivery and how long a message takes to reach every member.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::stats::{Lat, summarize};
use crate::wsclient::{Dialect, Ws, connect, is_delivery, pb, sb_join, sb_proto_join};

/// How to reach one room on a system.
#[derive(Debug, Clone)]
pub struct Target {
    pub port: u16,
    pub dialect: Dialect,
    pub member_path: String,
    pub publisher_path: String,
    /// Switchboard protocol: the room to join and publish to.
    pub room: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FanResult {
    pub deliveries: u64,
    pub expected: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Time from the first publish to the first delivery anywhere (a latency floor).
    pub first_ms: f64,
    /// Size of one delivered message as the member's WebSocket sees it (payload + envelope).
    pub delivery_bytes: usize,
    /// Server CPU seconds from the first publish to the last delivery.
    pub server_cpu_s: f64,
    /// Paced mode: per message, publish -> the last of the members received it.
    pub reach_all: Option<Lat>,
}

/// The payload of message `i`: its index in 8 digits, padded to `size` bytes (JSON-safe).
pub fn payload(i: u64, size: usize) -> String {
    let mut s = format!("{i:08}");
    while s.len() < size {
        s.push('m');
    }
    s
}

/// The message index in a delivered frame (see [`payload`]).
fn index_of(dialect: Dialect, text: &str) -> Option<usize> {
    let start = match dialect {
        Dialect::Plain => 0,
        Dialect::Switchboard => text.find("\"data\":\"")? + 8,
        Dialect::SocketIo => text.find(",\"")? + 2,
        // The `json` payload bytes: `"<index>mmm..."` (see `fanout::run`).
        Dialect::SwitchboardProto => 1,
    };
    text.get(start..start + 8)?.parse().ok()
}

pub fn publish_frame(t: &Target, data: &str) -> Message {
    match t.dialect {
        Dialect::Plain => Message::text(data),
        Dialect::Switchboard => Message::text(
            serde_json::json!({
                "type": "publish", "room": t.room.as_deref().unwrap_or(""), "data": data,
            })
            .to_string(),
        ),
        Dialect::SwitchboardProto => {
            let json = serde_json::Value::from(data).to_string();
            Message::binary(pb::publish(
                t.room.as_deref().unwrap_or(""),
                json.as_bytes(),
            ))
        }
        Dialect::SocketIo => Message::text(format!("42[\"pub\",\"{data}\"]")),
    }
}

async fn member(t: &Target) -> Result<Ws> {
    let mut ws = connect(t.port, &t.member_path, t.dialect).await?;
    match (t.dialect, &t.room) {
        (Dialect::Switchboard, Some(room)) => sb_join(&mut ws, room).await?,
        (Dialect::SwitchboardProto, Some(room)) => sb_proto_join(&mut ws, room).await?,
        _ => {}
    }
    Ok(ws)
}

struct Received {
    got: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    size: usize,
    /// Paced mode: arrival time per message index.
    arrivals: Vec<Option<Instant>>,
    ws: Ws,
}

/// Run one fan-out measurement; `cpu` reads the server's CPU seconds.
pub async fn run(
    t: &Target,
    members: usize,
    messages: u64,
    size: usize,
    pace: Option<Duration>,
    cpu: &dyn Fn() -> f64,
) -> Result<FanResult> {
    // Join everyone (64 handshakes in flight at a time).
    let sem = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    for _ in 0..members {
        let sem = sem.clone();
        let t = t.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            member(&t).await
        });
    }
    let mut socks = Vec::with_capacity(members);
    while let Some(r) = set.join_next().await {
        socks.push(r?.context("member connect")?);
    }
    let publisher = connect(t.port, &t.publisher_path, t.dialect).await?;
    // Let the last joins settle (raw relay rooms join right after the 101, with no reply).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu0 = cpu();
    let start = Instant::now();
    let budget = pace.map_or(Duration::ZERO, |p| p * messages as u32);
    let deadline = start + budget + Duration::from_secs(60);
    let dialect = t.dialect;
    let track = pace.is_some();
    let mut receivers = JoinSet::new();
    for mut ws in socks {
        receivers.spawn(async move {
            let mut got = 0u64;
            let (mut first, mut last) = (None, None);
            let mut size = 0usize;
            let mut arrivals = if track {
                vec![None; messages as usize]
            } else {
                Vec::new()
            };
            while got < messages {
                let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    _ => break,
                };
                let text = match &msg {
                    Message::Text(txt) => {
                        if dialect == Dialect::SocketIo && txt.as_str() == "2" {
                            let _ = ws.send(Message::text("3")).await;
                            continue;
                        }
                        if !is_delivery(dialect, txt) {
                            continue;
                        }
                        txt.as_str()
                    }
                    Message::Binary(b) if dialect == Dialect::SwitchboardProto => {
                        if pb::server_kind(b) != Some(pb::MESSAGE) {
                            continue;
                        }
                        pb::message_json(b)
                            .and_then(|j| std::str::from_utf8(j).ok())
                            .unwrap_or("")
                    }
                    Message::Binary(_) => "",
                    _ => continue,
                };
                let now = Instant::now();
                got += 1;
                size = msg.len();
                first.get_or_insert(now);
                last = Some(now);
                if track
                    && let Some(slot) = index_of(dialect, text).and_then(|i| arrivals.get_mut(i))
                {
                    *slot = Some(now);
                }
            }
            // Hold the socket until everyone is done so no close races the others.
            Received {
                got,
                first,
                last,
                size,
                arrivals,
                ws,
            }
        });
    }

    // The publisher; its replies (acks) are drained meanwhile.
    let (mut sink, mut stream) = publisher.split();
    let drain = tokio::spawn(async move {
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, stream.next()).await {}
    });
    let mut sent_at = Vec::with_capacity(if track { messages as usize } else { 0 });
    match pace {
        None => {
            let frames: Vec<Message> = (0..messages)
                .map(|i| publish_frame(t, &payload(i, size)))
                .collect();
            for f in frames {
                sink.feed(f).await?;
            }
            sink.flush().await?;
        }
        Some(every) => {
            let mut tick = tokio::time::interval_at(start, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0..messages {
                tick.tick().await;
                let f = publish_frame(t, &payload(i, size));
                sent_at.push(Instant::now());
                sink.send(f).await?;
            }
        }
    }

    let mut deliveries = 0;
    let mut first_any: Option<Instant> = None;
    let mut last_any: Option<Instant> = None;
    let mut held = Vec::with_capacity(members);
    let mut delivery_bytes = 0;
    let mut reach: Vec<Option<Instant>> = vec![None; sent_at.len()];
    while let Some(r) = receivers.join_next().await {
        let r = r?;
        deliveries += r.got;
        delivery_bytes = delivery_bytes.max(r.size);
        if let Some(f) = r.first {
            first_any = Some(first_any.map_or(f, |x: Instant| x.min(f)));
        }
        if let Some(l) = r.last {
            last_any = Some(last_any.map_or(l, |x: Instant| x.max(l)));
        }
        for (slot, a) in reach.iter_mut().zip(&r.arrivals) {
            if let Some(a) = a {
                *slot = Some(slot.map_or(*a, |s: Instant| s.max(*a)));
            }
        }
        held.push(r.ws);
    }
    let server_cpu_s = cpu() - cpu0;
    drain.abort();
    let end = last_any.unwrap_or(start);
    let seconds = (end - start).as_secs_f64().max(1e-9);
    let reach_all = track.then(|| {
        let d: Vec<Duration> = reach
            .iter()
            .zip(&sent_at)
            .filter_map(|(r, s)| r.map(|r| r.saturating_duration_since(*s)))
            .collect();
        summarize(&d)
    });
    // Close politely so servers do not see a reset storm.
    let _ = sink.close().await;
    let mut closes = JoinSet::new();
    for mut ws in held {
        closes.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        });
    }
    while closes.join_next().await.is_some() {}
    Ok(FanResult {
        deliveries,
        expected: members as u64 * messages,
        seconds,
        per_second: deliveries as f64 / seconds,
        first_ms: first_any.map_or(f64::NAN, |f| (f - start).as_secs_f64() * 1e3),
        delivery_bytes,
        server_cpu_s,
        reach_all,
    })
}
