//! A replica without NATS, driven through its editors' outboxes.

use std::sync::Arc;

use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

use super::Replica;
use crate::documents::notify::Channels;
use crate::documents::sync::{self, Inbound};
use crate::error::CloseCause;
use crate::rooms::bus::memory::MemoryBus;
use crate::rooms::bus::{Bus, RoomKey};
use crate::rooms::outbox::{Item, Outbox};

fn replica(cfg: switchboard_config::Documents) -> Arc<Replica> {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let key = RoomKey {
        namespace: "docs".into(),
        room: "d".into(),
    };
    Replica::new(key, cfg, 1, None, &Channels::new(&bus))
}

/// An editor `id` attached to `r`: its outbox.
fn editor(r: &Replica, id: &str) -> Arc<Outbox> {
    let outbox = Outbox::new(64 << 20);
    r.attach(id, None, outbox.clone());
    outbox
}

/// Apply the document updates among `items` (queued to an editor) to `doc`, as a stock
/// editor does.
fn receive_items(items: Vec<Item>, doc: &Doc) {
    for item in items {
        let Item::RawBinary(frame) = item else {
            continue;
        };
        if let Ok(Inbound::Update(u)) = sync::decode(&frame) {
            doc.transact_mut()
                .apply_update(Update::decode_v1(&u).unwrap())
                .unwrap();
        }
    }
}

fn text_of(doc: &Doc) -> String {
    doc.get_or_insert_text("t").get_string(&doc.transact())
}

/// The replica's document, as a newcomer (or the documents API) gets it.
fn replica_text(r: &Replica) -> String {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&r.state()).unwrap())
        .unwrap();
    text_of(&doc)
}

/// An edit of `doc` (inserting `s` at 0) as one update.
fn edit(doc: &Doc, s: &str) -> Vec<u8> {
    let before = doc.transact().state_vector();
    doc.get_or_insert_text("t")
        .insert(&mut doc.transact_mut(), 0, s);
    doc.transact().encode_diff_v1(&before)
}

#[tokio::test]
async fn an_update_that_fails_halfway_is_relayed_as_far_as_it_was_applied() {
    let r = replica(Default::default());
    let watcher = editor(&r, "w");
    let _sender = editor(&r, "x");
    let _author = editor(&r, "a");
    let author = Doc::with_client_id(7);
    r.apply_local(Some("a"), edit(&author, "hello!"))
        .await
        .unwrap();
    // An older delete of the document's (its delete set is not part of what fails later).
    let sv = author.transact().state_vector();
    author
        .get_or_insert_text("t")
        .remove_range(&mut author.transact_mut(), 5, 1);
    let delete = author.transact().encode_diff_v1(&sv);
    r.apply_local(Some("a"), delete).await.unwrap();
    // Client 4242: "GOOD" into root text t (valid), then an item whose parent is (7, 0), a
    // string item, not a shared type (yrs: InvalidParent after it integrated the first).
    let bad = vec![
        0x01, 0x02, 0x92, 0x21, 0x00, // one client, two blocks, client 4242, clock 0
        0x04, 0x01, 0x01, b't', 0x04, b'G', b'O', b'O', b'D', // string in root "t"
        0x04, 0x00, 0x07, 0x00, 0x01, b'x', // string whose parent is item (7, 0)
        0x00, // no deletes
    ];
    let e = r.apply_local(Some("x"), bad).await.unwrap_err();
    assert!(matches!(e, CloseCause::ProtocolError), "{e:?}");
    let relayed: Vec<_> = watcher.take_now();
    let partial = relayed
        .iter()
        .filter_map(|i| match i {
            Item::RawBinary(f) => match sync::decode(f) {
                Ok(Inbound::Update(u)) => Some(u),
                _ => None,
            },
            _ => None,
        })
        .next_back()
        .expect("the applied part relayed");
    let partial = Update::decode_v1(&partial).unwrap();
    assert!(
        partial.delete_set().get(&yrs::ClientID::new(7)).is_none(),
        "the partial carries the document's older deletes: {partial:?}"
    );
    let seen = Doc::new();
    receive_items(relayed, &seen);
    assert_eq!(
        text_of(&seen),
        replica_text(&r),
        "a connected editor holds what the gateway's document holds"
    );
    assert!(text_of(&seen).contains("GOOD"), "{}", text_of(&seen));
}

/// An update made only of deletes: one range (clock 0, length 1) of each of `n` clients from
/// `first` on.
fn deletes_only(first: u64, n: u64) -> Vec<u8> {
    use yrs::encoding::write::Write;
    use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
    let ds = yrs::IdSet::from_iter(
        (first..first + n).map(|c| (yrs::ClientID::new(c), std::iter::once(0..1))),
    );
    let mut e = EncoderV1::new();
    e.write_var(0u32); // no blocks
    ds.encode(&mut e);
    e.to_vec()
}

#[tokio::test]
async fn deletes_of_items_the_document_never_had_are_relayed_counted_and_bounded() {
    let r = replica(Default::default());
    let watcher = editor(&r, "w");
    let _sender = editor(&r, "x");
    watcher.take_now(); // its sync step 1
    // Deletes waiting for items this document may still get (yrs keeps them pending): a change
    // like items that wait, relayed and counted toward the document's size.
    r.apply_local(Some("x"), deletes_only(1 << 20, 10))
        .await
        .unwrap();
    let relayed = watcher.take_now().into_iter().any(
        |i| matches!(i, Item::RawBinary(f) if matches!(sync::decode(&f), Ok(Inbound::Update(_)))),
    );
    assert!(relayed, "relayed");
    assert!(r.lock().doc_bytes > 0, "counted");
    // Many of them: every later update re-merges the whole pending set. Refused at the bound.
    let mut next = 2 << 20;
    let mut accepted = 0;
    let refused = loop {
        match r.apply_local(Some("x"), deletes_only(next, 200)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        next += 200;
        assert!(accepted < 100, "never refused");
    };
    assert!(matches!(refused, CloseCause::ProtocolError), "{refused:?}");
    let pending = r
        .lock()
        .awareness
        .doc()
        .transact()
        .store()
        .pending_ds()
        .map_or(0, |ds| {
            ds.iter().map(|(_, ranges)| ranges.len()).sum::<usize>()
        });
    assert!(
        pending <= crate::documents::sync::MAX_PENDING_DELETES,
        "{pending} pending deletes"
    );
}

#[tokio::test]
async fn an_update_deleting_its_own_new_items_is_not_a_pending_delete() {
    let r = replica(Default::default());
    let author = Doc::with_client_id(9);
    let t = author.get_or_insert_text("t");
    t.insert(&mut author.transact_mut(), 0, &"x".repeat(10));
    for i in 0..10 {
        t.remove_range(&mut author.transact_mut(), 0, 1);
        let u = author.transact().encode_diff_v1(&Default::default());
        r.apply_local(Some("a"), u)
            .await
            .unwrap_or_else(|e| panic!("{i}: {e:?}"));
    }
    assert!(
        r.lock()
            .awareness
            .doc()
            .transact()
            .store()
            .pending_ds()
            .is_none()
    );
}

fn small_documents() -> switchboard_config::Documents {
    switchboard_config::Documents {
        max_document_bytes: 10_000,
        ..Default::default()
    }
}

#[tokio::test]
async fn resending_an_update_the_document_has_does_not_count_toward_its_size() {
    let r = replica(small_documents());
    let author = Doc::with_client_id(5);
    let big = edit(&author, &"z".repeat(4_000));
    for i in 0..5 {
        r.apply_local(Some("x"), big.clone())
            .await
            .unwrap_or_else(|e| panic!("copy {i}: {e:?}"));
    }
    assert!(r.lock().doc_bytes < 5_000, "{}", r.lock().doc_bytes);
    let editor = Doc::with_client_id(6);
    for i in 0..20 {
        r.apply_local(Some("e"), edit(&editor, "A"))
            .await
            .unwrap_or_else(|e| panic!("edit {i}: {e:?}"));
    }
}

#[tokio::test]
async fn an_edit_is_refused_for_size_only_once_the_document_is_measured_too_large() {
    let r = replica(small_documents());
    let author = Doc::with_client_id(5);
    r.apply_local(Some("x"), edit(&author, &"z".repeat(4_000)))
        .await
        .unwrap();
    // The size is an upper bound (a log replayed with copies stored by an older version).
    r.lock().doc_bytes = 10_000;
    r.apply_local(Some("x"), edit(&author, "A")).await.unwrap();
    let e = r
        .apply_local(Some("x"), edit(&author, &"y".repeat(7_000)))
        .await
        .unwrap_err();
    assert!(matches!(e, CloseCause::DocumentTooLarge), "{e:?}");
}

/// An awareness message setting client `id`'s state at `clock`.
fn awareness(id: u64, clock: u32, json: &str) -> Vec<u8> {
    use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
    sync::awareness(AwarenessUpdate {
        clients: [(
            yrs::ClientID::new(id),
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        )]
        .into(),
    })
}

/// The awareness entries queued to an editor: (client, clock, state).
fn awareness_seen(outbox: &Outbox) -> Vec<(u64, u32, String)> {
    outbox
        .take_now()
        .into_iter()
        .filter_map(|i| match i {
            Item::RawBinary(f) => match sync::decode(&f) {
                Ok(Inbound::Awareness(u)) => Some(u),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|u| {
            u.clients
                .into_iter()
                .map(|(id, e)| (id.get(), e.clock, e.json.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn a_reconnected_editors_next_awareness_renewal_is_echoed_as_by_the_reference_server() {
    let r = replica(Default::default());
    let watcher = editor(&r, "w");
    let _first = editor(&r, "b");
    r.handle("b", &awareness(77, 3, r#"{"u":"b"}"#), true)
        .await
        .unwrap();
    r.detach("b").await;
    // Removed with the clock it had, as y-protocols removes a state that is not its own.
    let seen = awareness_seen(&watcher);
    assert_eq!(seen.last(), Some(&(77, 3, "null".to_string())), "{seen:?}");
    // The editor reconnects (same client id): its state at clock 3 is the removed one (the
    // reference server ignores it too); its renewal 15 s later (clock 4) is news again.
    let again = editor(&r, "b2");
    again.take_now();
    r.handle("b2", &awareness(77, 4, r#"{"u":"b"}"#), true)
        .await
        .unwrap();
    let echoed = awareness_seen(&again);
    assert!(
        echoed.contains(&(77, 4, r#"{"u":"b"}"#.to_string())),
        "the lone editor hears its renewal: {echoed:?}"
    );
}

#[tokio::test]
async fn edits_near_the_size_bound_do_not_each_measure_the_document() {
    let r = replica(small_documents());
    let author = Doc::with_client_id(5);
    r.apply_local(Some("x"), edit(&author, &"z".repeat(9_800)))
        .await
        .unwrap();
    // One-character edits until and past the bound: the first that does not fit the tracked
    // size measures the document; those after it are decided from the tracked size.
    let editor = Doc::with_client_id(6);
    let mut refused = 0;
    for _ in 0..200 {
        match r.apply_local(Some("e"), edit(&editor, "A")).await {
            Ok(()) => {}
            Err(CloseCause::DocumentTooLarge) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused > 0, "the bound is reached");
    let measurements = r.lock().measurements;
    assert!(measurements <= 2, "{measurements} measurements");
}
