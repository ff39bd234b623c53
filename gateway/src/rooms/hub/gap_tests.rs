//! A join's window over a history read ([`Window`]): what it holds while the bus reads, and
//! the exact cut it makes once the read ends.

use std::borrow::Cow;

use super::gap::{Synced, Window, min_cost};
use super::tests::{joiner, msg};
use super::{Encoded, Encoding, GapFit, Joiner};
use crate::rooms::bus::{Payload, Position, RoomMessage, Sink};

/// A join's start before its window is finished.
fn unsettled() -> Synced {
    Synced {
        recovered: true,
        position: Position::default(),
        start: Position::default(),
    }
}

/// Stored message `seq` of the room, `bytes` of text.
fn stored(seq: u64, bytes: usize) -> RoomMessage {
    RoomMessage {
        data: Payload::Text("x".repeat(bytes)),
        ..msg(seq)
    }
}

#[test]
fn a_resume_window_never_holds_more_than_its_budget_however_long_the_gap() {
    // The join read a resume's whole gap into memory and cut it afterwards: a client resuming
    // from an old position of a 50 MB room cost 50 MB while it joined.
    let j = joiner("b");
    let mut window = Window::new(&j, 3_000);
    for seq in 1..=10_000 {
        assert!(
            window.take(Cow::Owned(stored(seq, 100))),
            "a resume reads to the newest"
        );
        assert!(window.held() <= 3_000, "{} bytes held", window.held());
    }
    let mut synced = unsettled();
    let (kept, stopped) = window.finish(&mut synced, u64::MAX);
    let kept: Vec<u64> = kept.iter().map(|e| e.msg.seq).collect();
    assert!(!stopped);
    assert!(!kept.is_empty() && kept.len() < 100, "{} kept", kept.len());
    assert_eq!(kept.last(), Some(&10_000), "the newest part");
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(!synced.recovered);
    assert_eq!(synced.start.seq, kept[0] - 1);
    assert_eq!(synced.position, synced.start);
}

#[test]
fn a_window_keeps_exactly_what_the_queue_takes_whatever_the_messages_cost_to_encode() {
    // Counted at a lower bound while reading, cut exactly once encoded: the same part of the
    // gap as encoding each message and cutting at the budget, for data of every shape.
    let datas = [
        Payload::Json(serde_json::json!([1, 2, 3, {"a": "é\n\"", "b": null, "c": false}])),
        Payload::Json(serde_json::json!("x".repeat(300))),
        Payload::Binary(bytes::Bytes::from(vec![7u8; 200])),
        Payload::Text("t".repeat(150)),
    ];
    for encoding in [Encoding::Json, Encoding::Proto] {
        let j = Joiner {
            encoding,
            ..joiner("b")
        };
        let msgs: Vec<RoomMessage> = (1..=200u64)
            .map(|seq| RoomMessage {
                data: datas[seq as usize % datas.len()].clone(),
                ..stored(seq, 0)
            })
            .collect();
        for m in &msgs {
            assert!(min_cost(m) <= Encoded::new(m.clone()).item(encoding, "b").unwrap().cost());
        }
        let budget = 5_000;
        let mut window = Window::new(&j, budget);
        for m in msgs.clone() {
            window.take(Cow::Owned(m));
        }
        let mut synced = unsettled();
        let (kept, _) = window.finish(&mut synced, u64::MAX);
        // What encoding every message and cutting at the budget keeps.
        let mut want = Vec::new();
        let mut used = 0;
        for m in msgs.iter().rev() {
            let cost = Encoded::new(m.clone()).item(encoding, "b").unwrap().cost();
            if used + cost > budget {
                break;
            }
            used += cost;
            want.push(m.seq);
        }
        want.reverse();
        let kept: Vec<u64> = kept.iter().map(|e| e.msg.seq).collect();
        assert_eq!(kept, want, "{encoding:?}");
        assert_eq!(synced.start.seq, want[0] - 1);
    }
}

#[test]
fn a_long_poll_window_stops_the_read_at_the_first_message_its_queue_cannot_take() {
    let j = Joiner {
        gap: GapFit::Whole,
        ..joiner("b")
    };
    let mut window = Window::new(&j, 3_000);
    let mut offered = 0;
    for seq in 1..=10_000 {
        offered += 1;
        if !window.take(Cow::Owned(stored(seq, 100))) {
            break;
        }
    }
    assert!(offered < 100, "read {offered} messages");
    let mut synced = unsettled();
    let (kept, stopped) = window.finish(&mut synced, u64::MAX);
    assert!(stopped);
    assert!(synced.recovered, "the next poll goes on from its cursor");
    let kept: Vec<u64> = kept.iter().map(|e| e.msg.seq).collect();
    assert_eq!(kept, (1..=offered).collect::<Vec<u64>>(), "the oldest part");
}

#[test]
fn a_window_cuts_to_the_room_its_queue_has_left_when_the_read_ends() {
    // The budget was fixed before the bus read (up to seconds on NATS) while the member's
    // other rooms kept queueing live messages: gap and backlog together closed it 4008.
    let j = joiner("b");
    let mut window = Window::new(&j, 10_000);
    for seq in 1..=200 {
        window.take(Cow::Owned(stored(seq, 100)));
    }
    let mut synced = unsettled();
    let (kept, _) = window.finish(&mut synced, 2_000);
    let used: u64 = kept
        .into_iter()
        .map(|mut e| e.item(Encoding::Json, "b").unwrap().cost())
        .sum();
    assert!(
        used <= 2_000,
        "{used} bytes queued into 2,000 bytes of room"
    );
    assert!(!synced.recovered);
}
