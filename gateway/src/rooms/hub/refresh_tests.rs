//! The presence refresh against members leaving while it writes (the hub's `refresh_gate`),
//! over a bus whose presence writes the test can hold on their way ([`HeldBus`]).

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::held_bus::HeldBus;
use super::tests::{joiner, key};
use super::*;

/// A refresh took its list of present members, and its write of one of them was on its
/// way to the bus, when both members left. Neither comes back: the entry written is withdrawn
/// after the write, the other is not written again, and the room's watchers are told of one
/// join and one leave each.
#[tokio::test]
async fn members_leaving_during_a_refresh_are_not_announced_again() {
    let bus = HeldBus::new();
    let hub = Hub::new(bus.clone());
    let watcher = Joiner {
        presence_events: true,
        ..joiner("w")
    };
    hub.join(&key(), &watcher, None, None).await.unwrap();
    for conn in ["a", "b"] {
        let j = Joiner {
            presence: Some(Member {
                conn: conn.into(),
                user: Some(format!("user-{conn}")),
                info: Value::Null,
            }),
            ..joiner(conn)
        };
        hub.join(&key(), &j, None, None).await.unwrap();
    }

    bus.hold_next_presence.store(true, Ordering::SeqCst);
    let refresh = tokio::spawn({
        let hub = hub.clone();
        async move { hub.refresh_presence().await }
    });
    bus.held.notified().await;
    let leaves = tokio::spawn({
        let hub = hub.clone();
        async move {
            let key = key();
            tokio::join!(hub.leave(&key, "a"), hub.leave(&key, "b"))
        }
    });
    // The leaves go as far as they can while the write is held.
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.release.notify_one();
    refresh.await.unwrap();
    leaves.await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    assert_eq!(
        bus.presence_list(&key()).await.unwrap(),
        [],
        "no entry is put back"
    );
    let mut told: HashMap<String, Vec<String>> = HashMap::new();
    for item in watcher.outbox.take_now() {
        let Item::Reply(text) = item else { continue };
        let ev: Value = serde_json::from_str(&text).unwrap();
        told.entry(ev["member"]["conn"].as_str().unwrap().into())
            .or_default()
            .push(ev["event"].as_str().unwrap().into());
    }
    let once = vec!["join".to_string(), "leave".to_string()];
    assert_eq!(
        told,
        HashMap::from([("a".into(), once.clone()), ("b".into(), once)]),
        "each member joins once and leaves once"
    );
}
