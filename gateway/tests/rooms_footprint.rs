//! What rooms cost in memory: heap bytes the hub and the embedded bus hold per room and per
//! member, counted by dhat's allocator (deterministic byte counts, never timings).
//!
//! One test in its own binary: dhat counts the whole process, so nothing else may allocate
//! meanwhile (the runtime is current-thread, every task runs on the test's thread).
//! `cargo nextest run -p switchboard-gateway --test rooms_footprint --no-capture` prints the
//! table that docs/operations.md quotes; with `ROOMS_FOOTPRINT_DHAT=/tmp/rooms.json` it also
//! writes where the bytes were allocated.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

use std::sync::Arc;

use switchboard_gateway::rooms::bus::memory::MemoryBus;
use switchboard_gateway::rooms::bus::{Payload, Publish, Retention, RoomKey};
use switchboard_gateway::rooms::hub::{Encoding, GapFit, Hub, Joiner};
use switchboard_gateway::rooms::outbox::Outbox;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Heap bytes live now.
fn live() -> i64 {
    dhat::HeapStats::get().curr_bytes as i64
}

fn key(room: &str) -> RoomKey {
    RoomKey {
        namespace: "app".into(),
        room: room.into(),
    }
}

fn joiner(conn: String) -> Joiner {
    Joiner {
        conn,
        outbox: Outbox::new(1 << 20),
        encoding: Encoding::Json,
        presence: None,
        presence_events: false,
        read: None,
        batch: None,
        gap: GapFit::Fit { extra: 0 },
    }
}

fn joiners(n: usize) -> Vec<Joiner> {
    (0..n).map(|i| joiner(format!("conn-{i:06}"))).collect()
}

fn hub() -> Arc<Hub> {
    Hub::new(Arc::new(MemoryBus::new()))
}

/// Everything a first use initialises once per process (metrics, thread-local RNGs, tracing
/// callsites, the runtime's queues), so that it is not charged to the first room measured.
async fn warm_up() {
    let hub = hub();
    let bus = hub.bus().clone();
    bus.configure(
        "warm",
        Some(Retention {
            max_messages: 1,
            max_age: std::time::Duration::from_secs(1),
            max_bytes: None,
        }),
    )
    .await
    .unwrap();
    let js = joiners(64);
    for (i, j) in js.iter().enumerate() {
        let k = RoomKey {
            namespace: "warm".into(),
            room: format!("w{}", i % 2),
        };
        hub.join(&k, j, None, None).await.unwrap();
        bus.publish(Publish {
            key: k,
            from: None,
            data: Payload::Json(1.into()),
            ephemeral: false,
            origin_conn: None,
        })
        .await
        .unwrap();
        tokio::task::yield_now().await;
    }
    for (i, j) in js.iter().enumerate() {
        let k = RoomKey {
            namespace: "warm".into(),
            room: format!("w{}", i % 2),
        };
        hub.leave(&k, &j.conn).await;
    }
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// Lets tasks that ended (a room's pump after its last member left) be freed.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

struct Footprint {
    empty_hub: i64,
    outbox: i64,
    one_room_one_member: i64,
    after_last_leave: i64,
    per_room_of_one: i64,
    after_1000_rooms_left: i64,
    per_member_of_shared_room: i64,
    after_1000_members_left: i64,
}

async fn measure() -> Footprint {
    warm_up().await;

    let before = live();
    let empty = hub();
    let empty_hub = live() - before;
    drop(empty);

    let before = live();
    let one = Outbox::new(1 << 20);
    let outbox = live() - before;
    drop(one);

    // One room, one member, no history.
    let hub1 = hub();
    let j = joiner("conn-one".into());
    let base = live();
    hub1.join(&key("user:one"), &j, None, None).await.unwrap();
    settle().await;
    let one_room_one_member = live() - base;
    hub1.leave(&key("user:one"), &j.conn).await;
    settle().await;
    let after_last_leave = live() - base;

    // 1,000 rooms of one member each (every connection in its own `user:<sub>` room).
    let hub2 = hub();
    let js = joiners(1000);
    let base = live();
    for (i, j) in js.iter().enumerate() {
        hub2.join(&key(&format!("user:{i:06}")), j, None, None)
            .await
            .unwrap();
    }
    settle().await;
    let per_room_of_one = (live() - base) / 1000;
    for (i, j) in js.iter().enumerate() {
        hub2.leave(&key(&format!("user:{i:06}")), &j.conn).await;
    }
    settle().await;
    let after_1000_rooms_left = live() - base;

    // One room of 1,000 members.
    let hub3 = hub();
    let js = joiners(1000);
    let base = live();
    for j in &js {
        hub3.join(&key("lobby"), j, None, None).await.unwrap();
    }
    settle().await;
    let per_member_of_shared_room = (live() - base - one_room_one_member) / 999;
    for j in &js {
        hub3.leave(&key("lobby"), &j.conn).await;
    }
    settle().await;
    let after_1000_members_left = live() - base;

    Footprint {
        empty_hub,
        outbox,
        one_room_one_member,
        after_last_leave,
        per_room_of_one,
        after_1000_rooms_left,
        per_member_of_shared_room,
        after_1000_members_left,
    }
}

#[test]
fn a_room_costs_what_it_holds_and_an_empty_room_costs_nothing() {
    // `ROOMS_FOOTPRINT_DHAT=FILE` also writes dhat's profile (allocation sites at the peak,
    // the 1,000 rooms) for dh_view.html.
    let _profiler = match std::env::var("ROOMS_FOOTPRINT_DHAT") {
        Ok(file) => dhat::Profiler::builder().file_name(file).build(),
        Err(_) => dhat::Profiler::builder().testing().build(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(measure());
    println!("| heap bytes (embedded bus + hub) | bytes |");
    println!("|---|---:|");
    println!("| empty hub and bus | {} |", f.empty_hub);
    println!("| one idle outbox (per connection) | {} |", f.outbox);
    println!(
        "| 1 room, 1 member, no history | {} |",
        f.one_room_one_member
    );
    println!("| ... after the member left | {} |", f.after_last_leave);
    println!(
        "| 1,000 rooms of 1 member: per room | {} |",
        f.per_room_of_one
    );
    println!("| ... after all left | {} |", f.after_1000_rooms_left);
    println!(
        "| 1 room of 1,000 members: per further member | {} |",
        f.per_member_of_shared_room
    );
    println!("| ... after all left | {} |", f.after_1000_members_left);

    // Generous bounds (a few times what is measured), far below the channels and task a room
    // used to cost (over 11 kB): a regression that brings them back fails here.
    assert!(
        f.one_room_one_member <= 2_000,
        "a room of one member costs {} bytes",
        f.one_room_one_member
    );
    assert!(
        f.per_room_of_one <= 2_000,
        "each room of one member costs {} bytes",
        f.per_room_of_one
    );
    assert!(
        f.per_member_of_shared_room <= 600,
        "each member of a shared room costs {} bytes",
        f.per_member_of_shared_room
    );
    // Empty rooms are freed from every map (the maps shrink too); what stays is the
    // namespace's last position (rooms of a namespace share positions), not a room.
    for (what, left) in [
        ("a room left empty", f.after_last_leave),
        ("1,000 rooms left empty", f.after_1000_rooms_left),
        ("a room its 1,000 members left", f.after_1000_members_left),
    ] {
        assert!(left <= 256, "{what} still holds {left} bytes");
    }
}
