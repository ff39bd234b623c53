//! The NATS room bus against a real `nats-server` (JetStream on), started per test on a free
//! port: two buses on one server stand for two gateway pods.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchboard_gateway::rooms::bus::nats::{NO_HISTORY_EPOCH, NatsBus};
use switchboard_gateway::rooms::bus::{
    Bus, BusError, Member, Payload, Position, Publish, Replay, Replayed, Retention, RoomKey,
    RoomMessage, Sink, Subscription,
};

use support::nats::NatsServer;

const NS: &str = "chat";
/// Long enough for a slow CI machine, short enough to fail fast.
const WITHIN: Duration = Duration::from_secs(15);

fn config(server: &NatsServer, presence_ttl: &str) -> switchboard_config::Nats {
    config_with(&server.url(), presence_ttl)
}

fn config_with(url: &str, presence_ttl: &str) -> switchboard_config::Nats {
    serde_json::from_value(serde_json::json!({
        "urls": [url],
        "subjectPrefix": "sbtest",
        "presenceTtl": presence_ttl,
    }))
    .expect("nats config")
}

async fn wait_healthy(bus: &NatsBus) {
    let deadline = Instant::now() + WITHIN;
    while !bus.healthy() {
        assert!(
            Instant::now() < deadline,
            "bus not connected within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connected "pod" with `NS` keeping `max_messages` per room.
async fn pod(server: &NatsServer, max_messages: u32) -> NatsBus {
    pod_at(&server.url(), max_messages).await
}

/// [`pod`] on the server at `url`.
async fn pod_at(url: &str, max_messages: u32) -> NatsBus {
    let bus = NatsBus::connect(&config_with(url, "15s"))
        .await
        .expect("connect");
    wait_healthy(&bus).await;
    bus.configure(
        NS,
        Some(Retention {
            max_messages,
            max_age: Duration::from_secs(600),
            max_bytes: None,
        }),
    )
    .await
    .expect("configure");
    bus
}

fn key(room: &str) -> RoomKey {
    RoomKey {
        namespace: NS.into(),
        room: room.into(),
    }
}

fn msg(room: &str, n: i64) -> Publish {
    Publish {
        key: key(room),
        from: None,
        data: Payload::Json(n.into()),
        ephemeral: false,
        origin_conn: None,
    }
}

async fn publish(bus: &NatsBus, room: &str, n: i64) -> Position {
    stored(bus, msg(room, n)).await
}

/// Publish `p` into a namespace with history: its position.
async fn stored(bus: &NatsBus, p: Publish) -> Position {
    bus.publish(p)
        .await
        .expect("publish")
        .expect("stored publishes have a position")
}

async fn recv(sub: &mut Subscription) -> RoomMessage {
    tokio::time::timeout(WITHIN, sub.messages.recv())
        .await
        .expect("no room message in time")
        .expect("subscription open")
        .into_message()
        .expect("a message, not a lag (the test never fills the queue)")
}

fn number(m: &RoomMessage) -> i64 {
    match &m.data {
        Payload::Json(v) => v.as_i64().expect("a number"),
        other => panic!("expected JSON, got {other:?}"),
    }
}

fn seqs(replay: &Replay) -> Vec<u64> {
    match replay {
        Replay::Gap(msgs) => msgs.iter().map(|m| m.seq).collect(),
        Replay::Lost => panic!("expected a gap, got Lost"),
    }
}

#[tokio::test]
async fn a_message_published_on_one_pod_reaches_the_other_in_order_with_the_same_positions() {
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 100).await, pod(&server, 100).await);
    let mut on_a = a.subscribe(&key("lobby")).await.unwrap();
    let mut on_b = b.subscribe(&key("lobby")).await.unwrap();

    let mut sent = Vec::new();
    for n in 0..20 {
        let publisher = if n % 2 == 0 { &a } else { &b };
        sent.push((publish(publisher, "lobby", n).await, n));
    }
    for (pos, n) in &sent {
        for sub in [&mut on_a, &mut on_b] {
            let m = recv(sub).await;
            assert_eq!(
                (m.seq, &m.epoch, number(&m), m.ephemeral),
                (pos.seq, &pos.epoch, *n, false)
            );
            assert!(m.ts_ms > 0);
        }
    }
    assert!(
        sent.windows(2).all(|w| w[0].0.seq < w[1].0.seq),
        "positions increase"
    );
    let last = &sent.last().unwrap().0;
    assert_eq!(b.position(&key("lobby")).await.unwrap(), *last);
}

#[tokio::test]
async fn binary_and_text_payloads_keep_their_kind_and_the_publisher() {
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 100).await, pod(&server, 100).await);
    let mut sub = b.subscribe(&key("raw")).await.unwrap();
    for data in [
        Payload::Binary(bytes::Bytes::from_static(b"\x00\x01\xfe")),
        Payload::Text("frame".into()),
    ] {
        let p = Publish {
            key: key("raw"),
            from: Some(serde_json::json!({"sub": "alice"})),
            data: data.clone(),
            ephemeral: false,
            origin_conn: Some("conn-1".into()),
        };
        a.publish(p).await.unwrap();
        let m = recv(&mut sub).await;
        assert_eq!(
            (m.data, m.from, m.origin_conn.as_deref()),
            (
                data,
                Some(serde_json::json!({"sub": "alice"})),
                Some("conn-1")
            )
        );
    }
}

#[tokio::test]
async fn replay_returns_exactly_the_gap_even_with_other_rooms_in_the_stream() {
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 100).await, pod(&server, 100).await);
    let mut mine = Vec::new();
    for n in 0..6 {
        mine.push(publish(&a, "a", n).await);
        publish(&a, "other", n).await;
    }
    let gap = b.replay(&key("a"), &mine[2]).await.unwrap();
    assert_eq!(
        seqs(&gap),
        mine[3..].iter().map(|p| p.seq).collect::<Vec<_>>()
    );
    let Replay::Gap(msgs) = gap else {
        unreachable!()
    };
    assert_eq!(msgs.iter().map(number).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(
        msgs.iter()
            .all(|m| m.epoch == mine[0].epoch && m.key == key("a"))
    );
    assert_eq!(
        b.replay(&key("a"), &mine[5]).await.unwrap(),
        Replay::Gap(vec![])
    );
    // A fresh joiner's position resumes exactly too.
    let joined = b.position(&key("a")).await.unwrap();
    let next = publish(&a, "a", 6).await;
    assert_eq!(
        seqs(&b.replay(&key("a"), &joined).await.unwrap()),
        vec![next.seq]
    );
}

/// Takes messages until it holds `max`, then stops the read; records every message offered.
struct FirstN(Vec<RoomMessage>, usize);

impl Sink for FirstN {
    fn take(&mut self, msg: std::borrow::Cow<'_, RoomMessage>) -> bool {
        self.0.push(msg.into_owned());
        self.0.len() < self.1
    }
    fn reset(&mut self) {
        self.0.clear();
    }
}

#[tokio::test]
async fn a_history_read_hands_messages_over_as_it_reads_and_stops_when_the_sink_has_enough() {
    // A join or an unread count used to read a room's whole retained history into memory
    // before looking at it (10 churning joins of a 50 MB room: 409 MB of RSS).
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 1_000).await, pod(&server, 1_000).await);
    let first = publish(&a, "a", 0).await;
    for n in 1..600 {
        publish(&a, "a", n).await;
    }
    let mut sink = FirstN(Vec::new(), 3);
    assert_eq!(
        b.replay_into(&key("a"), &first, &mut sink).await.unwrap(),
        Replayed::Gap
    );
    assert_eq!(sink.0.iter().map(number).collect::<Vec<_>>(), vec![1, 2, 3]);
    let mut sink = FirstN(Vec::new(), 2);
    b.retained_into(&key("a"), &mut sink).await.unwrap();
    assert_eq!(sink.0.iter().map(number).collect::<Vec<_>>(), vec![0, 1]);
}

#[tokio::test]
async fn replay_past_retention_is_lost() {
    let server = NatsServer::start();
    let a = pod(&server, 3).await;
    let mut pos = Vec::new();
    for n in 0..10 {
        pos.push(publish(&a, "a", n).await);
    }
    assert_eq!(a.replay(&key("a"), &pos[1]).await.unwrap(), Replay::Lost);
    // Exactly the retained three are missing: still a complete gap.
    assert_eq!(
        seqs(&a.replay(&key("a"), &pos[6]).await.unwrap()),
        vec![pos[7].seq, pos[8].seq, pos[9].seq]
    );
    assert_eq!(
        seqs(&a.replay(&key("a"), &pos[8]).await.unwrap()),
        vec![pos[9].seq]
    );
}

#[tokio::test]
async fn replay_is_lost_when_the_rooms_own_limit_dropped_messages_though_the_stream_head_is_older()
{
    let server = NatsServer::start();
    let a = pod(&server, 3).await;
    publish(&a, "quiet", 0).await; // keeps the stream's first sequence at 1
    let mut pos = Vec::new();
    for n in 0..10 {
        pos.push(publish(&a, "busy", n).await);
    }
    assert_eq!(a.replay(&key("busy"), &pos[1]).await.unwrap(), Replay::Lost);
    assert_eq!(
        seqs(&a.replay(&key("busy"), &pos[6]).await.unwrap()),
        vec![pos[7].seq, pos[8].seq, pos[9].seq]
    );
    // From before its first message: that message is gone, so is the gap (needs the room's count).
    let epoch = pos[0].epoch.clone();
    let from_start = Position {
        seq: 0,
        epoch: epoch.clone(),
    };
    assert_eq!(
        a.replay(&key("busy"), &from_start).await.unwrap(),
        Replay::Lost
    );
    // A room below its limit is complete from anywhere after the stream's head...
    let fresh = [
        publish(&a, "fresh", 1).await.seq,
        publish(&a, "fresh", 2).await.seq,
    ];
    assert_eq!(
        seqs(&a.replay(&key("fresh"), &from_start).await.unwrap()),
        fresh
    );
    // ...and exactly `maxMessages` behind with other rooms in between is complete too.
    let x0 = publish(&a, "x", 0).await.seq;
    publish(&a, "y", 0).await; // between x0 and the oldest x kept, still stored
    let mut x = Vec::new();
    for n in 1..4 {
        x.push(publish(&a, "x", n).await.seq);
    }
    let behind = Position { seq: x0, epoch };
    assert_eq!(seqs(&a.replay(&key("x"), &behind).await.unwrap()), x);
}

#[tokio::test]
async fn replay_from_another_epoch_is_lost() {
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 100).await, pod(&server, 100).await);
    let old = publish(&a, "a", 1).await;
    let forged = Position {
        seq: old.seq,
        epoch: "another".into(),
    };
    assert_eq!(b.replay(&key("a"), &forged).await.unwrap(), Replay::Lost);

    // The stream is deleted behind the gateways' backs: the next publish recreates it.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.delete_stream(a.stream_name(NS)).await.unwrap();
    let new = publish(&a, "a", 2).await;
    assert_ne!(new.epoch, old.epoch, "a recreated stream has a new epoch");
    assert_eq!(b.replay(&key("a"), &old).await.unwrap(), Replay::Lost);
    assert_eq!(
        b.replay(&key("a"), &new).await.unwrap(),
        Replay::Gap(vec![])
    );
    assert_eq!(b.position(&key("a")).await.unwrap().epoch, new.epoch);
}

#[tokio::test]
async fn ephemeral_messages_are_delivered_live_and_never_replayed() {
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 100).await, pod(&server, 100).await);
    let mut sub = b.subscribe(&key("a")).await.unwrap();
    let before = b.position(&key("a")).await.unwrap();
    let mut typing = msg("a", 7);
    typing.ephemeral = true;
    assert_eq!(a.publish(typing).await.unwrap(), None);
    let live = recv(&mut sub).await;
    assert_eq!((live.ephemeral, live.seq, number(&live)), (true, 0, 7));
    let stored = publish(&a, "a", 8).await;
    assert_eq!(recv(&mut sub).await.seq, stored.seq);
    assert_eq!(
        seqs(&b.replay(&key("a"), &before).await.unwrap()),
        vec![stored.seq]
    );
}

#[tokio::test]
async fn a_namespace_without_history_relays_live_and_never_recovers() {
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 100).await, pod(&server, 100).await);
    for bus in [&a, &b] {
        bus.configure("live", None).await.unwrap();
    }
    let k = RoomKey {
        namespace: "live".into(),
        room: "r".into(),
    };
    let mut sub = b.subscribe(&k).await.unwrap();
    let p = Publish {
        key: k.clone(),
        from: None,
        data: Payload::Json(1.into()),
        ephemeral: false,
        origin_conn: None,
    };
    assert_eq!(a.publish(p).await.unwrap(), None);
    let m = recv(&mut sub).await;
    assert_eq!((m.seq, m.ephemeral, number(&m)), (0, false, 1));
    let pos = b.position(&k).await.unwrap();
    assert_eq!(
        pos,
        Position {
            seq: 0,
            epoch: NO_HISTORY_EPOCH.into()
        }
    );
    assert_eq!(b.replay(&k, &pos).await.unwrap(), Replay::Lost);

    // An app pod publishing a bare envelope straight to the room subject is relayed too.
    let app = async_nats::connect(server.url()).await.unwrap();
    app.publish("sbtest.room.live.r", r#"{"data":{"from":"app"}}"#.into())
        .await
        .unwrap();
    let m = recv(&mut sub).await;
    assert_eq!(m.data, Payload::Json(serde_json::json!({"from": "app"})));
}

#[tokio::test]
async fn app_pods_publishing_to_the_room_subject_are_stored_and_stamped() {
    let server = NatsServer::start();
    let a = pod(&server, 100).await;
    let mut sub = a.subscribe(&key("news")).await.unwrap();
    let before = a.position(&key("news")).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let ack = js
        .publish("sbtest.room.chat.news", r#"{"data":"hello"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, a.stream_name(NS));
    let m = recv(&mut sub).await;
    assert_eq!(
        (m.seq, m.data.clone(), m.from.clone()),
        (ack.sequence, Payload::Json("hello".into()), None)
    );
    assert!(m.ts_ms > 0, "the stream's timestamp fills a missing ts");
    assert_eq!(
        seqs(&a.replay(&key("news"), &before).await.unwrap()),
        vec![ack.sequence]
    );
}

#[tokio::test]
async fn names_outside_the_subject_alphabet_are_refused() {
    let server = NatsServer::start();
    let a = pod(&server, 100).await;
    let bad = RoomKey {
        namespace: NS.into(),
        room: "a.b".into(),
    };
    assert!(matches!(a.subscribe(&bad).await, Err(BusError::Other(_))));
    assert!(matches!(
        a.configure("x y", None).await,
        Err(BusError::Other(_))
    ));
    let p = Publish {
        key: bad,
        from: None,
        data: Payload::Json(1.into()),
        ephemeral: false,
        origin_conn: None,
    };
    assert!(matches!(a.publish(p).await, Err(BusError::Other(_))));
}

fn member(conn: &str, user: &str) -> Member {
    Member {
        conn: conn.into(),
        user: Some(user.into()),
        info: serde_json::json!({"name": user}),
    }
}

#[tokio::test]
async fn presence_is_shared_across_pods_with_join_and_leave_events() {
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 100).await, pod(&server, 100).await);
    let room = key("team:1");
    let mut on_a = a.subscribe(&room).await.unwrap();
    let (alice, bob) = (member("b-1", "alice"), member("a-1", "bob"));
    b.presence_set(&room, &alice, true).await.unwrap();
    b.presence_set(&room, &alice, true).await.unwrap(); // a refresh: no second join event
    a.presence_set(&room, &bob, true).await.unwrap();
    for want in [&alice, &bob] {
        let ev = tokio::time::timeout(WITHIN, on_a.presence.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ev.joined, &ev.member, &ev.key), (true, want, &room));
    }
    assert_eq!(
        a.presence_list(&room).await.unwrap(),
        vec![bob.clone(), alice.clone()]
    );
    assert!(a.presence_list(&key("elsewhere")).await.unwrap().is_empty());

    b.presence_set(&room, &alice, false).await.unwrap();
    let ev = tokio::time::timeout(WITHIN, on_a.presence.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ev.joined, ev.member), (false, alice));
    assert_eq!(b.presence_list(&room).await.unwrap(), vec![bob]);
}

/// The pods of a rollout start together and declare the same streams at the same moment: the
/// one whose create came while another's was under way must get that stream, not the server's
/// "subjects overlap with an existing stream" (a document editor was closed 1013 for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_declaring_the_same_stream_at_the_same_moment_all_get_it() {
    use async_nats::jetstream::{self, stream};
    use switchboard_gateway::rooms::bus::nats::streams;
    let server = NatsServer::start();
    let mut pods = Vec::new();
    for _ in 0..24 {
        let client = async_nats::connect(server.url()).await.unwrap();
        pods.push(jetstream::new(client));
    }
    let mut failed = Vec::new();
    for round in 0..40 {
        let config = |kind: &str| stream::Config {
            name: format!("{kind}{round}"),
            subjects: vec![format!("{kind}{round}.>")],
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        };
        // A crashed server answers nothing: the round times out instead of hanging the test.
        let (got, declared) = tokio::time::timeout(
            WITHIN,
            futures_util::future::join(
                futures_util::future::join_all(
                    pods.iter()
                        .map(|js| streams::get_or_create(js, config("G"))),
                ),
                futures_util::future::join_all(
                    pods.iter()
                        .map(|js| streams::create_or_update(js, config("U"))),
                ),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the server stopped answering (crashed?)"));
        let errors = got
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()));
        let errors = errors.chain(
            declared
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string())),
        );
        failed.extend(errors.map(|e| format!("round {round}: {e}")));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[tokio::test]
async fn members_of_a_crashed_pod_disappear_within_the_presence_ttl() {
    let server = NatsServer::start();
    let ttl = Duration::from_secs(2);
    let a = NatsBus::connect(&config(&server, "2s")).await.unwrap();
    let crashed = NatsBus::connect(&config(&server, "2s")).await.unwrap();
    wait_healthy(&a).await;
    wait_healthy(&crashed).await;
    let room = key("r");
    a.presence_set(&room, &member("a-1", "stays"), true)
        .await
        .unwrap();
    crashed
        .presence_set(&room, &member("c-1", "gone"), true)
        .await
        .unwrap();
    let announced = Instant::now();
    assert_eq!(a.presence_list(&room).await.unwrap().len(), 2);
    drop(crashed); // no withdrawal, no more refreshes

    // `a` keeps refreshing its own member every ttl/3, as the hub does.
    let deadline = announced + 3 * ttl;
    loop {
        a.presence_set(&room, &member("a-1", "stays"), true)
            .await
            .unwrap();
        let list = a.presence_list(&room).await.unwrap();
        if list == vec![member("a-1", "stays")] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "crashed member still listed after {:?}: {list:?}",
            announced.elapsed()
        );
        tokio::time::sleep(ttl / 3).await;
    }
    eprintln!(
        "crashed member gone {:?} after its last refresh (ttl {ttl:?})",
        announced.elapsed()
    );
}

#[tokio::test]
async fn a_gateway_starts_while_nats_is_down_and_recovers_when_it_returns() {
    let mut server = NatsServer::start();
    server.stop();
    let bus = NatsBus::connect(&config(&server, "15s"))
        .await
        .expect("connect does not wait for NATS");
    assert!(!bus.healthy());
    let ret = Retention {
        max_messages: 10,
        max_age: Duration::from_secs(60),
        max_bytes: None,
    };
    // Recorded, not refused (and nothing to log as an error): it applies once NATS is up.
    bus.configure(NS, Some(ret))
        .await
        .expect("history is configured once NATS is connected");
    assert!(matches!(
        bus.publish(msg("a", 1)).await,
        Err(BusError::Unavailable(_))
    ));
    server.start_again();
    wait_healthy(&bus).await;
    // The retention recorded while NATS was down applies as soon as the connection is up: the
    // stream exists before any operation needs it.
    let js = async_nats::jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("a client of our own"),
    );
    let stream = bus.stream_name(NS);
    support::eventually("the history stream to be created", WITHIN, || {
        let js = js.clone();
        let stream = stream.clone();
        async move { js.get_stream(&stream).await.is_ok() }
    })
    .await;
    let pos = publish(&bus, "a", 2).await;
    assert_eq!(
        seqs(
            &bus.replay(
                &key("a"),
                &Position {
                    seq: 0,
                    epoch: pos.epoch.clone()
                }
            )
            .await
            .unwrap()
        ),
        vec![pos.seq]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_publishes_survive_a_nats_restart_exactly_once_and_in_order() {
    let mut server = NatsServer::start();
    let (a, b) = (Arc::new(pod(&server, 1000).await), pod(&server, 1000).await);
    let mut sub = b.subscribe(&key("r")).await.unwrap();
    let epoch = a.position(&key("r")).await.unwrap().epoch;

    // A publisher that never stops: before, during and after the outage.
    let acked_count = Arc::new(AtomicUsize::new(0));
    let failed_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (a, acked_count, failed_count, stop) = (
            a.clone(),
            acked_count.clone(),
            failed_count.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut acked: Vec<(u64, i64, String)> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                // Bounded by the bus (OP_TIMEOUT); a hang would trip this outer limit.
                let r = tokio::time::timeout(Duration::from_secs(10), a.publish(msg("r", n)))
                    .await
                    .expect("publish hung");
                match r {
                    Ok(Some(pos)) => {
                        acked.push((pos.seq, n, pos.epoch));
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(None) => panic!("stored publish without a position"),
                    Err(_) => {
                        failed_count.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                n += 1;
            }
            acked
        })
    };
    let wait_for = |count: &Arc<AtomicUsize>, at_least: usize| {
        let count = count.clone();
        async move {
            let deadline = Instant::now() + WITHIN;
            while count.load(Ordering::SeqCst) < at_least {
                assert!(
                    Instant::now() < deadline,
                    "stuck at {} (want {at_least})",
                    count.load(Ordering::SeqCst)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    wait_for(&acked_count, 30).await;
    tokio::task::block_in_place(|| server.kill());
    // Publishes during the outage fail and are not acknowledged. (The publisher is serial:
    // once one failed, the ones in flight when the server went away are settled.)
    wait_for(&failed_count, 1).await;
    let acked_before = acked_count.load(Ordering::SeqCst);
    wait_for(&failed_count, 5).await;
    assert_eq!(
        acked_count.load(Ordering::SeqCst),
        acked_before,
        "acknowledged while NATS was down"
    );
    assert!(!a.healthy() && !b.healthy());
    tokio::task::block_in_place(|| server.start_again());
    wait_for(&acked_count, acked_before + 30).await;
    stop.store(true, Ordering::SeqCst);
    let acked = publisher.await.unwrap();
    let failed = failed_count.load(Ordering::SeqCst);
    assert!(
        acked.iter().all(|(_, _, e)| *e == epoch),
        "the stream (and its epoch) survived the restart"
    );

    // Every acknowledged message arrives exactly once, in order (unacknowledged ones may too).
    let mut delivered: Vec<RoomMessage> = Vec::new();
    let last = acked.last().unwrap().0;
    while delivered.last().is_none_or(|m| m.seq < last) {
        delivered.push(recv(&mut sub).await);
    }
    assert!(
        delivered.windows(2).all(|w| w[0].seq < w[1].seq),
        "out of order or duplicated"
    );
    let losses: Vec<_> = acked
        .iter()
        .filter(|(seq, ..)| !delivered.iter().any(|m| m.seq == *seq))
        .collect();
    assert!(losses.is_empty(), "lost acknowledged messages: {losses:?}");
    for (seq, n, _) in &acked {
        let m = delivered.iter().find(|m| m.seq == *seq).unwrap();
        assert_eq!((number(m), &m.epoch), (*n, &epoch));
    }
    eprintln!(
        "acked {}, failed {failed}, delivered {} (stored without an ack: {})",
        acked.len(),
        delivered.len(),
        delivered.len() - acked.len()
    );
    // History is intact too: a client resuming from before the outage gets every message.
    let since = Position {
        seq: acked[10].0,
        epoch,
    };
    let gap = b.replay(&key("r"), &since).await.unwrap();
    assert_eq!(
        seqs(&gap),
        delivered
            .iter()
            .map(|m| m.seq)
            .filter(|s| *s > since.seq)
            .collect::<Vec<_>>()
    );
}

/// NATS restarted with empty JetStream storage (an `emptyDir`, a lost volume): the history
/// stream is recreated (a new epoch) and its sequences start again at 1, far below where the
/// old stream was. A member that stayed subscribed on another pod gets every publish
/// acknowledged on the new stream, in order, with the new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_pod_gets_every_publish_acknowledged_after_nats_lost_its_storage() {
    let mut server = NatsServer::start();
    let (a, b) = (pod(&server, 1000).await, pod(&server, 1000).await);
    let mut sub = b.subscribe(&key("r")).await.unwrap();
    let old = publish(&a, "r", -1).await;
    assert_eq!(recv(&mut sub).await.seq, old.seq);
    // The old stream's sequence runs ahead of everything the new one reaches in this test.
    for n in 0..50 {
        publish(&a, "filler", n).await;
    }
    tokio::task::block_in_place(|| {
        server.kill();
        server.wipe_store();
        server.start_again();
    });
    let since = Instant::now();
    let mut acked = Vec::new();
    for n in 0..10 {
        let pos = retried("a publish after the loss", since, || a.publish(msg("r", n))).await;
        acked.push((pos.expect("a stored publish has a position"), n));
    }
    let epoch = acked[0].0.epoch.clone();
    assert_ne!(epoch, old.epoch, "the recreated stream has a new epoch");
    assert!(acked.iter().all(|(p, _)| p.epoch == epoch));

    // Unacknowledged publishes may have been stored too: collect up to the last acked one.
    let last = acked.last().unwrap().0.seq;
    let mut delivered: Vec<RoomMessage> = Vec::new();
    while delivered
        .last()
        .is_none_or(|m| m.epoch != epoch || m.seq < last)
    {
        delivered.push(recv(&mut sub).await);
    }
    assert!(
        delivered.iter().all(|m| m.epoch == epoch),
        "a message of the new stream under the old epoch: {delivered:?}"
    );
    assert!(
        delivered.windows(2).all(|w| w[0].seq < w[1].seq),
        "out of order or duplicated"
    );
    for (pos, n) in &acked {
        let m = delivered.iter().find(|m| m.seq == pos.seq);
        assert_eq!(
            m.map(number),
            Some(*n),
            "acknowledged at {pos:?}, not delivered"
        );
    }
}

/// After NATS lost its storage, a pod that did not recreate the history stream itself still
/// acknowledges with the epoch of the stream that stored the message, never the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_nats_lost_its_storage_every_pod_acks_with_the_new_streams_epoch() {
    let mut server = NatsServer::start();
    let (a, b) = (pod(&server, 1000).await, pod(&server, 1000).await);
    let old = publish(&a, "e", 1).await;
    assert_eq!(publish(&b, "e", 2).await.epoch, old.epoch);
    tokio::task::block_in_place(|| {
        server.kill();
        server.wipe_store();
        server.start_again();
    });
    let since = Instant::now();
    let on_a = retried("a publish on a", since, || a.publish(msg("e", 3))).await;
    let on_b = retried("a publish on b", since, || b.publish(msg("e", 4))).await;

    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut stream = js.get_stream(b.stream_name(NS)).await.unwrap();
    let created = stream
        .info()
        .await
        .unwrap()
        .created
        .unix_timestamp_nanos()
        .to_string();
    assert_ne!(created, old.epoch, "the stream was recreated");
    assert_eq!(on_a.map(|p| p.epoch), Some(created.clone()));
    assert_eq!(
        on_b.map(|p| p.epoch),
        Some(created.clone()),
        "pod b acked with a stale epoch"
    );
    assert_eq!(b.position(&key("e")).await.unwrap().epoch, created);
}

/// A `tracing` writer into a shared buffer: what the bus logs from the test's own task.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_replicas_history_survives_losing_the_server_that_leads_its_stream() {
    // The operations below run in this test's task: what they log lands here.
    let log = LogBuffer::default();
    let writer = log.clone();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let mut servers = NatsServer::cluster(3).await;
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    let cfg: switchboard_config::Nats = serde_json::from_value(serde_json::json!({
        "urls": urls,
        "subjectPrefix": "sbtest",
        // Longer than the test: the member below is never refreshed and must not expire.
        "presenceTtl": "120s",
        "replicas": 3,
    }))
    .expect("nats config");
    let bus = NatsBus::connect(&cfg).await.expect("connect");
    wait_healthy(&bus).await;
    bus.configure(
        NS,
        Some(Retention {
            max_messages: 100,
            max_age: Duration::from_secs(600),
            max_bytes: None,
        }),
    )
    .await
    .expect("configure");
    let room = key("doc");
    let mut sent = Vec::new();
    for n in 1..=5 {
        sent.push(publish(&bus, "doc", n).await);
    }
    bus.presence_set(&room, &member("a-1", "alice"), true)
        .await
        .expect("presence");

    // JetStream keeps both on three servers.
    let js = async_nats::jetstream::new(
        async_nats::connect(
            urls.iter()
                .map(|u| u.parse::<async_nats::ServerAddr>().expect("url"))
                .collect::<Vec<_>>(),
        )
        .await
        .expect("client"),
    );
    let mut leader = String::new();
    for stream in ["SBTEST_chat", "KV_SBTEST_presence"] {
        let info = js
            .get_stream(stream)
            .await
            .unwrap_or_else(|e| panic!("stream {stream}: {e}"))
            .info()
            .await
            .expect("stream info")
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{stream}");
        let placement = info.cluster.expect("clustered stream");
        assert_eq!(placement.replicas.len(), 2, "{stream}: {placement:?}");
        if stream == "SBTEST_chat" {
            leader = placement.leader.expect("a stream leader");
        }
    }

    // The server leading the history stream crashes.
    servers
        .iter_mut()
        .find(|s| s.name() == leader)
        .unwrap_or_else(|| panic!("leader {leader:?} is one of ours"))
        .kill();

    // Once the other two have elected a new leader, the whole history is still there and new
    // publishes are stored after it (a replay is retried while the election runs).
    let killed = Instant::now();
    let since = Position {
        seq: 0,
        epoch: sent[0].epoch.clone(),
    };
    let replay = retried(&format!("a replay after losing {leader}"), killed, || {
        bus.replay(&room, &since)
    })
    .await;
    let Replay::Gap(gap) = replay else {
        panic!("the history was lost with {leader}: {replay:?}")
    };
    assert_eq!(gap.iter().map(number).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(
        gap.iter().map(|m| m.seq).collect::<Vec<_>>(),
        sent.iter().map(|p| p.seq).collect::<Vec<_>>()
    );
    let after = publish(&bus, "doc", 6).await;
    assert_eq!(after.epoch, sent[0].epoch, "the same stream, not a new one");
    assert!(after.seq > sent[4].seq);
    // The presence bucket (a memory stream, also R3) elects its own leader.
    let members = retried(
        &format!("a presence listing after losing {leader}"),
        killed,
        || bus.presence_list(&room),
    )
    .await;
    assert_eq!(members, [member("a-1", "alice")]);
    // The election was waited out, not taken for a lost stream.
    let log = log.text();
    assert!(!log.contains("history stream missing"), "{log}");
}

/// `op` retried every 200 ms until it succeeds (a JetStream stream electing a new leader
/// answers nothing meanwhile: each try then ends in a 4 s API timeout), for at most
/// `4 × WITHIN` after `since`; prints how long it took.
async fn retried<T, F, Fut>(what: &str, since: Instant, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    loop {
        match op().await {
            Ok(v) => {
                println!("{what}: after {:?}", since.elapsed());
                return v;
            }
            Err(e) => assert!(
                since.elapsed() < WITHIN * 4,
                "no {what} within {:?}: {e}",
                WITHIN * 4
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A room's pump runs where the NATS client runs (the edge runtime), whichever runtime
/// subscribed: it must not live and die with that runtime.
#[test]
fn a_room_subscribed_from_another_runtime_keeps_receiving_after_that_runtime_ends() {
    let server = NatsServer::start();
    let edge = support::runtime(2);
    let bus = edge.block_on(pod(&server, 100));
    let other = support::runtime(0);
    let mut sub = other.block_on(bus.subscribe(&key("elsewhere"))).unwrap();
    drop(other);
    edge.block_on(async {
        publish(&bus, "elsewhere", 7).await;
        let got = tokio::time::timeout(WITHIN, sub.messages.recv())
            .await
            .expect("the pump died with the runtime that subscribed")
            .expect("a delivery");
        assert_eq!(
            got.into_message().map(|m| m.data),
            Some(Payload::Json(7.into()))
        );
    });
}

#[tokio::test]
async fn one_users_read_positions_are_bounded_on_nats_without_forgetting_anyone_elses() {
    // The reads bucket had no bound: one user marking read in room after room created 20,000
    // keys in two minutes (and `/v1/reads` read every one of them).
    use switchboard_gateway::rooms::receipts::MAX_READS_PER_USER;
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 10).await, pod(&server, 10).await);
    let (ra, rb) = (a.reads().unwrap(), b.reads().unwrap());
    let at = |seq| Position {
        seq,
        epoch: "e".into(),
    };
    let room = |n: usize| key(&format!("r{n:05}"));
    ra.mark(&room(0), "bob", &at(1)).await.unwrap();
    for n in 0..MAX_READS_PER_USER {
        // Both pods write: the bound is the bucket's, not one pod's.
        let pod = if n % 2 == 0 { &ra } else { &rb };
        pod.mark(&room(n), "mallory", &at(1)).await.unwrap();
    }
    // Raising r0 makes it mallory's most recent; r1 is then her oldest.
    tokio::time::sleep(Duration::from_millis(5)).await;
    ra.mark(&room(0), "mallory", &at(2)).await.unwrap();
    for n in MAX_READS_PER_USER..MAX_READS_PER_USER + 20 {
        rb.mark(&room(n), "mallory", &at(1)).await.unwrap();
    }
    let listed = ra.of_user(NS, "mallory", usize::MAX).await.unwrap();
    assert_eq!(listed.len(), MAX_READS_PER_USER);
    assert_eq!(ra.get(&room(1), "mallory").await.unwrap(), None);
    assert_eq!(ra.get(&room(0), "mallory").await.unwrap(), Some(at(2)));
    assert_eq!(rb.get(&room(0), "bob").await.unwrap(), Some(at(1)));
}

#[tokio::test]
async fn a_user_already_over_the_read_position_bound_is_brought_under_it_within_a_few_marks() {
    // Positions written before the bound existed (or by pods without it): each mark used to
    // forget one key per new room, so such a user stayed over the bound for good.
    use switchboard_gateway::rooms::receipts::MAX_READS_PER_USER;
    let server = NatsServer::start();
    let a = pod(&server, 10).await;
    let reads = a.reads().unwrap();
    let at = |seq| Position {
        seq,
        epoch: "e".into(),
    };
    reads.mark(&key("r00000"), "mallory", &at(1)).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let bucket = async_nats::jetstream::new(client)
        .get_key_value("SBTEST_reads")
        .await
        .unwrap();
    for n in 1..MAX_READS_PER_USER + 100 {
        let room = format!("r{n:05}");
        let value = serde_json::json!({"room": room, "seq": 1, "epoch": "e"}).to_string();
        bucket
            .put(format!("{NS}.mallory.{room}"), value.into())
            .await
            .unwrap();
    }
    let listed = reads.of_user(NS, "mallory", usize::MAX).await.unwrap();
    assert_eq!(listed.len(), MAX_READS_PER_USER + 100);
    for n in 0..4 {
        reads
            .mark(&key(&format!("new{n}")), "mallory", &at(1))
            .await
            .unwrap();
    }
    let listed = reads.of_user(NS, "mallory", usize::MAX).await.unwrap();
    assert_eq!(listed.len(), MAX_READS_PER_USER);
    assert!(listed.iter().any(|(r, _)| r == "new3"));
    assert!(
        !listed.iter().any(|(r, _)| r == "r00000"),
        "the oldest went first"
    );
}

/// Counts what a read hands over and checks it comes in order, holding no message.
#[derive(Default)]
struct Counted {
    n: usize,
    last: u64,
    bytes: usize,
}

impl Sink for Counted {
    fn take(&mut self, msg: std::borrow::Cow<'_, RoomMessage>) -> bool {
        assert!(
            msg.seq > self.last,
            "out of order: {} after {}",
            msg.seq,
            self.last
        );
        self.last = msg.seq;
        self.n += 1;
        if let Payload::Binary(b) = &msg.data {
            self.bytes += b.len();
        }
        true
    }
    fn reset(&mut self) {
        *self = Counted::default();
    }
}

async fn publish_binary(bus: &NatsBus, room: &str, size: usize) -> Position {
    stored(
        bus,
        Publish {
            data: Payload::Binary(vec![7u8; size].into()),
            ..msg(room, 0)
        },
    )
    .await
}

/// What nats-server lets wait for one client before it cuts the client off as a slow consumer,
/// in the servers of the two tests below: a quarter of its default (64 MiB), so the tests need
/// a quarter of the data to show what a pod's reads put in flight.
const MAX_PENDING: &str = "max_pending: 16777216";

#[tokio::test]
async fn a_resume_through_large_messages_reads_them_all_without_the_server_cutting_the_pod_off() {
    // Pulled 256 messages at a time with no byte bound, one resume of a room of 150 × 700 KB
    // asked for ~180 MB at once: a pod busy for a moment (here: the one thread its NATS client
    // runs on, blocked by the reader) left it queued in nats-server, which cut the pod off as a
    // slow consumer (past its MaxPending); the join answered `unavailable` and the pod's
    // publishes failed meanwhile.
    let server = NatsServer::start_with_config(MAX_PENDING);
    let (a, b) = (pod(&server, 1_000).await, pod(&server, 1_000).await);
    let first = publish_binary(&a, "big", 700 * 1024).await;
    for _ in 1..30 {
        publish_binary(&a, "big", 700 * 1024).await;
    }
    let connects = b.client().statistics().connects.load(Ordering::Relaxed);
    let mut read = Busy(Counted::default());
    let replayed = b.replay_into(&key("big"), &first, &mut read).await;
    assert_eq!(
        (replayed.map_err(|e| e.to_string()), read.0.n, read.0.bytes),
        (Ok(Replayed::Gap), 29, 29 * 700 * 1024)
    );
    assert_eq!(
        b.client().statistics().connects.load(Ordering::Relaxed),
        connects,
        "the pod lost its NATS connection during the read:\n{}",
        server.log_tail()
    );
}

/// A reader that keeps its thread busy for a while at every 10th message.
struct Busy(Counted);

impl Sink for Busy {
    fn take(&mut self, msg: std::borrow::Cow<'_, RoomMessage>) -> bool {
        if self.0.n.is_multiple_of(10) {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.0.take(msg)
    }
    fn reset(&mut self) {
        self.0.reset();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_resumes_of_a_large_room_all_complete_and_the_pod_stays_connected() {
    // 50 concurrent resumes of a 4,000 × 10 KB room disconnected a gateway pod twice (20-24
    // joins `unavailable`): every read had a 256-message pull in flight at once. Here 40
    // resumes of 40 × 64 KB against a quarter of the server's default MaxPending (this failed
    // before with "Slow Consumer Detected").
    let server = NatsServer::start_with_config(MAX_PENDING);
    let (a, b) = (
        pod(&server, 1_000).await,
        Arc::new(pod(&server, 1_000).await),
    );
    let first = publish_binary(&a, "wide", 64 * 1024).await;
    for _ in 1..40 {
        publish_binary(&a, "wide", 64 * 1024).await;
    }
    let connects = b.client().statistics().connects.load(Ordering::Relaxed);
    let reads = (0..40).map(|_| {
        let (b, first) = (b.clone(), first.clone());
        tokio::spawn(async move {
            let mut read = Counted::default();
            let replayed = b.replay_into(&key("wide"), &first, &mut read).await;
            (replayed.map_err(|e| e.to_string()), read.n)
        })
    });
    for read in futures_util::future::join_all(reads).await {
        assert_eq!(
            read.unwrap(),
            (Ok(Replayed::Gap), 39),
            "{}",
            server.log_tail()
        );
    }
    assert_eq!(
        b.client().statistics().connects.load(Ordering::Relaxed),
        connects,
        "the pod lost its NATS connection during the reads:\n{}",
        server.log_tail()
    );
}

#[tokio::test]
async fn a_read_through_messages_the_room_limit_drops_while_it_reads_ends_when_the_room_is_read() {
    // nats-server 2.9 does not lower a consumer's pending count for messages removed before it
    // delivers them: the last message of this read says 2 more are pending (seen in its ack
    // subject), so the read must neither end on it nor wait for messages that will not come.
    let server = NatsServer::start();
    let (a, b) = (pod(&server, 6).await, pod(&server, 6).await);
    for _ in 0..6 {
        publish_binary(&a, "churn", 600 * 1024).await;
    }
    // Another pod publishes three more while this one is busy with the first message: the
    // room's limit drops two it has not read yet.
    let (busy, published) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
    let url = server.url();
    let other = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let c = pod_at(&url, 6).await;
                busy.1.recv_timeout(WITHIN).unwrap();
                for _ in 0..3 {
                    publish_binary(&c, "churn", 600 * 1024).await;
                }
                published.0.send(()).unwrap();
            })
    });
    let mut read = Paused {
        read: Counted::default(),
        busy: Some(busy.0),
        published: published.1,
    };
    let position = b.retained_into(&key("churn"), &mut read).await;
    other.join().unwrap();
    position.expect("the read completes");
    // The first message, the three the limit kept, the three published meanwhile.
    assert_eq!((read.read.n, read.read.last), (7, 9));
}

/// A reader that, at its first message, lets another thread act and waits until it has.
struct Paused {
    read: Counted,
    busy: Option<std::sync::mpsc::Sender<()>>,
    published: std::sync::mpsc::Receiver<()>,
}

impl Sink for Paused {
    fn take(&mut self, msg: std::borrow::Cow<'_, RoomMessage>) -> bool {
        if let Some(busy) = self.busy.take() {
            busy.send(()).unwrap();
            self.published.recv_timeout(WITHIN).unwrap();
        }
        self.read.take(msg)
    }
    fn reset(&mut self) {
        self.read.reset();
    }
}

#[tokio::test]
async fn a_read_passes_messages_larger_than_a_pulls_usual_bound_one_pull_each() {
    // A server with a larger max_payload: pulls stay at about 1 MiB (what the server may queue
    // for the pod's reads does not grow with max_payload), and a message larger than that is
    // fetched by a pull of its own.
    let server = NatsServer::start_with_config("max_payload: 4194304");
    let (a, b) = (pod(&server, 100).await, pod(&server, 100).await);
    let first = publish_binary(&a, "mixed", 10).await;
    for size in [2 << 20, 100, 2 << 20, 2 << 20, 500 << 10, 10] {
        publish_binary(&a, "mixed", size).await;
    }
    let mut read = Counted::default();
    assert_eq!(
        b.replay_into(&key("mixed"), &first, &mut read)
            .await
            .unwrap(),
        Replayed::Gap
    );
    assert_eq!(
        (read.n, read.bytes),
        (6, 3 * (2 << 20) + 100 + (500 << 10) + 10)
    );
}
