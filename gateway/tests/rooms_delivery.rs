//! The delivery contract of rooms mode (docs/protocol.md, "Delivery guarantees"), against the
//! real binary with the embedded bus and with NATS:
//!
//! - a resume with a cursor from another epoch (the gateway restarted, the history stream was
//!   recreated) delivers what the current epoch holds, from its oldest retained message, flagged
//!   `recovered: false` — over WebSocket, SSE (`Last-Event-ID`) and long-polling;
//! - a pod whose room queue overflows (its fan-out paused by the test seam
//!   `SWITCHBOARD_TEST_FANOUT_GATE`, its queue shrunk by `SWITCHBOARD_TEST_ROOM_QUEUE`) repairs
//!   its members from history, and where history cannot cover the gap tells each member exactly
//!   what it missed with a `lost` signal before the next message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use support::nats::NatsServer;
use support::rooms::{JsonWs, PUBLISH_TOKEN, Sse, long_poll, publish_api};
use support::{ConfigBuilder, route};
use support::{Gateway, metric_sum, metrics_text};

/// Rooms of one pod, all anonymous, join and publish `r:*`, no keep-alive pings:
/// - `/kept` (namespace `kept`): 1000 messages of history (every overflow in the tests is
///   repairable);
/// - `/short` (namespace `short`): 5 messages of history (an overflow of more is not);
/// - `/none` (namespace `none`): no history (every message is ephemeral).
fn config(nats: Option<&str>) -> String {
    let room = |name: &str, history: Option<u64>| {
        let mut rooms = json!({"join": ["r:*"], "publish": ["r:*"]});
        if let Some(max) = history {
            rooms["history"] = json!({"maxMessages": max, "maxAge": "10m"});
        }
        route(name, &format!("/{name}"))
            .rooms(rooms)
            .max_message_bytes(65536)
            .messages_per_second(100_000, 100_000)
    };
    let gateway = ConfigBuilder::new()
        .publish_token(PUBLISH_TOKEN)
        .route(room("kept", Some(1000)))
        .route(room("short", Some(5)))
        .route(room("none", None));
    match nats {
        Some(url) => gateway.nats(url, "sbdeliv").yaml(),
        None => gateway.yaml(),
    }
}

/// Publish `n` through the API of `gw` into `ns`/`room`; returns the acknowledged positions.
async fn publish(gw: &Gateway, ns: &str, room: &str, n: i64) -> (u64, String) {
    let (status, body) = publish_api(
        gw.admin(),
        &json!({"namespace": ns, "room": room, "data": {"n": n}}),
    )
    .await;
    assert_eq!(status, 200, "publish {n}: {body}");
    let r = &body["results"][0];
    (
        r["seq"].as_u64().unwrap_or(0),
        r["epoch"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A cursor holding one room's position (what SSE ids and long-poll cursors are).
fn cursor(room: &str, seq: u64, epoch: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"p": {room: [seq, epoch]}}).to_string())
}

fn decode_cursor(cursor: &str, room: &str) -> Value {
    // Cursors name rooms by a tag of their name: the request's rooms.
    let c = switchboard_gateway::rooms::cursor::Cursor::decode(cursor, &[room.to_string()])
        .unwrap_or_else(|e| panic!("cursor {cursor:?}: {e}"));
    serde_json::to_value(c.positions).unwrap()
}

fn seq_and_n(m: &Value) -> (u64, i64) {
    (
        m["seq"].as_u64().unwrap_or_else(|| panic!("seq in {m}")),
        m["data"]["n"]
            .as_i64()
            .unwrap_or_else(|| panic!("n in {m}")),
    )
}

// --- §2: a cursor from another epoch ----------------------------------------------------------

/// What the tests of one bus need: a way to change the epoch of `/kept`'s rooms.
enum Epochs {
    /// The embedded bus: a restart of the gateway (same ports, same config).
    Restart,
    /// NATS: the namespace's history stream deleted behind the gateway's back.
    Recreate(NatsServer),
}

impl Epochs {
    async fn start(&self) -> Gateway {
        let nats = match self {
            Epochs::Restart => None,
            Epochs::Recreate(server) => Some(server.url()),
        };
        Gateway::start(&config(nats.as_deref())).await
    }

    /// A gateway whose `/kept` rooms are in a new epoch; the old one is gone.
    async fn next(&self, old: Gateway) -> Gateway {
        match self {
            Epochs::Restart => {
                let yaml = std::fs::read_to_string(old.config_path()).expect("config");
                drop(old);
                Gateway::start(&yaml).await
            }
            Epochs::Recreate(server) => {
                let js = async_nats::jetstream::new(
                    async_nats::connect(server.url())
                        .await
                        .expect("connect to NATS"),
                );
                js.delete_stream("SBDELIV_kept")
                    .await
                    .expect("delete the stream");
                old
            }
        }
    }
}

/// Publish 1 message in the first epoch (returning its position), move to a new epoch, publish
/// 3 there (data 1, 2, 3) and return the gateway, the old position and the new epoch.
async fn three_in_a_new_epoch(epochs: &Epochs, room: &str) -> (Gateway, (u64, String), String) {
    let gw = epochs.start().await;
    let old = publish(&gw, "kept", room, 0).await;
    let gw = epochs.next(gw).await;
    let mut epoch = String::new();
    for n in 1..=3 {
        let (seq, e) = publish(&gw, "kept", room, n).await;
        assert_ne!(e, old.1, "the new epoch differs from the old one");
        assert_eq!(seq, n as u64, "a new epoch numbers from 1");
        epoch = e;
    }
    (gw, old, epoch)
}

async fn a_websocket_resume_from_another_epoch_gets_what_the_new_epoch_holds(epochs: Epochs) {
    let room = "r:ws";
    let (gw, old, epoch) = three_in_a_new_epoch(&epochs, room).await;
    let mut ws = JsonWs::connect(&gw.ws_url("/kept"), &[]).await;
    ws.send(json!({"type": "join", "room": room, "id": "1",
                   "since": {"seq": old.0, "epoch": old.1}}))
        .await;
    let joined = ws.recv().await;
    assert_eq!(
        (
            &joined["type"],
            &joined["recovered"],
            &joined["position"]["epoch"]
        ),
        (&json!("joined"), &json!(false), &json!(epoch)),
        "{joined}"
    );
    let got: Vec<(u64, i64)> = ws.messages(3).await.iter().map(seq_and_n).collect();
    assert_eq!(got, vec![(1, 1), (2, 2), (3, 3)]);
    ws.expect_nothing_queued().await;
    let (seq, _) = publish(&gw, "kept", room, 4).await;
    assert_eq!(seq_and_n(&ws.messages(1).await[0]), (seq, 4), "then live");
}

async fn an_sse_resume_from_another_epoch_gets_what_the_new_epoch_holds(epochs: Epochs) {
    let room = "r:sse";
    let (gw, old, epoch) = three_in_a_new_epoch(&epochs, room).await;
    let last_event_id = cursor(room, old.0, &old.1);
    let mut sse = Sse::open(
        gw.addr(),
        &format!("/kept?rooms={room}"),
        &[("last-event-id", &last_event_id)],
    )
    .await;
    assert_eq!(sse.status, 200);
    let joined = sse.event().await;
    assert_eq!(joined.event.as_deref(), Some("joined"), "{joined:?}");
    assert_eq!(joined.json()["recovered"], false, "{joined:?}");
    // The joined event's id lets a reconnect before any message still get all three.
    let id = decode_cursor(joined.id.as_deref().expect("joined carries an id"), room);
    assert_eq!(id[room], json!([0, epoch]), "{id}");
    let mut got = Vec::new();
    let mut last = String::new();
    while got.len() < 3 {
        let ev = sse.event().await;
        assert_eq!(ev.event, None, "a message event: {ev:?}");
        last = ev.id.clone().expect("messages carry an id");
        got.push(seq_and_n(&ev.json()));
    }
    assert_eq!(got, vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(decode_cursor(&last, room)[room], json!([3, epoch]));
}

async fn a_long_poll_from_another_epoch_gets_what_the_new_epoch_holds(epochs: Epochs) {
    let room = "r:poll";
    let (gw, old, epoch) = three_in_a_new_epoch(&epochs, room).await;
    let poll = long_poll(
        gw.addr(),
        &format!(
            "/kept?rooms={room}&timeout=1s&cursor={}",
            cursor(room, old.0, &old.1)
        ),
    )
    .await;
    assert_eq!(poll.status, 200, "{:?}", poll.body);
    let body = poll.body.clone().expect("a body");
    assert_eq!(
        body["lost"],
        json!([room]),
        "flagged as not recovered: {body}"
    );
    let got: Vec<(u64, i64)> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(seq_and_n)
        .collect();
    assert_eq!(got, vec![(1, 1), (2, 2), (3, 3)], "{body}");
    assert_eq!(decode_cursor(&poll.cursor(), room)[room], json!([3, epoch]));
}

#[tokio::test]
async fn a_websocket_resume_after_a_restart_gets_what_the_new_epoch_holds() {
    a_websocket_resume_from_another_epoch_gets_what_the_new_epoch_holds(Epochs::Restart).await;
}

#[tokio::test]
async fn an_sse_resume_after_a_restart_gets_what_the_new_epoch_holds() {
    an_sse_resume_from_another_epoch_gets_what_the_new_epoch_holds(Epochs::Restart).await;
}

#[tokio::test]
async fn a_long_poll_after_a_restart_gets_what_the_new_epoch_holds() {
    a_long_poll_from_another_epoch_gets_what_the_new_epoch_holds(Epochs::Restart).await;
}

#[tokio::test]
async fn a_websocket_resume_after_the_nats_stream_was_recreated_gets_what_the_new_epoch_holds() {
    let epochs = Epochs::Recreate(NatsServer::start());
    a_websocket_resume_from_another_epoch_gets_what_the_new_epoch_holds(epochs).await;
}

#[tokio::test]
async fn an_sse_resume_after_the_nats_stream_was_recreated_gets_what_the_new_epoch_holds() {
    let epochs = Epochs::Recreate(NatsServer::start());
    an_sse_resume_from_another_epoch_gets_what_the_new_epoch_holds(epochs).await;
}

#[tokio::test]
async fn a_long_poll_after_the_nats_stream_was_recreated_gets_what_the_new_epoch_holds() {
    let epochs = Epochs::Recreate(NatsServer::start());
    a_long_poll_from_another_epoch_gets_what_the_new_epoch_holds(epochs).await;
}

// --- §1: a pod that falls behind -------------------------------------------------------------

/// The room queue depth of the pods under test (`SWITCHBOARD_TEST_ROOM_QUEUE`).
const QUEUE: usize = 8;
/// Messages published while the fan-out is paused: far more than the queue holds.
const BURST: i64 = 60;

/// A pod whose fan-out pauses while `gate` exists, with room queues of [`QUEUE`] messages.
async fn pausable(gate: &Path, nats: Option<&str>) -> Gateway {
    let queue = QUEUE.to_string();
    Gateway::start_with_env(
        &config(nats),
        &[
            ("SWITCHBOARD_TEST_ROOM_QUEUE", queue.as_str()),
            (
                "SWITCHBOARD_TEST_FANOUT_GATE",
                gate.to_str().expect("utf-8 path"),
            ),
        ],
    )
    .await
}

/// What one member received of a room, in order.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    /// A message (seq 0: ephemeral).
    Message(u64),
    /// `lost`: stored messages `from..=to` (both 0: none) and `ephemeral` ones.
    Lost { from: u64, to: u64, ephemeral: u64 },
}

impl Got {
    fn of(v: &Value) -> Option<Self> {
        match v["type"].as_str() {
            Some("message") => Some(Got::Message(v["seq"].as_u64().expect("seq"))),
            Some("lost") => Some(Got::Lost {
                from: v["from"]["seq"].as_u64().unwrap_or(0),
                to: v["to"]["seq"].as_u64().unwrap_or(0),
                ephemeral: v["ephemeral"].as_u64().expect("ephemeral count"),
            }),
            _ => None,
        }
    }
}

/// The contract, for one member: every acknowledged stored message (`acked`, in order) was
/// either received, in order and once, or covered by a `lost` received before any later
/// message; a `lost` covers only messages the member did not receive; `ephemeral` messages
/// (acked without a position) were received or counted as lost. Returns (delivered, signalled
/// as lost).
fn check_contract(who: &str, acked: &[u64], ephemeral: u64, got: &[Got]) -> (u64, u64) {
    let mut last = 0;
    let mut covered = std::collections::BTreeSet::new();
    let (mut delivered, mut lost, mut eph_got, mut eph_lost) = (0, 0, 0, 0);
    for g in got {
        match *g {
            Got::Message(0) => eph_got += 1,
            Got::Message(seq) => {
                assert!(
                    seq > last,
                    "{who}: seq {seq} after {last}: out of order or twice: {got:?}"
                );
                assert!(
                    acked.contains(&seq),
                    "{who}: seq {seq} was never acked: {got:?}"
                );
                covered.insert(seq);
                last = seq;
                delivered += 1;
            }
            Got::Lost {
                from,
                to,
                ephemeral,
            } => {
                eph_lost += ephemeral;
                if to == 0 {
                    continue;
                }
                assert!(
                    from > last && from <= to,
                    "{who}: lost {from}..={to} after {last}: {got:?}"
                );
                for seq in acked.iter().filter(|s| (from..=to).contains(*s)) {
                    assert!(covered.insert(*seq), "{who}: {seq} both received and lost");
                    lost += 1;
                }
                last = to;
            }
        }
    }
    let missing: Vec<_> = acked.iter().filter(|s| !covered.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "{who}: acked but neither received nor signalled: {missing:?}; got {got:?}"
    );
    assert_eq!(
        eph_got + eph_lost,
        ephemeral,
        "{who}: ephemeral received + lost: {got:?}"
    );
    (delivered + eph_got, lost + eph_lost)
}

/// Whether `got` accounts for everything up to the last acked message (or `ephemeral` ones).
fn complete(acked: &[u64], ephemeral: u64, got: &[Got]) -> bool {
    match acked.last() {
        Some(last) => got.iter().any(|g| match *g {
            Got::Message(seq) => seq >= *last,
            Got::Lost { to, .. } => to >= *last,
        }),
        None => {
            let n: u64 = got
                .iter()
                .map(|g| match *g {
                    Got::Message(_) => 1,
                    Got::Lost { ephemeral, .. } => ephemeral,
                })
                .sum();
            n >= ephemeral
        }
    }
}

/// What a long-poll answer tells: its messages and in-band `lost` signals, and for a room listed
/// in `lost` without one (a resume whose gap is gone) the range between the previous cursor and
/// what follows.
fn poll_events(room: &str, prev: u64, body: &Value) -> Vec<Got> {
    let mut got: Vec<Got> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(Got::of)
        .collect();
    let listed = body["lost"]
        .as_array()
        .is_some_and(|l| l.contains(&json!(room)));
    let in_band = got.iter().any(|g| matches!(g, Got::Lost { .. }));
    if listed && !in_band {
        let next = got
            .iter()
            .find_map(|g| match g {
                Got::Message(seq) if *seq > 0 => Some(seq - 1),
                _ => None,
            })
            .unwrap_or_else(|| {
                decode_cursor(body["cursor"].as_str().expect("cursor"), room)[room][0]
                    .as_u64()
                    .expect("seq")
            });
        if next > prev {
            got.insert(
                0,
                Got::Lost {
                    from: prev + 1,
                    to: next,
                    ephemeral: 0,
                },
            );
        }
    }
    got
}

/// One overflow on the pod `members_on`, whose fan-out pauses while `gate` exists: a WebSocket,
/// an SSE and a long-polling member of `ns`/`room` there; [`BURST`] messages published through
/// `publisher`'s API while the fan-out is paused; then the contract is checked for each member.
/// Returns (acked, per member (name, delivered, signalled)).
async fn overflow(
    publisher: &Gateway,
    members_on: &Gateway,
    gate: &Path,
    ns: &str,
    room: &str,
) -> (u64, Vec<(&'static str, u64, u64)>) {
    let path = format!("/{ns}?rooms={room}");
    let mut ws = JsonWs::connect(&members_on.ws_url(&format!("/{ns}")), &[]).await;
    ws.join(room).await;
    let mut sse = Sse::open(members_on.addr(), &path, &[]).await;
    assert_eq!(sse.event().await.event.as_deref(), Some("joined"));
    let first = long_poll(members_on.addr(), &format!("{path}&timeout=0s")).await;
    assert_eq!(first.status, 204, "{:?}", first.body);
    let mut cursor = first.cursor();
    let mut prev = decode_cursor(&cursor, room)[room][0].as_u64().expect("seq");
    // A long-poll waiting through the whole overflow.
    let waiting = {
        let addr = members_on.addr();
        let path = format!("{path}&timeout=25s&cursor={cursor}");
        tokio::spawn(async move { long_poll(addr, &path).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the poll has joined

    std::fs::write(gate, b"paused").expect("create the gate");
    let mut acked = Vec::new();
    let mut ephemeral = 0;
    for n in 1..=BURST {
        match publish(publisher, ns, room, n).await {
            (0, _) => ephemeral += 1,
            (seq, _) => acked.push(seq),
        }
    }
    std::fs::remove_file(gate).expect("remove the gate");

    let within = Duration::from_secs(60);
    let mut ws_got = Vec::new();
    while !complete(&acked, ephemeral, &ws_got) {
        let v = ws.recv_within(within).await;
        ws_got.extend(Got::of(&v));
    }
    let mut sse_got = Vec::new();
    while !complete(&acked, ephemeral, &sse_got) {
        let ev = sse.next_event(within).await.expect("the stream stays open");
        sse_got.extend(Got::of(&ev.json()));
        if ev.event.as_deref() == Some("lost") {
            assert!(
                ev.id.is_some(),
                "a lost event carries the cursor past what was lost"
            );
        }
    }
    // Without history a long-poller is a member only while a poll is open: what is published
    // between two polls is not for it (docs/protocol.md); only the other transports count there.
    let polls = ns != "none";
    let mut poll_got = Vec::new();
    let mut answer = waiting.await.expect("the waiting poll");
    for _ in 0..if polls { 20 } else { 0 } {
        if let Some(body) = &answer.body {
            poll_got.extend(poll_events(room, prev, body));
        }
        cursor = answer.cursor();
        prev = decode_cursor(&cursor, room)[room][0]
            .as_u64()
            .unwrap_or(prev);
        if complete(&acked, ephemeral, &poll_got) {
            break;
        }
        answer = long_poll(
            members_on.addr(),
            &format!("{path}&timeout=5s&cursor={cursor}"),
        )
        .await;
        assert!(matches!(answer.status, 200 | 204), "{:?}", answer.body);
    }
    assert!(
        !polls || complete(&acked, ephemeral, &poll_got),
        "long-poll: not everything after 20 polls: {poll_got:?}"
    );

    let total = acked.len() as u64 + ephemeral;
    let mut report = Vec::new();
    let members = [
        ("websocket", &ws_got),
        ("sse", &sse_got),
        ("long-poll", &poll_got),
    ];
    for (who, got) in members.into_iter().take(if polls { 3 } else { 2 }) {
        let (delivered, lost) = check_contract(who, &acked, ephemeral, got);
        assert_eq!(delivered + lost, total, "{who}: {got:?}");
        report.push((who, delivered, lost));
    }
    // Live delivery goes on after the overflow, for every member.
    let (seq, _) = publish(publisher, ns, room, BURST + 1).await;
    let next = ws.recv_within(within).await;
    assert_eq!(
        (next["type"].as_str(), next["seq"].as_u64()),
        (Some("message"), Some(seq)),
        "{next}"
    );
    let next = sse.next_event(within).await.expect("open").json();
    assert_eq!(
        (next["type"].as_str(), next["seq"].as_u64()),
        (Some("message"), Some(seq)),
        "{next}"
    );
    eprintln!(
        "overflow {ns}/{room}: published {BURST}, acked {total}, per member (delivered, lost): {report:?}"
    );
    (total, report)
}

/// The overflow counters of a pod: (overflows, repaired, lost signalled).
async fn overflow_metrics(gw: &Gateway) -> (f64, f64, f64) {
    let text = metrics_text(gw).await;
    (
        metric_sum(&text, "switchboard_room_overflows_total", &[]),
        metric_sum(
            &text,
            "switchboard_room_repairs_total",
            &[("result", "repaired")],
        ),
        metric_sum(
            &text,
            "switchboard_room_repairs_total",
            &[("result", "lost")],
        ),
    )
}

fn gate_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("fanout-gate")
}

/// Every scenario on one pod (or `publisher` publishing to it over NATS): a repairable overflow
/// (history covers it: every member gets everything, nobody is told anything), one history
/// cannot cover (each member told exactly the rest), and one in a room without history.
async fn every_member_gets_every_acked_message_or_is_told(
    publisher: &Gateway,
    members_on: &Gateway,
    gate: &Path,
) {
    let (acked, report) = overflow(publisher, members_on, gate, "kept", "r:kept").await;
    for (who, delivered, lost) in report {
        assert_eq!(
            (delivered, lost),
            (acked, 0),
            "{who}: repaired from history"
        );
    }
    let (overflows, repaired, told) = overflow_metrics(members_on).await;
    assert!(
        overflows >= 1.0 && repaired >= 1.0,
        "{overflows} {repaired}"
    );
    assert_eq!(told, 0.0);

    let (_, report) = overflow(publisher, members_on, gate, "short", "r:short").await;
    for (who, _, lost) in &report {
        assert!(
            *lost > 0,
            "{who}: 5 messages of history cannot repair {BURST}: {report:?}"
        );
    }
    let (_, report) = overflow(publisher, members_on, gate, "none", "r:none").await;
    for (who, _, lost) in &report {
        assert!(
            *lost > 0,
            "{who}: without history the overflow is told: {report:?}"
        );
    }
    let (_, _, told) = overflow_metrics(members_on).await;
    assert!(told >= 2.0, "{told}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_falls_behind_repairs_its_members_or_tells_them_what_they_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = gate_in(&dir);
    let gw = pausable(&gate, None).await;
    every_member_gets_every_acked_message_or_is_told(&gw, &gw, &gate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_falls_behind_on_nats_repairs_its_members_or_tells_them_what_they_missed() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = gate_in(&dir);
    let publisher = Gateway::start(&config(Some(&nats.url()))).await;
    let members_on = pausable(&gate, Some(&nats.url())).await;
    every_member_gets_every_acked_message_or_is_told(&publisher, &members_on, &gate).await;
}
