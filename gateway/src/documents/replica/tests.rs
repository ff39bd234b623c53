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

/// Apply every document update queued to an editor to `doc` (what a stock editor does).
fn receive(outbox: &Outbox, doc: &Doc) {
    for item in outbox.take_now() {
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
    r.apply_local(Some("a"), edit(&author, "hello"))
        .await
        .unwrap();
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
    let seen = Doc::new();
    receive(&watcher, &seen);
    assert_eq!(
        text_of(&seen),
        replica_text(&r),
        "a connected editor holds what the gateway's document holds"
    );
    assert!(text_of(&seen).contains("GOOD"), "{}", text_of(&seen));
}
