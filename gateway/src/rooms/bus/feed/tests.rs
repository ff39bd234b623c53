use super::*;
use crate::rooms::bus::{Payload, RoomKey};

fn msg(seq: u64) -> RoomMessage {
    RoomMessage {
        key: RoomKey {
            namespace: "ns".into(),
            room: "r".into(),
        },
        seq,
        epoch: "e".into(),
        ts_ms: 0,
        from: None,
        data: Payload::Json(seq.into()),
        ephemeral: seq == 0,
        origin_conn: None,
    }
}

fn at(seq: u64) -> Position {
    Position {
        seq,
        epoch: "e".into(),
    }
}

/// A member joined the room of [`msg`].
fn joined() -> PresenceEvent {
    PresenceEvent {
        key: msg(0).key,
        joined: true,
        member: crate::rooms::bus::Member {
            conn: "c".into(),
            user: None,
            info: serde_json::Value::Null,
        },
    }
}

fn seq_of(d: &Delivery) -> u64 {
    match d {
        Delivery::Message(m) => m.seq,
        Delivery::Lagged(l) => panic!("expected a message, got {l:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_turns_the_overflow_into_one_lag_queued_before_any_later_message() {
    let (tx, mut rx) = FeedSender::with_capacity(2, at(10));
    for seq in 11..=15 {
        tx.send(msg(seq)).unwrap();
    }
    tx.send(msg(0)).unwrap(); // an ephemeral one while lagging
    assert_eq!(seq_of(&rx.recv().await.unwrap()), 11);
    assert_eq!(seq_of(&rx.recv().await.unwrap()), 12);
    // The lag waits for room; a message sent meanwhile joins it rather than overtaking it.
    tx.send(msg(16)).unwrap();
    let lag = match rx.recv().await.unwrap() {
        Delivery::Lagged(lag) => lag,
        other => panic!("expected the lag, got {other:?}"),
    };
    assert_eq!(
        lag,
        Lag {
            after: at(12),
            first: 13,
            last: 16,
            epoch: "e".into(),
            stored: 4,
            ephemeral: 1,
        }
    );
    // Afterwards the feed queues again, and a later overflow starts after the told range.
    tx.send(msg(17)).unwrap();
    tx.send(msg(18)).unwrap();
    tx.send(msg(19)).unwrap();
    assert_eq!(seq_of(&rx.recv().await.unwrap()), 17);
    assert_eq!(seq_of(&rx.recv().await.unwrap()), 18);
    match rx.recv().await.unwrap() {
        Delivery::Lagged(lag) => assert_eq!((lag.after, lag.first, lag.last), (at(18), 19, 19)),
        other => panic!("expected the second lag, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_feed_that_never_overflows_queues_everything_in_order() {
    let (tx, mut rx) = FeedSender::with_capacity(4, at(0));
    for seq in 1..=4 {
        tx.send(msg(seq)).unwrap();
        assert_eq!(seq_of(&rx.recv().await.unwrap()), seq);
    }
    assert!(rx.try_recv().is_none());
}

#[tokio::test(start_paused = true)]
async fn sending_to_a_feed_whose_hub_is_gone_says_closed() {
    let (tx, rx) = FeedSender::with_capacity(1, at(0));
    drop(rx);
    assert_eq!(tx.send(msg(1)), Err(Closed));
    assert!(tx.is_closed());
}

#[test]
fn overflow_warnings_are_written_at_most_once_per_period() {
    let log = RateLimitedLog::new();
    let t0 = log_base() + Duration::from_secs(100);
    assert_eq!(log.allow(t0), Some(0));
    assert_eq!(log.allow(t0 + Duration::from_secs(1)), None);
    assert_eq!(log.allow(t0 + Duration::from_secs(9)), None);
    assert_eq!(
        log.allow(t0 + OVERFLOW_LOG_PERIOD),
        Some(2),
        "the next line says how many were not logged"
    );
}

#[tokio::test(start_paused = true)]
async fn a_feed_drained_after_a_burst_holds_no_queue() {
    let (tx, mut rx) = FeedSender::with_capacity(4096, at(0));
    for seq in 1..=100 {
        tx.send(msg(seq)).unwrap();
    }
    for seq in 1..=100 {
        assert_eq!(seq_of(&rx.recv().await.unwrap()), seq);
    }
    // An idle room is most rooms: its feed keeps no buffer from the burst.
    assert_eq!(rx.shared.lock().queue.capacity(), 0);
}

struct Counter(std::sync::atomic::AtomicUsize);

impl Consumer for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_consumer_is_woken_once_per_idle_period_and_again_after_it_found_the_feed_empty() {
    let (tx, rx) = FeedSender::with_capacity(8, at(0));
    tx.send(msg(1)).unwrap(); // before the consumer is set: woken when it is
    let c = Arc::new(Counter(Default::default()));
    let weak: std::sync::Weak<dyn Consumer> = Arc::downgrade(&(c.clone() as Arc<dyn Consumer>));
    rx.set_consumer(weak);
    let woken = || c.0.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(woken(), 1);
    tx.send(msg(2)).unwrap();
    assert_eq!(woken(), 1, "already awake: not woken again");
    assert!(matches!(rx.next(), Some(Next::Delivery(_))));
    assert!(matches!(rx.next(), Some(Next::Delivery(_))));
    assert_eq!(rx.next(), None, "empty: the consumer goes idle");
    tx.send_presence(joined()).unwrap();
    assert_eq!(woken(), 2, "the next arrival wakes it again");
    assert!(matches!(rx.next(), Some(Next::Presence(_))));
    assert_eq!(rx.next(), None);
}

#[tokio::test]
async fn a_waiting_recv_wakes_for_the_next_arrival_and_ends_once_every_sender_is_gone() {
    let (tx, mut rx) = FeedSender::with_capacity(8, at(0));
    let mut presence = rx.presence();
    let messages = tokio::spawn(async move {
        let first = rx.recv().await.map(|d| seq_of(&d));
        (first, rx.recv().await.is_none())
    });
    let events = tokio::spawn(async move {
        let first = presence.recv().await.map(|ev| ev.joined);
        (first, presence.recv().await.is_none())
    });
    // Both tasks run until they wait on the empty feed.
    tokio::task::yield_now().await;
    assert!(!messages.is_finished() && !events.is_finished());
    tx.send(msg(1)).unwrap();
    tx.send_presence(joined()).unwrap();
    let second = tx.clone();
    drop(tx);
    tokio::task::yield_now().await;
    assert!(
        !messages.is_finished() && !events.is_finished(),
        "a sender is left: both wait again"
    );
    drop(second);
    assert_eq!(messages.await.unwrap(), (Some(1), true));
    assert_eq!(events.await.unwrap(), (Some(true), true));
}

#[test]
fn a_feed_is_one_allocation_in_jemallocs_192_byte_class() {
    // The feed's shared state, with the `Arc`'s two counts: one per room on the pod, so one per
    // connection in its own `user:<sub>` room. Waiters of `recv` are boxed on first use.
    let allocation = std::mem::size_of::<Shared>() + 2 * std::mem::size_of::<usize>();
    assert!(allocation <= 192, "{allocation} bytes");
}
