//! A measurement, not a check of the suite (ignored by default): the delivery contract under
//! real CPU starvation, as in issue 7 — one gateway, a big room, 1 KB messages at a steady rate,
//! busy loops competing for the cores. Prints published / acknowledged / delivered /
//! gap-signalled / lost per member (summed) and the pod's overflow counters, and fails if any
//! acknowledged message was lost without a signal.
//!
//! ```sh
//! STRESS_MEMBERS=200 STRESS_RATE=2000 STRESS_SECS=10 STRESS_HOGS=2 [STRESS_QUEUE=64] \
//!   cargo nextest run -p switchboard-gateway --test rooms_stress --run-ignored only --no-capture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::rooms::PUBLISH_TOKEN;
use support::{ConfigBuilder, route};
use support::{Gateway, metric_sum, metrics_text, ws_connect};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(history: u64) -> String {
    ConfigBuilder::new()
        .publish_token(PUBLISH_TOKEN)
        .route(
            route("hot", "/hot")
                .rooms(json!({
                    "join": ["hot"],
                    "publish": ["hot"],
                    "history": {"maxMessages": history, "maxAge": "10m"},
                    "maxQueueBytes": 8_388_608,
                }))
                .max_message_bytes(65_536)
                .messages_per_second(100_000, 100_000),
        )
        .yaml()
}

/// What one member saw.
#[derive(Default, Debug)]
struct Seen {
    seqs: Vec<u64>,
    /// `lost` ranges (from, to).
    lost: Vec<(u64, u64)>,
    closed: Option<u16>,
}

/// `"seq":N` without parsing the whole 1 KB message (the test process must keep up).
fn field_u64(text: &str, name: &str) -> Option<u64> {
    let at = text.find(name)? + name.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| *c == ':' || *c == '{' || c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

struct Hogs(Vec<Child>);

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --run-ignored only"]
async fn acknowledged_messages_reach_every_member_or_are_signalled_under_cpu_starvation() {
    let members = env("STRESS_MEMBERS", 200) as usize;
    let rate = env("STRESS_RATE", 1000);
    let secs = env("STRESS_SECS", 15);
    let hogs = env("STRESS_HOGS", 2);
    let history = env("STRESS_HISTORY", 100);
    // STRESS_QUEUE: a smaller room queue (the debug-build test seam), so that the starvation
    // this machine can produce overflows it; unset: the real 4096.
    let queue = std::env::var("STRESS_QUEUE").unwrap_or_default();
    let seam: Vec<(&str, &str)> = if queue.is_empty() {
        Vec::new()
    } else {
        vec![("SWITCHBOARD_TEST_ROOM_QUEUE", queue.as_str())]
    };
    let gw = Gateway::start_with_env(&config(history), &seam).await;

    let mut readers = Vec::new();
    for _ in 0..members {
        let mut ws = ws_connect(&gw.ws_url("/hot")).await;
        ws.send(Message::text(
            json!({"type": "join", "room": "hot"}).to_string(),
        ))
        .await
        .expect("join");
        readers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut joined = false;
            while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await
            {
                match msg {
                    Ok(Message::Text(t)) => {
                        let t = t.as_str();
                        if t.starts_with(r#"{"type":"message""#)
                            || t.contains(r#""type":"message""#)
                        {
                            seen.seqs.push(field_u64(t, r#""seq""#).unwrap_or(0));
                        } else if t.contains(r#""type":"lost""#) {
                            let v: Value = serde_json::from_str(t).expect("lost JSON");
                            seen.lost.push((
                                v["from"]["seq"].as_u64().unwrap_or(0),
                                v["to"]["seq"].as_u64().unwrap_or(0),
                            ));
                        } else if t.contains(r#""type":"joined""#) {
                            joined = true;
                        }
                    }
                    Ok(Message::Close(f)) => {
                        seen.closed = Some(f.map_or(1005, |f| u16::from(f.code)));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            assert!(joined, "every member joined");
            seen
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let _hogs = Hogs(
        (0..hogs)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn a busy loop")
            })
            .collect(),
    );
    // Publishers: 4 connections sharing the rate, each waiting for nothing (acks are read by a
    // task of their own).
    let payload = "x".repeat(1000);
    let total = rate * secs;
    let per = total / 4;
    let mut publishers = Vec::new();
    for p in 0..4u64 {
        let ws = ws_connect(&gw.ws_url("/hot")).await;
        let payload = payload.clone();
        publishers.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let acks = tokio::spawn(async move {
                let mut acked = Vec::new();
                while let Ok(Some(Ok(msg))) =
                    tokio::time::timeout(Duration::from_secs(30), rx.next()).await
                {
                    if let Message::Text(t) = msg
                        && t.as_str().contains(r#""type":"ack""#)
                    {
                        acked.push(field_u64(t.as_str(), r#""seq""#).unwrap_or(0));
                        if acked.len() as u64 == per {
                            break;
                        }
                    }
                }
                acked
            });
            let start = Instant::now();
            let every = Duration::from_secs_f64(4.0 / rate as f64);
            for i in 0..per {
                tokio::time::sleep_until(start + every * i as u32).await;
                let m = json!({"type": "publish", "room": "hot", "id": format!("{p}-{i}"),
                               "data": {"p": p, "i": i, "pad": payload}});
                if tx.send(Message::text(m.to_string())).await.is_err() {
                    break;
                }
            }
            acks.await.expect("acks")
        }));
    }
    let mut acked = BTreeSet::new();
    for p in publishers {
        acked.extend(p.await.expect("publisher"));
    }
    drop(_hogs);
    let metrics = metrics_text(&gw).await;
    let mut delivered = 0u64;
    let mut signalled = 0u64;
    let mut lost = 0u64;
    let mut closed = 0;
    for r in readers {
        let seen = r.await.expect("member");
        let got: BTreeSet<u64> = seen.seqs.iter().copied().collect();
        assert!(
            seen.seqs.windows(2).all(|w| w[0] < w[1]),
            "in order, no duplicates"
        );
        delivered += acked.iter().filter(|s| got.contains(s)).count() as u64;
        let told = |s: &u64| seen.lost.iter().any(|(a, b)| (a..=b).contains(&s));
        signalled += acked.iter().filter(|s| told(s)).count() as u64;
        if seen.closed.is_some() {
            closed += 1;
        } else {
            lost += acked
                .iter()
                .filter(|s| !got.contains(s) && !told(s))
                .count() as u64;
        }
    }
    eprintln!(
        "stress: members {members}, rate {rate}/s for {secs}s, 1 KB, {hogs} busy loops, history {history}, room queue {}\n\
         published {total}, acknowledged {}, delivered {delivered} of {} member-messages, \
         gap-signalled {signalled}, lost {lost}, members closed {closed}\n\
         pod: overflows {}, overflow messages {}, repaired {}, lost-signalled {}, lost signals {}",
        if queue.is_empty() {
            "4096"
        } else {
            queue.as_str()
        },
        acked.len(),
        acked.len() * members,
        metric_sum(&metrics, "switchboard_room_overflows_total", &[]),
        metric_sum(&metrics, "switchboard_room_overflow_messages_total", &[]),
        metric_sum(
            &metrics,
            "switchboard_room_repairs_total",
            &[("result", "repaired")]
        ),
        metric_sum(
            &metrics,
            "switchboard_room_repairs_total",
            &[("result", "lost")]
        ),
        metric_sum(&metrics, "switchboard_room_lost_total", &[]),
    );
    assert_eq!(lost, 0, "acknowledged messages lost without a signal");
}
