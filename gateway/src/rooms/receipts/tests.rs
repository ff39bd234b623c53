use super::*;
use crate::rooms::bus::memory::MemoryBus;
use crate::rooms::bus::{Payload, Publish, Retention};
use serde_json::{Value, json};

fn pos(seq: u64) -> Position {
    Position {
        seq,
        epoch: "e".into(),
    }
}

fn key() -> RoomKey {
    RoomKey {
        namespace: "ns".into(),
        room: "chat:1".into(),
    }
}

#[derive(Default)]
struct Told(Mutex<Vec<Value>>);

#[async_trait]
impl Members for Told {
    async fn tell(&self, _key: &RoomKey, json: &str) {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::from_str(json).unwrap());
    }
}

impl Told {
    fn seqs(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["position"]["seq"].as_u64().unwrap())
            .collect()
    }
}

#[test]
fn the_first_read_of_a_quiet_key_goes_out_at_once_and_later_ones_wait_merged() {
    let t0 = Instant::now();
    let i = Duration::from_secs(1);
    let mut c = Coalescer::default();
    assert_eq!(c.offer("k", pos(1), i, t0), Some(pos(1)));
    assert_eq!(
        c.offer("k", pos(3), i, t0 + Duration::from_millis(100)),
        None
    );
    assert_eq!(
        c.offer("k", pos(2), i, t0 + Duration::from_millis(200)),
        None
    );
    assert_eq!(c.next_deadline(), Some(t0 + i));
    assert!(c.due(|_| i, t0 + Duration::from_millis(999)).is_empty());
    // The latest (highest) position wins, once per interval.
    assert_eq!(c.due(|_| i, t0 + i), vec![("k", pos(3))]);
    assert!(c.due(|_| i, t0 + 2 * i).is_empty(), "nothing more pending");
    assert_eq!(c.next_deadline(), None, "a quiet key is forgotten");
    assert_eq!(c.offer("k", pos(4), i, t0 + 3 * i), Some(pos(4)));
}

#[tokio::test(start_paused = true)]
async fn reads_reach_the_members_at_most_once_per_interval_with_the_latest_position() {
    let told = Arc::new(Told::default());
    let weak: Weak<dyn Members> = Arc::downgrade(&told) as Weak<dyn Members>;
    let receipts = Receipts::new(Arc::new(MemoryBus::new()), weak);
    let interval = Duration::from_secs(1);
    for seq in 1..=5 {
        receipts
            .read(&key(), "alice", &pos(seq), interval)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(told.seqs(), vec![1], "the first at once, the rest wait");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        told.seqs(),
        vec![1, 5],
        "the interval's end sends the latest"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(told.seqs(), vec![1, 5], "nothing more to say");
    // Another user of the same room has an interval of its own.
    receipts
        .read(&key(), "bob", &pos(2), interval)
        .await
        .unwrap();
    assert_eq!(told.seqs(), vec![1, 5, 2]);
    let last = told.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last,
        json!({"type": "receipt", "room": "chat:1", "user": "bob", "position": {"seq": 2, "epoch": "e"}})
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_that_does_not_move_the_position_tells_nobody() {
    let told = Arc::new(Told::default());
    let weak: Weak<dyn Members> = Arc::downgrade(&told) as Weak<dyn Members>;
    let receipts = Receipts::new(Arc::new(MemoryBus::new()), weak);
    let i = Duration::from_millis(10);
    let stored = receipts.read(&key(), "alice", &pos(7), i).await.unwrap();
    assert_eq!(stored, pos(7));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = receipts.read(&key(), "alice", &pos(3), i).await.unwrap();
    assert_eq!(stored, pos(7), "a read position is never lowered");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(told.seqs(), vec![7]);
}

#[tokio::test]
async fn local_reads_never_go_back_but_follow_a_new_epoch() {
    let reads = LocalReads::default();
    reads.mark(&key(), "alice", &pos(5)).await.unwrap();
    assert_eq!(reads.mark(&key(), "alice", &pos(4)).await.unwrap(), pos(5));
    let other = Position {
        seq: 1,
        epoch: "f".into(),
    };
    assert_eq!(reads.mark(&key(), "alice", &other).await.unwrap(), other);
    assert_eq!(reads.get(&key(), "alice").await.unwrap(), Some(other));
    assert_eq!(reads.get(&key(), "bob").await.unwrap(), None);
}

#[tokio::test]
async fn local_reads_are_bounded_and_forget_the_least_recently_marked_first() {
    let reads = LocalReads::default();
    let room = |n: usize| RoomKey {
        namespace: "ns".into(),
        room: format!("r{n}"),
    };
    // Spread over users, each under their own bound.
    let user = |n: usize| format!("u{}", n % 200);
    for n in 0..MAX_LOCAL_READS {
        reads.mark(&room(n), &user(n), &pos(1)).await.unwrap();
    }
    // Raising r0 makes it the most recent; r1 is then the oldest.
    reads.mark(&room(0), &user(0), &pos(2)).await.unwrap();
    reads
        .mark(&room(MAX_LOCAL_READS), &user(MAX_LOCAL_READS), &pos(1))
        .await
        .unwrap();
    assert_eq!(reads.lock().by_key.len(), MAX_LOCAL_READS);
    assert_eq!(reads.get(&room(1), &user(1)).await.unwrap(), None);
    assert_eq!(reads.get(&room(0), &user(0)).await.unwrap(), Some(pos(2)));
    let listed = reads.of_user("ns", &user(0), 10).await.unwrap();
    assert_eq!(listed.len(), 10);
}

#[tokio::test]
async fn one_users_read_positions_are_bounded_without_forgetting_anyone_elses() {
    // One user marking read in room after room filled the pod-wide bound (and, on NATS, the
    // bucket without any bound), pushing out every other user's positions.
    let reads = LocalReads::default();
    let room = |n: usize| RoomKey {
        namespace: "ns".into(),
        room: format!("r{n:05}"),
    };
    reads.mark(&room(0), "bob", &pos(1)).await.unwrap();
    for n in 0..MAX_READS_PER_USER {
        reads.mark(&room(n), "mallory", &pos(1)).await.unwrap();
    }
    // Raising r0 makes it mallory's most recent; r1 is then her oldest.
    reads.mark(&room(0), "mallory", &pos(2)).await.unwrap();
    for n in MAX_READS_PER_USER..MAX_READS_PER_USER + 50 {
        reads.mark(&room(n), "mallory", &pos(1)).await.unwrap();
    }
    let listed = reads.of_user("ns", "mallory", usize::MAX).await.unwrap();
    assert_eq!(listed.len(), MAX_READS_PER_USER);
    assert_eq!(reads.get(&room(1), "mallory").await.unwrap(), None);
    assert_eq!(reads.get(&room(0), "mallory").await.unwrap(), Some(pos(2)));
    assert_eq!(reads.get(&room(0), "bob").await.unwrap(), Some(pos(1)));
    assert_eq!(reads.lock().by_key.len(), MAX_READS_PER_USER + 1);
}

#[tokio::test]
async fn unread_counts_stored_messages_after_the_read_position_not_the_users_own() {
    let bus = MemoryBus::new();
    bus.configure(
        "ns",
        Some(Retention {
            max_messages: 3,
            max_age: Duration::from_secs(60),
            max_bytes: None,
        }),
    )
    .await
    .unwrap();
    let publish = |from: Option<&str>, ephemeral: bool| Publish {
        key: key(),
        from: from.map(|s| json!({"sub": s})),
        data: Payload::Json(json!(1)),
        ephemeral,
        origin_conn: None,
    };
    let first = bus
        .publish(publish(Some("bob"), false))
        .await
        .unwrap()
        .unwrap();
    bus.publish(publish(Some("alice"), false)).await.unwrap();
    bus.publish(publish(Some("bob"), true)).await.unwrap();
    bus.publish(publish(None, false)).await.unwrap();
    assert_eq!(
        unread(&bus, &key(), "alice", Some(&first)).await.unwrap(),
        1
    );
    // Never read: everything retained (bounded by history) that is not alice's.
    assert_eq!(unread(&bus, &key(), "alice", None).await.unwrap(), 2);
    bus.publish(publish(None, false)).await.unwrap();
    bus.publish(publish(None, false)).await.unwrap();
    assert_eq!(
        unread(&bus, &key(), "alice", Some(&first)).await.unwrap(),
        3,
        "beyond history: what history holds"
    );
}
