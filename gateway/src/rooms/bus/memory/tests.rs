use super::*;
use crate::rooms::bus::Payload;
use crate::rooms::bus::{Replay, Replayed, Sink};
use std::time::Duration;

fn key(room: &str) -> RoomKey {
    RoomKey {
        namespace: "ns".into(),
        room: room.into(),
    }
}

/// A publish of an 8 KiB text into `room` (the byte bound's tests).
fn big(room: &str) -> Publish {
    Publish {
        data: Payload::Text("x".repeat(8 * 1024)),
        ..publish(room, 0)
    }
}

fn publish(room: &str, n: i64) -> Publish {
    Publish {
        key: key(room),
        from: None,
        data: Payload::Json(n.into()),
        ephemeral: false,
        origin_conn: None,
    }
}

async fn bus_with(retention: Retention) -> MemoryBus {
    let bus = MemoryBus::new();
    bus.configure("ns", Some(retention)).await.unwrap();
    bus
}

async fn bus_with_history(max: u32) -> MemoryBus {
    bus_with(Retention {
        max_messages: max,
        max_age: Duration::from_secs(60),
        max_bytes: None,
    })
    .await
}

/// 100 messages a room for 10 minutes, the namespace's history bounded at `max_bytes`.
fn bytes_bound(max_bytes: u64) -> Retention {
    Retention {
        max_messages: 100,
        max_age: Duration::from_secs(600),
        max_bytes: Some(max_bytes),
    }
}

#[tokio::test]
async fn subscribers_get_messages_in_position_order() {
    let bus = bus_with_history(10).await;
    let mut sub = bus.subscribe(&key("a")).await.unwrap();
    for n in 0..5 {
        bus.publish(publish("a", n)).await.unwrap();
    }
    for want in 1..=5 {
        assert_eq!(
            sub.messages
                .recv()
                .await
                .unwrap()
                .into_message()
                .unwrap()
                .seq,
            want
        );
    }
}

#[tokio::test]
async fn replay_returns_exactly_the_gap() {
    let bus = bus_with_history(10).await;
    let mut last = None;
    for n in 0..6 {
        last = bus.publish(publish("a", n)).await.unwrap();
    }
    let epoch = last.unwrap().epoch;
    match bus
        .replay(&key("a"), &Position { seq: 3, epoch })
        .await
        .unwrap()
    {
        Replay::Gap(msgs) => assert_eq!(
            msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![4, 5, 6]
        ),
        Replay::Lost => panic!("gap is retained"),
    }
}

#[tokio::test]
async fn replay_past_retention_or_from_another_epoch_is_lost() {
    let bus = bus_with_history(3).await;
    let mut epoch = String::new();
    for n in 0..10 {
        epoch = bus.publish(publish("a", n)).await.unwrap().unwrap().epoch;
    }
    assert_eq!(
        bus.replay(
            &key("a"),
            &Position {
                seq: 2,
                epoch: epoch.clone()
            }
        )
        .await
        .unwrap(),
        Replay::Lost
    );
    assert!(
        matches!(bus.replay(&key("a"), &Position { seq: 7, epoch }).await.unwrap(), Replay::Gap(m) if m.len() == 3)
    );
    assert_eq!(
        bus.replay(
            &key("a"),
            &Position {
                seq: 7,
                epoch: "other".into()
            }
        )
        .await
        .unwrap(),
        Replay::Lost
    );
}

#[tokio::test]
async fn retained_is_what_history_still_holds_of_the_current_epoch() {
    let bus = bus_with_history(3).await;
    assert_eq!(
        bus.retained(&key("a")).await.unwrap(),
        (
            vec![],
            Position {
                seq: 0,
                epoch: bus.epoch.clone()
            }
        )
    );
    for n in 0..5 {
        bus.publish(publish("a", n)).await.unwrap();
    }
    let (msgs, position) = bus.retained(&key("a")).await.unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(
        position,
        Position {
            seq: 5,
            epoch: bus.epoch.clone()
        }
    );
}

#[tokio::test]
async fn ephemeral_messages_are_delivered_but_never_stored() {
    let bus = bus_with_history(10).await;
    let mut sub = bus.subscribe(&key("a")).await.unwrap();
    let mut p = publish("a", 1);
    p.ephemeral = true;
    assert_eq!(bus.publish(p).await.unwrap(), None);
    assert!(
        sub.messages
            .recv()
            .await
            .unwrap()
            .into_message()
            .unwrap()
            .ephemeral
    );
    let pos = bus.position(&key("a")).await.unwrap();
    assert_eq!(pos.seq, 0);
    assert_eq!(
        bus.replay(&key("a"), &pos).await.unwrap(),
        Replay::Gap(vec![])
    );
}

#[tokio::test]
async fn notifications_are_refused_because_nothing_outside_the_process_can_listen() {
    let bus = MemoryBus::new();
    let err = bus
        .notify("ns", Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Other(_)), "{err}");
}

#[tokio::test]
async fn presence_lists_members_and_announces_changes() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe(&key("a")).await.unwrap();
    let m = Member {
        conn: "c1".into(),
        user: Some("alice".into()),
        info: serde_json::Value::Null,
    };
    bus.presence_set(&key("a"), &m, true).await.unwrap();
    bus.presence_set(&key("a"), &m, true).await.unwrap();
    assert_eq!(bus.presence_list(&key("a")).await.unwrap(), vec![m.clone()]);
    assert!(sub.presence.recv().await.unwrap().joined);
    bus.presence_set(&key("a"), &m, false).await.unwrap();
    assert!(!sub.presence.recv().await.unwrap().joined);
    assert!(bus.presence_list(&key("a")).await.unwrap().is_empty());
}
async fn bus_with_age(max_age: Duration) -> MemoryBus {
    bus_with(Retention {
        max_messages: 10,
        max_age,
        max_bytes: None,
    })
    .await
}

#[tokio::test]
async fn a_room_nobody_holds_costs_nothing() {
    let bus = bus_with_history(10).await;
    let sub = bus.subscribe(&key("a")).await.unwrap();
    assert_eq!(bus.room_count(), 1);
    drop(sub);
    assert_eq!(
        bus.room_count(),
        0,
        "the last subscriber leaving frees the room"
    );

    let m = Member {
        conn: "c1".into(),
        user: None,
        info: serde_json::Value::Null,
    };
    bus.presence_set(&key("b"), &m, true).await.unwrap();
    bus.presence_set(&key("b"), &m, false).await.unwrap();
    bus.presence_set(&key("c"), &m, false).await.unwrap();
    assert_eq!(
        bus.room_count(),
        0,
        "presence comes and goes without a trace"
    );

    let none = MemoryBus::new();
    let sub = none.subscribe(&key("d")).await.unwrap();
    none.publish(publish("d", 1)).await.unwrap();
    drop(sub);
    assert_eq!(none.room_count(), 0, "no history: nothing is retained");
}

#[tokio::test]
async fn expired_history_is_freed_by_the_sweep_without_a_publish() {
    let bus = bus_with_age(Duration::from_secs(1)).await;
    for r in 0..50 {
        bus.publish(publish(&format!("r{r}"), 1)).await.unwrap();
    }
    assert_eq!(bus.room_count(), 50);
    assert_eq!(bus.sweep(now_ms(), SWEEP_BUDGET), 0, "nothing due yet");
    let later = now_ms() + 1_500;
    assert_eq!(bus.sweep(later, 20), 20, "at most the budget per call");
    assert_eq!(bus.room_count(), 30);
    bus.sweep(later, SWEEP_BUDGET);
    assert_eq!(bus.room_count(), 0);
}

#[tokio::test]
async fn a_room_still_subscribed_keeps_its_position_when_its_history_expires() {
    let bus = bus_with_age(Duration::from_secs(1)).await;
    let _sub = bus.subscribe(&key("a")).await.unwrap();
    let pos = bus.publish(publish("a", 1)).await.unwrap().unwrap();
    bus.sweep(now_ms() + 1_500, SWEEP_BUDGET);
    assert_eq!(bus.room_count(), 1);
    assert_eq!(
        bus.replay(&key("a"), &pos).await.unwrap(),
        Replay::Gap(vec![]),
        "a client at the last position missed nothing"
    );
    let before = Position {
        seq: pos.seq - 1,
        epoch: pos.epoch,
    };
    assert_eq!(
        bus.replay(&key("a"), &before).await.unwrap(),
        Replay::Lost,
        "one that had not seen the expired message did"
    );
}

#[tokio::test]
async fn another_room_freed_with_losses_does_not_make_a_quiet_rooms_resume_lost() {
    let bus = bus_with_age(Duration::from_secs(1)).await;
    let _sub = bus.subscribe(&key("quiet")).await.unwrap();
    let given = bus.position(&key("quiet")).await.unwrap();
    // Another room of the namespace keeps a message past the given position, which then
    // expires and is freed: that room lost it, this one did not.
    bus.publish(publish("busy", 1)).await.unwrap();
    bus.sweep(now_ms() + 1_500, SWEEP_BUDGET);
    bus.publish(publish("quiet", 2)).await.unwrap();
    match bus.replay(&key("quiet"), &given).await.unwrap() {
        Replay::Gap(m) => assert_eq!(m.len(), 1, "exactly the quiet room's message"),
        Replay::Lost => panic!("the quiet room lost nothing, but its resume says lost"),
    }
}

#[tokio::test]
async fn resume_into_a_freed_room_is_exact_or_reported_lost() {
    let bus = bus_with_age(Duration::from_secs(1)).await;
    // A quiet room: joined, left (freed), resumed from the position it was given.
    let sub = bus.subscribe(&key("quiet")).await.unwrap();
    let given = bus.position(&key("quiet")).await.unwrap();
    drop(sub);
    assert_eq!(bus.room_count(), 0);
    assert_eq!(
        bus.replay(&key("quiet"), &given).await.unwrap(),
        Replay::Gap(vec![])
    );
    // Published while nobody was there: the gap is exactly that message.
    bus.publish(publish("quiet", 7)).await.unwrap();
    match bus.replay(&key("quiet"), &given).await.unwrap() {
        Replay::Gap(m) => assert_eq!(m.len(), 1),
        Replay::Lost => panic!("retained"),
    }
    // Once it expired and the room was freed, a client that had not seen it lost it.
    bus.sweep(now_ms() + 1_500, SWEEP_BUDGET);
    assert_eq!(bus.room_count(), 0);
    assert_eq!(
        bus.replay(&key("quiet"), &given).await.unwrap(),
        Replay::Lost
    );
    // A position taken after that resumes exactly again, and positions never repeat.
    let now = bus.position(&key("quiet")).await.unwrap();
    assert!(now.seq > given.seq);
    let next = bus.publish(publish("quiet", 8)).await.unwrap().unwrap();
    assert!(next.seq > now.seq);
    assert!(
        matches!(bus.replay(&key("quiet"), &now).await.unwrap(), Replay::Gap(m) if m.len() == 1)
    );
}

/// Holds a room's subscription and drops it when woken, as the hub does when the room's last
/// member left just before a message arrived (the wake-up held the last reference).
struct UnsubscribesWhenWoken(Mutex<Option<Subscription>>);

impl crate::rooms::bus::feed::Consumer for UnsubscribesWhenWoken {
    fn wake(self: Arc<Self>) {
        self.0.lock().unwrap().take();
    }
}

#[tokio::test]
async fn a_room_freed_by_its_wake_up_does_not_deadlock_the_publish() {
    let bus = Arc::new(MemoryBus::new());
    let sub = bus.subscribe(&key("a")).await.unwrap();
    let consumer = Arc::new(UnsubscribesWhenWoken(Mutex::new(None)));
    let weak: Weak<dyn crate::rooms::bus::feed::Consumer> = Arc::downgrade(&consumer) as _;
    sub.messages.set_consumer(weak);
    *consumer.0.lock().unwrap() = Some(sub);
    let b = bus.clone();
    let (done, finished) = std::sync::mpsc::channel();
    // On a thread of its own (detached): a deadlock shows as a timeout, not as a hung test.
    std::thread::spawn(move || {
        let published = futures_util::FutureExt::now_or_never(b.publish(publish("a", 1)));
        let _ = done.send(published.is_some());
    });
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(5)),
        Ok(true),
        "the publish finished: no wake-up under the bus's lock"
    );
    assert!(
        consumer.0.lock().unwrap().is_none(),
        "woken and unsubscribed"
    );
    assert_eq!(bus.room_count(), 0, "the room was freed");
}

/// One client publishing into ever new rooms held every message until `maxAge` (the probe:
/// 512 KiB messages, one room each, 44 → 502 MiB in 20 s): the namespace's history is bounded
/// in bytes, its oldest messages going first whichever room holds them.
#[tokio::test]
async fn a_namespaces_history_is_bounded_in_bytes_its_oldest_messages_going_first() {
    let max_bytes = 256 * 1024;
    let bus = bus_with(bytes_bound(max_bytes)).await;
    let first = bus.publish(big("r0")).await.unwrap().unwrap();
    for r in 1..1000 {
        bus.publish(big(&format!("r{r}"))).await.unwrap();
        assert!(bus.held_bytes("ns") <= max_bytes, "after {r} rooms");
    }
    let rooms = bus.room_count();
    assert!(
        (20..40).contains(&rooms),
        "{rooms} rooms of ~8 KiB in 256 KiB"
    );
    // The oldest went, and a resume that needed them is told so; the newest are kept.
    let before_first = Position {
        seq: first.seq - 1,
        epoch: first.epoch.clone(),
    };
    assert_eq!(
        bus.replay(&key("r0"), &before_first).await.unwrap(),
        Replay::Lost
    );
    let (kept, _) = bus.retained(&key("r999")).await.unwrap();
    assert_eq!(kept.len(), 1);
    // A JSON tree is charged what it holds in memory, not its text's length.
    let tree = serde_json::Value::Array(vec![0.into(); 100_000]);
    let bus = bus_with_history(10).await;
    bus.publish(Publish {
        data: Payload::Json(tree),
        ..publish("t", 0)
    })
    .await
    .unwrap();
    assert!(
        bus.held_bytes("ns") > 100_000 * 16,
        "{}",
        bus.held_bytes("ns")
    );
    // Expiry and the sweep give it all back.
    bus.sweep(now_ms() + 120_000, SWEEP_BUDGET);
    assert_eq!(bus.held_bytes("ns"), 0);
    assert_eq!(bus.room_count(), 0);
}

/// A resume or a retained read that finds a room's history expired frees the room (nobody
/// in it): the trim there took it out of the oldest-first index, so no sweep would.
#[tokio::test]
async fn reading_a_room_whose_history_expired_frees_it() {
    for read in ["replay", "retained"] {
        let bus = bus_with_age(Duration::from_millis(30)).await;
        let pos = bus.publish(publish("a", 1)).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let before = Position {
            seq: pos.seq - 1,
            epoch: pos.epoch,
        };
        if read == "replay" {
            assert_eq!(bus.replay(&key("a"), &before).await.unwrap(), Replay::Lost);
        } else {
            assert!(bus.retained(&key("a")).await.unwrap().0.is_empty());
        }
        assert_eq!(bus.room_count(), 0, "{read}");
        assert_eq!(bus.held_bytes("ns"), 0, "{read}");
    }
}

/// A reload that lowers `maxBytes` takes effect at the next sweep, not the next publish.
#[tokio::test]
async fn the_sweep_brings_a_namespace_down_to_a_lowered_byte_bound() {
    let bus = bus_with(bytes_bound(1 << 20)).await;
    for r in 0..100 {
        bus.publish(big(&format!("r{r}"))).await.unwrap();
    }
    assert!(bus.held_bytes("ns") > 512 * 1024);
    bus.configure("ns", Some(bytes_bound(256 * 1024)))
        .await
        .unwrap();
    bus.sweep(now_ms(), SWEEP_BUDGET);
    assert!(
        bus.held_bytes("ns") <= 256 * 1024,
        "{}",
        bus.held_bytes("ns")
    );
}

/// Once history is at its `maxBytes`, rooms are freed with losses all the time: a quiet room
/// (nothing published in it) resumed as `lost` whenever any room of the namespace had been,
/// so one publisher made every client reload every room. Freed rooms are remembered by a
/// bucket of their name: a quiet room's resume is lost only if a room of its bucket (1 in
/// 4096) lost something.
#[tokio::test]
async fn rooms_freed_by_the_byte_bound_do_not_make_quiet_rooms_resume_lost() {
    let bus = bus_with(bytes_bound(64 * 1024)).await;
    let quiet: Vec<String> = (0..20).map(|i| format!("quiet{i}")).collect();
    let given = bus.position(&key("quiet0")).await.unwrap();
    for r in 0..30 {
        bus.publish(big(&format!("busy{r}"))).await.unwrap();
    }
    assert!(bus.room_count() < 30, "rooms were freed by the bound");
    let mut exact = 0;
    for q in &quiet {
        if bus.replay(&key(q), &given).await.unwrap() == Replay::Gap(vec![]) {
            exact += 1;
        }
    }
    assert!(exact >= 15, "{exact} of 20 quiet rooms resumed exactly");
    // The freed rooms themselves did lose messages after the position.
    assert_eq!(
        bus.replay(&key("busy0"), &given).await.unwrap(),
        Replay::Lost
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
async fn a_history_read_hands_messages_over_one_by_one_and_stops_when_the_sink_has_enough() {
    let bus = bus_with_history(100).await;
    let first = bus.publish(publish("a", 0)).await.unwrap().unwrap();
    for n in 1..50 {
        bus.publish(publish("a", n)).await.unwrap();
    }
    let mut sink = FirstN(Vec::new(), 3);
    assert_eq!(
        bus.replay_into(&key("a"), &first, &mut sink).await.unwrap(),
        Replayed::Gap
    );
    let seqs = |s: &FirstN| s.0.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(&sink),
        (first.seq + 1..=first.seq + 3).collect::<Vec<_>>()
    );
    let mut sink = FirstN(Vec::new(), 2);
    bus.retained_into(&key("a"), &mut sink).await.unwrap();
    assert_eq!(seqs(&sink), vec![first.seq, first.seq + 1]);
}
