use super::repair::plan;
use super::*;
use crate::rooms::bus::feed::{FeedSender, Lag};
use crate::rooms::bus::memory::MemoryBus;
use crate::rooms::bus::{PresenceEvent, Publish, Retention};
use serde_json::Value;

pub(super) fn key() -> RoomKey {
    RoomKey {
        namespace: "ns".into(),
        room: "r".into(),
    }
}

async fn setup() -> (Arc<Hub>, Arc<MemoryBus>) {
    let bus = Arc::new(MemoryBus::new());
    bus.configure(
        "ns",
        Some(Retention {
            max_messages: 100,
            max_age: Duration::from_secs(60),
            max_bytes: None,
        }),
    )
    .await
    .unwrap();
    (Hub::new(bus.clone()), bus)
}

pub(super) fn joiner(conn: &str) -> Joiner {
    Joiner {
        conn: conn.into(),
        outbox: Outbox::new(1 << 20),
        encoding: Encoding::Json,
        presence: None,
        presence_events: false,
        read: None,
        batch: None,
        gap: GapFit::Fit { extra: 0 },
    }
}

async fn publish(bus: &MemoryBus, n: i64) -> Position {
    bus.publish(Publish {
        key: key(),
        from: None,
        data: Payload::Json(n.into()),
        ephemeral: false,
        origin_conn: None,
    })
    .await
    .unwrap()
    .unwrap()
}

async fn seqs(o: &Outbox, want: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < want {
        let items = tokio::time::timeout(Duration::from_secs(2), o.take_all())
            .await
            .expect("items in time");
        for i in items {
            if let Item::Message(m) = i {
                got.push(m.seq);
            }
        }
    }
    got
}

#[tokio::test]
async fn a_message_is_encoded_once_per_encoding_not_once_per_member() {
    let (hub, bus) = setup().await;
    let members: Vec<Joiner> = ["j1", "j2", "p1", "p2"]
        .into_iter()
        .map(|c| {
            let mut j = joiner(c);
            if c.starts_with('p') {
                j.encoding = Encoding::Proto;
            }
            j
        })
        .collect();
    for j in &members {
        hub.join(&key(), j, None, None).await.unwrap();
    }
    publish(&bus, 1).await;
    let mut json_ptrs = Vec::new();
    let mut proto_ptrs = Vec::new();
    for j in &members {
        let items = tokio::time::timeout(Duration::from_secs(2), j.outbox.take_all())
            .await
            .expect("items in time");
        match (&items[..], j.encoding) {
            ([Item::Message(m)], Encoding::Json) => json_ptrs.push(m.json.as_ptr()),
            ([Item::Shared(s)], Encoding::Proto) => {
                let b = s.payload();
                let m = <proto::ServerMessage as prost::Message>::decode(b.as_ref()).unwrap();
                assert_eq!(proto::to_json(&m)["seq"], 1);
                proto_ptrs.push(b.as_ptr());
            }
            other => panic!("{other:?}"),
        }
    }
    // Shared buffers: the same allocation for every member of one encoding.
    assert_eq!(json_ptrs.len(), 2);
    assert_eq!(json_ptrs[0], json_ptrs[1]);
    assert_eq!(proto_ptrs.len(), 2);
    assert_eq!(proto_ptrs[0], proto_ptrs[1]);
}

#[tokio::test]
async fn members_receive_room_messages_in_order() {
    let (hub, bus) = setup().await;
    let a = joiner("a");
    hub.join(&key(), &a, None, None).await.unwrap();
    for n in 0..5 {
        publish(&bus, n).await;
    }
    assert_eq!(seqs(&a.outbox, 5).await, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_resuming_member_gets_exactly_the_gap_then_live() {
    let (hub, bus) = setup().await;
    let mut last = Position::default();
    for n in 0..5 {
        last = publish(&bus, n).await;
    }
    let b = joiner("b");
    let since = Position {
        seq: 2,
        epoch: last.epoch.clone(),
    };
    let joined = hub
        .join(&key(), &b, Some(&since), Some(Some("1")))
        .await
        .unwrap();
    assert!(joined.recovered);
    publish(&bus, 9).await;
    let items = b.outbox.take_all().await;
    match &items[0] {
        Item::Reply(r) => {
            let v: Value = serde_json::from_str(r).unwrap();
            assert_eq!(
                (
                    v["type"].as_str(),
                    v["recovered"].as_bool(),
                    v["id"].as_str()
                ),
                (Some("joined"), Some(true), Some("1"))
            );
        }
        other => panic!("joined first, got {other:?}"),
    }
    let mut got: Vec<u64> = items
        .iter()
        .filter_map(|i| {
            if let Item::Message(m) = i {
                Some(m.seq)
            } else {
                None
            }
        })
        .collect();
    if got.len() < 4 {
        got.extend(seqs(&b.outbox, 4 - got.len()).await);
    }
    assert_eq!(got, vec![3, 4, 5, 6]);
}

#[tokio::test]
async fn a_gap_beyond_history_is_reported_as_not_recovered() {
    let (hub, _bus) = setup().await;
    let b = joiner("b");
    let joined = hub
        .join(
            &key(),
            &b,
            Some(&Position {
                seq: 5,
                epoch: "gone".into(),
            }),
            None,
        )
        .await
        .unwrap();
    assert!(!joined.recovered);
}

#[tokio::test]
async fn the_last_member_leaving_drops_the_room_subscription() {
    let (hub, _bus) = setup().await;
    let (a, b) = (joiner("a"), joiner("b"));
    hub.join(&key(), &a, None, None).await.unwrap();
    hub.join(&key(), &b, None, None).await.unwrap();
    assert_eq!(hub.room_count().await, 1);
    hub.leave(&key(), "a").await;
    assert_eq!(hub.room_count().await, 1);
    hub.leave(&key(), "b").await;
    assert_eq!(hub.room_count().await, 0);
}

#[tokio::test]
async fn raw_members_do_not_get_their_own_messages_unless_echo() {
    let (hub, bus) = setup().await;
    let mut a = joiner("a");
    a.encoding = Encoding::Raw { echo: false };
    let mut b = joiner("b");
    b.encoding = Encoding::Raw { echo: true };
    hub.join(&key(), &a, None, None).await.unwrap();
    hub.join(&key(), &b, None, None).await.unwrap();
    for origin in ["a", "b"] {
        bus.publish(Publish {
            key: key(),
            from: None,
            data: Payload::Text(origin.into()),
            ephemeral: false,
            origin_conn: Some(origin.into()),
        })
        .await
        .unwrap();
    }
    let texts = |items: Vec<Item>| {
        items
            .into_iter()
            .filter_map(|i| {
                if let Item::Shared(s) = i {
                    Some(String::from_utf8(s.payload().to_vec()).unwrap())
                } else {
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    let mut got_b = texts(b.outbox.take_all().await);
    if got_b.len() < 2 {
        got_b.extend(texts(b.outbox.take_all().await));
    }
    assert_eq!(got_b, vec!["a", "b"], "echo on: b gets its own message too");
    assert_eq!(
        texts(a.outbox.take_all().await),
        vec!["b"],
        "echo off: a does not get its own"
    );
}

#[tokio::test]
async fn a_new_stream_epoch_restarts_de_duplication() {
    let (hub, bus) = setup().await;
    let a = joiner("a");
    hub.join(&key(), &a, None, None).await.unwrap();
    publish(&bus, 1).await;
    assert_eq!(seqs(&a.outbox, 1).await, vec![1]);
    // Simulate the stream being recreated: the same positions come back under a new epoch.
    let room = hub.rooms.lock().unwrap().get(&key()).cloned().unwrap();
    let msg = RoomMessage {
        key: key(),
        seq: 1,
        epoch: "recreated".into(),
        ts_ms: 0,
        from: None,
        data: Payload::Json(2.into()),
        ephemeral: false,
        origin_conn: None,
    };
    {
        let mut members = room.members.lock().unwrap();
        let slot = members.get_mut("a").unwrap();
        deliver(slot, "a", &mut Encoded::new(msg));
    }
    assert_eq!(
        seqs(&a.outbox, 1).await,
        vec![1],
        "seq 1 of the new epoch is delivered"
    );
}

/// A hub over a bus whose room queues hold 2 messages, keeping `history` messages.
async fn tiny_queue(history: u32) -> (Arc<Hub>, Arc<MemoryBus>) {
    let bus = Arc::new(MemoryBus::with_queue(2));
    bus.configure(
        "ns",
        Some(Retention {
            max_messages: history,
            max_age: Duration::from_secs(60),
            max_bytes: None,
        }),
    )
    .await
    .unwrap();
    (Hub::new(bus.clone()), bus)
}

/// Everything queued for `o` until `last` (a message or the end of a `lost`) came.
async fn received(o: &Outbox, last: u64) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let items = tokio::time::timeout(Duration::from_secs(2), o.take_all())
            .await
            .expect("items in time");
        for i in items {
            let (seq, json) = match i {
                Item::Message(m) => (m.seq, m.json.to_string()),
                Item::Lost(l) => (l.seq, l.json),
                _ => continue,
            };
            got.push(serde_json::from_str::<Value>(&json).unwrap());
            if seq >= last {
                return got;
            }
        }
    }
}

// The test runtime has one thread and the embedded bus never yields while publishing: ten
// publishes in a row overflow a queue of two before the pump runs at all.

#[tokio::test]
async fn an_overflow_history_covers_is_repaired_for_every_member_without_a_signal() {
    let (hub, bus) = tiny_queue(100).await;
    let (a, b) = (joiner("a"), joiner("b"));
    hub.join(&key(), &a, None, None).await.unwrap();
    hub.join(&key(), &b, None, None).await.unwrap();
    for n in 1..=10 {
        publish(&bus, n).await;
    }
    for o in [&a.outbox, &b.outbox] {
        let got = received(o, 10).await;
        let seqs: Vec<_> = got.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "{got:?}");
    }
    let m = crate::metrics::metrics();
    assert!(m.room_overflows.get() >= 1);
    assert!(m.room_repairs.with_label_values(&["repaired"]).get() >= 1);
}

#[tokio::test]
async fn what_history_no_longer_holds_of_an_overflow_is_told_before_the_rest_is_repaired() {
    let (hub, bus) = tiny_queue(3).await;
    let a = joiner("a");
    hub.join(&key(), &a, None, None).await.unwrap();
    let epoch = bus.position(&key()).await.unwrap().epoch;
    for n in 1..=10 {
        publish(&bus, n).await;
    }
    // 1 and 2 were queued; 3..=10 overflowed and history keeps 8..=10: 3..=7 are told,
    // then 8..=10 are repaired.
    let got = received(&a.outbox, 10).await;
    let seq = |v: &Value| v["seq"].as_u64();
    assert_eq!((seq(&got[0]), seq(&got[1])), (Some(1), Some(2)), "{got:?}");
    assert_eq!(
        got[2],
        serde_json::json!({"type": "lost", "room": "r", "ephemeral": 0,
                "from": {"seq": 3, "epoch": epoch}, "to": {"seq": 7, "epoch": epoch}})
    );
    assert_eq!(
        got[3..].iter().map(seq).collect::<Vec<_>>(),
        vec![Some(8), Some(9), Some(10)]
    );
    publish(&bus, 11).await;
    assert_eq!(seqs(&a.outbox, 1).await, vec![11], "then live again");
}

#[tokio::test]
async fn a_repair_larger_than_a_members_queue_gives_it_the_newest_part_after_a_lost_and_keeps_it() {
    let (hub, bus) = tiny_queue(100).await;
    let small = Joiner {
        outbox: Outbox::new(2_000),
        ..joiner("small")
    };
    let big = joiner("big");
    hub.join(&key(), &small, None, None).await.unwrap();
    hub.join(&key(), &big, None, None).await.unwrap();
    let epoch = bus.position(&key()).await.unwrap().epoch;
    for n in 1..=60 {
        publish(&bus, n).await;
    }
    // 1 and 2 were queued; 3..=60 overflowed the pod's feed and history holds them all. The
    // big queue takes the whole repair; the small one, drained only now, the newest part that
    // fits, after a `lost` of the rest: queued whole, the repair would close it (4008).
    let got = received(&big.outbox, 60).await;
    let all: Vec<_> = got.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(all, (1..=60).collect::<Vec<_>>());
    assert!(
        !small.outbox.is_overflowed(),
        "the repair overflowed the small queue"
    );
    let got = received(&small.outbox, 60).await;
    let seq = |v: &Value| v["seq"].as_u64();
    assert_eq!((seq(&got[0]), seq(&got[1])), (Some(1), Some(2)), "{got:?}");
    assert_eq!(got[2]["type"], "lost", "{got:?}");
    assert_eq!(
        got[2]["from"],
        serde_json::json!({"seq": 3, "epoch": epoch})
    );
    let told = got[2]["to"]["seq"].as_u64().unwrap();
    let rest: Vec<_> = got[3..]
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert!(told < 60, "something was repaired: {got:?}");
    assert_eq!(rest, (told + 1..=60).collect::<Vec<_>>(), "{got:?}");
    publish(&bus, 61).await;
    assert_eq!(seqs(&small.outbox, 1).await, vec![61], "then live again");
}

/// A member with `gap` and a queue of `max_bytes` in a room whose feed overflows: 1 and 2 are
/// queued, 3..=60 repaired from history. Returns the member's queue (and the hub and bus,
/// which must live while it is filled).
async fn repaired_for(gap: GapFit, max_bytes: u64) -> (Arc<Outbox>, Arc<Hub>, Arc<MemoryBus>) {
    let (hub, bus) = tiny_queue(100).await;
    let j = Joiner {
        outbox: Outbox::new(max_bytes),
        gap,
        ..joiner("j")
    };
    hub.join(&key(), &j, None, None).await.unwrap();
    for n in 1..=60 {
        publish(&bus, n).await;
    }
    (j.outbox, hub, bus)
}

/// What `o` was queued up to seq 60: seqs, a `lost` as 0.
async fn up_to_60(o: &Outbox) -> Vec<u64> {
    let got = received(o, 60).await;
    got.iter()
        .map(|v| {
            if v["type"] == "lost" {
                0
            } else {
                v["seq"].as_u64().unwrap()
            }
        })
        .collect()
}

#[tokio::test]
async fn a_long_polling_member_is_queued_the_whole_repair_and_pages_through_it() {
    // Long-polling's answer holds what the queue took; the next poll goes on from its cursor
    // through history. Cut, the member would be told `lost` of what history still holds.
    let (o, _hub, _bus) = repaired_for(GapFit::Whole, 2_000).await;
    tokio::time::timeout(Duration::from_secs(2), async {
        while !o.is_overflowed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the whole repair offered to the queue");
    let got: Vec<u64> = o
        .take_now()
        .into_iter()
        .map(|i| match i {
            Item::Message(m) => m.seq,
            other => panic!("only messages: {other:?}"),
        })
        .collect();
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_repair_is_cut_counting_each_messages_extra_bytes_as_the_join_does() {
    // An SSE member: each event carries its whole cursor as its id.
    let (o, _hub, _bus) = repaired_for(GapFit::Fit { extra: 0 }, 8_000).await;
    let plain = up_to_60(&o).await;
    let (o, _hub, _bus) = repaired_for(GapFit::Fit { extra: 100 }, 8_000).await;
    let sse = up_to_60(&o).await;
    let kept = |got: &[u64]| got.iter().filter(|s| **s > 2).count();
    assert!(plain.contains(&0) && sse.contains(&0), "{plain:?} {sse:?}");
    assert!(
        kept(&sse) < kept(&plain),
        "the extra bytes were not counted: {sse:?} vs {plain:?}"
    );
}

/// Stored message `seq` of the room (epoch `e`), its number as data.
pub(super) fn msg(seq: u64) -> RoomMessage {
    RoomMessage {
        key: key(),
        seq,
        epoch: "e".into(),
        ts_ms: 0,
        from: None,
        data: Payload::Json(seq.into()),
        ephemeral: false,
        origin_conn: None,
    }
}

#[test]
fn a_lag_is_repaired_from_what_history_holds_and_only_the_rest_is_lost() {
    let lag = Lag {
        after: Position {
            seq: 4,
            epoch: "e".into(),
        },
        first: 5,
        last: 20,
        epoch: "e".into(),
        stored: 16,
        ephemeral: 1,
    };
    let seqs = |v: Vec<RoomMessage>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    let lost = |first, last| Lost {
        first,
        last,
        epoch: "e".into(),
        ephemeral: 1,
    };
    // The whole gap replayed: nothing stored is lost.
    let (l, r) = plan(&lag, Some((5..=20).map(msg).collect()), None);
    assert_eq!((l, seqs(r)), (lost(0, 0), (5..=20).collect()));
    // History holds 12.. (and 21, 22 published since, which are queued after the lag):
    // 5..=11 lost, 12..=20 repaired.
    let (l, r) = plan(&lag, None, Some((12..=22).map(msg).collect()));
    assert_eq!((l, seqs(r)), (lost(5, 11), (12..=20).collect()));
    // History holds only messages after the lag: all of it is lost, none is repaired
    // ahead of the queue.
    let (l, r) = plan(&lag, None, Some((25..=26).map(msg).collect()));
    assert_eq!((l, seqs(r)), (lost(5, 20), vec![]));
    // Nothing retained, or history unreadable: all of it is lost.
    assert_eq!(plan(&lag, None, Some(vec![])), (lost(5, 20), vec![]));
    assert_eq!(plan(&lag, None, None), (lost(5, 20), vec![]));
    // History older than the lag (the replay was only unsure): repaired from after `after`.
    let (l, r) = plan(&lag, None, Some((3..=20).map(msg).collect()));
    assert_eq!((l, seqs(r)), (lost(0, 0), (5..=20).collect()));
}

#[tokio::test]
async fn a_member_is_told_only_what_it_has_not_been_given() {
    let (hub, bus) = tiny_queue(3).await;
    let a = joiner("a");
    hub.join(&key(), &a, None, None).await.unwrap();
    let room = hub.rooms.lock().unwrap().get(&key()).cloned().unwrap();
    let epoch = bus.position(&key()).await.unwrap().epoch;
    let lost = Lost {
        first: 3,
        last: 10,
        epoch: epoch.clone(),
        ephemeral: 2,
    };
    {
        let mut members = room.members.lock().unwrap();
        let slot = members.get_mut("a").unwrap();
        slot.last_seq = 6; // it got up to 6 another way (a resume)
        tell_lost(slot, "r", &lost);
        assert_eq!(slot.last_seq, 10);
        tell_lost(
            slot,
            "r",
            &Lost {
                ephemeral: 0,
                ..lost
            },
        );
    }
    let got = received(&a.outbox, 10).await;
    assert_eq!(
        got,
        vec![
            serde_json::json!({"type": "lost", "room": "r", "ephemeral": 2,
                "from": {"seq": 7, "epoch": epoch}, "to": {"seq": 10, "epoch": epoch}})
        ],
        "the second signal had nothing new to tell"
    );
}

#[tokio::test]
async fn a_resume_from_another_epoch_gets_what_the_current_epoch_retains() {
    let (hub, bus) = tiny_queue(3).await;
    for n in 1..=5 {
        publish(&bus, n).await;
    }
    let b = joiner("b");
    let old = Position {
        seq: 9,
        epoch: "before-the-restart".into(),
    };
    let joined = hub.join(&key(), &b, Some(&old), Some(None)).await.unwrap();
    let epoch = bus.position(&key()).await.unwrap().epoch;
    let at = |seq| Position {
        seq,
        epoch: epoch.clone(),
    };
    assert_eq!(
        joined,
        Joined {
            recovered: false,
            position: at(2),
            start: at(2),
        }
    );
    assert_eq!(
        seqs(&b.outbox, 3).await,
        vec![3, 4, 5],
        "from the oldest retained"
    );
}

#[tokio::test]
async fn a_slow_member_overflows_alone() {
    let (hub, bus) = setup().await;
    let fast = joiner("fast");
    let slow = Joiner {
        outbox: Outbox::new(300),
        ..joiner("slow")
    };
    hub.join(&key(), &fast, None, None).await.unwrap();
    hub.join(&key(), &slow, None, None).await.unwrap();
    for n in 0..20 {
        publish(&bus, n).await;
    }
    assert_eq!(seqs(&fast.outbox, 20).await.len(), 20);
    assert!(slow.outbox.is_overflowed());
    assert!(!fast.outbox.is_overflowed());
}

/// A room of `n` JSON members fed the way the NATS pump feeds it (its queue holds `capacity`).
fn pumped_room(n: usize, capacity: usize) -> (Arc<LocalRoom>, FeedSender, Vec<Arc<Outbox>>) {
    pumped_room_with(n, capacity, None)
}

/// As [`pumped_room`], batched by `batch` when given.
fn pumped_room_with(
    n: usize,
    capacity: usize,
    batch: Option<BatchCfg>,
) -> (Arc<LocalRoom>, FeedSender, Vec<Arc<Outbox>>) {
    let (tx, messages) = FeedSender::with_capacity(capacity, Position::default());
    let sub = Subscription {
        presence: messages.presence(),
        messages,
        guard: Box::new(()),
    };
    let mut members = Members::default();
    let outboxes = (0..n)
        .map(|i| {
            let outbox = Outbox::new(1 << 20);
            members.insert(
                &format!("m{i}"),
                Slot {
                    outbox: outbox.clone(),
                    encoding: Encoding::Json,
                    presence_events: false,
                    fit: GapFit::Fit { extra: 0 }.pack(),
                    syncing: None,
                    last_seq: 0,
                    epoch: String::new(),
                },
            );
            outbox
        })
        .collect();
    let room = LocalRoom::open(key(), Arc::new(MemoryBus::new()), sub, members, batch);
    (room, tx, outboxes)
}

/// Send `seq` the way the NATS pump does (it may fan out right here).
fn pump(tx: &FeedSender, seq: u64) {
    tx.send_deferred(msg(seq)).unwrap().wake_here();
}

fn queued_seqs(o: &Outbox) -> Vec<u64> {
    o.take_now()
        .into_iter()
        .filter_map(|i| match i {
            Item::Message(m) => Some(m.seq),
            _ => None,
        })
        .collect()
}

// The tests below run on one thread: a spawned fan-out task cannot have run before the test
// awaits, so what is queued right after a send was fanned out by the sender (the pump) itself.

#[tokio::test]
async fn a_small_room_is_fanned_out_by_the_pump_that_fed_it() {
    let (_room, tx, outboxes) = pumped_room(INLINE_MEMBERS, 16);
    pump(&tx, 1);
    for o in &outboxes {
        assert_eq!(queued_seqs(o), vec![1]);
    }
    // Woken again by the next arrival (the inline fan-out found the feed empty).
    pump(&tx, 2);
    for o in &outboxes {
        assert_eq!(queued_seqs(o), vec![2]);
    }
}

#[tokio::test]
async fn a_small_rooms_presence_event_is_announced_by_the_pump_that_fed_it() {
    let (room, tx, outboxes) = pumped_room(1, 16);
    room.members
        .lock()
        .unwrap()
        .get_mut("m0")
        .unwrap()
        .presence_events = true;
    let ev = PresenceEvent {
        key: key(),
        joined: true,
        member: Member {
            conn: "c9".into(),
            user: Some("zoe".into()),
            info: Value::Null,
        },
    };
    tx.send_presence_deferred(ev).unwrap().wake_here();
    let items = outboxes[0].take_now();
    let [Item::Reply(event)] = &items[..] else {
        panic!("one presence event, got {items:?}");
    };
    let event: Value = serde_json::from_str(event).unwrap();
    assert_eq!(
        (&event["type"], &event["event"], &event["member"]["conn"]),
        (
            &Value::from("presence"),
            &Value::from("join"),
            &Value::from("c9")
        ),
        "{event}"
    );
}

#[tokio::test]
async fn a_bigger_room_is_fanned_out_by_a_task_so_the_pump_goes_back_to_reading_at_once() {
    let (_room, tx, outboxes) = pumped_room(INLINE_MEMBERS + 1, 16);
    pump(&tx, 1);
    assert_eq!(queued_seqs(&outboxes[0]), Vec::<u64>::new());
    for o in &outboxes {
        assert_eq!(seqs(o, 1).await, vec![1]);
    }
}

#[tokio::test]
async fn a_pump_fans_out_a_bounded_part_of_a_burst_and_a_task_the_rest_in_order() {
    let (_room, tx, outboxes) = pumped_room(1, 64);
    // Twenty queued while the room was already woken, then one wake for them all.
    let wake = tx.send_deferred(msg(1)).unwrap();
    for seq in 2..=20 {
        let _ = tx.send_deferred(msg(seq)).unwrap();
    }
    wake.wake_here();
    let here = queued_seqs(&outboxes[0]);
    assert_eq!(here, (1..=INLINE_ITEMS as u64).collect::<Vec<_>>());
    let rest = seqs(&outboxes[0], 20 - INLINE_ITEMS).await;
    assert_eq!(rest, (INLINE_ITEMS as u64 + 1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_lag_met_by_the_pump_is_handed_to_a_task_and_told_after_what_was_queued() {
    let (_room, tx, outboxes) = pumped_room(1, 2);
    let wake = tx.send_deferred(msg(1)).unwrap();
    for seq in 2..=5 {
        let _ = tx.send_deferred(msg(seq)).unwrap();
    }
    wake.wake_here();
    assert_eq!(queued_seqs(&outboxes[0]), vec![1, 2]);
    // 3..=5 overflowed; this bus never had them, so the member is told.
    let got = received(&outboxes[0], 5).await;
    assert_eq!(got[0]["type"], "lost", "{got:?}");
    assert_eq!(got[0]["to"]["seq"], 5, "{got:?}");
}

fn one_second_batches() -> Option<BatchCfg> {
    Some(BatchCfg {
        window: Duration::from_secs(1),
        max_messages: 10,
        group_by: None,
    })
}

#[tokio::test(start_paused = true)]
async fn a_batched_small_room_fed_by_the_pump_sends_one_batch_when_its_window_ends() {
    let (_room, tx, outboxes) = pumped_room_with(1, 16, one_second_batches());
    pump(&tx, 1);
    pump(&tx, 2);
    assert!(outboxes[0].take_now().is_empty(), "collected, not sent yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let got = received(&outboxes[0], 2).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "batch", "{got:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lag_met_by_the_pump_in_a_batched_room_sends_the_collected_batch_before_the_loss() {
    let (_room, tx, outboxes) = pumped_room_with(1, 2, one_second_batches());
    let wake = tx.send_deferred(msg(1)).unwrap();
    for seq in 2..=5 {
        let _ = tx.send_deferred(msg(seq)).unwrap();
    }
    wake.wake_here();
    let got = received(&outboxes[0], 5).await;
    let types: Vec<&str> = got.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["batch", "lost"], "{got:?}");
    assert_eq!(got[1]["to"]["seq"], 5, "{got:?}");
}

#[tokio::test]
async fn a_resume_whose_gap_outgrows_the_queue_gets_its_newest_part_not_recovered_and_stays_open() {
    // Queued whole, a gap over the member's bound closed it as a slow consumer before its
    // first message, on every resume: it could never catch up over WebSocket or SSE.
    let (hub, bus) = setup().await;
    let first = publish(&bus, 0).await;
    let mut last = first.clone();
    for n in 1..60 {
        last = publish(&bus, n).await;
    }
    let b = Joiner {
        outbox: Outbox::new(2_000),
        ..joiner("b")
    };
    let joined = hub
        .join(&key(), &b, Some(&first), Some(Some("1")))
        .await
        .unwrap();
    assert!(!b.outbox.is_overflowed(), "closed as a slow consumer");
    assert!(!joined.recovered, "a gap cut short is not recovered");
    let items = b.outbox.take_all().await;
    let reply: Value = match &items[0] {
        Item::Reply(r) => serde_json::from_str(r).unwrap(),
        other => panic!("joined first, got {other:?}"),
    };
    assert_eq!(reply["recovered"], false);
    let got: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            Item::Message(m) => Some(m.seq),
            _ => None,
        })
        .collect();
    // The newest messages, contiguous up to the last one, after the position it was told.
    assert!(!got.is_empty() && got.len() < 59, "{got:?}");
    assert_eq!(got.last(), Some(&last.seq));
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    assert_eq!(reply["position"]["seq"].as_u64(), Some(got[0] - 1));
    assert_eq!(joined.position.seq, got[0] - 1);
    // Live delivery goes on.
    let next = publish(&bus, 99).await;
    assert_eq!(seqs(&b.outbox, 1).await, vec![next.seq]);
}

#[tokio::test]
async fn a_resume_whose_gap_fills_most_of_the_queue_still_gets_all_of_it() {
    let (hub, bus) = setup().await;
    let first = publish(&bus, 0).await;
    for n in 1..=12 {
        publish(&bus, n).await;
    }
    // Twelve messages take more than half of a 4,000-byte queue and less than seven eighths.
    let b = Joiner {
        outbox: Outbox::new(4_000),
        ..joiner("b")
    };
    let joined = hub.join(&key(), &b, Some(&first), None).await.unwrap();
    assert!(joined.recovered);
    let queued = b.outbox.queued_bytes();
    assert!(
        (2_000..3_500).contains(&queued),
        "the gap cost {queued} bytes"
    );
    assert_eq!(
        seqs(&b.outbox, 12).await,
        (first.seq + 1..=first.seq + 12).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_long_poll_join_queues_the_whole_gap_for_its_answers_to_page_through() {
    // Each answer holds what its queue took and the next poll goes on from its cursor: cut,
    // the older part of the gap would be skipped for good.
    let (hub, bus) = setup().await;
    let first = sixty(&bus).await;
    let b = long_poller(2_000);
    let joined = hub.join(&key(), &b, Some(&first), None).await.unwrap();
    assert!(joined.recovered);
    let items = b.outbox.take_all().await;
    match items.iter().find_map(|i| match i {
        Item::Message(m) => Some(m.seq),
        _ => None,
    }) {
        Some(seq) => assert_eq!(seq, first.seq + 1, "from the oldest of the gap"),
        None => panic!("nothing queued"),
    }
}

#[tokio::test]
async fn bytes_a_transport_adds_to_each_message_shrink_the_part_of_a_gap_kept() {
    let (hub, bus) = setup().await;
    let first = publish(&bus, 0).await;
    for n in 1..60 {
        publish(&bus, n).await;
    }
    let kept = |extra| {
        let hub = hub.clone();
        let first = first.clone();
        async move {
            let b = Joiner {
                outbox: Outbox::new(4_000),
                gap: GapFit::Fit { extra },
                ..joiner(&format!("b{extra}"))
            };
            hub.join(&key(), &b, Some(&first), None).await.unwrap();
            b.outbox
                .take_all()
                .await
                .iter()
                .filter(|i| matches!(i, Item::Message(_)))
                .count()
        }
    };
    let (plain, with_ids) = (kept(0).await, kept(200).await);
    assert!(with_ids < plain, "{with_ids} vs {plain}");
}

/// A room holding 60 messages; the position before the last 59 of them.
async fn sixty(bus: &MemoryBus) -> Position {
    let first = publish(bus, 0).await;
    for n in 1..60 {
        publish(bus, n).await;
    }
    first
}

/// A long-polling joiner with a queue of `max_bytes`.
fn long_poller(max_bytes: u64) -> Joiner {
    Joiner {
        outbox: Outbox::new(max_bytes),
        gap: GapFit::Whole,
        ..joiner("b")
    }
}

#[tokio::test]
async fn a_long_poll_join_whose_gap_outgrows_its_queue_queues_nothing_after_the_part_it_read() {
    // Its read stops at what the queue takes; a live message queued after that part would go
    // out with a cursor past the messages not read, and they would never be polled.
    let (hub, bus) = setup().await;
    let first = sixty(&bus).await;
    let b = long_poller(2_000);
    let joined = hub.join(&key(), &b, Some(&first), None).await.unwrap();
    assert!(joined.recovered, "the next poll goes on from its cursor");
    publish(&bus, 99).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = queued_seqs(&b.outbox);
    assert!(!got.is_empty() && got.len() < 59, "{got:?}");
    assert_eq!(
        got,
        (first.seq + 1..=first.seq + got.len() as u64).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_long_poll_join_whose_read_stopped_at_one_oversized_message_queues_nothing_after_it() {
    // One message over the queue's bound is queued on its own (an empty queue takes any one
    // item); the read stopped there, so a later message must not follow it into this answer:
    // its cursor would pass the messages after the big one that were never read.
    let (hub, bus) = setup().await;
    let first = publish(&bus, 0).await;
    let big = bus
        .publish(Publish {
            key: key(),
            from: None,
            data: Payload::Text("x".repeat(3_000)),
            ephemeral: false,
            origin_conn: None,
        })
        .await
        .unwrap()
        .unwrap();
    let after = publish(&bus, 2).await;
    let b = long_poller(2_000);
    let joined = hub.join(&key(), &b, Some(&first), None).await.unwrap();
    assert!(joined.recovered);
    publish(&bus, 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = queued_seqs(&b.outbox);
    assert_eq!(got, vec![big.seq], "after it: {}", after.seq);
}
