//! How much history a member is queued at once: a resume's gap on its join, a repair after
//! the pod fell behind ([`GapFit`], [`fit_gap`], [`backlog_budget`]).

use super::{Encoded, Joiner};
use crate::rooms::bus::{Position, RoomMessage};
use crate::rooms::outbox::Outbox;

/// How much of a resume's gap a join queues ([`fit_gap`]).
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

/// Where a join starts, and what it queues.
pub(super) struct Synced {
    pub(super) recovered: bool,
    pub(super) position: Position,
    pub(super) start: Position,
    pub(super) gap: Vec<RoomMessage>,
}

/// The newest part of a resume's gap that fits in `budget` bytes of the joiner's queue (each
/// message counted as the queue counts it, plus `extra`), encoded for it, oldest first. Queued
/// whole, a gap over the queue's bound would close the member as a slow consumer before its
/// first message, on every resume: it could never catch up over WebSocket or SSE. Cut, the
/// resume is `recovered: false` from just before the first message kept (after the newest one
/// when none fits), as a resume from another epoch is. Long-polling takes the whole gap
/// ([`GapFit::Whole`]) and pages through it.
pub(super) fn fit_gap(synced: &mut Synced, j: &Joiner, budget: u64, extra: u64) -> Vec<Encoded> {
    let mut gap = std::mem::take(&mut synced.gap);
    let mut kept: Vec<Encoded> = Vec::new();
    let mut used = 0;
    while let Some(msg) = gap.pop() {
        let mut enc = Encoded::new(msg);
        let cost = enc
            .item(j.encoding, &j.conn)
            .map_or(0, |i| i.cost() + extra);
        if used + cost > budget {
            let after = kept.last().map_or(&enc.msg, |k| &k.msg);
            let seq = if kept.is_empty() {
                after.seq
            } else {
                after.seq.saturating_sub(1)
            };
            let start = Position {
                seq,
                epoch: after.epoch.clone(),
            };
            synced.recovered = false;
            synced.position = start.clone();
            synced.start = start;
            break;
        }
        used += cost;
        kept.push(enc);
    }
    kept.reverse();
    kept
}

impl Synced {
    /// Live messages after `position`, nothing before.
    pub(super) fn at(position: Position) -> Self {
        Self {
            recovered: false,
            start: position.clone(),
            position,
            gap: Vec::new(),
        }
    }
}
