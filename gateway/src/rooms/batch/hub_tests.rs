//! Batched delivery and receipts through the hub (socket-free, the embedded bus, paused time).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{BatchCfg, BatchRule, Pattern};
use crate::rooms::bus::memory::MemoryBus;
use crate::rooms::bus::{Bus, Payload, Publish, Retention, RoomKey};
use crate::rooms::hub::{Encoding, GapFit, Hub, Joiner};
use crate::rooms::outbox::{Item, Outbox};
use crate::rooms::proto;
use crate::rooms::receipts::Members;

fn key() -> RoomKey {
    RoomKey {
        namespace: "ns".into(),
        room: "user:alice".into(),
    }
}

async fn setup() -> (Arc<Hub>, Arc<MemoryBus>) {
    let bus = Arc::new(MemoryBus::new());
    bus.configure(
        "ns",
        Some(Retention {
            max_messages: 100,
            max_age: Duration::from_secs(600),
            max_bytes: None,
        }),
    )
    .await
    .unwrap();
    (Hub::new(bus.clone()), bus)
}

fn joiner(conn: &str, encoding: Encoding, max: usize) -> Joiner {
    Joiner {
        conn: conn.into(),
        outbox: Outbox::new(1 << 20),
        encoding,
        presence: None,
        presence_events: false,
        read: None,
        batch: Some(Arc::new(BatchRule {
            patterns: vec![Pattern::parse("user:*").unwrap()],
            claims: None,
            cfg: BatchCfg {
                window: Duration::from_secs(1),
                max_messages: max,
                group_by: Some("type".into()),
            },
        })),
        gap: GapFit::Fit { extra: 0 },
    }
}

async fn publish(bus: &MemoryBus, kind: &str) {
    bus.publish(Publish {
        key: key(),
        from: None,
        data: Payload::Json(json!({"type": kind})),
        ephemeral: false,
        origin_conn: None,
    })
    .await
    .unwrap();
}

/// What is queued within `within` (paused time: advanced as the runtime idles).
async fn queued(o: &Outbox, within: Duration) -> Vec<Item> {
    tokio::time::timeout(within, o.take_all())
        .await
        .unwrap_or_default()
}

fn seqs_of(batch: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = batch["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["messages"].as_array().unwrap().clone())
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test(start_paused = true)]
async fn a_batched_room_sends_each_member_one_batch_per_window_built_once_per_encoding() {
    let (hub, bus) = setup().await;
    let members = [
        joiner("j1", Encoding::Json, 50),
        joiner("j2", Encoding::Json, 50),
        joiner("p1", Encoding::Proto, 50),
    ];
    for j in &members {
        hub.join(&key(), j, None, None).await.unwrap();
    }
    for kind in ["like", "comment", "like"] {
        publish(&bus, kind).await;
    }
    assert!(
        queued(&members[0].outbox, Duration::from_millis(900))
            .await
            .is_empty(),
        "nothing before the window ends"
    );
    let mut json_ptrs = Vec::new();
    for j in &members {
        let items = queued(&j.outbox, Duration::from_millis(200)).await;
        let batch = match &items[..] {
            [Item::Message(m)] => {
                assert_eq!(m.seq, 3, "the cursor moves past the whole batch");
                json_ptrs.push(m.json.as_ptr());
                serde_json::from_str::<Value>(&m.json).unwrap()
            }
            [Item::Shared(frames)] if !frames.is_text() => {
                let m = <proto::ServerMessage as prost::Message>::decode(frames.payload().as_ref())
                    .unwrap();
                proto::to_json(&m)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(batch["type"], "batch");
        let keys: Vec<&str> = batch["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, vec!["like", "comment"], "grouped by type");
        assert_eq!(seqs_of(&batch), vec![1, 2, 3]);
    }
    assert_eq!(
        json_ptrs[0], json_ptrs[1],
        "one JSON batch for all JSON members"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_out_at_once_and_the_rest_at_the_windows_end() {
    let (hub, bus) = setup().await;
    let j = joiner("j", Encoding::Json, 2);
    hub.join(&key(), &j, None, None).await.unwrap();
    for _ in 0..5 {
        publish(&bus, "like").await;
    }
    let batches = |items: Vec<Item>| -> Vec<Vec<u64>> {
        items
            .into_iter()
            .map(|i| match i {
                Item::Message(m) => seqs_of(&serde_json::from_str(&m.json).unwrap()),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let start = tokio::time::Instant::now();
    let mut got = batches(queued(&j.outbox, Duration::from_millis(10)).await);
    while got.len() < 2 {
        got.extend(batches(queued(&j.outbox, Duration::from_millis(10)).await));
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "full batches do not wait"
    );
    assert_eq!(got, vec![vec![1, 2], vec![3, 4]]);
    let rest = batches(queued(&j.outbox, Duration::from_secs(2)).await);
    assert_eq!(rest, vec![vec![5]]);
}

#[tokio::test]
async fn a_receipt_reaches_json_and_protobuf_members_but_not_raw_ones() {
    let (hub, _bus) = setup().await;
    let json_member = Joiner {
        batch: None,
        ..joiner("j", Encoding::Json, 50)
    };
    let proto_member = Joiner {
        batch: None,
        ..joiner("p", Encoding::Proto, 50)
    };
    let raw_member = Joiner {
        batch: None,
        ..joiner("r", Encoding::Raw { echo: true }, 50)
    };
    for j in [&json_member, &proto_member, &raw_member] {
        hub.join(&key(), j, None, None).await.unwrap();
    }
    let receipt = crate::rooms::protocol::receipt(
        "user:alice",
        "bob",
        &crate::rooms::bus::Position {
            seq: 4,
            epoch: "e".into(),
        },
    );
    hub.tell(&key(), &receipt).await;
    let want: Value = serde_json::from_str(&receipt).unwrap();
    match &queued(&json_member.outbox, Duration::from_secs(1)).await[..] {
        [Item::Reply(r)] => assert_eq!(serde_json::from_str::<Value>(r).unwrap(), want),
        other => panic!("{other:?}"),
    }
    match &queued(&proto_member.outbox, Duration::from_secs(1)).await[..] {
        [Item::RawBinary(b)] => {
            let m = <proto::ServerMessage as prost::Message>::decode(b.as_ref()).unwrap();
            assert_eq!(proto::to_json(&m), want);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        queued(&raw_member.outbox, Duration::from_millis(100))
            .await
            .is_empty()
    );
}
