//! Opening a room (its bus subscription) against a bus that does not answer: the joiners of
//! that room wait for it, nobody else does.

use std::sync::atomic::Ordering;

use super::held_bus::HeldBus;
use super::tests::joiner;
use super::*;

fn room(name: &str) -> RoomKey {
    RoomKey {
        namespace: "ns".into(),
        room: name.into(),
    }
}

/// Under paused time: a call that waits on something that never comes runs into it at once.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A hub whose bus holds every subscription to room `stuck` (failing it once released when
/// `fails`), and member `a` joining it, its subscription held.
async fn held_opening(
    fails: bool,
) -> (
    Arc<HeldBus>,
    Arc<Hub>,
    tokio::task::JoinHandle<Result<Joined, BusError>>,
) {
    let bus = HeldBus::new();
    *bus.hold_subscribe_of.lock().unwrap() = Some("stuck".into());
    bus.fail_held.store(fails, Ordering::SeqCst);
    let hub = Hub::new(bus.clone());
    let first = tokio::spawn({
        let hub = hub.clone();
        async move { hub.join(&room("stuck"), &joiner("a"), None, None).await }
    });
    bus.held.notified().await;
    (bus, hub, first)
}

/// JetStream not answering a consumer request holds that room's subscription for up to the
/// bus's 5 s bound: the joins and leaves of every other room go on meanwhile, and a second
/// joiner of the held room shares the one subscription once it is made.
#[tokio::test(start_paused = true)]
async fn a_room_whose_subscription_hangs_holds_up_only_its_own_joiners() {
    let (bus, hub, first) = held_opening(false).await;

    let other = joiner("b");
    tokio::time::timeout(PROMPTLY, hub.join(&room("free"), &other, None, None))
        .await
        .expect("a join of another room is not held up")
        .unwrap();
    tokio::time::timeout(PROMPTLY, hub.leave(&room("free"), "b"))
        .await
        .expect("a leave of another room is not held up");
    assert!(
        tokio::time::timeout(PROMPTLY, hub.given(&room("free"), "b"))
            .await
            .expect("reading a member's position is not held up")
            .is_none()
    );

    let second = tokio::spawn({
        let hub = hub.clone();
        async move { hub.join(&room("stuck"), &joiner("c"), None, None).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "the held room's second joiner waits");
    bus.release.notify_one();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(hub.room_count().await, 1);
    assert_eq!(
        bus.subscribes.load(Ordering::SeqCst),
        2,
        "one subscription for the held room (shared by both joiners), one for the other"
    );
    assert!(hub.given(&room("stuck"), "a").await.is_some());
    assert!(hub.given(&room("stuck"), "c").await.is_some());
}

/// A joiner that goes away while its room's subscription is held leaves nothing behind: the
/// next joiner of that room opens it afresh.
#[tokio::test(start_paused = true)]
async fn a_join_cancelled_while_its_room_opens_leaves_the_room_openable() {
    let (bus, hub, first) = held_opening(false).await;
    first.abort();
    let _ = first.await;

    *bus.hold_subscribe_of.lock().unwrap() = None;
    tokio::time::timeout(PROMPTLY, hub.join(&room("stuck"), &joiner("b"), None, None))
        .await
        .expect("the room opens")
        .unwrap();
    assert!(hub.given(&room("stuck"), "b").await.is_some());
    assert!(hub.given(&room("stuck"), "a").await.is_none());
    assert_eq!(hub.opening_rooms(), 0, "no opening room is left behind");
}

/// When the held subscription fails (the bus's bound ran out), the joiners that waited for it
/// get its error at once rather than each waiting out the bound again in turn; a joiner that
/// comes later tries afresh.
#[tokio::test(start_paused = true)]
async fn joiners_waiting_for_a_room_that_fails_to_open_share_its_error() {
    let (bus, hub, first) = held_opening(true).await;
    let join = |conn: &'static str| {
        let hub = hub.clone();
        tokio::spawn(async move { hub.join(&room("stuck"), &joiner(conn), None, None).await })
    };
    let waiting: Vec<_> = ["b", "c", "d"].into_iter().map(join).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.release.notify_one();
    assert!(matches!(first.await.unwrap(), Err(BusError::Timeout)));
    for w in waiting {
        let got = tokio::time::timeout(PROMPTLY, w)
            .await
            .expect("a waiting joiner is answered at once")
            .unwrap();
        assert!(
            matches!(got, Err(BusError::Timeout)),
            "{:?}",
            got.map(|_| ())
        );
    }
    assert_eq!(bus.subscribes.load(Ordering::SeqCst), 1);
    assert_eq!(hub.opening_rooms(), 0);

    bus.fail_held.store(false, Ordering::SeqCst);
    *bus.hold_subscribe_of.lock().unwrap() = None;
    hub.join(&room("stuck"), &joiner("e"), None, None)
        .await
        .expect("a later joiner opens the room afresh");
}
