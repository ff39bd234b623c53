//! How much history a member is queued at once: a resume's gap on its join, a repair after
//! the pod fell behind ([`GapFit`], [`Window`], [`backlog_budget`]).

use std::borrow::Cow;
use std::collections::VecDeque;

use super::{Encoded, Joiner};
use crate::rooms::bus::{Payload, Position, RoomMessage, Sink};
use crate::rooms::outbox::Outbox;

/// How much of a resume's gap a join queues ([`Window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapFit {
    /// All of it: the transport pages through what its queue did not take (long-polling: each
    /// answer holds what fitted, the next poll goes on from its cursor).
    Whole,
    /// The newest part that fits the queue (WebSocket, SSE), counting `extra` bytes per
    /// message beyond what the queue counts (SSE: each event carries the whole cursor as its
    /// `id`).
    Fit { extra: u64 },
}

impl GapFit {
    /// Packed in 4 bytes for a member's slot (`u32::MAX`: [`GapFit::Whole`]).
    pub(super) fn pack(self) -> u32 {
        match self {
            Self::Whole => u32::MAX,
            Self::Fit { extra } => u32::try_from(extra)
                .unwrap_or(u32::MAX - 1)
                .min(u32::MAX - 1),
        }
    }

    pub(super) fn unpack(packed: u32) -> Self {
        match packed {
            u32::MAX => Self::Whole,
            extra => Self::Fit {
                extra: u64::from(extra),
            },
        }
    }
}

/// What a member's queue has room for now for a backlog (a gap, a repair), less an eighth of
/// it for live messages arriving while the writer sends the backlog.
pub(super) fn backlog_budget(queue: &Outbox) -> u64 {
    let free = queue.max_bytes().saturating_sub(queue.queued_bytes());
    free.saturating_sub(queue.max_bytes() / 8)
}

/// Where a join starts (what it queues is in its [`Window`]).
pub(super) struct Synced {
    pub(super) recovered: bool,
    pub(super) position: Position,
    pub(super) start: Position,
}

/// What a join keeps of a resume's gap (or of what a new epoch retains) while the bus reads
/// it: never more than the joiner's queue could take, however long the room's history (a
/// client resuming from an old position costs about its queue's bound, not the room's
/// history). While reading, each message is counted at a cheap lower bound of what the queue
/// will count for it ([`min_cost`]: no encoding, and nothing under the bus's lock but a walk
/// of the message), so the window holds at least what fits; [`Window::finish`] then encodes
/// only what it keeps, newest first, and cuts exactly.
///
/// [`GapFit::Fit`] (WebSocket, SSE): the newest part that fits `budget`, each message counted
/// as the queue counts it plus `extra`. Queued whole, a gap over the queue's bound would close
/// the member as a slow consumer before its first message, on every resume: it could never
/// catch up over WebSocket or SSE. Cut, the resume is `recovered: false` from just before the
/// first message kept (after the newest one when none fits), as a resume from another epoch
/// is.
///
/// [`GapFit::Whole`] (long-polling): the oldest part, up to the first message that cannot fit
/// the queue; the read stops there ([`Window::finish`] says so), the queue takes no more
/// after it, and the next poll goes on from its cursor.
pub(super) struct Window<'a> {
    encoding: super::Encoding,
    conn: &'a str,
    fit: GapFit,
    budget: u64,
    /// Messages kept, each with its lower-bound cost.
    kept: VecDeque<(RoomMessage, u64)>,
    /// Their lower-bound costs, summed.
    held: u64,
    /// The first message taken (kept or not): where a resume from another epoch starts.
    first: Option<Position>,
    /// The newest message taken.
    last: Option<u64>,
    /// [`GapFit::Fit`]: the newest message dropped for the budget.
    dropped: Option<Position>,
    /// [`GapFit::Whole`]: the read stopped with the queue full.
    stopped: bool,
}

/// A lower bound of what a queue counts for `msg` in any encoding ([`Item::cost`]): its
/// data's bytes as the most compact encoding writes them, plus the fixed 16.
///
/// [`Item::cost`]: crate::rooms::outbox::Item::cost
pub(super) fn min_cost(msg: &RoomMessage) -> u64 {
    let data = match &msg.data {
        Payload::Json(v) => min_json_len(v),
        Payload::Binary(b) => b.len() as u64,
        Payload::Text(t) => t.len() as u64,
    };
    data + 16
}

/// The fewest bytes `v` can serialize to (escapes only lengthen strings; a number takes at
/// least one digit). A walk of the tree, no allocation.
fn min_json_len(v: &serde_json::Value) -> u64 {
    use serde_json::Value;
    let commas = |n: usize| n.saturating_sub(1) as u64;
    match v {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(_) => 1,
        Value::String(s) => s.len() as u64 + 2,
        Value::Array(a) => 2 + commas(a.len()) + a.iter().map(min_json_len).sum::<u64>(),
        Value::Object(o) => {
            2 + commas(o.len())
                + o.iter()
                    .map(|(k, v)| k.len() as u64 + 3 + min_json_len(v))
                    .sum::<u64>()
        }
    }
}

impl<'a> Window<'a> {
    /// A window for `j`, with `budget` bytes of its queue.
    pub(super) fn new(j: &'a Joiner, budget: u64) -> Self {
        Self {
            encoding: j.encoding,
            conn: &j.conn,
            fit: j.gap,
            budget,
            kept: VecDeque::new(),
            held: 0,
            first: None,
            last: None,
            dropped: None,
            stopped: false,
        }
    }

    /// The first message taken, if any.
    pub(super) fn first(&self) -> Option<&Position> {
        self.first.as_ref()
    }

    /// The newest message taken, if any.
    pub(super) fn last(&self) -> Option<u64> {
        self.last
    }

    /// The lower-bound bytes of what the window holds now.
    #[cfg(test)]
    pub(super) fn held(&self) -> u64 {
        self.held
    }

    /// What the join queues, encoded for the joiner, oldest first, and whether the read
    /// stopped with the queue full ([`GapFit::Whole`]: nothing after these may be queued, or
    /// it would go out with a cursor past what was not read). For [`GapFit::Fit`], the newest
    /// part that fits exactly; a cut makes `synced` `recovered: false` from just before the
    /// first message kept (after the newest one when none was kept). `budget`: what the
    /// queue has room for now (live messages of the member's other rooms may have come in
    /// while the bus read), at most the window's own.
    pub(super) fn finish(self, synced: &mut Synced, budget: u64) -> (Vec<Encoded>, bool) {
        let budget = budget.min(self.budget);
        let extra = match self.fit {
            GapFit::Whole => {
                let all = self
                    .kept
                    .into_iter()
                    .map(|(m, _)| Encoded::new(m))
                    .collect();
                return (all, self.stopped);
            }
            GapFit::Fit { extra } => extra,
        };
        let mut dropped = self.dropped;
        let mut kept: Vec<Encoded> = Vec::new();
        let mut used = 0;
        let mut rest = self.kept;
        while let Some((msg, _)) = rest.pop_back() {
            let mut enc = Encoded::new(msg);
            let cost = enc
                .item(self.encoding, self.conn)
                .map_or(0, |i| i.cost() + extra);
            if used + cost > budget {
                dropped = Some(Position {
                    seq: enc.msg.seq,
                    epoch: enc.msg.epoch.clone(),
                });
                break;
            }
            used += cost;
            kept.push(enc);
        }
        kept.reverse();
        if let Some(dropped) = dropped {
            let seq = kept
                .first()
                .map_or(dropped.seq, |k| k.msg.seq.saturating_sub(1));
            let start = Position {
                seq,
                epoch: dropped.epoch,
            };
            synced.recovered = false;
            synced.position = start.clone();
            synced.start = start;
        }
        (kept, false)
    }
}

impl Sink for Window<'_> {
    fn take(&mut self, msg: Cow<'_, RoomMessage>) -> bool {
        if self.first.is_none() {
            self.first = Some(Position {
                seq: msg.seq,
                epoch: msg.epoch.clone(),
            });
        }
        self.last = Some(msg.seq);
        let extra = match self.fit {
            GapFit::Whole => 0,
            GapFit::Fit { extra } => extra,
        };
        let cost = min_cost(&msg) + extra;
        self.kept.push_back((msg.into_owned(), cost));
        self.held += cost;
        match self.fit {
            GapFit::Whole => {
                // Even at its lower bound this one does not fit: it is kept (the queue refuses
                // it), and the queue takes nothing more.
                self.stopped = self.held > self.budget;
                !self.stopped
            }
            GapFit::Fit { .. } => {
                while self.held > self.budget {
                    let Some((old, cost)) = self.kept.pop_front() else {
                        break;
                    };
                    self.held -= cost;
                    self.dropped = Some(Position {
                        seq: old.seq,
                        epoch: old.epoch,
                    });
                }
                true
            }
        }
    }

    fn reset(&mut self) {
        self.kept.clear();
        self.held = 0;
        self.first = None;
        self.last = None;
        self.dropped = None;
        self.stopped = false;
    }
}

impl Synced {
    /// Live messages after `position`, nothing before.
    pub(super) fn at(position: Position) -> Self {
        Self {
            recovered: false,
            start: position.clone(),
            position,
        }
    }
}
