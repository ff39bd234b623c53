//! How much history a member is queued at once: a resume's gap on its join, a repair after
//! the pod fell behind ([`GapFit`], [`Window`], [`backlog_budget`]).

use std::collections::VecDeque;

use super::{Encoded, Joiner};
use crate::rooms::bus::{Position, RoomMessage, Sink};
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
/// it, encoded for the joiner: it never holds more than the joiner's queue could take, however
/// long the room's history (a client resuming from an old position costs its queue's bound,
/// not the room's history).
///
/// [`GapFit::Fit`] (WebSocket, SSE): the newest part that fits `budget`, each message counted
/// as the queue counts it plus `extra`. Queued whole, a gap over the queue's bound would close
/// the member as a slow consumer before its first message, on every resume: it could never
/// catch up over WebSocket or SSE. Cut, the resume is `recovered: false` from just before the
/// first message kept (after the newest one when none fits), as a resume from another epoch
/// is.
///
/// [`GapFit::Whole`] (long-polling): the oldest part, up to the first message that does not fit
/// the queue; the read stops there ([`Window::stopped`]), the queue takes no more after it, and
/// the next poll goes on from its cursor.
pub(super) struct Window<'a> {
    encoding: super::Encoding,
    conn: &'a str,
    fit: GapFit,
    budget: u64,
    kept: VecDeque<(Encoded, u64)>,
    used: u64,
    /// The first message taken (kept or not): where a resume from another epoch starts.
    first: Option<Position>,
    /// The newest message taken.
    last: Option<u64>,
    /// [`GapFit::Fit`]: the newest message dropped for the budget.
    dropped: Option<Position>,
    /// [`GapFit::Whole`]: the read stopped with the queue full.
    stopped: bool,
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
            used: 0,
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

    /// Bytes the kept messages count in the joiner's queue.
    #[cfg(test)]
    pub(super) fn used(&self) -> u64 {
        self.used
    }

    /// Whether the read stopped with the queue full ([`GapFit::Whole`]): nothing after the
    /// kept messages may be queued, or it would go out with a cursor past what was not read.
    pub(super) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Where the join starts, given what was dropped for the budget: a cut resume is
    /// `recovered: false` from just before the first message kept (after the newest one when
    /// none was kept).
    pub(super) fn settle(&self, synced: &mut Synced) {
        let Some(dropped) = &self.dropped else {
            return;
        };
        let seq = self
            .kept
            .front()
            .map_or(dropped.seq, |(k, _)| k.msg.seq.saturating_sub(1));
        let start = Position {
            seq,
            epoch: dropped.epoch.clone(),
        };
        synced.recovered = false;
        synced.position = start.clone();
        synced.start = start;
    }

    /// What was kept, oldest first.
    pub(super) fn into_kept(self) -> Vec<Encoded> {
        self.kept.into_iter().map(|(e, _)| e).collect()
    }
}

impl Sink for Window<'_> {
    fn take(&mut self, msg: RoomMessage) -> bool {
        let at = || Position {
            seq: msg.seq,
            epoch: msg.epoch.clone(),
        };
        if self.first.is_none() {
            self.first = Some(at());
        }
        self.last = Some(msg.seq);
        let mut enc = Encoded::new(msg);
        let extra = match self.fit {
            GapFit::Whole => 0,
            GapFit::Fit { extra } => extra,
        };
        let cost = enc
            .item(self.encoding, self.conn)
            .map_or(0, |i| i.cost() + extra);
        self.kept.push_back((enc, cost));
        self.used += cost;
        match self.fit {
            GapFit::Whole => {
                // The message that does not fit is kept: the queue refuses it, and takes
                // nothing more.
                self.stopped = self.used > self.budget;
                !self.stopped
            }
            GapFit::Fit { .. } => {
                while self.used > self.budget {
                    let Some((old, cost)) = self.kept.pop_front() else {
                        break;
                    };
                    self.used -= cost;
                    self.dropped = Some(Position {
                        seq: old.msg.seq,
                        epoch: old.msg.epoch,
                    });
                }
                true
            }
        }
    }

    fn reset(&mut self) {
        self.kept.clear();
        self.used = 0;
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
