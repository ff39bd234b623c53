//! What a burst into a big room costs in memory while its deliveries wait in the members'
//! queues: each message is held once per pod (its encoding shared by every member), each
//! queued delivery is one small slot pointing at it — not one copy per member. Heap bytes
//! counted by dhat's allocator (deterministic byte counts, never timings).
//!
//! One test in its own binary: dhat counts the whole process, so nothing else may allocate
//! meanwhile (the runtime is current-thread, every task runs on the test's thread).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

use std::sync::Arc;

use switchboard_gateway::rooms::bus::memory::MemoryBus;
use switchboard_gateway::rooms::bus::{Payload, Publish, RoomKey};
use switchboard_gateway::rooms::hub::{Encoding, GapFit, Hub, Joiner};
use switchboard_gateway::rooms::outbox::Outbox;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const MEMBERS: usize = 1000;
const MESSAGES: usize = 60;
/// The message's payload: a chat line of a realistic size.
const PAYLOAD_BYTES: usize = 180;

fn live() -> i64 {
    dhat::HeapStats::get().curr_bytes as i64
}

fn lobby() -> RoomKey {
    RoomKey {
        namespace: "app".into(),
        room: "lobby:a-room-name-of-realistic-length".into(),
    }
}

async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

async fn publish(hub: &Hub, i: usize) {
    let text = format!("{i:06}{}", "x".repeat(PAYLOAD_BYTES - 6));
    hub.bus()
        .publish(Publish {
            key: lobby(),
            from: None,
            data: Payload::Text(text),
            ephemeral: false,
            origin_conn: None,
        })
        .await
        .unwrap();
}

/// Heap bytes per queued delivery beyond the messages themselves.
async fn per_delivery() -> i64 {
    let hub = Hub::new(Arc::new(MemoryBus::new()));
    let joiners: Vec<Joiner> = (0..MEMBERS)
        .map(|i| Joiner {
            conn: format!("conn-{i:06}"),
            outbox: Outbox::new(64 << 20),
            encoding: Encoding::Json,
            presence: None,
            presence_events: false,
            read: None,
            batch: None,
            gap: GapFit::Fit { extra: 0 },
        })
        .collect();
    for j in &joiners {
        hub.join(&lobby(), j, None, None).await.unwrap();
    }
    // The first message sizes every queue's first growth step; measure from the second on.
    publish(&hub, 0).await;
    settle().await;
    for j in &joiners {
        assert_eq!(j.outbox.take_all().await.len(), 1);
    }
    settle().await;
    let base = live();
    for i in 1..=MESSAGES {
        publish(&hub, i).await;
        settle().await;
    }
    let queued = live() - base;
    for j in &joiners {
        assert_eq!(
            j.outbox.take_all().await.len(),
            MESSAGES,
            "every delivery queued"
        );
    }
    // A message held once per pod: its bus form, its JSON envelope and frame (a few hundred
    // bytes each), charged to the messages rather than to the deliveries.
    let per_message_once = 4 * 1024;
    (queued - (MESSAGES as i64) * per_message_once) / (MEMBERS * MESSAGES) as i64
}

#[test]
fn a_burst_into_a_big_room_holds_each_message_once_and_a_small_slot_per_delivery() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bytes = rt.block_on(per_delivery());
    println!("heap bytes per queued delivery: {bytes}");
    // A pointer-sized share of the message plus the queue slot; a copy of the room name, the
    // epoch or the payload per member fails here.
    assert!(
        bytes <= 48,
        "each queued delivery costs {bytes} bytes of heap (a copy per member?)"
    );
}
