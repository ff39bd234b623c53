//! The y-protocols messages a `y-websocket` client speaks (sync step 1/2, updates, awareness,
//! awareness query), decoded and encoded with `yrs::sync`. Pure: no I/O.

use std::sync::Arc;

use yrs::encoding::read::{Cursor, Error as ReadError, Read};
use yrs::sync::awareness::AwarenessUpdate;
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::decoder::Decoder;
use yrs::updates::encoder::Encode;
use yrs::{Any, ClientID, ID, IdSet};
use yrs::{ReadTxn, StateVector, Transact, Update};

/// One client message, as the gateway acts on it.
#[derive(Debug)]
pub enum Inbound {
    /// Sync step 1: the client's state vector; answered with step 2.
    Step1(StateVector),
    /// Sync step 2 or an update: document changes to apply and relay.
    Update(Vec<u8>),
    /// An awareness update (cursors, names), relayed to every connection of the document.
    Awareness(AwarenessUpdate),
    /// The client asks for every awareness state.
    AwarenessQuery,
    /// Auth and custom messages: nothing to do.
    Ignored,
}

/// Decode one WebSocket message (y-websocket sends one y-protocols message per frame).
pub fn decode(frame: &[u8]) -> Result<Inbound, String> {
    envelope_fits(frame)?;
    let msg = Message::decode_v1(frame).map_err(|e| format!("not a y-protocols message: {e}"))?;
    Ok(match msg {
        Message::Sync(SyncMessage::SyncStep1(sv)) => Inbound::Step1(sv),
        Message::Sync(SyncMessage::SyncStep2(u)) | Message::Sync(SyncMessage::Update(u)) => {
            Inbound::Update(u)
        }
        Message::Awareness(a) => Inbound::Awareness(a),
        Message::AwarenessQuery => Inbound::AwarenessQuery,
        Message::Auth(_) | Message::Custom(..) => Inbound::Ignored,
    })
}

/// The fewest bytes one entry takes: a state vector's (client, clock), an update's (block
/// count, client, clock), an awareness state's (client, clock, JSON length).
const MIN_SV_BYTES: usize = 2;
const MIN_CLIENT_BYTES: usize = 3;
const MIN_STATE_BYTES: usize = 3;

/// yrs reserves room for as many entries as a state vector, an update or an awareness message
/// declares before it reads them: a few bytes declaring 2^31 reserve gigabytes (a 6-byte
/// update made the gateway's RSS jump by 4 GB, a 12-byte awareness message grew it without
/// end). Refuse a message whose count cannot fit in its own bytes before yrs reads it, and a
/// message with bytes after its end (yrs stops reading where the message ends: what follows
/// would be dropped unread).
fn envelope_fits(frame: &[u8]) -> Result<(), String> {
    const SYNC: u8 = 0;
    const AWARENESS: u8 = 1;
    const AWARENESS_QUERY: u8 = 3;
    const STEP1: u8 = 0;
    let mut c = Cursor::new(frame);
    let Ok(kind) = c.read_var::<u8>() else {
        return Ok(()); // yrs says what is wrong with it
    };
    match kind {
        SYNC => {
            let (Ok(step), Ok(body)) = (c.read_var::<u8>(), c.read_buf()) else {
                return Ok(());
            };
            if step == STEP1 {
                count_fits(body, MIN_SV_BYTES, "state vector")?;
            } else {
                count_fits(body, MIN_CLIENT_BYTES, "update")?;
            }
        }
        AWARENESS => {
            let Ok(body) = c.read_buf() else {
                return Ok(());
            };
            count_fits(body, MIN_STATE_BYTES, "awareness update")?;
        }
        AWARENESS_QUERY => {}
        _ => return Ok(()), // auth and custom messages are not read
    }
    match frame.len() - c.next {
        0 => Ok(()),
        n => Err(format!("{n} bytes after the end of the message")),
    }
}

/// Decode an awareness update relayed by another pod, with the same count check as an
/// editor's: a pod of another version (a rollout) or anything else that can publish on the
/// subject is not trusted to declare only what it sends.
pub fn decode_awareness(body: &[u8]) -> Result<AwarenessUpdate, String> {
    count_fits(body, MIN_STATE_BYTES, "awareness update")?;
    AwarenessUpdate::decode_v1(body).map_err(|e| format!("not an awareness update: {e}"))
}

/// The count `body` starts with must leave `min` bytes for each entry in the rest of it.
fn count_fits(body: &[u8], min: usize, what: &str) -> Result<(), String> {
    let mut c = Cursor::new(body);
    let Ok(n) = c.read_var::<u64>() else {
        return Ok(()); // yrs says what is wrong with it
    };
    let room = (body.len() - c.next) / min;
    if n > room as u64 {
        return Err(format!(
            "{what} declares {n} entries in {} bytes",
            body.len()
        ));
    }
    Ok(())
}

/// How deep JSON values in an update may nest (an editor's are a few levels; yrs decodes
/// them recursively).
const MAX_ANY_DEPTH: usize = 64;

/// The highest shared type ref stock Yjs reads (`typeRefs` in yjs 13: array, map, text, XML
/// element, fragment, hook, XML text). yrs also reads 7 (a weak link, with a feature this
/// gateway does not build), 9 (a subdocument type) and 15 (`TypeRef::Undefined`); a document
/// holding one of those makes every stock client that syncs it throw ("typeRefs[...] is not a
/// function") and end up empty.
const MAX_YJS_TYPE_REF: u8 = yrs::types::TYPE_REFS_XML_TEXT;

/// yrs' v1 update decoder (`DecoderV1`, method for method) that checks each JSON value
/// (lib0 `Any`) before yrs decodes it: yrs reserves room for as many map or array entries as
/// one declares, and recurses as deep as it nests. A shared type stock Yjs cannot read is
/// refused ([`MAX_YJS_TYPE_REF`]); the whole update is decoded before any of it is applied.
struct Guarded<'a> {
    c: Cursor<'a>,
    /// Refuse shared types stock Yjs cannot read (an editor's update, not the log's).
    stock_types: bool,
}

impl Read for Guarded<'_> {
    fn read_u8(&mut self) -> Result<u8, ReadError> {
        self.c.read_u8()
    }

    fn read_exact(&mut self, len: usize) -> Result<&[u8], ReadError> {
        self.c.read_exact(len)
    }
}

impl Guarded<'_> {
    fn read_id(&mut self) -> Result<ID, ReadError> {
        let client: u64 = self.read_var()?;
        let clock = self.read_var()?;
        Ok(ID::new(ClientID::new(client), clock))
    }
}

impl Decoder for Guarded<'_> {
    fn reset_ds_cur_val(&mut self) {}

    fn read_ds_clock(&mut self) -> Result<u32, ReadError> {
        self.read_var()
    }

    fn read_ds_len(&mut self) -> Result<u32, ReadError> {
        self.read_var()
    }

    fn read_left_id(&mut self) -> Result<ID, ReadError> {
        self.read_id()
    }

    fn read_right_id(&mut self) -> Result<ID, ReadError> {
        self.read_id()
    }

    fn read_client(&mut self) -> Result<ClientID, ReadError> {
        Ok(ClientID::new(self.read_var::<u64>()?))
    }

    fn read_info(&mut self) -> Result<u8, ReadError> {
        self.read_u8()
    }

    fn read_parent_info(&mut self) -> Result<bool, ReadError> {
        Ok(self.read_var::<u32>()? == 1)
    }

    fn read_type_ref(&mut self) -> Result<u8, ReadError> {
        let type_ref = self.read_u8()?;
        if self.stock_types && type_ref > MAX_YJS_TYPE_REF {
            return Err(ReadError::Custom(format!(
                "shared type ref {type_ref}: stock Yjs reads refs 0-{MAX_YJS_TYPE_REF} only"
            )));
        }
        Ok(type_ref)
    }

    fn read_len(&mut self) -> Result<u32, ReadError> {
        self.read_var()
    }

    fn read_any(&mut self) -> Result<Any, ReadError> {
        let mut scan = Cursor {
            buf: self.c.buf,
            next: self.c.next,
        };
        any_fits(&mut scan, 0).map_err(ReadError::Custom)?;
        Any::decode(self)
    }

    fn read_json(&mut self) -> Result<Any, ReadError> {
        Any::from_json(self.read_string()?)
    }

    fn read_key(&mut self) -> Result<Arc<str>, ReadError> {
        Ok(self.read_string()?.into())
    }

    fn read_to_end(&mut self) -> Result<&[u8], ReadError> {
        Ok(&self.c.buf[self.c.next..])
    }
}

/// Walk one lib0 `Any` value without building it: Err when a map or array declares more
/// entries than the bytes left can hold, or nesting goes past [`MAX_ANY_DEPTH`]. A value cut
/// short passes: yrs then says what is wrong with it.
fn any_fits(c: &mut Cursor<'_>, depth: usize) -> Result<(), String> {
    if depth > MAX_ANY_DEPTH {
        return Err(format!(
            "JSON value nested deeper than {MAX_ANY_DEPTH} levels"
        ));
    }
    let Ok(tag) = c.read_u8() else { return Ok(()) };
    // Scalars are skipped (a read cut short is left for yrs to report).
    match tag {
        125 => {
            let _ = c.read_var::<i64>();
        }
        124 => {
            let _ = c.read_exact(4);
        }
        123 | 122 => {
            let _ = c.read_exact(8);
        }
        119 | 116 => {
            let _ = c.read_buf();
        }
        // A map entry takes a key (at least its length) and a value; an array entry a value.
        118 | 117 => {
            let Ok(n) = c.read_var::<u64>() else {
                return Ok(());
            };
            let min = if tag == 118 { 2 } else { 1 };
            let left = c.buf.len() - c.next;
            if n > (left / min) as u64 {
                return Err(format!(
                    "JSON value declares {n} entries with {left} bytes left"
                ));
            }
            for _ in 0..n {
                if tag == 118 && c.read_buf().is_err() {
                    return Ok(());
                }
                any_fits(c, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Sync step 1 with the document's state vector.
pub fn step1(awareness: &Awareness) -> Vec<u8> {
    let sv = awareness.doc().transact().state_vector();
    Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()
}

/// Sync step 2: what the document has that `sv` lacks.
pub fn step2(awareness: &Awareness, sv: &StateVector) -> Vec<u8> {
    let diff = awareness.doc().transact().encode_state_as_update_v1(sv);
    Message::Sync(SyncMessage::SyncStep2(diff)).encode_v1()
}

/// An update message carrying `update`.
pub fn update(update: &[u8]) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(update.to_vec())).encode_v1()
}

/// An awareness message carrying `update`.
pub fn awareness(update: AwarenessUpdate) -> Vec<u8> {
    Message::Awareness(update).encode_v1()
}

/// Every awareness state the document knows, as one awareness message; None when empty.
pub fn awareness_snapshot(awareness: &Awareness) -> Option<Vec<u8>> {
    let update = awareness.update().ok()?;
    (!update.clients.is_empty()).then(|| Message::Awareness(update).encode_v1())
}

/// The whole document as one update (the snapshot form).
pub fn state(awareness: &Awareness) -> Vec<u8> {
    awareness
        .doc()
        .transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// Most deletes (ranges of one client's clocks) of items a document does not have that it
/// keeps waiting for those items (yrs' pending delete set). yrs merges the whole pending set
/// again with every later update: 800,000 of them, sent as "nothing new", kept a core busy
/// and stalled other documents for seconds. Legitimately a hub sees few: an editor deletes
/// what it got from the hub, or sends the items with their deletes.
pub const MAX_PENDING_DELETES: usize = 1024;

/// Where an update comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An editor or the documents API: refused when stock Yjs could not read it.
    Editor,
    /// The document's log: already accepted by a pod (maybe of an older version), applied as
    /// yrs reads it so that every pod's replica holds the same document.
    Log,
}

/// An update the document refuses.
#[derive(Debug)]
pub struct Refused {
    pub reason: String,
    /// What yrs had integrated when the update failed (yrs applies an update block by block
    /// and does not undo): the change it made, as one update, to relay and store like an
    /// accepted one so that editors, the log and the replica do not diverge. `None` when the
    /// update was refused before any of it was applied.
    pub partial: Option<Vec<u8>>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<String> for Refused {
    fn from(reason: String) -> Self {
        Self {
            reason,
            partial: None,
        }
    }
}

/// Apply an encoded update to the document. Ok(false): it changed nothing, i.e. it carries
/// no items the document lacks and deletes nothing the document had not deleted (a
/// y-websocket editor's answer to the gateway's sync step 1 when it has nothing new: no
/// items, and the delete set of everything it knows; an update sent again, deletes already
/// waiting included). An update with items yrs integrates or holds back for others counts,
/// and so do deletes of items the document does not have that do not wait yet (they wait for
/// them; at most [`MAX_PENDING_DELETES`] from editors). Items yrs already holds back, sent
/// again, count again (telling them apart would walk every held item on each update).
/// Err: refused; [`Refused::partial`] is what of it was applied all the same.
pub fn apply(awareness: &Awareness, update: &[u8], from: Source) -> Result<bool, Refused> {
    count_fits(update, MIN_CLIENT_BYTES, "update")?;
    let mut decoder = Guarded {
        c: Cursor::new(update),
        stock_types: from == Source::Editor,
    };
    let u = Update::decode(&mut decoder).map_err(|e| format!("undecodable update: {e}"))?;
    let insertions = u.insertions(true);
    let mut txn = awareness.doc().transact_mut();
    let before = txn.state_vector();
    let pending = txn.store().pending_ds();
    let pending_before = pending.map_or(0, count_ranges);
    let waiting = count_ranges(&waiting_deletes(&u, &insertions, &before, pending));
    if from == Source::Editor && waiting > 0 && pending_before + waiting > MAX_PENDING_DELETES {
        return Err(Refused::from(format!(
            "deletes {waiting} ranges of items the document does not have \
             ({pending_before} already wait; at most {MAX_PENDING_DELETES})"
        )));
    }
    let outcome = txn.apply_update(u);
    // The check above cannot see what yrs holds back (an item whose origin the document
    // lacks, with deletes of its own clocks): the pending set itself is the bound.
    let pending_after = txn.store().pending_ds().map_or(0, count_ranges);
    let over = from == Source::Editor
        && pending_after > MAX_PENDING_DELETES
        && pending_after > pending_before;
    let reason = match outcome {
        Ok(()) if !over => {
            // Items past the document's state it did not integrate: held back for others.
            let held = txn.store().pending_update().is_some()
                && count_ranges(&past(&insertions, &before).diff(txn.insert_set())) > 0;
            return Ok(!txn.insert_set().is_empty()
                || held
                || waiting > 0
                || !txn.delete_set().is_empty());
        }
        Ok(()) => format!(
            "deletes of items the document does not have would wait in {pending_after} \
             ranges ({pending_before} waited; at most {MAX_PENDING_DELETES})"
        ),
        Err(e) => format!("update not applicable: {e}"),
    };
    // This transaction's own change: the blocks it integrated and its own deletes, not the
    // whole document's delete set (megabytes on a heavily edited document).
    let partial = txn.has_changes().then(|| txn.encode_update_v1());
    drop(txn);
    Err(Refused { reason, partial })
}

/// The ranges of `u`'s delete set that yrs will keep waiting (its pending delete set) and
/// that do not wait already (`pending`): past what the document has (`sv`), extended only
/// through `u`'s own insertions that continue it without a gap. Deletes below an item far
/// past the document (yrs places it after a gap) wait all the same.
fn waiting_deletes(
    u: &Update,
    insertions: &IdSet,
    sv: &StateVector,
    pending: Option<&IdSet>,
) -> IdSet {
    let waiting = beyond(u.delete_set(), |client| {
        reach(insertions, client, sv.get(client))
    });
    match pending {
        Some(p) => waiting.diff(p),
        None => waiting,
    }
}

/// How far `client`'s clocks reach from `clock` through `insertions` that continue it without
/// a gap.
fn reach(insertions: &IdSet, client: &ClientID, mut clock: u32) -> u32 {
    let Some(ranges) = insertions.get(client) else {
        return clock;
    };
    let mut ranges: Vec<_> = ranges.iter().map(|(r, _)| r.clone()).collect();
    ranges.sort_by_key(|r| r.start);
    for r in ranges {
        if r.start > clock {
            break;
        }
        clock = clock.max(r.end);
    }
    clock
}

/// The parts of `insertions` past what the document has (`sv`).
fn past(insertions: &IdSet, sv: &StateVector) -> IdSet {
    beyond(insertions, |client| sv.get(client))
}

/// The parts of `set` at or past each client's clock `from(client)`.
fn beyond(set: &IdSet, from: impl Fn(&ClientID) -> u32) -> IdSet {
    let mut out = IdSet::new();
    for (client, ranges) in set.iter() {
        let floor = from(client);
        for r in ranges.iter().filter(|r| r.end > floor) {
            let start = r.start.max(floor);
            out.insert(ID::new(*client, start), r.end - start);
        }
    }
    out
}

fn count_ranges(ds: &IdSet) -> usize {
    ds.iter().map(|(_, ranges)| ranges.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_awareness_message_declaring_more_states_than_its_bytes_hold_is_refused_unread() {
        // 2^32 states declared in a 10-byte payload: yrs reserves room for all of them first.
        let frame = [
            0x01, 0x0a, 0x80, 0x80, 0x80, 0x80, 0x10, 0x01, 0x01, 0x02, 0x7b, 0x7d,
        ];
        let e = decode(&frame).unwrap_err();
        assert!(e.contains("declares 4294967296"), "{e}");
    }

    #[test]
    fn an_awareness_update_from_another_pod_declaring_more_states_than_it_holds_is_refused() {
        // The body of the 12-byte awareness bomb, as a pod would relay it over NATS.
        let body = [0x80, 0x80, 0x80, 0x80, 0x10, 0x01, 0x01, 0x02, 0x7b, 0x7d];
        let e = decode_awareness(&body).unwrap_err();
        assert!(e.contains("declares 4294967296"), "{e}");
        let one = [0x01, 0x07, 0x01, 0x02, 0x7b, 0x7d];
        let u = decode_awareness(&one).unwrap();
        assert_eq!(u.clients.len(), 1);
    }

    #[test]
    fn a_message_with_bytes_after_its_end_is_refused() {
        let server = Awareness::new(Doc::new());
        let (_, u) = client_edit("x");
        let awareness = [0x01, 0x06, 0x01, 0x07, 0x01, 0x02, 0x7b, 0x7d];
        for frame in [step1(&server), update(&u), awareness.to_vec(), vec![0x03]] {
            assert!(decode(&frame).is_ok(), "{frame:?}");
            let mut longer = frame.clone();
            longer.extend_from_slice(&[0x00, 0xff]);
            let e = decode(&longer).unwrap_err();
            assert!(e.contains("2 bytes after the end"), "{frame:?}: {e}");
        }
    }

    #[test]
    fn a_state_vector_declaring_more_clients_than_its_bytes_hold_is_refused_unread() {
        // Sync step 1 whose state vector declares 2^24 clients in 4 bytes.
        let frame = [0x00, 0x00, 0x04, 0x80, 0x80, 0x80, 0x08];
        let e = decode(&frame).unwrap_err();
        assert!(e.contains("declares 16777216"), "{e}");
    }

    #[test]
    fn an_update_whose_json_value_declares_more_entries_than_its_bytes_hold_is_refused_unread() {
        let server = Awareness::new(Doc::new());
        // One client, one block of JSON ("Any") content: a map declaring 2^24 entries (2^31
        // made yrs reserve ~4 GB).
        let mut bomb = vec![0x01, 0x01, 0x01, 0x00, 0x08, 0x01, 0x01, b'a', 0x01, 0x76];
        bomb.extend([0x80, 0x80, 0x80, 0x08]);
        let e = apply(&server, &bomb, Source::Editor).unwrap_err();
        assert!(e.reason.contains("declares 16777216"), "{e}");
        // Arrays nested deeper than anything an editor writes: refused before yrs recurses.
        let mut deep = vec![0x01, 0x01, 0x01, 0x00, 0x08, 0x01, 0x01, b'a', 0x01];
        deep.extend([0x75, 0x01].repeat(10_000));
        deep.extend([0x7e, 0x00]);
        let e = apply(&server, &deep, Source::Editor).unwrap_err();
        assert!(e.reason.contains("nested deeper"), "{e}");
    }

    /// One item in root text `t` (client 5555) whose content is a shared type with `type_ref`.
    fn typed_item(type_ref: u8) -> Vec<u8> {
        let mut u = vec![
            0x01, 0x01, 0xb3, 0x2b, 0x00, 0x07, 0x01, 0x01, b't', type_ref,
        ];
        if type_ref == 3 {
            u.extend([0x01, b'p']); // an XML element's name
        }
        u.push(0x00); // no deletes
        u
    }

    #[test]
    fn an_update_holding_a_shared_type_stock_yjs_cannot_read_is_refused_unapplied() {
        // yrs reads ref 15 as TypeRef::Undefined and 9 as a subdocument type; stock Yjs
        // (typeRefs in yjs 13) knows refs 0-6 only and throws on the document.
        for type_ref in [15, 9, 7] {
            let server = Awareness::new(Doc::new());
            let e = apply(&server, &typed_item(type_ref), Source::Editor).unwrap_err();
            assert!(e.reason.contains("type ref"), "{type_ref}: {e}");
            assert_eq!(
                server.doc().transact().state_vector(),
                StateVector::default(),
                "{type_ref}: nothing applied"
            );
        }
        // The log's copy (stored by a pod before this check, or by an older version during a
        // rollout) is applied as yrs reads it, so every replica holds the same document.
        let server = Awareness::new(Doc::new());
        assert!(apply(&server, &typed_item(15), Source::Log).unwrap());
        for type_ref in 0..=6 {
            let server = Awareness::new(Doc::new());
            assert!(
                apply(&server, &typed_item(type_ref), Source::Editor).unwrap(),
                "{type_ref}"
            );
        }
    }

    #[test]
    fn json_values_of_every_kind_still_apply() {
        use yrs::{Any, Array, Map};
        let doc = Doc::new();
        let (m, a) = (doc.get_or_insert_map("m"), doc.get_or_insert_array("a"));
        let value = serde_json::json!({"name": "ann", "n": 1, "x": 1.5, "ok": true, "none": null,
            "list": [1, "two", {"three": [3.0]}], "nested": {"a": {"b": {"c": "d"}}}});
        let any: Any = serde_json::from_value(value).unwrap();
        {
            let mut txn = doc.transact_mut();
            m.insert(&mut txn, "v", any.clone());
            a.push_back(&mut txn, any);
            a.push_back(&mut txn, Any::from(vec![1u8, 2, 3]));
        }
        let u = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let server = Awareness::new(Doc::new());
        assert!(apply(&server, &u, Source::Editor).unwrap());
        assert_eq!(state(&server).len(), u.len());
    }

    #[test]
    fn an_update_declaring_more_clients_than_its_bytes_hold_is_refused_unread() {
        let server = Awareness::new(Doc::new());
        // 2^24 clients declared in 6 bytes (the same bytes with 2^31 reserved ~4 GB).
        let e = apply(
            &server,
            &[0x80, 0x80, 0x80, 0x08, 0x00, 0x00],
            Source::Editor,
        )
        .unwrap_err();
        assert!(e.reason.contains("declares 16777216"), "{e}");
        let (_, u) = client_edit("fine");
        assert!(
            apply(&server, &u, Source::Editor).unwrap(),
            "a real update still applies"
        );
    }
    use yrs::{Doc, GetString, Text};

    fn client_edit(text: &str) -> (Doc, Vec<u8>) {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        drop(txn);
        let u = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        (doc, u)
    }

    #[test]
    fn a_client_update_round_trips_through_the_server_replica() {
        let server = Awareness::new(Doc::new());
        let (_, u) = client_edit("hello");
        let frame = update(&u);
        let Inbound::Update(got) = decode(&frame).unwrap() else {
            panic!("not an update")
        };
        apply(&server, &got, Source::Editor).unwrap();
        // A fresh client syncing from the server gets the text.
        let fresh = Doc::new();
        let sv = fresh.transact().state_vector();
        let step2_frame = step2(&server, &sv);
        let Inbound::Update(diff) = decode(&step2_frame).unwrap() else {
            panic!("step 2 must carry an update")
        };
        fresh
            .transact_mut()
            .apply_update(Update::decode_v1(&diff).unwrap())
            .unwrap();
        let t = fresh.get_or_insert_text("t");
        assert_eq!(t.get_string(&fresh.transact()), "hello");
    }

    #[test]
    fn step1_from_the_server_decodes_as_a_state_vector() {
        let server = Awareness::new(Doc::new());
        let (_, u) = client_edit("x");
        apply(&server, &u, Source::Editor).unwrap();
        let Inbound::Step1(sv) = decode(&step1(&server)).unwrap() else {
            panic!("not step 1")
        };
        assert_eq!(sv, server.doc().transact().state_vector());
    }

    #[test]
    fn an_update_with_items_counts_as_a_change_and_an_empty_sync_answer_does_not() {
        let server = Awareness::new(Doc::new());
        let (client, u) = client_edit("hello");
        assert!(apply(&server, &u, Source::Editor).unwrap(), "new items");
        let (_, other) = client_edit("x");
        assert!(
            apply(&server, &other, Source::Editor).unwrap(),
            "another client's items"
        );
        // A later edit of the first client: items from a clock past 0.
        let before = client.transact().state_vector();
        let t = client.get_or_insert_text("t");
        t.insert(&mut client.transact_mut(), 5, "!");
        let later = client.transact().encode_state_as_update_v1(&before);
        assert!(
            apply(&server, &later, Source::Editor).unwrap(),
            "an incremental edit"
        );
        // The client's answer to the server's step 1: nothing the server lacks.
        let sv = server.doc().transact().state_vector();
        let answer = client.transact().encode_state_as_update_v1(&sv);
        assert!(
            !apply(&server, &answer, Source::Editor).unwrap(),
            "{answer:?}"
        );
        assert!(!apply(&server, &[0, 0], Source::Editor).unwrap());
    }

    /// The pending delete set's ranges (yrs merges it again with every later update).
    fn pending_deletes(server: &Awareness) -> usize {
        server
            .doc()
            .transact()
            .store()
            .pending_ds()
            .map_or(0, count_ranges)
    }

    /// One update from client `x`: a string item at `clock` in root text `t` (with `origin`, its
    /// left neighbour, if any) of `len` characters, and one-clock deletes of `x` at every even
    /// clock in `deleted`.
    fn item_with_deletes(
        x: u64,
        clock: u32,
        origin: Option<(u64, u32)>,
        len: usize,
        deleted: std::ops::Range<u32>,
    ) -> Vec<u8> {
        use yrs::encoding::write::Write;
        use yrs::updates::encoder::{Encoder, EncoderV1};
        let mut e = EncoderV1::new();
        e.write_var(1u32); // one client
        e.write_var(1u32); // one block
        e.write_var(x);
        e.write_var(clock);
        match origin {
            Some((client, clock)) => {
                e.write_u8(0x84); // string content, with a left origin
                e.write_var(client);
                e.write_var(clock);
            }
            None => {
                e.write_u8(0x04); // string content, parent by root name
                e.write_var(1u32);
                e.write_string("t");
            }
        }
        e.write_string(&"x".repeat(len));
        let ds = IdSet::from_iter(std::iter::once((
            ClientID::new(x),
            deleted.step_by(2).map(|c| c..c + 1),
        )));
        ds.encode(&mut e);
        e.to_vec()
    }

    #[test]
    fn deletes_below_an_item_far_past_the_document_do_not_bypass_the_pending_bound() {
        // One item of client 77 at clock 1,000,000 (the document has nothing of 77: yrs puts
        // it after a gap) and 2,000 deletes of 77 below it, none of which the document has.
        let server = Awareness::new(Doc::new());
        let u = item_with_deletes(77, 1_000_000, None, 1, 0..4_000);
        let e = apply(&server, &u, Source::Editor).unwrap_err();
        assert!(e.reason.contains("does not have"), "{e}");
        let pending = pending_deletes(&server);
        assert!(pending <= MAX_PENDING_DELETES, "{pending} pending deletes");
    }

    #[test]
    fn deletes_of_an_item_held_for_a_missing_origin_do_not_bypass_the_pending_bound() {
        // An item of client 78 from clock 0 (contiguous with the document) whose left origin
        // (client 79) the document never had: yrs holds it back, and the 2,048 deletes of its
        // own clocks wait with it.
        let server = Awareness::new(Doc::new());
        let u = item_with_deletes(78, 0, Some((79, 5)), 4_096, 0..4_096);
        let e = apply(&server, &u, Source::Editor).unwrap_err();
        assert!(e.reason.contains("wait"), "{e}");
        assert!(e.partial.is_none(), "nothing of it was integrated");
        // The sender is refused; later updates adding waiting deletes are refused before yrs
        // merges them, and ordinary edits still apply.
        let more = item_with_deletes(80, 1_000, None, 1, 0..10);
        assert!(apply(&server, &more, Source::Editor).is_err());
        let (_, fine) = client_edit("fine");
        assert!(apply(&server, &fine, Source::Editor).unwrap());
    }

    #[test]
    fn deletes_already_waiting_sent_again_change_nothing() {
        let server = Awareness::new(Doc::new());
        let u = item_with_deletes(81, 1_000, None, 1, 0..20);
        assert!(apply(&server, &u, Source::Editor).unwrap(), "first time");
        let pending = pending_deletes(&server);
        assert_eq!(pending, 10);
        assert!(
            !apply(&server, &u, Source::Editor).unwrap(),
            "the same item and deletes again"
        );
        assert_eq!(pending_deletes(&server), pending);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[0, 9, 9]).is_err());
        assert!(decode(&[]).is_err());
        let server = Awareness::new(Doc::new());
        assert!(apply(&server, &[1, 2, 3, 4, 5], Source::Editor).is_err());
    }

    #[test]
    fn an_empty_awareness_has_no_snapshot_and_a_set_one_does() {
        let a = Awareness::new(Doc::new());
        assert!(awareness_snapshot(&a).is_none());
        let mut other = Awareness::new(Doc::new());
        other.set_local_state_raw(r#"{"user":"ann"}"#);
        let mut a = a;
        a.apply_update(other.update().unwrap()).unwrap();
        let snap = awareness_snapshot(&a).expect("one state");
        let Inbound::Awareness(u) = decode(&snap).unwrap() else {
            panic!("not awareness")
        };
        assert_eq!(u.clients.len(), 1);
    }
}
