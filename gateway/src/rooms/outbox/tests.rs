use super::*;

fn reply(n: usize) -> Item {
    Item::Reply("x".repeat(n))
}

#[tokio::test]
async fn the_writer_takes_a_whole_burst_at_once() {
    let o = Outbox::new(10_000);
    for _ in 0..10 {
        assert!(o.push(reply(10)));
    }
    assert_eq!(o.take_all().await.len(), 10);
    assert_eq!(o.queued_bytes(), 0);
}

#[tokio::test]
async fn an_item_over_the_bound_marks_a_slow_consumer_and_is_dropped() {
    let o = Outbox::new(100);
    assert!(o.push(reply(50)));
    assert!(!o.push(reply(50)));
    assert!(o.is_overflowed());
    assert_eq!(
        o.take_all().await.len(),
        1,
        "what fitted is still delivered"
    );
    assert!(
        o.take_all().await.is_empty(),
        "then the writer sees the overflow"
    );
}

#[tokio::test]
async fn nothing_is_queued_after_a_refused_item_even_once_there_is_room_again() {
    let o = Outbox::new(100);
    assert!(o.push(reply(50)));
    assert!(!o.push(reply(50)), "the second does not fit");
    assert_eq!(o.take_all().await.len(), 1, "the writer drains the first");
    assert_eq!(o.queued_bytes(), 0);
    // Room again: a later item would go out after the refused one with nobody told.
    assert!(
        !o.push(reply(10)),
        "refused: the connection ends as a slow consumer"
    );
    assert!(!o.hold(10), "and no encoded bytes are charged either");
    assert!(o.take_all().await.is_empty());
}

#[tokio::test]
async fn a_single_item_larger_than_the_bound_still_fits_an_empty_queue() {
    let o = Outbox::new(100);
    assert!(o.push(reply(500)));
    assert!(!o.push(reply(1)), "but nothing may pile up behind it");
}

/// Waits as the session loop does (its waker registered, no future held) until `o` overflows.
async fn overflowed(o: &Outbox) {
    std::future::poll_fn(|cx| {
        crate::engine::session::Queue::register(o, cx.waker());
        if o.is_overflowed() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[tokio::test]
async fn a_writer_busy_on_the_socket_learns_of_an_overflow() {
    let o = Outbox::new(100);
    let o2 = o.clone();
    let waiter = tokio::spawn(async move { overflowed(&o2).await });
    tokio::task::yield_now().await;
    assert!(o.push(reply(50)));
    assert!(!waiter.is_finished());
    assert!(!o.push(reply(50)));
    waiter.await.expect("woken by the overflow");
    overflowed(&o).await; // and it stays overflowed
}

#[tokio::test]
async fn bytes_the_writer_holds_count_against_the_bound() {
    let o = Outbox::new(100);
    assert!(o.hold(500), "held bytes fit an empty queue, like one item");
    assert!(!o.push(reply(1)), "nothing piles up behind them");
    assert!(o.is_overflowed());

    let o = Outbox::new(200);
    assert!(o.push(reply(50)));
    assert!(o.hold(100));
    assert_eq!(o.queued_bytes(), 66 + 100);
    assert!(!o.hold(100), "over the bound with what is queued");
    let o = Outbox::new(200);
    assert!(o.hold(150));
    o.release(150);
    assert_eq!(o.queued_bytes(), 0);
    assert!(o.push(reply(100)), "released bytes make room again");
    assert!(!o.is_overflowed());
}

#[tokio::test]
async fn a_waiting_writer_wakes_on_push_and_on_close() {
    let o = Outbox::new(1000);
    let o2 = o.clone();
    let writer = tokio::spawn(async move { o2.take_all().await.len() });
    tokio::task::yield_now().await;
    o.push(reply(1));
    assert_eq!(writer.await.unwrap(), 1);
    let o3 = o.clone();
    let writer = tokio::spawn(async move { o3.take_all().await.len() });
    o.close();
    assert_eq!(writer.await.unwrap(), 0);
    assert!(!o.push(reply(1)), "a closed outbox takes nothing");
}

#[tokio::test]
async fn an_outbox_the_writer_emptied_holds_no_buffer() {
    let o = Outbox::new(10_000);
    for _ in 0..100 {
        assert!(o.push(reply(10)));
    }
    assert_eq!(o.take_all().await.len(), 100);
    // Idle connections are most connections: the queue's buffer goes with what was taken.
    assert_eq!(o.state.lock().unwrap().items.capacity(), 0);
    assert!(o.push(reply(10)), "and it queues again");
    assert_eq!(o.take_all().await.len(), 1);
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_reply_queued_by_the_writers_own_task_does_not_wake_it_and_is_taken_next() {
    let o = Outbox::new(1000);
    let count = Arc::new(CountingWaker::default());
    crate::engine::session::Queue::register(&*o, &std::task::Waker::from(count.clone()));
    // The session queues its replies while its loop runs the message: the loop takes the
    // queue before it waits again, and a wake-up of the running task would only reschedule
    // it (and unpark another worker for nothing).
    assert!(o.push_own(reply(3)));
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
    assert_eq!(o.take_now().len(), 1);
    // Another task's push still wakes the writer.
    assert!(o.push(reply(3)));
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
}

#[test]
fn a_reply_queued_by_the_writers_own_task_still_counts_against_the_bound() {
    let o = Outbox::new(100);
    assert!(o.push_own(reply(50)));
    assert!(!o.push_own(reply(50)), "over the bound");
    assert!(o.is_overflowed());
}
